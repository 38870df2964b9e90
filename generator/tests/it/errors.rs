//! Bad input: exit code 2, one complete `error:` line naming the file, the key and what was
//! expected, and no output file (nor temporary file) left behind.

use crate::{launch_gen, write_files};

const HARDWARE: &str = "hardware: {gpus_per_node: 4, num_ctx_servers: 1, num_gen_servers: 1}\n";
const CONFIG_DIR: &str = "src/tests/integration/defs/perf/disagg/test_configs/disagg/perf";
const EXPECTED_ID: &str =
    "expected a test id like `perf/test_perf_sanity.py::test_e2e[disagg-<config>]`";

struct Case {
    name: &'static str,
    files: Vec<(String, Vec<u8>)>,
    args: Vec<&'static str>,
    stderr: String,
}

fn case(
    name: &'static str,
    files: &[(&str, &[u8])],
    args: &[&'static str],
    stderr: impl Into<String>,
) -> Case {
    Case {
        name,
        files: files
            .iter()
            .map(|(path, content)| ((*path).to_owned(), content.to_vec()))
            .collect(),
        args: args.to_vec(),
        stderr: stderr.into(),
    }
}

/// Compat-mode arguments with a test list.
const COMPAT: &[&str] = &[
    "--llm-src",
    "src",
    "--test-list",
    "list.txt",
    "--draft-launch-sh",
    "draft.sh",
    "--launch-sh",
    "out.sh",
    "--run-sh",
    "/r",
    "--install-sh",
    "/i",
];
/// Native-mode arguments with a config.
const NATIVE: &[&str] = &[
    "--config-yaml",
    "cfg.yaml",
    "--command",
    "pytest",
    "--launch-sh",
    "out.sh",
];

fn with(base: &[&'static str], extra: &[&'static str]) -> Vec<&'static str> {
    base.iter().chain(extra).copied().collect()
}

fn config_case(name: &'static str, yaml: &str, stderr: &str) -> Case {
    Case {
        name,
        files: vec![("cfg.yaml".to_owned(), yaml.as_bytes().to_vec())],
        args: NATIVE.to_vec(),
        stderr: format!("error: `cfg.yaml`: {stderr}\n"),
    }
}

fn cases() -> Vec<Case> {
    let draft: (&str, &[u8]) = ("draft.sh", b"D\n");
    let config = format!("{CONFIG_DIR}/c.yaml");
    let deep = "[".repeat(100_000);
    vec![
        case(
            "test list without brackets",
            &[("list.txt", b"test_e2e-disagg-c\n"), draft],
            COMPAT,
            format!(
                "error: `list.txt`: line 1: {EXPECTED_ID}, found `test_e2e-disagg-c` without `[...]`\n"
            ),
        ),
        case(
            "empty test list",
            &[("list.txt", b""), draft],
            COMPAT,
            format!("error: `list.txt`: line 1: {EXPECTED_ID}, found an empty line\n"),
        ),
        case(
            "test id without disagg",
            &[("list.txt", b"t[aggr-c]\n"), draft],
            COMPAT,
            "error: `list.txt`: line 1: expected `disagg` before the first `-` in `[aggr-c]`, found `aggr`\n",
        ),
        case(
            "test id without config name",
            &[("list.txt", b"t[disagg-]\n"), draft],
            COMPAT,
            "error: `list.txt`: line 1: expected a config name after `disagg-` in `[disagg-]`, found none\n",
        ),
        case(
            "missing config file",
            &[("list.txt", b"t[disagg-nope]\n"), draft],
            COMPAT,
            format!(
                "error: `list.txt`: line 1 selects config `nope`, expected the file `{CONFIG_DIR}/nope.yaml` (under `--llm-src`)\n"
            ),
        ),
        case(
            "missing test list",
            &[draft],
            COMPAT,
            "error: `list.txt`: cannot read: no such file or directory\n",
        ),
        case(
            "missing draft",
            &[
                ("list.txt", b"t[disagg-c]\n"),
                (&config, HARDWARE.as_bytes()),
            ],
            COMPAT,
            "error: `draft.sh`: cannot read: no such file or directory\n",
        ),
        case(
            "missing prefix",
            &[
                ("list.txt", b"t[disagg-c]\n"),
                (&config, HARDWARE.as_bytes()),
                draft,
            ],
            &with(COMPAT, &["--script-prefix", "prefix.sh"]),
            "error: `prefix.sh`: cannot read: no such file or directory\n",
        ),
        case(
            "config is a directory",
            &[("cfg.yaml/x", b"")],
            NATIVE,
            "error: `cfg.yaml`: cannot read: is a directory\n",
        ),
        case(
            "config is binary junk",
            &[("cfg.yaml", b"\xff\xfe\x00\x01junk")],
            NATIVE,
            "error: `cfg.yaml`: expected UTF-8 text, found a non-UTF-8 byte at offset 0\n",
        ),
        config_case(
            "empty config",
            "",
            "expected a YAML mapping with a `hardware` section, found an empty document",
        ),
        config_case(
            "config is a list",
            "- 1\n",
            "expected a YAML mapping with a `hardware` section, found a list",
        ),
        config_case(
            "broken YAML",
            "hardware: [\n",
            "invalid YAML: did not find expected node content at line 2 column 1, while parsing a flow node",
        ),
        config_case(
            "deeply nested YAML",
            &deep,
            "invalid YAML: recursion limit exceeded at line 1 column 129",
        ),
        config_case(
            "no hardware",
            "metadata: {}\n",
            "key `hardware.gpus_per_node`: missing, expected a positive integer",
        ),
        config_case(
            "missing gpus_per_node",
            "hardware: {num_ctx_servers: 1, num_gen_servers: 1}\n",
            "key `hardware.gpus_per_node`: missing, expected a positive integer",
        ),
        config_case(
            "mistyped gpus_per_node",
            "hardware: {gpus_per_node: four, num_ctx_servers: 1, num_gen_servers: 1}\n",
            "key `hardware.gpus_per_node`: expected a positive integer, found `\"four\"`",
        ),
        config_case(
            "zero gpus_per_node",
            "hardware: {gpus_per_node: 0, num_ctx_servers: 1, num_gen_servers: 1}\n",
            "key `hardware.gpus_per_node`: expected a positive integer, found `0`",
        ),
        config_case(
            "negative server count",
            "hardware: {gpus_per_node: 4, num_ctx_servers: -1, num_gen_servers: 1}\n",
            "key `hardware.num_ctx_servers`: expected a non-negative integer, found `-1`",
        ),
        config_case(
            "negative parallel size",
            &format!("{HARDWARE}worker_config: {{gen: {{tensor_parallel_size: -2}}}}\n"),
            "key `worker_config.gen.tensor_parallel_size`: expected a positive integer, found `-2`",
        ),
        config_case(
            "zero parallel size",
            &format!("{HARDWARE}worker_config: {{ctx: {{pipeline_parallel_size: 0}}}}\n"),
            "key `worker_config.ctx.pipeline_parallel_size`: expected a positive integer, found `0`",
        ),
        config_case(
            "gen_only without concurrency",
            &format!("{HARDWARE}benchmark: {{mode: gen_only}}\n"),
            "key `benchmark.concurrency_list`: missing, expected a positive integer in `gen_only` mode",
        ),
        config_case(
            "bad concurrency",
            &format!("{HARDWARE}benchmark:\n  concurrency_list: 512,1075\n"),
            "key `benchmark.concurrency_list`: expected positive integers, like `2048`, `512 1075` or `[512, 1075]`, found `\"512,1075\"`",
        ),
        config_case(
            "no gen servers in native mode",
            "hardware: {gpus_per_node: 4, num_ctx_servers: 1, num_gen_servers: 0}\n",
            "key `hardware.num_gen_servers`: expected at least 1 in native mode, found `0`",
        ),
        case(
            "no config at all",
            &[],
            &["--launch-sh", "out.sh"],
            "error: one of `--test-list` or `--config-yaml` is required\n",
        ),
        case(
            "no output path",
            &[("cfg.yaml", HARDWARE.as_bytes())],
            &["--config-yaml", "cfg.yaml"],
            "error: `--launch-sh` is required: where to write the launch script\n",
        ),
        case(
            "compat without run script",
            &[("cfg.yaml", HARDWARE.as_bytes()), draft],
            &[
                "--config-yaml",
                "cfg.yaml",
                "--draft-launch-sh",
                "draft.sh",
                "--launch-sh",
                "out.sh",
                "--install-sh",
                "/i",
            ],
            "error: `--run-sh` is required with `--draft-launch-sh`\n",
        ),
        case(
            "output directory missing",
            &[("cfg.yaml", HARDWARE.as_bytes())],
            &[
                "--config-yaml",
                "cfg.yaml",
                "--command",
                "x",
                "--launch-sh",
                "nodir/out.sh",
            ],
            "error: `nodir/out.sh`: cannot write: no such file or directory\n",
        ),
        case(
            "native without a command",
            &[("cfg.yaml", HARDWARE.as_bytes())],
            &["--config-yaml", "cfg.yaml", "--launch-sh", "out.sh"],
            "error: no base command: pass `--command` or a `--script-prefix` with an `export pytestCommand=` line\n",
        ),
        case(
            "native prefix with an unterminated command",
            &[
                ("cfg.yaml", HARDWARE.as_bytes()),
                ("prefix.sh", b"export pytestCommand=\"pytest\n"),
            ],
            &[
                "--config-yaml",
                "cfg.yaml",
                "--script-prefix",
                "prefix.sh",
                "--launch-sh",
                "out.sh",
            ],
            "error: `prefix.sh`: cannot read the `export pytestCommand=` value: unterminated double quote\n",
        ),
        case(
            "native srun args that would execute",
            &[
                ("cfg.yaml", HARDWARE.as_bytes()),
                ("srun_args.txt", b"--x=$(touch /tmp/pwned)\n"),
            ],
            &with(NATIVE, &["--srun-args", "srun_args.txt"]),
            "error: `srun_args.txt`: cannot read the srun arguments: unsupported shell syntax `$(`: only `$NAME` and `${NAME}` are expanded\n",
        ),
        case(
            "native sbatch value with a newline",
            &[("cfg.yaml", HARDWARE.as_bytes())],
            &with(NATIVE, &["--job-name", "a\nrm -rf /"]),
            "error: `--job-name`: expected a value without spaces, quotes or control characters, found `a\\nrm -rf /`\n",
        ),
        case(
            "native sbatch option with a prefix",
            &[
                ("cfg.yaml", HARDWARE.as_bytes()),
                ("prefix.sh", b"#!/bin/bash\n"),
            ],
            &with(
                NATIVE,
                &["--script-prefix", "prefix.sh", "--time", "1:00:00"],
            ),
            "error: `--time` cannot be combined with `--script-prefix`: put the `#SBATCH` line in the prefix\n",
        ),
        case(
            "explain with too few nodes",
            &[("cfg.yaml", HARDWARE.as_bytes())],
            &["--config-yaml", "cfg.yaml", "--explain", "--nodelist", "n1"],
            "error: `--nodelist`: the plan needs 2 nodes, the node list has 1\n",
        ),
        case(
            "explain with a broken node list",
            &[("cfg.yaml", HARDWARE.as_bytes())],
            &[
                "--config-yaml",
                "cfg.yaml",
                "--explain",
                "--nodelist",
                "n[1-",
            ],
            "error: `--nodelist`: unbalanced brackets in `n[1-`\n",
        ),
    ]
}

#[test]
fn bad_input_exits_2_with_one_message_and_no_output() {
    for case in cases() {
        let dir = tempfile::tempdir().expect("temp dir");
        for (path, content) in &case.files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("folders");
            std::fs::write(path, content).expect("fixture");
        }
        let before = listing(dir.path());
        let run = launch_gen(dir.path(), &case.args);
        assert_eq!(
            (run.code, run.stderr.as_str(), run.stdout.as_str()),
            (2, case.stderr.as_str(), ""),
            "case `{}`",
            case.name
        );
        assert_eq!(
            listing(dir.path()),
            before,
            "case `{}`: no output or temporary file is left",
            case.name
        );
    }
}

#[test]
fn usage_errors_exit_2_and_help_and_version_exit_0() {
    let dir = tempfile::tempdir().expect("temp dir");
    let run = launch_gen(dir.path(), ["--no-such-flag"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .starts_with("error: unexpected argument '--no-such-flag' found"),
        "{}",
        run.stderr
    );

    let run = launch_gen(dir.path(), ["--help"]);
    assert_eq!((run.code, run.stderr.as_str()), (0, ""));
    for needle in [
        "--draft-launch-sh",
        "--explain",
        "Examples:",
        "FIRST value of\n  `benchmark.concurrency_list`",
        "--split-group <N>",
        "--cluster-name <NAME>",
        "--ucx-rules <FILE>",
    ] {
        assert!(
            run.stdout.contains(needle),
            "help lacks {needle}: {}",
            run.stdout
        );
    }
    let run = launch_gen(dir.path(), ["--version"]);
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, concat!("launch-gen ", env!("CARGO_PKG_VERSION"), "\n"))
    );
}

#[test]
fn a_failed_run_keeps_an_existing_output_untouched() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_files(
        dir.path(),
        &[
            ("out.sh", "old\n"),
            ("cfg.yaml", "hardware: {gpus_per_node: 0}\n"),
        ],
    );
    let run = launch_gen(dir.path(), NATIVE);
    assert_eq!(run.code, 2);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out.sh")).expect("kept"),
        "old\n"
    );
}

fn listing(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("readable")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}
