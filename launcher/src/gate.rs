//! The per-node install gate: local rank 0 installs once per job, node and role; the other
//! local ranks wait for it.
//!
//! The gate is a directory with an absolute, job-scoped name in node-local storage
//! (`<root>/rank-launch-install.<job>.<host>.<role>`). Local rank 0 creates `lock.tmp`, takes an
//! exclusive `flock` on it and renames it to `lock` (so a visible `lock` is always a held one
//! while the installer lives), runs the install command with its output in `install.log`, then
//! publishes `status` (`ok`, or why not: `failed with exit code 3`, `did not finish within 1800s`,
//! ...) by writing `status.tmp` and renaming it; every local rank reports that same reason. Waiters
//! watch the directory with inotify and wake on the rename: no polling interval. Once a second
//! they also check the lock: a `lock` that can be taken while `status` is missing means local
//! rank 0 died mid-install, and they fail at once instead of waiting out the timeout. Every
//! wait is bounded. A second step of the same role on the same node finds `status` and reuses it.
//!
//! Files are created exclusively and no symlink is followed: a symlink placed in advance at
//! the gate's path is refused.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::sys::signal::Signal;

use crate::supervisor::{ChildSpec, Event, Output, Supervisor};

/// How the gate ended for this rank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateOutcome {
    /// The install is done (by us or by local rank 0).
    Ready,
    /// The install failed or could not be waited for; the message names the log.
    Failed(String),
    /// A termination signal arrived while waiting.
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
    #[error("failed to watch `{path}`")]
    Watch {
        path: String,
        #[source]
        source: nix::Error,
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

/// The gate directory for this job, node and role.
pub fn gate_dir(root: &Path, job: &str, host: &str, role: &str) -> PathBuf {
    root.join(format!(
        "rank-launch-install.{}.{}.{}",
        path_component(job),
        path_component(host),
        path_component(role)
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

fn read_status(dir: &Path) -> Option<String> {
    let mut options = OpenOptions::new();
    options.read(true).custom_flags(libc::O_NOFOLLOW);
    let mut text = String::new();
    let mut file = options.open(dir.join("status")).ok()?;
    io::Read::read_to_string(&mut file, &mut text).ok()?;
    Some(text.trim().to_string())
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

/// Writes `status` atomically: a fresh `status.tmp`, then a rename.
fn publish(dir: &Path, status: &str) -> Result<(), GateError> {
    let tmp = dir.join("status.tmp");
    let _ = fs::remove_file(&tmp);
    let write = || -> io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        writeln!(file, "{status}")?;
        // No fsync: the gate is node-local and lives for one job; the rename alone makes the
        // status appear whole, and waiters are released without waiting for the disk.
        fs::rename(&tmp, dir.join("status"))
    };
    write().map_err(|source| GateError::Write {
        path: dir.join("status").display().to_string(),
        source,
    })
}

/// Local rank 0: runs the install command once, unless a previous step already did.
pub fn install(
    sup: &mut Supervisor,
    dir: &Path,
    command: &str,
    env: crate::childenv::EnvList,
    timeout: Duration,
) -> Result<GateOutcome, GateError> {
    prepare_dir(dir)?;
    let log = dir.join("install.log");
    if let Some(status) = read_status(dir) {
        tracing::info!(gate = %dir.display(), "install already done by an earlier step of this job");
        return Ok(status_outcome(&status, &log));
    }
    let tmp_lock = dir.join(format!("lock.{}.tmp", std::process::id()));
    let lock_file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp_lock)
        .map_err(|source| GateError::Write {
            path: tmp_lock.display().to_string(),
            source,
        })?;
    let lock =
        Flock::lock(lock_file, FlockArg::LockExclusive).map_err(|(_, errno)| GateError::Write {
            path: tmp_lock.display().to_string(),
            source: errno.into(),
        })?;
    fs::rename(&tmp_lock, dir.join("lock")).map_err(|source| GateError::Write {
        path: dir.join("lock").display().to_string(),
        source,
    })?;

    let started = Instant::now();
    tracing::info!(gate = %dir.display(), log = %log.display(), "running the install command");
    let spec = ChildSpec {
        name: "install",
        argv: vec!["bash".into(), "-c".into(), command.into()],
        env,
        cwd: None,
        output: Output::File(log.clone()),
        stdin_null: true,
    };
    // The status completes "the install command … on this node": it is published for the
    // waiters and read back into this rank's own outcome, so every local rank reports the same.
    let mut interrupted = None;
    let status = match sup.spawn(spec) {
        Err(err) => format!("could not be started ({err})"),
        Ok(id) => {
            let deadline = started + timeout;
            loop {
                match sup
                    .next_event(Some(deadline), None)
                    .map_err(GateError::Loop)?
                {
                    Event::Exited(done, end) if done == id => {
                        break if end.success() {
                            "ok".to_string()
                        } else {
                            format!("failed with exit code {}", end.code())
                        };
                    }
                    Event::Deadline => {
                        sup.signal_group(id, Signal::SIGKILL);
                        break format!("did not finish within {}s", timeout.as_secs());
                    }
                    Event::Signal(
                        signal @ (Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT),
                    ) => {
                        sup.signal_group(id, signal);
                        interrupted = Some(signal);
                        break format!("was interrupted by {signal}");
                    }
                    Event::Signal(signal) => sup.signal_group(id, signal),
                    _ => {}
                }
            }
        }
    };
    publish(dir, &status)?;
    drop(lock);
    let outcome = match interrupted {
        Some(signal) => GateOutcome::Interrupted(signal),
        None => status_outcome(&status, &log),
    };
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        ?outcome,
        "install gate released"
    );
    Ok(outcome)
}

/// Other local ranks: wait for local rank 0's status, woken by inotify.
///
/// The inotify instance is handed to `keep` rather than closed: closing one waits for a kernel
/// RCU grace period (10-20 ms here), which must not sit between the release and the task.
pub fn wait(
    sup: &mut Supervisor,
    dir: &Path,
    timeout: Duration,
    keep: &mut Option<Inotify>,
) -> Result<GateOutcome, GateError> {
    prepare_dir(dir)?;
    let log = dir.join("install.log");
    let path = dir.display().to_string();
    let inotify =
        Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).map_err(|source| {
            GateError::Watch {
                path: path.clone(),
                source,
            }
        })?;
    inotify
        // Only renames into the directory: `status` appears by one. Creations (`status.tmp`,
        // `install.log`, the lock) would wake every waiter for nothing, just when the real
        // release is about to come.
        .add_watch(dir, AddWatchFlags::IN_MOVED_TO)
        .map_err(|source| GateError::Watch {
            path: path.clone(),
            source,
        })?;
    let deadline = Instant::now() + timeout;
    tracing::info!(gate = %path, "waiting for local rank 0 to finish the install");
    let inotify = keep.insert(inotify);
    loop {
        // Checked after the watch exists, so a status published meanwhile is not missed.
        if let Some(status) = read_status(dir) {
            return Ok(status_outcome(&status, &log));
        }
        if installer_died(dir) {
            return Ok(GateOutcome::Failed(format!(
                "local rank 0 ended before finishing the install on this node (log: `{}`)",
                log.display()
            )));
        }
        let tick = (Instant::now() + Duration::from_secs(1)).min(deadline);
        match sup
            .next_event(Some(tick), Some(inotify.as_fd()))
            .map_err(GateError::Loop)?
        {
            Event::FdReady => {
                let _ = inotify.read_events();
            }
            Event::Deadline if Instant::now() >= deadline => {
                return Ok(GateOutcome::Failed(format!(
                    "gave up waiting for the install on this node after {}s (log: `{}`)",
                    timeout.as_secs(),
                    log.display()
                )));
            }
            Event::Signal(signal @ (Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT)) => {
                return Ok(GateOutcome::Interrupted(signal));
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

/// True when `lock` exists but nobody holds it and no status was published.
fn installer_died(dir: &Path) -> bool {
    let Ok(file) = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(dir.join("lock"))
    else {
        return false;
    };
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(_held) => read_status(dir).is_none(),
        Err(_) => false,
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
        assert_eq!(
            gate_dir(Path::new("/tmp"), "77", "node1", "GEN_0"),
            PathBuf::from("/tmp/rank-launch-install.77.node1.GEN_0")
        );
    }
}
