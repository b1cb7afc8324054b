//! The service proxy: makes every node answer for Services, as upstream's kube-proxy does.
//!
//! Start at [`run`]. It watches Services, EndpointSlices and its own Node through informers,
//! turns them into the [`model`] (one [`model::ServicePort`] per proxied port, endpoints
//! chosen as upstream chooses them), renders that per address family with the [`nft`] backend
//! and applies the difference to the rules applied last as one `nft -f -` transaction. After
//! each update, [`conntrack`] deletes the UDP flows of endpoints that left.
//!
//! Invariants: an API client only (informers over a [`kube::Client`]), never the store; owns the
//! `skiff` tables of the `ip` and `ip6` families and touches no other rule; never sends a
//! packet itself. The node-local DNS address is left alone (the agent answers on it).

pub mod conntrack;
pub mod model;
pub mod nft;

use std::io::Write as _;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use crate::runtime::Informer;
use model::{NodeView, ServicePort};
use nft::{Family, Local, Ruleset};

/// How long changes are gathered into one update once the first arrives.
const BATCH: Duration = Duration::from_millis(30);
/// How often the proxy checks that its tables are still there (and restores them if not).
const CHECK_EVERY: Duration = Duration::from_secs(30);
/// The pause after a failed update before the next full one.
const RETRY: Duration = Duration::from_secs(1);

/// Errors of the proxy's boundary with the host.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("cannot run nft: {0} (install the nftables package)")]
    Spawn(#[source] std::io::Error),
    #[error("nft refused the update: {0}")]
    Rejected(String),
}

/// What the proxy needs to know of its node.
#[derive(Debug, Clone)]
pub struct Config {
    pub node_name: String,
    /// Addresses the proxy leaves alone (the cluster DNS address the agent answers on).
    pub skip_ips: Vec<IpAddr>,
}

/// Runs `nft -f -` with `script`.
pub fn apply(script: &str) -> Result<(), ProxyError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(ProxyError::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).map_err(ProxyError::Spawn)?;
    }
    let out = child.wait_with_output().map_err(ProxyError::Spawn)?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first: Vec<&str> = stderr.lines().take(3).collect();
    Err(ProxyError::Rejected(first.join(" | ")))
}

/// Whether the table of `family` still exists.
fn table_exists(family: Family) -> bool {
    Command::new("nft")
        .args(["list", "chain", family.name(), nft::TABLE, "services"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Removes every rule the proxy made (`skiff agent --cleanup`).
pub fn cleanup() -> Result<(), ProxyError> {
    apply(&nft::cleanup_script())
}

/// Whether node ports may answer on 127.0.0.1: only when the kernel routes DNATed loopback
/// traffic (`route_localnet`), which the proxy does not switch on by itself.
fn localhost_nodeports() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv4/conf/all/route_localnet").is_ok_and(|v| v.trim() == "1")
}

/// One family's state: the ruleset the kernel has (`None`: unknown, replace it whole).
struct Applied {
    family: Family,
    rules: Option<Ruleset>,
}

/// Runs the proxy until `cancel` fires. The Service and EndpointSlice informers may be shared
/// with other components (the node-local DNS reads the same caches).
pub async fn run(
    client: Client,
    cfg: Config,
    services: Arc<Informer<Service>>,
    slices: Arc<Informer<EndpointSlice>>,
    cancel: CancellationToken,
) {
    let nodes: Arc<Informer<Node>> = Informer::spawn(
        Api::all(client),
        watcher::Config::default().fields(&format!("metadata.name={}", cfg.node_name)),
        cancel.child_token(),
    );
    let (mut svc_sub, mut slice_sub, mut node_sub) = (services.subscribe(), slices.subscribe(), nodes.subscribe());
    if !(services.synced_or(&cancel).await && slices.synced_or(&cancel).await && nodes.synced_or(&cancel).await) {
        return;
    }
    let view = NodeView { name: cfg.node_name.clone(), skip_ips: cfg.skip_ips.clone() };
    let localhost = localhost_nodeports();
    let mut applied = [Applied { family: Family::V4, rules: None }, Applied { family: Family::V6, rules: None }];
    let mut model: Vec<ServicePort> = Vec::new();
    let mut first = true;
    loop {
        if !first {
            let woke = tokio::select! {
                _ = cancel.cancelled() => return,
                c = crate::runtime::informer::next_change(&mut svc_sub) => c.is_some(),
                c = crate::runtime::informer::next_change(&mut slice_sub) => c.is_some(),
                c = crate::runtime::informer::next_change(&mut node_sub) => c.is_some(),
                _ = tokio::time::sleep(CHECK_EVERY) => {
                    for a in &mut applied {
                        if a.rules.is_some() && !tokio::task::spawn_blocking({
                            let f = a.family;
                            move || table_exists(f)
                        }).await.unwrap_or(false) {
                            tracing::warn!(family = a.family.name(), "the service proxy's table is gone; restoring it");
                            a.rules = None;
                        }
                    }
                    true
                }
            };
            if !woke {
                return;
            }
            tokio::time::sleep(BATCH).await;
            drain(&mut svc_sub);
            drain(&mut slice_sub);
            drain(&mut node_sub);
        }
        first = false;
        let node = nodes.get("", &cfg.node_name);
        let pod_cidrs: Vec<ipnet::IpNet> = node
            .as_ref()
            .and_then(|n| n.spec.as_ref())
            .map(|s| s.pod_cidrs.clone().unwrap_or_else(|| s.pod_cidr.iter().cloned().collect()))
            .unwrap_or_default()
            .iter()
            .filter_map(|c| c.parse().ok())
            .collect();
        let started = std::time::Instant::now();
        let new_model = model::build(&services.list(), &slices.list(), &view);
        let mut failed = false;
        for a in &mut applied {
            let local = Local {
                family: a.family,
                pod_cidr: pod_cidrs
                    .iter()
                    .find(|c| matches!(c, ipnet::IpNet::V4(_)) == (a.family == Family::V4))
                    .copied(),
                localhost_nodeports: localhost,
            };
            let rules = nft::render(&new_model, &local);
            // An IPv6 table only once some Service has an IPv6 address.
            if a.family == Family::V6 && a.rules.is_none() && rules.cluster_ips.is_empty() {
                continue;
            }
            let script = nft::script(a.rules.as_ref(), &rules, &local);
            if script.is_empty() {
                continue;
            }
            let lines = script.lines().count();
            let whole = a.rules.is_none();
            match tokio::task::spawn_blocking(move || apply(&script)).await {
                Ok(Ok(())) => {
                    let (family, elapsed) = (a.family.name(), started.elapsed());
                    if whole {
                        tracing::info!(
                            family,
                            ports = new_model.len(),
                            lines,
                            ?elapsed,
                            "service proxy rules replaced"
                        );
                    } else {
                        tracing::debug!(family, lines, ?elapsed, "service rules applied");
                    }
                    a.rules = Some(rules);
                }
                Ok(Err(e)) => {
                    tracing::error!(family = a.family.name(), error = %e, "cannot apply the service rules; replacing them whole");
                    a.rules = None;
                    failed = true;
                }
                Err(_) => return,
            }
        }
        let stale = conntrack::stale(&model, &new_model);
        if !stale.is_empty() {
            let _ = tokio::task::spawn_blocking(move || conntrack::delete(&stale)).await;
        }
        model = new_model;
        if failed {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(RETRY) => {}
            }
            first = true;
        }
    }
}

/// Drops the changes already waiting: the update that follows reads the caches whole.
fn drain<K>(sub: &mut crate::runtime::Subscription<K>) {
    while sub.try_next().is_some() {}
}
