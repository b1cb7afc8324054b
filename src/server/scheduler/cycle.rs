//! What the scheduler works out once per pod before looking at nodes: the pod's requests and
//! ports, and for inter-pod affinity and topology spread, how many matching pods each topology
//! domain holds. Filters and scores then answer per node from these tables in constant time.
//! [`Cycle::add_pod`] and [`Cycle::remove_pod`] keep the tables true when preemption or a
//! nominated pod changes what a node holds (upstream's PreFilter extensions).

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Node, Pod, PodAffinityTerm, TopologySpreadConstraint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

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
#[derive(Clone)]
pub struct Spread {
    pub constraint: TopologySpreadConstraint,
    /// The constraint's selector with its `matchLabelKeys` folded in (`None`: selects nothing).
    selector: Option<LabelSelector>,
    /// Matching pods per domain value, over eligible nodes.
    pub counts: HashMap<String, i64>,
    /// Lowest count over the eligible domains (0 when fewer than `minDomains` exist).
    pub min: i64,
    /// Whether the pod itself matches the selector (it adds one where it lands).
    pub self_match: i64,
}

/// Matching pods per topology domain value, for one term's topology key.
pub type DomainCounts = (String, HashMap<String, i64>);

/// The per-pod tables.
#[derive(Clone)]
pub struct Cycle<'a> {
    pub pod: &'a Pod,
    ns_labels: NamespaceLabels<'a>,
    pub namespace: String,
    pub requests: Resources,
    pub non_zero: (i64, i64),
    pub ports: Vec<HostPort>,
    pub owner: Option<String>,
    /// The required affinity terms, and per term the matching pods per domain.
    affinity_terms: Vec<PodAffinityTerm>,
    pub affinity: Vec<DomainCounts>,
    /// Whether the pod matches all its own required affinity terms (the first of a group may
    /// then go anywhere while no other pod matches).
    pub affinity_self_match: bool,
    /// The required anti-affinity terms, and per term the matching pods per domain.
    anti_terms: Vec<PodAffinityTerm>,
    pub anti_affinity: Vec<DomainCounts>,
    /// Existing pods whose anti-affinity forbids this pod, per (topology key, value).
    pub forbidden: HashMap<(String, String), i64>,
    /// Preferred inter-pod affinity: weight per (topology key, value), anti-affinity negative.
    pub preferred: HashMap<(String, String), i64>,
    pub hard_spread: Vec<Spread>,
    pub soft_spread: Vec<Spread>,
}

/// Whether `node` counts for the spread constraint `c` of `pod`.
fn spread_eligible(pod: &Pod, c: &TopologySpreadConstraint, node: &Node) -> bool {
    let has_key = node.metadata.labels.as_ref().is_some_and(|l| l.contains_key(&c.topology_key));
    let honor_affinity = c.node_affinity_policy.as_deref() != Some("Ignore");
    let honor_taints = c.node_taints_policy.as_deref() == Some("Honor");
    let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.as_deref()).unwrap_or(&[]);
    has_key
        && (!honor_affinity || node_affinity_matches(pod, node))
        && (!honor_taints
            || untolerated(
                node.spec.as_ref().and_then(|s| s.taints.as_deref()).unwrap_or(&[]),
                tolerations,
                &["NoSchedule", "NoExecute"],
            )
            .is_none())
}

/// The lowest count over the domains (0 when fewer than `minDomains` exist).
fn spread_min(c: &TopologySpreadConstraint, counts: &HashMap<String, i64>) -> i64 {
    let min = counts.values().copied().min().unwrap_or(0);
    match c.min_domains {
        Some(md) if (counts.len() as i32) < md => 0,
        _ => min,
    }
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
    let eligible = |node: &Node| spread_eligible(pod, c, node);
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
    let min = spread_min(c, &counts);
    let self_match = i64::from(selector_present && selector_matches(&sel, &own));
    Spread { constraint: c.clone(), selector: selector_present.then_some(sel), counts, min, self_match }
}

impl<'a> Cycle<'a> {
    pub fn new(pod: &'a Pod, cache: &Cache, ns_labels: NamespaceLabels<'a>) -> Cycle<'a> {
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
        let domains_of = |term: &PodAffinityTerm| -> HashMap<String, i64> {
            let mut counts = HashMap::new();
            for p in cache.pods().filter(|p| term_selects(term, &namespace, &p.pod, ns_labels)) {
                if let Some(d) = domain(&p.node, &term.topology_key) {
                    *counts.entry(d).or_insert(0) += 1;
                }
            }
            counts
        };

        let affinity_terms = required_aff.unwrap_or_default();
        let affinity = affinity_terms.iter().map(|t| (t.topology_key.clone(), domains_of(t))).collect();
        let affinity_self_match = affinity_terms.iter().all(|t| term_selects(t, &namespace, pod, ns_labels));
        let anti_terms = required_anti.unwrap_or_default();
        let anti_affinity = anti_terms.iter().map(|t| (t.topology_key.clone(), domains_of(t))).collect();

        let mut forbidden = HashMap::new();
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
                    *forbidden.entry((t.topology_key.clone(), v)).or_insert(0) += 1;
                }
            }
        }

        let mut preferred: HashMap<(String, String), i64> = HashMap::new();
        for (terms, sign) in [(preferred_aff, 1i64), (preferred_anti, -1i64)] {
            for w in terms.into_iter().flatten() {
                for d in domains_of(&w.pod_affinity_term).into_keys() {
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
            ns_labels,
            affinity_terms,
            affinity,
            affinity_self_match,
            anti_terms,
            anti_affinity,
            forbidden,
            preferred,
            hard_spread,
            soft_spread,
        }
    }
}

impl Cycle<'_> {
    /// Whether the pod has required affinity terms.
    pub fn has_affinity(&self) -> bool {
        !self.affinity_terms.is_empty()
    }

    /// Counts `other`, placed on `node`, in the tables.
    pub fn add_pod(&mut self, other: &Pod, node: &Node) {
        self.update(other, node, 1);
    }

    /// Stops counting `other`, placed on `node`, in the tables.
    pub fn remove_pod(&mut self, other: &Pod, node: &Node) {
        self.update(other, node, -1);
    }

    fn update(&mut self, other: &Pod, node: &Node, delta: i64) {
        let labels = node_labels(node);
        let ns = self.namespace.as_str();
        let bump = |counts: &mut HashMap<String, i64>, key: &str| {
            if let Some(v) = labels.get(key) {
                let e = counts.entry(v.clone()).or_insert(0);
                *e += delta;
                if *e <= 0 {
                    counts.remove(v);
                }
            }
        };
        for (term, (key, counts)) in self.affinity_terms.iter().zip(self.affinity.iter_mut()) {
            if term_selects(term, ns, other, self.ns_labels) {
                bump(counts, key);
            }
        }
        for (term, (key, counts)) in self.anti_terms.iter().zip(self.anti_affinity.iter_mut()) {
            if term_selects(term, ns, other, self.ns_labels) {
                bump(counts, key);
            }
        }
        let other_ns = other.metadata.namespace.as_deref().unwrap_or("");
        let theirs = other
            .spec
            .as_ref()
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref());
        for t in theirs.into_iter().flatten() {
            if term_selects(t, other_ns, self.pod, self.ns_labels)
                && let Some(v) = labels.get(&t.topology_key)
            {
                let k = (t.topology_key.clone(), v.clone());
                let e = self.forbidden.entry(k.clone()).or_insert(0);
                *e += delta;
                if *e <= 0 {
                    self.forbidden.remove(&k);
                }
            }
        }
        // Spreading counts pods of the same namespace that are not terminating.
        if other_ns != ns || other.metadata.deletion_timestamp.is_some() {
            return;
        }
        let other_labels = labels_of(other);
        for s in self.hard_spread.iter_mut().chain(self.soft_spread.iter_mut()) {
            let Some(sel) = &s.selector else { continue };
            if !spread_eligible(self.pod, &s.constraint, node) || !selector_matches(sel, &other_labels) {
                continue;
            }
            if let Some(v) = labels.get(&s.constraint.topology_key) {
                *s.counts.entry(v.clone()).or_insert(0) += delta;
            }
            s.min = spread_min(&s.constraint, &s.counts);
        }
    }
}
