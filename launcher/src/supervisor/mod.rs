//! The supervisor: the only code that spawns, signals and reaps processes.
//!
//! Shape (tini's, not tokio's): one thread, one loop. The signals rank-launch cares about are
//! blocked and read from a `signalfd`; the loop `poll`s that fd together with the children's
//! output pipes and an optional extra fd (the install gate's inotify), with a timeout for the
//! next deadline. On `SIGCHLD` it reaps with `waitpid(-1, WNOHANG)`: rank-launch is a child
//! subreaper, so orphaned grandchildren come back to it and are reaped here too. Nothing else
//! in the process waits for children (only [`spawn`] reaps a child that failed before running
//! its program, by pid, before anyone else can see it), so exactly one component reaps.
//!
//! Process hygiene, per child (see [`spawn`] for how it is started):
//! - its own process group (`setpgid(0, 0)`), so signals reach its whole tree;
//! - `PR_SET_PDEATHSIG(SIGKILL)`, with the `getppid` race check, so it dies with rank-launch;
//! - the signal mask cleared and `SIGPIPE` reset before `exec`;
//! - its group registered with the [`sentinel`], a second process holding the read end of a
//!   pipe: if rank-launch dies, even by `SIGKILL`, the pipe reaches end-of-file and the
//!   sentinel kills every registered group, grandchildren included (a parent-death signal only
//!   reaches the direct child). A group is forgotten once it is empty.

mod sentinel;
mod spawn;

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, killpg, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use sentinel::Sentinel;
use spawn::{Launch, LaunchError, Stack};

use crate::childenv::EnvList;
use crate::exit::{ChildEnd, LaunchExit};

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

/// Lines are written whole in one `write` of at most this many bytes, so lines from ranks
/// sharing one pipe never interleave (POSIX `PIPE_BUF`).
const ATOMIC_WRITE: usize = 4096;

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

/// Where a pump's lines go.
#[derive(Clone)]
enum Sink {
    Stdout,
    Stderr,
    File(std::rc::Rc<File>),
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

struct ChildRec {
    name: &'static str,
    pid: Pid,
    started: Instant,
    started_at: SystemTime,
    end: Option<ChildEnd>,
    ended: Option<Instant>,
    ended_at: Option<SystemTime>,
    /// The group is empty and the sentinel was told so.
    forgotten: bool,
}

/// One output pipe of a labelled child.
struct Pump {
    fd: OwnedFd,
    sink: Sink,
    prefix: String,
    partial: Vec<u8>,
}

pub struct Supervisor {
    signals: SignalFd,
    children: Vec<ChildRec>,
    pumps: Vec<Pump>,
    pending: VecDeque<Event>,
    sentinel: Option<Sentinel>,
    /// The stack children run on between their start and their `execve`.
    stack: Stack,
    /// Labelled output waiting for rank-launch's stdout (0) and stderr (1) to take it: whole
    /// lines, at most [`ATOMIC_WRITE`] bytes a chunk, written when `poll` says the stream is
    /// writable, so a reader that stalls never blocks the loop (or signal handling).
    queues: [OutQueue; 2],
}

/// Chunks of whole lines for one of rank-launch's own streams.
#[derive(Default)]
struct OutQueue {
    chunks: VecDeque<Vec<u8>>,
    bytes: usize,
    /// The reader is gone (`EPIPE`): output for this stream is dropped from now on.
    broken: bool,
}

/// Past this much queued output the children's pipes are not read: they block on their own
/// writes until the reader catches up.
const QUEUE_LIMIT: usize = 1 << 20;

impl Supervisor {
    /// Blocks the handled signals, becomes a child subreaper and starts the sentinel.
    ///
    /// Must run on the thread that keeps the signals blocked: the process's only thread.
    pub fn new() -> io::Result<Self> {
        let mut mask = SigSet::empty();
        for signal in HANDLED {
            mask.add(signal);
        }
        sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)?;
        // Orphaned grandchildren are re-parented to us, reaped by our loop and visible to the
        // final sweep, instead of escaping to init.
        nix::sys::prctl::set_child_subreaper(true)?;
        let sentinel = Sentinel::start()?;
        Ok(Supervisor {
            signals,
            children: Vec::new(),
            pumps: Vec::new(),
            pending: VecDeque::new(),
            sentinel: Some(sentinel),
            stack: Stack::new()?,
            queues: [OutQueue::default(), OutQueue::default()],
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
        }
        let sinks = match &spec.output {
            Output::Inherit => None,
            Output::Label(_) => Some((Sink::Stdout, Sink::Stderr)),
            Output::LabelFile(_, path) => {
                let file = std::rc::Rc::new(open(path)?);
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
        let pid = launch.start(&mut self.stack).map_err(launch_error)?;
        drop(held);
        if let (
            Some(readers),
            Some((out_sink, err_sink)),
            Output::Label(prefix) | Output::LabelFile(prefix, _),
        ) = (readers, sinks, &spec.output)
        {
            for (fd, sink) in readers.into_iter().zip([out_sink, err_sink]) {
                set_nonblocking(&fd);
                self.pumps.push(Pump {
                    fd,
                    sink,
                    prefix: prefix.clone(),
                    partial: Vec::new(),
                });
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
            forgotten: false,
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

    /// True while the child's main process has not been reaped.
    pub fn is_running(&self, id: ChildId) -> bool {
        self.children[id.0].end.is_none()
    }

    /// Sends `signal` to the child's whole process group. A group already gone is not an error.
    pub fn signal_group(&self, id: ChildId, signal: Signal) {
        let rec = &self.children[id.0];
        match killpg(rec.pid, signal) {
            Ok(()) => {
                tracing::debug!(child = rec.name, pgid = rec.pid.as_raw(), signal = %signal, "signalled group")
            }
            Err(Errno::ESRCH) => {}
            Err(err) => {
                tracing::warn!(child = rec.name, pgid = rec.pid.as_raw(), signal = %signal, %err, "failed to signal group")
            }
        }
    }

    /// Sends `signal` to every group that may still have members.
    pub fn signal_all(&self, signal: Signal) {
        for idx in 0..self.children.len() {
            if group_alive(self.children[idx].pid) {
                self.signal_group(ChildId(idx), signal);
            }
        }
    }

    /// Waits for the next event, pumping labelled output meanwhile.
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
                let stdout = io::stdout();
                let stderr = io::stderr();
                let streams = [stdout.as_fd(), stderr.as_fd()];
                let mut fds = Vec::with_capacity(4 + self.pumps.len());
                fds.push(PollFd::new(self.signals.as_fd(), PollFlags::POLLIN));
                let extra_at = extra.map(|fd| {
                    fds.push(PollFd::new(fd, PollFlags::POLLIN));
                    fds.len() - 1
                });
                let mut stream_at = [None, None];
                for (idx, queue) in self.queues.iter().enumerate() {
                    if !queue.chunks.is_empty() {
                        fds.push(PollFd::new(streams[idx], PollFlags::POLLOUT));
                        stream_at[idx] = Some(fds.len() - 1);
                    }
                }
                let first_pump = fds.len();
                // Backpressure: with too much output queued, leave the children's pipes be.
                if self.queues.iter().all(|q| q.bytes < QUEUE_LIMIT) {
                    for pump in &self.pumps {
                        fds.push(PollFd::new(pump.fd.as_fd(), PollFlags::POLLIN));
                    }
                }
                match poll(&mut fds, timeout) {
                    Ok(_) => {}
                    Err(Errno::EINTR) => continue,
                    Err(err) => return Err(err.into()),
                }
                let ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
                let extra_ready = extra_at.is_some_and(|i| ready(&fds[i]));
                let writable = stream_at.map(|at| at.is_some_and(|i| ready(&fds[i])));
                let pumps_ready: Vec<usize> = fds[first_pump..]
                    .iter()
                    .enumerate()
                    .filter(|(_, fd)| ready(fd))
                    .map(|(i, _)| i)
                    .collect();
                (ready(&fds[0]), extra_ready, writable, pumps_ready)
            };
            for (idx, is_writable) in writable.into_iter().enumerate() {
                if is_writable {
                    self.write_queued(idx);
                }
            }
            // Output first: a child's last lines come before the news of its exit.
            for idx in pumps_ready.into_iter().rev() {
                self.pump(idx);
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
        loop {
            let (pid, end) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, ChildEnd::Exited(code)),
                Ok(WaitStatus::Signaled(pid, signal, _)) => {
                    (pid, ChildEnd::Signaled(signal as i32))
                }
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                Err(err) => {
                    tracing::warn!(%err, "waitpid failed");
                    return;
                }
            };
            match self
                .children
                .iter()
                .position(|c| c.pid == pid && c.end.is_none())
            {
                Some(idx) => {
                    let rec = &mut self.children[idx];
                    rec.end = Some(end);
                    rec.ended = Some(Instant::now());
                    rec.ended_at = Some(SystemTime::now());
                    tracing::debug!(child = rec.name, pid = pid.as_raw(), ?end, "reaped");
                    self.pending.push_back(Event::Exited(ChildId(idx), end));
                    self.forget_if_empty(pid);
                }
                None if self.sentinel.as_ref().is_some_and(|s| s.pid == pid) => {
                    tracing::warn!(
                        ?end,
                        "the sentinel ended early; a SIGKILL of rank-launch could now leave grandchildren behind"
                    );
                    self.sentinel = None;
                }
                None => {
                    tracing::debug!(pid = pid.as_raw(), ?end, "reaped an orphaned descendant");
                    // It may have been the last member of one of our groups.
                    for idx in 0..self.children.len() {
                        let rec = &self.children[idx];
                        if rec.end.is_some() && !rec.forgotten {
                            self.forget_if_empty(rec.pid);
                        }
                    }
                }
            }
        }
    }

    /// Tells the sentinel to drop a child's group once no process is left in it, so that a
    /// later group with the same number is never killed on our account.
    fn forget_if_empty(&mut self, pgid: Pid) {
        if group_alive(pgid) {
            return;
        }
        if let Some(rec) = self.children.iter_mut().find(|c| c.pid == pgid) {
            rec.forgotten = true;
        }
        if let Some(sentinel) = &self.sentinel {
            sentinel.forget(pgid);
        }
    }

    /// Reads what a labelled child wrote and passes on its complete lines.
    fn pump(&mut self, idx: usize) {
        let mut buf = [0u8; 65536];
        let pump = &mut self.pumps[idx];
        let mut eof = false;
        loop {
            match nix::unistd::read(pump.fd.as_fd(), &mut buf) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => pump.partial.extend_from_slice(&buf[..n]),
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => break,
                Err(_) => {
                    eof = true;
                    break;
                }
            }
        }
        let split_at = if eof {
            if !pump.partial.is_empty() && pump.partial.last() != Some(&b'\n') {
                pump.partial.push(b'\n');
            }
            pump.partial.len()
        } else {
            pump.partial
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |p| p + 1)
        };
        if split_at > 0 {
            let lines: Vec<u8> = pump.partial.drain(..split_at).collect();
            let (prefix, sink) = (pump.prefix.clone(), pump.sink.clone());
            self.emit(&prefix, &lines, &sink);
        }
        if eof {
            self.pumps.remove(idx);
        }
    }

    /// Queues complete lines with a prefix, as chunks of whole lines of at most
    /// [`ATOMIC_WRITE`] bytes (a longer line is a chunk of its own); a file sink is written at once.
    fn emit(&mut self, prefix: &str, lines: &[u8], sink: &Sink) {
        let mut chunks = Vec::new();
        let mut chunk = Vec::with_capacity(ATOMIC_WRITE);
        for line in lines.split_inclusive(|&b| b == b'\n') {
            if !chunk.is_empty() && chunk.len() + prefix.len() + line.len() > ATOMIC_WRITE {
                chunks.push(std::mem::replace(
                    &mut chunk,
                    Vec::with_capacity(ATOMIC_WRITE),
                ));
            }
            chunk.extend_from_slice(prefix.as_bytes());
            chunk.extend_from_slice(line);
        }
        if !chunk.is_empty() {
            chunks.push(chunk);
        }
        let queue = match sink {
            Sink::File(file) => {
                for chunk in chunks {
                    if let Err(err) = (&**file).write_all(&chunk) {
                        tracing::warn!(%err, "failed to write to the log file");
                        break;
                    }
                }
                return;
            }
            Sink::Stdout => &mut self.queues[0],
            Sink::Stderr => &mut self.queues[1],
        };
        if queue.broken {
            return;
        }
        for chunk in chunks {
            queue.bytes += chunk.len();
            queue.chunks.push_back(chunk);
        }
    }

    /// Writes queued chunks to stdout (0) or stderr (1) while the stream takes them without
    /// blocking: `poll` said it is writable, and a pipe that is writable takes `PIPE_BUF` bytes.
    fn write_queued(&mut self, idx: usize) {
        let stdout = io::stdout();
        let stderr = io::stderr();
        let fd = if idx == 0 {
            stdout.as_fd()
        } else {
            stderr.as_fd()
        };
        let queue = &mut self.queues[idx];
        let Some(chunk) = queue.chunks.front_mut() else {
            return;
        };
        match nix::unistd::write(fd, chunk) {
            Ok(n) if n == chunk.len() => {
                queue.bytes -= n;
                queue.chunks.pop_front();
            }
            Ok(n) => {
                queue.bytes -= n;
                chunk.drain(..n);
            }
            Err(Errno::EINTR | Errno::EAGAIN) => {}
            Err(err) => {
                queue.broken = true;
                queue.chunks.clear();
                queue.bytes = 0;
                if idx == 0 {
                    tracing::warn!(%err, "stdout is gone; dropping the children's output from now on");
                }
            }
        }
    }

    /// Writes out what is queued, waiting for the streams at most until `deadline`.
    fn flush_queues(&mut self, deadline: Instant) {
        while self.queues.iter().any(|q| !q.chunks.is_empty()) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let dropped: usize = self.queues.iter().map(|q| q.bytes).sum();
                tracing::warn!(
                    dropped,
                    "the output readers are stalled; dropping queued output"
                );
                return;
            }
            let stdout = io::stdout();
            let stderr = io::stderr();
            let streams = [stdout.as_fd(), stderr.as_fd()];
            let idx = usize::from(self.queues[0].chunks.is_empty());
            let mut fds = [PollFd::new(streams[idx], PollFlags::POLLOUT)];
            match poll(
                &mut fds,
                PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX),
            ) {
                Ok(0) | Err(Errno::EINTR) => {}
                Ok(_) => self.write_queued(idx),
                Err(_) => return,
            }
        }
    }

    /// Ends everything that is left: `SIGTERM` to every live group, `SIGKILL` after `grace`,
    /// then drains the output pipes and reaps. Also sweeps re-parented descendants that left
    /// their group. Returns once nothing of ours is left, or after a bounded time.
    pub fn shutdown(&mut self, grace: Duration) {
        let live =
            |s: &Self| s.children.iter().any(|c| group_alive(c.pid)) || !s.orphans().is_empty();
        // The common case, everything already ended, costs one look.
        if live(self) {
            self.signal_all(Signal::SIGTERM);
            for pid in self.orphans() {
                let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
            }
            self.wait_until(Instant::now() + grace, live);
            if live(self) {
                tracing::warn!(
                    grace_ms = grace.as_millis() as u64,
                    "processes left after the grace period; sending SIGKILL"
                );
                self.signal_all(Signal::SIGKILL);
                for pid in self.orphans() {
                    let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
                }
                self.wait_until(Instant::now() + Duration::from_secs(5), live);
            }
        }
        // Output still buffered in the pipes is not lost: drain until every writer is gone,
        // then hand what is queued to the readers.
        let drain_until = Instant::now() + Duration::from_secs(2);
        while !self.pumps.is_empty() && Instant::now() < drain_until {
            if self.next_event(Some(drain_until), None).is_err() {
                break;
            }
        }
        self.flush_queues(Instant::now() + Duration::from_secs(5));
        self.reap();
        self.pending.clear();
    }

    /// Runs the loop until `busy` turns false or the deadline passes, polling `busy` often
    /// enough to notice descendants that are not our children.
    fn wait_until(&mut self, deadline: Instant, busy: impl Fn(&Self) -> bool) {
        while busy(self) && Instant::now() < deadline {
            let tick = (Instant::now() + Duration::from_millis(10)).min(deadline);
            match self.next_event(Some(tick), None) {
                Ok(Event::Signal(
                    signal @ (Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT),
                )) => {
                    tracing::warn!(signal = %signal, "second termination signal; killing now");
                    self.signal_all(Signal::SIGKILL);
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }

    /// Live descendants re-parented to us (we are a subreaper), other than the sentinel.
    fn orphans(&self) -> Vec<Pid> {
        let sentinel = self.sentinel.as_ref().map(|s| s.pid);
        let mut pids = children_of_self();
        pids.retain(|pid| {
            Some(*pid) != sentinel
                && !self
                    .children
                    .iter()
                    .any(|c| c.pid == *pid && c.end.is_none())
                && !is_zombie(*pid)
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

/// True while a process group has members.
fn group_alive(pgid: Pid) -> bool {
    killpg(pgid, None).is_ok()
}

/// Our children, from `/proc/<pid>/task/<pid>/children` (one thread: ours).
fn children_of_self() -> Vec<Pid> {
    let me = std::process::id();
    std::fs::read_to_string(format!("/proc/{me}/task/{me}/children"))
        .map(|text| {
            text.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .map(Pid::from_raw)
                .collect()
        })
        .unwrap_or_default()
}

/// True for a process that ended and waits to be reaped (the loop reaps those).
fn is_zombie(pid: Pid) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(") ")
                .map(|(_, rest)| rest.starts_with('Z'))
        })
        .unwrap_or(true)
}

fn set_nonblocking(fd: &OwnedFd) {
    if let Ok(flags) = fcntl(fd, FcntlArg::F_GETFL) {
        let _ = fcntl(
            fd,
            FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
        );
    }
}
