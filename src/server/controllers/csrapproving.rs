//! The csrapproving controller: approves kubelet certificate requests that are plainly a
//! node's own, as upstream's `csrapproving` (its `nodeclient` and `selfnodeclient`
//! recognizers) and, for serving certificates, as the approvers upstream leaves to
//! distributions do:
//! - `kube-apiserver-client-kubelet` from a bootstrapper (a join token; the API server already
//!   checked the box's node password) or from the node itself, renewing;
//! - `kubelet-serving` from the node itself, for its own name;
//! - `kube-apiserver-client` for `CN=system:kube-proxy` from a node: the service proxy each
//!   node runs gets its own identity this way (k3s hands every node a kube-proxy certificate).
//!
//! Requests must have the subject, names and usages their signer issues. Anything else is
//! left pending for an administrator (`kubectl certificate approve|deny`).
//!
//! Invariant: it only ever adds an `Approved` condition; it never denies, signs or deletes.

use std::sync::Arc;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::Ctx;
use crate::pki::csr::{
    self, NODE_USER_PREFIX, NODES_GROUP, SIGNER_APISERVER_CLIENT, SIGNER_KUBELET_CLIENT, SIGNER_KUBELET_SERVING,
};
use crate::runtime::queue::{Next, reconcile_each};
use crate::runtime::{Informer, Key};

const COMPONENT: &str = "csrapproving";
const BOOTSTRAPPERS: &str = "system:bootstrappers";

pub async fn run(ctx: Arc<Ctx>, cancel: CancellationToken) {
    let csrs = ctx.informers.get::<CertificateSigningRequest>();
    let (client, informer) = (ctx.client.clone(), csrs.clone());
    reconcile_each(COMPONENT, informer, 1, cancel, move |key: Key| {
        let (client, csrs) = (client.clone(), csrs.clone());
        async move { process(&client, &csrs, &key).await }
    })
    .await;
}

/// Whether the request already carries an Approved or Denied condition.
pub fn decided(csr: &CertificateSigningRequest) -> bool {
    has_condition(csr, "Approved") || has_condition(csr, "Denied")
}

/// Whether the request has a condition of type `t`.
pub fn has_condition(csr: &CertificateSigningRequest, t: &str) -> bool {
    csr.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|cs| cs.iter().any(|c| c.type_ == t))
}

/// The message to approve `csr` with, when one of the recognizers takes it.
pub fn recognize(csr: &CertificateSigningRequest) -> Option<&'static str> {
    let spec = &csr.spec;
    let subject = csr::parse_request(&spec.request.0).ok()?;
    let usages = spec.usages.clone().unwrap_or_default();
    let groups = spec.groups.clone().unwrap_or_default();
    let username = spec.username.clone().unwrap_or_default();
    let self_node = username == subject.common_name && groups.iter().any(|g| g == NODES_GROUP);
    match spec.signer_name.as_str() {
        SIGNER_KUBELET_CLIENT if csr::validate_kubelet_client(&subject, &usages).is_ok() => {
            if groups.iter().any(|g| g == BOOTSTRAPPERS) {
                Some("Auto approving kubelet client certificate after SubjectAccessReview.")
            } else if self_node {
                Some("Auto approving self kubelet client certificate after SubjectAccessReview.")
            } else {
                None
            }
        }
        SIGNER_KUBELET_SERVING if self_node && csr::validate_kubelet_serving(&subject, &usages).is_ok() => {
            Some("Auto approving kubelet serving certificate of its own node.")
        }
        SIGNER_APISERVER_CLIENT
            if username.starts_with(NODE_USER_PREFIX)
                && groups.iter().any(|g| g == NODES_GROUP)
                && csr::validate_kube_proxy(&subject, &usages).is_ok() =>
        {
            Some("Auto approving the service proxy's client certificate for a node.")
        }
        _ => None,
    }
}

async fn process(
    client: &kube::Client,
    csrs: &Informer<CertificateSigningRequest>,
    key: &Key,
) -> Result<Next, kube::Error> {
    let Some(csr) = csrs.get("", &key.name) else { return Ok(Next::Done) };
    if decided(&csr) || has_condition(&csr, "Failed") {
        return Ok(Next::Done);
    }
    let Some(message) = recognize(&csr) else { return Ok(Next::Done) };
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let patch = json!({"status": {"conditions": [{
        "type": "Approved", "status": "True", "reason": "AutoApproved", "message": message,
        "lastUpdateTime": now, "lastTransitionTime": now,
    }]}});
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    tracing::info!(csr = %key.name, requester = ?csr.spec.username, "approving certificate request");
    match api.patch_approval(&key.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(Next::Done),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(Next::Done),
        Err(e) => Err(e),
    }
}
