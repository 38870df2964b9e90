//! `--explain`: the resource plan as a plain-text table, with node slices when nodes are given,
//! and in native mode what decided the test, its mode, the UCX set-up and each role's prefix.

use std::fmt::Write as _;

use crate::config::LaunchConfig;
use crate::job::redact::Redactor;
use crate::native::RoleCommands;
use crate::plan::{Plan, PlanError, Role};
use crate::serving::Serving;
use crate::testlist::{Selected, TestMode};

/// How a test list chose the config.
#[derive(Debug, Clone)]
pub struct Selection<'a> {
    /// The test list, as given.
    pub list: &'a str,
    pub split_group: u64,
    pub selected: &'a Selected,
    /// The config file used, and the mode token it was read with (`None`: the old way).
    pub config: &'a str,
    pub token: Option<TestMode>,
}

/// The UCX set-up and where it came from.
#[derive(Debug, Clone)]
pub struct Ucx {
    /// Whether the table applies (`--cluster-name` or `--ucx-rules` given).
    pub managed: bool,
    /// `the built-in table` or the `--ucx-rules` file.
    pub table: String,
    pub cluster: String,
    pub gpu: String,
    /// The matching rule's index and its cluster and GPU patterns, if one matched.
    pub rule: Option<(usize, String, String)>,
    /// What goes in front of every role command (empty when not managed).
    pub command: String,
}

/// The native-mode part of `--explain`. Secret-looking values (`HF_TOKEN=...`) are masked.
pub fn native(
    selection: Option<&Selection<'_>>,
    serving: &Serving,
    ucx: &Ucx,
    prefixes: &RoleCommands,
) -> String {
    let mut out = String::new();
    if let Some(selection) = selection {
        let selected = selection.selected;
        let group = match selection.split_group {
            0 => "the first test line".to_owned(),
            n => format!("split group {n}"),
        };
        let _ = writeln!(
            out,
            "\ntest: line {} of `{}` ({group}): `{}`",
            selected.line, selection.list, selected.test_id
        );
        let how = match (selected.mode, selection.token) {
            (Some(_), Some(_)) => "the unified generator's folder",
            (Some(_), None) => {
                "the first generator's folder, with the mode token as part of the name, since \
                 the unified generator's file is missing"
            }
            (None, _) => "the first generator's folder",
        };
        let _ = writeln!(out, "config: `{}` ({how})", selection.config);
    }
    let servers = if serving.no_ctx {
        "no context servers run"
    } else {
        "context servers run"
    };
    let _ = writeln!(out, "\nmode: {}; {servers}", serving.source);
    let cluster = if ucx.cluster.is_empty() {
        "no cluster name".to_owned()
    } else {
        format!("cluster `{}`", ucx.cluster)
    };
    let gpu = if ucx.gpu.is_empty() {
        String::new()
    } else {
        format!(", GPU `{}`", ucx.gpu)
    };
    let rule = match &ucx.rule {
        Some((index, cluster, gpu)) => {
            format!(
                "rule {index} (cluster `{cluster}`, GPU `{gpu}`) of {}",
                ucx.table
            )
        }
        None => format!("no rule of {}", ucx.table),
    };
    let command = if ucx.command.is_empty() {
        "(nothing)"
    } else {
        &ucx.command
    };
    if ucx.managed {
        let _ = writeln!(out, "UCX: {cluster}{gpu}: {rule}\n  {command}");
    } else {
        let _ = writeln!(
            out,
            "UCX: left as the environment has it (no `--cluster-name` or `--ucx-rules`)"
        );
    }
    let _ = writeln!(out, "\nin front of the command (UCX, mode, `environment`):");
    let redactor = Redactor::new(std::iter::empty::<(String, String)>());
    for (role, prefix) in [
        ("GEN", &prefixes.gen_worker),
        ("CTX", &prefixes.ctx),
        ("DISAGG_SERVER", &prefixes.server),
        ("BENCHMARK", &prefixes.benchmark),
    ] {
        let shown = if role == "CTX" && serving.no_ctx {
            "(no context servers)".into()
        } else if prefix.is_empty() {
            "(nothing)".into()
        } else {
            redactor.redact(prefix)
        };
        let _ = writeln!(out, "  {role:<13}  {shown}");
    }
    out
}

/// Renders the plan of `config` (shown as `name`) and, with `nodes`, the slice of every role.
pub fn render(
    config: &LaunchConfig,
    plan: &Plan,
    name: &str,
    nodes: Option<&[String]>,
) -> Result<String, PlanError> {
    let mut out = String::new();
    let mode = &config.benchmark.mode;
    let _ = writeln!(
        out,
        "plan for `{name}` (mode `{mode}`, {} GPUs per node)\n",
        plan.gpus_per_node
    );

    let header = [
        "server",
        "count",
        "GPUs each",
        "nodes each",
        "tasks per node",
        "nodes",
        "GPUs",
    ];
    let mut rows: Vec<[String; 7]> = Vec::new();
    for (kind, server) in [("GEN", plan.gen_server), ("CTX", plan.ctx_server)] {
        rows.push([
            kind.to_owned(),
            server.count.to_string(),
            server.gpus.to_string(),
            server.nodes.to_string(),
            server.tasks_per_node.to_string(),
            (server.count * server.nodes).to_string(),
            (server.count * server.gpus).to_string(),
        ]);
    }
    for single in [Role::DisaggServer, Role::Benchmark] {
        let dash = || "-".to_owned();
        rows.push([
            single.to_string(),
            "1".to_owned(),
            dash(),
            dash(),
            "1".to_owned(),
            dash(),
            dash(),
        ]);
    }
    let blank = String::new;
    rows.push([
        "total".to_owned(),
        blank(),
        blank(),
        blank(),
        blank(),
        plan.total_nodes.to_string(),
        plan.total_gpus.to_string(),
    ]);
    let widths: Vec<usize> = (0..header.len())
        .map(|column| {
            rows.iter()
                .map(|row| row[column].len())
                .chain([header[column].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut line = |cells: &[&str]| {
        let mut text = format!("{:<width$}", cells[0], width = widths[0]);
        for (cell, width) in cells.iter().zip(&widths).skip(1) {
            let _ = write!(text, "  {cell:>width$}");
        }
        let _ = writeln!(out, "{}", text.trim_end());
    };
    line(&header);
    for row in &rows {
        line(&row.iter().map(String::as_str).collect::<Vec<_>>());
    }
    if plan.gen_only {
        let _ = writeln!(out, "\nmode `{mode}` runs no context servers");
    }
    let _ = writeln!(
        out,
        "\nGPUs: {} allocated ({} nodes x {}), {} used by servers",
        plan.total_gpus,
        plan.total_nodes,
        plan.gpus_per_node,
        plan.gen_server.count * plan.gen_server.gpus + plan.ctx_server.count * plan.ctx_server.gpus,
    );

    if let Some(nodes) = nodes {
        let slices = plan.slices(nodes)?;
        let _ = writeln!(out, "\nnode slices ({} nodes given):", nodes.len());
        let width = slices
            .iter()
            .map(|slice| slice.role.to_string().len())
            .chain([13])
            .max()
            .unwrap_or(13);
        for slice in &slices {
            let _ = writeln!(
                out,
                "  {:<width$}  {}",
                slice.role.to_string(),
                slice.nodes.join(",")
            );
        }
        let first = slices
            .first()
            .and_then(|slice| slice.nodes.first())
            .or(nodes.first());
        for single in [Role::DisaggServer, Role::Benchmark] {
            let host = first.map_or("-", String::as_str);
            let _ = writeln!(out, "  {:<width$}  {host} (--overlap)", single.to_string());
        }
        let used = usize::try_from(plan.total_nodes)
            .unwrap_or(nodes.len())
            .min(nodes.len());
        if used < nodes.len() {
            let _ = writeln!(out, "  {:<width$}  {}", "unused", nodes[used..].join(","));
        }
    }
    Ok(out)
}
