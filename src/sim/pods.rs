//! The simulated kubelet's pod lifecycle: every pod bound to one of our nodes is "started"
//! (Running, Ready, a pod IP from the node's podCIDR), "finishes" when it has a run time (pods
//! of Jobs, or the `sim.skiff.io/run-for` annotation) with the exit code the
//! `sim.skiff.io/exit-code` annotation gives, is restarted as its restartPolicy says, and is
//! removed at once when deleted (the containers "stop" instantly), as a kubelet would.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{EXIT_CODE_ANNOTATION, RUN_FOR_ANNOTATION, SimConfig};
use crate::runtime::informer::next_change;
use crate::runtime::queue::{Next, run_workers};
use crate::runtime::{Change, Informer, Informers, Key, WorkQueue};

/// Pod IPs in use per node.
#[derive(Default)]
struct Ips {
    used: HashMap<String, HashMap<Ipv4Addr, Key>>,
    by_pod: HashMap<Key, (String, Ipv4Addr)>,
}

impl Ips {
    fn take(&mut self, node: &str, cidr: Ipv4Net, pod: &Key) -> Option<Ipv4Addr> {
        if let Some((n, ip)) = self.by_pod.get(pod)
            && n == node
        {
            return Some(*ip);
        }
        let used = self.used.entry(node.to_string()).or_default();
        let ip = cidr.hosts().skip(1).find(|ip| !used.contains_key(ip))?;
        used.insert(ip, pod.clone());
        self.by_pod.insert(pod.clone(), (node.to_string(), ip));
        Some(ip)
    }

    fn record(&mut self, node: &str, ip: Ipv4Addr, pod: &Key) {
        self.used.entry(node.to_string()).or_default().insert(ip, pod.clone());
        self.by_pod.insert(pod.clone(), (node.to_string(), ip));
    }

    fn release(&mut self, pod: &Key) {
        if let Some((node, ip)) = self.by_pod.remove(pod)
            && let Some(u) = self.used.get_mut(&node)
        {
            u.remove(&ip);
        }
    }
}

struct Sim {
    client: Client,
    cfg: Arc<SimConfig>,
    nodes: HashSet<String>,
    node_cache: Arc<Informer<Node>>,
    pod_cache: Arc<Informer<Pod>>,
    ips: Mutex<Ips>,
}

/// Drives the pods of `names` until `cancel` fires.
pub async fn run(client: Client, cfg: Arc<SimConfig>, names: Vec<String>, cancel: CancellationToken) {
    let informers = Informers::new(client.clone(), cancel.clone());
    let node_cache = informers.get::<Node>();
    let pod_cache = informers.get::<Pod>();
    let mut pod_changes = pod_cache.subscribe();
    let mut node_changes = node_cache.subscribe();
    if !node_cache.synced_or(&cancel).await || !pod_cache.synced_or(&cancel).await {
        return;
    }
    let sim = Arc::new(Sim {
        client,
        cfg: cfg.clone(),
        nodes: names.into_iter().collect(),
        node_cache,
        pod_cache,
        ips: Mutex::new(Ips::default()),
    });
    sim.restore_ips();
    let queue = WorkQueue::<Key>::new();
    for p in sim.pod_cache.list() {
        if sim.ours(&p) {
            queue.add(Key::of(p.as_ref()));
        }
    }
    let workers = {
        let sim = sim.clone();
        tokio::spawn(run_workers("sim-pods", queue.clone(), cfg.workers, cancel.clone(), move |key: Key| {
            let sim = sim.clone();
            async move { sim.reconcile(&key).await }
        }))
    };
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            c = next_change(&mut pod_changes) => match c {
                Some(Change::Applied(p)) | Some(Change::Deleted(p)) => {
                    if sim.ours(&p) {
                        queue.add(Key::of(p.as_ref()));
                    }
                }
                Some(Change::Resync) => {
                    for p in sim.pod_cache.list() {
                        if sim.ours(&p) {
                            queue.add(Key::of(p.as_ref()));
                        }
                    }
                }
                None => break,
            },
            c = next_change(&mut node_changes) => match c {
                // A node that just got its podCIDR can start its waiting pods.
                Some(Change::Applied(n)) if sim.nodes.contains(n.metadata.name.as_deref().unwrap_or("")) => {
                    for p in sim.pod_cache.list() {
                        if p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == n.metadata.name.as_deref() {
                            queue.add(Key::of(p.as_ref()));
                        }
                    }
                }
                Some(_) => {}
                None => break,
            },
        }
    }
    let _ = workers.await;
}

fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata.annotations.as_ref().and_then(|a| a.get(key)).map(String::as_str)
}

fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending")
}

impl Sim {
    fn ours(&self, pod: &Pod) -> bool {
        pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| self.nodes.contains(n))
    }

    fn restore_ips(&self) {
        let mut ips = self.ips.lock().unwrap_or_else(|e| e.into_inner());
        for p in self.pod_cache.list() {
            if !self.ours(&p) || p.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
                continue;
            }
            let node = p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
            if let Some(ip) = p.status.as_ref().and_then(|s| s.pod_ip.as_deref()).and_then(|i| i.parse().ok()) {
                ips.record(&node, ip, &Key::of(p.as_ref()));
            }
        }
    }

    /// How long the pod's containers run, if not forever.
    fn run_for(&self, pod: &Pod) -> Option<Duration> {
        if let Some(d) = annotation(pod, RUN_FOR_ANNOTATION).and_then(super::parse_duration) {
            return Some(d);
        }
        let of_job =
            pod.metadata.owner_references.iter().flatten().any(|o| o.kind == "Job" && o.controller == Some(true));
        of_job.then_some(self.cfg.job_duration)
    }

    async fn reconcile(&self, key: &Key) -> Result<Next, kube::Error> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &key.namespace);
        let Some(pod) = self.pod_cache.get(&key.namespace, &key.name) else {
            self.ips.lock().unwrap_or_else(|e| e.into_inner()).release(key);
            return Ok(Next::Done);
        };
        if !self.ours(&pod) {
            return Ok(Next::Done);
        }
        if pod.metadata.deletion_timestamp.is_some() {
            // Containers stop at once; the kubelet then removes the pod for good.
            let uid = pod.metadata.uid.clone();
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions { uid, resource_version: None }),
                ..Default::default()
            };
            match pods.delete(&key.name, &dp).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => return Err(e),
            }
            self.ips.lock().unwrap_or_else(|e| e.into_inner()).release(key);
            return Ok(Next::Done);
        }
        match phase(&pod) {
            "Succeeded" | "Failed" => {
                self.ips.lock().unwrap_or_else(|e| e.into_inner()).release(key);
                Ok(Next::Done)
            }
            "Running" if !is_ready(&pod) => self.report_ready(&pods, &pod).await,
            "Running" => self.maybe_finish(&pods, &pod).await,
            _ => self.start(&pods, &pod, key).await,
        }
    }

    async fn start(&self, pods: &Api<Pod>, pod: &Pod, key: &Key) -> Result<Next, kube::Error> {
        let spec = pod.spec.clone().unwrap_or_default();
        let node_name = spec.node_name.clone().unwrap_or_default();
        let Some(node) = self.node_cache.get("", &node_name) else { return Ok(Next::After(Duration::from_secs(1))) };
        let host_ip = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
            .map(|a| a.address.clone())
            .unwrap_or_default();
        let pod_ip = if spec.host_network == Some(true) {
            host_ip.clone()
        } else {
            let cidr = node.spec.as_ref().and_then(|s| s.pod_cidr.as_deref()).and_then(|c| c.parse::<Ipv4Net>().ok());
            // Without a podCIDR (node IPAM has not run yet) the pod waits, as with a real CNI.
            let Some(cidr) = cidr else { return Ok(Next::After(Duration::from_secs(1))) };
            match self.ips.lock().unwrap_or_else(|e| e.into_inner()).take(&node_name, cidr, key) {
                Some(ip) => ip.to_string(),
                None => return Ok(Next::After(Duration::from_secs(5))),
            }
        };
        let now = Utc::now();
        let status = running_status(pod, &host_ip, &pod_ip, now, 0);
        pods.patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&json!({"status": status}))).await?;
        Ok(self.run_for(pod).map(Next::After).unwrap_or(Next::Done))
    }

    /// The node lifecycle controller marks the pods of a node that stopped reporting not
    /// ready; once the node reports again, its kubelet's status sync finds the difference and
    /// reports its running containers ready again. So does the simulated one.
    async fn report_ready(&self, pods: &Api<Pod>, pod: &Pod) -> Result<Next, kube::Error> {
        let at = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let mut conditions: Vec<Value> = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .map(|c| match c.type_.as_str() {
                "Ready" | "ContainersReady" if c.status != "True" => condition(&c.type_, "True", &at, None),
                _ => serde_json::to_value(c).unwrap_or(Value::Null),
            })
            .collect();
        for missing in ["Ready", "ContainersReady"] {
            if !conditions.iter().any(|c| c["type"] == missing) {
                conditions.push(condition(missing, "True", &at, None));
            }
        }
        let name = pod.metadata.name.clone().unwrap_or_default();
        pods.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"conditions": conditions}})),
        )
        .await?;
        self.maybe_finish(pods, pod).await
    }

    async fn maybe_finish(&self, pods: &Api<Pod>, pod: &Pod) -> Result<Next, kube::Error> {
        let Some(run_for) = self.run_for(pod) else { return Ok(Next::Done) };
        let started = latest_start(pod).unwrap_or_else(Utc::now);
        let ends = started + chrono::Duration::from_std(run_for).unwrap_or_default();
        let now = Utc::now();
        if ends > now {
            return Ok(Next::After((ends - now).to_std().unwrap_or_default()));
        }
        let code: i32 = annotation(pod, EXIT_CODE_ANNOTATION).and_then(|c| c.parse().ok()).unwrap_or(0);
        let policy = pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()).unwrap_or("Always");
        let restart = policy == "Always" || (policy == "OnFailure" && code != 0);
        let name = pod.metadata.name.clone().unwrap_or_default();
        let status = if restart {
            let restarts = pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|c| c.first())
                .map(|c| c.restart_count)
                .unwrap_or(0);
            let host_ip = pod.status.as_ref().and_then(|s| s.host_ip.clone()).unwrap_or_default();
            let pod_ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap_or_default();
            running_status(pod, &host_ip, &pod_ip, now, restarts + 1)
        } else {
            let key = Key::of(pod);
            self.ips.lock().unwrap_or_else(|e| e.into_inner()).release(&key);
            finished_status(pod, started, now, code)
        };
        pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&json!({"status": status}))).await?;
        Ok(if restart { Next::After(run_for) } else { Next::Done })
    }
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn latest_start(pod: &Pod) -> Option<DateTime<Utc>> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .filter_map(|c| c.state.as_ref()?.running.as_ref()?.started_at.as_ref().map(|t| t.0))
        .max()
}

fn image_of(c: &k8s_openapi::api::core::v1::Container) -> String {
    c.image.clone().unwrap_or_default()
}

fn condition(type_: &str, status: &str, at: &str, reason: Option<&str>) -> Value {
    let mut c = json!({"type": type_, "status": status, "lastProbeTime": null, "lastTransitionTime": at});
    if let Some(r) = reason {
        c["reason"] = json!(r);
    }
    c
}

fn running_status(pod: &Pod, host_ip: &str, pod_ip: &str, now: DateTime<Utc>, restarts: i32) -> Value {
    let at = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let spec = pod.spec.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let start_time = pod.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| json!(t)).unwrap_or(json!(at));
    let containers: Vec<Value> = spec
        .containers
        .iter()
        .map(|c| {
            json!({
                "name": c.name, "image": image_of(c), "imageID": format!("sim://{}", image_of(c)),
                "containerID": format!("sim://{uid}-{}-{restarts}", c.name),
                "ready": true, "started": true, "restartCount": restarts,
                "state": {"running": {"startedAt": at}},
            })
        })
        .collect();
    let init: Vec<Value> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| {
            json!({
                "name": c.name, "image": image_of(c), "imageID": format!("sim://{}", image_of(c)),
                "containerID": format!("sim://{uid}-{}", c.name), "ready": true, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": at, "finishedAt": at}},
            })
        })
        .collect();
    let mut status = json!({
        "phase": "Running",
        "hostIP": host_ip, "hostIPs": [{"ip": host_ip}],
        "podIP": pod_ip, "podIPs": [{"ip": pod_ip}],
        "startTime": start_time,
        "conditions": [
            condition("PodReadyToStartContainers", "True", &at, None),
            condition("Initialized", "True", &at, None),
            condition("Ready", "True", &at, None),
            condition("ContainersReady", "True", &at, None),
            condition("PodScheduled", "True", &at, None),
        ],
        "containerStatuses": containers,
    });
    if !init.is_empty() {
        status["initContainerStatuses"] = json!(init);
    }
    status
}

fn finished_status(pod: &Pod, started: DateTime<Utc>, now: DateTime<Utc>, code: i32) -> Value {
    let at = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let started = started.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let spec = pod.spec.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let reason = if code == 0 { "Completed" } else { "Error" };
    let restarts: BTreeMap<String, i32> = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| (c.name.clone(), c.restart_count)).collect())
        .unwrap_or_default();
    let containers: Vec<Value> = spec
        .containers
        .iter()
        .map(|c| {
            json!({
                "name": c.name, "image": image_of(c), "imageID": format!("sim://{}", image_of(c)),
                "containerID": format!("sim://{uid}-{}", c.name),
                "ready": false, "started": false, "restartCount": restarts.get(&c.name).copied().unwrap_or(0),
                "state": {"terminated": {"exitCode": code, "reason": reason, "startedAt": started, "finishedAt": at}},
            })
        })
        .collect();
    json!({
        "phase": if code == 0 { "Succeeded" } else { "Failed" },
        "conditions": [
            condition("PodReadyToStartContainers", "False", &at, None),
            condition("Initialized", "True", &at, None),
            condition("Ready", "False", &at, Some("PodCompleted")),
            condition("ContainersReady", "False", &at, Some("PodCompleted")),
            condition("PodScheduled", "True", &at, None),
        ],
        "containerStatuses": containers,
    })
}
