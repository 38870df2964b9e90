//! Log integrity: many ranks labelling their output into one shared pipe (what a node's
//! `srun` or `mpirun` output stream is) lose no line and never split or interleave one.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use common::{KillOnDrop, rank_launch_command, srun_env};

const RANKS: u32 = 8;
const LINES: u32 = 100_000;

#[test]
fn eight_ranks_100k_lines_each_through_one_pipe() {
    // Close-on-exec: only the dup2'ed stdout of each child may hold the pipe, or a reader that
    // gave up would leave the writers blocked instead of failing them.
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
    let mut children = Vec::new();
    for rank in 0..RANKS {
        // Lines of varying length, some longer than a typical chunk boundary; the last one has
        // no newline and is written just before exit.
        let body = format!(
            "awk -v r={rank} 'BEGIN {{ pad = sprintf(\"%0300d\", 0); \
             for (i = 1; i <= {LINES}; i++) {{ printf \"r%d-i%d-%s\\n\", r, i, substr(pad, 1, (i * 7) % 300) }} \
             printf \"r%d-last\", r }}'"
        );
        let child = rank_launch_command()
            .args(["--label", "--", "bash", "-c", &body])
            .env_clear()
            .envs(srun_env(rank, RANKS))
            .env("RANK_LAUNCH_LOG", "warn")
            .stdout(Stdio::from(write_end.try_clone().expect("dup")))
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn rank-launch");
        children.push(child);
    }
    drop(write_end);
    let reader = std::thread::spawn(move || {
        let mut next = vec![1u32; RANKS as usize];
        let mut last_seen = vec![false; RANKS as usize];
        let mut bad = Vec::new();
        for line in BufReader::new(std::fs::File::from(read_end)).split(b'\n') {
            let line = String::from_utf8_lossy(&line.expect("read")).into_owned();
            let Some((label, rest)) = line.split_once(": ") else {
                bad.push(line);
                continue;
            };
            let Some(rank) = label.parse::<usize>().ok().filter(|&r| r < RANKS as usize) else {
                bad.push(line);
                continue;
            };
            if rest == format!("r{rank}-last") {
                last_seen[rank] = true;
                continue;
            }
            let expected_prefix = format!("r{rank}-i{}-", next[rank]);
            let pad_len = (next[rank] as usize * 7) % 300;
            if !rest.starts_with(&expected_prefix) || rest.len() != expected_prefix.len() + pad_len
            {
                bad.push(line);
                continue;
            }
            next[rank] += 1;
        }
        (next, last_seen, bad)
    });
    for mut child in children {
        let status = child.wait().expect("wait");
        assert!(status.success());
    }
    let (next, last_seen, bad) = reader.join().expect("reader");
    assert!(
        bad.is_empty(),
        "{} malformed or out-of-order lines, first: {:?}",
        bad.len(),
        bad.first()
    );
    assert!(
        next.iter().all(|&n| n == LINES + 1),
        "lines per rank: {next:?}"
    );
    assert!(
        last_seen.iter().all(|&seen| seen),
        "the unterminated last line of every rank arrives"
    );
}

/// A reader that stops reading must not stall rank-launch: with its stdout pipe full, a TERM
/// still reaches the child at once, and rank-launch exits after a bounded attempt to hand over
/// what it queued.
#[test]
fn a_stalled_reader_does_not_delay_signals() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().expect("tempdir");
    let ready = dir.path().join("ready");
    let got_term = dir.path().join("got-term");
    // Never read: the pipe fills up (64 KiB) and stays full.
    let (_read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
    let script = format!(
        "trap 'touch {got}; exit 0' TERM; head -c 600000 /dev/zero | tr '\\0' 'x' | fold -w 100; touch {ready}; while :; do sleep 0.05; done",
        got = got_term.display(),
        ready = ready.display()
    );
    let child = rank_launch_command()
        .args([
            "--label",
            "--grace-period",
            "2s",
            "--",
            "bash",
            "-c",
            &script,
        ])
        .env_clear()
        .envs(srun_env(0, 1))
        .env("RANK_LAUNCH_LOG", "warn")
        .stdout(Stdio::from(write_end))
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut guard = KillOnDrop(child);
    let child = &mut guard.0;
    let wait_file = |path: &std::path::Path, limit: Duration| {
        let deadline = Instant::now() + limit;
        while !path.exists() {
            assert!(
                Instant::now() < deadline,
                "{} did not appear",
                path.display()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait_file(&ready, Duration::from_secs(30));
    let sent = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("kill");
    wait_file(&got_term, Duration::from_secs(1));
    let handled = sent.elapsed();
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "rank-launch did not exit");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(
        handled < Duration::from_millis(500),
        "TERM reached the child after {handled:?}"
    );
    assert_eq!(status.code(), Some(0));
}
