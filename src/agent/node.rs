//! This node's Node object and heartbeat, as the kubelet keeps them: registration with
//! capacity, addresses, labels and taints; a Lease in `kube-node-lease` renewed every 10 s; and
//! the status (conditions from real measurements, the runtime's health) posted when it
//! changes, and at least once a minute.
//!
//! Taints are set only when the node is first created, as upstream's kubelet does: after that
//! they belong to the cluster's administrators.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    ContainerImage, DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus,
    NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use super::config::{AgentConfig, Level, Signal};
use super::host::{SystemInfo, Usage};
use crate::cri::CriClient;

/// Lease renewal and status check interval (the kubelet's `nodeStatusUpdateFrequency`).
pub const HEARTBEAT: Duration = Duration::from_secs(10);
/// Lease duration (the kubelet's default).
const LEASE_SECONDS: i32 = 40;
/// How often an unchanged status is re-posted.
const STATUS_EVERY: Duration = Duration::from_secs(60);
/// The kubelet version this node reports.
pub const KUBELET_VERSION: &str = concat!("v1.32.0+skiff.", env!("CARGO_PKG_VERSION"));
/// Images listed in the node status, largest first, as upstream's `nodeStatusMaxImages`.
const MAX_IMAGES: usize = 50;

/// What the node is: fixed facts plus the configuration.
pub struct NodeFacts<'a> {
    pub cfg: &'a AgentConfig,
    pub info: &'a SystemInfo,
    /// `containerd://1.6.20`.
    pub runtime_version: String,
}

/// The labels the node gives itself: the well-known ones, then `--node-label`. (A server's
/// node also carries `node-role.kubernetes.io/control-plane`, which no node may set on itself;
/// the server adds it.)
pub fn labels(cfg: &AgentConfig, arch: &str) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = [
        ("kubernetes.io/hostname", cfg.node_name.as_str()),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", arch),
        ("beta.kubernetes.io/os", "linux"),
        ("beta.kubernetes.io/arch", arch),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    labels.extend(cfg.labels.clone());
    labels
}

/// Creates the Node, or takes over an existing one of that name (updating its labels).
pub async fn register(client: &Client, facts: &NodeFacts<'_>) -> Result<(), kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let labels = labels(facts.cfg, facts.info.architecture);
    let node = Node {
        metadata: ObjectMeta {
            name: Some(facts.cfg.node_name.clone()),
            labels: Some(labels.clone()),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            taints: (!facts.cfg.taints.is_empty()).then(|| facts.cfg.taints.clone()),
            ..Default::default()
        }),
        status: None,
    };
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => tracing::info!(node = %facts.cfg.node_name, "node registered"),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let patch = serde_json::json!({"metadata": {"labels": labels}});
            nodes.patch(&facts.cfg.node_name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
            tracing::info!(node = %facts.cfg.node_name, "node already registered; taking it over");
        }
        Err(e) => return Err(e),
    }
    Ok(())
}

/// The runtime's readiness as the Ready condition needs it: `None` when ready, else why not.
pub async fn runtime_problem(cri: &CriClient) -> Option<String> {
    let status = match cri.status().await {
        Ok(s) => s,
        Err(e) => return Some(format!("container runtime is down: {e}")),
    };
    let conditions = status.status.map(|s| s.conditions).unwrap_or_default();
    for wanted in ["RuntimeReady", "NetworkReady"] {
        match conditions.iter().find(|c| c.r#type == wanted) {
            Some(c) if c.status => {}
            Some(c) => {
                let what = if wanted == "RuntimeReady" { "container runtime" } else { "container runtime network" };
                return Some(format!("{what} not ready: {wanted}=false reason:{} message:{}", c.reason, c.message));
            }
            None => {
                return Some(format!("container runtime status check may not have completed yet: {wanted} missing"));
            }
        }
    }
    None
}

/// The four conditions for one measurement; `previous` keeps transition times of unchanged ones.
pub fn conditions(
    cfg: &AgentConfig,
    usage: &Usage,
    not_ready: Option<&str>,
    previous: &[NodeCondition],
) -> Vec<NodeCondition> {
    let now = Time(Utc::now());
    let crossed = |signals: &[Signal]| {
        cfg.kubelet.eviction_hard.iter().any(|t| {
            signals.contains(&t.signal)
                && match t.signal {
                    Signal::MemoryAvailable => t.below.crossed(usage.memory_available, usage.memory_total),
                    Signal::NodefsAvailable | Signal::ImagefsAvailable => {
                        t.below.crossed(usage.fs_available, usage.fs_capacity)
                    }
                    Signal::NodefsInodesFree => {
                        usage.inodes_total > 0 && t.below.crossed(usage.inodes_free, usage.inodes_total)
                    }
                    Signal::PidAvailable => {
                        t.below.crossed(usage.pids_max.saturating_sub(usage.pids_used), usage.pids_max)
                    }
                }
        })
    };
    let memory = crossed(&[Signal::MemoryAvailable]);
    let disk = crossed(&[Signal::NodefsAvailable, Signal::NodefsInodesFree, Signal::ImagefsAvailable]);
    let pid = crossed(&[Signal::PidAvailable]);
    let cond = |type_: &str, status: bool, reason: &str, message: String| {
        let status = if status { "True" } else { "False" };
        let transition = previous
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| now.clone());
        NodeCondition {
            type_: type_.into(),
            status: status.into(),
            reason: Some(reason.into()),
            message: Some(message),
            last_heartbeat_time: Some(now.clone()),
            last_transition_time: Some(transition),
        }
    };
    vec![
        if memory {
            cond(
                "MemoryPressure",
                true,
                "KubeletHasInsufficientMemory",
                "kubelet has insufficient memory available".into(),
            )
        } else {
            cond(
                "MemoryPressure",
                false,
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available".into(),
            )
        },
        if disk {
            cond("DiskPressure", true, "KubeletHasDiskPressure", "kubelet has disk pressure".into())
        } else {
            cond("DiskPressure", false, "KubeletHasNoDiskPressure", "kubelet has no disk pressure".into())
        },
        if pid {
            cond("PIDPressure", true, "KubeletHasInsufficientPID", "kubelet has insufficient PID available".into())
        } else {
            cond("PIDPressure", false, "KubeletHasSufficientPID", "kubelet has sufficient PID available".into())
        },
        match not_ready {
            None => cond("Ready", true, "KubeletReady", "kubelet is posting ready status".into()),
            Some(why) => cond("Ready", false, "KubeletNotReady", why.to_string()),
        },
    ]
}

/// Capacity and allocatable: allocatable leaves out the hard eviction thresholds, as upstream.
pub fn resources(facts: &NodeFacts<'_>, usage: &Usage) -> (BTreeMap<String, Quantity>, BTreeMap<String, Quantity>) {
    let cfg = facts.cfg;
    let reserve = |signal: Signal, capacity: u64| -> u64 {
        cfg.kubelet
            .eviction_hard
            .iter()
            .filter(|t| t.signal == signal)
            .map(|t| match t.below {
                Level::Amount(a) => a,
                Level::Percent(p) => (capacity as f64 * p / 100.0) as u64,
            })
            .max()
            .unwrap_or(0)
    };
    let memory = facts.info.memory_bytes;
    let storage = usage.fs_capacity;
    let capacity: BTreeMap<String, Quantity> = [
        ("cpu", facts.info.cpus.to_string()),
        ("memory", format!("{}Ki", memory / 1024)),
        ("ephemeral-storage", format!("{}Ki", storage / 1024)),
        ("pods", cfg.kubelet.max_pods.to_string()),
        ("hugepages-2Mi", "0".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), Quantity(v)))
    .collect();
    let mut allocatable = capacity.clone();
    let mem_alloc = memory.saturating_sub(reserve(Signal::MemoryAvailable, memory));
    allocatable.insert("memory".into(), Quantity(format!("{}Ki", mem_alloc / 1024)));
    let fs_alloc = storage.saturating_sub(reserve(Signal::NodefsAvailable, storage));
    allocatable.insert("ephemeral-storage".into(), Quantity(fs_alloc.to_string()));
    (capacity, allocatable)
}

/// The whole status the agent owns.
pub fn status(
    facts: &NodeFacts<'_>,
    usage: &Usage,
    conditions: Vec<NodeCondition>,
    images: Vec<ContainerImage>,
) -> NodeStatus {
    let cfg = facts.cfg;
    let (capacity, allocatable) = resources(facts, usage);
    let mut addresses: Vec<NodeAddress> =
        cfg.node_ips.iter().map(|ip| NodeAddress { type_: "InternalIP".into(), address: ip.to_string() }).collect();
    addresses
        .extend(cfg.external_ips.iter().map(|ip| NodeAddress { type_: "ExternalIP".into(), address: ip.to_string() }));
    addresses.push(NodeAddress { type_: "Hostname".into(), address: cfg.node_name.clone() });
    NodeStatus {
        capacity: Some(capacity),
        allocatable: Some(allocatable),
        conditions: Some(conditions),
        addresses: Some(addresses),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint { port: cfg.kubelet.port as i32 }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: facts.info.architecture.into(),
            operating_system: "linux".into(),
            os_image: facts.info.os_image.clone(),
            kernel_version: facts.info.kernel_version.clone(),
            container_runtime_version: facts.runtime_version.clone(),
            kubelet_version: KUBELET_VERSION.into(),
            kube_proxy_version: String::new(),
            machine_id: facts.info.machine_id.clone(),
            system_uuid: String::new(),
            boot_id: facts.info.boot_id.clone(),
        }),
        images: (!images.is_empty()).then_some(images),
        ..Default::default()
    }
}

/// The node's images for its status: names and sizes, largest first.
pub async fn images(cri: &CriClient) -> Vec<ContainerImage> {
    let Ok(resp) = cri.images().list_images(crate::cri::proto::ListImagesRequest { filter: None }).await else {
        return Vec::new();
    };
    let mut list: Vec<ContainerImage> = resp
        .into_inner()
        .images
        .into_iter()
        .map(|i| {
            let mut names = i.repo_tags;
            names.extend(i.repo_digests);
            ContainerImage { names: Some(names), size_bytes: Some(i.size as i64) }
        })
        .collect();
    list.sort_by_key(|i| std::cmp::Reverse(i.size_bytes));
    list.truncate(MAX_IMAGES);
    list
}

/// Renews the Lease and keeps the status current until `cancel` fires.
/// `wake` cuts a wait short (the network became ready), so a new node is Ready as soon as it
/// can be rather than at the next heartbeat.
pub async fn heartbeat(
    client: Client,
    cri: CriClient,
    facts: NodeFacts<'_>,
    cancel: CancellationToken,
    wake: std::sync::Arc<tokio::sync::Notify>,
) {
    let name = facts.cfg.node_name.clone();
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let nodes: Api<Node> = Api::all(client);
    let agent_dir = facts.cfg.agent_dir();
    let mut last_posted: Option<(NodeStatus, tokio::time::Instant)> = None;
    let mut node_uid: Option<String> = None;
    loop {
        let current = nodes.get(&name).await;
        match &current {
            Ok(node) => node_uid = node.metadata.uid.clone(),
            Err(kube::Error::Api(e)) if e.code == 404 => {
                // Deleted by an administrator: register again, as the kubelet does.
                if let Err(e) = register(&nodes.clone().into_client(), &facts).await {
                    tracing::warn!(node = %name, error = %e, "cannot re-register the node");
                }
                last_posted = None;
            }
            Err(e) => tracing::debug!(node = %name, error = %e, "cannot read the node"),
        }
        if let Some(uid) = &node_uid
            && let Err(e) = renew(&leases, &name, uid).await
        {
            tracing::debug!(node = %name, error = %e, "cannot renew the node lease");
        }
        let previous = current.as_ref().ok().and_then(|n| n.status.as_ref()).and_then(|s| s.conditions.clone());
        let usage = super::host::usage(&agent_dir);
        let problem = runtime_problem(&cri).await;
        let conds = conditions(facts.cfg, &usage, problem.as_deref(), previous.as_deref().unwrap_or(&[]));
        let status = status(&facts, &usage, conds, images(&cri).await);
        let due = match &last_posted {
            None => true,
            Some((last, at)) => at.elapsed() >= STATUS_EVERY || !same_apart_from_heartbeats(last, &status),
        };
        // A node the lifecycle controller marked Unknown needs its status back at once.
        let marked_unknown = previous
            .as_deref()
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .is_some_and(|c| c.status == "Unknown");
        if due || marked_unknown {
            let patch = serde_json::json!({"status": status});
            match nodes.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => last_posted = Some((status, tokio::time::Instant::now())),
                Err(e) => tracing::warn!(node = %name, error = %e, "cannot post the node status"),
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(HEARTBEAT) => {}
            _ = wake.notified() => {}
        }
    }
}

/// Whether two statuses differ only in heartbeat times and measured amounts that do not matter.
fn same_apart_from_heartbeats(a: &NodeStatus, b: &NodeStatus) -> bool {
    let strip = |s: &NodeStatus| {
        let mut s = s.clone();
        for c in s.conditions.iter_mut().flatten() {
            c.last_heartbeat_time = None;
        }
        s
    };
    strip(a) == strip(b)
}

async fn renew(leases: &Api<Lease>, name: &str, node_uid: &str) -> Result<(), kube::Error> {
    let spec = LeaseSpec {
        holder_identity: Some(name.to_string()),
        lease_duration_seconds: Some(LEASE_SECONDS),
        renew_time: Some(MicroTime(Utc::now())),
        ..Default::default()
    };
    match leases.get_opt(name).await? {
        Some(mut lease) => {
            lease.spec = Some(spec);
            leases.replace(name, &PostParams::default(), &lease).await.map(|_| ())
        }
        None => {
            // Owned by the Node, so deleting the Node removes its Lease.
            let owner = OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name: name.to_string(),
                uid: node_uid.to_string(),
                ..Default::default()
            };
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.to_string()),
                    owner_references: Some(vec![owner]),
                    ..Default::default()
                },
                spec: Some(spec),
            };
            leases.create(&PostParams::default(), &lease).await.map(|_| ())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::config::{NodeDefaults, NodeFlags};

    fn cfg() -> AgentConfig {
        NodeFlags { node_name: Some("pi".into()), node_label: vec!["zone=a".into()], ..Default::default() }
            .to_config(NodeDefaults {
                data_dir: "/d".into(),
                node_ip: Some([10, 0, 0, 5].into()),
                cluster_dns: [10, 43, 0, 10].into(),
                cluster_domain: "cluster.local".into(),
            })
            .unwrap()
    }

    fn usage() -> Usage {
        Usage {
            memory_available: 4 << 30,
            memory_total: 8 << 30,
            fs_available: 50 << 30,
            fs_capacity: 100 << 30,
            inodes_free: 1000,
            inodes_total: 2000,
            pids_max: 32768,
            pids_used: 200,
        }
    }

    #[test]
    fn a_node_labels_itself_with_what_it_may_set() {
        let l = labels(&cfg(), "arm64");
        assert_eq!(l["kubernetes.io/arch"], "arm64");
        assert_eq!(l["kubernetes.io/hostname"], "pi");
        assert!(!l.contains_key("node-role.kubernetes.io/control-plane"));
        assert_eq!(l["zone"], "a");
    }

    #[test]
    fn pressure_follows_the_thresholds_and_keeps_transition_times() {
        let c = cfg();
        let ok = conditions(&c, &usage(), None, &[]);
        let status: Vec<(&str, &str)> = ok.iter().map(|c| (c.type_.as_str(), c.status.as_str())).collect();
        assert_eq!(
            status,
            [("MemoryPressure", "False"), ("DiskPressure", "False"), ("PIDPressure", "False"), ("Ready", "True")]
        );
        let low = Usage { memory_available: 50 << 20, fs_available: 5 << 30, ..usage() };
        let bad = conditions(&c, &low, Some("container runtime network not ready"), &ok);
        assert_eq!(bad[0].status, "True");
        assert_eq!(bad[0].reason.as_deref(), Some("KubeletHasInsufficientMemory"));
        assert_eq!(bad[1].status, "True");
        assert_eq!(bad[3].status, "False");
        assert_eq!(bad[3].message.as_deref(), Some("container runtime network not ready"));
        assert_eq!(bad[2].last_transition_time, ok[2].last_transition_time, "PIDPressure did not change");
    }

    #[test]
    fn allocatable_leaves_out_the_eviction_reserve() {
        let c = cfg();
        let info = super::super::host::SystemInfo {
            cpus: 4,
            memory_bytes: 8 << 30,
            kernel_version: "6.1".into(),
            os_image: "Debian".into(),
            architecture: "arm64",
            machine_id: String::new(),
            boot_id: String::new(),
        };
        let facts = NodeFacts { cfg: &c, info: &info, runtime_version: "containerd://1.6.20".into() };
        let (cap, alloc) = resources(&facts, &usage());
        assert_eq!(cap["memory"].0, "8388608Ki");
        assert_eq!(alloc["memory"].0, "8286208Ki");
        assert_eq!(cap["pods"].0, "110");
        assert_eq!(cap["cpu"].0, "4");
    }
}
