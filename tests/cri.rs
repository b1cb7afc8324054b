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
use skiff::cri::images::{import_archive, import_dir};
use skiff::cri::pause;
use skiff::cri::proto::ListImagesRequest;
use skiff::cri::{Containerd, CriClient, CriError};
use tokio_util::sync::CancellationToken;

mod images;
use images::{append_file, docker_archive, gzip, oci_archive, zstd};

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

// ---------------------------------------------------------------------------------------
// Image archives. The images are built here from Debian's busybox-static (/bin/busybox).

/// Why image tests cannot run here, if they cannot.
fn image_skip_reason() -> Option<&'static str> {
    skip_reason().or_else(|| (!Path::new("/bin/busybox").is_file()).then_some("busybox-static is not installed"))
}

macro_rules! require_images {
    () => {
        if let Some(why) = image_skip_reason() {
            eprintln!("SKIPPED: this test imports images into a real containerd and {why}");
            return;
        }
    };
}

/// The repo tags CRI lists, waiting until `wanted` are all there (CRI learns of new images
/// from containerd's events, a moment after they are created).
async fn wait_for_cri_images(client: &CriClient, wanted: &[&str]) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listed = client.images().list_images(ListImagesRequest { filter: None }).await.expect("ListImages");
        let tags: Vec<String> = listed.into_inner().images.into_iter().flat_map(|i| i.repo_tags).collect();
        if wanted.iter().all(|w| tags.iter().any(|t| t == w)) || Instant::now() > deadline {
            return tags;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn docker_and_oci_archives_plain_gzip_and_zstd_are_listed_by_cri() {
    require_images!();
    let dir = short_tempdir();
    let containerd = Containerd::start(options(dir.path()), &CancellationToken::new()).await.expect("start");
    let client = containerd.client();
    let archives = [
        ("docker.tar", docker_archive(&["skiff-test/docker:1", "busybox"])),
        ("docker.tar.zst", zstd(&docker_archive(&["skiff-test/docker-zst:1"]))),
        ("oci.tar.gz", gzip(&oci_archive("example.org/skiff/oci:gz"))),
        // The file name says nothing; the magic bytes decide.
        ("oci-zstd.bin", zstd(&oci_archive("example.org/skiff/oci:zst"))),
    ];
    let mut names = Vec::new();
    for (file, bytes) in &archives {
        let path = dir.path().join(file);
        std::fs::write(&path, bytes).expect("write archive");
        let imported = import_archive(&client, &path).await.unwrap_or_else(|e| panic!("import {file}: {e}"));
        names.extend(imported.into_iter().map(|i| i.name));
    }
    let expected = [
        "docker.io/skiff-test/docker:1",
        "docker.io/library/busybox:latest",
        "docker.io/skiff-test/docker-zst:1",
        "example.org/skiff/oci:gz",
        "example.org/skiff/oci:zst",
    ];
    assert_eq!(names, expected);
    let tags = wait_for_cri_images(&client, &expected).await;
    for name in expected {
        assert!(tags.iter().any(|t| t == name), "CRI does not list {name}: {tags:?}");
    }

    // Importing again changes nothing and fails nothing.
    let again = import_archive(&client, &dir.path().join("docker.tar")).await.expect("second import");
    assert_eq!(again.len(), 2);
    let status = client
        .images()
        .image_status(skiff::cri::proto::ImageStatusRequest {
            image: Some(skiff::cri::proto::ImageSpec { image: "busybox".to_string(), ..Default::default() }),
            verbose: false,
        })
        .await
        .expect("ImageStatus")
        .into_inner();
    assert!(status.image.is_some_and(|i| i.size > 1_000_000), "busybox image status wrong");
    containerd.stop().await;
}

#[tokio::test]
async fn bad_archives_fail_with_a_message_naming_the_file() {
    require_images!();
    let dir = short_tempdir();
    let containerd = Containerd::start(options(dir.path()), &CancellationToken::new()).await.expect("start");
    let client = containerd.client();

    let not_tar = dir.path().join("garbage.tar");
    std::fs::write(&not_tar, b"this is not a tar archive at all, not even close............").expect("write");
    let err = import_archive(&client, &not_tar).await.expect_err("garbage");
    assert!(err.to_string().contains("garbage.tar"), "{err}");

    let missing_layer = dir.path().join("missing.tar");
    let mut tar = tar::Builder::new(Vec::new());
    let manifest = serde_json::json!([{"Config": "c.json", "RepoTags": ["x:1"], "Layers": ["l/layer.tar"]}]);
    append_file(&mut tar, "c.json", 0o644, b"{}");
    append_file(&mut tar, "manifest.json", 0o644, &serde_json::to_vec(&manifest).expect("json"));
    std::fs::write(&missing_layer, tar.into_inner().expect("tar")).expect("write");
    let err = import_archive(&client, &missing_layer).await.expect_err("missing layer");
    assert!(err.to_string().contains("l/layer.tar"), "{err}");

    let nameless = dir.path().join("nameless.tar");
    std::fs::write(&nameless, docker_archive(&[])).expect("write");
    let err = import_archive(&client, &nameless).await.expect_err("no name");
    assert!(err.to_string().contains("names no image"), "{err}");
    containerd.stop().await;
}

/// Runs containerd's garbage collector now: deleting a lease with `--sync` collects
/// everything unreferenced before it returns.
fn collect_garbage(socket: &Path) {
    let ctr = |args: &[&str]| {
        let out = std::process::Command::new("ctr")
            .arg("--address")
            .arg(socket)
            .args(["--namespace", "k8s.io"])
            .args(args)
            .output()
            .expect("run ctr");
        assert!(out.status.success(), "ctr {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    ctr(&["leases", "create", "--id", "skiff-test-gc"]);
    ctr(&["leases", "delete", "--sync", "skiff-test-gc"]);
}

/// A pod sandbox in the host's network namespace (no CNI, no traffic), logs under `dir`.
fn host_network_sandbox(dir: &Path) -> skiff::cri::proto::PodSandboxConfig {
    use skiff::cri::proto::*;
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "p".to_string(),
            uid: uuid::Uuid::new_v4().to_string(),
            namespace: "skiff-test".to_string(),
            attempt: 0,
        }),
        log_directory: dir.join("logs").to_string_lossy().into_owned(),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption { network: NamespaceMode::Node as i32, ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A host-network pod sandbox and a container from an imported image, through CRI: proves
/// the imported content is complete and survives garbage collection (containerd unpacks it on
/// first use), and that the
/// generated config lets sandboxes start on this machine. No network traffic is involved.
#[tokio::test]
async fn a_container_runs_from_an_imported_image() {
    use skiff::cri::proto::*;
    require_images!();
    let dir = short_tempdir();
    let mut options = options(dir.path());
    options.settings.sandbox_image = "docker.io/skiff-test/sandbox:1".to_string();
    let containerd = Containerd::start(options, &CancellationToken::new()).await.expect("start");
    let client = containerd.client();
    let archive = dir.path().join("busybox.tar");
    std::fs::write(&archive, docker_archive(&["skiff-test/sandbox:1", "skiff-test/app:1"])).expect("write");
    import_archive(&client, &archive).await.expect("import");
    // Only what the image records reference survives this; unlabelled layers would not.
    collect_garbage(containerd.socket());
    wait_for_cri_images(&client, &["docker.io/skiff-test/app:1"]).await;

    let sandbox_config = host_network_sandbox(dir.path());
    let mut runtime = client.runtime();
    let sandbox = runtime
        .run_pod_sandbox(RunPodSandboxRequest { config: Some(sandbox_config.clone()), runtime_handler: String::new() })
        .await
        .map(|r| r.into_inner().pod_sandbox_id);
    let sandbox = match sandbox {
        Ok(id) => id,
        Err(s) => panic!(
            "RunPodSandbox: {}; containerd log:\n{}",
            s.message(),
            std::fs::read_to_string(containerd.log_path()).unwrap_or_default()
        ),
    };

    let result = async {
        let container = runtime
            .create_container(CreateContainerRequest {
                pod_sandbox_id: sandbox.clone(),
                config: Some(ContainerConfig {
                    metadata: Some(ContainerMetadata { name: "c".to_string(), attempt: 0 }),
                    image: Some(ImageSpec { image: "docker.io/skiff-test/app:1".to_string(), ..Default::default() }),
                    command: vec!["sleep".to_string(), "3600".to_string()],
                    log_path: "c.log".to_string(),
                    ..Default::default()
                }),
                sandbox_config: Some(sandbox_config.clone()),
            })
            .await
            .map_err(|s| format!("CreateContainer: {}", s.message()))?
            .into_inner()
            .container_id;
        runtime
            .start_container(StartContainerRequest { container_id: container.clone() })
            .await
            .map_err(|s| format!("StartContainer: {}", s.message()))?;
        let exec = runtime
            .exec_sync(ExecSyncRequest {
                container_id: container.clone(),
                cmd: vec!["echo".to_string(), "hello from busybox".to_string()],
                timeout: 10,
            })
            .await
            .map_err(|s| format!("ExecSync: {}", s.message()))?
            .into_inner();
        let status = runtime
            .container_status(ContainerStatusRequest { container_id: container, verbose: false })
            .await
            .map_err(|s| format!("ContainerStatus: {}", s.message()))?
            .into_inner()
            .status
            .ok_or("no container status")?;
        Ok::<_, String>((exec, status))
    }
    .await;

    // Always remove the sandbox (and its container), so no shim outlives the test.
    let _ = runtime.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: sandbox.clone() }).await;
    let removed = runtime.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: sandbox }).await;
    let (exec, status) = result.unwrap_or_else(|e| {
        panic!("{e}; containerd log:\n{}", std::fs::read_to_string(containerd.log_path()).unwrap_or_default())
    });
    removed.expect("RemovePodSandbox");
    assert_eq!(exec.exit_code, 0, "stderr: {}", String::from_utf8_lossy(&exec.stderr));
    assert_eq!(String::from_utf8_lossy(&exec.stdout), "hello from busybox\n");
    assert_eq!(status.state, ContainerState::ContainerRunning as i32);
    assert_eq!(status.image.map(|i| i.image).as_deref(), Some("docker.io/skiff-test/app:1"));
    containerd.stop().await;
}

/// skiff's own pause image, imported by `pause::ensure`, is what a sandbox runs: without it
/// `RunPodSandbox` would try (and fail) to pull the sandbox image from a registry.
#[tokio::test]
async fn a_sandbox_runs_the_built_in_pause_image() {
    use skiff::cri::proto::*;
    require_containerd!();
    let dir = short_tempdir();
    let mut options = options(dir.path());
    options.settings.sandbox_image = pause::IMAGE.to_string();
    let containerd = Containerd::start(options, &CancellationToken::new()).await.expect("start");
    let client = containerd.client();

    let imported = pause::ensure(&client).await.expect("ensure the pause image");
    assert_eq!(imported.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(), [pause::IMAGE]);
    assert!(pause::ensure(&client).await.expect("ensure again").is_empty(), "imported twice");
    // Only what the image record references survives a garbage collection.
    collect_garbage(containerd.socket());

    let mut runtime = client.runtime();
    let config = host_network_sandbox(dir.path());
    let sandbox = match runtime
        .run_pod_sandbox(RunPodSandboxRequest { config: Some(config), runtime_handler: String::new() })
        .await
    {
        Ok(r) => r.into_inner().pod_sandbox_id,
        Err(s) => panic!(
            "RunPodSandbox: {}; containerd log:\n{}",
            s.message(),
            std::fs::read_to_string(containerd.log_path()).unwrap_or_default()
        ),
    };
    let result = async {
        let status = runtime
            .pod_sandbox_status(PodSandboxStatusRequest { pod_sandbox_id: sandbox.clone(), verbose: true })
            .await
            .map_err(|s| format!("PodSandboxStatus: {}", s.message()))?
            .into_inner();
        let state = status.status.as_ref().map(|s| s.state);
        let info: serde_json::Value =
            serde_json::from_str(status.info.get("info").map(String::as_str).unwrap_or("{}")).unwrap_or_default();
        let pid = info["pid"].as_u64().ok_or(format!("no pid in the sandbox info: {info}"))?;
        // runc returns once its init is told to exec, which may not have happened yet.
        let deadline = Instant::now() + Duration::from_secs(5);
        let cmdline = loop {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if cmdline == b"/pause\0" || Instant::now() > deadline {
                break cmdline;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let image = info["image"].as_str().unwrap_or_default().to_string();
        runtime
            .stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: sandbox.clone() })
            .await
            .map_err(|s| format!("StopPodSandbox: {}", s.message()))?;
        let stopped = runtime
            .pod_sandbox_status(PodSandboxStatusRequest { pod_sandbox_id: sandbox.clone(), verbose: false })
            .await
            .map_err(|s| format!("PodSandboxStatus: {}", s.message()))?
            .into_inner()
            .status
            .map(|s| s.state);
        Ok::<_, String>((state, pid, cmdline, image, stopped))
    }
    .await;
    let _ = runtime.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: sandbox.clone() }).await;
    let removed = runtime.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: sandbox }).await;
    let (state, pid, cmdline, image, stopped) = result.unwrap_or_else(|e| {
        panic!("{e}; containerd log:\n{}", std::fs::read_to_string(containerd.log_path()).unwrap_or_default())
    });
    removed.expect("RemovePodSandbox");
    assert_eq!(state, Some(PodSandboxState::SandboxReady as i32));
    assert_eq!(cmdline, b"/pause\0", "the sandbox process is skiff's pause");
    assert!(image.is_empty() || image == pause::IMAGE, "sandbox image {image}");
    assert_eq!(stopped, Some(PodSandboxState::SandboxNotready as i32));
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "pause {pid} still runs after StopPodSandbox");
    containerd.stop().await;
}

/// The images folder: each archive once per content, a changed one again, a broken one named
/// while the others go on, other files set aside.
#[tokio::test]
async fn an_images_folder_is_imported_once_per_file_content() {
    require_images!();
    let dir = short_tempdir();
    let containerd = Containerd::start(options(dir.path()), &CancellationToken::new()).await.expect("start");
    let client = containerd.client();
    let images = dir.path().join("images");
    std::fs::create_dir(&images).expect("mkdir");
    // Sorted first, so it fails before the good ones are tried.
    std::fs::write(images.join("0-broken.tar"), b"not an archive, just some bytes pretending to be one....")
        .expect("write");
    std::fs::write(images.join("a.tar"), docker_archive(&["skiff-test/dir-a:1"])).expect("write");
    std::fs::write(images.join("b.tar.gz"), gzip(&oci_archive("example.org/skiff/dir-b:1"))).expect("write");
    std::fs::write(images.join("notes.txt"), b"not an image").expect("write");
    let state = dir.path().join("containerd").join(skiff::cri::image_dir::STATE_FILE);
    let names = |paths: &[PathBuf]| -> Vec<String> {
        paths.iter().map(|p| p.file_name().expect("name").to_string_lossy().into_owned()).collect()
    };

    let first = import_dir(&client, &images, &state).await.expect("first pass");
    let imported: Vec<PathBuf> = first.imported.iter().map(|(p, _)| p.clone()).collect();
    assert_eq!(names(&imported), ["a.tar", "b.tar.gz"]);
    let tags: Vec<&str> = first.imported.iter().flat_map(|(_, i)| i.iter().map(|i| i.name.as_str())).collect();
    assert_eq!(tags, ["docker.io/skiff-test/dir-a:1", "example.org/skiff/dir-b:1"]);
    assert_eq!(first.failed.len(), 1);
    let (broken, error) = &first.failed[0];
    assert!(broken.ends_with("0-broken.tar"));
    assert!(error.to_string().contains("0-broken.tar"), "{error}");
    assert_eq!(names(&first.ignored), ["notes.txt"]);
    assert_eq!(std::fs::read_to_string(&state).expect("state file").lines().count(), 2);
    wait_for_cri_images(&client, &["docker.io/skiff-test/dir-a:1", "example.org/skiff/dir-b:1"]).await;

    let second = import_dir(&client, &images, &state).await.expect("second pass");
    assert!(second.imported.is_empty(), "imported again: {:?}", second.imported);
    assert_eq!(names(&second.unchanged), ["a.tar", "b.tar.gz"]);
    assert_eq!(second.failed.len(), 1, "a broken file is tried again");

    // A changed file is imported again; a copy of an imported one under a new name is not.
    std::fs::write(images.join("a.tar"), docker_archive(&["skiff-test/dir-a:2"])).expect("write");
    std::fs::copy(images.join("b.tar.gz"), images.join("c.tar.gz")).expect("copy");
    let third = import_dir(&client, &images, &state).await.expect("third pass");
    let imported: Vec<PathBuf> = third.imported.iter().map(|(p, _)| p.clone()).collect();
    assert_eq!(names(&imported), ["a.tar"]);
    assert_eq!(third.imported[0].1[0].name, "docker.io/skiff-test/dir-a:2");
    assert_eq!(names(&third.unchanged), ["b.tar.gz", "c.tar.gz"]);
    let tags = wait_for_cri_images(&client, &["docker.io/skiff-test/dir-a:2"]).await;
    assert!(tags.iter().any(|t| t == "docker.io/skiff-test/dir-a:2"), "{tags:?}");

    // No folder, nothing to do.
    let none = import_dir(&client, &dir.path().join("absent"), &state).await.expect("missing folder");
    assert!(none.imported.is_empty() && none.failed.is_empty() && none.unchanged.is_empty());
    containerd.stop().await;
}

// ---------------------------------------------------------------------------------------
// `skiff images`, through the real binary.

/// Runs `skiff ARGS`, returning the exit code, stdout and stderr.
fn skiff(args: &[&std::ffi::OsStr]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(args)
        .env_remove("SKIFF_DATA_DIR")
        .env_remove("SKIFF_CONTAINER_RUNTIME_ENDPOINT")
        .output()
        .expect("run skiff");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

macro_rules! args {
    ($($a:expr),* $(,)?) => { &[$(std::ffi::OsStr::new($a)),*] };
}

#[test]
fn images_commands_without_a_runtime_say_which_socket_in_one_line() {
    let dir = short_tempdir();
    let data = dir.path().to_str().expect("utf8");
    let (code, stdout, stderr) = skiff(args!["images", "list", "--data-dir", data]);
    assert_eq!(code, 1);
    assert!(stdout.is_empty(), "{stdout}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let socket = dir.path().join("agent/containerd/containerd.sock");
    assert!(stderr.contains(socket.to_str().expect("utf8")), "{stderr}");
    assert!(stderr.contains("agent must be running"), "{stderr}");

    let absent = dir.path().join("other.sock");
    let endpoint = format!("unix://{}", absent.display());
    let (code, _, stderr) = skiff(args!["images", "import", "x.tar", "--container-runtime-endpoint", &endpoint]);
    assert_eq!(code, 1);
    assert_eq!(stderr.trim(), format!("skiff: no CRI socket at {}", absent.display()));

    let (code, _, stderr) = skiff(args!["images", "list", "--container-runtime-endpoint", "tcp://127.0.0.1:1"]);
    assert_eq!(code, 1);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("only unix sockets"), "{stderr}");

    let (code, _, stderr) = skiff(args!["images", "import"]);
    assert_eq!(code, 1, "FILE is required");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[tokio::test]
async fn skiff_images_import_and_list_talk_to_the_agents_containerd() {
    require_images!();
    let dir = short_tempdir();
    // Where the agent keeps its containerd, so the default socket under --data-dir is found.
    let data = dir.path().join("data");
    let options = Options::new(
        data.join("agent/containerd"),
        Settings { sandbox_image: pause::IMAGE.to_string(), cni_conf_dir: dir.path().join("cni") },
    );
    let containerd = Containerd::start(options, &CancellationToken::new()).await.expect("start");
    let client = containerd.client();
    let good = dir.path().join("good.tar.gz");
    std::fs::write(&good, gzip(&docker_archive(&["skiff-test/cli:1", "example.org/cli/other:2.0"]))).expect("write");
    let broken = dir.path().join("broken.tar");
    std::fs::write(&broken, b"not an archive, just some bytes pretending to be one....").expect("write");

    // The broken file is named and fails the command; the good one after it is imported anyway.
    let data_arg = data.to_str().expect("utf8");
    let (code, stdout, stderr) = tokio::task::spawn_blocking({
        let (broken, good, data_arg) = (broken.clone(), good.clone(), data_arg.to_string());
        move || {
            skiff(&[
                "images".as_ref(),
                "import".as_ref(),
                broken.as_os_str(),
                good.as_os_str(),
                "--data-dir".as_ref(),
                data_arg.as_ref(),
            ])
        }
    })
    .await
    .expect("join");
    assert_eq!(code, 1, "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("skiff: importing ") && stderr.contains("broken.tar"), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[0].starts_with("imported docker.io/skiff-test/cli:1 sha256:"), "{stdout}");
    assert!(lines[1].starts_with("imported example.org/cli/other:2.0 sha256:"), "{stdout}");
    wait_for_cri_images(&client, &["docker.io/skiff-test/cli:1", "example.org/cli/other:2.0"]).await;

    // The list, through the default socket and through an explicit endpoint, the same table.
    let (code, table, stderr) = tokio::task::spawn_blocking({
        let data_arg = data_arg.to_string();
        move || skiff(args!["images", "list", "--data-dir", &data_arg])
    })
    .await
    .expect("join");
    assert_eq!(code, 0, "{stderr}");
    let endpoint = format!("unix://{}", containerd.socket().display());
    let (code, again, _) =
        tokio::task::spawn_blocking(move || skiff(args!["images", "list", "--container-runtime-endpoint", &endpoint]))
            .await
            .expect("join");
    assert_eq!(code, 0);
    assert_eq!(table, again);

    let status = client
        .images()
        .image_status(skiff::cri::proto::ImageStatusRequest {
            image: Some(skiff::cri::proto::ImageSpec {
                image: "docker.io/skiff-test/cli:1".into(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .expect("ImageStatus")
        .into_inner()
        .image
        .expect("image");
    let id = &status.id.strip_prefix("sha256:").expect("sha256 id")[..13];
    let rows: Vec<Vec<&str>> = table.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows[0], ["IMAGE", "TAG", "IMAGE", "ID", "SIZE"], "{table}");
    let row = |image: &str| rows.iter().find(|r| r[0] == image).unwrap_or_else(|| panic!("{image} not in\n{table}"));
    let cli = row("docker.io/skiff-test/cli");
    assert_eq!(cli[1], "1");
    assert_eq!(cli[2], id);
    assert!(cli[3].ends_with("MB"), "busybox is megabytes: {table}");
    let other = row("example.org/cli/other");
    assert_eq!((other[1], other[2]), ("2.0", id), "one image, two names");
    assert_eq!(rows.len(), 3, "{table}");
    containerd.stop().await;
}
