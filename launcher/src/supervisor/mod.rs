//! The supervisor: the only code that spawns, signals and reaps processes.
//!
//! Shape (tini's, not tokio's): one loop on the main thread. The signals rank-launch handles are
//! blocked and read from a `signalfd`; [`Supervisor::next_event`] `poll`s that fd together with
//! the labelled children's pipes, rank-launch's own stdout and stderr while output waits for
//! them ([`crate::stream`]) and an optional extra fd (the install gate's inotify), with a
//! timeout for the caller's next deadline. On `SIGCHLD` it reaps with `waitpid(-1, WNOHANG)`:
//! rank-launch is a child subreaper, so orphaned grandchildren come back to it and are reaped
//! here too. Nothing else waits for children (only [`spawn`] reaps a child that failed before
//! running its program, by pid, before anyone else can see it), so exactly one component reaps.
//!
//! Who may be signalled: a child's process group while it may have members. A group is
//! probed right after every reap; once found empty it is marked so and never signalled again,
//! because its number is free then and may come back as someone else's group. (While a group
//! has members, its number cannot be reused; members left behind by a dead leader are
//! re-parented to rank-launch, so their end reaches this loop and triggers the probe.)
//! Re-parented descendants that left their group are signalled by pid: they are our children
//! until reaped, so their pids cannot be reused either.
//!
//! Process hygiene, per child (see [`spawn`] for how it is started): its own process group;
//! `PR_SET_PDEATHSIG(SIGKILL)` with the `getppid` race check; signals rank-launch inherited as
//! ignored, and `SIGPIPE`, back to default, and the mask cleared; registration with the
//! [`sentinel`]; the terminal's foreground when it reads rank-launch's terminal stdin.

mod output;
mod procfs;
mod sentinel;
mod spawn;

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, killpg, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use output::{Pumps, Sink};
use sentinel::Sentinel;
use spawn::{Launch, LaunchError, Stack};

use crate::childenv::EnvList;
use crate::exit::{ChildEnd, LaunchExit};
use crate::policy::{Ending, Order, Why};
use crate::stream::{self, Stream};

/// Signals rank-launch handles; all others keep their default action.
const HANDLED: [Signal; 7] = [
    Signal::SIGCHLD,
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGQUIT,
];

/// Most time the final sweep waits for output still in the children's pipes.
const DRAIN_LIMIT: Duration = Duration::from_secs(1);
/// How often the final sweep looks for processes that are not our children (members of our
/// groups whose parent is alive) while it waits for them to end.
const SWEEP_TICK: Duration = Duration::from_millis(10);

/// Where a child's stdout and stderr go.
#[derive(Debug, Clone)]
pub enum Output {
    /// Inherited from rank-launch: no copy, no overhead.
    Inherit,
    /// Through rank-launch, each line prefixed (`srun --label` style).
    Label(String),
    /// Appended to a file (stdout and stderr both).
    File(PathBuf),
    /// Through rank-launch, each line prefixed, appended to a file.
    LabelFile(String, PathBuf),
}

/// Everything needed to start one child.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    /// What the child is, for logs and the summary (`task`, `leader`, ...).
    pub name: &'static str,
    pub argv: Vec<OsString>,
    /// The complete environment: nothing else is inherited.
    pub env: EnvList,
    pub cwd: Option<PathBuf>,
    pub output: Output,
    /// Read from `/dev/null` instead of rank-launch's stdin.
    pub stdin_null: bool,
}

/// A handle to a spawned child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildId(usize);

/// Something the loop reports to its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A child's main process ended (its group may live on).
    Exited(ChildId, ChildEnd),
    /// rank-launch received a signal (`SIGCHLD` is handled internally).
    Signal(Signal),
    /// The extra fd passed to [`Supervisor::next_event`] is readable.
    FdReady,
    /// A descendant that is not one of our children (re-parented to us) was reaped: something
    /// waiting for our groups to empty looks again.
    Reaped,
    /// The labelled children wrote output (only after [`Supervisor::report_output`]).
    Output,
    /// The deadline passed.
    Deadline,
}

/// What became of a child, for the summary.
#[derive(Debug, Clone)]
pub struct ChildReport {
    pub name: &'static str,
    pub pid: i32,
    pub end: Option<ChildEnd>,
    pub duration: Duration,
    /// Wall-clock start and end, for correlating ranks and hosts.
    pub started_at: SystemTime,
    pub ended_at: Option<SystemTime>,
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("`{program}` was not found")]
    NotFound { program: String },
    #[error("`{program}` is not executable")]
    NotExecutable {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("failed to start `{program}`")]
    Other {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot start `{program}` in directory `{dir}`")]
    Chdir {
        program: String,
        dir: String,
        #[source]
        source: io::Error,
    },
    #[error("failed to open output file `{path}`")]
    OutputFile {
        path: String,
        #[source]
        source: io::Error,
    },
}

impl SpawnError {
    /// The exit code a shell would give for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            SpawnError::NotFound { .. } => LaunchExit::NOT_FOUND,
            SpawnError::NotExecutable { .. } => LaunchExit::NOT_EXECUTABLE,
            SpawnError::Other { .. } | SpawnError::Chdir { .. } | SpawnError::OutputFile { .. } => {
                LaunchExit::SETUP_FAILED
            }
        }
    }
}

/// Whether a child's process group may still have members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Group {
    /// It may: signals go to it.
    Live,
    /// It was found empty: never signalled again (its number may be someone else's now).
    Empty,
}

struct ChildRec {
    name: &'static str,
    pid: Pid,
    started: Instant,
    started_at: SystemTime,
    end: Option<ChildEnd>,
    ended: Option<Instant>,
    ended_at: Option<SystemTime>,
    group: Group,
    /// Refused a signal with `EPERM` (said once).
    refused: bool,
}

pub struct Supervisor {
    signals: SignalFd,
    children: Vec<ChildRec>,
    pumps: Pumps,
    pending: VecDeque<Event>,
    sentinel: Option<Sentinel>,
    /// The stack children run on between their start and their `execve`.
    stack: Stack,
    setup: spawn::Setup,
    /// stdin is a terminal and rank-launch's group is its foreground: a child reading it gets
    /// the foreground.
    tty_foreground: bool,
    /// The child that holds the terminal's foreground.
    foreground: Option<Pid>,
    /// stdout's reader went away (said once).
    stdout_gone: bool,
    /// The durations the policies signal by, for the log line of each order.
    timing: Timing,
    /// Output of the labelled children is an event ([`Event::Output`]).
    output_events: bool,
}

/// The durations behind the policies' orders: the grace period after a termination signal,
/// and the MPI leader's stop timeout.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub grace: Duration,
    pub stop_timeout: Duration,
}

/// Every signal number a disposition can be read and set for.
fn settable_signals() -> impl Iterator<Item = libc::c_int> {
    (1..=libc::SIGRTMAX()).filter(|&s| s != libc::SIGKILL && s != libc::SIGSTOP)
}

/// The signals whose disposition is "ignore" now.
fn ignored_signals() -> Vec<libc::c_int> {
    settable_signals()
        .filter(|&sig| {
            // SAFETY: reads the current disposition only (no new action).
            unsafe {
                let mut old: libc::sigaction = std::mem::zeroed();
                libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                    && old.sa_sigaction == libc::SIG_IGN
            }
        })
        .collect()
}

fn ignore(sig: libc::c_int) {
    // SAFETY: sets a disposition of this process to SIG_IGN.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = libc::SIG_IGN;
        libc::sigaction(sig, &action, std::ptr::null_mut());
    }
}

impl Supervisor {
    /// Blocks the handled signals, becomes a child subreaper and starts the sentinel.
    ///
    /// Must run on the thread that keeps the signals blocked: the process's only thread, before
    /// any child exists (the sentinel is forked here).
    pub fn new(timing: Timing) -> io::Result<Self> {
        // What rank-launch inherited as ignored goes back to default in the children (SIGPIPE
        // is ignored by rank-launch itself, so it is always reset).
        let mut reset = ignored_signals();
        if !reset.contains(&libc::SIGPIPE) {
            reset.push(libc::SIGPIPE);
        }
        let tty_foreground = nix::unistd::isatty(io::stdin()).unwrap_or(false)
            && nix::unistd::tcgetpgrp(io::stdin()).ok() == Some(nix::unistd::getpgrp());
        if tty_foreground {
            // rank-launch hands the terminal to its task and writes to it from the background
            // afterwards (and takes it back): job-control stops must not hit rank-launch. The
            // children get the default back.
            for sig in [libc::SIGTTOU, libc::SIGTTIN, libc::SIGTSTP] {
                ignore(sig);
                if !reset.contains(&sig) {
                    reset.push(sig);
                }
            }
        }
        let mut mask = SigSet::empty();
        for signal in HANDLED {
            mask.add(signal);
        }
        sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)?;
        // Orphaned grandchildren are re-parented to us, reaped by our loop and visible to the
        // final sweep, instead of escaping to init. Some emulators refuse it: warn and go on.
        if let Err(err) = nix::sys::prctl::set_child_subreaper(true) {
            tracing::warn!(
                %err,
                "cannot become a child subreaper; descendants whose parent dies escape to init and are not swept at the end"
            );
        }
        let sentinel = match Sentinel::start() {
            Ok(s) => {
                tracing::debug!(pid = s.pid.as_raw(), "sentinel started");
                Some(s)
            }
            Err(err) => {
                tracing::warn!(
                    %err,
                    "cannot start the sentinel; a SIGKILL of rank-launch could leave grandchildren behind"
                );
                None
            }
        };
        Ok(Supervisor {
            signals,
            children: Vec::new(),
            pumps: Pumps::default(),
            pending: VecDeque::new(),
            sentinel,
            stack: Stack::new()?,
            setup: spawn::Setup {
                reset_signals: reset,
            },
            tty_foreground,
            foreground: None,
            stdout_gone: false,
            timing,
            output_events: false,
        })
    }

    /// Starts a child in its own process group.
    pub fn spawn(&mut self, spec: ChildSpec) -> Result<ChildId, SpawnError> {
        let program = spec.argv.first().cloned().unwrap_or_default();
        let program_text = program.to_string_lossy().into_owned();
        let launch_error = |err: LaunchError| match err {
            LaunchError::NotFound => SpawnError::NotFound {
                program: program_text.clone(),
            },
            LaunchError::NotExecutable(source) => SpawnError::NotExecutable {
                program: program_text.clone(),
                source,
            },
            LaunchError::Chdir(source) => SpawnError::Chdir {
                program: program_text.clone(),
                dir: spec
                    .cwd
                    .as_ref()
                    .map(|d| d.display().to_string())
                    .unwrap_or_default(),
                source,
            },
            LaunchError::Other(source) => SpawnError::Other {
                program: program_text.clone(),
                source,
            },
        };
        let mut launch =
            Launch::new(&spec.argv, &spec.env, spec.cwd.as_deref()).map_err(launch_error)?;
        let open = |path: &PathBuf| {
            File::options()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| SpawnError::OutputFile {
                    path: path.display().to_string(),
                    source,
                })
        };
        let other = |source: io::Error| SpawnError::Other {
            program: program_text.clone(),
            source,
        };
        // Descriptors for the child's 0, 1 and 2, kept open until it has started; and the
        // read ends of labelled output, kept by the pumps.
        let mut held: Vec<OwnedFd> = Vec::new();
        let mut readers = None;
        if spec.stdin_null {
            held.push(File::open("/dev/null").map_err(other)?.into());
            launch.stdio[0] = Some(held[held.len() - 1].as_raw_fd());
        } else if self.tty_foreground && self.foreground.is_none() {
            launch.foreground = true;
        }
        let sinks = match &spec.output {
            Output::Inherit => None,
            Output::Label(_) => Some((Sink::Stream(Stream::Stdout), Sink::Stream(Stream::Stderr))),
            Output::LabelFile(_, path) => {
                let file = Rc::new(open(path)?);
                Some((Sink::File(file.clone()), Sink::File(file)))
            }
            Output::File(path) => {
                held.push(open(path)?.into());
                let fd = held[held.len() - 1].as_raw_fd();
                launch.stdio[1] = Some(fd);
                launch.stdio[2] = Some(fd);
                None
            }
        };
        if sinks.is_some() {
            let (out_r, out_w) =
                nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| other(e.into()))?;
            let (err_r, err_w) =
                nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| other(e.into()))?;
            launch.stdio[1] = Some(out_w.as_raw_fd());
            launch.stdio[2] = Some(err_w.as_raw_fd());
            held.extend([out_w, err_w]);
            readers = Some([out_r, err_r]);
        }
        // The child registers its own group with the sentinel before it runs any program, so
        // no SIGKILL of rank-launch can fall between its start and the registration.
        launch.sentinel = self.sentinel.as_ref().map(|s| s.pipe.as_raw_fd());
        let pid = launch
            .start(&mut self.stack, &self.setup)
            .map_err(launch_error)?;
        drop(held);
        if launch.foreground {
            self.foreground = Some(pid);
        }
        if let (
            Some(readers),
            Some((out_sink, err_sink)),
            Output::Label(prefix) | Output::LabelFile(prefix, _),
        ) = (readers, sinks, &spec.output)
        {
            for (fd, sink) in readers.into_iter().zip([out_sink, err_sink]) {
                set_nonblocking(&fd);
                self.pumps.add(fd, sink, prefix.clone());
            }
        }
        tracing::debug!(child = spec.name, pid = pid.as_raw(), program = %program_text, "spawned");
        self.children.push(ChildRec {
            name: spec.name,
            pid,
            started: Instant::now(),
            started_at: SystemTime::now(),
            end: None,
            ended: None,
            ended_at: None,
            group: Group::Live,
            refused: false,
        });
        if self.children.len() > sentinel::MAX_GROUPS {
            tracing::warn!(
                children = self.children.len(),
                "more children than the sentinel tracks; a SIGKILL of rank-launch could leave some behind"
            );
        }
        Ok(ChildId(self.children.len() - 1))
    }

    /// The pid of a child.
    pub fn pid(&self, id: ChildId) -> i32 {
        self.children[id.0].pid.as_raw()
    }

    /// Whether [`Supervisor::next_event`] returns [`Event::Output`] when the labelled children
    /// wrote something (a watch that reads their output needs to see it at once).
    pub fn report_output(&mut self, on: bool) {
        self.output_events = on;
    }

    /// Matches every line of the labelled children's output against `re` until one matches
    /// ([`Supervisor::line_matched`]).
    pub fn watch_lines(&mut self, re: Option<regex::Regex>) {
        self.pumps.matcher = re;
        self.pumps.matched = false;
    }

    /// A line matched the expression given to [`Supervisor::watch_lines`].
    pub fn line_matched(&self) -> bool {
        self.pumps.matched
    }

    /// Bytes of output read from the labelled children so far.
    pub fn output_bytes(&self) -> u64 {
        self.pumps.bytes
    }

    /// The pid of a stopped process (`SIGSTOP`, `SIGTSTP`, a tracer) in the tree of a child
    /// that has not ended, if there is one.
    pub fn stopped_in_tree(&self, id: ChildId) -> Option<i32> {
        let rec = &self.children[id.0];
        if rec.end.is_some() {
            return None;
        }
        procfs::stopped_in_tree(rec.pid.as_raw(), 4096)
    }

    /// Sends `signal` to child `idx`'s group, unless it is known to be empty.
    fn signal_group(&mut self, idx: usize, signal: Signal) {
        let rec = &mut self.children[idx];
        if rec.group == Group::Empty {
            return;
        }
        match killpg(rec.pid, signal) {
            Ok(()) => {
                tracing::debug!(child = rec.name, pgid = rec.pid.as_raw(), signal = %signal, "signalled group")
            }
            Err(Errno::ESRCH) => self.mark_empty(idx),
            Err(err) => {
                if !rec.refused {
                    rec.refused = true;
                    tracing::warn!(child = rec.name, pgid = rec.pid.as_raw(), signal = %signal, %err, "cannot signal the group");
                }
            }
        }
    }

    /// Sends `signal` to every group that may still have members, and to descendants that
    /// left their group and were re-parented to us.
    /// A termination signal is followed by `SIGCONT`: a stopped process acts on nothing but
    /// `SIGKILL` until it is continued, and would otherwise sit out the grace period.
    fn signal_all(&mut self, signal: Signal) {
        let then_continue = crate::policy::is_termination(signal);
        for sig in std::iter::once(signal).chain(then_continue.then_some(Signal::SIGCONT)) {
            for idx in 0..self.children.len() {
                self.signal_group(idx, sig);
            }
            for pid in self.orphans() {
                let _ = nix::sys::signal::kill(pid, sig);
            }
        }
    }

    /// Logs a policy's [`Order::SignalAll`] with its reason and carries it out (the caller
    /// handles the other orders).
    pub fn carry_out(&mut self, order: Order) {
        let Order::SignalAll { signal, why } = order else {
            return;
        };
        let grace_ms = self.timing.grace.as_millis() as u64;
        let stop_s = self.timing.stop_timeout.as_secs_f64();
        match why {
            Why::Forwarded => {
                tracing::info!(signal = %signal, grace_ms, "forwarding to every child")
            }
            Why::Notice => tracing::info!(signal = %signal, "forwarding as a notice"),
            Why::SecondSignal => {
                tracing::warn!(signal = %signal, "second termination signal; killing every child now")
            }
            Why::GraceOver => tracing::warn!(grace_ms, "grace period over; killing every child"),
            Why::StopOverran => tracing::warn!(
                "MPI leader shutdown exceeded {stop_s}s after the task's end; terminating it"
            ),
            Why::StopHelperFailed => {
                tracing::warn!("the leader's stop command failed; terminating the MPI leader")
            }
            Why::TaskOverran => tracing::warn!(
                "the task did not end within {stop_s}s of the MPI leader's end; terminating it"
            ),
            Why::Leftovers => tracing::debug!("ending what is left of the children"),
            Why::Deadline => {
                tracing::warn!(signal = %signal, grace_ms, "deadline passed; terminating every child")
            }
        }
        self.signal_all(signal);
    }

    /// Marks a group empty for good and tells the sentinel.
    fn mark_empty(&mut self, idx: usize) {
        let rec = &mut self.children[idx];
        if rec.group == Group::Empty {
            return;
        }
        rec.group = Group::Empty;
        if let Some(sentinel) = &self.sentinel {
            sentinel.forget(rec.pid);
        }
    }

    /// Probes the groups of children that ended: right after a reap, when a group's last
    /// member may just have gone.
    fn probe_groups(&mut self) {
        for idx in 0..self.children.len() {
            let rec = &self.children[idx];
            if rec.end.is_some()
                && rec.group == Group::Live
                && killpg(rec.pid, None) == Err(Errno::ESRCH)
            {
                self.mark_empty(idx);
            }
        }
    }

    /// Waits for the next event, pumping output meanwhile.
    pub fn next_event(
        &mut self,
        deadline: Option<Instant>,
        extra: Option<BorrowedFd<'_>>,
    ) -> io::Result<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(event);
            }
            let timeout = match deadline {
                None => PollTimeout::NONE,
                Some(at) => {
                    let left = at.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(Event::Deadline);
                    }
                    // Round up so that we never wake just before the deadline.
                    PollTimeout::try_from(left + Duration::from_micros(999))
                        .unwrap_or(PollTimeout::MAX)
                }
            };
            let (signal_ready, extra_ready, writable, pumps_ready) = {
                let mut fds = Vec::with_capacity(4 + self.pumps.len());
                fds.push(PollFd::new(self.signals.as_fd(), PollFlags::POLLIN));
                let extra_at = extra.map(|fd| {
                    fds.push(PollFd::new(fd, PollFlags::POLLIN));
                    fds.len() - 1
                });
                let mut stream_at = Vec::new();
                for s in [Stream::Stdout, Stream::Stderr] {
                    if stream::pending(s) {
                        fds.push(PollFd::new(s.fd(), PollFlags::POLLOUT));
                        stream_at.push((s, fds.len() - 1));
                    }
                }
                let pollable = self.pumps.pollable();
                let first_pump = fds.len();
                for (_, fd) in &pollable {
                    fds.push(PollFd::new(*fd, PollFlags::POLLIN));
                }
                match poll(&mut fds, timeout) {
                    Ok(_) => {}
                    Err(Errno::EINTR) => continue,
                    Err(err) => return Err(err.into()),
                }
                let ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
                let writable: Vec<Stream> = stream_at
                    .iter()
                    .filter(|(_, at)| ready(&fds[*at]))
                    .map(|(s, _)| *s)
                    .collect();
                let pumps_ready: Vec<usize> = pollable
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| ready(&fds[first_pump + i]))
                    .map(|(_, (idx, _))| *idx)
                    .collect();
                (
                    ready(&fds[0]),
                    extra_at.is_some_and(|i| ready(&fds[i])),
                    writable,
                    pumps_ready,
                )
            };
            for s in writable {
                if let Some(err) = stream::write_ready(s) {
                    if s == Stream::Stdout && !self.stdout_gone {
                        self.stdout_gone = true;
                        tracing::warn!(%err, "stdout is gone; dropping the children's output from now on");
                    }
                }
            }
            // Output first: a child's last lines come before the news of its exit. Highest
            // index first: a pipe at end of file leaves the list.
            let before = self.pumps.bytes;
            for idx in pumps_ready.into_iter().rev() {
                self.pumps.read(idx);
            }
            if self.output_events
                && self.pumps.bytes != before
                && !self.pending.contains(&Event::Output)
            {
                self.pending.push_back(Event::Output);
            }
            if signal_ready {
                self.read_signals()?;
            }
            if extra_ready {
                self.pending.push_back(Event::FdReady);
            }
        }
    }

    fn read_signals(&mut self) -> io::Result<()> {
        while let Some(info) = self.signals.read_signal()? {
            let Ok(signal) = Signal::try_from(i32::try_from(info.ssi_signo).unwrap_or(0)) else {
                continue;
            };
            if signal == Signal::SIGCHLD {
                self.reap();
            } else {
                tracing::info!(signal = %signal, "received signal");
                self.pending.push_back(Event::Signal(signal));
            }
        }
        Ok(())
    }

    /// Reaps every child that has ended, ours or re-parented.
    fn reap(&mut self) {
        let mut reaped = false;
        loop {
            let (pid, end) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, ChildEnd::Exited(code)),
                Ok(WaitStatus::Signaled(pid, signal, _)) => {
                    (pid, ChildEnd::Signaled(signal as i32))
                }
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                Err(err) => {
                    tracing::warn!(%err, "waitpid failed");
                    break;
                }
            };
            reaped = true;
            if let Some(idx) = self
                .children
                .iter()
                .position(|c| c.pid == pid && c.end.is_none())
            {
                let rec = &mut self.children[idx];
                rec.end = Some(end);
                rec.ended = Some(Instant::now());
                rec.ended_at = Some(SystemTime::now());
                tracing::debug!(child = rec.name, pid = pid.as_raw(), ?end, "reaped");
                self.pending.push_back(Event::Exited(ChildId(idx), end));
                if self.foreground == Some(pid) {
                    self.foreground = None;
                    // Take the terminal back (SIGTTOU is ignored by rank-launch).
                    let _ = nix::unistd::tcsetpgrp(io::stdin(), nix::unistd::getpgrp());
                }
            } else if self.sentinel.as_ref().is_some_and(|s| s.pid == pid) {
                tracing::warn!(
                    ?end,
                    "the sentinel ended early; protection is gone: a SIGKILL of rank-launch could now leave grandchildren behind"
                );
                self.sentinel = None;
            } else {
                tracing::debug!(pid = pid.as_raw(), ?end, "reaped an orphaned descendant");
                if !self.pending.contains(&Event::Reaped) {
                    self.pending.push_back(Event::Reaped);
                }
            }
        }
        if reaped {
            self.probe_groups();
        }
    }

    /// True while any process of ours may be alive: a child, a member of a child's group, or
    /// a re-parented descendant.
    fn live(&mut self) -> bool {
        self.probe_groups();
        self.children.iter().any(|c| c.group == Group::Live) || !self.orphans().is_empty()
    }

    /// Ends what is left once the main work is over, continuing `ending` if a shutdown is
    /// already under way (so a termination signal's bound holds across it): termination
    /// signal, `SIGKILL` after the grace period, at most [`crate::policy::KILL_WAIT`] more.
    /// Then drains the output pipes and reaps. Returns false if processes were left behind.
    pub fn sweep(&mut self, mut ending: Ending) -> bool {
        let grace = self.timing.grace;
        // The common case, everything already ended, costs one look.
        if self.live() {
            if ending.is_idle() {
                let order =
                    ending.terminate(Signal::SIGTERM, Why::Leftovers, Instant::now(), grace);
                self.carry_out(order);
            }
            while !ending.is_stuck() && self.live() {
                let tick = Instant::now() + SWEEP_TICK;
                let at = ending.deadline().map_or(tick, |d| d.min(tick));
                match self.next_event(Some(at), None) {
                    Ok(Event::Signal(signal)) => {
                        let order = ending.on_signal(signal, Instant::now(), grace);
                        self.carry_out(order);
                    }
                    Ok(_) => {
                        if let Some(order) = ending.on_tick(Instant::now()) {
                            self.carry_out(order);
                        }
                    }
                    Err(_) => break,
                }
            }
        }
        let stuck = ending.is_stuck() && self.live();
        if stuck {
            let left: Vec<i32> = self
                .children
                .iter()
                .filter(|c| c.group == Group::Live)
                .map(|c| c.pid.as_raw())
                .chain(self.orphans().into_iter().map(Pid::as_raw))
                .collect();
            tracing::error!(
                groups_and_pids = ?left,
                "processes did not end within {}s after SIGKILL (stuck in the kernel, or not ours to signal); leaving them behind",
                crate::policy::KILL_WAIT.as_secs()
            );
        }
        // Output still buffered in the pipes is not lost: drain until every writer is gone.
        let drain_until = Instant::now() + DRAIN_LIMIT;
        while !self.pumps.is_empty() && Instant::now() < drain_until {
            if self.next_event(Some(drain_until), None).is_err() {
                break;
            }
        }
        self.reap();
        self.pending.clear();
        !stuck
    }

    /// Live descendants re-parented to us (we are a subreaper), other than the sentinel.
    fn orphans(&self) -> Vec<Pid> {
        let sentinel = self.sentinel.as_ref().map(|s| s.pid);
        let mut pids = procfs::children_of_self();
        pids.retain(|pid| {
            Some(*pid) != sentinel
                && !self
                    .children
                    .iter()
                    .any(|c| c.pid == *pid && c.end.is_none())
                && !procfs::is_zombie(*pid)
        });
        pids
    }

    /// Tells the sentinel that rank-launch is ending on purpose.
    pub fn finish(&mut self) {
        if let Some(sentinel) = self.sentinel.take() {
            sentinel.dismiss();
        }
    }

    /// What became of every child.
    pub fn reports(&self) -> Vec<ChildReport> {
        self.children
            .iter()
            .map(|c| ChildReport {
                name: c.name,
                pid: c.pid.as_raw(),
                end: c.end,
                duration: c
                    .ended
                    .unwrap_or_else(Instant::now)
                    .duration_since(c.started),
                started_at: c.started_at,
                ended_at: c.ended_at,
            })
            .collect()
    }
}

fn set_nonblocking(fd: &OwnedFd) {
    if let Ok(flags) = fcntl(fd, FcntlArg::F_GETFL) {
        let _ = fcntl(
            fd,
            FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
        );
    }
}
