//! The endpoints controller: for every Service with a selector, an Endpoints object of the
//! same name listing the selected pods' addresses (ready ones in `addresses`, others in
//! `notReadyAddresses`, or all ready with `publishNotReadyAddresses`) and the Service's ports
//! resolved against each pod (a named `targetPort` becomes that container port), grouped
//! into subsets of pods sharing one port set, as upstream. Services without a selector are
//! left alone: their Endpoints are the user's.
//!
//! The pod and port rules live here and are shared with the endpointslice controller.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Endpoints, Pod, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::Ctx;
use super::pods::is_ready;
use crate::runtime::informer::next_change;
use crate::runtime::matching::selector_matches;
use crate::runtime::queue::{Next, run_workers};
use crate::runtime::{Change, Informer, Key, WorkQueue};

/// Label upstream puts on Endpoints of headless Services.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// The pods a Service selects (`None` for a selectorless Service).
pub fn selected_pods(svc: &Service, pods: &Informer<Pod>) -> Option<Vec<Arc<Pod>>> {
    let sel = svc.spec.as_ref()?.selector.as_ref().filter(|s| !s.is_empty())?;
    let ns = svc.metadata.namespace.as_deref().unwrap_or("");
    let selector = k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
        match_labels: Some(sel.clone()),
        match_expressions: None,
    };
    Some(
        pods.in_namespace(ns)
            .into_iter()
            .filter(|p| selector_matches(&selector, &p.metadata.labels.clone().unwrap_or_default()))
            .collect(),
    )
}

/// Whether a pod can be an endpoint at all: it has an IP and has not finished.
pub fn has_address(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("");
    let ip = pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()).unwrap_or("");
    !ip.is_empty() && phase != "Succeeded" && phase != "Failed"
}

/// The port a Service port reaches on `pod` (a named target port looked up in its containers).
pub fn target_port(port: &ServicePort, pod: &Pod) -> Option<i32> {
    match &port.target_port {
        None => Some(port.port),
        Some(IntOrString::Int(p)) => Some(*p),
        Some(IntOrString::String(name)) => {
            let protocol = port.protocol.as_deref().unwrap_or("TCP");
            pod.spec.as_ref()?.containers.iter().flat_map(|c| c.ports.iter().flatten()).find_map(|p| {
                (p.name.as_deref() == Some(name.as_str()) && p.protocol.as_deref().unwrap_or("TCP") == protocol)
                    .then_some(p.container_port)
            })
        }
    }
}

/// The resolved ports of `svc` on `pod`: (name, port, protocol, appProtocol), sorted.
pub fn pod_ports(svc: &Service, pod: &Pod) -> Vec<(String, i32, String, Option<String>)> {
    let mut out: Vec<_> = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let port = target_port(p, pod)?;
            Some((
                p.name.clone().unwrap_or_default(),
                port,
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                p.app_protocol.clone(),
            ))
        })
        .collect();
    out.sort();
    out
}

/// An endpoint's `hostname`: the pod's, when its subdomain is the Service.
pub fn hostname(svc: &Service, pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    (spec.subdomain.as_deref() == svc.metadata.name.as_deref()).then(|| spec.hostname.clone()).flatten()
}

fn address(svc: &Service, pod: &Pod) -> Value {
    let mut a = json!({
        "ip": pod.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap_or_default(),
        "targetRef": {"kind": "Pod", "namespace": pod.metadata.namespace, "name": pod.metadata.name, "uid": pod.metadata.uid},
    });
    if let Some(n) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) {
        a["nodeName"] = json!(n);
    }
    if let Some(h) = hostname(svc, pod) {
        a["hostname"] = json!(h);
    }
    a
}

/// The desired subsets of a Service over its pods.
pub fn subsets(svc: &Service, pods: &[Arc<Pod>]) -> Vec<Value> {
    let publish = svc.spec.as_ref().and_then(|s| s.publish_not_ready_addresses) == Some(true);
    let mut groups: BTreeMap<String, (Vec<Value>, Vec<Value>, Value)> = BTreeMap::new();
    for p in pods {
        if !has_address(p) || p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let ports = pod_ports(svc, p);
        let ports_json: Vec<Value> = ports
            .iter()
            .map(|(name, port, proto, app)| {
                let mut v = json!({"port": port, "protocol": proto});
                if !name.is_empty() {
                    v["name"] = json!(name);
                }
                if let Some(a) = app {
                    v["appProtocol"] = json!(a);
                }
                v
            })
            .collect();
        let key = serde_json::to_string(&ports_json).unwrap_or_default();
        let entry = groups.entry(key).or_insert_with(|| (Vec::new(), Vec::new(), json!(ports_json)));
        if publish || is_ready(p) { entry.0.push(address(svc, p)) } else { entry.1.push(address(svc, p)) }
    }
    groups
        .into_values()
        .map(|(mut ready, mut not_ready, ports)| {
            let by_ip = |a: &Value, b: &Value| a["ip"].as_str().cmp(&b["ip"].as_str());
            ready.sort_by(by_ip);
            not_ready.sort_by(by_ip);
            let mut s = json!({});
            if !ready.is_empty() {
                s["addresses"] = json!(ready);
            }
            if !not_ready.is_empty() {
                s["notReadyAddresses"] = json!(not_ready);
            }
            if ports.as_array().is_some_and(|p| !p.is_empty()) {
                s["ports"] = ports;
            }
            s
        })
        .collect()
}

struct Controller {
    client: kube::Client,
    services: Arc<Informer<Service>>,
    pods: Arc<Informer<Pod>>,
    endpoints: Arc<Informer<Endpoints>>,
}

/// The Services in the pod's namespace whose selector matches it.
pub fn services_selecting(services: &Informer<Service>, pod: &Pod) -> Vec<Key> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("");
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    services
        .in_namespace(ns)
        .iter()
        .filter(|s| {
            s.spec
                .as_ref()
                .and_then(|s| s.selector.as_ref())
                .filter(|s| !s.is_empty())
                .is_some_and(|sel| sel.iter().all(|(k, v)| labels.get(k) == Some(v)))
        })
        .map(|s| Key::of(s.as_ref()))
        .collect()
}

/// Remembers which Services each pod was selected by, so a pod whose labels changed is
/// removed from the Services it left.
#[derive(Default)]
pub struct Membership(std::collections::HashMap<Key, HashSet<Key>>);

impl Membership {
    /// The Services to look at after a pod change.
    pub fn changed(&mut self, services: &Informer<Service>, pod: &Pod, deleted: bool) -> HashSet<Key> {
        let key = Key::of(pod);
        let mut affected = self.0.remove(&key).unwrap_or_default();
        let now: HashSet<Key> = services_selecting(services, pod).into_iter().collect();
        affected.extend(now.iter().cloned());
        if !deleted && !now.is_empty() {
            self.0.insert(key, now);
        }
        affected
    }
}

pub async fn run(ctx: Arc<Ctx>, cancel: CancellationToken) {
    let c = Arc::new(Controller {
        client: ctx.client.clone(),
        services: ctx.informers.get(),
        pods: ctx.informers.get(),
        endpoints: ctx.informers.get(),
    });
    let mut svc_changes = c.services.subscribe();
    let mut pod_changes = c.pods.subscribe();
    let mut ep_changes = c.endpoints.subscribe();
    c.services.synced().await;
    c.pods.synced().await;
    c.endpoints.synced().await;
    let queue = WorkQueue::<Key>::new();
    let all = |queue: &WorkQueue<Key>| c.services.list().iter().for_each(|s| queue.add(Key::of(s.as_ref())));
    all(&queue);
    let workers = {
        let c = c.clone();
        tokio::spawn(run_workers("endpoint-controller", queue.clone(), 4, cancel.clone(), move |key: Key| {
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
            ch = next_change(&mut ep_changes) => match ch {
                Some(Change::Applied(e)) | Some(Change::Deleted(e)) => queue.add(Key::of(e.as_ref())),
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

impl Controller {
    async fn reconcile(&self, key: &Key) -> Result<Next, kube::Error> {
        let api: Api<Endpoints> = Api::namespaced(self.client.clone(), &key.namespace);
        let Some(svc) = self.services.get(&key.namespace, &key.name) else {
            // The Endpoints of a deleted Service go with it (the garbage collector does not
            // know them: they carry no owner reference, as upstream's).
            if self.endpoints.get(&key.namespace, &key.name).is_some() {
                match api.delete(&key.name, &Default::default()).await {
                    Ok(_) | Err(kube::Error::Api(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            return Ok(Next::Done);
        };
        let Some(pods) = selected_pods(&svc, &self.pods) else { return Ok(Next::Done) };
        let subsets = subsets(&svc, &pods);
        let mut labels = svc.metadata.labels.clone().unwrap_or_default();
        if svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None") {
            labels.insert(HEADLESS_LABEL.into(), String::new());
        }
        let existing = self.endpoints.get(&key.namespace, &key.name);
        if let Some(e) = &existing {
            let current = serde_json::to_value(&e.subsets).unwrap_or(Value::Null);
            let same_subsets = current == json!(subsets) || (current.is_null() && subsets.is_empty());
            if same_subsets && e.metadata.labels.clone().unwrap_or_default() == labels {
                return Ok(Next::Done);
            }
        }
        let mut ep: Endpoints = serde_json::from_value(json!({"subsets": subsets})).unwrap_or_default();
        ep.metadata = ObjectMeta {
            name: Some(key.name.clone()),
            namespace: Some(key.namespace.clone()),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(
                "endpoints.kubernetes.io/last-change-trigger-time".to_string(),
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            )])),
            resource_version: existing.as_ref().and_then(|e| e.metadata.resource_version.clone()),
            ..Default::default()
        };
        if subsets.is_empty() {
            ep.subsets = None;
        }
        let result = match existing {
            Some(_) => api.replace(&key.name, &PostParams::default(), &ep).await,
            None => api.create(&PostParams::default(), &ep).await,
        };
        match result {
            Ok(_) => Ok(Next::Done),
            // Changed or created meanwhile: read again.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(Next::After(std::time::Duration::from_millis(50))),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 403 => Ok(Next::Done),
            Err(e) => Err(e),
        }
    }
}
