//! Preemption, as upstream's `DefaultPreemption` PostFilter: when a pod fits no node, find the
//! node where deleting the fewest and least important pods of lower priority makes it fit,
//! *nominate* the pod to that node and delete those victims. The pod then waits in the queue;
//! the victims' deletion moves it back, and while it waits the room stays its own, since every
//! pod of lower or equal priority is filtered as if the nominated pods already ran there.
//!
//! Everything here up to [`act`] is a pure function of the scheduler's cache: a dry run over
//! copies of the nodes' tables. [`act`] makes the API calls and runs in the background.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, Client};
use serde_json::json;

use super::cache::{Cache, NodeInfo, PodInfo};
use super::cycle::Cycle;
use super::filter::{self, Unfit};
use crate::runtime::Key;
use crate::runtime::events::{EventType, Recorder};
use crate::runtime::matching::{selector_is_empty, selector_matches};

/// Why a node offered nothing to preempt.
pub const NO_VICTIMS: &str = "No preemption victims found for incoming pod";
/// The status of nodes that preemption did not look at (filters it cannot change).
pub const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
const POLICY_NEVER: &str = "not eligible due to preemptionPolicy=Never.";
const VICTIM_TERMINATING: &str = "not eligible due to a terminating pod on the nominated node.";
/// Candidates looked for: 10% of the potential nodes, at least 100 (upstream's defaults).
const MIN_CANDIDATE_PERCENT: usize = 10;
const MIN_CANDIDATES: usize = 100;

/// The condition a victim gets before it is deleted.
pub const DISRUPTION_TARGET: &str = "DisruptionTarget";
/// Its reason.
pub const PREEMPTION_BY_SCHEDULER: &str = "PreemptionByScheduler";

/// What to do with the pod's `status.nominatedNodeName` when it is marked unschedulable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nominate {
    Keep,
    Set(String),
    Clear,
}

/// A pending pod nominated to a node.
pub struct Nominated {
    pub info: PodInfo,
    pub priority: i32,
    /// Seen in the pod's status (as against decided here and not yet seen back).
    from_status: bool,
}

/// Pending pods nominated to nodes: from their `status.nominatedNodeName`, and from this
/// scheduler's own decisions before the status write comes back.
#[derive(Default)]
pub struct Nominations {
    pods: HashMap<Key, Nominated>,
}

fn status_nomination(pod: &Pod) -> Option<&str> {
    pod.status.as_ref().and_then(|s| s.nominated_node_name.as_deref()).filter(|n| !n.is_empty())
}

impl Nominations {
    /// A pending pod as the watch shows it.
    pub fn observe(&mut self, pod: &Arc<Pod>, priority: i32) {
        let key = Key::of(pod.as_ref());
        match status_nomination(pod) {
            Some(node) => {
                let info = PodInfo::new(pod.clone(), node.to_string(), false);
                self.pods.insert(key, Nominated { info, priority, from_status: true });
            }
            None => {
                // A nomination the status had and lost is gone; one decided here and not yet
                // written stays (the watch may show an older version first).
                if self.pods.get(&key).is_some_and(|n| n.from_status) {
                    self.pods.remove(&key);
                }
            }
        }
    }

    /// This scheduler nominates `pod` to `node`.
    pub fn nominate(&mut self, pod: Arc<Pod>, node: String, priority: i32) {
        let key = Key::of(pod.as_ref());
        self.pods.insert(key, Nominated { info: PodInfo::new(pod, node, false), priority, from_status: false });
    }

    /// The pod is bound, gone or no longer nominated.
    pub fn forget(&mut self, key: &Key) {
        self.pods.remove(key);
    }

    /// Keeps only the pods `keep` accepts.
    pub fn retain(&mut self, keep: impl Fn(&Key) -> bool) {
        self.pods.retain(|k, _| keep(k));
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    /// The node `key` is nominated to.
    pub fn node_of(&self, key: &Key) -> Option<&str> {
        self.pods.get(key).map(|n| n.info.node.as_str())
    }

    /// Per node, the pods other than `pod` nominated there with at least `priority`: the pods
    /// a pod of that priority must leave room for.
    pub fn ahead_of(&self, pod: &Key, priority: i32) -> HashMap<&str, Vec<&PodInfo>> {
        let mut out: HashMap<&str, Vec<&PodInfo>> = HashMap::new();
        for (k, n) in &self.pods {
            if k != pod && n.priority >= priority {
                out.entry(n.info.node.as_str()).or_default().push(&n.info);
            }
        }
        out
    }

    /// The pods nominated to `node` with a priority below `priority`.
    pub fn lower_on(&self, node: &str, priority: i32) -> Vec<Arc<Pod>> {
        self.pods
            .values()
            .filter(|n| n.info.node == node && n.priority < priority)
            .map(|n| n.info.pod.clone())
            .collect()
    }
}

/// Runs the filters with the pods nominated to the node counted as placed, then (when there
/// were any) without them, as upstream's `RunFilterPluginsWithNominatedPods`: the pod must fit
/// both ways, so it neither takes room kept for a more important pod nor relies on one.
pub fn filter_with_nominated(c: &Cycle, node: &Node, info: &NodeInfo, nominated: &[&PodInfo]) -> Result<(), Unfit> {
    if !nominated.is_empty() {
        let mut with = NodeSim::new(c, info);
        for p in nominated {
            with.add(p, node);
        }
        filter::run(&with.cycle, node, &with.info)?;
    }
    filter::run(c, node, info)
}

/// A copy of one node's tables that pods can be taken from and put back on.
struct NodeSim<'a> {
    cycle: Cycle<'a>,
    info: NodeInfo,
}

impl<'a> NodeSim<'a> {
    fn new(c: &Cycle<'a>, info: &NodeInfo) -> NodeSim<'a> {
        NodeSim { cycle: c.clone(), info: info.clone() }
    }

    fn add(&mut self, p: &PodInfo, node: &Node) {
        self.info.add(p);
        self.cycle.add_pod(&p.pod, node);
    }

    fn remove(&mut self, p: &PodInfo, node: &Node) {
        self.info.remove(p);
        self.cycle.remove_pod(&p.pod, node);
    }
}

/// A node under a dry run, with and without the pods nominated to it.
struct DryRun<'a> {
    node: &'a Node,
    plain: NodeSim<'a>,
    with_nominated: Option<NodeSim<'a>>,
}

impl<'a> DryRun<'a> {
    fn new(c: &Cycle<'a>, node: &'a Node, info: &NodeInfo, nominated: &[&PodInfo]) -> DryRun<'a> {
        let with_nominated = (!nominated.is_empty()).then(|| {
            let mut sim = NodeSim::new(c, info);
            for p in nominated {
                sim.add(p, node);
            }
            sim
        });
        DryRun { node, plain: NodeSim::new(c, info), with_nominated }
    }

    fn add(&mut self, p: &PodInfo) {
        self.plain.add(p, self.node);
        if let Some(w) = self.with_nominated.as_mut() {
            w.add(p, self.node);
        }
    }

    fn remove(&mut self, p: &PodInfo) {
        self.plain.remove(p, self.node);
        if let Some(w) = self.with_nominated.as_mut() {
            w.remove(p, self.node);
        }
    }

    fn fits(&self) -> Result<(), Unfit> {
        if let Some(w) = &self.with_nominated {
            filter::run(&w.cycle, self.node, &w.info)?;
        }
        filter::run(&self.plain.cycle, self.node, &self.plain.info)
    }
}

/// A pod to delete, with what ranks it.
#[derive(Debug, Clone)]
pub struct Victim {
    pub pod: Arc<Pod>,
    pub priority: i32,
    /// `status.startTime`, or now for a pod that has not started.
    pub start: DateTime<Utc>,
}

/// The pods to delete on one node, most important first.
#[derive(Debug, Clone)]
pub struct Victims {
    pub pods: Vec<Victim>,
    /// How many of them a PodDisruptionBudget does not allow to go.
    pub pdb_violations: usize,
}

/// A node where preemption makes the pod fit.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub node: String,
    pub victims: Victims,
}

fn start_time(pod: &Pod, now: DateTime<Utc>) -> DateTime<Utc> {
    pod.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0).unwrap_or(now)
}

/// Upstream's `MoreImportantPod`: higher priority first, then the pod running longer; ties go
/// by namespace and name so the order does not depend on hashing.
fn more_important(a: &Victim, b: &Victim) -> Ordering {
    b.priority
        .cmp(&a.priority)
        .then(a.start.cmp(&b.start))
        .then_with(|| Key::of(a.pod.as_ref()).cmp(&Key::of(b.pod.as_ref())))
}

/// Splits victims (in order) into those whose eviction a budget forbids and the others, as
/// upstream's `filterPodsWithPDBViolation`: each budget allows `disruptionsAllowed` of the
/// pods it selects, pods already in its `disruptedPods` not counting again.
fn split_by_budget<'v>(
    victims: &[&'v PodInfo],
    pdbs: &[Arc<PodDisruptionBudget>],
) -> (Vec<&'v PodInfo>, Vec<&'v PodInfo>) {
    let mut allowed: Vec<i32> = pdbs.iter().map(|p| p.status.as_ref().map_or(0, |s| s.disruptions_allowed)).collect();
    let (mut violating, mut fine) = (Vec::new(), Vec::new());
    for v in victims {
        let labels = v.pod.metadata.labels.clone().unwrap_or_default();
        let ns = v.pod.metadata.namespace.as_deref().unwrap_or("");
        let name = v.pod.metadata.name.as_deref().unwrap_or("");
        let mut violated = false;
        if !labels.is_empty() {
            for (i, pdb) in pdbs.iter().enumerate() {
                if pdb.metadata.namespace.as_deref().unwrap_or("") != ns {
                    continue;
                }
                // A budget without a selector, or with an empty one, selects nothing.
                let Some(sel) = pdb.spec.as_ref().and_then(|s| s.selector.as_ref()) else { continue };
                if selector_is_empty(sel) || !selector_matches(sel, &labels) {
                    continue;
                }
                let disrupted = pdb.status.as_ref().and_then(|s| s.disrupted_pods.as_ref());
                if disrupted.is_some_and(|d| d.contains_key(name)) {
                    continue;
                }
                allowed[i] -= 1;
                if allowed[i] < 0 {
                    violated = true;
                }
            }
        }
        if violated { violating.push(*v) } else { fine.push(*v) }
    }
    (violating, fine)
}

/// What a victim search needs besides the node.
pub struct Search<'a> {
    pub cycle: &'a Cycle<'a>,
    pub cache: &'a Cache,
    /// The preemptor's priority.
    pub priority: i32,
    pub priority_of: &'a dyn Fn(&Pod) -> i32,
    pub pdbs: &'a [Arc<PodDisruptionBudget>],
    pub now: DateTime<Utc>,
}

/// Upstream's `SelectVictimsOnNode`: take every pod of lower priority off the node; if the pod
/// then fits, put them back one by one, most important first and those a budget protects
/// before the others, keeping each that still lets the pod fit. The rest are the victims.
pub fn select_victims(s: &Search, node: &Node, info: &NodeInfo, nominated: &[&PodInfo]) -> Result<Victims, Unfit> {
    let mut potential: Vec<(&PodInfo, Victim)> = info
        .pods
        .iter()
        .filter_map(|k| s.cache.pod(k))
        .filter_map(|p| {
            let priority = (s.priority_of)(&p.pod);
            (priority < s.priority)
                .then(|| (p, Victim { pod: p.pod.clone(), priority, start: start_time(&p.pod, s.now) }))
        })
        .collect();
    if potential.is_empty() {
        return Err(Unfit { reasons: vec![NO_VICTIMS.into()], resolvable: false });
    }
    let mut run = DryRun::new(s.cycle, node, info, nominated);
    for (p, _) in &potential {
        run.remove(p);
    }
    run.fits()?;
    potential.sort_by(|a, b| more_important(&a.1, &b.1));
    let ranked: Vec<&PodInfo> = potential.iter().map(|(p, _)| *p).collect();
    let victim_of: HashMap<Key, &Victim> = potential.iter().map(|(p, v)| (Key::of(p.pod.as_ref()), v)).collect();
    let (violating, fine) = split_by_budget(&ranked, s.pdbs);
    let mut victims = Vec::new();
    let mut pdb_violations = 0;
    let mut reprieve = |p: &PodInfo, victims: &mut Vec<Victim>| -> bool {
        run.add(p);
        if run.fits().is_ok() {
            return true;
        }
        run.remove(p);
        if let Some(v) = victim_of.get(&Key::of(p.pod.as_ref())) {
            victims.push((*v).clone());
        }
        false
    };
    for p in &violating {
        if !reprieve(p, &mut victims) {
            pdb_violations += 1;
        }
    }
    for p in &fine {
        reprieve(p, &mut victims);
    }
    if victims.is_empty() {
        let name = node.metadata.name.as_deref().unwrap_or("");
        return Err(Unfit {
            reasons: vec![format!("expected at least one victim pod on node {name:?}")],
            resolvable: false,
        });
    }
    victims.sort_by(more_important);
    Ok(Victims { pods: victims, pdb_violations })
}

/// Upstream's `pickOneNodeForPreemption`: fewest budget violations, then the lowest priority
/// of the most important victim, then the smallest sum of priorities, then the fewest victims,
/// then the latest start of the most important victims, then the first.
pub fn pick_one(candidates: &[Candidate]) -> Option<usize> {
    type Score = fn(&Victims) -> i64;
    let scores: [Score; 5] = [
        |v| -(v.pdb_violations as i64),
        |v| -(v.pods.first().map_or(0, |p| p.priority) as i64),
        |v| -v.pods.iter().map(|p| p.priority as i64 + i32::MAX as i64 + 1).sum::<i64>(),
        |v| -(v.pods.len() as i64),
        |v| {
            // The earliest start among the victims of the highest priority.
            let top = v.pods.iter().map(|p| p.priority).max();
            v.pods
                .iter()
                .filter(|p| Some(p.priority) == top)
                .map(|p| p.start)
                .min()
                .and_then(|t| t.timestamp_nanos_opt())
                .unwrap_or(i64::MIN)
        },
    ];
    let mut left: Vec<usize> = (0..candidates.len()).collect();
    for score in scores {
        let best = left.iter().map(|i| score(&candidates[*i].victims)).max()?;
        left.retain(|i| score(&candidates[*i].victims) == best);
        if left.len() == 1 {
            break;
        }
    }
    left.first().copied()
}

/// A preemption to carry out.
#[derive(Debug, Clone)]
pub struct Decision {
    pub node: String,
    pub victims: Vec<Arc<Pod>>,
    /// Pods of lower priority nominated to the node: they lose the nomination.
    pub lower_nominated: Vec<Arc<Pod>>,
}

/// What preemption concluded for a pod that fits no node.
#[derive(Debug)]
pub enum Outcome {
    /// The pod may not preempt now; the message follows `preemption: `.
    NotEligible(&'static str),
    /// No node would fit even without its pods of lower priority; the message (upstream's
    /// `0/N nodes are available: ...` over the dry run) follows `preemption: `, and the pod
    /// loses any nomination.
    NoCandidate(String),
    Preempt(Decision),
}

/// One pod's preemption attempt.
pub struct Request<'a> {
    pub pod: &'a Pod,
    pub key: &'a Key,
    pub search: Search<'a>,
    /// Why each node examined failed the filters.
    pub unfit: &'a HashMap<String, Unfit>,
    pub nominations: &'a Nominations,
    /// Where in the potential nodes to start (upstream starts at a random offset).
    pub offset: usize,
}

fn terminating_by_preemption(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == DISRUPTION_TARGET))
            .is_some_and(|c| c.status == "True" && c.reason.as_deref() == Some(PREEMPTION_BY_SCHEDULER))
}

/// Upstream's `PodEligibleToPreemptOthers`.
fn eligible(r: &Request) -> Result<(), &'static str> {
    if r.pod.spec.as_ref().and_then(|s| s.preemption_policy.as_deref()) == Some("Never") {
        return Err(POLICY_NEVER);
    }
    let Some(node) = r.nominations.node_of(r.key).or_else(|| status_nomination(r.pod)) else { return Ok(()) };
    // A nominated node that no preemption can help is no reason to wait.
    if r.unfit.get(node).is_some_and(|u| !u.resolvable) {
        return Ok(());
    }
    let s = &r.search;
    let Some((_, info)) = s.cache.node(node) else { return Ok(()) };
    let waiting = info
        .pods
        .iter()
        .filter_map(|k| s.cache.pod(k))
        .any(|p| (s.priority_of)(&p.pod) < s.priority && terminating_by_preemption(&p.pod));
    if waiting { Err(VICTIM_TERMINATING) } else { Ok(()) }
}

/// Runs preemption for a pod no node fits.
pub fn preempt(r: &Request) -> Outcome {
    if let Err(why) = eligible(r) {
        return Outcome::NotEligible(why);
    }
    let s = &r.search;
    let potential: Vec<(&Arc<Node>, &NodeInfo)> = s
        .cache
        .nodes()
        .filter(|(n, _)| r.unfit.get(n.metadata.name.as_deref().unwrap_or("")).is_some_and(|u| u.resolvable))
        .collect();
    let wanted = (potential.len() * MIN_CANDIDATE_PERCENT / 100).max(MIN_CANDIDATES).min(potential.len());
    let ahead = r.nominations.ahead_of(r.key, s.priority);
    let mut statuses: BTreeMap<String, Unfit> = BTreeMap::new();
    let (mut clean, mut violating) = (Vec::new(), Vec::new());
    for i in 0..potential.len() {
        let (node, info) = potential[(r.offset + i) % potential.len()];
        let name = node.metadata.name.clone().unwrap_or_default();
        let nominated = ahead.get(name.as_str()).map(Vec::as_slice).unwrap_or(&[]);
        match select_victims(s, node, info, nominated) {
            Ok(victims) => {
                let c = Candidate { node: name, victims };
                if c.victims.pdb_violations == 0 {
                    clean.push(c)
                } else {
                    violating.push(c)
                }
                if !clean.is_empty() && clean.len() + violating.len() >= wanted {
                    break;
                }
            }
            Err(unfit) => {
                statuses.insert(name, unfit);
            }
        }
    }
    clean.append(&mut violating);
    let Some(best) = pick_one(&clean) else {
        let total = s.cache.node_count();
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        for u in statuses.values() {
            for reason in &u.reasons {
                *reasons.entry(reason.clone()).or_default() += 1;
            }
        }
        if statuses.len() < total {
            *reasons.entry(NOT_HELPFUL.into()).or_default() += total - statuses.len();
        }
        return Outcome::NoCandidate(super::unschedulable_message(total, &reasons));
    };
    let chosen = clean.swap_remove(best);
    let lower_nominated = r
        .nominations
        .lower_on(&chosen.node, s.priority)
        .into_iter()
        .filter(|p| Key::of(p.as_ref()) != *r.key)
        .collect();
    Outcome::Preempt(Decision {
        victims: chosen.victims.pods.into_iter().map(|v| v.pod).collect(),
        node: chosen.node,
        lower_nominated,
    })
}

/// An API call of a preemption that failed.
#[derive(Debug, thiserror::Error)]
pub enum PreemptError {
    #[error("cannot mark victim {pod} as a disruption target: {source}")]
    Condition { pod: Key, source: kube::Error },
    #[error("cannot delete victim {pod}: {source}")]
    Delete { pod: Key, source: kube::Error },
    #[error("cannot clear the nominated node of {pod}: {source}")]
    ClearNomination { pod: Key, source: kube::Error },
}

fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Marks one victim as a disruption target, deletes it with its own grace period and records
/// the `Preempted` event. A victim already gone is no error.
async fn preempt_victim(
    client: &Client,
    recorder: &Recorder,
    preemptor: &Pod,
    scheduler: &str,
    node: &str,
    victim: &Pod,
) -> Result<(), PreemptError> {
    let key = Key::of(victim);
    let api: Api<Pod> = Api::namespaced(client.clone(), &key.namespace);
    let marked = victim
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == DISRUPTION_TARGET))
        .is_some_and(|c| c.status == "True" && c.reason.as_deref() == Some(PREEMPTION_BY_SCHEDULER));
    if !marked {
        let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let patch = json!({"status": {"conditions": [{
            "type": DISRUPTION_TARGET, "status": "True", "reason": PREEMPTION_BY_SCHEDULER,
            "message": format!("{scheduler}: preempting to accommodate a higher priority pod"),
            "lastProbeTime": null, "lastTransitionTime": now,
        }]}});
        match api.patch_status(&key.name, &PatchParams::default(), &Patch::Strategic(&patch)).await {
            Ok(_) => {}
            Err(e) if not_found(&e) => return Ok(()),
            Err(source) => return Err(PreemptError::Condition { pod: key, source }),
        }
    }
    let dp = DeleteParams {
        preconditions: Some(Preconditions { uid: victim.metadata.uid.clone(), resource_version: None }),
        ..Default::default()
    };
    match api.delete(&key.name, &dp).await {
        Ok(_) => {}
        // Gone, or a new pod of the same name (the precondition failed): nothing to preempt.
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => return Ok(()),
        Err(source) => return Err(PreemptError::Delete { pod: key, source }),
    }
    let uid = preemptor.metadata.uid.as_deref().unwrap_or("");
    recorder.record(victim, EventType::Normal, "Preempted", format!("Preempted by pod {uid} on node {node}"));
    Ok(())
}

/// Carries a preemption out: every victim that is not already terminating is marked, deleted
/// and told why; then pods of lower priority nominated to the node lose their nomination.
pub async fn act(client: Client, recorder: Recorder, preemptor: Arc<Pod>, d: Decision) -> Result<(), PreemptError> {
    let scheduler = preemptor
        .spec
        .as_ref()
        .and_then(|s| s.scheduler_name.as_deref())
        .filter(|n| !n.is_empty())
        .unwrap_or(super::DEFAULT_SCHEDULER);
    let calls = d
        .victims
        .iter()
        .filter(|v| v.metadata.deletion_timestamp.is_none())
        .map(|v| preempt_victim(&client, &recorder, &preemptor, scheduler, &d.node, v));
    let first_error = futures::future::join_all(calls).await.into_iter().find_map(Result::err);
    for p in &d.lower_nominated {
        let key = Key::of(p.as_ref());
        let api: Api<Pod> = Api::namespaced(client.clone(), &key.namespace);
        let patch = json!({"status": {"nominatedNodeName": null}});
        match api.patch_status(&key.name, &PatchParams::default(), &Patch::Strategic(&patch)).await {
            Ok(_) => {}
            Err(e) if not_found(&e) => {}
            Err(source) => {
                // Not critical, as upstream: the pod is retried anyway and finds its own way.
                let e = PreemptError::ClearNomination { pod: key, source };
                tracing::debug!(error = %e, "preemption");
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn node(name: &str, cpu: &str, taints: Value) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
                "spec": {"taints": taints},
                "status": {"allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"}},
            }))
            .unwrap(),
        )
    }

    /// A pod of `priority` asking for `cpu`, placed on `node` when given, started at second
    /// `start` of the test epoch; `extra` is merged into the pod's JSON.
    fn pod(name: &str, node: Option<&str>, priority: i32, cpu: &str, start: u32, extra: Value) -> Arc<Pod> {
        let mut v = json!({
            "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}")},
            "spec": {
                "priority": priority,
                "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}],
            },
            "status": {"phase": "Running", "startTime": format!("2024-01-01T00:00:{start:02}Z")},
        });
        if let Some(n) = node {
            v["spec"]["nodeName"] = json!(n);
        }
        merge(&mut v, extra);
        Arc::new(serde_json::from_value(v).unwrap())
    }

    fn merge(a: &mut Value, b: Value) {
        match (a, b) {
            (Value::Object(a), Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    fn pdb(selector: Value, allowed: i32) -> Arc<PodDisruptionBudget> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": "budget", "namespace": "ns"},
                "spec": {"selector": selector, "minAvailable": 1},
                "status": {"disruptionsAllowed": allowed, "currentHealthy": 1, "desiredHealthy": 1, "expectedPods": 1},
            }))
            .unwrap(),
        )
    }

    fn cache(nodes: &[Arc<Node>], pods: &[Arc<Pod>]) -> Cache {
        let mut c = Cache::default();
        for n in nodes {
            c.set_node(n.clone());
        }
        for p in pods {
            c.set_pod(p.clone());
        }
        c
    }

    fn priority_of(p: &Pod) -> i32 {
        p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
    }

    fn no_labels(_: &str) -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    fn now() -> DateTime<Utc> {
        "2024-01-01T01:00:00Z".parse().unwrap()
    }

    fn search<'a>(
        c: &'a Cycle<'a>,
        cache: &'a Cache,
        priority: i32,
        pdbs: &'a [Arc<PodDisruptionBudget>],
    ) -> Search<'a> {
        Search { cycle: c, cache, priority, priority_of: &priority_of, pdbs, now: now() }
    }

    fn names(v: &Victims) -> Vec<&str> {
        v.pods.iter().map(|p| p.pod.metadata.name.as_deref().unwrap_or("")).collect()
    }

    fn victims_on(
        cache: &Cache,
        preemptor: &Pod,
        node: &str,
        pdbs: &[Arc<PodDisruptionBudget>],
    ) -> Result<Victims, Unfit> {
        let c = Cycle::new(preemptor, cache, &no_labels);
        let (n, info) = cache.node(node).unwrap();
        select_victims(&search(&c, cache, priority_of(preemptor), pdbs), n, info, &[])
    }

    /// The filter verdict of every node for `pod`, as the scheduling loop gathers it.
    fn unfit(cache: &Cache, c: &Cycle) -> HashMap<String, Unfit> {
        cache
            .nodes()
            .filter_map(|(n, info)| filter::run(c, n, info).err().map(|u| (n.metadata.name.clone().unwrap(), u)))
            .collect()
    }

    fn outcome(cache: &Cache, preemptor: &Pod, nominations: &Nominations) -> Outcome {
        let c = Cycle::new(preemptor, cache, &no_labels);
        let unfit = unfit(cache, &c);
        let key = Key::of(preemptor);
        let r = Request {
            pod: preemptor,
            key: &key,
            search: search(&c, cache, priority_of(preemptor), &[]),
            unfit: &unfit,
            nominations,
            offset: 0,
        };
        preempt(&r)
    }

    #[test]
    fn victims_are_lower_priority_pods_not_needed_back() {
        let n = node("a", "4", json!([]));
        let pods = [
            pod("early", Some("a"), 10, "1", 1, json!({})),
            pod("late", Some("a"), 10, "1", 2, json!({})),
            pod("mid", Some("a"), 50, "1", 3, json!({})),
            pod("peer", Some("a"), 1000, "1", 4, json!({})),
        ];
        let cache = cache(&[n], &pods);
        let want1 = pod("p", None, 1000, "1", 0, json!({}));
        let v = victims_on(&cache, &want1, "a", &[]).unwrap();
        // `mid` (higher) and then `early` (running longer) are put back first; `late` goes.
        assert_eq!(names(&v), ["late"]);
        let want2 = pod("p", None, 1000, "2", 0, json!({}));
        assert_eq!(names(&victims_on(&cache, &want2, "a", &[]).unwrap()), ["early", "late"]);
        let want3 = pod("p", None, 1000, "3", 0, json!({}));
        let v = victims_on(&cache, &want3, "a", &[]).unwrap();
        assert_eq!(names(&v), ["mid", "early", "late"], "most important first");
        assert_eq!(v.pdb_violations, 0);
        // Equal priority is never preempted: without `peer`, 4 cpus still do not fit.
        let want4 = pod("p", None, 1000, "4", 0, json!({}));
        let err = victims_on(&cache, &want4, "a", &[]).unwrap_err();
        assert_eq!(err.reasons, ["Insufficient cpu"]);
        let low = pod("p", None, 10, "1", 0, json!({}));
        let err = victims_on(&cache, &low, "a", &[]).unwrap_err();
        assert_eq!(err, Unfit { reasons: vec![NO_VICTIMS.into()], resolvable: false });
    }

    #[test]
    fn budget_protected_pods_are_reprieved_first() {
        let n = node("a", "2", json!([]));
        let pods = [
            pod("free", Some("a"), 10, "1", 1, json!({})),
            pod("guarded", Some("a"), 10, "1", 2, json!({"metadata": {"labels": {"app": "g"}}})),
        ];
        let cache = cache(&[n], &pods);
        let p = pod("p", None, 1000, "1", 0, json!({}));
        // Without a budget the pod running longer (`free`) is the one put back.
        assert_eq!(names(&victims_on(&cache, &p, "a", &[]).unwrap()), ["guarded"]);
        let budget = [pdb(json!({"matchLabels": {"app": "g"}}), 0)];
        let v = victims_on(&cache, &p, "a", &budget).unwrap();
        assert_eq!(names(&v), ["free"]);
        assert_eq!(v.pdb_violations, 0);
        // When the guarded pod must go too, it counts as a violation.
        let big = pod("p", None, 1000, "2", 0, json!({}));
        let v = victims_on(&cache, &big, "a", &budget).unwrap();
        assert_eq!(v.pdb_violations, 1);
        // A budget that allows one disruption, or lists the pod as disrupted, is no violation.
        let v = victims_on(&cache, &big, "a", &[pdb(json!({"matchLabels": {"app": "g"}}), 1)]).unwrap();
        assert_eq!(v.pdb_violations, 0);
        // An empty selector selects nothing.
        let v = victims_on(&cache, &big, "a", &[pdb(json!({}), 0)]).unwrap();
        assert_eq!(v.pdb_violations, 0);
    }

    #[test]
    fn anti_affinity_to_a_victim_is_resolved_by_removing_it() {
        let n = node("a", "8", json!([]));
        let pods = [
            pod("x", Some("a"), 10, "1", 1, json!({"metadata": {"labels": {"app": "x"}}})),
            pod("y", Some("a"), 10, "1", 2, json!({})),
        ];
        let cache = cache(&[n], &pods);
        let p = pod(
            "p",
            None,
            1000,
            "1",
            0,
            json!({"spec": {"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "x"}}, "topologyKey": "kubernetes.io/hostname"}
            ]}}}}),
        );
        let c = Cycle::new(&p, &cache, &no_labels);
        let (node, info) = cache.node("a").unwrap();
        let err = filter::run(&c, node, info).unwrap_err();
        assert!(err.resolvable, "{err:?}");
        assert_eq!(names(&victims_on(&cache, &p, "a", &[]).unwrap()), ["x"]);

        // The other way round: a victim whose anti-affinity forbids the preemptor.
        let guard = pod(
            "guard",
            Some("a"),
            10,
            "1",
            3,
            json!({"spec": {"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "p"}}, "topologyKey": "kubernetes.io/hostname"}
            ]}}}}),
        );
        let cache = super::tests::cache(&[super::tests::node("a", "8", json!([]))], &[guard, pods[1].clone()]);
        let p = pod("p", None, 1000, "1", 0, json!({"metadata": {"labels": {"app": "p"}}}));
        assert_eq!(names(&victims_on(&cache, &p, "a", &[]).unwrap()), ["guard"]);
    }

    fn victim(priority: i32, start: u32) -> Victim {
        let p = pod(&format!("v{priority}-{start}"), Some("n"), priority, "1", start, json!({}));
        Victim { start: start_time(&p, now()), pod: p, priority }
    }

    fn candidate(node: &str, pdb_violations: usize, victims: Vec<Victim>) -> Candidate {
        Candidate { node: node.into(), victims: Victims { pods: victims, pdb_violations } }
    }

    #[test]
    fn the_node_picked_is_the_cheapest_to_preempt() {
        let pick = |c: Vec<Candidate>| pick_one(&c).map(|i| c[i].node.clone());
        assert_eq!(pick(vec![]), None);
        // Fewest budget violations first, whatever the victims.
        assert_eq!(
            pick(vec![candidate("a", 1, vec![victim(1, 1)]), candidate("b", 0, vec![victim(500, 1)])]).unwrap(),
            "b"
        );
        // Then the lowest priority of the most important victim.
        assert_eq!(
            pick(vec![candidate("a", 0, vec![victim(50, 1)]), candidate("b", 0, vec![victim(40, 1), victim(40, 2)])])
                .unwrap(),
            "b"
        );
        // Then the smallest sum of priorities (negative priorities count as small, not large).
        assert_eq!(
            pick(vec![
                candidate("a", 0, vec![victim(40, 1), victim(30, 2)]),
                candidate("b", 0, vec![victim(40, 1), victim(20, 2)]),
            ])
            .unwrap(),
            "b"
        );
        assert_eq!(
            pick(vec![candidate("a", 0, vec![victim(-5, 1), victim(-5, 2)]), candidate("b", 0, vec![victim(-5, 1)])])
                .unwrap(),
            "b"
        );
        // Then the fewest victims.
        assert_eq!(
            pick(vec![
                candidate("a", 0, vec![victim(40, 1), victim(0, 2), victim(0, 3)]),
                candidate("b", 0, vec![victim(40, 1), victim(0, 2)]),
            ])
            .unwrap(),
            "b"
        );
        // Then the latest start of the most important victims.
        assert_eq!(
            pick(vec![
                candidate("a", 0, vec![victim(40, 5), victim(40, 1)]),
                candidate("b", 0, vec![victim(40, 3), victim(40, 4)]),
            ])
            .unwrap(),
            "b"
        );
        // Then the first.
        assert_eq!(
            pick(vec![candidate("a", 0, vec![victim(40, 1)]), candidate("b", 0, vec![victim(40, 1)])]).unwrap(),
            "a"
        );
    }

    #[test]
    fn preemption_says_why_it_cannot_help() {
        let taint = json!([{"key": "gpu", "value": "true", "effect": "NoSchedule"}]);
        let nodes = [node("a", "2", json!([])), node("b", "2", json!([])), node("t", "2", taint)];
        let pods = [pod("x", Some("a"), 100, "2", 1, json!({})), pod("y", Some("b"), 100, "2", 1, json!({}))];
        let cache = cache(&nodes, &pods);
        let none = Nominations::default();

        let never = pod("p", None, 1000, "1", 0, json!({"spec": {"preemptionPolicy": "Never"}}));
        assert!(matches!(outcome(&cache, &never, &none), Outcome::NotEligible(POLICY_NEVER)));

        let peer = pod("p", None, 100, "1", 0, json!({}));
        match outcome(&cache, &peer, &none) {
            Outcome::NoCandidate(m) => assert_eq!(
                m,
                "0/3 nodes are available: 1 Preemption is not helpful for scheduling, \
                 2 No preemption victims found for incoming pod."
            ),
            o => panic!("{o:?}"),
        }
        let huge = pod("p", None, 1000, "3", 0, json!({}));
        match outcome(&cache, &huge, &none) {
            Outcome::NoCandidate(m) => assert_eq!(
                m,
                "0/3 nodes are available: 1 Preemption is not helpful for scheduling, 2 Insufficient cpu."
            ),
            o => panic!("{o:?}"),
        }

        let high = pod("p", None, 1000, "1", 0, json!({}));
        let Outcome::Preempt(d) = outcome(&cache, &high, &none) else { panic!("expected a preemption") };
        assert_eq!(d.node, "a", "a tie goes to the first node");
        assert_eq!(d.victims.len(), 1);
    }

    #[test]
    fn a_nominated_pod_waits_for_its_victims() {
        let n = node("a", "2", json!([]));
        let leaving = pod(
            "leaving",
            Some("a"),
            100,
            "2",
            1,
            json!({
                "metadata": {"deletionTimestamp": "2024-01-01T00:59:00Z"},
                "status": {"conditions": [{"type": DISRUPTION_TARGET, "status": "True", "reason": PREEMPTION_BY_SCHEDULER}]},
            }),
        );
        let cache = cache(&[n], &[leaving]);
        let p = pod("p", None, 1000, "1", 0, json!({"status": {"nominatedNodeName": "a"}}));
        assert!(matches!(outcome(&cache, &p, &Nominations::default()), Outcome::NotEligible(VICTIM_TERMINATING)));
        // A pod not nominated there may preempt (the terminating pod is a victim already).
        let q = pod("q", None, 1000, "1", 0, json!({}));
        assert!(matches!(outcome(&cache, &q, &Nominations::default()), Outcome::Preempt(_)));
    }

    #[test]
    fn nominated_pods_keep_their_room_from_lower_priority_pods() {
        let n = node("a", "2", json!([]));
        let cache = cache(&[n], &[pod("x", Some("a"), 100, "1", 1, json!({}))]);
        let mut noms = Nominations::default();
        let high = pod("high", None, 1000, "1", 0, json!({}));
        noms.nominate(high.clone(), "a".into(), 1000);
        let (node, info) = cache.node("a").unwrap();
        let check = |p: &Pod| {
            let c = Cycle::new(p, &cache, &no_labels);
            let ahead = noms.ahead_of(&Key::of(p), priority_of(p));
            filter_with_nominated(&c, node, info, ahead.get("a").map(Vec::as_slice).unwrap_or(&[]))
        };
        let low = pod("low", None, 100, "1", 0, json!({}));
        assert_eq!(check(&low).unwrap_err().reasons, ["Insufficient cpu"]);
        assert!(check(&pod("higher", None, 2000, "1", 0, json!({}))).is_ok());
        assert!(check(&high).is_ok(), "a pod does not wait for itself");
        assert_eq!(noms.lower_on("a", 2000).len(), 1);
        assert!(noms.lower_on("a", 1000).is_empty());

        // The watch shows the nomination, then shows it cleared.
        let seen = pod("high", None, 1000, "1", 0, json!({"status": {"nominatedNodeName": "a"}}));
        noms.observe(&seen, 1000);
        noms.observe(&high, 1000);
        assert_eq!(noms.node_of(&Key::of(high.as_ref())), None);
        // A nomination decided here survives an older version without it.
        noms.nominate(high.clone(), "a".into(), 1000);
        noms.observe(&high, 1000);
        assert_eq!(noms.node_of(&Key::of(high.as_ref())), Some("a"));
    }
}
