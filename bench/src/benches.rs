//! The benchmarks. Each one alternates the measured runs with their baseline (A B, then B A,
//! ...) so that drift in the machine's load hits both sides, and returns table rows.

use std::cell::Cell;
use std::fs;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::proc::{
    Runner, ensure_code, ensure_ok, kill, session_members, unix_us_now, wait_for_file,
};
use crate::report::{Reference, Row, Target};
use crate::stats::Summary;

/// Repetition counts and inputs.
#[derive(Debug, Clone)]
pub struct Config {
    pub reps: usize,
    pub warmup: usize,
    pub gen_reps: usize,
    pub fanout_reps: usize,
    pub fanout_ns: Vec<usize>,
    pub gate_reps: usize,
    pub gate_ns: Vec<usize>,
    pub shutdown_reps: usize,
    pub hang_reps: usize,
    pub grace: Duration,
    pub task_secs: f64,
    pub configs_dir: PathBuf,
    pub compat_dir: PathBuf,
    pub reference_launch: Option<PathBuf>,
    pub reference_submit: Option<PathBuf>,
    pub rank_launch: PathBuf,
}

/// Everything a benchmark needs.
pub struct Ctx {
    pub run: Runner,
    pub cfg: Config,
    pub work: PathBuf,
    counter: AtomicUsize,
}

/// One measured value (in the row's unit) and the peak RSS of the run, in MB.
type Sample = (f64, f64);
type Probe<'a> = Box<dyn FnMut() -> anyhow::Result<Sample> + 'a>;

impl Ctx {
    pub fn new(run: Runner, cfg: Config, work: PathBuf) -> Ctx {
        Ctx {
            run,
            cfg,
            work,
            counter: AtomicUsize::new(0),
        }
    }

    /// A new empty directory under the work directory.
    fn fresh(&self, what: &str) -> anyhow::Result<PathBuf> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let dir = self.work.join(format!("{what}-{n}"));
        fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        Ok(dir)
    }

    fn rl(&self) -> String {
        path_str(&self.cfg.rank_launch)
    }

    fn bin(&self, name: &str) -> String {
        path_str(&self.run.bin(name))
    }

    fn mpirun(&self, n: usize) -> Vec<String> {
        let mut argv = vec!["mpirun".to_string()];
        // SAFETY: plain syscall.
        if unsafe { libc::geteuid() } == 0 {
            argv.push("--allow-run-as-root".into());
        }
        // Ranks started from one thread: with more than 32 local ranks Open MPI 4.1.4 starts them
        // from several, and then about one run in two never returns after they all exited
        // (measured: 6 of 16 runs of `-np 64 true` hung, 0 of 16 with this). Session files go
        // under the harness's work directory, so a killed run leaves nothing in /tmp.
        argv.extend([
            "--mca".into(),
            "odls_base_num_threads".into(),
            "0".into(),
            "--mca".into(),
            "orte_tmpdir_base".into(),
            path_str(&self.work),
            "--oversubscribe".into(),
            "-np".into(),
            n.to_string(),
        ]);
        argv
    }
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_string()).collect()
}

/// Runs every probe `warmup + reps` times, alternating their order each round; returns the
/// kept samples of each probe.
fn alternate(
    reps: usize,
    warmup: usize,
    probes: &mut [Probe<'_>],
) -> anyhow::Result<Vec<Vec<Sample>>> {
    let mut out = vec![Vec::with_capacity(reps); probes.len()];
    for round in 0..warmup + reps {
        let order: Vec<usize> = if round % 2 == 0 {
            (0..probes.len()).collect()
        } else {
            (0..probes.len()).rev().collect()
        };
        for i in order {
            let sample = probes[i]()?;
            if round >= warmup {
                out[i].push(sample);
            }
        }
    }
    Ok(out)
}

fn times(samples: &[Sample]) -> Summary {
    Summary::of(&samples.iter().map(|s| s.0).collect::<Vec<_>>())
}

fn rss(samples: &[Sample]) -> Summary {
    Summary::of(&samples.iter().map(|s| s.1).collect::<Vec<_>>())
}

fn row(
    id: &str,
    figure: &str,
    unit: &'static str,
    target: Target,
    m: Summary,
    bl: &str,
    b: Summary,
) -> Row {
    Row {
        id: id.into(),
        figure: figure.into(),
        unit,
        target,
        measured: m,
        baseline_label: bl.into(),
        baseline: b,
        reference: Reference::None,
    }
}

/// Rank variables of a one-node Slurm step of `ntasks` tasks.
fn slurm_env(job: &str, rank: usize, ntasks: usize) -> Vec<(&'static str, String)> {
    vec![
        ("SLURM_JOB_ID", job.to_string()),
        ("SLURM_STEP_NUM_TASKS", ntasks.to_string()),
        ("SLURM_NTASKS", ntasks.to_string()),
        ("SLURM_STEP_NUM_NODES", "1".into()),
        ("SLURM_STEP_TASKS_PER_NODE", ntasks.to_string()),
        ("SLURM_PROCID", rank.to_string()),
        ("SLURM_LOCALID", rank.to_string()),
        ("SLURM_NODEID", "0".into()),
    ]
}

fn timed_ok(cx: &Ctx, argv: &[String], env: &[(&str, String)]) -> anyhow::Result<Sample> {
    let t = cx.run.time_ok(&mut cx.run.cmd(argv, env))?;
    Ok((t.ms(), t.end.maxrss_mb()))
}

/// Python stand-ins for TensorRT-LLM's `mgmn_leader_node` / `mgmn_worker_node`, for running the
/// reference `trtllm-llmapi-launch` (which hard-codes `python3 -m ...`). `RANK_BENCH_STUB=file`:
/// the leader waits for `$RANK_BENCH_STOP_FILE`, which `--action stop` creates, the worker exits;
/// `RANK_BENCH_STUB=shim`: they exec the MPI shims.
fn python_stubs(cx: &Ctx) -> anyhow::Result<PathBuf> {
    let root = cx.work.join("pystub");
    let pkg = root.join("tensorrt_llm/llmapi");
    fs::create_dir_all(&pkg)?;
    fs::write(root.join("tensorrt_llm/__init__.py"), "")?;
    fs::write(pkg.join("__init__.py"), "")?;
    let leader = format!(
        "import os, sys, time\n\
         stop = '--action' in sys.argv and sys.argv[sys.argv.index('--action') + 1] == 'stop'\n\
         if os.environ.get('RANK_BENCH_STUB') == 'shim':\n\
         \x20   os.execv({lead:?}, ['shim-leader'] + (['--action', 'stop'] if stop else []))\n\
         path = os.environ['RANK_BENCH_STOP_FILE']\n\
         if stop:\n\
         \x20   open(path, 'w').close()\n\
         \x20   sys.exit(0)\n\
         end = time.monotonic() + 30\n\
         while not os.path.exists(path) and time.monotonic() < end:\n\
         \x20   time.sleep(0.002)\n",
        lead = cx.bin("shim-leader")
    );
    let worker = format!(
        "import os\n\
         if os.environ.get('RANK_BENCH_STUB') == 'shim':\n\
         \x20   os.execv({w:?}, ['shim-worker'])\n",
        w = cx.bin("shim-worker")
    );
    fs::write(pkg.join("mgmn_leader_node.py"), leader)?;
    fs::write(pkg.join("mgmn_worker_node.py"), worker)?;
    Ok(root)
}

/// The environment of a run with the Python stand-ins.
fn stub_env(cx: &Ctx, stubs: &Path, kind: &str) -> anyhow::Result<Vec<(&'static str, String)>> {
    let stop = cx.fresh("stop")?.join("stop");
    Ok(vec![
        ("PYTHONPATH", path_str(stubs)),
        ("RANK_BENCH_STUB", kind.into()),
        ("RANK_BENCH_STOP_FILE", path_str(&stop)),
    ])
}

/// A leader stand-in that lives until its stop command ends it (its pid in `pid_file`, a
/// TERM that it answers with exit 0, as a leader that stops on request), and that stop command.
fn leader_and_stop(pid_file: &Path) -> (String, String) {
    let f = path_str(pid_file);
    (
        format!("trap 'exit 0' TERM; echo $$ > {f}; sleep 30 & wait"),
        // The stop command can start before the leader wrote its pid (the task may end first).
        format!("until [ -s {f} ]; do sleep 0.001; done; kill -TERM $(cat {f})"),
    )
}

/// Rank 0 of a 2-task step on the MPI path: `task` beside the leader stand-in of
/// [`leader_and_stop`], stopped by its stop command once the task ended.
fn rank0(rl: &str, pid_file: &Path, task: &[&str]) -> (Vec<String>, Vec<(&'static str, String)>) {
    let (leader, stop) = leader_and_stop(pid_file);
    let mut prog = argv(&[
        rl,
        "mpi",
        "--leader-cmd",
        &leader,
        "--leader-stop-cmd",
        &stop,
        "--",
    ]);
    prog.extend(argv(task));
    let mut env = slurm_env("bench", 0, 2);
    env.push(("RANK_LAUNCH_LOG", "error".into()));
    (prog, env)
}

/// Start-up overhead: plain, the MPI path's rank 0 and a worker rank.
pub fn startup(cx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let (reps, warm) = (cx.cfg.reps, cx.cfg.warmup);
    let rl = cx.rl();
    let mut rows = Vec::new();

    let s = alternate(
        reps,
        warm,
        &mut [
            Box::new(|| timed_ok(cx, &argv(&[&rl, "--", "true"]), &[])),
            Box::new(|| timed_ok(cx, &argv(&["true"]), &[])),
        ],
    )?;
    rows.push(row(
        "startup.plain",
        "start-up: `rank-launch -- true`",
        "ms",
        Target::Added(2.0),
        times(&s[0]),
        "`true`",
        times(&s[1]),
    ));

    let pid_file = cx.fresh("rank0")?.join("leader.pid");
    let (r0, env0) = rank0(&rl, &pid_file, &["/bin/true"]);
    let (leader_cmd, stop_cmd) = leader_and_stop(&pid_file);
    let direct_rank0 = || -> anyhow::Result<Sample> {
        let run = &cx.run;
        let _ = fs::remove_file(&pid_file);
        let start = Instant::now();
        let leader = run.spawn(&mut run.cmd(&["bash", "-c", &leader_cmd], &[]))?;
        let task = run.spawn(&mut run.cmd(&["/bin/true"], &[]))?;
        ensure_ok(&run.wait(task)?, "the task")?;
        // rank-launch starts the stop command once the leader has written its pid too.
        wait_for_file(&pid_file, Duration::from_secs(10))?;
        let stop = run.spawn(&mut run.cmd(&["bash", "-c", &stop_cmd], &[]))?;
        ensure_ok(&run.wait(stop)?, "the stop command")?;
        ensure_ok(&run.wait(leader)?, "the leader")?;
        Ok((start.elapsed().as_secs_f64() * 1e3, 0.0))
    };
    let launched_rank0 = || -> anyhow::Result<Sample> {
        let _ = fs::remove_file(&pid_file);
        timed_ok(cx, &r0, &env0)
    };
    let s = alternate(
        reps,
        warm,
        &mut [Box::new(launched_rank0), Box::new(direct_rank0)],
    )?;
    let mut r = row(
        "startup.mpi_rank0",
        "start-up, MPI path rank 0: task `/bin/true` beside a leader that its stop command ends (whole rank)",
        "ms",
        Target::Added(2.0),
        times(&s[0]),
        "the same processes started by the harness",
        times(&s[1]),
    );
    r.reference = reference_rank(cx, 0)?;
    rows.push(r);

    let env1 = slurm_env("bench", 1, 2);
    let w = argv(&[&rl, "mpi", "--worker-cmd", "/bin/true", "--", "/bin/true"]);
    let s = alternate(
        reps,
        warm,
        &mut [
            Box::new(|| timed_ok(cx, &w, &env1)),
            Box::new(|| timed_ok(cx, &argv(&["bash", "-c", "/bin/true"]), &[])),
        ],
    )?;
    let mut r = row(
        "startup.mpi_worker",
        "start-up, MPI path worker rank: worker `/bin/true` (whole rank)",
        "ms",
        Target::Added(2.0),
        times(&s[0]),
        "`bash -c /bin/true`",
        times(&s[1]),
    );
    r.reference = reference_rank(cx, 1)?;
    rows.push(r);
    Ok(rows)
}

/// The reference `trtllm-llmapi-launch` against `rank-launch mpi` on one rank, both with the
/// Python stand-ins of the leader and worker (the reference cannot take others).
fn reference_rank(cx: &Ctx, rank: usize) -> anyhow::Result<Reference> {
    let Some(refl) = &cx.cfg.reference_launch else {
        return Ok(Reference::NotGiven("--reference-launch"));
    };
    let stubs = python_stubs(cx)?;
    let refl = path_str(refl);
    let rl = cx.rl();
    let run_with = |prog: &[String]| -> anyhow::Result<Sample> {
        let mut env = slurm_env("bench", rank, 2);
        env.extend(stub_env(cx, &stubs, "file")?);
        timed_ok(cx, prog, &env)
    };
    let ours = argv(&[&rl, "mpi", "--", "/bin/true"]);
    let theirs = argv(&[&refl, "/bin/true"]);
    let s = alternate(
        cx.cfg.reps.min(30),
        cx.cfg.warmup,
        &mut [Box::new(|| run_with(&ours)), Box::new(|| run_with(&theirs))],
    )?;
    Ok(Reference::Measured {
        label: "`trtllm-llmapi-launch /bin/true` (Python leader/worker stand-ins on both sides)"
            .into(),
        ours: times(&s[0]),
        theirs: times(&s[1]),
    })
}

/// Peak RSS of rank-launch while it supervises a 300 ms task: its `VmHWM` at its exit, against
/// the task's own.
pub fn memory(cx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let rl = cx.rl();
    let reps = cx.cfg.reps.clamp(3, 6);
    let peak = |prog: &[String], env: &[(&str, String)]| -> anyhow::Result<Sample> {
        let mb = cx.run.peak_rss_mb(&mut cx.run.cmd(prog, env))?;
        Ok((mb, mb))
    };
    let direct = || peak(&argv(&["sleep", "0.3"]), &[]);
    let mut rows = Vec::new();
    let s = alternate(
        reps,
        1,
        &mut [
            Box::new(|| peak(&argv(&[&rl, "--", "sleep", "0.3"]), &[])),
            Box::new(direct),
        ],
    )?;
    rows.push(row(
        "memory.plain",
        "peak RSS of `rank-launch` supervising `sleep 0.3`",
        "MB",
        Target::Max(8.0),
        times(&s[0]),
        "`sleep 0.3` itself",
        times(&s[1]),
    ));
    let pid_file = cx.fresh("mem-rank0")?.join("leader.pid");
    let (r0, env0) = rank0(&rl, &pid_file, &["sleep", "0.3"]);
    let s = alternate(
        reps,
        1,
        &mut [Box::new(|| peak(&r0, &env0)), Box::new(direct)],
    )?;
    let mut r = row(
        "memory.mpi_rank0",
        "peak RSS of `rank-launch mpi` rank 0 supervising task `sleep 0.3` and a leader",
        "MB",
        Target::Max(8.0),
        times(&s[0]),
        "`sleep 0.3` itself",
        times(&s[1]),
    );
    r.reference = match &cx.cfg.reference_launch {
        None => Reference::NotGiven("--reference-launch"),
        Some(refl) => {
            let stubs = python_stubs(cx)?;
            let with_stubs = |prog: &[String]| -> anyhow::Result<Sample> {
                let mut env = slurm_env("bench", 0, 2);
                env.extend(stub_env(cx, &stubs, "file")?);
                peak(prog, &env)
            };
            let ours = argv(&[&rl, "mpi", "--", "sleep", "0.3"]);
            let theirs = argv(&[&path_str(refl), "sleep", "0.3"]);
            let s = alternate(
                reps,
                1,
                &mut [
                    Box::new(|| with_stubs(&ours)),
                    Box::new(|| with_stubs(&theirs)),
                ],
            )?;
            Reference::Measured {
                label: "`trtllm-llmapi-launch sleep 0.3`: its own bash process".into(),
                ours: times(&s[0]),
                theirs: times(&s[1]),
            }
        }
    };
    rows.push(r);
    Ok(rows)
}

/// `mpirun -np N rank-launch -- true` against `mpirun -np N true`.
pub fn fanout(cx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let rl = cx.rl();
    let mut rows = Vec::new();
    for &n in &cx.cfg.fanout_ns {
        let mut with = cx.mpirun(n);
        with.extend(argv(&[&rl, "--", "true"]));
        let mut without = cx.mpirun(n);
        without.push("true".into());
        let (hangs, hangs_base) = (Cell::new(0), Cell::new(0));
        let s = alternate(
            cx.cfg.fanout_reps,
            1,
            &mut [
                Box::new(|| mpirun_retrying(cx, &with, &[], &hangs)),
                Box::new(|| mpirun_retrying(cx, &without, &[], &hangs_base)),
            ],
        )?;
        let hung = match (hangs.get(), hangs_base.get()) {
            (0, 0) => String::new(),
            (k, j) => format!(
                " (hung `mpirun` runs, killed after {HANG_SECS} s and rerun: {k} with rank-launch, {j} without)"
            ),
        };
        let mut r = row(
            &format!("fanout.n{n}"),
            &format!("fan-out: `mpirun -np {n} rank-launch -- true`{hung}"),
            "ms",
            Target::Ratio(1.2),
            times(&s[0]),
            &format!("`mpirun -np {n} true`"),
            times(&s[1]),
        );
        r.reference = match &cx.cfg.reference_launch {
            None => Reference::NotGiven("--reference-launch"),
            Some(refl) => {
                let stubs = python_stubs(cx)?;
                let mut ours = cx.mpirun(n);
                ours.extend(argv(&[&rl, "mpi", "--", "/bin/true"]));
                let mut theirs = cx.mpirun(n);
                theirs.extend(argv(&[&path_str(refl), "/bin/true"]));
                let ignored = Cell::new(0);
                let go = |prog: &[String]| {
                    mpirun_retrying(cx, prog, &stub_env(cx, &stubs, "file")?, &ignored)
                };
                let s = alternate(
                    cx.cfg.fanout_reps,
                    1,
                    &mut [Box::new(|| go(&ours)), Box::new(|| go(&theirs))],
                )?;
                Reference::Measured {
                    label: format!(
                        "`mpirun -np {n} trtllm-llmapi-launch /bin/true` (Python stand-ins on both sides)"
                    ),
                    ours: times(&s[0]),
                    theirs: times(&s[1]),
                }
            }
        };
        rows.push(r);
    }
    Ok(rows)
}

/// How long a fan-out `mpirun` may take before it counts as hung (normal runs: well under 1 s).
const HANG_SECS: u64 = 2;

/// How many hung runs in a row make the figure fail.
const HANG_TRIES: usize = 30;

/// A timed `mpirun` run. Open MPI 4.1.4's `mpirun`, when it starts its local ranks from several
/// threads, sometimes never returns after every rank exited (all its children gone, it sits in
/// `poll`); [`Ctx::mpirun`] asks for one thread, which has made it go away here. Should it happen
/// anyway, the run is killed after [`HANG_SECS`], counted (the figure's name says how many) and
/// rerun, up to [`HANG_TRIES`] times in a row.
fn mpirun_retrying(
    cx: &Ctx,
    prog: &[String],
    env: &[(&str, String)],
    hangs: &Cell<usize>,
) -> anyhow::Result<Sample> {
    for _ in 0..HANG_TRIES {
        if let Some(t) = cx
            .run
            .time_within(&mut cx.run.cmd(prog, env), Duration::from_secs(HANG_SECS))?
        {
            return Ok((t.ms(), t.end.maxrss_mb()));
        }
        hangs.set(hangs.get() + 1);
    }
    bail!("`{}` hung {HANG_TRIES} times in a row", prog.join(" "))
}

/// Install gate: installer's exit → the last of N waiting local ranks released.
pub fn gate(cx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let rl = cx.rl();
    let mut rows = Vec::new();
    for &n in &cx.cfg.gate_ns {
        // Long enough for all waiters to be waiting when it ends, even on two busy cores.
        let install_secs = 0.3 + 0.004 * n as f64;
        let tasks_running = std::cell::RefCell::new(Vec::new());
        let launched = || -> anyhow::Result<Sample> {
            let dir = cx.fresh(&format!("gate{n}"))?;
            let job = format!(
                "bench-{}-{}",
                std::process::id(),
                dir.file_name().unwrap_or_default().to_string_lossy()
            );
            let prog = argv(&[
                &rl,
                "--install-cmd",
                &format!("sleep {install_secs:.3}"),
                "--install-dir",
                &path_str(&dir),
                "--install-timeout",
                "60s",
                "--summary-json",
                &path_str(&dir.join("%r.json")),
                "--",
                "true",
            ]);
            let waiters = (1..=n)
                .map(|i| {
                    cx.run
                        .spawn(&mut cx.run.cmd(&prog, &slurm_env(&job, i, n + 1)))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            std::thread::sleep(Duration::from_millis(20));
            let installer = cx
                .run
                .spawn(&mut cx.run.cmd(&prog, &slurm_env(&job, 0, n + 1)))?;
            for pid in std::iter::once(installer).chain(waiters) {
                ensure_ok(&cx.run.wait(pid)?, "a gated rank")?;
            }
            let child_us = |rank: usize, name: &str, field: &str| -> anyhow::Result<i64> {
                let path = dir.join(format!("{rank}.json"));
                let v: serde_json::Value = serde_json::from_str(&fs::read_to_string(&path)?)?;
                v["children"]
                    .as_array()
                    .and_then(|cs| cs.iter().find(|c| c["name"] == name))
                    .and_then(|c| c[field].as_i64())
                    .with_context(|| format!("no {name}.{field} in {}", path.display()))
            };
            let released = |rank: usize| -> anyhow::Result<i64> {
                let path = dir.join(format!("{rank}.json"));
                let v: serde_json::Value = serde_json::from_str(&fs::read_to_string(&path)?)?;
                v["gate_released_unix_us"]
                    .as_i64()
                    .with_context(|| format!("no gate_released_unix_us in {}", path.display()))
            };
            let ended = child_us(0, "install", "ended_unix_us")?;
            let last = (1..=n)
                .map(released)
                .collect::<anyhow::Result<Vec<_>>>()?
                .into_iter()
                .max()
                .unwrap_or(ended);
            // Not the figure, but shown beside it: when the last waiter's task was running.
            let task_started = (1..=n)
                .map(|rank| child_us(rank, "task", "started_unix_us"))
                .collect::<anyhow::Result<Vec<_>>>()?
                .into_iter()
                .max()
                .unwrap_or(ended);
            tasks_running
                .borrow_mut()
                .push((task_started - ended) as f64 / 1e3);
            Ok(((last - ended) as f64 / 1e3, 0.0))
        };
        let shell = || -> anyhow::Result<Sample> {
            let dir = cx.fresh(&format!("gatesh{n}"))?;
            let mut fds = [0; 2];
            // SAFETY: fds is a valid array of two ints.
            if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
                bail!("pipe2: {}", std::io::Error::last_os_error());
            }
            // SAFETY: pipe2 just returned these two fds, owned by nobody else.
            let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
            let script = r#"read -r _; printf %s "$EPOCHREALTIME" > "$0""#;
            let mut waiters = Vec::new();
            for i in 1..=n {
                let out = path_str(&dir.join(format!("{i}.stamp")));
                let mut cmd = cx.run.cmd(&argv(&["bash", "-c", script, &out]), &[]);
                cmd.stdin(Stdio::from(rd.try_clone()?));
                waiters.push(cx.run.spawn(&mut cmd)?);
            }
            drop(rd);
            std::thread::sleep(Duration::from_millis(20));
            let installer = cx.run.spawn(
                &mut cx
                    .run
                    .cmd(&argv(&["sleep", &format!("{install_secs:.3}")]), &[]),
            )?;
            ensure_ok(&cx.run.wait(installer)?, "the installer")?;
            let ended = unix_us_now();
            drop(wr);
            let mut last = ended;
            for (i, pid) in waiters.into_iter().enumerate() {
                ensure_ok(&cx.run.wait(pid)?, "a shell waiter")?;
                let text = fs::read_to_string(dir.join(format!("{}.stamp", i + 1)))?;
                let secs: f64 = text
                    .trim()
                    .parse()
                    .with_context(|| format!("stamp `{text}`"))?;
                last = last.max((secs * 1e6).round() as i64);
            }
            Ok(((last - ended) as f64 / 1e3, 0.0))
        };
        let s = alternate(
            cx.cfg.gate_reps,
            1,
            &mut [Box::new(launched), Box::new(shell)],
        )?;
        rows.push(row(
            &format!("gate.n{n}"),
            &format!(
                "install gate: installer exit → last of {n} waiting local rank(s) released (their tasks all running after {:.1} ms)",
                {
                    let times = tasks_running.borrow();
                    if times.is_empty() {
                        f64::NAN
                    } else {
                        crate::stats::Summary::of(&times).median
                    }
                }
            ),
            "ms",
            Target::Max(20.0),
            times(&s[0]),
            "shell waiters blocked on a pipe the harness closes",
            times(&s[1]),
        ));
    }
    Ok(rows)
}

/// A loopback port free right now, and a 64-hex-digit key.
fn proxy_env() -> anyhow::Result<Vec<(&'static str, String)>> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut key = [0u8; 32];
    fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut key))?;
    Ok(vec![
        ("TLLM_SPAWN_PROXY_PROCESS", "1".into()),
        (
            "TLLM_SPAWN_PROXY_PROCESS_IPC_ADDR",
            format!("tcp://127.0.0.1:{port}"),
        ),
        (
            "TLLM_SPAWN_PROXY_PROCESS_IPC_HMAC_KEY",
            key.iter().map(|b| format!("{b:02x}")).collect(),
        ),
    ])
}

fn mpi_env() -> Vec<(&'static str, String)> {
    vec![
        ("OMPI_MCA_btl", "self,tcp".into()),
        ("OMPI_MCA_btl_tcp_if_include", "lo".into()),
        ("OMPI_MCA_oob_tcp_if_include", "lo".into()),
    ]
}

/// Shutdown: task exit on rank 0 → mpirun exited (8 ranks); SIGTERM → session empty.
pub fn shutdown(cx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let rl = cx.rl();
    let (lead, work) = (cx.bin("shim-leader"), cx.bin("shim-worker"));
    let stop = format!("{lead} --action stop");
    let task = |stamp: &Path| {
        format!(
            "sleep {}; date +%s%N > {}",
            cx.cfg.task_secs,
            path_str(stamp)
        )
    };
    // From the task's stamp to mpirun's reaping.
    let stamp_to_exit =
        |prog: &[String], env: &[(&str, String)], stamp: &Path| -> anyhow::Result<Sample> {
            let t = cx.run.time_ok(&mut cx.run.cmd(prog, env))?;
            let ended = unix_us_now();
            let ns: i64 = fs::read_to_string(stamp)?.trim().parse()?;
            Ok(((ended - ns / 1000) as f64 / 1e3, t.end.maxrss_mb()))
        };
    let launched = || -> anyhow::Result<Sample> {
        let stamp = cx.fresh("mpi8")?.join("stamp");
        let mut prog = cx.mpirun(8);
        prog.extend(argv(&[
            &rl,
            "mpi",
            "--leader-cmd",
            &lead,
            "--worker-cmd",
            &work,
            "--leader-stop-cmd",
            &stop,
            "--",
            "sh",
            "-c",
            &task(&stamp),
        ]));
        stamp_to_exit(&prog, &mpi_env(), &stamp)
    };
    let direct = || -> anyhow::Result<Sample> {
        let stamp = cx.fresh("mpi8sh")?.join("stamp");
        // As the reference does: the task and the stop helper in a subshell without the MPI
        // world's variables (the stop helper initialises MPI: it must be a singleton).
        let script = format!(
            "{lead} & l=$!; (for v in $(compgen -e); do case $v in {SCRUB}) unset $v;; esac; done; \
             sh -c '{}'; {stop}); wait $l",
            task(&stamp)
        );
        let mut prog = cx.mpirun(1);
        prog.extend(argv(&["bash", "-c", &script, ":", "-np", "7", &work]));
        let mut env = mpi_env();
        env.extend(proxy_env()?);
        stamp_to_exit(&prog, &env, &stamp)
    };
    let mut rows = Vec::new();
    let s = alternate(
        cx.cfg.shutdown_reps,
        1,
        &mut [Box::new(launched), Box::new(direct)],
    )?;
    let mut r = row(
        "shutdown.mpi8",
        "shutdown: task exit on rank 0 → all 8 ranks of `mpirun -np 8 rank-launch mpi` exited (shim leader/workers; the stop helper initialises MPI as a singleton, like the package import)",
        "ms",
        Target::Max(1000.0),
        times(&s[0]),
        "the shims under mpirun with a bash rank 0 (leader &, task, stop, wait)",
        times(&s[1]),
    );
    r.reference = match &cx.cfg.reference_launch {
        None => Reference::NotGiven("--reference-launch"),
        Some(refl) => {
            let stubs = python_stubs(cx)?;
            let go = |prog: Vec<String>, stamp: PathBuf| -> anyhow::Result<Sample> {
                let mut env = mpi_env();
                env.extend(stub_env(cx, &stubs, "shim")?);
                stamp_to_exit(&prog, &env, &stamp)
            };
            let with = |launcher: &[&str]| -> anyhow::Result<Sample> {
                let stamp = cx.fresh("mpi8ref")?.join("stamp");
                let mut prog = cx.mpirun(8);
                prog.extend(argv(launcher));
                prog.extend(argv(&["sh", "-c", &task(&stamp)]));
                go(prog, stamp)
            };
            let refl = path_str(refl);
            let s = alternate(
                cx.cfg.shutdown_reps,
                1,
                &mut [
                    Box::new(|| with(&[&rl, "mpi", "--"])),
                    Box::new(|| with(&[&refl])),
                ],
            )?;
            Reference::Measured {
                label: "`mpirun -np 8 trtllm-llmapi-launch` (Python stand-ins exec'ing the shims on both sides)".into(),
                ours: times(&s[0]),
                theirs: times(&s[1]),
            }
        }
    };
    rows.push(r);

    rows.push(stop_helper_300ms(cx)?);

    let grace = cx.cfg.grace;
    let grace_ms = grace.as_millis() as u64;
    for (id, what, body) in [
        (
            "term_ignored",
            "ignores TERM",
            r#"trap '' TERM; : > "$0"; exec sleep 30"#,
        ),
        (
            "term_honoured",
            "honours TERM",
            r#": > "$0"; exec sleep 30"#,
        ),
    ] {
        // TERM to the session leader, then until it is reaped and its session is empty.
        let term = |prog: Vec<String>,
                    ready: &Path,
                    kill_after: Option<Duration>|
         -> anyhow::Result<Sample> {
            let pid = cx.run.spawn(&mut cx.run.cmd_session(&prog, &[]))?;
            wait_for_file(ready, Duration::from_secs(10))?;
            let start = Instant::now();
            kill(pid, libc::SIGTERM);
            match kill_after {
                Some(limit) => cx.run.wait_within(pid, limit, false)?,
                None => cx.run.wait(pid)?,
            };
            while session_members(pid) > 0 {
                if start.elapsed() > Duration::from_secs(10) {
                    bail!("processes of session {pid} outlived it by 10 s");
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok((start.elapsed().as_secs_f64() * 1e3, 0.0))
        };
        let launched = || -> anyhow::Result<Sample> {
            let ready = cx.fresh("term")?.join("ready");
            let prog = argv(&[
                &rl,
                "--grace-period",
                &format!("{grace_ms}ms"),
                "--",
                "sh",
                "-c",
                body,
                &path_str(&ready),
            ]);
            term(prog, &ready, None)
        };
        let ideal = || -> anyhow::Result<Sample> {
            let ready = cx.fresh("termsh")?.join("ready");
            term(
                argv(&["sh", "-c", body, &path_str(&ready)]),
                &ready,
                Some(grace),
            )
        };
        let s = alternate(
            cx.cfg.shutdown_reps,
            1,
            &mut [Box::new(launched), Box::new(ideal)],
        )?;
        rows.push(row(
            &format!("shutdown.{id}"),
            &format!("SIGTERM → session gone, task {what}, grace {grace_ms} ms"),
            "ms",
            Target::Max(grace_ms as f64 + 100.0),
            times(&s[0]),
            "the task alone, TERM then KILL after the grace by the harness",
            times(&s[1]),
        ));
    }
    Ok(rows)
}

/// The prefixes TensorRT-LLM's launcher scrubs, as a shell `case` pattern.
const SCRUB: &str =
    "OMPI_*|PMIX_*|PMI_*|SLURM_*|MPI_*|UCX_*|I_MPI_*|HYDRA_*|KMP_*|MPICH_*|MV2_*|CRAY_*";

/// MPI rank 0 whose stop helper takes 300 ms to start (a cold Python import): from the task's
/// end to rank-launch's exit, against the same processes run one after the other by the
/// harness. What rank-launch adds is its reaction to the task's end, the helper's start and
/// the leader's end: a few milliseconds.
fn stop_helper_300ms(cx: &Ctx) -> anyhow::Result<Row> {
    let rl = cx.rl();
    let dir = cx.fresh("stop300")?;
    let (pid_file, stamp) = (dir.join("leader.pid"), dir.join("stamp"));
    let (leader, _) = leader_and_stop(&pid_file);
    let (_, kill_leader) = leader_and_stop(&pid_file);
    let stop = format!("sleep 0.3; {kill_leader}");
    let task = format!("date +%s%N > {}", path_str(&stamp));
    let since_task = |run: &dyn Fn() -> anyhow::Result<()>| -> anyhow::Result<Sample> {
        let _ = fs::remove_file(&pid_file);
        run()?;
        let ended = unix_us_now();
        let ns: i64 = fs::read_to_string(&stamp)?.trim().parse()?;
        Ok(((ended - ns / 1000) as f64 / 1e3, 0.0))
    };
    let prog = argv(&[
        &rl,
        "mpi",
        "--leader-cmd",
        &leader,
        "--leader-stop-cmd",
        &stop,
        "--",
        "sh",
        "-c",
        &task,
    ]);
    let mut env = slurm_env("bench", 0, 2);
    env.push(("RANK_LAUNCH_LOG", "error".into()));
    let launched = || since_task(&|| cx.run.time_ok(&mut cx.run.cmd(&prog, &env)).map(|_| ()));
    let direct = || {
        since_task(&|| {
            let run = &cx.run;
            let l = run.spawn(&mut run.cmd(&["bash", "-c", &leader], &[]))?;
            let t = run.spawn(&mut run.cmd(&["sh", "-c", &task], &[]))?;
            ensure_ok(&run.wait(t)?, "the task")?;
            wait_for_file(&pid_file, Duration::from_secs(10))?;
            let s = run.spawn(&mut run.cmd(&["bash", "-c", &stop], &[]))?;
            ensure_ok(&run.wait(s)?, "the stop helper")?;
            ensure_ok(&run.wait(l)?, "the leader")?;
            Ok(())
        })
    };
    let s = alternate(
        cx.cfg.shutdown_reps,
        1,
        &mut [Box::new(launched), Box::new(direct)],
    )?;
    Ok(row(
        "shutdown.stop_helper_300ms",
        "MPI rank 0, a stop helper that takes 300 ms to start: task end → rank-launch exited",
        "ms",
        Target::Added(5.0),
        times(&s[0]),
        "task, then the helper, then the leader's end, run by the harness",
        times(&s[1]),
    ))
}

/// The budget of every hang figure: rank-launch's `--stall-timeout` / `--ready-timeout`, and
/// `timeout`'s duration beside it, in s.
const HANG_BUDGET_S: u64 = 1;

/// How often rank-launch looks at the process tree for `--stall-probe stopped`, in ms: a stop
/// is seen up to this late.
const STOPPED_LOOK_MS: u64 = 1000;

/// The grace period of the stopped-task figure, in s: long enough to see whether it is spent.
const STOPPED_GRACE_S: u64 = 5;

/// How long one hang run may take before it is killed and the group fails.
const HANG_LIMIT: Duration = Duration::from_secs(30);

/// One run of a task that hangs under a deadline: started in its own session, reaped (killed,
/// and an error, after [`HANG_LIMIT`]), its exit code checked, then its session checked empty
/// (what the verdict stopped is gone). Returns the wall time from spawn to reap in ms, and the
/// moment of the reap in µs since the epoch.
fn verdict_run(
    cx: &Ctx,
    prog: &[String],
    env: &[(&str, String)],
    code: i32,
) -> anyhow::Result<(f64, i64)> {
    let what = prog.join(" ");
    let start = Instant::now();
    let pid = cx.run.spawn(&mut cx.run.cmd_session(prog, env))?;
    let end = cx.run.wait_within(pid, HANG_LIMIT, true)?;
    let wall = start.elapsed();
    let reaped = unix_us_now();
    ensure_code(&end, code, &what)?;
    let deadline = Instant::now() + Duration::from_secs(2);
    while session_members(pid) > 0 {
        if Instant::now() > deadline {
            kill(-pid, libc::SIGKILL);
            bail!("processes of `{what}`'s session outlived it by 2 s");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok((wall.as_secs_f64() * 1e3, reaped))
}

/// A `date +%s%N` stamp, in µs since the epoch.
fn stamp_us(path: &Path) -> anyhow::Result<i64> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let ns: i64 = text
        .trim()
        .parse()
        .with_context(|| format!("stamp `{}` in {}", text.trim(), path.display()))?;
    Ok(ns / 1000)
}

/// Hang → verdict: how long after a task's last sign of life (or its start, when it never gets
/// ready) rank-launch's deadline has ended the rank, against the budget, with GNU `timeout`
/// given the same budget beside it.
pub fn hang(cx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let rl = cx.rl();
    let (reps, warm) = (cx.cfg.hang_reps, cx.cfg.warmup.min(1));
    let budget = format!("{HANG_BUDGET_S}s");
    let budget_ms = (HANG_BUDGET_S * 1000) as f64;
    let env = [("RANK_LAUNCH_LOG", "error".to_string())];
    let mut rows = Vec::new();

    // A line, then silence: the stamp is taken just after the last output.
    let silent = r#"echo serving; date +%s%N > "$0"; exec sleep 60"#;
    let launched = || -> anyhow::Result<Sample> {
        let stamp = cx.fresh("stall")?.join("stamp");
        let prog = argv(&[
            &rl,
            "--grace-period",
            "1s",
            "--stall-timeout",
            &budget,
            "--",
            "sh",
            "-c",
            silent,
            &path_str(&stamp),
        ]);
        let (_, reaped) = verdict_run(cx, &prog, &env, 76)?;
        Ok(((reaped - stamp_us(&stamp)?) as f64 / 1e3, 0.0))
    };
    let timeout = || -> anyhow::Result<Sample> {
        let stamp = cx.fresh("stallsh")?.join("stamp");
        let prog = argv(&[
            "timeout",
            "-s",
            "TERM",
            &budget,
            "sh",
            "-c",
            silent,
            &path_str(&stamp),
        ]);
        Ok((verdict_run(cx, &prog, &[], 124)?.0, 0.0))
    };
    let s = alternate(reps, warm, &mut [Box::new(launched), Box::new(timeout)])?;
    rows.push(row(
        "hang.stall-output",
        &format!(
            "hang, task silent after a line: its last output → `rank-launch --stall-timeout {budget}` (probe `output`, grace 1 s) exited 76"
        ),
        "ms",
        Target::Max(budget_ms + 100.0),
        times(&s[0]),
        &format!("`timeout -s TERM {budget}` around the same task, start → exit 124 (the budget itself)"),
        times(&s[1]),
    ));

    let launched = || -> anyhow::Result<Sample> {
        let prog = argv(&[
            &rl,
            "--grace-period",
            "1s",
            "--ready-timeout",
            &budget,
            "--ready-line",
            "never printed",
            "--",
            "sleep",
            "60",
        ]);
        Ok((verdict_run(cx, &prog, &env, 75)?.0, 0.0))
    };
    let timeout = || -> anyhow::Result<Sample> {
        let prog = argv(&["timeout", "-s", "TERM", &budget, "sleep", "60"]);
        Ok((verdict_run(cx, &prog, &[], 124)?.0, 0.0))
    };
    let s = alternate(reps, warm, &mut [Box::new(launched), Box::new(timeout)])?;
    rows.push(row(
        "hang.not-ready",
        &format!(
            "hang, task never ready: start → `rank-launch --ready-timeout {budget} --ready-line 'never printed' -- sleep 60` (grace 1 s) exited 75"
        ),
        "ms",
        Target::Max(budget_ms + 100.0),
        times(&s[0]),
        &format!("`timeout -s TERM {budget} sleep 60`, start → exit 124 (the budget itself)"),
        times(&s[1]),
    ));

    // The shell stamps, then stops itself: a TERM stays pending on it until a SIGCONT.
    let stopping = r#"date +%s%N > "$0"; kill -STOP $$"#;
    let grace = format!("{STOPPED_GRACE_S}s");
    let launched = || -> anyhow::Result<Sample> {
        let stamp = cx.fresh("stopped")?.join("stamp");
        let prog = argv(&[
            &rl,
            "--grace-period",
            &grace,
            "--stall-timeout",
            &budget,
            "--stall-probe",
            "stopped",
            "--",
            "sh",
            "-c",
            stopping,
            &path_str(&stamp),
        ]);
        let (_, reaped) = verdict_run(cx, &prog, &env, 76)?;
        Ok(((reaped - stamp_us(&stamp)?) as f64 / 1e3, 0.0))
    };
    // `--foreground`: GNU timeout otherwise follows its TERM with a SIGCONT, as rank-launch does.
    let timeout = || -> anyhow::Result<Sample> {
        let stamp = cx.fresh("stoppedsh")?.join("stamp");
        let prog = argv(&[
            "timeout",
            "--foreground",
            "-s",
            "TERM",
            "-k",
            &grace,
            &budget,
            "sh",
            "-c",
            stopping,
            &path_str(&stamp),
        ]);
        let (_, reaped) = verdict_run(cx, &prog, &[], 128 + libc::SIGKILL)?;
        Ok(((reaped - stamp_us(&stamp)?) as f64 / 1e3, 0.0))
    };
    let s = alternate(reps, warm, &mut [Box::new(launched), Box::new(timeout)])?;
    rows.push(row(
        "hang.stopped",
        &format!(
            "hang, task stopped (SIGSTOP): the stop → `rank-launch --stall-timeout {budget} --stall-probe stopped` (grace {STOPPED_GRACE_S} s) exited 76; target: budget + the {STOPPED_LOOK_MS} ms look at the process tree + 200 ms. Its TERM is followed by a SIGCONT, so the stopped task ends at once instead of after the grace"
        ),
        "ms",
        Target::Max(budget_ms + STOPPED_LOOK_MS as f64 + 200.0),
        times(&s[0]),
        &format!(
            "`timeout --foreground -s TERM -k {grace} {budget}` around the same task, the stop → exit 137: a TERM alone stays pending on a stopped process, which costs the whole grace until the KILL (without `--foreground`, `timeout` too sends a SIGCONT after its TERM)"
        ),
        times(&s[1]),
    ));
    Ok(rows)
}

/// launch-gen on every config, compatibility and native mode: time and peak RSS.
pub fn generator(cx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let lg = cx.bin("launch-gen");
    let mut configs: Vec<PathBuf> = fs::read_dir(&cx.cfg.configs_dir)
        .with_context(|| format!("reading {}", cx.cfg.configs_dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    configs.sort();
    if configs.is_empty() {
        bail!("no config in {}", cx.cfg.configs_dir.display());
    }
    let mut cases: Vec<PathBuf> = fs::read_dir(&cx.cfg.compat_dir)
        .with_context(|| format!("reading {}", cx.cfg.compat_dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("args").is_file())
        .collect();
    cases.sort();
    let any_case = cases
        .first()
        .context("no compatibility case with an `args` file")?;
    let out_dir = cx.fresh("gen")?;
    let out = path_str(&out_dir.join("launch.sh"));
    let mut rows = Vec::new();
    for cfg in &configs {
        let stem = cfg
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let cfg_s = path_str(cfg);
        // Compatibility: the golden case's own arguments, else local mode with any case's files.
        let case = cases
            .iter()
            .find(|c| c.file_name().is_some_and(|n| n.to_string_lossy() == stem));
        let (compat_dir, compat_args): (&Path, Vec<String>) = match case {
            Some(dir) => (
                dir,
                fs::read_to_string(dir.join("args"))?
                    .lines()
                    .map(|l| {
                        if l == "OUT" {
                            out.clone()
                        } else {
                            l.to_string()
                        }
                    })
                    .collect(),
            ),
            None => (
                any_case,
                argv(&[
                    "--config-yaml",
                    &cfg_s,
                    "--draft-launch-sh",
                    "draft.sh",
                    "--script-prefix",
                    "prefix.sh",
                    "--srun-args",
                    "srun_args.txt",
                    "--run-sh",
                    "/ws/slurm_run.sh",
                    "--install-sh",
                    "/ws/slurm_install.sh",
                    "--launch-sh",
                    &out,
                ]),
            ),
        };
        let ws = path_str(&out_dir);
        let native_args = argv(&[
            "--config-yaml",
            &cfg_s,
            "--command",
            "pytest -k disagg",
            "--workspace",
            &ws,
            "--launch-sh",
            &out,
        ]);
        for (mode, dir, args) in [
            ("compat", compat_dir, compat_args),
            ("native", out_dir.as_path(), native_args),
        ] {
            // Time from an ordinary run; peak RSS from a second, traced one.
            let run_in = |prog: Vec<String>| -> anyhow::Result<Sample> {
                let mut cmd = cx.run.cmd(&prog, &[]);
                cmd.current_dir(dir);
                let t = cx.run.time_ok(&mut cmd)?;
                let mut cmd = cx.run.cmd(&prog, &[]);
                cmd.current_dir(dir);
                Ok((t.ms(), cx.run.peak_rss_mb(&mut cmd)?))
            };
            let mut ours = vec![lg.clone()];
            ours.extend(args.iter().cloned());
            let base = argv(&["cp", &cfg_s, &out]);
            let s = alternate(
                cx.cfg.gen_reps,
                cx.cfg.warmup,
                &mut [
                    Box::new(|| run_in(ours.clone())),
                    Box::new(|| run_in(base.clone())),
                ],
            )?;
            let reference = match (&cx.cfg.reference_submit, mode) {
                (_, "native") => (Reference::None, Reference::None),
                (None, _) => (
                    Reference::NotGiven("--reference-submit"),
                    Reference::NotGiven("--reference-submit"),
                ),
                (Some(submit), _) => {
                    let mut theirs = argv(&["python3", &path_str(submit)]);
                    theirs.extend(args.iter().cloned());
                    let r = alternate(
                        cx.cfg.gen_reps.min(10),
                        1,
                        &mut [
                            Box::new(|| run_in(ours.clone())),
                            Box::new(|| run_in(theirs.clone())),
                        ],
                    )?;
                    let label = "`python3 submit.py` (same arguments)".to_string();
                    (
                        Reference::Measured {
                            label: label.clone(),
                            ours: times(&r[0]),
                            theirs: times(&r[1]),
                        },
                        Reference::Measured {
                            label,
                            ours: rss(&r[0]),
                            theirs: rss(&r[1]),
                        },
                    )
                }
            };
            let mut t = row(
                &format!("generator.{mode}.{stem}.time"),
                &format!("launch-gen {mode}: `{stem}` time"),
                "ms",
                Target::Max(5.0),
                times(&s[0]),
                "`cp config out`",
                times(&s[1]),
            );
            t.reference = reference.0;
            let mut m = row(
                &format!("generator.{mode}.{stem}.rss"),
                &format!("launch-gen {mode}: `{stem}` peak RSS"),
                "MB",
                Target::Max(8.0),
                rss(&s[0]),
                "`cp config out`",
                rss(&s[1]),
            );
            m.reference = reference.1;
            rows.push(t);
            rows.push(m);
        }
    }
    Ok(rows)
}
