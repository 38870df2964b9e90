//! `--explain` tables and `--submit` through a fake `sbatch`.

use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;

use crate::{file_name, launch_gen, real_configs, write_files};

#[test]
fn explain_prints_the_plan_and_the_node_slices() {
    let config = real_configs()
        .into_iter()
        .find(|path| path.to_string_lossy().contains("gb200_deepseek"))
        .expect("config");
    let dir = config.parent().expect("configs dir");
    let name = file_name(&config);
    let run = launch_gen(
        dir,
        [
            "--config-yaml",
            &name,
            "--explain",
            "--nodelist",
            "node[01-07]",
        ],
    );
    assert_eq!((run.code, run.stderr.as_str()), (0, ""));
    let expected = format!(
        "plan for `{name}` (mode `e2e`, 4 GPUs per node)

server         count  GPUs each  nodes each  tasks per node  nodes  GPUs
GEN                1         16           4               4      4    16
CTX                2          4           1               4      2     8
DISAGG_SERVER      1          -           -               1      -     -
BENCHMARK          1          -           -               1      -     -
total                                                            6    24

GPUs: 24 allocated (6 nodes x 4), 24 used by servers

node slices (7 nodes given):
  GEN_0          node01,node02,node03,node04
  CTX_0          node05
  CTX_1          node06
  DISAGG_SERVER  node01 (--overlap)
  BENCHMARK      node01 (--overlap)
  unused         node07

mode: config mode `e2e`; context servers run
UCX: left as the environment has it (no `--cluster-name` or `--ucx-rules`)

in front of the command (UCX, mode, `environment`):
  GEN            TLLM_LOG_LEVEL=INFO TRTLLM_SERVER_DISABLE_GC=1 TRTLLM_WORKER_DISABLE_GC=1 TRTLLM_ENABLE_PDL=1 ENROOT_ALLOW_DEV=yes TLLM_SPEC_DECODE_FORCE_NUM_ACCEPTED_TOKENS=3
  CTX            TLLM_LOG_LEVEL=INFO TRTLLM_SERVER_DISABLE_GC=1 TRTLLM_WORKER_DISABLE_GC=1 TRTLLM_ENABLE_PDL=1 ENROOT_ALLOW_DEV=yes TLLM_SPEC_DECODE_FORCE_NUM_ACCEPTED_TOKENS=3
  DISAGG_SERVER  TRTLLM_SERVER_DISABLE_GC=1
  BENCHMARK      (nothing)

budgets (a role that overruns one fails the job, naming it):
  servers ready    3600 s  default: slurm_run's cross-node rank barrier waits 3600 s for every rank
  benchmark        7200 s  default: the perf test's DEFAULT_TIMEOUT, 7200 s, bounds its waits for the servers and the status file
  stall             600 s  default: later instances wait 600 s for the first instance's config before they give up
  drain             120 s  default: launch-gen's own drain window; the reference has none (its servers wait for the status file)
  ready line     /Uvicorn running on|Application startup complete/  default: uvicorn's start-up lines (trtllm-serve runs on uvicorn)
"
    );
    assert_eq!(run.stdout, expected);
}

#[test]
fn explain_shows_where_each_budget_comes_from() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_files(
        dir.path(),
        &[(
            "cfg.yaml",
            "hardware: {gpus_per_node: 4, num_ctx_servers: 1, num_gen_servers: 1}\n\
             budgets: {servers_ready: 1800, stall: 300}\n",
        )],
    );
    let run = launch_gen(
        dir.path(),
        [
            "--config-yaml",
            "cfg.yaml",
            "--explain",
            "--stall-timeout",
            "60",
        ],
    );
    assert_eq!((run.code, run.stderr.as_str()), (0, ""));
    for line in [
        "  servers ready    1800 s  from config `budgets.servers_ready`",
        "  stall              60 s  from --stall-timeout",
        "  drain             120 s  default: ",
    ] {
        assert!(run.stdout.contains(line), "{line}\n{}", run.stdout);
    }
    // A bad budget is bad input naming its key; compatibility mode ignores the section.
    write_files(
        dir.path(),
        &[(
            "bad.yaml",
            "hardware: {gpus_per_node: 4, num_ctx_servers: 1, num_gen_servers: 1}\nbudgets: {stall: 0}\n",
        )],
    );
    let run = launch_gen(dir.path(), ["--config-yaml", "bad.yaml", "--explain"]);
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(
        run.stderr
            .contains("key `budgets.stall`: expected a positive whole number of seconds"),
        "{}",
        run.stderr
    );
}

#[test]
fn explain_of_every_real_config_matches_its_snapshot() {
    for config in real_configs() {
        let dir = config.parent().expect("configs dir");
        let name = file_name(&config);
        let run = launch_gen(dir, ["--config-yaml", &name, "--explain"]);
        assert_eq!((run.code, run.stderr.as_str()), (0, ""), "{name}");
        insta::assert_snapshot!(format!("explain-{name}"), run.stdout);
    }
}

#[test]
fn explain_with_launch_sh_also_writes_the_script() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_files(
        dir.path(),
        &[(
            "cfg.yaml",
            "hardware: {gpus_per_node: 2, num_ctx_servers: 1, num_gen_servers: 1}\n",
        )],
    );
    let run = launch_gen(
        dir.path(),
        [
            "--config-yaml",
            "cfg.yaml",
            "--command",
            "c",
            "--explain",
            "--launch-sh",
            "out.sh",
        ],
    );
    assert_eq!((run.code, run.stderr.as_str()), (0, ""));
    assert!(run.stdout.starts_with("plan for `cfg.yaml`"));
    assert!(dir.path().join("out.sh").is_file());
}

#[test]
fn submit_runs_sbatch_and_prints_the_job_id() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bin = dir.path().join("bin");
    write_files(
        dir.path(),
        &[
            (
                "cfg.yaml",
                "hardware: {gpus_per_node: 2, num_ctx_servers: 1, num_gen_servers: 1}\n",
            ),
            (
                "bin/sbatch",
                "#!/bin/bash\n[[ $1 == --parsable && -f $2 ]] || exit 9\nif [[ -n ${FAIL:-} ]]; then echo 'sbatch: error: Batch job submission failed: Invalid partition' >&2; exit 1; fi\necho '4242;cluster'\n",
            ),
        ],
    );
    std::fs::set_permissions(bin.join("sbatch"), std::fs::Permissions::from_mode(0o755))
        .expect("executable");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let submit = |env: &[(&str, &str)]| {
        let args = [
            "--config-yaml",
            "cfg.yaml",
            "--command",
            "c",
            "--launch-sh",
            "out.sh",
            "--submit",
        ];
        let output = Command::new(env!("CARGO_BIN_EXE_launch-gen"))
            .args(args)
            .current_dir(dir.path())
            .env("PATH", &path)
            .envs(env.iter().copied())
            .output()
            .expect("launch-gen runs");
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        (
            output.status.code().expect("exit code"),
            text(&output.stdout),
            text(&output.stderr),
        )
    };
    assert_eq!(submit(&[]), (0, "4242\n".to_owned(), String::new()));
    let refused = "error: `sbatch` failed (exit status: 1): sbatch: error: Batch job submission failed: Invalid partition\n";
    assert_eq!(
        submit(&[("FAIL", "1")]),
        (1, String::new(), refused.to_owned())
    );
    let missing = "error: cannot run `sbatch`: no such file or directory\n";
    assert_eq!(
        submit(&[("PATH", "/nonexistent")]),
        (1, String::new(), missing.to_owned())
    );
}
