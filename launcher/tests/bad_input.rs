//! The bad-input catalog of rank-launch: garbage and contradictory rank variables, bad roles,
//! missing commands, bad options. Every case exits 2 before starting anything, prints exactly
//! one line on stderr naming the input, nothing on stdout, and never panics.
//! (launch-gen's catalog is `generator/tests/it/errors.rs`.)

mod common;

use std::collections::BTreeMap;
use std::process::Stdio;

use common::{base_env, rank_launch_command, srun_env};

struct Case {
    name: &'static str,
    args: Vec<&'static str>,
    env: BTreeMap<String, String>,
    /// A part of the one stderr line: the variable, option or value it names.
    names: &'static str,
}

fn with(mut env: BTreeMap<String, String>, pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    for (k, v) in pairs {
        env.insert((*k).into(), (*v).into());
    }
    env
}

fn without(mut env: BTreeMap<String, String>, keys: &[&str]) -> BTreeMap<String, String> {
    for k in keys {
        env.remove(*k);
    }
    env
}

fn ompi(rank: &str, size: &str, local: &str, local_size: &str) -> BTreeMap<String, String> {
    with(
        base_env(),
        &[
            ("OMPI_COMM_WORLD_RANK", rank),
            ("OMPI_COMM_WORLD_SIZE", size),
            ("OMPI_COMM_WORLD_LOCAL_RANK", local),
            ("OMPI_COMM_WORLD_LOCAL_SIZE", local_size),
        ],
    )
}

fn catalog() -> Vec<Case> {
    let run = vec!["--", "true"];
    let c = |name, args: &[&'static str], env, names| Case {
        name,
        args: args.to_vec(),
        env,
        names,
    };
    vec![
        // Rank variables: garbage.
        c(
            "rank beyond the step",
            &run,
            with(srun_env(0, 4), &[("SLURM_PROCID", "7")]),
            "`SLURM_PROCID`=7",
        ),
        c(
            "rank not a number",
            &run,
            with(srun_env(0, 4), &[("SLURM_PROCID", "abc")]),
            "`SLURM_PROCID` is `abc`",
        ),
        c(
            "negative rank",
            &run,
            with(srun_env(0, 4), &[("SLURM_PROCID", "-1")]),
            "`SLURM_PROCID` is `-1`",
        ),
        c(
            "rank with a sign",
            &run,
            with(srun_env(0, 4), &[("SLURM_PROCID", "+1")]),
            "`SLURM_PROCID` is `+1`",
        ),
        c(
            "rank in hex",
            &run,
            with(srun_env(0, 4), &[("SLURM_PROCID", "0x1")]),
            "`SLURM_PROCID` is `0x1`",
        ),
        c(
            "rank overflowing",
            &run,
            with(srun_env(0, 4), &[("SLURM_PROCID", "99999999999999999999")]),
            "`SLURM_PROCID`",
        ),
        c(
            "rank in Arabic-Indic digits",
            &run,
            with(srun_env(0, 4), &[("SLURM_PROCID", "٣")]),
            "`SLURM_PROCID` is `٣`",
        ),
        c(
            "rank with a control character",
            &run,
            with(srun_env(0, 4), &[("SLURM_PROCID", "1\u{7}")]),
            "`SLURM_PROCID`",
        ),
        c(
            "empty rank",
            &run,
            with(srun_env(0, 4), &[("SLURM_PROCID", "")]),
            "`SLURM_PROCID` is ``",
        ),
        c(
            "step with zero tasks",
            &run,
            with(srun_env(0, 4), &[("SLURM_STEP_NUM_TASKS", "0")]),
            "`SLURM_STEP_NUM_TASKS` is `0`",
        ),
        c(
            "tasks per node garbage",
            &run,
            with(srun_env(0, 4), &[("SLURM_STEP_TASKS_PER_NODE", "2(x2")]),
            "`SLURM_STEP_TASKS_PER_NODE` is `2(x2`",
        ),
        c(
            "tasks per node with a zero",
            &run,
            with(srun_env(0, 4), &[("SLURM_STEP_TASKS_PER_NODE", "4,0")]),
            "`SLURM_STEP_TASKS_PER_NODE` is `4,0`",
        ),
        c(
            "tasks per node binary junk",
            &run,
            with(
                srun_env(0, 4),
                &[("SLURM_STEP_TASKS_PER_NODE", "\u{1}\u{2}\u{fffd}")],
            ),
            "`SLURM_STEP_TASKS_PER_NODE`",
        ),
        c(
            "missing local id in a step",
            &run,
            without(srun_env(0, 4), &["SLURM_LOCALID"]),
            "`SLURM_LOCALID` is missing",
        ),
        c(
            "missing tasks per node in a step",
            &run,
            without(srun_env(0, 4), &["SLURM_STEP_TASKS_PER_NODE"]),
            "`SLURM_STEP_TASKS_PER_NODE` is missing",
        ),
        c(
            "Open MPI rank without size",
            &run,
            without(ompi("0", "2", "0", "2"), &["OMPI_COMM_WORLD_SIZE"]),
            "`OMPI_COMM_WORLD_SIZE` is missing",
        ),
        c(
            "Open MPI size zero",
            &run,
            ompi("0", "0", "0", "1"),
            "`OMPI_COMM_WORLD_SIZE` is `0`",
        ),
        c(
            "Hydra rank without local rank",
            &run,
            with(base_env(), &[("PMI_RANK", "1"), ("PMI_SIZE", "2")]),
            "`MPI_LOCALRANKID` is missing",
        ),
        c(
            "PMIx rank alone",
            &run,
            with(base_env(), &[("PMIX_RANK", "3")]),
            "`PMIX_RANK`",
        ),
        // Rank variables: contradictions.
        c(
            "tasks per node disagree with the step",
            &run,
            with(srun_env(0, 4), &[("SLURM_STEP_TASKS_PER_NODE", "3")]),
            "contradicts `SLURM_STEP_NUM_TASKS`",
        ),
        c(
            "node count disagrees",
            &run,
            with(srun_env(0, 4), &[("SLURM_STEP_NUM_NODES", "2")]),
            "contradicts `SLURM_STEP_NUM_NODES`",
        ),
        c(
            "PMIx rank disagrees with Slurm",
            &run,
            with(srun_env(1, 4), &[("PMIX_RANK", "2")]),
            "`PMIX_RANK`=2 contradicts `SLURM_PROCID`=1",
        ),
        c(
            "PMI-2 size disagrees with Slurm",
            &run,
            with(srun_env(1, 4), &[("PMI_RANK", "1"), ("PMI_SIZE", "8")]),
            "`PMI_SIZE`=8 contradicts",
        ),
        c(
            "local rank beyond the node",
            &run,
            with(srun_env(1, 4), &[("SLURM_LOCALID", "9")]),
            "`SLURM_LOCALID`=9 contradicts",
        ),
        c(
            "Open MPI local size above the world",
            &run,
            ompi("1", "2", "1", "4"),
            "`OMPI_COMM_WORLD_LOCAL_SIZE`=4 contradicts",
        ),
        c(
            "Open MPI rank beyond the world",
            &run,
            ompi("2", "2", "0", "1"),
            "`OMPI_COMM_WORLD_RANK`=2 is out of range",
        ),
        // Roles.
        c(
            "role in lower case",
            &run,
            with(base_env(), &[("DISAGG_SERVING_TYPE", "gen_0")]),
            "`DISAGG_SERVING_TYPE` is `gen_0`",
        ),
        c(
            "role without an index",
            &run,
            with(base_env(), &[("DISAGG_SERVING_TYPE", "CTX_")]),
            "`DISAGG_SERVING_TYPE` is `CTX_`",
        ),
        c(
            "empty role",
            &run,
            with(base_env(), &[("DISAGG_SERVING_TYPE", "")]),
            "`DISAGG_SERVING_TYPE` is ``",
        ),
        c(
            "role with full-width digits",
            &run,
            with(base_env(), &[("DISAGG_SERVING_TYPE", "GEN_０")]),
            "`DISAGG_SERVING_TYPE` is `GEN_０`",
        ),
        c(
            "role with a trailing newline",
            &run,
            with(base_env(), &[("DISAGG_SERVING_TYPE", "GEN_0\n")]),
            "`DISAGG_SERVING_TYPE`",
        ),
        c(
            "unknown role",
            &run,
            with(base_env(), &[("DISAGG_SERVING_TYPE", "ROUTER")]),
            "`DISAGG_SERVING_TYPE` is `ROUTER`",
        ),
        // Commands.
        c("no command at all", &[], base_env(), "`pytestCommand`"),
        c(
            "blank pytestCommand",
            &[],
            with(base_env(), &[("pytestCommand", " \t ")]),
            "`pytestCommand`",
        ),
        c(
            "only trtllm-llmapi-launch",
            &["--", "/x/trtllm-llmapi-launch"],
            base_env(),
            "`trtllm-llmapi-launch`",
        ),
        c(
            "rank 0 of the MPI path with no command",
            &["mpi"],
            srun_env(0, 2),
            "`pytestCommand`",
        ),
        // Options.
        c(
            "grace period not a duration",
            &["--grace-period", "soon", "--", "true"],
            base_env(),
            "'--grace-period <DURATION>'",
        ),
        c(
            "negative grace period",
            &["--grace-period=-1", "--", "true"],
            base_env(),
            "'--grace-period <DURATION>'",
        ),
        c(
            "install timeout in hours",
            &["--install-timeout", "1h", "--", "true"],
            base_env(),
            "'--install-timeout <DURATION>'",
        ),
        c(
            "grace period from the environment",
            &run,
            with(base_env(), &[("RANK_LAUNCH_GRACE_PERIOD", "NaN")]),
            "'--grace-period <DURATION>'",
        ),
        c(
            "unknown option",
            &["--frobnicate", "--", "true"],
            base_env(),
            "'--frobnicate'",
        ),
        c(
            "working directory missing",
            &["--chdir", "/nonexistent/dir", "--", "true"],
            base_env(),
            "`--chdir /nonexistent/dir`",
        ),
        c(
            "IPC port out of range",
            &run,
            with(
                srun_env(0, 2),
                &[
                    ("DISAGG_SERVING_TYPE", "GEN_0"),
                    ("TLLM_SPAWN_PROXY_PROCESS_IPC_PORT", "70000"),
                ],
            ),
            "`TLLM_SPAWN_PROXY_PROCESS_IPC_PORT` is `70000`",
        ),
        c(
            "IPC port not a number",
            &run,
            with(
                srun_env(0, 2),
                &[
                    ("DISAGG_SERVING_TYPE", "CTX_0"),
                    ("TLLM_SPAWN_PROXY_PROCESS_IPC_PORT", "http"),
                ],
            ),
            "`TLLM_SPAWN_PROXY_PROCESS_IPC_PORT` is `http`",
        ),
        c(
            "ready timeout without a probe",
            &["--ready-timeout", "5s", "--", "true"],
            base_env(),
            "`--ready-timeout` needs a probe",
        ),
        c(
            "ready probe without a timeout",
            &["--ready-line", "up", "--", "true"],
            base_env(),
            "needs `--ready-timeout`",
        ),
        c(
            "two ready probes",
            &[
                "--ready-timeout",
                "5",
                "--ready-line",
                "up",
                "--ready-file",
                "/tmp/x",
                "--",
                "true",
            ],
            base_env(),
            "alternatives",
        ),
        c(
            "ready line not a regular expression",
            &[
                "--ready-timeout",
                "5",
                "--ready-line",
                "(unclosed",
                "--",
                "true",
            ],
            base_env(),
            "`--ready-line` is `(unclosed`",
        ),
        c(
            "ready URL with a host name",
            &[
                "--ready-timeout",
                "5",
                "--ready-url",
                "http://node1:8000/health",
                "--",
                "true",
            ],
            base_env(),
            "`--ready-url` `http://node1:8000/health`",
        ),
        c(
            "zero stall timeout",
            &["--stall-timeout", "0", "--", "true"],
            base_env(),
            "`--stall-timeout` is 0",
        ),
        c(
            "stall probe without a timeout",
            &["--stall-probe", "stopped", "--", "true"],
            base_env(),
            "`--stall-probe` needs `--stall-timeout`",
        ),
        c(
            "unknown stall probe",
            &["--stall-timeout", "5", "--stall-probe", "cpu", "--", "true"],
            base_env(),
            "`cpu`: expected `output`",
        ),
        c(
            "whoami on garbage",
            &["whoami", "--json"],
            with(srun_env(0, 4), &[("SLURM_NODEID", "x")]),
            "`SLURM_NODEID` is `x`",
        ),
    ]
}

#[test]
fn every_bad_input_exits_2_with_one_line_naming_it() {
    let cases = catalog();
    assert!(cases.len() >= 40, "the catalog has {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let out = rank_launch_command()
            .args(&case.args)
            .env_clear()
            .envs(&case.env)
            .stdin(Stdio::null())
            .output()
            .expect("run rank-launch");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        let mut problems = Vec::new();
        if out.status.code() != Some(2) {
            problems.push(format!("exit {:?}", out.status.code()));
        }
        if lines.len() != 1 {
            problems.push(format!("{} stderr lines", lines.len()));
        }
        if !stderr.contains(case.names) {
            problems.push(format!("stderr does not name `{}`", case.names));
        }
        if stderr.contains("panicked") || stderr.contains("RUST_BACKTRACE") {
            problems.push("panicked".into());
        }
        if !out.stdout.is_empty() {
            problems.push("wrote to stdout".into());
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{}: {}\n  stderr: {stderr}",
                case.name,
                problems.join(", ")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
