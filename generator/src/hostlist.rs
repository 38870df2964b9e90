//! A small Slurm hostlist expander for `--explain --nodelist`.
//!
//! Accepts what `scontrol show hostnames` accepts in practice: comma-separated names, each
//! with zero or more bracket groups of numbers and ranges (`node[01-03,7]`, `r[1-2]n[1-2]`).
//! Ranges keep the zero padding of their start. The result is capped so a typo like
//! `n[0-999999999]` is an error instead of an out-of-memory.

use thiserror::Error;

/// At most this many hosts come out of one hostlist.
pub const MAX_HOSTS: usize = 65_536;

/// Why a hostlist cannot be expanded.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum HostlistError {
    #[error("expected a hostlist like `node[01-06]` or `a,b,c`, found an empty name in `{list}`")]
    EmptyName { list: String },
    #[error("unbalanced brackets in `{list}`")]
    Unbalanced { list: String },
    #[error("expected numbers or ranges like `1-3` inside brackets, found `{range}`")]
    BadRange { range: String },
    #[error("more than {MAX_HOSTS} hosts in `{list}`")]
    TooMany { list: String },
}

/// Expands a hostlist into host names, in order.
pub fn expand(list: &str) -> Result<Vec<String>, HostlistError> {
    let mut hosts = Vec::new();
    for name in split_top_level(list).map_err(|()| HostlistError::Unbalanced {
        list: list.to_owned(),
    })? {
        let name = name.trim();
        if name.is_empty() {
            return Err(HostlistError::EmptyName {
                list: list.to_owned(),
            });
        }
        let mut expanded = vec![String::new()];
        let mut rest = name;
        while let Some(open) = rest.find('[') {
            let close = rest[open..].find(']').map(|n| open + n).ok_or_else(|| {
                HostlistError::Unbalanced {
                    list: list.to_owned(),
                }
            })?;
            let stem = &rest[..open];
            let numbers = numbers(&rest[open + 1..close])?;
            if expanded
                .len()
                .saturating_mul(numbers.len())
                .saturating_add(hosts.len())
                > MAX_HOSTS
            {
                return Err(HostlistError::TooMany {
                    list: list.to_owned(),
                });
            }
            expanded = expanded
                .iter()
                .flat_map(|head| numbers.iter().map(move |n| format!("{head}{stem}{n}")))
                .collect();
            rest = &rest[close + 1..];
        }
        if rest.contains(']') {
            return Err(HostlistError::Unbalanced {
                list: list.to_owned(),
            });
        }
        hosts.extend(expanded.into_iter().map(|head| format!("{head}{rest}")));
    }
    Ok(hosts)
}

/// Splits on commas outside brackets.
fn split_top_level(list: &str) -> Result<Vec<&str>, ()> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0u32, 0);
    for (index, c) in list.char_indices() {
        match c {
            '[' if depth == 0 => depth = 1,
            '[' => return Err(()),
            ']' => depth = depth.checked_sub(1).ok_or(())?,
            ',' if depth == 0 => {
                parts.push(&list[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(());
    }
    parts.push(&list[start..]);
    Ok(parts)
}

/// The numbers of one bracket group, as zero-padded strings.
fn numbers(group: &str) -> Result<Vec<String>, HostlistError> {
    let mut numbers = Vec::new();
    for range in group.split(',') {
        let bad = || HostlistError::BadRange {
            range: range.to_owned(),
        };
        let (first, last) = range.split_once('-').unwrap_or((range, range));
        let is_number = |text: &str| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
        if !is_number(first) || !is_number(last) {
            return Err(bad());
        }
        let (start, end) = (
            first.parse::<u64>().map_err(|_| bad())?,
            last.parse::<u64>().map_err(|_| bad())?,
        );
        if start > end || end - start >= MAX_HOSTS as u64 || numbers.len() > MAX_HOSTS {
            return Err(bad());
        }
        numbers.extend((start..=end).map(|n| format!("{n:0width$}", width = first.len())));
    }
    Ok(numbers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostlists_expand_like_slurm() {
        let cases: [(&str, &[&str]); 5] = [
            ("a,b,c", &["a", "b", "c"]),
            ("node[01-03]", &["node01", "node02", "node03"]),
            (
                "n[1-2,5],m[08-10]",
                &["n1", "n2", "n5", "m08", "m09", "m10"],
            ),
            (
                "r[1-2]n[1-2]-ib",
                &["r1n1-ib", "r1n2-ib", "r2n1-ib", "r2n2-ib"],
            ),
            ("gpu[7]", &["gpu7"]),
        ];
        for (list, hosts) in cases {
            assert_eq!(expand(list).expect(list), hosts, "list {list:?}");
        }
    }

    #[test]
    fn bad_hostlists_are_errors() {
        let cases = [
            (
                "",
                "expected a hostlist like `node[01-06]` or `a,b,c`, found an empty name in ``",
            ),
            (
                "a,,b",
                "expected a hostlist like `node[01-06]` or `a,b,c`, found an empty name in `a,,b`",
            ),
            ("n[1-3", "unbalanced brackets in `n[1-3`"),
            ("n1-3]", "unbalanced brackets in `n1-3]`"),
            ("n[[1]]", "unbalanced brackets in `n[[1]]`"),
            (
                "n[3-1]",
                "expected numbers or ranges like `1-3` inside brackets, found `3-1`",
            ),
            (
                "n[a-b]",
                "expected numbers or ranges like `1-3` inside brackets, found `a-b`",
            ),
            (
                "n[0-999999999]",
                "expected numbers or ranges like `1-3` inside brackets, found `0-999999999`",
            ),
            (
                "a[0-9999]b[0-9999]",
                "more than 65536 hosts in `a[0-9999]b[0-9999]`",
            ),
        ];
        for (list, message) in cases {
            assert_eq!(
                expand(list).expect_err(list).to_string(),
                message,
                "list {list:?}"
            );
        }
    }
}
