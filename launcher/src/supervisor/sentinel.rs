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
//! It is started with `clone(CLONE_VM)`, not `fork`: it shares rank-launch's memory instead of
//! copying it, which makes it nearly free to start. So it follows the same rule as the spawn
//! path's child: raw system calls only, on its own stack and its own fixed-size table, no
//! allocation, no locks. It has its own descriptor table (no `CLONE_FILES`) and keeps only the
//! pipe, and the signal mask it inherits blocks the signals rank-launch handles, so a
//! step-wide `SIGTERM` leaves it be. The shared memory outlives rank-launch for as long as the
//! sentinel needs it.
//!
//! The price of sharing: the kernel's OOM killer ends every process of an address space at
//! once, so if it ever picked rank-launch (about 2 MB beside tasks of gigabytes), the sentinel
//! would go too and only the parent-death signal would reach the direct children.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::fcntl::OFlag;
use nix::unistd::Pid;

use super::spawn::Stack;

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
}

impl Sentinel {
    pub fn start() -> io::Result<Self> {
        let (read_end, write_end) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        // Left mapped for good: the sentinel runs on it for as long as it lives, possibly
        // after rank-launch is gone.
        let stack = Stack::new()?;
        // SAFETY: `sentinel_main` takes the descriptor number by value, runs on its own stack
        // and follows the raw-system-calls-only rule of the module comment.
        let pid = unsafe {
            libc::clone(
                sentinel_main,
                stack.top(),
                libc::CLONE_VM | libc::SIGCHLD,
                read_end.as_raw_fd() as usize as *mut libc::c_void,
            )
        };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        stack.leak();
        drop(read_end);
        Ok(Sentinel {
            pid: Pid::from_raw(pid),
            pipe: write_end,
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
        // Five bytes to a pipe are written whole or not at all.
        if nix::unistd::write(&self.pipe, &record(tag, value)).is_err() {
            tracing::warn!(
                "the sentinel is gone; a SIGKILL of rank-launch could now leave grandchildren behind"
            );
        }
    }
}

/// The sentinel's whole life: collect groups until the pipe closes, then kill them unless
/// dismissed.
extern "C" fn sentinel_main(arg: *mut libc::c_void) -> libc::c_int {
    let pipe = arg as usize as RawFd;
    // SAFETY: raw system calls on this process's own descriptor table (a copy of rank-launch's),
    // and reads and writes of this function's own stack variables.
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
        if libc::syscall(libc::SYS_close_range, PIPE_FD + 1, u32::MAX, 0) != 0 {
            // Kernels before 5.9: one by one.
            for fd in PIPE_FD + 1..1024 {
                libc::close(fd);
            }
        }
        let mut groups = [0 as libc::pid_t; MAX_GROUPS];
        let mut count = 0;
        let mut dismissed = false;
        let mut buf = [0u8; 5];
        while read_full(PIPE_FD, &mut buf) {
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

/// Reads exactly `buf.len()` bytes; false at end of file or on an error.
///
/// # Safety
/// `fd` must be a descriptor of this process.
unsafe fn read_full(fd: RawFd, buf: &mut [u8]) -> bool {
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: the destination is the unfilled rest of `buf`.
        let n = unsafe { libc::read(fd, buf[filled..].as_mut_ptr().cast(), buf.len() - filled) };
        match n {
            0 => return false,
            n if n > 0 => filled += n as usize,
            // SAFETY: errno of this thread.
            _ if unsafe { *libc::__errno_location() } == libc::EINTR => {}
            _ => return false,
        }
    }
    true
}
