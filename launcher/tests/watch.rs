//! Readiness and liveness deadlines, end to end: real children that get ready (or never do),
//! make progress (or stop making it, or are stopped), and what rank-launch makes of it: the
//! exit code (75 not ready, 76 no progress), the one error line, the summary JSON, and no
//! child left behind.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use common::{base_env, run, script, start, tempdir};

fn summary(path: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).expect("summary written");
    serde_json::from_str(&text).expect("summary is JSON")
}

/// Room for a loaded machine or an emulator on top of a deadline.
fn slack() -> Duration {
    if common::emulated() {
        Duration::from_secs(8)
    } else {
        Duration::from_secs(3)
    }
}

#[test]
fn a_ready_line_makes_the_rank_ready_and_the_child_keeps_its_code() {
    let dir = tempdir();
    let json = dir.path().join("s.json");
    let child = script(
        dir.path(),
        "serve.sh",
        "echo loading; sleep 0.3; echo 'INFO:     Uvicorn running on http://127.0.0.1:1 (Press CTRL+C to quit)'; sleep 0.3; exit 3",
    );
    let (status, r) = run(
        &[
            "--summary-json",
            json.to_str().unwrap(),
            "--ready-timeout",
            "20s",
            "--ready-line",
            "Uvicorn running on",
            "--",
            child.to_str().unwrap(),
        ],
        &base_env(),
    );
    assert_eq!(status.code(), Some(3), "{}", r.stderr());
    assert!(
        r.stdout().contains("Uvicorn running on"),
        "output passes through"
    );
    let s = summary(&json);
    assert!(s["ready_unix_us"].as_u64().is_some(), "{s}");
    assert!(s["ready_unix_us"].as_u64() > s["started_unix_us"].as_u64());
    assert_eq!(s["phase"], "ended");
    assert_eq!(s["end_phase"], "serving");
    assert!(s["deadline"].is_null());
    assert!(s["phase_since_unix_us"].as_u64() >= s["ready_unix_us"].as_u64());
}

#[test]
fn never_ready_is_exit_75_within_the_deadline_with_its_reason() {
    let dir = tempdir();
    let json = dir.path().join("s.json");
    let pidfile = dir.path().join("pid");
    let child = script(
        dir.path(),
        "never.sh",
        &format!(
            "echo $$ > {}; echo loading; exec sleep 60",
            pidfile.display()
        ),
    );
    let mut r = start(
        &[
            "--summary-json",
            json.to_str().unwrap(),
            "--grace-period",
            "2s",
            "--ready-timeout",
            "1500ms",
            "--ready-line",
            "Uvicorn running on",
            "--",
            child.to_str().unwrap(),
        ],
        &base_env(),
    );
    let (status, took) = r.wait();
    assert_eq!(status.code(), Some(75), "{}", r.stderr());
    assert!(took < Duration::from_millis(1500) + slack(), "{took:?}");
    let err = r.stderr();
    assert!(
        err.contains(
            "not ready after 1.5 s (--ready-timeout 1.5 s, probe: line /Uvicorn running on/)"
        ),
        "{err}"
    );
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        !common::alive(nix::unistd::Pid::from_raw(pid)),
        "the child is gone"
    );
    let s = summary(&json);
    assert_eq!(s["exit_code"], 75);
    assert_eq!(s["deadline"]["kind"], "ready");
    assert_eq!(s["end_phase"], "starting");
    assert!(s["ready_unix_us"].is_null());
}

#[test]
fn a_ready_url_and_a_ready_file_are_probes_too() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { break };
            let mut buf = [0u8; 512];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        }
    });
    let dir = tempdir();
    let json = dir.path().join("url.json");
    // The child ends once rank-launch said it is ready (in its summary).
    let child = script(
        dir.path(),
        "wait.sh",
        &format!(
            "for i in $(seq 200); do grep -q '\"phase\": \"serving\"' {} 2>/dev/null && exit 0; sleep 0.05; done; exit 9",
            json.display()
        ),
    );
    let url = format!("http://127.0.0.1:{port}/health");
    let (status, r) = run(
        &[
            "--summary-json",
            json.to_str().unwrap(),
            "--ready-timeout",
            "20s",
            "--ready-url",
            &url,
            "--",
            child.to_str().unwrap(),
        ],
        &base_env(),
    );
    assert_eq!(status.code(), Some(0), "{}", r.stderr());
    assert!(summary(&json)["ready_unix_us"].as_u64().is_some());

    let json = dir.path().join("file.json");
    let marker = dir.path().join("ready.marker");
    let child = script(
        dir.path(),
        "touch.sh",
        &format!(
            "sleep 0.2; touch {}; for i in $(seq 200); do grep -q '\"phase\": \"serving\"' {} 2>/dev/null && exit 0; sleep 0.05; done; exit 9",
            marker.display(),
            json.display()
        ),
    );
    let (status, r) = run(
        &[
            "--summary-json",
            json.to_str().unwrap(),
            "--ready-timeout",
            "20s",
            "--ready-file",
            marker.to_str().unwrap(),
            "--",
            child.to_str().unwrap(),
        ],
        &base_env(),
    );
    assert_eq!(status.code(), Some(0), "{}", r.stderr());
}

#[test]
fn output_that_stops_growing_is_a_stall_exit_76() {
    let dir = tempdir();
    let json = dir.path().join("s.json");
    // Progress without newlines (a progress bar), then silence.
    let child = script(
        dir.path(),
        "bench.sh",
        "for i in 1 2 3 4 5; do printf '\\rprogress: %d/6' $i; sleep 0.2; done; exec sleep 60",
    );
    let mut r = start(
        &[
            "--label",
            "--summary-json",
            json.to_str().unwrap(),
            "--grace-period",
            "2s",
            "--stall-timeout",
            "1500ms",
            "--",
            child.to_str().unwrap(),
        ],
        &base_env(),
    );
    let (status, took) = r.wait();
    assert_eq!(status.code(), Some(76), "{}", r.stderr());
    // Five steps of 0.2 s of progress, then the stall timeout.
    assert!(
        took >= Duration::from_millis(2200),
        "progress reset the clock: {took:?}"
    );
    assert!(took < Duration::from_millis(2500) + slack(), "{took:?}");
    assert!(
        r.stderr()
            .contains("no progress for 1.5 s (--stall-timeout 1.5 s, probe: output)"),
        "{}",
        r.stderr()
    );
    let s = summary(&json);
    assert_eq!(s["deadline"]["kind"], "stall");
    assert!(s["last_progress_unix_us"].as_u64().is_some(), "{s}");
}

#[test]
fn a_stopped_process_is_a_stall_and_the_term_reaches_it() {
    let dir = tempdir();
    let json = dir.path().join("s.json");
    // Quiet by nature (`stopped`): fine for a while, then it stops itself.
    let child = script(
        dir.path(),
        "worker.sh",
        "sleep 1; kill -STOP $$; echo continued; exit 0",
    );
    let mut r = start(
        &[
            "--summary-json",
            json.to_str().unwrap(),
            "--grace-period",
            "10s",
            "--stall-timeout",
            "1s",
            "--stall-probe",
            "stopped",
            "--",
            child.to_str().unwrap(),
        ],
        &base_env(),
    );
    let (status, took) = r.wait();
    assert_eq!(status.code(), Some(76), "{}", r.stderr());
    // The TERM is followed by a CONT: the stopped child ends on it, long before the 10 s grace.
    assert!(took < Duration::from_secs(2) + slack(), "{took:?}");
    assert!(r.stderr().contains("is stopped)"), "{}", r.stderr());
    let s = summary(&json);
    assert!(s["deadline"]["stopped_pid"].as_i64().is_some(), "{s}");
    assert_eq!(
        s["child_signal"], 15,
        "ended by the TERM once continued: {s}"
    );
}

#[test]
fn a_quiet_child_under_stopped_is_no_stall() {
    let dir = tempdir();
    let child = script(dir.path(), "quiet.sh", "sleep 2; exit 4");
    let (status, r) = run(
        &[
            "--stall-timeout",
            "500ms",
            "--stall-probe",
            "stopped",
            "--",
            child.to_str().unwrap(),
        ],
        &base_env(),
    );
    assert_eq!(status.code(), Some(4), "{}", r.stderr());
}

#[test]
fn the_live_summary_shows_the_phase_while_the_rank_runs() {
    let dir = tempdir();
    let json = dir.path().join("s.json");
    let child = script(
        dir.path(),
        "live.sh",
        &format!(
            "for i in $(seq 200); do grep -q '\"phase\": \"starting\"' {} 2>/dev/null && break; sleep 0.05; done; echo READY; sleep 0.5; exit 0",
            json.display()
        ),
    );
    let mut r = start(
        &[
            "--summary-json",
            json.to_str().unwrap(),
            "--ready-timeout",
            "20s",
            "--ready-line",
            "^READY$",
            "--",
            child.to_str().unwrap(),
        ],
        &base_env(),
    );
    let (status, _) = r.wait();
    assert_eq!(status.code(), Some(0), "{}", r.stderr());
    let s = summary(&json);
    assert!(
        s["ready_unix_us"].as_u64().is_some(),
        "the child saw `starting` first, then got ready: {s}"
    );
    assert_eq!(s["exit_code"], 0);
}

#[test]
fn a_deadline_gives_exactly_one_error_line() {
    let dir = tempdir();
    let child = script(dir.path(), "never.sh", "exec sleep 60");
    let (status, r) = run(
        &[
            "--grace-period",
            "1s",
            "--ready-timeout",
            "300ms",
            "--ready-file",
            dir.path().join("never").to_str().unwrap(),
            "--",
            child.to_str().unwrap(),
        ],
        &base_env(),
    );
    assert_eq!(status.code(), Some(75), "{}", r.stderr());
    let text = r.stderr();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains(" ERROR ")).collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(
        lines[0].contains("not ready after 0.3 s (--ready-timeout 0.3 s, probe: file "),
        "{text}"
    );
}

#[test]
fn the_last_progress_before_a_silence_reaches_the_live_summary() {
    let dir = tempdir();
    let json = dir.path().join("s.json");
    let child = script(dir.path(), "quiet.sh", "echo one; exec sleep 60");
    let mut r = start(
        &[
            "--summary-json",
            json.to_str().unwrap(),
            "--grace-period",
            "1s",
            "--stall-timeout",
            "30s",
            "--",
            child.to_str().unwrap(),
        ],
        &base_env(),
    );
    // Written at most every 5 s, and the last progress is written even when none follows.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let progress = loop {
        let seen = std::fs::read_to_string(&json)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|s| s["last_progress_unix_us"].as_u64());
        if let Some(us) = seen {
            break us;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no progress in the live summary: {}",
            r.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let s = summary(&json);
    assert!(s["exit_code"].is_null(), "still running: {s}");
    assert!(progress >= s["started_unix_us"].as_u64().unwrap());
    nix::sys::signal::kill(r.pid(), nix::sys::signal::Signal::SIGTERM).unwrap();
    let (status, _) = r.wait();
    assert_eq!(status.code(), Some(143), "{}", r.stderr());
}
