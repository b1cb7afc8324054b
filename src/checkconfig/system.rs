//! The box around the kernel: the ports skiff listens on and the clock.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::host::PortState;
use super::{Check, Host};

/// The ports checked, with what listens there: the defaults of `--https-listen-port` and
/// `--kubelet-arg port=`.
pub const PORTS: &[(u16, &str)] = &[(6443, "API server"), (10250, "kubelet API")];

/// Clocks before this year are unset rather than wrong by a little: a Pi without a real-time
/// clock boots in 1970 until NTP answers.
const PLAUSIBLE_YEAR: i32 = 2024;

/// The `port <n> (<what>)` check: free, or already skiff's.
pub fn port(host: &dyn Host, port: u16, what: &str) -> Check {
    let name = format!("port {port} ({what})");
    match host.port_state(port) {
        PortState::Free => Check::pass(name, "free"),
        PortState::Unknown(e) => Check::warn(name, format!("cannot tell: {e}"), None),
        PortState::InUse => match holder(host, port) {
            Some((pid, comm)) if comm == "skiff" => Check::pass(name, format!("in use by skiff (pid {pid})")),
            holder => {
                let by = match holder {
                    Some((pid, comm)) => format!("{comm} (pid {pid})"),
                    None => "another program".to_string(),
                };
                let flag = if port == 10250 { "--kubelet-arg port=" } else { "--https-listen-port" };
                Check::warn(
                    name,
                    format!("in use by {by}"),
                    Some(format!(
                        "skiff's {what} cannot listen there: stop that program or choose another port ({flag})"
                    )),
                )
            }
        },
    }
}

/// The process listening on a TCP port of this network namespace, by the socket's inode in
/// `/proc/net/tcp{,6}` and the file descriptors in `/proc/<pid>/fd`.
fn holder(host: &dyn Host, port: u16) -> Option<(u32, String)> {
    let mut inodes = BTreeSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = host.read_text(Path::new(table)) else { continue };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else { continue };
            let local_port = local.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
            // 0A is TCP_LISTEN.
            if local_port == Some(port) && *state == "0A" && *inode != "0" {
                inodes.insert(format!("socket:[{inode}]"));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    let pids = host.list_dir(Path::new("/proc")).ok()?;
    for pid in pids.iter().filter_map(|p| p.parse::<u32>().ok()) {
        let fd_dir = PathBuf::from(format!("/proc/{pid}/fd"));
        let Ok(fds) = host.list_dir(&fd_dir) else { continue };
        let owns = fds.iter().any(|fd| {
            host.read_link(&fd_dir.join(fd)).is_ok_and(|target| inodes.contains(target.to_string_lossy().as_ref()))
        });
        if owns {
            let comm = host.read_text(Path::new(&format!("/proc/{pid}/comm"))).unwrap_or_default();
            return Some((pid, comm.trim().to_string()));
        }
    }
    None
}

/// The `clock` check: a year before 2024 means the clock was never set.
pub fn clock(host: &dyn Host) -> Check {
    use chrono::Datelike;
    const NAME: &str = "clock";
    let now: chrono::DateTime<chrono::Utc> = host.now().into();
    let shown = now.format("%Y-%m-%d %H:%M UTC").to_string();
    if now.year() < PLAUSIBLE_YEAR {
        return Check::warn(
            NAME,
            format!("{shown} looks unset"),
            Some(
                "set the time (timedatectl set-ntp true, or an NTP client such as chrony): certificates are only valid from the time they are made"
                    .into(),
            ),
        );
    }
    Check::pass(NAME, shown)
}

#[cfg(test)]
mod tests {
    use super::super::render;
    use super::super::testing::*;
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:192B 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4711 1 0000000000000000 100 0 0 10 0
   1: 0100007F:280A 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4712 1 0000000000000000 100 0 0 10 0
   2: 020200C0:C384 507100CB:2802 01 00000000:00000000 02:0000054D 00000000     0        0 4713 2 0000000000000000 20 4 31 15 -1
";

    #[test]
    fn free_ports_and_ports_held_by_skiff_pass_others_warn() {
        let mut f = Fixture::empty();
        assert_eq!(render(&port(&f, 6443, "API server")), "pass  port 6443 (API server): free");
        f.file("/proc/net/tcp", TCP)
            .file("/proc/301/comm", "skiff\n")
            .link("/proc/301/fd/0", "/dev/null")
            .link("/proc/301/fd/7", "socket:[4711]")
            .file("/proc/402/comm", "nginx\n")
            .link("/proc/402/fd/3", "socket:[4712]");
        f.ports.insert(6443, PortState::InUse);
        f.ports.insert(10250, PortState::InUse);
        assert_eq!(render(&port(&f, 6443, "API server")), "pass  port 6443 (API server): in use by skiff (pid 301)");
        assert_eq!(
            render(&port(&f, 10250, "kubelet API")),
            "warn  port 10250 (kubelet API): in use by nginx (pid 402); skiff's kubelet API cannot listen there: stop that program or choose another port (--kubelet-arg port=)"
        );
        std::fs::remove_dir_all(f.local("/proc/301")).unwrap();
        assert_eq!(
            render(&port(&f, 6443, "API server")),
            "warn  port 6443 (API server): in use by another program; skiff's API server cannot listen there: stop that program or choose another port (--https-listen-port)"
        );
        f.ports.insert(6443, PortState::Unknown("Permission denied (os error 13)".into()));
        assert_eq!(
            render(&port(&f, 6443, "API server")),
            "warn  port 6443 (API server): cannot tell: Permission denied (os error 13)"
        );
    }

    #[test]
    fn clock_before_2024_is_unset() {
        let mut f = Fixture::empty();
        assert_eq!(render(&clock(&f)), "pass  clock: 2025-06-01 00:00 UTC");
        f.now = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(42);
        assert_eq!(
            render(&clock(&f)),
            "warn  clock: 1970-01-01 00:00 UTC looks unset; set the time (timedatectl set-ntp true, or an NTP client such as chrony): certificates are only valid from the time they are made"
        );
    }
}
