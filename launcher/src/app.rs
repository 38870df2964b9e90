//! The binary edge: arguments, environment, logging, and the exit code.
//!
//! Everything the pure modules need is read here, once: the process environment goes into an
//! [`EnvMap`] for detection and an [`EnvList`] for the children. `main_impl` is the only place
//! that decides the process's exit code.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::childenv::{self, EnvList, JOB_ID_VAR};
use crate::command::Command;
use crate::exit::LaunchExit;
use crate::logging;
use crate::rank::{self, EnvMap, RankInfo};
use crate::role::{self, ROLE_VAR, Role};
use crate::run::{self, Install, Mode, Plan};
use crate::supervisor::Supervisor;

const AFTER_HELP: &str = "\
Examples:
  srun --mpi=pmix rank-launch --label -- python3 serve.py    run a command on every rank
  DISAGG_SERVING_TYPE=GEN_0 srun --mpi=pmix rank-launch     run $pytestCommand as the GEN_0 role
  mpirun -np 4 rank-launch mpi -- trtllm-serve model        the trtllm-llmapi-launch contract
  rank-launch whoami --json                                 what rank this process is

Exit codes: the child's code; 128+n when it died of signal n; 126 not executable; 127 not
found; 2 bad input; 72 install failed; 73 MPI leader ended before the task; 74 setup failed.";

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
    run: RunArgs,
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
        run: Box<RunArgs>,
        #[arg(last = true, value_name = "CMD")]
        command: Vec<OsString>,
    },
}

#[derive(Args, Debug, Clone)]
struct RunArgs {
    /// Prefix each line the children print with the rank (`srun --label` style).
    #[arg(long, env = "RANK_LAUNCH_LABEL")]
    label: bool,
    /// Append the children's output to this file instead of rank-launch's stdout/stderr
    /// (`%r` rank, `%R` role, `%h` host); with `--label`, lines are prefixed there too.
    #[arg(long, value_name = "PATH", env = "RANK_LAUNCH_LOG_FILE")]
    log_file: Option<PathBuf>,
    /// Write this rank's result as JSON; `%r` becomes the rank, `%R` the role, `%h` the host.
    #[arg(long, value_name = "PATH", env = "RANK_LAUNCH_SUMMARY_JSON")]
    summary_json: Option<PathBuf>,
    /// TERM→KILL grace period for the children, e.g. `10`, `2.5s`, `500ms`.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration, env = "RANK_LAUNCH_GRACE_PERIOD")]
    grace_period: Duration,
    /// Shell command local rank 0 of each node runs once per job and role before the task.
    #[arg(long, value_name = "CMD", env = "RANK_LAUNCH_INSTALL_CMD")]
    install_cmd: Option<String>,
    /// How long the install may take, for the installer and the ranks waiting for it.
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = parse_duration, env = "RANK_LAUNCH_INSTALL_TIMEOUT")]
    install_timeout: Duration,
    /// Node-local directory for the install gate (default: `$TMPDIR` or `/tmp`).
    #[arg(long, value_name = "DIR", env = "RANK_LAUNCH_INSTALL_DIR")]
    install_dir: Option<PathBuf>,
    /// MPI leader command run beside the task on rank 0 (a shell string).
    #[arg(
        long,
        value_name = "CMD",
        env = "RANK_LAUNCH_LEADER_CMD",
        default_value = "python3 -m tensorrt_llm.llmapi.mgmn_leader_node"
    )]
    leader_cmd: String,
    /// MPI worker command run on every other rank (a shell string).
    #[arg(
        long,
        value_name = "CMD",
        env = "RANK_LAUNCH_WORKER_CMD",
        default_value = "python3 -m tensorrt_llm.llmapi.mgmn_worker_node"
    )]
    worker_cmd: String,
    /// Command that asks the leader to stop once the task ended (a shell string).
    #[arg(
        long,
        value_name = "CMD",
        env = "RANK_LAUNCH_LEADER_STOP_CMD",
        default_value = "python3 -m tensorrt_llm.llmapi.mgmn_leader_node --action stop"
    )]
    leader_stop_cmd: String,
    /// Time the leader gets to stop after the stop command before SIGTERM (SIGKILL 1 s later).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration, env = "RANK_LAUNCH_LEADER_STOP_TIMEOUT")]
    leader_stop_timeout: Duration,
    /// Working directory of the children.
    #[arg(long, value_name = "DIR")]
    chdir: Option<PathBuf>,
    /// Directory to prepend to the children's `LD_LIBRARY_PATH` (repeatable; idempotent).
    #[arg(long, value_name = "DIR")]
    prepend_ld_library_path: Vec<OsString>,
}

/// `10`, `10s`, `2.5s`, `500ms`, `30m`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("`{text}`: expected a duration like `10`, `2.5s`, `500ms` or `30m`");
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number.parse().map_err(|_| bad())?;
    if !value.is_finite() || value < 0.0 || value * scale > 1e9 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(value * scale))
}

/// A bad-input error: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct BadInput(String);

fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into())
}

/// The job this rank belongs to, for job-scoped paths.
fn job_key(env: &EnvMap) -> String {
    for var in [
        "SLURM_JOB_ID",
        "PMIX_NAMESPACE",
        "OMPI_MCA_ess_base_jobid",
        "PMI_JOBID",
    ] {
        if let Some(value) = env.get(var).filter(|v| !v.is_empty()) {
            return value.clone();
        }
    }
    // Ranks started by one local launcher share its pid.
    format!("ppid{}", nix::unistd::getppid())
}

/// Entry point of the binary; returns the process exit code.
pub fn main_impl() -> u8 {
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
            return if err.use_stderr() {
                LaunchExit::BAD_INPUT
            } else {
                0
            };
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
        Some(Sub::Mpi { run, command }) => launch(*run, command, true, env_list, &env_map),
        None => launch(cli.run, cli.command, false, env_list, &env_map),
    }
}

fn whoami(env: &EnvMap, json: bool) -> u8 {
    let info = match rank::detect(env) {
        Ok(info) => info,
        Err(err) => {
            eprintln!("error: {err}");
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
    match std::io::stdout().lock().write_all(text.as_bytes()) {
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
    args: RunArgs,
    command: Vec<OsString>,
    force_mpi: bool,
    env_list: EnvList,
    env_map: &EnvMap,
) -> u8 {
    // The supervisor forks the sentinel: do it before anything could start a thread.
    let mut sup = match Supervisor::new() {
        Ok(sup) => sup,
        Err(err) => {
            tracing::error!("failed to set up supervision: {err}");
            return LaunchExit::SETUP_FAILED;
        }
    };
    let host = host_name();
    let raw_role = env_map
        .get(ROLE_VAR)
        .map_or_else(|| "-".to_string(), |r| r.escape_debug().to_string());
    logging::set_identity("?", &raw_role, &host);
    let prepared = prepare(&args, command, force_mpi, env_list, env_map, &host);
    let (plan, info, role) = match prepared {
        Ok(p) => p,
        Err(err) => {
            let code = if err.downcast_ref::<BadInput>().is_some()
                || err.downcast_ref::<rank::RankEnvError>().is_some()
            {
                LaunchExit::BAD_INPUT
            } else {
                LaunchExit::SETUP_FAILED
            };
            tracing::error!("{err:#}");
            sup.finish();
            return code;
        }
    };
    let role_text = role.map_or_else(|| "-".to_string(), |r| r.to_string());
    logging::set_identity(&info.rank.to_string(), &role_text, &host);
    tracing::info!(
        source = info.source.as_str(),
        world_size = info.world_size,
        local_rank = info.local_rank,
        mode = ?plan.mode,
        "starting"
    );
    let started = std::time::Instant::now();
    let outcome = match run::run(&mut sup, &plan) {
        Ok(outcome) => outcome,
        Err(err) => {
            tracing::error!("{:#}", anyhow::Error::from(err));
            sup.shutdown(plan.grace);
            sup.finish();
            return LaunchExit::SETUP_FAILED;
        }
    };
    sup.finish();
    if let Some(reason) = &outcome.reason {
        tracing::error!(code = outcome.code, "{reason}");
    }
    tracing::info!(
        code = outcome.code,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "exiting"
    );
    if let Some(path) = &args.summary_json {
        let role_name = role.map_or_else(|| "none".to_string(), |r| r.to_string());
        let path = expand_pattern(path, info.rank, &role_name, &host);
        if let Err(err) = write_summary(
            &path,
            &info,
            role,
            &host,
            env_map.get("SLURMD_NODENAME").map(String::as_str),
            &outcome,
            started.elapsed(),
        ) {
            tracing::error!("{err:#}");
        }
    }
    outcome.code
}

/// Works out the plan, or explains why the input is wrong.
fn prepare(
    args: &RunArgs,
    command: Vec<OsString>,
    force_mpi: bool,
    mut env: EnvList,
    env_map: &EnvMap,
    host: &str,
) -> anyhow::Result<(Plan, RankInfo, Option<Role>)> {
    let info = rank::detect(env_map)?;
    let role = role::parse(env_map.get(ROLE_VAR).map(String::as_str))
        .map_err(|e| BadInput(e.to_string()))?;
    let mpi_path = force_mpi || role.is_some_and(Role::is_mpi_worker);
    let mode = match (mpi_path, info.rank) {
        (false, _) => Mode::Single,
        (true, 0) => Mode::MpiRank0,
        (true, _) => Mode::MpiWorker,
    };
    let command = if command.is_empty() {
        match env_map.get("pytestCommand") {
            Some(script) if !script.trim().is_empty() => Command::Shell(script.clone()),
            _ if mode == Mode::MpiWorker => Command::Argv(Vec::new()),
            _ => {
                return Err(BadInput(
                    "no command: give one after `--` or set `pytestCommand` to a shell command"
                        .into(),
                )
                .into());
            }
        }
    } else {
        Command::Argv(command)
    }
    .without_llmapi_launch();
    if command.is_empty() && mode != Mode::MpiWorker {
        return Err(
            BadInput("the command is empty once `trtllm-llmapi-launch` is removed".into()).into(),
        );
    }
    let ipc_port = match env_map.get(run::IPC_PORT_VAR) {
        None => None,
        Some(text) => Some(text.parse::<u16>().map_err(|_| {
            BadInput(format!(
                "`{}` is `{}`: expected a TCP port number (0-65535)",
                run::IPC_PORT_VAR,
                text.escape_debug()
            ))
        })?),
    };

    for (name, value) in childenv::rank_exports(&info) {
        childenv::set(&mut env, name, value);
    }
    if mpi_path {
        childenv::set(&mut env, run::SPAWN_PROXY_VAR, "1");
    }
    let job = job_key(env_map);
    childenv::set(&mut env, JOB_ID_VAR, job.clone());
    if !args.prepend_ld_library_path.is_empty() {
        let value = childenv::prepend_paths(
            childenv::get(&env, "LD_LIBRARY_PATH"),
            &args.prepend_ld_library_path,
        );
        childenv::set(&mut env, "LD_LIBRARY_PATH", value);
    }
    if let Some(dir) = &args.chdir {
        if !dir.is_dir() {
            return Err(BadInput(format!(
                "`--chdir {}`: expected an existing directory",
                dir.display()
            ))
            .into());
        }
    }
    let install = match &args.install_cmd {
        None => None,
        Some(cmd) => {
            let root = args
                .install_dir
                .clone()
                .or_else(|| env_map.get("TMPDIR").map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from("/tmp"));
            let root = if root.is_absolute() {
                root
            } else {
                std::env::current_dir()
                    .context("failed to read the current directory")?
                    .join(root)
            };
            let role_key = role.map_or_else(|| "none".to_string(), |r| r.to_string());
            Some(Install {
                command: cmd.clone(),
                dir: crate::gate::gate_dir(&root, &job, host, &role_key),
                timeout: args.install_timeout,
                installer: info.local_rank == 0,
            })
        }
    };
    let log_file = match &args.log_file {
        None => None,
        Some(pattern) => {
            let role_name = role.map_or_else(|| "none".to_string(), |r| r.to_string());
            let path = expand_pattern(pattern, info.rank, &role_name, host);
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .with_context(|| format!("failed to open the log file `{}`", path.display()))?;
            Some(path)
        }
    };
    let scrub = match (mode, role) {
        (Mode::MpiRank0, _) => childenv::TASK_SCRUB_PREFIXES,
        (Mode::Single, Some(Role::DisaggServer | Role::Benchmark)) => {
            childenv::SINGLE_SCRUB_PREFIXES
        }
        _ => &[],
    };
    let plan = Plan {
        mode,
        command,
        leader_cmd: args.leader_cmd.clone(),
        worker_cmd: args.worker_cmd.clone(),
        leader_stop_cmd: args.leader_stop_cmd.clone(),
        leader_stop_timeout: args.leader_stop_timeout,
        grace: args.grace_period,
        label: args.label.then(|| format!("{}: ", info.rank)),
        log_file,
        install,
        cwd: args.chdir.clone(),
        env,
        scrub,
        ipc_port,
    };
    Ok((plan, info, role))
}

/// Microseconds since the Unix epoch.
fn unix_us(at: std::time::SystemTime) -> u64 {
    at.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// `%r` → rank, `%R` → role (`none` without one), `%h` → host, `%%` → `%`.
fn expand_pattern(path: &Path, rank: u32, role: &str, host: &str) -> PathBuf {
    let text = path.to_string_lossy();
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('r') => out.push_str(&rank.to_string()),
            Some('R') => out.push_str(role),
            Some('h') => out.push_str(host),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    PathBuf::from(out)
}

fn write_summary(
    path: &Path,
    info: &RankInfo,
    role: Option<Role>,
    host: &str,
    slurm_node: Option<&str>,
    outcome: &run::Outcome,
    elapsed: Duration,
) -> anyhow::Result<()> {
    use crate::exit::ChildEnd;
    let end_fields = |end: Option<ChildEnd>| match end {
        Some(ChildEnd::Exited(code)) => (serde_json::json!(code), serde_json::Value::Null),
        Some(ChildEnd::Signaled(signal)) => (serde_json::Value::Null, serde_json::json!(signal)),
        None => (serde_json::Value::Null, serde_json::Value::Null),
    };
    let (child_code, child_signal) = end_fields(outcome.end);
    let children: Vec<_> = outcome
        .children
        .iter()
        .map(|c| {
            let (code, signal) = end_fields(c.end);
            serde_json::json!({
                "name": c.name, "pid": c.pid, "exit_code": code, "signal": signal,
                "duration_ms": c.duration.as_millis() as u64,
                "started_unix_us": unix_us(c.started_at),
                "ended_unix_us": c.ended_at.map(unix_us),
            })
        })
        .collect();
    let summary = serde_json::json!({
        "rank": info.rank,
        "local_rank": info.local_rank,
        "world_size": info.world_size,
        "node_rank": info.node_rank,
        "source": info.source.as_str(),
        "role": role.map(|r| r.to_string()),
        "host": host,
        "slurm_node": slurm_node,
        "command": outcome.argv.iter().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>(),
        "exit_code": outcome.code,
        "child_exit_code": child_code,
        "child_signal": child_signal,
        "reason": outcome.reason,
        "duration_ms": elapsed.as_millis() as u64,
        "gate_released_unix_us": outcome.gate_released_at.map(unix_us),
        "children": children,
    });
    let text = serde_json::to_string_pretty(&summary)? + "\n";
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, text)
        .with_context(|| format!("failed to write the summary `{}`", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("failed to write the summary `{}`", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ok = [
            ("10", 10.0),
            ("2.5s", 2.5),
            ("500ms", 0.5),
            ("30m", 1800.0),
            ("0", 0.0),
        ];
        for (text, secs) in ok {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs_f64(secs)),
                "{text}"
            );
        }
        for bad in ["", "s", "-1", "1h", "nan", "inf", "1e300"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn patterns() {
        let p = |t: &str| {
            expand_pattern(Path::new(t), 3, "GEN_0", "n1")
                .to_string_lossy()
                .into_owned()
        };
        assert_eq!(p("/x/summary.%R.%r.%h.json"), "/x/summary.GEN_0.3.n1.json");
        assert_eq!(p("a%%r%"), "a%r%");
        assert_eq!(p("%q"), "%q");
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
