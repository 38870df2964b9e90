//! The binary edge: arguments, environment, logging, the file-system checks the plan cannot
//! make, the summary JSON ([`crate::summary`]), and the exit code.
//!
//! Order matters: the plan ([`crate::plan::plan`], pure) is made first, so bad input exits 2
//! before anything is set up; then the few checks that need the file system; then supervision
//! ([`Supervisor::new`]: signals, subreaper, sentinel) and the run. `main_impl` is the only
//! place that decides the process's exit code, and it flushes rank-launch's queued output,
//! bounded, before returning.

use std::ffi::OsString;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

use crate::childenv::EnvList;
use crate::exit::LaunchExit;
use crate::logging;
use crate::plan::{self, Options, PlanError};
use crate::rank::{self, EnvMap, RankInfo};
use crate::role::ROLE_VAR;
use crate::run;
use crate::stream::{self, Stream};
use crate::summary::Summary;
use crate::supervisor::Supervisor;
use crate::workspace;

/// Most time spent at exit writing what is still queued for stdout and stderr.
const FINAL_FLUSH: Duration = Duration::from_millis(500);

const AFTER_HELP: &str = "\
Examples:
  srun --mpi=pmix rank-launch --label -- python3 serve.py    run a command on every rank
  DISAGG_SERVING_TYPE=GEN_0 srun --mpi=pmix rank-launch     run $pytestCommand as the GEN_0 role
  mpirun -np 4 rank-launch mpi -- trtllm-serve model        the trtllm-llmapi-launch contract
  rank-launch whoami --json                                 what rank this process is

Exit codes: the child's code; 128+n when it died of signal n; 126 not executable; 127 not
found; 2 bad input; 72 install failed; 74 rank-launch failed (setup, or a child that did not
die after SIGKILL); 75 not ready within --ready-timeout; 76 no progress within
--stall-timeout (the children are stopped with TERM, then KILL after the grace period). MPI rank 0 (upstream trtllm-llmapi-launch's rules): the task's code; 124
when the task succeeded but the leader did not stop within the stop timeout; the stop
command's code when it failed; when the leader ends first, the task's own non-zero code if it
ends on its own, else the leader's code, else 1.

Upstream's variables on the MPI path (rank-launch's own options win):
  TLLM_LLMAPI_LAUNCH_STOP_TIMEOUT        seconds the leader may take to stop after the task (120)
  TLLM_LLMAPI_LAUNCH_TERM_GRACE_SECONDS  TERM to KILL (5)
  TLLM_MGMN_SHUTDOWN_GRACE_SECONDS       the leader's own shutdown budget (passed through)
  TLLM_SPAWN_PROXY_PROCESS_IPC_ADDR      a preset tcp:// or ipc:// proxy address, used as it is
  TLLM_SPAWN_PROXY_PROCESS_IPC_PORT      the loopback port to bind otherwise
  FLASHINFER_WORKSPACE_BASE              kept when set; else every rank gets its own slot
  TRTLLM_FLASHINFER_WORKSPACE_PER_PROCESS=0  no per-rank FlashInfer workspace";

#[derive(Parser, Debug)]
#[command(
    name = "rank-launch",
    version,
    about = "Per-rank runtime for disaggregated LLM serving: detects the rank, runs the role, supervises",
    after_help = AFTER_HELP,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    sub: Option<Sub>,
    #[command(flatten)]
    run: Options,
    /// The command; without it, `$pytestCommand` runs under `bash -c`.
    #[arg(last = true, value_name = "CMD")]
    command: Vec<OsString>,
}

#[derive(Subcommand, Debug)]
enum Sub {
    /// Print the detected rank and where it came from.
    Whoami {
        /// One JSON object: rank, local_rank, world_size, local_world_size, node_rank, source.
        #[arg(long)]
        json: bool,
    },
    /// Run CMD on the MPI worker path whatever the role (what `trtllm-llmapi-launch` does).
    Mpi {
        #[command(flatten)]
        run: Box<Options>,
        #[arg(last = true, value_name = "CMD")]
        command: Vec<OsString>,
    },
}

fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into())
}

/// Entry point of the binary; returns the process exit code.
pub fn main_impl() -> u8 {
    let code = real_main();
    // What nobody reads within the bound is lost: there is no one left to tell.
    stream::flush(Instant::now() + FINAL_FLUSH);
    code
}

fn real_main() -> u8 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) if err.use_stderr() => {
            // One line: the error itself; the usage text is one `--help` away.
            let text = err.render().to_string();
            let first = text.lines().next().unwrap_or("error: invalid arguments");
            eprintln!("{first} (see `rank-launch --help`)");
            return LaunchExit::BAD_INPUT;
        }
        Err(err) => {
            let _ = err.print();
            return 0;
        }
    };
    let env_list: EnvList = std::env::vars_os().collect();
    let env_map: EnvMap = env_list
        .iter()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .collect();
    logging::init(env_map.get(logging::LOG_VAR).map(String::as_str));

    match cli.sub {
        Some(Sub::Whoami { json }) => whoami(&env_map, json),
        Some(Sub::Mpi { run, command }) => launch(&run, command, true, env_list, &env_map),
        None => launch(&cli.run, cli.command, false, env_list, &env_map),
    }
}

fn whoami(env: &EnvMap, json: bool) -> u8 {
    let info = match rank::detect(env) {
        Ok(info) => info,
        Err(err) => {
            tracing::error!("{err}");
            return LaunchExit::BAD_INPUT;
        }
    };
    let text = if json {
        serde_json::json!({
            "rank": info.rank,
            "local_rank": info.local_rank,
            "world_size": info.world_size,
            "local_world_size": info.local_world_size,
            "node_rank": info.node_rank,
            "source": info.source.as_str(),
        })
        .to_string()
            + "\n"
    } else {
        whoami_table(&info)
    };
    match stream::write_now(Stream::Stdout, text.as_bytes()) {
        Ok(()) => 0,
        Err(_) => LaunchExit::SETUP_FAILED,
    }
}

fn whoami_table(info: &RankInfo) -> String {
    let from = if info.used.is_empty() {
        "no launcher variables".to_string()
    } else {
        info.used.join(", ")
    };
    let node_note = if info.node_rank_derived {
        " (derived: rank of local rank 0 / ranks per node)"
    } else {
        ""
    };
    format!(
        "rank              {}\nlocal_rank        {}\nworld_size        {}\nlocal_world_size  {}\nnode_rank         {}{node_note}\nsource            {} (from {from})\n",
        info.rank,
        info.local_rank,
        info.world_size,
        info.local_world_size,
        info.node_rank,
        info.source
    )
}

fn launch(
    opts: &Options,
    command: Vec<OsString>,
    force_mpi: bool,
    env_list: EnvList,
    env_map: &EnvMap,
) -> u8 {
    let host = host_name();
    let raw_role = env_map
        .get(ROLE_VAR)
        .map_or_else(|| "-".to_string(), |r| r.escape_debug().to_string());
    logging::set_identity("?", &raw_role, &host);
    let cwd = std::env::current_dir().unwrap_or_else(|_| "/".into());
    let cx = plan::Context {
        host: &host,
        cwd: &cwd,
        ppid: nix::unistd::getppid().as_raw(),
    };
    let plan = match plan::plan(opts, command, force_mpi, env_list, env_map, &cx) {
        Ok(plan) => plan,
        Err(err) => {
            tracing::error!("{err}");
            return match err {
                PlanError::BadInput(_) | PlanError::Rank(_) => LaunchExit::BAD_INPUT,
            };
        }
    };
    let role_text = plan.role.map_or_else(|| "-".to_string(), |r| r.to_string());
    logging::set_identity(&plan.info.rank.to_string(), &role_text, &host);
    for warning in &plan.warnings {
        tracing::warn!("{warning}");
    }
    if let Some(dir) = &plan.cwd {
        if !dir.is_dir() {
            tracing::error!(
                "`--chdir {}`: expected an existing directory",
                dir.display()
            );
            return LaunchExit::BAD_INPUT;
        }
    }
    if let Some(path) = &plan.log_file {
        if let Err(err) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            tracing::error!("failed to open the log file `{}`: {err}", path.display());
            return LaunchExit::SETUP_FAILED;
        }
    }
    // Held until the run is over: the slot's lock, or the temporary directory.
    let workspace = plan.flashinfer.as_ref().and_then(|base| {
        match workspace::claim(base, plan.info.rank) {
            Ok(ws) => {
                tracing::debug!(dir = %ws.dir.display(), "FlashInfer workspace");
                Some(ws)
            }
            Err(err) => {
                tracing::warn!(%err, "no FlashInfer workspace of this rank's own; leaving FLASHINFER_WORKSPACE_BASE unset");
                None
            }
        }
    });
    let timing = crate::supervisor::Timing {
        grace: plan.grace,
        stop_timeout: plan.stop_timeout,
    };
    let mut sup = match Supervisor::new(timing) {
        Ok(sup) => sup,
        Err(err) => {
            tracing::error!("failed to set up supervision: {err}");
            return LaunchExit::SETUP_FAILED;
        }
    };
    tracing::info!(
        source = plan.info.source.as_str(),
        world_size = plan.info.world_size,
        local_rank = plan.info.local_rank,
        mode = ?plan.mode,
        "starting"
    );
    let started = Instant::now();
    let started_at = std::time::SystemTime::now();
    let argv: Vec<String> = run::main_argv(&plan)
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut summary = Summary::new(
        &plan,
        &host,
        env_map.get("SLURMD_NODENAME").map(String::as_str),
        &argv,
        started_at,
    );
    summary.write_live();
    let fi = workspace
        .as_ref()
        .map(|ws| ws.dir.as_os_str().to_os_string());
    let outcome = match run::run(&mut sup, &plan, fi, &mut summary) {
        Ok(outcome) => outcome,
        Err(err) => {
            // `run` has ended every child already.
            tracing::error!("{:#}", anyhow::Error::from(err));
            sup.finish();
            return LaunchExit::SETUP_FAILED;
        }
    };
    sup.finish();
    drop(workspace);
    if let Some(reason) = &outcome.reason {
        tracing::error!(code = outcome.code, "{reason}");
    }
    tracing::info!(
        code = outcome.code,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "exiting"
    );
    if let Err(err) = summary.write_final(&outcome, started.elapsed()) {
        tracing::error!("{err:#}");
    }
    outcome.code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
