//! The service proxy: makes every node answer for Services, as upstream's kube-proxy does.
//!
//! Start at [`run`]. It watches Services, EndpointSlices and its own Node through informers,
//! turns them into the [`model`] (one [`model::ServicePort`] per proxied port, endpoints
//! chosen as upstream chooses them), renders that per address family with a [`Backend`] and
//! applies the difference to the rules applied last as one transaction: [`nft`] (`nft -f -`,
//! the default) or [`iptables`] (`iptables-restore`, for hosts without nftables). After each
//! update, [`conntrack`] deletes the UDP flows of endpoints that left, and [`health`] serves
//! the health-check node ports of `externalTrafficPolicy: Local` load balancers.
//!
//! Invariants: an API client only (informers over a [`kube::Client`]), never the store; owns the
//! `skiff` tables of the `ip` and `ip6` families (or the `SKIFF-` chains and the jumps into
//! them) and touches no other rule; never sends a packet itself. The node-local DNS address is
//! left alone (the agent answers on it).

pub mod conntrack;
pub mod health;
pub mod iptables;
pub mod model;
pub mod nft;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use crate::runtime::Informer;
use model::{NodeView, ServicePort};
pub use nft::apply;

/// How long changes are gathered into one update once the first arrives.
const BATCH: Duration = Duration::from_millis(30);
/// How often the proxy checks that its rules are still there (and restores them if not).
const CHECK_EVERY: Duration = Duration::from_secs(30);
/// The pause after a failed update before the next full one.
const RETRY: Duration = Duration::from_secs(1);
/// The packet mark bit that asks for masquerading (the bit upstream's proxies use).
pub const MASQ_MARK: u32 = 0x4000;

/// Errors of the proxy's boundary with the host.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("cannot run {program}: {source} (install the {package} package)")]
    Spawn {
        program: String,
        package: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} refused the update: {message}")]
    Rejected { program: String, message: String },
}

/// How the proxy programs the kernel (`--proxy-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// nftables when it works on the host, else iptables.
    Auto,
    Nftables,
    Iptables,
}

impl Mode {
    /// The backend to use on this host: for `auto` nftables when `nft` answers, else iptables
    /// when `iptables-save` does; a backend named explicitly only when its tool works. `None`
    /// when nothing usable is left.
    pub fn resolve(self) -> Option<Mode> {
        let (nft, ipt) = (nft::available, iptables::available);
        match self {
            Mode::Auto if nft() => Some(Mode::Nftables),
            Mode::Auto if ipt() => Some(Mode::Iptables),
            Mode::Nftables if nft() => Some(Mode::Nftables),
            Mode::Iptables if ipt() => Some(Mode::Iptables),
            _ => None,
        }
    }
}

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// The nft family keyword, also the address expression's prefix.
    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }

    fn has(self, ip: &IpAddr) -> bool {
        ip.is_ipv4() == (self == Family::V4)
    }

    fn loopback(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.0/8",
            Family::V6 => "::1/128",
        }
    }
}

/// Facts of the node the rules depend on, per family.
#[derive(Debug, Clone)]
pub struct Local {
    pub family: Family,
    /// The node's pod CIDR in this family: traffic from it is from a pod of this node.
    pub pod_cidr: Option<IpNet>,
    /// Node ports also answer on 127.0.0.1 (`route_localnet` is on).
    pub localhost_nodeports: bool,
}

/// The first `chars` characters (at most 51) of the base-32 SHA-256 of `text`: keeps generated
/// chain names unique and short.
pub fn short_hash(text: &str, chars: usize) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let d = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let bytes = d.as_ref();
    (0..chars.min(51))
        .map(|i| {
            let bit = i * 5;
            let pair = u16::from(bytes[bit / 8]) << 8 | u16::from(*bytes.get(bit / 8 + 1).unwrap_or(&0));
            ALPHABET[usize::from(pair >> (11 - bit % 8)) & 31] as char
        })
        .collect()
}

/// What the proxy needs to know of its node.
#[derive(Debug, Clone)]
pub struct Config {
    pub node_name: String,
    /// Addresses the proxy leaves alone (the cluster DNS address the agent answers on).
    pub skip_ips: Vec<IpAddr>,
    pub mode: Mode,
}

/// A way to put the model into the kernel: render it, and take the kernel from the rules
/// applied last to new ones.
trait Backend: Send + Sync + 'static {
    type Rules: Clone + PartialEq + Send + Sync + 'static;
    const NAME: &'static str;
    fn render(ports: &[ServicePort], local: &Local) -> Self::Rules;
    /// Whether the rules answer for no Service address (no IPv6 rules are made until some do).
    fn is_empty(rules: &Self::Rules) -> bool;
    /// Blocking. `old` is `None` when the kernel's state is unknown: replace it whole. Returns
    /// how many lines the transaction had (0: nothing to do).
    fn sync(old: Option<&Self::Rules>, new: &Self::Rules, local: &Local) -> Result<usize, ProxyError>;
    /// Blocking: whether the rules of `family` are still in place.
    fn present(family: Family) -> bool;
}

struct Nft;

impl Backend for Nft {
    type Rules = nft::Ruleset;
    const NAME: &'static str = "nftables";
    fn render(ports: &[ServicePort], local: &Local) -> nft::Ruleset {
        nft::render(ports, local)
    }
    fn is_empty(rules: &nft::Ruleset) -> bool {
        rules.cluster_ips.is_empty()
    }
    fn sync(old: Option<&nft::Ruleset>, new: &nft::Ruleset, local: &Local) -> Result<usize, ProxyError> {
        let script = nft::script(old, new, local);
        if !script.is_empty() {
            nft::apply(&script)?;
        }
        Ok(script.lines().count())
    }
    fn present(family: Family) -> bool {
        nft::present(family)
    }
}

struct Iptables;

impl Backend for Iptables {
    type Rules = iptables::Ruleset;
    const NAME: &'static str = "iptables";
    fn render(ports: &[ServicePort], local: &Local) -> iptables::Ruleset {
        iptables::render(ports, local)
    }
    fn is_empty(rules: &iptables::Ruleset) -> bool {
        rules.addresses == 0
    }
    fn sync(old: Option<&iptables::Ruleset>, new: &iptables::Ruleset, local: &Local) -> Result<usize, ProxyError> {
        let kernel = match old {
            Some(_) => iptables::Kernel::default(),
            None => iptables::read(local.family)?,
        };
        let script = iptables::script(old, new, &kernel);
        if !script.is_empty() {
            iptables::restore(local.family, &script)?;
        }
        Ok(script.lines().count())
    }
    fn present(family: Family) -> bool {
        iptables::present(family)
    }
}

/// Removes every rule the proxy made with either backend (`skiff agent --cleanup`). A backend
/// whose tools the host lacks has nothing to remove.
pub fn cleanup() -> Result<(), ProxyError> {
    let nft = match nft::cleanup() {
        Err(ProxyError::Spawn { .. }) => Ok(()),
        r => r,
    };
    let ipt = iptables::cleanup();
    nft.and(ipt)
}

/// Whether node ports may answer on 127.0.0.1: only when the kernel routes DNATed loopback
/// traffic (`route_localnet`), which the proxy does not switch on by itself.
fn localhost_nodeports() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv4/conf/all/route_localnet").is_ok_and(|v| v.trim() == "1")
}

/// One family's state: the rules the kernel has (`None`: unknown, replace them whole).
struct Applied<R> {
    family: Family,
    rules: Option<R>,
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
    let asked = cfg.mode;
    match tokio::task::spawn_blocking(move || asked.resolve()).await.ok().flatten() {
        Some(Mode::Iptables) => run_with::<Iptables>(client, cfg, services, slices, cancel).await,
        Some(_) => run_with::<Nft>(client, cfg, services, slices, cancel).await,
        None => {
            let missing = match asked {
                Mode::Auto => "neither nft nor iptables-save works on this host (install nftables)",
                Mode::Nftables => "--proxy-mode nftables: nft does not work on this host (install nftables)",
                Mode::Iptables => "--proxy-mode iptables: iptables-save does not work on this host (install iptables)",
            };
            tracing::error!("{missing}: Services are not served on this node")
        }
    }
}

async fn run_with<B: Backend>(
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
    let mut applied: [Applied<B::Rules>; 2] =
        [Applied { family: Family::V4, rules: None }, Applied { family: Family::V6, rules: None }];
    let mut model: Arc<Vec<ServicePort>> = Arc::new(Vec::new());
    let mut health_servers = health::Servers::new(cancel.child_token());
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
                        let f = a.family;
                        if a.rules.is_some() && !tokio::task::spawn_blocking(move || B::present(f)).await.unwrap_or(false) {
                            tracing::warn!(family = f.name(), backend = B::NAME, "the service proxy's rules are gone; restoring them");
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
        let pod_cidrs: Vec<IpNet> = node
            .as_ref()
            .and_then(|n| n.spec.as_ref())
            .map(|s| s.pod_cidrs.clone().unwrap_or_else(|| s.pod_cidr.iter().cloned().collect()))
            .unwrap_or_default()
            .iter()
            .filter_map(|c| c.parse().ok())
            .collect();
        let started = std::time::Instant::now();
        // Building and rendering take tens of milliseconds at a thousand Services: off the
        // async threads, like the kernel updates.
        let (service_list, slice_list, v, node_name) =
            (services.list(), slices.list(), view.clone(), cfg.node_name.clone());
        let Ok((new_model, wanted_health)) = tokio::task::spawn_blocking(move || {
            (
                Arc::new(model::build(&service_list, &slice_list, &v)),
                health::wanted(&service_list, &slice_list, &node_name),
            )
        })
        .await
        else {
            return;
        };
        let mut failed = false;
        for a in &mut applied {
            let local = Local {
                family: a.family,
                pod_cidr: pod_cidrs.iter().find(|c| matches!(c, IpNet::V4(_)) == (a.family == Family::V4)).copied(),
                localhost_nodeports: localhost,
            };
            let old = a.rules.take();
            let family = a.family;
            let m = new_model.clone();
            // (lines written and whether whole, or nothing to do; the rules the kernel has after)
            let synced = tokio::task::spawn_blocking(move || {
                let rules = B::render(&m, &local);
                // IPv6 rules only once some Service has an IPv6 address.
                if family == Family::V6 && old.is_none() && B::is_empty(&rules) {
                    return (Ok(None), None);
                }
                if old.as_ref() == Some(&rules) {
                    return (Ok(None), Some(rules));
                }
                let whole = old.is_none();
                let r = B::sync(old.as_ref(), &rules, &local).map(|lines| Some((lines, whole)));
                (r, Some(rules))
            })
            .await;
            let family = family.name();
            match synced {
                Ok((Ok(None), rules)) => a.rules = rules,
                Ok((Ok(Some((lines, whole))), rules)) => {
                    let elapsed = started.elapsed();
                    if whole {
                        tracing::info!(
                            family,
                            backend = B::NAME,
                            ports = new_model.len(),
                            lines,
                            ?elapsed,
                            "service proxy rules replaced"
                        );
                    } else {
                        tracing::debug!(family, lines, ?elapsed, "service rules applied");
                    }
                    a.rules = rules;
                }
                Ok((Err(e), _)) => {
                    tracing::error!(family, error = %e, "cannot apply the service rules; replacing them whole");
                    failed = true;
                }
                Err(_) => return,
            }
        }
        health_servers.update(wanted_health, !failed).await;
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

/// What the backends' tests render: one TCP port of `default/web` on 10.43.0.100:80.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::model::{Endpoint, PortId, Proto, ServicePort};
    use super::{Family, Local};

    pub fn port(internal: Vec<Endpoint>) -> ServicePort {
        ServicePort {
            id: PortId { namespace: "default".into(), name: "web".into(), port_name: "http".into(), proto: Proto::Tcp },
            proto: Proto::Tcp,
            port: 80,
            cluster_ips: vec!["10.43.0.100".parse().unwrap()],
            node_port: None,
            external_ips: vec![],
            affinity: None,
            external: internal.clone(),
            has_endpoints: !internal.is_empty(),
            internal,
            external_local: false,
        }
    }

    pub fn ep(ip: &str, port: u16) -> Endpoint {
        Endpoint { ip: ip.parse().unwrap(), port, local: true }
    }

    pub fn v4() -> Local {
        Local { family: Family::V4, pod_cidr: Some("10.42.0.0/24".parse().unwrap()), localhost_nodeports: false }
    }
}
