//! Shared harness of the process-level tests: start the real `rank-launch`, read its output
//! as events, wait with timeouts.
#![allow(dead_code)] // Each test binary uses a part.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use nix::sys::signal::killpg;
use nix::unistd::Pid;

pub const TIMEOUT: Duration = Duration::from_secs(20);

/// The rank-launch under test: this build's, or `RANK_LAUNCH_TEST_BIN` (e.g. the static
/// aarch64 binary of `scripts/build`).
pub fn bin() -> PathBuf {
    std::env::var_os("RANK_LAUNCH_TEST_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_rank-launch")),
        PathBuf::from,
    )
}

/// The words that run rank-launch: its path, after `RANK_LAUNCH_TEST_RUNNER` when that is set
/// (e.g. `qemu-aarch64`, which runs a foreign binary with the host's kernel).
pub fn rank_launch_words() -> Vec<std::ffi::OsString> {
    let runner = std::env::var_os("RANK_LAUNCH_TEST_RUNNER").filter(|r| !r.is_empty());
    runner.into_iter().chain([bin().into_os_string()]).collect()
}

/// A command that runs rank-launch (see [`rank_launch_words`]).
pub fn rank_launch_command() -> Command {
    let words = rank_launch_words();
    let mut cmd = Command::new(&words[0]);
    cmd.args(&words[1..]);
    cmd
}

/// True when rank-launch runs under an emulator: timing bounds get more room.
pub fn emulated() -> bool {
    std::env::var_os("RANK_LAUNCH_TEST_RUNNER").is_some_and(|r| !r.is_empty())
}

/// A running rank-launch with its output lines arriving on channels.
pub struct Running {
    pub child: Child,
    stdout: Receiver<String>,
    stderr_all: std::sync::Arc<std::sync::Mutex<String>>,
    stdout_all: std::sync::Arc<std::sync::Mutex<String>>,
    /// One message per output reader that reached end of file.
    readers_done: Receiver<()>,
}

pub fn base_env() -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert("PATH".into(), std::env::var("PATH").unwrap_or_default());
    env.insert("RANK_LAUNCH_LOG".into(), "debug".into());
    env
}

pub fn start(args: &[&str], env: &BTreeMap<String, String>) -> Running {
    let mut cmd = rank_launch_command();
    cmd.args(args);
    start_command(cmd, env)
}

/// Starts another program (e.g. a shell that wraps rank-launch) the way [`start`] does.
pub fn start_program(program: &str, args: &[String], env: &BTreeMap<String, String>) -> Running {
    let mut cmd = Command::new(program);
    cmd.args(args);
    start_command(cmd, env)
}

fn start_command(mut cmd: Command, env: &BTreeMap<String, String>) -> Running {
    // Its own session: everything it starts stays in it (unless it calls setsid itself), so
    // the tests can count what is left.
    // SAFETY: setsid is async-signal-safe and the closure allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd
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
    pub fn expect_line(&self, prefix: &str) -> String {
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
    pub fn wait(&mut self) -> (ExitStatus, Duration) {
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

    pub fn stderr(&self) -> String {
        self.stderr_all.lock().unwrap().clone()
    }

    pub fn stdout(&self) -> String {
        self.stdout_all.lock().unwrap().clone()
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }
}

pub fn run(args: &[&str], env: &BTreeMap<String, String>) -> (ExitStatus, Running) {
    let mut running = start(args, env);
    let (status, _) = running.wait();
    (status, running)
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// Writes an executable script.
pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/bash\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The environment of task `rank` of an srun step of `n` tasks on one node.
pub fn srun_env(rank: u32, n: u32) -> BTreeMap<String, String> {
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

pub fn alive(pid: Pid) -> bool {
    // A zombie still answers kill(0); look at its state.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => false,
    }
}

pub fn group_alive(pgid: Pid) -> bool {
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

/// The install gate directory rank-launch uses for this environment, role and command.
pub fn gate_path(root: &Path, env: &BTreeMap<String, String>, role: &str, cmd: &str) -> PathBuf {
    let map: rank_launch::rank::EnvMap = env.clone().into_iter().collect();
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    let job = rank_launch::plan::job_key(&map, 0);
    rank_launch::gate::gate_dir(
        root,
        &rank_launch::plan::gate_key(&map, &job, &host, role, cmd),
    )
}

/// Waits until `cond` holds, checking often, or fails after `limit`.
pub fn wait_for(what: &str, limit: Duration, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Live (non-zombie) processes whose session is `sid`.
pub fn session_members(sid: Pid) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // state ppid pgrp session ...
        if fields.first() != Some(&"Z") && fields.get(3) == Some(&sid.as_raw().to_string().as_str())
        {
            out.push(pid);
        }
    }
    out
}

/// Waits until nothing of session `sid` is left; fails with the survivors after `limit`.
pub fn assert_session_empty(sid: Pid, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let left = session_members(sid);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "processes left in session {sid}: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Kills a rank-launch started by hand if the test fails before it exits (its sentinel then
/// ends the rest).
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Running {
    /// A test that fails midway must not leave its rank-launch running (its sentinel then ends
    /// the rest of the tree).
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
