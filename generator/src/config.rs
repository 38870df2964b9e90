//! The typed YAML config model (reference-flow section 7).
//!
//! Only the keys that shape the launch are typed: `benchmark.mode`,
//! `benchmark.concurrency_list`, the `hardware` block, the parallel sizes in
//! `worker_config.{gen,ctx}` and the `environment` prefixes. Every other key is kept verbatim in
//! the `extra` mapping of its section, so the model can be written back without losing anything.
//!
//! Reading goes through serde in two layers: `Raw*` structs take any YAML value for a typed key,
//! then a conversion checks it and names the full key path in the error
//! (``key `hardware.gpus_per_node`: expected a positive integer, found `0` ``). A key set to
//! `null` counts as absent. Anchors, aliases and `<<` merge keys are resolved first.

use serde::{Deserialize, Serialize};
use serde_norway::{Mapping, Value};
use thiserror::Error;

/// Set to 1 for every role in `gen_only` modes.
pub const GEN_ONLY_VARIABLE: &str = "TRTLLM_DISAGG_BENCHMARK_GEN_ONLY";

/// What the typed keys must hold, for messages.
const POSITIVE: &str = "a positive integer";
const COUNT: &str = "a non-negative integer";
const STRING: &str = "a string";
const MAPPING: &str = "a mapping";
const CONCURRENCY: &str = "positive integers, like `2048`, `512 1075` or `[512, 1075]`";

/// Why a config could not be read.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("invalid YAML")]
    Yaml(#[source] serde_norway::Error),
    #[error("expected a YAML mapping with a `hardware` section, found {found}")]
    NotMapping { found: String },
    #[error("key `{key}`: expected {expected}, found {found}")]
    Invalid {
        key: String,
        expected: &'static str,
        found: String,
    },
    #[error("key `{key}`: missing, expected {expected}")]
    Missing { key: String, expected: &'static str },
    #[error("key `{key}`: cannot read the section")]
    Unreadable {
        key: String,
        source: serde_norway::Error,
    },
}

/// A disaggregated perf config.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LaunchConfig {
    pub benchmark: Benchmark,
    pub hardware: Hardware,
    pub worker_config: WorkerConfig,
    pub environment: Environment,
    /// Every other top-level section (`metadata`, `slurm`, `profiling`, ...).
    #[serde(flatten)]
    pub extra: Mapping,
    /// The whole document as parsed (merge keys applied), for what is reported as it was read.
    #[serde(skip)]
    pub raw: Value,
}

/// The `benchmark` section.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Benchmark {
    /// `e2e` (default), `gen_only` or `gen_only_no_context`.
    pub mode: String,
    /// `concurrency_list`, in order; `None` when absent.
    #[serde(rename = "concurrency_list", skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Vec<u64>>,
    #[serde(flatten)]
    pub extra: Mapping,
}

impl Benchmark {
    /// Whether the mode drops the context servers. Like the reference this is a substring test,
    /// so `gen_only` and `gen_only_no_context` both count.
    pub fn is_gen_only(&self) -> bool {
        self.mode.contains("gen_only")
    }

    /// The environment prefixes of `gen_only` modes, `None` in other modes: (workers, server).
    ///
    /// Workers get `TRTLLM_DISAGG_BENCHMARK_GEN_ONLY=1 TRTLLM_DISABLE_KV_CACHE_TRANSFER_OVERLAP=1
    /// TLLM_BENCHMARK_REQ_QUEUES_SIZE=<first concurrency>`, the disagg server the first variable.
    pub fn gen_only_prefixes(&self) -> Result<Option<(String, &'static str)>, ConfigError> {
        if !self.is_gen_only() {
            return Ok(None);
        }
        let concurrency = self
            .gen_only_concurrency()
            .ok_or_else(|| ConfigError::Missing {
                key: "benchmark.concurrency_list".to_owned(),
                expected: "a positive integer in `gen_only` mode",
            })?;
        let workers = format!(
            "{GEN_ONLY_VARIABLE}=1 TRTLLM_DISABLE_KV_CACHE_TRANSFER_OVERLAP=1 \
             TLLM_BENCHMARK_REQ_QUEUES_SIZE={concurrency}"
        );
        Ok(Some((workers, "TRTLLM_DISAGG_BENCHMARK_GEN_ONLY=1")))
    }

    /// The concurrency that `gen_only` sizes the request queues for: the FIRST value of
    /// `concurrency_list`. (The reference crashes on several values; the later test harness
    /// also takes the first one.)
    pub fn gen_only_concurrency(&self) -> Option<u64> {
        self.concurrency.as_ref()?.first().copied()
    }
}

/// The `hardware` section.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hardware {
    pub gpus_per_node: u64,
    pub num_ctx_servers: u64,
    pub num_gen_servers: u64,
    #[serde(flatten)]
    pub extra: Mapping,
}

/// The `worker_config` section: one LLM API config per server kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerConfig {
    #[serde(rename = "gen")]
    pub gen_server: ServerConfig,
    #[serde(rename = "ctx")]
    pub ctx_server: ServerConfig,
    #[serde(flatten)]
    pub extra: Mapping,
}

/// `worker_config.gen` or `worker_config.ctx`; sizes default to 1.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerConfig {
    pub tensor_parallel_size: u64,
    pub pipeline_parallel_size: u64,
    pub context_parallel_size: u64,
    #[serde(flatten)]
    pub extra: Mapping,
}

impl ServerConfig {
    /// GPUs of one server instance: `tp * pp * cp`, `None` on overflow.
    pub fn gpus(&self) -> Option<u64> {
        self.tensor_parallel_size
            .checked_mul(self.pipeline_parallel_size)?
            .checked_mul(self.context_parallel_size)
    }
}

/// The `environment` section: `K=V ...` prefixes for the role commands (empty when absent).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Environment {
    pub worker_env_var: String,
    pub server_env_var: String,
    pub benchmark_env_var: String,
    #[serde(flatten)]
    pub extra: Mapping,
}

#[derive(Deserialize)]
struct RawLaunchConfig {
    benchmark: Option<Value>,
    hardware: Option<Value>,
    worker_config: Option<Value>,
    environment: Option<Value>,
    #[serde(flatten)]
    extra: Mapping,
}

#[derive(Deserialize)]
struct RawBenchmark {
    mode: Option<Value>,
    concurrency_list: Option<Value>,
    #[serde(flatten)]
    extra: Mapping,
}

#[derive(Deserialize)]
struct RawHardware {
    gpus_per_node: Option<Value>,
    num_ctx_servers: Option<Value>,
    num_gen_servers: Option<Value>,
    #[serde(flatten)]
    extra: Mapping,
}

#[derive(Deserialize)]
struct RawWorkerConfig {
    #[serde(rename = "gen")]
    gen_server: Option<Value>,
    #[serde(rename = "ctx")]
    ctx_server: Option<Value>,
    #[serde(flatten)]
    extra: Mapping,
}

#[derive(Deserialize)]
struct RawServerConfig {
    tensor_parallel_size: Option<Value>,
    pipeline_parallel_size: Option<Value>,
    context_parallel_size: Option<Value>,
    #[serde(flatten)]
    extra: Mapping,
}

#[derive(Deserialize)]
struct RawEnvironment {
    worker_env_var: Option<Value>,
    server_env_var: Option<Value>,
    benchmark_env_var: Option<Value>,
    #[serde(flatten)]
    extra: Mapping,
}

/// Implements [`RawSection`] for structs whose unknown keys live in `extra`.
macro_rules! raw_sections {
    ($($raw:ty),*) => {$(
        impl RawSection for $raw {
            fn extra(&mut self) -> &mut Mapping {
                &mut self.extra
            }
        }
    )*};
}

raw_sections!(
    RawLaunchConfig,
    RawBenchmark,
    RawHardware,
    RawWorkerConfig,
    RawServerConfig,
    RawEnvironment
);

impl LaunchConfig {
    /// Parses and checks a config.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let mut value: Value = serde_norway::from_str(text).map_err(ConfigError::Yaml)?;
        value.apply_merge().map_err(ConfigError::Yaml)?;
        let document = value.clone();
        let raw: RawLaunchConfig = match value {
            Value::Mapping(_) => section(value, "the top level")?,
            Value::Null => {
                return Err(ConfigError::NotMapping {
                    found: "an empty document".to_owned(),
                });
            }
            other => {
                return Err(ConfigError::NotMapping {
                    found: describe(&other),
                });
            }
        };
        let hardware = raw.hardware.ok_or_else(|| ConfigError::Missing {
            key: "hardware.gpus_per_node".to_owned(),
            expected: POSITIVE,
        })?;
        Ok(Self {
            benchmark: Benchmark::from_raw(section_or_empty(raw.benchmark, "benchmark")?)?,
            hardware: Hardware::from_raw(section(hardware, "hardware")?)?,
            worker_config: WorkerConfig::from_raw(section_or_empty(
                raw.worker_config,
                "worker_config",
            )?)?,
            environment: Environment::from_raw(section_or_empty(raw.environment, "environment")?)?,
            extra: raw.extra,
            raw: document,
        })
    }
}

impl Benchmark {
    fn from_raw(raw: RawBenchmark) -> Result<Self, ConfigError> {
        let mode = match raw.mode {
            None => "e2e".to_owned(),
            Some(value) => string(value, "benchmark.mode")?,
        };
        let concurrency = raw.concurrency_list.map(concurrency_list).transpose()?;
        Ok(Self {
            mode,
            concurrency,
            extra: raw.extra,
        })
    }
}

impl Hardware {
    fn from_raw(raw: RawHardware) -> Result<Self, ConfigError> {
        Ok(Self {
            gpus_per_node: required(raw.gpus_per_node, "hardware.gpus_per_node", 1)?,
            num_ctx_servers: required(raw.num_ctx_servers, "hardware.num_ctx_servers", 0)?,
            num_gen_servers: required(raw.num_gen_servers, "hardware.num_gen_servers", 0)?,
            extra: raw.extra,
        })
    }
}

impl WorkerConfig {
    fn from_raw(raw: RawWorkerConfig) -> Result<Self, ConfigError> {
        Ok(Self {
            gen_server: server(raw.gen_server, "worker_config.gen")?,
            ctx_server: server(raw.ctx_server, "worker_config.ctx")?,
            extra: raw.extra,
        })
    }
}

impl ServerConfig {
    fn from_raw(raw: RawServerConfig, path: &str) -> Result<Self, ConfigError> {
        let size = |value: Option<Value>, key: &str| match value {
            None => Ok(1),
            Some(value) => integer(value, &format!("{path}.{key}"), 1),
        };
        Ok(Self {
            tensor_parallel_size: size(raw.tensor_parallel_size, "tensor_parallel_size")?,
            pipeline_parallel_size: size(raw.pipeline_parallel_size, "pipeline_parallel_size")?,
            context_parallel_size: size(raw.context_parallel_size, "context_parallel_size")?,
            extra: raw.extra,
        })
    }
}

impl Environment {
    /// `environment.ctx_worker_env_var` (`kind` "ctx") or `gen_worker_env_var` ("gen"): the
    /// extra prefix of one kind of worker, after `worker_env_var` (upstream's unified
    /// generator). The first generator ignores both keys, so they stay in `extra` and are
    /// checked only here, where they are used; absent or null is empty.
    pub fn worker_extra(&self, kind: &str) -> Result<String, ConfigError> {
        let key = format!("{kind}_worker_env_var");
        match self.extra.get(key.as_str()) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(value) => string(value.clone(), &format!("environment.{key}")),
        }
    }

    fn from_raw(raw: RawEnvironment) -> Result<Self, ConfigError> {
        let text = |value: Option<Value>, key: &str| match value {
            None => Ok(String::new()),
            Some(value) => string(value, &format!("environment.{key}")),
        };
        Ok(Self {
            worker_env_var: text(raw.worker_env_var, "worker_env_var")?,
            server_env_var: text(raw.server_env_var, "server_env_var")?,
            benchmark_env_var: text(raw.benchmark_env_var, "benchmark_env_var")?,
            extra: raw.extra,
        })
    }
}

fn server(value: Option<Value>, key: &str) -> Result<ServerConfig, ConfigError> {
    ServerConfig::from_raw(section_or_empty(value, key)?, key)
}

/// A `Raw*` section: serde reads the typed keys, `extra` keeps the rest.
trait RawSection: for<'de> Deserialize<'de> {
    fn extra(&mut self) -> &mut Mapping;
}

/// Deserialises a section that must be a mapping. Keys that are not strings (YAML allows
/// `7: x`) cannot name a field, so they go to `extra` without passing through serde.
fn section<T: RawSection>(value: Value, key: &str) -> Result<T, ConfigError> {
    let Value::Mapping(mapping) = value else {
        return Err(invalid(key, MAPPING, &value));
    };
    let (named, other): (Mapping, Mapping) =
        mapping.into_iter().partition(|(name, _)| name.is_string());
    let mut raw: T = serde_norway::from_value(Value::Mapping(named)).map_err(|source| {
        ConfigError::Unreadable {
            key: key.to_owned(),
            source,
        }
    })?;
    raw.extra().extend(other);
    Ok(raw)
}

/// Like [`section`], with an absent section read as an empty mapping.
fn section_or_empty<T: RawSection>(value: Option<Value>, key: &str) -> Result<T, ConfigError> {
    section(value.unwrap_or_else(|| Value::Mapping(Mapping::new())), key)
}

fn required(value: Option<Value>, key: &str, min: u64) -> Result<u64, ConfigError> {
    let expected = if min == 0 { COUNT } else { POSITIVE };
    let value = value.ok_or_else(|| ConfigError::Missing {
        key: key.to_owned(),
        expected,
    })?;
    integer(value, key, min)
}

fn integer(value: Value, key: &str, min: u64) -> Result<u64, ConfigError> {
    let expected = if min == 0 { COUNT } else { POSITIVE };
    match value.as_u64() {
        Some(number) if number >= min => Ok(number),
        _ => Err(invalid(key, expected, &value)),
    }
}

fn string(value: Value, key: &str) -> Result<String, ConfigError> {
    match value {
        Value::String(text) => Ok(text),
        // The reference formats numbers into the command line as Python would.
        Value::Number(number) if number.is_i64() || number.is_u64() => Ok(number.to_string()),
        other => Err(invalid(key, STRING, &other)),
    }
}

/// `concurrency_list`: one integer, a whitespace-separated string of them, or a list.
fn concurrency_list(value: Value) -> Result<Vec<u64>, ConfigError> {
    let key = "benchmark.concurrency_list";
    let bad = |value: &Value| invalid(key, CONCURRENCY, value);
    let positive = |value: &Value| value.as_u64().filter(|&n| n > 0);
    let values = match &value {
        Value::Number(_) => vec![positive(&value).ok_or_else(|| bad(&value))?],
        Value::String(text) => crate::pytext::split(text)
            .map(|token| {
                token
                    .parse::<u64>()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| bad(&value))
            })
            .collect::<Result<_, _>>()?,
        Value::Sequence(items) => items
            .iter()
            .map(|item| positive(item).ok_or_else(|| bad(&value)))
            .collect::<Result<_, _>>()?,
        _ => return Err(bad(&value)),
    };
    if values.is_empty() {
        return Err(bad(&value));
    }
    Ok(values)
}

fn invalid(key: &str, expected: &'static str, value: &Value) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        expected,
        found: describe(value),
    }
}

/// A short description of a YAML value for messages: scalars in backticks, else their kind.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "`null`".to_owned(),
        Value::Bool(flag) => format!("`{flag}`"),
        Value::Number(number) => format!("`{number}`"),
        Value::String(text) => format!("`{text:?}`"),
        Value::Sequence(_) => "a list".to_owned(),
        Value::Mapping(_) => "a mapping".to_owned(),
        Value::Tagged(tagged) => format!("a value tagged `{}`", tagged.tag),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "hardware: {gpus_per_node: 4, num_ctx_servers: 1, num_gen_servers: 2}\n";

    fn error_of(yaml: &str) -> String {
        LaunchConfig::from_yaml(yaml).expect_err(yaml).to_string()
    }

    #[test]
    fn defaults_fill_absent_sections_and_sizes() {
        let config = LaunchConfig::from_yaml(MINIMAL).expect("valid");
        assert_eq!(config.benchmark.mode, "e2e");
        assert_eq!(config.benchmark.concurrency, None);
        assert_eq!(config.worker_config.gen_server.gpus(), Some(1));
        assert_eq!(config.environment.worker_env_var, "");
        assert_eq!(
            (
                config.hardware.gpus_per_node,
                config.hardware.num_gen_servers
            ),
            (4, 2)
        );
    }

    #[test]
    fn unknown_keys_are_kept_and_anchors_resolved() {
        let yaml = format!(
            "{MINIMAL}metadata: {{model_name: m}}\nworker_config:\n  gen: &g\n    tensor_parallel_size: 8\n    \
             speculative_config: {{decoding_type: MTP}}\n  ctx:\n    <<: *g\n    pipeline_parallel_size: 2\n"
        );
        let config = LaunchConfig::from_yaml(&yaml).expect("valid");
        assert_eq!(config.worker_config.ctx_server.tensor_parallel_size, 8);
        assert_eq!(config.worker_config.ctx_server.gpus(), Some(16));
        assert!(
            config
                .worker_config
                .ctx_server
                .extra
                .contains_key("speculative_config")
        );
        assert!(config.extra.contains_key("metadata"));
        let written = serde_norway::to_string(&config).expect("serialisable");
        assert!(written.contains("model_name: m"), "{written}");
        assert!(written.contains("decoding_type: MTP"), "{written}");
    }

    #[test]
    fn keys_that_are_not_strings_are_kept() {
        let yaml = "hardware: {gpus_per_node: 4, num_ctx_servers: 1, num_gen_servers: 1, 7: x, [a]: y}\n1: top\n";
        let config = LaunchConfig::from_yaml(yaml).expect("valid");
        assert_eq!(config.hardware.extra.len(), 2);
        assert_eq!(config.extra.get(Value::from(1)), Some(&Value::from("top")));
    }

    #[test]
    fn concurrency_accepts_integers_strings_and_lists() {
        let cases = [
            ("2048", vec![2048]),
            ("'1024'", vec![1024]),
            ("512 1075", vec![512, 1075]),
            ("[4, 8]", vec![4, 8]),
        ];
        for (text, expected) in cases {
            let yaml =
                format!("{MINIMAL}benchmark: {{mode: gen_only, concurrency_list: {text}}}\n");
            let config = LaunchConfig::from_yaml(&yaml).expect(text);
            assert_eq!(config.benchmark.concurrency.as_ref(), Some(&expected));
            assert_eq!(
                config.benchmark.gen_only_concurrency(),
                expected.first().copied()
            );
        }
    }

    #[test]
    fn invalid_values_name_the_key_and_what_was_expected() {
        let cases = [
            (
                "",
                "expected a YAML mapping with a `hardware` section, found an empty document",
            ),
            (
                "- a\n",
                "expected a YAML mapping with a `hardware` section, found a list",
            ),
            (
                "metadata: {}\n",
                "key `hardware.gpus_per_node`: missing, expected a positive integer",
            ),
            (
                "hardware: 4\n",
                "key `hardware`: expected a mapping, found `4`",
            ),
            (
                "hardware: {num_ctx_servers: 1, num_gen_servers: 1}\n",
                "key `hardware.gpus_per_node`: missing, expected a positive integer",
            ),
            (
                "hardware: {gpus_per_node: 0, num_ctx_servers: 1, num_gen_servers: 1}\n",
                "key `hardware.gpus_per_node`: expected a positive integer, found `0`",
            ),
            (
                "hardware: {gpus_per_node: '4', num_ctx_servers: 1, num_gen_servers: 1}\n",
                "key `hardware.gpus_per_node`: expected a positive integer, found `\"4\"`",
            ),
            (
                "hardware: {gpus_per_node: 4, num_ctx_servers: -1, num_gen_servers: 1}\n",
                "key `hardware.num_ctx_servers`: expected a non-negative integer, found `-1`",
            ),
            (
                "hardware: {gpus_per_node: 4, num_ctx_servers: 1}\n",
                "key `hardware.num_gen_servers`: missing, expected a non-negative integer",
            ),
            (
                &format!("{MINIMAL}worker_config: {{gen: {{tensor_parallel_size: 0}}}}\n"),
                "key `worker_config.gen.tensor_parallel_size`: expected a positive integer, found `0`",
            ),
            (
                &format!("{MINIMAL}worker_config: {{ctx: {{pipeline_parallel_size: 1.5}}}}\n"),
                "key `worker_config.ctx.pipeline_parallel_size`: expected a positive integer, found `1.5`",
            ),
            (
                &format!("{MINIMAL}worker_config: {{ctx: [1]}}\n"),
                "key `worker_config.ctx`: expected a mapping, found a list",
            ),
            (
                &format!("{MINIMAL}benchmark: {{concurrency_list: 512 x}}\n"),
                "key `benchmark.concurrency_list`: expected positive integers, like `2048`, `512 1075` or `[512, 1075]`, found `\"512 x\"`",
            ),
            (
                &format!("{MINIMAL}benchmark: {{concurrency_list: 0}}\n"),
                "key `benchmark.concurrency_list`: expected positive integers, like `2048`, `512 1075` or `[512, 1075]`, found `0`",
            ),
            (
                &format!("{MINIMAL}benchmark: {{mode: [e2e]}}\n"),
                "key `benchmark.mode`: expected a string, found a list",
            ),
            (
                &format!("{MINIMAL}environment: {{worker_env_var: {{a: 1}}}}\n"),
                "key `environment.worker_env_var`: expected a string, found a mapping",
            ),
        ];
        for (yaml, message) in cases {
            assert_eq!(error_of(yaml), message, "yaml {yaml:?}");
        }
    }

    #[test]
    fn broken_yaml_is_an_error_not_a_panic() {
        let deep = "[".repeat(100_000);
        for yaml in [
            deep.as_str(),
            "a: [1, 2\n",
            "\u{0}\u{1}binary",
            "a: 1\na: 2\n",
            "--- 1\n--- 2\n",
        ] {
            assert!(LaunchConfig::from_yaml(yaml).is_err(), "yaml {yaml:.20?}");
        }
    }
}
