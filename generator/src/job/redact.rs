//! Redaction of secrets from every line `launch-gen verdict` prints or writes.
//!
//! Three rules, applied in this order:
//!
//! 1. the values (6 characters or more) of the secret-named environment variables of the
//!    tool's own process ([`is_secret_env_name`]) → `***`;
//! 2. `name=value` and `name: value` (also quoted, as in JSON) where the name looks like a
//!    secret's ([`is_secret_field_name`]) → `name=***` (the separator is kept as written);
//! 3. any run of 32 or more hex digits (an HMAC key's form) → `***`.
//!
//! Pure: the environment comes in as a list of pairs; nothing here prints it.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::{Captures, Regex};

/// What a redacted secret is replaced with.
pub const MASK: &str = "***";
/// Environment values shorter than this are not redacted (`1`, `true`, `none` are no secrets
/// and would redact half of every line).
pub const MIN_SECRET_LEN: usize = 6;

/// Words in the name of an environment variable that make its value a secret.
const SECRET_WORDS: &[&str] = &[
    "TOKEN",
    "PASSWORD",
    "PASSWD",
    "SECRET",
    "API_KEY",
    "HMAC",
    "CREDENTIAL",
];

/// Whether the value of environment variable `name` is a secret: the name contains one of
/// [`SECRET_WORDS`] (case-insensitive) or ends with `_KEY`.
pub fn is_secret_env_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    upper.ends_with("_KEY") || SECRET_WORDS.iter().any(|word| upper.contains(word))
}

/// A field name in log text that holds a secret: like [`is_secret_env_name`], except that
/// `TOKEN` must not run on into a letter, so token counts (`max_num_tokens=8192`) and
/// `tokenizer: /models/x` stay readable; `-KEY`, `.KEY` and `apikey` count too.
static SECRET_FIELD: LazyLock<Regex> = LazyLock::new(|| {
    let name = r"[A-Za-z0-9_.\-]*";
    let secret_name = format!(
        r"{name}(?:password|passwd|secret|credential|hmac|api[_\-]?key){name}|{name}token(?:[_.\-0-9]{name})?|{name}[_.\-]key"
    );
    Regex::new(&format!(
        r#"(?i)({secret_name})(["']?)(\s*[=:]\s*)("[^"]*"|'[^']*'|[^\s"',;&)\]}}]+)"#
    ))
    .expect("a valid regex")
});

static HEX_RUN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[0-9A-Fa-f]{32,}").expect("a valid regex"));

/// Whether `name` (a field name in log text) holds a secret.
pub fn is_secret_field_name(name: &str) -> bool {
    let probe = format!("{name}=x");
    SECRET_FIELD
        .captures(&probe)
        .and_then(|captures| captures.get(1))
        .is_some_and(|found| found.start() == 0 && found.end() == name.len())
}

/// Redacts secrets from text.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Secret values, longest first (so that a value containing another goes whole).
    values: Vec<String>,
}

impl Redactor {
    /// A redactor for the secrets among `vars` (name, value), such as the process environment.
    pub fn new<I, K, V>(vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut values: Vec<String> = vars
            .into_iter()
            .filter(|(name, value)| {
                is_secret_env_name(name.as_ref())
                    && value.as_ref().chars().count() >= MIN_SECRET_LEN
            })
            .map(|(_, value)| value.as_ref().to_owned())
            .collect();
        values.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        values.dedup();
        Self { values }
    }

    /// `text` with every secret replaced by [`MASK`].
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut text = Cow::Borrowed(text);
        for value in &self.values {
            if text.contains(value.as_str()) {
                text = Cow::Owned(text.replace(value.as_str(), MASK));
            }
        }
        if SECRET_FIELD.is_match(&text) {
            let replaced = SECRET_FIELD.replace_all(&text, |captures: &Captures<'_>| {
                let value = &captures[4];
                let masked = match value.chars().next() {
                    Some(quote @ ('"' | '\'')) => format!("{quote}{MASK}{quote}"),
                    _ => MASK.to_owned(),
                };
                format!("{}{}{}{masked}", &captures[1], &captures[2], &captures[3])
            });
            text = Cow::Owned(replaced.into_owned());
        }
        if HEX_RUN.is_match(&text) {
            text = Cow::Owned(HEX_RUN.replace_all(&text, MASK).into_owned());
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_env_names() {
        let cases: &[(&str, bool)] = &[
            ("HF_TOKEN", true),
            ("hf_token", true),
            ("DB_PASSWORD", true),
            ("MYSQL_PASSWD", true),
            ("AWS_SECRET_ACCESS_KEY", true),
            ("OPENAI_API_KEY", true),
            ("TLLM_SPAWN_PROXY_HMAC", true),
            ("GOOGLE_APPLICATION_CREDENTIALS", true),
            ("SSH_KEY", true),
            ("TOKENIZERS_PARALLELISM", true),
            ("KEYBOARD", false),
            ("SLURM_JOB_ID", false),
            ("PATH", false),
            ("MONKEY", false),
        ];
        for (name, want) in cases {
            assert_eq!(is_secret_env_name(name), *want, "{name}");
        }
    }

    #[test]
    fn secret_field_names() {
        let cases: &[(&str, bool)] = &[
            ("token", true),
            ("HF_TOKEN", true),
            ("accessToken", true),
            ("token_file", true),
            ("password", true),
            ("db.password", true),
            ("api_key", true),
            ("apikey", true),
            ("x-api-key", true),
            ("hmac_key", true),
            ("client_secret", true),
            ("ssh-key", true),
            ("max_num_tokens", false),
            ("tokens", false),
            ("tokenizer", false),
            ("key", false),
            ("monkey", false),
            ("Error", false),
        ];
        for (name, want) in cases {
            assert_eq!(is_secret_field_name(name), *want, "{name}");
        }
    }

    #[test]
    fn redaction_table() {
        let redactor = Redactor::new([
            ("HF_TOKEN", "hf_abcdefghijkl"),
            ("MY_API_KEY", "short"),
            ("PATH", "/usr/bin:/bin"),
            ("DB_PASSWORD", "hunter2hunter2"),
            ("DB_PASSWORD_OLD", "abc12"),
        ]);
        let cases: &[(&str, &str)] = &[
            ("nothing to hide", "nothing to hide"),
            ("0: using hf_abcdefghijkl now", "0: using *** now"),
            ("pw hunter2hunter2 and abc12", "pw *** and abc12"),
            ("value short stays", "value short stays"),
            ("PATH is /usr/bin:/bin", "PATH is /usr/bin:/bin"),
            ("key 0123456789abcdef0123456789ABCDEF!", "key ***!"),
            (
                "not a key 0123456789abcdef0123456789abcde",
                "not a key 0123456789abcdef0123456789abcde",
            ),
            ("0: token=abc123 next", "0: token=*** next"),
            ("password: hunter3 ok", "password: *** ok"),
            ("PASSWORD = 'a b c' ok", "PASSWORD = '***' ok"),
            (
                r#"{"api_key": "sk-1", "n": 1}"#,
                r#"{"api_key": "***", "n": 1}"#,
            ),
            (
                "GET /x?user=u&access_token=tok1&y=2",
                "GET /x?user=u&access_token=***&y=2",
            ),
            ("export MY_KEY=value1", "export MY_KEY=***"),
            (
                "max_num_tokens=8192 tokens: 512",
                "max_num_tokens=8192 tokens: 512",
            ),
            ("tokenizer: /models/x", "tokenizer: /models/x"),
            ("Error: failed", "Error: failed"),
            ("HF_TOKEN=hf_abcdefghijkl", "HF_TOKEN=***"),
        ];
        for (text, want) in cases {
            assert_eq!(redactor.redact(text), *want, "{text:?}");
        }
    }

    #[test]
    fn longer_values_go_first() {
        let redactor = Redactor::new([("A_TOKEN", "abcdef"), ("B_TOKEN", "abcdefgh")]);
        assert_eq!(redactor.redact("x abcdefgh y abcdef"), "x *** y ***");
    }

    #[test]
    fn unchanged_text_is_borrowed() {
        let redactor = Redactor::default();
        assert!(matches!(redactor.redact("plain"), Cow::Borrowed("plain")));
    }
}
