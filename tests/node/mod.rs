//! Node test harness: a real `skiff server` with its agent and containerd inside a network
//! namespace this test creates, linked to nothing: no route leaves it, so no pod can send a
//! packet off the machine. kubectl runs inside the namespace too.
//!
//! Dropping a [`Box`] deletes the pods (so the agent removes their containers), stops skiff,
//! sweeps up whatever is left (container processes, mounts) and deletes the namespace, also
//! when the test failed.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

#[path = "../common/bin.rs"]
mod bin;
pub use bin::skiff_bin;

pub const KUBECTL: &str = "/usr/bin/kubectl";

/// Why node tests cannot run here, if they cannot.
pub fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root".into());
    }
    for (bin, pkg) in [
        ("/usr/bin/containerd", "containerd"),
        ("/usr/sbin/runc", "runc"),
        ("/bin/busybox", "busybox-static"),
        ("/usr/bin/ctr", "containerd"),
    ] {
        let alt = bin.replace("/usr/sbin/", "/usr/bin/");
        if !Path::new(bin).exists() && !Path::new(&alt).exists() {
            return Some(format!("{bin} is missing (apt-get install {pkg})"));
        }
    }
    if !["/usr/lib/cni/bridge", "/opt/cni/bin/bridge"].iter().any(|p| Path::new(p).exists()) {
        return Some("the CNI plugins are missing (apt-get install containernetworking-plugins)".into());
    }
    None
}

#[macro_export]
macro_rules! require_node {
    () => {
        if let Some(why) = node::skip_reason() {
            eprintln!("SKIPPED: this test runs real pods and {why}");
            return;
        }
    };
}

fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("{cmd}: {e}"))
}

/// A box: a network namespace with one server (control plane and agent) in it.
pub struct Box {
    pub netns: String,
    pub dir: tempfile::TempDir,
    pub node_ip: String,
    pub child: Option<Child>,
    /// Flags added to `skiff server` at every launch.
    pub extra: Vec<String>,
    /// The namespace, deleted after the box stopped.
    _host: Host,
}

/// A machine of a test: a network namespace and the address others reach it at. An owned one
/// deletes its namespace when dropped.
pub struct Host {
    pub netns: String,
    pub ip: String,
    owned: bool,
}

impl Drop for Host {
    fn drop(&mut self) {
        if self.owned {
            let _ = run("ip", &["netns", "del", &self.netns]);
        }
    }
}

/// A LAN of hosts: a namespace holding only a bridge, and per host a namespace linked to it by
/// one veth pair, addressed `172.30.<n>.<i>/24`. Hosts have no default route (only the service
/// range routes, to an address no host has), and the bridge's namespace has no other link:
/// nothing the hosts send can leave the LAN.
pub struct Lan {
    netns: String,
    third: u8,
    next: std::cell::Cell<u8>,
}

impl Lan {
    pub fn new(name: &str) -> Lan {
        let netns: String = format!("skl-{}-{name}", std::process::id() % 100_000).chars().take(30).collect();
        let _ = run("ip", &["netns", "del", &netns]);
        for args in [
            vec!["netns", "add", &netns],
            vec!["-n", &netns, "link", "set", "lo", "up"],
            vec!["-n", &netns, "link", "add", "br0", "type", "bridge"],
            vec!["-n", &netns, "link", "set", "br0", "up"],
        ] {
            let out = run("ip", &args);
            assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Lan { netns, third: (std::process::id() % 200) as u8 + 20, next: std::cell::Cell::new(1) }
    }

    /// A new host on the LAN, with the next address.
    pub fn host(&self, name: &str) -> Host {
        let i = self.next.get();
        self.next.set(i + 1);
        let netns: String = format!("{}-{name}", self.netns).chars().take(40).collect();
        let ip = format!("172.30.{}.{i}", self.third);
        let _ = run("ip", &["netns", "del", &netns]);
        let port = format!("p{i}");
        let host = Host { netns: netns.clone(), ip: ip.clone(), owned: true };
        for args in [
            vec!["netns", "add", &netns],
            vec!["-n", &netns, "link", "set", "lo", "up"],
            vec!["-n", &netns, "link", "add", "eth0", "type", "veth", "peer", "name", &port, "netns", &self.netns],
            vec!["-n", &self.netns, "link", "set", &port, "master", "br0"],
            vec!["-n", &self.netns, "link", "set", &port, "up"],
            vec!["-n", &netns, "addr", "add", &format!("{ip}/24"), "dev", "eth0"],
            vec!["-n", &netns, "link", "set", "eth0", "up"],
            // The service range routes into the LAN, where no router answers, as a box's default
            // route would carry it: cluster IPs route (so the service proxy sees the packets),
            // and whatever no rule rewrites dies on the LAN.
            vec!["-n", &netns, "route", "add", "10.43.0.0/16", "via", &format!("172.30.{}.254", self.third)],
        ] {
            let out = run("ip", &args);
            assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        host
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.netns]);
    }
}

/// The kubelet's default hard eviction includes `nodefs.available<10%`, so on a host whose disk
/// is more than 90 % full every pod would be evicted for disk pressure. Tests keep the memory
/// signal and leave the disk out; a test's own `eviction-hard` comes later and wins.
pub const HOST_INDEPENDENT_EVICTION: [&str; 2] = ["--kubelet-arg", "eviction-hard=memory.available<100Mi"];

impl Box {
    /// Creates the namespace, puts the test images into the images folder and starts skiff.
    pub fn start(name: &str) -> Box {
        Self::start_with(name, &[])
    }

    pub fn start_with(name: &str, extra: &[&str]) -> Box {
        Self::start_with_images(name, extra, &[])
    }

    /// [`Box::start_with`] with more image archives (see [`Box::start_in_with_images`]).
    pub fn start_with_images(name: &str, extra: &[&str], archives: &[(&str, Vec<u8>)]) -> Box {
        let netns = format!("ske-{}-{name}", std::process::id() % 100_000);
        let netns: String = netns.chars().take(40).collect();
        let _ = run("ip", &["netns", "del", &netns]);
        let out = run("ip", &["netns", "add", &netns]);
        assert!(out.status.success(), "ip netns add: {}", String::from_utf8_lossy(&out.stderr));
        // One interface with the node's address; its peer is in the same namespace, so
        // nothing is reachable beyond it, and there is no default route.
        let third = (std::process::id() % 200) as u8 + 20;
        let node_ip = format!("172.31.{third}.2");
        for args in [
            vec!["-n", &netns, "link", "set", "lo", "up"],
            vec!["-n", &netns, "link", "add", "node0", "type", "veth", "peer", "name", "node1"],
            vec!["-n", &netns, "addr", "add", &format!("{node_ip}/24"), "dev", "node0"],
            vec!["-n", &netns, "link", "set", "node0", "up"],
            vec!["-n", &netns, "link", "set", "node1", "up"],
            // The service range routes to a router that does not exist, as a box's default route
            // would carry it: cluster IPs route (so the service proxy sees the packets), and
            // whatever no rule rewrites dies here.
            vec!["-n", &netns, "route", "add", "10.43.0.0/16", "via", &format!("172.31.{third}.1")],
        ] {
            let out = run("ip", &args);
            assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Self::start_in_with_images(Host { netns, ip: node_ip, owned: true }, extra, archives)
    }

    /// A box on `host` (a [`Lan`] host: other hosts of the LAN reach it at `host.ip`).
    pub fn start_in(host: Host, extra: &[&str]) -> Box {
        Self::start_in_with_images(host, extra, &[])
    }

    /// [`Box::start_in`] with more image archives in the images folder: (file name, archive).
    pub fn start_in_with_images(host: Host, extra: &[&str], archives: &[(&str, Vec<u8>)]) -> Box {
        // Short paths: containerd's socket path must fit in 107 bytes.
        let dir = tempfile::Builder::new().prefix("ske").tempdir_in("/tmp").expect("tempdir");
        let images = dir.path().join("data").join("agent").join("images");
        std::fs::create_dir_all(&images).expect("images dir");
        std::fs::write(images.join("busybox.tar"), crate::images::oci_archive("docker.io/library/busybox:latest"))
            .expect("image archive");
        for (file, archive) in archives {
            std::fs::write(images.join(file), archive).expect("image archive");
        }
        std::fs::write(dir.path().join("config.yaml"), "").expect("config file");
        let mut b = Box {
            netns: host.netns.clone(),
            node_ip: host.ip.clone(),
            dir,
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            _host: host,
        };
        b.launch();
        b
    }

    /// The box as a host, for processes the test starts beside skiff.
    pub fn host(&self) -> Host {
        Host { netns: self.netns.clone(), ip: self.node_ip.clone(), owned: false }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig.yaml")
    }

    pub fn socket(&self) -> PathBuf {
        self.data_dir().join("agent").join("containerd").join("containerd.sock")
    }

    /// Starts skiff (again, on the same data dir) and waits for the API.
    pub fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .expect("log file");
        let _ = std::fs::remove_file(self.kubeconfig());
        let child = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", self.netns))
            .arg(skiff_bin())
            .arg("server")
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--advertise-address", &self.node_ip, "--node-name", "box"])
            .arg("--write-kubeconfig")
            .arg(self.kubeconfig())
            .arg("--config")
            .arg(self.dir.path().join("config.yaml"))
            .args(HOST_INDEPENDENT_EVICTION)
            .args(&self.extra)
            .env_remove("KUBECONFIG")
            .env("SKIFF_LOG", "info,skiff::agent=debug,skiff::cri=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start skiff");
        self.child = Some(child);
        self.wait_for("the API", Duration::from_secs(30), |b| {
            b.kubeconfig().exists() && b.kubectl(&["get", "--raw", "/readyz"]).status.success()
        });
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Runs a command inside the network namespace. (`nsenter --net` changes only the network
    /// namespace; `ip netns exec` would also remount /sys, hiding the cgroup mounts runc needs.)
    pub fn exec(&self, cmd: &str, args: &[&str]) -> Output {
        let net = format!("--net=/var/run/netns/{}", self.netns);
        let mut all = vec![net.as_str(), cmd];
        all.extend_from_slice(args);
        run("nsenter", &all)
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        let kc = self.kubeconfig();
        let mut all = vec!["--kubeconfig", kc.to_str().expect("utf8"), "--request-timeout=20s"];
        all.extend_from_slice(args);
        self.exec(KUBECTL, &all)
    }

    /// A kubectl command inside the namespace, to be spawned (for streams and stdin).
    pub fn kubectl_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/var/run/netns/{}", self.netns))
            .args([KUBECTL, "--kubeconfig"])
            .arg(self.kubeconfig())
            .args(args)
            .env("HOME", self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Runs kubectl with extra environment and standard input; (exit code, stdout, stderr).
    pub fn kubectl_with(&self, env: &[(&str, &str)], args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
        use std::io::Write;
        let mut cmd = self.kubectl_command(args);
        cmd.envs(env.iter().copied());
        if stdin.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut child = cmd.spawn().expect("run kubectl");
        if let Some(input) = stdin {
            child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write stdin");
        }
        let out = child.wait_with_output().expect("kubectl output");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// kubectl that must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}\n--- skiff log tail ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            tail(&self.log(), 60)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn apply(&self, manifest: &str) {
        let kc = self.kubeconfig();
        let mut child = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", self.netns))
            .args([KUBECTL, "--kubeconfig", kc.to_str().expect("utf8"), "apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl apply");
        use std::io::Write;
        child.stdin.take().expect("stdin").write_all(manifest.as_bytes()).expect("write manifest");
        let out = child.wait_with_output().expect("kubectl apply");
        assert!(out.status.success(), "kubectl apply failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend_from_slice(&["-o", "json"]);
        serde_json::from_str(&self.ok(&all)).expect("kubectl json")
    }

    /// Polls `check` every 200 ms until it holds, or panics with the log after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, mut check: impl FnMut(&Box) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if check(self) {
                return;
            }
            if Instant::now() > deadline {
                let pods = self.kubectl(&["get", "pods", "-A", "-o", "yaml"]);
                let events = self.kubectl(&["get", "events", "-A"]);
                panic!(
                    "timed out waiting for {what}\n--- pods ---\n{}\n--- events ---\n{}\n--- skiff log tail ---\n{}",
                    String::from_utf8_lossy(&pods.stdout),
                    String::from_utf8_lossy(&events.stdout),
                    tail(&self.log(), 80)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// How many pods of the default namespace are Ready.
    pub fn ready_pods(&self) -> usize {
        let out = self.kubectl(&[
            "get",
            "pods",
            "-o",
            "jsonpath={range .items[*]}{.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
        ]);
        String::from_utf8_lossy(&out.stdout).lines().filter(|l| *l == "True").count()
    }

    /// Applies JSON documents as one multi-document YAML manifest.
    pub fn apply_all(&self, docs: &[serde_json::Value]) {
        self.apply(&docs.iter().map(|d| serde_yaml::to_string(d).expect("yaml")).collect::<Vec<_>>().join("---\n"));
    }

    /// The pod as JSON, if it exists.
    pub fn pod(&self, name: &str) -> Option<serde_json::Value> {
        let out = self.kubectl(&["get", "pod", name, "-o", "json"]);
        out.status.success().then(|| serde_json::from_slice(&out.stdout).expect("pod json"))
    }

    pub fn phase(&self, name: &str) -> String {
        self.pod(name).and_then(|p| p["status"]["phase"].as_str().map(str::to_string)).unwrap_or_default()
    }

    /// Container ids the runtime holds in the k8s.io namespace.
    pub fn runtime_containers(&self) -> Vec<String> {
        let sock = self.socket();
        let out = run("ctr", &["--address", sock.to_str().expect("utf8"), "-n", "k8s.io", "containers", "ls", "-q"]);
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).filter(|l| !l.is_empty()).collect()
    }

    /// Sends SIGKILL to skiff alone (its containerd and containers stay).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            // nsenter execs skiff, so the child's pid is skiff's.
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGKILL);
            let _ = c.wait();
        }
    }

    /// SIGTERM, then SIGKILL after 15 s.
    pub fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills every process whose command line names this box's data dir (containerd, shims)
    /// and every process in a cgroup of one of this box's pods.
    fn sweep_processes(&self) {
        let data = self.data_dir().to_string_lossy().into_owned();
        let pods: Vec<String> = std::fs::read_dir(self.data_dir().join("agent").join("pods"))
            .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let me = std::process::id() as i32;
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
            if pid == me {
                continue;
            }
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cgroup = std::fs::read_to_string(entry.path().join("cgroup")).unwrap_or_default();
            let ours = String::from_utf8_lossy(&cmdline).contains(&data)
                || pods.iter().any(|uid| {
                    cgroup.contains(&format!("pod{uid}")) || cgroup.contains(&format!("pod{}", uid.replace('-', "_")))
                });
            if ours {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
    }

    /// Unmounts whatever is still mounted under the data dir, deepest first.
    fn sweep_mounts(&self) {
        let data = self.dir.path().to_string_lossy().into_owned();
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<String> = text
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|p| p.starts_with(&data))
            .map(str::to_string)
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let _ = nix::mount::umount2(Path::new(&p), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

impl Drop for Box {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.kubectl(&[
                "delete",
                "pods",
                "--all",
                "--all-namespaces",
                "--grace-period=0",
                "--force",
                "--wait=false",
            ]);
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline && !self.runtime_containers().is_empty() {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        self.terminate();
        self.sweep_processes();
        std::thread::sleep(Duration::from_millis(200));
        self.sweep_mounts();
    }
}

/// The last `n` lines of a log.
pub fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A child process killed and reaped when dropped, also when the test fails.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `skiff agent` inside the box's namespace; SIGKILLed when dropped.
pub struct Agent {
    child: Option<Child>,
    pub log: PathBuf,
}

pub fn agent_command(b: &Box, host: &Host, dir: &str, name: &str, port: u16, token: Option<&str>) -> Command {
    let data = b.data_dir().join("agents").join(dir);
    std::fs::create_dir_all(&data).expect("agent dir");
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/var/run/netns/{}", host.netns))
        .arg(skiff_bin())
        .arg("agent")
        .args(["--server", &format!("https://{}:6443", b.node_ip)])
        .arg("--data-dir")
        .arg(&data)
        .args(["--node-name", name, "--node-ip", &host.ip, "--kubelet-arg", &format!("port={port}")])
        .args(HOST_INDEPENDENT_EVICTION)
        .env_remove("SKIFF_TOKEN")
        .env("SKIFF_LOG", "info,skiff::agent=debug")
        .stdin(Stdio::null());
    if let Some(t) = token {
        cmd.args(["--token", t]);
    }
    cmd
}

impl Agent {
    pub fn start(b: &Box, host: &Host, dir: &str, name: &str, port: u16, token: Option<&str>) -> Agent {
        Self::start_with(b, host, dir, name, port, token, &[])
    }

    /// [`Agent::start`] with more flags.
    pub fn start_with(
        b: &Box,
        host: &Host,
        dir: &str,
        name: &str,
        port: u16,
        token: Option<&str>,
        extra: &[&str],
    ) -> Agent {
        let log = b.dir.path().join(format!("agent-{dir}-{}.log", std::process::id() ^ port as u32));
        let file = std::fs::File::create(&log).expect("agent log");
        let child = agent_command(b, host, dir, name, port, token)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start skiff agent");
        Agent { child: Some(child), log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Puts the test image into the images folder of the agent that will run in `dir`, so its
    /// pods can start without a registry.
    pub fn give_images(b: &Box, dir: &str) {
        let images = b.data_dir().join("agents").join(dir).join("agent").join("images");
        std::fs::create_dir_all(&images).expect("images dir");
        std::fs::write(images.join("busybox.tar"), crate::images::oci_archive("docker.io/library/busybox:latest"))
            .expect("image archive");
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The server's join token.
pub fn server_token(b: &Box) -> String {
    std::fs::read_to_string(b.data_dir().join("server").join("token")).expect("token file").trim().to_string()
}

/// Whether the node reports Ready.
pub fn node_ready(b: &Box, name: &str) -> bool {
    let out = b.kubectl(&["get", "node", name, "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"]);
    String::from_utf8_lossy(&out.stdout) == "True"
}

/// Polls `check` every 200 ms; panics with the tail of `log` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool, log: impl Fn() -> String) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}\n{}", tail(&log(), 60));
        std::thread::sleep(Duration::from_millis(200));
    }
}
