//! Native mode: snapshots of the real configs, `bash -n` and shellcheck on every script, a
//! quoting round trip through bash, and the supervision logic run against fake `srun`,
//! `scontrol` and `rank-launch` programs.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use launch_gen::native::TEMPLATE;

use crate::{file_name, fixtures, launch_gen, real_configs, write_files};

/// The CI inputs of a golden case: a real L0 prefix and pyxis srun arguments.
fn ci_inputs() -> PathBuf {
    fixtures().join(
        "compat/gb200_deepseek-r1-fp4_1k1k_con2048_ctx2_dep4_gen1_dep16_eplb288_mtp3_ccb-NIXL",
    )
}

/// Renders a native script in `dir` and returns it; panics with stderr on failure.
fn render(dir: &Path, args: &[&str]) -> String {
    let mut all = vec!["--launch-sh", "launch.sh"];
    all.extend(args);
    let run = launch_gen(dir, &all);
    assert_eq!(
        (run.code, run.stderr.as_str()),
        (0, ""),
        "launch-gen {all:?}"
    );
    std::fs::read_to_string(dir.join("launch.sh")).expect("script written")
}

/// `bash -n` and shellcheck (which must be installed: a missing checker fails the test).
fn check_shell(script: &Path) {
    let status = Command::new("bash")
        .arg("-n")
        .arg(script)
        .status()
        .expect("bash runs");
    assert!(status.success(), "bash -n {}", script.display());
    let output = Command::new("shellcheck")
        .args(["--shell=bash", "--severity=info"])
        .arg(script)
        .output()
        .unwrap_or_else(|error| {
            panic!("shellcheck must be installed (apt-get install shellcheck): {error}")
        });
    assert!(
        output.status.success(),
        "shellcheck {}:\n{}",
        script.display(),
        String::from_utf8_lossy(&output.stdout)
    );
}

/// The generated part of a script: everything before the static template.
fn generated_part(script: &str) -> &str {
    script
        .strip_suffix(TEMPLATE)
        .expect("the script ends with the template")
}

#[test]
fn real_configs_render_as_expected_and_pass_shellcheck() {
    let inputs = ci_inputs();
    for config in real_configs() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::copy(&config, dir.path().join("cfg.yaml")).expect("copy config");
        std::fs::copy(inputs.join("prefix.sh"), dir.path().join("prefix.sh")).expect("copy prefix");
        std::fs::copy(
            inputs.join("srun_args.txt"),
            dir.path().join("srun_args.txt"),
        )
        .expect("copy srun args");
        let name = file_name(&config).trim_end_matches(".yaml").to_owned();

        // CI style: the L0 prefix, pyxis srun arguments and an install step.
        let script = render(
            dir.path(),
            &[
                "--config-yaml",
                "cfg.yaml",
                "--script-prefix",
                "prefix.sh",
                "--srun-args",
                "srun_args.txt",
                "--install-sh",
                "/ws/install.sh",
            ],
        );
        check_shell(&dir.path().join("launch.sh"));
        let shown = generated_part(&script)
            .replace(&dir.path().display().to_string(), "[TMP]")
            .replace(env!("CARGO_BIN_EXE_launch-gen"), "[LAUNCH-GEN]");
        insta::assert_snapshot!(format!("ci-{name}"), shown);

        // Standalone: a generated header, plain srun, the precheck.
        let script = render(
            dir.path(),
            &[
                "--config-yaml",
                "cfg.yaml",
                "--command",
                "pytest -k 'x y'",
                "--job-name",
                "disagg",
                "--time",
                "02:00:00",
                "--precheck",
            ],
        );
        check_shell(&dir.path().join("launch.sh"));
        let shown = generated_part(&script)
            .replace(&dir.path().display().to_string(), "[TMP]")
            .replace(env!("CARGO_BIN_EXE_launch-gen"), "[LAUNCH-GEN]");
        insta::assert_snapshot!(format!("standalone-{name}"), shown);
    }
}

#[test]
fn the_template_is_shellcheck_clean_on_its_own() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_files(
        dir.path(),
        &[(
            "cfg.yaml",
            "hardware: {gpus_per_node: 8, num_ctx_servers: 1, num_gen_servers: 1}\n",
        )],
    );
    let script = render(
        dir.path(),
        &["--config-yaml", "cfg.yaml", "--command", "pytest"],
    );
    assert!(
        script.starts_with(
            "#!/bin/bash\n#SBATCH --nodes=2\n#SBATCH --ntasks-per-node=8\n#SBATCH --no-kill\n\n"
        ),
        "{script}"
    );
    check_shell(&dir.path().join("launch.sh"));
}

/// Values that break naive quoting.
const NASTY: &str = "a b 'c' \"d\" $(touch MARKER) `touch MARKER` ${HOME} \\ \t\nnew line é";

#[test]
fn every_value_round_trips_through_bash_and_nothing_executes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let odd_dir = dir.path().join("we'ird $(touch MARKER) dir");
    std::fs::create_dir(&odd_dir).expect("odd dir");
    let yaml_value = NASTY
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\t', "\\t")
        .replace('\n', "\\n");
    let config = format!(
        "hardware: {{gpus_per_node: 4, num_ctx_servers: 1, num_gen_servers: 1}}\n\
         environment: {{worker_env_var: \"W={yaml_value}\", server_env_var: \"S='x y'\", benchmark_env_var: \"B=`id`\"}}\n"
    );
    write_files(
        &odd_dir,
        &[
            ("cfg.yaml", &config),
            (
                "srun_args.txt",
                "--container-mounts='/a b:/c d' \"--x=it's\" --y=\\$z --name=j-${SLURM_JOB_ID}\n",
            ),
        ],
    );
    let script = render(
        &odd_dir,
        &[
            "--config-yaml",
            "cfg.yaml",
            "--srun-args",
            "srun_args.txt",
            "--command",
            NASTY,
            "--workspace",
            NASTY,
            "--install-sh",
            NASTY,
            "--rank-launch",
            NASTY,
            "--rank-check",
            NASTY,
        ],
    );
    check_shell(&odd_dir.join("launch.sh"));

    // Source the generated block and print every value NUL-separated.
    let block = generated_part(&script)
        .split_once("\n\n")
        .expect("header, then the block")
        .1;
    let snippet = format!(
        "set -u\nSLURM_JOB_ID=77\n{block}\nprintf '%s\\0' \"$genWorkerCommand\" \"$ctxWorkerCommand\" \"$serverCommand\" \"$benchmarkCommand\" \
         \"$jobWorkspace\" \"$installScript\" \"$rankLaunch\" \"$rankCheck\" \"$launchGenConfig\" \"${{srunArgs[@]}}\"\n"
    );
    let output = Command::new("bash")
        .arg("-c")
        .arg(&snippet)
        .current_dir(&odd_dir)
        .output()
        .expect("bash runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let values: Vec<String> = output
        .stdout
        .split(|&b| b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    let config_path = odd_dir.join("cfg.yaml").display().to_string();
    let expected = [
        format!("W={NASTY} {NASTY}"),
        format!("W={NASTY} {NASTY}"),
        format!("S='x y' {NASTY}"),
        format!("B=`id` {NASTY}"),
        NASTY.to_owned(),
        NASTY.to_owned(),
        NASTY.to_owned(),
        NASTY.to_owned(),
        config_path,
        "--container-mounts=/a b:/c d".to_owned(),
        "--x=it's".to_owned(),
        "--y=$z".to_owned(),
        "--name=j-77".to_owned(),
    ];
    assert_eq!(values, expected);
    let marker_files: Vec<_> = walk(dir.path())
        .into_iter()
        .filter(|path| path.ends_with("MARKER"))
        .collect();
    assert!(
        marker_files.is_empty(),
        "something executed: {marker_files:?}"
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).expect("readable") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            paths.extend(walk(&path));
        }
        paths.push(path);
    }
    paths
}

#[test]
fn pyxis_srun_arguments_forward_the_step_variables_and_plain_srun_does_not() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_files(
        dir.path(),
        &[
            (
                "cfg.yaml",
                "benchmark: {mode: gen_only, concurrency_list: [8, 16]}\nhardware: {gpus_per_node: 4, num_ctx_servers: 1, num_gen_servers: 1}\n",
            ),
            (
                "pyxis.txt",
                "--container-image=/i.sqsh --container-env=pytestCommand --mpi=pmix",
            ),
            ("plain.txt", "--partition=p --mpi=pmi2"),
        ],
    );
    let script = render(
        dir.path(),
        &[
            "--config-yaml",
            "cfg.yaml",
            "--command",
            "c",
            "--srun-args",
            "pyxis.txt",
        ],
    );
    let block = generated_part(&script);
    assert!(block.contains(
        "srunArgs=(\n    --container-image=/i.sqsh\n    --container-env=pytestCommand\n)\ncontainerEnv=(\n    \
         --container-env=DISAGG_SERVING_TYPE\n    --container-env=jobWorkspace\n    --container-env=numCtxServers\n    \
         --container-env=numGenServers\n    --container-env=TRTLLM_PERF_RUN_TOKEN\n    --container-env=LAUNCH_GEN_CONFIG\n    \
         --container-env=TRTLLM_DISAGG_BENCHMARK_GEN_ONLY\n)\n"
    ), "{block}");
    assert!(block.contains("workerMpi=pmix\n"), "{block}");
    // gen_only: no CTX servers, queue size from the FIRST concurrency value.
    assert!(block.contains("numCtxServers=0\n"), "{block}");
    assert!(block.contains(
        "genWorkerCommand='TRTLLM_DISAGG_BENCHMARK_GEN_ONLY=1 TRTLLM_DISABLE_KV_CACHE_TRANSFER_OVERLAP=1 TLLM_BENCHMARK_REQ_QUEUES_SIZE=8 c'\n"
    ), "{block}");
    assert!(
        block
            .contains("serverCommand='TRTLLM_DISAGG_BENCHMARK_GEN_ONLY=1 c'\nbenchmarkCommand=c\n"),
        "{block}"
    );

    let script = render(
        dir.path(),
        &[
            "--config-yaml",
            "cfg.yaml",
            "--command",
            "c",
            "--srun-args",
            "plain.txt",
        ],
    );
    let block = generated_part(&script);
    assert!(
        block.contains("srunArgs=(\n    --partition=p\n)\ncontainerEnv=(\n)\n"),
        "{block}"
    );
    assert!(block.contains("workerMpi=pmi2\n"), "{block}");
}

#[test]
fn the_prefix_pytest_command_is_the_base_and_keeps_the_launcher() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_files(
        dir.path(),
        &[
            (
                "cfg.yaml",
                "hardware: {gpus_per_node: 4, num_ctx_servers: 1, num_gen_servers: 1}\nenvironment: {worker_env_var: W=1}\n",
            ),
            (
                "prefix.sh",
                "#!/bin/bash\nexport pytestCommand=\"A=\\\"x y\\\" trtllm-llmapi-launch pytest -k 'a b'\"\n",
            ),
        ],
    );
    let script = render(
        dir.path(),
        &["--config-yaml", "cfg.yaml", "--script-prefix", "prefix.sh"],
    );
    assert!(
        script.starts_with("#!/bin/bash\nexport pytestCommand="),
        "the prefix is the header"
    );
    let block = generated_part(&script);
    assert!(
        block.contains(
            "genWorkerCommand='W=1 A=\"x y\" trtllm-llmapi-launch pytest -k '\\''a b'\\'''\n\
             ctxWorkerCommand='W=1 A=\"x y\" trtllm-llmapi-launch pytest -k '\\''a b'\\'''\n"
        ),
        "{block}"
    );
    assert!(
        block.contains(
            "benchmarkCommand='A=\"x y\" trtllm-llmapi-launch pytest -k '\\''a b'\\'''\n"
        ),
        "{block}"
    );
}

/// A fake cluster: `srun` that records its options and runs the command, `scontrol` that lists
/// `FAKE_NODES`, and a `rank-launch` whose roles follow the `FAKE_*` variables.
struct FakeCluster {
    dir: tempfile::TempDir,
}

const FAKE_SRUN: &str = r#"#!/bin/bash
printf '%s\n' "$*" >>"$FAKE_SRUN_LOG"
while [[ $# -gt 0 && $1 == -* ]]; do
    case $1 in
        -N | -w) shift 2 ;;
        *) shift ;;
    esac
done
exec "$@"
"#;

/// Like Slurm's `scancel --signal=TERM JOB`: TERM to the tasks of every step, not to srun.
const FAKE_SCANCEL: &str = r#"#!/bin/bash
printf 'scancel %s\n' "$*" >>"$FAKE_SRUN_LOG"
pkill -TERM -f -- "$(dirname "$0")/rank launch" || true
"#;

const FAKE_SCONTROL: &str = r#"#!/bin/bash
[[ $1 == show && $2 == hostnames ]] || exit 1
tr ',' '\n' <<<"$FAKE_NODES"
"#;

/// Servers run until the benchmark is done. `FAKE_FAIL=ROLE:CODE` makes a role exit with CODE,
/// `FAKE_LATE=ROLE:CODE` after a second, `FAKE_LOST=ROLE` ends it as srun does when the
/// step's only node is lost (a node-failure line, exit 0), `FAKE_EARLY=ROLE` makes it exit 0 at once, `FAKE_HANG=1` makes servers ignore the end of the
/// benchmark, `FAKE_STUBBORN=1` also makes them ignore TERM, `FAKE_BENCHMARK_SECONDS` sets how
/// long the benchmark takes.
const FAKE_RANK_LAUNCH: &str = r#"#!/bin/bash
role=${DISAGG_SERVING_TYPE:-NONE}
printf 'role=%s cmd=%s\n' "$role" "${pytestCommand:-}"
if [[ ${1:-} == -- ]]; then shift; exec "$@"; fi
# Ready at once, as the real rank-launch records it in the summary of rank 0.
summary='' ready=0
while (($#)); do
    case $1 in
        --summary-json) summary=$2; shift ;;
        --ready-timeout) ready=1 ;;
    esac
    shift
done
if [[ -n $summary && $ready == 1 && ${FAKE_NOT_READY:-} != "$role" ]]; then
    file=${summary//%R/$role}
    printf '{"rank":0,"role":"%s","phase":"serving","ready_unix_us":%s}\n' "$role" "${EPOCHREALTIME/./}" >"${file//%r/0}"
fi
if [[ ${FAKE_FAIL:-} == "$role":* ]]; then sleep 0.2; exit "${FAKE_FAIL#*:}"; fi
if [[ ${FAKE_LATE:-} == "$role":* ]]; then sleep 1; exit "${FAKE_LATE#*:}"; fi
if [[ ${FAKE_LOST:-} == "$role" ]]; then sleep 0.2; echo "srun: error: Node failure on n4" >&2; exit 0; fi
if [[ ${FAKE_EARLY:-} == "$role" ]]; then exit 0; fi
if [[ $role == BENCHMARK ]]; then
    trap 'kill "$!"; exit 143' TERM
    sleep "${FAKE_BENCHMARK_SECONDS:-0.3}" &
    wait "$!"
    touch "$jobWorkspace/bench.done"
    exit 0
fi
if [[ -n ${FAKE_STUBBORN:-} ]]; then trap '' TERM; exec sleep 1001; fi
if [[ -n ${FAKE_HANG:-} ]]; then exec sleep 1000; fi
while [[ ! -e $jobWorkspace/bench.done ]]; do sleep 0.05; done
"#;

struct Outcome {
    code: i32,
    stdout: String,
    srun_log: String,
    elapsed: Duration,
}

impl FakeCluster {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let bin = dir.path().join("bin dir");
        std::fs::create_dir(&bin).expect("bin dir");
        for (name, body) in [
            ("srun", FAKE_SRUN),
            ("scontrol", FAKE_SCONTROL),
            ("scancel", FAKE_SCANCEL),
            ("rank launch", FAKE_RANK_LAUNCH),
        ] {
            let path = bin.join(name);
            std::fs::write(&path, body).expect("fake program");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .expect("executable");
        }
        write_files(
            dir.path(),
            &[
                (
                    "cfg.yaml",
                    "hardware: {gpus_per_node: 4, num_ctx_servers: 2, num_gen_servers: 1}\nworker_config: {gen: {tensor_parallel_size: 8}}\n",
                ),
                (
                    "install.sh",
                    "echo installing\nexit \"${FAKE_INSTALL_CODE:-0}\"\n",
                ),
            ],
        );
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Renders with `args` and runs the script with `env`; `term_when` sends TERM once that
    /// file of the workspace exists.
    fn run(&self, args: &[&str], env: &[(&str, &str)], term_when: Option<&str>) -> Outcome {
        let workspace = self.path("work space");
        let _ = std::fs::remove_dir_all(&workspace);
        let rank_launch = self.path("bin dir/rank launch");
        let install = self.path("install.sh");
        let mut all = vec![
            "--config-yaml",
            "cfg.yaml",
            "--command",
            "pytest -k 'a b'",
            "--workspace",
            workspace.to_str().expect("utf-8"),
            "--rank-launch",
            rank_launch.to_str().expect("utf-8"),
            "--install-sh",
            install.to_str().expect("utf-8"),
            "--drain-timeout",
            "1",
            "--stop-timeout",
            "1",
            "--cause-window",
            "2",
        ];
        all.extend(args);
        render(self.dir.path(), &all);
        let path = format!(
            "{}:{}",
            self.path("bin dir").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let start = Instant::now();
        let child = Command::new("bash")
            .arg(self.path("launch.sh"))
            .current_dir(self.dir.path())
            .env("PATH", path)
            .env("SLURM_JOB_NODELIST", "n[1-5]")
            .env("SLURM_JOB_ID", "42")
            .env("FAKE_NODES", "n1,n2,n3,n4,n5")
            .env("FAKE_SRUN_LOG", self.path("srun.log"))
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("bash runs");
        if let Some(name) = term_when {
            let trigger = workspace.join(name);
            while !trigger.exists() && start.elapsed() < Duration::from_secs(20) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let status = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .expect("kill runs");
            assert!(status.success());
        }
        let output = child.wait_with_output().expect("script ends");
        let srun_log = std::fs::read_to_string(self.path("srun.log")).unwrap_or_default();
        let _ = std::fs::remove_file(self.path("srun.log"));
        Outcome {
            code: output.status.code().expect("exit code"),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            srun_log,
            elapsed: start.elapsed(),
        }
    }

    fn log(&self, name: &str) -> String {
        self.path("work space").join(name).display().to_string()
    }
}

#[test]
fn a_passing_job_slices_nodes_runs_every_step_and_says_pass() {
    let cluster = FakeCluster::new();
    let outcome = cluster.run(&["--precheck", "--rank-check", "true"], &[], None);
    assert_eq!(outcome.code, 0, "{}", outcome.stdout);
    // The benchmark's result block, then the verdict as the last line.
    let benchmark_log = cluster.log("benchmark.log");
    assert!(
        outcome.stdout.starts_with(&format!(
            "launch-gen: benchmark result ({benchmark_log}):\n"
        )),
        "{}",
        outcome.stdout
    );
    assert!(
        outcome.stdout.ends_with("\nverdict: PASS\n"),
        "{}",
        outcome.stdout
    );
    let rank_launch = cluster.path("bin dir/rank launch").display().to_string();
    let install = cluster.path("install.sh").display().to_string();
    let expected = format!(
        "-N 4 --ntasks-per-node=1 {rank_launch} -- bash {install}\n\
         --mpi=pmix --kill-on-bad-exit=1 -N 2 -w n1,n2 --ntasks=8 --ntasks-per-node=4 true\n\
         --mpi=pmix --kill-on-bad-exit=1 -N 1 -w n3 --ntasks=1 --ntasks-per-node=1 true\n\
         --mpi=pmix --kill-on-bad-exit=1 -N 1 -w n4 --ntasks=1 --ntasks-per-node=1 true\n\
         --mpi=pmix --kill-on-bad-exit=1 -N 2 -w n1,n2 --ntasks=8 --ntasks-per-node=4 {rank_launch} --label {summary} {server} {stall} --stall-probe stopped\n\
         --mpi=pmix --kill-on-bad-exit=1 -N 1 -w n3 --ntasks=1 --ntasks-per-node=1 {rank_launch} --label {summary} {server} {stall} --stall-probe stopped\n\
         --mpi=pmix --kill-on-bad-exit=1 -N 1 -w n4 --ntasks=1 --ntasks-per-node=1 {rank_launch} --label {summary} {server} {stall} --stall-probe stopped\n\
         --kill-on-bad-exit=1 --overlap -N 1 --ntasks=1 -w n1 {rank_launch} --label {summary} {server}\n\
         --kill-on-bad-exit=1 --overlap -N 1 --ntasks=1 -w n1 {rank_launch} --label {summary} {stall}\n",
        summary = format!("--summary-json {}", cluster.log("ranks/%R.%r.json")),
        server =
            "--ready-timeout 3600s --ready-line Uvicorn running on|Application startup complete",
        stall = "--stall-timeout 600s",
    );
    // Steps started together may log in any order: compare sorted lines.
    let sorted = |text: &str| {
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        lines.sort();
        lines
    };
    assert_eq!(sorted(&outcome.srun_log), sorted(&expected));
    // Every step has its log and its sentinel; the role saw its own command.
    for step in [
        "install",
        "gen_server_0",
        "ctx_server_0",
        "ctx_server_1",
        "disagg_server",
        "benchmark",
        "precheck_gen_0",
    ] {
        assert!(
            Path::new(&cluster.log(&format!("{step}.log"))).is_file(),
            "{step}.log"
        );
        assert!(
            Path::new(&cluster.log(&format!("{step}.done"))).is_file(),
            "{step}.done"
        );
    }
    let gen_log = std::fs::read_to_string(cluster.log("gen_server_0.log")).expect("gen log");
    assert_eq!(gen_log, "role=GEN_0 cmd=pytest -k 'a b'\n");
}

#[test]
fn the_first_failure_stops_the_rest_and_names_role_code_and_log() {
    let cluster = FakeCluster::new();
    let failed = |role: &str, detail: &str, log: &str| {
        format!("verdict: FAIL ({role}: {detail}; log {log})")
    };
    let cases = [
        (
            vec![("FAKE_FAIL", "CTX_1:3")],
            3,
            failed("CTX_1", "exit 3", "ctx_server_1.log"),
        ),
        (
            vec![("FAKE_FAIL", "BENCHMARK:5")],
            5,
            failed("BENCHMARK", "exit 5", "benchmark.log"),
        ),
        // The benchmark fails first, but a server fails within the cause window: the server is
        // the root cause and the verdict names it.
        (
            vec![("FAKE_FAIL", "BENCHMARK:5"), ("FAKE_LATE", "GEN_0:134")],
            134,
            failed("GEN_0", "exit 134", "gen_server_0.log"),
        ),
        (
            vec![
                ("FAKE_FAIL", "BENCHMARK:5"),
                ("FAKE_LATE", "DISAGG_SERVER:7"),
            ],
            7,
            failed("DISAGG_SERVER", "exit 7", "disagg_server.log"),
        ),
        (
            vec![
                ("FAKE_EARLY", "DISAGG_SERVER"),
                ("FAKE_BENCHMARK_SECONDS", "30"),
            ],
            1,
            failed(
                "DISAGG_SERVER",
                "exit 0 before BENCHMARK finished",
                "disagg_server.log",
            ),
        ),
        (
            vec![("FAKE_INSTALL_CODE", "4")],
            4,
            failed("INSTALL", "exit 4", "install.log"),
        ),
        (
            vec![("FAKE_HANG", "1")],
            1,
            failed(
                "GEN_0",
                "still running 1 s after BENCHMARK passed",
                "gen_server_0.log",
            ),
        ),
        (
            vec![("FAKE_NODES", "n1,n2")],
            1,
            "verdict: FAIL (SETUP: the plan needs 4 nodes, the allocation has 2)".to_owned(),
        ),
        // A server that never gets ready: the readiness gate holds the benchmark back, the
        // server's own deadline (here: the fake's exit 75) fails the job.
        (
            vec![("FAKE_NOT_READY", "CTX_0"), ("FAKE_LATE", "CTX_0:75")],
            75,
            failed("CTX_0", "exit 75", "ctx_server_0.log"),
        ),
    ];
    for (env, code, verdict) in cases {
        let outcome = cluster.run(&[], &env, None);
        check_failure(&cluster, &env, code, &verdict, &outcome);
    }
    // The benchmark's own budget: it runs 30 s, the budget is 1 s.
    let env = [("FAKE_BENCHMARK_SECONDS", "30")];
    let outcome = cluster.run(&["--benchmark-timeout", "1"], &env, None);
    let verdict = failed("BENCHMARK", "not done after 1 s", "benchmark.log");
    check_failure(&cluster, &env, 1, &verdict, &outcome);
}

/// The job failed with `code` and the last line `verdict`, after the evidence, with its
/// records written, quickly, its running steps stopped through Slurm.
fn check_failure(
    cluster: &FakeCluster,
    env: &[(&str, &str)],
    code: i32,
    verdict: &str,
    outcome: &Outcome,
) {
    assert_eq!(
        (outcome.code, outcome.stdout.lines().last().unwrap_or("")),
        (code, verdict),
        "env {env:?}: {}",
        outcome.stdout
    );
    // The evidence comes first: the failed role's log tail.
    let role = verdict["verdict: FAIL (".len()..]
        .split(':')
        .next()
        .unwrap_or("");
    if role != "SETUP" {
        assert!(
            outcome
                .stdout
                .contains(&format!("launch-gen: evidence for {role} (")),
            "env {env:?}: {}",
            outcome.stdout
        );
    }
    let workspace = cluster.path("work space");
    if role != "SETUP" {
        for file in ["verdict.json", "junit.xml", "steps.jsonl", "phases.jsonl"] {
            assert!(workspace.join(file).is_file(), "env {env:?}: {file}");
        }
    }
    assert!(
        outcome.elapsed < Duration::from_secs(8),
        "env {env:?}: took {:?}",
        outcome.elapsed
    );
    // Running steps are stopped through Slurm, which signals their tasks.
    if outcome.srun_log.contains("rank launch --label") && !verdict.contains("SETUP") {
        assert!(
            outcome.srun_log.contains("scancel --signal=TERM 42"),
            "env {env:?}: {}",
            outcome.srun_log
        );
    }
}

#[test]
fn term_stops_every_step_and_a_stubborn_one_is_killed() {
    let cluster = FakeCluster::new();
    let outcome = cluster.run(
        &[],
        &[("FAKE_BENCHMARK_SECONDS", "30")],
        Some("benchmark.log"),
    );
    assert_eq!(
        (outcome.code, outcome.stdout.lines().last().unwrap_or("")),
        (
            143,
            "verdict: FAIL (BENCHMARK: terminated; log benchmark.log)"
        ),
        "{}",
        outcome.stdout
    );
    assert!(
        outcome.elapsed < Duration::from_secs(3),
        "took {:?}",
        outcome.elapsed
    );

    // Servers that ignore TERM are killed `--stop-timeout` (1 s) after the drain timed out.
    let outcome = cluster.run(&[], &[("FAKE_STUBBORN", "1")], None);
    assert_eq!(
        (outcome.code, outcome.stdout.lines().last().unwrap_or("")),
        (
            1,
            "verdict: FAIL (GEN_0: still running 1 s after BENCHMARK passed; log gen_server_0.log)"
        ),
        "{}",
        outcome.stdout
    );
    assert!(
        outcome.elapsed < Duration::from_secs(6),
        "took {:?}",
        outcome.elapsed
    );
    let leftovers = Command::new("pgrep")
        .args(["-f", "sleep 1000"])
        .output()
        .expect("pgrep runs");
    assert!(
        leftovers.stdout.is_empty(),
        "left running: {}",
        String::from_utf8_lossy(&leftovers.stdout)
    );
}

/// Hostile YAML values (command substitution, quotes that try to end the assignment, backticks)
/// reach the steps as text: running the generated script executes none of them.
#[test]
fn hostile_yaml_values_are_inert_in_the_generated_script() {
    let cluster = FakeCluster::new();
    let pwned = cluster.path("pwned");
    let pwned2 = cluster.path("pwned2");
    let pwned3 = cluster.path("pwned3");
    let config = format!(
        "hardware: {{gpus_per_node: 4, num_ctx_servers: 2, num_gen_servers: 1}}\n\
         worker_config: {{gen: {{tensor_parallel_size: 8}}}}\n\
         environment:\n  worker_env_var: '$(touch {})'\n  server_env_var: '\";touch {};\"'\n  \
         benchmark_env_var: '`touch {}`'\n",
        pwned.display(),
        pwned2.display(),
        pwned3.display()
    );
    std::fs::write(cluster.path("cfg.yaml"), config).expect("config");
    let outcome = cluster.run(&[], &[], None);
    assert_eq!(outcome.code, 0, "{}", outcome.stdout);
    for file in [&pwned, &pwned2, &pwned3] {
        assert!(
            !file.exists(),
            "{} was created: a YAML value ran",
            file.display()
        );
    }
    // The values reached the steps verbatim, as the start of their commands.
    let gen_log = std::fs::read_to_string(cluster.log("gen_server_0.log")).expect("gen log");
    assert!(
        gen_log.contains(&format!("cmd=$(touch {})", pwned.display())),
        "{gen_log}"
    );
    let server_log = std::fs::read_to_string(cluster.log("disagg_server.log")).expect("log");
    assert!(
        server_log.contains(&format!("cmd=\";touch {};\"", pwned2.display())),
        "{server_log}"
    );
}
