//! The environment each child gets: one table, [`recipe`], decides it for every kind of
//! process rank-launch starts.
//!
//! Pure: takes the launcher's environment as a list and returns new lists. Every child's
//! environment is built explicitly here, never inherited implicitly, so what a child sees is
//! decided in one place.
//!
//! The rule behind the table: **every TensorRT-LLM process initialises MPI when it imports the
//! package.** Only the MPI leader (rank 0) and the workers (ranks 1..N-1) are members of the
//! launcher's MPI world, so only they see its MPI/PMI/Slurm variables. Every other process
//! rank-launch starts must come up as an MPI singleton: started with a running world's variables
//! it would try to join that world a second time under a rank that is taken (Open MPI aborts it
//! inside `MPI_Init`). That holds for the task beside the leader, the leader's stop command,
//! the install command and the single-process roles.
//!
//! | process              | launcher MPI/Slurm vars | proxy address + key | `TLLM_SPAWN_PROXY_PROCESS` | `FLASHINFER_WORKSPACE_BASE` |
//! |----------------------|-------------------------|---------------------|----------------------------|-----------------------------|
//! | command (no role)    | kept: it *is* the rank  | -                   | -                          | -                           |
//! | single role          | removed (launch state)  | -                   | -                          | -                           |
//! | task (MPI rank 0)    | removed (all prefixes)  | yes                 | `1`                        | the rank's slot             |
//! | MPI leader           | kept                    | yes                 | `1`                        | the rank's slot             |
//! | stop command         | removed (all prefixes)  | yes                 | `1`                        | the rank's slot             |
//! | MPI worker           | kept                    | -                   | `1`                        | the rank's slot             |
//! | install command      | removed (launch state)  | -                   | -                          | -                           |
//!
//! Every child also gets the rank exports (`RANK` ... `tllm_mpi_size`) and [`JOB_ID_VAR`].
//! "All prefixes" is [`TASK_SCRUB_PREFIXES`], TensorRT-LLM's own list (tuning variables such as
//! `UCX_` go too: the task and the stop helper must not inherit the world's transport choice);
//! "launch state" is [`SINGLE_SCRUB_PREFIXES`], which keeps tuning variables.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

use crate::rank::RankInfo;

/// An environment as an ordered list of `NAME=value` pairs.
pub type EnvList = Vec<(OsString, OsString)>;

/// Prefixes stripped from the task that rank 0 runs beside the MPI leader and from the stop
/// command: a second `MPI_Init` with the world's variables would try to join it again, so
/// nothing of the launcher's MPI world may leak in (the list TensorRT-LLM's own launcher uses).
pub const TASK_SCRUB_PREFIXES: &[&str] = &[
    "OMPI_", "PMIX_", "PMI_", "SLURM_", "MPI_", "UCX_", "I_MPI_", "HYDRA_", "KMP_", "MPICH_",
    "MV2_", "CRAY_",
];

/// Prefixes stripped from single-process roles (`DISAGG_SERVER`, `BENCHMARK`) and the install
/// command: the MPI and Slurm launch state, so that a library in them cannot mistake itself for
/// a rank. Tuning variables (`UCX_`, `KMP_`, `CRAY_`) are kept.
pub const SINGLE_SCRUB_PREFIXES: &[&str] = &[
    "OMPI_", "PMIX_", "PMI_", "SLURM_", "MPI_", "I_MPI_", "HYDRA_", "MPICH_", "MV2_",
];

/// Job identity kept for every child, even scrubbed ones, so that coordination files can be
/// scoped by job although `SLURM_*` is gone.
pub const JOB_ID_VAR: &str = "RANK_LAUNCH_JOB_ID";

/// TensorRT-LLM's proxy variables.
pub const SPAWN_PROXY_VAR: &str = "TLLM_SPAWN_PROXY_PROCESS";
pub const IPC_ADDR_VAR: &str = "TLLM_SPAWN_PROXY_PROCESS_IPC_ADDR";
pub const IPC_PORT_VAR: &str = "TLLM_SPAWN_PROXY_PROCESS_IPC_PORT";
pub const HMAC_KEY_VAR: &str = "TLLM_SPAWN_PROXY_PROCESS_IPC_HMAC_KEY";
/// FlashInfer's JIT workspace, one per rank on the MPI path.
pub const FLASHINFER_VAR: &str = "FLASHINFER_WORKSPACE_BASE";

/// Every kind of process rank-launch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    /// The command of a rank without a role: the user's program is the rank.
    Command,
    /// `DISAGG_SERVER` or `BENCHMARK`: one process, not a rank of any MPI world.
    SingleRole,
    /// The task on MPI rank 0, beside the leader.
    Task,
    /// The MPI leader (rank 0 of the world).
    Leader,
    /// The command that asks the leader to stop once the task ended.
    StopHelper,
    /// The MPI worker (ranks 1..N-1).
    Worker,
    /// The per-node install command.
    Install,
}

/// What [`recipe`] decides for one kind of process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recipe {
    /// Variables removed by prefix.
    pub scrub: &'static [&'static str],
    /// The proxy address and the HMAC key.
    pub proxy: bool,
    /// `TLLM_SPAWN_PROXY_PROCESS=1`.
    pub spawn_proxy: bool,
    /// The rank's FlashInfer workspace, when one was chosen.
    pub flashinfer: bool,
}

/// The table of the module comment.
pub fn recipe(process: Process) -> Recipe {
    let (scrub, proxy, spawn_proxy, flashinfer): (&'static [&'static str], _, _, _) = match process
    {
        Process::Command => (&[], false, false, false),
        Process::SingleRole | Process::Install => (SINGLE_SCRUB_PREFIXES, false, false, false),
        Process::Task | Process::StopHelper => (TASK_SCRUB_PREFIXES, true, true, true),
        Process::Leader => (&[], true, true, true),
        Process::Worker => (&[], false, true, true),
    };
    Recipe {
        scrub,
        proxy,
        spawn_proxy,
        flashinfer,
    }
}

/// What the MPI path adds for the processes of one rank.
#[derive(Debug, Clone, Default)]
pub struct Additions {
    /// `(address, key)` of the proxy (rank 0 only).
    pub proxy: Option<(String, String)>,
    /// The rank's FlashInfer workspace.
    pub flashinfer: Option<OsString>,
}

/// The environment of one child: `base` (the launcher's environment with the rank exports,
/// already common to every child) shaped by the table.
pub fn for_process(base: &EnvList, process: Process, add: &Additions) -> EnvList {
    let r = recipe(process);
    let mut env = base.clone();
    scrub(&mut env, r.scrub);
    // Never inherited: only the table hands these out.
    if !r.proxy {
        env.retain(|(k, _)| k != HMAC_KEY_VAR);
    }
    if r.spawn_proxy {
        set(&mut env, SPAWN_PROXY_VAR, "1");
    }
    if r.proxy {
        if let Some((addr, key)) = &add.proxy {
            set(&mut env, IPC_ADDR_VAR, addr.as_str());
            set(&mut env, HMAC_KEY_VAR, key.as_str());
        }
    }
    if r.flashinfer {
        if let Some(dir) = &add.flashinfer {
            set(&mut env, FLASHINFER_VAR, dir.clone());
        }
    }
    env
}

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
        // The launch state is TensorRT-LLM's list without the tuning prefixes.
        let tuning = ["UCX_", "KMP_", "CRAY_"];
        let expected: Vec<&str> = TASK_SCRUB_PREFIXES
            .iter()
            .copied()
            .filter(|p| !tuning.contains(p))
            .collect();
        assert_eq!(SINGLE_SCRUB_PREFIXES, expected.as_slice());
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
    fn every_process_gets_what_the_table_says() {
        let base = list(&[
            ("PATH", "/bin"),
            ("SLURM_PROCID", "0"),
            ("PMIX_RANK", "0"),
            ("OMPI_COMM_WORLD_RANK", "0"),
            ("UCX_TLS", "tcp"),
            ("RANK", "0"),
            ("TLLM_MGMN_SHUTDOWN_GRACE_SECONDS", "60"),
            // A key the launcher inherited never reaches a child that should not hold one.
            (HMAC_KEY_VAR, "inherited"),
        ]);
        let add = Additions {
            proxy: Some(("tcp://127.0.0.1:5".into(), "k".repeat(64))),
            flashinfer: Some("/c/rank-0".into()),
        };
        let has = |env: &EnvList, name: &str| get(env, name).is_some();
        // (process, MPI world variables, tuning, key, address, spawn flag, workspace)
        let table = [
            (Process::Command, true, true, false, false, false, false),
            (Process::SingleRole, false, true, false, false, false, false),
            (Process::Install, false, true, false, false, false, false),
            (Process::Task, false, false, true, true, true, true),
            (Process::StopHelper, false, false, true, true, true, true),
            (Process::Leader, true, true, true, true, true, true),
            (Process::Worker, true, true, false, false, true, true),
        ];
        for (process, world, tuning, key, addr, spawn, fi) in table {
            let env = for_process(&base, process, &add);
            let p = format!("{process:?}");
            for var in ["SLURM_PROCID", "PMIX_RANK", "OMPI_COMM_WORLD_RANK"] {
                assert_eq!(has(&env, var), world, "{p}: {var}");
            }
            assert_eq!(has(&env, "UCX_TLS"), tuning, "{p}: UCX_TLS");
            assert_eq!(has(&env, HMAC_KEY_VAR), key, "{p}: key");
            if key {
                assert_eq!(get(&env, HMAC_KEY_VAR), Some(OsStr::new(&"k".repeat(64))));
            }
            assert_eq!(has(&env, IPC_ADDR_VAR), addr, "{p}: address");
            assert_eq!(has(&env, SPAWN_PROXY_VAR), spawn, "{p}: spawn flag");
            assert_eq!(has(&env, FLASHINFER_VAR), fi, "{p}: workspace");
            assert_eq!(
                get(&env, "RANK"),
                Some(OsStr::new("0")),
                "{p}: rank exports"
            );
            assert!(
                has(&env, "TLLM_MGMN_SHUTDOWN_GRACE_SECONDS"),
                "{p}: TensorRT-LLM settings pass through"
            );
        }
        // The stop command gets exactly the task's environment.
        assert_eq!(
            for_process(&base, Process::StopHelper, &add),
            for_process(&base, Process::Task, &add)
        );
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
