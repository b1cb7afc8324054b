//! The `pods/eviction` subresource honours PodDisruptionBudgets as upstream's eviction handler
//! does, driven by kubectl 1.32 (and raw requests where kubectl would retry for minutes).

mod common;

use common::Server;
use common::reqwest_like::Client;
use serde_json::Value;

fn create(s: &Server, manifest: &str) {
    let out = s.apply_stdin(&["create", "-f", "-"], manifest);
    assert!(out.status.success(), "create failed: {}", String::from_utf8_lossy(&out.stderr));
}

fn namespace(s: &Server, ns: &str) {
    s.ok(&["create", "namespace", ns]);
}

/// A pod with `app: <app>`; `ready` makes it Running with a True or False Ready condition.
fn pod(s: &Server, ns: &str, name: &str, app: &str, ready: Option<bool>) {
    bound_pod(s, ns, name, app, ready, None);
}

/// A pod as `pod` makes it, bound to `node` when given (so its delete is graceful).
fn bound_pod(s: &Server, ns: &str, name: &str, app: &str, ready: Option<bool>, node: Option<&str>) {
    let node = node.map(|n| format!("  nodeName: {n}\n")).unwrap_or_default();
    create(
        s,
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels: {{app: {app}}}\nspec:\n{node}  containers:\n  - name: c\n    image: busybox:1.36\n"
        ),
    );
    if let Some(ready) = ready {
        let status = if ready { "True" } else { "False" };
        s.ok(&[
            "patch",
            "pod",
            name,
            "-n",
            ns,
            "--subresource=status",
            "--type=merge",
            "-p",
            &format!(r#"{{"status":{{"phase":"Running","conditions":[{{"type":"Ready","status":"{status}"}}]}}}}"#),
        ]);
    }
}

/// A budget with `minAvailable: 1` over `app: <app>`, plus extra spec lines.
fn pdb(s: &Server, ns: &str, name: &str, app: &str, extra_spec: &str) {
    create(
        s,
        &format!(
            "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  minAvailable: 1\n  selector:\n    matchLabels: {{app: {app}}}\n{extra_spec}"
        ),
    );
}

/// Sets the budget's status as the disruption controller would.
fn pdb_status(s: &Server, ns: &str, name: &str, allowed: i64, current: i64, desired: i64) {
    pdb_status_at(s, ns, name, 1, allowed, current, desired);
}

/// `pdb_status` for a budget whose spec is at `generation`.
fn pdb_status_at(s: &Server, ns: &str, name: &str, generation: i64, allowed: i64, current: i64, desired: i64) {
    s.ok(&[
        "patch",
        "pdb",
        name,
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        &format!(
            r#"{{"status":{{"observedGeneration":{generation},"disruptionsAllowed":{allowed},"currentHealthy":{current},"desiredHealthy":{desired},"expectedPods":1}}}}"#
        ),
    ]);
}

fn eviction_body(ns: &str, name: &str) -> String {
    format!(r#"{{"apiVersion":"policy/v1","kind":"Eviction","metadata":{{"name":"{name}","namespace":"{ns}"}}}}"#)
}

/// POSTs an Eviction with `kubectl create --raw`; returns (success, stdout, stderr).
fn evict(s: &Server, ns: &str, name: &str, query: &str) -> (bool, String, String) {
    let path = format!("/api/v1/namespaces/{ns}/pods/{name}/eviction{query}");
    let out = s.apply_stdin(&["create", "--raw", &path, "-f", "-"], &eviction_body(ns, name));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn get_json(s: &Server, args: &[&str]) -> Value {
    let mut a = vec!["get"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["-o", "json"]);
    serde_json::from_str(&s.ok(&a)).unwrap()
}

const REFUSED: &str =
    "Error from server (TooManyRequests): Cannot evict pod as it would violate the pod's disruption budget.";

#[test]
fn budget_refuses_then_allows_eviction() {
    let s = Server::start_with(&["--disable-controller", "disruption"]);
    let ns = "evict-budget";
    namespace(&s, ns);
    pod(&s, ns, "guarded", "guarded", Some(true));
    pdb(&s, ns, "guard", "guarded", "");
    pdb_status(&s, ns, "guard", 0, 1, 1);

    // No disruption left: refused, with upstream's message, and nothing changes.
    let (ok, _, err) = evict(&s, ns, "guarded", "");
    assert!(!ok, "eviction should be refused");
    assert_eq!(err.trim(), REFUSED, "{err}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let c = Client::from_kubeconfig(&s.kubeconfig, true);
    let path = format!("/api/v1/namespaces/{ns}/pods/guarded/eviction");
    let post = |path: &str, body: String| {
        rt.block_on(c.send("POST", path, &[("content-type", "application/json")], body.into_bytes())).unwrap()
    };
    let r = post(&path, eviction_body(ns, "guarded"));
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.headers.get("retry-after").is_none(), "no delay is suggested: {:?}", r.headers);
    assert_eq!(
        r.json(),
        serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "Cannot evict pod as it would violate the pod's disruption budget.",
            "reason": "TooManyRequests",
            "details": {"causes": [{"reason": "DisruptionBudget", "message": "The disruption budget guard needs 1 healthy pods and has 1 currently"}]},
            "code": 429,
        })
    );
    let p = get_json(&s, &["pod", "guarded", "-n", ns]);
    assert!(p["metadata"].get("deletionTimestamp").is_none(), "{p}");
    assert!(p["status"]["conditions"].as_array().unwrap().iter().all(|c| c["type"] != "DisruptionTarget"), "{p}");

    // The name in the body must be the pod's.
    let r = post(&path, eviction_body(ns, "other"));
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["message"], "name in URL does not match name in Eviction object");

    // One disruption allowed: a dry run passes and writes nothing.
    pdb_status(&s, ns, "guard", 1, 2, 1);
    let before = get_json(&s, &["pdb", "guard", "-n", ns]);
    let (ok, out, err) = evict(&s, ns, "guarded", "?dryRun=All");
    assert!(ok, "dry-run eviction failed: {err}");
    assert!(out.contains(r#""status":"Success""#), "{out}");
    assert_eq!(get_json(&s, &["pdb", "guard", "-n", ns]), before);
    let p = get_json(&s, &["pod", "guarded", "-n", ns]);
    assert!(p["metadata"].get("deletionTimestamp").is_none(), "{p}");

    // The real eviction takes the disruption, records the pod, and deletes it.
    let (ok, out, err) = evict(&s, ns, "guarded", "");
    assert!(ok, "eviction failed: {err}");
    let status: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        status,
        serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201})
    );
    let gone = s.fails(&["get", "pod", "guarded", "-n", ns]);
    assert!(gone.contains(r#"pods "guarded" not found"#), "{gone}");
    let after = get_json(&s, &["pdb", "guard", "-n", ns]);
    let st = &after["status"];
    assert_eq!(st["disruptionsAllowed"], 0, "{after}");
    let at = st["disruptedPods"]["guarded"].as_str().unwrap_or_default();
    assert!(chrono::DateTime::parse_from_rfc3339(at).is_ok(), "{after}");
    assert_eq!(st["disruptedPods"].as_object().unwrap().len(), 1, "{after}");
    let cond = &st["conditions"][0];
    assert_eq!(
        (&cond["type"], &cond["status"], &cond["reason"], &cond["observedGeneration"]),
        (
            &serde_json::json!("DisruptionAllowed"),
            &serde_json::json!("False"),
            &serde_json::json!("InsufficientPods"),
            &serde_json::json!(1)
        ),
        "{after}"
    );
    assert_eq!((st["currentHealthy"].as_i64(), st["desiredHealthy"].as_i64()), (Some(2), Some(1)));

    // A budget whose status has not seen its latest spec refuses, suggesting a retry in 10s
    // (raw request: kubectl would honour the Retry-After ten times over).
    bound_pod(&s, ns, "guarded2", "guarded", Some(true), Some("node-a"));
    pdb_status(&s, ns, "guard", 1, 2, 1);
    s.ok(&["patch", "pdb", "guard", "-n", ns, "--type=merge", "-p", r#"{"spec":{"minAvailable":2}}"#]);
    assert_eq!(get_json(&s, &["pdb", "guard", "-n", ns])["metadata"]["generation"], 2);
    let r = post(&format!("/api/v1/namespaces/{ns}/pods/guarded2/eviction"), eviction_body(ns, "guarded2"));
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.headers.get("retry-after").unwrap(), "10");
    assert_eq!(r.json()["details"]["retryAfterSeconds"], 10);
    assert_eq!(
        r.json()["details"]["causes"],
        serde_json::json!([{"reason": "DisruptionBudget", "message": "The disruption budget guard is still being processed by the server."}])
    );
    s.ok(&["get", "pod", "guarded2", "-n", ns]);

    // Once the status catches up, the bound pod is evicted: it is marked as a disruption
    // target and terminates gracefully.
    pdb_status_at(&s, ns, "guard", 2, 1, 2, 2);
    let (ok, _, err) = evict(&s, ns, "guarded2", "");
    assert!(ok, "eviction failed: {err}");
    let p = get_json(&s, &["pod", "guarded2", "-n", ns]);
    assert!(p["metadata"]["deletionTimestamp"].is_string(), "{p}");
    let target = p["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "DisruptionTarget");
    let target = target.unwrap_or_else(|| panic!("no DisruptionTarget condition: {p}"));
    assert_eq!(
        (&target["status"], &target["reason"], &target["message"]),
        (
            &serde_json::json!("True"),
            &serde_json::json!("EvictionByEvictionAPI"),
            &serde_json::json!("Eviction API: evicting")
        ),
        "{p}"
    );
    let st = &get_json(&s, &["pdb", "guard", "-n", ns])["status"];
    assert_eq!(st["disruptionsAllowed"], 0, "{st}");
    assert!(st["disruptedPods"]["guarded2"].is_string(), "{st}");
    assert_eq!(st["conditions"][0]["observedGeneration"], 2, "{st}");
}

#[test]
fn one_pod_two_budgets_is_an_error() {
    let s = Server::start_with(&["--disable-controller", "disruption"]);
    let ns = "evict-two-budgets";
    namespace(&s, ns);
    pod(&s, ns, "shared", "shared", Some(true));
    pdb(&s, ns, "first", "shared", "");
    pdb(&s, ns, "second", "shared", "");
    // A budget of another app is no match.
    pdb(&s, ns, "unrelated", "other", "");
    for name in ["first", "second"] {
        pdb_status(&s, ns, name, 1, 2, 1);
    }
    let (ok, _, err) = evict(&s, ns, "shared", "");
    assert!(!ok, "eviction should fail");
    assert_eq!(
        err.trim(),
        "Error from server: This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
        "{err}"
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let c = Client::from_kubeconfig(&s.kubeconfig, true);
    let r = rt
        .block_on(c.send(
            "POST",
            &format!("/api/v1/namespaces/{ns}/pods/shared/eviction"),
            &[("content-type", "application/json")],
            eviction_body(ns, "shared").into_bytes(),
        ))
        .unwrap();
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(
        r.json(),
        serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
            "code": 500,
        })
    );
    s.ok(&["get", "pod", "shared", "-n", ns]);
    for name in ["first", "second"] {
        assert_eq!(get_json(&s, &["pdb", name, "-n", ns])["status"]["disruptionsAllowed"], 1);
    }
}

#[test]
fn pods_that_are_not_running_and_ready() {
    let s = Server::start_with(&["--disable-controller", "disruption"]);
    let ns = "evict-unready";
    namespace(&s, ns);

    // A Pending pod disrupts nothing: evicted without consulting its budget.
    pod(&s, ns, "pending", "pending", None);
    pdb(&s, ns, "pending-guard", "pending", "");
    pdb_status(&s, ns, "pending-guard", 0, 0, 1);
    let (ok, _, err) = evict(&s, ns, "pending", "");
    assert!(ok, "pending pod eviction failed: {err}");
    s.fails(&["get", "pod", "pending", "-n", ns]);

    // An unready Running pod of an application below its budget stays...
    pod(&s, ns, "unready", "unready", Some(false));
    pdb(&s, ns, "unready-guard", "unready", "");
    pdb_status(&s, ns, "unready-guard", 0, 0, 1);
    let (ok, _, err) = evict(&s, ns, "unready", "");
    assert!(!ok);
    assert_eq!(err.trim(), REFUSED, "{err}");
    // ...and goes, without taking a disruption, once the application is healthy without it.
    pdb_status(&s, ns, "unready-guard", 0, 1, 1);
    let (ok, _, err) = evict(&s, ns, "unready", "");
    assert!(ok, "unready pod eviction failed: {err}");
    s.fails(&["get", "pod", "unready", "-n", ns]);
    let st = get_json(&s, &["pdb", "unready-guard", "-n", ns])["status"].clone();
    assert_eq!(st["disruptionsAllowed"], 0);
    assert!(st.get("disruptedPods").is_none(), "{st}");

    // AlwaysAllow lets unready pods go even when the application is short.
    pod(&s, ns, "crashing", "crashing", Some(false));
    pdb(&s, ns, "crashing-guard", "crashing", "  unhealthyPodEvictionPolicy: AlwaysAllow\n");
    pdb_status(&s, ns, "crashing-guard", 0, 0, 1);
    let (ok, _, err) = evict(&s, ns, "crashing", "");
    assert!(ok, "AlwaysAllow eviction failed: {err}");
    s.fails(&["get", "pod", "crashing", "-n", ns]);

    // A ready pod under an AlwaysAllow budget is still guarded.
    pod(&s, ns, "healthy", "crashing", Some(true));
    let (ok, _, err) = evict(&s, ns, "healthy", "");
    assert!(!ok);
    assert_eq!(err.trim(), REFUSED, "{err}");
    s.ok(&["get", "pod", "healthy", "-n", ns]);
}
