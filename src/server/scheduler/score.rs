//! Scores: how good a feasible node is, each plugin normalised to 0..=100 and weighted as
//! upstream's default profile weights them (resources 1, balance 1, node affinity 2, taints 3,
//! inter-pod affinity 2, topology spread 2).

use k8s_openapi::api::core::v1::Node;

use super::cache::NodeInfo;
use super::cycle::Cycle;
use crate::runtime::matching::{node_term_matches, tolerates};

const MAX: i64 = 100;

/// `LeastAllocated` over CPU and memory (with non-zero request defaults).
fn least_allocated(c: &Cycle, info: &NodeInfo) -> i64 {
    let part = |alloc: i64, used: i64| if alloc <= 0 || used > alloc { 0 } else { (alloc - used) * MAX / alloc };
    let cpu = part(info.allocatable.milli_cpu, info.non_zero.0 + c.non_zero.0);
    let mem = part(info.allocatable.memory, info.non_zero.1 + c.non_zero.1);
    (cpu + mem) / 2
}

/// `BalancedAllocation`: CPU and memory used in equal shares score highest.
fn balanced(c: &Cycle, info: &NodeInfo) -> i64 {
    let frac = |alloc: i64, used: i64| if alloc <= 0 { 1.0 } else { (used as f64 / alloc as f64).min(1.0) };
    let cpu = frac(info.allocatable.milli_cpu, info.requested.milli_cpu + c.requests.milli_cpu);
    let mem = frac(info.allocatable.memory, info.requested.memory + c.requests.memory);
    let std = (cpu - mem).abs() / 2.0;
    ((1.0 - std) * MAX as f64) as i64
}

/// Raw preferred node affinity: the sum of the weights of matching terms.
fn node_affinity_raw(c: &Cycle, node: &Node) -> i64 {
    let preferred = c
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_ref());
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let name = node.metadata.name.as_deref().unwrap_or("");
    preferred
        .into_iter()
        .flatten()
        .filter(|t| node_term_matches(&t.preference, &labels, name))
        .map(|t| t.weight as i64)
        .sum()
}

/// Raw taint score: untolerated `PreferNoSchedule` taints (fewer is better).
fn taints_raw(c: &Cycle, node: &Node) -> i64 {
    let tolerations = c.pod.spec.as_ref().and_then(|s| s.tolerations.as_deref()).unwrap_or(&[]);
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| t.effect == "PreferNoSchedule" && !tolerations.iter().any(|tol| tolerates(tol, t)))
        .count() as i64
}

fn inter_pod_raw(c: &Cycle, node: &Node) -> i64 {
    let Some(labels) = node.metadata.labels.as_ref() else { return 0 };
    c.preferred.iter().filter(|((k, v), _)| labels.get(k) == Some(v)).map(|(_, w)| *w).sum()
}

/// Raw spread: matching pods in the node's domains (fewer is better), plus the pods of the
/// same controller on the node (upstream's default constraints spread replicas over hosts).
fn spread_raw(c: &Cycle, node: &Node, info: &NodeInfo) -> i64 {
    let labels = node.metadata.labels.as_ref();
    let mut raw = 0;
    for s in &c.soft_spread {
        if let Some(v) = labels.and_then(|l| l.get(&s.constraint.topology_key)) {
            raw += s.counts.get(v).copied().unwrap_or(0) * s.constraint.max_skew.max(1) as i64;
        }
    }
    if c.soft_spread.is_empty()
        && c.hard_spread.is_empty()
        && let Some(owner) = &c.owner
    {
        raw += info.by_owner.get(owner).copied().unwrap_or(0) as i64;
    }
    raw
}

/// Scales raw values to 0..=100 (`higher_better` false flips them).
fn normalize(raw: &[i64], higher_better: bool) -> Vec<i64> {
    let (min, max) = (raw.iter().copied().min().unwrap_or(0), raw.iter().copied().max().unwrap_or(0));
    raw.iter()
        .map(|&r| {
            if max == min {
                return if higher_better && max == 0 { 0 } else { MAX };
            }
            let s = (r - min) * MAX / (max - min);
            if higher_better { s } else { MAX - s }
        })
        .collect()
}

/// Total weighted score of each feasible node, in the order given.
pub fn run(c: &Cycle, feasible: &[(&Node, &NodeInfo)]) -> Vec<i64> {
    let resources: Vec<i64> = feasible.iter().map(|(_, i)| least_allocated(c, i) + balanced(c, i)).collect();
    let affinity = normalize(&feasible.iter().map(|(n, _)| node_affinity_raw(c, n)).collect::<Vec<_>>(), true);
    let taints = normalize(&feasible.iter().map(|(n, _)| taints_raw(c, n)).collect::<Vec<_>>(), false);
    let inter = normalize(&feasible.iter().map(|(n, _)| inter_pod_raw(c, n)).collect::<Vec<_>>(), true);
    let spread = normalize(&feasible.iter().map(|(n, i)| spread_raw(c, n, i)).collect::<Vec<_>>(), false);
    (0..feasible.len()).map(|i| resources[i] + 2 * affinity[i] + 3 * taints[i] + 2 * inter[i] + 2 * spread[i]).collect()
}
