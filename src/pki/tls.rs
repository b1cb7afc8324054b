//! rustls configuration of the API server (ring provider) and client identities.

use std::sync::Arc;

use std::sync::RwLock;

use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime, pem::PemObject};

use super::{PkiError, ServerPki};

/// User and groups from a client certificate's subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub user: String,
    pub groups: Vec<String>,
}

fn tls(e: impl std::fmt::Display) -> PkiError {
    PkiError::Tls(e.to_string())
}

/// The server configuration: our chain, any client certificate accepted at the handshake
/// (with proof that the client holds its key), ALPN `h2` and `http/1.1`. Whether the
/// certificate chains to the cluster CA is [`ClientCertCheck`]'s to say after the handshake,
/// so that a certificate from elsewhere is answered with 401, as upstream's x509
/// authenticator does, instead of a broken handshake.
pub fn server_tls_config(pki: &ServerPki) -> Result<(Arc<rustls::ServerConfig>, ClientCertCheck), PkiError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
        roots.add(cert.map_err(tls)?).map_err(tls)?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(tls)?;
    let chain =
        CertificateDer::pem_slice_iter(pki.serving_chain_pem.as_bytes()).collect::<Result<Vec<_>, _>>().map_err(tls)?;
    let key = PrivateKeyDer::from_pem_slice(pki.serving_key_pem.as_bytes()).map_err(tls)?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls)?
        .with_client_cert_verifier(Arc::new(AnyClientCert(verifier.clone())))
        .with_single_cert(chain, key)
        .map_err(tls)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((Arc::new(cfg), ClientCertCheck(verifier)))
}

/// Verifies a client's certificate chain against the cluster CA (and its validity period).
#[derive(Debug, Clone)]
pub struct ClientCertCheck(Arc<dyn ClientCertVerifier>);

impl ClientCertCheck {
    /// Whether `chain` (leaf first) is a valid client certificate of the cluster CA now.
    pub fn verify(&self, chain: &[CertificateDer<'_>]) -> bool {
        let Some((leaf, rest)) = chain.split_first() else { return false };
        self.0.verify_client_cert(leaf, rest, UnixTime::now()).is_ok()
    }
}

/// Accepts any client certificate at the handshake but checks the handshake signatures, so the
/// session is bound to the key of the certificate presented.
#[derive(Debug)]
struct AnyClientCert(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// A kubelet's serving certificate that can be replaced while the kubelet API runs (renewal):
/// new handshakes get the new one.
#[derive(Debug)]
pub struct ServingCert(RwLock<Arc<rustls::sign::CertifiedKey>>);

impl ServingCert {
    /// From a PEM chain and key.
    pub fn new(cert_pem: &str, key_pem: &str) -> Result<Arc<ServingCert>, PkiError> {
        Ok(Arc::new(ServingCert(RwLock::new(certified_key(cert_pem, key_pem)?))))
    }

    /// Replaces the certificate.
    pub fn replace(&self, cert_pem: &str, key_pem: &str) -> Result<(), PkiError> {
        let k = certified_key(cert_pem, key_pem)?;
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = k;
        Ok(())
    }
}

fn certified_key(cert_pem: &str, key_pem: &str) -> Result<Arc<rustls::sign::CertifiedKey>, PkiError> {
    let provider = rustls::crypto::ring::default_provider();
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>().map_err(tls)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(tls)?;
    Ok(Arc::new(rustls::sign::CertifiedKey::from_der(chain, key, &provider).map_err(tls)?))
}

impl rustls::server::ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// A client configuration that accepts any server certificate. Only for fetching a CA bundle
/// that is checked against a pinned hash before anything is trusted or sent.
pub fn unverified_server_tls_client() -> Result<Arc<rustls::ClientConfig>, PkiError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(tls)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(UnverifiedKubelet(provider)))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The CN (user) and O entries (groups) of a DER certificate.
pub fn identity_from_cert(der: &[u8]) -> Result<ClientIdentity, PkiError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| PkiError::Tls(format!("client certificate: {e}")))?;
    let subject = cert.subject();
    let user = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or_else(|| PkiError::Tls("client certificate has no common name".into()))?
        .to_string();
    let groups = subject.iter_organization().filter_map(|o| o.as_str().ok().map(String::from)).collect();
    Ok(ClientIdentity { user, groups })
}

/// The kubelet API's server configuration: its serving certificate (replaceable), and client
/// certificates optional at the handshake (so that a missing one can be answered with 401)
/// but verified against `client_ca_pem` when presented. HTTP/1.1 only: exec, attach and
/// port-forward are HTTP/1.1 upgrades.
pub fn kubelet_serving_tls_config(
    serving: Arc<ServingCert>,
    client_ca_pem: &str,
) -> Result<Arc<rustls::ServerConfig>, PkiError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(client_ca_pem.as_bytes()) {
        roots.add(cert.map_err(tls)?).map_err(tls)?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(tls)?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(serving);
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The API server's client configuration towards kubelets: it presents its kubelet client
/// certificate and, for now, does not verify the kubelet's serving certificate, as upstream's
/// API server does without `--kubelet-certificate-authority`. Kubelet serving certificates
/// issued through CSRs will let this verify them.
pub fn kubelet_client_tls_config(cert_pem: &str, key_pem: &str) -> Result<Arc<rustls::ClientConfig>, PkiError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>().map_err(tls)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(tls)?;
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(tls)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(UnverifiedKubelet(provider)))
        .with_client_auth_cert(chain, key)
        .map_err(tls)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Accepts any kubelet serving certificate, but still checks the handshake signatures so the
/// session is bound to the key the kubelet presented.
#[derive(Debug)]
struct UnverifiedKubelet(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for UnverifiedKubelet {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
