//! Fault injection: each case states the exit code, an upper bound on the time to exit, and
//! that nothing rank-launch started is left afterwards. rank-launch runs in a session of its
//! own, so "nothing left" is checked by counting every live process of that session,
//! grandchildren included.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{Signal, kill};

/// What the test does to rank-launch once its child announced `ready`.
#[derive(Clone, Copy)]
enum Action {
    /// Nothing: the fault is in the setup.
    None,
    /// Send this signal to rank-launch.
    Signal(Signal),
}

struct Case {
    name: &'static str,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    action: Action,
    /// `None`: killed by a signal (no code).
    code: Option<i32>,
    max_time: Duration,
    stderr_has: &'static str,
}

fn mpi_args(dir: &std::path::Path, leader: &str, stop: &str) -> Vec<String> {
    let leader = script(dir, "leader", leader);
    let stop = script(dir, "stop", stop);
    let worker = script(dir, "worker", "echo worker");
    vec![
        "--leader-cmd".into(),
        leader.display().to_string(),
        "--leader-stop-cmd".into(),
        stop.display().to_string(),
        "--worker-cmd".into(),
        worker.display().to_string(),
        "--leader-stop-timeout".into(),
        "1s".into(),
        "--grace-period".into(),
        "1s".into(),
    ]
}

fn args(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_string()).collect()
}

fn cases(dir: &std::path::Path) -> Vec<Case> {
    let d = dir.display();
    let leader_serving = format!("echo ready; while [ ! -e {d}/stopped ]; do sleep 0.02; done");
    let stop_ok = format!("touch {d}/stopped");
    let mut v = Vec::new();

    v.push(Case {
        name: "task killed by SIGSEGV",
        args: args(&["--", "bash", "-c", "echo ready; kill -SEGV $$"]),
        env: base_env(),
        action: Action::None,
        code: Some(139),
        max_time: Duration::from_secs(3),
        stderr_has: "code=139",
    });
    v.push(Case {
        name: "task exits 3 and leaves a background grandchild",
        args: args(&[
            "--grace-period",
            "1s",
            "--",
            "bash",
            "-c",
            "sleep 60 & echo ready; exit 3",
        ]),
        env: base_env(),
        action: Action::None,
        code: Some(3),
        max_time: Duration::from_secs(3),
        stderr_has: "code=3",
    });

    let sub = dir.join("leader-first");
    std::fs::create_dir_all(&sub).unwrap();
    let mut a = vec!["mpi".to_string()];
    a.extend(mpi_args(&sub, "exit 9", "true"));
    a.extend(args(&["--", "bash", "-c", "echo ready; sleep 60"]));
    v.push(Case {
        name: "leader dies before the task (upstream: the task gets the stop timeout, then the leader's code)",
        args: a,
        env: srun_env(0, 2),
        action: Action::None,
        code: Some(9),
        max_time: Duration::from_secs(4),
        stderr_has: "the MPI leader ended (exit code 9) before the task, and the task did not end within 1s",
    });

    let sub = dir.join("worker-dies");
    std::fs::create_dir_all(&sub).unwrap();
    let mut a = mpi_args(&sub, "true", "true");
    let worker = script(&sub, "worker", "echo ready; kill -SEGV $$");
    let pos = a.iter().position(|x| x == "--worker-cmd").unwrap();
    a[pos + 1] = worker.display().to_string();
    a.insert(0, "mpi".into());
    a.extend(args(&["--", "true"]));
    v.push(Case {
        name: "one worker rank dies",
        args: a,
        env: srun_env(1, 2),
        action: Action::None,
        code: Some(139),
        max_time: Duration::from_secs(3),
        stderr_has: "child=\"worker\"",
    });

    v.push(Case {
        name: "SIGKILL of rank-launch with a task that forked its own children",
        args: args(&["--", "sh", "-c", "sleep 60 & sleep 60 & echo ready; wait"]),
        env: base_env(),
        action: Action::Signal(Signal::SIGKILL),
        code: None,
        max_time: Duration::from_secs(3),
        stderr_has: "",
    });
    v.push(Case {
        name: "SIGTERM (scancel) with a task that ignores it",
        args: args(&[
            "--grace-period",
            "1s",
            "--",
            "bash",
            "-c",
            "trap '' TERM; sleep 60 & echo ready; wait",
        ]),
        env: base_env(),
        action: Action::Signal(Signal::SIGTERM),
        code: Some(137),
        max_time: Duration::from_secs(4),
        stderr_has: "grace period over",
    });

    let gates = dir.join("gates");
    std::fs::create_dir_all(&gates).unwrap();
    v.push(Case {
        name: "install command fails on local rank 0",
        args: vec![
            "--install-cmd".into(),
            "echo boom; exit 5".into(),
            "--install-dir".into(),
            gates.display().to_string(),
            "--".into(),
            "echo".into(),
            "never".into(),
        ],
        env: srun_env(0, 2),
        action: Action::None,
        code: Some(72),
        max_time: Duration::from_secs(3),
        stderr_has: "the install command failed with exit code 5 on this node (log: `",
    });

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    // Keep the port taken for the test's lifetime.
    std::mem::forget(taken);
    let sub = dir.join("port-taken");
    std::fs::create_dir_all(&sub).unwrap();
    let mut a = vec!["mpi".to_string()];
    a.extend(mpi_args(&sub, &leader_serving, &stop_ok));
    a.extend(args(&["--", "true"]));
    let mut env = srun_env(0, 2);
    env.insert("TLLM_SPAWN_PROXY_PROCESS_IPC_PORT".into(), port.to_string());
    v.push(Case {
        name: "the chosen IPC port is taken",
        args: a,
        env,
        action: Action::None,
        code: Some(74),
        max_time: Duration::from_secs(3),
        stderr_has: "for the proxy IPC address",
    });

    let sub = dir.join("leader-missing");
    std::fs::create_dir_all(&sub).unwrap();
    let mut a = vec!["mpi".to_string()];
    a.extend(mpi_args(&sub, "true", "true"));
    let pos = a.iter().position(|x| x == "--leader-cmd").unwrap();
    a[pos + 1] = "/nonexistent/leader".into();
    a.extend(args(&["--", "bash", "-c", "echo ready; sleep 60"]));
    v.push(Case {
        name: "leader command not found",
        args: a,
        env: srun_env(0, 2),
        action: Action::None,
        code: Some(127),
        max_time: Duration::from_secs(4),
        stderr_has: "the MPI leader ended (exit code 127) before the task",
    });

    let sub = dir.join("task-missing");
    std::fs::create_dir_all(&sub).unwrap();
    let mut a = vec!["mpi".to_string()];
    a.extend(mpi_args(&sub, &leader_serving, &stop_ok));
    a.extend(args(&["--", "/nonexistent/task"]));
    v.push(Case {
        name: "task command not found on rank 0",
        args: a,
        env: srun_env(0, 2),
        action: Action::None,
        code: Some(127),
        max_time: Duration::from_secs(4),
        stderr_has: "`/nonexistent/task` was not found",
    });

    v.push(Case {
        name: "log directory not writable",
        args: args(&[
            "--log-file",
            "/proc/version/rank-%r.log",
            "--",
            "echo",
            "never",
        ]),
        env: base_env(),
        action: Action::None,
        code: Some(74),
        max_time: Duration::from_secs(2),
        stderr_has: "failed to open the log file `/proc/version/rank-0.log`",
    });
    v
}

#[test]
fn fault_table() {
    let dir = tempdir();
    let mut failures = Vec::new();
    for case in cases(dir.path()) {
        let started = Instant::now();
        let mut r = start(
            &case.args.iter().map(String::as_str).collect::<Vec<_>>(),
            &case.env,
        );
        let sid = r.pid();
        if let Action::Signal(signal) = case.action {
            r.expect_line("ready");
            kill(sid, signal).unwrap();
        }
        let (status, _) = r.wait();
        let took = started.elapsed();
        // The sentinel needs a moment after a SIGKILL; everything else is gone at exit.
        let settle = if matches!(case.action, Action::Signal(Signal::SIGKILL)) {
            Duration::from_secs(3)
        } else {
            Duration::from_millis(200)
        };
        let left = {
            let deadline = Instant::now() + settle;
            loop {
                let left = session_members(sid);
                if left.is_empty() || Instant::now() >= deadline {
                    break left;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        let stderr = r.stderr();
        let mut problems = Vec::new();
        if status.code() != case.code {
            problems.push(format!(
                "exit code {:?}, expected {:?}",
                status.code(),
                case.code
            ));
        }
        if took > case.max_time {
            problems.push(format!("took {took:?}, bound {:?}", case.max_time));
        }
        if !left.is_empty() {
            problems.push(format!("processes left: {left:?}"));
        }
        if !stderr.contains(case.stderr_has) {
            problems.push(format!("stderr lacks `{}`", case.stderr_has));
        }
        eprintln!(
            "{}: code {:?} in {took:?}, {} left",
            case.name,
            status.code(),
            left.len()
        );
        if !problems.is_empty() {
            failures.push(format!(
                "{}: {}\n--- stderr ---\n{stderr}",
                case.name,
                problems.join("; ")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
