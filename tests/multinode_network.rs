//! Three nodes on a LAN of the test's own (`node::Lan`): `skiff server` with its agent on one
//! host and two joined `skiff agent`s on the others, each with its own containerd. Pods on
//! different nodes reach each other through the VXLAN overlay with their own addresses, a
//! cluster IP works from every node, `externalTrafficPolicy: Local` answers only where an
//! endpoint runs (keeping the client's address; its health-check node port says where), and a
//! node's removal takes its routes, its endpoints and its pods' names off every other node.
//! With `--overlay host-gw` the same traffic takes plain routes through the nodes' addresses.
//!
//! Needs root, containerd, runc, the CNI plugins, nftables and busybox-static; without them
//! the test prints why and passes without running.

use std::time::Duration;

mod images;
mod node;

use node::{Agent, Box, Host, Lan, node_ready, server_token, wait_until};

const T: Duration = Duration::from_secs(90);

/// busybox httpd answering `/cgi-bin/who` with the client's address and its pod's name.
fn echo_pod(name: &str, node: &str, app: &str) -> serde_json::Value {
    let script = "mkdir -p /www/cgi-bin && printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho \"$REMOTE_ADDR $(hostname)\"\\n' > /www/cgi-bin/who && chmod +x /www/cgi-bin/who && exec httpd -f -p 8080 -h /www";
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "containers": [{"name": "web", "image": "busybox", "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", script], "ports": [{"name": "http", "containerPort": 8080}],
                "readinessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 1}}],
            "terminationGracePeriodSeconds": 1,
        },
    })
}

fn client_pod(name: &str, node: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"nodeSelector": {"kubernetes.io/hostname": node},
                 "containers": [{"name": "c", "image": "busybox", "imagePullPolicy": "IfNotPresent", "command": ["sleep", "3600"]}],
                 "terminationGracePeriodSeconds": 1},
    })
}

/// GET `/cgi-bin/who` with busybox's `nc` from a pod (or the host with `None`), 3 s at most;
/// the answer's last line, or the error.
fn who(b: &Box, from: Option<&str>, host: &str, port: u16) -> Result<String, String> {
    let script = format!("printf 'GET /cgi-bin/who HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {host} {port}");
    let out = match from {
        None => b.exec("busybox", &["sh", "-c", &script]),
        Some(pod) => b.kubectl(&["exec", pod, "--", "sh", "-c", &script]),
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() && stdout.starts_with("HTTP/1.") && stdout.contains(" 200 ") {
        // httpd listens on IPv6 too and names IPv4 clients in their mapped form.
        let last = stdout.trim_end().lines().last().unwrap_or("").to_string();
        Ok(last.replace("[::ffff:", "").replace(']', ""))
    } else {
        Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)).trim().to_string())
    }
}

fn pod_ip(b: &Box, name: &str) -> String {
    b.pod(name).expect("pod")["status"]["podIP"].as_str().expect("pod IP").to_string()
}

fn in_host(host: &Host, cmd: &str, args: &[&str]) -> String {
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{}", host.netns))
        .arg(cmd)
        .args(args)
        .output()
        .expect("nsenter");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn pods_and_services_span_three_nodes() {
    require_node!();
    let lan = Lan::new("net");
    let b = Box::start_in(lan.host("srv"), &["--node-monitor-grace-period", "5"]);
    let (h1, h2) = (lan.host("n1"), lan.host("n2"));
    let token = server_token(&b);
    for dir in ["n1", "n2"] {
        Agent::give_images(&b, dir);
    }
    let a1 = Agent::start(&b, &h1, "n1", "n1", 20351, Some(&token));
    let mut a2 = Agent::start(&b, &h2, "n2", "n2", 20352, Some(&token));
    let (log1, log2) = (a1.log.clone(), a2.log.clone());
    let logs = || {
        let read = |p: &std::path::PathBuf| node::tail(&std::fs::read_to_string(p).unwrap_or_default(), 40);
        format!("--- n1 ---\n{}\n--- n2 ---\n{}", read(&log1), read(&log2))
    };
    wait_until("three Ready nodes", T, || ["box", "n1", "n2"].iter().all(|n| node_ready(&b, n)), logs);

    let docs = [
        echo_pod("echo-n1", "n1", "echo"),
        echo_pod("spread-n2", "n2", "spread"),
        echo_pod("spread-n1", "n1", "spread"),
        client_pod("client-n2", "n2"),
        client_pod("client-box", "box"),
        serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo"},
            "spec": {"selector": {"app": "echo"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}),
        serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo-local"},
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "healthCheckNodePort": 30091,
                     "selector": {"app": "echo"},
                     "ports": [{"name": "http", "port": 80, "targetPort": "http", "nodePort": 30090}]}}),
        serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "spread"},
            "spec": {"clusterIP": "None", "selector": {"app": "spread"}, "ports": [{"name": "http", "port": 8080}]}}),
    ];
    b.apply_all(&docs);
    b.wait_for("five pods Ready", T, |b| b.ready_pods() == 5);
    let (echo_ip, client_n2_ip) = (pod_ip(&b, "echo-n1"), pod_ip(&b, "client-n2"));

    // Pod to pod across nodes, with the client's own address.
    wait_until(
        "client-n2 to reach echo-n1",
        T,
        || who(&b, Some("client-n2"), &echo_ip, 8080).is_ok(),
        || format!("{:?}\n{}", who(&b, Some("client-n2"), &echo_ip, 8080), logs()),
    );
    assert_eq!(who(&b, Some("client-n2"), &echo_ip, 8080), Ok(format!("{client_n2_ip} echo-n1")));
    // A cluster IP from a pod on another node, and from the server's host.
    let echo = b.ok(&["get", "service", "echo", "-o", "jsonpath={.spec.clusterIP}"]);
    let got = who(&b, Some("client-box"), &echo, 80).expect("client-box to the cluster IP");
    assert!(got.ends_with(" echo-n1"), "{got}");
    let got = who(&b, None, &echo, 80).expect("the server's host to the cluster IP");
    assert!(got.ends_with(" echo-n1"), "{got}");

    // externalTrafficPolicy: Local answers on the node with the endpoint, with the client's
    // address, and nowhere else.
    let got = who(&b, None, &h1.ip, 30090).expect("n1's node port");
    assert_eq!(got, format!("{} echo-n1", b.node_ip));
    assert!(who(&b, None, &h2.ip, 30090).is_err(), "n2 has no local endpoint and must not answer");
    // Its health-check node port tells a load balancer the same: n1 has one local endpoint,
    // n2 none.
    let health = |host: &str| {
        let script = format!("printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {host} 30091");
        String::from_utf8_lossy(&b.exec("busybox", &["sh", "-c", &script]).stdout).into_owned()
    };
    // Each node opens the port once its own proxy has seen the Service: wait for both.
    let status_line = |host: &str, code: &str| health(host).lines().next().is_some_and(|l| l.contains(code));
    wait_until(
        "both nodes' health-check node port",
        Duration::from_secs(10),
        || status_line(&h1.ip, " 200 ") && status_line(&h2.ip, " 503 "),
        || format!("n1:\n{}\nn2:\n{}\n{}", health(&h1.ip), health(&h2.ip), logs()),
    );
    let (n1, n2) = (health(&h1.ip), health(&h2.ip));
    let body: serde_json::Value = serde_json::from_str(n1.lines().last().unwrap_or("")).expect("JSON");
    assert_eq!(
        body,
        serde_json::json!({"service": {"namespace": "default", "name": "echo-local"}, "localEndpoints": 1,
                           "serviceProxyHealthy": true})
    );
    assert!(n2.lines().next().is_some_and(|l| l.contains(" 503 ")), "{n2}");
    assert!(n2.contains(r#""localEndpoints":0"#), "{n2}");

    // The headless Service names pods of both nodes, on every node's DNS.
    let spread_n2 = pod_ip(&b, "spread-n2");
    let lookup = |pod: &str| {
        let out = b.kubectl(&["exec", pod, "--", "nslookup", "-type=A", "spread.default.svc.cluster.local"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    wait_until("spread-n2 in box's DNS", T, || lookup("client-box").contains(&spread_n2), logs);

    // n2 goes away: its routes, its endpoints and its pods' names leave the other nodes.
    let n2_cidr = b.ok(&["get", "node", "n2", "-o", "jsonpath={.spec.podCIDR}"]);
    assert!(in_host(&b.host(), "ip", &["route", "show", "proto", "83"]).contains(&n2_cidr));
    assert!(in_host(&h1, "ip", &["route", "show", "proto", "83"]).contains(&n2_cidr));
    a2.kill();
    b.ok(&["delete", "node", "n2"]);
    wait_until(
        "n2's route gone from box and n1",
        Duration::from_secs(20),
        || {
            !in_host(&b.host(), "ip", &["route", "show", "proto", "83"]).contains(&n2_cidr)
                && !in_host(&h1, "ip", &["route", "show", "proto", "83"]).contains(&n2_cidr)
        },
        logs,
    );
    wait_until(
        "spread-n2 gone from box's DNS",
        Duration::from_secs(60),
        || !lookup("client-box").contains(&spread_n2),
        logs,
    );
    assert!(lookup("client-box").contains(&pod_ip(&b, "spread-n1")));
}

/// `--overlay host-gw`: no VXLAN device, a plain route to the other node's pod CIDR through its
/// address, and pods reach each other across it with their own addresses.
#[test]
fn host_gw_routes_pod_cidrs_through_node_addresses() {
    require_node!();
    let lan = Lan::new("hgw");
    let b = Box::start_in(lan.host("srv"), &["--overlay", "host-gw"]);
    let h1 = lan.host("n1");
    let token = server_token(&b);
    Agent::give_images(&b, "n1");
    let a1 = Agent::start_with(&b, &h1, "n1", "n1", 20353, Some(&token), &["--overlay", "host-gw"]);
    let log1 = a1.log.clone();
    let logs = || node::tail(&std::fs::read_to_string(&log1).unwrap_or_default(), 40);
    wait_until("two Ready nodes", T, || ["box", "n1"].iter().all(|n| node_ready(&b, n)), logs);
    b.apply_all(&[echo_pod("echo-n1", "n1", "echo"), client_pod("client-box", "box")]);
    b.wait_for("two pods Ready", T, |b| b.ready_pods() == 2);
    let n1_cidr = b.ok(&["get", "node", "n1", "-o", "jsonpath={.spec.podCIDR}"]);
    wait_until(
        "box's route to n1's pods",
        T,
        || {
            in_host(&b.host(), "ip", &["route", "show", "proto", "83"])
                .contains(&format!("{n1_cidr} via {} dev eth0", h1.ip))
        },
        || format!("{}\n{}", in_host(&b.host(), "ip", &["route", "show", "proto", "83"]), logs()),
    );
    assert!(!in_host(&b.host(), "ip", &["-o", "link", "show"]).contains("skiff.1"), "host-gw makes no VXLAN device");
    let (echo_ip, client_ip) = (pod_ip(&b, "echo-n1"), pod_ip(&b, "client-box"));
    wait_until(
        "client-box to reach echo-n1",
        T,
        || who(&b, Some("client-box"), &echo_ip, 8080).is_ok(),
        || format!("{:?}\n{}", who(&b, Some("client-box"), &echo_ip, 8080), logs()),
    );
    assert_eq!(who(&b, Some("client-box"), &echo_ip, 8080), Ok(format!("{client_ip} echo-n1")));
}
