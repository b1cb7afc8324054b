//! A simulated node's Node object and its heartbeat (a Lease in `kube-node-lease` renewed every
//! 10 s, and the Ready condition re-posted every minute), as a kubelet keeps them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus, NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use super::{SIMULATED_LABEL, SimConfig};

/// Lease renewal interval (the kubelet's default).
const LEASE_RENEW: Duration = Duration::from_secs(10);
/// Lease duration (the kubelet's default).
const LEASE_SECONDS: i32 = 40;
/// How often the node status is re-posted when nothing changed.
const STATUS_EVERY: Duration = Duration::from_secs(60);

/// The fake address of node `index`, from the benchmarking range 198.18.0.0/15 (never routed).
fn address(name: &str) -> String {
    let h = name.bytes().fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
    format!("198.18.{}.{}", (h >> 8) % 256, (h % 254) + 1)
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        other => other,
    }
}

fn conditions(now: &Time) -> Vec<NodeCondition> {
    let cond = |type_: &str, status: &str, reason: &str, message: &str| NodeCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(now.clone()),
    };
    vec![
        cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
        cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        cond("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
    ]
}

fn status(cfg: &SimConfig, name: &str) -> NodeStatus {
    let now = Time(Utc::now());
    let resources: BTreeMap<String, Quantity> = [
        ("cpu", cfg.cpu.clone()),
        ("memory", cfg.memory.clone()),
        ("pods", cfg.max_pods.to_string()),
        ("ephemeral-storage", "100Gi".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), Quantity(v)))
    .collect();
    NodeStatus {
        capacity: Some(resources.clone()),
        allocatable: Some(resources),
        conditions: Some(conditions(&now)),
        addresses: Some(vec![
            NodeAddress { type_: "InternalIP".into(), address: address(name) },
            NodeAddress { type_: "Hostname".into(), address: name.to_string() },
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints { kubelet_endpoint: Some(DaemonEndpoint { port: 10250 }) }),
        node_info: Some(NodeSystemInfo {
            architecture: arch().into(),
            operating_system: "linux".into(),
            os_image: "skiff simulated node".into(),
            kernel_version: "simulated".into(),
            container_runtime_version: "sim://0".into(),
            kubelet_version: format!("v1.32.0-skiff-sim.{}", env!("CARGO_PKG_VERSION")),
            kube_proxy_version: String::new(),
            machine_id: String::new(),
            system_uuid: String::new(),
            boot_id: String::new(),
        }),
        ..Default::default()
    }
}

/// Creates the Node (or takes over an existing one of that name) and posts its status.
pub async fn register(client: &Client, cfg: &SimConfig, name: &str) -> Result<(), kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut labels: BTreeMap<String, String> = [
        ("kubernetes.io/hostname", name),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", arch()),
        ("beta.kubernetes.io/os", "linux"),
        ("beta.kubernetes.io/arch", arch()),
        (SIMULATED_LABEL, "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    labels.extend(cfg.labels.iter().cloned());
    let node = Node {
        metadata: ObjectMeta { name: Some(name.into()), labels: Some(labels), ..Default::default() },
        spec: Some(NodeSpec { taints: (!cfg.taints.is_empty()).then(|| cfg.taints.clone()), ..Default::default() }),
        status: None,
    };
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e),
    }
    post_status(&nodes, cfg, name).await
}

async fn post_status(nodes: &Api<Node>, cfg: &SimConfig, name: &str) -> Result<(), kube::Error> {
    let patch = serde_json::json!({"status": status(cfg, name)});
    nodes.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(|_| ())
}

/// Renews the node's Lease and re-posts its status until `cancel` fires.
pub async fn heartbeat(client: Client, cfg: Arc<SimConfig>, name: String, cancel: CancellationToken) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let nodes: Api<Node> = Api::all(client);
    let mut last_status = tokio::time::Instant::now();
    loop {
        if let Err(e) = renew(&leases, &name).await {
            tracing::debug!(node = %name, error = %e, "cannot renew the node lease");
        }
        if last_status.elapsed() >= STATUS_EVERY || !is_ready(&nodes, &name).await {
            if let Err(e) = post_status(&nodes, &cfg, &name).await {
                tracing::debug!(node = %name, error = %e, "cannot post node status");
            }
            last_status = tokio::time::Instant::now();
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(LEASE_RENEW) => {}
        }
    }
}

/// Whether the node still says Ready (the node lifecycle controller marks it Unknown when the
/// heartbeat stopped; a returning kubelet re-posts its status at once).
async fn is_ready(nodes: &Api<Node>, name: &str) -> bool {
    let Ok(node) = nodes.get_status(name).await else { return true };
    node.status
        .and_then(|s| s.conditions)
        .and_then(|c| c.into_iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

async fn renew(leases: &Api<Lease>, name: &str) -> Result<(), kube::Error> {
    let now = MicroTime(Utc::now());
    let spec = LeaseSpec {
        holder_identity: Some(name.to_string()),
        lease_duration_seconds: Some(LEASE_SECONDS),
        renew_time: Some(now),
        ..Default::default()
    };
    match leases.get_opt(name).await? {
        Some(mut lease) => {
            lease.spec = Some(spec);
            leases.replace(name, &PostParams::default(), &lease).await.map(|_| ())
        }
        None => {
            let lease =
                Lease { metadata: ObjectMeta { name: Some(name.to_string()), ..Default::default() }, spec: Some(spec) };
            leases.create(&PostParams::default(), &lease).await.map(|_| ())
        }
    }
}
