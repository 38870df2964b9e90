//! Upstream `trtllm-llmapi-launch`'s contract on MPI rank 0, with shell stand-ins for the
//! leader, the task and the stop helper: the exit codes (124, the stop helper's code, the
//! leader's code or 1), the knobs (`TLLM_LLMAPI_LAUNCH_*`, rank-launch's own options winning,
//! bad values exit 2), a preset proxy address, the per-rank FlashInfer workspace, the task's
//! stdin. Real MPI and the real stand-ins are in `shims/tests/contract.rs`.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use common::*;

/// A leader that serves until `stop` appears (or, with `LEADER_MODE=deaf`, ignores both the
/// stop and SIGTERM; `early` exits `$LEADER_EXIT` once the task is up), a task that exits
/// `$TASK_EXIT` after `$TASK_SECONDS`, a stop helper that exits `$STOP_EXIT`. Each records its
/// environment.
struct Trio {
    dir: tempfile::TempDir,
}

impl Trio {
    fn new() -> Self {
        let dir = tempdir();
        let d = dir.path().display().to_string();
        script(
            dir.path(),
            "leader",
            &format!(
                r#"env > {d}/leader.env
case "${{LEADER_MODE:-}}" in
  deaf) trap '' TERM; while :; do sleep 0.05; done ;;
  early) while [ ! -e {d}/task.up ]; do sleep 0.01; done; exit "${{LEADER_EXIT:-0}}" ;;
esac
while [ ! -e {d}/stop.requested ]; do sleep 0.01; done"#
            ),
        );
        script(
            dir.path(),
            "task",
            &format!(
                r#"env > {d}/task.env
trap 'touch {d}/task.term; exit 143' TERM
touch {d}/task.up
sleep "${{TASK_SECONDS:-0}}" & wait
exit "${{TASK_EXIT:-0}}""#
            ),
        );
        script(
            dir.path(),
            "stop",
            &format!(
                r#"env > {d}/stop.env
[ "${{STOP_EXIT:-0}}" = 0 ] || exit "$STOP_EXIT"
touch {d}/stop.requested"#
            ),
        );
        Trio { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn exists(&self, name: &str) -> bool {
        self.dir.path().join(name).exists()
    }

    fn env_of(&self, who: &str) -> BTreeMap<String, String> {
        std::fs::read_to_string(self.dir.path().join(format!("{who}.env")))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// `rank-launch mpi` with these stand-ins and `extra` options.
    fn run(
        &self,
        extra: &[&str],
        env: &BTreeMap<String, String>,
    ) -> (Option<i32>, Duration, Running) {
        let (leader, task, stop) = (self.path("leader"), self.path("task"), self.path("stop"));
        let mut args = vec![
            "mpi",
            "--leader-cmd",
            &leader,
            "--leader-stop-cmd",
            &stop,
            "--worker-cmd",
            "true",
        ];
        args.extend_from_slice(extra);
        args.extend(["--", task.as_str()]);
        let mut r = start(&args, env);
        let (status, took) = r.wait();
        (status.code(), took, r)
    }
}

fn env_with(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut env = srun_env(0, 2);
    for (k, v) in pairs {
        env.insert((*k).into(), (*v).into());
    }
    env
}

/// Room for rank-launch under an emulator.
fn slack(d: Duration) -> Duration {
    if emulated() { d * 3 } else { d }
}

#[test]
fn task_codes_pass_and_the_leader_is_stopped_by_its_command() {
    for code in [0, 7] {
        let t = Trio::new();
        let (status, took, r) = t.run(&[], &env_with(&[("TASK_EXIT", &code.to_string())]));
        assert_eq!(status, Some(code), "{}", r.stderr());
        assert!(t.exists("stop.requested"), "the stop command ran");
        assert!(took < slack(Duration::from_secs(3)), "took {took:?}");
        // The stop command gets the task's environment: the proxy and the key, no world.
        let (task, stop) = (t.env_of("task"), t.env_of("stop"));
        for name in [
            "TLLM_SPAWN_PROXY_PROCESS_IPC_ADDR",
            "TLLM_SPAWN_PROXY_PROCESS_IPC_HMAC_KEY",
            "TLLM_SPAWN_PROXY_PROCESS",
            "RANK",
            "tllm_mpi_size",
        ] {
            assert_eq!(stop.get(name), task.get(name), "{name}");
            assert!(stop.contains_key(name), "{name}");
        }
        let world: Vec<&String> = stop
            .keys()
            .filter(|k| {
                ["SLURM_", "PMIX_", "OMPI_", "UCX_"]
                    .iter()
                    .any(|p| k.starts_with(p))
            })
            .collect();
        assert!(
            world.is_empty(),
            "the stop command saw the world: {world:?}"
        );
        assert_eq!(t.env_of("leader")["PMIX_RANK"], "0", "the leader keeps it");
    }
}

#[test]
fn a_leader_that_does_not_stop_is_124_after_the_stop_timeout() {
    for (code, expected) in [(0, 124), (7, 7)] {
        let t = Trio::new();
        let env = env_with(&[
            ("TASK_EXIT", &code.to_string()),
            ("LEADER_MODE", "deaf"),
            ("TLLM_LLMAPI_LAUNCH_STOP_TIMEOUT", "1"),
            ("TLLM_LLMAPI_LAUNCH_TERM_GRACE_SECONDS", "1"),
        ]);
        let (status, took, r) = t.run(&[], &env);
        assert_eq!(status, Some(expected), "task {code}: {}", r.stderr());
        assert!(
            r.stderr()
                .contains("MPI leader shutdown exceeded 1s after the task's end"),
            "{}",
            r.stderr()
        );
        // Stop timeout 1 s, then TERM, then KILL after the 1 s grace.
        assert!(took >= Duration::from_secs(2), "took {took:?}");
        assert!(took < slack(Duration::from_secs(4)), "took {took:?}");
    }
}

#[test]
fn rank_launch_options_win_over_upstream_knobs() {
    let t = Trio::new();
    let env = env_with(&[
        ("LEADER_MODE", "deaf"),
        ("TLLM_LLMAPI_LAUNCH_STOP_TIMEOUT", "300"),
        ("TLLM_LLMAPI_LAUNCH_TERM_GRACE_SECONDS", "300"),
    ]);
    let (status, took, r) = t.run(
        &["--leader-stop-timeout", "300ms", "--grace-period", "300ms"],
        &env,
    );
    assert_eq!(status, Some(124), "{}", r.stderr());
    assert!(took < slack(Duration::from_secs(3)), "took {took:?}");
}

#[test]
fn a_failing_stop_helper_ends_the_leader_at_once_and_gives_its_code() {
    for (code, expected) in [(0, 23), (7, 7)] {
        let t = Trio::new();
        let env = env_with(&[
            ("TASK_EXIT", &code.to_string()),
            ("STOP_EXIT", "23"),
            ("TLLM_LLMAPI_LAUNCH_TERM_GRACE_SECONDS", "1"),
        ]);
        // The default stop timeout (120 s) is not waited out.
        let (status, took, r) = t.run(&[], &env);
        assert_eq!(status, Some(expected), "task {code}: {}", r.stderr());
        if code == 0 {
            assert!(
                r.stderr().contains("stop helper exit code: 23"),
                "{}",
                r.stderr()
            );
        }
        assert!(!r.stderr().contains("shutdown exceeded"), "{}", r.stderr());
        assert!(took < slack(Duration::from_secs(3)), "took {took:?}");
    }
}

#[test]
fn a_leader_that_ends_first_lets_the_task_end_on_its_own() {
    // (leader code, task code) → rank code: the task's own non-zero code, else the leader's,
    // else 1.
    for (leader, task, expected) in [(17, 7, 7), (17, 0, 17), (0, 0, 1), (17, 143, 143)] {
        let t = Trio::new();
        let env = env_with(&[
            ("LEADER_MODE", "early"),
            ("LEADER_EXIT", &leader.to_string()),
            ("TASK_EXIT", &task.to_string()),
            ("TASK_SECONDS", "0.3"),
        ]);
        let (status, _, r) = t.run(&[], &env);
        assert_eq!(
            status,
            Some(expected),
            "leader {leader}, task {task}: {}",
            r.stderr()
        );
        assert!(!t.exists("task.term"), "the task ended on its own");
        assert!(
            !t.exists("stop.requested"),
            "no stop after the leader's end"
        );
        if expected != task {
            assert!(
                r.stderr().contains(&format!(
                    "the MPI leader ended (exit code {leader}) before the task"
                )),
                "{}",
                r.stderr()
            );
        }
    }
    // A task that does not end within the stop timeout is terminated; the leader's code.
    let t = Trio::new();
    let env = env_with(&[
        ("LEADER_MODE", "early"),
        ("LEADER_EXIT", "17"),
        ("TASK_SECONDS", "60"),
        ("TLLM_LLMAPI_LAUNCH_STOP_TIMEOUT", "1"),
    ]);
    let (status, took, r) = t.run(&[], &env);
    assert_eq!(status, Some(17), "{}", r.stderr());
    assert!(t.exists("task.term"));
    assert!(took < slack(Duration::from_secs(3)), "took {took:?}");
}

#[test]
fn bad_knob_values_are_exit_2_naming_the_variable() {
    for (var, value) in [
        ("TLLM_LLMAPI_LAUNCH_STOP_TIMEOUT", "soon"),
        ("TLLM_LLMAPI_LAUNCH_STOP_TIMEOUT", "0"),
        ("TLLM_LLMAPI_LAUNCH_STOP_TIMEOUT", "1234567"),
        ("TLLM_LLMAPI_LAUNCH_TERM_GRACE_SECONDS", "-1"),
        ("TLLM_MGMN_SHUTDOWN_GRACE_SECONDS", "x"),
        ("TLLM_SPAWN_PROXY_PROCESS_IPC_ADDR", "udp://host:1"),
    ] {
        let t = Trio::new();
        let (status, _, r) = t.run(&[], &env_with(&[(var, value)]));
        assert_eq!(status, Some(2), "{var}={value}: {}", r.stderr());
        assert!(
            r.stderr().contains(&format!("`{var}` is `")),
            "{}",
            r.stderr()
        );
        assert!(!t.exists("leader.env"), "nothing was started");
    }
}

#[test]
fn a_preset_proxy_address_is_used_as_it_is() {
    let t = Trio::new();
    let sock = t.dir.path().join("proxy.sock");
    let addr = format!("ipc://{}", sock.display());
    let env = env_with(&[
        ("TLLM_SPAWN_PROXY_PROCESS_IPC_ADDR", &addr),
        ("TLLM_SPAWN_PROXY_PROCESS_IPC_PORT", "1"),
        ("TLLM_MGMN_SHUTDOWN_GRACE_SECONDS", "30"),
    ]);
    let (status, _, r) = t.run(&[], &env);
    assert_eq!(status, Some(0), "{}", r.stderr());
    for who in ["leader", "task", "stop"] {
        assert_eq!(
            t.env_of(who)["TLLM_SPAWN_PROXY_PROCESS_IPC_ADDR"],
            addr,
            "{who}"
        );
    }
    assert_eq!(t.env_of("leader")["TLLM_MGMN_SHUTDOWN_GRACE_SECONDS"], "30");
    assert!(r.stderr().contains("is not used"), "{}", r.stderr());
}

fn workspace_of(t: &Trio, who: &str) -> Option<PathBuf> {
    t.env_of(who)
        .get("FLASHINFER_WORKSPACE_BASE")
        .map(PathBuf::from)
}

#[test]
fn every_rank_gets_its_own_flashinfer_workspace() {
    let home = tempdir();
    let cache = home.path().join(".cache/tensorrt_llm/flashinfer");
    let h = home.path().display().to_string();
    let t = Trio::new();
    let (status, _, r) = t.run(&[], &env_with(&[("HOME", &h)]));
    assert_eq!(status, Some(0), "{}", r.stderr());
    for who in ["leader", "task", "stop"] {
        assert_eq!(workspace_of(&t, who), Some(cache.join("rank-0")), "{who}");
    }
    assert!(cache.join("rank-0").is_dir());

    // Two rank 0s on one node at the same time (GEN_0 and CTX_0): two slots.
    let (a, b) = (Trio::new(), Trio::new());
    let slow = env_with(&[("HOME", &h), ("TASK_SECONDS", "1")]);
    let ra = start_trio(&a, &slow);
    let rb = start_trio(&b, &slow);
    for mut r in [ra, rb] {
        let (status, _) = r.wait();
        assert_eq!(status.code(), Some(0), "{}", r.stderr());
    }
    let mut got = [workspace_of(&a, "task"), workspace_of(&b, "task")];
    got.sort();
    assert_eq!(
        got,
        [Some(cache.join("rank-0")), Some(cache.join("rank-0.1"))]
    );

    // A worker rank gets its rank's slot.
    let mut env = srun_env(1, 2);
    env.insert("HOME".into(), h.clone());
    let out = tempdir();
    let record = out.path().join("worker.env");
    let worker = format!("env > {}", record.display());
    let (status, r) = run(&["mpi", "--worker-cmd", &worker, "--", "true"], &env);
    assert!(status.success(), "{}", r.stderr());
    let text = std::fs::read_to_string(&record).unwrap();
    assert!(
        text.contains(&format!(
            "FLASHINFER_WORKSPACE_BASE={}",
            cache.join("rank-1").display()
        )),
        "{text}"
    );

    // An explicit workspace is kept; isolation can be turned off.
    let t = Trio::new();
    let (status, _, _) = t.run(
        &[],
        &env_with(&[("HOME", &h), ("FLASHINFER_WORKSPACE_BASE", "/mine")]),
    );
    assert_eq!(status, Some(0));
    assert_eq!(workspace_of(&t, "task"), Some(PathBuf::from("/mine")));
    let t = Trio::new();
    let off = env_with(&[
        ("HOME", &h),
        ("TRTLLM_FLASHINFER_WORKSPACE_PER_PROCESS", "0"),
    ]);
    let (status, _, _) = t.run(&[], &off);
    assert_eq!(status, Some(0));
    assert_eq!(workspace_of(&t, "task"), None);
}

/// In the reference every rank ran `bash -c "$pytestCommand"` and trtllm-llmapi-launch, inside
/// it, started the leader, the workers and the stop helper: what stands before that word (the
/// UCX unset and exports, the role's `K=V` words) reached all of them, and those are the
/// processes that run the model and read the UCX and executor settings.
#[test]
fn what_wraps_the_launcher_word_wraps_the_leader_the_workers_and_the_stop_helper() {
    let t = Trio::new();
    let (leader, stop) = (t.path("leader"), t.path("stop"));
    let command = format!(
        "unset UCX_TLS UCX_NET_DEVICES && export UCX_TLS=^gdr_copy && \
         ROLE_KNOB=on QUEUE=\"$((2 * 256))\" trtllm-llmapi-launch {}",
        t.path("task")
    );
    let mut env = env_with(&[
        ("pytestCommand", command.as_str()),
        ("UCX_NET_DEVICES", "mlx5_9:1"),
        ("UCX_TLS", "rc"),
    ]);
    let args = ["mpi", "--leader-cmd", &leader, "--leader-stop-cmd", &stop];
    let mut r = start(&args, &env);
    let (status, _) = r.wait();
    assert_eq!(status.code(), Some(0), "{}", r.stderr());
    for who in ["leader", "stop", "task"] {
        let seen = t.env_of(who);
        assert_eq!(
            seen.get("ROLE_KNOB").map(String::as_str),
            Some("on"),
            "{who}"
        );
        assert_eq!(seen.get("QUEUE").map(String::as_str), Some("512"), "{who}");
        assert_eq!(
            seen.get("UCX_NET_DEVICES"),
            None,
            "{who}: unset by the command"
        );
    }
    assert_eq!(t.env_of("leader")["UCX_TLS"], "^gdr_copy");

    // A worker rank runs the same set-up in front of the worker command.
    let record = t.path("worker.env");
    let worker = format!("env > {record}");
    env.extend(srun_env(1, 2));
    let (status, r) = run(&["mpi", "--worker-cmd", &worker], &env);
    assert!(status.success(), "{}", r.stderr());
    let seen = t.env_of("worker");
    assert_eq!(seen.get("ROLE_KNOB").map(String::as_str), Some("on"));
    assert_eq!(seen.get("UCX_TLS").map(String::as_str), Some("^gdr_copy"));
    assert_eq!(seen.get("UCX_NET_DEVICES"), None);

    // Around a subshell the set-up cannot be moved: said once, and the leader runs bare.
    let t = Trio::new();
    let (leader, stop) = (t.path("leader"), t.path("stop"));
    let command = format!("(ROLE_KNOB=on trtllm-llmapi-launch {})", t.path("task"));
    let env = env_with(&[("pytestCommand", command.as_str())]);
    let args = ["mpi", "--leader-cmd", &leader, "--leader-stop-cmd", &stop];
    let mut r = start(&args, &env);
    let (status, _) = r.wait();
    assert_eq!(status.code(), Some(0), "{}", r.stderr());
    assert!(r.stderr().contains("inside a subshell"), "{}", r.stderr());
    assert_eq!(t.env_of("leader").get("ROLE_KNOB"), None);
    assert_eq!(
        t.env_of("task").get("ROLE_KNOB").map(String::as_str),
        Some("on")
    );
}

fn start_trio(t: &Trio, env: &BTreeMap<String, String>) -> Running {
    let (leader, task, stop) = (t.path("leader"), t.path("task"), t.path("stop"));
    start(
        &[
            "mpi",
            "--leader-cmd",
            &leader,
            "--leader-stop-cmd",
            &stop,
            "--",
            &task,
        ],
        env,
    )
}

/// rank-launch in a session of its own whose controlling terminal is a pty; returns what the
/// pty showed once rank-launch ended.
fn run_on_a_terminal(
    args: &[&str],
    env: &BTreeMap<String, String>,
    input: &[u8],
) -> (Option<i32>, String) {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let slave = pty.slave.as_raw_fd();
    let mut cmd = rank_launch_command();
    cmd.args(args).env_clear().envs(env);
    // SAFETY: async-signal-safe calls only, on a descriptor that stays open in the child.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            if libc::ioctl(slave, libc::TIOCSCTTY, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            for fd in 0..3 {
                libc::dup2(slave, fd);
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn rank-launch on a pty");
    drop(pty.slave);
    let mut master = std::fs::File::from(pty.master);
    master.write_all(input).unwrap();
    // Read until the last writer is gone (EIO on a pty), bounded by the harness timeout.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            text.extend_from_slice(&buf[..n]);
            let _ = tx.send(text.clone());
        }
    });
    let deadline = std::time::Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let seen = rx.try_iter().last().unwrap_or_default();
            panic!(
                "rank-launch on a terminal did not end; the terminal showed:\n{}",
                String::from_utf8_lossy(&seen)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut seen = Vec::new();
    while let Ok(text) = rx.recv_timeout(Duration::from_millis(500)) {
        seen = text;
    }
    (status.code(), String::from_utf8_lossy(&seen).into_owned())
}

#[test]
fn the_task_reads_end_of_file_on_the_mpi_path_even_from_a_terminal() {
    let t = Trio::new();
    let (leader, stop) = (t.path("leader"), t.path("stop"));
    let base = ["mpi", "--leader-cmd", &leader, "--leader-stop-cmd", &stop];
    let reader = "if read -r line; then echo \"got:$line\"; else echo eof; fi";
    let mut args: Vec<&str> = base.to_vec();
    args.extend(["--", "bash", "-c", reader]);
    let (code, shown) = run_on_a_terminal(&args, &srun_env(0, 1), b"");
    assert_eq!(code, Some(0), "{shown}");
    assert!(
        shown.contains("eof"),
        "upstream: the task reads EOF; {shown}"
    );

    // Asked for, the task gets the terminal, as its foreground job.
    let t = Trio::new();
    let (leader, stop) = (t.path("leader"), t.path("stop"));
    let args = [
        "mpi",
        "--leader-cmd",
        &leader,
        "--leader-stop-cmd",
        &stop,
        "--task-stdin",
        "inherit",
        "--",
        "bash",
        "-c",
        reader,
    ];
    let (code, shown) = run_on_a_terminal(&args, &srun_env(0, 1), b"hello\n");
    assert_eq!(code, Some(0), "{shown}");
    assert!(shown.contains("got:hello"), "{shown}");
}

#[test]
fn a_single_task_on_a_terminal_is_its_foreground_job() {
    // Under `srun --pty` the task reads the terminal; in a background group it would stop on
    // SIGTTIN instead.
    let reader = "read -r line; echo \"got:$line\"; stty -a > /dev/null && echo tty-ok";
    let (code, shown) = run_on_a_terminal(&["--", "bash", "-c", reader], &base_env(), b"hello\n");
    assert_eq!(code, Some(0), "{shown}");
    assert!(shown.contains("got:hello"), "{shown}");
    assert!(shown.contains("tty-ok"), "{shown}");
}

/// The grace period counts from the termination signal, not from when rank-launch began to
/// wait (a TERM a while into the run gets the whole grace before SIGKILL).
#[test]
fn the_grace_period_counts_from_the_signal_on_rank_0() {
    let t = Trio::new();
    let leader = t.path("leader");
    let env = env_with(&[("LEADER_MODE", "deaf")]);
    let mut r = start(
        &[
            "mpi",
            "--leader-cmd",
            &leader,
            "--grace-period",
            "1s",
            "--",
            "bash",
            "-c",
            "trap '' TERM; echo ready; sleep 1.5; echo later; exec sleep 60",
        ],
        &env,
    );
    r.expect_line("later");
    let sent = std::time::Instant::now();
    nix::sys::signal::kill(r.pid(), nix::sys::signal::Signal::SIGTERM).unwrap();
    let (status, _) = r.wait();
    let took = sent.elapsed();
    assert_eq!(status.code(), Some(137), "{}", r.stderr());
    assert!(
        took >= Duration::from_millis(950),
        "SIGKILL came {took:?} after the TERM, before the 1 s grace was over: {}",
        r.stderr()
    );
    assert!(took < slack(Duration::from_secs(3)), "took {took:?}");
}
