//! Exit-code policy: how a child's end becomes rank-launch's exit code.
//!
//! Pure. A child's own code passes through unchanged; death by signal `n` is `128 + n`, as
//! shells report it; a command that cannot be executed is 126, one that does not exist 127.
//! rank-launch's own failures use the few codes of [`LaunchExit`]. Any code can collide with an
//! application's, so every launcher failure is also logged with its reason.

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildEnd {
    /// Exited with this code.
    Exited(i32),
    /// Killed by this signal number.
    Signaled(i32),
}

impl ChildEnd {
    /// The exit code a shell would report for this end.
    pub fn code(self) -> u8 {
        match self {
            // `exit(n)` keeps the low 8 bits; the kernel already did that.
            ChildEnd::Exited(code) => (code & 0xff) as u8,
            ChildEnd::Signaled(signal) => 128u8.saturating_add(u8::try_from(signal).unwrap_or(127)),
        }
    }

    pub fn success(self) -> bool {
        self == ChildEnd::Exited(0)
    }
}

/// rank-launch's own exit codes (a namespace of constants).
pub enum LaunchExit {}

impl LaunchExit {
    /// Bad input: an option, a variable or the environment is wrong. Nothing was started.
    pub const BAD_INPUT: u8 = 2;
    /// The per-node install command failed or timed out (also on the ranks that waited for it).
    pub const INSTALL_FAILED: u8 = 72;
    /// rank-launch could not do its job: setup failed outside the user's control (IPC port
    /// taken, no process could be started, an I/O error), or a child did not die after
    /// `SIGKILL` and was left behind.
    pub const SETUP_FAILED: u8 = 74;
    /// The task was not ready within `--ready-timeout` (its children were stopped).
    pub const NOT_READY: u8 = 75;
    /// No progress within `--stall-timeout` (its children were stopped).
    pub const STALLED: u8 = 76;
    /// MPI rank 0: the task succeeded but the leader did not stop within the stop timeout
    /// (upstream `trtllm-llmapi-launch`'s code, the one `timeout(1)` uses).
    pub const SHUTDOWN_OVERRAN: u8 = 124;
    /// The command exists but cannot be executed.
    pub const NOT_EXECUTABLE: u8 = 126;
    /// The command does not exist.
    pub const NOT_FOUND: u8 = 127;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        for code in 0..=255 {
            assert_eq!(ChildEnd::Exited(code).code(), code as u8);
        }
        let table: &[(ChildEnd, u8)] = &[
            (ChildEnd::Exited(256), 0),
            (ChildEnd::Exited(-1), 255),
            (ChildEnd::Signaled(1), 129),
            (ChildEnd::Signaled(9), 137),
            (ChildEnd::Signaled(11), 139),
            (ChildEnd::Signaled(15), 143),
            (ChildEnd::Signaled(64), 192),
            (ChildEnd::Signaled(200), 255),
        ];
        for &(end, code) in table {
            assert_eq!(end.code(), code, "{end:?}");
        }
        assert!(ChildEnd::Exited(0).success());
        assert!(!ChildEnd::Signaled(15).success());
    }
}
