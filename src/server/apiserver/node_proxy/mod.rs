//! The API server's way to kubelets: `pods/log`, `pods/exec`, `pods/attach`,
//! `pods/portforward` and `nodes/proxy` are validated here as upstream's `LogLocation`,
//! `streamLocation` and `PortForwardLocation` do, then forwarded to the kubelet of the pod's
//! node over HTTPS with the API server's kubelet client certificate.
//!
//! The kubelet's address is the Node's `InternalIP` (else its `Hostname`) and
//! `status.daemonEndpoints.kubeletEndpoint.Port` (10250 when unset). The kubelet's serving
//! certificate is not verified yet, as upstream without `--kubelet-certificate-authority`.
//!
//! Streams: SPDY upgrades pass through byte for byte. WebSocket clients (kubectl 1.30+ tries
//! them first) are translated, as upstream's API server does: exec and attach over
//! `v5.channel.k8s.io` into an SPDY session with the kubelet (`translate.rs`, `spdy.rs`), and
//! port-forward's SPDY tunnelled in WebSocket (`SPDY/3.1+portforward.k8s.io`) unwrapped into
//! a plain SPDY upgrade (`websocket.rs` framing). Other WebSocket protocols pass through to
//! the kubelet.
//!
//! It must not: keep state per node, read streams other than to translate them, or forward
//! the client's own credentials to the kubelet.

mod spdy;
mod translate;
mod websocket;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::api::registry;
use crate::api::status::ApiError;

use super::handlers::Call;
use super::response::{self, Body};

const DEFAULT_KUBELET_PORT: u16 = 10250;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Upstream reads at most this much of a kubelet's error answer.
const MAX_ERROR_BODY: usize = 50 * 1024;

/// The API server's TLS identity towards kubelets.
pub struct KubeletClient {
    tls: Arc<rustls::ClientConfig>,
}

impl KubeletClient {
    /// A client presenting the given certificate (the API server's kubelet client).
    pub fn new(cert_pem: &str, key_pem: &str) -> Result<KubeletClient, crate::pki::PkiError> {
        Ok(KubeletClient { tls: crate::pki::kubelet_client_tls_config(cert_pem, key_pem)? })
    }

    async fn connect(&self, target: &Target) -> Result<TlsStream<TcpStream>, ApiError> {
        let dial = |e: &dyn std::fmt::Display| ApiError::internal(format!("error dialing backend: {e}"));
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((target.host.as_str(), target.port)))
            .await
            .map_err(|_| dial(&format!("dial tcp {}: i/o timeout", target.authority())))?
            .map_err(|e| dial(&format!("dial tcp {}: {e}", target.authority())))?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(target.host.clone()).map_err(|e| dial(&e))?;
        tokio::time::timeout(CONNECT_TIMEOUT, tokio_rustls::TlsConnector::from(self.tls.clone()).connect(name, tcp))
            .await
            .map_err(|_| dial(&"TLS handshake timeout"))?
            .map_err(|e| dial(&e))
    }

    /// An HTTP/1.1 connection to a kubelet, with upgrades enabled.
    async fn http1(&self, target: &Target) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, ApiError> {
        let tls = self.connect(target).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(tls))
            .await
            .map_err(|e| ApiError::internal(format!("error dialing backend: {e}")))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "kubelet connection ended with an error");
            }
        });
        Ok(sender)
    }
}

/// Where a node's kubelet listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
}

impl Target {
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// A node's kubelet address, as upstream's `NodeConnectionInfoGetter` finds it.
pub fn kubelet_target(node: &Value) -> Result<Target, ApiError> {
    let addresses: Vec<(&str, &str)> = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|x| {
                    (
                        x.get("type").and_then(Value::as_str).unwrap_or(""),
                        x.get("address").and_then(Value::as_str).unwrap_or(""),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let host = ["InternalIP", "Hostname"]
        .iter()
        .find_map(|t| addresses.iter().find(|(ty, a)| ty == t && !a.is_empty()).map(|(_, a)| a.to_string()))
        .ok_or_else(|| {
            let known: Vec<String> = addresses.iter().map(|(t, a)| format!("{{{t} {a}}}")).collect();
            ApiError::internal(format!("no preferred addresses found; known addresses: [{}]", known.join(" ")))
        })?;
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_i64)
        .filter(|p| *p > 0 && *p <= 65535)
        .map(|p| p as u16)
        .unwrap_or(DEFAULT_KUBELET_PORT);
    Ok(Target { host, port })
}

fn names(pod: &Value, list: &str) -> Vec<String> {
    pod.pointer(&format!("/spec/{list}"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|c| c.get("name").and_then(Value::as_str).map(String::from)).collect())
        .unwrap_or_default()
}

/// The container a request means, as upstream's `LogLocation` and `streamLocation` pick it.
pub fn pick_container(pod: &Value, name: &str, requested: &str) -> Result<String, ApiError> {
    let containers = names(pod, "containers");
    if requested.is_empty() {
        return match containers.len() {
            1 => Ok(containers[0].clone()),
            0 => Err(ApiError::bad_request(format!("a container name must be specified for pod {name}"))),
            _ => {
                let mut msg = format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    containers.join(" ")
                );
                let init = names(pod, "initContainers");
                if !init.is_empty() {
                    msg.push_str(&format!(" or one of the init containers: [{}]", init.join(" ")));
                }
                Err(ApiError::bad_request(msg))
            }
        };
    }
    let known = containers
        .iter()
        .chain(names(pod, "initContainers").iter())
        .chain(names(pod, "ephemeralContainers").iter())
        .any(|c| c == requested);
    if known {
        Ok(requested.to_string())
    } else {
        Err(ApiError::bad_request(format!("container {requested} is not valid for pod {name}")))
    }
}

/// Query parameters in order, repeated keys kept.
fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query.map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default()
}

fn query_get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn query_bool(pairs: &[(String, String)], key: &str) -> Result<bool, ApiError> {
    match query_get(pairs, key) {
        None => Ok(false),
        Some("1" | "t" | "T" | "true" | "TRUE" | "True" | "") => Ok(true),
        Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(false),
        Some(v) => Err(ApiError::bad_request(format!("invalid value {v:?} for {key}: must be a boolean"))),
    }
}

fn query_int(pairs: &[(String, String)], key: &str) -> Result<Option<i64>, ApiError> {
    query_get(pairs, key)
        .map(|v| v.parse::<i64>().map_err(|_| ApiError::bad_request(format!("invalid value {v:?} for {key}"))))
        .transpose()
}

fn encode(pairs: &[(&str, String)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

fn is_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|p| p.trim().eq_ignore_ascii_case("websocket")))
}

fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
}

/// The WebSocket subprotocols a client offers.
fn websocket_protocols(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_string()))
        .filter(|p| !p.is_empty())
        .collect()
}

impl super::ApiServer {
    fn kubelets(&self) -> Result<&KubeletClient, ApiError> {
        self.kubelet_client
            .as_deref()
            .ok_or_else(|| ApiError::internal("the API server has no kubelet client identity"))
    }

    async fn node_target(&self, node: &str) -> Result<Target, ApiError> {
        let nodes = registry::lookup("", "v1", "nodes").ok_or_else(ApiError::path_not_found)?;
        let obj = self.objects.get(nodes, "", node).await?;
        kubelet_target(&obj)
    }
}

/// `pods/log`, `pods/exec`, `pods/attach` and `pods/portforward`.
pub async fn pod_subresource(
    call: &Call<'_>,
    parts: &mut http::request::Parts,
    sub: &str,
) -> Result<Response<Body>, ApiError> {
    let server = call.server;
    let name = call.req.name.as_str();
    let method = parts.method.clone();
    let allowed = match sub {
        "log" => method == Method::GET || method == Method::HEAD,
        _ => method == Method::GET || method == Method::POST,
    };
    if !allowed {
        let verb = call.req.verb.as_str();
        return Err(ApiError::method_not_supported("", &format!("pods/{sub}"), verb));
    }
    let pairs = query_pairs(parts.uri.query());
    let pod = server.objects.get(call.info, &call.req.namespace, name).await?;
    let ns = call.req.namespace.as_str();
    let node = pod.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or("").to_string();
    match sub {
        "log" => {
            let container = pick_container(&pod, name, query_get(&pairs, "container").unwrap_or(""))?;
            let mut q: Vec<(&str, String)> = Vec::new();
            for flag in ["follow", "previous", "timestamps"] {
                if query_bool(&pairs, flag)? {
                    q.push((flag, "true".into()));
                }
            }
            if let Some(s) = query_int(&pairs, "sinceSeconds")? {
                q.push(("sinceSeconds", s.to_string()));
            }
            if let Some(t) = query_get(&pairs, "sinceTime") {
                let t = chrono::DateTime::parse_from_rfc3339(t)
                    .map_err(|e| ApiError::bad_request(format!("invalid value {t:?} for sinceTime: {e}")))?;
                q.push(("sinceTime", t.with_timezone(&chrono::Utc).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)));
            }
            for n in ["tailLines", "limitBytes"] {
                if let Some(v) = query_int(&pairs, n)? {
                    q.push((n, v.to_string()));
                }
            }
            if node.is_empty() {
                // Upstream answers an unscheduled pod's log with an empty stream.
                return Ok(response::with_body(200, "text/plain", Bytes::new()));
            }
            let target = server.node_target(&node).await?;
            let path = format!("/containerLogs/{ns}/{name}/{container}?{}", encode(&q));
            logs(server.kubelets()?, &target, &path, name).await
        }
        "exec" | "attach" => {
            let container = pick_container(&pod, name, query_get(&pairs, "container").unwrap_or(""))?;
            if node.is_empty() {
                return Err(ApiError::bad_request(format!("pod {name} does not have a host assigned")));
            }
            let mut q: Vec<(&str, String)> = Vec::new();
            let opts = translate::Streams {
                stdin: query_bool(&pairs, "stdin")?,
                stdout: query_bool(&pairs, "stdout")?,
                stderr: query_bool(&pairs, "stderr")?,
                tty: query_bool(&pairs, "tty")?,
            };
            for (set, key) in
                [(opts.stdin, "input"), (opts.stdout, "output"), (opts.stderr, "error"), (opts.tty, "tty")]
            {
                if set {
                    q.push((key, "1".into()));
                }
            }
            if sub == "exec" {
                for (_, c) in pairs.iter().filter(|(k, _)| k == "command") {
                    q.push(("command", c.clone()));
                }
            }
            let target = server.node_target(&node).await?;
            let path = format!("/{sub}/{ns}/{name}/{container}?{}", encode(&q));
            let kubelets = server.kubelets()?;
            if is_websocket(&parts.headers)
                && websocket_protocols(&parts.headers).iter().any(|p| p == translate::V5_PROTOCOL)
            {
                return translate::exec(kubelets, &target, &path, parts, opts, server.shutdown.clone()).await;
            }
            upgrade(kubelets, &target, &path, parts, server).await
        }
        _ => {
            if node.is_empty() {
                return Err(ApiError::bad_request(format!("pod {name} does not have a host assigned")));
            }
            let ports: Vec<String> = pairs.iter().filter(|(k, _)| k == "ports").map(|(_, v)| v.clone()).collect();
            let mut q: Vec<(&str, String)> = Vec::new();
            if !ports.is_empty() {
                q.push(("port", ports.join(",")));
            }
            let target = server.node_target(&node).await?;
            let path = format!("/portForward/{ns}/{name}?{}", encode(&q));
            let kubelets = server.kubelets()?;
            let tunnelled = websocket::spdy_tunnel_protocols(&websocket_protocols(&parts.headers));
            if is_websocket(&parts.headers) && !tunnelled.is_empty() {
                return websocket::tunnel(kubelets, &target, &path, parts, &tunnelled, server.shutdown.clone()).await;
            }
            upgrade(kubelets, &target, &path, parts, server).await
        }
    }
}

/// `nodes/{name}/proxy/{path}`: any method, any path of the kubelet API.
pub async fn node_proxy(call: &Call<'_>, parts: &mut http::request::Parts) -> Result<Response<Body>, ApiError> {
    let server = call.server;
    let target = server.node_target(&call.req.name).await?;
    let full = parts.uri.path();
    let rest = full.find("/proxy").map(|i| &full[i + "/proxy".len()..]).unwrap_or("");
    let rest = if rest.is_empty() { "/" } else { rest };
    let path = match parts.uri.query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_string(),
    };
    let kubelets = server.kubelets()?;
    if wants_upgrade(&parts.headers) {
        return upgrade(kubelets, &target, &path, parts, server).await;
    }
    let mut sender = kubelets.http1(&target).await?;
    let mut req = http::Request::builder().method(parts.method.clone()).uri(&path);
    for (k, v) in parts.headers.iter() {
        if forwardable(k) {
            req = req.header(k, v);
        }
    }
    let req = req
        .header(header::HOST, target.authority())
        .body(Full::new(call.body.clone()))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| ApiError::internal(format!("error trying to reach service: {e}")))?;
    let (rparts, body) = resp.into_parts();
    let mut out = Response::new(stream_body(body));
    *out.status_mut() = rparts.status;
    for (k, v) in rparts.headers.iter() {
        if forwardable(k) && k != header::CONTENT_LENGTH {
            out.headers_mut().append(k, v.clone());
        }
    }
    Ok(out)
}

/// Headers that go on to the kubelet: not the client's credentials, not hop-by-hop ones.
fn forwardable(name: &header::HeaderName) -> bool {
    let n = name.as_str();
    !(name == header::AUTHORIZATION
        || name == header::HOST
        || name == header::TRANSFER_ENCODING
        || n.starts_with("impersonate-")
        || n == "x-remote-user"
        || n == "x-remote-group")
}

/// A kubelet's body as ours: a transport error ends the stream.
fn stream_body(body: hyper::body::Incoming) -> Body {
    use futures::StreamExt;
    let frames =
        http_body_util::BodyStream::new(body).filter_map(|r| std::future::ready(r.ok())).map(Ok::<_, Infallible>);
    BodyExt::boxed(StreamBody::new(frames))
}

/// GET `/containerLogs/...` on the kubelet; its errors become `Status`es as upstream's
/// `GenericHttpResponseChecker` makes them.
async fn logs(kubelets: &KubeletClient, target: &Target, path: &str, pod: &str) -> Result<Response<Body>, ApiError> {
    let mut sender = kubelets.http1(target).await?;
    let req = http::Request::get(path)
        .header(header::HOST, target.authority())
        .body(Full::new(Bytes::new()))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let resp = sender.send_request(req).await.map_err(|e| ApiError::internal(e.to_string()))?;
    let status = resp.status();
    if status.is_success() && status.as_u16() <= 206 {
        let mut out = Response::new(stream_body(resp.into_body()));
        out.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
        return Ok(out);
    }
    let body = http_body_util::Limited::new(resp.into_body(), MAX_ERROR_BODY)
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Err(kubelet_error(status, &body, pod))
}

/// Upstream's `NewGenericServerResponse` for a kubelet's non-success answer.
pub fn kubelet_error(status: StatusCode, body: &str, pod: &str) -> ApiError {
    match status.as_u16() {
        500 => ApiError::internal(body),
        400 => ApiError::bad_request(body),
        code => {
            let (reason, msg) = match code {
                401 => ("Unauthorized", "the server has asked for the client to provide credentials".to_string()),
                403 => ("Forbidden", body.to_string()),
                404 => ("NotFound", "the server could not find the requested resource".to_string()),
                409 => ("Conflict", "the server reported a conflict".to_string()),
                422 => ("Invalid", "the server rejected our request due to an error in our request".to_string()),
                429 => (
                    "TooManyRequests",
                    "the server has received too many requests and has asked us to try again later".to_string(),
                ),
                503 => ("ServiceUnavailable", "the server is currently unable to handle the request".to_string()),
                _ => (
                    "",
                    format!("the server responded with the status code {code} but did not return more information"),
                ),
            };
            let reason = if reason.is_empty() { "Unknown" } else { reason };
            ApiError::new(code, reason, format!("{msg} ( pods/log {pod})"))
        }
    }
}

/// Replays an upgrade request (SPDY, or a WebSocket protocol the kubelet speaks itself) on
/// the kubelet and splices the connections once it switches protocols; any other answer is
/// relayed as it is.
async fn upgrade(
    kubelets: &KubeletClient,
    target: &Target,
    path: &str,
    parts: &mut http::request::Parts,
    server: &super::ApiServer,
) -> Result<Response<Body>, ApiError> {
    let Some(client_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
        return Err(ApiError::bad_request("Upgrade request required"));
    };
    if !wants_upgrade(&parts.headers) {
        return Err(ApiError::bad_request("Upgrade request required"));
    }
    let (mut resp, backend_upgrade) = send_upgrade(kubelets, target, path, &parts.method, &parts.headers).await?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Ok(relay(resp).await);
    }
    let mut out = Response::new(response::full(Bytes::new()));
    *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *out.headers_mut() = std::mem::take(resp.headers_mut());
    let shutdown = server.shutdown.clone();
    tokio::spawn(async move {
        let Some((mut client, mut backend)) = both_upgraded(client_upgrade, backend_upgrade).await else { return };
        tokio::select! {
            r = tokio::io::copy_bidirectional(&mut client, &mut backend) => if let Err(e) = r {
                tracing::debug!(error = %e, "stream ended with an error");
            },
            _ = shutdown.cancelled() => {}
        }
    });
    Ok(out)
}

/// Sends an upgrade request to a kubelet; returns its answer and, for a 101, its upgrade.
async fn send_upgrade(
    kubelets: &KubeletClient,
    target: &Target,
    path: &str,
    method: &Method,
    headers: &HeaderMap,
) -> Result<(Response<hyper::body::Incoming>, OnUpgrade), ApiError> {
    let mut sender = kubelets.http1(target).await?;
    let mut req = http::Request::builder().method(method.clone()).uri(path);
    for (k, v) in headers.iter() {
        if forwardable(k) && k != header::CONTENT_LENGTH {
            req = req.header(k, v);
        }
    }
    let req = req
        .header(header::HOST, target.authority())
        .body(Full::new(Bytes::new()))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let mut resp = sender
        .send_request(req)
        .await
        .map_err(|e| ApiError::internal(format!("error proxying to the kubelet: {e}")))?;
    let upgrade = hyper::upgrade::on(&mut resp);
    Ok((resp, upgrade))
}

/// Waits until both the client's and the kubelet's connections have switched protocols;
/// `None` (logged) when either failed.
async fn both_upgraded(
    client: OnUpgrade,
    backend: OnUpgrade,
) -> Option<(TokioIo<hyper::upgrade::Upgraded>, TokioIo<hyper::upgrade::Upgraded>)> {
    match tokio::try_join!(client, backend) {
        Ok((c, b)) => Some((TokioIo::new(c), TokioIo::new(b))),
        Err(e) => {
            tracing::debug!(error = %e, "stream upgrade failed");
            None
        }
    }
}

/// A WebSocket request's upgrade, and its headers turned into an SPDY upgrade request's for
/// the kubelet (the WebSocket handshake headers dropped).
fn spdy_request_from_websocket(parts: &mut http::request::Parts) -> Result<(OnUpgrade, HeaderMap), ApiError> {
    let Some(client_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
        return Err(ApiError::bad_request("Upgrade request required"));
    };
    let mut headers = HeaderMap::new();
    for (k, v) in parts.headers.iter() {
        if !k.as_str().starts_with("sec-websocket-") && k != header::UPGRADE && k != header::CONNECTION {
            headers.append(k, v.clone());
        }
    }
    headers.insert(header::UPGRADE, http::HeaderValue::from_static("SPDY/3.1"));
    headers.insert(header::CONNECTION, http::HeaderValue::from_static("Upgrade"));
    Ok((client_upgrade, headers))
}

/// A kubelet's non-upgrade answer to an upgrade request, as it is.
async fn relay(resp: Response<hyper::body::Incoming>) -> Response<Body> {
    let status = resp.status();
    let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
    let body = http_body_util::Limited::new(resp.into_body(), MAX_ERROR_BODY)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut out = Response::new(response::full(body));
    *out.status_mut() = status;
    if let Some(ct) = content_type {
        out.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kubelet_address_as_upstream_picks_it() {
        let node = json!({"status": {"addresses": [{"type": "Hostname", "address": "box"}, {"type": "InternalIP", "address": "10.0.0.5"}],
                          "daemonEndpoints": {"kubeletEndpoint": {"Port": 10251}}}});
        assert_eq!(kubelet_target(&node).unwrap(), Target { host: "10.0.0.5".into(), port: 10251 });
        let node = json!({"status": {"addresses": [{"type": "Hostname", "address": "box"}]}});
        assert_eq!(kubelet_target(&node).unwrap(), Target { host: "box".into(), port: 10250 });
        let node = json!({"status": {"addresses": [{"type": "ExternalDNS", "address": "x.example"}]}});
        assert_eq!(
            kubelet_target(&node).unwrap_err().message,
            "Internal error occurred: no preferred addresses found; known addresses: [{ExternalDNS x.example}]"
        );
        assert_eq!(Target { host: "::1".into(), port: 1 }.authority(), "[::1]:1");
    }

    #[test]
    fn container_choice_as_upstream() {
        let pod = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}], "initContainers": [{"name": "i"}]}});
        assert_eq!(
            pick_container(&pod, "p", "").unwrap_err().message,
            "a container name must be specified for pod p, choose one of: [a b] or one of the init containers: [i]"
        );
        assert_eq!(pick_container(&pod, "p", "i").unwrap(), "i");
        let e = pick_container(&pod, "p", "zz").unwrap_err();
        assert_eq!((e.code, e.message.as_str()), (400, "container zz is not valid for pod p"));
        let one = json!({"spec": {"containers": [{"name": "only"}]}});
        assert_eq!(pick_container(&one, "p", "").unwrap(), "only");
    }

    #[test]
    fn kubelet_errors_become_statuses() {
        let e =
            kubelet_error(StatusCode::BAD_REQUEST, "previous terminated container \"c\" in pod \"p\" not found", "p");
        assert_eq!((e.code, e.reason), (400, "BadRequest"));
        let e = kubelet_error(StatusCode::NOT_FOUND, "pod \"p\" does not exist", "p");
        assert_eq!(e.message, "the server could not find the requested resource ( pods/log p)");
    }
}
