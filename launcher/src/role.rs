//! The role of a step, from `DISAGG_SERVING_TYPE`.
//!
//! Pure. The accepted forms are exact: `GEN_<n>` and `CTX_<n>` (decimal `n`), `DISAGG_SERVER`,
//! `BENCHMARK`. Anything else is an error, because a typo here silently changes how a rank runs.

use std::fmt;

/// The variable that carries the role.
pub const ROLE_VAR: &str = "DISAGG_SERVING_TYPE";

/// What a step does in a disaggregated job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A generation server instance: an MPI world.
    Gen(u32),
    /// A context (prefill) server instance: an MPI world.
    Ctx(u32),
    /// The router in front of the servers: one process.
    DisaggServer,
    /// The benchmark client: one process.
    Benchmark,
}

impl Role {
    /// Roles whose ranks form an MPI world behind a leader on rank 0.
    pub fn is_mpi_worker(self) -> bool {
        matches!(self, Role::Gen(_) | Role::Ctx(_))
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Gen(n) => write!(f, "GEN_{n}"),
            Role::Ctx(n) => write!(f, "CTX_{n}"),
            Role::DisaggServer => f.write_str("DISAGG_SERVER"),
            Role::Benchmark => f.write_str("BENCHMARK"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{ROLE_VAR}` is `{}`: expected `GEN_<n>`, `CTX_<n>`, `DISAGG_SERVER` or `BENCHMARK`", .value.escape_debug())]
pub struct RoleError {
    pub value: String,
}

/// Parses the role; unset means no role.
pub fn parse(value: Option<&str>) -> Result<Option<Role>, RoleError> {
    let Some(value) = value else { return Ok(None) };
    let bad = || RoleError {
        value: value.to_string(),
    };
    let index = |digits: &str| {
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse::<u32>().ok()
    };
    let role = match value {
        "DISAGG_SERVER" => Role::DisaggServer,
        "BENCHMARK" => Role::Benchmark,
        _ => {
            if let Some(n) = value.strip_prefix("GEN_") {
                Role::Gen(index(n).ok_or_else(bad)?)
            } else if let Some(n) = value.strip_prefix("CTX_") {
                Role::Ctx(index(n).ok_or_else(bad)?)
            } else {
                return Err(bad());
            }
        }
    };
    Ok(Some(role))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let ok: &[(&str, Role)] = &[
            ("GEN_0", Role::Gen(0)),
            ("GEN_12", Role::Gen(12)),
            ("CTX_1", Role::Ctx(1)),
            ("DISAGG_SERVER", Role::DisaggServer),
            ("BENCHMARK", Role::Benchmark),
        ];
        for &(text, role) in ok {
            assert_eq!(parse(Some(text)), Ok(Some(role)));
            assert_eq!(role.to_string(), text);
        }
        assert_eq!(parse(None), Ok(None));
        for bad in [
            "",
            "gen_0",
            "GEN_",
            "GEN_x",
            "GEN_-1",
            "GEN_ 1",
            "GEN_PRECHECK_0",
            "SERVER",
            "BENCHMARK ",
            "GEN_99999999999",
        ] {
            let err = parse(Some(bad)).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "`DISAGG_SERVING_TYPE` is `{bad}`: expected `GEN_<n>`, `CTX_<n>`, `DISAGG_SERVER` or `BENCHMARK`"
                )
            );
        }
    }
}
