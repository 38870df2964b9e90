//! `shim-leader`: the MPI leader (rank 0, beside the task) and, with `--action stop`, the
//! authenticated client that stops it. Stand-in for `tensorrt_llm.llmapi.mgmn_leader_node`.
//!
//! Both actions initialise MPI first, as the real module does when it imports the package: the
//! leader joins the launcher's world as rank 0; the stop helper must be an MPI singleton, and
//! started with the running world's environment it fails inside `MPI_Init` like the real one.
//!
//! `--action start` (default): initialise MPI, bind the proxy address, serve tasks until an
//! authenticated stop (or `SIGTERM`), stop the workers, finalize within
//! `TLLM_MGMN_SHUTDOWN_GRACE_SECONDS` (else exit 1 without finalizing, which fails the world),
//! exit 0. After a `SIGTERM` the bound is 2 s (or the grace, if shorter), then exit 143.
//! `--action stop`: initialise MPI (a singleton), connect with the key, ask the leader to stop,
//! exit 0 once it confirms.

use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use mpi::traits::*;
use shims::edge::{self, Fail};
use shims::mgmn::{self, LeaderEnd};
use shims::proxy::{self, Client, Key, Listener, Reply, Request};
use shims::{envs, say};

const HELP: &str = "\
shim-leader [--action start|stop]: MPI leader stand-in (rank 0 of the step)

  start (default)  serve the proxy at $TLLM_SPAWN_PROXY_PROCESS_IPC_ADDR for the MPI world
  stop             ask the leader at that address to stop its world (authenticated)

Needs TLLM_SPAWN_PROXY_PROCESS_IPC_ADDR (tcp://127.0.0.1:PORT or ipc://PATH) and
TLLM_SPAWN_PROXY_PROCESS_IPC_HMAC_KEY (set by rank-launch). Both actions initialise MPI first,
like the TensorRT-LLM package import. SHIM_STOP_TIMEOUT bounds the stop client (seconds, default
5); TLLM_MGMN_SHUTDOWN_GRACE_SECONDS bounds the leader's shutdown after a stop (default 60).
Exit codes: 0 success, 1 failure, 2 bad input.
";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Start,
    Stop,
    Help,
}

fn parse_args(args: &[String]) -> Result<Action, String> {
    let mut action = Action::Start;
    let mut i = 0;
    while i < args.len() {
        let value = match args[i].as_str() {
            "-h" | "--help" => return Ok(Action::Help),
            "--action" => {
                i += 1;
                args.get(i).map(String::as_str)
            }
            other => match other.strip_prefix("--action=") {
                Some(v) => Some(v),
                None => {
                    return Err(format!(
                        "unknown argument `{other}`: expected `--action start|stop`"
                    ));
                }
            },
        };
        action = match value {
            Some("start") => Action::Start,
            Some("stop") => Action::Stop,
            Some(v) => return Err(format!("`--action {v}`: expected `start` or `stop`")),
            None => return Err("`--action` needs a value: `start` or `stop`".into()),
        };
        i += 1;
    }
    Ok(action)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let role = envs::get("DISAGG_SERVING_TYPE").unwrap_or_else(|| "-".into());
    let host = shims::log::host_name();
    match parse_args(&args) {
        Ok(Action::Help) => {
            print!("{HELP}");
            ExitCode::SUCCESS
        }
        Ok(Action::Stop) => {
            shims::log::set_prefix(format!("shim-leader-stop {role} host={host}"));
            edge::finish(stop())
        }
        Ok(Action::Start) => {
            shims::log::set_prefix(format!("shim-leader {role} rank=0 host={host}"));
            edge::finish(start())
        }
        Err(e) => {
            shims::log::set_prefix("shim-leader");
            edge::finish(Err(edge::bad_input(anyhow!(e))))
        }
    }
}

fn stop() -> Result<(), Fail> {
    // First, as the package import does: a stop helper that sees a running world's variables
    // dies here, inside MPI_Init.
    let universe = shims::import::init().map_err(|e| edge::failed(anyhow!(e)))?;
    let key = Key::from_env().map_err(edge::bad_input)?;
    let addr = proxy::addr_from_env().map_err(edge::bad_input)?;
    let secs: f64 =
        envs::parse_or("SHIM_STOP_TIMEOUT", 5.0, "a number of seconds").map_err(edge::bad_input)?;
    let timeout = Duration::from_secs_f64(secs.clamp(0.1, 3600.0));
    let started = Instant::now();
    let mut client = Client::connect(&addr, &key, timeout)
        .with_context(|| format!("stopping the leader at {addr}"))
        .map_err(edge::failed)?;
    let result = match client.call(Request::Stop, timeout) {
        Ok(Reply::Stopping) => {
            say!(
                "leader at {addr} is stopping ({} ms)",
                started.elapsed().as_millis()
            );
            Ok(())
        }
        Ok(other) => Err(edge::failed(anyhow!("unexpected reply to stop: {other:?}"))),
        Err(e) => Err(edge::failed(
            anyhow::Error::from(e).context("stopping the leader"),
        )),
    };
    drop(universe);
    result
}

/// The leader's shutdown budget once stopped (upstream's default: 60 s).
fn shutdown_grace() -> Result<Duration, Fail> {
    let secs: f64 = envs::parse_or(
        "TLLM_MGMN_SHUTDOWN_GRACE_SECONDS",
        60.0,
        "a positive number of seconds",
    )
    .map_err(edge::bad_input)?;
    if !(secs.is_finite() && secs > 0.0 && secs < 1e7) {
        return Err(edge::bad_input(anyhow!(
            "`TLLM_MGMN_SHUTDOWN_GRACE_SECONDS` is `{secs}`: expected a positive number of seconds"
        )));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// After a termination signal the launcher's KILL is seconds away (5 s by default,
/// `TLLM_LLMAPI_LAUNCH_TERM_GRACE_SECONDS`), and the workers of another node may already be
/// gone, so that a send to them or the finalize fence never returns: the leader gives its
/// world this long, then exits with 143 as if the TERM had killed it.
const TERM_SHUTDOWN: Duration = Duration::from_secs(2);

/// Ends the process if stopping the world takes longer than `bound`: exiting without
/// MPI_Finalize makes the launcher fail the whole world, as the real leader's abort.
fn shutdown_watchdog(bound: Duration, end: LeaderEnd) {
    std::thread::spawn(move || {
        std::thread::sleep(bound);
        let code = match end {
            LeaderEnd::Stopped => {
                say!(
                    "error: the MPI world did not stop within {bound:?} (TLLM_MGMN_SHUTDOWN_GRACE_SECONDS); aborting"
                );
                1
            }
            LeaderEnd::Terminated => {
                say!(
                    "the MPI world did not stop within {bound:?} of the termination signal; exiting"
                );
                128 + nix::libc::SIGTERM
            }
        };
        // SAFETY: _exit takes no pointers; the main thread is stuck in MPI.
        unsafe { nix::libc::_exit(code) }
    });
}

fn start() -> Result<(), Fail> {
    let started = Instant::now();
    let universe = shims::import::init().map_err(|e| edge::failed(anyhow!(e)))?;
    let key = Key::from_env().map_err(edge::bad_input)?;
    let addr = proxy::addr_from_env().map_err(edge::bad_input)?;
    let grace = shutdown_grace()?;
    // The task starts at the same time and retries (bounded) until the leader listens.
    let listener = Listener::bind(&addr)
        .with_context(|| format!("failed to bind the proxy address {addr}"))
        .map_err(edge::failed)?;
    mgmn::install_term_handler().map_err(|e| edge::failed(anyhow!(e)))?;
    let (jobs_tx, jobs_rx) = mpsc::channel();
    mgmn::spawn_acceptor(listener, key, jobs_tx);
    let world = universe.world();
    let (rank, size) = (world.rank(), world.size());
    if rank != 0 {
        // No MPI_Finalize (a fence the others would never reach): fail the world instead.
        std::mem::forget(universe);
        return Err(edge::failed(anyhow!(
            "shim-leader runs as MPI rank 0, but this process is rank {rank} of {size}"
        )));
    }
    if let Err(e) = edge::check_world_size(size) {
        mgmn::stop_workers(&world);
        return Err(edge::failed(anyhow!(e)));
    }
    say!(
        "MPI world of {size} rank(s) up in {} ms; serving the proxy on {addr}",
        started.elapsed().as_millis()
    );
    say!("executor settings: {}", envs::executor_settings(envs::get));
    let (end, tasks) = mgmn::run_leader(&world, &jobs_rx);
    let why = match end {
        LeaderEnd::Stopped => "stop request",
        LeaderEnd::Terminated => "termination signal",
    };
    say!("stopped by {why} after {tasks} task(s); finalizing MPI");
    match end {
        LeaderEnd::Stopped => shutdown_watchdog(grace, end),
        LeaderEnd::Terminated => {
            shutdown_watchdog(grace.min(TERM_SHUTDOWN), end);
            mgmn::stop_workers(&world);
        }
    }
    drop(universe);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn args() {
        assert_eq!(parse_args(&v(&[])), Ok(Action::Start));
        assert_eq!(parse_args(&v(&["--action", "stop"])), Ok(Action::Stop));
        assert_eq!(parse_args(&v(&["--action=start"])), Ok(Action::Start));
        assert_eq!(parse_args(&v(&["-h"])), Ok(Action::Help));
        assert!(parse_args(&v(&["--action"])).is_err());
        assert!(parse_args(&v(&["--action", "kill"])).is_err());
        assert!(parse_args(&v(&["stop"])).is_err());
    }
}
