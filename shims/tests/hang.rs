//! Hangs on demand (`SHIM_HANG`) with real processes, and the outputs that make hangs
//! observable: the uvicorn ready line, the benchmark's progress lines, the router's warning
//! naming the server that does not answer.
//!
//! The MPI worlds are `mpirun -np 1 shim-leader : -np 1 shim-worker` (role GEN_0, proxy on a
//! loopback port) with the GEN_0 server as a separate `shim-role` process talking to the proxy,
//! as rank-launch would run it; the benchmark's router is a fake in this process.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Proc, children_named, command, line_with, mpirun, proc_stat, run};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;
use shims::coord::{self, Workspace};
use shims::http::{self, Handler, HttpError, Response};
use shims::proxy::{Addr, Client, Key, ProxyError};

const KEY: &str = "3f1c0d9e8b7a69584736251403f2e1d0c9b8a79685746352413021f0e9d8c7b6";
const TOKEN: &str = "hang-test";
const T: Duration = Duration::from_secs(10);
const UP: Duration = Duration::from_secs(60);

fn proxy_env(cmd: &mut Command, port: u16) -> &mut Command {
    cmd.env(
        "TLLM_SPAWN_PROXY_PROCESS_IPC_ADDR",
        format!("tcp://127.0.0.1:{port}"),
    )
    .env("TLLM_SPAWN_PROXY_PROCESS_IPC_HMAC_KEY", KEY)
    .env("tllm_mpi_size", "2")
    .env("DISAGG_SERVING_TYPE", "GEN_0")
}

/// A GEN_0 world of 2 ranks serving the proxy on `port`, up.
fn world(port: u16, env: &[(&str, &str)]) -> Proc {
    let mut cmd = mpirun(1);
    cmd.args(["shim-leader", ":", "-np", "1", "shim-worker"]);
    proxy_env(&mut cmd, port).envs(env.iter().copied());
    let world = Proc::spawn("GEN_0 world", &mut cmd);
    world.wait_for("MPI world of 2 rank(s) up", UP);
    world
}

/// Stops a world with the authenticated stop helper and waits for its clean end.
fn stop_world(port: u16, mut world: Proc) {
    let mut cmd = command(env!("CARGO_BIN_EXE_shim-leader"));
    cmd.args(["--action", "stop"]);
    proxy_env(&mut cmd, port);
    let (status, stop) = run("stop", &mut cmd, T);
    assert!(status.success(), "{}\n{}", stop.all(), world.all());
    let status = world.wait(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{}", world.all());
}

fn role(ws: &Path, role: &str, env: &[(&str, &str)]) -> Command {
    let mut cmd = command(env!("CARGO_BIN_EXE_shim-role"));
    cmd.env("DISAGG_SERVING_TYPE", role)
        .env("jobWorkspace", ws)
        .env("TRTLLM_PERF_RUN_TOKEN", TOKEN)
        .env("numCtxServers", "0")
        .env("numGenServers", "1")
        .env("SHIM_TIMEOUT", "60")
        .env("SHIM_ADVERTISE_HOST", "127.0.0.1")
        .envs(env.iter().copied());
    cmd
}

/// The GEN_0 server, the task of the world on `port`.
fn gen_server(ws: &Path, port: u16, env: &[(&str, &str)]) -> Proc {
    let mut cmd = role(ws, "GEN_0", env);
    proxy_env(&mut cmd, port);
    Proc::spawn("GEN_0", &mut cmd)
}

/// Waits for the ready line on stdout and returns the address in it, checking that it is the
/// published one.
fn ready_addr(proc: &Proc, ws: &Workspace, record: &str) -> String {
    const HEAD: &str = "INFO:     Uvicorn running on http://";
    proc.wait_for(HEAD, UP);
    let out = proc.stdout();
    let line = line_with(&out, HEAD).unwrap();
    let addr = line
        .strip_prefix(HEAD)
        .and_then(|rest| rest.strip_suffix(" (Press CTRL+C to quit)"))
        .unwrap_or_else(|| panic!("not uvicorn's line: {line:?}"));
    let published = ws.read(record).unwrap();
    assert_eq!(published.as_deref(), Some(addr), "{}", proc.all());
    addr.to_string()
}

fn unix_us_now() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros()
}

/// The hang line of `text`, checked: names the value and mode, and a recent `unix_us`.
fn hang_line(text: &str, value: &str, mode: &str) -> u128 {
    let head = format!("hanging on purpose (SHIM_HANG={value}: {mode})");
    let line = line_with(text, &head).unwrap_or_else(|| panic!("no `{head}` in:\n{text}"));
    let us: u128 = line
        .split_once("unix_us=")
        .and_then(|(_, rest)| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|digits| digits.parse().ok())
        .unwrap_or_else(|| panic!("no unix_us in {line:?}"));
    let now = unix_us_now();
    assert!(
        us <= now && now - us < 120_000_000,
        "unix_us={us}, now {now}"
    );
    us
}

fn release(ws: &Workspace) {
    ws.publish(coord::STATUS, "Done\n").unwrap();
}

fn workspace(tmp: &tempfile::TempDir) -> Workspace {
    Workspace::open(tmp.path(), TOKEN).unwrap()
}

#[test]
fn bad_values_exit_2_with_one_line_naming_the_variable() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        (
            "BENCHMARK",
            ("SHIM_HANG", "BENCHMARK:wedged"),
            "`SHIM_HANG` is `BENCHMARK:wedged`: expected `wedged` only for GEN_<n> or CTX_<n>",
        ),
        (
            // Not this process's role, but bad: every process that reads it fails.
            "BENCHMARK",
            ("SHIM_HANG", "GEN_0:freeze"),
            "`SHIM_HANG` is `GEN_0:freeze`: expected `freeze` with an MPI worker rank of 1 or more",
        ),
        (
            "DISAGG_SERVER",
            ("SHIM_HANG", "DISAGG_SERVER:hang"),
            "`SHIM_HANG` is `DISAGG_SERVER:hang`: expected `<ROLE>[:<rank>]:<mode>` with a mode",
        ),
        (
            "BENCHMARK",
            ("SHIM_HANG_LIMIT", "soon"),
            "`SHIM_HANG_LIMIT` is `soon`: expected a positive number of seconds",
        ),
        (
            "DISAGG_SERVER",
            ("SHIM_SLOW_AFTER", "0"),
            "`SHIM_SLOW_AFTER` is `0`: expected a positive number of seconds",
        ),
    ];
    for (who, var, message) in cases {
        let (status, proc) = run(message, &mut role(tmp.path(), who, &[var]), T);
        assert_eq!(status.code(), Some(2), "{message}: {}", proc.all());
        let err = proc.stderr();
        let lines: Vec<&str> = err.lines().filter(|l| l.contains(var.0)).collect();
        assert_eq!(lines.len(), 1, "{message}: {}", proc.all());
        assert!(lines[0].contains(message), "{message}: {}", proc.all());
    }
}

#[test]
fn a_not_ready_server_reaches_its_world_then_never_publishes_and_sigterm_ends_it() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = workspace(&tmp);
    let port = common::free_port();
    let world = world(port, &[]);
    let mut server = gen_server(tmp.path(), port, &[("SHIM_HANG", "GEN_0:not-ready")]);
    server.wait_for("hanging on purpose", UP);
    let err = server.stderr();
    let world_check = err
        .find("MPI world of 2 rank(s) reached through the leader")
        .unwrap_or_else(|| panic!("{}", server.all()));
    assert!(err.find("hanging on purpose").unwrap() > world_check);
    hang_line(&err, "GEN_0:not-ready", "not-ready");
    assert_eq!(ws.read("hostnames/GEN_0.addr").unwrap(), None);
    assert!(!server.stdout().contains("Uvicorn"), "{}", server.all());
    assert!(!err.contains("serving on"), "{}", server.all());

    // TERM is neither ignored nor blocked, and ends the hang at once.
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    for mask in ["SigIgn:", "SigBlk:"] {
        let bits = line_with(&status, mask).unwrap()[mask.len()..].trim();
        let bits = u64::from_str_radix(bits, 16).unwrap();
        assert_eq!(bits & (1 << (15 - 1)), 0, "TERM in {mask} {bits:x}");
    }
    let started = Instant::now();
    kill(Pid::from_raw(server.pid() as i32), Signal::SIGTERM).unwrap();
    let status = server.wait(T);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(15), "{}", server.all());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    stop_world(port, world);
}

#[test]
fn a_wedged_server_answers_health_but_never_a_completion() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = workspace(&tmp);
    let port = common::free_port();
    let world = world(port, &[]);
    let mut server = gen_server(tmp.path(), port, &[("SHIM_HANG", "GEN_0:wedged")]);
    let addr = ready_addr(&server, &ws, "hostnames/GEN_0.addr");
    server.wait_for("serving on 127.0.0.1:", T);
    let (status, body) = http::call_json(&addr, "GET", "/health", None, T).unwrap();
    assert_eq!((status, &body["role"]), (200, &json!("GEN_0")), "{body}");

    let request = json!({"id": 1, "input_length": 8, "output_length": 4});
    let wait = Duration::from_secs(3);
    let completion = {
        let addr = addr.clone();
        std::thread::spawn(move || {
            http::call_json(&addr, "POST", "/v1/completions", Some(&request), wait)
        })
    };
    // The handler is blocked once the hang line is out; /health still answers meanwhile.
    server.wait_for("hanging on purpose", T);
    hang_line(&server.stderr(), "GEN_0:wedged", "wedged");
    let started = Instant::now();
    let (status, _) = http::call_json(&addr, "GET", "/health", None, T).unwrap();
    assert_eq!(status, 200);
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(!completion.is_finished(), "{}", server.all());
    match completion.join().unwrap() {
        Err(HttpError::Timeout { .. }) => {}
        other => panic!("the completion was answered: {other:?}\n{}", server.all()),
    }
    let (status, _) = http::call_json(&addr, "GET", "/health", None, T).unwrap();
    assert_eq!(status, 200);

    // Released like any server, with a handler still blocked.
    release(&ws);
    let status = server.wait(T);
    assert!(status.success(), "{}", server.all());
    stop_world(port, world);
}

#[test]
fn the_router_names_the_server_that_has_not_answered() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = workspace(&tmp);
    let port = common::free_port();
    let world = world(port, &[]);
    let hang = [("SHIM_HANG", "GEN_0:wedged"), ("SHIM_SLOW_AFTER", "1")];
    let mut server = gen_server(tmp.path(), port, &hang);
    let gen_addr = ready_addr(&server, &ws, "hostnames/GEN_0.addr");
    let mut router = Proc::spawn("router", &mut role(tmp.path(), "DISAGG_SERVER", &hang));
    let addr = ready_addr(&router, &ws, coord::SERVER_ADDR);
    let (status, _) = http::call_json(&addr, "GET", "/health", None, T).unwrap();
    assert_eq!(status, 200, "{}", router.all());

    let post = |id: u64| {
        let addr = addr.clone();
        let request = json!({"id": id, "input_length": 8, "output_length": 4});
        std::thread::spawn(move || {
            http::call_json(&addr, "POST", "/v1/completions", Some(&request), T)
        })
    };
    let warning = |id| format!("warning: GEN_0 ({gen_addr}) has not answered request {id} for ");
    let sent = Instant::now();
    let first = post(42);
    // Within SHIM_SLOW_AFTER + 2 s.
    router.wait_for(
        &warning(42),
        Duration::from_secs(3).saturating_sub(sent.elapsed()),
    );
    server.wait_for("hanging on purpose", T);
    let line = line_with(&router.stderr(), &warning(42))
        .unwrap()
        .to_string();
    assert!(line.ends_with(" s"), "{line}");
    // Once per request: by the time a later request is warned about, the watchdog has looked
    // at the first one again without a second warning.
    let sent = Instant::now();
    let second = post(43);
    router.wait_for(
        &warning(43),
        Duration::from_secs(3).saturating_sub(sent.elapsed()),
    );
    let err = router.stderr();
    assert_eq!(err.matches(&warning(42)).count(), 1, "{}", router.all());
    assert_eq!(
        err.matches("has not answered").count(),
        2,
        "{}",
        router.all()
    );

    release(&ws);
    assert!(router.wait(T).success(), "{}", router.all());
    assert!(server.wait(T).success(), "{}", server.all());
    // The client sees an error or a 502, whichever ends first: never an answer.
    for client in [first, second] {
        let result = client.join().unwrap();
        assert!(!matches!(result, Ok((200, _))), "{result:?}");
    }
    stop_world(port, world);
}

/// A fake router: answers `/health` and every completion at once; counts the completions.
fn fake_router(
    ws: &Workspace,
) -> (
    Arc<AtomicUsize>,
    Arc<AtomicBool>,
    std::thread::JoinHandle<()>,
) {
    let server = http::Server::bind(IpAddr::V4(Ipv4Addr::LOCALHOST)).unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], server.port().unwrap()));
    let served = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let count = served.clone();
    let handler: Arc<Handler> =
        Arc::new(
            move |req: &http::Request| match (req.method.as_str(), req.path.as_str()) {
                ("GET", "/health") => Response::json(200, &json!({"status": "ok"})),
                ("POST", "/v1/completions") => {
                    let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
                    count.fetch_add(1, Ordering::SeqCst);
                    Response::json(200, &json!({"output_tokens": body["output_length"]}))
                }
                _ => Response::error(404, "no such path"),
            },
        );
    let stopped = stop.clone();
    let thread = std::thread::spawn(move || {
        server
            .serve::<()>(handler, || Ok(stopped.load(Ordering::SeqCst)))
            .unwrap();
    });
    ws.publish(coord::SERVER_ADDR, &addr.to_string()).unwrap();
    (served, stop, thread)
}

#[test]
fn a_stalled_benchmark_completes_all_but_its_last_request_then_goes_quiet() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = workspace(&tmp);
    let (served, stop, router) = fake_router(&ws);
    let config = tmp.path().join("config.yaml");
    std::fs::write(
        &config,
        "benchmark:\n  concurrency_list: 2\n  multi_round: 2\n  input_length: 8\n  output_length: 4\n",
    )
    .unwrap();
    let config = config.display().to_string();
    let env = [
        ("SHIM_HANG", "BENCHMARK:stall"),
        ("LAUNCH_GEN_CONFIG", config.as_str()),
    ];
    let mut bench = Proc::spawn("benchmark", &mut role(tmp.path(), "BENCHMARK", &env));
    bench.wait_for("progress: 3/4 requests", UP);
    bench.wait_for("hanging on purpose", T);
    hang_line(&bench.stderr(), "BENCHMARK:stall", "stall");
    let out = bench.stdout();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "progress: 1/4 requests",
            "progress: 2/4 requests",
            "progress: 3/4 requests"
        ],
        "{}",
        bench.all()
    );

    // Nothing more: no output, no last request, no status (a bounded negative check).
    if let Err(more) = bench.stdout_quiet_for(Duration::from_secs(2)) {
        panic!("the stalled benchmark printed {more:?}\n{}", bench.all());
    }
    assert_eq!(served.load(Ordering::SeqCst), 3);
    assert!(!ws.exists(coord::STATUS).unwrap());
    assert!(bench.running(), "{}", bench.all());

    // TERM ends it at once.
    let started = Instant::now();
    kill(Pid::from_raw(bench.pid() as i32), Signal::SIGTERM).unwrap();
    let status = bench.wait(T);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(15), "{}", bench.all());
    assert!(started.elapsed() < Duration::from_secs(3));
    stop.store(true, Ordering::SeqCst);
    router.join().unwrap();
}

#[test]
fn a_benchmark_without_a_hang_prints_progress_for_every_request() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = workspace(&tmp);
    let (served, stop, router) = fake_router(&ws);
    let (status, bench) = run("benchmark", &mut role(tmp.path(), "BENCHMARK", &[]), UP);
    assert!(status.success(), "{}", bench.all());
    let out = bench.stdout();
    let progress: Vec<&str> = out.lines().filter(|l| l.starts_with("progress:")).collect();
    let want: Vec<String> = (1..=16)
        .map(|n| format!("progress: {n}/16 requests"))
        .collect();
    assert_eq!(progress, want, "{}", bench.all());
    assert!(
        out.find("progress: 16/16").unwrap() < out.find("Serving Benchmark Result").unwrap(),
        "{out}"
    );
    assert_eq!(served.load(Ordering::SeqCst), 16);
    assert_eq!(ws.read(coord::STATUS).unwrap().as_deref(), Some("Done"));
    stop.store(true, Ordering::SeqCst);
    router.join().unwrap();
}

#[test]
fn a_not_ready_router_never_publishes_and_gives_up_at_the_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = workspace(&tmp);
    ws.publish("hostnames/GEN_0.addr", "127.0.0.1:9").unwrap();
    let env = [
        ("SHIM_HANG", "DISAGG_SERVER:not-ready"),
        ("SHIM_HANG_LIMIT", "1"),
    ];
    let (status, router) = run("router", &mut role(tmp.path(), "DISAGG_SERVER", &env), T);
    let ended = unix_us_now();
    assert_eq!(status.code(), Some(1), "{}", router.all());
    let err = router.stderr();
    let started = hang_line(&err, "DISAGG_SERVER:not-ready", "not-ready");
    assert!(ended - started >= 1_000_000, "{}", router.all());
    assert!(
        err.contains(
            "error: the hang on purpose (SHIM_HANG=DISAGG_SERVER:not-ready: not-ready) reached \
             SHIM_HANG_LIMIT=1 s; giving up"
        ),
        "{}",
        router.all()
    );
    assert!(
        err.contains("all 1 worker(s) published"),
        "{}",
        router.all()
    );
    assert_eq!(ws.read(coord::SERVER_ADDR).unwrap(), None);
    assert!(!router.stdout().contains("Uvicorn"), "{}", router.all());
}

/// The state letter of `pid` (`T` once stopped), waited for up to `limit`.
fn wait_state(pid: i32, want: char, limit: Duration) -> char {
    let deadline = Instant::now() + limit;
    loop {
        let state = proc_stat(pid).map_or('?', |(_, s, _)| s);
        if state == want || Instant::now() >= deadline {
            return state;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn worker_pid(world: &Proc) -> i32 {
    let workers = children_named(world.pid(), "shim-worker");
    assert_eq!(workers.len(), 1, "{}", world.all());
    workers[0]
}

#[test]
fn a_frozen_worker_stops_after_its_first_task_until_sigcont() {
    let port = common::free_port();
    let world = world(port, &[("SHIM_HANG", "GEN_0:1:freeze")]);
    let worker = worker_pid(&world);
    let addr = Addr::Tcp(SocketAddr::from(([127, 0, 0, 1], port)));
    let key = Key::from_hex(KEY).unwrap();
    let mut client = Client::connect(&addr, &key, T).unwrap();
    assert_eq!(client.allreduce(T).unwrap(), (1, 2), "{}", world.all());
    world.wait_for("hanging on purpose", T);
    hang_line(&world.stderr(), "GEN_0:1:freeze", "freeze");
    assert!(
        line_with(&world.stderr(), "hanging on purpose")
            .unwrap()
            .starts_with("[shim-worker GEN_0 rank=1 "),
        "{}",
        world.all()
    );
    assert_eq!(wait_state(worker, 'T', T), 'T', "{}", world.all());

    // The leader now waits in its next collective.
    let err = client.allreduce(Duration::from_millis(500)).unwrap_err();
    assert!(matches!(err, ProxyError::Timeout { .. }), "{err}");
    assert_eq!(wait_state(worker, 'T', Duration::ZERO), 'T');

    // SIGCONT: the collective completes and the world serves on.
    kill(Pid::from_raw(worker), Signal::SIGCONT).unwrap();
    world.wait_for("resumed by SIGCONT", T);
    drop(client);
    let mut client = Client::connect(&addr, &key, T).unwrap();
    assert_eq!(client.allreduce(T).unwrap(), (1, 2), "{}", world.all());
    drop(client);
    stop_world(port, world);
}

#[test]
fn a_frozen_worker_gives_up_at_the_limit() {
    let port = common::free_port();
    let mut world = world(
        port,
        &[("SHIM_HANG", "GEN_0:1:freeze"), ("SHIM_HANG_LIMIT", "1")],
    );
    let worker = worker_pid(&world);
    let addr = Addr::Tcp(SocketAddr::from(([127, 0, 0, 1], port)));
    let mut client = Client::connect(&addr, &Key::from_hex(KEY).unwrap(), T).unwrap();
    assert_eq!(client.allreduce(T).unwrap(), (1, 2), "{}", world.all());
    assert_eq!(wait_state(worker, 'T', T), 'T', "{}", world.all());
    let status = world.wait(Duration::from_secs(30));
    assert!(!status.success(), "{}", world.all());
    assert!(
        world.stderr().contains(
            "error: the hang on purpose (SHIM_HANG=GEN_0:1:freeze: freeze) reached \
             SHIM_HANG_LIMIT=1 s; giving up"
        ),
        "{}",
        world.all()
    );
}
