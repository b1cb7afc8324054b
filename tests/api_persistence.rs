//! Durability: objects and the revision counter survive restarts, every acknowledged write
//! survives `kill -9`, and SIGTERM stops the server promptly.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::Server;
use common::reqwest_like::Client;

#[test]
fn objects_and_revisions_survive_a_restart() {
    let mut s = Server::start();
    s.ok(&["create", "configmap", "keep", "--from-literal=a=b"]);
    let rv_before: u64 = s.ok(&["get", "cm", "keep", "-o", "jsonpath={.metadata.resourceVersion}"]).parse().unwrap();
    // Delete the newest object so the highest revision is not visible in any key.
    s.ok(&["create", "configmap", "tmp"]);
    s.ok(&["delete", "configmap", "tmp"]);
    let took = s.terminate();
    assert!(took < Duration::from_secs(5), "SIGTERM took {took:?}");
    assert!(s.log().contains("stopped"), "{}", s.log());
    s.launch();
    assert_eq!(s.ok(&["get", "cm", "keep", "-o", "jsonpath={.data.a}"]), "b");
    s.ok(&["create", "configmap", "after"]);
    let rv_after: u64 = s.ok(&["get", "cm", "after", "-o", "jsonpath={.metadata.resourceVersion}"]).parse().unwrap();
    assert!(rv_after > rv_before + 2, "revisions must never repeat: {rv_before} then {rv_after}");
    // The certificates and token are reused, not re-created.
    let token = s.server_file("token");
    s.terminate();
    s.launch();
    assert_eq!(s.server_file("token"), token);
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let mut s = Server::start();
    let client = Client::from_kubeconfig(&s.kubeconfig, true);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = rt.block_on(async {
        let mut tasks = Vec::new();
        for w in 0..16 {
            let client = client.clone();
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                let mut ok = Vec::new();
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let name = format!("storm-{w}-{i}");
                    let body = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"x": "y".repeat(512)}});
                    match client
                        .send("POST", "/api/v1/namespaces/default/configmaps", &[("content-type", "application/json")], body.to_string().into_bytes())
                        .await
                    {
                        Ok(r) if r.status == 201 => ok.push(name),
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
                ok
            }));
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        (tasks, stop.clone())
    });
    let (tasks, stop) = acked;
    s.kill9();
    stop.store(true, Ordering::Relaxed);
    let acked: Vec<String> = rt.block_on(async {
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    });
    assert!(acked.len() > 50, "the storm should have written something: {}", acked.len());
    s.launch();
    let names = s.ok(&["get", "cm", "-o", "jsonpath={.items[*].metadata.name}"]);
    let present: std::collections::HashSet<&str> = names.split_whitespace().collect();
    let missing: Vec<&String> = acked.iter().filter(|n| !present.contains(n.as_str())).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged writes lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}
