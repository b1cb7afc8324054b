//! Node IPAM: each node gets its own podCIDR (a `/24` by default) from `--cluster-cidr`, as
//! upstream's range allocator hands them out; a deleted node's range is free again.

use std::collections::HashSet;
use std::sync::Arc;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::Ctx;
use crate::runtime::Informer;
use crate::runtime::events::EventType;
use crate::runtime::informer::next_change;

fn assigned(nodes: &Informer<Node>) -> HashSet<IpNet> {
    nodes.list().iter().filter_map(|n| n.spec.as_ref()?.pod_cidr.as_ref()?.parse().ok()).collect()
}

/// The first range of `/mask` in `cluster` that is not taken.
pub fn next_free(cluster: IpNet, mask: u8, taken: &HashSet<IpNet>) -> Option<IpNet> {
    cluster.subnets(mask).ok()?.find(|s| !taken.contains(s))
}

pub async fn run(ctx: Arc<Ctx>, cancel: CancellationToken) {
    let nodes = ctx.informers.get::<Node>();
    let mut changes = nodes.subscribe();
    nodes.synced().await;
    let recorder = ctx.recorder("node-ipam-controller");
    let api: Api<Node> = Api::all(ctx.client.clone());
    // Ranges handed out by this process, by node, kept until the cache shows them (a node is
    // never given a second range because the cache was behind).
    let mut given: std::collections::HashMap<String, IpNet> = Default::default();
    loop {
        // One pass over every node without a range; single-threaded so no range goes twice.
        let mut taken = assigned(&nodes);
        given.retain(|_, g| !taken.contains(g));
        taken.extend(given.values().copied());
        for n in nodes.list() {
            let has = n.spec.as_ref().and_then(|s| s.pod_cidr.as_deref()).is_some_and(|c| !c.is_empty());
            let name = n.metadata.name.clone().unwrap_or_default();
            if has || n.metadata.deletion_timestamp.is_some() || given.contains_key(&name) {
                continue;
            }
            let Some(cidr) = next_free(ctx.cluster_cidr, ctx.node_cidr_mask, &taken) else {
                recorder.record(
                    n.as_ref(),
                    EventType::Normal,
                    "CIDRNotAvailable",
                    format!("Node {name} status is now: CIDRNotAvailable"),
                );
                continue;
            };
            let patch = json!({"spec": {"podCIDR": cidr.to_string(), "podCIDRs": [cidr.to_string()]}});
            match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => {
                    taken.insert(cidr);
                    given.insert(name.clone(), cidr);
                    tracing::info!(node = %name, %cidr, "assigned podCIDR");
                }
                Err(e) => tracing::debug!(node = %name, error = %e, "cannot assign podCIDR"),
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            c = next_change(&mut changes) => match c {
                Some(_) => {}
                None => return,
            },
            _ = tokio::time::sleep(std::time::Duration::from_secs(30)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_handed_out_in_order_and_reused() {
        let cluster: IpNet = "10.42.0.0/16".parse().unwrap();
        let mut taken = HashSet::new();
        let a = next_free(cluster, 24, &taken).unwrap();
        assert_eq!(a.to_string(), "10.42.0.0/24");
        taken.insert(a);
        assert_eq!(next_free(cluster, 24, &taken).unwrap().to_string(), "10.42.1.0/24");
        let full: HashSet<IpNet> = cluster.subnets(24).unwrap().collect();
        assert_eq!(next_free(cluster, 24, &full), None);
    }
}
