//! The output multiplexer: the pipes of labelled children, read with a budget, cut into
//! prefixed whole lines, and queued for rank-launch's stdout or stderr ([`crate::stream`]) or
//! appended to a log file.
//!
//! Bounds: one read of at most [`READ_BUDGET`] bytes per pipe and wakeup, and never more than
//! the stream's queue has room for (counting a prefix for every byte, in case each is a line),
//! so the queue limit holds at enqueue; a line that grows past [`MAX_PARTIAL`] without a newline
//! is cut there and passed on as a line of its own.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::rc::Rc;

use nix::errno::Errno;

use crate::stream::{self, PIPE_BUF, Stream};

/// Most bytes read from one pipe per wakeup.
pub(super) const READ_BUDGET: usize = 64 * 1024;
/// Longest partial line kept; past it the line is cut.
pub(super) const MAX_PARTIAL: usize = 64 * 1024;

/// Where a pump's lines go.
#[derive(Clone)]
pub(super) enum Sink {
    Stream(Stream),
    File(Rc<File>),
}

/// One output pipe of a labelled child.
struct Pump {
    fd: OwnedFd,
    sink: Sink,
    prefix: String,
    partial: Vec<u8>,
}

#[derive(Default)]
pub(super) struct Pumps {
    list: Vec<Pump>,
    buf: Vec<u8>,
    /// Bytes read from every pipe so far: the children's output grew when this did.
    pub bytes: u64,
    /// Lines are matched against this until one matches (`--ready-line`).
    pub matcher: Option<regex::Regex>,
    pub matched: bool,
}

/// True when one of `lines` matches (invalid UTF-8 is replaced first).
fn any_line_matches(re: &regex::Regex, lines: &[u8]) -> bool {
    lines
        .split(|&b| b == b'\n')
        .any(|line| re.is_match(&String::from_utf8_lossy(line)))
}

impl Pumps {
    pub fn add(&mut self, fd: OwnedFd, sink: Sink, prefix: String) {
        self.list.push(Pump {
            fd,
            sink,
            prefix,
            partial: Vec::new(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// How much pump `idx` may read now.
    fn allowance(&self, idx: usize) -> usize {
        let pump = &self.list[idx];
        match &pump.sink {
            Sink::File(_) => READ_BUDGET,
            Sink::Stream(s) => {
                let room = stream::with(*s, |q| q.room());
                (room / (pump.prefix.len() + 1)).min(READ_BUDGET)
            }
        }
    }

    /// The pipes worth polling now (those whose sink has room), with their index.
    pub fn pollable(&self) -> Vec<(usize, BorrowedFd<'_>)> {
        (0..self.list.len())
            .filter(|&i| self.allowance(i) > 0)
            .map(|i| (i, self.list[i].fd.as_fd()))
            .collect()
    }

    /// One budgeted read of pump `idx`; its complete lines go to the sink.
    pub fn read(&mut self, idx: usize) {
        let limit = self.allowance(idx);
        if limit == 0 {
            return;
        }
        self.buf.resize(limit, 0);
        let pump = &mut self.list[idx];
        let eof = match nix::unistd::read(pump.fd.as_fd(), &mut self.buf[..limit]) {
            Ok(0) => true,
            Ok(n) => {
                pump.partial.extend_from_slice(&self.buf[..n]);
                self.bytes += n as u64;
                false
            }
            Err(Errno::EINTR | Errno::EAGAIN) => return,
            Err(_) => true,
        };
        let split_at = if eof {
            if !pump.partial.is_empty() && pump.partial.last() != Some(&b'\n') {
                pump.partial.push(b'\n');
            }
            pump.partial.len()
        } else {
            let whole = pump
                .partial
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |p| p + 1);
            if whole == 0 && pump.partial.len() >= MAX_PARTIAL {
                // A line without an end in sight: cut it, as its own line.
                let mut cut: Vec<u8> = pump.partial.drain(..MAX_PARTIAL).collect();
                cut.push(b'\n');
                if let (Some(re), false) = (&self.matcher, self.matched) {
                    self.matched = any_line_matches(re, &cut);
                }
                emit(&pump.prefix, &cut, &pump.sink);
                0
            } else {
                whole
            }
        };
        if split_at > 0 {
            let lines: Vec<u8> = pump.partial.drain(..split_at).collect();
            if let (Some(re), false) = (&self.matcher, self.matched) {
                self.matched = any_line_matches(re, &lines);
            }
            emit(&pump.prefix, &lines, &pump.sink);
        }
        if eof {
            self.list.remove(idx);
        }
    }

    /// How many pipes are open.
    pub fn len(&self) -> usize {
        self.list.len()
    }
}

/// Passes complete lines on with a prefix: to a stream's queue as chunks of whole lines of at
/// most [`PIPE_BUF`] bytes (a longer line is a chunk of its own, written `PIPE_BUF` at a time),
/// or to a file at once.
fn emit(prefix: &str, lines: &[u8], sink: &Sink) {
    let mut chunks = Vec::new();
    let mut chunk = Vec::with_capacity(PIPE_BUF);
    for line in lines.split_inclusive(|&b| b == b'\n') {
        if !chunk.is_empty() && chunk.len() + prefix.len() + line.len() > PIPE_BUF {
            chunks.push(std::mem::replace(&mut chunk, Vec::with_capacity(PIPE_BUF)));
        }
        chunk.extend_from_slice(prefix.as_bytes());
        chunk.extend_from_slice(line);
    }
    if !chunk.is_empty() {
        chunks.push(chunk);
    }
    match sink {
        Sink::File(file) => {
            for chunk in chunks {
                if let Err(err) = (&**file).write_all(&chunk) {
                    tracing::warn!(%err, "failed to write to the log file");
                    break;
                }
            }
        }
        Sink::Stream(s) => stream::with(*s, |q| {
            for chunk in chunks {
                q.push(chunk);
            }
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn file_pump(prefix: &str) -> (Pumps, OwnedFd, tempfile::NamedTempFile) {
        let out = tempfile::NamedTempFile::new().unwrap();
        let file = Rc::new(out.reopen().unwrap());
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let mut pumps = Pumps::default();
        pumps.add(r, Sink::File(file), prefix.into());
        (pumps, w, out)
    }

    fn contents(f: &tempfile::NamedTempFile) -> Vec<u8> {
        let mut v = Vec::new();
        f.reopen().unwrap().read_to_end(&mut v).unwrap();
        v
    }

    #[test]
    fn lines_are_prefixed_and_an_endless_line_is_cut() {
        let (mut pumps, w, out) = file_pump("3: ");
        nix::unistd::write(&w, b"one\ntw").unwrap();
        pumps.read(0);
        assert_eq!(contents(&out), b"3: one\n");
        nix::unistd::write(&w, &vec![b'x'; MAX_PARTIAL]).unwrap();
        pumps.read(0);
        let text = contents(&out);
        assert_eq!(
            text.len(),
            7 + 3 + MAX_PARTIAL + 1,
            "cut at the cap, as its own line"
        );
        drop(w);
        pumps.read(0);
        let text = contents(&out);
        assert!(
            text.ends_with(b"\n3: xx\n"),
            "the rest is flushed at end of file"
        );
        assert!(pumps.is_empty());
    }

    #[test]
    fn bytes_are_counted_and_the_first_matching_line_is_seen() {
        let (mut pumps, w, _out) = file_pump("0: ");
        pumps.matcher = Some(regex::Regex::new("Uvicorn running on").unwrap());
        nix::unistd::write(&w, b"loading\r50%").unwrap();
        pumps.read(0);
        assert_eq!(
            pumps.bytes, 11,
            "a progress bar without a newline is output too"
        );
        assert!(!pumps.matched);
        nix::unistd::write(&w, b"\nINFO:     Uvicorn running on http://h:1 (Press").unwrap();
        pumps.read(0);
        assert!(!pumps.matched, "only whole lines are matched");
        nix::unistd::write(&w, b" CTRL+C to quit)\n").unwrap();
        pumps.read(0);
        assert!(pumps.matched);
    }

    #[test]
    fn a_read_takes_at_most_the_budget() {
        let (mut pumps, w, out) = file_pump("");
        // A pipe that holds everything at once, so a read could take more than the budget.
        nix::fcntl::fcntl(&w, nix::fcntl::FcntlArg::F_SETPIPE_SZ(1 << 20)).unwrap();
        let data: Vec<u8> = (0..3 * READ_BUDGET)
            .map(|i| if i % 100 == 99 { b'\n' } else { b'y' })
            .collect();
        assert_eq!(nix::unistd::write(&w, &data).unwrap(), data.len());
        pumps.read(0);
        let first = contents(&out).len() + pumps.list[0].partial.len();
        assert_eq!(first, READ_BUDGET, "one read, one budget");
        drop(w);
        while !pumps.is_empty() {
            pumps.read(0);
        }
        assert_eq!(
            contents(&out).len(),
            data.len() + 1,
            "a final newline is added"
        );
    }
}
