//! Compatibility modes: the reference generators' launch scripts, byte for byte, one module per
//! generation.
//!
//! | `--compat` | module | reference | arguments |
//! |---|---|---|---|
//! | `g1` (default) | [`g1`] | `jenkins/scripts/perf/disaggregated/submit.py` @ `0c8de69a1ca6` | launch-gen's own parser (shared with native mode) |
//! | `g2` | [`g2`] | `jenkins/scripts/perf/submit.py` @ `39778d35` (with its `cluster_env.py`) | [`argparse`] emulation, exactly the reference's flags |
//!
//! `launch-gen --compat NAME ARGS...` (or `--compat=NAME`, as the first argument) selects a
//! generation from [`GENERATIONS`]; without `--compat` it is G1. Each generation module lists
//! its reference's quirks in its module docs. What they share lives beside them: the Python
//! text rules ([`crate::pytext`]), Python values and arithmetic as `yaml.safe_load` gives them
//! ([`python`]), argparse ([`argparse`]), the UCX table ([`crate::ucx`]); G1 also shares
//! [`crate::config`] and [`crate::plan`] with native mode.
//!
//! A generation never touches the file system: it gets its arguments and a [`Files`] reader
//! and answers with an [`Outcome`] (help text, or a script and where to write it) or a one-line
//! error. `cli.rs` does the reading, the atomic write (temp file + rename, mode 0666 & umask as
//! the reference's `open(path, "w")`), and the exit codes (0, or 2 for any error).
//!
//! ## Adding a generation
//!
//! 1. Add `compat/gN.rs` with `pub fn run(args: &[OsString], files: &dyn Files) ->
//!    Result<Outcome, String>`, its quirks in the module docs (see [`g2`]), and declare it here.
//! 2. Add one row to [`GENERATIONS`]. `cli.rs` dispatches through the table, and `--compat`'s
//!    error message lists it.
//! 3. Add its goldens: `generator/tests/fixtures/compat-gN/<case>/` with `args` (one argument a
//!    line, `OUT` for the output path), the inputs and `expected.sh` (a case without it is an
//!    error case: exit 2, one line, no file). `tests/it/compat_g2.rs` runs the goldens of every
//!    generation in the table that has such a folder.
//! 4. Optionally a drop-in `shims/gN/submit.py` (a copy of `shims/g2/submit.py` with its
//!    generation name changed); `scripts/build` copies every `shims/g*/submit.py`.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

pub mod argparse;
pub mod g1;
pub mod g2;
pub mod python;

// G1's API, where cli.rs has always found it.
pub use g1::{CompatInputs, render, stdout_report};

/// A generation of the reference generator.
#[derive(Debug, Clone, Copy)]
pub struct Generation {
    /// The `--compat` value.
    pub name: &'static str,
    /// The reference it reproduces.
    pub reference: &'static str,
    pub entry: Entry,
}

/// How a generation takes its arguments.
#[derive(Debug, Clone, Copy)]
pub enum Entry {
    /// launch-gen's own parser (G1, whose flags native mode extends).
    MainParser,
    /// The generation's own parser and renderer.
    Own(fn(&[OsString], &dyn Files) -> Result<Outcome, String>),
}

/// Every generation, oldest first.
pub const GENERATIONS: &[Generation] = &[
    Generation {
        name: "g1",
        reference: "jenkins/scripts/perf/disaggregated/submit.py @ 0c8de69a1ca6",
        entry: Entry::MainParser,
    },
    Generation {
        name: "g2",
        reference: "jenkins/scripts/perf/submit.py @ 39778d352f4c",
        entry: Entry::Own(g2::run),
    },
];

/// What a generation asks the command line to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Print this on stdout and exit 0 (`--help`); nothing is written.
    Help(String),
    /// Write `script` to `path` (atomically), with `mode` before the umask.
    Write {
        path: PathBuf,
        script: String,
        mode: u32,
    },
}

/// Reads the inputs of a generation: the only way a generation sees files.
pub trait Files {
    /// The whole file as text, exactly as stored (newlines untranslated).
    fn read_text(&self, path: &Path) -> Result<String, ReadError>;
}

/// Why a file could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    NotFound,
    /// Another I/O error, as a lowercase reason (`is a directory`, `permission denied`).
    Unreadable(String),
    /// Not UTF-8 (Python's `UnicodeDecodeError` under a UTF-8 locale).
    NotUtf8 {
        offset: usize,
    },
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotFound => f.write_str("cannot read: no such file or directory"),
            Self::Unreadable(reason) => write!(f, "cannot read: {reason}"),
            Self::NotUtf8 { offset } => write!(
                f,
                "expected UTF-8 text, found a non-UTF-8 byte at offset {offset}"
            ),
        }
    }
}

/// What the first arguments say about the generation.
#[derive(Debug)]
pub enum Selection<'a> {
    /// No `--compat`: launch-gen's own parser gets every argument.
    Absent,
    /// `--compat NAME`, and the arguments after it.
    Chosen(&'static Generation, &'a [OsString]),
    /// `--compat` without a known value: the error message.
    Invalid(String),
}

/// Looks at the first of `args` (the arguments after the program name) for `--compat NAME`
/// or `--compat=NAME`.
pub fn select(args: &[OsString]) -> Selection<'_> {
    let Some(first) = args.first() else {
        return Selection::Absent;
    };
    let first = first.to_string_lossy();
    let (value, rest) = if first == "--compat" {
        match args.get(1) {
            Some(value) => (value.to_string_lossy(), &args[2..]),
            None => {
                return Selection::Invalid(format!(
                    "`--compat` expects a generation: one of {}",
                    names()
                ));
            }
        }
    } else if let Some(value) = first.strip_prefix("--compat=") {
        (value.to_owned().into(), &args[1..])
    } else {
        return Selection::Absent;
    };
    match GENERATIONS
        .iter()
        .find(|generation| generation.name == value)
    {
        Some(generation) => Selection::Chosen(generation, rest),
        None => Selection::Invalid(format!(
            "`--compat {value}`: unknown generation, expected one of {}",
            names()
        )),
    }
}

/// The generations' names, for messages: `g1, g2`.
fn names() -> String {
    let names: Vec<&str> = GENERATIONS
        .iter()
        .map(|generation| generation.name)
        .collect();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn compat_selects_a_generation_from_the_first_argument_only() {
        let cases: &[(&[&str], Option<&str>, usize)] = &[
            (&["--compat", "g2", "--llm-src", "x"], Some("g2"), 2),
            (&["--compat=g2"], Some("g2"), 0),
            (&["--compat", "g1", "--run-ci"], Some("g1"), 1),
            (&["--compat=g1", "--compat", "g2"], Some("g1"), 2),
        ];
        for (list, name, rest) in cases {
            let list = args(list);
            match select(&list) {
                Selection::Chosen(generation, remaining) => {
                    assert_eq!((Some(generation.name), remaining.len()), (*name, *rest));
                }
                other => panic!("{list:?}: {other:?}"),
            }
        }
        for list in [&[][..], &["--run-ci", "--compat", "g2"], &["--compatible"]] {
            assert!(matches!(select(&args(list)), Selection::Absent), "{list:?}");
        }
        let invalid = |list: &[&str]| match select(&args(list)) {
            Selection::Invalid(message) => message,
            other => panic!("{list:?}: {other:?}"),
        };
        assert_eq!(
            invalid(&["--compat", "g3"]),
            "`--compat g3`: unknown generation, expected one of g1, g2"
        );
        assert_eq!(
            invalid(&["--compat="]),
            "`--compat `: unknown generation, expected one of g1, g2"
        );
        assert_eq!(
            invalid(&["--compat"]),
            "`--compat` expects a generation: one of g1, g2"
        );
    }

    #[test]
    fn generation_names_are_unique() {
        for (index, generation) in GENERATIONS.iter().enumerate() {
            assert!(
                GENERATIONS[..index]
                    .iter()
                    .all(|other| other.name != generation.name),
                "{}",
                generation.name
            );
        }
    }
}
