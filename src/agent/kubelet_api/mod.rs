//! The kubelet's HTTPS API (port 10250): what the API server reaches on a node for
//! `kubectl logs`, `exec`, `attach`, `port-forward` and node proxying.
//!
//! Its door to the rest of the agent is [`PodSource`], which the pod workers implement:
//!
//! ```text
//! serve(Config { listen, serving, client_ca_pem, node_name, nodefs },
//!       cri: CriClient, pods: Arc<dyn PodSource>, cancel) -> Result<(), KubeletApiError>
//! ```
//!
//! Paths and query parameters are upstream's kubelet's: `/healthz`, `/pods`, `/stats/summary`,
//! `/containerLogs/{ns}/{pod}/{container}`, `/exec/{ns}/{pod}/{container}`,
//! `/attach/{ns}/{pod}/{container}`, `/portForward/{ns}/{pod}` (GET and POST). Logs are read
//! from the CRI log files (`logs.rs`); exec, attach and port-forward ask CRI for a URL on
//! containerd's streaming server and splice the client's upgraded connection to it
//! (`streaming.rs`), whatever the protocol (SPDY or WebSocket).
//!
//! Only client certificates that chain to `client_ca_pem` complete a handshake with one; a
//! client without one may present a bearer token. Who may do what is upstream's webhook
//! authorization (`auth.rs`): the API server's identity (`CN=kube-apiserver-kubelet-client`)
//! and `O=system:masters` may do everything, every other user what a SubjectAccessReview on
//! this Node's `proxy`, `stats`, `metrics` or `log` subresource allows; no user 401, a denied
//! one 403.
//!
//! It must not: talk to the API server itself (the reviews are the agent's [`Reviews`]), keep
//! state about pods (the agent owns that), or interpret the streaming protocols it splices.

mod auth;
pub use auth::{Reviews, User};
mod logs;
pub use logs::log_tail;
mod stats;
mod streaming;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::cri::CriClient;
use crate::pki::ClientIdentity;

/// What the kubelet API needs from the agent about the pods it runs.
pub trait PodSource: Send + Sync + 'static {
    /// The pods bound to this node as the agent last saw them (for `/pods`).
    fn pods(&self) -> Vec<k8s_openapi::api::core::v1::Pod>;
    /// A container of a pod on this node, by namespace, pod name and container name.
    fn container(&self, namespace: &str, pod: &str, container: &str) -> Option<ContainerRef>;
    /// The CRI pod sandbox id of a pod on this node (for port-forward).
    fn sandbox(&self, namespace: &str, pod: &str) -> Option<String>;
}

/// One container instance as the agent knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRef {
    /// CRI container id of the current instance.
    pub id: String,
    /// Its CRI log file (absolute).
    pub log_path: std::path::PathBuf,
    /// The previous instance's log, if kept.
    pub previous_log_path: Option<std::path::PathBuf>,
    pub running: bool,
}

/// Where and as whom the kubelet API serves.
#[derive(Clone)]
pub struct Config {
    /// Default `0.0.0.0:10250`.
    pub listen: SocketAddr,
    /// The serving certificate; renewal replaces it in place.
    pub serving: std::sync::Arc<crate::pki::ServingCert>,
    /// Client certificates must chain to this CA (the cluster CA).
    pub client_ca_pem: String,
    /// The node's name, for `/stats/summary`.
    pub node_name: String,
    /// The agent's data dir: `/stats/summary` reports its file system as the node's.
    pub nodefs: std::path::PathBuf,
    /// TokenReviews and SubjectAccessReviews for users other than the API server (`auth.rs`).
    pub reviews: Arc<dyn Reviews>,
}

/// The kubelet API's default port.
pub const DEFAULT_PORT: u16 = 10250;

/// Errors that end the kubelet API server.
#[derive(Debug, thiserror::Error)]
pub enum KubeletApiError {
    #[error("kubelet API: cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("kubelet API: {0}")]
    Tls(#[from] crate::pki::PkiError),
}

/// The body of every kubelet API response.
pub(crate) type Body = BoxBody<Bytes, Infallible>;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the kubelet API until `cancel` fires.
pub async fn serve(
    cfg: Config,
    cri: CriClient,
    pods: Arc<dyn PodSource>,
    cancel: CancellationToken,
) -> Result<(), KubeletApiError> {
    let tls = crate::pki::kubelet_serving_tls_config(cfg.serving.clone(), &cfg.client_ca_pem)?;
    let listener =
        TcpListener::bind(cfg.listen).await.map_err(|source| KubeletApiError::Listen { addr: cfg.listen, source })?;
    tracing::info!(addr = %cfg.listen, "kubelet API listening");
    let acceptor = TlsAcceptor::from(tls);
    let state = Arc::new(State {
        cri,
        pods,
        cancel: cancel.clone(),
        node_name: cfg.node_name,
        nodefs: cfg.nodefs,
        cpu: Default::default(),
        gate: auth::Gate::new(cfg.reviews),
    });
    loop {
        let (tcp, peer) = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "kubelet API: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let state = state.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "kubelet API: TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let identity = {
                let (_, conn) = tls.get_ref();
                conn.peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| crate::pki::identity_from_cert(c.as_ref()).ok())
            };
            let cancel = state.cancel.clone();
            let svc = service_fn(move |req| {
                let state = state.clone();
                let identity = identity.clone();
                async move {
                    let (method, path) = (req.method().clone(), req.uri().path().to_string());
                    let resp = state.handle(identity.as_ref(), req).await;
                    tracing::debug!(%peer, %method, %path, status = resp.status().as_u16(), "kubelet API request");
                    Ok::<_, Infallible>(resp)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .serve_connection(TokioIo::new(tls), svc)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "kubelet API connection ended with an error");
                },
                _ = cancel.cancelled() => conn.as_mut().graceful_shutdown(),
            }
        });
    }
}

struct State {
    cri: CriClient,
    pods: Arc<dyn PodSource>,
    cancel: CancellationToken,
    node_name: String,
    nodefs: std::path::PathBuf,
    cpu: stats::CpuSampler,
    gate: auth::Gate,
}

/// A plain-text response, as upstream's kubelet writes its errors.
pub(crate) fn text(status: u16, body: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body.into())).boxed());
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

/// A JSON response.
fn json_response(v: &serde_json::Value) -> Response<Body> {
    let mut r = text(200, serde_json::to_string(v).unwrap_or_default());
    r.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    r
}

impl State {
    async fn handle(&self, identity: Option<&ClientIdentity>, mut req: Request<Incoming>) -> Response<Body> {
        let user = match identity {
            Some(id) => User::from(id),
            None => match crate::pki::bearer_token(req.headers()) {
                Some(token) => match self.gate.authenticate(token, std::time::Instant::now()).await {
                    Some(user) => user,
                    None => return text(401, "Unauthorized"),
                },
                None => return text(401, "Unauthorized"),
            },
        };
        let path = req.uri().path().to_string();
        let (verb, sub) = (auth::verb(req.method()), auth::subresource(&path));
        match self.gate.authorize(&user, verb, &self.node_name, sub, std::time::Instant::now()).await {
            Ok(true) => {}
            Ok(false) => {
                return text(
                    403,
                    format!("Forbidden (user={}, verb={verb}, resource=nodes, subresource(s)=[{sub}])", user.name),
                );
            }
            Err(e) => {
                let msg =
                    format!("Authorization error (user={}, verb={verb}, resource=nodes, subresource={sub})", user.name);
                tracing::warn!(error = %e, "{msg}");
                return text(500, msg);
            }
        }
        let segs: Vec<String> = path.trim_start_matches('/').split('/').map(percent_decode).collect();
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        let method = req.method().clone();
        let is_get = method == Method::GET || method == Method::HEAD;
        let stream_method = is_get || method == Method::POST;
        match segs.as_slice() {
            ["healthz"] if is_get => text(200, "ok"),
            ["pods"] | ["pods", ""] if is_get => self.pod_list(),
            ["stats", "summary"] | ["stats", "summary", ""] if is_get => {
                let summary =
                    stats::summary(&self.node_name, &self.nodefs, &self.cri, self.pods.as_ref(), &self.cpu).await;
                json_response(&summary)
            }
            ["containerLogs", ns, pod, container] if is_get => {
                logs::container_logs(&self.cri, self.pods.as_ref(), ns, pod, container, req.uri().query(), &self.cancel)
                    .await
            }
            ["exec", ns, pod, container] | ["exec", ns, pod, _, container] if stream_method => {
                let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
                streaming::exec(self, &mut req, &ns, &pod, &container, false).await
            }
            ["attach", ns, pod, container] | ["attach", ns, pod, _, container] if stream_method => {
                let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
                streaming::exec(self, &mut req, &ns, &pod, &container, true).await
            }
            ["portForward", ns, pod] | ["portForward", ns, pod, _] if stream_method => {
                let (ns, pod) = (ns.to_string(), pod.to_string());
                streaming::port_forward(self, &mut req, &ns, &pod).await
            }
            _ => text(404, "404 page not found"),
        }
    }

    fn pod_list(&self) -> Response<Body> {
        json_response(&serde_json::json!({
            "kind": "PodList",
            "apiVersion": "v1",
            "metadata": {},
            "items": self.pods.pods(),
        }))
    }

    fn pod_exists(&self, namespace: &str, pod: &str) -> bool {
        self.pods
            .pods()
            .iter()
            .any(|p| p.metadata.namespace.as_deref() == Some(namespace) && p.metadata.name.as_deref() == Some(pod))
    }
}

/// Decodes `%XX` escapes of a path segment; invalid escapes stay as they are.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(v) = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Query parameters in order, repeated keys kept (`command` repeats).
pub(crate) fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query.map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default()
}

/// The first value of a query parameter.
pub(crate) fn query_get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_queries() {
        assert_eq!(percent_decode("a%2Fb%zz%4"), "a/b%zz%4");
        let q = query_pairs(Some("command=sh&command=-c&command=echo+hi&stdin=1"));
        assert_eq!(q.iter().filter(|(k, _)| k == "command").count(), 3);
        assert_eq!(query_get(&q, "stdin"), Some("1"));
    }
}
