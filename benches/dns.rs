//! Cluster DNS benchmark: the node-local DNS server on 127.0.0.1 with a zone of 1,000 Services
//! (half ClusterIP, half headless) of 10 ready endpoints each, under a closed-loop load of
//! several UDP clients for a few seconds. The names asked mix ClusterIP A (40%), headless A
//! (30%), SRV (15%) and NXDOMAIN (15%). Prints queries per second and the latency spread.
//!
//! Run: `cargo bench --bench dns`. No API server, no traffic off the machine: the zone is
//! built from hand-made objects and names outside it are never asked.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use skiff::agent::dns::{Forwarder, Records, SharedRecords, Sockets, serve};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

const SERVICES: usize = 1_000;
const ENDPOINTS: usize = 10;
const CLIENTS: usize = 16;
const DURATION: Duration = Duration::from_secs(5);
const WARM_UP: Duration = Duration::from_millis(500);

fn zone() -> Records {
    let mut services = Vec::new();
    let mut slices = Vec::new();
    for i in 0..SERVICES {
        let name = format!("svc-{i}");
        let ns = format!("ns-{}", i % 20);
        let headless = i % 2 == 1;
        let ip = if headless { "None".to_string() } else { format!("10.43.{}.{}", i / 250, i % 250 + 1) };
        services.push(Arc::new(Service {
            metadata: ObjectMeta { namespace: Some(ns.clone()), name: Some(name.clone()), ..Default::default() },
            spec: Some(ServiceSpec {
                cluster_ip: Some(ip.clone()),
                cluster_ips: Some(vec![ip]),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }));
        slices.push(Arc::new(EndpointSlice {
            metadata: ObjectMeta {
                namespace: Some(ns),
                name: Some(format!("{name}-x")),
                labels: Some(BTreeMap::from([("kubernetes.io/service-name".to_string(), name)])),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: (0..ENDPOINTS)
                .map(|e| Endpoint {
                    addresses: vec![format!("10.42.{}.{}", i / 20, (i % 20) * ENDPOINTS + e + 1)],
                    conditions: Some(EndpointConditions { ready: Some(true), ..Default::default() }),
                    hostname: headless.then(|| format!("pod-{e}")),
                    ..Default::default()
                })
                .collect(),
            ports: Some(vec![EndpointPort {
                name: Some("http".into()),
                port: Some(8080),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
        }));
    }
    Records::build("cluster.local", &services, &slices, 1)
}

/// The questions, as wire bytes (the id is set per send), and whether each should be NXDOMAIN.
fn questions() -> Vec<(Vec<u8>, bool)> {
    let mut out = Vec::new();
    for k in 0..100usize {
        let i = k * 37 % SERVICES;
        let ns = i % 20;
        let (name, t, nx) = match k % 20 {
            0..=7 => (format!("svc-{}.ns-{}.svc.cluster.local.", i & !1, (i & !1) % 20), RecordType::A, false),
            8..=13 => (format!("svc-{}.ns-{}.svc.cluster.local.", i | 1, (i | 1) % 20), RecordType::A, false),
            14..=16 => (format!("_http._tcp.svc-{i}.ns-{ns}.svc.cluster.local."), RecordType::SRV, false),
            _ => (format!("missing-{i}.ns-{ns}.svc.cluster.local."), RecordType::A, true),
        };
        let mut m = Message::new(0, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(&name).expect("name"), t));
        out.push((m.to_vec().expect("encode"), nx));
    }
    out
}

struct Tally {
    latencies_us: Vec<u32>,
    lost: usize,
    wrong: usize,
}

async fn client(
    server: SocketAddr,
    questions: Arc<Vec<(Vec<u8>, bool)>>,
    offset: usize,
    stop: Arc<AtomicBool>,
) -> Tally {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    socket.connect(server).await.expect("connect");
    let mut buf = vec![0u8; 4096];
    let mut tally = Tally { latencies_us: Vec::with_capacity(200_000), lost: 0, wrong: 0 };
    let mut n = offset;
    while !stop.load(Ordering::Relaxed) {
        let (q, nx) = &questions[n % questions.len()];
        let id = (n & 0xffff) as u16;
        let mut q = q.clone();
        q[..2].copy_from_slice(&id.to_be_bytes());
        n += 1;
        let start = Instant::now();
        if socket.send(&q).await.is_err() {
            tally.lost += 1;
            continue;
        }
        loop {
            match tokio::time::timeout(Duration::from_secs(1), socket.recv(&mut buf)).await {
                Ok(Ok(len)) if len >= 12 && buf[..2] == id.to_be_bytes() => {
                    tally.latencies_us.push(start.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                    let rcode = buf[3] & 0x0f;
                    if (rcode == 3) != *nx || (rcode != 0 && rcode != 3) {
                        tally.wrong += 1;
                    }
                    break;
                }
                Ok(Ok(_)) => continue,
                _ => {
                    tally.lost += 1;
                    break;
                }
            }
        }
    }
    tally
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let built = Instant::now();
    let records = zone();
    println!(
        "zone: {} names from {SERVICES} services x {ENDPOINTS} endpoints, built in {:?}",
        records.len(),
        built.elapsed()
    );

    let server_rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let cancel = CancellationToken::new();
    let addr = server_rt.block_on(async {
        let sockets = Sockets::bind(&["127.0.0.1:0".parse().expect("addr")]).await.expect("bind");
        let addr = sockets.local_addrs()[0];
        tokio::spawn(serve(sockets, SharedRecords::new(records), Arc::new(Forwarder::new(vec![])), cancel.clone()));
        addr
    });

    let client_rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let questions = Arc::new(questions());
    let run = |duration: Duration| {
        client_rt.block_on(async {
            let stop = Arc::new(AtomicBool::new(false));
            let tasks: Vec<_> =
                (0..CLIENTS).map(|c| tokio::spawn(client(addr, questions.clone(), c * 7, stop.clone()))).collect();
            tokio::time::sleep(duration).await;
            stop.store(true, Ordering::Relaxed);
            let mut all = Tally { latencies_us: Vec::new(), lost: 0, wrong: 0 };
            for t in tasks {
                let t = t.await.expect("client");
                all.latencies_us.extend(t.latencies_us);
                all.lost += t.lost;
                all.wrong += t.wrong;
            }
            all
        })
    };
    run(WARM_UP);
    let started = Instant::now();
    let mut tally = run(DURATION);
    let elapsed = started.elapsed();
    tally.latencies_us.sort_unstable();
    let qps = tally.latencies_us.len() as f64 / elapsed.as_secs_f64();
    println!(
        "{CLIENTS} UDP clients, {:.1} s: {} answers, {qps:.0} queries/s; latency p50 {} us, p99 {} us, max {} us; \
         {} lost, {} wrong",
        elapsed.as_secs_f64(),
        tally.latencies_us.len(),
        percentile(&tally.latencies_us, 0.50),
        percentile(&tally.latencies_us, 0.99),
        tally.latencies_us.last().copied().unwrap_or(0),
        tally.lost,
        tally.wrong,
    );
    cancel.cancel();
    server_rt.shutdown_timeout(Duration::from_secs(1));
}
