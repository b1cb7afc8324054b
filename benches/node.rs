//! Node benchmark: the CRI floor (a sandbox and a container created and started directly over
//! CRI), then pod create-to-Ready latency through the whole stack for one pod at a time and for
//! 50 at once, the agent's and its containerd's memory, and how soon a restarted agent reports
//! its node Ready.
//!
//! Run: `sudo cargo bench --bench node` (see BENCHMARKS.md). Like the node tests it runs skiff
//! in a network namespace of its own with no route out: `skiff server --disable-agent` and, as
//! a separate process so its memory can be read, `skiff agent`. The API is reached from a
//! thread that joined that namespace.

#[path = "../tests/images/mod.rs"]
mod images;
#[path = "../tests/node/mod.rs"]
mod node;

use std::os::fd::AsFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client};
use skiff::cri::{CriClient, proto};

const PODS: usize = 50;
const SINGLE_ROUNDS: usize = 10;
const FLOOR_ROUNDS: usize = 10;
/// The node's last status post: its Ready condition's heartbeat time and status.
const HEARTBEAT: &str = "jsonpath={.status.conditions[?(@.type==\"Ready\")].lastHeartbeatTime} {.status.conditions[?(@.type==\"Ready\")].status}";

/// A `kB` field of `/proc/<pid>/status`, in MiB.
fn status_mib(pid: u32, field: &str) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    kib as f64 / 1024.0
}

fn rss_mib(pid: u32) -> f64 {
    status_mib(pid, "VmRSS")
}

/// `VmRSS`, `RssAnon` and `RssFile` of a process, for the log.
fn rss_parts(pid: u32) -> String {
    let [rss, anon, file] = ["VmRSS", "RssAnon", "RssFile"].map(|f| status_mib(pid, f));
    format!("VmRSS {rss:.1} MiB, RssAnon {anon:.1} MiB, RssFile {file:.1} MiB")
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ =
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0.id() as i32), nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_agent(b: &node::Box) -> Agent {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(b.dir.path().join("agent.log")).expect("log");
    let child = Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{}", b.netns))
        .arg(node::skiff_bin())
        .args(["agent", "--node-name", "box", "--node-ip", &b.node_ip])
        .arg("--kubeconfig")
        .arg(b.kubeconfig())
        .arg("--data-dir")
        .arg(b.data_dir())
        .arg("--config")
        .arg(b.dir.path().join("config.yaml"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start skiff agent");
    Agent(child)
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "c", "image": "busybox", "imagePullPolicy": "IfNotPresent", "command": ["sleep", "3600"]}],
        },
    }))
    .expect("pod")
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn wait_ready(pods: &Api<Pod>, name: &str) {
    let cond = move |p: Option<&Pod>| p.is_some_and(is_ready);
    tokio::time::timeout(Duration::from_secs(120), await_condition(pods.clone(), name, cond))
        .await
        .expect("pod Ready in time")
        .expect("watch");
}

async fn delete_all(pods: &Api<Pod>, names: &[String]) {
    for n in names {
        let _ = pods.delete(n, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await;
    }
    for n in names {
        let _ =
            tokio::time::timeout(Duration::from_secs(60), await_condition(pods.clone(), n, conditions::is_deleted("")))
                .await;
    }
}

/// One sandbox plus one container, created and started over CRI, the way the agent does it.
async fn cri_floor(cri: &CriClient, round: usize, log_dir: &std::path::Path) -> Duration {
    let uid = format!("floor-{round}-{}", std::process::id());
    let sandbox = proto::PodSandboxConfig {
        metadata: Some(proto::PodSandboxMetadata {
            name: format!("floor-{round}"),
            uid: uid.clone(),
            namespace: "bench".into(),
            attempt: 0,
        }),
        hostname: format!("floor-{round}"),
        log_directory: log_dir.to_string_lossy().into_owned(),
        linux: Some(proto::LinuxPodSandboxConfig {
            cgroup_parent: match skiff::cri::config::HostFacts::detect().cgroup_driver() {
                skiff::cri::config::CgroupDriver::Systemd => {
                    format!("kubepods-besteffort-pod{}.slice", uid.replace('-', "_"))
                }
                skiff::cri::config::CgroupDriver::Cgroupfs => format!("/kubepods/besteffort/pod{uid}"),
            },
            ..Default::default()
        }),
        ..Default::default()
    };
    let container = proto::ContainerConfig {
        metadata: Some(proto::ContainerMetadata { name: "c".into(), attempt: 0 }),
        image: Some(proto::ImageSpec { image: "busybox".into(), ..Default::default() }),
        command: vec!["sleep".into(), "3600".into()],
        log_path: format!("c-{round}.log"),
        ..Default::default()
    };
    let mut rt = cri.runtime();
    let t = Instant::now();
    let id = rt
        .run_pod_sandbox(proto::RunPodSandboxRequest { config: Some(sandbox.clone()), runtime_handler: String::new() })
        .await
        .expect("RunPodSandbox")
        .into_inner()
        .pod_sandbox_id;
    let cid = rt
        .create_container(proto::CreateContainerRequest {
            pod_sandbox_id: id.clone(),
            config: Some(container),
            sandbox_config: Some(sandbox),
        })
        .await
        .expect("CreateContainer")
        .into_inner()
        .container_id;
    rt.start_container(proto::StartContainerRequest { container_id: cid }).await.expect("StartContainer");
    let took = t.elapsed();
    let _ = rt.stop_pod_sandbox(proto::StopPodSandboxRequest { pod_sandbox_id: id.clone() }).await;
    let _ = rt.remove_pod_sandbox(proto::RemovePodSandboxRequest { pod_sandbox_id: id }).await;
    took
}

fn main() {
    if let Some(why) = node::skip_reason() {
        println!("SKIPPED: the node benchmark runs real pods and {why}");
        return;
    }
    let mut b = node::Box::start_with("bench", &["--disable-agent"]);
    let agent = start_agent(&b);
    let netns = std::fs::File::open(format!("/var/run/netns/{}", b.netns)).expect("netns");
    let kubeconfig = b.kubeconfig();
    let socket = b.socket();
    let floor_logs = b.dir.path().join("floor-logs");
    std::fs::create_dir_all(&floor_logs).expect("log dir");
    let containerd_pid: u32 = {
        let pid_file = b.data_dir().join("agent").join("containerd").join("containerd.pid");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(pid) = std::fs::read_to_string(&pid_file).ok().and_then(|s| s.trim().parse().ok()) {
                break pid;
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not start:\n{}",
                node::tail(&std::fs::read_to_string(b.dir.path().join("agent.log")).unwrap_or_default(), 40)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let agent_pid = agent.0.id();

    // The API lives in the namespace: this thread joins it, and its runtime's sockets with it.
    let report = std::thread::spawn(move || {
        nix::sched::setns(netns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async move {
            let kc = kube::config::Kubeconfig::read_from(&kubeconfig).expect("kubeconfig");
            let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.expect("config");
            let client = Client::try_from(cfg).expect("client");
            let nodes: Api<Node> = Api::all(client.clone());
            let ready_node = |n: Option<&Node>| {
                n.and_then(|n| n.status.as_ref())
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            };
            tokio::time::timeout(Duration::from_secs(60), await_condition(nodes.clone(), "box", ready_node))
                .await
                .expect("node Ready")
                .expect("watch");
            tokio::time::sleep(Duration::from_secs(10)).await;
            let agent_idle = rss_mib(agent_pid);
            eprintln!("agent idle: {}", rss_parts(agent_pid));
            let containerd_idle = rss_mib(containerd_pid);

            let cri = CriClient::connect(&socket, Duration::from_secs(10)).await.expect("CRI");
            let mut floor = Vec::new();
            for round in 0..FLOOR_ROUNDS {
                floor.push(cri_floor(&cri, round, &floor_logs).await);
            }
            let floor = median(floor);

            let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
            let mut single = Vec::new();
            for i in 0..SINGLE_ROUNDS {
                let name = format!("one-{i}");
                let t = Instant::now();
                pods.create(&PostParams::default(), &pod(&name)).await.expect("create");
                wait_ready(&pods, &name).await;
                single.push(t.elapsed());
                delete_all(&pods, &[name]).await;
            }
            let single_p50 = median(single.clone());

            let names: Vec<String> = (0..PODS).map(|i| format!("many-{i:02}")).collect();
            let t = Instant::now();
            futures::future::join_all(names.iter().map(|n| {
                let pods = pods.clone();
                async move { pods.create(&PostParams::default(), &pod(n)).await.expect("create") }
            }))
            .await;
            futures::future::join_all(names.iter().map(|n| wait_ready(&pods, n))).await;
            let all = t.elapsed();
            let agent_busy = rss_mib(agent_pid);
            eprintln!("agent with {PODS} pods: {}", rss_parts(agent_pid));
            let containerd_busy = rss_mib(containerd_pid);
            delete_all(&pods, &names).await;
            (floor, single_p50, single, all, agent_idle, containerd_idle, agent_busy, containerd_busy)
        })
    });
    let (floor, single_p50, single, all, agent_idle, containerd_idle, agent_busy, containerd_busy) =
        report.join().expect("benchmark thread");

    // A restarted agent: how soon does its node post Ready again?
    drop(agent);
    let before = b.ok(&["get", "node", "box", "-o", HEARTBEAT]);
    // Heartbeat times have whole seconds: the next post must fall in a later second to be seen.
    std::thread::sleep(Duration::from_millis(1100));
    let t = Instant::now();
    let agent = start_agent(&b);
    b.wait_for("the restarted agent's node status", Duration::from_secs(30), |b| {
        let out = b.ok(&["get", "node", "box", "-o", HEARTBEAT]);
        out != before && out.ends_with(" True")
    });
    let ready_after_start = t.elapsed();

    // The whole server (control plane and agent) restarted on its data dir.
    drop(agent);
    let before = b.ok(&["get", "node", "box", "-o", HEARTBEAT]);
    std::thread::sleep(Duration::from_millis(1100));
    b.terminate();
    b.extra.clear();
    let t = Instant::now();
    b.launch();
    b.wait_for("the restarted server's node status", Duration::from_secs(30), |b| {
        let out = b.ok(&["get", "node", "box", "-o", HEARTBEAT]);
        out != before && out.ends_with(" True")
    });
    let server_ready = t.elapsed();

    println!(
        "node benchmark ({} CPUs, in a network namespace; skiff agent as its own process)",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    println!("| measure | value | target |");
    println!("|---|---|---|");
    println!("| CRI floor: sandbox + container create and start, median of {FLOOR_ROUNDS} | {:.0} ms | |", ms(floor));
    println!(
        "| one pod, create to Ready, p50 of {SINGLE_ROUNDS} (min {:.0}, max {:.0}) | {:.0} ms | ≤ floor + 100 ms = {:.0} ms |",
        ms(*single.iter().min().expect("rounds")),
        ms(*single.iter().max().expect("rounds")),
        ms(single_p50),
        ms(floor) + 100.0
    );
    println!("| {PODS} pods at once, create to all Ready | {:.1} s | ≤ 10 s |", all.as_secs_f64());
    println!("| agent RSS idle | {agent_idle:.1} MiB | ≤ 25 MiB |");
    println!("| agent RSS with {PODS} pods | {agent_busy:.1} MiB | ≤ 60 MiB |");
    println!("| containerd RSS idle / with {PODS} pods | {containerd_idle:.1} / {containerd_busy:.1} MiB | |");
    println!("| agent + containerd idle | {:.1} MiB | ≤ 80 MiB |", agent_idle + containerd_idle);
    println!("| restarted `skiff agent` to node Ready posted | {:.2} s | |", ready_after_start.as_secs_f64());
    println!(
        "| restarted `skiff server` (existing data dir) to node Ready posted | {:.2} s | ≤ 3 s |",
        server_ready.as_secs_f64()
    );
    drop(b);
}
