//! Agents joining with a token (TLS bootstrap): a `skiff server --disable-agent` and real
//! `skiff agent`s, each with its own containerd. The join and node-authorization tests put the
//! server and each agent on its own host of a LAN the test creates (`node::Lan`: network
//! namespaces bridged together, nothing leaves them); the others run agents beside the server
//! in its namespace. kubectl 1.32 checks what the cluster shows.
//!
//! The "server never saw the secret" check runs the agent against a stand-in HTTPS server on
//! loopback that terminates TLS itself and records every request it receives, decrypted.
//!
//! Needs root, containerd, runc, the CNI plugins and busybox-static; without them each test
//! prints why and passes without running.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

mod images;
mod node;

use node::{Agent, Box, Host, Lan, agent_command, node_ready, server_token, wait_until};

/// Runs an agent that is expected to stop by itself; (exit code, stderr).
fn agent_exits(b: &Box, host: &Host, dir: &str, name: &str, token: &str) -> (i32, String) {
    let out = agent_command(b, host, dir, name, 20299, Some(token)).output().expect("run skiff agent");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn csrs(b: &Box) -> Vec<serde_json::Value> {
    b.json(&["get", "csr"])["items"].as_array().cloned().unwrap_or_default()
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).expect("file").permissions().mode() & 0o777
}

#[test]
fn secure_token_joins_ready_with_approved_csrs_restarts_without_token_and_owns_its_name() {
    require_node!();
    // Three hosts on a LAN of the test's own: the server, the agent, and a second box that
    // later claims the agent's name.
    let lan = Lan::new("join");
    let b = Box::start_in(lan.host("srv"), &["--disable-agent"]);
    let (w1_host, intruder_host) = (lan.host("w1"), lan.host("w1b"));
    let token = server_token(&b);
    assert!(token.starts_with("K10"), "{token}");

    let started = Instant::now();
    let mut w1 = Agent::start(&b, &w1_host, "w1", "w1", 20251, Some(&token));
    wait_until("w1 to be Ready", Duration::from_secs(60), || node_ready(&b, "w1"), || w1.log());
    eprintln!("join to Ready: {} ms", started.elapsed().as_millis());

    // All three certificates (the node's, the kubelet API's, the service proxy's) went through
    // CertificateSigningRequests, approved and issued.
    let list = csrs(&b);
    let mut seen: Vec<(String, String)> = list
        .iter()
        .map(|c| {
            let approved = c["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter().any(|x| x["type"] == "Approved" && x["status"] == "True" && x["reason"] == "AutoApproved")
            });
            assert!(approved, "approved: {c}");
            assert!(c["status"]["certificate"].as_str().is_some_and(|s| !s.is_empty()), "issued: {c}");
            (c["spec"]["signerName"].as_str().unwrap().to_string(), c["spec"]["username"].as_str().unwrap().to_string())
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("kubernetes.io/kube-apiserver-client".into(), "system:node:w1".into()),
            ("kubernetes.io/kube-apiserver-client-kubelet".into(), "system:bootstrap:skiff-server-token".into()),
            ("kubernetes.io/kubelet-serving".into(), "system:node:w1".into()),
        ]
    );
    let table = b.ok(&["get", "csr"]);
    assert_eq!(table.matches("Approved,Issued").count(), 3, "{table}");

    // The node's credentials: its own key, on this box only.
    let agent_dir = b.data_dir().join("agents").join("w1").join("agent");
    let kubeconfig = agent_dir.join("kubelet.kubeconfig");
    assert_eq!(mode(&kubeconfig), 0o600);
    assert_eq!(mode(&agent_dir.join("serving-kubelet.key")), 0o600);
    let kc: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(&kubeconfig).unwrap()).unwrap();
    let key_b64 = kc["users"][0]["user"]["client-key-data"].as_str().unwrap().to_string();
    let everything = b.ok(&["get", "csr,secrets,configmaps", "-A", "-o", "json"]);
    assert!(!everything.contains(&key_b64), "the private key is nowhere in the API");
    assert!(!everything.contains("PRIVATE KEY"));
    // kubectl with the node's own kubeconfig is the node.
    let whoami = b.ok(&[
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ]);
    assert_eq!(whoami, "system:node:w1");
    // The service proxy is system:kube-proxy, and its rules are on the agent's box.
    let proxy_kubeconfig = agent_dir.join("kubeproxy.kubeconfig");
    assert_eq!(mode(&proxy_kubeconfig), 0o600);
    let whoami = b.ok(&[
        "--kubeconfig",
        proxy_kubeconfig.to_str().unwrap(),
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ]);
    assert_eq!(whoami, "system:kube-proxy");
    wait_until(
        "the kubernetes Service in w1's rules",
        Duration::from_secs(30),
        || {
            let out = std::process::Command::new("nsenter")
                .arg(format!("--net=/var/run/netns/{}", w1_host.netns))
                .args(["nft", "list", "map", "ip", "skiff", "service-ips"])
                .output()
                .expect("nft");
            String::from_utf8_lossy(&out.stdout).contains("10.43.0.1 . tcp . 443")
        },
        || w1.log(),
    );

    // A restart reuses the node credentials: no token, no new requests.
    w1.kill();
    let mut w1 = Agent::start(&b, &w1_host, "w1", "w1", 20251, None);
    wait_until(
        "w1 to start again",
        Duration::from_secs(30),
        || {
            w1.log().contains("using the node credentials of an earlier join")
                && w1.log().contains("kubelet API listening")
        },
        || w1.log(),
    );
    wait_until("w1 to be Ready again", Duration::from_secs(30), || node_ready(&b, "w1"), || w1.log());
    assert_eq!(csrs(&b).len(), 3, "no new certificate requests");

    // Another box claiming the name is refused, and nothing is stored for it.
    let (code, err) = agent_exits(&b, &intruder_host, "intruder", "w1", &token);
    assert_eq!(code, 1, "{err}");
    assert_eq!(
        err.trim_end().lines().last().unwrap_or_default(),
        "skiff: the server refused the request: certificatesigningrequests.certificates.k8s.io is forbidden: node password rejected: the node name \"w1\" belongs to another box; delete the Node to free the name, or join this box with another --node-name"
    );
    assert_eq!(csrs(&b).len(), 3, "the refused request was not stored");

    // A node may not ask for another node's certificate.
    let (csr_pem, _) = skiff::pki::csr::new_request("system:node:w2", &["system:nodes".to_string()], &[]).unwrap();
    use base64::Engine;
    let manifest = serde_json::json!({
        "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": {"name": "steal-w2"},
        "spec": {"request": base64::engine::general_purpose::STANDARD.encode(csr_pem), "signerName": "kubernetes.io/kube-apiserver-client-kubelet", "usages": ["digital signature", "client auth"]},
    });
    let (code, _, err) = b.kubectl_with(
        &[],
        &["--kubeconfig", kubeconfig.to_str().unwrap(), "create", "-f", "-"],
        Some(&manifest.to_string()),
    );
    assert_ne!(code, 0);
    assert_eq!(
        err.trim(),
        "Error from server (Forbidden): error when creating \"STDIN\": certificatesigningrequests.certificates.k8s.io \"steal-w2\" is forbidden: node \"system:node:w1\" may only request certificates for itself, not for \"system:node:w2\""
    );

    // Once an administrator deletes the Node, the name is free for the other box.
    w1.kill();
    b.ok(&["delete", "node", "w1"]);
    wait_until(
        "the node password to go",
        Duration::from_secs(20),
        || !b.ok(&["get", "secrets", "-n", "kube-system", "-o", "name"]).contains("w1.node-password.skiff"),
        || b.log(),
    );
    let w1b = Agent::start(&b, &intruder_host, "intruder", "w1", 20252, Some(&token));
    wait_until("the second box to own w1", Duration::from_secs(60), || node_ready(&b, "w1"), || w1b.log());
}

#[test]
fn bad_tokens_are_refused_and_change_nothing() {
    require_node!();
    let b = Box::start_with("badtok", &["--disable-agent", "--agent-token", "agent-only-secret"]);
    let token = server_token(&b);
    let before = b.ok(&["get", "csr,secrets", "-A", "-o", "name"]);

    let (code, err) = agent_exits(&b, &b.host(), "g1", "g1", "garbage");
    assert_eq!(
        (code, err.trim_end().lines().last().unwrap_or_default()),
        (1, "skiff: the server refused the join token (401 Unauthorized)"),
        "{err}"
    );
    assert!(err.contains("the server's identity was not verified"), "a token without a pin warns: {err}");
    let (code, err) = agent_exits(&b, &b.host(), "g2", "g2", "K10abc::server:x");
    assert_eq!((code, err.trim()), (1, "skiff: invalid token: the CA hash must be 64 hexadecimal characters"));
    let wrong = format!("K10{}::server:{}", "0".repeat(64), token.rsplit(':').next().unwrap());
    let (code, err) = agent_exits(&b, &b.host(), "g3", "g3", &wrong);
    let ca = std::fs::read_to_string(b.data_dir().join("server").join("tls").join("server-ca.crt")).unwrap();
    assert_eq!(
        (code, err.trim()),
        (
            1,
            format!(
                "skiff: failed to validate token: token CA hash does not match the Cluster CA certificate hash: {} != {}",
                "0".repeat(64),
                skiff::pki::ca_hash(&ca)
            )
            .as_str()
        )
    );
    // The agent token authenticates as a bootstrapper and nothing more.
    let ca_file = b.data_dir().join("server").join("tls").join("server-ca.crt");
    let as_agent_token = |args: &[&str]| {
        let server = format!("https://{}:6443", b.node_ip);
        let mut all = vec![
            "--kubeconfig=/dev/null",
            "--server",
            &server,
            "--certificate-authority",
            ca_file.to_str().unwrap(),
            "--token",
            "node:agent-only-secret",
        ];
        all.extend_from_slice(args);
        b.exec(node::KUBECTL, &all)
    };
    let who = as_agent_token(&["auth", "whoami", "-o", "json"]);
    let who: serde_json::Value = serde_json::from_slice(&who.stdout).expect("whoami");
    assert_eq!(who["status"]["userInfo"]["username"], "system:bootstrap:skiff-agent-token");
    assert_eq!(
        who["status"]["userInfo"]["groups"],
        serde_json::json!(["system:bootstrappers", "system:authenticated"])
    );
    let secrets = as_agent_token(&["get", "secrets", "-n", "kube-system"]);
    assert_eq!(
        String::from_utf8_lossy(&secrets.stderr).trim(),
        "Error from server (Forbidden): secrets is forbidden: User \"system:bootstrap:skiff-agent-token\" cannot list resource \"secrets\" in API group \"\" in the namespace \"kube-system\""
    );
    let wrong_agent = as_agent_token(&["--token", "node:agent-only-secreT", "auth", "whoami"]);
    assert!(String::from_utf8_lossy(&wrong_agent.stderr).contains("Unauthorized"));
    assert_eq!(b.ok(&["get", "csr,secrets", "-A", "-o", "name"]), before, "nothing stored");
    // It joins an agent (K10 pin, then `node:<secret>`), as the server token does.
    let agent_token = format!("K10{}::node:agent-only-secret", skiff::pki::ca_hash(&ca));
    let a1 = Agent::start(&b, &b.host(), "a1", "a1", 20263, Some(&agent_token));
    wait_until("a1 to join with the agent token", Duration::from_secs(60), || node_ready(&b, "a1"), || a1.log());

    // A bootstrap token joins within its TTL, is refused after it and cleaned up.
    let kubeconfig = b.kubeconfig();
    let create = b.exec(
        node::skiff_bin().to_str().unwrap(),
        &["token", "create", "--ttl", "8s", "--description", "ttl test", "--kubeconfig", kubeconfig.to_str().unwrap()],
    );
    assert!(create.status.success(), "{}", String::from_utf8_lossy(&create.stderr));
    let short = String::from_utf8_lossy(&create.stdout).trim().to_string();
    assert_eq!(short.split("::").next().unwrap(), format!("K10{}", skiff::pki::ca_hash(&ca)));
    let list =
        b.exec(node::skiff_bin().to_str().unwrap(), &["token", "list", "--kubeconfig", kubeconfig.to_str().unwrap()]);
    let list = String::from_utf8_lossy(&list.stdout).into_owned();
    assert!(
        list.starts_with("TOKEN") && list.contains("ttl test") && list.contains("authentication,signing"),
        "{list}"
    );
    let t1 = Agent::start(&b, &b.host(), "t1", "t1", 20261, Some(&short));
    wait_until(
        "t1 to join",
        Duration::from_secs(30),
        || b.data_dir().join("agents/t1/agent/kubelet.kubeconfig").exists(),
        || t1.log(),
    );
    std::thread::sleep(Duration::from_secs(9));
    let (code, err) = agent_exits(&b, &b.host(), "t2", "t2", &short);
    assert_eq!((code, err.trim()), (1, "skiff: the server refused the join token (401 Unauthorized)"));
    wait_until(
        "the expired token to be cleaned up",
        Duration::from_secs(10),
        || !b.ok(&["get", "secrets", "-n", "kube-system", "-o", "name"]).contains("bootstrap-token-"),
        || b.log(),
    );
    // A deleted token stops new joins.
    let create =
        b.exec(node::skiff_bin().to_str().unwrap(), &["token", "create", "--kubeconfig", kubeconfig.to_str().unwrap()]);
    let long = String::from_utf8_lossy(&create.stdout).trim().to_string();
    let id = long.rsplit("::").next().unwrap().split('.').next().unwrap().to_string();
    let del = b.exec(
        node::skiff_bin().to_str().unwrap(),
        &["token", "delete", &id, "--kubeconfig", kubeconfig.to_str().unwrap()],
    );
    assert_eq!(String::from_utf8_lossy(&del.stdout), format!("bootstrap token \"{id}\" deleted\n"));
    let (code, err) = agent_exits(&b, &b.host(), "t3", "t3", &long);
    assert_eq!((code, err.trim()), (1, "skiff: the server refused the join token (401 Unauthorized)"));
    let del = b.exec(
        node::skiff_bin().to_str().unwrap(),
        &["token", "delete", &id, "--kubeconfig", kubeconfig.to_str().unwrap()],
    );
    assert_eq!(String::from_utf8_lossy(&del.stderr).trim(), format!("skiff: bootstrap token \"{id}\" not found"));
    // The node that joined with the expired token keeps working on its certificate.
    wait_until("t1 to be Ready", Duration::from_secs(60), || node_ready(&b, "t1"), || t1.log());
}

#[test]
fn certificates_are_renewed_before_they_expire() {
    require_node!();
    let b = Box::start_with("renew", &["--disable-agent", "--cluster-signing-duration", "20s"]);
    let token = server_token(&b);
    let r1 = Agent::start(&b, &b.host(), "r1", "r1", 20271, Some(&token));
    wait_until("r1 to be Ready", Duration::from_secs(60), || node_ready(&b, "r1"), || r1.log());
    // Renewed at 80% of 22 s (20 s, backdated by 2 s): a few rounds within 45 s, each through
    // a CSR of the node itself, and the node stays Ready on the new certificates.
    wait_until(
        "two renewals of all three certificates",
        Duration::from_secs(45),
        || {
            r1.log().matches("node client certificate renewed").count() >= 2
                && r1.log().matches("kubelet serving certificate renewed").count() >= 2
                && r1.log().matches("service proxy certificate renewed").count() >= 2
        },
        || r1.log(),
    );
    let renewals = csrs(&b)
        .iter()
        .filter(|c| {
            c["spec"]["username"] == "system:node:r1"
                && c["spec"]["signerName"] == "kubernetes.io/kube-apiserver-client-kubelet"
        })
        .count();
    assert!(renewals >= 2, "{renewals}");
    assert!(node_ready(&b, "r1"));
    // The first certificate has expired by now: only the renewed one works.
    let kubeconfig = b.data_dir().join("agents/r1/agent/kubelet.kubeconfig");
    let whoami = b.ok(&[
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ]);
    assert_eq!(whoami, "system:node:r1");
}

type Recorded = std::sync::Arc<std::sync::Mutex<Vec<u8>>>;

/// A stand-in API server on loopback: TLS with a certificate of its own CA, `/cacerts`
/// answered with that CA, every other request 401; records each request, decrypted.
/// Returns the port, the CA and the recording.
fn fake_server() -> (u16, String, Recorded, tokio::runtime::Runtime) {
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let ca_pem = ca_cert.pem();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap().signed_by(&key, &issuer).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    let record = seen.clone();
    let served = ca_pem.clone();
    rt.spawn(async move {
        let ca_pem = served;
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (acceptor, record, ca_pem) = (acceptor.clone(), record.clone(), ca_pem.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let mut buf = vec![0u8; 65536];
                let mut got = Vec::new();
                let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tokio::time::timeout_at(deadline, tls.read(&mut buf)).await {
                        Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
                        _ => break,
                    }
                }
                // Whatever body follows comes in within the deadline too.
                if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(200), tls.read(&mut buf)).await {
                    got.extend_from_slice(&buf[..n]);
                }
                record.lock().unwrap().extend_from_slice(&got);
                let resp = if got.starts_with(b"GET /cacerts ") {
                    format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{ca_pem}", ca_pem.len())
                } else {
                    "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}".into()
                };
                let _ = tls.write_all(resp.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (port, ca_pem, seen, rt)
}

#[test]
fn a_wrong_ca_hash_stops_the_agent_before_it_sends_the_secret() {
    require_node!();
    let (port, ca_pem, seen, _rt) = fake_server();
    let dir = tempfile::Builder::new().prefix("skj").tempdir_in("/tmp").unwrap();
    let secret = "s3cret-that-must-not-leave";
    let run = |hash: &str| {
        Command::new(node::skiff_bin())
            .args(["agent", "--server", &format!("https://127.0.0.1:{port}"), "--node-name", "pin"])
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--token", &format!("K10{hash}::server:{secret}")])
            .env_remove("SKIFF_TOKEN")
            .output()
            .unwrap()
    };
    let out = run(&"f".repeat(64));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!(
            "skiff: failed to validate token: token CA hash does not match the Cluster CA certificate hash: {} != {}",
            "f".repeat(64),
            skiff::pki::ca_hash(&ca_pem)
        )
    );
    let heard = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
    assert!(heard.starts_with("GET /cacerts HTTP/1.1\r\n"), "{heard}");
    assert_eq!(heard.matches("HTTP/1.1\r\n").count(), 1, "one request only: {heard}");
    assert!(!heard.contains(secret) && !heard.to_ascii_lowercase().contains("authorization"), "{heard}");
    assert!(!dir.path().join("agent").join("kubelet.kubeconfig").exists());

    // The same recording sees the secret once the pin matches, so the check above can fail.
    seen.lock().unwrap().clear();
    let out = run(&skiff::pki::ca_hash(&ca_pem));
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let heard = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
    assert!(heard.contains(secret), "the token goes out after the pin matched: {heard}");
}

/// kubectl as the node whose `kubelet.kubeconfig` is `kubeconfig`; (exit code, stdout, stderr).
fn as_node(b: &Box, kubeconfig: &Path, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["--kubeconfig", kubeconfig.to_str().expect("utf8")];
    all.extend_from_slice(args);
    b.kubectl_with(&[], &all, None)
}

#[test]
fn a_node_reaches_only_what_its_own_pods_use() {
    require_node!();
    // Three hosts: the server and two agents, each in its own network namespace on a LAN of
    // the test's own.
    let lan = Lan::new("nodeauth");
    let b = Box::start_in(lan.host("srv"), &["--disable-agent"]);
    let (a1_host, a2_host) = (lan.host("a1"), lan.host("a2"));
    let token = server_token(&b);
    for dir in ["a1", "a2"] {
        Agent::give_images(&b, dir);
    }
    let a1 = Agent::start(&b, &a1_host, "a1", "a1", 20261, Some(&token));
    let a2 = Agent::start(&b, &a2_host, "a2", "a2", 20262, Some(&token));
    wait_until("a1 to be Ready", Duration::from_secs(60), || node_ready(&b, "a1"), || a1.log());
    wait_until("a2 to be Ready", Duration::from_secs(60), || node_ready(&b, "a2"), || a2.log());
    wait_until(
        "a1's Lease",
        Duration::from_secs(20),
        || b.kubectl(&["get", "lease", "-n", "kube-node-lease", "a1"]).status.success(),
        || a1.log(),
    );

    // Four replicas spread over both agents; each reads a Secret (env) and a ConfigMap
    // (volume) through its node's credentials, which is all those credentials can read.
    b.ok(&["create", "secret", "generic", "app-secret", "--from-literal=password=s3cret"]);
    b.ok(&["create", "secret", "generic", "unrelated", "--from-literal=x=y"]);
    b.ok(&["create", "configmap", "app-config", "--from-literal=mode=edge"]);
    b.apply(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: app}
spec:
  replicas: 4
  selector: {matchLabels: {app: app}}
  template:
    metadata: {labels: {app: app}}
    spec:
      hostNetwork: true
      terminationGracePeriodSeconds: 1
      topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: app}}}
      containers:
      - name: app
        image: busybox
        imagePullPolicy: Never
        command: [sh, -c, 'test "$PASSWORD" = s3cret && test "$(cat /config/mode)" = edge && sleep 3600']
        env:
        - name: PASSWORD
          valueFrom: {secretKeyRef: {name: app-secret, key: password}}
        volumeMounts: [{name: config, mountPath: /config}]
      volumes:
      - {name: config, configMap: {name: app-config}}
"#,
    );
    let running_on = |b: &Box| -> Vec<(String, String)> {
        let pods = b.json(&["get", "pods", "-l", "app=app"]);
        let mut out: Vec<(String, String)> = pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| {
                p["status"]["containerStatuses"][0]["ready"] == true && p["metadata"]["deletionTimestamp"].is_null()
            })
            .map(|p| {
                (
                    p["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
                    p["metadata"]["name"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        out.sort();
        out
    };
    wait_until(
        "four app pods ready on both agents",
        Duration::from_secs(90),
        || running_on(&b).len() == 4,
        || {
            format!(
                "{}\n{}\n{}\n{}",
                b.ok(&["get", "pods", "-o", "wide"]),
                b.ok(&["get", "events"]),
                a1.log(),
                a2.log()
            )
        },
    );
    let pods = running_on(&b);
    let on = |node: &str| pods.iter().filter(|(n, _)| n == node).map(|(_, p)| p.clone()).collect::<Vec<_>>();
    let (mine, theirs) = (on("a1"), on("a2"));
    assert_eq!((mine.len(), theirs.len()), (2, 2), "{pods:?}");

    let kc = b.data_dir().join("agents").join("a1").join("agent").join("kubelet.kubeconfig");
    let forbidden = |args: &[&str], message: &str| {
        let (code, out, err) = as_node(&b, &kc, args);
        assert_eq!((code, err.trim()), (1, message), "kubectl {args:?}: {out}");
    };
    // What its pods use it reads; nothing else of that kind.
    let (code, out, err) = as_node(&b, &kc, &["get", "secret", "app-secret", "-o", "jsonpath={.data.password}"]);
    assert_eq!((code, out.as_str()), (0, "czNjcmV0"), "{err}");
    forbidden(
        &["get", "secret", "unrelated"],
        "Error from server (Forbidden): secrets \"unrelated\" is forbidden: User \"system:node:a1\" cannot get resource \"secrets\" in API group \"\" in the namespace \"default\": no relationship found between node 'a1' and this object",
    );
    forbidden(
        &["get", "secrets"],
        "Error from server (Forbidden): secrets is forbidden: User \"system:node:a1\" cannot list resource \"secrets\" in API group \"\" in the namespace \"default\": No Object name found",
    );
    // Its own pods, listed by node; not everyone's.
    let (code, out, err) = as_node(&b, &kc, &["get", "pods", "--field-selector", "spec.nodeName=a1", "-o", "name"]);
    assert_eq!((code, out.lines().count()), (0, 2), "{err}");
    forbidden(
        &["get", "pods"],
        "Error from server (Forbidden): pods is forbidden: User \"system:node:a1\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\": can only list/watch pods with spec.nodeName field selector",
    );
    // Another node: neither readable nor writable; nor may it delete that node's pods.
    forbidden(
        &["get", "node", "a2"],
        "Error from server (Forbidden): nodes \"a2\" is forbidden: User \"system:node:a1\" cannot get resource \"nodes\" in API group \"\" at the cluster scope: node 'a1' cannot read 'a2', only its own Node object",
    );
    let mut other = b.json(&["get", "node", "a2"]);
    other["metadata"]["labels"]["stolen"] = serde_json::json!("yes");
    let all = ["--kubeconfig", kc.to_str().unwrap(), "replace", "-f", "-"];
    let (code, _, err) = b.kubectl_with(&[], &all, Some(&other.to_string()));
    assert_eq!(
        (code, err.trim()),
        (
            1,
            "Error from server (Forbidden): error when replacing \"STDIN\": nodes \"a2\" is forbidden: node \"a1\" is not allowed to modify node \"a2\""
        )
    );
    forbidden(
        &["delete", "pod", &theirs[0], "--wait=false"],
        &format!(
            "Error from server (Forbidden): pods \"{}\" is forbidden: node \"a1\" can only delete pods with spec.nodeName set to itself",
            theirs[0]
        ),
    );
    // Status writes go straight to `pods/<name>/status` (kubectl patch would read it first,
    // which a node may not, exactly as upstream's kubelet credentials).
    let with_condition = |pod: &str| {
        let mut p = b.json(&["get", "pod", pod]);
        p["metadata"].as_object_mut().unwrap().remove("resourceVersion");
        p["status"]["conditions"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"type": "example.com/Checked", "status": "True"}));
        p.to_string()
    };
    let replace_status = ["--kubeconfig", kc.to_str().unwrap(), "replace", "--subresource=status", "-f", "-"];
    let (code, _, err) = b.kubectl_with(&[], &replace_status, Some(&with_condition(&theirs[0])));
    assert_eq!(
        (code, err.trim()),
        (1, format!("Error from server (Forbidden): error when replacing \"STDIN\": pods \"{}\" is forbidden: node \"a1\" can only update pod status for pods with spec.nodeName set to itself", theirs[0]).as_str())
    );
    // Its own node: labels of its own yes, roles no.
    forbidden(
        &["label", "node", "a1", "node-role.kubernetes.io/worker="],
        "Error from server (Forbidden): nodes \"a1\" is forbidden: is not allowed to modify labels: node-role.kubernetes.io/worker",
    );
    let (code, _, err) = as_node(&b, &kc, &["label", "node", "a1", "example.com/rack=3"]);
    assert_eq!(code, 0, "{err}");
    // Its own pod's status it writes.
    let (code, out, err) = b.kubectl_with(&[], &replace_status, Some(&with_condition(&mine[0])));
    assert_eq!((code, out.trim()), (0, format!("pod/{} replaced", mine[0]).as_str()), "{err}");
    // Nothing it was refused happened.
    assert!(b.ok(&["get", "pods", "-l", "app=app", "-o", "name"]).contains(&theirs[0]));
    assert!(!b.ok(&["get", "node", "a2", "--show-labels"]).contains("stolen"));
    assert!(!b.ok(&["get", "node", "a1", "--show-labels"]).contains("node-role.kubernetes.io/worker"));
    assert_eq!(running_on(&b).len(), 4, "the agents still run their pods");
    // Running them, the agents were refused nothing.
    for log in [a1.log(), a2.log()] {
        let refused: Vec<&str> = log.lines().filter(|l| l.contains(" is forbidden")).collect();
        assert!(refused.is_empty(), "{refused:#?}");
    }
}

/// An agent started while its server is down retries with backoff, says so once (not once per
/// attempt), and joins as soon as the server answers.
#[test]
fn an_agent_waits_for_an_unreachable_server_and_joins_when_it_answers() {
    require_node!();
    let lan = Lan::new("wait");
    let mut b = Box::start_in(lan.host("srv"), &["--disable-agent"]);
    let w = lan.host("w");
    let token = server_token(&b);
    b.kill9();
    let agent = Agent::start(&b, &w, "w", "w", 20261, Some(&token));
    wait_until(
        "the agent to find the server down",
        Duration::from_secs(30),
        || agent.log().contains("cannot reach the server; retrying with backoff"),
        || agent.log(),
    );
    // Several attempts at growing intervals (0.5 s, 1 s, 2 s, ...).
    std::thread::sleep(Duration::from_secs(4));
    b.launch();
    wait_until("the agent to be Ready", Duration::from_secs(60), || node_ready(&b, "w"), || agent.log());
    let log = agent.log();
    assert_eq!(log.matches("cannot reach the server").count(), 1, "{log}");
    assert_eq!(log.matches("the server answers again").count(), 1, "{log}");
}
