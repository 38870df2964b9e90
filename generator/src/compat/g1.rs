//! Compatibility mode: the launch script of the reference `submit.py` (G1, `@0c8de69a1ca6`).
//!
//! The output is byte-identical to the reference's for every input it accepts, so this module
//! keeps its quirks on purpose (reference-flow sections 2.2 and 8):
//!
//! - the prefix is split on `\n` and re-joined, so its trailing newline becomes a blank line,
//!   and blank or indented lines are kept (the reference's cleanup result is discarded, B2);
//! - `pytestCommandNoLLMAPILaunch` is the first line containing `export pytestCommand=` with
//!   `pytestCommand` renamed everywhere in it, split on whitespace, every token *containing*
//!   `trtllm-llmapi-launch` dropped and re-joined with single spaces (B3, B4); the line is
//!   empty when the prefix has no such line;
//! - empty environment prefixes leave their separator space (`" $pytestCommandNoLLMAPILaunch"`);
//! - srun arguments are split on whitespace and wrapped in `"..."` without escaping, so
//!   `${SLURM_JOB_ID}` expands when the script runs;
//! - a mode containing `gen_only` (also `gen_only_no_context`) drops the context servers.
//!
//! One deliberate difference: the reference crashes on `concurrency_list: 512 1075`; here it is
//! a list and `gen_only` sizes the request queues for its FIRST value.

use crate::config::{ConfigError, GEN_ONLY_VARIABLE, LaunchConfig};
use crate::plan::Plan;
use crate::pytext;

/// Marks the prefix line that holds the base pytest command.
const PYTEST_EXPORT: &str = "export pytestCommand=";
/// Tokens containing this are dropped from the non-worker command.
const LLMAPI_LAUNCH: &str = "trtllm-llmapi-launch";

/// The text inputs of one generation, as read from the files (not yet newline-translated).
#[derive(Debug, Clone, Copy, Default)]
pub struct CompatInputs<'a> {
    /// `--script-prefix` content (`""` when not given).
    pub script_prefix: &'a str,
    /// `--srun-args` content (`""` when not given).
    pub srun_args: &'a str,
    /// `--draft-launch-sh` content.
    pub draft: &'a str,
    /// `--run-sh`, a path on the node.
    pub run_sh: &'a str,
    /// `--install-sh`, a path on the node.
    pub install_sh: &'a str,
}

/// Renders the launch script exactly as the reference does.
pub fn render(
    config: &LaunchConfig,
    plan: &Plan,
    inputs: &CompatInputs<'_>,
) -> Result<String, ConfigError> {
    let prefix = pytext::universal_newlines(inputs.script_prefix);
    let mut lines: Vec<String> = prefix.split('\n').map(str::to_owned).collect();
    let no_llmapi_launch = no_llmapi_launch_line(&lines);
    let mut srun_args: Vec<String> = pytext::split(&pytext::universal_newlines(inputs.srun_args))
        .map(str::to_owned)
        .collect();

    let environment = &config.environment;
    let mut worker_env = environment.worker_env_var.clone();
    let mut server_env = environment.server_env_var.clone();
    if let Some((worker_prefix, server_prefix)) = config.benchmark.gen_only_prefixes()? {
        worker_env = format!("{worker_prefix} {worker_env}");
        server_env = format!("{server_prefix} {server_env}");
        lines.push(format!("export {GEN_ONLY_VARIABLE}=1"));
        srun_args.push(format!("--container-env={GEN_ONLY_VARIABLE}"));
    }

    lines.push(no_llmapi_launch);
    lines.push(format!(
        "export pytestCommandWorker=\"unset UCX_TLS && {worker_env} $pytestCommand\""
    ));
    lines.push(format!(
        "export pytestCommandDisaggServer=\"{server_env} $pytestCommandNoLLMAPILaunch\""
    ));
    lines.push(format!(
        "export pytestCommandBenchmark=\"{} $pytestCommandNoLLMAPILaunch\"",
        environment.benchmark_env_var
    ));
    lines.push(format!("export runScript={}", inputs.run_sh));
    lines.push(format!("export installScript={}", inputs.install_sh));
    let (gen_server, ctx_server) = (plan.gen_server, plan.ctx_server);
    let numbers = [
        ("numCtxServers", ctx_server.count),
        ("numGenServers", gen_server.count),
        ("gpusPerNode", plan.gpus_per_node),
        ("gpusPerCtxServer", ctx_server.gpus),
        ("gpusPerGenServer", gen_server.gpus),
        ("nodesPerCtxServer", ctx_server.nodes),
        ("nodesPerGenServer", gen_server.nodes),
        ("totalNodes", plan.total_nodes),
        ("totalGpus", plan.total_gpus),
    ];
    lines.extend(
        numbers
            .iter()
            .map(|(name, value)| format!("export {name}={value}")),
    );

    srun_args.push("--container-env=DISAGG_SERVING_TYPE".to_owned());
    srun_args.push("--container-env=pytestCommand".to_owned());
    let mut srun_block = String::from("srunArgs=(\n");
    for arg in &srun_args {
        srun_block.push_str(&format!("  \"{arg}\"\n"));
    }
    srun_block.push(')');

    let draft = pytext::universal_newlines(inputs.draft);
    Ok(format!("{}\n{srun_block}\n{draft}", lines.join("\n")))
}

/// What the reference prints on stdout: its three configuration dicts (Python `repr`s of what
/// it read, in its key order), where it wrote the script, and the script.
pub fn stdout_report(config: &LaunchConfig, plan: &Plan, launch_sh: &str, script: &str) -> String {
    use serde_norway::Value;
    let get = |section: &str, key: &str| -> Option<&Value> {
        config.raw.get(section).and_then(|s| s.get(key))
    };
    let text_or_empty = |section: &str, key: &str| {
        get(section, key).map_or_else(|| "''".to_owned(), pytext::repr_value)
    };
    let env_keys = [
        ("container", "container_image"),
        ("mounts", "container_mount"),
        ("workdir", "container_workdir"),
        ("llm_models_root", "llm_models_root"),
        ("llmsrc", "trtllm_repo"),
        ("build_wheel", "build_wheel"),
        ("job_workspace", "work_dir"),
        ("worker_env_var", "worker_env_var"),
        ("server_env_var", "server_env_var"),
        ("benchmark_env_var", "benchmark_env_var"),
        ("open_search_db_base_url", "open_search_db_base_url"),
    ];
    let environment: Vec<String> = env_keys
        .iter()
        .map(|(name, key)| {
            let value = if *key == "build_wheel" {
                get("environment", key).map_or_else(|| "False".to_owned(), pytext::repr_value)
            } else {
                text_or_empty("environment", key)
            };
            format!("'{name}': {value}")
        })
        .collect();
    let mode = get("benchmark", "mode").map_or_else(|| "'e2e'".to_owned(), pytext::repr_value);
    // `int(text)` for a string (the first value where the reference would fail on several).
    let concurrency = match get("benchmark", "concurrency_list") {
        None => "1".to_owned(),
        Some(Value::String(_)) => config
            .benchmark
            .concurrency
            .as_ref()
            .and_then(|list| list.first())
            .map_or_else(|| "1".to_owned(), u64::to_string),
        Some(other) => pytext::repr_value(other),
    };
    let (gen_server, ctx_server) = (plan.gen_server, plan.ctx_server);
    let hardware = [
        ("num_ctx_servers", ctx_server.count),
        ("num_gen_servers", gen_server.count),
        ("gpus_per_node", plan.gpus_per_node),
        ("gpus_per_ctx_server", ctx_server.gpus),
        ("gpus_per_gen_server", gen_server.gpus),
        ("nodes_per_ctx_server", ctx_server.nodes),
        ("nodes_per_gen_server", gen_server.nodes),
        ("total_nodes", plan.total_nodes),
        ("total_gpus", plan.total_gpus),
    ]
    .map(|(name, value)| format!("'{name}': {value}"));
    format!(
        "Environment configuration: {{{}}}\nBenchmark configuration: {{'mode': {mode}, 'concurrency': {concurrency}}}\nHardware configuration: {{{}}}\nLaunch script generated at: {launch_sh}\nLaunch script:\n{script}\n",
        environment.join(", "),
        hardware.join(", ")
    )
}

/// The reference's `get_pytest_command_no_llmapilaunch` (see the module docs).
fn no_llmapi_launch_line(lines: &[String]) -> String {
    let Some(line) = lines.iter().find(|line| line.contains(PYTEST_EXPORT)) else {
        return String::new();
    };
    let renamed = line.replace("pytestCommand", "pytestCommandNoLLMAPILaunch");
    let kept: Vec<&str> = pytext::split(&renamed)
        .filter(|token| !token.contains(LLMAPI_LAUNCH))
        .collect();
    kept.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.split('\n').map(str::to_owned).collect()
    }

    #[test]
    fn no_llmapi_launch_line_follows_the_reference_rule() {
        let cases = [
            // Runs of whitespace collapse and the quote rides on the first and last token.
            (
                "export pytestCommand=\"A=1  /x/trtllm-llmapi-launch   pytest -k 'a b'\"",
                "export pytestCommandNoLLMAPILaunch=\"A=1 pytest -k 'a b'\"",
            ),
            // Indented and repeated names: every occurrence in the line is renamed.
            (
                "  export pytestCommand=\"$pytestCommand x\"",
                "export pytestCommandNoLLMAPILaunch=\"$pytestCommandNoLLMAPILaunch x\"",
            ),
            // A token merely containing the launcher's name is dropped whole, even the one that
            // carries the variable name and the opening quote.
            (
                "export pytestCommand=\"trtllm-llmapi-launch-v2 pytest\"",
                "export pytest\"",
            ),
            ("export pytestCommand=trtllm-llmapi-launch", "export"),
        ];
        for (line, expected) in cases {
            assert_eq!(
                no_llmapi_launch_line(&lines(line)),
                expected,
                "line {line:?}"
            );
        }
        assert_eq!(no_llmapi_launch_line(&lines("export other=1\n")), "");
    }
}
