//! The nftables backend: the model rendered as a [`Ruleset`] per address family (tables
//! `ip skiff` and `ip6 skiff`), and the script that takes the kernel from the ruleset applied
//! last to the new one in one `nft -f -` transaction.
//!
//! The layout follows upstream kube-proxy's nftables mode. Packets meet two verdict maps keyed
//! by destination, protocol and port: `service-ips` (cluster, external and load-balancer IPs)
//! and `service-nodeports` (node ports on the node's own addresses). They jump to one chain per
//! Service port (`svc-…` for cluster traffic, `ext-…` for external traffic) that picks an
//! endpoint chain (`ep-…`) at random, or by the client's address under session affinity, and
//! the endpoint chain DNATs. `no-endpoint-services`/`no-endpoint-nodeports` refuse (TCP reset,
//! ICMP unreachable) traffic for Services without endpoints, and drop traffic a `Local` policy
//! has no endpoint for on this node. Traffic is marked for masquerading only where the reply
//! would otherwise miss the way back: from outside the node's pod CIDR to a cluster IP, to
//! node ports and external IPs under policy `Cluster`, and a pod reaching itself (hairpin).
//!
//! Invariant: touches nothing outside its own tables. An update rewrites only the chains and
//! map elements that changed, so affinity sets and unchanged chains keep their state, and
//! established connections keep their conntrack NAT whatever the rules do.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};

use super::model::{Endpoint, ServicePort};
pub use super::{Family, Local};
use super::{MASQ_MARK, ProxyError};

/// Generated names carry 8 characters of hash: nft names may be long, and the readable part
/// follows.
fn hash(text: &str) -> String {
    super::short_hash(text, 8)
}

/// The table both families use.
pub const TABLE: &str = "skiff";

/// An affinity set: the client addresses recently sent to one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AffinitySet {
    pub timeout: u32,
}

/// Everything of one family's table that changes with Services and endpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// Chain name -> its rules, in order.
    pub chains: BTreeMap<String, Vec<String>>,
    pub sets: BTreeMap<String, AffinitySet>,
    /// Map name -> key -> verdict.
    pub maps: BTreeMap<&'static str, BTreeMap<String, String>>,
    /// Elements of the `cluster-ips` set.
    pub cluster_ips: BTreeSet<String>,
}

const MAPS: [&str; 4] = ["service-ips", "service-nodeports", "no-endpoint-services", "no-endpoint-nodeports"];

fn ip_text(ip: &IpAddr) -> String {
    ip.to_string().replace(':', ".")
}

fn addr_type(f: Family) -> &'static str {
    match f {
        Family::V4 => "ipv4_addr",
        Family::V6 => "ipv6_addr",
    }
}

/// Runs `nft -f -` with `script`.
pub fn apply(script: &str) -> Result<(), ProxyError> {
    let spawn = |source| ProxyError::Spawn { program: "nft".into(), package: "nftables", source };
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).map_err(spawn)?;
    }
    let out = child.wait_with_output().map_err(spawn)?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first: Vec<&str> = stderr.lines().take(3).collect();
    Err(ProxyError::Rejected { program: "nft".into(), message: first.join(" | ") })
}

/// Whether the table of `family` is still there.
pub fn present(family: Family) -> bool {
    Command::new("nft")
        .args(["list", "chain", family.name(), TABLE, "services"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether nftables works on this host (the tool is there and the kernel answers).
pub fn available() -> bool {
    Command::new("nft")
        .args(["list", "tables"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Removes both families' tables.
pub fn cleanup() -> Result<(), ProxyError> {
    apply(&cleanup_script())
}

/// Renders the model's ports for one family.
pub fn render(ports: &[ServicePort], local: &Local) -> Ruleset {
    let f = local.family;
    let fam = f.name();
    let mut rs = Ruleset::default();
    for m in MAPS {
        rs.maps.insert(m, BTreeMap::new());
    }
    for sp in ports {
        let cluster_ips: Vec<&IpAddr> = sp.cluster_ips.iter().filter(|ip| f.has(ip)).collect();
        if cluster_ips.is_empty() {
            continue;
        }
        let external_ips: Vec<&IpAddr> = sp.external_ips.iter().filter(|ip| f.has(ip)).collect();
        let internal: Vec<&Endpoint> = sp.internal.iter().filter(|e| f.has(&e.ip)).collect();
        let external: Vec<&Endpoint> = sp.external.iter().filter(|e| f.has(&e.ip)).collect();
        let id = sp.id.to_string();
        let h = hash(&id);
        let proto = sp.proto.name();
        let svc_chain = format!("svc-{h}-{id}");
        let ext_chain = format!("ext-{h}-{id}");
        let no_endpoints = if sp.has_endpoints { "drop" } else { "goto reject-chain" };
        let ep_chain = |rs: &mut Ruleset, ep: &Endpoint| -> (String, String) {
            let key = format!("{id}__{}/{}", ip_text(&ep.ip), ep.port);
            let eh = hash(&key);
            let chain = format!("ep-{eh}-{key}");
            // The timeout is part of the name: a set's timeout cannot change in place.
            let set = format!("affinity-{}", hash(&format!("{key}/{}", sp.affinity.unwrap_or(0))));
            if !rs.chains.contains_key(&chain) {
                let mut rules = vec![format!("{fam} saddr {} jump mark-for-masquerade", ep.ip)];
                if let Some(timeout) = sp.affinity {
                    rs.sets.insert(set.clone(), AffinitySet { timeout });
                    rules.push(format!("update @{set} {{ {fam} saddr }}"));
                }
                rules.push(format!("meta l4proto {proto} dnat to {}", SocketAddr::new(ep.ip, ep.port)));
                rs.chains.insert(chain.clone(), rules);
            }
            (chain, set)
        };
        let balance = |rs: &mut Ruleset, eps: &[&Endpoint], rules: &mut Vec<String>| {
            let chains: Vec<(String, String)> = eps.iter().map(|e| ep_chain(rs, e)).collect();
            if sp.affinity.is_some() {
                for (chain, set) in &chains {
                    rules.push(format!("{fam} saddr @{set} goto {chain}"));
                }
            }
            match chains.as_slice() {
                [(only, _)] => rules.push(format!("goto {only}")),
                _ => {
                    let arms: Vec<String> =
                        chains.iter().enumerate().map(|(i, (c, _))| format!("{i} : goto {c}")).collect();
                    rules.push(format!("numgen random mod {} vmap {{ {} }}", chains.len(), arms.join(", ")));
                }
            }
        };
        let has_internal = !internal.is_empty();
        if has_internal {
            let mut rules = Vec::new();
            if let Some(cidr) = local.pod_cidr {
                rules.push(format!("{fam} saddr != {cidr} jump mark-for-masquerade"));
            }
            balance(&mut rs, &internal, &mut rules);
            rs.chains.insert(svc_chain.clone(), rules);
        }
        for ip in &cluster_ips {
            rs.cluster_ips.insert(ip.to_string());
            let key = format!("{ip} . {proto} . {}", sp.port);
            if has_internal {
                rs.maps.entry("service-ips").or_default().insert(key, format!("goto {svc_chain}"));
            } else {
                rs.maps.entry("no-endpoint-services").or_default().insert(key, no_endpoints.to_string());
            }
        }
        if sp.node_port.is_none() && external_ips.is_empty() {
            continue;
        }
        let has_external = !external.is_empty();
        if has_external {
            let mut rules = Vec::new();
            if sp.external_local {
                // Pods and the node itself reach the Service as cluster traffic would.
                if has_internal {
                    if let Some(cidr) = local.pod_cidr {
                        rules.push(format!("{fam} saddr {cidr} goto {svc_chain}"));
                    }
                    rules.push("fib saddr type local jump mark-for-masquerade".to_string());
                    rules.push(format!("fib saddr type local goto {svc_chain}"));
                }
            } else {
                rules.push("jump mark-for-masquerade".to_string());
            }
            balance(&mut rs, &external, &mut rules);
            rs.chains.insert(ext_chain.clone(), rules);
        }
        let verdict = if has_external { format!("goto {ext_chain}") } else { no_endpoints.to_string() };
        for ip in &external_ips {
            let key = format!("{ip} . {proto} . {}", sp.port);
            let map = if has_external { "service-ips" } else { "no-endpoint-services" };
            rs.maps.entry(map).or_default().insert(key, verdict.clone());
        }
        if let Some(np) = sp.node_port {
            let map = if has_external { "service-nodeports" } else { "no-endpoint-nodeports" };
            rs.maps.entry(map).or_default().insert(format!("{proto} . {np}"), verdict.clone());
        }
    }
    rs
}

/// The chains and maps every table has, whatever the Services.
fn skeleton(local: &Local) -> String {
    let fam = local.family.name();
    let addr = addr_type(local.family);
    let t = format!("{fam} {TABLE}");
    let mut s = String::new();
    let _ = writeln!(s, "add table {t} {{ comment \"service proxy rules of skiff\" ; }}");
    for (name, key) in [
        ("service-ips", format!("{addr} . inet_proto . inet_service")),
        ("service-nodeports", "inet_proto . inet_service".to_string()),
        ("no-endpoint-services", format!("{addr} . inet_proto . inet_service")),
        ("no-endpoint-nodeports", "inet_proto . inet_service".to_string()),
    ] {
        let _ = writeln!(s, "add map {t} {name} {{ type {key} : verdict ; }}");
    }
    let _ = writeln!(s, "add set {t} cluster-ips {{ type {addr} ; }}");
    let base = [
        ("nat-prerouting", "nat hook prerouting priority -100"),
        ("nat-output", "nat hook output priority -100"),
        ("nat-postrouting", "nat hook postrouting priority 100"),
        ("filter-input", "filter hook input priority -110"),
        ("filter-forward", "filter hook forward priority -110"),
        ("filter-output", "filter hook output priority -110"),
        ("filter-output-post-dnat", "filter hook output priority -90"),
    ];
    for (name, hook) in base {
        let _ = writeln!(s, "add chain {t} {name} {{ type {hook} ; policy accept ; }}");
    }
    let fixed =
        ["services", "endpoints-check", "cluster-ips-check", "reject-chain", "mark-for-masquerade", "masquerading"];
    for name in fixed {
        let _ = writeln!(s, "add chain {t} {name}");
    }
    let nodeport_daddr = if local.localhost_nodeports && local.family == Family::V4 {
        String::new()
    } else {
        format!("{fam} daddr != {} ", local.family.loopback())
    };
    let rules = [
        ("nat-prerouting", "jump services".to_string()),
        ("nat-output", "jump services".to_string()),
        ("nat-postrouting", "jump masquerading".to_string()),
        ("filter-input", "ct state new jump endpoints-check".to_string()),
        ("filter-forward", "ct state new jump endpoints-check".to_string()),
        ("filter-forward", "ct state new jump cluster-ips-check".to_string()),
        ("filter-output", "ct state new jump endpoints-check".to_string()),
        ("filter-output-post-dnat", "ct state new jump cluster-ips-check".to_string()),
        ("services", format!("{fam} daddr . meta l4proto . th dport vmap @service-ips")),
        ("services", format!("fib daddr type local {nodeport_daddr}meta l4proto . th dport vmap @service-nodeports")),
        ("endpoints-check", format!("{fam} daddr . meta l4proto . th dport vmap @no-endpoint-services")),
        ("endpoints-check", "fib daddr type local meta l4proto . th dport vmap @no-endpoint-nodeports".to_string()),
        // A cluster IP answers only on its Service's ports.
        ("cluster-ips-check", format!("{fam} daddr @cluster-ips reject")),
        ("reject-chain", "reject".to_string()),
        ("mark-for-masquerade", format!("meta mark set meta mark or {MASQ_MARK:#x}")),
        ("masquerading", format!("meta mark and {MASQ_MARK:#x} == 0 return")),
        ("masquerading", format!("meta mark set meta mark xor {MASQ_MARK:#x}")),
        ("masquerading", "masquerade fully-random".to_string()),
    ];
    for (chain, rule) in rules {
        let _ = writeln!(s, "add rule {t} {chain} {rule}");
    }
    s
}

/// The script that takes the table from `old` to `new`; `None` for `old` replaces whatever
/// table is there (the first sync after a start, or after a failed update). Empty when
/// nothing changed.
pub fn script(old: Option<&Ruleset>, new: &Ruleset, local: &Local) -> String {
    let t = format!("{} {TABLE}", local.family.name());
    let empty = Ruleset::default();
    let mut s = String::new();
    let old = match old {
        Some(o) => o,
        None => {
            // `add` first so that `delete` finds a table to delete.
            let _ = writeln!(s, "add table {t}");
            let _ = writeln!(s, "delete table {t}");
            s.push_str(&skeleton(local));
            &empty
        }
    };
    for (name, set) in new.sets.iter().filter(|(n, _)| !old.sets.contains_key(*n)) {
        let _ = writeln!(
            s,
            "add set {t} {name} {{ type {} ; flags dynamic,timeout ; timeout {}s ; }}",
            addr_type(local.family),
            set.timeout
        );
    }
    for name in new.chains.keys().filter(|n| !old.chains.contains_key(*n)) {
        let _ = writeln!(s, "add chain {t} {name}");
    }
    for (name, rules) in &new.chains {
        match old.chains.get(name) {
            Some(o) if o == rules => continue,
            Some(_) => {
                let _ = writeln!(s, "flush chain {t} {name}");
            }
            None => {}
        }
        for r in rules {
            let _ = writeln!(s, "add rule {t} {name} {r}");
        }
    }
    let no_map = BTreeMap::new();
    for m in MAPS {
        let (o, n) = (old.maps.get(m).unwrap_or(&no_map), new.maps.get(m).unwrap_or(&no_map));
        for (key, verdict) in o {
            if n.get(key) != Some(verdict) {
                let _ = writeln!(s, "delete element {t} {m} {{ {key} }}");
            }
        }
        for (key, verdict) in n {
            if o.get(key) != Some(verdict) {
                let _ = writeln!(s, "add element {t} {m} {{ {key} : {verdict} }}");
            }
        }
    }
    for ip in old.cluster_ips.difference(&new.cluster_ips) {
        let _ = writeln!(s, "delete element {t} cluster-ips {{ {ip} }}");
    }
    for ip in new.cluster_ips.difference(&old.cluster_ips) {
        let _ = writeln!(s, "add element {t} cluster-ips {{ {ip} }}");
    }
    // Chains and sets go last, once nothing refers to them.
    for name in old.chains.keys().filter(|n| !new.chains.contains_key(*n)) {
        let _ = writeln!(s, "flush chain {t} {name}");
    }
    for name in old.chains.keys().filter(|n| !new.chains.contains_key(*n)) {
        let _ = writeln!(s, "delete chain {t} {name}");
    }
    for name in old.sets.keys().filter(|n| !new.sets.contains_key(*n)) {
        let _ = writeln!(s, "delete set {t} {name}");
    }
    s
}

/// The script that removes both families' tables (`skiff agent --cleanup`).
pub fn cleanup_script() -> String {
    let mut s = String::new();
    for f in [Family::V4, Family::V6] {
        let _ = writeln!(s, "add table {} {TABLE}", f.name());
        let _ = writeln!(s, "delete table {} {TABLE}", f.name());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netproxy::fixtures::{ep, port, v4};

    #[test]
    fn hash_is_stable_base32() {
        assert_eq!(hash("default/web/tcp/http"), hash("default/web/tcp/http"));
        assert_eq!(hash("x").len(), 8);
        assert!(hash("x").chars().all(|c| c.is_ascii_uppercase() || ('2'..='7').contains(&c)));
        assert_ne!(hash("a"), hash("b"));
    }

    #[test]
    fn cluster_ip_with_two_endpoints() {
        let rs = render(&[port(vec![ep("10.42.0.5", 8080), ep("10.42.0.6", 8080)])], &v4());
        let h = hash("default/web/tcp/http");
        let svc = format!("svc-{h}-default/web/tcp/http");
        let e1 = format!("ep-{}-default/web/tcp/http__10.42.0.5/8080", hash("default/web/tcp/http__10.42.0.5/8080"));
        let e2 = format!("ep-{}-default/web/tcp/http__10.42.0.6/8080", hash("default/web/tcp/http__10.42.0.6/8080"));
        assert_eq!(
            rs.chains[&svc],
            vec![
                "ip saddr != 10.42.0.0/24 jump mark-for-masquerade".to_string(),
                format!("numgen random mod 2 vmap {{ 0 : goto {e1}, 1 : goto {e2} }}"),
            ]
        );
        assert_eq!(
            rs.chains[&e1],
            vec!["ip saddr 10.42.0.5 jump mark-for-masquerade", "meta l4proto tcp dnat to 10.42.0.5:8080"]
        );
        assert_eq!(rs.maps["service-ips"]["10.43.0.100 . tcp . 80"], format!("goto {svc}"));
        assert!(rs.maps["no-endpoint-services"].is_empty());
        assert!(rs.cluster_ips.contains("10.43.0.100"));
        // Not of this family: nothing in the IPv6 table.
        let v6 = Local { family: Family::V6, pod_cidr: None, localhost_nodeports: false };
        assert!(render(&[port(vec![ep("10.42.0.5", 8080)])], &v6).chains.is_empty());
    }

    #[test]
    fn no_endpoints_is_refused_and_local_policy_without_local_endpoints_drops() {
        let rs = render(&[port(vec![])], &v4());
        assert_eq!(rs.maps["no-endpoint-services"]["10.43.0.100 . tcp . 80"], "goto reject-chain");
        assert!(rs.chains.is_empty());
        let mut p = port(vec![]);
        p.has_endpoints = true;
        p.node_port = Some(30080);
        let rs = render(&[p], &v4());
        assert_eq!(rs.maps["no-endpoint-services"]["10.43.0.100 . tcp . 80"], "drop");
        assert_eq!(rs.maps["no-endpoint-nodeports"]["tcp . 30080"], "drop");
    }

    #[test]
    fn affinity_and_external_traffic() {
        let mut p = port(vec![ep("10.42.0.5", 8080)]);
        p.affinity = Some(60);
        p.node_port = Some(30080);
        p.external_ips = vec!["172.31.0.2".parse().unwrap()];
        let rs = render(&[p], &v4());
        let h = hash("default/web/tcp/http");
        let eh = hash("default/web/tcp/http__10.42.0.5/8080");
        let e = format!("ep-{eh}-default/web/tcp/http__10.42.0.5/8080");
        let ext = format!("ext-{h}-default/web/tcp/http");
        let set = format!("affinity-{}", hash("default/web/tcp/http__10.42.0.5/8080/60"));
        assert_eq!(rs.sets[&set], AffinitySet { timeout: 60 });
        assert_eq!(
            rs.chains[&ext],
            vec!["jump mark-for-masquerade".to_string(), format!("ip saddr @{set} goto {e}"), format!("goto {e}")]
        );
        assert_eq!(rs.chains[&e][1], format!("update @{set} {{ ip saddr }}"));
        assert_eq!(rs.maps["service-nodeports"]["tcp . 30080"], format!("goto {ext}"));
        assert_eq!(rs.maps["service-ips"]["172.31.0.2 . tcp . 80"], format!("goto {ext}"));
    }

    #[test]
    fn ipv6_services_render_in_the_ip6_table() {
        let mut p = port(vec![ep("fd00:42::5", 8080)]);
        p.cluster_ips = vec!["fd00:43::100".parse().unwrap()];
        let v6 =
            Local { family: Family::V6, pod_cidr: Some("fd00:42::/64".parse().unwrap()), localhost_nodeports: true };
        let rs = render(std::slice::from_ref(&p), &v6);
        let e = format!("ep-{}-default/web/tcp/http__fd00.42..5/8080", hash("default/web/tcp/http__fd00.42..5/8080"));
        assert_eq!(
            rs.chains[&e],
            vec!["ip6 saddr fd00:42::5 jump mark-for-masquerade", "meta l4proto tcp dnat to [fd00:42::5]:8080"]
        );
        assert!(rs.maps["service-ips"].contains_key("fd00:43::100 . tcp . 80"));
        let whole = script(None, &rs, &v6);
        assert!(
            whole.contains("add map ip6 skiff service-ips { type ipv6_addr . inet_proto . inet_service : verdict ; }")
        );
        // Node ports never answer on ::1 (route_localnet is IPv4 only).
        assert!(
            whole.contains("fib daddr type local ip6 daddr != ::1/128 meta l4proto . th dport vmap @service-nodeports"),
            "{whole}"
        );
        assert!(render(&[p], &v4()).chains.is_empty());
    }

    #[test]
    fn update_touches_only_what_changed() {
        let local = v4();
        let a = render(&[port(vec![ep("10.42.0.5", 8080)])], &local);
        let full = script(None, &a, &local);
        assert!(full.starts_with("add table ip skiff\ndelete table ip skiff\n"));
        assert_eq!(script(Some(&a), &a, &local), "");
        let b = render(&[port(vec![ep("10.42.0.6", 8080)])], &local);
        let h = hash("default/web/tcp/http");
        let old_ep =
            format!("ep-{}-default/web/tcp/http__10.42.0.5/8080", hash("default/web/tcp/http__10.42.0.5/8080"));
        let new_ep =
            format!("ep-{}-default/web/tcp/http__10.42.0.6/8080", hash("default/web/tcp/http__10.42.0.6/8080"));
        let svc = format!("svc-{h}-default/web/tcp/http");
        assert_eq!(
            script(Some(&a), &b, &local),
            format!(
                "add chain ip skiff {new_ep}\n\
                 add rule ip skiff {new_ep} ip saddr 10.42.0.6 jump mark-for-masquerade\n\
                 add rule ip skiff {new_ep} meta l4proto tcp dnat to 10.42.0.6:8080\n\
                 flush chain ip skiff {svc}\n\
                 add rule ip skiff {svc} ip saddr != 10.42.0.0/24 jump mark-for-masquerade\n\
                 add rule ip skiff {svc} goto {new_ep}\n\
                 flush chain ip skiff {old_ep}\n\
                 delete chain ip skiff {old_ep}\n"
            )
        );
    }
}
