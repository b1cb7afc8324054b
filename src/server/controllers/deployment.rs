//! The deployment controller: rolls a Deployment's pod template out through ReplicaSets, as
//! upstream's does.
//!
//! Each template gets its own ReplicaSet, named `<deployment>-<pod-template-hash>`, with a
//! `deployment.kubernetes.io/revision` annotation one above every other; rolling back means
//! the template equals an old ReplicaSet's again, which then gets the next revision.
//! `RollingUpdate` grows the new ReplicaSet within `maxSurge` and shrinks old ones while at
//! least `replicas - maxUnavailable` pods stay available; `Recreate` scales old ones to zero,
//! waits until their pods are gone, then scales the new one up. A paused Deployment only
//! scales. Status and the `Available`/`Progressing` conditions (incl.
//! `ProgressDeadlineExceeded`) follow upstream's wording, which `kubectl rollout status` reads.
//!
//! Invariant: it writes ReplicaSets and the Deployment's status and revision annotation,
//! never pods (the replicaset controller owns those).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::Ctx;
use super::pods::{adopt, controller_of, controller_ref, queue_controller_of};
use crate::runtime::events::{EventType, Recorder};
use crate::runtime::informer::next_change;
use crate::runtime::matching::{selector_is_empty, selector_matches};
use crate::runtime::queue::{Next, run_workers};
use crate::runtime::{Change, Informer, Key, WorkQueue};

pub const REVISION: &str = "deployment.kubernetes.io/revision";
const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
pub const HASH_LABEL: &str = "pod-template-hash";
const COMPONENT: &str = "deployment-controller";

/// Deployment annotations not copied to its ReplicaSets.
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

struct Controller {
    client: kube::Client,
    deployments: Arc<Informer<Deployment>>,
    replicasets: Arc<Informer<ReplicaSet>>,
    pods: Arc<Informer<Pod>>,
    recorder: Recorder,
}

pub async fn run(ctx: Arc<Ctx>, cancel: CancellationToken) {
    let deployments = ctx.informers.get::<Deployment>();
    let replicasets = ctx.informers.get::<ReplicaSet>();
    let pods = ctx.informers.get::<Pod>();
    let mut d_changes = deployments.subscribe();
    let mut rs_changes = replicasets.subscribe();
    let mut pod_changes = pods.subscribe();
    deployments.synced().await;
    replicasets.synced().await;
    pods.synced().await;
    let c = Arc::new(Controller {
        client: ctx.client.clone(),
        deployments,
        replicasets,
        pods,
        recorder: ctx.recorder(COMPONENT),
    });
    let queue = WorkQueue::<Key>::new();
    let all = |queue: &WorkQueue<Key>| c.deployments.list().iter().for_each(|d| queue.add(Key::of(d.as_ref())));
    all(&queue);
    let workers = {
        let c = c.clone();
        tokio::spawn(run_workers(COMPONENT, queue.clone(), 4, cancel.clone(), move |key: Key| {
            let c = c.clone();
            async move { c.reconcile(&key).await }
        }))
    };
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            ch = next_change(&mut d_changes) => match ch {
                Some(Change::Applied(d)) | Some(Change::Deleted(d)) => queue.add(Key::of(d.as_ref())),
                Some(Change::Resync) => all(&queue),
                None => break,
            },
            ch = next_change(&mut rs_changes) => match ch {
                Some(Change::Applied(rs)) | Some(Change::Deleted(rs)) => queue_controller_of(&rs.metadata, "Deployment", &c.deployments, |d| d.spec.as_ref().map(|s| s.selector.clone()), &queue),
                Some(Change::Resync) => all(&queue),
                None => break,
            },
            ch = next_change(&mut pod_changes) => match ch {
                // Recreate waits for the old pods to be gone.
                Some(Change::Deleted(p)) => {
                    let ns = p.metadata.namespace.as_deref().unwrap_or("");
                    if let Some(r) = controller_ref(&p.metadata).filter(|r| r.kind == "ReplicaSet")
                        && let Some(rs) = c.replicasets.get(ns, &r.name) {
                            queue_controller_of(&rs.metadata, "Deployment", &c.deployments, |d| d.spec.as_ref().map(|s| s.selector.clone()), &queue);
                        }
                }
                Some(_) => {}
                None => break,
            },
        }
    }
    let _ = workers.await;
}

/// `maxSurge`/`maxUnavailable` against `replicas`, percentages rounded up or down.
fn resolve(v: Option<&IntOrString>, replicas: i32, default: &str, round_up: bool) -> i32 {
    match v {
        Some(IntOrString::Int(i)) => *i,
        Some(IntOrString::String(s)) => percent(s, replicas, round_up),
        None => percent(default, replicas, round_up),
    }
}

fn percent(s: &str, replicas: i32, round_up: bool) -> i32 {
    let Some(p) = s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) else {
        return s.parse().unwrap_or(0);
    };
    let v = p * replicas as i64;
    (if round_up { (v + 99) / 100 } else { v / 100 }) as i32
}

fn replicas_of(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// (maxSurge, maxUnavailable) resolved; both zero means one unavailable, as upstream.
fn fenceposts(d: &Deployment) -> (i32, i32) {
    let replicas = replicas_of(d);
    let ru = d.spec.as_ref().and_then(|s| s.strategy.as_ref()).and_then(|s| s.rolling_update.as_ref());
    if !is_rolling(d) {
        return (0, 0);
    }
    let surge = resolve(ru.and_then(|r| r.max_surge.as_ref()), replicas, "25%", true);
    let unavailable = resolve(ru.and_then(|r| r.max_unavailable.as_ref()), replicas, "25%", false);
    if surge == 0 && unavailable == 0 { (0, 1) } else { (surge, unavailable.min(replicas)) }
}

fn is_rolling(d: &Deployment) -> bool {
    d.spec.as_ref().and_then(|s| s.strategy.as_ref()).and_then(|s| s.type_.as_deref()) != Some("Recreate")
}

fn revision(rs: &ReplicaSet) -> i64 {
    rs.metadata.annotations.as_ref().and_then(|a| a.get(REVISION)).and_then(|r| r.parse().ok()).unwrap_or(0)
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn status_of(rs: &ReplicaSet) -> (i32, i32, i32) {
    rs.status
        .as_ref()
        .map(|s| (s.replicas, s.ready_replicas.unwrap_or(0), s.available_replicas.unwrap_or(0)))
        .unwrap_or((0, 0, 0))
}

fn created(rs: &ReplicaSet) -> Option<DateTime<Utc>> {
    rs.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

/// A template as JSON without the `pod-template-hash` label, for comparing.
fn template_key(t: Option<&PodTemplateSpec>) -> Value {
    let mut v = serde_json::to_value(t).unwrap_or(Value::Null);
    if let Some(labels) = v.pointer_mut("/metadata/labels").and_then(|l| l.as_object_mut()) {
        labels.remove(HASH_LABEL);
        if labels.is_empty()
            && let Some(m) = v.pointer_mut("/metadata").and_then(|m| m.as_object_mut())
        {
            m.remove("labels");
        }
    }
    v
}

/// The `pod-template-hash` of a template: FNV-1a over its JSON (and the collision count),
/// rendered in upstream's alphabet of consonants and digits.
pub fn template_hash(t: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut h: u32 = 0x811c9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= *b as u32;
            h = h.wrapping_mul(0x01000193);
        }
    };
    feed(serde_json::to_string(&template_key(Some(t))).unwrap_or_default().as_bytes());
    if let Some(c) = collision_count {
        feed(&c.to_le_bytes());
    }
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string().bytes().map(|b| ALPHANUMS[b as usize % ALPHANUMS.len()] as char).collect()
}

fn now_str() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn condition<'a>(d: &'a Deployment, type_: &str) -> Option<&'a k8s_openapi::api::apps::v1::DeploymentCondition> {
    d.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == type_)
}

impl Controller {
    fn rs_api(&self, ns: &str) -> Api<ReplicaSet> {
        Api::namespaced(self.client.clone(), ns)
    }

    async fn reconcile(&self, key: &Key) -> Result<Next, kube::Error> {
        let Some(d) = self.deployments.get(&key.namespace, &key.name) else { return Ok(Next::Done) };
        if d.metadata.deletion_timestamp.is_some() {
            return Ok(Next::Done);
        }
        let Some(spec) = d.spec.as_ref() else { return Ok(Next::Done) };
        if selector_is_empty(&spec.selector) {
            self.recorder.record(
                d.as_ref(),
                EventType::Warning,
                "SelectingAll",
                "This deployment is selecting all pods. A non-empty selector is required.".into(),
            );
            return Ok(Next::Done);
        }
        let uid = d.metadata.uid.clone().unwrap_or_default();
        let mut all: Vec<ReplicaSet> = self.replicasets.controlled_by(&uid).iter().map(|r| (**r).clone()).collect();
        for rs in self.replicasets.orphans_in(&key.namespace) {
            let labels = rs.metadata.labels.clone().unwrap_or_default();
            if controller_ref(&rs.metadata).is_none()
                && rs.metadata.deletion_timestamp.is_none()
                && selector_matches(&spec.selector, &labels)
                && let Some(adopted) =
                    adopt(&self.rs_api(&key.namespace), rs.as_ref(), controller_of(d.as_ref())).await?
            {
                all.push(adopted);
            }
        }
        all.sort_by(|a, b| created(a).cmp(&created(b)).then_with(|| a.metadata.name.cmp(&b.metadata.name)));

        if spec.paused == Some(true) {
            let new = self.new_rs(&d, &mut all, false).await?;
            self.scale_if_needed(&d, &mut all, new.as_deref()).await?;
            return self.sync_status(&d, &all, new.as_deref(), None).await;
        }
        if self.is_scaling_event(&d, &all) {
            let new = self.new_rs(&d, &mut all, false).await?;
            self.scale_if_needed(&d, &mut all, new.as_deref()).await?;
            return self.sync_status(&d, &all, new.as_deref(), None).await;
        }
        if is_rolling(&d) { self.rolling(&d, all).await } else { self.recreate(&d, all).await }
    }

    /// Whether `spec.replicas` changed without a template change: an active ReplicaSet's
    /// `desired-replicas` annotation disagrees.
    fn is_scaling_event(&self, d: &Deployment, all: &[ReplicaSet]) -> bool {
        let want = replicas_of(d).to_string();
        all.iter().filter(|rs| spec_replicas(rs) > 0).any(|rs| {
            rs.metadata.annotations.as_ref().and_then(|a| a.get(DESIRED_REPLICAS)).is_some_and(|v| *v != want)
        })
    }

    /// Finds the ReplicaSet of the current template (bumping its revision when it is an old
    /// one coming back), creating it when `create`. Keeps `all` up to date.
    async fn new_rs(
        &self,
        d: &Deployment,
        all: &mut Vec<ReplicaSet>,
        create: bool,
    ) -> Result<Option<Box<ReplicaSet>>, kube::Error> {
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let spec = d.spec.clone().unwrap_or_default();
        let want = template_key(Some(&spec.template));
        let existing =
            all.iter().position(|rs| template_key(rs.spec.as_ref().and_then(|s| s.template.as_ref())) == want);
        let max_old =
            all.iter().enumerate().filter(|(i, _)| Some(*i) != existing).map(|(_, rs)| revision(rs)).max().unwrap_or(0);
        let new_revision = max_old + 1;
        let (surge, _) = fenceposts(d);
        let replicas = replicas_of(d);

        if let Some(i) = existing {
            let rs = &all[i];
            let mut annotations = rs.metadata.annotations.clone().unwrap_or_default();
            let before = annotations.clone();
            copy_annotations(d, &mut annotations);
            let current_rev = revision(rs);
            if current_rev < new_revision {
                annotations.insert(REVISION.into(), new_revision.to_string());
                if current_rev > 0 {
                    let mut history: Vec<String> = annotations
                        .get(REVISION_HISTORY)
                        .map(|h| h.split(',').map(String::from).filter(|s| !s.is_empty()).collect())
                        .unwrap_or_default();
                    history.push(current_rev.to_string());
                    annotations.insert(REVISION_HISTORY.into(), history.join(","));
                }
            }
            let min_ready_differs = rs.spec.as_ref().and_then(|s| s.min_ready_seconds) != spec.min_ready_seconds;
            let name = rs.metadata.name.clone().unwrap_or_default();
            if annotations != before || min_ready_differs {
                let patch = json!({
                    "metadata": {"annotations": annotations},
                    "spec": {"minReadySeconds": spec.min_ready_seconds},
                });
                let updated = self.rs_api(&ns).patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
                all[i] = updated;
            }
            let rev = revision(&all[i]);
            self.set_deployment_revision(d, rev).await?;
            if condition(d, "Progressing").is_none() && spec.progress_deadline_seconds.is_some() {
                self.patch_conditions(
                    d,
                    vec![progressing("True", "FoundNewReplicaSet", &format!("Found new replica set \"{name}\""), None)],
                )
                .await?;
            }
            return Ok(Some(Box::new(all[i].clone())));
        }
        if !create {
            return Ok(None);
        }
        let collision = d.status.as_ref().and_then(|s| s.collision_count);
        let hash = template_hash(&spec.template, collision);
        let mut template = spec.template.clone();
        template
            .metadata
            .get_or_insert_with(Default::default)
            .labels
            .get_or_insert_with(Default::default)
            .insert(HASH_LABEL.into(), hash.clone());
        let mut selector = spec.selector.clone();
        selector.match_labels.get_or_insert_with(Default::default).insert(HASH_LABEL.into(), hash.clone());
        let name = format!("{}-{hash}", d.metadata.name.as_deref().unwrap_or(""));
        let start = if is_rolling(d) {
            let current: i32 = all.iter().map(spec_replicas).sum();
            let max_total = replicas + surge;
            if current >= max_total { 0 } else { (max_total - current).min(replicas) }
        } else {
            replicas
        };
        let mut annotations = BTreeMap::new();
        copy_annotations(d, &mut annotations);
        annotations.insert(REVISION.into(), new_revision.to_string());
        annotations.insert(DESIRED_REPLICAS.into(), replicas.to_string());
        annotations.insert(MAX_REPLICAS.into(), (replicas + surge).to_string());
        let rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
                annotations: Some(annotations),
                owner_references: Some(vec![controller_of(d)]),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(start),
                min_ready_seconds: spec.min_ready_seconds,
                selector,
                template: Some(template),
            }),
            status: None,
        };
        match self.rs_api(&ns).create(&PostParams::default(), &rs).await {
            Ok(created) => {
                self.recorder.record(
                    d,
                    EventType::Normal,
                    "ScalingReplicaSet",
                    format!("Scaled up replica set {name} from 0 to {start}"),
                );
                self.set_deployment_revision(d, new_revision).await?;
                if spec.progress_deadline_seconds.is_some() {
                    self.patch_conditions(
                        d,
                        vec![progressing(
                            "True",
                            "NewReplicaSetCreated",
                            &format!("Created new replica set \"{name}\""),
                            None,
                        )],
                    )
                    .await?;
                }
                all.push(created.clone());
                Ok(Some(Box::new(created)))
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                // A ReplicaSet of that name exists with another template: a hash collision.
                let existing = self.rs_api(&ns).get_opt(&name).await?;
                let same = existing.as_ref().is_some_and(|rs| {
                    controller_ref(&rs.metadata).is_some_and(|r| Some(&r.uid) == d.metadata.uid.as_ref())
                        && template_key(rs.spec.as_ref().and_then(|s| s.template.as_ref())) == want
                });
                if !same {
                    let count = collision.unwrap_or(0) + 1;
                    let api: Api<Deployment> = Api::namespaced(self.client.clone(), &ns);
                    let patch = json!({"status": {"collisionCount": count}});
                    api.patch_status(
                        d.metadata.name.as_deref().unwrap_or(""),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await?;
                }
                Err(kube::Error::Api(e))
            }
            Err(e) => Err(e),
        }
    }

    async fn set_deployment_revision(&self, d: &Deployment, rev: i64) -> Result<(), kube::Error> {
        let current = d.metadata.annotations.as_ref().and_then(|a| a.get(REVISION)).cloned();
        if current.as_deref() == Some(rev.to_string().as_str()) {
            return Ok(());
        }
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), d.metadata.namespace.as_deref().unwrap_or(""));
        let patch = json!({"metadata": {"annotations": {REVISION: rev.to_string()}}});
        api.patch(d.metadata.name.as_deref().unwrap_or(""), &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
    }

    /// Sets `spec.replicas` of `rs` (and the replica annotations), with an event.
    async fn scale(&self, d: &Deployment, rs: &mut ReplicaSet, to: i32) -> Result<(), kube::Error> {
        let from = spec_replicas(rs);
        let (surge, _) = fenceposts(d);
        let replicas = replicas_of(d);
        let annotations = rs.metadata.annotations.clone().unwrap_or_default();
        let desired_ok = annotations.get(DESIRED_REPLICAS) == Some(&replicas.to_string());
        let max_ok = annotations.get(MAX_REPLICAS) == Some(&(replicas + surge).to_string());
        if from == to && desired_ok && max_ok {
            return Ok(());
        }
        let ns = rs.metadata.namespace.clone().unwrap_or_default();
        let name = rs.metadata.name.clone().unwrap_or_default();
        let patch = json!({
            "metadata": {"annotations": {DESIRED_REPLICAS: replicas.to_string(), MAX_REPLICAS: (replicas + surge).to_string()}},
            "spec": {"replicas": to},
        });
        *rs = self.rs_api(&ns).patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        if from != to {
            let verb = if to > from { "up" } else { "down" };
            self.recorder.record(
                d,
                EventType::Normal,
                "ScalingReplicaSet",
                format!("Scaled {verb} replica set {name} from {from} to {to}"),
            );
        }
        Ok(())
    }

    /// A scaling event or a paused Deployment: the new ReplicaSet alone gets the replicas, or
    /// with several active ones the change is spread in proportion to their sizes.
    async fn scale_if_needed(
        &self,
        d: &Deployment,
        all: &mut [ReplicaSet],
        new: Option<&ReplicaSet>,
    ) -> Result<(), kube::Error> {
        let replicas = replicas_of(d);
        let active: Vec<usize> = (0..all.len()).filter(|i| spec_replicas(&all[*i]) > 0).collect();
        let new_idx = new.and_then(|n| all.iter().position(|r| r.metadata.uid == n.metadata.uid));
        if active.len() <= 1 {
            let target = new_idx.or(active.first().copied());
            if let Some(i) = target {
                self.scale(d, &mut all[i], replicas).await?;
            }
            return Ok(());
        }
        let (surge, _) = fenceposts(d);
        let allowed = replicas + surge;
        let total: i32 = active.iter().map(|i| spec_replicas(&all[*i])).sum();
        if total == allowed || total == 0 {
            return Ok(());
        }
        let mut targets: Vec<(usize, i32)> = active
            .iter()
            .map(|i| (*i, (spec_replicas(&all[*i]) as i64 * allowed as i64 / total as i64) as i32))
            .collect();
        let leftover = allowed - targets.iter().map(|t| t.1).sum::<i32>();
        // The leftover goes to the new ReplicaSet, else to the largest.
        let lucky = new_idx
            .filter(|i| active.contains(i))
            .unwrap_or_else(|| *active.iter().max_by_key(|i| spec_replicas(&all[**i])).unwrap_or(&active[0]));
        for t in targets.iter_mut() {
            if t.0 == lucky {
                t.1 = (t.1 + leftover).max(0);
            }
        }
        for (i, to) in targets {
            self.scale(d, &mut all[i], to).await?;
        }
        Ok(())
    }

    async fn rolling(&self, d: &Deployment, mut all: Vec<ReplicaSet>) -> Result<Next, kube::Error> {
        let new = self.new_rs(d, &mut all, true).await?;
        let Some(new) = new else { return Ok(Next::Done) };
        let new_uid = new.metadata.uid.clone();
        let replicas = replicas_of(d);
        let (surge, max_unavailable) = fenceposts(d);
        let new_idx = all.iter().position(|r| r.metadata.uid == new_uid).unwrap_or(0);

        // Scale up the new ReplicaSet within maxSurge.
        let new_replicas = spec_replicas(&all[new_idx]);
        if new_replicas > replicas {
            self.scale(d, &mut all[new_idx], replicas).await?;
            return self.sync_status(d, &all, Some(&all[new_idx].clone()), None).await;
        }
        if new_replicas < replicas {
            let current: i32 = all.iter().map(spec_replicas).sum();
            let max_total = replicas + surge;
            if current < max_total {
                let to = new_replicas + (max_total - current).min(replicas - new_replicas);
                self.scale(d, &mut all[new_idx], to).await?;
                return self.sync_status(d, &all, Some(&all[new_idx].clone()), None).await;
            }
        }

        // Scale down old ReplicaSets while enough pods stay available.
        let olds: Vec<usize> = (0..all.len()).filter(|i| *i != new_idx && spec_replicas(&all[*i]) > 0).collect();
        if !olds.is_empty() {
            let all_pods: i32 = all.iter().map(spec_replicas).sum();
            let min_available = replicas - max_unavailable;
            let new_unavailable = spec_replicas(&all[new_idx]) - status_of(&all[new_idx]).2;
            let max_scaled_down = all_pods - min_available - new_unavailable;
            if max_scaled_down > 0 {
                let mut targets: HashMap<usize, i32> = olds.iter().map(|i| (*i, spec_replicas(&all[*i]))).collect();
                // Unhealthy old pods go first: they cost no availability.
                let mut scaled = 0;
                for i in &olds {
                    if scaled >= max_scaled_down {
                        break;
                    }
                    let (cur, avail) = (targets[i], status_of(&all[*i]).2);
                    if cur <= avail {
                        continue;
                    }
                    let n = (max_scaled_down - scaled).min(cur - avail);
                    targets.insert(*i, cur - n);
                    scaled += n;
                }
                let available: i32 = all.iter().map(|r| status_of(r).2).sum();
                if available > min_available {
                    let mut budget = (available - min_available).min(max_scaled_down - scaled);
                    for i in &olds {
                        if budget <= 0 {
                            break;
                        }
                        let cur = targets[i];
                        let n = cur.min(budget);
                        targets.insert(*i, cur - n);
                        budget -= n;
                    }
                }
                let mut changed = false;
                for i in olds {
                    if targets[&i] != spec_replicas(&all[i]) {
                        self.scale(d, &mut all[i], targets[&i]).await?;
                        changed = true;
                    }
                }
                if changed {
                    return self.sync_status(d, &all, Some(&all[new_idx].clone()), None).await;
                }
            }
        }
        let new_rs = all[new_idx].clone();
        let next = self.sync_status(d, &all, Some(&new_rs), None).await?;
        if self.complete(d, &all, &new_rs) {
            self.cleanup(d, &all, &new_rs).await?;
        }
        Ok(next)
    }

    async fn recreate(&self, d: &Deployment, mut all: Vec<ReplicaSet>) -> Result<Next, kube::Error> {
        let new = self.new_rs(d, &mut all, false).await?;
        let new_uid = new.as_ref().and_then(|n| n.metadata.uid.clone());
        let mut scaled = false;
        for rs in all.iter_mut() {
            if rs.metadata.uid != new_uid && spec_replicas(rs) > 0 {
                self.scale(d, rs, 0).await?;
                scaled = true;
            }
        }
        if scaled {
            return self.sync_status(d, &all, new.as_deref(), None).await;
        }
        // Wait until every old pod has stopped.
        let old_running = all
            .iter()
            .filter(|rs| rs.metadata.uid != new_uid)
            .flat_map(|rs| self.pods.controlled_by(rs.metadata.uid.as_deref().unwrap_or("")))
            .any(|p| {
                let phase = p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("");
                phase != "Succeeded" && phase != "Failed"
            });
        if old_running {
            return self.sync_status(d, &all, new.as_deref(), None).await;
        }
        let new = match new {
            Some(n) => n,
            None => match self.new_rs(d, &mut all, true).await? {
                Some(n) => n,
                None => return Ok(Next::Done),
            },
        };
        if let Some(i) = all.iter().position(|r| r.metadata.uid == new.metadata.uid) {
            self.scale(d, &mut all[i], replicas_of(d)).await?;
            let new_rs = all[i].clone();
            let next = self.sync_status(d, &all, Some(&new_rs), None).await?;
            if self.complete(d, &all, &new_rs) {
                self.cleanup(d, &all, &new_rs).await?;
            }
            return Ok(next);
        }
        Ok(Next::Done)
    }

    fn complete(&self, d: &Deployment, all: &[ReplicaSet], new: &ReplicaSet) -> bool {
        let replicas = replicas_of(d);
        let (n_replicas, _, n_available) = status_of(new);
        let total: i32 = all.iter().map(|r| status_of(r).0).sum();
        n_replicas == replicas && n_available == replicas && total == replicas
    }

    /// Deletes old, empty ReplicaSets beyond `revisionHistoryLimit` (oldest revisions first).
    async fn cleanup(&self, d: &Deployment, all: &[ReplicaSet], new: &ReplicaSet) -> Result<(), kube::Error> {
        let limit = d.spec.as_ref().and_then(|s| s.revision_history_limit).unwrap_or(10).max(0) as usize;
        let mut old: Vec<&ReplicaSet> = all
            .iter()
            .filter(|r| r.metadata.uid != new.metadata.uid && r.metadata.deletion_timestamp.is_none())
            .collect();
        if old.len() <= limit {
            return Ok(());
        }
        old.sort_by_key(|r| revision(r));
        let excess = old.len() - limit;
        for rs in old.into_iter().filter(|r| spec_replicas(r) == 0 && status_of(r).0 == 0).take(excess) {
            let dp = DeleteParams {
                preconditions: Some(Preconditions { uid: rs.metadata.uid.clone(), resource_version: None }),
                ..Default::default()
            };
            match self
                .rs_api(rs.metadata.namespace.as_deref().unwrap_or(""))
                .delete(rs.metadata.name.as_deref().unwrap_or(""), &dp)
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn patch_conditions(&self, d: &Deployment, updates: Vec<Value>) -> Result<(), kube::Error> {
        let mut conditions: Vec<Value> = d
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .map(|c| c.iter().filter_map(|c| serde_json::to_value(c).ok()).collect())
            .unwrap_or_default();
        for u in updates {
            merge_condition(&mut conditions, u);
        }
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), d.metadata.namespace.as_deref().unwrap_or(""));
        let patch = json!({"status": {"conditions": conditions}});
        api.patch_status(d.metadata.name.as_deref().unwrap_or(""), &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
    }

    /// Writes replica counts and conditions; returns when to look again (the progress deadline).
    async fn sync_status(
        &self,
        d: &Deployment,
        all: &[ReplicaSet],
        new: Option<&ReplicaSet>,
        _: Option<()>,
    ) -> Result<Next, kube::Error> {
        // Re-read: earlier writes of this pass may have changed the Deployment.
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), d.metadata.namespace.as_deref().unwrap_or(""));
        let name = d.metadata.name.clone().unwrap_or_default();
        let current = self
            .deployments
            .get(d.metadata.namespace.as_deref().unwrap_or(""), &name)
            .map(|c| (*c).clone())
            .unwrap_or_else(|| d.clone());
        let spec = current.spec.clone().unwrap_or_default();
        let replicas = replicas_of(&current);
        let (_, max_unavailable) = fenceposts(&current);
        let status_replicas: i32 = all.iter().map(|r| status_of(r).0).sum();
        let ready: i32 = all.iter().map(|r| status_of(r).1).sum();
        let available: i32 = all.iter().map(|r| status_of(r).2).sum();
        let updated = new.map(|n| status_of(n).0).unwrap_or(0);
        let total_spec: i32 = all.iter().map(spec_replicas).sum();
        let unavailable = (total_spec - available).max(0);
        let old_status = current.status.clone().unwrap_or_default();

        let mut conditions: Vec<Value> = old_status
            .conditions
            .as_ref()
            .map(|c| c.iter().filter_map(|c| serde_json::to_value(c).ok()).collect())
            .unwrap_or_default();
        let (avail_status, avail_reason, avail_msg) = if available >= replicas - max_unavailable {
            ("True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
        } else {
            ("False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability.")
        };
        merge_condition(
            &mut conditions,
            json!({"type": "Available", "status": avail_status, "reason": avail_reason, "message": avail_msg}),
        );

        let mut next = Next::Done;
        let paused = spec.paused == Some(true);
        let prog = condition(&current, "Progressing").cloned();
        let prog_reason = prog.as_ref().and_then(|c| c.reason.clone()).unwrap_or_default();
        let new_name = new.and_then(|n| n.metadata.name.clone()).unwrap_or_default();
        if let Some(deadline) = spec.progress_deadline_seconds {
            if paused {
                if prog_reason != "DeploymentPaused" {
                    merge_condition(
                        &mut conditions,
                        progressing("Unknown", "DeploymentPaused", "Deployment is paused", None),
                    );
                }
            } else if prog_reason == "DeploymentPaused" {
                merge_condition(
                    &mut conditions,
                    progressing("Unknown", "DeploymentResumed", "Deployment is resumed", None),
                );
            } else if updated == replicas && status_replicas == replicas && available == replicas && new.is_some() {
                if prog_reason != "NewReplicaSetAvailable" {
                    let msg = format!("ReplicaSet \"{new_name}\" has successfully progressed.");
                    merge_condition(&mut conditions, progressing("True", "NewReplicaSetAvailable", &msg, None));
                }
            } else {
                let old_updated = old_status.updated_replicas.unwrap_or(0);
                let old_ready = old_status.ready_replicas.unwrap_or(0);
                let old_available = old_status.available_replicas.unwrap_or(0);
                let old_total = old_status.replicas.unwrap_or(0);
                let progressed = updated > old_updated
                    || ready > old_ready
                    || available > old_available
                    || (status_replicas - updated) < (old_total - old_updated);
                if progressed && new.is_some() {
                    let msg = format!("ReplicaSet \"{new_name}\" is progressing.");
                    merge_condition(&mut conditions, progressing("True", "ReplicaSetUpdated", &msg, None));
                    next = Next::After(Duration::from_secs(deadline.max(1) as u64));
                } else if prog_reason != "ProgressDeadlineExceeded" {
                    let last =
                        prog.as_ref().and_then(|c| c.last_update_time.as_ref()).map(|t| t.0).unwrap_or_else(Utc::now);
                    let ends = last + chrono::Duration::seconds(deadline as i64);
                    if ends <= Utc::now() && new.is_some() {
                        let msg = format!("ReplicaSet \"{new_name}\" has timed out progressing.");
                        merge_condition(&mut conditions, progressing("False", "ProgressDeadlineExceeded", &msg, None));
                        self.recorder.record(&current, EventType::Warning, "ProgressDeadlineExceeded", msg);
                    } else {
                        next =
                            Next::After((ends - Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(100));
                    }
                }
            }
        }
        // A failure of the new ReplicaSet to create pods shows on the Deployment.
        let failure = new
            .and_then(|n| n.status.as_ref())
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "ReplicaFailure"));
        conditions.retain(|c| c.get("type") != Some(&json!("ReplicaFailure")));
        if let Some(f) = failure {
            conditions
                .push(json!({"type": "ReplicaFailure", "status": f.status, "reason": f.reason, "message": f.message,
                "lastUpdateTime": now_str(), "lastTransitionTime": f.last_transition_time}));
        }

        let nz = |n: i32| if n == 0 { Value::Null } else { json!(n) };
        let desired = json!({
            "observedGeneration": current.metadata.generation,
            "replicas": nz(status_replicas),
            "updatedReplicas": nz(updated),
            "readyReplicas": nz(ready),
            "availableReplicas": nz(available),
            "unavailableReplicas": nz(unavailable),
            "conditions": conditions,
        });
        let old = serde_json::to_value(&old_status).unwrap_or(Value::Null);
        let differs = desired.as_object().is_some_and(|m| {
            m.iter().any(|(k, v)| {
                let o = old.get(k).unwrap_or(&Value::Null);
                if k == "conditions" { !same_conditions(o, v) } else { o != v }
            })
        });
        if differs {
            match api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&json!({"status": desired}))).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => return Ok(Next::Done),
                Err(e) => return Err(e),
            }
        }
        Ok(next)
    }
}

/// Conditions equal apart from their timestamps.
fn same_conditions(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| -> Vec<Value> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                let mut c = c.clone();
                if let Some(o) = c.as_object_mut() {
                    o.remove("lastUpdateTime");
                    o.remove("lastTransitionTime");
                    o.retain(|_, v| !v.is_null());
                }
                c
            })
            .collect()
    };
    let (mut x, mut y) = (strip(a), strip(b));
    let by_type = |c: &Value| c.get("type").and_then(|t| t.as_str()).unwrap_or("").to_string();
    x.sort_by_key(by_type);
    y.sort_by_key(by_type);
    x == y
}

fn progressing(status: &str, reason: &str, message: &str, _: Option<()>) -> Value {
    json!({"type": "Progressing", "status": status, "reason": reason, "message": message})
}

/// Replaces the condition of the same type: `lastTransitionTime` moves only when the status
/// changes, `lastUpdateTime` whenever reason or message change.
fn merge_condition(conditions: &mut Vec<Value>, mut new: Value) {
    let now = now_str();
    let type_ = new.get("type").cloned();
    match conditions.iter_mut().find(|c| c.get("type") == type_.as_ref()) {
        Some(old) => {
            let same_status = old.get("status") == new.get("status");
            let same_text =
                same_status && old.get("reason") == new.get("reason") && old.get("message") == new.get("message");
            let transition =
                if same_status { old.get("lastTransitionTime").cloned().unwrap_or(json!(now)) } else { json!(now) };
            let update = if same_text && new.get("reason") != Some(&json!("ReplicaSetUpdated")) {
                old.get("lastUpdateTime").cloned().unwrap_or(json!(now))
            } else {
                json!(now)
            };
            new["lastTransitionTime"] = transition;
            new["lastUpdateTime"] = update;
            *old = new;
        }
        None => {
            new["lastTransitionTime"] = json!(now);
            new["lastUpdateTime"] = json!(now);
            conditions.push(new);
        }
    }
}

fn copy_annotations(d: &Deployment, into: &mut BTreeMap<String, String>) {
    for (k, v) in d.metadata.annotations.iter().flatten() {
        if !NOT_COPIED.contains(&k.as_str()) {
            into.insert(k.clone(), v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_as_upstream() {
        assert_eq!(percent("25%", 3, true), 1);
        assert_eq!(percent("25%", 3, false), 0);
        assert_eq!(percent("50%", 5, true), 3);
        assert_eq!(percent("2", 5, true), 2);
    }

    #[test]
    fn hash_ignores_its_own_label_and_changes_with_the_template() {
        let mut t: PodTemplateSpec = serde_json::from_value(json!({"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "a"}]}}))
        .unwrap();
        let h = template_hash(&t, None);
        assert!(h.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
        t.metadata.as_mut().unwrap().labels.as_mut().unwrap().insert(HASH_LABEL.into(), h.clone());
        assert_eq!(template_hash(&t, None), h);
        assert_ne!(template_hash(&t, Some(1)), h);
        t.spec.as_mut().unwrap().containers[0].image = Some("b".into());
        assert_ne!(template_hash(&t, None), h);
    }
}
