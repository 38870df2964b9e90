//! rank-launch's own stdout and stderr, written without ever blocking the supervisor.
//!
//! Both streams are usually pipes to `srun` (or a terminal), shared with other ranks and with
//! children that write to them directly. Whatever rank-launch writes there (labelled lines of
//! its children, its own log lines) goes into a queue first and is written by
//! [`Queue::write_some`] once `poll` says the stream can take it, at most [`PIPE_BUF`] bytes per
//! writable event: a pipe that `poll` calls writable takes that much without blocking, and
//! writes of at most that size from different ranks never interleave. So a stalled reader
//! delays only the output, never signal handling or reaping.
//!
//! Limits: labelled output is read from the children only while the queue holds less than
//! [`QUEUE_LIMIT`] (the children then block on their own writes: backpressure, no loss). Log
//! lines get [`LOG_HEADROOM`] more; past that they are dropped and counted, and a line saying
//! how many were dropped follows once the stream drains. [`flush`] bounds what is written at
//! exit.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// POSIX `PIPE_BUF` on Linux: the largest write a pipe takes atomically.
pub const PIPE_BUF: usize = libc::PIPE_BUF;
/// Queued labelled output past which the children's pipes are not read.
pub const QUEUE_LIMIT: usize = 1 << 20;
/// Extra room for rank-launch's own log lines.
pub const LOG_HEADROOM: usize = 256 << 10;

/// One of rank-launch's two output streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout = 0,
    Stderr = 1,
}

impl Stream {
    pub fn fd(self) -> BorrowedFd<'static> {
        // SAFETY: 1 and 2 stay open for the life of the process (nothing here closes them).
        unsafe { BorrowedFd::borrow_raw(self as i32 + 1) }
    }
}

/// Chunks of whole lines waiting for one stream.
#[derive(Debug, Default)]
pub struct Queue {
    chunks: VecDeque<Vec<u8>>,
    /// Bytes of the front chunk already written.
    written: usize,
    bytes: usize,
    /// The reader is gone (`EPIPE`): everything for this stream is dropped from now on.
    broken: bool,
    /// Log lines dropped since the stream was last writable.
    dropped_logs: u64,
}

/// What a write attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wrote {
    /// Some or all of the front chunk, or nothing was pending.
    Progress,
    /// The stream would block or the call was interrupted: try at the next writable event.
    NotNow,
    /// The reader is gone; the queue is dropped from now on. Reported once.
    Broke(Errno),
}

impl Queue {
    const EMPTY: Queue = Queue {
        chunks: VecDeque::new(),
        written: 0,
        bytes: 0,
        broken: false,
        dropped_logs: 0,
    };

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Room left for labelled output.
    pub fn room(&self) -> usize {
        QUEUE_LIMIT.saturating_sub(self.bytes)
    }

    /// Queues one chunk (whole lines, prefixed); dropped when the reader is gone.
    pub fn push(&mut self, chunk: Vec<u8>) {
        if self.broken || chunk.is_empty() {
            return;
        }
        self.bytes += chunk.len();
        self.chunks.push_back(chunk);
    }

    /// Queues one of rank-launch's own log lines, or counts it as dropped when the stream has
    /// not been taking output.
    fn push_log(&mut self, line: &[u8]) {
        if self.broken {
            return;
        }
        if self.bytes + line.len() > QUEUE_LIMIT + LOG_HEADROOM {
            self.dropped_logs += 1;
            return;
        }
        self.push(line.to_vec());
    }

    /// One write of at most [`PIPE_BUF`] bytes of the front chunk.
    pub fn write_some(&mut self, fd: BorrowedFd<'_>) -> Wrote {
        if self.dropped_logs > 0 && self.bytes + 128 <= QUEUE_LIMIT + LOG_HEADROOM {
            let note = format!(
                "[rank-launch] {} log line(s) dropped: this stream was not being read\n",
                self.dropped_logs
            );
            self.dropped_logs = 0;
            self.push(note.into_bytes());
        }
        let Some(front) = self.chunks.front() else {
            return Wrote::Progress;
        };
        let end = front.len().min(self.written + PIPE_BUF);
        match nix::unistd::write(fd, &front[self.written..end]) {
            Ok(n) => {
                self.written += n;
                self.bytes -= n;
                if self.written == front.len() {
                    self.chunks.pop_front();
                    self.written = 0;
                }
                Wrote::Progress
            }
            Err(Errno::EINTR | Errno::EAGAIN) => Wrote::NotNow,
            Err(err) => {
                self.broken = true;
                self.chunks.clear();
                self.bytes = 0;
                self.written = 0;
                Wrote::Broke(err)
            }
        }
    }
}

static QUEUES: Mutex<[Queue; 2]> = Mutex::new([Queue::EMPTY, Queue::EMPTY]);

/// Runs `f` on a stream's queue. `f` must not log (the log writer takes the same lock).
pub fn with<R>(stream: Stream, f: impl FnOnce(&mut Queue) -> R) -> R {
    let mut queues = QUEUES.lock().unwrap_or_else(|p| p.into_inner());
    f(&mut queues[stream as usize])
}

/// Queues one of rank-launch's own log lines for stderr.
pub fn push_log(line: &[u8]) {
    with(Stream::Stderr, |q| q.push_log(line));
}

/// True while something waits to be written to `stream`.
pub fn pending(stream: Stream) -> bool {
    with(stream, |q| !q.is_empty() || q.dropped_logs > 0)
}

/// Writes what `stream` can take now (called when `poll` said it is writable). Returns the
/// error once, when the reader went away.
pub fn write_ready(stream: Stream) -> Option<Errno> {
    match with(stream, |q| q.write_some(stream.fd())) {
        Wrote::Broke(err) => Some(err),
        Wrote::Progress | Wrote::NotNow => None,
    }
}

/// Writes out what is queued, waiting for the streams at most until `deadline`; returns the
/// number of bytes left unwritten.
pub fn flush(deadline: Instant) -> usize {
    loop {
        let waiting: Vec<Stream> = [Stream::Stdout, Stream::Stderr]
            .into_iter()
            .filter(|s| pending(*s))
            .collect();
        if waiting.is_empty() {
            return 0;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return waiting.iter().map(|s| with(*s, |q| q.bytes())).sum();
        }
        let mut fds: Vec<PollFd<'_>> = waiting
            .iter()
            .map(|s| PollFd::new(s.fd(), PollFlags::POLLOUT))
            .collect();
        let timeout =
            PollTimeout::try_from(left.min(Duration::from_secs(3600))).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, timeout) {
            Ok(_) => {
                let ready: Vec<bool> = fds
                    .iter()
                    .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                    .collect();
                for (stream, ready) in waiting.into_iter().zip(ready) {
                    if ready {
                        write_ready(stream);
                    }
                }
            }
            Err(Errno::EINTR) => {}
            Err(_) => return waiting.iter().map(|s| with(*s, |q| q.bytes())).sum(),
        }
    }
}

/// A blocking write for the one place that must not queue: `whoami`'s answer on stdout.
pub fn write_now(stream: Stream, bytes: &[u8]) -> io::Result<()> {
    let mut rest = bytes;
    while !rest.is_empty() {
        match nix::unistd::write(stream.fd().as_fd(), rest) {
            Ok(n) => rest = &rest[n..],
            Err(Errno::EINTR) => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn pipe() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK).unwrap()
    }

    #[test]
    fn long_chunks_go_out_pipe_buf_at_a_time() {
        let (r, w) = pipe();
        let mut q = Queue::default();
        q.push(vec![b'x'; 3 * PIPE_BUF + 10]);
        q.push(b"next\n".to_vec());
        let mut writes = 0;
        while !q.is_empty() {
            assert_eq!(q.write_some(w.as_fd()), Wrote::Progress);
            writes += 1;
        }
        assert_eq!(writes, 5, "4 pieces of the long chunk, then the next");
        let mut buf = vec![0u8; 8 * PIPE_BUF];
        let n = nix::unistd::read(r.as_fd(), &mut buf).unwrap();
        assert_eq!(n, 3 * PIPE_BUF + 15);
        assert_eq!(&buf[n - 5..n], b"next\n");
    }

    #[test]
    fn a_full_pipe_is_not_now_and_logs_are_dropped_and_counted() {
        let (r, w) = pipe();
        // Fill the pipe.
        while nix::unistd::write(w.as_fd(), &[0u8; 4096]).is_ok() {}
        let mut q = Queue::default();
        q.push(b"line\n".to_vec());
        assert_eq!(q.write_some(w.as_fd()), Wrote::NotNow);
        q.push(vec![b'y'; QUEUE_LIMIT + LOG_HEADROOM]);
        q.push_log(b"a log line\n");
        q.push_log(b"another\n");
        assert_eq!(q.dropped_logs, 2);
        drop(r);
        // The reader is gone: EPIPE (rank-launch ignores SIGPIPE, as the test harness does).
        assert!(matches!(
            q.write_some(w.as_fd()),
            Wrote::Broke(Errno::EPIPE)
        ));
        assert!(q.is_empty());
        q.push(b"after\n".to_vec());
        assert!(q.is_empty(), "nothing is queued for a broken stream");
    }

    #[test]
    fn the_drop_count_is_reported_once_there_is_room() {
        let (r, w) = pipe();
        let mut q = Queue {
            dropped_logs: 3,
            ..Default::default()
        };
        assert_eq!(q.write_some(w.as_fd()), Wrote::Progress);
        let mut buf = [0u8; 256];
        let n = nix::unistd::read(r.as_fd(), &mut buf).unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.contains("3 log line(s) dropped"), "{text}");
    }
}
