//! Running whole processes: wall time from spawn to reaping, a program's own peak RSS (`VmHWM`
//! at its exit, under `ptrace`), a watchdog that kills a run that hangs, and session counting in
//! `/proc`.

use std::ffi::{OsStr, OsString};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};

/// Variables of a launcher or scheduler that must not leak from the harness's own environment
/// into the ranks it starts (they would change the rank `rank-launch` detects).
const SCRUB_PREFIXES: &[&str] = &[
    "SLURM_",
    "OMPI_",
    "PMIX_",
    "PMI_",
    "MPI_",
    "HYDRA_",
    "MV2_",
    "I_MPI_",
    "RANK_LAUNCH_",
    "TLLM_",
];

/// One finished process.
#[derive(Debug, Clone, Copy)]
pub struct Finished {
    /// Raw wait status.
    pub status: i32,
    /// `ru_maxrss` from `wait4`: the peak RSS of the process and of every descendant it reaped,
    /// whichever is largest, in KiB.
    pub maxrss_kib: u64,
}

impl Finished {
    pub fn maxrss_mb(&self) -> f64 {
        self.maxrss_kib as f64 / 1024.0
    }

    pub fn success(&self) -> bool {
        libc::WIFEXITED(self.status) && libc::WEXITSTATUS(self.status) == 0
    }

    /// The exit code, when the process exited (rather than died of a signal).
    pub fn code(&self) -> Option<i32> {
        libc::WIFEXITED(self.status).then(|| libc::WEXITSTATUS(self.status))
    }

    pub fn describe(&self) -> String {
        if libc::WIFEXITED(self.status) {
            format!("exit {}", libc::WEXITSTATUS(self.status))
        } else if libc::WIFSIGNALED(self.status) {
            format!("signal {}", libc::WTERMSIG(self.status))
        } else {
            format!("status {:#x}", self.status)
        }
    }
}

/// A timed run: wall time from just before `spawn` to just after the reap.
#[derive(Debug, Clone, Copy)]
pub struct Timed {
    pub wall: Duration,
    pub end: Finished,
}

impl Timed {
    pub fn ms(&self) -> f64 {
        self.wall.as_secs_f64() * 1e3
    }
}

/// What every measured process gets: a scrubbed environment, the release binaries first on
/// `PATH`, quiet launcher logs, and a watchdog.
pub struct Runner {
    pub bin_dir: PathBuf,
    pub verbose: bool,
    pub timeout: Duration,
    base_env: Vec<(OsString, OsString)>,
    watchdog: Watchdog,
}

impl Runner {
    pub fn new(bin_dir: PathBuf, verbose: bool, timeout: Duration) -> Runner {
        let mut base_env: Vec<(OsString, OsString)> = std::env::vars_os()
            .filter(|(k, _)| {
                let k = k.to_string_lossy();
                !SCRUB_PREFIXES.iter().any(|p| k.starts_with(p)) && k != "PATH"
            })
            .collect();
        let mut path = OsString::from(bin_dir.as_os_str());
        if let Some(old) = std::env::var_os("PATH") {
            path.push(":");
            path.push(old);
        }
        base_env.push(("PATH".into(), path));
        base_env.push(("RANK_LAUNCH_LOG".into(), "warn".into()));
        base_env.push(("LC_ALL".into(), "C".into()));
        Runner {
            bin_dir,
            verbose,
            timeout,
            base_env,
            watchdog: Watchdog::start(),
        }
    }

    pub fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    /// A command with the base environment; stdin and stdout closed, stderr shown only with
    /// `--verbose`. `env` is added on top.
    pub fn cmd<S: AsRef<OsStr>>(&self, argv: &[S], env: &[(&str, String)]) -> Command {
        let mut cmd = self.base(argv, env);
        cmd.process_group(0);
        cmd
    }

    /// [`Runner::cmd`] in a new session (its pid is the session and group id).
    pub fn cmd_session<S: AsRef<OsStr>>(&self, argv: &[S], env: &[(&str, String)]) -> Command {
        let mut cmd = self.base(argv, env);
        setsid(&mut cmd);
        cmd
    }

    fn base<S: AsRef<OsStr>>(&self, argv: &[S], env: &[(&str, String)]) -> Command {
        let mut cmd = Command::new(argv[0].as_ref());
        cmd.args(&argv[1..])
            .env_clear()
            .envs(self.base_env.iter().map(|(k, v)| (k, v)))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(if self.verbose {
                Stdio::inherit()
            } else {
                Stdio::null()
            });
        cmd
    }

    /// Spawns `cmd` (its own process group), returns its pid; reap it with [`Runner::wait`].
    pub fn spawn(&self, cmd: &mut Command) -> anyhow::Result<i32> {
        let child = cmd
            .spawn()
            .with_context(|| format!("failed to start {:?}", cmd.get_program()))?;
        // The std handle is dropped unwaited: `wait4` below reaps, for the rusage.
        Ok(child.id() as i32)
    }

    /// Reaps `pid`; the watchdog kills its process group after the run timeout.
    pub fn wait(&self, pid: i32) -> anyhow::Result<Finished> {
        self.wait_within(pid, self.timeout, true)
    }

    /// Reaps `pid`, sending KILL to its process group once `limit` has passed (`fail`: a
    /// killed run is an error, not a result).
    pub fn wait_within(&self, pid: i32, limit: Duration, fail: bool) -> anyhow::Result<Finished> {
        let ticket = self.watchdog.arm(pid, Instant::now() + limit);
        let end = wait4(pid);
        let fired = self.watchdog.disarm(ticket);
        let end = end?;
        if fired && fail {
            bail!(
                "pid {pid} ran longer than {:.1} s and was killed (rerun with --verbose)",
                limit.as_secs_f64()
            );
        }
        Ok(end)
    }

    /// Runs `cmd` to the end, timed from just before the spawn to just after the reap.
    pub fn time(&self, cmd: &mut Command) -> anyhow::Result<Timed> {
        let start = Instant::now();
        let pid = self.spawn(cmd)?;
        let end = self.wait(pid)?;
        Ok(Timed {
            wall: start.elapsed(),
            end,
        })
    }

    /// [`Runner::time`] with its own limit: `None` when the run hung and was killed.
    pub fn time_within(&self, cmd: &mut Command, limit: Duration) -> anyhow::Result<Option<Timed>> {
        let start = Instant::now();
        let pid = self.spawn(cmd)?;
        let ticket = self.watchdog.arm(pid, Instant::now() + limit);
        let end = wait4(pid);
        let wall = start.elapsed();
        let fired = self.watchdog.disarm(ticket);
        let end = end?;
        if fired {
            return Ok(None);
        }
        ensure_ok(&end, &describe(cmd))?;
        Ok(Some(Timed { wall, end }))
    }

    /// Runs `cmd` to its end and returns its own peak RSS in MB: `VmHWM`, read while `ptrace`
    /// holds the process just before it exits (`PTRACE_O_TRACEEXIT`).
    ///
    /// Not `wait4`'s `ru_maxrss`: at `execve` the kernel folds the peak of the address space
    /// being replaced into the new program's `ru_maxrss`, and that address space is the
    /// harness's own (spawned with `vfork`) or a copy of it (`fork`), so a small program would
    /// report the harness's size. Only the process itself is traced, not what it starts. The
    /// stops cost time: use it for memory figures only, never in a timed run.
    pub fn peak_rss_mb(&self, cmd: &mut Command) -> anyhow::Result<f64> {
        // SAFETY: the closure runs between fork and exec and makes one system call.
        unsafe {
            cmd.pre_exec(|| {
                if libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let what = describe(cmd);
        let pid = self.spawn(cmd)?;
        let ticket = self.watchdog.arm(pid, Instant::now() + self.timeout);
        let traced = trace_to_exit(pid);
        let fired = self.watchdog.disarm(ticket);
        let (peak, end) = traced?;
        if fired {
            bail!(
                "{what} ran longer than {:.1} s and was killed",
                self.timeout.as_secs_f64()
            );
        }
        ensure_ok(&end, &what)?;
        peak.with_context(|| format!("{what}: no stop before its exit, so no VmHWM"))
    }

    /// [`Runner::time`], failing unless the process exited 0.
    pub fn time_ok(&self, cmd: &mut Command) -> anyhow::Result<Timed> {
        let what = describe(cmd);
        let timed = self.time(cmd)?;
        ensure_ok(&timed.end, &what)?;
        Ok(timed)
    }
}

/// The program and its arguments, for messages: never the environment (`Command`'s `Debug`
/// shows every variable it was given, which is the harness's whole environment).
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| format!("{:?}", a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn ensure_ok(end: &Finished, what: &str) -> anyhow::Result<()> {
    if !end.success() {
        bail!(
            "{what} ended with {} (rerun with --verbose to see its stderr)",
            end.describe()
        );
    }
    Ok(())
}

/// Fails unless the process exited with `code`.
pub fn ensure_code(end: &Finished, code: i32, what: &str) -> anyhow::Result<()> {
    if end.code() != Some(code) {
        bail!(
            "{what} ended with {}, not exit {code} (rerun with --verbose to see its stderr)",
            end.describe()
        );
    }
    Ok(())
}

/// `wait4(pid)`, retried on EINTR.
fn wait4(pid: i32) -> anyhow::Result<Finished> {
    let mut status = 0;
    // SAFETY: rusage is plain old data; zeroed is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: valid pointers to locals; pid is our child.
        let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if rc == pid {
            return Ok(Finished {
                status,
                maxrss_kib: usage.ru_maxrss as u64,
            });
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err).with_context(|| format!("wait4({pid})"));
        }
    }
}

/// Follows a child that called `PTRACE_TRACEME` to its end: sets `PTRACE_O_TRACEEXIT` at the
/// stop after its `execve`, reads `VmHWM` at the exit stop, passes every other signal on.
fn trace_to_exit(pid: i32) -> anyhow::Result<(Option<f64>, Finished)> {
    let mut peak = None;
    let mut options_set = false;
    loop {
        let mut status = 0;
        // SAFETY: rusage is plain old data; zeroed is a valid value.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointers to locals; pid is our child.
        let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if rc != pid {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err).with_context(|| format!("wait4({pid})"));
        }
        if !libc::WIFSTOPPED(status) {
            return Ok((
                peak,
                Finished {
                    status,
                    maxrss_kib: usage.ru_maxrss as u64,
                },
            ));
        }
        let signal = libc::WSTOPSIG(status);
        let event = (status >> 16) & 0xff;
        let mut pass = 0;
        if signal == libc::SIGTRAP && event == libc::PTRACE_EVENT_EXIT {
            peak = Some(vm_hwm_mb(pid)?);
        } else if signal == libc::SIGTRAP && !options_set {
            // The stop after a traced execve.
            let options = libc::PTRACE_O_TRACEEXIT | libc::PTRACE_O_EXITKILL;
            // SAFETY: pid is our stopped tracee.
            if unsafe { libc::ptrace(libc::PTRACE_SETOPTIONS, pid, 0, options) } != 0 {
                return Err(std::io::Error::last_os_error()).context("PTRACE_SETOPTIONS");
            }
            options_set = true;
        } else {
            pass = signal;
        }
        // SAFETY: pid is our stopped tracee; `pass` is 0 or the signal that stopped it.
        unsafe { libc::ptrace(libc::PTRACE_CONT, pid, 0, pass) };
    }
}

/// `VmHWM` of a live process (its peak RSS so far), in MB.
pub fn vm_hwm_mb(pid: i32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .context("no VmHWM line")?;
    let kib: f64 = line
        .split_whitespace()
        .nth(1)
        .context("bad VmHWM line")?
        .parse()?;
    Ok(kib / 1024.0)
}

/// Sends `signal` to `pid` (a process, or with a negative pid a group).
pub fn kill(pid: i32, signal: i32) {
    // SAFETY: plain syscall.
    unsafe { libc::kill(pid, signal) };
}

/// Makes the command's process a session leader (and so a group leader) before exec.
fn setsid(cmd: &mut Command) {
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// How many live processes belong to session `sid`. Zombies are not counted: they have exited,
/// and one re-parented to PID 1 waits for *its* reaping, which is out of the launcher's hands
/// (in the VM this was measured on, PID 1 reaps about every 2 s).
pub fn session_members(sid: i32) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| stat_session(stat) == Some(sid) && stat_state(stat) != Some("Z"))
        .count()
}

/// The session id in a `/proc/PID/stat` line: the 4th field after the `(comm)`.
fn stat_session(stat: &str) -> Option<i32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(3)?.parse().ok()
}

/// The state letter in a `/proc/PID/stat` line.
fn stat_state(stat: &str) -> Option<&str> {
    stat[stat.rfind(')')? + 1..].split_whitespace().next()
}

/// Microseconds since the epoch (the clock `date +%s%N` and the summaries use).
pub fn unix_us_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Waits (1 ms steps, bounded) until `path` exists.
pub fn wait_for_file(path: &Path, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !path.exists() {
        if Instant::now() > deadline {
            bail!("`{}` did not appear within {:?}", path.display(), limit);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// One thread that KILLs the process group of the armed pid at its deadline.
struct Watchdog {
    state: Arc<(Mutex<WatchState>, Condvar)>,
}

#[derive(Default)]
struct WatchState {
    armed: Vec<(u64, i32, Instant)>,
    fired: Vec<u64>,
    next: u64,
}

impl Watchdog {
    fn start() -> Watchdog {
        let state = Arc::new((Mutex::new(WatchState::default()), Condvar::new()));
        let shared = Arc::clone(&state);
        std::thread::spawn(move || {
            let (lock, cvar) = &*shared;
            let mut st = lock.lock().expect("watchdog lock");
            loop {
                let now = Instant::now();
                let due: Vec<(u64, i32)> = st
                    .armed
                    .iter()
                    .filter(|(_, _, at)| *at <= now)
                    .map(|(t, p, _)| (*t, *p))
                    .collect();
                for (ticket, pid) in due {
                    kill(-pid, libc::SIGKILL);
                    st.armed.retain(|(t, _, _)| *t != ticket);
                    st.fired.push(ticket);
                }
                let next = st.armed.iter().map(|(_, _, at)| *at).min();
                st = match next {
                    None => cvar.wait(st).expect("watchdog lock"),
                    Some(at) => {
                        let wait = at.saturating_duration_since(Instant::now());
                        cvar.wait_timeout(st, wait).expect("watchdog lock").0
                    }
                };
            }
        });
        Watchdog { state }
    }

    fn arm(&self, pid: i32, at: Instant) -> u64 {
        let (lock, cvar) = &*self.state;
        let mut st = lock.lock().expect("watchdog lock");
        st.next += 1;
        let ticket = st.next;
        st.armed.push((ticket, pid, at));
        cvar.notify_one();
        ticket
    }

    /// Disarms `ticket`; true if it had fired.
    fn disarm(&self, ticket: u64) -> bool {
        let (lock, _) = &*self.state;
        let mut st = lock.lock().expect("watchdog lock");
        st.armed.retain(|(t, _, _)| *t != ticket);
        let fired = st.fired.contains(&ticket);
        st.fired.retain(|t| *t != ticket);
        fired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_field() {
        let stat = "123 (a (weird) name) S 1 123 77 0 -1 4194560 0";
        assert_eq!(stat_session(stat), Some(77));
        assert_eq!(stat_state(stat), Some("S"));
    }
}
