//! Liveness, readiness and startup probes, as upstream's prober runs them: exec (in the
//! container), HTTP(S) GET, TCP connect and gRPC health checks against the pod's address, with
//! initialDelaySeconds, periodSeconds, timeoutSeconds, successThreshold and failureThreshold.
//!
//! [`Probes`] keeps each container instance's results; the worker asks it which probes are due,
//! runs them, and reads back readiness, startedness and whether liveness (or startup) failed
//! for good. Results belong to one instance: a restarted container starts over.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::cri::CriClient;

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Startup,
    Liveness,
    Readiness,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Startup => "Startup",
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
        }
    }
}

#[derive(Debug, Default, Clone)]
struct State {
    successes: i32,
    failures: i32,
    /// The latest verdict after thresholds: `Some(true)` passing, `Some(false)` failed.
    verdict: Option<bool>,
    next: Option<Instant>,
}

/// What one probe run found.
#[derive(Debug)]
pub struct Outcome {
    pub container: String,
    pub kind: Kind,
    /// `Some(message)` when the probe failed.
    pub failure: Option<String>,
    /// The failure threshold was just reached.
    pub tripped: bool,
}

/// Probe results of one pod's running container instances.
#[derive(Default)]
pub struct Probes {
    /// Keyed by container id and probe kind.
    states: HashMap<(String, Kind), State>,
}

fn probe_of(c: &Container, kind: Kind) -> Option<&Probe> {
    match kind {
        Kind::Startup => c.startup_probe.as_ref(),
        Kind::Liveness => c.liveness_probe.as_ref(),
        Kind::Readiness => c.readiness_probe.as_ref(),
    }
}

fn secs(v: Option<i32>, default: i32) -> Duration {
    Duration::from_secs(v.unwrap_or(default).max(0) as u64)
}

impl Probes {
    /// Forgets instances that are no longer running.
    pub fn retain(&mut self, running: &[String]) {
        self.states.retain(|(id, _), _| running.contains(id));
    }

    /// Whether the instance passed its startup probe (or has none).
    pub fn started(&self, c: &Container, id: &str) -> bool {
        c.startup_probe.is_none()
            || self.states.get(&(id.to_string(), Kind::Startup)).and_then(|s| s.verdict) == Some(true)
    }

    /// Whether the instance is ready: started, and its readiness probe passes (or it has none).
    pub fn ready(&self, c: &Container, id: &str) -> bool {
        self.started(c, id)
            && (c.readiness_probe.is_none()
                || self.states.get(&(id.to_string(), Kind::Readiness)).and_then(|s| s.verdict) == Some(true))
    }

    /// Runs every probe of the running instance `id` that is due; returns what happened and
    /// when the next one is due.
    #[allow(clippy::too_many_arguments)]
    pub async fn run_due(
        &mut self,
        cri: &CriClient,
        c: &Container,
        id: &str,
        started_at: Instant,
        ip: Option<IpAddr>,
    ) -> (Vec<Outcome>, Option<Instant>) {
        let mut outcomes = Vec::new();
        let mut next: Option<Instant> = None;
        let started = self.started(c, id);
        let kinds: &[Kind] = if started { &[Kind::Liveness, Kind::Readiness] } else { &[Kind::Startup] };
        for &kind in kinds {
            let Some(p) = probe_of(c, kind) else { continue };
            let key = (id.to_string(), kind);
            let state = self.states.entry(key).or_default();
            let first_due = started_at + secs(p.initial_delay_seconds, 0);
            let due = state.next.unwrap_or(first_due);
            let now = Instant::now();
            if now < due {
                next = Some(next.map_or(due, |n: Instant| n.min(due)));
                continue;
            }
            let result = run_probe(cri, c, id, p, ip).await;
            let period = secs(p.period_seconds, 10).max(Duration::from_secs(1));
            let state = self.states.entry((id.to_string(), kind)).or_default();
            state.next = Some(Instant::now() + period);
            next = Some(next.map_or(Instant::now() + period, |n: Instant| n.min(Instant::now() + period)));
            let success_threshold = p.success_threshold.unwrap_or(1).max(1);
            let failure_threshold = p.failure_threshold.unwrap_or(3).max(1);
            let mut tripped = false;
            match &result {
                Ok(()) => {
                    state.failures = 0;
                    state.successes += 1;
                    if state.successes >= success_threshold {
                        state.verdict = Some(true);
                    }
                }
                Err(_) => {
                    state.successes = 0;
                    state.failures += 1;
                    if state.failures >= failure_threshold && state.verdict != Some(false) {
                        state.verdict = Some(false);
                        tripped = true;
                    } else if state.failures >= failure_threshold {
                        state.verdict = Some(false);
                    }
                }
            }
            outcomes.push(Outcome {
                container: c.name.clone(),
                kind,
                failure: result.err().map(|e| format!("{} probe failed: {e}", kind.name())),
                tripped,
            });
        }
        (outcomes, next)
    }
}

/// A probe's or hook's port: a number, or the name of one of the container's ports.
pub(super) fn port_of(c: &Container, port: &IntOrString) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("invalid port {n}")),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|cp| cp.name.as_deref() == Some(name.as_str()))
            .and_then(|cp| u16::try_from(cp.container_port).ok())
            .ok_or_else(|| format!("port \"{name}\" not found in the container's ports")),
    }
}

/// Runs one probe once.
async fn run_probe(cri: &CriClient, c: &Container, id: &str, p: &Probe, ip: Option<IpAddr>) -> Result<(), String> {
    let timeout = secs(p.timeout_seconds, 1).max(Duration::from_secs(1));
    let port_of = |port: &IntOrString| port_of(c, port);
    if let Some(exec) = &p.exec {
        let cmd = exec.command.clone().unwrap_or_default();
        let (code, out) = super::runtime::exec_sync(cri, id, cmd, timeout).await?;
        return if code == 0 {
            Ok(())
        } else {
            let out = String::from_utf8_lossy(&out).trim().to_string();
            Err(if out.is_empty() { format!("command exited with {code}") } else { out })
        };
    }
    if let Some(tcp) = &p.tcp_socket {
        let host = tcp.host.as_deref().and_then(|h| h.parse().ok()).or(ip).ok_or("the pod has no IP yet")?;
        let port = port_of(&tcp.port)?;
        return match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, port))).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("dial tcp {host}:{port}: {e}")),
            Err(_) => Err(format!("dial tcp {host}:{port}: i/o timeout")),
        };
    }
    if let Some(http) = &p.http_get {
        let host = http.host.as_deref().and_then(|h| h.parse().ok()).or(ip).ok_or("the pod has no IP yet")?;
        let port = port_of(&http.port)?;
        let path = http.path.clone().unwrap_or_else(|| "/".into());
        let https = http.scheme.as_deref() == Some("HTTPS");
        let headers: Vec<(String, String)> =
            http.http_headers.iter().flatten().map(|h| (h.name.clone(), h.value.clone())).collect();
        return match tokio::time::timeout(timeout, http_get(host, port, &path, https, &headers)).await {
            Ok(Ok(code)) if (200..400).contains(&code) => Ok(()),
            Ok(Ok(code)) => Err(format!("HTTP probe failed with statuscode: {code}")),
            Ok(Err(e)) => Err(format!("Get \"{}://{host}:{port}{path}\": {e}", if https { "https" } else { "http" })),
            Err(_) => Err(format!(
                "Get \"{}://{host}:{port}{path}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)",
                if https { "https" } else { "http" }
            )),
        };
    }
    if let Some(grpc) = &p.grpc {
        let host = ip.ok_or("the pod has no IP yet")?;
        let port = u16::try_from(grpc.port).map_err(|_| format!("invalid port {}", grpc.port))?;
        let service = grpc.service.clone().unwrap_or_default();
        return match tokio::time::timeout(timeout, grpc_check(host, port, service)).await {
            Ok(r) => r,
            Err(_) => Err(format!("timeout: health rpc did not complete within {}s", timeout.as_secs())),
        };
    }
    Err("the probe has no handler".into())
}

/// A GET with `Connection: close`; returns the status code.
pub(super) async fn http_get(
    host: IpAddr,
    port: u16,
    path: &str,
    https: bool,
    headers: &[(String, String)],
) -> Result<u16, String> {
    let stream =
        tokio::net::TcpStream::connect((host, port)).await.map_err(|e| format!("dial tcp {host}:{port}: {e}"))?;
    let host_header = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("host"))
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| if host.is_ipv6() { format!("[{host}]:{port}") } else { format!("{host}:{port}") });
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host_header}\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("user-agent")) {
        req.push_str("User-Agent: kube-probe/1.32\r\n");
    }
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("accept")) {
        req.push_str("Accept: */*\r\n");
    }
    for (k, v) in headers.iter().filter(|(k, _)| !k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    let status_line = if https {
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert))
            .with_no_client_auth();
        let name = rustls_pki_types::ServerName::IpAddress(host.into());
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, stream)
            .await
            .map_err(|e| e.to_string())?;
        tls.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
        read_status_line(&mut tls).await?
    } else {
        let mut stream = stream;
        stream.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
        read_status_line(&mut stream).await?
    };
    let code = status_line.split_whitespace().nth(1).and_then(|c| c.parse().ok());
    code.ok_or_else(|| format!("malformed HTTP response {status_line:?}"))
}

async fn read_status_line<R: tokio::io::AsyncRead + Unpin>(r: &mut R) -> Result<String, String> {
    let mut buf = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while buf.len() < 4096 {
        match r.read(&mut byte).await {
            Ok(0) => break,
            Ok(_) => {
                if byte[0] == b'\n' {
                    break;
                }
                buf.push(byte[0]);
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(String::from_utf8_lossy(&buf).trim().to_string())
}

/// Probes skip certificate verification, as upstream's HTTPS probes do.
#[derive(Debug)]
struct AnyCert;

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &[rustls_pki_types::CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider().signature_verification_algorithms.supported_schemes()
    }
}

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

/// `grpc.health.v1.HealthCheckResponse`; status 1 is SERVING.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

async fn grpc_check(host: IpAddr, port: u16, service: String) -> Result<(), String> {
    let uri = if host.is_ipv6() { format!("http://[{host}]:{port}") } else { format!("http://{host}:{port}") };
    let channel = tonic::transport::Endpoint::from_shared(uri)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("failed to connect service \"{host}:{port}\" within the timeout: {e}"))?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| e.to_string())?;
    let path = http::uri::PathAndQuery::from_static("/grpc.health.v1.Health/Check");
    let codec = tonic_prost::ProstCodec::<HealthCheckRequest, HealthCheckResponse>::default();
    let resp = grpc
        .unary(tonic::Request::new(HealthCheckRequest { service }), path, codec)
        .await
        .map_err(|e| format!("health rpc failed: {}", e.message()))?;
    match resp.into_inner().status {
        1 => Ok(()),
        s => Err(format!(
            "service unhealthy (responded with \"{}\")",
            match s {
                0 => "UNKNOWN",
                2 => "NOT_SERVING",
                3 => "SERVICE_UNKNOWN",
                _ => "?",
            }
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn http_and_tcp_probes_against_a_local_listener() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut n = 0;
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let code = if n == 0 { "200 OK" } else { "503 Service Unavailable" };
                n += 1;
                let _ = s.write_all(format!("HTTP/1.1 {code}\r\nContent-Length: 0\r\n\r\n").as_bytes()).await;
            }
        });
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(http_get(ip, port, "/healthz", false, &[]).await.unwrap(), 200);
        assert_eq!(http_get(ip, port, "/healthz", false, &[]).await.unwrap(), 503);
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
        let e = http_get(ip, closed, "/", false, &[]).await.unwrap_err();
        assert!(e.starts_with(&format!("dial tcp 127.0.0.1:{closed}: ")), "{e}");
    }
}
