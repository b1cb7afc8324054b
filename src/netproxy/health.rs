//! Health-check node ports: for every LoadBalancer with `externalTrafficPolicy: Local`, an HTTP
//! server on its `spec.healthCheckNodePort` tells a load balancer whether this node has an
//! endpoint of the Service, as upstream's kube-proxy does: `200` with the count when it has,
//! `503` when it has none (or the proxy's last update failed), so the balancer sends traffic
//! only to nodes that would not drop it.
//!
//! [`wanted`] is pure (Services and EndpointSlices in, ports and counts out); [`Servers`] owns
//! the listeners and is updated with each proxy update. Every path answers the same.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use tokio_util::sync::CancellationToken;

use super::model::{SERVICE_NAME_LABEL, proxied};

/// What one health-check port reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub namespace: String,
    pub name: String,
    /// Ready endpoints of the Service on this node (distinct addresses).
    pub local_endpoints: usize,
}

/// The health-check ports the Services ask for, with what each reports on `node`.
pub fn wanted(services: &[Arc<Service>], slices: &[Arc<EndpointSlice>], node: &str) -> BTreeMap<u16, Status> {
    let mut out = BTreeMap::new();
    for svc in services.iter().filter(|s| proxied(s)) {
        let Some(spec) = &svc.spec else { continue };
        if spec.type_.as_deref() != Some("LoadBalancer") || spec.external_traffic_policy.as_deref() != Some("Local") {
            continue;
        }
        let Some(port) = spec.health_check_node_port.and_then(|p| u16::try_from(p).ok()).filter(|p| *p > 0) else {
            continue;
        };
        let ns = svc.metadata.namespace.clone().unwrap_or_default();
        let name = svc.metadata.name.clone().unwrap_or_default();
        let mut local: BTreeSet<IpAddr> = BTreeSet::new();
        let mine = slices.iter().filter(|s| {
            s.metadata.namespace.as_deref() == Some(ns.as_str())
                && s.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)) == Some(&name)
        });
        for s in mine {
            for e in s.endpoints.iter().filter(|e| e.node_name.as_deref() == Some(node)) {
                let c = e.conditions.as_ref();
                let ready = c.and_then(|c| c.ready).unwrap_or(true) && !c.and_then(|c| c.terminating).unwrap_or(false);
                if ready {
                    local.extend(e.addresses.iter().filter_map(|a| a.parse::<IpAddr>().ok()));
                }
            }
        }
        out.insert(port, Status { namespace: ns, name, local_endpoints: local.len() });
    }
    out
}

/// The answer to any request on a health-check port.
pub fn response(status: &Status, proxy_healthy: bool) -> Response<Full<Bytes>> {
    let body = serde_json::json!({
        "service": {"namespace": status.namespace, "name": status.name},
        "localEndpoints": status.local_endpoints,
        "serviceProxyHealthy": proxy_healthy,
    });
    let code =
        if status.local_endpoints > 0 && proxy_healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = code;
    let h = r.headers_mut();
    h.insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    h.insert("x-content-type-options", hyper::header::HeaderValue::from_static("nosniff"));
    h.insert("x-load-balancing-endpoint-weight", status.local_endpoints.into());
    r
}

struct Running {
    status: Arc<RwLock<Status>>,
    stop: CancellationToken,
}

/// The health-check servers of this node.
pub struct Servers {
    running: HashMap<u16, Running>,
    healthy: Arc<AtomicBool>,
    cancel: CancellationToken,
}

impl Servers {
    /// No servers yet; all of them stop when `cancel` fires.
    pub fn new(cancel: CancellationToken) -> Servers {
        Servers { running: HashMap::new(), healthy: Arc::new(AtomicBool::new(true)), cancel }
    }

    /// Serves exactly the ports of `wanted`, reporting `proxy_healthy` (whether the last update
    /// of the rules worked). A port that cannot be bound is tried again at the next update.
    pub async fn update(&mut self, wanted: BTreeMap<u16, Status>, proxy_healthy: bool) {
        self.healthy.store(proxy_healthy, Ordering::Relaxed);
        self.running.retain(|port, r| {
            let keep = wanted.contains_key(port);
            if !keep {
                r.stop.cancel();
            }
            keep
        });
        for (port, status) in wanted {
            if let Some(r) = self.running.get(&port) {
                *r.status.write().unwrap_or_else(|p| p.into_inner()) = status;
                continue;
            }
            let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
            let listener = match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(port, service = %format!("{}/{}", status.namespace, status.name), error = %e, "cannot serve the health-check node port");
                    continue;
                }
            };
            let status = Arc::new(RwLock::new(status));
            let stop = self.cancel.child_token();
            tokio::spawn(serve(listener, status.clone(), self.healthy.clone(), stop.clone()));
            self.running.insert(port, Running { status, stop });
        }
    }
}

async fn serve(
    listener: tokio::net::TcpListener,
    status: Arc<RwLock<Status>>,
    healthy: Arc<AtomicBool>,
    stop: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => match a {
                Ok((s, _)) => s,
                Err(_) => continue,
            },
        };
        let (status, healthy, stop) = (status.clone(), healthy.clone(), stop.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |_req| {
                let s = status.read().unwrap_or_else(|p| p.into_inner()).clone();
                let r = response(&s, healthy.load(Ordering::Relaxed));
                async move { Ok::<_, Infallible>(r) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.cancelled() => conn.as_mut().graceful_shutdown(),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(v: serde_json::Value) -> Arc<Service> {
        Arc::new(serde_json::from_value(v).unwrap())
    }

    #[test]
    fn local_load_balancers_report_their_ready_local_endpoints() {
        let services = vec![
            svc(serde_json::json!({"metadata": {"name": "web", "namespace": "default"},
                "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "healthCheckNodePort": 32000,
                         "clusterIP": "10.43.0.5", "ports": [{"port": 80}]}})),
            svc(serde_json::json!({"metadata": {"name": "other", "namespace": "default"},
                "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Cluster", "clusterIP": "10.43.0.6",
                         "ports": [{"port": 80}]}})),
        ];
        let slice: Arc<EndpointSlice> = Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "web-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "IPv4",
                "endpoints": [
                    {"addresses": ["10.42.0.5"], "nodeName": "n1", "conditions": {"ready": true}},
                    {"addresses": ["10.42.0.6"], "nodeName": "n1", "conditions": {"ready": false}},
                    {"addresses": ["10.42.0.7"], "nodeName": "n1", "conditions": {"ready": true, "terminating": true}},
                    {"addresses": ["10.42.1.5"], "nodeName": "n2", "conditions": {"ready": true}},
                ],
            }))
            .unwrap(),
        );
        let got = wanted(&services, std::slice::from_ref(&slice), "n1");
        assert_eq!(
            got,
            BTreeMap::from([(32000, Status { namespace: "default".into(), name: "web".into(), local_endpoints: 1 })])
        );
        assert_eq!(wanted(&services, &[slice], "n3")[&32000].local_endpoints, 0);
        let r = response(&got[&32000], true);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["x-load-balancing-endpoint-weight"], "1");
        let r = response(&got[&32000], false);
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
