#!/usr/bin/env bash
# Drop-in for the reference `slurm_run.sh`: what every srun task of a launch script runs.
# It does the reference's per-task duties that still make sense, then execs rank-launch, which
# detects the rank, dispatches on DISAGG_SERVING_TYPE and runs `$pytestCommand` (or `-- CMD`).
# Arguments are rank-launch's own; `slurm_run.sh --help` says what this script does and drops.
#
# rank-launch: $RANK_LAUNCH, else the one next to this script, else the one on PATH.
set -euo pipefail

usage() {
  cat <<'EOF'
slurm_run.sh [RANK-LAUNCH OPTIONS] [-- CMD ARGS...]

The per-task entry point of a launch script (srun ... slurm_run.sh). It does, in this order:

  working directory   $llmSrcNode/tests/integration/defs when it exists (the reference's cd),
                      as rank-launch --chdir
  library path        the tensorrt_llm package's libs/ directory first in LD_LIBRARY_PATH
                      (found without importing the package, whose import initialises MPI), as
                      rank-launch --prepend-ld-library-path (idempotent)
  UCX/PMIx fix-ups    UCX_TLS unset when it is `tcp`; PMIX_MCA_gds=hash unless set
  install             outside disaggregated roles, when $installScript is set: local rank 0 of
                      each node sources it and runs `slurm_install_setup` once per step (the
                      other local ranks wait, bounded), as rank-launch --install-cmd; set
                      RANK_LAUNCH_INSTALL_CMD to run something else. Disaggregated roles install
                      in the launch script's own install step, as the reference does.
  the task            exec rank-launch, which scrubs each process's environment by its role
                      and runs $pytestCommand with bash -c

Dropped on purpose, and why:

  set -x, env | sort  they print secrets (the proxy's HMAC key, tokens) into the job log
  the MPI/Slurm scrub rank-launch gives every process the environment its role needs: the MPI
                      leader and workers keep the world's variables, everything else is scrubbed
  the lock-file poll  replaced by rank-launch's install gate (no 5 s polls, bounded, fails fast
                      when local rank 0 dies)
  the rank barrier    (the reference waits for every rank's file on the shared file system after a
                      node-local install). Install in the launch script's install step instead,
                      which ends before any server starts
  eval $pytestCommand unquoted eval re-splits the command; rank-launch runs it with bash -c
  timeout/perf/S3     pipeline steps, not per-task duties; the task's exit code passes through

rank-launch: $RANK_LAUNCH, else the one next to this script, else the one on PATH.
EOF
}

case ${1:-} in
  -h | --help) usage; exit 0 ;;
esac

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
rank_launch=${RANK_LAUNCH:-}
if [[ -z $rank_launch ]]; then
  if [[ -x $here/rank-launch ]]; then rank_launch=$here/rank-launch; else rank_launch=rank-launch; fi
fi

opts=()
if [[ -n ${llmSrcNode:-} && -d $llmSrcNode/tests/integration/defs ]]; then
  opts+=(--chdir "$llmSrcNode/tests/integration/defs")
fi
# find_spec locates a top-level package without running its __init__ (which would initialise MPI).
if libs=$(python3 -c 'import importlib.util as u, os
s = u.find_spec("tensorrt_llm")
print(os.path.join(list(s.submodule_search_locations)[0], "libs"))' 2>/dev/null) && [[ -d $libs ]]; then
  opts+=(--prepend-ld-library-path "$libs")
fi
if [[ ${UCX_TLS:-} == tcp ]]; then unset UCX_TLS; fi
export PMIX_MCA_gds=${PMIX_MCA_gds:-hash}
if [[ -z ${DISAGG_SERVING_TYPE:-} && -n ${installScript:-} && -z ${RANK_LAUNCH_INSTALL_CMD:-} ]]; then
  opts+=(--install-cmd "source $(printf '%q' "$installScript") && slurm_install_setup")
fi

# rank-launch's options go after its subcommand, if there is one.
case ${1:-} in
  whoami) exec "$rank_launch" "$@" ;;
  mpi) shift; exec "$rank_launch" mpi "${opts[@]}" "$@" ;;
  *) exec "$rank_launch" "${opts[@]}" "$@" ;;
esac
