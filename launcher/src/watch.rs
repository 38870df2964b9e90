//! Readiness and liveness of a rank: when a hang becomes a verdict.
//!
//! Pure: fed with what was observed (the probe said ready, the children made progress, a
//! process of the main child's tree is stopped) and the time, it answers with the next instant
//! worth looking at and, once a deadline passed, which one ([`Expired`]). [`crate::run`] turns
//! an expiry into the usual TERM→KILL shutdown and the exit codes [`LaunchExit::NOT_READY`] or
//! [`LaunchExit::STALLED`].
//!
//! - **Ready** (`--ready-timeout` with a probe: `--ready-url`, `--ready-file`, `--ready-line`):
//!   the task must be ready within the timeout of its start. Once ready, nothing more is asked
//!   of it; a child that got ready and then ends keeps its own exit code.
//! - **Stall** (`--stall-timeout`, probe `--stall-probe`): no progress for the timeout. The clock
//!   starts when the task is ready (with a ready probe) or started (without one), and every
//!   progress observation resets it. Progress is, by probe: `output` (default) the children's
//!   output grew (bytes, so a progress bar without newlines counts), `url=URL` an HTTP GET
//!   answered 2xx, `file=PATH` the file's size or modification time changed, `stopped` nothing
//!   but the absence of a stopped process: for programs that are quiet by nature. Whatever
//!   the probe, no progress is credited while a process of the main child's tree is stopped
//!   (`SIGSTOP`, `SIGTSTP`, a tracer): a stopped process makes none, and under `stopped` being
//!   stopped for the timeout is the stall.
//!
//! On an MPI worker rank (rank > 0 of the MPI path) the server's readiness and progress are
//! rank 0's business: the ready options do nothing there, and the stall watch only looks for a
//! stopped worker (probe `stopped` whatever was asked), since workers are silent while rank 0
//! serves.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[cfg(doc)]
use crate::exit::LaunchExit;

/// How readiness is observed.
#[derive(Debug, Clone)]
pub enum ReadyProbe {
    /// An HTTP GET of this URL answers 2xx.
    Url(String),
    /// This file exists.
    File(PathBuf),
    /// A line of the children's output matches.
    Line(regex::Regex),
}

impl fmt::Display for ReadyProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadyProbe::Url(url) => write!(f, "GET {url}"),
            ReadyProbe::File(path) => write!(f, "file {}", path.display()),
            ReadyProbe::Line(re) => write!(f, "line /{}/", re.as_str()),
        }
    }
}

/// How progress is observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StallProbe {
    /// The children's output grew.
    Output,
    /// An HTTP GET of this URL answered 2xx.
    Url(String),
    /// The file changed (size or modification time).
    File(PathBuf),
    /// Only a stopped process counts as no progress.
    Stopped,
}

impl fmt::Display for StallProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StallProbe::Output => f.write_str("output"),
            StallProbe::Url(url) => write!(f, "GET {url}"),
            StallProbe::File(path) => write!(f, "file {}", path.display()),
            StallProbe::Stopped => f.write_str("stopped"),
        }
    }
}

/// `--stall-probe`: `output`, `stopped`, `url=URL`, `file=PATH`.
pub fn parse_stall_probe(text: &str) -> Result<StallProbe, String> {
    match text {
        "output" => Ok(StallProbe::Output),
        "stopped" => Ok(StallProbe::Stopped),
        _ => {
            if let Some(url) = text.strip_prefix("url=") {
                check_url(url)?;
                Ok(StallProbe::Url(url.to_string()))
            } else if let Some(path) = text.strip_prefix("file=").filter(|p| !p.is_empty()) {
                Ok(StallProbe::File(PathBuf::from(path)))
            } else {
                Err(format!(
                    "`{text}`: expected `output`, `stopped`, `url=http://HOST:PORT/PATH` or `file=PATH`"
                ))
            }
        }
    }
}

/// A URL the probe can fetch: `http://HOST[:PORT][/PATH]` with an IP address or `localhost`
/// (rank-launch does no name lookups: its static build has no resolver).
pub fn check_url(text: &str) -> Result<(), String> {
    crate::probe::parse_url(text).map(|_| ())
}

#[derive(Debug, Clone)]
pub struct Ready {
    pub timeout: Duration,
    pub probe: ReadyProbe,
}

#[derive(Debug, Clone)]
pub struct Stall {
    pub timeout: Duration,
    pub probe: StallProbe,
}

/// What a rank watches, decided by the plan.
#[derive(Debug, Clone, Default)]
pub struct WatchSpec {
    pub ready: Option<Ready>,
    pub stall: Option<Stall>,
}

impl WatchSpec {
    pub fn is_empty(&self) -> bool {
        self.ready.is_none() && self.stall.is_none()
    }

    /// True when a probe reads the children's output (their output must pass through
    /// rank-launch then).
    pub fn reads_output(&self) -> bool {
        matches!(
            self.ready,
            Some(Ready {
                probe: ReadyProbe::Line(_),
                ..
            })
        ) || matches!(
            self.stall,
            Some(Stall {
                probe: StallProbe::Output,
                ..
            })
        )
    }
}

/// Which deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ready,
    Stall,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Ready => "ready",
            Kind::Stall => "stall",
        }
    }
}

/// A deadline that passed: which, its probe, its timeout and how long was waited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub kind: Kind,
    pub probe: String,
    pub timeout: Duration,
    pub waited: Duration,
    /// A process of the tree was stopped when the stall was declared (its pid).
    pub stopped: Option<i32>,
}

impl Expired {
    /// The rank's one error line.
    pub fn reason(&self) -> String {
        let secs = |d: Duration| format!("{:.1}", d.as_secs_f64());
        match self.kind {
            Kind::Ready => format!(
                "not ready after {} s (--ready-timeout {} s, probe: {})",
                secs(self.waited),
                secs(self.timeout),
                self.probe
            ),
            Kind::Stall => {
                let stopped = self
                    .stopped
                    .map(|pid| format!("; process {pid} is stopped"))
                    .unwrap_or_default();
                format!(
                    "no progress for {} s (--stall-timeout {} s, probe: {}{stopped})",
                    secs(self.waited),
                    secs(self.timeout),
                    self.probe
                )
            }
        }
    }
}

/// Where the rank stands, for the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Started, not (yet) known to be ready.
    Starting,
    /// Ready (or started, without a ready probe).
    Serving,
}

/// The watch's state.
#[derive(Debug, Clone)]
pub struct Watch {
    spec: WatchSpec,
    started: Instant,
    ready_at: Option<Instant>,
    /// When the stall clock last restarted (progress, readiness, start).
    progress_at: Instant,
    /// Since when a process of the tree has been stopped.
    stopped_since: Option<(Instant, i32)>,
    expired: Option<Expired>,
}

impl Watch {
    pub fn new(spec: WatchSpec, started: Instant) -> Self {
        Watch {
            spec,
            started,
            ready_at: None,
            progress_at: started,
            stopped_since: None,
            expired: None,
        }
    }

    pub fn spec(&self) -> &WatchSpec {
        &self.spec
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    pub fn phase(&self) -> Phase {
        if self.spec.ready.is_some() && self.ready_at.is_none() {
            Phase::Starting
        } else {
            Phase::Serving
        }
    }

    pub fn ready_at(&self) -> Option<Instant> {
        self.ready_at
    }

    pub fn progress_at(&self) -> Instant {
        self.progress_at
    }

    /// True while the ready probe still has to say yes.
    pub fn wants_ready(&self) -> bool {
        self.spec.ready.is_some() && self.ready_at.is_none() && self.expired.is_none()
    }

    /// True while progress is watched (after readiness, when there is a ready probe).
    pub fn wants_progress(&self) -> bool {
        self.spec.stall.is_some() && self.phase() == Phase::Serving && self.expired.is_none()
    }

    /// The ready probe said yes. Returns true the first time.
    pub fn on_ready(&mut self, now: Instant) -> bool {
        if !self.wants_ready() {
            return false;
        }
        self.ready_at = Some(now);
        self.progress_at = now;
        true
    }

    /// The progress probe saw progress.
    pub fn on_progress(&mut self, now: Instant) {
        if self.stopped_since.is_none() && now > self.progress_at {
            self.progress_at = now;
        }
    }

    /// What the last look at the process tree found: the pid of a stopped process, or none.
    pub fn on_stopped(&mut self, stopped: Option<i32>, now: Instant) {
        match (stopped, self.stopped_since) {
            (Some(pid), None) => self.stopped_since = Some((now, pid)),
            (None, Some(_)) => {
                self.stopped_since = None;
                // Running again: that is progress of a kind for `stopped`, and the other
                // probes start counting from here.
                self.progress_at = self.progress_at.max(now);
            }
            _ => {}
        }
    }

    /// The next instant at which [`Watch::on_tick`] may declare an expiry.
    pub fn deadline(&self) -> Option<Instant> {
        if self.expired.is_some() {
            return None;
        }
        if self.wants_ready() {
            return self.spec.ready.as_ref().map(|r| self.started + r.timeout);
        }
        let stall = self.spec.stall.as_ref()?;
        let since = match (&stall.probe, self.stopped_since) {
            // Under `stopped` only a stopped process counts, from when it stopped.
            (StallProbe::Stopped, Some((at, _))) => at,
            (StallProbe::Stopped, None) => return None,
            // The others: no progress credited while stopped, so the clock runs on.
            _ => self.progress_at,
        };
        Some(since + stall.timeout)
    }

    /// Time passed: `Some` once, when a deadline is over.
    pub fn on_tick(&mut self, now: Instant) -> Option<Expired> {
        let at = self.deadline()?;
        if now < at {
            return None;
        }
        let expired = if self.wants_ready() {
            let ready = self.spec.ready.as_ref()?;
            Expired {
                kind: Kind::Ready,
                probe: ready.probe.to_string(),
                timeout: ready.timeout,
                waited: now.saturating_duration_since(self.started),
                stopped: None,
            }
        } else {
            let stall = self.spec.stall.as_ref()?;
            let since = match (&stall.probe, self.stopped_since) {
                (StallProbe::Stopped, Some((at, _))) => at,
                _ => self.progress_at,
            };
            Expired {
                kind: Kind::Stall,
                probe: stall.probe.to_string(),
                timeout: stall.timeout,
                waited: now.saturating_duration_since(since),
                stopped: self.stopped_since.map(|(_, pid)| pid),
            }
        };
        self.expired = Some(expired.clone());
        Some(expired)
    }

    pub fn expired(&self) -> Option<&Expired> {
        self.expired.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn ready(timeout: u64) -> Option<Ready> {
        Some(Ready {
            timeout: s(timeout),
            probe: ReadyProbe::Line(regex::Regex::new("Uvicorn running").unwrap()),
        })
    }

    fn stall(timeout: u64, probe: StallProbe) -> Option<Stall> {
        Some(Stall {
            timeout: s(timeout),
            probe,
        })
    }

    #[test]
    fn ready_deadline_counts_from_the_start_and_readiness_cancels_it() {
        let t0 = Instant::now();
        let mut w = Watch::new(
            WatchSpec {
                ready: ready(20),
                stall: None,
            },
            t0,
        );
        assert_eq!(w.phase(), Phase::Starting);
        assert_eq!(w.deadline(), Some(t0 + s(20)));
        assert_eq!(w.on_tick(t0 + s(19)), None);
        let e = w.on_tick(t0 + s(20)).expect("expired");
        assert_eq!(e.kind, Kind::Ready);
        assert_eq!(e.waited, s(20));
        assert_eq!(
            e.reason(),
            "not ready after 20.0 s (--ready-timeout 20.0 s, probe: line /Uvicorn running/)"
        );
        assert_eq!(w.on_tick(t0 + s(30)), None, "once");

        let mut w = Watch::new(
            WatchSpec {
                ready: ready(20),
                stall: None,
            },
            t0,
        );
        assert!(w.on_ready(t0 + s(5)));
        assert!(!w.on_ready(t0 + s(6)), "only the first time");
        assert_eq!(w.phase(), Phase::Serving);
        assert_eq!(w.deadline(), None);
        assert_eq!(w.on_tick(t0 + s(100)), None);
    }

    #[test]
    fn stall_clock_starts_at_readiness_and_progress_resets_it() {
        let t0 = Instant::now();
        let mut w = Watch::new(
            WatchSpec {
                ready: ready(60),
                stall: stall(10, StallProbe::Output),
            },
            t0,
        );
        assert!(!w.wants_progress(), "not before ready");
        w.on_ready(t0 + s(30));
        assert!(w.wants_progress());
        assert_eq!(w.deadline(), Some(t0 + s(40)));
        w.on_progress(t0 + s(35));
        assert_eq!(w.deadline(), Some(t0 + s(45)));
        assert_eq!(w.on_tick(t0 + s(44)), None);
        let e = w.on_tick(t0 + s(45)).expect("stall");
        assert_eq!((e.kind, e.waited, e.stopped), (Kind::Stall, s(10), None));
        assert_eq!(
            e.reason(),
            "no progress for 10.0 s (--stall-timeout 10.0 s, probe: output)"
        );
    }

    #[test]
    fn without_a_ready_probe_the_stall_clock_starts_at_the_start() {
        let t0 = Instant::now();
        let mut w = Watch::new(
            WatchSpec {
                ready: None,
                stall: stall(5, StallProbe::Output),
            },
            t0,
        );
        assert_eq!(w.phase(), Phase::Serving);
        assert_eq!(w.deadline(), Some(t0 + s(5)));
        assert!(w.on_tick(t0 + s(5)).is_some());
    }

    #[test]
    fn a_stopped_process_earns_no_progress_and_is_the_stall_under_stopped() {
        let t0 = Instant::now();
        let mut w = Watch::new(
            WatchSpec {
                ready: None,
                stall: stall(10, StallProbe::Output),
            },
            t0,
        );
        w.on_stopped(Some(42), t0 + s(2));
        w.on_progress(t0 + s(5));
        assert_eq!(w.deadline(), Some(t0 + s(10)), "no credit while stopped");
        let e = w.on_tick(t0 + s(10)).unwrap();
        assert_eq!(e.stopped, Some(42));
        assert!(
            e.reason()
                .ends_with("probe: output; process 42 is stopped)")
        );

        let mut w = Watch::new(
            WatchSpec {
                ready: None,
                stall: stall(10, StallProbe::Stopped),
            },
            t0,
        );
        assert_eq!(w.deadline(), None, "quiet is fine under `stopped`");
        assert_eq!(w.on_tick(t0 + s(100)), None);
        w.on_stopped(Some(7), t0 + s(100));
        assert_eq!(w.deadline(), Some(t0 + s(110)));
        w.on_stopped(None, t0 + s(105));
        assert_eq!(w.deadline(), None, "continued in time");
        w.on_stopped(Some(7), t0 + s(120));
        let e = w.on_tick(t0 + s(130)).unwrap();
        assert_eq!((e.waited, e.stopped), (s(10), Some(7)));
    }

    #[test]
    fn stall_probes_parse() {
        let table: &[(&str, Result<StallProbe, &str>)] = &[
            ("output", Ok(StallProbe::Output)),
            ("stopped", Ok(StallProbe::Stopped)),
            (
                "url=http://127.0.0.1:8000/health",
                Ok(StallProbe::Url("http://127.0.0.1:8000/health".into())),
            ),
            ("file=/x/p", Ok(StallProbe::File("/x/p".into()))),
            ("file=", Err("expected `output`")),
            ("url=https://x/", Err("http://")),
            ("cpu", Err("expected `output`, `stopped`")),
        ];
        for (text, want) in table {
            match (parse_stall_probe(text), want) {
                (Ok(got), Ok(want)) => assert_eq!(&got, want, "{text}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{text}: {got}"),
                (got, want) => panic!("{text}: {got:?} vs {want:?}"),
            }
        }
    }
}
