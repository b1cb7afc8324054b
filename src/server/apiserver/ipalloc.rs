//! ClusterIP and NodePort allocation for Services.
//!
//! The state lives in memory and is rebuilt from the stored Services at start; the API server
//! is the only writer of Services, so it always knows what is taken. Allocation happens before
//! the store write and is released when the write fails or the Service is deleted. This module
//! does not touch the store.

use std::collections::{BTreeSet, HashSet};
use std::net::IpAddr;
use std::sync::Mutex;

use ipnet::IpNet;
use serde_json::{Value, json};

use crate::api::field_error::FieldError;

/// Addresses and ports taken by one Service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allocation {
    pub ips: Vec<IpAddr>,
    pub node_ports: Vec<u16>,
}

/// Allocators for the service network and the NodePort range.
pub struct Allocators {
    cidr: IpNet,
    ports: (u16, u16),
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    ips: HashSet<IpAddr>,
    ports: BTreeSet<u16>,
    cursor_ip: u64,
    cursor_port: u32,
}

fn ip_to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v) => u32::from(v) as u128,
        IpAddr::V6(v) => u128::from(v),
    }
}

fn u128_to_ip(net: &IpNet, n: u128) -> IpAddr {
    match net {
        IpNet::V4(_) => IpAddr::V4((n as u32).into()),
        IpNet::V6(_) => IpAddr::V6(n.into()),
    }
}

impl Allocators {
    pub fn new(cidr: IpNet, ports: (u16, u16)) -> Self {
        Allocators { cidr, ports, state: Mutex::new(State::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of usable addresses (network and broadcast excluded for IPv4).
    fn size(&self) -> u128 {
        let bits = self.cidr.max_prefix_len() - self.cidr.prefix_len();
        let total = 1u128 << bits.min(64);
        if matches!(self.cidr, IpNet::V4(_)) { total.saturating_sub(2) } else { total.saturating_sub(1) }
    }

    fn nth(&self, i: u128) -> IpAddr {
        u128_to_ip(&self.cidr, ip_to_u128(self.cidr.network()) + 1 + i)
    }

    fn in_range(&self, ip: IpAddr) -> bool {
        if !self.cidr.contains(&ip) {
            return false;
        }
        let off = ip_to_u128(ip) - ip_to_u128(self.cidr.network());
        off >= 1 && off <= self.size()
    }

    /// Marks what an existing Service holds as taken (at start).
    pub fn restore(&self, svc: &Value) {
        let a = held(svc);
        let mut s = self.lock();
        s.ips.extend(a.ips);
        s.ports.extend(a.node_ports);
    }

    /// Returns what a Service held to the pool.
    pub fn release(&self, a: &Allocation) {
        let mut s = self.lock();
        for ip in &a.ips {
            s.ips.remove(ip);
        }
        for p in &a.node_ports {
            s.ports.remove(p);
        }
    }

    /// Allocates what `svc` asks for, filling `spec.clusterIP(s)` and `nodePort`s in place.
    /// `old` is the stored Service on update: what it already holds is kept, not re-taken.
    pub fn allocate(&self, svc: &mut Value, old: Option<&Value>) -> Result<Allocation, Vec<FieldError>> {
        let old_held = old.map(held).unwrap_or_default();
        let mut taken = Allocation::default();
        let mut errors = Vec::new();
        let svc_type = svc.pointer("/spec/type").and_then(|v| v.as_str()).unwrap_or("ClusterIP").to_string();
        let mut s = self.lock();
        if svc_type != "ExternalName" {
            let requested = svc.pointer("/spec/clusterIP").and_then(|v| v.as_str()).unwrap_or("").to_string();
            if requested.is_empty() {
                match self.next_free_ip(&mut s) {
                    Some(ip) => {
                        s.ips.insert(ip);
                        taken.ips.push(ip);
                        set_cluster_ip(svc, &ip.to_string());
                    }
                    None => errors.push(FieldError::invalid(
                        "spec.clusterIPs",
                        json!([]),
                        format!("failed to allocate IP: range is full ({})", self.cidr),
                    )),
                }
            } else if requested != "None" {
                match requested.parse::<IpAddr>() {
                    Err(_) => errors.push(FieldError::invalid("spec.clusterIPs[0]", json!(requested), "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)")),
                    Ok(ip) if old_held.ips.contains(&ip) => set_cluster_ip(svc, &requested),
                    Ok(ip) if !self.in_range(ip) => errors.push(FieldError::invalid(
                        "spec.clusterIPs",
                        json!([requested]),
                        format!("failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {}", self.cidr),
                    )),
                    Ok(ip) if s.ips.contains(&ip) => errors.push(FieldError::invalid(
                        "spec.clusterIPs",
                        json!([requested]),
                        format!("failed to allocate IP {ip}: provided IP is already allocated"),
                    )),
                    Ok(ip) => {
                        s.ips.insert(ip);
                        taken.ips.push(ip);
                        set_cluster_ip(svc, &requested);
                    }
                }
            } else {
                set_cluster_ip(svc, "None");
            }
        }
        if svc_type == "NodePort" || svc_type == "LoadBalancer" {
            let count = svc.pointer("/spec/ports").and_then(|p| p.as_array()).map(|a| a.len()).unwrap_or(0);
            for i in 0..count {
                let requested = svc.pointer(&format!("/spec/ports/{i}/nodePort")).and_then(|v| v.as_u64());
                let field = format!("spec.ports[{i}].nodePort");
                match self.take_port(&mut s, requested, &old_held, &mut taken) {
                    Ok(Some(p)) => {
                        if let Some(port) = svc.pointer_mut(&format!("/spec/ports/{i}")).and_then(|v| v.as_object_mut())
                        {
                            port.insert("nodePort".into(), json!(p));
                        }
                    }
                    Ok(None) => {}
                    Err((value, message)) => errors.push(FieldError::invalid(field, value, message)),
                }
            }
        } else if let Some(ports) = svc.pointer_mut("/spec/ports").and_then(|p| p.as_array_mut()) {
            // Only NodePort and LoadBalancer Services hold node ports.
            for p in ports {
                if let Some(m) = p.as_object_mut() {
                    m.remove("nodePort");
                }
            }
        }
        // The health-check node port: held by LoadBalancers with externalTrafficPolicy Local.
        let health = svc.pointer("/spec/healthCheckNodePort").and_then(|v| v.as_u64()).filter(|p| *p != 0);
        if needs_health_check(svc) {
            match self.take_port(&mut s, health, &old_held, &mut taken) {
                Ok(Some(p)) => {
                    if let Some(spec) = svc.get_mut("spec").and_then(|v| v.as_object_mut()) {
                        spec.insert("healthCheckNodePort".into(), json!(p));
                    }
                }
                Ok(None) => {}
                Err((value, message)) => errors.push(FieldError::invalid("spec.healthCheckNodePort", value, message)),
            }
        } else if let Some(p) = health {
            // Left over from before a change of type or policy: dropped with it, as upstream.
            let carried = old.is_some_and(|o| {
                needs_health_check(o) && o.pointer("/spec/healthCheckNodePort").and_then(|v| v.as_u64()) == Some(p)
            });
            if carried {
                if let Some(spec) = svc.get_mut("spec").and_then(|v| v.as_object_mut()) {
                    spec.remove("healthCheckNodePort");
                }
            } else {
                errors.push(FieldError::invalid(
                    "spec.healthCheckNodePort",
                    json!(p),
                    "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
                ));
            }
        }
        if !errors.is_empty() {
            for ip in &taken.ips {
                s.ips.remove(ip);
            }
            for p in &taken.node_ports {
                s.ports.remove(p);
            }
            return Err(errors);
        }
        Ok(taken)
    }

    /// Takes the node port `requested` (or the next free one when `None`) for a Service that
    /// already holds `old_held`. `Ok(Some(port))` when a port was chosen for the Service,
    /// `Ok(None)` when it keeps the one it asked for; the error is the value and the message.
    fn take_port(
        &self,
        s: &mut State,
        requested: Option<u64>,
        old_held: &Allocation,
        taken: &mut Allocation,
    ) -> Result<Option<u16>, (Value, String)> {
        match requested {
            Some(p) if p <= u16::MAX as u64 && old_held.node_ports.contains(&(p as u16)) => Ok(None),
            Some(p) if p < self.ports.0 as u64 || p > self.ports.1 as u64 => Err((
                json!(p),
                format!(
                    "provided port is not in the valid range. The range of valid ports is {}-{}",
                    self.ports.0, self.ports.1
                ),
            )),
            Some(p) if s.ports.contains(&(p as u16)) || taken.node_ports.contains(&(p as u16)) => {
                Err((json!(p), "provided port is already allocated".to_string()))
            }
            Some(p) => {
                s.ports.insert(p as u16);
                taken.node_ports.push(p as u16);
                Ok(None)
            }
            None => match self.next_free_port(s) {
                Some(p) => {
                    s.ports.insert(p);
                    taken.node_ports.push(p);
                    Ok(Some(p))
                }
                None => Err((json!(0), "range is full".to_string())),
            },
        }
    }

    /// Marks a specific address taken (the `kubernetes` Service's first IP).
    pub fn reserve_ip(&self, ip: IpAddr) -> bool {
        self.lock().ips.insert(ip)
    }

    fn next_free_ip(&self, s: &mut State) -> Option<IpAddr> {
        let size = self.size();
        if size == 0 {
            return None;
        }
        // Dynamic allocation starts above the lower band kept for static addresses, as upstream.
        let band = (size / 16).clamp(16.min(size), 256);
        let dynamic = size.saturating_sub(band).max(1);
        for step in 0..size {
            let off = if step < dynamic { band + (s.cursor_ip as u128 + step) % dynamic } else { step - dynamic };
            if off >= size {
                continue;
            }
            let ip = self.nth(off);
            if !s.ips.contains(&ip) {
                s.cursor_ip = ((off - band.min(off)) + 1) as u64;
                return Some(ip);
            }
        }
        None
    }

    fn next_free_port(&self, s: &mut State) -> Option<u16> {
        let span = (self.ports.1 - self.ports.0) as u32 + 1;
        for step in 0..span {
            let p = self.ports.0 as u32 + (s.cursor_port + step) % span;
            if !s.ports.contains(&(p as u16)) {
                s.cursor_port = (p - self.ports.0 as u32 + 1) % span;
                return Some(p as u16);
            }
        }
        None
    }
}

fn set_cluster_ip(svc: &mut Value, ip: &str) {
    if let Some(spec) = svc.get_mut("spec").and_then(|s| s.as_object_mut()) {
        spec.insert("clusterIP".into(), json!(ip));
        spec.insert("clusterIPs".into(), json!([ip]));
    }
}

/// Whether a Service holds a health-check node port: a LoadBalancer whose external traffic
/// stays on the node it arrives at.
pub fn needs_health_check(svc: &Value) -> bool {
    svc.pointer("/spec/type").and_then(|v| v.as_str()) == Some("LoadBalancer")
        && svc.pointer("/spec/externalTrafficPolicy").and_then(|v| v.as_str()) == Some("Local")
}

/// What a stored Service holds.
pub fn held(svc: &Value) -> Allocation {
    let mut a = Allocation::default();
    if let Some(ip) = svc.pointer("/spec/clusterIP").and_then(|v| v.as_str()).and_then(|s| s.parse().ok()) {
        a.ips.push(ip);
    }
    let t = svc.pointer("/spec/type").and_then(|v| v.as_str()).unwrap_or("ClusterIP");
    if t == "NodePort" || t == "LoadBalancer" {
        for p in svc.pointer("/spec/ports").and_then(|p| p.as_array()).into_iter().flatten() {
            if let Some(n) = p.get("nodePort").and_then(|v| v.as_u64()).filter(|n| *n <= u16::MAX as u64) {
                a.node_ports.push(n as u16);
            }
        }
    }
    if needs_health_check(svc)
        && let Some(n) = svc
            .pointer("/spec/healthCheckNodePort")
            .and_then(|v| v.as_u64())
            .filter(|n| *n <= u16::MAX as u64 && *n > 0)
    {
        a.node_ports.push(n as u16);
    }
    a
}

/// On update, values the user left out are carried over from the stored Service, as upstream.
pub fn carry_over_allocations(new: &mut Value, old: &Value) {
    let new_type = new.pointer("/spec/type").and_then(|v| v.as_str()).unwrap_or("ClusterIP").to_string();
    let old_type = old.pointer("/spec/type").and_then(|v| v.as_str()).unwrap_or("ClusterIP").to_string();
    if new_type != "ExternalName" && old_type != "ExternalName" {
        let missing = new.pointer("/spec/clusterIP").and_then(|v| v.as_str()).map(|s| s.is_empty()).unwrap_or(true);
        if missing
            && let Some(ip) = old.pointer("/spec/clusterIP").cloned()
            && let Some(spec) = new.get_mut("spec").and_then(|s| s.as_object_mut())
        {
            spec.insert("clusterIP".into(), ip);
            if let Some(ips) = old.pointer("/spec/clusterIPs").cloned() {
                spec.insert("clusterIPs".into(), ips);
            }
        }
    }
    if needs_health_check(new)
        && needs_health_check(old)
        && new.pointer("/spec/healthCheckNodePort").is_none_or(|v| v.as_u64() == Some(0))
        && let Some(p) = old.pointer("/spec/healthCheckNodePort").cloned()
        && let Some(spec) = new.get_mut("spec").and_then(|s| s.as_object_mut())
    {
        spec.insert("healthCheckNodePort".into(), p);
    }
    let wants_ports = new_type == "NodePort" || new_type == "LoadBalancer";
    if wants_ports {
        let old_ports: Vec<Value> = old.pointer("/spec/ports").and_then(|p| p.as_array()).cloned().unwrap_or_default();
        if let Some(ports) = new.pointer_mut("/spec/ports").and_then(|p| p.as_array_mut()) {
            for p in ports.iter_mut() {
                if p.get("nodePort").is_some() {
                    continue;
                }
                let same = old_ports.iter().find(|o| {
                    o.get("port") == p.get("port")
                        && o.get("protocol").unwrap_or(&json!("TCP")) == p.get("protocol").unwrap_or(&json!("TCP"))
                });
                if let (Some(o), Some(m)) = (same.and_then(|o| o.get("nodePort")), p.as_object_mut()) {
                    m.insert("nodePort".into(), o.clone());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(spec: Value) -> Value {
        json!({"spec": spec})
    }

    #[test]
    fn allocates_and_rejects_taken() {
        let a = Allocators::new("10.43.0.0/16".parse().unwrap(), (30000, 32767));
        assert!(a.reserve_ip("10.43.0.1".parse().unwrap()));
        let mut s1 = svc(json!({"clusterIP": "10.43.0.50", "ports": [{"port": 80}]}));
        a.allocate(&mut s1, None).unwrap();
        let mut s2 = svc(json!({"clusterIP": "10.43.0.50", "ports": [{"port": 80}]}));
        let e = a.allocate(&mut s2, None).unwrap_err();
        assert_eq!(
            e[0].to_string(),
            "spec.clusterIPs: Invalid value: [\"10.43.0.50\"]: failed to allocate IP 10.43.0.50: provided IP is already allocated"
        );
        let mut s3 = svc(json!({"clusterIP": "10.96.0.1"}));
        let e = a.allocate(&mut s3, None).unwrap_err();
        assert!(e[0].to_string().contains("is not in the valid range. The range of valid IPs is 10.43.0.0/16"));
        let mut s4 = svc(json!({"type": "NodePort", "ports": [{"port": 80}, {"port": 81, "nodePort": 30080}]}));
        let got = a.allocate(&mut s4, None).unwrap();
        assert_eq!(got.node_ports.len(), 2);
        assert!(got.node_ports.contains(&30080));
        let ip = s4["spec"]["clusterIP"].as_str().unwrap().parse::<IpAddr>().unwrap();
        assert!(
            ip_to_u128(ip) - ip_to_u128("10.43.0.0".parse().unwrap()) > 256,
            "dynamic IPs avoid the static band: {ip}"
        );
        let mut s5 = svc(json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}));
        assert_eq!(
            a.allocate(&mut s5, None).unwrap_err()[0].to_string(),
            "spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"
        );
        let mut s6 = svc(json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]}));
        assert!(
            a.allocate(&mut s6, None).unwrap_err()[0].to_string().contains("The range of valid ports is 30000-32767")
        );
        a.release(&got);
        let mut s7 = svc(json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}));
        a.allocate(&mut s7, None).unwrap();
    }

    #[test]
    fn update_keeps_what_it_holds() {
        let a = Allocators::new("10.43.0.0/24".parse().unwrap(), (30000, 30010));
        let mut old = svc(json!({"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}));
        a.allocate(&mut old, None).unwrap();
        let mut new = svc(json!({"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}));
        carry_over_allocations(&mut new, &old);
        assert_eq!(new["spec"]["clusterIP"], old["spec"]["clusterIP"]);
        assert_eq!(new["spec"]["ports"][0]["nodePort"], old["spec"]["ports"][0]["nodePort"]);
        let got = a.allocate(&mut new, Some(&old)).unwrap();
        assert_eq!(got, Allocation::default());
    }

    #[test]
    fn local_load_balancers_hold_a_health_check_port() {
        let a = Allocators::new("10.43.0.0/24".parse().unwrap(), (30000, 30010));
        let lb = |extra: Value| {
            let mut spec = json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local", "ports": [{"port": 80}]});
            for (k, v) in extra.as_object().unwrap() {
                spec[k] = v.clone();
            }
            svc(spec)
        };
        let mut s1 = lb(json!({}));
        let got = a.allocate(&mut s1, None).unwrap();
        let health = s1["spec"]["healthCheckNodePort"].as_u64().unwrap() as u16;
        assert_eq!(got.node_ports.len(), 2);
        assert!(got.node_ports.contains(&health));
        assert_eq!(held(&s1), got);
        // A port asked for is checked like a node port.
        let mut s2 = lb(json!({"healthCheckNodePort": health}));
        let e = a.allocate(&mut s2, None).unwrap_err();
        assert_eq!(
            e[0].to_string(),
            format!("spec.healthCheckNodePort: Invalid value: {health}: provided port is already allocated")
        );
        // Only a Local LoadBalancer may have one.
        let mut s3 = svc(json!({"type": "NodePort", "healthCheckNodePort": 30009, "ports": [{"port": 80}]}));
        let e = a.allocate(&mut s3, None).unwrap_err();
        assert_eq!(
            e[0].to_string(),
            "spec.healthCheckNodePort: Invalid value: 30009: may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'"
        );
        // An update that leaves it out keeps it; a change to policy Cluster drops and frees it.
        let mut same = lb(json!({}));
        carry_over_allocations(&mut same, &s1);
        assert_eq!(same["spec"]["healthCheckNodePort"], json!(health));
        assert_eq!(a.allocate(&mut same, Some(&s1)).unwrap(), Allocation::default());
        let mut cluster = s1.clone();
        cluster["spec"]["externalTrafficPolicy"] = json!("Cluster");
        a.allocate(&mut cluster, Some(&s1)).unwrap();
        assert!(cluster["spec"].get("healthCheckNodePort").is_none());
        assert!(!held(&cluster).node_ports.contains(&health));
    }
}
