//! The daemonset and statefulset controllers against the real binary, real kubectl and
//! simulated nodes: where daemon pods go, rolling updates and their history, and the order in
//! which stateful pods come and go.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{KUBECTL, Server};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

fn pods(s: &Server, ns: &str, selector: &str) -> Vec<Value> {
    s.get_json(&["pods", "-n", ns, "-l", selector])["items"].as_array().cloned().unwrap_or_default()
}

fn is_ready(p: &Value) -> bool {
    p["status"]["phase"] == "Running"
        && p["status"]["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

fn name(p: &Value) -> String {
    p["metadata"]["name"].as_str().unwrap_or_default().to_string()
}

fn image(p: &Value) -> String {
    p["spec"]["containers"][0]["image"].as_str().unwrap_or_default().to_string()
}

/// Live (not terminating) pods matching `selector`, by node.
fn by_node(s: &Server, ns: &str, selector: &str) -> BTreeMap<String, Vec<Value>> {
    let mut m: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for p in pods(s, ns, selector) {
        if p["metadata"]["deletionTimestamp"].is_null() {
            let node = p["spec"]["nodeName"].as_str().unwrap_or("").to_string();
            m.entry(node).or_default().push(p);
        }
    }
    m
}

/// Waits until the live pods matching `selector` are Running and Ready on exactly `nodes`,
/// one each.
fn wait_one_per_node(s: &Server, ns: &str, selector: &str, nodes: &[&str]) {
    let want: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
    s.wait_for(&format!("one ready pod of {selector} on each of {nodes:?}"), WAIT, || {
        let m = by_node(s, ns, selector);
        m.keys().cloned().collect::<Vec<_>>() == want && m.values().all(|ps| ps.len() == 1 && is_ready(&ps[0]))
    });
}

fn daemonset(name: &str, image: &str, extra_spec: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: {name}}}
spec:
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers: [{{name: c, image: "{image}"}}]
{extra_spec}
"#
    )
}

#[test]
fn daemonset_puts_one_pod_on_each_matching_node_and_follows_nodes() {
    let s = Server::start();
    let _sim = s.sim(&["--nodes", "3"]);
    s.ok(&["taint", "nodes", "sim-2", "dedicated=db:NoSchedule"]);
    s.ok(&["create", "namespace", "ds-place"]);
    let manifest = daemonset("agent", "agent:1", "")
        + "---\n"
        + &daemonset(
            "tolerant",
            "agent:1",
            "      tolerations: [{key: dedicated, operator: Exists, effect: NoSchedule}]",
        );
    let out = s.apply_stdin(&["apply", "-n", "ds-place", "-f", "-"], &manifest);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // The NoSchedule taint keeps `agent` off sim-2; `tolerant` goes everywhere.
    wait_one_per_node(&s, "ds-place", "app=agent", &["sim-0", "sim-1"]);
    wait_one_per_node(&s, "ds-place", "app=tolerant", &["sim-0", "sim-1", "sim-2"]);
    s.wait_for("agent's status", WAIT, || {
        let st = &s.get_json(&["ds", "agent", "-n", "ds-place"])["status"];
        st["desiredNumberScheduled"] == 2
            && st["currentNumberScheduled"] == 2
            && st["numberReady"] == 2
            && st["numberAvailable"] == 2
            && st["updatedNumberScheduled"] == 2
            && st["numberMisscheduled"] == 0
            && st["numberUnavailable"].is_null()
    });
    // Pods are pinned by node affinity (the scheduler binds them) and carry the daemon
    // tolerations and the revision hash.
    let p = &by_node(&s, "ds-place", "app=agent")["sim-0"][0];
    let term = &p["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        [0]["matchFields"][0];
    assert_eq!((term["key"].as_str(), term["operator"].as_str()), (Some("metadata.name"), Some("In")));
    assert_eq!(term["values"], serde_json::json!(["sim-0"]));
    let tolerations: Vec<String> = p["spec"]["tolerations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| format!("{}:{}", t["key"].as_str().unwrap_or(""), t["effect"].as_str().unwrap_or("")))
        .collect();
    for t in [
        "node.kubernetes.io/not-ready:NoExecute",
        "node.kubernetes.io/unreachable:NoExecute",
        "node.kubernetes.io/unschedulable:NoSchedule",
        "node.kubernetes.io/memory-pressure:NoSchedule",
    ] {
        assert!(tolerations.contains(&t.to_string()), "missing toleration {t} in {tolerations:?}");
    }
    assert!(p["metadata"]["labels"]["controller-revision-hash"].is_string());
    assert_eq!(p["metadata"]["ownerReferences"][0]["kind"], "DaemonSet");

    // A node that joins later gets its pods.
    let _late = s.sim(&["--nodes", "1", "--node-prefix", "late-"]);
    wait_one_per_node(&s, "ds-place", "app=agent", &["late-0", "sim-0", "sim-1"]);
    wait_one_per_node(&s, "ds-place", "app=tolerant", &["late-0", "sim-0", "sim-1", "sim-2"]);

    // A failed daemon pod is replaced on its node.
    let failed = name(&by_node(&s, "ds-place", "app=agent")["sim-1"][0]);
    s.ok(&[
        "patch",
        "pod",
        &failed,
        "-n",
        "ds-place",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Failed"}}"#,
    ]);
    s.wait_for("the failed pod replaced", WAIT, || {
        let m = by_node(&s, "ds-place", "app=agent");
        m.get("sim-1").is_some_and(|ps| ps.len() == 1 && name(&ps[0]) != failed && is_ready(&ps[0]))
    });
    let events = s.ok(&["get", "events", "-n", "ds-place", "--field-selector", "reason=FailedDaemonPod"]);
    assert!(events.contains(&failed), "no FailedDaemonPod event for {failed}: {events}");

    // A node that stops matching the node selector loses its pod.
    let picky = daemonset("picky", "agent:1", "      nodeSelector: {role: edge}");
    let out = s.apply_stdin(&["apply", "-n", "ds-place", "-f", "-"], &picky);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    s.ok(&["label", "node", "sim-0", "role=edge"]);
    wait_one_per_node(&s, "ds-place", "app=picky", &["sim-0"]);
    s.ok(&["label", "node", "sim-0", "role-"]);
    s.wait_for("picky's pod gone from sim-0", WAIT, || pods(&s, "ds-place", "app=picky").is_empty());
    s.wait_for("picky's status", WAIT, || {
        let st = &s.get_json(&["ds", "picky", "-n", "ds-place"])["status"];
        st["desiredNumberScheduled"] == 0 && st["currentNumberScheduled"] == 0
    });
}

#[test]
fn daemonset_rolling_update_and_rollback() {
    let s = Server::start();
    let _sim = s.sim(&["--nodes", "3"]);
    s.ok(&["create", "namespace", "ds-roll"]);
    let out = s.apply_stdin(&["apply", "-n", "ds-roll", "-f", "-"], &daemonset("roll", "agent:1", ""));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let done = s.ok(&["rollout", "status", "ds/roll", "-n", "ds-roll", "--timeout=60s"]);
    assert!(done.contains("daemon set \"roll\" successfully rolled out"), "{done}");
    let first: Vec<String> = pods(&s, "ds-roll", "app=roll").iter().map(name).collect();
    assert_eq!(first.len(), 3);

    s.ok(&["set", "image", "ds/roll", "c=agent:2", "-n", "ds-roll"]);
    let done = s.ok(&["rollout", "status", "ds/roll", "-n", "ds-roll", "--timeout=90s"]);
    assert!(done.contains("successfully rolled out"), "{done}");
    let revisions = s.get_json(&["controllerrevisions", "-n", "ds-roll", "-l", "app=roll"]);
    let newest = revisions["items"].as_array().unwrap().iter().max_by_key(|r| r["revision"].as_i64()).cloned().unwrap();
    assert_eq!(newest["revision"], 2);
    assert_eq!(
        newest["metadata"]["name"],
        format!("roll-{}", newest["metadata"]["labels"]["controller-revision-hash"].as_str().unwrap())
    );
    let hash = newest["metadata"]["labels"]["controller-revision-hash"].as_str().unwrap().to_string();
    s.wait_for("three updated pods", WAIT, || {
        let m = by_node(&s, "ds-roll", "app=roll");
        m.len() == 3
            && m.values().all(|ps| {
                ps.len() == 1
                    && image(&ps[0]) == "agent:2"
                    && ps[0]["metadata"]["labels"]["controller-revision-hash"] == hash.as_str()
                    && !first.contains(&name(&ps[0]))
            })
    });
    let st = &s.get_json(&["ds", "roll", "-n", "ds-roll"])["status"];
    assert_eq!((st["updatedNumberScheduled"].as_i64(), st["numberAvailable"].as_i64()), (Some(3), Some(3)), "{st}");

    let history = s.ok(&["rollout", "history", "ds/roll", "-n", "ds-roll"]);
    assert!(history.contains("REVISION") && history.contains("\n1 ") && history.contains("\n2 "), "{history}");
    let shown = s.ok(&["rollout", "history", "ds/roll", "-n", "ds-roll", "--revision=1"]);
    assert!(shown.contains("agent:1"), "{shown}");

    // Undo goes back to revision 1's template, which becomes revision 3.
    s.ok(&["rollout", "undo", "ds/roll", "-n", "ds-roll"]);
    let done = s.ok(&["rollout", "status", "ds/roll", "-n", "ds-roll", "--timeout=90s"]);
    assert!(done.contains("successfully rolled out"), "{done}");
    s.wait_for("pods back on agent:1", WAIT, || {
        let m = by_node(&s, "ds-roll", "app=roll");
        m.len() == 3 && m.values().all(|ps| ps.len() == 1 && image(&ps[0]) == "agent:1")
    });
    let history = s.ok(&["rollout", "history", "ds/roll", "-n", "ds-roll"]);
    assert!(history.contains("\n2 ") && history.contains("\n3 ") && !history.contains("\n1 "), "{history}");
}

/// `kubectl get pods -w` in the background, its events read when it is stopped.
struct Watch {
    child: Child,
    out: std::path::PathBuf,
}

impl Watch {
    fn start(s: &Server, ns: &str) -> Watch {
        let out = s.path().join(format!("watch-{ns}.json"));
        let child = Command::new(KUBECTL)
            .args(["get", "pods", "-n", ns, "-w", "--output-watch-events", "-o", "json"])
            .env("KUBECONFIG", &s.kubeconfig)
            .env("HOME", s.path())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("watch file"))
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl watch");
        Watch { child, out }
    }

    fn events(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        serde_json::Deserializer::from_str(&text).into_iter::<Value>().map_while(Result::ok).collect()
    }

    fn stop(mut self) -> Vec<Value> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.events()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn statefulset(name: &str, replicas: u32, image: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  serviceName: {name}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers:
      - name: c
        image: "{image}"
        volumeMounts: [{{name: data, mountPath: /data}}]
  volumeClaimTemplates:
  - metadata: {{name: data}}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {{requests: {{storage: 1Gi}}}}
"#
    )
}

fn ordinal_of(name: &str) -> usize {
    name.rsplit('-').next().and_then(|o| o.parse().ok()).unwrap_or(usize::MAX)
}

#[test]
fn statefulset_creates_in_order_and_scales_down_in_reverse() {
    let s = Server::start();
    let _sim = s.sim(&["--nodes", "2"]);
    s.ok(&["create", "namespace", "sts-order"]);
    let watch = Watch::start(&s, "sts-order");
    // The watch is running once it reports a marker pod.
    s.ok(&["run", "marker", "-n", "sts-order", "--image=marker", "--restart=Never"]);
    s.wait_for("the watch to start", WAIT, || {
        watch.events().iter().any(|e| e["object"]["metadata"]["name"] == "marker")
    });

    let out = s.apply_stdin(&["apply", "-n", "sts-order", "-f", "-"], &statefulset("web", 3, "web:1"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let done = s.ok(&["rollout", "status", "sts/web", "-n", "sts-order", "--timeout=90s"]);
    assert!(done.contains("partitioned roll out complete: 3 new pods have been updated"), "{done}");

    let web = pods(&s, "sts-order", "app=web");
    let mut names: Vec<String> = web.iter().map(name).collect();
    names.sort();
    assert_eq!(names, ["web-0", "web-1", "web-2"]);
    for p in &web {
        let n = name(p);
        assert_eq!(p["spec"]["hostname"], n.as_str());
        assert_eq!(p["spec"]["subdomain"], "web");
        assert_eq!(p["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"], n.as_str());
        assert_eq!(p["metadata"]["labels"]["apps.kubernetes.io/pod-index"], ordinal_of(&n).to_string());
        assert!(p["metadata"]["labels"]["controller-revision-hash"].as_str().is_some_and(|h| h.starts_with("web-")));
        let claim = p["spec"]["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "data").unwrap();
        assert_eq!(claim["persistentVolumeClaim"]["claimName"], format!("data-{n}"));
    }
    // The claims exist, unowned (Retain/Retain), labelled with the selector.
    let claims = s.get_json(&["pvc", "-n", "sts-order"]);
    let mut claim_names: Vec<String> = claims["items"].as_array().unwrap().iter().map(name).collect();
    claim_names.sort();
    assert_eq!(claim_names, ["data-web-0", "data-web-1", "data-web-2"]);
    for c in claims["items"].as_array().unwrap() {
        assert!(c["metadata"]["ownerReferences"].is_null(), "{c}");
        assert_eq!(c["metadata"]["labels"]["app"], "web");
    }
    let st = &s.get_json(&["sts", "web", "-n", "sts-order"])["status"];
    assert_eq!(st["replicas"], 3);
    assert_eq!(st["readyReplicas"], 3);
    assert_eq!(st["availableReplicas"], 3);
    assert_eq!(st["currentRevision"], st["updateRevision"]);
    assert_eq!(st["observedGeneration"], 1);

    // A deleted pod comes back under the same name.
    let old_uid = s.get_json(&["pod", "web-1", "-n", "sts-order"])["metadata"]["uid"].clone();
    s.ok(&["delete", "pod", "web-1", "-n", "sts-order", "--wait=false"]);
    s.wait_for("web-1 recreated and ready", WAIT, || {
        let p = s.get_json(&["pods", "-n", "sts-order", "--field-selector", "metadata.name=web-1"]);
        p["items"].as_array().is_some_and(|i| i.len() == 1 && i[0]["metadata"]["uid"] != old_uid && is_ready(&i[0]))
    });

    s.ok(&["scale", "sts/web", "-n", "sts-order", "--replicas=0"]);
    s.wait_for("every web pod gone", WAIT, || pods(&s, "sts-order", "app=web").is_empty());
    // Claims stay (whenScaled: Retain).
    assert_eq!(s.get_json(&["pvc", "-n", "sts-order"])["items"].as_array().unwrap().len(), 3);
    let events = watch.stop();

    // Replay the watch: a pod is created only once every lower ordinal is Running and Ready;
    // scaling down takes the highest ordinal first and starts on the next only when it is gone.
    let mut ready: HashMap<String, bool> = HashMap::new();
    let mut seen_created: Vec<String> = Vec::new();
    let mut deleting_order: Vec<String> = Vec::new();
    let mut gone: Vec<String> = Vec::new();
    let mut scaling_down = false;
    for e in &events {
        let obj = &e["object"];
        let n = name(obj);
        if !n.starts_with("web-") {
            continue;
        }
        let ord = ordinal_of(&n);
        match e["type"].as_str() {
            Some("ADDED") if !scaling_down => {
                for lower in 0..ord {
                    assert!(
                        ready.get(&format!("web-{lower}")).copied().unwrap_or(false),
                        "{n} was created before web-{lower} was ready"
                    );
                }
                seen_created.push(n.clone());
            }
            Some("DELETED") => {
                if scaling_down {
                    gone.push(n.clone());
                }
                ready.insert(n.clone(), false);
                continue;
            }
            _ => {}
        }
        if scaling_down && !obj["metadata"]["deletionTimestamp"].is_null() && !deleting_order.contains(&n) {
            for higher in ord + 1..3 {
                assert!(gone.contains(&format!("web-{higher}")), "{n} went while web-{higher} was still there");
            }
            deleting_order.push(n.clone());
        }
        ready.insert(n.clone(), is_ready(obj) && obj["metadata"]["deletionTimestamp"].is_null());
        // Everything after the recreated web-1 is ready again belongs to the scale-down.
        if seen_created.len() == 4 && ready.values().filter(|r| **r).count() == 3 {
            scaling_down = true;
        }
    }
    assert_eq!(seen_created, ["web-0", "web-1", "web-2", "web-1"], "creations in the watch");
    assert_eq!(gone, ["web-2", "web-1", "web-0"], "deletions in the watch");
}

#[test]
fn statefulset_partitioned_rolling_update() {
    let s = Server::start();
    let _sim = s.sim(&["--nodes", "2"]);
    s.ok(&["create", "namespace", "sts-part"]);
    let out = s.apply_stdin(&["apply", "-n", "sts-part", "-f", "-"], &statefulset("db", 3, "db:1"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    s.ok(&["rollout", "status", "sts/db", "-n", "sts-part", "--timeout=90s"]);
    let images = || -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = pods(&s, "sts-part", "app=db")
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null() && is_ready(p))
            .map(|p| (name(p), image(p)))
            .collect();
        v.sort();
        v
    };
    let pair = |n: &str, i: &str| (n.to_string(), i.to_string());

    // Only ordinals >= 2 move to the new template.
    s.ok(&[
        "patch",
        "sts",
        "db",
        "-n",
        "sts-part",
        "-p",
        r#"{"spec":{"updateStrategy":{"type":"RollingUpdate","rollingUpdate":{"partition":2}},"template":{"spec":{"containers":[{"name":"c","image":"db:2"}]}}}}"#,
    ]);
    let done = s.ok(&["rollout", "status", "sts/db", "-n", "sts-part", "--timeout=90s"]);
    assert!(done.contains("partitioned roll out complete: 1 new pods have been updated"), "{done}");
    s.wait_for("db-2 alone on db:2", WAIT, || {
        images() == [pair("db-0", "db:1"), pair("db-1", "db:1"), pair("db-2", "db:2")]
    });
    let st = &s.get_json(&["sts", "db", "-n", "sts-part"])["status"];
    assert_ne!(st["currentRevision"], st["updateRevision"], "{st}");
    assert_eq!((st["updatedReplicas"].as_i64(), st["currentReplicas"].as_i64()), (Some(1), Some(2)), "{st}");
    let update_revision = st["updateRevision"].as_str().unwrap().to_string();
    let p2 = s.get_json(&["pod", "db-2", "-n", "sts-part"]);
    assert_eq!(p2["metadata"]["labels"]["controller-revision-hash"], update_revision.as_str());

    // Lowering the partition finishes the rollout; the update revision becomes current.
    s.ok(&[
        "patch",
        "sts",
        "db",
        "-n",
        "sts-part",
        "-p",
        r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":0}}}}"#,
    ]);
    s.ok(&["rollout", "status", "sts/db", "-n", "sts-part", "--timeout=90s"]);
    s.wait_for("every pod on db:2", WAIT, || {
        images() == [pair("db-0", "db:2"), pair("db-1", "db:2"), pair("db-2", "db:2")]
    });
    s.wait_for("the update revision current", WAIT, || {
        let st = &s.get_json(&["sts", "db", "-n", "sts-part"])["status"];
        st["currentRevision"] == update_revision.as_str() && st["currentReplicas"] == 3 && st["updatedReplicas"] == 3
    });

    // History and undo through kubectl.
    let history = s.ok(&["rollout", "history", "sts/db", "-n", "sts-part"]);
    assert!(history.contains("\n1 ") && history.contains("\n2 "), "{history}");
    s.ok(&["rollout", "undo", "sts/db", "-n", "sts-part"]);
    s.ok(&["rollout", "status", "sts/db", "-n", "sts-part", "--timeout=90s"]);
    s.wait_for("every pod back on db:1", WAIT, || {
        images() == [pair("db-0", "db:1"), pair("db-1", "db:1"), pair("db-2", "db:1")]
    });
    let history = s.ok(&["rollout", "history", "sts/db", "-n", "sts-part"]);
    assert!(history.contains("\n2 ") && history.contains("\n3 ") && !history.contains("\n1 "), "{history}");
}
