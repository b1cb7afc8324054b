//! The pod network between nodes: every node's pod CIDR reachable from every other node, with
//! pods' own addresses kept, and pod traffic to anything outside the cluster masqueraded.
//!
//! Start at [`run`]. It watches all Nodes. With `vxlan` (the default, as flannel's backend) it
//! keeps a VXLAN device ([`DEVICE`], VNI 1, UDP 8472) whose MAC and the node's address it
//! publishes as annotations of its own Node ([`VTEP_MAC_ANNOTATION`], [`PUBLIC_IP_ANNOTATION`]);
//! for every other node it keeps a route to that node's pod CIDR through the device, a
//! permanent neighbour entry for the node's gateway address and a forwarding entry sending that
//! MAC to the node's address. With `host-gw` the routes go straight to the other nodes'
//! addresses (all nodes on one L2 segment). With `none` nothing is routed. In every mode
//! [`masquerade`] keeps the table `ip skiff-overlay`: pod traffic to addresses outside every
//! node's pod CIDR leaves with the node's address.
//!
//! The plan is data ([`plan`], pure); [`host`] carries it out with iproute2's `ip` and `bridge`
//! and `nft`, and lists what it finds so entries of nodes that left are removed.
//!
//! Invariants: an API client only (reads Nodes as the service proxy, which may list them;
//! patches its own Node's annotations as the node); touches only its
//! device, the routes it marked with [`ROUTE_PROTO`], and its nftables table.

pub mod host;
pub mod plan;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use crate::runtime::Informer;
use crate::runtime::informer::next_change;

/// The VXLAN device (flannel's is `flannel.1`).
pub const DEVICE: &str = "skiff.1";
/// VXLAN network identifier and UDP port (flannel's defaults).
pub const VNI: u32 = 1;
pub const VXLAN_PORT: u16 = 8472;
/// The Node annotation holding a node's VTEP MAC address.
pub const VTEP_MAC_ANNOTATION: &str = "overlay.skiff.io/vtep-mac";
/// The Node annotation holding the address other nodes send its pods' traffic to.
pub const PUBLIC_IP_ANNOTATION: &str = "overlay.skiff.io/public-ip";
/// The Node annotation naming its backend; nodes of another backend are not routed to.
pub const BACKEND_ANNOTATION: &str = "overlay.skiff.io/backend";
/// The routing protocol number marking the routes this room owns.
pub const ROUTE_PROTO: u8 = 83;
/// How often the host is checked against the plan even without changes.
const RESYNC: Duration = Duration::from_secs(30);

/// How pod traffic crosses between nodes (`--overlay`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// VXLAN between nodes: works across routed networks.
    Vxlan,
    /// Plain routes to the other nodes' addresses: all nodes on one L2 segment.
    HostGw,
    /// No routes between nodes (a single node, or another network plugin routes).
    None,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Vxlan => "vxlan",
            Backend::HostGw => "host-gw",
            Backend::None => "none",
        }
    }
}

/// Errors at the host boundary.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error("cannot run {cmd}: {source}")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{cmd}: {stderr}")]
    Failed { cmd: String, stderr: String },
}

/// What the overlay needs to know of its node.
#[derive(Debug, Clone)]
pub struct Config {
    pub node_name: String,
    /// The address other nodes reach this one at (its first InternalIP).
    pub node_ip: IpAddr,
    pub backend: Backend,
}

/// Runs until `cancel` fires. `reader` lists all Nodes (a node may read only its own: the
/// service proxy's identity may read them all); `client`, the node's, patches its own.
pub async fn run(client: Client, reader: Client, cfg: Config, cancel: CancellationToken) {
    let nodes: Arc<Informer<Node>> =
        Informer::spawn(Api::all(reader), kube::runtime::watcher::Config::default(), cancel.child_token());
    let mut changes = nodes.subscribe();
    if !nodes.synced_or(&cancel).await {
        return;
    }
    let api: Api<Node> = Api::all(client);
    let mut published: Option<BTreeMap<String, String>> = None;
    let mut failing = false;
    loop {
        let own = nodes.get("", &cfg.node_name);
        let own_cidr = own.as_ref().and_then(|n| plan::pod_cidr(n));
        if let Some(own_cidr) = own_cidr {
            let result = tokio::task::spawn_blocking({
                let (cfg, all) = (cfg.clone(), nodes.list());
                move || sync(&cfg, own_cidr, &all)
            })
            .await;
            match result {
                Ok(Ok(annotations)) => {
                    if failing {
                        tracing::info!("the pod network between nodes is set up again");
                        failing = false;
                    }
                    let current = own.as_ref().and_then(|n| n.metadata.annotations.clone()).unwrap_or_default();
                    let missing = annotations.iter().any(|(k, v)| current.get(k) != Some(v));
                    if missing && published.as_ref() != Some(&annotations) {
                        let patch = serde_json::json!({"metadata": {"annotations": annotations}});
                        match api.patch(&cfg.node_name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                            Ok(_) => published = Some(annotations),
                            Err(e) => tracing::warn!(error = %e, "cannot publish the node's overlay address"),
                        }
                    } else if !missing {
                        published = Some(annotations);
                    }
                }
                Ok(Err(e)) => {
                    if !failing {
                        tracing::error!(error = %e, "cannot set up the pod network between nodes; retrying");
                    }
                    failing = true;
                }
                Err(_) => return,
            }
        }
        let wait = if failing { Duration::from_secs(2) } else { RESYNC };
        tokio::select! {
            _ = cancel.cancelled() => return,
            c = next_change(&mut changes) => if c.is_none() { return },
            _ = tokio::time::sleep(wait) => {}
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        while changes.try_next().is_some() {}
    }
}

/// One pass: the device, routes, neighbours and forwarding entries, and the masquerade table.
/// Returns the annotations this node should carry.
fn sync(cfg: &Config, own_cidr: ipnet::Ipv4Net, all: &[Arc<Node>]) -> Result<BTreeMap<String, String>, OverlayError> {
    let mut annotations = BTreeMap::new();
    annotations.insert(BACKEND_ANNOTATION.to_string(), cfg.backend.name().to_string());
    annotations.insert(PUBLIC_IP_ANNOTATION.to_string(), cfg.node_ip.to_string());
    let peers = plan::peers(&cfg.node_name, cfg.backend, all);
    match cfg.backend {
        Backend::Vxlan => {
            let IpAddr::V4(local) = cfg.node_ip else {
                return Err(OverlayError::Failed {
                    cmd: "vxlan".into(),
                    stderr: format!("the node address {} is not IPv4", cfg.node_ip),
                });
            };
            let mac = host::ensure_vxlan(local, plan::gateway(own_cidr))?;
            annotations.insert(VTEP_MAC_ANNOTATION.to_string(), mac);
            host::sync_vxlan_peers(&peers)?;
        }
        Backend::HostGw => host::sync_routes(&peers, None)?,
        Backend::None => {}
    }
    let mut cidrs: Vec<ipnet::Ipv4Net> = all.iter().filter_map(|n| plan::pod_cidr(n)).collect();
    cidrs.push(own_cidr);
    cidrs.sort();
    cidrs.dedup();
    host::apply_nft(&plan::masquerade(own_cidr, &cidrs))?;
    Ok(annotations)
}

/// Removes the device and the table (`skiff agent --cleanup`); routes through the device go
/// with it.
pub fn cleanup() -> Result<(), OverlayError> {
    host::delete_vxlan()?;
    host::sync_routes(&[], None)?;
    host::apply_nft("add table ip skiff-overlay\ndelete table ip skiff-overlay\n")
}
