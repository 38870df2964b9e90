//! Compatibility mode: every golden case byte for byte, plus hand-derived edge cases.
//!
//! The expected outputs of the constructed cases follow the reference rules of
//! reference-flow section 2.2, step by step; each case says which rules it exercises.

use std::path::Path;

use crate::{fixtures, launch_gen, write_files};

#[test]
fn every_golden_case_is_reproduced_byte_for_byte() {
    let root = fixtures().join("compat");
    let mut cases: Vec<_> = std::fs::read_dir(&root)
        .expect("compat fixtures")
        .map(|entry| entry.expect("readable").path())
        .filter(|path| path.is_dir())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 5,
        "expected the golden cases in {}",
        root.display()
    );
    let out_dir = tempfile::tempdir().expect("temp dir");
    for case in cases {
        let out = out_dir.path().join(format!(
            "{}.sh",
            case.file_name().expect("name").to_string_lossy()
        ));
        let args: Vec<String> = std::fs::read_to_string(case.join("args"))
            .expect("args file")
            .lines()
            .map(|arg| {
                if arg == "OUT" {
                    out.to_string_lossy().into_owned()
                } else {
                    arg.to_owned()
                }
            })
            .collect();
        let run = launch_gen(&case, &args);
        assert_eq!(
            (run.code, run.stderr.as_str()),
            (0, ""),
            "case {}",
            case.display()
        );
        let written = std::fs::read(&out).expect("output written");
        let expected = std::fs::read(case.join("expected.sh")).expect("expected.sh");
        assert!(
            written == expected,
            "case {}: output differs from expected.sh",
            case.display()
        );
        if let Ok(expected) = std::fs::read_to_string(case.join("expected.stdout")) {
            let printed = run.stdout.replace(&*out.to_string_lossy(), "OUT");
            assert!(
                printed == expected,
                "case {}: stdout differs from expected.stdout:\n{printed}",
                case.display()
            );
        }
    }
}

const CONFIG_DIR: &str = "llm-src/tests/integration/defs/perf/disagg/test_configs/disagg/perf";

/// Runs compat mode in a fresh folder with `files` and returns the written script.
fn generate(files: &[(&str, &str)], extra_args: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    write_files(dir.path(), files);
    write_files(dir.path(), &[("draft.sh", "\nDRAFT $x\n")]);
    let mut args = vec![
        "--run-ci",
        "--llm-src",
        "llm-src",
        "--test-list",
        "test_list.txt",
        "--draft-launch-sh",
        "draft.sh",
        "--launch-sh",
        "out/launch.sh",
        "--run-sh",
        "/r.sh",
        "--install-sh",
        "/i.sh",
    ];
    let has = |name: &str| files.iter().any(|(path, _)| *path == name);
    if has("prefix.sh") {
        args.extend(["--script-prefix", "prefix.sh"]);
    }
    if has("srun_args.txt") {
        args.extend(["--srun-args", "srun_args.txt"]);
    }
    args.extend(extra_args);
    std::fs::create_dir(dir.path().join("out")).expect("out dir");
    let run = launch_gen(dir.path(), &args);
    assert_eq!(
        (run.code, run.stderr.as_str()),
        (0, ""),
        "launch-gen {args:?}"
    );
    read(&dir.path().join("out/launch.sh"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).expect("output written")
}

/// The numbers block: ctx, gen, gpus per node, gpus ctx/gen, nodes ctx/gen, total nodes/gpus.
fn numbers(values: [u64; 9]) -> String {
    let names = [
        "numCtxServers",
        "numGenServers",
        "gpusPerNode",
        "gpusPerCtxServer",
        "gpusPerGenServer",
        "nodesPerCtxServer",
        "nodesPerGenServer",
        "totalNodes",
        "totalGpus",
    ];
    names
        .iter()
        .zip(values)
        .map(|(name, value)| format!("export {name}={value}\n"))
        .collect()
}

#[test]
fn blank_and_indented_prefix_lines_whitespace_in_srun_args_and_a_missing_environment() {
    // Rule 3: the prefix is split on "\n", so the blank line, the indented lines, the
    // whitespace-only line and the empty string after the final newline all stay (rule 7: the
    // cleanup result is discarded). Rule 4: the tab-indented pytest line is found, renamed,
    // split on any whitespace (the double space collapses) and the launcher token dropped.
    // Rule 3 again: srun args split on spaces, tabs and newlines. No `environment`: every env
    // prefix is empty and leaves its separator space. No `worker_config`: sizes 1, one node each.
    let script = generate(
        &[
            (
                "test_list.txt",
                "perf/test_perf_sanity.py::test_e2e[disagg_upload-cfg-a]\n",
            ),
            (
                &format!("{CONFIG_DIR}/cfg-a.yaml"),
                "hardware:\n  gpus_per_node: 4\n  num_ctx_servers: 1\n  num_gen_servers: 1\n",
            ),
            (
                "prefix.sh",
                "#!/bin/bash\n\n  export A=1\n\texport pytestCommand=\"X=1  /x/trtllm-llmapi-launch pytest -k 'a b'\"\n   \n",
            ),
            ("srun_args.txt", "  --a=1\t--b \n\n x  \n"),
        ],
        &[],
    );
    let expected = format!(
        "#!/bin/bash\n\n  export A=1\n\texport pytestCommand=\"X=1  /x/trtllm-llmapi-launch pytest -k 'a b'\"\n   \n\n\
         export pytestCommandNoLLMAPILaunch=\"X=1 pytest -k 'a b'\"\n\
         export pytestCommandWorker=\"unset UCX_TLS &&  $pytestCommand\"\n\
         export pytestCommandDisaggServer=\" $pytestCommandNoLLMAPILaunch\"\n\
         export pytestCommandBenchmark=\" $pytestCommandNoLLMAPILaunch\"\n\
         export runScript=/r.sh\nexport installScript=/i.sh\n{}\
         srunArgs=(\n  \"--a=1\"\n  \"--b\"\n  \"x\"\n  \"--container-env=DISAGG_SERVING_TYPE\"\n  \"--container-env=pytestCommand\"\n)\n\nDRAFT $x\n",
        numbers([1, 1, 4, 1, 1, 1, 1, 2, 8]),
    );
    assert_eq!(script, expected);
}

#[test]
fn gen_only_no_context_with_anchors_an_integer_concurrency_and_crlf_inputs() {
    // Rule 1: only the first line of the test list counts (CRLF is a line end: text mode).
    // Rule 2: `gen_only_no_context` contains `gen_only`, so no context servers; the integer
    // concurrency is used as is. Anchors and a `<<` merge give gen tp=4 pp=3 (12 GPUs, 2 nodes
    // of 8) and ctx tp=4 (4 GPUs, 1 node); totals 2*2 nodes, 32 GPUs.
    // Rule 5: the gen_only prefixes, the extra prefix line right after the prefix, and the
    // extra srun arg before the two container-env ones. Rule 8: `${SLURM_JOB_ID}` unescaped.
    let config = "\
x-common: &common
  tensor_parallel_size: 4
benchmark:
  mode: gen_only_no_context
  concurrency_list: 256
hardware: {gpus_per_node: 8, num_ctx_servers: 3, num_gen_servers: 2}
worker_config:
  gen:
    <<: *common
    pipeline_parallel_size: 3
  ctx: *common
environment:
  worker_env_var: A=1
  server_env_var: S=2
  benchmark_env_var: B=3
";
    let script = generate(
        &[
            ("test_list.txt", "t[disagg-cfg_b]\r\nt[aggr-other]\r\n"),
            (&format!("{CONFIG_DIR}/cfg_b.yaml"), config),
            (
                "prefix.sh",
                "export pytestCommand=\"$BASE trtllm-llmapi-launch pytest\"\r\n",
            ),
            ("srun_args.txt", "--container-name=c-${SLURM_JOB_ID}\r\n"),
        ],
        &[],
    );
    let expected = format!(
        "export pytestCommand=\"$BASE trtllm-llmapi-launch pytest\"\n\n\
         export TRTLLM_DISAGG_BENCHMARK_GEN_ONLY=1\n\
         export pytestCommandNoLLMAPILaunch=\"$BASE pytest\"\n\
         export pytestCommandWorker=\"unset UCX_TLS && TRTLLM_DISAGG_BENCHMARK_GEN_ONLY=1 \
         TRTLLM_DISABLE_KV_CACHE_TRANSFER_OVERLAP=1 TLLM_BENCHMARK_REQ_QUEUES_SIZE=256 A=1 $pytestCommand\"\n\
         export pytestCommandDisaggServer=\"TRTLLM_DISAGG_BENCHMARK_GEN_ONLY=1 S=2 $pytestCommandNoLLMAPILaunch\"\n\
         export pytestCommandBenchmark=\"B=3 $pytestCommandNoLLMAPILaunch\"\n\
         export runScript=/r.sh\nexport installScript=/i.sh\n{}\
         srunArgs=(\n  \"--container-name=c-${{SLURM_JOB_ID}}\"\n  \"--container-env=TRTLLM_DISAGG_BENCHMARK_GEN_ONLY\"\n  \
         \"--container-env=DISAGG_SERVING_TYPE\"\n  \"--container-env=pytestCommand\"\n)\n\nDRAFT $x\n",
        numbers([0, 2, 8, 4, 12, 1, 2, 4, 32]),
    );
    assert_eq!(script, expected);
}

#[test]
fn no_pytest_line_a_prefix_without_final_newline_and_a_string_of_concurrencies() {
    // Rule 4: no `export pytestCommand=` line gives an empty line. Rule 3: no final newline,
    // so no blank line after the prefix. Rule 2 with the fix for B1: `"512 1075"` is a list and
    // gen_only takes the FIRST value. Empty worker and server env leave a double space (rule 5
    // builds `"... SIZE=512 " + ""`, then `f"... {env} $pytestCommand"`). An empty srun file
    // gives only the appended args. Missing ctx sizes default to 1.
    let config = "\
benchmark: {mode: gen_only, concurrency_list: 512 1075}
hardware: {gpus_per_node: 4, num_ctx_servers: 2, num_gen_servers: 3}
worker_config: {gen: {tensor_parallel_size: 2}}
";
    let script = generate(
        &[
            ("test_list.txt", "x[disagg-c]"),
            (&format!("{CONFIG_DIR}/c.yaml"), config),
            ("prefix.sh", "#!/bin/bash\nexport X=1"),
            ("srun_args.txt", ""),
        ],
        &[],
    );
    let expected = format!(
        "#!/bin/bash\nexport X=1\nexport TRTLLM_DISAGG_BENCHMARK_GEN_ONLY=1\n\n\
         export pytestCommandWorker=\"unset UCX_TLS && TRTLLM_DISAGG_BENCHMARK_GEN_ONLY=1 \
         TRTLLM_DISABLE_KV_CACHE_TRANSFER_OVERLAP=1 TLLM_BENCHMARK_REQ_QUEUES_SIZE=512  $pytestCommand\"\n\
         export pytestCommandDisaggServer=\"TRTLLM_DISAGG_BENCHMARK_GEN_ONLY=1  $pytestCommandNoLLMAPILaunch\"\n\
         export pytestCommandBenchmark=\" $pytestCommandNoLLMAPILaunch\"\n\
         export runScript=/r.sh\nexport installScript=/i.sh\n{}\
         srunArgs=(\n  \"--container-env=TRTLLM_DISAGG_BENCHMARK_GEN_ONLY\"\n  \
         \"--container-env=DISAGG_SERVING_TYPE\"\n  \"--container-env=pytestCommand\"\n)\n\nDRAFT $x\n",
        numbers([0, 3, 4, 1, 2, 1, 1, 3, 12]),
    );
    assert_eq!(script, expected);
}

#[test]
fn quotes_inside_pytest_command_and_local_mode() {
    // Rule 4 does not understand quotes: the inner `\"` pairs ride along on their tokens and
    // the spaces inside `"a  and b"` collapse. Local mode: `--config-yaml` instead of a test
    // list (the reference ignores it); no `--script-prefix` reads as an empty prefix (one
    // blank line) and no `--srun-args` as no args.
    let dir = tempfile::tempdir().expect("temp dir");
    write_files(
        dir.path(),
        &[
            (
                "cfg.yaml",
                "benchmark: {concurrency_list: '64'}\nhardware: {gpus_per_node: 2, num_ctx_servers: 1, num_gen_servers: 1}\n",
            ),
            (
                "prefix.sh",
                "export pytestCommand=\"__LUNOWUD=\\\"-thread_pool_size=8\\\" pytest -k \\\"a  and b\\\"\"\n",
            ),
            ("draft.sh", "D\n"),
        ],
    );
    let args = [
        "--config-yaml=cfg.yaml",
        "--draft-launch-sh",
        "draft.sh",
        "--launch-sh",
        "a.sh",
        "--run-sh",
        "/r",
        "--install-sh",
        "/i",
        "--script-prefix",
        "prefix.sh",
    ];
    let run = launch_gen(dir.path(), args);
    assert_eq!((run.code, run.stderr.as_str()), (0, ""));
    let script = read(&dir.path().join("a.sh"));
    let pytest_line = script.lines().nth(2).expect("the NoLLMAPILaunch line");
    assert_eq!(
        pytest_line,
        "export pytestCommandNoLLMAPILaunch=\"__LUNOWUD=\\\"-thread_pool_size=8\\\" pytest -k \\\"a and b\\\"\""
    );

    let run = launch_gen(
        dir.path(),
        [
            "--config-yaml",
            "cfg.yaml",
            "--draft-launch-sh",
            "draft.sh",
            "--launch-sh",
            "b.sh",
            "--run-sh",
            "/r",
            "--install-sh",
            "/i",
        ],
    );
    assert_eq!((run.code, run.stderr.as_str()), (0, ""));
    let script = read(&dir.path().join("b.sh"));
    assert!(
        script.starts_with("\n\nexport pytestCommandWorker=\"unset UCX_TLS &&  $pytestCommand\"\n"),
        "{script}"
    );
    assert!(script.ends_with("srunArgs=(\n  \"--container-env=DISAGG_SERVING_TYPE\"\n  \"--container-env=pytestCommand\"\n)\nD\n"), "{script}");
}

#[test]
fn reference_flag_spellings_work() {
    // argparse accepts `--flag=value`, unambiguous prefixes and repeated flags (last wins).
    let dir = tempfile::tempdir().expect("temp dir");
    write_files(
        dir.path(),
        &[
            (
                "cfg.yaml",
                "hardware: {gpus_per_node: 2, num_ctx_servers: 1, num_gen_servers: 1}\n",
            ),
            ("draft.sh", "D\n"),
        ],
    );
    let args = [
        "--config-yaml=nope.yaml",
        "--config-yaml=cfg.yaml",
        "--draft=draft.sh",
        "--launch-sh=a.sh",
        "--run-sh=/r",
        "--install=/i",
        "--stage-name=S",
    ];
    let run = launch_gen(dir.path(), args);
    assert_eq!((run.code, run.stderr.as_str()), (0, ""));
    assert!(read(&dir.path().join("a.sh")).ends_with(")\nD\n"));
}

#[test]
fn stdout_is_the_references_report_unless_quiet() {
    // What the reference prints: its three dicts as Python reprs (a YAML list and quotes in a
    // value, a missing section), where it wrote the script, and the script itself.
    let dir = tempfile::tempdir().expect("temp dir");
    write_files(
        dir.path(),
        &[
            (
                "cfg.yaml",
                "hardware: {gpus_per_node: 4, num_ctx_servers: 1, num_gen_servers: 2}\n\
                 benchmark: {concurrency_list: [8, 16]}\n\
                 environment: {container_image: \"it's\", build_wheel: true}\n",
            ),
            ("draft.sh", "D\n"),
        ],
    );
    let base = [
        "--config-yaml",
        "cfg.yaml",
        "--draft-launch-sh",
        "draft.sh",
        "--launch-sh",
        "a.sh",
        "--run-sh",
        "/r",
        "--install-sh",
        "/i",
    ];
    let run = launch_gen(dir.path(), base);
    assert_eq!((run.code, run.stderr.as_str()), (0, ""));
    let script = read(&dir.path().join("a.sh"));
    let expected = format!(
        "Environment configuration: {{'container': \"it's\", 'mounts': '', 'workdir': '', \
         'llm_models_root': '', 'llmsrc': '', 'build_wheel': True, 'job_workspace': '', \
         'worker_env_var': '', 'server_env_var': '', 'benchmark_env_var': '', \
         'open_search_db_base_url': ''}}\n\
         Benchmark configuration: {{'mode': 'e2e', 'concurrency': [8, 16]}}\n\
         Hardware configuration: {{'num_ctx_servers': 1, 'num_gen_servers': 2, 'gpus_per_node': 4, \
         'gpus_per_ctx_server': 1, 'gpus_per_gen_server': 1, 'nodes_per_ctx_server': 1, \
         'nodes_per_gen_server': 1, 'total_nodes': 3, 'total_gpus': 12}}\n\
         Launch script generated at: a.sh\nLaunch script:\n{script}\n"
    );
    assert_eq!(run.stdout, expected);

    let quiet = launch_gen(dir.path(), base.iter().copied().chain(["--quiet"]));
    assert_eq!(
        (quiet.code, quiet.stdout.as_str(), quiet.stderr.as_str()),
        (0, "", "")
    );
    assert_eq!(read(&dir.path().join("a.sh")), script);
}
