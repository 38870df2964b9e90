//! Process-level tests: the real `rank-launch` binary with shell scripts standing in for the
//! task, the MPI leader and the workers. Every wait is on an event (a line, an exit) with a
//! timeout; nothing sleeps to pass.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

#[test]
fn exit_codes_pass_through() {
    let env = base_env();
    for (cmd, code) in [
        ("exit 0", 0),
        ("exit 3", 3),
        ("kill -SEGV $$", 139),
        ("kill -TERM $$", 143),
    ] {
        let (status, r) = run(&["--", "bash", "-c", cmd], &env);
        assert_eq!(status.code(), Some(code), "{cmd}; stderr:\n{}", r.stderr());
    }
    let (status, r) = run(&["--", "/nonexistent/program"], &env);
    assert_eq!(status.code(), Some(127));
    assert!(
        r.stderr().contains("`/nonexistent/program` was not found"),
        "{}",
        r.stderr()
    );
    let dir = tempdir();
    let path = dir.path().join("not-executable");
    std::fs::write(&path, "echo hi").unwrap();
    let (status, _) = run(&["--", path.to_str().unwrap()], &env);
    assert_eq!(status.code(), Some(126));
    // Executable but without a `#!` line: run by sh, as execvp and shells do.
    let script = dir.path().join("no-shebang");
    std::fs::write(&script, "echo \"ran $1\"; exit 5\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (status, r) = run(&["--", script.to_str().unwrap(), "arg"], &env);
    assert_eq!(status.code(), Some(5), "{}", r.stderr());
    assert_eq!(r.stdout(), "ran arg\n");
    // Found on PATH, like execvp.
    let (status, r) = run(&["--", "sh", "-c", "exit 4"], &env);
    assert_eq!(status.code(), Some(4), "{}", r.stderr());
}

#[test]
fn pytest_command_runs_under_bash_without_llmapi_launch() {
    let mut env = base_env();
    env.insert("pytestCommand".into(), "A='x y' /opt/trtllm/trtllm-llmapi-launch bash -c 'echo \"a=$A r=$RANK w=$WORLD_SIZE t=$tllm_mpi_size\"'".into());
    let (status, r) = run(&[], &env);
    assert!(status.success(), "{}", r.stderr());
    assert_eq!(r.stdout(), "a=x y r=0 w=1 t=1\n");
    env.remove("pytestCommand");
    let (status, r) = run(&[], &env);
    assert_eq!(status.code(), Some(2));
    assert!(
        r.stderr()
            .contains("no command: give one after `--` or set `pytestCommand`"),
        "{}",
        r.stderr()
    );
}

#[test]
fn bad_role_and_bad_rank_env_are_exit_2() {
    let mut env = base_env();
    env.insert("DISAGG_SERVING_TYPE".into(), "GEN-0".into());
    let (status, r) = run(&["--", "true"], &env);
    assert_eq!(status.code(), Some(2));
    assert!(
        r.stderr().contains(
            "`DISAGG_SERVING_TYPE` is `GEN-0`: expected `GEN_<n>`, `CTX_<n>`, `DISAGG_SERVER` or `BENCHMARK`"
        ),
        "{}",
        r.stderr()
    );
    let mut env = srun_env(7, 4);
    env.insert("SLURM_LOCALID".into(), "0".into());
    let (status, r) = run(&["whoami", "--json"], &env);
    assert_eq!(status.code(), Some(2));
    assert_eq!(r.stdout(), "", "nothing on stdout on error");
    assert!(
        r.stderr()
            .contains("`SLURM_PROCID`=7 is out of range for `SLURM_STEP_NUM_TASKS`=4"),
        "{}",
        r.stderr()
    );
}

#[test]
fn whoami_under_srun_and_mpirun_style_environments() {
    let (status, r) = run(&["whoami", "--json"], &srun_env(2, 4));
    assert!(status.success());
    let v: serde_json::Value = serde_json::from_str(r.stdout().trim()).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"rank": 2, "local_rank": 2, "world_size": 4, "local_world_size": 4, "node_rank": 0, "source": "slurm"})
    );
    // mpirun inside an sbatch allocation: stale batch SLURM_PROCID=0 must lose.
    let mut env = base_env();
    for (k, v) in [
        ("SLURM_JOB_ID", "9"),
        ("SLURM_PROCID", "0"),
        ("SLURM_NTASKS", "4"),
        ("OMPI_COMM_WORLD_RANK", "3"),
        ("OMPI_COMM_WORLD_SIZE", "4"),
        ("OMPI_COMM_WORLD_LOCAL_RANK", "3"),
        ("OMPI_COMM_WORLD_LOCAL_SIZE", "4"),
    ] {
        env.insert(k.into(), v.into());
    }
    let (status, r) = run(&["whoami", "--json"], &env);
    assert!(status.success());
    let v: serde_json::Value = serde_json::from_str(r.stdout().trim()).unwrap();
    assert_eq!(v["rank"], 3);
    assert_eq!(v["source"], "openmpi");
    let (status, r) = run(&["whoami"], &env);
    assert!(status.success());
    assert!(
        r.stdout()
            .contains("source            openmpi (from OMPI_COMM_WORLD_RANK"),
        "{}",
        r.stdout()
    );
}

#[test]
fn sigterm_is_forwarded_and_the_tree_is_gone() {
    let env = base_env();
    let mut r = start(
        &[
            "--grace-period",
            "5s",
            "--",
            "bash",
            "-c",
            "trap 'echo got-term; kill $!; exit 0' TERM; sleep 300 & echo \"ready $$ $!\"; wait",
        ],
        &env,
    );
    let ready = r.expect_line("ready ");
    let pids: Vec<Pid> = ready
        .split_whitespace()
        .map(|p| Pid::from_raw(p.parse().unwrap()))
        .collect();
    kill(r.pid(), Signal::SIGTERM).unwrap();
    r.expect_line("got-term");
    let (status, took) = r.wait();
    assert_eq!(
        status.code(),
        Some(0),
        "the child handled TERM and exited 0; stderr:\n{}",
        r.stderr()
    );
    assert!(took < Duration::from_secs(3), "took {took:?}");
    for pid in &pids {
        assert!(!alive(*pid), "{pid} survived");
    }
    assert!(!group_alive(pids[0]));
}

#[test]
fn grace_period_then_sigkill_for_a_child_ignoring_term() {
    let env = base_env();
    let mut r = start(
        &[
            "--grace-period",
            "500ms",
            "--",
            "bash",
            "-c",
            "trap '' TERM; echo ready $$; while :; do sleep 0.05; done",
        ],
        &env,
    );
    let pid = Pid::from_raw(r.expect_line("ready ").trim().parse().unwrap());
    let sent = Instant::now();
    kill(r.pid(), Signal::SIGTERM).unwrap();
    let (status, _) = r.wait();
    let took = sent.elapsed();
    assert_eq!(status.code(), Some(137), "{}", r.stderr());
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(3),
        "took {took:?}"
    );
    assert!(!group_alive(pid));
}

#[test]
fn usr1_is_a_notice() {
    let env = base_env();
    let mut r = start(
        &[
            "--",
            "bash",
            "-c",
            "trap 'echo got-usr1; touch_done=1' USR1; echo ready; while [ -z \"${touch_done:-}\" ]; do sleep 0.05; done; exit 5",
        ],
        &env,
    );
    r.expect_line("ready");
    kill(r.pid(), Signal::SIGUSR1).unwrap();
    r.expect_line("got-usr1");
    let (status, _) = r.wait();
    assert_eq!(status.code(), Some(5));
}

#[test]
fn sigkill_of_rank_launch_leaves_no_grandchildren() {
    let env = base_env();
    let mut r = start(
        &["--", "sh", "-c", "sleep 60 & echo ready $$ $!; wait"],
        &env,
    );
    let ready = r.expect_line("ready ");
    let pids: Vec<Pid> = ready
        .split_whitespace()
        .map(|p| Pid::from_raw(p.parse().unwrap()))
        .collect();
    kill(r.pid(), Signal::SIGKILL).unwrap();
    let _ = r.wait();
    wait_for(
        "the task and its grandchild to die",
        Duration::from_secs(5),
        || pids.iter().all(|p| !alive(*p)),
    );
}

#[test]
fn label_prefixes_lines_and_keeps_last_output() {
    let env = srun_env(1, 2);
    let (status, r) = run(
        &[
            "--label",
            "--",
            "bash",
            "-c",
            "echo one; printf 'two\\nno-newline'; echo err >&2",
        ],
        &env,
    );
    assert!(status.success(), "{}", r.stderr());
    assert_eq!(r.stdout(), "1: one\n1: two\n1: no-newline\n");
    assert!(r.stderr().contains("1: err\n"));
}

#[test]
fn summary_json_is_written() {
    let dir = tempdir();
    let pattern = dir.path().join("summary.%r.json");
    let (status, _) = run(
        &[
            "--summary-json",
            pattern.to_str().unwrap(),
            "--",
            "bash",
            "-c",
            "exit 4",
        ],
        &srun_env(1, 2),
    );
    assert_eq!(status.code(), Some(4));
    let text = std::fs::read_to_string(dir.path().join("summary.1.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["rank"], 1);
    assert_eq!(v["exit_code"], 4);
    assert_eq!(v["child_exit_code"], 4);
    assert_eq!(v["command"], serde_json::json!(["bash", "-c", "exit 4"]));
    assert_eq!(v["children"][0]["name"], "task");
}

/// Stand-ins for the MPI leader, worker and stop command.
struct MpiStandIns {
    dir: tempfile::TempDir,
}

impl MpiStandIns {
    fn new() -> Self {
        let dir = tempdir();
        let d = dir.path();
        // The leader records its environment and command line, then serves until `stop` appears.
        script(
            d,
            "leader",
            &format!(
                "env > {d}/leader.env; tr '\\0' ' ' < /proc/$$/cmdline > {d}/leader.cmdline\n\
                 echo leader-up; while [ ! -e {d}/stop.requested ]; do sleep 0.02; done; echo leader-stopped",
                d = d.display()
            ),
        );
        script(
            d,
            "stop",
            &format!(
                "env > {d}/stop.env; touch {d}/stop.requested",
                d = d.display()
            ),
        );
        script(
            d,
            "task",
            &format!(
                "env > {d}/task.env; echo task-ran; exit ${{TASK_EXIT:-0}}",
                d = d.display()
            ),
        );
        script(
            d,
            "worker",
            &format!(
                "echo worker-ran-as-rank-$RANK; env > {d}/worker.env",
                d = d.display()
            ),
        );
        MpiStandIns { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn env_file(&self, name: &str) -> BTreeMap<String, String> {
        std::fs::read_to_string(self.dir.path().join(name))
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn args(&self, stop_cmd: &str) -> Vec<String> {
        vec![
            "--leader-cmd".into(),
            self.path("leader"),
            "--worker-cmd".into(),
            self.path("worker"),
            "--leader-stop-cmd".into(),
            stop_cmd.into(),
            "--leader-stop-timeout".into(),
            "1s".into(),
        ]
    }
}

#[test]
fn mpi_rank0_runs_task_beside_leader_with_scrubbed_env_and_secret_key() {
    let s = MpiStandIns::new();
    let mut env = srun_env(0, 2);
    env.insert("DISAGG_SERVING_TYPE".into(), "GEN_0".into());
    env.insert(
        "pytestCommand".into(),
        format!("trtllm-llmapi-launch {}", s.path("task")),
    );
    env.insert("RANK_LAUNCH_LOG".into(), "trace".into());
    let args = s.args(&s.path("stop"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (status, r) = run(&args, &env);
    assert!(status.success(), "{}", r.stderr());

    let task = s.env_file("task.env");
    let leader = s.env_file("leader.env");
    let stop = s.env_file("stop.env");
    let bad: Vec<&String> = task
        .keys()
        .filter(|k| {
            ["SLURM_", "PMIX_", "OMPI_", "UCX_"]
                .iter()
                .any(|p| k.starts_with(p))
        })
        .collect();
    assert!(bad.is_empty(), "task saw launcher variables: {bad:?}");
    assert_eq!(task["RANK"], "0");
    assert_eq!(task["WORLD_SIZE"], "2");
    assert_eq!(task["tllm_mpi_size"], "2");
    assert_eq!(task["TLLM_SPAWN_PROXY_PROCESS"], "1");
    assert_eq!(task["RANK_LAUNCH_JOB_ID"], "4242");
    assert_eq!(
        leader["SLURM_PROCID"], "0",
        "the leader keeps the MPI environment"
    );
    assert_eq!(leader["PMIX_RANK"], "0");

    let key = &task["TLLM_SPAWN_PROXY_PROCESS_IPC_HMAC_KEY"];
    assert_eq!(key.len(), 64);
    assert!(key.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        &leader["TLLM_SPAWN_PROXY_PROCESS_IPC_HMAC_KEY"], key,
        "one key per step"
    );
    assert_eq!(&stop["TLLM_SPAWN_PROXY_PROCESS_IPC_HMAC_KEY"], key);
    let addr = &task["TLLM_SPAWN_PROXY_PROCESS_IPC_ADDR"];
    assert!(addr.starts_with("tcp://127.0.0.1:"), "{addr}");
    assert_eq!(&leader["TLLM_SPAWN_PROXY_PROCESS_IPC_ADDR"], addr);

    assert!(!r.stderr().contains(key.as_str()), "key in stderr");
    assert!(!r.stdout().contains(key.as_str()), "key in stdout");
    let cmdline = std::fs::read_to_string(s.dir.path().join("leader.cmdline")).unwrap();
    assert!(
        !cmdline.contains(key.as_str()),
        "key in the leader's command line"
    );
    assert!(r.stdout().contains("task-ran"));
    assert!(r.stdout().contains("leader-stopped"));
}

#[test]
fn mpi_task_failure_stops_a_stubborn_leader_fast_and_keeps_the_task_code() {
    let s = MpiStandIns::new();
    // A leader that ignores both the stop command and SIGTERM.
    script(
        s.dir.path(),
        "leader",
        "trap '' TERM; echo leader-up; while :; do sleep 0.05; done",
    );
    let mut env = srun_env(0, 2);
    env.insert("TASK_EXIT".into(), "3".into());
    let args = s.args("true");
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.insert(0, "mpi");
    let task = s.path("task");
    args.extend(["--grace-period", "1s", "--", task.as_str()]);
    let mut r = start(&args, &env);
    r.expect_line("task-ran");
    let (status, took) = r.wait();
    assert_eq!(
        status.code(),
        Some(3),
        "rank 0 exits with the task's code; stderr:\n{}",
        r.stderr()
    );
    // Stop timeout 1 s, then TERM, then KILL 1 s later: well under 5 s.
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(
        r.stderr()
            .contains("MPI leader shutdown exceeded 1s after the task's end"),
        "{}",
        r.stderr()
    );
}

#[test]
fn mpi_leader_dying_first_stops_the_task() {
    let s = MpiStandIns::new();
    let up = s.path("task.up");
    script(
        s.dir.path(),
        "leader",
        &format!("while [ ! -e {up} ]; do sleep 0.01; done; echo leader-dies; exit 9"),
    );
    script(
        s.dir.path(),
        "task",
        &format!(
            "trap 'echo task-got-term; exit 0' TERM; touch {up}; while :; do sleep 0.05; done"
        ),
    );
    let env = srun_env(0, 2);
    let args = s.args("true");
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.insert(0, "mpi");
    let task = s.path("task");
    args.extend(["--", task.as_str()]);
    let (status, r) = run(&args, &env);
    // Upstream's rule: the task had the stop timeout (1 s) to end on its own, did not, was
    // terminated; the leader's code is the rank's.
    assert_eq!(status.code(), Some(9), "{}", r.stderr());
    assert!(r.stdout().contains("task-got-term"));
    assert!(
        r.stderr().contains(
            "the MPI leader ended (exit code 9) before the task, and the task did not end within 1s"
        ),
        "{}",
        r.stderr()
    );
}

#[test]
fn mpi_other_ranks_run_the_worker() {
    let s = MpiStandIns::new();
    let mut env = srun_env(1, 2);
    env.insert("DISAGG_SERVING_TYPE".into(), "CTX_3".into());
    env.insert("pytestCommand".into(), "never-run-on-workers".into());
    let args = s.args("true");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (status, r) = run(&args, &env);
    assert!(status.success(), "{}", r.stderr());
    assert_eq!(r.stdout(), "worker-ran-as-rank-1\n");
    let worker = s.env_file("worker.env");
    assert_eq!(
        worker["SLURM_PROCID"], "1",
        "workers keep the MPI environment"
    );
    assert!(
        !worker.contains_key("TLLM_SPAWN_PROXY_PROCESS_IPC_HMAC_KEY"),
        "only rank 0 holds the key"
    );
}

#[test]
fn taken_ipc_port_is_a_clear_setup_error() {
    let s = MpiStandIns::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut env = srun_env(0, 1);
    env.insert("TLLM_SPAWN_PROXY_PROCESS_IPC_PORT".into(), port.to_string());
    let args = s.args("true");
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.insert(0, "mpi");
    let task = s.path("task");
    args.extend(["--", task.as_str()]);
    let (status, r) = run(&args, &env);
    assert_eq!(status.code(), Some(74), "{}", r.stderr());
    assert!(
        r.stderr()
            .contains(&format!("failed to bind 127.0.0.1:{port}")),
        "{}",
        r.stderr()
    );
}

#[test]
fn single_roles_run_one_process_with_mpi_env_scrubbed() {
    let dir = tempdir();
    for role in ["DISAGG_SERVER", "BENCHMARK"] {
        let mut env = srun_env(0, 1);
        env.insert("DISAGG_SERVING_TYPE".into(), role.into());
        let out = dir.path().join(format!("{role}.env"));
        env.insert("pytestCommand".into(), format!("env > {}", out.display()));
        let (status, r) = run(&[], &env);
        assert!(status.success(), "{}", r.stderr());
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(
            !text.lines().any(|l| l.starts_with("SLURM_")
                || l.starts_with("PMIX_")
                || l.starts_with("OMPI_")),
            "{text}"
        );
        assert!(text.contains("UCX_TLS=tcp"), "tuning variables stay");
        assert!(text.contains("RANK_LAUNCH_JOB_ID=4242"));
        assert!(
            !text.contains("TLLM_SPAWN_PROXY"),
            "no proxy for single roles"
        );
    }
}

#[test]
fn install_gate_runs_once_and_a_failure_fails_every_local_rank_fast() {
    let dir = tempdir();
    let count = dir.path().join("count");
    let gate_root = dir.path().join("gates");
    std::fs::create_dir(&gate_root).unwrap();
    let install_ok = format!("echo x >> {}; sleep 0.3", count.display());
    let start_ranks = |install: &str, job: &str| -> Vec<Running> {
        (0..4)
            .map(|rank| {
                let mut env = srun_env(rank, 4);
                env.insert("SLURM_JOB_ID".into(), job.into());
                start(
                    &[
                        "--install-cmd",
                        install,
                        "--install-dir",
                        gate_root.to_str().unwrap(),
                        "--install-timeout",
                        "30s",
                        "--",
                        "bash",
                        "-c",
                        "echo ran-$RANK",
                    ],
                    &env,
                )
            })
            .collect()
    };
    let mut ranks = start_ranks(&install_ok, "100");
    for (rank, r) in ranks.iter_mut().enumerate() {
        let (status, _) = r.wait();
        assert!(status.success(), "rank {rank}: {}", r.stderr());
        assert_eq!(r.stdout(), format!("ran-{rank}\n"));
    }
    assert_eq!(
        std::fs::read_to_string(&count).unwrap(),
        "x\n",
        "installed exactly once"
    );

    let mut ranks = start_ranks("echo boom; sleep 0.3; exit 3", "101");
    let started = Instant::now();
    for r in &mut ranks {
        let (status, _) = r.wait();
        assert_eq!(status.code(), Some(72), "{}", r.stderr());
        assert!(
            r.stderr().contains("install.log"),
            "the message names the log: {}",
            r.stderr()
        );
        assert!(
            r.stderr()
                .contains("the install command failed with exit code 3 on this node"),
            "every local rank reports the installer's code: {}",
            r.stderr()
        );
        assert_eq!(r.stdout(), "", "the task never ran");
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    let log = gate_root
        .join("rank-launch-install.101.")
        .to_string_lossy()
        .into_owned();
    let log_dir = std::fs::read_dir(&gate_root)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().starts_with(&log))
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(log_dir.join("install.log")).unwrap(),
        "boom\n"
    );
}

#[test]
fn install_gate_refuses_a_planted_symlink_and_keeps_its_files_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempdir();
    let gates = dir.path().join("gates");
    std::fs::create_dir(&gates).unwrap();
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    // An attacker who knows the job id (and the command) plants the gate directory as a
    // symlink.
    let gate = gate_path(&gates, &srun_env(0, 1), "none", "echo pwned > installed");
    std::os::unix::fs::symlink(&elsewhere, &gate).unwrap();
    let args = [
        "--install-cmd",
        "echo pwned > installed",
        "--install-dir",
        gates.to_str().unwrap(),
        "--",
        "true",
    ];
    let (status, r) = run(&args, &srun_env(0, 1));
    assert_eq!(status.code(), Some(74), "{}", r.stderr());
    assert!(
        r.stderr().contains("is not a directory owned by this user"),
        "{}",
        r.stderr()
    );
    assert_eq!(
        std::fs::read_dir(&elsewhere).unwrap().count(),
        0,
        "nothing was written through the link"
    );

    // Without the link: the gate directory is 0700, its files 0600.
    std::fs::remove_file(&gate).unwrap();
    let (status, r) = run(&args, &srun_env(0, 1));
    assert!(status.success(), "{}", r.stderr());
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&gate), 0o700);
    assert_eq!(mode(&gate.join("status")), 0o600);
    assert_eq!(mode(&gate.join("lock")), 0o600);
}
