//! Compatibility mode on real Slurm. The golden case `l0-local-cluster` holds L0-style inputs
//! (pyxis srun flags and `--mpi=pmix`, a `set -xEeuo pipefail` prefix whose `pytestCommand`
//! holds `trtllm-llmapi-launch`, a perf YAML, a draft written like the reference's: install
//! step, GEN and CTX servers started with `srun ... $runScript &`, router, benchmark waited).
//! launch-gen renders it byte for byte as the case says; sbatch runs it on the private cluster
//! (with the pyxis stand-in), every step through the deployable drop-ins:
//! `slurm_run.sh` → rank-launch, `trtllm-llmapi-launch` words dropped from the command.
//! Also: a cluster that cannot start says why, within seconds.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use e2e_tests::{Cluster, bin_dir, dist_dir, python_path, root, run};

fn case_dir() -> PathBuf {
    root().join("tests/fixtures/compat/l0-local-cluster")
}

/// Stand-in of the L0 install script: run as a step it installs (records the task, its node
/// and working directory); sourced, it defines `slurm_install_setup`, which the drop-in calls
/// outside disaggregated roles.
const INSTALL_SH: &str = r#"#!/bin/bash
slurm_install_setup() { touch "$COMPAT_WORKSPACE/setup.$SLURM_PROCID"; }
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  echo "$SLURMD_NODENAME $PWD" >"$COMPAT_WORKSPACE/installed.$SLURM_PROCID"
fi
"#;

struct Job {
    state: String,
    exit_code: String,
    /// From submission to the end of the job.
    took: Duration,
    /// The batch script's output.
    output: String,
    /// `$jobWorkspace`.
    ws: PathBuf,
    _work: tempfile::TempDir,
}

impl Job {
    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.ws.join(name)).unwrap_or_default()
    }

    /// Everything there is to look at, for assertion messages.
    fn evidence(&self) -> String {
        let mut text = format!(
            "state {} exit {} after {:?}\n--- job output\n{}",
            self.state, self.exit_code, self.took, self.output
        );
        for name in [
            "install.log",
            "gen_server_0.log",
            "ctx_server_0.log",
            "disagg_server.log",
            "benchmark.log",
        ] {
            text.push_str(&format!("--- {name}\n{}", self.log(name)));
        }
        text
    }
}

/// Renders the golden case's script and checks it against `expected.sh`.
fn render(out: &Path) {
    let args: Vec<String> = std::fs::read_to_string(case_dir().join("args"))
        .expect("args")
        .lines()
        .map(|a| {
            if a == "OUT" {
                out.display().to_string()
            } else {
                a.to_owned()
            }
        })
        .collect();
    let rendered = run(
        Command::new(bin_dir().join("launch-gen"))
            .args(&args)
            .current_dir(case_dir()),
        Duration::from_secs(30),
    );
    assert_eq!(rendered.code, Some(0), "launch-gen: {}", rendered.stderr);
    // What the reference prints: its configuration, where the script went, the script.
    assert!(
        rendered
            .stdout
            .starts_with("Environment configuration: {'container': "),
        "{}",
        rendered.stdout
    );
    assert!(
        rendered
            .stdout
            .contains(&format!("Launch script generated at: {}\n", out.display())),
        "{}",
        rendered.stdout
    );
    let written = std::fs::read(out).expect("launch script");
    let expected = std::fs::read(case_dir().join("expected.sh")).expect("expected.sh");
    assert!(
        written == expected,
        "the generated script differs from the golden case's expected.sh"
    );
}

/// Renders, submits and waits for the compatibility job; `fail_rank` injects a crash.
fn compat_job(cluster: &Cluster, fail_rank: Option<&str>) -> Job {
    let work = tempfile::Builder::new()
        .prefix("rank-launch-compat.")
        .tempdir()
        .expect("tempdir");
    let dist = dist_dir(work.path());
    let ws = work.path().join("ws");
    std::fs::create_dir(&ws).expect("workspace");
    std::fs::write(ws.join("slurm_install.sh"), INSTALL_SH).expect("install script");
    let script = work.path().join("launch.sh");
    render(&script);

    let output_path = work.path().join("job-output.log");
    let path = format!(
        "{}:{}",
        dist.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut sbatch = cluster.command("sbatch");
    sbatch
        .arg("--parsable")
        .arg(format!("--output={}", output_path.display()))
        .arg(&script)
        .current_dir(work.path())
        .env("PATH", path)
        .env("COMPAT_DIST", &dist)
        .env("COMPAT_WORKSPACE", &ws)
        // TensorRT-LLM's default leader, worker and stop commands, on the stand-in package.
        .env("PYTHONPATH", python_path())
        .env_remove("RANK_LAUNCH_LEADER_CMD")
        .env_remove("RANK_LAUNCH_WORKER_CMD")
        .env_remove("RANK_LAUNCH_LEADER_STOP_CMD")
        .env_remove("RANK_LAUNCH_INSTALL_CMD")
        // Several nodes on one host: Open MPI over TCP on loopback (see scripts/demo).
        .env("OMPI_MCA_btl", "self,tcp")
        .env("OMPI_MCA_btl_tcp_if_include", "lo");
    match fail_rank {
        Some(spec) => sbatch.env("SHIM_FAIL_RANK", spec),
        None => sbatch.env_remove("SHIM_FAIL_RANK"),
    };
    let submitted = run(&mut sbatch, Duration::from_secs(30));
    assert_eq!(submitted.code, Some(0), "sbatch: {}", submitted.stderr);
    let job_id = submitted.stdout.trim().to_owned();
    let start = Instant::now();

    let (state, exit_code) = loop {
        let show = run(
            cluster.command("scontrol").args(["show", "job", &job_id]),
            Duration::from_secs(30),
        );
        let field = |name: &str| {
            show.stdout
                .split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .unwrap_or("")
                .to_owned()
        };
        let state = field("JobState");
        if !matches!(
            state.as_str(),
            "" | "PENDING" | "CONFIGURING" | "RUNNING" | "COMPLETING"
        ) {
            break (state, field("ExitCode"));
        }
        // The script's own limit is 10 minutes; a stuck job fails the test well before.
        assert!(
            start.elapsed() < Duration::from_secs(240),
            "job {job_id} still {state}:\n{}",
            std::fs::read_to_string(&output_path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    Job {
        state,
        exit_code,
        took: start.elapsed(),
        output: std::fs::read_to_string(&output_path).unwrap_or_default(),
        ws,
        _work: work,
    }
}

#[test]
fn an_l0_style_compat_script_runs_to_completed_through_the_drop_ins() {
    let cluster = Cluster::up(2);
    let job = compat_job(&cluster, None);
    let all = job.evidence();
    assert_eq!(
        (job.state.as_str(), job.exit_code.as_str()),
        ("COMPLETED", "0:0"),
        "{all}"
    );
    assert!(job.output.contains("Benchmark done"), "{all}");
    // The pyxis flags were taken (plain Slurm refuses them) ...
    assert!(!all.contains("unrecognized option"), "{all}");
    // ... and the install step ran once per task of the allocation, in --container-workdir.
    let mut nodes = Vec::new();
    for rank in 0..4 {
        let record = std::fs::read_to_string(job.ws.join(format!("installed.{rank}")))
            .unwrap_or_else(|_| panic!("task {rank} did not install:\n{all}"));
        let (node, cwd) = record.trim().split_once(' ').expect("node and cwd");
        assert_eq!(Path::new(cwd), job.ws, "{all}");
        nodes.push(node.to_owned());
    }
    nodes.sort();
    nodes.dedup();
    assert_eq!(nodes, ["n1", "n2"], "{all}");
    // Disaggregated roles do not install again in the drop-in.
    assert!(
        !(0..4).any(|r| job.ws.join(format!("setup.{r}")).exists()),
        "{all}"
    );
    // Every role ran under rank-launch; the servers as MPI worlds of two ranks, released by
    // the benchmark's status record (the section 6 protocol).
    let gen_log = job.log("gen_server_0.log");
    let ctx = job.log("ctx_server_0.log");
    for (log, role) in [(&gen_log, "GEN_0"), (&ctx, "CTX_0")] {
        for rank in 0..2 {
            assert!(
                log.contains(&format!("rank={rank}")) && log.contains(role),
                "{role} rank {rank}:\n{all}"
            );
        }
    }
    let coordination: Vec<PathBuf> = std::fs::read_dir(&job.ws)
        .expect("workspace")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("disagg-"))
        })
        .collect();
    assert_eq!(coordination.len(), 1, "{all}");
    let status =
        std::fs::read_to_string(coordination[0].join("benchmark_status")).unwrap_or_default();
    assert_eq!(status.trim(), "Done", "{all}");
    assert!(
        job.log("benchmark.log").contains("Request throughput"),
        "{all}"
    );
}

#[test]
fn an_injected_gen_crash_ends_the_compat_job_by_itself() {
    let cluster = Cluster::up(2);
    let job = compat_job(&cluster, Some("GEN_0:1"));
    let all = job.evidence();
    // The draft's cleanup_on_failure cancels the job once the benchmark fails.
    assert_eq!(job.state, "CANCELLED", "{all}");
    assert!(job.output.contains("Error: benchmark failed"), "{all}");
    assert!(
        job.log("gen_server_0.log")
            .contains("fault injection (SHIM_FAIL_RANK)"),
        "{all}"
    );
    // Seen here: about 5-7 s when the crash comes while the benchmark sends requests (they
    // fail once GEN_0's step is gone); about 35 s when GEN_0 is gone before the router reports
    // healthy: the benchmark then waits out its readiness bound (SHIM_TIMEOUT=30 in the
    // prefix), as the reference's does; the draft watches no server step. Never the job's
    // 10 minute limit.
    assert!(job.took < Duration::from_secs(90), "{all}");
}

#[test]
fn a_cluster_that_cannot_start_says_why_and_keeps_its_logs() {
    // The cause seen here: a node port that is the local end of an outgoing connection.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let held = std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let port = held.local_addr().expect("local addr").port();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let cluster_dir = dir.path().join("cluster");
    let start = Instant::now();
    let out = run(
        Command::new(root().join("tests/cluster/local.sh"))
            .args(["up", "1"])
            .env("RANK_LAUNCH_CLUSTER_DIR", &cluster_dir)
            .env("RANK_LAUNCH_CLUSTER_NODE_PORT", port.to_string()),
        Duration::from_secs(60),
    );
    let took = start.elapsed();
    let _ = Command::new(root().join("tests/cluster/local.sh"))
        .arg("down")
        .env("RANK_LAUNCH_CLUSTER_DIR", &cluster_dir)
        .output();
    let all = format!("{:?} after {took:?}\n{}", out.code, out.stderr);
    assert_eq!(out.code, Some(1), "{all}");
    assert!(
        out.stderr.contains("slurmd n1 died during start-up"),
        "{all}"
    );
    // The last lines of the slurmd log say why, and where the logs are.
    assert!(out.stderr.contains("Unable to bind listen port"), "{all}");
    assert!(
        out.stderr
            .contains(&format!("logs kept in {}/log", cluster_dir.display())),
        "{all}"
    );
    // Not the 30 s bound of waiting for idle nodes.
    assert!(took < Duration::from_secs(15), "{all}");
    drop(held);
}
