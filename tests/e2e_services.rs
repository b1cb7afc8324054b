//! Services on a real node: the service proxy's rules (nftables, and the same again with the
//! iptables backend) carry traffic from the host and from pods to cluster IPs, node ports and
//! load-balancer addresses, refuse traffic to Services without endpoints, keep ClientIP
//! affinity, and let a pod reach itself through its Service.
//! `skiff server` runs with its agent and containerd in a network namespace of the test's own.
//!
//! Needs root, containerd, runc, the CNI plugins, nftables and busybox-static (CI installs
//! them); without them the test prints why and passes without running.

use std::collections::BTreeSet;
use std::time::Duration;

mod images;
mod node;

use node::Box;

const T: Duration = Duration::from_secs(90);

/// A web server answering with its pod's name on port 8080 (named `http`).
fn web_pod_spec() -> serde_json::Value {
    serde_json::json!({
        "containers": [{
            "name": "web", "image": "busybox",
            "command": ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"],
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 1},
        }],
        "terminationGracePeriodSeconds": 1,
    })
}

fn manifests() -> String {
    let web = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": web_pod_spec()}},
    });
    let solo = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "solo", "labels": {"app": "solo"}},
        "spec": web_pod_spec(),
    });
    let client = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}],
                 "terminationGracePeriodSeconds": 1},
    });
    let svc = |name: &str, app: &str, extra: serde_json::Value| {
        let mut spec = serde_json::json!({"selector": {"app": app}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]});
        for (k, v) in extra.as_object().expect("object") {
            spec[k] = v.clone();
        }
        serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec})
    };
    let echo = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "echo", "labels": {"app": "echo"}},
        "spec": {"containers": [{"name": "echo", "image": "busybox",
                    "command": ["sh", "-c", "while true; do nc -l -p 9000 -e cat; done"],
                    "ports": [{"name": "echo", "containerPort": 9000}]}],
                 "terminationGracePeriodSeconds": 1},
    });
    let docs = [
        web,
        solo,
        client,
        echo,
        svc("web", "web", serde_json::json!({})),
        svc(
            "web-np",
            "web",
            serde_json::json!({"type": "NodePort", "ports": [{"name": "http", "port": 80, "targetPort": "http", "nodePort": 30080}]}),
        ),
        svc(
            "web-lb",
            "web",
            serde_json::json!({"type": "LoadBalancer", "ports": [{"name": "http", "port": 8081, "targetPort": "http"}]}),
        ),
        svc("web-sticky", "web", serde_json::json!({"sessionAffinity": "ClientIP"})),
        svc("solo", "solo", serde_json::json!({})),
        svc("nothing", "nothing", serde_json::json!({})),
        svc("echo", "echo", serde_json::json!({"ports": [{"name": "echo", "port": 9000, "targetPort": "echo"}]})),
    ];
    docs.iter().map(|d| serde_yaml::to_string(d).expect("yaml")).collect::<Vec<_>>().join("---\n")
}

/// An HTTP GET with busybox's `nc` (its `wget` crashes in the static build); the script runs
/// on the host or, with `pod`, inside that pod. (success, the body's last line or the error).
fn get(b: &Box, pod: Option<&str>, url: &str) -> (bool, String) {
    let target = url.trim_start_matches("http://").trim_end_matches('/');
    let (host, port) = target.split_once(':').unwrap_or((target, "80"));
    let script = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {host} {port}");
    let out = match pod {
        None => b.exec("busybox", &["sh", "-c", &script]),
        Some(pod) => b.kubectl(&["exec", pod, "--", "sh", "-c", &script]),
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let ok = out.status.success() && stdout.starts_with("HTTP/1.") && stdout.contains(" 200 ");
    if ok {
        (true, stdout.trim_end().lines().last().unwrap_or("").to_string())
    } else {
        (false, format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)).trim().to_string())
    }
}

fn host_get(b: &Box, url: &str) -> (bool, String) {
    get(b, None, url)
}

fn pod_get(b: &Box, pod: &str, url: &str) -> (bool, String) {
    get(b, Some(pod), url)
}

/// A TCP connection from the box's host through busybox's `nc`, which echoes lines back.
struct Connection {
    child: node::KillOnDrop,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Connection {
    fn open(b: &Box, host: &str, port: u16) -> Connection {
        use std::io::BufRead;
        let mut child = std::process::Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", b.netns))
            .args(["busybox", "nc", host, &port.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nc");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Connection { child: node::KillOnDrop(child), lines }
    }

    /// Sends a line and waits up to 10 s for its echo.
    fn round_trip(&mut self, line: &str) -> Option<String> {
        use std::io::Write;
        let stdin = self.child.0.stdin.as_mut()?;
        stdin.write_all(format!("{line}\n").as_bytes()).ok()?;
        stdin.flush().ok()?;
        self.lines.recv_timeout(Duration::from_secs(10)).ok()
    }
}

fn cluster_ip(b: &Box, svc: &str) -> String {
    b.ok(&["get", "service", svc, "-o", "jsonpath={.spec.clusterIP}"])
}

/// Which of the proxy's backends a test runs.
#[derive(Clone, Copy, PartialEq)]
enum Backend {
    Nftables,
    Iptables,
}

impl Backend {
    /// Whether the backend's rules are on the box: skiff's nftables table, or its chains and
    /// the jumps into them.
    fn rules_present(self, b: &Box) -> bool {
        match self {
            Backend::Nftables => b.exec("nft", &["list", "table", "ip", "skiff"]).status.success(),
            Backend::Iptables => {
                let saved = String::from_utf8_lossy(&b.exec("iptables-save", &[]).stdout).into_owned();
                saved.contains(":SKIFF-SERVICES") || saved.contains("skiff service proxy")
            }
        }
    }
}

#[test]
fn cluster_ips_node_ports_and_load_balancers_reach_the_pods() {
    require_node!();
    services_reach_the_pods(Backend::Nftables);
}

/// The same with `--proxy-mode iptables`: the iptables-restore backend renders the same model.
#[test]
fn the_iptables_backend_serves_the_same() {
    require_node!();
    services_reach_the_pods(Backend::Iptables);
}

fn services_reach_the_pods(backend: Backend) {
    let mut b = match backend {
        Backend::Nftables => Box::start("svc"),
        Backend::Iptables => Box::start_with("svcipt", &["--proxy-mode", "iptables"]),
    };
    b.apply(&manifests());
    b.wait_for("the web pods, solo, echo and client Ready", T, |b| b.ready_pods() == 5);
    let pods: BTreeSet<String> = b
        .ok(&["get", "pods", "-l", "app=web", "-o", "jsonpath={.items[*].metadata.name}"])
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(pods.len(), 2);
    let web = cluster_ip(&b, "web");

    // From the host, through the cluster IP, to both pods.
    b.wait_for("the cluster IP to answer from the host", T, |b| host_get(b, &format!("http://{web}/")).0);
    let mut seen = BTreeSet::new();
    for _ in 0..20 {
        let (ok, body) = host_get(&b, &format!("http://{web}/"));
        assert!(ok, "{body}");
        assert!(pods.contains(&body), "{body} is not one of {pods:?}");
        seen.insert(body);
    }
    assert_eq!(seen, pods, "20 requests should reach both endpoints");

    // From a pod, by cluster IP.
    let (ok, body) = pod_get(&b, "client", &format!("http://{web}/"));
    assert!(ok && pods.contains(&body), "{body}");

    // A node port on the node's address, from the host and from a pod.
    let (ok, body) = host_get(&b, &format!("http://{}:30080/", b.node_ip));
    assert!(ok && pods.contains(&body), "{body}");
    let (ok, body) = pod_get(&b, "client", &format!("http://{}:30080/", b.node_ip));
    assert!(ok && pods.contains(&body), "{body}");

    // The load balancer's ingress is the node's address, and it answers there.
    b.wait_for("the load balancer's ingress", T, |b| {
        b.ok(&["get", "service", "web-lb", "-o", "jsonpath={.status.loadBalancer.ingress[*].ip}"]) == b.node_ip
    });
    b.wait_for("the load balancer to answer", T, |b| host_get(b, &format!("http://{}:8081/", b.node_ip)).0);
    let (_, body) = host_get(&b, &format!("http://{}:8081/", b.node_ip));
    assert!(pods.contains(&body), "{body}");
    // Changing its type back to ClusterIP clears the ingress and closes the port.
    b.ok(&[
        "patch",
        "service",
        "web-lb",
        "-p",
        r#"{"spec":{"type":"ClusterIP","ports":[{"name":"http","port":8081,"targetPort":"http","nodePort":null}]}}"#,
    ]);
    b.wait_for("the ingress cleared", T, |b| {
        b.json(&["get", "service", "web-lb"])["status"]["loadBalancer"] == serde_json::json!({})
    });
    b.wait_for("the node address to stop answering on 8081", T, |b| {
        !host_get(b, &format!("http://{}:8081/", b.node_ip)).0
    });
    // And to NodePort again: the node port answers.
    b.ok(&[
        "patch",
        "service",
        "web-lb",
        "-p",
        r#"{"spec":{"type":"NodePort","ports":[{"name":"http","port":8081,"targetPort":"http","nodePort":30081}]}}"#,
    ]);
    b.wait_for("the node port of the changed Service", T, |b| host_get(b, &format!("http://{}:30081/", b.node_ip)).0);

    // ClientIP affinity: every request from one client lands on the same pod.
    let sticky = cluster_ip(&b, "web-sticky");
    let first = host_get(&b, &format!("http://{sticky}/")).1;
    assert!(pods.contains(&first), "{first}");
    for _ in 0..10 {
        assert_eq!(host_get(&b, &format!("http://{sticky}/")).1, first);
    }

    // Hairpin: a pod reaches itself through its own Service.
    let solo = cluster_ip(&b, "solo");
    let (ok, body) = pod_get(&b, "solo", &format!("http://{solo}/"));
    assert!(ok && body == "solo", "{body}");

    // No endpoints: refused at once, from the host and from a pod, not left to time out.
    let nothing = cluster_ip(&b, "nothing");
    let (ok, text) = host_get(&b, &format!("http://{nothing}/"));
    assert!(!ok && text.contains("Connection refused"), "{text}");
    let (ok, text) = pod_get(&b, "client", &format!("http://{nothing}/"));
    assert!(!ok && text.contains("Connection refused"), "{text}");
    // A cluster IP answers only on its Service's ports.
    let (ok, text) = host_get(&b, &format!("http://{web}:81/"));
    assert!(!ok && text.contains("Connection refused"), "{text}");

    // Endpoints follow the pods: scaled to zero, the Service refuses; back to one, it answers.
    b.ok(&["scale", "deployment", "web", "--replicas=0"]);
    b.wait_for("the cluster IP to refuse", T, |b| {
        host_get(b, &format!("http://{web}/")).1.contains("Connection refused")
    });
    b.ok(&["scale", "deployment", "web", "--replicas=1"]);
    b.wait_for("the cluster IP to answer again", T, |b| host_get(b, &format!("http://{web}/")).0);

    // A connection through a cluster IP outlives a restart of skiff: the restarted proxy
    // replaces its table, and the connection keeps its NAT in conntrack.
    let echo = cluster_ip(&b, "echo");
    let mut conn = Connection::open(&b, &echo, 9000);
    assert_eq!(conn.round_trip("before"), Some("before".to_string()));
    b.kill9();
    b.launch();
    b.wait_for("the proxy's first sync after the restart", T, |b| {
        b.log().matches("service proxy rules replaced").count() >= 2
    });
    assert_eq!(conn.round_trip("after"), Some("after".to_string()), "the connection broke with the restart");

    // The rules are the backend's own; `skiff agent --cleanup` removes them.
    let lo = String::from_utf8_lossy(&b.exec("ip", &["-o", "addr", "show", "dev", "lo"]).stdout).into_owned();
    assert!(lo.contains("10.43.0.10/32"), "the cluster DNS address is on lo: {lo}");
    assert!(backend.rules_present(&b));
    let other = match backend {
        Backend::Nftables => Backend::Iptables,
        Backend::Iptables => Backend::Nftables,
    };
    assert!(!other.rules_present(&b), "only the chosen backend writes rules");
    b.ok(&["delete", "pods", "--all", "--grace-period=0", "--force", "--wait=false"]);
    b.ok(&["delete", "deployment", "web"]);
    b.terminate();
    let bin = node::skiff_bin();
    let out = b.exec(bin.to_str().expect("utf8"), &["agent", "--cleanup"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!backend.rules_present(&b), "the rules are still there");
    // So is the cluster DNS address the node answered on.
    let lo = String::from_utf8_lossy(&b.exec("ip", &["-o", "addr", "show", "dev", "lo"]).stdout).into_owned();
    assert!(!lo.contains("10.43.0.10"), "{lo}");
}

/// A stand-in for the internet's DNS: answers `A outside.example.` with 192.0.2.44 and
/// NXDOMAIN for everything else, on 127.0.0.1:53 inside the box's namespace (a thread that
/// entered it). Counts the queries it saw.
fn stub_upstream(netns: &str) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = seen.clone();
    let ns = std::fs::File::open(format!("/var/run/netns/{netns}")).expect("netns");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let sock = std::net::UdpSocket::bind("127.0.0.1:53").expect("bind the stub upstream");
        tx.send(()).expect("ready");
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            if n < 12 {
                continue;
            }
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            // The question ends after the name's zero byte and 4 bytes of type and class.
            let Some(end) = buf[12..n].iter().position(|b| *b == 0).map(|p| 12 + p + 5) else { continue };
            let name = &buf[12..end - 4];
            let known = name.eq_ignore_ascii_case(b"\x07outside\x07example\x00") && buf[end - 4..end - 2] == [0, 1];
            let mut r = buf[..end].to_vec();
            r[2] = 0x81; // response, recursion desired
            r[3] = if known { 0x80 } else { 0x83 }; // recursion available; NXDOMAIN
            r[6..12].copy_from_slice(&[0, u8::from(known), 0, 0, 0, 0]);
            if known {
                r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 44]);
            }
            let _ = sock.send_to(&r, from);
        }
    });
    rx.recv_timeout(Duration::from_secs(5)).expect("the stub upstream started");
    seen
}

fn nslookup(b: &Box, args: &[&str]) -> (bool, String) {
    let mut all = vec!["exec", "client", "--", "nslookup"];
    all.extend_from_slice(args);
    let out = b.kubectl(&all);
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn pods_resolve_services_statefulset_pods_and_outside_names() {
    require_node!();
    let dir = tempfile::tempdir().expect("tempdir");
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(&resolv, "nameserver 127.0.0.1\n").expect("resolv.conf");
    let b = Box::start_with("dns", &["--resolv-conf", resolv.to_str().expect("utf8")]);
    let upstream_queries = stub_upstream(&b.netns);
    let db = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
        "spec": {"replicas": 2, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                 "template": {"metadata": {"labels": {"app": "db"}}, "spec": web_pod_spec()}},
    });
    let docs = [
        serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client"},
            "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}],
                     "terminationGracePeriodSeconds": 1}}),
        serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"selector": {"app": "db"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}),
        serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"},
            "spec": {"clusterIP": "None", "selector": {"app": "db"}, "ports": [{"name": "http", "port": 8080}]}}),
        serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ext"},
            "spec": {"type": "ExternalName", "externalName": "outside.example"}}),
        db,
    ];
    b.apply_all(&docs);
    b.wait_for("client, db-0 and db-1 Ready", T, |b| {
        ["client", "db-0", "db-1"].iter().all(|p| {
            b.pod(p).is_some_and(|p| {
                p["status"]["conditions"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
            })
        })
    });
    let web = cluster_ip(&b, "web");
    let ip = |pod: &str| b.pod(pod).expect("pod")["status"]["podIP"].as_str().expect("pod IP").to_string();
    let (db0, db1) = (ip("db-0"), ip("db-1"));

    // A Service by its FQDN, and by its short name through the search path. (busybox's
    // nslookup applies the search path only to names without a dot, asks every search domain at
    // once and exits 1 when any of them is NXDOMAIN, so only the answer counts there.)
    let (ok, out) = nslookup(&b, &["-type=A", "web.default.svc.cluster.local"]);
    assert!(ok && out.contains(&format!("Address: {web}")), "{out}");
    let (_, out) = nslookup(&b, &["-type=A", "web"]);
    assert!(out.contains("Name:\tweb.default.svc.cluster.local") && out.contains(&format!("Address: {web}")), "{out}");
    // A headless Service: its ready pods; a StatefulSet pod by its own name.
    let (ok, out) = nslookup(&b, &["-type=A", "db.default.svc.cluster.local"]);
    assert!(ok && out.contains(&format!("Address: {db0}")) && out.contains(&format!("Address: {db1}")), "{out}");
    let (ok, out) = nslookup(&b, &["-type=A", "db-1.db.default.svc.cluster.local"]);
    assert!(ok && out.contains(&format!("Address: {db1}")) && !out.contains(&db0), "{out}");
    // SRV for a named port.
    let (ok, out) = nslookup(&b, &["-type=SRV", "_http._tcp.web.default.svc.cluster.local"]);
    assert!(ok && out.contains("web.default.svc.cluster.local"), "{out}");
    // A missing name in the cluster domain.
    let (ok, out) = nslookup(&b, &["-type=A", "nothing.default.svc.cluster.local"]);
    assert!(!ok && out.contains("NXDOMAIN"), "{out}");
    // Outside names go to the host's resolver (the stub), as does an ExternalName's target.
    let (ok, out) = nslookup(&b, &["-type=A", "outside.example"]);
    assert!(ok && out.contains("Address: 192.0.2.44"), "{out}");
    assert!(upstream_queries.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    let (ok, out) = nslookup(&b, &["-type=A", "ext.default.svc.cluster.local"]);
    assert!(ok && out.contains("outside.example") && out.contains("192.0.2.44"), "{out}");

    // The cluster DNS address is held by kube-system/kube-dns, as clients expect, and named.
    assert_eq!(
        b.ok(&["get", "service", "-n", "kube-system", "kube-dns", "-o", "jsonpath={.spec.clusterIP}"]),
        "10.43.0.10"
    );
    let (ok, out) = nslookup(&b, &["-type=PTR", "10.0.43.10.in-addr.arpa"]);
    assert!(ok && out.contains("kube-dns.kube-system.svc.cluster.local"), "{out}");

    // A new Service is answered as soon as it exists.
    b.ok(&["create", "service", "clusterip", "late", "--tcp=80:8080"]);
    let late = cluster_ip(&b, "late");
    b.wait_for("the new Service in DNS", Duration::from_secs(10), |b| {
        nslookup(b, &["-type=A", "late.default.svc.cluster.local"]).1.contains(&format!("Address: {late}"))
    });
}

/// A UDP client inside the box's namespace: one datagram every 200 ms from port 40000 to one
/// address, until dropped (busybox's `nc` has no UDP).
struct UdpStream {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl UdpStream {
    fn start(netns: &str, to: std::net::SocketAddr) -> UdpStream {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let ns = std::fs::File::open(format!("/var/run/netns/{netns}")).expect("netns");
        std::thread::spawn(move || {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let sock = std::net::UdpSocket::bind("0.0.0.0:40000").expect("bind the UDP client");
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = sock.send_to(b"x\n", to);
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        UdpStream { stop }
    }
}

impl Drop for UdpStream {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Services whose endpoints are not the usual pods: a named target port only one of two pods
/// defines, a target port no pod defines, an endpoint outside every pod CIDR (a process on the
/// node itself), 1,000 endpoints in one slice; a UDP flow that moves when its endpoint leaves;
/// and node ports on 127.0.0.1 once the host routes DNATed loopback traffic (`route_localnet`).
#[test]
fn odd_endpoints_and_localhost_node_ports() {
    require_node!();
    let mut b = Box::start("odd");
    let plain = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "plain", "labels": {"app": "mixed"}},
        "spec": {"containers": [{"name": "web", "image": "busybox",
                    "command": ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"],
                    "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}}],
                 "terminationGracePeriodSeconds": 1},
    });
    let named = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "named", "labels": {"app": "mixed"}},
        "spec": web_pod_spec(),
    });
    let svc = |name: &str, spec: serde_json::Value| serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec});
    b.apply_all(&[
        plain,
        named,
        svc("mixed", serde_json::json!({"selector": {"app": "mixed"}, "ports": [{"port": 80, "targetPort": "http"}]})),
        svc("noport", serde_json::json!({"selector": {"app": "mixed"}, "ports": [{"port": 80, "targetPort": "nope"}]})),
        svc(
            "mixed-ext",
            serde_json::json!({"selector": {"app": "mixed"}, "externalIPs": [b.node_ip.clone()],
                               "ports": [{"port": 8083, "targetPort": "http"}]}),
        ),
        svc(
            "mixed-np",
            serde_json::json!({"type": "NodePort", "selector": {"app": "mixed"},
                               "ports": [{"port": 80, "targetPort": "http", "nodePort": 30082}]}),
        ),
    ]);
    b.wait_for("plain and named Ready", T, |b| b.ready_pods() == 2);

    // Only the pod that names the port is an endpoint.
    let mixed = cluster_ip(&b, "mixed");
    b.wait_for("the mixed Service to answer", T, |b| host_get(b, &format!("http://{mixed}/")).0);
    for _ in 0..10 {
        assert_eq!(host_get(&b, &format!("http://{mixed}/")), (true, "named".to_string()));
    }
    // An external IP (here the node's own address) answers on the Service's port.
    let (ok, body) = host_get(&b, &format!("http://{}:8083/", b.node_ip));
    assert!(ok && body == "named", "{body}");
    // A target port no pod has: no endpoints, so refused.
    let noport = cluster_ip(&b, "noport");
    let (ok, text) = host_get(&b, &format!("http://{noport}/"));
    assert!(!ok && text.contains("Connection refused"), "{text}");

    // 1,000 endpoints in one slice (nothing answers on them): the proxy takes them and keeps
    // serving; a slice with 1,001 is refused by the API.
    let endpoints: Vec<serde_json::Value> =
        (0..1000).map(|i| serde_json::json!({"addresses": [format!("10.99.{}.{}", i / 250, i % 250 + 1)]})).collect();
    let big_slice = |endpoints: &[serde_json::Value]| {
        serde_json::json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "big-1", "labels": {"kubernetes.io/service-name": "big"}},
            "addressType": "IPv4", "ports": [{"name": "", "port": 8080, "protocol": "TCP"}], "endpoints": endpoints})
    };
    b.apply_all(&[svc("big", serde_json::json!({"ports": [{"port": 80}]})), big_slice(&endpoints)]);
    b.wait_for("the 1,000 endpoints in the rules", T, |b| {
        String::from_utf8_lossy(&b.exec("nft", &["list", "table", "ip", "skiff"]).stdout)
            .contains("numgen random mod 1000")
    });
    let mut too_many = endpoints.clone();
    too_many.push(serde_json::json!({"addresses": ["10.99.9.9"]}));
    let (code, _, err) =
        b.kubectl_with(&[], &["apply", "-f", "-"], Some(&serde_yaml::to_string(&big_slice(&too_many)).expect("yaml")));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("endpoints: Too many: 1001: must have at most 1000 items"), "{err}");

    // An endpoint outside every pod CIDR: a web server on the node's own address.
    let www = b.dir.path().join("www");
    std::fs::create_dir_all(&www).expect("www");
    std::fs::write(www.join("index.html"), "on the node\n").expect("index");
    let _host_server = node::KillOnDrop(
        std::process::Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", b.netns))
            .args(["busybox", "httpd", "-f", "-p", &format!("{}:9100", b.node_ip), "-h"])
            .arg(&www)
            .spawn()
            .expect("httpd"),
    );
    b.apply_all(&[
        svc("outside", serde_json::json!({"ports": [{"port": 80, "targetPort": 9100}]})),
        serde_json::json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "outside-1", "labels": {"kubernetes.io/service-name": "outside"}},
            "addressType": "IPv4", "ports": [{"name": "", "port": 9100, "protocol": "TCP"}],
            "endpoints": [{"addresses": [b.node_ip.clone()], "conditions": {"ready": true}}]}),
    ]);
    let outside = cluster_ip(&b, "outside");
    b.wait_for("the node's own server through a cluster IP", T, |b| {
        host_get(b, &format!("http://{outside}/")) == (true, "on the node".to_string())
    });

    // A UDP client that keeps sending keeps its conntrack entry alive: when its endpoint
    // leaves, the proxy deletes the entry and the next datagram goes to an endpoint that is
    // still there.
    let sleeper = |name: &str| {
        serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "udp"}},
            "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}],
                     "terminationGracePeriodSeconds": 1}})
    };
    b.apply_all(&[
        sleeper("udp-a"),
        svc("udp", serde_json::json!({"selector": {"app": "udp"}, "ports": [{"port": 5353, "protocol": "UDP"}]})),
    ]);
    b.wait_for("udp-a Ready", T, |b| b.ready_pods() == 3);
    let udp = cluster_ip(&b, "udp");
    let a_ip = b.pod("udp-a").expect("udp-a")["status"]["podIP"].as_str().expect("IP").to_string();
    let _client = UdpStream::start(&b.netns, format!("{udp}:5353").parse().expect("address"));
    let flows = |b: &Box| {
        String::from_utf8_lossy(&b.exec("conntrack", &["-L", "-p", "udp", "--orig-dst", &udp]).stdout).into_owned()
    };
    b.wait_for("the UDP flow to udp-a", T, |b| flows(b).contains(&format!("src={a_ip} ")));
    b.apply_all(&[sleeper("udp-b")]);
    b.wait_for("udp-b Ready", T, |b| b.ready_pods() == 4);
    let b_ip = b.pod("udp-b").expect("udp-b")["status"]["podIP"].as_str().expect("IP").to_string();
    b.ok(&["delete", "pod", "udp-a", "--wait=false"]);
    b.wait_for("the UDP flow moved to udp-b", T, |b| flows(b).contains(&format!("src={b_ip} ")));

    // Node ports answer on 127.0.0.1 only once the host routes DNATed loopback traffic; the
    // proxy reads that at its start.
    let (ok, _) = host_get(&b, "http://127.0.0.1:30082/");
    assert!(!ok, "a node port answered on 127.0.0.1 without route_localnet");
    let out = b.exec("busybox", &["sh", "-c", "echo 1 > /proc/sys/net/ipv4/conf/all/route_localnet"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    b.kill9();
    b.launch();
    b.wait_for("the proxy's first sync after the restart", T, |b| {
        b.log().matches("service proxy rules replaced").count() >= 2
    });
    b.wait_for("the node port on 127.0.0.1", T, |b| {
        host_get(b, "http://127.0.0.1:30082/") == (true, "named".to_string())
    });
}

/// A pod reaches the API server the way client libraries do from inside a cluster: through the
/// `kubernetes` Service (the `KUBERNETES_SERVICE_HOST` address, and the name
/// `kubernetes.default.svc` through the cluster DNS), with its projected service account token,
/// and RBAC applies to it. The pod runs the machine's own `kubectl`. A pod that opts out of the
/// token has none.
#[test]
fn a_pod_reaches_the_api_through_the_kubernetes_service() {
    require_node!();
    let kubectl = std::fs::read("/usr/bin/kubectl").expect("kubectl");
    let image = images::oci_archive_with("docker.io/library/kubectl:test", &[("bin/kubectl", &kubectl)]);
    let b = Box::start_with_images("api", &[], &[("kubectl.tar", image)]);
    b.apply_all(&[
        serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "reader"}}),
        serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "reader-view"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": "default"}]}),
        serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "inside"},
            "spec": {"serviceAccountName": "reader",
                     "containers": [{"name": "c", "image": "docker.io/library/kubectl:test",
                                     "imagePullPolicy": "IfNotPresent", "command": ["sleep", "3600"],
                                     "env": [{"name": "HOME", "value": "/tmp"}]}],
                     "terminationGracePeriodSeconds": 1}}),
        serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sealed"},
            "spec": {"serviceAccountName": "reader", "automountServiceAccountToken": false,
                     "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}],
                     "terminationGracePeriodSeconds": 1}}),
    ]);
    b.wait_for("the kubectl and sealed pods Ready", T, |b| b.ready_pods() == 2);
    // `automountServiceAccountToken: false`: no token in the container.
    let out = b.kubectl(&["exec", "sealed", "--", "ls", "/var/run/secrets/kubernetes.io/serviceaccount"]);
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let inside = |script: &str| {
        let out = b.kubectl(&["exec", "inside", "--", "sh", "-c", script]);
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    // In-cluster configuration: the Service's address from the environment, the token and CA
    // from the projected volume.
    let (ok, out) = inside("echo $KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT; kubectl get pods -o name");
    assert!(ok, "{out}");
    assert!(out.starts_with(&format!("{}:443\n", cluster_ip(&b, "kubernetes"))), "{out}");
    assert!(out.contains("pod/inside"), "{out}");
    // By name, verified against the projected CA.
    let sa = "/var/run/secrets/kubernetes.io/serviceaccount";
    let (ok, out) = inside(&format!(
        "kubectl --server https://kubernetes.default.svc --certificate-authority {sa}/ca.crt --token \"$(cat {sa}/token)\" get pods -o name"
    ));
    assert!(ok && out.contains("pod/inside"), "{out}");
    // `view` lists, and does not create.
    let (ok, out) = inside("kubectl run other --image=busybox --restart=Never");
    assert!(!ok, "{out}");
    assert!(
        out.contains(r#"pods is forbidden: User "system:serviceaccount:default:reader" cannot create resource "pods" in API group "" in the namespace "default""#),
        "{out}"
    );
}
