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
