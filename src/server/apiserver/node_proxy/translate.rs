//! WebSocket `v5.channel.k8s.io` exec and attach, translated into an SPDY session with the
//! kubelet.

use http::Response;
use tokio_util::sync::CancellationToken;

use crate::api::status::ApiError;

use super::super::response::Body;
use super::{KubeletClient, Target};

/// The only WebSocket remote-command protocol translated (kubectl 1.30+ offers only it).
pub const V5_PROTOCOL: &str = "v5.channel.k8s.io";

/// Which streams a session has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Streams {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// Serves a v5 WebSocket session by an SPDY session with the kubelet at `path`.
pub async fn exec(
    _kubelets: &KubeletClient,
    _target: &Target,
    _path: &str,
    _parts: &mut http::request::Parts,
    _streams: Streams,
    _shutdown: CancellationToken,
) -> Result<Response<Body>, ApiError> {
    Err(ApiError::bad_request("unable to upgrade: WebSocket streaming is not supported yet"))
}
