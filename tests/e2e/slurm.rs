//! The whole flow on a real Slurm cluster: `srun --mpi=pmix rank-check`, and the demo job
//! (`scripts/demo`, the README's main command) passing; its failing and hanging cases are in
//! `hang.rs`.

use std::process::Command;
use std::time::Duration;

use e2e_tests::{Cluster, bin_dir, marked_processes, python_path, root, run};

#[test]
fn srun_pmix_rank_check_agrees_across_nodes() {
    let cluster = Cluster::up(2);
    let out = run(
        cluster
            .command("srun")
            .args([
                "-N",
                "2",
                "-n",
                "4",
                "--ntasks-per-node=2",
                "--mpi=pmix",
                "rank-check",
            ])
            .env("OMPI_MCA_btl", "self,tcp")
            .env("OMPI_MCA_btl_tcp_if_include", "lo"),
        Duration::from_secs(120),
    );
    assert_eq!(
        out.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
    assert!(out.stdout.contains("4"), "{}", out.stdout);
}

/// Runs `scripts/demo` with the binaries under test (`bin_dir`); returns its output.
fn demo(extra: &[&str]) -> e2e_tests::Output {
    let bin = bin_dir();
    run(
        Command::new(root().join("scripts/demo"))
            .args(["--bin-dir", bin.to_str().unwrap()])
            .args(extra),
        Duration::from_secs(600),
    )
}

fn last_line(text: &str) -> &str {
    text.lines().last().unwrap_or("")
}

#[test]
fn demo_job_passes_with_every_role_on_its_nodes() {
    let out = demo(&["--keep"]);
    let all = format!("stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    let work = out
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("work directory kept: "))
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| panic!("no work directory: {all}"));
    // `launch-gen status` after the job: the verdict, and every rank ended with 0.
    let status = run(
        Command::new(bin_dir().join("launch-gen"))
            .arg("status")
            .arg(work.join("job"))
            .arg("--json"),
        Duration::from_secs(60),
    );
    let json: serde_json::Value = serde_json::from_str(&status.stdout)
        .unwrap_or_else(|e| panic!("status --json: {e}: {}\n{}", status.stdout, status.stderr));
    assert_eq!(json["verdict"]["verdict"], "PASS", "{json}");
    let ranks: Vec<&serde_json::Value> = json["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["kind"] == "rank")
        .collect();
    assert_eq!(ranks.len(), 6, "{json}");
    assert!(
        ranks
            .iter()
            .all(|r| r["phase"] == "ended" && r["exit_code"] == 0),
        "{json}"
    );
    assert!(work.join("job/report.html").is_file(), "report.html: {all}");
    // The role blocks and the cluster's UCX rule reach the processes that run the model: the
    // MPI leader (rank 0) and the worker (rank 1) of each server, each kind its own block.
    for (log, own, other) in [
        ("gen_server_0.log", "SHIM_GEN_ONLY", "SHIM_CTX_ONLY"),
        ("ctx_server_0.log", "SHIM_CTX_ONLY", "SHIM_GEN_ONLY"),
    ] {
        let text = std::fs::read_to_string(work.join("job").join(log))
            .unwrap_or_else(|e| panic!("{log}: {e}: {all}"));
        let settings: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("executor settings: "))
            .collect();
        for rank in ["rank=0", "rank=1"] {
            let line = settings
                .iter()
                .find(|l| l.contains(&format!(" {rank} ")))
                .unwrap_or_else(|| panic!("{log}: no executor settings of {rank}:\n{text}"));
            for wanted in [
                "UCX_TLS=^gdr_copy".to_owned(),
                "UCX_NET_DEVICES=-".to_owned(),
                "SHIM_WORKER=1".to_owned(),
                format!("{own}=1"),
                format!("{other}=-"),
            ] {
                assert!(line.contains(&wanted), "{log} {rank}: {wanted} in {line}");
            }
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    assert_eq!(out.code, Some(0), "{all}");
    assert_eq!(last_line(&out.stdout), "verdict: PASS", "{all}");
    assert!(out.stdout.contains("COMPLETED"), "{all}");
    assert!(
        out.stdout.to_lowercase().contains("throughput"),
        "benchmark numbers in the output: {all}"
    );
    // The per-role table: role rank node exit_code ended_in seconds.
    let rows: Vec<Vec<&str>> = out
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| {
            f.len() == 6 && ["GEN_0", "CTX_0", "DISAGG_SERVER", "BENCHMARK"].contains(&f[0])
        })
        .collect();
    let count = |role: &str| rows.iter().filter(|r| r[0] == role).count();
    assert_eq!(
        (
            count("GEN_0"),
            count("CTX_0"),
            count("DISAGG_SERVER"),
            count("BENCHMARK")
        ),
        (2, 2, 1, 1),
        "{all}"
    );
    assert!(
        rows.iter().all(|r| r[3] == "0"),
        "every rank exited 0: {all}"
    );
    // Slices: GEN servers first, then CTX; the router and the benchmark on the first node.
    for (role, node) in [
        ("GEN_0", "n1"),
        ("CTX_0", "n2"),
        ("DISAGG_SERVER", "n1"),
        ("BENCHMARK", "n1"),
    ] {
        assert!(
            rows.iter().filter(|r| r[0] == role).all(|r| r[2] == node),
            "{role} not on {node}: {all}"
        );
    }
}

/// `scancel` of a running step: every rank gets TERM through Slurm, rank-launch forwards it,
/// every task exits within the grace period, and no process of the step is left.
#[test]
fn scancel_ends_every_rank_within_the_grace_period() {
    let cluster = Cluster::up(2);
    let dir = tempfile::tempdir().expect("tempdir");
    let out_path = dir.path().join("out.log");
    // A marker in the tasks' command lines, to count what is left afterwards.
    let marker = format!("61.{}", std::process::id());
    // Each rank records its own start and TERM in a file: what srun relays of the tasks'
    // output while the step is being cancelled is not reliable (seen here: one rank's line
    // twice, another's missing).
    let d = dir.path().display();
    let task = format!(
        "trap 'touch {d}/term-$RANK; exit 0' TERM; sleep {marker} & touch {d}/up-$RANK; wait"
    );
    let mut srun = cluster
        .command("srun")
        .args([
            "-N",
            "2",
            "-n",
            "4",
            "rank-launch",
            "--grace-period",
            "3s",
            "--",
            "bash",
            "-c",
            &task,
        ])
        .stdout(std::fs::File::create(&out_path).expect("out"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("srun");
    let text = || std::fs::read_to_string(&out_path).unwrap_or_default();
    let count = |what: &str| {
        (0..4)
            .filter(|r| dir.path().join(format!("{what}-{r}")).exists())
            .count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while count("up") < 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "ranks did not start: {}",
            text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let squeue = run(
        cluster.command("squeue").args(["-h", "-o", "%i"]),
        Duration::from_secs(30),
    );
    let job = squeue
        .stdout
        .split_whitespace()
        .next()
        .expect("a job")
        .to_string();
    let sent = std::time::Instant::now();
    let out = run(
        cluster.command("scancel").arg(&job),
        Duration::from_secs(30),
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let status = loop {
        if let Some(status) = srun.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(30),
            "srun still running: {}",
            text()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = sent.elapsed();
    let output = text();
    for rank in 0..4 {
        assert!(
            dir.path().join(format!("term-{rank}")).exists(),
            "rank {rank} got no TERM: {output}"
        );
    }
    // Grace period 3 s; well inside Slurm's KillWait of 10 s.
    assert!(
        took < Duration::from_secs(4),
        "took {took:?} (srun: {status:?})"
    );
    let left = run(
        Command::new("pgrep").args(["-f", &format!("sleep {marker}")]),
        Duration::from_secs(10),
    );
    assert!(
        left.stdout.trim().is_empty(),
        "left behind: {}",
        left.stdout
    );
}

/// TensorRT-LLM's launch contract on real Slurm: `srun --mpi=pmix rank-launch mpi -- TASK` with
/// rank-launch's default leader, worker and stop commands (the stand-in `tensorrt_llm` package,
/// whose modules initialise MPI first, like the real package's import). The stop helper must
/// come up as an MPI singleton. Seen here with a build that gave it rank 0's PMIx environment:
/// it aborts inside MPI_Init, Slurm's PMIx plugin reports the abort of rank 0
/// (`mpi/pmix_v4: _errhandler ... status = -61`) and cancels the whole step, every task
/// killed (137) about a second later. Every rank exits within about a second of the task's
/// end, rank 0 with the task's code, the leader stopped by its stop command, nothing left.
#[test]
fn srun_pmix_with_the_default_commands_exits_with_the_task_code_promptly() {
    let cluster = Cluster::up(2);
    for (tasks, code) in [(2, 0), (2, 3), (4, 0), (4, 3)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mark = format!("{}-{tasks}-{code}", std::process::id());
        let summary = dir.path().join("summary.%r.json");
        let out = run(
            cluster
                .command("srun")
                .args(["-N", "2", "-n", &tasks.to_string(), "--mpi=pmix"])
                .arg("rank-launch")
                .args(["mpi", "--summary-json"])
                .arg(&summary)
                .args(["--", "shim-task"])
                .env("PYTHONPATH", python_path())
                .env("SHIM_TASK_EXIT", code.to_string())
                .env("SHIM_TEST_MARK", &mark)
                .env("OMPI_MCA_btl", "self,tcp")
                .env("OMPI_MCA_btl_tcp_if_include", "lo"),
            Duration::from_secs(120),
        );
        let all = format!("stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
        // srun exits with the highest task code.
        assert_eq!(out.code, Some(code), "{tasks} tasks, task {code}: {all}");
        let read = |rank: u32| -> serde_json::Value {
            let path = dir.path().join(format!("summary.{rank}.json"));
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}: {all}", path.display()));
            serde_json::from_str(&text).expect("summary JSON")
        };
        let rank0 = read(0);
        let child = |name: &str| {
            rank0["children"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["name"] == name))
                .cloned()
                .unwrap_or_else(|| panic!("no {name}: {rank0}"))
        };
        assert_eq!(rank0["exit_code"], code, "{all}");
        assert_eq!(child("leader")["exit_code"], 0, "{all}");
        assert!(child("leader")["signal"].is_null(), "{all}");
        assert_eq!(child("leader-stop")["exit_code"], 0, "{all}");
        assert!(
            out.stderr
                .contains("stopped by stop request after 1 task(s)"),
            "the stop command stopped the leader: {all}"
        );
        let task_end = child("task")["ended_unix_us"].as_u64().expect("task end");
        let last = (0..tasks)
            .map(|r| read(r)["ended_unix_us"].as_u64().expect("ended_unix_us"))
            .max()
            .unwrap();
        let after = Duration::from_micros(last.saturating_sub(task_end));
        eprintln!(
            "srun --mpi=pmix -n {tasks}, task {code}: every rank done {after:?} after the task's end"
        );
        assert!(after < Duration::from_millis(1500), "{after:?}: {all}");
        let left = marked_processes(&mark);
        assert!(left.is_empty(), "left running: {left:?}");
    }
}
