//! `--compat g2`: the golden cases of every generation with its own parser, byte for byte;
//! hand-derived cases for each quirk of g2-notes section 3 and 4 (the expected text follows
//! the rules step by step, each case says which); the error table through the binary; the
//! argparse behaviour; the drop-in `shims/g*/submit.py`; and a property over random arguments
//! and inputs (no panic, no partial or stale output).

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use launch_gen::compat::{Entry, GENERATIONS};
use proptest::prelude::*;

use crate::{Run, fixtures, launch_gen};

/// Where `--llm-src llm-src` puts G2's configs.
const CONFIG_DIR: &str = "llm-src/tests/scripts/perf-sanity/disaggregated";
const HARDWARE: &str = "hardware: {gpus_per_node: 4, num_ctx_servers: 1, num_gen_servers: 1}\n";
const PREFIX: &str =
    "#!/bin/bash\nexport pytestCommand=\"A=1 pytest -v --output-dir=/o/ --csv=/o/r.csv\"\n";
const UNSET: &str = "unset UCX_CUDA_IPC_ENABLE_MNNVL UCX_TLS UCX_NET_DEVICES &&";
const BASE_ENV: &str =
    r"FLASHINFER_JIT_DIR=/tmp/flashinfer_jit_cache_\${SLURM_LOCALID} HF_HOME=/tmp/hf_home";

/// What the default inputs give (see [`files_with`]), rule by rule: the prefix lines stripped;
/// the three partial lines (`-v` alone before an option, `--output-dir=/o/` alone, the
/// `--csv` group and with it the closing quote dropped for Worker and DisaggServer); the env
/// blocks (only the base); the UCX prefix without a rule; the numbers (1-GPU servers on 4-GPU
/// nodes); testOutputDir joined with the bracket text; srun; the draft without a final newline.
fn base_script() -> String {
    format!(
        "#!/bin/bash
export pytestCommand=\"A=1 pytest -v --output-dir=/o/ --csv=/o/r.csv\"
export partialPytestCommandWorker=\"A=1 pytest -v --output-dir=/o/
export partialPytestCommandDisaggServer=\"A=1 pytest -v --output-dir=/o/
export partialPytestCommandBenchmark=\"A=1 pytest -v --output-dir=/o/ --csv=/o/r.csv\"
export PYTEST_COMMON_VARS=\"\"
export CTX_WORKER_ENV_VARS=\"{BASE_ENV}\"
export GEN_WORKER_ENV_VARS=\"{BASE_ENV}\"
export SERVER_ENV_VARS=\"\"
export BENCHMARK_ENV_VARS=\"\"
export pytestCommandCTXWorker=\"{UNSET} $CTX_WORKER_ENV_VARS $PYTEST_COMMON_VARS $partialPytestCommandWorker\"
export pytestCommandGENWorker=\"{UNSET} $GEN_WORKER_ENV_VARS $PYTEST_COMMON_VARS $partialPytestCommandWorker\"
export pytestCommandDisaggServer=\"{UNSET} $SERVER_ENV_VARS $PYTEST_COMMON_VARS $partialPytestCommandDisaggServer\"
export pytestCommandBenchmark=\"{UNSET} $BENCHMARK_ENV_VARS $PYTEST_COMMON_VARS $partialPytestCommandBenchmark\"
export runScript=/r.sh
export installScript=/i.sh
export configYamlPath=llm-src/tests/scripts/perf-sanity/disaggregated/c.yaml
{}export testOutputDir=/o/disagg-e2e-c
srunArgs=(
  \"--mpi=pmix\"
  \"--container-env=DISAGG_SERVING_TYPE\"
  \"--container-env=pytestCommand\"
)
D",
        numbers(["1", "1", "4", "1", "1", "1", "1", "1", "1", "2", "8"])
    )
}

/// The eleven number exports, in their order.
fn numbers(values: [&str; 11]) -> String {
    let names = [
        "numCtxServers",
        "numGenServers",
        "gpusPerNode",
        "gpusPerCtxServer",
        "gpusPerGenServer",
        "nodesPerCtxServer",
        "nodesPerGenServer",
        "gpusPerNodePerCtxServer",
        "gpusPerNodePerGenServer",
        "totalNodes",
        "totalGpus",
    ];
    names
        .iter()
        .zip(values)
        .map(|(name, value)| format!("export {name}={value}\n"))
        .collect()
}

/// The default inputs, with `changed` (relative path, content) replacing or adding files.
fn files_with(changed: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
    let config = format!("{CONFIG_DIR}/c.yaml");
    let mut files: Vec<(String, Vec<u8>)> = [
        ("test_list.txt", &b"t[disagg-e2e-c]\n"[..]),
        (config.as_str(), HARDWARE.as_bytes()),
        ("prefix.sh", PREFIX.as_bytes()),
        ("srun_args.txt", b"--mpi=pmix\n"),
        ("draft.sh", b"D\n"),
    ]
    .iter()
    .map(|(path, content)| ((*path).to_owned(), content.to_vec()))
    .collect();
    for (path, content) in changed {
        match files.iter_mut().find(|(known, _)| known == path) {
            Some(file) => file.1 = content.to_vec(),
            None => files.push(((*path).to_owned(), content.to_vec())),
        }
    }
    files
}

/// The reference's arguments for the default inputs, output `out/launch.sh`.
fn base_args() -> Vec<OsString> {
    [
        "--draft-launch-sh",
        "draft.sh",
        "--launch-sh",
        "out/launch.sh",
        "--run-sh",
        "/r.sh",
        "--install-sh",
        "/i.sh",
        "--llm-src",
        "llm-src",
        "--test-list",
        "test_list.txt",
        "--script-prefix",
        "prefix.sh",
        "--srun-args",
        "srun_args.txt",
    ]
    .iter()
    .map(OsString::from)
    .collect()
}

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

/// `base_args()` and `extra`.
fn args_with(extra: &[&str]) -> Vec<OsString> {
    let mut args = base_args();
    args.extend(os(extra));
    args
}

/// `base_args()` with the value of `flag` replaced (`None`: the flag and its value removed).
fn args_replacing(flag: &str, value: Option<OsString>) -> Vec<OsString> {
    let mut args = base_args();
    let at = args
        .iter()
        .position(|arg| arg == flag)
        .unwrap_or_else(|| panic!("{flag} in the base arguments"));
    match value {
        Some(value) => args[at + 1] = value,
        None => {
            args.drain(at..at + 2);
        }
    }
    args
}

/// A case folder with `files` and an empty `out/`.
fn case_dir(files: &[(String, Vec<u8>)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for (path, content) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("folders");
        std::fs::write(&path, content).expect("fixture");
    }
    std::fs::create_dir(dir.path().join("out")).expect("out dir");
    dir
}

/// `launch-gen --compat g2 ARGS` in `dir`.
fn g2(dir: &Path, args: &[OsString]) -> Run {
    let mut all = os(&["--compat", "g2"]);
    all.extend(args.iter().cloned());
    launch_gen(dir, &all)
}

/// Runs G2 on the default inputs changed by `changed`, with `args`; asserts success and returns
/// the script.
fn generate_with(changed: &[(&str, &[u8])], args: &[OsString]) -> String {
    let dir = case_dir(&files_with(changed));
    let run = g2(dir.path(), args);
    assert_eq!(
        (run.code, run.stderr.as_str(), run.stdout.as_str()),
        (0, "", ""),
        "launch-gen --compat g2 {args:?}"
    );
    std::fs::read_to_string(dir.path().join("out/launch.sh")).expect("output written")
}

fn generate(changed: &[(&str, &[u8])]) -> String {
    generate_with(changed, &base_args())
}

/// The one line of `script` that starts with `start`.
fn line<'a>(script: &'a str, start: &str) -> &'a str {
    let found: Vec<&str> = script.lines().filter(|l| l.starts_with(start)).collect();
    assert_eq!(
        found.len(),
        1,
        "one line starting with {start:?} in:\n{script}"
    );
    found[0]
}

fn config_file() -> String {
    format!("{CONFIG_DIR}/c.yaml")
}

/// The folder's files, recursively, with their contents.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current).expect("readable") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                found.push((path.clone(), Vec::new()));
                stack.push(path);
            } else {
                let content = std::fs::read(&path).unwrap_or_default();
                found.push((path, content));
            }
        }
    }
    found.sort();
    found
}

// ---------------------------------------------------------------------------------------------
// Golden cases.

#[test]
fn every_generations_golden_cases_are_reproduced_byte_for_byte() {
    let mut checked = 0;
    for generation in GENERATIONS {
        if matches!(generation.entry, Entry::MainParser) {
            // G1's cases are `tests/fixtures/compat`, run by `compat.rs` without `--compat`.
            continue;
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(format!("compat-{}", generation.name));
        let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
            .unwrap_or_else(|error| {
                panic!(
                    "goldens of {} at {}: {error}",
                    generation.name,
                    root.display()
                )
            })
            .map(|entry| entry.expect("readable").path())
            .filter(|path| path.is_dir())
            .collect();
        cases.sort();
        assert!(!cases.is_empty(), "no golden cases in {}", root.display());
        for case in cases {
            golden_case(generation.name, &case);
            checked += 1;
        }
    }
    assert!(
        checked >= 5,
        "the five public G2 cases at least, found {checked}"
    );
}

fn golden_case(generation: &str, case: &Path) {
    let out_dir = tempfile::tempdir().expect("temp dir");
    let out = out_dir.path().join("launch.sh");
    let mut args = os(&["--compat", generation]);
    args.extend(
        std::fs::read_to_string(case.join("args"))
            .expect("args file")
            .lines()
            .map(|arg| {
                if arg == "OUT" {
                    out.clone().into_os_string()
                } else {
                    arg.into()
                }
            }),
    );
    let before = snapshot(case);
    let run = launch_gen(case, &args);
    let shown = case.display();
    if case.join("expected.sh").exists() {
        assert_eq!(
            (run.code, run.stderr.as_str(), run.stdout.as_str()),
            (0, "", ""),
            "case {shown}"
        );
        let written = std::fs::read(&out).expect("output written");
        let expected = std::fs::read(case.join("expected.sh")).expect("expected.sh");
        assert!(
            written == expected,
            "case {shown}: output differs from expected.sh"
        );
    } else {
        assert_eq!(run.code, 2, "case {shown}: an error case exits 2: {run:?}");
        assert_eq!(
            run.stderr.lines().count(),
            1,
            "case {shown}: one line: {run:?}"
        );
        assert!(run.stderr.starts_with("error: "), "case {shown}: {run:?}");
        assert_eq!(run.stdout, "", "case {shown}");
        assert!(
            snapshot(out_dir.path()).is_empty(),
            "case {shown}: no file written"
        );
    }
    assert!(
        snapshot(case) == before,
        "case {shown}: the case folder is unchanged"
    );
}

#[test]
fn compat_g1_is_the_default_generation_byte_for_byte() {
    // `--compat g1` is stripped and the rest goes to launch-gen's own parser: the G1 golden
    // case gives the same bytes and the same stdout.
    let case = fixtures().join("compat/deepseek-r1-fp4_000");
    let run_with = |prefix: &[&str], out: &Path| {
        let mut args = os(prefix);
        args.extend(
            std::fs::read_to_string(case.join("args"))
                .expect("args")
                .lines()
                .map(|arg| {
                    if arg == "OUT" {
                        out.as_os_str().to_owned()
                    } else {
                        arg.into()
                    }
                }),
        );
        let run = launch_gen(&case, &args);
        assert_eq!((run.code, run.stderr.as_str()), (0, ""), "{prefix:?}");
        (
            std::fs::read(out).expect("written"),
            run.stdout.replace(&*out.to_string_lossy(), "OUT"),
        )
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let expected = std::fs::read(case.join("expected.sh")).expect("expected.sh");
    let plain = run_with(&[], &dir.path().join("a.sh"));
    assert!(plain.0 == expected);
    for prefix in [&["--compat", "g1"][..], &["--compat=g1"]] {
        assert!(
            run_with(prefix, &dir.path().join("b.sh")) == plain,
            "{prefix:?}"
        );
    }
}

#[test]
fn the_script_has_mode_0666_less_the_umask_and_replaces_an_existing_one_whole() {
    for (umask, mode) in [("022", 0o644), ("077", 0o600), ("000", 0o666)] {
        let dir = case_dir(&files_with(&[]));
        let out = dir.path().join("out/launch.sh");
        std::fs::write(&out, "old, longer than nothing\n").expect("old output");
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_launch-gen"))
            .args(["--compat", "g2"])
            .args(base_args())
            .current_dir(dir.path())
            .status()
            .expect("sh runs");
        assert!(status.success(), "umask {umask}");
        let metadata = std::fs::metadata(&out).expect("written");
        assert_eq!(metadata.permissions().mode() & 0o777, mode, "umask {umask}");
        assert_eq!(std::fs::read_to_string(&out).expect("text"), base_script());
        let names: Vec<String> = std::fs::read_dir(dir.path().join("out"))
            .expect("out")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["launch.sh"], "no temporary file is left");
    }
}

// ---------------------------------------------------------------------------------------------
// Hand-derived cases: the quirks of g2-notes sections 3 and 4.

#[test]
fn the_default_inputs_give_the_derived_script() {
    assert_eq!(generate(&[]), base_script());
}

#[test]
fn every_line_is_stripped_and_blank_lines_dropped_and_the_file_has_no_final_newline() {
    // Prefix: indentation (also of a heredoc body) goes, blank and whitespace-only lines
    // (including Python's `\x1c` and U+3000) go, inner tabs stay. Appended lines are stripped
    // too: `--run-sh` with trailing spaces loses them, a leading inner run stays after
    // `runScript=`. The draft's lines likewise; no final newline.
    let prefix = "  #!/bin/bash\n\n   \n\x1c\u{3000}\ncat <<EOF\n    indented\tbody\nEOF\n\texport pytestCommand=\"A=1 pytest -v --output-dir=/o/ --csv=/o/r.csv\"  \n";
    let draft = "\n  first\n\n\t second  line \n   \n";
    let args = args_replacing("--run-sh", Some(" /r.sh  ".into()));
    let script = generate_with(
        &[
            ("prefix.sh", prefix.as_bytes()),
            ("draft.sh", draft.as_bytes()),
        ],
        &args,
    );
    let expected = base_script()
        .replace(
            "#!/bin/bash\n",
            "#!/bin/bash\ncat <<EOF\nindented\tbody\nEOF\n",
        )
        .replace("export runScript=/r.sh", "export runScript= /r.sh")
        .replace(")\nD", ")\nfirst\nsecond  line");
    assert_eq!(script, expected);
}

#[test]
fn crlf_and_lone_cr_inputs_read_as_newlines() {
    // Universal newlines in every file: the test list, the config, the prefix, srun, the draft.
    let crlf = |text: &str| text.replace('\n', "\r\n").into_bytes();
    let config = crlf(HARDWARE);
    let script = generate(&[
        ("test_list.txt", b"\r\nt[disagg-e2e-c]\r\n"),
        (&config_file(), &config),
        ("prefix.sh", &crlf(PREFIX)),
        ("srun_args.txt", b"--mpi=pmix\r\n"),
        ("draft.sh", b"\rD\r"),
    ]);
    assert_eq!(script, base_script());
    assert!(!script.contains('\r'));
}

#[test]
fn an_empty_or_blank_draft_ends_the_file_after_the_srun_block() {
    for draft in [&b""[..], b"\n", b"  \n\t\n"] {
        let script = generate(&[("draft.sh", draft)]);
        assert!(
            script.ends_with("  \"--container-env=pytestCommand\"\n)\n"),
            "{draft:?}: {script}"
        );
        assert_eq!(script, base_script().replace(")\nD", ")\n"));
    }
}

#[test]
fn grouping_rules_and_each_roles_filters() {
    // Before `pytest` every token is its own group (the launcher path is dropped alone for
    // DisaggServer and Benchmark). After it: `--timeout=7200` (rule 1) alone; `--rootdir /d`
    // (rule 2); `--periodic-junit` before an option (rule 3) alone; `-k t1` (rule 4); `-vv`
    // (rule 5) alone; `x.py` (rule 6) alone; `--cov-report= ` has `=` so it is alone and
    // dropped by Worker and DisaggServer; `--coverage-x v` is one group containing `--cov`;
    // `--csv-a  b` is one group. Whitespace runs collapse.
    let prefix = "export pytestCommand=\"A=1 /x/trtllm-llmapi-launch pytest -vv --timeout=7200 --rootdir /d --periodic-junit --periodic-xml p.xml -k t1 x.py --cov-report= --coverage-x v --csv-a   b --last\"\n";
    let script = generate(&[("prefix.sh", prefix.as_bytes())]);
    assert_eq!(
        line(&script, "export partialPytestCommandWorker="),
        "export partialPytestCommandWorker=\"A=1 /x/trtllm-llmapi-launch pytest -vv --timeout=7200 --rootdir /d -k t1 x.py --last\""
    );
    assert_eq!(
        line(&script, "export partialPytestCommandDisaggServer="),
        "export partialPytestCommandDisaggServer=\"A=1 pytest -vv --timeout=7200 --rootdir /d -k t1 x.py --last\""
    );
    assert_eq!(
        line(&script, "export partialPytestCommandBenchmark="),
        "export partialPytestCommandBenchmark=\"A=1 pytest -vv --timeout=7200 --rootdir /d --periodic-junit --periodic-xml p.xml -k t1 x.py --cov-report= --coverage-x v --csv-a b --last\""
    );
    // No testOutputDir without `--output-dir`.
    assert_eq!(
        line(&script, "export testOutputDir"),
        "export testOutputDir="
    );
}

#[test]
fn a_dropped_last_group_takes_the_closing_quote_and_a_launcher_first_takes_the_name() {
    // `--csv=...` is last: Worker and DisaggServer lose the line's closing `"` with it. With
    // the launcher as the first word, its token carries `partialPytestCommand...="`: dropping
    // it drops the variable name too.
    let prefix = "export pytestCommand=\"trtllm-llmapi-launch pytest -v --csv=/r.csv\"\n";
    let script = generate(&[("prefix.sh", prefix.as_bytes())]);
    assert_eq!(
        line(&script, "export partialPytestCommandWorker="),
        "export partialPytestCommandWorker=\"trtllm-llmapi-launch pytest -v"
    );
    let lines: Vec<&str> = script.lines().collect();
    assert_eq!(lines[2], "export pytest -v");
    assert_eq!(lines[3], "export pytest -v --csv=/r.csv\"");
}

#[test]
fn without_an_exact_pytest_token_every_token_is_its_own_group() {
    // `/usr/bin/pytest` is not `pytest`: `--rootdir` and `/d` are separate groups, so only
    // `--csv=x` goes (and `-k` stays apart from its value).
    let prefix = "export pytestCommand=\"/usr/bin/pytest --rootdir /d --csv x -k t\"\n";
    let script = generate(&[("prefix.sh", prefix.as_bytes())]);
    assert_eq!(
        line(&script, "export partialPytestCommandWorker="),
        "export partialPytestCommandWorker=\"/usr/bin/pytest --rootdir /d x -k t\""
    );
}

#[test]
fn the_pytest_line_is_the_first_raw_line_containing_export_pytest_command() {
    // (prefix, the Worker line as written, testOutputDir)
    let cases: &[(&str, &str, &str)] = &[
        // A commented-out line counts (and, its tokens all alone without an exact `pytest`,
        // nothing is dropped from it); the real line after it does not.
        (
            "# export pytestCommand=\"old pytest\"\nexport pytestCommand=\"new pytest --output-dir=/n\"\n",
            "# export partialPytestCommandWorker=\"old pytest\"",
            "",
        ),
        // So does a longer word ending in `export`.
        (
            "myexport pytestCommand=\"A pytest --output-dir /w\"\n",
            "myexport partialPytestCommandWorker=\"A pytest --output-dir /w\"",
            "/w/disagg-e2e-c",
        ),
        // `export pytestCommandOld=` does not match; the next line does. The regex stops its
        // value at the first `"`: the backslash of an escaped quote is the whole directory.
        (
            "export pytestCommandOld=\"x pytest\"\nexport pytestCommand=\"y pytest --output-dir=\\\"/q\\\"\"\n",
            "export partialPytestCommandWorker=\"y pytest --output-dir=\\\"/q\\\"\"",
            "\\/disagg-e2e-c",
        ),
    ];
    for (prefix, worker, output_dir) in cases {
        let script = generate(&[("prefix.sh", prefix.as_bytes())]);
        let start = worker.split('=').next().expect("a name");
        assert_eq!(line(&script, &format!("{start}=")), *worker, "{prefix:?}");
        assert_eq!(
            line(&script, "export testOutputDir="),
            format!("export testOutputDir={output_dir}"),
            "{prefix:?}"
        );
    }
}

#[test]
fn test_output_dir_with_and_without_quotes_and_equals() {
    let cases = [
        ("--output-dir=/o/", "/o/disagg-e2e-c"),
        ("--output-dir /o", "/o/disagg-e2e-c"),
        ("--output-dir \"/o/x\"", "/o/x/disagg-e2e-c"),
        ("--output-dir=\"/o/x\"", "/o/x/disagg-e2e-c"),
        ("--output-dir= =/o", "/o/disagg-e2e-c"),
        ("--output-dir = /o", "/o/disagg-e2e-c"),
        ("--output-dir=rel", "rel/disagg-e2e-c"),
        ("--output-directory=/o", ""),
        // `[=\s]+` runs on to the next word: an empty `--output-dir=` takes `-v`.
        ("--output-dir=", "-v/disagg-e2e-c"),
        // An empty quoted value matches nothing (the `"` cannot start the value).
        ("--output-dir=\"\"", ""),
    ];
    for (option, expected) in cases {
        let prefix = format!("export pytestCommand=\"A=1 pytest {option} -v\"\n");
        let script = generate(&[("prefix.sh", prefix.as_bytes())]);
        assert_eq!(
            line(&script, "export testOutputDir="),
            format!("export testOutputDir={expected}"),
            "{option:?}"
        );
    }
    // The line ends in the quote: it is not part of the value.
    let script = generate(&[(
        "prefix.sh",
        b"export pytestCommand=\"A=1 pytest --output-dir=/o\"\n",
    )]);
    assert_eq!(
        line(&script, "export testOutputDir="),
        "export testOutputDir=/o/disagg-e2e-c"
    );
}

#[test]
fn without_a_pytest_command_line_the_partial_lines_vanish() {
    let script = generate(&[("prefix.sh", b"#!/bin/bash\nexport A=1\n")]);
    let expected = base_script()
        .replace(
            "export pytestCommand=\"A=1 pytest -v --output-dir=/o/ --csv=/o/r.csv\"\n",
            "export A=1\n",
        )
        .replace("export partialPytestCommandWorker=\"A=1 pytest -v --output-dir=/o/\n", "")
        .replace("export partialPytestCommandDisaggServer=\"A=1 pytest -v --output-dir=/o/\n", "")
        .replace(
            "export partialPytestCommandBenchmark=\"A=1 pytest -v --output-dir=/o/ --csv=/o/r.csv\"\n",
            "",
        )
        .replace("export testOutputDir=/o/disagg-e2e-c", "export testOutputDir=");
    assert_eq!(script, expected);
    // An empty prefix: the appended lines open the file.
    let script = generate(&[("prefix.sh", b"")]);
    assert!(
        script.starts_with("export PYTEST_COMMON_VARS=\"\"\n"),
        "{script}"
    );
}

#[test]
fn the_ucx_prefix_follows_the_cluster_rules() {
    let cases = [
        (
            "nsc-svg-gb200",
            " export UCX_NET_DEVICES=mlx5_0:1,mlx5_1:1,mlx5_2:1,mlx5_3:1,mlx5_4:1,mlx5_5:1,mlx5_10:1,mlx5_11:1 &&",
        ),
        (
            "aws-cmh",
            " export UCX_TLS=cuda_ipc,cuda_copy,sm,self,tcp &&",
        ),
        (
            "AWS-CMH-B200-01",
            " export UCX_TLS=cuda_ipc,cuda_copy,sm,self,tcp &&",
        ),
        ("aws-dfw-cs-001", " export UCX_TLS=^gdr_copy &&"),
        ("Aws-Dfw", " export UCX_TLS=^gdr_copy &&"),
        ("oci-hsg", ""),
        ("x-aws-dfw", ""),
        ("", ""),
    ];
    for (cluster, export) in cases {
        let script = generate_with(&[], &args_with(&["--cluster-name", cluster]));
        let ucx = format!("{UNSET}{export}");
        for role in ["CTXWorker", "GENWorker", "DisaggServer", "Benchmark"] {
            let command = line(&script, &format!("export pytestCommand{role}="));
            assert!(
                command.starts_with(&format!("export pytestCommand{role}=\"{ucx} $")),
                "{cluster:?}: {command}"
            );
        }
        if export.is_empty() {
            assert_eq!(script, base_script(), "{cluster:?}");
        }
    }
    // The stage name plays no part at this commit.
    let script = generate_with(
        &[],
        &args_with(&["--stage-name", "GB300-x", "--cluster", "aws-dfw"]),
    );
    assert_eq!(
        script,
        base_script().replace(UNSET, &format!("{UNSET} export UCX_TLS=^gdr_copy &&"))
    );
}

#[test]
fn split_group_counts_comment_lines_and_picks_the_nth_non_blank_line() {
    let list = "\n# perf tests\n  \nt[disagg-e2e-a]\n\tt[disagg-e2e-c] TIMEOUT (90)\n";
    let cases: &[(&[&str], Option<&str>)] = &[
        (&[], None),
        (&["--split-group", "0"], None),
        (&["--split-group", "-7"], None),
        (&["--split-group", "3"], Some("c")),
        (&["--split-group", " 3"], Some("c")),
        (&["--split-group=+3"], Some("c")),
        (&["--split-group", "0_3"], Some("c")),
        (&["--split-group", "2"], Some("a")),
    ];
    for (extra, config) in cases {
        let dir = case_dir(&files_with(&[
            ("test_list.txt", list.as_bytes()),
            (&format!("{CONFIG_DIR}/a.yaml"), HARDWARE.as_bytes()),
        ]));
        let run = g2(dir.path(), &args_with(extra));
        match config {
            // The first line is the `#` line: not a test id.
            None => {
                assert_eq!(run.code, 2, "{extra:?}: {run:?}");
                assert!(
                    run.stderr
                        .contains("`test_list.txt`: line 2: expected a test id like"),
                    "{extra:?}: {}",
                    run.stderr
                );
            }
            Some(name) => {
                assert_eq!((run.code, run.stderr.as_str()), (0, ""), "{extra:?}");
                let script =
                    std::fs::read_to_string(dir.path().join("out/launch.sh")).expect("written");
                assert!(
                    script.contains(&format!("export configYamlPath=llm-src/tests/scripts/perf-sanity/disaggregated/{name}.yaml\n")),
                    "{extra:?}"
                );
                assert!(script.contains(&format!("export testOutputDir=/o/disagg-e2e-{name}\n")));
            }
        }
    }
    let dir = case_dir(&files_with(&[("test_list.txt", list.as_bytes())]));
    for value in ["4", "99999999999999999999999999"] {
        let run = g2(dir.path(), &args_with(&["--split-group", value]));
        assert_eq!(run.code, 2);
        assert_eq!(
            run.stderr,
            format!(
                "error: `--split-group {value}`: expected at most 3, the number of non-blank lines of `test_list.txt` (`#` lines count)\n"
            )
        );
    }
}

#[test]
fn gen_only_and_gen_only_no_context_and_e2e() {
    // The test id's mode decides; the YAML's `benchmark.mode` only adds `no context` to
    // `gen_only`. Concurrency `512 1075` (the reference crashes): the FIRST value.
    let config = |mode: &str, concurrency: &str| {
        format!(
            "{HARDWARE}benchmark: {{mode: {mode}, concurrency_list: {concurrency}}}\n\
             environment: {{worker_env_var: W=1, server_env_var: S=1}}\n"
        )
    };
    let run = |id: &str, yaml: &str| {
        generate(&[
            ("test_list.txt", format!("t[disagg-{id}-c]\n").as_bytes()),
            (&config_file(), yaml.as_bytes()),
        ])
    };
    let kv = "TRTLLM_DISABLE_KV_CACHE_TRANSFER_OVERLAP=1";
    let gen_only_no_context = "TRTLLM_DISAGG_BENCHMARK_GEN_ONLY=1";

    // Plain gen_only: ctx kept, KV overlap on CTX and GEN, queue size on GEN.
    for (concurrency, queue) in [
        ("'64'", "64"),
        ("512 1075", "512"),
        ("' 0128 7'", "128"),
        ("64.0", "64.0"),
        ("[8, 16]", "[8, 16]"),
    ] {
        let script = run("gen_only", &config("e2e", concurrency));
        assert_eq!(
            line(&script, "export CTX_WORKER_ENV_VARS="),
            format!("export CTX_WORKER_ENV_VARS=\"{kv} {BASE_ENV} W=1\"")
        );
        assert_eq!(
            line(&script, "export GEN_WORKER_ENV_VARS="),
            format!(
                "export GEN_WORKER_ENV_VARS=\"{kv} TLLM_BENCHMARK_REQ_QUEUES_SIZE={queue} {BASE_ENV} W=1\""
            ),
            "{concurrency}"
        );
        assert_eq!(
            line(&script, "export SERVER_ENV_VARS="),
            "export SERVER_ENV_VARS=\"S=1\""
        );
        assert_eq!(
            line(&script, "export numCtxServers="),
            "export numCtxServers=1"
        );
        assert!(!script.contains(&format!("export {gen_only_no_context}")));
        assert!(!script.contains("--container-env=TRTLLM_DISAGG_BENCHMARK_GEN_ONLY"));
    }

    // gen_only + `gen_only_no_context` (also as part of a longer mode): no context servers.
    for mode in [
        "gen_only_no_context",
        "x_gen_only_no_context_y",
        "[gen_only_no_context]",
    ] {
        let script = run("gen_only", &config(mode, "512 1075"));
        assert_eq!(
            line(&script, "export numCtxServers="),
            "export numCtxServers=0"
        );
        assert_eq!(line(&script, "export totalNodes="), "export totalNodes=1");
        assert_eq!(
            line(&script, "export nodesPerCtxServer="),
            "export nodesPerCtxServer=1"
        );
        assert_eq!(
            line(&script, "export CTX_WORKER_ENV_VARS="),
            format!("export CTX_WORKER_ENV_VARS=\"{BASE_ENV} W=1\"")
        );
        assert_eq!(
            line(&script, "export GEN_WORKER_ENV_VARS="),
            format!("export GEN_WORKER_ENV_VARS=\"{gen_only_no_context} {BASE_ENV} W=1\"")
        );
        assert_eq!(
            line(&script, "export SERVER_ENV_VARS="),
            format!("export SERVER_ENV_VARS=\"{gen_only_no_context} S=1\"")
        );
        // Right after the prefix, and in srun before the two fixed ones.
        assert!(
            script.contains(&format!(
                "--csv=/o/r.csv\"\nexport {gen_only_no_context}\nexport partialPytestCommandWorker="
            )),
            "{script}"
        );
        assert!(script.contains("  \"--mpi=pmix\"\n  \"--container-env=TRTLLM_DISAGG_BENCHMARK_GEN_ONLY\"\n  \"--container-env=DISAGG_SERVING_TYPE\"\n"));
    }
    // Without a server env the prefix leaves a trailing space inside the quotes, and
    // `num_ctx_servers` is not needed at all.
    let script = run(
        "gen_only",
        "hardware: {gpus_per_node: 4, num_gen_servers: 2}\nbenchmark: {mode: gen_only_no_context}\n",
    );
    assert_eq!(
        line(&script, "export SERVER_ENV_VARS="),
        format!("export SERVER_ENV_VARS=\"{gen_only_no_context} \"")
    );
    assert_eq!(line(&script, "export totalGpus="), "export totalGpus=8");

    // e2e ignores the YAML mode entirely, and the concurrency (still checked) writes nothing.
    let e2e = run("e2e", &config("gen_only_no_context", "512 1075"));
    let plain = run("e2e", &config("e2e", "'64'"));
    assert_eq!(e2e, plain);
    assert_eq!(
        line(&e2e, "export numCtxServers="),
        "export numCtxServers=1"
    );
    assert!(!e2e.contains("TLLM_BENCHMARK_REQ_QUEUES_SIZE"));
    assert!(!e2e.contains(kv));
}

#[test]
fn env_blocks_merge_worker_and_role_extras_and_treat_falsy_values_as_empty() {
    let script = generate(&[(
        &config_file(),
        format!(
            "{HARDWARE}environment:\n  worker_env_var: 'W=1  '\n  ctx_worker_env_var: C=2\n  gen_worker_env_var: ''\n  server_env_var: 0\n  benchmark_env_var: ' B=3 '\n"
        )
        .as_bytes(),
    )]);
    // CTX: base, worker, ctx extra; GEN: the empty extra is left out and the worker's trailing
    // spaces are right-stripped away; `0` is falsy: empty; the benchmark's spaces stay inside
    // the quotes.
    assert_eq!(
        line(&script, "export CTX_WORKER_ENV_VARS="),
        format!("export CTX_WORKER_ENV_VARS=\"{BASE_ENV} W=1   C=2\"")
    );
    assert_eq!(
        line(&script, "export GEN_WORKER_ENV_VARS="),
        format!("export GEN_WORKER_ENV_VARS=\"{BASE_ENV} W=1\"")
    );
    assert_eq!(
        line(&script, "export SERVER_ENV_VARS="),
        "export SERVER_ENV_VARS=\"\""
    );
    assert_eq!(
        line(&script, "export BENCHMARK_ENV_VARS="),
        "export BENCHMARK_ENV_VARS=\" B=3 \""
    );
    // A number as the server or benchmark env is written as Python's str(); null is empty.
    let script = generate(&[(
        &config_file(),
        format!("{HARDWARE}environment: {{worker_env_var: null, server_env_var: 5, benchmark_env_var: 2.5}}\n").as_bytes(),
    )]);
    assert_eq!(
        line(&script, "export SERVER_ENV_VARS="),
        "export SERVER_ENV_VARS=\"5\""
    );
    assert_eq!(
        line(&script, "export BENCHMARK_ENV_VARS="),
        "export BENCHMARK_ENV_VARS=\"2.5\""
    );
    assert_eq!(
        line(&script, "export CTX_WORKER_ENV_VARS="),
        format!("export CTX_WORKER_ENV_VARS=\"{BASE_ENV}\"")
    );
}

#[test]
fn sizes_are_python_arithmetic_on_the_yaml_numbers() {
    let cases: &[(&str, [&str; 11])] = &[
        // Real shapes: gen 16 GPUs on 4-GPU nodes, two ctx of 4.
        (
            "hardware: {gpus_per_node: 4, num_ctx_servers: 2, num_gen_servers: 1}\nworker_config:\n  gen: {tensor_parallel_size: 8, pipeline_parallel_size: 2}\n  ctx: {tensor_parallel_size: 4}\n",
            ["2", "1", "4", "4", "16", "1", "4", "4", "4", "6", "24"],
        ),
        // Floats print as Python floats; `math.ceil` gives ints; `min` keeps the first on a tie.
        (
            "hardware: {gpus_per_node: 4, num_ctx_servers: 1, num_gen_servers: 1.0}\nworker_config:\n  gen: {tensor_parallel_size: 2.0}\n  ctx: {context_parallel_size: 4}\n",
            [
                "1", "1.0", "4", "4", "2.0", "1", "1", "4", "2.0", "2.0", "8.0",
            ],
        ),
        // `true` is 1 in arithmetic and prints `True` where it passes through unchanged.
        (
            "hardware: {gpus_per_node: true, num_ctx_servers: 1, num_gen_servers: 1}\nworker_config: {gen: {tensor_parallel_size: 2}}\n",
            ["1", "1", "True", "1", "2", "1", "2", "1", "True", "3", "3"],
        ),
        // Duplicate keys: the last wins; anchors and merges as PyYAML.
        (
            "hardware: {gpus_per_node: 2, num_ctx_servers: 1, num_gen_servers: 1, gpus_per_node: 8}\nx: &x {tensor_parallel_size: 16}\nworker_config:\n  gen: {<<: *x, pipeline_parallel_size: 1}\n  ctx: *x\n",
            ["1", "1", "8", "16", "16", "2", "2", "8", "8", "4", "32"],
        ),
        // Zero-sized servers and a null `worker_config` section.
        (
            "hardware: {gpus_per_node: 4, num_ctx_servers: 0, num_gen_servers: 3}\nworker_config:\n",
            ["0", "3", "4", "1", "1", "1", "1", "1", "1", "3", "12"],
        ),
    ];
    for (yaml, expected) in cases {
        let script = generate(&[(&config_file(), yaml.as_bytes())]);
        assert!(script.contains(&numbers(*expected)), "{yaml}\n{script}");
    }
}

#[test]
fn srun_arguments_split_on_any_whitespace_and_are_quoted_raw() {
    let script = generate(&[(
        "srun_args.txt",
        "  --a=${SLURM_JOB_ID}\t--b \n\n x\u{a0}y\x1fz \"q\" \n".as_bytes(),
    )]);
    assert!(script.contains("srunArgs=(\n  \"--a=${SLURM_JOB_ID}\"\n  \"--b\"\n  \"x\"\n  \"y\"\n  \"z\"\n  \"\"q\"\"\n  \"--container-env=DISAGG_SERVING_TYPE\"\n"), "{script}");
    let script = generate(&[("srun_args.txt", b"")]);
    assert!(script.contains("srunArgs=(\n  \"--container-env=DISAGG_SERVING_TYPE\"\n  \"--container-env=pytestCommand\"\n)\n"));
}

#[test]
fn the_config_path_is_os_path_join_of_llm_src_as_given() {
    // (--llm-src, where the config is, what configYamlPath says)
    let tail = "tests/scripts/perf-sanity/disaggregated/c.yaml";
    let cases = [("./src/", "src"), ("src", "src"), ("", "")];
    for (llm_src, folder) in cases {
        let file = if folder.is_empty() {
            tail.to_owned()
        } else {
            format!("{folder}/{tail}")
        };
        let script = generate_with(
            &[(&file, HARDWARE.as_bytes())],
            &args_replacing("--llm-src", Some(llm_src.into())),
        );
        assert_eq!(
            line(&script, "export configYamlPath="),
            format!(
                "export configYamlPath={llm_src}{}{tail}",
                if llm_src.is_empty() || llm_src.ends_with('/') {
                    ""
                } else {
                    "/"
                }
            ),
            "{llm_src:?}"
        );
    }
    // An absolute config name restarts the path.
    let dir = case_dir(&files_with(&[(
        "test_list.txt",
        b"t[disagg-e2e-/nonexistent/abs]\n",
    )]));
    let run = g2(dir.path(), &base_args());
    assert_eq!(
        run.stderr,
        "error: `test_list.txt`: line 1 selects config `/nonexistent/abs`, expected the file `/nonexistent/abs.yaml` (under `--llm-src`)\n"
    );
}

// ---------------------------------------------------------------------------------------------
// The error table: exit 2, one line naming the input, no file.

struct Bad {
    name: &'static str,
    changed: Vec<(String, Vec<u8>)>,
    removed: Vec<&'static str>,
    args: Vec<OsString>,
    message: String,
}

fn bad(name: &'static str, changed: &[(&str, &[u8])], message: &str) -> Bad {
    Bad {
        name,
        changed: changed
            .iter()
            .map(|(p, c)| ((*p).to_owned(), c.to_vec()))
            .collect(),
        removed: Vec::new(),
        args: base_args(),
        message: message.to_owned(),
    }
}

fn bad_config(name: &'static str, yaml: &str, message: &str) -> Bad {
    bad(
        name,
        &[(&config_file(), yaml.as_bytes())],
        &format!("`{}`: {message}", config_file()),
    )
}

fn bad_args(name: &'static str, args: Vec<OsString>, message: &str) -> Bad {
    Bad {
        args,
        ..bad(name, &[], message)
    }
}

fn bad_cases() -> Vec<Bad> {
    let config = config_file();
    let test_id =
        "expected a test id like `perf/test_perf_sanity.py::test_e2e[disagg-e2e-<config>]`";
    let missing = |name: &'static str, file: &'static str| Bad {
        removed: vec![file],
        ..bad(
            name,
            &[],
            &format!("`{file}`: cannot read: no such file or directory"),
        )
    };
    vec![
        missing("no test list", "test_list.txt"),
        missing("no prefix", "prefix.sh"),
        missing("no srun args", "srun_args.txt"),
        missing("no draft", "draft.sh"),
        Bad {
            removed: vec!["llm-src"],
            ..bad(
                "no config",
                &[],
                &format!("`test_list.txt`: line 1 selects config `c`, expected the file `{config}` (under `--llm-src`)"),
            )
        },
        bad(
            "config is a directory",
            &[
                ("test_list.txt", b"t[disagg-e2e-d]\n"),
                (&format!("{CONFIG_DIR}/d.yaml/x"), b""),
            ],
            &format!("`{CONFIG_DIR}/d.yaml`: cannot read: is a directory"),
        ),
        bad(
            "test list not UTF-8",
            &[("test_list.txt", b"t[disagg-e2e-c]\xff\n")],
            "`test_list.txt`: expected UTF-8 text, found a non-UTF-8 byte at offset 15",
        ),
        bad(
            "draft not UTF-8",
            &[("draft.sh", b"\xc3(")],
            "`draft.sh`: expected UTF-8 text, found a non-UTF-8 byte at offset 0",
        ),
        bad(
            "config not UTF-8",
            &[(&config, b"hardware: \xfe\n")],
            &format!("`{config}`: expected UTF-8 text, found a non-UTF-8 byte at offset 10"),
        ),
        bad(
            "empty test list",
            &[("test_list.txt", b"\n  \n\t\n")],
            &format!("`test_list.txt`: {test_id} on a non-blank line, found no such line"),
        ),
        bad(
            "test id without brackets",
            &[("test_list.txt", b"\nperf/test.py::test_e2e\n")],
            &format!("`test_list.txt`: line 2: {test_id}, found `perf/test.py::test_e2e` without `[...]`"),
        ),
        bad(
            "test id without a mode",
            &[("test_list.txt", b"t[disagg-c]\n")],
            "`test_list.txt`: line 1: expected `disagg-<mode>-<config>` inside the brackets, found `[disagg-c]`",
        ),
        bad(
            "test id with one part",
            &[("test_list.txt", b"t[disagg]\n")],
            "`test_list.txt`: line 1: expected `<prefix>-<mode>-<config>` inside the brackets, found `[disagg]`",
        ),
        bad(
            "test id with an unknown mode",
            &[("test_list.txt", b"t[disagg-perf-c]\n")],
            "`test_list.txt`: line 1: expected the mode `e2e` or `gen_only` after `disagg-` in `[disagg-perf-c]`, found `perf`",
        ),
        bad(
            "test id with an unknown prefix",
            &[("test_list.txt", b"t[perf-e2e-c]\n")],
            "`test_list.txt`: line 1: expected `disagg` or `aggr` before the first `-` in `[perf-e2e-c]`, found `perf`",
        ),
        bad(
            "aggregated test id",
            &[("test_list.txt", b"t[aggr_upload-c-server]\n")],
            "`test_list.txt`: line 1: `[aggr_upload-c-server]`: aggregated test ids are not supported by --compat g2 yet (expected `disagg-<mode>-<config>`)",
        ),
        bad_config("broken YAML", "hardware: [\n", "invalid YAML: did not find expected node content at line 2 column 1, while parsing a flow node"),
        bad_config("unknown tag", &format!("{HARDWARE}x: !foo y\n"), "invalid YAML: x: could not determine a constructor for the tag `!foo` at line 2 column 4"),
        bad_config("unhashable key", &format!("{HARDWARE}[a]: 1\n"), "invalid YAML: found an unhashable key `['a']`, a list"),
        bad_config("config is a list", "- 1\n", "expected a YAML mapping, found a list"),
        bad_config("empty config", "", "expected a YAML mapping, found an empty document"),
        bad_config("no hardware", "benchmark: {}\n", "key `hardware.gpus_per_node`: missing, expected a number of GPUs"),
        bad_config("null gpus_per_node", "hardware: {gpus_per_node: null, num_ctx_servers: 1, num_gen_servers: 1}\n", "key `hardware.gpus_per_node`: missing, expected a number of GPUs"),
        bad_config("hardware not a mapping", "hardware: 4\n", "key `hardware`: expected a mapping, found `4`"),
        bad_config("no num_gen_servers", "hardware: {gpus_per_node: 4, num_ctx_servers: 1}\n", "key `hardware.num_gen_servers`: missing, expected a number of servers"),
        bad_config("no num_ctx_servers in e2e", "hardware: {gpus_per_node: 4, num_gen_servers: 1}\n", "key `hardware.num_ctx_servers`: missing, expected a number of servers"),
        bad_config("zero gpus_per_node", "hardware: {gpus_per_node: 0, num_ctx_servers: 1, num_gen_servers: 1}\n", "key `hardware.gpus_per_node`: expected a non-zero number, found `0`"),
        bad_config("string gpus_per_node", "hardware: {gpus_per_node: '4', num_ctx_servers: 1, num_gen_servers: 1}\n", "key `hardware.gpus_per_node`: expected a number, found `'4'`"),
        bad_config("string server count", "hardware: {gpus_per_node: 4, num_ctx_servers: '1', num_gen_servers: 1}\n", "key `hardware.num_ctx_servers`: expected a number, found `'1'`"),
        bad_config("list size", &format!("{HARDWARE}worker_config: {{gen: {{tensor_parallel_size: [2]}}}}\n"), "key `worker_config.gen.tensor_parallel_size`: expected a number, found a list"),
        bad_config("null size", &format!("{HARDWARE}worker_config: {{ctx: {{pipeline_parallel_size: null}}}}\n"), "key `worker_config.ctx.pipeline_parallel_size`: expected a number, found `null`"),
        bad_config("nan size", &format!("{HARDWARE}worker_config: {{ctx: {{tensor_parallel_size: .nan}}}}\n"), "key `worker_config.ctx`: nan GPUs on `4` per node: the number of nodes would be `nan`, not a finite number"),
        bad_config("ctx not a mapping", &format!("{HARDWARE}worker_config: {{ctx: 4}}\n"), "key `worker_config.ctx`: expected a mapping, found `4`"),
        bad_config("bad concurrency", &format!("{HARDWARE}benchmark:\n  concurrency_list: 512,1075\n"), "key `benchmark.concurrency_list`: expected an integer (Python's `int()`), or integers separated by spaces, found `\"512,1075\"`"),
        bad_config("empty concurrency", &format!("{HARDWARE}benchmark: {{concurrency_list: ''}}\n"), "key `benchmark.concurrency_list`: expected an integer (Python's `int()`), or integers separated by spaces, found `\"\"`"),
        bad_config("worker env not a string", &format!("{HARDWARE}environment: {{worker_env_var: 5}}\n"), "key `environment.worker_env_var`: expected a string, found `5`"),
        bad_config("gen env a list", &format!("{HARDWARE}environment: {{gen_worker_env_var: [A=1]}}\n"), "key `environment.gen_worker_env_var`: expected a string, found a list"),
        bad(
            "server env a number without context servers",
            &[
                ("test_list.txt", b"t[disagg-gen_only-c]\n"),
                (&config, format!("{HARDWARE}benchmark: {{mode: gen_only_no_context}}\nenvironment: {{server_env_var: 5}}\n").as_bytes()),
            ],
            &format!("`{config}`: key `environment.server_env_var`: expected a string, found `5`"),
        ),
        bad(
            "benchmark mode a number in gen_only",
            &[
                ("test_list.txt", b"t[disagg-gen_only-c]\n"),
                (&config, format!("{HARDWARE}benchmark: {{mode: 5}}\n").as_bytes()),
            ],
            &format!("`{config}`: key `benchmark.mode`: expected a string, found `5`"),
        ),
        bad_args(
            "split group out of range",
            args_with(&["--split-group", "2"]),
            "`--split-group 2`: expected at most 1, the number of non-blank lines of `test_list.txt` (`#` lines count)",
        ),
        bad_args(
            "output folder missing",
            args_replacing("--launch-sh", Some("nodir/launch.sh".into())),
            "`nodir/launch.sh`: cannot write: no such file or directory",
        ),
        bad_args(
            "output is a folder",
            args_replacing("--launch-sh", Some("out".into())),
            "`out`: cannot write: is a directory",
        ),
        bad_args(
            "run script not UTF-8",
            args_replacing("--run-sh", Some(OsString::from_vec(b"/r\xff.sh".to_vec()))),
            "`--run-sh`: expected UTF-8 text (it is written into the script), found `/r\u{fffd}.sh`",
        ),
        bad_args(
            "llm-src not UTF-8",
            args_replacing("--llm-src", Some(OsString::from_vec(b"\xffsrc".to_vec()))),
            "`--llm-src`: expected UTF-8 text (it is written into the script), found `\u{fffd}src`",
        ),
        bad_args(
            "a newline in a path stays on one line",
            args_replacing("--draft-launch-sh", Some("a\nb.sh".into())),
            "`a\\nb.sh`: cannot read: no such file or directory",
        ),
        bad_args(
            "G1's --run-ci",
            args_with(&["--run-ci"]),
            "unrecognized arguments: --run-ci",
        ),
        bad_args(
            "missing required flags",
            args_replacing("--srun-args", None).into_iter().skip(2).collect(),
            "the following arguments are required: --draft-launch-sh, --srun-args",
        ),
        bad_args(
            "ambiguous prefix",
            args_with(&["--s", "x"]),
            "ambiguous option: --s could match --script-prefix, --srun-args, --split-group, --stage-name",
        ),
        bad_args(
            "ambiguous prefix with =",
            args_with(&["--l=x"]),
            "ambiguous option: --l=x could match --launch-sh, --llm-src",
        ),
        bad_args(
            "split group not an int",
            args_with(&["--split-group", "1.5"]),
            "argument --split-group: invalid int value: '1.5'",
        ),
        bad_args(
            "flag without its value",
            args_with(&["--cluster-name"]),
            "argument --cluster-name: expected one argument",
        ),
        bad_args("stray argument", args_with(&["extra"]), "unrecognized arguments: extra"),
    ]
}

#[test]
fn bad_input_exits_2_with_one_line_naming_it_and_writes_nothing() {
    for case in bad_cases() {
        let changed: Vec<(&str, &[u8])> = case
            .changed
            .iter()
            .map(|(path, content)| (path.as_str(), content.as_slice()))
            .collect();
        let files: Vec<(String, Vec<u8>)> = files_with(&changed)
            .into_iter()
            .filter(|(path, _)| {
                !case
                    .removed
                    .iter()
                    .any(|removed| path == removed || path.starts_with(&format!("{removed}/")))
            })
            .collect();
        let dir = case_dir(&files);
        // An existing output stays as it was.
        std::fs::write(dir.path().join("out/launch.sh"), "old\n").expect("old output");
        let before = snapshot(dir.path());
        let run = g2(dir.path(), &case.args);
        assert_eq!(
            (run.code, run.stderr.as_str(), run.stdout.as_str()),
            (2, format!("error: {}\n", case.message).as_str(), ""),
            "case `{}`",
            case.name
        );
        assert!(
            snapshot(dir.path()) == before,
            "case `{}`: nothing written or left",
            case.name
        );
    }
}

#[test]
fn compat_values_other_than_a_generation_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (args, message) in [
        (
            &["--compat", "g3"][..],
            "error: `--compat g3`: unknown generation, expected one of g1, g2\n",
        ),
        (
            &["--compat=G2"],
            "error: `--compat G2`: unknown generation, expected one of g1, g2\n",
        ),
        (
            &["--compat"],
            "error: `--compat` expects a generation: one of g1, g2\n",
        ),
    ] {
        let run = launch_gen(dir.path(), args);
        assert_eq!(
            (run.code, run.stderr.as_str(), run.stdout.as_str()),
            (2, message, ""),
            "{args:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// argparse behaviour through the binary.

#[test]
fn flags_take_prefixes_equals_and_repeats_like_argparse() {
    // Prefixes (`--cluster`, `--draft`, `--spl`), `=` (also with a prefix), a repeated flag
    // (the last wins), `--compat=g2`, flags in any order.
    let dir = case_dir(&files_with(&[]));
    let args = os(&[
        "--compat=g2",
        "--srun=srun_args.txt",
        "--draft",
        "draft.sh",
        "--launch-sh=out/launch.sh",
        "--run-sh",
        "/wrong.sh",
        "--run-sh=/r.sh",
        "--inst",
        "/i.sh",
        "--llm-src",
        "llm-src",
        "--test-list",
        "nope.txt",
        "--test=test_list.txt",
        "--script-prefix",
        "prefix.sh",
        "--spl",
        "-1",
        "--cluster",
        "aws-dfw",
        "--stage",
        "-x y",
    ]);
    let run = launch_gen(dir.path(), &args);
    assert_eq!(
        (run.code, run.stderr.as_str(), run.stdout.as_str()),
        (0, "", "")
    );
    let script = std::fs::read_to_string(dir.path().join("out/launch.sh")).expect("written");
    assert_eq!(
        script,
        base_script().replace(UNSET, &format!("{UNSET} export UCX_TLS=^gdr_copy &&"))
    );
}

#[test]
fn help_exits_0_on_stdout_and_writes_nothing() {
    for extra in [&["--help"][..], &["-h"], &["--he"], &["--run-ci", "--help"]] {
        let dir = case_dir(&files_with(&[]));
        let before = snapshot(dir.path());
        let run = g2(dir.path(), &args_with(extra));
        assert_eq!((run.code, run.stderr.as_str()), (0, ""), "{extra:?}");
        assert!(run.stdout.starts_with("usage: launch-gen --compat g2 [-h] --draft-launch-sh DRAFT_LAUNCH_SH --launch-sh LAUNCH_SH"), "{}", run.stdout);
        for flag in [
            "--split-group SPLIT_GROUP",
            "--stage-name STAGE_NAME",
            "--cluster-name CLUSTER_NAME",
            "show this help message and exit",
        ] {
            assert!(run.stdout.contains(flag), "{flag}: {}", run.stdout);
        }
        assert!(snapshot(dir.path()) == before, "{extra:?}: nothing written");
    }
    // Also without any other argument.
    let run = launch_gen(Path::new("/"), ["--compat", "g2", "--help"]);
    assert_eq!(run.code, 0);
}

// ---------------------------------------------------------------------------------------------
// The drop-in entry points.

#[test]
fn the_submit_py_drop_ins_run_the_launch_gen_beside_them_else_on_path() {
    let shims = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shims");
    let case = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/compat-g2/e2e_basic");
    let g1_case = fixtures().join("compat/deepseek-r1-fp4_000");
    let bin = Path::new(env!("CARGO_BIN_EXE_launch-gen"));
    let read_args = |case: &Path, out: &Path| -> Vec<OsString> {
        std::fs::read_to_string(case.join("args"))
            .expect("args")
            .lines()
            .map(|arg| {
                if arg == "OUT" {
                    out.as_os_str().to_owned()
                } else {
                    arg.into()
                }
            })
            .collect()
    };
    // Layouts: `dist/launch-gen` with `dist/gN/submit.py` (scripts/build's), launch-gen in the
    // same folder, and launch-gen only on PATH.
    for layout in ["parent", "beside", "path"] {
        let root = tempfile::tempdir().expect("temp dir");
        let dist = root.path().join("dist");
        let on_path = root.path().join("bin");
        for generation in ["g1", "g2"] {
            let folder = dist.join(generation);
            std::fs::create_dir_all(&folder).expect("folders");
            std::fs::create_dir_all(&on_path).expect("folders");
            std::fs::copy(
                shims.join(generation).join("submit.py"),
                folder.join("submit.py"),
            )
            .expect("copy shim");
            let link = match layout {
                "parent" => dist.join("launch-gen"),
                "beside" => folder.join("launch-gen"),
                _ => on_path.join("launch-gen"),
            };
            if !link.exists() {
                std::os::unix::fs::symlink(bin, &link).expect("symlink");
            }
        }
        let path = format!(
            "{}:{}",
            on_path.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        for (generation, case) in [("g2", &case), ("g1", &g1_case)] {
            let out = root.path().join(format!("{generation}.sh"));
            let output = Command::new("python3")
                .arg(dist.join(generation).join("submit.py"))
                .args(read_args(case, &out))
                .current_dir(case)
                .env("PATH", &path)
                .output()
                .expect("python3 runs");
            assert!(
                output.status.success(),
                "{layout} {generation}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            assert!(
                std::fs::read(&out).expect("written")
                    == std::fs::read(case.join("expected.sh")).expect("expected"),
                "{layout} {generation}"
            );
        }
    }
    // The shim passes a failure through: G1's `--run-ci` is an error for G2.
    let dir = case_dir(&files_with(&[]));
    let dist = dir.path().join("dist");
    std::fs::create_dir_all(dist.join("g2")).expect("folders");
    std::fs::copy(shims.join("g2/submit.py"), dist.join("g2/submit.py")).expect("copy");
    std::os::unix::fs::symlink(bin, dist.join("launch-gen")).expect("symlink");
    let output = Command::new("python3")
        .arg(dist.join("g2/submit.py"))
        .args(args_with(&["--run-ci"]))
        .current_dir(dir.path())
        .output()
        .expect("python3 runs");
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "error: unrecognized arguments: --run-ci\n"
    );
}

// ---------------------------------------------------------------------------------------------
// Property: random arguments and inputs never panic and never leave a partial or stale file.

fn pick<T: Clone + std::fmt::Debug + 'static>(items: &'static [T]) -> impl Strategy<Value = T> {
    proptest::sample::select(items)
}

/// A line of YAML for the random configs.
fn yaml_value() -> impl Strategy<Value = &'static str> {
    pick(&[
        "4",
        "1",
        "0",
        "-2",
        "2.0",
        "0.5",
        "true",
        "null",
        "'4'",
        "[1]",
        "{a: 1}",
        ".nan",
        ".inf",
        "512 1075",
        "' 8 '",
        "x",
        "",
        "99999999999999999999",
    ])
}

/// A config: each value its default, now and then a random one; LF or CRLF.
fn config_text() -> impl Strategy<Value = String> {
    let value = |default: &'static str| prop_oneof![3 => Just(default), 1 => yaml_value()];
    let mode = prop_oneof![
        pick(&["e2e", "gen_only", "gen_only_no_context", "''"]),
        yaml_value()
    ];
    (
        (value("4"), value("1"), value("2"), mode, value("'64'")),
        (value("4"), value("1"), value("A=1"), value("S=1"), value("C=1")),
        any::<bool>(),
    )
        .prop_map(|((gpn, n_ctx, n_gen, mode, concurrency), (tp, pp, worker, server, ctx), crlf)| {
            let text = format!(
                "hardware:\n  gpus_per_node: {gpn}\n  num_ctx_servers: {n_ctx}\n  num_gen_servers: {n_gen}\n\
                 benchmark:\n  mode: {mode}\n  concurrency_list: {concurrency}\n\
                 worker_config:\n  gen:\n    tensor_parallel_size: {tp}\n  ctx:\n    pipeline_parallel_size: {pp}\n\
                 environment:\n  worker_env_var: {worker}\n  server_env_var: {server}\n  ctx_worker_env_var: {ctx}\n"
            );
            if crlf { text.replace('\n', "\r\n") } else { text }
        })
}

fn test_list_text() -> impl Strategy<Value = String> {
    let line = pick(&[
        "t[disagg-e2e-c]",
        "t[disagg-gen_only-c]",
        "  t[disagg_upload-e2e-c] TIMEOUT (90)",
        "# comment",
        "",
        "   ",
        "t[aggr-c-s]",
        "t[disagg-e2e-missing]",
        "t[disagg-e2e]",
        "no brackets",
        "t[disagg-perf-c]",
    ]);
    proptest::collection::vec(line, 0..5).prop_map(|lines| lines.join("\n"))
}

fn prefix_text() -> impl Strategy<Value = String> {
    let line = pick(&[
        "#!/bin/bash",
        "export pytestCommand=\"A=1 trtllm-llmapi-launch pytest -v --output-dir=/o/ --csv=/o/r.csv -k t\"",
        "export pytestCommand=\"pytest --periodic-junit\"",
        "  # export pytestCommand=\"old\"",
        "export pytestCommandOld=x",
        "",
        "\t indented",
        "export X=\"a  b\"",
    ]);
    proptest::collection::vec(line, 0..5).prop_map(|lines| lines.join("\n"))
}

/// Additions to a random argument list, each right or wrong in its own way.
const EXTRAS: &[&[&str]] = &[
    &["--split-group", "2"],
    &["--split-group", "-1"],
    &["--split-group", "x"],
    &["--split-group", "99"],
    &["--cluster-name", "AWS-DFW-1"],
    &["--cluster", "nsc-svg"],
    &["--stage-name", "GB200"],
    &["--s", "x"],
    &["--run-ci"],
    &["stray"],
    &["--help"],
    &["--launch-sh", "out"],
    &["--launch-sh", "nodir/x.sh"],
    &["--"],
];

/// One argument list: some of the flags, spelled in any of argparse's ways, in any order, with
/// now and then something wrong.
fn argv() -> impl Strategy<Value = Vec<String>> {
    let flags: &'static [(&'static str, &'static str, &'static str)] = &[
        ("--draft-launch-sh", "--draft", "draft.sh"),
        ("--launch-sh", "--launch", "out/launch.sh"),
        ("--run-sh", "--run", "/r.sh"),
        ("--install-sh", "--inst", "/i.sh"),
        ("--llm-src", "--llm", "llm-src"),
        ("--test-list", "--test", "test_list.txt"),
        ("--script-prefix", "--sc", "prefix.sh"),
        ("--srun-args", "--sr", "srun_args.txt"),
    ];
    let spelled =
        (0..flags.len(), 0..4usize, any::<bool>()).prop_map(move |(index, style, keep)| {
            let (flag, prefix, value) = flags[index];
            let value = if keep { value } else { "missing.txt" };
            match style {
                0 => vec![flag.to_owned(), value.to_owned()],
                1 => vec![format!("{flag}={value}")],
                2 => vec![prefix.to_owned(), value.to_owned()],
                _ => vec![format!("{prefix}={value}")],
            }
        });
    let extra = pick(EXTRAS);
    (
        proptest::collection::vec(spelled, 6..12),
        proptest::collection::vec(extra, 0..3),
        any::<bool>(),
    )
        .prop_map(|(mut groups, extras, all_required)| {
            if all_required {
                // Make sure every required flag is present with its right value at least once, at
                // the end (the last repeat wins).
                for (flag, value) in [
                    ("--draft-launch-sh", "draft.sh"),
                    ("--launch-sh", "out/launch.sh"),
                    ("--run-sh", "/r.sh"),
                    ("--install-sh", "/i.sh"),
                    ("--llm-src", "llm-src"),
                    ("--test-list", "test_list.txt"),
                    ("--script-prefix", "prefix.sh"),
                    ("--srun-args", "srun_args.txt"),
                ] {
                    groups.push(vec![flag.to_owned(), value.to_owned()]);
                }
            }
            for extra in extras {
                groups.push(extra.iter().map(|s| (*s).to_owned()).collect());
            }
            groups.into_iter().flatten().collect()
        })
}

/// `PROPTEST_CASES`, at most 256: each case starts the binary (about 40 ms a case here).
fn spawning_cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(256u32)
        .min(256)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(spawning_cases()))]

    #[test]
    fn random_arguments_and_inputs_never_panic_nor_leave_partial_output(
        args in argv(),
        config in config_text(),
        test_list in test_list_text(),
        prefix in prefix_text(),
        srun in "[ -~\t\n]{0,40}",
        draft in "\\PC{0,40}",
        old_output in any::<bool>(),
    ) {
        let dir = case_dir(&files_with(&[
            ("test_list.txt", test_list.as_bytes()),
            (&config_file(), config.as_bytes()),
            ("prefix.sh", prefix.as_bytes()),
            ("srun_args.txt", srun.as_bytes()),
            ("draft.sh", draft.as_bytes()),
        ]));
        let out = dir.path().join("out/launch.sh");
        if old_output {
            std::fs::write(&out, "old\n").expect("old output");
        }
        let before = snapshot(dir.path());
        let run = g2(dir.path(), &os(&args.iter().map(String::as_str).collect::<Vec<_>>()));
        prop_assert!(run.code == 0 || run.code == 2, "exit {}: {run:?}", run.code);
        let after = snapshot(dir.path());
        let leftovers: Vec<&PathBuf> = after
            .iter()
            .map(|(path, _)| path)
            .filter(|path| path.to_string_lossy().ends_with(".tmp"))
            .collect();
        prop_assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
        if run.code == 2 {
            prop_assert_eq!(run.stderr.lines().count(), 1, "{:?}", run);
            prop_assert!(run.stderr.starts_with("error: "), "{:?}", run);
            prop_assert_eq!(&run.stdout, "");
            prop_assert!(after == before, "a failed run changed the folder: {:?}", run);
        } else if run.stdout.starts_with("usage: ") {
            prop_assert!(after == before, "--help wrote something");
        } else {
            prop_assert_eq!(&run.stderr, "");
            let written = std::fs::read_to_string(&out).expect("written");
            prop_assert!(written.contains("\nsrunArgs=(\n"), "{}", written);
            prop_assert!(!written.ends_with('\n') || written.ends_with(")\n"), "{}", written);
            // The same inputs give the same bytes.
            let again = g2(dir.path(), &os(&args.iter().map(String::as_str).collect::<Vec<_>>()));
            prop_assert_eq!(again.code, 0);
            prop_assert_eq!(std::fs::read_to_string(&out).expect("written"), written);
        }
    }
}
