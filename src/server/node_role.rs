//! The server's own node carries `node-role.kubernetes.io/control-plane=true`, as on upstream
//! and k3s control-plane nodes. No node may give itself that label (NodeRestriction), so the
//! server sets it, as the service account `kube-system:control-plane-labeller`, whose role
//! allows reading and patching Nodes and nothing else. It watches that one Node, so the label
//! follows its registration within milliseconds and comes back if the Node is re-created.

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use tokio_util::sync::CancellationToken;

/// The label a control-plane node carries.
pub const CONTROL_PLANE_LABEL: &str = "node-role.kubernetes.io/control-plane";

/// The service account the labeller acts as.
pub const SERVICE_ACCOUNT: &str = "control-plane-labeller";

/// Keeps the label on the node `node` until `cancel`.
pub async fn run(client: kube::Client, node: String, cancel: CancellationToken) {
    let nodes: Api<Node> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("metadata.name={node}"));
    let mut stream = watcher(nodes.clone(), config).default_backoff().boxed();
    loop {
        let ev = tokio::select! {
            _ = cancel.cancelled() => return,
            ev = stream.next() => ev,
        };
        let n = match ev {
            Some(Ok(watcher::Event::Apply(n) | watcher::Event::InitApply(n))) => n,
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                tracing::debug!(node = %node, error = %e, "the watch of the server's node failed; retrying");
                continue;
            }
            None => return,
        };
        if n.metadata.labels.as_ref().is_some_and(|l| l.contains_key(CONTROL_PLANE_LABEL)) {
            continue;
        }
        let patch = serde_json::json!({"metadata": {"labels": {CONTROL_PLANE_LABEL: "true"}}});
        match nodes.patch(&node, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => tracing::debug!(node = %node, "labelled {CONTROL_PLANE_LABEL}"),
            Err(e) => tracing::warn!(node = %node, error = %e, "cannot label the server's node"),
        }
    }
}
