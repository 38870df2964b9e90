//! What the supervisor reads from `/proc`: its own children (re-parented descendants
//! included) and whether a process is a zombie waiting to be reaped.

use nix::unistd::Pid;

/// rank-launch's children, from `/proc/<pid>/task/<pid>/children` (one thread: ours).
pub(super) fn children_of_self() -> Vec<Pid> {
    let me = std::process::id();
    std::fs::read_to_string(format!("/proc/{me}/task/{me}/children"))
        .map(|text| {
            text.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .map(Pid::from_raw)
                .collect()
        })
        .unwrap_or_default()
}

/// True for a process that ended and waits to be reaped (or is gone).
pub(super) fn is_zombie(pid: Pid) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(") ")
                .map(|(_, rest)| rest.starts_with('Z'))
        })
        .unwrap_or(true)
}

/// The children of `pid` (every thread's), from `/proc/<pid>/task/*/children`.
fn children_of(pid: i32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for task in tasks.flatten() {
        let path = task.path().join("children");
        if let Ok(text) = std::fs::read_to_string(path) {
            out.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
    }
    out
}

/// The state letter of `/proc/<pid>/stat` (`R`, `S`, `D`, `T`, `t`, `Z`, ...).
fn state(pid: i32) -> Option<u8> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    let close = stat.iter().rposition(|&b| b == b')')?;
    stat.get(close + 2).copied()
}

/// The first process of the tree under `root` (itself included) that is stopped by a signal
/// (`T`) or a tracer (`t`). Bounded: at most `limit` processes are looked at.
pub(super) fn stopped_in_tree(root: i32, limit: usize) -> Option<i32> {
    let mut todo = vec![root];
    let mut seen = 0;
    while let Some(pid) = todo.pop() {
        seen += 1;
        if seen > limit {
            break;
        }
        if matches!(state(pid), Some(b'T' | b't')) {
            return Some(pid);
        }
        todo.extend(children_of(pid));
    }
    None
}
