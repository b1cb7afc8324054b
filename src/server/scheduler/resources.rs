//! What a pod asks of a node and what a node offers, in integers: CPU in millicores, memory and
//! storage in bytes, extended resources in units, pods as a count.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::api::quantity;

/// CPU assumed for a container without a request when scoring (upstream's non-zero default).
pub const DEFAULT_MILLI_CPU: i64 = 100;
/// Memory assumed for a container without a request when scoring.
pub const DEFAULT_MEMORY: i64 = 200 * 1024 * 1024;

/// An amount of each resource.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    pub pods: i64,
    /// Extended resources (`example.com/gpu`), hugepages.
    pub scalar: BTreeMap<String, i64>,
}

fn amount(name: &str, q: &Quantity) -> i64 {
    let v = if name == "cpu" { quantity::parse_milli(&q.0) } else { quantity::parse_value(&q.0) };
    v.unwrap_or(0).clamp(0, i64::MAX as i128) as i64
}

impl Resources {
    fn add_list(&mut self, list: Option<&BTreeMap<String, Quantity>>) {
        for (name, q) in list.into_iter().flatten() {
            let v = amount(name, q);
            match name.as_str() {
                "cpu" => self.milli_cpu += v,
                "memory" => self.memory += v,
                "ephemeral-storage" => self.ephemeral_storage += v,
                "pods" => self.pods += v,
                other => *self.scalar.entry(other.to_string()).or_default() += v,
            }
        }
    }

    fn max_with(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.max(o.milli_cpu);
        self.memory = self.memory.max(o.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(o.ephemeral_storage);
        for (k, v) in &o.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = (*e).max(*v);
        }
    }

    pub fn add(&mut self, o: &Resources) {
        self.milli_cpu += o.milli_cpu;
        self.memory += o.memory;
        self.ephemeral_storage += o.ephemeral_storage;
        self.pods += o.pods;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_default() += v;
        }
    }

    pub fn sub(&mut self, o: &Resources) {
        self.milli_cpu -= o.milli_cpu;
        self.memory -= o.memory;
        self.ephemeral_storage -= o.ephemeral_storage;
        self.pods -= o.pods;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_default() -= v;
        }
    }

    /// What a node can give to pods (`status.allocatable`).
    pub fn allocatable(node: &Node) -> Resources {
        let mut r = Resources::default();
        r.add_list(node.status.as_ref().and_then(|s| s.allocatable.as_ref()));
        r
    }
}

fn container_requests(c: &Container) -> Resources {
    let mut r = Resources::default();
    let res = c.resources.as_ref();
    // A limit without a request defaults the request (done by API defaulting upstream; done here
    // too so objects written before defaulting count right).
    match res.and_then(|r| r.requests.as_ref()) {
        Some(req) => r.add_list(Some(req)),
        None => r.add_list(res.and_then(|r| r.limits.as_ref())),
    }
    r
}

/// A pod's effective requests, as upstream computes them: the sum over app containers (and
/// restartable init containers, which keep running), at least the largest init container, plus
/// the pod overhead; `pods` is 1.
pub fn pod_requests(pod: &Pod) -> Resources {
    let Some(spec) = pod.spec.as_ref() else { return Resources { pods: 1, ..Default::default() } };
    let mut sum = Resources::default();
    for c in &spec.containers {
        sum.add(&container_requests(c));
    }
    let mut sidecars = Resources::default();
    let mut init_max = Resources::default();
    for c in spec.init_containers.iter().flatten() {
        let r = container_requests(c);
        if c.restart_policy.as_deref() == Some("Always") {
            sidecars.add(&r);
            sum.add(&r);
        } else {
            let mut during = r.clone();
            during.add(&sidecars);
            init_max.max_with(&during);
        }
    }
    sum.max_with(&init_max);
    let mut overhead = Resources::default();
    overhead.add_list(spec.overhead.as_ref());
    sum.add(&overhead);
    sum.pods = 1;
    sum
}

/// CPU and memory requests with upstream's non-zero defaults, used only for scoring so that
/// pods without requests still spread.
pub fn non_zero_requests(pod: &Pod) -> (i64, i64) {
    let Some(spec) = pod.spec.as_ref() else { return (DEFAULT_MILLI_CPU, DEFAULT_MEMORY) };
    let (mut cpu, mut mem) = (0, 0);
    for c in &spec.containers {
        let r = container_requests(c);
        cpu += if r.milli_cpu == 0 { DEFAULT_MILLI_CPU } else { r.milli_cpu };
        mem += if r.memory == 0 { DEFAULT_MEMORY } else { r.memory };
    }
    (cpu, mem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn init_containers_count_at_their_peak() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {
                "containers": [
                    {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}},
                    {"name": "b", "resources": {"limits": {"cpu": "200m"}}}
                ],
                "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "1", "memory": "1Mi"}}}],
                "overhead": {"cpu": "10m"}
            }
        }))
        .unwrap();
        let r = pod_requests(&pod);
        assert_eq!(r.milli_cpu, 1010);
        assert_eq!(r.memory, 64 << 20);
        assert_eq!(r.pods, 1);
        assert_eq!(non_zero_requests(&pod), (300, (64 << 20) + DEFAULT_MEMORY));
    }
}
