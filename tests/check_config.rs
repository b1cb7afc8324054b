//! `skiff check-config` through the real binary: against fixture trees of a Raspberry Pi with
//! the memory controller disabled, cgroup v1 and cgroup v2 hosts (the hidden `--root`), and
//! against this machine; and `skiff agent` / `skiff server` refusing to start on a box that
//! fails the node checks, with the same lines.

mod common;

use std::path::Path;
use std::process::Command;

/// Every check's name, in the order printed.
const NAMES: &[&str] = &[
    "cgroup hierarchy",
    "cgroup memory controller",
    "cgroup cpu controller",
    "cgroup pids controller",
    "cgroup cpuset controller",
    "namespaces",
    "kernel config",
    "overlayfs",
    "netfilter",
    "nftables",
    "iptables",
    "br_netfilter",
    "vxlan",
    "bridge and veth",
    "containerd",
    "runc",
    "CNI plugins",
    "port 6443 (API server)",
    "port 10250 (kubelet API)",
    "clock",
];

const PI_MEMORY_LINE: &str = "FAIL  cgroup memory controller: disabled; add \"cgroup_memory=1 cgroup_enable=memory\" to /boot/firmware/cmdline.txt and reboot";

/// A fixture tree standing for a host's `/`.
struct Tree(tempfile::TempDir);

impl Tree {
    fn file(&self, path: &str, content: &str) -> &Tree {
        let p = self.0.path().join(path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
        self
    }

    fn exe(&self, path: &str, script: &str) -> &Tree {
        use std::os::unix::fs::PermissionsExt;
        self.file(path, &format!("#!/bin/sh\n{script}\n"));
        let p = self.0.path().join(path.trim_start_matches('/'));
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        self
    }

    fn remove(&self, path: &str) -> &Tree {
        std::fs::remove_file(self.0.path().join(path.trim_start_matches('/'))).unwrap();
        self
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

/// A healthy cgroup v1 (hybrid) box: Debian's packages, every kernel option built in.
fn healthy_v1() -> Tree {
    let t = Tree(tempfile::tempdir().unwrap());
    t.file(
        "/proc/cgroups",
        "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpuset\t3\t9\t1\ncpu\t1\t9\t1\ncpuacct\t2\t9\t1\nmemory\t4\t9\t1\npids\t5\t9\t1\n",
    )
    .file("/proc/self/cgroup", "5:pids:/\n4:memory:/\n3:cpuset:/\n2:cpuacct:/\n1:cpu:/\n0::/\n")
    .file("/proc/filesystems", "nodev\tsysfs\nnodev\tcgroup\n\text4\nnodev\toverlay\n")
    .file("/proc/sys/kernel/osrelease", "6.1.0-test\n")
    .file(
        "/boot/config-6.1.0-test",
        "CONFIG_OVERLAY_FS=y\nCONFIG_BRIDGE_NETFILTER=y\nCONFIG_VXLAN=y\nCONFIG_BRIDGE=y\nCONFIG_VETH=y\nCONFIG_NF_CONNTRACK=y\nCONFIG_NF_NAT=y\nCONFIG_NF_TABLES=y\n",
    )
    .file("/proc/sys/net/bridge/bridge-nf-call-iptables", "1\n")
    .exe("/usr/bin/containerd", "echo 'containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3'")
    .exe("/usr/sbin/runc", "echo 'runc version 1.1.5+ds1'")
    .exe("/usr/sbin/nft", "echo 'nftables v1.0.6 (Lester Gooch #5)'")
    .exe("/usr/sbin/iptables", "echo 'iptables v1.8.9 (nf_tables)'");
    for ns in ["cgroup", "ipc", "mnt", "net", "pid", "user", "uts"] {
        t.file(&format!("/proc/self/ns/{ns}"), "");
    }
    for p in ["bridge", "host-local", "loopback", "portmap"] {
        t.exe(&format!("/usr/lib/cni/{p}"), "exit 0");
    }
    t
}

/// The same box as a Raspberry Pi OS Bookworm image whose memory controller is disabled.
fn pi_memory_disabled() -> Tree {
    let t = healthy_v1();
    t.file(
        "/proc/cgroups",
        "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpuset\t3\t9\t1\ncpu\t1\t9\t1\ncpuacct\t2\t9\t1\nmemory\t0\t9\t0\npids\t5\t9\t1\n",
    )
    .file("/proc/self/cgroup", "5:pids:/\n3:cpuset:/\n2:cpuacct:/\n1:cpu:/\n0::/\n")
    .file("/proc/device-tree/model", "Raspberry Pi 4 Model B Rev 1.4\0")
    .file("/boot/firmware/cmdline.txt", "console=serial0,115200 console=tty1 root=PARTUUID=x rootfstype=ext4 rootwait\n");
    t
}

/// A healthy cgroup v2 box offering `controllers`.
fn v2(controllers: &str) -> Tree {
    let t = healthy_v1();
    t.file(
        "/proc/cgroups",
        "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpuset\t0\t9\t1\ncpu\t0\t9\t1\ncpuacct\t0\t9\t1\nmemory\t0\t9\t1\npids\t0\t9\t1\n",
    )
    .file("/proc/self/cgroup", "0::/system.slice/skiff.service\n")
    .file("/sys/fs/cgroup/cgroup.controllers", &format!("{controllers}\n"));
    t
}

fn run(args: &[&str], envs: &[(&str, &Path)]) -> (i32, String, String) {
    let mut cmd = Command::new(common::skiff_bin());
    cmd.args(args).env_remove("SKIFF_CHECK_ROOT").env("PATH", "/usr/local/bin:/usr/bin:/usr/sbin:/bin:/sbin");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn check_config(tree: &Tree) -> (i32, Vec<String>) {
    let (code, out, err) = run(&["check-config", "--root", tree.path().to_str().unwrap()], &[]);
    assert_eq!(err, "", "stderr");
    (code, out.lines().map(str::to_string).collect())
}

/// Each line names the check at its position, after a status word.
fn assert_names(lines: &[String]) {
    assert_eq!(lines.len(), NAMES.len(), "{lines:#?}");
    for (line, name) in lines.iter().zip(NAMES) {
        let rest = line.strip_prefix("pass  ").or(line.strip_prefix("warn  ")).or(line.strip_prefix("FAIL  "));
        let rest = rest.unwrap_or_else(|| panic!("no status word: {line}"));
        assert!(rest == *name || rest.starts_with(&format!("{name}: ")), "{line} is not {name}");
    }
}

#[test]
fn a_healthy_v1_box_passes() {
    let t = healthy_v1();
    let (code, lines) = check_config(&t);
    assert_names(&lines);
    assert_eq!(
        lines[..17],
        [
            "pass  cgroup hierarchy: v1, with v2 mounted beside it (hybrid)",
            "pass  cgroup memory controller: enabled (v1)",
            "pass  cgroup cpu controller: enabled (v1)",
            "pass  cgroup pids controller: enabled (v1)",
            "pass  cgroup cpuset controller: enabled (v1)",
            "pass  namespaces: mnt, uts, ipc, pid, net, cgroup, user",
            "pass  kernel config: /boot/config-6.1.0-test",
            "pass  overlayfs: supported",
            "pass  netfilter: nf_conntrack built in, nf_nat built in",
            "pass  nftables: nft v1.0.6 (/usr/sbin/nft); nf_tables built in",
            "pass  iptables: iptables v1.8.9 (nf_tables) (/usr/sbin/iptables)",
            "pass  br_netfilter: built in",
            "pass  vxlan: built in",
            "pass  bridge and veth: bridge built in, veth built in",
            "pass  containerd: 1.6.20~ds1 (/usr/bin/containerd)",
            "pass  runc: 1.1.5+ds1 (/usr/sbin/runc)",
            "pass  CNI plugins: bridge, host-local, loopback, portmap in /usr/lib/cni",
        ]
    );
    // Ports are this machine's: free, or taken, which is a warning only.
    assert!(lines[19].starts_with("pass  clock: 20"), "{}", lines[19]);
    assert_eq!(code, 0, "{lines:#?}");
}

#[test]
fn a_pi_with_memory_disabled_fails_with_the_cmdline_hint() {
    let t = pi_memory_disabled();
    let (code, lines) = check_config(&t);
    assert_names(&lines);
    assert_eq!(code, 1);
    assert_eq!(lines[1], PI_MEMORY_LINE);
    assert_eq!(lines.iter().filter(|l| l.starts_with("FAIL")).count(), 1, "{lines:#?}");
    // An older image keeps cmdline.txt in /boot itself.
    t.remove("/boot/firmware/cmdline.txt").file("/boot/cmdline.txt", "console=tty1 root=/dev/mmcblk0p2 rootwait\n");
    let (code, lines) = check_config(&t);
    assert_eq!(code, 1);
    assert_eq!(
        lines[1],
        "FAIL  cgroup memory controller: disabled; add \"cgroup_memory=1 cgroup_enable=memory\" to /boot/cmdline.txt and reboot"
    );
}

#[test]
fn cgroup_v2_with_and_without_memory() {
    let (code, lines) = check_config(&v2("cpuset cpu io memory hugetlb pids rdma misc"));
    assert_names(&lines);
    assert_eq!(
        lines[..5],
        [
            "pass  cgroup hierarchy: v2 (unified)",
            "pass  cgroup memory controller: enabled (v2)",
            "pass  cgroup cpu controller: enabled (v2)",
            "pass  cgroup pids controller: enabled (v2)",
            "pass  cgroup cpuset controller: enabled (v2)",
        ]
    );
    assert_eq!(code, 0, "{lines:#?}");
    let (code, lines) = check_config(&v2("cpuset cpu io hugetlb pids rdma misc"));
    assert_eq!(
        lines[1],
        "FAIL  cgroup memory controller: not offered by /sys/fs/cgroup/cgroup.controllers; add \"cgroup_enable=memory\" to the kernel command line (GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub) and reboot"
    );
    assert_eq!(code, 1);
}

#[test]
fn missing_and_old_containerd_fail() {
    let t = healthy_v1();
    t.remove("/usr/bin/containerd");
    let (code, lines) = check_config(&t);
    assert_eq!(code, 1);
    assert_eq!(
        lines[14],
        "FAIL  containerd: not found on PATH; install containerd 1.6 or newer (apt-get install containerd)"
    );
    t.exe(
        "/usr/bin/containerd",
        "echo 'containerd github.com/containerd/containerd 1.5.9 1c90a442489720eec95342e1789ee8a5e1b9536f'",
    );
    let (code, lines) = check_config(&t);
    assert_eq!(code, 1);
    assert_eq!(
        lines[14],
        "FAIL  containerd: 1.5.9 at /usr/bin/containerd is older than 1.6; install containerd 1.6 or newer (apt-get install containerd)"
    );
}

#[test]
fn a_root_that_is_not_a_folder_is_one_line() {
    let (code, out, err) = run(&["check-config", "--root", "/nonexistent/root"], &[]);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (1, "", "skiff: invalid value \"/nonexistent/root\" for --root: not a folder\n")
    );
}

fn installed(program: &str) -> bool {
    std::env::split_paths("/usr/local/bin:/usr/bin:/usr/sbin:/bin:/sbin").any(|d| d.join(program).exists())
}

#[test]
fn this_machine_passes() {
    // The node tests' machines: containerd, runc, the CNI plugins and iptables installed.
    let cni = ["/opt/cni/bin", "/usr/lib/cni"].iter().any(|d| Path::new(d).join("bridge").exists());
    if !(installed("containerd") && installed("runc") && installed("iptables") && cni) {
        eprintln!("skipped: needs containerd, runc, iptables and the CNI plugins (see README, Test it)");
        return;
    }
    let (code, out, err) = run(&["check-config"], &[]);
    let lines: Vec<String> = out.lines().map(str::to_string).collect();
    assert_eq!(err, "");
    assert_names(&lines);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("FAIL"), "{out}");
    for (line, controller) in lines[1..4].iter().zip(["memory", "cpu", "pids"]) {
        assert!(line.starts_with(&format!("pass  cgroup {controller} controller: enabled (v")), "{line}");
    }
    assert!(lines[14].starts_with("pass  containerd: 1."), "{}", lines[14]);
}

/// The agent and the server's agent need root; without it they never get to the checks.
fn root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[test]
fn the_agent_refuses_a_box_that_fails_the_node_checks() {
    if !root() {
        eprintln!("skipped: the agent runs only as root");
        return;
    }
    let t = pi_memory_disabled();
    t.remove("/usr/sbin/runc");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "").unwrap();
    let data = dir.path().join("data");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> =
            ["agent", "--kubeconfig", "/nonexistent/kubeconfig", "--config"].iter().map(|s| s.to_string()).collect();
        a.push(config.display().to_string());
        a.extend(["--data-dir".to_string(), data.display().to_string()]);
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let argv = args(&[]);
    let (code, out, err) = run(&argv.iter().map(String::as_str).collect::<Vec<_>>(), &[("SKIFF_CHECK_ROOT", t.path())]);
    assert_eq!(out, "");
    assert_eq!(
        (code, err.as_str()),
        (
            1,
            format!(
                "skiff: {PI_MEMORY_LINE}\nskiff: FAIL  runc: not found on PATH; install runc (apt-get install runc)\n"
            )
            .as_str()
        )
    );
    assert!(!data.exists(), "nothing was started");
    // With an existing CRI socket, skiff runs no containerd, so containerd and runc are not its
    // business.
    let argv = args(&["--container-runtime-endpoint", "/run/other/containerd.sock"]);
    let (code, _, err) = run(&argv.iter().map(String::as_str).collect::<Vec<_>>(), &[("SKIFF_CHECK_ROOT", t.path())]);
    assert_eq!((code, err), (1, format!("skiff: {PI_MEMORY_LINE}\n")));
}

#[test]
fn the_server_refuses_to_start_its_agent_on_a_box_that_fails_the_node_checks() {
    if !root() {
        eprintln!("skipped: the server runs its agent only as root");
        return;
    }
    let t = pi_memory_disabled();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "").unwrap();
    let data = dir.path().join("data");
    let kubeconfig = dir.path().join("kubeconfig.yaml");
    let (code, out, err) = run(
        &[
            "server",
            "--config",
            config.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "--write-kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--bind-address",
            "127.0.0.1",
            "--https-listen-port",
            "0",
        ],
        &[("SKIFF_CHECK_ROOT", t.path())],
    );
    assert_eq!(out, "");
    assert_eq!((code, err), (1, format!("skiff: {PI_MEMORY_LINE}\n")));
    assert!(!data.exists() && !kubeconfig.exists(), "nothing was started");
}
