//! What a step log says: its first error-looking line, the router's first complaint about a
//! server that does not answer, its last lines. Pure: bytes in, lines out; the bounded reading
//! is [`super::io`]'s.

use std::sync::LazyLock;

use regex::Regex;

/// How many lines of a log the evidence shows.
pub const TAIL_LINES: usize = 20;
/// Every line printed is cut to this many bytes (on a character boundary).
pub const LINE_BYTES: usize = 300;
/// A scanned line is kept up to this many bytes (far more than is ever printed, so that a
/// secret is redacted whole before the line is cut).
pub const SCAN_LINE_BYTES: usize = 4096;

/// Substrings that make a log line look like an error, case-sensitive as the programs write
/// them (`error:` and `Error:` but not every "error" in prose).
pub const ERROR_MARKERS: &[&str] = &[
    "Traceback (most recent call last)",
    "MPI_ABORT",
    "srun: error",
    "CUDA error",
    "panicked",
    "Killed",
    "Segmentation fault",
    "core dumped",
    "Error:",
    "error:",
    "ERROR",
    "RuntimeError",
    "Exception",
    "FATAL",
    "fatal",
    "Aborted",
    "out of memory",
];

/// Lines that carry an error marker but report the job's own stop, a consequence and never a
/// cause: Slurm's notice that a step or job was cancelled (`scancel` stops the steps).
pub const STOP_NOTICES: &[&str] = &["CANCELLED AT", "_step_signal: Terminating"];

/// Whether `line` looks like an error.
pub fn is_error_line(line: &str) -> bool {
    ERROR_MARKERS.iter().any(|marker| line.contains(marker))
        && !STOP_NOTICES.iter().any(|notice| line.contains(notice))
}

static UNANSWERED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"has not answered|did not answer|no answer").expect("a valid regex")
});
static SERVER_ROLE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b(?:GEN|CTX)_\d+\b").expect("a valid regex"));
static RANK_PREFIX: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\d+: ").expect("a valid regex"));

/// The server role (`CTX_0`) that a router line says did not answer, if it is such a line.
pub fn unanswered_server(line: &str) -> Option<&str> {
    if !UNANSWERED.is_match(line) {
        return None;
    }
    SERVER_ROLE.find(line).map(|found| found.as_str())
}

/// `line` without rank-launch's `<rank>: ` label.
pub fn strip_rank_prefix(line: &str) -> &str {
    match RANK_PREFIX.find(line) {
        Some(found) => &line[found.end()..],
        None => line,
    }
}

static LEVEL_PREFIX: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?i:warning|warn|error|info|notice|debug):\s*").expect("a valid regex")
});
/// A program's own bracketed line prefix (`[shim-role DISAGG_SERVER host=n1] `).
static BRACKET_PREFIX: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\[[^\]]*\]\s+").expect("a valid regex"));

/// A router line as quoted in a verdict: without the rank label, a bracketed program prefix
/// and a leading log level (`0: [router n1] warning: CTX_0 ...` → `CTX_0 ...`), trailing blanks
/// dropped.
pub fn router_words(line: &str) -> &str {
    let line = strip_rank_prefix(line);
    let line = match BRACKET_PREFIX.find(line) {
        Some(found) => &line[found.end()..],
        None => line,
    };
    let line = match LEVEL_PREFIX.find(line) {
        Some(found) => &line[found.end()..],
        None => line,
    };
    line.trim_end()
}

/// `line` cut to at most `max` bytes, on a character boundary.
pub fn cut(line: &str, max: usize) -> &str {
    if line.len() <= max {
        return line;
    }
    let mut end = max;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    &line[..end]
}

/// A line of a log with its 1-based number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberedLine {
    /// 1-based.
    pub number: usize,
    /// The line (without its newline; invalid UTF-8 replaced).
    pub text: String,
}

/// The router's first line about a server that did not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unanswered {
    /// The server role it names.
    pub server: String,
    /// The line.
    pub line: NumberedLine,
}

/// What was read of one step log: its last lines and its first error-looking line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFacts {
    /// The last [`TAIL_LINES`] lines, or why the log could not be read.
    pub tail: Result<Vec<String>, String>,
    /// The first error-looking line (in the first 64 MiB).
    pub first_error: Option<NumberedLine>,
}

/// One line of raw log bytes as text: the newline and a carriage return dropped, at most
/// [`SCAN_LINE_BYTES`] kept, invalid UTF-8 replaced.
pub fn line_text(raw: &[u8]) -> String {
    let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    let raw = &raw[..raw.len().min(SCAN_LINE_BYTES)];
    String::from_utf8_lossy(raw).into_owned()
}

/// Looks at a log's lines from the start, one at a time.
#[derive(Debug, Clone, Default)]
pub struct LogScanner {
    want_unanswered: bool,
    lines: usize,
    /// The first error-looking line.
    pub first_error: Option<NumberedLine>,
    /// The first router line about a server that did not answer (when asked for).
    pub unanswered: Option<Unanswered>,
}

impl LogScanner {
    /// A scanner for the first error line, and also for the router's complaints when
    /// `want_unanswered`.
    pub fn new(want_unanswered: bool) -> Self {
        Self {
            want_unanswered,
            ..Self::default()
        }
    }

    /// Takes the next line (raw bytes, newline optional).
    pub fn feed(&mut self, raw: &[u8]) {
        self.lines += 1;
        if self.done() {
            return;
        }
        let text = line_text(raw);
        if self.first_error.is_none() && is_error_line(&text) {
            self.first_error = Some(NumberedLine {
                number: self.lines,
                text: text.clone(),
            });
        }
        if self.want_unanswered && self.unanswered.is_none() {
            if let Some(server) = unanswered_server(&text) {
                self.unanswered = Some(Unanswered {
                    server: server.to_owned(),
                    line: NumberedLine {
                        number: self.lines,
                        text,
                    },
                });
            }
        }
    }

    /// Nothing more to look for.
    pub fn done(&self) -> bool {
        self.first_error.is_some() && (!self.want_unanswered || self.unanswered.is_some())
    }
}

/// The last `max` lines of `window`, the end of a log. When `from_start` is false the window
/// begins inside the file, so its first piece may be part of a longer line and is dropped
/// (unless it is all there is). A final line without a newline (being written) counts.
pub fn tail_lines(window: &[u8], max: usize, from_start: bool) -> Vec<String> {
    let body = window.strip_suffix(b"\n").unwrap_or(window);
    if body.is_empty() {
        return Vec::new();
    }
    let mut pieces: Vec<&[u8]> = body.split(|&b| b == b'\n').collect();
    if !from_start && pieces.len() > 1 {
        pieces.remove(0);
    }
    let skip = pieces.len().saturating_sub(max);
    pieces[skip..].iter().map(|raw| line_text(raw)).collect()
}

/// The last component of a path (the whole text if it has none).
pub fn basename(path: &str) -> &str {
    let trimmed = path.trim_end_matches('/');
    match trimmed.rsplit_once('/') {
        Some((_, name)) if !name.is_empty() => name,
        _ => trimmed,
    }
}

/// The Linux name of signal `number` (the same numbers on x86_64 and aarch64).
pub fn signal_name(number: i64) -> String {
    const NAMES: [&str; 31] = [
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGILL",
        "SIGTRAP",
        "SIGABRT",
        "SIGBUS",
        "SIGFPE",
        "SIGKILL",
        "SIGUSR1",
        "SIGSEGV",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGTERM",
        "SIGSTKFLT",
        "SIGCHLD",
        "SIGCONT",
        "SIGSTOP",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGURG",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGVTALRM",
        "SIGPROF",
        "SIGWINCH",
        "SIGIO",
        "SIGPWR",
        "SIGSYS",
    ];
    usize::try_from(number)
        .ok()
        .and_then(|n| n.checked_sub(1))
        .and_then(|index| NAMES.get(index))
        .map_or_else(|| format!("signal {number}"), |name| (*name).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_lines() {
        let cases: &[(&str, bool)] = &[
            ("0: Traceback (most recent call last):", true),
            ("1: MPI_ABORT was invoked on rank 1", true),
            ("srun: error: n2: task 1: Aborted", true),
            (
                "0: RuntimeError: CUDA error: an illegal memory access",
                true,
            ),
            ("thread 'main' panicked at src/main.rs:3:5", true),
            ("/bin/bash: line 1: 123 Killed python3 x.py", true),
            ("Segmentation fault (core dumped)", true),
            ("0: ValueError: bad value", true),
            ("0: error: the argument is wrong", true),
            ("2026-01-01 ERROR rank-launch: failed", true),
            ("0: Exception in thread", true),
            ("FATAL: cannot start", true),
            ("git: fatal: not a repository", true),
            ("0: torch.OutOfMemoryError: CUDA out of memory", true),
            ("0: ran out of memory", true),
            ("0: INFO: Uvicorn running on http://0.0.0.0:8000", false),
            ("0: no errors found", false),
            ("0: error_rate=0.0", false),
            (
                "slurmstepd-n2: error: *** STEP 1.3 ON n2 CANCELLED AT 2026-12-02T06:10:33 ***",
                false,
            ),
            (
                "0: warning: CTX_0 (n3:4123) has not answered request 5 for 6 s",
                false,
            ),
            ("", false),
        ];
        for (line, want) in cases {
            assert_eq!(is_error_line(line), *want, "{line:?}");
        }
    }

    #[test]
    fn unanswered_lines() {
        let cases: &[(&str, Option<&str>)] = &[
            (
                "0: warning: CTX_0 (n3:4123) has not answered request 5 for 6 s",
                Some("CTX_0"),
            ),
            ("0: GEN_12 did not answer in time", Some("GEN_12")),
            (
                "0: request 7: no answer from GEN_1 (n1:8001)",
                Some("GEN_1"),
            ),
            ("0: no answer from the server at n3:4123", None),
            ("0: CTX_0 answered request 5", None),
            ("0: XCTX_0 has not answered", None),
            ("0: GEN_PRECHECK_0 has not answered", None),
        ];
        for (line, want) in cases {
            assert_eq!(unanswered_server(line), *want, "{line:?}");
        }
    }

    #[test]
    fn scanner_finds_the_first_of_each() {
        let log: &[&[u8]] = &[
            b"0: starting\n",
            b"0: warning: GEN_0 (n1:1) has not answered request 1 for 6 s\n",
            b"0: ERROR something\r\n",
            b"0: warning: CTX_0 (n3:4123) has not answered request 5 for 6 s\n",
            b"0: error: later\n",
        ];
        let mut scanner = LogScanner::new(true);
        for line in log {
            scanner.feed(line);
        }
        assert_eq!(
            scanner.first_error,
            Some(NumberedLine {
                number: 3,
                text: "0: ERROR something".into()
            })
        );
        let unanswered = scanner.unanswered.expect("found");
        assert_eq!(unanswered.server, "GEN_0");
        assert_eq!(unanswered.line.number, 2);
        assert!(scanner.first_error.is_some());

        let mut plain = LogScanner::new(false);
        plain.feed(b"0: has not answered CTX_0\n");
        assert!(plain.unanswered.is_none());
        assert!(!plain.done());
        plain.feed(b"Aborted");
        assert!(plain.done());
    }

    #[test]
    fn tails() {
        assert_eq!(tail_lines(b"", 20, true), Vec::<String>::new());
        assert_eq!(tail_lines(b"a\nb\nc\n", 2, true), ["b", "c"]);
        assert_eq!(tail_lines(b"a\nb\nc", 5, true), ["a", "b", "c"]);
        assert_eq!(tail_lines(b"rtial\nb\nc\n", 5, false), ["b", "c"]);
        assert_eq!(tail_lines(b"only part", 5, false), ["only part"]);
        assert_eq!(tail_lines(b"a\n\nb\n", 5, true), ["a", "", "b"]);
        assert_eq!(
            tail_lines(b"\xff\xfe ok\r\n", 5, true),
            ["\u{fffd}\u{fffd} ok"]
        );
    }

    #[test]
    fn cuts_and_names() {
        assert_eq!(cut("abc", 2), "ab");
        assert_eq!(cut("abc", 5), "abc");
        assert_eq!(cut("aé", 2), "a");
        assert_eq!(strip_rank_prefix("12: x: y"), "x: y");
        assert_eq!(strip_rank_prefix("srun: error"), "srun: error");
        assert_eq!(
            router_words("0: warning: CTX_0 (n3:4123) has not answered request 5 for 6 s \n"),
            "CTX_0 (n3:4123) has not answered request 5 for 6 s"
        );
        assert_eq!(
            router_words("WARN: GEN_0 did not answer"),
            "GEN_0 did not answer"
        );
        assert_eq!(
            router_words(
                "0: [shim-role DISAGG_SERVER host=n1] warning: CTX_0 (n3:4123) has not answered"
            ),
            "CTX_0 (n3:4123) has not answered"
        );
        assert_eq!(
            router_words("request 7: no answer from GEN_1"),
            "request 7: no answer from GEN_1"
        );
        assert_eq!(basename("/w/ctx_server_0.log"), "ctx_server_0.log");
        assert_eq!(basename("ctx.log"), "ctx.log");
        assert_eq!(basename("/w/dir/"), "dir");
        assert_eq!(signal_name(6), "SIGABRT");
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(signal_name(11), "SIGSEGV");
        assert_eq!(signal_name(15), "SIGTERM");
        assert_eq!(signal_name(31), "SIGSYS");
        assert_eq!(signal_name(0), "signal 0");
        assert_eq!(signal_name(40), "signal 40");
        assert_eq!(signal_name(-1), "signal -1");
    }

    #[test]
    fn long_lines_are_kept_bounded() {
        let long = vec![b'x'; SCAN_LINE_BYTES * 2];
        assert_eq!(line_text(&long).len(), SCAN_LINE_BYTES);
    }
}
