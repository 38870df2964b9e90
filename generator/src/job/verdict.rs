//! The verdict: who failed, which rank, why, in which phase of the job; and how every role
//! ended. Pure: the parsed records in, a [`Decision`] out.
//!
//! The launch script's own conclusion (`--fail-role`, `--fail-detail`) is refined, never
//! overturned without evidence:
//!
//! 1. a client (`BENCHMARK`, `DISAGG_SERVER`) that failed because a server did not answer is
//!    only the one who noticed: when the router's log names a server that has not answered,
//!    that server is blamed ([`Decision::blamed`]`.noticed_by` keeps the client);
//! 2. the blamed role's first failed rank ([`first_failed_rank`]) and its cause
//!    ([`rank_cause`]) come from rank-launch's summaries;
//! 3. the phase is the job's phase when the rank failed ([`phase_at`]).

use super::model::{Deadline, PhaseMark, RankSummary, RoleStep};
use super::redact::Redactor;
use super::scan::{self, Unanswered};

/// The router's role.
pub const ROUTER: &str = "DISAGG_SERVER";
/// The benchmark client's role.
pub const BENCHMARK: &str = "BENCHMARK";

/// Everything read from the job workspace.
#[derive(Debug, Clone, Default)]
pub struct Job {
    /// The workspace's directory name (the JUnit suite's name without a job id).
    pub dir_name: String,
    /// The roles' steps, in start order.
    pub steps: Vec<RoleStep>,
    /// `phases.jsonl`, in file order.
    pub phases: Vec<PhaseMark>,
    /// Every rank summary that parsed.
    pub ranks: Vec<RankSummary>,
}

/// The script's conclusion that the job failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fail {
    /// The role the script blamed (`CTX_0`, `BENCHMARK`, `SETUP`).
    pub role: String,
    /// What it saw (`exit 75`, `still running 120 s after BENCHMARK passed`).
    pub detail: String,
}

/// What the script asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `None`: the job passed.
    pub fail: Option<Fail>,
    /// The exit code the script will exit with.
    pub code: i32,
    /// The Slurm job id, when known.
    pub job_id: Option<String>,
    /// Now.
    pub now_us: i64,
}

/// What kind of cause a failure has (the JUnit failure's `type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CauseKind {
    /// Not ready within the ready deadline.
    Ready,
    /// No progress within the stall deadline.
    Stall,
    /// Another deadline kind, as named.
    Deadline(String),
    /// rank-launch was stopped from outside by this signal.
    Terminated(String),
    /// The main child was killed by this signal.
    Signal(String),
    /// An exit code.
    Exit,
    /// The router saw the server not answering.
    NotAnswered,
    /// Only the script's detail is known.
    Detail,
}

impl CauseKind {
    /// The JUnit failure type.
    pub fn type_name(&self) -> String {
        match self {
            Self::Ready => "ready".into(),
            Self::Stall => "stall".into(),
            Self::Deadline(kind) => kind.clone(),
            Self::Terminated(_) => "terminated".into(),
            Self::Signal(name) => name.clone(),
            Self::Exit | Self::Detail => "exit".into(),
            Self::NotAnswered => "not-answered".into(),
        }
    }
}

/// Why something failed, as the verdict line says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// `killed by SIGABRT`, `not ready after 600 s`, ...
    pub text: String,
    /// Its kind.
    pub kind: CauseKind,
}

/// Seconds as written in a verdict: `600`, `1.5`.
pub fn seconds(value: f64) -> String {
    if value.is_finite() && value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

fn deadline_cause(deadline: &Deadline) -> Cause {
    let after = deadline.timeout_s.or(deadline.waited_s).map(seconds);
    match deadline.kind.as_str() {
        "ready" => Cause {
            text: match after {
                Some(after) => format!("not ready after {after} s"),
                None => "not ready in time".into(),
            },
            kind: CauseKind::Ready,
        },
        "stall" => {
            let mut text = match after {
                Some(after) => format!("no progress for {after} s"),
                None => "no progress in time".into(),
            };
            if deadline.probe.as_deref() == Some("stopped") {
                text.push_str(" (process stopped)");
            }
            Cause {
                text,
                kind: CauseKind::Stall,
            }
        }
        other => {
            let kind = if other.is_empty() { "deadline" } else { other };
            Cause {
                text: match after {
                    Some(after) => format!("{kind} deadline after {after} s"),
                    None => format!("{kind} deadline"),
                },
                kind: CauseKind::Deadline(kind.to_owned()),
            }
        }
    }
}

/// The cause of a rank's failure: its deadline, else the signal that stopped rank-launch from
/// outside, else the signal that killed its main child, else its exit code; plus rank-launch's
/// `reason` when that says more.
pub fn rank_cause(rank: &RankSummary) -> Cause {
    let mut cause = if let Some(deadline) = &rank.deadline {
        deadline_cause(deadline)
    } else if let Some(signal) = &rank.terminated_by {
        Cause {
            text: format!("terminated by {signal}"),
            kind: CauseKind::Terminated(signal.clone()),
        }
    } else if let Some(signal) = rank.child_signal {
        let name = scan::signal_name(signal);
        Cause {
            text: format!("killed by {name}"),
            kind: CauseKind::Signal(name),
        }
    } else {
        // The child's code, unless it exited 0 and rank-launch's own code says otherwise.
        let code = rank
            .child_exit_code
            .filter(|&code| code != 0)
            .or(rank.exit_code)
            .or(rank.child_exit_code);
        Cause {
            text: match code {
                Some(code) => format!("exit {code}"),
                None => "no exit code".into(),
            },
            kind: CauseKind::Exit,
        }
    };
    if let Some(reason) = rank.reason.as_deref().map(str::trim) {
        if says_more(&cause, reason) {
            cause.text = format!("{} ({reason})", cause.text);
        }
    }
    cause
}

/// Whether rank-launch's `reason` adds to `cause`: not empty, not already in it, and for a
/// deadline not just the deadline again (`no progress within --stall-timeout`).
fn says_more(cause: &Cause, reason: &str) -> bool {
    let reason = reason.to_lowercase();
    if reason.is_empty() || cause.text.to_lowercase().contains(&reason) {
        return false;
    }
    let deadline = matches!(
        cause.kind,
        CauseKind::Ready | CauseKind::Stall | CauseKind::Deadline(_)
    );
    let about_deadline = ["ready", "progress", "stall", "timeout", "deadline"]
        .iter()
        .any(|word| reason.contains(word));
    !(deadline && about_deadline)
}

/// The first failed rank of `role`: ranks that ended non-zero, those that failed on their own
/// (not stopped from outside) first, then by end time, then by rank; failing that, a rank
/// whose deadline fired but that has not ended yet.
pub fn first_failed_rank<'a>(ranks: &'a [RankSummary], role: &str) -> Option<&'a RankSummary> {
    let of_role = || ranks.iter().filter(move |rank| rank.role == role);
    of_role()
        .filter(|rank| rank.failed())
        .min_by_key(|rank| {
            (
                rank.terminated_by.is_some(),
                rank.ended_unix_us.unwrap_or(i64::MAX),
                rank.rank,
            )
        })
        .or_else(|| {
            of_role()
                .filter(|rank| rank.exit_code.is_none() && rank.deadline.is_some())
                .min_by_key(|rank| (rank.ended_unix_us.unwrap_or(i64::MAX), rank.rank))
        })
}

fn mark(phases: &[PhaseMark], name: &str) -> Option<i64> {
    phases
        .iter()
        .find(|mark| mark.phase == name)
        .map(|mark| mark.unix_us)
}

fn before_ready(phases: &[PhaseMark], at: i64) -> &'static str {
    if mark(phases, "install_done").is_some_and(|done| at < done) {
        "installing"
    } else if mark(phases, "prechecks_done").is_some_and(|done| at < done) {
        "prechecking"
    } else {
        "starting"
    }
}

/// The job's phase at time `at`: `stopping` after the `stopping` mark, `draining` after
/// `drain` (or `benchmark_ended`), `serving` after `servers_ready`, before it `starting`
/// (`installing`, `prechecking` before those marks). Without a `servers_ready` mark (or a
/// time), the rank's own phase (`rank_phase`: its `end_phase`) decides.
pub fn phase_at(phases: &[PhaseMark], at: Option<i64>, rank_phase: Option<&str>) -> String {
    if let Some(at) = at {
        let reached = |name| mark(phases, name).is_some_and(|time| at >= time);
        if reached("stopping") {
            return "stopping".into();
        }
        if reached("drain") {
            return "draining".into();
        }
        if let Some(ready) = mark(phases, "servers_ready") {
            let phase = if at < ready {
                before_ready(phases, at)
            } else if reached("benchmark_ended") {
                "draining"
            } else {
                "serving"
            };
            return phase.into();
        }
    }
    match rank_phase {
        Some("install") => "installing".into(),
        Some(phase) if !phase.is_empty() && phase != "ended" => phase.to_owned(),
        _ => at.map_or("starting", |at| before_ready(phases, at)).into(),
    }
}

/// A role that serves requests: `GEN_<i>`, `CTX_<i>`, the router.
pub fn is_server_role(role: &str) -> bool {
    if role == ROUTER {
        return true;
    }
    ["GEN_", "CTX_"].iter().any(|prefix| {
        role.strip_prefix(prefix)
            .is_some_and(|index| !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// `phases.jsonl` plus, when it lacks `servers_ready`, that mark from the summaries: the
/// latest ready time of the server roles' rank 0, when every one has one.
pub fn job_phases(job: &Job) -> Vec<PhaseMark> {
    let mut phases = job.phases.clone();
    if mark(&phases, "servers_ready").is_some() {
        return phases;
    }
    let mut roles: Vec<&str> = job
        .steps
        .iter()
        .map(|step| step.role.as_str())
        .chain(job.ranks.iter().map(|rank| rank.role.as_str()))
        .filter(|role| is_server_role(role))
        .collect();
    roles.sort_unstable();
    roles.dedup();
    let ready: Option<Vec<i64>> = roles
        .iter()
        .map(|role| {
            job.ranks
                .iter()
                .find(|rank| rank.role == *role && rank.rank == 0)
                .and_then(|rank| rank.ready_unix_us)
        })
        .collect();
    if let Some(latest) = ready.and_then(|times| times.into_iter().max()) {
        let at = phases
            .iter()
            .position(|mark| mark.unix_us > latest)
            .unwrap_or(phases.len());
        phases.insert(
            at,
            PhaseMark {
                phase: "servers_ready".into(),
                unix_us: latest,
            },
        );
    }
    phases
}

/// How a role ended, for the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleOutcome {
    /// Its step ended 0.
    Passed,
    /// Its step ended non-zero on its own, or it is the blamed role.
    Failed,
    /// Ended (or was killed) after the job began stopping, or was stopped from outside.
    Stopped,
    /// No end yet and no stop.
    Running,
}

impl RoleOutcome {
    /// As written in `verdict.json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Passed => "passed",
            Self::Failed => "failed",
            Self::Stopped => "stopped",
            Self::Running => "running",
        }
    }
}

/// One role in the report.
#[derive(Debug, Clone, PartialEq)]
pub struct RoleReport {
    /// The role.
    pub role: String,
    /// How it ended.
    pub outcome: RoleOutcome,
    /// Its step's exit status.
    pub code: Option<i64>,
    /// The ended line's note.
    pub note: Option<String>,
    /// Its log.
    pub log: Option<String>,
    /// Step start.
    pub started_unix_us: Option<i64>,
    /// Step end.
    pub ended_unix_us: Option<i64>,
    /// Its ranks' summaries, by rank.
    pub ranks: Vec<RankSummary>,
    /// Why it failed (failed roles only).
    pub cause: Option<Cause>,
    /// From start to end (or now), in seconds.
    pub seconds: f64,
    /// Not in `steps.jsonl`: the blamed role of a failure outside every step (`SETUP`).
    pub stepless: bool,
}

/// The blamed failure.
#[derive(Debug, Clone, PartialEq)]
pub struct Blamed {
    /// The role blamed.
    pub role: String,
    /// Its first failed rank (or the serving rank of a server that did not answer).
    pub rank: Option<RankSummary>,
    /// The cause.
    pub cause: Cause,
    /// The job's phase then (with a rank only).
    pub phase: Option<String>,
    /// The role's log.
    pub log: Option<String>,
    /// The router's line about the server not answering (redacted, cut), when that is the
    /// cause.
    pub router_line: Option<String>,
    /// The client that noticed, when the blame moved to a server.
    pub noticed_by: Option<String>,
    /// What that client saw (`no progress for 15 s`).
    pub noticed_cause: Option<String>,
    /// The script's detail.
    pub fail_detail: String,
}

/// The verdict and everything reported with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// PASS or FAIL.
    pub passed: bool,
    /// `verdict: ...`.
    pub line: String,
    /// The exit code (never 0 for a failure).
    pub code: i32,
    /// The Slurm job id.
    pub job_id: Option<String>,
    /// The JUnit suite's name.
    pub suite: String,
    /// When the verdict was made.
    pub now_us: i64,
    /// The blamed failure.
    pub blamed: Option<Blamed>,
    /// Every role: steps in start order, a stepless blamed role first.
    pub roles: Vec<RoleReport>,
    /// The job's phases.
    pub phases: Vec<PhaseMark>,
    /// Roles whose logs to show, the blamed one first.
    pub evidence: Vec<String>,
}

impl Decision {
    /// The role report of `role`.
    pub fn role(&self, role: &str) -> Option<&RoleReport> {
        self.roles.iter().find(|report| report.role == role)
    }
}

/// When attribution applies: the router's log, to be scanned for servers that did not answer.
pub fn attribution_log<'a>(job: &'a Job, request: &Request) -> Option<&'a str> {
    let fail = request.fail.as_ref()?;
    if fail.role != BENCHMARK && fail.role != ROUTER {
        return None;
    }
    job.steps
        .iter()
        .find(|step| step.role == ROUTER)
        .and_then(|step| step.log.as_deref())
}

fn role_outcome(
    step: &RoleStep,
    blamed: Option<&str>,
    stopping: Option<i64>,
    ranks: &[RankSummary],
) -> RoleOutcome {
    if blamed == Some(step.role.as_str()) {
        return RoleOutcome::Failed;
    }
    let Some(end) = &step.ended else {
        return if stopping.is_some() {
            RoleOutcome::Stopped
        } else {
            RoleOutcome::Running
        };
    };
    if !step.ended_badly() {
        return RoleOutcome::Passed;
    }
    let after_stop = stopping.is_some_and(|stop| end.unix_us.is_none_or(|at| at >= stop));
    let own: Vec<&RankSummary> = ranks.iter().filter(|rank| rank.role == step.role).collect();
    let stopped_from_outside = !own.is_empty()
        && own.iter().all(|rank| rank.terminated_by.is_some())
        && end.note.is_none();
    if after_stop || stopped_from_outside {
        RoleOutcome::Stopped
    } else {
        RoleOutcome::Failed
    }
}

fn step_cause(step: &RoleStep) -> Cause {
    let text = match &step.ended {
        Some(end) => match (&end.note, end.code) {
            (Some(note), Some(code)) if code != 0 => format!("exit {code} ({note})"),
            (Some(note), _) => note.clone(),
            (None, Some(code)) => format!("exit {code}"),
            (None, None) => "ended without a status".into(),
        },
        None => "did not end".into(),
    };
    Cause {
        text,
        kind: CauseKind::Exit,
    }
}

fn span_seconds(started: Option<i64>, ended: Option<i64>, now_us: i64) -> f64 {
    match started {
        Some(started) => (ended.unwrap_or(now_us).saturating_sub(started)).max(0) as f64 / 1e6,
        None => 0.0,
    }
}

/// Decides the verdict. `unanswered` is the router log's first line about a server that did
/// not answer (see [`attribution_log`]); `redactor` cleans that line before it is cut into
/// the verdict line.
pub fn decide(
    job: &Job,
    unanswered: Option<&Unanswered>,
    request: &Request,
    redactor: &Redactor,
) -> Decision {
    let phases = job_phases(job);
    let stopping = mark(&phases, "stopping");
    let suite = format!(
        "launch-gen job {}",
        request.job_id.as_deref().unwrap_or(job.dir_name.as_str())
    );
    let blamed = request
        .fail
        .as_ref()
        .map(|fail| blame(job, &phases, fail, unanswered, redactor));
    let blamed_role = blamed.as_ref().map(|blamed| blamed.role.as_str());

    let mut roles: Vec<RoleReport> = Vec::new();
    if let Some(blamed) = &blamed {
        if !job.steps.iter().any(|step| step.role == blamed.role) {
            roles.push(RoleReport {
                role: blamed.role.clone(),
                outcome: RoleOutcome::Failed,
                code: None,
                note: None,
                log: None,
                started_unix_us: None,
                ended_unix_us: None,
                ranks: role_ranks(&job.ranks, &blamed.role),
                cause: Some(blamed.cause.clone()),
                seconds: 0.0,
                stepless: true,
            });
        }
    }
    for step in &job.steps {
        let outcome = role_outcome(step, blamed_role, stopping, &job.ranks);
        let cause = match (&blamed, outcome) {
            (Some(blamed), _) if blamed.role == step.role => Some(blamed.cause.clone()),
            (_, RoleOutcome::Failed) => Some(
                first_failed_rank(&job.ranks, &step.role)
                    .map(rank_cause)
                    .unwrap_or_else(|| step_cause(step)),
            ),
            _ => None,
        };
        let ended = step.ended.as_ref().and_then(|end| end.unix_us);
        roles.push(RoleReport {
            role: step.role.clone(),
            outcome,
            code: step.ended.as_ref().and_then(|end| end.code),
            note: step.ended.as_ref().and_then(|end| end.note.clone()),
            log: step.log.clone(),
            started_unix_us: step.started_unix_us,
            ended_unix_us: ended,
            ranks: role_ranks(&job.ranks, &step.role),
            cause,
            seconds: span_seconds(step.started_unix_us, ended, request.now_us),
            stepless: false,
        });
    }

    let mut evidence: Vec<String> = blamed.iter().map(|blamed| blamed.role.clone()).collect();
    if blamed.is_some() {
        for report in &roles {
            let worth = report.outcome == RoleOutcome::Failed
                || report
                    .ranks
                    .iter()
                    .any(|rank| rank.deadline.is_some() || rank.failed_on_its_own());
            if worth && !evidence.contains(&report.role) {
                evidence.push(report.role.clone());
            }
        }
    }

    let (passed, line, code) = match &blamed {
        None => (true, "verdict: PASS".to_owned(), request.code),
        Some(blamed) => (
            false,
            format!("verdict: FAIL ({})", blamed_text(blamed)),
            if request.code == 0 { 1 } else { request.code },
        ),
    };
    Decision {
        passed,
        line,
        code,
        job_id: request.job_id.clone(),
        suite,
        now_us: request.now_us,
        blamed,
        roles,
        phases,
        evidence,
    }
}

fn role_ranks(ranks: &[RankSummary], role: &str) -> Vec<RankSummary> {
    let mut own: Vec<RankSummary> = ranks
        .iter()
        .filter(|rank| rank.role == role)
        .cloned()
        .collect();
    own.sort_by_key(|rank| rank.rank);
    own
}

/// The text inside `verdict: FAIL (...)`.
fn blamed_text(blamed: &Blamed) -> String {
    let mut text = blamed.role.clone();
    if let Some(rank) = &blamed.rank {
        text.push_str(&format!(" rank {}", rank.rank));
        if let Some(node) = rank.node() {
            text.push_str(&format!(" on {node}"));
        }
    }
    text.push_str(": ");
    text.push_str(&blamed.cause.text);
    if let Some(phase) = &blamed.phase {
        text.push_str(&format!(" while {phase}"));
    }
    if let Some(line) = &blamed.router_line {
        text.push_str(&format!(" ({ROUTER}: {line})"));
    }
    if let Some(noticed) = &blamed.noticed_by {
        text.push_str(&format!("; noticed as {noticed}"));
        if let Some(cause) = &blamed.noticed_cause {
            text.push_str(&format!(": {cause}"));
        }
    }
    if let Some(log) = &blamed.log {
        text.push_str(&format!("; log {}", scan::basename(log)));
    }
    text
}

fn blame(
    job: &Job,
    phases: &[PhaseMark],
    fail: &Fail,
    unanswered: Option<&Unanswered>,
    redactor: &Redactor,
) -> Blamed {
    let known = |role: &str| {
        (job.steps.is_empty() && job.ranks.is_empty())
            || job.steps.iter().any(|step| step.role == role)
            || job.ranks.iter().any(|rank| rank.role == role)
    };
    let attributed = unanswered
        .filter(|_| fail.role == BENCHMARK || fail.role == ROUTER)
        .filter(|found| found.server != fail.role && known(&found.server));
    let log_of = |role: &str| {
        job.steps
            .iter()
            .find(|step| step.role == role)
            .and_then(|step| step.log.clone())
    };
    let phase_of = |rank: &RankSummary, at: Option<i64>| {
        phase_at(
            phases,
            at,
            rank.end_phase.as_deref().or(rank.phase.as_deref()),
        )
    };

    let Some(found) = attributed else {
        let rank = first_failed_rank(&job.ranks, &fail.role);
        let cause = rank.map_or_else(
            || Cause {
                text: fail.detail.clone(),
                kind: CauseKind::Detail,
            },
            rank_cause,
        );
        return Blamed {
            role: fail.role.clone(),
            rank: rank.cloned(),
            cause,
            phase: rank.map(|rank| phase_of(rank, rank.ended_unix_us)),
            log: log_of(&fail.role),
            router_line: None,
            noticed_by: None,
            noticed_cause: None,
            fail_detail: fail.detail.clone(),
        };
    };

    // The client's own failure, as it saw it, and when.
    let client_rank = first_failed_rank(&job.ranks, &fail.role);
    let noticed_cause =
        client_rank.map_or_else(|| fail.detail.clone(), |rank| rank_cause(rank).text);
    let noticed_at = client_rank.and_then(|rank| rank.ended_unix_us).or_else(|| {
        job.steps
            .iter()
            .find(|step| step.role == fail.role)
            .and_then(|step| step.ended.as_ref())
            .and_then(|end| end.unix_us)
    });
    let server = found.server.as_str();
    let own_failure = first_failed_rank(&job.ranks, server).filter(|rank| rank.failed_on_its_own());
    let (rank, cause, router_line, at) = match own_failure {
        Some(rank) => (Some(rank), rank_cause(rank), None, rank.ended_unix_us),
        None => {
            let line = redactor.redact(scan::router_words(&found.line.text));
            let line = scan::cut(&line, scan::LINE_BYTES).to_owned();
            let serving = job
                .ranks
                .iter()
                .filter(|rank| rank.role == server)
                .min_by_key(|rank| rank.rank);
            let cause = Cause {
                text: "requests not answered".into(),
                kind: CauseKind::NotAnswered,
            };
            (serving, cause, Some(line), noticed_at)
        }
    };
    Blamed {
        role: server.to_owned(),
        rank: rank.cloned(),
        cause,
        phase: rank.map(|rank| phase_of(rank, at)),
        log: log_of(server),
        router_line,
        noticed_by: Some(fail.role.clone()),
        noticed_cause: Some(noticed_cause),
        fail_detail: fail.detail.clone(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::job::model::StepEnd;
    use crate::job::scan::NumberedLine;

    pub(crate) fn step(role: &str, log: &str, started: i64, end: Option<(i64, i64)>) -> RoleStep {
        RoleStep {
            role: role.into(),
            log: Some(log.into()),
            started_unix_us: Some(started),
            ended: end.map(|(code, at)| StepEnd {
                code: Some(code),
                note: None,
                unix_us: Some(at),
            }),
        }
    }

    pub(crate) fn rank(role: &str, rank: i64, node: &str) -> RankSummary {
        RankSummary {
            role: role.into(),
            rank,
            host: Some(format!("{node}.cluster")),
            slurm_node: Some(node.into()),
            ..RankSummary::default()
        }
    }

    pub(crate) fn ended(mut summary: RankSummary, code: i64, at: i64) -> RankSummary {
        summary.exit_code = Some(code);
        summary.ended_unix_us = Some(at);
        summary
    }

    pub(crate) fn marks(list: &[(&str, i64)]) -> Vec<PhaseMark> {
        list.iter()
            .map(|(phase, unix_us)| PhaseMark {
                phase: (*phase).into(),
                unix_us: *unix_us,
            })
            .collect()
    }

    fn deadline(kind: &str, probe: &str, timeout: f64) -> Option<Deadline> {
        Some(Deadline {
            kind: kind.into(),
            probe: Some(probe.into()),
            timeout_s: Some(timeout),
            waited_s: Some(timeout + 0.2),
        })
    }

    fn fail(role: &str, detail: &str, code: i32) -> Request {
        Request {
            fail: Some(Fail {
                role: role.into(),
                detail: detail.into(),
            }),
            code,
            job_id: Some("1234".into()),
            now_us: 1_000,
        }
    }

    fn servers() -> Vec<RoleStep> {
        vec![
            step("GEN_0", "/w/gen_server_0.log", 10, Some((143, 520))),
            step("CTX_0", "/w/ctx_server_0.log", 11, Some((143, 520))),
            step(
                "DISAGG_SERVER",
                "/w/disagg_server.log",
                12,
                Some((143, 520)),
            ),
            step("BENCHMARK", "/w/benchmark.log", 13, Some((76, 400))),
        ]
    }

    /// The wedged server: the router complains, the benchmark stalls.
    pub(crate) fn wedged() -> (Job, Unanswered, Request) {
        let mut ctx = ended(rank("CTX_0", 0, "n3"), 143, 510);
        ctx.terminated_by = Some("SIGTERM".into());
        ctx.end_phase = Some("serving".into());
        ctx.ready_unix_us = Some(90);
        let mut bench = ended(rank("BENCHMARK", 0, "n1"), 76, 400);
        bench.deadline = deadline("stall", "output", 15.0);
        let job = Job {
            dir_name: "ws".into(),
            steps: servers(),
            phases: marks(&[("setup", 0), ("servers_ready", 100), ("stopping", 500)]),
            ranks: vec![ctx, bench],
        };
        let unanswered = Unanswered {
            server: "CTX_0".into(),
            line: NumberedLine {
                number: 7,
                text: "0: warning: CTX_0 (n3:4123) has not answered request 5 for 6 s".into(),
            },
        };
        (job, unanswered, fail("BENCHMARK", "exit 76", 76))
    }

    #[test]
    fn cause_texts() {
        let base = rank("GEN_0", 0, "n1");
        let with = |edit: &dyn Fn(&mut RankSummary)| {
            let mut summary = base.clone();
            edit(&mut summary);
            rank_cause(&summary)
        };
        let cases: Vec<(RankSummary, &str, &str)> = vec![
            (
                RankSummary {
                    deadline: deadline("ready", "line /Uvicorn running/", 600.0),
                    exit_code: Some(75),
                    ..base.clone()
                },
                "not ready after 600 s",
                "ready",
            ),
            (
                RankSummary {
                    deadline: deadline("stall", "output", 15.0),
                    reason: Some("no progress within --stall-timeout (15 s)".into()),
                    ..base.clone()
                },
                "no progress for 15 s",
                "stall",
            ),
            (
                RankSummary {
                    deadline: deadline("ready", "output", 5.0),
                    reason: Some("processes of this rank were left behind".into()),
                    ..base.clone()
                },
                "not ready after 5 s (processes of this rank were left behind)",
                "ready",
            ),
            (
                RankSummary {
                    deadline: deadline("stall", "stopped", 2.5),
                    ..base.clone()
                },
                "no progress for 2.5 s (process stopped)",
                "stall",
            ),
            (
                RankSummary {
                    child_signal: Some(6),
                    exit_code: Some(134),
                    ..base.clone()
                },
                "killed by SIGABRT",
                "SIGABRT",
            ),
            (
                RankSummary {
                    child_exit_code: Some(3),
                    exit_code: Some(3),
                    ..base.clone()
                },
                "exit 3",
                "exit",
            ),
            (
                RankSummary {
                    exit_code: Some(72),
                    reason: Some("the install command failed (exit code 1)".into()),
                    ..base.clone()
                },
                "exit 72 (the install command failed (exit code 1))",
                "exit",
            ),
            (
                RankSummary {
                    child_exit_code: Some(0),
                    exit_code: Some(74),
                    reason: Some("processes left behind".into()),
                    ..base.clone()
                },
                "exit 74 (processes left behind)",
                "exit",
            ),
            (
                RankSummary {
                    terminated_by: Some("SIGTERM".into()),
                    child_signal: Some(15),
                    exit_code: Some(143),
                    ..base.clone()
                },
                "terminated by SIGTERM",
                "terminated",
            ),
        ];
        for (summary, text, kind) in cases {
            let cause = rank_cause(&summary);
            assert_eq!(cause.text, text, "{summary:?}");
            assert_eq!(cause.kind.type_name(), kind, "{summary:?}");
        }
        // A reason that says nothing more is not repeated.
        let cause = with(&|summary| {
            summary.exit_code = Some(3);
            summary.reason = Some("EXIT 3".into());
        });
        assert_eq!(cause.text, "exit 3");
        assert_eq!(with(&|_| {}).text, "no exit code");
    }

    #[test]
    fn first_failed_rank_prefers_own_failures_then_the_earliest() {
        let mut stopped = ended(rank("GEN_0", 0, "n1"), 143, 100);
        stopped.terminated_by = Some("SIGTERM".into());
        let late = ended(rank("GEN_0", 1, "n2"), 134, 300);
        let early = ended(rank("GEN_0", 2, "n2"), 1, 200);
        let passed = ended(rank("GEN_0", 3, "n2"), 0, 50);
        let other = ended(rank("CTX_0", 0, "n3"), 1, 10);
        let mut waiting = rank("GEN_1", 0, "n4");
        waiting.deadline = deadline("ready", "output", 5.0);

        let pick = |ranks: &[RankSummary], role| first_failed_rank(ranks, role).map(|r| r.rank);
        let all = [
            stopped.clone(),
            late.clone(),
            early.clone(),
            passed.clone(),
            other.clone(),
            waiting.clone(),
        ];
        assert_eq!(pick(&all, "GEN_0"), Some(2));
        assert_eq!(pick(&[stopped.clone(), late.clone()], "GEN_0"), Some(1));
        assert_eq!(pick(&[stopped.clone(), passed.clone()], "GEN_0"), Some(0));
        assert_eq!(pick(std::slice::from_ref(&passed), "GEN_0"), None);
        assert_eq!(pick(&all, "GEN_1"), Some(0));
        assert_eq!(pick(&all, "BENCHMARK"), None);
    }

    /// Phases, time, the rank's own phase, the phase wanted.
    type PhaseCase<'a> = (&'a [PhaseMark], Option<i64>, Option<&'a str>, &'a str);

    #[test]
    fn phases_at_a_time() {
        let full = marks(&[
            ("setup", 0),
            ("install_done", 10),
            ("prechecks_done", 20),
            ("servers_started", 30),
            ("servers_ready", 100),
            ("benchmark_started", 110),
            ("benchmark_ended", 200),
            ("drain", 210),
            ("stopping", 300),
        ]);
        let bare = marks(&[("setup", 0), ("stopping", 300)]);
        let cases: &[PhaseCase<'_>] = &[
            (&full, Some(5), None, "installing"),
            (&full, Some(15), None, "prechecking"),
            (&full, Some(50), Some("serving"), "starting"),
            (&full, Some(100), None, "serving"),
            (&full, Some(150), None, "serving"),
            (&full, Some(205), None, "draining"),
            (&full, Some(250), None, "draining"),
            (&full, Some(300), None, "stopping"),
            (&full, None, Some("serving"), "serving"),
            (&bare, Some(50), Some("starting"), "starting"),
            (&bare, Some(50), Some("serving"), "serving"),
            (&bare, Some(50), Some("install"), "installing"),
            (&bare, Some(400), Some("serving"), "stopping"),
            (&bare, Some(50), None, "starting"),
            (&bare, None, Some("ended"), "starting"),
            (&[], None, None, "starting"),
        ];
        for (phases, at, rank_phase, want) in cases {
            assert_eq!(
                phase_at(phases, *at, *rank_phase),
                *want,
                "{at:?} {rank_phase:?} in {phases:?}"
            );
        }
    }

    #[test]
    fn servers_ready_from_the_summaries() {
        let mut gen0 = rank("GEN_0", 0, "n1");
        gen0.ready_unix_us = Some(50);
        let mut ctx = rank("CTX_0", 0, "n2");
        ctx.ready_unix_us = Some(70);
        let mut gen1 = rank("GEN_0", 1, "n1");
        gen1.ready_unix_us = Some(99);
        let router = RankSummary {
            ready_unix_us: Some(60),
            ..rank("DISAGG_SERVER", 0, "n1")
        };
        let mut job = Job {
            steps: servers(),
            phases: marks(&[("setup", 0), ("servers_started", 40), ("stopping", 500)]),
            ranks: vec![gen0.clone(), gen1, ctx, router],
            ..Job::default()
        };
        let phases = job_phases(&job);
        let names: Vec<(&str, i64)> = phases
            .iter()
            .map(|mark| (mark.phase.as_str(), mark.unix_us))
            .collect();
        assert_eq!(
            names,
            [
                ("setup", 0),
                ("servers_started", 40),
                ("servers_ready", 70),
                ("stopping", 500)
            ]
        );
        // Not every server ready: no mark.
        job.ranks.retain(|rank| rank.role != "CTX_0");
        assert_eq!(job_phases(&job), job.phases);
        // A mark in the file wins.
        job.phases.push(PhaseMark {
            phase: "servers_ready".into(),
            unix_us: 1,
        });
        assert_eq!(job_phases(&job), job.phases);
    }

    #[test]
    fn verdict_lines() {
        let none = Redactor::default();
        let mut crash = ended(rank("GEN_0", 1, "n2"), 134, 300);
        crash.child_signal = Some(6);
        let mut stopped = ended(rank("GEN_0", 0, "n1"), 143, 250);
        stopped.terminated_by = Some("SIGTERM".into());
        let mut not_ready = ended(rank("CTX_0", 0, "n3"), 75, 700);
        not_ready.deadline = deadline("ready", "line /Uvicorn running/", 600.0);
        not_ready.end_phase = Some("starting".into());
        let mut stall = ended(rank("BENCHMARK", 0, "n1"), 76, 400);
        stall.deadline = deadline("stall", "stopped", 15.0);

        let phases = marks(&[("setup", 0), ("servers_ready", 100), ("stopping", 500)]);
        let job = |ranks: Vec<RankSummary>, phases: &[PhaseMark]| Job {
            dir_name: "ws".into(),
            steps: servers(),
            phases: phases.to_vec(),
            ranks,
        };
        let (wedged_job, unanswered, wedged_request) = wedged();
        let cases: Vec<(Job, Option<&Unanswered>, Request, &str)> = vec![
            (
                job(vec![stopped, crash], &phases),
                None,
                fail("GEN_0", "exit 134", 134),
                "verdict: FAIL (GEN_0 rank 1 on n2: killed by SIGABRT while serving; log gen_server_0.log)",
            ),
            (
                job(vec![not_ready], &marks(&[("setup", 0)])),
                None,
                fail("CTX_0", "exit 75", 75),
                "verdict: FAIL (CTX_0 rank 0 on n3: not ready after 600 s while starting; log ctx_server_0.log)",
            ),
            (
                job(vec![stall.clone()], &phases),
                None,
                fail("BENCHMARK", "exit 76", 76),
                "verdict: FAIL (BENCHMARK rank 0 on n1: no progress for 15 s (process stopped) while serving; log benchmark.log)",
            ),
            (
                wedged_job.clone(),
                Some(&unanswered),
                wedged_request.clone(),
                "verdict: FAIL (CTX_0 rank 0 on n3: requests not answered while serving (DISAGG_SERVER: CTX_0 (n3:4123) has not answered request 5 for 6 s); noticed as BENCHMARK: no progress for 15 s; log ctx_server_0.log)",
            ),
            (
                // No summary of the silent server: no rank, no phase.
                Job {
                    ranks: wedged_job
                        .ranks
                        .iter()
                        .filter(|rank| rank.role != "CTX_0")
                        .cloned()
                        .collect(),
                    ..wedged_job.clone()
                },
                Some(&unanswered),
                wedged_request.clone(),
                "verdict: FAIL (CTX_0: requests not answered (DISAGG_SERVER: CTX_0 (n3:4123) has not answered request 5 for 6 s); noticed as BENCHMARK: no progress for 15 s; log ctx_server_0.log)",
            ),
            (
                // The router's complaint does not move the blame from a server.
                wedged_job.clone(),
                Some(&unanswered),
                fail("GEN_0", "exit 1", 1),
                "verdict: FAIL (GEN_0: exit 1; log gen_server_0.log)",
            ),
            (
                job(vec![], &phases),
                None,
                fail("BENCHMARK", "still running 120 s after BENCHMARK passed", 1),
                "verdict: FAIL (BENCHMARK: still running 120 s after BENCHMARK passed; log benchmark.log)",
            ),
            (
                Job::default(),
                None,
                fail("SETUP", "SLURM_JOB_NODELIST is not set", 1),
                "verdict: FAIL (SETUP: SLURM_JOB_NODELIST is not set)",
            ),
            (
                job(vec![stall], &phases),
                None,
                Request {
                    fail: None,
                    code: 0,
                    job_id: None,
                    now_us: 0,
                },
                "verdict: PASS",
            ),
        ];
        for (job, unanswered, request, want) in cases {
            let decision = decide(&job, unanswered, &request, &none);
            assert_eq!(decision.line, want);
        }
    }

    #[test]
    fn a_server_that_failed_on_its_own_keeps_its_cause_when_blamed_by_the_router() {
        let (mut job, unanswered, request) = wedged();
        let mut crash = ended(rank("CTX_0", 1, "n4"), 139, 350);
        crash.child_signal = Some(11);
        job.ranks.push(crash);
        let decision = decide(&job, Some(&unanswered), &request, &Redactor::default());
        assert_eq!(
            decision.line,
            "verdict: FAIL (CTX_0 rank 1 on n4: killed by SIGSEGV while serving; noticed as BENCHMARK: no progress for 15 s; log ctx_server_0.log)"
        );
    }

    #[test]
    fn the_router_line_is_redacted_before_it_is_cut() {
        let (job, mut unanswered, request) = wedged();
        let secret = "s3cr3t-value-that-is-long";
        unanswered.line.text = format!(
            "0: CTX_0 has not answered {} token={secret}",
            "x".repeat(290)
        );
        let redactor = Redactor::new([("MY_TOKEN", secret)]);
        let decision = decide(&job, Some(&unanswered), &request, &redactor);
        assert!(!decision.line.contains("s3cr3t"), "{}", decision.line);
    }

    #[test]
    fn outcomes_and_evidence() {
        let (job, unanswered, request) = wedged();
        let decision = decide(&job, Some(&unanswered), &request, &Redactor::default());
        let outcomes: Vec<(&str, &str)> = decision
            .roles
            .iter()
            .map(|report| (report.role.as_str(), report.outcome.as_str()))
            .collect();
        assert_eq!(
            outcomes,
            [
                ("GEN_0", "stopped"),
                ("CTX_0", "failed"),
                ("DISAGG_SERVER", "stopped"),
                ("BENCHMARK", "failed"),
            ]
        );
        assert_eq!(decision.evidence, ["CTX_0", "BENCHMARK"]);
        assert_eq!(decision.code, 76);
        assert_eq!(decision.suite, "launch-gen job 1234");
        let blamed = decision.blamed.as_ref().expect("blamed");
        assert_eq!(blamed.noticed_by.as_deref(), Some("BENCHMARK"));
        assert_eq!(blamed.phase.as_deref(), Some("serving"));

        // Running without a stop, passed, and a failure that was a stop from outside.
        let mut stopped_rank = ended(rank("GEN_0", 0, "n1"), 143, 100);
        stopped_rank.terminated_by = Some("SIGTERM".into());
        let job = Job {
            dir_name: "ws".into(),
            steps: vec![
                step("GEN_0", "/w/g.log", 1, Some((143, 100))),
                step("CTX_0", "/w/c.log", 1, None),
                step("BENCHMARK", "/w/b.log", 1, Some((0, 90))),
            ],
            phases: Vec::new(),
            ranks: vec![stopped_rank],
        };
        let decision = decide(
            &job,
            None,
            &fail("SETUP", "terminated", 0),
            &Redactor::default(),
        );
        let outcomes: Vec<(&str, &str)> = decision
            .roles
            .iter()
            .map(|report| (report.role.as_str(), report.outcome.as_str()))
            .collect();
        assert_eq!(
            outcomes,
            [
                ("SETUP", "failed"),
                ("GEN_0", "stopped"),
                ("CTX_0", "running"),
                ("BENCHMARK", "passed"),
            ]
        );
        assert_eq!(decision.code, 1, "a failure never exits 0");
        assert_eq!(decision.evidence, ["SETUP"]);
        assert!(decision.roles[0].stepless);
    }

    #[test]
    fn seconds_are_short() {
        assert_eq!(seconds(600.0), "600");
        assert_eq!(seconds(1.5), "1.5");
        assert_eq!(seconds(0.25), "0.25");
    }

    #[test]
    fn server_roles() {
        for (role, want) in [
            ("GEN_0", true),
            ("CTX_12", true),
            ("DISAGG_SERVER", true),
            ("GEN_PRECHECK_0", false),
            ("GEN_", false),
            ("BENCHMARK", false),
            ("INSTALL", false),
        ] {
            assert_eq!(is_server_role(role), want, "{role}");
        }
    }
}
