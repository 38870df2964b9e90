//! The environment each child gets.
//!
//! Pure: takes the launcher's environment as a list and returns new lists. Every child's
//! environment is built explicitly here, never inherited implicitly, so what a child sees is
//! decided in one place.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

use crate::rank::RankInfo;

/// An environment as an ordered list of `NAME=value` pairs.
pub type EnvList = Vec<(OsString, OsString)>;

/// Prefixes stripped from the task that rank 0 runs beside the MPI leader: a second
/// `MPI_Init` in it would be undefined behaviour, so nothing of the launcher's MPI world may
/// leak in (the list TensorRT-LLM's own launcher uses).
pub const TASK_SCRUB_PREFIXES: &[&str] = &[
    "OMPI_", "PMIX_", "PMI_", "SLURM_", "MPI_", "UCX_", "I_MPI_", "HYDRA_", "KMP_", "MPICH_",
    "MV2_", "CRAY_",
];

/// Prefixes stripped from single-process roles (`DISAGG_SERVER`, `BENCHMARK`): the MPI and
/// Slurm launch state, so a library in them cannot mistake itself for a rank. Tuning variables
/// (`UCX_`, `KMP_`, `CRAY_`) are kept.
pub const SINGLE_SCRUB_PREFIXES: &[&str] = &[
    "OMPI_", "PMIX_", "PMI_", "SLURM_", "MPI_", "I_MPI_", "HYDRA_", "MPICH_", "MV2_",
];

/// Job identity kept for every child, even scrubbed ones, so that coordination files can be
/// scoped by job although `SLURM_*` is gone.
pub const JOB_ID_VAR: &str = "RANK_LAUNCH_JOB_ID";

/// The torchrun-style rank variables plus TensorRT-LLM's `tllm_mpi_size`.
pub fn rank_exports(info: &RankInfo) -> Vec<(&'static str, String)> {
    vec![
        ("RANK", info.rank.to_string()),
        ("LOCAL_RANK", info.local_rank.to_string()),
        ("WORLD_SIZE", info.world_size.to_string()),
        ("LOCAL_WORLD_SIZE", info.local_world_size.to_string()),
        ("NODE_RANK", info.node_rank.to_string()),
        ("tllm_mpi_size", info.world_size.to_string()),
    ]
}

/// Sets `name` to `value`, replacing an earlier value.
pub fn set(env: &mut EnvList, name: &str, value: impl Into<OsString>) {
    let value = value.into();
    match env.iter_mut().find(|(k, _)| k == name) {
        Some(slot) => slot.1 = value,
        None => env.push((name.into(), value)),
    }
}

/// Returns the value of `name`.
pub fn get<'a>(env: &'a EnvList, name: &str) -> Option<&'a OsStr> {
    env.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_os_str())
}

/// Removes every variable whose name starts with one of `prefixes`.
pub fn scrub(env: &mut EnvList, prefixes: &[&str]) {
    env.retain(|(name, _)| {
        !prefixes
            .iter()
            .any(|p| name.as_bytes().starts_with(p.as_bytes()))
    });
}

/// Prepends `dirs` to a colon-separated path list, skipping those already in it and dropping
/// empty entries (a trailing `:` means "current directory" to the loader).
pub fn prepend_paths(existing: Option<&OsStr>, dirs: &[OsString]) -> OsString {
    let old: Vec<&[u8]> = existing
        .map(|v| {
            v.as_bytes()
                .split(|&b| b == b':')
                .filter(|p| !p.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let mut parts: Vec<&[u8]> = Vec::new();
    for dir in dirs {
        let dir = dir.as_bytes();
        if !dir.is_empty() && !old.contains(&dir) && !parts.contains(&dir) {
            parts.push(dir);
        }
    }
    parts.extend(old);
    OsString::from(std::ffi::OsStr::from_bytes(&parts.join(&b':')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(pairs: &[(&str, &str)]) -> EnvList {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn scrub_keeps_everything_else() {
        let mut env = list(&[
            ("SLURM_PROCID", "0"),
            ("PMIX_RANK", "0"),
            ("OMPI_COMM_WORLD_RANK", "0"),
            ("UCX_TLS", "tcp"),
            ("MPI_LOCALRANKID", "0"),
            ("PATH", "/bin"),
            ("MY_SLURM_NOTE", "x"),
            ("RANK", "0"),
        ]);
        scrub(&mut env, TASK_SCRUB_PREFIXES);
        assert_eq!(
            env,
            list(&[("PATH", "/bin"), ("MY_SLURM_NOTE", "x"), ("RANK", "0")])
        );
        let mut env = list(&[("UCX_TLS", "tcp"), ("PMI_FD", "5")]);
        scrub(&mut env, SINGLE_SCRUB_PREFIXES);
        assert_eq!(env, list(&[("UCX_TLS", "tcp")]));
    }

    #[test]
    fn prepend_is_idempotent() {
        let dirs: Vec<OsString> = vec!["/opt/a".into(), "/opt/b".into()];
        let table: &[(Option<&str>, &str)] = &[
            (None, "/opt/a:/opt/b"),
            (Some(""), "/opt/a:/opt/b"),
            (Some("/usr/lib:"), "/opt/a:/opt/b:/usr/lib"),
            (Some("/opt/b:/usr/lib"), "/opt/a:/opt/b:/usr/lib"),
            (Some("/opt/a:/opt/b"), "/opt/a:/opt/b"),
        ];
        for &(existing, expected) in table {
            let once = prepend_paths(existing.map(OsStr::new), &dirs);
            assert_eq!(once, OsString::from(expected), "{existing:?}");
            assert_eq!(prepend_paths(Some(&once), &dirs), once);
        }
    }

    #[test]
    fn set_replaces() {
        let mut env = list(&[("A", "1")]);
        set(&mut env, "A", "2");
        set(&mut env, "B", "3");
        assert_eq!(env, list(&[("A", "2"), ("B", "3")]));
        assert_eq!(get(&env, "B"), Some(OsStr::new("3")));
    }
}
