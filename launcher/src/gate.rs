//! The per-node install gate: local rank 0 installs once per job attempt, step, node, role and
//! command; the other local ranks wait for it.
//!
//! The gate is a directory with an absolute name in node-local storage,
//! `<root>/rank-launch-install.<job>.r<restart>.s<step>.<host>.<role>.<command hash>`: a
//! requeued job (`SLURM_RESTART_COUNT`), another step or a changed command never finds an old
//! status. Local rank 0 creates `lock.<pid>.tmp`, shows that it is alive through it (an
//! exclusive `flock`, or its pid where the file system has no flock) and renames it to `lock`,
//! runs the install command with its output in `install.log`, then publishes `status` (`ok`, or
//! why not: `failed with exit code 3`, `did not finish within 1800s`, ...) by writing
//! `status.tmp` and renaming it; every local rank reports that same reason. An install that
//! was interrupted by a signal publishes nothing: "interrupted" is never a final status; its
//! lock says `abandoned` (or is simply no longer held), so waiters fail at once and a later
//! installer starts afresh.
//!
//! Waiters watch the directory with inotify and wake on renames: no polling interval. Where
//! inotify is unavailable or exhausted (`fs.inotify.max_user_instances` is 128 per user by
//! default) they poll every [`POLL_TICK`] instead. Once a second (every tick when polling) they
//! also check the lock: a `lock` whose holder is gone while `status` is missing means local
//! rank 0 died mid-install, and no `lock` at all after `--install-start-timeout` means it never
//! began: either way they fail at once instead of waiting out the install timeout.
//!
//! Files are created exclusively and no symlink is followed: a symlink placed in advance at
//! the gate's path is refused.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::sys::signal::Signal;

use crate::plan::{GateKey, LockKind, Watch};
use crate::policy::{self, Ending};
use crate::supervisor::{ChildSpec, Event, Output, Supervisor};

/// How often waiters look when inotify cannot tell them.
pub const POLL_TICK: Duration = Duration::from_millis(50);
/// How often waiters check the installer's liveness while inotify watches.
const LIVENESS_TICK: Duration = Duration::from_secs(1);

/// How the gate ended for this rank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateOutcome {
    /// The install is done (by us or by local rank 0).
    Ready,
    /// The install failed or could not be waited for; the message names the log.
    Failed(String),
    /// A termination signal arrived while installing or waiting.
    Interrupted(Signal),
}

#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("failed to prepare the install gate directory `{path}`")]
    Dir {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "the install gate path `{path}` is not a directory owned by this user (a symlink or a file placed there in advance?)"
    )]
    Unsafe { path: String },
    #[error("failed to write `{path}`")]
    Write {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("the supervisor loop failed")]
    Loop(#[source] io::Error),
}

/// Turns a job id, host or role into a safe path component.
pub fn path_component(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if cleaned.is_empty() || cleaned.chars().all(|c| c == '.') {
        "_".into()
    } else {
        cleaned
    }
}

/// The gate directory for a key.
pub fn gate_dir(root: &Path, key: &GateKey) -> PathBuf {
    root.join(format!(
        "rank-launch-install.{}.r{}.s{}.{}.{}.{:016x}",
        path_component(&key.job),
        path_component(&key.restart),
        path_component(&key.step),
        path_component(&key.host),
        path_component(&key.role),
        key.command_hash
    ))
}

/// Creates the gate directory (mode 0700) or checks that the existing one is a real directory
/// of ours.
fn prepare_dir(dir: &Path) -> Result<(), GateError> {
    let path = dir.display().to_string();
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
        Err(source) => return Err(GateError::Dir { path, source }),
    }
    let meta = fs::symlink_metadata(dir).map_err(|source| GateError::Dir {
        path: path.clone(),
        source,
    })?;
    if !meta.is_dir() || meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(GateError::Unsafe { path });
    }
    Ok(())
}

fn open_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

fn read_small(path: &Path) -> Option<String> {
    let mut text = String::new();
    open_nofollow(path)
        .ok()?
        .take(4096)
        .read_to_string(&mut text)
        .ok()?;
    Some(text.trim().to_string())
}

fn read_status(dir: &Path) -> Option<String> {
    read_small(&dir.join("status"))
}

fn status_outcome(status: &str, log: &Path) -> GateOutcome {
    if status == "ok" {
        GateOutcome::Ready
    } else {
        GateOutcome::Failed(format!(
            "the install command {status} on this node (log: `{}`)",
            log.display()
        ))
    }
}

/// Writes `name` atomically: a fresh `<name>.tmp`, then a rename.
fn publish(dir: &Path, name: &str, text: &str) -> Result<(), GateError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let _ = fs::remove_file(&tmp);
    let write = || -> io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        writeln!(file, "{text}")?;
        // No fsync: the gate is node-local and lives for one job; the rename alone makes the
        // file appear whole, and waiters are released without waiting for the disk.
        fs::rename(&tmp, dir.join(name))
    };
    write().map_err(|source| GateError::Write {
        path: dir.join(name).display().to_string(),
        source,
    })
}

/// True for the errors of a file system without `flock` (NFS without lock support, Lustre
/// mounted without `flock`, some FUSE file systems).
fn flock_unsupported(errno: Errno) -> bool {
    matches!(
        errno,
        Errno::ENOLCK | Errno::EOPNOTSUPP | Errno::ENOSYS | Errno::EINVAL
    )
}

/// The installer's proof of life while it installs.
enum Held {
    Flock(#[allow(dead_code)] Flock<File>),
    Pid,
}

/// Takes the gate's lock: `lock` appears only once it shows a live installer.
fn take_lock(dir: &Path, kind: LockKind) -> Result<Held, GateError> {
    let me = std::process::id();
    let tmp = dir.join(format!("lock.{me}.tmp"));
    let write_err = |source: io::Error| GateError::Write {
        path: tmp.display().to_string(),
        source,
    };
    let _ = fs::remove_file(&tmp);
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(write_err)?;
    let with_pid = |mut file: File| -> Result<Held, GateError> {
        writeln!(file, "pid {me}").map_err(write_err)?;
        Ok(Held::Pid)
    };
    let held = match kind {
        LockKind::File => with_pid(file)?,
        LockKind::Flock => match Flock::lock(file, FlockArg::LockExclusive) {
            Ok(lock) => {
                (&*lock).write_all(b"flock\n").map_err(write_err)?;
                Held::Flock(lock)
            }
            Err((file, errno)) if flock_unsupported(errno) => {
                tracing::warn!(
                    gate = %dir.display(),
                    %errno,
                    "flock is not supported on the install gate's file system (Lustre or NFS \
                     without lock support?); the installer shows it is alive by its pid instead"
                );
                with_pid(file)?
            }
            Err((_, errno)) => return Err(write_err(errno.into())),
        },
    };
    fs::rename(&tmp, dir.join("lock")).map_err(|source| GateError::Write {
        path: dir.join("lock").display().to_string(),
        source,
    })?;
    Ok(held)
}

/// Where the installer stands, as a waiter sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Installer {
    /// No `lock` yet.
    NotStarted,
    /// Its lock shows it alive (or cannot tell otherwise).
    Alive,
    /// Its lock is no longer held or says `abandoned`.
    Gone,
}

fn installer_state(dir: &Path) -> Installer {
    let path = dir.join("lock");
    let Some(text) = read_small(&path) else {
        return Installer::NotStarted;
    };
    if text == "abandoned" {
        return Installer::Gone;
    }
    if let Some(pid) = text
        .strip_prefix("pid ")
        .and_then(|p| p.parse::<i32>().ok())
    {
        return match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
            Err(Errno::ESRCH) => Installer::Gone,
            _ => Installer::Alive,
        };
    }
    let Ok(file) = open_nofollow(&path) else {
        return Installer::NotStarted;
    };
    // Held by the installer, or (no flock on this file system) an installer that should have
    // written its pid: either way, not known to be gone.
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(_held) => Installer::Gone,
        Err(_) => Installer::Alive,
    }
}

/// What the installer needs to know.
pub struct InstallSpec<'a> {
    pub dir: &'a Path,
    pub command: &'a str,
    pub env: crate::childenv::EnvList,
    pub timeout: Duration,
    pub lock: LockKind,
    pub grace: Duration,
}

/// Local rank 0: runs the install command once, unless this gate's status is already known.
/// A termination signal is forwarded to the install and starts `ending` (the caller's shutdown,
/// which its final sweep continues).
pub fn install(
    sup: &mut Supervisor,
    spec: InstallSpec<'_>,
    ending: &mut Ending,
) -> Result<GateOutcome, GateError> {
    let dir = spec.dir;
    prepare_dir(dir)?;
    let log = dir.join("install.log");
    if let Some(status) = read_status(dir) {
        tracing::info!(gate = %dir.display(), "install already done by an earlier rank-launch of this step");
        return Ok(status_outcome(&status, &log));
    }
    let held = take_lock(dir, spec.lock)?;
    let started = Instant::now();
    tracing::info!(gate = %dir.display(), log = %log.display(), "running the install command");
    let child = ChildSpec {
        name: "install",
        argv: vec!["bash".into(), "-c".into(), spec.command.into()],
        env: spec.env,
        cwd: None,
        output: Output::File(log.clone()),
        stdin_null: true,
    };
    // The status completes "the install command … on this node": it is published for the
    // waiters and read back into this rank's own outcome, so every local rank reports the same.
    // The status, or the termination signal that interrupted the install.
    let status: Result<String, Signal> = match sup.spawn(child) {
        Err(err) => Ok(format!("could not be started ({err})")),
        Ok(id) => {
            let deadline = started + spec.timeout;
            loop {
                match sup
                    .next_event(Some(deadline), None)
                    .map_err(GateError::Loop)?
                {
                    Event::Exited(done, end) if done == id => {
                        break Ok(if end.success() {
                            "ok".to_string()
                        } else {
                            format!("failed with exit code {}", end.code())
                        });
                    }
                    // Published at once; the caller's sweep ends the install (TERM, grace, KILL).
                    Event::Deadline => {
                        break Ok(format!("did not finish within {}s", spec.timeout.as_secs()));
                    }
                    Event::Signal(signal) => {
                        let order = ending.on_signal(signal, Instant::now(), spec.grace);
                        sup.carry_out(order);
                        if policy::is_termination(signal) {
                            break Err(signal);
                        }
                    }
                    _ => {}
                }
            }
        }
    };
    let outcome = match status {
        Ok(status) => {
            publish(dir, "status", &status)?;
            drop(held);
            status_outcome(&status, &log)
        }
        Err(signal) => {
            // Never a final status: the next installer of this gate starts afresh.
            if matches!(held, Held::Pid) {
                publish(dir, "lock", "abandoned")?;
            }
            drop(held);
            GateOutcome::Interrupted(signal)
        }
    };
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        ?outcome,
        "install gate released"
    );
    Ok(outcome)
}

/// How a waiter learns of the status.
enum Watcher {
    Inotify(Inotify),
    Poll,
}

fn watcher(dir: &Path, watch: Watch) -> Watcher {
    if watch == Watch::Poll {
        return Watcher::Poll;
    }
    let attempt = || -> Result<Inotify, Errno> {
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)?;
        // Only renames into the directory: `status` and `lock` appear by one. Creations
        // (`status.tmp`, `install.log`) would wake every waiter for nothing, just when the
        // real release is about to come.
        inotify.add_watch(dir, AddWatchFlags::IN_MOVED_TO)?;
        Ok(inotify)
    };
    match attempt() {
        Ok(inotify) => Watcher::Inotify(inotify),
        Err(errno) => {
            tracing::warn!(
                gate = %dir.display(),
                %errno,
                poll_ms = POLL_TICK.as_millis() as u64,
                "inotify is unavailable (fs.inotify.max_user_instances exhausted?); polling the install gate"
            );
            Watcher::Poll
        }
    }
}

/// What a waiter needs to know.
pub struct WaitSpec<'a> {
    pub dir: &'a Path,
    pub timeout: Duration,
    pub start_timeout: Duration,
    pub watch: Watch,
    pub grace: Duration,
}

/// Other local ranks: wait for local rank 0's status.
///
/// An inotify instance is handed to `keep` rather than closed: closing one waits for a kernel
/// RCU grace period (10-20 ms here), which must not sit between the release and the task.
pub fn wait(
    sup: &mut Supervisor,
    spec: WaitSpec<'_>,
    ending: &mut Ending,
    keep: &mut Option<Inotify>,
) -> Result<GateOutcome, GateError> {
    let dir = spec.dir;
    prepare_dir(dir)?;
    let log = dir.join("install.log");
    let path = dir.display().to_string();
    let started = Instant::now();
    let deadline = started + spec.timeout;
    let (fd_watch, tick) = match watcher(dir, spec.watch) {
        Watcher::Inotify(inotify) => (Some(keep.insert(inotify)), LIVENESS_TICK),
        Watcher::Poll => (None, POLL_TICK),
    };
    let watch = if fd_watch.is_some() {
        "inotify"
    } else {
        "poll"
    };
    tracing::info!(gate = %path, watch, "waiting for local rank 0 to finish the install");
    loop {
        // Checked after the watch exists, so a status published meanwhile is not missed.
        if let Some(status) = read_status(dir) {
            return Ok(status_outcome(&status, &log));
        }
        let installer = installer_state(dir);
        match installer {
            Installer::Gone if read_status(dir).is_none() => {
                return Ok(GateOutcome::Failed(format!(
                    "local rank 0 ended before finishing the install on this node (log: `{}`)",
                    log.display()
                )));
            }
            Installer::NotStarted if started.elapsed() >= spec.start_timeout => {
                return Ok(GateOutcome::Failed(format!(
                    "local rank 0 did not begin the install on this node within {}s \
                     (--install-start-timeout); is it running? (gate: `{path}`)",
                    spec.start_timeout.as_secs_f64()
                )));
            }
            _ => {}
        }
        let mut next = (Instant::now() + tick).min(deadline);
        if installer == Installer::NotStarted {
            next = next.min(started + spec.start_timeout);
        }
        let fd = fd_watch.as_ref().map(|i| i.as_fd());
        match sup.next_event(Some(next), fd).map_err(GateError::Loop)? {
            Event::FdReady => {
                if let Some(inotify) = &fd_watch {
                    let _ = inotify.read_events();
                }
            }
            Event::Deadline if Instant::now() >= deadline => {
                return Ok(GateOutcome::Failed(format!(
                    "gave up waiting for the install on this node after {}s (log: `{}`)",
                    spec.timeout.as_secs(),
                    log.display()
                )));
            }
            Event::Signal(signal) => {
                let order = ending.on_signal(signal, Instant::now(), spec.grace);
                sup.carry_out(order);
                if policy::is_termination(signal) {
                    return Ok(GateOutcome::Interrupted(signal));
                }
            }
            _ => {}
        }
    }
}

/// Called once the gate let this rank go: gives the CPU to the other local ranks released by
/// the same rename before this one starts its task.
///
/// All waiters wake in the one `rename` that publishes the status, but on a node with fewer
/// cores than local ranks they run one after another; without this, a rank that ran first goes
/// straight on to start its task (a `clone`, an `execve`, a program's start-up), and the ranks
/// behind it learn of the release only after their siblings' start-up work. One yield puts every
/// released rank behind the ones that have not run yet: all of them are released within a few
/// milliseconds, then their tasks start, sharing the CPU as before. It costs nothing when there
/// is a free core.
pub fn yield_to_siblings() {
    // SAFETY: sched_yield takes no arguments and cannot fail on Linux.
    unsafe {
        libc::sched_yield();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_are_safe() {
        let table = [
            ("1234", "1234"),
            ("a/b", "a_b"),
            ("..", "_"),
            ("", "_"),
            ("GEN_0", "GEN_0"),
            ("h o$t", "h_o_t"),
        ];
        for (input, expected) in table {
            assert_eq!(path_component(input), expected);
        }
        let key = GateKey {
            job: "77".into(),
            restart: "1".into(),
            step: "3".into(),
            host: "node1".into(),
            role: "GEN_0".into(),
            command_hash: 0xabc,
        };
        assert_eq!(
            gate_dir(Path::new("/tmp"), &key),
            PathBuf::from("/tmp/rank-launch-install.77.r1.s3.node1.GEN_0.0000000000000abc")
        );
    }

    #[test]
    fn the_lock_tells_waiters_whether_the_installer_lives() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert_eq!(installer_state(d), Installer::NotStarted);
        for kind in [LockKind::Flock, LockKind::File] {
            let held = take_lock(d, kind).unwrap();
            assert_eq!(installer_state(d), Installer::Alive, "{kind:?}");
            if matches!(held, Held::Pid) {
                publish(d, "lock", "abandoned").unwrap();
            }
            drop(held);
            assert_eq!(installer_state(d), Installer::Gone, "{kind:?} released");
        }
        // A pid that no longer runs.
        publish(d, "lock", "pid 2147483646").unwrap();
        assert_eq!(installer_state(d), Installer::Gone);
        assert!(flock_unsupported(Errno::ENOLCK));
        assert!(!flock_unsupported(Errno::EWOULDBLOCK));
    }
}
