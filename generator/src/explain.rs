//! `--explain`: the resource plan as a plain-text table, with node slices when nodes are given.

use std::fmt::Write as _;

use crate::config::LaunchConfig;
use crate::plan::{Plan, PlanError, Role};

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
