//! Conntrack cleanup for UDP. A UDP "connection" lives in conntrack for as long as packets keep
//! coming, so a client that keeps sending to a Service would stay NATed to an endpoint that is
//! gone. When a UDP endpoint leaves a Service port, its entries are deleted, as upstream's proxy
//! does; TCP needs none of this (a reset ends the connection).
//!
//! [`stale`] is pure: it compares two models and names what to delete. [`delete`] runs the
//! `conntrack` tool for each.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::model::{Proto, ServicePort};

/// One set of entries to delete: `conntrack -D` with these filters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stale {
    /// Entries to a Service address NATed to an endpoint that left.
    ToAddress { service_ip: IpAddr, endpoint_ip: IpAddr },
    /// Entries to a node port NATed to an endpoint that left.
    ToNodePort { node_port: u16, endpoint_ip: IpAddr },
}

impl Stale {
    /// The `conntrack` arguments that delete these entries.
    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = ["-D", "-p", "udp"].map(str::to_string).to_vec();
        match self {
            Stale::ToAddress { service_ip, endpoint_ip } => {
                a.extend(["--orig-dst".into(), service_ip.to_string(), "--dst-nat".into(), endpoint_ip.to_string()]);
            }
            Stale::ToNodePort { node_port, endpoint_ip } => {
                a.extend([
                    "--orig-port-dst".into(),
                    node_port.to_string(),
                    "--dst-nat".into(),
                    endpoint_ip.to_string(),
                ]);
            }
        }
        a
    }
}

/// The UDP entries that `new` no longer justifies.
pub fn stale(old: &[ServicePort], new: &[ServicePort]) -> BTreeSet<Stale> {
    let now: BTreeMap<_, _> = new.iter().map(|p| (&p.id, p)).collect();
    let mut out = BTreeSet::new();
    for p in old.iter().filter(|p| p.proto == Proto::Udp) {
        let kept: BTreeSet<IpAddr> =
            now.get(&p.id).map(|n| n.all_endpoints().iter().map(|e| e.ip).collect()).unwrap_or_default();
        for ep in p.all_endpoints().into_iter().filter(|e| !kept.contains(&e.ip)) {
            for ip in p.cluster_ips.iter().chain(&p.external_ips) {
                out.insert(Stale::ToAddress { service_ip: *ip, endpoint_ip: ep.ip });
            }
            if let Some(np) = p.node_port {
                out.insert(Stale::ToNodePort { node_port: np, endpoint_ip: ep.ip });
            }
        }
    }
    out
}

/// Deletes the entries (best effort: an entry that is already gone is no error).
pub fn delete(stale: &BTreeSet<Stale>) {
    for s in stale {
        match std::process::Command::new("conntrack").args(s.args()).output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                tracing::debug!(args = ?s.args(), stderr = %String::from_utf8_lossy(&out.stderr).trim(), "conntrack")
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot run conntrack: stale UDP flows to removed endpoints stay until they idle out");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netproxy::model::{Endpoint, PortId};

    fn dns(endpoints: &[&str]) -> ServicePort {
        let eps: Vec<Endpoint> =
            endpoints.iter().map(|ip| Endpoint { ip: ip.parse().unwrap(), port: 53, local: true }).collect();
        ServicePort {
            id: PortId { namespace: "d".into(), name: "dns".into(), port_name: "dns".into(), proto: Proto::Udp },
            proto: Proto::Udp,
            port: 53,
            cluster_ips: vec!["10.43.0.20".parse().unwrap()],
            node_port: Some(30053),
            external_ips: vec![],
            affinity: None,
            internal: eps.clone(),
            external: eps,
            external_local: false,
            has_endpoints: !endpoints.is_empty(),
        }
    }

    #[test]
    fn a_removed_udp_endpoint_has_its_flows_deleted() {
        let gone: Vec<Vec<String>> =
            stale(&[dns(&["10.42.0.5", "10.42.0.6"])], &[dns(&["10.42.0.6"])]).iter().map(Stale::args).collect();
        assert_eq!(
            gone,
            vec![
                vec!["-D", "-p", "udp", "--orig-dst", "10.43.0.20", "--dst-nat", "10.42.0.5"],
                vec!["-D", "-p", "udp", "--orig-port-dst", "30053", "--dst-nat", "10.42.0.5"],
            ]
        );
        assert!(stale(&[dns(&["10.42.0.5"])], &[dns(&["10.42.0.5"])]).is_empty());
        // The whole Service gone: its flows too.
        assert_eq!(stale(&[dns(&["10.42.0.5"])], &[]).len(), 2);
    }
}
