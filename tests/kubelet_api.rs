//! The kubelet API and the API server's proxying to it, end to end with real parts: a
//! supervised containerd running busybox containers in a host-network sandbox, the kubelet
//! API in this process serving them through a fixed `PodSource`, a real `skiff server`, and
//! the real kubectl 1.32 for logs, exec, attach, port-forward and node proxying.
//!
//! Needs root, `containerd` and busybox-static (CI has them); without them the test prints
//! why and returns. Services in the sandbox bind 127.0.0.1 only.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{KUBECTL, Server};
use k8s_openapi::api::core::v1::Pod;
use skiff::agent::kubelet_api::{self, ContainerRef, PodSource};
use skiff::cri::config::Settings;
use skiff::cri::containerd::Options;
use skiff::cri::images::import_archive;
use skiff::cri::proto::*;
use skiff::cri::{Containerd, CriClient};
use tokio_util::sync::CancellationToken;

const NS: &str = "kapi";
const POD: &str = "web";
const NODE: &str = "kapi-node";
const IMAGE: &str = "docker.io/skiff-test/kapi:1";

fn skip_reason() -> Option<&'static str> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root");
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("containerd").is_file()))
        .unwrap_or(false);
    if !on_path {
        return Some("containerd is not installed (apt-get install containerd runc containernetworking-plugins)");
    }
    if !Path::new("/bin/busybox").is_file() {
        return Some("busybox-static is not installed");
    }
    None
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn goarch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn append_file(tar: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, bytes: &[u8]) {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(mode);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, path, bytes).expect("tar file");
}

/// A `docker save` archive of busybox with its shell and the tools the test uses.
fn busybox_archive(tag: &str) -> Vec<u8> {
    let mut layer = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_gnu();
    dir.set_size(0);
    dir.set_mode(0o755);
    dir.set_entry_type(tar::EntryType::Directory);
    layer.append_data(&mut dir, "bin/", std::io::empty()).expect("tar dir");
    append_file(&mut layer, "bin/busybox", 0o755, &std::fs::read("/bin/busybox").expect("busybox"));
    for tool in ["sh", "sleep", "echo", "cat", "mkdir", "httpd", "test", "touch"] {
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o777);
        h.set_entry_type(tar::EntryType::Symlink);
        layer.append_link(&mut h, format!("bin/{tool}"), "busybox").expect("tar link");
    }
    let layer = layer.into_inner().expect("tar");
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": goarch(), "os": "linux",
        "config": {"Cmd": ["sleep", "3600"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", sha256_hex(&layer))]},
    }))
    .expect("json");
    let config_name = format!("{}.json", sha256_hex(&config));
    let mut tar = tar::Builder::new(Vec::new());
    append_file(&mut tar, &config_name, 0o644, &config);
    append_file(&mut tar, "layer/layer.tar", 0o644, &layer);
    let manifest = serde_json::json!([{"Config": config_name, "RepoTags": [tag], "Layers": ["layer/layer.tar"]}]);
    append_file(&mut tar, "manifest.json", 0o644, &serde_json::to_vec(&manifest).expect("json"));
    tar.into_inner().expect("tar")
}

/// Stops and removes the sandbox (and so its containers) when dropped, also on a failed
/// assertion, so that no shim outlives the test.
struct SandboxGuard {
    socket: PathBuf,
    id: String,
}

impl Drop for SandboxGuard {
    fn drop(&mut self) {
        let (socket, id) = (self.socket.clone(), self.id.clone());
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async {
                if let Ok(c) = CriClient::connect(&socket, Duration::from_secs(5)).await {
                    let mut r = c.runtime();
                    let _ = r.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id.clone() }).await;
                    let _ = r.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id }).await;
                }
            });
        })
        .join();
    }
}

/// A process started by the test, killed and reaped on drop.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The agent's view, fixed: one pod with the containers the test started.
struct FixedPods {
    pods: Vec<Pod>,
    containers: HashMap<String, ContainerRef>,
    sandbox: String,
}

impl PodSource for FixedPods {
    fn pods(&self) -> Vec<Pod> {
        self.pods.clone()
    }
    fn container(&self, namespace: &str, pod: &str, container: &str) -> Option<ContainerRef> {
        (namespace == NS && pod == POD).then(|| self.containers.get(container).cloned()).flatten()
    }
    fn sandbox(&self, namespace: &str, pod: &str) -> Option<String> {
        (namespace == NS && pod == POD).then(|| self.sandbox.clone())
    }
}

fn sandbox_config(dir: &Path) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: POD.to_string(),
            uid: uuid::Uuid::new_v4().to_string(),
            namespace: NS.to_string(),
            attempt: 0,
        }),
        log_directory: dir.join("logs").to_string_lossy().into_owned(),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption { network: NamespaceMode::Node as i32, ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The containers of the pod: name, command, stdin.
fn containers(http_port: u16) -> Vec<(&'static str, Vec<String>, bool)> {
    let sh = |s: String| vec!["sh".to_string(), "-c".to_string(), s];
    vec![
        ("main", sh("echo first; echo second; echo third; exec sleep 3600".into()), false),
        ("exiter", sh("echo start; while ! test -e /stop; do sleep 0.1; done; echo done".into()), false),
        ("reader", sh("read line; echo \"got $line\"".into()), true),
        (
            "web",
            sh(format!(
                "mkdir -p /www && echo hello-from-pod > /www/index.html && exec httpd -f -p 127.0.0.1:{http_port} -h /www"
            )),
            false,
        ),
    ]
}

fn pod_manifest(node: &str) -> String {
    let c: Vec<serde_json::Value> = containers(0)
        .iter()
        .map(|(n, _, stdin)| serde_json::json!({"name": n, "image": IMAGE, "stdin": stdin, "stdinOnce": stdin}))
        .collect();
    serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": POD, "namespace": NS},
                       "spec": {"nodeName": node, "containers": c}})
    .to_string()
}

/// Runs kubectl with extra environment; returns (exit code, stdout, stderr).
fn kubectl_env(server: &Server, env: &[(&str, &str)], args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut cmd = Command::new(KUBECTL);
    cmd.args(args)
        .env("KUBECONFIG", &server.kubeconfig)
        .env("HOME", server.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("run kubectl");
    if let Some(input) = stdin {
        let mut s = child.stdin.take().expect("stdin");
        s.write_all(input.as_bytes()).expect("write stdin");
    }
    let out = child.wait_with_output().expect("kubectl output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Environments of kubectl 1.32: its default (WebSocket, which the API server translates into
/// SPDY towards the kubelet) and SPDY only.
const TRANSPORTS: &[(&str, &[(&str, &str)])] = &[
    ("default", &[]),
    ("spdy", &[("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false"), ("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false")]),
];

fn tls_client(cert: Option<(&str, &str)>, kubelet_ca: &str) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(kubelet_ca.as_bytes()) {
        roots.add(c.expect("ca")).expect("root");
    }
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    Arc::new(match cert {
        Some((c, k)) => b
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(c.as_bytes()).map(|c| c.expect("cert")).collect(),
                PrivateKeyDer::from_pem_slice(k.as_bytes()).expect("key"),
            )
            .expect("client auth"),
        None => b.with_no_client_auth(),
    })
}

/// One GET on the kubelet API; Err for a failed handshake.
async fn kubelet_get(port: u16, tls: Arc<rustls::ClientConfig>, path: &str) -> Result<(u16, String), String> {
    kubelet_get_with(port, tls, path, None).await
}

/// A token of the service account `name` in the test namespace.
fn kubectl_token(server: &Server, name: &str) -> String {
    server.ok(&["create", "token", "-n", NS, name]).trim().to_string()
}

/// A GET on the kubelet API with `Authorization: Bearer <token>`.
async fn kubelet_get_with(
    port: u16,
    tls: Arc<rustls::ClientConfig>,
    path: &str,
    token: Option<&str>,
) -> Result<(u16, String), String> {
    use http_body_util::BodyExt;
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| e.to_string())?;
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let tls = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await.map_err(|e| e.to_string())?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = http::Request::get(path).header("host", "127.0.0.1");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = req.body(http_body_util::Empty::<bytes::Bytes>::new()).map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// A certificate signed by `issuer` for `cn`/`orgs` (client) or 127.0.0.1 (server).
fn issue(issuer: &rcgen::Issuer<'_, rcgen::KeyPair>, cn: &str, orgs: &[&str], server: bool) -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut p =
        rcgen::CertificateParams::new(if server { vec!["127.0.0.1".to_string()] } else { vec![] }).expect("params");
    for o in orgs {
        p.distinguished_name.push(rcgen::DnType::OrganizationName, *o);
    }
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    let cert = p.signed_by(&key, issuer).expect("sign");
    (cert.pem(), key.serialize_pem())
}

fn new_ca() -> (String, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.distinguished_name.push(rcgen::DnType::CommonName, "kapi-test-ca");
    let cert = p.self_signed(&key).expect("ca");
    let pem = cert.pem();
    (pem.clone(), rcgen::Issuer::from_ca_cert_pem(&pem, key).expect("issuer"))
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_reaches_containers_through_the_kubelet_api() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED: this test runs containers in a real containerd and {why}");
        return;
    }
    let dir = tempfile::Builder::new().prefix("skkapi").tempdir_in("/tmp").expect("tempdir");
    let mut options = Options::new(
        dir.path().join("containerd"),
        Settings { sandbox_image: IMAGE.to_string(), cni_conf_dir: dir.path().join("cni") },
    );
    options.stop_grace = Duration::from_secs(5);
    let containerd = Containerd::start(options, &CancellationToken::new()).await.expect("start containerd");
    let cri = containerd.client();
    let archive = dir.path().join("busybox.tar");
    std::fs::write(&archive, busybox_archive("skiff-test/kapi:1")).expect("write archive");
    import_archive(&cri, &archive).await.expect("import");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listed = cri.images().list_images(ListImagesRequest { filter: None }).await.expect("ListImages");
        if listed.into_inner().images.iter().any(|i| i.repo_tags.iter().any(|t| t == IMAGE)) {
            break;
        }
        assert!(Instant::now() < deadline, "image not listed by CRI");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The sandbox and its containers, straight through CRI.
    let config = sandbox_config(dir.path());
    let mut runtime = cri.runtime();
    let sandbox = runtime
        .run_pod_sandbox(RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() })
        .await
        .unwrap_or_else(|s| {
            panic!(
                "RunPodSandbox: {}; containerd log:\n{}",
                s.message(),
                std::fs::read_to_string(containerd.log_path()).unwrap_or_default()
            )
        })
        .into_inner()
        .pod_sandbox_id;
    let _sandbox_guard = SandboxGuard { socket: containerd.socket().to_path_buf(), id: sandbox.clone() };
    let http_port = free_port();
    let mut refs = HashMap::new();
    for (name, command, stdin) in containers(http_port) {
        let id = runtime
            .create_container(CreateContainerRequest {
                pod_sandbox_id: sandbox.clone(),
                config: Some(ContainerConfig {
                    metadata: Some(ContainerMetadata { name: name.to_string(), attempt: 0 }),
                    image: Some(ImageSpec { image: IMAGE.to_string(), ..Default::default() }),
                    command,
                    log_path: format!("{name}.log"),
                    stdin,
                    stdin_once: stdin,
                    ..Default::default()
                }),
                sandbox_config: Some(config.clone()),
            })
            .await
            .unwrap_or_else(|s| panic!("CreateContainer {name}: {}", s.message()))
            .into_inner()
            .container_id;
        runtime
            .start_container(StartContainerRequest { container_id: id.clone() })
            .await
            .unwrap_or_else(|s| panic!("StartContainer {name}: {}", s.message()));
        let log_path = dir.path().join("logs").join(format!("{name}.log"));
        refs.insert(name.to_string(), ContainerRef { id, log_path, previous_log_path: None, running: true });
    }

    // The control plane, and a Node whose kubelet is the API served below.
    let server = Server::start();
    let kubelet_port = free_port();
    let tls_dir = server.data_dir().join("server/tls");
    let cluster_ca = std::fs::read_to_string(tls_dir.join("server-ca.crt")).expect("cluster CA");
    let (kubelet_ca, kubelet_issuer) = new_ca();
    let (serving_cert, serving_key) = issue(&kubelet_issuer, "kapi-node", &[], true);
    server.ok(&["create", "namespace", NS]);
    server.apply(&format!(r#"{{"apiVersion": "v1", "kind": "Node", "metadata": {{"name": "{NODE}"}}}}"#));
    let status = format!(
        r#"{{"status": {{"addresses": [{{"type": "InternalIP", "address": "127.0.0.1"}}, {{"type": "Hostname", "address": "{NODE}"}}], "daemonEndpoints": {{"kubeletEndpoint": {{"Port": {kubelet_port}}}}}}}}}"#
    );
    server.ok(&["patch", "node", NODE, "--subresource=status", "--type=merge", "-p", &status]);
    server.apply(&pod_manifest(NODE));
    // kubectl port-forward wants a running pod; no agent reports this one's status.
    server.ok(&[
        "patch",
        "pod",
        "-n",
        NS,
        POD,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status": {"phase": "Running"}}"#,
    ]);
    let pod: Pod = serde_json::from_value(server.get_json(&["pod", "-n", NS, POD])).expect("pod");
    let pods = Arc::new(FixedPods { pods: vec![pod], containers: refs.clone(), sandbox: sandbox.clone() });
    // Reviews go to the server as the agent's would (with the admin's credentials here).
    let kc = kube::config::Kubeconfig::read_from(&server.kubeconfig).expect("kubeconfig");
    let client_cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.expect("config");
    let reviews = Arc::new(skiff::agent::reviews::ApiReviews(kube::Client::try_from(client_cfg).expect("client")));
    let cancel = CancellationToken::new();
    let _stop_kubelet = cancel.clone().drop_guard();
    let kubelet = tokio::spawn(kubelet_api::serve(
        kubelet_api::Config {
            listen: format!("127.0.0.1:{kubelet_port}").parse().expect("addr"),
            serving: skiff::pki::ServingCert::new(&serving_cert, &serving_key).expect("serving certificate"),
            client_ca_pem: cluster_ca.clone(),
            node_name: NODE.to_string(),
            nodefs: dir.path().to_path_buf(),
            reviews,
        },
        cri.clone(),
        pods,
        cancel.clone(),
    ));
    let apiserver_cert = std::fs::read_to_string(tls_dir.join("client-kube-apiserver-kubelet.crt")).expect("cert");
    let apiserver_key = std::fs::read_to_string(tls_dir.join("client-kube-apiserver-kubelet.key")).expect("key");
    let as_apiserver = tls_client(Some((&apiserver_cert, &apiserver_key)), &kubelet_ca);
    let deadline = Instant::now() + Duration::from_secs(10);
    while kubelet_get(kubelet_port, as_apiserver.clone(), "/healthz").await.is_err() {
        assert!(!kubelet.is_finished(), "kubelet API ended: {:?}", kubelet.await);
        assert!(Instant::now() < deadline, "kubelet API not answering");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Who may use the kubelet API.
    assert_eq!(kubelet_get(kubelet_port, as_apiserver.clone(), "/healthz").await, Ok((200, "ok".into())));
    let (code, body) = kubelet_get(kubelet_port, as_apiserver.clone(), "/pods").await.expect("pods");
    let list: serde_json::Value = serde_json::from_str(&body).expect("PodList");
    assert_eq!(
        (code, list["kind"].as_str(), list["items"][0]["metadata"]["name"].as_str()),
        (200, Some("PodList"), Some(POD))
    );
    assert_eq!(
        kubelet_get(kubelet_port, tls_client(None, &kubelet_ca), "/pods").await,
        Ok((401, "Unauthorized".into()))
    );
    let ca_key = std::fs::read_to_string(tls_dir.join("server-ca.key")).expect("CA key");
    let cluster_issuer =
        rcgen::Issuer::from_ca_cert_pem(&cluster_ca, rcgen::KeyPair::from_pem(&ca_key).expect("key")).expect("issuer");
    let (node_cert, node_key) = issue(&cluster_issuer, "system:node:kapi-node", &["system:nodes"], false);
    assert_eq!(
        kubelet_get(kubelet_port, tls_client(Some((&node_cert, &node_key)), &kubelet_ca), "/pods").await,
        Ok((403, "Forbidden (user=system:node:kapi-node, verb=get, resource=nodes, subresource(s)=[proxy])".into()))
    );
    // Any other user: what RBAC allows on this Node's subresources (SubjectAccessReview), with
    // a bearer token reviewed by the API server (TokenReview).
    server.apply(&format!(
        r#"apiVersion: v1
kind: ServiceAccount
metadata: {{name: reader, namespace: {NS}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: nobody, namespace: {NS}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: kubelet-proxy-reader}}
rules: [{{apiGroups: [""], resources: [nodes/proxy], verbs: [get]}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: kubelet-proxy-reader}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: kubelet-proxy-reader}}
subjects: [{{kind: ServiceAccount, name: reader, namespace: {NS}}}]
"#
    ));
    let reader = kubectl_token(&server, "reader");
    let nobody = kubectl_token(&server, "nobody");
    let no_cert = tls_client(None, &kubelet_ca);
    let (code, body) = kubelet_get_with(kubelet_port, no_cert.clone(), "/pods", Some(&reader)).await.expect("pods");
    assert_eq!((code, body.contains(POD)), (200, true), "{body}");
    assert_eq!(
        kubelet_get_with(kubelet_port, no_cert.clone(), "/stats/summary", Some(&reader)).await,
        Ok((
            403,
            format!(
                "Forbidden (user=system:serviceaccount:{NS}:reader, verb=get, resource=nodes, subresource(s)=[stats])"
            )
        ))
    );
    assert_eq!(
        kubelet_get_with(kubelet_port, no_cert.clone(), "/healthz", Some(&nobody)).await,
        Ok((
            403,
            format!(
                "Forbidden (user=system:serviceaccount:{NS}:nobody, verb=get, resource=nodes, subresource(s)=[proxy])"
            )
        ))
    );
    assert_eq!(
        kubelet_get_with(kubelet_port, no_cert.clone(), "/pods", Some("not-a-token")).await,
        Ok((401, "Unauthorized".into()))
    );

    let (_, foreign_issuer) = new_ca();
    let (foreign_cert, foreign_key) =
        issue(&foreign_issuer, "kube-apiserver-kubelet-client", &["system:masters"], false);
    let refused =
        kubelet_get(kubelet_port, tls_client(Some((&foreign_cert, &foreign_key)), &kubelet_ca), "/healthz").await;
    assert!(refused.is_err(), "a certificate from another CA was accepted: {refused:?}");

    let kubectl_ok = |args: &[&str]| server.ok(args);
    let kubectl_err = |args: &[&str]| server.fails(args);
    let logs = |args: &[&str]| {
        let mut full = vec!["logs", "-n", NS, POD];
        full.extend_from_slice(args);
        kubectl_ok(&full)
    };

    // Logs: plain, tail, timestamps, previous, errors.
    wait_until("main's output in its log", Duration::from_secs(10), || {
        logs(&["-c", "main"]) == "first\nsecond\nthird\n"
    });
    assert_eq!(logs(&["-c", "main", "--tail=1"]), "third\n");
    assert_eq!(logs(&["-c", "main", "--limit-bytes=8"]), "first\nse");
    let stamped = logs(&["-c", "main", "--timestamps"]);
    let lines: Vec<&str> = stamped.lines().collect();
    assert_eq!(lines.len(), 3, "{stamped}");
    for (line, text) in lines.iter().zip(["first", "second", "third"]) {
        let (ts, rest) = line.split_once(' ').expect("timestamp and text");
        assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "not a timestamp: {ts}");
        assert_eq!(rest, text);
    }
    assert_eq!(
        kubectl_err(&["logs", "-n", NS, POD, "-c", "main", "--previous"]).trim(),
        format!("Error from server (BadRequest): previous terminated container \"main\" in pod \"{POD}\" not found")
    );
    assert_eq!(
        kubectl_err(&["get", "--raw", &format!("/api/v1/namespaces/{NS}/pods/{POD}/log?container=nope")]).trim(),
        format!("Error from server (BadRequest): container nope is not valid for pod {POD}")
    );
    assert_eq!(
        kubectl_err(&["get", "--raw", &format!("/api/v1/namespaces/{NS}/pods/{POD}/log")]).trim(),
        format!(
            "Error from server (BadRequest): a container name must be specified for pod {POD}, choose one of: [main exiter reader web]"
        )
    );
    assert_eq!(
        kubectl_err(&["get", "--raw", &format!("/api/v1/namespaces/{NS}/pods/ghost/log")]).trim(),
        "Error from server (NotFound): pods \"ghost\" not found"
    );

    // Through nodes/proxy, the kubelet API itself.
    assert_eq!(kubectl_ok(&["get", "--raw", &format!("/api/v1/nodes/{NODE}/proxy/healthz")]), "ok");
    let listed: serde_json::Value =
        serde_json::from_str(&kubectl_ok(&["get", "--raw", &format!("/api/v1/nodes/{NODE}/proxy/pods")]))
            .expect("json");
    assert_eq!(listed["items"][0]["metadata"]["name"], POD);

    // Exec, attach and port-forward, with kubectl's default transport and with SPDY only.
    for (transport, env) in TRANSPORTS {
        let (code, out, err) = kubectl_env(
            &server,
            env,
            &["exec", "-n", NS, POD, "-c", "main", "--", "sh", "-c", "echo hi; exit 3"],
            None,
        );
        assert_eq!((code, out.as_str()), (3, "hi\n"), "{transport}: {err}");
        assert_eq!(err.trim(), "command terminated with exit code 3", "{transport}");
        let (code, out, err) = kubectl_env(
            &server,
            env,
            &["exec", "-i", "-n", NS, POD, "-c", "main", "--", "sh", "-c", "cat; echo >&2 to-stderr"],
            Some("line one\nline two\n"),
        );
        assert_eq!((code, out.as_str(), err.as_str()), (0, "line one\nline two\n", "to-stderr\n"), "{transport}");

        let local = free_port();
        let mut pf = KillOnDrop(
            Command::new(KUBECTL)
                .args(["port-forward", "-n", NS, &format!("pod/{POD}"), &format!("{local}:{http_port}")])
                .args(["--address", "127.0.0.1"])
                .env("KUBECONFIG", &server.kubeconfig)
                .env("HOME", server.path())
                .envs(env.iter().copied())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("kubectl port-forward"),
        );
        let mut first = [0u8; 9];
        if pf.0.stdout.as_mut().expect("stdout").read_exact(&mut first).is_err() {
            let mut err = String::new();
            let _ = pf.0.stderr.as_mut().expect("stderr").read_to_string(&mut err);
            panic!("{transport}: kubectl port-forward ended: {err}");
        }
        assert_eq!(&first, b"Forwardin", "{transport}");
        for round in 0..2 {
            let mut conn = std::net::TcpStream::connect(("127.0.0.1", local)).expect("connect to the forwarded port");
            conn.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
            conn.write_all(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n").expect("request");
            let mut answer = String::new();
            conn.read_to_string(&mut answer).expect("answer");
            assert!(answer.starts_with("HTTP/1.1 200 OK"), "{transport} round {round}: {answer}");
            assert!(answer.ends_with("hello-from-pod\n"), "{transport} round {round}: {answer}");
        }
        drop(pf);
    }

    // Attach: stdin reaches the container's process, its output comes back, and attach ends
    // when the container exits.
    let (code, out, err) = kubectl_env(&server, &[], &["attach", "-i", "-n", NS, POD, "-c", "reader"], Some("hello\n"));
    assert_eq!((code, out.as_str()), (0, "got hello\n"), "{err}");

    // Following a log ends when the container exits.
    let mut follow = KillOnDrop(
        Command::new(KUBECTL)
            .args(["logs", "-f", "-n", NS, POD, "-c", "exiter"])
            .env("KUBECONFIG", &server.kubeconfig)
            .env("HOME", server.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl logs -f"),
    );
    let mut start = [0u8; 6];
    follow.0.stdout.as_mut().expect("stdout").read_exact(&mut start).expect("followed output");
    assert_eq!(&start, b"start\n");
    std::thread::sleep(Duration::from_millis(500));
    assert!(follow.0.try_wait().expect("wait").is_none(), "logs -f ended while the container runs");
    kubectl_ok(&["exec", "-n", NS, POD, "-c", "exiter", "--", "touch", "/stop"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = follow.0.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "logs -f did not end after the container exited");
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut rest = String::new();
    follow.0.stdout.as_mut().expect("stdout").read_to_string(&mut rest).expect("rest");
    assert!(status.success(), "logs -f: {status}");
    assert_eq!(rest, "done\n");

    // Pods that no kubelet can serve.
    server.apply(&format!(
        r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "unscheduled", "namespace": "{NS}"}},
            "spec": {{"nodeSelector": {{"kapi": "nowhere"}}, "containers": [{{"name": "c", "image": "{IMAGE}"}}]}}}}"#
    ));
    assert_eq!(
        kubectl_err(&["exec", "-n", NS, "unscheduled", "--", "true"]).trim(),
        "Error from server (BadRequest): pod unscheduled does not have a host assigned"
    );
    assert_eq!(kubectl_ok(&["logs", "-n", NS, "unscheduled"]), "");
    server.apply(r#"{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "kapi-bare"}}"#);
    server.apply(&format!(
        r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "stranded", "namespace": "{NS}"}},
            "spec": {{"nodeName": "kapi-bare", "containers": [{{"name": "c", "image": "{IMAGE}"}}]}}}}"#
    ));
    assert_eq!(
        kubectl_err(&["logs", "-n", NS, "stranded"]).trim(),
        "Error from server (InternalError): Internal error occurred: no preferred addresses found; known addresses: []"
    );

    cancel.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), kubelet).await;
}
