//! What the scheduler works out once per pod before looking at nodes: the pod's requests and
//! ports, and for inter-pod affinity and topology spread, which topology domains hold matching
//! pods. Filters and scores then answer per node from these tables in constant time.

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1::{Node, Pod, PodAffinityTerm, TopologySpreadConstraint};

use super::cache::{Cache, HostPort, host_ports};
use super::resources::{Resources, non_zero_requests, pod_requests};
use crate::runtime::matching::{node_term_matches, selector_matches, untolerated};

/// Labels of a namespace, for `namespaceSelector`s.
pub type NamespaceLabels<'a> = &'a dyn Fn(&str) -> BTreeMap<String, String>;

fn labels_of(pod: &Pod) -> BTreeMap<String, String> {
    pod.metadata.labels.clone().unwrap_or_default()
}

fn node_labels(node: &Node) -> BTreeMap<String, String> {
    node.metadata.labels.clone().unwrap_or_default()
}

/// Whether `term` (written in a pod of `owner_ns`) selects `candidate`.
pub fn term_selects(term: &PodAffinityTerm, owner_ns: &str, candidate: &Pod, ns_labels: NamespaceLabels) -> bool {
    let cand_ns = candidate.metadata.namespace.as_deref().unwrap_or("");
    let listed = term.namespaces.as_deref().unwrap_or(&[]);
    let ns_ok = match (&term.namespace_selector, listed.is_empty()) {
        (None, true) => cand_ns == owner_ns,
        (None, false) => listed.iter().any(|n| n == cand_ns),
        (Some(sel), _) => listed.iter().any(|n| n == cand_ns) || selector_matches(sel, &ns_labels(cand_ns)),
    };
    if !ns_ok {
        return false;
    }
    // A term without a label selector selects no pods.
    term.label_selector.as_ref().is_some_and(|s| selector_matches(s, &labels_of(candidate)))
}

/// Whether a node satisfies the pod's `nodeSelector` and required node affinity.
pub fn node_affinity_matches(pod: &Pod, node: &Node) -> bool {
    let Some(spec) = pod.spec.as_ref() else { return true };
    let labels = node_labels(node);
    if let Some(sel) = &spec.node_selector
        && sel.iter().any(|(k, v)| labels.get(k) != Some(v))
    {
        return false;
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref());
    match required {
        Some(r) => {
            let name = node.metadata.name.as_deref().unwrap_or("");
            r.node_selector_terms.iter().any(|t| node_term_matches(t, &labels, name))
        }
        None => true,
    }
}

/// One topology spread constraint with its per-domain counts.
pub struct Spread {
    pub constraint: TopologySpreadConstraint,
    /// Matching pods per domain value, over eligible nodes.
    pub counts: HashMap<String, i64>,
    /// Lowest count over the eligible domains (0 when fewer than `minDomains` exist).
    pub min: i64,
    /// Whether the pod itself matches the selector (it adds one where it lands).
    pub self_match: i64,
}

/// The per-pod tables.
pub struct Cycle<'a> {
    pub pod: &'a Pod,
    pub namespace: String,
    pub requests: Resources,
    pub non_zero: (i64, i64),
    pub ports: Vec<HostPort>,
    pub owner: Option<String>,
    /// Required affinity: per term, the domain values holding a matching pod (`None`: no pod
    /// in the cluster matches and the pod matches its own terms, so any node goes).
    pub affinity: Option<Vec<(String, HashSet<String>)>>,
    /// Required anti-affinity: per term, domain values holding a matching pod.
    pub anti_affinity: Vec<(String, HashSet<String>)>,
    /// Domains where an existing pod's anti-affinity forbids this pod: (topology key, value).
    pub forbidden: HashSet<(String, String)>,
    /// Preferred inter-pod affinity: weight per (topology key, value), anti-affinity negative.
    pub preferred: HashMap<(String, String), i64>,
    pub hard_spread: Vec<Spread>,
    pub soft_spread: Vec<Spread>,
}

fn spread(pod: &Pod, c: &TopologySpreadConstraint, cache: &Cache, node_of: &HashMap<&str, &Node>) -> Spread {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("");
    let mut sel = c.label_selector.clone().unwrap_or_default();
    let own = labels_of(pod);
    for k in c.match_label_keys.iter().flatten() {
        if let Some(v) = own.get(k) {
            sel.match_labels.get_or_insert_with(Default::default).insert(k.clone(), v.clone());
        }
    }
    let honor_affinity = c.node_affinity_policy.as_deref() != Some("Ignore");
    let honor_taints = c.node_taints_policy.as_deref() == Some("Honor");
    let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.clone()).unwrap_or_default();
    let eligible = |node: &Node| {
        let has_key = node.metadata.labels.as_ref().is_some_and(|l| l.contains_key(&c.topology_key));
        has_key
            && (!honor_affinity || node_affinity_matches(pod, node))
            && (!honor_taints
                || untolerated(
                    node.spec.as_ref().and_then(|s| s.taints.as_deref()).unwrap_or(&[]),
                    &tolerations,
                    &["NoSchedule", "NoExecute"],
                )
                .is_none())
    };
    let mut counts: HashMap<String, i64> = HashMap::new();
    for (node, _) in cache.nodes() {
        if eligible(node) {
            let v = node_labels(node).get(&c.topology_key).cloned().unwrap_or_default();
            counts.entry(v).or_insert(0);
        }
    }
    let selector_present = c.label_selector.is_some();
    for p in cache.pods() {
        if p.pod.metadata.namespace.as_deref() != Some(ns) || p.pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(node) = node_of.get(p.node.as_str()) else { continue };
        if !eligible(node) || !selector_present || !selector_matches(&sel, &labels_of(&p.pod)) {
            continue;
        }
        let v = node_labels(node).get(&c.topology_key).cloned().unwrap_or_default();
        *counts.entry(v).or_insert(0) += 1;
    }
    let mut min = counts.values().copied().min().unwrap_or(0);
    if let Some(md) = c.min_domains
        && (counts.len() as i32) < md
    {
        min = 0;
    }
    let self_match = i64::from(selector_present && selector_matches(&sel, &own));
    Spread { constraint: c.clone(), counts, min, self_match }
}

impl<'a> Cycle<'a> {
    pub fn new(pod: &'a Pod, cache: &Cache, ns_labels: NamespaceLabels) -> Cycle<'a> {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let spec = pod.spec.as_ref();
        let affinity = spec.and_then(|s| s.affinity.as_ref());
        let pod_aff = affinity.and_then(|a| a.pod_affinity.as_ref());
        let pod_anti = affinity.and_then(|a| a.pod_anti_affinity.as_ref());
        let required_aff = pod_aff.and_then(|a| a.required_during_scheduling_ignored_during_execution.clone());
        let required_anti = pod_anti.and_then(|a| a.required_during_scheduling_ignored_during_execution.clone());
        let preferred_aff = pod_aff.and_then(|a| a.preferred_during_scheduling_ignored_during_execution.clone());
        let preferred_anti = pod_anti.and_then(|a| a.preferred_during_scheduling_ignored_during_execution.clone());
        let constraints = spec.and_then(|s| s.topology_spread_constraints.clone()).unwrap_or_default();

        let needs_nodes = !constraints.is_empty()
            || required_aff.is_some()
            || required_anti.is_some()
            || preferred_aff.is_some()
            || preferred_anti.is_some()
            || !cache.with_anti_affinity.is_empty();
        let node_of: HashMap<&str, &Node> = if needs_nodes {
            cache.nodes().map(|(n, _)| (n.metadata.name.as_deref().unwrap_or(""), n.as_ref())).collect()
        } else {
            HashMap::new()
        };
        let domain = |node: &str, key: &str| -> Option<String> {
            node_of.get(node).and_then(|n| n.metadata.labels.as_ref()).and_then(|l| l.get(key).cloned())
        };
        let domains_of = |term: &PodAffinityTerm| -> HashSet<String> {
            cache
                .pods()
                .filter(|p| term_selects(term, &namespace, &p.pod, ns_labels))
                .filter_map(|p| domain(&p.node, &term.topology_key))
                .collect()
        };

        let affinity = required_aff.map(|terms| {
            let tables: Vec<(String, HashSet<String>)> =
                terms.iter().map(|t| (t.topology_key.clone(), domains_of(t))).collect();
            let none_match = tables.iter().all(|(_, d)| d.is_empty());
            let self_match = terms.iter().all(|t| term_selects(t, &namespace, pod, ns_labels));
            (none_match && self_match, tables)
        });
        let affinity = match affinity {
            Some((true, _)) | None => None,
            Some((false, tables)) => Some(tables),
        };
        let anti_affinity = required_anti.iter().flatten().map(|t| (t.topology_key.clone(), domains_of(t))).collect();

        let mut forbidden = HashSet::new();
        for key in &cache.with_anti_affinity {
            let Some(p) = cache.pod(key) else { continue };
            let owner_ns = p.pod.metadata.namespace.as_deref().unwrap_or("");
            let terms = p
                .pod
                .spec
                .as_ref()
                .and_then(|s| s.affinity.as_ref())
                .and_then(|a| a.pod_anti_affinity.as_ref())
                .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref());
            for t in terms.into_iter().flatten() {
                if term_selects(t, owner_ns, pod, ns_labels)
                    && let Some(v) = domain(&p.node, &t.topology_key)
                {
                    forbidden.insert((t.topology_key.clone(), v));
                }
            }
        }

        let mut preferred: HashMap<(String, String), i64> = HashMap::new();
        for (terms, sign) in [(preferred_aff, 1i64), (preferred_anti, -1i64)] {
            for w in terms.into_iter().flatten() {
                for d in domains_of(&w.pod_affinity_term) {
                    *preferred.entry((w.pod_affinity_term.topology_key.clone(), d)).or_default() +=
                        sign * w.weight as i64;
                }
            }
        }

        let (mut hard_spread, mut soft_spread) = (Vec::new(), Vec::new());
        for c in &constraints {
            let s = spread(pod, c, cache, &node_of);
            if c.when_unsatisfiable == "DoNotSchedule" {
                hard_spread.push(s);
            } else {
                soft_spread.push(s);
            }
        }

        Cycle {
            pod,
            requests: pod_requests(pod),
            non_zero: non_zero_requests(pod),
            ports: host_ports(pod),
            owner: pod
                .metadata
                .owner_references
                .iter()
                .flatten()
                .find(|o| o.controller == Some(true))
                .map(|o| o.uid.clone()),
            namespace,
            affinity,
            anti_affinity,
            forbidden,
            preferred,
            hard_spread,
            soft_spread,
        }
    }
}
