#!/usr/bin/env bash
# A private Slurm cluster on this host: its own munged, one slurmctld and several slurmd
# ("nodes" n1..nN sharing the host), all under one state directory, on free ports.
#
#   local.sh up [NODES]   start (default 4 nodes); idempotent: a running cluster is kept
#   local.sh down         stop exactly the daemons this script started, by their pid files
#   local.sh status       print the daemons and sinfo
#   local.sh env          print `export SLURM_CONF=...` for `eval`
#   local.sh plugin FILE  only build the pyxis stand-in into FILE (docker/cluster.sh uses it)
#
# The state directory is $RANK_LAUNCH_CLUSTER_DIR (default /tmp/rank-launch-cluster). Nothing
# outside it is written; /etc/munge/munge.key is copied, not used in place.
# $RANK_LAUNCH_CLUSTER_NODE_PORT sets the nodes' first port instead of a free one.
#
# The cluster loads a pyxis stand-in (pyxis_stand_in.c, a SPANK plugin built here): srun takes
# pyxis's --container-* options, so scripts written for pyxis clusters run unchanged.
#
# Ports: the daemons' ports are taken below the kernel's ephemeral range and must be free in
# every TCP state. (A port that is the local end of an outgoing connection cannot be bound: with
# ports picked inside the ephemeral range, a slurmd could fail to start right after a busy test
# run, and its node never became idle.) When start-up fails, the last lines of every daemon's
# log are printed and the logs stay in $dir/log.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
dir=${RANK_LAUNCH_CLUSTER_DIR:-/tmp/rank-launch-cluster}
conf=$dir/slurm.conf

die() { echo "local.sh: $*" >&2; exit 1; }

# The last lines of every daemon's log, for a start-up that failed.
show_logs() {
  local f
  for f in "$dir/munge/munged.log" "$dir/log/slurmctld.log" "$dir"/log/slurmd.*.log; do
    [[ -s $f ]] || continue
    echo "---- last lines of $f" >&2
    tail -n 15 "$f" >&2
  done
}

# A start-up failure: what went wrong, the logs' last lines, and where they stay.
die_start() {
  echo "local.sh: $*" >&2
  show_logs
  echo "local.sh: logs kept in $dir/log" >&2
  exit 1
}

# True when the pid in FILE is alive and its command line mentions WORD (a reused pid does not).
owned_pid() {
  local file=$1 word=$2 pid
  [[ -f $file ]] || return 1
  pid=$(<"$file")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$word"
}

# Free in every state: listening, connected (as an outgoing connection's local end) or closing.
port_free() {
  ! ss -Htan "sport = :$1" 2>/dev/null | grep -q .
}

# Prints the first port of COUNT consecutive free ports, below the ephemeral range (where the
# kernel picks the local ports of outgoing connections) and above 10000.
free_ports() {
  local count=$1 base p ok low span
  low=$(awk '{ print $1 }' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
  ((low > 10000 + count + 100)) || low=32768
  span=$((low - 10000 - count))
  for _ in $(seq 1 200); do
    base=$((10000 + (RANDOM * 32768 + RANDOM) % span))
    ok=1
    for ((p = base; p < base + count; p++)); do
      port_free "$p" || { ok=0; break; }
    done
    ((ok)) && { echo "$base"; return 0; }
  done
  die "no $count consecutive free ports found"
}

wait_until() {
  local what=$1 seconds=$2
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die_start "timed out after ${seconds}s waiting for $what"
    check_daemons
    sleep 0.1
  done
}

# Fails at once, with the logs, when a daemon this script started has died (a slurmd that
# cannot bind its port exits before it writes a pid file).
started_nodes=0
check_daemons() {
  if [[ -f $dir/slurmctld.pid ]] && ! owned_pid "$dir/slurmctld.pid" "$conf"; then
    die_start "slurmctld died during start-up"
  fi
  local i
  for ((i = 1; i <= started_nodes; i++)); do
    pgrep -f -- "slurmd -f $conf -N n$i\$" >/dev/null || die_start "slurmd n$i died during start-up"
  done
}

# Builds the pyxis stand-in into FILE, against this host's Slurm headers.
build_plugin() {
  local so=$1
  [[ -f /usr/include/slurm/spank.h ]] || die "spank.h not found: run scripts/setup (libslurm-dev)"
  gcc -shared -fPIC -O2 -Wall -Werror -o "$so.tmp" "$here/pyxis_stand_in.c" ||
    die "could not build the pyxis stand-in ($here/pyxis_stand_in.c)"
  mv -f "$so.tmp" "$so"
}

nodes_idle() {
  local n=$1
  [[ $(SLURM_CONF=$conf sinfo -h -N -o '%t' 2>/dev/null | grep -c '^idle') -ge $n ]]
}

cmd_up() {
  local n_nodes=${1:-4}
  [[ $n_nodes =~ ^[1-9][0-9]*$ ]] || die "NODES must be a positive integer, got \`$n_nodes\`"
  if owned_pid "$dir/slurmctld.pid" "$conf"; then
    echo "local.sh: cluster already running in $dir" >&2
    return 0
  fi
  command -v slurmctld >/dev/null || die "slurmctld not found: run scripts/setup"
  mkdir -p "$dir"/{state,log,munge}
  chmod 755 "$dir"

  # munge: a private daemon with a private socket and a copy of the key.
  local host
  host=$(hostname)
  # Clients need to reach the socket; the key inside stays 0400.
  install -o munge -g munge -m 755 -d "$dir/munge"
  if [[ ! -f $dir/munge/munge.key ]]; then
    if [[ -r /etc/munge/munge.key ]]; then
      install -o munge -g munge -m 400 /etc/munge/munge.key "$dir/munge/munge.key"
    else
      dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
      chown munge:munge "$dir/munge/munge.key"
      chmod 400 "$dir/munge/munge.key"
    fi
  fi
  runuser -u munge -- /usr/sbin/munged \
    --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" \
    --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" \
    --seed-file="$dir/munge/munged.seed"
  wait_until "munged" 10 test -S "$dir/munge/munge.socket"

  local ctl_port node_port
  ctl_port=$(free_ports 1)
  # RANK_LAUNCH_CLUSTER_NODE_PORT: the nodes' first port, as given (not checked).
  node_port=${RANK_LAUNCH_CLUSTER_NODE_PORT:-$(free_ports "$n_nodes")}
  for ((i = 1; i <= n_nodes; i++)); do mkdir -p "$dir/spool.n$i" "$dir/tmp.n$i"; done
  build_plugin "$dir/pyxis_stand_in.so"
  printf 'required %s\n' "$dir/pyxis_stand_in.so" >"$dir/plugstack.conf"
  cat >"$conf" <<CONF
# Generated by tests/cluster/local.sh: a private cluster of $n_nodes nodes on host $host.
ClusterName=ranklaunch
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctl_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
# rank-launch ends within its grace period + 4 s of a TERM: that must fit inside KillWait.
KillWait=10
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
SlurmdParameters=config_overrides
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.%n.pid
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool.%n
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.%n.log
SlurmctldDebug=info
SlurmdDebug=info
# The PMIx plugin's per-step directory must differ between nodes sharing a host.
TmpFS=$dir/tmp.%n
# srun takes pyxis's --container-* options (tests/cluster/pyxis_stand_in.c).
PlugStackConfig=$dir/plugstack.conf
NodeName=n[1-$n_nodes] NodeHostname=$host NodeAddr=127.0.0.1 Port=$node_port-$((node_port + n_nodes - 1)) CPUs=8 RealMemory=2000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
  slurmctld -f "$conf" || die_start "slurmctld did not start"
  wait_until "slurmctld" 15 env SLURM_CONF="$conf" scontrol ping
  for ((i = 1; i <= n_nodes; i++)); do
    slurmd -f "$conf" -N "n$i" || die_start "slurmd n$i did not start"
  done
  started_nodes=$n_nodes
  wait_until "$n_nodes idle nodes" 30 nodes_idle "$n_nodes"
  echo "local.sh: $n_nodes nodes up in $dir (SLURM_CONF=$conf)" >&2
}

cmd_down() {
  local f pids=()
  for f in "$dir"/slurmd.*.pid "$dir/slurmctld.pid"; do
    if owned_pid "$f" "$conf"; then pids+=("$(<"$f")"); fi
  done
  if owned_pid "$dir/munge/munged.pid" "$dir/munge/munge.socket"; then pids+=("$(<"$dir/munge/munged.pid")"); fi
  ((${#pids[@]})) || { echo "local.sh: nothing running in $dir" >&2; return 0; }
  kill -TERM "${pids[@]}" 2>/dev/null || true
  local deadline=$((SECONDS + 10)) p alive
  while ((SECONDS < deadline)); do
    alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  rm -f "$dir"/slurmd.*.pid "$dir/slurmctld.pid"
  echo "local.sh: stopped ${#pids[@]} daemons" >&2
}

cmd_status() {
  local f
  for f in "$dir/munge/munged.pid" "$dir/slurmctld.pid" "$dir"/slurmd.*.pid; do
    [[ -f $f ]] || continue
    if owned_pid "$f" "$dir"; then echo "running  $(basename "$f" .pid) pid $(<"$f")"; else echo "stale    $(basename "$f" .pid)"; fi
  done
  if [[ -f $conf ]]; then SLURM_CONF=$conf sinfo 2>/dev/null || true; fi
}

case ${1:-} in
  up) shift; cmd_up "$@" ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) echo "export SLURM_CONF=$conf" ;;
  plugin) [[ -n ${2:-} ]] || die "usage: local.sh plugin FILE"; build_plugin "$2" ;;
  *) die "usage: local.sh up [NODES] | down | status | env | plugin FILE" ;;
esac
