//! The rank's summary JSON (`--summary-json`): written when the rank starts its main child,
//! at every change of phase, every few seconds while progress is seen, and at the end, each
//! time whole (temporary file, then a rename), so that a reader on any node sees either the
//! previous version or the next, never half of one.
//!
//! Phases: `install` (the install gate), `starting` (the main child runs, not known to be
//! ready: only with a ready probe), `serving` (ready, or started without a ready probe),
//! `stopping` (ending: a deadline, a termination signal, or rank 0's task ended and the
//! leader is being stopped), `ended`. `end_phase` is the phase the rank was in when its ending
//! began, `phase_since_unix_us` when the current phase began. Every time is wall-clock
//! microseconds since the Unix epoch (`*_unix_us`), the one clock of every file the job writes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use serde_json::{Map, Value, json};

use crate::exit::ChildEnd;
use crate::plan::Plan;
use crate::run::Outcome;
use crate::watch::Expired;

/// How often a rank that makes progress rewrites its summary (for `last_progress_unix_us`).
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Microseconds since the Unix epoch.
pub fn unix_us(at: SystemTime) -> u64 {
    at.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Where the rank stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Install,
    Starting,
    Serving,
    Stopping,
    Ended,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Install => "install",
            Phase::Starting => "starting",
            Phase::Serving => "serving",
            Phase::Stopping => "stopping",
            Phase::Ended => "ended",
        }
    }
}

/// The summary of one rank, kept up to date while it runs.
pub struct Summary {
    path: Option<PathBuf>,
    /// What does not change: rank, role, host, command, start.
    base: Map<String, Value>,
    phase: Phase,
    /// When the current phase began.
    phase_since: SystemTime,
    end_phase: Option<Phase>,
    ready_at: Option<SystemTime>,
    last_progress: Option<SystemTime>,
    deadline: Option<Value>,
    terminated_by: Option<String>,
    written: Option<Instant>,
    /// The progress time in the last write.
    progress_written: Option<SystemTime>,
}

impl Summary {
    pub fn new(
        plan: &Plan,
        host: &str,
        slurm_node: Option<&str>,
        argv: &[String],
        started_at: SystemTime,
    ) -> Summary {
        let info = &plan.info;
        let base = json!({
            "rank": info.rank,
            "local_rank": info.local_rank,
            "world_size": info.world_size,
            "node_rank": info.node_rank,
            "source": info.source.as_str(),
            "role": plan.role.map(|r| r.to_string()),
            "host": host,
            "slurm_node": slurm_node,
            "command": argv,
            "started_unix_us": unix_us(started_at),
        });
        let Value::Object(base) = base else {
            unreachable!("a JSON object literal")
        };
        Summary {
            path: plan.summary_json.clone(),
            base,
            phase: if plan.install.is_some() {
                Phase::Install
            } else {
                Phase::Starting
            },
            phase_since: started_at,
            end_phase: None,
            ready_at: None,
            last_progress: None,
            deadline: None,
            terminated_by: None,
            written: None,
            progress_written: None,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// A new phase; written at once when it changed. Entering `stopping` fixes `end_phase`.
    pub fn set_phase(&mut self, phase: Phase) {
        if phase == self.phase {
            return;
        }
        if matches!(phase, Phase::Stopping | Phase::Ended) && self.end_phase.is_none() {
            self.end_phase = Some(self.phase);
        }
        self.phase = phase;
        self.phase_since = SystemTime::now();
        self.write_live();
    }

    /// The ready probe said yes.
    pub fn ready(&mut self, at: SystemTime) {
        self.ready_at = Some(at);
        self.last_progress = Some(at);
        if self.phase == Phase::Serving {
            self.write_live();
        } else {
            self.set_phase(Phase::Serving);
        }
    }

    /// Progress was seen; rewritten at most every [`PROGRESS_EVERY`] (see [`Summary::tick`]).
    pub fn progress(&mut self, at: SystemTime) {
        self.last_progress = Some(at);
        self.tick();
    }

    /// Writes progress not written yet once [`PROGRESS_EVERY`] has passed since the last write,
    /// so that the last progress before a silence reaches the file too. Called every second.
    pub fn tick(&mut self) {
        let unwritten = self.last_progress != self.progress_written;
        if unwritten && self.written.is_none_or(|w| w.elapsed() >= PROGRESS_EVERY) {
            self.write_live();
        }
    }

    /// A deadline passed.
    pub fn deadline(&mut self, expired: &Expired) {
        self.deadline = Some(json!({
            "kind": expired.kind.as_str(),
            "probe": expired.probe,
            "timeout_s": expired.timeout.as_secs_f64(),
            "waited_s": expired.waited.as_secs_f64(),
            "stopped_pid": expired.stopped,
        }));
        self.set_phase(Phase::Stopping);
    }

    /// rank-launch received a termination signal (the first one is kept).
    pub fn terminated(&mut self, signal: nix::sys::signal::Signal) {
        self.terminated_by.get_or_insert_with(|| signal.to_string());
        self.set_phase(Phase::Stopping);
    }

    fn document(&self) -> Map<String, Value> {
        let mut doc = self.base.clone();
        let mut put = |k: &str, v: Value| {
            doc.insert(k.to_string(), v);
        };
        put("phase", json!(self.phase.as_str()));
        put("phase_since_unix_us", json!(unix_us(self.phase_since)));
        put("end_phase", json!(self.end_phase.map(Phase::as_str)));
        put("ready_unix_us", json!(self.ready_at.map(unix_us)));
        put(
            "last_progress_unix_us",
            json!(self.last_progress.map(unix_us)),
        );
        put("deadline", self.deadline.clone().unwrap_or(Value::Null));
        put("terminated_by", json!(self.terminated_by));
        put("exit_code", Value::Null);
        put("ended_unix_us", Value::Null);
        doc
    }

    /// The summary while the rank runs (no exit code yet). A failure is logged once, not
    /// fatal: the summary is a report, not part of the run.
    pub fn write_live(&mut self) {
        let Some(path) = self.path.clone() else {
            return;
        };
        let first = self.written.is_none();
        self.written = Some(Instant::now());
        self.progress_written = self.last_progress;
        if let Err(err) = write_atomically(&path, &Value::Object(self.document())) {
            if first {
                tracing::warn!("{err:#}");
            }
        }
    }

    /// The final summary.
    pub fn write_final(&mut self, outcome: &Outcome, elapsed: Duration) -> anyhow::Result<()> {
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        if self.end_phase.is_none() {
            self.end_phase = Some(self.phase);
        }
        self.phase = Phase::Ended;
        self.phase_since = SystemTime::now();
        let end_fields = |end: Option<ChildEnd>| match end {
            Some(ChildEnd::Exited(code)) => (json!(code), Value::Null),
            Some(ChildEnd::Signaled(signal)) => (Value::Null, json!(signal)),
            None => (Value::Null, Value::Null),
        };
        let (child_code, child_signal) = end_fields(outcome.end);
        let children: Vec<_> = outcome
            .children
            .iter()
            .map(|c| {
                let (code, signal) = end_fields(c.end);
                json!({
                    "name": c.name, "pid": c.pid, "exit_code": code, "signal": signal,
                    "duration_ms": c.duration.as_millis() as u64,
                    "started_unix_us": unix_us(c.started_at),
                    "ended_unix_us": c.ended_at.map(unix_us),
                })
            })
            .collect();
        let mut doc = self.document();
        let mut put = |k: &str, v: Value| {
            doc.insert(k.to_string(), v);
        };
        put("exit_code", json!(outcome.code));
        put("child_exit_code", child_code);
        put("child_signal", child_signal);
        put("reason", json!(outcome.reason));
        put("left_behind", json!(outcome.left_behind));
        put("duration_ms", json!(elapsed.as_millis() as u64));
        put("ended_unix_us", json!(unix_us(SystemTime::now())));
        put(
            "gate_released_unix_us",
            json!(outcome.gate_released_at.map(unix_us)),
        );
        put("children", json!(children));
        write_atomically(&path, &Value::Object(doc))
    }
}

fn write_atomically(path: &Path, doc: &Value) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(doc)? + "\n";
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, text)
        .with_context(|| format!("failed to write the summary `{}`", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("failed to write the summary `{}`", path.display()))?;
    Ok(())
}
