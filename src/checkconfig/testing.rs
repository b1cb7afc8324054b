//! A fixture host for the checks' tests: files in a temp folder standing for `/`, ports and
//! the clock set by the test.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::host::{Host, PortState, RootedHost};

/// A host made of files the test writes.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    files: RootedHost,
    pub ports: BTreeMap<u16, PortState>,
    pub now: SystemTime,
}

impl Fixture {
    /// An empty root; every port free; the clock at 2025-06-01.
    pub fn empty() -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let files = RootedHost::at(dir.path().to_path_buf()).with_path("/usr/local/bin:/usr/bin:/usr/sbin:/bin");
        Fixture { dir, files, ports: BTreeMap::new(), now: SystemTime::UNIX_EPOCH + secs(1_748_736_000) }
    }

    /// Where the host path is in the fixture.
    pub fn local(&self, path: &str) -> PathBuf {
        self.dir.path().join(path.trim_start_matches('/'))
    }

    /// Writes a file (and its folders).
    pub fn file(&self, path: &str, content: impl AsRef<[u8]>) -> &Fixture {
        let p = self.local(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, content).expect("write");
        self
    }

    /// Writes an executable shell script.
    pub fn exe(&self, path: &str, script: &str) -> &Fixture {
        use std::os::unix::fs::PermissionsExt;
        self.file(path, format!("#!/bin/sh\n{script}\n"));
        std::fs::set_permissions(self.local(path), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        self
    }

    /// A symbolic link at `path` pointing to `target`.
    pub fn link(&self, path: &str, target: &str) -> &Fixture {
        let p = self.local(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::os::unix::fs::symlink(target, p).expect("symlink");
        self
    }
}

fn secs(s: u64) -> std::time::Duration {
    std::time::Duration::from_secs(s)
}

impl Host for Fixture {
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.files.read(path)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.files.list_dir(path)
    }
    fn read_link(&self, path: &Path) -> io::Result<PathBuf> {
        self.files.read_link(path)
    }
    fn exists(&self, path: &Path) -> bool {
        self.files.exists(path)
    }
    fn is_dir(&self, path: &Path) -> bool {
        self.files.is_dir(path)
    }
    fn find_executable(&self, name: &str) -> Option<PathBuf> {
        self.files.find_executable(name)
    }
    /// Retries while another test thread's fork still holds a just-written script open for
    /// writing (`ETXTBSY`): the file descriptor lives on in the child until its exec.
    fn version_output(&self, program: &Path) -> io::Result<String> {
        for _ in 0..50 {
            match self.files.version_output(program) {
                Err(e) if e.raw_os_error() == Some(nix::libc::ETXTBSY) => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                other => return other,
            }
        }
        self.files.version_output(program)
    }
    fn port_state(&self, port: u16) -> PortState {
        self.ports.get(&port).cloned().unwrap_or(PortState::Free)
    }
    fn now(&self) -> SystemTime {
        self.now
    }
}

/// `/proc/cgroups` of a Raspberry Pi OS (cgroup v1) whose memory controller is disabled.
pub const PI_V1_PROC_CGROUPS: &str = "#subsys_name\thierarchy\tnum_cgroups\tenabled
cpuset\t2\t1\t1
cpu\t3\t52\t1
cpuacct\t3\t52\t1
blkio\t4\t52\t1
memory\t0\t60\t0
devices\t5\t52\t1
freezer\t6\t1\t1
net_cls\t7\t1\t1
perf_event\t8\t1\t1
net_prio\t7\t1\t1
pids\t9\t57\t1
";

/// `/proc/self/cgroup` on that Pi: no memory hierarchy.
pub const PI_V1_SELF_CGROUP: &str = "9:pids:/user.slice/user-1000.slice/session-3.scope
8:perf_event:/
7:net_cls,net_prio:/
6:freezer:/
5:devices:/user.slice
4:blkio:/user.slice
3:cpu,cpuacct:/user.slice
2:cpuset:/
1:name=systemd:/user.slice/user-1000.slice/session-3.scope
0::/user.slice/user-1000.slice/session-3.scope
";

/// `/proc/cgroups` of a cgroup v1 host with every controller enabled.
pub const V1_PROC_CGROUPS: &str = "#subsys_name\thierarchy\tnum_cgroups\tenabled
cpuset\t3\t5098\t1
cpu\t1\t5090\t1
cpuacct\t2\t5090\t1
blkio\t7\t5090\t1
memory\t4\t5117\t1
devices\t5\t5092\t1
freezer\t6\t5089\t1
net_cls\t0\t5088\t1
perf_event\t0\t5088\t1
net_prio\t0\t5088\t1
hugetlb\t0\t5088\t1
pids\t8\t5090\t1
";

/// `/proc/self/cgroup` on that host.
pub const V1_SELF_CGROUP: &str = "9:name=systemd:/
8:pids:/
7:blkio:/
6:freezer:/
5:devices:/
4:memory:/
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
";

/// `/proc/cgroups` of a cgroup v2 host (every controller on the unified hierarchy).
pub const V2_PROC_CGROUPS: &str = "#subsys_name\thierarchy\tnum_cgroups\tenabled
cpuset\t0\t120\t1
cpu\t0\t120\t1
cpuacct\t0\t120\t1
blkio\t0\t120\t1
memory\t0\t120\t1
devices\t0\t120\t1
freezer\t0\t120\t1
net_cls\t0\t120\t1
perf_event\t0\t120\t1
net_prio\t0\t120\t1
hugetlb\t0\t120\t1
pids\t0\t120\t1
rdma\t0\t120\t1
misc\t0\t120\t1
";

/// A cgroup v1 host with every controller: Debian-like, not a Pi.
pub fn v1_host() -> Fixture {
    let f = Fixture::empty();
    f.file("/proc/cgroups", V1_PROC_CGROUPS).file("/proc/self/cgroup", V1_SELF_CGROUP);
    f
}

/// A cgroup v2 host whose root offers `controllers`.
pub fn v2_host(controllers: &str) -> Fixture {
    let f = Fixture::empty();
    f.file("/proc/cgroups", V2_PROC_CGROUPS)
        .file("/proc/self/cgroup", "0::/user.slice/user-1000.slice/session-2.scope\n")
        .file("/sys/fs/cgroup/cgroup.controllers", format!("{controllers}\n"));
    f
}

/// A Raspberry Pi (cgroup v1) with the memory controller disabled; no boot folder yet.
pub fn pi_v1_memory_disabled() -> Fixture {
    let f = Fixture::empty();
    f.file("/proc/cgroups", PI_V1_PROC_CGROUPS)
        .file("/proc/self/cgroup", PI_V1_SELF_CGROUP)
        .file("/proc/device-tree/model", "Raspberry Pi 4 Model B Rev 1.4\0");
    f
}
