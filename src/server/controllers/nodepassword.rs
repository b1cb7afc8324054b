//! The nodepassword controller: when a Node is deleted, deletes its node password Secret
//! (`<node>.node-password.skiff` in kube-system), so that the name is free for the next box
//! that joins with it, as k3s does. A box keeps its name as long as its Node exists.
//!
//! A Node deleted while no server ran keeps its password until the Node is created and
//! deleted again: the password of a box that joined but has not registered yet looks the same.
//!
//! Invariant: it deletes node password Secrets of deleted Nodes, nothing else.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Secret};
use kube::Api;
use kube::api::DeleteParams;
use tokio_util::sync::CancellationToken;

use super::Ctx;
use crate::runtime::Change;
use crate::runtime::informer::next_change;

pub async fn run(ctx: Arc<Ctx>, cancel: CancellationToken) {
    let nodes = ctx.informers.get::<Node>();
    let mut changes = nodes.subscribe();
    nodes.synced().await;
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), "kube-system");
    loop {
        let node = tokio::select! {
            _ = cancel.cancelled() => break,
            ch = next_change(&mut changes) => match ch {
                Some(Change::Deleted(n)) => n,
                Some(_) => continue,
                None => break,
            },
        };
        let Some(name) = node.metadata.name.clone() else { continue };
        // The same name may be back already (a box re-registering): then it keeps its password.
        if nodes.get("", &name).is_some() {
            continue;
        }
        let secret = crate::server::apiserver::join::node_password_secret(&name);
        match api.delete(&secret, &DeleteParams::default()).await {
            Ok(_) => tracing::info!(node = %name, "node deleted: its name is free to join again"),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => tracing::warn!(node = %name, error = %e, "cannot delete the node password"),
        }
    }
}
