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
