#!/usr/bin/env bash
# Drop-in for the reference `slurm_run.sh`: every srun task runs rank-launch, which detects
# the rank, dispatches on DISAGG_SERVING_TYPE and runs `$pytestCommand` (or `-- CMD`).
# Arguments are rank-launch's own. RANK_LAUNCH overrides which rank-launch runs (default: the
# one on PATH).
set -euo pipefail
exec "${RANK_LAUNCH:-rank-launch}" "$@"
