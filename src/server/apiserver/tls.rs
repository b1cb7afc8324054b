//! The TLS accept loop: rustls handshakes (client certificates optional; one the cluster CA did
//! not sign makes every request on the connection a 401), HTTP/1.1 and HTTP/2 on each
//! connection, graceful shutdown.
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
    cert_check: crate::pki::ClientCertCheck,
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
        let cert_check = cert_check.clone();
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
            let cert_user = client_user(&tls, &cert_check, peer);
            let svc = service_fn(move |req| {
                let server = server.clone();
                let user = cert_user.clone();
                async move {
                    let (method, path) = (req.method().clone(), req.uri().path().to_string());
                    let started = std::time::Instant::now();
                    let resp = match user {
                        Ok(user) => server.handle(user, req).await,
                        // A certificate that is not the cluster's is no identity at all, not
                        // anonymous: every request is refused, as upstream's authenticator does.
                        Err(()) => super::response::error(&crate::api::status::ApiError::unauthorized()),
                    };
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

/// The identity of the connection's client certificate: `Ok(None)` without one, `Err` for a
/// certificate the cluster CA did not sign (or that expired).
fn client_user(
    tls: &tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    check: &crate::pki::ClientCertCheck,
    peer: SocketAddr,
) -> Result<Option<UserInfo>, ()> {
    let (_, conn) = tls.get_ref();
    let Some(chain) = conn.peer_certificates() else { return Ok(None) };
    let Some(cert) = chain.first() else { return Ok(None) };
    if !check.verify(chain) {
        tracing::debug!(%peer, "client certificate not valid for the cluster CA");
        return Err(());
    }
    match crate::pki::identity_from_cert(cert.as_ref()) {
        Ok(id) => Ok(Some(UserInfo::from_cert(id))),
        Err(e) => {
            tracing::debug!(%peer, error = %e, "client certificate without a usable subject");
            Ok(None)
        }
    }
}
