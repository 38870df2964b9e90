#!/usr/bin/env bash
# Runs inside the controller container (`cluster.sh demo` calls it): renders the launch
# script for docker/demo.yaml with launch-gen (native mode), submits it, streams the job's
# output, prints one row per rank (role, rank, host, Slurm node, exit code, seconds) and the
# benchmark result, and ends with the verdict line of scripts/demo: `verdict: PASS` or
# `verdict: FAIL (<role>: <reason>)`, exit code 0 or 1.
#
# Environment: DEMO_CONFIG (a YAML under docker/, default demo.yaml),
# SHIM_FAIL_RANK=ROLE:RANK (fault injection), DEMO_KEEP=1 (keep the work directory under /shared).
set -euo pipefail

say() { printf '== %s\n' "$*"; }
fail() {
  printf 'verdict: FAIL (%s)\n' "$*"
  exit 1
}

here=/opt/rank-launch/docker
config=$here/${DEMO_CONFIG:-demo.yaml}
[[ -f $config ]] || fail "SETUP: no config $config"
work=$(mktemp -d /shared/demo.XXXXXX)
chmod 755 "$work"
mkdir -p "$work/job"
job=''
# shellcheck disable=SC2317 # Called by the EXIT trap.
cleanup() {
  if [[ -n $job ]] && squeue -h -j "$job" -o %T 2>/dev/null | grep -q .; then
    scancel "$job" 2>/dev/null || true
  fi
  if [[ ${DEMO_KEEP:-0} == 1 ]]; then
    echo "work directory kept: $work (in the shared volume; cluster.sh exec c0 ls $work)" >&2
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The job's environment: sbatch hands it to the job and srun to every step, so it reaches every
# rank on every node. The node image has no Python, so the commands name the stand-ins that
# rank-launch's default `python3 -m tensorrt_llm.llmapi...` commands run elsewhere (they
# initialise MPI first, like the real package: the stop helper must come up as a singleton).
export RANK_LAUNCH_LEADER_CMD=shim-leader
export RANK_LAUNCH_WORKER_CMD=shim-worker
export RANK_LAUNCH_LEADER_STOP_CMD='shim-leader --action stop'
export RANK_LAUNCH_GRACE_PERIOD=5s
export SHIM_TIMEOUT=60
[[ -n ${SHIM_FAIL_RANK:-} ]] || unset SHIM_FAIL_RANK
budgets=()
if [[ -n ${SHIM_HANG:-} ]]; then
  # One stand-in hangs on purpose (see scripts/demo --hang): short budgets end the job.
  export SHIM_HANG_LIMIT=300 SHIM_PROXY_TIMEOUT=300 SHIM_SLOW_AFTER=5
  budgets=(--ready-timeout 20 --stall-timeout 15 --benchmark-timeout 120 --drain-timeout 30 --cause-window 3)
else
  unset SHIM_HANG
fi

say "rendering the launch script (launch-gen, native mode)"
launch-gen --config-yaml "$config" --command shim-role --workspace "$work/job" \
  --precheck "${budgets[@]}" --launch-sh "$work/launch.sh"
launch-gen --config-yaml "$config" "${budgets[@]}" --explain --nodelist "$(sinfo -h -p debug -o %N)"

say "submitting"
job=$(sbatch --parsable --no-kill --job-name=rank-launch-demo --time=10 --chdir="$work" \
  --output="$work/job-output.log" "$work/launch.sh")
echo "job $job"

# Streams the job's output until the job ends (bounded: the job itself has a 10 min limit).
out=$work/job-output.log
shown=0
show_new_output() {
  local size
  size=$(stat -c %s "$out" 2>/dev/null || echo 0)
  if ((size > shown)); then
    tail -c +$((shown + 1)) "$out" | head -c $((size - shown))
    shown=$size
  fi
}
state=''
deadline=$((SECONDS + 660))
while ((SECONDS < deadline)); do
  show_new_output
  state=$(scontrol show job "$job" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p')
  case $state in
    PENDING | RUNNING | CONFIGURING | COMPLETING | '') sleep 0.5 ;;
    *) break ;;
  esac
done
show_new_output
exit_code=$(scontrol show job "$job" 2>/dev/null | sed -n 's/.* ExitCode=\([0-9:]*\).*/\1/p')

echo
say "job $job: $state (exit code ${exit_code:-?})"
printf '%-14s %-6s %-8s %-8s %-10s %s\n' role rank host node exit_code seconds
for f in "$work"/job/ranks/*.json; do
  [[ -e $f ]] || continue
  field() { sed -n "s/^  \"$1\": \"\{0,1\}\([^\",]*\)\"\{0,1\},\{0,1\}$/\1/p" "$f"; }
  ms=$(field duration_ms)
  printf '%-14s %-6s %-8s %-8s %-10s %s\n' "$(field role)" "$(field rank)" "$(field host)" \
    "$(field slurm_node)" "$(field exit_code)" "$(awk -v m="${ms:-0}" 'BEGIN { printf "%.2f", m / 1000 }')"
done | sort -k1,1 -k2,2n

if [[ -f $work/job/benchmark.log ]]; then
  say "benchmark result"
  grep -E 'throughput|latency|Failed requests|requests' "$work/job/benchmark.log" || true
fi

verdict=$(grep -E '^verdict: ' "$out" | tail -n 1 || true)
if [[ $state == COMPLETED && $verdict == 'verdict: PASS' ]]; then
  echo 'verdict: PASS'
  exit 0
fi
if [[ $verdict == 'verdict: FAIL ('* ]]; then
  echo "$verdict"
  exit 1
fi
fail "JOB: job $job ended ${state:-in an unknown state} without a verdict line (output: $out)"
