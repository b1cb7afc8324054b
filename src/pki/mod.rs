//! The cluster's identities: its CA, the API server's serving certificate, client
//! certificates, the join token and the service-account signing key.
//!
//! Everything is created on first start under `<data-dir>/server/tls` and reused afterwards;
//! only what changed (the serving certificate's names) or is about to expire is re-issued.
//! This room writes files and builds TLS configurations; it never opens a socket.

pub mod csr;
mod kubeconfig;
mod sa_key;
mod tls;
pub mod token;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

pub use kubeconfig::write_kubeconfig;
pub use sa_key::ServiceAccountKey;
pub use tls::{
    ClientCertCheck, ClientIdentity, ServingCert, identity_from_cert, kubelet_client_tls_config,
    kubelet_serving_tls_config, server_tls_config, unverified_server_tls_client,
};
pub use token::{Credential, JoinToken, bearer_token, ca_hash, format_token, parse_token};

/// Errors of the PKI room.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("certificate generation failed: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("{path}: not a valid certificate or key: {message}")]
    Parse { path: String, message: String },
    #[error("invalid token: {0}")]
    Token(String),
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("service account token: {0}")]
    Jwt(String),
}

/// Inputs of the server's PKI.
#[derive(Debug, Clone)]
pub struct PkiConfig {
    /// `<data-dir>/server`; certificates go to `tls/` below it.
    pub server_dir: PathBuf,
    pub hostname: String,
    pub node_ips: Vec<IpAddr>,
    pub first_service_ip: IpAddr,
    pub cluster_domain: String,
    pub tls_sans: Vec<String>,
    /// `--token`: a bare secret or a full `K10…::server:secret` token.
    pub token: Option<String>,
    /// `--agent-token`: joins agents, never servers.
    pub agent_token: Option<String>,
}

/// The server's certificates, keys and token, as PEM.
pub struct ServerPki {
    pub ca_pem: String,
    ca_key_pem: String,
    pub serving_chain_pem: String,
    pub serving_key_pem: String,
    pub admin_cert_pem: String,
    pub admin_key_pem: String,
    /// The API server's identity towards kubelets (`CN=kube-apiserver-kubelet-client`,
    /// `O=system:masters`): logs, exec, attach, port-forward and node proxying.
    pub kubelet_client_cert_pem: String,
    pub kubelet_client_key_pem: String,
    pub token: String,
    /// The agent token `K10…::node:secret`, when `--agent-token` is given.
    pub agent_token: Option<String>,
    pub sa: ServiceAccountKey,
}

/// The common name of the API server's kubelet client certificate, which kubelets authorize.
pub const KUBELET_CLIENT_CN: &str = "kube-apiserver-kubelet-client";

const CA_VALIDITY_DAYS: i64 = 3650;
const LEAF_VALIDITY_DAYS: i64 = 365;
/// Leaf certificates this close to expiry are re-issued at start.
const RENEW_BEFORE_DAYS: i64 = 90;

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io { path: path.display().to_string(), source }
}

/// Writes a file atomically with the given mode.
pub(crate) fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        f.write_all(contents).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

fn read_opt(path: &Path) -> Result<Option<String>, PkiError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(PkiError::Io { path: path.display().to_string(), source: e }),
    }
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = time_now();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// The validity of a PEM certificate (the first in the text) as Unix seconds:
/// `(not_before, not_after)`; None if unparsable.
pub fn cert_times(cert_pem: &str) -> Option<(i64, i64)> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    Some((cert.validity().not_before.timestamp(), cert.validity().not_after.timestamp()))
}

/// Days until a PEM certificate expires (negative when expired); None if unparsable.
fn days_left(cert_pem: &str) -> Option<i64> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    let not_after = cert.validity().not_after.timestamp();
    Some((not_after - time_now().unix_timestamp()) / 86_400)
}

fn dn(cn: &str, orgs: &[String]) -> DistinguishedName {
    let mut d = DistinguishedName::new();
    for o in orgs {
        d.push(DnType::OrganizationName, o.as_str());
    }
    d.push(DnType::CommonName, cn);
    d
}

fn parse_key(path: &Path, pem: &str) -> Result<KeyPair, PkiError> {
    KeyPair::from_pem(pem).map_err(|e| PkiError::Parse { path: path.display().to_string(), message: e.to_string() })
}

/// The serving certificate's subject alternative names, sorted and de-duplicated.
pub fn serving_sans(cfg: &PkiConfig) -> Vec<String> {
    let mut sans: Vec<String> = vec![
        "localhost".into(),
        "kubernetes".into(),
        "kubernetes.default".into(),
        "kubernetes.default.svc".into(),
        format!("kubernetes.default.svc.{}", cfg.cluster_domain),
        "127.0.0.1".into(),
        "::1".into(),
        cfg.first_service_ip.to_string(),
    ];
    if !cfg.hostname.is_empty() {
        sans.push(cfg.hostname.clone());
    }
    sans.extend(cfg.node_ips.iter().map(|i| i.to_string()));
    sans.extend(cfg.tls_sans.iter().cloned());
    sans.sort();
    sans.dedup();
    sans
}

fn san_types(sans: &[String]) -> Result<Vec<SanType>, PkiError> {
    sans.iter()
        .map(|s| match s.parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => s.as_str().try_into().map(SanType::DnsName).map_err(PkiError::Cert),
        })
        .collect()
}

/// Loads the PKI from `server_dir`, creating or renewing what is missing or stale.
pub fn load_or_create(cfg: &PkiConfig) -> Result<ServerPki, PkiError> {
    let dir = cfg.server_dir.join("tls");
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let (ca_crt, ca_key) = (dir.join("server-ca.crt"), dir.join("server-ca.key"));

    let (ca_pem, ca_key_pem) = match (read_opt(&ca_crt)?, read_opt(&ca_key)?) {
        (Some(c), Some(k)) => (c, k),
        _ => {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::default();
            params.distinguished_name = dn(&format!("skiff-server-ca@{}", time_now().unix_timestamp()), &[]);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages =
                vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
            validity(&mut params, CA_VALIDITY_DAYS);
            let cert = params.self_signed(&key)?;
            let (c, k) = (cert.pem(), key.serialize_pem());
            write_file(&ca_key, k.as_bytes(), 0o600)?;
            write_file(&ca_crt, c.as_bytes(), 0o644)?;
            (c, k)
        }
    };
    let issuer_key = parse_key(&ca_key, &ca_key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, issuer_key)
        .map_err(|e| PkiError::Parse { path: ca_crt.display().to_string(), message: e.to_string() })?;

    // Serving certificate: re-issued when its names change or it nears expiry.
    let sans = serving_sans(cfg);
    let (srv_crt, srv_key, srv_sans) = (
        dir.join("serving-kube-apiserver.crt"),
        dir.join("serving-kube-apiserver.key"),
        dir.join("serving-kube-apiserver.sans"),
    );
    let wanted = sans.join("\n");
    let (serving_cert, serving_key_pem) = match (read_opt(&srv_crt)?, read_opt(&srv_key)?, read_opt(&srv_sans)?) {
        (Some(c), Some(k), Some(s)) if s == wanted && days_left(&c).is_some_and(|d| d > RENEW_BEFORE_DAYS) => (c, k),
        _ => {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::default();
            params.distinguished_name = dn("kube-apiserver", &[]);
            params.subject_alt_names = san_types(&sans)?;
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            validity(&mut params, LEAF_VALIDITY_DAYS);
            let cert = params.signed_by(&key, &issuer)?;
            let (c, k) = (cert.pem(), key.serialize_pem());
            write_file(&srv_key, k.as_bytes(), 0o600)?;
            write_file(&srv_crt, c.as_bytes(), 0o644)?;
            write_file(&srv_sans, wanted.as_bytes(), 0o644)?;
            (c, k)
        }
    };

    let (adm_crt, adm_key) = (dir.join("client-admin.crt"), dir.join("client-admin.key"));
    let (admin_cert_pem, admin_key_pem) = match (read_opt(&adm_crt)?, read_opt(&adm_key)?) {
        (Some(c), Some(k)) if days_left(&c).is_some_and(|d| d > RENEW_BEFORE_DAYS) => (c, k),
        _ => {
            let (c, k) = issue(&issuer, "system:admin", &["system:masters".to_string()], LEAF_VALIDITY_DAYS)?;
            write_file(&adm_key, k.as_bytes(), 0o600)?;
            write_file(&adm_crt, c.as_bytes(), 0o644)?;
            (c, k)
        }
    };

    let (kc_crt, kc_key) =
        (dir.join("client-kube-apiserver-kubelet.crt"), dir.join("client-kube-apiserver-kubelet.key"));
    let (kubelet_client_cert_pem, kubelet_client_key_pem) = match (read_opt(&kc_crt)?, read_opt(&kc_key)?) {
        (Some(c), Some(k)) if days_left(&c).is_some_and(|d| d > RENEW_BEFORE_DAYS) => (c, k),
        _ => {
            let (c, k) = issue(&issuer, KUBELET_CLIENT_CN, &["system:masters".to_string()], LEAF_VALIDITY_DAYS)?;
            write_file(&kc_key, k.as_bytes(), 0o600)?;
            write_file(&kc_crt, c.as_bytes(), 0o644)?;
            (c, k)
        }
    };

    let sa = ServiceAccountKey::load_or_create(&dir.join("service.key"), &dir.join("service.pub"))?;
    let token = token::load_or_create(&cfg.server_dir.join("token"), &ca_pem, cfg.token.as_deref())?;
    let agent_token = token::agent_token(&cfg.server_dir.join("agent-token"), &ca_pem, cfg.agent_token.as_deref())?;

    Ok(ServerPki {
        serving_chain_pem: format!("{serving_cert}{ca_pem}"),
        ca_pem,
        ca_key_pem,
        serving_key_pem,
        admin_cert_pem,
        admin_key_pem,
        kubelet_client_cert_pem,
        kubelet_client_key_pem,
        token,
        agent_token,
        sa,
    })
}

fn issue(issuer: &Issuer<'_, KeyPair>, cn: &str, orgs: &[String], days: i64) -> Result<(String, String), PkiError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(cn, orgs);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    validity(&mut params, days);
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A kubelet's serving certificate and key, as PEM.
#[derive(Debug, Clone)]
pub struct KubeletServing {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Loads or creates a kubelet's serving certificate in `dir` (`serving-kubelet.crt` and
/// `.key`) for `sans` (the node's name and addresses): signed by the cluster CA when the
/// server's PKI is at hand, else self-signed, as upstream's kubelet does without a
/// certificate of its own. Re-issued when the names or the signer change, or expiry nears.
pub fn kubelet_serving(dir: &Path, sans: &[String], signer: Option<&ServerPki>) -> Result<KubeletServing, PkiError> {
    let (crt, key, names) =
        (dir.join("serving-kubelet.crt"), dir.join("serving-kubelet.key"), dir.join("serving-kubelet.sans"));
    let mut sans = sans.to_vec();
    sans.sort();
    sans.dedup();
    let by = match signer {
        Some(p) => format!("ca {}", token::ca_hash(&p.ca_pem)),
        None => "self".to_string(),
    };
    let wanted = format!("{by}\n{}", sans.join("\n"));
    if let (Some(c), Some(k), Some(s)) = (read_opt(&crt)?, read_opt(&key)?, read_opt(&names)?)
        && s == wanted
        && days_left(&c).is_some_and(|d| d > RENEW_BEFORE_DAYS)
    {
        return Ok(KubeletServing { cert_pem: c, key_pem: k });
    }
    let leaf = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let host = sans.iter().find(|s| s.parse::<IpAddr>().is_err()).cloned().unwrap_or_else(|| "kubelet".into());
    params.subject_alt_names = san_types(&sans)?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    validity(&mut params, LEAF_VALIDITY_DAYS);
    let cert_pem = match signer {
        Some(p) => {
            params.distinguished_name = dn(&host, &[]);
            let issuer = Issuer::from_ca_cert_pem(&p.ca_pem, KeyPair::from_pem(&p.ca_key_pem)?)?;
            format!("{}{}", params.signed_by(&leaf, &issuer)?.pem(), p.ca_pem)
        }
        None => {
            params.distinguished_name = dn(&format!("{host}@{}", time_now().unix_timestamp()), &[]);
            params.self_signed(&leaf)?.pem()
        }
    };
    let key_pem = leaf.serialize_pem();
    write_file(&key, key_pem.as_bytes(), 0o600)?;
    write_file(&crt, cert_pem.as_bytes(), 0o644)?;
    write_file(&names, wanted.as_bytes(), 0o644)?;
    Ok(KubeletServing { cert_pem, key_pem })
}

impl ServerPki {
    /// Issues a client certificate signed by the cluster CA.
    pub fn issue_client_cert(
        &self,
        cn: &str,
        orgs: &[String],
        valid_for: Duration,
    ) -> Result<(String, String), PkiError> {
        let key = KeyPair::from_pem(&self.ca_key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&self.ca_pem, key)?;
        let days = (valid_for.as_secs() / 86_400).max(1) as i64;
        issue(&issuer, cn, orgs, days)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &Path) -> PkiConfig {
        PkiConfig {
            server_dir: dir.to_path_buf(),
            hostname: "box1".into(),
            node_ips: vec!["192.168.1.10".parse().unwrap()],
            first_service_ip: "10.43.0.1".parse().unwrap(),
            cluster_domain: "cluster.local".into(),
            tls_sans: vec![],
            token: None,
            agent_token: None,
        }
    }

    #[test]
    fn kubelet_serving_signed_or_self_signed_and_kept() {
        let d = tempfile::tempdir().unwrap();
        let pki = load_or_create(&cfg(d.path())).unwrap();
        let agent = d.path().join("agent");
        let sans = vec!["box1".to_string(), "192.168.1.10".to_string()];
        let a = kubelet_serving(&agent, &sans, Some(&pki)).unwrap();
        assert!(a.cert_pem.ends_with(&pki.ca_pem), "the chain ends with the CA");
        let again = kubelet_serving(&agent, &sans, Some(&pki)).unwrap();
        assert_eq!(a.cert_pem, again.cert_pem, "kept across starts");
        crate::pki::kubelet_serving_tls_config(ServingCert::new(&a.cert_pem, &a.key_pem).unwrap(), &pki.ca_pem)
            .unwrap();
        let own = kubelet_serving(&agent, &sans, None).unwrap();
        assert_ne!(own.cert_pem, a.cert_pem, "a new signer re-issues");
        let (_, pem) = x509_parser::pem::parse_x509_pem(own.cert_pem.as_bytes()).unwrap();
        let cert = pem.parse_x509().unwrap();
        assert_eq!(cert.subject(), cert.issuer(), "self-signed");
        let renamed = kubelet_serving(&agent, &["box2".to_string()], None).unwrap();
        assert_ne!(renamed.cert_pem, own.cert_pem, "new names re-issue");
    }

    #[test]
    fn created_once_reused_and_reissued_on_new_san() {
        let d = tempfile::tempdir().unwrap();
        let a = load_or_create(&cfg(d.path())).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.path().join("tls/server-ca.key")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = load_or_create(&cfg(d.path())).unwrap();
        assert_eq!(a.ca_pem, b.ca_pem);
        assert_eq!(a.serving_chain_pem, b.serving_chain_pem);
        assert_eq!(a.token, b.token);
        let mut c2 = cfg(d.path());
        c2.tls_sans.push("skiff.example".into());
        let c = load_or_create(&c2).unwrap();
        assert_eq!(a.ca_pem, c.ca_pem);
        assert_ne!(a.serving_chain_pem, c.serving_chain_pem);
        assert_eq!(a.token, c.token);
        let id = identity_from_cert(&pem_der(&a.admin_cert_pem)).unwrap();
        assert_eq!((id.user.as_str(), id.groups.clone()), ("system:admin", vec!["system:masters".to_string()]));
        assert!(a.token.starts_with("K10"));
        assert_eq!(a.kubelet_client_cert_pem, b.kubelet_client_cert_pem, "kept across starts");
        let id = identity_from_cert(&pem_der(&a.kubelet_client_cert_pem)).unwrap();
        assert_eq!((id.user.as_str(), id.groups), (KUBELET_CLIENT_CN, vec!["system:masters".to_string()]));
        let mode =
            std::fs::metadata(d.path().join("tls/client-kube-apiserver-kubelet.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let t = parse_token(&a.token).unwrap();
        let hash = ring::digest::digest(&ring::digest::SHA256, a.ca_pem.as_bytes());
        assert_eq!(t.ca_hash.unwrap(), hex(hash.as_ref()));
    }

    fn pem_der(pem: &str) -> Vec<u8> {
        let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        p.contents
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}
