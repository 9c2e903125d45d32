#!/usr/bin/env bash
# A real SLURM for the tests and for trying grids on one machine (as root): munge, MariaDB +
# slurmdbd (accounting, so that `sacct` and submitit see final states), slurmctld and slurmd,
# from Debian's packages, started by hand (no systemd).
#
#   slurm/local/start.sh              one node (this host, on loopback)
#   slurm/local/start.sh --nodes 2    nodes node1..node2, each its own slurmd in its own network
#                                     namespace and hostname (netns.sh): ranks on different nodes
#                                     connect over 10.77.0.0/24, never over loopback
#
# Idempotent: daemons already running are kept; a healthy cluster returns in ~1 s. A lost node
# (slurm/local/node.sh lose I) is brought back by running it again. A different node count
# restarts slurmctld and the slurmds (running jobs are lost). State, spool and logs live in
# $DISTADV_SLURM_STATE (default /var/lib/distadv-slurm). /etc/slurm and ports 6817-6819 are
# global: one such cluster per machine.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/netns.sh"
STATE=${DISTADV_SLURM_STATE:-/var/lib/distadv-slurm}
HOST=$(hostname -s)
NODES=1
while (($#)); do
  case $1 in
    --nodes) NODES=${2:-}; shift 2 || true ;;
    --nodes=*) NODES=${1#--nodes=}; shift ;;
    *) echo "local slurm: unknown argument '$1'; usage: start.sh [--nodes N]" >&2; exit 2 ;;
  esac
done
[[ $NODES =~ ^[1-8]$ ]] || { echo "local slurm: --nodes must be 1..8, got '$NODES'" >&2; exit 2; }
if ((NODES == 1)); then NAMES=("$HOST"); else NAMES=($(for i in $(seq "$NODES"); do echo "node$i"; done)); fi
PKGS=(munge slurm-client slurmctld slurmd slurmdbd mariadb-server iproute2)

# RealMemory below the real size (else the node drains). The nodes advertise at least 4 CPUs
# in all (config_overrides), so a 4-element array or a 2-task element runs at once on 2 cores;
# with N nodes each advertises a share, so the tests put the same load on the machine.
CPUS=$(nproc); ((CPUS < 4)) && CPUS=4
CPUS=$(( (CPUS + NODES - 1) / NODES )); ((CPUS < 2)) && CPUS=2
MEM=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) * 9 / 10 / NODES ))
conf() {  # slurm.conf of this layout, on stdout
  local i
  if ((NODES == 1)); then CTL=127.0.0.1; else CTL=$CTL_ADDR; fi
  cat <<CONF
ClusterName=distadv
SlurmctldHost=$HOST($CTL)
AuthType=auth/munge
# Without cred_expire=10 a requeued job waits ~121 s before it may start again.
AuthInfo=cred_expire=10
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$STATE/ctld
# %n: the node's name, one spool, pid file and log per slurmd.
SlurmdSpoolDir=$STATE/d/%n
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd-%n.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd-%n.log
# No cgroups in this container.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
# Schedule at once, not in waves seconds apart.
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_interval=1,bf_interval=1
SlurmdParameters=config_overrides
ReturnToService=2
KillWait=5
MpiDefault=none
CONF
  if ((NODES == 1)); then
    echo "NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN"
  else
    # A node that stops answering is DOWN after 15 s (default 300 s): its jobs end NODE_FAIL
    # or are requeued (sbatch --requeue, the default) instead of waiting minutes.
    echo "SlurmdTimeout=15"
    for i in $(seq "$NODES"); do
      echo "NodeName=node$i NodeAddr=$(node_addr "$i") CPUs=$CPUS RealMemory=$MEM State=UNKNOWN"
    done
  fi
  echo "PartitionName=debug Nodes=$(IFS=,; echo "${NAMES[*]}") Default=YES MaxTime=INFINITE State=UP"
}

nodes_up() {  # every node of the layout answers and takes jobs, and no other node is configured
  local want have
  want=$(printf '%s\n' "${NAMES[@]}" | sort)
  have=$(sinfo -h -N -o '%N %t' 2>/dev/null | sort -u)
  [[ $(awk '{print $1}' <<<"$have") == "$want" ]] && ! grep -vqE ' (idle|mix|alloc)$' <<<"$have"
}
slurmd_up() { slurmd_pid "$1" >/dev/null; }   # slurmd_up NAME: the node's slurmd is alive
links_up() {  # every node's namespace exists and its link is up
  local i; ((NODES == 1)) && return 0
  for i in $(seq "$NODES"); do
    ip -n "$(ns_name "$i")" -br link show dev eth0 2>/dev/null | grep -q ' UP ' || return 1
  done
}
healthy() {
  cmp -s /etc/slurm/slurm.conf <(conf) && links_up && nodes_up && sacct -n -X >/dev/null 2>&1 &&
    for n in "${NAMES[@]}"; do slurmd_up "$n" || return 1; done
}
running() { pgrep -x "$1" >/dev/null; }
wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local t=$1 what=$2; shift 2
  for _ in $(seq $((t * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "local slurm: $what did not come up in ${t}s; logs in $STATE/log" >&2; exit 1
}

[[ $(id -u) == 0 ]] || { echo "local slurm: run as root (it installs packages and daemons)" >&2; exit 1; }
START=$SECONDS
if command -v sinfo >/dev/null && healthy; then echo "local slurm: already up (${NODES} node(s))"; exit 0; fi

missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  echo "local slurm: installing ${missing[*]}"
  # Forbid the packages' init scripts from starting daemons (no systemd here); we start them.
  own_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; own_policy=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  ((own_policy)) && rm -f /usr/sbin/policy-rc.d
fi

mkdir -p "$STATE"/{ctld,d,run,log} /run/munge /run/mysqld
chown munge:munge /run/munge; chown mysql:mysql /run/mysqld
if [[ ! -s /etc/munge/munge.key ]]; then
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
fi

if [[ -e /etc/slurm/slurm.conf ]] && ! cmp -s /etc/slurm/slurm.conf <(conf) && running slurmctld; then
  echo "local slurm: new layout (${NODES} node(s)): restarting slurmctld and the slurmds"
  scancel --full --quiet --user "$(id -un)" 2>/dev/null || true
  pkill -x slurmd || true; pkill -x slurmctld || true
  for _ in $(seq 50); do pgrep -x slurmd >/dev/null || pgrep -x slurmctld >/dev/null || break; sleep 0.2; done
  pkill -9 -x slurmd || true; pkill -9 -x slurmctld || true
  kill_nodes
  net_down
fi
conf > /etc/slurm/slurm.conf
((NODES == 1)) || net_up "$NODES"     # the controller's address is on the bridge
cat > /etc/slurm/slurmdbd.conf <<CONF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
LogFile=$STATE/log/slurmdbd.log
PidFile=$STATE/run/slurmdbd.pid
CONF
chmod 600 /etc/slurm/slurmdbd.conf

running munged || runuser -u munge -- /usr/sbin/munged
wait_for 10 munge munge -n
if ! running mariadbd; then
  [[ -d /var/lib/mysql/mysql ]] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
  setsid mariadbd --user=mysql --skip-networking --socket=/run/mysqld/mysqld.sock \
    >"$STATE/log/mariadb.log" 2>&1 < /dev/null &
fi
wait_for 30 MariaDB mariadb -e 'select 1'
mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
  CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
running slurmdbd || slurmdbd
wait_for 30 slurmdbd sacctmgr -n list cluster
sacctmgr -n list cluster format=cluster | grep -qw distadv || sacctmgr -i add cluster distadv >/dev/null
running slurmctld || slurmctld
wait_for 30 slurmctld scontrol ping
if ((NODES == 1)); then
  slurmd_up "$HOST" || slurmd
else
  for i in $(seq "$NODES"); do
    slurmd_up "node$i" || node_start "$i" slurmd
  done
fi
wait_for 30 "the node(s)" nodes_up
wait_for 30 accounting sacct -n -X
echo "local slurm: up (${NAMES[*]}, $CPUS CPUs each, state in $STATE) in $((SECONDS - START)) s"
