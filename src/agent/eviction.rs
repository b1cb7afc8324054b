//! Hard eviction, as upstream's kubelet does it: every 10 seconds the eviction signals are
//! measured against `eviction-hard`; while one is crossed, one pod per round is evicted, chosen
//! as upstream ranks them (for memory: pods using more than they request first, then lower
//! priority, then the most used above the request; for disk: the same with ephemeral storage).
//! Critical pods (static pods, priority 2000000000 and above) are never evicted.
//!
//! An evicted pod's containers are killed at once, and its worker reports it `Failed` with
//! reason `Evicted`, upstream's message and a `DisruptionTarget` condition. For disk pressure,
//! unused images go first ([`super::image_gc`] frees them on its own schedule), as upstream
//! reclaims node-level resources before evicting.
//!
//! [`rank`] and [`message`] are pure; [`run`] measures and acts.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use tokio_util::sync::CancellationToken;

use super::config::{Signal, Threshold};
use super::host::Usage;
use super::kubelet_api::PodSource;
use super::pods::status::Killed;
use super::pods::worker::Ctx;
use crate::cri::proto::{ContainerState, ListContainerStatsRequest, StopContainerRequest};

/// How often the signals are measured (upstream's housekeeping interval).
const PERIOD: Duration = Duration::from_secs(10);
/// Pods at or above this priority are critical and never evicted.
const CRITICAL_PRIORITY: i32 = 2_000_000_000;

/// The resource a signal is about, as upstream names it in messages.
fn resource(signal: Signal) -> &'static str {
    match signal {
        Signal::MemoryAvailable => "memory",
        Signal::NodefsAvailable | Signal::ImagefsAvailable => "ephemeral-storage",
        Signal::NodefsInodesFree => "inodes",
        Signal::PidAvailable => "pids",
    }
}

/// A signal's (available, capacity) in a measurement.
fn observed(signal: Signal, u: &Usage) -> (u64, u64) {
    match signal {
        Signal::MemoryAvailable => (u.memory_available, u.memory_total),
        Signal::NodefsAvailable | Signal::ImagefsAvailable => (u.fs_available, u.fs_capacity),
        Signal::NodefsInodesFree => (u.inodes_free, u.inodes_total),
        Signal::PidAvailable => (u.pids_max.saturating_sub(u.pids_used), u.pids_max),
    }
}

/// The first threshold a measurement crosses.
pub fn crossed<'a>(thresholds: &'a [Threshold], u: &Usage) -> Option<&'a Threshold> {
    thresholds.iter().find(|t| {
        let (available, capacity) = observed(t.signal, u);
        capacity > 0 && t.below.crossed(available, capacity)
    })
}

/// A quantity of bytes as Kubernetes prints a binary-SI one (`100Mi`, `1536`).
pub fn bytes_quantity(n: u64) -> String {
    if n == 0 {
        return "0".into();
    }
    for (shift, suffix) in [(60, "Ei"), (50, "Pi"), (40, "Ti"), (30, "Gi"), (20, "Mi"), (10, "Ki")] {
        if n.is_multiple_of(1u64 << shift) {
            return format!("{}{suffix}", n >> shift);
        }
    }
    n.to_string()
}

/// One container's use of the resource under pressure, and its request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerUse {
    pub name: String,
    pub usage: u64,
    pub request: u64,
}

/// A pod as ranking sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub uid: String,
    pub priority: i32,
    pub containers: Vec<ContainerUse>,
}

impl Candidate {
    fn usage(&self) -> u64 {
        self.containers.iter().map(|c| c.usage).sum()
    }
    fn request(&self) -> u64 {
        self.containers.iter().map(|c| c.request).sum()
    }
}

/// Orders pods for eviction, first to go first: usage above requests, then lower priority,
/// then usage minus requests, largest first.
pub fn rank(pods: &mut [Candidate]) {
    pods.sort_by(|a, b| {
        let exceeds = |p: &Candidate| p.usage() > p.request();
        exceeds(b)
            .cmp(&exceeds(a))
            .then(a.priority.cmp(&b.priority))
            .then((b.usage() as i128 - b.request() as i128).cmp(&(a.usage() as i128 - a.request() as i128)))
    })
}

/// Upstream's eviction message: the resource, the threshold and what was available, and each
/// container that used more than it requested.
pub fn message(t: &Threshold, u: &Usage, pod: &Candidate) -> String {
    let res = resource(t.signal);
    let (available, capacity) = observed(t.signal, u);
    let quantity = match t.below {
        super::config::Level::Amount(a) => bytes_or_count(t.signal, a),
        super::config::Level::Percent(p) => bytes_or_count(t.signal, (capacity as f64 * p / 100.0) as u64),
    };
    let mut m = format!(
        "The node was low on resource: {res}. Threshold quantity: {quantity}, available: {}. ",
        bytes_or_count(t.signal, available)
    );
    for c in pod.containers.iter().filter(|c| c.usage > c.request) {
        m.push_str(&format!(
            "Container {} was using {}, request is {}, has larger consumption of {res}. ",
            c.name,
            bytes_or_count(t.signal, c.usage),
            bytes_or_count(t.signal, c.request)
        ));
    }
    m
}

fn bytes_or_count(signal: Signal, n: u64) -> String {
    match signal {
        Signal::NodefsInodesFree | Signal::PidAvailable => n.to_string(),
        _ => bytes_quantity(n),
    }
}

/// A container's request of a resource, in bytes.
fn request_of(c: &k8s_openapi::api::core::v1::Container, res: &str) -> u64 {
    c.resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get(res))
        .and_then(|q| crate::api::quantity::parse_value(&q.0).ok())
        .map(|v| v.max(0) as u64)
        .unwrap_or(0)
}

fn critical(pod: &Pod) -> bool {
    let static_pod = pod.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(super::static_pods::MIRROR));
    static_pod || pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0) >= CRITICAL_PRIORITY
}

/// The running pods with their containers' use of `res`, from CRI stats.
async fn candidates(ctx: &Ctx, res: &str) -> Vec<Candidate> {
    let stats = ctx
        .cri
        .runtime()
        .list_container_stats(ListContainerStatsRequest { filter: None })
        .await
        .map(|r| r.into_inner().stats)
        .unwrap_or_default();
    let by_id: HashMap<&str, &crate::cri::proto::ContainerStats> =
        stats.iter().filter_map(|s| Some((s.attributes.as_ref()?.id.as_str(), s))).collect();
    let mut out = Vec::new();
    for pod in ctx.index.pods() {
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if critical(&pod) || matches!(phase, Some("Succeeded") | Some("Failed")) {
            continue;
        }
        let (Some(ns), Some(name), Some(uid)) =
            (pod.metadata.namespace.as_deref(), pod.metadata.name.as_deref(), pod.metadata.uid.clone())
        else {
            continue;
        };
        let mut containers = Vec::new();
        for c in pod.spec.iter().flat_map(|s| s.containers.iter()) {
            let Some(instance) = ctx.index.container(ns, name, &c.name) else { continue };
            let Some(s) = by_id.get(instance.id.as_str()) else { continue };
            let usage = if res == "memory" {
                s.memory.as_ref().and_then(|m| m.working_set_bytes.as_ref()).map(|v| v.value).unwrap_or(0)
            } else {
                let layer = s.writable_layer.as_ref().and_then(|w| w.used_bytes.as_ref()).map(|v| v.value).unwrap_or(0);
                layer + std::fs::metadata(&instance.log_path).map(|m| m.len()).unwrap_or(0)
            };
            containers.push(ContainerUse { name: c.name.clone(), usage, request: request_of(c, res) });
        }
        out.push(Candidate { uid, priority: pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0), containers });
    }
    out
}

/// Measures every 10 seconds and evicts one pod per round while a threshold is crossed.
pub async fn run(ctx: Arc<Ctx>, cancel: CancellationToken) {
    let thresholds = ctx.cfg.kubelet.eviction_hard.clone();
    if thresholds.is_empty() {
        return;
    }
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let usage = super::host::usage(Path::new(&ctx.cfg.data_dir));
        let Some(t) = crossed(&thresholds, &usage) else { continue };
        let res = resource(t.signal);
        if !matches!(res, "memory" | "ephemeral-storage") {
            tracing::warn!(resource = res, "the node is low on a resource no pod can be evicted for");
            continue;
        }
        let mut pods = candidates(&ctx, res).await;
        rank(&mut pods);
        let Some(victim) = pods.first() else {
            tracing::warn!(resource = res, "the node is low on a resource and has no pod to evict");
            continue;
        };
        let text = message(t, &usage, victim);
        tracing::warn!(pod_uid = %victim.uid, message = %text, "evicting a pod");
        ctx.evict(&victim.uid, Killed { reason: "Evicted".into(), message: text, disruption: true });
        // Kill at once (hard eviction has no grace period); the relist then wakes the worker,
        // which reports the pod Failed.
        let running = crate::agent::pods::runtime::observe(&ctx.cri, &victim.uid).await.unwrap_or_default();
        for c in running.containers.iter().filter(|c| c.state == ContainerState::ContainerRunning as i32) {
            let _ =
                ctx.cri.runtime().stop_container(StopContainerRequest { container_id: c.id.clone(), timeout: 0 }).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::config::Level;

    fn pod(uid: &str, priority: i32, usage: u64, request: u64) -> Candidate {
        Candidate { uid: uid.into(), priority, containers: vec![ContainerUse { name: "c".into(), usage, request }] }
    }

    #[test]
    fn ranks_as_upstream() {
        let mut pods = vec![
            pod("within-request", 0, 100, 200),
            pod("high-priority-over", 1000, 500, 0),
            pod("small-over", 0, 50, 0),
            pod("big-over", 0, 400, 100),
        ];
        rank(&mut pods);
        let order: Vec<&str> = pods.iter().map(|p| p.uid.as_str()).collect();
        assert_eq!(order, ["big-over", "small-over", "high-priority-over", "within-request"]);
    }

    #[test]
    fn messages_and_quantities_as_upstream() {
        assert_eq!(bytes_quantity(100 << 20), "100Mi");
        assert_eq!(bytes_quantity(1536), "1536");
        assert_eq!(bytes_quantity(3 << 30), "3Gi");
        let t = Threshold { signal: Signal::MemoryAvailable, below: Level::Amount(100 << 20) };
        let u = Usage { memory_available: 50 << 20, memory_total: 1 << 30, ..Default::default() };
        assert_eq!(crossed(std::slice::from_ref(&t), &u), Some(&t));
        assert_eq!(
            message(&t, &u, &pod("p", 0, 300 << 20, 0)),
            "The node was low on resource: memory. Threshold quantity: 100Mi, available: 50Mi. \
             Container c was using 300Mi, request is 0, has larger consumption of memory. "
        );
        let fine = Usage { memory_available: 500 << 20, memory_total: 1 << 30, ..Default::default() };
        assert_eq!(crossed(std::slice::from_ref(&t), &fine), None);
    }
}
