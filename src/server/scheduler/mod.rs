//! The scheduler: binds pending pods to nodes, as upstream's default profile does.
//!
//! One task owns the [`cache::Cache`] and the [`queue::SchedulingQueue`]: it applies informer
//! changes, pops the next pod, works out its [`cycle::Cycle`], runs the [`filter`]s over every
//! node and the [`score`]s over the feasible ones, *assumes* the pod onto the best node and
//! hands the `pods/binding` call to a background task, so the next pod is scheduled while the
//! last one binds. A pod no node fits gets `PodScheduled=False` (`Unschedulable`) and a
//! `FailedScheduling` event, may [`preempt`] pods of lower priority, and waits for the cluster
//! to change.
//!
//! Invariant: an API client only. It changes pods only through `pods/binding`, the
//! `PodScheduled` condition and `nominatedNodeName`, and, when preempting, the victims'
//! `DisruptionTarget` condition and their deletion; it never touches nodes.

pub mod cache;
pub mod cycle;
pub mod filter;
pub mod preempt;
pub mod queue;
pub mod resources;
pub mod score;

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Binding, Namespace, Node, ObjectReference, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::runtime::events::{EventType, Recorder};
use crate::runtime::{Change, Informers, Key};
use cache::Cache;
use cycle::Cycle;
use filter::Unfit;
use preempt::Nominate;
use queue::SchedulingQueue;

/// The scheduler name pods ask for by default.
pub const DEFAULT_SCHEDULER: &str = "default-scheduler";
/// Bindings in flight at once.
const BIND_CONCURRENCY: usize = 256;

/// A failed binding, reported back to the scheduling task.
struct BindFailure {
    key: Key,
    gone: bool,
}

struct Scheduler {
    client: Client,
    recorder: Recorder,
    cache: Cache,
    queue: SchedulingQueue,
    pods: Arc<crate::runtime::Informer<Pod>>,
    namespaces: Arc<crate::runtime::Informer<Namespace>>,
    classes: Arc<crate::runtime::Informer<PriorityClass>>,
    pdbs: Arc<crate::runtime::Informer<PodDisruptionBudget>>,
    /// Pending pods nominated to nodes by preemption.
    nominations: preempt::Nominations,
    /// Fingerprint of each unschedulable pod when it was last tried, so our own status writes
    /// do not retrigger it.
    tried: HashMap<Key, u64>,
    binds: Arc<Semaphore>,
    failures: mpsc::UnboundedSender<BindFailure>,
    /// Preemptors whose victims could not all be deleted.
    preempt_failures: mpsc::UnboundedSender<Key>,
    tie_break: usize,
}

/// What one scheduling attempt concluded.
enum Decision {
    Bind(String),
    Unschedulable { message: String, nominate: Nominate, preempt: Option<preempt::Decision> },
}

fn is_pending_for_us(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    let unbound = spec.and_then(|s| s.node_name.as_deref()).is_none_or(str::is_empty);
    let ours = spec.and_then(|s| s.scheduler_name.as_deref()).is_none_or(|n| n.is_empty() || n == DEFAULT_SCHEDULER);
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    unbound && ours && pod.metadata.deletion_timestamp.is_none() && phase != "Succeeded" && phase != "Failed"
}

/// What in a pending pod can change whether it fits: its spec and labels.
fn fingerprint(pod: &Pod) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(&pod.spec).unwrap_or_default().hash(&mut h);
    pod.metadata.labels.hash(&mut h);
    h.finish()
}

/// Runs the scheduler until `cancel` fires.
pub async fn run(client: Client, informers: Arc<Informers>, cancel: CancellationToken) {
    let pods = informers.get::<Pod>();
    let nodes = informers.get::<Node>();
    let namespaces = informers.get::<Namespace>();
    let classes = informers.get::<PriorityClass>();
    let pdbs = informers.get::<PodDisruptionBudget>();
    let mut pod_changes = pods.subscribe();
    let mut node_changes = nodes.subscribe();
    tokio::select! {
        _ = cancel.cancelled() => return,
        _ = async {
            pods.synced().await;
            nodes.synced().await;
            namespaces.synced().await;
            classes.synced().await;
            pdbs.synced().await;
        } => {}
    }
    let (failures, mut failed) = mpsc::unbounded_channel();
    let (preempt_failures, mut preempt_failed) = mpsc::unbounded_channel();
    let host = nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default();
    let mut s = Scheduler {
        recorder: Recorder::new(client.clone(), DEFAULT_SCHEDULER, &host),
        client,
        cache: Cache::default(),
        queue: SchedulingQueue::default(),
        pods,
        namespaces,
        classes,
        pdbs,
        nominations: preempt::Nominations::default(),
        tried: HashMap::new(),
        binds: Arc::new(Semaphore::new(BIND_CONCURRENCY)),
        failures,
        preempt_failures,
        tie_break: 0,
    };
    for n in nodes.list() {
        s.cache.set_node(n);
    }
    s.resync_pods();
    tracing::info!(nodes = s.cache.node_count(), "scheduler started");
    loop {
        // Apply every change already waiting before the next decision, so it sees them.
        while let Some(c) = pod_changes.try_next() {
            s.on_pod(c);
        }
        while let Some(c) = node_changes.try_next() {
            s.on_node(c, &nodes);
        }
        while let Ok(f) = failed.try_recv() {
            s.on_bind_failure(f);
        }
        while let Ok(k) = preempt_failed.try_recv() {
            s.on_preempt_failure(k);
        }
        if let Some(key) = s.queue.pop() {
            s.schedule_one(key).await;
            continue;
        }
        let wake = s.queue.next_wake().map(tokio::time::Instant::from_std);
        let wake = wake.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(30));
        tokio::select! {
            _ = cancel.cancelled() => return,
            c = crate::runtime::informer::next_change(&mut pod_changes) => match c {
                Some(c) => s.on_pod(c),
                None => return,
            },
            c = crate::runtime::informer::next_change(&mut node_changes) => match c {
                Some(c) => s.on_node(c, &nodes),
                None => return,
            },
            Some(f) = failed.recv() => s.on_bind_failure(f),
            Some(k) = preempt_failed.recv() => s.on_preempt_failure(k),
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
}

impl Scheduler {
    fn priority(&self, pod: &Pod) -> i32 {
        let spec = pod.spec.as_ref();
        if let Some(p) = spec.and_then(|s| s.priority) {
            return p;
        }
        match spec.and_then(|s| s.priority_class_name.as_deref()).filter(|n| !n.is_empty()) {
            Some(name) => self.classes.get("", name).map(|c| c.value).unwrap_or(0),
            None => self.classes.list().iter().find(|c| c.global_default == Some(true)).map(|c| c.value).unwrap_or(0),
        }
    }

    fn on_pod(&mut self, change: Change<Pod>) {
        match change {
            Change::Applied(pod) => {
                let key = Key::of(pod.as_ref());
                if is_pending_for_us(&pod) {
                    if self.cache.is_assumed(&key) {
                        return;
                    }
                    let prio = self.priority(&pod);
                    self.nominations.observe(&pod, prio);
                    let fp = fingerprint(&pod);
                    if self.queue.contains(&key) && self.tried.get(&key) == Some(&fp) {
                        return;
                    }
                    if self.tried.get(&key) == Some(&fp) && !self.queue.contains(&key) {
                        // Our own condition write on a pod we are about to retry anyway.
                        return;
                    }
                    self.queue.add(key, prio);
                    return;
                }
                self.nominations.forget(&key);
                self.queue.remove(&key);
                self.tried.remove(&key);
                let was_placed = self.cache.pod(&key).is_some();
                self.cache.set_pod(pod.clone());
                // A pod that finished frees its node.
                if was_placed && !cache::occupies_node(&pod) {
                    self.queue.cluster_changed();
                }
            }
            Change::Deleted(pod) => {
                let key = Key::of(pod.as_ref());
                self.nominations.forget(&key);
                self.queue.remove(&key);
                self.tried.remove(&key);
                if self.cache.pod(&key).is_some() {
                    self.cache.remove_pod(&key);
                    self.queue.cluster_changed();
                }
            }
            Change::Resync => self.resync_pods(),
        }
    }

    fn resync_pods(&mut self) {
        let all = self.pods.list();
        let live: std::collections::HashSet<Key> = all.iter().map(|p| Key::of(p.as_ref())).collect();
        let stale: Vec<Key> = self
            .cache
            .pods()
            .filter(|p| !p.assumed)
            .map(|p| Key::of(p.pod.as_ref()))
            .filter(|k| !live.contains(k))
            .collect();
        for k in stale {
            self.cache.remove_pod(&k);
        }
        self.nominations.retain(|k| live.contains(k));
        for p in all {
            let key = Key::of(p.as_ref());
            if is_pending_for_us(&p) {
                if !self.cache.is_assumed(&key) {
                    let prio = self.priority(&p);
                    self.nominations.observe(&p, prio);
                    if !self.queue.contains(&key) {
                        self.queue.add(key, prio);
                    }
                }
            } else {
                self.nominations.forget(&key);
                self.cache.set_pod(p);
            }
        }
        self.queue.cluster_changed();
    }

    fn on_node(&mut self, change: Change<Node>, nodes: &crate::runtime::Informer<Node>) {
        match change {
            Change::Applied(n) => self.cache.set_node(n),
            Change::Deleted(n) => self.cache.remove_node(n.metadata.name.as_deref().unwrap_or("")),
            Change::Resync => {
                for n in nodes.list() {
                    self.cache.set_node(n);
                }
            }
        }
        self.queue.cluster_changed();
    }

    fn on_bind_failure(&mut self, f: BindFailure) {
        self.cache.remove_pod(&f.key);
        self.queue.cluster_changed();
        if f.gone {
            self.queue.remove(&f.key);
            return;
        }
        if let Some(pod) = self.pods.get(&f.key.namespace, &f.key.name)
            && is_pending_for_us(&pod)
        {
            self.queue.retry(f.key);
        }
    }

    fn on_preempt_failure(&mut self, key: Key) {
        if let Some(pod) = self.pods.get(&key.namespace, &key.name)
            && is_pending_for_us(&pod)
            && !self.cache.is_assumed(&key)
        {
            self.queue.retry(key);
        }
    }

    async fn schedule_one(&mut self, key: Key) {
        let Some(pod) = self.pods.get(&key.namespace, &key.name) else { return };
        if !is_pending_for_us(&pod) || self.cache.is_assumed(&key) {
            return;
        }
        self.tried.insert(key.clone(), fingerprint(&pod));
        if pod.spec.as_ref().and_then(|s| s.scheduling_gates.as_ref()).is_some_and(|g| !g.is_empty()) {
            self.set_condition(
                &pod,
                "SchedulingGated",
                "Scheduling is blocked due to non-empty scheduling gates",
                &Nominate::Keep,
            )
            .await;
            self.queue.unschedulable(key);
            return;
        }
        let ns_index: HashMap<String, BTreeMap<String, String>> = if self.needs_namespace_labels(&pod) {
            self.namespaces
                .list()
                .iter()
                .map(|n| (n.metadata.name.clone().unwrap_or_default(), n.metadata.labels.clone().unwrap_or_default()))
                .collect()
        } else {
            HashMap::new()
        };
        let ns_labels = |ns: &str| ns_index.get(ns).cloned().unwrap_or_default();
        self.tie_break = self.tie_break.wrapping_add(1);
        let tie_break = self.tie_break;
        let priority = self.priority(&pod);
        let decision = {
            let cycle = Cycle::new(&pod, &self.cache, &ns_labels);
            // Pods nominated to a node with at least this priority keep their room there.
            let ahead = self.nominations.ahead_of(&key, priority);
            let nominated = |name: &str| ahead.get(name).map(Vec::as_slice).unwrap_or(&[]);
            let fits = |node: &Node, info: &cache::NodeInfo| {
                let name = node.metadata.name.as_deref().unwrap_or("");
                preempt::filter_with_nominated(&cycle, node, info, nominated(name))
            };
            // A pod nominated to a node tries that node first (upstream's evaluateNominatedNode).
            let own = self.nominations.node_of(&key).or_else(|| {
                pod.status.as_ref().and_then(|s| s.nominated_node_name.as_deref()).filter(|n| !n.is_empty())
            });
            let own = own
                .and_then(|name| self.cache.node(name))
                .filter(|(node, info)| node.metadata.deletion_timestamp.is_none() && fits(node, info).is_ok());
            if let Some((node, _)) = own {
                Decision::Bind(node.metadata.name.clone().unwrap_or_default())
            } else {
                let mut feasible = Vec::new();
                let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
                let mut unfit: HashMap<String, Unfit> = HashMap::new();
                for (node, info) in self.cache.nodes() {
                    if node.metadata.deletion_timestamp.is_some() {
                        continue;
                    }
                    match fits(node, info) {
                        Ok(()) => feasible.push((node.as_ref(), info)),
                        Err(why) => {
                            for r in &why.reasons {
                                *reasons.entry(r.clone()).or_default() += 1;
                            }
                            unfit.insert(node.metadata.name.clone().unwrap_or_default(), why);
                        }
                    }
                }
                if feasible.is_empty() {
                    let message = unschedulable_message(self.cache.node_count(), &reasons);
                    if self.cache.node_count() == 0 {
                        Decision::Unschedulable { message, nominate: Nominate::Keep, preempt: None }
                    } else {
                        let pdbs = self.pdbs.list();
                        let priority_of = |p: &Pod| self.priority(p);
                        let request = preempt::Request {
                            pod: &pod,
                            key: &key,
                            search: preempt::Search {
                                cycle: &cycle,
                                cache: &self.cache,
                                priority,
                                priority_of: &priority_of,
                                pdbs: &pdbs,
                                now: chrono::Utc::now(),
                            },
                            unfit: &unfit,
                            nominations: &self.nominations,
                            offset: tie_break,
                        };
                        match preempt::preempt(&request) {
                            preempt::Outcome::NotEligible(why) => Decision::Unschedulable {
                                message: format!("{message} preemption: {why}."),
                                nominate: Nominate::Keep,
                                preempt: None,
                            },
                            preempt::Outcome::NoCandidate(why) => Decision::Unschedulable {
                                message: format!("{message} preemption: {why}."),
                                nominate: Nominate::Clear,
                                preempt: None,
                            },
                            preempt::Outcome::Preempt(d) => Decision::Unschedulable {
                                message,
                                nominate: Nominate::Set(d.node.clone()),
                                preempt: Some(d),
                            },
                        }
                    }
                } else {
                    let scores = score::run(&cycle, &feasible);
                    let best = scores.iter().copied().max().unwrap_or(0);
                    let ties: Vec<usize> = (0..feasible.len()).filter(|i| scores[*i] == best).collect();
                    let pick = ties[tie_break % ties.len()];
                    Decision::Bind(feasible[pick].0.metadata.name.clone().unwrap_or_default())
                }
            }
        };
        match decision {
            Decision::Bind(node) => self.assume_and_bind(pod, key, node),
            Decision::Unschedulable { message, nominate, preempt } => {
                tracing::debug!(pod = %key, %message, "unschedulable");
                match &nominate {
                    Nominate::Set(node) => self.nominations.nominate(pod.clone(), node.clone(), priority),
                    Nominate::Clear => self.nominations.forget(&key),
                    Nominate::Keep => {}
                }
                if let Some(d) = preempt {
                    tracing::info!(pod = %key, node = %d.node, victims = d.victims.len(), "preempting");
                    for p in &d.lower_nominated {
                        self.nominations.forget(&Key::of(p.as_ref()));
                    }
                    let (client, recorder) = (self.client.clone(), self.recorder.clone());
                    let (failures, preemptor, k) = (self.preempt_failures.clone(), pod.clone(), key.clone());
                    tokio::spawn(async move {
                        if let Err(e) = preempt::act(client, recorder, preemptor, d).await {
                            tracing::warn!(pod = %k, error = %e, "preemption failed");
                            let _ = failures.send(k);
                        }
                    });
                }
                self.recorder.record(pod.as_ref(), EventType::Warning, "FailedScheduling", message.clone());
                self.set_condition(&pod, "Unschedulable", &message, &nominate).await;
                self.queue.unschedulable(key);
            }
        }
    }

    fn needs_namespace_labels(&self, pod: &Pod) -> bool {
        let uses = |p: &Pod| {
            let a = p.spec.as_ref().and_then(|s| s.affinity.as_ref());
            let json = serde_json::to_string(&a).unwrap_or_default();
            json.contains("namespaceSelector")
        };
        uses(pod) || !self.cache.with_anti_affinity.is_empty() || !self.nominations.is_empty()
    }

    fn assume_and_bind(&mut self, pod: Arc<Pod>, key: Key, node: String) {
        self.cache.assume(pod.clone(), node.clone());
        self.nominations.forget(&key);
        self.queue.remove(&key);
        self.tried.remove(&key);
        let client = self.client.clone();
        let recorder = self.recorder.clone();
        let failures = self.failures.clone();
        let binds = self.binds.clone();
        tokio::spawn(async move {
            let Ok(_permit) = binds.acquire_owned().await else { return };
            let api: Api<Pod> = Api::namespaced(client, &key.namespace);
            let binding = Binding {
                metadata: ObjectMeta {
                    name: Some(key.name.clone()),
                    namespace: Some(key.namespace.clone()),
                    uid: pod.metadata.uid.clone(),
                    ..Default::default()
                },
                target: ObjectReference { kind: Some("Node".into()), name: Some(node.clone()), ..Default::default() },
            };
            let body = match serde_json::to_vec(&binding) {
                Ok(b) => b,
                Err(_) => return,
            };
            match api.create_subresource::<serde_json::Value>("binding", &key.name, &PostParams::default(), body).await
            {
                Ok(_) => recorder.record(
                    pod.as_ref(),
                    EventType::Normal,
                    "Scheduled",
                    format!("Successfully assigned {}/{} to {node}", key.namespace, key.name),
                ),
                Err(e) => {
                    let gone = matches!(&e, kube::Error::Api(s) if s.code == 404);
                    tracing::debug!(pod = %key, %node, error = %e, "binding failed");
                    let _ = failures.send(BindFailure { key, gone });
                }
            }
        });
    }

    /// Sets `PodScheduled=False` with `reason` and the nominated node as `nominate` says, in one
    /// status patch, unless the status already says exactly that.
    async fn set_condition(&self, pod: &Pod, reason: &str, message: &str, nominate: &Nominate) {
        let current = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"));
        let nominated = pod.status.as_ref().and_then(|s| s.nominated_node_name.as_deref()).filter(|n| !n.is_empty());
        let nomination = match nominate {
            Nominate::Set(node) if nominated != Some(node.as_str()) => Some(json!(node)),
            Nominate::Clear if nominated.is_some() => Some(serde_json::Value::Null),
            _ => None,
        };
        if nomination.is_none()
            && current.is_some_and(|c| {
                c.status == "False" && c.reason.as_deref() == Some(reason) && c.message.as_deref() == Some(message)
            })
        {
            return;
        }
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let transition = match current {
            Some(c) if c.status == "False" => c.last_transition_time.as_ref().map(|t| json!(t)).unwrap_or(json!(now)),
            _ => json!(now),
        };
        let mut patch = json!({"status": {"conditions": [{
            "type": "PodScheduled", "status": "False", "reason": reason, "message": message,
            "lastProbeTime": null, "lastTransitionTime": transition,
        }]}});
        if let Some(n) = nomination {
            patch["status"]["nominatedNodeName"] = n;
        }
        let api: Api<Pod> =
            Api::namespaced(self.client.clone(), pod.metadata.namespace.as_deref().unwrap_or("default"));
        let name = pod.metadata.name.as_deref().unwrap_or("");
        if let Err(e) = api.patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch)).await {
            tracing::debug!(pod = name, error = %e, "cannot set the PodScheduled condition");
        }
    }
}

/// `0/3 nodes are available: 1 Insufficient cpu, 2 node(s) didn't match ...`, as upstream
/// words it (reasons with their counts, sorted as strings).
pub fn unschedulable_message(nodes: usize, reasons: &BTreeMap<String, usize>) -> String {
    if nodes == 0 {
        return "no nodes available to schedule pods".into();
    }
    let mut parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
    parts.sort();
    format!("0/{nodes} nodes are available: {}.", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_as_upstream_words_it() {
        let reasons: BTreeMap<String, usize> =
            [("Insufficient cpu".to_string(), 2), ("node(s) had untolerated taint {a: b}".to_string(), 1)].into();
        assert_eq!(
            unschedulable_message(3, &reasons),
            "0/3 nodes are available: 1 node(s) had untolerated taint {a: b}, 2 Insufficient cpu."
        );
        assert_eq!(unschedulable_message(0, &BTreeMap::new()), "no nodes available to schedule pods");
    }
}
