//! The file edge of `verdict` and `await-ready`: the only code here that reads or writes.
//!
//! Every read is bounded: record files by size, a log's tail by seeking back from its end
//! (at most [`TAIL_WINDOW`]), a log's scan to its first [`SCAN_LIMIT`] bytes, a line to
//! [`scan::SCAN_LINE_BYTES`]. What cannot be read or parsed inside the workspace is skipped,
//! with one note per file for stderr.

use std::fs::{self, File};
use std::io::{self, BufRead as _, BufReader, Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::model::{self, LineError, RankSummary};
use super::scan::{self, LogFacts, LogScanner};
use super::verdict::Job;

/// How far back from a log's end its tail is looked for.
pub const TAIL_WINDOW: u64 = 1 << 20;
/// How much of a log the first-error scan reads.
pub const SCAN_LIMIT: u64 = 64 << 20;
/// The largest record file (`steps.jsonl`, `phases.jsonl`) read.
const RECORDS_LIMIT: u64 = 16 << 20;
/// The largest rank summary read.
const SUMMARY_LIMIT: u64 = 1 << 20;

/// A failure of the edge that is not tolerated.
#[derive(Debug, thiserror::Error)]
pub enum JobIoError {
    /// The workspace argument does not name a directory.
    #[error("job workspace `{path}`: expected a directory, {found}")]
    NotADirectory {
        /// As given.
        path: String,
        /// What is there instead.
        found: String,
    },
    /// An output file could not be written.
    #[error("`{path}`: cannot write: {reason}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// An I/O error as a short lowercase phrase without the `(os error N)` suffix.
pub fn reason(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::NotFound => "no such file or directory".into(),
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => {
            let text = error.to_string();
            let text = match text.find(" (os error") {
                Some(at) => text[..at].to_owned(),
                None => text,
            };
            text.to_lowercase()
        }
    }
}

/// Now, in microseconds since the epoch.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_micros()).unwrap_or(i64::MAX)
        })
}

/// Checks that `dir` is a directory.
pub fn check_dir(dir: &Path) -> Result<(), JobIoError> {
    let found = match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => return Ok(()),
        Ok(_) => "found a file".to_owned(),
        Err(error) => format!("found nothing ({})", reason(&error)),
    };
    Err(JobIoError::NotADirectory {
        path: dir.display().to_string(),
        found,
    })
}

/// Reads at most `limit` bytes of `path` as text (invalid UTF-8 replaced). `Ok(None)`: no
/// such file.
fn read_bounded(path: &Path, limit: u64) -> io::Result<Option<String>> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    let mut bytes = Vec::new();
    file.take(limit).read_to_end(&mut bytes)?;
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

fn skipped_lines_note(path: &Path, skipped: &[LineError]) -> Option<String> {
    let first = skipped.first()?;
    let count = skipped.len();
    let lines = if count == 1 { "line" } else { "lines" };
    Some(format!(
        "launch-gen: skipped {count} {lines} of {} (first: line {}: {})",
        path.display(),
        first.line,
        first.detail
    ))
}

fn read_records<T>(
    path: &Path,
    parse: fn(&str) -> (Vec<T>, Vec<LineError>),
    notes: &mut Vec<String>,
) -> Vec<T> {
    match read_bounded(path, RECORDS_LIMIT) {
        Ok(None) => Vec::new(),
        Ok(Some(text)) => {
            let (records, skipped) = parse(&text);
            notes.extend(skipped_lines_note(path, &skipped));
            records
        }
        Err(error) => {
            notes.push(format!(
                "launch-gen: skipped {}: cannot read: {}",
                path.display(),
                reason(&error)
            ));
            Vec::new()
        }
    }
}

/// The rank summaries under `dir/ranks`, by file name; unparsable ones are noted.
fn read_ranks(dir: &Path, notes: &mut Vec<String>) -> Vec<RankSummary> {
    read_rank_files(dir, notes)
        .into_iter()
        .map(|(summary, _)| summary)
        .collect()
}

/// [`read_ranks`], each summary with the text it was parsed from.
fn read_rank_files(dir: &Path, notes: &mut Vec<String>) -> Vec<(RankSummary, String)> {
    let ranks_dir = dir.join("ranks");
    let entries = match fs::read_dir(&ranks_dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Vec::new(),
        Err(error) => {
            notes.push(format!(
                "launch-gen: skipped {}: cannot read: {}",
                ranks_dir.display(),
                reason(&error)
            ));
            return Vec::new();
        }
    };
    let mut files: Vec<(PathBuf, String, i64)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let (role, rank) = model::rank_file_name(&name)?;
            Some((entry.path(), role, rank))
        })
        .collect();
    files.sort();
    let mut ranks = Vec::new();
    for (path, role, rank) in files {
        match read_bounded(&path, SUMMARY_LIMIT) {
            Ok(Some(text)) => match model::parse_rank(&role, rank, &text) {
                Ok(summary) => ranks.push((summary, text)),
                Err(error) => {
                    notes.push(format!("launch-gen: skipped {}: {error}", path.display()))
                }
            },
            Ok(None) => {}
            Err(error) => notes.push(format!(
                "launch-gen: skipped {}: cannot read: {}",
                path.display(),
                reason(&error)
            )),
        }
    }
    ranks
}

/// Everything in the workspace `dir` that parses, and one note per file with skipped parts.
pub fn read_job(dir: &Path) -> (Job, Vec<String>) {
    let mut notes = Vec::new();
    let events = read_records(&dir.join("steps.jsonl"), model::parse_steps, &mut notes);
    let phases = read_records(&dir.join("phases.jsonl"), model::parse_phases, &mut notes);
    let ranks = read_ranks(dir, &mut notes);
    let job = Job {
        dir_name: dir_name(dir),
        steps: model::role_steps(&events),
        phases,
        ranks,
    };
    (job, notes)
}

/// The workspace's directory name (of its canonical path when it has one).
fn dir_name(dir: &Path) -> String {
    dir.canonicalize()
        .unwrap_or_else(|_| dir.to_path_buf())
        .file_name()
        .map_or_else(
            || dir.display().to_string(),
            |name| name.to_string_lossy().into_owned(),
        )
}

/// The last [`scan::TAIL_LINES`] lines of the log at `path`, read backwards from its end.
pub fn tail(path: &Path) -> io::Result<Vec<String>> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut start = len;
    let mut window: Vec<u8> = Vec::new();
    const CHUNK: u64 = 64 << 10;
    while start > 0 && len - start < TAIL_WINDOW {
        let size = CHUNK.min(start);
        start -= size;
        file.seek(SeekFrom::Start(start))?;
        let mut chunk = vec![0; usize::try_from(size).unwrap_or(0)];
        file.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&window);
        window = chunk;
        let body = window.strip_suffix(b"\n").unwrap_or(&window);
        if body.iter().filter(|&&b| b == b'\n').count() > scan::TAIL_LINES {
            break;
        }
    }
    Ok(scan::tail_lines(&window, scan::TAIL_LINES, start == 0))
}

/// Feeds the log at `path` to `scanner` from the start, line by line, up to [`SCAN_LIMIT`]
/// bytes, and stops early once it has found what it looks for.
pub fn scan(path: &Path, scanner: &mut LogScanner) -> io::Result<()> {
    let mut reader = BufReader::with_capacity(64 << 10, File::open(path)?.take(SCAN_LIMIT));
    let mut line: Vec<u8> = Vec::new();
    let mut overlong = false;
    loop {
        let buffer = reader.fill_buf()?;
        if buffer.is_empty() {
            if !line.is_empty() || overlong {
                scanner.feed(&line);
            }
            return Ok(());
        }
        let (piece, ended) = match buffer.iter().position(|&b| b == b'\n') {
            Some(at) => (&buffer[..at], true),
            None => (buffer, false),
        };
        let room = scan::SCAN_LINE_BYTES.saturating_sub(line.len());
        line.extend_from_slice(&piece[..piece.len().min(room)]);
        overlong |= piece.len() > room;
        let used = piece.len() + usize::from(ended);
        reader.consume(used);
        if ended {
            scanner.feed(&line);
            line.clear();
            overlong = false;
            if scanner.done() {
                return Ok(());
            }
        }
    }
}

/// The tail and the first error line of the log at `path`.
pub fn log_facts(path: &Path) -> LogFacts {
    let tail = tail(path).map_err(|error| reason(&error));
    let mut scanner = LogScanner::new(false);
    if tail.is_ok() {
        let _ = scan(path, &mut scanner);
    }
    LogFacts {
        tail,
        first_error: scanner.first_error,
    }
}

/// The router log's first line about a server that did not answer.
pub fn unanswered(path: &Path) -> Option<scan::Unanswered> {
    let mut scanner = LogScanner::new(true);
    scan(path, &mut scanner).ok()?;
    scanner.unanswered
}

/// Writes `text` to `path` through a temporary file beside it and a rename.
pub fn write_atomically(path: &Path, text: &str) -> Result<(), JobIoError> {
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&temp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        fs::rename(&temp, path)
    })();
    result.map_err(|error| {
        let _ = fs::remove_file(&temp);
        JobIoError::Write {
            path: path.display().to_string(),
            reason: reason(&error),
        }
    })
}

/// Appends `line` to `path` in one write (`O_APPEND`), creating the file if needed.
pub fn append(path: &Path, line: &str) -> Result<(), JobIoError> {
    let result = fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .open(path)
        .and_then(|mut file| file.write_all(line.as_bytes()));
    result.map_err(|error| JobIoError::Write {
        path: path.display().to_string(),
        reason: reason(&error),
    })
}

/// The rank-0 summary of `role`, if it exists and parses now.
pub fn rank0(dir: &Path, role: &str) -> Option<RankSummary> {
    let path = dir.join("ranks").join(format!("{role}.0.json"));
    let text = read_bounded(&path, SUMMARY_LIMIT).ok()??;
    model::parse_rank(role, 0, &text).ok()
}

/// The largest `verdict.json` read.
const VERDICT_LIMIT: u64 = 4 << 20;

/// `dir/verdict.json` when it exists and parses; a note when it exists but cannot be read or
/// parsed.
pub fn read_verdict(dir: &Path, notes: &mut Vec<String>) -> Option<model::VerdictRecord> {
    let path = dir.join("verdict.json");
    match read_bounded(&path, VERDICT_LIMIT) {
        Ok(None) => None,
        Ok(Some(text)) => match model::parse_verdict(&text) {
            Ok(record) => Some(record),
            Err(error) => {
                notes.push(format!("launch-gen: skipped {}: {error}", path.display()));
                None
            }
        },
        Err(error) => {
            notes.push(format!(
                "launch-gen: skipped {}: cannot read: {}",
                path.display(),
                reason(&error)
            ));
            None
        }
    }
}

/// Where a step's log (`log`, as `steps.jsonl` names it) is now: the file of that name in the
/// workspace `dir` when there is one (every log the script writes is there, and a workspace
/// copied elsewhere no longer has the recorded path), else the recorded path.
pub fn workspace_log(dir: &Path, log: &str) -> PathBuf {
    let name = scan::basename(log);
    if !name.is_empty() && name != "." && name != ".." {
        let local = dir.join(name);
        if local.is_file() {
            return local;
        }
    }
    PathBuf::from(log)
}

/// At most `limit` bytes of the file at `path` as text (invalid UTF-8 replaced); a missing
/// file is an error here.
pub fn read_text(path: &Path, limit: u64) -> io::Result<String> {
    read_bounded(path, limit)?.ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
}

/// What `launch-gen status` reads of a workspace that may still be written.
#[derive(Debug, Clone, Default)]
pub struct StatusRecords {
    /// The records, as [`read_job`] reads them, except that a last line of `steps.jsonl` or
    /// `phases.jsonl` without its newline is left out: it is still being appended.
    pub job: Job,
    /// Each rank's `phase_since_unix_us`, in the order of `job.ranks`.
    pub phase_since: Vec<Option<i64>>,
    /// `verdict.json`, once written.
    pub verdict: Option<model::VerdictRecord>,
}

/// The records of the workspace `dir` for `status`, and one note per file with skipped
/// parts. `verdict.json` is read first, so that once it is there every record written before
/// it is read too.
pub fn read_status(dir: &Path) -> (StatusRecords, Vec<String>) {
    let mut notes = Vec::new();
    let verdict = read_verdict(dir, &mut notes);
    let events = read_records(
        &dir.join("steps.jsonl"),
        |text| model::parse_steps(model::complete_lines(text)),
        &mut notes,
    );
    let phases = read_records(
        &dir.join("phases.jsonl"),
        |text| model::parse_phases(model::complete_lines(text)),
        &mut notes,
    );
    let (ranks, phase_since) = read_rank_files(dir, &mut notes)
        .into_iter()
        .map(|(summary, text)| (summary, model::rank_phase_since(&text)))
        .unzip();
    let job = Job {
        dir_name: dir_name(dir),
        steps: model::role_steps(&events),
        phases,
        ranks,
    };
    let records = StatusRecords {
        job,
        phase_since,
        verdict,
    };
    (records, notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_of_a_big_file_reads_only_its_end() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("big.log");
        let mut text = String::new();
        for i in 0..200_000 {
            text.push_str(&format!("0: line {i}\n"));
        }
        text.push_str("0: half");
        fs::write(&path, &text).expect("write");
        let lines = tail(&path).expect("tail");
        assert_eq!(lines.len(), scan::TAIL_LINES);
        assert_eq!(lines.last().map(String::as_str), Some("0: half"));
        assert_eq!(lines[0], "0: line 199981");
    }

    #[test]
    fn tail_of_one_huge_line_is_bounded() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("huge.log");
        fs::write(&path, vec![b'x'; 3 << 20]).expect("write");
        let lines = tail(&path).expect("tail");
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].len(), scan::SCAN_LINE_BYTES);
    }

    #[test]
    fn scan_stops_at_the_first_error_and_bounds_lines() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("x.log");
        let mut text = "x".repeat(100_000);
        text.push_str(" error: inside an overlong line\n0: ok\n1: RuntimeError: boom\n");
        fs::write(&path, &text).expect("write");
        let mut scanner = LogScanner::new(false);
        scan(&path, &mut scanner).expect("scan");
        let found = scanner.first_error.expect("an error line");
        assert_eq!(found.number, 3);
        assert_eq!(found.text, "1: RuntimeError: boom");
    }

    #[test]
    fn missing_dir_and_file_are_named() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let missing = dir.path().join("nope");
        let error = check_dir(&missing).expect_err("missing");
        assert!(error.to_string().contains("nope"), "{error}");
        assert!(error.to_string().contains("no such file"), "{error}");
        let file = dir.path().join("f");
        fs::write(&file, "").expect("write");
        let error = check_dir(&file).expect_err("a file");
        assert!(error.to_string().contains("found a file"), "{error}");
    }

    #[test]
    fn verdict_and_logs_of_a_copied_workspace() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut notes = Vec::new();
        assert_eq!(read_verdict(dir.path(), &mut notes), None);
        assert!(notes.is_empty());
        fs::write(dir.path().join("verdict.json"), "{\"verdict\":").expect("write");
        assert_eq!(read_verdict(dir.path(), &mut notes), None);
        assert_eq!(notes.len(), 1, "{notes:?}");
        fs::write(dir.path().join("verdict.json"), "{\"verdict\":\"PASS\"}").expect("write");
        let record = read_verdict(dir.path(), &mut notes).expect("parses");
        assert_eq!(record.passed(), Some(true));

        fs::write(dir.path().join("gen_server_0.log"), "x\n").expect("write");
        assert_eq!(
            workspace_log(dir.path(), "/elsewhere/gen_server_0.log"),
            dir.path().join("gen_server_0.log")
        );
        assert_eq!(
            workspace_log(dir.path(), "/elsewhere/ctx_server_0.log"),
            PathBuf::from("/elsewhere/ctx_server_0.log")
        );
        let missing = read_text(&dir.path().join("nope"), 10).expect_err("missing");
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        assert_eq!(
            read_text(&dir.path().join("gen_server_0.log"), 1).expect("reads"),
            "x"
        );
    }
}
