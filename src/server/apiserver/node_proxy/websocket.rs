//! WebSocket framing (RFC 6455, server side) and port-forward's SPDY tunnelled in WebSocket.

use http::Response;
use tokio_util::sync::CancellationToken;

use crate::api::status::ApiError;

use super::super::response::Body;
use super::{KubeletClient, Target};

/// Prefix of the WebSocket subprotocols that tunnel an SPDY protocol.
const SPDY_TUNNEL_PREFIX: &str = "SPDY/3.1+";

/// The SPDY protocols a client tunnels (`SPDY/3.1+portforward.k8s.io` → `portforward.k8s.io`).
pub fn spdy_tunnel_protocols(offered: &[String]) -> Vec<String> {
    offered
        .iter()
        .filter_map(|p| p.strip_prefix(SPDY_TUNNEL_PREFIX))
        .filter(|p| p.ends_with(".k8s.io"))
        .map(String::from)
        .collect()
}

/// Unwraps SPDY tunnelled in WebSocket into an SPDY upgrade with the kubelet at `path`.
pub async fn tunnel(
    _kubelets: &KubeletClient,
    _target: &Target,
    _path: &str,
    _parts: &mut http::request::Parts,
    _protocols: &[String],
    _shutdown: CancellationToken,
) -> Result<Response<Body>, ApiError> {
    Err(ApiError::bad_request("unable to upgrade: WebSocket tunnelling is not supported yet"))
}
