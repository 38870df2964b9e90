//! `rank-check`: the fabric precheck, run as its own step before model bring-up.
//!
//! Every rank initialises MPI and compares MPI's rank and size with what
//! `rank_launch::rank::detect` reads from its environment: a wrong `srun --mpi` plugin or an
//! `mpirun` of another MPI does not fail in MPI, it silently gives singletons, and that is
//! exactly what this must catch. Then host names are gathered (fixed-size buffers), a barrier
//! and an allreduce are timed, and the allreduce result is checked (sum of ranks). The ranks
//! agree on one verdict (an allreduce of error flags), so every rank exits with the same
//! code and the step fails consistently. Rank 0 prints the node → ranks table and timings.
//! A watchdog bounds the whole check (`RANK_CHECK_TIMEOUT`, default 120 s): a rank stuck in
//! `MPI_Init` or a collective (a peer that never started, a transport that cannot connect)
//! exits 3 with the phase it was stuck in, instead of hanging the job.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mpi::collective::SystemOperation;
use mpi::traits::*;
use rank_launch::rank::{self, EnvMap, RankInfo};
use shims::say;

/// Bytes per host name in the gather (names are truncated to fit).
const HOST_BYTES: usize = 256;
/// Timed repetitions of the barrier and the allreduce.
const ROUNDS: u32 = 20;
/// Bound of the whole check, seconds; a hung fabric must be a verdict, not a hang.
const TIMEOUT_VAR: &str = "RANK_CHECK_TIMEOUT";
const DEFAULT_TIMEOUT: f64 = 120.0;
/// Exit code when the check did not finish in time (the same on every rank that times out).
const TIMED_OUT: u8 = 3;

/// What the rank is doing, for the watchdog's message.
static PHASE: AtomicUsize = AtomicUsize::new(0);
const PHASES: [&str; 6] = [
    "MPI_Init",
    "the host-name allgather",
    "the barrier",
    "the allreduce",
    "agreeing on the verdict",
    "MPI_Finalize",
];

fn phase(n: usize) {
    PHASE.store(n, Ordering::SeqCst);
}

/// Ends the process if the check has not finished within `limit`.
fn watchdog(limit: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        let stuck = PHASES[PHASE.load(Ordering::SeqCst).min(PHASES.len() - 1)];
        say!(
            "error: no verdict after {limit:?}: stuck in {stuck}. Another rank may not have \
             started, or MPI cannot connect the ranks (with `OMPI_MCA_btl=self,tcp` on a host \
             with several interfaces, set `OMPI_MCA_btl_tcp_if_include`)"
        );
        #[allow(clippy::exit)] // the main thread is blocked inside MPI: only exit can end it
        std::process::exit(i32::from(TIMED_OUT));
    });
}

const HELP: &str = "\
rank-check: MPI fabric precheck. Run one per rank, e.g. `srun --mpi=pmix rank-check` or
`mpirun -np 4 rank-check`. Checks that MPI's rank/size agree with the launcher's environment,
gathers host names, times a barrier and an allreduce, and prints a node -> ranks table on rank 0.
Every rank exits 0 only when everything agrees, else 1; 3 when the check did not finish within
RANK_CHECK_TIMEOUT seconds (default 120): a hung fabric is a verdict too.
";

fn main() -> ExitCode {
    if std::env::args()
        .nth(1)
        .is_some_and(|a| a == "--help" || a == "-h")
    {
        print!("{HELP}");
        return ExitCode::SUCCESS;
    }
    let host = shims::log::host_name();
    shims::log::set_prefix(format!("rank-check rank=? host={host}"));
    let env: EnvMap = std::env::vars().collect();
    let detected = rank::detect(&env);
    let limit = match shims::envs::parse_or(TIMEOUT_VAR, DEFAULT_TIMEOUT, "a number of seconds") {
        Ok(secs) if secs.is_finite() && secs > 0.0 && secs < 1e7 => Duration::from_secs_f64(secs),
        Ok(secs) => {
            say!("error: `{TIMEOUT_VAR}` is `{secs}`: expected a positive number of seconds");
            return ExitCode::from(2);
        }
        Err(e) => {
            say!("error: {e}");
            return ExitCode::from(2);
        }
    };
    watchdog(limit);

    let Some(universe) = mpi::initialize() else {
        say!("error: MPI was already initialised");
        return ExitCode::FAILURE;
    };
    let world = universe.world();
    let (mpi_rank, mpi_size) = (world.rank(), world.size());
    shims::log::set_prefix(format!("rank-check rank={mpi_rank}/{mpi_size} host={host}"));
    phase(1);

    let mut errors: Vec<String> = Vec::new();
    match &detected {
        Ok(info) => {
            if let Some(why) = disagreement(info, mpi_rank, mpi_size) {
                errors.push(why);
            }
        }
        Err(e) => errors.push(format!("the launcher environment is invalid: {e}")),
    }

    // Host names, gathered as fixed-size, zero-padded buffers.
    let mut mine = [0u8; HOST_BYTES];
    let bytes = host.as_bytes();
    let n = bytes.len().min(HOST_BYTES - 1);
    mine[..n].copy_from_slice(&bytes[..n]);
    let mut all = vec![0u8; HOST_BYTES * mpi_size as usize];
    world.all_gather_into(&mine[..], &mut all[..]);
    let hosts: Vec<String> = all
        .chunks(HOST_BYTES)
        .map(|c| {
            let end = c.iter().position(|&b| b == 0).unwrap_or(c.len());
            String::from_utf8_lossy(&c[..end]).into_owned()
        })
        .collect();

    // Timings: one warm-up, then ROUNDS of each.
    phase(2);
    world.barrier();
    let t = Instant::now();
    for _ in 0..ROUNDS {
        world.barrier();
    }
    let barrier_us = t.elapsed().as_secs_f64() * 1e6 / f64::from(ROUNDS);
    phase(3);
    let expected = i64::from(mpi_size) * i64::from(mpi_size - 1) / 2;
    let mut sum = 0i64;
    let t = Instant::now();
    for _ in 0..ROUNDS {
        world.all_reduce_into(&i64::from(mpi_rank), &mut sum, SystemOperation::sum());
    }
    let allreduce_us = t.elapsed().as_secs_f64() * 1e6 / f64::from(ROUNDS);
    if sum != expected {
        errors.push(format!(
            "allreduce of the ranks gave {sum}, expected {expected} for {mpi_size} rank(s)"
        ));
    }
    let mut worst = [0f64; 2];
    world.all_reduce_into(
        &[barrier_us, allreduce_us][..],
        &mut worst[..],
        SystemOperation::max(),
    );

    for e in &errors {
        say!("error: {e}");
    }
    phase(4);
    let flag = i32::from(!errors.is_empty());
    let mut failing = 0i32;
    world.all_reduce_into(&flag, &mut failing, SystemOperation::sum());

    if mpi_rank == 0 {
        let source = detected
            .as_ref()
            .map_or_else(|_| "invalid".to_string(), |i| i.source.to_string());
        print!(
            "{}",
            report(
                &hosts,
                &source,
                barrier_us,
                allreduce_us,
                worst,
                failing,
                mpi_size
            )
        );
    }
    phase(5);
    drop(universe);
    if failing == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Why MPI and the environment disagree, naming both values and the detected source.
fn disagreement(info: &RankInfo, mpi_rank: i32, mpi_size: i32) -> Option<String> {
    let agree = i64::from(info.rank) == i64::from(mpi_rank)
        && i64::from(info.world_size) == i64::from(mpi_size);
    if agree {
        return None;
    }
    let from = if info.used.is_empty() {
        "no launcher variables".to_string()
    } else {
        info.used.join(", ")
    };
    let hint = if mpi_size == 1 && info.world_size > 1 {
        ": MPI started as a singleton, so the MPI library did not find the launcher's \
         process manager (wrong `srun --mpi` plugin, or an `mpirun` of another MPI)"
    } else {
        ""
    };
    Some(format!(
        "MPI says rank {mpi_rank} of {mpi_size}, the environment says rank {} of {} \
         (source {}, from {from}){hint}",
        info.rank, info.world_size, info.source
    ))
}

fn report(
    hosts: &[String],
    source: &str,
    barrier_us: f64,
    allreduce_us: f64,
    worst: [f64; 2],
    failing: i32,
    size: i32,
) -> String {
    let mut nodes: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (rank, host) in hosts.iter().enumerate() {
        nodes.entry(host.as_str()).or_default().push(rank);
    }
    let width = nodes.keys().map(|h| h.len()).max().unwrap_or(4).max(4);
    let mut out = format!(
        "rank-check: {size} rank(s) on {} node(s), launcher source {source}\n",
        nodes.len()
    );
    out += &format!("  {:<width$}  ranks\n", "node");
    for (host, ranks) in &nodes {
        out += &format!("  {host:<width$}  {}\n", compress(ranks));
    }
    out += &format!(
        "  barrier    {barrier_us:>10.1} us mean on rank 0 ({:.1} us slowest rank), {ROUNDS} rounds\n",
        worst[0]
    );
    out += &format!(
        "  allreduce  {allreduce_us:>10.1} us mean on rank 0 ({:.1} us slowest rank), {ROUNDS} rounds\n",
        worst[1]
    );
    if failing == 0 {
        out += "rank-check: OK\n";
    } else {
        out += &format!("rank-check: FAILED on {failing} of {size} rank(s)\n");
    }
    out
}

/// `[0,1,2,5,7,8]` → `0-2,5,7-8`.
fn compress(ranks: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < ranks.len() {
        let start = ranks[i];
        while i + 1 < ranks.len() && ranks[i + 1] == ranks[i] + 1 {
            i += 1;
        }
        parts.push(if ranks[i] == start {
            start.to_string()
        } else {
            format!("{start}-{}", ranks[i])
        });
        i += 1;
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(compress(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
        assert_eq!(compress(&[3]), "3");
        assert_eq!(compress(&[]), "");
    }

    #[test]
    fn singleton_under_a_4_rank_env_is_named() {
        let env: EnvMap = [
            ("OMPI_COMM_WORLD_RANK", "2"),
            ("OMPI_COMM_WORLD_SIZE", "4"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "2"),
            ("OMPI_COMM_WORLD_LOCAL_SIZE", "4"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let info = rank::detect(&env).unwrap();
        let why = disagreement(&info, 0, 1).unwrap();
        assert!(why.contains("MPI says rank 0 of 1"), "{why}");
        assert!(why.contains("rank 2 of 4"), "{why}");
        assert!(why.contains("source openmpi"), "{why}");
        assert!(why.contains("singleton"), "{why}");
        assert_eq!(disagreement(&info, 2, 4), None);
    }

    #[test]
    fn table() {
        let hosts: Vec<String> = ["b", "a", "a", "b"].iter().map(|s| s.to_string()).collect();
        let text = report(&hosts, "slurm", 1.0, 2.0, [3.0, 4.0], 0, 4);
        assert!(
            text.contains("4 rank(s) on 2 node(s), launcher source slurm"),
            "{text}"
        );
        assert!(text.contains("  a     1-2\n"), "{text}");
        assert!(text.contains("  b     0,3\n"), "{text}");
        assert!(text.ends_with("rank-check: OK\n"), "{text}");
    }
}
