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

/// CPU time spent busy (all but idle and iowait) over all CPUs since boot, in nanoseconds,
/// from the first line of `/proc/stat` (in USER_HZ ticks, 100 per second on Linux).
pub fn cpu_busy_ns(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line.split_whitespace().skip(1).filter_map(|t| t.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let busy: u64 = ticks.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, t)| t).sum();
    Some(busy * 10_000_000)
}

/// Boot time in seconds since the epoch (`btime` of `/proc/stat`).
pub fn boot_time(stat: &str) -> Option<i64> {
    stat.lines().find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
}

/// One network interface's counters, from `/proc/net/dev`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceStats {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_errors: u64,
    pub tx_bytes: u64,
    pub tx_errors: u64,
}

/// The interfaces of `/proc/net/dev` but loopback.
pub fn interfaces(net_dev: &str) -> Vec<InterfaceStats> {
    net_dev
        .lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let f: Vec<u64> = rest.split_whitespace().filter_map(|x| x.parse().ok()).collect();
            let name = name.trim().to_string();
            (name != "lo" && f.len() >= 11).then(|| InterfaceStats {
                name,
                rx_bytes: f[0],
                rx_errors: f[2],
                tx_bytes: f[8],
                tx_errors: f[10],
            })
        })
        .collect()
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
        let stat = "cpu  10 1 5 1000 7 2 3 0 0 0\ncpu0 10 1 5 1000 7 2 3 0 0 0\nbtime 1700000000\n";
        assert_eq!(cpu_busy_ns(stat), Some(21 * 10_000_000));
        assert_eq!(boot_time(stat), Some(1_700_000_000));
        let dev = "Inter-|   Receive\n face |bytes packets errs drop fifo frame compressed multicast|bytes packets errs\n    lo: 5 1 0 0 0 0 0 0 5 1 0 0 0 0 0 0\n  eth0: 100 2 1 0 0 0 0 0 200 3 4 0 0 0 0 0\n";
        assert_eq!(
            interfaces(dev),
            vec![InterfaceStats { name: "eth0".into(), rx_bytes: 100, rx_errors: 1, tx_bytes: 200, tx_errors: 4 }]
        );
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
