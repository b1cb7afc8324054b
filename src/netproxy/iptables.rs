//! The iptables backend, for hosts without nftables: the model rendered as `SKIFF-…` chains of
//! the `nat` and `filter` tables, applied with `iptables-restore --noflush` (`ip6tables-restore`
//! for IPv6), one transaction per table.
//!
//! The layout follows upstream kube-proxy's iptables mode. `nat` `SKIFF-SERVICES` (jumped to
//! from `PREROUTING` and `OUTPUT`) matches cluster and external IPs by address, protocol and
//! port and jumps to one chain per Service port (`SKIFF-SVC-…` for cluster traffic,
//! `SKIFF-EXT-…` for external traffic); its last rule sends traffic to the node's own addresses
//! on to `SKIFF-NODEPORTS`. A Service port's chain picks an endpoint chain (`SKIFF-SEP-…`) with
//! the `statistic` match, or by the client's address with the `recent` match under session
//! affinity; the endpoint chain DNATs. `filter` `SKIFF-SERVICES` (jumped to from `INPUT`,
//! `FORWARD` and `OUTPUT` for new connections, after DNAT) refuses Services without endpoints,
//! drops what a `Local` policy has no endpoint for, and refuses ports a cluster IP does not
//! serve. Masquerading follows the same mark as the nftables backend.
//!
//! Invariant: the only rules outside its own chains are the six jumps into them, each carrying
//! the comment [`COMMENT`], which is how a restart or `--cleanup` finds them again. An update
//! rewrites only the chains that changed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};

use super::model::{Endpoint, ServicePort};
use super::{Family, Local, MASQ_MARK, ProxyError, short_hash};

/// The prefix of every chain this backend owns.
pub const PREFIX: &str = "SKIFF-";
/// The comment on the jumps from the built-in chains.
pub const COMMENT: &str = "skiff service proxy";
const SERVICES: &str = "SKIFF-SERVICES";
const NODEPORTS: &str = "SKIFF-NODEPORTS";
const POSTROUTING: &str = "SKIFF-POSTROUTING";
const MARK_MASQ: &str = "SKIFF-MARK-MASQ";

/// The two tables the backend writes, in the order they are restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Table {
    Filter,
    Nat,
}

impl Table {
    pub fn name(self) -> &'static str {
        match self {
            Table::Filter => "filter",
            Table::Nat => "nat",
        }
    }
}

const TABLES: [Table; 2] = [Table::Filter, Table::Nat];

/// The jumps from the built-in chains into the backend's own: (table, built-in chain, rule).
const HOOKS: [(Table, &str, &str); 6] = [
    (Table::Nat, "PREROUTING", "-j SKIFF-SERVICES"),
    (Table::Nat, "OUTPUT", "-j SKIFF-SERVICES"),
    (Table::Nat, "POSTROUTING", "-j SKIFF-POSTROUTING"),
    (Table::Filter, "INPUT", "-m conntrack --ctstate NEW -j SKIFF-SERVICES"),
    (Table::Filter, "FORWARD", "-m conntrack --ctstate NEW -j SKIFF-SERVICES"),
    (Table::Filter, "OUTPUT", "-m conntrack --ctstate NEW -j SKIFF-SERVICES"),
];

/// Chain name -> its rules (the text after `-A CHAIN `), in order.
pub type Chains = BTreeMap<String, Vec<String>>;

/// Everything of one family the backend writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    pub filter: Chains,
    pub nat: Chains,
    /// How many Service addresses the rules answer for.
    pub addresses: usize,
}

impl Ruleset {
    fn table(&self, t: Table) -> &Chains {
        match t {
            Table::Filter => &self.filter,
            Table::Nat => &self.nat,
        }
    }
}

/// What the kernel has of the backend, read from `iptables-save`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Kernel {
    /// Table -> the backend's chains there.
    pub chains: BTreeMap<Table, BTreeSet<String>>,
    /// Table -> the jump rules carrying [`COMMENT`], as saved (`-A CHAIN …`).
    pub hooks: BTreeMap<Table, Vec<String>>,
}

/// Reads the backend's chains and jumps out of `iptables-save` output.
pub fn parse_save(text: &str) -> Kernel {
    let mut k = Kernel::default();
    let mut table = None;
    for line in text.lines() {
        if let Some(name) = line.strip_prefix('*') {
            table = TABLES.into_iter().find(|t| t.name() == name.trim());
            continue;
        }
        let Some(t) = table else { continue };
        if let Some(decl) = line.strip_prefix(':') {
            let name = decl.split_whitespace().next().unwrap_or("");
            if name.starts_with(PREFIX) {
                k.chains.entry(t).or_default().insert(name.to_string());
            }
        } else if let Some(rule) = line.strip_prefix("-A ") {
            let chain = rule.split_whitespace().next().unwrap_or("");
            if !chain.starts_with(PREFIX) && line.contains(&format!("--comment \"{COMMENT}\"")) {
                k.hooks.entry(t).or_default().push(line.to_string());
            }
        }
    }
    k
}

fn host(f: Family, ip: &IpAddr) -> String {
    match f {
        Family::V4 => format!("{ip}/32"),
        Family::V6 => format!("{ip}/128"),
    }
}

/// Renders the model's ports for one family.
pub fn render(ports: &[ServicePort], local: &Local) -> Ruleset {
    let f = local.family;
    let mut rs = Ruleset::default();
    let not_loopback =
        if local.localhost_nodeports && f == Family::V4 { String::new() } else { format!("! -d {} ", f.loopback()) };
    rs.nat.insert(
        POSTROUTING.to_string(),
        vec![
            format!("-m mark ! --mark {MASQ_MARK:#x}/{MASQ_MARK:#x} -j RETURN"),
            format!("-j MARK --xor-mark {MASQ_MARK:#x}"),
            "-j MASQUERADE --random-fully".to_string(),
        ],
    );
    rs.nat.insert(MARK_MASQ.to_string(), vec![format!("-j MARK --or-mark {MASQ_MARK:#x}")]);
    let mut services = Vec::new();
    let mut nodeports = Vec::new();
    let mut refusals = Vec::new();
    let mut cluster_ip_catch = BTreeSet::new();
    for sp in ports {
        let cluster_ips: Vec<&IpAddr> = sp.cluster_ips.iter().filter(|ip| f.has(ip)).collect();
        if cluster_ips.is_empty() {
            continue;
        }
        let external_ips: Vec<&IpAddr> = sp.external_ips.iter().filter(|ip| f.has(ip)).collect();
        let internal: Vec<&Endpoint> = sp.internal.iter().filter(|e| f.has(&e.ip)).collect();
        let external: Vec<&Endpoint> = sp.external.iter().filter(|e| f.has(&e.ip)).collect();
        let id = sp.id.to_string();
        let h = short_hash(&id, 16);
        let proto = sp.proto.name();
        let svc_chain = format!("SKIFF-SVC-{h}");
        let ext_chain = format!("SKIFF-EXT-{h}");
        let port_match = |port: u16| format!("-p {proto} -m {proto} --dport {port}");
        let comment = format!("-m comment --comment \"{}/{}:{}\"", sp.id.namespace, sp.id.name, sp.id.port_name);
        let no_endpoints = if sp.has_endpoints { "DROP" } else { "REJECT" };
        let ep_chain = |rs: &mut Ruleset, ep: &Endpoint| -> String {
            let chain = format!("SKIFF-SEP-{}", short_hash(&format!("{id}__{}/{}", ep.ip, ep.port), 16));
            if !rs.nat.contains_key(&chain) {
                let recent = match sp.affinity {
                    Some(_) => format!("-m recent --name {chain} --set --rsource "),
                    None => String::new(),
                };
                rs.nat.insert(
                    chain.clone(),
                    vec![
                        format!("-s {} -j {MARK_MASQ}", host(f, &ep.ip)),
                        format!(
                            "-p {proto} {recent}-m {proto} -j DNAT --to-destination {}",
                            SocketAddr::new(ep.ip, ep.port)
                        ),
                    ],
                );
            }
            chain
        };
        let balance = |rs: &mut Ruleset, eps: &[&Endpoint], rules: &mut Vec<String>| {
            let chains: Vec<String> = eps.iter().map(|e| ep_chain(rs, e)).collect();
            if let Some(timeout) = sp.affinity {
                for c in &chains {
                    rules.push(format!("-m recent --name {c} --rcheck --seconds {timeout} --reap --rsource -j {c}"));
                }
            }
            let n = chains.len();
            for (i, c) in chains.iter().enumerate() {
                if i + 1 < n {
                    let p = 1.0 / (n - i) as f64;
                    rules.push(format!("-m statistic --mode random --probability {p:.10} -j {c}"));
                } else {
                    rules.push(format!("-j {c}"));
                }
            }
        };
        let has_internal = !internal.is_empty();
        if has_internal {
            let mut rules = Vec::new();
            if let Some(cidr) = local.pod_cidr {
                rules.push(format!("! -s {cidr} -j {MARK_MASQ}"));
            }
            balance(&mut rs, &internal, &mut rules);
            rs.nat.insert(svc_chain.clone(), rules);
        }
        for ip in &cluster_ips {
            rs.addresses += 1;
            cluster_ip_catch.insert(host(f, ip));
            let dest = format!("-d {} {}", host(f, ip), port_match(sp.port));
            if has_internal {
                services.push(format!("{dest} {comment} -j {svc_chain}"));
            } else {
                refusals.push(format!("{dest} {comment} -j {no_endpoints}"));
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
                        rules.push(format!("-s {cidr} -j {svc_chain}"));
                    }
                    rules.push(format!("-m addrtype --src-type LOCAL -j {MARK_MASQ}"));
                    rules.push(format!("-m addrtype --src-type LOCAL -j {svc_chain}"));
                }
            } else {
                rules.push(format!("-j {MARK_MASQ}"));
            }
            balance(&mut rs, &external, &mut rules);
            rs.nat.insert(ext_chain.clone(), rules);
        }
        for ip in &external_ips {
            rs.addresses += 1;
            let dest = format!("-d {} {}", host(f, ip), port_match(sp.port));
            if has_external {
                services.push(format!("{dest} {comment} -j {ext_chain}"));
            } else {
                refusals.push(format!("{dest} {comment} -j {no_endpoints}"));
            }
        }
        if let Some(np) = sp.node_port {
            if has_external {
                nodeports.push(format!("{} {comment} -j {ext_chain}", port_match(np)));
            } else {
                refusals.push(format!(
                    "-m addrtype --dst-type LOCAL {}{} {comment} -j {no_endpoints}",
                    not_loopback,
                    port_match(np)
                ));
            }
        }
    }
    services.push(format!("-m addrtype --dst-type LOCAL {not_loopback}-j {NODEPORTS}"));
    rs.nat.insert(SERVICES.to_string(), services);
    rs.nat.insert(NODEPORTS.to_string(), nodeports);
    // After DNAT a cluster IP is left only on traffic no Service port took: refuse it.
    refusals.extend(cluster_ip_catch.into_iter().map(|ip| format!("-d {ip} -j REJECT")));
    rs.filter.insert(SERVICES.to_string(), refusals);
    rs
}

/// The `iptables-restore --noflush` input that takes the kernel from `old` to `new`. With
/// `old` unknown (`None`), `kernel` says what is there: every chain of `new` is written whole,
/// chains of the backend that `new` lacks are deleted, and the jumps from the built-in chains
/// are put right. Empty when nothing changed.
pub fn script(old: Option<&Ruleset>, new: &Ruleset, kernel: &Kernel) -> String {
    let mut s = String::new();
    let empty = Chains::new();
    for t in TABLES {
        let wanted = new.table(t);
        let (had, stale): (&Chains, Vec<&String>) = match old {
            Some(o) => (o.table(t), o.table(t).keys().filter(|c| !wanted.contains_key(*c)).collect()),
            None => {
                (&empty, kernel.chains.get(&t).into_iter().flatten().filter(|c| !wanted.contains_key(*c)).collect())
            }
        };
        let changed: Vec<(&String, &Vec<String>)> =
            wanted.iter().filter(|(c, rules)| had.get(*c) != Some(*rules)).collect();
        let mut unhook = Vec::new();
        let mut hook = Vec::new();
        if old.is_none() {
            let saved: &[String] = kernel.hooks.get(&t).map(Vec::as_slice).unwrap_or(&[]);
            for (_, chain, rule) in HOOKS.iter().filter(|(ht, _, _)| *ht == t) {
                let mine: Vec<&String> = saved.iter().filter(|l| l.split_whitespace().nth(1) == Some(*chain)).collect();
                let expected = format!("-A {chain} -m comment --comment \"{COMMENT}\" {rule}");
                if mine.len() == 1 && *mine[0] == expected {
                    continue;
                }
                unhook.extend(mine.iter().map(|l| format!("-D{}", &l[2..])));
                hook.push(format!("-I {chain} 1 -m comment --comment \"{COMMENT}\" {rule}"));
            }
        }
        if changed.is_empty() && stale.is_empty() && hook.is_empty() && unhook.is_empty() {
            continue;
        }
        let _ = writeln!(s, "*{}", t.name());
        // Declaring a chain creates it, or empties it when it exists.
        for (c, _) in &changed {
            let _ = writeln!(s, ":{c} - [0:0]");
        }
        for c in &stale {
            let _ = writeln!(s, ":{c} - [0:0]");
        }
        for l in unhook {
            let _ = writeln!(s, "{l}");
        }
        for (c, rules) in &changed {
            for r in *rules {
                let _ = writeln!(s, "-A {c} {r}");
            }
        }
        for l in hook {
            let _ = writeln!(s, "{l}");
        }
        for c in &stale {
            let _ = writeln!(s, "-X {c}");
        }
        let _ = writeln!(s, "COMMIT");
    }
    s
}

/// The input that removes everything `kernel` shows of the backend (`skiff agent --cleanup`).
pub fn cleanup_script(kernel: &Kernel) -> String {
    let mut s = String::new();
    for t in TABLES {
        let chains = kernel.chains.get(&t).cloned().unwrap_or_default();
        let hooks = kernel.hooks.get(&t).cloned().unwrap_or_default();
        if chains.is_empty() && hooks.is_empty() {
            continue;
        }
        let _ = writeln!(s, "*{}", t.name());
        for c in &chains {
            let _ = writeln!(s, ":{c} - [0:0]");
        }
        for l in &hooks {
            let _ = writeln!(s, "-D{}", &l[2..]);
        }
        for c in &chains {
            let _ = writeln!(s, "-X {c}");
        }
        let _ = writeln!(s, "COMMIT");
    }
    s
}

fn program(f: Family, what: &str) -> String {
    match f {
        Family::V4 => format!("iptables{what}"),
        Family::V6 => format!("ip6tables{what}"),
    }
}

fn spawn_error(program: &str, source: std::io::Error) -> ProxyError {
    ProxyError::Spawn { program: program.to_string(), package: "iptables", source }
}

/// What the kernel has of the backend in `family`.
pub fn read(family: Family) -> Result<Kernel, ProxyError> {
    let save = program(family, "-save");
    let out = Command::new(&save).stderr(Stdio::null()).output().map_err(|e| spawn_error(&save, e))?;
    if !out.status.success() {
        return Err(ProxyError::Rejected { program: save, message: format!("exit status {}", out.status) });
    }
    Ok(parse_save(&String::from_utf8_lossy(&out.stdout)))
}

/// Runs `iptables-restore --noflush` (or `ip6tables-restore`) with `script`.
pub fn restore(family: Family, script: &str) -> Result<(), ProxyError> {
    let restore = program(family, "-restore");
    let mut child = Command::new(&restore)
        .args(["-w", "5", "--noflush"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| spawn_error(&restore, e))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).map_err(|e| spawn_error(&restore, e))?;
    }
    let out = child.wait_with_output().map_err(|e| spawn_error(&restore, e))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first: Vec<&str> = stderr.lines().take(3).collect();
    Err(ProxyError::Rejected { program: restore, message: first.join(" | ") })
}

/// Whether every jump into the backend's chains is in place (each needs its target chain).
pub fn present(family: Family) -> bool {
    let bin = program(family, "");
    HOOKS.iter().all(|(t, chain, rule)| {
        Command::new(&bin)
            .args(["-w", "5", "-t", t.name(), "-C", chain, "-m", "comment", "--comment", COMMENT])
            .args(rule.split_whitespace())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Whether `iptables-restore` runs on this host.
pub fn available() -> bool {
    Command::new("iptables-save").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// Removes the backend's chains and jumps from both families; a family whose tools are
/// missing has none.
pub fn cleanup() -> Result<(), ProxyError> {
    for f in [Family::V4, Family::V6] {
        let kernel = match read(f) {
            Ok(k) => k,
            Err(ProxyError::Spawn { .. }) => continue,
            Err(e) => return Err(e),
        };
        let script = cleanup_script(&kernel);
        if !script.is_empty() {
            restore(f, &script)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netproxy::fixtures::{ep, port, v4};

    fn sep(ip: &str) -> String {
        format!("SKIFF-SEP-{}", short_hash(&format!("default/web/tcp/http__{ip}/8080"), 16))
    }

    #[test]
    fn cluster_ip_with_two_endpoints() {
        let rs = render(&[port(vec![ep("10.42.0.5", 8080), ep("10.42.0.6", 8080)])], &v4());
        let svc = format!("SKIFF-SVC-{}", short_hash("default/web/tcp/http", 16));
        assert_eq!(svc.len(), 26, "iptables allows 28 characters");
        let (e1, e2) = (sep("10.42.0.5"), sep("10.42.0.6"));
        assert_eq!(
            rs.nat[&svc],
            vec![
                "! -s 10.42.0.0/24 -j SKIFF-MARK-MASQ".to_string(),
                format!("-m statistic --mode random --probability 0.5000000000 -j {e1}"),
                format!("-j {e2}"),
            ]
        );
        assert_eq!(
            rs.nat[&e1],
            vec!["-s 10.42.0.5/32 -j SKIFF-MARK-MASQ", "-p tcp -m tcp -j DNAT --to-destination 10.42.0.5:8080"]
        );
        assert_eq!(
            rs.nat[SERVICES],
            vec![
                format!(
                    "-d 10.43.0.100/32 -p tcp -m tcp --dport 80 -m comment --comment \"default/web:http\" -j {svc}"
                ),
                "-m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j SKIFF-NODEPORTS".to_string(),
            ]
        );
        assert_eq!(rs.filter[SERVICES], vec!["-d 10.43.0.100/32 -j REJECT"]);
        assert_eq!(rs.addresses, 1);
        let v6 = Local { family: Family::V6, pod_cidr: None, localhost_nodeports: false };
        assert_eq!(render(&[port(vec![ep("10.42.0.5", 8080)])], &v6).addresses, 0);
    }

    #[test]
    fn no_endpoints_refused_local_policy_dropped_affinity_remembered() {
        let mut p = port(vec![]);
        p.node_port = Some(30080);
        let rs = render(&[p], &v4());
        assert_eq!(
            rs.filter[SERVICES],
            vec![
                "-d 10.43.0.100/32 -p tcp -m tcp --dport 80 -m comment --comment \"default/web:http\" -j REJECT",
                "-m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -p tcp -m tcp --dport 30080 -m comment --comment \"default/web:http\" -j REJECT",
                "-d 10.43.0.100/32 -j REJECT",
            ]
        );
        let mut p = port(vec![ep("10.42.0.5", 8080)]);
        p.external = vec![];
        p.node_port = Some(30080);
        p.affinity = Some(60);
        let rs = render(&[p], &v4());
        assert!(rs.filter[SERVICES][0].ends_with("--dport 30080 -m comment --comment \"default/web:http\" -j DROP"));
        let e = sep("10.42.0.5");
        let svc = format!("SKIFF-SVC-{}", short_hash("default/web/tcp/http", 16));
        assert_eq!(rs.nat[&svc][1], format!("-m recent --name {e} --rcheck --seconds 60 --reap --rsource -j {e}"));
        assert_eq!(
            rs.nat[&e][1],
            format!("-p tcp -m recent --name {e} --set --rsource -m tcp -j DNAT --to-destination 10.42.0.5:8080")
        );
    }

    #[test]
    fn ipv6_services_render_for_ip6tables() {
        let mut p = port(vec![Endpoint { ip: "fd00:42::5".parse().unwrap(), port: 8080, local: true }]);
        p.cluster_ips = vec!["fd00:43::100".parse().unwrap()];
        let v6 =
            Local { family: Family::V6, pod_cidr: Some("fd00:42::/64".parse().unwrap()), localhost_nodeports: true };
        let rs = render(std::slice::from_ref(&p), &v6);
        let e = format!("SKIFF-SEP-{}", short_hash("default/web/tcp/http__fd00:42::5/8080", 16));
        assert_eq!(rs.nat[&e][1], "-p tcp -m tcp -j DNAT --to-destination [fd00:42::5]:8080");
        assert!(rs.nat[SERVICES][0].starts_with("-d fd00:43::100/128 -p tcp"), "{:?}", rs.nat[SERVICES]);
        // Never node ports on ::1: route_localnet is IPv4 only.
        assert_eq!(rs.nat[SERVICES][1], "-m addrtype --dst-type LOCAL ! -d ::1/128 -j SKIFF-NODEPORTS");
        assert_eq!(render(&[p], &v4()).addresses, 0);
    }

    const SAVED: &str = "# Generated by iptables-save\n*nat\n:PREROUTING ACCEPT [0:0]\n:SKIFF-SERVICES - [0:0]\n\
        :SKIFF-SEP-OLD - [0:0]\n-A PREROUTING -m comment --comment \"skiff service proxy\" -j SKIFF-SERVICES\n\
        -A PREROUTING -j CNI-HOSTPORT-DNAT\n-A SKIFF-SERVICES -m comment --comment \"skiff service proxy\" -j X\nCOMMIT\n\
        *mangle\n:SKIFF-NOT-OURS - [0:0]\nCOMMIT\n";

    #[test]
    fn save_output_names_chains_and_jumps() {
        let k = parse_save(SAVED);
        assert_eq!(
            k.chains[&Table::Nat],
            ["SKIFF-SEP-OLD", "SKIFF-SERVICES"].into_iter().map(String::from).collect::<BTreeSet<_>>()
        );
        assert_eq!(
            k.hooks[&Table::Nat],
            vec!["-A PREROUTING -m comment --comment \"skiff service proxy\" -j SKIFF-SERVICES"]
        );
        assert!(!k.chains.contains_key(&Table::Filter));
        assert_eq!(
            cleanup_script(&k),
            "*nat\n:SKIFF-SEP-OLD - [0:0]\n:SKIFF-SERVICES - [0:0]\n\
             -D PREROUTING -m comment --comment \"skiff service proxy\" -j SKIFF-SERVICES\n\
             -X SKIFF-SEP-OLD\n-X SKIFF-SERVICES\nCOMMIT\n"
        );
    }

    #[test]
    fn whole_sync_replaces_stale_chains_and_missing_jumps_then_updates_touch_only_changes() {
        let local = v4();
        let a = render(&[port(vec![ep("10.42.0.5", 8080)])], &local);
        let whole = script(None, &a, &parse_save(SAVED));
        // The PREROUTING jump is in place; the others are added; the stale chain goes.
        assert!(!whole.contains("-D PREROUTING"), "{whole}");
        assert!(!whole.contains("-I PREROUTING"), "{whole}");
        assert!(whole.contains("-I OUTPUT 1 -m comment --comment \"skiff service proxy\" -j SKIFF-SERVICES\n"));
        assert!(whole.contains(
            "-I FORWARD 1 -m comment --comment \"skiff service proxy\" -m conntrack --ctstate NEW -j SKIFF-SERVICES\n"
        ));
        assert!(whole.contains(":SKIFF-SEP-OLD - [0:0]\n") && whole.ends_with("-X SKIFF-SEP-OLD\nCOMMIT\n"), "{whole}");
        assert!(whole.starts_with("*filter\n:SKIFF-SERVICES - [0:0]\n"), "{whole}");
        assert_eq!(script(Some(&a), &a, &Kernel::default()), "");
        let b = render(&[port(vec![ep("10.42.0.6", 8080)])], &local);
        let svc = format!("SKIFF-SVC-{}", short_hash("default/web/tcp/http", 16));
        let (old, new) = (sep("10.42.0.5"), sep("10.42.0.6"));
        assert_eq!(
            script(Some(&a), &b, &Kernel::default()),
            format!(
                "*nat\n:{new} - [0:0]\n:{svc} - [0:0]\n:{old} - [0:0]\n\
                 -A {new} -s 10.42.0.6/32 -j SKIFF-MARK-MASQ\n\
                 -A {new} -p tcp -m tcp -j DNAT --to-destination 10.42.0.6:8080\n\
                 -A {svc} ! -s 10.42.0.0/24 -j SKIFF-MARK-MASQ\n\
                 -A {svc} -j {new}\n\
                 -X {old}\nCOMMIT\n"
            )
        );
    }
}
