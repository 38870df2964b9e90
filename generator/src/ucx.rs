//! UCX settings per cluster: which variables a role command unsets first and which it exports.
//!
//! The table is data, `generator/data/ucx-rules.yaml` (its header documents the form), shipped
//! inside the binary as [`UPSTREAM`]: upstream TensorRT-LLM's `cluster_env.get_ucx_tls_cmd` at
//! commit 39778d35. `--compat g2` always uses it; another table of the same form can be read
//! with [`Rules::from_yaml`] (for native mode). The matching is a pure function,
//! [`first_match`]: the cluster and GPU names are lowercased, each rule's patterns are
//! shell-style (`*`, `?`), and the first rule whose two patterns match wins.

use serde::Deserialize;
use thiserror::Error;

/// Upstream's table as of 39778d35, the file `generator/data/ucx-rules.yaml`.
pub const UPSTREAM: &str = include_str!("../data/ucx-rules.yaml");

/// A UCX table: what is always unset, and the rules in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// Variables unset before anything else.
    pub unset: Vec<String>,
    pub rules: Vec<Rule>,
}

/// One row: the patterns it applies to and what it exports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Pattern for the lowercased cluster name.
    pub cluster: String,
    /// Pattern for the lowercased GPU type (`*` unless given).
    pub gpu: String,
    /// `NAME=VALUE` exports, in order; empty for "nothing".
    pub env: Vec<(String, String)>,
}

/// Why a table cannot be used.
#[derive(Debug, Error)]
pub enum UcxError {
    #[error("invalid YAML: {0}")]
    Yaml(#[source] serde_norway::Error),
    #[error("{at}: expected {expected}, found `{found}`")]
    Invalid {
        at: String,
        expected: &'static str,
        found: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRules {
    unset: Vec<String>,
    rules: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    cluster: String,
    #[serde(default = "any")]
    gpu: String,
    #[serde(default)]
    env: serde_norway::Mapping,
}

fn any() -> String {
    "*".to_owned()
}

const NAME: &str = "a shell variable name (letters, digits, `_`; not starting with a digit)";
const VALUE: &str = "a string without whitespace, quotes, `$`, backquote or backslash";
const PATTERN: &str = "a lowercase pattern of characters, `*` and `?` (no `[...]`)";

impl Rules {
    /// Upstream's table ([`UPSTREAM`]).
    pub fn upstream() -> Result<Self, UcxError> {
        Self::from_yaml(UPSTREAM)
    }

    /// Reads and checks a table (the form of `generator/data/ucx-rules.yaml`).
    pub fn from_yaml(text: &str) -> Result<Self, UcxError> {
        let raw: RawRules = serde_norway::from_str(text).map_err(UcxError::Yaml)?;
        for (index, name) in raw.unset.iter().enumerate() {
            check(is_name(name), format!("`unset[{index}]`"), NAME, name)?;
        }
        let mut rules = Vec::with_capacity(raw.rules.len());
        for (index, rule) in raw.rules.into_iter().enumerate() {
            let at = |key: &str| format!("`rules[{index}].{key}`");
            check(
                is_pattern(&rule.cluster),
                at("cluster"),
                PATTERN,
                &rule.cluster,
            )?;
            check(is_pattern(&rule.gpu), at("gpu"), PATTERN, &rule.gpu)?;
            let mut env = Vec::with_capacity(rule.env.len());
            for (name, value) in rule.env {
                let (Some(name), Some(value)) = (name.as_str(), value.as_str()) else {
                    return Err(UcxError::Invalid {
                        at: at("env"),
                        expected: "a mapping of names to strings",
                        found: format!("{name:?}: {value:?}"),
                    });
                };
                check(is_name(name), at("env"), NAME, name)?;
                check(is_value(value), at(&format!("env.{name}")), VALUE, value)?;
                env.push((name.to_owned(), value.to_owned()));
            }
            rules.push(Rule {
                cluster: rule.cluster,
                gpu: rule.gpu,
                env,
            });
        }
        Ok(Self {
            unset: raw.unset,
            rules,
        })
    }

    /// The rule for a cluster and GPU type, see [`first_match`].
    pub fn select(&self, cluster: &str, gpu: &str) -> Option<&Rule> {
        first_match(&self.rules, cluster, gpu)
    }

    /// Like [`Rules::select`], with the rule's index in the table (for `--explain`).
    pub fn select_indexed(&self, cluster: &str, gpu: &str) -> Option<(usize, &Rule)> {
        first_match_index(&self.rules, cluster, gpu).map(|index| (index, &self.rules[index]))
    }

    /// The shell prefix of a role command: `unset A B && export K=V &&`, or `unset A B &&`
    /// without a rule or variables (upstream's `get_ucx_tls_cmd` text). A table with nothing
    /// to unset leaves that part out, so an empty table gives an empty prefix.
    pub fn command(&self, rule: Option<&Rule>) -> String {
        let mut parts = Vec::new();
        if !self.unset.is_empty() {
            parts.push(format!("unset {} &&", self.unset.join(" ")));
        }
        if let Some(rule) = rule.filter(|rule| !rule.env.is_empty()) {
            let exports: Vec<String> = rule
                .env
                .iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect();
            parts.push(format!("export {} &&", exports.join(" ")));
        }
        parts.join(" ")
    }
}

fn check(ok: bool, at: String, expected: &'static str, found: &str) -> Result<(), UcxError> {
    if ok {
        return Ok(());
    }
    Err(UcxError::Invalid {
        at,
        expected,
        found: found.to_owned(),
    })
}

fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_value(value: &str) -> bool {
    !value
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || "'\"$`\\".contains(c))
}

fn is_pattern(pattern: &str) -> bool {
    !pattern.contains(['[', ']']) && pattern.to_lowercase() == pattern
}

/// The first rule whose cluster pattern matches the lowercased `cluster` and whose GPU
/// pattern matches the lowercased `gpu`; `None` when no rule does.
pub fn first_match<'a>(rules: &'a [Rule], cluster: &str, gpu: &str) -> Option<&'a Rule> {
    first_match_index(rules, cluster, gpu).map(|index| &rules[index])
}

/// The index of [`first_match`]'s rule.
fn first_match_index(rules: &[Rule], cluster: &str, gpu: &str) -> Option<usize> {
    let (cluster, gpu) = (cluster.to_lowercase(), gpu.to_lowercase());
    rules
        .iter()
        .position(|rule| glob_match(&rule.cluster, &cluster) && glob_match(&rule.gpu, &gpu))
}

/// Shell-style matching of the whole `text` (Python's `fnmatch` without `[...]`): `*` matches
/// any run of characters (also none, also newlines), `?` exactly one, anything else itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    // Where the last `*` was, and the text position it is currently taken to end at.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == '?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                // Let the last `*` take one more character and try again.
                Some((star_p, star_t)) => {
                    star = Some((star_p, star_t + 1));
                    p = star_p + 1;
                    t = star_t + 1;
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    const NSC: &str = "export UCX_NET_DEVICES=mlx5_0:1,mlx5_1:1,mlx5_2:1,mlx5_3:1,mlx5_4:1,mlx5_5:1,mlx5_10:1,mlx5_11:1";
    const CMH: &str = "export UCX_TLS=cuda_ipc,cuda_copy,sm,self,tcp";
    const DFW: &str = "export UCX_TLS=^gdr_copy";
    const UNSET: &str = "unset UCX_CUDA_IPC_ENABLE_MNNVL UCX_TLS UCX_NET_DEVICES &&";

    #[test]
    fn the_upstream_table_gives_upstreams_commands() {
        let rules = Rules::upstream().expect("the shipped table is valid");
        let cases = [
            ("nsc-svg", Some(NSC)),
            ("nsc-svg-gb200-01", Some(NSC)),
            ("NSC-SVG-01", Some(NSC)),
            ("aws-cmh", Some(CMH)),
            ("AWS-CMH-b200", Some(CMH)),
            ("aws-dfw-cs-001", Some(DFW)),
            ("Aws-Dfw", Some(DFW)),
            // Prefixes only: the name must start with the pattern's text.
            ("my-aws-dfw", None),
            ("aws-dfx", None),
            ("nsc-sv", None),
            ("aws_cmh", None),
            ("", None),
            ("oci-hsg", None),
        ];
        for (cluster, export) in cases {
            let expected = match export {
                Some(export) => format!("{UNSET} {export} &&"),
                None => UNSET.to_owned(),
            };
            for gpu in ["", "GB200", "b200"] {
                let rule = rules.select(cluster, gpu);
                assert_eq!(
                    rules.command(rule),
                    expected,
                    "cluster {cluster:?} gpu {gpu:?}"
                );
            }
        }
        // Every rule of upstream's table applies to any GPU: G2 passes none.
        assert!(rules.rules.iter().all(|rule| rule.gpu == "*"));
        assert_eq!(
            rules.rules.last().map(|rule| rule.cluster.as_str()),
            Some("*")
        );
    }

    #[test]
    fn the_first_matching_rule_wins_and_no_rule_means_only_the_unset() {
        let table = "unset: [A]\nrules:\n  - {cluster: 'a*', gpu: 'gb*', env: {X: '1'}}\n  - {cluster: 'a*', env: {X: '2', Y: '3'}}\n  - {cluster: 'b?c'}\n";
        let rules = Rules::from_yaml(table).expect("valid");
        let command = |cluster: &str, gpu: &str| rules.command(rules.select(cluster, gpu));
        assert_eq!(command("abc", "GB200"), "unset A && export X=1 &&");
        assert_eq!(command("abc", "h100"), "unset A && export X=2 Y=3 &&");
        assert_eq!(command("bxc", ""), "unset A &&");
        assert_eq!(
            rules.select("bxc", "").map(|r| r.cluster.as_str()),
            Some("b?c")
        );
        assert_eq!(command("zzz", ""), "unset A &&");
        assert_eq!(rules.select("zzz", ""), None);

        // Nothing to unset: only the exports, and an empty table leaves commands alone.
        let rules = Rules::from_yaml("unset: []\nrules: [{cluster: 'a*', env: {X: '1'}}]\n")
            .expect("valid");
        assert_eq!(rules.command(rules.select("ab", "")), "export X=1 &&");
        assert_eq!(rules.command(rules.select("b", "")), "");
    }

    #[test]
    fn glob_matching_is_shell_style() {
        let cases = [
            ("*", "", true),
            ("*", "anything\nat all", true),
            ("a*", "a", true),
            ("a*", "ba", false),
            ("*a", "ba", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("a?c", "aéc", true),
            ("**x", "x", true),
            ("a*a*a", "aaaa", true),
            ("", "", true),
            ("", "a", false),
            ("abc", "abc", true),
            ("abc", "abcd", false),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(glob_match(pattern, text), expected, "{pattern:?} {text:?}");
        }
    }

    #[test]
    fn bad_tables_are_explained() {
        let cases = [
            (
                "unset: [A]\nrules: [{cluster: 'AWS*'}]\n",
                "`rules[0].cluster`: expected a lowercase pattern",
            ),
            (
                "unset: [A]\nrules: [{cluster: 'a[bc]'}]\n",
                "`rules[0].cluster`: expected a lowercase pattern",
            ),
            (
                "unset: ['1A']\nrules: []\n",
                "`unset[0]`: expected a shell variable name",
            ),
            (
                "unset: []\nrules: [{cluster: a, env: {X: 'a b'}}]\n",
                "`rules[0].env.X`: expected a string without whitespace",
            ),
            (
                "unset: []\nrules: [{cluster: a, env: {X: '$(x)'}}]\n",
                "`rules[0].env.X`: expected a string without whitespace",
            ),
            (
                "unset: []\nrules: [{cluster: a, env: {X: 1}}]\n",
                "`rules[0].env`: expected a mapping of names to strings",
            ),
            (
                "unset: []\nrules: [{cluster: a, tls: x}]\n",
                "invalid YAML: rules[0]: unknown field `tls`",
            ),
            ("rules: []\n", "invalid YAML: missing field `unset`"),
        ];
        for (table, message) in cases {
            let error = Rules::from_yaml(table).expect_err(table).to_string();
            assert!(error.starts_with(message), "{table:?}: {error}");
        }
    }
}
