//! The containerd supervisor: skiff's own containerd as a child process.
//!
//! [`Containerd::start`] writes the configuration, starts `containerd --config FILE` with its
//! output in a log file beside it, and returns once the CRI socket answers. A background task
//! then restarts containerd with backoff whenever it exits, and on cancellation stops it with
//! SIGTERM, then SIGKILL after a grace period.
//!
//! containerd never outlives skiff: it is killed when its handle's task is dropped
//! (`kill_on_drop`), when skiff dies (the parent-death signal), and a leftover from a skiff
//! that was killed anyway is found through the pid file and killed at the next start. Running
//! containers survive all of this: their shims are not containerd's children.
//!
//! It does not know what runs inside containerd; that is for CRI callers.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::config::{ContainerdConfig, HostFacts, Settings};
use super::{CriClient, CriError};

/// First pause before restarting a containerd that exited.
const RESTART_BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Longest pause between restarts.
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A containerd that ran this long counts as healthy: the next restart starts over at the
/// shortest backoff.
const STABLE_RUN: Duration = Duration::from_secs(60);

/// How to run containerd.
#[derive(Debug, Clone)]
pub struct Options {
    /// containerd's directory: `config.toml`, `containerd.log`, `containerd.pid`, the socket,
    /// `root/` and `state/`. Keep it short: the socket path must fit in 107 bytes.
    pub dir: PathBuf,
    /// The containerd binary: a path, or a name looked up on `PATH`.
    pub binary: PathBuf,
    /// Sandbox image and CNI configuration directory.
    pub settings: Settings,
    /// The host's facts the configuration depends on.
    pub host: HostFacts,
    /// How long a start may take until the CRI socket answers.
    pub ready_timeout: Duration,
    /// How long containerd gets to exit after SIGTERM before it is killed.
    pub stop_grace: Duration,
}

impl Options {
    /// Defaults: `containerd` from `PATH`, the facts of this host, 30 s to become ready, 10 s
    /// to stop.
    pub fn new(dir: impl Into<PathBuf>, settings: Settings) -> Options {
        Options {
            dir: dir.into(),
            binary: PathBuf::from("containerd"),
            settings,
            host: HostFacts::detect(),
            ready_timeout: Duration::from_secs(30),
            stop_grace: Duration::from_secs(10),
        }
    }
}

/// What the supervisor is doing, for logs, health and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// The running containerd's process id, if one runs.
    pub pid: Option<u32>,
    /// Its CRI socket answered since it was started.
    pub ready: bool,
    /// How many times containerd was started (1 after the first start).
    pub starts: u32,
}

/// A supervised containerd. Dropping the handle stops containerd, as [`Containerd::stop`]
/// does, but without waiting for it.
#[derive(Debug)]
pub struct Containerd {
    config: ContainerdConfig,
    paths: Paths,
    client: CriClient,
    state: watch::Receiver<State>,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

/// The files of one containerd directory.
#[derive(Debug, Clone)]
struct Paths {
    config: PathBuf,
    log: PathBuf,
    pid: PathBuf,
    socket: PathBuf,
}

impl Containerd {
    /// Writes the configuration, starts containerd and waits until its CRI socket answers.
    /// The returned handle keeps containerd running until `cancel` fires or the handle is
    /// stopped or dropped.
    pub async fn start(options: Options, cancel: &CancellationToken) -> Result<Containerd, CriError> {
        let config = ContainerdConfig::new(&options.dir, &options.settings, &options.host)?;
        let dir = options.dir.clone();
        let paths = Paths {
            config: dir.join("config.toml"),
            log: dir.join("containerd.log"),
            pid: dir.join("containerd.pid"),
            socket: PathBuf::from(&config.socket),
        };
        let binary = resolve_binary(&options.binary)?;
        let text = config.render();
        {
            let paths = paths.clone();
            run_blocking(move || prepare_dir(&dir, &paths, &text)).await?;
        }

        let span = tracing::info_span!("containerd", socket = %paths.socket.display());
        let supervisor = Supervisor {
            binary,
            paths: paths.clone(),
            ready_timeout: options.ready_timeout,
            stop_grace: options.stop_grace,
            cancel: cancel.child_token(),
            state: watch::Sender::new(State::default()),
        };
        let (child, client) = supervisor.launch().instrument(span.clone()).await?;
        let state = supervisor.state.subscribe();
        let cancel = supervisor.cancel.clone();
        let task = tokio::spawn(supervisor.supervise(child).instrument(span));
        Ok(Containerd { config, paths, client, state, cancel, task: Some(task) })
    }

    /// The CRI socket.
    pub fn socket(&self) -> &Path {
        &self.paths.socket
    }

    /// The configuration file containerd runs with.
    pub fn config_path(&self) -> &Path {
        &self.paths.config
    }

    /// containerd's own log (its stdout and stderr).
    pub fn log_path(&self) -> &Path {
        &self.paths.log
    }

    /// The configuration as data.
    pub fn config(&self) -> &ContainerdConfig {
        &self.config
    }

    /// A client for the CRI socket; it reconnects by itself after restarts.
    pub fn client(&self) -> CriClient {
        self.client.clone()
    }

    /// The supervisor's state, updated as containerd starts, becomes ready and exits.
    pub fn state(&self) -> watch::Receiver<State> {
        self.state.clone()
    }

    /// Stops containerd (SIGTERM, then SIGKILL after the grace period) and waits until it
    /// has exited.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take()
            && let Err(e) = task.await
        {
            tracing::error!(error = %e, socket = %self.paths.socket.display(), "containerd supervisor failed");
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // The supervisor stops containerd gracefully if the runtime lives on; if the runtime
        // is going down with us, its task is dropped and `kill_on_drop` kills containerd.
        self.cancel.cancel();
    }
}

/// The supervising side: owns the child process.
struct Supervisor {
    binary: PathBuf,
    paths: Paths,
    ready_timeout: Duration,
    stop_grace: Duration,
    cancel: CancellationToken,
    state: watch::Sender<State>,
}

/// How waiting for a running containerd ended.
enum Outcome {
    Cancelled,
    Exited(String),
    Ready(Result<CriClient, CriError>),
}

impl Supervisor {
    /// Keeps containerd running until cancelled.
    async fn supervise(self, mut child: Child) {
        let mut started = Instant::now();
        let mut backoff = RESTART_BACKOFF_MIN;
        loop {
            let exit = tokio::select! {
                _ = self.cancel.cancelled() => None,
                status = child.wait() => Some(status),
            };
            let Some(status) = exit else {
                self.terminate(child).await;
                return;
            };
            let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
            self.state.send_modify(|s| {
                s.pid = None;
                s.ready = false;
            });
            remove_file(&self.paths.pid);
            if started.elapsed() >= STABLE_RUN {
                backoff = RESTART_BACKOFF_MIN;
            }
            tracing::warn!(%status, ran_s = started.elapsed().as_secs(), restart_in_ms = backoff.as_millis() as u64,
                log = %self.paths.log.display(), "containerd exited; restarting");
            loop {
                tokio::select! {
                    _ = self.cancel.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
                match self.launch().await {
                    Ok((next, _)) => {
                        child = next;
                        started = Instant::now();
                        break;
                    }
                    Err(CriError::Cancelled { .. }) => return,
                    Err(e) => {
                        tracing::error!(error = %e, retry_in_ms = backoff.as_millis() as u64, "containerd did not start")
                    }
                }
            }
        }
    }

    /// Starts containerd and waits until its socket answers, it exits, or start-up is
    /// cancelled. Only a ready containerd is returned; otherwise none is left running.
    async fn launch(&self) -> Result<(Child, CriClient), CriError> {
        // A socket file left by a dead containerd would only make the first attempts fail.
        remove_file(&self.paths.socket);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.paths.log).map_err(|source| {
            CriError::Io { what: "opening containerd's log", path: self.paths.log.clone(), source }
        })?;
        let stderr = log.try_clone().map_err(|source| CriError::Io {
            what: "opening containerd's log",
            path: self.paths.log.clone(),
            source,
        })?;
        let mut command = Command::new(&self.binary);
        command
            .arg("--config")
            .arg(&self.paths.config)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            // Its own process group: a Ctrl-C at skiff's terminal must not reach containerd
            // before skiff has decided how to stop it.
            .process_group(0)
            .kill_on_drop(true);
        // SAFETY: the closure runs in the forked child before exec and only makes the
        // async-signal-safe prctl(2) system call.
        unsafe {
            command.pre_exec(|| {
                // If skiff dies (even by SIGKILL), so does containerd. The signal is tied to the
                // thread that forks: a runtime worker, which lives as long as the runtime.
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        let started = Instant::now();
        let mut child = command.spawn().map_err(|source| CriError::Spawn { binary: self.binary.clone(), source })?;
        let pid = child.id();
        if let Some(pid) = pid
            && let Err(e) = std::fs::write(&self.paths.pid, format!("{pid}\n"))
        {
            tracing::warn!(error = %e, file = %self.paths.pid.display(), "could not write containerd's pid file");
        }
        self.state.send_modify(|s| {
            s.pid = pid;
            s.ready = false;
            s.starts += 1;
        });
        tracing::info!(pid, binary = %self.binary.display(), config = %self.paths.config.display(), "containerd started");

        let outcome = tokio::select! {
            _ = self.cancel.cancelled() => Outcome::Cancelled,
            status = child.wait() => Outcome::Exited(status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string())),
            ready = CriClient::connect(&self.paths.socket, self.ready_timeout) => Outcome::Ready(ready),
        };
        match outcome {
            Outcome::Ready(Ok(client)) => {
                self.state.send_modify(|s| s.ready = true);
                tracing::info!(pid, elapsed_ms = started.elapsed().as_millis() as u64, "containerd is ready");
                Ok((child, client))
            }
            Outcome::Ready(Err(e)) => {
                self.terminate(child).await;
                Err(e)
            }
            Outcome::Cancelled => {
                self.terminate(child).await;
                Err(CriError::Cancelled { socket: self.paths.socket.clone() })
            }
            Outcome::Exited(status) => {
                self.state.send_modify(|s| s.pid = None);
                remove_file(&self.paths.pid);
                Err(CriError::Exited {
                    binary: self.binary.clone(),
                    socket: self.paths.socket.clone(),
                    status,
                    log: self.paths.log.clone(),
                })
            }
        }
    }

    /// SIGTERM, then SIGKILL once the grace period is over; returns when it has exited.
    async fn terminate(&self, mut child: Child) {
        if let Some(pid) = child.id() {
            tracing::info!(pid, "stopping containerd");
            if let Err(e) = kill(Pid::from_raw(pid as i32), Signal::SIGTERM) {
                tracing::warn!(pid, error = %e, "could not send SIGTERM to containerd");
            }
            if tokio::time::timeout(self.stop_grace, child.wait()).await.is_err() {
                tracing::warn!(pid, grace_s = self.stop_grace.as_secs(), "containerd ignored SIGTERM; killing it");
            }
        }
        // A no-op for a process that has exited and been reaped.
        if let Err(e) = child.kill().await {
            tracing::warn!(error = %e, "could not kill containerd");
        }
        self.state.send_modify(|s| {
            s.pid = None;
            s.ready = false;
        });
        remove_file(&self.paths.pid);
        tracing::info!("containerd stopped");
    }
}

/// Creates the directory (0700), writes the configuration, and kills a containerd left
/// running on this directory by an earlier skiff that could not stop it.
fn prepare_dir(dir: &Path, paths: &Paths, config: &str) -> Result<(), CriError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|source| CriError::Io {
        what: "creating",
        path: dir.to_path_buf(),
        source,
    })?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|source| CriError::Io {
        what: "setting the mode of",
        path: dir.to_path_buf(),
        source,
    })?;
    kill_leftover(&paths.pid, &paths.config);
    let tmp = paths.config.with_extension("toml.tmp");
    std::fs::write(&tmp, config).map_err(|source| CriError::Io { what: "writing", path: tmp.clone(), source })?;
    std::fs::rename(&tmp, &paths.config).map_err(|source| CriError::Io {
        what: "writing",
        path: paths.config.clone(),
        source,
    })?;
    Ok(())
}

/// Kills the process named in `pid_file` if it is a containerd running with `config`. The
/// command-line check keeps a recycled pid from hitting an unrelated process.
fn kill_leftover(pid_file: &Path, config: &Path) {
    let Ok(text) = std::fs::read_to_string(pid_file) else { return };
    let Ok(pid) = text.trim().parse::<i32>() else { return };
    if pid <= 1 || !runs_with_config(pid, config) {
        return;
    }
    tracing::warn!(pid, config = %config.display(), "killing a containerd left running by an earlier start");
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    // It is not our child, so it cannot be reaped here; wait until it is gone or a zombie.
    let deadline = Instant::now() + Duration::from_secs(5);
    while runs_with_config(pid, config) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether process `pid` is alive (not a zombie) and has `--config <config>` on its command line.
pub fn runs_with_config(pid: i32, config: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    // A zombie's cmdline is empty, which fails the check below.
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.windows(2).any(|w| w[0] == b"--config" && w[1] == config.as_os_str().as_bytes())
}

/// A path with a slash is used as it is; a bare name is looked up on `PATH`.
fn resolve_binary(binary: &Path) -> Result<PathBuf, CriError> {
    use std::os::unix::fs::PermissionsExt;
    let executable =
        |p: &Path| p.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false);
    if binary.components().count() > 1 {
        return Ok(binary.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|dir| dir.join(binary)).find(|p| executable(p)).ok_or_else(|| CriError::Spawn {
        binary: binary.to_path_buf(),
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "not found on PATH (is the containerd package installed?)",
        ),
    })
}

fn remove_file(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(file = %path.display(), error = %e, "could not remove");
    }
}

async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CriError> + Send + 'static,
) -> Result<T, CriError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(e) => Err(CriError::Io { what: "preparing", path: PathBuf::new(), source: std::io::Error::other(e) }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_names_are_looked_up_on_path_and_paths_are_kept() {
        assert_eq!(resolve_binary(Path::new("/x/containerd")).expect("path"), PathBuf::from("/x/containerd"));
        assert_eq!(resolve_binary(Path::new("sh")).expect("sh").file_name(), Some(std::ffi::OsStr::new("sh")));
        let err = resolve_binary(Path::new("skiff-no-such-binary")).expect_err("missing");
        assert!(err.to_string().contains("skiff-no-such-binary"), "{err}");
        assert!(err.to_string().contains("not found on PATH"), "{err}");
    }

    #[test]
    fn runs_with_config_matches_the_config_argument_only() {
        // `sh -c SCRIPT ARG0 ARG1`: the arguments only sit on sh's command line. The trailing
        // `true` keeps sh from replacing itself with sleep.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30; true", "--config", "/tmp/skiff-test/config.toml"])
            .spawn()
            .expect("spawn sh");
        let pid = child.id() as i32;
        // Until the child has exec'd, its command line is still the test binary's.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut found = false;
        while !found && Instant::now() < deadline {
            found = runs_with_config(pid, Path::new("/tmp/skiff-test/config.toml"));
            std::thread::sleep(Duration::from_millis(5));
        }
        let other = runs_with_config(pid, Path::new("/tmp/other/config.toml"));
        let _ = child.kill();
        let _ = child.wait();
        assert!(found);
        assert!(!other);
        assert!(!runs_with_config(pid, Path::new("/tmp/skiff-test/config.toml")), "a reaped process is gone");
    }
}
