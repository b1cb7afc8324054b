//! Service proxy benchmark, on real nftables in network namespaces this benchmark creates
//! (nothing is linked to the machine's network; all of it is deleted at the end).
//!
//! 1. Rule sync at 1,000 Services x 10 endpoints: the proxy's own work from the caches to the
//!    kernel (model, render, script, `nft -f -`), for the first sync (the whole table) and for
//!    one endpoint changing in one Service. (The API's watch delivery comes on top; the API
//!    benchmark measures it.)
//! 2. Throughput through a cluster IP against straight to the pod's address, with the same
//!    client in one run: a "node" namespace holds the rules, a bridge and the client; a "pod"
//!    namespace behind a veth runs the server.
//!
//! Run: `cargo bench --bench netproxy` (as root; prints why and exits otherwise).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use skiff::netproxy::model::{self, NodeView};
use skiff::netproxy::nft;
use skiff::netproxy::{Family, Local};

const SERVICES: usize = 1_000;
const ENDPOINTS: usize = 10;
const TRANSFER: usize = 2 << 30;

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Network namespaces deleted when dropped.
struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}

fn enter(netns: &str) {
    let f = std::fs::File::open(format!("/var/run/netns/{netns}")).expect("netns");
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
}

fn objects(endpoints_of_first: usize) -> (Vec<Arc<Service>>, Vec<Arc<EndpointSlice>>) {
    let mut services = Vec::new();
    let mut slices = Vec::new();
    for i in 0..SERVICES {
        let name = format!("svc-{i}");
        let cip = format!("10.43.{}.{}", 1 + i / 250, 1 + i % 250);
        services.push(Arc::new(
            serde_json::from_value::<Service>(serde_json::json!({
                "metadata": {"name": name, "namespace": "bench"},
                "spec": {"type": "NodePort", "clusterIP": cip, "clusterIPs": [cip],
                         "ports": [{"name": "http", "port": 80, "nodePort": 30000 + i}]},
            }))
            .expect("service"),
        ));
        let n = if i == 0 { endpoints_of_first } else { ENDPOINTS };
        let eps: Vec<serde_json::Value> = (0..n)
            .map(|e| {
                let k = i * ENDPOINTS + e;
                serde_json::json!({"addresses": [format!("10.42.{}.{}", k / 250, 1 + k % 250)],
                    "conditions": {"ready": true}, "nodeName": if e % 2 == 0 { "n1" } else { "n2" }})
            })
            .collect();
        slices.push(Arc::new(
            serde_json::from_value::<EndpointSlice>(serde_json::json!({
                "metadata": {"name": format!("{name}-x"), "namespace": "bench",
                             "labels": {"kubernetes.io/service-name": name}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                "endpoints": eps,
            }))
            .expect("slice"),
        ));
    }
    (services, slices)
}

fn rule_sync() {
    let view = NodeView { name: "n1".into(), skip_ips: vec![] };
    let local =
        Local { family: Family::V4, pod_cidr: Some("10.42.0.0/24".parse().unwrap()), localhost_nodeports: false };
    let (services, slices) = objects(ENDPOINTS);
    let t = Instant::now();
    let m = model::build(&services, &slices, &view);
    let rules = nft::render(&m, &local);
    let script = nft::script(None, &rules, &local);
    let cpu = t.elapsed();
    let t = Instant::now();
    skiff::netproxy::apply(&script).expect("the whole table applies");
    let kernel = t.elapsed();
    println!(
        "first sync: {} ports, {} chains, {} lines: model+render+script {:.1} ms, nft {:.1} ms",
        m.len(),
        rules.chains.len(),
        script.lines().count(),
        cpu.as_secs_f64() * 1e3,
        kernel.as_secs_f64() * 1e3
    );
    // One endpoint leaves one Service; then comes back.
    let mut previous = rules;
    for (round, n) in [ENDPOINTS - 1, ENDPOINTS, ENDPOINTS - 1, ENDPOINTS].into_iter().enumerate() {
        let (services, slices) = objects(n);
        let t = Instant::now();
        let m = model::build(&services, &slices, &view);
        let rules = nft::render(&m, &local);
        let script = nft::script(Some(&previous), &rules, &local);
        let cpu = t.elapsed();
        let t = Instant::now();
        skiff::netproxy::apply(&script).expect("the update applies");
        let kernel = t.elapsed();
        println!(
            "endpoint change {}: {} lines: model+render+diff {:.1} ms, nft {:.1} ms, total {:.1} ms",
            round + 1,
            script.lines().count(),
            cpu.as_secs_f64() * 1e3,
            kernel.as_secs_f64() * 1e3,
            (cpu + kernel).as_secs_f64() * 1e3
        );
        previous = rules;
    }
}

/// Sends `TRANSFER` bytes to `addr` and waits for the server's one-byte receipt; bytes/s.
fn send(addr: &str) -> f64 {
    let mut s = TcpStream::connect(addr).expect("connect");
    let buf = vec![0u8; 256 << 10];
    let t = Instant::now();
    let mut left = TRANSFER;
    while left > 0 {
        let n = left.min(buf.len());
        s.write_all(&buf[..n]).expect("write");
        left -= n;
    }
    s.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let mut ack = [0u8; 1];
    s.read_exact(&mut ack).expect("receipt");
    TRANSFER as f64 / t.elapsed().as_secs_f64()
}

fn throughput(ns: &Namespaces) {
    let (node, pod) = (&ns.0[0], &ns.0[1]);
    for args in [
        vec!["-n", node, "link", "set", "lo", "up"],
        vec!["-n", pod, "link", "set", "lo", "up"],
        vec!["-n", node, "link", "add", "br0", "type", "bridge"],
        vec!["-n", node, "addr", "add", "10.42.0.1/24", "dev", "br0"],
        vec!["-n", node, "link", "set", "br0", "up"],
        vec!["-n", node, "link", "add", "vp", "type", "veth", "peer", "name", "eth0", "netns", pod],
        vec!["-n", node, "link", "set", "vp", "master", "br0"],
        vec!["-n", node, "link", "set", "vp", "up"],
        vec!["-n", pod, "addr", "add", "10.42.0.2/24", "dev", "eth0"],
        vec!["-n", pod, "link", "set", "eth0", "up"],
        vec!["-n", pod, "route", "add", "default", "via", "10.42.0.1"],
        vec!["-n", node, "route", "add", "10.43.0.0/16", "dev", "br0"],
    ] {
        ip(&args);
    }
    let pod_ns = pod.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        enter(&pod_ns);
        let l = TcpListener::bind("10.42.0.2:5000").expect("listen");
        tx.send(()).expect("ready");
        for _ in 0..6 {
            let (mut c, _) = l.accept().expect("accept");
            let mut buf = vec![0u8; 256 << 10];
            while c.read(&mut buf).map(|n| n > 0).unwrap_or(false) {}
            let _ = c.write_all(&[1]);
        }
    });
    rx.recv().expect("server");
    enter(node);
    let svc = serde_json::json!({
        "metadata": {"name": "sink", "namespace": "bench"},
        "spec": {"clusterIP": "10.43.0.100", "ports": [{"name": "s", "port": 80}]},
    });
    let slice = serde_json::json!({
        "metadata": {"name": "sink-x", "namespace": "bench", "labels": {"kubernetes.io/service-name": "sink"}},
        "addressType": "IPv4", "ports": [{"name": "s", "port": 5000, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["10.42.0.2"], "conditions": {"ready": true}, "nodeName": "n1"}],
    });
    let view = NodeView { name: "n1".into(), skip_ips: vec![] };
    let local =
        Local { family: Family::V4, pod_cidr: Some("10.42.0.0/24".parse().unwrap()), localhost_nodeports: false };
    let m = model::build(
        &[Arc::new(serde_json::from_value(svc).unwrap())],
        &[Arc::new(serde_json::from_value(slice).unwrap())],
        &view,
    );
    skiff::netproxy::apply(&nft::script(None, &nft::render(&m, &local), &local)).expect("rules");
    let mut direct = Vec::new();
    let mut via = Vec::new();
    for _ in 0..3 {
        direct.push(send("10.42.0.2:5000"));
        via.push(send("10.43.0.100:80"));
    }
    server.join().expect("server");
    let best = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
    let gbit = |b: f64| b * 8.0 / 1e9;
    println!(
        "throughput, {} GiB per run, best of 3: direct {:.2} Gbit/s, cluster IP {:.2} Gbit/s, ratio {:.3}",
        TRANSFER >> 30,
        gbit(best(&direct)),
        gbit(best(&via)),
        best(&via) / best(&direct)
    );
    println!(
        "  runs: direct {:?} Gbit/s, cluster IP {:?} Gbit/s",
        direct.iter().map(|b| (gbit(*b) * 100.0).round() / 100.0).collect::<Vec<_>>(),
        via.iter().map(|b| (gbit(*b) * 100.0).round() / 100.0).collect::<Vec<_>>()
    );
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIPPED: the service proxy benchmark needs root (network namespaces, nftables)");
        return;
    }
    let id = std::process::id() % 100_000;
    let ns = Namespaces(vec![format!("skb-{id}-node"), format!("skb-{id}-pod"), format!("skb-{id}-rules")]);
    for n in &ns.0 {
        ip(&["netns", "add", n]);
    }
    // Rule sync in a namespace of its own (on a thread, so the others start clean).
    let rules_ns = ns.0[2].clone();
    std::thread::spawn(move || {
        enter(&rules_ns);
        rule_sync();
    })
    .join()
    .expect("rule sync");
    throughput(&ns);
}
