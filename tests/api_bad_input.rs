//! Bad input gets a Kubernetes `Status` with the right code, never a crash, and never changes
//! stored data.

mod common;

use common::Server;
use common::reqwest_like::Client;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

const CM_PATH: &str = "/api/v1/namespaces/default/configmaps";

#[test]
fn malformed_and_invalid_bodies() {
    let s = Server::start();
    s.ok(&["create", "configmap", "orig", "--from-literal=a=b"]);
    let before = s.ok(&["get", "cm", "orig", "-o", "json"]);
    let c = Client::from_kubeconfig(&s.kubeconfig, true);
    let json = [("content-type", "application/json")];
    let rt = rt();
    let send = |method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]| {
        rt.block_on(c.send(method, path, headers, body.to_vec())).unwrap()
    };

    let r = send("POST", CM_PATH, &json, b"{not json");
    assert_eq!((r.status, r.json()["reason"].as_str()), (400, Some("BadRequest")), "{}", r.text());
    assert_eq!(r.json()["kind"], "Status");
    let r = send("POST", CM_PATH, &[("content-type", "application/yaml")], b"a: [\n");
    assert_eq!(r.status, 400, "{}", r.text());
    let r = send("POST", CM_PATH, &json, br#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"x"}}"#);
    assert_eq!(r.status, 400, "wrong kind: {}", r.text());
    let r = send("POST", CM_PATH, &json, br#"{"apiVersion":"v2","kind":"ConfigMap","metadata":{"name":"x"}}"#);
    assert_eq!(r.status, 400, "wrong apiVersion: {}", r.text());
    let big = format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"big"}},"data":{{"a":"{}"}}}}"#,
        "x".repeat(3 * 1024 * 1024 + 10)
    );
    let r = send("POST", CM_PATH, &json, big.as_bytes());
    assert_eq!((r.status, r.json()["reason"].as_str()), (413, Some("RequestEntityTooLarge")), "{}", r.text());
    let r = send(
        "POST",
        &format!("{CM_PATH}?fieldValidation=Strict"),
        &json,
        br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"s","bogus":1},"dataa":{}}"#,
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["message"], "strict decoding error: unknown field \"metadata.bogus\", unknown field \"dataa\"");
    let r = send(
        "POST",
        &format!("{CM_PATH}?fieldValidation=Warn"),
        &json,
        br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"w"},"dataa":{}}"#,
    );
    assert_eq!(r.status, 201);
    assert_eq!(r.headers.get("warning").unwrap().to_str().unwrap(), "299 - \"unknown field \\\"dataa\\\"\"");
    assert!(r.json().get("dataa").is_none(), "unknown fields are dropped");
    let r = send("POST", CM_PATH, &json, br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"Bad_Name"}}"#);
    assert_eq!((r.status, r.json()["reason"].as_str()), (422, Some("Invalid")), "{}", r.text());
    assert_eq!(r.json()["details"]["causes"][0]["field"], "metadata.name");
    let r = send(
        "POST",
        CM_PATH,
        &json,
        br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"lbl","labels":{"a b":"c"}}}"#,
    );
    assert_eq!(r.status, 422, "{}", r.text());
    let r = send(
        "POST",
        "/api/v1/namespaces/default/services",
        &json,
        br#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"p"},"spec":{"ports":[{"port":70000}]}}"#,
    );
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.json()["details"]["causes"][0]["field"], "spec.ports[0].port");
    let svc = |name: &str, spec: &str| {
        format!(r#"{{"apiVersion":"v1","kind":"Service","metadata":{{"name":"{name}"}},"spec":{spec}}}"#)
    };
    let r = send(
        "POST",
        "/api/v1/namespaces/default/services",
        &json,
        svc("taken", r#"{"clusterIP":"10.43.0.1","ports":[{"port":80}]}"#).as_bytes(),
    );
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(
        r.json()["message"],
        "Service \"taken\" is invalid: spec.clusterIPs: Invalid value: [\"10.43.0.1\"]: failed to allocate IP 10.43.0.1: provided IP is already allocated"
    );
    let r = send(
        "POST",
        "/api/v1/namespaces/default/services",
        &json,
        svc("far", r#"{"clusterIP":"10.96.0.5","ports":[{"port":80}]}"#).as_bytes(),
    );
    assert_eq!(r.status, 422, "{}", r.text());
    // An ExternalName must be a DNS name (a trailing dot allowed), as upstream checks.
    let r = send(
        "POST",
        "/api/v1/namespaces/default/services",
        &json,
        svc("ext", r#"{"type":"ExternalName","externalName":"not_valid!"}"#).as_bytes(),
    );
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(
        r.json()["message"],
        "Service \"ext\" is invalid: spec.externalName: Invalid value: \"not_valid!\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
    );
    let r = send(
        "POST",
        "/api/v1/namespaces/default/services",
        &json,
        svc("ext", r#"{"type":"ExternalName","externalName":"db.example.org."}"#).as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = send(
        "POST",
        "/api/v1/namespaces/default/services",
        &json,
        svc("np", r#"{"type":"NodePort","ports":[{"port":80,"nodePort":30555}]}"#).as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = send(
        "POST",
        "/api/v1/namespaces/default/services",
        &json,
        svc("np2", r#"{"type":"NodePort","ports":[{"port":80,"nodePort":30555}]}"#).as_bytes(),
    );
    assert_eq!(
        r.json()["details"]["causes"][0]["message"],
        "Invalid value: 30555: provided port is already allocated",
        "{}",
        r.text()
    );
    let r = send(
        "POST",
        "/api/v1/namespaces/default/services",
        &json,
        svc("np3", r#"{"type":"NodePort","ports":[{"port":80,"nodePort":80}]}"#).as_bytes(),
    );
    assert_eq!(r.status, 422, "{}", r.text());
    // Deleting frees the port for the next Service.
    let r = send("DELETE", "/api/v1/namespaces/default/services/np", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let r = send(
        "POST",
        "/api/v1/namespaces/default/services",
        &json,
        svc("np4", r#"{"type":"NodePort","ports":[{"port":80,"nodePort":30555}]}"#).as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    // A health-check node port belongs to LoadBalancers with externalTrafficPolicy Local only;
    // those get one from the node-port range.
    let r = send(
        "POST",
        "/api/v1/namespaces/default/services",
        &json,
        svc("hc", r#"{"type":"NodePort","healthCheckNodePort":30556,"ports":[{"port":80}]}"#).as_bytes(),
    );
    assert_eq!(
        (r.status, r.json()["message"].as_str()),
        (
            422,
            Some(
                "Service \"hc\" is invalid: spec.healthCheckNodePort: Invalid value: 30556: may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'"
            )
        ),
        "{}",
        r.text()
    );
    let r = send(
        "POST",
        "/api/v1/namespaces/default/services",
        &json,
        svc("hc", r#"{"type":"LoadBalancer","externalTrafficPolicy":"Local","ports":[{"port":80}]}"#).as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let port = r.json()["spec"]["healthCheckNodePort"].as_u64().expect("a health-check node port");
    assert!((30000..=32767).contains(&port), "{port}");
    let r = send("GET", &format!("{CM_PATH}?resourceVersion=abc"), &[], b"");
    assert_eq!(r.status, 400, "{}", r.text());
    let r = send("PATCH", &format!("{CM_PATH}/orig"), &[("content-type", "application/json-patch+json")], b"garbage");
    assert_eq!(r.status, 400, "{}", r.text());
    let r = send(
        "PATCH",
        &format!("{CM_PATH}/orig"),
        &[("content-type", "application/json-patch+json")],
        br#"[{"op":"remove","path":"/nope"}]"#,
    );
    assert_eq!(r.status, 422, "{}", r.text());
    let r = send("PATCH", &format!("{CM_PATH}/orig"), &[("content-type", "application/merge-patch+json")], b"[1,2]");
    assert_eq!(r.status, 400, "{}", r.text());
    let r = send("PUT", &format!("{CM_PATH}/orig"), &json, br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"orig","resourceVersion":"1"},"data":{"a":"changed"}}"#);
    assert_eq!((r.status, r.json()["reason"].as_str()), (409, Some("Conflict")), "{}", r.text());
    let r = send(
        "POST",
        "/api/v1/namespaces/nowhere/configmaps",
        &json,
        br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"}}"#,
    );
    assert_eq!(
        (r.status, r.json()["message"].as_str()),
        (404, Some("namespaces \"nowhere\" not found")),
        "{}",
        r.text()
    );
    let r = send("GET", "/api/v1/namespaces/default/widgets", &[], b"");
    assert_eq!(r.status, 404);
    // Nothing above changed the stored object.
    assert_eq!(s.ok(&["get", "cm", "orig", "-o", "json"]), before);
}

#[test]
fn values_of_the_wrong_type_and_numeric_quantities() {
    let s = Server::start();
    let deployment = "apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: three
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: c, image: busybox}]}
";
    let out = s.apply_stdin(&["create", "-f", "-"], deployment);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "Error from server (BadRequest): error when creating \"STDIN\": Deployment in version \"v1\" cannot be handled as \
         a Deployment: json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32"
    );
    // YAML numbers for quantities reach the API as JSON numbers; they are stored as strings, so
    // that every reader's typed decode takes them.
    let pod = "apiVersion: v1
kind: Pod
metadata: {name: q}
spec:
  containers:
  - name: c
    image: busybox
    resources: {requests: {cpu: 0.5, memory: 64}, limits: {cpu: 1}}
";
    let out = s.apply_stdin(&["create", "-f", "-"], pod);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let resources = &s.get_json(&["pod", "q"])["spec"]["containers"][0]["resources"];
    assert_eq!(resources["requests"], serde_json::json!({"cpu": "0.5", "memory": "64"}));
    assert_eq!(resources["limits"], serde_json::json!({"cpu": "1"}));
}

#[test]
fn authentication_failures() {
    let s = Server::start();
    let rt = rt();
    let anon = Client::from_kubeconfig(&s.kubeconfig, false);
    let r = rt.block_on(anon.send("GET", "/api/v1/namespaces", &[], vec![])).unwrap();
    assert_eq!((r.status, r.json()["reason"].as_str()), (401, Some("Unauthorized")));
    for path in ["/healthz", "/livez", "/readyz", "/version"] {
        let r = rt.block_on(anon.send("GET", path, &[], vec![])).unwrap();
        assert_eq!(r.status, 200, "{path} is public");
    }
    let r = rt.block_on(anon.send("GET", "/readyz?verbose", &[], vec![])).unwrap();
    assert!(r.text().contains("readyz check passed"));
    let foreign = Client::foreign(&s.kubeconfig);
    // A certificate from another CA claiming system:masters is answered 401, on every path.
    for path in ["/api/v1/namespaces", "/healthz"] {
        let r = rt.block_on(foreign.send("GET", path, &[], vec![])).expect("the handshake completes");
        assert_eq!((r.status, r.json()["reason"].as_str()), (401, Some("Unauthorized")), "{path}");
    }
    let bearer = rt
        .block_on(anon.send("GET", "/api/v1/namespaces", &[("authorization", "Bearer not-a-token")], vec![]))
        .unwrap();
    assert_eq!(bearer.status, 401);
}

#[test]
fn random_bytes_close_the_connection_only() {
    use std::io::{Read, Write};
    let s = Server::start();
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
    let junk: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let _ = sock.write_all(&junk);
    let mut buf = [0u8; 256];
    let mut total = 0;
    loop {
        match sock.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
        if total > 65536 {
            panic!("server kept talking to garbage");
        }
    }
    assert_eq!(s.ok(&["get", "--raw", "/readyz"]), "ok");
}
