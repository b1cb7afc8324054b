//! Joining a cluster with a token (TLS bootstrap) and keeping the node's certificates fresh.
//!
//! Start at [`join`]: with node credentials from an earlier join in
//! `<data-dir>/agent/kubelet.kubeconfig` it uses them and needs no token; otherwise it fetches
//! the cluster CA from `/cacerts` ([`cacerts`]), refuses it unless its SHA-256 is the token's
//! `K10<hash>` (a token without the pin is trusted on first use, with a warning), and only
//! then sends the token: a CertificateSigningRequest for a key generated here ([`csr`]) with
//! `CN=system:node:<name>`, `O=system:nodes`, which the server approves for a valid token and
//! a node name this box owns (its node password, `<data-dir>/agent/node-password`). With the
//! node's client certificate it asks for the kubelet serving certificate the same way. An
//! unreachable server is retried with capped exponential backoff. [`Renewer`] asks for new
//! certificates when 80% of a lifetime has passed and swaps them in while the agent runs.
//!
//! Invariants: no credential leaves the box before the CA matches the pin; private keys are
//! generated here and only ever written to this box's disk (mode 0600), never sent.

pub mod cacerts;
pub mod csr;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine;
use tokio_util::sync::CancellationToken;

use crate::pki::csr::{
    KUBE_PROXY_USER, NODE_USER_PREFIX, NODES_GROUP, SIGNER_APISERVER_CLIENT, SIGNER_KUBELET_CLIENT,
    SIGNER_KUBELET_SERVING,
};
use crate::pki::{PkiError, ServingCert};

/// Why the node could not join.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(
        "failed to validate token: token CA hash does not match the Cluster CA certificate hash: {token} != {server}"
    )]
    CaHashMismatch { token: String, server: String },
    #[error("{0}")]
    Token(PkiError),
    #[error("{0}")]
    Pki(PkiError),
    #[error("--server is required to join a cluster (or give --kubeconfig with this node's credentials)")]
    NoServer,
    #[error("{}: {why}, and no --token to join with", path.display())]
    NoCredentials { path: PathBuf, why: &'static str },
    #[error("the server refused the join token (401 Unauthorized)")]
    Refused,
    #[error("the server refused the request: {0}")]
    Rejected(String),
    #[error("certificate request {name} {how}: {message}")]
    NotIssued { name: String, how: String, message: String },
    #[error("cannot reach the server: {0}")]
    Unreachable(String),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cancelled")]
    Cancelled,
}

/// What joining needs.
pub struct Join {
    /// `--server`; may be left out when `kubelet.kubeconfig` names it.
    pub server: Option<String>,
    pub token: Option<String>,
    pub agent_dir: PathBuf,
    pub node_name: String,
    /// The kubelet serving certificate's names (node name, addresses).
    pub serving_names: Vec<String>,
}

/// A joined node: its API client (whose certificate [`Renewer`] replaces), the service proxy's
/// client (`None` when the server issued it no certificate), the cluster CA and the kubelet's
/// serving certificate.
pub struct Joined {
    pub client: kube::Client,
    pub proxy_client: Option<kube::Client>,
    pub ca_pem: String,
    pub serving: Arc<ServingCert>,
    pub renewer: Renewer,
}

/// A node's credentials towards the API server.
#[derive(Debug, Clone)]
struct NodeCreds {
    server: String,
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

/// `<agent dir>/kubelet.kubeconfig`.
pub fn kubeconfig_path(agent_dir: &Path) -> PathBuf {
    agent_dir.join("kubelet.kubeconfig")
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// When to renew a certificate: 80% into its lifetime (upstream's kubelet picks 70-90%).
fn renew_at(cert_pem: &str) -> i64 {
    match crate::pki::cert_times(cert_pem) {
        Some((start, end)) => start + (end - start) * 4 / 5,
        None => now(),
    }
}

fn expired(cert_pem: &str) -> bool {
    crate::pki::cert_times(cert_pem).is_none_or(|(_, end)| end <= now())
}

fn read_kubeconfig(path: &Path) -> Option<NodeCreds> {
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_yaml::Value = serde_yaml::from_str(&text).ok()?;
    let b64 = |v: &serde_yaml::Value| {
        let bytes = base64::engine::general_purpose::STANDARD.decode(v.as_str()?).ok()?;
        String::from_utf8(bytes).ok()
    };
    Some(NodeCreds {
        server: v["clusters"][0]["cluster"]["server"].as_str()?.to_string(),
        ca_pem: b64(&v["clusters"][0]["cluster"]["certificate-authority-data"])?,
        cert_pem: b64(&v["users"][0]["user"]["client-certificate-data"])?,
        key_pem: b64(&v["users"][0]["user"]["client-key-data"])?,
    })
}

fn write_kubeconfig(path: &Path, c: &NodeCreds) -> Result<(), BootstrapError> {
    crate::pki::write_kubeconfig(path, 0o600, &c.server, &c.ca_pem, &c.cert_pem, &c.key_pem, "default")
        .map_err(BootstrapError::Pki)
}

/// The box's node password: generated once, kept in `<agent dir>/node-password` (0600).
fn node_password(agent_dir: &Path) -> Result<String, BootstrapError> {
    let path = agent_dir.join("node-password");
    if let Ok(p) = std::fs::read_to_string(&path)
        && !p.trim().is_empty()
    {
        return Ok(p.trim().to_string());
    }
    let mut b = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .map_err(|_| BootstrapError::Rejected("no randomness available".into()))?;
    let p: String = b.iter().map(|x| format!("{x:02x}")).collect();
    write_private(&path, p.as_bytes())?;
    Ok(p)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), BootstrapError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| BootstrapError::Io { path: dir.to_path_buf(), source })?;
    }
    let tmp = path.with_extension("tmp");
    let io = |source| BootstrapError::Io { path: path.to_path_buf(), source };
    let mut f =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// An API client for `server`, trusting only `ca_pem`, with a bearer token or a certificate.
async fn client_for(server: &str, ca_pem: &str, user: serde_json::Value) -> Result<kube::Client, BootstrapError> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let doc = serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c",
    });
    let bad = |e: &dyn std::fmt::Display| BootstrapError::Rejected(format!("cannot build an API client: {e}"));
    let kc = kube::config::Kubeconfig::from_yaml(&doc.to_string()).map_err(|e| bad(&e))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.map_err(|e| bad(&e))?;
    kube::Client::try_from(config).map_err(|e| bad(&e))
}

async fn cert_client(c: &NodeCreds) -> Result<kube::Client, BootstrapError> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    client_for(
        &c.server,
        &c.ca_pem,
        serde_json::json!({"client-certificate-data": b64(&c.cert_pem), "client-key-data": b64(&c.key_pem)}),
    )
    .await
}

/// Capped exponential backoff that logs once per change between reachable and not.
struct Backoff {
    delay: Duration,
    down: bool,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(10);

    fn new() -> Backoff {
        Backoff { delay: Self::FIRST, down: false }
    }

    async fn failed(&mut self, server: &str, error: &str, cancel: &CancellationToken) -> Result<(), BootstrapError> {
        if !self.down {
            tracing::warn!(%server, %error, "cannot reach the server; retrying with backoff");
            self.down = true;
        }
        tokio::select! {
            _ = cancel.cancelled() => return Err(BootstrapError::Cancelled),
            _ = tokio::time::sleep(self.delay) => {}
        }
        self.delay = (self.delay * 2).min(Self::MAX);
        Ok(())
    }

    fn reached(&mut self, server: &str) {
        if self.down {
            tracing::info!(%server, "the server answers again");
        }
        self.down = false;
        self.delay = Self::FIRST;
    }
}

/// Trades `token` for the node's client certificate (see the module's comment).
async fn bootstrap(
    j: &Join,
    server: &str,
    token: &str,
    cancel: &CancellationToken,
) -> Result<NodeCreds, BootstrapError> {
    let t = crate::pki::parse_token(token).map_err(BootstrapError::Token)?;
    cacerts::endpoint(server).map_err(BootstrapError::Rejected)?;
    if t.ca_hash.is_none() {
        tracing::warn!(
            "the token has no K10<hash>:: prefix: the server's identity was not verified (the CA it sends is trusted as it is)"
        );
    }
    let tls = crate::pki::unverified_server_tls_client().map_err(BootstrapError::Pki)?;
    let mut backoff = Backoff::new();
    let ca_pem = loop {
        match cacerts::fetch(server, tls.clone()).await {
            Ok(ca) => break ca,
            Err(e) => backoff.failed(server, &e.to_string(), cancel).await?,
        }
    };
    backoff.reached(server);
    let got = crate::pki::ca_hash(&ca_pem);
    if let Some(want) = &t.ca_hash
        && *want != got
    {
        return Err(BootstrapError::CaHashMismatch { token: want.clone(), server: got });
    }
    // From here on, TLS is verified against this CA only.
    let client = client_for(server, &ca_pem, serde_json::json!({"token": t.bearer()})).await?;
    let password = node_password(&j.agent_dir)?;
    let cn = format!("{NODE_USER_PREFIX}{}", j.node_name);
    let request = csr::Request {
        generate_name: "node-csr-",
        signer: SIGNER_KUBELET_CLIENT,
        usages: &["digital signature", "client auth"],
        cn: &cn,
        orgs: &[NODES_GROUP.to_string()],
        sans: &[],
        node_password: Some(&password),
    };
    let issued = loop {
        match csr::obtain(&client, &request, cancel).await {
            Ok(i) => break i,
            Err(BootstrapError::Unreachable(e)) => backoff.failed(server, &e, cancel).await?,
            Err(e) => return Err(e),
        }
    };
    tracing::info!(node = %j.node_name, csr = %issued.csr_name, "joined: node client certificate issued");
    Ok(NodeCreds { server: server.to_string(), ca_pem, cert_pem: issued.cert_pem, key_pem: issued.key_pem })
}

/// Joins (or reuses an earlier join's credentials) and obtains the kubelet serving certificate.
pub async fn join(j: Join, cancel: &CancellationToken) -> Result<Joined, BootstrapError> {
    let path = kubeconfig_path(&j.agent_dir);
    let existing = read_kubeconfig(&path);
    let server = match (&j.server, &existing) {
        (Some(s), _) => s.clone(),
        (None, Some(c)) => c.server.clone(),
        (None, None) => return Err(BootstrapError::NoServer),
    };
    let creds = match existing {
        Some(mut c) if !expired(&c.cert_pem) => {
            tracing::info!(file = %path.display(), "using the node credentials of an earlier join");
            c.server = server;
            c
        }
        old => {
            let why = if old.is_some() { "the node's certificate has expired" } else { "no node credentials" };
            let token = j.token.clone().ok_or_else(|| BootstrapError::NoCredentials { path: path.clone(), why })?;
            let c = bootstrap(&j, &server, &token, cancel).await?;
            write_kubeconfig(&path, &c)?;
            c
        }
    };
    let inner = Arc::new(RwLock::new(cert_client(&creds).await?));
    let client = kube::Client::new(Rotating(inner.clone()), "default");
    let (serving_pem, serving_key) = match load_serving(&j) {
        Some(s) => s,
        None => request_serving(&j, &client, cancel).await?,
    };
    let serving = ServingCert::new(&serving_pem, &serving_key).map_err(BootstrapError::Pki)?;
    let ca_pem = creds.ca_pem.clone();
    let proxy = match proxy_credentials(&j, &creds, &client, cancel).await {
        Ok(p) => Some(Rotated { inner: Arc::new(RwLock::new(cert_client(&p).await?)), creds: p }),
        Err(BootstrapError::Cancelled) => return Err(BootstrapError::Cancelled),
        Err(e) => {
            tracing::warn!(error = %e, "no certificate for the service proxy: Services are not served on this node");
            None
        }
    };
    let proxy_client = proxy.as_ref().map(|p| kube::Client::new(Rotating(p.inner.clone()), "default"));
    let renewer = Renewer { j, creds, inner, client: client.clone(), serving: serving.clone(), serving_pem, proxy };
    Ok(Joined { client, proxy_client, ca_pem, serving, renewer })
}

/// `<agent dir>/kubeproxy.kubeconfig`: the service proxy's credentials.
pub fn proxy_kubeconfig_path(agent_dir: &Path) -> PathBuf {
    agent_dir.join("kubeproxy.kubeconfig")
}

/// How long to wait for the service proxy's certificate before the node runs without one (a
/// server that does not approve such requests leaves them pending).
const PROXY_CERT_WAIT: Duration = Duration::from_secs(30);

/// The service proxy's credentials of an earlier start, or new ones asked for as the node.
async fn proxy_credentials(
    j: &Join,
    node: &NodeCreds,
    client: &kube::Client,
    cancel: &CancellationToken,
) -> Result<NodeCreds, BootstrapError> {
    let path = proxy_kubeconfig_path(&j.agent_dir);
    if let Some(c) = read_kubeconfig(&path).filter(|c| renew_at(&c.cert_pem) > now()) {
        return Ok(NodeCreds { server: node.server.clone(), ca_pem: node.ca_pem.clone(), ..c });
    }
    match tokio::time::timeout(PROXY_CERT_WAIT, request_proxy(j, node, client, cancel)).await {
        Ok(r) => r,
        Err(_) => Err(BootstrapError::Rejected(format!(
            "the request for the service proxy's certificate was not issued within {} s",
            PROXY_CERT_WAIT.as_secs()
        ))),
    }
}

async fn request_proxy(
    j: &Join,
    node: &NodeCreds,
    client: &kube::Client,
    cancel: &CancellationToken,
) -> Result<NodeCreds, BootstrapError> {
    let request = csr::Request {
        generate_name: "csr-",
        signer: SIGNER_APISERVER_CLIENT,
        usages: &["digital signature", "client auth"],
        cn: KUBE_PROXY_USER,
        orgs: &[],
        sans: &[],
        node_password: None,
    };
    let issued = csr::obtain(client, &request, cancel).await?;
    let creds = NodeCreds { cert_pem: issued.cert_pem, key_pem: issued.key_pem, ..node.clone() };
    write_kubeconfig(&proxy_kubeconfig_path(&j.agent_dir), &creds)?;
    tracing::info!(csr = %issued.csr_name, "service proxy certificate issued");
    Ok(creds)
}

/// A client certificate in use and the slot its client is swapped in.
struct Rotated {
    creds: NodeCreds,
    inner: Arc<RwLock<kube::Client>>,
}

fn serving_files(j: &Join) -> (PathBuf, PathBuf, PathBuf) {
    let d = &j.agent_dir;
    (d.join("serving-kubelet.crt"), d.join("serving-kubelet.key"), d.join("serving-kubelet.sans"))
}

fn serving_marker(j: &Join) -> String {
    let mut names = j.serving_names.clone();
    names.sort();
    names.dedup();
    format!("csr\n{}", names.join("\n"))
}

/// The serving certificate of an earlier join, if its names are still right and it is valid.
fn load_serving(j: &Join) -> Option<(String, String)> {
    let (crt, key, sans) = serving_files(j);
    let (c, k, s) =
        (std::fs::read_to_string(crt).ok()?, std::fs::read_to_string(key).ok()?, std::fs::read_to_string(sans).ok()?);
    (s == serving_marker(j) && renew_at(&c) > now()).then_some((c, k))
}

async fn request_serving(
    j: &Join,
    client: &kube::Client,
    cancel: &CancellationToken,
) -> Result<(String, String), BootstrapError> {
    let cn = format!("{NODE_USER_PREFIX}{}", j.node_name);
    let mut names = j.serving_names.clone();
    names.sort();
    names.dedup();
    let request = csr::Request {
        generate_name: "csr-",
        signer: SIGNER_KUBELET_SERVING,
        usages: &["digital signature", "server auth"],
        cn: &cn,
        orgs: &[NODES_GROUP.to_string()],
        sans: &names,
        node_password: None,
    };
    let mut backoff = Backoff::new();
    let issued = loop {
        match csr::obtain(client, &request, cancel).await {
            Ok(i) => break i,
            Err(BootstrapError::Unreachable(e)) => backoff.failed("the API server", &e, cancel).await?,
            Err(e) => return Err(e),
        }
    };
    let (crt, key, sans) = serving_files(j);
    write_private(&key, issued.key_pem.as_bytes())?;
    write_private(&crt, issued.cert_pem.as_bytes())?;
    write_private(&sans, serving_marker(j).as_bytes())?;
    tracing::info!(csr = %issued.csr_name, "kubelet serving certificate issued");
    Ok((issued.cert_pem, issued.key_pem))
}

/// Renews the node's client and serving certificates before they expire.
pub struct Renewer {
    j: Join,
    creds: NodeCreds,
    inner: Arc<RwLock<kube::Client>>,
    client: kube::Client,
    serving: Arc<ServingCert>,
    serving_pem: String,
    proxy: Option<Rotated>,
}

impl Renewer {
    /// Runs until `cancel` fires.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut retry = Duration::from_secs(1);
        loop {
            let mut next = renew_at(&self.creds.cert_pem).min(renew_at(&self.serving_pem));
            if let Some(p) = &self.proxy {
                next = next.min(renew_at(&p.creds.cert_pem));
            }
            let wait = Duration::from_secs((next - now()).max(0) as u64);
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            match self.renew_due(&cancel).await {
                Ok(()) => retry = Duration::from_secs(1),
                Err(BootstrapError::Cancelled) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot renew the node's certificates; retrying");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(retry) => {}
                    }
                    retry = (retry * 2).min(Duration::from_secs(60));
                }
            }
        }
    }

    async fn renew_due(&mut self, cancel: &CancellationToken) -> Result<(), BootstrapError> {
        if renew_at(&self.creds.cert_pem) <= now() {
            let cn = format!("{NODE_USER_PREFIX}{}", self.j.node_name);
            let request = csr::Request {
                generate_name: "csr-",
                signer: SIGNER_KUBELET_CLIENT,
                usages: &["digital signature", "client auth"],
                cn: &cn,
                orgs: &[NODES_GROUP.to_string()],
                sans: &[],
                node_password: None,
            };
            let issued = csr::obtain(&self.client, &request, cancel).await?;
            let creds = NodeCreds { cert_pem: issued.cert_pem, key_pem: issued.key_pem, ..self.creds.clone() };
            write_kubeconfig(&kubeconfig_path(&self.j.agent_dir), &creds)?;
            let fresh = cert_client(&creds).await?;
            *self.inner.write().unwrap_or_else(|p| p.into_inner()) = fresh;
            self.creds = creds;
            tracing::info!(csr = %issued.csr_name, "node client certificate renewed");
        }
        if renew_at(&self.serving_pem) <= now() {
            let (cert, key) = request_serving(&self.j, &self.client, cancel).await?;
            self.serving.replace(&cert, &key).map_err(BootstrapError::Pki)?;
            self.serving_pem = cert;
            tracing::info!("kubelet serving certificate renewed");
        }
        if let Some(p) = &mut self.proxy
            && renew_at(&p.creds.cert_pem) <= now()
        {
            let creds = request_proxy(&self.j, &self.creds, &self.client, cancel).await?;
            *p.inner.write().unwrap_or_else(|e| e.into_inner()) = cert_client(&creds).await?;
            p.creds = creds;
            tracing::info!("service proxy certificate renewed");
        }
        Ok(())
    }
}

/// A tower service that sends through the current node client, so renewal can swap the
/// certificate under every component that holds the agent's client.
#[derive(Clone)]
struct Rotating(Arc<RwLock<kube::Client>>);

impl tower::Service<http::Request<kube::client::Body>> for Rotating {
    type Response = http::Response<kube::client::Body>;
    type Error = kube::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, kube::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), kube::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<kube::client::Body>) -> Self::Future {
        let client = self.0.read().unwrap_or_else(|p| p.into_inner()).clone();
        Box::pin(async move { client.send(req).await })
    }
}
