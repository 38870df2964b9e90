//! rank-launch: the per-rank runtime of a disaggregated LLM-serving job.
//!
//! Pure modules (no I/O, no processes, table-tested): [`rank`], [`role`], [`command`],
//! [`childenv`], [`exit`]. Process work lives in [`supervisor`] (spawn, signal, reap) and
//! [`gate`] (the install gate); [`run`] decides what to run and when; [`app`] is the binary
//! edge that reads the environment and arguments.

pub mod app;
pub mod childenv;
pub mod command;
pub mod exit;
pub mod gate;
pub mod logging;
pub mod rank;
pub mod role;
pub mod run;
pub mod supervisor;
