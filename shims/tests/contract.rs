//! TensorRT-LLM's launch contract with real Open MPI: every TensorRT-LLM process initialises
//! MPI when it imports the package, so only the leader and the workers may see the world's
//! environment; the task and the stop helper must be singletons.
//!
//! - The stand-ins fail like the real code when started with a running world's environment
//!   (so they can never become forgiving again).
//! - `mpirun -np 2|4 rank-launch mpi -- TASK` with rank-launch's **default** leader, worker and
//!   stop commands (the `tensorrt_llm` stand-in package in `shims/python` on `PYTHONPATH`) exits
//!   with the task's code within about a second of the task's end, the leader stopped by its
//!   stop command, nothing left running.

mod common;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Proc, mpirun, rank_launch};

const LIMIT: Duration = Duration::from_secs(90);

/// The stand-in `tensorrt_llm` package of this source tree (these tests run this crate's
/// binaries, not the deployable copies in `target/dist`).
fn python_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python")
}

fn mark() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

fn unix_us_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// One world of `mpirun -np 2`: rank 0 runs the leader and then `stand_in` with rank 0's full
/// environment, as a launcher that forgets to scrub it would; then ends the leader.
fn world_with_a_wrong_environment(stand_in: &str) -> (String, String, String, String) {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let script = d.join("rank.sh");
    std::fs::write(
        &script,
        format!(
            r#"#!/bin/bash
set -u
d={d}
if [ "$OMPI_COMM_WORLD_RANK" != 0 ]; then exec shim-worker; fi
shim-leader 2> "$d/leader.err" & leader=$!
for _ in $(seq 1200); do grep -q "serving the proxy" "$d/leader.err" && break; sleep 0.05; done
{stand_in} 2> "$d/bad.err"; echo $? > "$d/bad.code"
kill -TERM $leader; wait $leader
"#,
            d = d.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let port = common::free_port();
    let mut cmd = mpirun(2);
    cmd.arg(&script)
        .env(
            "TLLM_SPAWN_PROXY_PROCESS_IPC_ADDR",
            format!("tcp://127.0.0.1:{port}"),
        )
        .env(
            "TLLM_SPAWN_PROXY_PROCESS_IPC_HMAC_KEY",
            "3f1c0d9e8b7a69584736251403f2e1d0c9b8a79685746352413021f0e9d8c7b6",
        )
        .env("tllm_mpi_size", "2")
        .env("SHIM_PROXY_TIMEOUT", "5")
        .env("TLLM_MGMN_SHUTDOWN_GRACE_SECONDS", "5");
    let mut world = Proc::spawn("world", &mut cmd);
    world.wait(LIMIT);
    let read = |name: &str| std::fs::read_to_string(d.join(name)).unwrap_or_default();
    (
        read("bad.code"),
        read("bad.err"),
        read("leader.err"),
        world.all(),
    )
}

/// Started with a running world's environment, each stand-in fails where the real TensorRT-LLM
/// process fails: inside `MPI_Init` ("orte_init failed ... MPI_Init_thread on a NULL
/// communicator"), exit 1, and a stop helper that failed there never reached the leader. This
/// is what a launcher that runs the stop helper with rank 0's environment gets from the real
/// package; the stand-ins must never be kinder.
#[test]
fn stand_ins_started_with_the_worlds_environment_fail_like_the_real_code() {
    for stand_in in [
        "shim-leader --action stop",
        "shim-task",
        "DISAGG_SERVING_TYPE=BENCHMARK shim-role",
    ] {
        let (code, err, leader, all) = world_with_a_wrong_environment(stand_in);
        assert_eq!(code.trim(), "1", "{stand_in}: {err}\n{all}");
        assert!(
            err.contains("An error occurred in MPI_Init_thread"),
            "{stand_in} failed, but not inside MPI_Init: {err}\n{all}"
        );
        assert!(
            leader.contains("stopped by termination signal after 0 task(s)"),
            "{stand_in}: the leader heard nothing from it and served on: {leader}\n{all}"
        );
    }
}

/// `mpirun -np N rank-launch mpi -- shim-task` with the default commands; returns rank 0's
/// summary, how long after the task's end `mpirun` was done, and the world's output.
fn default_commands_world(np: u32, task_exit: u8) -> (serde_json::Value, Duration, Proc, String) {
    let tmp = tempfile::tempdir().unwrap();
    let mark = mark();
    let summary = tmp.path().join("summary.%r.json");
    let mut cmd = mpirun(np);
    cmd.arg(rank_launch())
        .args(["mpi", "--summary-json"])
        .arg(&summary)
        .args(["--", "shim-task"])
        .env("PYTHONPATH", python_path())
        .env("SHIM_TASK_EXIT", task_exit.to_string())
        .env("SHIM_TEST_MARK", &mark);
    let mut world = Proc::spawn(&format!("mpirun -np {np}"), &mut cmd);
    let status = world.wait(LIMIT);
    let done_us = unix_us_now();
    let text = std::fs::read_to_string(tmp.path().join("summary.0.json"))
        .unwrap_or_else(|e| panic!("rank 0's summary: {e}\n{}", world.all()));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let task = v["children"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "task")
        .unwrap_or_else(|| panic!("no task in {v}"))
        .clone();
    let task_end = task["ended_unix_us"].as_u64().expect("task ended");
    // When the last rank-launch of the world was done (mpirun adds its own time after that:
    // about 1-2 s for a non-zero code, even for `mpirun -np 2 bash -c 'exit 3'`).
    let last_rank = (0..np)
        .map(|r| {
            let text = std::fs::read_to_string(tmp.path().join(format!("summary.{r}.json")))
                .unwrap_or_else(|e| panic!("rank {r}'s summary: {e}\n{}", world.all()));
            let s: serde_json::Value = serde_json::from_str(&text).unwrap();
            s["ended_unix_us"].as_u64().expect("ended_unix_us")
        })
        .max()
        .unwrap();
    let after = Duration::from_micros(last_rank.saturating_sub(task_end));
    eprintln!(
        "mpirun -np {np}, task exit {task_exit}: mpirun done {:?} after the task's end",
        Duration::from_micros(done_us.saturating_sub(task_end))
    );
    assert_eq!(
        status.code(),
        Some(i32::from(task_exit)),
        "mpirun -np {np}: the task's code; {}",
        world.all()
    );
    // Nothing of the world is left once mpirun is gone.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let left = loop {
        let left = e2e_tests::marked_processes(&mark);
        if left.is_empty() || std::time::Instant::now() > deadline {
            break left;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(left.is_empty(), "left running: {left:?}\n{}", world.all());
    (v, after, world, text)
}

fn check_rank0(np: u32, task_exit: u8) {
    let (v, after, world, text) = default_commands_world(np, task_exit);
    let all = format!("{text}\n{}", world.all());
    assert_eq!(v["exit_code"], task_exit, "{all}");
    assert_eq!(v["world_size"], np, "{all}");
    let child = |name: &str| {
        v["children"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name}: {all}"))
    };
    let leader = child("leader");
    assert_eq!(
        leader["exit_code"], 0,
        "the leader exited on its own: {all}"
    );
    assert!(leader["signal"].is_null(), "not by a signal: {all}");
    assert_eq!(child("leader-stop")["exit_code"], 0, "{all}");
    assert!(
        world
            .stderr()
            .contains("stopped by stop request after 1 task(s)"),
        "the stop command stopped the leader: {all}"
    );
    assert!(
        world
            .stderr()
            .contains(&format!("1 task(s) ran on a world of {np} rank(s)")),
        "{all}"
    );
    // About a second: the stop helper's start (a Python start and an MPI singleton's
    // initialisation, like a cold package import) plus the world's finalize.
    assert!(
        after < Duration::from_millis(1500),
        "the ranks of mpirun -np {np} ended {after:?} after the task: {all}"
    );
    eprintln!(
        "mpirun -np {np}, task exit {task_exit}: every rank done {after:?} after the task's end"
    );
}

#[test]
fn mpirun_np2_with_the_default_commands_exits_with_the_task_code_promptly() {
    check_rank0(2, 0);
    check_rank0(2, 3);
}

#[test]
fn mpirun_np4_with_the_default_commands_exits_with_the_task_code_promptly() {
    check_rank0(4, 0);
    check_rank0(4, 3);
}

/// Upstream's `trtllm-llmapi-launch` takes every argument as the task; so does the drop-in.
#[test]
fn the_drop_in_launcher_passes_every_argument_to_the_task() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("args");
    let drop_in = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("trtllm-llmapi-launch");
    let mut cmd = mpirun(2);
    cmd.arg(&drop_in)
        .args(["bash", "-c", r#"printf '%s|' "$@" > "$0"; shim-task"#])
        .arg(&out)
        .args(["--help", "-x", "a b", "", "--", "$HOME"])
        .env("PYTHONPATH", python_path())
        .env("RANK_LAUNCH", rank_launch());
    let mut world = Proc::spawn("drop-in", &mut cmd);
    let status = world.wait(LIMIT);
    assert!(status.success(), "{status}\n{}", world.all());
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "--help|-x|a b||--|$HOME|",
        "{}",
        world.all()
    );
}
