//! The test list: which config a CI stage runs.
//!
//! Compatibility with the first generator ([`config_name`]): only the first line of the test
//! list counts, e.g. `perf/test_perf_sanity.py::test_e2e[disagg_upload-<config>]`; the text
//! between the last `[` and the next `]` is split on `-`, the first part must contain `disagg`
//! and the rest, joined back with `-`, is the config name under [`CONFIG_DIR`].
//!
//! Native mode ([`select`]) reads both generations' test ids. Upstream's unified generator
//! puts a mode token after the prefix, `disagg*-{e2e|gen_only}-<config>`, and keeps its configs
//! under [`G2_CONFIG_DIR`]; an id of that form is looked up there first and, when the file is
//! missing, as the first generator would read it (config `e2e-<config>` under [`CONFIG_DIR`],
//! for trees that only have the old folder). The line is chosen like the unified generator
//! does, so that a CI's split groups select the same test: blank lines do not count, every
//! other stripped line does (comment lines too), and `--split-group N` (N ≥ 1) takes the N-th;
//! 0 takes the first. A selected comment line is an error rather than a test.

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::pytext;

/// Where configs live, relative to `--llm-src` (G1 at `submit.py@0c8de69a1ca6`).
pub const CONFIG_DIR: &str = "tests/integration/defs/perf/disagg/test_configs/disagg/perf";

/// Where the unified generator's configs live, relative to `--llm-src` (G2 at 39778d35).
pub const G2_CONFIG_DIR: &str = "tests/scripts/perf-sanity/disaggregated";

/// The mode token of a unified-generator test id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestMode {
    E2e,
    GenOnly,
}

impl TestMode {
    /// The token as written in the test id.
    pub fn token(self) -> &'static str {
        match self {
            Self::E2e => "e2e",
            Self::GenOnly => "gen_only",
        }
    }
}

/// The test a native run takes from its test list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    /// 1-based line number in the file.
    pub line: usize,
    /// The text inside the brackets, e.g. `disagg_upload-e2e-<config>`.
    pub test_id: String,
    /// The mode token of a unified-generator id; `None` for a first-generator id.
    pub mode: Option<TestMode>,
    /// The config name: the id without its prefix (and mode token).
    pub config: String,
}

impl Selected {
    /// Where the config may be, in the order they are tried, with the mode each one implies
    /// (a unified id read the old way carries no mode token).
    pub fn candidates(&self, llm_src: &Path) -> Vec<(PathBuf, Option<TestMode>)> {
        let file = |dir: &str, name: &str| llm_src.join(dir).join(format!("{name}.yaml"));
        match self.mode {
            None => vec![(file(CONFIG_DIR, &self.config), None)],
            Some(mode) => vec![
                (file(G2_CONFIG_DIR, &self.config), Some(mode)),
                (
                    file(CONFIG_DIR, &format!("{}-{}", mode.token(), self.config)),
                    None,
                ),
            ],
        }
    }
}

/// Why a test list selects no test in native mode.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SelectError {
    #[error("expected {EXPECTED}, found no test: the file is empty or blank")]
    Empty,
    #[error("`--split-group {group}`: the file has {count} test lines (blank lines do not count)")]
    GroupTooLarge { group: u64, count: usize },
    #[error(
        "line {line}: `--split-group {group}` selects a comment line (`{text}`); comment lines \
         count for split groups, as in upstream's generator"
    )]
    Comment {
        line: usize,
        group: u64,
        text: String,
    },
    #[error("line {line}: expected {EXPECTED}, found `{text}` without `[...]`")]
    NoBrackets { line: usize, text: String },
    #[error("line {line}: expected `disagg-<config>` inside the brackets, found `[{bracket}]`")]
    NoDash { line: usize, bracket: String },
    #[error(
        "line {line}: expected `disagg` before the first `-` in `[{bracket}]`, found `{prefix}`"
    )]
    NotDisagg {
        line: usize,
        bracket: String,
        prefix: String,
    },
    #[error("line {line}: expected a config name after `{head}-` in `[{bracket}]`, found none")]
    NoConfigName {
        line: usize,
        head: String,
        bracket: String,
    },
}

/// The test that line `split_group` (1-based; 0 = the first) of `test_list` names.
pub fn select(test_list: &str, split_group: u64) -> Result<Selected, SelectError> {
    let lines: Vec<(usize, &str)> = test_list
        .lines()
        .enumerate()
        .map(|(index, text)| (index + 1, pytext::strip(text)))
        .filter(|(_, text)| !text.is_empty())
        .collect();
    if lines.is_empty() {
        return Err(SelectError::Empty);
    }
    let index = usize::try_from(split_group.saturating_sub(1)).unwrap_or(usize::MAX);
    let Some(&(line, text)) = lines.get(index) else {
        return Err(SelectError::GroupTooLarge {
            group: split_group,
            count: lines.len(),
        });
    };
    if text.starts_with('#') {
        return Err(SelectError::Comment {
            line,
            group: split_group,
            text: text.to_owned(),
        });
    }
    if !text.contains('[') || !text.contains(']') {
        return Err(SelectError::NoBrackets {
            line,
            text: text.to_owned(),
        });
    }
    let bracket = bracket(text);
    let Some((prefix, rest)) = bracket.split_once('-') else {
        return Err(SelectError::NoDash {
            line,
            bracket: bracket.to_owned(),
        });
    };
    let rest: Vec<&str> = rest.split('-').collect();
    if !prefix.contains("disagg") {
        return Err(SelectError::NotDisagg {
            line,
            bracket: bracket.to_owned(),
            prefix: prefix.to_owned(),
        });
    }
    // A mode token needs something after it; `disagg-gen_only` names a config `gen_only`.
    let mode = match rest.as_slice() {
        ["e2e", _, ..] => Some(TestMode::E2e),
        ["gen_only", _, ..] => Some(TestMode::GenOnly),
        _ => None,
    };
    let (head, config) = match mode {
        Some(mode) => (format!("{prefix}-{}", mode.token()), rest[1..].join("-")),
        None => (prefix.to_owned(), rest.join("-")),
    };
    if config.is_empty() {
        return Err(SelectError::NoConfigName {
            line,
            head,
            bracket: bracket.to_owned(),
        });
    }
    Ok(Selected {
        line,
        test_id: bracket.to_owned(),
        mode,
        config,
    })
}

/// The test id grammar, for messages.
const EXPECTED: &str = "a test id like `perf/test_perf_sanity.py::test_e2e[disagg-<config>]`";

/// Why the first line of a test list names no config.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TestListError {
    #[error("line 1: expected {EXPECTED}, found an empty line")]
    Empty,
    #[error("line 1: expected {EXPECTED}, found `{line}` without `[...]`")]
    NoBrackets { line: String },
    #[error("line 1: expected `disagg-<config>` inside the brackets, found `[{bracket}]`")]
    NoDash { bracket: String },
    #[error("line 1: expected `disagg` before the first `-` in `[{bracket}]`, found `{prefix}`")]
    NotDisagg { bracket: String, prefix: String },
    #[error("line 1: expected a config name after `disagg-` in `[{bracket}]`, found none")]
    NoConfigName { bracket: String },
}

/// The config name that the first line of `test_list` selects.
pub fn config_name(test_list: &str) -> Result<String, TestListError> {
    let line = pytext::strip(pytext::first_line(test_list));
    if line.is_empty() {
        return Err(TestListError::Empty);
    }
    if !line.contains('[') || !line.contains(']') {
        return Err(TestListError::NoBrackets {
            line: line.to_owned(),
        });
    }
    let bracket = bracket(line);
    let Some((prefix, name)) = bracket.split_once('-') else {
        return Err(TestListError::NoDash {
            bracket: bracket.to_owned(),
        });
    };
    if !prefix.contains("disagg") {
        return Err(TestListError::NotDisagg {
            bracket: bracket.to_owned(),
            prefix: prefix.to_owned(),
        });
    }
    if name.is_empty() {
        return Err(TestListError::NoConfigName {
            bracket: bracket.to_owned(),
        });
    }
    Ok(name.to_owned())
}

/// The text after the last `[` of a line, up to the next `]` (the line has both).
fn bracket(line: &str) -> &str {
    let after_open = line.rsplit('[').next().unwrap_or_default();
    after_open.split(']').next().unwrap_or_default()
}

/// The config file of `name` under the source tree `llm_src` (`""` means the current directory).
pub fn config_path(llm_src: &Path, name: &str) -> PathBuf {
    llm_src.join(CONFIG_DIR).join(format!("{name}.yaml"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_follow_the_reference_rule() {
        let cases = [
            (
                "perf/test_perf_sanity.py::test_e2e[disagg_upload-a-b_c.GEN_ONLY]",
                "a-b_c.GEN_ONLY",
            ),
            ("  x[disagg-cfg]  \nsecond[aggr-other]\n", "cfg"),
            // Only the last `[` counts, and the name ends at the next `]`.
            ("a[b][disagg-cfg]tail]", "cfg"),
            ("t[my_disagg_run-cfg-2]\r\n", "cfg-2"),
        ];
        for (line, name) in cases {
            assert_eq!(config_name(line).as_deref(), Ok(name), "line {line:?}");
        }
    }

    #[test]
    fn wrong_test_ids_are_explained() {
        let cases = [
            (
                "",
                "line 1: expected a test id like `perf/test_perf_sanity.py::test_e2e[disagg-<config>]`, found an empty line",
            ),
            (
                "\nt[disagg-cfg]",
                "line 1: expected a test id like `perf/test_perf_sanity.py::test_e2e[disagg-<config>]`, found an empty line",
            ),
            (
                "test_e2e-disagg-cfg",
                "line 1: expected a test id like `perf/test_perf_sanity.py::test_e2e[disagg-<config>]`, found `test_e2e-disagg-cfg` without `[...]`",
            ),
            (
                "t[aggr-cfg]",
                "line 1: expected `disagg` before the first `-` in `[aggr-cfg]`, found `aggr`",
            ),
            (
                "t[disagg]",
                "line 1: expected `disagg-<config>` inside the brackets, found `[disagg]`",
            ),
            (
                "t[disagg-]",
                "line 1: expected a config name after `disagg-` in `[disagg-]`, found none",
            ),
        ];
        for (line, message) in cases {
            let error = config_name(line).expect_err(line);
            assert_eq!(error.to_string(), message, "line {line:?}");
        }
    }

    #[test]
    fn native_selection_reads_both_generations_and_split_groups() {
        let list = "\n  # nightly\n\nt[disagg_upload-e2e-a-b]  TIMEOUT (90)\r\n\
                    t[disagg-gen_only-c]\nt[disagg-old-d]\nt[x][disagg-gen_only]\n";
        let cases: [(u64, usize, &str, Option<TestMode>, &str); 5] = [
            (2, 4, "disagg_upload-e2e-a-b", Some(TestMode::E2e), "a-b"),
            (3, 5, "disagg-gen_only-c", Some(TestMode::GenOnly), "c"),
            (4, 6, "disagg-old-d", None, "old-d"),
            // `gen_only` alone is not a mode token followed by a name: a G1 config name.
            (5, 7, "disagg-gen_only", None, "gen_only"),
            (2, 4, "disagg_upload-e2e-a-b", Some(TestMode::E2e), "a-b"),
        ];
        for (group, line, test_id, mode, config) in cases {
            let selected = select(list, group).expect("a test");
            let expected = Selected {
                line,
                test_id: test_id.to_owned(),
                mode,
                config: config.to_owned(),
            };
            assert_eq!(selected, expected, "group {group}");
        }
        let errors = [
            (
                0,
                "line 2: `--split-group 0` selects a comment line (`# nightly`); comment lines count for split groups, as in upstream's generator",
            ),
            (
                6,
                "`--split-group 6`: the file has 5 test lines (blank lines do not count)",
            ),
        ];
        for (group, message) in errors {
            assert_eq!(
                select(list, group).expect_err("no test").to_string(),
                message
            );
        }
        assert_eq!(select("t[disagg-e2e-a]", 0).map(|s| s.line), Ok(1));
        let more = [
            (
                " \n\t\n",
                "expected a test id like `perf/test_perf_sanity.py::test_e2e[disagg-<config>]`, found no test: the file is empty or blank",
            ),
            (
                "t[disagg-e2e-]",
                "line 1: expected a config name after `disagg-e2e-` in `[disagg-e2e-]`, found none",
            ),
            (
                "t[disagg-]",
                "line 1: expected a config name after `disagg-` in `[disagg-]`, found none",
            ),
            (
                "t[aggr-e2e-x]",
                "line 1: expected `disagg` before the first `-` in `[aggr-e2e-x]`, found `aggr`",
            ),
            (
                "t[disagg]",
                "line 1: expected `disagg-<config>` inside the brackets, found `[disagg]`",
            ),
            (
                "\ntest_e2e",
                "line 2: expected a test id like `perf/test_perf_sanity.py::test_e2e[disagg-<config>]`, found `test_e2e` without `[...]`",
            ),
        ];
        for (list, message) in more {
            assert_eq!(select(list, 0).expect_err(list).to_string(), message);
        }
    }

    #[test]
    fn unified_ids_are_looked_up_in_the_new_folder_then_the_old_way() {
        let selected = select("t[disagg-gen_only-x]", 0).expect("a test");
        assert_eq!(
            selected.candidates(Path::new("src")),
            [
                (
                    PathBuf::from("src/tests/scripts/perf-sanity/disaggregated/x.yaml"),
                    Some(TestMode::GenOnly)
                ),
                (
                    PathBuf::from(
                        "src/tests/integration/defs/perf/disagg/test_configs/disagg/perf/gen_only-x.yaml"
                    ),
                    None
                ),
            ]
        );
        let old = select("t[disagg-x]", 0).expect("a test");
        assert_eq!(old.candidates(Path::new("")).len(), 1);
    }

    proptest::proptest! {
        #[test]
        fn selection_never_panics_and_names_a_real_line(
            list in "(\\PC{0,12}[\\[\\]\\-#\\n ]{0,3}){0,6}",
            group in 0u64..8,
        ) {
            if let Ok(selected) = select(&list, group) {
                let line = list.lines().nth(selected.line - 1);
                proptest::prop_assert!(line.is_some_and(|l| l.contains(&selected.test_id)));
                proptest::prop_assert!(!selected.config.is_empty());
            }
        }
    }

    #[test]
    fn config_path_is_under_the_source_tree() {
        assert_eq!(
            config_path(Path::new(""), "x"),
            PathBuf::from("tests/integration/defs/perf/disagg/test_configs/disagg/perf/x.yaml")
        );
    }
}
