//! Python `argparse` semantics for the generations whose reference is an argparse script.
//!
//! The reference generators from G2 on parse their flags with `argparse.ArgumentParser()`
//! (`allow_abbrev=True`, `-h/--help`, long options that each take one value), and a CI
//! pipeline may lean on any of its behaviours, so [`Parser::parse`] follows CPython 3.11's
//! algorithm rather than clap's:
//!
//! - every argument is classified first: an exact flag, `--flag=value`, a unique prefix of a
//!   flag (`--cluster aws` for `--cluster-name`; `--cluster=aws` too), or an unknown option
//!   (starts with `-`, is not a negative number like `-2` or `-.5`, has no space); anything else
//!   is a plain value. An ambiguous prefix (`--s`) is an error at this stage, before `--help`
//!   is seen;
//! - then the arguments are consumed in order: a flag takes the next argument if that is a plain
//!   value (`--split-group -2` works, `--llm-src --test-list x` does not), a typed flag
//!   (`Kind::Int`, Python's `int()`) checks its value right there, `--help` stops with the help
//!   text, a repeated flag overwrites (the last one wins);
//! - the first `--` ends the options: everything after it is a plain value (so it is
//!   unrecognized), and it is no flag's value itself (`--llm-src -- x` is an error);
//! - at the end, missing required flags are reported, then unrecognized arguments (unknown
//!   options and stray values).
//!
//! Errors are one line, without argparse's usage block. Arguments are bytes (`OsStr`), as the
//! reference sees them through `surrogateescape`: a path need not be UTF-8.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt as _;

use crate::pytext;

/// What a flag's value must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Any text (`type=str`).
    Text,
    /// Python's `int()` of the text (`type=int`).
    Int,
}

/// One `parser.add_argument("--flag", ...)`: a long option that takes one value.
#[derive(Debug, Clone, Copy)]
pub struct Opt {
    /// `--name`.
    pub flag: &'static str,
    pub required: bool,
    pub kind: Kind,
    /// What `--help` says, with the default where there is one.
    pub help: &'static str,
}

/// One `argparse.ArgumentParser` with its flags, in the order they were added.
#[derive(Debug, Clone, Copy)]
pub struct Parser {
    /// The command line shown in the usage line.
    pub prog: &'static str,
    /// The paragraph under the usage line.
    pub description: &'static str,
    pub options: &'static [Opt],
}

/// The result of a successful parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// `--help` was given: print this and exit 0.
    Help(String),
    /// The value of each flag, in the order of [`Parser::options`] (`None`: not given).
    Values(Values),
}

/// The flags' values after a parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Values {
    flags: Vec<&'static str>,
    values: Vec<Option<OsString>>,
}

impl Values {
    /// The last value given for `flag`, if any.
    pub fn get(&self, flag: &str) -> Option<&OsStr> {
        let index = self.flags.iter().position(|known| *known == flag)?;
        self.values[index].as_deref()
    }
}

/// What an argument is, before the arguments are consumed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Class {
    /// A plain value (argparse's `A`).
    Value,
    /// The first `--`.
    Separator,
    /// `-h` / `--help`, with an explicit `=value` if written.
    Help(Option<OsString>),
    /// A known flag (index into the options), with an explicit `=value` if written.
    Flag(usize, Option<OsString>),
    /// Looks like an option but names none (argparse's `O` without an action).
    Unknown,
}

/// Who an option string belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Help,
    Flag(usize),
}

impl Parser {
    /// Parses `args` (without the program name) as the reference's argparse would.
    /// `Err` is argparse's error message, one line.
    pub fn parse(&self, args: &[OsString]) -> Result<Parsed, String> {
        let classes = self.classify_all(args)?;
        let mut values: Vec<Option<OsString>> = vec![None; self.options.len()];
        let mut extras: Vec<&OsStr> = Vec::new();
        let mut index = 0;
        while index < args.len() {
            match &classes[index] {
                Class::Value | Class::Separator | Class::Unknown => {
                    extras.push(&args[index]);
                    index += 1;
                }
                Class::Help(Some(explicit)) => {
                    return Err(format!(
                        "argument -h/--help: ignored explicit argument {}",
                        py_repr(explicit)
                    ));
                }
                Class::Help(None) => return Ok(Parsed::Help(self.help())),
                Class::Flag(flag, Some(explicit)) => {
                    values[*flag] = Some(self.checked(*flag, explicit)?);
                    index += 1;
                }
                Class::Flag(flag, None) => {
                    if classes.get(index + 1) != Some(&Class::Value) {
                        return Err(format!(
                            "argument {}: expected one argument",
                            self.options[*flag].flag
                        ));
                    }
                    values[*flag] = Some(self.checked(*flag, &args[index + 1])?);
                    index += 2;
                }
            }
        }
        let missing: Vec<&str> = self
            .options
            .iter()
            .zip(&values)
            .filter(|(option, value)| option.required && value.is_none())
            .map(|(option, _)| option.flag)
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "the following arguments are required: {}",
                missing.join(", ")
            ));
        }
        if !extras.is_empty() {
            let shown: Vec<String> = extras
                .iter()
                .map(|arg| arg.to_string_lossy().into_owned())
                .collect();
            return Err(format!("unrecognized arguments: {}", shown.join(" ")));
        }
        Ok(Parsed::Values(Values {
            flags: self.options.iter().map(|option| option.flag).collect(),
            values,
        }))
    }

    /// The help text that `--help` prints (argparse's layout).
    pub fn help(&self) -> String {
        let metavar = |flag: &str| {
            flag.trim_start_matches('-')
                .replace('-', "_")
                .to_uppercase()
        };
        let mut usage = format!("usage: {} [-h]", self.prog);
        for option in self.options {
            let item = format!("{} {}", option.flag, metavar(option.flag));
            if option.required {
                usage.push_str(&format!(" {item}"));
            } else {
                usage.push_str(&format!(" [{item}]"));
            }
        }
        let mut text = format!("{usage}\n\n{}\n\noptions:\n", self.description);
        let mut entry = |left: String, help: &str| {
            if left.len() <= 20 {
                text.push_str(&format!("  {left:<22}{help}\n"));
            } else {
                text.push_str(&format!("  {left}\n{:24}{help}\n", ""));
            }
        };
        entry("-h, --help".to_owned(), "show this help message and exit");
        for option in self.options {
            entry(
                format!("{} {}", option.flag, metavar(option.flag)),
                option.help,
            );
        }
        text
    }

    /// Checks a value against its flag's type, as argparse does when it stores it.
    fn checked(&self, flag: usize, value: &OsStr) -> Result<OsString, String> {
        let option = &self.options[flag];
        if option.kind == Kind::Int && value.to_str().and_then(pytext::parse_int).is_none() {
            return Err(format!(
                "argument {}: invalid int value: {}",
                option.flag,
                py_repr(value)
            ));
        }
        Ok(value.to_owned())
    }

    /// Every option string with its target, in argparse's order: `-h`, `--help`, the flags.
    fn option_strings(&self) -> Vec<(&'static str, Target)> {
        let mut strings = vec![("-h", Target::Help), ("--help", Target::Help)];
        strings.extend(
            self.options
                .iter()
                .enumerate()
                .map(|(index, option)| (option.flag, Target::Flag(index))),
        );
        strings
    }

    fn classify_all(&self, args: &[OsString]) -> Result<Vec<Class>, String> {
        let mut classes = Vec::with_capacity(args.len());
        let mut after_separator = false;
        for arg in args {
            let class = if after_separator {
                Class::Value
            } else if arg.as_bytes() == b"--" {
                after_separator = true;
                Class::Separator
            } else {
                self.classify(arg)?
            };
            classes.push(class);
        }
        Ok(classes)
    }

    /// argparse's `_parse_optional` for one argument.
    fn classify(&self, arg: &OsStr) -> Result<Class, String> {
        let bytes = arg.as_bytes();
        if bytes.first() != Some(&b'-') {
            return Ok(Class::Value);
        }
        let strings = self.option_strings();
        let class = |target: Target, explicit: Option<&[u8]>| {
            let explicit = explicit.map(|value| OsStr::from_bytes(value).to_owned());
            match target {
                Target::Help => Class::Help(explicit),
                Target::Flag(index) => Class::Flag(index, explicit),
            }
        };
        if let Some((_, target)) = strings.iter().find(|(name, _)| name.as_bytes() == bytes) {
            return Ok(class(*target, None));
        }
        if bytes.len() == 1 {
            return Ok(Class::Value);
        }
        if let Some(equals) = bytes.iter().position(|&b| b == b'=') {
            let (name, value) = (&bytes[..equals], &bytes[equals + 1..]);
            if let Some((_, target)) = strings.iter().find(|(known, _)| known.as_bytes() == name) {
                return Ok(class(*target, Some(value)));
            }
        }
        let matches = option_tuples(&strings, bytes);
        if matches.len() > 1 {
            let names: Vec<&str> = matches.iter().map(|(name, _, _)| *name).collect();
            return Err(format!(
                "ambiguous option: {} could match {}",
                arg.to_string_lossy(),
                names.join(", ")
            ));
        }
        if let Some((_, target, explicit)) = matches.first() {
            return Ok(class(*target, *explicit));
        }
        if looks_like_negative_number(bytes) || bytes.contains(&b' ') {
            return Ok(Class::Value);
        }
        Ok(Class::Unknown)
    }
}

/// argparse's `_get_option_tuples`: the option strings that `arg` abbreviates.
fn option_tuples<'a>(
    strings: &[(&'static str, Target)],
    arg: &'a [u8],
) -> Vec<(&'static str, Target, Option<&'a [u8]>)> {
    let mut found = Vec::new();
    if arg.starts_with(b"--") {
        let (prefix, explicit) = match arg.iter().position(|&b| b == b'=') {
            Some(equals) => (&arg[..equals], Some(&arg[equals + 1..])),
            None => (arg, None),
        };
        for (name, target) in strings {
            if name.as_bytes().starts_with(prefix) {
                found.push((*name, *target, explicit));
            }
        }
    } else {
        // A single dash: `-hX` is `-h` with the explicit argument `X`.
        let (short, rest) = arg.split_at(2.min(arg.len()));
        for (name, target) in strings {
            if name.as_bytes() == short {
                found.push((*name, *target, Some(rest)));
            } else if name.as_bytes().starts_with(arg) {
                found.push((*name, *target, None));
            }
        }
    }
    found
}

/// argparse's `^-\d+$|^-\d*\.\d+$` (Unicode digits; `$` also matches before a final `\n`).
fn looks_like_negative_number(arg: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(arg) else {
        return false;
    };
    let Some(body) = text.strip_prefix('-') else {
        return false;
    };
    let body = body.strip_suffix('\n').unwrap_or(body);
    let digits = |part: &str| part.chars().all(|c| pytext::decimal_digit(c).is_some());
    match body.split_once('.') {
        None => !body.is_empty() && digits(body),
        Some((whole, fraction)) => digits(whole) && !fraction.is_empty() && digits(fraction),
    }
}

/// Python's `repr()` of an argument, as argparse quotes it in messages.
fn py_repr(value: &OsStr) -> String {
    pytext::repr_str(&value.to_string_lossy())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: &[Opt] = &[
        Opt {
            flag: "--llm-src",
            required: true,
            kind: Kind::Text,
            help: "",
        },
        Opt {
            flag: "--launch-sh",
            required: true,
            kind: Kind::Text,
            help: "",
        },
        Opt {
            flag: "--split-group",
            required: false,
            kind: Kind::Int,
            help: "",
        },
        Opt {
            flag: "--stage-name",
            required: false,
            kind: Kind::Text,
            help: "",
        },
        Opt {
            flag: "--srun-args",
            required: false,
            kind: Kind::Text,
            help: "",
        },
    ];
    const PARSER: Parser = Parser {
        prog: "prog",
        description: "Test parser.",
        options: OPTIONS,
    };

    fn parse(args: &[&str]) -> Result<Parsed, String> {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        PARSER.parse(&args)
    }

    /// `--llm-src`, `--launch-sh`, `--split-group`, `--stage-name` after a successful parse.
    fn values(args: &[&str]) -> [Option<String>; 4] {
        match parse(args) {
            Ok(Parsed::Values(values)) => {
                ["--llm-src", "--launch-sh", "--split-group", "--stage-name"]
                    .map(|flag| values.get(flag).map(|v| v.to_string_lossy().into_owned()))
            }
            other => panic!("{args:?}: {other:?}"),
        }
    }

    fn error(args: &[&str]) -> String {
        match parse(args) {
            Err(message) => message,
            other => panic!("{args:?}: expected an error, got {other:?}"),
        }
    }

    fn some(text: &str) -> Option<String> {
        Some(text.to_owned())
    }

    /// Each expectation was checked against CPython 3.11's argparse with the same flags.
    #[test]
    fn values_follow_argparse() {
        let base = ["--llm-src", "L", "--launch-sh", "O"];
        assert_eq!(values(&base), [some("L"), some("O"), None, None]);
        let cases: &[(&[&str], [Option<String>; 4])] = &[
            // `=`, prefixes, prefixes with `=`, the last repeat wins.
            (
                &["--llm-src=a=b", "--launch=O"],
                [some("a=b"), some("O"), None, None],
            ),
            (
                &["--ll", "L", "--la", "O", "--sp", "2"],
                [some("L"), some("O"), some("2"), None],
            ),
            (
                &["--llm-src", "x", "--llm-src", "L", "--launch-sh", "O"],
                [some("L"), some("O"), None, None],
            ),
            (
                &["--llm-src=", "--launch-sh", ""],
                [some(""), some(""), None, None],
            ),
            // Negative numbers and values with a space are values, even after a flag.
            (
                &[
                    "--llm-src",
                    "-5",
                    "--launch-sh",
                    "-.5",
                    "--split-group",
                    "-2",
                ],
                [some("-5"), some("-.5"), some("-2"), None],
            ),
            (
                &["--llm-src", "-x y", "--launch-sh", "O", "--st", "--a b"],
                [some("-x y"), some("O"), None, some("--a b")],
            ),
            (
                &["--llm-src", "-", "--launch-sh", "O"],
                [some("-"), some("O"), None, None],
            ),
            // Python's int(): spaces, a sign, underscores.
            (
                &[
                    "--llm-src",
                    "L",
                    "--launch-sh",
                    "O",
                    "--split-group",
                    " +0_2 ",
                ],
                [some("L"), some("O"), some(" +0_2 "), None],
            ),
            (
                &[
                    "--llm-src",
                    "L",
                    "--launch-sh",
                    "O",
                    "--split-group",
                    "-5\n",
                ],
                [some("L"), some("O"), some("-5\n"), None],
            ),
            (
                &[
                    "--llm-src",
                    "L",
                    "--launch-sh",
                    "O",
                    "--split-group",
                    "\u{664}",
                ],
                [some("L"), some("O"), some("\u{664}"), None],
            ),
        ];
        for (args, expected) in cases {
            assert_eq!(&values(args), expected, "{args:?}");
        }
    }

    #[test]
    fn errors_follow_argparse() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["--llm-src", "L"],
                "the following arguments are required: --launch-sh",
            ),
            (
                &[],
                "the following arguments are required: --llm-src, --launch-sh",
            ),
            (
                &["--llm-src", "L", "--launch-sh", "O", "--run-ci"],
                "unrecognized arguments: --run-ci",
            ),
            (
                &["--llm-src", "L", "--launch-sh", "O", "stray", "-x"],
                "unrecognized arguments: stray -x",
            ),
            (
                &["--llm-src", "L", "--launch-sh", "O", "--", "x"],
                "unrecognized arguments: -- x",
            ),
            (
                &["--llm-src", "L", "--launch-sh", "O", "--", "--"],
                "unrecognized arguments: -- --",
            ),
            (
                &["--launch-sh", "O", "--llm-src", "L", "--"],
                "unrecognized arguments: --",
            ),
            (
                &["--llm-src", "L", "--launch-sh", "O", "-5"],
                "unrecognized arguments: -5",
            ),
            (
                &["--llm-src", "--", "L", "--launch-sh", "O"],
                "argument --llm-src: expected one argument",
            ),
            (
                &["--llm-src", "L", "--", "--launch-sh", "O"],
                "the following arguments are required: --launch-sh",
            ),
            // Missing required flags are reported before unrecognized arguments.
            (
                &["--bogus"],
                "the following arguments are required: --llm-src, --launch-sh",
            ),
            (
                &["--s", "x"],
                "ambiguous option: --s could match --split-group, --stage-name, --srun-args",
            ),
            (
                &["--s=x"],
                "ambiguous option: --s=x could match --split-group, --stage-name, --srun-args",
            ),
            // An ambiguous prefix is found before `--help` runs.
            (
                &["--help", "--s"],
                "ambiguous option: --s could match --split-group, --stage-name, --srun-args",
            ),
            (
                &["--llm-src", "--launch-sh", "O"],
                "argument --llm-src: expected one argument",
            ),
            (&["--llm-src"], "argument --llm-src: expected one argument"),
            (
                &["--llm-src", "-x"],
                "argument --llm-src: expected one argument",
            ),
            (
                &["--split-group", "two"],
                "argument --split-group: invalid int value: 'two'",
            ),
            (
                &["--split-group", "1.0"],
                "argument --split-group: invalid int value: '1.0'",
            ),
            (
                &["--split-group="],
                "argument --split-group: invalid int value: ''",
            ),
            // A bad value stops the parse where it stands: before a later `--help`.
            (
                &["--split-group", "x", "--help"],
                "argument --split-group: invalid int value: 'x'",
            ),
            (
                &["--help=1"],
                "argument -h/--help: ignored explicit argument '1'",
            ),
            (
                &["-hx"],
                "argument -h/--help: ignored explicit argument 'x'",
            ),
        ];
        for (args, message) in cases {
            assert_eq!(error(args), *message, "{args:?}");
        }
    }

    #[test]
    fn help_wins_over_later_problems_and_lists_every_flag() {
        for args in [
            &["--help"][..],
            &["-h"],
            &["--he"],
            &["--bogus", "--help"],
            &["--help", "--split-group", "x"],
        ] {
            let Ok(Parsed::Help(text)) = parse(args) else {
                panic!("{args:?}: expected help");
            };
            assert!(text.starts_with("usage: prog [-h] --llm-src LLM_SRC --launch-sh LAUNCH_SH [--split-group SPLIT_GROUP]"), "{text}");
            assert!(
                text.contains("\n  -h, --help            show this help message and exit\n"),
                "{text}"
            );
        }
    }

    #[test]
    fn negative_numbers_are_recognised_like_argparse() {
        for (arg, expected) in [
            ("-5", true),
            ("-5\n", true),
            ("-.5", true),
            ("-1.5", true),
            ("-\u{664}", true),
            ("-5.", false),
            ("-1e3", false),
            ("-", false),
            ("--5", false),
        ] {
            assert_eq!(
                looks_like_negative_number(arg.as_bytes()),
                expected,
                "{arg:?}"
            );
        }
    }
}
