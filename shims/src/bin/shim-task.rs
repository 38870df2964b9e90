//! `shim-task`: the task of MPI rank 0 in its simplest form: an LLM API client that reaches
//! its MPI world through the leader's proxy. Stand-in for a `trtllm-llmapi-launch` task (a
//! pytest, a script using `tensorrt_llm.LLM`).
//!
//! Like the real task it initialises MPI first (the package import), as a singleton: started
//! with the launcher's MPI environment it fails inside `MPI_Init`. Then it connects to the
//! proxy with the key, runs `SHIM_TASK_TASKS` allreduces on every rank (checking the world's
//! size against `tllm_mpi_size`), waits `SHIM_TASK_SECONDS`, and exits with `SHIM_TASK_EXIT`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::anyhow;
use shims::edge::{self, Fail};
use shims::proxy::{self, Client, Key};
use shims::{envs, say};

const HELP: &str = "\
shim-task: stand-in for the task beside the MPI leader on rank 0 (a client of the proxy)

  SHIM_TASK_TASKS     allreduces to run through the leader (default 1; 0: do not connect)
  SHIM_TASK_SECONDS   time to wait after them (default 0)
  SHIM_TASK_EXIT      exit code once done (default 0)
  SHIM_PROXY_TIMEOUT  bound of connecting and of each request, seconds (default 30)

Needs TLLM_SPAWN_PROXY_PROCESS_IPC_ADDR, TLLM_SPAWN_PROXY_PROCESS_IPC_HMAC_KEY and tllm_mpi_size
(set by rank-launch). Exit codes: SHIM_TASK_EXIT, 1 failure, 2 bad input.
";

fn main() -> ExitCode {
    if std::env::args()
        .nth(1)
        .is_some_and(|a| a == "--help" || a == "-h")
    {
        print!("{HELP}");
        return ExitCode::SUCCESS;
    }
    shims::log::set_prefix(format!("shim-task host={}", shims::log::host_name()));
    match run() {
        Ok(code) => ExitCode::from(code),
        Err(fail) => edge::finish(Err(fail)),
    }
}

fn run() -> Result<u8, Fail> {
    let universe = shims::import::init().map_err(|e| edge::failed(anyhow!(e)))?;
    let tasks: u32 =
        envs::parse_or("SHIM_TASK_TASKS", 1, "a count of tasks").map_err(edge::bad_input)?;
    let secs: f64 =
        envs::parse_or("SHIM_TASK_SECONDS", 0.0, "a number of seconds").map_err(edge::bad_input)?;
    let code: u8 =
        envs::parse_or("SHIM_TASK_EXIT", 0, "an exit code (0-255)").map_err(edge::bad_input)?;
    let timeout: f64 = envs::parse_or("SHIM_PROXY_TIMEOUT", 30.0, "a number of seconds")
        .map_err(edge::bad_input)?;
    let timeout = Duration::from_secs_f64(timeout.clamp(0.1, 3600.0));
    if tasks > 0 {
        let key = Key::from_env().map_err(edge::bad_input)?;
        let addr = proxy::addr_from_env().map_err(edge::bad_input)?;
        let size_text = envs::required(
            proxy::SIZE_VAR,
            "rank-launch exports the MPI world size for the task",
        )
        .map_err(edge::bad_input)?;
        let expected: u32 =
            envs::parse_value(proxy::SIZE_VAR, &size_text, "the MPI world size (>= 1)")
                .map_err(edge::bad_input)?;
        let mut client = Client::connect(&addr, &key, timeout).map_err(|e| {
            edge::failed(anyhow::Error::from(e).context("connecting to the leader"))
        })?;
        for _ in 0..tasks {
            let (sum, size) = client
                .allreduce(timeout)
                .map_err(|e| edge::failed(anyhow::Error::from(e).context("an allreduce")))?;
            if size != expected || sum != proxy::expected_rank_sum(size) {
                return Err(edge::failed(anyhow!(
                    "the leader's world has {size} rank(s) (allreduce {sum}); `{}` is {expected}",
                    proxy::SIZE_VAR
                )));
            }
        }
        say!("{tasks} task(s) ran on a world of {expected} rank(s)");
    }
    std::thread::sleep(Duration::from_secs_f64(secs.clamp(0.0, 1e6)));
    drop(universe);
    say!("exiting with {code}");
    Ok(code)
}
