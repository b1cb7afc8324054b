//! A CRI v1 client over a unix socket: one HTTP/2 channel shared by the runtime and image
//! services. The channel reconnects by itself when the runtime restarts, so holders of a
//! [`CriClient`] keep it across containerd restarts; calls made while the runtime is down fail
//! and may be retried.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use super::CriError;
use super::proto::image_service_client::ImageServiceClient;
use super::proto::runtime_service_client::RuntimeServiceClient;
use super::proto::{StatusRequest, StatusResponse, VersionRequest, VersionResponse};

/// The CRI API version skiff speaks, sent in `Version` and expected back.
pub const API_VERSION: &str = "v1";

/// Largest message accepted from or sent to the runtime. A busy node's container and image
/// lists exceed tonic's 4 MiB default; 16 MiB is what the kubelet and containerd use.
const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// Pause between attempts while waiting for a socket to answer.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// A connected CRI client. Cloning is cheap and shares the connection.
#[derive(Clone, Debug)]
pub struct CriClient {
    socket: PathBuf,
    channel: Channel,
}

impl CriClient {
    /// Connects to the runtime at `socket`, retrying until it answers a `Version` call with CRI
    /// v1 or `timeout` has passed. A socket that does not exist yet counts as "not yet".
    pub async fn connect(socket: impl AsRef<Path>, timeout: Duration) -> Result<CriClient, CriError> {
        let socket = socket.as_ref().to_path_buf();
        let start = Instant::now();
        let deadline = start + timeout;
        let mut last = "not tried".to_string();
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(CriError::Unavailable { socket, waited: start.elapsed(), last });
            }
            match tokio::time::timeout(remaining, Self::try_connect(&socket)).await {
                Ok(Ok((client, version))) => {
                    if version.runtime_api_version != API_VERSION {
                        return Err(CriError::Protocol {
                            socket,
                            message: format!(
                                "runtime {} {} speaks CRI {:?}, skiff needs {API_VERSION}",
                                version.runtime_name, version.runtime_version, version.runtime_api_version
                            ),
                        });
                    }
                    tracing::debug!(socket = %client.socket.display(), runtime = %version.runtime_name,
                        version = %version.runtime_version, "CRI socket answered");
                    return Ok(client);
                }
                Ok(Err(e)) => last = e,
                Err(_) => last = "timed out waiting for an answer".to_string(),
            }
            tokio::time::sleep(RETRY_PAUSE.min(deadline.saturating_duration_since(Instant::now()))).await;
        }
    }

    /// One attempt: open the channel and ask for the version.
    async fn try_connect(socket: &Path) -> Result<(CriClient, VersionResponse), String> {
        // The URI only fills the HTTP/2 :authority header; the connector ignores it.
        let endpoint = Endpoint::from_static("http://localhost");
        let path = Arc::new(socket.to_path_buf());
        let connector = tower::service_fn(move |_: Uri| {
            let path = Arc::clone(&path);
            async move { UnixStream::connect(path.as_path()).await.map(TokioIo::new) }
        });
        let channel = endpoint.connect_with_connector(connector).await.map_err(|e| error_chain(&e))?;
        let client = CriClient { socket: socket.to_path_buf(), channel };
        let version = client.version().await.map_err(|e| e.to_string())?;
        Ok((client, version))
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The `RuntimeService` (sandboxes, containers, exec, stats).
    pub fn runtime(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// The `ImageService` (list, status, pull, remove, filesystem usage).
    pub fn images(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// The underlying channel, for containerd's own services on the same socket.
    pub(crate) fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Wraps an error status of `call` with this client's socket.
    pub fn call_error(&self, call: &'static str, status: tonic::Status) -> CriError {
        CriError::Call { socket: self.socket.clone(), call, status: Box::new(status) }
    }

    /// The runtime's name and version, and the CRI version it speaks.
    pub async fn version(&self) -> Result<VersionResponse, CriError> {
        let request = VersionRequest { version: API_VERSION.to_string() };
        match self.runtime().version(request).await {
            Ok(response) => Ok(response.into_inner()),
            Err(status) => Err(self.call_error("Version", status)),
        }
    }

    /// The runtime's conditions (`RuntimeReady`, `NetworkReady`).
    pub async fn status(&self) -> Result<StatusResponse, CriError> {
        match self.runtime().status(StatusRequest { verbose: false }).await {
            Ok(response) => Ok(response.into_inner()),
            Err(status) => Err(self.call_error("Status", status)),
        }
    }
}

/// An error with its causes, since tonic's transport error alone says only "transport error".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
