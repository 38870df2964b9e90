//! Process-level tests: the real `rank-launch` binary with shell scripts standing in for the
//! task, the MPI leader and the workers. Every wait is on an event (a line, an exit) with a
//! timeout; nothing sleeps to pass.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

const BIN: &str = env!("CARGO_BIN_EXE_rank-launch");
const TIMEOUT: Duration = Duration::from_secs(20);

/// A running rank-launch with its output lines arriving on channels.
struct Running {
    child: Child,
    stdout: Receiver<String>,
    stderr_all: std::sync::Arc<std::sync::Mutex<String>>,
    stdout_all: std::sync::Arc<std::sync::Mutex<String>>,
    /// One message per output reader that reached end of file.
    readers_done: Receiver<()>,
}

fn base_env() -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert("PATH".into(), std::env::var("PATH").unwrap_or_default());
    env.insert("RANK_LAUNCH_LOG".into(), "debug".into());
    env
}

fn start(args: &[&str], env: &BTreeMap<String, String>) -> Running {
    let mut child = Command::new(BIN)
        .args(args)
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rank-launch");
    let (tx, rx) = mpsc::channel();
    let (done_tx, readers_done) = mpsc::channel();
    let done_tx2 = done_tx.clone();
    let stdout_all = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let stderr_all = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let out = child.stdout.take().unwrap();
    let all = stdout_all.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            all.lock().unwrap().push_str(&format!("{line}\n"));
            let _ = tx.send(line);
        }
        let _ = done_tx.send(());
    });
    let mut err = child.stderr.take().unwrap();
    let all = stderr_all.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = err.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        let _ = done_tx2.send(());
    });
    Running {
        child,
        stdout: rx,
        stderr_all,
        stdout_all,
        readers_done,
    }
}

impl Running {
    /// Waits for a stdout line starting with `prefix`; returns the rest.
    fn expect_line(&self, prefix: &str) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line[prefix.len()..].to_string(),
                Ok(_) => {}
                Err(_) => panic!(
                    "no line starting with `{prefix}`; stderr:\n{}",
                    self.stderr()
                ),
            }
        }
    }

    /// Waits for exit; returns the status and how long it took from now.
    fn wait(&mut self) -> (ExitStatus, Duration) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let took = started.elapsed();
                // The readers finish when every writer of the pipes is gone.
                for _ in 0..2 {
                    let _ = self.readers_done.recv_timeout(Duration::from_secs(5));
                }
                return (status, took);
            }
            if started.elapsed() > TIMEOUT {
                let _ = self.child.kill();
                panic!(
                    "rank-launch did not exit within {TIMEOUT:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn stderr(&self) -> String {
        self.stderr_all.lock().unwrap().clone()
    }

    fn stdout(&self) -> String {
        self.stdout_all.lock().unwrap().clone()
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }
}

fn run(args: &[&str], env: &BTreeMap<String, String>) -> (ExitStatus, Running) {
    let mut running = start(args, env);
    let (status, _) = running.wait();
    (status, running)
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// Writes an executable script.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/bash\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The environment of task `rank` of an srun step of `n` tasks on one node.
fn srun_env(rank: u32, n: u32) -> BTreeMap<String, String> {
    let mut env = base_env();
    for (k, v) in [
        ("SLURM_JOB_ID", "4242".to_string()),
        ("SLURM_STEP_ID", "0".to_string()),
        ("SLURM_PROCID", rank.to_string()),
        ("SLURM_LOCALID", rank.to_string()),
        ("SLURM_NODEID", "0".to_string()),
        ("SLURM_STEP_NUM_TASKS", n.to_string()),
        ("SLURM_STEP_NUM_NODES", "1".to_string()),
        ("SLURM_STEP_TASKS_PER_NODE", n.to_string()),
        ("PMIX_RANK", rank.to_string()),
        ("PMIX_NAMESPACE", "slurm.pmix.4242.0".to_string()),
        ("OMPI_MCA_btl", "self,tcp".to_string()),
        ("UCX_TLS", "tcp".to_string()),
    ] {
        env.insert(k.into(), v);
    }
    env
}

fn alive(pid: Pid) -> bool {
    // A zombie still answers kill(0); look at its state.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => false,
    }
}

fn group_alive(pgid: Pid) -> bool {
    killpg(pgid, None).is_ok()
        && std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
            let name = e.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.parse::<i32>().ok()) else {
                return false;
            };
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .is_some_and(|stat| {
                    stat.rsplit_once(") ").is_some_and(|(_, rest)| {
                        let fields: Vec<&str> = rest.split_whitespace().collect();
                        fields.first() != Some(&"Z")
                            && fields.get(2) == Some(&pgid.as_raw().to_string().as_str())
                    })
                })
        })
}

/// Waits until `cond` holds, checking often, or fails after `limit`.
fn wait_for(what: &str, limit: Duration, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

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
    args.extend(["--", task.as_str()]);
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
        r.stderr().contains("did not stop after the stop command"),
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
    assert_eq!(status.code(), Some(73), "{}", r.stderr());
    assert!(r.stdout().contains("task-got-term"));
    assert!(
        r.stderr()
            .contains("the MPI leader ended (exit code 9) before the task"),
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
