//! The binary edge: how a shim's `main` turns an error into a line and an exit code.
//!
//! Exit codes: 0 success, 1 a failure at run time, 2 bad input (a missing or malformed
//! variable, a bad argument). The message is printed once, with its causes, on the shim's
//! prefixed stderr line.

use std::process::ExitCode;

/// An error on its way out of `main`, with the exit code it maps to.
#[derive(Debug)]
pub struct Fail {
    pub code: u8,
    pub error: anyhow::Error,
}

/// Exit code for bad input.
pub const BAD_INPUT: u8 = 2;
/// Exit code for a failure at run time.
pub const FAILED: u8 = 1;

/// Bad input: exit 2.
pub fn bad_input(error: impl Into<anyhow::Error>) -> Fail {
    Fail {
        code: BAD_INPUT,
        error: error.into(),
    }
}

/// A run-time failure: exit 1.
pub fn failed(error: impl Into<anyhow::Error>) -> Fail {
    Fail {
        code: FAILED,
        error: error.into(),
    }
}

/// Prints the error, if any, and returns the exit code.
pub fn finish(result: Result<(), Fail>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(fail) => {
            crate::say!("error: {:#}", fail.error);
            ExitCode::from(fail.code)
        }
    }
}

/// Checks MPI's world size against `tllm_mpi_size` (exported by `rank-launch`) when set:
/// a launcher/library mismatch does not fail in MPI, it silently gives singletons.
pub fn check_world_size(mpi_size: i32) -> Result<(), String> {
    let Some(text) = crate::envs::get(crate::proxy::SIZE_VAR) else {
        return Ok(());
    };
    match text.trim().parse::<i32>() {
        Ok(n) if n == mpi_size => Ok(()),
        Ok(n) => Err(format!(
            "MPI reports a world of {mpi_size} rank(s) but `{}` is {n}: the MPI library and the \
             launcher disagree (wrong `srun --mpi` plugin, or an `mpirun` of another MPI?)",
            crate::proxy::SIZE_VAR
        )),
        Err(_) => Err(format!(
            "`{}` is `{text}`: expected the MPI world size (a positive integer)",
            crate::proxy::SIZE_VAR
        )),
    }
}
