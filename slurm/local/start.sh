#!/usr/bin/env bash
# A real single-node SLURM for the tests and for trying grids on one machine (as root):
# munge, MariaDB + slurmdbd (accounting, so that `sacct` and submitit see final states),
# slurmctld and slurmd, from Debian's packages, started by hand (no systemd).
# Idempotent: daemons already running are kept; a healthy cluster returns in ~1 s.
# State, spool and logs live in $DISTADV_SLURM_STATE (default /var/lib/distadv-slurm).
# /etc/slurm and ports 6817-6819 are global: one such cluster per machine.
set -euo pipefail
STATE=${DISTADV_SLURM_STATE:-/var/lib/distadv-slurm}
HOST=$(hostname -s)
PKGS=(munge slurm-client slurmctld slurmd slurmdbd mariadb-server)

healthy() {
  sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)' && sacct -n -X >/dev/null 2>&1
}
running() { pgrep -x "$1" >/dev/null; }
wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local t=$1 what=$2; shift 2
  for _ in $(seq $((t * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "local slurm: $what did not come up in ${t}s; logs in $STATE/log" >&2; exit 1
}

[[ $(id -u) == 0 ]] || { echo "local slurm: run as root (it installs packages and daemons)" >&2; exit 1; }
if command -v sinfo >/dev/null && healthy; then echo "local slurm: already up"; exit 0; fi

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

# RealMemory below the real size (else the node drains); the node advertises at least 4 CPUs
# (config_overrides) so a 4-element array or a 2-task element runs at once on 2 cores.
CPUS=$(nproc); ((CPUS < 4)) && CPUS=4
MEM=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) * 9 / 10 ))
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=distadv
SlurmctldHost=$HOST(127.0.0.1)
AuthType=auth/munge
# Without cred_expire=10 a requeued job waits ~121 s before it may start again.
AuthInfo=cred_expire=10
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
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
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
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
running slurmd || slurmd
wait_for 30 "the node" bash -c "sinfo -h -o %t | grep -qE '^(idle|mix|alloc)'"
wait_for 30 accounting sacct -n -X
echo "local slurm: up ($HOST, $CPUS CPUs, state in $STATE)"
