//! The built-in load balancer, as k3s's ServiceLB: a `LoadBalancer` Service (without a
//! `loadBalancerClass`, which hands it to another implementation) gets the addresses of the
//! Ready nodes as its ingress, each node's ExternalIPs where it has any, else its InternalIPs.
//! Every node's service proxy then answers on those addresses. When a Service stops being a
//! `LoadBalancer`, its ingress is cleared.
//!
//! Acts as upstream's service controller (`system:controller:service-controller`).

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Service};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::Ctx;
use crate::runtime::informer::next_change;

/// The ingress addresses every built-in load balancer gets: one per Ready node.
pub fn node_addresses(nodes: &[Arc<Node>]) -> Vec<String> {
    let mut out = BTreeSet::new();
    for n in nodes {
        let status = n.status.as_ref();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if !ready || n.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let addresses = status.and_then(|s| s.addresses.as_ref()).map(Vec::as_slice).unwrap_or(&[]);
        let external: Vec<&str> =
            addresses.iter().filter(|a| a.type_ == "ExternalIP").map(|a| a.address.as_str()).collect();
        let chosen = if external.is_empty() {
            addresses.iter().filter(|a| a.type_ == "InternalIP").map(|a| a.address.as_str()).collect()
        } else {
            external
        };
        out.extend(chosen.into_iter().filter(|a| a.parse::<std::net::IpAddr>().is_ok()).map(str::to_string));
    }
    out.into_iter().collect()
}

/// The ingress `svc` should have, `None` when this controller leaves it alone.
fn desired(svc: &Service, addresses: &[String]) -> Option<Vec<String>> {
    let spec = svc.spec.as_ref()?;
    if spec.load_balancer_class.is_some() {
        return None;
    }
    Some(if spec.type_.as_deref() == Some("LoadBalancer") { addresses.to_vec() } else { Vec::new() })
}

fn current(svc: &Service) -> Vec<String> {
    let ingress = svc.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|l| l.ingress.as_ref());
    ingress.into_iter().flatten().filter_map(|i| i.ip.clone()).collect()
}

pub async fn run(ctx: Arc<Ctx>, cancel: CancellationToken) {
    let services = ctx.informers.get::<Service>();
    let nodes = ctx.informers.get::<Node>();
    let (mut svc_changes, mut node_changes) = (services.subscribe(), nodes.subscribe());
    services.synced().await;
    nodes.synced().await;
    loop {
        let addresses = node_addresses(&nodes.list());
        for svc in services.list() {
            let Some(want) = desired(&svc, &addresses) else { continue };
            if current(&svc) == want {
                continue;
            }
            let ns = svc.metadata.namespace.clone().unwrap_or_default();
            let name = svc.metadata.name.clone().unwrap_or_default();
            let ingress: Vec<_> = want.iter().map(|ip| json!({"ip": ip, "ipMode": "VIP"})).collect();
            // No ingress is no field at all, as a Service that never was a load balancer.
            let ingress = if ingress.is_empty() { serde_json::Value::Null } else { json!(ingress) };
            let patch = json!({"status": {"loadBalancer": {"ingress": ingress}}});
            let api: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
            match api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => {
                    tracing::info!(service = %format!("{ns}/{name}"), ingress = ?want, "load balancer ingress set")
                }
                Err(e) => {
                    tracing::debug!(service = %format!("{ns}/{name}"), error = %e, "cannot set the load balancer ingress")
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            c = next_change(&mut svc_changes) => if c.is_none() { return },
            c = next_change(&mut node_changes) => if c.is_none() { return },
            _ = tokio::time::sleep(std::time::Duration::from_secs(30)) => {}
        }
        // Gather a burst of changes into one pass.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        while svc_changes.try_next().is_some() {}
        while node_changes.try_next().is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ready: &str, addresses: serde_json::Value) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name},
                "status": {"conditions": [{"type": "Ready", "status": ready}], "addresses": addresses},
            }))
            .unwrap(),
        )
    }

    #[test]
    fn ready_nodes_give_their_external_or_internal_addresses() {
        let nodes = [
            node(
                "a",
                "True",
                json!([{"type": "InternalIP", "address": "172.31.0.2"}, {"type": "Hostname", "address": "a"}]),
            ),
            node(
                "b",
                "True",
                json!([{"type": "InternalIP", "address": "172.31.0.3"}, {"type": "ExternalIP", "address": "192.0.2.3"}]),
            ),
            node("c", "False", json!([{"type": "InternalIP", "address": "172.31.0.4"}])),
        ];
        assert_eq!(node_addresses(&nodes), vec!["172.31.0.2", "192.0.2.3"]);
    }

    #[test]
    fn only_classless_load_balancers_are_ours() {
        let svc = |spec: serde_json::Value| -> Service { serde_json::from_value(json!({"spec": spec})).unwrap() };
        let addrs = vec!["172.31.0.2".to_string()];
        assert_eq!(desired(&svc(json!({"type": "LoadBalancer"})), &addrs), Some(addrs.clone()));
        assert_eq!(desired(&svc(json!({"type": "ClusterIP"})), &addrs), Some(vec![]));
        assert_eq!(desired(&svc(json!({"type": "LoadBalancer", "loadBalancerClass": "x/y"})), &addrs), None);
    }
}
