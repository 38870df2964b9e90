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

/// Python's `repr()` of a `str`: single quotes unless the text holds a single quote and no
/// double quote; backslash, the quote, `\t \n \r` escaped; other non-printable characters as
/// `\xhh`, `\uhhhh` or `\Uhhhhhhhh` (printable is approximated: control characters,
/// separators other than the space, and a few invisible format characters are not).
pub fn repr_str(text: &str) -> String {
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(text.len() + 2);
    out.push(quote);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if !printable(c) => {
                let n = u32::from(c);
                if n < 0x100 {
                    out.push_str(&format!("\\x{n:02x}"));
                } else if n < 0x10000 {
                    out.push_str(&format!("\\u{n:04x}"));
                } else {
                    out.push_str(&format!("\\U{n:08x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// `str.isprintable()` for one character, for the characters configs hold.
fn printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    !(c.is_control()
        || c.is_whitespace()
        || matches!(c, '\u{ad}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{feff}'))
}

/// Python's `repr()` of a `float` (shortest round-trip digits; exponent form below 1e-4 and
/// from 1e16 on, with a sign and at least two exponent digits).
pub fn repr_float(value: f64) -> String {
    if value.is_nan() {
        return "nan".into();
    }
    if value.is_infinite() {
        return if value > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        };
    }
    if value == 0.0 {
        return if value.is_sign_negative() {
            "-0.0".into()
        } else {
            "0.0".into()
        };
    }
    // Rust's `{:e}` gives the shortest round-trip digits: `d[.ddd]e[-]x`.
    let sci = format!("{:e}", value.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let sign = if value < 0.0 { "-" } else { "" };
    if (-4..16).contains(&exp) {
        let n = digits.len() as i32;
        let text = if exp >= n - 1 {
            format!("{digits}{}.0", "0".repeat((exp - n + 1) as usize))
        } else if exp >= 0 {
            let (int, frac) = digits.split_at((exp + 1) as usize);
            format!("{int}.{frac}")
        } else {
            format!("0.{}{digits}", "0".repeat((-exp - 1) as usize))
        };
        format!("{sign}{text}")
    } else {
        let (first, rest) = digits.split_at(1);
        let mantissa = if rest.is_empty() {
            first.to_string()
        } else {
            format!("{first}.{rest}")
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{mantissa}e{esign}{:02}", exp.abs())
    }
}

/// Python's `repr()` of what `yaml.safe_load` gives for a YAML value, for the values configs
/// hold (strings, integers, floats, booleans, null, lists, mappings). YAML 1.1-only spellings
/// (`yes`, `on`, `017`, `1:30`), which PyYAML types and serde_norway (YAML 1.2) keeps as text,
/// come out as strings.
pub fn repr_value(value: &serde_norway::Value) -> String {
    use serde_norway::Value;
    match value {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (None, Some(u), _) => u.to_string(),
            (None, None, Some(f)) => repr_float(f),
            _ => n.to_string(),
        },
        Value::String(s) => repr_str(s),
        Value::Sequence(items) => {
            let parts: Vec<String> = items.iter().map(repr_value).collect();
            format!("[{}]", parts.join(", "))
        }
        Value::Mapping(map) => {
            let parts: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {}", repr_value(k), repr_value(v)))
                .collect();
            format!("{{{}}}", parts.join(", "))
        }
        Value::Tagged(tagged) => repr_value(&tagged.value),
    }
}

/// An integer as Python's `int()` read it from text: exact, whatever its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PyInt {
    negative: bool,
    /// ASCII digits without leading zeros (`"0"` for zero).
    digits: String,
}

impl PyInt {
    /// The value, where it fits.
    pub fn to_i128(&self) -> Option<i128> {
        let magnitude: i128 = self.digits.parse().ok()?;
        Some(if self.negative { -magnitude } else { magnitude })
    }

    /// Whether the value is above zero.
    pub fn is_positive(&self) -> bool {
        !self.negative && self.digits != "0"
    }
}

impl std::fmt::Display for PyInt {
    /// Python's `str()` of the value.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.negative {
            f.write_str("-")?;
        }
        f.write_str(&self.digits)
    }
}

/// CPython's default `sys.get_int_max_str_digits()`: longer decimal texts are a `ValueError`.
const MAX_INT_DIGITS: usize = 4300;

/// The first code point of each run of ten Unicode decimal digits (category Nd, Unicode 14.0,
/// as CPython 3.11's `unicodedata.decimal`), which `int()` accepts like `0`-`9`.
const DECIMAL_ZEROS: [u32; 66] = [
    0x30, 0x660, 0x6F0, 0x7C0, 0x966, 0x9E6, 0xA66, 0xAE6, 0xB66, 0xBE6, 0xC66, 0xCE6, 0xD66,
    0xDE6, 0xE50, 0xED0, 0xF20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0x1A80, 0x1A90,
    0x1B50, 0x1BB0, 0x1C40, 0x1C50, 0xA620, 0xA8D0, 0xA900, 0xA9D0, 0xA9F0, 0xAA50, 0xABF0, 0xFF10,
    0x104A0, 0x10D30, 0x11066, 0x110F0, 0x11136, 0x111D0, 0x112F0, 0x11450, 0x114D0, 0x11650,
    0x116C0, 0x11730, 0x118E0, 0x11950, 0x11C50, 0x11D50, 0x11DA0, 0x16A60, 0x16AC0, 0x16B50,
    0x1D7CE, 0x1D7D8, 0x1D7E2, 0x1D7EC, 0x1D7F6, 0x1E140, 0x1E2F0, 0x1E950, 0x1FBF0,
];

/// The value of a decimal digit of any script (Python's `unicodedata.decimal`), else `None`.
pub fn decimal_digit(c: char) -> Option<u8> {
    let code = u32::from(c);
    let index = DECIMAL_ZEROS.partition_point(|&zero| zero <= code);
    let zero = DECIMAL_ZEROS[index.checked_sub(1)?];
    u8::try_from(code - zero).ok().filter(|&digit| digit < 10)
}

/// Python's `int(text)` for a `str` (base 10): optional surrounding whitespace (Unicode
/// `White_Space`; unlike `str.strip()`, not `\x1c`-`\x1f`), an optional `+` or `-`, then decimal
/// digits of any script with single `_` between digits (`0_2`), leading zeros allowed; at most
/// 4300 digits. `None` where Python raises `ValueError`.
pub fn parse_int(text: &str) -> Option<PyInt> {
    let body = text.trim_matches(char::is_whitespace);
    let (negative, body) = match body.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, body.strip_prefix('+').unwrap_or(body)),
    };
    let mut digits = String::new();
    let mut count = 0usize;
    let mut previous_was_digit = false;
    for c in body.chars() {
        if c == '_' {
            if !previous_was_digit {
                return None;
            }
            previous_was_digit = false;
            continue;
        }
        let digit = decimal_digit(c)?;
        count += 1;
        if count > MAX_INT_DIGITS {
            return None;
        }
        if !(digits.is_empty() && digit == 0) {
            digits.push(char::from(b'0' + digit));
        }
        previous_was_digit = true;
    }
    if !previous_was_digit {
        // Empty, a lone sign, or a trailing `_`.
        return None;
    }
    if digits.is_empty() {
        digits.push('0');
    }
    Some(PyInt {
        negative: negative && digits != "0",
        digits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected values from CPython 3.11's `repr()`.
    #[test]
    fn reprs_match_python() {
        let strs = [
            ("", "''"),
            ("abc", "'abc'"),
            ("it's", "\"it's\""),
            ("say \"hi\"", "'say \"hi\"'"),
            ("both ' \"", "'both \\' \"'"),
            ("back\\slash", "'back\\\\slash'"),
            ("tab\tnl\ncr\r", "'tab\\tnl\\ncr\\r'"),
            ("\x01\x7f\u{a0}", "'\\x01\\x7f\\xa0'"),
            ("\u{200b}\u{2028}", "'\\u200b\\u2028'"),
            ("héllo wörld ✓", "'héllo wörld ✓'"),
            ("/lustre/img.sqsh", "'/lustre/img.sqsh'"),
        ];
        for (input, expected) in strs {
            assert_eq!(repr_str(input), expected, "{input:?}");
        }
        let floats = [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (2.5, "2.5"),
            (100.0, "100.0"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.5e300, "1.5e+300"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.2345678901234568e17, "1.2345678901234568e+17"),
            (-3.25, "-3.25"),
            (123456.789, "123456.789"),
        ];
        for (input, expected) in floats {
            assert_eq!(repr_float(input), expected, "{input}");
        }
        let yaml: serde_norway::Value =
            serde_norway::from_str("{a: [1, 2.0, true, null, x], b: {c: 'd'}}").unwrap();
        assert_eq!(
            repr_value(&yaml),
            "{'a': [1, 2.0, True, None, 'x'], 'b': {'c': 'd'}}"
        );
    }

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

    /// Expected values from CPython 3.11's `int()`.
    #[test]
    fn int_parsing_matches_python() {
        let accepted = [
            ("2", "2"),
            (" 2", "2"),
            ("+2", "2"),
            ("0_2", "2"),
            ("-3", "-3"),
            ("-0", "0"),
            ("0064", "64"),
            ("1_000", "1000"),
            ("0_0", "0"),
            ("\u{85}5", "5"),
            ("\u{a0}5\u{3000}", "5"),
            ("\t7\n", "7"),
            ("\u{664}\u{662}", "42"),
            ("\u{ff11}\u{ff12}", "12"),
            (
                "123456789012345678901234567890123456789012345",
                "123456789012345678901234567890123456789012345",
            ),
        ];
        for (text, shown) in accepted {
            let value = parse_int(text).unwrap_or_else(|| panic!("{text:?} is an int"));
            assert_eq!(value.to_string(), shown, "{text:?}");
        }
        for text in [
            "", "+", "-", "x", "1 2", "1_", "_1", "+_1", "1__0", "\x1c5", "5\x1f", "1.0", "0x10",
            "--1", "+-1", "1e3",
        ] {
            assert_eq!(parse_int(text), None, "{text:?}");
        }
        assert!(parse_int(&"1".repeat(4300)).is_some());
        assert_eq!(parse_int(&"1".repeat(4301)), None);
        assert_eq!(parse_int("-7").and_then(|v| v.to_i128()), Some(-7));
        assert_eq!(parse_int(&"9".repeat(60)).and_then(|v| v.to_i128()), None);
        assert!(parse_int("+1").is_some_and(|v| v.is_positive()));
        assert!(!parse_int("-0").is_some_and(|v| v.is_positive()));
        assert_eq!(decimal_digit('/'), None);
        assert_eq!(decimal_digit('9'), Some(9));
        assert_eq!(decimal_digit('\u{1fbf9}'), Some(9));
        assert_eq!(decimal_digit('\u{1fbfa}'), None);
    }
}
