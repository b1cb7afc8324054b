//! The programs a node runs: containerd and runc (found on `PATH`, as the agent finds
//! containerd and containerd's shim finds runc), `nft` and `iptables`, and the CNI plugins in
//! the folder the agent gives containerd.

use std::path::{Path, PathBuf};

use super::kernel::{Kernel, NF_TABLES, Support};
use super::{Check, Host};
use crate::cri::config::CNI_BIN_DIRS;

/// The oldest containerd skiff works with: its CRI plugin serves CRI v1, reads config version
/// 2 and has `restrict_oom_score_adj`.
pub const MIN_CONTAINERD: [u64; 3] = [1, 6, 0];
/// The newest containerd line skiff is tested with.
const TESTED_CONTAINERD_MAJOR: u64 = 1;
/// runc releases older than this predate the OCI runtime spec 1.0 that containerd 1.6 speaks.
const MIN_RUNC: [u64; 3] = [1, 0, 0];
/// The plugins the agent's CNI configuration uses (containerd runs `loopback` itself).
pub const CNI_PLUGINS: &[&str] = &["bridge", "host-local", "loopback", "portmap"];

/// The first version-looking word of `text` (`1.6.20~ds1`, `v1.8.9`) and its numbers.
pub fn parse_version(text: &str) -> Option<(String, [u64; 3])> {
    text.split_whitespace().find_map(|word| {
        let digits = word.strip_prefix('v').unwrap_or(word);
        let numeric: String = digits.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
        let parts: Vec<u64> = numeric.split('.').map_while(|p| p.parse().ok()).collect();
        if parts.len() < 2 {
            return None;
        }
        Some((word.to_string(), [parts[0], parts[1], parts.get(2).copied().unwrap_or(0)]))
    })
}

fn dotted(v: [u64; 3]) -> String {
    format!("{}.{}", v[0], v[1]) + &if v[2] != 0 { format!(".{}", v[2]) } else { String::new() }
}

/// A program on `PATH` and what it says with `--version`; or the check that says why not.
fn probe(host: &dyn Host, name: &str, program: &str, install: &str) -> Result<(PathBuf, String), Check> {
    let Some(path) = host.find_executable(program) else {
        return Err(Check::fail(name, "not found on PATH", install));
    };
    match host.version_output(&path) {
        Ok(out) => Ok((path, out)),
        Err(e) => Err(Check::fail(name, format!("cannot run {} --version: {e}", path.display()), install)),
    }
}

/// First line of a program's output, for messages.
fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("").trim()
}

/// The `containerd` check: present and 1.6 or newer.
pub fn containerd(host: &dyn Host) -> Check {
    const NAME: &str = "containerd";
    let install = "install containerd 1.6 or newer (apt-get install containerd)";
    let (path, out) = match probe(host, NAME, "containerd", install) {
        Ok(p) => p,
        Err(c) => return c,
    };
    let Some((word, v)) = parse_version(&out) else {
        return Check::warn(NAME, format!("unknown version at {}: \"{}\"", path.display(), first_line(&out)), None);
    };
    if v < MIN_CONTAINERD {
        return Check::fail(
            NAME,
            format!("{word} at {} is older than {}", path.display(), dotted(MIN_CONTAINERD)),
            install,
        );
    }
    if v[0] > TESTED_CONTAINERD_MAJOR {
        return Check::warn(
            NAME,
            format!("{word} ({}): skiff is tested with containerd 1.6 and 1.7", path.display()),
            None,
        );
    }
    Check::pass(NAME, format!("{word} ({})", path.display()))
}

/// The `runc` check: present (containerd's shim runs it from `PATH`).
pub fn runc(host: &dyn Host) -> Check {
    const NAME: &str = "runc";
    let (path, out) = match probe(host, NAME, "runc", "install runc (apt-get install runc)") {
        Ok(p) => p,
        Err(c) => return c,
    };
    match parse_version(&out) {
        None => Check::warn(NAME, format!("unknown version at {}: \"{}\"", path.display(), first_line(&out)), None),
        Some((word, v)) if v < MIN_RUNC => Check::warn(
            NAME,
            format!("{word} at {} is older than {}", path.display(), dotted(MIN_RUNC)),
            Some("install runc 1.0 or newer (apt-get install runc)".into()),
        ),
        Some((word, _)) => Check::pass(NAME, format!("{word} ({})", path.display())),
    }
}

/// The `nftables` check: the kernel's nf_tables and the `nft` program.
pub fn nftables(host: &dyn Host, k: &Kernel) -> Check {
    const NAME: &str = "nftables";
    let kernel = match k.support(NF_TABLES) {
        Support::Builtin => "nf_tables built in",
        Support::Loaded => "nf_tables loaded",
        // nft's first request loads it.
        Support::Loadable => "nf_tables as a module",
        Support::Missing => {
            return Check::fail(
                NAME,
                "not in this kernel (CONFIG_NF_TABLES)",
                "service rules are nftables rules: use a kernel built with CONFIG_NF_TABLES",
            );
        }
        Support::Unknown => "cannot tell whether the kernel has nf_tables",
    };
    let Some(path) = host.find_executable("nft") else {
        return Check::warn(NAME, format!("nft not found on PATH; {kernel}"), Some("apt-get install nftables".into()));
    };
    let version = host.version_output(&path).ok().and_then(|o| parse_version(&o)).map(|(w, _)| w);
    let detail = format!("nft {} ({}); {kernel}", version.as_deref().unwrap_or("of unknown version"), path.display());
    if k.support(NF_TABLES) == Support::Unknown {
        return Check::warn(NAME, detail, None);
    }
    Check::pass(NAME, detail)
}

/// The `iptables` check: the CNI bridge plugin masquerades pod traffic, and portmap maps host
/// ports, with iptables. Releases 1.8.0-1.8.3 in nf_tables mode are broken for this (as k3s
/// checks too).
pub fn iptables(host: &dyn Host) -> Check {
    const NAME: &str = "iptables";
    let (path, out) = match probe(host, NAME, "iptables", "install iptables (apt-get install iptables)") {
        Ok(p) => p,
        Err(c) => return c,
    };
    let line = first_line(&out);
    let Some((_, v)) = parse_version(line) else {
        return Check::warn(NAME, format!("unknown version at {}: \"{line}\"", path.display()), None);
    };
    let legacy = line.contains("(legacy)");
    if !legacy && ([1, 8, 0]..[1, 8, 4]).contains(&v) {
        return Check::fail(
            NAME,
            format!("{line} ({})", path.display()),
            "versions 1.8.0 to 1.8.3 in nf_tables mode break pod networking: install 1.8.4 or newer, or switch to legacy mode (update-alternatives --set iptables /usr/sbin/iptables-legacy)",
        );
    }
    Check::pass(NAME, format!("{line} ({})", path.display()))
}

/// The `CNI plugins` check: the plugins the agent's network configuration names, in the folder
/// the agent hands containerd (the first of [`CNI_BIN_DIRS`] that exists).
pub fn cni_plugins(host: &dyn Host) -> Check {
    const NAME: &str = "CNI plugins";
    let install = "install the CNI plugins (apt-get install containernetworking-plugins)";
    let Some(dir) = CNI_BIN_DIRS.iter().map(Path::new).find(|d| host.is_dir(d)) else {
        return Check::fail(NAME, format!("none of {} exists", CNI_BIN_DIRS.join(", ")), install);
    };
    let missing: Vec<&str> = CNI_PLUGINS.iter().copied().filter(|p| !host.exists(&dir.join(p))).collect();
    if !missing.is_empty() {
        return Check::fail(
            NAME,
            format!(
                "{} missing in {} (skiff uses the first of {} that exists)",
                missing.join(", "),
                dir.display(),
                CNI_BIN_DIRS.join(", ")
            ),
            install,
        );
    }
    Check::pass(NAME, format!("{} in {}", CNI_PLUGINS.join(", "), dir.display()))
}

#[cfg(test)]
mod tests {
    use super::super::render;
    use super::super::testing::*;
    use super::*;

    const CONTAINERD_16: &str = "echo 'containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3'";
    const RUNC_11: &str = "echo 'runc version 1.1.5+ds1'; echo 'commit: 1.1.5+ds1-1+deb12u1'; echo 'spec: 1.0.2-dev'";

    #[test]
    fn versions_are_the_first_version_word() {
        assert_eq!(
            parse_version("containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3"),
            Some(("1.6.20~ds1".to_string(), [1, 6, 20]))
        );
        assert_eq!(
            parse_version(
                "containerd github.com/containerd/containerd/v2 v2.0.2 c507a0257ea6462fbd6f5ba4f5c74facb04021f4"
            ),
            Some(("v2.0.2".to_string(), [2, 0, 2]))
        );
        assert_eq!(parse_version("iptables v1.8.9 (nf_tables)"), Some(("v1.8.9".to_string(), [1, 8, 9])));
        assert_eq!(parse_version("runc version 1.0"), Some(("1.0".to_string(), [1, 0, 0])));
        assert_eq!(parse_version("no version here 7"), None);
    }

    #[test]
    fn containerd_present_old_new_and_missing() {
        let f = Fixture::empty();
        assert_eq!(
            render(&containerd(&f)),
            "FAIL  containerd: not found on PATH; install containerd 1.6 or newer (apt-get install containerd)"
        );
        f.exe("/usr/bin/containerd", CONTAINERD_16);
        assert_eq!(render(&containerd(&f)), "pass  containerd: 1.6.20~ds1 (/usr/bin/containerd)");
        f.exe(
            "/usr/bin/containerd",
            "echo 'containerd github.com/containerd/containerd 1.4.13~ds1 1.4.13~ds1-1~deb11u4'",
        );
        assert_eq!(
            render(&containerd(&f)),
            "FAIL  containerd: 1.4.13~ds1 at /usr/bin/containerd is older than 1.6; install containerd 1.6 or newer (apt-get install containerd)"
        );
        f.exe("/usr/local/bin/containerd", "echo 'containerd containerd.io v2.0.2 c507a02'");
        assert_eq!(
            render(&containerd(&f)),
            "warn  containerd: v2.0.2 (/usr/local/bin/containerd): skiff is tested with containerd 1.6 and 1.7"
        );
        f.exe("/usr/local/bin/containerd", "echo 'containerd, the best'");
        assert_eq!(
            render(&containerd(&f)),
            "warn  containerd: unknown version at /usr/local/bin/containerd: \"containerd, the best\""
        );
        f.file("/usr/local/bin/containerd", "\x7fELF broken");
        assert_eq!(
            render(&containerd(&f)),
            "FAIL  containerd: cannot run /usr/local/bin/containerd --version: Exec format error (os error 8); install containerd 1.6 or newer (apt-get install containerd)"
        );
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(f.local("/usr/local/bin/containerd"), std::fs::Permissions::from_mode(0o644)).unwrap();
        // Not executable: PATH goes on to /usr/bin's.
        assert_eq!(
            render(&containerd(&f)),
            "FAIL  containerd: 1.4.13~ds1 at /usr/bin/containerd is older than 1.6; install containerd 1.6 or newer (apt-get install containerd)"
        );
    }

    #[test]
    fn runc_present_and_missing() {
        let f = Fixture::empty();
        assert_eq!(render(&runc(&f)), "FAIL  runc: not found on PATH; install runc (apt-get install runc)");
        f.exe("/usr/sbin/runc", RUNC_11);
        assert_eq!(render(&runc(&f)), "pass  runc: 1.1.5+ds1 (/usr/sbin/runc)");
        f.exe("/usr/sbin/runc", "echo 'runc version 0.1.1'");
        assert_eq!(
            render(&runc(&f)),
            "warn  runc: 0.1.1 at /usr/sbin/runc is older than 1.0; install runc 1.0 or newer (apt-get install runc)"
        );
    }

    #[test]
    fn iptables_and_nft() {
        let f = Fixture::empty();
        f.file("/proc/sys/kernel/osrelease", "6.1.0\n").file("/boot/config-6.1.0", "CONFIG_NF_TABLES=y\n");
        let k = Kernel::read(&f);
        assert_eq!(
            render(&nftables(&f, &k)),
            "warn  nftables: nft not found on PATH; nf_tables built in; apt-get install nftables"
        );
        f.exe("/usr/sbin/nft", "echo 'nftables v1.0.6 (Lester Gooch #5)'");
        assert_eq!(render(&nftables(&f, &k)), "pass  nftables: nft v1.0.6 (/usr/sbin/nft); nf_tables built in");
        assert_eq!(
            render(&iptables(&f)),
            "FAIL  iptables: not found on PATH; install iptables (apt-get install iptables)"
        );
        f.exe("/usr/sbin/iptables", "echo 'iptables v1.8.9 (nf_tables)'");
        assert_eq!(render(&iptables(&f)), "pass  iptables: iptables v1.8.9 (nf_tables) (/usr/sbin/iptables)");
        f.exe("/usr/sbin/iptables", "echo 'iptables v1.8.2 (nf_tables)'");
        assert_eq!(
            render(&iptables(&f)),
            "FAIL  iptables: iptables v1.8.2 (nf_tables) (/usr/sbin/iptables); versions 1.8.0 to 1.8.3 in nf_tables mode break pod networking: install 1.8.4 or newer, or switch to legacy mode (update-alternatives --set iptables /usr/sbin/iptables-legacy)"
        );
        f.exe("/usr/sbin/iptables", "echo 'iptables v1.8.2 (legacy)'");
        assert_eq!(render(&iptables(&f)), "pass  iptables: iptables v1.8.2 (legacy) (/usr/sbin/iptables)");
        f.file("/boot/config-6.1.0", "# CONFIG_NF_TABLES is not set\n");
        assert_eq!(
            render(&nftables(&f, &Kernel::read(&f))),
            "FAIL  nftables: not in this kernel (CONFIG_NF_TABLES); service rules are nftables rules: use a kernel built with CONFIG_NF_TABLES"
        );
    }

    #[test]
    fn cni_plugins_in_the_folder_the_agent_uses() {
        let f = Fixture::empty();
        assert_eq!(
            render(&cni_plugins(&f)),
            "FAIL  CNI plugins: none of /opt/cni/bin, /usr/lib/cni exists; install the CNI plugins (apt-get install containernetworking-plugins)"
        );
        for p in ["bridge", "host-local", "loopback", "portmap", "firewall"] {
            f.exe(&format!("/usr/lib/cni/{p}"), "exit 0");
        }
        assert_eq!(
            render(&cni_plugins(&f)),
            "pass  CNI plugins: bridge, host-local, loopback, portmap in /usr/lib/cni"
        );
        // An /opt/cni/bin without them hides Debian's: the agent would use the empty one.
        f.exe("/opt/cni/bin/bridge", "exit 0");
        assert_eq!(
            render(&cni_plugins(&f)),
            "FAIL  CNI plugins: host-local, loopback, portmap missing in /opt/cni/bin (skiff uses the first of /opt/cni/bin, /usr/lib/cni that exists); install the CNI plugins (apt-get install containernetworking-plugins)"
        );
    }
}
