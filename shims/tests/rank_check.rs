//! `rank-check` under a real 4-rank `mpirun` passes and prints the node table; under an
//! environment that claims 4 ranks while MPI is a singleton (what a wrong `--mpi` plugin
//! gives) it fails with a message naming both views.

mod common;

use std::time::Duration;

use common::{command, mpirun, run};

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn four_ranks_agree() {
    let mut cmd = mpirun(4);
    cmd.arg(env!("CARGO_BIN_EXE_rank-check"));
    let (status, proc) = run("rank-check", &mut cmd, LIMIT);
    assert!(status.success(), "{}", proc.all());
    let out = proc.stdout();
    assert!(
        out.contains("rank-check: 4 rank(s) on 1 node(s), launcher source openmpi"),
        "{}",
        proc.all()
    );
    assert!(out.contains(" 0-3\n"), "{}", proc.all());
    assert!(
        out.contains("barrier") && out.contains("allreduce"),
        "{}",
        proc.all()
    );
    assert!(out.ends_with("rank-check: OK\n"), "{}", proc.all());
    // Only rank 0 prints the table.
    assert_eq!(out.matches("rank-check: OK").count(), 1, "{}", proc.all());
}

#[test]
fn a_singleton_under_a_four_rank_environment_fails_clearly() {
    let mut cmd = command(env!("CARGO_BIN_EXE_rank-check"));
    cmd.env("OMPI_COMM_WORLD_RANK", "1")
        .env("OMPI_COMM_WORLD_SIZE", "4")
        .env("OMPI_COMM_WORLD_LOCAL_RANK", "1")
        .env("OMPI_COMM_WORLD_LOCAL_SIZE", "4");
    let (status, proc) = run("rank-check", &mut cmd, LIMIT);
    assert_eq!(status.code(), Some(1), "{}", proc.all());
    let err = proc.stderr();
    assert!(
        err.contains("MPI says rank 0 of 1, the environment says rank 1 of 4 (source openmpi"),
        "{}",
        proc.all()
    );
    assert!(err.contains("singleton"), "{}", proc.all());
    assert!(
        proc.stdout()
            .contains("rank-check: FAILED on 1 of 1 rank(s)"),
        "{}",
        proc.all()
    );
}

#[test]
fn one_bad_rank_fails_every_rank() {
    // Rank 1's environment claims a 3-rank world: only it sees the problem, but both ranks
    // must exit 1 (one verdict for the whole step). Each rank's exit code is echoed.
    let check = env!("CARGO_BIN_EXE_rank-check");
    let echo = r#""$0"; echo "exit=$?""#;
    let mut cmd = mpirun(1);
    cmd.args(["sh", "-c", echo, check, ":", "-np", "1"]).args([
        "env",
        "OMPI_COMM_WORLD_SIZE=3",
        "sh",
        "-c",
        echo,
        check,
    ]);
    let (status, proc) = run("rank-check", &mut cmd, LIMIT);
    // The wrappers end with `echo`, so mpirun itself succeeds; the echoed codes are the point.
    assert!(status.success(), "{}", proc.all());
    assert_eq!(
        proc.stdout().matches("exit=1\n").count(),
        2,
        "{}",
        proc.all()
    );
    assert!(
        proc.stderr().contains("[rank-check rank=1/2 host=",)
            && proc
                .stderr()
                .contains("MPI says rank 1 of 2, the environment says rank 1 of 3"),
        "{}",
        proc.all()
    );
    assert!(
        proc.stdout()
            .contains("rank-check: FAILED on 1 of 2 rank(s)"),
        "{}",
        proc.all()
    );
}

#[test]
fn a_rank_that_never_joins_is_a_bounded_failure_naming_the_phase() {
    // Rank 1 never calls MPI_Init: rank 0 waits in MPI_Init until its watchdog fires.
    let started = std::time::Instant::now();
    let mut cmd = mpirun(1);
    cmd.arg(env!("CARGO_BIN_EXE_rank-check"))
        .args([":", "-np", "1", "sleep", "60"])
        .env("RANK_CHECK_TIMEOUT", "3");
    let (status, proc) = run("rank-check", &mut cmd, LIMIT);
    assert!(!status.success(), "{}", proc.all());
    assert!(
        proc.stderr()
            .contains("error: no verdict after 3s: stuck in MPI_Init"),
        "{}",
        proc.all()
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{}",
        proc.all()
    );
}
