//! Plain stderr lines with the program's identity on every one.
//!
//! `[shim-role GEN_0 host=node7] listening on node7:41234`
//!
//! The shims run under `rank-launch`, `srun --label` or `mpirun`, whose outputs interleave; a
//! line that names its program and role can be read on its own. Each line is written with one
//! call so lines from threads never mix. Nothing here formats the environment (the HMAC key
//! lives there).

use std::fmt;
use std::io::Write;
use std::sync::RwLock;

static PREFIX: RwLock<String> = RwLock::new(String::new());

/// Sets the prefix of every later line, e.g. `shim-worker GEN_0 rank=3 host=n1` (a later call
/// replaces it: the rank is known only once MPI is up).
pub fn set_prefix(prefix: impl Into<String>) {
    if let Ok(mut slot) = PREFIX.write() {
        *slot = prefix.into();
    }
}

/// Writes one line to stderr.
pub fn line(args: fmt::Arguments<'_>) {
    let text = match PREFIX.read() {
        Ok(prefix) if !prefix.is_empty() => format!("[{prefix}] {args}\n"),
        _ => format!("[shim] {args}\n"),
    };
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// `say!("listening on {addr}")`: one prefixed line on stderr.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::log::line(format_args!($($arg)*))
    };
}

/// This machine's host name (`unknown` if it cannot be read).
pub fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into())
}
