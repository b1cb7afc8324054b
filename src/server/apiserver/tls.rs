//! The TLS accept loop: rustls handshakes (client certificates optional, verified against the
//! cluster CA), HTTP/1.1 and HTTP/2 on each connection, graceful shutdown.
//!
//! Garbage on the port costs one failed handshake and a closed connection; a handshake that
//! does not finish in time is dropped, so idle sockets cannot pile up.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::ApiServer;
use super::auth::UserInfo;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections get to finish after shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// Accepts connections until `shutdown` fires, then drains them.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    server: Arc<ApiServer>,
    shutdown: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let server = server.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let cert_user = client_user(&tls, peer);
            let svc = service_fn(move |req| {
                let server = server.clone();
                let user = cert_user.clone();
                async move {
                    let (method, path) = (req.method().clone(), req.uri().path().to_string());
                    let started = std::time::Instant::now();
                    let resp = server.handle(user, req).await;
                    tracing::debug!(%peer, %method, %path, status = resp.status().as_u16(), micros = started.elapsed().as_micros() as u64, "request");
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder.http2().max_concurrent_streams(1000);
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc);
            let conn = watcher.watch(conn.into_owned());
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        tracing::info!("connections still open after the drain timeout; closing them");
    }
}

fn client_user(tls: &tokio_rustls::server::TlsStream<tokio::net::TcpStream>, peer: SocketAddr) -> Option<UserInfo> {
    let (_, conn) = tls.get_ref();
    let cert = conn.peer_certificates()?.first()?;
    match crate::pki::identity_from_cert(cert.as_ref()) {
        Ok(id) => Some(UserInfo::from_cert(id)),
        Err(e) => {
            tracing::debug!(%peer, error = %e, "client certificate without a usable subject");
            None
        }
    }
}
