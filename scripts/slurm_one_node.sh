#!/usr/bin/env bash
# A real one-node Slurm cluster on this machine, as root (docs/fleet.md, the CI tier .ci/tiers/slurm.sh):
#   scripts/slurm_one_node.sh start   install Debian's slurm-wlm and munge if missing, write the config,
#                                     start munged, slurmctld and slurmd, wait until the node is idle
#   scripts/slurm_one_node.sh stop    stop the three daemons this script started
# The configuration is the minimal one that was seen working on the build machines (MACHINE-NOTES.md):
# a random munge key, SlurmUser=root, auth/munge, proctrack/linuxproc, task/none, select/cons_tres,
# this host as the only node with its cores and most of its memory, and two partitions over it
# (`debug`, the default, and `night`) so that a campaign over two partitions can be submitted.
# Accounting (slurmdbd) is not set up: `sacct` answers that accounting is disabled, as on many small
# clusters; lokaal-bench's `status` then reads the result sets and squeue only.
set -euo pipefail

RUN_DIR=/run/lokaal-bench-slurm   # pid files of the daemons started here
CONF=/etc/slurm/slurm.conf

start() {
  if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
  fi
  mkdir -p "$RUN_DIR" /etc/munge /var/log/munge /var/lib/munge /run/munge \
    /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /etc/slurm
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
  fi
  chown -R munge:munge /etc/munge /var/log/munge /var/lib/munge /run/munge
  chmod 400 /etc/munge/munge.key
  chmod 700 /etc/munge

  local host cpus mem_mb
  host=$(hostname -s)
  cpus=$(nproc --all)
  mem_mb=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.8}' /proc/meminfo)
  cat >"$CONF" <<EOF
# Written by lokaal-bench's scripts/slurm_one_node.sh: a one-node cluster for tests and development.
ClusterName=lokaal
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=10
MinJobAge=600
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
PartitionName=night Nodes=$host MaxTime=INFINITE State=UP
EOF

  if ! pgrep -u munge -x munged >/dev/null; then
    runuser -u munge -- munged
  fi
  if [ ! -s "$RUN_DIR/slurmctld.pid" ] || ! kill -0 "$(cat "$RUN_DIR/slurmctld.pid")" 2>/dev/null; then
    slurmctld
  fi
  if [ ! -s "$RUN_DIR/slurmd.pid" ] || ! kill -0 "$(cat "$RUN_DIR/slurmd.pid")" 2>/dev/null; then
    slurmd
  fi
  for _ in $(seq 1 30); do
    if sinfo -h -N -o "%T" 2>/dev/null | grep -q -E "^idle|^mixed|^allocated"; then
      sinfo
      return 0
    fi
    sleep 1
  done
  echo "the Slurm node did not become idle in 30 s:" >&2
  sinfo -N -l >&2 || true
  tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
  return 1
}

stop() {
  for daemon in slurmd slurmctld; do
    if [ -s "$RUN_DIR/$daemon.pid" ]; then
      kill "$(cat "$RUN_DIR/$daemon.pid")" 2>/dev/null || true
      rm -f "$RUN_DIR/$daemon.pid"
    fi
  done
  if [ -s /run/munge/munged.pid ]; then
    kill "$(cat /run/munge/munged.pid)" 2>/dev/null || true
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
