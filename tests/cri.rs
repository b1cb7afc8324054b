//! The container runtime room against a real containerd (Debian's `containerd` package): the
//! supervisor starts, restarts and stops it, and the CRI v1 client talks to it.
//!
//! Needs root and `containerd` on PATH (CI has both); without them the tests that start
//! containerd print why and pass without running. Each test owns a short temp dir under /tmp,
//! since unix socket paths must stay under 108 bytes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use skiff::cri::config::Settings;
use skiff::cri::containerd::{Options, State, runs_with_config};
use skiff::cri::proto::ListImagesRequest;
use skiff::cri::{Containerd, CriClient, CriError};
use tokio_util::sync::CancellationToken;

/// Why containerd tests cannot run here, if they cannot.
fn skip_reason() -> Option<&'static str> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root");
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("containerd").is_file()))
        .unwrap_or(false);
    if !on_path {
        return Some("containerd is not installed (apt-get install containerd runc containernetworking-plugins)");
    }
    None
}

macro_rules! require_containerd {
    () => {
        if let Some(why) = skip_reason() {
            eprintln!("SKIPPED: this test starts a real containerd and {why}");
            return;
        }
    };
}

/// A fresh, short directory under /tmp, removed on drop.
fn short_tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("skcri").tempdir_in("/tmp").expect("tempdir")
}

fn options(dir: &Path) -> Options {
    let mut options = Options::new(
        dir.join("containerd"),
        Settings { sandbox_image: "registry.k8s.io/pause:3.10".to_string(), cni_conf_dir: dir.join("cni") },
    );
    options.stop_grace = Duration::from_secs(5);
    options
}

/// Pids of live processes running with `--config <config>`.
fn processes_with_config(config: &Path) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        if let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok())
            && runs_with_config(pid, config)
        {
            pids.push(pid);
        }
    }
    pids
}

async fn wait_state(containerd: &Containerd, what: &str, ok: impl FnMut(&State) -> bool) -> State {
    let mut state = containerd.state();
    let waited = tokio::time::timeout(Duration::from_secs(30), state.wait_for(ok)).await.map(|r| r.map(|s| s.clone()));
    match waited {
        Ok(Ok(s)) => s,
        Ok(Err(_)) => panic!("supervisor ended while waiting for {what}"),
        Err(_) => panic!(
            "timed out waiting for {what}; state {:?}; containerd log:\n{}",
            *containerd.state().borrow(),
            std::fs::read_to_string(containerd.log_path()).unwrap_or_default()
        ),
    }
}

/// A process started by a test, killed and reaped on drop so that a failing test leaves none.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_gone(config: &Path) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !processes_with_config(config).is_empty() {
        assert!(Instant::now() < deadline, "containerd still running: {:?}", processes_with_config(config));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn supervised_containerd_answers_version_and_status() {
    require_containerd!();
    let dir = short_tempdir();
    let cancel = CancellationToken::new();
    let containerd = Containerd::start(options(dir.path()), &cancel).await.expect("start containerd");
    assert_eq!(containerd.socket(), dir.path().join("containerd/containerd.sock"));
    assert!(containerd.state().borrow().ready);
    assert_eq!(containerd.state().borrow().starts, 1);

    let client = containerd.client();
    let version = client.version().await.expect("Version");
    assert_eq!(version.runtime_name, "containerd");
    assert_eq!(version.runtime_api_version, "v1");
    assert!(!version.runtime_version.is_empty());

    let status = client.status().await.expect("Status");
    let conditions = status.status.expect("runtime status").conditions;
    let runtime_ready = conditions.iter().find(|c| c.r#type == "RuntimeReady").expect("RuntimeReady condition");
    assert!(runtime_ready.status, "RuntimeReady is false: {conditions:?}");

    // The image service is reachable on the same channel (nothing is imported yet).
    let images = client.images().list_images(ListImagesRequest { filter: None }).await.expect("ListImages");
    assert!(images.into_inner().images.is_empty());

    // A second, independent client finds the same runtime.
    let other = CriClient::connect(containerd.socket(), Duration::from_secs(5)).await.expect("connect");
    assert_eq!(other.version().await.expect("Version").runtime_name, "containerd");

    let config = containerd.config_path().to_path_buf();
    containerd.stop().await;
    assert!(processes_with_config(&config).is_empty());
}

#[tokio::test]
async fn killed_containerd_is_restarted_and_answers_again() {
    require_containerd!();
    let dir = short_tempdir();
    let cancel = CancellationToken::new();
    let containerd = Containerd::start(options(dir.path()), &cancel).await.expect("start containerd");
    let client = containerd.client();
    let first = containerd.state().borrow().pid.expect("pid");

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(first as i32), nix::sys::signal::Signal::SIGKILL)
        .expect("kill containerd");
    let state = wait_state(&containerd, "a restarted, ready containerd", |s| {
        s.ready && s.pid.is_some() && s.pid != Some(first)
    })
    .await;
    assert_eq!(state.starts, 2);
    assert!(
        !Path::new(&format!("/proc/{first}/cmdline")).exists()
            || !runs_with_config(first as i32, containerd.config_path())
    );

    // The client from before the crash reconnects by itself.
    let deadline = Instant::now() + Duration::from_secs(10);
    let version = loop {
        match client.version().await {
            Ok(v) => break v,
            Err(e) if Instant::now() < deadline => {
                eprintln!("old client not answered yet: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the old client never reconnected: {e}"),
        }
    };
    assert_eq!(version.runtime_name, "containerd");
    let fresh = CriClient::connect(containerd.socket(), Duration::from_secs(5)).await.expect("connect");
    assert_eq!(fresh.version().await.expect("Version").runtime_api_version, "v1");
    assert_eq!(processes_with_config(containerd.config_path()), vec![state.pid.expect("pid") as i32]);

    containerd.stop().await;
}

#[tokio::test]
async fn cancelling_stops_containerd_and_leaves_no_process() {
    require_containerd!();
    let dir = short_tempdir();
    let cancel = CancellationToken::new();
    let containerd = Containerd::start(options(dir.path()), &cancel).await.expect("start containerd");
    let config = containerd.config_path().to_path_buf();
    let pid = containerd.state().borrow().pid.expect("pid") as i32;
    assert_eq!(processes_with_config(&config), vec![pid]);

    let started = Instant::now();
    cancel.cancel();
    let state = wait_state(&containerd, "containerd stopped", |s| s.pid.is_none()).await;
    assert!(!state.ready);
    wait_gone(&config).await;
    assert!(started.elapsed() < Duration::from_secs(5), "SIGTERM was not enough: {:?}", started.elapsed());
    assert!(!dir.path().join("containerd/containerd.pid").exists(), "pid file left behind");
    let err =
        CriClient::connect(containerd.socket(), Duration::from_millis(300)).await.expect_err("socket still answers");
    assert!(err.to_string().contains("containerd.sock"), "{err}");

    // Not restarted after cancellation.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(processes_with_config(&config).is_empty());
    assert_eq!(containerd.state().borrow().starts, 1);
    containerd.stop().await;
}

#[tokio::test]
async fn dropping_the_handle_stops_containerd() {
    require_containerd!();
    let dir = short_tempdir();
    let containerd = Containerd::start(options(dir.path()), &CancellationToken::new()).await.expect("start");
    let config = containerd.config_path().to_path_buf();
    assert_eq!(processes_with_config(&config).len(), 1);
    drop(containerd);
    wait_gone(&config).await;
}

#[tokio::test]
async fn a_containerd_left_by_an_earlier_start_is_killed() {
    require_containerd!();
    let dir = short_tempdir();
    let containerd = Containerd::start(options(dir.path()), &CancellationToken::new()).await.expect("start");
    let config = containerd.config_path().to_path_buf();
    containerd.stop().await;

    // A containerd on the same directory that no supervisor owns, as after `kill -9` of a
    // skiff whose parent-death signal could not fire.
    let mut stray = KillOnDrop(
        std::process::Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start stray containerd"),
    );
    let stray_pid = stray.0.id();
    std::fs::write(dir.path().join("containerd/containerd.pid"), format!("{stray_pid}\n")).expect("pid file");
    CriClient::connect(dir.path().join("containerd/containerd.sock"), Duration::from_secs(20))
        .await
        .expect("stray containerd answers");

    let containerd = Containerd::start(options(dir.path()), &CancellationToken::new()).await.expect("restart");
    let status = stray.0.wait().expect("reap stray");
    assert!(!status.success(), "stray exited by itself: {status}");
    let pid = containerd.state().borrow().pid.expect("pid");
    assert_ne!(pid, stray_pid);
    assert_eq!(processes_with_config(&config), vec![pid as i32]);
    assert_eq!(containerd.client().version().await.expect("Version").runtime_name, "containerd");
    containerd.stop().await;
}

#[tokio::test]
async fn generated_config_restricts_oom_score_adj_as_this_machine_requires() {
    require_containerd!();
    // Ask the kernel, in a separate process, whether lowering the OOM score is allowed.
    let out = std::process::Command::new("sh")
        .args(["-c", "v=$(cat /proc/self/oom_score_adj); echo $((v-1)) > /proc/self/oom_score_adj 2>/dev/null && echo yes || echo no"])
        .output()
        .expect("sh");
    let can_lower = String::from_utf8_lossy(&out.stdout).trim() == "yes";

    let dir = short_tempdir();
    let containerd = Containerd::start(options(dir.path()), &CancellationToken::new()).await.expect("start");
    let text = std::fs::read_to_string(containerd.config_path()).expect("config");
    let line = format!("\n  restrict_oom_score_adj = {}\n", !can_lower);
    assert!(text.contains(&line), "expected {line:?} in:\n{text}");
    let systemd = Path::new("/run/systemd/system").is_dir();
    assert!(text.contains(&format!("\n  SystemdCgroup = {systemd}\n")), "{text}");
    let cni = ["/opt/cni/bin", "/usr/lib/cni"].into_iter().find(|d| Path::new(d).is_dir()).unwrap_or("/opt/cni/bin");
    assert!(text.contains(&format!("\n  bin_dir = \"{cni}\"\n")), "{text}");
    // containerd accepted it: the CRI plugin is up and reports the runtime ready.
    let status = containerd.client().status().await.expect("Status");
    assert!(status.status.expect("status").conditions.iter().any(|c| c.r#type == "RuntimeReady" && c.status));
    containerd.stop().await;
}

// The failure paths need neither root nor containerd.

#[tokio::test]
async fn connect_gives_up_after_the_timeout_naming_the_socket() {
    let dir = short_tempdir();
    let socket = dir.path().join("absent.sock");
    let started = Instant::now();
    let err = CriClient::connect(&socket, Duration::from_millis(400)).await.expect_err("nothing listens");
    assert!(started.elapsed() >= Duration::from_millis(400), "gave up early: {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(3), "gave up late: {:?}", started.elapsed());
    assert!(matches!(err, CriError::Unavailable { .. }), "{err:?}");
    assert!(err.to_string().contains(socket.to_str().expect("utf8")), "{err}");
}

#[tokio::test]
async fn a_binary_that_exits_at_once_fails_the_start_with_its_log() {
    let dir = short_tempdir();
    let mut options = options(dir.path());
    options.binary = PathBuf::from("/bin/false");
    let err = Containerd::start(options, &CancellationToken::new()).await.expect_err("false is not containerd");
    assert!(matches!(err, CriError::Exited { .. }), "{err:?}");
    assert!(err.to_string().contains("containerd.log"), "{err}");
    assert!(!dir.path().join("containerd/containerd.pid").exists());
    assert!(dir.path().join("containerd/config.toml").is_file());
}

#[tokio::test]
async fn a_missing_binary_is_named_in_the_error() {
    let dir = short_tempdir();
    let mut options = options(dir.path());
    options.binary = PathBuf::from("skiff-no-such-containerd");
    let err = Containerd::start(options, &CancellationToken::new()).await.expect_err("missing binary");
    assert!(err.to_string().contains("skiff-no-such-containerd"), "{err}");
}
