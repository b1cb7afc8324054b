//! Test harness: a real `skiff server` on a random loopback port in a temp dir, and helpers
//! to drive it with the real kubectl. Every process started here dies with its guard.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod bin;
pub use bin::skiff_bin;

/// The kubectl the tests drive (v1.32).
pub const KUBECTL: &str = "/usr/bin/kubectl";

/// A running server; killed (SIGKILL) when dropped.
pub struct Server {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    pub port: u16,
    pub extra_args: Vec<String>,
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

impl Server {
    /// Starts a server in a fresh data dir.
    pub fn start() -> Server {
        Self::start_with(&[])
    }

    /// Starts a server with extra flags.
    pub fn start_with(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("kubeconfig.yaml");
        std::fs::write(dir.path().join("config.yaml"), "").expect("config file");
        let mut s = Server {
            child: None,
            dir,
            kubeconfig,
            port: free_port(),
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
        };
        s.launch();
        s
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the process on the same data dir and port, and waits until it is ready.
    pub fn launch(&mut self) {
        let _ = std::fs::remove_file(&self.kubeconfig);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .expect("log file");
        let child = Command::new(skiff_bin())
            .arg("server")
            // API and control-plane tests run no containers; the node tests start their own.
            .arg("--disable-agent")
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1"])
            .args(["--https-listen-port", &self.port.to_string()])
            .arg("--write-kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--config")
            .arg(self.dir.path().join("config.yaml"))
            .args(&self.extra_args)
            .env_remove("KUBECONFIG")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start skiff");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("skiff server exited early with {status}; log:\n{}", self.log());
            }
            if self.kubeconfig.exists() {
                let out = self.kubectl(&["get", "--raw", "/readyz"]);
                if out.status.success() {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("skiff server did not become ready; log:\n{}", self.log());
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Kills the process with SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the process with SIGTERM and returns how long it took.
    pub fn terminate(&mut self) -> Duration {
        let start = Instant::now();
        if let Some(mut c) = self.child.take() {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        start.elapsed()
    }

    /// Runs kubectl (the given binary) against this server.
    pub fn kubectl_bin(&self, bin: &str, args: &[&str]) -> Output {
        Command::new(bin)
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("run kubectl")
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_bin(KUBECTL, args)
    }

    /// Runs kubectl and returns stdout, panicking with stderr on failure.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs kubectl expecting failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            !out.status.success(),
            "kubectl {args:?} unexpectedly succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Runs kubectl with a manifest on stdin.
    pub fn apply_stdin(&self, args: &[&str], manifest: &str) -> Output {
        use std::io::Write;
        let mut child = Command::new(KUBECTL)
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        child.stdin.take().expect("stdin").write_all(manifest.as_bytes()).expect("write manifest");
        child.wait_with_output().expect("kubectl output")
    }

    /// Reads a file from the data dir's server folder.
    pub fn server_file(&self, rel: &str) -> String {
        std::fs::read_to_string(self.data_dir().join("server").join(rel)).expect("server file")
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Raw HTTPS access with the admin credentials (for requests kubectl cannot make).
pub struct Raw {
    pub base: String,
    pub client: reqwest_like::Client,
}

pub mod reqwest_like {
    //! A tiny HTTPS client over hyper + rustls for raw API requests in tests.

    use std::sync::Arc;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::TokioIo;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};

    /// A client with the admin identity (or none).
    #[derive(Clone)]
    pub struct Client {
        pub tls: Arc<rustls::ClientConfig>,
        pub addr: String,
    }

    /// A response: status, headers and body.
    pub struct Resp {
        pub status: u16,
        pub headers: http::HeaderMap,
        pub body: Bytes,
    }

    impl Resp {
        pub fn json(&self) -> serde_json::Value {
            serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
        }
        pub fn text(&self) -> String {
            String::from_utf8_lossy(&self.body).into_owned()
        }
    }

    fn b64(v: &serde_yaml::Value) -> Vec<u8> {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap_or_default()).unwrap_or_default()
    }

    impl Client {
        /// From a kubeconfig; `with_cert` false makes an anonymous client, `foreign` uses a
        /// certificate from another CA.
        pub fn from_kubeconfig(path: &std::path::Path, with_cert: bool) -> Client {
            let kc: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
            let ca = b64(&kc["clusters"][0]["cluster"]["certificate-authority-data"]);
            let server = kc["clusters"][0]["cluster"]["server"].as_str().unwrap().to_string();
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(&ca) {
                roots.add(c.unwrap()).unwrap();
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let builder = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots);
            let mut cfg = if with_cert {
                let cert = b64(&kc["users"][0]["user"]["client-certificate-data"]);
                let key = b64(&kc["users"][0]["user"]["client-key-data"]);
                let chain: Vec<_> = CertificateDer::pem_slice_iter(&cert).map(|c| c.unwrap()).collect();
                builder.with_client_auth_cert(chain, PrivateKeyDer::from_pem_slice(&key).unwrap()).unwrap()
            } else {
                builder.with_no_client_auth()
            };
            cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
            Client { tls: Arc::new(cfg), addr: server.trim_start_matches("https://").to_string() }
        }

        /// A client presenting a certificate signed by a CA the server does not know.
        pub fn foreign(path: &std::path::Path) -> Client {
            let base = Self::from_kubeconfig(path, false);
            let ca_key = rcgen::KeyPair::generate().unwrap();
            let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            let ca_cert = ca_params.self_signed(&ca_key).unwrap();
            let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_cert.pem(), ca_key).unwrap();
            let key = rcgen::KeyPair::generate().unwrap();
            let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            p.distinguished_name.push(rcgen::DnType::CommonName, "system:admin");
            p.distinguished_name.push(rcgen::DnType::OrganizationName, "system:masters");
            let cert = p.signed_by(&key, &issuer).unwrap();
            let kc: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
            let ca = b64(&kc["clusters"][0]["cluster"]["certificate-authority-data"]);
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(&ca) {
                roots.add(c.unwrap()).unwrap();
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let cfg = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_client_auth_cert(
                    vec![cert.der().clone()],
                    PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap(),
                )
                .unwrap();
            Client { tls: Arc::new(cfg), addr: base.addr }
        }

        /// Sends one request over a fresh connection.
        pub async fn send(
            &self,
            method: &str,
            path: &str,
            headers: &[(&str, &str)],
            body: Vec<u8>,
        ) -> Result<Resp, String> {
            let tcp = tokio::net::TcpStream::connect(&self.addr).await.map_err(|e| e.to_string())?;
            let connector = tokio_rustls::TlsConnector::from(self.tls.clone());
            let tls = connector
                .connect(ServerName::try_from("127.0.0.1").unwrap().to_owned(), tcp)
                .await
                .map_err(|e| e.to_string())?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            let mut req = http::Request::builder().method(method).uri(path).header("host", &self.addr);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            let req = req.body(Full::new(Bytes::from(body))).map_err(|e| e.to_string())?;
            let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
            Ok(Resp { status, headers, body })
        }
    }
}

/// A running `skiff sim` (simulated nodes); killed (SIGKILL) when dropped, so its nodes stop
/// heartbeating as a box that lost power would.
pub struct Sim {
    child: Option<Child>,
    log: PathBuf,
}

impl Sim {
    /// The simulator's process id (0 once it was killed).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// The simulator's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the simulator (SIGSTOP): its nodes stop heartbeating until [`Sim::resume`], as
    /// on a box that hangs for a while.
    pub fn pause(&self) {
        self.signal(nix::sys::signal::Signal::SIGSTOP);
    }

    /// Lets a paused simulator go on (SIGCONT).
    pub fn resume(&self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        if let Some(c) = &self.child {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), sig).expect("signal the simulator");
        }
    }

    /// Kills the simulator (its nodes stop heartbeating).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Server {
    /// Starts `skiff sim` with `args` (e.g. `--nodes 3 --node-prefix a-`) against this server and
    /// waits until its nodes are Ready.
    pub fn sim(&self, args: &[&str]) -> Sim {
        let n = std::fs::read_dir(self.dir.path()).map(|d| d.count()).unwrap_or(0);
        let log = self.dir.path().join(format!("sim-{n}.log"));
        let file = std::fs::File::create(&log).expect("sim log");
        let child = Command::new(skiff_bin())
            .arg("sim")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start skiff sim");
        let sim = Sim { child: Some(child), log };
        let nodes: u32 = args
            .iter()
            .position(|a| *a == "--nodes")
            .and_then(|i| args.get(i + 1))
            .and_then(|n| n.parse().ok())
            .unwrap_or(1);
        let prefix = args
            .iter()
            .position(|a| *a == "--node-prefix")
            .and_then(|i| args.get(i + 1))
            .map(|s| s.to_string())
            .unwrap_or_else(|| "sim-".into());
        let deadline = Instant::now() + Duration::from_secs(30);
        let ready = || {
            let out = self.kubectl(&[
                "get",
                "nodes",
                "-o",
                "jsonpath={range .items[*]}{.metadata.name} {.spec.podCIDR} {.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
            ]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let ready = text
                .lines()
                .filter(|l| l.starts_with(&prefix) && l.split_whitespace().count() == 3 && l.ends_with("True"))
                .count();
            ready as u32 >= nodes
        };
        while !ready() {
            assert!(
                Instant::now() < deadline,
                "{nodes} simulated nodes {prefix}* not Ready with a podCIDR after 30 s; sim log:\n{}\nserver log:\n{}\nnodes:\n{}",
                sim.log(),
                self.log().lines().filter(|l| l.contains("skiff::")).collect::<Vec<_>>().join("\n"),
                String::from_utf8_lossy(&self.kubectl(&["get", "nodes", "-o", "wide"]).stdout)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        sim
    }

    /// Polls `check` every 200 ms until it holds; panics naming `what` (with the server log)
    /// after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if check() {
                return;
            }
            if Instant::now() > deadline {
                let log = self.log();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                panic!(
                    "timed out after {timeout:?} waiting for {what}; server log tail:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `kubectl get ARGS -o json`, parsed.
    pub fn get_json(&self, args: &[&str]) -> serde_json::Value {
        let mut full = vec!["get"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["-o", "json"]);
        serde_json::from_str(&self.ok(&full)).expect("kubectl json")
    }

    /// Applies a manifest, panicking with kubectl's error on failure.
    pub fn apply(&self, manifest: &str) {
        let out = self.apply_stdin(&["apply", "-f", "-"], manifest);
        assert!(out.status.success(), "kubectl apply failed: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// Other identities than the admin's, for authorization tests.
impl Server {
    /// A kubeconfig for `user` in `groups` (besides `system:authenticated`), with a client
    /// certificate signed by the cluster CA, as an administrator would issue one.
    pub fn user_kubeconfig(&self, user: &str, groups: &[&str]) -> PathBuf {
        let tls = self.data_dir().join("server/tls");
        let ca_pem = std::fs::read_to_string(tls.join("server-ca.crt")).expect("cluster CA");
        let ca_key = std::fs::read_to_string(tls.join("server-ca.key")).expect("CA key");
        let issuer =
            rcgen::Issuer::from_ca_cert_pem(&ca_pem, rcgen::KeyPair::from_pem(&ca_key).expect("key")).expect("issuer");
        let key = rcgen::KeyPair::generate().expect("key");
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        for g in groups {
            p.distinguished_name.push(rcgen::DnType::OrganizationName, *g);
        }
        p.distinguished_name.push(rcgen::DnType::CommonName, user);
        let cert = p.signed_by(&key, &issuer).expect("sign");
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        self.kubeconfig_with_user(
            &user.replace(':', "-"),
            serde_json::json!({"client-certificate-data": b64(&cert.pem()), "client-key-data": b64(&key.serialize_pem())}),
        )
    }

    /// A kubeconfig that authenticates with a bearer token only.
    pub fn token_kubeconfig(&self, name: &str, token: &str) -> PathBuf {
        self.kubeconfig_with_user(name, serde_json::json!({"token": token.trim()}))
    }

    fn kubeconfig_with_user(&self, name: &str, user: serde_json::Value) -> PathBuf {
        let kc: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(&self.kubeconfig).expect("kubeconfig")).expect("yaml");
        let cluster = &kc["clusters"][0]["cluster"];
        let doc = serde_json::json!({
            "apiVersion": "v1", "kind": "Config", "current-context": "c",
            "clusters": [{"name": "c", "cluster": {"server": cluster["server"].as_str().expect("server"),
                "certificate-authority-data": cluster["certificate-authority-data"].as_str().expect("CA")}}],
            "users": [{"name": "u", "user": user}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u", "namespace": "default"}}],
        });
        let path = self.path().join(format!("kubeconfig-{name}.yaml"));
        std::fs::write(&path, serde_yaml::to_string(&doc).expect("yaml")).expect("write kubeconfig");
        path
    }

    /// Runs kubectl with another kubeconfig.
    pub fn kubectl_as(&self, kubeconfig: &Path, args: &[&str]) -> Output {
        Command::new(KUBECTL)
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("HOME", self.dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("run kubectl")
    }
}
