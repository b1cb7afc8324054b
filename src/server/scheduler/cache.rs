//! The scheduler's picture of the cluster: every node with the sum of what its pods request,
//! their host ports and their owners, kept up to date from the informers and from pods the
//! scheduler has *assumed* onto a node (bound, but not yet seen back through the watch) so the
//! next decision already counts them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};

use super::resources::{Resources, non_zero_requests, pod_requests};
use crate::runtime::Key;

/// A host port a pod holds: protocol, host IP, port.
pub type HostPort = (String, String, i32);

/// A pod placed on a node.
#[derive(Clone)]
pub struct PodInfo {
    pub pod: Arc<Pod>,
    pub node: String,
    pub requests: Resources,
    pub non_zero: (i64, i64),
    pub ports: Vec<HostPort>,
    pub owner: Option<String>,
    /// Bound by us and not yet seen through the watch.
    pub assumed: bool,
}

/// A node and what is placed on it.
#[derive(Default, Clone)]
pub struct NodeInfo {
    pub node: Option<Arc<Node>>,
    pub allocatable: Resources,
    pub requested: Resources,
    pub non_zero: (i64, i64),
    pub pods: HashSet<Key>,
    pub ports: Vec<HostPort>,
    /// Pods per controller owner UID (for the default spreading of replicas).
    pub by_owner: HashMap<String, u32>,
}

impl PodInfo {
    /// What `pod` takes from `node`.
    pub fn new(pod: Arc<Pod>, node: String, assumed: bool) -> PodInfo {
        PodInfo {
            requests: pod_requests(&pod),
            non_zero: non_zero_requests(&pod),
            ports: host_ports(&pod),
            owner: controller_uid(&pod),
            node,
            assumed,
            pod,
        }
    }
}

impl NodeInfo {
    /// Counts `p` on this node.
    pub fn add(&mut self, p: &PodInfo) {
        self.requested.add(&p.requests);
        self.non_zero.0 += p.non_zero.0;
        self.non_zero.1 += p.non_zero.1;
        self.ports.extend(p.ports.iter().cloned());
        if let Some(o) = &p.owner {
            *self.by_owner.entry(o.clone()).or_default() += 1;
        }
        self.pods.insert(Key::of(p.pod.as_ref()));
    }

    /// Stops counting `p` on this node.
    pub fn remove(&mut self, p: &PodInfo) {
        self.requested.sub(&p.requests);
        self.non_zero.0 -= p.non_zero.0;
        self.non_zero.1 -= p.non_zero.1;
        for port in &p.ports {
            if let Some(i) = self.ports.iter().position(|x| x == port) {
                self.ports.remove(i);
            }
        }
        if let Some(o) = &p.owner
            && let Some(c) = self.by_owner.get_mut(o)
        {
            *c -= 1;
            if *c == 0 {
                self.by_owner.remove(o);
            }
        }
        self.pods.remove(&Key::of(p.pod.as_ref()));
    }
}

/// The host ports a pod asks for.
pub fn host_ports(pod: &Pod) -> Vec<HostPort> {
    let mut out = Vec::new();
    for c in pod.spec.iter().flat_map(|s| s.containers.iter()) {
        for p in c.ports.iter().flatten() {
            if let Some(hp) = p.host_port.filter(|p| *p > 0) {
                let ip = p.host_ip.clone().filter(|i| !i.is_empty()).unwrap_or_else(|| "0.0.0.0".into());
                out.push((p.protocol.clone().unwrap_or_else(|| "TCP".into()), ip, hp));
            }
        }
    }
    out
}

/// Whether a pod's host ports collide with those already taken.
pub fn ports_conflict(taken: &[HostPort], wanted: &[HostPort]) -> bool {
    wanted.iter().any(|(proto, ip, port)| {
        taken
            .iter()
            .any(|(p2, ip2, port2)| port == port2 && proto == p2 && (ip == ip2 || ip == "0.0.0.0" || ip2 == "0.0.0.0"))
    })
}

fn controller_uid(pod: &Pod) -> Option<String> {
    pod.metadata.owner_references.iter().flatten().find(|o| o.controller == Some(true)).map(|o| o.uid.clone())
}

/// Whether a pod occupies its node (bound and not finished).
pub fn occupies_node(pod: &Pod) -> bool {
    let bound = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty());
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("");
    bound && phase != "Succeeded" && phase != "Failed"
}

/// The scheduler's cluster state.
#[derive(Default)]
pub struct Cache {
    nodes: BTreeMap<String, NodeInfo>,
    pods: HashMap<Key, PodInfo>,
    /// Placed pods with required anti-affinity terms (usually none; checked for every pod).
    pub with_anti_affinity: HashSet<Key>,
}

impl Cache {
    /// Nodes that exist (pods may name nodes that do not).
    pub fn nodes(&self) -> impl Iterator<Item = (&Arc<Node>, &NodeInfo)> {
        self.nodes.values().filter_map(|n| n.node.as_ref().map(|node| (node, n)))
    }

    /// A node that exists, by name.
    pub fn node(&self, name: &str) -> Option<(&Arc<Node>, &NodeInfo)> {
        self.nodes.get(name).and_then(|n| n.node.as_ref().map(|node| (node, n)))
    }

    pub fn node_count(&self) -> usize {
        self.nodes.values().filter(|n| n.node.is_some()).count()
    }

    pub fn pod(&self, key: &Key) -> Option<&PodInfo> {
        self.pods.get(key)
    }

    pub fn pods(&self) -> impl Iterator<Item = &PodInfo> {
        self.pods.values()
    }

    pub fn is_assumed(&self, key: &Key) -> bool {
        self.pods.get(key).is_some_and(|p| p.assumed)
    }

    pub fn set_node(&mut self, node: Arc<Node>) {
        let name = node.metadata.name.clone().unwrap_or_default();
        let info = self.nodes.entry(name).or_default();
        info.allocatable = Resources::allocatable(&node);
        info.node = Some(node);
    }

    pub fn remove_node(&mut self, name: &str) {
        if let Some(info) = self.nodes.get_mut(name) {
            info.node = None;
            if info.pods.is_empty() {
                self.nodes.remove(name);
            }
        }
    }

    /// Places or updates a pod seen through the watch.
    pub fn set_pod(&mut self, pod: Arc<Pod>) {
        let key = Key::of(pod.as_ref());
        if !occupies_node(&pod) {
            self.remove_pod(&key);
            return;
        }
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
        self.place(key, pod, node, false);
    }

    /// Places a pending pod on `node` before its binding is seen through the watch. The cache
    /// keeps the pending object as it is (no copy with `nodeName` set): the placement is in
    /// [`PodInfo::node`], which is what the cache counts.
    pub fn assume(&mut self, pod: Arc<Pod>, node: String) {
        let key = Key::of(pod.as_ref());
        self.place(key, pod, node, true);
    }

    fn place(&mut self, key: Key, pod: Arc<Pod>, node: String, assumed: bool) {
        if let Some(old) = self.pods.get(&key) {
            if old.node == node && old.pod.metadata.uid == pod.metadata.uid {
                // Requests and ports of a placed pod do not change; only refresh the object.
                let anti = has_required_anti_affinity(&pod);
                if let Some(old) = self.pods.get_mut(&key) {
                    old.pod = pod;
                    old.assumed = assumed && old.assumed;
                }
                if anti {
                    self.with_anti_affinity.insert(key);
                } else {
                    self.with_anti_affinity.remove(&key);
                }
                return;
            }
            self.remove_pod(&key);
        }
        let info = PodInfo::new(pod, node.clone(), assumed);
        self.nodes.entry(node).or_default().add(&info);
        if has_required_anti_affinity(&info.pod) {
            self.with_anti_affinity.insert(key.clone());
        }
        self.pods.insert(key, info);
    }

    pub fn remove_pod(&mut self, key: &Key) {
        let Some(info) = self.pods.remove(key) else { return };
        self.with_anti_affinity.remove(key);
        let Some(n) = self.nodes.get_mut(&info.node) else { return };
        n.remove(&info);
        if n.node.is_none() && n.pods.is_empty() {
            self.nodes.remove(&info.node);
        }
    }
}

fn has_required_anti_affinity(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref())
        .is_some_and(|t| !t.is_empty())
}
