//! `launch-gen`: renders the sbatch launch script of a disaggregated TensorRT-LLM job.
//!
//! The library is pure: every function takes text and values and returns text or a typed
//! error. Reading files, writing the output atomically and running `sbatch` happen in
//! [`cli`], the only module that touches the file system or spawns processes, and, for the
//! job commands (`launch-gen verdict`, `launch-gen await-ready`), in [`job::io`].
//!
//! Two renderers share one config model ([`config`]) and one resource plan ([`plan`]):
//!
//! - [`compat`] reproduces the reference `submit.py` (G1) byte for byte, quirks included, and
//!   later generations of it (`--compat g2`: upstream's unified generator), one module each;
//! - [`native`] renders a self-contained script around `rank-launch` with node slicing,
//!   supervision of every step and a single verdict line.
//!
//! [`ucx`] holds the per-cluster UCX table (data, `generator/data/ucx-rules.yaml`);
//! [`testlist`] picks the test and its config, [`serving`] what its mode does to the roles.

pub mod budgets;
pub mod cli;
pub mod compat;
pub mod config;
pub mod explain;
pub mod hostlist;
pub mod job;
pub mod native;
pub mod plan;
pub mod pytext;
pub mod serving;
pub mod shell;
pub mod testlist;
pub mod ucx;
