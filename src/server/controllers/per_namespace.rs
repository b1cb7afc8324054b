//! Keeps one named object in every active namespace (the `default` ServiceAccount, the
//! `kube-root-ca.crt` ConfigMap): created when missing, replaced when it drifted.

use std::sync::Arc;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::PostParams;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::Ctx;
use crate::runtime::informer::{Cached, next_change};
use crate::runtime::queue::{Next, run_workers};
use crate::runtime::{Change, WorkQueue};

/// Runs until `cancel`: `build(ns)` is what must exist as `name` in each namespace, and
/// `drifted(existing)` says when an existing object must be replaced.
pub async fn keep_in_every_namespace<K>(
    ctx: Arc<Ctx>,
    cancel: CancellationToken,
    component: &'static str,
    name: &'static str,
    build: impl Fn(&str) -> K + Send + Sync + 'static,
    drifted: impl Fn(&K) -> bool + Send + Sync + 'static,
) where
    K: Cached + Serialize + kube::Resource<Scope = NamespaceResourceScope>,
{
    let namespaces = ctx.informers.get::<Namespace>();
    let objects = ctx.informers.get::<K>();
    let mut ns_changes = namespaces.subscribe();
    let mut obj_changes = objects.subscribe();
    namespaces.synced().await;
    objects.synced().await;
    let queue = WorkQueue::<String>::new();
    for n in namespaces.list() {
        queue.add(n.metadata.name.clone().unwrap_or_default());
    }
    let shared = Arc::new((ctx.client.clone(), namespaces.clone(), objects.clone(), build, drifted));
    let workers = tokio::spawn(run_workers(component, queue.clone(), 2, cancel.clone(), move |ns: String| {
        let s = shared.clone();
        async move {
            let (client, namespaces, objects, build, drifted) = &*s;
            let Some(n) = namespaces.get("", &ns) else { return Ok::<_, kube::Error>(Next::Done) };
            let active = n.metadata.deletion_timestamp.is_none()
                && n.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Terminating");
            if !active {
                return Ok(Next::Done);
            }
            let api: Api<K> = Api::namespaced(client.clone(), &ns);
            match objects.get(&ns, name) {
                None => match api.create(&PostParams::default(), &build(&ns)).await {
                    Ok(_) => Ok(Next::Done),
                    // Exists already (cache behind) or the namespace is going away.
                    Err(kube::Error::Api(e)) if e.code == 409 || e.code == 403 || e.code == 404 => Ok(Next::Done),
                    Err(e) => Err(e),
                },
                Some(existing) if drifted(&existing) => {
                    let mut want = build(&ns);
                    want.meta_mut().resource_version = existing.meta().resource_version.clone();
                    match api.replace(name, &PostParams::default(), &want).await {
                        Ok(_) => Ok(Next::Done),
                        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {
                            Ok(Next::After(std::time::Duration::from_millis(100)))
                        }
                        Err(e) => Err(e),
                    }
                }
                Some(_) => Ok(Next::Done),
            }
        }
    }));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            c = next_change(&mut ns_changes) => match c {
                Some(Change::Applied(n)) => queue.add(n.metadata.name.clone().unwrap_or_default()),
                Some(Change::Deleted(_)) => {}
                Some(Change::Resync) => namespaces.list().iter().for_each(|n| queue.add(n.metadata.name.clone().unwrap_or_default())),
                None => break,
            },
            c = next_change(&mut obj_changes) => match c {
                Some(Change::Applied(o)) | Some(Change::Deleted(o)) if o.meta().name.as_deref() == Some(name) => {
                    queue.add(o.meta().namespace.clone().unwrap_or_default())
                }
                Some(Change::Resync) => namespaces.list().iter().for_each(|n| queue.add(n.metadata.name.clone().unwrap_or_default())),
                Some(_) => {}
                None => break,
            },
        }
    }
    let _ = workers.await;
}
