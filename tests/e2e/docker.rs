//! The launcher on a real multi-node Slurm cluster of containers (`docker/cluster.sh`): a
//! controller and 4 compute nodes with their own host names and addresses. Each test starts a
//! fresh cluster (`down`, then `up`: a few seconds once the image exists) and removes it at the
//! end, so a failed test leaves nothing behind for the next one. A cross-process lock keeps two
//! test runs from sharing the one cluster.
//!
//! Without a Docker engine every test prints a loud `SKIPPED` line and returns; under CI
//! (`CI` set) it fails instead.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use e2e_tests::{Output, bin_dir, root, run};

/// Roles of the demo job (docker/demo.yaml) and how many ranks each has.
const ROLES: [(&str, usize); 5] = [
    ("GEN_0", 4),
    ("CTX_0", 2),
    ("CTX_1", 2),
    ("DISAGG_SERVER", 1),
    ("BENCHMARK", 1),
];
const NODES: [&str; 5] = ["c0", "n1", "n2", "n3", "n4"];
/// The demo job with a benchmark of about 20 s: long enough to break it in the middle.
const LONG: &str = "demo-long.yaml";
/// rank-launch's grace period in the demo job (RANK_LAUNCH_GRACE_PERIOD in docker/job.sh).
const GRACE: Duration = Duration::from_secs(5);
/// A loopback port held for the whole test: the lock that keeps test runs (threads of one
/// `cargo test`, or two test runs on one machine) from sharing the cluster. The kernel frees it
/// when the holder dies.
const LOCK_PORT: u16 = 47_613;

fn cluster_sh() -> PathBuf {
    root().join("docker/cluster.sh")
}

/// A started cluster; removed on drop.
struct Docker {
    _lock: TcpListener,
}

impl Docker {
    /// Starts a fresh cluster, or returns `None` after a loud SKIPPED line when there is no
    /// Docker engine.
    fn start(test: &str) -> Option<Docker> {
        let info = Command::new("docker").arg("info").output();
        let failure = match &info {
            Ok(out) if out.status.success() => None,
            Ok(out) => Some(
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string(),
            ),
            Err(err) => Some(err.to_string()),
        };
        if let Some(why) = failure {
            // CI machines have an engine: there, its absence is a failure, not a skip.
            assert!(
                std::env::var_os("CI").is_none(),
                "no Docker engine under CI (docker info failed: {why}): docker::{test} must run"
            );
            eprintln!(
                "\n*** SKIPPED: no Docker engine (docker info failed: {why}) — docker::{test} did not run ***\n"
            );
            return None;
        }
        let started = Instant::now();
        let lock = lock();
        let locked = started.elapsed();
        let bin = bin_dir();
        let down = run(
            Command::new(cluster_sh()).arg("down"),
            Duration::from_secs(120),
        );
        assert_eq!(down.code, Some(0), "cluster.sh down:\n{}", down.stderr);
        let up = run(
            Command::new(cluster_sh())
                .args(["up", "--bin-dir"])
                .arg(&bin),
            Duration::from_secs(600),
        );
        assert_eq!(
            up.code,
            Some(0),
            "cluster.sh up:\nstdout:\n{}\nstderr:\n{}",
            up.stdout,
            up.stderr
        );
        eprintln!(
            "docker::{test}: lock {:.1} s, down {:.1} s, up {:.1} s (total {:.1} s)",
            locked.as_secs_f64(),
            down.took.as_secs_f64(),
            up.took.as_secs_f64(),
            started.elapsed().as_secs_f64()
        );
        Some(Docker { _lock: lock })
    }

    /// Runs CMD in container NODE.
    fn exec(&self, node: &str, cmd: &[&str]) -> Output {
        run(
            Command::new(cluster_sh()).arg("exec").arg(node).args(cmd),
            Duration::from_secs(120),
        )
    }

    /// Runs CMD in container NODE and returns its stdout; panics if it fails.
    fn ok(&self, node: &str, cmd: &[&str]) -> String {
        let out = self.exec(node, cmd);
        assert_eq!(
            out.code,
            Some(0),
            "{node}: {cmd:?}\nstdout:\n{}\nstderr:\n{}",
            out.stdout,
            out.stderr
        );
        out.stdout
    }

    /// Starts `cluster.sh demo --keep` in the background (its work directory stays in /shared).
    fn demo(&self, extra: &[&str]) -> JoinHandle<Output> {
        let mut cmd = Command::new(cluster_sh());
        cmd.args(["demo", "--keep", "--bin-dir"])
            .arg(bin_dir())
            .args(extra);
        std::thread::spawn(move || run(&mut cmd, Duration::from_secs(420)))
    }

    /// The running demo job: its id and work directory (the job's WorkDir, set by job.sh).
    fn demo_job(&self) -> (String, String) {
        let job = wait_for(
            "the demo job to be submitted",
            Duration::from_secs(120),
            || {
                let out = self.exec(
                    "c0",
                    &["squeue", "-h", "-n", "rank-launch-demo", "-o", "%i"],
                );
                let id = out.stdout.trim().to_string();
                if id.is_empty() {
                    Err(all(&out))
                } else {
                    Ok(id)
                }
            },
        );
        let text = self.ok("c0", &["scontrol", "show", "job", &job]);
        let work = field(&text, "WorkDir").unwrap_or_else(|| panic!("no WorkDir in:\n{text}"));
        (job, work)
    }

    /// Waits until every rank of the job's servers has started its children and the benchmark
    /// sends its requests: the job is in the middle of its work.
    fn wait_mid_job(&self, work: &str) {
        let logs = format!("cat {work}/job/*_server*.log {work}/job/benchmark.log 2>/dev/null");
        wait_for(
            "every rank to start and the benchmark to send requests",
            Duration::from_secs(180),
            || {
                let out = self.exec("c0", &["bash", "-c", &logs]);
                let started = out
                    .stdout
                    .lines()
                    .filter(|l| {
                        l.contains("INFO started child=\"task\"")
                            || l.contains("INFO started child=\"worker\"")
                    })
                    .count();
                // Rank 0 of GEN_0, CTX_0 and CTX_1, the router and the benchmark run a task;
                // the other GEN and CTX ranks a worker.
                let sending = out.stdout.lines().any(|l| l.contains("healthy; sending"));
                if started == 10 && sending {
                    Ok(())
                } else {
                    Err(format!(
                        "{started} ranks started, sending: {sending}\n{}",
                        all(&out)
                    ))
                }
            },
        );
    }

    /// Processes on NODE other than the cluster's own daemons.
    fn leftovers(&self, node: &str) -> Vec<String> {
        let daemons = [
            "docker-init",
            "tini",
            "munged",
            "slurmd",
            "slurmctld",
            "slurmscriptd",
            "ps",
        ];
        self.ok(node, &["ps", "-eo", "pid=,comm="])
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .filter(|l| !daemons.contains(&l.split_whitespace().nth(1).unwrap_or("")))
            .map(|l| format!("{node}: {l}"))
            .collect()
    }

    /// Waits until no process of any job is left on the running nodes.
    fn assert_nothing_left(&self, nodes: &[&str]) {
        let started = Instant::now();
        let deadline = started + Duration::from_secs(30);
        loop {
            let left: Vec<String> = nodes.iter().flat_map(|n| self.leftovers(n)).collect();
            if left.is_empty() {
                eprintln!(
                    "no process of the job left on {nodes:?} (checked for {:.1} s)",
                    started.elapsed().as_secs_f64()
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "processes of the job left 30 s after its end:\n{}",
                left.join("\n")
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        let started = Instant::now();
        let _ = Command::new(cluster_sh()).arg("down").output();
        eprintln!("cluster down in {:.1} s", started.elapsed().as_secs_f64());
    }
}

/// Takes the cross-process lock, waiting for another test run to end.
fn lock() -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", LOCK_PORT)) {
            return listener;
        }
        assert!(
            Instant::now() < deadline,
            "another docker test run held 127.0.0.1:{LOCK_PORT} for 30 min"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Polls `probe` every 300 ms until it returns a value; panics after `limit` with what the
/// last probe saw.
fn wait_for<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match probe() {
            Ok(value) => return value,
            Err(seen) => assert!(
                Instant::now() < deadline,
                "timed out after {limit:?} waiting for {what}; last seen:\n{seen}"
            ),
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// `Key=value` from `scontrol show` output.
fn field(text: &str, key: &str) -> Option<String> {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")).map(str::to_string))
}

fn finish(demo: JoinHandle<Output>) -> Output {
    demo.join().unwrap_or_else(|e| std::panic::resume_unwind(e))
}

fn all(out: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr)
}

fn last_line(text: &str) -> &str {
    text.lines().last().unwrap_or("")
}

/// The demo's per-rank rows: role rank host node exit_code seconds.
fn rank_rows(stdout: &str) -> Vec<Vec<&str>> {
    stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() == 6 && ROLES.iter().any(|(r, _)| *r == f[0]))
        .collect()
}

/// The node slices `launch-gen --explain` printed: role → nodes its srun `-w` names.
fn slices(stdout: &str) -> Vec<(String, Vec<String>)> {
    stdout
        .lines()
        .skip_while(|l| !l.starts_with("node slices"))
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .take_while(|f| f.len() >= 2 && ROLES.iter().any(|(r, _)| *r == f[0]))
        .map(|f| {
            (
                f[0].to_string(),
                f[1].split(',').map(str::to_string).collect(),
            )
        })
        .collect()
}

#[test]
fn srun_pmix_rank_check_8_ranks_on_4_hosts() {
    let Some(cluster) = Docker::start("srun_pmix_rank_check_8_ranks_on_4_hosts") else {
        return;
    };
    let out = cluster.exec(
        "c0",
        &[
            "srun",
            "-N",
            "4",
            "--ntasks-per-node=2",
            "--mpi=pmix",
            "rank-check",
        ],
    );
    assert_eq!(out.code, Some(0), "{}", all(&out));
    let hosts = cluster.ok(
        "c0",
        &["srun", "-N", "4", "--ntasks-per-node=2", "hostname"],
    );
    let mut distinct: Vec<&str> = hosts.lines().collect();
    distinct.sort_unstable();
    assert_eq!(
        distinct,
        ["n1", "n1", "n2", "n2", "n3", "n3", "n4", "n4"],
        "{hosts}"
    );
    for host in ["n1", "n2", "n3", "n4"] {
        assert!(
            out.stdout.contains(host),
            "rank-check's node table names {host}: {}",
            all(&out)
        );
    }
    // The pyxis stand-in is loaded on every node: srun takes the flags of an L0 srun-args
    // file, and --container-workdir is the tasks' working directory.
    let dirs = cluster.ok(
        "c0",
        &[
            "srun",
            "-N",
            "4",
            "--container-image=/images/trtllm.sqsh",
            "--container-name=t",
            "--container-mounts=/shared:/shared",
            "--container-workdir=/shared",
            "--container-env=PATH",
            "--no-container-mount-home",
            "pwd",
        ],
    );
    assert_eq!(dirs.lines().collect::<Vec<_>>(), ["/shared"; 4], "{dirs}");
    cluster.assert_nothing_left(&NODES);
}

#[test]
fn job_completes_with_every_role_on_its_slice() {
    let Some(cluster) = Docker::start("job_completes_with_every_role_on_its_slice") else {
        return;
    };
    let out = finish(cluster.demo(&[]));
    let text = all(&out);
    eprintln!("{}", out.stdout);
    assert_eq!(out.code, Some(0), "{text}");
    assert_eq!(last_line(&out.stdout), "verdict: PASS", "{text}");
    assert!(out.stdout.contains(": COMPLETED (exit code 0:0)"), "{text}");
    assert!(
        out.stdout.to_lowercase().contains("throughput"),
        "benchmark numbers in the output: {text}"
    );

    let slices = slices(&out.stdout);
    assert_eq!(
        slices.len(),
        ROLES.len(),
        "node slices in the explain output: {text}"
    );
    let rows = rank_rows(&out.stdout);
    for (role, ranks) in ROLES {
        let mine: Vec<&Vec<&str>> = rows.iter().filter(|r| r[0] == role).collect();
        assert_eq!(mine.len(), ranks, "{role} has {ranks} ranks: {text}");
        let slice = &slices.iter().find(|(r, _)| r == role).expect("slice").1;
        for row in mine {
            assert_eq!(row[4], "0", "{role} rank {} exited 0: {text}", row[1]);
            assert_eq!(row[2], row[3], "host name is the Slurm node name: {text}");
            assert!(
                slice.iter().any(|n| n == row[2]),
                "{role} rank {} ran on {}, not in its slice {slice:?}: {text}",
                row[1],
                row[2]
            );
        }
    }
    // GEN_0 spans two hosts, two ranks each; the two CTX servers have a node each.
    let gen_hosts: Vec<&str> = rows
        .iter()
        .filter(|r| r[0] == "GEN_0")
        .map(|r| r[2])
        .collect();
    for host in &gen_hosts {
        assert_eq!(gen_hosts.iter().filter(|h| *h == host).count(), 2, "{text}");
    }
    cluster.assert_nothing_left(&NODES);
}

/// Runs the long demo job, calls `fault(cluster, job)` once every rank runs and the benchmark
/// sends requests, and returns the demo's output, how long after the fault it ended, and the
/// job's work directory.
fn break_mid_job(
    cluster: &Docker,
    fault: impl FnOnce(&Docker, &str),
) -> (Output, Duration, String) {
    let demo = cluster.demo(&["--config", LONG]);
    let (job, work) = cluster.demo_job();
    cluster.wait_mid_job(&work);
    let at = Instant::now();
    fault(cluster, &job);
    let out = finish(demo);
    let took = at.elapsed();
    eprintln!("{}", out.stdout);
    eprintln!("the demo ended {:.1} s after the fault", took.as_secs_f64());
    (out, took, work)
}

/// The job failed, naming `role`, within `limit` of the fault.
fn assert_failed_naming(out: &Output, took: Duration, role: &str, limit: Duration) {
    let text = all(out);
    assert_eq!(out.code, Some(1), "{text}");
    let line = last_line(&out.stdout);
    assert!(
        line.starts_with(&format!("verdict: FAIL ({role}: "))
            || line.starts_with(&format!("verdict: FAIL ({role} rank ")),
        "the verdict names {role}: {text}"
    );
    assert!(out.stdout.contains(": FAILED (exit code"), "{text}");
    assert!(
        took < limit,
        "the job took {took:?} to end after the fault (bound {limit:?})"
    );
}

#[test]
fn job_fails_when_a_gen_rank_is_killed() {
    let Some(cluster) = Docker::start("job_fails_when_a_gen_rank_is_killed") else {
        return;
    };
    let (out, took, _) = break_mid_job(&cluster, |cluster, _| {
        // A GEN_0 worker on the second node of its slice: another host than the leader's.
        let pids = cluster.ok("n2", &["pgrep", "-x", "shim-worker"]);
        let pid = pids.split_whitespace().next().expect("a shim-worker on n2");
        eprintln!("killing shim-worker pid {pid} on n2");
        cluster.ok("n2", &["kill", "-KILL", pid]);
    });
    // The step fails at once (--kill-on-bad-exit); stopping the others takes the grace period.
    assert_failed_naming(&out, took, "GEN_0", Duration::from_secs(30));
    cluster.assert_nothing_left(&NODES);
}

/// Stops NODE's container in the middle of the job: the job must fail naming ROLE, the other
/// nodes keep no process of it, and the node returns to service once its container runs again.
fn node_lost(test: &str, node: &str, role: &str) {
    let Some(cluster) = Docker::start(test) else {
        return;
    };
    let container = format!("rank-launch-{node}");
    let (out, took, _) = break_mid_job(&cluster, |_, _| {
        let out = run(
            Command::new("docker").args(["stop", "-t", "1", &container]),
            Duration::from_secs(60),
        );
        assert_eq!(out.code, Some(0), "docker stop: {}", all(&out));
    });
    // SlurmdTimeout (10 s) declares the node down, srun ends the step, the script the job.
    assert_failed_naming(&out, took, role, Duration::from_secs(60));
    let others: Vec<&str> = NODES.into_iter().filter(|n| *n != node).collect();
    cluster.assert_nothing_left(&others);

    // The node comes back by itself once its container runs again (ReturnToService=2).
    let up = run(
        Command::new(cluster_sh())
            .args(["up", "--bin-dir"])
            .arg(bin_dir()),
        Duration::from_secs(120),
    );
    assert_eq!(up.code, Some(0), "{}", all(&up));
    let state = cluster.ok("c0", &["sinfo", "-h", "-n", node, "-o", "%t"]);
    assert_eq!(state.trim(), "idle", "{node} back in service");
}

/// A worker rank on another host than its leader freezes (SIGSTOP) while the leader waits in
/// the collective: the rank's own rank-launch sees it stopped and ends the step after the stall
/// budget (15 s), and the verdict names the rank and its host.
#[test]
fn a_frozen_worker_on_another_host_is_named_after_the_stall_budget() {
    let Some(cluster) =
        Docker::start("a_frozen_worker_on_another_host_is_named_after_the_stall_budget")
    else {
        return;
    };
    let started = Instant::now();
    let out = finish(cluster.demo(&["--hang", "GEN_0:2:freeze"]));
    let text = all(&out);
    eprintln!("{}", out.stdout);
    assert_eq!(out.code, Some(1), "{text}");
    let line = last_line(&out.stdout);
    assert!(
        line.starts_with("verdict: FAIL (GEN_0 rank 2 on n2: no progress for 15 s"),
        "{text}"
    );
    assert!(line.contains("stopped"), "{text}");
    assert!(
        out.stdout.contains("launch-gen: evidence for GEN_0"),
        "{text}"
    );
    eprintln!(
        "the hung demo ended {:.1} s after its start",
        started.elapsed().as_secs_f64()
    );
    cluster.assert_nothing_left(&NODES);
}

#[test]
fn job_fails_when_a_node_is_lost() {
    // n2 holds half of GEN_0: its srun step loses two ranks at once, and kills the other two.
    node_lost("job_fails_when_a_node_is_lost", "n2", "GEN_0");
}

/// Every task of CTX_1 is on the lost node: srun then exits 0, and the launch script must still
/// see the node failure and name CTX_1.
#[test]
fn job_fails_naming_the_server_whose_only_node_is_lost() {
    // n4 holds all of CTX_1.
    node_lost(
        "job_fails_naming_the_server_whose_only_node_is_lost",
        "n4",
        "CTX_1",
    );
}

#[test]
fn scancel_terms_every_rank_on_every_node() {
    let Some(cluster) = Docker::start("scancel_terms_every_rank_on_every_node") else {
        return;
    };
    let mut cancelled = 0.0;
    let (out, _, work) = break_mid_job(&cluster, |cluster, job| {
        let now = cluster.ok("c0", &["date", "+%s.%N"]);
        cancelled = now.trim().parse().expect("date +%s.%N");
        cluster.ok("c0", &["scancel", job]);
    });
    let text = all(&out);
    assert_eq!(out.code, Some(1), "{text}");
    assert!(
        last_line(&out.stdout).starts_with("verdict: FAIL ("),
        "{text}"
    );
    assert!(out.stdout.contains(": CANCELLED"), "{text}");

    // Every rank got TERM: rank-launch received it (and forwarded it to its children), or,
    // since Slurm signals every process of a step, its child died of it first. Every rank then
    // ended by itself with 128+15 (its summary written) within the grace period, and none of its
    // children needed the SIGKILL.
    let logs = cluster.ok(
        "c0",
        &[
            "bash",
            "-c",
            &format!("cat {work}/job/*_server*.log {work}/job/benchmark.log"),
        ],
    );
    let mut late = Vec::new();
    for (role, ranks) in ROLES {
        for rank in 0..ranks {
            let summary = format!("{work}/job/ranks/{role}.{rank}.json");
            let stat = cluster.exec("c0", &["stat", "-c", "%.3Y", &summary]);
            assert_eq!(
                stat.code,
                Some(0),
                "{role} rank {rank} wrote no summary: it did not end by itself\n{logs}"
            );
            let ended: f64 = stat.stdout.trim().parse().expect("mtime");
            let json = cluster.ok("c0", &["cat", &summary]);
            let who = format!("rank={rank} role={role} ");
            let received = logs.lines().any(|l| {
                l.contains(&who) && l.contains("received signal") && l.contains("SIGTERM")
            });
            // Top-level keys of the pretty JSON are indented by two spaces.
            assert!(
                json.contains("\n  \"exit_code\": 143,")
                    && (received || json.contains("\n  \"child_signal\": 15,")),
                "{role} rank {rank} did not end by a TERM:\n{json}\nlogs:\n{logs}"
            );
            if ended - cancelled >= GRACE.as_secs_f64() || json.contains("\"signal\": 9") {
                late.push(format!(
                    "{role} rank {rank} ended {:.2} s after scancel (grace period {GRACE:?}):\n{json}",
                    ended - cancelled
                ));
            }
        }
    }
    assert!(
        late.is_empty(),
        "ranks that did not end within the grace period, or whose children needed SIGKILL:\n{}\nlogs:\n{logs}",
        late.join("\n")
    );
    cluster.assert_nothing_left(&NODES);
}
