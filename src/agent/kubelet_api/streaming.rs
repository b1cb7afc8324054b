//! exec, attach and port-forward: CRI hands out a URL on containerd's streaming server
//! (plain HTTP on 127.0.0.1), and the client's upgrade request is replayed there; once
//! containerd switches protocols the two connections are spliced byte for byte. Nothing here
//! reads SPDY or WebSocket frames, so every protocol containerd speaks passes through.

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use super::{Body, State, query_get, query_pairs, text};
use crate::cri::proto::{AttachRequest, ExecRequest, PortForwardRequest};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Error bodies from containerd are short; more is cut off.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Upstream's boolean query values (`strconv.ParseBool` plus the `1` the API server sends).
fn truthy(v: Option<&str>) -> bool {
    matches!(v, Some("1" | "t" | "T" | "true" | "TRUE" | "True"))
}

/// A CRI error as upstream's streaming `WriteError` answers it.
fn cri_error(status: tonic::Status) -> Response<Body> {
    let code = match status.code() {
        tonic::Code::NotFound => 404,
        tonic::Code::ResourceExhausted => 429,
        _ => 500,
    };
    text(code, format!("rpc error: code = {:?} desc = {}", status.code(), status.message()))
}

/// `/exec/...` and `/attach/...`.
pub(super) async fn exec(
    state: &State,
    req: &mut Request<Incoming>,
    namespace: &str,
    pod: &str,
    container: &str,
    attach: bool,
) -> Response<Body> {
    let pairs = query_pairs(req.uri().query());
    // The kubelet's names are input/output/error; stdin/stdout/stderr are accepted too.
    let flag = |a: &str, b: &str| truthy(query_get(&pairs, a)) || truthy(query_get(&pairs, b));
    let tty = flag("tty", "tty");
    let stdin = flag("input", "stdin");
    let stdout = flag("output", "stdout");
    // As upstream: a terminal merges stderr into stdout.
    let stderr = flag("error", "stderr") && !tty;
    if !stdin && !stdout && !stderr {
        return text(400, "you must specify at least 1 of stdin, stdout, stderr");
    }
    if !state.pod_exists(namespace, pod) {
        return text(404, "pod does not exist");
    }
    let Some(c) = state.pods.container(namespace, pod, container) else {
        return text(500, format!("container not found ({container:?})"));
    };
    let mut runtime = state.cri.runtime();
    let url = if attach {
        runtime
            .attach(AttachRequest { container_id: c.id, stdin, tty, stdout, stderr })
            .await
            .map(|r| r.into_inner().url)
    } else {
        let cmd: Vec<String> = pairs.iter().filter(|(k, _)| k == "command").map(|(_, v)| v.clone()).collect();
        runtime
            .exec(ExecRequest { container_id: c.id, cmd, tty, stdin, stdout, stderr })
            .await
            .map(|r| r.into_inner().url)
    };
    match url {
        Ok(url) => proxy_upgrade(req, &url, &state.cancel).await,
        Err(status) => cri_error(status),
    }
}

/// `/portForward/{ns}/{pod}`.
pub(super) async fn port_forward(
    state: &State,
    req: &mut Request<Incoming>,
    namespace: &str,
    pod: &str,
) -> Response<Body> {
    if !state.pod_exists(namespace, pod) {
        return text(404, "pod does not exist");
    }
    let Some(sandbox) = state.pods.sandbox(namespace, pod) else {
        return text(500, format!("pod not found (\"{pod}_{namespace}\")"));
    };
    let pairs = query_pairs(req.uri().query());
    let port: Vec<i32> = pairs
        .iter()
        .filter(|(k, _)| k == "port")
        .flat_map(|(_, v)| v.split(',').filter_map(|p| p.trim().parse().ok()).collect::<Vec<i32>>())
        .collect();
    let url = state
        .cri
        .runtime()
        .port_forward(PortForwardRequest { pod_sandbox_id: sandbox, port })
        .await
        .map(|r| r.into_inner().url);
    match url {
        Ok(url) => proxy_upgrade(req, &url, &state.cancel).await,
        Err(status) => cri_error(status),
    }
}

/// Replays the client's upgrade request on containerd's streaming server `url` and, when it
/// switches protocols, splices the two connections until either side closes or `cancel`
/// fires. Any other answer is relayed as it is.
async fn proxy_upgrade(req: &mut Request<Incoming>, url: &str, cancel: &CancellationToken) -> Response<Body> {
    let uri: http::Uri = match url.parse() {
        Ok(u) => u,
        Err(e) => return text(500, format!("the runtime returned an invalid streaming URL {url:?}: {e}")),
    };
    if uri.scheme_str() != Some("http") {
        // containerd serves TLS streaming only when configured to; skiff never configures it.
        return text(500, format!("unsupported streaming URL scheme in {url:?}"));
    }
    let Some(authority) = uri.authority().cloned() else {
        return text(500, format!("the runtime returned a streaming URL without a host: {url:?}"));
    };
    let port = authority.port_u16().unwrap_or(80);
    let tcp =
        match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect((authority.host(), port))).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return text(500, format!("error dialing backend: {e}")),
            Err(_) => return text(500, "error dialing backend: timed out"),
        };
    let _ = tcp.set_nodelay(true);
    let (mut sender, conn) = match hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(tcp)).await {
        Ok(x) => x,
        Err(e) => return text(500, format!("error dialing backend: {e}")),
    };
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "streaming server connection ended with an error");
        }
    });
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").to_string();
    let mut backend_req = Request::builder().method(req.method().clone()).uri(path);
    for (name, value) in req.headers() {
        if name != header::HOST && name != header::CONTENT_LENGTH && name != header::TRANSFER_ENCODING {
            backend_req = backend_req.header(name, value);
        }
    }
    let backend_req = match backend_req.header(header::HOST, authority.as_str()).body(Empty::new()) {
        Ok(r) => r,
        Err(e) => return text(500, e.to_string()),
    };
    let client_upgrade = hyper::upgrade::on(&mut *req);
    let mut resp = match sender.send_request(backend_req).await {
        Ok(r) => r,
        Err(e) => return text(500, format!("error proxying to the runtime: {e}")),
    };
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = resp.status();
        let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
        let body = Limited::new(resp.into_body(), MAX_ERROR_BODY).collect().await.map(|b| b.to_bytes());
        let mut out = Response::new(Full::new(body.unwrap_or_default()).boxed());
        *out.status_mut() = status;
        if let Some(ct) = content_type {
            out.headers_mut().insert(header::CONTENT_TYPE, ct);
        }
        return out;
    }
    let mut out = Response::new(Empty::new().boxed());
    *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *out.headers_mut() = resp.headers().clone();
    let backend_upgrade = hyper::upgrade::on(&mut resp);
    let cancel = cancel.clone();
    tokio::spawn(async move {
        let (client, backend) = match tokio::try_join!(client_upgrade, backend_upgrade) {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "stream upgrade failed");
                return;
            }
        };
        let (mut client, mut backend) = (TokioIo::new(client), TokioIo::new(backend));
        tokio::select! {
            r = tokio::io::copy_bidirectional(&mut client, &mut backend) => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "stream ended with an error");
                }
            }
            _ = cancel.cancelled() => {}
        }
    });
    out
}
