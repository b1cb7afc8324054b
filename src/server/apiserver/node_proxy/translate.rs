//! WebSocket `v5.channel.k8s.io` exec and attach, translated into an SPDY
//! `v4.channel.k8s.io` session with the kubelet, as upstream's `StreamTranslatorProxy` does:
//! containerd's streaming server speaks WebSocket only up to v4, which cannot half-close
//! stdin, so a v5 client cannot be passed through.
//!
//! WebSocket messages carry a channel byte: 0 stdin, 1 stdout, 2 stderr, 3 error (a
//! `Status`), 4 resize, and in v5 255 = close the channel named by the next byte. Each
//! channel becomes an SPDY stream whose `streamtype` header names it.

use http::{HeaderValue, Method, Response, StatusCode};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::api::status::ApiError;

use super::super::response::Body;
use super::websocket::{self, Message, OP_BINARY, OP_PONG};
use super::{KubeletClient, Target, relay, send_upgrade, spdy};

/// The only WebSocket remote-command protocol translated (kubectl 1.30+ offers only it).
pub const V5_PROTOCOL: &str = "v5.channel.k8s.io";
/// The SPDY protocol asked of the kubelet.
const V4_PROTOCOL: &str = "v4.channel.k8s.io";
/// How long the client gets to close the connection after the status was sent.
const FINISH_TIMEOUT: Duration = Duration::from_secs(60);

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// Which streams a session has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Streams {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// SPDY stream ids of a session's channels (client streams are odd).
fn stream_ids(s: Streams) -> Vec<(u8, &'static str, u32)> {
    let mut out = vec![(ERROR, "error", 1)];
    let mut next = 3;
    for (on, ch, name) in [
        (s.stdin, STDIN, "stdin"),
        (s.stdout, STDOUT, "stdout"),
        (s.stderr && !s.tty, STDERR, "stderr"),
        (s.tty, RESIZE, "resize"),
    ] {
        if on {
            out.push((ch, name, next));
            next += 2;
        }
    }
    out
}

/// Serves a v5 WebSocket session by an SPDY session with the kubelet at `path`.
pub async fn exec(
    kubelets: &KubeletClient,
    target: &Target,
    path: &str,
    parts: &mut http::request::Parts,
    streams: Streams,
    shutdown: CancellationToken,
) -> Result<Response<Body>, ApiError> {
    let (client_upgrade, mut headers) = super::spdy_request_from_websocket(parts)?;
    headers.insert("x-stream-protocol-version", HeaderValue::from_static(V4_PROTOCOL));
    let (resp, backend_upgrade) = send_upgrade(kubelets, target, path, &Method::POST, &headers).await?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        // The client sees a failed upgrade and retries over SPDY, which fails the same way
        // with the kubelet's own message.
        return Ok(relay(resp).await);
    }
    let out = websocket::handshake(&parts.headers, V5_PROTOCOL)?;
    tracing::debug!(%path, "remote command: WebSocket v5 translated to SPDY");
    tokio::spawn(async move {
        let Some((client, backend)) = super::both_upgraded(client_upgrade, backend_upgrade).await else { return };
        tokio::select! {
            _ = session(client, backend, streams) => {}
            _ = shutdown.cancelled() => {}
        }
    });
    Ok(out)
}

async fn session<C, K>(client: C, kubelet: K, streams: Streams)
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
    K: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (client_r, client_w) = tokio::io::split(client);
    let (mut kubelet_r, mut kubelet_w) = tokio::io::split(kubelet);
    let (to_client, rx) = mpsc::channel::<Vec<u8>>(64);
    let writer = tokio::spawn(websocket::write_frames(client_w, rx));
    let ids = stream_ids(streams);
    let id_of = |ch: u8| ids.iter().find(|(c, _, _)| *c == ch).map(|(_, _, id)| *id);

    // Open the streams; the kubelet starts the command once all are there.
    let mut hw = spdy::HeaderWriter::default();
    let mut opening = Vec::new();
    for (_, name, id) in &ids {
        opening.extend(spdy::syn_stream(*id, &mut hw, &[("streamtype", name)]));
    }
    if kubelet_w.write_all(&opening).await.is_err() {
        return;
    }
    // Upstream's server then sends an empty message on the lowest writable channel to say the
    // session is up. A v5 client gains nothing from it, and client-go starts reading before
    // it has registered its streams: one that arrives in that window is logged as "Unknown
    // stream id 1, discarding message" on kubectl's stderr. So none is sent.

    let (to_kubelet, mut kubelet_rx) = mpsc::channel::<Vec<u8>>(64);
    let kubelet_writer = tokio::spawn(async move {
        while let Some(f) = kubelet_rx.recv().await {
            if kubelet_w.write_all(&f).await.is_err() {
                return;
            }
        }
        let _ = kubelet_w.shutdown().await;
    });

    // Client → kubelet. Ends with the client's close (or its connection).
    let (client_gone_tx, mut client_gone) = tokio::sync::watch::channel(false);
    let upstream = {
        let to_kubelet = to_kubelet.clone();
        let to_client = to_client.clone();
        let ids = ids.clone();
        tokio::spawn(async move {
            let id_of = |ch: u8| ids.iter().find(|(c, _, _)| *c == ch).map(|(_, _, id)| *id);
            let mut reader = websocket::Reader::new(client_r);
            loop {
                match reader.next().await {
                    Ok(Some(Message::Data { payload, .. })) => {
                        let Some((&ch, rest)) = payload.split_first() else { continue };
                        let frame = match ch {
                            CLOSE => rest.first().and_then(|c| id_of(*c)).map(|id| spdy::data(id, true, &[])),
                            STDIN | RESIZE => id_of(ch).map(|id| spdy::data(id, false, rest)),
                            _ => None,
                        };
                        if let Some(f) = frame
                            && to_kubelet.send(f).await.is_err()
                        {
                            break;
                        }
                    }
                    Ok(Some(Message::Ping(p))) => {
                        let _ = to_client.send(websocket::frame(OP_PONG, &p)).await;
                    }
                    Ok(Some(Message::Pong)) => {}
                    Ok(Some(Message::Close)) | Ok(None) | Err(_) => break,
                }
            }
            let _ = client_gone_tx.send(true);
        })
    };

    // Kubelet → client, until stdout, stderr and the error stream have ended.
    let mut open: Vec<u32> =
        ids.iter().filter(|(c, _, _)| matches!(*c, STDOUT | STDERR | ERROR)).map(|x| x.2).collect();
    let mut status = Vec::new();
    let error_id = id_of(ERROR);
    while !open.is_empty() {
        let frame = tokio::select! {
            f = spdy::read_frame(&mut kubelet_r) => f,
            _ = client_gone.wait_for(|gone| *gone) => break,
        };
        match frame {
            Ok(Some(spdy::Frame::Data { stream, fin, bytes })) => {
                if Some(stream) == error_id {
                    status.extend_from_slice(&bytes);
                } else if let Some((ch, _, _)) = ids.iter().find(|(_, _, id)| *id == stream)
                    && !bytes.is_empty()
                {
                    let mut msg = Vec::with_capacity(bytes.len() + 1);
                    msg.push(*ch);
                    msg.extend_from_slice(&bytes);
                    if to_client.send(websocket::frame(OP_BINARY, &msg)).await.is_err() {
                        break;
                    }
                }
                if fin {
                    open.retain(|id| *id != stream);
                }
            }
            Ok(Some(spdy::Frame::Control { kind, payload, .. })) => match kind {
                spdy::PING => {
                    let _ = to_kubelet.send(spdy::ping(&payload)).await;
                }
                spdy::RST_STREAM => {
                    if let Some(id) = spdy::Frame::stream_of(&payload) {
                        open.retain(|x| *x != id);
                    }
                }
                spdy::GOAWAY => break,
                _ => {}
            },
            Ok(None) | Err(_) => break,
        }
    }
    if !*client_gone.borrow() {
        let mut msg = vec![ERROR];
        msg.extend_from_slice(&status);
        let _ = to_client.send(websocket::frame(OP_BINARY, &msg)).await;
        let _ = to_client.send(websocket::close_frame(1000)).await;
        // The client closes once it has read everything.
        let _ = tokio::time::timeout(FINISH_TIMEOUT, client_gone.wait_for(|gone| *gone)).await;
    }
    upstream.abort();
    drop(to_kubelet);
    drop(to_client);
    let _ = kubelet_writer.await;
    let _ = writer.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_map_to_odd_stream_ids() {
        let s = Streams { stdin: true, stdout: true, stderr: true, tty: false };
        assert_eq!(
            stream_ids(s),
            vec![(ERROR, "error", 1), (STDIN, "stdin", 3), (STDOUT, "stdout", 5), (STDERR, "stderr", 7)]
        );
        let t = Streams { stdin: true, stdout: true, stderr: true, tty: true };
        assert_eq!(
            stream_ids(t),
            vec![(ERROR, "error", 1), (STDIN, "stdin", 3), (STDOUT, "stdout", 5), (RESIZE, "resize", 7)]
        );
    }
}
