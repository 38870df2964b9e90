//! Native mode: a self-contained launch script around `rank-launch`.
//!
//! The script is three parts: a header (the script prefix when given, else `#!/bin/bash` and
//! generated `#SBATCH` lines), a block of variable assignments computed here, and the static
//! template `templates/native.sh`, which does node slicing, the steps and their supervision at
//! run time. Every value in the block goes through [`shell::quote`]; the only expansions in
//! the block are `${NAME}` references that were written in the srun argument file.
//!
//! Role commands: CTX workers run `<ucx> <mode> <worker_env_var> <ctx_worker_env_var> <base>`,
//! GEN workers the same with `gen_worker_env_var`, DISAGG_SERVER `<ucx> <mode>
//! <server_env_var> <base>`, BENCHMARK `<ucx> <benchmark_env_var> <base>` (empty parts left
//! out), where `<base>` is `--command` or the value of the prefix's `export pytestCommand=`
//! line, `<ucx>` the cluster's UCX set-up ([`crate::ucx`], e.g. `unset UCX_TLS ... && export
//! UCX_TLS=^gdr_copy &&`) and `<mode>` what the benchmark mode adds ([`crate::serving`]).
//! `trtllm-llmapi-launch` is not stripped: rank-launch removes it itself, and runs what stands
//! before it in front of the MPI leader and workers too, so the UCX and role variables reach
//! the processes that run the model.
//!
//! A `--mpi=TYPE` in the srun arguments is moved onto the worker steps only (default `pmix`).
//! Under pyxis (any `--container-...` srun argument) every variable the steps need is also
//! passed with `--container-env=NAME`; plain srun rejects that option, so it is left out there.

use std::fmt::Write as _;

use thiserror::Error;

use crate::budgets::Budgets;
use crate::config::{ConfigError, GEN_ONLY_VARIABLE, LaunchConfig};
use crate::plan::Plan;
use crate::serving::Serving;
use crate::shell::{self, Segment, ShellWordError, Word};

/// The run-time part of every native script.
pub const TEMPLATE: &str = include_str!("../templates/native.sh");

/// Variables every step reads; forwarded into pyxis containers.
const STEP_VARIABLES: [&str; 7] = [
    "DISAGG_SERVING_TYPE",
    "pytestCommand",
    "jobWorkspace",
    "numCtxServers",
    "numGenServers",
    "TRTLLM_PERF_RUN_TOKEN",
    "LAUNCH_GEN_CONFIG",
];

/// `#SBATCH` options for the generated header (used only without a script prefix).
#[derive(Debug, Clone, Copy, Default)]
pub struct SbatchOptions<'a> {
    pub job_name: Option<&'a str>,
    pub time: Option<&'a str>,
    pub partition: Option<&'a str>,
    pub account: Option<&'a str>,
    pub output: Option<&'a str>,
}

/// Everything native mode needs besides the config.
#[derive(Debug, Clone, Copy)]
pub struct NativeOptions<'a> {
    /// Absolute path of the config, exported as `LAUNCH_GEN_CONFIG`.
    pub config_path: &'a str,
    /// The script prefix text, used as the header.
    pub script_prefix: Option<&'a str>,
    /// The srun argument file's text (shell words).
    pub srun_args: &'a str,
    /// The base command; overrides the prefix's `pytestCommand`.
    pub command: Option<&'a str>,
    /// The workspace directory; default: the prefix's `jobWorkspace`, else `$SLURM_SUBMIT_DIR`.
    pub workspace: Option<&'a str>,
    /// Install script run once per node before the servers.
    pub install_sh: Option<&'a str>,
    pub rank_launch: &'a str,
    pub rank_check: &'a str,
    /// This program, run by the script for the readiness gate and the verdict.
    pub launch_gen: &'a str,
    pub budgets: &'a Budgets,
    /// What the benchmark mode does to the roles.
    pub serving: &'a Serving,
    /// The UCX set-up in front of every role command (`unset ... &&`, maybe empty).
    pub ucx: &'a str,
    pub precheck: bool,
    pub precheck_timeout: u64,
    pub stop_timeout: u64,
    pub cause_window: u64,
    pub sbatch: SbatchOptions<'a>,
}

/// Why a native script cannot be rendered.
#[derive(Debug, Error)]
pub enum NativeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot read the `export pytestCommand=` value")]
    Prefix(#[source] ShellWordError),
    #[error("cannot read the srun arguments")]
    SrunArgs(#[source] ShellWordError),
    #[error(
        "no base command: pass `--command` or a `--script-prefix` with an `export pytestCommand=` line"
    )]
    NoCommand,
    #[error("`{name}`: values cannot contain a NUL byte")]
    Nul { name: &'static str },
    #[error(
        "`{option}`: expected a value without spaces, quotes or control characters, found `{value}`"
    )]
    SbatchValue { option: &'static str, value: String },
    #[error(
        "`{option}` cannot be combined with `--script-prefix`: put the `#SBATCH` line in the prefix"
    )]
    SbatchWithPrefix { option: &'static str },
    #[error("key `hardware.num_gen_servers`: expected at least 1 in native mode, found `0`")]
    NoGenServers,
}

/// Renders the native launch script.
pub fn render(
    config: &LaunchConfig,
    plan: &Plan,
    options: &NativeOptions<'_>,
) -> Result<String, NativeError> {
    if plan.gen_server.count == 0 {
        return Err(NativeError::NoGenServers);
    }
    let mut script = header(plan, options)?;
    script.push_str(&variable_block(config, plan, options)?);
    script.push_str(TEMPLATE);
    Ok(script)
}

fn header(plan: &Plan, options: &NativeOptions<'_>) -> Result<String, NativeError> {
    let sbatch = options.sbatch;
    let extra = [
        ("--job-name", sbatch.job_name),
        ("--time", sbatch.time),
        ("--partition", sbatch.partition),
        ("--account", sbatch.account),
        ("--output", sbatch.output),
    ];
    if let Some(prefix) = options.script_prefix {
        if let Some((option, _)) = extra.iter().find(|(_, value)| value.is_some()) {
            return Err(NativeError::SbatchWithPrefix { option });
        }
        let mut header = prefix.to_owned();
        if !header.is_empty() && !header.ends_with('\n') {
            header.push('\n');
        }
        return Ok(header);
    }
    let mut header = String::from("#!/bin/bash\n");
    let _ = writeln!(header, "#SBATCH --nodes={}", plan.total_nodes);
    let _ = writeln!(header, "#SBATCH --ntasks-per-node={}", plan.gpus_per_node);
    // A lost node must not end the job before the script names the role it took down.
    header.push_str("#SBATCH --no-kill\n");
    for (option, value) in extra {
        let Some(value) = value else { continue };
        let is_bad = |c: char| c.is_whitespace() || c.is_control() || "\"'\\".contains(c);
        if value.is_empty() || value.chars().any(is_bad) {
            return Err(NativeError::SbatchValue {
                option,
                value: value.escape_debug().to_string(),
            });
        }
        let _ = writeln!(header, "#SBATCH {option}={value}");
    }
    Ok(header)
}

/// The command of each role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleCommands {
    pub ctx: String,
    pub gen_worker: String,
    pub server: String,
    pub benchmark: String,
}

/// The role commands of `config` with `options`.
pub fn role_commands(
    config: &LaunchConfig,
    options: &NativeOptions<'_>,
) -> Result<RoleCommands, NativeError> {
    let base = match options.command {
        Some(command) => command.to_owned(),
        None => options
            .script_prefix
            .and_then(|prefix| shell::find_assignment(prefix, "pytestCommand"))
            .ok_or(NativeError::NoCommand)?
            .map_err(NativeError::Prefix)?,
    };
    Ok(role_parts(config, options.serving, options.ucx, &base)?)
}

/// What stands in front of the base command in each role (`--explain` shows it).
pub fn role_prefixes(
    config: &LaunchConfig,
    serving: &Serving,
    ucx: &str,
) -> Result<RoleCommands, ConfigError> {
    role_parts(config, serving, ucx, "")
}

fn role_parts(
    config: &LaunchConfig,
    serving: &Serving,
    ucx: &str,
    base: &str,
) -> Result<RoleCommands, ConfigError> {
    let environment = &config.environment;
    let workers = environment.worker_env_var.as_str();
    Ok(RoleCommands {
        ctx: join(&[
            ucx,
            &serving.ctx,
            workers,
            &environment.worker_extra("ctx")?,
            base,
        ]),
        gen_worker: join(&[
            ucx,
            &serving.gen_worker,
            workers,
            &environment.worker_extra("gen")?,
            base,
        ]),
        server: join(&[ucx, &serving.server, &environment.server_env_var, base]),
        benchmark: join(&[ucx, &environment.benchmark_env_var, base]),
    })
}

/// Joins the non-blank parts with one space.
fn join(parts: &[&str]) -> String {
    let kept: Vec<&str> = parts
        .iter()
        .map(|part| part.trim())
        .filter(|part| !part.is_empty())
        .collect();
    kept.join(" ")
}

/// The srun arguments shared by all steps, the worker MPI type, and the pyxis env forwards.
fn srun_words(text: &str, gen_only: bool) -> Result<(Vec<Word>, String, Vec<String>), NativeError> {
    let words = shell::parse_words(text).map_err(NativeError::SrunArgs)?;
    let mut shared = Vec::new();
    let mut mpi = "pmix".to_owned();
    let mut words = words.into_iter();
    while let Some(word) = words.next() {
        let shown = word.display();
        if let Some(value) = shown.strip_prefix("--mpi=") {
            value.clone_into(&mut mpi);
        } else if shown == "--mpi" {
            if let Some(value) = words.next() {
                mpi = value.display();
            }
        } else {
            shared.push(word);
        }
    }
    let shown: Vec<String> = shared.iter().map(Word::display).collect();
    let mut forwards = Vec::new();
    if shown.iter().any(|arg| arg.starts_with("--container-")) {
        let gen_only_variable = gen_only.then_some(GEN_ONLY_VARIABLE);
        for name in STEP_VARIABLES.into_iter().chain(gen_only_variable) {
            let forward = format!("--container-env={name}");
            if !shown.contains(&forward) {
                forwards.push(forward);
            }
        }
    }
    Ok((shared, mpi, forwards))
}

/// Precedes an assignment whose single-quoted value holds `$` or a backtick on purpose:
/// shellcheck's SC2016 would otherwise suggest expanding it.
const LITERAL_DIRECTIVE: &str =
    "# shellcheck disable=SC2016 # a literal `$` or backtick, not expanded here\n";

fn has_expansion_chars(value: &str) -> bool {
    value.contains(['$', '`'])
}

fn variable_block(
    config: &LaunchConfig,
    plan: &Plan,
    options: &NativeOptions<'_>,
) -> Result<String, NativeError> {
    let commands = role_commands(config, options)?;
    let gen_only_variable = options.serving.gen_only_variable;
    let (srun_args, mpi, forwards) = srun_words(options.srun_args, gen_only_variable)?;
    let flag = |on: bool| if on { "1" } else { "0" }.to_owned();
    let (gen_server, ctx_server) = (plan.gen_server, plan.ctx_server);
    let mut values: Vec<(&'static str, String)> = vec![
        ("launchGenConfig", options.config_path.to_owned()),
        ("numGenServers", gen_server.count.to_string()),
        ("nodesPerGenServer", gen_server.nodes.to_string()),
        ("tasksPerGenServer", gen_server.gpus.to_string()),
        ("tasksPerNodeGen", gen_server.tasks_per_node.to_string()),
        ("numCtxServers", ctx_server.count.to_string()),
        ("nodesPerCtxServer", ctx_server.nodes.to_string()),
        ("tasksPerCtxServer", ctx_server.gpus.to_string()),
        ("tasksPerNodeCtx", ctx_server.tasks_per_node.to_string()),
        ("totalNodes", plan.total_nodes.to_string()),
        ("genOnly", flag(gen_only_variable)),
        ("workerMpi", mpi),
        ("rankLaunch", options.rank_launch.to_owned()),
        ("rankCheck", options.rank_check.to_owned()),
        ("launchGen", options.launch_gen.to_owned()),
        (
            "installScript",
            options.install_sh.unwrap_or_default().to_owned(),
        ),
        ("runPrecheck", flag(options.precheck)),
        ("precheckTimeout", options.precheck_timeout.to_string()),
        (
            "readyTimeout",
            options.budgets.servers_ready.secs.to_string(),
        ),
        (
            "benchmarkTimeout",
            options.budgets.benchmark.secs.to_string(),
        ),
        ("stallTimeout", options.budgets.stall.secs.to_string()),
        ("drainTimeout", options.budgets.drain.secs.to_string()),
        ("readyLine", options.budgets.ready_line.clone()),
        ("stopTimeout", options.stop_timeout.to_string()),
        ("causeWindow", options.cause_window.to_string()),
        ("genWorkerCommand", commands.gen_worker),
        ("ctxWorkerCommand", commands.ctx),
        ("serverCommand", commands.server),
        ("benchmarkCommand", commands.benchmark),
    ];
    if let Some(workspace) = options.workspace {
        values.push(("jobWorkspace", workspace.to_owned()));
    }

    // A prefix may have turned on xtrace: the values below need not be echoed into the job log.
    let mut block = String::from(
        "\n# --- generated by launch-gen (native mode): shell-quoted values, regenerate to change ---\n\
         { set +x; } 2>/dev/null\n",
    );
    for (name, value) in &values {
        if value.contains('\0') {
            return Err(NativeError::Nul { name });
        }
        if has_expansion_chars(value) {
            block.push_str(LITERAL_DIRECTIVE);
        }
        let _ = writeln!(block, "{name}={}", shell::quote(value));
    }
    let literal_expansion =
        srun_args
            .iter()
            .flat_map(|word| &word.0)
            .any(|segment| match segment {
                Segment::Literal(text) => has_expansion_chars(text),
                Segment::Var(_) => false,
            });
    if literal_expansion {
        block.push_str(LITERAL_DIRECTIVE);
    }
    block.push_str("srunArgs=(\n");
    for word in &srun_args {
        let _ = writeln!(block, "    {}", word.to_shell());
    }
    block.push_str(")\ncontainerEnv=(\n");
    for forward in &forwards {
        let _ = writeln!(block, "    {}", shell::quote(forward));
    }
    block.push_str(")\n\n");
    Ok(block)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn srun_words_move_mpi_to_workers_and_forward_env_under_pyxis() {
        let (shared, mpi, forwards) = srun_words(
            "--container-name=x-${SLURM_JOB_ID} --mpi=pmix_v4 --container-env=pytestCommand",
            false,
        )
        .expect("valid");
        let shown: Vec<String> = shared.iter().map(Word::display).collect();
        assert_eq!(
            shown,
            [
                "--container-name=x-${SLURM_JOB_ID}",
                "--container-env=pytestCommand"
            ]
        );
        assert_eq!(mpi, "pmix_v4");
        assert_eq!(
            forwards.len(),
            STEP_VARIABLES.len() - 1,
            "existing forwards are not repeated"
        );

        let (_, mpi, forwards) = srun_words("--mpi pmi2 --partition=a", true).expect("valid");
        assert_eq!(mpi, "pmi2");
        assert!(forwards.is_empty(), "plain srun rejects --container-env");
    }

    #[test]
    fn join_leaves_out_empty_parts() {
        assert_eq!(join(&["", "  ", "A=1", " pytest x "]), "A=1 pytest x");
    }
}
