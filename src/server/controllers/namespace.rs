//! The namespace controller: empties a namespace being deleted, then releases it.
//!
//! For a namespace with `deletionTimestamp` and the `kubernetes` finalizer in `spec`, every
//! namespaced resource that can be listed and deleted (found by discovery, CRDs included) is
//! deleted in it, pass after pass, with the namespace's conditions saying what remains
//! (`NamespaceContentRemaining`, `NamespaceFinalizersRemaining`, `NamespaceDeletion*Failure`,
//! as upstream reports them). When nothing remains the `kubernetes` finalizer is removed
//! through `namespaces/<name>/finalize` and the API server removes the namespace.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::discovery::verbs;
use kube::{Api, Client};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::Ctx;
use super::discovery::Resources;
use crate::runtime::informer::next_change;
use crate::runtime::queue::{Next, run_workers};
use crate::runtime::{Change, Informer, WorkQueue};

const FINALIZER: &str = "kubernetes";

struct Controller {
    client: Client,
    namespaces: Arc<Informer<Namespace>>,
}

pub async fn run(ctx: Arc<Ctx>, cancel: CancellationToken) {
    let namespaces = ctx.informers.get::<Namespace>();
    let mut changes = namespaces.subscribe();
    namespaces.synced().await;
    let c = Arc::new(Controller { client: ctx.client.clone(), namespaces: namespaces.clone() });
    let queue = WorkQueue::<String>::new();
    let deleting = |queue: &WorkQueue<String>| {
        for n in namespaces.list() {
            if n.metadata.deletion_timestamp.is_some() {
                queue.add(n.metadata.name.clone().unwrap_or_default());
            }
        }
    };
    deleting(&queue);
    let workers = {
        let c = c.clone();
        tokio::spawn(run_workers("namespace-controller", queue.clone(), 2, cancel.clone(), move |name: String| {
            let c = c.clone();
            async move { c.reconcile(&name).await }
        }))
    };
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            ch = next_change(&mut changes) => match ch {
                Some(Change::Applied(n)) if n.metadata.deletion_timestamp.is_some() => {
                    queue.add(n.metadata.name.clone().unwrap_or_default())
                }
                Some(Change::Resync) => deleting(&queue),
                Some(_) => {}
                None => break,
            },
        }
    }
    let _ = workers.await;
}

fn condition(type_: &str, status: &str, reason: &str, message: String) -> serde_json::Value {
    json!({"type": type_, "status": status, "reason": reason, "message": message,
        "lastTransitionTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)})
}

impl Controller {
    async fn reconcile(&self, name: &str) -> Result<Next, kube::Error> {
        let Some(ns) = self.namespaces.get("", name) else { return Ok(Next::Done) };
        if ns.metadata.deletion_timestamp.is_none() {
            return Ok(Next::Done);
        }
        let has_finalizer =
            ns.spec.as_ref().and_then(|s| s.finalizers.as_ref()).is_some_and(|f| f.iter().any(|f| f == FINALIZER));
        if !has_finalizer {
            return Ok(Next::Done);
        }
        let resources = match Resources::discover(&self.client).await {
            Ok(r) => r,
            Err(e) => {
                self.set_conditions(
                    name,
                    vec![condition(
                        "NamespaceDeletionDiscoveryFailure",
                        "True",
                        "DiscoveryFailed",
                        format!("Discovery failed for some groups: {e}"),
                    )],
                )
                .await;
                return Err(e);
            }
        };
        let mut remaining: BTreeMap<String, usize> = BTreeMap::new();
        let mut finalizers: BTreeMap<String, usize> = BTreeMap::new();
        let mut failures: Vec<String> = Vec::new();
        for (ar, caps) in resources.supporting(&[verbs::LIST, verbs::DELETE]) {
            if caps.scope != kube::discovery::Scope::Namespaced {
                continue;
            }
            let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), name, ar);
            let dp = DeleteParams::background();
            if caps.supports_operation(verbs::DELETE_COLLECTION)
                && let Err(e) = api.delete_collection(&dp, &ListParams::default()).await
            {
                failures.push(format!("{}: {e}", ar.plural));
            }
            let left = match api.list_metadata(&ListParams::default()).await {
                Ok(l) => l.items,
                Err(e) => {
                    failures.push(format!("{}: {e}", ar.plural));
                    continue;
                }
            };
            let label = if ar.group.is_empty() { ar.plural.clone() } else { format!("{}.{}", ar.plural, ar.group) };
            for o in &left {
                if o.metadata.deletion_timestamp.is_none() && !caps.supports_operation(verbs::DELETE_COLLECTION) {
                    let _ = api.delete(o.metadata.name.as_deref().unwrap_or(""), &dp).await;
                }
                for f in o.metadata.finalizers.iter().flatten() {
                    *finalizers.entry(f.clone()).or_default() += 1;
                }
            }
            if !left.is_empty() {
                remaining.insert(label, left.len());
            }
        }
        let mut conditions = Vec::new();
        let (status, reason, msg) = if remaining.is_empty() {
            ("False", "ContentDeleted", "All content successfully removed".to_string())
        } else {
            let parts: Vec<String> = remaining.iter().map(|(r, n)| format!("{r} has {n} resource instances")).collect();
            ("True", "SomeResourcesRemain", format!("Some resources are remaining: {}", parts.join(", ")))
        };
        conditions.push(condition("NamespaceContentRemaining", status, reason, msg));
        let (status, reason, msg) = if finalizers.is_empty() {
            ("False", "ContentHasNoFinalizers", "All content-preserving finalizers finished".to_string())
        } else {
            let parts: Vec<String> = finalizers.iter().map(|(f, n)| format!("{f} in {n} resource instances")).collect();
            (
                "True",
                "SomeFinalizersRemain",
                format!("Some content in the namespace has finalizers remaining: {}", parts.join(", ")),
            )
        };
        conditions.push(condition("NamespaceFinalizersRemaining", status, reason, msg));
        let (status, reason, msg) = if failures.is_empty() {
            ("False", "ContentDeleted", "All content successfully deleted, may be waiting on finalization".to_string())
        } else {
            (
                "True",
                "ContentDeletionFailed",
                format!("Failed to delete all resource types, {} remaining: {}", failures.len(), failures.join(", ")),
            )
        };
        conditions.push(condition("NamespaceDeletionContentFailure", status, reason, msg));
        self.set_conditions(name, conditions).await;
        if !remaining.is_empty() || !failures.is_empty() {
            return Ok(Next::After(Duration::from_secs(1)));
        }
        // Empty: release the namespace.
        let current = Api::<Namespace>::all(self.client.clone()).get(name).await?;
        let mut body = current.clone();
        if let Some(spec) = body.spec.as_mut() {
            spec.finalizers =
                Some(spec.finalizers.clone().unwrap_or_default().into_iter().filter(|f| f != FINALIZER).collect());
        }
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        match Api::<Namespace>::all(self.client.clone())
            .replace_subresource("finalize", name, &PostParams::default(), bytes)
            .await
        {
            Ok(_) => Ok(Next::Done),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(Next::Done),
            Err(e) => Err(e),
        }
    }

    async fn set_conditions(&self, name: &str, conditions: Vec<serde_json::Value>) {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let patch = json!({"status": {"conditions": conditions}});
        if let Err(e) = api.patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch)).await {
            tracing::debug!(namespace = name, error = %e, "cannot set namespace conditions");
        }
    }
}
