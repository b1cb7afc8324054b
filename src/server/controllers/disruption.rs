//! The disruption controller: keeps every PodDisruptionBudget's status (expected, healthy and
//! desired-healthy pods, disruptions allowed, the `DisruptionAllowed` condition) true, so the
//! eviction subresource can decide. As upstream: `minAvailable` as a number counts the
//! matching pods; `maxUnavailable` or a percentage needs the scale of the pods' controllers
//! (ReplicaSet, Deployment, StatefulSet, ReplicationController); pods recorded in
//! `disruptedPods` by an eviction do not count as healthy for two minutes, or until they are
//! gone.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::Ctx;
use super::pods::{controller_ref, is_ready};
use crate::runtime::events::{EventType, Recorder};
use crate::runtime::informer::next_change;
use crate::runtime::matching::selector_matches;
use crate::runtime::queue::{Next, run_workers};
use crate::runtime::{Change, Informer, Key, WorkQueue};

/// How long an evicted pod counts as disrupted (upstream's DeletionTimeout).
const DELETION_TIMEOUT: Duration = Duration::from_secs(120);

struct Controller {
    client: kube::Client,
    pdbs: Arc<Informer<PodDisruptionBudget>>,
    pods: Arc<Informer<Pod>>,
    replicasets: Arc<Informer<ReplicaSet>>,
    deployments: Arc<Informer<Deployment>>,
    statefulsets: Arc<Informer<StatefulSet>>,
    rcs: Arc<Informer<ReplicationController>>,
    recorder: Recorder,
}

pub async fn run(ctx: Arc<Ctx>, cancel: CancellationToken) {
    let c = Arc::new(Controller {
        client: ctx.client.clone(),
        pdbs: ctx.informers.get(),
        pods: ctx.informers.get(),
        replicasets: ctx.informers.get(),
        deployments: ctx.informers.get(),
        statefulsets: ctx.informers.get(),
        rcs: ctx.informers.get(),
        recorder: ctx.recorder("controllermanager"),
    });
    let mut pdb_changes = c.pdbs.subscribe();
    let mut pod_changes = c.pods.subscribe();
    c.pdbs.synced().await;
    c.pods.synced().await;
    c.replicasets.synced().await;
    c.deployments.synced().await;
    c.statefulsets.synced().await;
    c.rcs.synced().await;
    let queue = WorkQueue::<Key>::new();
    let all = |queue: &WorkQueue<Key>| c.pdbs.list().iter().for_each(|p| queue.add(Key::of(p.as_ref())));
    all(&queue);
    let workers = {
        let c = c.clone();
        tokio::spawn(run_workers("disruption-controller", queue.clone(), 2, cancel.clone(), move |key: Key| {
            let c = c.clone();
            async move { c.reconcile(&key).await }
        }))
    };
    // Controllers' scales change without pod events; look at every budget now and then.
    let mut resync = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = resync.tick() => all(&queue),
            ch = next_change(&mut pdb_changes) => match ch {
                Some(Change::Applied(p)) | Some(Change::Deleted(p)) => queue.add(Key::of(p.as_ref())),
                Some(Change::Resync) => all(&queue),
                None => break,
            },
            ch = next_change(&mut pod_changes) => match ch {
                Some(Change::Applied(p)) | Some(Change::Deleted(p)) => {
                    let ns = p.metadata.namespace.as_deref().unwrap_or("");
                    let labels = p.metadata.labels.clone().unwrap_or_default();
                    for pdb in c.pdbs.in_namespace(ns) {
                        if pdb.spec.as_ref().and_then(|s| s.selector.as_ref()).is_some_and(|s| selector_matches(s, &labels)) {
                            queue.add(Key::of(pdb.as_ref()));
                        }
                    }
                }
                Some(Change::Resync) => all(&queue),
                None => break,
            },
        }
    }
    let _ = workers.await;
}

fn resolve(v: &IntOrString, total: i32, round_up: bool) -> Option<i32> {
    match v {
        IntOrString::Int(i) => Some(*i),
        IntOrString::String(s) => {
            let p: i64 = s.strip_suffix('%')?.parse().ok()?;
            let x = p * total as i64;
            Some((if round_up { (x + 99) / 100 } else { x / 100 }) as i32)
        }
    }
}

impl Controller {
    /// The scale of the controller owning `pod` (following a ReplicaSet up to its Deployment).
    fn controller_scale(&self, pod: &Pod, ns: &str) -> Option<(String, i32)> {
        let r = controller_ref(&pod.metadata)?;
        match r.kind.as_str() {
            "ReplicaSet" => {
                let rs = self.replicasets.get(ns, &r.name)?;
                if let Some(d) = controller_ref(&rs.metadata).filter(|o| o.kind == "Deployment") {
                    let dep = self.deployments.get(ns, &d.name)?;
                    return Some((d.uid.clone(), dep.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)));
                }
                Some((r.uid.clone(), rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)))
            }
            "StatefulSet" => {
                let s = self.statefulsets.get(ns, &r.name)?;
                Some((r.uid.clone(), s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)))
            }
            "ReplicationController" => {
                let rc = self.rcs.get(ns, &r.name)?;
                Some((r.uid.clone(), rc.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)))
            }
            _ => None,
        }
    }

    async fn reconcile(&self, key: &Key) -> Result<Next, kube::Error> {
        let Some(pdb) = self.pdbs.get(&key.namespace, &key.name) else { return Ok(Next::Done) };
        let spec = pdb.spec.clone().unwrap_or_default();
        let pods: Vec<Arc<Pod>> = match &spec.selector {
            Some(sel) => self
                .pods
                .in_namespace(&key.namespace)
                .into_iter()
                .filter(|p| selector_matches(sel, &p.metadata.labels.clone().unwrap_or_default()))
                .collect(),
            None => Vec::new(),
        };
        let now = Utc::now();
        let mut failure: Option<String> = None;
        let (expected, desired) = match (&spec.min_available, &spec.max_unavailable) {
            (Some(IntOrString::Int(n)), None) => (pods.len() as i32, *n),
            (min, max) => {
                // Needs the scale of every controller of the pods.
                let mut scales: HashMap<String, i32> = HashMap::new();
                for p in &pods {
                    match self.controller_scale(p, &key.namespace) {
                        Some((uid, scale)) => {
                            scales.insert(uid, scale);
                        }
                        None => {
                            failure = Some(format!(
                                "found no controllers for pod \"{}\"",
                                p.metadata.name.as_deref().unwrap_or("")
                            ));
                        }
                    }
                }
                let expected: i32 = scales.values().sum();
                let desired = match (min, max) {
                    (Some(m), _) => resolve(m, expected, true).unwrap_or(expected),
                    (None, Some(m)) => expected - resolve(m, expected, true).unwrap_or(0),
                    (None, None) => expected,
                };
                (expected, desired.max(0))
            }
        };
        // Evicted pods stay "disrupted" until they are gone or the timeout passes.
        let mut disrupted: BTreeMap<String, Value> = BTreeMap::new();
        if let Some(d) = pdb.status.as_ref().and_then(|s| s.disrupted_pods.as_ref()) {
            for (name, at) in d {
                let alive = pods
                    .iter()
                    .any(|p| p.metadata.name.as_deref() == Some(name) && p.metadata.deletion_timestamp.is_none());
                let fresh = at.0 + chrono::Duration::from_std(DELETION_TIMEOUT).unwrap_or_default() > now;
                if alive && fresh {
                    disrupted.insert(name.clone(), json!(at));
                }
            }
        }
        let healthy = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p))
            .filter(|p| !disrupted.contains_key(p.metadata.name.as_deref().unwrap_or("")))
            .count() as i32;
        let old = pdb.status.clone().unwrap_or_default();
        let allowed = if failure.is_some() { 0 } else { (healthy - desired).max(0) };
        let (status, reason, message) = match (&failure, allowed > 0) {
            (Some(f), _) => ("False", "SyncFailed", f.clone()),
            (None, true) => ("True", "SufficientPods", String::new()),
            (None, false) => ("False", "InsufficientPods", String::new()),
        };
        if let Some(f) = &failure {
            self.recorder.record(
                pdb.as_ref(),
                EventType::Warning,
                "CalculateExpectedPodCountFailed",
                format!("Failed to calculate the number of expected pods: {f}"),
            );
        }
        let old_cond = old.conditions.as_ref().and_then(|c| c.iter().find(|c| c.type_ == "DisruptionAllowed"));
        let transition = match old_cond {
            Some(c) if c.status == status => json!(c.last_transition_time),
            _ => json!(now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        };
        // A merge patch merges maps: entries that expired are removed by name.
        let mut disrupted_patch: BTreeMap<String, Value> = disrupted.clone();
        for name in old.disrupted_pods.iter().flatten().map(|(n, _)| n) {
            disrupted_patch.entry(name.clone()).or_insert(Value::Null);
        }
        let disrupted_patch = if disrupted.is_empty() { Value::Null } else { json!(disrupted_patch) };
        let desired_status = json!({
            "observedGeneration": pdb.metadata.generation,
            "expectedPods": expected,
            "currentHealthy": healthy,
            "desiredHealthy": desired,
            "disruptionsAllowed": allowed,
            "disruptedPods": disrupted_patch,
            "conditions": [{"type": "DisruptionAllowed", "status": status, "reason": reason, "message": message,
                "observedGeneration": pdb.metadata.generation, "lastTransitionTime": transition}],
        });
        let unchanged = old.observed_generation == pdb.metadata.generation
            && old.expected_pods == expected
            && old.current_healthy == healthy
            && old.desired_healthy == desired
            && old.disruptions_allowed == allowed
            && old.disrupted_pods.as_ref().map_or(0, |d| d.len()) == disrupted.len()
            && old_cond.is_some_and(|c| c.status == status && c.reason == reason);
        if !unchanged {
            let api: Api<PodDisruptionBudget> = Api::namespaced(self.client.clone(), &key.namespace);
            match api
                .patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&json!({"status": desired_status})))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => return Ok(Next::Done),
                Err(e) => return Err(e),
            }
        }
        // Disrupted entries expire by time.
        Ok(if disrupted.is_empty() { Next::Done } else { Next::After(Duration::from_secs(15)) })
    }
}
