//! `/stats/summary`: the node's and its pods' resource usage in upstream's `Summary` shape
//! (`k8s.io/kubelet/pkg/apis/stats/v1alpha1`), which metrics-server and `kubectl get --raw
//! /api/v1/nodes/NODE/proxy/stats/summary` read.
//!
//! The node's figures come from `/proc` and `statvfs` ([`crate::agent::host`]); containers'
//! from CRI's `ListContainerStats`, matched to pods through [`super::PodSource`]. A pod's CPU
//! and memory are its containers' sums. CPU rates (`usageNanoCores`) need two samples: the
//! node's is computed against the previous request's sample; containers' are containerd's.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use serde_json::{Map, Value, json};

use crate::agent::host;
use crate::cri::CriClient;
use crate::cri::proto::{ContainerStats, ImageFsInfoRequest, ListContainerStatsRequest};

use super::PodSource;

/// The previous node CPU sample, for `usageNanoCores`.
#[derive(Default)]
pub(super) struct CpuSampler {
    last: Mutex<Option<(Instant, u64)>>,
}

impl CpuSampler {
    /// The busy time now, and the rate since the previous call (None on the first).
    fn sample(&self) -> (Option<u64>, Option<u64>) {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let Some(busy) = host::cpu_busy_ns(&stat) else { return (None, None) };
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let rate = last.and_then(|(t, b)| {
            let secs = now.duration_since(t).as_secs_f64();
            (secs > 0.0).then(|| (busy.saturating_sub(b) as f64 / secs) as u64)
        });
        *last = Some((now, busy));
        (Some(busy), rate)
    }
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn now() -> String {
    rfc3339(chrono::Utc::now())
}

fn from_nanos(ns: i64) -> String {
    rfc3339(chrono::DateTime::from_timestamp_nanos(ns))
}

/// Drops nulls, as Go's `omitempty` pointers do.
fn compact(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.into_iter().filter(|(_, v)| !v.is_null()).collect::<Map<_, _>>()),
        other => other,
    }
}

/// A file system's usage in upstream's `FsStats` shape.
fn fs_stats(path: &Path, used: Option<u64>, inodes_used: Option<u64>) -> Value {
    let u = host::usage(path);
    compact(json!({
        "time": now(),
        "availableBytes": u.fs_available,
        "capacityBytes": u.fs_capacity,
        "usedBytes": used.unwrap_or(u.fs_capacity.saturating_sub(u.fs_available)),
        "inodesFree": u.inodes_free,
        "inodes": u.inodes_total,
        "inodesUsed": inodes_used.unwrap_or(u.inodes_total.saturating_sub(u.inodes_free)),
    }))
}

fn cpu_of(s: &ContainerStats) -> Value {
    let Some(c) = &s.cpu else { return Value::Null };
    compact(json!({
        "time": from_nanos(c.timestamp),
        "usageNanoCores": c.usage_nano_cores.as_ref().map(|v| v.value),
        "usageCoreNanoSeconds": c.usage_core_nano_seconds.as_ref().map(|v| v.value),
    }))
}

fn memory_of(s: &ContainerStats) -> Value {
    let Some(m) = &s.memory else { return Value::Null };
    let v = |x: &Option<crate::cri::proto::UInt64Value>| x.as_ref().map(|v| v.value);
    compact(json!({
        "time": from_nanos(m.timestamp),
        "availableBytes": v(&m.available_bytes),
        "usageBytes": v(&m.usage_bytes),
        "workingSetBytes": v(&m.working_set_bytes),
        "rssBytes": v(&m.rss_bytes),
        "pageFaults": v(&m.page_faults),
        "majorPageFaults": v(&m.major_page_faults),
    }))
}

/// Sums a field over containers' stats objects; None when no container has it.
fn sum(items: &[&Value], key: &str) -> Option<u64> {
    let vals: Vec<u64> = items.iter().filter_map(|v| v.get(key).and_then(Value::as_u64)).collect();
    (!vals.is_empty()).then(|| vals.iter().sum())
}

/// The size of a file, or 0.
fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// Builds the summary. `nodefs` is the agent's data dir, whose file system holds logs and
/// volumes.
pub(super) async fn summary(
    node_name: &str,
    nodefs: &Path,
    cri: &CriClient,
    pods: &dyn PodSource,
    cpu: &CpuSampler,
) -> Value {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kib = |k: &str| host::meminfo_kib(&meminfo, k).map(|v| v * 1024);
    let (busy, rate) = cpu.sample();
    let total = kib("MemTotal").unwrap_or(0);
    let available = kib("MemAvailable").unwrap_or(0);
    let usage = total.saturating_sub(kib("MemFree").unwrap_or(0));
    let ifaces = host::interfaces(&std::fs::read_to_string("/proc/net/dev").unwrap_or_default());
    let iface = |i: &host::InterfaceStats| json!({"name": i.name, "rxBytes": i.rx_bytes, "rxErrors": i.rx_errors, "txBytes": i.tx_bytes, "txErrors": i.tx_errors});
    let network = ifaces.first().map(|first| {
        let mut n = iface(first);
        n["time"] = json!(now());
        n["interfaces"] = Value::Array(ifaces.iter().map(iface).collect());
        n
    });
    let image_fs = cri
        .images()
        .image_fs_info(ImageFsInfoRequest {})
        .await
        .ok()
        .and_then(|r| r.into_inner().image_filesystems.into_iter().next())
        .and_then(|f| {
            let mount = f.fs_id?.mountpoint;
            Some(fs_stats(Path::new(&mount), f.used_bytes.map(|v| v.value), f.inodes_used.map(|v| v.value)))
        });
    let u = host::usage(nodefs);
    let node = compact(json!({
        "nodeName": node_name,
        "startTime": host::boot_time(&stat).and_then(|t| chrono::DateTime::from_timestamp(t, 0)).map(rfc3339),
        "cpu": compact(json!({"time": now(), "usageNanoCores": rate, "usageCoreNanoSeconds": busy})),
        "memory": {
            "time": now(),
            "availableBytes": available,
            "usageBytes": usage,
            "workingSetBytes": usage.saturating_sub(kib("Inactive(file)").unwrap_or(0)),
            "rssBytes": kib("AnonPages"),
        },
        "network": network,
        "fs": fs_stats(nodefs, None, None),
        "runtime": image_fs.map(|f| json!({"imageFs": f})),
        "rlimit": {"time": now(), "maxpid": u.pids_max, "curproc": u.pids_used},
    }));

    let stats: HashMap<String, ContainerStats> = cri
        .runtime()
        .list_container_stats(ListContainerStatsRequest { filter: None })
        .await
        .map(|r| r.into_inner().stats)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|s| Some((s.attributes.as_ref()?.id.clone(), s)))
        .collect();
    let mut out_pods = Vec::new();
    for pod in pods.pods() {
        let (Some(ns), Some(name)) = (pod.metadata.namespace.as_deref(), pod.metadata.name.as_deref()) else {
            continue;
        };
        let spec_names: Vec<String> =
            pod.spec.iter().flat_map(|s| s.containers.iter().map(|c| c.name.clone())).collect();
        let statuses = pod.status.as_ref().and_then(|s| s.container_statuses.clone()).unwrap_or_default();
        let mut containers = Vec::new();
        let mut ephemeral_used = 0u64;
        for cname in &spec_names {
            let Some(c) = pods.container(ns, name, cname) else { continue };
            let Some(s) = stats.get(&c.id) else { continue };
            let logs_used = file_size(&c.log_path);
            let rootfs_used = s.writable_layer.as_ref().and_then(|w| w.used_bytes.as_ref()).map(|v| v.value);
            ephemeral_used += logs_used + rootfs_used.unwrap_or(0);
            let started = statuses
                .iter()
                .find(|st| &st.name == cname)
                .and_then(|st| st.state.as_ref()?.running.as_ref()?.started_at.as_ref())
                .map(|t| rfc3339(t.0));
            let mut rootfs = image_fs_like(&u, rootfs_used);
            if let Some(i) = s.writable_layer.as_ref().and_then(|w| w.inodes_used.as_ref()) {
                rootfs["inodesUsed"] = json!(i.value);
            }
            containers.push(compact(json!({
                "name": cname,
                "startTime": started,
                "cpu": cpu_of(s),
                "memory": memory_of(s),
                "rootfs": rootfs,
                "logs": image_fs_like(&u, Some(logs_used)),
            })));
        }
        let cpus: Vec<&Value> = containers.iter().filter_map(|c| c.get("cpu")).collect();
        let mems: Vec<&Value> = containers.iter().filter_map(|c| c.get("memory")).collect();
        let pod_cpu = (!cpus.is_empty()).then(|| {
            compact(json!({
                "time": now(),
                "usageNanoCores": sum(&cpus, "usageNanoCores"),
                "usageCoreNanoSeconds": sum(&cpus, "usageCoreNanoSeconds"),
            }))
        });
        let pod_memory = (!mems.is_empty()).then(|| {
            compact(json!({
                "time": now(),
                "usageBytes": sum(&mems, "usageBytes"),
                "workingSetBytes": sum(&mems, "workingSetBytes"),
                "rssBytes": sum(&mems, "rssBytes"),
                "pageFaults": sum(&mems, "pageFaults"),
                "majorPageFaults": sum(&mems, "majorPageFaults"),
            }))
        });
        let start = pod.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| rfc3339(t.0));
        out_pods.push(compact(json!({
            "podRef": {"name": name, "namespace": ns, "uid": pod.metadata.uid.clone().unwrap_or_default()},
            "startTime": start,
            "containers": containers,
            "cpu": pod_cpu,
            "memory": pod_memory,
            "ephemeral-storage": image_fs_like(&u, Some(ephemeral_used)),
        })));
    }
    out_pods.sort_by(|a, b| {
        let key = |v: &Value| (v["podRef"]["namespace"].to_string(), v["podRef"]["name"].to_string());
        key(a).cmp(&key(b))
    });
    json!({"node": node, "pods": out_pods})
}

/// Usage of something stored on the node's file system: its own bytes, the file system's
/// capacity and free space.
fn image_fs_like(u: &host::Usage, used: Option<u64>) -> Value {
    compact(json!({
        "time": now(),
        "availableBytes": u.fs_available,
        "capacityBytes": u.fs_capacity,
        "usedBytes": used,
        "inodesFree": u.inodes_free,
        "inodes": u.inodes_total,
    }))
}
