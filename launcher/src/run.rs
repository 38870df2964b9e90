//! What a rank runs, carried out: the install gate, then one of the three modes.
//!
//! - **single**: one supervised process (no role, `DISAGG_SERVER`, `BENCHMARK`);
//! - **MPI rank 0**: the task beside the MPI leader, the leader's stop command once the task
//!   ends, upstream's exit-code rules ([`crate::policy::Rank0`]);
//! - **MPI rank > 0**: one supervised MPI worker.
//!
//! The decisions are the policies' ([`crate::policy`]); this module feeds them the
//! supervisor's events and carries out their orders. Each child's environment comes from the
//! table in [`crate::childenv`].

use std::ffi::OsString;
use std::net::{Ipv4Addr, TcpListener};
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant, SystemTime};

use crate::childenv::{self, Additions, Process};
use crate::exit::{ChildEnd, LaunchExit};
use crate::gate::{self, GateOutcome, InstallSpec, WaitSpec};
use crate::plan::{Ipc, Mode, Plan, Stdin};
use crate::policy::{Ending, Member, Order, Rank0, Single, Verdict};
use crate::probe::{self, Answer, Prober, Target};
use crate::summary::{Phase, Summary};
use crate::supervisor::{ChildId, ChildReport, ChildSpec, Event, Output, SpawnError, Supervisor};
use crate::watch::{Expired, Kind, ReadyProbe, StallProbe, Watch, WatchSpec};

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
    /// Processes survived `SIGKILL` and were left behind.
    pub left_behind: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Gate(#[from] gate::GateError),
    #[error(
        "`{}`={port}: failed to bind 127.0.0.1:{port} for the proxy IPC address",
        childenv::IPC_PORT_VAR
    )]
    IpcPort {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to read random bytes for the HMAC key")]
    Random(#[source] getrandom::Error),
}

/// Picks the proxy IPC port by binding on loopback: the requested port, or a free one below
/// the kernel's ephemeral range (`net.ipv4.ip_local_port_range`), chosen at random from 10000
/// up. The socket is closed again for the leader to bind; below the ephemeral range no other
/// process's outgoing connection or port-0 bind can take the number in between, which a
/// kernel-chosen port risks on a busy node. When no such port is free, one the kernel chooses.
pub fn choose_ipc_port(requested: Option<u16>) -> Result<u16, RunError> {
    let bind = |port: u16| {
        TcpListener::bind((Ipv4Addr::LOCALHOST, port))
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
    };
    if let Some(port) = requested {
        return bind(port).map_err(|source| RunError::IpcPort { port, source });
    }
    let low = ephemeral_low();
    if low > FIRST_PORT {
        let mut bytes = [0u8; 8 * 32];
        if getrandom::fill(&mut bytes).is_ok() {
            let span = u64::from(low - FIRST_PORT);
            for chunk in bytes.chunks_exact(8) {
                let r = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
                let port = FIRST_PORT + u16::try_from(r % span).unwrap_or(0);
                if let Ok(port) = bind(port) {
                    return Ok(port);
                }
            }
        }
    }
    bind(0).map_err(|source| RunError::IpcPort { port: 0, source })
}

/// Where the random proxy ports start: above the ports of common services.
const FIRST_PORT: u16 = 10000;

/// The first port of the kernel's ephemeral range (32768 when it cannot be read).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
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

/// The argv of the rank's main child: the worker command on an MPI worker, else the task.
pub fn main_argv(plan: &Plan) -> Vec<OsString> {
    match plan.mode {
        Mode::MpiWorker => shell(&plan.worker_cmd),
        Mode::Single | Mode::MpiRank0 => plan.command.argv(),
    }
}

/// Runs the plan to its end. `flashinfer` is the rank's claimed workspace on the MPI path.
/// An error comes back with every child already ended (a failing supervisor loop is a
/// verdict, ended like any other).
pub fn run(
    sup: &mut Supervisor,
    plan: &Plan,
    flashinfer: Option<OsString>,
    summary: &mut Summary,
) -> Result<Outcome, RunError> {
    let mut ending = Ending::Idle;
    let mut gate_released_at = None;
    // Held until the run ends: see `gate::wait`.
    let mut gate_watch = None;
    if let Some(install) = &plan.install {
        let dir = gate::gate_dir(&install.root, &install.key);
        let outcome = if install.installer {
            let spec = InstallSpec {
                dir: &dir,
                command: &install.command,
                env: childenv::for_process(&plan.env, Process::Install, &Additions::default()),
                timeout: install.timeout,
                lock: install.lock,
                grace: plan.grace,
            };
            gate::install(sup, spec, &mut ending)
        } else {
            let spec = WaitSpec {
                dir: &dir,
                timeout: install.timeout,
                start_timeout: install.start_timeout,
                watch: install.watch,
                grace: plan.grace,
            };
            gate::wait(sup, spec, &mut ending, &mut gate_watch)
        };
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(err) => {
                // Whatever the install left, ended by the policy already under way.
                sup.sweep(ending);
                return Err(err.into());
            }
        };
        let verdict = match outcome {
            GateOutcome::Ready => {
                gate_released_at = Some(std::time::SystemTime::now());
                gate::yield_to_siblings();
                None
            }
            GateOutcome::Failed(reason) => Some(Verdict {
                code: LaunchExit::INSTALL_FAILED,
                reason: Some(reason),
            }),
            GateOutcome::Interrupted(signal) => Some(Verdict {
                code: 128 + signal as u8,
                reason: Some(format!("interrupted by {signal} during the install")),
            }),
        };
        if let Some(verdict) = verdict {
            return Ok(finish(sup, ending, verdict, None, Vec::new()));
        }
    }
    let add = Additions {
        proxy: None,
        flashinfer,
    };
    let outcome = match plan.mode {
        Mode::Single => {
            let env = childenv::for_process(&plan.env, plan.main, &add);
            run_one(sup, plan, "task", plan.command.argv(), env, ending, summary)
        }
        Mode::MpiWorker => {
            let env = childenv::for_process(&plan.env, Process::Worker, &add);
            run_one(
                sup,
                plan,
                "worker",
                shell(&plan.worker_cmd),
                env,
                ending,
                summary,
            )
        }
        Mode::MpiRank0 => run_rank0(sup, plan, add, ending, summary),
    }?;
    drop(gate_watch);
    Ok(Outcome {
        gate_released_at,
        ..outcome
    })
}

/// How often the process tree is looked at for a stopped process, and a probe answer at the
/// latest acted on.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// The readiness and liveness watch of the main child, with its probes: the pure
/// [`Watch`] fed from the supervisor's counters, the probe thread and `/proc`.
struct Watcher {
    watch: Watch,
    main: ChildId,
    prober: Option<Prober>,
    /// Index of the ready and the stall target in the prober's list.
    ready_target: Option<usize>,
    stall_target: Option<usize>,
    last_bytes: u64,
    last_file: Option<Option<(u64, Option<SystemTime>)>>,
    next_look: Instant,
    active: bool,
}

impl Watcher {
    fn new(spec: &WatchSpec, sup: &mut Supervisor, main: ChildId, summary: &mut Summary) -> Self {
        let now = Instant::now();
        let mut targets = Vec::new();
        let mut ready_target = None;
        let mut stall_target = None;
        let line = match spec.ready.as_ref().map(|r| &r.probe) {
            Some(ReadyProbe::Line(re)) => Some(re.clone()),
            Some(ReadyProbe::Url(url)) => {
                if let Ok(url) = probe::parse_url(url) {
                    ready_target = Some(targets.len());
                    targets.push(Target::Http(url));
                }
                None
            }
            Some(ReadyProbe::File(path)) => {
                ready_target = Some(targets.len());
                targets.push(Target::File(path.clone()));
                None
            }
            None => None,
        };
        match spec.stall.as_ref().map(|s| &s.probe) {
            Some(StallProbe::Url(url)) => {
                if let Ok(url) = probe::parse_url(url) {
                    stall_target = Some(targets.len());
                    targets.push(Target::Http(url));
                }
            }
            Some(StallProbe::File(path)) => {
                stall_target = Some(targets.len());
                targets.push(Target::File(path.clone()));
            }
            _ => {}
        }
        let reads_output = spec.reads_output();
        sup.watch_lines(line);
        sup.report_output(reads_output);
        let prober = if targets.is_empty() {
            None
        } else {
            match Prober::start(targets) {
                Ok(p) => Some(p),
                Err(err) => {
                    tracing::warn!(%err, "cannot start the probe thread; the URL or file probe is off");
                    None
                }
            }
        };
        let watch = Watch::new(spec.clone(), now);
        summary.set_phase(match watch.phase() {
            crate::watch::Phase::Starting => Phase::Starting,
            crate::watch::Phase::Serving => Phase::Serving,
        });
        if !spec.is_empty() {
            tracing::debug!(ready = ?spec.ready, stall = ?spec.stall, "watching");
        }
        Watcher {
            active: !spec.is_empty(),
            watch,
            main,
            prober,
            ready_target,
            stall_target,
            last_bytes: sup.output_bytes(),
            last_file: None,
            next_look: now,
        }
    }

    fn deadline(&self) -> Option<Instant> {
        if !self.active {
            return None;
        }
        let look = self.next_look;
        Some(self.watch.deadline().map_or(look, |d| d.min(look)))
    }

    fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.prober.as_ref().filter(|_| self.active).map(Prober::fd)
    }

    /// No more watching: the main child ended, or the rank is ending anyway.
    fn stop(&mut self, sup: &mut Supervisor) {
        self.active = false;
        self.prober = None;
        sup.report_output(false);
    }

    /// Reads every probe and answers with the deadline that passed, if one did.
    fn observe(&mut self, sup: &mut Supervisor, summary: &mut Summary) -> Option<Expired> {
        if !self.active {
            return None;
        }
        let now = Instant::now();
        let wall = SystemTime::now();
        if self.watch.wants_ready() && sup.line_matched() && self.watch.on_ready(now) {
            self.became_ready(summary, wall);
        }
        let answers = self
            .prober
            .as_mut()
            .map(Prober::answers)
            .unwrap_or_default();
        for (target, answer) in answers {
            if Some(target) == self.ready_target {
                let ok = match answer {
                    Answer::Http(ok) => ok,
                    Answer::File(meta) => meta.is_some(),
                };
                if ok && self.watch.on_ready(now) {
                    self.became_ready(summary, wall);
                }
            } else if Some(target) == self.stall_target {
                let progressed = match answer {
                    Answer::Http(ok) => ok,
                    Answer::File(meta) => {
                        let changed = self.last_file.as_ref().is_some_and(|last| *last != meta)
                            || (self.last_file.is_none() && meta.is_some());
                        self.last_file = Some(meta);
                        changed
                    }
                };
                if progressed && self.watch.wants_progress() {
                    self.watch.on_progress(now);
                    summary.progress(wall);
                }
            }
        }
        let bytes = sup.output_bytes();
        if bytes != self.last_bytes {
            self.last_bytes = bytes;
            if self.watch.spec().stall.as_ref().map(|s| &s.probe) == Some(&StallProbe::Output)
                && self.watch.wants_progress()
            {
                self.watch.on_progress(now);
                summary.progress(wall);
            }
        }
        if now >= self.next_look {
            self.next_look = now + LOOK_EVERY;
            summary.tick();
            if self.watch.spec().stall.is_some() {
                self.watch.on_stopped(sup.stopped_in_tree(self.main), now);
            }
        }
        let expired = self.watch.on_tick(now)?;
        // A warning: the one error line is the exit's, with the same reason.
        tracing::warn!(
            deadline = expired.kind.as_str(),
            probe = %expired.probe,
            waited_s = expired.waited.as_secs_f64(),
            "{}; stopping the rank's children",
            expired.reason()
        );
        summary.deadline(&expired);
        self.stop(sup);
        Some(expired)
    }

    fn became_ready(&self, summary: &mut Summary, wall: SystemTime) {
        let after = self
            .watch
            .ready_at()
            .map(|at| at.saturating_duration_since(self.watch.started()))
            .unwrap_or_default();
        tracing::info!(after_s = after.as_secs_f64(), "ready");
        summary.ready(wall);
    }
}

/// The verdict of a rank whose deadline passed: its code and the deadline's reason, whatever
/// the children said when they were ended.
fn deadline_verdict(expired: &Expired) -> Verdict {
    Verdict {
        code: match expired.kind {
            Kind::Ready => LaunchExit::NOT_READY,
            Kind::Stall => LaunchExit::STALLED,
        },
        reason: Some(expired.reason()),
    }
}

fn output(plan: &Plan) -> Output {
    // A probe that reads the children's output needs it to pass through rank-launch.
    let through = plan.watch.reads_output();
    match (plan.label.clone(), plan.log_file.clone()) {
        (None, None) if through => Output::Label(String::new()),
        (None, None) => Output::Inherit,
        (Some(prefix), None) => Output::Label(prefix),
        (None, Some(path)) if through => Output::LabelFile(String::new(), path),
        (None, Some(path)) => Output::File(path),
        (Some(prefix), Some(path)) => Output::LabelFile(prefix, path),
    }
}

fn spec(plan: &Plan, name: &'static str, argv: Vec<OsString>, env: childenv::EnvList) -> ChildSpec {
    ChildSpec {
        name,
        argv,
        env,
        cwd: plan.cwd.clone(),
        output: output(plan),
        // Only the task reads rank-launch's stdin, and only when the plan says so.
        stdin_null: name != "task" || plan.task_stdin == Stdin::Null,
    }
}

/// One main child: single roles and MPI workers.
fn run_one(
    sup: &mut Supervisor,
    plan: &Plan,
    name: &'static str,
    argv: Vec<OsString>,
    env: childenv::EnvList,
    ending: Ending,
    summary: &mut Summary,
) -> Result<Outcome, RunError> {
    let id = match sup.spawn(spec(plan, name, argv.clone(), env)) {
        Ok(id) => id,
        Err(err) => {
            let verdict = start_failed(name, &err);
            return Ok(finish(sup, ending, verdict, None, argv));
        }
    };
    tracing::info!(child = name, pid = sup.pid(id), "started");
    let mut watcher = Watcher::new(&plan.watch, sup, id, summary);
    let mut m = Single::new(plan.grace);
    m.ending = ending;
    let mut end = None;
    let mut expired = None;
    let verdict = loop {
        if let Some(v) = m.verdict(name) {
            break v;
        }
        let deadline = [m.deadline(), watcher.deadline()]
            .into_iter()
            .flatten()
            .min();
        let event = match sup.next_event(deadline, watcher.fd()) {
            Ok(event) => event,
            Err(err) => break loop_failed(&err),
        };
        match event {
            Event::Exited(done, e) if done == id => {
                tracing::info!(child = name, code = e.code(), end = ?e, "ended");
                end = Some(e);
                watcher.stop(sup);
                summary.set_phase(Phase::Stopping);
                m.on_ended(e);
            }
            Event::Signal(signal) => {
                if crate::policy::is_termination(signal) {
                    watcher.stop(sup);
                    summary.terminated(signal);
                }
                let order = m.on_signal(signal, Instant::now());
                sup.carry_out(order);
            }
            Event::Deadline => {
                if let Some(order) = m.on_tick(Instant::now()) {
                    sup.carry_out(order);
                }
            }
            _ => {}
        }
        if let Some(e) = watcher.observe(sup, summary) {
            sup.carry_out(m.on_deadline(Instant::now()));
            expired = Some(e);
        }
    };
    let verdict = expired.as_ref().map_or(verdict, deadline_verdict);
    Ok(finish(sup, m.ending, verdict, end, argv))
}

/// Rank 0 of an MPI worker step: the task beside the leader.
fn run_rank0(
    sup: &mut Supervisor,
    plan: &Plan,
    mut add: Additions,
    ending: Ending,
    summary: &mut Summary,
) -> Result<Outcome, RunError> {
    let addr = match &plan.ipc {
        Ipc::Preset(addr) => addr.clone(),
        Ipc::Loopback(port) => format!("tcp://127.0.0.1:{}", choose_ipc_port(*port)?),
    };
    tracing::info!(ipc = %addr, preset = matches!(plan.ipc, Ipc::Preset(_)), "proxy IPC address");
    add.proxy = Some((addr, new_hmac_key()?));
    let task_argv = plan.command.argv();
    let leader_spec = spec(
        plan,
        "leader",
        shell(&plan.leader_cmd),
        childenv::for_process(&plan.env, Process::Leader, &add),
    );
    let leader = match sup.spawn(leader_spec) {
        Ok(id) => id,
        Err(err) => {
            let verdict = start_failed("MPI leader", &err);
            return Ok(finish(sup, ending, verdict, None, task_argv));
        }
    };
    tracing::info!(child = "leader", pid = sup.pid(leader), "started");
    let task_spec = spec(
        plan,
        "task",
        task_argv.clone(),
        childenv::for_process(&plan.env, Process::Task, &add),
    );
    let task = match sup.spawn(task_spec) {
        Ok(id) => id,
        Err(err) => {
            let verdict = start_failed("task", &err);
            // The leader is ended by the sweep (TERM, grace, KILL).
            return Ok(finish(sup, ending, verdict, None, task_argv));
        }
    };
    tracing::info!(child = "task", pid = sup.pid(task), "started");
    let stop_env = childenv::for_process(&plan.env, Process::StopHelper, &add);
    let mut watcher = Watcher::new(&plan.watch, sup, task, summary);
    let mut expired = None;

    let mut m = Rank0::new(plan.stop_timeout, plan.grace);
    m.ending = ending;
    let mut helper: Option<ChildId> = None;
    let mut task_end = None;
    let verdict = loop {
        if let Some(v) = m.verdict() {
            break v;
        }
        let deadline = [m.deadline(), watcher.deadline()]
            .into_iter()
            .flatten()
            .min();
        let event = match sup.next_event(deadline, watcher.fd()) {
            Ok(event) => event,
            Err(err) => break loop_failed(&err),
        };
        // After the wait: every deadline the policy sets counts from the event itself.
        let now = Instant::now();
        let mut orders = match event {
            Event::Exited(id, end) => {
                let member = if id == task {
                    task_end = Some(end);
                    watcher.stop(sup);
                    summary.set_phase(Phase::Stopping);
                    Member::Task
                } else if id == leader {
                    Member::Leader
                } else if Some(id) == helper {
                    Member::StopHelper
                } else {
                    continue;
                };
                let name = match member {
                    Member::Task => "task",
                    Member::Leader => "leader",
                    Member::StopHelper => "leader-stop",
                };
                if member == Member::Leader && task_end.is_none() && m.verdict().is_none() {
                    tracing::error!(
                        code = end.code(),
                        ?end,
                        timeout_s = plan.stop_timeout.as_secs_f64(),
                        "the MPI leader ended before the task; waiting for the task to end"
                    );
                } else {
                    tracing::info!(child = name, code = end.code(), ?end, "ended");
                }
                m.on_ended(member, end, now)
            }
            Event::Signal(signal) => {
                if crate::policy::is_termination(signal) {
                    watcher.stop(sup);
                    summary.terminated(signal);
                }
                vec![m.on_signal(signal, now)]
            }
            Event::Deadline => m.on_tick(now).into_iter().collect(),
            Event::FdReady | Event::Reaped | Event::Output => Vec::new(),
        };
        if let Some(e) = watcher.observe(sup, summary) {
            orders.push(m.on_deadline(Instant::now()));
            expired = Some(e);
        }
        for order in orders {
            if order != Order::StartStopHelper {
                sup.carry_out(order);
                continue;
            }
            tracing::info!("stopping the MPI leader");
            let stop = spec(
                plan,
                "leader-stop",
                shell(&plan.leader_stop_cmd),
                stop_env.clone(),
            );
            match sup.spawn(stop) {
                Ok(id) => helper = Some(id),
                Err(err) => {
                    tracing::warn!("failed to start the leader stop command: {err}");
                    let failed = ChildEnd::Exited(i32::from(err.exit_code()));
                    for order in m.on_ended(Member::StopHelper, failed, Instant::now()) {
                        sup.carry_out(order);
                    }
                }
            }
        }
    };
    let verdict = expired.as_ref().map_or(verdict, deadline_verdict);
    Ok(finish(sup, m.ending, verdict, task_end, task_argv))
}

/// The verdict when a child of the rank could not be started.
fn start_failed(what: &str, err: &SpawnError) -> Verdict {
    Verdict {
        code: err.exit_code(),
        reason: Some(format!("failed to start the {what}: {err}")),
    }
}

/// The verdict when the supervisor loop itself fails: the children are then ended like after
/// any other verdict, continuing the shutdown already under way.
fn loop_failed(err: &std::io::Error) -> Verdict {
    Verdict {
        code: LaunchExit::SETUP_FAILED,
        reason: Some(format!("the supervisor loop failed: {err}")),
    }
}

/// Ends what is left (continuing `ending`) and builds the outcome.
fn finish(
    sup: &mut Supervisor,
    ending: Ending,
    verdict: Verdict,
    end: Option<ChildEnd>,
    argv: Vec<OsString>,
) -> Outcome {
    let clean = sup.sweep(ending);
    let (code, reason) = match (clean, verdict.code) {
        (false, 0) => (
            LaunchExit::SETUP_FAILED,
            Some("processes of this rank did not end after SIGKILL and were left behind".into()),
        ),
        _ => (verdict.code, verdict.reason),
    };
    Outcome {
        code,
        end,
        reason,
        children: sup.reports(),
        argv,
        gate_released_at: None,
        left_behind: !clean,
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
        assert!(
            (FIRST_PORT..ephemeral_low()).contains(&port),
            "{port}: below the ephemeral range"
        );
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("free again for the leader");
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
