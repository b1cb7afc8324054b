//! kubectl 1.32 end to end against a real `skiff server`: the everyday commands a user runs
//! against a cluster without nodes.

mod common;

use common::Server;

const APP: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: demo
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: demo
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: busybox:1.36
        command: ["httpd", "-f", "-p", "8080"]
        ports:
        - containerPort: 8080
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: demo
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 8080
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: cfg
  namespace: demo
  labels: {tier: config}
data:
  a: "1"
---
apiVersion: v1
kind: Secret
metadata:
  name: sec
  namespace: demo
stringData:
  password: hunter2
"#;

fn apply(s: &Server, manifest: &str, extra: &[&str]) -> String {
    let mut args = vec!["apply", "-f", "-"];
    args.extend_from_slice(extra);
    let out = s.apply_stdin(&args, manifest);
    assert!(out.status.success(), "apply failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn apply_get_and_change() {
    let s = Server::start();
    let first = apply(&s, APP, &[]);
    for line in [
        "namespace/demo created",
        "deployment.apps/web created",
        "service/web created",
        "configmap/cfg created",
        "secret/sec created",
    ] {
        assert!(first.contains(line), "{first}");
    }
    let again = apply(&s, APP, &[]);
    assert!(again.contains("deployment.apps/web unchanged"), "{again}");
    assert!(again.contains("configmap/cfg unchanged"), "{again}");
    let changed = apply(&s, &APP.replace("a: \"1\"", "a: \"2\"").replace("replicas: 2", "replicas: 3"), &[]);
    assert!(changed.contains("configmap/cfg configured"), "{changed}");
    assert!(changed.contains("deployment.apps/web configured"), "{changed}");
    assert!(changed.contains("service/web unchanged"), "{changed}");
    assert_eq!(s.ok(&["get", "deploy", "web", "-n", "demo", "-o", "jsonpath={.spec.replicas}"]), "3");
    assert_eq!(s.ok(&["get", "cm", "cfg", "-n", "demo", "-o", "jsonpath={.data.a}"]), "2");

    // Output formats.
    let table = s.ok(&["get", "configmaps", "-n", "demo"]);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains("cfg"), "{table}");
    let json: serde_json::Value =
        serde_json::from_str(&s.ok(&["get", "svc", "web", "-n", "demo", "-o", "json"])).unwrap();
    assert_eq!(json["spec"]["ports"][0]["port"], 80);
    let ip = json["spec"]["clusterIP"].as_str().unwrap();
    assert!(ip.starts_with("10.43."), "{ip}");
    let yaml = s.ok(&["get", "deploy", "web", "-n", "demo", "-o", "yaml"]);
    assert!(yaml.contains("kind: Deployment"), "{yaml}");
    let cc = s.ok(&["get", "cm", "-n", "demo", "-o", "custom-columns=NAME:.metadata.name,A:.data.a"]);
    assert_eq!(cc.lines().nth(1).unwrap().split_whitespace().collect::<Vec<_>>(), ["cfg", "2"]);
    let by_label = s.ok(&["get", "cm", "-A", "-l", "tier=config", "-o", "name"]);
    assert_eq!(by_label.trim(), "configmap/cfg");
    let by_field = s.ok(&["get", "cm", "-A", "--field-selector", "metadata.name=cfg", "-o", "name"]);
    assert_eq!(by_field.trim(), "configmap/cfg");
    // A pinned name reads one key; names that merely start with it must not match.
    s.ok(&["create", "configmap", "cfg2", "-n", "demo"]);
    let pinned = s.ok(&["get", "cm", "-n", "demo", "--field-selector", "metadata.name=cfg", "-o", "name"]);
    assert_eq!(pinned.trim(), "configmap/cfg");
    let pinned = s.ok(&["get", "ns", "--field-selector", "metadata.name=demo", "-o", "name"]);
    assert_eq!(pinned.trim(), "namespace/demo");
    let all_ns = s.ok(&["get", "svc", "-A"]);
    assert!(all_ns.contains("default") && all_ns.contains("kubernetes") && all_ns.contains("demo"), "{all_ns}");
    // Pagination: kubectl follows continue tokens page by page.
    let chunked = s.ok(&["get", "namespaces", "--chunk-size=1", "-o", "name"]);
    assert_eq!(chunked.lines().count(), 5, "{chunked}");
    let wide = s.ok(&["get", "deploy", "-n", "demo", "-o", "wide"]);
    assert!(wide.contains("web"), "{wide}");
    let described = s.ok(&["describe", "deploy", "web", "-n", "demo"]);
    assert!(described.contains("Name:") && described.contains("busybox:1.36"), "{described}");

    // Server-side apply and diff.
    let ssa = apply(&s, &APP.replace("a: \"1\"", "a: \"ssa\""), &["--server-side", "--force-conflicts"]);
    assert!(ssa.contains("serverside-applied"), "{ssa}");
    assert_eq!(s.ok(&["get", "cm", "cfg", "-n", "demo", "-o", "jsonpath={.data.a}"]), "ssa");
    let diff = s.apply_stdin(&["diff", "-f", "-"], &APP.replace("a: \"1\"", "a: \"diffed\""));
    assert_eq!(
        diff.status.code(),
        Some(1),
        "diff exits 1 when there are differences: {}",
        String::from_utf8_lossy(&diff.stderr)
    );
    assert!(
        String::from_utf8_lossy(&diff.stdout).contains("+  a: diffed"),
        "{}",
        String::from_utf8_lossy(&diff.stdout)
    );
    assert_eq!(
        s.ok(&["get", "cm", "cfg", "-n", "demo", "-o", "jsonpath={.data.a}"]),
        "ssa",
        "diff must not change anything"
    );
}

#[test]
fn patch_label_annotate_scale_edit() {
    let s = Server::start();
    apply(&s, APP, &[]);
    s.ok(&["patch", "cm", "cfg", "-n", "demo", "--type=json", "-p", r#"[{"op":"add","path":"/data/b","value":"2"}]"#]);
    s.ok(&["patch", "cm", "cfg", "-n", "demo", "--type=merge", "-p", r#"{"data":{"c":"3"}}"#]);
    s.ok(&[
        "patch",
        "deploy",
        "web",
        "-n",
        "demo",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"busybox:1.37"}]}}}}"#,
    ]);
    let data = s.ok(&["get", "cm", "cfg", "-n", "demo", "-o", "jsonpath={.data}"]);
    let data: serde_json::Value = serde_json::from_str(&data).unwrap();
    assert_eq!(data, serde_json::json!({"a": "1", "b": "2", "c": "3"}));
    let d: serde_json::Value =
        serde_json::from_str(&s.ok(&["get", "deploy", "web", "-n", "demo", "-o", "json"])).unwrap();
    assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["image"], "busybox:1.37");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["command"][0], "httpd",
        "strategic merge keeps other fields"
    );
    assert_eq!(d["metadata"]["generation"], 2);

    s.ok(&["label", "cm", "cfg", "-n", "demo", "color=blue"]);
    s.ok(&["annotate", "cm", "cfg", "-n", "demo", "note=hello"]);
    assert_eq!(
        s.ok(&["get", "cm", "-n", "demo", "-l", "color=blue", "-o", "jsonpath={.items[0].metadata.annotations.note}"]),
        "hello"
    );
    s.ok(&["label", "cm", "cfg", "-n", "demo", "color-"]);
    assert_eq!(s.ok(&["get", "cm", "-n", "demo", "-l", "color", "-o", "name"]).trim(), "");

    assert!(s.ok(&["scale", "deploy", "web", "-n", "demo", "--replicas=5"]).contains("scaled"));
    assert_eq!(s.ok(&["get", "deploy", "web", "-n", "demo", "-o", "jsonpath={.spec.replicas}"]), "5");

    // kubectl edit with a script as the editor.
    let editor = s.path().join("editor.sh");
    std::fs::write(&editor, "#!/bin/sh\nsed -i 's/^  a: \"1\"$/  a: edited/' \"$1\"\n").unwrap();
    std::process::Command::new("chmod").arg("+x").arg(&editor).status().unwrap();
    let out = std::process::Command::new(common::KUBECTL)
        .args(["edit", "cm", "cfg", "-n", "demo"])
        .env("KUBECONFIG", &s.kubeconfig)
        .env("KUBE_EDITOR", &editor)
        .env("HOME", s.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(s.ok(&["get", "cm", "cfg", "-n", "demo", "-o", "jsonpath={.data.a}"]), "edited");
}

#[test]
fn watch_sees_later_changes() {
    // Only what the test writes may appear in the watched namespace.
    let s = Server::start_with(&["--disable-controller", "root-ca-cert-publisher"]);
    apply(&s, APP, &[]);
    let mut child = std::process::Command::new(common::KUBECTL)
        .args(["get", "cm", "-n", "demo", "-w", "--output-watch-events", "--request-timeout=20s"])
        .env("KUBECONFIG", &s.kubeconfig)
        .env("HOME", s.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let header = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
    assert_eq!(header.split_whitespace().collect::<Vec<_>>(), ["EVENT", "NAME", "DATA", "AGE"]);
    let first = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
    assert_eq!(first.split_whitespace().take(3).collect::<Vec<_>>(), ["ADDED", "cfg", "1"]);
    s.ok(&["create", "configmap", "later", "-n", "demo", "--from-literal=x=1"]);
    s.ok(&["delete", "configmap", "later", "-n", "demo"]);
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let line = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        seen.push(line.split_whitespace().take(2).collect::<Vec<_>>().join(" "));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(seen, ["ADDED later", "DELETED later"]);
}

#[test]
fn delete_with_finalizers_and_cascade() {
    // The namespace must stay Terminating, so no controller empties it.
    let s = Server::start_with(&["--disable-controller", "namespace"]);
    apply(&s, APP, &[]);
    s.ok(&[
        "patch",
        "cm",
        "cfg",
        "-n",
        "demo",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":["example.com/hold"]}}"#,
    ]);
    s.ok(&["delete", "cm", "cfg", "-n", "demo", "--wait=false"]);
    let v: serde_json::Value = serde_json::from_str(&s.ok(&["get", "cm", "cfg", "-n", "demo", "-o", "json"])).unwrap();
    assert!(v["metadata"]["deletionTimestamp"].is_string(), "{v}");
    let err = s.fails(&[
        "patch",
        "cm",
        "cfg",
        "-n",
        "demo",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/metadata/finalizers/-","value":"example.com/more"}]"#,
    ]);
    assert!(err.contains("no new finalizers can be added if the object is being deleted"), "{err}");
    s.ok(&["patch", "cm", "cfg", "-n", "demo", "--type=merge", "-p", r#"{"metadata":{"finalizers":null}}"#]);
    let gone = s.fails(&["get", "cm", "cfg", "-n", "demo"]);
    assert!(gone.contains("configmaps \"cfg\" not found"), "{gone}");

    // Foreground deletion of an object without dependents completes.
    let out = s.kubectl(&["delete", "deploy", "web", "-n", "demo", "--cascade=foreground", "--timeout=20s"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(s.fails(&["get", "deploy", "web", "-n", "demo"]).contains("not found"));
    // A terminating namespace refuses new content (its finalizer keeps it until a namespace
    // controller empties it).
    s.ok(&["delete", "namespace", "demo", "--wait=false"]);
    assert_eq!(s.ok(&["get", "ns", "demo", "-o", "jsonpath={.status.phase}"]), "Terminating");
    let refused = s.fails(&["create", "configmap", "late", "-n", "demo"]);
    assert!(
        refused.contains("unable to create new content in namespace demo because it is being terminated"),
        "{refused}"
    );
    let immortal = s.fails(&["delete", "namespace", "kube-system"]);
    assert!(
        immortal.contains("namespaces \"kube-system\" is forbidden: this namespace may not be deleted"),
        "{immortal}"
    );
    // Orphan deletion keeps nothing waiting either.
    s.ok(&["delete", "svc", "web", "-n", "demo", "--cascade=orphan"]);
    assert!(s.fails(&["get", "svc", "web", "-n", "demo"]).contains("not found"));
}

#[test]
fn discovery_explain_auth_and_misc() {
    let s = Server::start();
    let res = s.ok(&["api-resources"]);
    for (name, short) in [
        ("pods", "po"),
        ("deployments", "deploy"),
        ("services", "svc"),
        ("namespaces", "ns"),
        ("horizontalpodautoscalers", "hpa"),
        ("certificatesigningrequests", "csr"),
        ("priorityclasses", "pc"),
    ] {
        let line = res
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} missing:\n{res}"));
        assert!(line.split_whitespace().any(|w| w == short), "{name} lacks short name {short}: {line}");
    }
    let explain = s.ok(&["explain", "deployment.spec.strategy"]);
    assert!(explain.contains("KIND:       Deployment") && explain.contains("rollingUpdate"), "{explain}");
    assert_eq!(s.ok(&["auth", "can-i", "create", "deployments"]).trim(), "yes");
    let who = s.ok(&["auth", "whoami"]);
    assert!(who.contains("system:admin") && who.contains("system:masters"), "{who}");
    let dry = s.ok(&["create", "configmap", "dry", "--from-literal=a=b", "--dry-run=server"]);
    assert!(dry.contains("configmap/dry created (server dry run)"), "{dry}");
    assert!(s.fails(&["get", "cm", "dry"]).contains("not found"));
    let ready = s.ok(&["get", "--raw", "/readyz?verbose"]);
    assert!(ready.contains("[+]ping ok") && ready.ends_with("readyz check passed\n"), "{ready}");
    let v = s.ok(&["version", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&v).unwrap();
    assert_eq!(v["serverVersion"]["minor"], "32");
    let svc = s.ok(&["get", "svc", "kubernetes", "-o", "jsonpath={.spec.clusterIP}"]);
    assert_eq!(svc, "10.43.0.1");
    let eps = s.ok(&["get", "endpointslices", "kubernetes", "-o", "jsonpath={.endpoints[0].addresses[0]}"]);
    assert_eq!(eps, "127.0.0.1");
    let ns = s.ok(&["get", "ns", "-o", "name"]);
    assert_eq!(
        ns.lines().collect::<Vec<_>>(),
        ["namespace/default", "namespace/kube-node-lease", "namespace/kube-public", "namespace/kube-system"]
    );
}

#[test]
fn other_kubectl_versions() {
    let s = Server::start();
    for v in ["1.27", "1.33"] {
        let bin = format!("/usr/lib/google-cloud-sdk/bin/kubectl.{v}");
        if !std::path::Path::new(&bin).exists() {
            panic!("{bin} is missing");
        }
        let run = |args: &[&str]| {
            let out = s.kubectl_bin(&bin, args);
            assert!(out.status.success(), "kubectl {v} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let name = format!("cm-{}", v.replace('.', "-"));
        run(&["create", "configmap", &name, "--from-literal=k=v"]);
        assert!(run(&["get", "cm"]).contains(&name));
        run(&["label", "cm", &name, "x=y"]);
        assert_eq!(run(&["get", "cm", "-l", "x=y", "-o", "name"]).trim(), format!("configmap/{name}"));
        assert!(run(&["api-resources"]).contains("deployments"));
        run(&["delete", "cm", &name]);
    }
}

const SSA_DEPLOY: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: ssa
  namespace: default
spec:
  replicas: 2
  selector:
    matchLabels: {app: ssa}
  template:
    metadata:
      labels: {app: ssa}
    spec:
      containers:
      - name: main
        image: busybox:1.36
      - name: sidecar
        image: busybox:1.36
"#;

#[test]
fn server_side_apply_owns_its_fields() {
    let s = Server::start();
    apply(&s, SSA_DEPLOY, &["--server-side"]);
    let names = || s.ok(&["get", "deploy", "ssa", "-o", "jsonpath={.spec.template.spec.containers[*].name}"]);
    assert_eq!(names(), "main sidecar");
    // Dropping an item from the applied configuration removes it.
    let without_sidecar = SSA_DEPLOY.replace("      - name: sidecar\n        image: busybox:1.36\n", "");
    apply(&s, &without_sidecar, &["--server-side"]);
    assert_eq!(names(), "main");
    // Another manager takes replicas; applying a different value conflicts until forced.
    s.ok(&["scale", "deploy", "ssa", "--replicas=5"]);
    let out =
        s.apply_stdin(&["apply", "--server-side", "-f", "-"], &without_sidecar.replace("replicas: 2", "replicas: 3"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("conflict with") && err.contains(".spec.replicas"), "{err}");
    apply(&s, &without_sidecar.replace("replicas: 2", "replicas: 3"), &["--server-side", "--force-conflicts"]);
    assert_eq!(s.ok(&["get", "deploy", "ssa", "-o", "jsonpath={.spec.replicas}"]), "3");
    let managers =
        s.ok(&["get", "deploy", "ssa", "--show-managed-fields", "-o", "jsonpath={.metadata.managedFields[*].manager}"]);
    assert!(managers.contains("kubectl"), "{managers}");
}

#[test]
fn server_side_apply_shares_keyed_lists_between_managers() {
    let s = Server::start();
    let only = |name: &str, image: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: shared}}\nspec:\n  selector: {{matchLabels: {{app: s}}}}\n  template:\n    metadata: {{labels: {{app: s}}}}\n    spec:\n      containers:\n      - {{name: {name}, image: {image}}}\n"
        )
    };
    let as_manager =
        |m: &str, manifest: &str| s.apply_stdin(&["apply", "--server-side", "--field-manager", m, "-f", "-"], manifest);
    let names = || s.ok(&["get", "deploy", "shared", "-o", "jsonpath={.spec.template.spec.containers[*].name}"]);
    assert!(as_manager("alice", &only("a", "busybox")).status.success());
    // Each manager owns its own items of a list keyed by name.
    assert!(as_manager("bob", &only("b", "busybox")).status.success());
    assert_eq!(names(), "a b");
    // Applying an equal value co-owns it (bob drops b, which only he owned).
    assert!(as_manager("bob", &only("a", "busybox")).status.success());
    assert_eq!(names(), "a");
    // A different value for a field someone else owns is a conflict naming the item.
    let out = as_manager("bob", &only("a", "nginx"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(r#"conflict with "alice" using apps/v1: .spec.template.spec.containers[name="a"].image"#),
        "{err}"
    );
    // An item stays while anyone still applies it, and goes when the last owner drops it.
    assert!(as_manager("alice", &only("c", "busybox")).status.success());
    assert_eq!(names(), "a c");
    assert!(as_manager("bob", &only("z", "busybox")).status.success());
    assert_eq!(names(), "c z");
}

#[test]
fn service_account_tokens_authenticate() {
    let s = Server::start();
    s.ok(&["create", "serviceaccount", "robot"]);
    let token = s.ok(&["create", "token", "robot", "--duration=1h"]);
    let token = token.trim();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    // A kubeconfig with only the token (a client certificate would take precedence).
    let kc: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(&s.kubeconfig).unwrap()).unwrap();
    let robot = s.path().join("robot.yaml");
    let doc = serde_json::json!({
        "apiVersion": "v1", "kind": "Config", "current-context": "r",
        "clusters": [{"name": "c", "cluster": {"server": kc["clusters"][0]["cluster"]["server"].as_str().unwrap(),
            "certificate-authority-data": kc["clusters"][0]["cluster"]["certificate-authority-data"].as_str().unwrap()}}],
        "users": [{"name": "r", "user": {"token": token}}],
        "contexts": [{"name": "r", "context": {"cluster": "c", "user": "r"}}],
    });
    std::fs::write(&robot, serde_yaml::to_string(&doc).unwrap()).unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(common::KUBECTL)
            .args(args)
            .env("KUBECONFIG", &robot)
            .env("HOME", s.path())
            .output()
            .unwrap()
    };
    let who = run(&["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"]);
    assert_eq!(
        String::from_utf8_lossy(&who.stdout),
        "system:serviceaccount:default:robot",
        "{}",
        String::from_utf8_lossy(&who.stderr)
    );
    let denied = run(&["get", "pods"]);
    assert!(!denied.status.success());
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("User \"system:serviceaccount:default:robot\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""),
        "{}",
        String::from_utf8_lossy(&denied.stderr)
    );
    let can = run(&["auth", "can-i", "list", "pods"]);
    assert_eq!(String::from_utf8_lossy(&can.stdout).trim(), "no");
}

#[test]
fn tables_for_autoscalers_budgets_quotas_and_volumes() {
    // The events listed must be only the ones the test writes.
    let s = Server::start_with(&["--disable-controller", "deployment"]);
    apply(&s, APP, &[]);
    s.ok(&["autoscale", "deployment", "web", "-n", "demo", "--min=2", "--max=5", "--cpu-percent=80"]);
    let hpa = s.ok(&["get", "hpa", "-n", "demo"]);
    let header: Vec<&str> = hpa.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "REFERENCE", "TARGETS", "MINPODS", "MAXPODS", "REPLICAS", "AGE"], "{hpa}");
    let row = hpa.lines().nth(1).unwrap();
    assert!(row.starts_with("web") && row.contains("Deployment/web") && row.contains("cpu: <unknown>/80%"), "{hpa}");

    // One object, two versions: autoscaling/v1 reads and writes the v2 object.
    assert_eq!(
        s.ok(&[
            "get",
            "horizontalpodautoscalers.v1.autoscaling",
            "web",
            "-n",
            "demo",
            "-o",
            "jsonpath={.spec.targetCPUUtilizationPercentage}"
        ]),
        "80"
    );
    s.ok(&[
        "patch",
        "horizontalpodautoscalers.v1.autoscaling",
        "web",
        "-n",
        "demo",
        "--type=merge",
        "-p",
        r#"{"spec":{"targetCPUUtilizationPercentage":65}}"#,
    ]);
    assert_eq!(
        s.ok(&[
            "get",
            "horizontalpodautoscalers.v2.autoscaling",
            "web",
            "-n",
            "demo",
            "-o",
            "jsonpath={.spec.metrics[0].resource.target.averageUtilization}"
        ]),
        "65"
    );
    let v1 = r#"{"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "api", "namespace": "demo"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"}, "maxReplicas": 3}}"#;
    apply(&s, v1, &[]);
    assert_eq!(
        s.ok(&[
            "get",
            "hpa",
            "api",
            "-n",
            "demo",
            "-o",
            "jsonpath={.spec.minReplicas} {.spec.metrics[0].resource.name}"
        ]),
        "1 cpu"
    );

    // Events written through events.k8s.io/v1 are core Events too.
    let ev = r#"{"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "web.1", "namespace": "demo"},
        "eventTime": "2024-01-01T00:00:00.000000Z", "reportingController": "skiff", "reportingInstance": "box", "action": "Scaled",
        "reason": "ScalingReplicaSet", "type": "Normal", "note": "Scaled up to 2", "regarding": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "namespace": "demo"}}"#;
    let created = s.apply_stdin(&["create", "-f", "-"], ev);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let events = s.ok(&["get", "events", "-n", "demo", "--field-selector", "involvedObject.name=web"]);
    assert!(events.contains("deployment/web") && events.contains("Scaled up to 2"), "{events}");
    assert_eq!(
        s.ok(&[
            "get",
            "events.v1.events.k8s.io",
            "-n",
            "demo",
            "--field-selector",
            "regarding.kind=Deployment",
            "-o",
            "jsonpath={.items[*].note}"
        ]),
        "Scaled up to 2"
    );

    s.ok(&["create", "poddisruptionbudget", "web", "-n", "demo", "--selector=app=web", "--min-available=1"]);
    let pdb = s.ok(&["get", "pdb", "-n", "demo"]);
    assert!(pdb.starts_with("NAME   MIN AVAILABLE   MAX UNAVAILABLE   ALLOWED DISRUPTIONS   AGE"), "{pdb}");
    assert_eq!(pdb.lines().nth(1).unwrap().split_whitespace().take(4).collect::<Vec<_>>(), ["web", "1", "N/A", "0"]);

    // kubectl create sends protobuf; maps of quantities must survive the decoding.
    s.ok(&["create", "quota", "q", "-n", "demo", "--hard=pods=10,requests.cpu=500m"]);
    assert_eq!(
        s.ok(&["get", "quota", "q", "-n", "demo", "-o", "jsonpath={.spec.hard}"]),
        r#"{"pods":"10","requests.cpu":"500m"}"#
    );
    let quota = s.ok(&["get", "quota", "-n", "demo"]);
    assert!(quota.starts_with("NAME   AGE"), "{quota}");

    let pv = r#"{"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "data"},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "hostPath": {"path": "/srv/data"},
        "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "local"}}"#;
    apply(&s, pv, &[]);
    let out = s.ok(&["get", "pv", "-o", "wide"]);
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "CAPACITY",
            "ACCESS",
            "MODES",
            "RECLAIM",
            "POLICY",
            "STATUS",
            "CLAIM",
            "STORAGECLASS",
            "VOLUMEATTRIBUTESCLASS",
            "REASON",
            "AGE",
            "VOLUMEMODE"
        ],
        "{out}"
    );
    assert_eq!(
        out.lines().nth(1).unwrap().split_whitespace().take(6).collect::<Vec<_>>(),
        ["data", "1Gi", "RWO", "Retain", "Pending", "local"]
    );
}

/// `kubectl create <generator>` and `kubectl run` send protobuf bodies: Go's zero values must
/// read as unset (so defaults apply), pointer zeros must stay, embedded structs must inline.
#[test]
fn generators_that_send_protobuf() {
    let s = Server::start();
    s.ok(&["create", "deployment", "api", "--image=busybox", "--replicas=0", "--port=8080"]);
    assert_eq!(
        s.ok(&["get", "deploy", "api", "-o", "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].imagePullPolicy} {.spec.template.spec.restartPolicy}"]),
        "0 Always Always"
    );
    s.ok(&["run", "p", "--image=busybox:1.36", "--restart=Never", "--", "sleep", "1"]);
    assert_eq!(
        s.ok(&["get", "pod", "p", "-o", "jsonpath={.spec.containers[0].imagePullPolicy} {.spec.dnsPolicy}"]),
        "IfNotPresent ClusterFirst"
    );
    s.ok(&["create", "ingress", "web", "--rule=example.com/api=api:8080"]);
    assert_eq!(
        s.ok(&["get", "ingress", "web", "-o", "jsonpath={.spec.rules[0].http.paths[0].backend.service.port.number}"]),
        "8080"
    );
    s.ok(&["create", "service", "nodeport", "api", "--tcp=80:8080"]);
    assert_eq!(s.ok(&["get", "svc", "api", "-o", "jsonpath={.spec.ports[0].targetPort}"]), "8080");
    s.ok(&["create", "job", "once", "--image=busybox"]);
    assert_eq!(s.ok(&["get", "job", "once", "-o", "jsonpath={.spec.backoffLimit} {.spec.completions}"]), "6 1");
}
