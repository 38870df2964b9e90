# ---------------------------------------------------------------------------------------------
# launch-gen native template (generator/templates/native.sh).
#
# Every role runs through rank-launch in its own srun step. The batch shell supervises all of
# them: the first step that fails stops the others and decides the one verdict line; once a
# step ends with 0 (normally the benchmark) all others get `drainTimeout` seconds to end too.
# Stopping is TERM, then KILL after `stopTimeout` seconds. The job is never scancel'ed from
# inside, so a failure ends it FAILED with a meaningful exit code.
# Budgets: each server's rank 0 and the router must print a line matching `readyLine` within
# `readyTimeout` seconds (rank-launch --ready-timeout; the benchmark starts once all are
# ready); a stopped server rank, or a benchmark whose output stops growing, fails after
# `stallTimeout` seconds (--stall-timeout); the benchmark must end within `benchmarkTimeout`.
# Records: `steps.jsonl` (each step's start and end), `phases.jsonl` (the job's phases) and
# `ranks/<ROLE>.<rank>.json` (each rank's summary), all with wall-clock microseconds; at the
# end `launch-gen verdict` prints the evidence and the verdict and writes `verdict.json` and
# `junit.xml`, and `launch-gen report` writes `report.html`.
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
summaryArgs=(--summary-json "$jobWorkspace/ranks/%R.%r.json")
serverWatch=(--ready-timeout "${readyTimeout}s" --ready-line "$readyLine")
workerWatch=("${serverWatch[@]}" --stall-timeout "${stallTimeout}s" --stall-probe stopped)
benchmarkWatch=(--stall-timeout "${stallTimeout}s")
haveLaunchGen=0
if [[ -x $launchGen ]]; then
    haveLaunchGen=1
fi

# Steps by pid: role and log; `stepOrder` keeps the launch order for messages. Local helpers
# (the readiness gate, the benchmark's budget) are steps too, in `localStep`.
declare -A stepRole=() stepLog=() localStep=()
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

# Wall-clock microseconds (EPOCHREALTIME has six decimals; its separator follows the locale).
now_us() {
    printf '%s\n' "${EPOCHREALTIME//[.,]/}"
}

json_string() {
    local s=${1//\\/\\\\}
    s=${s//\"/\\\"}
    printf '"%s"' "$s"
}

# phase NAME: one line of `phases.jsonl`.
phase() {
    printf '{"phase":"%s","unix_us":%s}\n' "$1" "$(now_us)" >>"$jobWorkspace/phases.jsonl" 2>/dev/null || true
}

# record_step started|ended ROLE [CODE [NOTE]]: one line of `steps.jsonl`.
record_step() {
    local line
    line="{\"event\":\"$1\",\"role\":$(json_string "$2"),\"unix_us\":$(now_us)"
    case $1 in
        started) line+=",\"log\":$(json_string "$3")" ;;
        ended) line+=",\"code\":$3${4:+,\"note\":$(json_string "$4")}" ;;
    esac
    printf '%s}\n' "$line" >>"$jobWorkspace/steps.jsonl" 2>/dev/null || true
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
    # Recorded first: whoever sees the log (a TERM, `launch-gen status`) finds the step.
    record_step started "$role" "$log"
    run_step "$@" >"$log" 2>&1 &
    stepRole[$!]=$role
    stepLog[$!]=$log
    stepOrder+=("$!")
    note "started $role (pid $!, log $log)"
}

# start_local NAME CMD...: a helper step of this script (not a role): no record, no log.
start_local() {
    local name=$1
    shift
    run_step "$@" >/dev/null 2>&1 &
    stepRole[$!]=$name
    stepLog[$!]=/dev/null
    localStep[$!]=1
}

# stop_local NAME: ends the helper step NAME if it runs.
stop_local() {
    local pid
    for pid in "${!localStep[@]}"; do
        if [[ ${stepRole[$pid]:-} == "$1" ]]; then
            kill -TERM "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
            unset "stepRole[$pid]" "stepLog[$pid]" "localStep[$pid]"
        fi
    done
}

# The first step still running, in launch order.
first_running() {
    local pid
    for pid in "${stepOrder[@]}"; do
        if [[ -n ${stepRole[$pid]:-} && -z ${localStep[$pid]:-} ]]; then
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

# finish_step PID CODE [NOTE]: forgets a reaped step, records its end and touches its sentinel:
# its log is complete now.
finish_step() {
    if [[ -z ${localStep[$1]:-} ]]; then
        record_step ended "${stepRole[$1]}" "$2" "${3:-}"
        touch -- "${stepLog[$1]%.log}.done" 2>/dev/null || true
    fi
    unset "stepRole[$1]" "stepLog[$1]" "localStep[$1]"
}

# TERM to every running step, KILL (through USR1 to its subshell) to what is left after
# `stopTimeout` seconds. The TERM goes to the steps' tasks through Slurm (`scancel --signal`
# reaches the steps, not this batch shell): each rank-launch then stops its children within its
# grace period and srun ends with the step. A TERM to srun itself would make Slurm SIGKILL the
# tasks at once, with no clean shutdown, so srun is signalled only where scancel cannot be used.
stop_steps() {
    local pid status
    for pid in "${!localStep[@]}"; do
        stop_local "${stepRole[$pid]}"
    done
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
        finish_step "$endedPid" "$rc"
    done
    stop_timer
    for pid in "${!stepRole[@]}"; do
        note "killing ${stepRole[$pid]} (pid $pid)"
        kill -USR1 "$pid" 2>/dev/null || true
        status=0
        wait "$pid" 2>/dev/null || status=$?
        finish_step "$pid" "$status" "killed"
    done
}

# verdict [ROLE DETAIL LOG] CODE: the evidence and the verdict line (by `launch-gen verdict`,
# from the records; the plain line when it cannot run), then exit with CODE.
verdict() {
    local code=${*: -1} out='' args=()
    if (($# > 1)); then
        args=(--fail-role "$1" --fail-detail "$2")
    fi
    phase verdict
    if ((haveLaunchGen)) && [[ -d $jobWorkspace ]]; then
        out=$("$launchGen" verdict "$jobWorkspace" "${args[@]}" --code "$code" --job-id "${SLURM_JOB_ID:-local}" 2>&1) || true
        # The picture of the job, passing or failing: a timeline of every rank, the verdict,
        # the plan and the failed roles' log tails.
        # The plan comes from the config when the batch node can read it.
        planArgs=()
        if [[ -r $launchGenConfig ]]; then
            planArgs=(--config "$launchGenConfig")
        fi
        if "$launchGen" report "$jobWorkspace" -o "$jobWorkspace/report.html" "${planArgs[@]}" >/dev/null 2>&1; then
            note "report: $jobWorkspace/report.html"
        else
            note "could not write the report $jobWorkspace/report.html"
        fi
    fi
    if [[ $'\n'$out == *$'\nverdict: '* ]]; then
        printf '%s\n' "$out"
    elif (($# > 1)); then
        [[ -z $out ]] || printf '%s\n' "$out" >&2
        printf 'verdict: FAIL (%s: %s%s)\n' "$1" "$2" "${3:+, log $3}"
    else
        printf 'verdict: PASS\n'
    fi
    exit "$code"
}

# fail ROLE DETAIL CODE [LOG]: stops everything, then the verdict; exits with CODE (1 if 0).
fail() {
    trap '' TERM INT
    phase stopping
    stop_steps
    verdict "$1" "$2" "${4:-}" $(($3 == 0 ? 1 : $3))
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
trap 'fail "$(role_now)" terminated 143' TERM INT

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
    if [[ -n ${localStep[$endedPid]:-} ]]; then
        finish_step "$endedPid" "$rc"
        return 0
    fi
    if ((rc == 0)) && node_lost "$log"; then
        finish_step "$endedPid" "$rc" "node failure"
        blame "$role" "$log" 1 "node failure"
    else
        finish_step "$endedPid" "$rc"
        if ((rc != 0)); then
            blame "$role" "$log" "$rc"
        fi
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
        @*) echo 3 ;;
        *) echo 0 ;;
    esac
}

# blame ROLE LOG CODE: fails the job, naming the root cause. A failing client gives the other
# steps `causeWindow` seconds to fail too, and the verdict names the most upstream failure.
blame() {
    local role=$1 log=$2 code=$3 detail=${4:-exit $3} otherRole otherCode otherNote
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
            if [[ -n ${localStep[$endedPid]:-} ]]; then
                finish_step "$endedPid" "$rc"
                continue
            fi
            otherRole=${stepRole[$endedPid]}
            otherCode=$rc
            otherNote=''
            if ((otherCode == 0)) && node_lost "${stepLog[$endedPid]}"; then
                otherCode=1
                otherNote='node failure'
            fi
            if ((otherCode != 0)) && (($(upstreamness "$otherRole") < $(upstreamness "$role"))); then
                role=$otherRole log=${stepLog[$endedPid]} code=$otherCode
                if ((rc == 0)); then detail="node failure"; else detail="exit $rc"; fi
            fi
            finish_step "$endedPid" "$rc" "$otherNote"
            (($(upstreamness "$role") > 0)) || break
        done
    fi
    fail "$role" "$detail" "$code" "$log"
}

# Waits for every running step; the first non-zero exit fails the job.
wait_all_ok() {
    while ((${#stepRole[@]} > 0)); do
        reap_step
        [[ -n $role ]] || break
    done
}

if ! mkdir -p -- "$jobWorkspace/ranks"; then
    fail SETUP "cannot create the workspace $jobWorkspace" 1
fi
# This run's records only: a previous run in the same workspace leaves its own behind.
rm -f -- "$jobWorkspace"/ranks/*.json "$jobWorkspace/steps.jsonl" "$jobWorkspace/phases.jsonl" \
    "$jobWorkspace/verdict.json" "$jobWorkspace/junit.xml"
phase setup

# Node slicing: GEN instances take the first nodes of the allocation, then CTX instances.
if [[ -z ${SLURM_JOB_NODELIST:-} ]]; then
    fail SETUP "SLURM_JOB_NODELIST is not set, run this script with sbatch" 1
fi
if ! nodeText=$(scontrol show hostnames "$SLURM_JOB_NODELIST"); then
    fail SETUP "scontrol show hostnames $SLURM_JOB_NODELIST failed" 1
fi
allNodes=()
if [[ -n $nodeText ]]; then
    mapfile -t allNodes <<<"$nodeText"
fi
if ((${#allNodes[@]} < totalNodes)); then
    fail SETUP "the plan needs $totalNodes nodes, the allocation has ${#allNodes[@]}" 1
fi
firstNode=${allNodes[0]}

workerRoles=() workerLogs=() workerSlices=() workerNodes=() workerTasks=() workerTasksPerNode=()
workerCommands=()
cursor=0
add_workers() {
    local kind=$1 count=$2 nodes=$3 tasks=$4 tasksPerNode=$5 role=$6 command=$7 i
    local IFS=,
    for ((i = 0; i < count; i++)); do
        workerRoles+=("${role}_$i")
        workerCommands+=("$command")
        workerLogs+=("$jobWorkspace/${kind}_server_$i.log")
        workerSlices+=("${allNodes[*]:cursor:nodes}")
        workerNodes+=("$nodes")
        workerTasks+=("$tasks")
        workerTasksPerNode+=("$tasksPerNode")
        cursor=$((cursor + nodes))
    done
}
add_workers gen "$numGenServers" "$nodesPerGenServer" "$tasksPerGenServer" "$tasksPerNodeGen" GEN \
    "$genWorkerCommand"
add_workers ctx "$numCtxServers" "$nodesPerCtxServer" "$tasksPerCtxServer" "$tasksPerNodeCtx" CTX \
    "$ctxWorkerCommand"

# Install: one task per node, waited.
if [[ -n $installScript ]]; then
    currentRole=INSTALL
    unset DISAGG_SERVING_TYPE
    start_step INSTALL "$jobWorkspace/install.log" \
        "${srunCmd[@]}" -N "$totalNodes" --ntasks-per-node=1 "$rankLaunch" -- bash "$installScript"
    wait_all_ok
    phase install_done
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
    phase prechecks_done
fi

# Servers: GEN then CTX workers (MPI), then the disagg server; the benchmark on the first node
# once every server is ready (or at once, without launch-gen on the node to tell).
currentRole=BENCHMARK
for i in "${!workerRoles[@]}"; do
    export DISAGG_SERVING_TYPE="${workerRoles[i]}"
    export pytestCommand="${workerCommands[i]}"
    start_step "$DISAGG_SERVING_TYPE" "${workerLogs[i]}" \
        "${srunCmd[@]}" --mpi="$workerMpi" --kill-on-bad-exit=1 \
        -N "${workerNodes[i]}" -w "${workerSlices[i]}" \
        --ntasks="${workerTasks[i]}" --ntasks-per-node="${workerTasksPerNode[i]}" \
        "$rankLaunch" --label "${summaryArgs[@]}" "${workerWatch[@]}"
done
# start_single ROLE LOG COMMAND [RANK-LAUNCH OPTIONS...]: a one-task step on the first node.
start_single() {
    local role=$1 log=$2
    export DISAGG_SERVING_TYPE=$role
    export pytestCommand=$3
    shift 3
    start_step "$role" "$log" \
        "${srunCmd[@]}" --kill-on-bad-exit=1 --overlap -N 1 --ntasks=1 -w "$firstNode" \
        "$rankLaunch" --label "${summaryArgs[@]}" "$@"
}
start_single DISAGG_SERVER "$jobWorkspace/disagg_server.log" "$serverCommand" "${serverWatch[@]}"
phase servers_started

start_benchmark() {
    start_single BENCHMARK "$jobWorkspace/benchmark.log" "$benchmarkCommand" "${benchmarkWatch[@]}"
    phase benchmark_started
    start_local @benchmark-budget sleep "$benchmarkTimeout"
}
if ((haveLaunchGen)); then
    # Records `servers_ready`; each server's own deadline (rank-launch) fails first.
    serverRoles=$(IFS=,; printf '%s' "${workerRoles[*]},DISAGG_SERVER")
    start_local @servers-ready "$launchGen" await-ready "$jobWorkspace" \
        --roles "$serverRoles" --timeout $((readyTimeout + 30))
else
    note "$launchGen is not executable here: no readiness gate, no evidence in the verdict"
    start_benchmark
fi

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
            fail "$(role_now)" "still running ${drainTimeout} s after BENCHMARK passed" 1 "${stepLog[$pid]}"
        fi
        fail "$earlyRole" "exit 0 before BENCHMARK finished" 1 "$earlyLog"
    fi
    [[ -n $role ]] || break
    case $role in
        @servers-ready)
            if ((rc != 0)); then
                fail SERVERS "not ready after $((readyTimeout + 30)) s" 1
            fi
            start_benchmark
            continue
            ;;
        @benchmark-budget)
            fail BENCHMARK "not done after ${benchmarkTimeout} s" 1 "$jobWorkspace/benchmark.log"
            ;;
        BENCHMARK)
            benchmarkDone=1
            stop_local @benchmark-budget
            phase benchmark_ended
            ;;
        *)
            if ((benchmarkDone == 0)) && [[ -z $earlyRole ]]; then
                earlyRole=$role
                earlyLog=$log
            fi
            ;;
    esac
    if [[ $currentRole != DRAIN ]]; then
        currentRole=DRAIN
        phase drain
        start_timer "$drainTimeout"
    fi
done
stop_timer
# The benchmark's numbers belong in the job's own output, next to the verdict.
printf 'launch-gen: benchmark result (%s):\n' "$jobWorkspace/benchmark.log"
tail -n 25 -- "$jobWorkspace/benchmark.log" || true
verdict 0
