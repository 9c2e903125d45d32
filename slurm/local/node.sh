#!/usr/bin/env bash
# One node of the multi-node local cluster (start.sh --nodes N), for fault tests and debugging:
#
#   slurm/local/node.sh lose I        node I is lost, as in a power cut: its link goes down
#                                     first (no FIN or RST reaches the peers), then every
#                                     process in its namespace (slurmd, job steps, ranks) is
#                                     SIGKILLed. slurmctld marks it DOWN after SlurmdTimeout
#                                     (15 s); `start.sh --nodes N` brings it back.
#   slurm/local/node.sh exec I CMD... CMD inside node I (network, hostname and mount namespaces
#                                     of its slurmd), e.g. `node.sh exec 2 ss -tn`
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/netns.sh"
STATE=${DISTADV_SLURM_STATE:-/var/lib/distadv-slurm}
usage() { echo "usage: node.sh lose I | node.sh exec I CMD..." >&2; exit 2; }
(($# >= 2)) || usage
what=$1 i=$2; shift 2
[[ $i =~ ^[1-8]$ ]] && ip netns list | grep -qw "$(ns_name "$i")" ||
  { echo "local slurm: no node $i (start.sh --nodes N makes node1..nodeN)" >&2; exit 2; }
case $what in
  lose)
    ip -n "$(ns_name "$i")" link set eth0 down
    pids=$(node_pids "$i")
    [[ -n $pids ]] && kill -9 $pids 2>/dev/null || true
    echo "local slurm: node$i lost (link down, $(wc -w <<<"$pids") process(es) killed)" ;;
  exec)
    (($#)) || usage
    pid=$(slurmd_pid "node$i") ||
      { echo "local slurm: node$i's slurmd is not running (start.sh --nodes N)" >&2; exit 1; }
    exec nsenter -t "$pid" -n -u -m "$@" ;;
  *) usage ;;
esac
