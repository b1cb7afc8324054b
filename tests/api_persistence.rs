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

/// Whether any file under `dir` holds `needle` (what `strings` over the data dir would find).
fn found_in_files(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut hits = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            hits.extend(found_in_files(&path, needle));
        } else if std::fs::read(&path).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle)) {
            hits.push(path);
        }
    }
    hits
}

fn secrets_encrypt(s: &Server, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(common::skiff_bin())
        .arg("secrets-encrypt")
        .args(args)
        .arg("--kubeconfig")
        .arg(&s.kubeconfig)
        .output()
        .expect("run skiff");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn secrets_are_encrypted_at_rest_and_keys_rotate() {
    use base64::Engine;
    let value = "correct-horse-battery-staple-4711";
    let b64 = base64::engine::general_purpose::STANDARD.encode(value);
    // Without the flag the value is in the data dir (as base64 in the stored JSON): the check
    // below would see it.
    let mut plain = Server::start();
    plain.ok(&["create", "secret", "generic", "db", &format!("--from-literal=password={value}")]);
    plain.terminate();
    assert!(!found_in_files(&plain.data_dir(), b64.as_bytes()).is_empty());

    let mut s = Server::start_with(&["--secrets-encryption"]);
    let key_file = s.data_dir().join("server/cred/encryption-config.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600);
    s.ok(&["create", "secret", "generic", "db", &format!("--from-literal=password={value}")]);
    s.ok(&["create", "secret", "generic", "other", &format!("--from-literal=also={value}")]);
    assert_eq!(s.ok(&["get", "secret", "db", "-o", "jsonpath={.data.password}"]), b64);
    let (ok, status, err) = secrets_encrypt(&s, &["status"]);
    assert!(ok, "{err}");
    let first_key = status.lines().last().and_then(|l| l.split_whitespace().last()).unwrap_or("").to_string();
    assert!(status.starts_with("Encryption Status: Enabled\nSecrets: "), "{status}");
    assert!(status.contains(" 0 with older keys, 0 in plain text\n"), "{status}");
    assert!(first_key.starts_with("aesgcmkey-"), "{status}");

    let (ok, rotated, err) = secrets_encrypt(&s, &["rotate-keys"]);
    assert!(ok, "{err}");
    assert!(rotated.contains(" 0 with older keys, 0 in plain text\n"), "{rotated}");
    assert!(!rotated.contains(&first_key), "the old key is gone:\n{rotated}");
    assert_eq!(rotated.matches("AES-GCM").count(), 1, "{rotated}");
    assert_eq!(s.ok(&["get", "secret", "other", "-o", "jsonpath={.data.also}"]), b64);
    s.terminate();
    for needle in [value.as_bytes(), b64.as_bytes()] {
        let hits = found_in_files(&s.data_dir(), needle);
        assert!(hits.is_empty(), "{:?} found in {hits:?}", String::from_utf8_lossy(needle));
    }

    // Started again without the flag: the sealed Secrets still read, new ones are plain.
    s.extra_args.clear();
    s.launch();
    assert_eq!(s.ok(&["get", "secret", "db", "-o", "jsonpath={.data.password}"]), b64);
    s.ok(&["create", "secret", "generic", "later", "--from-literal=x=y"]);
    let (ok, status, _) = secrets_encrypt(&s, &["status"]);
    assert!(ok);
    assert!(status.starts_with("Encryption Status: Disabled\n"), "{status}");
    assert!(status.contains(" 1 in plain text\n"), "{status}");
    let (ok, _, err) = secrets_encrypt(&s, &["rotate-keys"]);
    assert!(!ok);
    assert_eq!(err.trim(), "skiff: secrets encryption is disabled: start the server with --secrets-encryption first");
}
