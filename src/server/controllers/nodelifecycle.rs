//! Node lifecycle, as upstream's node lifecycle controller: a node whose kubelet stopped
//! heartbeating (its Lease and Ready condition older than `--node-monitor-grace-period`, 40 s
//! by default) gets its conditions set to `Unknown`, its pods marked not Ready, and the
//! `node.kubernetes.io/unreachable` taints; a node reporting `Ready=False` gets the `not-ready`
//! taints; a cordoned node the `unschedulable` taint. Pods on a node with `NoExecute` taints
//! they do not tolerate are deleted, those tolerating them for `tolerationSeconds` after that
//! long (the taint manager).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::Ctx;
use crate::runtime::Informer;
use crate::runtime::events::{EventType, Recorder};
use crate::runtime::matching::tolerates;

pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
/// Taint keys this controller owns.
const MANAGED: &[(&str, &str)] = &[
    (UNREACHABLE, "NoExecute"),
    (UNREACHABLE, "NoSchedule"),
    (NOT_READY, "NoExecute"),
    (NOT_READY, "NoSchedule"),
    (UNSCHEDULABLE, "NoSchedule"),
];
/// How often every node is checked (upstream's node-monitor-period).
const PERIOD: Duration = Duration::from_secs(2);

struct Controller {
    client: kube::Client,
    nodes: Arc<Informer<Node>>,
    leases: Arc<Informer<Lease>>,
    pods: Arc<Informer<Pod>>,
    grace: chrono::Duration,
    recorder: Recorder,
    /// When this controller first saw each node (a node never heard from gets the grace period
    /// from then, not from its creation, so a restarted server does not mark every node at once).
    first_seen: HashMap<String, DateTime<Utc>>,
}

pub async fn run(ctx: Arc<Ctx>, cancel: CancellationToken) {
    let nodes = ctx.informers.get::<Node>();
    let leases = ctx.informers.get::<Lease>();
    let pods = ctx.informers.get::<Pod>();
    nodes.synced().await;
    leases.synced().await;
    pods.synced().await;
    let mut c = Controller {
        client: ctx.client.clone(),
        nodes,
        leases,
        pods,
        grace: chrono::Duration::from_std(ctx.node_monitor_grace).unwrap_or(chrono::Duration::seconds(40)),
        recorder: ctx.recorder("node-controller"),
        first_seen: HashMap::new(),
    };
    loop {
        c.pass().await;
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(PERIOD) => {}
        }
    }
}

fn ready_status(node: &Node) -> &str {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.as_str())
        .unwrap_or("Unknown")
}

impl Controller {
    async fn pass(&mut self) {
        let now = Utc::now();
        let names: Vec<String> = self.nodes.list().iter().filter_map(|n| n.metadata.name.clone()).collect();
        self.first_seen.retain(|n, _| names.contains(n));
        for node in self.nodes.list() {
            let name = node.metadata.name.clone().unwrap_or_default();
            let seen = *self.first_seen.entry(name.clone()).or_insert(now);
            if let Err(e) = self.check(&node, &name, seen, now).await {
                tracing::debug!(node = %name, error = %e, "node lifecycle check failed");
            }
        }
        self.evict(now).await;
    }

    fn last_heartbeat(&self, node: &Node, name: &str) -> Option<DateTime<Utc>> {
        let lease =
            self.leases.get("kube-node-lease", name).and_then(|l| l.spec.as_ref()?.renew_time.as_ref().map(|t| t.0));
        let ready = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .and_then(|c| c.last_heartbeat_time.as_ref().map(|t| t.0));
        lease.max(ready)
    }

    async fn check(&self, node: &Node, name: &str, seen: DateTime<Utc>, now: DateTime<Utc>) -> Result<(), kube::Error> {
        let api: Api<Node> = Api::all(self.client.clone());
        let heard = self.last_heartbeat(node, name).unwrap_or(seen).max(seen);
        let mut ready = ready_status(node).to_string();
        if now - heard > self.grace && ready != "Unknown" {
            // The kubelet stopped posting: every condition becomes Unknown.
            let at = Time(now);
            let mut conditions = node.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
            if !conditions.iter().any(|c| c.type_ == "Ready") {
                conditions
                    .push(k8s_openapi::api::core::v1::NodeCondition { type_: "Ready".into(), ..Default::default() });
            }
            for c in conditions.iter_mut() {
                c.status = "Unknown".into();
                c.reason = Some("NodeStatusUnknown".into());
                c.message = Some("Kubelet stopped posting node status.".into());
                c.last_transition_time = Some(at.clone());
            }
            let patch = json!({"status": {"conditions": conditions}});
            api.patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch)).await?;
            self.recorder.record(
                node,
                EventType::Normal,
                "NodeNotReady",
                format!("Node {name} status is now: NodeNotReady"),
            );
            self.mark_pods_not_ready(name).await;
            ready = "Unknown".into();
        }
        // Taints follow the Ready condition and spec.unschedulable.
        let mut want: Vec<(&str, &str)> = match ready.as_str() {
            "False" => vec![(NOT_READY, "NoSchedule"), (NOT_READY, "NoExecute")],
            "Unknown" => vec![(UNREACHABLE, "NoSchedule"), (UNREACHABLE, "NoExecute")],
            _ => vec![],
        };
        if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
            want.push((UNSCHEDULABLE, "NoSchedule"));
        }
        let taints = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
        let managed = |t: &Taint| MANAGED.iter().any(|(k, e)| t.key == *k && t.effect == *e);
        let have: Vec<(&str, &str)> =
            taints.iter().filter(|t| managed(t)).map(|t| (t.key.as_str(), t.effect.as_str())).collect();
        let mut sorted_want = want.clone();
        sorted_want.sort();
        let mut sorted_have = have.clone();
        sorted_have.sort();
        if sorted_want != sorted_have {
            let mut next: Vec<Taint> = taints
                .iter()
                .filter(|t| !managed(t) || want.contains(&(t.key.as_str(), t.effect.as_str())))
                .cloned()
                .collect();
            for (k, e) in &want {
                if !have.contains(&(*k, *e)) {
                    next.push(Taint {
                        key: k.to_string(),
                        effect: e.to_string(),
                        value: None,
                        time_added: Some(Time(now)),
                    });
                }
            }
            let patch =
                json!({"spec": {"taints": next}, "metadata": {"resourceVersion": node.metadata.resource_version}});
            match api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) | Err(kube::Error::Api(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn mark_pods_not_ready(&self, node: &str) {
        let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        for p in self.pods.list() {
            if p.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(node) || !super::pods::is_ready(&p) {
                continue;
            }
            let api: Api<Pod> = Api::namespaced(self.client.clone(), p.metadata.namespace.as_deref().unwrap_or(""));
            let patch = json!({"status": {"conditions": [{"type": "Ready", "status": "False", "lastProbeTime": null, "lastTransitionTime": now}]}});
            let _ = api
                .patch_status(
                    p.metadata.name.as_deref().unwrap_or(""),
                    &PatchParams::default(),
                    &Patch::Strategic(&patch),
                )
                .await;
        }
    }

    /// Deletes pods that do not tolerate their node's `NoExecute` taints (any longer).
    async fn evict(&self, now: DateTime<Utc>) {
        let tainted: HashMap<String, Vec<Taint>> = self
            .nodes
            .list()
            .iter()
            .filter_map(|n| {
                let t: Vec<Taint> =
                    n.spec.as_ref()?.taints.as_ref()?.iter().filter(|t| t.effect == "NoExecute").cloned().collect();
                (!t.is_empty()).then(|| (n.metadata.name.clone().unwrap_or_default(), t))
            })
            .collect();
        if tainted.is_empty() {
            return;
        }
        for p in self.pods.list() {
            let Some(taints) = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).and_then(|n| tainted.get(n)) else {
                continue;
            };
            if p.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let tolerations = p.spec.as_ref().and_then(|s| s.tolerations.clone()).unwrap_or_default();
            let mut evict_at: Option<DateTime<Utc>> = None;
            for t in taints {
                let added = t.time_added.as_ref().map(|t| t.0).unwrap_or(now);
                let matching: Vec<_> = tolerations.iter().filter(|tol| tolerates(tol, t)).collect();
                let at = if matching.is_empty() {
                    now
                } else {
                    match matching.iter().filter_map(|tol| tol.toleration_seconds).min() {
                        // Tolerated for good only if every matching toleration says so.
                        None => continue,
                        Some(secs) => added + chrono::Duration::seconds(secs.max(0)),
                    }
                };
                evict_at = Some(evict_at.map_or(at, |e| e.min(at)));
            }
            if evict_at.is_some_and(|at| at <= now) {
                let ns = p.metadata.namespace.clone().unwrap_or_default();
                let name = p.metadata.name.clone().unwrap_or_default();
                let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
                let dp = DeleteParams {
                    preconditions: Some(Preconditions { uid: p.metadata.uid.clone(), resource_version: None }),
                    ..Default::default()
                };
                if api.delete(&name, &dp).await.is_ok() {
                    self.recorder.record(
                        p.as_ref(),
                        EventType::Normal,
                        "TaintManagerEviction",
                        format!("Marking for deletion Pod {ns}/{name}"),
                    );
                }
            }
        }
    }
}
