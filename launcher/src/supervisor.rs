//! The supervisor: the only code that spawns, signals and reaps processes.
//!
//! Shape (tini's, not tokio's): one thread, one loop. The signals rank-launch cares about are
//! blocked and read from a `signalfd`; the loop `poll`s that fd together with the children's
//! output pipes and an optional extra fd (the install gate's inotify), with a timeout for the
//! next deadline. On `SIGCHLD` it reaps with `waitpid(-1, WNOHANG)`: rank-launch is a child
//! subreaper, so orphaned grandchildren come back to it and are reaped here too. Nothing else
//! in the process waits for children (std `Child` handles are dropped unwaited), so exactly one
//! component reaps.
//!
//! Process hygiene, per child:
//! - its own process group (`setpgid(0, 0)`), so signals reach its whole tree;
//! - `PR_SET_PDEATHSIG(SIGKILL)`, with the `getppid` race check, so it dies with rank-launch;
//! - the signal mask cleared and `SIGPIPE` reset before `exec`;
//! - its group registered with the sentinel, a forked copy of rank-launch that holds the read end
//!   of a pipe: if rank-launch dies, even by `SIGKILL`, the pipe reaches end-of-file and the
//!   sentinel kills every registered group, grandchildren included (a parent-death signal only
//!   reaches the direct child).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, killpg, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, getpid};

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
            SpawnError::Other { .. } | SpawnError::OutputFile { .. } => LaunchExit::SETUP_FAILED,
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
    /// Must run while the process has a single thread: it forks.
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
            queues: [OutQueue::default(), OutQueue::default()],
        })
    }

    /// Starts a child in its own process group.
    pub fn spawn(&mut self, spec: ChildSpec) -> Result<ChildId, SpawnError> {
        let program = spec.argv.first().cloned().unwrap_or_default();
        let program_text = program.to_string_lossy().into_owned();
        let mut cmd = std::process::Command::new(&program);
        cmd.args(&spec.argv[1.min(spec.argv.len())..]);
        cmd.env_clear();
        cmd.envs(spec.env.iter().map(|(k, v)| (k, v)));
        cmd.process_group(0);
        if let Some(cwd) = &spec.cwd {
            cmd.current_dir(cwd);
        }
        if spec.stdin_null {
            cmd.stdin(Stdio::null());
        }
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
        let mut sinks = None;
        match &spec.output {
            Output::Inherit => {}
            Output::Label(_) => {
                sinks = Some((Sink::Stdout, Sink::Stderr));
            }
            Output::LabelFile(_, path) => {
                let file = std::rc::Rc::new(open(path)?);
                sinks = Some((Sink::File(file.clone()), Sink::File(file)));
            }
            Output::File(path) => {
                let file = open(path)?;
                let copy = file.try_clone().map_err(|source| SpawnError::OutputFile {
                    path: path.display().to_string(),
                    source,
                })?;
                cmd.stdout(file);
                cmd.stderr(copy);
            }
        }
        if sinks.is_some() {
            cmd.stdout(Stdio::piped());
            cmd.stderr(Stdio::piped());
        }
        let parent = getpid();
        let empty_mask: libc::sigset_t = *SigSet::empty().as_ref();
        // The child registers its own group with the sentinel before it runs any user code, so
        // no SIGKILL of rank-launch can fall between the fork and the registration. The pipe's
        // write end is close-on-exec: it is open here and gone once the program runs.
        let sentinel_fd = self.sentinel.as_ref().map(|s| s.pipe.as_raw_fd());
        // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
        // system calls (sigprocmask, signal, prctl, getppid, kill, getpid, write); it
        // allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                libc::sigprocmask(libc::SIG_SETMASK, &empty_mask, std::ptr::null_mut());
                libc::signal(libc::SIGPIPE, libc::SIG_DFL);
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                // The parent may have died before the prctl took effect.
                if libc::getppid() != parent.as_raw() {
                    libc::kill(libc::getpid(), libc::SIGKILL);
                }
                if let Some(fd) = sentinel_fd {
                    // A 5-byte write to a pipe is atomic; setpgid(0, 0) already ran, so the
                    // group id is our pid.
                    let mut record = [Sentinel::REGISTER, 0, 0, 0, 0];
                    record[1..].copy_from_slice(&libc::getpid().to_le_bytes());
                    libc::write(fd, record.as_ptr().cast(), record.len());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => SpawnError::NotFound {
                program: program_text.clone(),
            },
            io::ErrorKind::PermissionDenied => SpawnError::NotExecutable {
                program: program_text.clone(),
                source,
            },
            _ if source.raw_os_error() == Some(libc::ENOEXEC) => SpawnError::NotExecutable {
                program: program_text.clone(),
                source,
            },
            _ => SpawnError::Other {
                program: program_text.clone(),
                source,
            },
        })?;
        let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
        let mut child = child;
        if let (Some((out_sink, err_sink)), Output::Label(prefix) | Output::LabelFile(prefix, _)) =
            (sinks, &spec.output)
        {
            let pipes = [
                (child.stdout.take().map(OwnedFd::from), out_sink),
                (child.stderr.take().map(OwnedFd::from), err_sink),
            ];
            for (fd, sink) in pipes {
                let Some(fd) = fd else { continue };
                set_nonblocking(&fd);
                self.pumps.push(Pump {
                    fd,
                    sink,
                    prefix: prefix.clone(),
                    partial: Vec::new(),
                });
            }
        }
        // The std handle is dropped unwaited: this loop reaps.
        drop(child);
        tracing::debug!(child = spec.name, pid = pid.as_raw(), program = %program_text, "spawned");
        self.children.push(ChildRec {
            name: spec.name,
            pid,
            started: Instant::now(),
            started_at: SystemTime::now(),
            end: None,
            ended: None,
            ended_at: None,
        });
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
                }
                None if self.sentinel.as_ref().is_some_and(|s| s.pid == pid) => {
                    tracing::warn!(
                        ?end,
                        "the sentinel ended early; a SIGKILL of rank-launch could now leave grandchildren behind"
                    );
                    self.sentinel = None;
                }
                None => tracing::debug!(pid = pid.as_raw(), ?end, "reaped an orphaned descendant"),
            }
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
        if live(self) {
            self.signal_all(Signal::SIGTERM);
            for pid in self.orphans() {
                let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
            }
            self.wait_until(Instant::now() + grace, live);
        }
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

/// Our live children, from `/proc/self/task/*/children`.
fn children_of_self() -> Vec<Pid> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            out.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .map(Pid::from_raw),
            );
        }
    }
    // Zombies are reaped by the loop; only running processes count.
    out.retain(|pid| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                stat.rsplit_once(") ")
                    .map(|(_, rest)| !rest.starts_with('Z'))
            })
            .unwrap_or(false)
    });
    out
}

fn set_nonblocking(fd: &OwnedFd) {
    if let Ok(flags) = fcntl(fd, FcntlArg::F_GETFL) {
        let _ = fcntl(
            fd,
            FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
        );
    }
}

/// The process that kills our children's groups if rank-launch dies without cleaning up.
struct Sentinel {
    pid: Pid,
    pipe: OwnedFd,
}

impl Sentinel {
    /// Record tags on the pipe: register a group, forget a group, clean exit.
    const REGISTER: u8 = b'+';
    const DISMISS: u8 = b'.';

    fn start() -> io::Result<Self> {
        let (read_end, write_end) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        // SAFETY: called while the process is single-threaded (documented on
        // `Supervisor::new`), so the child may run ordinary code until it exits.
        match unsafe { fork() }? {
            ForkResult::Child => {
                drop(write_end);
                sentinel_main(read_end)
            }
            ForkResult::Parent { child } => {
                drop(read_end);
                Ok(Sentinel {
                    pid: child,
                    pipe: write_end,
                })
            }
        }
    }

    fn dismiss(self) {
        self.send(Self::DISMISS, 0);
    }

    fn send(&self, tag: u8, value: i32) {
        let mut record = [0u8; 5];
        record[0] = tag;
        record[1..].copy_from_slice(&value.to_le_bytes());
        // Five bytes to a pipe are written whole or not at all.
        if nix::unistd::write(&self.pipe, &record).is_err() {
            tracing::warn!(
                "the sentinel is gone; a SIGKILL of rank-launch could now leave grandchildren behind"
            );
        }
    }
}

/// The sentinel's whole life: collect groups until the pipe closes, then kill them unless
/// dismissed. Its signals stay blocked (inherited mask), so a step-wide `SIGTERM` leaves it be.
fn sentinel_main(pipe: OwnedFd) -> ! {
    // Hold no other descriptor: an inherited pipe or PMI socket must close when its owner does.
    // The pipe moves to fd 3, stdio goes to /dev/null, and one close_range drops the rest.
    let raw = pipe.as_raw_fd();
    // SAFETY: plain system calls on descriptors this process owns; `pipe` is not used again
    // after this block (fd 3 is read through `PIPE_FD`), and no other Rust object refers to the
    // descriptors closed here.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        for fd in 0..3 {
            libc::dup2(null, fd);
        }
        if raw != PIPE_FD {
            libc::dup2(raw, PIPE_FD);
        }
        if libc::syscall(libc::SYS_close_range, PIPE_FD + 1, u32::MAX, 0) != 0 {
            // Kernels before 5.9: one by one.
            for fd in PIPE_FD + 1..1024 {
                libc::close(fd);
            }
        }
    }
    std::mem::forget(pipe);
    // SAFETY: fd 3 is the pipe's read end, owned by this process from here on.
    let pipe = unsafe { OwnedFd::from_raw_fd(PIPE_FD) };
    let mut groups: Vec<i32> = Vec::new();
    let mut dismissed = false;
    let mut record = [0u8; 5];
    while let Ok(true) = read_full(&pipe, &mut record) {
        let value = i32::from_le_bytes([record[1], record[2], record[3], record[4]]);
        match record[0] {
            Sentinel::REGISTER => groups.push(value),
            Sentinel::DISMISS => dismissed = true,
            _ => {}
        }
    }
    if !dismissed {
        for pgid in groups {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
    }
    // SAFETY: ends this process without running the parent's atexit handlers or destructors.
    unsafe { libc::_exit(0) }
}

/// Where the sentinel keeps its end of the pipe.
const PIPE_FD: i32 = 3;

/// Reads exactly `buf.len()` bytes; `Ok(false)` at end of file.
fn read_full(fd: &OwnedFd, buf: &mut [u8]) -> nix::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match nix::unistd::read(fd.as_fd(), &mut buf[filled..]) {
            Ok(0) => return Ok(false),
            Ok(n) => filled += n,
            Err(Errno::EINTR) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(true)
}
