//! `launch-gen report`: the page of real demo jobs (workspaces copied into
//! `tests/fixtures/jobs/{pass,crash,wedged}`, logs trimmed), rendered purely, through the
//! binary, and in a real headless browser (Debian's Chromium).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use launch_gen::config::LaunchConfig;
use launch_gen::explain;
use launch_gen::job::redact::Redactor;
use launch_gen::job::report::{self, Gathered, PlanTable};
use launch_gen::plan::Plan;
use regex::Regex;

/// A fixed "now" for the pure renders.
const NOW_US: i64 = 1_800_000_000_000_000;

fn fixture(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/jobs")
        .join(case)
}

fn demo_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/demo/demo.yaml")
}

fn demo_plan() -> PlanTable {
    let text = fs::read_to_string(demo_config()).expect("the demo config");
    let config = LaunchConfig::from_yaml(&text).expect("a valid config");
    let plan = Plan::new(&config).expect("a plan");
    report::plan_table(&config, &plan, "demo.yaml")
}

fn render(gathered: &Gathered, plan: Option<&PlanTable>) -> String {
    report::render(&gathered.inputs(plan, NOW_US), &Redactor::default())
}

fn page(case: &str) -> String {
    let plan = demo_plan();
    render(&report::gather(&fixture(case)), Some(&plan))
}

/// The `<g class="rank ...">` start tags of a page.
fn rank_rows(html: &str) -> Vec<String> {
    let tag = Regex::new(r#"<g class="rank(?: first-failure)?"[^>]*>"#).expect("a regex");
    tag.find_iter(html)
        .map(|found| found.as_str().to_owned())
        .collect()
}

fn first_failures(html: &str) -> Vec<String> {
    let tag = Regex::new(r#"<g class="(?:rank|step) first-failure"[^>]*>"#).expect("a regex");
    tag.find_iter(html)
        .map(|found| found.as_str().to_owned())
        .collect()
}

/// The page fetches nothing: no resource reference (`src`, `href`, `url(`, `@import`, a
/// `<link>`, a `<script>`, an `<img>`) at all, local or remote.
fn assert_self_contained(html: &str) {
    let reference = Regex::new(
        r#"(?i)\s(?:src|href|xlink:href)\s*=|url\(|@import|<link|<script|<img|<iframe|<object"#,
    )
    .expect("a regex");
    if let Some(found) = reference.find(html) {
        let start = found.start().saturating_sub(80);
        panic!(
            "the page references a resource: {:?}",
            &html[start..(found.end() + 80).min(html.len())]
        );
    }
    let remote = Regex::new(r#"(?i)(?:src|href)\s*=\s*["']?\s*(?:https?:)?//"#).expect("a regex");
    assert!(!remote.is_match(html));
}

/// A fixture, its rank summaries, the first failure's (role, rank).
type Case<'a> = (&'a str, usize, Option<(&'a str, &'a str)>);

#[test]
fn each_fixture_renders_one_row_per_rank_and_marks_the_right_failure() {
    // case, rank summaries, the first failure's (role, rank).
    let groups = Regex::new(r#"<g class="role" data-role="([^"]*)">"#).expect("a regex");
    let cases: [Case<'_>; 3] = [
        ("pass", 6, None),
        ("crash", 6, Some(("GEN_0", "1"))),
        ("wedged", 6, Some(("CTX_0", "0"))),
    ];
    for (case, ranks, blamed) in cases {
        let gathered = report::gather(&fixture(case));
        assert_eq!(
            gathered.job.ranks.len(),
            ranks,
            "{case}: the fixture's summaries"
        );
        assert!(gathered.notes.is_empty(), "{case}: {:?}", gathered.notes);
        let html = page(case);
        let rows = rank_rows(&html);
        assert_eq!(rows.len(), ranks, "{case}: {rows:#?}");
        let marked = first_failures(&html);
        match blamed {
            None => {
                assert!(marked.is_empty(), "{case}: {marked:?}");
                assert!(!html.contains("class=\"ff-marker\""), "{case}");
                assert!(html.contains(r#"data-verdict="PASS""#), "{case}");
            }
            Some((role, rank)) => {
                let want = format!(
                    r#"<g class="rank first-failure" data-role="{role}" data-rank="{rank}" "#
                );
                assert_eq!(marked.len(), 1, "{case}: {marked:?}");
                assert!(marked[0].starts_with(&want), "{case}: {marked:?}");
                assert_eq!(html.matches("class=\"ff-outline\"").count(), 1, "{case}");
                assert_eq!(html.matches("class=\"ff-marker\"").count(), 1, "{case}");
                assert!(html.contains(r#"data-verdict="FAIL""#), "{case}");
                assert!(html.contains("first failure: "), "{case}");
            }
        }
        // Roles in steps.jsonl order, each a group with a label.
        let order: Vec<&str> = gathered
            .job
            .steps
            .iter()
            .map(|step| step.role.as_str())
            .collect();
        let shown: Vec<&str> = groups
            .captures_iter(&html)
            .map(|captures| captures.get(1).expect("a role").as_str())
            .collect();
        assert_eq!(shown, order, "{case}");
        // The phases, each a marker with its name.
        for phase in &gathered.job.phases {
            assert!(
                html.contains(&format!(
                    r#"<g class="phase" data-phase="{}">"#,
                    phase.phase
                )),
                "{case}: {}",
                phase.phase
            );
        }
        assert_self_contained(&html);
        assert!(html.contains("<table class=\"plan\">"), "{case}");
    }
}

#[test]
fn the_failed_roles_logs_and_the_verdict_are_shown() {
    let crash = page("crash");
    assert!(crash.contains("killed by SIGABRT"), "the cause");
    assert!(crash.contains("id=\"verdict-line\""));
    let logs = Regex::new(r#"<div class="role-log" data-role="([^"]*)">"#).expect("a regex");
    let roles: Vec<&str> = logs
        .captures_iter(&crash)
        .map(|captures| captures.get(1).expect("a role").as_str())
        .collect();
    assert_eq!(roles.first(), Some(&"GEN_0"), "{roles:?}");
    assert!(crash.contains("<pre>"));

    let wedged = page("wedged");
    let roles: Vec<&str> = logs
        .captures_iter(&wedged)
        .map(|captures| captures.get(1).expect("a role").as_str())
        .collect();
    assert_eq!(roles.first(), Some(&"CTX_0"), "{roles:?}");

    let pass = page("pass");
    assert!(pass.contains("No role failed."));
    assert!(!pass.contains("<pre>"));
}

#[test]
fn every_interpolated_text_is_escaped_and_secrets_are_redacted() {
    let mut gathered = report::gather(&fixture("crash"));
    let evil = r#"n2<script>alert("x")</script>&co"#;
    for rank in &mut gathered.job.ranks {
        rank.host = Some(evil.to_owned());
        rank.slurm_node = None;
    }
    gathered.job.dir_name = "<b>ws</b>&".into();
    let record = gathered.verdict.as_mut().expect("verdict.json");
    let blamed = record.blamed.as_mut().expect("blamed");
    blamed.cause = Some("<script>boom()</script> & token=s3cr3tvalue".into());
    record.line = Some("verdict: FAIL (<i>x</i> & y)".into());
    gathered.notes.push("note <script>x</script> & z".into());
    let html = render(&gathered, None);
    assert!(!html.contains("<script"), "raw markup got through");
    assert!(!html.contains("<b>ws") && !html.contains("<i>x"));
    assert!(html.contains("&lt;script&gt;"));
    assert!(html.contains("&amp;co"));
    assert!(html.contains("&lt;b&gt;ws&lt;/b&gt;&amp;"));
    assert!(!html.contains("s3cr3tvalue"), "redacted");
    assert!(html.contains("token=***"));
    assert!(
        html.contains("id=\"plan-unknown\""),
        "no plan without a config"
    );
    assert_self_contained(&html);
}

#[test]
fn the_plan_table_has_the_numbers_explain_prints() {
    let text = fs::read_to_string(demo_config()).expect("the demo config");
    let config = LaunchConfig::from_yaml(&text).expect("a valid config");
    let plan = Plan::new(&config).expect("a plan");
    let table = report::plan_table(&config, &plan, "demo.yaml");
    let explained = explain::render(&config, &plan, "demo.yaml", None).expect("explains");
    let lines: Vec<Vec<&str>> = explained
        .lines()
        .map(|line| line.split_whitespace().collect())
        .collect();
    for row in &table.rows {
        let cells: Vec<&str> = row
            .iter()
            .map(String::as_str)
            .filter(|c| !c.is_empty())
            .collect();
        assert!(
            lines.contains(&cells),
            "{cells:?} is not a line of --explain:\n{explained}"
        );
    }
    assert_eq!(table.rows.len(), 5);
    assert_eq!(
        (table.nodes, table.gpus_allocated, table.gpus_used),
        (2, 4, 4)
    );
    let html = page("pass");
    for row in &table.rows {
        let cells: String = row.iter().map(|cell| format!("<td>{cell}</td>")).collect();
        assert!(html.contains(&cells), "{cells}");
    }
}

/// A synthetic job of `n` GEN ranks, with the router and the benchmark.
fn big_job(n: i64) -> Gathered {
    let mut gathered = report::gather(&fixture("crash"));
    let template = gathered
        .job
        .ranks
        .iter()
        .find(|rank| rank.role == "GEN_0")
        .cloned()
        .expect("a GEN_0 rank");
    gathered.job.ranks.retain(|rank| rank.role != "GEN_0");
    for rank in 0..n {
        let mut summary = template.clone();
        summary.rank = rank;
        summary.host = Some(format!("node-{:03}", rank / 4));
        gathered.job.ranks.push(summary);
    }
    gathered
}

#[test]
fn many_ranks_stay_readable() {
    let svg_height =
        Regex::new(r#"<svg class="timeline"[^>]* height="([0-9.]+)""#).expect("a regex");
    let sizes = Regex::new(r#"class="rank-label"[^>]* font-size="([0-9.]+)""#).expect("a regex");
    let mut heights = Vec::new();
    for n in [2, 64, 256] {
        let html = render(&big_job(n), None);
        let rows = rank_rows(&html);
        // The other roles' ranks (CTX_0 x2, router, benchmark) plus the GEN ranks.
        assert_eq!(rows.len() as i64, n + 4, "{n}");
        let height: f64 = svg_height
            .captures(&html)
            .and_then(|captures| captures[1].parse().ok())
            .expect("an SVG height");
        heights.push(height);
        // Rows never get thinner than 12 px: the SVG grows instead.
        assert!(height >= (n + 4) as f64 * 12.0, "{n}: {height}");
        // Labels get a font size of at least 9 px.
        for captures in sizes.captures_iter(&html) {
            let size: f64 = captures[1].parse().expect("a number");
            assert!(size >= 9.0, "{n}: {size}");
        }
    }
    assert!(
        heights[0] < heights[1] && heights[1] < heights[2],
        "{heights:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Through the binary.

struct Run {
    code: i32,
    stderr: String,
}

fn launch_gen(args: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_launch-gen"))
        .args(args)
        .output()
        .expect("launch-gen runs");
    Run {
        code: output.status.code().expect("launch-gen exits, not killed"),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn arg(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

#[test]
fn the_binary_writes_the_page_atomically_and_rejects_bad_input() {
    let out = tempfile::tempdir().expect("a temp dir");
    let page = out.path().join("crash.html");
    let run = launch_gen(&[
        "report",
        arg(&fixture("crash")),
        "-o",
        arg(&page),
        "--config",
        arg(&demo_config()),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let html = fs::read_to_string(&page).expect("the page");
    assert_eq!(rank_rows(&html).len(), 6);
    assert!(html.contains("<table class=\"plan\">"));
    let names: Vec<String> = fs::read_dir(out.path())
        .expect("list")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(names, ["crash.html"], "no temporary file left");

    let missing = out.path().join("nope");
    let crash = fixture("crash");
    let not_yaml = crash.join("steps.jsonl");
    let bad_inputs: [Vec<&str>; 4] = [
        vec!["report", arg(&missing), "-o", arg(&page)],
        vec!["report", arg(&crash), "--bogus"],
        vec![
            "report",
            arg(&crash),
            "-o",
            arg(&page),
            "--config",
            arg(&missing),
        ],
        vec![
            "report",
            arg(&crash),
            "-o",
            arg(&page),
            "--config",
            arg(&not_yaml),
        ],
    ];
    for args in &bad_inputs {
        let run = launch_gen(args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        let errors: Vec<&str> = run
            .stderr
            .lines()
            .filter(|line| line.starts_with("error:"))
            .collect();
        assert_eq!(errors.len(), 1, "{args:?}: {}", run.stderr);
    }
    let run = launch_gen(&bad_inputs[2]);
    assert!(
        run.stderr.contains("--config") && run.stderr.contains("no such file"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_workspace_without_records_or_with_torn_ones_still_gets_a_page() {
    let ws = tempfile::tempdir().expect("a temp dir");
    let run = launch_gen(&["report", arg(ws.path())]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let html = fs::read_to_string(ws.path().join("report.html")).expect("the default output");
    assert!(html.contains("id=\"no-records\""));
    assert!(html.contains("No verdict.json"));
    assert!(html.contains("id=\"plan-unknown\""));
    assert_self_contained(&html);

    // Torn records: a half-written summary and verdict, a torn steps line.
    let torn = ws.path().join("torn");
    fs::create_dir_all(torn.join("ranks")).expect("mkdir");
    let crash = fixture("crash");
    let steps = fs::read_to_string(crash.join("steps.jsonl")).expect("steps");
    fs::write(
        torn.join("steps.jsonl"),
        format!("{steps}{{\"event\":\"sta"),
    )
    .expect("write");
    fs::copy(crash.join("phases.jsonl"), torn.join("phases.jsonl")).expect("copy");
    fs::copy(
        crash.join("ranks/GEN_0.0.json"),
        torn.join("ranks/GEN_0.0.json"),
    )
    .expect("copy");
    fs::write(torn.join("ranks/GEN_0.1.json"), "{\"rank\":1,\"exit_").expect("write");
    fs::write(torn.join("verdict.json"), "{\"verdict\":\"FA").expect("write");
    let page = torn.join("out.html");
    let run = launch_gen(&["report", arg(&torn), "-o", arg(&page)]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    for name in ["GEN_0.1.json", "verdict.json", "steps.jsonl"] {
        assert!(run.stderr.contains(name), "{name}: {}", run.stderr);
    }
    let html = fs::read_to_string(&page).expect("the page");
    assert_eq!(rank_rows(&html).len(), 1);
    assert!(
        html.contains("id=\"records\""),
        "the skipped records are named"
    );
}

// ---------------------------------------------------------------------------------------------
// In a real browser.

/// Chromium, or `None` (a loud SKIPPED line) locally; under CI its absence fails the test.
fn chromium() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        let message = "chromium is not installed: install it with `apt-get install chromium` \
                       (scripts/setup does)";
        if std::env::var_os("CI").is_some() {
            panic!("{message}");
        }
        eprintln!("*** SKIPPED: the report's browser test: {message} ***");
    }
    found
}

struct Browser {
    status: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs Chromium headless with `args` on `url`, in its own process group, with a private
/// HOME and profile under `scratch`; kills the group after 60 s, and after any run (no helper
/// process outlives the test).
fn run_chromium(binary: &Path, scratch: &Path, args: &[String], url: &str) -> Browser {
    use std::os::unix::process::CommandExt as _;
    let run = scratch.join(format!("run-{}", args.len()));
    let profile = run.join("profile");
    fs::create_dir_all(&profile).expect("a profile dir");
    let stdout_path = run.join("stdout");
    let stderr_path = run.join("stderr");
    let mut child = Command::new(binary)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .env("HOME", &run)
        .env("XDG_CONFIG_HOME", run.join("config"))
        .env("XDG_CACHE_HOME", run.join("cache"))
        .stdin(Stdio::null())
        .stdout(fs::File::create(&stdout_path).expect("a stdout file"))
        .stderr(fs::File::create(&stderr_path).expect("a stderr file"))
        .process_group(0)
        .spawn()
        .expect("chromium starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        match child.try_wait().expect("wait for chromium") {
            Some(status) => break status.code(),
            None if Instant::now() >= deadline => break None,
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    // The whole group (renderer, zygote, GPU process), by its id: ours, started above.
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stderr(Stdio::null())
        .status();
    let _ = child.wait();
    Browser {
        status,
        stdout: fs::read_to_string(&stdout_path).unwrap_or_default(),
        stderr: fs::read_to_string(&stderr_path).unwrap_or_default(),
    }
}

/// Chromium's complaints about the page: console messages, or lines naming the page's file.
/// Its own noise (dbus, GPU, sandbox, fonts) names neither.
fn page_complaints<'a>(stderr: &'a str, file_name: &str) -> Vec<&'a str> {
    stderr
        .lines()
        .filter(|line| line.contains("CONSOLE") || line.contains(file_name))
        .collect()
}

#[test]
fn chromium_shows_the_crash_report() {
    let Some(binary) = chromium() else { return };
    let started = Instant::now();
    let scratch = tempfile::tempdir().expect("a temp dir");
    let file_name = "crash-report.html";
    let page = scratch.path().join(file_name);
    let run = launch_gen(&[
        "report",
        arg(&fixture("crash")),
        "-o",
        arg(&page),
        "--config",
        arg(&demo_config()),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let url = format!("file://{}", page.display());

    let dom = run_chromium(&binary, scratch.path(), &["--dump-dom".into()], &url);
    assert_eq!(dom.status, Some(0), "chromium --dump-dom:\n{}", dom.stderr);
    assert!(
        dom.stdout.contains("<svg class=\"timeline\""),
        "{}",
        dom.stdout
    );
    let rows = rank_rows(&dom.stdout);
    assert_eq!(rows.len(), 6, "{rows:#?}");
    let marked = first_failures(&dom.stdout);
    assert_eq!(marked.len(), 1, "{marked:?}");
    assert!(
        marked[0].contains(r#"data-role="GEN_0" data-rank="1""#),
        "{marked:?}"
    );
    assert!(dom.stdout.contains("class=\"ff-marker\""));
    let complaints = page_complaints(&dom.stderr, file_name);
    assert!(complaints.is_empty(), "{complaints:#?}");

    let png = scratch.path().join("crash.png");
    let shot = run_chromium(
        &binary,
        scratch.path(),
        &[
            "--window-size=1280,900".into(),
            "--hide-scrollbars".into(),
            format!("--screenshot={}", png.display()),
        ],
        &url,
    );
    assert_eq!(
        shot.status,
        Some(0),
        "chromium --screenshot:\n{}",
        shot.stderr
    );
    let complaints = page_complaints(&shot.stderr, file_name);
    assert!(complaints.is_empty(), "{complaints:#?}");
    let (width, height, colors, top_share) = png_stats(&png);
    assert_eq!((width, height), (1280, 900));
    assert!(colors >= 16, "a blank-looking screenshot: {colors} colors");
    assert!(
        top_share < 0.97,
        "one color covers {top_share:.3} of the screenshot"
    );
    eprintln!(
        "chromium test: {:.1} s ({colors} colors in the screenshot)",
        started.elapsed().as_secs_f64()
    );
}

/// Width, height, distinct colors and the share of the most common one.
fn png_stats(path: &Path) -> (u32, u32, usize, f64) {
    let file = fs::File::open(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    let decoder = png::Decoder::new(std::io::BufReader::new(file));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buffer = vec![0; reader.output_buffer_size().expect("a buffer size")];
    let info = reader.next_frame(&mut buffer).expect("a frame");
    let channels = info.color_type.samples();
    assert_eq!(info.bit_depth, png::BitDepth::Eight, "8-bit samples");
    let mut counts = std::collections::HashMap::<&[u8], usize>::new();
    let pixels = buffer[..info.buffer_size()].chunks_exact(channels);
    let total = pixels.len();
    for pixel in pixels {
        *counts.entry(pixel).or_default() += 1;
    }
    let top = counts.values().copied().max().unwrap_or(0);
    (
        info.width,
        info.height,
        counts.len(),
        top as f64 / total.max(1) as f64,
    )
}
