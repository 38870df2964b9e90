//! The role program: GEN/CTX servers, the DISAGG_SERVER router and the BENCHMARK client,
//! coordinating through [`crate::coord`] files (reference-flow §6 and §9.4).
//!
//! - **GEN_n / CTX_n** run as rank 0's task (MPI environment stripped; no MPI here): they reach
//!   their MPI world only through the leader's proxy, check that an allreduce over it equals
//!   `0 + 1 + … + (tllm_mpi_size - 1)`, serve HTTP on a kernel-chosen port, publish
//!   `hostnames/<ROLE>.addr`, and run one more allreduce per request so a dead rank fails the
//!   server (bounded by the proxy timeout) instead of hanging it.
//! - **DISAGG_SERVER** waits for exactly the expected records (`CTX_0..`, `GEN_0..`, in role
//!   index order: B15), serves, publishes `DISAGG_SERVER.addr`, routes ctx → gen round robin,
//!   and its `/health` checks every worker. It keeps the forwards in flight (server, address,
//!   the body's `id`, start) and a watchdog thread looks at them every second: a forward
//!   outstanding for longer than `SHIM_SLOW_AFTER` seconds (default 5) is logged once,
//!   `warning: GEN_0 (host:port) has not answered request 7 for 5 s`, so the router's log names
//!   the server that hangs, not the client that noticed.
//! - **BENCHMARK** waits for the router's record and health, sends `concurrency × multi_round`
//!   requests with `concurrency` in flight, prints `progress: <done>/<total> requests` on stdout
//!   after each one (success or failure; the stand-in for benchmark_serving's progress bar),
//!   prints the result block, and always writes `benchmark_status`, which releases every server.
//!
//! A server or the router that is serving and has published its address prints uvicorn's
//! start-up line on stdout, `INFO:     Uvicorn running on http://<host:port> (Press CTRL+C to
//! quit)` (trtllm-serve is a uvicorn app), so one readiness pattern fits the real server and
//! the stand-in.
//!
//! Every wait is bounded by `SHIM_TIMEOUT` (seconds, default 120); each HTTP request, the
//! router's forwards and the benchmark's requests alike, by the request timeout,
//! `min(SHIM_TIMEOUT, 30 s)`.
//!
//! Hangs on demand (`SHIM_HANG`, [`crate::hang`]):
//!
//! - `not-ready`: a server after its world check, the router after the workers' records: no
//!   bind, no address record, no ready line; it waits until `SHIM_HANG_LIMIT`, then fails.
//! - `wedged`: a server that answers `/health` but no completion. The router warns after
//!   `SHIM_SLOW_AFTER`; each benchmark request routed there waits the request timeout,
//!   `min(SHIM_TIMEOUT, 30 s)`, then fails (the benchmark's own timeout, or the router's 502
//!   naming the server: both sides use the same bound), so the benchmark's progress stalls
//!   that long per request instead of failing at once. The wedged server ends like any server
//!   (on `benchmark_status` or after `SHIM_TIMEOUT`), or fails `SHIM_HANG_LIMIT` after its first
//!   blocked request, whichever comes first.
//! - `stall`: the benchmark after N-1 of N requests: no last request, no result block, no
//!   `benchmark_status` until `SHIM_HANG_LIMIT`; then it fails and writes a `Failed:` status.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rank_launch::role::Role;
use serde_json::{Value, json};

use crate::bench::{self, BenchConfig};
use crate::coord::{self, CoordError, Workspace};
use crate::envs::{self, EnvError};
use crate::hang::{self, Hang, Mode};
use crate::http::{self, Handler, HttpError, Response};
use crate::proxy::{self, Client, Key, ProxyError};
use crate::say;

pub const TIMEOUT_VAR: &str = "SHIM_TIMEOUT";
pub const PROXY_TIMEOUT_VAR: &str = "SHIM_PROXY_TIMEOUT";
/// Host name published in address records instead of this machine's name.
pub const ADVERTISE_VAR: &str = "SHIM_ADVERTISE_HOST";
pub const NUM_CTX_VAR: &str = "numCtxServers";
pub const NUM_GEN_VAR: &str = "numGenServers";
/// Seconds after which the router warns about a server that has not answered a forward.
pub const SLOW_AFTER_VAR: &str = "SHIM_SLOW_AFTER";
/// How often the router's watchdog looks at the forwards in flight.
pub const WATCH_EVERY: Duration = Duration::from_secs(1);
/// The path every server and the router answer.
pub const COMPLETIONS: &str = "/v1/completions";

#[derive(Debug, thiserror::Error)]
pub enum RoleError {
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error(transparent)]
    Coord(#[from] CoordError),
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error(transparent)]
    Config(#[from] bench::ConfigError),
    #[error("{0}")]
    Failed(String),
}

impl RoleError {
    /// Bad input (exit 2) rather than a run-time failure.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            RoleError::Env(_)
                | RoleError::Config(_)
                | RoleError::Proxy(
                    ProxyError::MissingVar { .. }
                        | ProxyError::BadKey { .. }
                        | ProxyError::BadAddr { .. }
                )
                | RoleError::Coord(CoordError::NoWorkspace(_))
        )
    }
}

/// What every role needs.
#[derive(Debug, Clone)]
pub struct Common {
    pub role: Role,
    pub ws: Workspace,
    /// Bound of every wait.
    pub timeout: Duration,
    /// `host` of the published `host:port` records.
    pub host: String,
    /// The hang this process plays (`SHIM_HANG`), if any.
    pub hang: Option<Hang>,
}

impl Common {
    /// Reads `jobWorkspace`, the run token, `SHIM_TIMEOUT`, the advertised host and
    /// `SHIM_HANG` / `SHIM_HANG_LIMIT`.
    pub fn from_env(role: Role) -> Result<Common, RoleError> {
        let root = envs::required(
            coord::WORKSPACE_VAR,
            "the shared job workspace directory for the coordination files",
        )?;
        let token = coord::run_token(
            envs::get(coord::TOKEN_VAR).as_deref(),
            envs::get(coord::JOB_ID_VAR).as_deref(),
        );
        let ws = Workspace::open(&PathBuf::from(root), &token)?;
        let secs: f64 = envs::parse_or(TIMEOUT_VAR, 120.0, "a number of seconds")?;
        if !(secs.is_finite() && secs > 0.0 && secs < 1e7) {
            return Err(EnvError::Invalid {
                var: TIMEOUT_VAR,
                value: secs.to_string(),
                expected: "a positive number of seconds",
            }
            .into());
        }
        let host = envs::get(ADVERTISE_VAR)
            .filter(|h| !h.trim().is_empty())
            .unwrap_or_else(crate::log::host_name);
        // The server task, the router and the benchmark are "rank 0" of `SHIM_HANG`.
        let hang = hang::from_env(Some(&role.to_string()), 0)?;
        Ok(Common {
            role,
            ws,
            timeout: Duration::from_secs_f64(secs),
            host,
            hang,
        })
    }

    /// The hang this process plays, if it is `mode`.
    fn hang(&self, mode: Mode) -> Option<&Hang> {
        self.hang.as_ref().filter(|h| h.mode == mode)
    }

    /// Per-request timeout of HTTP calls: the router's forwards and the benchmark's requests.
    /// Behind a wedged server a request fails only after this long.
    fn request_timeout(&self) -> Duration {
        self.timeout.min(Duration::from_secs(30))
    }
}

/// Binds every interface (other nodes must reach the server) on a kernel-chosen port and
/// publishes `host:port` under `record`.
fn bind_and_publish(common: &Common, record: &str) -> Result<(http::Server, String), RoleError> {
    let server = http::Server::bind(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
        .map_err(|e| RoleError::Failed(format!("failed to bind the HTTP server: {e}")))?;
    let port = server
        .port()
        .map_err(|e| RoleError::Failed(format!("failed to read the HTTP port: {e}")))?;
    let addr = format!("{}:{port}", common.host);
    let path = common.ws.publish(record, &addr)?;
    say!("serving on {addr}, published `{}`", path.display());
    let mut out = std::io::stdout().lock();
    // Best effort, like any log line: a closed stdout must not fail the server.
    let _ = writeln!(out, "{}", ready_line(&addr)).and_then(|()| out.flush());
    Ok((server, addr))
}

/// What uvicorn prints once it serves (trtllm-serve is a uvicorn app): the readiness line of
/// the real server and of the stand-ins.
pub fn ready_line(addr: &str) -> String {
    format!("INFO:     Uvicorn running on http://{addr} (Press CTRL+C to quit)")
}

/// The stop condition of the servers: `benchmark_status` appeared (stop), a failure was
/// recorded, or the bound ran out.
fn until_released<'a>(
    common: &'a Common,
    failure: &'a Mutex<Option<String>>,
) -> impl FnMut() -> Result<bool, RoleError> + 'a {
    let start = Instant::now();
    move || {
        if let Some(why) = failure.lock().map(|f| f.clone()).unwrap_or(None) {
            return Err(RoleError::Failed(why));
        }
        if common.ws.exists(coord::STATUS)? {
            return Ok(true);
        }
        if start.elapsed() >= common.timeout {
            return Err(CoordError::Timeout {
                what: format!("`{}`", common.ws.path(coord::STATUS).display()),
                after: common.timeout,
            }
            .into());
        }
        Ok(false)
    }
}

fn log_release(common: &Common) {
    let status = common
        .ws
        .read(coord::STATUS)
        .ok()
        .flatten()
        .unwrap_or_default();
    say!("released by `{}`: {status}", coord::STATUS);
}

/// FNV-1a over `n` steps: the stand-in's "model".
fn digest(seed: u64, n: u32) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for i in 0..u64::from(n) {
        h ^= i;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn body_u32(body: &Value, key: &str) -> Result<u32, String> {
    body.get(key)
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| format!("`{key}` must be a non-negative integer"))
}

/// `SHIM_HANG=…:wedged`: every completion blocks from the first one on.
struct Wedge {
    hang: Hang,
    /// When the first completion blocked (the hang started).
    since: OnceLock<Instant>,
}

struct ServerState {
    name: String,
    is_gen: bool,
    client: Mutex<Client>,
    world_size: u32,
    proxy_timeout: Duration,
    failure: Mutex<Option<String>>,
    served: AtomicU64,
    wedge: Option<Wedge>,
}

impl ServerState {
    fn fail(&self, why: String) {
        say!("{why}");
        if let Ok(mut slot) = self.failure.lock() {
            slot.get_or_insert(why);
        }
    }

    fn failed(&self) -> bool {
        self.failure.lock().map_or(true, |f| f.is_some())
    }

    /// One allreduce through the leader; a wrong sum or an error fails the server.
    fn world_sum(&self) -> Result<i64, String> {
        let result = match self.client.lock() {
            Ok(mut client) => client.allreduce(self.proxy_timeout),
            Err(_) => return Err("the proxy client is poisoned".into()),
        };
        let expected = proxy::expected_rank_sum(self.world_size);
        match result {
            Ok((sum, _)) if sum == expected => Ok(sum),
            Ok((sum, n)) => {
                let why = format!(
                    "allreduce through the leader gave {sum} over {n} rank(s); expected {expected}"
                );
                self.fail(why.clone());
                Err(why)
            }
            Err(e) => {
                let why = format!("the MPI world stopped answering: {e}");
                self.fail(why.clone());
                Err(why)
            }
        }
    }

    fn handle(&self, req: &http::Request) -> Response {
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/health") if self.failed() => Response::error(503, "MPI world failed"),
            ("GET", "/health") => Response::json(200, &json!({"status": "ok", "role": self.name})),
            ("POST", COMPLETIONS) => self.complete(&req.body),
            (_, "/health" | COMPLETIONS) => Response::error(405, "method not allowed"),
            _ => Response::error(404, "no such path"),
        }
    }

    /// Blocks a completion (each connection has its own thread, so `/health` still answers)
    /// until the hang limit, which then fails the server.
    fn wedged(&self, wedge: &Wedge) -> Response {
        let since = *wedge.since.get_or_init(|| {
            wedge
                .hang
                .announce("POST /v1/completions is never answered; GET /health still is")
        });
        let why = wedge.hang.hold(since);
        self.fail(why.clone());
        Response::error(503, why)
    }

    fn complete(&self, body: &[u8]) -> Response {
        if let Some(wedge) = &self.wedge {
            return self.wedged(wedge);
        }
        if self.failed() {
            return Response::error(503, "MPI world failed");
        }
        let body: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => return Response::error(400, format!("the body is not JSON: {e}")),
        };
        let (input, output) = match (
            body_u32(&body, "input_length"),
            body_u32(&body, "output_length"),
        ) {
            (Ok(i), Ok(o)) => (i, o),
            (Err(e), _) | (_, Err(e)) => return Response::error(400, e),
        };
        let sum = match self.world_sum() {
            Ok(sum) => sum,
            Err(why) => return Response::error(503, why),
        };
        self.served.fetch_add(1, Ordering::Relaxed);
        if self.is_gen {
            let kv = body.get("kv_digest").and_then(Value::as_u64).unwrap_or(0);
            Response::json(
                200,
                &json!({"role": self.name, "output_tokens": output,
                        "digest": digest(kv, output), "world_sum": sum}),
            )
        } else {
            Response::json(
                200,
                &json!({"role": self.name, "input_length": input,
                        "kv_digest": digest(u64::from(input), input), "world_sum": sum}),
            )
        }
    }
}

/// GEN_n / CTX_n.
pub fn run_server(common: &Common) -> Result<(), RoleError> {
    let key = Key::from_env()?;
    let addr = proxy::addr_from_env()?;
    let size_text = envs::required(
        proxy::SIZE_VAR,
        "rank-launch exports the MPI world size for the task",
    )?;
    let world_size: u32 =
        envs::parse_value(proxy::SIZE_VAR, &size_text, "the MPI world size (>= 1)")?;
    let proxy_secs: f64 = envs::parse_or(PROXY_TIMEOUT_VAR, 10.0, "a positive number of seconds")?;
    let proxy_timeout = Duration::from_secs_f64(proxy_secs.clamp(0.1, 3600.0));

    let started = Instant::now();
    let mut client = Client::connect(&addr, &key, common.timeout.min(Duration::from_secs(60)))?;
    // The first task waits for the whole world to come up (MPI_Init on every rank): a wait
    // like the others, bounded by SHIM_TIMEOUT; later tasks get the proxy timeout.
    let (sum, n) = client.allreduce(common.timeout)?;
    let expected = proxy::expected_rank_sum(world_size);
    if sum != expected || n != world_size {
        return Err(RoleError::Failed(format!(
            "allreduce through the leader gave {sum} over {n} rank(s); expected {expected} for \
             `{}`={world_size} (is every rank in one MPI world?)",
            proxy::SIZE_VAR
        )));
    }
    say!(
        "MPI world of {world_size} rank(s) reached through the leader: allreduce = {sum} ({} ms)",
        started.elapsed().as_millis()
    );
    if let Some(hang) = common.hang(Mode::NotReady) {
        let since = hang.announce(
            "the MPI world is up, but this server never binds, publishes its address or prints \
             the ready line",
        );
        return Err(RoleError::Failed(hang.hold(since)));
    }

    let state = Arc::new(ServerState {
        name: common.role.to_string(),
        is_gen: matches!(common.role, Role::Gen(_)),
        client: Mutex::new(client),
        world_size,
        proxy_timeout,
        failure: Mutex::new(None),
        served: AtomicU64::new(0),
        wedge: common.hang(Mode::Wedged).map(|hang| Wedge {
            hang: hang.clone(),
            since: OnceLock::new(),
        }),
    });
    let (server, _) = bind_and_publish(common, &Workspace::addr_record(&common.role.to_string()))?;
    let handler_state = state.clone();
    let handler: Arc<Handler> = Arc::new(move |req| handler_state.handle(req));
    server.serve(handler, until_released(common, &state.failure))?;
    log_release(common);
    say!("served {} request(s)", state.served.load(Ordering::Relaxed));
    Ok(())
}

fn parse_count(var: &'static str) -> Result<usize, RoleError> {
    let text = envs::required(var, "the launch script exports the server counts")?;
    Ok(envs::parse_value(var, &text, "a count (0 or more)")?)
}

fn check_addr(record: &str, text: &str) -> Result<String, RoleError> {
    match text.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(text.to_string())
        }
        _ => Err(RoleError::Failed(format!(
            "`{record}` holds `{text}`: expected `host:port`"
        ))),
    }
}

/// A forward the router waits on.
#[derive(Debug, Clone)]
struct InFlight {
    /// `CTX_0`, `GEN_1`, …
    server: String,
    addr: String,
    /// The body's `id` (else `router-<n>`).
    request: String,
    started: Instant,
    warned: bool,
}

/// The request id a warning names: the body's `id` if it has one.
fn request_id(body: &Value, seq: u64) -> String {
    match body.get("id") {
        Some(Value::String(s)) => s.escape_debug().to_string(),
        Some(v) if !v.is_null() => v.to_string(),
        _ => format!("router-{seq}"),
    }
}

/// The warnings due: one for each forward outstanding for longer than `slow_after` that has
/// not been warned about yet (in the order the forwards started).
fn overdue(
    inflight: &mut BTreeMap<u64, InFlight>,
    now: Instant,
    slow_after: Duration,
) -> Vec<String> {
    let mut lines = Vec::new();
    for f in inflight.values_mut() {
        let waited = now.saturating_duration_since(f.started);
        if !f.warned && waited > slow_after {
            f.warned = true;
            lines.push(format!(
                "warning: {} ({}) has not answered request {} for {} s",
                f.server,
                f.addr,
                f.request,
                waited.as_secs()
            ));
        }
    }
    lines
}

struct Router {
    ctx: Vec<(String, String)>,
    gen_servers: Vec<(String, String)>,
    next_ctx: AtomicUsize,
    next_gen: AtomicUsize,
    timeout: Duration,
    /// The forwards in flight, by sequence number.
    inflight: Mutex<BTreeMap<u64, InFlight>>,
    next_forward: AtomicU64,
    slow_after: Duration,
}

impl Router {
    fn handle(&self, req: &http::Request) -> Response {
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/health") => self.health(),
            ("POST", COMPLETIONS) => self.route(&req.body),
            (_, "/health" | COMPLETIONS) => Response::error(405, "method not allowed"),
            _ => Response::error(404, "no such path"),
        }
    }

    fn health(&self) -> Response {
        let t = self.timeout.min(Duration::from_secs(2));
        let unhealthy: Vec<String> = self
            .ctx
            .iter()
            .chain(&self.gen_servers)
            .filter(|(_, addr)| {
                !matches!(http::call(addr, "GET", "/health", None, t), Ok((200, _)))
            })
            .map(|(name, addr)| format!("{name} ({addr})"))
            .collect();
        if unhealthy.is_empty() {
            let n = self.ctx.len() + self.gen_servers.len();
            Response::json(200, &json!({"status": "ok", "workers": n}))
        } else {
            Response::json(503, &json!({"status": "unhealthy", "unhealthy": unhealthy}))
        }
    }

    /// The watchdog: every [`WATCH_EVERY`] logs the forwards that became overdue, until
    /// `stop` is dropped (the router stopped).
    fn watch(&self, stop: &Receiver<()>) {
        while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(WATCH_EVERY) {
            let lines = match self.inflight.lock() {
                Ok(mut inflight) => overdue(&mut inflight, Instant::now(), self.slow_after),
                Err(_) => return,
            };
            for line in lines {
                say!("{line}");
            }
        }
    }

    fn forward(&self, (name, addr): &(String, String), body: &Value) -> Result<Value, String> {
        let seq = self.next_forward.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut inflight) = self.inflight.lock() {
            let f = InFlight {
                server: name.clone(),
                addr: addr.clone(),
                request: request_id(body, seq),
                started: Instant::now(),
                warned: false,
            };
            inflight.insert(seq, f);
        }
        let result = http::call_json(addr, "POST", COMPLETIONS, Some(body), self.timeout);
        if let Ok(mut inflight) = self.inflight.lock() {
            inflight.remove(&seq);
        }
        match result {
            Ok((200, reply)) => Ok(reply),
            Ok((status, reply)) => Err(format!("{name} ({addr}) answered {status}: {reply}")),
            Err(e) => Err(format!("{name}: {e}")),
        }
    }

    fn route(&self, body: &[u8]) -> Response {
        let mut body: Value = match serde_json::from_slice(body) {
            Ok(v @ Value::Object(_)) => v,
            _ => return Response::error(400, "the body must be a JSON object"),
        };
        let mut ctx_name = Value::Null;
        if !self.ctx.is_empty() {
            let ctx = &self.ctx[self.next_ctx.fetch_add(1, Ordering::Relaxed) % self.ctx.len()];
            match self.forward(ctx, &body) {
                Ok(reply) => body["kv_digest"] = reply["kv_digest"].clone(),
                Err(why) => return Response::error(502, why),
            }
            ctx_name = json!(ctx.0);
        }
        let g = self.next_gen.fetch_add(1, Ordering::Relaxed) % self.gen_servers.len();
        let gen_server = &self.gen_servers[g];
        match self.forward(gen_server, &body) {
            Ok(mut reply) => {
                reply["ctx"] = ctx_name;
                reply["gen"] = json!(gen_server.0);
                Response::json(200, &reply)
            }
            Err(why) => Response::error(502, why),
        }
    }
}

/// Parses `SHIM_SLOW_AFTER` (default 5 s).
fn slow_after() -> Result<Duration, RoleError> {
    const EXPECTED: &str = "a positive number of seconds (default 5)";
    let Some(text) = envs::get(SLOW_AFTER_VAR).filter(|t| !t.trim().is_empty()) else {
        return Ok(Duration::from_secs(5));
    };
    let secs: f64 = envs::parse_value(SLOW_AFTER_VAR, &text, EXPECTED)?;
    if !(secs.is_finite() && secs > 0.0 && secs < 1e7) {
        return Err(EnvError::Invalid {
            var: SLOW_AFTER_VAR,
            value: text,
            expected: EXPECTED,
        }
        .into());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// DISAGG_SERVER.
pub fn run_router(common: &Common) -> Result<(), RoleError> {
    let slow_after = slow_after()?;
    let num_ctx = parse_count(NUM_CTX_VAR)?;
    let num_gen = parse_count(NUM_GEN_VAR)?;
    if num_gen == 0 {
        return Err(EnvError::Invalid {
            var: NUM_GEN_VAR,
            value: "0".into(),
            expected: "at least one generation server",
        }
        .into());
    }
    let names: Vec<String> = (0..num_ctx)
        .map(|i| format!("CTX_{i}"))
        .chain((0..num_gen).map(|i| format!("GEN_{i}")))
        .collect();
    let records: Vec<String> = names.iter().map(|n| Workspace::addr_record(n)).collect();
    say!("waiting for {} worker address record(s)", records.len());
    let started = Instant::now();
    let texts = common.ws.wait_for_all(&records, common.timeout)?;
    let mut workers = Vec::with_capacity(names.len());
    for ((name, record), text) in names.into_iter().zip(&records).zip(texts) {
        let addr = check_addr(&common.ws.path(record).display().to_string(), &text)?;
        workers.push((name, addr));
    }
    say!(
        "all {} worker(s) published in {} ms: {}",
        workers.len(),
        started.elapsed().as_millis(),
        workers
            .iter()
            .map(|(n, a)| format!("{n}={a}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    if let Some(hang) = common.hang(Mode::NotReady) {
        let since = hang.announce(
            "every worker published, but the router never binds, publishes its address or \
             prints the ready line",
        );
        return Err(RoleError::Failed(hang.hold(since)));
    }
    let gen_servers = workers.split_off(num_ctx);
    let router = Arc::new(Router {
        ctx: workers,
        gen_servers,
        next_ctx: AtomicUsize::new(0),
        next_gen: AtomicUsize::new(0),
        timeout: common.request_timeout(),
        inflight: Mutex::new(BTreeMap::new()),
        next_forward: AtomicU64::new(0),
        slow_after,
    });
    let (server, _) = bind_and_publish(common, coord::SERVER_ADDR)?;
    let (stop_watchdog, stopped) = mpsc::channel::<()>();
    let watched = router.clone();
    let watchdog = std::thread::spawn(move || watched.watch(&stopped));
    let handler: Arc<Handler> = Arc::new(move |req| router.handle(req));
    let no_failure = Mutex::new(None);
    let served = server.serve(handler, until_released(common, &no_failure));
    drop(stop_watchdog);
    let _ = watchdog.join();
    served?;
    log_release(common);
    Ok(())
}

/// What the benchmark measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub config: BenchConfig,
    pub ok: usize,
    pub failed: usize,
    pub first_error: Option<String>,
    pub duration: Duration,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub latency: bench::Latency,
}

impl Report {
    /// The result block, in `benchmark_serving`'s words where the reference parses them.
    pub fn render(&self) -> String {
        let secs = self.duration.as_secs_f64().max(1e-9);
        let line = |label: &str, value: String| format!("{label:<40}{value}\n");
        let mut out = String::from("============ Serving Benchmark Result ============\n");
        out += &line("Successful requests:", self.ok.to_string());
        out += &line("Failed requests:", self.failed.to_string());
        out += &line(
            "Maximum request concurrency:",
            self.config.concurrency.to_string(),
        );
        out += &line("Benchmark duration (s):", format!("{secs:.2}"));
        out += &line("Total input tokens:", self.input_tokens.to_string());
        out += &line("Total generated tokens:", self.output_tokens.to_string());
        out += &line(
            "Request throughput (req/s):",
            format!("{:.2}", self.ok as f64 / secs),
        );
        out += &line(
            "Output token throughput (tok/s):",
            format!("{:.2}", self.output_tokens as f64 / secs),
        );
        out += &line("Mean E2EL (ms):", format!("{:.2}", self.latency.mean_ms));
        out += &line(
            "Median E2EL (ms):",
            format!("{:.2}", self.latency.median_ms),
        );
        out += &line("P99 E2EL (ms):", format!("{:.2}", self.latency.p99_ms));
        out += &line(
            "E2E latency mean/median/p99 (ms):",
            format!(
                "{:.2} / {:.2} / {:.2}",
                self.latency.mean_ms, self.latency.median_ms, self.latency.p99_ms
            ),
        );
        out += "==================================================\n";
        out
    }
}

fn wait_healthy(addr: &str, common: &Common, deadline: Instant) -> Result<(), RoleError> {
    let mut last = String::from("no answer yet");
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(RoleError::Failed(format!(
                "the router at {addr} did not become healthy within {:?} (last: {last})",
                common.timeout
            )));
        }
        match http::call(
            addr,
            "GET",
            "/health",
            None,
            left.min(Duration::from_secs(5)),
        ) {
            Ok((200, _)) => return Ok(()),
            Ok((status, body)) => {
                last = format!("{status} {}", String::from_utf8_lossy(&body));
            }
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100).min(left));
    }
}

/// Prints `progress: <done>/<total> requests` on stdout, flushed (a supervisor reads output
/// growth as progress). The count is taken under stdout's lock, so the lines come in order.
fn print_progress(done: &AtomicUsize, total: usize) {
    let mut out = std::io::stdout().lock();
    let n = done.fetch_add(1, Ordering::Relaxed) + 1;
    let _ = writeln!(out, "progress: {n}/{total} requests").and_then(|()| out.flush());
}

/// Sends the first `send` of the config's requests (all of them but for a stall), printing
/// progress out of all of them; never fails as a whole: failures are counted in the report.
pub fn run_load(addr: &str, config: BenchConfig, timeout: Duration, send: usize) -> Report {
    struct Sample {
        latency_ms: Vec<f64>,
        output_tokens: u64,
        failed: usize,
        first_error: Option<String>,
    }
    let total = config.requests();
    let send = send.min(total);
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let started = Instant::now();
    let samples: Vec<Sample> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..config.concurrency)
            .map(|_| {
                scope.spawn(|| {
                    let mut s = Sample {
                        latency_ms: Vec::new(),
                        output_tokens: 0,
                        failed: 0,
                        first_error: None,
                    };
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= send {
                            return s;
                        }
                        let body = json!({"id": i, "input_length": config.input_length,
                                          "output_length": config.output_length});
                        let t0 = Instant::now();
                        let result =
                            http::call_json(addr, "POST", COMPLETIONS, Some(&body), timeout);
                        let ms = t0.elapsed().as_secs_f64() * 1e3;
                        let error = match result {
                            Ok((200, reply))
                                if reply["output_tokens"].as_u64()
                                    == Some(u64::from(config.output_length)) =>
                            {
                                s.latency_ms.push(ms);
                                s.output_tokens += u64::from(config.output_length);
                                None
                            }
                            Ok((status, reply)) => Some(format!("request {i}: {status} {reply}")),
                            Err(e) => Some(format!("request {i}: {e}")),
                        };
                        if let Some(e) = error {
                            s.failed += 1;
                            s.first_error.get_or_insert(e);
                        }
                        print_progress(&done, total);
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join().unwrap_or(Sample {
                    latency_ms: Vec::new(),
                    output_tokens: 0,
                    failed: 0,
                    first_error: Some("a client thread panicked".into()),
                })
            })
            .collect()
    });
    let duration = started.elapsed();
    let latencies: Vec<f64> = samples
        .iter()
        .flat_map(|s| s.latency_ms.iter().copied())
        .collect();
    let ok = latencies.len();
    Report {
        config,
        ok,
        failed: send - ok,
        first_error: samples.iter().find_map(|s| s.first_error.clone()),
        duration,
        input_tokens: ok as u64 * u64::from(config.input_length),
        output_tokens: samples.iter().map(|s| s.output_tokens).sum(),
        latency: bench::latency(&latencies),
    }
}

/// BENCHMARK. `benchmark_status` is written whatever happens, so the servers are released.
pub fn run_benchmark(common: &Common) -> Result<(), RoleError> {
    let result = benchmark(common);
    let status = match &result {
        Ok(()) => "Done".to_string(),
        Err(e) => format!("Failed: {e}"),
    };
    match common.ws.publish(coord::STATUS, &format!("{status}\n")) {
        Ok(path) => say!("wrote `{}`: {status}", path.display()),
        Err(e) => {
            say!("failed to write the status file: {e}");
            return result.and(Err(e.into()));
        }
    }
    result
}

fn benchmark(common: &Common) -> Result<(), RoleError> {
    let config = match envs::get(bench::CONFIG_VAR).filter(|p| !p.trim().is_empty()) {
        Some(path) => bench::load_config(&PathBuf::from(path))?,
        None => BenchConfig::default(),
    };
    if config.requested_concurrency > config.concurrency {
        say!(
            "concurrency {} capped at {} for the stand-in",
            config.requested_concurrency,
            config.concurrency
        );
    }
    let deadline = Instant::now() + common.timeout;
    let addr = common.ws.wait_for(coord::SERVER_ADDR, common.timeout)?;
    let addr = check_addr(coord::SERVER_ADDR, &addr)?;
    wait_healthy(&addr, common, deadline)?;
    say!(
        "router {addr} healthy; sending {} request(s), {} in flight",
        config.requests(),
        config.concurrency
    );
    let total = config.requests();
    let stall = common.hang(Mode::Stall);
    let send = if stall.is_some() {
        total.saturating_sub(1)
    } else {
        total
    };
    let report = run_load(&addr, config, common.request_timeout(), send);
    if let Some(hang) = stall {
        let since = hang.announce(&format!(
            "{} of {total} request(s) done ({} failed); never sending the last one nor writing \
             `{}`",
            report.ok + report.failed,
            report.failed,
            coord::STATUS
        ));
        return Err(RoleError::Failed(hang.hold(since)));
    }
    print!("{}", report.render());
    if report.failed > 0 {
        return Err(RoleError::Failed(format!(
            "{} of {} request(s) failed (first: {})",
            report.failed,
            config.requests(),
            report.first_error.as_deref().unwrap_or("?")
        )));
    }
    Ok(())
}

/// Runs the role in `common`.
pub fn run(common: &Common) -> Result<(), RoleError> {
    match common.role {
        Role::Gen(_) | Role::Ctx(_) => run_server(common),
        Role::DisaggServer => run_router(common),
        Role::Benchmark => run_benchmark(common),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked() {
        assert!(check_addr("f", "node1:8000").is_ok());
        assert!(check_addr("f", "[::1]:8000").is_ok());
        for bad in ["node1", ":80", "node1:0", "node1:x", ""] {
            let err = check_addr("hostnames/GEN_0.addr", bad)
                .unwrap_err()
                .to_string();
            assert!(err.contains("hostnames/GEN_0.addr"), "{err}");
        }
    }

    #[test]
    fn report_block_has_the_parsed_labels() {
        let report = Report {
            config: BenchConfig::default(),
            ok: 16,
            failed: 0,
            first_error: None,
            duration: Duration::from_secs(2),
            input_tokens: 1024,
            output_tokens: 256,
            latency: bench::latency(&[1.0, 2.0, 3.0]),
        };
        let text = report.render();
        for (label, value) in [
            ("Request throughput (req/s):", "8.00"),
            ("Output token throughput (tok/s):", "128.00"),
            ("Failed requests:", "0"),
            ("Median E2EL (ms):", "2.00"),
            ("P99 E2EL (ms):", "3.00"),
        ] {
            let line = format!("\n{label:<40}{value}\n");
            assert!(text.contains(&line), "{line}\n{text}");
        }
    }

    #[test]
    fn overdue_forwards_are_warned_about_once_each() {
        let t0 = Instant::now();
        let forward = |server: &str, request: String, started| InFlight {
            server: server.into(),
            addr: "127.0.0.1:8000".into(),
            request,
            started,
            warned: false,
        };
        let mut inflight = BTreeMap::new();
        inflight.insert(0, forward("CTX_0", request_id(&json!({"id": 7}), 0), t0));
        inflight.insert(
            1,
            forward("GEN_1", request_id(&json!({"id": "a\nb"}), 1), t0),
        );
        inflight.insert(
            2,
            forward(
                "GEN_0",
                request_id(&json!({}), 2),
                t0 + Duration::from_secs(4),
            ),
        );
        let slow = Duration::from_secs(5);
        assert!(overdue(&mut inflight, t0 + slow, slow).is_empty());
        assert_eq!(
            overdue(&mut inflight, t0 + Duration::from_millis(6200), slow),
            [
                "warning: CTX_0 (127.0.0.1:8000) has not answered request 7 for 6 s",
                "warning: GEN_1 (127.0.0.1:8000) has not answered request a\\nb for 6 s",
            ]
        );
        assert_eq!(
            overdue(&mut inflight, t0 + Duration::from_secs(10), slow),
            ["warning: GEN_0 (127.0.0.1:8000) has not answered request router-2 for 6 s"]
        );
        assert!(overdue(&mut inflight, t0 + Duration::from_secs(60), slow).is_empty());
    }

    #[test]
    fn the_ready_line_is_uvicorns() {
        assert_eq!(
            ready_line("node7:41234"),
            "INFO:     Uvicorn running on http://node7:41234 (Press CTRL+C to quit)"
        );
    }

    #[test]
    fn digests_differ() {
        assert_ne!(digest(1, 8), digest(2, 8));
        assert_ne!(digest(1, 8), digest(1, 9));
    }
}
