//! Hangs on demand: `SHIM_HANG=<ROLE>[:<rank>]:<mode>` makes one process of the job hang the
//! way the real program hangs, so a supervisor's hang detection can be tested without GPUs.
//!
//! - `not-ready` (`GEN_n`, `CTX_n`, `DISAGG_SERVER`; rank none or 0): never becomes ready. A
//!   server still checks its MPI world through the proxy (so the world is up), the router still
//!   waits for the workers' records; then neither binds, publishes its address record nor
//!   prints the ready line.
//! - `wedged` (`GEN_n`, `CTX_n`; rank none or 0): ready as usual (binds, publishes, prints the
//!   ready line) and `GET /health` keeps answering 200, but no `POST /v1/completions` is ever
//!   answered (each handler blocks on its own connection thread). The server still ends when
//!   released, like any server.
//! - `stall` (`BENCHMARK`; rank none or 0): sends and completes N-1 of its N requests
//!   (printing progress), then waits without sending the last one and without writing
//!   `benchmark_status` (at the limit it fails, and writes a `Failed:` status).
//! - `freeze` (`GEN_n`, `CTX_n`; rank 1 or more): that MPI worker (`shim-worker`, role from
//!   `DISAGG_SERVING_TYPE`) stops itself with `SIGSTOP` right after its first task, so the
//!   leader waits in the next collective; a `SIGCONT` resumes it and it goes on as before.
//!
//! A rank names the MPI rank of the role's world: the server is the task beside rank 0, so
//! "none" and `0` mean the same; the router and the benchmark are single processes. A value
//! that does not parse, a mode a role does not have, or a rank a mode does not allow is bad
//! input (exit 2, one line naming `SHIM_HANG`, the value and what was expected) in every
//! process that reads it; a valid value naming another role or rank is not for this process.
//!
//! Every hang is "forever", but bounded by `SHIM_HANG_LIMIT` seconds (default 3600): then the
//! process fails (exit 1) with a line naming `SHIM_HANG_LIMIT`, so a broken supervisor never
//! leaves a stand-in running for good. Waiting never spins (a sleep; a frozen rank is stopped
//! and a one-shot timer sends it `SIGCONT` at the limit). `SIGTERM` keeps its default
//! disposition and ends a hanging stand-in at once; a frozen rank, like any stopped process,
//! acts on a `SIGTERM` only once continued, so whoever ends it sends `SIGCONT` too (or
//! `SIGKILL`).
//!
//! When a hang starts the process logs one line (stderr, via [`say!`]) with
//! `hanging on purpose (SHIM_HANG=<value>: <mode>)` and `unix_us=<microseconds since the epoch>`,
//! from which a benchmark measures the time from hang to verdict.

use std::fmt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rank_launch::role::{self, Role};

use crate::envs::{self, EnvError};
use crate::say;

pub const VAR: &str = "SHIM_HANG";
pub const LIMIT_VAR: &str = "SHIM_HANG_LIMIT";
/// Bound of every hang unless `SHIM_HANG_LIMIT` says otherwise.
pub const DEFAULT_LIMIT: Duration = Duration::from_secs(3600);

/// How a process hangs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    NotReady,
    Wedged,
    Stall,
    Freeze,
}

impl Mode {
    pub const ALL: [Mode; 4] = [Mode::NotReady, Mode::Wedged, Mode::Stall, Mode::Freeze];

    pub fn name(self) -> &'static str {
        match self {
            Mode::NotReady => "not-ready",
            Mode::Wedged => "wedged",
            Mode::Stall => "stall",
            Mode::Freeze => "freeze",
        }
    }

    /// Why `mode` does not apply to `role` at `rank` (`None`: it does).
    fn refuses(self, role: Role, rank: Option<u32>) -> Option<&'static str> {
        let server = matches!(role, Role::Gen(_) | Role::Ctx(_));
        let leader = rank.unwrap_or(0) == 0;
        match self {
            Mode::NotReady if !(server || role == Role::DisaggServer) => Some(
                "`not-ready` only for GEN_<n>, CTX_<n> or DISAGG_SERVER (the processes that become ready)",
            ),
            Mode::NotReady if !leader => Some(
                "`not-ready` with rank 0 or none (the server process, not an MPI worker), e.g. `GEN_0:not-ready`",
            ),
            Mode::Wedged if !server => Some(
                "`wedged` only for GEN_<n> or CTX_<n> (a server that stops answering completions)",
            ),
            Mode::Wedged if !leader => Some(
                "`wedged` with rank 0 or none (the server process, not an MPI worker), e.g. `GEN_0:wedged`",
            ),
            Mode::Stall if role != Role::Benchmark => Some("`stall` only for BENCHMARK"),
            Mode::Stall if !leader => Some(
                "`stall` with rank 0 or none (the benchmark is one process): `BENCHMARK:stall`",
            ),
            Mode::Freeze if !server => Some(
                "`freeze` only for GEN_<n> or CTX_<n> with a worker rank, e.g. `GEN_0:1:freeze`",
            ),
            Mode::Freeze if leader => Some(
                "`freeze` with an MPI worker rank of 1 or more (rank 0 runs the leader), e.g. `GEN_0:1:freeze`",
            ),
            _ => None,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A parsed, valid `SHIM_HANG`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    pub role: Role,
    /// `None` when the value has no rank (the same as 0).
    pub rank: Option<u32>,
    pub mode: Mode,
}

const FORMAT: &str = "`<ROLE>[:<rank>]:<mode>` with a mode not-ready, wedged, stall or freeze, \
                      e.g. `GEN_0:wedged`, `BENCHMARK:stall` or `GEN_0:1:freeze`";
const BAD_ROLE: &str =
    "`<ROLE>[:<rank>]:<mode>` with ROLE one of GEN_<n>, CTX_<n>, DISAGG_SERVER, BENCHMARK";
const BAD_MODE: &str =
    "`<ROLE>[:<rank>]:<mode>` with a mode not-ready, wedged, stall or freeze after the last `:`";
const BAD_RANK: &str = "`<ROLE>[:<rank>]:<mode>` with rank an MPI rank (0, 1, ...)";

/// Parses and checks a `SHIM_HANG` value (whatever process it names).
pub fn parse(value: &str) -> Result<Spec, EnvError> {
    let bad = |expected| EnvError::Invalid {
        var: VAR,
        value: value.to_string(),
        expected,
    };
    let parts: Vec<&str> = value.trim().split(':').collect();
    let (role_text, rank_text, mode_text) = match parts[..] {
        [role, mode] => (role, None, mode),
        [role, rank, mode] => (role, Some(rank), mode),
        _ => return Err(bad(FORMAT)),
    };
    let role = match role::parse(Some(role_text)) {
        Ok(Some(role)) => role,
        _ => return Err(bad(BAD_ROLE)),
    };
    let rank = match rank_text {
        None => None,
        Some(text) if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => {
            Some(text.parse::<u32>().map_err(|_| bad(BAD_RANK))?)
        }
        Some(_) => return Err(bad(BAD_RANK)),
    };
    let mode = Mode::ALL
        .into_iter()
        .find(|m| m.name() == mode_text)
        .ok_or_else(|| bad(BAD_MODE))?;
    if let Some(why) = mode.refuses(role, rank) {
        return Err(bad(why));
    }
    Ok(Spec { role, rank, mode })
}

/// Parses `SHIM_HANG_LIMIT` (unset or blank: [`DEFAULT_LIMIT`]).
pub fn parse_limit(text: Option<&str>) -> Result<Duration, EnvError> {
    let Some(text) = text.filter(|t| !t.trim().is_empty()) else {
        return Ok(DEFAULT_LIMIT);
    };
    const EXPECTED: &str = "a positive number of seconds (default 3600)";
    let secs: f64 = envs::parse_value(LIMIT_VAR, text, EXPECTED)?;
    if !(secs.is_finite() && secs > 0.0 && secs < 1e7) {
        return Err(EnvError::Invalid {
            var: LIMIT_VAR,
            value: text.to_string(),
            expected: EXPECTED,
        });
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The hang this process plays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hang {
    /// The value of `SHIM_HANG`, as given (trimmed).
    pub value: String,
    pub mode: Mode,
    pub limit: Duration,
}

/// The hang for the process playing `role` (`DISAGG_SERVING_TYPE`) at MPI `rank` (0 for the
/// server task, the router and the benchmark), from the values of `SHIM_HANG` and
/// `SHIM_HANG_LIMIT`. Both are checked whenever set, whoever they name.
pub fn plan(
    value: Option<&str>,
    limit: Option<&str>,
    role: Option<&str>,
    rank: i32,
) -> Result<Option<Hang>, EnvError> {
    let limit = parse_limit(limit)?;
    let Some(value) = value.filter(|v| !v.trim().is_empty()) else {
        return Ok(None);
    };
    let spec = parse(value)?;
    let mine = role.is_some_and(|r| r == spec.role.to_string())
        && i64::from(spec.rank.unwrap_or(0)) == i64::from(rank);
    Ok(mine.then(|| Hang {
        value: value.trim().to_string(),
        mode: spec.mode,
        limit,
    }))
}

/// [`plan`] from the environment.
pub fn from_env(role: Option<&str>, rank: i32) -> Result<Option<Hang>, EnvError> {
    plan(
        envs::get(VAR).as_deref(),
        envs::get(LIMIT_VAR).as_deref(),
        role,
        rank,
    )
}

fn unix_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros())
}

/// Seconds as a short number: `3600`, `0.5`.
fn secs(d: Duration) -> String {
    d.as_secs_f64().to_string()
}

impl Hang {
    /// The line a hang starts with, for a process that does `what`.
    pub fn line(&self, what: &str, unix_us: u128) -> String {
        format!(
            "hanging on purpose ({VAR}={}: {}) unix_us={unix_us}: {what}; for at most {} s \
             ({LIMIT_VAR})",
            self.value,
            self.mode,
            secs(self.limit)
        )
    }

    /// Logs the start of the hang; returns when it started.
    pub fn announce(&self, what: &str) -> Instant {
        let started = Instant::now();
        say!("{}", self.line(what, unix_us()));
        started
    }

    /// Why the process gives up once the hang has lasted its limit.
    pub fn expired(&self) -> String {
        format!(
            "the hang on purpose ({VAR}={}: {}) reached {LIMIT_VAR}={} s; giving up",
            self.value,
            self.mode,
            secs(self.limit)
        )
    }

    /// Sleeps until `since` + the limit (no spinning; `SIGTERM` still ends the process), then
    /// returns [`Hang::expired`].
    pub fn hold(&self, since: Instant) -> String {
        let until = since + self.limit;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return self.expired();
            }
            std::thread::sleep(left);
        }
    }

    /// `freeze`: stops the whole process with `SIGSTOP`. Returns once it is continued: `Ok`
    /// after a `SIGCONT` from outside, [`Hang::expired`] after the limit. A stopped process
    /// runs no thread, so the limit is a one-shot kernel timer that sends `SIGCONT` (which
    /// resumes a stopped process whatever its disposition).
    pub fn freeze(&self) -> Result<(), String> {
        use nix::sys::signal::{SigEvent, SigevNotify, Signal, raise};
        use nix::sys::time::TimeSpec;
        use nix::sys::timer::{Expiration, Timer, TimerSetTimeFlags};
        use nix::time::ClockId;

        let mut timer = Timer::new(
            ClockId::CLOCK_MONOTONIC,
            SigEvent::new(SigevNotify::SigevSignal {
                signal: Signal::SIGCONT,
                si_value: 0,
            }),
        )
        .map_err(|e| format!("{VAR}: failed to create the {LIMIT_VAR} timer: {e}"))?;
        let started = self.announce("stopping this MPI rank with SIGSTOP (SIGCONT resumes it)");
        timer
            .set(
                Expiration::OneShot(TimeSpec::from_duration(self.limit)),
                TimerSetTimeFlags::empty(),
            )
            .map_err(|e| format!("{VAR}: failed to arm the {LIMIT_VAR} timer: {e}"))?;
        raise(Signal::SIGSTOP).map_err(|e| format!("{VAR}: failed to raise SIGSTOP: {e}"))?;
        drop(timer);
        if started.elapsed() >= self.limit {
            return Err(self.expired());
        }
        say!(
            "resumed by SIGCONT after {} ms of {VAR}={}",
            started.elapsed().as_millis(),
            self.value
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_values() {
        let spec = |role, rank, mode| Ok(Spec { role, rank, mode });
        let table = [
            ("GEN_0:not-ready", spec(Role::Gen(0), None, Mode::NotReady)),
            (
                "CTX_3:0:not-ready",
                spec(Role::Ctx(3), Some(0), Mode::NotReady),
            ),
            (
                "DISAGG_SERVER:not-ready",
                spec(Role::DisaggServer, None, Mode::NotReady),
            ),
            (
                "DISAGG_SERVER:0:not-ready",
                spec(Role::DisaggServer, Some(0), Mode::NotReady),
            ),
            ("GEN_1:wedged", spec(Role::Gen(1), None, Mode::Wedged)),
            ("CTX_0:0:wedged", spec(Role::Ctx(0), Some(0), Mode::Wedged)),
            ("BENCHMARK:stall", spec(Role::Benchmark, None, Mode::Stall)),
            (
                "BENCHMARK:0:stall",
                spec(Role::Benchmark, Some(0), Mode::Stall),
            ),
            ("GEN_0:1:freeze", spec(Role::Gen(0), Some(1), Mode::Freeze)),
            (
                "CTX_2:15:freeze",
                spec(Role::Ctx(2), Some(15), Mode::Freeze),
            ),
            (" GEN_0:wedged\n", spec(Role::Gen(0), None, Mode::Wedged)),
        ];
        for (value, want) in table {
            assert_eq!(parse(value), want, "{value:?}");
        }
    }

    #[test]
    fn bad_values_name_the_variable_the_value_and_what_was_expected() {
        let table = [
            ("", FORMAT),
            ("GEN_0", FORMAT),
            ("wedged", FORMAT),
            ("GEN_0:1:2:wedged", FORMAT),
            ("gen_0:wedged", BAD_ROLE),
            ("GEN_x:wedged", BAD_ROLE),
            (":wedged", BAD_ROLE),
            ("SERVER:not-ready", BAD_ROLE),
            ("GEN_0:wedge", BAD_MODE),
            ("GEN_0:Wedged", BAD_MODE),
            ("GEN_0:", BAD_MODE),
            ("GEN_0:x:freeze", BAD_RANK),
            ("GEN_0:-1:freeze", BAD_RANK),
            ("GEN_0:+1:freeze", BAD_RANK),
            ("GEN_0::freeze", BAD_RANK),
            ("GEN_0:99999999999:freeze", BAD_RANK),
        ];
        for (value, expected) in table {
            let err = parse(value).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("`SHIM_HANG` is `{value}`: expected {expected}"),
                "{value:?}"
            );
        }
        // Modes a role does not have, ranks a mode does not allow.
        let refused = [
            (
                "BENCHMARK:not-ready",
                "`not-ready` only for GEN_<n>, CTX_<n> or DISAGG_SERVER",
            ),
            ("GEN_0:1:not-ready", "`not-ready` with rank 0 or none"),
            (
                "DISAGG_SERVER:2:not-ready",
                "`not-ready` with rank 0 or none",
            ),
            (
                "DISAGG_SERVER:wedged",
                "`wedged` only for GEN_<n> or CTX_<n>",
            ),
            ("BENCHMARK:wedged", "`wedged` only for GEN_<n> or CTX_<n>"),
            ("CTX_0:3:wedged", "`wedged` with rank 0 or none"),
            ("GEN_0:stall", "`stall` only for BENCHMARK"),
            ("DISAGG_SERVER:stall", "`stall` only for BENCHMARK"),
            ("BENCHMARK:1:stall", "`stall` with rank 0 or none"),
            (
                "GEN_0:freeze",
                "`freeze` with an MPI worker rank of 1 or more",
            ),
            (
                "GEN_0:0:freeze",
                "`freeze` with an MPI worker rank of 1 or more",
            ),
            ("BENCHMARK:1:freeze", "`freeze` only for GEN_<n> or CTX_<n>"),
            (
                "DISAGG_SERVER:1:freeze",
                "`freeze` only for GEN_<n> or CTX_<n>",
            ),
        ];
        for (value, expected) in refused {
            let err = parse(value).unwrap_err().to_string();
            let head = format!("`SHIM_HANG` is `{value}`: expected {expected}");
            assert!(err.starts_with(&head), "{value:?}: {err}");
            assert!(!err.contains('\n'), "{value:?}: {err}");
        }
    }

    #[test]
    fn limits() {
        assert_eq!(parse_limit(None), Ok(DEFAULT_LIMIT));
        assert_eq!(parse_limit(Some(" ")), Ok(DEFAULT_LIMIT));
        assert_eq!(parse_limit(Some("2")), Ok(Duration::from_secs(2)));
        assert_eq!(parse_limit(Some("0.5")), Ok(Duration::from_millis(500)));
        for bad in ["0", "-1", "soon", "inf", "NaN", "1e9"] {
            let err = parse_limit(Some(bad)).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "`SHIM_HANG_LIMIT` is `{bad}`: expected a positive number of seconds (default 3600)"
                )
            );
        }
    }

    #[test]
    fn which_process_hangs() {
        let p = |value, role, rank| plan(value, None, role, rank);
        let hang = |value: &str, mode| {
            Ok(Some(Hang {
                value: value.to_string(),
                mode,
                limit: DEFAULT_LIMIT,
            }))
        };
        assert_eq!(p(None, Some("GEN_0"), 0), Ok(None));
        assert_eq!(p(Some(""), Some("GEN_0"), 0), Ok(None));
        assert_eq!(
            p(Some("GEN_0:wedged"), Some("GEN_0"), 0),
            hang("GEN_0:wedged", Mode::Wedged)
        );
        assert_eq!(
            p(Some("GEN_0:0:wedged"), Some("GEN_0"), 0),
            hang("GEN_0:0:wedged", Mode::Wedged)
        );
        assert_eq!(p(Some("GEN_0:wedged"), Some("GEN_1"), 0), Ok(None));
        assert_eq!(p(Some("GEN_0:wedged"), Some("CTX_0"), 0), Ok(None));
        assert_eq!(p(Some("GEN_0:wedged"), None, 0), Ok(None));
        // The workers of GEN_0 are not the server.
        assert_eq!(p(Some("GEN_0:wedged"), Some("GEN_0"), 1), Ok(None));
        assert_eq!(
            p(Some("GEN_0:2:freeze"), Some("GEN_0"), 2),
            hang("GEN_0:2:freeze", Mode::Freeze)
        );
        assert_eq!(p(Some("GEN_0:2:freeze"), Some("GEN_0"), 1), Ok(None));
        assert_eq!(p(Some("GEN_0:2:freeze"), Some("GEN_0"), 0), Ok(None));
        assert_eq!(
            p(Some("BENCHMARK:stall"), Some("BENCHMARK"), 0),
            hang("BENCHMARK:stall", Mode::Stall)
        );
        assert_eq!(
            p(Some("BENCHMARK:stall"), Some("DISAGG_SERVER"), 0),
            Ok(None)
        );
        // A bad value fails every process that reads it, named or not.
        for role in [Some("GEN_0"), Some("BENCHMARK"), None] {
            assert!(p(Some("BENCHMARK:wedged"), role, 0).is_err());
        }
        // The limit is checked whenever it is set.
        let err = plan(None, Some("x"), Some("GEN_0"), 0).unwrap_err();
        assert!(
            err.to_string().contains("`SHIM_HANG_LIMIT` is `x`"),
            "{err}"
        );
        assert_eq!(
            plan(Some("GEN_0:wedged"), Some("1.5"), Some("GEN_0"), 0)
                .unwrap()
                .map(|h| h.limit),
            Some(Duration::from_millis(1500))
        );
    }

    #[test]
    fn the_hang_line() {
        let hang = Hang {
            value: "GEN_0:wedged".into(),
            mode: Mode::Wedged,
            limit: Duration::from_secs(3600),
        };
        assert_eq!(
            hang.line("blocking POST /v1/completions", 1_700_000_000_123_456),
            "hanging on purpose (SHIM_HANG=GEN_0:wedged: wedged) unix_us=1700000000123456: \
             blocking POST /v1/completions; for at most 3600 s (SHIM_HANG_LIMIT)"
        );
        assert_eq!(
            hang.expired(),
            "the hang on purpose (SHIM_HANG=GEN_0:wedged: wedged) reached SHIM_HANG_LIMIT=3600 s; \
             giving up"
        );
        let quick = Hang {
            limit: Duration::from_millis(20),
            ..hang
        };
        let started = Instant::now();
        assert_eq!(quick.hold(started), quick.expired());
        assert!(started.elapsed() >= Duration::from_millis(20));
    }
}
