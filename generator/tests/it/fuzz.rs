//! Fuzz targets for the two parsers that take user files: the config loader (and the plan built
//! from what it accepts) and the test-list parser. Each replays its kept corpus
//! (`tests/corpus/<target>/`, plus the real configs), then runs proptest on mutations of the
//! corpus and on arbitrary text. The number of cases is bounded by `PROPTEST_CASES` (CI sets
//! it); a failing input is shrunk and persisted under `proptest-regressions/`, which is kept.
//! The property: never a panic; an accepted config yields a plan whose arithmetic holds.

use std::path::{Path, PathBuf};

use launch_gen::config::LaunchConfig;
use launch_gen::plan::Plan;
use launch_gen::testlist;
use proptest::prelude::*;

use super::real_configs;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(target);
    let mut entries: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("corpus at {}: {error}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .map(|path| {
            let bytes = std::fs::read(&path).expect("corpus file");
            (path, bytes)
        })
        .collect();
    entries.sort();
    assert!(!entries.is_empty(), "the {target} corpus is empty");
    entries
}

fn config_seeds() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = corpus("config")
        .into_iter()
        .map(|(_, bytes)| bytes)
        .collect();
    seeds.extend(
        real_configs()
            .iter()
            .map(|path| std::fs::read(path).expect("config")),
    );
    seeds
}

/// The property for configs: parse, and when accepted, plan without panicking and with
/// consistent totals.
fn check_config(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let Ok(config) = LaunchConfig::from_yaml(&text) else {
        return;
    };
    if let Ok(plan) = Plan::new(&config) {
        assert!(plan.gpus_per_node > 0);
        assert!(plan.total_gpus >= plan.total_nodes);
    }
}

/// Edits applied to a seed: overwrite, insert, delete, truncate, splice of a second seed.
#[derive(Debug, Clone)]
enum Edit {
    Overwrite(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
    Splice(usize, usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Edit::Overwrite(p, b)),
        (
            any::<usize>(),
            proptest::collection::vec(
                prop_oneof![
                    Just(b'['),
                    Just(b'{'),
                    Just(b'&'),
                    Just(b'*'),
                    Just(b':'),
                    Just(b'\n'),
                    Just(b'-'),
                    any::<u8>()
                ],
                1..8
            )
        )
            .prop_map(|(p, bytes)| Edit::Insert(p, bytes)),
        (any::<usize>(), 1usize..64).prop_map(|(p, n)| Edit::Delete(p, n)),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), any::<usize>(), any::<usize>())
            .prop_map(|(s, a, b)| Edit::Splice(s, a, b)),
    ]
}

fn mutate(seeds: &[Vec<u8>], seed_idx: usize, edits: &[Edit]) -> Vec<u8> {
    let mut bytes = seeds[seed_idx % seeds.len()].clone();
    for edit in edits {
        let at = |p: usize, len: usize| if len == 0 { 0 } else { p % (len + 1) };
        match edit {
            Edit::Overwrite(p, b) if !bytes.is_empty() => {
                let i = p % bytes.len();
                bytes[i] = *b;
            }
            Edit::Overwrite(..) => {}
            Edit::Insert(p, new) => {
                let i = at(*p, bytes.len());
                bytes.splice(i..i, new.iter().copied());
            }
            Edit::Delete(p, n) => {
                let i = at(*p, bytes.len());
                let end = (i + n).min(bytes.len());
                bytes.drain(i..end);
            }
            Edit::Truncate(p) => {
                let i = at(*p, bytes.len());
                bytes.truncate(i);
            }
            Edit::Splice(s, a, b) => {
                let other = &seeds[s % seeds.len()];
                let (from, to) = (at(*a, other.len()), at(*b, other.len()));
                let (from, to) = (from.min(to), from.max(to));
                let i = at(*a, bytes.len());
                bytes.splice(i..i, other[from..to].iter().copied());
            }
        }
    }
    bytes
}

#[test]
fn config_corpus_replays() {
    for seed in config_seeds() {
        check_config(&seed);
    }
}

#[test]
fn test_list_corpus_replays() {
    for (path, bytes) in corpus("test_list") {
        let text = String::from_utf8_lossy(&bytes);
        match testlist::config_name(&text) {
            Ok(name) => assert!(!name.is_empty(), "{}", path.display()),
            Err(error) => assert!(!error.to_string().is_empty()),
        }
    }
}

proptest! {
    #[test]
    fn config_loader_survives_mutated_configs(seed_idx in any::<usize>(), edits in proptest::collection::vec(edit(), 1..6)) {
        let seeds = config_seeds();
        check_config(&mutate(&seeds, seed_idx, &edits));
    }

    #[test]
    fn config_loader_survives_arbitrary_text(text in "\\PC{0,200}") {
        check_config(text.as_bytes());
    }

    #[test]
    fn test_list_parser_survives_anything(seed_idx in any::<usize>(), edits in proptest::collection::vec(edit(), 0..6), text in "\\PC{0,80}") {
        let seeds: Vec<Vec<u8>> = corpus("test_list").into_iter().map(|(_, b)| b).collect();
        for candidate in [mutate(&seeds, seed_idx, &edits), text.into_bytes()] {
            let text = String::from_utf8_lossy(&candidate);
            if let Ok(name) = testlist::config_name(&text) {
                prop_assert!(!name.is_empty());
                prop_assert!(!name.contains(']'));
            }
        }
    }
}
