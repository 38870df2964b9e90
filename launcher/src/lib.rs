//! rank-launch: the per-rank runtime of a disaggregated LLM-serving job.
//!
//! Pure modules (no I/O, no processes, table-tested): [`rank`], [`role`], [`command`],
//! [`childenv`], [`exit`], [`plan`], [`policy`], [`watch`]. Process work lives in [`supervisor`] (spawn,
//! signal, reap), [`gate`] (the install gate) and [`workspace`] (the FlashInfer slot), [`probe`] (HTTP and file probes on a thread); [`run`]
//! feeds the policies the supervisor's events and carries out their orders; [`stream`] writes
//! rank-launch's own output without blocking; [`app`] is the binary edge.

pub mod app;
pub mod childenv;
pub mod command;
pub mod exit;
pub mod gate;
pub mod logging;
pub mod plan;
pub mod policy;
pub mod probe;
pub mod rank;
pub mod role;
pub mod run;
pub mod stream;
pub mod summary;
pub mod supervisor;
pub mod watch;
pub mod workspace;
