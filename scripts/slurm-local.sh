#!/usr/bin/env bash
# A single-node Slurm on this machine, without systemd, for running sweeps through a real scheduler:
#   scripts/slurm-local.sh start    install (Debian/Ubuntu packages) if missing, configure, start munged, slurmctld, slurmd
#   scripts/slurm-local.sh stop     stop the daemons (by their pid files)
#   scripts/slurm-local.sh status   show the node and the queue
# Needs root (or sudo). State lives in /var/lib/slurm-local; the config is /etc/slurm/slurm.conf.
set -euo pipefail
state=/var/lib/slurm-local
conf=/etc/slurm/slurm.conf
sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"

install() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null && command -v sbatch >/dev/null && return
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -q --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null 2>&1 || {
    $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null; }
}

configure() {
  $sudo mkdir -p /etc/slurm "$state/ctld" "$state/d" /var/log/slurm /run/munge /etc/munge
  # The node line as slurmd sees this machine, renamed to localhost (the only host).
  local node
  node=$(slurmd -C | head -n 1 | sed -E 's/NodeName=[^ ]+/NodeName=localhost/')
  $sudo tee "$conf" >/dev/null <<CONF
ClusterName=research
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/d
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=/var/log/slurm/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=batch_sched_delay=0
MinJobAge=600
ReturnToService=2
$node State=UNKNOWN
PartitionName=main Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
  # munge: a key, owned by the munge user, and its run directory (no systemd to create it).
  if [ ! -s /etc/munge/munge.key ]; then $sudo dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; fi
  $sudo chown -R munge:munge /etc/munge /run/munge
  $sudo chmod 400 /etc/munge/munge.key
  $sudo chmod 755 /run/munge
}

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start() {
  install
  configure
  pgrep -x munged >/dev/null || $sudo -u munge munged 2>/dev/null || $sudo runuser -u munge -- munged
  running "$state/slurmctld.pid" || $sudo slurmctld
  running "$state/slurmd.pid" || $sudo slurmd -N localhost
  # Wait until the node takes work (cold start ~10 s).
  for _ in $(seq 1 60); do
    if timeout 3 sinfo -h -N -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then echo "slurm: localhost is up"; return 0; fi
    sleep 1
  done
  echo "slurm: the node did not come up; see /var/log/slurm/slurmctld.log and slurmd.log" >&2
  exit 1
}

# Stops a daemon by its pid file and waits until it has exited (SIGKILL after 15 s), so that a start right
# after a stop does not find the old daemon still shutting down.
stop_daemon() {
  local pid
  if [ -f "$1" ]; then pid=$(cat "$1"); else pid=$(pgrep -x "$2" || true); fi
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  $sudo kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  $sudo kill -9 "$pid" 2>/dev/null || true
}

stop() {
  stop_daemon "$state/slurmd.pid" slurmd
  stop_daemon "$state/slurmctld.pid" slurmctld
  stop_daemon /run/munge/munged.pid munged
  echo "slurm: stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) sinfo; squeue -t all ;;
  *) echo "usage: scripts/slurm-local.sh start|stop|status" >&2; exit 2 ;;
esac
