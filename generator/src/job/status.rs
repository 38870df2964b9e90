//! `launch-gen status DIR [--json | --watch | --events]`: where a job stands, read from its
//! workspace by any node that sees it, while the job runs and after it.
//!
//! **The table** has a header (the job's phase: the last line of `phases.jsonl`; how long since
//! the job started: its first line; the verdict line of `verdict.json` once there is one), then
//! one row per role and rank, roles in the order of `steps.jsonl`:
//!
//! - `ROLE RANK HOST`: `HOST` is the rank's `slurm_node`, else its `host`.
//! - `PHASE`: the rank's (`install`, `starting`, `serving`, `stopping`, `ended`); `pending`
//!   for a role whose step started but that has no rank summary yet (one row, rank `-`). A step
//!   that writes no summaries (the install, the prechecks) is one row, `running` or `ended`.
//! - `TIME`: how long the rank has been in its phase; for an ended rank, how long it ran (its
//!   clock stops at its end, so a finished job reads the same a day later).
//! - `IDLE`: how long since the rank's last sign of progress (`last_progress_unix_us`), up to
//!   its end for an ended rank; `-` when it has none.
//! - `END`: `-` while running; else rank-launch's exit code, or the signal that killed the
//!   main child (`SIGABRT`), or the deadline that fired (`not ready`, `no progress`, shown as
//!   soon as it fires); `step N` when the role's step ended with `N` but the rank's summary
//!   has no end (rank-launch was killed before it could write one).
//!
//! `--json` is the same model as one document (times as unix microseconds, durations as
//! seconds, field names stable; `version` changes when one changes meaning).
//!
//! `--watch` redraws the table in place until `verdict.json` exists: the cursor hidden, the
//! screen cleared once, then every frame (each second, or as soon as a record changed) in one
//! synchronized update that moves to each line, clears it and writes it, cut to the terminal's
//! width and height. SIGINT, SIGTERM and SIGHUP end it with the cursor shown again below the
//! last frame; no raw mode.
//!
//! `--events` prints one line per change (`<UTC time> <what>`), stamped with the records' own
//! times, each once (events are keyed by what they are, not when they were seen), until the
//! verdict. An event is held back until the clock is [`HOLD_BACK_US`] past it (everything
//! comes out at once when the job is over), so that records from several nodes come out in
//! time order; one written later than that comes out when seen. A summary has no time for a
//! deadline that fired: it is estimated (the rank's start, or its last progress, plus the time
//! waited).
//!
//! Exit codes: 0 for the table and `--json` (whatever the job's fate); for `--events` and
//! `--watch` the verdict's: 0 for PASS, 1 for FAIL (or when the job reached its `verdict`
//! phase [`VERDICT_GRACE_US`] ago and no `verdict.json` came); 3 after `--timeout`; 128 + the
//! signal when `--watch` is interrupted; 2 for bad input.
//!
//! Pure parts: [`build`] (records → [`Status`]), [`table`], [`json`], [`events`] and [`Feed`]
//! (which events are new), [`frame`]; [`run`] is the edge (clock, terminal, polling).

use std::collections::HashSet;
use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::io::{self, StatusRecords};
use super::model::{RankSummary, RoleStep, VerdictRecord};
use super::redact::Redactor;
use super::scan;
use super::verdict;

/// Exit code for bad input.
const EXIT_INPUT: i32 = 2;
/// Exit code of `--events` and `--watch` when `--timeout` passed first.
pub const EXIT_TIMEOUT: i32 = 3;
/// How often `--events` and `--watch` read the workspace.
const POLL: Duration = Duration::from_millis(250);
/// How often `--watch` redraws when nothing changed (the clocks move).
const REDRAW: Duration = Duration::from_secs(1);
/// How long after the job's `verdict` phase `verdict.json` may take to appear (the script
/// prints a plain verdict line instead when `launch-gen` cannot run on the batch node).
pub const VERDICT_GRACE_US: i64 = 30_000_000;
/// `--events` holds an event back until the clock is this far past it, so that a record
/// written a little late (another node, a shared file system) still comes out in time order.
pub const HOLD_BACK_US: i64 = 1_000_000;
/// The table's width outside `--watch`.
pub const WIDTH: usize = 80;

const STATUS_HELP: &str = "\
Columns: TIME is the time in the current phase, or for an ended rank how long it ran; IDLE the
time since the rank's last progress (up to its end); END the exit code, the signal that killed
the main child, the deadline that fired (`not ready`, `no progress`), or `-` while running.

Exit codes: 0 for the table and --json; with --events or --watch 0 when the verdict is PASS,
1 when it is FAIL (or still not written 30 s after the job's verdict phase), 3 after
--timeout, 128 + the signal when --watch is stopped by one (Ctrl-C: 130); 2 for bad input.

Examples:
  launch-gen status /lustre/ws
  launch-gen status /lustre/ws --watch
  launch-gen status /lustre/ws --events --timeout 7200
  launch-gen status /lustre/ws --json | jq '.rows[] | select(.end != null)'";

/// Shows where a job stands: one row per role and rank, from the job workspace's records.
#[derive(Debug, clap::Args)]
#[command(
    after_help = STATUS_HELP,
    group(clap::ArgGroup::new("follow").args(["watch", "events"]))
)]
pub struct StatusArgs {
    /// The job workspace.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// The same as one JSON document, for scripts.
    #[arg(long, conflicts_with = "follow")]
    pub json: bool,
    /// Redraw the table in place (a terminal UI) until the job's verdict is written.
    #[arg(long)]
    pub watch: bool,
    /// Print one line per change (`<UTC time> <what>`, the records' own times) until the
    /// verdict, for CI logs.
    #[arg(long)]
    pub events: bool,
    /// With --watch or --events: give up after SECS seconds (exit 3).
    #[arg(long, value_name = "SECS", requires = "follow", value_parser = parse_timeout)]
    pub timeout: Option<Duration>,
    /// Now, in microseconds since the epoch, instead of the clock (tests).
    #[arg(long, value_name = "UNIX_US", hide = true)]
    pub now_us: Option<i64>,
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .ok_or_else(|| format!("expected a non-negative number of seconds, found `{text}`"))
}

// ---------------------------------------------------------------------------------------------
// The model.

/// What a row stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RowKind {
    /// A rank, from its summary.
    Rank,
    /// A role whose step started but that has no rank summary yet.
    Pending,
    /// A step without rank summaries (install, precheck, or a role that never wrote one).
    Step,
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// `GEN_0`, `DISAGG_SERVER`, `GEN_PRECHECK_0`, ...
    pub role: String,
    /// The rank (`None` for pending and step rows).
    pub rank: Option<i64>,
    /// What the row stands for.
    pub kind: RowKind,
    /// `slurm_node`, else `host`.
    pub host: Option<String>,
    /// `install`, `starting`, `serving`, `stopping`, `ended`, `pending`, `running`.
    pub phase: String,
    /// The END column (`None`: `-`).
    pub end: Option<String>,
    /// rank-launch's exit code (a step row: the step's).
    pub exit_code: Option<i64>,
    /// The signal that killed the main child.
    pub signal: Option<String>,
    /// The kind of deadline that fired (`ready`, `stall`).
    pub deadline: Option<String>,
    /// The signal rank-launch received first, when stopped from outside.
    pub terminated_by: Option<String>,
    /// The role's step's exit status, once it ended.
    pub step_code: Option<i64>,
    /// The step's note (`node failure`, `killed`).
    pub step_note: Option<String>,
    /// Start (a rank's, or the step's).
    pub started_unix_us: Option<i64>,
    /// When the current phase began.
    pub phase_since_unix_us: Option<i64>,
    /// When the rank became ready.
    pub ready_unix_us: Option<i64>,
    /// Its last sign of progress.
    pub last_progress_unix_us: Option<i64>,
    /// End (a rank's, or the step's; a rank without an end of its own: its step's).
    pub ended_unix_us: Option<i64>,
    /// The TIME column: in phase, or for an ended row how long it ran.
    pub time_s: Option<f64>,
    /// Now minus `phase_since_unix_us` (without one, from an older rank-launch: minus the
    /// ready time when serving, else the start).
    pub in_phase_s: Option<f64>,
    /// From start to end (or now).
    pub ran_s: Option<f64>,
    /// The IDLE column: from the last progress to the end (or now).
    pub idle_s: Option<f64>,
}

/// The job as a whole.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobState {
    /// The last phase of `phases.jsonl`.
    pub phase: Option<String>,
    /// When the job entered it.
    pub phase_unix_us: Option<i64>,
    /// Since then.
    pub in_phase_s: Option<f64>,
    /// The first phase's time.
    pub started_unix_us: Option<i64>,
    /// Reached its `verdict` phase, or `verdict.json` exists.
    pub finished: bool,
    /// The `verdict` phase's time (else the verdict's).
    pub ended_unix_us: Option<i64>,
    /// From the start to the end (or now).
    pub elapsed_s: Option<f64>,
}

/// `verdict.json`'s verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerdictState {
    /// `PASS`, `FAIL` (or what else it says).
    pub verdict: Option<String>,
    /// PASS: true, FAIL: false.
    pub passed: Option<bool>,
    /// `verdict: ...`.
    pub line: String,
    /// The job's exit code.
    pub code: Option<i64>,
    /// When it was made.
    pub unix_us: Option<i64>,
}

/// Where the job stands at `now_unix_us`: what `--json` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    /// The document's format; changes only when a field changes meaning or goes away.
    pub version: u32,
    /// The workspace's directory name.
    pub dir: String,
    /// The time the durations are computed at.
    pub now_unix_us: i64,
    /// The job.
    pub job: JobState,
    /// The verdict, once written.
    pub verdict: Option<VerdictState>,
    /// The rows, roles in the order of `steps.jsonl`, ranks in order.
    pub rows: Vec<Row>,
}

impl Status {
    /// The same without what only the clock changes: equal facts mean equal records.
    pub fn facts(&self) -> Status {
        let mut facts = self.clone();
        facts.now_unix_us = 0;
        facts.job.in_phase_s = None;
        facts.job.elapsed_s = None;
        for row in &mut facts.rows {
            row.time_s = None;
            row.in_phase_s = None;
            row.ran_s = None;
            row.idle_s = None;
        }
        facts
    }
}

/// Microseconds as seconds, to the millisecond.
fn secs(us: i64) -> f64 {
    (us as f64 / 1000.0).round() / 1000.0
}

fn since(from: Option<i64>, to: i64) -> Option<f64> {
    from.map(|from| secs(to.saturating_sub(from)))
}

/// Roles whose step runs no rank-launch with a summary: the install, the fabric prechecks.
pub fn writes_summaries(role: &str) -> bool {
    role != "INSTALL" && !role.contains("_PRECHECK_") && !role.starts_with('@')
}

/// The END text of a rank: its deadline, else its main child's signal, else its exit code.
fn rank_end(rank: &RankSummary, ended: bool, lost_step: Option<Option<i64>>) -> Option<String> {
    if let Some(deadline) = &rank.deadline {
        return Some(match deadline.kind.as_str() {
            "ready" => "not ready".to_owned(),
            "stall" => "no progress".to_owned(),
            "" => "deadline".to_owned(),
            other => format!("{other} deadline"),
        });
    }
    if let Some(code) = rank.exit_code {
        return Some(match rank.child_signal {
            Some(signal) => scan::signal_name(signal),
            None => code.to_string(),
        });
    }
    if ended {
        return Some("?".to_owned());
    }
    lost_step.map(|code| match code {
        Some(code) => format!("step {code}"),
        None => "step ?".to_owned(),
    })
}

fn rank_row(
    rank: &RankSummary,
    phase_since: Option<i64>,
    step: Option<&RoleStep>,
    now: i64,
    redactor: &Redactor,
) -> Row {
    let step_end = step.and_then(|step| step.ended.as_ref());
    let ended = rank.exit_code.is_some() || rank.phase.as_deref() == Some("ended");
    // The step is over but the rank never wrote its end.
    let lost = !ended && step_end.is_some();
    let ended_at = if ended {
        rank.ended_unix_us.or(phase_since)
    } else if lost {
        step_end.and_then(|end| end.unix_us)
    } else {
        None
    };
    let clock = ended_at.unwrap_or(now);
    let phase = if ended {
        "ended".to_owned()
    } else {
        rank.phase.clone().unwrap_or_else(|| "unknown".to_owned())
    };
    // Summaries of an older rank-launch have no `phase_since_unix_us`.
    let phase_began = phase_since.or(match phase.as_str() {
        "serving" => rank.ready_unix_us.or(rank.started_unix_us),
        _ => rank.started_unix_us,
    });
    let in_phase_s = since(phase_began, now);
    let ran_s = since(rank.started_unix_us, clock);
    let time_s = if ended || lost { ran_s } else { in_phase_s };
    let text = |value: &str| redactor.redact(value).into_owned();
    Row {
        role: text(&rank.role),
        rank: Some(rank.rank),
        kind: RowKind::Rank,
        host: rank.node().map(text),
        phase: text(&phase),
        end: rank_end(rank, ended, lost.then(|| step_end.and_then(|end| end.code))),
        exit_code: rank.exit_code,
        signal: rank.child_signal.map(scan::signal_name),
        deadline: rank.deadline.as_ref().map(|deadline| text(&deadline.kind)),
        terminated_by: rank.terminated_by.as_deref().map(text),
        step_code: step_end.and_then(|end| end.code),
        step_note: step_end.and_then(|end| end.note.as_deref()).map(text),
        started_unix_us: rank.started_unix_us,
        phase_since_unix_us: phase_since,
        ready_unix_us: rank.ready_unix_us,
        last_progress_unix_us: rank.last_progress_unix_us,
        ended_unix_us: ended_at,
        time_s,
        in_phase_s,
        ran_s,
        idle_s: since(rank.last_progress_unix_us, clock),
    }
}

fn step_row(step: &RoleStep, now: i64, redactor: &Redactor) -> Row {
    let end = step.ended.as_ref();
    let pending = end.is_none() && writes_summaries(&step.role);
    let (kind, phase) = match end {
        None if pending => (RowKind::Pending, "pending"),
        None => (RowKind::Step, "running"),
        Some(_) => (RowKind::Step, "ended"),
    };
    let ended_at = end.and_then(|end| end.unix_us);
    let clock = ended_at.unwrap_or(now);
    let ran_s = since(step.started_unix_us, clock);
    let code = end.and_then(|end| end.code);
    Row {
        role: redactor.redact(&step.role).into_owned(),
        rank: None,
        kind,
        host: None,
        phase: phase.to_owned(),
        end: end.map(|_| code.map_or_else(|| "?".to_owned(), |code| code.to_string())),
        exit_code: code,
        signal: None,
        deadline: None,
        terminated_by: None,
        step_code: code,
        step_note: end
            .and_then(|end| end.note.as_deref())
            .map(|note| redactor.redact(note).into_owned()),
        started_unix_us: step.started_unix_us,
        phase_since_unix_us: if end.is_some() {
            ended_at
        } else {
            step.started_unix_us
        },
        ready_unix_us: None,
        last_progress_unix_us: None,
        ended_unix_us: ended_at,
        time_s: ran_s,
        in_phase_s: if end.is_some() {
            since(ended_at, now)
        } else {
            ran_s
        },
        ran_s,
        idle_s: None,
    }
}

/// The verdict line of `verdict.json` (made up from its verdict when it has none).
fn verdict_text(record: &VerdictRecord) -> String {
    record.line.clone().unwrap_or_else(|| {
        match record.passed() {
            Some(true) => "verdict: PASS",
            Some(false) => "verdict: FAIL",
            None => "verdict: unknown",
        }
        .to_owned()
    })
}

/// The status of the job whose records are `records`, at `now` (unix microseconds); every
/// string from the job passes `redactor`.
pub fn build(records: &StatusRecords, now: i64, redactor: &Redactor) -> Status {
    let job = &records.job;
    let since_of = |index: usize| records.phase_since.get(index).copied().flatten();
    let mut rows = Vec::new();
    let ranks_of = |role: &str, step: Option<&RoleStep>, rows: &mut Vec<Row>| {
        let mut ranks: Vec<(usize, &RankSummary)> = job
            .ranks
            .iter()
            .enumerate()
            .filter(|(_, rank)| rank.role == role)
            .collect();
        ranks.sort_by_key(|(index, rank)| (rank.rank, *index));
        for (index, rank) in &ranks {
            rows.push(rank_row(rank, since_of(*index), step, now, redactor));
        }
        !ranks.is_empty()
    };
    for step in &job.steps {
        if !ranks_of(&step.role, Some(step), &mut rows) {
            rows.push(step_row(step, now, redactor));
        }
    }
    // Summaries of roles that steps.jsonl does not name (yet).
    let mut others: Vec<&str> = job
        .ranks
        .iter()
        .map(|rank| rank.role.as_str())
        .filter(|role| !job.steps.iter().any(|step| step.role == *role))
        .collect();
    others.sort_unstable();
    others.dedup();
    for role in others {
        ranks_of(role, None, &mut rows);
    }

    let last = job.phases.last();
    let verdict_mark = job
        .phases
        .iter()
        .find(|mark| mark.phase == "verdict")
        .map(|mark| mark.unix_us);
    let verdict = records.verdict.as_ref().map(|record| VerdictState {
        verdict: record
            .verdict
            .as_deref()
            .map(|text| redactor.redact(text).into_owned()),
        passed: record.passed(),
        line: redactor.redact(&verdict_text(record)).into_owned(),
        code: record.code,
        unix_us: record.unix_us,
    });
    let finished = verdict.is_some() || verdict_mark.is_some();
    let ended_at = if finished {
        verdict_mark.or_else(|| verdict.as_ref().and_then(|verdict| verdict.unix_us))
    } else {
        None
    };
    let started = job.phases.first().map(|mark| mark.unix_us);
    Status {
        version: 1,
        dir: redactor.redact(&job.dir_name).into_owned(),
        now_unix_us: now,
        job: JobState {
            phase: last.map(|mark| redactor.redact(&mark.phase).into_owned()),
            phase_unix_us: last.map(|mark| mark.unix_us),
            in_phase_s: since(last.map(|mark| mark.unix_us), now),
            started_unix_us: started,
            finished,
            ended_unix_us: ended_at,
            elapsed_s: since(started, ended_at.unwrap_or(now)),
        },
        verdict,
        rows,
    }
}

// ---------------------------------------------------------------------------------------------
// Text.

/// A duration in a compact form: `12.3s`, `4m05s`, `2h01m`, `3d04h` (negative: `0.0s`).
pub fn compact(seconds: f64) -> String {
    let seconds = if seconds.is_finite() {
        seconds.max(0.0)
    } else {
        0.0
    };
    let tenths = (seconds * 10.0).round();
    if tenths < 600.0 {
        return format!("{:.1}s", tenths / 10.0);
    }
    let whole = (tenths / 10.0).floor() as u64;
    if whole < 3600 {
        format!("{}m{:02}s", whole / 60, whole % 60)
    } else if whole < 100 * 3600 {
        format!("{}h{:02}m", whole / 3600, whole % 3600 / 60)
    } else {
        format!("{}d{:02}h", whole / 86_400, whole % 86_400 / 3600)
    }
}

fn compact_or_dash(seconds: Option<f64>) -> String {
    seconds.map_or_else(|| "-".to_owned(), compact)
}

/// The job's line: its phase and for how long, how long since it started.
pub fn job_line(status: &Status) -> String {
    let job = &status.job;
    let Some(phase) = &job.phase else {
        return format!("job {}: no phase recorded yet", status.dir);
    };
    if job.finished {
        let ago = job
            .ended_unix_us
            .map(|at| format!(", ended {} ago", compact(secs(status.now_unix_us - at))))
            .unwrap_or_default();
        format!(
            "job {}: phase {phase}, ran {}{ago}",
            status.dir,
            compact_or_dash(job.elapsed_s)
        )
    } else {
        format!(
            "job {}: phase {phase} for {}, started {} ago",
            status.dir,
            compact_or_dash(job.in_phase_s),
            compact_or_dash(job.elapsed_s)
        )
    }
}

/// `text` cut to `width` characters, the last one `~` when something was cut.
pub fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    if width == 0 {
        return String::new();
    }
    let mut cut: String = text.chars().take(width - 1).collect();
    cut.push('~');
    cut
}

/// `text` in lines of at most `width` characters, broken at spaces where it can be; the
/// continuation lines indented by two spaces.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(8);
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    // The current line's length, and that of its indent.
    let (mut len, mut start) = (0, 0);
    for word in text.split(' ').filter(|word| !word.is_empty()) {
        let mut word: Vec<char> = word.chars().collect();
        if len > start && len + 1 + word.len() > width {
            lines.push(std::mem::replace(&mut line, "  ".to_owned()));
            (len, start) = (2, 2);
        }
        if len > start {
            line.push(' ');
            len += 1;
        }
        // A word longer than a line is broken where the line ends.
        while len + word.len() > width {
            line.extend(word.drain(..width - len));
            lines.push(std::mem::replace(&mut line, "  ".to_owned()));
            (len, start) = (2, 2);
        }
        len += word.len();
        line.extend(word);
    }
    if len > start {
        lines.push(line);
    }
    lines
}

/// The table's rows as cells: role, rank, host, phase, time, idle, end.
fn cells(row: &Row) -> [String; 7] {
    [
        row.role.clone(),
        row.rank
            .map_or_else(|| "-".to_owned(), |rank| rank.to_string()),
        row.host.clone().unwrap_or_else(|| "-".to_owned()),
        row.phase.clone(),
        compact_or_dash(row.time_s),
        compact_or_dash(row.idle_s),
        row.end.clone().unwrap_or_else(|| "-".to_owned()),
    ]
}

const HEADERS: [&str; 7] = ["ROLE", "RANK", "HOST", "PHASE", "TIME", "IDLE", "END"];
/// Right-aligned columns: rank and the durations.
const RIGHT: [bool; 7] = [false, true, false, false, true, true, false];
const GAP: &str = "  ";

/// The rows as text lines of at most `width` characters where the roles' names allow: the
/// host column gives way first.
pub fn rows_text(rows: &[Row], width: usize) -> Vec<String> {
    let table: Vec<[String; 7]> = rows.iter().map(cells).collect();
    // Columns whose content changes as the job goes have a fixed least width, so that a
    // redrawn table does not shift.
    let mut widths = [4, 4, 4, 8, 6, 6, 3];
    for cells in &table {
        for (width, cell) in widths.iter_mut().zip(cells) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let others: usize = widths
        .iter()
        .enumerate()
        .filter(|(column, _)| *column != 2)
        .map(|(_, width)| *width)
        .sum::<usize>()
        + GAP.len() * (HEADERS.len() - 1);
    widths[2] = widths[2].min(width.saturating_sub(others).max(HEADERS[2].len()));
    let line = |cells: [String; 7]| {
        let mut text = String::new();
        for (column, cell) in cells.iter().enumerate() {
            let cell = fit(cell, widths[column]);
            let pad = widths[column] - cell.chars().count();
            if column > 0 {
                text.push_str(GAP);
            }
            if RIGHT[column] {
                text.push_str(&" ".repeat(pad));
                text.push_str(&cell);
            } else {
                text.push_str(&cell);
                if column + 1 < cells.len() {
                    text.push_str(&" ".repeat(pad));
                }
            }
        }
        text
    };
    let mut lines = vec![line(HEADERS.map(str::to_owned))];
    lines.extend(table.into_iter().map(line));
    lines
}

/// The table: the job's line, the verdict (wrapped), the rows; lines of at most `width`
/// characters for the demo's roles.
pub fn table(status: &Status, width: usize) -> Vec<String> {
    let mut lines = wrap(&job_line(status), width);
    if let Some(verdict) = &status.verdict {
        lines.extend(wrap(&verdict.line, width));
    }
    if status.rows.is_empty() {
        lines.push("no steps started yet".to_owned());
    } else {
        lines.extend(rows_text(&status.rows, width));
    }
    lines
}

/// `--json`: the status as one document.
pub fn json(status: &Status) -> String {
    // Plain data: serialisation cannot fail (non-finite floats become null).
    let mut text = serde_json::to_string_pretty(status).unwrap_or_else(|_| "{}".into());
    text.push('\n');
    text
}

/// One `--watch` frame for a terminal of `cols` × `rows`: the table, then a status line;
/// every line cut to `cols`, at most `rows` lines.
pub fn frame(
    status: &Status,
    note: Option<&str>,
    footer: &str,
    cols: usize,
    rows: usize,
) -> Vec<String> {
    let cols = cols.max(1);
    let rows = rows.max(1);
    let mut lines: Vec<String> = table(status, cols);
    if let Some(note) = note {
        lines.push(format!("! {note}"));
    }
    let room = rows - 1;
    if lines.len() > room {
        let keep = room.saturating_sub(1);
        let hidden = lines.len() - keep;
        lines.truncate(keep);
        if room > 0 {
            lines.push(format!("... {hidden} more lines"));
        }
    }
    lines.push(footer.to_owned());
    lines.into_iter().map(|line| fit(&line, cols)).collect()
}

// ---------------------------------------------------------------------------------------------
// Events.

/// One change of state, at the time its record gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// When it happened, in unix microseconds.
    pub unix_us: i64,
    /// At the same time, a rank's event (0) comes before its step's (1), and those before the
    /// job's phase (2) that they lead to.
    pub source: u8,
    /// What identifies it: never given twice.
    pub key: String,
    /// What happened.
    pub text: String,
    /// The verdict: always last.
    pub verdict: bool,
}

/// Unix microseconds as UTC with milliseconds: `2026-12-02T06:10:14.853Z`.
pub fn utc_ms(unix_us: i64) -> String {
    let ms = unix_us.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let secs = ms.div_euclid(1000);
    let (day, second) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, date) = civil_from_days(day);
    format!(
        "{year:04}-{month:02}-{date:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        second / 3600,
        second % 3600 / 60,
        second % 60
    )
}

/// Days since 1970-01-01 as (year, month, day) of the proleptic Gregorian calendar.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A duration in an event: `0.73 s`, `12.5 s`, `4m05s`.
pub fn event_seconds(us: i64) -> String {
    let seconds = secs(us.max(0));
    if seconds < 10.0 {
        format!("{seconds:.2} s")
    } else if seconds < 60.0 {
        format!("{seconds:.1} s")
    } else {
        compact(seconds)
    }
}

fn phase_text(phase: &str) -> String {
    match phase {
        "setup" => "job setup".to_owned(),
        "install_done" => "install done".to_owned(),
        "prechecks_done" => "prechecks done".to_owned(),
        "servers_started" => "servers started".to_owned(),
        "servers_ready" => "servers ready".to_owned(),
        "benchmark_started" => "benchmark started".to_owned(),
        "benchmark_ended" => "benchmark ended".to_owned(),
        "drain" => "draining".to_owned(),
        "stopping" => "stopping".to_owned(),
        other => format!("phase {other}"),
    }
}

/// When a rank's deadline fired, estimated from the summary (which has no time for it): the
/// watch's start (ready) or last progress (stall) plus the time waited, at most its end.
fn deadline_at(rank: &RankSummary) -> Option<i64> {
    let deadline = rank.deadline.as_ref()?;
    let waited = deadline.waited_s.or(deadline.timeout_s)?;
    let from = if deadline.kind == "ready" {
        rank.started_unix_us
    } else {
        rank.last_progress_unix_us
            .or(rank.ready_unix_us)
            .or(rank.started_unix_us)
    }?;
    let at = from.saturating_add((waited * 1e6) as i64);
    Some(rank.ended_unix_us.map_or(at, |end| at.min(end)))
}

/// How a rank ended, as an event.
fn rank_end_text(rank: &RankSummary) -> String {
    let code = rank.exit_code.unwrap_or_default();
    if code == 0 && rank.deadline.is_none() {
        return "ended (exit 0)".to_owned();
    }
    let cause = verdict::rank_cause(rank).text;
    if rank.deadline.is_some() {
        // rank-launch's own code for the deadline (75, 76).
        format!("failed: {cause} (exit {code})")
    } else if rank.terminated_by.is_some() {
        format!("stopped: {cause}")
    } else {
        format!("failed: {cause}")
    }
}

/// Every event the records tell of, in time order, the verdict last.
pub fn events(records: &StatusRecords) -> Vec<Event> {
    let job = &records.job;
    let mut list: Vec<Event> = Vec::new();
    let mut push = |source: u8, unix_us: Option<i64>, key: String, text: String| {
        if let Some(unix_us) = unix_us {
            list.push(Event {
                unix_us,
                source,
                key,
                text,
                verdict: false,
            });
        }
    };
    let benchmark_step = job
        .steps
        .iter()
        .any(|step| step.role == verdict::BENCHMARK && step.started_unix_us.is_some());
    for mark in &job.phases {
        // The verdict line stands for the `verdict` phase; the step for `benchmark_started`.
        if mark.phase == "verdict" || (mark.phase == "benchmark_started" && benchmark_step) {
            continue;
        }
        push(
            2,
            Some(mark.unix_us),
            format!("phase/{}/{}", mark.phase, mark.unix_us),
            phase_text(&mark.phase),
        );
    }
    for step in &job.steps {
        push(
            1,
            step.started_unix_us,
            format!("step/{}/started/{:?}", step.role, step.started_unix_us),
            format!("{} started", step.role),
        );
        if let Some(end) = &step.ended {
            let mut text = match end.code {
                Some(0) => format!("{} ended (exit 0)", step.role),
                Some(code) => format!("{} ended: exit {code}", step.role),
                None => format!("{} ended", step.role),
            };
            if let Some(note) = &end.note {
                text.push_str(&format!(" ({note})"));
            }
            push(
                1,
                end.unix_us,
                format!("step/{}/ended/{:?}", step.role, end.unix_us),
                text,
            );
        }
    }
    for rank in &job.ranks {
        let who = format!("{} rank {}", rank.role, rank.rank);
        let key = |what: &str| {
            format!(
                "rank/{}/{}/{:?}/{what}",
                rank.role, rank.rank, rank.started_unix_us
            )
        };
        let on = rank
            .node()
            .map(|node| format!(" on {node}"))
            .unwrap_or_default();
        push(
            0,
            rank.started_unix_us,
            key("started"),
            format!("{who} started{on}"),
        );
        if let Some(ready) = rank.ready_unix_us {
            let after = rank
                .started_unix_us
                .map(|start| format!(" ({} after its start)", event_seconds(ready - start)))
                .unwrap_or_default();
            push(0, Some(ready), key("ready"), format!("{who} ready{after}"));
        }
        if rank.deadline.is_some() {
            let cause = verdict::rank_cause(rank).text;
            push(
                0,
                deadline_at(rank),
                key("deadline"),
                format!("{who}: {cause}"),
            );
        }
        if rank.exit_code.is_some() {
            push(
                0,
                rank.ended_unix_us,
                key("ended"),
                format!("{who} {}", rank_end_text(rank)),
            );
        }
    }
    list.sort_by_key(|event| (event.unix_us, event.source));
    if let Some(record) = &records.verdict {
        let line = verdict_text(record);
        let mark = job
            .phases
            .iter()
            .find(|mark| mark.phase == "verdict")
            .map(|mark| mark.unix_us);
        let last = list.last().map(|event| event.unix_us);
        // Never before the events it concludes.
        let at = record.unix_us.or(mark).or(last).unwrap_or_default();
        list.push(Event {
            unix_us: last.map_or(at, |last| at.max(last)),
            source: 2,
            key: "verdict".to_owned(),
            text: line,
            verdict: true,
        });
    }
    list
}

/// The line of an event: `2026-12-02T06:10:14.853Z CTX_0 rank 0 ready (0.73 s after its start)`.
pub fn event_line(event: &Event) -> String {
    format!("{} {}", utc_ms(event.unix_us), event.text)
}

/// Which events have been given already.
#[derive(Debug, Default)]
pub struct Feed {
    given: HashSet<String>,
}

impl Feed {
    /// The events of `events` (in time order) not given before, up to `until` (unix
    /// microseconds; `None`: all of them, the job is over); they count as given from now on.
    pub fn take(&mut self, events: Vec<Event>, until: Option<i64>) -> Vec<Event> {
        let fresh: Vec<Event> = events
            .into_iter()
            .filter(|event| until.is_none_or(|until| event.unix_us <= until || event.verdict))
            .filter(|event| !self.given.contains(&event.key))
            .collect();
        self.given
            .extend(fresh.iter().map(|event| event.key.clone()));
        fresh
    }
}

/// Whether the job is over for a follower at `now`: its verdict is written, or it reached
/// its `verdict` phase [`VERDICT_GRACE_US`] ago without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    /// Not yet.
    No,
    /// `verdict.json` says PASS (`true`) or something else.
    Verdict(bool),
    /// The `verdict` phase came at this time, `verdict.json` never did.
    NoVerdictFile(i64),
}

/// See [`Over`].
pub fn over(records: &StatusRecords, now: i64) -> Over {
    if let Some(record) = &records.verdict {
        return Over::Verdict(record.passed() == Some(true));
    }
    match records
        .job
        .phases
        .iter()
        .find(|mark| mark.phase == "verdict")
    {
        Some(mark) if now.saturating_sub(mark.unix_us) >= VERDICT_GRACE_US => {
            Over::NoVerdictFile(mark.unix_us)
        }
        _ => Over::No,
    }
}

// ---------------------------------------------------------------------------------------------
// The edge.

fn process_redactor() -> Redactor {
    Redactor::new(std::env::vars_os().map(|(name, value)| {
        (
            name.to_string_lossy().into_owned(),
            value.to_string_lossy().into_owned(),
        )
    }))
}

/// The clock, or `--now-us`.
struct Clock {
    fixed: Option<i64>,
}

impl Clock {
    fn now(&self) -> i64 {
        self.fixed.unwrap_or_else(io::now_us)
    }
}

/// Notes (skipped records) go to stderr, each one once.
#[derive(Default)]
struct Notes {
    given: HashSet<String>,
}

impl Notes {
    fn give(&mut self, notes: Vec<String>, redactor: &Redactor) {
        for note in notes {
            if self.given.insert(note.clone()) {
                eprintln!("{}", redactor.redact(&note));
            }
        }
    }
}

/// Runs `launch-gen status`; returns the exit code.
pub fn run(args: &StatusArgs) -> i32 {
    if let Err(error) = io::check_dir(&args.dir) {
        eprintln!("error: {error}");
        return EXIT_INPUT;
    }
    let redactor = process_redactor();
    let clock = Clock { fixed: args.now_us };
    if args.events {
        return run_events(args, &clock, &redactor);
    }
    if args.watch {
        return run_watch(args, &clock, &redactor);
    }
    let (records, notes) = io::read_status(&args.dir);
    Notes::default().give(notes, &redactor);
    let status = build(&records, clock.now(), &redactor);
    let text = if args.json {
        json(&status)
    } else {
        let mut text = table(&status, WIDTH).join("\n");
        text.push('\n');
        text
    };
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
    0
}

/// Writes `lines` to stdout; false when stdout is gone.
fn print_lines(lines: &[String]) -> bool {
    let mut stdout = std::io::stdout().lock();
    for line in lines {
        if writeln!(stdout, "{line}").is_err() {
            return false;
        }
    }
    stdout.flush().is_ok()
}

fn run_events(args: &StatusArgs, clock: &Clock, redactor: &Redactor) -> i32 {
    let started = Instant::now();
    let mut feed = Feed::default();
    let mut notes = Notes::default();
    loop {
        let (records, read_notes) = io::read_status(&args.dir);
        notes.give(read_notes, redactor);
        let now = clock.now();
        let state = over(&records, now);
        let timed_out = args
            .timeout
            .is_some_and(|timeout| started.elapsed() >= timeout);
        let until = match state {
            Over::No if !timed_out => Some(now.saturating_sub(HOLD_BACK_US)),
            _ => None,
        };
        let mut lines: Vec<String> = feed
            .take(events(&records), until)
            .iter()
            .map(|event| redactor.redact(&event_line(event)).into_owned())
            .collect();
        let code = match state {
            Over::Verdict(passed) => Some(if passed { 0 } else { 1 }),
            Over::NoVerdictFile(at) => {
                lines.push(format!(
                    "{} verdict: unknown (the job reached its verdict phase at {} but wrote \
                     no {}/verdict.json)",
                    utc_ms(now),
                    utc_ms(at),
                    args.dir.display()
                ));
                Some(1)
            }
            Over::No if timed_out => {
                let timeout = args.timeout.unwrap_or_default();
                lines.push(format!(
                    "{} no verdict within --timeout {} s: giving up",
                    utc_ms(now),
                    verdict::seconds(timeout.as_secs_f64())
                ));
                Some(EXIT_TIMEOUT)
            }
            Over::No => None,
        };
        if !print_lines(&lines) {
            // Nobody reads any more.
            return 1;
        }
        if let Some(code) = code {
            return code;
        }
        sleep_left(POLL, args.timeout.map(|timeout| (started, timeout)));
    }
}

/// Sleeps `pause`, but not past the timeout.
fn sleep_left(pause: Duration, timeout: Option<(Instant, Duration)>) {
    let left = timeout.map_or(pause, |(started, timeout)| {
        timeout.saturating_sub(started.elapsed())
    });
    std::thread::sleep(pause.min(left));
}

/// The terminal of `--watch`: the cursor hidden while it runs, shown again when dropped.
struct Screen {
    out: std::io::Stdout,
    lines: usize,
}

impl Screen {
    fn open() -> std::io::Result<Screen> {
        use crossterm::{cursor, execute, terminal};
        let mut out = std::io::stdout();
        execute!(
            out,
            cursor::Hide,
            terminal::Clear(terminal::ClearType::All),
            cursor::MoveTo(0, 0)
        )?;
        Ok(Screen { out, lines: 0 })
    }

    /// Overwrites the screen with `lines` in one synchronized update: each line cleared,
    /// then written; what is below the frame cleared.
    fn draw(&mut self, lines: &[String], rows: usize) -> std::io::Result<()> {
        use crossterm::{cursor, queue, style::Print, terminal};
        queue!(self.out, terminal::BeginSynchronizedUpdate)?;
        for (row, line) in lines.iter().enumerate() {
            let row = u16::try_from(row).unwrap_or(u16::MAX);
            queue!(
                self.out,
                cursor::MoveTo(0, row),
                terminal::Clear(terminal::ClearType::UntilNewLine),
                Print(line)
            )?;
        }
        if lines.len() < rows {
            let row = u16::try_from(lines.len()).unwrap_or(u16::MAX);
            queue!(
                self.out,
                cursor::MoveTo(0, row),
                terminal::Clear(terminal::ClearType::FromCursorDown)
            )?;
        }
        queue!(self.out, terminal::EndSynchronizedUpdate)?;
        self.lines = lines.len();
        self.out.flush()
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        use crossterm::{cursor, execute, style::Print};
        let row = u16::try_from(self.lines.saturating_sub(1)).unwrap_or(u16::MAX);
        let _ = execute!(
            self.out,
            cursor::MoveTo(0, row),
            Print("\r\n"),
            cursor::Show
        );
    }
}

/// The terminal's columns and rows (80 × 24 when it does not say). `window_size`, not
/// `size`: that one would run `tput` when the ioctl fails.
fn terminal_size() -> (usize, usize) {
    match crossterm::terminal::window_size() {
        Ok(size) if size.columns > 0 && size.rows > 0 => {
            (usize::from(size.columns), usize::from(size.rows))
        }
        _ => (WIDTH, 24),
    }
}

fn run_watch(args: &StatusArgs, clock: &Clock, redactor: &Redactor) -> i32 {
    if !std::io::stdout().is_terminal() {
        eprintln!(
            "error: `--watch` draws on a terminal, and stdout is none: use `--events` for logs"
        );
        return EXIT_INPUT;
    }
    let signal = Arc::new(AtomicUsize::new(0));
    for number in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        let Ok(value) = usize::try_from(number) else {
            continue;
        };
        if let Err(error) = signal_hook::flag::register_usize(number, Arc::clone(&signal), value) {
            eprintln!("launch-gen: cannot handle signal {number}: {error}");
            return 1;
        }
    }
    let started = Instant::now();
    let mut screen = match Screen::open() {
        Ok(screen) => screen,
        Err(error) => {
            eprintln!("launch-gen: cannot draw on the terminal: {error}");
            return 1;
        }
    };
    let mut last: Option<(Status, Instant)> = None;
    loop {
        let (records, notes) = io::read_status(&args.dir);
        let now = clock.now();
        let status = build(&records, now, redactor);
        let state = over(&records, now);
        let timed_out = args
            .timeout
            .is_some_and(|timeout| started.elapsed() >= timeout);
        let changed = last
            .as_ref()
            .is_none_or(|(drawn, at)| at.elapsed() >= REDRAW || drawn.facts() != status.facts());
        let footer = match state {
            Over::Verdict(_) => "launch-gen status: the verdict is written".to_owned(),
            Over::NoVerdictFile(_) => {
                "launch-gen status: the job ended without a verdict.json".to_owned()
            }
            Over::No if timed_out => "launch-gen status: --timeout passed, giving up".to_owned(),
            Over::No => format!(
                "{} UTC, every {} s; Ctrl-C quits",
                utc_ms(now).get(11..19).unwrap_or_default(),
                REDRAW.as_secs()
            ),
        };
        let done = state != Over::No || timed_out;
        if changed || done {
            let (cols, rows) = terminal_size();
            let note = notes.first().map(|note| redactor.redact(note).into_owned());
            let lines = frame(&status, note.as_deref(), &footer, cols, rows);
            if screen.draw(&lines, rows).is_err() {
                return 1;
            }
            last = Some((status, Instant::now()));
        }
        match state {
            Over::Verdict(passed) => return if passed { 0 } else { 1 },
            Over::NoVerdictFile(_) => return 1,
            Over::No if timed_out => return EXIT_TIMEOUT,
            Over::No => {}
        }
        // Sleep a poll, in small steps, so that a signal ends the wait at once.
        let wake = Instant::now() + POLL;
        loop {
            let number = signal.load(Ordering::Relaxed);
            if number != 0 {
                drop(screen);
                return 128 + i32::try_from(number).unwrap_or(0);
            }
            let now = Instant::now();
            if now >= wake {
                break;
            }
            sleep_left(
                (wake - now).min(Duration::from_millis(50)),
                args.timeout.map(|timeout| (started, timeout)),
            );
            if args
                .timeout
                .is_some_and(|timeout| started.elapsed() >= timeout)
            {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::model::{self, Deadline, PhaseMark, StepEnd};
    use crate::job::verdict::Job;

    const T0: i64 = 1_790_000_000_000_000;

    fn step(role: &str, started: i64, end: Option<i64>) -> RoleStep {
        RoleStep {
            role: role.into(),
            log: Some(format!("/w/{role}.log")),
            started_unix_us: Some(T0 + started),
            ended: end.map(|code| StepEnd {
                code: Some(code),
                note: None,
                unix_us: Some(T0 + 90_000_000),
            }),
        }
    }

    fn rank(role: &str, rank: i64, phase: &str) -> RankSummary {
        RankSummary {
            role: role.into(),
            rank,
            host: Some("n1.cluster".into()),
            slurm_node: Some("n1".into()),
            started_unix_us: Some(T0 + 1_000_000),
            phase: Some(phase.into()),
            ..RankSummary::default()
        }
    }

    fn ended(mut summary: RankSummary, code: i64, at: i64) -> RankSummary {
        summary.exit_code = Some(code);
        summary.ended_unix_us = Some(T0 + at);
        summary.phase = Some("ended".into());
        summary
    }

    fn marks(list: &[(&str, i64)]) -> Vec<PhaseMark> {
        list.iter()
            .map(|(phase, at)| PhaseMark {
                phase: (*phase).into(),
                unix_us: T0 + at,
            })
            .collect()
    }

    /// GEN_0 rank 1 crashed, the job stopped, the verdict is written.
    fn crashed() -> StatusRecords {
        let mut gen1 = ended(rank("GEN_0", 1, "ended"), 134, 60_000_000);
        gen1.child_signal = Some(6);
        let mut gen0 = ended(rank("GEN_0", 0, "ended"), 143, 61_000_000);
        gen0.terminated_by = Some("SIGTERM".into());
        gen0.child_signal = Some(15);
        gen0.ready_unix_us = Some(T0 + 1_730_000);
        gen0.last_progress_unix_us = Some(T0 + 58_000_000);
        let mut bench = ended(rank("BENCHMARK", 0, "ended"), 76, 62_000_000);
        bench.deadline = Some(Deadline {
            kind: "stall".into(),
            probe: Some("output".into()),
            timeout_s: Some(15.0),
            waited_s: Some(15.0),
        });
        bench.last_progress_unix_us = Some(T0 + 40_000_000);
        let job = Job {
            dir_name: "crash".into(),
            steps: vec![
                step("GEN_PRECHECK_0", 10, Some(0)),
                step("GEN_0", 11, Some(134)),
                step("BENCHMARK", 12, Some(76)),
            ],
            phases: marks(&[
                ("setup", 0),
                ("servers_ready", 2_000_000),
                ("benchmark_started", 2_000_010),
                ("stopping", 60_500_000),
                ("verdict", 95_000_000),
            ]),
            // Out of order, as files sort: `GEN_0.1` after `BENCHMARK.0`.
            ranks: vec![bench, gen1, gen0],
        };
        StatusRecords {
            phase_since: vec![Some(T0 + 62_000_000), None, Some(T0 + 61_000_000)],
            job,
            verdict: Some(model::VerdictRecord {
                verdict: Some("FAIL".into()),
                line: Some("verdict: FAIL (GEN_0 rank 1 on n1: killed by SIGABRT)".into()),
                code: Some(134),
                unix_us: Some(T0 + 95_500_000),
                ..model::VerdictRecord::default()
            }),
        }
    }

    /// The same job while it serves: no ends, no verdict.
    fn serving() -> StatusRecords {
        let mut gen0 = rank("GEN_0", 0, "serving");
        gen0.ready_unix_us = Some(T0 + 1_730_000);
        gen0.last_progress_unix_us = Some(T0 + 20_000_000);
        let job = Job {
            dir_name: "run".into(),
            steps: vec![
                step("GEN_PRECHECK_0", 10, None),
                step("GEN_0", 11, None),
                step("BENCHMARK", 12, None),
            ],
            phases: marks(&[("setup", 0), ("servers_ready", 2_000_000)]),
            ranks: vec![gen0],
        };
        StatusRecords {
            phase_since: vec![Some(T0 + 1_730_000)],
            job,
            verdict: None,
        }
    }

    fn none() -> Redactor {
        Redactor::new(Vec::<(String, String)>::new())
    }

    #[test]
    fn compact_durations() {
        let cases = [
            (-3.0, "0.0s"),
            (0.0, "0.0s"),
            (0.04, "0.0s"),
            (12.34, "12.3s"),
            (59.94, "59.9s"),
            (59.96, "1m00s"),
            (245.0, "4m05s"),
            (3599.9, "59m59s"),
            (7260.0, "2h01m"),
            (359_999.0, "99h59m"),
            (360_000.0, "4d04h"),
            (f64::NAN, "0.0s"),
        ];
        for (seconds, want) in cases {
            assert_eq!(compact(seconds), want, "{seconds}");
        }
        let cases = [
            (730_000, "0.73 s"),
            (12_345_678, "12.3 s"),
            (125_000_000, "2m05s"),
            (-1, "0.00 s"),
        ];
        for (us, want) in cases {
            assert_eq!(event_seconds(us), want, "{us}");
        }
    }

    #[test]
    fn utc_times() {
        let cases = [
            (0, "1970-01-01T00:00:00.000Z"),
            (1_700_000_000_123_456, "2023-11-14T22:13:20.123Z"),
            (951_782_400_000_000, "2000-02-29T00:00:00.000Z"),
            (1_796_191_814_853_000, "2026-12-02T06:10:14.853Z"),
            (-1_000, "1969-12-31T23:59:59.999Z"),
        ];
        for (us, want) in cases {
            assert_eq!(utc_ms(us), want, "{us}");
        }
    }

    #[test]
    fn wrap_and_fit() {
        assert_eq!(wrap("verdict: PASS", 80), ["verdict: PASS"]);
        assert_eq!(
            wrap("aaaa bbbb cccc dddd", 10),
            ["aaaa bbbb", "  cccc", "  dddd"]
        );
        assert_eq!(
            wrap("abcdefghijklmnop", 8),
            ["abcdefgh", "  ijklmn", "  op"]
        );
        for line in wrap(&"word ".repeat(50), 80) {
            assert!(line.chars().count() <= 80, "{line}");
        }
        assert_eq!(fit("node-with-a-long-name", 8), "node-wi~");
        assert_eq!(fit("n1", 8), "n1");
        assert_eq!(fit("n1", 0), "");
    }

    #[test]
    fn rows_follow_the_steps_and_ranks() {
        let status = build(&crashed(), T0 + 200_000_000, &none());
        let rows: Vec<(&str, Option<i64>, &str, Option<&str>)> = status
            .rows
            .iter()
            .map(|row| {
                (
                    row.role.as_str(),
                    row.rank,
                    row.phase.as_str(),
                    row.end.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("GEN_PRECHECK_0", None, "ended", Some("0")),
                ("GEN_0", Some(0), "ended", Some("SIGTERM")),
                ("GEN_0", Some(1), "ended", Some("SIGABRT")),
                ("BENCHMARK", Some(0), "ended", Some("no progress")),
            ]
        );
        // An ended rank's clock stops at its end: TIME is how long it ran, IDLE up to its end.
        let gen0 = &status.rows[1];
        assert_eq!(gen0.time_s, Some(60.0));
        assert_eq!(gen0.idle_s, Some(3.0));
        assert_eq!(gen0.in_phase_s, Some(139.0));
        assert_eq!(status.rows[2].idle_s, None);
        assert!(status.job.finished);
        assert_eq!(status.job.elapsed_s, Some(95.0));
        assert_eq!(status.job.phase.as_deref(), Some("verdict"));

        let lines = table(&status, WIDTH);
        assert_eq!(
            lines[0], "job crash: phase verdict, ran 1m35s, ended 1m45s ago",
            "{lines:#?}"
        );
        assert_eq!(
            lines[1],
            "verdict: FAIL (GEN_0 rank 1 on n1: killed by SIGABRT)"
        );
        assert_eq!(
            lines[2..],
            [
                "ROLE            RANK  HOST  PHASE       TIME    IDLE  END",
                "GEN_PRECHECK_0     -  -     ended      1m30s       -  0",
                "GEN_0              0  n1    ended      1m00s    3.0s  SIGTERM",
                "GEN_0              1  n1    ended      59.0s       -  SIGABRT",
                "BENCHMARK          0  n1    ended      1m01s   22.0s  no progress",
            ],
            "{lines:#?}"
        );
    }

    #[test]
    fn running_rows_pending_and_steps() {
        let status = build(&serving(), T0 + 30_000_000, &none());
        let rows: Vec<(&str, &str, String, String, &str)> = status
            .rows
            .iter()
            .map(|row| {
                (
                    row.role.as_str(),
                    row.phase.as_str(),
                    compact_or_dash(row.time_s),
                    compact_or_dash(row.idle_s),
                    row.end.as_deref().unwrap_or("-"),
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("GEN_PRECHECK_0", "running", "30.0s".into(), "-".into(), "-"),
                ("GEN_0", "serving", "28.3s".into(), "10.0s".into(), "-"),
                ("BENCHMARK", "pending", "30.0s".into(), "-".into(), "-"),
            ]
        );
        assert_eq!(status.rows[2].kind, RowKind::Pending);
        assert_eq!(status.rows[2].rank, None);
        assert!(status.verdict.is_none());
        assert_eq!(
            job_line(&status),
            "job run: phase servers_ready for 28.0s, started 30.0s ago"
        );
        // The facts do not move with the clock.
        let later = build(&serving(), T0 + 31_000_000, &none());
        assert_ne!(later, status);
        assert_eq!(later.facts(), status.facts());
    }

    #[test]
    fn a_rank_whose_step_ended_without_its_end() {
        let mut records = serving();
        records.job.steps[1] = step("GEN_0", 1, Some(137));
        let status = build(&records, T0 + 300_000_000, &none());
        let row = &status.rows[1];
        assert_eq!(row.phase, "serving");
        assert_eq!(row.end.as_deref(), Some("step 137"));
        // Frozen at the step's end.
        assert_eq!(row.time_s, Some(89.0));
        assert_eq!(row.idle_s, Some(70.0));
    }

    #[test]
    fn secrets_are_redacted_in_the_model() {
        let mut records = crashed();
        records.job.ranks[1].slurm_node = Some("host-hf_Sup3rSecret".into());
        let redactor = Redactor::new([("HF_TOKEN", "hf_Sup3rSecret")]);
        let text = json(&build(&records, T0, &redactor));
        assert!(!text.contains("Sup3r"), "{text}");
        assert!(text.contains("host-***"), "{text}");
    }

    #[test]
    fn events_in_time_order_verdict_last() {
        let lines: Vec<String> = events(&crashed()).iter().map(event_line).collect();
        let expected = [
            "2026-09-21T14:13:20.000Z job setup",
            "2026-09-21T14:13:20.000Z GEN_PRECHECK_0 started",
            "2026-09-21T14:13:20.000Z GEN_0 started",
            "2026-09-21T14:13:20.000Z BENCHMARK started",
            "2026-09-21T14:13:21.000Z BENCHMARK rank 0 started on n1",
            "2026-09-21T14:13:21.000Z GEN_0 rank 1 started on n1",
            "2026-09-21T14:13:21.000Z GEN_0 rank 0 started on n1",
            "2026-09-21T14:13:21.730Z GEN_0 rank 0 ready (0.73 s after its start)",
            "2026-09-21T14:13:22.000Z servers ready",
            "2026-09-21T14:14:15.000Z BENCHMARK rank 0: no progress for 15 s",
            "2026-09-21T14:14:20.000Z GEN_0 rank 1 failed: killed by SIGABRT",
            "2026-09-21T14:14:20.500Z stopping",
            "2026-09-21T14:14:21.000Z GEN_0 rank 0 stopped: terminated by SIGTERM",
            "2026-09-21T14:14:22.000Z BENCHMARK rank 0 failed: no progress for 15 s (exit 76)",
            "2026-09-21T14:14:50.000Z GEN_PRECHECK_0 ended (exit 0)",
            "2026-09-21T14:14:50.000Z GEN_0 ended: exit 134",
            "2026-09-21T14:14:50.000Z BENCHMARK ended: exit 76",
            "2026-09-21T14:14:55.500Z verdict: FAIL (GEN_0 rank 1 on n1: killed by SIGABRT)",
        ];
        assert_eq!(lines, expected, "{lines:#?}");
    }

    #[test]
    fn the_feed_gives_each_event_once_and_holds_back_the_newest() {
        let mut feed = Feed::default();
        let running = serving();
        let first = feed.take(events(&running), Some(T0 + 1_000_000));
        let texts: Vec<&str> = first.iter().map(|event| event.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "job setup",
                "GEN_PRECHECK_0 started",
                "GEN_0 started",
                "BENCHMARK started",
                "GEN_0 rank 0 started on n1"
            ]
        );
        assert!(feed.take(events(&running), Some(T0 + 1_000_000)).is_empty());
        let next = feed.take(events(&running), Some(T0 + 9_000_000));
        let texts: Vec<&str> = next.iter().map(|event| event.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "GEN_0 rank 0 ready (0.73 s after its start)",
                "servers ready"
            ]
        );
        // The job is over: everything else, the verdict last.
        let rest = feed.take(events(&crashed()), None);
        assert_eq!(rest.last().map(|event| event.verdict), Some(true));
        assert!(
            !rest.iter().any(|event| event.text == "servers ready"),
            "{rest:#?}"
        );
        assert!(feed.take(events(&crashed()), None).is_empty());
    }

    #[test]
    fn over_at_the_verdict_or_long_after_its_phase() {
        assert_eq!(over(&serving(), T0), Over::No);
        assert_eq!(over(&crashed(), T0), Over::Verdict(false));
        let mut records = crashed();
        records.verdict = None;
        let mark = T0 + 95_000_000;
        assert_eq!(over(&records, mark + VERDICT_GRACE_US - 1), Over::No);
        assert_eq!(
            over(&records, mark + VERDICT_GRACE_US),
            Over::NoVerdictFile(mark)
        );
        records.verdict = Some(model::VerdictRecord {
            verdict: Some("PASS".into()),
            ..model::VerdictRecord::default()
        });
        assert_eq!(over(&records, T0), Over::Verdict(true));
    }

    #[test]
    fn frames_fit_the_terminal() {
        let status = build(&crashed(), T0 + 200_000_000, &none());
        for (cols, rows) in [(80, 24), (40, 5), (20, 2), (1, 1)] {
            let lines = frame(&status, Some("a note"), "footer", cols, rows);
            assert!(lines.len() <= rows, "{cols}x{rows}: {lines:#?}");
            assert_eq!(
                lines.last().map(String::as_str),
                Some(fit("footer", cols).as_str())
            );
            for line in &lines {
                assert!(line.chars().count() <= cols, "{cols}x{rows}: {line}");
            }
        }
        let lines = frame(&status, None, "footer", 80, 5);
        assert_eq!(lines[3], "... 4 more lines");
    }

    #[test]
    fn the_json_document_has_stable_fields() {
        let status = build(&crashed(), T0 + 200_000_000, &none());
        let value: serde_json::Value = serde_json::from_str(&json(&status)).expect("JSON");
        assert_eq!(value["version"], 1);
        assert_eq!(value["job"]["phase"], "verdict");
        assert_eq!(value["verdict"]["verdict"], "FAIL");
        let row = &value["rows"][2];
        assert_eq!(row["role"], "GEN_0");
        assert_eq!(row["rank"], 1);
        assert_eq!(row["kind"], "rank");
        assert_eq!(row["signal"], "SIGABRT");
        assert_eq!(row["exit_code"], 134);
        assert_eq!(row["ended_unix_us"], T0 + 60_000_000);
        assert_eq!(row["ran_s"], 59.0);
        assert_eq!(value["rows"][0]["rank"], serde_json::Value::Null);
    }
}
