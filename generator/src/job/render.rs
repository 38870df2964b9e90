//! The verdict as text (stdout), `verdict.json` and `junit.xml`. Pure: a [`Decision`] and
//! what was read of the logs in, text out. Every string that comes from the job goes through
//! the [`Redactor`] here, whatever was redacted before.

use std::collections::BTreeMap;

use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use serde::Serialize;

use super::model::{Deadline, RankSummary};
use super::redact::Redactor;
use super::scan::{self, LogFacts};
use super::verdict::{Decision, RoleOutcome, RoleReport};

/// The logs read, by role.
pub type Logs = BTreeMap<String, LogFacts>;

/// The evidence lines of one role: a header, the log's last lines, its first error line.
pub fn evidence(
    role: &str,
    log: Option<&str>,
    facts: Option<&LogFacts>,
    redactor: &Redactor,
) -> Vec<String> {
    let Some(path) = log else {
        return vec![format!("launch-gen: no log for {role}")];
    };
    let name = scan::basename(path);
    let mut lines = vec![format!("launch-gen: evidence for {role} ({path}):")];
    match facts.map(|facts| &facts.tail) {
        None => lines.push(format!("launch-gen: {name} was not read")),
        Some(Err(reason)) => lines.push(format!("launch-gen: cannot read {path}: {reason}")),
        Some(Ok(tail)) => {
            lines.extend(
                tail.iter()
                    .map(|line| format!("  | {}", clean(line, redactor))),
            );
            lines.push(match facts.and_then(|facts| facts.first_error.as_ref()) {
                Some(found) => format!(
                    "launch-gen: first error line of {role}: {name}:{}: {}",
                    found.number,
                    clean(&found.text, redactor)
                ),
                None => format!("launch-gen: no error-looking line in {name}"),
            });
        }
    }
    lines
        .into_iter()
        .map(|line| redactor.redact(&line).into_owned())
        .collect()
}

/// A log line as printed: redacted whole, then cut to [`scan::LINE_BYTES`].
fn clean(line: &str, redactor: &Redactor) -> String {
    let redacted = redactor.redact(line);
    scan::cut(redacted.trim_end(), scan::LINE_BYTES).to_owned()
}

fn role_evidence(decision: &Decision, role: &str, logs: &Logs, redactor: &Redactor) -> Vec<String> {
    let log = decision
        .role(role)
        .and_then(|report| report.log.as_deref())
        .or_else(|| {
            decision
                .blamed
                .as_ref()
                .filter(|blamed| blamed.role == role)
                .and_then(|blamed| blamed.log.as_deref())
        });
    evidence(role, log, logs.get(role), redactor)
}

/// What `verdict` prints on stdout: the evidence of each role that failed or got stuck, then
/// the verdict line.
pub fn text(decision: &Decision, logs: &Logs, redactor: &Redactor) -> String {
    let mut out = String::new();
    for role in &decision.evidence {
        for line in role_evidence(decision, role, logs, redactor) {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out.push_str(&redactor.redact(&decision.line));
    out.push('\n');
    out
}

/// A string of `verdict.json`: only [`Json::text`] makes one, and it redacts, so no string
/// from the job reaches the file unredacted.
#[derive(Debug, Serialize)]
#[serde(transparent)]
struct Text(String);

/// Builds the parts of `verdict.json` (field order as written).
struct Json<'a> {
    redactor: &'a Redactor,
}

impl Json<'_> {
    fn text(&self, text: &str) -> Text {
        Text(self.redactor.redact(text).into_owned())
    }

    fn opt(&self, text: Option<&str>) -> Option<Text> {
        text.map(|text| self.text(text))
    }

    fn deadline(&self, deadline: Option<&Deadline>) -> Option<DeadlineJson> {
        deadline.map(|deadline| DeadlineJson {
            kind: self.text(&deadline.kind),
            probe: self.opt(deadline.probe.as_deref()),
            timeout_s: deadline.timeout_s,
            waited_s: deadline.waited_s,
        })
    }

    fn signal(&self, signal: Option<i64>) -> Option<Text> {
        signal.map(|signal| self.text(&scan::signal_name(signal)))
    }

    fn rank(&self, rank: &RankSummary) -> RankJson {
        RankJson {
            rank: rank.rank,
            host: self.opt(rank.node()),
            exit_code: rank.exit_code,
            signal: self.signal(rank.child_signal),
            phase: self.opt(rank.phase.as_deref()),
            end_phase: self.opt(rank.end_phase.as_deref()),
            ready_unix_us: rank.ready_unix_us,
            started_unix_us: rank.started_unix_us,
            ended_unix_us: rank.ended_unix_us,
            deadline: self.deadline(rank.deadline.as_ref()),
            terminated_by: self.opt(rank.terminated_by.as_deref()),
            reason: self.opt(rank.reason.as_deref()),
        }
    }
}

#[derive(Debug, Serialize)]
struct VerdictJson {
    verdict: &'static str,
    line: Text,
    code: i32,
    job_id: Option<Text>,
    unix_us: i64,
    blamed: Option<BlamedJson>,
    roles: Vec<RoleJson>,
    phases: Vec<PhaseJson>,
}

#[derive(Debug, Serialize)]
struct BlamedJson {
    role: Text,
    rank: Option<i64>,
    host: Option<Text>,
    cause: Text,
    phase: Option<Text>,
    deadline: Option<DeadlineJson>,
    signal: Option<Text>,
    exit_code: Option<i64>,
    log: Option<Text>,
    first_error: Option<FirstErrorJson>,
    noticed_by: Option<Text>,
    noticed_cause: Option<Text>,
    router_line: Option<Text>,
    fail_detail: Text,
}

#[derive(Debug, Serialize)]
struct FirstErrorJson {
    file: Text,
    line: usize,
    text: Text,
}

#[derive(Debug, Serialize)]
struct DeadlineJson {
    kind: Text,
    probe: Option<Text>,
    timeout_s: Option<f64>,
    waited_s: Option<f64>,
}

#[derive(Debug, Serialize)]
struct RoleJson {
    role: Text,
    outcome: &'static str,
    code: Option<i64>,
    note: Option<Text>,
    log: Option<Text>,
    started_unix_us: Option<i64>,
    ended_unix_us: Option<i64>,
    ranks: Vec<RankJson>,
}

#[derive(Debug, Serialize)]
struct RankJson {
    rank: i64,
    host: Option<Text>,
    exit_code: Option<i64>,
    signal: Option<Text>,
    phase: Option<Text>,
    end_phase: Option<Text>,
    ready_unix_us: Option<i64>,
    started_unix_us: Option<i64>,
    ended_unix_us: Option<i64>,
    deadline: Option<DeadlineJson>,
    terminated_by: Option<Text>,
    reason: Option<Text>,
}

#[derive(Debug, Serialize)]
struct PhaseJson {
    phase: Text,
    unix_us: i64,
}

/// `verdict.json`.
pub fn json(decision: &Decision, logs: &Logs, redactor: &Redactor) -> String {
    let j = Json { redactor };
    let blamed = decision.blamed.as_ref().map(|blamed| {
        let rank = blamed.rank.as_ref();
        let step_code = decision.role(&blamed.role).and_then(|report| report.code);
        let first_error = logs
            .get(&blamed.role)
            .and_then(|facts| facts.first_error.as_ref());
        BlamedJson {
            role: j.text(&blamed.role),
            rank: rank.map(|rank| rank.rank),
            host: j.opt(rank.and_then(RankSummary::node)),
            cause: j.text(&blamed.cause.text),
            phase: j.opt(blamed.phase.as_deref()),
            deadline: j.deadline(rank.and_then(|rank| rank.deadline.as_ref())),
            // The signal that is the cause, not the TERM that ended a child after a deadline.
            signal: j.signal(
                rank.filter(|rank| rank.deadline.is_none())
                    .and_then(|rank| rank.child_signal),
            ),
            exit_code: rank.and_then(|rank| rank.exit_code).or(step_code),
            log: j.opt(blamed.log.as_deref()),
            first_error: blamed.log.as_deref().zip(first_error).map(|(log, found)| {
                FirstErrorJson {
                    file: j.text(log),
                    line: found.number,
                    text: Text(clean(&found.text, redactor)),
                }
            }),
            noticed_by: j.opt(blamed.noticed_by.as_deref()),
            noticed_cause: j.opt(blamed.noticed_cause.as_deref()),
            router_line: j.opt(blamed.router_line.as_deref()),
            fail_detail: j.text(&blamed.fail_detail),
        }
    });
    let document = VerdictJson {
        verdict: if decision.passed { "PASS" } else { "FAIL" },
        line: j.text(&decision.line),
        code: decision.code,
        job_id: j.opt(decision.job_id.as_deref()),
        unix_us: decision.now_us,
        blamed,
        roles: decision
            .roles
            .iter()
            .map(|report| RoleJson {
                role: j.text(&report.role),
                outcome: report.outcome.as_str(),
                code: report.code,
                note: j.opt(report.note.as_deref()),
                log: j.opt(report.log.as_deref()),
                started_unix_us: report.started_unix_us,
                ended_unix_us: report.ended_unix_us,
                ranks: report.ranks.iter().map(|rank| j.rank(rank)).collect(),
            })
            .collect(),
        phases: decision
            .phases
            .iter()
            .map(|mark| PhaseJson {
                phase: j.text(&mark.phase),
                unix_us: mark.unix_us,
            })
            .collect(),
    };
    // Plain data: serialisation cannot fail (non-finite floats become null).
    let mut text = serde_json::to_string_pretty(&document).unwrap_or_else(|_| "{}".into());
    text.push('\n');
    text
}

/// `text` with what XML 1.0 cannot carry at all (control characters other than tab, newline
/// and carriage return; U+FFFE, U+FFFF) replaced by U+FFFD. Escaping is quick-xml's.
fn xml_chars(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\t' | '\n' | '\r' => c,
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => '\u{fffd}',
            c => c,
        })
        .collect()
}

fn seconds_attr(seconds: f64) -> String {
    format!("{seconds:.3}")
}

struct Counts {
    failures: usize,
    skipped: usize,
    seconds: f64,
}

fn counts(decision: &Decision) -> Counts {
    let failures = decision
        .roles
        .iter()
        .filter(|report| report.outcome == RoleOutcome::Failed)
        .count();
    let skipped = decision
        .roles
        .iter()
        .filter(|report| matches!(report.outcome, RoleOutcome::Stopped | RoleOutcome::Running))
        .count();
    let started = decision
        .roles
        .iter()
        .filter_map(|report| report.started_unix_us)
        .min();
    let ended = decision
        .roles
        .iter()
        .map(|report| report.ended_unix_us.unwrap_or(decision.now_us))
        .max();
    let seconds = match (started, ended) {
        (Some(started), Some(ended)) => (ended.saturating_sub(started)).max(0) as f64 / 1e6,
        _ => 0.0,
    };
    Counts {
        failures,
        skipped,
        seconds,
    }
}

fn testcase(
    writer: &mut Writer<Vec<u8>>,
    decision: &Decision,
    report: &RoleReport,
    logs: &Logs,
    redactor: &Redactor,
) -> std::io::Result<()> {
    let name = xml_chars(&redactor.redact(&report.role));
    let time = seconds_attr(report.seconds);
    let start = BytesStart::new("testcase").with_attributes([
        ("classname", "disagg"),
        ("name", name.as_str()),
        ("time", time.as_str()),
    ]);
    match report.outcome {
        RoleOutcome::Passed => writer.write_event(Event::Empty(start)),
        RoleOutcome::Failed => {
            writer.write_event(Event::Start(start))?;
            let (message, kind) = match &report.cause {
                Some(cause) => (cause.text.clone(), cause.kind.type_name()),
                None => (
                    report
                        .code
                        .map_or_else(|| "failed".to_owned(), |code| format!("exit {code}")),
                    "exit".to_owned(),
                ),
            };
            let message = xml_chars(&redactor.redact(&message));
            let kind = xml_chars(&redactor.redact(&kind));
            let body = role_evidence(decision, &report.role, logs, redactor).join("\n");
            let body = xml_chars(&body);
            writer.write_event(Event::Start(
                BytesStart::new("failure")
                    .with_attributes([("message", message.as_str()), ("type", kind.as_str())]),
            ))?;
            writer.write_event(Event::Text(BytesText::new(&body)))?;
            writer.write_event(Event::End(BytesEnd::new("failure")))?;
            writer.write_event(Event::End(BytesEnd::new("testcase")))
        }
        RoleOutcome::Stopped | RoleOutcome::Running => {
            writer.write_event(Event::Start(start))?;
            let message = match (report.outcome, &decision.blamed) {
                (RoleOutcome::Running, _) => "still running when the verdict was made".to_owned(),
                (_, Some(blamed)) => format!("stopped by the job after {} failed", blamed.role),
                (_, None) => "stopped by the job".to_owned(),
            };
            let message = xml_chars(&redactor.redact(&message));
            writer.write_event(Event::Empty(
                BytesStart::new("skipped").with_attributes([("message", message.as_str())]),
            ))?;
            writer.write_event(Event::End(BytesEnd::new("testcase")))
        }
    }
}

fn junit_document(
    decision: &Decision,
    logs: &Logs,
    redactor: &Redactor,
) -> std::io::Result<Vec<u8>> {
    let mut writer = Writer::new_with_indent(Vec::new(), b' ', 2);
    writer.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    writer.write_event(Event::Start(BytesStart::new("testsuites")))?;
    let counts = counts(decision);
    let suite = xml_chars(&redactor.redact(&decision.suite));
    let tests = decision.roles.len().to_string();
    let failures = counts.failures.to_string();
    let skipped = counts.skipped.to_string();
    let time = seconds_attr(counts.seconds);
    writer.write_event(Event::Start(BytesStart::new("testsuite").with_attributes(
        [
            ("name", suite.as_str()),
            ("tests", tests.as_str()),
            ("failures", failures.as_str()),
            ("errors", "0"),
            ("skipped", skipped.as_str()),
            ("time", time.as_str()),
        ],
    )))?;
    for report in &decision.roles {
        testcase(&mut writer, decision, report, logs, redactor)?;
    }
    writer.write_event(Event::End(BytesEnd::new("testsuite")))?;
    writer.write_event(Event::End(BytesEnd::new("testsuites")))?;
    let mut bytes = writer.into_inner();
    bytes.push(b'\n');
    Ok(bytes)
}

/// `junit.xml`: one test case per role.
pub fn junit(decision: &Decision, logs: &Logs, redactor: &Redactor) -> String {
    // Writing into a Vec cannot fail; the document is UTF-8 because every piece is.
    let bytes = junit_document(decision, logs, redactor).unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use quick_xml::Reader;
    use serde_json::Value;

    use super::*;
    use crate::job::scan::NumberedLine;
    use crate::job::verdict::tests::wedged;
    use crate::job::verdict::{self, Request};

    fn wedged_report(redactor: &Redactor) -> (Decision, Logs) {
        let (job, unanswered, request) = wedged();
        let decision = verdict::decide(&job, Some(&unanswered), &request, redactor);
        let mut logs = Logs::new();
        logs.insert(
            "CTX_0".into(),
            LogFacts {
                tail: Ok(vec![
                    "0: INFO: Uvicorn running".into(),
                    "0: stuck with token=abcdef123 <&> \u{1b}[0m".into(),
                    format!("0: {}", "y".repeat(400)),
                ]),
                first_error: None,
            },
        );
        logs.insert(
            "BENCHMARK".into(),
            LogFacts {
                tail: Ok(vec!["0: ERROR: no progress".into()]),
                first_error: Some(NumberedLine {
                    number: 3,
                    text: "0: ERROR: no progress".into(),
                }),
            },
        );
        (decision, logs)
    }

    #[test]
    fn evidence_texts() {
        let redactor = Redactor::default();
        let facts = LogFacts {
            tail: Ok(vec![
                "0: a".into(),
                "srun: error: n2: task 1: Aborted".into(),
            ]),
            first_error: Some(NumberedLine {
                number: 2,
                text: "srun: error: n2: task 1: Aborted".into(),
            }),
        };
        assert_eq!(
            evidence(
                "GEN_0",
                Some("/w/gen_server_0.log"),
                Some(&facts),
                &redactor
            ),
            [
                "launch-gen: evidence for GEN_0 (/w/gen_server_0.log):",
                "  | 0: a",
                "  | srun: error: n2: task 1: Aborted",
                "launch-gen: first error line of GEN_0: gen_server_0.log:2: srun: error: n2: task 1: Aborted",
            ]
        );
        let quiet = LogFacts {
            tail: Ok(vec![]),
            first_error: None,
        };
        assert_eq!(
            evidence("CTX_0", Some("/w/c.log"), Some(&quiet), &redactor),
            [
                "launch-gen: evidence for CTX_0 (/w/c.log):",
                "launch-gen: no error-looking line in c.log",
            ]
        );
        let missing = LogFacts {
            tail: Err("no such file or directory".into()),
            first_error: None,
        };
        assert_eq!(
            evidence("CTX_0", Some("/w/c.log"), Some(&missing), &redactor),
            [
                "launch-gen: evidence for CTX_0 (/w/c.log):",
                "launch-gen: cannot read /w/c.log: no such file or directory",
            ]
        );
        assert_eq!(
            evidence("SETUP", None, None, &redactor),
            ["launch-gen: no log for SETUP"]
        );
    }

    #[test]
    fn text_has_evidence_then_the_verdict() {
        let (decision, logs) = wedged_report(&Redactor::default());
        let out = text(&decision, &logs, &Redactor::default());
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "launch-gen: evidence for CTX_0 (/w/ctx_server_0.log):"
        );
        assert!(lines.contains(&"  | 0: stuck with token=*** <&> \u{1b}[0m"));
        let long = lines
            .iter()
            .find(|line| line.contains("yyy"))
            .expect("long line");
        assert_eq!(long.len(), 4 + scan::LINE_BYTES);
        assert!(lines.contains(&"launch-gen: evidence for BENCHMARK (/w/benchmark.log):"));
        assert!(lines.contains(
            &"launch-gen: first error line of BENCHMARK: benchmark.log:3: 0: ERROR: no progress"
        ));
        assert_eq!(lines.last(), Some(&decision.line.as_str()));
        assert!(out.ends_with('\n'));
    }

    #[test]
    fn verdict_json_shape() {
        let (decision, logs) = wedged_report(&Redactor::default());
        let value: Value = serde_json::from_str(&json(&decision, &logs, &Redactor::default()))
            .expect("valid JSON");
        assert_eq!(value["verdict"], "FAIL");
        assert_eq!(value["line"], decision.line.as_str());
        assert_eq!(value["code"], 76);
        assert_eq!(value["job_id"], "1234");
        assert_eq!(value["unix_us"], 1_000);
        let blamed = &value["blamed"];
        for key in [
            "role",
            "rank",
            "host",
            "cause",
            "phase",
            "deadline",
            "signal",
            "exit_code",
            "log",
            "first_error",
            "noticed_by",
            "fail_detail",
        ] {
            assert!(blamed.get(key).is_some(), "blamed.{key} in {blamed}");
        }
        assert_eq!(blamed["role"], "CTX_0");
        assert_eq!(blamed["rank"], 0);
        assert_eq!(blamed["host"], "n3");
        assert_eq!(blamed["cause"], "requests not answered");
        assert_eq!(blamed["phase"], "serving");
        assert_eq!(blamed["noticed_by"], "BENCHMARK");
        assert_eq!(blamed["fail_detail"], "exit 76");
        assert_eq!(blamed["log"], "/w/ctx_server_0.log");
        assert_eq!(blamed["first_error"], Value::Null);
        let roles = value["roles"].as_array().expect("roles");
        assert_eq!(roles.len(), 4);
        assert_eq!(roles[3]["role"], "BENCHMARK");
        assert_eq!(roles[3]["outcome"], "failed");
        assert_eq!(roles[3]["code"], 76);
        let rank = &roles[3]["ranks"][0];
        for key in [
            "rank",
            "host",
            "exit_code",
            "signal",
            "phase",
            "end_phase",
            "ready_unix_us",
            "started_unix_us",
            "ended_unix_us",
            "deadline",
        ] {
            assert!(rank.get(key).is_some(), "rank.{key} in {rank}");
        }
        assert_eq!(rank["deadline"]["kind"], "stall");
        assert_eq!(rank["deadline"]["timeout_s"], 15.0);
        assert_eq!(value["phases"][1]["phase"], "servers_ready");

        let pass = verdict::decide(
            &verdict::Job::default(),
            None,
            &Request {
                fail: None,
                code: 0,
                job_id: None,
                now_us: 5,
            },
            &Redactor::default(),
        );
        let value: Value =
            serde_json::from_str(&json(&pass, &Logs::new(), &Redactor::default())).expect("JSON");
        assert_eq!(value["verdict"], "PASS");
        assert_eq!(value["blamed"], Value::Null);
        assert_eq!(value["job_id"], Value::Null);
    }

    #[test]
    fn json_strings_are_redacted() {
        let (decision, logs) = wedged_report(&Redactor::default());
        let redactor = Redactor::new([("SOME_SECRET", "ctx_server_0")]);
        let text = json(&decision, &logs, &redactor);
        assert!(!text.contains("ctx_server_0"), "{text}");
        serde_json::from_str::<Value>(&text).expect("still valid JSON");
    }

    /// A parsed test case: name, child element (`failure`, `skipped` or empty), its message,
    /// its text.
    #[derive(Debug, Default)]
    struct Case {
        name: String,
        child: String,
        message: Option<String>,
        text: String,
    }

    /// The test cases and the suite's attributes of a JUnit document, parsed back.
    fn parse_junit(xml: &str) -> (Vec<Case>, Vec<(String, String)>) {
        use quick_xml::XmlVersion;
        use quick_xml::escape::resolve_predefined_entity;

        let mut reader = Reader::from_str(xml);
        let mut cases: Vec<Case> = Vec::new();
        let mut suite = Vec::new();
        loop {
            let event = reader.read_event().expect("well-formed XML");
            let element = match &event {
                Event::Start(element) | Event::Empty(element) => element.clone(),
                Event::Text(text) => {
                    let text = text.xml10_content().expect("text");
                    if let Some(case) = cases.last_mut() {
                        case.text.push_str(&text);
                    }
                    continue;
                }
                Event::GeneralRef(reference) => {
                    let name = reference.decode().expect("a reference");
                    let resolved = resolve_predefined_entity(&name).expect("a predefined entity");
                    if let Some(case) = cases.last_mut() {
                        case.text.push_str(resolved);
                    }
                    continue;
                }
                Event::Eof => break,
                _ => continue,
            };
            let attr = |name: &str| {
                element
                    .try_get_attribute(name)
                    .expect("attributes")
                    .map(|value| {
                        value
                            .normalized_value(XmlVersion::Implicit1_0)
                            .expect("value")
                            .into_owned()
                    })
            };
            match element.name().as_ref() {
                b"testsuite" => {
                    for key in ["name", "tests", "failures", "skipped", "time"] {
                        suite.push((key.to_owned(), attr(key).expect("suite attribute")));
                    }
                }
                b"testcase" => {
                    assert_eq!(attr("classname").as_deref(), Some("disagg"));
                    assert!(attr("time").is_some());
                    cases.push(Case {
                        name: attr("name").expect("a name"),
                        ..Case::default()
                    });
                }
                b"failure" | b"skipped" => {
                    let case = cases.last_mut().expect("inside a testcase");
                    case.child = String::from_utf8_lossy(element.name().as_ref()).into_owned();
                    case.message = attr("message");
                    case.text.clear();
                }
                _ => {}
            }
        }
        (cases, suite)
    }

    #[test]
    fn junit_parses_back_with_one_testcase_per_role() {
        let (decision, logs) = wedged_report(&Redactor::default());
        let xml = junit(&decision, &logs, &Redactor::default());
        assert!(!xml.contains('\u{1b}'), "no control characters: {xml}");
        let (cases, suite) = parse_junit(&xml);
        let names: Vec<&str> = cases.iter().map(|case| case.name.as_str()).collect();
        assert_eq!(names, ["GEN_0", "CTX_0", "DISAGG_SERVER", "BENCHMARK"]);
        assert_eq!(cases[0].child, "skipped");
        assert_eq!(
            cases[0].message.as_deref(),
            Some("stopped by the job after CTX_0 failed")
        );
        assert_eq!(cases[1].child, "failure");
        assert_eq!(cases[1].message.as_deref(), Some("requests not answered"));
        let body = &cases[1].text;
        assert!(
            body.contains("launch-gen: evidence for CTX_0 (/w/ctx_server_0.log):"),
            "{body}"
        );
        assert!(body.contains("token=*** <&>"), "{body}");
        assert_eq!(cases[3].child, "failure");
        assert!(
            cases[3].text.contains("benchmark.log:3"),
            "{}",
            cases[3].text
        );
        let get = |key: &str| {
            suite
                .iter()
                .find(|(name, _)| name == key)
                .map(|(_, value)| value.as_str())
        };
        assert_eq!(get("name"), Some("launch-gen job 1234"));
        assert_eq!(get("tests"), Some("4"));
        assert_eq!(get("failures"), Some("2"));
        assert_eq!(get("skipped"), Some("2"));
        assert!(xml.contains("type=\"not-answered\""), "{xml}");
        assert!(xml.contains("type=\"stall\""), "{xml}");
    }

    #[test]
    fn xml_characters() {
        assert_eq!(xml_chars("a\tb\nc\u{1b}d\u{0}"), "a\tb\nc\u{fffd}d\u{fffd}");
    }
}
