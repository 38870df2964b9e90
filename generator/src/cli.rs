//! The command line: argument parsing, file I/O, atomic output and `sbatch`.
//!
//! This is the only module that reads files, writes files or spawns processes; it hands text to
//! the pure renderers. Every bad input (arguments, files, config values) ends with exit code 2
//! and one `error:` line naming the file, the key and what was expected; other failures
//! (`sbatch`) exit 1. The output is written to a temporary file beside the target and renamed,
//! so a failed run never leaves a partial or stale-looking script behind.

use std::ffi::OsString;
use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail};
use clap::Parser;

use crate::budgets::{Budgets, Given};
use crate::compat::{self, CompatInputs, Entry, Files, Outcome, ReadError, Selection};
use crate::config::LaunchConfig;
use crate::explain;
use crate::hostlist;
use crate::native::{self, NativeOptions, SbatchOptions};
use crate::plan::Plan;
use crate::serving::Serving;
use crate::testlist::{self, Selected, TestMode};
use crate::ucx;

/// Exit code for bad input: arguments, files, config values.
pub const EXIT_INPUT: i32 = 2;
/// Exit code for other failures, such as `sbatch` refusing the script.
pub const EXIT_FAILURE: i32 = 1;

const EXAMPLES: &str = "\
Examples:
  # Compatibility mode: the reference submit.py output, byte for byte.
  launch-gen --run-ci --llm-src llm-src --test-list test_list.txt \\
      --draft-launch-sh draft.sh --launch-sh launch.sh \\
      --run-sh /ws/slurm_run.sh --install-sh /ws/slurm_install.sh \\
      --script-prefix prefix.sh --srun-args srun_args.txt

  # The unified generator (jenkins/scripts/perf/submit.py), with exactly its arguments;
  # `--compat g1` (the default) is the one above. `launch-gen --compat g2 --help` lists them.
  launch-gen --compat g2 --llm-src llm-src --test-list test_list.txt ... --cluster-name aws-dfw

  # Native mode (no draft): a supervised script that runs rank-launch in every step.
  launch-gen --config-yaml cfg.yaml --command 'pytest -k disagg' \\
      --workspace /lustre/ws --job-name disagg --time 02:00:00 --launch-sh launch.sh

  # Native mode from upstream's test ids, split groups and the cluster's UCX rule.
  launch-gen --llm-src llm-src --test-list test_list.txt --split-group 2 \\
      --cluster-name aws-dfw-cs-001 --workspace /lustre/ws --launch-sh launch.sh

  # The resource plan, with the node slices of an allocation; no script is written.
  launch-gen --config-yaml cfg.yaml --explain --nodelist 'node[01-06]'

  # Render and submit; prints the job id.
  launch-gen --config-yaml cfg.yaml --command 'pytest' --launch-sh launch.sh --submit

  # What a native script runs at its end, on the batch node (also by hand, on a workspace).
  launch-gen verdict /lustre/ws --fail-role CTX_0 --fail-detail 'exit 75' --code 75
  launch-gen await-ready /lustre/ws --roles GEN_0,CTX_0,DISAGG_SERVER --timeout 3630

  # Where a job stands (from any node that sees its workspace), and its picture.
  launch-gen status /lustre/ws [--json | --watch | --events]
  launch-gen report /lustre/ws -o report.html --config cfg.yaml

Notes:
  With a first-generator test id or `--config-yaml`, `gen_only` and `gen_only_no_context` modes
  run no context servers; with upstream's `disagg*-gen_only-<cfg>` ids only a config mode
  `gen_only_no_context` drops them. The queue size is the FIRST value of
  `benchmark.concurrency_list` (`512 1075` -> 512).";

/// Renders the sbatch launch script of a disaggregated TensorRT-LLM job from a YAML config.
///
/// With `--draft-launch-sh` it writes what the reference `submit.py` writes (compatibility
/// mode); without it, a self-contained script around `rank-launch` (native mode).
#[derive(Debug, Parser)]
#[command(name = "launch-gen", version, after_help = EXAMPLES, args_override_self = true, infer_long_args = true)]
struct Args {
    /// Accepted and ignored, as in later versions of the reference.
    #[arg(long)]
    run_ci: bool,
    /// Source tree under which the test list's config is looked up.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "",
        hide_default_value = true
    )]
    llm_src: OsString,
    /// Test list whose first line selects the config (`...[disagg-<config>]`; in native
    /// mode also upstream's `...[disagg-e2e-<config>]` and `...[disagg-gen_only-<config>]`).
    #[arg(long, value_name = "FILE")]
    test_list: Option<OsString>,
    /// The config itself (local mode); `--test-list` wins when both are given.
    #[arg(long, value_name = "FILE")]
    config_yaml: Option<OsString>,
    /// Accepted and ignored (local mode of the reference).
    #[arg(long, value_name = "NAME")]
    stage_name: Option<String>,
    /// Draft template appended to the prefix: selects compatibility mode.
    #[arg(long, value_name = "FILE")]
    draft_launch_sh: Option<OsString>,
    /// Where to write the launch script.
    #[arg(long, value_name = "FILE")]
    launch_sh: Option<OsString>,
    /// Run script path on the nodes (compatibility mode; ignored in native mode).
    #[arg(long, value_name = "PATH")]
    run_sh: Option<String>,
    /// Install script path on the nodes; in native mode, run once per node before the servers.
    #[arg(long, value_name = "PATH")]
    install_sh: Option<String>,
    /// File with `#SBATCH` and `export` lines placed at the top of the script.
    #[arg(long, value_name = "FILE")]
    script_prefix: Option<OsString>,
    /// File with srun arguments shared by every step.
    #[arg(long, value_name = "FILE")]
    srun_args: Option<OsString>,

    /// Take the N-th test line of `--test-list` instead of the first (blank lines do not
    /// count, comment lines do, as in upstream's generator).
    #[arg(long, value_name = "N", help_heading = "Native mode")]
    split_group: Option<u64>,
    /// The cluster, for the UCX rules: every role command starts with the first matching
    /// rule's `unset ... && export ... &&` (`''` picks the catch-all rule); without it and
    /// `--ucx-rules`, the roles keep the UCX variables of their environment.
    #[arg(long, value_name = "NAME", help_heading = "Native mode")]
    cluster_name: Option<String>,
    /// The GPU type, for UCX rules that name one (none of upstream's does).
    #[arg(long, value_name = "NAME", help_heading = "Native mode")]
    gpu_type: Option<String>,
    /// A UCX rule table to use instead of the built-in one (upstream's; the form is documented
    /// in `generator/data/ucx-rules.yaml`).
    #[arg(long, value_name = "FILE", help_heading = "Native mode")]
    ucx_rules: Option<OsString>,
    /// Base command of every role (default: the prefix's `export pytestCommand=` value).
    #[arg(long, value_name = "STRING", help_heading = "Native mode")]
    command: Option<String>,
    /// Directory for logs and sentinels (default: the prefix's `jobWorkspace`, else
    /// `$SLURM_SUBMIT_DIR`).
    #[arg(long, value_name = "DIR", help_heading = "Native mode")]
    workspace: Option<String>,
    /// The per-rank launcher run by every step.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "rank-launch",
        help_heading = "Native mode"
    )]
    rank_launch: String,
    /// Run the `rank-check` fabric precheck on every worker slice first.
    #[arg(long, help_heading = "Native mode")]
    precheck: bool,
    /// The MPI-linked fabric check used by `--precheck`.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "rank-check",
        help_heading = "Native mode"
    )]
    rank_check: String,
    /// Seconds before a precheck step is killed.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 900,
        help_heading = "Native mode"
    )]
    precheck_timeout: u64,
    /// Seconds the other steps get to end once one ended with 0 (normally the benchmark)
    /// [default: config `budgets.drain`, else 120].
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..), help_heading = "Native mode")]
    drain_timeout: Option<u64>,
    /// Seconds every server (rank 0 of each GEN/CTX step, and the router) may take to get
    /// ready [default: config `budgets.servers_ready`, else 3600].
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..), help_heading = "Native mode")]
    ready_timeout: Option<u64>,
    /// Seconds the benchmark may run [default: config `budgets.benchmark`, else 7200].
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..), help_heading = "Native mode")]
    benchmark_timeout: Option<u64>,
    /// Seconds without progress before a role is declared stuck: the benchmark's output, or a
    /// stopped server rank [default: config `budgets.stall`, else 600].
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..), help_heading = "Native mode")]
    stall_timeout: Option<u64>,
    /// Regular expression of the line a server prints once it serves [default: config
    /// `budgets.ready_line`, else uvicorn's start-up lines].
    #[arg(long, value_name = "REGEX", help_heading = "Native mode")]
    ready_line: Option<String>,
    /// This program on the nodes, which the script runs for the readiness gate and the
    /// verdict [default: the path of the launch-gen that renders the script].
    #[arg(long, value_name = "PATH", help_heading = "Native mode")]
    launch_gen: Option<String>,
    /// Seconds between TERM and KILL when steps are stopped.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 30,
        help_heading = "Native mode"
    )]
    stop_timeout: u64,
    /// Seconds a failing client (benchmark, router) waits for a server failure that would be
    /// the real cause, so that the verdict names the root cause.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 5,
        help_heading = "Native mode"
    )]
    cause_window: u64,
    /// `#SBATCH --job-name` (native mode without a prefix).
    #[arg(long, value_name = "NAME", help_heading = "Native mode")]
    job_name: Option<String>,
    /// `#SBATCH --time` (native mode without a prefix).
    #[arg(long, value_name = "TIME", help_heading = "Native mode")]
    time: Option<String>,
    /// `#SBATCH --partition` (native mode without a prefix).
    #[arg(long, value_name = "NAME", help_heading = "Native mode")]
    partition: Option<String>,
    /// `#SBATCH --account` (native mode without a prefix).
    #[arg(long, value_name = "NAME", help_heading = "Native mode")]
    account: Option<String>,
    /// `#SBATCH --output` (native mode without a prefix).
    #[arg(long, value_name = "PATTERN", help_heading = "Native mode")]
    output: Option<String>,

    /// Print the resource plan as a table; writes no script unless `--launch-sh` is given.
    #[arg(long, help_heading = "Plan and submission")]
    explain: bool,
    /// Nodes to slice in `--explain`: `a,b,c` or a Slurm hostlist like `node[01-06]`.
    #[arg(long, value_name = "HOSTLIST", help_heading = "Plan and submission")]
    nodelist: Option<String>,
    /// Run `sbatch --parsable` on the written script and print the job id.
    #[arg(long, help_heading = "Plan and submission")]
    submit: bool,
    /// Compatibility mode: do not print what the reference prints (its configuration, where
    /// the script was written, and the script).
    #[arg(long)]
    quiet: bool,
}

/// A failed run: the exit code and what to tell the user.
struct Failure {
    code: i32,
    error: anyhow::Error,
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Self {
            code: EXIT_INPUT,
            error,
        }
    }
}

/// Runs `launch-gen` with the process arguments and returns the exit code.
pub fn main_impl() -> i32 {
    run_with_args(std::env::args_os())
}

/// Runs `launch-gen` with the given arguments (the first is the program name).
pub fn run_with_args(args: impl IntoIterator<Item = OsString>) -> i32 {
    let mut args: Vec<OsString> = args.into_iter().collect();
    // The job commands run by the native script have their own parser (`crate::job::cli`).
    if args.get(1).is_some_and(|command| {
        ["verdict", "await-ready", "status", "report"].contains(&command.to_str().unwrap_or(""))
    }) {
        return crate::job::cli::main(args);
    }
    // `--compat NAME` first: a generation with its own parser takes over; G1 is this parser.
    match compat::select(args.get(1..).unwrap_or_default()) {
        Selection::Absent => {}
        Selection::Chosen(generation, rest) => match generation.entry {
            Entry::MainParser => {
                let rest = rest.to_vec();
                args.truncate(1);
                args.extend(rest);
            }
            Entry::Own(run) => return run_generation(run, rest),
        },
        Selection::Invalid(message) => {
            eprintln!("error: {message}");
            return EXIT_INPUT;
        }
    }
    let args = match Args::try_parse_from(args) {
        Ok(args) => args,
        Err(error) => {
            // Help and version go to stdout with code 0; usage errors to stderr with code 2.
            let _ = error.print();
            return error.exit_code();
        }
    };
    match run(&args) {
        Ok(()) => 0,
        Err(failure) => {
            eprintln!("error: {:#}", failure.error);
            failure.code
        }
    }
}

/// Runs a generation that parses its own arguments: its help, its script written atomically
/// (mode before the umask as it says), or its one-line error with exit code 2.
fn run_generation(
    run: fn(&[OsString], &dyn Files) -> Result<Outcome, String>,
    args: &[OsString],
) -> i32 {
    let result = run(args, &FileSystem).and_then(|outcome| match outcome {
        Outcome::Help(text) => {
            // A closed stdout (`| head`) is not an error of the help.
            let _ = io::stdout().lock().write_all(text.as_bytes());
            Ok(())
        }
        Outcome::Write { path, script, mode } => {
            write_atomically(&path, &script, mode).map_err(|error| format!("{error:#}"))
        }
    });
    match result {
        Ok(()) => 0,
        Err(message) => {
            eprintln!("error: {}", one_line(&message));
            EXIT_INPUT
        }
    }
}

/// `message` on one line: control characters (a newline in a path, say) escaped.
fn one_line(message: &str) -> String {
    message
        .chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// The file system as the generations read it.
struct FileSystem;

impl Files for FileSystem {
    fn read_text(&self, path: &Path) -> Result<String, ReadError> {
        let bytes = fs::read(path).map_err(|error| match error.kind() {
            io::ErrorKind::NotFound => ReadError::NotFound,
            _ => ReadError::Unreadable(io_reason(&error)),
        })?;
        String::from_utf8(bytes).map_err(|error| ReadError::NotUtf8 {
            offset: error.utf8_error().valid_up_to(),
        })
    }
}

/// Which script a run writes, with what only that kind needs.
#[allow(clippy::large_enum_variant)] // One value per run, on the stack of `run`.
enum Renderer {
    /// The first generator's output around this draft.
    Compat { draft: PathBuf },
    /// Native mode: the mode's effect on the roles, and the UCX set-up.
    Native { serving: Serving, ucx: explain::Ucx },
}

fn run(args: &Args) -> Result<(), Failure> {
    let draft = non_empty(&args.draft_launch_sh);
    let compat_mode = draft.is_some();
    if compat_mode {
        let native_only = [
            ("--split-group", args.split_group.is_some()),
            ("--cluster-name", args.cluster_name.is_some()),
            ("--gpu-type", args.gpu_type.is_some()),
            ("--ucx-rules", args.ucx_rules.is_some()),
        ];
        if let Some((flag, _)) = native_only.iter().find(|(_, given)| *given) {
            return Err(anyhow!(
                "`{flag}` is not an argument of the first generator (`--draft-launch-sh`): use \
                 it in native mode, or with upstream's unified generator, `--compat g2`"
            )
            .into());
        }
    }
    let (config_path, selection) = if compat_mode {
        (locate_config(args)?, None)
    } else {
        locate_native_config(args)?
    };
    let config_text = read_text(&config_path)?;
    let shown = config_path.display();
    let config = LaunchConfig::from_yaml(&config_text).with_context(|| format!("`{shown}`"))?;
    let renderer = match draft {
        Some(draft) => Renderer::Compat { draft },
        None => {
            let token = selection.as_ref().and_then(|(_, token)| *token);
            let serving = Serving::decide(&config, token).with_context(|| format!("`{shown}`"))?;
            let ucx = ucx_setup(args)?;
            Renderer::Native { serving, ucx }
        }
    };
    let plan = match &renderer {
        Renderer::Compat { .. } => Plan::new(&config),
        Renderer::Native { serving, .. } => Plan::with_context_servers(&config, !serving.no_ctx),
    }
    .with_context(|| format!("`{shown}`"))?;

    let given = Given {
        servers_ready: args.ready_timeout,
        benchmark: args.benchmark_timeout,
        stall: args.stall_timeout,
        drain: args.drain_timeout,
        ready_line: args.ready_line.as_deref(),
    };
    // Native mode only: the reference ignores a `budgets:` section, and so does compatibility.
    let budgets = || Budgets::resolve(&config, &given).with_context(|| format!("`{shown}`"));
    if args.explain {
        let nodes = args
            .nodelist
            .as_deref()
            .map(hostlist::expand)
            .transpose()
            .context("`--nodelist`")?;
        let table = explain::render(&config, &plan, &shown.to_string(), nodes.as_deref())
            .context("`--nodelist`")?;
        print!("{table}");
        if let Renderer::Native { serving, ucx } = &renderer {
            let prefixes = native::role_prefixes(&config, serving, &ucx.command)
                .with_context(|| format!("`{shown}`"))?;
            let list = non_empty(&args.test_list).map(|p| p.display().to_string());
            let config_shown = shown.to_string();
            let chosen = match (&selection, &list) {
                (Some((selected, token)), Some(list)) => Some(explain::Selection {
                    list,
                    split_group: args.split_group.unwrap_or(0),
                    selected,
                    config: &config_shown,
                    token: *token,
                }),
                _ => None,
            };
            print!(
                "{}",
                explain::native(chosen.as_ref(), serving, ucx, &prefixes)
            );
            print!("{}", budgets()?.explain());
        }
        if args.launch_sh.is_none() {
            return Ok(());
        }
    }
    let Some(launch_sh) = non_empty(&args.launch_sh) else {
        return Err(anyhow!("`--launch-sh` is required: where to write the launch script").into());
    };

    let script_prefix = non_empty(&args.script_prefix)
        .as_ref()
        .map(read_text)
        .transpose()?;
    let srun_args = non_empty(&args.srun_args)
        .as_ref()
        .map(read_text)
        .transpose()?
        .unwrap_or_default();
    let mut report = None;
    let (script, mode) = match &renderer {
        Renderer::Compat { draft } => {
            let draft = read_text(draft)?;
            let required = |value: &Option<String>, flag: &str| {
                value
                    .clone()
                    .ok_or_else(|| anyhow!("`{flag}` is required with `--draft-launch-sh`"))
            };
            let inputs = CompatInputs {
                script_prefix: script_prefix.as_deref().unwrap_or_default(),
                srun_args: &srun_args,
                draft: &draft,
                run_sh: &required(&args.run_sh, "--run-sh")?,
                install_sh: &required(&args.install_sh, "--install-sh")?,
            };
            let script =
                compat::render(&config, &plan, &inputs).with_context(|| format!("`{shown}`"))?;
            if !args.quiet {
                let shown_sh = launch_sh.to_string_lossy();
                report = Some(compat::stdout_report(&config, &plan, &shown_sh, &script));
            }
            (script, 0o666)
        }
        Renderer::Native { serving, ucx } => {
            let absolute_config =
                std::path::absolute(&config_path).unwrap_or_else(|_| config_path.clone());
            let budgets = budgets()?;
            let launch_gen = match &args.launch_gen {
                Some(path) => path.clone(),
                None => std::env::current_exe()
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_else(|_| "launch-gen".to_owned()),
            };
            let options = NativeOptions {
                config_path: &absolute_config.to_string_lossy(),
                script_prefix: script_prefix.as_deref(),
                srun_args: &srun_args,
                command: args.command.as_deref(),
                workspace: args.workspace.as_deref(),
                install_sh: args.install_sh.as_deref().filter(|path| !path.is_empty()),
                rank_launch: &args.rank_launch,
                rank_check: &args.rank_check,
                precheck: args.precheck,
                precheck_timeout: args.precheck_timeout,
                launch_gen: &launch_gen,
                budgets: &budgets,
                serving,
                ucx: &ucx.command,
                stop_timeout: args.stop_timeout,
                cause_window: args.cause_window,
                sbatch: SbatchOptions {
                    job_name: args.job_name.as_deref(),
                    time: args.time.as_deref(),
                    partition: args.partition.as_deref(),
                    account: args.account.as_deref(),
                    output: args.output.as_deref(),
                },
            };
            let script = native::render(&config, &plan, &options).map_err(|error| {
                let file = match &error {
                    native::NativeError::Prefix(_) => {
                        non_empty(&args.script_prefix).map(|p| p.display().to_string())
                    }
                    native::NativeError::SrunArgs(_) => {
                        non_empty(&args.srun_args).map(|p| p.display().to_string())
                    }
                    native::NativeError::Config(_) | native::NativeError::NoGenServers => {
                        Some(shown.to_string())
                    }
                    _ => None,
                };
                let error = anyhow::Error::new(error);
                match file {
                    Some(file) => error.context(format!("`{file}`")),
                    None => error,
                }
            })?;
            (script, 0o777)
        }
    };
    write_atomically(&launch_sh, &script, mode)?;
    if let Some(report) = report {
        // Like the reference's prints; a closed stdout is not the script's failure.
        let _ = io::stdout().lock().write_all(report.as_bytes());
    }

    if args.submit {
        let job_id = submit(&launch_sh).map_err(|error| Failure {
            code: EXIT_FAILURE,
            error,
        })?;
        println!("{job_id}");
    }
    Ok(())
}

/// The config path: from the test list's first line, else `--config-yaml`.
fn locate_config(args: &Args) -> anyhow::Result<PathBuf> {
    if let Some(test_list) = non_empty(&args.test_list) {
        let text = read_text(&test_list)?;
        let shown = test_list.display();
        let name = testlist::config_name(&text).with_context(|| format!("`{shown}`"))?;
        let path = testlist::config_path(Path::new(&args.llm_src), &name);
        if !path.is_file() {
            bail!(
                "`{shown}`: line 1 selects config `{name}`, expected the file `{}` (under `--llm-src`)",
                path.display()
            );
        }
        return Ok(path);
    }
    if let Some(config) = non_empty(&args.config_yaml) {
        return Ok(config);
    }
    bail!("one of `--test-list` or `--config-yaml` is required")
}

/// The UCX set-up of native mode: the table (`--ucx-rules`, else the built-in one) and its
/// rule for `--cluster-name` and `--gpu-type`. Opt-in: without a cluster name or a table, the
/// roles keep the UCX variables they have and the command is empty.
fn ucx_setup(args: &Args) -> anyhow::Result<explain::Ucx> {
    let (rules, table) = match non_empty(&args.ucx_rules) {
        Some(path) => {
            let text = read_text(&path)?;
            let shown = format!("`{}`", path.display());
            let rules = ucx::Rules::from_yaml(&text).with_context(|| shown.clone())?;
            (rules, shown)
        }
        None => (
            ucx::Rules::upstream().context("the built-in UCX table")?,
            "the built-in table (upstream's)".to_owned(),
        ),
    };
    let cluster = args.cluster_name.clone().unwrap_or_default();
    let gpu = args.gpu_type.clone().unwrap_or_default();
    let managed = args.cluster_name.is_some() || args.ucx_rules.is_some();
    let chosen = rules.select_indexed(&cluster, &gpu).filter(|_| managed);
    let command = if managed {
        rules.command(chosen.map(|(_, rule)| rule))
    } else {
        String::new()
    };
    let rule = chosen.map(|(index, rule)| (index, rule.cluster.clone(), rule.gpu.clone()));
    Ok(explain::Ucx {
        managed,
        table,
        cluster,
        gpu,
        rule,
        command,
    })
}

/// The test a test list selected, with the mode token its config file was found with.
type Chosen = (Selected, Option<TestMode>);

/// Native mode's config: the test list's selected line (both generations' ids, with the
/// mode token the file was found with), else `--config-yaml`.
fn locate_native_config(args: &Args) -> anyhow::Result<(PathBuf, Option<Chosen>)> {
    let Some(test_list) = non_empty(&args.test_list) else {
        if args.split_group.is_some() {
            bail!("`--split-group` selects a line of `--test-list`, which is not given");
        }
        let config = non_empty(&args.config_yaml)
            .ok_or_else(|| anyhow!("one of `--test-list` or `--config-yaml` is required"))?;
        return Ok((config, None));
    };
    let text = read_text(&test_list)?;
    let shown = test_list.display();
    let selected = testlist::select(&text, args.split_group.unwrap_or(0))
        .with_context(|| format!("`{shown}`"))?;
    let candidates = selected.candidates(Path::new(&args.llm_src));
    if let Some((path, token)) = candidates.iter().find(|(path, _)| path.is_file()) {
        return Ok((path.clone(), Some((selected.clone(), *token))));
    }
    let tried: Vec<String> = candidates
        .iter()
        .map(|(path, _)| format!("`{}`", path.display()))
        .collect();
    bail!(
        "`{shown}`: line {} selects config `{}`, expected the file {} (under `--llm-src`)",
        selected.line,
        selected.config,
        tried.join(" or ")
    )
}

/// An optional path argument, with `""` (the reference's default) meaning "not given".
fn non_empty(path: &Option<OsString>) -> Option<PathBuf> {
    path.as_ref()
        .filter(|path| !path.is_empty())
        .map(PathBuf::from)
}

/// Reads a whole text file; the error names the path.
fn read_text(path: &PathBuf) -> anyhow::Result<String> {
    let shown = path.display();
    let bytes =
        fs::read(path).map_err(|error| anyhow!("`{shown}`: cannot read: {}", io_reason(&error)))?;
    String::from_utf8(bytes).map_err(|error| {
        anyhow!(
            "`{shown}`: expected UTF-8 text, found a non-UTF-8 byte at offset {}",
            error.utf8_error().valid_up_to()
        )
    })
}

/// An I/O error as a lowercase fragment without the `(os error N)` suffix.
fn io_reason(error: &io::Error) -> String {
    let text = match error.kind() {
        io::ErrorKind::NotFound => "no such file or directory".to_owned(),
        io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        io::ErrorKind::IsADirectory => "is a directory".to_owned(),
        _ => error.to_string(),
    };
    match text.find(" (os error") {
        Some(end) => text[..end].to_lowercase(),
        None => text,
    }
}

/// Writes `content` to a temporary file in the target's directory, then renames it over the
/// target. On any error the temporary file is removed and the target is left untouched.
fn write_atomically(path: &Path, content: &str, mode: u32) -> anyhow::Result<()> {
    let shown = path.display();
    let file_name = path
        .file_name()
        .ok_or_else(|| anyhow!("`{shown}`: expected a file path for `--launch-sh`"))?;
    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    let temp = dir.join(format!(
        ".{}.{}-{nanos}.tmp",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)?;
        file.write_all(content.as_bytes())?;
        file.sync_all()?;
        fs::rename(&temp, path)
    })();
    if let Err(error) = result {
        let _ = fs::remove_file(&temp);
        bail!("`{shown}`: cannot write: {}", io_reason(&error));
    }
    Ok(())
}

/// Runs `sbatch --parsable SCRIPT` and returns the job id.
fn submit(script: &Path) -> anyhow::Result<String> {
    let output = Command::new("sbatch")
        .arg("--parsable")
        .arg(script)
        .output()
        .map_err(|error| anyhow!("cannot run `sbatch`: {}", io_reason(&error)))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        bail!("`sbatch` failed ({}): {}", output.status, stderr.trim());
    }
    // `--parsable` prints `jobid` or `jobid;cluster`.
    let job_id = stdout.trim().split(';').next().unwrap_or_default();
    if job_id.is_empty() {
        bail!("`sbatch` printed no job id");
    }
    Ok(job_id.to_owned())
}
