//! The control plane end to end: the real server's scheduler and controllers, simulated nodes
//! (`skiff sim`) standing in for kubelets, and the real kubectl 1.32 as the client.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::watcher::{self, Event};
use serde_json::Value;

use common::Server;

const T: Duration = Duration::from_secs(30);

fn items(v: &Value) -> Vec<Value> {
    v["items"].as_array().cloned().unwrap_or_default()
}

fn is_ready(p: &Value) -> bool {
    p["status"]["conditions"].as_array().into_iter().flatten().any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// Pods in `ns` with `selector`, not being deleted: (name, node, ready).
fn pods(s: &Server, ns: &str, selector: &str) -> Vec<(String, String, bool)> {
    items(&s.get_json(&["pods", "-n", ns, "-l", selector]))
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap_or("").to_string(),
                p["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
                is_ready(p),
            )
        })
        .collect()
}

fn running(s: &Server, ns: &str, selector: &str) -> usize {
    pods(s, ns, selector).iter().filter(|p| p.2 && !p.1.is_empty()).count()
}

/// Watches pods matching `selector` and records the fewest Ready, non-terminating pods seen
/// at any moment after the first full list.
fn watch_min_ready(
    s: &Server,
    ns: &str,
    selector: &str,
) -> (Arc<Mutex<Option<usize>>>, std::thread::JoinHandle<()>, Arc<std::sync::atomic::AtomicBool>) {
    let min = Arc::new(Mutex::new(None));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (kc, ns, selector) = (s.kubeconfig.clone(), ns.to_string(), selector.to_string());
    let (m, st) = (min.clone(), stop.clone());
    let h = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let k = kube::config::Kubeconfig::read_from(&kc).unwrap();
            let cfg = kube::Config::from_custom_kubeconfig(k, &Default::default()).await.unwrap();
            let client = kube::Client::try_from(cfg).unwrap();
            let api: Api<Pod> = Api::namespaced(client, &ns);
            let mut stream = watcher::watcher(api, watcher::Config::default().labels(&selector)).boxed();
            let mut ready: BTreeMap<String, bool> = BTreeMap::new();
            let mut listed = false;
            while !st.load(std::sync::atomic::Ordering::Relaxed) {
                let ev = match tokio::time::timeout(Duration::from_millis(200), stream.next()).await {
                    Ok(Some(Ok(ev))) => ev,
                    Ok(_) => break,
                    Err(_) => continue,
                };
                let serving = |p: &Pod| {
                    p.metadata.deletion_timestamp.is_none()
                        && p.status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
                };
                match ev {
                    Event::InitApply(p) | Event::Apply(p) => {
                        ready.insert(p.metadata.name.clone().unwrap_or_default(), serving(&p));
                    }
                    Event::Delete(p) => {
                        ready.remove(p.metadata.name.as_deref().unwrap_or(""));
                    }
                    Event::InitDone => listed = true,
                    Event::Init => ready.clear(),
                }
                if listed {
                    let n = ready.values().filter(|r| **r).count();
                    let mut g = m.lock().unwrap();
                    *g = Some(g.map_or(n, |x: usize| x.min(n)));
                }
            }
        });
    });
    (min, h, stop)
}

#[test]
fn deployments_scale_roll_out_and_roll_back() {
    let s = Server::start();
    let _sim = s.sim(&["--nodes", "3"]);
    s.ok(&["create", "namespace", "dep"]);
    s.ok(&["-n", "dep", "create", "deployment", "web", "--image=busybox:1", "--replicas=3"]);
    s.wait_for("3 running web pods", T, || running(&s, "dep", "app=web") == 3);
    let placed = pods(&s, "dep", "app=web");
    let nodes: BTreeSet<&str> = placed.iter().map(|p| p.1.as_str()).collect();
    assert_eq!(nodes.len(), 3, "replicas spread over the three nodes: {placed:?}");
    let ips: Vec<Value> =
        items(&s.get_json(&["pods", "-n", "dep"])).iter().map(|p| p["status"]["podIP"].clone()).collect();
    assert!(
        ips.iter().all(|ip| ip.as_str().is_some_and(|ip| ip.starts_with("10.42."))),
        "pod IPs from the node podCIDRs: {ips:?}"
    );
    let rs = s.ok(&["-n", "dep", "get", "rs", "-o", "jsonpath={.items[*].metadata.name}"]);
    assert!(rs.starts_with("web-") && !rs.contains(' '), "one ReplicaSet: {rs}");

    s.ok(&["-n", "dep", "scale", "deployment", "web", "--replicas=5"]);
    s.wait_for("5 running pods", T, || running(&s, "dep", "app=web") == 5);
    s.ok(&["-n", "dep", "scale", "deployment", "web", "--replicas=4"]);
    s.wait_for("4 pods", T, || pods(&s, "dep", "app=web").len() == 4);

    // A rolling update never drops below replicas - maxUnavailable (4 - 1) ready pods.
    let (min, h, stop) = watch_min_ready(&s, "dep", "app=web");
    std::thread::sleep(Duration::from_millis(500));
    s.ok(&["-n", "dep", "set", "image", "deployment/web", "busybox=busybox:2"]);
    let status = s.ok(&["-n", "dep", "rollout", "status", "deployment/web", "--timeout=60s"]);
    assert!(status.contains("successfully rolled out"), "{status}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    h.join().unwrap();
    let min = min.lock().unwrap().expect("the watch saw the pods");
    assert!(min >= 3, "at least 3 of 4 pods stayed ready during the rollout; saw {min}");
    let images =
        s.ok(&["-n", "dep", "get", "pods", "-l", "app=web", "-o", "jsonpath={.items[*].spec.containers[0].image}"]);
    assert!(images.split_whitespace().all(|i| i == "busybox:2"), "{images}");

    let history = s.ok(&["-n", "dep", "rollout", "history", "deployment/web"]);
    assert!(history.contains("1 ") && history.contains("2 "), "{history}");
    s.ok(&["-n", "dep", "rollout", "undo", "deployment/web"]);
    s.ok(&["-n", "dep", "rollout", "status", "deployment/web", "--timeout=60s"]);
    let image =
        s.ok(&["-n", "dep", "get", "deployment", "web", "-o", "jsonpath={.spec.template.spec.containers[0].image}"]);
    assert_eq!(image, "busybox:1");
    let history = s.ok(&["-n", "dep", "rollout", "history", "deployment/web"]);
    assert!(
        history.contains("2 ") && history.contains("3 ") && !history.contains("\n1 "),
        "revision 1 came back as 3: {history}"
    );
    let rev = s.ok(&[
        "-n",
        "dep",
        "get",
        "deployment",
        "web",
        "-o",
        "jsonpath={.metadata.annotations.deployment\\.kubernetes\\.io/revision}",
    ]);
    assert_eq!(rev, "3");

    s.ok(&["-n", "dep", "rollout", "restart", "deployment/web"]);
    s.ok(&["-n", "dep", "rollout", "status", "deployment/web", "--timeout=60s"]);
    assert_eq!(items(&s.get_json(&["rs", "-n", "dep"])).len(), 3, "a third template after the restart");

    // Pause: template changes wait; resume rolls them out.
    s.ok(&["-n", "dep", "rollout", "pause", "deployment/web"]);
    s.ok(&["-n", "dep", "set", "image", "deployment/web", "busybox=busybox:3"]);
    std::thread::sleep(Duration::from_secs(2));
    let progressing = s.ok(&[
        "-n",
        "dep",
        "get",
        "deployment",
        "web",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Progressing\")].reason}",
    ]);
    assert_eq!(progressing, "DeploymentPaused");
    assert_eq!(items(&s.get_json(&["rs", "-n", "dep"])).len(), 3, "no new ReplicaSet while paused");
    s.ok(&["-n", "dep", "rollout", "resume", "deployment/web"]);
    s.ok(&["-n", "dep", "rollout", "status", "deployment/web", "--timeout=60s"]);
    let ready = s.ok(&[
        "-n",
        "dep",
        "get",
        "deployment",
        "web",
        "-o",
        "jsonpath={.status.readyReplicas}/{.status.updatedReplicas}/{.status.availableReplicas}",
    ]);
    assert_eq!(ready, "4/4/4");
}

#[test]
fn a_replicaset_creating_30_pods_records_25_events_the_last_16_combined() {
    let s = Server::start();
    let _sim = s.sim(&["--nodes", "2"]);
    s.ok(&["create", "namespace", "ev"]);
    s.ok(&["-n", "ev", "create", "deployment", "many", "--image=busybox:1", "--replicas=30"]);
    s.wait_for("30 pods", T, || pods(&s, "ev", "app=many").len() == 30);
    let rs = s.ok(&["-n", "ev", "get", "rs", "-o", "jsonpath={.items[0].metadata.name}"]);
    // (message, count) of the ReplicaSet's SuccessfulCreate events.
    let created = || -> Vec<(String, i64)> {
        let selector = format!("involvedObject.name={rs},reason=SuccessfulCreate");
        items(&s.get_json(&["events", "-n", "ev", "--field-selector", &selector]))
            .iter()
            .map(|e| (e["message"].as_str().unwrap_or("").to_string(), e["count"].as_i64().unwrap_or(0)))
            .collect()
    };
    // As upstream's correlator: nine messages of their own, the tenth and later combined into
    // one Event whose count grows, and nothing past the object's burst of 25.
    s.wait_for("the combined event to count 16", T, || created().iter().any(|(_, n)| *n == 16));
    std::thread::sleep(Duration::from_secs(1));
    let events = created();
    let (combined, single): (Vec<_>, Vec<_>) =
        events.iter().partition(|(m, _)| m.starts_with("(combined from similar events): Created pod: many-"));
    assert_eq!(combined.len(), 1, "{events:?}");
    assert_eq!(combined[0].1, 16, "{events:?}");
    assert_eq!(single.len(), 9, "{events:?}");
    assert!(single.iter().all(|(m, n)| m.starts_with("Created pod: many-") && *n == 1), "{events:?}");
    // The scheduler's events are about each pod: one Scheduled event per pod.
    let scheduled = items(&s.get_json(&["events", "-n", "ev", "--field-selector", "reason=Scheduled"])).len();
    assert_eq!(scheduled, 30);
}

#[test]
fn recreate_stops_old_pods_before_starting_new_ones() {
    let s = Server::start();
    let _sim = s.sim(&["--nodes", "2"]);
    s.ok(&["create", "namespace", "rec"]);
    s.apply(
        r#"{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "db", "namespace": "rec"},
            "spec": {"replicas": 2, "strategy": {"type": "Recreate"}, "selector": {"matchLabels": {"app": "db"}},
              "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "db", "image": "db:1"}]}}}}"#,
    );
    s.ok(&["-n", "rec", "rollout", "status", "deployment/db", "--timeout=60s"]);
    let (min, h, stop) = watch_min_ready(&s, "rec", "app=db");
    std::thread::sleep(Duration::from_millis(500));
    s.ok(&["-n", "rec", "set", "image", "deployment/db", "db=db:2"]);
    // While new pods exist, no old pod may: sample pods until the rollout completes.
    let mut mixed = false;
    s.wait_for("the recreate rollout", T, || {
        let all = items(&s.get_json(&["pods", "-n", "rec"]));
        let images: BTreeSet<String> =
            all.iter().map(|p| p["spec"]["containers"][0]["image"].as_str().unwrap_or("").to_string()).collect();
        mixed |= images.len() > 1;
        all.len() == 2 && images.len() == 1 && images.contains("db:2") && all.iter().all(is_ready)
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    h.join().unwrap();
    assert!(!mixed, "old and new pods never coexist under Recreate");
    assert_eq!(*min.lock().unwrap(), Some(0), "Recreate has a moment without ready pods");
}

#[test]
fn scheduler_places_pods_where_upstream_would() {
    let s = Server::start();
    let _plain = s.sim(&["--nodes", "2", "--node-prefix", "plain-", "--cpu", "2", "--node-label", "disk=hdd"]);
    let _ssd = s.sim(&["--nodes", "1", "--node-prefix", "ssd-", "--cpu", "2", "--node-label", "disk=ssd"]);
    let _gpu = s.sim(&["--nodes", "1", "--node-prefix", "gpu-", "--node-taint", "gpu=true:NoSchedule"]);
    s.ok(&["create", "namespace", "sch"]);
    let pod = |name: &str, extra: &str| {
        format!(
            r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "{name}", "namespace": "sch", "labels": {{"app": "{name}"}}}},
                "spec": {{"containers": [{{"name": "c", "image": "busybox"}}]{extra}}}}}"#
        )
    };
    let node_of = |name: &str| s.ok(&["-n", "sch", "get", "pod", name, "-o", "jsonpath={.spec.nodeName}"]);
    let wait_bound = |name: &str| s.wait_for(&format!("{name} bound"), T, || !node_of(name).is_empty());

    s.apply(&pod("sel", r#", "nodeSelector": {"disk": "ssd"}"#));
    wait_bound("sel");
    assert_eq!(node_of("sel"), "ssd-0");

    s.apply(&pod("tol", r#", "nodeSelector": {"kubernetes.io/hostname": "gpu-0"}, "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]"#));
    wait_bound("tol");
    assert_eq!(node_of("tol"), "gpu-0");

    // Without the toleration nothing fits: the condition and event say why, as upstream (whose
    // preemption adds that removing pods cannot change any of these).
    s.apply(&pod("notol", r#", "nodeSelector": {"kubernetes.io/hostname": "gpu-0"}"#));
    let msg = "0/4 nodes are available: 1 node(s) had untolerated taint {gpu: true}, 3 node(s) didn't match Pod's node affinity/selector. \
               preemption: 0/4 nodes are available: 4 Preemption is not helpful for scheduling..";
    s.wait_for("the Unschedulable condition", T, || {
        s.ok(&[
            "-n",
            "sch",
            "get",
            "pod",
            "notol",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].message}",
        ]) == msg
    });
    let reason = s.ok(&[
        "-n",
        "sch",
        "get",
        "pod",
        "notol",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].reason}",
    ]);
    assert_eq!(reason, "Unschedulable");
    s.wait_for("a FailedScheduling event", T, || {
        s.ok(&[
            "-n",
            "sch",
            "get",
            "events",
            "--field-selector",
            "reason=FailedScheduling,involvedObject.name=notol",
            "-o",
            "jsonpath={.items[*].message}",
        ])
        .contains(msg)
    });
    // Tolerating it later gets it scheduled (the pending pod is retried on change).
    s.ok(&["-n", "sch", "patch", "pod", "notol", "--type=json", "-p", r#"[{"op": "add", "path": "/spec/tolerations", "value": [{"key": "gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"}]}]"#]);
    wait_bound("notol");
    assert_eq!(node_of("notol"), "gpu-0");

    // Required node affinity with NotIn; preferred affinity picks among the rest.
    s.apply(&pod("aff", r#", "affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "disk", "operator": "In", "values": ["hdd", "ssd"]}]}]},
        "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "preference": {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["plain-1"]}]}}]}}"#));
    wait_bound("aff");
    assert_eq!(node_of("aff"), "plain-1");

    // Pod anti-affinity by hostname keeps two pods apart; pod affinity brings one next to another.
    s.apply(&pod("anti-a", r#", "nodeSelector": {"disk": "hdd"}"#).replace(r#""app": "anti-a""#, r#""app": "anti""#));
    wait_bound("anti-a");
    let anti = r#", "nodeSelector": {"disk": "hdd"}, "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{"labelSelector": {"matchLabels": {"app": "anti"}}, "topologyKey": "kubernetes.io/hostname"}]}}"#;
    s.apply(&pod("anti-b", anti).replace(r#""app": "anti-b""#, r#""app": "anti""#));
    wait_bound("anti-b");
    assert_ne!(node_of("anti-a"), node_of("anti-b"));
    s.apply(&pod("anti-c", anti).replace(r#""app": "anti-c""#, r#""app": "anti""#));
    s.wait_for("anti-c unschedulable", T, || {
        s.ok(&[
            "-n",
            "sch",
            "get",
            "pod",
            "anti-c",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].message}",
        ])
        .contains("didn't match pod anti-affinity rules")
    });
    s.apply(&pod("near", r#", "affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{"labelSelector": {"matchLabels": {"app": "sel"}}, "topologyKey": "kubernetes.io/hostname"}]}}"#));
    wait_bound("near");
    assert_eq!(node_of("near"), "ssd-0");

    // Resource fit: 2 CPUs per node; a 3-CPU pod fits nowhere, 1.5-CPU pods one per node.
    s.apply(
        &pod("big", "")
            .replace(r#""image": "busybox"}"#, r#""image": "busybox", "resources": {"requests": {"cpu": "3"}}}"#),
    );
    s.wait_for("big unschedulable for cpu", T, || {
        s.ok(&[
            "-n",
            "sch",
            "get",
            "pod",
            "big",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].message}",
        ])
        .contains("Insufficient cpu")
    });

    // Topology spread over a zone label: 4 pods over 2 zones with maxSkew 1 → 2 and 2.
    s.ok(&["label", "node", "plain-0", "zone=a"]);
    s.ok(&["label", "node", "plain-1", "zone=b"]);
    s.ok(&["label", "node", "ssd-0", "zone=b"]);
    for i in 0..4 {
        let spread = r#", "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "spread"}}}]"#;
        s.apply(&pod(&format!("spread-{i}"), spread).replace(&format!(r#""app": "spread-{i}""#), r#""app": "spread""#));
        wait_bound(&format!("spread-{i}"));
    }
    let mut zones: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..4 {
        let node = node_of(&format!("spread-{i}"));
        let zone = s.ok(&["get", "node", &node, "-o", "jsonpath={.metadata.labels.zone}"]);
        *zones.entry(zone).or_default() += 1;
    }
    assert_eq!(zones, BTreeMap::from([("a".to_string(), 2), ("b".to_string(), 2)]));
}

#[test]
fn garbage_collection_background_foreground_orphan() {
    let s = Server::start();
    let _sim = s.sim(&["--nodes", "2"]);
    s.ok(&["create", "namespace", "gc"]);
    for name in ["bg", "or"] {
        s.ok(&["-n", "gc", "create", "deployment", name, "--image=busybox", "--replicas=2"]);
    }
    // fg's pods carry a finalizer, so foreground deletion must wait for them.
    s.apply(
        r#"{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "fg", "namespace": "gc"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "fg"}},
              "template": {"metadata": {"labels": {"app": "fg"}, "finalizers": ["example.com/hold"]},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}"#,
    );
    s.wait_for("6 running pods", T, || pods(&s, "gc", "app in (bg,fg,or)").iter().filter(|p| p.2).count() == 6);

    s.ok(&["-n", "gc", "delete", "deployment", "bg"]);
    s.wait_for("bg's ReplicaSet and pods gone", T, || {
        items(&s.get_json(&["rs", "-n", "gc", "-l", "app=bg"])).is_empty()
            && items(&s.get_json(&["pods", "-n", "gc", "-l", "app=bg"])).is_empty()
    });

    // Foreground: the Deployment stays (with the finalizer) until its dependents are gone.
    s.ok(&["-n", "gc", "delete", "deployment", "fg", "--cascade=foreground", "--wait=false"]);
    s.wait_for("fg's pods terminating", T, || {
        items(&s.get_json(&["pods", "-n", "gc", "-l", "app=fg"]))
            .iter()
            .all(|p| p["metadata"]["deletionTimestamp"].is_string())
    });
    std::thread::sleep(Duration::from_secs(1));
    let d = s.get_json(&["deployment", "-n", "gc", "fg"]);
    assert!(d["metadata"]["deletionTimestamp"].is_string(), "{d}");
    assert_eq!(d["metadata"]["finalizers"], serde_json::json!(["foregroundDeletion"]));
    for p in items(&s.get_json(&["pods", "-n", "gc", "-l", "app=fg"])) {
        let name = p["metadata"]["name"].as_str().unwrap().to_string();
        s.ok(&["-n", "gc", "patch", "pod", &name, "--type=merge", "-p", r#"{"metadata": {"finalizers": null}}"#]);
    }
    s.wait_for("fg deleted after its dependents", T, || {
        !s.kubectl(&["-n", "gc", "get", "deployment", "fg"]).status.success()
    });
    assert!(items(&s.get_json(&["rs", "-n", "gc", "-l", "app=fg"])).is_empty());
    assert!(items(&s.get_json(&["pods", "-n", "gc", "-l", "app=fg"])).is_empty());

    // Orphan: the ReplicaSet and pods stay, without an owner.
    s.ok(&["-n", "gc", "delete", "deployment", "or", "--cascade=orphan"]);
    std::thread::sleep(Duration::from_secs(2));
    let rs = items(&s.get_json(&["rs", "-n", "gc", "-l", "app=or"]));
    assert_eq!(rs.len(), 1);
    assert!(rs[0]["metadata"]["ownerReferences"].is_null(), "orphaned: {}", rs[0]["metadata"]);
    assert_eq!(running(&s, "gc", "app=or"), 2);
}

#[test]
fn deleting_a_namespace_empties_it_then_removes_it() {
    let s = Server::start();
    let _sim = s.sim(&["--nodes", "2"]);
    s.ok(&["create", "namespace", "full"]);
    s.wait_for("the default ServiceAccount and root CA", T, || {
        s.kubectl(&["-n", "full", "get", "serviceaccount", "default"]).status.success()
            && s.kubectl(&["-n", "full", "get", "configmap", "kube-root-ca.crt"]).status.success()
    });
    let ca = s.ok(&["-n", "full", "get", "configmap", "kube-root-ca.crt", "-o", "jsonpath={.data.ca\\.crt}"]);
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
    for i in 0..5 {
        s.ok(&["-n", "full", "create", "deployment", &format!("d{i}"), "--image=busybox", "--replicas=2"]);
        s.ok(&["-n", "full", "create", "configmap", &format!("c{i}"), "--from-literal=k=v"]);
        s.ok(&["-n", "full", "create", "secret", "generic", &format!("s{i}"), "--from-literal=k=v"]);
        s.ok(&["-n", "full", "create", "service", "clusterip", &format!("svc{i}"), "--tcp=80:80"]);
    }
    s.apply(r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "held", "namespace": "full", "finalizers": ["example.com/hold"]}}"#);
    s.wait_for("10 running pods", T, || running(&s, "full", "app") == 10);
    s.ok(&["delete", "namespace", "full", "--wait=false"]);
    s.wait_for("the finalizer reported as remaining", T, || {
        s.ok(&[
            "get",
            "namespace",
            "full",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"NamespaceFinalizersRemaining\")].message}",
        ])
        .contains("example.com/hold in 1 resource instances")
    });
    assert_eq!(s.ok(&["get", "namespace", "full", "-o", "jsonpath={.status.phase}"]), "Terminating");
    s.ok(&["-n", "full", "patch", "configmap", "held", "--type=merge", "-p", r#"{"metadata": {"finalizers": null}}"#]);
    s.wait_for("the namespace gone", T, || !s.kubectl(&["get", "namespace", "full"]).status.success());
    for kind in ["pods", "replicasets", "deployments", "configmaps", "secrets", "services", "serviceaccounts"] {
        assert!(items(&s.get_json(&[kind, "-n", "full"])).is_empty(), "{kind} left behind");
    }
    // A namespace of the same name starts empty.
    s.ok(&["create", "namespace", "full"]);
    assert!(items(&s.get_json(&["deployments", "-n", "full"])).is_empty());
}

#[test]
fn a_node_that_stops_heartbeating_goes_not_ready_and_its_pods_move() {
    let s = Server::start_with(&["--node-monitor-grace-period", "4"]);
    let _stay = s.sim(&["--nodes", "2", "--node-prefix", "stay-"]);
    let mut gone = s.sim(&["--nodes", "1", "--node-prefix", "gone-"]);
    s.ok(&["create", "namespace", "mv"]);
    s.apply(
        r#"{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "app", "namespace": "mv"},
            "spec": {"replicas": 6, "selector": {"matchLabels": {"app": "mv"}},
              "template": {"metadata": {"labels": {"app": "mv"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}],
                "tolerations": [{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 2}]}}}}"#,
    );
    s.wait_for("6 running pods, some on gone-0", T, || {
        let p = pods(&s, "mv", "app=mv");
        p.iter().filter(|p| p.2).count() == 6 && p.iter().any(|p| p.1 == "gone-0")
    });
    gone.kill();
    s.wait_for("gone-0 NotReady with the unreachable taint", T, || {
        let n = s.get_json(&["node", "gone-0"]);
        let ready = n["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Ready")
            .cloned()
            .unwrap_or_default();
        let taints = n["spec"]["taints"].to_string();
        ready["status"] == "Unknown"
            && ready["reason"] == "NodeStatusUnknown"
            && taints.contains("node.kubernetes.io/unreachable")
    });
    let table = s.ok(&["get", "node", "gone-0"]);
    assert!(table.contains("NotReady"), "{table}");
    s.wait_for("6 ready pods, none on gone-0", T, || {
        let p = pods(&s, "mv", "app=mv");
        p.iter().filter(|p| p.2 && p.1 != "gone-0").count() == 6 && p.iter().all(|p| p.1 != "gone-0")
    });
    // A pod that tolerates the taint for good stays put.
    let events = s.ok(&["-n", "mv", "get", "events", "--field-selector", "reason=TaintManagerEviction", "-o", "name"]);
    assert!(!events.trim().is_empty(), "eviction events recorded");
}

#[test]
fn pods_of_a_node_that_comes_back_are_ready_again() {
    let s = Server::start_with(&["--node-monitor-grace-period", "4"]);
    let sim = s.sim(&["--nodes", "1", "--node-prefix", "hang-"]);
    s.ok(&["create", "namespace", "back"]);
    // Tolerating the unreachable taint for good, the pods stay on the node while it is away.
    s.apply(
        r#"{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "app", "namespace": "back"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "back"}},
              "template": {"metadata": {"labels": {"app": "back"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}],
                "tolerations": [{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}]}}}}"#,
    );
    s.wait_for("3 ready pods", T, || running(&s, "back", "app=back") == 3);
    let before: Vec<String> = pods(&s, "back", "app=back").into_iter().map(|p| p.0).collect();
    sim.pause();
    s.wait_for("the pods marked not ready, and the Deployment counting none", T, || {
        let p = pods(&s, "back", "app=back");
        p.len() == 3
            && p.iter().all(|p| !p.2)
            && s.ok(&["-n", "back", "get", "deployment", "app", "-o", "jsonpath={.status.readyReplicas}"]).is_empty()
    });
    sim.resume();
    s.wait_for("the same 3 pods ready again", T, || {
        let p = pods(&s, "back", "app=back");
        p.iter().filter(|p| p.2).count() == 3 && p.iter().all(|p| before.contains(&p.0))
    });
    s.wait_for("the Deployment counting them ready", T, || {
        s.ok(&["-n", "back", "get", "deployment", "app", "-o", "jsonpath={.status.readyReplicas}"]) == "3"
    });
}

#[test]
fn restarts_during_a_scale_up_never_duplicate_pods() {
    let mut s = Server::start();
    let _sim = s.sim(&["--nodes", "2"]);
    s.ok(&["create", "namespace", "rs"]);
    s.apply(
        r#"{"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "five", "namespace": "rs"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "five"}},
              "template": {"metadata": {"labels": {"app": "five"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}"#,
    );
    s.wait_for("1 pod", T, || pods(&s, "rs", "app=five").len() == 1);
    s.ok(&["-n", "rs", "scale", "rs", "five", "--replicas=5"]);
    for _ in 0..3 {
        s.kill9();
        s.launch();
        std::thread::sleep(Duration::from_millis(300));
    }
    s.wait_for("5 running pods", T, || running(&s, "rs", "app=five") == 5);
    std::thread::sleep(Duration::from_secs(2));
    let all = items(&s.get_json(&["pods", "-n", "rs"]));
    assert_eq!(
        all.len(),
        5,
        "exactly 5 pods after restarts: {:?}",
        all.iter().map(|p| p["metadata"]["name"].clone()).collect::<Vec<_>>()
    );
    let status = s.ok(&[
        "-n",
        "rs",
        "get",
        "rs",
        "five",
        "-o",
        "jsonpath={.status.replicas}/{.status.readyReplicas}/{.status.availableReplicas}",
    ]);
    assert_eq!(status, "5/5/5");
}

#[test]
fn an_unschedulable_deployment_fails_its_progress_deadline_without_spinning() {
    let s = Server::start();
    let _sim = s.sim(&["--nodes", "1", "--cpu", "1"]);
    s.ok(&["create", "namespace", "stuck"]);
    s.apply(
        r#"{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "huge", "namespace": "stuck"},
            "spec": {"replicas": 2, "progressDeadlineSeconds": 3, "selector": {"matchLabels": {"app": "huge"}},
              "template": {"metadata": {"labels": {"app": "huge"}}, "spec": {"containers": [{"name": "c", "image": "busybox",
                "resources": {"requests": {"cpu": "4"}}}]}}}}"#,
    );
    s.wait_for("ProgressDeadlineExceeded", T, || {
        s.ok(&[
            "-n",
            "stuck",
            "get",
            "deployment",
            "huge",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Progressing\")].reason}",
        ]) == "ProgressDeadlineExceeded"
    });
    let d = s.get_json(&["deployment", "-n", "stuck", "huge"]);
    let cond =
        d["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Progressing").cloned().unwrap();
    assert_eq!(cond["status"], "False");
    assert!(cond["message"].as_str().unwrap().ends_with("has timed out progressing."), "{cond}");
    let avail =
        d["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Available").cloned().unwrap();
    assert_eq!(avail["reason"], "MinimumReplicasUnavailable");
    let out = s.kubectl(&["-n", "stuck", "rollout", "status", "deployment/huge", "--timeout=10s"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exceeded its progress deadline"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Not spinning: the server's CPU time stays small while the pods wait.
    let pid = s.child.as_ref().unwrap().id();
    let cpu = || -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let f: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    };
    let before = cpu();
    std::thread::sleep(Duration::from_secs(5));
    let ticks = cpu() - before;
    assert!(ticks < 100, "the server used {ticks} CPU ticks in 5 s while two pods wait");
}

#[test]
fn component_flags_turn_parts_off() {
    let s = Server::start_with(&["--disable-scheduler", "--disable-controller", "deployment"]);
    let _sim = s.sim(&["--nodes", "1"]);
    s.ok(&["create", "namespace", "off"]);
    s.ok(&["-n", "off", "create", "deployment", "web", "--image=busybox"]);
    s.ok(&["-n", "off", "run", "lone", "--image=busybox"]);
    std::thread::sleep(Duration::from_secs(2));
    assert!(items(&s.get_json(&["rs", "-n", "off"])).is_empty(), "no deployment controller");
    assert_eq!(s.ok(&["-n", "off", "get", "pod", "lone", "-o", "jsonpath={.spec.nodeName}"]), "", "no scheduler");
    // The service account controller still runs.
    assert!(s.kubectl(&["-n", "off", "get", "serviceaccount", "default"]).status.success());
    let leases = s.ok(&["-n", "kube-system", "get", "lease", "-o", "name"]);
    assert!(
        leases.contains("lease.coordination.k8s.io/kube-controller-manager") && !leases.contains("kube-scheduler"),
        "{leases}"
    );

    let out = std::process::Command::new(common::skiff_bin())
        .args(["server", "--disable-controller", "replicaset,nosuch"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(
            "skiff: invalid value \"nosuch\" for --disable-controller: not a controller; known: deployment, "
        ),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1);
}

#[test]
fn kubectl_drain_cordons_and_evicts_within_the_disruption_budget() {
    let s = Server::start();
    let _sim = s.sim(&["--nodes", "3"]);
    s.ok(&["create", "namespace", "drn"]);
    s.apply(
        r#"{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "drn"},
            "spec": {"replicas": 6, "selector": {"matchLabels": {"app": "web"}},
              "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}"#,
    );
    s.apply(
        r#"{"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent", "namespace": "drn"},
            "spec": {"selector": {"matchLabels": {"app": "agent"}},
              "template": {"metadata": {"labels": {"app": "agent"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}"#,
    );
    // At first the budget allows no disruption at all.
    s.apply(
        r#"{"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "web", "namespace": "drn"},
            "spec": {"minAvailable": 6, "selector": {"matchLabels": {"app": "web"}}}}"#,
    );
    s.wait_for("6 web and 3 agent pods ready", T, || {
        running(&s, "drn", "app=web") == 6 && running(&s, "drn", "app=agent") == 3
    });
    s.wait_for("the budget has seen the pods", T, || {
        s.ok(&[
            "-n",
            "drn",
            "get",
            "pdb",
            "web",
            "-o",
            "jsonpath={.status.currentHealthy}/{.status.disruptionsAllowed}",
        ]) == "6/0"
    });
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for p in pods(&s, "drn", "app=web") {
        *per_node.entry(p.1).or_default() += 1;
    }
    let (node, _) = per_node.iter().max_by_key(|(_, n)| **n).map(|(n, c)| (n.clone(), *c)).unwrap();

    // A pod no controller owns stops the drain unless forced, as upstream.
    s.apply(&format!(
        r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "bare", "namespace": "drn"}},
            "spec": {{"nodeName": "{node}", "containers": [{{"name": "c", "image": "busybox"}}]}}}}"#
    ));
    let err = s.fails(&["drain", &node, "--ignore-daemonsets", "--timeout=20s"]);
    assert!(err.contains("cannot delete Pods that declare no controller (use --force to override): drn/bare"), "{err}");
    assert_eq!(s.ok(&["get", "node", &node, "-o", "jsonpath={.spec.unschedulable}"]), "true", "drain cordons first");

    let (min, h, stop) = watch_min_ready(&s, "drn", "app=web");
    std::thread::sleep(Duration::from_millis(500));
    let drain = {
        let kc = s.kubeconfig.clone();
        let node = node.clone();
        std::thread::spawn(move || {
            std::process::Command::new(common::KUBECTL)
                .args(["drain", &node, "--ignore-daemonsets", "--force", "--timeout=60s"])
                .env("KUBECONFIG", kc)
                .output()
                .expect("run kubectl drain")
        })
    };
    // kubectl retries refused evictions every 5 s; the budget holds every web pod in place.
    std::thread::sleep(Duration::from_secs(7));
    assert!(!drain.is_finished(), "drain waits for the budget");
    assert!(pods(&s, "drn", "app=web").iter().any(|p| p.1 == node), "web pods still on {node}");
    s.ok(&[
        "-n",
        "drn",
        "patch",
        "pdb",
        "web",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/spec/minAvailable"},{"op":"add","path":"/spec/maxUnavailable","value":1}]"#,
    ]);
    let drain = drain.join().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    h.join().unwrap();
    let out = format!("{}{}", String::from_utf8_lossy(&drain.stdout), String::from_utf8_lossy(&drain.stderr));
    assert!(drain.status.success(), "{out}");
    assert!(out.contains(&format!("node/{node} drained")), "{out}");
    assert!(out.contains("ignoring DaemonSet-managed Pods: drn/agent-"), "{out}");
    assert!(out.contains("Cannot evict pod as it would violate the pod's disruption budget."), "{out}");
    let min = min.lock().unwrap().expect("the watch saw the pods");
    assert!(min >= 5, "the budget kept at least 5 of 6 web pods ready during the drain; saw {min}");
    let after = pods(&s, "drn", "app=web");
    assert!(after.iter().all(|p| p.1 != node), "no web pod left on {node}: {after:?}");
    s.wait_for("6 web pods ready elsewhere", T, || running(&s, "drn", "app=web") == 6);
    assert!(pods(&s, "drn", "app=agent").iter().any(|p| p.1 == node), "the daemon pod stays");
    let table = s.ok(&["get", "node", &node]);
    assert!(table.contains("SchedulingDisabled"), "{table}");
    s.ok(&["uncordon", &node]);
    assert_eq!(s.ok(&["get", "node", &node, "-o", "jsonpath={.spec.unschedulable}"]), "");

    // A node's pod range is set once and can never move.
    let cidr = s.ok(&["get", "node", &node, "-o", "jsonpath={.spec.podCIDR}"]);
    assert!(cidr.starts_with("10.42."), "{cidr}");
    let err = s.fails(&[
        "patch",
        "node",
        &node,
        "-p",
        r#"{"spec":{"podCIDR":"10.42.250.0/24","podCIDRs":["10.42.250.0/24"]}}"#,
    ]);
    assert!(
        err.contains(r#"spec.podCIDRs: Forbidden: node updates may not change podCIDR except from "" to valid"#),
        "{err}"
    );
    assert_eq!(s.ok(&["get", "node", &node, "-o", "jsonpath={.spec.podCIDR}"]), cidr);
}

#[test]
fn pod_gc_deletes_terminated_pods_beyond_the_threshold_and_pods_of_deleted_nodes() {
    let s = Server::start_with(&["--terminated-pod-gc-threshold", "2", "--node-monitor-grace-period", "4"]);
    let _sim = s.sim(&["--nodes", "1"]);
    s.ok(&["create", "namespace", "gc"]);
    for i in 0..5 {
        s.apply(&format!(
            r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "done-{i}", "namespace": "gc",
                  "annotations": {{"sim.skiff.io/run-for": "100ms"}}}},
                "spec": {{"restartPolicy": "Never", "containers": [{{"name": "c", "image": "busybox"}}]}}}}"#
        ));
        // Distinct creation seconds give the collector an unambiguous age order.
        std::thread::sleep(Duration::from_millis(1100));
    }
    s.apply(
        r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "stays", "namespace": "gc"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}"#,
    );
    // Bound to a node that does not exist: nobody will ever run it.
    s.apply(
        r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "orphan", "namespace": "gc"},
            "spec": {"nodeName": "ghost", "containers": [{"name": "c", "image": "busybox"}]}}"#,
    );
    let names = || -> BTreeSet<String> {
        items(&s.get_json(&["pods", "-n", "gc"]))
            .iter()
            .map(|p| p["metadata"]["name"].as_str().unwrap_or("").to_string())
            .collect()
    };
    s.wait_for("the 3 oldest finished pods and the orphan collected", T, || {
        names() == BTreeSet::from(["done-3".to_string(), "done-4".to_string(), "stays".to_string()])
    });
    for p in ["done-3", "done-4"] {
        assert_eq!(s.ok(&["-n", "gc", "get", "pod", p, "-o", "jsonpath={.status.phase}"]), "Succeeded");
    }
    // A running pod is never the collector's business, however long it waits.
    std::thread::sleep(Duration::from_secs(3));
    assert!(names().contains("stays"));
}
