//! `rank-bench`: the launcher's cost, measured on whole processes side by side with baselines,
//! written to `bench/RESULTS.md` and `bench/results.json`. `scripts/bench` builds and runs it.

mod benches;
mod proc;
mod report;
mod stats;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;

use benches::{Config, Ctx};
use proc::Runner;
use report::Row;

const GROUPS: &[&str] = &[
    "startup",
    "memory",
    "fanout",
    "gate",
    "shutdown",
    "hang",
    "generator",
];

/// Benchmarks rank-launch and launch-gen against baselines run side by side.
#[derive(Parser, Debug)]
#[command(name = "rank-bench")]
struct Args {
    /// Directory of the release binaries (rank-launch, launch-gen, shim-*).
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// The rank-launch to measure (default: the one in --bin-dir), e.g. another build.
    #[arg(long)]
    rank_launch: Option<PathBuf>,
    /// Where RESULTS.md and results.json go.
    #[arg(long, default_value = "bench")]
    out_dir: PathBuf,
    /// Comma-separated groups to run (startup, memory, fanout, gate, shutdown, hang, generator).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Repetitions of each start-up measurement (and of its baseline).
    #[arg(long, default_value_t = 100)]
    reps: usize,
    /// Unrecorded runs before each measurement.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Repetitions per generator config and mode.
    #[arg(long, default_value_t = 30)]
    gen_reps: usize,
    /// Repetitions per fan-out size: `mpirun`'s own run time varies by tens of ms on 2 cores,
    /// so the medians need many runs to settle within a few percent.
    #[arg(long, default_value_t = 25)]
    fanout_reps: usize,
    #[arg(long, value_delimiter = ',', default_value = "1,8,32,64")]
    fanout_ns: Vec<usize>,
    /// Repetitions per install-gate size.
    #[arg(long, default_value_t = 7)]
    gate_reps: usize,
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    gate_ns: Vec<usize>,
    /// Repetitions of each shutdown measurement.
    #[arg(long, default_value_t = 5)]
    shutdown_reps: usize,
    /// Grace period of the SIGTERM benchmark, in ms.
    #[arg(long, default_value_t = 1000)]
    grace_ms: u64,
    /// Repetitions of each hang measurement (each run lasts 1 to 6 s).
    #[arg(long, default_value_t = 5)]
    hang_reps: usize,
    /// How long the 8-rank task runs before it exits (the MPI world forms meanwhile), in s.
    #[arg(long, default_value_t = 1.5)]
    task_secs: f64,
    /// Longest any single run may take before it is killed and the group fails, in s.
    #[arg(long, default_value_t = 120)]
    timeout_secs: u64,
    #[arg(long, default_value = "tests/fixtures/configs")]
    configs_dir: PathBuf,
    #[arg(long, default_value = "tests/fixtures/compat")]
    compat_dir: PathBuf,
    /// A reference `trtllm-llmapi-launch` to measure side by side.
    #[arg(long)]
    reference_launch: Option<PathBuf>,
    /// A reference `submit.py` to measure side by side.
    #[arg(long)]
    reference_submit: Option<PathBuf>,
    /// A previous results.json: RESULTS.md gains an old-against-new table.
    #[arg(long)]
    compare: Option<PathBuf>,
    /// Show the measured processes' stderr.
    #[arg(long)]
    verbose: bool,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(err) => {
            eprintln!("rank-bench: error: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    std::fs::canonicalize(p).with_context(|| format!("`{}` not found", p.display()))
}

/// Runs the selected groups; true when every figure met its target and no group failed.
fn run(args: Args) -> anyhow::Result<bool> {
    let bin_dir = absolute(&args.bin_dir)?;
    for group in &args.only {
        anyhow::ensure!(
            GROUPS.contains(&group.as_str()),
            "unknown group `{group}` (expected one of {GROUPS:?})"
        );
    }
    let old = match &args.compare {
        None => None,
        Some(p) => Some(
            serde_json::from_str::<serde_json::Value>(
                &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
            )
            .with_context(|| format!("parsing {}", p.display()))?,
        ),
    };
    let work = std::env::temp_dir().join(format!("rank-bench.{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let cfg = Config {
        reps: args.reps.max(1),
        warmup: args.warmup,
        gen_reps: args.gen_reps.max(1),
        fanout_reps: args.fanout_reps.max(1),
        fanout_ns: args.fanout_ns.clone(),
        gate_reps: args.gate_reps.max(1),
        gate_ns: args.gate_ns.clone(),
        shutdown_reps: args.shutdown_reps.max(1),
        hang_reps: args.hang_reps.max(1),
        grace: Duration::from_millis(args.grace_ms),
        task_secs: args.task_secs,
        configs_dir: absolute(&args.configs_dir)?,
        compat_dir: absolute(&args.compat_dir)?,
        reference_launch: args.reference_launch.as_deref().map(absolute).transpose()?,
        reference_submit: args.reference_submit.as_deref().map(absolute).transpose()?,
        rank_launch: absolute(
            &args
                .rank_launch
                .clone()
                .unwrap_or_else(|| bin_dir.join("rank-launch")),
        )?,
    };
    let machine_before = machine(&bin_dir, &cfg.rank_launch);
    let cx = Ctx::new(
        Runner::new(
            bin_dir,
            args.verbose,
            Duration::from_secs(args.timeout_secs),
        ),
        cfg,
        work.clone(),
    );
    let started = Instant::now();
    let mut rows: Vec<Row> = Vec::new();
    let mut failures = Vec::new();
    type Bench = fn(&Ctx) -> anyhow::Result<Vec<Row>>;
    let all: [(&str, Bench); 7] = [
        ("startup", benches::startup),
        ("memory", benches::memory),
        ("fanout", benches::fanout),
        ("gate", benches::gate),
        ("shutdown", benches::shutdown),
        ("hang", benches::hang),
        ("generator", benches::generator),
    ];
    for (name, bench) in all {
        if !args.only.is_empty() && !args.only.iter().any(|g| g == name) {
            continue;
        }
        let t = Instant::now();
        eprint!("rank-bench: {name} ... ");
        match bench(&cx) {
            Ok(r) => {
                let met = r.iter().filter(|r| r.met()).count();
                eprintln!("{met}/{} met ({:.1} s)", r.len(), t.elapsed().as_secs_f64());
                rows.extend(r);
            }
            Err(err) => {
                eprintln!("FAILED: {err:#}");
                failures.push(format!("{name}: {err:#}"));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    let elapsed = started.elapsed();
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();

    let all_met = failures.is_empty() && rows.iter().all(Row::met);
    let md = markdown(
        &args,
        &machine_before,
        load_after.trim(),
        elapsed,
        &rows,
        &failures,
        old.as_ref(),
    );
    let json = serde_json::json!({
        "machine": machine_before,
        "load_after": load_after.trim(),
        "elapsed_s": elapsed.as_secs_f64(),
        "all_met": all_met,
        "failures": failures,
        "rows": rows.iter().map(Row::to_json).collect::<Vec<_>>(),
    });
    std::fs::create_dir_all(&args.out_dir)?;
    std::fs::write(args.out_dir.join("RESULTS.md"), md)?;
    std::fs::write(
        args.out_dir.join("results.json"),
        serde_json::to_string_pretty(&json)? + "\n",
    )?;
    eprintln!(
        "rank-bench: {} figure(s), {} met, {} group failure(s), {:.0} s; wrote {}/RESULTS.md",
        rows.len(),
        rows.iter().filter(|r| r.met()).count(),
        failures.len(),
        elapsed.as_secs_f64(),
        args.out_dir.display()
    );
    Ok(all_met)
}

/// First line of a command's output, or a note that it could not run.
fn first_line(argv: &[&str]) -> String {
    std::process::Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .ok()
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_else(|| format!("({} not found)", argv[0]))
}

fn machine(bin_dir: &Path, rank_launch: &Path) -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string())
        })
        .and_then(|kib| kib.parse::<f64>().ok())
        .map_or(String::new(), |kib| format!("{:.1} GiB", kib / 1048576.0));
    let rl = rank_launch.to_string_lossy().into_owned();
    let lg = bin_dir.join("launch-gen").to_string_lossy().into_owned();
    // The results of an earlier run are not a change to what is measured.
    let dirty = first_line(&[
        "git",
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
        ".",
        ":!bench/RESULTS.md",
        ":!bench/results.json",
    ]);
    serde_json::json!({
        "nproc": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "cpu": cpu,
        "memory": mem,
        "kernel": first_line(&["uname", "-sr"]),
        "load_before": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        "date_utc": first_line(&["date", "-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        "git": format!("{}{}", first_line(&["git", "rev-parse", "--short", "HEAD"]), if dirty.is_empty() { "" } else { " (with uncommitted changes)" }),
        "rank_launch": format!("{} ({}, {})", first_line(&[&rl, "--version"]), rl, linkage(rank_launch)),
        "launch_gen": first_line(&[&lg, "--version"]),
        "mpirun": first_line(&["mpirun", "--version"]),
        "rustc": first_line(&["rustc", "--version"]),
        "bash": first_line(&["bash", "--version"]),
    })
}

/// "statically linked", or which dynamic loader the binary asks for (its `PT_INTERP`).
fn linkage(binary: &Path) -> String {
    let read = || -> Option<String> {
        let data = std::fs::read(binary).ok()?;
        let u16_at = |at: usize| Some(u16::from_le_bytes(data.get(at..at + 2)?.try_into().ok()?));
        let u32_at = |at: usize| Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?));
        let u64_at = |at: usize| Some(u64::from_le_bytes(data.get(at..at + 8)?.try_into().ok()?));
        // A little-endian 64-bit ELF file: program headers at e_phoff, e_phnum of e_phentsize.
        if data.get(..6)? != b"\x7fELF\x02\x01" {
            return Some("not a little-endian 64-bit ELF file".into());
        }
        let (phoff, size, count) = (
            u64_at(0x20)? as usize,
            u16_at(0x36)? as usize,
            u16_at(0x38)?,
        );
        for i in 0..count as usize {
            let header = phoff + i * size;
            if u32_at(header)? == 3 {
                let (offset, len) = (u64_at(header + 8)? as usize, u64_at(header + 32)? as usize);
                let path = data.get(offset..offset + len)?;
                let path = String::from_utf8_lossy(path)
                    .trim_end_matches('\0')
                    .to_string();
                return Some(format!("dynamically linked, loader {path}"));
            }
        }
        Some("statically linked".into())
    };
    read().unwrap_or_else(|| "linkage unknown".into())
}

const METHOD: &str = "\
Every figure is a whole process (or a whole MPI job) timed by the harness with `Instant` from just
before `spawn` to just after `wait4` reaped it. Peak RSS is the program's own `VmHWM`, read in a
separate run while `ptrace` holds the process just before it exits: not `wait4`'s `ru_maxrss`,
into which the kernel folds, at `execve`, the peak of the address space being replaced (the
harness's own, or a copy of it), so that `cp` would report the harness's size. What is measured
is `target/dist` (`scripts/build`), `rank-launch` linked statically. Each measurement alternates with its baseline in the same run
(A B, then B A, ...) after a few unrecorded warm-up rounds, so that drift in the load hits both.
Tables give the median and the 10th–90th percentiles; *added* is the difference of the medians,
*ratio* their quotient; *met* checks the target against the median (added for start-up, ratio for
fan-out, the measured median otherwise). All launcher logs are at `warn`; every process gets the
harness's environment without `SLURM_*`, `OMPI_*`, `PMI*` and similar variables, with rank
variables set explicitly where a rank is simulated.

- **start-up**: `rank-launch -- true` against `true`. MPI path, rank 0 of a 2-task Slurm step
  (rank from `SLURM_*`): `rank-launch mpi --leader-cmd 'sleep 30' --leader-stop-cmd true
  --leader-stop-timeout 0 -- /bin/true` (task, then stop command, then TERM to the leader)
  against the harness doing the same itself: spawn `bash -c 'sleep 30'` and `/bin/true`, reap the
  task, run `bash -c true`, TERM the leader, reap it. Worker rank 1: `rank-launch mpi
  --worker-cmd /bin/true` against `bash -c /bin/true` (rank-launch runs the worker with `bash -c`).
- **memory**: the peak RSS of the `rank-launch` process over its whole life, supervising a
  300 ms `sleep` task (its children not counted); baseline: `sleep 0.3`'s own peak.
- **fan-out**: `mpirun [--allow-run-as-root] --mca odls_base_num_threads 0 --mca
  orte_tmpdir_base WORK --oversubscribe -np N rank-launch -- true` against the same `mpirun ...
  -np N true`; the ratio of the medians. The first option makes `mpirun` start the local ranks
  from one thread: with the default (several threads past 32 ranks), Open MPI 4.1.4 here never
  returned after all ranks exited in about one run of `-np 64 true` in two. A run that hangs
  anyway is killed after 2 s and rerun (up to 30 times in a row), and the figure's name says how
  many there were on each side.
- **install gate**: N waiting local ranks (`SLURM_LOCALID` 1..N) are started first, then local
  rank 0 (same `SLURM_JOB_ID`, own `--install-dir`), install command `sleep 0.3+0.004·N` so every
  waiter waits. Latency = max over the waiters of the moment the gate let them go
  (`gate_released_unix_us`) minus the installer's `install` child's `ended_unix_us`, both from
  `--summary-json`. The task of every rank is `true`; the figure's name adds when the last
  waiter's task was running (its `task` child's `started_unix_us`, after `execve`): on 2 cores
  that is the sum of 64 tasks' start-up, which the release does not wait for. Baseline: N `bash`
  waiters blocked in `read` on a pipe; the harness runs the same `sleep`, reaps it, stamps the
  time and closes the pipe; each waiter stamps `$EPOCHREALTIME` (a builtin) when released.
- **shutdown, 8 ranks**: `mpirun -np 8 rank-launch mpi` with `shim-leader`/`shim-worker` (a real
  Open MPI world over loopback TCP) and a task `sh -c 'sleep T; date +%s%N > FILE'` (T lets the
  world form first); from that stamp to the harness reaping `mpirun` (every rank exited).
  Baseline: the same shims under `mpirun` with rank 0 a bash script doing what the launcher does
  (`shim-leader &`, task, `shim-leader --action stop`, `wait`).
- **SIGTERM**: the launcher started in its own session (`setsid`) with a task that ignores TERM
  (`trap '' TERM; exec sleep 30`) or honours it; once the task runs, TERM to `rank-launch`, and the
  time until it is reaped and no process of its session is left in `/proc`. Baseline: the task
  alone in its own session, TERM, then KILL to its group after the grace period from the harness.
- **hang**: a task that hangs, under a deadline of 1 s, started in its own session; the time
  until `rank-launch` is reaped, its exit code checked (75 not ready, 76 no progress) and its
  session then checked empty; launcher logs at `error`. *Silent*: `sh -c 'echo serving; date
  +%s%N > STAMP; exec sleep 60'` under `--stall-timeout 1s` (probe `output`), from the stamp
  (just after the last output). *Never ready*: `sleep 60` under `--ready-timeout 1s --ready-line
  'never printed'`, from the spawn. Baseline of both: GNU `timeout -s TERM 1s` around the same
  task, from the spawn (exit 124): the budget itself plus process costs. *Stopped*: `sh -c 'date
  +%s%N > STAMP; kill -STOP $$'` under `--stall-timeout 1s --stall-probe stopped --grace-period
  5s`, from the stamp (just before the stop); rank-launch looks at the process tree once a
  second, so up to 1 s more. Baseline: `timeout --foreground -s TERM -k 5s 1s` around it (exit
  137), whose TERM stays pending on the stopped shell until the KILL after the grace; without
  `--foreground`, GNU `timeout` sends a SIGCONT after its TERM, as rank-launch does.
- **generator**: `launch-gen` on every config of the configs directory, compatibility mode with the
  golden case's `args` (from inside the case folder) and native mode (`--config-yaml --command
  --workspace --launch-sh`); baseline `cp config out`. Time, and peak RSS from a traced run.
- **reference scripts** (`--reference-launch`, `--reference-submit`): the reference
  `trtllm-llmapi-launch` hard-codes `python3 -m tensorrt_llm.llmapi.mgmn_{leader,worker}_node`, so
  both it and `rank-launch mpi` (whose defaults are the same commands) run Python stand-ins
  written to a temp `PYTHONPATH` (for the 8-rank shutdown they exec the shims). `submit.py` runs
  as `python3 submit.py` with the golden case's arguments.";

fn markdown(
    args: &Args,
    machine: &serde_json::Value,
    load_after: &str,
    elapsed: Duration,
    rows: &[Row],
    failures: &[String],
    old: Option<&serde_json::Value>,
) -> String {
    let mut md = String::from(
        "# Benchmarks: the launcher's cost\n\nGenerated by `scripts/bench` (`rank-bench`); do not edit by hand.\n\n## Machine\n\n",
    );
    for key in [
        "nproc",
        "cpu",
        "memory",
        "kernel",
        "date_utc",
        "git",
        "rank_launch",
        "launch_gen",
        "mpirun",
        "rustc",
        "bash",
    ] {
        let v = &machine[key];
        let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
        let _ = writeln!(md, "- {key}: {v}");
    }
    let _ = writeln!(
        md,
        "- load average (1, 5, 15 min, runnable/total, last pid) at start: {}",
        machine["load_before"].as_str().unwrap_or("")
    );
    let _ = writeln!(md, "- load average at end: {load_after}");
    let _ = writeln!(md, "- whole run: {:.0} s", elapsed.as_secs_f64());
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let _ = writeln!(
        md,
        "- harness arguments: `{}`",
        if argv.is_empty() {
            "(defaults)".to_string()
        } else {
            argv.join(" ")
        }
    );
    let met = rows.iter().filter(|r| r.met()).count();
    let _ = writeln!(
        md,
        "\n## Results\n\n{met} of {} figures meet their target{}.\n",
        rows.len(),
        if failures.is_empty() {
            String::new()
        } else {
            format!("; {} group(s) failed to run", failures.len())
        }
    );
    md.push_str(&report::table(rows));
    for f in failures {
        let _ = writeln!(md, "\n**Failed:** {f}");
    }
    md.push_str("\n## Against the reference scripts\n\n");
    md.push_str(&report::reference_section(rows));
    if let Some(old) = old {
        let _ = writeln!(
            md,
            "\n## Compared with `{}`\n\nThe checked value of each figure (added ms, ratio, or median) then and now.\n",
            args.compare
                .as_ref()
                .map_or(String::new(), |p| p.display().to_string())
        );
        md.push_str(&report::compare(old, rows));
    }
    md.push_str("\n## Method\n\n");
    md.push_str(METHOD);
    md.push_str(
        "\n\n## Rerun and compare\n\n\
         `scripts/bench` builds the release binaries and writes this file and `bench/results.json`;\n\
         arguments go to the harness (`scripts/bench --help`), e.g. `--only startup,gate`, `--reps 300`.\n\
         To see what a change costs: keep the old `bench/results.json` (`cp bench/results.json /tmp/old.json`),\n\
         rebuild, then `scripts/bench --compare /tmp/old.json`: this file gains a table of every figure\n\
         then and now. `--rank-launch PATH` measures another rank-launch binary against the same baselines.\n\
         A slower launcher moves *added* (start-up), *ratio* (fan-out) and the medians (gate, shutdown,\n\
         generator); the baselines run interleaved in the same run, so they expose load rather than absorb it.\n",
    );
    md
}
