//! Starting one program: `clone(CLONE_VM | CLONE_VFORK)` then `execve`, the way `posix_spawn`
//! does it, with the steps `posix_spawn` cannot take (the parent-death signal, the sentinel
//! registration) in between.
//!
//! Why not `fork`: copying rank-launch's page tables, and the copy-on-write faults that follow
//! in both processes, cost more than everything else rank-launch does to start a rank. Here
//! nothing is copied: the child borrows the parent's memory on a stack of its own while the
//! parent is suspended, until the child's `execve` succeeds or it exits.
//!
//! The rule that makes this sound: the child only makes raw system calls on data the parent
//! prepared (paths, argv, envp, descriptors). It allocates nothing, takes no lock, reads no
//! thread-local state but `errno`, and reports a failure through an atomic the parent reads
//! once the clone returns.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::unistd::Pid;

/// A child's stack: it runs a handful of system calls (`posix_spawn` uses about as much).
const STACK_SIZE: usize = 64 * 1024;

/// A stack for a process started with `CLONE_VM`: an anonymous mapping with an inaccessible
/// page below it, so an overflow faults instead of writing over the parent's memory.
pub(super) struct Stack {
    base: *mut libc::c_void,
    len: usize,
}

impl Stack {
    pub fn new() -> io::Result<Self> {
        let guard = 4096;
        let len = STACK_SIZE + guard;
        // SAFETY: a fresh anonymous private mapping; nothing else refers to it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the first page of the mapping made above.
        if unsafe { libc::mprotect(base, guard, libc::PROT_NONE) } != 0 {
            let err = io::Error::last_os_error();
            // SAFETY: the mapping made above, unused.
            unsafe { libc::munmap(base, len) };
            return Err(err);
        }
        Ok(Stack { base, len })
    }

    /// The initial stack pointer: the top, 16-byte aligned (stacks grow down).
    pub fn top(&self) -> *mut libc::c_void {
        ((self.base as usize + self.len) & !15) as *mut libc::c_void
    }

    /// Leaves the mapping in place for good, for a process that may outlive this one's use.
    pub fn leak(self) {
        std::mem::forget(self);
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`; no process runs on it any more (the owner drops
        // it only when no clone is in progress).
        unsafe { libc::munmap(self.base, self.len) };
    }
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

/// Where the child failed, with `errno`, packed as `step << 16 | errno`.
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
        })
    }

    /// Starts the child in a process group of its own and returns its pid once it runs the
    /// program. A child that failed before its `execve` succeeded has been reaped here.
    pub fn start(&self, stack: &mut Stack) -> Result<Pid, LaunchError> {
        let argv = null_terminated(&self.argv);
        let env = null_terminated(&self.env);
        // `execvp`'s fallback: a file the kernel cannot execute (no `#!` line) runs under sh.
        let mut sh_argv = vec![c"/bin/sh".as_ptr(), self.program.as_ptr()];
        sh_argv.extend(argv.iter().skip(1));
        let failure = AtomicI32::new(0);
        let child = Child {
            program: self.program.as_ptr(),
            argv: argv.as_ptr(),
            env: env.as_ptr(),
            sh_argv: sh_argv.as_ptr(),
            cwd: self.cwd.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
            stdio: self.stdio.map(|fd| fd.unwrap_or(-1)),
            sentinel: self.sentinel.unwrap_or(-1),
            parent: std::process::id() as libc::pid_t,
            empty_mask: *nix::sys::signal::SigSet::empty().as_ref(),
            failure: &failure,
        };
        // SAFETY: `child_main` only reads `child` (alive until clone returns: CLONE_VFORK
        // suspends us until the child has exec'd or exited) and makes raw system calls; its
        // stack is `stack`, borrowed mutably here, so no one else runs on it meanwhile.
        let pid = unsafe {
            libc::clone(
                child_main,
                stack.top(),
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                std::ptr::from_ref(&child).cast_mut().cast(),
            )
        };
        if pid < 0 {
            return Err(LaunchError::Other(io::Error::last_os_error()));
        }
        let pid = Pid::from_raw(pid);
        let code = failure.load(Ordering::Acquire);
        if code == 0 {
            return Ok(pid);
        }
        // The child exited with 127 before running anything: reap it now, so the loop never
        // sees a process it does not know.
        let _ = nix::sys::wait::waitpid(pid, None);
        let err = io::Error::from_raw_os_error(code & 0xffff);
        Err(match code >> 16 {
            STEP_CHDIR => LaunchError::Chdir(err),
            STEP_EXEC if code & 0xffff == libc::ENOENT => LaunchError::NotFound,
            STEP_EXEC => LaunchError::NotExecutable(err),
            _ => LaunchError::Other(err),
        })
    }
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
struct Child<'a> {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    env: *const *const libc::c_char,
    sh_argv: *const *const libc::c_char,
    cwd: *const libc::c_char,
    stdio: [RawFd; 3],
    sentinel: RawFd,
    parent: libc::pid_t,
    empty_mask: libc::sigset_t,
    failure: &'a AtomicI32,
}

/// The child, between the clone and the `execve`: raw system calls only.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` points to the parent's `Child`, alive while the parent is suspended.
    let c = unsafe { &*(arg as *const Child<'_>) };
    let fail = |step: i32| -> ! {
        // SAFETY: reads this thread's errno (the parent's, which is suspended) and exits
        // without running any of the parent's exit handlers.
        unsafe {
            let errno = *libc::__errno_location();
            c.failure
                .store(step << 16 | errno.max(1), Ordering::Release);
            libc::_exit(127)
        }
    };
    // SAFETY: plain system calls on values the parent prepared; see the module comment.
    unsafe {
        if libc::setpgid(0, 0) != 0 {
            fail(STEP_SETUP);
        }
        // rank-launch ignores SIGPIPE; the program gets the default back. Handlers are reset
        // by execve itself, and rank-launch's handled signals are blocked, not caught.
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(libc::SIGPIPE, &default, std::ptr::null_mut());
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
            // A 5-byte write to a pipe is atomic; setpgid(0, 0) ran, so the group id is our pid.
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
