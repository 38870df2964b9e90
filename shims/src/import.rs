//! What importing the TensorRT-LLM package does first: initialise MPI.
//!
//! `tensorrt_llm/__init__` imports mpi4py (`MPI_Init_thread`) and splits communicators at
//! import time, so every TensorRT-LLM process is an MPI process from its first second: the
//! leader and the workers join the launcher's world, and every other process (the task on
//! rank 0, the leader's stop helper, the router, the benchmark) must come up as a singleton.
//! Started with a running world's variables instead, it tries to join that world under a rank
//! that is taken, and Open MPI aborts it inside `MPI_Init` ("orte_init failed ... MPI_Init_thread
//! on a NULL communicator", exit 1). Every stand-in calls [`init`] before anything else, so it
//! fails the same way: a launcher that hands the wrong environment to a process cannot pass
//! the stand-ins' tests.

use mpi::environment::Universe;

/// Initialises MPI as the package import does (`MPI_THREAD_FUNNELED` is enough for the
/// stand-ins: only their main thread calls MPI). Finalised when the universe is dropped.
pub fn init() -> Result<Universe, String> {
    mpi::initialize_with_threading(mpi::Threading::Funneled)
        .map(|(universe, _)| universe)
        .ok_or_else(|| "MPI was already initialised".to_string())
}
