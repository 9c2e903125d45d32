#!/usr/bin/env bash
# Stop the local cluster started by start.sh: cancel jobs, then the daemons (~10 s), then the
# nodes' network namespaces and bridge (--nodes N). Safe to run when nothing is running.
# The packages and the accounting database stay.
set -uo pipefail
source "$(cd "$(dirname "$0")" && pwd)/netns.sh"
command -v scancel >/dev/null && scancel --full --quiet --user "$(id -un)" 2>/dev/null
for d in slurmd slurmctld slurmdbd; do pkill -x "$d"; done
command -v mariadb-admin >/dev/null && mariadb-admin shutdown 2>/dev/null
pkill -x munged
DAEMONS=(slurmd slurmctld slurmdbd mariadbd munged)
alive() { for d in "${DAEMONS[@]}"; do pgrep -x "$d" >/dev/null && return 0; done; return 1; }
for _ in $(seq 50); do
  alive || break
  sleep 0.2
done
how=stopped
if alive; then for d in "${DAEMONS[@]}"; do pkill -9 -x "$d"; done; how="stopped (some daemons needed SIGKILL)"; fi
kill_nodes
net_down
echo "local slurm: $how"
