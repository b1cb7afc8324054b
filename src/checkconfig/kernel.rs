//! The kernel: its build options, modules, namespaces, overlayfs and the networking pieces
//! pods and services use (netfilter, br_netfilter, VXLAN, bridge, veth).
//!
//! The build options come from `/proc/config.gz` or `/boot/config-<release>`. Without either,
//! the modules tell what they can: loaded ones (`/proc/modules`, `/sys/module`), built-in ones
//! (`/lib/modules/<release>/modules.builtin`) and loadable ones (`modules.dep`). When nothing
//! tells, a check says "cannot tell" as a warning rather than failing.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use super::{Check, Host};

/// How far the kernel supports a feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// Compiled into the kernel.
    Builtin,
    /// A module that is loaded.
    Loaded,
    /// A module that exists but is not loaded.
    Loadable,
    /// Known to be absent.
    Missing,
    /// Nothing readable tells.
    Unknown,
}

/// A kernel feature: its build option (without `CONFIG_`) and its module.
#[derive(Debug, Clone, Copy)]
pub struct Feature {
    pub option: &'static str,
    pub module: &'static str,
}

const OVERLAY_FS: Feature = Feature { option: "OVERLAY_FS", module: "overlay" };
const BRIDGE_NETFILTER: Feature = Feature { option: "BRIDGE_NETFILTER", module: "br_netfilter" };
const VXLAN: Feature = Feature { option: "VXLAN", module: "vxlan" };
const BRIDGE: Feature = Feature { option: "BRIDGE", module: "bridge" };
const VETH: Feature = Feature { option: "VETH", module: "veth" };
const NF_CONNTRACK: Feature = Feature { option: "NF_CONNTRACK", module: "nf_conntrack" };
const NF_NAT: Feature = Feature { option: "NF_NAT", module: "nf_nat" };
/// nftables in the kernel.
pub const NF_TABLES: Feature = Feature { option: "NF_TABLES", module: "nf_tables" };

/// Namespaces a container cannot do without, and the options that provide them.
const REQUIRED_NAMESPACES: &[(&str, &str)] = &[
    ("mnt", "CONFIG_NAMESPACES"),
    ("uts", "CONFIG_UTS_NS"),
    ("ipc", "CONFIG_IPC_NS"),
    ("pid", "CONFIG_PID_NS"),
    ("net", "CONFIG_NET_NS"),
];
/// Namespaces only some pods use.
const OPTIONAL_NAMESPACES: &[(&str, &str)] = &[("cgroup", "CONFIG_CGROUPS"), ("user", "CONFIG_USER_NS")];

/// The kernel's build options as read from one file.
#[derive(Debug, Clone)]
struct Config {
    source: PathBuf,
    /// Option (without `CONFIG_`) → `y`, `m` or `n`.
    values: BTreeMap<String, char>,
}

/// What can be told about the running kernel.
#[derive(Debug, Clone, Default)]
pub struct Kernel {
    /// `uname -r`, from `/proc/sys/kernel/osrelease`.
    pub release: Option<String>,
    config: Option<Config>,
    /// Modules loaded (`/proc/modules`) or present in `/sys/module`.
    loaded: Option<BTreeSet<String>>,
    /// `modules.builtin` of this release.
    builtin: Option<BTreeSet<String>>,
    /// `modules.dep` of this release: every module that can be loaded.
    available: Option<BTreeSet<String>>,
}

impl Kernel {
    /// Reads what there is to read.
    pub fn read(host: &dyn Host) -> Kernel {
        let release = host
            .read_text(Path::new("/proc/sys/kernel/osrelease"))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        let mut candidates = vec![PathBuf::from("/proc/config.gz")];
        if let Some(r) = &release {
            candidates.push(PathBuf::from(format!("/boot/config-{r}")));
        }
        let config = candidates.into_iter().find_map(|p| read_config(host, &p));
        let mut loaded: Option<BTreeSet<String>> = None;
        if let Ok(text) = host.read_text(Path::new("/proc/modules")) {
            loaded
                .get_or_insert_default()
                .extend(text.lines().filter_map(|l| l.split_whitespace().next()).map(normalize));
        }
        if let Ok(names) = host.list_dir(Path::new("/sys/module")) {
            loaded.get_or_insert_default().extend(names.iter().map(|n| normalize(n)));
        }
        let modules_dir = release.as_ref().map(|r| PathBuf::from(format!("/lib/modules/{r}")));
        let module_list = |file: &str| -> Option<BTreeSet<String>> {
            let text = host.read_text(&modules_dir.as_ref()?.join(file)).ok()?;
            Some(text.lines().filter_map(module_of_path).collect())
        };
        let builtin = module_list("modules.builtin");
        let available = module_list("modules.dep");
        Kernel { release, config, loaded, builtin, available }
    }

    /// How far the kernel supports `f`.
    pub fn support(&self, f: Feature) -> Support {
        let loaded = self.loaded.as_ref().is_some_and(|s| s.contains(f.module));
        if let Some(cfg) = &self.config {
            return match cfg.values.get(f.option) {
                Some('y') => Support::Builtin,
                Some('m') if loaded => Support::Loaded,
                Some('m') => Support::Loadable,
                _ => Support::Missing,
            };
        }
        if self.builtin.as_ref().is_some_and(|s| s.contains(f.module)) {
            return Support::Builtin;
        }
        if loaded {
            return Support::Loaded;
        }
        if self.available.as_ref().is_some_and(|s| s.contains(f.module)) {
            return Support::Loadable;
        }
        if self.builtin.is_some() && self.available.is_some() {
            return Support::Missing;
        }
        Support::Unknown
    }

    /// The `kernel config` check: where the build options were read, or what stands in.
    pub fn config_check(&self) -> Check {
        const NAME: &str = "kernel config";
        if let Some(cfg) = &self.config {
            return Check::pass(NAME, cfg.source.display().to_string());
        }
        let release = self.release.as_deref().unwrap_or("<release>");
        let looked = format!("not found (/proc/config.gz, /boot/config-{release})");
        let fix = Some("load the configs module (modprobe configs) for exact answers".to_string());
        if self.builtin.is_some() || self.available.is_some() || self.loaded.is_some() {
            Check::warn(NAME, format!("{looked}; the module lists stand in for it"), fix)
        } else {
            Check::warn(NAME, format!("{looked}, and no module lists: the kernel checks cannot tell"), fix)
        }
    }
}

/// Reads a kernel config file, gzip-compressed or plain.
fn read_config(host: &dyn Host, path: &Path) -> Option<Config> {
    let bytes = host.read(path).ok()?;
    let text = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut s = String::new();
        flate2::read::GzDecoder::new(&bytes[..]).read_to_string(&mut s).ok()?;
        s
    } else {
        String::from_utf8_lossy(&bytes).into_owned()
    };
    let mut values = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("CONFIG_") {
            if let Some((k, v)) = rest.split_once('=') {
                let v = match v {
                    "y" => 'y',
                    "m" => 'm',
                    _ => continue,
                };
                values.insert(k.to_string(), v);
            }
        } else if let Some(k) = line.strip_prefix("# CONFIG_").and_then(|l| l.strip_suffix(" is not set")) {
            values.insert(k.to_string(), 'n');
        }
    }
    if values.is_empty() {
        return None;
    }
    Some(Config { source: path.to_path_buf(), values })
}

/// Module names use `_` where file names may use `-`.
fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// The module name of a `modules.builtin` or `modules.dep` line
/// (`kernel/net/bridge/br_netfilter.ko.xz: ...` → `br_netfilter`).
fn module_of_path(line: &str) -> Option<String> {
    let path = line.split(':').next()?.trim();
    let file = path.rsplit('/').next()?;
    let name = file.split(".ko").next()?;
    if name.is_empty() { None } else { Some(normalize(name)) }
}

/// The `namespaces` check, from `/proc/self/ns`.
pub fn namespaces(host: &dyn Host) -> Check {
    const NAME: &str = "namespaces";
    let names: BTreeSet<String> = match host.list_dir(Path::new("/proc/self/ns")) {
        Ok(n) => n.into_iter().collect(),
        Err(e) => return Check::warn(NAME, format!("cannot tell: cannot read /proc/self/ns: {e}"), None),
    };
    let missing = |list: &[(&'static str, &'static str)]| -> Vec<(&'static str, &'static str)> {
        list.iter().filter(|(ns, _)| !names.contains(*ns)).copied().collect()
    };
    let (required, optional) = (missing(REQUIRED_NAMESPACES), missing(OPTIONAL_NAMESPACES));
    let list =
        |m: &[(&str, &str)], i: usize| m.iter().map(|p| if i == 0 { p.0 } else { p.1 }).collect::<Vec<_>>().join(", ");
    if !required.is_empty() {
        return Check::fail(
            NAME,
            format!("missing {}", list(&required, 0)),
            format!("use a kernel built with {}", list(&required, 1)),
        );
    }
    if !optional.is_empty() {
        return Check::warn(
            NAME,
            format!("missing {} (only some pods need them)", list(&optional, 0)),
            Some(format!("use a kernel built with {}", list(&optional, 1))),
        );
    }
    let all: Vec<&str> = REQUIRED_NAMESPACES.iter().chain(OPTIONAL_NAMESPACES).map(|p| p.0).collect();
    Check::pass(NAME, all.join(", "))
}

/// How to load a module now and at every boot.
fn load_module(module: &str) -> String {
    format!("run \"modprobe {module}\" and add {module} to /etc/modules-load.d/skiff.conf")
}

/// The `overlayfs` check: containerd's snapshotter stores image layers on it.
pub fn overlayfs(host: &dyn Host, k: &Kernel) -> Check {
    const NAME: &str = "overlayfs";
    let filesystems = host.read_text(Path::new("/proc/filesystems"));
    if filesystems.as_ref().is_ok_and(|t| t.lines().any(|l| l.split_whitespace().last() == Some("overlay"))) {
        return Check::pass(NAME, "supported");
    }
    match k.support(OVERLAY_FS) {
        Support::Builtin | Support::Loaded => Check::pass(NAME, "supported"),
        // The kernel loads a file system's module itself on the first mount.
        Support::Loadable => Check::pass(NAME, "module overlay, loaded on first use"),
        Support::Missing => Check::fail(
            NAME,
            "not in this kernel (CONFIG_OVERLAY_FS)",
            "containerd keeps image layers on overlayfs: use a kernel built with CONFIG_OVERLAY_FS",
        ),
        Support::Unknown => match filesystems {
            Ok(_) => Check::warn(
                NAME,
                "cannot tell: not in /proc/filesystems, and nothing tells whether the module exists",
                Some(load_module("overlay")),
            ),
            Err(e) => Check::warn(NAME, format!("cannot tell: cannot read /proc/filesystems: {e}"), None),
        },
    }
}

/// Names `features` with their support, failing when one is missing.
fn features_check(name: &str, k: &Kernel, features: &[Feature], why: &str) -> Check {
    let supports: Vec<(Feature, Support)> = features.iter().map(|f| (*f, k.support(*f))).collect();
    let missing: Vec<String> =
        supports.iter().filter(|(_, s)| *s == Support::Missing).map(|(f, _)| format!("CONFIG_{}", f.option)).collect();
    if !missing.is_empty() {
        return Check::fail(
            name,
            format!("not in this kernel ({})", missing.join(", ")),
            format!("{why}: use a kernel built with {}", missing.join(", ")),
        );
    }
    let unknown: Vec<&str> = supports.iter().filter(|(_, s)| *s == Support::Unknown).map(|(f, _)| f.module).collect();
    if !unknown.is_empty() {
        return Check::warn(name, format!("cannot tell whether the kernel has {}", unknown.join(", ")), None);
    }
    // Netfilter, bridge and veth modules are loaded by the kernel when first used.
    let described: Vec<String> = supports
        .iter()
        .map(|(f, s)| match s {
            Support::Builtin => format!("{} built in", f.module),
            Support::Loaded => format!("{} loaded", f.module),
            _ => format!("{} as a module", f.module),
        })
        .collect();
    Check::pass(name, described.join(", "))
}

/// The `netfilter` check: connection tracking and NAT, for services and masquerading.
pub fn netfilter(k: &Kernel) -> Check {
    features_check("netfilter", k, &[NF_CONNTRACK, NF_NAT], "services and pod traffic leaving the node need them")
}

/// The `bridge and veth` check: every pod's interface is a veth on the node's bridge.
pub fn bridge_and_veth(k: &Kernel) -> Check {
    features_check("bridge and veth", k, &[BRIDGE, VETH], "the CNI bridge plugin needs them")
}

/// The `br_netfilter` check: bridged pod traffic must pass through netfilter, or a pod that
/// reaches a Service backed by a pod on the same node gets no answer.
pub fn br_netfilter(host: &dyn Host, k: &Kernel) -> Check {
    const NAME: &str = "br_netfilter";
    let sysctl = Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables");
    // The sysctl exists only while the module is in the kernel.
    let support = match k.support(BRIDGE_NETFILTER) {
        Support::Loadable | Support::Unknown if host.exists(sysctl) => Support::Loaded,
        s => s,
    };
    match support {
        Support::Builtin | Support::Loaded => {
            if host.read_text(sysctl).is_ok_and(|v| v.trim() == "0") {
                return Check::warn(
                    NAME,
                    "net.bridge.bridge-nf-call-iptables is 0",
                    Some("run \"sysctl -w net.bridge.bridge-nf-call-iptables=1\" and set it in /etc/sysctl.d/".into()),
                );
            }
            Check::pass(NAME, if support == Support::Builtin { "built in" } else { "loaded" })
        }
        Support::Loadable => Check::warn(NAME, "module br_netfilter not loaded", Some(load_module("br_netfilter"))),
        Support::Missing => Check::fail(
            NAME,
            "not in this kernel (CONFIG_BRIDGE_NETFILTER)",
            "pods reaching Services backed by pods on their own node need it: use a kernel built with CONFIG_BRIDGE_NETFILTER",
        ),
        Support::Unknown => Check::warn(NAME, "cannot tell whether the kernel has br_netfilter", None),
    }
}

/// The `vxlan` check: the overlay between nodes. A single box works without it.
pub fn vxlan(k: &Kernel) -> Check {
    const NAME: &str = "vxlan";
    match k.support(VXLAN) {
        Support::Builtin => Check::pass(NAME, "built in"),
        Support::Loaded => Check::pass(NAME, "loaded"),
        Support::Loadable => Check::warn(NAME, "module vxlan not loaded", Some(load_module("vxlan"))),
        Support::Missing => Check::warn(
            NAME,
            "not in this kernel (CONFIG_VXLAN)",
            Some("pods on other nodes are reached through VXLAN: use a kernel built with CONFIG_VXLAN".into()),
        ),
        Support::Unknown => Check::warn(NAME, "cannot tell whether the kernel has vxlan", None),
    }
}

#[cfg(test)]
mod tests {
    use super::super::render;
    use super::super::testing::*;
    use super::*;

    const RELEASE: &str = "6.1.0-rpi7-rpi-v8";

    fn gz(text: &str) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(text.as_bytes()).unwrap();
        e.finish().unwrap()
    }

    /// A host with a kernel config and nothing else about modules.
    fn with_config(config: &str) -> Fixture {
        let f = Fixture::empty();
        f.file("/proc/sys/kernel/osrelease", format!("{RELEASE}\n")).file("/proc/config.gz", gz(config));
        f
    }

    const FULL_CONFIG: &str = "CONFIG_OVERLAY_FS=m
CONFIG_BRIDGE_NETFILTER=m
CONFIG_VXLAN=m
CONFIG_BRIDGE=m
CONFIG_VETH=m
CONFIG_NF_CONNTRACK=m
CONFIG_NF_NAT=y
CONFIG_NF_TABLES=m
";

    #[test]
    fn the_config_is_read_from_proc_config_gz_then_boot() {
        let f = with_config(FULL_CONFIG);
        let k = Kernel::read(&f);
        assert_eq!(render(&k.config_check()), "pass  kernel config: /proc/config.gz");
        assert_eq!(k.support(NF_NAT), Support::Builtin);
        assert_eq!(k.support(BRIDGE_NETFILTER), Support::Loadable);
        std::fs::remove_file(f.local("/proc/config.gz")).unwrap();
        f.file(&format!("/boot/config-{RELEASE}"), "# CONFIG_VXLAN is not set\nCONFIG_VETH=y\n");
        let k = Kernel::read(&f);
        assert_eq!(render(&k.config_check()), format!("pass  kernel config: /boot/config-{RELEASE}"));
        assert_eq!(k.support(VXLAN), Support::Missing);
        assert_eq!(k.support(OVERLAY_FS), Support::Missing);
        assert_eq!(k.support(VETH), Support::Builtin);
    }

    #[test]
    fn modules_stand_in_for_a_missing_config() {
        let f = Fixture::empty();
        f.file("/proc/sys/kernel/osrelease", format!("{RELEASE}\n"))
            .file("/proc/modules", "vxlan 94208 0 - Live 0x0000000000000000\nbridge 290816 1 br_netfilter, Live 0x0\n")
            .file(
                &format!("/lib/modules/{RELEASE}/modules.builtin"),
                "kernel/drivers/net/veth.ko\nkernel/fs/overlayfs/overlay.ko\n",
            )
            .file(
                &format!("/lib/modules/{RELEASE}/modules.dep"),
                "kernel/net/bridge/br_netfilter.ko.xz: kernel/net/bridge/bridge.ko.xz\nkernel/net/bridge/bridge.ko.xz:\nkernel/drivers/net/vxlan/vxlan.ko.xz:\n",
            );
        let k = Kernel::read(&f);
        assert_eq!(
            render(&k.config_check()),
            format!(
                "warn  kernel config: not found (/proc/config.gz, /boot/config-{RELEASE}); the module lists stand in for it; load the configs module (modprobe configs) for exact answers"
            )
        );
        assert_eq!(k.support(VETH), Support::Builtin);
        assert_eq!(k.support(VXLAN), Support::Loaded);
        assert_eq!(k.support(BRIDGE_NETFILTER), Support::Loadable);
        assert_eq!(k.support(NF_TABLES), Support::Missing);
        assert_eq!(render(&vxlan(&k)), "pass  vxlan: loaded");
        assert_eq!(
            render(&br_netfilter(&f, &k)),
            "warn  br_netfilter: module br_netfilter not loaded; run \"modprobe br_netfilter\" and add br_netfilter to /etc/modules-load.d/skiff.conf"
        );
        // Loading it makes the sysctl appear, which is proof enough.
        f.file("/proc/sys/net/bridge/bridge-nf-call-iptables", "1\n");
        assert_eq!(render(&br_netfilter(&f, &k)), "pass  br_netfilter: loaded");
        f.file("/proc/sys/net/bridge/bridge-nf-call-iptables", "0\n");
        assert_eq!(
            render(&br_netfilter(&f, &k)),
            "warn  br_netfilter: net.bridge.bridge-nf-call-iptables is 0; run \"sysctl -w net.bridge.bridge-nf-call-iptables=1\" and set it in /etc/sysctl.d/"
        );
    }

    #[test]
    fn nothing_to_read_means_cannot_tell_not_fail() {
        let f = Fixture::empty();
        let k = Kernel::read(&f);
        assert_eq!(
            render(&k.config_check()),
            "warn  kernel config: not found (/proc/config.gz, /boot/config-<release>), and no module lists: the kernel checks cannot tell; load the configs module (modprobe configs) for exact answers"
        );
        assert_eq!(render(&vxlan(&k)), "warn  vxlan: cannot tell whether the kernel has vxlan");
        assert_eq!(
            render(&br_netfilter(&f, &k)),
            "warn  br_netfilter: cannot tell whether the kernel has br_netfilter"
        );
        assert_eq!(render(&netfilter(&k)), "warn  netfilter: cannot tell whether the kernel has nf_conntrack, nf_nat");
        assert_eq!(
            render(&overlayfs(&f, &k)),
            "warn  overlayfs: cannot tell: cannot read /proc/filesystems: No such file or directory (os error 2)"
        );
        assert_eq!(
            render(&namespaces(&f)),
            "warn  namespaces: cannot tell: cannot read /proc/self/ns: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn overlayfs_from_proc_filesystems_or_the_config() {
        let f = with_config(FULL_CONFIG);
        let k = Kernel::read(&f);
        f.file("/proc/filesystems", "nodev\tsysfs\nnodev\ttmpfs\n\text4\nnodev\toverlay\n");
        assert_eq!(render(&overlayfs(&f, &k)), "pass  overlayfs: supported");
        f.file("/proc/filesystems", "nodev\tsysfs\n\text4\n");
        assert_eq!(render(&overlayfs(&f, &k)), "pass  overlayfs: module overlay, loaded on first use");
        let f = with_config("# CONFIG_OVERLAY_FS is not set\nCONFIG_VETH=y\n");
        f.file("/proc/filesystems", "nodev\tsysfs\n\text4\n");
        assert_eq!(
            render(&overlayfs(&f, &Kernel::read(&f))),
            "FAIL  overlayfs: not in this kernel (CONFIG_OVERLAY_FS); containerd keeps image layers on overlayfs: use a kernel built with CONFIG_OVERLAY_FS"
        );
        let f = Fixture::empty();
        f.file("/proc/filesystems", "nodev\tsysfs\n\text4\n");
        assert_eq!(
            render(&overlayfs(&f, &Kernel::read(&f))),
            "warn  overlayfs: cannot tell: not in /proc/filesystems, and nothing tells whether the module exists; run \"modprobe overlay\" and add overlay to /etc/modules-load.d/skiff.conf"
        );
    }

    #[test]
    fn networking_features() {
        let f = with_config(FULL_CONFIG);
        f.file("/proc/modules", "nf_conntrack 172032 2 nf_nat, Live 0x0\n");
        let k = Kernel::read(&f);
        assert_eq!(render(&netfilter(&k)), "pass  netfilter: nf_conntrack loaded, nf_nat built in");
        assert_eq!(render(&bridge_and_veth(&k)), "pass  bridge and veth: bridge as a module, veth as a module");
        assert_eq!(
            render(&vxlan(&k)),
            "warn  vxlan: module vxlan not loaded; run \"modprobe vxlan\" and add vxlan to /etc/modules-load.d/skiff.conf"
        );
        let f = with_config("CONFIG_NF_CONNTRACK=y\n# CONFIG_NF_NAT is not set\nCONFIG_BRIDGE=y\n");
        let k = Kernel::read(&f);
        assert_eq!(
            render(&netfilter(&k)),
            "FAIL  netfilter: not in this kernel (CONFIG_NF_NAT); services and pod traffic leaving the node need them: use a kernel built with CONFIG_NF_NAT"
        );
        assert_eq!(
            render(&bridge_and_veth(&k)),
            "FAIL  bridge and veth: not in this kernel (CONFIG_VETH); the CNI bridge plugin needs them: use a kernel built with CONFIG_VETH"
        );
        assert_eq!(
            render(&br_netfilter(&f, &k)),
            "FAIL  br_netfilter: not in this kernel (CONFIG_BRIDGE_NETFILTER); pods reaching Services backed by pods on their own node need it: use a kernel built with CONFIG_BRIDGE_NETFILTER"
        );
        assert_eq!(
            render(&vxlan(&k)),
            "warn  vxlan: not in this kernel (CONFIG_VXLAN); pods on other nodes are reached through VXLAN: use a kernel built with CONFIG_VXLAN"
        );
    }

    #[test]
    fn namespaces_required_and_optional() {
        let f = Fixture::empty();
        for ns in ["cgroup", "ipc", "mnt", "net", "pid", "pid_for_children", "time", "user", "uts"] {
            f.file(&format!("/proc/self/ns/{ns}"), "");
        }
        assert_eq!(render(&namespaces(&f)), "pass  namespaces: mnt, uts, ipc, pid, net, cgroup, user");
        std::fs::remove_file(f.local("/proc/self/ns/user")).unwrap();
        assert_eq!(
            render(&namespaces(&f)),
            "warn  namespaces: missing user (only some pods need them); use a kernel built with CONFIG_USER_NS"
        );
        std::fs::remove_file(f.local("/proc/self/ns/net")).unwrap();
        std::fs::remove_file(f.local("/proc/self/ns/pid")).unwrap();
        assert_eq!(
            render(&namespaces(&f)),
            "FAIL  namespaces: missing pid, net; use a kernel built with CONFIG_PID_NS, CONFIG_NET_NS"
        );
    }
}
