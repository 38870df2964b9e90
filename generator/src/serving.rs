//! How the benchmark mode shapes a native job: whether context servers run, and which
//! variables go in front of each role's command, before the config's own prefixes.
//!
//! The mode comes from one of two places, as in the generation that defined the test id:
//!
//! - a first-generator id, or `--config-yaml`: the config's `benchmark.mode`. Any mode
//!   containing `gen_only` runs no context servers; both kinds of worker get
//!   `TRTLLM_DISAGG_BENCHMARK_GEN_ONLY=1 TRTLLM_DISABLE_KV_CACHE_TRANSFER_OVERLAP=1
//!   TLLM_BENCHMARK_REQ_QUEUES_SIZE=<c>`, the router the first of those.
//! - a unified-generator id (`disagg*-{e2e|gen_only}-<cfg>`): the token. `e2e` is plain,
//!   whatever the config says. `gen_only` keeps the context servers, gives CTX
//!   `TRTLLM_DISABLE_KV_CACHE_TRANSFER_OVERLAP=1` and GEN that and
//!   `TLLM_BENCHMARK_REQ_QUEUES_SIZE=<c>`; only when the config's mode also contains
//!   `gen_only_no_context` do the context servers go, and GEN and the router get
//!   `TRTLLM_DISAGG_BENCHMARK_GEN_ONLY=1` alone.
//!
//! `<c>` is the first value of `benchmark.concurrency_list` (`512 1075` gives 512). Pure.

use crate::config::{ConfigError, GEN_ONLY_VARIABLE, LaunchConfig};
use crate::testlist::TestMode;

const OVERLAP_OFF: &str = "TRTLLM_DISABLE_KV_CACHE_TRANSFER_OVERLAP=1";
const QUEUE_SIZE: &str = "TLLM_BENCHMARK_REQ_QUEUES_SIZE";

/// The effect of the mode on one job.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Serving {
    /// What decided it, for `--explain`: e.g. ``test id mode `gen_only` ``.
    pub source: String,
    /// No context servers run.
    pub no_ctx: bool,
    /// `TRTLLM_DISAGG_BENCHMARK_GEN_ONLY=1` is exported to every step.
    pub gen_only_variable: bool,
    /// Prefixes of the CTX workers, the GEN workers and the router (`K=V ...`, maybe empty).
    pub ctx: String,
    pub gen_worker: String,
    pub server: String,
}

impl Serving {
    /// The effect of the mode of `config`, under the test id's mode token when there is one.
    pub fn decide(config: &LaunchConfig, token: Option<TestMode>) -> Result<Self, ConfigError> {
        let mode = &config.benchmark.mode;
        let gen_only_flag = format!("{GEN_ONLY_VARIABLE}=1");
        let from_config = format!("config mode `{mode}`");
        let serving = match token {
            None => match config.benchmark.gen_only_prefixes()? {
                None => Self {
                    source: from_config,
                    ..Self::default()
                },
                Some((workers, server)) => Self {
                    source: from_config,
                    no_ctx: true,
                    gen_only_variable: true,
                    ctx: workers.clone(),
                    gen_worker: workers,
                    server: server.to_owned(),
                },
            },
            Some(TestMode::E2e) => Self {
                source: "test id mode `e2e`".to_owned(),
                ..Self::default()
            },
            Some(TestMode::GenOnly) if mode.contains("gen_only_no_context") => Self {
                source: format!("test id mode `gen_only`, {from_config}"),
                no_ctx: true,
                gen_only_variable: true,
                ctx: String::new(),
                gen_worker: gen_only_flag.clone(),
                server: gen_only_flag,
            },
            Some(TestMode::GenOnly) => {
                let concurrency = config.benchmark.gen_only_concurrency().ok_or_else(|| {
                    ConfigError::Missing {
                        key: "benchmark.concurrency_list".to_owned(),
                        expected: "a positive integer for a `gen_only` test id",
                    }
                })?;
                Self {
                    source: "test id mode `gen_only`".to_owned(),
                    ctx: OVERLAP_OFF.to_owned(),
                    gen_worker: format!("{OVERLAP_OFF} {QUEUE_SIZE}={concurrency}"),
                    ..Self::default()
                }
            }
        };
        Ok(serving)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(mode: &str, concurrency: &str) -> LaunchConfig {
        let yaml = format!(
            "hardware: {{gpus_per_node: 4, num_ctx_servers: 1, num_gen_servers: 1}}\n\
             benchmark: {{mode: {mode}{concurrency}}}\n"
        );
        LaunchConfig::from_yaml(&yaml).expect("valid")
    }

    #[test]
    fn the_token_decides_and_the_config_mode_only_drops_the_context_servers() {
        let c = ", concurrency_list: '512 1075'";
        let flag = "TRTLLM_DISAGG_BENCHMARK_GEN_ONLY=1";
        let g1 = "TRTLLM_DISAGG_BENCHMARK_GEN_ONLY=1 TRTLLM_DISABLE_KV_CACHE_TRANSFER_OVERLAP=1 \
                  TLLM_BENCHMARK_REQ_QUEUES_SIZE=512";
        // (config mode, token) -> (no ctx, exported flag, ctx, gen, server)
        type Effect<'a> = (bool, bool, &'a str, &'a str, &'a str);
        let cases: [(&str, Option<TestMode>, Effect); 7] = [
            ("e2e", None, (false, false, "", "", "")),
            ("gen_only", None, (true, true, g1, g1, flag)),
            ("gen_only_no_context", None, (true, true, g1, g1, flag)),
            ("gen_only", Some(TestMode::E2e), (false, false, "", "", "")),
            (
                "gen_only_no_context",
                Some(TestMode::E2e),
                (false, false, "", "", ""),
            ),
            (
                "e2e",
                Some(TestMode::GenOnly),
                (
                    false,
                    false,
                    OVERLAP_OFF,
                    "TRTLLM_DISABLE_KV_CACHE_TRANSFER_OVERLAP=1 TLLM_BENCHMARK_REQ_QUEUES_SIZE=512",
                    "",
                ),
            ),
            (
                "gen_only_no_context",
                Some(TestMode::GenOnly),
                (true, true, "", flag, flag),
            ),
        ];
        for (mode, token, (no_ctx, variable, ctx, gen_prefix, server)) in cases {
            let got = Serving::decide(&config(mode, c), token).expect("decided");
            let shown = (
                got.no_ctx,
                got.gen_only_variable,
                got.ctx.as_str(),
                got.gen_worker.as_str(),
                got.server.as_str(),
            );
            assert_eq!(
                shown,
                (no_ctx, variable, ctx, gen_prefix, server),
                "{mode} {token:?}"
            );
        }
    }

    #[test]
    fn a_queue_size_needs_a_concurrency() {
        let error = Serving::decide(&config("e2e", ""), Some(TestMode::GenOnly)).expect_err("c");
        assert_eq!(
            error.to_string(),
            "key `benchmark.concurrency_list`: missing, expected a positive integer for a \
             `gen_only` test id"
        );
        // Without the context servers no queue size is set, so none is needed.
        let no_ctx = config("gen_only_no_context", "");
        assert!(Serving::decide(&no_ctx, Some(TestMode::GenOnly)).is_ok());
    }
}
