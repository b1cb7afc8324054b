//! Install benchmark: from `install.sh` to a `Ready` node on a freshly booted systemd box (three
//! boxes, median), then the memory of the service as systemd accounts it (`MemoryCurrent` of
//! `skiff.service`: the server, its agent, containerd and the pods' shims) idle with no pod and
//! with ten.
//!
//! Run: `sudo cargo bench --bench install` (see BENCHMARKS.md); `SKIFF_TEST_BIN` names the
//! binary to install (e.g. `dist/skiff-amd64`). The boxes are those of the installer tests
//! (`tests/sysbox/`): systemd-nspawn in a network namespace with no route out.

#[path = "../tests/common/bin.rs"]
mod bin;
#[path = "../tests/images/mod.rs"]
mod images;
#[path = "../tests/sysbox/mod.rs"]
mod sysbox;

use std::path::Path;
use std::time::{Duration, Instant};

use sysbox::SysBox;

const ROUNDS: usize = 3;
const PODS: usize = 10;
/// How long the box idles before its memory is read.
const SETTLE: Duration = Duration::from_secs(30);

fn node_ready(b: &SysBox) -> bool {
    b.sh("skiff kubectl get node box -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' 2>/dev/null")
        .stdout
        == b"True"
}

fn memory_mib(b: &SysBox) -> f64 {
    let bytes: f64 = b.ok("systemctl show -p MemoryCurrent --value skiff").trim().parse().unwrap_or(f64::NAN);
    bytes / (1024.0 * 1024.0)
}

/// MemoryCurrent, and the private (anonymous) resident memory of the unit's processes by
/// program: skiff, its containerd and the shims. File-backed pages (the binaries) are left
/// out of the split: cgroup v1 charges them to whoever read them first.
fn memory_line(b: &SysBox) -> String {
    let script = "for pid in $(ps -eo pid=,unit= | awk '$2 == \"skiff.service\" {print $1}'); do \
                  printf '%s %s\\n' \"$(cat /proc/$pid/comm)\" \"$(awk '/^RssAnon:/ {print $2}' /proc/$pid/status)\"; done";
    let mut by_comm: std::collections::BTreeMap<String, (usize, f64)> = Default::default();
    for line in b.ok(script).lines() {
        let mut words = line.split_whitespace();
        let (Some(comm), Some(kib)) = (words.next(), words.next().and_then(|k| k.parse::<f64>().ok())) else {
            continue;
        };
        let entry = by_comm.entry(comm.to_string()).or_default();
        entry.0 += 1;
        entry.1 += kib / 1024.0;
    }
    let split: Vec<String> = by_comm.iter().map(|(comm, (n, mib))| format!("{comm} x{n} {mib:.1}")).collect();
    format!("{:.1} MiB (RssAnon by program, MiB: {})", memory_mib(b), split.join(", "))
}

/// Boots a box, installs skiff in it and returns the box and the seconds from the installer's
/// start until the node is `Ready`.
fn install_once(round: usize) -> (SysBox, Duration) {
    let b = SysBox::boot("box", "172.31.254.2");
    b.put(Path::new("packaging/install.sh"), "/root/install.sh", 0o755);
    b.put(&bin::skiff_bin(), "/root/skiff", 0o755);
    b.write("/root/images/busybox.tar", &images::oci_archive("docker.io/library/busybox:latest"));
    b.put(Path::new("/usr/bin/kubectl"), "/usr/bin/kubectl", 0o755);
    let env = [
        ("INSTALL_SKIFF_BIN", "/root/skiff"),
        ("INSTALL_SKIFF_IMAGES", "/root/images"),
        ("INSTALL_SKIFF_EXEC", "--advertise-address 172.31.254.2 --node-name box"),
    ];
    let start = Instant::now();
    b.ok_with(&env, "/root/install.sh >/dev/null");
    let installed = start.elapsed();
    while !node_ready(&b) {
        assert!(start.elapsed() < Duration::from_secs(180), "the node did not become Ready\n{}", b.journal());
        std::thread::sleep(Duration::from_millis(50));
    }
    let ready = start.elapsed();
    eprintln!(
        "round {round}: install.sh returned after {:.2} s (skiff.service active), node Ready after {:.2} s",
        installed.as_secs_f64(),
        ready.as_secs_f64()
    );
    (b, ready)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if let Some(why) = sysbox::skip_reason() {
        eprintln!("install benchmark skipped: it boots systemd boxes and {why}");
        return;
    }
    eprintln!("binary: {}", bin::skiff_bin().display());
    let mut times = Vec::new();
    let mut last: Option<SysBox> = None;
    for round in 1..=ROUNDS {
        // One box at a time: the previous one is shut down before the next boots.
        drop(last.take());
        let (b, t) = install_once(round);
        times.push(t);
        last = Some(b);
    }
    let b = last.expect("a box");
    times.sort();
    let fmt: Vec<String> = times.iter().map(|t| format!("{:.2}", t.as_secs_f64())).collect();
    println!("install to Ready: median {:.2} s of {ROUNDS} ({} s)", times[ROUNDS / 2].as_secs_f64(), fmt.join(", "));

    std::thread::sleep(SETTLE);
    println!("MemoryCurrent of skiff.service, idle, 0 pods: {}", memory_line(&b));

    b.ok(&format!("skiff kubectl create deployment idle --image=busybox --replicas={PODS} -- sleep 36000"));
    let start = Instant::now();
    loop {
        let phases = b.ok("skiff kubectl get pods -l app=idle -o jsonpath='{range .items[*]}{.status.phase} {end}'");
        if phases.split_whitespace().filter(|p| *p == "Running").count() == PODS {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(300), "{PODS} pods not Running: {phases}\n{}", b.journal());
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(SETTLE);
    println!("MemoryCurrent of skiff.service, idle, {PODS} pods: {}", memory_line(&b));
    let shims = b.ok("pgrep -c containerd-shim || true");
    println!("({} containerd-shim processes in the unit)", shims.trim());
}
