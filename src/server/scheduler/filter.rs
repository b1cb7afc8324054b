//! Filters: whether a pod can go to a node, in upstream's plugin order, each failing with the
//! reason upstream prints in `0/N nodes are available: ...` and with upstream's status code:
//! whether removing pods from the node could make it fit (`Unschedulable`) or not
//! (`UnschedulableAndUnresolvable`), which decides where preemption looks.

use k8s_openapi::api::core::v1::{Node, Taint};

use super::cache::{NodeInfo, ports_conflict};
use super::cycle::{Cycle, node_affinity_matches};
use crate::runtime::matching::{tolerates, untolerated};

/// Taint the node lifecycle controller puts on cordoned nodes.
pub const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";

fn domain<'n>(node: &'n Node, key: &str) -> Option<&'n String> {
    node.metadata.labels.as_ref().and_then(|l| l.get(key))
}

/// Why a node does not fit a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfit {
    pub reasons: Vec<String>,
    /// Whether removing pods from the node could make it fit (upstream's `Unschedulable`, as
    /// against `UnschedulableAndUnresolvable`).
    pub resolvable: bool,
}

impl Unfit {
    fn resolvable(reasons: Vec<String>) -> Unfit {
        Unfit { reasons, resolvable: true }
    }

    fn unresolvable(reason: impl Into<String>) -> Unfit {
        Unfit { reasons: vec![reason.into()], resolvable: false }
    }
}

/// Runs every filter, stopping at the first that fails.
pub fn run(c: &Cycle, node: &Node, info: &NodeInfo) -> Result<(), Unfit> {
    let spec = c.pod.spec.as_ref();
    let tolerations = spec.and_then(|s| s.tolerations.as_deref()).unwrap_or(&[]);
    let node_spec = node.spec.as_ref();
    // NodeUnschedulable
    if node_spec.and_then(|s| s.unschedulable) == Some(true) {
        let cordon = Taint { key: UNSCHEDULABLE_TAINT.into(), effect: "NoSchedule".into(), ..Default::default() };
        if !tolerations.iter().any(|t| tolerates(t, &cordon)) {
            return Err(Unfit::unresolvable("node(s) were unschedulable"));
        }
    }
    // TaintToleration
    let taints = node_spec.and_then(|s| s.taints.as_deref()).unwrap_or(&[]);
    if let Some(t) = untolerated(taints, tolerations, &["NoSchedule", "NoExecute"]) {
        return Err(Unfit::unresolvable(format!(
            "node(s) had untolerated taint {{{}: {}}}",
            t.key,
            t.value.as_deref().unwrap_or("")
        )));
    }
    // NodeAffinity
    if !node_affinity_matches(c.pod, node) {
        return Err(Unfit::unresolvable("node(s) didn't match Pod's node affinity/selector"));
    }
    // NodePorts
    if !c.ports.is_empty() && ports_conflict(&info.ports, &c.ports) {
        return Err(Unfit::resolvable(vec!["node(s) didn't have free ports for the requested pod ports".into()]));
    }
    // NodeResourcesFit
    let mut insufficient = Vec::new();
    let (alloc, used, want) = (&info.allocatable, &info.requested, &c.requests);
    if used.pods + 1 > alloc.pods {
        insufficient.push("Too many pods".to_string());
    }
    if want.milli_cpu > 0 && used.milli_cpu + want.milli_cpu > alloc.milli_cpu {
        insufficient.push("Insufficient cpu".into());
    }
    if want.memory > 0 && used.memory + want.memory > alloc.memory {
        insufficient.push("Insufficient memory".into());
    }
    if want.ephemeral_storage > 0 && used.ephemeral_storage + want.ephemeral_storage > alloc.ephemeral_storage {
        insufficient.push("Insufficient ephemeral-storage".into());
    }
    for (name, v) in &want.scalar {
        if *v > 0 && used.scalar.get(name).copied().unwrap_or(0) + v > alloc.scalar.get(name).copied().unwrap_or(0) {
            insufficient.push(format!("Insufficient {name}"));
        }
    }
    if !insufficient.is_empty() {
        return Err(Unfit::resolvable(insufficient));
    }
    // PodTopologySpread
    for s in &c.hard_spread {
        let Some(v) = domain(node, &s.constraint.topology_key) else {
            return Err(Unfit::unresolvable(
                "node(s) didn't match pod topology spread constraints (missing required label)",
            ));
        };
        let count = s.counts.get(v).copied().unwrap_or(0);
        if count + s.self_match - s.min > s.constraint.max_skew as i64 {
            return Err(Unfit::resolvable(vec!["node(s) didn't match pod topology spread constraints".into()]));
        }
    }
    // InterPodAffinity
    let holds = |key: &str, counts: &std::collections::HashMap<String, i64>| {
        domain(node, key).is_some_and(|v| counts.get(v).is_some_and(|n| *n > 0))
    };
    if c.forbidden.iter().any(|((k, v), n)| *n > 0 && domain(node, k) == Some(v)) {
        return Err(Unfit::resolvable(vec!["node(s) didn't satisfy existing pods anti-affinity rules".into()]));
    }
    if c.has_affinity() {
        // The first pod of a group that selects itself may go anywhere while no pod matches.
        let none_match = c.affinity.iter().all(|(_, counts)| counts.values().all(|n| *n <= 0));
        let first_of_group = none_match && c.affinity_self_match;
        if !first_of_group && !c.affinity.iter().all(|(k, counts)| holds(k, counts)) {
            return Err(Unfit::unresolvable("node(s) didn't match pod affinity rules"));
        }
    }
    if c.anti_affinity.iter().any(|(k, counts)| holds(k, counts)) {
        return Err(Unfit::resolvable(vec!["node(s) didn't match pod anti-affinity rules".into()]));
    }
    Ok(())
}
