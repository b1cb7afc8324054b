//! The daemonset controller: one pod of each DaemonSet on every node that should run it, as
//! upstream's.
//!
//! A node should run a daemon pod when the template's `nodeName` (if any), `nodeSelector` and
//! required node affinity match it and it has no `NoSchedule`/`NoExecute` taint the pod does
//! not tolerate (with the standard daemon tolerations added); resources are not checked. A pod
//! already there stays while only `NoSchedule` taints are untolerated. Pods are created with a
//! required node affinity `metadata.name In [node]` and the daemon tolerations, and the
//! scheduler binds them. Failed and succeeded daemon pods are deleted (failed ones with
//! backoff) and recreated on the next pass.
//!
//! Each template is snapshotted in a ControllerRevision (see [`super::history`]); pods carry its
//! hash in `controller-revision-hash`. `RollingUpdate` replaces pods of older revisions within
//! `maxUnavailable` (deleting first) or `maxSurge` (creating the new pod first); `OnDelete`
//! waits for pods to be deleted. Status fields are counted per node as upstream counts them,
//! which `kubectl rollout status ds/X` reads.
//!
//! Invariant: at most one daemon pod per eligible node (two, old and new, only while surging),
//! none on other nodes; writes pods, revisions and the DaemonSet's status, never nodes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::future::join_all;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodSpec,
    PodTemplateSpec, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::Ctx;
use super::expectations::Expectations;
use super::history::{self, HASH_LABEL};
use super::pods::{
    adopt, controller_of, controller_ref, from_template, is_available, is_ready, is_terminal, queue_controller_of,
    release,
};
use crate::runtime::events::{EventType, Recorder};
use crate::runtime::informer::next_change;
use crate::runtime::matching::{selector_is_empty, selector_matches, untolerated};
use crate::runtime::queue::{Next, run_workers};
use crate::runtime::{Change, Informer, Key, WorkQueue};
use crate::server::scheduler::cycle::node_affinity_matches;

const COMPONENT: &str = "daemonset-controller";
/// Most pods created or deleted in one pass (upstream's `burstReplicas`).
const BURST: usize = 250;
/// Set by older API servers; pods then also carry the generation as a label.
const TEMPLATE_GENERATION_ANNOTATION: &str = "deprecated.daemonset.template.generation";
const TEMPLATE_GENERATION_LABEL: &str = "pod-template-generation";
/// Backoff of deleting failed pods on one node: first delay and longest delay.
const BACKOFF_INITIAL: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(15 * 60);

struct Controller {
    client: kube::Client,
    dsets: Arc<Informer<DaemonSet>>,
    pods: Arc<Informer<Pod>>,
    nodes: Arc<Informer<Node>>,
    revisions: Arc<Informer<ControllerRevision>>,
    expectations: Expectations,
    recorder: Recorder,
    /// Failed-pod deletions per (DaemonSet UID, generation, node): last time and delay.
    backoff: Mutex<HashMap<String, (Instant, Duration)>>,
}

pub async fn run(ctx: Arc<Ctx>, cancel: CancellationToken) {
    let dsets = ctx.informers.get::<DaemonSet>();
    let pods = ctx.informers.get::<Pod>();
    let nodes = ctx.informers.get::<Node>();
    let revisions = ctx.informers.get::<ControllerRevision>();
    let mut ds_changes = dsets.subscribe();
    let mut pod_changes = pods.subscribe();
    let mut node_changes = nodes.subscribe();
    let mut rev_changes = revisions.subscribe();
    dsets.synced().await;
    pods.synced().await;
    nodes.synced().await;
    revisions.synced().await;
    let c = Arc::new(Controller {
        client: ctx.client.clone(),
        dsets,
        pods,
        nodes,
        revisions,
        expectations: Expectations::default(),
        recorder: ctx.recorder(COMPONENT),
        backoff: Mutex::new(HashMap::new()),
    });
    let queue = WorkQueue::<Key>::new();
    let all = |queue: &WorkQueue<Key>| c.dsets.list().iter().for_each(|d| queue.add(Key::of(d.as_ref())));
    all(&queue);
    let workers = {
        let c = c.clone();
        tokio::spawn(run_workers(COMPONENT, queue.clone(), 4, cancel.clone(), move |key: Key| {
            let c = c.clone();
            async move { c.reconcile(&key).await }
        }))
    };
    // What about each node decides where daemon pods go; heartbeats change none of it.
    let mut seen: HashMap<String, u64> =
        c.nodes.list().iter().map(|n| (n.metadata.name.clone().unwrap_or_default(), node_fingerprint(n))).collect();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            ch = next_change(&mut ds_changes) => match ch {
                Some(Change::Applied(d)) | Some(Change::Deleted(d)) => queue.add(Key::of(d.as_ref())),
                Some(Change::Resync) => all(&queue),
                None => break,
            },
            ch = next_change(&mut pod_changes) => match ch {
                Some(Change::Applied(p)) | Some(Change::Deleted(p)) => queue_controller_of(&p.metadata, "DaemonSet", &c.dsets, |o| o.spec.as_ref().map(|s| s.selector.clone()), &queue),
                Some(Change::Resync) => all(&queue),
                None => break,
            },
            ch = next_change(&mut node_changes) => match ch {
                Some(Change::Applied(n)) => {
                    let fp = node_fingerprint(&n);
                    if seen.insert(n.metadata.name.clone().unwrap_or_default(), fp) != Some(fp) {
                        all(&queue);
                    }
                }
                Some(Change::Deleted(n)) => {
                    seen.remove(n.metadata.name.as_deref().unwrap_or(""));
                    all(&queue);
                }
                Some(Change::Resync) => {
                    seen = c.nodes.list().iter()
                        .map(|n| (n.metadata.name.clone().unwrap_or_default(), node_fingerprint(n)))
                        .collect();
                    all(&queue);
                }
                None => break,
            },
            ch = next_change(&mut rev_changes) => match ch {
                Some(Change::Applied(r)) | Some(Change::Deleted(r)) => {
                    if let Some(o) = controller_ref(&r.metadata).filter(|o| o.kind == "DaemonSet") {
                        queue.add(Key::new(r.metadata.namespace.as_deref().unwrap_or(""), &o.name));
                    }
                }
                Some(Change::Resync) => all(&queue),
                None => break,
            },
        }
    }
    let _ = workers.await;
}

/// The parts of a node that decide whether daemon pods belong on it.
fn node_fingerprint(node: &Node) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    node.metadata.labels.hash(&mut h);
    let spec = node.spec.as_ref();
    serde_json::to_string(&spec.and_then(|s| s.taints.as_ref())).unwrap_or_default().hash(&mut h);
    spec.and_then(|s| s.unschedulable).hash(&mut h);
    h.finish()
}

fn toleration(key: &str, effect: &str) -> Toleration {
    Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Default::default()
    }
}

/// Upstream's `AddOrUpdateDaemonPodTolerations`: daemon pods survive not-ready and unreachable
/// nodes and tolerate the node-condition taints (and network-unavailable with host network).
pub fn add_daemon_tolerations(spec: &mut PodSpec) {
    let mut wanted = vec![
        toleration("node.kubernetes.io/not-ready", "NoExecute"),
        toleration("node.kubernetes.io/unreachable", "NoExecute"),
        toleration("node.kubernetes.io/disk-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/memory-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/pid-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if spec.host_network == Some(true) {
        wanted.push(toleration("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    let list = spec.tolerations.get_or_insert_with(Vec::new);
    for t in wanted {
        // Same key, operator, value and effect: replaced (upstream's MatchToleration).
        let same = |o: &Toleration| {
            o.key == t.key
                && o.operator.as_deref().unwrap_or("Equal") == "Exists"
                && o.value.as_deref().unwrap_or("").is_empty()
                && o.effect == t.effect
        };
        match list.iter_mut().find(|o| same(o)) {
            Some(o) => *o = t,
            None => list.push(t),
        }
    }
}

/// Upstream's `ReplaceDaemonSetPodNodeNameNodeAffinity`: the required node affinity becomes
/// exactly `metadata.name In [node]` (other required terms go; preferences stay).
pub fn pin_to_node(affinity: Option<Affinity>, node: &str) -> Affinity {
    let term = NodeSelectorTerm {
        match_expressions: None,
        match_fields: Some(vec![NodeSelectorRequirement {
            key: "metadata.name".into(),
            operator: "In".into(),
            values: Some(vec![node.to_string()]),
        }]),
    };
    let mut affinity = affinity.unwrap_or_default();
    let na = affinity.node_affinity.get_or_insert_with(NodeAffinity::default);
    na.required_during_scheduling_ignored_during_execution = Some(NodeSelector { node_selector_terms: vec![term] });
    affinity
}

/// The node a daemon pod is for: its `nodeName`, else the node its pinning affinity names.
pub fn target_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        return Some(n.to_string());
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    for t in terms {
        for r in t.match_fields.iter().flatten() {
            if r.key == "metadata.name"
                && r.operator == "In"
                && let Some([v]) = r.values.as_deref()
            {
                return Some(v.clone());
            }
        }
    }
    None
}

/// Which nodes a DaemonSet's pod should run on (upstream's `NodeShouldRunDaemonPod`).
struct Placement {
    pod: Pod,
    node_name: Option<String>,
}

impl Placement {
    fn new(ds: &DaemonSet) -> Placement {
        let template = ds.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
        let mut spec = template.spec.unwrap_or_default();
        add_daemon_tolerations(&mut spec);
        let node_name = spec.node_name.clone().filter(|n| !n.is_empty());
        Placement {
            pod: Pod { metadata: template.metadata.unwrap_or_default(), spec: Some(spec), status: None },
            node_name,
        }
    }

    /// (should run, should continue running).
    fn check(&self, node: &Node) -> (bool, bool) {
        if self.node_name.as_ref().is_some_and(|n| Some(n) != node.metadata.name.as_ref()) {
            return (false, false);
        }
        if !node_affinity_matches(&self.pod, node) {
            return (false, false);
        }
        let taints = node.spec.as_ref().and_then(|s| s.taints.as_deref()).unwrap_or(&[]);
        let tolerations = self.pod.spec.as_ref().and_then(|s| s.tolerations.as_deref()).unwrap_or(&[]);
        if untolerated(taints, tolerations, &["NoSchedule", "NoExecute"]).is_some() {
            return (false, untolerated(taints, tolerations, &["NoExecute"]).is_none());
        }
        (true, true)
    }
}

fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

fn name_of(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

/// Upstream's `podByCreationTimestampAndPhase`: scheduled first, then oldest, then by name.
fn oldest_first(a: &Arc<Pod>, b: &Arc<Pod>) -> std::cmp::Ordering {
    let scheduled = |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty());
    let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    scheduled(b).cmp(&scheduled(a)).then_with(|| created(a).cmp(&created(b))).then_with(|| name_of(a).cmp(&name_of(b)))
}

fn template_generation(ds: &DaemonSet) -> Option<String> {
    ds.metadata.annotations.as_ref()?.get(TEMPLATE_GENERATION_ANNOTATION).cloned()
}

/// Upstream's `IsPodUpdated`: the pod carries the current hash (or template generation).
fn is_updated(pod: &Pod, hash: &str, generation: Option<&str>) -> bool {
    let labels = pod.metadata.labels.as_ref();
    let hash_matches = !hash.is_empty() && labels.and_then(|l| l.get(HASH_LABEL)).map(String::as_str) == Some(hash);
    let gen_matches = generation
        .is_some_and(|g| labels.and_then(|l| l.get(TEMPLATE_GENERATION_LABEL)).map(String::as_str) == Some(g));
    hash_matches || gen_matches
}

fn is_rolling(ds: &DaemonSet) -> bool {
    ds.spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate"
}

/// An int or a percentage of `total` (rounded up), as upstream's `GetScaledValueFromIntOrPercent`.
fn scaled(v: Option<&IntOrString>, total: i32) -> i32 {
    match v {
        Some(IntOrString::Int(i)) => *i,
        Some(IntOrString::String(s)) => match s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
            Some(p) => ((p * total as i64 + 99) / 100) as i32,
            None => s.parse().unwrap_or(0),
        },
        None => 0,
    }
}

/// (maxSurge, maxUnavailable) against `desired` nodes; both zero means one unavailable.
fn fenceposts(ds: &DaemonSet, desired: i32) -> (i32, i32) {
    if !is_rolling(ds) {
        return (0, 0);
    }
    let ru = ds.spec.as_ref().and_then(|s| s.update_strategy.as_ref()).and_then(|u| u.rolling_update.as_ref());
    let surge = scaled(ru.and_then(|r| r.max_surge.as_ref()), desired);
    let unavailable = scaled(ru.and_then(|r| r.max_unavailable.as_ref()), desired);
    if desired > 0 && surge == 0 && unavailable == 0 { (0, 1) } else { (surge, unavailable) }
}

fn allows_surge(ds: &DaemonSet) -> bool {
    fenceposts(ds, 1).0 != 0
}

fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

/// The pod of the current revision and the pod of an older one on a node, if any.
type NewAndOld = (Option<Arc<Pod>>, Option<Arc<Pod>>);

/// Daemon pods per target node.
fn by_node(pods: &[Arc<Pod>]) -> HashMap<String, Vec<Arc<Pod>>> {
    let mut m: HashMap<String, Vec<Arc<Pod>>> = HashMap::new();
    for p in pods {
        if let Some(n) = target_node(p) {
            m.entry(n).or_default().push(p.clone());
        }
    }
    m
}

impl Controller {
    fn pod_api(&self, ns: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), ns)
    }

    fn rev_api(&self, ns: &str) -> Api<ControllerRevision> {
        Api::namespaced(self.client.clone(), ns)
    }

    async fn reconcile(&self, key: &Key) -> Result<Next, kube::Error> {
        let Some(ds) = self.dsets.get(&key.namespace, &key.name) else {
            self.expectations.forget(key);
            return Ok(Next::Done);
        };
        let Some(spec) = ds.spec.as_ref() else { return Ok(Next::Done) };
        if selector_is_empty(&spec.selector) {
            self.recorder.record(
                ds.as_ref(),
                EventType::Warning,
                "SelectingAll",
                "This daemon set is selecting all pods. A non-empty selector is required.".into(),
            );
            return Ok(Next::Done);
        }
        // Its revisions may be going already; status cannot be trusted while it is deleted.
        if ds.metadata.deletion_timestamp.is_some() {
            return Ok(Next::Done);
        }
        let nodes = self.nodes.list();
        let (cur, old) = self.construct_history(&ds, &spec.selector).await?;
        let hash = cur.metadata.labels.as_ref().and_then(|l| l.get(HASH_LABEL)).cloned().unwrap_or_default();
        // Pods deleted after they finished count for nothing (upstream leaves them out).
        let pods: Vec<Arc<Pod>> = self
            .claim_pods(&ds, &spec.selector)
            .await?
            .into_iter()
            .filter(|p| !(p.metadata.deletion_timestamp.is_some() && is_terminal(p)))
            .collect();
        let placement = Placement::new(&ds);

        let seen =
            |name: &str| self.pods.get(&key.namespace, name).is_some_and(|p| p.metadata.deletion_timestamp.is_none());
        if !self.expectations.satisfied(key, seen) {
            return self.update_status(&ds, &nodes, &placement, &hash, false).await;
        }
        let mut next = Next::Done;
        let mut result = self.manage(key, &ds, &nodes, &pods, &placement, &hash).await;
        if let Ok(Some(after)) = &result {
            next = Next::After(*after);
        }
        if result.is_ok() && is_rolling(&ds) && self.expectations.satisfied(key, seen) {
            result = self.rolling_update(key, &ds, &nodes, &placement, &hash).await.map(|_| None);
        }
        if result.is_ok() {
            result = self.cleanup_history(&ds, &old).await.map(|_| None);
        }
        let status = self.update_status(&ds, &nodes, &placement, &hash, true).await;
        result?;
        match (status?, next) {
            (Next::After(a), Next::After(b)) => Ok(Next::After(a.min(b))),
            (Next::After(a), Next::Done) | (Next::Done, Next::After(a)) => Ok(Next::After(a)),
            (Next::Done, Next::Done) => Ok(Next::Done),
        }
    }

    /// The DaemonSet's pods, after releasing those its selector no longer matches and adopting
    /// orphans it matches.
    async fn claim_pods(&self, ds: &DaemonSet, selector: &LabelSelector) -> Result<Vec<Arc<Pod>>, kube::Error> {
        let uid = ds.metadata.uid.clone().unwrap_or_default();
        let ns = ds.metadata.namespace.clone().unwrap_or_default();
        let api = self.pod_api(&ns);
        let labels = |p: &Pod| p.metadata.labels.clone().unwrap_or_default();
        let mut mine = Vec::new();
        for p in self.pods.controlled_by(&uid) {
            if selector_matches(selector, &labels(&p)) {
                mine.push(p);
            } else {
                release(&api, p.as_ref(), &uid).await?;
            }
        }
        for p in self.pods.orphans_in(&ns) {
            if controller_ref(&p.metadata).is_none()
                && p.metadata.deletion_timestamp.is_none()
                && selector_matches(selector, &labels(&p))
                && let Some(adopted) = adopt(&api, p.as_ref(), controller_of(ds)).await?
            {
                mine.push(Arc::new(adopted));
            }
        }
        Ok(mine)
    }

    /// The pods the status and the rolling update count: the DaemonSet's, less those deleted
    /// after they finished.
    fn current_pods(&self, ds: &DaemonSet) -> Vec<Arc<Pod>> {
        let uid = ds.metadata.uid.as_deref().unwrap_or("");
        let sel = ds.spec.as_ref().map(|s| s.selector.clone()).unwrap_or_default();
        self.pods
            .controlled_by(uid)
            .into_iter()
            .filter(|p| selector_matches(&sel, &p.metadata.labels.clone().unwrap_or_default()))
            .filter(|p| !(p.metadata.deletion_timestamp.is_some() && is_terminal(p)))
            .collect()
    }

    /// Upstream's `constructHistory`: the revision of the current template (created, or
    /// renumbered when an old one comes back) and the others.
    async fn construct_history(
        &self,
        ds: &DaemonSet,
        selector: &LabelSelector,
    ) -> Result<(Arc<ControllerRevision>, Vec<Arc<ControllerRevision>>), kube::Error> {
        let ns = ds.metadata.namespace.clone().unwrap_or_default();
        let api = self.rev_api(&ns);
        let template = ds.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
        let data = history::template_patch(&template);
        let mut current = Vec::new();
        let mut old = Vec::new();
        for r in history::claim(&api, &self.revisions, ds, selector).await? {
            // Revisions without the hash label get their name as hash.
            let r = if r.metadata.labels.as_ref().is_none_or(|l| !l.contains_key(HASH_LABEL)) {
                let patch = json!({"metadata": {"labels": {HASH_LABEL: r.metadata.name}}});
                Arc::new(
                    api.patch(r.metadata.name.as_deref().unwrap_or(""), &PatchParams::default(), &Patch::Merge(&patch))
                        .await?,
                )
            } else {
                r
            };
            if history::holds(&r, &data) { current.push(r) } else { old.push(r) }
        }
        let next = history::next_revision(&old);
        let cur = if current.is_empty() {
            Arc::new(self.snapshot(ds, &template, data, next).await?)
        } else {
            let keep = self.dedup(ds, current).await?;
            if keep.revision < next { Arc::new(history::renumber(&api, &keep, next).await?) } else { keep }
        };
        Ok((cur, old))
    }

    /// Creates the revision of the current template; a different revision holding its name
    /// bumps `status.collisionCount` and fails, so the next pass picks another name.
    async fn snapshot(
        &self,
        ds: &DaemonSet,
        template: &PodTemplateSpec,
        data: Value,
        revision: i64,
    ) -> Result<ControllerRevision, kube::Error> {
        let ns = ds.metadata.namespace.clone().unwrap_or_default();
        let name = ds.metadata.name.clone().unwrap_or_default();
        let collision_count = ds.status.as_ref().and_then(|s| s.collision_count);
        let hash = history::hash(&data, collision_count);
        let mut labels = template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
        labels.insert(HASH_LABEL.into(), hash.clone());
        let mut rev = history::new_revision(ds, labels, data.clone(), revision);
        rev.metadata.name = Some(history::revision_name(&name, &hash));
        rev.metadata.annotations = ds.metadata.annotations.clone();
        let api = self.rev_api(&ns);
        match api.create(&PostParams::default(), &rev).await {
            Ok(r) => Ok(r),
            Err(kube::Error::Api(e)) if e.code == 409 => {
                let existing = api.get(rev.metadata.name.as_deref().unwrap_or("")).await?;
                if history::holds(&existing, &data) {
                    return Ok(existing);
                }
                let ds_api: Api<DaemonSet> = Api::namespaced(self.client.clone(), &ns);
                let fresh = ds_api.get(&name).await?;
                let fresh_count = fresh.status.as_ref().and_then(|s| s.collision_count);
                if fresh_count == collision_count {
                    let patch = json!({"status": {"collisionCount": collision_count.unwrap_or(0) + 1},
                        "metadata": {"resourceVersion": fresh.metadata.resource_version}});
                    ds_api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
                }
                Err(kube::Error::Api(e))
            }
            Err(e) => Err(e),
        }
    }

    /// Of several revisions holding the current template, keeps the newest: relabels pods of
    /// the others with its hash and deletes them.
    async fn dedup(
        &self,
        ds: &DaemonSet,
        mut current: Vec<Arc<ControllerRevision>>,
    ) -> Result<Arc<ControllerRevision>, kube::Error> {
        current.sort_by(|a, b| history::by_revision(a, b));
        let Some(keep) = current.pop() else { unreachable!("dedup of no revisions") };
        if current.is_empty() {
            return Ok(keep);
        }
        let ns = ds.metadata.namespace.clone().unwrap_or_default();
        let hash = keep.metadata.labels.as_ref().and_then(|l| l.get(HASH_LABEL)).cloned().unwrap_or_default();
        let api = self.pod_api(&ns);
        for p in self.current_pods(ds) {
            if p.metadata.labels.as_ref().and_then(|l| l.get(HASH_LABEL)) != Some(&hash) {
                let patch = json!({"metadata": {"labels": {HASH_LABEL: hash}}});
                match api.patch(&name_of(&p), &PatchParams::default(), &Patch::Merge(&patch)).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let rev_api = self.rev_api(&ns);
        for r in current {
            history::delete(&rev_api, &r).await?;
        }
        Ok(keep)
    }

    /// Deletes old revisions beyond `revisionHistoryLimit`, oldest first, sparing those whose
    /// hash a pod still carries.
    async fn cleanup_history(&self, ds: &DaemonSet, old: &[Arc<ControllerRevision>]) -> Result<(), kube::Error> {
        let limit = ds.spec.as_ref().and_then(|s| s.revision_history_limit).unwrap_or(10).max(0) as usize;
        if old.len() <= limit {
            return Ok(());
        }
        let mut to_kill = old.len() - limit;
        let uid = ds.metadata.uid.as_deref().unwrap_or("");
        let live: HashSet<String> = self
            .pods
            .controlled_by(uid)
            .iter()
            .filter_map(|p| p.metadata.labels.as_ref().and_then(|l| l.get(HASH_LABEL)).cloned())
            .collect();
        let mut old: Vec<&Arc<ControllerRevision>> = old.iter().collect();
        old.sort_by(|a, b| history::by_revision(a, b));
        let api = self.rev_api(ds.metadata.namespace.as_deref().unwrap_or(""));
        for r in old {
            if to_kill == 0 {
                break;
            }
            if r.metadata.labels.as_ref().and_then(|l| l.get(HASH_LABEL)).is_some_and(|h| live.contains(h)) {
                continue;
            }
            history::delete(&api, r).await?;
            to_kill -= 1;
        }
        Ok(())
    }

    /// Creates pods on nodes that should have one and deletes those on nodes that should not,
    /// and failed or excess ones; returns when to look again for a failed pod in backoff.
    async fn manage(
        &self,
        key: &Key,
        ds: &DaemonSet,
        nodes: &[Arc<Node>],
        pods: &[Arc<Pod>],
        placement: &Placement,
        hash: &str,
    ) -> Result<Option<Duration>, kube::Error> {
        let node_pods = by_node(pods);
        let mut create_on = Vec::new();
        let mut delete = Vec::new();
        let mut retry: Option<Duration> = None;
        let surge = allows_surge(ds);
        for node in nodes {
            let node_name = node.metadata.name.clone().unwrap_or_default();
            let (should_run, should_continue) = placement.check(node);
            let daemon_pods = node_pods.get(&node_name);
            match daemon_pods {
                None if should_run => create_on.push(node_name),
                Some(on_node) if should_continue => {
                    let mut running: Vec<Arc<Pod>> = Vec::new();
                    for p in on_node.iter().filter(|p| p.metadata.deletion_timestamp.is_none()) {
                        match phase(p) {
                            "Failed" => {
                                let bkey = format!(
                                    "{}/{}/{node_name}",
                                    ds.metadata.uid.as_deref().unwrap_or(""),
                                    ds.status.as_ref().and_then(|s| s.observed_generation).unwrap_or(0)
                                );
                                if let Some(wait) = self.in_backoff(&bkey) {
                                    retry = Some(retry.map_or(wait, |r| r.min(wait)));
                                    continue;
                                }
                                let msg = format!(
                                    "Found failed daemon pod {}/{} on node {node_name}, will try to kill it",
                                    key.namespace,
                                    name_of(p)
                                );
                                self.recorder.record(ds, EventType::Warning, "FailedDaemonPod", msg);
                                delete.push(name_of(p));
                            }
                            "Succeeded" => {
                                let msg = format!(
                                    "Found succeeded daemon pod {}/{} on node {node_name}, will try to delete it",
                                    key.namespace,
                                    name_of(p)
                                );
                                self.recorder.record(ds, EventType::Normal, "SucceededDaemonPod", msg);
                                delete.push(name_of(p));
                            }
                            _ => running.push(p.clone()),
                        }
                    }
                    running.sort_by(oldest_first);
                    if !surge {
                        // Keep the oldest; the next pass creates one if none is left.
                        delete.extend(running.iter().skip(1).map(|p| name_of(p)));
                        continue;
                    }
                    if running.len() <= 1 {
                        if running.is_empty() && should_run {
                            create_on.push(node_name);
                        }
                        continue;
                    }
                    // Surging: at most the oldest new and the oldest old pod; the old one goes
                    // once it is not ready or the new one is available.
                    let generation = template_generation(ds);
                    let (mut oldest_new, mut oldest_old): (Option<&Arc<Pod>>, Option<&Arc<Pod>>) = (None, None);
                    for p in &running {
                        let slot =
                            if is_updated(p, hash, generation.as_deref()) { &mut oldest_new } else { &mut oldest_old };
                        if slot.is_none() {
                            *slot = Some(p);
                        } else {
                            delete.push(name_of(p));
                        }
                    }
                    if let (Some(new), Some(old)) = (oldest_new, oldest_old) {
                        let min_ready = ds.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0);
                        if !is_ready(old) || is_available(new, min_ready, Utc::now()) {
                            delete.push(name_of(old));
                        }
                    }
                }
                Some(on_node) if !should_continue => {
                    delete
                        .extend(on_node.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).map(|p| name_of(p)));
                }
                _ => {}
            }
        }
        // Unscheduled pods for nodes that are gone would wait forever.
        let existing: HashSet<&str> = nodes.iter().filter_map(|n| n.metadata.name.as_deref()).collect();
        for (node, on_node) in &node_pods {
            if !existing.contains(node.as_str()) {
                for p in on_node {
                    let unscheduled = p.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_none_or(str::is_empty);
                    if unscheduled && p.metadata.deletion_timestamp.is_none() {
                        delete.push(name_of(p));
                    }
                }
            }
        }
        self.sync_nodes(key, ds, delete, create_on, hash).await?;
        Ok(retry)
    }

    /// `Some(remaining wait)` while deleting failed pods on this node is backing off; otherwise
    /// records a deletion now and doubles the next wait.
    fn in_backoff(&self, bkey: &str) -> Option<Duration> {
        let mut b = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        b.retain(|_, (last, _)| now.duration_since(*last) < 2 * BACKOFF_MAX);
        match b.get_mut(bkey) {
            Some((last, delay)) if now.duration_since(*last) < *delay => Some(*delay - now.duration_since(*last)),
            Some((last, delay)) => {
                *delay = (*delay * 2).min(BACKOFF_MAX);
                *last = now;
                None
            }
            None => {
                b.insert(bkey.to_string(), (now, BACKOFF_INITIAL));
                None
            }
        }
    }

    /// The pod template every new daemon pod starts from: tolerations and revision labels.
    fn pod_template(ds: &DaemonSet, hash: &str) -> PodTemplateSpec {
        let mut t = ds.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
        add_daemon_tolerations(t.spec.get_or_insert_with(Default::default));
        let labels = t.metadata.get_or_insert_with(Default::default).labels.get_or_insert_with(BTreeMap::new);
        if let Some(g) = template_generation(ds) {
            labels.insert(TEMPLATE_GENERATION_LABEL.into(), g);
        }
        if !hash.is_empty() {
            labels.insert(HASH_LABEL.into(), hash.to_string());
        }
        t
    }

    /// Deletes `delete` and creates a pod on each node of `create_on` (slow start: 1, 2, 4, ...
    /// at once), at most [`BURST`] of each per pass.
    async fn sync_nodes(
        &self,
        key: &Key,
        ds: &DaemonSet,
        mut delete: Vec<String>,
        mut create_on: Vec<String>,
        hash: &str,
    ) -> Result<(), kube::Error> {
        create_on.truncate(BURST);
        delete.truncate(BURST);
        let api = self.pod_api(&key.namespace);
        let template = Self::pod_template(ds, hash);
        let prefix = format!("{}-", key.name);
        let mut first_error: Option<kube::Error> = None;
        let mut pos = 0;
        let mut batch = 1;
        while pos < create_on.len() {
            let n = batch.min(create_on.len() - pos);
            let creates = create_on[pos..pos + n].iter().map(|node| {
                let mut pod = from_template(&template, &key.namespace, &prefix, controller_of(ds));
                if let Some(spec) = pod.spec.as_mut() {
                    spec.affinity = Some(pin_to_node(spec.affinity.take(), node));
                }
                let api = &api;
                async move { api.create(&PostParams::default(), &pod).await }
            });
            let mut failed = false;
            for r in join_all(creates).await {
                match r {
                    Ok(p) => {
                        let name = name_of(&p);
                        self.expectations.created(key, &name);
                        self.recorder.record(ds, EventType::Normal, "SuccessfulCreate", format!("Created pod: {name}"));
                    }
                    Err(e) => {
                        let msg = api_message(&e);
                        // A namespace being deleted takes every create; nothing to report.
                        if msg.contains("because it is being terminated") {
                            continue;
                        }
                        self.recorder.record(ds, EventType::Warning, "FailedCreate", format!("Error creating: {msg}"));
                        failed = true;
                        first_error.get_or_insert(e);
                    }
                }
            }
            if failed {
                break;
            }
            pos += n;
            batch *= 2;
        }
        let deletes = delete.iter().map(|name| {
            let api = &api;
            let uid = self.pods.get(&key.namespace, name).and_then(|p| p.metadata.uid.clone());
            async move {
                let dp = DeleteParams {
                    preconditions: Some(Preconditions { uid, resource_version: None }),
                    ..Default::default()
                };
                (api.delete(name, &dp).await, name)
            }
        });
        for (r, name) in join_all(deletes).await {
            match r {
                Ok(_) => {
                    self.expectations.deleted(key, name);
                    self.recorder.record(ds, EventType::Normal, "SuccessfulDelete", format!("Deleted pod: {name}"));
                }
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => {
                    self.recorder.record(
                        ds,
                        EventType::Warning,
                        "FailedDelete",
                        format!("Error deleting: {}", api_message(&e)),
                    );
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Upstream's `rollingUpdate`: replaces pods of older revisions, deleting first within
    /// `maxUnavailable`, or creating the new pod first within `maxSurge`.
    async fn rolling_update(
        &self,
        key: &Key,
        ds: &DaemonSet,
        nodes: &[Arc<Node>],
        placement: &Placement,
        hash: &str,
    ) -> Result<(), kube::Error> {
        let mut node_pods = by_node(&self.current_pods(ds));
        let should_run: HashMap<String, bool> =
            nodes.iter().map(|n| (n.metadata.name.clone().unwrap_or_default(), placement.check(n).0)).collect();
        let mut desired = 0;
        for (name, run) in &should_run {
            if *run {
                desired += 1;
                node_pods.entry(name.clone()).or_default();
            }
        }
        let (max_surge, max_unavailable) = fenceposts(ds, desired);
        let min_ready = ds.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0);
        let now = Utc::now();
        let generation = template_generation(ds);
        let available = |p: &Pod| is_available(p, min_ready, now);
        // (new, old) pods of a node; `None` when it has more than one of either.
        let split = |pods: &[Arc<Pod>]| -> Option<NewAndOld> {
            let (mut new, mut old) = (None, None);
            for p in pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()) {
                let slot = if is_updated(p, hash, generation.as_deref()) { &mut new } else { &mut old };
                if slot.is_some() {
                    return None;
                }
                *slot = Some(p.clone());
            }
            Some((new, old))
        };
        let mut nodes_sorted: Vec<(&String, &Vec<Arc<Pod>>)> = node_pods.iter().collect();
        nodes_sorted.sort_by(|a, b| a.0.cmp(b.0));

        if max_surge == 0 {
            let mut unavailable = 0;
            let mut replace: Vec<String> = Vec::new();
            let mut candidates: Vec<String> = Vec::new();
            for (_, pods) in &nodes_sorted {
                let Some((new, old)) = split(pods) else {
                    // The manage pass prunes excess pods first; count the node as unavailable.
                    unavailable += 1;
                    continue;
                };
                match (new, old) {
                    (None, None) | (Some(_), Some(_)) => unavailable += 1,
                    (Some(new), None) => {
                        if !available(&new) {
                            unavailable += 1;
                        }
                    }
                    (None, Some(old)) => {
                        if !available(&old) {
                            replace.push(name_of(&old));
                            unavailable += 1;
                        } else if unavailable < max_unavailable {
                            candidates.push(name_of(&old));
                        }
                    }
                }
            }
            let room = (max_unavailable - unavailable).clamp(0, candidates.len() as i32) as usize;
            replace.extend(candidates.into_iter().take(room));
            return self.sync_nodes(key, ds, replace, Vec::new(), hash).await;
        }

        let mut delete: Vec<String> = Vec::new();
        let mut should_not_run: Vec<String> = Vec::new();
        let mut candidates: Vec<String> = Vec::new();
        let mut allowed: Vec<String> = Vec::new();
        let (mut surging, mut n_available) = (0, 0);
        for (node, pods) in &nodes_sorted {
            let Some((new, old)) = split(pods) else {
                surging += 1;
                continue;
            };
            match (&old, &new) {
                (Some(o), _) if available(o) => n_available += 1,
                (None, Some(n)) if available(n) => n_available += 1,
                _ => {}
            }
            let runs_here = should_run.get(*node).copied().unwrap_or(false);
            match (new, old) {
                (_, None) => {}
                (None, Some(old)) => {
                    if !available(&old) {
                        if !runs_here {
                            delete.push(name_of(&old));
                        } else {
                            allowed.push((*node).clone());
                        }
                    } else if !runs_here {
                        should_not_run.push(name_of(&old));
                    } else if surging < max_surge {
                        candidates.push((*node).clone());
                    }
                }
                (Some(new), Some(old)) => {
                    if !available(&new) {
                        surging += 1;
                    } else {
                        delete.push(name_of(&old));
                    }
                }
            }
        }
        // Pods on nodes that no longer qualify go only while enough others are available.
        let deletable = (n_available - desired).clamp(0, should_not_run.len() as i32) as usize;
        delete.extend(should_not_run.into_iter().take(deletable));
        let room = (max_surge - surging).clamp(0, candidates.len() as i32) as usize;
        allowed.extend(candidates.into_iter().take(room));
        self.sync_nodes(key, ds, delete, allowed, hash).await
    }

    /// Counts per node as upstream's `updateDaemonSetStatus`; `observed` raises
    /// `observedGeneration` (not while earlier writes are still unseen).
    async fn update_status(
        &self,
        ds: &DaemonSet,
        nodes: &[Arc<Node>],
        placement: &Placement,
        hash: &str,
        observed: bool,
    ) -> Result<Next, kube::Error> {
        let node_pods = by_node(&self.current_pods(ds));
        let min_ready = ds.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0);
        let now = Utc::now();
        let generation = template_generation(ds);
        let (mut desired, mut current, mut misscheduled, mut ready, mut updated, mut available) = (0, 0, 0, 0, 0, 0);
        for node in nodes {
            let (should_run, _) = placement.check(node);
            let on_node = node.metadata.name.as_ref().and_then(|n| node_pods.get(n)).filter(|p| !p.is_empty());
            if should_run {
                desired += 1;
                let Some(on_node) = on_node else { continue };
                current += 1;
                let mut sorted = on_node.clone();
                sorted.sort_by(oldest_first);
                let pod = &sorted[0];
                if is_ready(pod) {
                    ready += 1;
                    if is_available(pod, min_ready, now) {
                        available += 1;
                    }
                }
                if is_updated(pod, hash, generation.as_deref()) {
                    updated += 1;
                }
            } else if on_node.is_some() {
                misscheduled += 1;
            }
        }
        let unavailable = desired - available;
        let old = ds.status.clone().unwrap_or_default();
        let generation_now = ds.metadata.generation.unwrap_or(0);
        let same = old.desired_number_scheduled == desired
            && old.current_number_scheduled == current
            && old.number_misscheduled == misscheduled
            && old.number_ready == ready
            && old.updated_number_scheduled.unwrap_or(0) == updated
            && old.number_available.unwrap_or(0) == available
            && old.number_unavailable.unwrap_or(0) == unavailable
            && old.observed_generation.unwrap_or(0) >= generation_now;
        if !same {
            let nz = |n: i32| if n == 0 { Value::Null } else { json!(n) };
            let mut status = json!({
                "desiredNumberScheduled": desired,
                "currentNumberScheduled": current,
                "numberMisscheduled": misscheduled,
                "numberReady": ready,
                "updatedNumberScheduled": nz(updated),
                "numberAvailable": nz(available),
                "numberUnavailable": nz(unavailable),
            });
            if observed {
                status["observedGeneration"] = json!(ds.metadata.generation);
            }
            let api: Api<DaemonSet> =
                Api::namespaced(self.client.clone(), ds.metadata.namespace.as_deref().unwrap_or(""));
            let name = ds.metadata.name.as_deref().unwrap_or("");
            match api.patch_status(name, &PatchParams::default(), &Patch::Merge(&json!({"status": status}))).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => return Ok(Next::Done),
                Err(e) => return Err(e),
            }
        }
        // Ready pods become available later; look again then.
        if min_ready > 0 && ready != available {
            return Ok(Next::After(Duration::from_secs(min_ready as u64)));
        }
        Ok(Next::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeSpec, Taint};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(name: &str, labels: &[(&str, &str)], taints: Vec<Taint>) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
                ..Default::default()
            },
            spec: Some(NodeSpec { taints: Some(taints), ..Default::default() }),
            status: None,
        }
    }

    fn ds(spec: Value) -> DaemonSet {
        serde_json::from_value(json!({
            "metadata": {"name": "d", "namespace": "n"},
            "spec": {"selector": {"matchLabels": {"app": "d"}}, "template": {
                "metadata": {"labels": {"app": "d"}},
                "spec": spec,
            }},
        }))
        .unwrap()
    }

    fn taint(key: &str, effect: &str) -> Taint {
        Taint { key: key.into(), effect: effect.into(), value: None, time_added: None }
    }

    #[test]
    fn placement_follows_selectors_and_taints_not_resources() {
        let d = ds(json!({"nodeSelector": {"disk": "ssd"}, "containers": [{"name": "c", "image": "i",
            "resources": {"requests": {"cpu": "1000"}}}]}));
        let p = Placement::new(&d);
        assert_eq!(p.check(&node("a", &[("disk", "ssd")], vec![])), (true, true));
        assert_eq!(p.check(&node("b", &[], vec![])), (false, false));
        // NoSchedule: no new pod, but a running one stays; NoExecute: neither.
        assert_eq!(p.check(&node("c", &[("disk", "ssd")], vec![taint("x", "NoSchedule")])), (false, true));
        assert_eq!(p.check(&node("d", &[("disk", "ssd")], vec![taint("x", "NoExecute")])), (false, false));
        // The daemon tolerations cover cordoned and not-ready nodes.
        let t = vec![
            taint("node.kubernetes.io/unschedulable", "NoSchedule"),
            taint("node.kubernetes.io/not-ready", "NoExecute"),
        ];
        assert_eq!(p.check(&node("e", &[("disk", "ssd")], t)), (true, true));
        // A template tolerating everything runs everywhere its selector allows.
        let d = ds(json!({"tolerations": [{"operator": "Exists"}], "containers": [{"name": "c", "image": "i"}]}));
        assert_eq!(Placement::new(&d).check(&node("f", &[], vec![taint("x", "NoExecute")])), (true, true));
    }

    #[test]
    fn pods_are_pinned_and_tolerate_as_upstream() {
        let mut spec: PodSpec = serde_json::from_value(json!({"hostNetwork": true, "containers": [],
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "a", "operator": "Exists"}]}]},
                "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1, "preference": {}}]}}}))
        .unwrap();
        add_daemon_tolerations(&mut spec);
        let t = spec.tolerations.as_ref().unwrap();
        assert_eq!(t.len(), 7);
        assert_eq!(t[0].toleration_seconds, None, "the not-ready toleration is replaced");
        assert!(t.iter().any(|t| t.key.as_deref() == Some("node.kubernetes.io/network-unavailable")));
        let a = pin_to_node(spec.affinity.take(), "n1");
        let na = a.node_affinity.as_ref().unwrap();
        assert!(na.preferred_during_scheduling_ignored_during_execution.is_some());
        let terms = &na.required_during_scheduling_ignored_during_execution.as_ref().unwrap().node_selector_terms;
        assert_eq!(terms.len(), 1);
        spec.affinity = Some(a);
        let pod = Pod { spec: Some(spec), ..Default::default() };
        assert_eq!(target_node(&pod).as_deref(), Some("n1"));
    }

    #[test]
    fn fenceposts_round_up_and_default_to_one_unavailable() {
        let mut d = ds(json!({"containers": []}));
        d.spec.as_mut().unwrap().update_strategy = Some(
            serde_json::from_value(json!({"type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": "10%", "maxSurge": 0}}))
            .unwrap(),
        );
        assert_eq!(fenceposts(&d, 15), (0, 2));
        assert!(!allows_surge(&d));
        d.spec.as_mut().unwrap().update_strategy = Some(
            serde_json::from_value(json!({"type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "0%"}}))
            .unwrap(),
        );
        assert_eq!(fenceposts(&d, 3), (0, 1));
        d.spec.as_mut().unwrap().update_strategy = Some(
            serde_json::from_value(json!({"type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "50%"}}))
            .unwrap(),
        );
        assert_eq!(fenceposts(&d, 3), (2, 0));
        assert!(allows_surge(&d));
    }
}
