//! `shim-role`: plays the role in `DISAGG_SERVING_TYPE` (GEN_n, CTX_n, DISAGG_SERVER,
//! BENCHMARK) with coordination files in `$jobWorkspace`. Initialises MPI first, as an MPI
//! singleton, like every TensorRT-LLM process (the package import does it): as a GEN/CTX task
//! it reaches its MPI world through the leader's proxy only, and if it were started with the
//! world's variables it would fail inside `MPI_Init` like the real server.

use std::process::ExitCode;

use rank_launch::role::{self, ROLE_VAR};
use shims::edge::{self, Fail};
use shims::roles::{self, Common};
use shims::say;

fn main() -> ExitCode {
    if std::env::args()
        .nth(1)
        .is_some_and(|a| a == "--help" || a == "-h")
    {
        print!("{}", HELP);
        return ExitCode::SUCCESS;
    }
    edge::finish(run())
}

const HELP: &str = "\
shim-role: stand-in for a TensorRT-LLM serving role (no arguments; configured by environment)

  DISAGG_SERVING_TYPE   GEN_<n> | CTX_<n> | DISAGG_SERVER | BENCHMARK (required)
  jobWorkspace          shared directory for coordination files (required)
  TRTLLM_PERF_RUN_TOKEN run token scoping the files (fallback RANK_LAUNCH_JOB_ID, then `local`)
  numCtxServers, numGenServers   server counts (DISAGG_SERVER)
  LAUNCH_GEN_CONFIG     launch YAML; benchmark.{concurrency_list,multi_round,input_length,output_length}
  SHIM_TIMEOUT          bound of every wait, seconds (default 120)
  SHIM_PROXY_TIMEOUT    bound of each request to the MPI leader, seconds (default 10)
  SHIM_ADVERTISE_HOST   host name to publish instead of this machine's
  SHIM_SLOW_AFTER       the router warns about a server that has not answered a forward for this
                        long, seconds (default 5): `warning: GEN_0 (host:port) has not answered
                        request <id> for <n> s`
  SHIM_HANG             <ROLE>[:<rank>]:<mode>, hang on purpose (see below)
  SHIM_HANG_LIMIT       bound of that hang, seconds (default 3600); then exit 1

Hangs (SHIM_HANG; rank none or 0 except for freeze; a bad value exits 2):
  GEN_<n>|CTX_<n>|DISAGG_SERVER:not-ready   never ready: no bind, no address record, no ready line
                        (a server still checks its MPI world, the router waits for the workers)
  GEN_<n>|CTX_<n>:wedged   ready, GET /health answers 200, POST /v1/completions never answers
  BENCHMARK:stall       completes N-1 of N requests, then waits without writing benchmark_status
  GEN_<n>|CTX_<n>:<rank>:freeze   that MPI worker (shim-worker) stops itself (SIGSTOP) after
                        its first task, until SIGCONT (SHIM_FAIL_RANK=<ROLE>:<rank> aborts it)
A hang starts with a stderr line `hanging on purpose (SHIM_HANG=<value>: <mode>) unix_us=<us>`;
at SHIM_HANG_LIMIT the hanging process fails (exit 1); SIGTERM ends it at once (a frozen worker
once it also gets SIGCONT).

Stdout: a server or the router that serves prints `INFO:     Uvicorn running on
http://<host:port> (Press CTRL+C to quit)`; the benchmark prints `progress: <done>/<total>
requests` after each request, then the result block.

Exit codes: 0 success, 1 failure, 2 bad input.
";

fn run() -> Result<(), Fail> {
    let value = std::env::var(ROLE_VAR).ok();
    let role = match role::parse(value.as_deref()) {
        Ok(Some(role)) => role,
        Ok(None) => {
            shims::log::set_prefix("shim-role");
            return Err(edge::bad_input(anyhow::anyhow!(
                "`{ROLE_VAR}` is not set: expected `GEN_<n>`, `CTX_<n>`, `DISAGG_SERVER` or `BENCHMARK`"
            )));
        }
        Err(e) => {
            shims::log::set_prefix("shim-role");
            return Err(edge::bad_input(e));
        }
    };
    shims::log::set_prefix(format!("shim-role {role} host={}", shims::log::host_name()));
    let universe = shims::import::init().map_err(|e| edge::failed(anyhow::anyhow!(e)))?;
    let classify = |e: roles::RoleError| {
        if e.is_bad_input() {
            edge::bad_input(e)
        } else {
            edge::failed(e)
        }
    };
    let common = Common::from_env(role).map_err(classify)?;
    say!(
        "starting; workspace `{}`, waits bounded by {:?}",
        common.ws.root().display(),
        common.timeout
    );
    roles::run(&common).map_err(classify)?;
    say!("done");
    drop(universe);
    Ok(())
}
