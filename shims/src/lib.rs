//! Stand-ins for the TensorRT-LLM side of a disaggregated serving job, and the `rank-check`
//! fabric precheck.
//!
//! Binaries (thin edges over this library):
//!
//! - `rank-check`: every rank compares MPI's world with what `rank_launch::rank::detect` reads
//!   from its environment, gathers host names, times a barrier and an allreduce; one verdict
//!   for all ranks.
//! - `shim-leader` / `shim-worker`: one real MPI world (rsmpi) serving tasks from the proxy at
//!   `TLLM_SPAWN_PROXY_PROCESS_IPC_ADDR`, authenticated with the step's HMAC key
//!   ([`proxy`], [`mgmn`]).
//! - `shim-role`: GEN/CTX servers, DISAGG_SERVER router and BENCHMARK client, coordinating
//!   through run-scoped files in `$jobWorkspace` ([`roles`], [`coord`], [`http`], [`bench`]).
//! - `shim-task`: the task of MPI rank 0 in its simplest form, an LLM API client of the proxy.
//!
//! A worker crashes on demand (`SHIM_FAIL_RANK`, [`mgmn`]); a server, the router, the benchmark
//! or a worker hangs on demand (`SHIM_HANG`, [`hang`]): a supervisor's failure and hang
//! detection can be tested too.
//!
//! Like every TensorRT-LLM process, each of them initialises MPI first thing ([`import`]), so
//! one that is started with the wrong environment fails the way the real one does.
//!
//! They exist so the launcher and the generated launch scripts can be tested end to end, with
//! real MPI and real processes, on machines without GPUs or models.

pub mod bench;
pub mod coord;
pub mod edge;
pub mod envs;
pub mod hang;
pub mod http;
pub mod import;
pub mod log;
pub mod mgmn;
pub mod proxy;
pub mod roles;
