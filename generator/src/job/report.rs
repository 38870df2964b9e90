//! `launch-gen report DIR [-o FILE] [--config CONFIG.yaml]`: the job as one self-contained
//! HTML page.
//!
//! The page, top to bottom: a title line (job id, PASS/FAIL); a timeline (inline SVG) with one
//! row per rank, grouped by role in `steps.jsonl` order (steps without rank summaries, such as
//! the prechecks and the install, one row each), the job's phases as vertical markers and the
//! first failure outlined and marked; the verdict; the resource plan (from `--config`, the
//! numbers `--explain` prints); the failed roles' log tails.
//!
//! Nothing on the page is fetched: CSS is inline, there is no script, no font, no image.
//! Rendering is pure ([`render`]: the records in, the HTML text out); every string from the
//! job is redacted ([`Shown`] is the only text the templates take) and escaped by `maud`.
//! [`run`] is the edge: it reads through [`super::io`] and writes atomically.
//!
//! Exit codes: 0 written, 2 bad input (`DIR` not a directory, bad flags, an unreadable or
//! invalid `--config`), 1 when the page cannot be written.

use std::path::{Path, PathBuf};

use maud::{DOCTYPE, Markup, PreEscaped, Render, html};

use super::io;
use super::model::{PhaseMark, RankSummary, RoleStep, VerdictRecord};
use super::redact::Redactor;
use super::scan::{self, LogFacts};
use super::verdict::{self, Job};
use crate::config::LaunchConfig;
use crate::plan::{Plan, Role};

/// Exit code for bad input.
const EXIT_INPUT: i32 = 2;
/// The largest config read.
const CONFIG_LIMIT: u64 = 4 << 20;
/// At most this many failed roles get their log tail on the page.
pub const MAX_TAILS: usize = 16;

/// Writes a self-contained HTML report of a job: a timeline of every rank with the job's
/// phases and the first failure marked, the verdict, the resource plan and the failed roles'
/// log tails.
///
/// Reads `DIR/steps.jsonl`, `DIR/phases.jsonl`, `DIR/ranks/<ROLE>.<rank>.json`,
/// `DIR/verdict.json` and the failed roles' logs; whatever is missing or does not parse is
/// left out (with a note on stderr and on the page).
#[derive(Debug, clap::Args)]
#[command(after_help = REPORT_EXAMPLES)]
pub struct ReportArgs {
    /// The job workspace.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// The HTML file to write [default: DIR/report.html].
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// The job's config, for the resource plan table (the numbers `--explain` prints).
    #[arg(long, value_name = "CONFIG.yaml")]
    pub config: Option<PathBuf>,
}

const REPORT_EXAMPLES: &str = "\
Examples:
  launch-gen report \"$jobWorkspace\" -o \"$jobWorkspace/report.html\" --config demo.yaml
  launch-gen report ./job-1234 -o /tmp/job-1234.html";

// ---------------------------------------------------------------------------------------------
// Inputs.

/// The resource plan as `--explain` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanTable {
    /// The config as named on the command line.
    pub name: String,
    /// `benchmark.mode`.
    pub mode: String,
    /// `hardware.gpus_per_node`.
    pub gpus_per_node: u64,
    /// server, count, GPUs each, nodes each, tasks per node, nodes, GPUs; the last is `total`.
    pub rows: Vec<[String; 7]>,
    /// The mode runs no context servers.
    pub gen_only: bool,
    /// GPUs allocated (nodes x GPUs per node).
    pub gpus_allocated: u64,
    /// Nodes allocated.
    pub nodes: u64,
    /// GPUs the servers use.
    pub gpus_used: u64,
}

/// The column names of [`PlanTable::rows`], as `--explain` prints them.
pub const PLAN_HEADER: [&str; 7] = [
    "server",
    "count",
    "GPUs each",
    "nodes each",
    "tasks per node",
    "nodes",
    "GPUs",
];

/// The plan table of `config` (shown as `name`): the same rows as `--explain`.
pub fn plan_table(config: &LaunchConfig, plan: &Plan, name: &str) -> PlanTable {
    let mut rows: Vec<[String; 7]> = Vec::new();
    for (kind, server) in [("GEN", plan.gen_server), ("CTX", plan.ctx_server)] {
        rows.push([
            kind.to_owned(),
            server.count.to_string(),
            server.gpus.to_string(),
            server.nodes.to_string(),
            server.tasks_per_node.to_string(),
            server.count.saturating_mul(server.nodes).to_string(),
            server.count.saturating_mul(server.gpus).to_string(),
        ]);
    }
    for single in [Role::DisaggServer, Role::Benchmark] {
        let dash = || "-".to_owned();
        rows.push([
            single.to_string(),
            "1".into(),
            dash(),
            dash(),
            "1".into(),
            dash(),
            dash(),
        ]);
    }
    let blank = String::new;
    rows.push([
        "total".into(),
        blank(),
        blank(),
        blank(),
        blank(),
        plan.total_nodes.to_string(),
        plan.total_gpus.to_string(),
    ]);
    let used = |server: crate::plan::ServerPlan| server.count.saturating_mul(server.gpus);
    PlanTable {
        name: name.to_owned(),
        mode: config.benchmark.mode.clone(),
        gpus_per_node: plan.gpus_per_node,
        rows,
        gen_only: plan.gen_only,
        gpus_allocated: plan.total_gpus,
        nodes: plan.total_nodes,
        gpus_used: used(plan.gen_server).saturating_add(used(plan.ctx_server)),
    }
}

/// A failed role's log, as read.
#[derive(Debug, Clone, PartialEq)]
pub struct RoleLog {
    /// The role.
    pub role: String,
    /// The log as the records name it; `None`: no log known.
    pub log: Option<String>,
    /// What was read of it; `None`: not read.
    pub facts: Option<LogFacts>,
}

/// Everything a report is made of.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// The records of the workspace.
    pub job: &'a Job,
    /// `verdict.json`, when there is one.
    pub verdict: Option<&'a VerdictRecord>,
    /// The failed roles' logs, in the order to show them ([`failed_roles`]).
    pub logs: &'a [RoleLog],
    /// The plan; `None`: not known (no `--config`).
    pub plan: Option<&'a PlanTable>,
    /// Notes about records that were skipped.
    pub notes: &'a [String],
    /// When the report is made (shown only).
    pub now_us: i64,
}

// ---------------------------------------------------------------------------------------------
// Outcomes.

/// How a rank (or a step) ended, as the timeline colors it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Ended 0.
    Passed,
    /// Ended non-zero on its own.
    Failed,
    /// Stopped from outside (by the job), or ended after the job began stopping.
    Stopped,
    /// A deadline of rank-launch fired (not ready, no progress).
    Deadline,
    /// No end recorded.
    Running,
}

impl Outcome {
    /// The CSS class and `data-outcome` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Passed => "passed",
            Self::Failed => "failed",
            Self::Stopped => "stopped",
            Self::Deadline => "deadline",
            Self::Running => "running",
        }
    }

    /// As the legend and the tooltips say it.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Passed => "passed",
            Self::Failed => "failed on its own",
            Self::Stopped => "stopped by the job",
            Self::Deadline => "deadline",
            Self::Running => "no end recorded",
        }
    }
}

/// A rank's outcome: its deadline, else exit 0, else a stop from outside, else its code.
pub fn rank_outcome(rank: &RankSummary) -> Outcome {
    if rank.deadline.is_some() {
        Outcome::Deadline
    } else if rank.exit_code == Some(0) {
        Outcome::Passed
    } else if rank.terminated_by.is_some() {
        Outcome::Stopped
    } else if rank.exit_code.is_some() {
        Outcome::Failed
    } else {
        Outcome::Running
    }
}

/// A step's outcome (steps without rank summaries: prechecks, the install).
pub fn step_outcome(step: &RoleStep, stopping: Option<i64>) -> Outcome {
    let Some(end) = &step.ended else {
        return Outcome::Running;
    };
    if !step.ended_badly() {
        Outcome::Passed
    } else if stopping.is_some_and(|stop| end.unix_us.is_none_or(|at| at >= stop)) {
        Outcome::Stopped
    } else {
        Outcome::Failed
    }
}

fn mark(phases: &[PhaseMark], name: &str) -> Option<i64> {
    phases
        .iter()
        .find(|phase| phase.phase == name)
        .map(|phase| phase.unix_us)
}

/// The roles whose log tails the report shows: from `verdict.json`, the blamed role, then every
/// role it says failed; without one, every step that failed on its own and every role with a
/// rank that failed or hit a deadline. In that order, at most [`MAX_TAILS`].
pub fn failed_roles(job: &Job, verdict: Option<&VerdictRecord>) -> Vec<String> {
    let mut roles: Vec<String> = Vec::new();
    let mut push = |role: &str| {
        if !roles.iter().any(|known| known == role) {
            roles.push(role.to_owned());
        }
    };
    match verdict {
        Some(record) => {
            if let Some(blamed) = &record.blamed {
                push(&blamed.role);
            }
            for role in &record.roles {
                if role.outcome.as_deref() == Some("failed") {
                    push(&role.role);
                }
            }
        }
        None => {
            let phases = verdict::job_phases(job);
            let stopping = mark(&phases, "stopping");
            for step in &job.steps {
                let own_failure = job.ranks.iter().any(|rank| {
                    rank.role == step.role
                        && matches!(rank_outcome(rank), Outcome::Failed | Outcome::Deadline)
                });
                if own_failure || step_outcome(step, stopping) == Outcome::Failed {
                    push(&step.role);
                }
            }
            for rank in &job.ranks {
                if matches!(rank_outcome(rank), Outcome::Failed | Outcome::Deadline) {
                    push(&rank.role);
                }
            }
        }
    }
    roles.truncate(MAX_TAILS);
    roles
}

/// The log to read for `role`: its step's, else the blamed role's log of `verdict.json`.
pub fn role_log<'a>(
    job: &'a Job,
    verdict: Option<&'a VerdictRecord>,
    role: &str,
) -> Option<&'a str> {
    job.steps
        .iter()
        .find(|step| step.role == role)
        .and_then(|step| step.log.as_deref())
        .or_else(|| {
            verdict
                .and_then(|record| record.blamed.as_ref())
                .filter(|blamed| blamed.role == role)
                .and_then(|blamed| blamed.log.as_deref())
        })
}

// ---------------------------------------------------------------------------------------------
// Text that may reach the page.

/// Text from the job, redacted: the only kind of string the templates interpolate (maud
/// escapes it; numbers and fixed words are the only other content).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown(String);

impl Shown {
    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Render for Shown {
    fn render_to(&self, buffer: &mut String) {
        self.0.as_str().render_to(buffer);
    }
}

/// Makes [`Shown`] text.
struct Clean<'a> {
    redactor: &'a Redactor,
}

impl Clean<'_> {
    fn text(&self, text: &str) -> Shown {
        Shown(self.redactor.redact(text).into_owned())
    }

    /// A log line: redacted whole, then cut to [`scan::LINE_BYTES`].
    fn line(&self, text: &str) -> Shown {
        let redacted = self.redactor.redact(text);
        Shown(scan::cut(redacted.trim_end(), scan::LINE_BYTES).to_owned())
    }

    /// At most `max` characters, with `…` when cut (for labels; tooltips say it whole).
    fn label(&self, text: &str, max: usize) -> Shown {
        let redacted = self.redactor.redact(text);
        if redacted.chars().count() <= max {
            return Shown(redacted.into_owned());
        }
        let mut cut: String = redacted.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        Shown(cut)
    }
}

// ---------------------------------------------------------------------------------------------
// Numbers and time.

/// A coordinate: one decimal at most.
fn px(value: f64) -> String {
    let rounded = (value * 10.0).round() / 10.0;
    if rounded.fract() == 0.0 {
        format!("{}", rounded as i64)
    } else {
        format!("{rounded:.1}")
    }
}

/// Seconds since the first record: `+12.345 s`.
fn offset(us: i64, t0: i64) -> String {
    format!("+{:.3} s", us.saturating_sub(t0) as f64 / 1e6)
}

/// `2026-01-02 03:04:05 UTC` for microseconds since the epoch.
pub fn utc(unix_us: i64) -> String {
    let secs = unix_us.div_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let rest = secs.rem_euclid(86_400);
    // Days to civil date (proleptic Gregorian), after H. Hinnant's `civil_from_days`.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The tick step, in seconds, for a span of `span_s` seconds: at most 10 ticks.
pub fn tick_step(span_s: f64) -> f64 {
    const STEPS: [f64; 17] = [
        0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0,
        3600.0, 7200.0,
    ];
    for step in STEPS {
        if span_s / step <= 10.0 {
            return step;
        }
    }
    // Whole hours beyond that.
    (span_s / 10.0 / 3600.0).ceil() * 3600.0
}

fn tick_label(seconds: f64, step: f64) -> String {
    if step < 1.0 {
        format!("{seconds:.1} s")
    } else {
        format!("{} s", seconds.round() as i64)
    }
}

/// Places labels (left x, estimated width) in lanes so that none overlaps another of its lane;
/// returns each label's lane. Labels past the last lane share it.
pub fn assign_lanes(labels: &[(f64, f64)], max_lanes: usize) -> Vec<usize> {
    let max_lanes = max_lanes.max(1);
    let mut ends: Vec<f64> = Vec::new();
    labels
        .iter()
        .map(|&(left, width)| {
            let lane = ends
                .iter()
                .position(|&end| left >= end + 4.0)
                .unwrap_or(ends.len())
                .min(max_lanes - 1);
            if lane == ends.len() {
                ends.push(left + width);
            } else {
                ends[lane] = ends[lane].max(left + width);
            }
            lane
        })
        .collect()
}

/// Row height and font size for `rows` rows: roomy for a demo, compact from 17 rows, small
/// from 49 (the SVG grows with the rows).
pub fn row_metrics(rows: usize) -> (f64, f64) {
    match rows {
        0..=16 => (24.0, 12.0),
        17..=48 => (16.0, 10.0),
        _ => (12.0, 9.0),
    }
}

// ---------------------------------------------------------------------------------------------
// The timeline's geometry.

/// The SVG's width (it scales down to the page).
pub const WIDTH: f64 = 1200.0;
/// The label column.
const GUTTER: f64 = 320.0;
/// Room right of the plot.
const RIGHT: f64 = 28.0;
/// A phase label lane.
const LANE: f64 = 15.0;
/// Space between role groups.
const GROUP_GAP: f64 = 6.0;
/// Phase label lanes at most.
const MAX_LANES: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RowKind {
    Rank,
    Step,
}

#[derive(Debug, Clone)]
struct Segment {
    x0: f64,
    x1: f64,
    /// Before readiness.
    early: bool,
}

#[derive(Debug, Clone)]
struct FailureMark {
    x: f64,
    label: Shown,
    title: Shown,
    anchor_end: bool,
}

#[derive(Debug, Clone)]
struct RowView {
    kind: RowKind,
    role: Shown,
    rank: Option<i64>,
    outcome: Outcome,
    y: f64,
    label: Shown,
    title: Shown,
    segments: Vec<Segment>,
    ready_x: Option<f64>,
    open_end: bool,
    failure: Option<FailureMark>,
}

#[derive(Debug, Clone)]
struct GroupView {
    role: Shown,
    label: Shown,
    y0: f64,
    y1: f64,
    rows: Vec<RowView>,
}

#[derive(Debug, Clone)]
struct PhaseView {
    name: Shown,
    x: f64,
    lane: usize,
    anchor_end: bool,
    title: Shown,
    alarm: bool,
}

#[derive(Debug, Clone)]
struct Timeline {
    height: f64,
    rows_y0: f64,
    rows_y1: f64,
    row_h: f64,
    font: f64,
    ticks: Vec<(f64, String)>,
    phases: Vec<PhaseView>,
    groups: Vec<GroupView>,
    rows: usize,
    start_utc: String,
    span_s: f64,
}

struct Axis {
    t0: i64,
    t1: i64,
}

impl Axis {
    fn x(&self, us: i64) -> f64 {
        let span = (self.t1 - self.t0).max(1) as f64;
        let at = (us.clamp(self.t0, self.t1) - self.t0) as f64;
        GUTTER + at / span * (WIDTH - GUTTER - RIGHT)
    }
}

/// The first and last time of any record.
fn bounds(job: &Job, phases: &[PhaseMark], verdict: Option<&VerdictRecord>) -> Option<(i64, i64)> {
    let mut times: Vec<i64> = Vec::new();
    for step in &job.steps {
        times.extend(step.started_unix_us);
        times.extend(step.ended.as_ref().and_then(|end| end.unix_us));
    }
    times.extend(phases.iter().map(|phase| phase.unix_us));
    for rank in &job.ranks {
        times.extend(
            [
                rank.started_unix_us,
                rank.ready_unix_us,
                rank.ended_unix_us,
                rank.last_progress_unix_us,
            ]
            .into_iter()
            .flatten(),
        );
    }
    times.extend(verdict.and_then(|record| record.unix_us));
    // A clock far off (0, or a corrupt value) would flatten every bar: keep plausible times.
    times.retain(|&us| us > 0);
    let t0 = *times.iter().min()?;
    let t1 = *times.iter().max()?;
    Some((t0, t1.max(t0 + 1_000_000)))
}

/// The group order: roles in `steps.jsonl` order, then roles known only from summaries.
fn role_order(job: &Job) -> Vec<&str> {
    let mut order: Vec<&str> = Vec::new();
    for role in job
        .steps
        .iter()
        .map(|step| step.role.as_str())
        .chain(job.ranks.iter().map(|rank| rank.role.as_str()))
    {
        if !order.contains(&role) {
            order.push(role);
        }
    }
    order
}

fn est_width(text: &str, font: f64) -> f64 {
    text.chars().count() as f64 * font * 0.6 + 6.0
}

fn timeline(inputs: &Inputs<'_>, clean: &Clean<'_>) -> Option<Timeline> {
    let job = inputs.job;
    let phases = verdict::job_phases(job);
    let (t0, t1) = bounds(job, &phases, inputs.verdict)?;
    let axis = Axis { t0, t1 };
    let stopping = mark(&phases, "stopping");
    let blamed = inputs.verdict.and_then(|record| record.blamed.as_ref());
    let blamed_text = blamed.map(|blamed| {
        let mut text = blamed.cause.clone().unwrap_or_else(|| "failed".into());
        if let Some(phase) = &blamed.phase {
            text.push_str(&format!(" while {phase}"));
        }
        text
    });

    // Phase labels first: their lanes decide where the rows begin.
    let phase_font = 11.0;
    let mut placed: Vec<(f64, f64, bool)> = Vec::new();
    for phase in &phases {
        let x = axis.x(phase.unix_us);
        let width = est_width(&phase.phase, phase_font);
        let anchor_end = x + width > WIDTH - 4.0;
        let left = if anchor_end { x - width } else { x };
        placed.push((left, width, anchor_end));
    }
    let lanes_of = assign_lanes(
        &placed
            .iter()
            .map(|&(left, width, _)| (left, width))
            .collect::<Vec<_>>(),
        MAX_LANES,
    );
    let lanes = lanes_of.iter().map(|lane| lane + 1).max().unwrap_or(0);
    let rows_y0 = 12.0 + lanes as f64 * LANE + 6.0;

    let order = role_order(job);
    let row_count: usize = order
        .iter()
        .map(|role| {
            let ranks = job.ranks.iter().filter(|rank| rank.role == *role).count();
            ranks.max(1)
        })
        .sum();
    let (row_h, font) = row_metrics(row_count);

    let mut groups: Vec<GroupView> = Vec::new();
    let mut y = rows_y0;
    for role in order {
        let step = job.steps.iter().find(|step| step.role == role);
        let mut ranks: Vec<&RankSummary> =
            job.ranks.iter().filter(|rank| rank.role == role).collect();
        ranks.sort_by_key(|rank| rank.rank);
        let step_end = step
            .and_then(|step| step.ended.as_ref())
            .and_then(|end| end.unix_us);
        let y0 = y;
        let mut rows = Vec::new();
        if ranks.is_empty() {
            let Some(step) = step else { continue };
            rows.push(step_row(
                step,
                stopping,
                &axis,
                y,
                blamed,
                blamed_text.as_deref(),
                clean,
            ));
            y += row_h;
        }
        for rank in ranks {
            rows.push(rank_row(
                rank,
                step.and_then(|step| step.started_unix_us),
                step_end,
                &axis,
                y,
                blamed,
                blamed_text.as_deref(),
                clean,
            ));
            y += row_h;
        }
        groups.push(GroupView {
            role: clean.text(role),
            label: clean.label(role, 18),
            y0,
            y1: y,
            rows,
        });
        y += GROUP_GAP;
    }
    let rows_y1 = (y - GROUP_GAP).max(rows_y0 + row_h);

    let phases_view = phases
        .iter()
        .zip(&placed)
        .zip(&lanes_of)
        .map(|((phase, &(_, _, anchor_end)), &lane)| PhaseView {
            name: clean.text(&phase.phase),
            x: axis.x(phase.unix_us),
            lane,
            anchor_end,
            title: clean.text(&format!(
                "{} at {} ({})",
                phase.phase,
                offset(phase.unix_us, t0),
                utc(phase.unix_us)
            )),
            alarm: matches!(phase.phase.as_str(), "stopping" | "verdict"),
        })
        .collect();

    let span_s = (t1 - t0) as f64 / 1e6;
    let step = tick_step(span_s);
    let mut ticks = Vec::new();
    let mut k = 0u32;
    loop {
        let seconds = f64::from(k) * step;
        if seconds > span_s + 1e-9 || k > 1000 {
            break;
        }
        let us = t0 + (seconds * 1e6).round() as i64;
        ticks.push((axis.x(us), tick_label(seconds, step)));
        k += 1;
    }

    Some(Timeline {
        height: rows_y1 + 44.0,
        rows_y0,
        rows_y1,
        row_h,
        font,
        ticks,
        phases: phases_view,
        groups,
        rows: row_count,
        start_utc: utc(t0),
        span_s,
    })
}

fn segments(
    axis: &Axis,
    start: i64,
    ready: Option<i64>,
    end: i64,
    never_ready: bool,
) -> Vec<Segment> {
    let x0 = axis.x(start);
    let x1 = axis.x(end).max(x0);
    match ready.filter(|&ready| ready >= start && ready <= end) {
        Some(ready) => vec![
            Segment {
                x0,
                x1: axis.x(ready),
                early: true,
            },
            Segment {
                x0: axis.x(ready),
                x1,
                early: false,
            },
        ],
        None => vec![Segment {
            x0,
            x1,
            early: never_ready,
        }],
    }
}

fn failure_mark(x: f64, label: &str, title: &str, clean: &Clean<'_>) -> FailureMark {
    let plot_mid = GUTTER + (WIDTH - GUTTER - RIGHT) / 2.0;
    FailureMark {
        x,
        label: clean.label(&format!("first failure: {label}"), 80),
        title: clean.text(&format!("first failure: {title}")),
        anchor_end: x > plot_mid,
    }
}

#[allow(clippy::too_many_arguments)]
fn rank_row(
    rank: &RankSummary,
    step_start: Option<i64>,
    step_end: Option<i64>,
    axis: &Axis,
    y: f64,
    blamed: Option<&super::model::BlamedRecord>,
    blamed_text: Option<&str>,
    clean: &Clean<'_>,
) -> RowView {
    let outcome = rank_outcome(rank);
    let start = rank.started_unix_us.or(step_start).unwrap_or(axis.t0);
    let (end, open_end, end_note) = match (rank.ended_unix_us, step_end) {
        (Some(end), _) => (end, false, None),
        (None, Some(end)) => (
            end,
            true,
            Some("no end in its summary; drawn to its step's end"),
        ),
        (None, None) => (
            axis.t1,
            true,
            Some("no end recorded; drawn to the last record"),
        ),
    };
    let never_ready = rank
        .deadline
        .as_ref()
        .is_some_and(|deadline| deadline.kind == "ready");
    let host = rank.node().unwrap_or("?");
    let label = format!("rank {} · {}", rank.rank, cut_chars(host, 14));

    let mut title = format!(
        "{} rank {} on {host}: {}",
        rank.role,
        rank.rank,
        outcome.describe()
    );
    let cause = (outcome != Outcome::Passed && outcome != Outcome::Running)
        .then(|| verdict::rank_cause(rank).text);
    if let Some(cause) = &cause {
        title.push_str(&format!(" ({cause})"));
    }
    title.push_str(&format!("\nstarted {}, ", offset(start, axis.t0)));
    match rank.ready_unix_us {
        Some(ready) => title.push_str(&format!("ready {}, ", offset(ready, axis.t0))),
        None => title.push_str("no ready time, "),
    }
    match end_note {
        None => title.push_str(&format!("ended {}", offset(end, axis.t0))),
        Some(note) => title.push_str(note),
    }
    if let Some(code) = rank.exit_code {
        title.push_str(&format!("; exit {code}"));
    }
    if let Some(phase) = &rank.end_phase {
        title.push_str(&format!("; ending began while {phase}"));
    }

    let is_first =
        blamed.is_some_and(|blamed| blamed.role == rank.role && blamed.rank == Some(rank.rank));
    let failure = is_first.then(|| {
        let text = blamed_text.unwrap_or_default();
        let full = format!("{} rank {} on {host}: {text}", rank.role, rank.rank);
        failure_mark(axis.x(end), text, &full, clean)
    });
    RowView {
        kind: RowKind::Rank,
        role: clean.text(&rank.role),
        rank: Some(rank.rank),
        outcome,
        y,
        label: clean.text(&label),
        title: clean.text(&title),
        segments: segments(axis, start, rank.ready_unix_us, end, never_ready),
        ready_x: rank
            .ready_unix_us
            .filter(|&ready| ready >= start && ready <= end)
            .map(|ready| axis.x(ready)),
        open_end,
        failure,
    }
}

#[allow(clippy::too_many_arguments)]
fn step_row(
    step: &RoleStep,
    stopping: Option<i64>,
    axis: &Axis,
    y: f64,
    blamed: Option<&super::model::BlamedRecord>,
    blamed_text: Option<&str>,
    clean: &Clean<'_>,
) -> RowView {
    let outcome = step_outcome(step, stopping);
    let end_at = step.ended.as_ref().and_then(|end| end.unix_us);
    let start = step.started_unix_us.or(end_at).unwrap_or(axis.t0);
    let end = end_at.unwrap_or(axis.t1);
    let mut title = format!(
        "{} (step, no rank summaries): {}",
        step.role,
        outcome.describe()
    );
    title.push_str(&format!("\nstarted {}, ", offset(start, axis.t0)));
    match &step.ended {
        Some(ended) => {
            title.push_str(&format!("ended {}", offset(end, axis.t0)));
            if let Some(code) = ended.code {
                title.push_str(&format!("; exit {code}"));
            }
            if let Some(note) = &ended.note {
                title.push_str(&format!("; {note}"));
            }
        }
        None => title.push_str("no end recorded; drawn to the last record"),
    }
    if let Some(log) = &step.log {
        title.push_str(&format!("; log {}", scan::basename(log)));
    }
    let kind = if step.role.contains("PRECHECK") {
        "precheck"
    } else if step.role.contains("INSTALL") {
        "install"
    } else {
        "step"
    };
    let failure = blamed.filter(|blamed| blamed.role == step.role).map(|_| {
        let text = blamed_text.unwrap_or_default();
        failure_mark(axis.x(end), text, &format!("{}: {text}", step.role), clean)
    });
    RowView {
        kind: RowKind::Step,
        role: clean.text(&step.role),
        rank: None,
        outcome,
        y,
        label: clean.text(kind),
        title: clean.text(&title),
        segments: segments(axis, start, None, end, false),
        ready_x: None,
        open_end: step.ended.is_none(),
        failure,
    }
}

impl RowView {
    fn class(&self) -> &'static str {
        match (self.kind, self.failure.is_some()) {
            (RowKind::Rank, false) => "rank",
            (RowKind::Rank, true) => "rank first-failure",
            (RowKind::Step, false) => "step",
            (RowKind::Step, true) => "step first-failure",
        }
    }
}

fn cut_chars(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

// ---------------------------------------------------------------------------------------------
// The page.

const CSS: &str = "\
:root{color-scheme:light}
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,'Helvetica Neue',Arial,sans-serif;\
margin:24px;color:#1d2430;background:#fff;font-size:14px}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:17px;margin:28px 0 10px;border-bottom:1px solid #d5d9de;padding-bottom:4px}
h3{font-size:14px;margin:16px 0 6px}
.badge{display:inline-block;padding:1px 10px;border-radius:4px;color:#fff;font-weight:700;\
margin-left:8px}
.badge.pass{background:#2e7d32}.badge.fail{background:#c62828}.badge.none{background:#6b7280}
.sub{color:#4b5563;margin:0 0 8px}
.line{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:#f3f4f6;\
padding:6px 10px;border-left:4px solid #6b7280;white-space:pre-wrap;word-break:break-word}
.line.fail{border-left-color:#c62828}.line.pass{border-left-color:#2e7d32}
table{border-collapse:collapse;margin:6px 0}
th,td{border:1px solid #d5d9de;padding:3px 9px;vertical-align:top}
th{background:#f1f3f5;text-align:left;font-weight:600}
table.plan td{text-align:right}table.plan td:first-child{text-align:left}
table.plan tr.total td{font-weight:700}
table.facts td{white-space:pre-wrap;word-break:break-word}
pre{background:#111827;color:#e5e7eb;padding:10px 12px;font-size:12px;line-height:1.4;\
white-space:pre-wrap;word-break:break-all;border-radius:4px;margin:4px 0}
.legend{list-style:none;padding:0;margin:4px 0 8px;display:flex;flex-wrap:wrap;gap:14px}
.legend li{display:flex;align-items:center;gap:6px}
.sw{display:inline-block;width:28px;height:10px;border-radius:2px}
.sw.passed{background:#2e9e4f}.sw.failed{background:#d62728}.sw.stopped{background:#7b8794}\
.sw.deadline{background:#e08a00}.sw.running{background:#3b7dd8}\
.sw.early{background:#c9ccd1}.sw.ff{background:#fff;border:2px solid #b00020;height:8px}
.note{color:#4b5563}
.timeline-wrap{overflow-x:auto}
svg.timeline{max-width:100%;height:auto;display:block}
svg .band{fill:#f3f5f8}
svg .grid{stroke:#e2e5e9;stroke-width:1}
svg .axis{stroke:#9aa1a9;stroke-width:1}
svg .tick,svg .caption{fill:#4b5563;font-size:11px}
svg .role-label{font-weight:700;fill:#1d2430}
svg .rank-label{fill:#4b5563}
svg .seg{stroke:none}
svg [data-outcome=passed] .seg{fill:#2e9e4f}svg [data-outcome=passed] .seg.early{fill:#a9dbb7}
svg [data-outcome=failed] .seg{fill:#d62728}svg [data-outcome=failed] .seg.early{fill:#f2a7a7}
svg [data-outcome=stopped] .seg{fill:#7b8794}svg [data-outcome=stopped] .seg.early{fill:#cdd3da}
svg [data-outcome=deadline] .seg{fill:#e08a00}
svg [data-outcome=deadline] .seg.early{fill:#f5cf8c}
svg [data-outcome=running] .seg{fill:#3b7dd8}svg [data-outcome=running] .seg.early{fill:#b3cdf2}
svg .seg.open{stroke:#1d2430;stroke-width:1;stroke-dasharray:3 2}
svg .ready-tick{stroke:#1d2430;stroke-width:1.5}
svg .phase-line{stroke:#6b7280;stroke-width:1;stroke-dasharray:4 3}
svg .phase-line.alarm{stroke:#b00020}
svg .phase-label{fill:#374151;font-size:11px}
svg .phase-label.alarm{fill:#b00020}
svg .ff-outline{fill:rgba(176,0,32,0.07);stroke:#b00020;stroke-width:2}
svg .ff-marker{fill:#b00020;stroke:#fff;stroke-width:1.5}
svg .ff-label{fill:#b00020;font-weight:700;paint-order:stroke;stroke:#fff;stroke-width:3px;\
stroke-linejoin:round}
";

/// The page for `inputs`; every string from the job passes `redactor`.
pub fn render(inputs: &Inputs<'_>, redactor: &Redactor) -> String {
    let clean = Clean { redactor };
    let job = inputs.job;
    let record = inputs.verdict;
    let empty =
        job.steps.is_empty() && job.phases.is_empty() && job.ranks.is_empty() && record.is_none();
    let id = record
        .and_then(|record| record.job_id.as_deref())
        .unwrap_or(job.dir_name.as_str());
    let id = clean.text(id);
    let dir = clean.text(&job.dir_name);
    let status = record.and_then(VerdictRecord::passed);
    let (badge_class, badge) = match status {
        Some(true) => ("badge pass", "PASS"),
        Some(false) => ("badge fail", "FAIL"),
        None => ("badge none", "NO VERDICT"),
    };
    let timeline = timeline(inputs, &clean);
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "launch-gen report: job " (id) " " (badge) }
                style { (PreEscaped(CSS)) }
            }
            body {
                header {
                    h1 { "Job " (id) span class=(badge_class) data-verdict=(badge) { (badge) } }
                    p class="sub" {
                        "workspace " code { (dir) }
                        @if let Some(timeline) = &timeline {
                            " · first record " (timeline.start_utc)
                            " · " (format!("{:.1}", timeline.span_s)) " s of records"
                        }
                        " · report made " (utc(inputs.now_us))
                    }
                }
                @if empty {
                    p class="note" id="no-records" {
                        "This workspace has no records: no steps.jsonl, phases.jsonl, rank \
                         summaries (ranks/) or verdict.json. The job has not started here, or \
                         this is not a job workspace."
                    }
                }
                section id="timeline" {
                    h2 { "Timeline" }
                    @match &timeline {
                        Some(timeline) => {
                            (legend())
                            div class="timeline-wrap" { (timeline_svg(timeline)) }
                        }
                        None => p class="note" { "No timed records: nothing to draw." }
                    }
                }
                section id="verdict" {
                    h2 { "Verdict" }
                    (verdict_section(record, &clean))
                }
                section id="plan" {
                    h2 { "Resource plan" }
                    (plan_section(inputs.plan, &clean))
                }
                section id="logs" {
                    h2 { "Failed roles' logs" }
                    (logs_section(inputs.logs, &clean))
                }
                @if !inputs.notes.is_empty() {
                    section id="records" {
                        h2 { "Records left out" }
                        ul {
                            @for note in inputs.notes {
                                li { code { (clean.line(note)) } }
                            }
                        }
                    }
                }
            }
        }
    };
    let mut text = page.into_string();
    text.push('\n');
    text
}

fn legend() -> Markup {
    let outcomes = [
        Outcome::Passed,
        Outcome::Failed,
        Outcome::Stopped,
        Outcome::Deadline,
        Outcome::Running,
    ];
    html! {
        ul class="legend" {
            @for outcome in outcomes {
                li { span class=(format!("sw {}", outcome.as_str())) {} (outcome.describe()) }
            }
            li { span class="sw early" {} "lighter: before ready" }
            li { span class="sw ff" {} "first failure" }
        }
    }
}

fn timeline_svg(tl: &Timeline) -> Markup {
    let view_box = format!("0 0 {} {}", px(WIDTH), px(tl.height));
    let label_y = |lane: usize| 12.0 + lane as f64 * LANE + 10.0;
    let bar_h = (tl.row_h * 0.58).round();
    let plot_right = WIDTH - RIGHT;
    html! {
        svg class="timeline" role="img" viewBox=(view_box) width=(px(WIDTH)) height=(px(tl.height))
            data-rows=(tl.rows) {
            title { "Timeline of every rank: one row per rank, the job's phases as dashed lines" }
            @for (index, group) in tl.groups.iter().enumerate() {
                @if index % 2 == 1 {
                    rect class="band" x="0" y=(px(group.y0 - GROUP_GAP / 2.0)) width=(px(WIDTH))
                        height=(px(group.y1 - group.y0 + GROUP_GAP)) {}
                }
            }
            @for (x, _) in &tl.ticks {
                line class="grid" x1=(px(*x)) x2=(px(*x)) y1=(px(tl.rows_y0 - 4.0))
                    y2=(px(tl.rows_y1 + 4.0)) {}
            }
            line class="axis" x1=(px(GUTTER)) x2=(px(plot_right)) y1=(px(tl.rows_y1 + 4.0))
                y2=(px(tl.rows_y1 + 4.0)) {}
            @for (x, label) in &tl.ticks {
                text class="tick" x=(px(*x)) y=(px(tl.rows_y1 + 18.0)) text-anchor="middle" {
                    (label)
                }
            }
            text class="caption" x=(px(plot_right)) y=(px(tl.rows_y1 + 34.0)) text-anchor="end" {
                "seconds since the first record"
            }
            @for phase in &tl.phases {
                line class=(if phase.alarm { "phase-line alarm" } else { "phase-line" })
                    x1=(px(phase.x)) x2=(px(phase.x)) y1=(px(label_y(phase.lane) + 3.0))
                    y2=(px(tl.rows_y1 + 4.0)) {}
            }
            @for group in &tl.groups {
                g class="role" data-role=(group.role) {
                    @if let Some(first) = group.rows.first() {
                        text class="role-label" x="10" y=(px(first.y + tl.row_h / 2.0))
                            dominant-baseline="central" font-size=(px(tl.font + 1.0)) {
                            (group.label)
                        }
                    }
                    @for row in &group.rows {
                        (row_svg(row, tl, bar_h))
                    }
                }
            }
            @for phase in &tl.phases {
                g class="phase" data-phase=(phase.name) {
                    title { (phase.title) }
                    text class=(if phase.alarm { "phase-label alarm" } else { "phase-label" })
                        x=(px(if phase.anchor_end { phase.x - 3.0 } else { phase.x + 3.0 }))
                        y=(px(label_y(phase.lane)))
                        text-anchor=(if phase.anchor_end { "end" } else { "start" }) {
                        (phase.name)
                    }
                }
            }
            line class="axis" x1=(px(GUTTER)) x2=(px(GUTTER)) y1=(px(tl.rows_y0 - 4.0))
                y2=(px(tl.rows_y1 + 4.0)) {}
        }
    }
}

fn row_svg(row: &RowView, tl: &Timeline, bar_h: f64) -> Markup {
    let mid = row.y + tl.row_h / 2.0;
    let bar_y = mid - bar_h / 2.0;
    let last = row.segments.len().saturating_sub(1);
    html! {
        g class=(row.class()) data-role=(row.role) data-rank=[row.rank]
            data-outcome=(row.outcome.as_str()) {
            title { (row.title) }
            @if row.failure.is_some() {
                rect class="ff-outline" x="3" y=(px(row.y + 0.5)) width=(px(WIDTH - 6.0))
                    height=(px(tl.row_h - 1.0)) rx="3" {}
            }
            text class="rank-label" x=(px(GUTTER - 10.0)) y=(px(mid)) text-anchor="end"
                dominant-baseline="central" font-size=(px(tl.font)) {
                (row.label)
            }
            @for (index, segment) in row.segments.iter().enumerate() {
                rect class=(segment_class(segment.early, row.open_end && index == last))
                    x=(px(segment.x0)) y=(px(bar_y))
                    width=(px((segment.x1 - segment.x0).max(1.5))) height=(px(bar_h)) rx="2" {}
            }
            @if let Some(x) = row.ready_x {
                line class="ready-tick" x1=(px(x)) x2=(px(x)) y1=(px(bar_y - 2.0))
                    y2=(px(bar_y + bar_h + 2.0)) {}
            }
            @if let Some(failure) = &row.failure {
                @let size = (tl.row_h * 0.42).max(5.0);
                polygon class="ff-marker" points=(diamond(failure.x, mid, size)) {
                    title { (failure.title) }
                }
                text class="ff-label"
                    x=(px(if failure.anchor_end { failure.x - size - 4.0 } else { failure.x + size + 4.0 }))
                    y=(px(mid)) dominant-baseline="central"
                    text-anchor=(if failure.anchor_end { "end" } else { "start" })
                    font-size=(px(tl.font)) {
                    (failure.label)
                }
            }
        }
    }
}

fn segment_class(early: bool, open: bool) -> &'static str {
    match (early, open) {
        (false, false) => "seg",
        (true, false) => "seg early",
        (false, true) => "seg open",
        (true, true) => "seg early open",
    }
}

fn diamond(x: f64, y: f64, size: f64) -> String {
    format!(
        "{},{} {},{} {},{} {},{}",
        px(x),
        px(y - size),
        px(x + size),
        px(y),
        px(x),
        px(y + size),
        px(x - size),
        px(y)
    )
}

fn verdict_section(record: Option<&VerdictRecord>, clean: &Clean<'_>) -> Markup {
    let Some(record) = record else {
        return html! {
            p class="note" {
                "No verdict.json in the workspace: the job has not reached its verdict yet, or "
                code { "launch-gen verdict" } " could not write it."
            }
        };
    };
    let line_class = match record.passed() {
        Some(true) => "line pass",
        Some(false) => "line fail",
        None => "line",
    };
    let mut facts: Vec<(&'static str, Shown)> = Vec::new();
    if let Some(code) = record.code {
        facts.push(("exit code of the job", clean.text(&code.to_string())));
    }
    if let Some(blamed) = &record.blamed {
        facts.push(("blamed role", clean.text(&blamed.role)));
        if let Some(rank) = blamed.rank {
            facts.push(("rank", clean.text(&rank.to_string())));
        }
        let optional: [(&'static str, Option<String>); 9] = [
            ("host", blamed.host.clone()),
            ("cause", blamed.cause.clone()),
            ("phase", blamed.phase.clone()),
            ("signal", blamed.signal.clone()),
            ("exit code", blamed.exit_code.map(|code| code.to_string())),
            (
                "noticed by",
                blamed
                    .noticed_by
                    .as_ref()
                    .map(|by| match &blamed.noticed_cause {
                        Some(cause) => format!("{by}: {cause}"),
                        None => by.clone(),
                    }),
            ),
            ("router's line", blamed.router_line.clone()),
            ("log", blamed.log.clone()),
            ("the script saw", blamed.fail_detail.clone()),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                facts.push((name, clean.line(&value)));
            }
        }
        if let Some(found) = &blamed.first_error {
            let file = found.file.as_deref().map(scan::basename).unwrap_or("log");
            let at = found
                .line
                .map(|line| format!(":{line}"))
                .unwrap_or_default();
            let text = found.text.as_deref().unwrap_or("");
            facts.push((
                "first error line",
                clean.line(&format!("{file}{at}: {text}")),
            ));
        }
    }
    html! {
        @match &record.line {
            Some(line) => p class=(line_class) id="verdict-line" { (clean.line(line)) },
            None => p class="note" { "verdict.json has no verdict line." },
        }
        @if record.blamed.is_none() && record.passed() == Some(true) {
            p { "Every role passed; nothing is blamed." }
        }
        @if !facts.is_empty() {
            table class="facts" {
                @for (name, value) in &facts {
                    tr { th { (*name) } td { (value) } }
                }
            }
        }
    }
}

fn plan_section(plan: Option<&PlanTable>, clean: &Clean<'_>) -> Markup {
    let Some(plan) = plan else {
        return html! {
            p class="note" id="plan-unknown" {
                "The plan is not known: run " code { "launch-gen report" } " with "
                code { "--config CONFIG.yaml" } " to show it."
            }
        };
    };
    let last = plan.rows.len().saturating_sub(1);
    html! {
        p {
            "Plan for " code { (clean.text(&plan.name)) } " (mode " code { (clean.text(&plan.mode)) }
            ", " (plan.gpus_per_node) " GPUs per node), as " code { "--explain" } " shows it."
        }
        table class="plan" {
            tr { @for name in PLAN_HEADER { th { (name) } } }
            @for (index, row) in plan.rows.iter().enumerate() {
                tr class=[(index == last).then_some("total")] {
                    @for cell in row { td { (clean.text(cell)) } }
                }
            }
        }
        @if plan.gen_only {
            p { "Mode " code { (clean.text(&plan.mode)) } " runs no context servers." }
        }
        p {
            "GPUs: " (plan.gpus_allocated) " allocated (" (plan.nodes) " nodes x "
            (plan.gpus_per_node) "), " (plan.gpus_used) " used by servers."
        }
    }
}

fn logs_section(logs: &[RoleLog], clean: &Clean<'_>) -> Markup {
    if logs.is_empty() {
        return html! { p class="note" { "No role failed." } };
    }
    html! {
        @for log in logs {
            div class="role-log" data-role=(clean.text(&log.role)) {
                h3 {
                    (clean.text(&log.role))
                    @if let Some(path) = &log.log { " · " code { (clean.line(path)) } }
                }
                @match (&log.log, &log.facts) {
                    (None, _) => p class="note" { "No log is known for this role." },
                    (Some(_), None) => p class="note" { "The log was not read." },
                    (Some(path), Some(facts)) => {
                        @match &facts.tail {
                            Err(reason) => p class="note" {
                                "Cannot read " code { (clean.line(path)) } ": " (clean.text(reason))
                            },
                            Ok(lines) if lines.is_empty() => p class="note" { "The log is empty." },
                            Ok(lines) => {
                                p class="note" { "Its last " (lines.len()) " lines:" }
                                pre { @for line in lines { (clean.line(line)) "\n" } }
                            }
                        }
                        @if facts.tail.is_ok() {
                            @match &facts.first_error {
                                Some(found) => p {
                                    "First error line (line " (found.number) "): "
                                    code { (clean.line(&found.text)) }
                                },
                                None => p class="note" { "No error-looking line in it." },
                            }
                        }
                    }
                }
            }
        }
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

/// Reads and plans `--config`; the error names the file and what is wrong.
fn read_plan(path: &Path) -> anyhow::Result<PlanTable> {
    use anyhow::Context as _;
    let shown = path.display().to_string();
    let text = io::read_text(path, CONFIG_LIMIT).map_err(|error| {
        anyhow::anyhow!("`--config {shown}`: cannot read: {}", io::reason(&error))
    })?;
    let config = LaunchConfig::from_yaml(&text).with_context(|| format!("`--config {shown}`"))?;
    let plan = Plan::new(&config).with_context(|| format!("`--config {shown}`"))?;
    Ok(plan_table(&config, &plan, &shown))
}

/// What a report is made of, as read from a workspace.
#[derive(Debug, Clone)]
pub struct Gathered {
    /// The records.
    pub job: Job,
    /// `verdict.json`.
    pub verdict: Option<VerdictRecord>,
    /// The failed roles' logs.
    pub logs: Vec<RoleLog>,
    /// One note per record file with skipped parts.
    pub notes: Vec<String>,
}

impl Gathered {
    /// The inputs of [`render`].
    pub fn inputs<'a>(&'a self, plan: Option<&'a PlanTable>, now_us: i64) -> Inputs<'a> {
        Inputs {
            job: &self.job,
            verdict: self.verdict.as_ref(),
            logs: &self.logs,
            plan,
            notes: &self.notes,
            now_us,
        }
    }
}

/// Reads the workspace `dir` (through [`io`], which tolerates missing and half-written
/// records): the records, `verdict.json`, the failed roles' logs (found in `dir` by file
/// name when the recorded path is elsewhere, as in a copied workspace).
pub fn gather(dir: &Path) -> Gathered {
    let (job, mut notes) = io::read_job(dir);
    let verdict = io::read_verdict(dir, &mut notes);
    let logs = failed_roles(&job, verdict.as_ref())
        .into_iter()
        .map(|role| {
            let log = role_log(&job, verdict.as_ref(), &role).map(str::to_owned);
            let facts = log
                .as_deref()
                .map(|log| io::log_facts(&io::workspace_log(dir, log)));
            RoleLog { role, log, facts }
        })
        .collect();
    Gathered {
        job,
        verdict,
        logs,
        notes,
    }
}

/// Runs `launch-gen report`.
pub fn run(args: &ReportArgs) -> i32 {
    let redactor = process_redactor();
    if let Err(error) = io::check_dir(&args.dir) {
        eprintln!("error: {}", redactor.redact(&error.to_string()));
        return EXIT_INPUT;
    }
    let plan = match args.config.as_deref().map(read_plan).transpose() {
        Ok(plan) => plan,
        Err(error) => {
            eprintln!("error: {}", redactor.redact(&format!("{error:#}")));
            return EXIT_INPUT;
        }
    };
    let gathered = gather(&args.dir);
    for note in &gathered.notes {
        eprintln!("{}", redactor.redact(note));
    }
    let inputs = gathered.inputs(plan.as_ref(), io::now_us());
    let page = render(&inputs, &redactor);
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| args.dir.join("report.html"));
    match io::write_atomically(&output, &page) {
        Ok(()) => {
            eprintln!(
                "launch-gen: report written to {}",
                redactor.redact(&output.display().to_string())
            );
            0
        }
        Err(error) => {
            eprintln!("launch-gen: {}", redactor.redact(&error.to_string()));
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400_000_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_767_323_045_123_456), "2026-01-02 03:04:05 UTC");
        assert_eq!(utc(-1_000_000), "1969-12-31 23:59:59 UTC");
    }

    #[test]
    fn tick_steps_give_at_most_ten_ticks() {
        let cases: &[(f64, f64)] = &[
            (0.5, 0.1),
            (1.0, 0.1),
            (3.0, 0.5),
            (9.5, 1.0),
            (42.0, 5.0),
            (100.0, 10.0),
            (600.0, 60.0),
            (3000.0, 300.0),
            (36_000.0, 3600.0),
            (200_000.0, 21_600.0),
        ];
        for &(span, want) in cases {
            assert_eq!(tick_step(span), want, "{span}");
            assert!(span / tick_step(span) <= 10.0);
        }
        assert_eq!(tick_label(2.0, 0.5), "2.0 s");
        assert_eq!(tick_label(30.0, 10.0), "30 s");
    }

    #[test]
    fn lanes_keep_labels_apart() {
        // Three labels close together, a fourth far right, a fifth over the first two.
        let labels = [
            (0.0, 50.0),
            (10.0, 50.0),
            (20.0, 50.0),
            (200.0, 50.0),
            (60.0, 10.0),
        ];
        assert_eq!(assign_lanes(&labels, 5), [0, 1, 2, 0, 3]);
        assert_eq!(assign_lanes(&labels, 2), [0, 1, 1, 0, 1]);
        assert_eq!(assign_lanes(&[], 3), Vec::<usize>::new());
    }

    #[test]
    fn rows_shrink_for_many_ranks() {
        assert_eq!(row_metrics(6), (24.0, 12.0));
        assert_eq!(row_metrics(32), (16.0, 10.0));
        assert_eq!(row_metrics(64), (12.0, 9.0));
        assert_eq!(row_metrics(1000), (12.0, 9.0));
    }

    #[test]
    fn coordinates_are_short() {
        assert_eq!(px(12.0), "12");
        assert_eq!(px(12.04), "12");
        assert_eq!(px(12.25), "12.3");
        assert_eq!(px(-0.5), "-0.5");
    }

    #[test]
    fn outcomes() {
        let base = RankSummary {
            role: "GEN_0".into(),
            ..RankSummary::default()
        };
        let cases = [
            (RankSummary { ..base.clone() }, Outcome::Running),
            (
                RankSummary {
                    exit_code: Some(0),
                    ..base.clone()
                },
                Outcome::Passed,
            ),
            (
                RankSummary {
                    exit_code: Some(134),
                    child_signal: Some(6),
                    ..base.clone()
                },
                Outcome::Failed,
            ),
            (
                RankSummary {
                    exit_code: Some(143),
                    terminated_by: Some("SIGTERM".into()),
                    ..base.clone()
                },
                Outcome::Stopped,
            ),
            (
                RankSummary {
                    exit_code: Some(75),
                    deadline: Some(super::super::model::Deadline {
                        kind: "ready".into(),
                        probe: None,
                        timeout_s: Some(5.0),
                        waited_s: None,
                    }),
                    ..base.clone()
                },
                Outcome::Deadline,
            ),
        ];
        for (rank, want) in cases {
            assert_eq!(rank_outcome(&rank), want, "{rank:?}");
        }
    }

    #[test]
    fn labels_are_cut_and_marked() {
        let redactor = Redactor::default();
        let clean = Clean {
            redactor: &redactor,
        };
        assert_eq!(clean.label("GEN_0", 18).as_str(), "GEN_0");
        assert_eq!(clean.label("abcdefghij", 5).as_str(), "abcd…");
        assert_eq!(cut_chars("héllo", 3), "hé…");
    }
}
