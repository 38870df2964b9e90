//! The test list: which config a CI stage runs.
//!
//! The reference reads only the first line of the test list, e.g.
//! `perf/test_perf_sanity.py::test_e2e[disagg_upload-<config>]`, takes the text between the
//! last `[` and the next `]`, splits it on `-`, requires `disagg` in the first part and joins
//! the rest back with `-` into the config name. The config lives under [`CONFIG_DIR`].

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::pytext;

/// Where configs live, relative to `--llm-src` (G1 at `submit.py@0c8de69a1ca6`).
pub const CONFIG_DIR: &str = "tests/integration/defs/perf/disagg/test_configs/disagg/perf";

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
    let after_open = line.rsplit('[').next().unwrap_or_default();
    let bracket = after_open.split(']').next().unwrap_or_default();
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
    fn config_path_is_under_the_source_tree() {
        assert_eq!(
            config_path(Path::new(""), "x"),
            PathBuf::from("tests/integration/defs/perf/disagg/test_configs/disagg/perf/x.yaml")
        );
    }
}
