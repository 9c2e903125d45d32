# Sourced by start.sh, stop.sh and node.sh: the private network of a multi-node local cluster.
# Node i (1..N) is the network namespace dslurm-n<i> with one veth, eth0 at 10.77.0.<10+i>/24,
# whose peer dsl-n<i> is on the bridge dslurm0 (10.77.0.1, the controller's address). No route
# leaves 10.77.0.0/24 and nothing is forwarded: nodes reach each other and the controller only.
# Each node's /etc/hosts (/etc/netns/<ns>/hosts, bound over /etc/hosts in the node's own mount
# namespace) names every node, so MASTER_ADDR=node1 resolves to node1's bridge address.
BRIDGE=dslurm0
SUBNET=10.77.0
CTL_ADDR=$SUBNET.1
ns_name() { echo "dslurm-n$1"; }
node_addr() { echo "$SUBNET.$((10 + $1))"; }

net_up() {  # net_up N: bridge + N namespaces, idempotent (~0.1 s per node when they exist)
  local n=$1 i ns
  ip link show "$BRIDGE" >/dev/null 2>&1 || ip link add "$BRIDGE" type bridge
  ip -br addr show dev "$BRIDGE" | grep -q "$CTL_ADDR/" || ip addr add "$CTL_ADDR/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  for i in $(seq "$n"); do
    ns=$(ns_name "$i")
    ip netns list | grep -qw "$ns" || ip netns add "$ns"
    ip link show "dsl-n$i" >/dev/null 2>&1 || ip link add "dsl-n$i" type veth peer name eth0 netns "$ns"
    ip link set "dsl-n$i" master "$BRIDGE" up
    ip -n "$ns" -br addr show dev eth0 | grep -q "$(node_addr "$i")/" ||
      ip -n "$ns" addr add "$(node_addr "$i")/24" dev eth0
    ip -n "$ns" link set lo up
    ip -n "$ns" link set eth0 up
    mkdir -p "/etc/netns/$ns"
    { echo "127.0.0.1 localhost"; echo "$CTL_ADDR $(hostname -s)";
      for j in $(seq "$n"); do echo "$(node_addr "$j") node$j"; done
      # torch's rendezvous store sees its clients as IPv4-mapped IPv6 addresses and looks
      # their names up (else it warns "hostname of the client socket cannot be retrieved").
      for j in $(seq "$n"); do echo "::ffff:$(node_addr "$j") node$j"; done; } > "/etc/netns/$ns/hosts"
  done
}

net_down() {  # remove every node namespace, its veth and the bridge (processes must be gone)
  local ns
  for ns in $(ip netns list 2>/dev/null | awk '/^dslurm-n[0-9]+/ {print $1}'); do
    ip netns del "$ns"; rm -rf "/etc/netns/$ns"
  done
  ip link show "$BRIDGE" >/dev/null 2>&1 && ip link del "$BRIDGE"
  return 0
}

node_pids() {  # node_pids I: every process in node I's network namespace (slurmd, steps, ranks)
  ip netns pids "$(ns_name "$1")" 2>/dev/null || true
}

kill_nodes() {  # SIGKILL whatever is left in every node's namespace (a step slurmd did not reap)
  local i pids
  for i in $(seq 8); do pids=$(node_pids "$i"); [[ -z $pids ]] || kill -9 $pids 2>/dev/null || true; done
}

slurmd_pid() {  # slurmd_pid NAME: the pid of node NAME's slurmd (its pid file), if it is alive
  local pid; pid=$(cat "$STATE/run/slurmd-$1.pid" 2>/dev/null) || return 1
  [[ $(cat "/proc/$pid/comm" 2>/dev/null) == slurmd ]] && echo "$pid"
}

node_start() {  # node_start I CMD...: CMD as node I: its network namespace, hostname node<I>, its
  # /etc/hosts. slurmd finds NodeName=node<I> by the hostname; the job steps and ranks it starts
  # inherit all three. (Not `ip netns exec`: it remounts /sys without /sys/fs/cgroup, and
  # slurmd refuses to start without it.)
  local i=$1 ns; shift; ns=$(ns_name "$i")
  nsenter --net="/run/netns/$ns" unshare --uts --mount --propagation slave \
    sh -c "hostname node$i && mount --bind /etc/netns/$ns/hosts /etc/hosts && exec \"\$@\"" node "$@"
}
