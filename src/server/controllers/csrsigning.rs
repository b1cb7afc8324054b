//! The csrsigning controller: issues approved requests of the kubelet signers (and of
//! `kube-apiserver-client`) with the cluster CA, as upstream's `csrsigning`: the certificate
//! lives `--cluster-signing-duration` (or the request's shorter `expirationSeconds`), never
//! past the CA; a request its signer does not accept gets a `Failed` condition instead.
//!
//! Invariant: it writes only `status.certificate` and `Failed` conditions, and only on
//! approved requests that have neither; it never approves.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::Ctx;
use super::csrapproving::has_condition;
use crate::pki::csr::{self, SIGNER_APISERVER_CLIENT, SIGNER_KUBELET_CLIENT, SIGNER_KUBELET_SERVING};
use crate::runtime::queue::{Next, reconcile_each};
use crate::runtime::{Informer, Key};

const COMPONENT: &str = "csrsigning";
/// The shortest lifetime a request may ask for (upstream's minimum `expirationSeconds`).
const MIN_EXPIRATION_SECONDS: i32 = 600;

pub async fn run(ctx: Arc<Ctx>, cancel: CancellationToken) {
    let csrs = ctx.informers.get::<CertificateSigningRequest>();
    let (ctx, informer) = (ctx.clone(), csrs.clone());
    reconcile_each(COMPONENT, informer, 1, cancel, move |key: Key| {
        let (ctx, csrs) = (ctx.clone(), csrs.clone());
        async move { process(&ctx, &csrs, &key).await }
    })
    .await;
}

/// The lifetime of the certificate for `csr`.
pub fn lifetime(csr: &CertificateSigningRequest, max: Duration) -> Duration {
    match csr.spec.expiration_seconds {
        Some(s) if s >= MIN_EXPIRATION_SECONDS => max.min(Duration::from_secs(s as u64)),
        _ => max,
    }
}

async fn process(ctx: &Ctx, csrs: &Informer<CertificateSigningRequest>, key: &Key) -> Result<Next, kube::Error> {
    let Some(csr) = csrs.get("", &key.name) else { return Ok(Next::Done) };
    let signer = csr.spec.signer_name.as_str();
    let issued = csr.status.as_ref().and_then(|s| s.certificate.as_ref()).is_some_and(|c| !c.0.is_empty());
    if issued
        || !has_condition(&csr, "Approved")
        || has_condition(&csr, "Failed")
        || ![SIGNER_KUBELET_CLIENT, SIGNER_KUBELET_SERVING, SIGNER_APISERVER_CLIENT].contains(&signer)
    {
        return Ok(Next::Done);
    }
    let usages = csr.spec.usages.clone().unwrap_or_default();
    let checked = csr::parse_request(&csr.spec.request.0)
        .and_then(|s| csr::validate_for_signer(signer, &s, &usages))
        .and_then(|()| String::from_utf8(csr.spec.request.0.clone()).map_err(|e| e.to_string()))
        .and_then(|pem| {
            ctx.pki.sign_request(&pem, &usages, lifetime(&csr, ctx.cluster_signing_duration)).map_err(|e| e.to_string())
        });
    let api: Api<CertificateSigningRequest> = Api::all(ctx.client.clone());
    let patch = match checked {
        Ok(cert) => {
            tracing::info!(csr = %key.name, signer, "issued certificate");
            json!({"status": {"certificate": base64::engine::general_purpose::STANDARD.encode(cert.as_bytes())}})
        }
        Err(message) => {
            tracing::warn!(csr = %key.name, signer, error = %message, "certificate request failed");
            let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            json!({"status": {"conditions": [{
                "type": "Failed", "status": "True", "reason": "SignerValidationFailure", "message": message,
                "lastUpdateTime": now, "lastTransitionTime": now,
            }]}})
        }
    };
    match api.patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(Next::Done),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(Next::Done),
        Err(e) => Err(e),
    }
}
