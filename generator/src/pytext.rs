//! Python text semantics that the reference generator relies on.
//!
//! The reference reads its inputs in Python text mode and tokenises them with `str.split()` and
//! `str.strip()`. Byte-identical compatibility needs the same rules: universal newlines on read
//! and Python's notion of whitespace, which is Unicode `White_Space` plus the four ASCII
//! information separators `\x1c`..`\x1f`.

use std::borrow::Cow;

/// Translates `\r\n` and lone `\r` to `\n`, as Python's text-mode `read()` does.
pub fn universal_newlines(text: &str) -> Cow<'_, str> {
    if !text.contains('\r') {
        return Cow::Borrowed(text);
    }
    Cow::Owned(text.replace("\r\n", "\n").replace('\r', "\n"))
}

/// `str.isspace()` for one character.
pub fn is_space(c: char) -> bool {
    c.is_whitespace() || ('\x1c'..='\x1f').contains(&c)
}

/// `str.split()` without arguments: runs of whitespace separate, no empty tokens.
pub fn split(text: &str) -> impl Iterator<Item = &str> {
    text.split(is_space).filter(|token| !token.is_empty())
}

/// `str.strip()` without arguments.
pub fn strip(text: &str) -> &str {
    text.trim_matches(is_space)
}

/// The first line of `text` as Python's `readline()` returns it, without the newline.
pub fn first_line(text: &str) -> &str {
    text.split(['\n', '\r']).next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newlines_are_translated_like_python_text_mode() {
        assert_eq!(universal_newlines("a\r\nb\rc\n"), "a\nb\nc\n");
        assert_eq!(universal_newlines("plain\n"), "plain\n");
    }

    #[test]
    fn whitespace_matches_python_isspace() {
        let tokens: Vec<_> = split(" a\t\tb\x1cc\u{a0}d\u{3000}e\n").collect();
        assert_eq!(tokens, ["a", "b", "c", "d", "e"]);
        assert_eq!(strip("\x1f x \u{85}"), "x");
        assert!(!is_space('\u{200b}'));
    }

    #[test]
    fn first_line_stops_at_any_newline() {
        assert_eq!(first_line("one\r\ntwo"), "one");
        assert_eq!(first_line(""), "");
    }
}
