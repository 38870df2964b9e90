//! Starting one program: `clone(CLONE_VM | CLONE_VFORK)` then `execve`, the way `posix_spawn`
//! does it, with the steps `posix_spawn` cannot take (the parent-death signal, the sentinel
//! registration, the terminal) in between.
//!
//! Why not `fork`: copying rank-launch's page tables, and the copy-on-write faults that follow
//! in both processes, cost more than everything else rank-launch does to start a rank. Here
//! nothing is copied: the child borrows the parent's memory on a stack of its own while the
//! parent is suspended, until the child's `execve` succeeds or it exits.
//!
//! The rules that make this sound on every platform:
//! - the child only makes raw system calls on data the parent prepared (paths, argv, envp,
//!   descriptors, the signals to reset). It allocates nothing and takes no lock; the only
//!   shared state it touches is `errno`, and only while the parent is suspended;
//! - a failure before `execve` is reported through a close-on-exec pipe, never through shared
//!   memory: the parent reads end of file when the program runs, or the step and `errno` when
//!   it did not. That works whatever the clone really did: qemu-user, for one, runs
//!   `CLONE_VM | CLONE_VFORK` as a plain `fork` (own memory, parent not suspended);
//! - where the kernel (or an emulator) refuses the clone, a plain `fork` runs the same child
//!   code: rank-launch has one thread, so its copy is consistent;
//! - the stack is sized from the system's page size ([`stack_layout`]), with a guard page below
//!   it, so it fits on 4 KiB and on 64 KiB pages alike.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::unistd::Pid;

/// Usable stack for the child between clone and exec: a handful of system calls need a few
/// hundred bytes; this leaves a wide margin on every architecture.
const STACK_MIN: usize = 64 * 1024;

/// Where the stack and its guard go in one anonymous mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Layout {
    /// Total length of the mapping.
    pub len: usize,
    /// Length of the inaccessible guard at its bottom (stacks grow down).
    pub guard: usize,
}

/// The stack layout for a page size: one whole page of guard, then at least [`STACK_MIN`]
/// rounded up to whole pages. A guard smaller than a page would be rounded up by `mprotect`
/// and eat the stack (what a hard-coded 4096 did on 64 KiB pages).
pub(super) fn stack_layout(page: usize) -> Layout {
    let page = page.max(4096).next_power_of_two();
    let stack = STACK_MIN.div_ceil(page) * page;
    Layout {
        len: stack + page,
        guard: page,
    }
}

/// The system's page size.
pub(super) fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

/// A stack for the clone: an anonymous mapping with an inaccessible guard below it, so an
/// overflow faults instead of writing over the parent's memory.
pub(super) struct Stack {
    base: *mut libc::c_void,
    layout: Layout,
}

impl Stack {
    pub fn new() -> io::Result<Self> {
        let layout = stack_layout(page_size());
        // SAFETY: a fresh anonymous private mapping; nothing else refers to it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                layout.len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the first `guard` bytes of the mapping made above (a whole page).
        if unsafe { libc::mprotect(base, layout.guard, libc::PROT_NONE) } != 0 {
            let err = io::Error::last_os_error();
            // SAFETY: the mapping made above, unused.
            unsafe { libc::munmap(base, layout.len) };
            return Err(err);
        }
        Ok(Stack { base, layout })
    }

    /// The initial stack pointer: the top, 16-byte aligned (stacks grow down).
    fn top(&self) -> *mut libc::c_void {
        ((self.base as usize + self.layout.len) & !15) as *mut libc::c_void
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`; no process runs on it (a clone borrows the stack
        // mutably and is over before `start` returns).
        unsafe { libc::munmap(self.base, self.layout.len) };
    }
}

/// Set once the clone was refused: every later start forks.
static CLONE_REFUSED: AtomicBool = AtomicBool::new(false);

/// How the child starts, prepared by the supervisor once.
#[derive(Debug, Clone, Default)]
pub(super) struct Setup {
    /// Signals whose disposition must be default again in the child (those rank-launch
    /// inherited as ignored, and `SIGPIPE`, which rank-launch ignores itself).
    pub reset_signals: Vec<libc::c_int>,
}

/// Everything the child needs, prepared by the parent.
pub(super) struct Launch {
    program: CString,
    argv: Vec<CString>,
    env: Vec<CString>,
    cwd: Option<CString>,
    /// Descriptors to install as fds 0, 1 and 2 (`None`: inherited from rank-launch).
    pub stdio: [Option<RawFd>; 3],
    /// The sentinel pipe's write end: the child registers its process group there.
    pub sentinel: Option<RawFd>,
    /// Make the child's group the foreground group of the terminal on fd 0.
    pub foreground: bool,
}

/// Why a program did not start.
#[derive(Debug)]
pub(super) enum LaunchError {
    /// No such file, or no such program on `PATH`.
    NotFound,
    /// Found, but `execve` refused it (permissions, not an executable format, a directory).
    NotExecutable(io::Error),
    /// The working directory could not be entered.
    Chdir(io::Error),
    /// Anything else (the clone itself, the parent-death signal, a descriptor).
    Other(io::Error),
}

/// Where the child failed, sent with `errno` through the report pipe.
const STEP_SETUP: i32 = 1;
const STEP_CHDIR: i32 = 2;
const STEP_EXEC: i32 = 3;

impl Launch {
    /// Resolves the program (on `PATH` from `env`, like `execvp`) and converts everything to
    /// C strings. Fails with `NotFound` when no `PATH` entry has it.
    pub fn new(
        argv: &[OsString],
        env: &[(OsString, OsString)],
        cwd: Option<&Path>,
    ) -> Result<Self, LaunchError> {
        let cstring = |bytes: &[u8]| {
            CString::new(bytes).map_err(|_| {
                LaunchError::Other(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "an argument or environment entry contains a NUL byte",
                ))
            })
        };
        let first = argv.first().ok_or(LaunchError::NotFound)?;
        let path_var = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_os_str());
        let program = cstring(&resolve(first, path_var)?)?;
        let argv = argv
            .iter()
            .map(|arg| cstring(arg.as_bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        let env = env
            .iter()
            .map(|(k, v)| cstring(&[k.as_bytes(), b"=", v.as_bytes()].concat()))
            .collect::<Result<Vec<_>, _>>()?;
        let cwd = cwd
            .map(|dir| cstring(dir.as_os_str().as_bytes()))
            .transpose()?;
        Ok(Launch {
            program,
            argv,
            env,
            cwd,
            stdio: [None; 3],
            sentinel: None,
            foreground: false,
        })
    }

    /// Starts the child in a process group of its own and returns its pid once it runs the
    /// program. A child that failed before its `execve` has been reaped here.
    pub fn start(&self, stack: &mut Stack, setup: &Setup) -> Result<Pid, LaunchError> {
        let argv = null_terminated(&self.argv);
        let env = null_terminated(&self.env);
        // `execvp`'s fallback: a file the kernel cannot execute (no `#!` line) runs under sh.
        let mut sh_argv = vec![c"/bin/sh".as_ptr(), self.program.as_ptr()];
        sh_argv.extend(argv.iter().skip(1));
        let (report_r, report_w): (OwnedFd, OwnedFd) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|e| LaunchError::Other(e.into()))?;
        let empty_mask: libc::sigset_t = *nix::sys::signal::SigSet::empty().as_ref();
        let child = Child {
            program: self.program.as_ptr(),
            argv: argv.as_ptr(),
            env: env.as_ptr(),
            sh_argv: sh_argv.as_ptr(),
            cwd: self.cwd.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
            stdio: self.stdio.map(|fd| fd.unwrap_or(-1)),
            sentinel: self.sentinel.unwrap_or(-1),
            parent: std::process::id() as libc::pid_t,
            report: report_w.as_raw_fd(),
            reset: setup.reset_signals.as_ptr(),
            reset_len: setup.reset_signals.len(),
            foreground: self.foreground,
            empty_mask,
        };
        let arg = std::ptr::from_ref(&child).cast_mut().cast();
        let mut pid = -1;
        if !CLONE_REFUSED.load(Ordering::Relaxed) {
            // SAFETY: `child_main` only reads `child` (alive until this function returns: with
            // CLONE_VFORK we are suspended until the child has exec'd or exited; if the clone
            // degraded to a fork, the child reads its own copy) and makes raw system calls. Its
            // stack is `stack`, borrowed mutably here, so no one else runs on it meanwhile.
            pid = unsafe {
                libc::clone(
                    child_main,
                    stack.top(),
                    libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                    arg,
                )
            };
            if pid < 0 {
                let err = io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::EINVAL | libc::ENOSYS | libc::EPERM) => {
                        CLONE_REFUSED.store(true, Ordering::Relaxed);
                    }
                    _ => return Err(LaunchError::Other(err)),
                }
            }
        }
        if pid < 0 {
            // SAFETY: rank-launch has a single thread, so the child's copy of the process is
            // consistent; the child only runs `child_main`, which never returns.
            pid = unsafe { libc::fork() };
            if pid == 0 {
                child_main(arg);
                // SAFETY: not reached (`child_main` exits); `_exit` just in case.
                unsafe { libc::_exit(127) };
            }
            if pid < 0 {
                return Err(LaunchError::Other(io::Error::last_os_error()));
            }
        }
        drop(report_w);
        let pid = Pid::from_raw(pid);
        let mut report = [0u8; 8];
        let got = read_full(report_r.as_fd(), &mut report);
        if got < report.len() {
            // End of file: the program runs (the pipe closed on exec).
            return Ok(pid);
        }
        // The child exited with 127 before running anything: reap it now, so the loop never
        // sees a process it does not know.
        let _ = nix::sys::wait::waitpid(pid, None);
        let step = i32::from_ne_bytes([report[0], report[1], report[2], report[3]]);
        let errno = i32::from_ne_bytes([report[4], report[5], report[6], report[7]]);
        let err = io::Error::from_raw_os_error(errno);
        Err(match step {
            STEP_CHDIR => LaunchError::Chdir(err),
            STEP_EXEC if errno == libc::ENOENT => LaunchError::NotFound,
            STEP_EXEC => LaunchError::NotExecutable(err),
            _ => LaunchError::Other(err),
        })
    }
}

/// Reads the child's report until end of file or a full record; returns the bytes read.
/// Reads until `buf` is full, the end of file or an error (`EINTR` is retried); returns how
/// many bytes were read.
pub(super) fn read_full(fd: BorrowedFd<'_>, buf: &mut [u8]) -> usize {
    let mut got = 0;
    while got < buf.len() {
        match nix::unistd::read(fd, &mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => break,
        }
    }
    got
}

fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// The program's path: as given when it names a file (contains `/`), else the first entry of
/// `PATH` holding an executable file of that name (`/bin:/usr/bin` when `PATH` is unset).
fn resolve(program: &OsStr, path_var: Option<&OsStr>) -> Result<Vec<u8>, LaunchError> {
    let name = program.as_bytes();
    if name.is_empty() {
        return Err(LaunchError::NotFound);
    }
    if name.contains(&b'/') {
        return Ok(name.to_vec());
    }
    let mut denied = None;
    let path_var = path_var.map_or(&b"/bin:/usr/bin"[..], OsStr::as_bytes);
    for dir in path_var.split(|&b| b == b':') {
        let dir = if dir.is_empty() { b"." } else { dir };
        // Made absolute: the child may change directory before its execve.
        let Ok(dir) = std::path::absolute(OsStr::from_bytes(dir)) else {
            continue;
        };
        let candidate = dir.join(program);
        let Ok(meta) = std::fs::metadata(&candidate) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        if nix::unistd::access(&candidate, nix::unistd::AccessFlags::X_OK).is_ok() {
            return Ok(candidate.into_os_string().into_vec());
        }
        denied.get_or_insert(candidate);
    }
    match denied {
        Some(_) => Err(LaunchError::NotExecutable(io::Error::from_raw_os_error(
            libc::EACCES,
        ))),
        None => Err(LaunchError::NotFound),
    }
}

/// The child's view: raw pointers into the parent's prepared data.
struct Child {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    env: *const *const libc::c_char,
    sh_argv: *const *const libc::c_char,
    cwd: *const libc::c_char,
    stdio: [RawFd; 3],
    sentinel: RawFd,
    parent: libc::pid_t,
    report: RawFd,
    reset: *const libc::c_int,
    reset_len: usize,
    foreground: bool,
    empty_mask: libc::sigset_t,
}

/// The child, between the clone and the `execve`: raw system calls only.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` points to the parent's `Child` (or this process's copy of it), alive while
    // the parent waits for the report.
    let c = unsafe { &*(arg as *const Child) };
    let fail = |step: i32| -> ! {
        // SAFETY: reads this thread's errno (the parent's, which is suspended, or our own after a
        // fork), writes 8 bytes to the report pipe and exits without running any exit handler.
        unsafe {
            let errno = (*libc::__errno_location()).max(1);
            let mut record = [0u8; 8];
            record[..4].copy_from_slice(&step.to_ne_bytes());
            record[4..].copy_from_slice(&errno.to_ne_bytes());
            libc::write(c.report, record.as_ptr().cast(), record.len());
            libc::_exit(127)
        }
    };
    // SAFETY: plain system calls on values the parent prepared; see the module comment.
    unsafe {
        if libc::setpgid(0, 0) != 0 {
            fail(STEP_SETUP);
        }
        if c.foreground {
            // A background group that sets the terminal's foreground gets SIGTTOU, which is
            // still ignored here as in rank-launch (`foreground` implies it; reset below).
            libc::tcsetpgrp(0, libc::getpid());
        }
        if libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        ) != 0
        {
            fail(STEP_SETUP);
        }
        // rank-launch may have died before the prctl took effect.
        if libc::getppid() != c.parent {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
        if c.sentinel >= 0 {
            // A 5-byte write to a pipe is atomic; setpgid(0, 0) ran, so the group id is our
            // pid. SIGPIPE is still ignored here: a dead sentinel gives EPIPE, not our death.
            let record = super::sentinel::record(super::sentinel::REGISTER, libc::getpid());
            libc::write(c.sentinel, record.as_ptr().cast(), record.len());
        }
        for (target, &fd) in c.stdio.iter().enumerate() {
            let target = target as RawFd;
            if fd < 0 {
                continue;
            }
            let ok = if fd == target {
                // dup2 onto itself keeps close-on-exec: clear it instead.
                libc::fcntl(fd, libc::F_SETFD, 0) == 0
            } else {
                libc::dup2(fd, target) == target
            };
            if !ok {
                fail(STEP_SETUP);
            }
        }
        if !c.cwd.is_null() && libc::chdir(c.cwd) != 0 {
            fail(STEP_CHDIR);
        }
        // Dispositions survive execve when ignored: what rank-launch inherited as ignored (a
        // `nohup`, a shell's background job) and its own SIGPIPE go back to default, so that
        // forwarded signals act on the program. Handlers are reset by execve itself, and the
        // signals rank-launch handles are blocked, not caught.
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        for i in 0..c.reset_len {
            libc::sigaction(*c.reset.add(i), &default, std::ptr::null_mut());
        }
        libc::sigprocmask(libc::SIG_SETMASK, &c.empty_mask, std::ptr::null_mut());
        libc::execve(c.program, c.argv, c.env);
        if *libc::__errno_location() == libc::ENOEXEC {
            libc::execve(c"/bin/sh".as_ptr(), c.sh_argv, c.env);
            *libc::__errno_location() = libc::ENOEXEC;
        }
        fail(STEP_EXEC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_layout_fits_every_page_size() {
        // (page size, total mapping, guard)
        let table = [
            (4096, 68 * 1024, 4096),
            (16384, 80 * 1024, 16384),
            (65536, 128 * 1024, 65536),
            // Odd values are not page sizes; they are rounded to one.
            (0, 68 * 1024, 4096),
            (12288, 80 * 1024, 16384),
        ];
        for (page, len, guard) in table {
            let l = stack_layout(page);
            assert_eq!(l, Layout { len, guard }, "page {page}");
            let real_page = page.max(4096).next_power_of_two();
            assert_eq!(l.len % real_page, 0, "whole pages at {page}");
            assert!(l.len - l.guard >= STACK_MIN, "usable stack at {page}");
        }
        assert!(page_size().is_power_of_two());
    }

    #[test]
    fn resolves_like_execvp() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("tool");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = format!("/nonexistent:{}", dir.path().display());
        let found = resolve(OsStr::new("tool"), Some(OsStr::new(&path))).unwrap();
        assert_eq!(found, exe.as_os_str().as_bytes());
        assert!(matches!(
            resolve(OsStr::new("missing"), Some(OsStr::new(&path))),
            Err(LaunchError::NotFound)
        ));
        assert!(matches!(
            resolve(OsStr::new(""), Some(OsStr::new(&path))),
            Err(LaunchError::NotFound)
        ));
        // A path is taken as given: execve judges it.
        assert_eq!(resolve(OsStr::new("./x/y"), None).unwrap(), b"./x/y");
        // No x bit at all: refused even for root.
        assert!(matches!(
            resolve(OsStr::new("plain"), Some(OsStr::new(&path))),
            Err(LaunchError::NotExecutable(_))
        ));
        assert!(resolve(OsStr::new("sh"), None).is_ok());
    }
}
