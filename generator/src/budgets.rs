//! The time budgets of a native job: how long the servers may take to get ready, how long the
//! benchmark may run, how long anything may go without progress, and how long the drain may
//! take. Each comes from a `launch-gen` option, else the config's `budgets:` section, else a
//! default taken from the bounds the reference flow uses (sources below), and `--explain`
//! shows which.
//!
//! ```yaml
//! budgets:
//!   servers_ready: 1800     # seconds; every server's rank 0 and the router
//!   benchmark: 7200         # seconds from the benchmark's start to its end
//!   stall: 600              # seconds without progress (benchmark output, a stopped rank)
//!   drain: 120              # seconds the others get to end once the benchmark passed
//!   ready_line: 'Uvicorn running on'   # regex a server prints once it serves
//! ```
//!
//! Pure: reads the parsed config, returns values or a [`ConfigError`] naming the key.

use serde_norway::Value;

use crate::config::{ConfigError, LaunchConfig};

/// Where a budget's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Option(&'static str),
    Config(&'static str),
    Default(&'static str),
}

/// One budget in seconds, with its origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub secs: u64,
    pub source: Source,
}

/// Every budget of a native job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budgets {
    pub servers_ready: Budget,
    pub benchmark: Budget,
    pub stall: Budget,
    pub drain: Budget,
    /// The regular expression of the line that marks a server ready.
    pub ready_line: String,
    pub ready_line_source: Source,
}

/// The line uvicorn prints once it listens; `trtllm-serve` (workers and the disaggregated
/// router) is a uvicorn application, and the stand-ins print the same line.
pub const DEFAULT_READY_LINE: &str = "Uvicorn running on|Application startup complete";

/// Defaults and their sources in the reference flow.
const DEFAULTS: [(&str, &str, u64, &str); 4] = [
    (
        "servers_ready",
        "--ready-timeout",
        3600,
        "slurm_run's cross-node rank barrier waits 3600 s for every rank",
    ),
    (
        "benchmark",
        "--benchmark-timeout",
        7200,
        "the perf test's DEFAULT_TIMEOUT, 7200 s, bounds its waits for the servers and the status file",
    ),
    (
        "stall",
        "--stall-timeout",
        600,
        "later instances wait 600 s for the first instance's config before they give up",
    ),
    (
        "drain",
        "--drain-timeout",
        120,
        "launch-gen's own drain window; the reference has none (its servers wait for the status file)",
    ),
];

/// The options given on the command line (seconds), `None` when not given.
#[derive(Debug, Clone, Copy, Default)]
pub struct Given<'a> {
    pub servers_ready: Option<u64>,
    pub benchmark: Option<u64>,
    pub stall: Option<u64>,
    pub drain: Option<u64>,
    pub ready_line: Option<&'a str>,
}

fn invalid(key: &str, expected: &'static str, value: &Value) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        expected,
        found: serde_norway::to_string(value)
            .map(|t| t.trim_end().to_owned())
            .unwrap_or_else(|_| "?".to_owned()),
    }
}

impl Budgets {
    /// Resolves every budget: option, then `budgets.<key>`, then the default.
    pub fn resolve(config: &LaunchConfig, given: &Given<'_>) -> Result<Budgets, ConfigError> {
        let section = match config.extra.get("budgets") {
            None | Some(Value::Null) => None,
            Some(Value::Mapping(m)) => Some(m),
            Some(other) => return Err(invalid("budgets", "a mapping", other)),
        };
        let key = |name: &str| section.and_then(|m| m.get(name)).filter(|v| !v.is_null());
        let options = [
            given.servers_ready,
            given.benchmark,
            given.stall,
            given.drain,
        ];
        let mut out = Vec::new();
        for ((name, option, default, why), from_option) in DEFAULTS.into_iter().zip(options) {
            let budget = if let Some(secs) = from_option {
                Budget {
                    secs,
                    source: Source::Option(option),
                }
            } else if let Some(value) = key(name) {
                let full = format!("budgets.{name}");
                let secs = value
                    .as_u64()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| invalid(&full, "a positive whole number of seconds", value))?;
                Budget {
                    secs,
                    source: Source::Config(config_key(name)),
                }
            } else {
                Budget {
                    secs: default,
                    source: Source::Default(why),
                }
            };
            out.push(budget);
        }
        let (ready_line, ready_line_source) = match (given.ready_line, key("ready_line")) {
            (Some(line), _) => (line.to_owned(), Source::Option("--ready-line")),
            (None, Some(Value::String(line))) if !line.is_empty() => {
                (line.clone(), Source::Config("budgets.ready_line"))
            }
            (None, Some(other)) => {
                return Err(invalid(
                    "budgets.ready_line",
                    "a non-empty regular expression",
                    other,
                ));
            }
            (None, None) => (
                DEFAULT_READY_LINE.to_owned(),
                Source::Default("uvicorn's start-up lines (trtllm-serve runs on uvicorn)"),
            ),
        };
        if regex::Regex::new(&ready_line).is_err() {
            let key = match ready_line_source {
                Source::Option(flag) => flag,
                _ => "budgets.ready_line",
            };
            return Err(invalid(
                key,
                "a regular expression",
                &Value::String(ready_line),
            ));
        }
        Ok(Budgets {
            servers_ready: out[0],
            benchmark: out[1],
            stall: out[2],
            drain: out[3],
            ready_line,
            ready_line_source,
        })
    }

    /// The `--explain` section.
    pub fn explain(&self) -> String {
        let from = |source: Source| match source {
            Source::Option(flag) => format!("from {flag}"),
            Source::Config(key) => format!("from config `{key}`"),
            Source::Default(why) => format!("default: {why}"),
        };
        let mut out =
            String::from("\nbudgets (a role that overruns one fails the job, naming it):\n");
        for (what, budget) in [
            ("servers ready", self.servers_ready),
            ("benchmark", self.benchmark),
            ("stall", self.stall),
            ("drain", self.drain),
        ] {
            out.push_str(&format!(
                "  {what:<14} {:>6} s  {}\n",
                budget.secs,
                from(budget.source)
            ));
        }
        out.push_str(&format!(
            "  {:<14} /{}/  {}\n",
            "ready line",
            self.ready_line,
            from(self.ready_line_source)
        ));
        out
    }
}

fn config_key(name: &str) -> &'static str {
    match name {
        "servers_ready" => "budgets.servers_ready",
        "benchmark" => "budgets.benchmark",
        "stall" => "budgets.stall",
        _ => "budgets.drain",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> LaunchConfig {
        LaunchConfig::from_yaml(&format!(
            "hardware: {{gpus_per_node: 4, num_ctx_servers: 1, num_gen_servers: 1}}\n{extra}"
        ))
        .expect("config")
    }

    #[test]
    fn option_then_config_then_default() {
        let c = config("budgets: {servers_ready: 1800, stall: 300, ready_line: 'READY'}\n");
        let b = Budgets::resolve(
            &c,
            &Given {
                stall: Some(60),
                ..Given::default()
            },
        )
        .unwrap();
        assert_eq!(
            b.servers_ready,
            Budget {
                secs: 1800,
                source: Source::Config("budgets.servers_ready")
            }
        );
        assert_eq!(b.stall.secs, 60);
        assert_eq!(b.stall.source, Source::Option("--stall-timeout"));
        assert_eq!(b.benchmark.secs, 7200);
        assert!(matches!(b.benchmark.source, Source::Default(_)));
        assert_eq!(b.drain.secs, 120);
        assert_eq!(b.ready_line, "READY");
        let shown = b.explain();
        assert!(
            shown.contains("servers ready    1800 s  from config `budgets.servers_ready`"),
            "{shown}"
        );
        assert!(
            shown.contains("stall              60 s  from --stall-timeout"),
            "{shown}"
        );

        let b = Budgets::resolve(&config(""), &Given::default()).unwrap();
        assert_eq!(
            (
                b.servers_ready.secs,
                b.benchmark.secs,
                b.stall.secs,
                b.drain.secs
            ),
            (3600, 7200, 600, 120)
        );
        assert_eq!(b.ready_line, DEFAULT_READY_LINE);
    }

    #[test]
    fn bad_values_name_the_key() {
        for (yaml, key) in [
            ("budgets: 5\n", "key `budgets`: expected a mapping"),
            (
                "budgets: {stall: 0}\n",
                "key `budgets.stall`: expected a positive whole number",
            ),
            ("budgets: {benchmark: -1}\n", "key `budgets.benchmark`"),
            ("budgets: {drain: '1h'}\n", "key `budgets.drain`"),
            ("budgets: {ready_line: ''}\n", "key `budgets.ready_line`"),
            ("budgets: {ready_line: 3}\n", "key `budgets.ready_line`"),
            (
                "budgets: {ready_line: '(open'}\n",
                "key `budgets.ready_line`: expected a regular expression",
            ),
        ] {
            let err = Budgets::resolve(&config(yaml), &Given::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{yaml}: {err}");
        }
    }
}
