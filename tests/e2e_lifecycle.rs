//! Pod lifecycle on a real node: probes, hooks, volumes that update in place, cgroup limits,
//! a Deployment's pods, and an agent restart that re-adopts running containers.
//!
//! Needs root, containerd, runc, the CNI plugins and busybox-static (CI installs them); without
//! them each test prints why and passes without running.

use std::time::Duration;

mod images;
mod node;

use node::Box;

fn restarts(b: &Box, pod: &str) -> i64 {
    b.pod(pod).and_then(|p| p["status"]["containerStatuses"][0]["restartCount"].as_i64()).unwrap_or(-1)
}

fn ready(b: &Box, pod: &str) -> Option<bool> {
    b.pod(pod).and_then(|p| p["status"]["containerStatuses"][0]["ready"].as_bool())
}

#[test]
fn probes_restart_unhealthy_containers_and_gate_readiness() {
    require_node!();
    let b = Box::start("probes");
    b.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: live}
spec:
  containers:
  - name: c
    image: busybox
    imagePullPolicy: IfNotPresent
    command: [sh, -c, "touch /tmp/healthy; sleep 4; rm /tmp/healthy; sleep 3600"]
    livenessProbe: {exec: {command: [cat, /tmp/healthy]}, periodSeconds: 1, failureThreshold: 1}
---
apiVersion: v1
kind: Pod
metadata: {name: gate}
spec:
  containers:
  - name: c
    image: busybox
    imagePullPolicy: IfNotPresent
    command: [sh, -c, "sleep 3; touch /tmp/ready; sleep 6; rm /tmp/ready; sleep 3600"]
    readinessProbe: {exec: {command: [cat, /tmp/ready]}, periodSeconds: 1}
"#,
    );
    b.wait_for("gate Running and not ready", Duration::from_secs(60), |b| {
        b.phase("gate") == "Running" && ready(b, "gate") == Some(false)
    });
    b.wait_for("gate ready", Duration::from_secs(30), |b| ready(b, "gate") == Some(true));
    let pod = b.pod("gate").expect("pod");
    let conds = pod["status"]["conditions"].as_array().expect("conditions").clone();
    assert!(conds.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"), "{conds:?}");
    b.wait_for("gate not ready again", Duration::from_secs(30), |b| ready(b, "gate") == Some(false));
    assert_eq!(restarts(&b, "gate"), 0, "a readiness failure does not restart");
    assert_eq!(b.phase("gate"), "Running");

    b.wait_for("live restarted by its liveness probe", Duration::from_secs(60), |b| restarts(b, "live") >= 1);
    let events =
        b.ok(&["get", "events", "--field-selector", "involvedObject.name=live", "-o", "jsonpath={.items[*].message}"]);
    assert!(events.contains("Liveness probe failed: "), "{events}");
    assert!(events.contains("Container c failed liveness probe, will be restarted"), "{events}");
}

#[test]
fn pre_stop_runs_before_sigterm_and_volumes_update_in_place() {
    require_node!();
    let b = Box::start("hooks");
    let out = b.dir.path().join("out");
    std::fs::create_dir_all(&out).expect("out dir");
    let manifest = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {greeting: hello}
---
apiVersion: v1
kind: Pod
metadata: {name: hooks}
spec:
  terminationGracePeriodSeconds: 10
  containers:
  - name: c
    image: busybox
    imagePullPolicy: IfNotPresent
    resources: {limits: {memory: 64Mi, cpu: 250m}}
    command:
    - sh
    - -c
    - |
      trap 'echo term >> /out/order; exit 0' TERM
      (cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes) > /out/memory
      while true; do cat /cfg/greeting > /out/greeting.tmp; mv /out/greeting.tmp /out/greeting; sleep 1; done
    lifecycle: {preStop: {exec: {command: [sh, -c, "echo prestop >> /out/order"]}}}
    volumeMounts: [{name: out, mountPath: /out}, {name: cfg, mountPath: /cfg}]
  volumes:
  - {name: out, hostPath: {path: OUT, type: Directory}}
  - {name: cfg, configMap: {name: cfg}}
"#
    .replace("OUT", out.to_str().expect("utf8"));
    b.apply(&manifest);
    b.wait_for("hooks Running", Duration::from_secs(60), |b| b.phase("hooks") == "Running");
    b.wait_for("the greeting", Duration::from_secs(20), |_| {
        std::fs::read_to_string(out.join("greeting")).is_ok_and(|g| g == "hello")
    });
    assert_eq!(std::fs::read_to_string(out.join("memory")).expect("memory limit").trim(), (64u64 << 20).to_string());
    // Limits alone default the requests to the same values.
    assert_eq!(b.pod("hooks").expect("pod")["status"]["qosClass"], "Guaranteed");

    b.apply("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\ndata: {greeting: bonjour}\n");
    b.wait_for("the updated greeting inside the running container", Duration::from_secs(40), |_| {
        std::fs::read_to_string(out.join("greeting")).is_ok_and(|g| g == "bonjour")
    });
    assert_eq!(restarts(&b, "hooks"), 0);

    b.ok(&["delete", "pod", "hooks"]);
    let order = std::fs::read_to_string(out.join("order")).expect("order file");
    assert_eq!(order, "prestop\nterm\n");

    // An HTTP preStop hook reaches the container's own server before SIGTERM; a failed
    // container with FallbackToLogsOnError reports the end of its log.
    let manifest = r#"
apiVersion: v1
kind: Pod
metadata: {name: httphook}
spec:
  terminationGracePeriodSeconds: 10
  containers:
  - name: c
    image: busybox
    imagePullPolicy: IfNotPresent
    command:
    - sh
    - -c
    - |
      mkdir -p /www/cgi-bin
      printf '#!/bin/sh\necho "$REQUEST_METHOD $REQUEST_URI" >> /out/http-hook\nprintf "Content-Type: text/plain\\r\\n\\r\\nok\\n"\n' > /www/cgi-bin/stop
      chmod +x /www/cgi-bin/stop
      exec httpd -f -p 8080 -h /www
    lifecycle: {preStop: {httpGet: {port: web, path: /cgi-bin/stop}}}
    ports: [{name: web, containerPort: 8080}]
    volumeMounts: [{name: out, mountPath: /out}]
  volumes:
  - {name: out, hostPath: {path: OUT, type: Directory}}
---
apiVersion: v1
kind: Pod
metadata: {name: fallback}
spec:
  restartPolicy: Never
  containers:
  - {name: c, image: busybox, imagePullPolicy: IfNotPresent, terminationMessagePolicy: FallbackToLogsOnError, command: [sh, -c, "echo first; echo boom-reason; exit 2"]}
"#
    .replace("OUT", out.to_str().expect("utf8"));
    b.apply(&manifest);
    b.wait_for("httphook Running", Duration::from_secs(60), |b| b.phase("httphook") == "Running");
    b.ok(&["delete", "pod", "httphook"]);
    assert_eq!(std::fs::read_to_string(out.join("http-hook")).expect("the hook's request").trim(), "GET /cgi-bin/stop");
    b.wait_for("fallback to fail", Duration::from_secs(60), |b| b.phase("fallback") == "Failed");
    let t = b.pod("fallback").expect("pod")["status"]["containerStatuses"][0]["state"]["terminated"].clone();
    assert_eq!(t["exitCode"], 2, "{t}");
    assert_eq!(t["message"], "first\nboom-reason\n", "{t}");
}

#[test]
fn a_deployment_runs_and_its_pods_go_without_leaving_containers() {
    require_node!();
    let b = Box::start("deploy");
    b.apply(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 10
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 2
      containers: [{name: c, image: busybox, imagePullPolicy: IfNotPresent, command: [sleep, "3600"]}]
"#,
    );
    b.wait_for("10 ready replicas", Duration::from_secs(120), |b| {
        let out = b.kubectl(&["get", "deployment", "web", "-o", "jsonpath={.status.readyReplicas}"]);
        String::from_utf8_lossy(&out.stdout) == "10"
    });
    let pods = b.json(&["get", "pods", "-l", "app=web"]);
    let mut ips: Vec<String> = pods["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|p| p["status"]["podIP"].as_str().unwrap_or("").to_string())
        .collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 10, "every pod has its own address: {ips:?}");
    assert_eq!(b.runtime_containers().len(), 20, "10 sandboxes and 10 containers");
    b.ok(&["delete", "deployment", "web"]);
    b.wait_for("the pods gone", Duration::from_secs(60), |b| {
        b.ok(&["get", "pods", "-l", "app=web", "-o", "name"]).trim().is_empty()
    });
    b.wait_for("no container left", Duration::from_secs(30), |b| b.runtime_containers().is_empty());
}

#[test]
fn a_restarted_agent_adopts_running_containers_and_removes_deleted_pods() {
    require_node!();
    let mut b = Box::start("restart");
    b.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: keep}
spec:
  containers: [{name: c, image: busybox, imagePullPolicy: IfNotPresent, command: [sleep, "3600"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: gone}
spec:
  containers: [{name: c, image: busybox, imagePullPolicy: IfNotPresent, command: [sleep, "3600"]}]
"#,
    );
    b.wait_for("both Running", Duration::from_secs(60), |b| {
        b.phase("keep") == "Running" && b.phase("gone") == "Running"
    });
    let before = b.pod("keep").expect("pod")["status"]["containerStatuses"][0]["containerID"].clone();
    assert_eq!(b.runtime_containers().len(), 4);

    // The server (and its agent) dies; its containers keep running. The pod `gone` is then
    // removed from the API while no agent watches.
    b.kill9();
    b.extra = vec!["--disable-agent".into()];
    b.launch();
    b.ok(&["delete", "pod", "gone", "--grace-period=0", "--force"]);
    b.terminate();
    b.extra = Vec::new();
    b.launch();

    b.wait_for("the containers of `gone` removed", Duration::from_secs(60), |b| b.runtime_containers().len() == 2);
    std::thread::sleep(Duration::from_secs(3));
    let pod = b.pod("keep").expect("pod");
    let status = &pod["status"]["containerStatuses"][0];
    assert_eq!(status["containerID"], before, "the same container, adopted");
    assert_eq!(status["restartCount"], 0);
    assert_eq!(pod["status"]["phase"], "Running");
    assert_eq!(b.runtime_containers().len(), 2);
}

#[test]
fn static_pods_run_from_the_manifests_folder_as_mirror_pods() {
    require_node!();
    let b = Box::start("static");
    let dir = b.data_dir().join("agent").join("pod-manifests");
    std::fs::create_dir_all(&dir).expect("manifests dir");
    std::fs::write(
        dir.join("web.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: kube-system}\nspec:\n  containers: [{name: c, image: busybox, imagePullPolicy: IfNotPresent, command: [sleep, \"3600\"]}]\n",
    )
    .expect("manifest");
    b.wait_for("the mirror pod Running", Duration::from_secs(60), |b| {
        b.kubectl(&["-n", "kube-system", "get", "pod", "web-box", "-o", "jsonpath={.status.phase}"]).stdout
            == b"Running"
    });
    let pod = b.json(&["-n", "kube-system", "get", "pod", "web-box"]);
    assert_eq!(pod["metadata"]["annotations"]["kubernetes.io/config.source"], "file");
    assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "Node");
    assert_eq!(pod["spec"]["nodeName"], "box");
    std::fs::remove_file(dir.join("web.yaml")).expect("remove manifest");
    b.wait_for("the mirror pod gone", Duration::from_secs(60), |b| {
        !b.kubectl(&["-n", "kube-system", "get", "pod", "web-box"]).status.success()
    });
    b.wait_for("no container left", Duration::from_secs(30), |b| b.runtime_containers().is_empty());
}
