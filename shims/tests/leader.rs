//! The leader's proxy with a real 2-rank MPI world (`mpirun -np 1 shim-leader : -np 1
//! shim-worker`): wrong keys and junk are refused while the right key keeps working, and an
//! authenticated stop ends every rank with exit 0. Bad keys fail loudly at start.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{Proc, children_named, command, has_hex64, mpirun, run};
use shims::proxy::{Addr, Client, Key, ProxyError};

const KEY: &str = "3f1c0d9e8b7a69584736251403f2e1d0c9b8a79685746352413021f0e9d8c7b6";
const WRONG: &str = "0000000000000000000000000000000000000000000000000000000000000001";
const T: Duration = Duration::from_secs(10);

fn start_world(port: u16, key: &str) -> Proc {
    let mut cmd = mpirun(1);
    cmd.args(["shim-leader", ":", "-np", "1", "shim-worker"])
        .env(
            "TLLM_SPAWN_PROXY_PROCESS_IPC_ADDR",
            format!("tcp://127.0.0.1:{port}"),
        )
        .env("TLLM_SPAWN_PROXY_PROCESS_IPC_HMAC_KEY", key)
        .env("tllm_mpi_size", "2");
    Proc::spawn("leader world", &mut cmd)
}

fn stop_client(port: u16, key: &str) -> std::process::Command {
    let mut cmd = command(env!("CARGO_BIN_EXE_shim-leader"));
    cmd.args(["--action", "stop"])
        .env(
            "TLLM_SPAWN_PROXY_PROCESS_IPC_ADDR",
            format!("tcp://127.0.0.1:{port}"),
        )
        .env("TLLM_SPAWN_PROXY_PROCESS_IPC_HMAC_KEY", key);
    cmd
}

#[test]
fn wrong_keys_are_refused_and_the_leader_keeps_serving() {
    let port = common::free_port();
    let mut world = start_world(port, KEY);
    world.wait_for("MPI world of 2 rank(s) up", Duration::from_secs(60));
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let key = Key::from_hex(KEY).unwrap();

    // A wrong key: the leader answers `denied`.
    let err = Client::connect(&Addr::Tcp(addr), &Key::from_hex(WRONG).unwrap(), T).unwrap_err();
    assert!(matches!(err, ProxyError::Denied), "{err}\n{}", world.all());
    // Junk, and a client that never answers the challenge: neither blocks anyone else.
    let mut junk = TcpStream::connect(addr).unwrap();
    junk.write_all(b"\x00\x00\x00\x05hello").unwrap();
    drop(junk);
    let _silent = TcpStream::connect(addr).unwrap();

    let started = Instant::now();
    let mut client = Client::connect(&Addr::Tcp(addr), &key, T).expect("right key");
    assert_eq!(client.allreduce(T).expect("allreduce"), (1, 2));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "a silent client delayed others"
    );
    world.wait_for("refused client", T);

    // The stop command with a wrong key fails and changes nothing.
    let (status, bad_stop) = run("bad stop", &mut stop_client(port, WRONG), T);
    assert_eq!(status.code(), Some(1), "{}", bad_stop.all());
    assert!(
        bad_stop.stderr().contains("refused the key"),
        "{}",
        bad_stop.all()
    );
    assert_eq!(client.allreduce(T).expect("still serving"), (1, 2));

    let (status, stop) = run("stop", &mut stop_client(port, KEY), T);
    assert!(status.success(), "{}\n{}", stop.all(), world.all());
    let status = world.wait(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{}", world.all());
    let text = world.stderr();
    assert!(
        text.contains("stopped by stop request after 2 task(s)"),
        "{}",
        world.all()
    );
    assert!(
        text.contains("worker rank1 quit after 2 task(s)"),
        "{}",
        world.all()
    );
    assert!(!has_hex64(&world.all()), "key leaked: {}", world.all());
}

#[test]
fn a_missing_or_malformed_key_fails_at_start_with_exit_2() {
    let port = common::free_port();
    let addr = format!("tcp://127.0.0.1:{port}");
    let cases: [(&str, Option<&str>); 3] = [
        ("missing", None),
        ("short", Some("abcd")),
        ("not hex", Some(&"xy".repeat(32))),
    ];
    for (what, key) in cases {
        for action in ["start", "stop"] {
            let mut cmd = command(env!("CARGO_BIN_EXE_shim-leader"));
            cmd.args(["--action", action])
                .env("TLLM_SPAWN_PROXY_PROCESS_IPC_ADDR", &addr);
            if let Some(key) = key {
                cmd.env("TLLM_SPAWN_PROXY_PROCESS_IPC_HMAC_KEY", key);
            }
            let (status, proc) = run(what, &mut cmd, T);
            assert_eq!(status.code(), Some(2), "{what} {action}: {}", proc.all());
            assert!(
                proc.stderr()
                    .contains("`TLLM_SPAWN_PROXY_PROCESS_IPC_HMAC_KEY`"),
                "{what} {action}: {}",
                proc.all()
            );
        }
    }
    // The task side too: a GEN role without the key is bad input.
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = command(env!("CARGO_BIN_EXE_shim-role"));
    cmd.env("DISAGG_SERVING_TYPE", "GEN_0")
        .env("jobWorkspace", tmp.path())
        .env("TLLM_SPAWN_PROXY_PROCESS_IPC_ADDR", &addr);
    let (status, proc) = run("role without key", &mut cmd, T);
    assert_eq!(status.code(), Some(2), "{}", proc.all());
    assert!(proc.stderr().contains("[shim-role GEN_0"), "{}", proc.all());
    assert!(
        proc.stderr()
            .contains("`TLLM_SPAWN_PROXY_PROCESS_IPC_HMAC_KEY` is not set"),
        "{}",
        proc.all()
    );
}

#[test]
fn roles_name_missing_settings() {
    let cases = [
        (vec![], "`DISAGG_SERVING_TYPE` is not set"),
        (
            vec![("DISAGG_SERVING_TYPE", "GEN_x")],
            "`DISAGG_SERVING_TYPE` is `GEN_x`",
        ),
        (
            vec![("DISAGG_SERVING_TYPE", "BENCHMARK")],
            "`jobWorkspace` is not set",
        ),
        (
            vec![
                ("DISAGG_SERVING_TYPE", "BENCHMARK"),
                ("jobWorkspace", "/nonexistent/ws"),
            ],
            "`jobWorkspace` is `/nonexistent/ws`: expected an existing directory",
        ),
        (
            vec![
                ("DISAGG_SERVING_TYPE", "DISAGG_SERVER"),
                ("jobWorkspace", "/tmp"),
                ("SHIM_TIMEOUT", "soon"),
            ],
            "`SHIM_TIMEOUT` is `soon`",
        ),
    ];
    for (env, message) in cases {
        let mut cmd = command(env!("CARGO_BIN_EXE_shim-role"));
        cmd.envs(env);
        let (status, proc) = run(message, &mut cmd, T);
        assert_eq!(status.code(), Some(2), "{message}: {}", proc.all());
        assert!(proc.stderr().contains(message), "{message}: {}", proc.all());
    }
}

/// A 2-rank world that is up, with the pids of its worker and its leader.
fn world_with_pids(port: u16) -> (Proc, nix::unistd::Pid, nix::unistd::Pid) {
    use nix::unistd::Pid;
    let world = start_world(port, KEY);
    world.wait_for("MPI world of 2 rank(s) up", Duration::from_secs(60));
    let mpirun_pid = world.pid();
    let worker = children_named(mpirun_pid, "shim-worker");
    let leader = children_named(mpirun_pid, "shim-leader");
    assert_eq!((worker.len(), leader.len()), (1, 1), "{}", world.all());
    let (worker, leader) = (Pid::from_raw(worker[0]), Pid::from_raw(leader[0]));
    (world, worker, leader)
}

#[test]
fn sigterm_ends_a_leader_stuck_in_a_collective_at_once() {
    use nix::sys::signal::{Signal, kill};
    let port = common::free_port();
    let (mut world, worker, leader) = world_with_pids(port);

    // A frozen worker: the leader's next allreduce cannot complete.
    kill(worker, Signal::SIGSTOP).unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut client = Client::connect(&Addr::Tcp(addr), &Key::from_hex(KEY).unwrap(), T).unwrap();
    let err = client.allreduce(Duration::from_millis(500)).unwrap_err();
    assert!(matches!(err, ProxyError::Timeout { .. }), "{err}");

    let started = Instant::now();
    kill(leader, Signal::SIGTERM).unwrap();
    let status = world.wait(Duration::from_secs(30));
    let _ = kill(worker, Signal::SIGCONT);
    assert!(!status.success(), "{}", world.all());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}\n{}",
        started.elapsed(),
        world.all()
    );
}

/// After a TERM the leader stops its world under a short bound: seen under Slurm, the workers of
/// the other node were already gone, and the leader waited in MPI until the launcher's KILL.
/// Here the worker is frozen, so the finalize fence cannot complete: the leader exits 143 about
/// 2 s after the TERM, well inside the launcher's 5 s grace.
#[test]
fn sigterm_with_a_worker_gone_ends_the_leader_within_its_bound() {
    use nix::sys::signal::{Signal, kill};
    let port = common::free_port();
    let (mut world, worker, leader) = world_with_pids(port);

    kill(worker, Signal::SIGSTOP).unwrap();
    let started = Instant::now();
    kill(leader, Signal::SIGTERM).unwrap();
    world.wait_for(
        "did not stop within 2s of the termination signal",
        Duration::from_secs(10),
    );
    let took = started.elapsed();
    let _ = kill(worker, Signal::SIGCONT);
    let status = world.wait(Duration::from_secs(30));
    assert!(!status.success(), "{}", world.all());
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(4),
        "took {took:?}\n{}",
        world.all()
    );
}
