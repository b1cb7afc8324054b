//! Asking the cluster for a certificate: a CertificateSigningRequest for a key generated
//! here, then waiting until it is issued, denied or failed.

use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::BootstrapError;

/// What to ask for.
pub struct Request<'a> {
    pub generate_name: &'a str,
    pub signer: &'a str,
    pub usages: &'a [&'a str],
    pub cn: &'a str,
    /// The subject's organizations (groups).
    pub orgs: &'a [String],
    pub sans: &'a [String],
    /// Sent with a join token, so the server can check this box owns the node name.
    pub node_password: Option<&'a str>,
}

/// An issued certificate (PEM, as the signer returned it) and its key (PEM, never sent).
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub csr_name: String,
}

fn api_error(e: kube::Error) -> BootstrapError {
    match e {
        kube::Error::Api(s) if s.code == 401 => BootstrapError::Refused,
        kube::Error::Api(s) => BootstrapError::Rejected(s.message),
        other => BootstrapError::Unreachable(other.to_string()),
    }
}

/// Creates the request with `client` and waits for its certificate.
pub async fn obtain(
    client: &kube::Client,
    r: &Request<'_>,
    cancel: &CancellationToken,
) -> Result<Issued, BootstrapError> {
    let (request_pem, key_pem) = crate::pki::csr::new_request(r.cn, r.orgs, r.sans).map_err(BootstrapError::Pki)?;
    let body = json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"generateName": r.generate_name},
        "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(request_pem.as_bytes()),
            "signerName": r.signer,
            "usages": r.usages,
        },
    });
    let mut req = http::Request::post("/apis/certificates.k8s.io/v1/certificatesigningrequests")
        .header(http::header::CONTENT_TYPE, "application/json");
    if let Some(p) = r.node_password {
        req = req.header(crate::server::apiserver::join::NODE_PASSWORD_HEADER, p);
    }
    let req =
        req.body(serde_json::to_vec(&body).unwrap_or_default()).map_err(|e| BootstrapError::Rejected(e.to_string()))?;
    let created: CertificateSigningRequest = client.request(req).await.map_err(api_error)?;
    let name = created.metadata.name.clone().unwrap_or_default();
    tracing::info!(csr = %name, signer = r.signer, "certificate requested");
    let api: kube::Api<CertificateSigningRequest> = kube::Api::all(client.clone());
    let mut logged = false;
    loop {
        let csr = api.get(&name).await.map_err(api_error)?;
        let status = csr.status.unwrap_or_default();
        for c in status.conditions.unwrap_or_default() {
            if c.type_ == "Denied" || c.type_ == "Failed" {
                return Err(BootstrapError::NotIssued {
                    name,
                    how: c.type_.to_lowercase(),
                    message: c.message.unwrap_or_default(),
                });
            }
        }
        if let Some(cert) = status.certificate.filter(|c| !c.0.is_empty()) {
            let cert_pem =
                String::from_utf8(cert.0).map_err(|_| BootstrapError::Rejected("the certificate is not PEM".into()))?;
            return Ok(Issued { cert_pem, key_pem, csr_name: name });
        }
        if !logged {
            tracing::info!(csr = %name, "waiting for the certificate request to be approved and issued");
            logged = true;
        }
        tokio::select! {
            _ = cancel.cancelled() => return Err(BootstrapError::Cancelled),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}
