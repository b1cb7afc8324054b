//! What the node reports about its host: capacity, system info, and the measurements behind
//! the pressure conditions, read from `/proc`, `uname` and `statvfs`.
//!
//! Only reading lives here; deciding what a measurement means is [`super::node`]'s.

use std::path::Path;

/// Facts that do not change while the agent runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemInfo {
    /// Logical CPUs this process may use.
    pub cpus: u32,
    pub memory_bytes: u64,
    pub kernel_version: String,
    pub os_image: String,
    /// `amd64`, `arm64`, `arm`, as Kubernetes spells them.
    pub architecture: &'static str,
    pub machine_id: String,
    pub boot_id: String,
}

/// One moment's measurements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub memory_available: u64,
    pub memory_total: u64,
    pub fs_available: u64,
    pub fs_capacity: u64,
    pub inodes_free: u64,
    pub inodes_total: u64,
    pub pids_max: u64,
    pub pids_used: u64,
}

/// The architecture as Kubernetes names it.
pub fn architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        other => other,
    }
}

/// Reads the facts; missing files give empty strings, never an error.
pub fn system_info() -> SystemInfo {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1);
    let kernel_version =
        nix::sys::utsname::uname().ok().and_then(|u| u.release().to_str().map(str::to_string)).unwrap_or_default();
    let os_release = std::fs::read_to_string("/etc/os-release")
        .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
        .unwrap_or_default();
    SystemInfo {
        cpus,
        memory_bytes: meminfo_kib(&meminfo, "MemTotal").unwrap_or(0) * 1024,
        kernel_version,
        os_image: pretty_name(&os_release).unwrap_or_else(|| "Linux".into()),
        architecture: architecture(),
        machine_id: read_trimmed("/etc/machine-id"),
        boot_id: read_trimmed("/proc/sys/kernel/random/boot_id"),
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path).map(|s| s.trim().to_string()).unwrap_or_default()
}

/// `PRETTY_NAME` of an os-release file.
pub fn pretty_name(os_release: &str) -> Option<String> {
    os_release.lines().find_map(|l| {
        let v = l.strip_prefix("PRETTY_NAME=")?;
        Some(v.trim().trim_matches('"').trim_matches('\'').to_string())
    })
}

/// A `/proc/meminfo` value in KiB.
pub fn meminfo_kib(meminfo: &str, key: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Measures memory, the filesystem holding `fs_path`, and process ids.
pub fn usage(fs_path: &Path) -> Usage {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mut u = Usage {
        memory_total: meminfo_kib(&meminfo, "MemTotal").unwrap_or(0) * 1024,
        memory_available: meminfo_kib(&meminfo, "MemAvailable").unwrap_or(0) * 1024,
        ..Default::default()
    };
    // The field types are 32-bit on some 32-bit targets, hence the casts.
    #[allow(clippy::unnecessary_cast)]
    if let Ok(st) = nix::sys::statvfs::statvfs(fs_path) {
        let frag = st.fragment_size() as u64;
        u.fs_capacity = st.blocks() as u64 * frag;
        u.fs_available = st.blocks_available() as u64 * frag;
        u.inodes_total = st.files() as u64;
        u.inodes_free = st.files_available() as u64;
    }
    u.pids_max =
        std::fs::read_to_string("/proc/sys/kernel/pid_max").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(32768);
    u.pids_used = std::fs::read_to_string("/proc/loadavg").ok().and_then(|s| running_tasks(&s)).unwrap_or(0);
    u
}

/// The total task count of `/proc/loadavg` (`0.00 0.01 0.05 1/123 4567` → 123).
pub fn running_tasks(loadavg: &str) -> Option<u64> {
    loadavg.split_whitespace().nth(3)?.split_once('/')?.1.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let meminfo = "MemTotal:       16384000 kB\nMemFree:  100 kB\nMemAvailable:   8000000 kB\n";
        assert_eq!(meminfo_kib(meminfo, "MemTotal"), Some(16384000));
        assert_eq!(meminfo_kib(meminfo, "MemAvailable"), Some(8000000));
        assert_eq!(meminfo_kib(meminfo, "Mem"), None);
        assert_eq!(running_tasks("0.00 0.01 0.05 1/123 4567\n"), Some(123));
        assert_eq!(
            pretty_name("NAME=x\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n").as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
    }

    #[test]
    fn this_host_measures_something() {
        let u = usage(Path::new("/"));
        assert!(u.memory_total > 0 && u.memory_available <= u.memory_total, "{u:?}");
        assert!(u.fs_capacity > 0 && u.fs_available <= u.fs_capacity, "{u:?}");
        assert!(u.pids_used > 0 && u.pids_used < u.pids_max, "{u:?}");
        let info = system_info();
        assert!(info.cpus >= 1 && !info.kernel_version.is_empty(), "{info:?}");
    }
}
