//! Fetching the cluster CA from `GET /cacerts` before anything is trusted, and checking it
//! against the token's pin.
//!
//! The connection is deliberately unverified (there is nothing to verify it against yet) and
//! carries no credential: what comes back is trusted only if its SHA-256 is the token's.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;

/// Why the CA could not be fetched (all retried: the server may not be up yet).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0}")]
    Unreachable(String),
    #[error("GET /cacerts answered {0}")]
    Status(u16),
}

/// `host`, `port` and TLS name of an `https://` URL.
pub fn endpoint(url: &str) -> Result<(String, u16, ServerName<'static>), String> {
    let uri: http::Uri = url.parse().map_err(|_| format!("invalid value \"{url}\" for --server: not a URL"))?;
    if uri.scheme_str() != Some("https") {
        return Err(format!("invalid value \"{url}\" for --server: must be an https:// URL"));
    }
    let host = uri.host().ok_or_else(|| format!("invalid value \"{url}\" for --server: no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
    let port = uri.port_u16().unwrap_or(443);
    let name = ServerName::try_from(host.clone())
        .map_err(|_| format!("invalid value \"{url}\" for --server: bad host name"))?;
    Ok((host, port, name))
}

/// Reads the CA bundle from `url`'s `/cacerts`, without verifying the server and without
/// credentials.
pub async fn fetch(url: &str, tls: Arc<rustls::ClientConfig>) -> Result<String, FetchError> {
    let (host, port, name) = endpoint(url).map_err(FetchError::Unreachable)?;
    let unreachable = |e: &dyn std::fmt::Display| FetchError::Unreachable(e.to_string());
    let tcp =
        tokio::time::timeout(std::time::Duration::from_secs(10), tokio::net::TcpStream::connect((host.as_str(), port)))
            .await
            .map_err(|e| unreachable(&e))?
            .map_err(|e| unreachable(&e))?;
    let stream = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await.map_err(|e| unreachable(&e))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| unreachable(&e))?;
    tokio::spawn(conn);
    let req = http::Request::get("/cacerts")
        .header(http::header::HOST, format!("{host}:{port}"))
        .body(Empty::<Bytes>::new())
        .map_err(|e| unreachable(&e))?;
    let resp = tokio::time::timeout(std::time::Duration::from_secs(10), sender.send_request(req))
        .await
        .map_err(|e| unreachable(&e))?
        .map_err(|e| unreachable(&e))?;
    if resp.status() != http::StatusCode::OK {
        return Err(FetchError::Status(resp.status().as_u16()));
    }
    let body = resp.into_body().collect().await.map_err(|e| unreachable(&e))?.to_bytes();
    String::from_utf8(body.to_vec()).map_err(|_| FetchError::Unreachable("the CA bundle is not text".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls() {
        let (h, p, _) = endpoint("https://10.0.0.1:6443").unwrap();
        assert_eq!((h.as_str(), p), ("10.0.0.1", 6443));
        assert_eq!(endpoint("https://skiff.lan").unwrap().1, 443);
        assert_eq!(
            endpoint("http://10.0.0.1:6443").unwrap_err(),
            "invalid value \"http://10.0.0.1:6443\" for --server: must be an https:// URL"
        );
    }
}
