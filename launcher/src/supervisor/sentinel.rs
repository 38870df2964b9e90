//! The sentinel: a second process that kills our children's process groups if rank-launch
//! dies without cleaning up, even by `SIGKILL` (a parent-death signal only reaches the direct
//! child, not what it started).
//!
//! It holds the read end of a pipe whose only writer is rank-launch. Children register their
//! group (`+pgid`) from the spawn path before they run any program; rank-launch forgets a group
//! (`-pgid`) once it is empty, and dismisses the sentinel (`.`) when it ends on purpose. When
//! the pipe reaches end of file without a dismissal, rank-launch is gone: the sentinel sends
//! `SIGKILL` to every registered group and exits.
//!
//! It is started with a plain `fork` while rank-launch is still small (before any child, with
//! one thread), so it shares nothing with rank-launch: not its memory (a crash of rank-launch,
//! a core-dumping signal on kernels before 5.16 or the OOM killer cannot take the sentinel with
//! it), not `errno`, not the allocator. It keeps only its pipe (stdio goes to `/dev/null`), and
//! the signal mask it inherits blocks the signals rank-launch handles, so a step-wide `SIGTERM`
//! leaves it be; `SIGKILL` at the end of the step ends it with the rest.
//!
//! If the sentinel dies anyway, rank-launch notices (it reaps it), says that the protection is
//! gone, and goes on: children still get `PR_SET_PDEATHSIG`, and a child registering with a
//! dead sentinel gets `EPIPE`, never `SIGPIPE`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::fcntl::OFlag;
use nix::unistd::Pid;

/// Record tags on the pipe; each record is a tag and a little-endian `i32`.
pub(super) const REGISTER: u8 = b'+';
const FORGET: u8 = b'-';
const DISMISS: u8 = b'.';

/// One record as written to the pipe: five bytes, so a `write` of it is atomic. Allocation-free:
/// the spawn path's child calls it between clone and exec.
pub(super) fn record(tag: u8, value: i32) -> [u8; 5] {
    let v = value.to_le_bytes();
    [tag, v[0], v[1], v[2], v[3]]
}

/// Groups the sentinel can hold at once; rank-launch has a handful of children.
pub(super) const MAX_GROUPS: usize = 1024;

/// Where the sentinel keeps its end of the pipe.
const PIPE_FD: RawFd = 3;

pub(super) struct Sentinel {
    pub pid: Pid,
    pub pipe: OwnedFd,
    /// A write failed: the sentinel is gone (said once).
    gone: std::cell::Cell<bool>,
}

impl Sentinel {
    /// Forks the sentinel. Call while rank-launch has a single thread and no children.
    pub fn start() -> io::Result<Self> {
        let (read_end, write_end) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        // SAFETY: rank-launch has one thread here, so the child's copy of the process is
        // consistent; the child runs `sentinel_main` only, which never returns.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            sentinel_main(read_end.as_raw_fd());
        }
        drop(read_end);
        Ok(Sentinel {
            pid: Pid::from_raw(pid),
            pipe: write_end,
            gone: std::cell::Cell::new(false),
        })
    }

    /// The group is empty: the sentinel must not kill whoever gets its number next.
    pub fn forget(&self, pgid: Pid) {
        self.send(FORGET, pgid.as_raw());
    }

    /// rank-launch is ending on purpose: the pipe's end of file is not a death.
    pub fn dismiss(self) {
        self.send(DISMISS, 0);
    }

    fn send(&self, tag: u8, value: i32) {
        // Five bytes to a pipe are written whole or not at all; SIGPIPE is ignored.
        if nix::unistd::write(&self.pipe, &record(tag, value)).is_err() && !self.gone.replace(true)
        {
            tracing::warn!(
                "the sentinel is gone; a SIGKILL of rank-launch could now leave grandchildren behind"
            );
        }
    }
}

/// The sentinel's whole life (in the forked child): collect groups until the pipe closes, then
/// kill them unless dismissed.
fn sentinel_main(pipe: RawFd) -> ! {
    // SAFETY: system calls on this process's own descriptors and memory (a private copy).
    unsafe {
        // Hold no other descriptor: an inherited pipe or PMI socket must close when its owner
        // does, and our copy of the pipe's write end must go or the end of file never comes.
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        for fd in 0..3 {
            libc::dup2(null, fd);
        }
        if pipe != PIPE_FD {
            libc::dup2(pipe, PIPE_FD);
        }
        close_from(PIPE_FD + 1);
        let mut groups = [0 as libc::pid_t; MAX_GROUPS];
        let mut count = 0;
        let mut dismissed = false;
        let mut buf = [0u8; 5];
        // SAFETY: PIPE_FD is open (dup2'd above) for the rest of this process.
        let pipe_fd = BorrowedFd::borrow_raw(PIPE_FD);
        while super::spawn::read_full(pipe_fd, &mut buf) == buf.len() {
            let value = i32::from_le_bytes([buf[1], buf[2], buf[3], buf[4]]);
            match buf[0] {
                REGISTER if count < MAX_GROUPS => {
                    groups[count] = value;
                    count += 1;
                }
                FORGET => {
                    if let Some(at) = groups[..count].iter().position(|&g| g == value) {
                        groups[at] = groups[count - 1];
                        count -= 1;
                    }
                }
                DISMISS => dismissed = true,
                _ => {}
            }
        }
        if !dismissed {
            for &pgid in &groups[..count] {
                if pgid > 1 {
                    libc::kill(-pgid, libc::SIGKILL);
                }
            }
        }
        libc::_exit(0)
    }
}

/// Closes every descriptor from `first` on: `close_range` (Linux 5.9), else the entries of
/// `/proc/self/fd`, else every number below the descriptor limit.
fn close_from(first: RawFd) {
    // SAFETY: closing descriptors of this process; `u32::MAX` is close_range's "to the end".
    if unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, 0) } == 0 {
        return;
    }
    // Read the list first, then close: closing while iterating would close the directory's
    // own descriptor under it.
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        let fds: Vec<RawFd> = dir
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
            .filter(|&fd| fd >= first)
            .collect();
        for fd in fds {
            // SAFETY: as above.
            unsafe { libc::close(fd) };
        }
        return;
    }
    // SAFETY: getrlimit fills the struct; closing descriptors of this process.
    let limit = unsafe {
        let mut rl: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 {
            rl.rlim_cur.min(1 << 16) as RawFd
        } else {
            1024
        }
    };
    for fd in first..limit {
        // SAFETY: as above.
        unsafe { libc::close(fd) };
    }
}
