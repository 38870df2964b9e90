# ---------------------------------------------------------------------------------------------
# launch-gen native template (generator/templates/native.sh).
#
# Every role runs through rank-launch in its own srun step. The batch shell supervises all of
# them: the first step that fails stops the others and decides the one verdict line; once a
# step ends with 0 (normally the benchmark) all others get `drainTimeout` seconds to end too.
# Stopping is TERM, then KILL after `stopTimeout` seconds. The job is never scancel'ed from
# inside, so a failure ends it FAILED with a meaningful exit code.
# Requires bash 5.1 (`wait -n -p`).
# ---------------------------------------------------------------------------------------------
set -Eeuo pipefail
set +x
trap - ERR

if ((BASH_VERSINFO[0] < 5 || (BASH_VERSINFO[0] == 5 && BASH_VERSINFO[1] < 1))); then
    printf 'verdict: FAIL (SETUP: bash 5.1 or newer required, found %s)\n' "$BASH_VERSION"
    exit 1
fi

export jobWorkspace="${jobWorkspace:-${SLURM_SUBMIT_DIR:-$PWD}}"
export numGenServers numCtxServers
export TRTLLM_PERF_RUN_TOKEN="${SLURM_JOB_ID:-local}.${SLURM_RESTART_COUNT:-0}"
export LAUNCH_GEN_CONFIG="$launchGenConfig"
if ((genOnly)); then
    export TRTLLM_DISAGG_BENCHMARK_GEN_ONLY=1
fi
srunCmd=(srun "${srunArgs[@]}" "${containerEnv[@]}")

# Steps by pid: role and log; `stepOrder` keeps the launch order for messages.
declare -A stepRole=() stepLog=()
stepOrder=()
currentRole=SETUP
role=''
log=''
timerPid=''
endedPid=''
rc=0

note() {
    printf 'launch-gen: %s\n' "$*" >&2
}

# The body of a step's background subshell: runs CMD, passes TERM on to it (USR1 sends KILL)
# and exits with its status. A step killed by a signal thus still ends in a normal exit that
# `wait -n` reports: bash drops jobs that die by a signal from its job table. (If a TERM
# interrupts the wait just as CMD ends, the status is 143.)
run_step() {
    local child status
    trap 'kill -TERM "$child" 2>/dev/null || true' TERM
    trap 'kill -KILL "$child" 2>/dev/null || true' USR1
    "$@" &
    child=$!
    while :; do
        status=0
        wait "$child" || status=$?
        kill -0 "$child" 2>/dev/null || break
    done
    exit "$status"
}

# start_step ROLE LOG CMD...: runs CMD in the background with its output in LOG.
start_step() {
    local role=$1 log=$2
    shift 2
    rm -f -- "$log" "${log%.log}.done"
    run_step "$@" >"$log" 2>&1 &
    stepRole[$!]=$role
    stepLog[$!]=$log
    stepOrder+=("$!")
    note "started $role (pid $!, log $log)"
}

# The first step still running, in launch order.
first_running() {
    local pid
    for pid in "${stepOrder[@]}"; do
        if [[ -n ${stepRole[$pid]:-} ]]; then
            printf '%s\n' "$pid"
            return 0
        fi
    done
}

start_timer() {
    sleep "$1" &
    timerPid=$!
}

# KILL, not TERM: a timer started after `fail` ignores TERM, inherited from its trap.
stop_timer() {
    if [[ -n $timerPid ]]; then
        kill -KILL "$timerPid" 2>/dev/null || true
        wait "$timerPid" 2>/dev/null || true
        timerPid=''
    fi
}

# Waits for the next step (or the timer) to end: sets `endedPid` and `rc`.
reap_next() {
    endedPid=''
    rc=0
    if [[ -n $timerPid ]]; then
        wait -n -p endedPid "${!stepRole[@]}" "$timerPid" || rc=$?
    else
        wait -n -p endedPid "${!stepRole[@]}" || rc=$?
    fi
}

# Forgets a reaped step and touches its sentinel: its log is complete now.
finish_step() {
    touch -- "${stepLog[$1]%.log}.done" 2>/dev/null || true
    unset "stepRole[$1]" "stepLog[$1]"
}

# TERM to every running step, KILL (through USR1 to its subshell) to what is left after
# `stopTimeout` seconds. The TERM goes to the steps' tasks through Slurm (`scancel --signal`
# reaches the steps, not this batch shell): each rank-launch then stops its children within its
# grace period and srun ends with the step. A TERM to srun itself would make Slurm SIGKILL the
# tasks at once, with no clean shutdown, so srun is signalled only where scancel cannot be used.
stop_steps() {
    local pid
    ((${#stepRole[@]} > 0)) || return 0
    note "stopping ${stepRole[*]}"
    if [[ -z ${SLURM_JOB_ID:-} ]] || ! scancel --signal=TERM "$SLURM_JOB_ID" 2>/dev/null; then
        kill -TERM "${!stepRole[@]}" 2>/dev/null || true
    fi
    stop_timer
    start_timer "$stopTimeout"
    while ((${#stepRole[@]} > 0)); do
        reap_next
        if [[ -z $endedPid || $endedPid == "$timerPid" ]]; then
            timerPid=''
            break
        fi
        finish_step "$endedPid"
    done
    stop_timer
    for pid in "${!stepRole[@]}"; do
        note "killing ${stepRole[$pid]} (pid $pid)"
        kill -USR1 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        finish_step "$pid"
    done
}

# fail DETAIL CODE: stops everything, prints the verdict and exits with CODE (1 if CODE is 0).
fail() {
    trap '' TERM INT
    stop_steps
    printf 'verdict: FAIL (%s)\n' "$1"
    exit $(($2 == 0 ? 1 : $2))
}

# The role to name in a verdict now: the phase, or during the drain the first server still
# running.
role_now() {
    local pid
    pid=$(first_running)
    if [[ $currentRole == DRAIN && -n $pid ]]; then
        printf '%s\n' "${stepRole[$pid]}"
    else
        printf '%s\n' "$currentRole"
    fi
}
trap 'fail "$(role_now): terminated" 143' TERM INT

# Reaps the next step into `role` and `log`; a non-zero exit fails the job. Returns 1 when the
# timer ended instead of a step.
reap_step() {
    reap_next
    if [[ -n $timerPid && $endedPid == "$timerPid" ]]; then
        timerPid=''
        return 1
    fi
    role=''
    log=''
    [[ -n $endedPid ]] || return 0
    role=${stepRole[$endedPid]}
    log=${stepLog[$endedPid]}
    finish_step "$endedPid"
    if ((rc != 0)); then
        blame "$role" "$log" "$rc"
    elif node_lost "$log"; then
        blame "$role" "$log" 1 "node failure"
    fi
}

# True when srun reported in LOG that a node of its step failed. srun (Slurm 22.05) then
# exits 0 when every task of the step was on that node, which must not pass for a clean end.
node_lost() {
    grep -qs -- '^srun: error: Node failure on' "$1"
}

# How far a role is from the root of a failure: the router and the benchmark are clients of the
# servers, and the benchmark a client of the router, so their failures are often consequences.
upstreamness() {
    case $1 in
        BENCHMARK) echo 2 ;;
        DISAGG_SERVER) echo 1 ;;
        *) echo 0 ;;
    esac
}

# blame ROLE LOG CODE: fails the job, naming the root cause. A failing client gives the other
# steps `causeWindow` seconds to fail too, and the verdict names the most upstream failure.
blame() {
    local role=$1 log=$2 code=$3 detail=${4:-exit $3} otherRole otherCode
    if (($(upstreamness "$role") > 0)); then
        stop_timer
        start_timer "$causeWindow"
        while ((${#stepRole[@]} > 0)); do
            reap_next
            if [[ -n $timerPid && $endedPid == "$timerPid" ]]; then
                timerPid=''
                break
            fi
            [[ -n $endedPid ]] || break
            otherRole=${stepRole[$endedPid]}
            otherCode=$rc
            if ((otherCode == 0)) && node_lost "${stepLog[$endedPid]}"; then
                otherCode=1
            fi
            if ((otherCode != 0)) && (($(upstreamness "$otherRole") < $(upstreamness "$role"))); then
                role=$otherRole log=${stepLog[$endedPid]} code=$otherCode
                if ((rc == 0)); then detail="node failure"; else detail="exit $rc"; fi
            fi
            finish_step "$endedPid"
            (($(upstreamness "$role") > 0)) || break
        done
    fi
    fail "$role: $detail, log $log" "$code"
}

# Waits for every running step; the first non-zero exit fails the job.
wait_all_ok() {
    while ((${#stepRole[@]} > 0)); do
        reap_step
        [[ -n $role ]] || break
    done
}

if ! mkdir -p -- "$jobWorkspace"; then
    fail "SETUP: cannot create the workspace $jobWorkspace" 1
fi

# Node slicing: GEN instances take the first nodes of the allocation, then CTX instances.
if [[ -z ${SLURM_JOB_NODELIST:-} ]]; then
    fail "SETUP: SLURM_JOB_NODELIST is not set, run this script with sbatch" 1
fi
if ! nodeText=$(scontrol show hostnames "$SLURM_JOB_NODELIST"); then
    fail "SETUP: scontrol show hostnames $SLURM_JOB_NODELIST failed" 1
fi
allNodes=()
if [[ -n $nodeText ]]; then
    mapfile -t allNodes <<<"$nodeText"
fi
if ((${#allNodes[@]} < totalNodes)); then
    fail "SETUP: the plan needs $totalNodes nodes, the allocation has ${#allNodes[@]}" 1
fi
firstNode=${allNodes[0]}

workerRoles=() workerLogs=() workerSlices=() workerNodes=() workerTasks=() workerTasksPerNode=()
cursor=0
add_workers() {
    local kind=$1 count=$2 nodes=$3 tasks=$4 tasksPerNode=$5 role=$6 i
    local IFS=,
    for ((i = 0; i < count; i++)); do
        workerRoles+=("${role}_$i")
        workerLogs+=("$jobWorkspace/${kind}_server_$i.log")
        workerSlices+=("${allNodes[*]:cursor:nodes}")
        workerNodes+=("$nodes")
        workerTasks+=("$tasks")
        workerTasksPerNode+=("$tasksPerNode")
        cursor=$((cursor + nodes))
    done
}
add_workers gen "$numGenServers" "$nodesPerGenServer" "$tasksPerGenServer" "$tasksPerNodeGen" GEN
add_workers ctx "$numCtxServers" "$nodesPerCtxServer" "$tasksPerCtxServer" "$tasksPerNodeCtx" CTX

# Install: one task per node, waited.
if [[ -n $installScript ]]; then
    currentRole=INSTALL
    unset DISAGG_SERVING_TYPE
    start_step INSTALL "$jobWorkspace/install.log" \
        "${srunCmd[@]}" -N "$totalNodes" --ntasks-per-node=1 "$rankLaunch" -- bash "$installScript"
    wait_all_ok
fi

# Fabric precheck: rank-check on every worker slice, bounded, all waited.
if ((runPrecheck)); then
    currentRole=PRECHECK
    for i in "${!workerRoles[@]}"; do
        export DISAGG_SERVING_TYPE="${workerRoles[i]/_/_PRECHECK_}"
        start_step "$DISAGG_SERVING_TYPE" "$jobWorkspace/precheck_${workerRoles[i],,}.log" \
            timeout -k 60 "$precheckTimeout" \
            "${srunCmd[@]}" --mpi="$workerMpi" --kill-on-bad-exit=1 \
            -N "${workerNodes[i]}" -w "${workerSlices[i]}" \
            --ntasks="${workerTasks[i]}" --ntasks-per-node="${workerTasksPerNode[i]}" "$rankCheck"
    done
    wait_all_ok
fi

# Servers: GEN then CTX workers (MPI), then the disagg server and the benchmark on the first node.
currentRole=BENCHMARK
for i in "${!workerRoles[@]}"; do
    export DISAGG_SERVING_TYPE="${workerRoles[i]}"
    export pytestCommand="$workerCommand"
    start_step "$DISAGG_SERVING_TYPE" "${workerLogs[i]}" \
        "${srunCmd[@]}" --mpi="$workerMpi" --kill-on-bad-exit=1 \
        -N "${workerNodes[i]}" -w "${workerSlices[i]}" \
        --ntasks="${workerTasks[i]}" --ntasks-per-node="${workerTasksPerNode[i]}" \
        "$rankLaunch" --label
done
export DISAGG_SERVING_TYPE=DISAGG_SERVER
export pytestCommand="$serverCommand"
start_step DISAGG_SERVER "$jobWorkspace/disagg_server.log" \
    "${srunCmd[@]}" --kill-on-bad-exit=1 --overlap -N 1 --ntasks=1 -w "$firstNode" "$rankLaunch" --label
export DISAGG_SERVING_TYPE=BENCHMARK
export pytestCommand="$benchmarkCommand"
start_step BENCHMARK "$jobWorkspace/benchmark.log" \
    "${srunCmd[@]}" --kill-on-bad-exit=1 --overlap -N 1 --ntasks=1 -w "$firstNode" "$rankLaunch" --label

# Supervision. Any non-zero exit fails the job at once. The first step to end with 0 opens the
# drain window of `drainTimeout` seconds in which every other step must end too: servers stop
# when the benchmark reports its end, and may be reaped just before it. A server that ended
# while the benchmark is still running when the window closes fails the job.
earlyRole=''
earlyLog=''
benchmarkDone=0
while ((${#stepRole[@]} > 0)); do
    if ! reap_step; then
        if ((benchmarkDone)); then
            pid=$(first_running)
            fail "$(role_now): still running ${drainTimeout} s after BENCHMARK passed, log ${stepLog[$pid]}" 1
        fi
        fail "$earlyRole: exit 0 before BENCHMARK finished, log $earlyLog" 1
    fi
    [[ -n $role ]] || break
    if [[ $role == BENCHMARK ]]; then
        benchmarkDone=1
    elif ((benchmarkDone == 0)) && [[ -z $earlyRole ]]; then
        earlyRole=$role
        earlyLog=$log
    fi
    if [[ $currentRole != DRAIN ]]; then
        currentRole=DRAIN
        start_timer "$drainTimeout"
    fi
done
stop_timer
# The benchmark's numbers belong in the job's own output, next to the verdict.
printf 'launch-gen: benchmark result (%s):\n' "$jobWorkspace/benchmark.log"
tail -n 25 -- "$jobWorkspace/benchmark.log" || true
printf 'verdict: PASS\n'
exit 0
