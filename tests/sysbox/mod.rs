//! A real systemd box on this machine: `systemd-nspawn --boot` of a Debian root filesystem
//! (systemd as PID 1, Debian's containerd, runc and CNI plugins installed), in a network
//! namespace this test creates with one veth pair inside it and no route out. The installer
//! tests run `install.sh` in it exactly as a user would on an edge box.
//!
//! The root filesystem is built once per machine with debootstrap from Debian's mirror
//! (`SKIFF_TEST_DEBIAN_MIRROR`, default `http://deb.debian.org/debian`) and cached as a tarball
//! under `/var/cache/skiff-tests/`, outside the repository. Each box unpacks its own copy.
//!
//! Dropping a [`SysBox`] kills the box's PID 1, which ends every process inside (skiff,
//! containerd, shims, containers), then deletes the namespace and the copy.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Packages the box has besides debootstrap's minimal base: systemd as init, and what the
/// installer expects a user to have installed (`apt-get install containerd runc
/// containernetworking-plugins`).
const PACKAGES: &str =
    "systemd,systemd-sysv,dbus,containerd,runc,containernetworking-plugins,iproute2,nftables,iptables,kmod,procps";
const SUITE: &str = "bookworm";

/// Why systemd boxes cannot run here, if they cannot.
pub fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root".into());
    }
    for (bin, pkg) in [("/usr/bin/systemd-nspawn", "systemd-container"), ("/usr/sbin/debootstrap", "debootstrap")] {
        if !Path::new(bin).exists() {
            return Some(format!("{bin} is missing (apt-get install {pkg})"));
        }
    }
    None
}

#[macro_export]
macro_rules! require_sysbox {
    () => {
        if let Some(why) = sysbox::skip_reason() {
            eprintln!("SKIPPED: this test boots a systemd box and {why}");
            return;
        }
    };
}

fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("{cmd}: {e}"))
}

fn must(cmd: &str, args: &[&str]) -> Output {
    let out = run(cmd, args);
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

static ROOTFS: Mutex<()> = Mutex::new(());

/// The cached root filesystem tarball, built on first use.
pub fn rootfs_tarball() -> PathBuf {
    let _guard = ROOTFS.lock().unwrap_or_else(|e| e.into_inner());
    let cache = PathBuf::from("/var/cache/skiff-tests");
    std::fs::create_dir_all(&cache).expect("cache dir");
    let key = crate_hash(&format!("{SUITE} {PACKAGES}"));
    let tarball = cache.join(format!("rootfs-{SUITE}-{key}.tar"));
    if tarball.exists() {
        return tarball;
    }
    let mirror =
        std::env::var("SKIFF_TEST_DEBIAN_MIRROR").unwrap_or_else(|_| "http://deb.debian.org/debian".to_string());
    let work = tempfile::Builder::new().prefix("rootfs").tempdir_in("/var/tmp").expect("tempdir");
    let root = work.path().join("root");
    let root_s = root.to_str().expect("utf8");
    let started = Instant::now();
    let out = run("debootstrap", &["--variant=minbase", &format!("--include={PACKAGES}"), SUITE, root_s, &mirror]);
    assert!(
        out.status.success(),
        "debootstrap from {mirror} failed (set SKIFF_TEST_DEBIAN_MIRROR to a reachable Debian mirror): {}",
        String::from_utf8_lossy(&out.stdout).lines().rev().take(15).collect::<Vec<_>>().join("\n")
    );
    // No console login prompts, and no units that would reach for the network.
    for unit in ["console-getty.service", "getty@tty1.service", "apt-daily.timer", "apt-daily-upgrade.timer"] {
        let _ = run("systemctl", &["--root", root_s, "mask", unit]);
    }
    let partial = tarball.with_extension("tar.partial");
    must("tar", &["-C", root_s, "-cf", partial.to_str().expect("utf8"), "."]);
    std::fs::rename(&partial, &tarball).expect("rename tarball");
    eprintln!("built {} in {:.0?}", tarball.display(), started.elapsed());
    tarball
}

/// A short stable hash for the cache file name (FNV-1a).
fn crate_hash(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    format!("{:08x}", h as u32)
}

/// A booted systemd box.
pub struct SysBox {
    pub name: String,
    pub netns: String,
    pub ip: String,
    dir: tempfile::TempDir,
    nspawn: Option<Child>,
    /// PID (on the host) of the box's systemd.
    pub pid: i32,
}

impl SysBox {
    /// Unpacks the root filesystem and boots it with its own network namespace, where it has
    /// `ip`/24 on one end of a veth pair whose other end is in the same namespace.
    pub fn boot(name: &str, ip: &str) -> SysBox {
        let netns = netns_name(name);
        add_netns(&netns);
        for args in [
            vec!["-n", &netns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"],
            vec!["-n", &netns, "link", "set", "eth1", "up"],
        ] {
            must("ip", &args);
        }
        address(&netns, ip);
        Self::boot_in(name, netns, ip, &[])
    }

    /// Two boxes whose `eth0`s are the two ends of one veth pair: a network of two machines
    /// and nothing else. Both share the host's cgroup hierarchy, so Debian's own containerd
    /// service (which skiff does not use) is masked in them: two boxes' copies would share its
    /// cgroup.
    pub fn boot_two(a: (&str, &str), b: (&str, &str)) -> (SysBox, SysBox) {
        let (na, nb) = (netns_name(a.0), netns_name(b.0));
        add_netns(&na);
        add_netns(&nb);
        must("ip", &["-n", &na, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &nb]);
        address(&na, a.1);
        address(&nb, b.1);
        let mask = ["containerd.service"];
        (Self::boot_in(a.0, na, a.1, &mask), Self::boot_in(b.0, nb, b.1, &mask))
    }

    fn boot_in(name: &str, netns: String, ip: &str, mask: &[&str]) -> SysBox {
        let tarball = rootfs_tarball();
        let dir = tempfile::Builder::new().prefix("sysbox").tempdir_in("/var/tmp").expect("tempdir");
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).expect("root dir");
        must("tar", &["-C", root.to_str().expect("utf8"), "-xf", tarball.to_str().expect("utf8")]);
        std::fs::write(root.join("etc/hostname"), format!("{name}\n")).expect("hostname");
        for unit in mask {
            must("systemctl", &["--root", root.to_str().expect("utf8"), "mask", unit]);
        }
        // nspawn mounts /proc/sys read-only inside the box, where an edge box's root could write
        // it; the CNI bridge plugin turns forwarding on only when it is off, so it is on already.
        must("ip", &["netns", "exec", &netns, "sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        let log = std::fs::File::create(dir.path().join("console.log")).expect("console log");
        let nspawn = Command::new("systemd-nspawn")
            .arg("-D")
            .arg(&root)
            .args(["--boot", "--register=no", "--keep-unit", "--console=passive", "--capability=all"])
            .arg(format!("--network-namespace-path=/run/netns/{netns}"))
            .arg("--bind=/sys/fs/cgroup")
            .arg(format!("--machine={name}"))
            // Containers inside need the system calls nspawn's filter would refuse.
            .env("SYSTEMD_SECCOMP", "0")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start systemd-nspawn");
        let nspawn_pid = nspawn.id() as i32;
        let mut b = SysBox { name: name.into(), netns, ip: ip.into(), dir, nspawn: Some(nspawn), pid: 0 };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(pid) = child_named(nspawn_pid, "systemd") {
                b.pid = pid;
                let state = b.sh("systemctl is-system-running 2>/dev/null || true");
                let state = String::from_utf8_lossy(&state.stdout).trim().to_string();
                if state == "running" || state == "degraded" {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "the box did not boot:\n{}", b.console());
            std::thread::sleep(Duration::from_millis(200));
        }
        b
    }

    /// The box's root filesystem, as seen from the host.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn console(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("console.log")).unwrap_or_default()
    }

    /// Copies a host file into the box.
    pub fn put(&self, from: &Path, to: &str, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        let dest = self.root().join(to.trim_start_matches('/'));
        std::fs::create_dir_all(dest.parent().expect("parent")).expect("dir in box");
        std::fs::copy(from, &dest).unwrap_or_else(|e| panic!("copy {} into the box: {e}", from.display()));
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    /// Writes a file into the box.
    pub fn write(&self, to: &str, bytes: &[u8]) {
        let dest = self.root().join(to.trim_start_matches('/'));
        std::fs::create_dir_all(dest.parent().expect("parent")).expect("dir in box");
        std::fs::write(&dest, bytes).expect("write into box");
    }

    /// Runs `sh -c script` inside the box (all its namespaces).
    pub fn sh(&self, script: &str) -> Output {
        self.sh_with(&[], script)
    }

    /// Runs a script inside the box with extra environment variables.
    pub fn sh_with(&self, env: &[(&str, &str)], script: &str) -> Output {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.pid.to_string(), "-a", "/usr/bin/env", "-i"]);
        cmd.arg("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        for (k, v) in env {
            cmd.arg(format!("{k}={v}"));
        }
        cmd.args(["/bin/sh", "-c", script]).output().expect("nsenter")
    }

    /// Runs a script that must succeed; returns its stdout.
    pub fn ok(&self, script: &str) -> String {
        self.ok_with(&[], script)
    }

    pub fn ok_with(&self, env: &[(&str, &str)], script: &str) -> String {
        let out = self.sh_with(env, script);
        assert!(
            out.status.success(),
            "in box {}: {script}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- journal ---\n{}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.journal()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The last lines of skiff's journal in the box, and what the API says about pods.
    pub fn journal(&self) -> String {
        let out = self.sh("journalctl -u skiff -u skiff-agent -n 60 --no-pager 2>&1; \
             [ -f /etc/skiff/skiff.yaml ] && skiff kubectl get pods -A -o wide 2>&1 && \
             skiff kubectl get events -A 2>&1 | tail -20");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Polls `check` until it holds.
    pub fn wait_for(&self, what: &str, timeout: Duration, mut check: impl FnMut(&SysBox) -> bool) {
        let deadline = Instant::now() + timeout;
        while !check(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}\n--- journal ---\n{}", self.journal());
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

fn netns_name(box_name: &str) -> String {
    format!("sb-{}-{box_name}", std::process::id() % 100_000).chars().take(30).collect()
}

fn add_netns(netns: &str) {
    let _ = run("ip", &["netns", "del", netns]);
    must("ip", &["netns", "add", netns]);
    must("ip", &["-n", netns, "link", "set", "lo", "up"]);
}

/// Puts `ip`/24 on the namespace's `eth0` and brings it up.
fn address(netns: &str, ip: &str) {
    must("ip", &["-n", netns, "addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
    must("ip", &["-n", netns, "link", "set", "eth0", "up"]);
}

/// The first child of `parent` whose command name is `name`.
fn child_named(parent: i32, name: &str) -> Option<i32> {
    let children = std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children")).ok()?;
    children
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
        .find(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).map(|c| c.trim() == name).unwrap_or(false))
}

impl Drop for SysBox {
    fn drop(&mut self) {
        // Killing the PID namespace's init ends every process in it.
        if self.pid > 0 {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid), nix::sys::signal::Signal::SIGKILL);
        }
        if let Some(mut c) = self.nspawn.take() {
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        // Cgroups the box's containerd made in the shared hierarchy, now empty.
        remove_pod_cgroups();
        let _ = run("ip", &["netns", "del", &self.netns]);
    }
}

/// Removes the empty pod cgroups a box left in the host's hierarchy, deepest first. The box's
/// skiff uses the systemd driver (`kubepods.slice`); node tests on the host use cgroupfs
/// (`kubepods`), whose cgroups this leaves alone.
fn remove_pod_cgroups() {
    let out = run("find", &["/sys/fs/cgroup", "-depth", "-type", "d", "-path", "*/kubepods.slice*"]);
    for dir in String::from_utf8_lossy(&out.stdout).lines() {
        let _ = std::fs::remove_dir(dir);
    }
}
