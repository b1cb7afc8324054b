//! What the host should hold, as data: the other nodes to route to, and the masquerade table.
//! Pure: no I/O.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;

use super::{BACKEND_ANNOTATION, Backend, PUBLIC_IP_ANNOTATION, VTEP_MAC_ANNOTATION};

/// Another node's pods and how to reach them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    pub cidr: Ipv4Net,
    /// The address routes to `cidr` go through: the node's VTEP address (its pod CIDR's
    /// network address) with VXLAN, the node itself with host-gw.
    pub via: Ipv4Addr,
    /// The node's address (VXLAN's outer destination).
    pub public_ip: Ipv4Addr,
    /// The node's VTEP MAC (VXLAN only).
    pub mac: Option<String>,
}

/// A node's IPv4 pod CIDR.
pub fn pod_cidr(node: &Node) -> Option<Ipv4Net> {
    let spec = node.spec.as_ref()?;
    let all = spec.pod_cidrs.iter().flatten().chain(spec.pod_cidr.iter());
    all.filter_map(|c| c.parse::<Ipv4Net>().ok()).next()
}

/// The address a node's VTEP carries: its pod CIDR's network address, as flannel does.
pub fn gateway(cidr: Ipv4Net) -> Ipv4Addr {
    cidr.network()
}

fn valid_mac(mac: &str) -> bool {
    let parts: Vec<&str> = mac.split(':').collect();
    parts.len() == 6 && parts.iter().all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// The nodes other than `own` this node routes to under `backend`: those with a pod CIDR whose
/// overlay annotations say the same backend (and, for VXLAN, give a MAC). A node being deleted
/// is no peer.
pub fn peers(own: &str, backend: Backend, nodes: &[Arc<Node>]) -> Vec<Peer> {
    let mut out = Vec::new();
    for n in nodes {
        let name = n.metadata.name.clone().unwrap_or_default();
        if name == own || n.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(cidr) = pod_cidr(n) else { continue };
        let ann = n.metadata.annotations.clone().unwrap_or_default();
        if ann.get(BACKEND_ANNOTATION).map(String::as_str) != Some(backend.name()) {
            continue;
        }
        let Some(public_ip) = ann.get(PUBLIC_IP_ANNOTATION).and_then(|ip| ip.parse::<IpAddr>().ok()) else { continue };
        let IpAddr::V4(public_ip) = public_ip else { continue };
        let (via, mac) = match backend {
            Backend::Vxlan => {
                let Some(mac) = ann.get(VTEP_MAC_ANNOTATION).filter(|m| valid_mac(m)) else { continue };
                (gateway(cidr), Some(mac.to_lowercase()))
            }
            Backend::HostGw => (public_ip, None),
            Backend::None => continue,
        };
        out.push(Peer { name, cidr, via, public_ip, mac });
    }
    out.sort_by_key(|p| p.cidr);
    out
}

/// The masquerade table: traffic from this node's pods to anything outside every pod CIDR
/// leaves with the node's address; traffic between pods keeps its source.
pub fn masquerade(own: Ipv4Net, cidrs: &[Ipv4Net]) -> String {
    let elements: Vec<String> = cidrs.iter().map(|c| c.to_string()).collect();
    format!(
        "add table ip skiff-overlay\n\
         delete table ip skiff-overlay\n\
         add table ip skiff-overlay {{ comment \"pod egress of skiff\" ; }}\n\
         add set ip skiff-overlay pod-cidrs {{ type ipv4_addr ; flags interval ; elements = {{ {} }} ; }}\n\
         add chain ip skiff-overlay postrouting {{ type nat hook postrouting priority 100 ; policy accept ; }}\n\
         add rule ip skiff-overlay postrouting ip saddr {own} ip daddr != @pod-cidrs ip daddr != 224.0.0.0/4 masquerade fully-random\n",
        elements.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cidr: &str, ann: serde_json::Value) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "annotations": ann}, "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
            }))
            .unwrap(),
        )
    }

    #[test]
    fn peers_are_the_other_nodes_of_the_same_backend() {
        let nodes = [
            node(
                "a",
                "10.42.0.0/24",
                serde_json::json!({BACKEND_ANNOTATION: "vxlan", PUBLIC_IP_ANNOTATION: "172.30.1.1", VTEP_MAC_ANNOTATION: "aa:bb:cc:dd:ee:01"}),
            ),
            node(
                "b",
                "10.42.1.0/24",
                serde_json::json!({BACKEND_ANNOTATION: "vxlan", PUBLIC_IP_ANNOTATION: "172.30.1.2", VTEP_MAC_ANNOTATION: "AA:BB:CC:DD:EE:02"}),
            ),
            node(
                "c",
                "10.42.2.0/24",
                serde_json::json!({BACKEND_ANNOTATION: "host-gw", PUBLIC_IP_ANNOTATION: "172.30.1.3"}),
            ),
            node(
                "d",
                "10.42.3.0/24",
                serde_json::json!({BACKEND_ANNOTATION: "vxlan", PUBLIC_IP_ANNOTATION: "172.30.1.4", VTEP_MAC_ANNOTATION: "not a mac"}),
            ),
        ];
        let p = peers("a", Backend::Vxlan, &nodes);
        assert_eq!(
            p,
            vec![Peer {
                name: "b".into(),
                cidr: "10.42.1.0/24".parse().unwrap(),
                via: "10.42.1.0".parse().unwrap(),
                public_ip: "172.30.1.2".parse().unwrap(),
                mac: Some("aa:bb:cc:dd:ee:02".into()),
            }]
        );
        let p = peers("a", Backend::HostGw, &nodes);
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].name.as_str(), p[0].via.to_string()), ("c", "172.30.1.3".to_string()));
    }

    #[test]
    fn egress_is_masqueraded_outside_the_pod_cidrs() {
        let own: Ipv4Net = "10.42.0.0/24".parse().unwrap();
        let s = masquerade(own, &[own, "10.42.1.0/24".parse().unwrap()]);
        assert!(s.contains("elements = { 10.42.0.0/24, 10.42.1.0/24 }"), "{s}");
        assert!(s.contains("ip saddr 10.42.0.0/24 ip daddr != @pod-cidrs ip daddr != 224.0.0.0/4 masquerade"), "{s}");
    }
}
