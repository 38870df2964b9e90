//! Hangs become verdicts, on a real Slurm cluster: the demo job with one stand-in hanging on
//! purpose (`scripts/demo --hang ROLE[:RANK]:MODE`, budgets ready 20 s, stall 15 s), and with a
//! crashing rank. Each must end with a verdict that names the role (the server, not the client
//! that noticed), the rank, the phase and the budget, within the budget + 10 s of the moment
//! the stand-in started to hang; print the evidence (a log tail, the first error line); write
//! `verdict.json` and `junit.xml`; and leave nothing running.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use e2e_tests::{bin_dir, marked_processes, root, run};

struct Case {
    spec: &'static str,
    role: &'static str,
    /// Parts of the verdict line.
    says: &'static [&'static str],
    /// The budget that must end it, in seconds.
    budget: u64,
}

struct Ended {
    stdout: String,
    all: String,
    work: PathBuf,
    verdict: serde_json::Value,
}

/// Runs the demo with `args` (plus `--keep`) and a process mark, and checks that nothing is
/// left running.
fn demo(args: &[&str]) -> Ended {
    demo_watched(args, |_| {})
}

/// Like [`demo`], calling `during` with the job's workspace while the job runs.
fn demo_watched(args: &[&str], during: impl FnOnce(&Path)) -> Ended {
    let mark = format!("hang.{}.{}", std::process::id(), args.join("_"));
    let bin = bin_dir();
    let mut child = Command::new(root().join("scripts/demo"))
        .args(["--bin-dir", bin.to_str().unwrap(), "--keep"])
        .args(args)
        .env("SHIM_TEST_MARK", &mark)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("scripts/demo runs");
    let (lines, seen) = mpsc::channel::<String>();
    let stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let mut stderr = child.stderr.take().expect("stderr");
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    let workspace = loop {
        match seen.recv_timeout(Duration::from_secs(300)) {
            Ok(line) => {
                if let Some(rest) = line.strip_prefix("workspace: ") {
                    break rest.split(' ').next().map(PathBuf::from);
                }
            }
            Err(_) => break None,
        }
    };
    if let Some(workspace) = &workspace {
        during(workspace);
    }
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(600) {
            let _ = child.kill();
            panic!("scripts/demo {args:?} did not end within 600 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = e2e_tests::Output {
        code: status.code(),
        stdout: reader.join().unwrap_or_default(),
        stderr: errors.join().unwrap_or_default(),
        took: started.elapsed(),
    };
    let all = format!("stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    assert!(workspace.is_some(), "no `workspace:` line: {all}");
    let work = out
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("work directory kept: "))
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no work directory: {all}"));
    assert_eq!(out.code, Some(1), "{all}");
    let left = marked_processes(&mark);
    assert!(left.is_empty(), "left running: {left:?}\n{all}");
    let text = std::fs::read_to_string(work.join("job/verdict.json"))
        .unwrap_or_else(|e| panic!("verdict.json: {e}\n{all}"));
    let verdict = serde_json::from_str(&text).expect("verdict.json is JSON");
    Ended {
        stdout: out.stdout,
        all,
        work,
        verdict,
    }
}

/// The `unix_us=` of the stand-in's "hanging on purpose" line, from the job's logs.
fn hang_started(job: &Path) -> Option<u64> {
    let mut first: Option<u64> = None;
    for entry in std::fs::read_dir(job).ok()?.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        for line in text.lines().filter(|l| l.contains("hanging on purpose")) {
            let us = line
                .split("unix_us=")
                .nth(1)
                .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(us) = us {
                first = Some(first.map_or(us, |f| f.min(us)));
            }
        }
    }
    first
}

fn check(case: &Case) {
    let ended = check_watched(case, |_| {});
    let _ = std::fs::remove_dir_all(&ended.work);
}

fn check_watched(case: &Case, during: impl FnOnce(&Path)) -> Ended {
    let ended = demo_watched(&["--hang", case.spec], during);
    let all = &ended.all;
    let line = ended.stdout.lines().last().unwrap_or("");
    assert!(
        line.starts_with(&format!("verdict: FAIL ({} rank ", case.role)),
        "{}: {line}\n{all}",
        case.spec
    );
    for part in case.says {
        assert!(
            line.contains(part),
            "{}: `{part}` in {line}\n{all}",
            case.spec
        );
    }
    // The evidence before the verdict: a tail of the role's log and its first error line.
    assert!(
        ended
            .stdout
            .contains(&format!("launch-gen: evidence for {}", case.role)),
        "{all}"
    );
    assert!(
        ended
            .stdout
            .contains(&format!("first error line of {}", case.role))
            || ended.stdout.contains("no error-looking line in"),
        "{all}"
    );
    // The machine-readable verdict and the JUnit file.
    let v = &ended.verdict;
    assert_eq!(v["verdict"], "FAIL", "{v}");
    assert_eq!(v["blamed"]["role"], case.role, "{v}");
    let junit = std::fs::read_to_string(ended.work.join("job/junit.xml")).expect("junit.xml");
    assert!(
        junit.contains(&format!("name=\"{}\"", case.role)) && junit.contains("<failure"),
        "{junit}"
    );
    // Within the budget + 10 s of the moment the stand-in began to hang.
    let hung = hang_started(&ended.work.join("job"))
        .unwrap_or_else(|| panic!("no `hanging on purpose` line in the job's logs\n{all}"));
    let at = v["unix_us"].as_u64().expect("verdict time");
    let latency = Duration::from_micros(at.saturating_sub(hung));
    println!(
        "{}: hang -> verdict {:.1} s (budget {} s)",
        case.spec,
        latency.as_secs_f64(),
        case.budget
    );
    assert!(
        latency <= Duration::from_secs(case.budget + 10),
        "{}: {latency:?}\n{all}",
        case.spec
    );
    ended
}

#[test]
fn a_server_that_never_gets_ready_is_named_after_the_ready_budget() {
    check(&Case {
        spec: "CTX_0:not-ready",
        role: "CTX_0",
        says: &[
            "rank 0 on n2",
            "not ready after 20 s",
            "while starting",
            "log ctx_server_0.log",
        ],
        budget: 20,
    });
}

/// The wedged job is also watched while it runs: `launch-gen status` shows its ranks serving
/// and no verdict, `status --events` follows it to its verdict and exits there, and after the
/// job `status --json` and `report.html` say what happened.
#[test]
fn a_wedged_server_is_named_not_the_client_that_noticed() {
    let ended = check_watched(
        &Case {
            spec: "CTX_0:wedged",
            role: "CTX_0",
            says: &[
                "rank 0 on n2",
                "not answered",
                "while serving",
                "BENCHMARK",
                "no progress for 15 s",
            ],
            budget: 15,
        },
        watch_live,
    );
    let job = ended.work.join("job");
    let status = status(&job, &["--json"]);
    assert_eq!(status.code, Some(0), "{}", status.stderr);
    let json: serde_json::Value = serde_json::from_str(&status.stdout).expect("status JSON");
    assert_eq!(json["verdict"]["verdict"], "FAIL", "{json}");
    let rows = json["rows"].as_array().expect("rows");
    let ranks: Vec<_> = rows.iter().filter(|r| r["kind"] == "rank").collect();
    assert_eq!(ranks.len(), 6, "every rank of the demo: {json}");
    assert!(ranks.iter().all(|r| r["phase"] == "ended"), "{json}");
    let bench = rows
        .iter()
        .find(|r| r["role"] == "BENCHMARK")
        .expect("the benchmark's row");
    assert_eq!(bench["end"], "no progress", "{json}");
    let report = std::fs::read_to_string(job.join("report.html")).expect("report.html");
    assert!(
        report.contains("first-failure"),
        "the first failure is marked"
    );
    let _ = std::fs::remove_dir_all(&ended.work);
}

fn status(job: &Path, args: &[&str]) -> e2e_tests::Output {
    run(
        Command::new(bin_dir().join("launch-gen"))
            .arg("status")
            .arg(job)
            .args(args),
        Duration::from_secs(200),
    )
}

/// While the job runs: its ranks serving and no verdict yet; then the events to the verdict.
fn watch_live(job: &Path) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = status(job, &["--json"]);
        let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_default();
        let serving = json["rows"].as_array().map_or(0, |rows| {
            rows.iter().filter(|r| r["phase"] == "serving").count()
        });
        if serving >= 3 {
            assert!(json["verdict"].is_null(), "no verdict yet: {json}");
            let table = status(job, &[]);
            assert!(
                table.stdout.contains("serving") && table.stdout.contains("CTX_0"),
                "{}",
                table.stdout
            );
            assert!(
                table.stdout.lines().all(|l| l.chars().count() <= 80),
                "the table fits 80 columns:\n{}",
                table.stdout
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the job's ranks never showed as serving: {json}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let events = status(job, &["--events", "--timeout", "180"]);
    assert_eq!(events.code, Some(1), "a FAIL verdict: {}", events.stdout);
    for part in [
        "CTX_0 rank 0 ready",
        "servers ready",
        "BENCHMARK started",
        "stopping",
    ] {
        assert!(
            events.stdout.contains(part),
            "`{part}` in:\n{}",
            events.stdout
        );
    }
    assert!(
        events
            .stdout
            .lines()
            .last()
            .is_some_and(|l| l.contains(" verdict: FAIL (CTX_0 rank 0")),
        "{}",
        events.stdout
    );
}

#[test]
fn a_benchmark_that_stops_at_n_minus_1_is_a_stall() {
    check(&Case {
        spec: "BENCHMARK:stall",
        role: "BENCHMARK",
        says: &[
            "rank 0 on n1",
            "no progress for 15 s",
            "while serving",
            "log benchmark.log",
        ],
        budget: 15,
    });
}

#[test]
fn a_frozen_worker_rank_is_named_with_its_rank() {
    check(&Case {
        spec: "GEN_0:1:freeze",
        role: "GEN_0",
        says: &[
            "rank 1 on n1",
            "no progress for 15 s",
            "stopped",
            "while serving",
        ],
        budget: 15,
    });
}

#[test]
fn a_crashing_rank_is_named_with_its_signal() {
    let started = std::time::Instant::now();
    let ended = demo(&["--fail-rank", "GEN_0:1"]);
    // Cluster start, the job and the teardown, well under a minute; the reference waits for the
    // job's time limit.
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}: {}",
        started.elapsed(),
        ended.all
    );
    let all = &ended.all;
    let line = ended.stdout.lines().last().unwrap_or("");
    assert!(
        line.starts_with("verdict: FAIL (GEN_0 rank 1 on n1: killed by SIGABRT while serving"),
        "{line}\n{all}"
    );
    assert!(line.ends_with("; log gen_server_0.log)"), "{line}\n{all}");
    assert!(
        ended.stdout.contains("launch-gen: evidence for GEN_0"),
        "{all}"
    );
    assert_eq!(
        ended.verdict["blamed"]["signal"], "SIGABRT",
        "{}",
        ended.verdict
    );
    // The report marks the rank that failed first, and only it.
    let report = std::fs::read_to_string(ended.work.join("job/report.html")).expect("report.html");
    assert!(
        report.contains(r#"<g class="rank first-failure" data-role="GEN_0" data-rank="1""#),
        "the report marks GEN_0 rank 1"
    );
    assert_eq!(report.matches(r#"class="rank first-failure""#).count(), 1);
    let _ = std::fs::remove_dir_all(&ended.work);
}
