//! The door from the checks to the machine: every read of the host goes through [`Host`], so
//! the checks run unchanged against a fixture tree in tests.
//!
//! [`RootedHost`] is the real one. It reads files under a root (`/` on a real box, a fixture
//! folder in tests), finds executables on `PATH` under that root and runs them with
//! `--version`, and tries to bind TCP ports. Nothing here writes to the host: a port it binds
//! is closed again at once.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// How long `X --version` may take before it is given up on (and killed).
const VERSION_TIMEOUT: Duration = Duration::from_secs(5);

/// What a TCP port looks like from here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortState {
    /// Nothing listens on it.
    Free,
    /// Binding it failed because something listens on it.
    InUse,
    /// Binding it failed for another reason (the message says which).
    Unknown(String),
}

/// Everything the checks read from the host. Paths are absolute paths *of the host*
/// (`/proc/cgroups`), never of the test's file system.
pub trait Host {
    /// The bytes of a file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// The names in a directory, sorted.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// The target of a symbolic link (as `/proc/<pid>/fd/<n>` shows `socket:[inode]`).
    fn read_link(&self, path: &Path) -> io::Result<PathBuf>;
    /// Whether the path exists (files, folders, anything).
    fn exists(&self, path: &Path) -> bool;
    /// Whether the path is a folder.
    fn is_dir(&self, path: &Path) -> bool;
    /// The first executable file called `name` in a `PATH` folder; the host path.
    fn find_executable(&self, name: &str) -> Option<PathBuf>;
    /// What `program --version` prints (stdout, else stderr), with the host path of `program`.
    fn version_output(&self, program: &Path) -> io::Result<String>;
    /// Whether the TCP port can be bound on all addresses.
    fn port_state(&self, port: u16) -> PortState;
    /// The time now.
    fn now(&self) -> SystemTime;

    /// A file as text (lossy UTF-8).
    fn read_text(&self, path: &Path) -> io::Result<String> {
        self.read(path).map(|b| String::from_utf8_lossy(&b).into_owned())
    }
}

/// The machine, seen from `root`: `/` for the real host, a fixture folder for tests.
#[derive(Debug, Clone)]
pub struct RootedHost {
    root: PathBuf,
    path_var: OsString,
}

impl RootedHost {
    /// The host this process runs on.
    pub fn real() -> RootedHost {
        RootedHost::at(PathBuf::from("/"))
    }

    /// The host whose `/` is `root`; executables are searched in this process's `PATH`
    /// folders under `root`. Ports and the clock are always this machine's.
    pub fn at(root: PathBuf) -> RootedHost {
        RootedHost { root, path_var: std::env::var_os("PATH").unwrap_or_default() }
    }

    /// The same, with `path_var` in place of this process's `PATH`.
    pub fn with_path(mut self, path_var: impl Into<OsString>) -> RootedHost {
        self.path_var = path_var.into();
        self
    }

    /// Where the host path `path` is on this machine.
    fn local(&self, path: &Path) -> PathBuf {
        let relative = path.strip_prefix("/").unwrap_or(path);
        if relative.as_os_str().is_empty() { self.root.clone() } else { self.root.join(relative) }
    }
}

impl Host for RootedHost {
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(self.local(path))
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(self.local(path))? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    fn read_link(&self, path: &Path) -> io::Result<PathBuf> {
        std::fs::read_link(self.local(path))
    }

    fn exists(&self, path: &Path) -> bool {
        std::fs::symlink_metadata(self.local(path)).is_ok()
    }

    fn is_dir(&self, path: &Path) -> bool {
        self.local(path).is_dir()
    }

    fn find_executable(&self, name: &str) -> Option<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        std::env::split_paths(&self.path_var).filter(|dir| dir.is_absolute()).map(|dir| dir.join(name)).find(|p| {
            self.local(p).metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
        })
    }

    fn version_output(&self, program: &Path) -> io::Result<String> {
        let mut child = Command::new(self.local(program))
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let deadline = Instant::now() + VERSION_TIMEOUT;
        loop {
            if child.try_wait()?.is_some() {
                break;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::new(io::ErrorKind::TimedOut, "gave no answer within 5 s"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let out = child.wait_with_output()?;
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !stdout.is_empty() {
            return Ok(stdout);
        }
        Ok(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }

    fn port_state(&self, port: u16) -> PortState {
        match std::net::TcpListener::bind(("0.0.0.0", port)) {
            Ok(_) => PortState::Free,
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => PortState::InUse,
            Err(e) => PortState::Unknown(e.to_string()),
        }
    }

    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_read_under_the_root() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc/self/ns")).unwrap();
        std::fs::write(dir.path().join("proc/cgroups"), "x").unwrap();
        std::fs::write(dir.path().join("proc/self/ns/net"), "").unwrap();
        let host = RootedHost::at(dir.path().to_path_buf());
        assert_eq!(host.read_text(Path::new("/proc/cgroups")).unwrap(), "x");
        assert_eq!(host.list_dir(Path::new("/proc/self/ns")).unwrap(), vec!["net"]);
        assert!(host.is_dir(Path::new("/proc")));
        assert!(!host.exists(Path::new("/etc")));
    }

    #[test]
    fn executables_are_found_on_path_under_the_root_and_asked_their_version() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("usr/bin")).unwrap();
        let tool = dir.path().join("usr/bin/tool");
        std::fs::write(&tool, "#!/bin/sh\necho \"tool version 1.2.3 $1\"\n").unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.path().join("usr/bin/plain"), "").unwrap();
        let host = RootedHost::at(dir.path().to_path_buf()).with_path("/sbin:/usr/bin");
        let found = host.find_executable("tool").unwrap();
        assert_eq!(found, PathBuf::from("/usr/bin/tool"));
        assert_eq!(host.version_output(&found).unwrap(), "tool version 1.2.3 --version");
        assert_eq!(host.find_executable("plain"), None, "not executable");
        assert_eq!(host.find_executable("missing"), None);
    }

    #[test]
    fn a_listening_port_is_in_use() {
        let listener = std::net::TcpListener::bind(("0.0.0.0", 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(RootedHost::real().port_state(port), PortState::InUse);
        drop(listener);
        assert_eq!(RootedHost::real().port_state(port), PortState::Free);
    }
}
