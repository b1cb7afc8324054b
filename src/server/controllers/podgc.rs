//! The pod garbage collector, as upstream's (`pkg/controller/podgc`). Every pass it:
//!
//! - deletes the oldest terminated (`Succeeded`/`Failed`) pods beyond
//!   `--terminated-pod-gc-threshold` (evicted pods first, then by creation time);
//! - deletes pods bound to a node that no longer exists, once the node has been missing for the
//!   quarantine time and a live read confirms it is gone (a node being re-registered, or a
//!   stale cache, never costs pods);
//! - force-deletes terminating pods that were never scheduled (no kubelet will confirm them);
//! - force-deletes terminating pods on a node that is not ready and carries the
//!   `node.kubernetes.io/out-of-service` taint (an administrator's statement that it is gone).
//!
//! Pods that are not yet terminal are first marked `Failed`, with a `DisruptionTarget`
//! condition saying why, then deleted with a zero grace period, as upstream.
//!
//! Invariant: deletes pods only for those four reasons, and only from what the API says.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::Ctx;
use crate::runtime::Informer;

const OUT_OF_SERVICE: &str = "node.kubernetes.io/out-of-service";

pub async fn run(ctx: Arc<Ctx>, cancel: CancellationToken) {
    let pods = ctx.informers.get::<Pod>();
    let nodes = ctx.informers.get::<Node>();
    tokio::select! {
        _ = cancel.cancelled() => return,
        _ = async { pods.synced().await; nodes.synced().await } => {}
    }
    // Upstream checks every 20 s and quarantines a missing node for 40 s, the node monitor
    // grace period's default; both follow the grace period here so tests can shorten them.
    let quarantine = ctx.node_monitor_grace;
    let period = (quarantine / 2).clamp(Duration::from_secs(1), Duration::from_secs(20));
    let mut gc = PodGc {
        client: ctx.client.clone(),
        threshold: ctx.terminated_pod_gc_threshold,
        quarantine,
        missing_since: HashMap::new(),
    };
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(period) => gc.pass(&pods, &nodes).await,
        }
    }
}

struct PodGc {
    client: kube::Client,
    threshold: usize,
    quarantine: Duration,
    /// Nodes that pods are bound to but the cache does not have, since when.
    missing_since: HashMap<String, Instant>,
}

impl PodGc {
    async fn pass(&mut self, pods: &Informer<Pod>, nodes: &Informer<Node>) {
        let all = pods.list();
        if self.threshold > 0 {
            for pod in over_threshold(&all, self.threshold) {
                self.fail_and_delete(pod, None).await;
            }
        }
        for pod in all.iter().filter(|p| is_terminating(p) && node_of(p).is_none()) {
            self.fail_and_delete(pod, None).await;
        }
        let out_of_service: BTreeSet<String> =
            nodes.list().iter().filter(|n| is_out_of_service(n)).filter_map(|n| n.metadata.name.clone()).collect();
        for pod in all.iter().filter(|p| is_terminating(p) && node_of(p).is_some_and(|n| out_of_service.contains(n))) {
            self.fail_and_delete(pod, Some(("DeletionByPodGC", "PodGC: node is out of service"))).await;
        }
        self.orphans(&all, nodes).await;
    }

    /// Deletes the pods of nodes that have been gone for the quarantine time.
    async fn orphans(&mut self, all: &[Arc<Pod>], nodes: &Informer<Node>) {
        let wanted: BTreeSet<&str> = all.iter().filter_map(|p| node_of(p)).collect();
        let missing: BTreeSet<&str> = wanted.into_iter().filter(|n| nodes.get("", n).is_none()).collect();
        self.missing_since.retain(|n, _| missing.contains(n.as_str()));
        let now = Instant::now();
        let mut gone = Vec::new();
        for node in missing {
            let since = *self.missing_since.entry(node.to_string()).or_insert(now);
            if now.duration_since(since) >= self.quarantine {
                gone.push(node.to_string());
            }
        }
        let api: Api<Node> = Api::all(self.client.clone());
        for node in gone {
            match api.get_opt(&node).await {
                Ok(None) => {}
                Ok(Some(_)) => {
                    self.missing_since.remove(&node);
                    continue;
                }
                Err(e) => {
                    tracing::warn!(node, error = %e, "podgc: cannot check whether the node exists");
                    continue;
                }
            }
            tracing::info!(node, "podgc: deleting the pods of a node that no longer exists");
            for pod in all.iter().filter(|p| node_of(p) == Some(node.as_str())) {
                self.fail_and_delete(pod, Some(("DeletionByPodGC", "PodGC: node no longer exists"))).await;
            }
            self.missing_since.remove(&node);
        }
    }

    /// Upstream's `markFailedAndDeletePodWithCondition`: a pod still running is marked
    /// `Failed` (with the condition, if any) before it is deleted with no grace period.
    async fn fail_and_delete(&self, pod: &Pod, condition: Option<(&str, &str)>) {
        let (Some(ns), Some(name)) = (pod.metadata.namespace.as_deref(), pod.metadata.name.as_deref()) else {
            return;
        };
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        if !is_terminated(pod) {
            let mut status = json!({"phase": "Failed"});
            if let Some((reason, message)) = condition {
                status["conditions"] = json!([{
                    "type": "DisruptionTarget", "status": "True", "reason": reason, "message": message,
                    "lastTransitionTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                }]);
            }
            let patch = json!({"status": status});
            match api.patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch)).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => return,
                Err(e) => {
                    tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "podgc: cannot mark the pod failed")
                }
            }
        }
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: pod
                .metadata
                .uid
                .clone()
                .map(|uid| kube::api::Preconditions { uid: Some(uid), resource_version: None }),
            ..Default::default()
        };
        match api.delete(name, &dp).await {
            Ok(_) => tracing::debug!(pod = %format!("{ns}/{name}"), "podgc: deleted"),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "podgc: cannot delete the pod"),
        }
    }
}

fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).filter(|n| !n.is_empty())
}

fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending")
}

/// Upstream's `isPodTerminated`: any phase but Pending, Running and Unknown.
fn is_terminated(pod: &Pod) -> bool {
    !matches!(phase(pod), "Pending" | "Running" | "Unknown")
}

fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

fn is_evicted(pod: &Pod) -> bool {
    phase(pod) == "Failed" && pod.status.as_ref().and_then(|s| s.reason.as_deref()) == Some("Evicted")
}

/// Not ready, and tainted out of service by an administrator.
fn is_out_of_service(node: &Node) -> bool {
    let tainted = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| ts.iter().any(|t| t.key == OUT_OF_SERVICE && t.effect == "NoExecute"));
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True");
    tainted && !ready
}

/// The terminated pods beyond `threshold`, the ones to delete first: evicted before others,
/// then the oldest, then by name.
fn over_threshold(pods: &[Arc<Pod>], threshold: usize) -> Vec<&Pod> {
    let mut done: Vec<&Pod> = pods.iter().map(|p| p.as_ref()).filter(|p| is_terminated(p)).collect();
    if done.len() <= threshold {
        return Vec::new();
    }
    let excess = done.len() - threshold;
    done.sort_by(|a, b| deletion_order(a, b));
    done.truncate(excess);
    done
}

fn deletion_order(a: &Pod, b: &Pod) -> Ordering {
    is_evicted(b)
        .cmp(&is_evicted(a))
        .then_with(|| {
            a.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0)
                .cmp(&b.metadata.creation_timestamp.as_ref().map(|t| t.0))
        })
        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, phase: &str, created: &str, reason: Option<&str>) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "ns", "creationTimestamp": created},
                "status": {"phase": phase, "reason": reason},
            }))
            .unwrap(),
        )
    }

    #[test]
    fn the_oldest_terminated_pods_beyond_the_threshold_go_first_evicted_before_all() {
        let pods = vec![
            pod("new-done", "Succeeded", "2026-01-03T00:00:00Z", None),
            pod("running", "Running", "2026-01-01T00:00:00Z", None),
            pod("old-done", "Succeeded", "2026-01-01T00:00:00Z", None),
            pod("mid-failed", "Failed", "2026-01-02T00:00:00Z", None),
            pod("evicted", "Failed", "2026-01-04T00:00:00Z", Some("Evicted")),
            pod("pending", "Pending", "2026-01-01T00:00:00Z", None),
        ];
        let names = |v: Vec<&Pod>| v.iter().map(|p| p.metadata.name.clone().unwrap()).collect::<Vec<_>>();
        assert_eq!(names(over_threshold(&pods, 2)), ["evicted", "old-done"]);
        assert_eq!(names(over_threshold(&pods, 0)), ["evicted", "old-done", "mid-failed", "new-done"]);
        assert!(over_threshold(&pods, 4).is_empty());
        assert!(over_threshold(&pods, 100).is_empty());
    }

    #[test]
    fn out_of_service_needs_the_taint_and_a_node_that_is_not_ready() {
        let node = |ready: &str, taint: bool| -> Node {
            let taints = if taint {
                json!([{"key": OUT_OF_SERVICE, "value": "shutdown", "effect": "NoExecute"}])
            } else {
                json!([])
            };
            serde_json::from_value(json!({
                "metadata": {"name": "n"},
                "spec": {"taints": taints},
                "status": {"conditions": [{"type": "Ready", "status": ready}]},
            }))
            .unwrap()
        };
        assert!(is_out_of_service(&node("False", true)));
        assert!(is_out_of_service(&node("Unknown", true)));
        assert!(!is_out_of_service(&node("True", true)));
        assert!(!is_out_of_service(&node("False", false)));
    }
}
