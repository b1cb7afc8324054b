//! Priority preemption end to end: the real scheduler on simulated nodes (`skiff sim`), driven
//! with the real kubectl 1.32.

mod common;

use std::time::Duration;

use serde_json::Value;

use common::Server;

const T: Duration = Duration::from_secs(30);

const CLASSES: &str = r#"
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: low}
value: 100
---
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: high}
value: 1000
---
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: high-never}
value: 1000
preemptionPolicy: Never
"#;

fn items(v: &Value) -> Vec<Value> {
    v["items"].as_array().cloned().unwrap_or_default()
}

fn pod(s: &Server, ns: &str, name: &str) -> Option<Value> {
    let out = s.kubectl(&["-n", ns, "get", "pod", name, "-o", "json"]);
    out.status.success().then(|| serde_json::from_slice(&out.stdout).unwrap_or(Value::Null))
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn is_running(p: &Value) -> bool {
    str_at(p, "/status/phase") == "Running" && p["metadata"]["deletionTimestamp"].is_null()
}

/// A pod with `cpu` requested and the priority class `class`; `extra` goes into its spec.
fn pod_manifest(ns: &str, name: &str, class: &str, cpu: &str, labels: &str, extra: &str) -> String {
    format!(
        r#"{{"apiVersion": "v1", "kind": "Pod",
            "metadata": {{"name": "{name}", "namespace": "{ns}", "labels": {{{labels}}}}},
            "spec": {{"priorityClassName": "{class}", {extra}
                "containers": [{{"name": "c", "image": "busybox", "resources": {{"requests": {{"cpu": "{cpu}"}}}}}}]}}}}"#
    )
}

/// Messages of the events with `reason` about pod `name`.
fn events(s: &Server, ns: &str, name: &str, reason: &str) -> Vec<String> {
    let selector = format!("reason={reason},involvedObject.name={name}");
    items(&s.get_json(&["events", "-n", ns, "--field-selector", &selector]))
        .iter()
        .map(|e| str_at(e, "/message").to_string())
        .collect()
}

#[test]
fn a_high_priority_pod_preempts_the_fewest_low_priority_pods() {
    let s = Server::start();
    let _sim = s.sim(&["--nodes", "2", "--cpu", "2"]);
    s.apply(CLASSES);
    s.ok(&["create", "namespace", "pre"]);
    // The finalizer keeps a preempted pod terminating until the test lets it go, as a kubelet
    // would while the containers stop.
    s.apply(
        r#"{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "low", "namespace": "pre"},
            "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "low"}},
              "template": {"metadata": {"labels": {"app": "low"}, "finalizers": ["skiff.io/test-hold"]},
                "spec": {"priorityClassName": "low", "containers": [{"name": "c", "image": "busybox",
                  "resources": {"requests": {"cpu": "1"}}}]}}}}"#,
    );
    let low = || items(&s.get_json(&["pods", "-n", "pre", "-l", "app=low"]));
    s.wait_for("4 low pods running on the 2 full nodes", T, || low().iter().filter(|p| is_running(p)).count() == 4);
    assert_eq!(low()[0]["spec"]["priority"], 100);

    s.apply(&pod_manifest("pre", "vip", "high", "1", r#""app": "vip""#, ""));
    let mut node = String::new();
    s.wait_for("vip nominated to a node", T, || {
        node = pod(&s, "pre", "vip").map(|p| str_at(&p, "/status/nominatedNodeName").to_string()).unwrap_or_default();
        !node.is_empty()
    });
    let vip = pod(&s, "pre", "vip").expect("vip");
    let vip_uid = str_at(&vip, "/metadata/uid").to_string();
    assert_eq!(str_at(&vip, "/spec/nodeName"), "", "vip waits for its victim before binding");

    // One victim is enough for one cpu: the other pod on the node is put back.
    s.wait_for("the victim terminating", T, || low().iter().any(|p| !p["metadata"]["deletionTimestamp"].is_null()));
    let terminating: Vec<Value> = low()
        .into_iter()
        .filter(|p| !p["metadata"]["deletionTimestamp"].is_null() && str_at(p, "/spec/nodeName") == node)
        .collect();
    assert_eq!(terminating.len(), 1, "exactly one victim, on {node}: {terminating:?}");
    assert_eq!(
        low().iter().filter(|p| !p["metadata"]["deletionTimestamp"].is_null()).count(),
        1,
        "no pod of the other node is touched"
    );
    let victim = &terminating[0];
    let victim_name = str_at(victim, "/metadata/name").to_string();
    let conditions = victim["status"]["conditions"].as_array().cloned().unwrap_or_default();
    let target = conditions.iter().find(|c| c["type"] == "DisruptionTarget").expect("DisruptionTarget condition");
    assert_eq!(target["status"], "True");
    assert_eq!(target["reason"], "PreemptionByScheduler");
    assert_eq!(target["message"], "default-scheduler: preempting to accommodate a higher priority pod");
    let want = format!("Preempted by pod {vip_uid} on node {node}");
    s.wait_for("the Preempted event", T, || events(&s, "pre", &victim_name, "Preempted").contains(&want));

    // The victim goes; vip binds where it was nominated.
    s.ok(&["-n", "pre", "patch", "pod", &victim_name, "--type=merge", "-p", r#"{"metadata":{"finalizers":null}}"#]);
    s.wait_for("vip running", T, || pod(&s, "pre", "vip").is_some_and(|p| is_running(&p)));
    let vip = pod(&s, "pre", "vip").expect("vip");
    assert_eq!(str_at(&vip, "/spec/nodeName"), node);
    assert_eq!(str_at(&vip, "/status/nominatedNodeName"), node);

    // The Deployment's replacement finds no room: lower priority cannot take what was freed
    // for vip, nor preempt pods of its own priority.
    let pending = || {
        low()
            .into_iter()
            .find(|p| p["metadata"]["deletionTimestamp"].is_null() && str_at(p, "/spec/nodeName").is_empty())
    };
    s.wait_for("a pending replacement", T, || pending().is_some());
    let replacement = str_at(&pending().expect("replacement"), "/metadata/name").to_string();
    let want = "0/2 nodes are available: 2 Insufficient cpu. preemption: 0/2 nodes are available: \
                2 No preemption victims found for incoming pod..";
    s.wait_for("the replacement's FailedScheduling event", T, || {
        events(&s, "pre", &replacement, "FailedScheduling").iter().any(|m| m == want)
    });
    std::thread::sleep(Duration::from_secs(2));
    let p = pod(&s, "pre", &replacement).expect("replacement");
    assert_eq!(str_at(&p, "/spec/nodeName"), "", "the replacement stays pending");
    assert_eq!(str_at(&p, "/status/nominatedNodeName"), "");
    assert_eq!(low().iter().filter(|p| is_running(p)).count(), 3);
    let cond = p["status"]["conditions"].as_array().cloned().unwrap_or_default();
    let scheduled = cond.iter().find(|c| c["type"] == "PodScheduled").expect("PodScheduled");
    assert_eq!(scheduled["reason"], "Unschedulable");
    assert_eq!(scheduled["message"], want);
}

#[test]
fn a_pod_that_never_preempts_stays_pending() {
    let s = Server::start();
    let _sim = s.sim(&["--nodes", "1", "--cpu", "1"]);
    s.apply(CLASSES);
    s.ok(&["create", "namespace", "never"]);
    s.apply(&pod_manifest("never", "busy", "low", "1", "", ""));
    s.wait_for("busy running", T, || pod(&s, "never", "busy").is_some_and(|p| is_running(&p)));
    // One pod gets Never from its class, the other says it itself.
    s.apply(&pod_manifest("never", "polite", "high-never", "1", "", ""));
    s.apply(&pod_manifest("never", "shy", "high", "1", "", r#""preemptionPolicy": "Never","#));
    let want = "0/1 nodes are available: 1 Insufficient cpu. preemption: not eligible due to preemptionPolicy=Never..";
    for name in ["polite", "shy"] {
        s.wait_for(&format!("{name}'s FailedScheduling event"), T, || {
            events(&s, "never", name, "FailedScheduling").iter().any(|m| m == want)
        });
    }
    std::thread::sleep(Duration::from_secs(2));
    for name in ["polite", "shy"] {
        let p = pod(&s, "never", name).expect("pod");
        assert_eq!(str_at(&p, "/spec/preemptionPolicy"), "Never");
        assert_eq!(str_at(&p, "/spec/nodeName"), "", "{name} stays pending");
        assert_eq!(str_at(&p, "/status/nominatedNodeName"), "");
    }
    let busy = pod(&s, "never", "busy").expect("busy");
    assert!(is_running(&busy), "busy is not preempted: {busy}");
}

#[test]
fn a_pod_guarded_by_a_budget_is_spared_for_an_unguarded_one() {
    let s = Server::start();
    let _sim = s.sim(&["--nodes", "2", "--cpu", "2", "--node-prefix", "pdb-"]);
    s.apply(CLASSES);
    s.ok(&["create", "namespace", "pdb"]);
    // Each pod fills a node of its own. `guarded` starts later, so without the budget its node
    // would be the one picked (the latest start wins ties).
    s.apply(&pod_manifest("pdb", "free", "low", "2", r#""app": "free""#, r#""nodeName": "pdb-0","#));
    s.wait_for("free running", T, || pod(&s, "pdb", "free").is_some_and(|p| is_running(&p)));
    std::thread::sleep(Duration::from_millis(1500));
    s.apply(&pod_manifest("pdb", "guarded", "low", "2", r#""app": "guarded""#, r#""nodeName": "pdb-1","#));
    s.wait_for("guarded running", T, || pod(&s, "pdb", "guarded").is_some_and(|p| is_running(&p)));
    let started =
        |name: &str| pod(&s, "pdb", name).map(|p| str_at(&p, "/status/startTime").to_string()).unwrap_or_default();
    assert!(started("free") < started("guarded"), "{} / {}", started("free"), started("guarded"));
    s.apply(
        r#"{"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "guard", "namespace": "pdb"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "guarded"}}}}"#,
    );
    s.wait_for("the budget allowing no disruption", T, || {
        let b = s.get_json(&["pdb", "-n", "pdb", "guard"]);
        b["status"]["currentHealthy"] == 1 && b["status"]["disruptionsAllowed"] == 0
    });

    s.apply(&pod_manifest("pdb", "vip", "high", "2", "", ""));
    s.wait_for("vip running", T, || pod(&s, "pdb", "vip").is_some_and(|p| is_running(&p)));
    let vip = pod(&s, "pdb", "vip").expect("vip");
    assert_eq!(str_at(&vip, "/spec/nodeName"), "pdb-0");
    assert_eq!(str_at(&vip, "/status/nominatedNodeName"), "pdb-0");
    assert!(pod(&s, "pdb", "free").is_none(), "free was preempted");
    let guarded = pod(&s, "pdb", "guarded").expect("guarded is still there");
    assert!(is_running(&guarded), "guarded is untouched: {guarded}");
}
