//! The installer on a real systemd box: `packaging/install.sh` installs and starts skiff as a
//! service, the node runs pods, a restart, an upgrade and a `kill -9` of skiff leave the pods'
//! containers alone, and the uninstaller leaves the box as it found it.
//!
//! Needs root, systemd-nspawn and debootstrap (CI installs them) and, the first time on a
//! machine, Debian's package mirror to build the box's root filesystem; without the tools each
//! test prints why and passes without running.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

mod images;
mod sysbox;

#[path = "common/bin.rs"]
mod bin;

use sysbox::SysBox;

const SOCK: &str = "/var/lib/skiff/agent/containerd/containerd.sock";

fn repo_file(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Puts the installer, the binary, an images folder and kubectl into the box.
fn stage(b: &SysBox) {
    b.put(&repo_file("packaging/install.sh"), "/root/install.sh", 0o755);
    b.put(&bin::skiff_bin(), "/root/skiff", 0o755);
    b.write("/root/images/busybox.tar", &images::oci_archive("docker.io/library/busybox:latest"));
    b.put(Path::new("/usr/bin/kubectl"), "/usr/bin/kubectl", 0o755);
}

/// What the uninstaller must restore: interfaces and addresses, the packet filter, mounts, and the files
/// under /etc, /var/lib and /usr/local/bin (systemd's own bookkeeping aside).
fn snapshot(b: &SysBox) -> BTreeMap<&'static str, String> {
    let mut s = BTreeMap::new();
    s.insert("links", b.ok("ip -o link | sed 's/^[0-9]*: //; s/ .*//' | sort"));
    s.insert("nft", b.ok("nft list ruleset"));
    s.insert("addresses", b.ok("ip -o addr | awk '{print $2, $4}' | sort"));
    s.insert("mounts", b.ok("awk '{print $2}' /proc/self/mounts | sort"));
    s.insert(
        "files",
        b.ok("find /etc /var/lib /usr/local/bin -path /var/lib/systemd -prune -o -path /var/lib/dbus -prune -o -print | sort"),
    );
    s
}

/// Fails naming what `what` added to or removed from each part of the snapshot.
fn assert_unchanged(before: &BTreeMap<&str, String>, after: &BTreeMap<&str, String>, what: &str) {
    for (k, v) in before {
        let gone: Vec<&str> = v.lines().filter(|l| !after[k].lines().any(|a| a == *l)).collect();
        let left: Vec<&str> = after[k].lines().filter(|l| !v.lines().any(|b| b == *l)).collect();
        assert!(gone.is_empty() && left.is_empty(), "{what} changed {k}: gone {gone:#?}, left {left:#?}");
    }
}

fn node_ready(b: &SysBox) -> bool {
    let out = b.sh("skiff kubectl get node box -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}'");
    out.stdout == b"True"
}

fn main_pid(b: &SysBox) -> String {
    b.ok("systemctl show -p MainPID --value skiff").trim().to_string()
}

/// The pods' containers as containerd runs them: task id → PID, and each pod's restart count.
fn containers(b: &SysBox) -> (Vec<String>, String) {
    let tasks = b.ok(&format!("ctr --address {SOCK} -n k8s.io tasks ls | tail -n +2 | awk '{{print $1, $2}}' | sort"));
    let restarts = b.ok(
        "skiff kubectl get pods -l app=web -o jsonpath='{range .items[*]}{.metadata.name}={.status.containerStatuses[0].restartCount} {end}'",
    );
    (tasks.lines().map(str::to_string).collect(), restarts)
}

fn web_running(b: &SysBox) -> bool {
    let out = b.sh("skiff kubectl get pods -l app=web -o jsonpath='{range .items[*]}{.status.phase} {end}'");
    String::from_utf8_lossy(&out.stdout).trim() == "Running Running"
}

/// After a restart of skiff (by systemctl, an upgrade or systemd itself): active again, a new
/// main PID, the node Ready, and the pods' containers the same processes as before.
fn same_pods_after(b: &SysBox, what: &str, old_pid: &str, before: &(Vec<String>, String)) {
    b.wait_for(&format!("skiff active after {what}"), Duration::from_secs(60), |b| {
        let pid = main_pid(b);
        pid != "0" && pid != old_pid && b.sh("systemctl is-active skiff").stdout == b"active\n"
    });
    b.wait_for(&format!("the node Ready after {what}"), Duration::from_secs(60), node_ready);
    b.wait_for(&format!("both pods Running after {what}"), Duration::from_secs(60), web_running);
    assert_eq!(&containers(b), before, "the pods' containers changed across {what}");
}

#[test]
fn install_restart_upgrade_kill_and_uninstall_on_a_systemd_box() {
    require_sysbox!();
    let b = SysBox::boot("box", "172.31.251.2");
    stage(&b);
    let before = snapshot(&b);

    // Refusals come first and change nothing.
    let out = b.sh("/root/install.sh");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "[ERROR] INSTALL_SKIFF_BIN is not set: name the skiff binary to install (this installer never downloads)\n"
    );
    let out =
        b.sh_with(&[("INSTALL_SKIFF_BIN", "/root/skiff"), ("SKIFF_URL", "https://10.0.0.1:6443")], "/root/install.sh");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("[ERROR] SKIFF_URL is set but SKIFF_TOKEN is not: an agent joins with the server's token"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(snapshot(&b), before, "a refused install changed the box");

    let env = [
        ("INSTALL_SKIFF_BIN", "/root/skiff"),
        ("INSTALL_SKIFF_IMAGES", "/root/images"),
        ("INSTALL_SKIFF_EXEC", "--advertise-address 172.31.251.2 --node-name box"),
        ("SKIFF_KUBECONFIG_MODE", "0640"),
    ];
    let out = b.ok_with(&env, "/root/install.sh");
    assert!(out.contains("skiff is running. The admin kubeconfig is /etc/skiff/skiff.yaml"), "{out}");
    assert_eq!(b.ok("systemctl is-active skiff"), "active\n");
    assert_eq!(b.ok("systemctl is-enabled skiff"), "enabled\n");

    // The unit is the one in the repository, with the flags on ExecStart; systemd finds
    // nothing wrong with it; the environment file holds the SKIFF_ variables, for root only.
    let unit = b.ok("cat /etc/systemd/system/skiff.service");
    let shipped = std::fs::read_to_string(repo_file("systemd/skiff.service")).expect("systemd/skiff.service");
    let expected = shipped.replace(
        "ExecStart=/usr/local/bin/skiff server\n",
        "ExecStart=/usr/local/bin/skiff server --advertise-address 172.31.251.2 --node-name box\n",
    );
    assert_eq!(unit, expected);
    let verify = b.sh("systemd-analyze verify /etc/systemd/system/skiff.service 2>&1");
    assert!(verify.status.success() && verify.stdout.is_empty(), "{}", String::from_utf8_lossy(&verify.stdout));
    assert_eq!(b.ok("stat -c %a /etc/systemd/system/skiff.service.env"), "600\n");
    assert_eq!(b.ok("cat /etc/systemd/system/skiff.service.env"), "SKIFF_KUBECONFIG_MODE='0640'\n");
    assert_eq!(b.ok("stat -c %a /etc/skiff/skiff.yaml"), "640\n");
    assert_eq!(b.ok("ls /var/lib/skiff/agent/images"), "busybox.tar\n");
    // The scripts the installer wrote are as clean as the installer itself.
    if Path::new("/usr/bin/shellcheck").exists() {
        for script in ["skiff-killall.sh", "skiff-uninstall.sh"] {
            let path = b.root().join("usr/local/bin").join(script);
            let out = std::process::Command::new("shellcheck").arg(&path).output().expect("shellcheck");
            assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stdout));
        }
    }

    b.wait_for("the node Ready", Duration::from_secs(90), node_ready);
    b.ok("skiff kubectl create deployment web --image=busybox --replicas=2 -- sleep 3600");
    b.wait_for("both pods Running", Duration::from_secs(90), web_running);
    let pods = containers(&b);
    assert_eq!(pods.0.len(), 4, "two sandboxes and two containers: {pods:?}");
    // The pods' networking added packet-filter rules (the service proxy's and the pod egress
    // tables), an overlay device and an address for the cluster DNS, which the uninstaller has
    // to find.
    let ruleset = b.ok("nft list ruleset");
    assert!(ruleset.contains("table ip skiff {"), "no service proxy table:\n{ruleset}");
    assert!(ruleset.contains("table ip skiff-overlay {"), "no pod egress table:\n{ruleset}");
    assert!(b.ok("ip -o link").contains("skiff.1"), "no overlay device");

    // A restart of the service leaves the containers running.
    let pid = main_pid(&b);
    b.ok("systemctl restart skiff");
    same_pods_after(&b, "systemctl restart", &pid, &pods);

    // An upgrade: the installer again, with a different binary.
    let mut next = std::fs::read(bin::skiff_bin()).expect("binary");
    next.extend_from_slice(b"\0upgrade");
    b.write("/root/skiff-next", &next);
    b.ok("chmod 755 /root/skiff-next");
    let pid = main_pid(&b);
    let env_next = [("INSTALL_SKIFF_BIN", "/root/skiff-next"), env[2], env[3]];
    b.ok_with(&env_next, "/root/install.sh");
    assert_eq!(b.ok("cmp /root/skiff-next /usr/local/bin/skiff && echo same"), "same\n");
    same_pods_after(&b, "the upgrade", &pid, &pods);

    // systemd restarts a killed skiff; the pods stay.
    let pid = main_pid(&b);
    assert!(pid.parse::<u32>().is_ok_and(|p| p > 1), "skiff's main PID is {pid:?}");
    b.ok(&format!("kill -9 {pid}"));
    same_pods_after(&b, "kill -9", &pid, &pods);

    // The uninstaller stops everything skiff started and leaves the box as it was.
    b.ok("/usr/local/bin/skiff-uninstall.sh");
    assert_eq!(b.sh("systemctl is-active skiff").stdout, b"inactive\n");
    assert_eq!(b.ok("ps -eo comm | grep -E '^(containerd-shim|sleep)' || true"), "");
    assert_unchanged(&before, &snapshot(&b), "uninstall");
}

#[test]
fn an_agent_box_installed_with_the_url_and_token_joins_and_runs_a_pod() {
    require_sysbox!();
    let (server, agent) = SysBox::boot_two(("server", "172.31.252.2"), ("agent", "172.31.252.3"));
    stage(&server);
    stage(&agent);
    server.ok_with(
        &[
            ("INSTALL_SKIFF_BIN", "/root/skiff"),
            ("INSTALL_SKIFF_EXEC", "--advertise-address 172.31.252.2 --node-name server"),
        ],
        "/root/install.sh",
    );
    let token = server.ok("cat /var/lib/skiff/server/token").trim().to_string();
    assert!(token.starts_with("K10"), "{token}");

    let out = agent.ok_with(
        &[
            ("INSTALL_SKIFF_BIN", "/root/skiff"),
            ("INSTALL_SKIFF_IMAGES", "/root/images"),
            ("INSTALL_SKIFF_EXEC", "--node-ip 172.31.252.3 --node-name agent"),
            ("SKIFF_URL", "https://172.31.252.2:6443"),
            ("SKIFF_TOKEN", &token),
        ],
        "/root/install.sh",
    );
    assert!(out.contains("skiff agent is running and has joined https://172.31.252.2:6443"), "{out}");
    assert_eq!(agent.ok("systemctl is-active skiff-agent"), "active\n");
    let unit = agent.ok("cat /etc/systemd/system/skiff-agent.service");
    let shipped =
        std::fs::read_to_string(repo_file("systemd/skiff-agent.service")).expect("systemd/skiff-agent.service");
    assert_eq!(
        unit,
        shipped.replace(
            "ExecStart=/usr/local/bin/skiff agent\n",
            "ExecStart=/usr/local/bin/skiff agent --node-ip 172.31.252.3 --node-name agent\n"
        )
    );
    // The token is in the environment file, readable by root alone, and nowhere on the command line.
    assert_eq!(agent.ok("stat -c %a /etc/systemd/system/skiff-agent.service.env"), "600\n");
    let env = agent.ok("cat /etc/systemd/system/skiff-agent.service.env");
    assert_eq!(env, format!("SKIFF_TOKEN='{token}'\nSKIFF_URL='https://172.31.252.2:6443'\n"));
    assert!(agent.ok("test -x /usr/local/bin/skiff-agent-uninstall.sh && echo yes") == "yes\n");

    server.wait_for("the agent's node Ready", Duration::from_secs(90), |s| {
        let out = s.sh("skiff kubectl get node agent -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}'");
        out.stdout == b"True"
    });
    server.ok("skiff kubectl run on-agent --image=busybox --restart=Never \
         --overrides='{\"spec\":{\"nodeName\":\"agent\"}}' -- sleep 3600");
    server.wait_for("the pod Running on the agent", Duration::from_secs(90), |s| {
        s.sh("skiff kubectl get pod on-agent -o jsonpath='{.status.phase}'").stdout == b"Running"
    });
    let tasks = agent.ok(&format!("ctr --address {SOCK} -n k8s.io tasks ls -q | wc -l"));
    assert_eq!(tasks.trim(), "2", "the sandbox and the container run on the agent box");
}

/// The files a package may leave or change, as apt and dpkg keep their books: everything else
/// under /etc, /var/lib, /usr and /lib must be as before the install once skiff is purged.
fn package_snapshot(b: &SysBox) -> BTreeMap<&'static str, String> {
    let mut s = snapshot(b);
    s.insert(
        "files",
        b.ok("find /etc /var/lib /usr /lib \\( -path /var/lib/systemd -o -path /var/lib/dbus -o -path /var/lib/dpkg \
              -o -path /var/lib/apt -o -path /etc/ld.so.cache \\) -prune -o -print | sort"),
    );
    s
}

#[test]
fn the_debian_package_installs_with_apt_runs_the_server_and_purges_clean() {
    require_sysbox!();
    let arch = String::from_utf8(
        std::process::Command::new("dpkg").arg("--print-architecture").output().expect("dpkg").stdout,
    )
    .expect("utf-8");
    let out_dir = tempfile::tempdir().expect("tempdir");
    let built = std::process::Command::new(repo_file("packaging/deb.sh"))
        .arg(bin::skiff_bin())
        .arg(arch.trim())
        .arg(out_dir.path())
        .output()
        .expect("packaging/deb.sh");
    assert!(built.status.success(), "deb.sh: {}", String::from_utf8_lossy(&built.stderr));
    let deb = std::fs::read_dir(out_dir.path())
        .expect("out dir")
        .map(|e| e.expect("entry").path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("a .deb");
    let name = deb.file_name().expect("name").to_string_lossy().into_owned();
    assert_eq!(name, format!("skiff_{}_{}.deb", env!("CARGO_PKG_VERSION"), arch.trim()));

    let b = SysBox::boot("debbox", "172.31.253.2");
    b.put(&deb, &format!("/root/{name}"), 0o644);
    b.put(Path::new("/usr/bin/kubectl"), "/usr/bin/kubectl", 0o755);
    // The box has no default route: its address and name are given, as a user would in
    // /etc/default/skiff (the unit reads it) before installing. Hard eviction on memory only:
    // the box's disk is the host's, whose fill level is not this test's business.
    b.write(
        "/etc/default/skiff",
        b"SKIFF_ADVERTISE_ADDRESS=172.31.253.2\nSKIFF_NODE_NAME=box\nSKIFF_KUBELET_ARG=eviction-hard=memory.available<100Mi\n",
    );
    let before = package_snapshot(&b);

    // The image the pod needs is put where the agent imports it from; it goes with the purge.
    b.write("/var/lib/skiff/agent/images/busybox.tar", &images::oci_archive("docker.io/library/busybox:latest"));
    let out = b.ok(&format!("apt-get install -y /root/{name} 2>&1"));
    assert!(out.contains("Setting up skiff"), "{out}");
    assert_eq!(b.ok("systemctl is-enabled skiff"), "enabled\n");
    assert_eq!(b.ok("systemctl is-enabled skiff-agent || true"), "disabled\n");
    let unit = b.ok("cat /lib/systemd/system/skiff.service");
    let shipped = std::fs::read_to_string(repo_file("systemd/skiff.service")).expect("systemd/skiff.service");
    assert_eq!(unit, shipped.replace("ExecStart=/usr/local/bin/skiff server\n", "ExecStart=/usr/bin/skiff server\n"));
    assert_eq!(b.ok("dpkg-query -W -f '${Depends}' skiff"), "containerd, runc, containernetworking-plugins, nftables");
    // The manual pages are the command line's own: every subcommand has one, with its flags.
    let pages = b.ok("ls /usr/share/man/man1");
    for page in ["skiff.1.gz", "skiff-server.1.gz", "skiff-agent.1.gz", "skiff-check-config.1.gz"] {
        assert!(pages.lines().any(|l| l == page), "no {page} in {pages}");
    }
    assert!(b.ok("zcat /usr/share/man/man1/skiff-server.1.gz").contains("\\-\\-advertise\\-address"));
    // The example configuration is only comments: the server starts with it as shipped.
    assert!(b.ok("grep -v '^#' /etc/skiff/config.yaml || true").trim().is_empty());

    b.wait_for("skiff active", Duration::from_secs(60), |b| b.sh("systemctl is-active skiff").stdout == b"active\n");
    b.wait_for("the node Ready", Duration::from_secs(90), node_ready);
    b.ok("skiff kubectl run one --image=busybox --restart=Never -- sleep 3600");
    b.wait_for("the pod Running", Duration::from_secs(90), |b| {
        b.sh("skiff kubectl get pod one -o jsonpath='{.status.phase}'").stdout == b"Running"
    });

    let out = b.ok("apt-get purge -y skiff 2>&1");
    assert!(out.contains("Purging configuration files for skiff"), "{out}");
    assert_eq!(b.sh("systemctl is-active skiff").stdout, b"inactive\n");
    assert_eq!(b.ok("ps -eo comm | grep -E '^(containerd-shim|sleep|skiff)' || true"), "");
    assert_unchanged(&before, &package_snapshot(&b), "purge");
}
