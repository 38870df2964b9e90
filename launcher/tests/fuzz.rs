//! Fuzz targets for the two parsers that read what a launcher hands a rank: rank detection
//! over a whole environment, and the compressed `SLURM_STEP_TASKS_PER_NODE` form. Each replays
//! its kept corpus (`tests/corpus/`, plus the real captures in `tests/fixtures/env/`), then runs
//! proptest on mutations of it. `PROPTEST_CASES` bounds the run (CI sets it); failures are
//! shrunk and persisted under `proptest-regressions/`, which is kept.
//! The properties: never a panic; an accepted environment describes a valid rank; an accepted
//! tasks-per-node text agrees with its own expansion.

use std::path::Path;

use proptest::prelude::*;
use rank_launch::rank::{EnvMap, TasksPerNode, detect};

fn parse_env(text: &str) -> EnvMap {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn env_corpus() -> Vec<EnvMap> {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for dir in [
        here.join("tests/corpus/rank_env"),
        here.join("../tests/fixtures/env"),
    ] {
        let mut paths: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|error| panic!("corpus at {}: {error}", dir.display()))
            .map(|e| e.expect("entry").path())
            .collect();
        paths.sort();
        for path in paths {
            out.push(parse_env(
                &std::fs::read_to_string(&path).expect("corpus file"),
            ));
        }
    }
    assert!(out.len() >= 8, "rank environment corpus too small");
    out
}

fn tasks_per_node_corpus() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/tasks_per_node.txt");
    std::fs::read_to_string(path)
        .expect("corpus")
        .lines()
        .map(str::to_string)
        .collect()
}

/// The property for a detected rank.
fn check_env(env: &EnvMap) -> Result<(), TestCaseError> {
    if let Ok(info) = detect(env) {
        prop_assert!(info.rank < info.world_size);
        prop_assert!(info.local_rank < info.local_world_size);
        prop_assert!(info.local_world_size <= info.world_size);
        prop_assert!(info.node_rank < info.world_size);
    }
    Ok(())
}

/// The property for a tasks-per-node text: what it claims equals its expansion (small ones).
fn check_tasks_per_node(text: &str) -> Result<(), TestCaseError> {
    let Ok(parsed) = TasksPerNode::parse(text) else {
        return Ok(());
    };
    if parsed.n_nodes() <= 10_000 {
        let n_nodes = u32::try_from(parsed.n_nodes()).expect("small");
        let sum: u64 = (0..n_nodes)
            .map(|node| u64::from(parsed.at(node).expect("node in range")))
            .sum();
        prop_assert_eq!(sum, parsed.n_tasks());
        prop_assert_eq!(parsed.at(n_nodes), None);
    }
    Ok(())
}

#[test]
fn corpora_replay() {
    for env in env_corpus() {
        check_env(&env).expect("property");
    }
    for text in tasks_per_node_corpus() {
        check_tasks_per_node(&text).expect("property");
    }
}

/// A mutation of one variable of a corpus environment.
fn env_mutation() -> impl Strategy<Value = (usize, usize, String)> {
    let value = prop_oneof![
        "[0-9]{1,3}",
        "[0-9]{1,3}(\\(x[0-9]{1,2}\\))?(,[0-9]{1,2}(\\(x[0-9]\\))?){0,3}",
        "\\PC{0,6}",
        Just(String::new()),
        Just("4294967296".to_string()),
    ];
    (any::<usize>(), any::<usize>(), value)
}

const NAMES: &[&str] = &[
    "SLURM_PROCID",
    "SLURM_LOCALID",
    "SLURM_NODEID",
    "SLURM_STEP_NUM_TASKS",
    "SLURM_STEP_NUM_NODES",
    "SLURM_STEP_TASKS_PER_NODE",
    "SLURM_STEP_ID",
    "OMPI_COMM_WORLD_RANK",
    "OMPI_COMM_WORLD_SIZE",
    "OMPI_COMM_WORLD_LOCAL_RANK",
    "OMPI_COMM_WORLD_LOCAL_SIZE",
    "PMIX_RANK",
    "PMI_RANK",
    "PMI_SIZE",
    "PMI_ID",
    "MPI_LOCALRANKID",
    "MPI_LOCALNRANKS",
    "MV2_COMM_WORLD_RANK",
    "MV2_COMM_WORLD_SIZE",
    "MV2_COMM_WORLD_LOCAL_RANK",
    "MV2_COMM_WORLD_LOCAL_SIZE",
];

proptest! {
    #[test]
    fn rank_detection_survives_mutated_environments(
        seed in any::<usize>(),
        mutations in proptest::collection::vec(env_mutation(), 1..5),
        removals in proptest::collection::vec(any::<usize>(), 0..3),
    ) {
        let corpus = env_corpus();
        let mut env = corpus[seed % corpus.len()].clone();
        for (_, name_idx, value) in mutations {
            env.insert(NAMES[name_idx % NAMES.len()].to_string(), value);
        }
        for idx in removals {
            env.remove(NAMES[idx % NAMES.len()]);
        }
        check_env(&env)?;
    }

    #[test]
    fn tasks_per_node_survives_anything(
        seed in any::<usize>(),
        cut in any::<usize>(),
        insert in "[0-9x(),]{0,6}",
        text in "\\PC{0,24}",
    ) {
        let corpus = tasks_per_node_corpus();
        let base = &corpus[seed % corpus.len()];
        let at = base.char_indices().map(|(i, _)| i).chain([base.len()]).nth(cut % (base.chars().count() + 1)).unwrap_or(0);
        let mutated = format!("{}{insert}{}", &base[..at], &base[at..]);
        check_tasks_per_node(&mutated)?;
        check_tasks_per_node(&text)?;
    }
}
