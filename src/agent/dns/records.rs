//! The cluster zone: what every name under the cluster domain answers, built from Services and
//! EndpointSlices as the Kubernetes DNS specification and CoreDNS's `kubernetes` plugin define.
//!
//! [`Records::build`] turns the cached objects into one hash map from lower-case names to their
//! records, so [`Records::lookup`] costs one hash lookup (two for pod names) whatever the
//! cluster's size. The map is rebuilt whole when objects change; a [`SharedRecords`] hands the
//! current one to the server.
//!
//! What is answered (domain `cluster.local`, TTL [`TTL`]):
//! - `<svc>.<ns>.svc.cluster.local`: the ClusterIPs, or for a headless Service the addresses of
//!   its ready endpoints (all of them with `publishNotReadyAddresses`); a CNAME to
//!   `spec.externalName` for an ExternalName Service; SRV records for all its ports.
//! - `<endpoint>.<svc>.<ns>.svc.cluster.local`: each ready endpoint, named by its `hostname`
//!   or else by its address with dashes (`10-42-0-5`, `fd00--5`).
//! - `_<port>._<proto>.<svc>.<ns>.svc.cluster.local`: SRV per named port, at the Service name
//!   (ClusterIP) or at each endpoint name with the endpoint's port (headless; their addresses
//!   go into the additional section).
//! - PTR names in `in-addr.arpa`/`ip6.arpa` for ClusterIPs and headless endpoint addresses.
//! - `<a-b-c-d>.<ns>.pod.cluster.local`: the address the name spells (CoreDNS `pods insecure`).
//! - Names that only lead to others (`svc.cluster.local`, `<ns>.svc.cluster.local`) exist
//!   without records: NODATA. Any other name in the domain: NXDOMAIN. Both carry the SOA.
//!
//! Invariants: pure (no I/O, no clock but the serial the caller gives); names outside the
//! domain and reverse names it does not know are [`Lookup::Forward`], never an error.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, RwLock};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label naming an EndpointSlice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The TTL of every record of the zone, and the SOA minimum (CoreDNS's default).
pub const TTL: u32 = 5;
/// How many CNAMEs inside the zone an answer follows.
const MAX_CHAIN: usize = 8;

/// The records of one name.
#[derive(Debug, Default, Clone)]
struct Node {
    a: Vec<Ipv4Addr>,
    aaaa: Vec<Ipv6Addr>,
    srv: Vec<Srv>,
    ptr: Vec<Name>,
    cname: Option<Name>,
}

#[derive(Debug, Clone)]
struct Srv {
    port: u16,
    weight: u16,
    target: Name,
}

/// What a name answers.
#[derive(Debug)]
pub enum Lookup {
    /// The name is the cluster's: this is the whole answer (but see [`Answer::chase`]).
    Local(Answer),
    /// Not the cluster's: ask upstream.
    Forward,
}

/// An authoritative answer from the cluster zone.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    pub authority: Vec<Record>,
    pub additional: Vec<Record>,
    /// A CNAME target outside the zone whose A/AAAA records the answer should end with
    /// (an ExternalName Service asked for an address).
    pub chase: Option<Name>,
}

/// The cluster zone at one moment.
#[derive(Debug)]
pub struct Records {
    /// The domain, lower case, without the final dot (`cluster.local`).
    domain: String,
    apex: Name,
    soa: Record,
    ns: Record,
    names: HashMap<Box<str>, Node>,
    /// False until the objects are known: cluster names are SERVFAIL (asked again later)
    /// rather than NXDOMAIN (remembered by clients).
    synced: bool,
}

/// The current [`Records`], swapped whole when objects change; readers take an `Arc` and never
/// wait for a rebuild.
#[derive(Debug, Clone)]
pub struct SharedRecords(Arc<RwLock<Arc<Records>>>);

impl SharedRecords {
    pub fn new(records: Records) -> Self {
        SharedRecords(Arc::new(RwLock::new(Arc::new(records))))
    }

    /// The current records.
    pub fn load(&self) -> Arc<Records> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the records.
    pub fn store(&self, records: Records) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(records);
    }
}

/// The lower-case text of `name` without the final dot, or `None` when a label holds a dot
/// (no Kubernetes name does, and it would make two names one key).
fn key_of(name: &Name) -> Option<String> {
    let mut key = String::with_capacity(name.len());
    for label in name.iter() {
        if label.contains(&b'.') {
            return None;
        }
        if !key.is_empty() {
            key.push('.');
        }
        key.extend(label.iter().map(|b| b.to_ascii_lowercase() as char));
    }
    Some(key)
}

/// `name` as an absolute DNS name; `None` for text that is none.
fn fqdn(name: &str) -> Option<Name> {
    let name = name.trim_end_matches('.');
    Name::from_ascii(format!("{name}.")).ok()
}

/// The reverse-lookup name of `ip`, without the final dot.
pub fn reverse_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::with_capacity(72);
            for b in v6.octets().iter().rev() {
                for nibble in [b & 0xf, b >> 4] {
                    s.push(char::from_digit(u32::from(nibble), 16).unwrap_or('0'));
                    s.push('.');
                }
            }
            s.push_str("ip6.arpa");
            s
        }
    }
}

/// An endpoint's name label when it has no hostname: its address with dashes.
pub fn dashed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    }
}

/// The address a pod name label spells (`10-42-0-5`, `fd00--5`).
fn undashed(label: &str) -> Option<IpAddr> {
    if let Ok(v4) = label.replace('-', ".").parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(v4));
    }
    label.replace('-', ":").parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

/// Whether an endpoint is published: ready (unknown counts as ready, as the API documents),
/// or any endpoint of a Service with `publishNotReadyAddresses`.
fn published(ready: Option<bool>, publish_not_ready: bool) -> bool {
    publish_not_ready || ready.unwrap_or(true)
}

/// Collects the records while building.
struct Builder {
    domain: String,
    names: HashMap<Box<str>, Node>,
}

impl Builder {
    fn node(&mut self, key: &str) -> &mut Node {
        self.names.entry(key.into()).or_default()
    }

    fn address(&mut self, key: &str, ip: IpAddr) {
        let node = self.node(key);
        match ip {
            IpAddr::V4(v4) => node.a.push(v4),
            IpAddr::V6(v6) => node.aaaa.push(v6),
        }
    }

    fn ptr(&mut self, ip: IpAddr, target: &Name) {
        self.node(&reverse_key(ip)).ptr.push(target.clone());
    }

    fn srv(&mut self, key: &str, port: u16, target: &Name) {
        self.node(key).srv.push(Srv { port, weight: 0, target: target.clone() });
    }

    fn service(&mut self, svc: &Service, slices: &[&EndpointSlice]) {
        let (Some(ns), Some(name)) = (svc.metadata.namespace.as_deref(), svc.metadata.name.as_deref()) else {
            return;
        };
        let Some(spec) = svc.spec.as_ref() else { return };
        let base = format!("{name}.{ns}.svc.{}", self.domain);
        let Some(base_name) = fqdn(&base) else { return };
        if spec.type_.as_deref() == Some("ExternalName") {
            if let Some(target) = spec.external_name.as_deref().and_then(fqdn) {
                self.node(&base).cname = Some(target);
            }
            return;
        }
        let cluster_ips: Vec<IpAddr> = match &spec.cluster_ips {
            Some(ips) if !ips.is_empty() => ips.iter().filter_map(|ip| ip.parse().ok()).collect(),
            _ => spec.cluster_ip.iter().filter_map(|ip| ip.parse().ok()).collect(),
        };
        let headless = cluster_ips.is_empty();
        self.node(&base);
        if !headless {
            for ip in &cluster_ips {
                self.address(&base, *ip);
                self.ptr(*ip, &base_name);
            }
            for p in spec.ports.iter().flatten() {
                let Ok(port) = u16::try_from(p.port) else { continue };
                self.srv(&base, port, &base_name);
                if let Some(port_name) = p.name.as_deref().filter(|n| !n.is_empty()) {
                    let proto = p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
                    self.srv(&format!("_{port_name}._{proto}.{base}"), port, &base_name);
                }
            }
        }
        let publish_not_ready = spec.publish_not_ready_addresses == Some(true);
        for slice in slices {
            for e in &slice.endpoints {
                if !published(e.conditions.as_ref().and_then(|c| c.ready), publish_not_ready) {
                    continue;
                }
                for ip in e.addresses.iter().filter_map(|a| a.parse::<IpAddr>().ok()) {
                    let label = e.hostname.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| dashed(ip));
                    let key = format!("{label}.{base}");
                    let Some(target) = fqdn(&key) else { continue };
                    self.address(&key, ip);
                    if !headless {
                        continue;
                    }
                    self.address(&base, ip);
                    self.ptr(ip, &target);
                    for p in slice.ports.iter().flatten() {
                        let Some(port) = p.port.and_then(|p| u16::try_from(p).ok()) else { continue };
                        self.srv(&base, port, &target);
                        if let Some(port_name) = p.name.as_deref().filter(|n| !n.is_empty()) {
                            let proto = p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
                            self.srv(&format!("_{port_name}._{proto}.{base}"), port, &target);
                        }
                    }
                }
            }
        }
    }

    fn finish(mut self) -> HashMap<Box<str>, Node> {
        // Names that only lead to others exist (NODATA rather than NXDOMAIN).
        let suffix = format!(".{}", self.domain);
        let mut parents = Vec::new();
        for key in self.names.keys() {
            let mut rest: &str = key;
            while let Some(dot) = rest.find('.') {
                rest = &rest[dot + 1..];
                if rest.len() < suffix.len() - 1 || !key.ends_with(&suffix) {
                    break;
                }
                parents.push(Box::<str>::from(rest));
            }
        }
        for p in parents {
            self.names.entry(p).or_default();
        }
        for node in self.names.values_mut() {
            node.a.sort_unstable();
            node.a.dedup();
            node.aaaa.sort_unstable();
            node.aaaa.dedup();
            node.ptr.sort_by(|a, b| a.cmp_case(b));
            node.ptr.dedup();
            node.srv.sort_by(|a, b| a.target.cmp_case(&b.target).then(a.port.cmp(&b.port)));
            node.srv.dedup_by(|a, b| a.port == b.port && a.target == b.target);
            // CoreDNS's weights: equal shares of 100 among the records of one priority.
            let weight = u16::try_from(100 / node.srv.len().max(1)).unwrap_or(100);
            node.srv.iter_mut().for_each(|s| s.weight = weight);
        }
        self.names
    }
}

impl Records {
    /// The zone of `domain` (`cluster.local`) for these objects. Slices belong to the Service
    /// their `kubernetes.io/service-name` label names in their namespace. `serial` is the SOA
    /// serial (the caller's clock).
    pub fn build(domain: &str, services: &[Arc<Service>], slices: &[Arc<EndpointSlice>], serial: u32) -> Self {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let mut by_service: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
        for s in slices {
            let ns = s.metadata.namespace.as_deref().unwrap_or("");
            if let Some(svc) = s.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)) {
                by_service.entry((ns, svc.as_str())).or_default().push(s);
            }
        }
        let mut b = Builder { domain: domain.clone(), names: HashMap::new() };
        for svc in services {
            let key = (svc.metadata.namespace.as_deref().unwrap_or(""), svc.metadata.name.as_deref().unwrap_or(""));
            let slices = by_service.get(&key).map(Vec::as_slice).unwrap_or(&[]);
            b.service(svc, slices);
        }
        b.node(&format!("svc.{domain}"));
        b.node(&format!("pod.{domain}"));
        let names = b.finish();
        let apex = fqdn(&domain).unwrap_or_else(Name::root);
        let under = |label: &str| fqdn(&format!("{label}.{domain}")).unwrap_or_else(Name::root);
        let soa = SOA::new(under("ns.dns"), under("hostmaster"), serial, 7200, 1800, 86400, TTL);
        let soa = Record::from_rdata(apex.clone(), TTL, RData::SOA(soa));
        let ns = Record::from_rdata(apex.clone(), TTL, RData::NS(NS(under("ns.dns"))));
        Records { domain, apex, soa, ns, names, synced: true }
    }

    /// The zone of `domain` before the objects are known: its names are SERVFAIL, other
    /// names are forwarded as usual.
    pub fn unsynced(domain: &str) -> Self {
        Records { synced: false, ..Self::empty(domain) }
    }

    /// An empty zone of `domain`.
    pub fn empty(domain: &str) -> Self {
        Self::build(domain, &[], &[], 0)
    }

    /// The domain, lower case, without the final dot.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// How many names the zone holds.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The SOA record of the zone.
    pub fn soa(&self) -> &Record {
        &self.soa
    }

    fn in_zone(&self, key: &str) -> bool {
        let d = self.domain.len();
        key == self.domain
            || (key.len() > d && key.ends_with(&self.domain) && key.as_bytes()[key.len() - d - 1] == b'.')
    }

    /// The answer to `qname`/`qtype` (class IN). Answer records are owned by `qname` as asked
    /// (its case kept).
    pub fn lookup(&self, qname: &Name, qtype: RecordType) -> Lookup {
        let Some(key) = key_of(qname) else {
            let lower = qname.to_lowercase();
            return if self.apex.zone_of(&lower) { Lookup::Local(self.nxdomain()) } else { Lookup::Forward };
        };
        if !self.in_zone(&key) {
            // Reverse names of our addresses are ours; every other one goes upstream, as
            // CoreDNS's `fallthrough in-addr.arpa ip6.arpa`.
            if matches!(qtype, RecordType::PTR | RecordType::ANY)
                && let Some(node) = self.names.get(key.as_str())
                && !node.ptr.is_empty()
            {
                let answers = node.ptr.iter().map(|t| self.record(qname, RData::PTR(PTR(t.clone())))).collect();
                return Lookup::Local(Answer { answers, ..self.empty_answer(ResponseCode::NoError) });
            }
            return Lookup::Forward;
        }
        if !self.synced {
            return Lookup::Local(self.empty_answer(ResponseCode::ServFail));
        }
        Lookup::Local(self.local(qname, &key, qtype, 0))
    }

    fn local(&self, qname: &Name, key: &str, qtype: RecordType, depth: usize) -> Answer {
        if key == self.domain {
            let answers = match qtype {
                RecordType::SOA => vec![self.soa_as(qname)],
                RecordType::NS => vec![self.ns_as(qname)],
                RecordType::ANY => vec![self.soa_as(qname), self.ns_as(qname)],
                _ => Vec::new(),
            };
            return self.with_soa_if_empty(Answer { answers, ..self.empty_answer(ResponseCode::NoError) });
        }
        let Some(node) = self.names.get(key) else {
            return match self.pod(key) {
                Some(ip) => {
                    let answers = match (ip, qtype) {
                        (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => vec![self.record(qname, RData::A(A(v4)))],
                        (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => {
                            vec![self.record(qname, RData::AAAA(AAAA(v6)))]
                        }
                        _ => Vec::new(),
                    };
                    self.with_soa_if_empty(Answer { answers, ..self.empty_answer(ResponseCode::NoError) })
                }
                None => self.nxdomain(),
            };
        };
        let mut answer = self.empty_answer(ResponseCode::NoError);
        if let Some(target) = &node.cname {
            answer.answers.push(self.record(qname, RData::CNAME(CNAME(target.clone()))));
            if matches!(qtype, RecordType::A | RecordType::AAAA) {
                match key_of(target) {
                    Some(t) if self.in_zone(&t) && depth < MAX_CHAIN => {
                        let next = self.local(target, &t, qtype, depth + 1);
                        answer.answers.extend(next.answers);
                        answer.chase = next.chase;
                    }
                    Some(t) if self.in_zone(&t) => {}
                    _ => answer.chase = Some(target.clone()),
                }
            }
            return answer;
        }
        let any = qtype == RecordType::ANY;
        if qtype == RecordType::A || any {
            answer.answers.extend(node.a.iter().map(|ip| self.record(qname, RData::A(A(*ip)))));
        }
        if qtype == RecordType::AAAA || any {
            answer.answers.extend(node.aaaa.iter().map(|ip| self.record(qname, RData::AAAA(AAAA(*ip)))));
        }
        if qtype == RecordType::SRV || any {
            for s in &node.srv {
                let srv = SRV::new(0, s.weight, s.port, s.target.clone());
                answer.answers.push(self.record(qname, RData::SRV(srv)));
                // The target's addresses, unless it is the name asked (a Service's own SRV).
                if let Some(t) = key_of(&s.target).filter(|t| t != key)
                    && let Some(target) = self.names.get(t.as_str())
                {
                    let owner = &s.target;
                    answer.additional.extend(target.a.iter().map(|ip| self.record(owner, RData::A(A(*ip)))));
                    answer.additional.extend(target.aaaa.iter().map(|ip| self.record(owner, RData::AAAA(AAAA(*ip)))));
                }
            }
            answer.additional.dedup();
        }
        self.with_soa_if_empty(answer)
    }

    /// The address of a `<a-b-c-d>.<ns>.pod.<domain>` name.
    fn pod(&self, key: &str) -> Option<IpAddr> {
        let rest = key.strip_suffix(&self.domain)?.strip_suffix(".pod.")?;
        let (label, ns) = rest.split_once('.')?;
        if ns.is_empty() || ns.contains('.') {
            return None;
        }
        undashed(label)
    }

    fn record(&self, owner: &Name, data: RData) -> Record {
        Record::from_rdata(owner.clone(), TTL, data)
    }

    fn soa_as(&self, owner: &Name) -> Record {
        let mut r = self.soa.clone();
        r.name = owner.clone();
        r
    }

    fn ns_as(&self, owner: &Name) -> Record {
        let mut r = self.ns.clone();
        r.name = owner.clone();
        r
    }

    fn empty_answer(&self, rcode: ResponseCode) -> Answer {
        Answer { rcode, answers: Vec::new(), authority: Vec::new(), additional: Vec::new(), chase: None }
    }

    fn nxdomain(&self) -> Answer {
        Answer { authority: vec![self.soa.clone()], ..self.empty_answer(ResponseCode::NXDomain) }
    }

    fn with_soa_if_empty(&self, mut answer: Answer) -> Answer {
        if answer.answers.is_empty() {
            answer.authority.push(self.soa.clone());
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::BTreeMap;

    fn meta(ns: &str, name: &str) -> ObjectMeta {
        ObjectMeta { namespace: Some(ns.into()), name: Some(name.into()), ..Default::default() }
    }

    fn port(name: &str, port: i32, protocol: &str) -> ServicePort {
        ServicePort { name: Some(name.into()), port, protocol: Some(protocol.into()), ..Default::default() }
    }

    pub(crate) fn service(ns: &str, name: &str, ips: &[&str], ports: Vec<ServicePort>) -> Arc<Service> {
        let cluster_ip = ips.first().map(|s| s.to_string()).unwrap_or_else(|| "None".into());
        let cluster_ips =
            if ips.is_empty() { vec!["None".into()] } else { ips.iter().map(|s| s.to_string()).collect() };
        Arc::new(Service {
            metadata: meta(ns, name),
            spec: Some(ServiceSpec {
                cluster_ip: Some(cluster_ip),
                cluster_ips: Some(cluster_ips),
                ports: Some(ports),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    /// An endpoint: address, readiness, hostname.
    type Ep<'a> = (&'a str, Option<bool>, Option<&'a str>);

    pub(crate) fn slice(
        ns: &str,
        name: &str,
        svc: &str,
        ports: &[(&str, i32, &str)],
        eps: &[Ep],
    ) -> Arc<EndpointSlice> {
        let mut m = meta(ns, name);
        m.labels = Some(BTreeMap::from([(SERVICE_NAME_LABEL.to_string(), svc.to_string())]));
        Arc::new(EndpointSlice {
            metadata: m,
            address_type: if eps.first().is_some_and(|e| e.0.contains(':')) { "IPv6" } else { "IPv4" }.into(),
            endpoints: eps
                .iter()
                .map(|(ip, ready, host)| Endpoint {
                    addresses: vec![ip.to_string()],
                    conditions: Some(EndpointConditions { ready: *ready, ..Default::default() }),
                    hostname: host.map(str::to_string),
                    ..Default::default()
                })
                .collect(),
            ports: Some(
                ports
                    .iter()
                    .map(|(n, p, proto)| EndpointPort {
                        name: Some(n.to_string()),
                        port: Some(*p),
                        protocol: Some(proto.to_string()),
                        ..Default::default()
                    })
                    .collect(),
            ),
        })
    }

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn zone() -> Records {
        let services = vec![
            service(
                "default",
                "web",
                &["10.43.0.20", "fd00:43::20"],
                vec![port("http", 80, "TCP"), port("dns", 53, "UDP")],
            ),
            service("default", "db", &[], vec![port("pg", 5432, "TCP")]),
            {
                let mut s = (*service("default", "ext", &[], vec![])).clone();
                let spec = s.spec.as_mut().unwrap();
                spec.type_ = Some("ExternalName".into());
                spec.external_name = Some("example.com".into());
                spec.cluster_ip = None;
                spec.cluster_ips = None;
                Arc::new(s)
            },
            {
                let mut s = (*service("default", "alias", &[], vec![])).clone();
                let spec = s.spec.as_mut().unwrap();
                spec.type_ = Some("ExternalName".into());
                spec.external_name = Some("web.default.svc.cluster.local".into());
                Arc::new(s)
            },
            service("other", "web", &["10.43.0.30"], vec![]),
        ];
        let slices = vec![
            slice("default", "web-abc", "web", &[("http", 8080, "TCP")], &[("10.42.0.5", Some(true), None)]),
            slice(
                "default",
                "db-1",
                "db",
                &[("pg", 5432, "TCP")],
                &[
                    ("10.42.0.7", Some(true), Some("db-0")),
                    ("10.42.1.8", Some(true), None),
                    ("10.42.1.9", Some(false), Some("db-2")),
                    ("10.42.1.7", None, Some("db-3")),
                ],
            ),
            slice("default", "db-2", "db", &[("pg", 5432, "TCP")], &[("fd00:42::7", Some(true), Some("db-0"))]),
            // Same service name, another namespace: not db's.
            slice("other", "db-x", "db", &[], &[("10.42.9.9", Some(true), None)]),
        ];
        Records::build("cluster.local", &services, &slices, 42)
    }

    fn local(r: &Records, q: &str, t: RecordType) -> Answer {
        match r.lookup(&name(q), t) {
            Lookup::Local(a) => a,
            Lookup::Forward => panic!("{q} forwarded"),
        }
    }

    fn rdatas(records: &[Record]) -> Vec<String> {
        records.iter().map(|r| format!("{} {} {}", r.name, r.record_type(), r.data)).collect()
    }

    #[test]
    fn a_cluster_ip_service_answers_its_cluster_ips() {
        let r = zone();
        let a = local(&r, "web.default.svc.cluster.local.", RecordType::A);
        assert_eq!(a.rcode, ResponseCode::NoError);
        assert_eq!(rdatas(&a.answers), ["web.default.svc.cluster.local. A 10.43.0.20"]);
        assert!(a.authority.is_empty());
        assert_eq!(a.answers[0].ttl, 5);
        let a = local(&r, "web.default.svc.cluster.local.", RecordType::AAAA);
        assert_eq!(rdatas(&a.answers), ["web.default.svc.cluster.local. AAAA fd00:43::20"]);
        let a = local(&r, "web.other.svc.cluster.local.", RecordType::A);
        assert_eq!(rdatas(&a.answers), ["web.other.svc.cluster.local. A 10.43.0.30"]);
    }

    #[test]
    fn a_headless_service_answers_its_ready_endpoints_once_each() {
        let r = zone();
        let a = local(&r, "db.default.svc.cluster.local.", RecordType::A);
        // 10.42.1.9 is not ready; 10.42.1.7's readiness is unknown, which counts as ready.
        assert_eq!(
            rdatas(&a.answers),
            [
                "db.default.svc.cluster.local. A 10.42.0.7",
                "db.default.svc.cluster.local. A 10.42.1.7",
                "db.default.svc.cluster.local. A 10.42.1.8",
            ]
        );
        let a = local(&r, "db.default.svc.cluster.local.", RecordType::AAAA);
        assert_eq!(rdatas(&a.answers), ["db.default.svc.cluster.local. AAAA fd00:42::7"]);

        let twice = slice("default", "db-1", "db", &[], &[("10.42.0.7", Some(true), None)]);
        let again = slice("default", "db-3", "db", &[], &[("10.42.0.7", Some(true), Some("x"))]);
        let svc = service("default", "db", &[], vec![]);
        let r = Records::build("cluster.local", &[svc], &[twice, again], 1);
        let a = local(&r, "db.default.svc.cluster.local.", RecordType::A);
        assert_eq!(rdatas(&a.answers), ["db.default.svc.cluster.local. A 10.42.0.7"]);
    }

    #[test]
    fn publish_not_ready_addresses_publishes_every_endpoint() {
        let mut svc = (*service("default", "db", &[], vec![])).clone();
        svc.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
        let s =
            slice("default", "db-1", "db", &[], &[("10.42.0.7", Some(false), None), ("10.42.0.8", Some(true), None)]);
        let r = Records::build("cluster.local", &[Arc::new(svc)], &[s], 1);
        let a = local(&r, "db.default.svc.cluster.local.", RecordType::A);
        assert_eq!(
            rdatas(&a.answers),
            ["db.default.svc.cluster.local. A 10.42.0.7", "db.default.svc.cluster.local. A 10.42.0.8"]
        );
    }

    #[test]
    fn endpoints_are_named_by_hostname_or_dashed_address() {
        let r = zone();
        let a = local(&r, "db-0.db.default.svc.cluster.local.", RecordType::A);
        assert_eq!(rdatas(&a.answers), ["db-0.db.default.svc.cluster.local. A 10.42.0.7"]);
        let a = local(&r, "db-0.db.default.svc.cluster.local.", RecordType::AAAA);
        assert_eq!(rdatas(&a.answers), ["db-0.db.default.svc.cluster.local. AAAA fd00:42::7"]);
        let a = local(&r, "10-42-1-8.db.default.svc.cluster.local.", RecordType::A);
        assert_eq!(rdatas(&a.answers), ["10-42-1-8.db.default.svc.cluster.local. A 10.42.1.8"]);
        // Not ready: no name.
        assert_eq!(local(&r, "db-2.db.default.svc.cluster.local.", RecordType::A).rcode, ResponseCode::NXDomain);
        // An endpoint with a hostname is not also named by its address.
        assert_eq!(local(&r, "10-42-0-7.db.default.svc.cluster.local.", RecordType::A).rcode, ResponseCode::NXDomain);
        // Endpoints of a ClusterIP Service have names too (as CoreDNS).
        let a = local(&r, "10-42-0-5.web.default.svc.cluster.local.", RecordType::A);
        assert_eq!(rdatas(&a.answers), ["10-42-0-5.web.default.svc.cluster.local. A 10.42.0.5"]);
    }

    #[test]
    fn srv_records_point_at_the_service_or_at_each_endpoint() {
        let r = zone();
        let a = local(&r, "_http._tcp.web.default.svc.cluster.local.", RecordType::SRV);
        assert_eq!(
            rdatas(&a.answers),
            ["_http._tcp.web.default.svc.cluster.local. SRV 0 100 80 web.default.svc.cluster.local."]
        );
        assert_eq!(
            rdatas(&a.additional),
            ["web.default.svc.cluster.local. A 10.43.0.20", "web.default.svc.cluster.local. AAAA fd00:43::20"]
        );
        let a = local(&r, "_dns._udp.web.default.svc.cluster.local.", RecordType::SRV);
        assert_eq!(
            rdatas(&a.answers),
            ["_dns._udp.web.default.svc.cluster.local. SRV 0 100 53 web.default.svc.cluster.local."]
        );
        assert_eq!(
            local(&r, "_http._udp.web.default.svc.cluster.local.", RecordType::SRV).rcode,
            ResponseCode::NXDomain
        );

        let a = local(&r, "_pg._tcp.db.default.svc.cluster.local.", RecordType::SRV);
        assert_eq!(
            rdatas(&a.answers),
            [
                "_pg._tcp.db.default.svc.cluster.local. SRV 0 33 5432 10-42-1-8.db.default.svc.cluster.local.",
                "_pg._tcp.db.default.svc.cluster.local. SRV 0 33 5432 db-0.db.default.svc.cluster.local.",
                "_pg._tcp.db.default.svc.cluster.local. SRV 0 33 5432 db-3.db.default.svc.cluster.local.",
            ]
        );
        assert_eq!(
            rdatas(&a.additional),
            [
                "10-42-1-8.db.default.svc.cluster.local. A 10.42.1.8",
                "db-0.db.default.svc.cluster.local. A 10.42.0.7",
                "db-0.db.default.svc.cluster.local. AAAA fd00:42::7",
                "db-3.db.default.svc.cluster.local. A 10.42.1.7",
            ]
        );
        // The Service name itself lists every port.
        let a = local(&r, "web.default.svc.cluster.local.", RecordType::SRV);
        assert_eq!(
            rdatas(&a.answers),
            [
                "web.default.svc.cluster.local. SRV 0 50 53 web.default.svc.cluster.local.",
                "web.default.svc.cluster.local. SRV 0 50 80 web.default.svc.cluster.local.",
            ]
        );
    }

    #[test]
    fn ptr_records_name_cluster_ips_and_headless_endpoints() {
        let r = zone();
        let a = local(&r, "20.0.43.10.in-addr.arpa.", RecordType::PTR);
        assert_eq!(rdatas(&a.answers), ["20.0.43.10.in-addr.arpa. PTR web.default.svc.cluster.local."]);
        let a = local(&r, "7.0.42.10.in-addr.arpa.", RecordType::PTR);
        assert_eq!(rdatas(&a.answers), ["7.0.42.10.in-addr.arpa. PTR db-0.db.default.svc.cluster.local."]);
        let v6 = reverse_key("fd00:43::20".parse().unwrap());
        assert_eq!(v6, "0.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.3.4.0.0.0.0.d.f.ip6.arpa");
        let a = local(&r, &format!("{v6}."), RecordType::PTR);
        assert_eq!(rdatas(&a.answers), [format!("{v6}. PTR web.default.svc.cluster.local.")]);
        let a = local(&r, &format!("{}.", reverse_key("fd00:42::7".parse().unwrap())), RecordType::PTR);
        assert_eq!(a.answers.len(), 1);
        assert_eq!(a.answers[0].data.to_string(), "db-0.db.default.svc.cluster.local.");
        // Endpoints of a ClusterIP Service and unknown addresses go upstream.
        assert!(matches!(r.lookup(&name("5.0.42.10.in-addr.arpa."), RecordType::PTR), Lookup::Forward));
        assert!(matches!(r.lookup(&name("1.1.168.192.in-addr.arpa."), RecordType::PTR), Lookup::Forward));
    }

    #[test]
    fn an_external_name_service_is_a_cname() {
        let r = zone();
        for t in [RecordType::CNAME, RecordType::TXT] {
            let a = local(&r, "ext.default.svc.cluster.local.", t);
            assert_eq!(rdatas(&a.answers), ["ext.default.svc.cluster.local. CNAME example.com."]);
            assert_eq!(a.chase, None);
        }
        let a = local(&r, "ext.default.svc.cluster.local.", RecordType::A);
        assert_eq!(rdatas(&a.answers), ["ext.default.svc.cluster.local. CNAME example.com."]);
        assert_eq!(a.chase, Some(name("example.com.")));
        // A target inside the zone is followed at once.
        let a = local(&r, "alias.default.svc.cluster.local.", RecordType::A);
        assert_eq!(
            rdatas(&a.answers),
            [
                "alias.default.svc.cluster.local. CNAME web.default.svc.cluster.local.",
                "web.default.svc.cluster.local. A 10.43.0.20",
            ]
        );
        assert_eq!(a.chase, None);
    }

    #[test]
    fn missing_names_are_nxdomain_with_the_soa() {
        let r = zone();
        for q in [
            "nope.default.svc.cluster.local.",
            "web.nope.svc.cluster.local.",
            "x.cluster.local.",
            "a.b.web.default.svc.cluster.local.",
        ] {
            let a = local(&r, q, RecordType::A);
            assert_eq!(a.rcode, ResponseCode::NXDomain, "{q}");
            assert!(a.answers.is_empty());
            assert_eq!(
                rdatas(&a.authority),
                ["cluster.local. SOA ns.dns.cluster.local. hostmaster.cluster.local. 42 7200 1800 86400 5"]
            );
            assert_eq!(a.authority[0].ttl, 5);
        }
    }

    #[test]
    fn a_name_without_the_type_asked_is_nodata_with_the_soa() {
        let r = zone();
        for (q, t) in [
            ("web.other.svc.cluster.local.", RecordType::AAAA),
            ("web.default.svc.cluster.local.", RecordType::MX),
            ("web.default.svc.cluster.local.", RecordType::Unknown(65000)),
            ("default.svc.cluster.local.", RecordType::A),
            ("svc.cluster.local.", RecordType::A),
            ("_tcp.web.default.svc.cluster.local.", RecordType::SRV),
            ("cluster.local.", RecordType::A),
            ("10-42-0-9.default.pod.cluster.local.", RecordType::AAAA),
        ] {
            let a = local(&r, q, t);
            assert_eq!(a.rcode, ResponseCode::NoError, "{q}");
            assert!(a.answers.is_empty(), "{q}");
            assert_eq!(rdatas(&a.authority), [rdatas(std::slice::from_ref(r.soa()))[0].clone()], "{q}");
        }
        let a = local(&r, "cluster.local.", RecordType::SOA);
        assert_eq!(
            rdatas(&a.answers),
            ["cluster.local. SOA ns.dns.cluster.local. hostmaster.cluster.local. 42 7200 1800 86400 5"]
        );
        let a = local(&r, "cluster.local.", RecordType::NS);
        assert_eq!(rdatas(&a.answers), ["cluster.local. NS ns.dns.cluster.local."]);
    }

    #[test]
    fn pod_names_spell_their_address() {
        let r = zone();
        let a = local(&r, "10-42-0-9.default.pod.cluster.local.", RecordType::A);
        assert_eq!(rdatas(&a.answers), ["10-42-0-9.default.pod.cluster.local. A 10.42.0.9"]);
        let a = local(&r, "fd00-42--9.kube-system.pod.cluster.local.", RecordType::AAAA);
        assert_eq!(rdatas(&a.answers), ["fd00-42--9.kube-system.pod.cluster.local. AAAA fd00:42::9"]);
        assert_eq!(local(&r, "web.default.pod.cluster.local.", RecordType::A).rcode, ResponseCode::NXDomain);
        assert_eq!(local(&r, "10-42-0-9.pod.cluster.local.", RecordType::A).rcode, ResponseCode::NXDomain);
    }

    #[test]
    fn names_match_in_any_case_and_answers_keep_the_case_asked() {
        let r = zone();
        let q = name("WeB.DEFAULT.svc.Cluster.Local.");
        let Lookup::Local(a) = r.lookup(&q, RecordType::A) else { panic!("forwarded") };
        assert_eq!(a.answers.len(), 1);
        assert!(a.answers[0].name.eq_case(&q));
        assert_eq!(a.answers[0].data, RData::A(A("10.43.0.20".parse().unwrap())));
    }

    #[test]
    fn names_outside_the_domain_go_upstream() {
        let r = zone();
        for q in ["example.com.", "cluster.local.example.com.", "xcluster.local.", "."] {
            assert!(matches!(r.lookup(&name(q), RecordType::A), Lookup::Forward), "{q}");
        }
        // A label holding a dot cannot be a cluster name.
        let odd = Name::from_labels(vec![b"a.b".to_vec(), b"cluster".to_vec(), b"local".to_vec()]).unwrap();
        assert!(matches!(r.lookup(&odd, RecordType::A), Lookup::Local(Answer { rcode: ResponseCode::NXDomain, .. })));
    }

    #[test]
    fn before_the_objects_are_known_cluster_names_fail_softly() {
        let r = Records::unsynced("cluster.local");
        let a = local(&r, "web.default.svc.cluster.local.", RecordType::A);
        assert_eq!((a.rcode, a.answers.len(), a.authority.len()), (ResponseCode::ServFail, 0, 0));
        assert!(matches!(r.lookup(&name("example.com."), RecordType::A), Lookup::Forward));
    }

    #[test]
    fn another_domain_is_honoured() {
        let svc = service("default", "web", &["10.43.0.20"], vec![]);
        let r = Records::build("Edge.Lan.", &[svc], &[], 1);
        assert_eq!(r.domain(), "edge.lan");
        let a = local(&r, "web.default.svc.edge.lan.", RecordType::A);
        assert_eq!(rdatas(&a.answers), ["web.default.svc.edge.lan. A 10.43.0.20"]);
        assert!(matches!(r.lookup(&name("web.default.svc.cluster.local."), RecordType::A), Lookup::Forward));
    }
}
