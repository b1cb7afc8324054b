//! Faults a node meets: probes that time out, a hostPath that is not there yet, containerd
//! killed under running pods, and skiff killed with SIGKILL while pods are starting. None may
//! crash the agent, leak containers or leave a pod status that lies.
//!
//! Needs root, containerd, runc, the CNI plugins and busybox-static (CI installs them); without
//! them each test prints why and passes without running.

use std::time::Duration;

mod images;
mod node;

use node::Box;

fn events(b: &Box, pod: &str, reason: &str) -> String {
    b.ok(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={pod},reason={reason}"),
        "-o",
        "jsonpath={.items[*].message}",
    ])
}

fn restarts(pod: &serde_json::Value) -> i64 {
    pod["status"]["containerStatuses"][0]["restartCount"].as_i64().unwrap_or(-1)
}

/// Running tasks in the runtime (sandboxes and containers).
fn running_tasks(b: &Box) -> usize {
    let sock = b.socket();
    let out = std::process::Command::new("ctr")
        .args(["--address", sock.to_str().expect("utf8"), "-n", "k8s.io", "tasks", "ls"])
        .output()
        .expect("ctr tasks ls");
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.trim_end().ends_with("RUNNING")).count()
}

#[test]
fn probes_that_time_out_and_a_host_path_that_appears_later() {
    require_node!();
    let b = Box::start("faults");
    let later = b.dir.path().join("later");
    b.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: slowexec}}
spec:
  containers:
  - name: c
    image: busybox
    imagePullPolicy: IfNotPresent
    command: [sleep, "3600"]
    livenessProbe: {{exec: {{command: [sleep, "5"]}}, timeoutSeconds: 1, periodSeconds: 2, failureThreshold: 1}}
---
apiVersion: v1
kind: Pod
metadata: {{name: slowhttp}}
spec:
  containers:
  - name: c
    image: busybox
    imagePullPolicy: IfNotPresent
    command: [sh, -c, "while true; do sleep 30 | nc -l -p 8080; done"]
    readinessProbe: {{httpGet: {{port: 8080, path: /}}, timeoutSeconds: 1, periodSeconds: 2}}
---
apiVersion: v1
kind: Pod
metadata: {{name: deadline}}
spec:
  activeDeadlineSeconds: 3
  containers: [{{name: c, image: busybox, imagePullPolicy: IfNotPresent, command: [sleep, "3600"]}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: nohost}}
spec:
  containers:
  - {{name: c, image: busybox, imagePullPolicy: IfNotPresent, command: [sh, -c, "ls /h; sleep 3600"], volumeMounts: [{{name: h, mountPath: /h}}]}}
  volumes: [{{name: h, hostPath: {{path: {later}, type: Directory}}}}]
"#,
        later = later.display()
    ));

    // An exec probe that outlives its timeout fails as upstream words it, and restarts.
    b.wait_for("slowexec restarted by its liveness probe", Duration::from_secs(60), |b| {
        b.pod("slowexec").is_some_and(|p| restarts(&p) >= 1)
    });
    let unhealthy = events(&b, "slowexec", "Unhealthy");
    assert!(unhealthy.contains("Liveness probe failed: command \"sleep 5\" timed out"), "{unhealthy}");

    // An HTTP server that accepts but never answers keeps the pod unready.
    b.wait_for("slowhttp's readiness to time out", Duration::from_secs(60), |b| {
        events(b, "slowhttp", "Unhealthy")
            .contains("context deadline exceeded (Client.Timeout exceeded while awaiting headers)")
    });
    let pod = b.pod("slowhttp").expect("pod");
    assert_eq!(pod["status"]["phase"], "Running");
    assert_eq!(pod["status"]["containerStatuses"][0]["ready"], false, "{pod}");
    assert_eq!(restarts(&pod), 0, "readiness failures never restart");
    let ip = pod["status"]["podIP"].as_str().expect("pod IP");
    let message = events(&b, "slowhttp", "Unhealthy");
    assert!(
        message.contains(&format!("Readiness probe failed: Get \"http://{ip}:8080/\": context deadline exceeded")),
        "{message}"
    );

    // A hostPath of type Directory that is missing holds the pod in ContainerCreating with an
    // event; once the directory exists the pod starts.
    b.wait_for("nohost to report the missing directory", Duration::from_secs(30), |b| {
        events(b, "nohost", "FailedMount").contains(&format!(
            "MountVolume.SetUp failed for volume \"h\" : hostPath type check failed: {} is not a directory",
            later.display()
        ))
    });
    let pod = b.pod("nohost").expect("pod");
    assert_eq!(pod["status"]["phase"], "Pending");
    assert_eq!(pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"], "ContainerCreating", "{pod}");
    std::fs::create_dir(&later).expect("mkdir");
    std::fs::write(later.join("marker"), "x").expect("marker");
    b.wait_for("nohost Running once the directory exists", Duration::from_secs(60), |b| b.phase("nohost") == "Running");
    b.wait_for("nohost to see the directory", Duration::from_secs(10), |b| {
        b.kubectl(&["logs", "nohost"]).stdout.starts_with(b"marker")
    });

    // activeDeadlineSeconds ends a pod as upstream's kubelet does.
    b.wait_for("deadline to fail", Duration::from_secs(60), |b| b.phase("deadline") == "Failed");
    let pod = b.pod("deadline").expect("pod");
    assert_eq!(pod["status"]["reason"], "DeadlineExceeded", "{pod}");
    assert_eq!(pod["status"]["message"], "Pod was active on the node longer than the specified deadline");
    assert!(pod["status"]["containerStatuses"][0]["state"]["terminated"].is_object(), "{pod}");
    assert!(!b.log().contains("panicked"), "the agent panicked:\n{}", node::tail(&b.log(), 40));
}

#[test]
fn pods_are_evicted_when_memory_runs_below_the_threshold() {
    require_node!();
    // No box has 1000Ti free: the node is under memory pressure from the start.
    let b = Box::start_with("evict", &["--kubelet-arg", "eviction-hard=memory.available<1000Ti"]);
    b.wait_for("MemoryPressure", Duration::from_secs(60), |b| {
        let out = b.kubectl(&[
            "get",
            "node",
            "box",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"MemoryPressure\")].status}",
        ]);
        out.stdout == b"True"
    });
    // Bound to the node by name: the scheduler would keep a BestEffort pod off it.
    b.apply(
        r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "victim"},
            "spec": {"nodeName": "box", "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]}}"#,
    );
    b.wait_for("victim evicted", Duration::from_secs(90), |b| b.phase("victim") == "Failed");
    let pod = b.pod("victim").expect("pod");
    assert_eq!(pod["status"]["reason"], "Evicted", "{pod}");
    let message = pod["status"]["message"].as_str().unwrap_or("");
    assert!(
        message.starts_with("The node was low on resource: memory. Threshold quantity: 1000Ti, available: "),
        "{message}"
    );
    assert!(message.contains("Container c was using "), "{message}");
    let disruption = pod["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == "DisruptionTarget")
        .cloned()
        .unwrap_or_default();
    assert_eq!(disruption["status"], "True", "{pod}");
    assert_eq!(disruption["reason"], "TerminationByKubelet", "{pod}");
    assert!(events(&b, "victim", "Evicted").starts_with("The node was low on resource: memory."));
    b.wait_for("the victim's containers stopped", Duration::from_secs(30), |b| running_tasks(b) == 0);
}

#[test]
fn containerd_killed_and_skiff_killed_mid_start_are_survived() {
    require_node!();
    let mut b = Box::start("crash");
    b.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: steady}
spec:
  containers: [{name: c, image: busybox, imagePullPolicy: IfNotPresent, command: [sleep, "3600"]}]
"#,
    );
    b.wait_for("steady Running", Duration::from_secs(60), |b| b.phase("steady") == "Running");
    let before = b.pod("steady").expect("pod")["status"]["containerStatuses"][0]["containerID"].clone();

    // containerd dies under a running pod: it is restarted, the container keeps running and is
    // not counted as restarted, and new pods start.
    let pid_file = b.data_dir().join("agent").join("containerd").join("containerd.pid");
    let pid: i32 = std::fs::read_to_string(&pid_file).expect("pid file").trim().parse().expect("pid");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL)
        .expect("kill containerd");
    b.wait_for("a new containerd", Duration::from_secs(30), |_| {
        std::fs::read_to_string(&pid_file).ok().and_then(|s| s.trim().parse::<i32>().ok()).is_some_and(|p| p != pid)
    });
    b.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: after}
spec:
  containers: [{name: c, image: busybox, imagePullPolicy: IfNotPresent, command: [sleep, "3600"]}]
"#,
    );
    b.wait_for("after Running", Duration::from_secs(60), |b| b.phase("after") == "Running");
    let pod = b.pod("steady").expect("pod");
    assert_eq!(pod["status"]["containerStatuses"][0]["containerID"], before, "the same container");
    assert_eq!(restarts(&pod), 0);
    assert_eq!(pod["status"]["phase"], "Running");

    // skiff is killed while six pods start; the next start finishes them, one sandbox and one
    // container each, none restarted unless its start was cut short.
    b.ok(&["create", "deployment", "burst", "--image=busybox", "--replicas=6", "--", "sleep", "3600"]);
    let baseline = b.runtime_containers().len();
    b.wait_for("the burst to begin", Duration::from_secs(60), |b| b.runtime_containers().len() > baseline);
    b.kill9();
    b.launch();
    b.wait_for("all eight pods Running and Ready", Duration::from_secs(120), |b| {
        let out = b.ok(&[
            "get",
            "pods",
            "-o",
            "jsonpath={range .items[*]}{.status.phase}/{.status.containerStatuses[0].ready} {end}",
        ]);
        let states: Vec<&str> = out.split_whitespace().collect();
        states.len() == 8 && states.iter().all(|s| *s == "Running/true")
    });
    b.wait_for("one sandbox and one container running per pod", Duration::from_secs(30), |b| running_tasks(b) == 16);
    let pods = b.json(&["get", "pods"]);
    for p in pods["items"].as_array().expect("items") {
        // A container the kill caught between create and start is started as the same
        // instance. One the kill caught inside its start cannot be: the runtime keeps the
        // half-made task directory and refuses it ("file exists"), so it exits with
        // StartError and its replacement counts one restart, as upstream's kubelet shows it.
        let status = &p["status"]["containerStatuses"][0];
        let cut_short = status["lastState"]["terminated"]["reason"] == "StartError";
        assert!(restarts(p) == 0 || (restarts(p) == 1 && cut_short), "{}: {status}", p["metadata"]["name"]);
    }
    assert!(!b.log().contains("panicked"), "skiff panicked:\n{}", node::tail(&b.log(), 40));

    b.ok(&["delete", "deployment", "burst"]);
    b.ok(&["delete", "pod", "steady", "after", "--grace-period=1"]);
    b.wait_for("no container left", Duration::from_secs(60), |b| b.runtime_containers().is_empty());
}

/// Image references in the runtime.
fn runtime_images(b: &Box) -> Vec<String> {
    let sock = b.socket();
    let out = std::process::Command::new("ctr")
        .args(["--address", sock.to_str().expect("utf8"), "-n", "k8s.io", "images", "ls", "-q"])
        .output()
        .expect("ctr images ls");
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

#[test]
fn unused_images_are_collected_and_imported_or_used_ones_stay() {
    require_node!();
    // Collect at any disk use, down to nothing, with no minimum age.
    let mut b = Box::start_with(
        "imagegc",
        &[
            "--kubelet-arg",
            "image-gc-high-threshold=0",
            "--kubelet-arg",
            "image-gc-low-threshold=0",
            "--kubelet-arg",
            "minimum-image-ttl-duration=0s",
        ],
    );
    b.wait_for("the node Ready", Duration::from_secs(60), |b| {
        let out =
            b.kubectl(&["get", "node", "box", "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"]);
        out.stdout == b"True"
    });
    // Two images from outside skiff (so not pinned): one a pod uses, one nobody uses.
    let sock = b.socket();
    for (name, variant) in [("docker.io/library/unused:1", "unused"), ("docker.io/library/inuse:1", "inuse")] {
        let file = b.dir.path().join(format!("{variant}.tar"));
        std::fs::write(&file, images::oci_archive_variant(name, variant)).expect("archive");
        let out = std::process::Command::new("ctr")
            .args(["--address", sock.to_str().expect("utf8"), "-n", "k8s.io", "images", "import"])
            .arg(&file)
            .output()
            .expect("ctr images import");
        assert!(out.status.success(), "ctr import: {}", String::from_utf8_lossy(&out.stderr));
    }
    b.apply(
        r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "user"},
            "spec": {"containers": [{"name": "c", "image": "docker.io/library/inuse:1", "imagePullPolicy": "Never", "command": ["sleep", "3600"]}]}}"#,
    );
    b.wait_for("user Running", Duration::from_secs(60), |b| b.phase("user") == "Running");
    let images = runtime_images(&b);
    assert!(images.iter().any(|i| i == "docker.io/library/unused:1"), "{images:?}");

    // Collection runs at start: a restart triggers it.
    b.terminate();
    b.launch();
    b.wait_for("the unused image removed", Duration::from_secs(60), |b| {
        !runtime_images(b).iter().any(|i| i == "docker.io/library/unused:1")
    });
    let images = runtime_images(&b);
    for kept in ["docker.io/library/inuse:1", "docker.io/library/busybox:latest", "registry.k8s.io/pause:3.10"] {
        assert!(images.iter().any(|i| i == kept), "{kept} kept: {images:?}");
    }
    // The disk cannot get down to 0 %: the shortfall is reported on the node.
    b.wait_for("FreeDiskSpaceFailed", Duration::from_secs(30), |b| {
        events(b, "box", "FreeDiskSpaceFailed").contains("Failed to garbage collect required amount of images.")
    });
    assert_eq!(b.phase("user"), "Running");
}
