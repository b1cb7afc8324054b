//! Node-local cluster DNS: every agent answers the cluster's names itself, from its own caches
//! of Services and EndpointSlices, and forwards other names to the host's resolvers.
//!
//! Start at [`run`]: it binds the sockets and serves until cancelled, answering cluster names
//! (SERVFAIL until the informers' first lists are in) from a zone it rebuilds on every change. The rooms:
//! - [`records`]: the zone, pure: Services and EndpointSlices in, answers out
//!   ([`records::Records`], swapped whole through [`records::SharedRecords`]);
//! - [`server`]: sockets, framing and the request rules ([`server::serve`], which tests and
//!   the benchmark drive with a hand-built zone);
//! - [`upstream`]: which servers to forward to (a resolv.conf) and the caching forwarder.
//!
//! Invariant: never talks to the API server; it reads informer caches only. A change to a
//! Service or EndpointSlice is answered within [`DEBOUNCE`] plus one rebuild of the zone.

pub mod records;
pub mod server;
pub mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use tokio_util::sync::CancellationToken;

use crate::runtime::Informer;
use crate::runtime::informer::next_change;
pub use records::{Records, SharedRecords};
pub use server::{Sockets, serve};
pub use upstream::Forwarder;

/// Puts the cluster DNS address on this host's loopback interface (idempotent), so that it is
/// a local address: pods' queries to it are delivered to [`run`]'s sockets without any rule,
/// and the service proxy leaves the address alone.
pub async fn add_local_address(ip: std::net::IpAddr) -> Result<(), DnsError> {
    let prefix = if ip.is_ipv4() { 32 } else { 128 };
    local_address("replace", &format!("{ip}/{prefix}")).await
}

/// Takes the cluster DNS address off the loopback interface again (`skiff agent --cleanup`).
pub async fn remove_local_address(ip: std::net::IpAddr) -> Result<(), DnsError> {
    let prefix = if ip.is_ipv4() { 32 } else { 128 };
    local_address("del", &format!("{ip}/{prefix}")).await
}

async fn local_address(op: &str, cidr: &str) -> Result<(), DnsError> {
    let out = tokio::process::Command::new("ip")
        .args(["addr", op, cidr, "dev", "lo"])
        .output()
        .await
        .map_err(|e| DnsError::Address(format!("cannot run ip (install iproute2): {e}")))?;
    if out.status.success() || (op == "del" && String::from_utf8_lossy(&out.stderr).contains("Cannot assign")) {
        return Ok(());
    }
    Err(DnsError::Address(format!("ip addr {op} {cidr} dev lo: {}", String::from_utf8_lossy(&out.stderr).trim())))
}

/// The cluster domain unless configured otherwise.
pub const DEFAULT_DOMAIN: &str = "cluster.local";
/// How long changes are gathered before the zone is rebuilt.
pub const DEBOUNCE: Duration = Duration::from_millis(20);

/// Where and what to serve.
#[derive(Debug, Clone)]
pub struct Config {
    /// UDP and TCP on each (the cluster DNS address, `10.43.0.10:53`, in a cluster).
    pub listen: Vec<SocketAddr>,
    /// The cluster domain (`cluster.local`).
    pub domain: String,
    /// The resolv.conf naming the upstream servers; `None` for the host's (see
    /// [`upstream::upstream_servers`]).
    pub resolv_conf: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config { listen: Vec::new(), domain: DEFAULT_DOMAIN.into(), resolv_conf: None }
    }
}

/// Errors of the DNS server.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("cannot listen for DNS on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Address(String),
    #[error("invalid cluster domain {0:?}")]
    Domain(String),
    #[error("cannot read {}: {source}", path.display())]
    ResolvConf {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no upstream DNS server is configured")]
    NoUpstream,
    #[error("too many questions are waiting for upstream DNS servers")]
    Busy,
    #[error("upstream DNS server {server}: {reason}")]
    Upstream { server: SocketAddr, reason: String },
}

/// The domain in the form the zone uses (lower case, no final dot), if it is a DNS name.
fn normalized_domain(domain: &str) -> Result<String, DnsError> {
    let d = domain.trim_end_matches('.').to_ascii_lowercase();
    let valid = !d.is_empty()
        && d.len() <= 200
        && d.split('.').all(|l| {
            !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if valid { Ok(d) } else { Err(DnsError::Domain(domain.to_string())) }
}

fn build(domain: &str, services: &Informer<Service>, slices: &Informer<EndpointSlice>) -> Records {
    let serial = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as u32);
    Records::build(domain, &services.list(), &slices.list(), serial)
}

/// Serves cluster DNS on `cfg.listen` from the informers' caches until `cancel` fires.
pub async fn run(
    cfg: Config,
    services: Arc<Informer<Service>>,
    slices: Arc<Informer<EndpointSlice>>,
    cancel: CancellationToken,
) -> Result<(), DnsError> {
    let domain = normalized_domain(&cfg.domain)?;
    let mut upstreams = upstream::upstream_servers(cfg.resolv_conf.as_deref())?;
    // Forwarding to ourselves would loop.
    upstreams.retain(|u| !cfg.listen.contains(u));
    if upstreams.is_empty() {
        tracing::warn!("no upstream DNS server; names outside the cluster will fail");
    }
    let sockets = Sockets::bind(&cfg.listen).await?;
    tracing::info!(listen = ?sockets.local_addrs(), %domain, upstreams = ?upstreams, "cluster DNS serving");
    // Outside names are answered at once; cluster names are SERVFAIL until the first lists.
    let shared = SharedRecords::new(Records::unsynced(&domain));
    let forwarder = Arc::new(Forwarder::new(upstreams));
    let server = tokio::spawn(serve(sockets, shared.clone(), forwarder, cancel.clone()));
    let mut service_changes = services.subscribe();
    let mut slice_changes = slices.subscribe();
    if services.synced_or(&cancel).await && slices.synced_or(&cancel).await {
        shared.store(build(&domain, &services, &slices));
    }
    loop {
        // Every change (and a resync) rebuilds the whole zone, after gathering the changes
        // that follow it closely.
        let changed = tokio::select! {
            _ = cancel.cancelled() => break,
            c = next_change(&mut service_changes) => c.is_some(),
            c = next_change(&mut slice_changes) => c.is_some(),
        };
        if !changed {
            // An informer stopped: the zone stays as it is until the end.
            cancel.cancelled().await;
            break;
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(DEBOUNCE) => {}
        }
        while service_changes.try_next().is_some() {}
        while slice_changes.try_next().is_some() {}
        let (d, s, e) = (domain.clone(), services.clone(), slices.clone());
        match tokio::task::spawn_blocking(move || build(&d, &s, &e)).await {
            Ok(records) => shared.store(records),
            Err(e) => tracing::warn!(error = %e, "cannot rebuild the cluster DNS zone"),
        }
    }
    let _ = server.await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_normalized_or_refused() {
        assert_eq!(normalized_domain("Cluster.Local.").unwrap(), "cluster.local");
        assert_eq!(normalized_domain("edge").unwrap(), "edge");
        for bad in ["", ".", "a..b", "a b.local", &"x".repeat(64)] {
            assert!(matches!(normalized_domain(bad), Err(DnsError::Domain(_))), "{bad}");
        }
    }
}
