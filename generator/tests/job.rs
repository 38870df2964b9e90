//! `launch-gen verdict` and `launch-gen await-ready`, run through the real binary on job
//! workspaces made here.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const SECRET: &str = "hf_Sup3rSecretValue";
const HMAC: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn launch_gen(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_launch-gen"));
    command.args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().expect("launch-gen runs");
    Run {
        code: status.code().expect("launch-gen exits, not killed"),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

fn write(dir: &Path, path: &str, content: &str) {
    let path = dir.join(path);
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("create folders");
    std::fs::write(&path, content).expect("write fixture");
}

fn read(dir: &Path, path: &str) -> String {
    std::fs::read_to_string(dir.join(path)).unwrap_or_else(|error| panic!("{path}: {error}"))
}

fn steps(dir: &Path, ended: &[(&str, i64, i64)]) -> String {
    let mut text = String::new();
    let logs = [
        ("GEN_0", "gen_server_0.log"),
        ("CTX_0", "ctx_server_0.log"),
        ("DISAGG_SERVER", "disagg_server.log"),
        ("BENCHMARK", "benchmark.log"),
    ];
    for (i, (role, log)) in logs.iter().enumerate() {
        text.push_str(&format!(
            "{{\"event\":\"started\",\"role\":\"{role}\",\"log\":\"{}\",\"unix_us\":{}}}\n",
            dir.join(log).display(),
            1_000_000 + i as i64
        ));
    }
    for (role, code, at) in ended {
        text.push_str(&format!(
            "{{\"event\":\"ended\",\"role\":\"{role}\",\"code\":{code},\"unix_us\":{at}}}\n"
        ));
    }
    text
}

const PHASES: &str = concat!(
    "{\"phase\":\"setup\",\"unix_us\":1000000}\n",
    "{\"phase\":\"servers_started\",\"unix_us\":1000010}\n",
    "{\"phase\":\"servers_ready\",\"unix_us\":2000000}\n",
    "{\"phase\":\"benchmark_started\",\"unix_us\":2000001}\n",
    "{\"phase\":\"stopping\",\"unix_us\":9000000}\n",
    "{\"phase\":\"verdict\",\"unix_us\":9500000}\n",
);

/// A workspace where CTX_0 stopped answering: the router says so, the benchmark stalls.
fn wedged_workspace(dir: &Path) {
    write(
        dir,
        "steps.jsonl",
        &(steps(
            dir,
            &[
                ("BENCHMARK", 76, 8_000_000),
                ("GEN_0", 143, 9_100_000),
                ("CTX_0", 143, 9_100_000),
            ],
        ) + "{\"event\":\"ended\",\"role\":\"DISAGG_"),
    );
    write(dir, "phases.jsonl", PHASES);
    write(
        dir,
        "ranks/CTX_0.0.json",
        r#"{"rank":0,"role":"CTX_0","host":"n3.cluster","slurm_node":"n3","exit_code":143,
            "child_exit_code":null,"child_signal":15,"reason":null,"started_unix_us":1000100,
            "ended_unix_us":9100000,"phase":"ended","end_phase":"serving",
            "ready_unix_us":1900000,"last_progress_unix_us":3000000,"deadline":null,
            "terminated_by":"SIGTERM","children":[],"future_field":{"x":1}}"#,
    );
    // Caught half-written (no rename yet would never show this, but a copy might).
    write(
        dir,
        "ranks/CTX_0.1.json",
        "{\"rank\":1,\"host\":\"n3\",\"exit_",
    );
    write(dir, "ranks/CTX_0.1.json.tmp.77", "{");
    write(
        dir,
        "ranks/BENCHMARK.0.json",
        r#"{"rank":0,"role":"BENCHMARK","host":"n1","slurm_node":null,"exit_code":76,
            "child_exit_code":null,"child_signal":9,"reason":"no progress within --stall-timeout",
            "started_unix_us":1000200,"ended_unix_us":8000000,"phase":"ended",
            "end_phase":"serving","ready_unix_us":null,"last_progress_unix_us":7000000,
            "deadline":{"kind":"stall","probe":"output","timeout_s":15.0,"waited_s":15.1},
            "terminated_by":null,"children":[]}"#,
    );
    write(
        dir,
        "ctx_server_0.log",
        &format!(
            "0: INFO: Uvicorn running on http://0.0.0.0:4123\n0: using token {SECRET}\n0: hmac {HMAC}\n0: waiting\n"
        ),
    );
    write(
        dir,
        "disagg_server.log",
        "0: INFO: routing\n0: warning: CTX_0 (n3:4123) has not answered request 5 for 6 s\n0: warning: CTX_0 (n3:4123) has not answered request 6 for 6 s\n",
    );
    write(
        dir,
        "benchmark.log",
        "0: request 1 ok\n0: ERROR: rank-launch: no progress for 15 s\nsrun: error: n1: task 0: Exited with exit code 76\n",
    );
    write(dir, "gen_server_0.log", "0: serving\n");
}

#[test]
fn verdict_blames_the_server_that_did_not_answer_and_hides_secrets() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let ws = dir.path();
    wedged_workspace(ws);
    let ws_arg = ws.to_str().expect("UTF-8 path");
    let run = launch_gen(
        &[
            "verdict",
            ws_arg,
            "--fail-role",
            "BENCHMARK",
            "--fail-detail",
            "exit 76",
            "--code",
            "76",
            "--job-id",
            "4242",
        ],
        &[("HF_TOKEN", SECRET)],
    );
    assert_eq!(run.code, 76, "{}\n{}", run.stdout, run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines.last().copied(),
        Some(
            "verdict: FAIL (CTX_0 rank 0 on n3: requests not answered while serving (DISAGG_SERVER: CTX_0 (n3:4123) has not answered request 5 for 6 s); noticed as BENCHMARK: no progress for 15 s; log ctx_server_0.log)"
        ),
        "{}",
        run.stdout
    );
    let ctx_log = ws.join("ctx_server_0.log");
    assert_eq!(
        lines[0],
        format!("launch-gen: evidence for CTX_0 ({}):", ctx_log.display())
    );
    assert!(lines.contains(&"  | 0: using token ***"), "{}", run.stdout);
    assert!(lines.contains(&"  | 0: hmac ***"), "{}", run.stdout);
    assert!(lines.contains(&"launch-gen: no error-looking line in ctx_server_0.log"));
    assert!(lines.contains(
        &"launch-gen: first error line of BENCHMARK: benchmark.log:2: 0: ERROR: rank-launch: no progress for 15 s"
    ));
    // The half-written summary and the torn steps line are skipped, each with one note.
    assert!(
        run.stderr.contains("skipped") && run.stderr.contains("CTX_0.1.json"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains(".tmp.77"), "{}", run.stderr);
    assert!(run.stderr.contains("steps.jsonl"), "{}", run.stderr);

    let json = read(ws, "verdict.json");
    let junit = read(ws, "junit.xml");
    for (name, text) in [
        ("stdout", &run.stdout),
        ("verdict.json", &json),
        ("junit.xml", &junit),
    ] {
        assert!(!text.contains(SECRET), "{name} shows the secret:\n{text}");
        assert!(!text.contains(HMAC), "{name} shows the HMAC key:\n{text}");
    }
    let value: serde_json::Value = serde_json::from_str(&json).expect("verdict.json is JSON");
    assert_eq!(value["verdict"], "FAIL");
    assert_eq!(value["code"], 76);
    assert_eq!(value["job_id"], "4242");
    assert_eq!(value["blamed"]["role"], "CTX_0");
    assert_eq!(value["blamed"]["noticed_by"], "BENCHMARK");
    assert_eq!(value["line"], *lines.last().expect("a verdict line"));
    let outcomes: Vec<(String, String)> = value["roles"]
        .as_array()
        .expect("roles")
        .iter()
        .map(|role| {
            (
                role["role"].as_str().unwrap_or_default().to_owned(),
                role["outcome"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let outcomes: Vec<(&str, &str)> = outcomes
        .iter()
        .map(|(role, outcome)| (role.as_str(), outcome.as_str()))
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
    assert!(junit.starts_with("<?xml"), "{junit}");
    assert!(
        junit.contains("<testsuite name=\"launch-gen job 4242\" tests=\"4\" failures=\"2\""),
        "{junit}"
    );
    assert_eq!(junit.matches("<testcase ").count(), 4, "{junit}");
}

#[test]
fn verdict_names_the_crashed_rank_and_its_first_error_line() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let ws = dir.path();
    write(
        ws,
        "steps.jsonl",
        &steps(
            ws,
            &[("GEN_0", 134, 3_000_000), ("BENCHMARK", 143, 9_100_000)],
        ),
    );
    write(ws, "phases.jsonl", PHASES);
    write(
        ws,
        "ranks/GEN_0.0.json",
        r#"{"rank":0,"host":"n1","exit_code":143,"child_signal":15,"ended_unix_us":2900000,
            "terminated_by":"SIGTERM","end_phase":"serving"}"#,
    );
    write(
        ws,
        "ranks/GEN_0.1.json",
        r#"{"rank":1,"host":"n2.local","slurm_node":"n2","exit_code":134,"child_signal":6,
            "ended_unix_us":2950000,"terminated_by":null,"end_phase":"serving"}"#,
    );
    write(
        ws,
        "gen_server_0.log",
        "0: serving\n1: serving\n1: terminate called after throwing an instance of 'std::bad_alloc'\nsrun: error: n2: task 1: Aborted (core dumped)\n",
    );
    let run = launch_gen(
        &[
            "verdict",
            ws.to_str().expect("UTF-8"),
            "--fail-role",
            "GEN_0",
            "--fail-detail",
            "exit 134",
            "--code",
            "134",
        ],
        &[],
    );
    assert_eq!(run.code, 134, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.ends_with(
        "launch-gen: first error line of GEN_0: gen_server_0.log:4: srun: error: n2: task 1: Aborted (core dumped)\nverdict: FAIL (GEN_0 rank 1 on n2: killed by SIGABRT while serving; log gen_server_0.log)\n"
    ), "{}", run.stdout);
    let value: serde_json::Value =
        serde_json::from_str(&read(ws, "verdict.json")).expect("verdict.json is JSON");
    assert_eq!(value["blamed"]["signal"], "SIGABRT");
    assert_eq!(value["blamed"]["rank"], 1);
    assert_eq!(value["blamed"]["first_error"]["line"], 4);
    assert_eq!(value["job_id"], serde_json::Value::Null);
    let junit = read(ws, "junit.xml");
    let dir_name = ws
        .file_name()
        .expect("a name")
        .to_string_lossy()
        .into_owned();
    assert!(
        junit.contains(&format!("name=\"launch-gen job {dir_name}\"")),
        "{junit}"
    );
    assert!(junit.contains("type=\"SIGABRT\""), "{junit}");
}

#[test]
fn verdict_passes() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let ws = dir.path();
    write(
        ws,
        "steps.jsonl",
        &steps(
            ws,
            &[
                ("BENCHMARK", 0, 5_000_000),
                ("GEN_0", 0, 5_100_000),
                ("CTX_0", 0, 5_100_000),
                ("DISAGG_SERVER", 0, 5_200_000),
            ],
        ),
    );
    let run = launch_gen(
        &["verdict", ws.to_str().expect("UTF-8"), "--code", "0"],
        &[],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, "verdict: PASS\n");
    assert_eq!(run.stderr, "");
    let value: serde_json::Value =
        serde_json::from_str(&read(ws, "verdict.json")).expect("verdict.json is JSON");
    assert_eq!(value["verdict"], "PASS");
    assert_eq!(value["blamed"], serde_json::Value::Null);
    let junit = read(ws, "junit.xml");
    assert!(junit.contains("failures=\"0\""), "{junit}");
    assert_eq!(junit.matches("<testcase ").count(), 4, "{junit}");
}

#[test]
fn verdict_of_an_empty_workspace_still_says_what_the_script_saw() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let run = launch_gen(
        &[
            "verdict",
            dir.path().to_str().expect("UTF-8"),
            "--fail-role",
            "SETUP",
            "--fail-detail",
            "the plan needs 3 nodes, the allocation has 2",
            "--code",
            "1",
        ],
        &[],
    );
    assert_eq!(run.code, 1);
    assert_eq!(
        run.stdout,
        "launch-gen: no log for SETUP\nverdict: FAIL (SETUP: the plan needs 3 nodes, the allocation has 2)\n"
    );
    let junit = read(dir.path(), "junit.xml");
    assert!(junit.contains("name=\"SETUP\""), "{junit}");
    assert!(junit.contains("failures=\"1\""), "{junit}");
}

#[test]
fn bad_input_exits_2() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let missing = dir.path().join("missing");
    let missing = missing.to_str().expect("UTF-8");
    let run = launch_gen(&["verdict", missing, "--code", "0"], &[]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.starts_with("error: ") && run.stderr.contains(missing),
        "{}",
        run.stderr
    );
    assert!(!dir.path().join("missing").exists());

    let file = dir.path().join("file");
    std::fs::write(&file, "").expect("write");
    let run = launch_gen(
        &["verdict", file.to_str().expect("UTF-8"), "--code", "0"],
        &[],
    );
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("expected a directory"),
        "{}",
        run.stderr
    );

    let ws = dir.path().to_str().expect("UTF-8");
    for args in [
        vec!["verdict", ws],
        vec!["verdict", ws, "--code", "x"],
        vec!["verdict", ws, "--code", "256"],
        vec!["verdict", ws, "--code", "1", "--fail-role", "GEN_0"],
        vec!["verdict", "--code", "1"],
        vec!["await-ready", ws, "--timeout", "1"],
        vec!["await-ready", ws, "--roles", "GEN_0", "--timeout", "-1"],
        vec!["await-ready", ws, "--roles", "../x", "--timeout", "1"],
        vec!["await-ready", missing, "--roles", "GEN_0", "--timeout", "1"],
    ] {
        let run = launch_gen(&args, &[]);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains("error"), "{args:?}: {}", run.stderr);
    }
}

#[test]
fn help_exits_0() {
    for command in ["verdict", "await-ready"] {
        let run = launch_gen(&[command, "--help"], &[]);
        assert_eq!(run.code, 0, "{command}: {}", run.stderr);
        assert!(run.stdout.contains("DIR"), "{command}: {}", run.stdout);
    }
}

#[test]
fn await_ready_marks_servers_ready_once_the_summaries_say_so() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let ws = dir.path().to_path_buf();
    write(&ws, "phases.jsonl", "{\"phase\":\"setup\",\"unix_us\":1}\n");
    let writer = {
        let ws = ws.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            write(
                &ws,
                "ranks/GEN_0.0.json",
                "{\"rank\":0,\"ready_unix_us\":50}",
            );
            // Half-written first, then complete.
            write(&ws, "ranks/CTX_0.0.json", "{\"rank\":0,\"ready_un");
            std::thread::sleep(Duration::from_millis(600));
            write(
                &ws,
                "ranks/CTX_0.0.json",
                "{\"rank\":0,\"ready_unix_us\":70}",
            );
            write(
                &ws,
                "ranks/DISAGG_SERVER.0.json",
                "{\"rank\":0,\"ready_unix_us\":null,\"phase\":\"starting\"}",
            );
            std::thread::sleep(Duration::from_millis(300));
            write(
                &ws,
                "ranks/DISAGG_SERVER.0.json",
                "{\"rank\":0,\"ready_unix_us\":60,\"phase\":\"serving\"}",
            );
        })
    };
    let started = Instant::now();
    let run = launch_gen(
        &[
            "await-ready",
            ws.to_str().expect("UTF-8"),
            "--roles",
            "GEN_0,CTX_0,DISAGG_SERVER",
            "--timeout",
            "30",
        ],
        &[],
    );
    writer.join().expect("the writer thread");
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(started.elapsed() >= Duration::from_millis(1000));
    assert!(started.elapsed() < Duration::from_secs(25));
    assert_eq!(
        read(&ws, "phases.jsonl"),
        "{\"phase\":\"setup\",\"unix_us\":1}\n{\"phase\":\"servers_ready\",\"unix_us\":70}\n"
    );
}

#[test]
fn await_ready_gives_up_after_the_timeout_or_when_a_server_ended() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let ws = dir.path();
    let ws_arg = ws.to_str().expect("UTF-8");
    let started = Instant::now();
    let run = launch_gen(
        &[
            "await-ready",
            ws_arg,
            "--roles",
            "GEN_0",
            "--timeout",
            "0.6",
        ],
        &[],
    );
    assert_eq!(run.code, 1);
    assert_eq!(run.stderr, "");
    assert!(started.elapsed() >= Duration::from_millis(600));
    assert!(!ws.join("phases.jsonl").exists());

    write(
        ws,
        "ranks/CTX_0.0.json",
        "{\"rank\":0,\"exit_code\":75,\"ready_unix_us\":null}",
    );
    let started = Instant::now();
    let run = launch_gen(
        &[
            "await-ready",
            ws_arg,
            "--roles",
            "GEN_0,CTX_0",
            "--timeout",
            "30",
        ],
        &[],
    );
    assert_eq!(run.code, 1);
    assert_eq!(run.stderr, "");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!ws.join("phases.jsonl").exists());
}
