//! Control-plane benchmark: 100 simulated nodes (`skiff sim`), 10,000 pods created as 100
//! Deployments of 100, then a rolling update of all 100 Deployments at once.
//!
//! Run: `cargo bench --bench control_plane` (see BENCHMARKS.md). It starts the release server
//! and one `skiff sim` process on a loopback port in a temp dir and stops both when done.
//! Reports the time until every pod is bound and Running, the binding rate, how fast pods were
//! created and how many waited for a node at once (which of the two set the pace), and the
//! server's RSS, from a watch on the pods and a poll of the Deployments' status.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde::Deserialize;

use common::Server;

const NODES: usize = 100;
const DEPLOYMENTS: usize = 100;
const REPLICAS: usize = 100;
const PODS: usize = DEPLOYMENTS * REPLICAS;
const NS: &str = "bench";

fn status_kib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// CPU time (user + system) a process has used, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest.split_whitespace().skip(11).take(2).filter_map(|n| n.parse().ok()).collect();
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as f64;
    f.iter().sum::<u64>() as f64 / ticks
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// When each pod was first seen at all, first seen bound and first seen Running and Ready.
#[derive(Default)]
struct Seen {
    created: HashMap<String, Instant>,
    bound: HashMap<String, Instant>,
    running: HashMap<String, Instant>,
}

fn deployment(i: usize) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": format!("d-{i:03}"), "namespace": NS},
        "spec": {
            "replicas": REPLICAS,
            "selector": {"matchLabels": {"app": format!("d-{i:03}")}},
            "template": {
                "metadata": {"labels": {"app": format!("d-{i:03}")}},
                "spec": {"containers": [{"name": "app", "image": "busybox:1.36", "command": ["sleep", "infinity"],
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]},
            },
        },
    }))
    .expect("deployment")
}

/// The fields of a pod the observer reads.
#[derive(Clone, Deserialize)]
struct LitePod {
    metadata: LiteMeta,
    #[serde(default)]
    spec: LiteSpec,
    #[serde(default)]
    status: LiteStatus,
}

#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LiteMeta {
    name: String,
    #[serde(default)]
    resource_version: String,
}

#[derive(Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LiteSpec {
    node_name: Option<String>,
}

#[derive(Clone, Default, Deserialize)]
struct LiteStatus {
    phase: Option<String>,
    #[serde(default)]
    conditions: Vec<LiteCondition>,
}

#[derive(Clone, Deserialize)]
struct LiteCondition {
    #[serde(rename = "type")]
    type_: String,
    status: String,
}

impl LitePod {
    fn is_running(&self) -> bool {
        self.status.phase.as_deref() == Some("Running")
            && self.status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
    }
}

/// Every Deployment rolled out: all replicas updated and available, no old pods left.
fn rolled_out(list: &[Deployment]) -> usize {
    list.iter()
        .filter(|d| {
            let (Some(st), Some(generation)) = (d.status.as_ref(), d.metadata.generation) else { return false };
            st.observed_generation == Some(generation)
                && st.updated_replicas == Some(REPLICAS as i32)
                && st.available_replicas == Some(REPLICAS as i32)
                && st.replicas == Some(REPLICAS as i32)
        })
        .count()
}

/// Polls until every Deployment reports all its replicas updated and available.
async fn wait_rolled_out(deployments: &Api<Deployment>, deadline: Instant) {
    loop {
        let list = deployments.list(&ListParams::default()).await.expect("list deployments");
        let done = rolled_out(&list.items);
        if done == DEPLOYMENTS {
            return;
        }
        assert!(Instant::now() < deadline, "only {done} of {DEPLOYMENTS} Deployments rolled out in time");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn main() {
    let s = Server::start();
    let pid = s.child.as_ref().expect("server process").id();
    let rss_start = status_kib(pid, "VmRSS:");
    let t_sim = Instant::now();
    let nodes = NODES.to_string();
    let sim = s.sim(&["--nodes", &nodes, "--cpu", "32", "--memory", "64Gi", "--max-pods", "110"]);
    println!("{NODES} simulated nodes Ready in {:.1} s", t_sim.elapsed().as_secs_f64());
    let sim_pid = sim.pid();

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let kc = kube::config::Kubeconfig::read_from(&s.kubeconfig).expect("kubeconfig");
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.expect("config");
        let client = kube::Client::try_from(cfg).expect("client");
        let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": NS}})).expect("namespace");
        Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.expect("create namespace");

        // One watch on the namespace's pods records when each pod is bound and running. It
        // decodes only the few fields it needs, so the observer keeps up with the server and
        // does not itself load the machine; after an error it resumes from the last version.
        let seen = Arc::new(Mutex::new(Seen::default()));
        let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
        let start_rv = pods.list_metadata(&ListParams::default()).await.expect("list pods").metadata.resource_version;
        let watch = {
            let (seen, client) = (seen.clone(), client.clone());
            let mut rv = start_rv.unwrap_or_default();
            tokio::spawn(async move {
                let url = format!("/api/v1/namespaces/{NS}/pods");
                loop {
                    let wp = WatchParams::default().timeout(290);
                    let req = kube::core::Request::new(&url).watch(&wp, &rv).expect("watch request");
                    let stream = match client.request_events::<LitePod>(req).await {
                        Ok(s) => s,
                        Err(e) => {
                            eprintln!("  (pod watch: {e})");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue;
                        }
                    };
                    let mut stream = std::pin::pin!(stream);
                    while let Ok(Some(ev)) = stream.try_next().await {
                        let p = match ev {
                            WatchEvent::Added(p) | WatchEvent::Modified(p) => p,
                            WatchEvent::Deleted(p) => {
                                rv = p.metadata.resource_version.clone();
                                continue;
                            }
                            WatchEvent::Bookmark(b) => {
                                rv = b.metadata.resource_version;
                                continue;
                            }
                            WatchEvent::Error(e) => {
                                eprintln!("  (pod watch: {})", e.message);
                                break;
                            }
                        };
                        rv = p.metadata.resource_version.clone();
                        let now = Instant::now();
                        let mut g = seen.lock().unwrap();
                        g.created.entry(p.metadata.name.clone()).or_insert(now);
                        if p.spec.node_name.is_some() {
                            g.bound.entry(p.metadata.name.clone()).or_insert(now);
                        }
                        if p.is_running() {
                            g.running.entry(p.metadata.name).or_insert(now);
                        }
                    }
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;

        let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
        let (server_cpu0, sim_cpu0) = (cpu_seconds(pid), cpu_seconds(sim_pid));
        let t0 = Instant::now();
        futures::stream::iter(0..DEPLOYMENTS)
            .map(|i| {
                let api = deployments.clone();
                async move { api.create(&PostParams::default(), &deployment(i)).await.expect("create deployment") }
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await;
        println!("{DEPLOYMENTS} Deployments created in {:.2} s", t0.elapsed().as_secs_f64());

        let deadline = t0 + Duration::from_secs(600);
        let mut progress = Instant::now();
        loop {
            let (b, r) = {
                let g = seen.lock().unwrap();
                (g.bound.len(), g.running.len())
            };
            if r >= PODS {
                break;
            }
            assert!(Instant::now() < deadline, "only {b} bound and {r} running after 600 s");
            if progress.elapsed() >= Duration::from_secs(5) {
                progress = Instant::now();
                eprintln!(
                    "  ({:.0} s: {b} bound, {r} running; server RSS {:.1} MiB)",
                    t0.elapsed().as_secs_f64(),
                    mib(status_kib(pid, "VmRSS:"))
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (server_cpu, sim_cpu) = (cpu_seconds(pid) - server_cpu0, cpu_seconds(sim_pid) - sim_cpu0);
        let (first_bound, last_bound, last_running) = {
            let g = seen.lock().unwrap();
            (
                *g.bound.values().min().expect("binds"),
                *g.bound.values().max().expect("binds"),
                *g.running.values().max().expect("running"),
            )
        };
        let all_bound = last_bound - t0;
        let all_running = last_running - t0;
        let bind_window = (last_bound - first_bound).as_secs_f64();
        println!("all {PODS} pods bound after {:.2} s, all Running and Ready after {:.2} s", all_bound.as_secs_f64(), all_running.as_secs_f64());
        println!(
            "binding rate: {:.0} pods/s from the first bind to the last ({bind_window:.2} s); {:.0} pods/s from the first create",
            PODS as f64 / bind_window.max(1e-3),
            PODS as f64 / all_bound.as_secs_f64()
        );
        // Whether the scheduler or the pods' creation set the pace: how fast pods appeared, and
        // the most that waited for a node at one moment.
        let (create_window, most_waiting) = {
            let g = seen.lock().unwrap();
            let mut marks: Vec<(Instant, i64)> = g.created.values().map(|t| (*t, 1)).chain(g.bound.values().map(|t| (*t, -1))).collect();
            marks.sort();
            let most = marks.iter().scan(0i64, |n, (_, d)| { *n += d; Some(*n) }).max().unwrap_or(0);
            let first = g.created.values().min().copied().unwrap_or(t0);
            let last = g.created.values().max().copied().unwrap_or(t0);
            ((last - first).as_secs_f64(), most)
        };
        println!(
            "pods created: {:.0} pods/s from the first to the last ({create_window:.2} s); at most {most_waiting} pods waited for a node at once",
            PODS as f64 / create_window.max(1e-3)
        );
        println!(
            "CPU from the first create until all are Running: server {server_cpu:.1} s ({:.2} ms a pod), simulator {sim_cpu:.1} s",
            server_cpu * 1000.0 / PODS as f64
        );
        println!(
            "server RSS with {PODS} pods running: {:.1} MiB (peak {:.1} MiB, {:.1} MiB at start)",
            mib(status_kib(pid, "VmRSS:")),
            mib(status_kib(pid, "VmHWM:")),
            mib(rss_start)
        );

        // The same server once the control plane has caught up: every Deployment reports its
        // 100 pods available, so no status write or event for these pods is still in flight.
        wait_rolled_out(&deployments, Instant::now() + Duration::from_secs(300)).await;
        println!(
            "server RSS once every Deployment reports its pods available ({:.2} s after the first create): {:.1} MiB ({:.1} anonymous, {:.1} file-backed)",
            t0.elapsed().as_secs_f64(),
            mib(status_kib(pid, "VmRSS:")),
            mib(status_kib(pid, "RssAnon:")),
            mib(status_kib(pid, "RssFile:"))
        );
        tokio::time::sleep(Duration::from_secs(10)).await;
        println!("server RSS 10 s later: {:.1} MiB", mib(status_kib(pid, "VmRSS:")));

        // Churn: a new image for every Deployment at once.
        let t1 = Instant::now();
        futures::stream::iter(0..DEPLOYMENTS)
            .map(|i| {
                let api = deployments.clone();
                async move {
                    let patch = serde_json::json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "busybox:1.37"}]}}}});
                    api.patch(&format!("d-{i:03}"), &PatchParams::default(), &Patch::Strategic(&patch)).await.expect("patch")
                }
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await;
        wait_rolled_out(&deployments, t1 + Duration::from_secs(900)).await;
        let churn = t1.elapsed();
        let remaining = pods.list_metadata(&ListParams::default()).await.expect("list pods").items.len();
        println!(
            "rolling update of all {DEPLOYMENTS} Deployments: complete after {:.2} s ({remaining} pods at the end)",
            churn.as_secs_f64()
        );
        println!(
            "server RSS after the rolling update: {:.1} MiB (peak {:.1} MiB)",
            mib(status_kib(pid, "VmRSS:")),
            mib(status_kib(pid, "VmHWM:"))
        );
        watch.abort();
    });
}
