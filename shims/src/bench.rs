//! Benchmark settings (from the launch YAML) and latency statistics. Pure.
//!
//! Settings come from `benchmark.*` of the YAML at `$LAUNCH_GEN_CONFIG` when set, else small
//! defaults. `concurrency_list` may be a string `"512 1075"`, a list or an int (reference bug
//! B1 crashed on the string); the first value is used, as the newest test does for gen_only.
//! The stand-in caps the concurrency at [`MAX_CONCURRENCY`] threads: production configs ask
//! for 2048 clients, which means nothing on a 2-core test machine.

use std::path::Path;

use serde_norway::Value;

pub const CONFIG_VAR: &str = "LAUNCH_GEN_CONFIG";
/// Most client threads the stand-in benchmark runs.
pub const MAX_CONCURRENCY: usize = 64;

/// What the benchmark sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BenchConfig {
    /// Requests in flight (already capped).
    pub concurrency: usize,
    /// The concurrency the config asked for.
    pub requested_concurrency: usize,
    pub multi_round: usize,
    pub input_length: u32,
    pub output_length: u32,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            concurrency: 4,
            requested_concurrency: 4,
            multi_round: 4,
            input_length: 64,
            output_length: 16,
        }
    }
}

impl BenchConfig {
    /// Total requests: concurrency × multi_round.
    pub fn requests(&self) -> usize {
        self.concurrency * self.multi_round
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("`{path}`: cannot read the file: {why}")]
    Read { path: String, why: String },
    #[error("`{path}`: not valid YAML: {why}")]
    Yaml { path: String, why: String },
    #[error("`{path}`: `benchmark.{key}` is `{value}`: expected {expected}")]
    Value {
        path: String,
        key: &'static str,
        value: String,
        expected: &'static str,
    },
}

fn show(value: &Value) -> String {
    serde_norway::to_string(value)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| format!("{value:?}"))
}

fn positive(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64().filter(|&n| n > 0),
        Value::String(s) => s.trim().parse::<u64>().ok().filter(|&n| n > 0),
        _ => None,
    }
}

/// The first concurrency of `concurrency_list`.
fn first_concurrency(value: &Value) -> Option<u64> {
    match value {
        Value::String(s) => {
            let mut words = s.split_whitespace();
            let first = words.next()?.parse::<u64>().ok().filter(|&n| n > 0)?;
            // Every word must be valid, not just the first.
            words
                .all(|w| w.parse::<u64>().is_ok_and(|n| n > 0))
                .then_some(first)
        }
        Value::Sequence(items) => {
            let all: Option<Vec<u64>> = items.iter().map(positive).collect();
            all?.first().copied()
        }
        other => positive(other),
    }
}

/// Parses the `benchmark` section of a launch YAML; `path` is for messages.
pub fn parse_config(text: &str, path: &str) -> Result<BenchConfig, ConfigError> {
    let doc: Value = serde_norway::from_str(text).map_err(|e| ConfigError::Yaml {
        path: path.to_string(),
        why: e.to_string(),
    })?;
    let mut config = BenchConfig::default();
    let Some(bench) = doc.get("benchmark") else {
        return Ok(config);
    };
    let bad = |key, value: &Value, expected| ConfigError::Value {
        path: path.to_string(),
        key,
        value: show(value),
        expected,
    };
    if let Some(v) = bench.get("concurrency_list") {
        let n = first_concurrency(v).ok_or_else(|| {
            bad(
                "concurrency_list",
                v,
                "positive integers: an int, a list, or a string like \"512 1075\"",
            )
        })?;
        config.requested_concurrency = usize::try_from(n).unwrap_or(usize::MAX);
        config.concurrency = config.requested_concurrency.min(MAX_CONCURRENCY);
    }
    if let Some(v) = bench.get("multi_round") {
        config.multi_round = positive(v)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| bad("multi_round", v, "a positive integer"))?;
    }
    for (key, slot) in [
        ("input_length", &mut config.input_length),
        ("output_length", &mut config.output_length),
    ] {
        if let Some(v) = bench.get(key) {
            *slot = positive(v)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| bad(key, v, "a positive integer below 2^32"))?;
        }
    }
    Ok(config)
}

/// Reads the config at `path`.
pub fn load_config(path: &Path) -> Result<BenchConfig, ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        path: shown.clone(),
        why: e.to_string(),
    })?;
    parse_config(&text, &shown)
}

/// Latency summary in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    pub mean_ms: f64,
    pub median_ms: f64,
    pub p99_ms: f64,
}

/// Mean, median and p99 (nearest rank) of `samples_ms`; zeros when empty.
pub fn latency(samples_ms: &[f64]) -> Latency {
    if samples_ms.is_empty() {
        return Latency {
            mean_ms: 0.0,
            median_ms: 0.0,
            p99_ms: 0.0,
        };
    }
    let mut sorted = samples_ms.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    // Nearest rank: the smallest value with at least 99% of the samples at or below it.
    let rank = ((0.99 * n as f64).ceil() as usize).clamp(1, n);
    Latency {
        mean_ms: sorted.iter().sum::<f64>() / n as f64,
        median_ms: median,
        p99_ms: sorted[rank - 1],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_forms() {
        let c = |yaml: &str| parse_config(yaml, "c.yaml").map(|c| c.requested_concurrency);
        assert_eq!(c("benchmark: {concurrency_list: '512 1075'}"), Ok(512));
        assert_eq!(c("benchmark: {concurrency_list: [8, 16]}"), Ok(8));
        assert_eq!(c("benchmark: {concurrency_list: 2048}"), Ok(2048));
        assert_eq!(c("benchmark: {concurrency_list: '2048'}"), Ok(2048));
        assert_eq!(c("metadata: {}"), Ok(4));
        for bad in ["'512 x'", "0", "[]", "[1, -2]", "''", "{a: 1}"] {
            let err = c(&format!("benchmark: {{concurrency_list: {bad}}}")).unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains("c.yaml") && text.contains("benchmark.concurrency_list"),
                "{bad}: {text}"
            );
        }
    }

    #[test]
    fn full_section_and_cap() {
        let config = parse_config(
            "benchmark:\n  concurrency_list: '2048'\n  multi_round: 5\n  input_length: 1024\n  output_length: 1024\n",
            "x",
        )
        .unwrap();
        assert_eq!(
            config,
            BenchConfig {
                concurrency: MAX_CONCURRENCY,
                requested_concurrency: 2048,
                multi_round: 5,
                input_length: 1024,
                output_length: 1024,
            }
        );
        assert_eq!(config.requests(), MAX_CONCURRENCY * 5);
        let err = parse_config("benchmark: {multi_round: two}", "x").unwrap_err();
        assert!(err.to_string().contains("benchmark.multi_round"), "{err}");
        let err = parse_config("benchmark: [", "x").unwrap_err();
        assert!(matches!(err, ConfigError::Yaml { .. }));
    }

    #[test]
    fn shipped_configs_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/configs");
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("the configs in {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.unwrap().path();
            let config = load_config(&path).unwrap_or_else(|e| panic!("{e}"));
            assert!(
                config.concurrency >= 1 && config.multi_round >= 1,
                "{path:?}"
            );
        }
    }

    #[test]
    fn latency_stats() {
        let l = latency(&[4.0, 1.0, 3.0, 2.0]);
        assert_eq!((l.mean_ms, l.median_ms, l.p99_ms), (2.5, 2.5, 4.0));
        let many: Vec<f64> = (1..=200).map(f64::from).collect();
        let l = latency(&many);
        assert_eq!((l.median_ms, l.p99_ms), (100.5, 198.0));
        assert_eq!(latency(&[]).p99_ms, 0.0);
    }
}
