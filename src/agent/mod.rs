//! The node agent: a kubelet that runs the pods bound to this node through CRI.
//!
//! Start at [`run`]: it brings up the container runtime (a supervised containerd, or an
//! existing CRI socket), imports the images folder and the built-in pause image, registers the
//! Node ([`node`]: capacity, addresses, labels, Lease heartbeat, conditions from [`host`]
//! measurements), writes the CNI configuration once the node has a pod CIDR ([`cni`]), and runs
//! the pod workers ([`pods`]), the static pods of `<data-dir>/agent/pod-manifests/`
//! ([`static_pods`]), the kubelet API ([`kubelet_api`]), image garbage collection
//! ([`image_gc`]), hard eviction ([`eviction`]), the service proxy ([`crate::netproxy`]) and
//! the node-local cluster DNS ([`dns`]) and the pod network between nodes ([`overlay`]).
//! [`config`] holds the flags.
//!
//! Invariant: an API client only (a [`kube::Client`], in-process inside `skiff server`, over
//! HTTPS in `skiff agent`); it never sees the store. It speaks to containers only through the
//! [`crate::cri`] room, and it owns only the sandboxes and containers it labelled itself.

pub mod bootstrap;
pub mod cli;
pub mod cni;
pub mod config;
pub mod dns;
pub mod eviction;
pub mod host;
pub mod image_gc;
pub mod kubelet_api;
pub mod node;
pub mod overlay;
pub mod pods;
pub mod reviews;
pub mod static_pods;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use crate::cri::containerd::Options;
use crate::cri::{Containerd, CriClient, CriError};
use config::AgentConfig;

/// How long to wait for an existing CRI socket to answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long pod workers wait for the node's pod CIDR before they start anyway (host-network
/// pods need none).
const POD_CIDR_WAIT: Duration = Duration::from_secs(30);

/// Errors that stop the agent from starting.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot create {}: {source}", path.display())]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("container runtime: {0}")]
    Runtime(#[from] CriError),
    #[error("cancelled before the node was registered")]
    Cancelled,
}

/// The CNI configuration folder containerd reads.
pub fn cni_conf_dir(cfg: &AgentConfig) -> PathBuf {
    cfg.agent_dir().join("etc").join("cni").join("net.d")
}

/// The kubelet API's TLS identity: its serving certificate, and the CA the API server's
/// kubelet client certificate chains to.
#[derive(Debug, Clone)]
pub struct KubeletTls {
    pub serving: Arc<crate::pki::ServingCert>,
    pub client_ca_pem: String,
}

/// Runs the agent until `cancel` fires. `proxy_client` is the service proxy's own identity
/// (`system:kube-proxy`); without one the node runs no service proxy.
pub async fn run(
    cfg: AgentConfig,
    client: Client,
    proxy_client: Option<Client>,
    tls: KubeletTls,
    cancel: CancellationToken,
) -> Result<(), AgentError> {
    let cfg = Arc::new(cfg);
    let agent_dir = cfg.agent_dir();
    for dir in [
        agent_dir.clone(),
        agent_dir.join("images"),
        agent_dir.join("pods"),
        agent_dir.join("logs"),
        agent_dir.join("pod-manifests"),
    ] {
        std::fs::create_dir_all(&dir).map_err(|source| AgentError::Dir { path: dir.clone(), source })?;
    }
    let host = crate::cri::config::HostFacts::detect();
    let driver = host.cgroup_driver();
    let (cri, containerd) = match &cfg.runtime_endpoint {
        Some(socket) => (CriClient::connect(socket, CONNECT_TIMEOUT).await?, None),
        None => {
            let settings = crate::cri::config::Settings {
                sandbox_image: crate::cri::pause::IMAGE.to_string(),
                cni_conf_dir: cni_conf_dir(&cfg),
            };
            let mut options = Options::new(agent_dir.join("containerd"), settings);
            options.host = host;
            let c = Containerd::start(options, &cancel).await?;
            (c.client(), Some(c))
        }
    };
    if let Err(e) = crate::cri::pause::ensure(&cri).await {
        tracing::warn!(error = %e, "cannot import the pause image");
    }
    let state_file = agent_dir.join("containerd").join(crate::cri::image_dir::STATE_FILE);
    match crate::cri::image_dir::import_dir(&cri, &agent_dir.join("images"), &state_file).await {
        Ok(r) => {
            for (file, e) in &r.failed {
                tracing::warn!(file = %file.display(), error = %e, "cannot import image archive");
            }
            if !r.imported.is_empty() {
                tracing::info!(archives = r.imported.len(), "imported image archives");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot import the images folder"),
    }
    let version = cri.version().await?;
    let info = host::system_info();
    let facts = node::NodeFacts {
        cfg: &cfg,
        info: &info,
        runtime_version: format!("{}://{}", version.runtime_name, version.runtime_version),
    };
    let mut pause = Duration::from_millis(200);
    loop {
        match node::register(&client, &facts).await {
            Ok(()) => break,
            Err(e) => tracing::warn!(node = %cfg.node_name, error = %e, "cannot register the node; retrying"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return Err(AgentError::Cancelled),
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_secs(10));
    }
    // Under systemd (`skiff agent` as a service) the unit is started once the node exists.
    crate::systemd::notify_ready();
    let recorder = crate::runtime::events::Recorder::new(client.clone(), "kubelet", &cfg.node_name);
    let ctx = Arc::new(pods::worker::Ctx {
        client: client.clone(),
        cri: cri.clone(),
        cfg: cfg.clone(),
        recorder,
        driver,
        host_resolv: std::fs::read_to_string(cfg.resolv_conf.as_deref().unwrap_or("/etc/resolv.conf".as_ref()))
            .unwrap_or_default(),
        pods_dir: agent_dir.join("pods"),
        logs_dir: agent_dir.join("logs"),
        index: Default::default(),
        services: crate::runtime::Informer::spawn(
            Api::all(client.clone()),
            kube::runtime::watcher::Config::default(),
            cancel.child_token(),
        ),
        evictions: Default::default(),
        tokens: Default::default(),
    });
    let api_cfg = kubelet_api::Config {
        listen: cfg.kubelet_listen(),
        serving: tls.serving,
        client_ca_pem: tls.client_ca_pem,
        node_name: cfg.node_name.clone(),
        nodefs: cfg.data_dir.clone(),
        reviews: Arc::new(reviews::ApiReviews(client.clone())),
    };
    let kubelet_api = kubelet_api::serve(api_cfg, cri.clone(), ctx.index.clone(), cancel.clone());
    let kubelet_api = async {
        if let Err(e) = kubelet_api.await {
            tracing::error!(error = %e, "the kubelet API stopped: no logs, exec, attach or port-forward on this node");
        }
    };
    let node_ref = k8s_openapi::api::core::v1::ObjectReference {
        kind: Some("Node".into()),
        api_version: Some("v1".into()),
        name: Some(cfg.node_name.clone()),
        uid: Some(cfg.node_name.clone()),
        ..Default::default()
    };
    let image_gc = image_gc::run(cri.clone(), ctx.recorder.clone(), node_ref, cfg.kubelet.clone(), cancel.clone());
    let network_ready = Arc::new(tokio::sync::Notify::new());
    let heartbeat = node::heartbeat(client.clone(), cri.clone(), facts, cancel.clone(), network_ready.clone());
    let workers = async {
        let _ =
            tokio::time::timeout(POD_CIDR_WAIT, configure_network(&client, &cri, &cfg, &cancel, &network_ready)).await;
        tokio::join!(
            pods::run(ctx.clone(), cancel.clone()),
            configure_network(&client, &cri, &cfg, &cancel, &network_ready)
        );
    };
    let mirrors =
        static_pods::run(client.clone(), agent_dir.join("pod-manifests"), cfg.node_name.clone(), cancel.clone());
    let eviction = eviction::run(ctx.clone(), cancel.clone());
    // EndpointSlices are read with the service proxy's identity: a node may not list them.
    let slices = proxy_client.as_ref().map(|c| {
        crate::runtime::Informer::spawn(
            Api::all(c.clone()),
            kube::runtime::watcher::Config::default(),
            cancel.child_token(),
        )
    });
    let proxy = async {
        match (&proxy_client, &slices) {
            (Some(proxy_client), Some(slices)) if cfg.proxy => {
                let proxy_cfg = crate::netproxy::Config {
                    node_name: cfg.node_name.clone(),
                    skip_ips: vec![cfg.cluster_dns],
                    mode: cfg.proxy_mode,
                };
                let services = ctx.services.clone();
                crate::netproxy::run(proxy_client.clone(), proxy_cfg, services, slices.clone(), cancel.clone()).await;
            }
            (None, _) if cfg.proxy => {
                tracing::warn!("no credentials for the service proxy: Services are not served on this node")
            }
            _ => {}
        }
    };
    let overlay_cfg =
        overlay::Config { node_name: cfg.node_name.clone(), node_ip: cfg.node_ips[0], backend: cfg.overlay };
    let pod_network = async {
        match &proxy_client {
            Some(reader) => overlay::run(client.clone(), reader.clone(), overlay_cfg, cancel.clone()).await,
            None => tracing::warn!("no credentials to read the other nodes: pods here reach no other node's pods"),
        }
    };
    let cluster_dns = async {
        let Some(slices) = &slices else { return };
        // Noted first, so the uninstaller knows what to take off the loopback interface.
        let prefix = if cfg.cluster_dns.is_ipv4() { 32 } else { 128 };
        let note = cfg.agent_dir().join("cluster-dns-address");
        if let Err(e) = std::fs::write(&note, format!("{}/{prefix}\n", cfg.cluster_dns)) {
            tracing::warn!(file = %note.display(), error = %e, "cannot note the cluster DNS address");
        }
        if let Err(e) = dns::add_local_address(cfg.cluster_dns).await {
            tracing::error!(error = %e, "the cluster DNS address is not on this node: pods here cannot resolve names");
            return;
        }
        let dns_cfg = dns::Config {
            listen: vec![std::net::SocketAddr::new(cfg.cluster_dns, 53)],
            domain: cfg.cluster_domain.clone(),
            resolv_conf: cfg.resolv_conf.clone(),
        };
        if let Err(e) = dns::run(dns_cfg, ctx.services.clone(), slices.clone(), cancel.clone()).await {
            tracing::error!(error = %e, "the cluster DNS stopped: pods here cannot resolve names");
        }
    };
    tokio::join!(heartbeat, workers, mirrors, kubelet_api, image_gc, eviction, proxy, cluster_dns, pod_network);
    if let Some(c) = containerd {
        c.stop().await;
    }
    Ok(())
}

/// Waits for the node's pod CIDR and writes the CNI configuration for it, then wakes the
/// heartbeat so the node reports Ready without waiting for its next beat.
async fn configure_network(
    client: &Client,
    cri: &CriClient,
    cfg: &AgentConfig,
    cancel: &CancellationToken,
    network_ready: &tokio::sync::Notify,
) {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut logged = false;
    loop {
        let cidr = nodes.get_opt(&cfg.node_name).await.ok().flatten().and_then(|n| n.spec).and_then(|s| s.pod_cidr);
        if let Some(cidr) = cidr {
            let conf_dir = cni_conf_dir(cfg);
            let ipam = cfg.agent_dir().join("cni").join("ipam");
            // VXLAN costs 50 bytes of every packet (flannel's MTU for it).
            let mtu = (cfg.overlay == overlay::Backend::Vxlan).then_some(1450);
            match tokio::task::spawn_blocking(move || cni::write(&conf_dir, &cidr, &ipam, mtu)).await {
                Ok(Ok(path)) => {
                    tracing::debug!(file = %path.display(), "CNI configuration written");
                    // containerd picks the file up by itself; wake the heartbeat once it has.
                    for _ in 0..50 {
                        if node::runtime_problem(cri).await.is_none() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    network_ready.notify_one();
                    return;
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot write the CNI configuration"),
                Err(_) => return,
            }
        } else if !logged {
            tracing::info!(node = %cfg.node_name, "waiting for the node's pod CIDR");
            logged = true;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}
