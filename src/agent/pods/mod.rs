//! The pods bound to this node: one [`worker::Worker`] per pod, fed by a watch of pods with
//! `spec.nodeName=<node>` and woken by a relist of the runtime every second (containerd 1.6
//! sends no container events), the way upstream's kubelet pairs pod workers with its PLEG.
//!
//! Start at [`run`]. [`spec`] builds CRI configs from pods, [`env`] and [`volumes`] resolve
//! what containers see, [`status`] shapes the reported status, [`runtime`] wraps the CRI calls.
//!
//! Sandboxes and containers the agent made carry the pod's uid as a label; whatever carries a
//! uid no pod on this node has (a pod deleted while the agent was down) is removed.

pub mod env;
pub mod index;
pub mod probes;
pub mod runtime;
pub mod spec;
pub mod status;
pub mod volumes;
pub mod worker;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::watcher;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::cri::proto;
use crate::runtime::informer::next_change;
use crate::runtime::{Change, Informer};
use worker::{Ctx, Worker};

/// How often the runtime is relisted for changes nobody announced (exits, OOM kills).
const RELIST: Duration = Duration::from_secs(1);

struct Handle {
    updates: watch::Sender<Option<Arc<Pod>>>,
    wake: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

/// Runs the pod workers until `cancel` fires. Containers keep running after that.
pub async fn run(ctx: Arc<Ctx>, cancel: CancellationToken) {
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", ctx.cfg.node_name));
    let informer = Informer::spawn(api, config, cancel.child_token());
    let mut changes = informer.subscribe();
    if !informer.synced_or(&cancel).await {
        return;
    }
    let mut workers: HashMap<String, Handle> = HashMap::new();
    let mut fingerprints: BTreeMap<String, String> = BTreeMap::new();
    for pod in informer.list() {
        dispatch(&ctx, &mut workers, pod, &cancel);
    }
    let mut relist = tokio::time::interval(RELIST);
    relist.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The runtime is listed while pods go on being dispatched: under load a listing takes
    // long enough to hold up new pods.
    let mut listing: Option<BoxFuture<'static, Result<runtime::Observed, String>>> = None;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            change = next_change(&mut changes) => {
                let Some(change) = change else { break };
                match change {
                    Change::Applied(pod) => dispatch(&ctx, &mut workers, pod, &cancel),
                    Change::Deleted(pod) => {
                        if let Some(h) = pod.metadata.uid.as_deref().and_then(|u| workers.get(u)) {
                            h.updates.send_replace(None);
                        }
                    }
                    Change::Resync => {
                        let pods = informer.list();
                        let live: std::collections::HashSet<String> = pods.iter().filter_map(|p| p.metadata.uid.clone()).collect();
                        for (uid, h) in &workers {
                            if !live.contains(uid) {
                                h.updates.send_replace(None);
                            }
                        }
                        for pod in pods {
                            dispatch(&ctx, &mut workers, pod, &cancel);
                        }
                    }
                }
            }
            _ = relist.tick(), if listing.is_none() => {
                let ctx = ctx.clone();
                listing = Some(Box::pin(async move { runtime::everything(&ctx.cri).await }));
            }
            all = async { listing.as_mut().expect("guarded").await }, if listing.is_some() => {
                listing = None;
                workers.retain(|_, h| !h.task.is_finished());
                if let Ok(all) = all {
                    relist_runtime(&ctx, &informer, &workers, &mut fingerprints, all).await;
                }
            }
        }
    }
    for (_, h) in workers {
        let _ = tokio::time::timeout(Duration::from_secs(2), h.task).await;
    }
}

/// Hands the pod to its worker, starting one for a pod not seen before.
fn dispatch(ctx: &Arc<Ctx>, workers: &mut HashMap<String, Handle>, pod: Arc<Pod>, cancel: &CancellationToken) {
    let Some(uid) = pod.metadata.uid.clone() else { return };
    if let Some(h) = workers.get(&uid)
        && !h.task.is_finished()
    {
        h.updates.send_replace(Some(pod));
        return;
    }
    let (tx, rx) = watch::channel(Some(pod));
    let wake = Arc::new(Notify::new());
    let worker = Worker::new(ctx.clone(), uid.clone());
    let task = tokio::spawn(worker.run(rx, wake.clone(), cancel.child_token()));
    workers.insert(uid, Handle { updates: tx, wake, task });
}

/// Takes in a listing of the runtime: wakes the worker of every pod whose containers changed
/// state, and removes what belongs to no pod of this node.
async fn relist_runtime(
    ctx: &Arc<Ctx>,
    informer: &Informer<Pod>,
    workers: &HashMap<String, Handle>,
    fingerprints: &mut BTreeMap<String, String>,
    all: runtime::Observed,
) {
    let mut now: BTreeMap<String, String> = BTreeMap::new();
    let uid_of = |labels: &std::collections::HashMap<String, String>| labels.get(spec::LABEL_POD_UID).cloned();
    for s in &all.sandboxes {
        if let Some(uid) = uid_of(&s.labels) {
            now.entry(uid).or_default().push_str(&format!("s{}:{};", s.id, s.state));
        }
    }
    for c in &all.containers {
        if let Some(uid) = uid_of(&c.labels) {
            now.entry(uid).or_default().push_str(&format!("c{}:{};", c.id, c.state));
        }
    }
    for (uid, fp) in &now {
        if fingerprints.get(uid) != Some(fp)
            && let Some(h) = workers.get(uid)
        {
            h.wake.notify_one();
        }
    }
    let known: std::collections::HashSet<String> =
        informer.list().iter().filter_map(|p| p.metadata.uid.clone()).collect();
    for uid in now.keys() {
        if !workers.contains_key(uid) && !known.contains(uid) {
            tracing::info!(pod_uid = %uid, "removing containers of a pod this node no longer has");
            let obs = runtime::Observed {
                sandboxes: all
                    .sandboxes
                    .iter()
                    .filter(|s| uid_of(&s.labels).as_deref() == Some(uid))
                    .cloned()
                    .collect(),
                containers: all
                    .containers
                    .iter()
                    .filter(|c| uid_of(&c.labels).as_deref() == Some(uid))
                    .cloned()
                    .collect::<Vec<proto::Container>>(),
            };
            worker::remove_pod(ctx, uid, &obs).await;
        }
    }
    *fingerprints = now;
}
