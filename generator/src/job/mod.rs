//! `launch-gen verdict` and `launch-gen await-ready`: the end of a native job.
//!
//! The native launch script records its steps (`steps.jsonl`) and phases (`phases.jsonl`) in
//! the job workspace, and rank-launch writes one summary per rank (`ranks/<ROLE>.<rank>.json`).
//! At the end the script hands its own conclusion to `verdict`, which refines it from those
//! records (the failing rank, its cause, the job's phase, a server blamed for a client's
//! hang), prints the evidence and the one verdict line, and writes `verdict.json` and
//! `junit.xml`. `await-ready` marks `servers_ready` once every server's rank 0 is ready.
//!
//! Pure modules take values and return values: [`model`] (lenient parsing of the records),
//! [`scan`] (log lines: first error, the router's complaints, tails), [`redact`], [`verdict`]
//! (the decision), [`render`] (text, JSON, JUnit), [`ready`]. [`io`] is the only module that
//! reads or writes files; [`cli`] parses arguments and wires them together.

pub mod cli;
pub mod io;
pub mod model;
pub mod ready;
pub mod redact;
pub mod render;
pub mod report;
pub mod scan;
pub mod status;
pub mod verdict;
