//! `launch-gen status`, run through the real binary on the workspaces of real demo jobs
//! (`tests/fixtures/jobs/`: `pass`, `crash` with rank 1 of GEN_0 killed by SIGABRT, `wedged`
//! with CTX_0 wedged, and `running`, the passing job as it stood while the benchmark ran),
//! and on copies of them written to while `status` follows them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_launch-gen");
/// The `verdict` phase of the `crash` fixture, plus one minute.
const CRASH_NOW: &str = "1796192675357428";
/// Every rank of the demo job.
const DEMO_RANKS: [(&str, i64); 6] = [
    ("GEN_0", 0),
    ("GEN_0", 1),
    ("CTX_0", 0),
    ("CTX_0", 1),
    ("DISAGG_SERVER", 0),
    ("BENCHMARK", 0),
];

fn fixture(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/jobs")
        .join(case)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy");
    for entry in std::fs::read_dir(from).expect("read the fixture") {
        let entry = entry.expect("an entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("a type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy a file");
        }
    }
}

/// A copy of fixture `case` in a fresh temporary directory, as `<tmp>/<case>`.
fn copy_fixture(case: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let dir = tmp.path().join(case);
    copy_dir(&fixture(case), &dir);
    (tmp, dir)
}

/// Writes `content` at `path` whole: a temporary file, then a rename (as the job does).
fn publish(path: &Path, content: &str) {
    let temp = path.with_extension("tmp.test");
    std::fs::write(&temp, content).expect("write");
    std::fs::rename(&temp, path).expect("rename");
}

fn append(path: &Path, content: &str) {
    use std::io::Write as _;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open to append");
    file.write_all(content.as_bytes()).expect("append");
}

/// A process whose output is collected as it comes.
struct Running {
    child: Child,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

fn collect(mut from: impl std::io::Read + Send + 'static) -> (Arc<Mutex<Vec<u8>>>, JoinHandle<()>) {
    let buffer = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&buffer);
    let reader = std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = from.read(&mut chunk) {
            if n == 0 {
                break;
            }
            sink.lock()
                .expect("the buffer")
                .extend_from_slice(&chunk[..n]);
        }
    });
    (buffer, reader)
}

impl Running {
    fn start(command: &mut Command) -> Running {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the command starts");
        let (stdout, out_reader) = collect(child.stdout.take().expect("stdout"));
        let (stderr, err_reader) = collect(child.stderr.take().expect("stderr"));
        Running {
            child,
            stdout,
            stderr,
            readers: vec![out_reader, err_reader],
        }
    }

    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().expect("the buffer")).into_owned()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().expect("the buffer")).into_owned()
    }

    /// Waits until stdout satisfies `done`; panics after `limit`.
    fn wait_for(&mut self, what: &str, limit: Duration, done: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + limit;
        while !done(&self.stdout()) {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "no {what} within {limit:?}; stdout:\n{}\nstderr:\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the exit; panics (after killing it) past `limit`.
    fn finish(mut self, limit: Duration) -> Run {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "still running after {limit:?}; stdout:\n{}\nstderr:\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        Run {
            code: status.code().expect("exits, not killed"),
            stdout: self.stdout(),
            stderr: self.stderr(),
        }
    }
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// `launch-gen ARGS`, bounded by `limit`.
fn launch_gen(args: &[&str], limit: Duration) -> Run {
    Running::start(Command::new(BIN).args(args)).finish(limit)
}

fn status(dir: &Path, extra: &[&str]) -> Run {
    let dir = dir.to_str().expect("a UTF-8 path");
    let mut args = vec!["status", dir];
    args.extend_from_slice(extra);
    launch_gen(&args, Duration::from_secs(20))
}

fn json(dir: &Path) -> serde_json::Value {
    let run = status(dir, &["--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    serde_json::from_str(&run.stdout).expect("one JSON document")
}

/// The table's rows as (role, rank, rest of the line's cells).
fn table_rows(table: &str) -> Vec<Vec<String>> {
    let mut lines = table.lines().skip_while(|line| !line.starts_with("ROLE "));
    lines.next();
    lines
        .map(|line| line.split_whitespace().map(str::to_owned).collect())
        .collect()
}

fn row<'a>(rows: &'a [Vec<String>], role: &str, rank: &str) -> &'a [String] {
    rows.iter()
        .find(|cells| cells[0] == role && cells[1] == rank)
        .unwrap_or_else(|| panic!("no row {role} {rank} in {rows:?}"))
}

fn assert_fits(text: &str, width: usize) {
    for line in text.lines() {
        assert!(
            line.chars().count() <= width,
            "wider than {width}: {line:?}\n{text}"
        );
    }
}

fn verdict_line(case: &str) -> String {
    let text = std::fs::read_to_string(fixture(case).join("verdict.json")).expect("verdict.json");
    let value: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    value["line"].as_str().expect("a line").to_owned()
}

#[test]
fn the_table_of_the_crashed_job() {
    let run = status(&fixture("crash"), &["--now-us", CRASH_NOW]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stderr, "");
    let expected = "\
job crash: phase verdict, ran 3.7s, ended 1m00s ago
verdict: FAIL (GEN_0 rank 1 on n1: killed by SIGABRT while serving; log
  gen_server_0.log)
ROLE            RANK  HOST  PHASE       TIME    IDLE  END
GEN_PRECHECK_0     -  -     ended       0.7s       -  0
CTX_PRECHECK_0     -  -     ended       0.8s       -  0
GEN_0              0  n1    ended       2.5s    1.4s  SIGTERM
GEN_0              1  n1    ended       2.3s       -  SIGABRT
CTX_0              0  n2    ended       2.6s    1.3s  SIGTERM
CTX_0              1  n2    ended       2.5s       -  SIGTERM
DISAGG_SERVER      0  n1    ended       2.5s    1.2s  SIGTERM
BENCHMARK          0  n1    ended       0.9s    0.0s  SIGTERM
";
    assert_eq!(run.stdout, expected, "{}", run.stdout);
}

#[test]
fn tables_of_finished_jobs_show_what_happened() {
    for case in ["pass", "crash", "wedged"] {
        let run = status(&fixture(case), &[]);
        assert_eq!(run.code, 0, "{case}: {}", run.stderr);
        assert_fits(&run.stdout, 80);
        // The verdict line, wrapped, is all there.
        let words: Vec<&str> = run.stdout.split_whitespace().collect();
        let verdict = verdict_line(case);
        let verdict_words: Vec<&str> = verdict.split_whitespace().collect();
        assert!(
            words
                .windows(verdict_words.len())
                .any(|window| window == verdict_words.as_slice()),
            "{case}: no `{verdict}` in\n{}",
            run.stdout
        );
        let rows = table_rows(&run.stdout);
        for (role, rank) in DEMO_RANKS {
            let cells = row(&rows, role, &rank.to_string());
            assert_eq!(cells[3], "ended", "{case}: {cells:?}");
        }
        for precheck in ["GEN_PRECHECK_0", "CTX_PRECHECK_0"] {
            assert_eq!(row(&rows, precheck, "-")[6], "0", "{case}");
        }
        assert_eq!(rows.len(), 8, "{case}: {rows:?}");
        let ends: Vec<&str> = DEMO_RANKS
            .iter()
            .map(|(role, rank)| row(&rows, role, &rank.to_string())[6].as_str())
            .collect();
        let want: &[&str] = match case {
            "pass" => &["0"; 6],
            "crash" => &[
                "SIGTERM", "SIGABRT", "SIGTERM", "SIGTERM", "SIGTERM", "SIGTERM",
            ],
            _ => &["SIGTERM", "SIGTERM", "SIGTERM", "SIGTERM", "SIGTERM", "no"],
        };
        assert_eq!(ends, want, "{case}:\n{}", run.stdout);
        if case == "wedged" {
            assert!(
                row(&rows, "BENCHMARK", "0")
                    .join(" ")
                    .ends_with("no progress"),
                "{}",
                run.stdout
            );
        }
    }
}

#[test]
fn json_of_finished_jobs() {
    for case in ["pass", "crash", "wedged"] {
        let value = json(&fixture(case));
        assert_eq!(value["version"], 1);
        assert_eq!(value["dir"], case);
        assert_eq!(value["job"]["phase"], "verdict");
        assert_eq!(value["job"]["finished"], true);
        assert_eq!(value["verdict"]["line"], verdict_line(case).as_str());
        let want = if case == "pass" { "PASS" } else { "FAIL" };
        assert_eq!(value["verdict"]["verdict"], want);
        let rows = value["rows"].as_array().expect("rows");
        assert_eq!(rows.len(), 8);
        for (role, rank) in DEMO_RANKS {
            let row = rows
                .iter()
                .find(|row| row["role"] == role && row["rank"] == rank)
                .unwrap_or_else(|| panic!("{case}: no {role} rank {rank}"));
            assert_eq!(row["kind"], "rank");
            assert_eq!(row["phase"], "ended");
            assert_eq!(row["host"], if role == "CTX_0" { "n2" } else { "n1" });
            assert!(row["ended_unix_us"].as_i64().is_some(), "{row}");
            assert!(row["ran_s"].as_f64().is_some_and(|s| s > 0.0), "{row}");
            assert_eq!(
                row["time_s"], row["ran_s"],
                "an ended rank's TIME is its run"
            );
        }
        let gen1 = rows
            .iter()
            .find(|row| row["role"] == "GEN_0" && row["rank"] == 1)
            .expect("GEN_0 rank 1");
        let bench = rows
            .iter()
            .find(|row| row["role"] == "BENCHMARK")
            .expect("BENCHMARK");
        match case {
            "crash" => {
                assert_eq!(gen1["signal"], "SIGABRT");
                assert_eq!(gen1["exit_code"], 134);
                assert_eq!(gen1["end"], "SIGABRT");
            }
            "wedged" => {
                assert_eq!(bench["deadline"], "stall");
                assert_eq!(bench["exit_code"], 76);
                assert_eq!(bench["end"], "no progress");
            }
            _ => {
                assert_eq!(gen1["end"], "0");
                assert_eq!(bench["step_code"], 0);
            }
        }
    }
}

#[test]
fn a_running_job_shows_serving_ranks_and_no_verdict() {
    let run = status(&fixture("running"), &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_fits(&run.stdout, 80);
    assert!(!run.stdout.contains("verdict"), "{}", run.stdout);
    assert!(
        run.stdout
            .starts_with("job running: phase benchmark_started for "),
        "{}",
        run.stdout
    );
    let rows = table_rows(&run.stdout);
    for (role, rank) in &DEMO_RANKS[..5] {
        let cells = row(&rows, role, &rank.to_string());
        assert_eq!(cells[3], "serving", "{cells:?}");
        assert_eq!(cells[6], "-", "no end while running: {cells:?}");
    }
    // The benchmark's step started, its summary is not there yet.
    assert_eq!(row(&rows, "BENCHMARK", "-")[3], "pending");

    let value = json(&fixture("running"));
    assert_eq!(value["verdict"], serde_json::Value::Null);
    assert_eq!(value["job"]["finished"], false);
    let gen0 = &value["rows"][2];
    assert_eq!(
        (gen0["role"].as_str(), gen0["rank"].as_i64()),
        (Some("GEN_0"), Some(0))
    );
    assert_eq!(gen0["exit_code"], serde_json::Value::Null);
    assert_eq!(gen0["phase_since_unix_us"], 1_796_192_602_203_718_i64);
    assert!(gen0["in_phase_s"].as_f64().is_some_and(|s| s > 0.0));
}

/// The UTC times of `--events` lines, checked to be in order.
fn event_times(stdout: &str) -> Vec<&str> {
    let times: Vec<&str> = stdout
        .lines()
        .map(|line| {
            let (time, what) = line.split_once(' ').expect("`<time> <what>`");
            assert_eq!(time.len(), "2026-12-02T06:10:14.853Z".len(), "{line}");
            assert!(time.ends_with('Z') && time.as_bytes()[10] == b'T', "{line}");
            assert!(!what.is_empty(), "{line}");
            time
        })
        .collect();
    assert!(
        times.windows(2).all(|pair| pair[0] <= pair[1]),
        "not in time order:\n{stdout}"
    );
    times
}

fn assert_no_repeats(stdout: &str) {
    let mut seen = std::collections::HashSet::new();
    for line in stdout.lines() {
        assert!(seen.insert(line), "repeated: {line}\n{stdout}");
    }
}

#[test]
fn events_of_finished_jobs_are_their_history() {
    for (case, code) in [("pass", 0), ("crash", 1), ("wedged", 1)] {
        let started = Instant::now();
        let run = status(&fixture(case), &["--events"]);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a finished job's events come at once"
        );
        assert_eq!(run.code, code, "{case}: {}{}", run.stdout, run.stderr);
        event_times(&run.stdout);
        assert_no_repeats(&run.stdout);
        let lines: Vec<&str> = run.stdout.lines().collect();
        assert!(lines[0].ends_with(" job setup"), "{case}: {}", run.stdout);
        let last = lines.last().expect("a last line");
        assert!(
            last.ends_with(&format!(" {}", verdict_line(case))),
            "{case}: {}",
            run.stdout
        );
        let has = |what: &str| lines.iter().any(|line| line.ends_with(what));
        for what in [
            " servers ready",
            " BENCHMARK started",
            " CTX_0 rank 0 ready (1.",
        ] {
            assert!(
                lines.iter().any(|line| line.contains(what)),
                "{case}: no `{what}` in\n{}",
                run.stdout
            );
        }
        match case {
            "crash" => {
                assert!(
                    has(" GEN_0 rank 1 failed: killed by SIGABRT"),
                    "{}",
                    run.stdout
                );
                assert!(has(" stopping"), "{}", run.stdout);
            }
            "wedged" => {
                assert!(
                    has(" BENCHMARK rank 0: no progress for 15 s"),
                    "{}",
                    run.stdout
                );
                assert!(has(" stopping"), "{}", run.stdout);
            }
            _ => {
                assert!(has(" BENCHMARK rank 0 ended (exit 0)"), "{}", run.stdout);
                assert!(has(" benchmark ended"), "{}", run.stdout);
            }
        }
    }
}

#[test]
fn events_of_a_running_job_stop_at_the_timeout() {
    let started = Instant::now();
    let run = status(&fixture("running"), &["--events", "--timeout", "1"]);
    assert_eq!(run.code, 3, "{}{}", run.stdout, run.stderr);
    assert!(started.elapsed() >= Duration::from_secs(1));
    event_times(&run.stdout);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(
        lines
            .iter()
            .any(|line| line.ends_with(" BENCHMARK started")),
        "the history so far: {}",
        run.stdout
    );
    assert!(
        lines
            .last()
            .is_some_and(|line| line.ends_with(" no verdict within --timeout 1 s: giving up")),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("verdict:"), "{}", run.stdout);
}

#[test]
fn events_follow_a_job_to_its_verdict() {
    let (_tmp, dir) = copy_fixture("running");
    let mut events = Running::start(
        Command::new(BIN)
            .args(["status", "--events", "--timeout", "60"])
            .arg(&dir),
    );
    events.wait_for("history", Duration::from_secs(20), |out| {
        out.contains(" BENCHMARK started\n")
    });
    let before = events.stdout();
    assert!(!before.contains("BENCHMARK rank 0"), "{before}");

    // The benchmark and then the servers end, the script records it, the verdict comes:
    // every record of the passed job that the running one lacks, written in the order of its
    // time, as the job wrote them.
    let pass = fixture("pass");
    let read = |path: &str| std::fs::read_to_string(pass.join(path)).expect("a pass record");
    let time = |text: &str, key: &str| -> i64 {
        let value: serde_json::Value = serde_json::from_str(text).expect("JSON");
        value[key].as_i64().expect("a time")
    };
    let mut writes: Vec<(i64, PathBuf, String, bool)> = Vec::new();
    for name in [
        "BENCHMARK.0",
        "DISAGG_SERVER.0",
        "GEN_0.0",
        "GEN_0.1",
        "CTX_0.0",
        "CTX_0.1",
    ] {
        let text = read(&format!("ranks/{name}.json"));
        let path = dir.join(format!("ranks/{name}.json"));
        writes.push((time(&text, "ended_unix_us"), path, text, true));
    }
    for line in read("steps.jsonl").lines() {
        if line.contains("\"ended\"") && !line.contains("PRECHECK") {
            let path = dir.join("steps.jsonl");
            writes.push((time(line, "unix_us"), path, format!("{line}\n"), false));
        }
    }
    for line in read("phases.jsonl")
        .lines()
        .skip_while(|line| !line.contains("benchmark_ended"))
    {
        let path = dir.join("phases.jsonl");
        writes.push((time(line, "unix_us"), path, format!("{line}\n"), false));
    }
    writes.sort_by_key(|(time, ..)| *time);
    for (_, path, text, whole) in &writes {
        if *whole {
            publish(path, text);
        } else {
            append(path, text);
        }
    }
    publish(&dir.join("verdict.json"), &read("verdict.json"));

    let run = events.finish(Duration::from_secs(20));
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.starts_with(&before));
    event_times(&run.stdout);
    assert_no_repeats(&run.stdout);
    let after = &run.stdout[before.len()..];
    for what in [
        " BENCHMARK rank 0 started on n1\n",
        " BENCHMARK rank 0 ended (exit 0)\n",
        " benchmark ended\n",
        " GEN_0 ended (exit 0)\n",
        " verdict: PASS\n",
    ] {
        assert!(after.contains(what), "no `{what}` in\n{after}");
    }
    assert!(after.ends_with(" verdict: PASS\n"), "{after}");
}

/// `launch-gen status DIR --watch` in a pseudo-terminal of 80 × 24 (util-linux `script`).
fn watch_in_a_pty(dir: &Path) -> Running {
    let command = format!(
        "echo PID=$$; stty cols 80 rows 24 && exec '{BIN}' status '{}' --watch",
        dir.display()
    );
    Running::start(
        Command::new("script")
            .args(["-q", "-e", "-c", &command, "/dev/null"])
            .env("SHELL", "/bin/sh"),
    )
}

/// The lines a terminal shows for `raw` output: escape sequences dropped, a cursor move
/// (`CSI ... H`, `CSI ... E`) or a newline starts a new line.
fn screen_lines(raw: &str) -> Vec<String> {
    let mut lines = vec![String::new()];
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    let mut last = ' ';
                    for c in chars.by_ref() {
                        if ('\u{40}'..='\u{7e}').contains(&c) {
                            last = c;
                            break;
                        }
                    }
                    if last == 'H' || last == 'E' {
                        lines.push(String::new());
                    }
                }
            }
            '\n' => lines.push(String::new()),
            '\r' => {}
            c => lines.last_mut().expect("a line").push(c),
        }
    }
    lines
}

const SYNC_BEGIN: &str = "\u{1b}[?2026h";
const SYNC_END: &str = "\u{1b}[?2026l";
const CURSOR_SHOW: &str = "\u{1b}[?25h";
const CURSOR_HIDE: &str = "\u{1b}[?25l";

#[test]
fn watch_draws_a_finished_job_and_ends_by_itself() {
    let run = watch_in_a_pty(&fixture("crash")).finish(Duration::from_secs(20));
    assert_eq!(
        run.code, 1,
        "the verdict is FAIL: {}{}",
        run.stdout, run.stderr
    );
    let screen = screen_lines(&run.stdout);
    let text = screen.join("\n");
    for line in &screen {
        assert!(line.chars().count() <= 80, "wider than 80: {line:?}");
    }
    for what in [
        "job crash: phase verdict",
        "verdict: FAIL (GEN_0 rank 1",
        "SIGABRT",
    ] {
        assert!(text.contains(what), "no `{what}` in\n{text}");
    }
    assert!(run.stdout.contains(CURSOR_HIDE));
    assert!(run.stdout.contains(SYNC_BEGIN));
    let last_frame = run.stdout.rfind(SYNC_END).expect("a frame");
    assert!(
        run.stdout[last_frame..].contains(CURSOR_SHOW),
        "the cursor is shown again"
    );
}

#[test]
fn watch_redraws_a_running_job_until_sigterm() {
    let (_tmp, dir) = copy_fixture("running");
    let mut watch = watch_in_a_pty(&dir);
    watch.wait_for("two frames", Duration::from_secs(20), |out| {
        out.matches(SYNC_END).count() >= 2
    });
    let out = watch.stdout();
    let pid = out
        .lines()
        .find_map(|line| line.trim().strip_prefix("PID="))
        .expect("the shell's pid, exec'ed into launch-gen")
        .to_owned();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let run = watch.finish(Duration::from_secs(20));
    assert_eq!(run.code, 143, "128 + SIGTERM: {}{}", run.stdout, run.stderr);
    let text = screen_lines(&run.stdout).join("\n");
    assert!(
        text.contains("GEN_0              0  n1    serving"),
        "{text}"
    );
    assert!(text.contains("Ctrl-C quits"), "{text}");
    assert!(!text.contains("verdict:"), "{text}");
    let last_frame = run.stdout.rfind(SYNC_END).expect("a frame");
    assert!(
        run.stdout[last_frame..].contains(CURSOR_SHOW),
        "the cursor is shown again after SIGTERM: {:?}",
        &run.stdout[last_frame..]
    );
}

#[test]
fn watch_needs_a_terminal() {
    let run = status(&fixture("pass"), &["--watch"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.starts_with("error: `--watch`"), "{}", run.stderr);
}

#[test]
fn bad_input_exits_2_with_one_line_naming_the_dir() {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let missing = tmp.path().join("no-such-job");
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "").expect("write");
    for (dir, found) in [(&missing, "no such file"), (&file, "found a file")] {
        for mode in [&[][..], &["--json"], &["--events"], &["--watch"]] {
            let run = status(dir, mode);
            assert_eq!(run.code, 2, "{mode:?}: {}", run.stderr);
            assert_eq!(run.stdout, "");
            assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
            assert!(run.stderr.starts_with("error: "), "{}", run.stderr);
            assert!(
                run.stderr.contains(&dir.display().to_string()),
                "{}",
                run.stderr
            );
            assert!(run.stderr.contains(found), "{}", run.stderr);
        }
    }
    let pass = fixture("pass");
    let pass = pass.to_str().expect("UTF-8");
    for args in [
        &["status"][..],
        &["status", pass, "--timeout", "1"],
        &["status", pass, "--json", "--events"],
        &["status", pass, "--watch", "--events"],
        &["status", pass, "--events", "--timeout", "-1"],
        &["status", pass, "--bogus"],
    ] {
        let run = launch_gen(args, Duration::from_secs(20));
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.starts_with("error: "),
            "{args:?}: {}",
            run.stderr
        );
    }
}

#[test]
fn garbage_and_half_lines_still_give_a_table() {
    let (_tmp, dir) = copy_fixture("crash");
    std::fs::write(dir.join("ranks/GEN_0.1.json"), "{\"rank\": 1, \"pha").expect("write");
    std::fs::write(dir.join("ranks/CTX_0.1.json"), "[1, 2]").expect("write");
    // The script is appending a line.
    append(&dir.join("phases.jsonl"), "{\"phase\":\"aft");
    append(
        &dir.join("steps.jsonl"),
        "{\"event\":\"ended\",\"role\":\"GEN",
    );
    let run = status(&dir, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_fits(&run.stdout, 80);
    let rows = table_rows(&run.stdout);
    assert_eq!(row(&rows, "GEN_0", "0")[6], "SIGTERM");
    assert!(
        !rows
            .iter()
            .any(|cells| cells[0] == "GEN_0" && cells[1] == "1")
    );
    assert!(run.stdout.contains("phase verdict"), "{}", run.stdout);
    // One note per unreadable summary; the half lines are not errors.
    let notes: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(notes.len(), 2, "{}", run.stderr);
    assert!(
        notes.iter().any(|note| note.contains("GEN_0.1.json")),
        "{}",
        run.stderr
    );
    assert!(
        notes.iter().any(|note| note.contains("CTX_0.1.json")),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("jsonl"), "{}", run.stderr);

    let value = json(&dir);
    assert_eq!(value["rows"].as_array().map(Vec::len), Some(6));
    let run = status(&dir, &["--events"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    event_times(&run.stdout);
}
