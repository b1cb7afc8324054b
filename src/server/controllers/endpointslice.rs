//! The endpointslice controller: for every Service with a selector, EndpointSlices (labelled
//! `kubernetes.io/service-name`, managed by `endpointslice-controller.k8s.io`, owned by the
//! Service) holding its pods, at most 100 per slice, one slice family per address type and
//! resolved port set. Each endpoint carries upstream's conditions: `ready` (ready and not
//! terminating), `serving` (ready, even while terminating) and `terminating`, plus node,
//! zone, hostname and pod reference. A Service without endpoints keeps one empty placeholder
//! slice, as upstream. Slices of other managers and Services without a selector are left alone.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::Ctx;
use super::endpoints::{HEADLESS_LABEL, Membership, has_address, hostname, pod_ports, selected_pods};
use super::pods::{controller_of, is_ready};
use crate::runtime::informer::next_change;
use crate::runtime::queue::{Next, run_workers};
use crate::runtime::{Change, Informer, Key, WorkQueue};

pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
pub const MANAGER: &str = "endpointslice-controller.k8s.io";
/// Endpoints per slice (upstream's default `--max-endpoints-per-slice`).
const MAX_PER_SLICE: usize = 100;

struct Controller {
    client: kube::Client,
    services: Arc<Informer<Service>>,
    pods: Arc<Informer<Pod>>,
    nodes: Arc<Informer<Node>>,
    slices: Arc<Informer<EndpointSlice>>,
}

pub async fn run(ctx: Arc<Ctx>, cancel: CancellationToken) {
    let c = Arc::new(Controller {
        client: ctx.client.clone(),
        services: ctx.informers.get(),
        pods: ctx.informers.get(),
        nodes: ctx.informers.get(),
        slices: ctx.informers.get(),
    });
    let mut svc_changes = c.services.subscribe();
    let mut pod_changes = c.pods.subscribe();
    let mut slice_changes = c.slices.subscribe();
    c.services.synced().await;
    c.pods.synced().await;
    c.nodes.synced().await;
    c.slices.synced().await;
    let queue = WorkQueue::<Key>::new();
    let all = |queue: &WorkQueue<Key>| c.services.list().iter().for_each(|s| queue.add(Key::of(s.as_ref())));
    all(&queue);
    let workers = {
        let c = c.clone();
        tokio::spawn(run_workers("endpointslice-controller", queue.clone(), 4, cancel.clone(), move |key: Key| {
            let c = c.clone();
            async move { c.reconcile(&key).await }
        }))
    };
    let mut members = Membership::default();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            ch = next_change(&mut svc_changes) => match ch {
                Some(Change::Applied(s)) | Some(Change::Deleted(s)) => queue.add(Key::of(s.as_ref())),
                Some(Change::Resync) => all(&queue),
                None => break,
            },
            ch = next_change(&mut slice_changes) => match ch {
                Some(Change::Applied(s)) | Some(Change::Deleted(s)) => {
                    let labels = s.metadata.labels.clone().unwrap_or_default();
                    if let (Some(svc), Some(MANAGER)) = (labels.get(SERVICE_NAME_LABEL), labels.get(MANAGED_BY_LABEL).map(String::as_str)) {
                        queue.add(Key::new(s.metadata.namespace.as_deref().unwrap_or(""), svc));
                    }
                }
                Some(Change::Resync) => all(&queue),
                None => break,
            },
            ch = next_change(&mut pod_changes) => match ch {
                Some(Change::Applied(p)) => members.changed(&c.services, &p, false).into_iter().for_each(|k| queue.add(k)),
                Some(Change::Deleted(p)) => members.changed(&c.services, &p, true).into_iter().for_each(|k| queue.add(k)),
                Some(Change::Resync) => all(&queue),
                None => break,
            },
        }
    }
    let _ = workers.await;
}

/// One desired slice: address type, ports and endpoints.
struct Desired {
    address_type: &'static str,
    ports: Value,
    endpoints: Vec<Value>,
}

impl Controller {
    fn endpoint(&self, svc: &Service, pod: &Pod, publish: bool) -> Value {
        let terminating = pod.metadata.deletion_timestamp.is_some();
        let ready = is_ready(pod);
        let mut e = json!({
            "addresses": [pod.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap_or_default()],
            "conditions": {"ready": publish || (ready && !terminating), "serving": publish || ready, "terminating": terminating},
            "targetRef": {"kind": "Pod", "namespace": pod.metadata.namespace, "name": pod.metadata.name, "uid": pod.metadata.uid},
        });
        if let Some(n) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) {
            let zone = self
                .nodes
                .get("", &n)
                .and_then(|node| node.metadata.labels.as_ref()?.get("topology.kubernetes.io/zone").cloned());
            e["nodeName"] = json!(n);
            if let Some(z) = zone {
                e["zone"] = json!(z);
            }
        }
        if let Some(h) = hostname(svc, pod) {
            e["hostname"] = json!(h);
        }
        e
    }

    fn desired(&self, svc: &Service, pods: &[Arc<Pod>]) -> Vec<Desired> {
        let publish = svc.spec.as_ref().and_then(|s| s.publish_not_ready_addresses) == Some(true);
        let mut groups: BTreeMap<(String, &'static str), (Value, Vec<Value>)> = BTreeMap::new();
        for p in pods {
            if !has_address(p) {
                continue;
            }
            let ip = p.status.as_ref().and_then(|s| s.pod_ip.as_deref()).unwrap_or("");
            let family = if ip.contains(':') { "IPv6" } else { "IPv4" };
            let ports: Vec<Value> = pod_ports(svc, p)
                .into_iter()
                .map(|(name, port, protocol, app)| {
                    let mut v = json!({"name": name, "port": port, "protocol": protocol});
                    if let Some(a) = app {
                        v["appProtocol"] = json!(a);
                    }
                    v
                })
                .collect();
            let key = (serde_json::to_string(&ports).unwrap_or_default(), family);
            groups.entry(key).or_insert_with(|| (json!(ports), Vec::new())).1.push(self.endpoint(svc, p, publish));
        }
        let mut out = Vec::new();
        for ((_, family), (ports, mut endpoints)) in groups {
            endpoints.sort_by(|a, b| a["addresses"][0].as_str().cmp(&b["addresses"][0].as_str()));
            for chunk in endpoints.chunks(MAX_PER_SLICE) {
                out.push(Desired { address_type: family, ports: ports.clone(), endpoints: chunk.to_vec() });
            }
        }
        if out.is_empty() {
            let family =
                if svc.spec.as_ref().and_then(|s| s.ip_families.as_ref()).and_then(|f| f.first()).map(String::as_str)
                    == Some("IPv6")
                {
                    "IPv6"
                } else {
                    "IPv4"
                };
            out.push(Desired { address_type: family, ports: json!([]), endpoints: Vec::new() });
        }
        out
    }

    async fn reconcile(&self, key: &Key) -> Result<Next, kube::Error> {
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &key.namespace);
        let ours: Vec<Arc<EndpointSlice>> = self
            .slices
            .in_namespace(&key.namespace)
            .into_iter()
            .filter(|s| {
                let l = s.metadata.labels.clone().unwrap_or_default();
                l.get(SERVICE_NAME_LABEL) == Some(&key.name)
                    && l.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGER)
            })
            .collect();
        let svc = self.services.get(&key.namespace, &key.name);
        let pods = svc.as_ref().and_then(|s| selected_pods(s, &self.pods));
        let (Some(svc), Some(pods)) = (svc, pods) else {
            // No Service (the garbage collector removes owned slices too) or no selector.
            for s in ours {
                let _ = api.delete(s.metadata.name.as_deref().unwrap_or(""), &DeleteParams::default()).await;
            }
            return Ok(Next::Done);
        };
        let mut labels = svc.metadata.labels.clone().unwrap_or_default();
        labels.insert(SERVICE_NAME_LABEL.into(), key.name.clone());
        labels.insert(MANAGED_BY_LABEL.into(), MANAGER.into());
        if svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None") {
            labels.insert(HEADLESS_LABEL.into(), String::new());
        }
        let mut unused: Vec<Arc<EndpointSlice>> = ours;
        for d in self.desired(&svc, &pods) {
            let body = |name: Option<String>, rv: Option<String>| -> Result<EndpointSlice, kube::Error> {
                let v = json!({
                    "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {
                        "name": name, "generateName": format!("{}-", key.name), "namespace": key.namespace,
                        "labels": labels, "resourceVersion": rv, "ownerReferences": [controller_of(svc.as_ref())],
                    },
                    "addressType": d.address_type, "endpoints": d.endpoints, "ports": d.ports,
                });
                serde_json::from_value(v).map_err(kube::Error::SerdeError)
            };
            let same_shape = |s: &EndpointSlice| {
                s.address_type == d.address_type && serde_json::to_value(&s.ports).unwrap_or(Value::Null) == d.ports
            };
            let found = unused
                .iter()
                .position(|s| same_shape(s))
                .or_else(|| unused.iter().position(|s| s.address_type == d.address_type));
            let result = match found {
                Some(i) => {
                    let s = unused.remove(i);
                    let or_empty = |v: Value| if v.is_null() { json!([]) } else { v };
                    let current = json!({
                        "e": or_empty(json!(s.endpoints)),
                        "p": or_empty(serde_json::to_value(&s.ports).unwrap_or(Value::Null)),
                        "l": s.metadata.labels,
                    });
                    let wanted = json!({"e": d.endpoints, "p": d.ports, "l": labels});
                    if current == wanted {
                        continue;
                    }
                    let name = s.metadata.name.clone().unwrap_or_default();
                    api.replace(
                        &name,
                        &PostParams::default(),
                        &body(Some(name.clone()), s.metadata.resource_version.clone())?,
                    )
                    .await
                }
                None => api.create(&PostParams::default(), &body(None, None)?).await,
            };
            match result {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    return Ok(Next::After(std::time::Duration::from_millis(50)));
                }
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 403 => return Ok(Next::Done),
                Err(e) => return Err(e),
            }
        }
        for s in unused {
            match api.delete(s.metadata.name.as_deref().unwrap_or(""), &DeleteParams::default()).await {
                Ok(_) | Err(kube::Error::Api(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Next::Done)
    }
}
