//! The job workspace's records, parsed leniently from text.
//!
//! A running job writes these files while `launch-gen verdict` may read them, so every parser
//! here tolerates what a half-written or older file holds: a line that does not parse is
//! skipped and reported ([`LineError`]), a field of the wrong type counts as unknown, unknown
//! fields are ignored. Nothing here reads files: the texts come from [`super::io`].

use serde_json::{Map, Value};

/// What is wrong with a record file as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// Not JSON at all (often: a file caught half-written).
    #[error("expected a JSON object, found invalid JSON ({0})")]
    NotJson(String),
    /// JSON, but not an object.
    #[error("expected a JSON object, found {0}")]
    NotObject(&'static str),
}

/// A line of a `.jsonl` file that was skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line number.
    pub line: usize,
    /// What was expected.
    pub detail: String,
}

/// `started` or `ended`, from `steps.jsonl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// The script started the role's step.
    Started,
    /// The role's step ended (`code`).
    Ended,
}

/// One line of `steps.jsonl`.
#[derive(Debug, Clone, PartialEq)]
pub struct StepEvent {
    /// Started or ended.
    pub kind: StepKind,
    /// `GEN_0`, `DISAGG_SERVER`, ...
    pub role: String,
    /// The step's log (started lines).
    pub log: Option<String>,
    /// The step's exit status (ended lines).
    pub code: Option<i64>,
    /// Such as `node failure` (ended lines).
    pub note: Option<String>,
    /// When it happened.
    pub unix_us: Option<i64>,
}

/// One line of `phases.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseMark {
    /// `setup`, `servers_ready`, `stopping`, ...
    pub phase: String,
    /// When the job entered it.
    pub unix_us: i64,
}

/// A rank's deadline that fired (`deadline` of a summary).
#[derive(Debug, Clone, PartialEq)]
pub struct Deadline {
    /// `ready` or `stall`.
    pub kind: String,
    /// What was watched: `line /Uvicorn running/`, `output`, `stopped`.
    pub probe: Option<String>,
    /// The configured timeout.
    pub timeout_s: Option<f64>,
    /// How long the rank waited.
    pub waited_s: Option<f64>,
}

/// rank-launch's per-rank summary (`ranks/<ROLE>.<rank>.json`); every field may be unknown.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RankSummary {
    /// The role, from the file name (the summary's own `role` is null for plain commands).
    pub role: String,
    /// The rank, from the summary, else from the file name.
    pub rank: i64,
    /// The host name rank-launch saw.
    pub host: Option<String>,
    /// `SLURMD_NODENAME`, when known.
    pub slurm_node: Option<String>,
    /// rank-launch's exit code; `None` while running.
    pub exit_code: Option<i64>,
    /// The main child's exit code.
    pub child_exit_code: Option<i64>,
    /// The signal number that killed the main child.
    pub child_signal: Option<i64>,
    /// rank-launch's own explanation of its exit code.
    pub reason: Option<String>,
    /// Start time.
    pub started_unix_us: Option<i64>,
    /// End time; `None` while running.
    pub ended_unix_us: Option<i64>,
    /// `starting`, `serving`, `stopping`, `ended`.
    pub phase: Option<String>,
    /// The phase the rank was in when it ended.
    pub end_phase: Option<String>,
    /// When the rank became ready.
    pub ready_unix_us: Option<i64>,
    /// Last sign of progress.
    pub last_progress_unix_us: Option<i64>,
    /// The deadline that fired.
    pub deadline: Option<Deadline>,
    /// The signal rank-launch itself received first (stopped from outside).
    pub terminated_by: Option<String>,
}

impl RankSummary {
    /// The node to name: `slurm_node`, else `host`.
    pub fn node(&self) -> Option<&str> {
        self.slurm_node.as_deref().or(self.host.as_deref())
    }

    /// Ended with a non-zero code.
    pub fn failed(&self) -> bool {
        self.exit_code.is_some_and(|code| code != 0)
    }

    /// Failed without having been stopped from outside.
    pub fn failed_on_its_own(&self) -> bool {
        self.failed() && self.terminated_by.is_none()
    }
}

/// The role and rank that a summary file's name (`GEN_0.1.json`) stands for.
pub fn rank_file_name(name: &str) -> Option<(String, i64)> {
    let stem = name.strip_suffix(".json")?;
    let (role, rank) = stem.rsplit_once('.')?;
    if role.is_empty() || rank.is_empty() || !rank.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((role.to_owned(), rank.parse().ok()?))
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn object(text: &str) -> Result<Map<String, Value>, ModelError> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(ModelError::NotObject(json_kind(&other))),
        Err(error) => Err(ModelError::NotJson(error.to_string())),
    }
}

fn string(map: &Map<String, Value>, key: &str) -> Option<String> {
    map.get(key)?.as_str().map(str::to_owned)
}

fn int(map: &Map<String, Value>, key: &str) -> Option<i64> {
    let value = map.get(key)?;
    value
        .as_i64()
        .or_else(|| value.as_u64().and_then(|n| i64::try_from(n).ok()))
        .or_else(|| {
            // Tolerate `12.0` from a writer that formats every number as a float.
            value
                .as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| f as i64)
        })
}

fn float(map: &Map<String, Value>, key: &str) -> Option<f64> {
    map.get(key)?.as_f64().filter(|f| f.is_finite())
}

/// Parses each non-blank line of a `.jsonl` text with `parse`; skipped lines are returned.
fn parse_lines<T>(
    text: &str,
    mut parse: impl FnMut(&Map<String, Value>) -> Result<T, String>,
) -> (Vec<T>, Vec<LineError>) {
    let mut records = Vec::new();
    let mut skipped = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let result = object(line)
            .map_err(|error| error.to_string())
            .and_then(|map| parse(&map));
        match result {
            Ok(record) => records.push(record),
            Err(detail) => skipped.push(LineError {
                line: index + 1,
                detail,
            }),
        }
    }
    (records, skipped)
}

/// The lines of `steps.jsonl`.
pub fn parse_steps(text: &str) -> (Vec<StepEvent>, Vec<LineError>) {
    parse_lines(text, |map| {
        let kind = match map.get("event").and_then(Value::as_str) {
            Some("started") => StepKind::Started,
            Some("ended") => StepKind::Ended,
            _ => return Err("expected `event` to be \"started\" or \"ended\"".to_owned()),
        };
        let role = string(map, "role")
            .filter(|role| !role.is_empty())
            .ok_or_else(|| "expected `role` to be a non-empty string".to_owned())?;
        Ok(StepEvent {
            kind,
            role,
            log: string(map, "log").filter(|log| !log.is_empty()),
            code: int(map, "code"),
            note: string(map, "note").filter(|note| !note.is_empty()),
            unix_us: int(map, "unix_us"),
        })
    })
}

/// The lines of `phases.jsonl`.
pub fn parse_phases(text: &str) -> (Vec<PhaseMark>, Vec<LineError>) {
    parse_lines(text, |map| {
        let phase = string(map, "phase")
            .filter(|phase| !phase.is_empty())
            .ok_or_else(|| "expected `phase` to be a non-empty string".to_owned())?;
        let unix_us =
            int(map, "unix_us").ok_or_else(|| "expected `unix_us` to be an integer".to_owned())?;
        Ok(PhaseMark { phase, unix_us })
    })
}

/// A rank summary; `role` and `rank` come from the file name (`rank` is overridden by the
/// summary's own when it has one).
pub fn parse_rank(role: &str, rank: i64, text: &str) -> Result<RankSummary, ModelError> {
    let map = object(text)?;
    let deadline = match map.get("deadline") {
        Some(Value::Object(deadline)) => Some(Deadline {
            kind: string(deadline, "kind").unwrap_or_default(),
            probe: string(deadline, "probe"),
            timeout_s: float(deadline, "timeout_s"),
            waited_s: float(deadline, "waited_s"),
        }),
        _ => None,
    };
    Ok(RankSummary {
        role: role.to_owned(),
        rank: int(&map, "rank").unwrap_or(rank),
        host: string(&map, "host").filter(|host| !host.is_empty()),
        slurm_node: string(&map, "slurm_node").filter(|node| !node.is_empty()),
        exit_code: int(&map, "exit_code"),
        child_exit_code: int(&map, "child_exit_code"),
        child_signal: int(&map, "child_signal"),
        reason: string(&map, "reason").filter(|reason| !reason.trim().is_empty()),
        started_unix_us: int(&map, "started_unix_us"),
        ended_unix_us: int(&map, "ended_unix_us"),
        phase: string(&map, "phase"),
        end_phase: string(&map, "end_phase"),
        ready_unix_us: int(&map, "ready_unix_us"),
        last_progress_unix_us: int(&map, "last_progress_unix_us"),
        deadline,
        terminated_by: string(&map, "terminated_by").filter(|name| !name.is_empty()),
    })
}

/// How a role's step ended, from its last `ended` line.
#[derive(Debug, Clone, PartialEq)]
pub struct StepEnd {
    /// The step's exit status (unknown when the line had none).
    pub code: Option<i64>,
    /// Such as `node failure`.
    pub note: Option<String>,
    /// When.
    pub unix_us: Option<i64>,
}

/// One role's step, folded from its `steps.jsonl` lines.
#[derive(Debug, Clone, PartialEq)]
pub struct RoleStep {
    /// The role.
    pub role: String,
    /// Its log file.
    pub log: Option<String>,
    /// When it started.
    pub started_unix_us: Option<i64>,
    /// How it ended; `None`: no ended line (still running, or killed with the job).
    pub ended: Option<StepEnd>,
}

impl RoleStep {
    /// Ended badly: a non-zero status, or srun's node-failure note.
    pub fn ended_badly(&self) -> bool {
        self.ended
            .as_ref()
            .is_some_and(|end| end.code != Some(0) || end.note.is_some())
    }
}

/// The roles in the order their steps started; a later `started` line of the same role (a
/// restart) replaces its log and start and forgets its end. An `ended` line without a
/// `started` one still makes the role known.
pub fn role_steps(events: &[StepEvent]) -> Vec<RoleStep> {
    let mut roles: Vec<RoleStep> = Vec::new();
    for event in events {
        let index = match roles.iter().position(|step| step.role == event.role) {
            Some(index) => index,
            None => {
                roles.push(RoleStep {
                    role: event.role.clone(),
                    log: None,
                    started_unix_us: None,
                    ended: None,
                });
                roles.len() - 1
            }
        };
        let step = &mut roles[index];
        match event.kind {
            StepKind::Started => {
                step.log = event.log.clone().or(step.log.take());
                step.started_unix_us = event.unix_us;
                step.ended = None;
            }
            StepKind::Ended => {
                step.ended = Some(StepEnd {
                    code: event.code,
                    note: event.note.clone(),
                    unix_us: event.unix_us,
                });
            }
        }
    }
    roles
}

/// The first error line named in `verdict.json`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FirstErrorRecord {
    /// The log file.
    pub file: Option<String>,
    /// Its 1-based line number.
    pub line: Option<i64>,
    /// The line (redacted and cut when written).
    pub text: Option<String>,
}

/// `blamed` of `verdict.json`; every field but the role may be unknown.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BlamedRecord {
    /// The role blamed.
    pub role: String,
    /// Its first failed rank.
    pub rank: Option<i64>,
    /// That rank's node.
    pub host: Option<String>,
    /// `killed by SIGABRT`, `not ready after 600 s`, ...
    pub cause: Option<String>,
    /// The job's phase then.
    pub phase: Option<String>,
    /// The signal that is the cause.
    pub signal: Option<String>,
    /// The rank's (or the step's) exit code.
    pub exit_code: Option<i64>,
    /// The role's log.
    pub log: Option<String>,
    /// The first error-looking line of that log.
    pub first_error: Option<FirstErrorRecord>,
    /// The client that noticed, when the blame moved to a server.
    pub noticed_by: Option<String>,
    /// What that client saw.
    pub noticed_cause: Option<String>,
    /// The router's line about the server not answering.
    pub router_line: Option<String>,
    /// The script's own detail.
    pub fail_detail: Option<String>,
}

/// One entry of `roles` in `verdict.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleRecord {
    /// The role.
    pub role: String,
    /// `passed`, `failed`, `stopped`, `running`.
    pub outcome: Option<String>,
}

/// The parts of `verdict.json` that a report shows, parsed leniently like every record.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VerdictRecord {
    /// `PASS` or `FAIL`.
    pub verdict: Option<String>,
    /// `verdict: ...`.
    pub line: Option<String>,
    /// The job's exit code.
    pub code: Option<i64>,
    /// The Slurm job id.
    pub job_id: Option<String>,
    /// When the verdict was made.
    pub unix_us: Option<i64>,
    /// The blamed failure (a `blamed` without a role counts as none).
    pub blamed: Option<BlamedRecord>,
    /// How each role ended, in file order (entries without a role are skipped).
    pub roles: Vec<RoleRecord>,
}

impl VerdictRecord {
    /// `Some(true)` for PASS, `Some(false)` for FAIL, `None` when neither is written.
    pub fn passed(&self) -> Option<bool> {
        match self.verdict.as_deref() {
            Some("PASS") => Some(true),
            Some("FAIL") => Some(false),
            _ => None,
        }
    }
}

/// `verdict.json` (as `launch-gen verdict` writes it).
pub fn parse_verdict(text: &str) -> Result<VerdictRecord, ModelError> {
    let map = object(text)?;
    let blamed =
        match map.get("blamed") {
            Some(Value::Object(blamed)) => string(blamed, "role")
                .filter(|role| !role.is_empty())
                .map(|role| BlamedRecord {
                    role,
                    rank: int(blamed, "rank"),
                    host: string(blamed, "host").filter(|host| !host.is_empty()),
                    cause: string(blamed, "cause"),
                    phase: string(blamed, "phase"),
                    signal: string(blamed, "signal"),
                    exit_code: int(blamed, "exit_code"),
                    log: string(blamed, "log").filter(|log| !log.is_empty()),
                    first_error: match blamed.get("first_error") {
                        Some(Value::Object(found)) => Some(FirstErrorRecord {
                            file: string(found, "file"),
                            line: int(found, "line"),
                            text: string(found, "text"),
                        }),
                        _ => None,
                    },
                    noticed_by: string(blamed, "noticed_by"),
                    noticed_cause: string(blamed, "noticed_cause"),
                    router_line: string(blamed, "router_line"),
                    fail_detail: string(blamed, "fail_detail").filter(|d| !d.is_empty()),
                }),
            _ => None,
        };
    let roles = match map.get("roles") {
        Some(Value::Array(roles)) => roles
            .iter()
            .filter_map(Value::as_object)
            .filter_map(|role| {
                Some(RoleRecord {
                    role: string(role, "role").filter(|name| !name.is_empty())?,
                    outcome: string(role, "outcome"),
                })
            })
            .collect(),
        _ => Vec::new(),
    };
    Ok(VerdictRecord {
        verdict: string(&map, "verdict"),
        line: string(&map, "line").filter(|line| !line.is_empty()),
        code: int(&map, "code"),
        job_id: string(&map, "job_id").filter(|id| !id.is_empty()),
        unix_us: int(&map, "unix_us"),
        blamed,
        roles,
    })
}

/// `text` up to its last newline: the lines of a `.jsonl` file that is being appended,
/// without a last line whose writer has not finished it.
pub fn complete_lines(text: &str) -> &str {
    text.rfind('\n').map_or("", |at| &text[..=at])
}

/// A rank summary's `phase_since_unix_us` (when its current phase began), if it has one.
pub fn rank_phase_since(text: &str) -> Option<i64> {
    int(&object(text).ok()?, "phase_since_unix_us")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_file_names() {
        let cases: &[(&str, Option<(&str, i64)>)] = &[
            ("GEN_0.1.json", Some(("GEN_0", 1))),
            ("DISAGG_SERVER.0.json", Some(("DISAGG_SERVER", 0))),
            ("GEN_0.1.json.tmp.123", None),
            ("GEN_0.json", None),
            ("GEN_0.x.json", None),
            (".0.json", None),
            ("GEN_0.-1.json", None),
            ("GEN_0.99999999999999999999.json", None),
        ];
        for (name, want) in cases {
            let got = rank_file_name(name);
            let want = want.map(|(role, rank)| (role.to_owned(), rank));
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn steps_are_parsed_and_bad_lines_skipped() {
        let text = concat!(
            r#"{"event":"started","role":"GEN_0","log":"/w/gen_server_0.log","unix_us":10}"#,
            "\n\n",
            r#"{"event":"ended","role":"GEN_0","code":134,"unix_us":20,"note":"node failure"}"#,
            "\n",
            r#"{"event":"begun","role":"X"}"#,
            "\n",
            r#"[1]"#,
            "\n",
            r#"{"event":"started","role":"CTX_0","log":"/w/ctx"#,
        );
        let (events, skipped) = parse_steps(text);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].kind, StepKind::Started);
        assert_eq!(events[0].log.as_deref(), Some("/w/gen_server_0.log"));
        assert_eq!(events[1].code, Some(134));
        assert_eq!(events[1].note.as_deref(), Some("node failure"));
        let lines: Vec<usize> = skipped.iter().map(|error| error.line).collect();
        assert_eq!(lines, [4, 5, 6]);
        assert!(skipped[0].detail.contains("`event`"), "{:?}", skipped[0]);
        assert!(
            skipped[1].detail.contains("found an array"),
            "{:?}",
            skipped[1]
        );
        assert!(
            skipped[2].detail.contains("invalid JSON"),
            "{:?}",
            skipped[2]
        );
    }

    #[test]
    fn phases_need_a_name_and_a_time() {
        let text = "{\"phase\":\"setup\",\"unix_us\":1}\n{\"phase\":\"x\"}\n{\"unix_us\":3}\n";
        let (phases, skipped) = parse_phases(text);
        assert_eq!(
            phases,
            [PhaseMark {
                phase: "setup".into(),
                unix_us: 1
            }]
        );
        assert_eq!(skipped.len(), 2);
    }

    #[test]
    fn rank_summaries_tolerate_missing_wrong_and_extra_fields() {
        let text = r#"{"rank":3,"host":"h","slurm_node":null,"exit_code":76,"child_signal":"x",
            "deadline":{"kind":"stall","probe":"stopped","timeout_s":15,"waited_s":15.2},
            "ended_unix_us":5.0,"extra":{"a":1},"terminated_by":null,"reason":"  "}"#;
        let summary = parse_rank("BENCHMARK", 0, text).expect("parses");
        assert_eq!(summary.rank, 3);
        assert_eq!(summary.node(), Some("h"));
        assert_eq!(summary.exit_code, Some(76));
        assert_eq!(summary.child_signal, None);
        assert_eq!(summary.ended_unix_us, Some(5));
        assert_eq!(summary.reason, None);
        let deadline = summary.deadline.as_ref().expect("a deadline");
        assert_eq!(deadline.kind, "stall");
        assert_eq!(deadline.timeout_s, Some(15.0));
        assert!(summary.failed_on_its_own());

        let empty = parse_rank("GEN_0", 2, "{}").expect("parses");
        assert_eq!(empty.rank, 2);
        assert_eq!(empty.role, "GEN_0");
        assert!(!empty.failed());

        assert!(matches!(
            parse_rank("GEN_0", 0, "{\"rank\": 1, \"ho"),
            Err(ModelError::NotJson(_))
        ));
        assert_eq!(
            parse_rank("GEN_0", 0, "[]"),
            Err(ModelError::NotObject("an array"))
        );
    }

    #[test]
    fn role_steps_keep_start_order_and_last_end() {
        let (events, _) = parse_steps(concat!(
            "{\"event\":\"started\",\"role\":\"GEN_0\",\"log\":\"/g.log\",\"unix_us\":1}\n",
            "{\"event\":\"started\",\"role\":\"BENCHMARK\",\"log\":\"/b.log\",\"unix_us\":2}\n",
            "{\"event\":\"ended\",\"role\":\"BENCHMARK\",\"code\":0,\"unix_us\":3}\n",
            "{\"event\":\"ended\",\"role\":\"LATE\",\"code\":1}\n",
        ));
        let roles = role_steps(&events);
        let names: Vec<&str> = roles.iter().map(|step| step.role.as_str()).collect();
        assert_eq!(names, ["GEN_0", "BENCHMARK", "LATE"]);
        assert_eq!(roles[0].ended, None);
        assert!(!roles[1].ended_badly());
        assert!(roles[2].ended_badly());
        assert_eq!(roles[1].log.as_deref(), Some("/b.log"));
    }

    #[test]
    fn complete_lines_leave_out_a_line_being_written() {
        let cases = [
            ("", ""),
            ("{\"a\"", ""),
            ("a\n", "a\n"),
            ("a\nb\n{\"pha", "a\nb\n"),
            ("a\n\n", "a\n\n"),
        ];
        for (text, want) in cases {
            assert_eq!(complete_lines(text), want, "{text:?}");
        }
        assert_eq!(rank_phase_since(r#"{"phase_since_unix_us":12}"#), Some(12));
        assert_eq!(rank_phase_since(r#"{"phase_since_unix_us":null}"#), None);
        assert_eq!(rank_phase_since("{\"phase_since_un"), None);
    }

    #[test]
    fn verdict_records_tolerate_missing_and_wrong_fields() {
        let text = r#"{"verdict":"FAIL","line":"verdict: FAIL (GEN_0 rank 1)","code":134,
            "job_id":"17","unix_us":9,"blamed":{"role":"GEN_0","rank":1,"host":"n2",
            "cause":"killed by SIGABRT","first_error":{"file":"/w/g.log","line":3,"text":"x"}},
            "roles":[{"role":"GEN_0","outcome":"failed"},{"outcome":"passed"},7]}"#;
        let record = parse_verdict(text).expect("parses");
        assert_eq!(record.passed(), Some(false));
        assert_eq!(record.code, Some(134));
        let blamed = record.blamed.as_ref().expect("blamed");
        assert_eq!((blamed.role.as_str(), blamed.rank), ("GEN_0", Some(1)));
        assert_eq!(
            blamed.first_error.as_ref().and_then(|found| found.line),
            Some(3)
        );
        assert_eq!(record.roles.len(), 1);

        let pass = parse_verdict(r#"{"verdict":"PASS","blamed":null,"roles":{}}"#).expect("ok");
        assert_eq!(pass.passed(), Some(true));
        assert_eq!(pass.blamed, None);
        let odd = parse_verdict(r#"{"verdict":3,"blamed":{"rank":1}}"#).expect("parses");
        assert_eq!(odd.passed(), None);
        assert_eq!(odd.blamed, None, "a blamed without a role is none");
        assert!(matches!(
            parse_verdict("{\"verdict\": \"FA"),
            Err(ModelError::NotJson(_))
        ));
    }
}
