//! What a rank runs: an argv, or a shell string for `bash -c`.
//!
//! Pure. `rank-launch` does the job of `trtllm-llmapi-launch` itself, so that word is removed
//! from the command for every role, never run twice. The match is exact on the word's file name
//! (`/any/dir/trtllm-llmapi-launch`), not a substring test: `my-trtllm-llmapi-launcher` stays.
//! In a shell string the word is found by a small lexer that knows quotes, escapes and
//! operators, and the rest of the string is kept byte for byte.
//!
//! What stands before that word wraps the whole rank ([`Command::rank_prefix`]). In the reference
//! every rank ran `bash -c "unset UCX_TLS && K=V trtllm-llmapi-launch pytest ..."`, and
//! trtllm-llmapi-launch started the MPI leader, the workers and the stop helper, so all of them
//! got the `unset`, the assignments and any wrapper (`numactl ...`). That is where the model
//! runs and where the UCX and executor settings are read; the task alone is not enough.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

/// The reference per-rank launcher whose job rank-launch does.
pub const LLMAPI_LAUNCH: &str = "trtllm-llmapi-launch";

/// The command a rank runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Executed directly.
    Argv(Vec<OsString>),
    /// Run by `bash -c`.
    Shell(String),
}

impl Command {
    /// The argv that runs it.
    pub fn argv(&self) -> Vec<OsString> {
        match self {
            Command::Argv(argv) => argv.clone(),
            Command::Shell(script) => vec!["bash".into(), "-c".into(), script.into()],
        }
    }

    /// Removes every `trtllm-llmapi-launch` word.
    pub fn without_llmapi_launch(self) -> Command {
        match self {
            Command::Argv(argv) => Command::Argv(
                argv.into_iter()
                    .filter(|word| !is_llmapi_launch(word))
                    .collect(),
            ),
            Command::Shell(script) => Command::Shell(strip_word_from_shell(&script)),
        }
    }

    /// The shell text that sets up the whole rank, to run in front of the MPI leader, worker
    /// and stop commands: everything before the first `trtllm-llmapi-launch` word, or, without
    /// that word, the leading `unset ... &&` / `export ... &&` commands and the `NAME=VALUE`
    /// words in front of the command. It is empty for an argv and for a string with neither.
    /// The text ends where the next command word began, so `prefix + command` is a shell
    /// string. An error says why the text before the word cannot wrap another command (a
    /// subshell or a pipe around it).
    pub fn rank_prefix(&self) -> Result<String, PrefixError> {
        let Command::Shell(script) = self else {
            return Ok(String::new());
        };
        let words = words(script);
        let gap = |i: usize| {
            let from = if i == 0 { 0 } else { words[i - 1].end };
            &script[from..words[i].start]
        };
        let launch = words.iter().position(Word::is_llmapi_launch);
        if let Some(at) = launch {
            if (0..=at).any(|i| gap(i).contains(['(', ')', '|'])) {
                return Err(PrefixError::Enclosed);
            }
            return Ok(script[..words[at].start].to_owned());
        }
        let is_operator = |text: &str| text.contains(['&', ';', '|', '(', ')', '<', '>']);
        let mut end = 0;
        let mut i = 0;
        // `unset A B &&` and `export A=1 &&` commands, in a row.
        while words
            .get(i)
            .is_some_and(|w| matches!(w.value.as_deref(), Some("unset" | "export")))
        {
            let mut next = i + 1;
            while next < words.len() && !is_operator(gap(next)) {
                next += 1;
            }
            if next == words.len() || gap(next).trim() != "&&" {
                break;
            }
            end = words[next].start;
            i = next;
        }
        // `NAME=VALUE` words in front of the command word.
        let mut next = i;
        while next < words.len()
            && is_assignment(&script[words[next].start..words[next].end])
            && (next == i || !is_operator(gap(next)))
        {
            next += 1;
        }
        if next > i && next < words.len() && !is_operator(gap(next)) {
            end = words[next].start;
        }
        Ok(script[..end].to_owned())
    }

    /// True when nothing would run.
    pub fn is_empty(&self) -> bool {
        match self {
            Command::Argv(argv) => argv.is_empty(),
            Command::Shell(script) => script.trim().is_empty(),
        }
    }
}

/// Why the text before `trtllm-llmapi-launch` cannot wrap the leader and the workers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    #[error(
        "`{LLMAPI_LAUNCH}` is inside a subshell or a pipe, so what stands before it cannot be \
         put in front of the MPI leader and worker commands"
    )]
    Enclosed,
}

/// `NAME=...` with a shell variable name, as written (quotes or expansions may follow the `=`).
fn is_assignment(text: &str) -> bool {
    let Some((name, _)) = text.split_once('=') else {
        return false;
    };
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_llmapi_launch(word: &OsStr) -> bool {
    let bytes = word.as_bytes();
    let name = bytes.rsplit(|&b| b == b'/').next().unwrap_or(bytes);
    name == LLMAPI_LAUNCH.as_bytes()
}

/// A word of a shell string: its byte span and its value with quotes removed, or `None` when it
/// holds an expansion (`$x`, backticks) whose value is unknown until run time.
struct Word {
    start: usize,
    end: usize,
    value: Option<String>,
}

impl Word {
    /// Whether the word is `trtllm-llmapi-launch` (known value, exact file name).
    fn is_llmapi_launch(&self) -> bool {
        self.value
            .as_deref()
            .is_some_and(|v| is_llmapi_launch(OsStr::new(v)))
    }
}

/// Splits a shell string into words. Operators (`;`, `&`, `|`, `(`, `)`, `<`, `>`) end words and
/// are not words themselves; newlines count as blanks. Unterminated quotes end at the string's end.
fn words(script: &str) -> Vec<Word> {
    let bytes = script.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_whitespace() || b"; & | ( ) < >".contains(&b) {
            i += 1;
            continue;
        }
        let start = i;
        let mut value = Some(String::new());
        while i < bytes.len() {
            let b = bytes[i];
            if b.is_ascii_whitespace() || b";&|()<>".contains(&b) {
                break;
            }
            match b {
                b'\\' => {
                    if let (Some(v), Some(next)) = (value.as_mut(), script[i + 1..].chars().next())
                    {
                        v.push(next);
                    }
                    i += 1 + script[i + 1..].chars().next().map_or(0, char::len_utf8);
                }
                b'\'' => {
                    let close = script[i + 1..]
                        .find('\'')
                        .map_or(bytes.len(), |p| i + 1 + p);
                    if let Some(v) = value.as_mut() {
                        v.push_str(&script[i + 1..close]);
                    }
                    i = (close + 1).min(bytes.len());
                }
                b'"' => {
                    let mut j = i + 1;
                    while j < bytes.len() && bytes[j] != b'"' {
                        match bytes[j] {
                            b'\\' => j += 1,
                            b'$' | b'`' => value = None,
                            _ => {}
                        }
                        j += 1;
                    }
                    let close = j.min(bytes.len());
                    if let Some(v) = value.as_mut() {
                        v.push_str(&script[i + 1..close]);
                    }
                    i = (close + 1).min(bytes.len());
                }
                b'$' | b'`' => {
                    value = None;
                    i += 1;
                }
                _ => {
                    let ch = script[i..].chars().next().unwrap_or('\u{fffd}');
                    if let Some(v) = value.as_mut() {
                        v.push(ch);
                    }
                    i += ch.len_utf8().max(1);
                }
            }
        }
        out.push(Word {
            start,
            end: i.min(bytes.len()),
            value,
        });
    }
    out
}

/// Removes each `trtllm-llmapi-launch` word and the blanks after it; everything else is kept.
fn strip_word_from_shell(script: &str) -> String {
    let mut out = String::with_capacity(script.len());
    let mut kept_from = 0;
    for word in words(script) {
        if !word.is_llmapi_launch() {
            continue;
        }
        out.push_str(&script[kept_from..word.start]);
        let rest = &script[word.end..];
        let blanks = rest.len() - rest.trim_start_matches([' ', '\t']).len();
        kept_from = word.end + blanks;
    }
    out.push_str(&script[kept_from..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_strings() {
        let cases: &[(&str, &str)] = &[
            ("trtllm-llmapi-launch pytest -vv", "pytest -vv"),
            (
                "A=1 B=\"x y\" /opt/trt/tensorrt_llm/llmapi/trtllm-llmapi-launch pytest --x='a b'",
                "A=1 B=\"x y\" pytest --x='a b'",
            ),
            (
                "unset UCX_TLS && K=V trtllm-llmapi-launch  pytest",
                "unset UCX_TLS && K=V pytest",
            ),
            ("x;trtllm-llmapi-launch y", "x;y"),
            ("'trtllm-llmapi-launch' y", "y"),
            (
                "echo 'trtllm-llmapi-launch y'",
                "echo 'trtllm-llmapi-launch y'",
            ),
            ("my-trtllm-llmapi-launcher y", "my-trtllm-llmapi-launcher y"),
            ("trtllm-llmapi-launch-v2 y", "trtllm-llmapi-launch-v2 y"),
            ("$DIR/trtllm-llmapi-launch y", "$DIR/trtllm-llmapi-launch y"),
            (
                "echo \"unterminated trtllm-llmapi-launch",
                "echo \"unterminated trtllm-llmapi-launch",
            ),
            ("a\\ trtllm-llmapi-launch b", "a\\ trtllm-llmapi-launch b"),
            ("é trtllm-llmapi-launch ü", "é ü"),
            ("", ""),
        ];
        for &(input, expected) in cases {
            let got = Command::Shell(input.into()).without_llmapi_launch();
            assert_eq!(got, Command::Shell(expected.into()), "input: {input}");
        }
    }

    #[test]
    fn argv() {
        let argv = |words: &[&str]| Command::Argv(words.iter().map(OsString::from).collect());
        assert_eq!(
            argv(&[
                "/x/trtllm-llmapi-launch",
                "pytest",
                "trtllm-llmapi-launch.log"
            ])
            .without_llmapi_launch(),
            argv(&["pytest", "trtllm-llmapi-launch.log"])
        );
        assert!(
            argv(&["trtllm-llmapi-launch"])
                .without_llmapi_launch()
                .is_empty()
        );
    }

    #[test]
    fn rank_prefixes() {
        let cases: &[(&str, Result<&str, PrefixError>)] = &[
            // Before the launcher word: as the reference's trtllm-llmapi-launch saw it.
            (
                "unset UCX_TLS && K=V B=\"x y\" trtllm-llmapi-launch pytest -k a",
                Ok("unset UCX_TLS && K=V B=\"x y\" "),
            ),
            (
                "numactl -m 0,1 /opt/trtllm-llmapi-launch trtllm-serve x",
                Ok("numactl -m 0,1 "),
            ),
            ("trtllm-llmapi-launch pytest", Ok("")),
            ("cd /w;trtllm-llmapi-launch pytest", Ok("cd /w;")),
            (
                "( trtllm-llmapi-launch pytest )",
                Err(PrefixError::Enclosed),
            ),
            (
                "echo | trtllm-llmapi-launch pytest",
                Err(PrefixError::Enclosed),
            ),
            // Without it: the leading unset/export commands and assignments.
            (
                "unset A B && export C=1 D=\"$E\" && F=${G}/x H=1 pytest -v",
                Ok("unset A B && export C=1 D=\"$E\" && F=${G}/x H=1 "),
            ),
            ("unset A && pytest", Ok("unset A && ")),
            ("A=1 pytest", Ok("A=1 ")),
            ("pytest A=1", Ok("")),
            ("unset A; pytest", Ok("")),
            ("unset A", Ok("")),
            ("A=1", Ok("")),
            ("A=1 && pytest", Ok("")),
            ("A=1 | pytest", Ok("")),
            ("1A=2 pytest", Ok("")),
            ("'A=1' pytest", Ok("")),
            ("", Ok("")),
        ];
        for (script, expected) in cases {
            let got = Command::Shell((*script).into()).rank_prefix();
            assert_eq!(got.as_deref(), expected.as_deref(), "script: {script}");
        }
        let argv = Command::Argv(vec!["A=1".into(), "trtllm-llmapi-launch".into()]);
        assert_eq!(argv.rank_prefix().as_deref(), Ok(""));
    }

    proptest::proptest! {
        #[test]
        fn lexer_never_panics(script in "\\PC{0,40}") {
            let _ = strip_word_from_shell(&script);
            if let Ok(prefix) = Command::Shell(script.clone()).rank_prefix() {
                proptest::prop_assert!(script.starts_with(&prefix));
            }
        }
    }
}
