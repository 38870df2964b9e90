//! From the options and the environment to a [`Plan`]: everything rank-launch will do, decided
//! before anything is started, so that bad input is refused (exit 2) before supervision is set
//! up.
//!
//! Pure: the environment comes in as values, the host name and the working directory too; no
//! file is opened and no process started here. [`crate::app`] does the few checks that need the
//! file system (does `--chdir` exist, can the log file be opened) and claims the FlashInfer
//! workspace.
//!
//! Which settings win, most specific first:
//! - the grace period: `--grace-period` (or `RANK_LAUNCH_GRACE_PERIOD`), then on the MPI path
//!   upstream's `TLLM_LLMAPI_LAUNCH_TERM_GRACE_SECONDS`, then 5 s on the MPI path (upstream's
//!   default) and 10 s elsewhere;
//! - the leader's stop timeout: `--leader-stop-timeout` (or `RANK_LAUNCH_LEADER_STOP_TIMEOUT`),
//!   then `TLLM_LLMAPI_LAUNCH_STOP_TIMEOUT`, then 120 s (upstream's default: it covers the stop
//!   helper's cold start and package import; the normal path ends as soon as the leader exits);
//! - the proxy address: a preset `TLLM_SPAWN_PROXY_PROCESS_IPC_ADDR` (`tcp://` or `ipc://`) as
//!   it is, else `tcp://127.0.0.1:<port>` with `TLLM_SPAWN_PROXY_PROCESS_IPC_PORT` or a port the
//!   kernel picks;
//! - the task's stdin: `--task-stdin`, else end of file on the MPI path (upstream's rule) and
//!   rank-launch's own stdin in a single-process run.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::childenv::{self, EnvList, IPC_ADDR_VAR, IPC_PORT_VAR, JOB_ID_VAR, Process};
use crate::command::Command;
use crate::rank::{self, EnvMap, RankInfo};
use crate::role::{self, ROLE_VAR, Role};
use crate::watch::{self, Ready, ReadyProbe, Stall, StallProbe, WatchSpec};

/// Upstream `trtllm-llmapi-launch`'s knobs.
pub const STOP_TIMEOUT_VAR: &str = "TLLM_LLMAPI_LAUNCH_STOP_TIMEOUT";
pub const TERM_GRACE_VAR: &str = "TLLM_LLMAPI_LAUNCH_TERM_GRACE_SECONDS";
/// The leader's own shutdown budget; passed through, checked, compared with the stop timeout.
pub const MGMN_GRACE_VAR: &str = "TLLM_MGMN_SHUTDOWN_GRACE_SECONDS";
/// FlashInfer workspace isolation (`0` turns it off).
pub const FLASHINFER_PER_PROCESS_VAR: &str = "TRTLLM_FLASHINFER_WORKSPACE_PER_PROCESS";

const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(120);
const DEFAULT_GRACE: Duration = Duration::from_secs(10);
const DEFAULT_MPI_GRACE: Duration = Duration::from_secs(5);

/// The options of a run (`rank-launch [OPTIONS] [-- CMD]` and `rank-launch mpi`).
#[derive(Args, Debug, Clone)]
pub struct Options {
    /// Prefix each line the children print with the rank (`srun --label` style).
    #[arg(long, env = "RANK_LAUNCH_LABEL")]
    pub label: bool,
    /// Append the children's output to this file instead of rank-launch's stdout/stderr
    /// (`%r` rank, `%R` role, `%h` host); with `--label`, lines are prefixed there too.
    #[arg(long, value_name = "PATH", env = "RANK_LAUNCH_LOG_FILE")]
    pub log_file: Option<PathBuf>,
    /// Write this rank's result as JSON; `%r` becomes the rank, `%R` the role, `%h` the host.
    #[arg(long, value_name = "PATH", env = "RANK_LAUNCH_SUMMARY_JSON")]
    pub summary_json: Option<PathBuf>,
    /// TERM→KILL grace period for the children, e.g. `10`, `2.5s`, `500ms` [default: 10s;
    /// on the MPI path $TLLM_LLMAPI_LAUNCH_TERM_GRACE_SECONDS, else 5s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, env = "RANK_LAUNCH_GRACE_PERIOD")]
    pub grace_period: Option<Duration>,
    /// Shell command local rank 0 of each node runs once per job step and role before the task.
    #[arg(long, value_name = "CMD", env = "RANK_LAUNCH_INSTALL_CMD")]
    pub install_cmd: Option<String>,
    /// How long the install may take, for the installer and the ranks waiting for it.
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = parse_duration, env = "RANK_LAUNCH_INSTALL_TIMEOUT")]
    pub install_timeout: Duration,
    /// How long waiting ranks wait for local rank 0 to begin the install before they give up.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration, env = "RANK_LAUNCH_INSTALL_START_TIMEOUT")]
    pub install_start_timeout: Duration,
    /// Node-local directory for the install gate (default: `$TMPDIR` when absolute, else `/tmp`).
    #[arg(long, value_name = "DIR", env = "RANK_LAUNCH_INSTALL_DIR")]
    pub install_dir: Option<PathBuf>,
    /// How waiting ranks learn that the install is done: inotify (falls back to polling
    /// every 50 ms when inotify is unavailable or exhausted), or polling only.
    #[arg(
        long,
        value_name = "HOW",
        value_enum,
        default_value = "inotify",
        env = "RANK_LAUNCH_INSTALL_WATCH"
    )]
    pub install_watch: Watch,
    /// How the installer shows it is alive: an flock (falls back to a lock file holding its
    /// pid where the file system has no flock, e.g. Lustre or NFS without lock support), or
    /// the lock file only.
    #[arg(
        long,
        value_name = "HOW",
        value_enum,
        default_value = "flock",
        env = "RANK_LAUNCH_INSTALL_LOCK"
    )]
    pub install_lock: LockKind,
    /// MPI leader command run beside the task on rank 0 (a shell string).
    #[arg(
        long,
        value_name = "CMD",
        env = "RANK_LAUNCH_LEADER_CMD",
        default_value = "python3 -m tensorrt_llm.llmapi.mgmn_leader_node"
    )]
    pub leader_cmd: String,
    /// MPI worker command run on every other rank (a shell string).
    #[arg(
        long,
        value_name = "CMD",
        env = "RANK_LAUNCH_WORKER_CMD",
        default_value = "python3 -m tensorrt_llm.llmapi.mgmn_worker_node"
    )]
    pub worker_cmd: String,
    /// Command that asks the leader to stop once the task ended (a shell string; it runs as an
    /// MPI singleton, with the task's environment).
    #[arg(
        long,
        value_name = "CMD",
        env = "RANK_LAUNCH_LEADER_STOP_CMD",
        default_value = "python3 -m tensorrt_llm.llmapi.mgmn_leader_node --action stop"
    )]
    pub leader_stop_cmd: String,
    /// How long after the task's end the leader (and its stop command) may take to stop
    /// before it is terminated [default: $TLLM_LLMAPI_LAUNCH_STOP_TIMEOUT, else 120s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, env = "RANK_LAUNCH_LEADER_STOP_TIMEOUT")]
    pub leader_stop_timeout: Option<Duration>,
    /// The task's stdin [default: `null` on the MPI path, as upstream; `inherit` otherwise].
    /// With `inherit` and a terminal on stdin, the task becomes the terminal's foreground job.
    #[arg(long, value_name = "MODE", value_enum, env = "RANK_LAUNCH_TASK_STDIN")]
    pub task_stdin: Option<Stdin>,
    /// Working directory of the children.
    #[arg(long, value_name = "DIR")]
    pub chdir: Option<PathBuf>,
    /// Directory to prepend to the children's `LD_LIBRARY_PATH` (repeatable; idempotent).
    #[arg(long, value_name = "DIR")]
    pub prepend_ld_library_path: Vec<OsString>,
    /// Fail the rank (exit 75) when its task is not ready this long after its start; needs one
    /// of `--ready-url`, `--ready-file`, `--ready-line`. Ignored on MPI ranks > 0.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, env = "RANK_LAUNCH_READY_TIMEOUT", help_heading = "Readiness and liveness")]
    pub ready_timeout: Option<Duration>,
    /// Ready when an HTTP GET of this URL answers 2xx (`http://IP-or-localhost:PORT/PATH`,
    /// e.g. a server's `/health`).
    #[arg(
        long,
        value_name = "URL",
        env = "RANK_LAUNCH_READY_URL",
        help_heading = "Readiness and liveness"
    )]
    pub ready_url: Option<String>,
    /// Ready when this file exists (`%r`, `%R`, `%h` as in `--log-file`).
    #[arg(
        long,
        value_name = "PATH",
        env = "RANK_LAUNCH_READY_FILE",
        help_heading = "Readiness and liveness"
    )]
    pub ready_file: Option<PathBuf>,
    /// Ready when a line of the children's output matches this regular expression.
    #[arg(
        long,
        value_name = "REGEX",
        env = "RANK_LAUNCH_READY_LINE",
        help_heading = "Readiness and liveness"
    )]
    pub ready_line: Option<String>,
    /// Fail the rank (exit 76) after this long without progress, counted from readiness (or
    /// the start, without a ready probe).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, env = "RANK_LAUNCH_STALL_TIMEOUT", help_heading = "Readiness and liveness")]
    pub stall_timeout: Option<Duration>,
    /// What counts as progress: `output` (the children's output grew), `url=URL` (a GET
    /// answered 2xx), `file=PATH` (the file changed), `stopped` (only a stopped process is
    /// no progress). A stopped process never makes progress. MPI ranks > 0 use `stopped`.
    #[arg(long, value_name = "PROBE", value_parser = watch::parse_stall_probe, env = "RANK_LAUNCH_STALL_PROBE", help_heading = "Readiness and liveness")]
    pub stall_probe: Option<StallProbe>,
}

/// The task's stdin.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdin {
    /// rank-launch's own stdin (a terminal under `srun --pty`).
    Inherit,
    /// `/dev/null`: the task reads end of file.
    Null,
}

/// How install waiters watch for the status.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    Inotify,
    Poll,
}

/// How the installer's liveness is shown.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    Flock,
    File,
}

/// `10`, `10s`, `2.5s`, `500ms`, `30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
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

/// Upstream's rule for its knobs: a positive integer of at most six digits.
fn upstream_seconds(var: &'static str, text: &str) -> Result<Duration, PlanError> {
    let t = text.trim();
    match t.parse::<u64>() {
        Ok(n) if n > 0 && t.len() <= 6 && t.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(Duration::from_secs(n))
        }
        _ => Err(PlanError::bad(format!(
            "`{var}` is `{}`: expected a positive whole number of seconds (at most six digits)",
            text.escape_debug()
        ))),
    }
}

/// How this rank runs its command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Single,
    MpiRank0,
    MpiWorker,
}

/// The proxy address rank 0 hands to the leader, the task and the stop command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ipc {
    /// `TLLM_SPAWN_PROXY_PROCESS_IPC_ADDR` was set: used as it is.
    Preset(String),
    /// `tcp://127.0.0.1:<port>`, the port bound first: this one, or one the kernel picks.
    Loopback(Option<u16>),
}

/// The per-node install gate's settings.
#[derive(Debug, Clone)]
pub struct Install {
    pub command: String,
    /// The gate's root directory (absolute); the gate directory's name comes from [`gate_key`].
    pub root: PathBuf,
    /// `(job, restart, step, host, role, command hash)`, see [`gate_key`].
    pub key: GateKey,
    pub timeout: Duration,
    pub start_timeout: Duration,
    /// Local rank 0 installs; the others wait.
    pub installer: bool,
    pub watch: Watch,
    pub lock: LockKind,
}

/// What names an install gate: one install per job attempt, step, node, role and command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateKey {
    pub job: String,
    /// `SLURM_RESTART_COUNT`: a requeued job installs again.
    pub restart: String,
    /// The step within the job (`SLURM_STEP_ID`), `-` outside Slurm (where the job key is
    /// already one launch).
    pub step: String,
    pub host: String,
    pub role: String,
    /// FNV-1a of the install command, so that a changed command never reuses a status.
    pub command_hash: u64,
}

/// Where the rank's FlashInfer workspace goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlashinferBase {
    /// A persistent per-rank slot under this directory (`$XDG_CACHE_HOME` or `~/.cache`, then
    /// `tensorrt_llm/flashinfer`); `None` without a usable home.
    pub persistent: Option<PathBuf>,
    /// Where a temporary workspace goes (removed at exit) when there is no persistent slot:
    /// the node's temporary directory ([`temp_dir`]).
    pub tmp: PathBuf,
}

/// Everything a run needs, decided before it starts.
#[derive(Debug, Clone)]
pub struct Plan {
    pub info: RankInfo,
    pub role: Option<Role>,
    pub mode: Mode,
    /// The kind of the main child (for the environment table).
    pub main: Process,
    /// The task (single or rank 0); unused on a worker.
    pub command: Command,
    /// The MPI leader, worker and stop commands (shell strings), each behind the command's
    /// [`Command::rank_prefix`]: the environment set-up of the whole rank.
    pub leader_cmd: String,
    pub worker_cmd: String,
    pub leader_stop_cmd: String,
    pub stop_timeout: Duration,
    pub grace: Duration,
    /// Prefix for each output line of the children, or `None` to let them write directly.
    pub label: Option<String>,
    /// File for the children's output instead of rank-launch's stdout and stderr.
    pub log_file: Option<PathBuf>,
    pub summary_json: Option<PathBuf>,
    pub install: Option<Install>,
    pub cwd: Option<PathBuf>,
    /// The environment every child starts from: rank-launch's own with the rank exports, the
    /// job id and the library path; [`childenv::for_process`] shapes it per child.
    pub env: EnvList,
    pub ipc: Ipc,
    pub task_stdin: Stdin,
    pub flashinfer: Option<FlashinferBase>,
    /// Warnings to log once logging knows the rank (e.g. a stop timeout below the leader's own
    /// shutdown grace).
    pub warnings: Vec<String>,
    /// Readiness and liveness deadlines of the main child ([`crate::watch`]).
    pub watch: WatchSpec,
}

/// Why a plan cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// Bad input: exit code 2.
    #[error("{0}")]
    BadInput(String),
    #[error(transparent)]
    Rank(#[from] rank::RankEnvError),
}

impl PlanError {
    fn bad(text: impl Into<String>) -> Self {
        PlanError::BadInput(text.into())
    }
}

/// What the plan reads besides the options and the environment.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    pub host: &'a str,
    /// rank-launch's working directory, for relative paths.
    pub cwd: &'a Path,
    /// rank-launch's parent pid: ranks started by one local launcher share it.
    pub ppid: i32,
}

/// The job this rank belongs to, for job-scoped paths.
pub fn job_key(env: &EnvMap, ppid: i32) -> String {
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
    format!("ppid{ppid}")
}

/// FNV-1a, 64 bits: a stable name for a command, not a secret.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The install gate's key.
pub fn gate_key(env: &EnvMap, job: &str, host: &str, role: &str, command: &str) -> GateKey {
    let get = |var: &str| env.get(var).filter(|v| !v.is_empty()).cloned();
    GateKey {
        job: job.to_string(),
        restart: get("SLURM_RESTART_COUNT").unwrap_or_else(|| "0".into()),
        step: if env.contains_key("SLURM_JOB_ID") {
            get("SLURM_STEP_ID").unwrap_or_else(|| "-".into())
        } else {
            "-".into()
        },
        host: host.to_string(),
        role: role.to_string(),
        command_hash: fnv1a(command.as_bytes()),
    }
}

/// `%r` → rank, `%R` → role (`none` without one), `%h` → host, `%%` → `%`.
pub fn expand_pattern(path: &Path, rank: u32, role: &str, host: &str) -> PathBuf {
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

/// Checks a preset proxy address: `tcp://HOST:PORT` or `ipc://PATH`.
fn check_ipc_addr(text: &str) -> Result<(), PlanError> {
    let bad = || {
        PlanError::bad(format!(
            "`{IPC_ADDR_VAR}` is `{}`: expected `tcp://HOST:PORT` or `ipc://PATH`",
            text.escape_debug()
        ))
    };
    if let Some(rest) = text.strip_prefix("tcp://") {
        let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(bad());
        }
        Ok(())
    } else if let Some(path) = text.strip_prefix("ipc://") {
        if path.is_empty() || path.contains('\0') {
            return Err(bad());
        }
        Ok(())
    } else {
        Err(bad())
    }
}

/// An absolute directory from a variable, if it holds one.
fn absolute_dir(env: &EnvMap, var: &str) -> Option<PathBuf> {
    env.get(var).map(PathBuf::from).filter(|p| p.is_absolute())
}

/// The node's temporary directory: `$TMPDIR` when it is absolute, else `/tmp`.
pub fn temp_dir(env: &EnvMap) -> PathBuf {
    absolute_dir(env, "TMPDIR").unwrap_or_else(|| PathBuf::from("/tmp"))
}

/// Where the FlashInfer workspace of an MPI-path rank goes, or `None` when the user chose one
/// (`FLASHINFER_WORKSPACE_BASE`) or turned isolation off.
pub fn flashinfer_base(env: &EnvMap) -> Option<FlashinferBase> {
    if env.contains_key(childenv::FLASHINFER_VAR)
        || env.get(FLASHINFER_PER_PROCESS_VAR).map(|v| v.trim()) == Some("0")
    {
        return None;
    }
    let cache = absolute_dir(env, "XDG_CACHE_HOME")
        .or_else(|| absolute_dir(env, "HOME").map(|home| home.join(".cache")));
    Some(FlashinferBase {
        persistent: cache.map(|cache| cache.join("tensorrt_llm").join("flashinfer")),
        tmp: temp_dir(env),
    })
}

/// The readiness and liveness watch from the options (`expand` fills in path patterns).
fn watch_spec(
    opts: &Options,
    mode: Mode,
    expand: impl Fn(&PathBuf) -> PathBuf,
) -> Result<WatchSpec, PlanError> {
    let positive = |name: &str, d: Duration| {
        if d.is_zero() {
            Err(PlanError::bad(format!(
                "`{name}` is 0: expected a positive duration"
            )))
        } else {
            Ok(d)
        }
    };
    let mut probes = Vec::new();
    if let Some(url) = &opts.ready_url {
        watch::check_url(url).map_err(|e| PlanError::bad(format!("`--ready-url` {e}")))?;
        probes.push(ReadyProbe::Url(url.clone()));
    }
    if let Some(path) = &opts.ready_file {
        probes.push(ReadyProbe::File(expand(path)));
    }
    if let Some(pattern) = &opts.ready_line {
        let re = regex::Regex::new(pattern).map_err(|e| {
            PlanError::bad(format!(
                "`--ready-line` is `{}`: expected a regular expression ({})",
                pattern.escape_debug(),
                e.to_string().lines().last().unwrap_or("invalid")
            ))
        })?;
        probes.push(ReadyProbe::Line(re));
    }
    if probes.len() > 1 {
        return Err(PlanError::bad(
            "`--ready-url`, `--ready-file` and `--ready-line` are alternatives: give one",
        ));
    }
    let ready = match (opts.ready_timeout, probes.pop()) {
        (Some(timeout), Some(probe)) => Some(Ready {
            timeout: positive("--ready-timeout", timeout)?,
            probe,
        }),
        (None, None) => None,
        (Some(_), None) => {
            return Err(PlanError::bad(
                "`--ready-timeout` needs a probe: `--ready-url`, `--ready-file` or `--ready-line`",
            ));
        }
        (None, Some(_)) => {
            return Err(PlanError::bad(
                "a ready probe needs `--ready-timeout`: how long the task may take to get ready",
            ));
        }
    };
    let stall = match (opts.stall_timeout, &opts.stall_probe) {
        (Some(timeout), probe) => Some(Stall {
            timeout: positive("--stall-timeout", timeout)?,
            probe: match probe.clone().unwrap_or(StallProbe::Output) {
                StallProbe::File(path) => StallProbe::File(expand(&path)),
                other => other,
            },
        }),
        (None, None) => None,
        (None, Some(_)) => {
            return Err(PlanError::bad(
                "`--stall-probe` needs `--stall-timeout`: how long without progress is a stall",
            ));
        }
    };
    Ok(match mode {
        // Readiness and progress of a server are rank 0's; a worker can only be stopped.
        Mode::MpiWorker => WatchSpec {
            ready: None,
            stall: stall.map(|s| Stall {
                probe: StallProbe::Stopped,
                ..s
            }),
        },
        Mode::Single | Mode::MpiRank0 => WatchSpec { ready, stall },
    })
}

/// Works out the plan, or explains why the input is wrong.
pub fn plan(
    opts: &Options,
    command: Vec<OsString>,
    force_mpi: bool,
    mut env: EnvList,
    env_map: &EnvMap,
    cx: &Context<'_>,
) -> Result<Plan, PlanError> {
    let info = rank::detect(env_map)?;
    let role = role::parse(env_map.get(ROLE_VAR).map(String::as_str))
        .map_err(|e| PlanError::bad(e.to_string()))?;
    let mpi_path = force_mpi || role.is_some_and(Role::is_mpi_worker);
    let mode = match (mpi_path, info.rank) {
        (false, _) => Mode::Single,
        (true, 0) => Mode::MpiRank0,
        (true, _) => Mode::MpiWorker,
    };
    let main = match (mode, role) {
        (Mode::MpiRank0, _) => Process::Task,
        (Mode::MpiWorker, _) => Process::Worker,
        (Mode::Single, Some(Role::DisaggServer | Role::Benchmark)) => Process::SingleRole,
        (Mode::Single, _) => Process::Command,
    };
    let command = if command.is_empty() {
        match env_map.get("pytestCommand") {
            Some(script) if !script.trim().is_empty() => Command::Shell(script.clone()),
            _ if mode == Mode::MpiWorker => Command::Argv(Vec::new()),
            _ => {
                return Err(PlanError::bad(
                    "no command: give one after `--` or set `pytestCommand` to a shell command",
                ));
            }
        }
    } else {
        Command::Argv(command)
    };
    let mut warnings = Vec::new();
    // What wrapped trtllm-llmapi-launch wraps the leader, the workers and the stop helper.
    let rank_prefix = match (mpi_path, command.rank_prefix()) {
        (false, _) => String::new(),
        (true, Ok(prefix)) => prefix,
        (true, Err(error)) => {
            warnings.push(error.to_string());
            String::new()
        }
    };
    let command = command.without_llmapi_launch();
    if command.is_empty() && mode != Mode::MpiWorker {
        return Err(PlanError::bad(
            "the command is empty once `trtllm-llmapi-launch` is removed",
        ));
    }

    // Only rank 0 of the MPI path has a proxy: elsewhere these variables are not read.
    let ipc = match (env_map.get(IPC_ADDR_VAR), env_map.get(IPC_PORT_VAR)) {
        _ if mode != Mode::MpiRank0 => Ipc::Loopback(None),
        (Some(addr), _) if !addr.trim().is_empty() => {
            check_ipc_addr(addr.trim())?;
            if env_map.contains_key(IPC_PORT_VAR) {
                warnings.push(format!(
                    "`{IPC_ADDR_VAR}` is set, so `{IPC_PORT_VAR}` is not used"
                ));
            }
            Ipc::Preset(addr.trim().to_string())
        }
        (_, None) => Ipc::Loopback(None),
        (_, Some(text)) => Ipc::Loopback(Some(text.trim().parse::<u16>().map_err(|_| {
            PlanError::bad(format!(
                "`{IPC_PORT_VAR}` is `{}`: expected a TCP port number (0-65535)",
                text.escape_debug()
            ))
        })?)),
    };

    // Upstream's knobs count on the MPI path; a bad value is bad input there.
    let knob = |var: &'static str| -> Result<Option<Duration>, PlanError> {
        match env_map.get(var) {
            Some(text) if mpi_path => upstream_seconds(var, text).map(Some),
            _ => Ok(None),
        }
    };
    let stop_timeout = match (opts.leader_stop_timeout, knob(STOP_TIMEOUT_VAR)?) {
        (Some(t), _) | (None, Some(t)) => t,
        (None, None) => DEFAULT_STOP_TIMEOUT,
    };
    let grace = match (opts.grace_period, knob(TERM_GRACE_VAR)?) {
        (Some(t), _) | (None, Some(t)) => t,
        (None, None) if mpi_path => DEFAULT_MPI_GRACE,
        (None, None) => DEFAULT_GRACE,
    };
    if mpi_path {
        if let Some(text) = env_map.get(MGMN_GRACE_VAR) {
            let secs = text
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s > 0.0)
                .ok_or_else(|| {
                    PlanError::bad(format!(
                        "`{MGMN_GRACE_VAR}` is `{}`: expected a positive number of seconds",
                        text.escape_debug()
                    ))
                })?;
            if mode == Mode::MpiRank0 && stop_timeout.as_secs_f64() <= secs {
                warnings.push(format!(
                    "the leader's stop timeout ({}s) is not above its own shutdown grace \
                     (`{MGMN_GRACE_VAR}`={secs}s): a slow but orderly shutdown will be cut \
                     short and reported as exit 124",
                    stop_timeout.as_secs_f64()
                ));
            }
        }
    }
    let task_stdin = opts.task_stdin.unwrap_or(if mpi_path {
        Stdin::Null
    } else {
        Stdin::Inherit
    });

    for (name, value) in childenv::rank_exports(&info) {
        childenv::set(&mut env, name, value);
    }
    let job = job_key(env_map, cx.ppid);
    childenv::set(&mut env, JOB_ID_VAR, job.clone());
    if !opts.prepend_ld_library_path.is_empty() {
        let value = childenv::prepend_paths(
            childenv::get(&env, "LD_LIBRARY_PATH"),
            &opts.prepend_ld_library_path,
        );
        childenv::set(&mut env, "LD_LIBRARY_PATH", value);
    }
    let role_name = role.map_or_else(|| "none".to_string(), |r| r.to_string());
    let install = opts.install_cmd.as_ref().map(|cmd| {
        let root = opts
            .install_dir
            .clone()
            .unwrap_or_else(|| temp_dir(env_map));
        Install {
            command: cmd.clone(),
            root: if root.is_absolute() {
                root
            } else {
                cx.cwd.join(root)
            },
            key: gate_key(env_map, &job, cx.host, &role_name, cmd),
            timeout: opts.install_timeout,
            start_timeout: opts.install_start_timeout,
            installer: info.local_rank == 0,
            watch: opts.install_watch,
            lock: opts.install_lock,
        }
    });
    let expand = |p: &PathBuf| expand_pattern(p, info.rank, &role_name, cx.host);
    let absolute = |p: PathBuf| if p.is_absolute() { p } else { cx.cwd.join(p) };
    let watch = watch_spec(opts, mode, |p| absolute(expand(p)))?;
    Ok(Plan {
        mode,
        main,
        command,
        leader_cmd: format!("{rank_prefix}{}", opts.leader_cmd),
        worker_cmd: format!("{rank_prefix}{}", opts.worker_cmd),
        leader_stop_cmd: format!("{rank_prefix}{}", opts.leader_stop_cmd),
        stop_timeout,
        grace,
        label: opts.label.then(|| format!("{}: ", info.rank)),
        log_file: opts.log_file.as_ref().map(expand),
        summary_json: opts.summary_json.as_ref().map(expand),
        install,
        cwd: opts.chdir.clone().map(absolute),
        env,
        ipc,
        task_stdin,
        flashinfer: if mpi_path {
            flashinfer_base(env_map)
        } else {
            None
        },
        warnings,
        watch,
        info,
        role,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        opts: Options,
    }

    fn opts(args: &[&str]) -> Options {
        // clap also reads each option's variable (`RANK_LAUNCH_GRACE_PERIOD` ...): these tables
        // hold only if the test runner sets none of them.
        use clap::CommandFactory;
        let set: Vec<String> = Wrap::command()
            .get_arguments()
            .filter_map(|a| a.get_env())
            .filter(|var| std::env::var_os(var).is_some())
            .map(|var| var.to_string_lossy().into_owned())
            .collect();
        assert!(set.is_empty(), "unset {set:?} to run these table tests");
        Wrap::try_parse_from(std::iter::once("rank-launch").chain(args.iter().copied()))
            .expect("options")
            .opts
    }

    fn env(pairs: &[(&str, &str)]) -> (EnvList, EnvMap) {
        let list: EnvList = pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        let map = pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        (list, map)
    }

    fn cx() -> Context<'static> {
        Context {
            host: "n1",
            cwd: Path::new("/work"),
            ppid: 77,
        }
    }

    fn run(args: &[&str], vars: &[(&str, &str)], mpi: bool) -> Result<Plan, PlanError> {
        let (list, map) = env(vars);
        plan(&opts(args), vec!["task".into()], mpi, list, &map, &cx())
    }

    fn bad(args: &[&str], vars: &[(&str, &str)], mpi: bool) -> String {
        match run(args, vars, mpi) {
            Err(PlanError::BadInput(text)) => text,
            other => panic!("expected bad input, got {other:?}"),
        }
    }

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
    fn modes_and_main_process() {
        type Row<'a> = (&'a [(&'a str, &'a str)], bool, Mode, Process);
        let table: &[Row<'_>] = &[
            (&[], false, Mode::Single, Process::Command),
            (&[], true, Mode::MpiRank0, Process::Task),
            (
                &[("DISAGG_SERVING_TYPE", "BENCHMARK")],
                false,
                Mode::Single,
                Process::SingleRole,
            ),
            (
                &[("DISAGG_SERVING_TYPE", "GEN_1")],
                false,
                Mode::MpiRank0,
                Process::Task,
            ),
            (
                &[
                    ("DISAGG_SERVING_TYPE", "CTX_0"),
                    ("OMPI_COMM_WORLD_RANK", "1"),
                    ("OMPI_COMM_WORLD_SIZE", "2"),
                    ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
                    ("OMPI_COMM_WORLD_LOCAL_SIZE", "2"),
                ],
                false,
                Mode::MpiWorker,
                Process::Worker,
            ),
        ];
        for (vars, mpi, mode, main) in table {
            let p = run(&[], vars, *mpi).unwrap();
            assert_eq!((p.mode, p.main), (*mode, *main), "{vars:?}");
        }
    }

    #[test]
    fn upstream_knobs_and_their_precedence() {
        let t = |args: &[&str], vars: &[(&str, &str)], mpi| {
            let p = run(args, vars, mpi).unwrap();
            (p.stop_timeout.as_secs_f64(), p.grace.as_secs_f64())
        };
        assert_eq!(t(&[], &[], true), (120.0, 5.0), "upstream's defaults");
        assert_eq!(t(&[], &[], false), (120.0, 10.0), "single process");
        let knobs = [(STOP_TIMEOUT_VAR, "30"), (TERM_GRACE_VAR, "2")];
        assert_eq!(t(&[], &knobs, true), (30.0, 2.0));
        assert_eq!(
            t(
                &["--leader-stop-timeout", "7s", "--grace-period", "1s"],
                &knobs,
                true
            ),
            (7.0, 1.0),
            "rank-launch's own options win"
        );
        assert_eq!(
            t(&[], &knobs, false),
            (120.0, 10.0),
            "upstream's knobs are for the MPI path"
        );
        for (var, value) in [
            (STOP_TIMEOUT_VAR, "0"),
            (STOP_TIMEOUT_VAR, "1.5"),
            (STOP_TIMEOUT_VAR, "1234567"),
            (STOP_TIMEOUT_VAR, "-3"),
            (STOP_TIMEOUT_VAR, "10s"),
            (TERM_GRACE_VAR, ""),
            (TERM_GRACE_VAR, "five"),
            (MGMN_GRACE_VAR, "0"),
            (MGMN_GRACE_VAR, "soon"),
        ] {
            let text = bad(&[], &[(var, value)], true);
            assert!(text.starts_with(&format!("`{var}` is `")), "{text}");
        }
        // Only checked where they count.
        assert!(run(&[], &[(STOP_TIMEOUT_VAR, "bad")], false).is_ok());
        let p = run(
            &[],
            &[(MGMN_GRACE_VAR, "60"), (STOP_TIMEOUT_VAR, "60")],
            true,
        )
        .unwrap();
        assert!(
            p.warnings[0].contains("not above its own shutdown grace"),
            "{:?}",
            p.warnings
        );
        assert!(
            run(&[], &[(MGMN_GRACE_VAR, "2.5")], true)
                .unwrap()
                .warnings
                .is_empty()
        );
    }

    #[test]
    fn proxy_address() {
        let ipc = |vars: &[(&str, &str)]| run(&[], vars, true).unwrap().ipc;
        assert_eq!(ipc(&[]), Ipc::Loopback(None));
        assert_eq!(ipc(&[(IPC_PORT_VAR, "5555")]), Ipc::Loopback(Some(5555)));
        assert_eq!(
            ipc(&[(IPC_ADDR_VAR, "ipc:///tmp/x.sock")]),
            Ipc::Preset("ipc:///tmp/x.sock".into())
        );
        let p = run(
            &[],
            &[(IPC_ADDR_VAR, "tcp://10.0.0.7:6000"), (IPC_PORT_VAR, "1")],
            true,
        )
        .unwrap();
        assert_eq!(p.ipc, Ipc::Preset("tcp://10.0.0.7:6000".into()));
        assert!(p.warnings[0].contains("is not used"));
        for value in [
            "tcp://",
            "tcp://host",
            "tcp://:5",
            "tcp://h:99999",
            "ipc://",
            "udp://x:1",
            "/tmp/x",
        ] {
            let text = bad(&[], &[(IPC_ADDR_VAR, value)], true);
            assert!(
                text.contains("expected `tcp://HOST:PORT` or `ipc://PATH`"),
                "{value}: {text}"
            );
        }
        let text = bad(&[], &[(IPC_PORT_VAR, "x")], true);
        assert!(text.contains(IPC_PORT_VAR), "{text}");
        // A single process (a BENCHMARK inheriting a stray value) never reads them.
        let p = run(
            &[],
            &[(IPC_PORT_VAR, "x"), (IPC_ADDR_VAR, "udp://x:1")],
            false,
        )
        .unwrap();
        assert_eq!(p.ipc, Ipc::Loopback(None));
    }

    #[test]
    fn task_stdin_defaults() {
        let s = |args: &[&str], mpi| run(args, &[], mpi).unwrap().task_stdin;
        assert_eq!(s(&[], true), Stdin::Null, "upstream: the task reads EOF");
        assert_eq!(s(&[], false), Stdin::Inherit);
        assert_eq!(s(&["--task-stdin", "inherit"], true), Stdin::Inherit);
        assert_eq!(s(&["--task-stdin", "null"], false), Stdin::Null);
    }

    #[test]
    fn flashinfer_workspace() {
        let f = |vars: &[(&str, &str)]| flashinfer_base(&env(vars).1);
        let base = |persistent: Option<&str>, tmp: &str| {
            Some(FlashinferBase {
                persistent: persistent.map(PathBuf::from),
                tmp: tmp.into(),
            })
        };
        assert_eq!(
            f(&[("HOME", "/home/u")]),
            base(Some("/home/u/.cache/tensorrt_llm/flashinfer"), "/tmp")
        );
        assert_eq!(
            f(&[("HOME", "/home/u"), ("XDG_CACHE_HOME", "/c")]),
            base(Some("/c/tensorrt_llm/flashinfer"), "/tmp")
        );
        assert_eq!(
            f(&[("HOME", "relative"), ("TMPDIR", "/scratch")]),
            base(None, "/scratch")
        );
        assert_eq!(f(&[]), base(None, "/tmp"));
        // A relative $TMPDIR is no temporary directory.
        assert_eq!(f(&[("TMPDIR", "scratch")]), base(None, "/tmp"));
        assert_eq!(
            f(&[("HOME", "/h"), ("FLASHINFER_WORKSPACE_BASE", "/mine")]),
            None
        );
        assert_eq!(
            f(&[("HOME", "/h"), (FLASHINFER_PER_PROCESS_VAR, "0")]),
            None
        );
        assert!(f(&[("HOME", "/h"), (FLASHINFER_PER_PROCESS_VAR, "1")]).is_some());
        // Only on the MPI path.
        assert!(
            run(&[], &[("HOME", "/h")], false)
                .unwrap()
                .flashinfer
                .is_none()
        );
        assert!(
            run(&[], &[("HOME", "/h")], true)
                .unwrap()
                .flashinfer
                .is_some()
        );
    }

    #[test]
    fn gate_keys_change_with_requeue_step_and_command() {
        let map = |vars: &[(&str, &str)]| env(vars).1;
        let base = [("SLURM_JOB_ID", "42"), ("SLURM_STEP_ID", "3")];
        let k = gate_key(&map(&base), "42", "n1", "GEN_0", "pip install x");
        assert_eq!((k.restart.as_str(), k.step.as_str()), ("0", "3"));
        let requeued = gate_key(
            &map(&[base[0], base[1], ("SLURM_RESTART_COUNT", "1")]),
            "42",
            "n1",
            "GEN_0",
            "pip install x",
        );
        assert_ne!(k, requeued);
        assert_ne!(
            k,
            gate_key(&map(&base), "42", "n1", "GEN_0", "pip install y")
        );
        let mpirun = gate_key(&map(&[("SLURM_STEP_ID", "3")]), "ppid7", "n1", "none", "x");
        assert_eq!(
            mpirun.step, "-",
            "a stale step id outside a Slurm job is not used"
        );
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn paths_are_made_absolute_and_expanded() {
        let p = run(
            &[
                "--install-cmd",
                "true",
                "--install-dir",
                "gates",
                "--chdir",
                "sub",
                "--log-file",
                "/logs/%R.%r.log",
            ],
            &[("DISAGG_SERVING_TYPE", "BENCHMARK")],
            false,
        )
        .unwrap();
        assert_eq!(p.install.unwrap().root, PathBuf::from("/work/gates"));
        assert_eq!(p.cwd, Some(PathBuf::from("/work/sub")));
        assert_eq!(p.log_file, Some(PathBuf::from("/logs/BENCHMARK.0.log")));
    }

    #[test]
    fn missing_and_empty_commands() {
        let (list, map) = env(&[]);
        let err = plan(&opts(&[]), vec![], false, list.clone(), &map, &cx()).unwrap_err();
        assert!(err.to_string().contains("no command"), "{err}");
        let err = plan(
            &opts(&[]),
            vec!["trtllm-llmapi-launch".into()],
            false,
            list,
            &map,
            &cx(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("empty once"), "{err}");
    }
}
