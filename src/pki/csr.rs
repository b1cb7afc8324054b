//! Certificate signing requests: what the kubelet signers accept, requests for a node's own
//! key, and signing with the cluster CA.
//!
//! The checks are upstream's (`ValidateKubeletClientCSR`, `ValidateKubeletServingCSR` in
//! `k8s.io/kubernetes/pkg/apis/certificates/v1`), with its messages. Nothing here knows how a
//! request arrived or who sent it.

use std::net::IpAddr;
use std::time::Duration;

use rcgen::{
    CertificateParams, CertificateSigningRequestParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

use super::{PkiError, ServerPki, dn, san_types};

/// Client certificates of kubelets (`CN=system:node:<name>`, `O=system:nodes`).
pub const SIGNER_KUBELET_CLIENT: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// Serving certificates of kubelets' HTTPS API.
pub const SIGNER_KUBELET_SERVING: &str = "kubernetes.io/kubelet-serving";
/// Client certificates for the API server, any subject (approved by an administrator).
pub const SIGNER_APISERVER_CLIENT: &str = "kubernetes.io/kube-apiserver-client";
/// The prefix of node user names.
pub const NODE_USER_PREFIX: &str = "system:node:";
/// The group of nodes.
pub const NODES_GROUP: &str = "system:nodes";
/// The service proxy's user, as upstream's kube-proxy (bound to `system:node-proxier`).
pub const KUBE_PROXY_USER: &str = "system:kube-proxy";

/// What a certificate signing request asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CsrSubject {
    pub common_name: String,
    pub organizations: Vec<String>,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    pub emails: Vec<String>,
    pub uris: Vec<String>,
}

/// Parses a PEM certificate request and checks its signature (proof that the requester holds
/// the key). The error is upstream's wording where upstream has one.
pub fn parse_request(pem: &[u8]) -> Result<CsrSubject, String> {
    let text = std::str::from_utf8(pem).map_err(|_| "PEM block type must be CERTIFICATE REQUEST".to_string())?;
    let (_, block) =
        x509_parser::pem::parse_x509_pem(pem).map_err(|_| "PEM block type must be CERTIFICATE REQUEST".to_string())?;
    if block.label != "CERTIFICATE REQUEST" {
        return Err("PEM block type must be CERTIFICATE REQUEST".into());
    }
    use x509_parser::prelude::FromDer;
    let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(&block.contents)
        .map_err(|e| format!("x509: malformed certificate request: {e}"))?;
    CertificateSigningRequestParams::from_pem(text).map_err(|e| format!("x509: invalid certificate request: {e}"))?;
    let subject = &csr.certification_request_info.subject;
    let mut out = CsrSubject {
        common_name: subject.iter_common_name().next().and_then(|c| c.as_str().ok()).unwrap_or_default().to_string(),
        organizations: subject.iter_organization().filter_map(|o| o.as_str().ok().map(String::from)).collect(),
        ..Default::default()
    };
    if let Some(exts) = csr.requested_extensions() {
        for ext in exts {
            if let x509_parser::extensions::ParsedExtension::SubjectAlternativeName(san) = ext {
                use x509_parser::extensions::GeneralName;
                for name in &san.general_names {
                    match name {
                        GeneralName::DNSName(d) => out.dns_names.push(d.to_string()),
                        GeneralName::RFC822Name(e) => out.emails.push(e.to_string()),
                        GeneralName::URI(u) => out.uris.push(u.to_string()),
                        GeneralName::IPAddress(b) => match b.len() {
                            4 => out.ip_addresses.push(IpAddr::from(<[u8; 4]>::try_from(*b).unwrap_or_default())),
                            16 => out.ip_addresses.push(IpAddr::from(<[u8; 16]>::try_from(*b).unwrap_or_default())),
                            _ => return Err("x509: invalid IP address in subjectAltName".into()),
                        },
                        _ => {}
                    }
                }
            }
        }
    }
    Ok(out)
}

fn usage_set(usages: &[String]) -> Vec<&str> {
    let mut u: Vec<&str> = usages.iter().map(String::as_str).collect();
    u.sort_unstable();
    u.dedup();
    u
}

/// Upstream's `ValidateKubeletClientCSR`.
pub fn validate_kubelet_client(s: &CsrSubject, usages: &[String]) -> Result<(), String> {
    if s.organizations != [NODES_GROUP] {
        return Err("subject organization is not system:nodes".into());
    }
    if !s.dns_names.is_empty() {
        return Err("DNS subjectAltNames are not allowed".into());
    }
    if !s.emails.is_empty() {
        return Err("Email subjectAltNames are not allowed".into());
    }
    if !s.ip_addresses.is_empty() {
        return Err("IP subjectAltNames are not allowed".into());
    }
    if !s.uris.is_empty() {
        return Err("URI subjectAltNames are not allowed".into());
    }
    if !s.common_name.starts_with(NODE_USER_PREFIX) {
        return Err("subject common name does not begin with system:node:".into());
    }
    let u = usage_set(usages);
    if u != ["client auth", "digital signature", "key encipherment"] && u != ["client auth", "digital signature"] {
        return Err("usages did not match [client auth digital signature key encipherment]".into());
    }
    Ok(())
}

/// Upstream's `ValidateKubeletServingCSR`.
pub fn validate_kubelet_serving(s: &CsrSubject, usages: &[String]) -> Result<(), String> {
    if s.organizations != [NODES_GROUP] {
        return Err("subject organization is not system:nodes".into());
    }
    if s.dns_names.is_empty() && s.ip_addresses.is_empty() {
        return Err("DNS or IP subjectAltName is required".into());
    }
    if !s.emails.is_empty() {
        return Err("Email subjectAltNames are not allowed".into());
    }
    if !s.uris.is_empty() {
        return Err("URI subjectAltNames are not allowed".into());
    }
    let u = usage_set(usages);
    if u != ["digital signature", "key encipherment", "server auth"] && u != ["digital signature", "server auth"] {
        return Err("usages did not match [digital signature key encipherment server auth]".into());
    }
    if !s.common_name.starts_with(NODE_USER_PREFIX) {
        return Err("subject common name does not begin with system:node:".into());
    }
    Ok(())
}

/// The checks of `signer` for a request, if it has any.
/// Checks a request for the service proxy's client certificate: `CN=system:kube-proxy`, no
/// organization, no alternative names, client usages only.
pub fn validate_kube_proxy(s: &CsrSubject, usages: &[String]) -> Result<(), String> {
    if s.common_name != KUBE_PROXY_USER {
        return Err("subject common name is not system:kube-proxy".into());
    }
    if !s.organizations.is_empty() {
        return Err("subject organization is not empty".into());
    }
    if !(s.dns_names.is_empty() && s.emails.is_empty() && s.ip_addresses.is_empty() && s.uris.is_empty()) {
        return Err("subjectAltNames are not allowed".into());
    }
    let u = usage_set(usages);
    if u != ["client auth", "digital signature", "key encipherment"] && u != ["client auth", "digital signature"] {
        return Err("usages did not match [client auth digital signature key encipherment]".into());
    }
    Ok(())
}

pub fn validate_for_signer(signer: &str, s: &CsrSubject, usages: &[String]) -> Result<(), String> {
    match signer {
        SIGNER_KUBELET_CLIENT => validate_kubelet_client(s, usages),
        SIGNER_KUBELET_SERVING => validate_kubelet_serving(s, usages),
        _ => Ok(()),
    }
}

/// A new private key and a certificate request for it, as PEM: `(request, key)`. The key is
/// generated here and returned only to the caller, which keeps it on this box.
pub fn new_request(cn: &str, orgs: &[String], sans: &[String]) -> Result<(String, String), PkiError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(cn, orgs);
    params.subject_alt_names = san_types(sans)?;
    let csr = params.serialize_request(&key)?;
    Ok((csr.pem()?, key.serialize_pem()))
}

/// How far back a signed certificate's validity starts, for clocks that run behind: upstream
/// backdates by 5 minutes; short lifetimes (tests) are backdated by a tenth of theirs.
fn backdate(lifetime: Duration) -> Duration {
    (lifetime / 10).min(Duration::from_secs(300))
}

impl ServerPki {
    /// Signs a certificate request with the cluster CA for `usages` (Kubernetes usage names),
    /// valid for `lifetime` (never beyond the CA). Subject and names are the request's.
    pub fn sign_request(&self, request_pem: &str, usages: &[String], lifetime: Duration) -> Result<String, PkiError> {
        let bad = |m: String| PkiError::Parse { path: "certificate request".into(), message: m };
        let mut req = CertificateSigningRequestParams::from_pem(request_pem).map_err(|e| bad(e.to_string()))?;
        let p = &mut req.params;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages.clear();
        p.extended_key_usages.clear();
        for u in usages {
            match u.as_str() {
                "digital signature" => p.key_usages.push(KeyUsagePurpose::DigitalSignature),
                "key encipherment" => p.key_usages.push(KeyUsagePurpose::KeyEncipherment),
                "client auth" => p.extended_key_usages.push(ExtendedKeyUsagePurpose::ClientAuth),
                "server auth" => p.extended_key_usages.push(ExtendedKeyUsagePurpose::ServerAuth),
                other => return Err(bad(format!("unsupported usage {other:?}"))),
            }
        }
        let now = time::OffsetDateTime::now_utc();
        let ca_end = super::cert_times(&self.ca_pem).map(|(_, end)| end).unwrap_or(i64::MAX);
        let end = (now + time::Duration::seconds(lifetime.as_secs() as i64)).unix_timestamp().min(ca_end);
        p.not_before = now - time::Duration::seconds(backdate(lifetime).as_secs() as i64);
        p.not_after = time::OffsetDateTime::from_unix_timestamp(end).map_err(|e| bad(e.to_string()))?;
        let issuer = Issuer::from_ca_cert_pem(&self.ca_pem, KeyPair::from_pem(&self.ca_key_pem)?)?;
        Ok(req.signed_by(&issuer)?.pem())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usages(u: &[&str]) -> Vec<String> {
        u.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn kubelet_requests_checked_as_upstream() {
        let nodes = vec![NODES_GROUP.to_string()];
        let (pem, _) = new_request("system:node:pi-1", &nodes, &[]).unwrap();
        let s = parse_request(pem.as_bytes()).unwrap();
        assert_eq!((s.common_name.as_str(), s.organizations.clone()), ("system:node:pi-1", nodes.clone()));
        let client = usages(&["digital signature", "client auth"]);
        assert_eq!(validate_kubelet_client(&s, &client), Ok(()));
        assert_eq!(
            validate_kubelet_client(&s, &usages(&["server auth"])).unwrap_err(),
            "usages did not match [client auth digital signature key encipherment]"
        );
        let (pem, _) = new_request("system:node:pi-1", &["system:masters".to_string()], &[]).unwrap();
        let masters = parse_request(pem.as_bytes()).unwrap();
        assert_eq!(validate_kubelet_client(&masters, &client).unwrap_err(), "subject organization is not system:nodes");
        let (pem, _) = new_request("admin", &nodes, &[]).unwrap();
        assert_eq!(
            validate_kubelet_client(&parse_request(pem.as_bytes()).unwrap(), &client).unwrap_err(),
            "subject common name does not begin with system:node:"
        );
        let (pem, _) = new_request("system:node:pi-1", &nodes, &["pi-1".into(), "10.0.0.5".into()]).unwrap();
        let serving = parse_request(pem.as_bytes()).unwrap();
        assert_eq!(serving.ip_addresses, vec!["10.0.0.5".parse::<IpAddr>().unwrap()]);
        assert_eq!(validate_kubelet_client(&serving, &client).unwrap_err(), "DNS subjectAltNames are not allowed");
        assert_eq!(validate_kubelet_serving(&serving, &usages(&["digital signature", "server auth"])), Ok(()));
        assert_eq!(validate_kubelet_serving(&s, &client).unwrap_err(), "DNS or IP subjectAltName is required");
        assert_eq!(parse_request(b"garbage").unwrap_err(), "PEM block type must be CERTIFICATE REQUEST");
    }

    #[test]
    fn signs_with_the_cluster_ca_for_the_lifetime() {
        let d = tempfile::tempdir().unwrap();
        let pki = super::super::load_or_create(&super::super::PkiConfig {
            server_dir: d.path().to_path_buf(),
            hostname: "box1".into(),
            node_ips: vec![],
            first_service_ip: "10.43.0.1".parse().unwrap(),
            cluster_domain: "cluster.local".into(),
            tls_sans: vec![],
            token: None,
            agent_token: None,
        })
        .unwrap();
        let (pem, _) = new_request("system:node:pi-1", &[NODES_GROUP.to_string()], &[]).unwrap();
        let cert =
            pki.sign_request(&pem, &usages(&["digital signature", "client auth"]), Duration::from_secs(100)).unwrap();
        let (start, end) = super::super::cert_times(&cert).unwrap();
        assert_eq!(end - start, 110, "100 s, backdated by 10 s");
        let (_, p) = x509_parser::pem::parse_x509_pem(cert.as_bytes()).unwrap();
        let id = super::super::identity_from_cert(&p.contents).unwrap();
        assert_eq!((id.user.as_str(), id.groups), ("system:node:pi-1", vec![NODES_GROUP.to_string()]));
    }
}
