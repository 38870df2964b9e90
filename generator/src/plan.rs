//! The resource plan: how many servers of each kind, their GPUs, nodes and tasks per node.
//!
//! The arithmetic is the reference's (G1 `submit.py`, reference-flow section 2.2):
//! `gpus = tp * pp * cp` per server, `nodes = ceil(gpus / gpus_per_node)`,
//! `tasks_per_node = min(gpus, gpus_per_node)`, `total_nodes = n_ctx * nodes_ctx +
//! n_gen * nodes_gen` and `total_gpus = total_nodes * gpus_per_node` (GPUs allocated, not used).
//! A mode containing `gen_only` runs no context servers. All arithmetic is checked.

use std::fmt;

use thiserror::Error;

use crate::config::{LaunchConfig, ServerConfig};

/// Why a plan cannot be built or laid out.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("the plan is too large: `{what}` does not fit in 64 bits")]
    Overflow { what: &'static str },
    #[error("the plan needs {needed} nodes, the node list has {available}")]
    NotEnoughNodes { needed: u64, available: usize },
}

/// One kind of server (GEN or CTX).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerPlan {
    /// Instances that run (0 for CTX in `gen_only` modes).
    pub count: u64,
    /// GPUs (MPI ranks) of one instance: `tp * pp * cp`.
    pub gpus: u64,
    /// Nodes of one instance: `ceil(gpus / gpus_per_node)`.
    pub nodes: u64,
    /// Ranks on each node of an instance: `min(gpus, gpus_per_node)`.
    pub tasks_per_node: u64,
}

/// The whole job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub gpus_per_node: u64,
    pub gen_server: ServerPlan,
    pub ctx_server: ServerPlan,
    pub total_nodes: u64,
    pub total_gpus: u64,
    pub gen_only: bool,
}

/// A role of the job, as `DISAGG_SERVING_TYPE` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Gen(u64),
    Ctx(u64),
    DisaggServer,
    Benchmark,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Gen(index) => write!(f, "GEN_{index}"),
            Self::Ctx(index) => write!(f, "CTX_{index}"),
            Self::DisaggServer => f.write_str("DISAGG_SERVER"),
            Self::Benchmark => f.write_str("BENCHMARK"),
        }
    }
}

/// The nodes one server instance runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slice {
    pub role: Role,
    pub nodes: Vec<String>,
}

impl ServerPlan {
    fn new(count: u64, gpus: u64, gpus_per_node: u64) -> Self {
        Self {
            count,
            gpus,
            nodes: gpus.div_ceil(gpus_per_node),
            tasks_per_node: gpus.min(gpus_per_node),
        }
    }

    /// Nodes of all instances of this kind.
    pub fn total_nodes(&self) -> Option<u64> {
        self.count.checked_mul(self.nodes)
    }
}

impl Plan {
    /// The plan of a checked config, with the config's own mode deciding whether context
    /// servers run (the first generator's rule).
    pub fn new(config: &LaunchConfig) -> Result<Self, PlanError> {
        Self::with_context_servers(config, !config.benchmark.is_gen_only())
    }

    /// The plan of a checked config, running context servers or not as the caller decided
    /// (native mode: [`crate::serving::Serving::no_ctx`]).
    pub fn with_context_servers(config: &LaunchConfig, ctx: bool) -> Result<Self, PlanError> {
        let hardware = &config.hardware;
        let gpus = |server: &ServerConfig, what| server.gpus().ok_or(PlanError::Overflow { what });
        let gen_gpus = gpus(&config.worker_config.gen_server, "gen tp*pp*cp")?;
        let ctx_gpus = gpus(&config.worker_config.ctx_server, "ctx tp*pp*cp")?;
        Self::from_parts(
            hardware.gpus_per_node,
            (hardware.num_gen_servers, gen_gpus),
            (hardware.num_ctx_servers, ctx_gpus),
            !ctx,
        )
    }

    /// The plan from numbers: `(count, gpus each)` per kind; `gpus_per_node` must be positive.
    pub fn from_parts(
        gpus_per_node: u64,
        (n_gen, gen_gpus): (u64, u64),
        (n_ctx, ctx_gpus): (u64, u64),
        gen_only: bool,
    ) -> Result<Self, PlanError> {
        let gpus_per_node = gpus_per_node.max(1);
        let n_ctx = if gen_only { 0 } else { n_ctx };
        let gen_server = ServerPlan::new(n_gen, gen_gpus, gpus_per_node);
        let ctx_server = ServerPlan::new(n_ctx, ctx_gpus, gpus_per_node);
        let overflow = |what| PlanError::Overflow { what };
        let total_nodes = ctx_server
            .total_nodes()
            .zip(gen_server.total_nodes())
            .and_then(|(ctx, gen_nodes)| ctx.checked_add(gen_nodes))
            .ok_or(overflow("total nodes"))?;
        let total_gpus = total_nodes
            .checked_mul(gpus_per_node)
            .ok_or(overflow("total GPUs"))?;
        Ok(Self {
            gpus_per_node,
            gen_server,
            ctx_server,
            total_nodes,
            total_gpus,
            gen_only,
        })
    }

    /// The worker instances in launch order with their kind: GEN first, then CTX.
    pub fn workers(&self) -> impl Iterator<Item = (Role, ServerPlan)> + '_ {
        let gens = (0..self.gen_server.count).map(|index| (Role::Gen(index), self.gen_server));
        let ctxs = (0..self.ctx_server.count).map(|index| (Role::Ctx(index), self.ctx_server));
        gens.chain(ctxs)
    }

    /// Deterministic node slices: GEN instances take the first nodes in order, then CTX.
    pub fn slices(&self, nodes: &[String]) -> Result<Vec<Slice>, PlanError> {
        if usize::try_from(self.total_nodes).map_or(true, |needed| needed > nodes.len()) {
            return Err(PlanError::NotEnoughNodes {
                needed: self.total_nodes,
                available: nodes.len(),
            });
        }
        let mut cursor = 0;
        let mut slices = Vec::new();
        for (role, server) in self.workers() {
            // Fits: the sum of all slices is `total_nodes`, checked above.
            let width = usize::try_from(server.nodes).unwrap_or(usize::MAX);
            slices.push(Slice {
                role,
                nodes: nodes[cursor..cursor + width].to_vec(),
            });
            cursor += width;
        }
        Ok(slices)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn names(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("n{i}")).collect()
    }

    #[test]
    fn the_reference_example_plan() {
        // reference-flow section 7: gen 16 GPUs x1, ctx 4 GPUs x2 on 4-GPU nodes.
        let plan = Plan::from_parts(4, (1, 16), (2, 4), false).expect("fits");
        assert_eq!(
            plan.gen_server,
            ServerPlan {
                count: 1,
                gpus: 16,
                nodes: 4,
                tasks_per_node: 4
            }
        );
        assert_eq!(
            plan.ctx_server,
            ServerPlan {
                count: 2,
                gpus: 4,
                nodes: 1,
                tasks_per_node: 4
            }
        );
        assert_eq!((plan.total_nodes, plan.total_gpus), (6, 24));
        let slices = plan.slices(&names(7)).expect("enough nodes");
        let shown: Vec<String> = slices
            .iter()
            .map(|s| format!("{}={}", s.role, s.nodes.join(",")))
            .collect();
        assert_eq!(shown, ["GEN_0=n1,n2,n3,n4", "CTX_0=n5", "CTX_1=n6"]);
    }

    #[test]
    fn gen_only_drops_context_servers_but_keeps_their_shape() {
        let plan = Plan::from_parts(4, (1, 32), (1, 4), true).expect("fits");
        assert_eq!(
            plan.ctx_server,
            ServerPlan {
                count: 0,
                gpus: 4,
                nodes: 1,
                tasks_per_node: 4
            }
        );
        assert_eq!((plan.total_nodes, plan.total_gpus), (8, 32));
    }

    #[test]
    fn small_servers_share_nothing_and_use_fewer_tasks() {
        let plan = Plan::from_parts(4, (1, 4), (1, 1), false).expect("fits");
        assert_eq!(plan.ctx_server.tasks_per_node, 1);
        assert_eq!((plan.total_nodes, plan.total_gpus), (2, 8));
    }

    #[test]
    fn too_few_nodes_and_overflow_are_errors() {
        let plan = Plan::from_parts(4, (1, 16), (2, 4), false).expect("fits");
        assert_eq!(
            plan.slices(&names(5)),
            Err(PlanError::NotEnoughNodes {
                needed: 6,
                available: 5
            })
        );
        assert_eq!(
            Plan::from_parts(1, (u64::MAX, 2), (0, 1), false),
            Err(PlanError::Overflow {
                what: "total nodes"
            })
        );
        assert_eq!(
            Plan::from_parts(8, (u64::MAX / 4, 8), (0, 1), false),
            Err(PlanError::Overflow { what: "total GPUs" })
        );
    }

    proptest! {
        #[test]
        fn plan_arithmetic_holds(
            gpus_per_node in 1u64..=16,
            n_gen in 0u64..=8, gen_gpus in 1u64..=128,
            n_ctx in 0u64..=8, ctx_gpus in 1u64..=128,
            gen_only in any::<bool>(),
        ) {
            let plan = Plan::from_parts(gpus_per_node, (n_gen, gen_gpus), (n_ctx, ctx_gpus), gen_only).expect("small");
            for server in [plan.gen_server, plan.ctx_server] {
                // nodes = ceil(gpus / gpus_per_node): the smallest count that holds all GPUs.
                prop_assert!(server.nodes * gpus_per_node >= server.gpus);
                prop_assert!((server.nodes - 1) * gpus_per_node < server.gpus);
                prop_assert!(server.tasks_per_node <= gpus_per_node);
                prop_assert!(server.tasks_per_node * server.nodes >= server.gpus);
            }
            let n_ctx_run = if gen_only { 0 } else { n_ctx };
            prop_assert_eq!(plan.ctx_server.count, n_ctx_run);
            prop_assert_eq!(plan.total_nodes, n_gen * plan.gen_server.nodes + n_ctx_run * plan.ctx_server.nodes);
            prop_assert_eq!(plan.total_gpus, plan.total_nodes * gpus_per_node);

            let nodes = names(usize::try_from(plan.total_nodes).expect("small"));
            let slices = plan.slices(&nodes).expect("exactly enough");
            let used: Vec<String> = slices.iter().flat_map(|s| s.nodes.clone()).collect();
            prop_assert_eq!(used, nodes, "slices tile the node list in order, without overlap");
            prop_assert_eq!(slices.len() as u64, n_gen + n_ctx_run);
        }
    }
}
