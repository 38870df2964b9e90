//! `shim-worker`: an MPI worker (ranks 1..N-1) that serves tasks from the leader until told
//! to stop. Stand-in for `tensorrt_llm.llmapi.mgmn_worker_node`. Idle workers sleep between
//! probes instead of spinning in a blocking collective.
//!
//! Fault injection: `SHIM_FAIL_RANK=<ROLE>:<rank>[:<task>]` makes the worker whose
//! `DISAGG_SERVING_TYPE` is ROLE and whose MPI rank is rank abort after that task (default the
//! first, the server's world check);
//! `SHIM_HANG=<ROLE>:<rank>:freeze` makes it stop itself (`SIGSTOP`) there instead, until a
//! `SIGCONT` or `SHIM_HANG_LIMIT` seconds (default 3600, then exit 1). See `shims::hang`.

use std::process::ExitCode;

use anyhow::anyhow;
use mpi::traits::*;
use shims::edge::{self, Fail};
use shims::{envs, hang, mgmn, say};

fn main() -> ExitCode {
    if std::env::args()
        .nth(1)
        .is_some_and(|a| a == "--help" || a == "-h")
    {
        print!(
            "shim-worker: MPI worker stand-in (ranks 1..N-1); serves the leader's tasks until stop.\n\
             SHIM_FAIL_RANK=<ROLE>:<rank>[:<task>] aborts that worker after that task (default 1).\n\
             SHIM_HANG=<ROLE>:<rank>:freeze stops that worker (SIGSTOP) after its first task, until\n\
             a SIGCONT or SHIM_HANG_LIMIT seconds (default 3600; then exit 1). ROLE is\n\
             DISAGG_SERVING_TYPE, rank the MPI rank (1 or more). A bad value exits 2.\n"
        );
        return ExitCode::SUCCESS;
    }
    edge::finish(run())
}

fn run() -> Result<(), Fail> {
    let role = envs::get("DISAGG_SERVING_TYPE");
    let host = shims::log::host_name();
    shims::log::set_prefix(format!(
        "shim-worker {} rank=? host={host}",
        role.as_deref().unwrap_or("-")
    ));
    // First thing, as the package import does.
    let universe = shims::import::init().map_err(|e| edge::failed(anyhow!(e)))?;
    let world = universe.world();
    let rank = world.rank();
    shims::log::set_prefix(format!(
        "shim-worker {} rank={rank} host={host}",
        role.as_deref().unwrap_or("-")
    ));
    say!("executor settings: {}", envs::executor_settings(envs::get));
    let result = serve(&world, role.as_deref());
    match result {
        Ok(tasks) => {
            say!("worker rank{rank} quit after {tasks} task(s)");
            drop(universe);
            Ok(())
        }
        Err(fail) => {
            // No MPI_Finalize: it is a fence the other ranks would never reach. Exiting
            // without it makes mpirun/srun fail the whole world at once.
            std::mem::forget(universe);
            Err(fail)
        }
    }
}

fn serve(world: &mpi::topology::SimpleCommunicator, role: Option<&str>) -> Result<u64, Fail> {
    let (rank, size) = (world.rank(), world.size());
    if rank == 0 {
        return Err(edge::failed(anyhow!(
            "shim-worker runs on MPI ranks 1..N-1, but this process is rank 0 of {size} \
             (rank 0 runs shim-leader)"
        )));
    }
    edge::check_world_size(size).map_err(|e| edge::failed(anyhow!(e)))?;
    let fault = mgmn::fault_for(envs::get("SHIM_FAIL_RANK").as_deref(), role, rank)
        .map_err(|e| edge::bad_input(anyhow!(e)))?;
    let hang = hang::from_env(role, rank).map_err(edge::bad_input)?;
    mgmn::run_worker(world, fault, hang.as_ref()).map_err(|e| edge::failed(anyhow!(e)))
}
