//! The whole coordination protocol with real MPI worlds under rank-launch: a 4-rank GEN_0
//! world and a 2-rank CTX_0 world (each `mpirun … rank-launch mpi -- shim-role`), the router
//! and the benchmark as single processes under rank-launch, all in one temp workspace. Also the
//! fault injection: a crashed GEN rank fails the world within a bound instead of hanging it.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Proc, has_hex64, mpirun, rank_launch, with_shim_leader};

const LIMIT: Duration = Duration::from_secs(120);

fn role_env<'a>(cmd: &'a mut Command, ws: &std::path::Path, role: &str) -> &'a mut Command {
    with_shim_leader(cmd)
        .env("DISAGG_SERVING_TYPE", role)
        .env("jobWorkspace", ws)
        .env("TRTLLM_PERF_RUN_TOKEN", "test-run")
        .env("numCtxServers", "1")
        .env("numGenServers", "1")
        .env("SHIM_TIMEOUT", "90")
        // Loopback only: tests send traffic to this machine, whatever its name resolves to.
        .env("SHIM_ADVERTISE_HOST", "127.0.0.1")
}

fn mpi_role(ws: &std::path::Path, role: &str, np: u32) -> Proc {
    let mut cmd = mpirun(np);
    cmd.arg(rank_launch()).args(["mpi", "--", "shim-role"]);
    Proc::spawn(role, role_env(&mut cmd, ws, role))
}

fn single_role(ws: &std::path::Path, role: &str) -> Proc {
    let mut cmd = common::command(rank_launch());
    cmd.args(["--", "shim-role"]);
    Proc::spawn(role, role_env(&mut cmd, ws, role))
}

#[test]
fn gen_world_of_4_and_ctx_world_of_2_serve_the_benchmark_through_the_router() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ws = tmp.path();
    let started = Instant::now();
    let mut gen_world = mpi_role(ws, "GEN_0", 4);
    let mut ctx_world = mpi_role(ws, "CTX_0", 2);
    let mut router = single_role(ws, "DISAGG_SERVER");
    let mut bench = single_role(ws, "BENCHMARK");

    let bench_status = bench.wait(LIMIT);
    let router_status = router.wait(LIMIT);
    let gen_status = gen_world.wait(LIMIT);
    let ctx_status = ctx_world.wait(LIMIT);
    let took = started.elapsed();
    let all = [&bench, &router, &gen_world, &ctx_world]
        .iter()
        .map(|p| p.all())
        .collect::<String>();
    assert!(bench_status.success(), "benchmark: {bench_status}\n{all}");
    assert!(router_status.success(), "router: {router_status}\n{all}");
    assert!(gen_status.success(), "GEN_0 world: {gen_status}\n{all}");
    assert!(ctx_status.success(), "CTX_0 world: {ctx_status}\n{all}");

    // The worlds really had 4 and 2 ranks (a wrong launcher gives singletons silently).
    let gen_err = gen_world.stderr();
    assert!(
        gen_err.contains("MPI world of 4 rank(s) reached through the leader: allreduce = 6"),
        "{all}"
    );
    assert!(gen_err.contains("MPI world of 4 rank(s) up"), "{all}");
    for rank in 1..4 {
        assert!(
            gen_err.contains(&format!("worker rank{rank} quit after")),
            "rank {rank}: {all}"
        );
    }
    assert_eq!(gen_err.matches("exiting code=0").count(), 4, "{all}");
    assert!(
        ctx_world
            .stderr()
            .contains("MPI world of 2 rank(s) reached through the leader: allreduce = 1"),
        "{all}"
    );
    // Every request went ctx → gen through the router and reached both worlds.
    let out = bench.stdout();
    assert!(
        out.contains("Successful requests:                    16\n"),
        "{all}"
    );
    assert!(
        out.contains("Failed requests:                        0\n"),
        "{all}"
    );
    assert!(out.contains("Request throughput (req/s):"), "{all}");
    assert!(gen_err.contains("served 16 request(s)"), "{all}");
    assert!(ctx_world.stderr().contains("served 16 request(s)"), "{all}");

    let dir = ws.join("disagg-test-run");
    let status = std::fs::read_to_string(dir.join("benchmark_status")).expect("status file");
    assert_eq!(status, "Done\n");
    for record in [
        "hostnames/GEN_0.addr",
        "hostnames/CTX_0.addr",
        "DISAGG_SERVER.addr",
    ] {
        let text = std::fs::read_to_string(dir.join(record)).expect(record);
        assert!(text.starts_with("127.0.0.1:"), "{record}: {text}");
    }
    assert!(
        !has_hex64(&all),
        "an HMAC key leaked into the output:\n{all}"
    );
    eprintln!("whole protocol in {took:?}");
}

#[test]
fn a_crashed_gen_rank_fails_the_world_within_a_bound() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let mut cmd = mpirun(3);
    cmd.arg(rank_launch()).args(["mpi", "--", "shim-role"]);
    role_env(&mut cmd, tmp.path(), "GEN_0")
        .env("SHIM_FAIL_RANK", "GEN_0:1")
        .env("SHIM_TIMEOUT", "60");
    let mut world = Proc::spawn("GEN_0 world", &mut cmd);
    let status = world.wait(Duration::from_secs(90));
    let took = started.elapsed();
    assert!(!status.success(), "the world must fail\n{}", world.all());
    let err = world.stderr();
    assert!(err.contains("MPI world of 3 rank(s) up"), "{}", world.all());
    assert!(
        err.contains("[shim-worker GEN_0 rank=1 host=")
            && err.contains("fault injection (SHIM_FAIL_RANK)"),
        "{}",
        world.all()
    );
    // The wait for benchmark_status (60 s) must not be what ends it.
    assert!(
        took < Duration::from_secs(45),
        "took {took:?}\n{}",
        world.all()
    );
    eprintln!("failed after {took:?} with {status}");
}
