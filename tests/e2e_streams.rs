//! kubectl's streams to real pods: `logs -f`, `exec`, `attach` and `port-forward` through the
//! API server to the agent's kubelet API and containerd, inside a network namespace of the
//! test's own. Each runs with kubectl 1.32's default transport (WebSocket) and with SPDY.
//!
//! Needs root, containerd, runc, the CNI plugins and busybox-static (CI installs them); without
//! them the test prints why and passes without running.

use std::io::Read;
use std::time::{Duration, Instant};

mod images;
mod node;

use node::{Box, KillOnDrop};

/// kubectl 1.32's transports: its default (WebSocket) and SPDY only.
const TRANSPORTS: &[(&str, &[(&str, &str)])] = &[
    ("websocket", &[]),
    ("spdy", &[("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false"), ("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false")]),
];

const POD: &str = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "s"},
 "spec": {"containers": [
   {"name": "ticker", "image": "busybox",
    "command": ["sh", "-c", "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done"]},
   {"name": "web", "image": "busybox",
    "command": ["sh", "-c", "mkdir -p /www && echo hello-from-pod > /www/index.html && exec httpd -f -p 8080 -h /www"],
    "ports": [{"containerPort": 8080}]},
   {"name": "reader", "image": "busybox", "stdin": true,
    "command": ["sh", "-c", "while read line; do echo \"got $line\"; done"]}
 ]}}"#;

#[test]
fn logs_exec_attach_and_port_forward_reach_real_containers() {
    require_node!();
    let b = Box::start("streams");
    b.apply(POD);
    b.wait_for("pod s Running", Duration::from_secs(90), |b| {
        b.pod("s").is_some_and(|p| p["status"]["containerStatuses"].as_array().is_some_and(|c| c.len() == 3))
            && b.phase("s") == "Running"
    });

    // Logs: whole, tail, and a follow that keeps streaming new lines.
    b.wait_for("three ticks", Duration::from_secs(10), |b| b.ok(&["logs", "s", "-c", "ticker"]).lines().count() >= 3);
    let all = b.ok(&["logs", "s", "-c", "ticker"]);
    assert!(all.starts_with("tick 1\ntick 2\n"), "{all}");
    assert_eq!(b.ok(&["logs", "s", "-c", "ticker", "--tail=1"]).lines().count(), 1);
    let mut follow =
        KillOnDrop(b.kubectl_command(&["logs", "-f", "s", "-c", "ticker", "--tail=1"]).spawn().expect("logs -f"));
    let stdout = follow.0.stdout.as_mut().expect("stdout");
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.lines().count() < 5 {
        assert!(Instant::now() < deadline, "logs -f streamed only {seen:?}");
        let mut buf = [0u8; 256];
        let n = stdout.read(&mut buf).expect("read logs -f");
        assert!(n > 0, "logs -f ended: {seen:?}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let numbers: Vec<u64> =
        seen.lines().map(|l| l.strip_prefix("tick ").and_then(|n| n.parse().ok()).expect("a tick line")).collect();
    assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "followed lines in order: {numbers:?}");
    drop(follow);

    for (transport, env) in TRANSPORTS {
        // The transport really is the one named: kubectl says which subprotocol it got.
        let (_, _, verbose) = b.kubectl_with(env, &["exec", "-v=7", "s", "-c", "web", "--", "true"], None);
        let websocket = verbose.contains("The subprotocol is v5.channel.k8s.io");
        assert_eq!(websocket, *transport == "websocket", "{transport}: {verbose}");

        // Exec: output, exit code, stdin and stderr.
        let (code, out, err) =
            b.kubectl_with(env, &["exec", "s", "-c", "web", "--", "sh", "-c", "echo $((6*7)); exit 3"], None);
        assert_eq!((code, out.as_str()), (3, "42\n"), "{transport}: {err}");
        assert_eq!(err.trim(), "command terminated with exit code 3", "{transport}");
        let (code, out, err) = b.kubectl_with(
            env,
            &["exec", "-i", "s", "-c", "web", "--", "sh", "-c", "cat; echo >&2 to-stderr"],
            Some("line one\nline two\n"),
        );
        assert_eq!((code, out.as_str(), err.as_str()), (0, "line one\nline two\n", "to-stderr\n"), "{transport}");
        // The exec runs in the container: its file system, its hostname.
        let (_, out, err) = b.kubectl_with(env, &["exec", "s", "-c", "web", "--", "cat", "/www/index.html"], None);
        assert_eq!(out, "hello-from-pod\n", "{transport}: {err}");

        // Attach: a line on stdin reaches the running process; its answer comes back.
        let mut attach = KillOnDrop(
            b.kubectl_command(&["attach", "-i", "s", "-c", "reader"])
                .envs(env.iter().copied())
                .stdin(std::process::Stdio::piped())
                .spawn()
                .expect("kubectl attach"),
        );
        {
            use std::io::Write;
            let stdin = attach.0.stdin.as_mut().expect("stdin");
            stdin.write_all(format!("{transport}\n").as_bytes()).expect("write");
            stdin.flush().expect("flush");
        }
        let stdout = attach.0.stdout.as_mut().expect("stdout");
        let mut answer = String::new();
        let deadline = Instant::now() + Duration::from_secs(15);
        while !answer.contains('\n') {
            assert!(Instant::now() < deadline, "{transport}: attach answered {answer:?}");
            let mut buf = [0u8; 64];
            let n = stdout.read(&mut buf).expect("read attach");
            assert!(n > 0, "{transport}: attach ended: {answer:?}");
            answer.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        assert_eq!(answer, format!("got {transport}\n"));
        drop(attach);

        // Port-forward: a local port inside the namespace reaches the pod's httpd, twice.
        let local = 18080;
        let mut pf = KillOnDrop(
            b.kubectl_command(&["port-forward", "-v=7", "pod/s", &format!("{local}:8080"), "--address", "127.0.0.1"])
                .envs(env.iter().copied())
                .spawn()
                .expect("kubectl port-forward"),
        );
        let mut first = [0u8; 10];
        if pf.0.stdout.as_mut().expect("stdout").read_exact(&mut first).is_err() {
            let mut err = String::new();
            let _ = pf.0.stderr.as_mut().expect("stderr").read_to_string(&mut err);
            panic!("{transport}: kubectl port-forward ended: {err}");
        }
        assert_eq!(&first, b"Forwarding", "{transport}");
        for round in 0..2 {
            let get = format!(
                "exec 3<>/dev/tcp/127.0.0.1/{local} && printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' >&3 && timeout 10 cat <&3"
            );
            let out = b.exec("bash", &["-c", &get]);
            let answer = String::from_utf8_lossy(&out.stdout);
            assert!(answer.starts_with("HTTP/1.1 200 OK"), "{transport} round {round}: {answer:?}");
            assert!(answer.ends_with("hello-from-pod\n"), "{transport} round {round}: {answer:?}");
        }
        let _ = pf.0.kill();
        let mut verbose = String::new();
        let _ = pf.0.stderr.as_mut().expect("stderr").read_to_string(&mut verbose);
        let tunnelled = verbose.contains("negotiated protocol: portforward.k8s.io");
        assert_eq!(tunnelled, *transport == "websocket", "{transport}: {verbose}");
        drop(pf);
    }

    // Resource usage, as metrics-server reads it.
    let summary = |b: &Box| -> serde_json::Value {
        serde_json::from_str(&b.ok(&["get", "--raw", "/api/v1/nodes/box/proxy/stats/summary"])).expect("summary json")
    };
    summary(&b);
    let s = summary(&b);
    let node = &s["node"];
    assert_eq!(node["nodeName"], "box");
    for (path, v) in [
        ("cpu.usageCoreNanoSeconds", &node["cpu"]["usageCoreNanoSeconds"]),
        ("cpu.usageNanoCores", &node["cpu"]["usageNanoCores"]),
        ("memory.workingSetBytes", &node["memory"]["workingSetBytes"]),
        ("memory.availableBytes", &node["memory"]["availableBytes"]),
        ("fs.capacityBytes", &node["fs"]["capacityBytes"]),
        ("runtime.imageFs.capacityBytes", &node["runtime"]["imageFs"]["capacityBytes"]),
        ("rlimit.curproc", &node["rlimit"]["curproc"]),
    ] {
        assert!(v.as_u64().is_some_and(|n| n > 0), "node {path} in {node}");
    }
    let pods = s["pods"].as_array().expect("pods");
    let pod = pods.iter().find(|p| p["podRef"]["name"] == "s").expect("pod s in the summary");
    assert_eq!(pod["podRef"]["namespace"], "default");
    let mut names: Vec<&str> =
        pod["containers"].as_array().expect("containers").iter().filter_map(|c| c["name"].as_str()).collect();
    names.sort();
    assert_eq!(names, ["reader", "ticker", "web"], "{pod}");
    for c in pod["containers"].as_array().expect("containers") {
        assert!(c["memory"]["workingSetBytes"].as_u64().is_some_and(|n| n > 0), "{c}");
        assert!(c["cpu"]["usageCoreNanoSeconds"].as_u64().is_some_and(|n| n > 0), "{c}");
        assert!(c["startTime"].is_string(), "{c}");
    }
    let ticker =
        pod["containers"].as_array().expect("containers").iter().find(|c| c["name"] == "ticker").expect("ticker");
    assert!(ticker["logs"]["usedBytes"].as_u64().is_some_and(|n| n > 0), "{ticker}");
    assert!(pod["memory"]["workingSetBytes"].as_u64().is_some_and(|n| n > 0), "{pod}");

    // Errors as upstream words them.
    let (code, _, err) = b.kubectl_with(&[], &["exec", "s", "-c", "nope", "--", "true"], None);
    assert_eq!(code, 1);
    assert_eq!(err.trim(), "Error from server (BadRequest): container nope is not valid for pod s");
    let (code, _, err) = b.kubectl_with(&[], &["logs", "s", "-c", "ticker", "--previous"], None);
    assert_eq!(code, 1);
    assert!(err.contains("previous terminated container \"ticker\" in pod \"s\" not found"), "{err}");
}
