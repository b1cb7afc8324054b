//! The command line: version, one-line errors with exit code 1, config file and environment
//! precedence, and readiness notification.

mod common;

use std::process::Command;

fn skiff(args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(common::skiff_bin());
    cmd.args(args).env("HOME", dir.path());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn version_names_commit_and_target() {
    let (code, out, _) = skiff(&["--version"], &[]);
    assert_eq!(code, 0);
    assert!(out.starts_with("skiff 0.1.0 (commit "), "{out}");
    assert!(out.contains(", target "), "{out}");
}

#[test]
fn errors_are_one_line_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let (code, _, err) = skiff(&["server", "--data-dir", d, "--bogus"], &[]);
    assert_eq!((code, err.trim()), (1, "skiff: unexpected argument '--bogus' found"));
    let (code, _, err) = skiff(&["server", "--data-dir", d, "--https-listen-port", "99999"], &[]);
    assert_eq!(code, 1);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("--https-listen-port"), "{err}");
    let (code, _, err) = skiff(&["server", "--data-dir", d, "--service-cidr", "nonsense"], &[]);
    assert_eq!((code, err.trim()), (1, "skiff: invalid value \"nonsense\" for --service-cidr: not a CIDR"));
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, "cluster-domain: ok.local\nwat: 1\n").unwrap();
    let (code, _, err) = skiff(&["server", "--data-dir", d, "--config", cfg.to_str().unwrap()], &[]);
    assert_eq!(
        (code, err.trim().to_string()),
        (1, format!("skiff: config file {}: unknown key \"wat\"", cfg.display()))
    );
    let (code, _, err) = skiff(&["server", "--data-dir", d, "--config", "/nonexistent/skiff.yaml"], &[]);
    assert_eq!(code, 1);
    assert!(err.starts_with("skiff: config file /nonexistent/skiff.yaml:"), "{err}");
    let (code, _, err) = skiff(&["server", "--data-dir", d], &[("SKIFF_CLUSTER_DOMAIN", "Bad_Domain")]);
    assert_eq!((code, err.trim()), (1, "skiff: invalid value \"Bad_Domain\" for --cluster-domain: not a DNS domain"));
}

#[test]
fn flags_win_over_the_file_which_wins_over_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, "cluster-domain: from-file.local\nservice-cidr: 10.99.0.0/16\n").unwrap();
    // The file's bad value would fail; the flag replaces it.
    let (code, _, err) = skiff(
        &["server", "--data-dir", d, "--config", cfg.to_str().unwrap(), "--service-cidr", "bad"],
        &[("SKIFF_SERVICE_CIDR", "10.1.0.0/16")],
    );
    assert_eq!((code, err.trim()), (1, "skiff: invalid value \"bad\" for --service-cidr: not a CIDR"));
    // The file beats the environment: the file's valid CIDR is used, not the env's bad one.
    std::fs::write(&cfg, "service-cidr: nope-from-file\n").unwrap();
    let (code, _, err) = skiff(
        &["server", "--data-dir", d, "--config", cfg.to_str().unwrap()],
        &[("SKIFF_SERVICE_CIDR", "10.1.0.0/16")],
    );
    assert_eq!((code, err.trim()), (1, "skiff: invalid value \"nope-from-file\" for --service-cidr: not a CIDR"));
}

#[test]
fn notifies_systemd_when_ready() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
    std::fs::write(dir.path().join("config.yaml"), "").unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = Kill(
        Command::new(common::skiff_bin())
            .args([
                "server",
                "--disable-agent",
                "--bind-address",
                "127.0.0.1",
                "--https-listen-port",
                "0",
                "--advertise-address",
                "127.0.0.1",
            ])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--write-kubeconfig")
            .arg(dir.path().join("kc.yaml"))
            .arg("--config")
            .arg(dir.path().join("config.yaml"))
            .env("NOTIFY_SOCKET", &sock_path)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut buf = [0u8; 64];
    let n = sock.recv(&mut buf).expect("READY notification");
    assert_eq!(&buf[..n], b"READY=1\n");
    assert!(dir.path().join("kc.yaml").exists(), "the kubeconfig is written before READY");
}

#[test]
fn kubectl_subcommand_runs_the_kubectl_on_path() {
    let s = common::Server::start();
    let out = Command::new(common::skiff_bin())
        .args(["kubectl", "get", "namespaces", "-o", "name"])
        .env("KUBECONFIG", &s.kubeconfig)
        .env("HOME", s.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("namespace/kube-system"));
    let empty = tempfile::tempdir().unwrap();
    let (code, _, err) = skiff(&["kubectl", "get", "pods"], &[("PATH", empty.path().to_str().unwrap())]);
    assert_eq!(code, 1);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("skiff: kubectl not found on PATH"), "{err}");
}
