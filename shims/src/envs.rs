//! Reading settings from the environment, with errors that name the variable.
//!
//! Every shim is configured by environment variables (that is how `rank-launch`, Slurm and
//! the generated launch script talk to them); a wrong value must say which variable and what
//! was expected, never panic.

use std::str::FromStr;

/// A variable that is missing or does not hold what it should.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("`{var}` is not set: {why}")]
    Missing {
        var: &'static str,
        why: &'static str,
    },
    #[error("`{var}` is `{value}`: expected {expected}")]
    Invalid {
        var: &'static str,
        value: String,
        expected: &'static str,
    },
}

/// Reads a variable (`None` when unset or not UTF-8).
pub fn get(var: &str) -> Option<String> {
    std::env::var(var).ok()
}

/// A variable that must be set and non-empty.
pub fn required(var: &'static str, why: &'static str) -> Result<String, EnvError> {
    match get(var) {
        Some(value) if !value.trim().is_empty() => Ok(value),
        _ => Err(EnvError::Missing { var, why }),
    }
}

/// Parses `text` as the value of `var`.
pub fn parse_value<T: FromStr>(
    var: &'static str,
    text: &str,
    expected: &'static str,
) -> Result<T, EnvError> {
    text.trim().parse().map_err(|_| EnvError::Invalid {
        var,
        value: text.to_string(),
        expected,
    })
}

/// An optional parsed variable with a default.
pub fn parse_or<T: FromStr>(
    var: &'static str,
    default: T,
    expected: &'static str,
) -> Result<T, EnvError> {
    match get(var) {
        None => Ok(default),
        Some(text) => parse_value(var, &text, expected),
    }
}

/// What the real executor (the MPI leader and workers, where the model runs) reads from its
/// environment, and the demo's markers for the role blocks: never anything else, so a secret
/// cannot reach a log through this.
pub const EXECUTOR_SETTINGS: [&str; 9] = [
    "UCX_TLS",
    "UCX_NET_DEVICES",
    "UCX_CUDA_IPC_ENABLE_MNNVL",
    "TRTLLM_DISABLE_KV_CACHE_TRANSFER_OVERLAP",
    "TLLM_BENCHMARK_REQ_QUEUES_SIZE",
    "TRTLLM_DISAGG_BENCHMARK_GEN_ONLY",
    "SHIM_WORKER",
    "SHIM_GEN_ONLY",
    "SHIM_CTX_ONLY",
];

/// `NAME=value` for each of [`EXECUTOR_SETTINGS`] as `lookup` gives it, `-` when unset.
pub fn executor_settings(lookup: impl Fn(&str) -> Option<String>) -> String {
    EXECUTOR_SETTINGS
        .iter()
        .map(|name| format!("{name}={}", lookup(name).unwrap_or_else(|| "-".to_owned())))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_names_the_variable() {
        assert_eq!(parse_value::<u32>("X", " 4 ", "a count"), Ok(4));
        let err = parse_value::<u32>("numGenServers", "two", "a count").unwrap_err();
        assert_eq!(
            err.to_string(),
            "`numGenServers` is `two`: expected a count"
        );
    }

    #[test]
    fn executor_settings_name_only_the_allowed_variables() {
        let lookup = |name: &str| match name {
            "UCX_TLS" => Some("^gdr_copy".to_owned()),
            "SHIM_GEN_ONLY" => Some("1".to_owned()),
            "HF_TOKEN" => Some("secret".to_owned()),
            _ => None,
        };
        let line = executor_settings(lookup);
        assert!(
            line.starts_with("UCX_TLS=^gdr_copy UCX_NET_DEVICES=- "),
            "{line}"
        );
        assert!(line.ends_with("SHIM_GEN_ONLY=1 SHIM_CTX_ONLY=-"), "{line}");
        assert!(!line.contains("secret"));
    }
}
