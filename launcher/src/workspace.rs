//! The FlashInfer JIT workspace of an MPI-path rank: `FLASHINFER_WORKSPACE_BASE` for its
//! children, so that the ranks of one node (of one step, or of two steps or jobs sharing the
//! node) never build into the same directory.
//!
//! Upstream's rule, followed here: a persistent slot under `~/.cache/tensorrt_llm/flashinfer`
//! (or `$XDG_CACHE_HOME/...`) that stays warm across launches, `rank-<N>` for the world rank,
//! held by an `flock` on `rank-<N>.lock` for the life of rank-launch. A slot held by another
//! process (rank 0 of another step on this node) is skipped for `rank-<N>.1`, `.2`, ... Where
//! no slot can be locked (no home, a file system without `flock`, all slots busy) the rank gets
//! a private temporary workspace that is removed when rank-launch ends. An explicit
//! `FLASHINFER_WORKSPACE_BASE`, or `TRTLLM_FLASHINFER_WORKSPACE_PER_PROCESS=0`, turns all of
//! this off ([`crate::plan::flashinfer_base`]).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::plan::FlashinferBase;

/// How many slots per rank are tried before falling back to a temporary workspace.
const SLOTS: u32 = 16;

/// A claimed workspace; the lock (or the temporary directory) lives as long as this.
pub struct Workspace {
    pub dir: PathBuf,
    _lock: Option<Flock<File>>,
    /// Removed on drop.
    temporary: Option<PathBuf>,
}

impl Drop for Workspace {
    fn drop(&mut self) {
        if let Some(dir) = &self.temporary {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

fn mkdir_private(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Claims the workspace of world rank `rank`.
pub fn claim(base: &FlashinferBase, rank: u32) -> io::Result<Workspace> {
    if let Some(root) = &base.persistent {
        match persistent(root, rank) {
            Ok(Some(ws)) => return Ok(ws),
            Ok(None) => tracing::info!(
                root = %root.display(),
                "every FlashInfer slot of this rank is in use; using a temporary workspace"
            ),
            Err(err) => tracing::info!(
                root = %root.display(),
                %err,
                "cannot lock a persistent FlashInfer slot; using a temporary workspace"
            ),
        }
    }
    temporary(&base.tmp, rank)
}

fn persistent(root: &Path, rank: u32) -> io::Result<Option<Workspace>> {
    mkdir_private(root)?;
    for k in 0..SLOTS {
        let name = if k == 0 {
            format!("rank-{rank}")
        } else {
            format!("rank-{rank}.{k}")
        };
        let lock_file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(root.join(format!("{name}.lock")))?;
        match Flock::lock(lock_file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => {
                let dir = root.join(&name);
                mkdir_private(&dir)?;
                return Ok(Some(Workspace {
                    dir,
                    _lock: Some(lock),
                    temporary: None,
                }));
            }
            Err((_, Errno::EWOULDBLOCK)) => continue,
            Err((_, errno)) => return Err(errno.into()),
        }
    }
    Ok(None)
}

fn temporary(tmp: &Path, rank: u32) -> io::Result<Workspace> {
    let me = std::process::id();
    let uid = nix::unistd::geteuid();
    let top = tmp.join(format!("rank-launch-flashinfer.{uid}.{me}"));
    // Exclusive: a directory planted at this name is refused, not used.
    fs::DirBuilder::new().mode(0o700).create(&top)?;
    let dir = top.join(format!("rank-{rank}"));
    fs::DirBuilder::new().mode(0o700).create(&dir)?;
    Ok(Workspace {
        dir,
        _lock: None,
        temporary: Some(top),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_per_rank_locked_and_skipped_when_busy() {
        let home = tempfile::tempdir().unwrap();
        let root = home.path().join("cache/tensorrt_llm/flashinfer");
        let base = FlashinferBase {
            persistent: Some(root.clone()),
            tmp: home.path().join("tmp"),
        };
        let a = claim(&base, 0).unwrap();
        assert_eq!(a.dir, root.join("rank-0"));
        let b = claim(&base, 1).unwrap();
        assert_eq!(b.dir, root.join("rank-1"));
        // Rank 0 of another step on this node: the next slot.
        let c = claim(&base, 0).unwrap();
        assert_eq!(c.dir, root.join("rank-0.1"));
        drop(a);
        // Free again: reused, warm.
        assert_eq!(claim(&base, 0).unwrap().dir, root.join("rank-0"));
        drop((b, c));
    }

    #[test]
    fn a_temporary_workspace_is_removed_at_the_end() {
        let tmp = tempfile::tempdir().unwrap();
        let base = FlashinferBase {
            persistent: None,
            tmp: tmp.path().into(),
        };
        let ws = claim(&base, 3).unwrap();
        assert!(ws.dir.ends_with("rank-3"));
        assert!(ws.dir.is_dir());
        let top = ws.dir.parent().unwrap().to_path_buf();
        drop(ws);
        assert!(!top.exists());
    }
}
