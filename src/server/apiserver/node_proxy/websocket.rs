//! WebSocket framing (RFC 6455, the server's side) and port-forward's SPDY tunnelled in
//! WebSocket: kubectl 1.30+ sends SPDY frames as binary messages under the subprotocol
//! `SPDY/3.1+portforward.k8s.io`; the kubelet gets a plain SPDY upgrade and the bytes are
//! carried across unchanged, as upstream's `TunnelingHandler` does.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::api::status::ApiError;

use super::super::response::{self, Body};
use super::{KubeletClient, Target, relay, send_upgrade};

/// Prefix of the WebSocket subprotocols that tunnel an SPDY protocol.
const SPDY_TUNNEL_PREFIX: &str = "SPDY/3.1+";
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Larger messages end the connection; SPDY frames and terminal input are far smaller.
const MAX_MESSAGE: usize = 16 << 20;

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// The SPDY protocols a client tunnels (`SPDY/3.1+portforward.k8s.io` → `portforward.k8s.io`).
pub fn spdy_tunnel_protocols(offered: &[String]) -> Vec<String> {
    offered
        .iter()
        .filter_map(|p| p.strip_prefix(SPDY_TUNNEL_PREFIX))
        .filter(|p| p.ends_with(".k8s.io"))
        .map(String::from)
        .collect()
}

/// `Sec-WebSocket-Accept` for a client's key.
pub fn accept_key(key: &str) -> String {
    use base64::Engine;
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, format!("{key}{GUID}").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// The 101 answer accepting a WebSocket upgrade with `protocol`.
pub fn handshake(headers: &HeaderMap, protocol: &str) -> Result<Response<Body>, ApiError> {
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::bad_request("missing Sec-WebSocket-Key"))?;
    let mut out = Response::new(response::full(Bytes::new()));
    *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = out.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept_key(key)).map_err(|e| ApiError::internal(e.to_string()))?,
    );
    if !protocol.is_empty() {
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_str(protocol).map_err(|e| ApiError::internal(e.to_string()))?,
        );
    }
    Ok(out)
}

/// An unmasked (server) frame with FIN set.
pub fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= 0xFFFF => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}

/// A close frame with a status code.
pub fn close_frame(code: u16) -> Vec<u8> {
    frame(OP_CLOSE, &code.to_be_bytes())
}

/// One message from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Message {
    Data { opcode: u8, payload: Vec<u8> },
    Ping(Vec<u8>),
    Pong,
    Close,
}

/// Reads a client's messages; control frames may come between the fragments of a message.
pub struct Reader<R> {
    r: R,
    partial: Option<(u8, Vec<u8>)>,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    pub fn new(r: R) -> Reader<R> {
        Reader { r, partial: None }
    }

    /// The next message, fragments joined and unmasked; Ok(None) at end of stream.
    pub async fn next(&mut self) -> std::io::Result<Option<Message>> {
        read_message(&mut self.r, &mut self.partial).await
    }
}

async fn read_message<R: AsyncRead + Unpin>(
    r: &mut R,
    data: &mut Option<(u8, Vec<u8>)>,
) -> std::io::Result<Option<Message>> {
    loop {
        let mut head = [0u8; 2];
        match r.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let fin = head[0] & 0x80 != 0;
        let opcode = head[0] & 0x0F;
        let masked = head[1] & 0x80 != 0;
        let len = match head[1] & 0x7F {
            126 => u64::from(r.read_u16().await?),
            127 => r.read_u64().await?,
            n => u64::from(n),
        };
        if len > MAX_MESSAGE as u64 {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "WebSocket message too large"));
        }
        let mut mask = [0u8; 4];
        if masked {
            r.read_exact(&mut mask).await?;
        }
        let mut payload = vec![0u8; len as usize];
        r.read_exact(&mut payload).await?;
        if masked {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= mask[i % 4];
            }
        }
        match opcode {
            OP_CLOSE => return Ok(Some(Message::Close)),
            OP_PING => return Ok(Some(Message::Ping(payload))),
            OP_PONG => return Ok(Some(Message::Pong)),
            OP_CONTINUATION => match data.as_mut() {
                Some((_, buf)) => {
                    if buf.len() + payload.len() > MAX_MESSAGE {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            "WebSocket message too large",
                        ));
                    }
                    buf.extend_from_slice(&payload);
                }
                None => {
                    return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "continuation without a message"));
                }
            },
            OP_TEXT | OP_BINARY => *data = Some((opcode, payload)),
            other => {
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("WebSocket opcode {other}")));
            }
        }
        if fin && let Some((opcode, payload)) = data.take() {
            return Ok(Some(Message::Data { opcode, payload }));
        }
    }
}

/// Writes frames queued by several tasks to the client, in order.
pub async fn write_frames<W: AsyncWrite + Unpin>(mut w: W, mut rx: mpsc::Receiver<Vec<u8>>) {
    while let Some(f) = rx.recv().await {
        if w.write_all(&f).await.is_err() || w.flush().await.is_err() {
            return;
        }
    }
    let _ = w.shutdown().await;
}

/// Unwraps SPDY tunnelled in WebSocket into an SPDY upgrade with the kubelet at `path`.
pub async fn tunnel(
    kubelets: &KubeletClient,
    target: &Target,
    path: &str,
    parts: &mut http::request::Parts,
    protocols: &[String],
    shutdown: CancellationToken,
) -> Result<Response<Body>, ApiError> {
    let (client_upgrade, mut headers) = super::spdy_request_from_websocket(parts)?;
    headers.remove("x-stream-protocol-version");
    for p in protocols {
        if let Ok(v) = HeaderValue::from_str(p) {
            headers.append("x-stream-protocol-version", v);
        }
    }
    let (resp, backend_upgrade) = send_upgrade(kubelets, target, path, &Method::POST, &headers).await?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Ok(relay(resp).await);
    }
    let chosen = resp.headers().get("x-stream-protocol-version").and_then(|v| v.to_str().ok()).unwrap_or("");
    let protocol = if chosen.is_empty() { String::new() } else { format!("{SPDY_TUNNEL_PREFIX}{chosen}") };
    let out = handshake(&parts.headers, &protocol)?;
    tracing::debug!(%path, "port-forward: SPDY tunnelled in WebSocket");
    tokio::spawn(async move {
        let Some((client, backend)) = super::both_upgraded(client_upgrade, backend_upgrade).await else { return };
        let (client_r, client_w) = tokio::io::split(client);
        let mut client_r = Reader::new(client_r);
        let (mut backend_r, mut backend_w) = tokio::io::split(backend);
        let (tx, rx) = mpsc::channel::<Vec<u8>>(64);
        let writer = tokio::spawn(write_frames(client_w, rx));
        let to_client = {
            let tx = tx.clone();
            async move {
                let mut buf = vec![0u8; 32 * 1024];
                loop {
                    match backend_r.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if tx.send(frame(OP_BINARY, &buf[..n])).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = tx.send(close_frame(1000)).await;
            }
        };
        let from_client = async {
            loop {
                match client_r.next().await {
                    Ok(Some(Message::Data { payload, .. })) => {
                        if backend_w.write_all(&payload).await.is_err() {
                            break;
                        }
                    }
                    Ok(Some(Message::Ping(p))) => {
                        let _ = tx.send(frame(OP_PONG, &p)).await;
                    }
                    Ok(Some(Message::Pong)) => {}
                    Ok(Some(Message::Close)) | Ok(None) | Err(_) => break,
                }
            }
            let _ = backend_w.shutdown().await;
        };
        tokio::select! {
            _ = async { tokio::join!(to_client, from_client) } => {}
            _ = shutdown.cancelled() => {}
        }
        drop(tx);
        let _ = writer.await;
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_of_the_rfc_example() {
        assert_eq!(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[tokio::test]
    async fn masked_fragmented_messages_are_joined() {
        let mask = [1u8, 2, 3, 4];
        let masked = |fin_op: u8, data: &[u8]| {
            let mut f = vec![fin_op, 0x80 | data.len() as u8];
            f.extend_from_slice(&mask);
            f.extend(data.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
            f
        };
        let mut wire = masked(OP_BINARY, b"\x00hel");
        wire.extend(masked(0x80 | OP_PING, b"p"));
        wire.extend(masked(0x80 | OP_CONTINUATION, b"lo"));
        wire.extend(masked(0x80 | OP_CLOSE, b""));
        let mut r = Reader::new(&wire[..]);
        assert_eq!(r.next().await.unwrap(), Some(Message::Ping(b"p".to_vec())));
        assert_eq!(r.next().await.unwrap(), Some(Message::Data { opcode: OP_BINARY, payload: b"\x00hello".to_vec() }));
        assert_eq!(r.next().await.unwrap(), Some(Message::Close));
        assert_eq!(r.next().await.unwrap(), None);
        assert_eq!(frame(OP_BINARY, &[7; 200])[..4], [0x82, 126, 0, 200]);
    }

    #[test]
    fn tunnelled_protocols() {
        let offered = vec!["SPDY/3.1+portforward.k8s.io".to_string(), "portforward.v1.websocket.k8s.io".to_string()];
        assert_eq!(spdy_tunnel_protocols(&offered), vec!["portforward.k8s.io".to_string()]);
    }
}
