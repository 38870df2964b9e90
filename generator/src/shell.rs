//! Shell quoting and a small, strict shell-word reader.
//!
//! Native mode never builds shell code by pasting strings: every value goes through [`quote`],
//! the one POSIX single-quote function. Inputs that are themselves shell text (the srun
//! argument file, the `export pytestCommand=` line of a script prefix) are read with
//! [`parse_words`] and [`parse_assignment_value`], which understand quotes and backslashes
//! instead of splitting on whitespace, so an argument with a space or a quote survives.

use thiserror::Error;

/// Quotes `value` for POSIX shells: unchanged when it is made only of characters that are
/// never special, else wrapped in single quotes with every `'` written as `'\''`.
pub fn quote(value: &str) -> String {
    let is_plain = |c: char| c.is_ascii_alphanumeric() || "%+-./:=@_".contains(c);
    if !value.is_empty() && value.chars().all(is_plain) {
        return value.to_owned();
    }
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// A piece of one shell word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Text taken literally.
    Literal(String),
    /// A `$NAME` or `${NAME}` reference, expanded when the script runs.
    Var(String),
}

/// One shell word: literal text and variable references, concatenated.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Word(pub Vec<Segment>);

impl Word {
    /// The word as shell code: literals through [`quote`], variables as `"${NAME}"`.
    pub fn to_shell(&self) -> String {
        if self.0.is_empty() {
            return quote("");
        }
        let mut code = String::new();
        for segment in &self.0 {
            match segment {
                Segment::Literal(text) => code.push_str(&quote(text)),
                Segment::Var(name) => code.push_str(&format!("\"${{{name}}}\"")),
            }
        }
        code
    }

    /// The word as written, with variables shown as `${NAME}`; for matching option names.
    pub fn display(&self) -> String {
        let mut text = String::new();
        for segment in &self.0 {
            match segment {
                Segment::Literal(literal) => text.push_str(literal),
                Segment::Var(name) => text.push_str(&format!("${{{name}}}")),
            }
        }
        text
    }

    fn push_char(&mut self, c: char) {
        if let Some(Segment::Literal(text)) = self.0.last_mut() {
            text.push(c);
        } else {
            self.0.push(Segment::Literal(c.to_string()));
        }
    }
}

/// Why a piece of shell text could not be read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ShellWordError {
    #[error("unterminated {quote} quote")]
    Unterminated { quote: &'static str },
    #[error("unsupported shell syntax `{syntax}`: only `$NAME` and `${{NAME}}` are expanded")]
    Unsupported { syntax: String },
    #[error("the value contains a NUL byte")]
    Nul,
}

/// Splits shell text into words the way the shell would, without running anything.
///
/// Single quotes, double quotes, backslashes and `#` comments follow POSIX rules;
/// `$NAME` and `${NAME}` (outside single quotes) stay variable references. Command
/// substitution, backticks and other parameter expansions are rejected, not executed.
pub fn parse_words(text: &str) -> Result<Vec<Word>, ShellWordError> {
    let mut reader = Reader {
        chars: text.chars().collect(),
        pos: 0,
        keep_dollar: false,
    };
    let mut words = Vec::new();
    loop {
        reader.skip_blanks_and_comments();
        if reader.peek().is_none() {
            return Ok(words);
        }
        words.push(reader.word()?);
    }
}

/// Reads the value of a shell assignment, `text` starting right after the `=`.
///
/// Quotes and backslashes are resolved; `$` and backticks are kept as written, because the
/// value is a command string that a later `bash -c` (the reference: `eval`) expands.
pub fn parse_assignment_value(text: &str) -> Result<String, ShellWordError> {
    let mut reader = Reader {
        chars: text.chars().collect(),
        pos: 0,
        keep_dollar: true,
    };
    Ok(reader.word()?.display())
}

/// Finds the first `export NAME=` (or `NAME=`) line of a script and reads its value.
pub fn find_assignment(script: &str, name: &str) -> Option<Result<String, ShellWordError>> {
    let export = format!("export {name}=");
    let plain = format!("{name}=");
    let mut offset = 0;
    for line in script.split_inclusive('\n') {
        let start = offset + (line.len() - line.trim_start().len());
        offset += line.len();
        let rest = &script[start..];
        for prefix in [&export, &plain] {
            if let Some(value) = rest.strip_prefix(prefix.as_str()) {
                return Some(parse_assignment_value(value));
            }
        }
    }
    None
}

struct Reader {
    chars: Vec<char>,
    pos: usize,
    keep_dollar: bool,
}

impl Reader {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        Some(c)
    }

    fn skip_blanks_and_comments(&mut self) {
        while let Some(c) = self.peek() {
            if c == '#' {
                while self.peek().is_some_and(|c| c != '\n') {
                    self.pos += 1;
                }
            } else if c.is_whitespace() {
                self.pos += 1;
            } else {
                return;
            }
        }
    }

    fn word(&mut self) -> Result<Word, ShellWordError> {
        let mut word = Word::default();
        while let Some(c) = self.peek() {
            if c.is_whitespace() {
                break;
            }
            self.pos += 1;
            match c {
                '\0' => return Err(ShellWordError::Nul),
                '\'' => loop {
                    match self.next() {
                        None => return Err(ShellWordError::Unterminated { quote: "single" }),
                        Some('\0') => return Err(ShellWordError::Nul),
                        Some('\'') => break,
                        Some(c) => word.push_char(c),
                    }
                },
                '"' => loop {
                    match self.next() {
                        None => return Err(ShellWordError::Unterminated { quote: "double" }),
                        Some('\0') => return Err(ShellWordError::Nul),
                        Some('"') => break,
                        Some('\\') => match self.next() {
                            None => return Err(ShellWordError::Unterminated { quote: "double" }),
                            Some('\n') => {}
                            Some(c @ ('$' | '`' | '"' | '\\')) => word.push_char(c),
                            Some(c) => {
                                word.push_char('\\');
                                word.push_char(c);
                            }
                        },
                        Some('$') => self.dollar(&mut word)?,
                        Some('`') => self.backtick(&mut word)?,
                        Some(c) => word.push_char(c),
                    }
                },
                '\\' => match self.next() {
                    None | Some('\n') => {}
                    Some('\0') => return Err(ShellWordError::Nul),
                    Some(c) => word.push_char(c),
                },
                '$' => self.dollar(&mut word)?,
                '`' => self.backtick(&mut word)?,
                c => word.push_char(c),
            }
        }
        Ok(word)
    }

    fn backtick(&mut self, word: &mut Word) -> Result<(), ShellWordError> {
        if self.keep_dollar {
            word.push_char('`');
            return Ok(());
        }
        Err(ShellWordError::Unsupported {
            syntax: "`".to_owned(),
        })
    }

    /// Handles a `$` that was just consumed.
    fn dollar(&mut self, word: &mut Word) -> Result<(), ShellWordError> {
        if self.keep_dollar {
            word.push_char('$');
            return Ok(());
        }
        let is_name_start = |c: char| c.is_ascii_alphabetic() || c == '_';
        let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
        match self.peek() {
            Some('{') => {
                let start = self.pos + 1;
                let end = self.chars[start..]
                    .iter()
                    .position(|&c| c == '}')
                    .map(|n| start + n);
                let name: String = match end {
                    Some(end) => self.chars[start..end].iter().collect(),
                    None => return Err(ShellWordError::Unterminated { quote: "`${`" }),
                };
                let valid = name.starts_with(is_name_start) && name.chars().all(is_name);
                if !valid {
                    return Err(ShellWordError::Unsupported {
                        syntax: format!("${{{name}}}"),
                    });
                }
                self.pos = end.map_or(self.pos, |end| end + 1);
                word.0.push(Segment::Var(name));
            }
            Some(c) if is_name_start(c) => {
                let mut name = String::new();
                while let Some(c) = self.peek().filter(|&c| is_name(c)) {
                    name.push(c);
                    self.pos += 1;
                }
                word.0.push(Segment::Var(name));
            }
            Some(c) if c.is_whitespace() || c == '"' => word.push_char('$'),
            None => word.push_char('$'),
            Some(c) => {
                return Err(ShellWordError::Unsupported {
                    syntax: format!("${c}"),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(text: &str) -> Segment {
        Segment::Literal(text.to_owned())
    }

    #[test]
    fn quote_leaves_plain_words_and_single_quotes_the_rest() {
        let cases = [
            ("rank-launch", "rank-launch"),
            ("/a/b_c.sh", "/a/b_c.sh"),
            ("", "''"),
            ("a b", "'a b'"),
            ("it's", r"'it'\''s'"),
            ("$(touch x)", "'$(touch x)'"),
            ("`x`", "'`x`'"),
            ("a\nb", "'a\nb'"),
        ];
        for (value, expected) in cases {
            assert_eq!(quote(value), expected, "value {value:?}");
        }
    }

    #[test]
    fn words_follow_shell_quoting() {
        let words = parse_words("a 'b c' \"d\\\"e\" f\\ g # comment\n--name=x-${SLURM_JOB_ID}")
            .expect("valid words");
        let shown: Vec<String> = words.iter().map(Word::display).collect();
        assert_eq!(
            shown,
            ["a", "b c", "d\"e", "f g", "--name=x-${SLURM_JOB_ID}"]
        );
        assert_eq!(
            words[4].0,
            [lit("--name=x-"), Segment::Var("SLURM_JOB_ID".to_owned())]
        );
        assert_eq!(words[4].to_shell(), "--name=x-\"${SLURM_JOB_ID}\"");
        assert_eq!(words[1].to_shell(), "'b c'");
    }

    #[test]
    fn words_reject_what_would_execute() {
        let cases = [
            (
                "$(touch /tmp/x)",
                "unsupported shell syntax `$(`: only `$NAME` and `${NAME}` are expanded",
            ),
            (
                "`id`",
                "unsupported shell syntax ```: only `$NAME` and `${NAME}` are expanded",
            ),
            (
                "${A:-b}",
                "unsupported shell syntax `${A:-b}`: only `$NAME` and `${NAME}` are expanded",
            ),
            ("'open", "unterminated single quote"),
            ("\"open", "unterminated double quote"),
        ];
        for (text, message) in cases {
            let error = parse_words(text).expect_err(text);
            assert_eq!(error.to_string(), message, "text {text:?}");
        }
    }

    #[test]
    fn assignment_values_resolve_quotes_and_keep_expansions() {
        let cases = [
            ("\"A=1 pytest -k 'x y'\"", "A=1 pytest -k 'x y'"),
            ("\"__L=\"-t=2\" pytest\"", "__L=-t=2 pytest"),
            ("'$HOME/x' tail", "$HOME/x"),
            ("\"$(id) `date`\"", "$(id) `date`"),
            ("plain\\ word", "plain word"),
        ];
        for (text, expected) in cases {
            assert_eq!(
                parse_assignment_value(text).as_deref(),
                Ok(expected),
                "text {text:?}"
            );
        }
    }

    #[test]
    fn find_assignment_takes_the_first_export_and_spans_lines() {
        let script = "#!/bin/bash\n  export pytestCommand=\"a\nb\"\nexport pytestCommand=c\n";
        assert_eq!(
            find_assignment(script, "pytestCommand"),
            Some(Ok("a\nb".to_owned()))
        );
        assert_eq!(find_assignment("x=1\n", "pytestCommand"), None);
    }
}
