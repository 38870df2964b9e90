//! `--compat g2`: the launch script of upstream's unified generator (G2,
//! `jenkins/scripts/perf/submit.py` @ `39778d352f4c`, with `cluster_env.py` of the same commit),
//! disaggregated test ids, byte for byte.
//!
//! The behaviour is that of `shared/docs/g2-notes.md` (sections 1-4), implemented from those
//! notes. The quirks kept on purpose:
//!
//! - **Arguments**: argparse ([`super::argparse`]): the eight path flags are required, the
//!   rest optional, `--flag=value`, unique prefixes, the last repeat wins, `--help` exits 0;
//!   G1's `--run-ci` is an unknown flag. `--split-group` is Python's `int()` (` 2`, `+2`,
//!   `0_2`, negatives). `--stage-name` has no effect on the output at this commit.
//! - **Reading**: every file in Python text mode: universal newlines (`\r\n`, `\r`), UTF-8.
//!   The config through [`super::python::safe_load`] (duplicate keys: the last wins).
//! - **Test list**: the non-blank lines, stripped; `#` lines are NOT skipped and count for
//!   `--split-group N` (N > 0 picks the N-th, N <= 0 the first). The test id is the text after
//!   the LAST `[` up to the next `]`, split on `-`: `disagg*-{e2e|gen_only}-<config>` (a
//!   substring test on the first part, checked before `aggr`). The config is
//!   `os.path.join(--llm-src, "tests/scripts/perf-sanity/disaggregated", config + ".yaml")`
//!   (an absolute part restarts the path), written as given into `configYamlPath`.
//! - **Sizes** are Python arithmetic on whatever numbers the YAML holds
//!   ([`super::python::Num`]): `gpus = tp*pp*cp` (each defaults to 1), `nodes =
//!   math.ceil(gpus / gpus_per_node)`, `gpusPerNodePer* = min(gpus, gpus_per_node)`, totals as
//!   in G1, so `2.0` prints `2.0` and `true` prints `True`. `hardware.gpus_per_node` is checked
//!   first. Without context servers the ctx sizes are still computed and exported.
//! - **Modes**: the test id's mode decides. `gen_only` with `gen_only_no_context` in the
//!   YAML's `benchmark.mode` (a substring test; default `""`) runs no context servers
//!   (`numCtxServers=0`, `num_ctx_servers` not needed), adds `TRTLLM_DISAGG_BENCHMARK_GEN_ONLY=1`
//!   to GEN and to the server env (a trailing space when that is empty), an export line and an
//!   srun `--container-env`; plain `gen_only` prefixes CTX with the KV-transfer-overlap switch
//!   and GEN with it and `TLLM_BENCHMARK_REQ_QUEUES_SIZE=<concurrency>`. `e2e` ignores the
//!   YAML's mode.
//! - **Concurrency**: `benchmark.concurrency_list` (default `"1"`), a string through `int()`,
//!   anything else as Python's `str()` (`64.0`, `[64, 128]`, `None`); checked in every mode.
//! - **Env blocks**: `x or ""` for every `environment` key (null, `0`, `false` are empty).
//!   CTX/GEN = the FlashInfer/HF_HOME base (with its literal `\${SLURM_LOCALID}`), then
//!   `worker_env_var` and `{ctx,gen}_worker_env_var` (the non-empty ones), right-stripped.
//! - **Partial pytest commands**: from the first raw prefix line containing
//!   `export pytestCommand=` (also commented out; not `export pytestCommandOld=`), every
//!   `pytestCommand` in it renamed, split on whitespace and grouped: each token up to the first
//!   token that is exactly `pytest` alone (all of them alone without one), then `--x=v` alone,
//!   `--x v` and `-x v` together (when `v` does not start with `-`), the rest alone. Worker
//!   drops groups containing `--csv`, `--cov`, `--periodic`; DisaggServer those and
//!   `trtllm-llmapi-launch`; Benchmark only `trtllm-llmapi-launch`. Dropping the last group
//!   drops the line's closing `"` with it. No such line: the three lines vanish.
//! - **testOutputDir**: `--output-dir[=\s]+"?([^"\s]+)"?` in that raw line, joined with the
//!   whole bracket text (`os.path.join`); empty without a match.
//! - **UCX**: upstream's table ([`crate::ucx::UPSTREAM`]), the cluster from `--cluster-name`
//!   only (lowercased, first rule wins); the same prefix on all four role commands.
//! - **Layout**: every prefix line and every appended line `.strip()`-ed and dropped when
//!   blank (indentation goes, also inside heredocs; a value's trailing spaces go unless
//!   quoted); `srunArgs=(` with each argument as `  "<arg>"` (no escaping); the draft's lines
//!   stripped the same way; joined as `f"{prefix}\n{srun}\n{draft}"`: no final newline, and a
//!   blank draft ends the file in `)\n`.
//! - **Output file**: written only at the end, mode 0666 & umask (the reference's
//!   `open(path, "w")`; launch-gen writes a temp file and renames it, so a failed run leaves
//!   nothing and an existing file is replaced whole). Nothing is printed on stdout.
//!
//! Where the reference fails (its `ValueError`, `FileNotFoundError`, YAML and decode errors,
//! and the `TypeError`s of impossible values), launch-gen exits 2 with one line naming the
//! file, key or argument and what was expected. Deliberate differences:
//!
//! - `concurrency_list: 512 1075` (several values in one string), on which the reference
//!   crashes in every mode (`int()`), works: the FIRST value is the concurrency, as G1
//!   compatibility and native mode's `gen_only` take it. Only plain `gen_only` writes it
//!   (`TLLM_BENCHMARK_REQ_QUEUES_SIZE=512`); e2e and `gen_only_no_context` are unchanged.
//! - Aggregated test ids (`aggr*-...`) are refused: `--compat g2` does not render that path
//!   yet (no golden case pins its output).
//! - A string or list where a size or count is expected is refused (Python would repeat or
//!   concatenate it, or fail), and so is an explicit `null` size.
//! - `hardware`, `benchmark`, `environment`, `worker_config` and its `ctx`/`gen` count as empty
//!   when absent or `null`; any other value that is not a mapping is refused.
//! - `benchmark.mode` that is not a string (tested only in `gen_only`): a list or mapping is
//!   searched as Python's `in` does, a number or null is refused.
//! - YAML 1.1-only scalars and numbers too large to compute exactly: see [`super::python`].
//! - `--run-sh`, `--install-sh` and `--llm-src` must be UTF-8 (the reference fails writing
//!   them); the other paths may be any bytes.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use regex::Regex;

use super::argparse::{Kind, Opt, Parsed, Parser, Values};
use super::python::{Dict, Num, NumError, PyValue};
use super::{Files, Outcome, ReadError};
use crate::pytext::{self, PyInt};
use crate::ucx;

/// Where configs live under `--llm-src`.
pub const CONFIG_DIR: &str = "tests/scripts/perf-sanity/disaggregated";

/// The line of the script prefix that holds the base pytest command.
const PYTEST_EXPORT: &str = "export pytestCommand=";
const LLMAPI_LAUNCH: &str = "trtllm-llmapi-launch";
const GEN_ONLY_VARIABLE: &str = "TRTLLM_DISAGG_BENCHMARK_GEN_ONLY";
/// The start of the CTX and GEN env blocks (the backslash is in the output).
const ENV_BASE: &str =
    r"FLASHINFER_JIT_DIR=/tmp/flashinfer_jit_cache_\${SLURM_LOCALID} HF_HOME=/tmp/hf_home";
const TEST_ID: &str = "a test id like `perf/test_perf_sanity.py::test_e2e[disagg-e2e-<config>]`";

const OPTIONS: &[Opt] = &[
    opt(
        "--draft-launch-sh",
        true,
        "draft launch script, appended after the srun arguments",
    ),
    opt("--launch-sh", true, "where to write the launch script"),
    opt("--run-sh", true, "run script path on the nodes (runScript)"),
    opt(
        "--install-sh",
        true,
        "install script path on the nodes (installScript)",
    ),
    opt(
        "--llm-src",
        true,
        "TensorRT-LLM source tree; configs are under tests/scripts/perf-sanity/disaggregated",
    ),
    opt("--test-list", true, "test list; one line selects the test"),
    opt(
        "--script-prefix",
        true,
        "script prefix (#SBATCH and export lines)",
    ),
    opt("--srun-args", true, "file with the srun arguments"),
    Opt {
        flag: "--split-group",
        required: false,
        kind: Kind::Int,
        help: "N > 0 selects the N-th non-blank line of the test list (default: 0, the first)",
    },
    opt(
        "--stage-name",
        false,
        "CI stage name (no effect on the output at this commit)",
    ),
    opt(
        "--cluster-name",
        false,
        "cluster name; selects the UCX settings (default: none)",
    ),
];

const fn opt(flag: &'static str, required: bool, help: &'static str) -> Opt {
    Opt {
        flag,
        required,
        kind: Kind::Text,
        help,
    }
}

/// G2's command line.
pub const PARSER: Parser = Parser {
    prog: "launch-gen --compat g2",
    description: "Writes the launch script of TensorRT-LLM's unified perf generator \
                  (jenkins/scripts/perf/submit.py @ 39778d35), byte for byte.",
    options: OPTIONS,
};

/// The arguments after `--compat g2`.
#[derive(Debug, Clone)]
pub struct Options {
    pub draft_launch_sh: PathBuf,
    pub launch_sh: PathBuf,
    pub run_sh: String,
    pub install_sh: String,
    pub llm_src: String,
    pub test_list: PathBuf,
    pub script_prefix: PathBuf,
    pub srun_args: PathBuf,
    pub split_group: PyInt,
    pub cluster_name: String,
}

/// What the arguments ask for.
#[derive(Debug, Clone)]
pub enum Command {
    /// `--help`: this text.
    Help(String),
    Render(Box<Options>),
}

impl Options {
    /// Parses the arguments as the reference's argparse does.
    pub fn parse(args: &[OsString]) -> Result<Command, String> {
        match PARSER.parse(args)? {
            Parsed::Help(text) => Ok(Command::Help(text)),
            Parsed::Values(values) => {
                Self::from_values(&values).map(|options| Command::Render(Box::new(options)))
            }
        }
    }

    fn from_values(values: &Values) -> Result<Self, String> {
        let path = |flag: &str| PathBuf::from(values.get(flag).unwrap_or_default());
        let text = |flag: &str| -> Result<String, String> {
            let value = values.get(flag).unwrap_or_default();
            value.to_str().map(str::to_owned).ok_or_else(|| {
                format!(
                    "`{flag}`: expected UTF-8 text (it is written into the script), found `{}`",
                    value.to_string_lossy()
                )
            })
        };
        let split_group = match values.get("--split-group") {
            None => pytext::parse_int("0"),
            Some(value) => value.to_str().and_then(pytext::parse_int),
        }
        .ok_or("`--split-group`: expected an integer")?;
        Ok(Self {
            draft_launch_sh: path("--draft-launch-sh"),
            launch_sh: path("--launch-sh"),
            run_sh: text("--run-sh")?,
            install_sh: text("--install-sh")?,
            llm_src: text("--llm-src")?,
            test_list: path("--test-list"),
            script_prefix: path("--script-prefix"),
            srun_args: path("--srun-args"),
            split_group,
            cluster_name: values
                .get("--cluster-name")
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default(),
        })
    }
}

/// `launch-gen --compat g2 ARGS...`: the arguments after `--compat g2`.
pub fn run(args: &[OsString], files: &dyn Files) -> Result<Outcome, String> {
    let options = match Options::parse(args)? {
        Command::Render(options) => *options,
        Command::Help(text) => return Ok(Outcome::Help(text)),
    };
    let script = render(&options, files)?;
    Ok(Outcome::Write {
        path: options.launch_sh,
        script,
        mode: 0o666,
    })
}

/// The selected test of the test list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestId {
    /// 1-based line of the test list, for messages.
    pub line: usize,
    /// The whole bracket text: `disagg-e2e-<config>`.
    pub case_name: String,
    pub mode: Mode,
    /// The config's base name (`<config>`).
    pub config: String,
}

/// The test id's mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    E2e,
    GenOnly,
}

/// Renders the launch script for `options`, reading the inputs through `files`.
pub fn render(options: &Options, files: &dyn Files) -> Result<String, String> {
    let read = |path: &Path| -> Result<String, String> {
        files
            .read_text(path)
            .map(|text| pytext::universal_newlines(&text).into_owned())
            .map_err(|error| format!("`{}`: {error}", path.display()))
    };
    let list_path = options.test_list.display().to_string();
    let test = select_test(&read(&options.test_list)?, &options.split_group, &list_path)?;

    let config_path = join(
        &options.llm_src,
        &[CONFIG_DIR, &format!("{}.yaml", test.config)],
    );
    let config_text = files
        .read_text(Path::new(&config_path))
        .map_err(|error| match error {
            ReadError::NotFound => format!(
                "`{list_path}`: line {} selects config `{}`, expected the file `{config_path}` \
                 (under `--llm-src`)",
                test.line, test.config
            ),
            other => format!("`{config_path}`: {other}"),
        })?;
    let in_config = |message: String| format!("`{config_path}`: {message}");
    let config = match super::python::safe_load(&pytext::universal_newlines(&config_text))
        .map_err(|error| in_config(format!("invalid YAML: {error}")))?
    {
        PyValue::Dict(dict) => dict,
        PyValue::None => {
            return Err(in_config(
                "expected a YAML mapping, found an empty document".to_owned(),
            ));
        }
        other => {
            return Err(in_config(format!(
                "expected a YAML mapping, found {}",
                other.describe()
            )));
        }
    };
    let settings = Settings::new(&config, test.mode).map_err(in_config)?;

    let prefix = read(&options.script_prefix)?;
    let srun_text = read(&options.srun_args)?;
    let draft = read(&options.draft_launch_sh)?;

    let rules = ucx::Rules::upstream().map_err(|error| format!("the UCX table: {error}"))?;
    // At this commit every rule matches any GPU type, so none is derived from the stage name.
    let ucx = rules.command(rules.select(&options.cluster_name, ""));

    let raw_lines: Vec<&str> = prefix.split('\n').collect();
    let pytest_line = raw_lines.iter().find(|line| line.contains(PYTEST_EXPORT));
    let partial = |variable: &str, dropped: &[&str]| {
        pytest_line.map_or_else(String::new, |line| partial_command(line, variable, dropped))
    };
    let output_dir = pytest_line
        .and_then(|line| output_dir(line))
        .map_or_else(String::new, |dir| join(&dir, &[&test.case_name]));

    let mut lines: Vec<String> = raw_lines.iter().map(|line| (*line).to_owned()).collect();
    let mut srun: Vec<String> = pytext::split(&srun_text).map(str::to_owned).collect();
    if settings.no_ctx {
        lines.push(format!("export {GEN_ONLY_VARIABLE}=1"));
        srun.push(format!("--container-env={GEN_ONLY_VARIABLE}"));
    }
    lines.push(partial(
        "partialPytestCommandWorker",
        &["--csv", "--cov", "--periodic"],
    ));
    lines.push(partial(
        "partialPytestCommandDisaggServer",
        &["--csv", "--cov", "--periodic", LLMAPI_LAUNCH],
    ));
    lines.push(partial("partialPytestCommandBenchmark", &[LLMAPI_LAUNCH]));
    lines.push("export PYTEST_COMMON_VARS=\"\"".to_owned());
    let env = &settings.env;
    lines.push(format!("export CTX_WORKER_ENV_VARS=\"{}\"", env.ctx_worker));
    lines.push(format!("export GEN_WORKER_ENV_VARS=\"{}\"", env.gen_worker));
    lines.push(format!("export SERVER_ENV_VARS=\"{}\"", env.server));
    lines.push(format!("export BENCHMARK_ENV_VARS=\"{}\"", env.benchmark));
    for (role, block, partial) in [
        ("CTXWorker", "CTX_WORKER_ENV_VARS", "Worker"),
        ("GENWorker", "GEN_WORKER_ENV_VARS", "Worker"),
        ("DisaggServer", "SERVER_ENV_VARS", "DisaggServer"),
        ("Benchmark", "BENCHMARK_ENV_VARS", "Benchmark"),
    ] {
        lines.push(format!(
            "export pytestCommand{role}=\"{ucx} ${block} $PYTEST_COMMON_VARS \
             $partialPytestCommand{partial}\""
        ));
    }
    lines.push(format!("export runScript={}", options.run_sh));
    lines.push(format!("export installScript={}", options.install_sh));
    lines.push(format!("export configYamlPath={config_path}"));
    let sizes = &settings.sizes;
    for (name, value) in [
        ("numCtxServers", sizes.num_ctx),
        ("numGenServers", sizes.num_gen),
        ("gpusPerNode", sizes.gpus_per_node),
        ("gpusPerCtxServer", sizes.ctx_server.gpus),
        ("gpusPerGenServer", sizes.gen_server.gpus),
        ("nodesPerCtxServer", sizes.ctx_server.nodes),
        ("nodesPerGenServer", sizes.gen_server.nodes),
        ("gpusPerNodePerCtxServer", sizes.ctx_server.gpus_per_node),
        ("gpusPerNodePerGenServer", sizes.gen_server.gpus_per_node),
        ("totalNodes", sizes.total_nodes),
        ("totalGpus", sizes.total_gpus),
    ] {
        lines.push(format!("export {name}={value}"));
    }
    lines.push(format!("export testOutputDir={output_dir}"));

    srun.push("--container-env=DISAGG_SERVING_TYPE".to_owned());
    srun.push("--container-env=pytestCommand".to_owned());
    let mut srun_block = String::from("srunArgs=(\n");
    for arg in &srun {
        srun_block.push_str(&format!("  \"{arg}\"\n"));
    }
    srun_block.push(')');

    Ok(format!(
        "{}\n{srun_block}\n{}",
        stripped_lines(lines.iter().map(String::as_str)),
        stripped_lines(draft.split('\n'))
    ))
}

/// Each line `.strip()`-ed, the blank ones dropped, joined with `\n`.
fn stripped_lines<'a>(lines: impl Iterator<Item = &'a str>) -> String {
    let kept: Vec<&str> = lines
        .map(pytext::strip)
        .filter(|line| !line.is_empty())
        .collect();
    kept.join("\n")
}

/// The test selected by `--split-group` from the test list `text` (newlines translated).
pub fn select_test(text: &str, split_group: &PyInt, shown: &str) -> Result<TestId, String> {
    let lines: Vec<(usize, &str)> = text
        .split('\n')
        .enumerate()
        .map(|(index, line)| (index + 1, pytext::strip(line)))
        .filter(|(_, line)| !line.is_empty())
        .collect();
    if lines.is_empty() {
        return Err(format!(
            "`{shown}`: expected {TEST_ID} on a non-blank line, found no such line"
        ));
    }
    let (line, text) = if split_group.is_positive() {
        let count = lines.len();
        let index = split_group
            .to_i128()
            .and_then(|n| usize::try_from(n).ok())
            .filter(|&n| n <= count)
            .ok_or_else(|| {
                format!(
                    "`--split-group {split_group}`: expected at most {count}, the number of \
                     non-blank lines of `{shown}` (`#` lines count)"
                )
            })?;
        lines[index - 1]
    } else {
        lines[0]
    };
    parse_test_id(text, line).map_err(|message| format!("`{shown}`: line {line}: {message}"))
}

/// The test id of one stripped test-list line (`line` is its number).
pub fn parse_test_id(text: &str, line: usize) -> Result<TestId, String> {
    if !text.contains('[') || !text.contains(']') {
        return Err(format!(
            "expected {TEST_ID}, found `{text}` without `[...]`"
        ));
    }
    let after_open = text.rsplit('[').next().unwrap_or_default();
    let bracket = after_open.split(']').next().unwrap_or_default();
    let parts: Vec<&str> = bracket.split('-').collect();
    if parts.len() < 2 {
        return Err(format!(
            "expected `<prefix>-<mode>-<config>` inside the brackets, found `[{bracket}]`"
        ));
    }
    if parts[0].contains("disagg") {
        if parts.len() < 3 {
            return Err(format!(
                "expected `disagg-<mode>-<config>` inside the brackets, found `[{bracket}]`"
            ));
        }
        let mode = match parts[1] {
            "e2e" => Mode::E2e,
            "gen_only" => Mode::GenOnly,
            other => {
                return Err(format!(
                    "expected the mode `e2e` or `gen_only` after `{}-` in `[{bracket}]`, found `{other}`",
                    parts[0]
                ));
            }
        };
        return Ok(TestId {
            line,
            case_name: bracket.to_owned(),
            mode,
            config: parts[2..].join("-"),
        });
    }
    if parts[0].contains("aggr") {
        return Err(format!(
            "`[{bracket}]`: aggregated test ids are not supported by --compat g2 yet \
             (expected `disagg-<mode>-<config>`)"
        ));
    }
    Err(format!(
        "expected `disagg` or `aggr` before the first `-` in `[{bracket}]`, found `{}`",
        parts[0]
    ))
}

/// Python's `os.path.join` (POSIX): an absolute part restarts the path; a `/` is added only
/// where the path does not end in one.
pub fn join(base: &str, parts: &[&str]) -> String {
    let mut path = base.to_owned();
    for part in parts {
        if part.starts_with('/') {
            path = (*part).to_owned();
        } else if path.is_empty() || path.ends_with('/') {
            path.push_str(part);
        } else {
            path.push('/');
            path.push_str(part);
        }
    }
    path
}

/// The reference's `--output-dir[=\s]+"?([^"\s]+)"?`, first match; `\s` is Python's.
fn output_dir(line: &str) -> Option<String> {
    let pattern = Regex::new(r#"--output-dir[=\s\x1c-\x1f]+"?([^"\s\x1c-\x1f]+)"?"#).ok()?;
    Some(pattern.captures(line)?.get(1)?.as_str().to_owned())
}

/// One partial pytest command line: `line` with `pytestCommand` renamed to `variable`, split
/// and grouped, without the groups that contain any of `dropped`.
pub fn partial_command(line: &str, variable: &str, dropped: &[&str]) -> String {
    let renamed = line.replace("pytestCommand", variable);
    let tokens: Vec<&str> = pytext::split(&renamed).collect();
    let kept: Vec<String> = group_tokens(&tokens)
        .into_iter()
        .filter(|group| {
            !group
                .iter()
                .any(|token| dropped.iter().any(|drop| token.contains(drop)))
        })
        .map(|group| group.join(" "))
        .collect();
    kept.join(" ")
}

/// The grouping of the partial commands (module docs): single tokens up to and including the
/// first `pytest`, then options with their values.
pub fn group_tokens<'a>(tokens: &[&'a str]) -> Vec<Vec<&'a str>> {
    let Some(pytest) = tokens.iter().position(|token| *token == "pytest") else {
        return tokens.iter().map(|token| vec![*token]).collect();
    };
    let mut groups: Vec<Vec<&str>> = tokens[..=pytest].iter().map(|token| vec![*token]).collect();
    let mut index = pytest + 1;
    while index < tokens.len() {
        let token = tokens[index];
        let value = tokens.get(index + 1).filter(|next| !next.starts_with('-'));
        let takes_value = if token.starts_with("--") {
            !token.contains('=')
        } else {
            token.starts_with('-') && token.chars().count() == 2
        };
        match value.filter(|_| takes_value) {
            Some(value) => {
                groups.push(vec![token, value]);
                index += 2;
            }
            None => {
                groups.push(vec![token]);
                index += 1;
            }
        }
    }
    groups
}

/// What the config decides: sizes, the environment blocks, the mode.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `gen_only` with `gen_only_no_context`: no context servers.
    pub no_ctx: bool,
    pub sizes: Sizes,
    pub env: EnvBlocks,
}

/// The `*_ENV_VARS` values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvBlocks {
    pub ctx_worker: String,
    pub gen_worker: String,
    pub server: String,
    pub benchmark: String,
}

/// One kind of server's sizes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServerSizes {
    pub gpus: Num,
    pub nodes: Num,
    pub gpus_per_node: Num,
}

/// The exported numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sizes {
    pub num_ctx: Num,
    pub num_gen: Num,
    pub gpus_per_node: Num,
    pub ctx_server: ServerSizes,
    pub gen_server: ServerSizes,
    pub total_nodes: Num,
    pub total_gpus: Num,
}

impl Settings {
    /// Reads the config as the reference does (errors name the key; no file name).
    pub fn new(config: &Dict, mode: Mode) -> Result<Self, String> {
        let hardware = section(config, "hardware", "hardware")?;
        let gpus_per_node = match hardware.get("gpus_per_node") {
            None | Some(PyValue::None) => {
                return Err(
                    "key `hardware.gpus_per_node`: missing, expected a number of GPUs".to_owned(),
                );
            }
            Some(value) => number(value, "hardware.gpus_per_node")?,
        };
        let benchmark = section(config, "benchmark", "benchmark")?;
        let no_ctx = mode == Mode::GenOnly && mode_says_no_context(benchmark.get("mode"))?;
        let count = |key: &str| match hardware.get(key) {
            None | Some(PyValue::None) => Err(format!(
                "key `hardware.{key}`: missing, expected a number of servers"
            )),
            Some(value) => number(value, &format!("hardware.{key}")),
        };
        let num_ctx = if no_ctx {
            Num::Int(0)
        } else {
            count("num_ctx_servers")?
        };
        let num_gen = count("num_gen_servers")?;

        let workers = section(config, "worker_config", "worker_config")?;
        let ctx_server = server_sizes(workers, "ctx", gpus_per_node)?;
        let gen_server = server_sizes(workers, "gen", gpus_per_node)?;
        let totals = || -> Result<(Num, Num), NumError> {
            let total_nodes = num_ctx
                .times(ctx_server.nodes)?
                .plus(num_gen.times(gen_server.nodes)?)?;
            Ok((total_nodes, total_nodes.times(gpus_per_node)?))
        };
        let (total_nodes, total_gpus) =
            totals().map_err(|error| format!("key `hardware`: the total sizes: {error}"))?;

        let concurrency = concurrency(benchmark.get("concurrency_list"))?;
        let env = env_blocks(config, mode, no_ctx, &concurrency)?;
        Ok(Self {
            no_ctx,
            sizes: Sizes {
                num_ctx,
                num_gen,
                gpus_per_node,
                ctx_server,
                gen_server,
                total_nodes,
                total_gpus,
            },
            env,
        })
    }
}

/// `config.get(key) or {}`-like: absent or null is empty, a mapping is itself.
fn section<'a>(config: &'a Dict, key: &str, shown: &str) -> Result<&'a Dict, String> {
    static EMPTY: Dict = Dict::new();
    match config.get(key) {
        None | Some(PyValue::None) => Ok(&EMPTY),
        Some(PyValue::Dict(dict)) => Ok(dict),
        Some(other) => Err(format!(
            "key `{shown}`: expected a mapping, found {}",
            other.describe()
        )),
    }
}

fn number(value: &PyValue, key: &str) -> Result<Num, String> {
    Num::from_value(value)
        .ok_or_else(|| format!("key `{key}`: expected a number, found {}", value.describe()))
}

/// `"gen_only_no_context" in benchmark.get("mode", "")`.
fn mode_says_no_context(mode: Option<&PyValue>) -> Result<bool, String> {
    const NO_CONTEXT: &str = "gen_only_no_context";
    let is_it = |value: &PyValue| matches!(value, PyValue::Str(text) if text == NO_CONTEXT);
    match mode {
        None => Ok(false),
        Some(PyValue::Str(text)) => Ok(text.contains(NO_CONTEXT)),
        Some(PyValue::List(items)) => Ok(items.iter().any(is_it)),
        Some(PyValue::Dict(dict)) => Ok(dict.entries().iter().any(|(key, _)| is_it(key))),
        Some(other) => Err(format!(
            "key `benchmark.mode`: expected a string, found {}",
            other.describe()
        )),
    }
}

/// GPUs (`tp*pp*cp`), nodes and GPUs per node of `worker_config.<kind>`.
fn server_sizes(workers: &Dict, kind: &str, gpus_per_node: Num) -> Result<ServerSizes, String> {
    let path = format!("worker_config.{kind}");
    let server = section(workers, kind, &path)?;
    let mut gpus = Num::Int(1);
    for key in [
        "tensor_parallel_size",
        "pipeline_parallel_size",
        "context_parallel_size",
    ] {
        let size = match server.get(key) {
            None => Num::Int(1),
            Some(value) => number(value, &format!("{path}.{key}"))?,
        };
        gpus = gpus
            .times(size)
            .map_err(|error| format!("key `{path}`: {error}"))?;
    }
    let nodes = gpus.ceil_div(gpus_per_node).map_err(|error| match error {
        NumError::ZeroDivision => format!(
            "key `hardware.gpus_per_node`: expected a non-zero number, found `{gpus_per_node}`"
        ),
        other => format!("key `{path}`: {gpus} GPUs on `{gpus_per_node}` per node: {other}"),
    })?;
    Ok(ServerSizes {
        gpus,
        nodes,
        gpus_per_node: gpus.min(gpus_per_node),
    })
}

/// The concurrency as the GEN env writes it: a string through `int()` (its FIRST value when it
/// holds several), anything else through `str()`.
fn concurrency(value: Option<&PyValue>) -> Result<String, String> {
    let text = match value {
        None => return Ok("1".to_owned()),
        Some(PyValue::Str(text)) => text,
        Some(other) => return Ok(other.py_str()),
    };
    if let Some(value) = pytext::parse_int(text) {
        return Ok(value.to_string());
    }
    let values: Option<Vec<PyInt>> = pytext::split(text).map(pytext::parse_int).collect();
    match values.as_deref() {
        Some([first, _, ..]) => Ok(first.to_string()),
        _ => Err(format!(
            "key `benchmark.concurrency_list`: expected an integer (Python's `int()`), or \
             integers separated by spaces, found `{text:?}`"
        )),
    }
}

/// The four `*_ENV_VARS` values.
fn env_blocks(
    config: &Dict,
    mode: Mode,
    no_ctx: bool,
    concurrency: &str,
) -> Result<EnvBlocks, String> {
    let environment = section(config, "environment", "environment")?;
    // `environment.get(key) or ""`.
    let value = |key: &str| match environment.get(key) {
        Some(value) if value.is_truthy() => Some(value),
        _ => None,
    };
    let text = |key: &str| -> Result<&str, String> {
        match value(key) {
            None => Ok(""),
            Some(PyValue::Str(text)) => Ok(text),
            Some(other) => Err(format!(
                "key `environment.{key}`: expected a string, found {}",
                other.describe()
            )),
        }
    };
    let worker = text("worker_env_var")?;
    let block = |extra: &str| -> Result<String, String> {
        let parts: Vec<&str> = [worker, text(extra)?]
            .into_iter()
            .filter(|part| !part.is_empty())
            .collect();
        Ok(rstrip(&format!("{ENV_BASE} {}", parts.join(" "))).to_owned())
    };
    let mut ctx_worker = block("ctx_worker_env_var")?;
    let mut gen_worker = block("gen_worker_env_var")?;
    let shown = |key: &str| value(key).map_or_else(String::new, PyValue::py_str);
    let mut server = shown("server_env_var");
    let benchmark = shown("benchmark_env_var");
    if no_ctx {
        // `"..." + server_env`: only a string can be added to.
        let server_env = text("server_env_var")?;
        gen_worker = format!("{GEN_ONLY_VARIABLE}=1 {gen_worker}");
        server = format!("{GEN_ONLY_VARIABLE}=1 {server_env}");
    } else if mode == Mode::GenOnly {
        ctx_worker = format!("TRTLLM_DISABLE_KV_CACHE_TRANSFER_OVERLAP=1 {ctx_worker}");
        gen_worker = format!(
            "TRTLLM_DISABLE_KV_CACHE_TRANSFER_OVERLAP=1 \
             TLLM_BENCHMARK_REQ_QUEUES_SIZE={concurrency} {gen_worker}"
        );
    }
    Ok(EnvBlocks {
        ctx_worker,
        gen_worker,
        server,
        benchmark,
    })
}

/// `str.rstrip()`.
fn rstrip(text: &str) -> &str {
    text.trim_end_matches(pytext::is_space)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::plan::Plan;

    fn tokens(line: &str) -> Vec<String> {
        let tokens: Vec<&str> = pytext::split(line).collect();
        group_tokens(&tokens)
            .into_iter()
            .map(|group| group.join(" "))
            .collect()
    }

    #[test]
    fn grouping_follows_the_six_rules() {
        let cases: &[(&str, &[&str])] = &[
            // Before `pytest` every token is alone, even options with values.
            ("A=1 -k v pytest", &["A=1", "-k", "v", "pytest"]),
            // 1: `--x=v` alone; 2: `--x v`; 3: `--x` before an option; 4: `-k v`; 5: `-vv`, and
            // a short option before an option; 6: positional.
            (
                "pytest --a=1 --b 2 --c --d -k x -vv -o y t.py -x -y",
                &[
                    "pytest", "--a=1", "--b 2", "--c", "--d", "-k x", "-vv", "-o y", "t.py", "-x",
                    "-y",
                ],
            ),
            (
                "pytest -vv x --a=1 y",
                &["pytest", "-vv", "x", "--a=1", "y"],
            ),
            ("x pytest --last", &["x", "pytest", "--last"]),
            ("x pytest -k", &["x", "pytest", "-k"]),
            // A one-character option with a multi-byte name still has length 2.
            ("pytest -é v", &["pytest", "-é v"]),
            // No exact `pytest` token: all alone.
            ("/usr/bin/pytest --b 2", &["/usr/bin/pytest", "--b", "2"]),
            ("\"pytest --b 2", &["\"pytest", "--b", "2"]),
            // Only the first `pytest` counts.
            ("pytest pytest --b 2", &["pytest", "pytest", "--b 2"]),
        ];
        for (line, expected) in cases {
            assert_eq!(tokens(line), *expected, "{line:?}");
        }
    }

    #[test]
    fn partial_commands_filter_per_role() {
        let line = "export pytestCommand=\"A=1 /x/trtllm-llmapi-launch pytest -v --csv=r.csv --cov=/s --cov-report= --periodic-junit --periodic-junit-xmlpath p.xml --coverage x -k t\"";
        assert_eq!(
            partial_command(line, "W", &["--csv", "--cov", "--periodic"]),
            "export W=\"A=1 /x/trtllm-llmapi-launch pytest -v -k t\""
        );
        assert_eq!(
            partial_command(line, "S", &["--csv", "--cov", "--periodic", LLMAPI_LAUNCH]),
            "export S=\"A=1 pytest -v -k t\""
        );
        assert_eq!(
            partial_command(line, "B", &[LLMAPI_LAUNCH]),
            "export B=\"A=1 pytest -v --csv=r.csv --cov=/s --cov-report= --periodic-junit --periodic-junit-xmlpath p.xml --coverage x -k t\""
        );
        // The closing quote rides on the last group: dropping it drops the quote.
        assert_eq!(
            partial_command(
                "export pytestCommand=\"pytest -v --csv=x\"",
                "W",
                &["--csv"]
            ),
            "export W=\"pytest -v"
        );
        // Every occurrence is renamed.
        assert_eq!(
            partial_command("export pytestCommand=\"$pytestCommand  x\"", "W", &[]),
            "export W=\"$W x\""
        );
    }

    #[test]
    fn output_dir_follows_the_reference_regex() {
        let cases = [
            ("--output-dir=/a/b/ x", Some("/a/b/")),
            ("--output-dir /a/b x", Some("/a/b")),
            ("--output-dir=\"/a/b\" x", Some("/a/b")),
            ("--output-dir= = \t/a\"", Some("/a")),
            ("\"x --output-dir=/a/b\"", Some("/a/b")),
            ("--output-dir\u{a0}/a", Some("/a")),
            ("--output-dir\x1c/a\x1db", Some("/a")),
            ("--output-dir=\" /a", None),
            ("--output-directory=/a", None),
            ("--output-dir", None),
            ("--output-dir= \"\" --output-dir=/z", Some("/z")),
        ];
        for (line, expected) in cases {
            assert_eq!(output_dir(line).as_deref(), expected, "{line:?}");
        }
    }

    #[test]
    fn paths_are_joined_like_os_path_join() {
        let cases: &[(&str, &[&str], &str)] = &[
            (
                "llm-src",
                &[CONFIG_DIR, "c.yaml"],
                "llm-src/tests/scripts/perf-sanity/disaggregated/c.yaml",
            ),
            (
                "./x/",
                &[CONFIG_DIR, "c.yaml"],
                "./x/tests/scripts/perf-sanity/disaggregated/c.yaml",
            ),
            (
                "",
                &[CONFIG_DIR, "c.yaml"],
                "tests/scripts/perf-sanity/disaggregated/c.yaml",
            ),
            ("/src", &[CONFIG_DIR, "/etc/c.yaml"], "/etc/c.yaml"),
            ("/out/", &["case"], "/out/case"),
            ("/out", &["case"], "/out/case"),
            ("/out//", &["case"], "/out//case"),
        ];
        for (base, parts, expected) in cases {
            assert_eq!(join(base, parts), *expected, "{base:?} {parts:?}");
        }
    }

    #[test]
    fn test_ids_follow_the_reference_rules() {
        let ok =
            |line: &str| parse_test_id(line, 1).unwrap_or_else(|error| panic!("{line:?}: {error}"));
        let id =
            ok("perf/test_perf_sanity.py::test_e2e[disagg_upload-gen_only-a-b.c] TIMEOUT (90)");
        assert_eq!(
            (id.case_name.as_str(), id.mode, id.config.as_str()),
            ("disagg_upload-gen_only-a-b.c", Mode::GenOnly, "a-b.c")
        );
        let id = ok("x[y][mydisaggr-e2e-]");
        assert_eq!((id.mode, id.config.as_str()), (Mode::E2e, ""));
        for (line, needle) in [
            ("no brackets", "without `[...]`"),
            ("only [ open", "without `[...]`"),
            ("t[disagg]", "`<prefix>-<mode>-<config>`"),
            ("t[disagg-e2e]", "`disagg-<mode>-<config>`"),
            ("t[disagg-perf-c]", "the mode `e2e` or `gen_only`"),
            ("t[disagg-E2E-c]", "the mode `e2e` or `gen_only`"),
            (
                "t[aggr-c-server]",
                "aggregated test ids are not supported by --compat g2 yet",
            ),
            (
                "t[aggr_upload-ctx_only-c]",
                "aggregated test ids are not supported",
            ),
            ("t[perf-e2e-c]", "expected `disagg` or `aggr`"),
        ] {
            let error = parse_test_id(line, 1).expect_err(line);
            assert!(error.contains(needle), "{line:?}: {error}");
        }
    }

    #[test]
    fn concurrency_is_int_or_str_and_its_first_value_when_several() {
        let value = |yaml: &str| match super::super::python::safe_load(yaml) {
            Ok(PyValue::Dict(dict)) => concurrency(dict.get("c")),
            other => panic!("{other:?}"),
        };
        for (yaml, expected) in [
            ("c: '64'", "64"),
            ("c: ' +6_4 '", "64"),
            ("c: '0064'", "64"),
            ("c: '-5'", "-5"),
            ("c: 64", "64"),
            ("c: 64.0", "64.0"),
            ("c: [64, 128]", "[64, 128]"),
            ("c: null", "None"),
            ("c: true", "True"),
            ("c: 512 1075", "512"),
            ("c: ' 0128  7 '", "128"),
            ("x: 1", "1"),
        ] {
            assert_eq!(value(yaml).as_deref(), Ok(expected), "{yaml}");
        }
        for yaml in ["c: 512,1075", "c: ''", "c: 512 x", "c: abc"] {
            assert!(value(yaml).is_err(), "{yaml}");
        }
    }

    proptest! {
        /// On positive integers, G2's Python arithmetic is the shared plan's (`plan.rs`, which
        /// G1 and native mode use): the same servers, GPUs, nodes, tasks per node and totals.
        #[test]
        fn sizes_agree_with_the_shared_plan_on_integers(
            gpus_per_node in 1u64..=16,
            n_gen in 0u64..=8, gen_sizes in (1u64..=8, 1u64..=4, 1u64..=4),
            n_ctx in 0u64..=8, ctx_sizes in (1u64..=8, 1u64..=4, 1u64..=4),
            no_context in any::<bool>(),
        ) {
            let yaml = format!(
                "hardware: {{gpus_per_node: {gpus_per_node}, num_ctx_servers: {n_ctx}, num_gen_servers: {n_gen}}}\n\
                 benchmark: {{mode: {}}}\n\
                 worker_config:\n  gen: {{tensor_parallel_size: {}, pipeline_parallel_size: {}, context_parallel_size: {}}}\n  \
                 ctx: {{tensor_parallel_size: {}, pipeline_parallel_size: {}, context_parallel_size: {}}}\n",
                if no_context { "gen_only_no_context" } else { "e2e" },
                gen_sizes.0, gen_sizes.1, gen_sizes.2, ctx_sizes.0, ctx_sizes.1, ctx_sizes.2,
            );
            let Ok(PyValue::Dict(config)) = super::super::python::safe_load(&yaml) else {
                panic!("valid YAML: {yaml}");
            };
            let settings = Settings::new(&config, Mode::GenOnly).expect("valid config");
            let plan = Plan::from_parts(
                gpus_per_node,
                (n_gen, gen_sizes.0 * gen_sizes.1 * gen_sizes.2),
                (n_ctx, ctx_sizes.0 * ctx_sizes.1 * ctx_sizes.2),
                no_context,
            )
            .expect("small");
            let int = |value: u64| Num::Int(i128::from(value));
            let sizes = settings.sizes;
            prop_assert_eq!(settings.no_ctx, no_context);
            prop_assert_eq!(sizes.num_ctx, int(plan.ctx_server.count));
            prop_assert_eq!(sizes.num_gen, int(plan.gen_server.count));
            for (mine, shared) in [(sizes.ctx_server, plan.ctx_server), (sizes.gen_server, plan.gen_server)] {
                prop_assert_eq!(mine.gpus, int(shared.gpus));
                prop_assert_eq!(mine.nodes, int(shared.nodes));
                prop_assert_eq!(mine.gpus_per_node, int(shared.tasks_per_node));
            }
            prop_assert_eq!(sizes.total_nodes, int(plan.total_nodes));
            prop_assert_eq!(sizes.total_gpus, int(plan.total_gpus));
        }
    }
}
