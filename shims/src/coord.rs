//! Coordination files in the shared job workspace (reference-flow §6, done better: B15, B18).
//!
//! Layout, all under one run-scoped directory so reruns never read a previous run's records:
//!
//! ```text
//! $jobWorkspace/disagg-<token>/            0700
//!     hostnames/GEN_0.addr, CTX_0.addr     0600, "host:port"
//!     DISAGG_SERVER.addr                   0600, "host:port"
//!     benchmark_status                     0600, "Done" or "Failed: <why>"
//! ```
//!
//! The token is `$TRTLLM_PERF_RUN_TOKEN`, else `$RANK_LAUNCH_JOB_ID`, else `local`.
//! Records are written to a private temp file, synced, then hard-linked to their name: the
//! link is atomic (a reader sees all or nothing, also on NFS) and exclusive (a record that
//! already exists, a stale one or a planted symlink, is an error, never overwritten). Readers
//! open with `O_NOFOLLOW` and accept regular files only. Waiting is a bounded poll: shared file
//! systems deliver no change events across nodes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Variables that name the run.
pub const TOKEN_VAR: &str = "TRTLLM_PERF_RUN_TOKEN";
pub const JOB_ID_VAR: &str = "RANK_LAUNCH_JOB_ID";
pub const WORKSPACE_VAR: &str = "jobWorkspace";

/// The status file that releases every server.
pub const STATUS: &str = "benchmark_status";
/// The router's address record.
pub const SERVER_ADDR: &str = "DISAGG_SERVER.addr";
/// The directory of the workers' address records.
pub const HOSTNAMES: &str = "hostnames";
/// Interval of the bounded waits.
pub const POLL: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    #[error("`{WORKSPACE_VAR}` is `{}`: expected an existing directory", .0.display())]
    NoWorkspace(PathBuf),
    #[error("`{}` is a symbolic link or not a {kind}: refusing to use it", path.display())]
    NotPlain { path: PathBuf, kind: &'static str },
    #[error("`{}` already exists: a record of this run was already published (stale files from a run with the same `{TOKEN_VAR}`?)", .0.display())]
    Exists(PathBuf),
    #[error("{what} `{}` failed", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout { what: String, after: Duration },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CoordError + 'a {
    move |source| CoordError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// The run token: `TRTLLM_PERF_RUN_TOKEN`, else `RANK_LAUNCH_JOB_ID`, else `local`; any
/// character outside `[A-Za-z0-9._-]` becomes `_` so it is one safe path component.
pub fn run_token(perf_token: Option<&str>, job_id: Option<&str>) -> String {
    let raw = [perf_token, job_id]
        .into_iter()
        .flatten()
        .map(str::trim)
        .find(|t| !t.is_empty())
        .unwrap_or("local");
    let token: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if token.chars().all(|c| c == '.') {
        token.replace('.', "_")
    } else {
        token
    }
}

/// Creates `path` as a private directory, or accepts an existing real directory.
fn private_dir(path: &Path) -> Result<(), CoordError> {
    match fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let meta = fs::symlink_metadata(path).map_err(io_err("inspecting", path))?;
            if meta.file_type().is_dir() {
                Ok(())
            } else {
                Err(CoordError::NotPlain {
                    path: path.to_path_buf(),
                    kind: "directory",
                })
            }
        }
        Err(e) => Err(io_err("creating the directory", path)(e)),
    }
}

/// The run's directory in the job workspace.
#[derive(Debug, Clone)]
pub struct Workspace {
    root: PathBuf,
}

impl Workspace {
    /// Opens (creating as needed) `<job_workspace>/disagg-<token>/hostnames/`.
    pub fn open(job_workspace: &Path, token: &str) -> Result<Workspace, CoordError> {
        if !job_workspace.is_dir() {
            return Err(CoordError::NoWorkspace(job_workspace.to_path_buf()));
        }
        let root = job_workspace.join(format!("disagg-{token}"));
        private_dir(&root)?;
        private_dir(&root.join(HOSTNAMES))?;
        Ok(Workspace { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// The record of a worker role, e.g. `hostnames/GEN_0.addr`.
    pub fn addr_record(role: &str) -> String {
        format!("{HOSTNAMES}/{role}.addr")
    }

    /// Publishes `content` under `rel`, atomically and exclusively, mode 0600.
    pub fn publish(&self, rel: &str, content: &str) -> Result<PathBuf, CoordError> {
        let path = self.path(rel);
        let dir = path.parent().unwrap_or(&self.root);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(io_err("creating the temp file", &tmp))?;
        let written = file
            .write_all(content.as_bytes())
            .and_then(|()| file.sync_all());
        drop(file);
        let linked = written.map_err(io_err("writing", &tmp)).and_then(|()| {
            match fs::hard_link(&tmp, &path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    Err(CoordError::Exists(path.clone()))
                }
                Err(e) => Err(io_err("publishing", &path)(e)),
            }
        });
        let _ = fs::remove_file(&tmp);
        linked.map(|()| path)
    }

    /// Reads a record: `None` when it does not exist yet.
    pub fn read(&self, rel: &str) -> Result<Option<String>, CoordError> {
        let path = self.path(rel);
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
                return Err(CoordError::NotPlain {
                    path,
                    kind: "regular file",
                });
            }
            Err(e) => return Err(io_err("opening", &path)(e)),
        };
        read_regular(file, &path).map(Some)
    }

    /// Whether a record exists (as a regular file; a symlink is an error).
    pub fn exists(&self, rel: &str) -> Result<bool, CoordError> {
        let path = self.path(rel);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_file() => Ok(true),
            Ok(_) => Err(CoordError::NotPlain {
                path,
                kind: "regular file",
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("inspecting", &path)(e)),
        }
    }

    /// Waits (bounded) for a record and returns its content.
    pub fn wait_for(&self, rel: &str, timeout: Duration) -> Result<String, CoordError> {
        let start = Instant::now();
        loop {
            if let Some(text) = self.read(rel)? {
                return Ok(text);
            }
            if start.elapsed() >= timeout {
                return Err(CoordError::Timeout {
                    what: format!("`{}`", self.path(rel).display()),
                    after: timeout,
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits (bounded) for every one of `records` and returns their contents in that order.
    pub fn wait_for_all(
        &self,
        records: &[String],
        timeout: Duration,
    ) -> Result<Vec<String>, CoordError> {
        let start = Instant::now();
        loop {
            let mut found = Vec::with_capacity(records.len());
            let mut missing = Vec::new();
            for rel in records {
                match self.read(rel)? {
                    Some(text) => found.push(text),
                    None => missing.push(rel.as_str()),
                }
            }
            if missing.is_empty() {
                return Ok(found);
            }
            if start.elapsed() >= timeout {
                return Err(CoordError::Timeout {
                    what: format!(
                        "{} of {} address records in `{}` (missing: {})",
                        missing.len(),
                        records.len(),
                        self.root.display(),
                        missing.join(", ")
                    ),
                    after: timeout,
                });
            }
            std::thread::sleep(POLL);
        }
    }
}

fn read_regular(file: File, path: &Path) -> Result<String, CoordError> {
    let meta = file.metadata().map_err(io_err("inspecting", path))?;
    if !meta.file_type().is_file() {
        return Err(CoordError::NotPlain {
            path: path.to_path_buf(),
            kind: "regular file",
        });
    }
    let mut text = String::new();
    file.take(64 * 1024)
        .read_to_string(&mut text)
        .map_err(io_err("reading", path))?;
    Ok(text.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn tokens() {
        assert_eq!(run_token(Some("abc-1"), Some("99")), "abc-1");
        assert_eq!(run_token(Some(" "), Some("99")), "99");
        assert_eq!(run_token(None, None), "local");
        assert_eq!(run_token(Some("a/b c@1"), None), "a_b_c_1");
        assert_eq!(run_token(Some(".."), None), "__");
    }

    #[test]
    fn publish_is_atomic_exclusive_private_and_read_back() {
        let tmp = tempfile::tempdir().unwrap();
        let ws = Workspace::open(tmp.path(), "t1").unwrap();
        let root_mode = fs::metadata(ws.root()).unwrap().permissions().mode() & 0o777;
        assert_eq!(root_mode, 0o700);
        assert_eq!(ws.read(&Workspace::addr_record("GEN_0")).unwrap(), None);
        let path = ws
            .publish(&Workspace::addr_record("GEN_0"), "h:1\n")
            .unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            ws.read("hostnames/GEN_0.addr").unwrap().as_deref(),
            Some("h:1")
        );
        let again = ws.publish("hostnames/GEN_0.addr", "h:2").unwrap_err();
        assert!(matches!(again, CoordError::Exists(_)), "{again}");
        assert!(again.to_string().contains("TRTLLM_PERF_RUN_TOKEN"));
        // No temp files left behind.
        let names: Vec<_> = fs::read_dir(ws.path(HOSTNAMES))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        // Reopening the same run is fine.
        Workspace::open(tmp.path(), "t1").unwrap();
    }

    #[test]
    fn symlinks_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let ws = Workspace::open(tmp.path(), "t").unwrap();
        let target = tmp.path().join("elsewhere");
        fs::write(&target, "evil:1").unwrap();
        std::os::unix::fs::symlink(&target, ws.path(STATUS)).unwrap();
        assert!(matches!(ws.read(STATUS), Err(CoordError::NotPlain { .. })));
        assert!(matches!(
            ws.exists(STATUS),
            Err(CoordError::NotPlain { .. })
        ));
        assert!(matches!(
            ws.publish(STATUS, "Done"),
            Err(CoordError::Exists(_))
        ));
        assert_eq!(fs::read_to_string(&target).unwrap(), "evil:1");
        // A symlinked run directory is refused too.
        std::os::unix::fs::symlink(tmp.path(), tmp.path().join("disagg-link")).unwrap();
        assert!(matches!(
            Workspace::open(tmp.path(), "link"),
            Err(CoordError::NotPlain { .. })
        ));
    }

    #[test]
    fn waits_are_bounded_and_name_what_is_missing() {
        let tmp = tempfile::tempdir().unwrap();
        let ws = Workspace::open(tmp.path(), "t").unwrap();
        ws.publish("hostnames/CTX_0.addr", "c:1").unwrap();
        let records = vec![
            Workspace::addr_record("CTX_0"),
            Workspace::addr_record("GEN_0"),
        ];
        let start = Instant::now();
        let err = ws
            .wait_for_all(&records, Duration::from_millis(120))
            .unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(2));
        let text = err.to_string();
        assert!(
            text.contains("1 of 2") && text.contains("hostnames/GEN_0.addr"),
            "{text}"
        );
        ws.publish("hostnames/GEN_0.addr", "g:1").unwrap();
        assert_eq!(
            ws.wait_for_all(&records, Duration::from_millis(120))
                .unwrap(),
            ["c:1", "g:1"]
        );
        assert!(Workspace::open(&tmp.path().join("missing"), "t").is_err());
    }
}
