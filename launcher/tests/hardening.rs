//! One test per finding of the portability review: what rank-launch must survive on the
//! machines it is for (crowded nodes, old kernels, shared file systems, terminals). Each failed
//! before the fix it names. Waits are on events with bounds; no test sleeps to pass.

mod common;

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Room for rank-launch under an emulator.
fn slack(d: Duration) -> Duration {
    if emulated() { d * 4 } else { d }
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Tests that need root (a pid namespace, dropped capabilities) run in CI, which is root; a
/// developer's unprivileged run says loudly that it skipped them.
fn needs_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test} needs root, and CI runs as root: refusing to skip it under CI"
    );
    eprintln!("SKIPPED {test}: needs root");
    false
}

fn wait_file(path: &Path, limit: Duration) {
    wait_for(&format!("{}", path.display()), limit, || path.exists());
}

/// Finding: a child registering with a dead sentinel died of SIGPIPE (the reset came before
/// the write). Now the child runs, and rank-launch says the protection is gone.
#[test]
fn a_killed_sentinel_leaves_later_children_running_with_a_warning() {
    let dir = tempdir();
    let d = dir.path().display().to_string();
    let leader = script(
        dir.path(),
        "leader",
        &format!("while [ ! -e {d}/stop.requested ]; do sleep 0.01; done"),
    );
    let stop = script(
        dir.path(),
        "stop",
        &format!("touch {d}/stop.ran {d}/stop.requested"),
    );
    let task = script(
        dir.path(),
        "task",
        &format!("echo ready; while [ ! -e {d}/go ]; do sleep 0.01; done"),
    );
    let (leader, stop, task) = (
        leader.display().to_string(),
        stop.display().to_string(),
        task.display().to_string(),
    );
    let mut r = start(
        &[
            "mpi",
            "--leader-cmd",
            &leader,
            "--leader-stop-cmd",
            &stop,
            "--",
            &task,
        ],
        &srun_env(0, 2),
    );
    r.expect_line("ready");
    wait_for("the sentinel's pid", slack(Duration::from_secs(5)), || {
        r.stderr().contains("sentinel started pid=")
    });
    let sentinel: i32 = r
        .stderr()
        .split("sentinel started pid=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no sentinel pid in:\n{}", r.stderr()));
    kill(Pid::from_raw(sentinel), Signal::SIGKILL).unwrap();
    wait_for("the warning", slack(Duration::from_secs(5)), || {
        r.stderr().contains("protection is gone")
    });
    // The next child (the stop command) starts after the sentinel's death.
    std::fs::write(dir.path().join("go"), "").unwrap();
    let (status, _) = r.wait();
    assert_eq!(status.code(), Some(0), "{}", r.stderr());
    assert!(dir.path().join("stop.ran").exists(), "{}", r.stderr());
}

/// Finding: before Linux 5.16 a core-dumping signal kills every process that shares the dying
/// process's memory, and the sentinel shared rank-launch's (`CLONE_VM`): a crash of rank-launch
/// took its protection with it. The sentinel is a fork now; after a crash it ends the
/// grandchildren (a parent-death signal reaches only the direct children).
#[test]
fn after_a_crash_of_rank_launch_the_sentinel_still_ends_the_grandchildren() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::CommandExt;
    // SIGABRT is what `panic = "abort"` raises; SIGILL another core-dumping signal. (A SIGSEGV
    // sent from outside is not a crash: Rust's stack-overflow handler takes the first one.)
    for signal in [Signal::SIGABRT, Signal::SIGILL] {
        let mut cmd = rank_launch_command();
        cmd.args(["--", "bash", "-c", "sleep 60 & echo \"ready $!\"; wait"])
            .env_clear()
            .envs(base_env())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        // SAFETY: setrlimit and setsid are async-signal-safe; no core file is written.
        unsafe {
            cmd.pre_exec(|| {
                let none = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                libc::setrlimit(libc::RLIMIT_CORE, &none);
                libc::setsid();
                Ok(())
            });
        }
        let mut child = KillOnDrop(cmd.spawn().unwrap());
        let line = BufReader::new(child.0.stdout.take().unwrap())
            .lines()
            .next()
            .unwrap()
            .unwrap();
        let grandchild = Pid::from_raw(line.trim_start_matches("ready ").parse().unwrap());
        kill(Pid::from_raw(child.0.id() as i32), signal).unwrap();
        let status = child.0.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert!(status.signal().is_some(), "{signal}: {status:?}");
        wait_for(
            &format!("the grandchild to die after rank-launch's {signal}"),
            slack(Duration::from_secs(5)),
            || !alive(grandchild),
        );
    }
}

/// Finding: groups already known to be empty were probed and signalled again; on a long job
/// the number can be another process's group by then. Here the installer's group number is
/// handed, in a private pid namespace, to an unrelated process that makes it its group; a TERM
/// forwarded by rank-launch must not reach it.
#[test]
fn a_reaped_group_number_given_to_another_process_is_never_signalled() {
    if !needs_root("a_reaped_group_number_given_to_another_process_is_never_signalled") {
        return;
    }
    let dir = tempdir();
    let d = dir.path().display().to_string();
    let runner = std::env::var("RANK_LAUNCH_TEST_RUNNER").unwrap_or_default();
    let scenario = script(
        dir.path(),
        "scenario",
        &format!(
            r#"set -u
d={d}
mkdir -p $d/gates
{runner} {bin} --install-cmd "echo \$\$ > $d/installer.pid" --install-dir $d/gates --grace-period 2s \
  -- bash -c "touch $d/task.up; trap 'exit 0' TERM; while :; do sleep 0.02; done" 2> $d/rl.err &
rl=$!
for _ in $(seq 500); do [ -e $d/task.up ] && break; sleep 0.02; done
g=$(cat $d/installer.pid)
# The next pid in this namespace is the installer's old group number.
echo $((g - 1)) > /proc/sys/kernel/ns_last_pid
python3 -c '
import os, signal, sys, time
os.setpgid(0, 0)
signal.signal(signal.SIGTERM, lambda *a: open(sys.argv[2], "w").write("got TERM"))
open(sys.argv[1], "w").write(str(os.getpgrp()))
time.sleep(30)
' $d/p.pgid $d/p.term &
p=$!
for _ in $(seq 500); do [ -e $d/p.pgid ] && break; sleep 0.02; done
echo "$g" > $d/g
kill -TERM $rl
wait $rl; echo $? > $d/rl.code
kill -KILL $p
"#,
            bin = bin().display()
        ),
    );
    let out = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "bash"])
        .arg(&scenario)
        .stdin(Stdio::null())
        .output()
        .expect("unshare");
    let read = |n: &str| std::fs::read_to_string(dir.path().join(n)).unwrap_or_default();
    let all = format!(
        "unshare: {:?}\n{}\nrank-launch:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        read("rl.err")
    );
    assert_eq!(
        read("p.pgid").trim(),
        read("g").trim(),
        "the scenario could not hand the number on: {all}"
    );
    assert_eq!(read("rl.code").trim(), "0", "{all}");
    assert_eq!(
        read("p.term"),
        "",
        "a stranger's group got rank-launch's TERM: {all}"
    );
}

/// Finding: rank-launch's own log lines went to stderr with blocking writes from the signal
/// path, and a long line was written with one blocking write: a stalled stderr (or stdout)
/// delayed the forwarding of a TERM indefinitely.
#[test]
fn stalled_stdout_and_stderr_with_64k_lines_do_not_delay_a_forwarded_term() {
    let dir = tempdir();
    let got_term = dir.path().join("got-term");
    // A writer of 64 KiB lines on both streams, in the background; the shell itself waits
    // for TERM with a trap, never blocked in a write.
    let script_text = format!(
        "trap 'touch {got}; exit 0' TERM; \
         (head -c 8388608 /dev/zero | tr '\\0' x | fold -w 65535) & \
         (head -c 8388608 /dev/zero | tr '\\0' y | fold -w 65535 >&2) & \
         while :; do sleep 0.01; done",
        got = got_term.display()
    );
    let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let child = rank_launch_command()
        .args([
            "--label",
            "--grace-period",
            "2s",
            "--",
            "bash",
            "-c",
            &script_text,
        ])
        .env_clear()
        .envs(srun_env(0, 1))
        // Every log line it can produce goes to the stalled stderr.
        .env("RANK_LAUNCH_LOG", "trace")
        .stdin(Stdio::null())
        .stdout(Stdio::from(out_w))
        .stderr(Stdio::from(err_w))
        .spawn()
        .expect("spawn");
    let mut guard = KillOnDrop(child);
    // Wait until both pipes to us are full: rank-launch's writes then cannot go on.
    let full = |fd: &std::os::fd::OwnedFd| {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int.
        unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) };
        n as usize >= 60 * 1024
    };
    wait_for(
        "both streams to stall",
        slack(Duration::from_secs(20)),
        || full(&out_r) && full(&err_r),
    );
    let sent = Instant::now();
    kill(Pid::from_raw(guard.0.id() as i32), Signal::SIGTERM).unwrap();
    wait_file(&got_term, slack(Duration::from_secs(5)));
    let handled = sent.elapsed();
    assert!(
        handled < slack(Duration::from_millis(100)),
        "TERM reached the child after {handled:?}"
    );
    // It ends within its bounds although nobody reads (grace 2 s + the bounded flushes).
    let deadline = Instant::now() + slack(Duration::from_secs(10));
    let status = loop {
        if let Some(status) = guard.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "rank-launch did not exit");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(0));
    drop((out_r, err_r));
}

/// Finding: after SIGKILL, the wait for a child had no bound (a child stuck in the kernel hung
/// rank-launch). Here the child cannot be signalled at all (it changed its uid; rank-launch
/// runs without CAP_KILL): rank-launch says so and exits within grace + 5 s.
#[test]
fn a_child_that_does_not_die_ends_rank_launch_within_the_bound() {
    if !needs_root("a_child_that_does_not_die_ends_rank_launch_within_the_bound") {
        return;
    }
    let dir = tempdir();
    // Writable for the child, which runs as nobody.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let pid_file = dir.path().join("child.pid");
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args(["--bounding-set", "-kill", "--"])
        .args(rank_launch_words())
        .args([
            "--grace-period",
            "500ms",
            "--",
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            "sh",
            "-c",
        ])
        .arg(format!(
            "echo $$ > {}; trap '' TERM; exec sleep 300",
            pid_file.display()
        ))
        .env_clear()
        .envs(base_env())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("setpriv");
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut { stderr }, &mut s);
        s
    });
    wait_file(&pid_file, slack(Duration::from_secs(10)));
    let sleeper: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let sent = Instant::now();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let deadline = sent + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = kill(Pid::from_raw(sleeper), Signal::SIGKILL);
            panic!("rank-launch hung on a child it cannot end");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = sent.elapsed();
    // The test has CAP_KILL: clean up what rank-launch could not.
    let _ = kill(Pid::from_raw(sleeper), Signal::SIGKILL);
    let stderr = reader.join().unwrap();
    assert_eq!(status.code(), Some(74), "{stderr}");
    assert!(
        stderr.contains("did not end within 2s after SIGKILL"),
        "{stderr}"
    );
    // grace 0.5 s + 2 s after SIGKILL, then bounded flushes; documented bound: grace + 5 s.
    assert!(
        took < slack(Duration::from_millis(5500)),
        "took {took:?}: {stderr}"
    );
}

fn gate_env(rank: u32, n: u32, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut env = srun_env(rank, n);
    for (k, v) in extra {
        env.insert((*k).into(), (*v).into());
    }
    env
}

fn install_args<'a>(cmd: &'a str, gates: &'a str, more: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--install-cmd", cmd, "--install-dir", gates];
    args.extend_from_slice(more);
    args.extend(["--", "true"]);
    args
}

/// Finding: the gate's key (job, host, role) survived `scontrol requeue`, so a requeued job
/// reused the failed status of its first attempt.
#[test]
fn a_requeued_job_installs_again_instead_of_reusing_a_failed_status() {
    let dir = tempdir();
    let gates = dir.path().join("gates");
    std::fs::create_dir(&gates).unwrap();
    let count = dir.path().join("count");
    let ok = dir.path().join("ok");
    let cmd = format!("echo x >> {}; test -e {}", count.display(), ok.display());
    let g = gates.display().to_string();
    let args = install_args(&cmd, &g, &[]);
    let (status, r) = run(&args, &gate_env(0, 1, &[]));
    assert_eq!(status.code(), Some(72), "{}", r.stderr());
    std::fs::write(&ok, "").unwrap();
    // The same attempt of the same step: the published status stands.
    let (status, r) = run(&args, &gate_env(0, 1, &[]));
    assert_eq!(status.code(), Some(72), "{}", r.stderr());
    assert_eq!(std::fs::read_to_string(&count).unwrap(), "x\n");
    // Requeued: a new attempt.
    let (status, r) = run(&args, &gate_env(0, 1, &[("SLURM_RESTART_COUNT", "1")]));
    assert!(status.success(), "{}", r.stderr());
    assert_eq!(std::fs::read_to_string(&count).unwrap(), "x\nx\n");
    // Another step, or another command: new gates too.
    let (status, _) = run(&args, &gate_env(0, 1, &[("SLURM_STEP_ID", "9")]));
    assert!(status.success());
    assert_eq!(std::fs::read_to_string(&count).unwrap(), "x\nx\nx\n");
}

/// Finding: an interrupted install published "was interrupted by SIGTERM" as its status, which
/// every later rank-launch of that gate took as final.
#[test]
fn an_interrupted_install_is_never_final() {
    let dir = tempdir();
    let gates = dir.path().join("gates");
    std::fs::create_dir(&gates).unwrap();
    let count = dir.path().join("count");
    let started = dir.path().join("started");
    let first = format!(
        "echo x >> {c}; touch {s}; test -e {c}.2 || sleep 60",
        c = count.display(),
        s = started.display()
    );
    let g = gates.display().to_string();
    let args = install_args(&first, &g, &["--grace-period", "1s"]);
    let mut r = start(&args, &gate_env(0, 1, &[]));
    wait_file(&started, slack(Duration::from_secs(10)));
    kill(r.pid(), Signal::SIGTERM).unwrap();
    let (status, _) = r.wait();
    assert_eq!(status.code(), Some(143), "{}", r.stderr());
    let gate = gate_path(&gates, &gate_env(0, 1, &[]), "none", &first);
    assert!(!gate.join("status").exists(), "nothing was published");
    // The next installer of the same gate starts afresh.
    std::fs::write(format!("{}.2", count.display()), "").unwrap();
    let (status, r) = run(&args, &gate_env(0, 1, &[]));
    assert!(status.success(), "{}", r.stderr());
    assert_eq!(std::fs::read_to_string(&count).unwrap(), "x\nx\n");
}

/// Runs an installer and a waiter on one gate; returns the waiter.
fn installer_and_waiter(
    gates: &Path,
    cmd: &str,
    installer_extra: &[&str],
    waiter_extra: &[&str],
    wrap_waiter: Option<&str>,
) -> (Running, Running) {
    let g = gates.display().to_string();
    let installer = start(
        &install_args(cmd, &g, installer_extra),
        &gate_env(0, 2, &[]),
    );
    let waiter_args = install_args(cmd, &g, waiter_extra);
    let waiter = match wrap_waiter {
        None => start(&waiter_args, &gate_env(1, 2, &[])),
        Some(prefix) => {
            // The waiter under a shell prefix (a user namespace with other limits).
            let mut words: Vec<String> = vec!["-c".into(), prefix.to_string(), "sh".into()];
            words.extend(
                rank_launch_words()
                    .into_iter()
                    .map(|w| w.to_string_lossy().into_owned()),
            );
            words.extend(waiter_args.iter().map(|s| s.to_string()));
            start_program("sh", &words, &gate_env(1, 2, &[]))
        }
    };
    (installer, waiter)
}

/// Finding: inotify was mandatory; with `fs.inotify.max_user_instances` exhausted (128 per
/// user by default, on a node with 100+ processes) every waiting rank failed.
#[test]
fn without_inotify_waiters_poll() {
    let dir = tempdir();
    let gates = dir.path().join("gates");
    std::fs::create_dir(&gates).unwrap();
    let cmd = "sleep 0.3";
    // Asked for.
    let (mut i, mut w) = installer_and_waiter(&gates, cmd, &[], &["--install-watch", "poll"], None);
    let (si, _) = i.wait();
    let (sw, _) = w.wait();
    assert!(
        si.success() && sw.success(),
        "{}\n{}",
        i.stderr(),
        w.stderr()
    );
    assert!(
        w.stderr().contains("watch=\"poll\""),
        "the waiter was asked to poll: {}",
        w.stderr()
    );
    // Exhausted: a user namespace whose inotify instances are used up (0 allowed); setting
    // that limit needs root.
    if !needs_root("without_inotify_waiters_poll (inotify exhausted)") {
        return;
    }
    let gates = dir.path().join("gates2");
    std::fs::create_dir(&gates).unwrap();
    let prefix = r#"exec unshare -U -r sh -c 'echo 0 > /proc/sys/user/max_inotify_instances && exec "$@"' sh "$@""#;
    let (mut i, mut w) = installer_and_waiter(&gates, cmd, &[], &[], Some(prefix));
    let (si, _) = i.wait();
    let (sw, _) = w.wait();
    assert!(si.success(), "{}", i.stderr());
    assert!(sw.success(), "{}", w.stderr());
    assert!(
        w.stderr().contains("inotify is unavailable") && w.stderr().contains("watch=\"poll\""),
        "the waiter fell back to polling: {}",
        w.stderr()
    );
}

/// Finding: a local rank 0 that never arrives left the others waiting the whole install
/// timeout (30 minutes by default).
#[test]
fn waiters_give_up_quickly_when_no_installer_arrives() {
    let dir = tempdir();
    let g = dir.path().display().to_string();
    let args = install_args("true", &g, &["--install-start-timeout", "500ms"]);
    let started = Instant::now();
    let (status, r) = run(&args, &gate_env(1, 2, &[]));
    assert_eq!(status.code(), Some(72), "{}", r.stderr());
    assert!(
        r.stderr()
            .contains("did not begin the install on this node within 0.5s"),
        "{}",
        r.stderr()
    );
    assert!(started.elapsed() < slack(Duration::from_secs(3)));
}

/// Finding: `flock` on Lustre or NFS without lock support failed with a misleading message.
/// The installer can show it is alive by its pid instead; a waiter sees it die.
#[test]
fn a_pid_lock_file_stands_in_for_flock() {
    let dir = tempdir();
    let gates = dir.path().join("gates");
    std::fs::create_dir(&gates).unwrap();
    let file_lock = ["--install-lock", "file"];
    let (mut i, mut w) = installer_and_waiter(&gates, "sleep 0.3", &file_lock, &[], None);
    let (si, _) = i.wait();
    let (sw, _) = w.wait();
    assert!(
        si.success() && sw.success(),
        "{}\n{}",
        i.stderr(),
        w.stderr()
    );
    let gate = gate_path(&gates, &gate_env(0, 2, &[]), "none", "sleep 0.3");
    let lock = std::fs::read_to_string(gate.join("lock")).unwrap();
    assert!(lock.starts_with("pid "), "{lock}");

    // The installer dies mid-install: the waiter notices its pid is gone.
    let gates = dir.path().join("gates2");
    std::fs::create_dir(&gates).unwrap();
    let started = dir.path().join("started");
    let cmd = format!("touch {}; sleep 60", started.display());
    let (mut i, mut w) = installer_and_waiter(&gates, &cmd, &file_lock, &[], None);
    wait_file(&started, slack(Duration::from_secs(10)));
    kill(i.pid(), Signal::SIGKILL).unwrap();
    let _ = i.wait();
    let t = Instant::now();
    let (sw, _) = w.wait();
    assert_eq!(sw.code(), Some(72), "{}", w.stderr());
    assert!(
        w.stderr()
            .contains("local rank 0 ended before finishing the install"),
        "{}",
        w.stderr()
    );
    assert!(t.elapsed() < slack(Duration::from_secs(3)));
}

/// Finding: signals rank-launch inherited as ignored (a `nohup`, a shell's background job)
/// stayed ignored in its children, so a forwarded SIGINT did nothing.
#[test]
fn signals_inherited_as_ignored_are_default_again_in_the_children() {
    let ignore = |sigs: &'static [libc::c_int]| {
        move || {
            for &s in sigs {
                // SAFETY: signal() is async-signal-safe.
                unsafe { libc::signal(s, libc::SIG_IGN) };
            }
            Ok(())
        }
    };
    let (status, out) = run_with_pre_exec(
        &["--", "sh", "-c", "exec grep ^SigIgn /proc/self/status"],
        ignore(&[libc::SIGINT, libc::SIGHUP, libc::SIGQUIT, libc::SIGUSR1]),
        None,
    );
    assert_eq!(status, Some(0), "{out}");
    let mask = u64::from_str_radix(out.trim().trim_start_matches("SigIgn:").trim(), 16).unwrap();
    for sig in [
        libc::SIGINT,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGPIPE,
    ] {
        assert_eq!(
            mask & (1 << (sig - 1)),
            0,
            "signal {sig} is still ignored: {out}"
        );
    }
    // And a forwarded SIGINT ends the child (130), not the grace period's SIGKILL (137).
    let (status, out) = run_with_pre_exec(
        &[
            "--grace-period",
            "5s",
            "--",
            "sh",
            "-c",
            "echo ready; exec sleep 60",
        ],
        ignore(&[libc::SIGINT]),
        Some(Signal::SIGINT),
    );
    assert_eq!(status, Some(130), "{out}");
}

/// Runs rank-launch with `pre` in its child before exec; sends `signal` once it printed
/// `ready`; returns the code and what it printed.
fn run_with_pre_exec(
    args: &[&str],
    pre: impl FnMut() -> std::io::Result<()> + Send + Sync + 'static,
    signal: Option<Signal>,
) -> (Option<i32>, String) {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::CommandExt;
    let mut cmd = rank_launch_command();
    cmd.args(args)
        .env_clear()
        .envs(base_env())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // SAFETY: the closures only call signal(), which is async-signal-safe.
    unsafe { cmd.pre_exec(pre) };
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut out = String::new();
    if let Some(signal) = signal {
        let line = lines.next().unwrap().unwrap();
        assert_eq!(line, "ready");
        kill(Pid::from_raw(child.id() as i32), signal).unwrap();
    }
    for line in lines.map_while(Result::ok) {
        out.push_str(&line);
        out.push('\n');
    }
    let status = child.wait().unwrap();
    (status.code(), out)
}

/// Finding: supervision was set up before the input was checked (under qemu-user, where the
/// sentinel's clone was refused, even bad input exited 74). Bad input now exits 2 before any
/// process is started.
#[test]
fn bad_input_is_refused_before_supervision_is_set_up() {
    // Supervision shows itself in the debug log...
    let (status, r) = run(&["--", "true"], &base_env());
    assert!(status.success(), "{}", r.stderr());
    assert!(r.stderr().contains("sentinel started"), "{}", r.stderr());
    // ...and bad input never gets that far.
    let mut env = base_env();
    env.insert("DISAGG_SERVING_TYPE".into(), "nonsense".into());
    let (status, r) = run(&["--", "true"], &env);
    assert_eq!(status.code(), Some(2), "{}", r.stderr());
    assert!(!r.stderr().contains("sentinel started"), "{}", r.stderr());
}
