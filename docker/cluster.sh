#!/usr/bin/env bash
# A real multi-node Slurm cluster of Docker containers: controller c0 and compute nodes n1..n4
# with their own host names and addresses on a private network, a shared volume at /shared
# (the cluster file system) and the project's binaries mounted read-only.
#
#   cluster.sh up [--bin-dir DIR]    build the image if its recipe changed, start the cluster,
#                                    wait until every node is up (idempotent)
#   cluster.sh down [--images]       stop and remove what this script created (and the image)
#   cluster.sh status                containers, nodes, jobs
#   cluster.sh logs [SERVICE...]     the daemons' logs (munged, slurmctld, slurmd)
#   cluster.sh demo [--fail-rank ROLE:RANK | --hang ROLE[:RANK]:MODE] [--keep] [--bin-dir DIR] [--config NAME.yaml]
#                                    the multi-node demo job (docker/demo.yaml); last line
#                                    `verdict: PASS` or `verdict: FAIL (...)`, exit code 0 or 1
#   cluster.sh exec NODE [CMD...]    run CMD (default bash) in container NODE (c0, n1..n4)
#   cluster.sh image                 only build the image (prints its tag)
#   cluster.sh test [ARGS...]        build, then run the multi-node tests (tests/e2e/docker.rs):
#                                    image, cluster, the job, the failure cases, teardown
#
# --bin-dir DIR: where the binaries come from (default: target/debug, built by `demo`).
# Everything created carries the label `rank-launch.cluster`; `down` removes exactly that.
# Host-side state (the binaries' snapshot, image build scratch) lives in
# $RANK_LAUNCH_DOCKER_DIR (default /tmp/rank-launch-docker).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
project=rank-launch-cluster
label=rank-launch.cluster
state=${RANK_LAUNCH_DOCKER_DIR:-/tmp/rank-launch-docker}
nodes=(n1 n2 n3 n4)
binaries=(rank-launch launch-gen shim-leader shim-worker shim-role rank-check)
# The image is named after its recipe: a changed docker/image.sh means a new image.
image=rank-launch-node:$(sha256sum "$here/image.sh" | cut -c1-12)

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
die() {
  echo "cluster.sh: $*" >&2
  exit 1
}
say() { printf '== %s\n' "$*"; }

compose() {
  RANK_LAUNCH_IMAGE=$image RANK_LAUNCH_BIN_DIR=$state/bin \
    docker-compose --ansi never -p "$project" -f "$here/compose.yaml" "$@"
}

# Runs CMD in container NODE without a TTY (CI has none).
in_node() {
  local node=$1
  shift
  docker exec "rank-launch-$node" "$@"
}

running() {
  [[ $(docker inspect -f '{{.State.Running}}' "rank-launch-$1" 2>/dev/null) == true ]]
}

check_engine() {
  command -v docker >/dev/null || die "docker is not installed"
  command -v docker-compose >/dev/null || die "docker-compose (1.29, the python one) is not installed"
  local err
  err=$(docker info 2>&1 >/dev/null) || die "no Docker engine: docker info failed: ${err:0:300}"
}

ensure_debootstrap() {
  command -v debootstrap >/dev/null && return 0
  [[ $(id -u) -eq 0 ]] || die "debootstrap is missing: apt-get install debootstrap (as root)"
  echo "cluster.sh: installing debootstrap" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends debootstrap >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends debootstrap >/dev/null; } ||
    die "could not install debootstrap"
}

# Builds the image unless one built from the same recipe exists; removes older ones.
ensure_image() {
  mkdir -p "$state"
  # Two builds at once would both bootstrap; the second one waits and finds the image.
  exec 8>"$state/image.lock"
  flock -w 600 8 || die "timed out waiting for another image build ($state/image.lock)"
  if ! docker image inspect "$image" >/dev/null 2>&1; then
    ensure_debootstrap
    local started=$SECONDS rootfs
    rootfs=$(mktemp -d "$state/rootfs.XXXXXX")
    say "building image $image (debootstrap from the host's Debian mirror, about a minute)" >&2
    if ! "$here/image.sh" "$rootfs/root"; then
      rm -rf "$rootfs"
      die "image build failed (docker/image.sh)"
    fi
    tar -C "$rootfs/root" -c . | docker import \
      --change "LABEL $label=1" --change "LABEL $label.recipe=$(sha256sum "$here/image.sh" | cut -d' ' -f1)" \
      --change 'CMD ["/bin/bash"]' - "$image" >/dev/null
    rm -rf "$rootfs"
    echo "cluster.sh: built $image in $((SECONDS - started)) s" >&2
    local old
    for old in $(docker images --filter "label=$label" --format '{{.Repository}}:{{.Tag}}'); do
      [[ $old == "$image" ]] || docker rmi "$old" >/dev/null 2>&1 || true
    done
  fi
  exec 8>&-
}

# Copies the binaries into the snapshot directory mounted into the containers: a rebuild on
# the host does not change them under a running job. Each file is replaced atomically.
snapshot_bins() {
  local src=$1 b n=0
  [[ -d $src ]] || die "no binary directory $src (build with: cargo build --workspace --bins)"
  mkdir -p "$state/bin"
  for b in "${binaries[@]}"; do
    if [[ -x $src/$b ]]; then
      cp "$src/$b" "$state/bin/.$b.tmp"
      mv -f "$state/bin/.$b.tmp" "$state/bin/$b"
      n=$((n + 1))
    else
      rm -f "$state/bin/$b"
      echo "cluster.sh: warning: $src/$b not built; not in the cluster" >&2
    fi
  done
  ((n > 0)) || die "none of ${binaries[*]} in $src"
  # The drop-in scripts beside the binaries, as in target/dist.
  for b in slurm_run.sh trtllm-llmapi-launch; do
    cp "$root/shims/$b" "$state/bin/.$b.tmp"
    mv -f "$state/bin/.$b.tmp" "$state/bin/$b"
  done
  # The pyxis stand-in (plugstack.conf loads it): srun in the containers takes pyxis's
  # --container-* options. Built against the host's Slurm headers; cmd_up checks that the
  # image's Slurm is the same version.
  "$root/tests/cluster/local.sh" plugin "$state/bin/pyxis_stand_in.so"
}

# The pyxis stand-in is built against the host's Slurm: the image's must be the same version
# (slurmd refuses a SPANK plugin of another version, and so would every srun).
check_slurm_versions() {
  local host image
  host=$(slurmd -V 2>/dev/null) || die "slurmd is not installed on the host: run scripts/setup"
  image=$(in_node c0 slurmd -V 2>/dev/null) || die "slurmd -V failed in the controller container"
  [[ $host == "$image" ]] ||
    die "the host has $host and the image $image: the pyxis stand-in is built on the host for the image's Slurm; rebuild the image (cluster.sh down --images) after updating the host, or update the host's slurm packages"
}

# True when slurmctld answers and every node responds (idle, or busy with a job).
cluster_ready() {
  local states
  in_node c0 scontrol ping >/dev/null 2>&1 || return 1
  states=$(in_node c0 sinfo -h -N -o '%N %t' 2>/dev/null) || return 1
  [[ $(grep -cE '^n[0-9]+ (idle|alloc|mix|comp)$' <<<"$states") -eq ${#nodes[@]} ]]
}

wait_ready() {
  local limit=$1 deadline=$((SECONDS + $1))
  until cluster_ready; do
    if ((SECONDS >= deadline)); then
      echo "cluster.sh: the cluster was not ready within ${limit} s; nodes:" >&2
      in_node c0 sinfo -N 2>&1 | sed 's/^/  /' >&2 || true
      compose ps >&2 || true
      compose logs --no-color --tail=20 >&2 || true
      die "timed out after ${limit} s waiting for slurmctld and ${#nodes[@]} responding nodes"
    fi
    sleep 0.3
  done
}

cmd_up() {
  local bin=$root/target/debug
  while (($#)); do
    case $1 in
      --bin-dir) bin=${2:?--bin-dir takes a directory}; shift 2 ;;
      *) die "up: unknown option \`$1\`" ;;
    esac
  done
  check_engine
  local started=$SECONDS
  ensure_image
  snapshot_bins "$bin"
  if ! compose up -d --remove-orphans >"$state/compose-up.log" 2>&1 || ! running c0; then
    cat "$state/compose-up.log" >&2
    die "the containers did not start (see above; cluster.sh logs)"
  fi
  check_slurm_versions
  wait_ready 90
  echo "cluster.sh: cluster up (c0 + ${nodes[*]}) in $((SECONDS - started)) s" >&2
}

cmd_down() {
  local images=0
  while (($#)); do
    case $1 in
      --images) images=1; shift ;;
      *) die "down: unknown option \`$1\`" ;;
    esac
  done
  check_engine
  compose down --volumes --remove-orphans --timeout 5 >/dev/null 2>&1 || true
  # What an older compose file or an interrupted run may have left: only labelled objects.
  local ids=()
  mapfile -t ids < <(docker ps -aq --filter "label=$label")
  ((${#ids[@]} == 0)) || docker rm -f "${ids[@]}" >/dev/null
  mapfile -t ids < <(docker network ls -q --filter "label=$label")
  ((${#ids[@]} == 0)) || docker network rm "${ids[@]}" >/dev/null
  mapfile -t ids < <(docker volume ls -q --filter "label=$label")
  ((${#ids[@]} == 0)) || docker volume rm "${ids[@]}" >/dev/null
  if ((images)); then
    mapfile -t ids < <(docker images -q --filter "label=$label" | sort -u)
    ((${#ids[@]} == 0)) || docker rmi -f "${ids[@]}" >/dev/null
  fi
  # The binaries' snapshot was only for the containers.
  rm -rf "${state:?}/bin" "$state/compose-up.log"
  echo "cluster.sh: cluster down" >&2
}

cmd_status() {
  check_engine
  docker ps -a --filter "label=$label" --format 'table {{.Names}}\t{{.Status}}\t{{.Image}}'
  if running c0; then
    in_node c0 sinfo -N -o '%N %10T %C %E' || true
    in_node c0 squeue || true
  fi
}

cmd_logs() {
  check_engine
  compose logs --no-color --timestamps --tail="${TAIL:-200}" "$@"
}

cmd_exec() {
  local node=${1:-}
  [[ $node =~ ^(c0|n[0-9]+)$ ]] || die "exec takes a node name (c0, ${nodes[*]}), got \`$node\`"
  shift
  (($#)) || set -- bash
  local tty=()
  if [[ -t 0 && -t 1 ]]; then tty=(-it); else tty=(-i); fi
  exec docker exec "${tty[@]}" "rank-launch-$node" "$@"
}

cmd_demo() {
  local fail_rank='' hang='' keep=0 bin='' config=demo.yaml
  while (($#)); do
    case $1 in
      --fail-rank) fail_rank=${2:-}; shift 2 || { usage >&2; exit 2; } ;;
      --fail-rank=*) fail_rank=${1#*=}; shift ;;
      --hang) hang=${2:-}; shift 2 || { usage >&2; exit 2; } ;;
      --hang=*) hang=${1#*=}; shift ;;
      --keep) keep=1; shift ;;
      --bin-dir) bin=${2:-}; shift 2 || { usage >&2; exit 2; } ;;
      --config) config=${2:-}; shift 2 || { usage >&2; exit 2; } ;;
      -h | --help) usage; exit 0 ;;
      *) echo "cluster.sh: demo: unknown option \`$1\`" >&2; usage >&2; exit 2 ;;
    esac
  done
  if [[ -n $hang && ! $hang =~ ^(GEN_[0-9]+|CTX_[0-9]+|DISAGG_SERVER|BENCHMARK)(:[0-9]+)?:(not-ready|wedged|stall|freeze)$ ]]; then
    echo "cluster.sh: --hang takes ROLE[:RANK]:MODE (MODE: not-ready, wedged, stall, freeze), got \`$hang\`" >&2
    exit 2
  fi
  if [[ -n $fail_rank && ! $fail_rank =~ ^(GEN|CTX)_[0-9]+:[0-9]+$ ]]; then
    echo "cluster.sh: --fail-rank takes ROLE:RANK such as GEN_0:3, got \`$fail_rank\`" >&2
    exit 2
  fi
  if [[ ! $config =~ ^[A-Za-z0-9._-]+\.yaml$ || ! -f $here/$config ]]; then
    echo "cluster.sh: --config takes the name of a YAML file in docker/, got \`$config\`" >&2
    exit 2
  fi
  fail() {
    printf 'verdict: FAIL (%s)\n' "$*"
    exit 1
  }
  check_engine
  if [[ -z $bin ]]; then
    [[ -x "$HOME/.cargo/bin/cargo" ]] && export PATH="$HOME/.cargo/bin:$PATH"
    say "building (cargo build --workspace --bins)"
    cargo build --locked --workspace --bins --manifest-path "$root/Cargo.toml" 2>&1 | grep -E '^error' || true
    bin=$root/target/debug
  fi
  local b
  for b in "${binaries[@]}"; do
    [[ -x $bin/$b ]] || fail "SETUP: $bin/$b was not built"
  done

  # Globals: the EXIT trap runs after this function has returned.
  demo_started=0 demo_keep=$keep
  if running c0; then
    say "using the running cluster"
    snapshot_bins "$bin"
    wait_ready 60
  else
    say "starting the cluster (c0 + ${nodes[*]})"
    demo_started=1
    cmd_up --bin-dir "$bin"
  fi
  # shellcheck disable=SC2317 # Called by the EXIT trap.
  demo_cleanup() {
    # An interrupted demo leaves no job behind.
    in_node c0 scancel --name=rank-launch-demo >/dev/null 2>&1 || true
    if ((demo_started && !demo_keep)); then cmd_down; fi
    if ((demo_started && demo_keep)); then echo "cluster.sh: cluster kept running (cluster.sh down stops it)" >&2; fi
  }
  trap demo_cleanup EXIT
  trap 'exit 130' INT TERM

  local env=(-e "DEMO_CONFIG=$config") rc=0
  [[ -n $fail_rank ]] && env+=(-e "SHIM_FAIL_RANK=$fail_rank")
  [[ -n $hang ]] && env+=(-e "SHIM_HANG=$hang")
  ((keep)) && env+=(-e DEMO_KEEP=1)
  docker exec "${env[@]}" rank-launch-c0 /opt/rank-launch/docker/job.sh || rc=$?
  return "$rc"
}

cmd_test() {
  check_engine
  [[ -x "$HOME/.cargo/bin/cargo" ]] && export PATH="$HOME/.cargo/bin:$PATH"
  say "building (cargo build --workspace --bins)"
  cargo build --locked --workspace --bins --manifest-path "$root/Cargo.toml"
  say "the multi-node tests (tests/e2e/docker.rs)"
  if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --manifest-path "$root/Cargo.toml" --locked -p e2e-tests --test docker \
      --no-fail-fast "$@"
  else
    cargo test --manifest-path "$root/Cargo.toml" --locked -p e2e-tests --test docker "$@"
  fi
}

case ${1:-} in
  test) shift; cmd_test "$@" ;;
  up) shift; cmd_up "$@" ;;
  down) shift; cmd_down "$@" ;;
  status) cmd_status ;;
  logs) shift; cmd_logs "$@" ;;
  demo) shift; cmd_demo "$@" ;;
  exec) shift; cmd_exec "$@" ;;
  image) check_engine; ensure_image; echo "$image" ;;
  -h | --help | help) usage ;;
  *) usage >&2; exit 2 ;;
esac
