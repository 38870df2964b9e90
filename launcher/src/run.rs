//! What a rank runs and how its end becomes an exit code: the three modes.
//!
//! - **single**: one supervised process (no role, `DISAGG_SERVER`, `BENCHMARK`);
//! - **MPI rank 0**: the task (MPI environment stripped) beside the MPI leader (full
//!   environment); when the task ends, the leader is stopped (stop command, then `SIGTERM`,
//!   then `SIGKILL`, all bounded) and the rank exits with the task's code; when the leader ends
//!   first, the task is stopped and the rank exits with [`LaunchExit::LEADER_DIED`];
//! - **MPI rank > 0**: one supervised MPI worker.
//!
//! Signals are handled the same way in every mode: `SIGTERM`, `SIGINT` and `SIGQUIT` are
//! forwarded to every child's group and start the grace period, after which the groups get
//! `SIGKILL` (a second one kills at once); `SIGHUP`, `SIGUSR1` and `SIGUSR2` are forwarded as
//! notices and change nothing else. This module decides; [`crate::supervisor`] does.

use std::ffi::OsString;
use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::childenv::{self, EnvList};
use crate::command::Command;
use crate::exit::{ChildEnd, LaunchExit};
use crate::gate::{self, GateOutcome};
use crate::supervisor::{ChildId, ChildReport, ChildSpec, Event, Output, Supervisor};

/// TensorRT-LLM's proxy variables.
pub const SPAWN_PROXY_VAR: &str = "TLLM_SPAWN_PROXY_PROCESS";
pub const IPC_ADDR_VAR: &str = "TLLM_SPAWN_PROXY_PROCESS_IPC_ADDR";
pub const IPC_PORT_VAR: &str = "TLLM_SPAWN_PROXY_PROCESS_IPC_PORT";
pub const HMAC_KEY_VAR: &str = "TLLM_SPAWN_PROXY_PROCESS_IPC_HMAC_KEY";

/// TERM→KILL gap for a leader that ignored its stop command.
const LEADER_KILL_AFTER: Duration = Duration::from_secs(1);

/// How this rank runs its command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Single,
    MpiRank0,
    MpiWorker,
}

/// The per-node install gate's settings.
#[derive(Debug, Clone)]
pub struct Install {
    pub command: String,
    pub dir: PathBuf,
    pub timeout: Duration,
    /// Local rank 0 installs; the others wait.
    pub installer: bool,
}

/// Everything a run needs, decided by the caller.
#[derive(Debug, Clone)]
pub struct Plan {
    pub mode: Mode,
    /// The task (single or rank 0) or unused (worker).
    pub command: Command,
    pub leader_cmd: String,
    pub worker_cmd: String,
    pub leader_stop_cmd: String,
    pub leader_stop_timeout: Duration,
    pub grace: Duration,
    /// Prefix for each output line of the children, or `None` to let them write directly.
    pub label: Option<String>,
    /// File for the children's output instead of rank-launch's stdout and stderr.
    pub log_file: Option<PathBuf>,
    pub install: Option<Install>,
    pub cwd: Option<PathBuf>,
    /// The full environment, rank exports included.
    pub env: EnvList,
    /// Prefixes stripped from the main child's environment.
    pub scrub: &'static [&'static str],
    /// `TLLM_SPAWN_PROXY_PROCESS_IPC_PORT`, when set.
    pub ipc_port: Option<u16>,
}

/// How the run ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub code: u8,
    /// The main child's end, when it ran.
    pub end: Option<ChildEnd>,
    /// Why rank-launch chose this code, when it was not simply the child's.
    pub reason: Option<String>,
    pub children: Vec<ChildReport>,
    /// The argv of the main child, for the summary (never holds a secret).
    pub argv: Vec<OsString>,
    /// When the install gate let this rank go, if it had to pass one.
    pub gate_released_at: Option<std::time::SystemTime>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Gate(#[from] gate::GateError),
    #[error("the supervisor loop failed")]
    Loop(#[from] std::io::Error),
    #[error("`{IPC_PORT_VAR}`={port}: failed to bind 127.0.0.1:{port} for the proxy IPC address")]
    IpcPort {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to read random bytes for the HMAC key")]
    Random(#[source] getrandom::Error),
}

/// Picks the proxy IPC port by binding on loopback: the requested port, or one the kernel
/// chooses. The socket is closed again for the leader to bind; the kernel does not hand an
/// ephemeral port out twice in a row, which is what makes this better than probing from 10012.
pub fn choose_ipc_port(requested: Option<u16>) -> Result<u16, RunError> {
    let port = requested.unwrap_or(0);
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))
        .map_err(|source| RunError::IpcPort { port, source })?;
    let chosen = listener
        .local_addr()
        .map_err(|source| RunError::IpcPort { port, source })?
        .port();
    Ok(chosen)
}

/// 256 bits from the OS CSPRNG, as 64 lowercase hex characters.
pub fn new_hmac_key() -> Result<String, RunError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(RunError::Random)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn shell(command: &str) -> Vec<OsString> {
    vec!["bash".into(), "-c".into(), command.into()]
}

/// Runs the plan to its end.
pub fn run(sup: &mut Supervisor, plan: &Plan) -> Result<Outcome, RunError> {
    let mut gate_released_at = None;
    // Held until the run ends: see `gate::wait`.
    let mut gate_watch = None;
    if let Some(install) = &plan.install {
        let outcome = if install.installer {
            gate::install(
                sup,
                &install.dir,
                &install.command,
                plan.env.clone(),
                install.timeout,
            )?
        } else {
            gate::wait(sup, &install.dir, install.timeout, &mut gate_watch)?
        };
        match outcome {
            GateOutcome::Ready => {
                gate_released_at = Some(std::time::SystemTime::now());
                gate::yield_to_siblings();
            }
            GateOutcome::Failed(reason) => {
                tracing::error!("{reason}");
                return Ok(finish(
                    sup,
                    plan,
                    LaunchExit::INSTALL_FAILED,
                    None,
                    Some(reason),
                    Vec::new(),
                ));
            }
            GateOutcome::Interrupted(signal) => {
                let reason = format!("interrupted by {signal} during the install");
                return Ok(finish(
                    sup,
                    plan,
                    128 + signal as u8,
                    None,
                    Some(reason),
                    Vec::new(),
                ));
            }
        }
    }
    let outcome = match plan.mode {
        Mode::Single => {
            let mut env = plan.env.clone();
            childenv::scrub(&mut env, plan.scrub);
            run_one(sup, plan, "task", plan.command.argv(), env)
        }
        Mode::MpiWorker => run_one(
            sup,
            plan,
            "worker",
            shell(&plan.worker_cmd),
            plan.env.clone(),
        ),
        Mode::MpiRank0 => run_rank0(sup, plan),
    }?;
    drop(gate_watch);
    Ok(Outcome {
        gate_released_at,
        ..outcome
    })
}

fn output(plan: &Plan) -> Output {
    match (plan.label.clone(), plan.log_file.clone()) {
        (None, None) => Output::Inherit,
        (Some(prefix), None) => Output::Label(prefix),
        (None, Some(path)) => Output::File(path),
        (Some(prefix), Some(path)) => Output::LabelFile(prefix, path),
    }
}

fn spec(plan: &Plan, name: &'static str, argv: Vec<OsString>, env: EnvList) -> ChildSpec {
    ChildSpec {
        name,
        argv,
        env,
        cwd: plan.cwd.clone(),
        output: output(plan),
        stdin_null: name != "task",
    }
}

/// Where the shutdown started by a termination signal stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shutdown {
    /// No termination signal yet.
    Running,
    /// The signal was forwarded; every group gets `SIGKILL` at this instant.
    Grace(Instant),
    /// Every group got `SIGKILL`; what is left is waited for.
    Killed,
}

impl Shutdown {
    fn deadline(self) -> Option<Instant> {
        match self {
            Shutdown::Grace(at) => Some(at),
            Shutdown::Running | Shutdown::Killed => None,
        }
    }

    /// At the grace deadline: `SIGKILL` to every group.
    fn on_deadline(&mut self, sup: &Supervisor, now: Instant) {
        if matches!(*self, Shutdown::Grace(at) if now >= at) {
            tracing::warn!("grace period over; killing every child");
            sup.signal_all(Signal::SIGKILL);
            *self = Shutdown::Killed;
        }
    }

    /// Handles a signal the same way in every mode: a first termination signal is forwarded
    /// and starts the grace period, a second one kills at once; the others are notices.
    fn on_signal(&mut self, sup: &Supervisor, signal: Signal, grace: Duration) {
        match signal {
            Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT => {
                if *self == Shutdown::Running {
                    tracing::info!(signal = %signal, grace_ms = grace.as_millis() as u64, "forwarding to every child");
                    sup.signal_all(signal);
                    *self = Shutdown::Grace(Instant::now() + grace);
                } else {
                    tracing::warn!(signal = %signal, "second termination signal; killing every child now");
                    sup.signal_all(Signal::SIGKILL);
                    *self = Shutdown::Killed;
                }
            }
            other => {
                tracing::info!(signal = %other, "forwarding as a notice");
                sup.signal_all(other);
            }
        }
    }
}

/// One main child: single roles and MPI workers.
fn run_one(
    sup: &mut Supervisor,
    plan: &Plan,
    name: &'static str,
    argv: Vec<OsString>,
    env: EnvList,
) -> Result<Outcome, RunError> {
    let id = match sup.spawn(spec(plan, name, argv.clone(), env)) {
        Ok(id) => id,
        Err(err) => {
            tracing::error!("failed to start the {name}: {err}");
            return Ok(finish(
                sup,
                plan,
                err.exit_code(),
                None,
                Some(err.to_string()),
                argv,
            ));
        }
    };
    tracing::info!(child = name, pid = sup.pid(id), "started");
    let mut shutdown = Shutdown::Running;
    let end = loop {
        match sup.next_event(shutdown.deadline(), None)? {
            Event::Exited(done, end) if done == id => break end,
            Event::Signal(signal) => shutdown.on_signal(sup, signal, plan.grace),
            Event::Deadline => shutdown.on_deadline(sup, Instant::now()),
            _ => {}
        }
    };
    tracing::info!(child = name, code = end.code(), ?end, "ended");
    Ok(finish(sup, plan, end.code(), Some(end), None, argv))
}

/// Rank 0 of an MPI worker step: the task beside the leader.
fn run_rank0(sup: &mut Supervisor, plan: &Plan) -> Result<Outcome, RunError> {
    let port = choose_ipc_port(plan.ipc_port)?;
    let key = new_hmac_key()?;
    let mut leader_env = plan.env.clone();
    childenv::set(
        &mut leader_env,
        IPC_ADDR_VAR,
        format!("tcp://127.0.0.1:{port}"),
    );
    childenv::set(&mut leader_env, HMAC_KEY_VAR, key);
    let mut task_env = leader_env.clone();
    childenv::scrub(&mut task_env, plan.scrub);
    tracing::info!(ipc = %format!("tcp://127.0.0.1:{port}"), "proxy IPC address chosen");

    let task_argv = plan.command.argv();
    let leader = match sup.spawn(spec(
        plan,
        "leader",
        shell(&plan.leader_cmd),
        leader_env.clone(),
    )) {
        Ok(id) => id,
        Err(err) => {
            tracing::error!("failed to start the MPI leader: {err}");
            return Ok(finish(
                sup,
                plan,
                err.exit_code(),
                None,
                Some(format!("MPI leader: {err}")),
                task_argv,
            ));
        }
    };
    tracing::info!(child = "leader", pid = sup.pid(leader), "started");
    let task = match sup.spawn(spec(plan, "task", task_argv.clone(), task_env)) {
        Ok(id) => id,
        Err(err) => {
            tracing::error!("failed to start the task: {err}");
            stop_leader_now(sup, leader, plan.leader_stop_timeout);
            return Ok(finish(
                sup,
                plan,
                err.exit_code(),
                None,
                Some(err.to_string()),
                task_argv,
            ));
        }
    };
    tracing::info!(child = "task", pid = sup.pid(task), "started");

    let mut shutdown = Shutdown::Running;
    let mut task_end: Option<ChildEnd> = None;
    let mut leader_end: Option<ChildEnd> = None;
    let mut leader_died_first = false;
    let mut terminating = false;
    // Stopping the leader: stop command at t0, SIGTERM at t0 + timeout, SIGKILL one second later.
    let mut leader_term_at: Option<Instant> = None;
    let mut leader_kill_at: Option<Instant> = None;
    let mut task_kill_at: Option<Instant> = None;
    while task_end.is_none() || leader_end.is_none() {
        let deadline = [
            shutdown.deadline(),
            leader_term_at,
            leader_kill_at,
            task_kill_at,
        ]
        .into_iter()
        .flatten()
        .min();
        match sup.next_event(deadline, None)? {
            Event::Exited(id, end) if id == task => {
                task_end = Some(end);
                tracing::info!(child = "task", code = end.code(), ?end, "ended");
                if leader_end.is_none() {
                    tracing::info!("stopping the MPI leader");
                    let stop = spec(
                        plan,
                        "leader-stop",
                        shell(&plan.leader_stop_cmd),
                        leader_env.clone(),
                    );
                    if let Err(err) = sup.spawn(stop) {
                        tracing::warn!("failed to start the leader stop command: {err}");
                    }
                    leader_term_at = Some(Instant::now() + plan.leader_stop_timeout);
                }
            }
            Event::Exited(id, end) if id == leader => {
                leader_end = Some(end);
                leader_term_at = None;
                leader_kill_at = None;
                if task_end.is_none() {
                    if !terminating {
                        leader_died_first = true;
                        tracing::error!(
                            code = end.code(),
                            ?end,
                            "the MPI leader ended before the task; stopping the task"
                        );
                    }
                    sup.signal_group(task, Signal::SIGTERM);
                    task_kill_at = Some(Instant::now() + plan.grace);
                } else {
                    tracing::info!(child = "leader", code = end.code(), ?end, "ended");
                }
            }
            Event::Exited(_, end) => tracing::debug!(?end, "helper ended"),
            Event::Signal(signal) => {
                if matches!(signal, Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT) {
                    terminating = true;
                }
                shutdown.on_signal(sup, signal, plan.grace);
            }
            Event::Deadline => {
                let now = Instant::now();
                shutdown.on_deadline(sup, now);
                if leader_term_at.is_some_and(|at| now >= at) {
                    tracing::warn!(
                        timeout_ms = plan.leader_stop_timeout.as_millis() as u64,
                        "the MPI leader did not stop after the stop command; sending SIGTERM"
                    );
                    sup.signal_group(leader, Signal::SIGTERM);
                    leader_term_at = None;
                    leader_kill_at = Some(now + LEADER_KILL_AFTER);
                }
                if leader_kill_at.is_some_and(|at| now >= at) {
                    tracing::warn!("the MPI leader ignored SIGTERM; sending SIGKILL");
                    sup.signal_group(leader, Signal::SIGKILL);
                    leader_kill_at = None;
                }
                if task_kill_at.is_some_and(|at| now >= at) {
                    sup.signal_group(task, Signal::SIGKILL);
                    task_kill_at = None;
                }
            }
            Event::FdReady => {}
        }
    }
    let task_end = task_end.unwrap_or(ChildEnd::Exited(i32::from(LaunchExit::SETUP_FAILED)));
    if leader_died_first {
        let leader_code = leader_end.map_or(0, ChildEnd::code);
        let reason = format!("the MPI leader ended (exit code {leader_code}) before the task");
        return Ok(finish(
            sup,
            plan,
            LaunchExit::LEADER_DIED,
            Some(task_end),
            Some(reason),
            task_argv,
        ));
    }
    Ok(finish(
        sup,
        plan,
        task_end.code(),
        Some(task_end),
        None,
        task_argv,
    ))
}

/// Stops a leader whose task never started: stop command, bounded, then the group.
fn stop_leader_now(sup: &mut Supervisor, leader: ChildId, timeout: Duration) {
    sup.signal_group(leader, Signal::SIGTERM);
    let deadline = Instant::now() + timeout;
    while sup.is_running(leader) {
        match sup.next_event(Some(deadline), None) {
            Ok(Event::Deadline) | Err(_) => {
                sup.signal_group(leader, Signal::SIGKILL);
                break;
            }
            _ => {}
        }
    }
}

/// Cleans up what is left and builds the outcome.
fn finish(
    sup: &mut Supervisor,
    plan: &Plan,
    code: u8,
    end: Option<ChildEnd>,
    reason: Option<String>,
    argv: Vec<OsString>,
) -> Outcome {
    sup.shutdown(plan.grace);
    Outcome {
        code,
        end,
        reason,
        children: sup.reports(),
        argv,
        gate_released_at: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_64_hex_and_fresh() {
        let a = new_hmac_key().unwrap();
        let b = new_hmac_key().unwrap();
        assert_eq!(a.len(), 64);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(a, b);
    }

    #[test]
    fn ipc_port_is_bindable_and_a_taken_port_is_an_error() {
        let port = choose_ipc_port(None).unwrap();
        assert_ne!(port, 0);
        let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let taken_port = taken.local_addr().unwrap().port();
        let err = choose_ipc_port(Some(taken_port)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "`TLLM_SPAWN_PROXY_PROCESS_IPC_PORT`={taken_port}: failed to bind 127.0.0.1:{taken_port} for the proxy IPC address"
            )
        );
    }
}
