//! What the proxy should do, as data: one [`ServicePort`] per port of every proxied Service,
//! with the endpoints each kind of traffic may go to.
//!
//! Pure: no I/O, no clock, no backend syntax. The backends ([`super::nft`], [`super::iptables`])
//! render the same model, so their behaviour cannot drift apart.
//!
//! Endpoint choice follows upstream's kube-proxy: traffic goes to ready endpoints; when a
//! Service has none, to endpoints that are still serving while they terminate. Traffic policy
//! `Local` narrows the choice to this node's endpoints (with the same fallback among them).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// A Service's label that hands it to another proxy; this proxy leaves such Services alone.
pub const PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// A Service's label that says no proxy should serve it (upstream's "headless" marker for
/// Services managed elsewhere).
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// The EndpointSlice label naming its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Session affinity's default timeout, as upstream (3 hours).
pub const DEFAULT_AFFINITY_SECONDS: u32 = 10_800;

/// A transport protocol a Service port can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    fn parse(s: Option<&str>) -> Option<Proto> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Proto::Tcp),
            "UDP" => Some(Proto::Udp),
            "SCTP" => Some(Proto::Sctp),
            _ => None,
        }
    }

    /// The lower-case name the backends and conntrack use.
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }
}

/// One endpoint of a Service port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub port: u16,
    /// On this node.
    pub local: bool,
}

/// The identity of a Service port: what chain and set names derive from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortId {
    pub namespace: String,
    pub name: String,
    /// The Service port's name (may be empty for a single-port Service).
    pub port_name: String,
    pub proto: Proto,
}

impl std::fmt::Display for PortId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}/{}", self.namespace, self.name, self.proto.name(), self.port_name)
    }
}

/// Everything the proxy does for one port of one Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub id: PortId,
    pub proto: Proto,
    /// The Service port (`spec.ports[].port`).
    pub port: u16,
    pub cluster_ips: Vec<IpAddr>,
    pub node_port: Option<u16>,
    /// `spec.externalIPs` and the load balancer's ingress IPs: answered like node ports.
    pub external_ips: Vec<IpAddr>,
    /// ClientIP session affinity's timeout in seconds.
    pub affinity: Option<u32>,
    /// Endpoints for traffic to the cluster IPs (`internalTrafficPolicy` applied).
    pub internal: Vec<Endpoint>,
    /// Endpoints for traffic to node ports and external IPs (`externalTrafficPolicy` applied).
    pub external: Vec<Endpoint>,
    /// `externalTrafficPolicy: Local`: external traffic keeps its source address.
    pub external_local: bool,
    /// Whether the Service has any usable endpoint anywhere: without one, traffic is refused;
    /// with some but none allowed by a `Local` policy, it is dropped (as upstream).
    pub has_endpoints: bool,
}

impl ServicePort {
    /// Every endpoint either kind of traffic may use, each once.
    pub fn all_endpoints(&self) -> Vec<&Endpoint> {
        let set: BTreeSet<&Endpoint> = self.internal.iter().chain(&self.external).collect();
        set.into_iter().collect()
    }
}

/// What the model needs to know about this node.
#[derive(Debug, Clone, Default)]
pub struct NodeView {
    pub name: String,
    /// Addresses never proxied even if a Service claims them (the node-local cluster DNS).
    pub skip_ips: Vec<IpAddr>,
}

/// Whether this proxy serves `svc` at all: not when a label hands it to another proxy or says
/// no proxy should.
pub fn proxied(svc: &Service) -> bool {
    let labels = svc.metadata.labels.as_ref();
    !labels.is_some_and(|l| l.contains_key(PROXY_NAME_LABEL) || l.contains_key(HEADLESS_LABEL))
}

/// One endpoint as a slice lists it, before the choice.
struct Candidate {
    ep: Endpoint,
    ready: bool,
    serving: bool,
}

/// The proxied ports of `services`, ordered by id, with endpoints from `slices`.
pub fn build(services: &[Arc<Service>], slices: &[Arc<EndpointSlice>], node: &NodeView) -> Vec<ServicePort> {
    // (namespace, service) -> slices
    let mut by_service: BTreeMap<(&str, &str), Vec<&EndpointSlice>> = BTreeMap::new();
    for s in slices {
        let Some(svc) = s.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)) else { continue };
        let ns = s.metadata.namespace.as_deref().unwrap_or("");
        by_service.entry((ns, svc.as_str())).or_default().push(s);
    }
    let mut out = Vec::new();
    for svc in services {
        let Some(spec) = &svc.spec else { continue };
        if !proxied(svc) {
            continue;
        }
        if spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        let mut cluster_ips: Vec<IpAddr> = spec
            .cluster_ips
            .iter()
            .flatten()
            .chain(spec.cluster_ip.iter())
            .filter_map(|ip| ip.parse().ok())
            .filter(|ip| !node.skip_ips.contains(ip))
            .collect();
        cluster_ips.sort();
        cluster_ips.dedup();
        if cluster_ips.is_empty() {
            // Headless (`None`), not yet allocated, or the node-local DNS address.
            continue;
        }
        let mut external_ips: Vec<IpAddr> =
            spec.external_ips.iter().flatten().filter_map(|ip| ip.parse().ok()).collect();
        if spec.type_.as_deref() == Some("LoadBalancer") {
            let ingress = svc.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|l| l.ingress.as_ref());
            // `ipMode: Proxy` means the load balancer delivers to the node itself, not to the VIP.
            external_ips.extend(
                ingress
                    .into_iter()
                    .flatten()
                    .filter(|i| i.ip_mode.as_deref() != Some("Proxy"))
                    .filter_map(|i| i.ip.as_deref()?.parse::<IpAddr>().ok()),
            );
        }
        external_ips.sort();
        external_ips.dedup();
        let affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .and_then(|t| u32::try_from(t).ok())
                .filter(|t| *t > 0)
                .unwrap_or(DEFAULT_AFFINITY_SECONDS)
        });
        let node_ports = matches!(spec.type_.as_deref(), Some("NodePort") | Some("LoadBalancer"));
        let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
        let external_local =
            spec.external_traffic_policy.as_deref() == Some("Local") && (node_ports || !external_ips.is_empty());
        let ns = svc.metadata.namespace.as_deref().unwrap_or("");
        let name = svc.metadata.name.as_deref().unwrap_or("");
        let svc_slices = by_service.get(&(ns, name)).map(Vec::as_slice).unwrap_or(&[]);
        for p in spec.ports.iter().flatten() {
            let Some(proto) = Proto::parse(p.protocol.as_deref()) else { continue };
            let Ok(port) = u16::try_from(p.port) else { continue };
            let port_name = p.name.clone().unwrap_or_default();
            let candidates = candidates(svc_slices, &port_name, proto, &cluster_ips, &node.name);
            let cluster = choose(&candidates, |_| true);
            let local = choose(&candidates, |c| c.ep.local);
            out.push(ServicePort {
                id: PortId { namespace: ns.to_string(), name: name.to_string(), port_name, proto },
                proto,
                port,
                cluster_ips: cluster_ips.clone(),
                node_port: p.node_port.and_then(|n| u16::try_from(n).ok()).filter(|_| node_ports),
                external_ips: external_ips.clone(),
                affinity,
                internal: if internal_local { local.clone() } else { cluster.clone() },
                has_endpoints: !cluster.is_empty(),
                external: if external_local { local } else { cluster },
                external_local,
            });
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// The endpoints of the slices for one Service port, in the cluster IPs' address families.
fn candidates(slices: &[&EndpointSlice], port_name: &str, proto: Proto, ips: &[IpAddr], node: &str) -> Vec<Candidate> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for s in slices {
        let family_v4 = match s.address_type.as_str() {
            "IPv4" => true,
            "IPv6" => false,
            _ => continue,
        };
        if !ips.iter().any(|ip| ip.is_ipv4() == family_v4) {
            continue;
        }
        let Some(port) = s.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or("") == port_name && Proto::parse(p.protocol.as_deref()) == Some(proto)
        }) else {
            continue;
        };
        let Some(port) = port.port.and_then(|p| u16::try_from(p).ok()).filter(|p| *p > 0) else { continue };
        for e in &s.endpoints {
            let c = e.conditions.as_ref();
            // As upstream: an unknown readiness counts as ready.
            let ready = c.and_then(|c| c.ready).unwrap_or(true);
            let serving = c.and_then(|c| c.serving).unwrap_or(ready);
            let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
            let local = e.node_name.as_deref() == Some(node);
            for a in &e.addresses {
                let Ok(ip) = a.parse::<IpAddr>() else { continue };
                if ip.is_ipv4() != family_v4 || !seen.insert((ip, port)) {
                    continue;
                }
                out.push(Candidate { ep: Endpoint { ip, port, local }, ready: ready && !terminating, serving });
            }
        }
    }
    out
}

/// The ready endpoints among those `keep` accepts; when none is ready, the ones still serving
/// while they terminate.
fn choose(candidates: &[Candidate], keep: impl Fn(&Candidate) -> bool) -> Vec<Endpoint> {
    let mut ready: Vec<Endpoint> = candidates.iter().filter(|c| keep(c) && c.ready).map(|c| c.ep.clone()).collect();
    if ready.is_empty() {
        ready = candidates.iter().filter(|c| keep(c) && c.serving).map(|c| c.ep.clone()).collect();
    }
    ready.sort();
    ready
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(v: serde_json::Value) -> Arc<Service> {
        Arc::new(serde_json::from_value(v).unwrap())
    }

    fn slice(v: serde_json::Value) -> Arc<EndpointSlice> {
        Arc::new(serde_json::from_value(v).unwrap())
    }

    fn node() -> NodeView {
        NodeView { name: "n1".into(), skip_ips: vec!["10.43.0.10".parse().unwrap()] }
    }

    fn web_slice(endpoints: serde_json::Value) -> Arc<EndpointSlice> {
        slice(serde_json::json!({
            "metadata": {"name": "web-abc", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": endpoints,
        }))
    }

    fn ep(ip: &str, port: u16, local: bool) -> Endpoint {
        Endpoint { ip: ip.parse().unwrap(), port, local }
    }

    #[test]
    fn cluster_ip_service_gets_ready_endpoints_by_port_name() {
        let s = svc(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": "10.43.0.100", "clusterIPs": ["10.43.0.100"],
                     "ports": [{"name": "http", "port": 80, "targetPort": "http"}, {"name": "other", "port": 81}]},
        }));
        let sl = web_slice(serde_json::json!([
            {"addresses": ["10.42.0.5"], "conditions": {"ready": true}, "nodeName": "n1"},
            {"addresses": ["10.42.1.5"], "conditions": {"ready": true}, "nodeName": "n2"},
            {"addresses": ["10.42.1.6"], "conditions": {"ready": false, "serving": false}, "nodeName": "n2"},
        ]));
        let m = build(&[s], &[sl], &node());
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].id.to_string(), "default/web/tcp/http");
        assert_eq!(m[0].port, 80);
        assert_eq!(m[0].internal, vec![ep("10.42.0.5", 8080, true), ep("10.42.1.5", 8080, false)]);
        assert_eq!(m[0].external, m[0].internal);
        assert!(m[0].has_endpoints);
        // A port the slices do not list has no endpoints: its traffic is refused.
        assert_eq!(m[1].id.to_string(), "default/web/tcp/other");
        assert!(m[1].internal.is_empty());
        assert!(!m[1].has_endpoints);
    }

    #[test]
    fn terminating_endpoints_serve_only_when_none_is_ready() {
        let s = svc(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": "10.43.0.100", "ports": [{"name": "http", "port": 80}]},
        }));
        let terminating = serde_json::json!({"addresses": ["10.42.0.7"], "nodeName": "n1",
            "conditions": {"ready": false, "serving": true, "terminating": true}});
        let ready = serde_json::json!({"addresses": ["10.42.0.8"], "nodeName": "n1", "conditions": {"ready": true}});
        let m = build(std::slice::from_ref(&s), &[web_slice(serde_json::json!([terminating, ready]))], &node());
        assert_eq!(m[0].internal, vec![ep("10.42.0.8", 8080, true)]);
        let m = build(&[s], &[web_slice(serde_json::json!([terminating]))], &node());
        assert_eq!(m[0].internal, vec![ep("10.42.0.7", 8080, true)]);
    }

    #[test]
    fn local_policies_narrow_to_this_node() {
        let s = svc(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "NodePort", "clusterIP": "10.43.0.100", "externalTrafficPolicy": "Local",
                     "internalTrafficPolicy": "Local",
                     "ports": [{"name": "http", "port": 80, "nodePort": 30080}]},
        }));
        let remote_only = web_slice(
            serde_json::json!([{"addresses": ["10.42.1.5"], "conditions": {"ready": true}, "nodeName": "n2"}]),
        );
        let m = build(&[s], &[remote_only], &node());
        assert_eq!(m[0].node_port, Some(30080));
        assert!(m[0].external_local);
        assert!(m[0].internal.is_empty() && m[0].external.is_empty());
        // Endpoints elsewhere: dropped here, not refused.
        assert!(m[0].has_endpoints);
    }

    #[test]
    fn load_balancer_ingress_and_external_ips_are_answered() {
        let s = svc(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.43.0.100", "externalIPs": ["192.0.2.9"],
                     "sessionAffinity": "ClientIP", "ports": [{"name": "http", "port": 80, "nodePort": 30080}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "172.31.0.2"}, {"ip": "172.31.0.3", "ipMode": "Proxy"}]}},
        }));
        let m = build(&[s], &[], &node());
        assert_eq!(m[0].external_ips, vec!["172.31.0.2".parse::<IpAddr>().unwrap(), "192.0.2.9".parse().unwrap()]);
        assert_eq!(m[0].affinity, Some(DEFAULT_AFFINITY_SECONDS));
    }

    #[test]
    fn headless_external_name_foreign_and_dns_services_are_not_proxied() {
        let services = [
            svc(serde_json::json!({"metadata": {"name": "h", "namespace": "d"},
                "spec": {"clusterIP": "None", "ports": [{"port": 80}]}})),
            svc(serde_json::json!({"metadata": {"name": "x", "namespace": "d"},
                "spec": {"type": "ExternalName", "externalName": "example.org"}})),
            svc(serde_json::json!({"metadata": {"name": "o", "namespace": "d", "labels": {PROXY_NAME_LABEL: "other"}},
                "spec": {"clusterIP": "10.43.0.5", "ports": [{"port": 80}]}})),
            svc(serde_json::json!({"metadata": {"name": "kube-dns", "namespace": "kube-system"},
                "spec": {"clusterIP": "10.43.0.10", "ports": [{"port": 53, "protocol": "UDP"}]}})),
            svc(serde_json::json!({"metadata": {"name": "s", "namespace": "d"},
                "spec": {"clusterIP": "10.43.0.6", "ports": [{"port": 80, "protocol": "ICMP"}]}})),
        ];
        assert!(build(&services, &[], &node()).is_empty());
    }
}
