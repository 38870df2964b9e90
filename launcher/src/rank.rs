//! Rank detection: which launcher started this process, and what rank it gave it.
//!
//! Pure: everything comes in as an [`EnvMap`], nothing is read from the process.
//!
//! The order of the checks is the point of this module. Launcher-specific MPI variables
//! (`OMPI_COMM_WORLD_*`, `MV2_COMM_WORLD_*`, Hydra's `PMI_RANK` + `MPI_LOCALRANKID`) describe the
//! process that was really launched, so they win over `SLURM_*`: an `mpirun` started inside an
//! sbatch allocation hands its ranks the batch step's stale `SLURM_PROCID=0` and job-level
//! `SLURM_NTASKS`. Slurm variables are trusted only inside a step (`SLURM_STEP_NUM_TASKS` is
//! set by `srun` for every step and never in the batch script), and then the step counts are
//! used, never the job counts. Every source is cross-checked against the others it carries
//! (`PMIX_RANK`, `PMI_RANK`/`PMI_SIZE` under PMI-2), and a contradiction is an error naming the
//! variables, never a guess.

use std::collections::BTreeMap;
use std::fmt;

/// The environment of a process, as detection sees it.
pub type EnvMap = BTreeMap<String, String>;

/// Which launcher started the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A task of a Slurm `srun` step (`--mpi=pmix` or `--mpi=none`).
    Slurm,
    /// A task of a Slurm step using the PMI-2 plugin (`--mpi=pmi2`).
    Pmi2,
    /// Open MPI's `mpirun`/`prterun`.
    OpenMpi,
    /// MPICH or Intel MPI's Hydra `mpiexec`.
    Hydra,
    /// MVAPICH2's `mpirun_rsh`.
    Mvapich2,
    /// No launcher: a plain process, rank 0 of 1.
    Single,
}

impl Source {
    /// The name used in `whoami --json` and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Slurm => "slurm",
            Source::Pmi2 => "pmi2",
            Source::OpenMpi => "openmpi",
            Source::Hydra => "hydra",
            Source::Mvapich2 => "mvapich2",
            Source::Single => "single",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where this process sits in its launch, with the variables it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RankInfo {
    pub rank: u32,
    pub local_rank: u32,
    pub world_size: u32,
    pub local_world_size: u32,
    pub node_rank: u32,
    pub source: Source,
    /// The variables the values were read from, in the order of the fields above.
    pub used: Vec<&'static str>,
    /// True when `node_rank` was derived (the launcher exports no node index).
    pub node_rank_derived: bool,
}

impl RankInfo {
    fn single() -> Self {
        RankInfo {
            rank: 0,
            local_rank: 0,
            world_size: 1,
            local_world_size: 1,
            node_rank: 0,
            source: Source::Single,
            used: Vec::new(),
            node_rank_derived: false,
        }
    }
}

/// Why the environment does not describe a rank. Values are shown escaped (`escape_debug`):
/// a control character in a variable must not break the one-line message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RankEnvError {
    #[error("`{var}` is `{}`: expected a non-negative integer", .value.escape_debug())]
    NotANumber { var: &'static str, value: String },
    #[error("`{var}` is missing: {why}")]
    Missing {
        var: &'static str,
        why: &'static str,
    },
    #[error("`{var}` is `{}`: expected a value of at least 1", .value.escape_debug())]
    Zero { var: &'static str, value: String },
    #[error("`{index_var}`={index} is out of range for `{size_var}`={size}")]
    OutOfRange {
        index_var: &'static str,
        index: u32,
        size_var: &'static str,
        size: u32,
    },
    #[error("`{a}`={} contradicts `{b}`={}", .a_value.escape_debug(), .b_value.escape_debug())]
    Contradiction {
        a: &'static str,
        a_value: String,
        b: &'static str,
        b_value: String,
    },
    #[error("`SLURM_STEP_TASKS_PER_NODE` is `{}`: {reason}", .value.escape_debug())]
    TasksPerNode { value: String, reason: &'static str },
}

/// Detects the rank of this process from its environment.
pub fn detect(env: &EnvMap) -> Result<RankInfo, RankEnvError> {
    let has = |name: &str| env.contains_key(name);
    if has("OMPI_COMM_WORLD_RANK") {
        let info = from_mpi_launcher(env, Source::OpenMpi, OMPI_VARS)?;
        cross_check(env, &info, "PMIX_RANK", "OMPI_COMM_WORLD_RANK")?;
        return Ok(info);
    }
    if has("MV2_COMM_WORLD_RANK") {
        return from_mpi_launcher(env, Source::Mvapich2, MV2_VARS);
    }
    let in_step = has("SLURM_STEP_NUM_TASKS");
    let pmi_rank_var = if has("PMI_RANK") {
        Some("PMI_RANK")
    } else if has("PMI_ID") {
        Some("PMI_ID")
    } else {
        None
    };
    if has("MPI_LOCALRANKID") || (pmi_rank_var.is_some() && !in_step) {
        let Some(rank_var) = pmi_rank_var else {
            return Err(RankEnvError::Missing {
                var: "PMI_RANK",
                why: "`MPI_LOCALRANKID` is set (Hydra) but the global rank is not",
            });
        };
        if !has("MPI_LOCALRANKID") {
            return Err(RankEnvError::Missing {
                var: "MPI_LOCALRANKID",
                why: "`PMI_RANK` is set outside a Slurm step, so this looks like Hydra, which always sets it",
            });
        }
        let vars = MpiVars {
            rank: rank_var,
            ..HYDRA_VARS
        };
        return from_mpi_launcher(env, Source::Hydra, vars);
    }
    if in_step {
        let mut info = from_slurm_step(env)?;
        if has("PMI_RANK") {
            info.source = Source::Pmi2;
            cross_check(env, &info, "PMI_RANK", "SLURM_PROCID")?;
            let pmi_size = number(env, "PMI_SIZE")?;
            if let Some(pmi_size) = pmi_size {
                if pmi_size != info.world_size {
                    return Err(contradiction(env, "PMI_SIZE", "SLURM_STEP_NUM_TASKS"));
                }
            }
        } else {
            cross_check(env, &info, "PMIX_RANK", "SLURM_PROCID")?;
        }
        return Ok(info);
    }
    if has("PMIX_RANK") {
        return Err(RankEnvError::Missing {
            var: "OMPI_COMM_WORLD_SIZE",
            why: "`PMIX_RANK` is set but no launcher variable gives the world size \
                  (`OMPI_COMM_WORLD_SIZE` or `SLURM_STEP_NUM_TASKS`)",
        });
    }
    // Not in a step: a plain process, or the batch script of a job (which looks like rank 0 of
    // `SLURM_NTASKS` but is not a rank of anything).
    Ok(RankInfo::single())
}

/// The variable names one MPI launcher uses.
#[derive(Clone, Copy)]
struct MpiVars {
    rank: &'static str,
    size: &'static str,
    local_rank: &'static str,
    local_size: &'static str,
}

const OMPI_VARS: MpiVars = MpiVars {
    rank: "OMPI_COMM_WORLD_RANK",
    size: "OMPI_COMM_WORLD_SIZE",
    local_rank: "OMPI_COMM_WORLD_LOCAL_RANK",
    local_size: "OMPI_COMM_WORLD_LOCAL_SIZE",
};
const MV2_VARS: MpiVars = MpiVars {
    rank: "MV2_COMM_WORLD_RANK",
    size: "MV2_COMM_WORLD_SIZE",
    local_rank: "MV2_COMM_WORLD_LOCAL_RANK",
    local_size: "MV2_COMM_WORLD_LOCAL_SIZE",
};
const HYDRA_VARS: MpiVars = MpiVars {
    rank: "PMI_RANK",
    size: "PMI_SIZE",
    local_rank: "MPI_LOCALRANKID",
    local_size: "MPI_LOCALNRANKS",
};

fn from_mpi_launcher(
    env: &EnvMap,
    source: Source,
    vars: MpiVars,
) -> Result<RankInfo, RankEnvError> {
    let why = "the launcher that set the rank always sets it";
    let rank = required(env, vars.rank, why)?;
    let world_size = required_positive(env, vars.size, why)?;
    let local_rank = required(env, vars.local_rank, why)?;
    let local_world_size = required_positive(env, vars.local_size, why)?;
    in_range(vars.rank, rank, vars.size, world_size)?;
    in_range(
        vars.local_rank,
        local_rank,
        vars.local_size,
        local_world_size,
    )?;
    if local_world_size > world_size {
        return Err(contradiction(env, vars.local_size, vars.size));
    }
    if local_rank > rank {
        return Err(contradiction(env, vars.local_rank, vars.rank));
    }
    // These launchers export no node index; with the default by-slot placement the ranks of a
    // node are contiguous, so the node of the first local rank is its global rank divided by the
    // ranks per node.
    let node_rank = (rank - local_rank) / local_world_size;
    Ok(RankInfo {
        rank,
        local_rank,
        world_size,
        local_world_size,
        node_rank,
        source,
        used: vec![vars.rank, vars.local_rank, vars.size, vars.local_size],
        node_rank_derived: true,
    })
}

fn from_slurm_step(env: &EnvMap) -> Result<RankInfo, RankEnvError> {
    let why = "`SLURM_STEP_NUM_TASKS` is set, so this is an srun task, which always has it";
    let rank = required(env, "SLURM_PROCID", why)?;
    let world_size = required_positive(env, "SLURM_STEP_NUM_TASKS", why)?;
    let local_rank = required(env, "SLURM_LOCALID", why)?;
    let node_rank = required(env, "SLURM_NODEID", why)?;
    let per_node_text = env
        .get("SLURM_STEP_TASKS_PER_NODE")
        .ok_or(RankEnvError::Missing {
            var: "SLURM_STEP_TASKS_PER_NODE",
            why,
        })?;
    let per_node = TasksPerNode::parse(per_node_text)?;
    in_range("SLURM_PROCID", rank, "SLURM_STEP_NUM_TASKS", world_size)?;
    if per_node.n_tasks() != u64::from(world_size) {
        return Err(contradiction(
            env,
            "SLURM_STEP_TASKS_PER_NODE",
            "SLURM_STEP_NUM_TASKS",
        ));
    }
    if let Some(n_nodes) = number(env, "SLURM_STEP_NUM_NODES")? {
        if u64::from(n_nodes) != per_node.n_nodes() {
            return Err(contradiction(
                env,
                "SLURM_STEP_TASKS_PER_NODE",
                "SLURM_STEP_NUM_NODES",
            ));
        }
    }
    let n_nodes = u32::try_from(per_node.n_nodes()).unwrap_or(u32::MAX);
    in_range("SLURM_NODEID", node_rank, "SLURM_STEP_NUM_NODES", n_nodes)?;
    let local_world_size = per_node.at(node_rank).unwrap_or(0);
    in_range(
        "SLURM_LOCALID",
        local_rank,
        "SLURM_STEP_TASKS_PER_NODE",
        local_world_size,
    )
    .map_err(|_| contradiction(env, "SLURM_LOCALID", "SLURM_STEP_TASKS_PER_NODE"))?;
    Ok(RankInfo {
        rank,
        local_rank,
        world_size,
        local_world_size,
        node_rank,
        source: Source::Slurm,
        used: vec![
            "SLURM_PROCID",
            "SLURM_LOCALID",
            "SLURM_STEP_NUM_TASKS",
            "SLURM_STEP_TASKS_PER_NODE",
            "SLURM_NODEID",
        ],
        node_rank_derived: false,
    })
}

/// `SLURM_STEP_TASKS_PER_NODE` / `SLURM_TASKS_PER_NODE`: tasks on each node, compressed as
/// `2(x3),1` (three nodes with 2 tasks, then one with 1). Kept compressed: a hostile
/// `1(x4000000000)` costs nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TasksPerNode {
    /// `(tasks, repetitions)` groups, in node order.
    groups: Vec<(u32, u32)>,
}

impl TasksPerNode {
    pub fn parse(text: &str) -> Result<Self, RankEnvError> {
        let err = |reason| RankEnvError::TasksPerNode {
            value: text.to_string(),
            reason,
        };
        let mut groups = Vec::new();
        for item in text.split(',') {
            let (count, reps) = match item.split_once('(') {
                None => (item, "1"),
                Some((count, rest)) => {
                    let reps = rest
                        .strip_prefix('x')
                        .and_then(|r| r.strip_suffix(')'))
                        .ok_or(err("expected `N` or `N(xM)` items separated by commas"))?;
                    (count, reps)
                }
            };
            let count = parse_digits(count)
                .ok_or(err("expected `N` or `N(xM)` items separated by commas"))?;
            let reps = parse_digits(reps)
                .ok_or(err("expected `N` or `N(xM)` items separated by commas"))?;
            if count == 0 || reps == 0 {
                return Err(err(
                    "a node cannot have zero tasks and a group cannot repeat zero times",
                ));
            }
            groups.push((count, reps));
        }
        let parsed = TasksPerNode { groups };
        if parsed.n_tasks() > u64::from(u32::MAX) {
            return Err(err("more tasks than fit a 32-bit rank"));
        }
        Ok(parsed)
    }

    /// Number of nodes.
    pub fn n_nodes(&self) -> u64 {
        self.groups.iter().map(|&(_, reps)| u64::from(reps)).sum()
    }

    /// Number of tasks over all nodes.
    pub fn n_tasks(&self) -> u64 {
        self.groups
            .iter()
            .map(|&(count, reps)| u64::from(count) * u64::from(reps))
            .sum()
    }

    /// Tasks on node `node_idx`, if there is such a node.
    pub fn at(&self, node_idx: u32) -> Option<u32> {
        let mut first = 0u64;
        for &(count, reps) in &self.groups {
            let next = first + u64::from(reps);
            if u64::from(node_idx) < next {
                return Some(count);
            }
            first = next;
        }
        None
    }
}

/// Digits only: no sign, no spaces, no `0x`, fits in `u32`.
fn parse_digits(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn number(env: &EnvMap, var: &'static str) -> Result<Option<u32>, RankEnvError> {
    match env.get(var) {
        None => Ok(None),
        Some(value) => parse_digits(value)
            .map(Some)
            .ok_or_else(|| RankEnvError::NotANumber {
                var,
                value: value.clone(),
            }),
    }
}

fn required(env: &EnvMap, var: &'static str, why: &'static str) -> Result<u32, RankEnvError> {
    number(env, var)?.ok_or(RankEnvError::Missing { var, why })
}

fn required_positive(
    env: &EnvMap,
    var: &'static str,
    why: &'static str,
) -> Result<u32, RankEnvError> {
    let value = required(env, var, why)?;
    if value == 0 {
        return Err(RankEnvError::Zero {
            var,
            value: "0".into(),
        });
    }
    Ok(value)
}

fn in_range(
    index_var: &'static str,
    index: u32,
    size_var: &'static str,
    size: u32,
) -> Result<(), RankEnvError> {
    if index >= size {
        return Err(RankEnvError::OutOfRange {
            index_var,
            index,
            size_var,
            size,
        });
    }
    Ok(())
}

fn contradiction(env: &EnvMap, a: &'static str, b: &'static str) -> RankEnvError {
    let get = |name| env.get(name).cloned().unwrap_or_default();
    RankEnvError::Contradiction {
        a,
        a_value: get(a),
        b,
        b_value: get(b),
    }
}

/// When `other` is set, it must name the same rank as `primary` did.
fn cross_check(
    env: &EnvMap,
    info: &RankInfo,
    other: &'static str,
    primary: &'static str,
) -> Result<(), RankEnvError> {
    match number(env, other)? {
        Some(value) if value != info.rank => Err(contradiction(env, other, primary)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> EnvMap {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    /// Parses a captured `env` dump: `KEY=VALUE` lines, `#` comments ignored.
    fn capture(text: &str, stop_at: Option<&str>) -> EnvMap {
        let mut map = EnvMap::new();
        for line in text.lines() {
            if stop_at.is_some_and(|marker| line.starts_with(marker)) {
                break;
            }
            if line.starts_with('#') {
                continue;
            }
            if let Some((key, value)) = line.split_once('=') {
                map.insert(key.to_string(), value.to_string());
            }
        }
        map
    }

    fn fixture(name: &str) -> String {
        let path = format!(
            "{}/../tests/fixtures/env/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("fixture {path}: {err}"))
    }

    /// (rank, local_rank, world_size, local_world_size, node_rank, source)
    type Expected = (u32, u32, u32, u32, u32, Source);

    #[track_caller]
    fn check(env: &EnvMap, expected: Expected) {
        let info = detect(env).unwrap_or_else(|err| panic!("unexpected error: {err}"));
        let got = (
            info.rank,
            info.local_rank,
            info.world_size,
            info.local_world_size,
            info.node_rank,
            info.source,
        );
        assert_eq!(got, expected);
    }

    #[track_caller]
    fn check_err(env: &EnvMap, expected: &str) {
        match detect(env) {
            Ok(info) => panic!("expected error `{expected}`, got {info:?}"),
            Err(err) => assert_eq!(err.to_string(), expected),
        }
    }

    #[test]
    fn real_captures() {
        let srun = fixture("srun-pmix-and-pmi2.txt");
        check(
            &capture(&srun, Some("# ----")),
            (0, 0, 4, 4, 0, Source::Slurm),
        );

        // The PMI-2 part of the capture lists only what differs; build the task's environment.
        let mut pmi2 = capture(&srun, Some("# ----"));
        pmi2.retain(|k, _| !k.starts_with("PMIX_"));
        pmi2.extend(env(&[
            ("PMI_FD", "11"),
            ("PMI_JOBID", "9.0"),
            ("PMI_RANK", "0"),
            ("PMI_SIZE", "2"),
            ("SLURM_MPI_TYPE", "pmi2"),
            ("SLURM_STEP_NUM_TASKS", "2"),
            ("SLURM_STEP_TASKS_PER_NODE", "2"),
        ]));
        check(&pmi2, (0, 0, 2, 2, 0, Source::Pmi2));

        let mut ompi = capture(&fixture("mpirun-openmpi.txt"), None);
        check(&ompi, (0, 0, 2, 2, 0, Source::OpenMpi));
        for (k, v) in [
            ("OMPI_COMM_WORLD_RANK", "1"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
            ("PMIX_RANK", "1"),
        ] {
            ompi.insert(k.into(), v.into());
        }
        check(&ompi, (1, 1, 2, 2, 0, Source::OpenMpi));

        let mpich = capture(&fixture("mpiexec-mpich.txt"), None);
        check(&mpich, (0, 0, 2, 2, 0, Source::Hydra));
    }

    #[test]
    fn mpirun_inside_sbatch_ignores_stale_batch_slurm_values() {
        // What an Open MPI rank 3 sees when mpirun runs in the batch script of a 2-node job:
        // the batch step's SLURM_PROCID=0 and job-level counts, and a per-node daemon step id.
        let e = env(&[
            ("SLURM_JOB_ID", "42"),
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "8"),
            ("SLURM_NODEID", "0"),
            ("SLURM_LOCALID", "0"),
            ("OMPI_COMM_WORLD_RANK", "3"),
            ("OMPI_COMM_WORLD_SIZE", "4"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
            ("OMPI_COMM_WORLD_LOCAL_SIZE", "2"),
            ("PMIX_RANK", "3"),
        ]);
        check(&e, (3, 1, 4, 2, 1, Source::OpenMpi));
    }

    #[test]
    fn slurm_steps() {
        let step = |procid: &str, localid: &str, nodeid: &str, tasks: &str, per_node: &str| {
            env(&[
                ("SLURM_JOB_ID", "7"),
                ("SLURM_NTASKS", "99"), // Job-level leftovers must not matter.
                ("SLURM_JOB_NUM_NODES", "9"),
                ("SLURM_STEP_ID", "3"),
                ("SLURM_PROCID", procid),
                ("SLURM_LOCALID", localid),
                ("SLURM_NODEID", nodeid),
                ("SLURM_STEP_NUM_TASKS", tasks),
                ("SLURM_STEP_TASKS_PER_NODE", per_node),
            ])
        };
        check(
            &step("0", "0", "0", "1", "1"),
            (0, 0, 1, 1, 0, Source::Slurm),
        );
        check(
            &step("4", "1", "1", "8", "3,2(x2),1"),
            (4, 1, 8, 2, 1, Source::Slurm),
        );
        check(
            &step("7", "0", "3", "8", "3,2(x2),1"),
            (7, 0, 8, 1, 3, Source::Slurm),
        );
        check(
            &step("13", "3", "3", "16", "4(x4)"),
            (13, 3, 16, 4, 3, Source::Slurm),
        );
    }

    #[test]
    fn batch_script_and_plain_process_are_single() {
        check(&env(&[]), (0, 0, 1, 1, 0, Source::Single));
        let batch = env(&[
            ("SLURM_JOB_ID", "7"),
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "24"),
            ("SLURM_NODEID", "0"),
        ]);
        check(&batch, (0, 0, 1, 1, 0, Source::Single));
    }

    #[test]
    fn hydra_and_mvapich() {
        let hydra = env(&[
            ("PMI_ID", "2"),
            ("PMI_SIZE", "4"),
            ("MPI_LOCALRANKID", "0"),
            ("MPI_LOCALNRANKS", "2"),
        ]);
        check(&hydra, (2, 0, 4, 2, 1, Source::Hydra));
        let mv2 = env(&[
            ("MV2_COMM_WORLD_RANK", "5"),
            ("MV2_COMM_WORLD_SIZE", "6"),
            ("MV2_COMM_WORLD_LOCAL_RANK", "2"),
            ("MV2_COMM_WORLD_LOCAL_SIZE", "3"),
        ]);
        check(&mv2, (5, 2, 6, 3, 1, Source::Mvapich2));
    }

    #[test]
    fn errors_name_the_variables() {
        let slurm = |procid: &str, tasks: &str, per_node: &str, extra: &[(&str, &str)]| {
            let mut e = env(&[
                ("SLURM_STEP_ID", "0"),
                ("SLURM_PROCID", procid),
                ("SLURM_LOCALID", "0"),
                ("SLURM_NODEID", "0"),
                ("SLURM_STEP_NUM_TASKS", tasks),
                ("SLURM_STEP_TASKS_PER_NODE", per_node),
            ]);
            e.extend(env(extra));
            e
        };
        let cases: &[(EnvMap, &str)] = &[
            (
                slurm("7", "4", "4", &[]),
                "`SLURM_PROCID`=7 is out of range for `SLURM_STEP_NUM_TASKS`=4",
            ),
            (
                slurm("x1", "4", "4", &[]),
                "`SLURM_PROCID` is `x1`: expected a non-negative integer",
            ),
            (
                slurm("-1", "4", "4", &[]),
                "`SLURM_PROCID` is `-1`: expected a non-negative integer",
            ),
            (
                slurm(" 1", "4", "4", &[]),
                "`SLURM_PROCID` is ` 1`: expected a non-negative integer",
            ),
            (
                slurm("99999999999", "4", "4", &[]),
                "`SLURM_PROCID` is `99999999999`: expected a non-negative integer",
            ),
            (
                slurm("0", "0", "4", &[]),
                "`SLURM_STEP_NUM_TASKS` is `0`: expected a value of at least 1",
            ),
            (
                slurm("1", "4", "3", &[]),
                "`SLURM_STEP_TASKS_PER_NODE`=3 contradicts `SLURM_STEP_NUM_TASKS`=4",
            ),
            (
                slurm("1", "4", "2(x2", &[]),
                "`SLURM_STEP_TASKS_PER_NODE` is `2(x2`: expected `N` or `N(xM)` items separated by commas",
            ),
            (
                slurm("1", "4", "2(x2),0", &[]),
                "`SLURM_STEP_TASKS_PER_NODE` is `2(x2),0`: a node cannot have zero tasks and a group cannot repeat zero times",
            ),
            (
                slurm("1", "4", "2(x2)", &[("SLURM_STEP_NUM_NODES", "3")]),
                "`SLURM_STEP_TASKS_PER_NODE`=2(x2) contradicts `SLURM_STEP_NUM_NODES`=3",
            ),
            (
                slurm("1", "4", "4", &[("PMIX_RANK", "2")]),
                "`PMIX_RANK`=2 contradicts `SLURM_PROCID`=1",
            ),
            (
                slurm("1", "4", "4", &[("PMI_RANK", "1"), ("PMI_SIZE", "2")]),
                "`PMI_SIZE`=2 contradicts `SLURM_STEP_NUM_TASKS`=4",
            ),
            (
                slurm("1", "4", "4", &[("SLURM_LOCALID", "4")]),
                "`SLURM_LOCALID`=4 contradicts `SLURM_STEP_TASKS_PER_NODE`=4",
            ),
            (
                slurm("1", "4", "4", &[("SLURM_NODEID", "1")]),
                "`SLURM_NODEID`=1 is out of range for `SLURM_STEP_NUM_NODES`=1",
            ),
            (
                env(&[("SLURM_STEP_NUM_TASKS", "4")]),
                "`SLURM_PROCID` is missing: `SLURM_STEP_NUM_TASKS` is set, so this is an srun task, which always has it",
            ),
            (
                env(&[("OMPI_COMM_WORLD_RANK", "0")]),
                "`OMPI_COMM_WORLD_SIZE` is missing: the launcher that set the rank always sets it",
            ),
            (
                env(&[
                    ("OMPI_COMM_WORLD_RANK", "4"),
                    ("OMPI_COMM_WORLD_SIZE", "4"),
                    ("OMPI_COMM_WORLD_LOCAL_RANK", "0"),
                    ("OMPI_COMM_WORLD_LOCAL_SIZE", "1"),
                ]),
                "`OMPI_COMM_WORLD_RANK`=4 is out of range for `OMPI_COMM_WORLD_SIZE`=4",
            ),
            (
                env(&[
                    ("OMPI_COMM_WORLD_RANK", "1"),
                    ("OMPI_COMM_WORLD_SIZE", "4"),
                    ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
                    ("OMPI_COMM_WORLD_LOCAL_SIZE", "8"),
                ]),
                "`OMPI_COMM_WORLD_LOCAL_SIZE`=8 contradicts `OMPI_COMM_WORLD_SIZE`=4",
            ),
            (
                env(&[
                    ("OMPI_COMM_WORLD_RANK", "1"),
                    ("OMPI_COMM_WORLD_SIZE", "4"),
                    ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
                    ("OMPI_COMM_WORLD_LOCAL_SIZE", "2"),
                    ("PMIX_RANK", "0"),
                ]),
                "`PMIX_RANK`=0 contradicts `OMPI_COMM_WORLD_RANK`=1",
            ),
            (
                env(&[("PMI_RANK", "1"), ("PMI_SIZE", "2")]),
                "`MPI_LOCALRANKID` is missing: `PMI_RANK` is set outside a Slurm step, so this looks like Hydra, which always sets it",
            ),
            (
                env(&[("PMIX_RANK", "0")]),
                "`OMPI_COMM_WORLD_SIZE` is missing: `PMIX_RANK` is set but no launcher variable gives the world size (`OMPI_COMM_WORLD_SIZE` or `SLURM_STEP_NUM_TASKS`)",
            ),
        ];
        for (e, expected) in cases {
            check_err(e, expected);
        }
    }

    #[test]
    fn tasks_per_node_forms() {
        /// (text, nodes, tasks, [(node, tasks on it)])
        type Case<'a> = (&'a str, u64, u64, &'a [(u32, Option<u32>)]);
        let cases: &[Case<'_>] = &[
            ("4", 1, 4, &[(0, Some(4)), (1, None)]),
            (
                "2(x3),1",
                4,
                7,
                &[(0, Some(2)), (2, Some(2)), (3, Some(1)), (4, None)],
            ),
            ("3,2(x2)", 3, 7, &[(0, Some(3)), (1, Some(2)), (2, Some(2))]),
            (
                "1(x4000000000)",
                4_000_000_000,
                4_000_000_000,
                &[(3_999_999_999, Some(1))],
            ),
        ];
        for &(text, n_nodes, n_tasks, probes) in cases {
            let parsed = TasksPerNode::parse(text).unwrap();
            assert_eq!(
                (parsed.n_nodes(), parsed.n_tasks()),
                (n_nodes, n_tasks),
                "{text}"
            );
            for &(node, expected) in probes {
                assert_eq!(parsed.at(node), expected, "{text} node {node}");
            }
        }
        for bad in [
            "",
            ",",
            "2,",
            "x",
            "2(3)",
            "2(x)",
            "(x2)",
            "2(x2)3",
            "+1",
            "4294967296",
            "4294967295(x2)",
        ] {
            assert!(
                TasksPerNode::parse(bad).is_err(),
                "`{bad}` should be rejected"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn detection_never_panics(
            pairs in proptest::collection::vec(
                (proptest::sample::select(vec![
                    "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NODEID", "SLURM_STEP_NUM_TASKS",
                    "SLURM_STEP_NUM_NODES", "SLURM_STEP_TASKS_PER_NODE", "SLURM_STEP_ID",
                    "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
                    "OMPI_COMM_WORLD_LOCAL_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE", "PMI_ID",
                    "MPI_LOCALRANKID", "MPI_LOCALNRANKS", "MV2_COMM_WORLD_RANK",
                ]), "[0-9x(),]{0,8}"),
                0..12,
            )
        ) {
            let e: EnvMap = pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            if let Ok(info) = detect(&e) {
                proptest::prop_assert!(info.rank < info.world_size);
                proptest::prop_assert!(info.local_rank < info.local_world_size);
                proptest::prop_assert!(info.local_world_size <= info.world_size);
            }
        }
    }
}
