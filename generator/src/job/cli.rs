//! `launch-gen verdict DIR ...` and `launch-gen await-ready DIR ...`: arguments and wiring.
//!
//! Exit codes: `verdict` exits with `--code` (never 0 for a failure: 1 then), 2 for bad
//! arguments or a `DIR` that is not a directory; `await-ready` exits 0 once the servers are
//! ready, 1 after the timeout or when a server ended unready, 2 for bad input.

use std::ffi::OsString;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};

use super::io;
use super::ready::{self, Readiness};
use super::redact::Redactor;
use super::render::{self, Logs};
use super::verdict::{self, Fail, Request};

/// Exit code for bad input.
const EXIT_INPUT: i32 = 2;
/// How often `await-ready` looks at the summaries.
const POLL: Duration = Duration::from_millis(250);

/// The job commands of `launch-gen`, run by the native launch script.
#[derive(Debug, Parser)]
#[command(name = "launch-gen", version)]
struct JobCli {
    #[command(subcommand)]
    command: JobCommand,
}

#[derive(Debug, Subcommand)]
enum JobCommand {
    Verdict(VerdictArgs),
    AwaitReady(AwaitReadyArgs),
    Status(super::status::StatusArgs),
    Report(super::report::ReportArgs),
}

/// Prints the evidence and the verdict line of a finished job, writes `DIR/verdict.json` and
/// `DIR/junit.xml`, and exits with `--code`.
///
/// Reads `DIR/steps.jsonl`, `DIR/phases.jsonl`, `DIR/ranks/<ROLE>.<rank>.json` and the step
/// logs; whatever does not parse (a file caught half-written) is skipped with a note on stderr.
#[derive(Debug, Args)]
#[command(after_help = VERDICT_EXAMPLES)]
struct VerdictArgs {
    /// The job workspace.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// The role the script found failing (`CTX_0`, `BENCHMARK`, `SETUP`); without it the job
    /// passed.
    #[arg(long, value_name = "ROLE", requires = "fail_detail")]
    fail_role: Option<String>,
    /// What the script saw (`exit 75`, `still running 120 s after BENCHMARK passed`).
    #[arg(
        long,
        value_name = "TEXT",
        requires = "fail_role",
        allow_hyphen_values = true
    )]
    fail_detail: Option<String>,
    /// The exit code to exit with (1 instead of 0 for a failure).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(0..=255))]
    code: i32,
    /// The Slurm job id, for the report.
    #[arg(long, value_name = "ID")]
    job_id: Option<String>,
}

const VERDICT_EXAMPLES: &str = "\
Examples:
  launch-gen verdict \"$jobWorkspace\" --code 0 --job-id \"$SLURM_JOB_ID\"
  launch-gen verdict \"$jobWorkspace\" --fail-role CTX_0 --fail-detail 'exit 75' --code 75";

/// Waits until every role's rank 0 is ready (`ready_unix_us` in `DIR/ranks/<ROLE>.0.json`),
/// then appends `servers_ready` to `DIR/phases.jsonl`. Exits 1 after the timeout, or when a
/// role's rank 0 ended without being ready.
#[derive(Debug, Args)]
struct AwaitReadyArgs {
    /// The job workspace.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// The roles to wait for, comma-separated: `GEN_0,CTX_0,DISAGG_SERVER`.
    #[arg(long, value_name = "ROLES", value_delimiter = ',', required = true)]
    roles: Vec<String>,
    /// Seconds to wait at most.
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    timeout: Duration,
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .ok_or_else(|| format!("expected a non-negative number of seconds, found `{text}`"))
}

/// A role name usable in a file name: letters, digits, `_`, `-`.
fn valid_role(role: &str) -> bool {
    !role.is_empty()
        && role
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Runs a job command; `args` start with the program name, then `verdict`, `await-ready`,
/// `status` or `report`.
pub fn main(args: Vec<OsString>) -> i32 {
    let cli = match JobCli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) => {
            // Help goes to stdout with code 0; usage errors to stderr with code 2.
            let _ = error.print();
            return error.exit_code();
        }
    };
    match cli.command {
        JobCommand::Verdict(args) => run_verdict(&args),
        JobCommand::AwaitReady(args) => run_await_ready(&args),
        JobCommand::Status(args) => super::status::run(&args),
        JobCommand::Report(args) => super::report::run(&args),
    }
}

fn process_redactor() -> Redactor {
    Redactor::new(std::env::vars_os().map(|(name, value)| {
        (
            name.to_string_lossy().into_owned(),
            value.to_string_lossy().into_owned(),
        )
    }))
}

fn run_verdict(args: &VerdictArgs) -> i32 {
    if let Err(error) = io::check_dir(&args.dir) {
        eprintln!("error: {error}");
        return EXIT_INPUT;
    }
    let redactor = process_redactor();
    let (job, notes) = io::read_job(&args.dir);
    for note in notes {
        eprintln!("{}", redactor.redact(&note));
    }
    let request = Request {
        fail: args.fail_role.as_ref().map(|role| Fail {
            role: role.clone(),
            detail: args.fail_detail.clone().unwrap_or_default(),
        }),
        code: args.code,
        job_id: args.job_id.clone().filter(|id| !id.is_empty()),
        now_us: io::now_us(),
    };
    let unanswered =
        verdict::attribution_log(&job, &request).and_then(|log| io::unanswered(Path::new(log)));
    let decision = verdict::decide(&job, unanswered.as_ref(), &request, &redactor);

    let mut logs = Logs::new();
    for role in &decision.evidence {
        let log = decision.role(role).and_then(|report| report.log.as_deref());
        if let Some(log) = log {
            logs.insert(role.clone(), io::log_facts(Path::new(log)));
        }
    }

    let text = render::text(&decision, &logs, &redactor);
    let outputs = [
        ("verdict.json", render::json(&decision, &logs, &redactor)),
        ("junit.xml", render::junit(&decision, &logs, &redactor)),
    ];
    for (name, content) in &outputs {
        if let Err(error) = io::write_atomically(&args.dir.join(name), content) {
            eprintln!("launch-gen: {}", redactor.redact(&error.to_string()));
        }
    }
    // A closed stdout must not change the job's exit code.
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
    decision.code
}

fn run_await_ready(args: &AwaitReadyArgs) -> i32 {
    if let Err(error) = io::check_dir(&args.dir) {
        eprintln!("error: {error}");
        return EXIT_INPUT;
    }
    if let Some(role) = args.roles.iter().find(|role| !valid_role(role)) {
        eprintln!(
            "error: `--roles`: expected role names of letters, digits, `_` and `-` separated by \
             commas, found `{role}`"
        );
        return EXIT_INPUT;
    }
    // A timeout too large for the clock never ends the wait.
    let deadline = Instant::now().checked_add(args.timeout);
    loop {
        let summaries: Vec<_> = args
            .roles
            .iter()
            .map(|role| io::rank0(&args.dir, role))
            .collect();
        let ranks: Vec<(&str, Option<_>)> = args
            .roles
            .iter()
            .zip(&summaries)
            .map(|(role, summary)| (role.as_str(), summary.as_ref()))
            .collect();
        match ready::readiness(&ranks) {
            Readiness::Ready(unix_us) => {
                let phases = args.dir.join("phases.jsonl");
                return match io::append(&phases, &ready::servers_ready_line(unix_us)) {
                    Ok(()) => 0,
                    Err(error) => {
                        eprintln!("launch-gen: {error}");
                        1
                    }
                };
            }
            Readiness::NeverReady(_) => return 1,
            Readiness::Waiting => {}
        }
        let now = Instant::now();
        let left = deadline.map_or(POLL, |deadline| deadline.saturating_duration_since(now));
        if left.is_zero() {
            return 1;
        }
        std::thread::sleep(POLL.min(left));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        JobCli::command().debug_assert();
    }

    #[test]
    fn seconds_and_roles() {
        assert_eq!(parse_seconds("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_seconds("0"), Ok(Duration::ZERO));
        assert!(parse_seconds("-1").is_err());
        assert!(parse_seconds("inf").is_err());
        assert!(parse_seconds("x").is_err());
        assert!(valid_role("GEN_0"));
        assert!(valid_role("DISAGG_SERVER"));
        assert!(!valid_role(""));
        assert!(!valid_role("../x"));
        assert!(!valid_role("a/b"));
    }
}
