//! The replicaset and replicationcontroller controllers: keep `spec.replicas` pods matching the
//! selector alive, adopting orphans that match and releasing pods that stopped matching, and
//! report `status` (replicas, fully labeled, ready, available, observed generation).
//!
//! Creation is batched with upstream's slow start (1, 2, 4, ... pods at once, at most 500 per
//! pass), so a template the API rejects costs one failed call, not `replicas` of them; a
//! failed create sets the `ReplicaFailure` condition. [`Expectations`] keep a stale cache from
//! creating or deleting twice.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::future::join_all;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::Ctx;
use super::expectations::Expectations;
use super::pods::{
    adopt, controller_of, controller_ref, deletion_order, from_template, is_active, is_available, is_ready,
    queue_controller_of, release,
};
use crate::runtime::events::{EventType, Recorder};
use crate::runtime::informer::{Cached, next_change};
use crate::runtime::matching::selector_matches;
use crate::runtime::queue::{Next, run_workers};
use crate::runtime::{Change, Informer, Key, WorkQueue};

/// Most pods created or deleted in one pass (upstream's `burstReplicas`).
const BURST: usize = 500;

/// What the controller needs to know of a ReplicaSet or a ReplicationController.
pub trait Replicated: Cached + kube::Resource<Scope = k8s_openapi::NamespaceResourceScope> {
    const COMPONENT: &'static str;
    fn desired(&self) -> i32;
    fn label_selector(&self) -> Option<LabelSelector>;
    fn template(&self) -> Option<&PodTemplateSpec>;
    fn min_ready_seconds(&self) -> i32;
    fn status_json(&self) -> Value;
}

impl Replicated for ReplicaSet {
    const COMPONENT: &'static str = "replicaset-controller";
    fn desired(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn label_selector(&self) -> Option<LabelSelector> {
        self.spec.as_ref().map(|s| s.selector.clone())
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().and_then(|s| s.template.as_ref())
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0)
    }
    fn status_json(&self) -> Value {
        serde_json::to_value(&self.status).unwrap_or(Value::Null)
    }
}

impl Replicated for ReplicationController {
    const COMPONENT: &'static str = "replication-controller";
    fn desired(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn label_selector(&self) -> Option<LabelSelector> {
        let sel = self.spec.as_ref().and_then(|s| s.selector.clone()).filter(|s| !s.is_empty())?;
        Some(LabelSelector { match_labels: Some(sel), match_expressions: None })
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().and_then(|s| s.template.as_ref())
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0)
    }
    fn status_json(&self) -> Value {
        serde_json::to_value(&self.status).unwrap_or(Value::Null)
    }
}

struct Controller<R: Cached> {
    client: kube::Client,
    owners: Arc<Informer<R>>,
    pods: Arc<Informer<Pod>>,
    expectations: Expectations,
    recorder: Recorder,
}

pub async fn run_replicasets(ctx: Arc<Ctx>, cancel: CancellationToken) {
    run::<ReplicaSet>(ctx, cancel).await
}

pub async fn run_replication_controllers(ctx: Arc<Ctx>, cancel: CancellationToken) {
    run::<ReplicationController>(ctx, cancel).await
}

async fn run<R: Replicated + serde::Serialize>(ctx: Arc<Ctx>, cancel: CancellationToken)
where
    R::DynamicType: Default,
{
    let owners = ctx.informers.get::<R>();
    let pods = ctx.informers.get::<Pod>();
    let mut owner_changes = owners.subscribe();
    let mut pod_changes = pods.subscribe();
    owners.synced().await;
    pods.synced().await;
    let c = Arc::new(Controller {
        client: ctx.client.clone(),
        owners,
        pods,
        expectations: Expectations::default(),
        recorder: ctx.recorder(R::COMPONENT),
    });
    let queue = WorkQueue::<Key>::new();
    for o in c.owners.list() {
        queue.add(Key::of(o.as_ref()));
    }
    let workers = {
        let c = c.clone();
        tokio::spawn(run_workers(R::COMPONENT, queue.clone(), 4, cancel.clone(), move |key: Key| {
            let c = c.clone();
            async move { c.reconcile(&key).await }
        }))
    };
    let kind = R::kind(&()).into_owned();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            ch = next_change(&mut owner_changes) => match ch {
                Some(Change::Applied(o)) | Some(Change::Deleted(o)) => queue.add(Key::of(o.as_ref())),
                Some(Change::Resync) => c.owners.list().iter().for_each(|o| queue.add(Key::of(o.as_ref()))),
                None => break,
            },
            ch = next_change(&mut pod_changes) => match ch {
                Some(Change::Applied(p)) | Some(Change::Deleted(p)) => {
                    queue_controller_of(&p.metadata, &kind, &c.owners, |o| o.label_selector(), &queue)
                }
                Some(Change::Resync) => c.owners.list().iter().for_each(|o| queue.add(Key::of(o.as_ref()))),
                None => break,
            },
        }
    }
    let _ = workers.await;
}

impl<R: Replicated + serde::Serialize> Controller<R>
where
    R::DynamicType: Default,
{
    async fn reconcile(&self, key: &Key) -> Result<Next, kube::Error> {
        let Some(owner) = self.owners.get(&key.namespace, &key.name) else {
            self.expectations.forget(key);
            return Ok(Next::Done);
        };
        let uid = owner.meta().uid.clone().unwrap_or_default();
        let selector = owner.label_selector();
        let pods_api: Api<Pod> = Api::namespaced(self.client.clone(), &key.namespace);
        let deleting = owner.meta().deletion_timestamp.is_some();

        let mut mine: Vec<Arc<Pod>> = self.pods.controlled_by(&uid);
        // Release pods that no longer match; adopt orphans that do.
        if let Some(sel) = &selector {
            let mut kept = Vec::with_capacity(mine.len());
            for p in mine {
                let labels = p.metadata.labels.clone().unwrap_or_default();
                if selector_matches(sel, &labels) || deleting {
                    kept.push(p);
                } else {
                    release(&pods_api, p.as_ref(), &uid).await?;
                }
            }
            mine = kept;
            if !deleting {
                for p in self.pods.orphans_in(&key.namespace) {
                    if controller_ref(&p.metadata).is_none()
                        && p.metadata.deletion_timestamp.is_none()
                        && is_active(&p)
                        && selector_matches(sel, &p.metadata.labels.clone().unwrap_or_default())
                        && let Some(adopted) = adopt(&pods_api, p.as_ref(), controller_of(owner.as_ref())).await?
                    {
                        mine.push(Arc::new(adopted));
                    }
                }
            }
        }
        let active: Vec<Arc<Pod>> = mine.into_iter().filter(|p| is_active(p)).collect();

        let mut failure: Option<String> = None;
        let seen =
            |name: &str| self.pods.get(&key.namespace, name).is_some_and(|p| p.metadata.deletion_timestamp.is_none());
        if !deleting && selector.is_some() && self.expectations.satisfied(key, seen) {
            failure = self.manage(key, owner.as_ref(), &active, &pods_api).await;
        }
        self.update_status(key, owner.as_ref(), &active, failure).await
    }

    /// Creates or deletes pods towards `spec.replicas`; returns a create failure, if any.
    async fn manage(&self, key: &Key, owner: &R, active: &[Arc<Pod>], api: &Api<Pod>) -> Option<String> {
        let want = owner.desired().max(0) as usize;
        if active.len() < want {
            let template = owner.template()?;
            let mut left = (want - active.len()).min(BURST);
            let mut batch = 1;
            let prefix = format!("{}-", key.name);
            while left > 0 {
                let n = batch.min(left);
                let creates = (0..n).map(|_| {
                    let pod = from_template(template, &key.namespace, &prefix, controller_of(owner));
                    async move { api.create(&PostParams::default(), &pod).await }
                });
                let results = join_all(creates).await;
                let mut failed = None;
                for r in results {
                    match r {
                        Ok(p) => {
                            let name = p.metadata.name.clone().unwrap_or_default();
                            self.expectations.created(key, &name);
                            self.recorder.record(
                                owner,
                                EventType::Normal,
                                "SuccessfulCreate",
                                format!("Created pod: {name}"),
                            );
                        }
                        Err(e) => failed = Some(e),
                    }
                }
                if let Some(e) = failed {
                    let msg = match &e {
                        kube::Error::Api(s) => s.message.clone(),
                        other => other.to_string(),
                    };
                    self.recorder.record(owner, EventType::Warning, "FailedCreate", format!("Error creating: {msg}"));
                    return Some(msg);
                }
                left -= n;
                batch *= 2;
            }
        } else if active.len() > want {
            let mut victims: Vec<&Arc<Pod>> = active.iter().collect();
            victims.sort_by(|a, b| deletion_order(a, b));
            let victims: Vec<&Arc<Pod>> = victims.into_iter().take((active.len() - want).min(BURST)).collect();
            let deletes = victims.iter().map(|p| {
                let name = p.metadata.name.clone().unwrap_or_default();
                async move { (api.delete(&name, &DeleteParams::default()).await, name) }
            });
            for (r, name) in join_all(deletes).await {
                match r {
                    Ok(_) => {
                        self.expectations.deleted(key, &name);
                        self.recorder.record(
                            owner,
                            EventType::Normal,
                            "SuccessfulDelete",
                            format!("Deleted pod: {name}"),
                        );
                    }
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => {
                        self.recorder.record(owner, EventType::Warning, "FailedDelete", format!("Error deleting: {e}"));
                    }
                }
            }
        }
        None
    }

    async fn update_status(
        &self,
        key: &Key,
        owner: &R,
        active: &[Arc<Pod>],
        failure: Option<String>,
    ) -> Result<Next, kube::Error> {
        let now = Utc::now();
        let min_ready = owner.min_ready_seconds();
        let template_labels: BTreeMap<String, String> =
            owner.template().and_then(|t| t.metadata.as_ref()).and_then(|m| m.labels.clone()).unwrap_or_default();
        let fully_labeled = active
            .iter()
            .filter(|p| {
                let l = p.metadata.labels.clone().unwrap_or_default();
                template_labels.iter().all(|(k, v)| l.get(k) == Some(v))
            })
            .count();
        let ready = active.iter().filter(|p| is_ready(p)).count();
        let available = active.iter().filter(|p| is_available(p, min_ready, now)).count();
        let current = owner.status_json();
        let nz = |n: usize| if n == 0 { Value::Null } else { json!(n) };
        let mut conditions: Vec<Value> = current
            .get("conditions")
            .and_then(|c| c.as_array())
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.get("type") != Some(&json!("ReplicaFailure")))
            .collect();
        if let Some(msg) = &failure {
            conditions.push(json!({
                "type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": msg,
                "lastTransitionTime": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            }));
        }
        let desired = json!({
            "replicas": active.len(),
            "fullyLabeledReplicas": nz(fully_labeled),
            "readyReplicas": nz(ready),
            "availableReplicas": nz(available),
            "observedGeneration": owner.meta().generation,
            "conditions": if conditions.is_empty() { Value::Null } else { json!(conditions) },
        });
        let changed = desired.as_object().is_some_and(|d| {
            d.iter()
                .any(|(k, v)| current.get(k).unwrap_or(&Value::Null) != v && !(v.is_null() && current.get(k).is_none()))
        });
        if changed {
            let api: Api<R> = Api::namespaced(self.client.clone(), &key.namespace);
            match api.patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&json!({"status": desired}))).await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => return Ok(Next::Done),
                Err(e) => return Err(e),
            }
        }
        if failure.is_some() {
            return Ok(Next::After(Duration::from_secs(5)));
        }
        // Pods ready but not yet available become available later.
        if min_ready > 0 && ready > available {
            return Ok(Next::After(Duration::from_secs(1)));
        }
        Ok(Next::Done)
    }
}
