//! API benchmark: creates, gets, a 10,000-pod list, watch fan-out, start-up time and memory,
//! against the release binary, and the same create load against etcd as the storage floor.
//!
//! Run: `cargo bench --bench api_load` (see BENCHMARKS.md). It starts its own server on a
//! loopback port in a temp dir and stops everything it started. The scheduler and controllers
//! are off unless `SKIFF_BENCH_CONTROL_PLANE` is set (the control-plane benchmark measures them).

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;

use common::Server;
use common::reqwest_like::Client;

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(c: &Client) -> Sender {
    let tcp = tokio::net::TcpStream::connect(&c.addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let tls = tokio_rustls::TlsConnector::from(c.tls.clone())
        .connect(ServerName::try_from("127.0.0.1").unwrap().to_owned(), tcp)
        .await
        .unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    sender
}

async fn send(s: &mut Sender, method: &str, path: &str, body: Vec<u8>) -> (u16, Bytes) {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    s.ready().await.unwrap();
    let resp = s.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

const CLIENTS: usize = 64;

/// Runs `per_client` requests on each of `CLIENTS` connections; returns (ops/s, sorted latencies).
async fn load<F>(c: &Client, per_client: usize, make: F) -> (f64, Vec<Duration>)
where
    F: Fn(usize, usize) -> (&'static str, String, Vec<u8>) + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let mut conns = Vec::new();
    for _ in 0..CLIENTS {
        conns.push(connect(c).await);
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (w, mut conn) in conns.into_iter().enumerate() {
        let make = make.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_client);
            for i in 0..per_client {
                let (m, path, body) = make(w, i);
                let t = Instant::now();
                let (status, _) = send(&mut conn, m, &path, body).await;
                assert!(status < 300, "{m} {path} -> {status}");
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort();
    (all.len() as f64 / secs, all)
}

fn configmap(name: &str) -> Vec<u8> {
    serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"payload": "x".repeat(1000)}})
        .to_string()
        .into_bytes()
}

fn pod(name: &str) -> Vec<u8> {
    serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "bench", "tier": "web"}},
        "spec": {"containers": [{"name": "app", "image": "busybox:1.36", "command": ["sleep", "3600"],
            "ports": [{"containerPort": 8080}], "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}})
    .to_string()
    .into_bytes()
}

/// The create load as `system:masters` and as a user holding 1,000 RoleBindings in the
/// namespace, 999 of which grant nothing it needs and sort before the one that does (RBAC
/// visits bindings in name order, so this is its worst case), alternating three rounds each
/// on a fresh server.
fn rbac_cost(rt: &tokio::runtime::Runtime, controllers: &str) {
    let s = Server::start_with(&["--disable-scheduler", "--disable-controller", controllers]);
    s.ok(&["create", "namespace", "bench"]);
    s.ok(&["create", "clusterrole", "bench-reader", "--verb=get", "--resource=pods"]);
    s.ok(&["create", "clusterrole", "bench-writer", "--verb=create", "--resource=configmaps"]);
    let binding = |name: &str, role: &str| {
        serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": name, "namespace": "bench"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "bench-user"}]})
    };
    let mut items: Vec<serde_json::Value> =
        (0..999).map(|i| binding(&format!("reader-{i:04}"), "bench-reader")).collect();
    items.push(binding("zz-writer", "bench-writer"));
    let docs: Vec<String> = items.iter().map(|i| i.to_string()).collect();
    let out = s.apply_stdin(&["create", "-f", "-"], &docs.join("\n"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let admin = Client::from_kubeconfig(&s.kubeconfig, true);
    let user = Client::from_kubeconfig(&s.user_kubeconfig("bench-user", &[]), true);
    let (mut masters, mut bound) = (Vec::new(), Vec::new());
    rt.block_on(async {
        for round in 0..6 {
            let c = if round % 2 == 0 { &admin } else { &user };
            let (rate, _) = load(c, 150, move |w, i| {
                ("POST", "/api/v1/namespaces/bench/configmaps".into(), configmap(&format!("r{round}-{w}-{i}")))
            })
            .await;
            if round % 2 == 0 { masters.push(rate) } else { bound.push(rate) }
        }
    });
    masters.sort_by(f64::total_cmp);
    bound.sort_by(f64::total_cmp);
    println!(
        "creates with RBAC: system:masters {masters:.0?}/s, a user with 1,000 RoleBindings {bound:.0?}/s; medians {:.0} vs {:.0} ({:+.1} %)",
        masters[1],
        bound[1],
        (bound[1] / masters[1] - 1.0) * 100.0
    );
}

/// The same create load against etcd (v3 JSON gateway), if `etcd` is installed.
async fn etcd_puts(dir: &std::path::Path) -> Option<(f64, Duration, Duration)> {
    let bin = ["/usr/bin/etcd", "/usr/local/bin/etcd"].into_iter().find(|p| std::path::Path::new(p).exists())?;
    let port = { std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port() };
    let peer = { std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port() };
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _etcd = Kill(
        std::process::Command::new(bin)
            .arg("--data-dir")
            .arg(dir.join("etcd"))
            .arg(format!("--listen-client-urls=http://127.0.0.1:{port}"))
            .arg(format!("--advertise-client-urls=http://127.0.0.1:{port}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
            .arg(format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"))
            .arg(format!("--initial-cluster=default=http://127.0.0.1:{peer}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?,
    );
    let addr = format!("127.0.0.1:{port}");
    let mut ready = false;
    for _ in 0..100 {
        if std::net::TcpStream::connect(&addr).is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !ready {
        return None;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let per = 150;
    let mut tasks = Vec::new();
    let start = Instant::now();
    for w in 0..CLIENTS {
        let addr = addr.clone();
        tasks.push(tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
            tokio::spawn(conn);
            let mut lat = Vec::new();
            use base64::Engine;
            let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
            for i in 0..per {
                let body = serde_json::json!({"key": b64(&format!("/bench/{w}/{i}")), "value": b64(&"x".repeat(1024))})
                    .to_string();
                let t = Instant::now();
                let (status, _) = send(&mut s, "POST", "/v3/kv/put", body.into_bytes()).await;
                assert_eq!(status, 200);
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let rate = all.len() as f64 / start.elapsed().as_secs_f64();
    all.sort();
    Some((rate, pct(&all, 0.5), pct(&all, 0.99)))
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    // This measures the API server and its store; the scheduler and controllers, which would
    // otherwise try to schedule (and report on) every pod created here, are measured by the
    // control-plane benchmark. SKIFF_BENCH_CONTROL_PLANE=1 runs them here too.
    let with_control_plane = std::env::var_os("SKIFF_BENCH_CONTROL_PLANE").is_some();
    let controllers = skiff::server::controllers::NAMES.join(",");
    let mut s = if with_control_plane {
        Server::start()
    } else {
        Server::start_with(&["--disable-scheduler", "--disable-controller", &controllers])
    };
    println!("control plane: {}", if with_control_plane { "on (scheduler and every controller)" } else { "off" });
    // Pods run as a service account that must exist; with the controllers off, nobody else
    // makes the default one.
    s.apply(
        r#"{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": "default"}}"#,
    );
    let pid = s.child.as_ref().unwrap().id();
    std::thread::sleep(Duration::from_secs(2));
    let idle_rss = rss_kib(pid);
    let client = Client::from_kubeconfig(&s.kubeconfig, true);

    rt.block_on(async {
        // Creates: 64 clients, 1 KiB ConfigMaps.
        let per = 150;
        let (rate, lat) = load(&client, per, |w, i| ("POST", "/api/v1/namespaces/default/configmaps".into(), configmap(&format!("cm-{w}-{i}")))).await;
        println!("creates: {:.0}/s  p50 {:.2} ms  p99 {:.2} ms  ({} creates, {CLIENTS} clients)", rate, pct(&lat, 0.5).as_secs_f64() * 1e3, pct(&lat, 0.99).as_secs_f64() * 1e3, lat.len());

        // Gets of those objects.
        let (rate, lat) = load(&client, 600, move |w, i| ("GET", format!("/api/v1/namespaces/default/configmaps/cm-{w}-{}", i % per), Vec::new())).await;
        eprintln!("  (server RSS after creates: {:.1} MiB)", rss_kib(pid) as f64 / 1024.0);
        println!("gets: {:.0}/s  p50 {:.2} ms  p99 {:.2} ms", rate, pct(&lat, 0.5).as_secs_f64() * 1e3, pct(&lat, 0.99).as_secs_f64() * 1e3);

        eprintln!("  (server RSS after gets: {:.1} MiB)", rss_kib(pid) as f64 / 1024.0);
        // Watch fan-out: 100 watchers, 200 updates.
        let mut watchers = Vec::new();
        for _ in 0..100 {
            let mut conn = connect(&client).await;
            let req = http::Request::builder()
                .uri("/api/v1/namespaces/default/configmaps?watch=1&fieldSelector=metadata.name%3Dcm-0-0&resourceVersion=0")
                .header("host", "127.0.0.1")
                .body(Full::new(Bytes::new()))
                .unwrap();
            conn.ready().await.unwrap();
            let resp = conn.send_request(req).await.unwrap();
            watchers.push(tokio::spawn(async move {
                let mut body = resp.into_body();
                let mut events = 0usize;
                let mut buf = Vec::new();
                while events < 201 {
                    let Some(Ok(frame)) = body.frame().await else { break };
                    if let Ok(d) = frame.into_data() {
                        buf.extend_from_slice(&d);
                        events += buf.iter().filter(|b| **b == b'\n').count();
                        buf.clear();
                    }
                }
                (events, Instant::now())
            }));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut conn = connect(&client).await;
        let start = Instant::now();
        for i in 0..200 {
            let body = serde_json::json!({"data": {"payload": format!("v{i}")}}).to_string().into_bytes();
            let req = http::Request::builder()
                .method("PATCH")
                .uri("/api/v1/namespaces/default/configmaps/cm-0-0")
                .header("host", "127.0.0.1")
                .header("content-type", "application/merge-patch+json")
                .body(Full::new(Bytes::from(body)))
                .unwrap();
            conn.ready().await.unwrap();
            let r = conn.send_request(req).await.unwrap();
            assert_eq!(r.status(), 200);
            let _ = r.into_body().collect().await;
        }
        let mut last = start;
        let mut delivered = 0;
        for w in watchers {
            let (n, at) = w.await.unwrap();
            delivered += n.min(201) - 1;
            last = last.max(at);
        }
        let secs = (last - start).as_secs_f64();
        println!("watch fan-out: 100 watchers x 200 updates: {delivered} events delivered in {:.2} s ({:.0} events/s)", secs, delivered as f64 / secs);
        eprintln!("  (server RSS after watch fan-out: {:.1} MiB)", rss_kib(pid) as f64 / 1024.0);

        // 10,000 pods, then list them.
        let (rate, _) = load(&client, 10_000 / CLIENTS + 1, |w, i| ("POST", "/api/v1/namespaces/default/pods".into(), pod(&format!("pod-{w}-{i}")))).await;
        println!("pod creates: {rate:.0}/s");
        eprintln!("  (server RSS after pod creates: {:.1} MiB)", rss_kib(pid) as f64 / 1024.0);
        let mut conn = connect(&client).await;
        let mut times = Vec::new();
        let mut size = 0;
        for _ in 0..7 {
            let t = Instant::now();
            let (status, body) = send(&mut conn, "GET", "/api/v1/namespaces/default/pods", Vec::new()).await;
            assert_eq!(status, 200);
            times.push(t.elapsed());
            size = body.len();
        }
        times.sort();
        println!("list 10,000+ pods: median {:.0} ms ({:.1} MiB JSON)", pct(&times, 0.5).as_secs_f64() * 1e3, size as f64 / 1048576.0);
        let mut ttimes = Vec::new();
        for _ in 0..3 {
            let req = http::Request::builder()
                .uri("/api/v1/namespaces/default/pods?limit=500")
                .header("host", "127.0.0.1")
                .header("accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
                .body(Full::new(Bytes::new()))
                .unwrap();
            conn.ready().await.unwrap();
            let t = Instant::now();
            let r = conn.send_request(req).await.unwrap();
            let _ = r.into_body().collect().await;
            ttimes.push(t.elapsed());
        }
        ttimes.sort();
        println!("kubectl-style table page (500 pods): median {:.0} ms", pct(&ttimes, 0.5).as_secs_f64() * 1e3);
    });
    let loaded_rss = rss_kib(pid);
    println!(
        "server RSS: idle {:.1} MiB, right after the load above (10,000 pods + 9,600 configmaps stored) {:.1} MiB",
        idle_rss as f64 / 1024.0,
        loaded_rss as f64 / 1024.0
    );
    // Idle blocking threads end after 10 s, and what their heaps held with them.
    std::thread::sleep(Duration::from_secs(12));
    eprintln!("  (server RSS 12 s after the load: {:.1} MiB)", rss_kib(pid) as f64 / 1024.0);

    // Start to ready on an existing data dir.
    let mut starts = Vec::new();
    for _ in 0..5 {
        s.terminate();
        let t = Instant::now();
        s.launch();
        starts.push(t.elapsed());
    }
    starts.sort();
    let logged: Vec<u64> = s
        .log()
        .lines()
        .filter_map(|l| l.split("elapsed_ms=").nth(1))
        .filter_map(|v| v.split_whitespace().next())
        .filter_map(|v| v.trim_matches(|c: char| !c.is_ascii_digit()).parse().ok())
        .collect();
    println!(
        "start to ready (existing data dir, 10k+ objects): median {:.0} ms measured by the client (includes kubectl polling), server log elapsed_ms {:?}",
        pct(&starts, 0.5).as_secs_f64() * 1e3,
        &logged[logged.len().saturating_sub(5)..]
    );
    // Memory at rest with the objects stored: after a restart and one full list of the pods.
    let pid = s.child.as_ref().map(|c| c.id()).unwrap_or(0);
    rt.block_on(async {
        let client = Client::from_kubeconfig(&s.kubeconfig, true);
        let mut conn = connect(&client).await;
        let (status, _) = send(&mut conn, "GET", "/api/v1/namespaces/default/pods", Vec::new()).await;
        assert_eq!(status, 200);
    });
    std::thread::sleep(Duration::from_secs(1));
    println!("server RSS after a restart and one full pod list: {:.1} MiB", rss_kib(pid) as f64 / 1024.0);
    let path = common::skiff_bin();
    let bin = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!("binary: {:.1} MiB ({})", bin as f64 / 1048576.0, path.display());
    drop(s);
    rbac_cost(&rt, &controllers);

    let dir = tempfile::tempdir().unwrap();
    match rt.block_on(etcd_puts(dir.path())) {
        Some((rate, p50, p99)) => println!(
            "etcd floor: {rate:.0} puts/s  p50 {:.2} ms  p99 {:.2} ms ({CLIENTS} clients, 1 KiB values, v3 JSON gateway)",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3
        ),
        None => println!("etcd floor: etcd not installed (apt-get install etcd-server)"),
    }
}
