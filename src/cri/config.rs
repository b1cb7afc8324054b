//! containerd's configuration file, as data rendered to TOML text (config `version = 2`, the
//! format containerd 1.6 and 1.7 read).
//!
//! Everything containerd keeps (root, state, socket, the `opt` plugin's directory) goes under
//! one directory that skiff owns, so the box's own containerd, if any, is never touched.
//! What depends on the host (systemd, OOM score permissions, where the CNI plugins live) comes
//! in as [`HostFacts`], detected once by [`HostFacts::detect`], so rendering is a pure
//! function that tests pin to exact text.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::CriError;

/// Where Debian (`containernetworking-plugins`) and upstream's tarballs put the CNI plugins,
/// in order of preference.
pub const CNI_BIN_DIRS: &[&str] = &["/opt/cni/bin", "/usr/lib/cni"];

/// Plugins skiff never uses and whose start-up only costs time and log noise: snapshotters
/// other than overlayfs (they probe the filesystem and skip themselves anyway) and the
/// OpenTelemetry exporter. Nothing the CRI plugin depends on is listed.
pub const DISABLED_PLUGINS: &[&str] = &[
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.tracing.processor.v1.otlp",
    "io.containerd.internal.v1.tracing",
];

/// How containers' cgroups are created: by runc directly, or through systemd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupDriver {
    /// runc writes the cgroup files itself (no systemd as PID 1).
    Cgroupfs,
    /// runc asks systemd for scopes; mixing drivers under systemd confuses both.
    Systemd,
}

/// What the host allows and provides, as far as containerd's configuration cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    /// systemd runs as PID 1 (`/run/systemd/system` exists).
    pub systemd: bool,
    /// This process may lower its own `oom_score_adj` (it has `CAP_SYS_RESOURCE`). Without
    /// it, containerd must not try to give containers a lower score than its own, or every
    /// sandbox fails to start.
    pub can_lower_oom_score: bool,
    /// The first CNI plugin directory that exists (`/opt/cni/bin` when none does, so the
    /// runtime reports its network as not ready rather than pointing nowhere).
    pub cni_bin_dir: PathBuf,
}

impl HostFacts {
    /// Looks at this host and this process.
    pub fn detect() -> HostFacts {
        HostFacts {
            systemd: Path::new("/run/systemd/system").is_dir(),
            can_lower_oom_score: can_lower_oom_score(Path::new("/proc/self/oom_score_adj")),
            cni_bin_dir: first_existing_dir(CNI_BIN_DIRS).unwrap_or_else(|| PathBuf::from(CNI_BIN_DIRS[0])),
        }
    }

    /// The cgroup driver that matches the host's init system.
    pub fn cgroup_driver(&self) -> CgroupDriver {
        if self.systemd { CgroupDriver::Systemd } else { CgroupDriver::Cgroupfs }
    }
}

/// The first of `candidates` that is a directory.
pub fn first_existing_dir(candidates: &[&str]) -> Option<PathBuf> {
    candidates.iter().map(PathBuf::from).find(|p| p.is_dir())
}

/// Tries to lower the OOM score adjustment in `file` (a process's `oom_score_adj`) by one and
/// puts the old value back. Raising it again is always allowed, so the probe leaves the
/// process as it found it. At the floor (-1000) nothing is lower, and the answer is "no".
pub fn can_lower_oom_score(file: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(file) else { return false };
    let Ok(current) = text.trim().parse::<i32>() else { return false };
    if current <= -1000 {
        return false;
    }
    if std::fs::write(file, (current - 1).to_string()).is_err() {
        return false;
    }
    if let Err(e) = std::fs::write(file, current.to_string()) {
        tracing::warn!(file = %file.display(), error = %e, "could not restore oom_score_adj after probing it");
    }
    true
}

/// The settings skiff chooses (as opposed to what the host dictates).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The pause image every pod sandbox runs; skiff provides [`super::pause::IMAGE`] itself.
    pub sandbox_image: String,
    /// Where the CNI network configuration (the conflist) is read from.
    pub cni_conf_dir: PathBuf,
}

/// A complete containerd configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerdConfig {
    /// Persistent data: content store, snapshots, metadata database.
    pub root: String,
    /// Runtime state: sockets, mounts, shims' bundles.
    pub state: String,
    /// The gRPC (and CRI) socket.
    pub socket: String,
    /// The `io.containerd.internal.v1.opt` plugin's directory (default `/opt/containerd`).
    pub opt_dir: String,
    pub sandbox_image: String,
    pub restrict_oom_score_adj: bool,
    pub cgroup_driver: CgroupDriver,
    pub cni_bin_dir: String,
    pub cni_conf_dir: String,
    pub disabled_plugins: Vec<String>,
}

impl ContainerdConfig {
    /// The configuration for a containerd living in `dir` (`dir/root`, `dir/state`,
    /// `dir/containerd.sock`). Paths must be UTF-8, since TOML strings are.
    pub fn new(dir: &Path, settings: &Settings, host: &HostFacts) -> Result<ContainerdConfig, CriError> {
        let utf8 = |p: PathBuf| p.to_str().map(str::to_string).ok_or(CriError::NonUtf8Path { path: p.clone() });
        Ok(ContainerdConfig {
            root: utf8(dir.join("root"))?,
            state: utf8(dir.join("state"))?,
            socket: utf8(dir.join("containerd.sock"))?,
            opt_dir: utf8(dir.join("root").join("opt"))?,
            sandbox_image: settings.sandbox_image.clone(),
            restrict_oom_score_adj: !host.can_lower_oom_score,
            cgroup_driver: host.cgroup_driver(),
            cni_bin_dir: utf8(host.cni_bin_dir.clone())?,
            cni_conf_dir: utf8(settings.cni_conf_dir.clone())?,
            disabled_plugins: DISABLED_PLUGINS.iter().map(|s| s.to_string()).collect(),
        })
    }

    /// The TOML text containerd reads with `--config`.
    pub fn render(&self) -> String {
        const CRI: &str = "plugins.\"io.containerd.grpc.v1.cri\"";
        let mut out = String::new();
        // Writing to a String cannot fail; the results are ignored for that reason only.
        let _ = writeln!(out, "# Generated by skiff; rewritten at every start.");
        let _ = writeln!(out, "version = 2");
        let _ = writeln!(out, "root = {}", quote(&self.root));
        let _ = writeln!(out, "state = {}", quote(&self.state));
        let disabled: Vec<String> = self.disabled_plugins.iter().map(|p| quote(p)).collect();
        let _ = writeln!(out, "disabled_plugins = [{}]", disabled.join(", "));
        let _ = writeln!(out);
        let _ = writeln!(out, "[grpc]");
        let _ = writeln!(out, "  address = {}", quote(&self.socket));
        let _ = writeln!(out);
        let _ = writeln!(out, "[plugins.\"io.containerd.internal.v1.opt\"]");
        let _ = writeln!(out, "  path = {}", quote(&self.opt_dir));
        let _ = writeln!(out);
        let _ = writeln!(out, "[{CRI}]");
        let _ = writeln!(out, "  sandbox_image = {}", quote(&self.sandbox_image));
        let _ = writeln!(out, "  restrict_oom_score_adj = {}", self.restrict_oom_score_adj);
        // The pods' network namespaces are mounted under the state dir, inside skiff's data
        // dir, not among the host's in /run/netns: what is skiff's stays findable by path.
        let _ = writeln!(out, "  netns_mounts_under_state_dir = true");
        let _ = writeln!(out);
        let _ = writeln!(out, "[{CRI}.containerd]");
        let _ = writeln!(out, "  snapshotter = \"overlayfs\"");
        let _ = writeln!(out, "  default_runtime_name = \"runc\"");
        let _ = writeln!(out);
        let _ = writeln!(out, "[{CRI}.containerd.runtimes.runc]");
        let _ = writeln!(out, "  runtime_type = \"io.containerd.runc.v2\"");
        let _ = writeln!(out);
        let _ = writeln!(out, "[{CRI}.containerd.runtimes.runc.options]");
        let _ = writeln!(out, "  SystemdCgroup = {}", self.cgroup_driver == CgroupDriver::Systemd);
        let _ = writeln!(out);
        let _ = writeln!(out, "[{CRI}.cni]");
        let _ = writeln!(out, "  bin_dir = {}", quote(&self.cni_bin_dir));
        let _ = writeln!(out, "  conf_dir = {}", quote(&self.cni_conf_dir));
        out
    }
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(systemd: bool, can_lower: bool) -> HostFacts {
        HostFacts { systemd, can_lower_oom_score: can_lower, cni_bin_dir: PathBuf::from("/usr/lib/cni") }
    }

    fn settings() -> Settings {
        Settings {
            sandbox_image: "registry.k8s.io/pause:3.10".to_string(),
            cni_conf_dir: PathBuf::from("/var/lib/skiff/agent/etc/cni/net.d"),
        }
    }

    #[test]
    fn renders_cgroupfs_restricted_config() {
        let config =
            ContainerdConfig::new(Path::new("/var/lib/skiff/agent/containerd"), &settings(), &facts(false, false))
                .expect("config");
        let expected = r#"# Generated by skiff; rewritten at every start.
version = 2
root = "/var/lib/skiff/agent/containerd/root"
state = "/var/lib/skiff/agent/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "/var/lib/skiff/agent/containerd/containerd.sock"

[plugins."io.containerd.internal.v1.opt"]
  path = "/var/lib/skiff/agent/containerd/root/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true

[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  SystemdCgroup = false

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "/var/lib/skiff/agent/etc/cni/net.d"
"#;
        assert_eq!(config.render(), expected);
    }

    #[test]
    fn systemd_host_with_oom_privilege_gets_systemd_cgroups_and_no_restriction() {
        let config = ContainerdConfig::new(Path::new("/d"), &settings(), &facts(true, true)).expect("config");
        let text = config.render();
        assert!(text.contains("\n  SystemdCgroup = true\n"), "{text}");
        assert!(text.contains("\n  restrict_oom_score_adj = false\n"), "{text}");
        assert!(!text.contains("SystemdCgroup = false"), "{text}");
        assert!(text.contains("root = \"/d/root\"\nstate = \"/d/state\"\n"), "{text}");
        assert!(text.contains("[grpc]\n  address = \"/d/containerd.sock\"\n"), "{text}");
    }

    #[test]
    fn quotes_paths_as_toml_basic_strings() {
        assert_eq!(quote(r#"/a "b"\c"#), r#""/a \"b\"\\c""#);
        assert_eq!(quote("x\ny\u{1}"), "\"x\\ny\\u0001\"");
    }

    #[test]
    fn refuses_non_utf8_paths() {
        use std::os::unix::ffi::OsStrExt;
        let dir = Path::new(std::ffi::OsStr::from_bytes(b"/tmp/\xff"));
        let err = ContainerdConfig::new(dir, &settings(), &facts(false, false)).expect_err("non-UTF-8");
        assert!(err.to_string().contains("UTF-8"), "{err}");
    }

    #[test]
    fn first_existing_dir_skips_missing_ones() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let present = tmp.path().join("present");
        std::fs::create_dir(&present).expect("mkdir");
        let missing = tmp.path().join("missing");
        let candidates = [missing.to_str().expect("utf8"), present.to_str().expect("utf8")];
        assert_eq!(first_existing_dir(&candidates), Some(present));
        assert_eq!(first_existing_dir(&[missing.to_str().expect("utf8")]), None);
    }

    #[test]
    fn oom_probe_on_a_plain_file_lowers_and_restores() {
        // A regular file accepts any write, like a process that may lower its score.
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("oom_score_adj");
        std::fs::write(&file, "0\n").expect("write");
        assert!(can_lower_oom_score(&file));
        assert_eq!(std::fs::read_to_string(&file).expect("read"), "0");
        std::fs::write(&file, "-1000\n").expect("write");
        assert!(!can_lower_oom_score(&file), "nothing is below -1000");
        assert!(!can_lower_oom_score(&tmp.path().join("absent")));
    }

    #[test]
    fn oom_probe_matches_what_the_kernel_allows_this_process() {
        // Ask the kernel directly, on a child process, whether a lower score sticks.
        let out = std::process::Command::new("sh")
            .args(["-c", "v=$(cat /proc/self/oom_score_adj); echo $((v-1)) > /proc/self/oom_score_adj 2>/dev/null && echo yes || echo no"])
            .output()
            .expect("sh");
        let kernel_says = String::from_utf8_lossy(&out.stdout).trim() == "yes";
        let before = std::fs::read_to_string("/proc/self/oom_score_adj").expect("read");
        assert_eq!(can_lower_oom_score(Path::new("/proc/self/oom_score_adj")), kernel_says);
        assert_eq!(
            std::fs::read_to_string("/proc/self/oom_score_adj").expect("read"),
            before,
            "probe restores the score"
        );
    }
}
