//! The control plane: `skiff server`.
//!
//! [`run`] wires the rooms together: PKI, the store, the API server and the bootstrap objects,
//! then waits for SIGTERM. Later components (scheduler, controllers, agent) start here as API
//! clients.

pub mod apiserver;
pub mod auth;
pub mod config;
pub mod controllers;
pub mod inproc;
pub mod node_role;
pub mod scheduler;
pub mod secrets_encryption;
pub mod store;
pub mod token_cli;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use config::ServerConfig;

/// Runs the server on a fresh tokio runtime; returns the exit code.
pub fn run_blocking(cfg: ServerConfig) -> i32 {
    crate::cli::init_logging(cfg.log_format, cfg.verbosity);
    // The agent beside the control plane runs only as root (see `start_components`); a box
    // that cannot run it is refused before anything starts, as `skiff agent` refuses.
    if let Some(agent) = &cfg.agent
        && nix::unistd::geteuid().is_root()
        && let Err(unfit) = crate::checkconfig::ensure_node_fit(agent.runtime_endpoint.is_none())
    {
        unfit.print();
        return 1;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("skiff").build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("skiff: cannot start the async runtime: {e}");
            return 1;
        }
    };
    let shutdown = CancellationToken::new();
    let signals = shutdown.clone();
    rt.spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        signals.cancel();
    });
    match rt.block_on(run(cfg, shutdown)) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("skiff: {e:#}");
            1
        }
    }
}

pub(crate) async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Starts everything and serves until `shutdown` fires.
pub async fn run(cfg: ServerConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let started = Instant::now();
    let server_dir = cfg.server_dir();
    std::fs::create_dir_all(&server_dir).with_context(|| format!("cannot create {}", server_dir.display()))?;
    restrict_dir(&cfg.data_dir);
    restrict_dir(&server_dir);

    let hostname =
        nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "localhost".into());
    let pki_cfg = crate::pki::PkiConfig {
        server_dir: server_dir.clone(),
        hostname: hostname.to_lowercase(),
        node_ips: vec![cfg.advertise_address],
        first_service_ip: cfg.first_service_ip(),
        cluster_domain: cfg.cluster_domain.clone(),
        tls_sans: cfg.tls_san.clone(),
        token: cfg.token.clone(),
        agent_token: cfg.agent_token.clone(),
    };
    let pki = tokio::task::spawn_blocking(move || crate::pki::load_or_create(&pki_cfg))
        .await
        .context("PKI task failed")?
        .context("cannot set up certificates")?;
    let pki = Arc::new(pki);

    let db_path = server_dir.join("db").join("state.redb");
    std::fs::create_dir_all(db_path.parent().unwrap_or(&server_dir))?;
    let store_opts = store::StoreOptions {
        history_window: cfg.store_history_window,
        compact_interval: cfg.store_compact_interval,
        ..Default::default()
    };
    let store = store::RedbStore::open(&db_path, store_opts)
        .with_context(|| format!("cannot open the datastore {}", db_path.display()))?;
    let store: Arc<dyn store::Datastore> = store;
    let (store, secrets_encryption) =
        secrets_encryption::wrap(store, &server_dir, cfg.secrets_encryption).map_err(|e| anyhow::anyhow!(e))?;

    let alloc = Arc::new(apiserver::ipalloc::Allocators::new(cfg.service_cidr, cfg.node_port_range));
    let objects = apiserver::objects::Objects::new(store.clone(), alloc);
    // The RBAC index follows the store from here on; the writes below wait for it.
    tokio::spawn(objects.rbac.clone().run(store.clone(), shutdown.child_token()));
    // So does the node authorizer's graph of which node's pods use what.
    let node_graph = Arc::new(auth::node::NodeGraph::new());
    tokio::spawn(node_graph.clone().run(store.clone(), shutdown.child_token()));
    apiserver::bootstrap::restore_allocations(&objects).await.map_err(|e| anyhow::anyhow!("{}", e.message))?;

    let (tls, cert_check) = crate::pki::server_tls_config(&pki).context("cannot build the TLS configuration")?;
    let addr = SocketAddr::new(cfg.bind_address, cfg.https_listen_port);
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(cfg.https_listen_port);

    let sa_key = Arc::new(pki.sa.clone());
    let issuer = format!("https://kubernetes.default.svc.{}", cfg.cluster_domain);
    let api = Arc::new(apiserver::ApiServer {
        authz: Box::new(auth::Chain { nodes: auth::node::NodeAuthorizer::new(node_graph), rbac: objects.rbac.clone() }),
        objects,
        tokens: auth::TokenAuthenticator::new(sa_key.clone(), issuer),
        secrets_encryption,
        openapi: Default::default(),
        shutdown: shutdown.clone(),
        ready: Default::default(),
        advertise: SocketAddr::new(cfg.advertise_address, port).to_string(),
        ca_pem: pki.ca_pem.clone(),
        join: apiserver::join::JoinSecrets {
            server: crate::pki::parse_token(&pki.token).map(|t| t.secret).unwrap_or_default(),
            agent: pki.agent_token.as_deref().and_then(|t| crate::pki::parse_token(t).ok()).map(|t| t.secret),
        },
        kubelet_client: Some(Arc::new(
            apiserver::node_proxy::KubeletClient::new(&pki.kubelet_client_cert_pem, &pki.kubelet_client_key_pem)
                .context("cannot build the kubelet client")?,
        )),
    });
    api.openapi.spawn_build();
    apiserver::bootstrap::run(&api.objects, cfg.first_service_ip(), cfg.advertise_address, port, cfg.cluster_dns)
        .await
        .map_err(|e| anyhow::anyhow!("cannot create bootstrap objects: {}", e.message))?;
    auth::bootstrap::reconcile(&api.objects)
        .await
        .map_err(|e| anyhow::anyhow!("cannot reconcile the default RBAC policy: {}", e.message))?;
    api.ready.store(true, Ordering::Release);
    let serving = tokio::spawn(apiserver::serve(listener, tls, cert_check, api.clone(), shutdown.clone()));

    let local = if cfg.bind_address.is_unspecified() { cfg.advertise_address } else { cfg.bind_address };
    let url = format!("https://{}", SocketAddr::new(local, port));
    let url = if cfg.bind_address.is_unspecified() { format!("https://127.0.0.1:{port}") } else { url };
    crate::pki::write_kubeconfig(
        &cfg.write_kubeconfig,
        cfg.write_kubeconfig_mode,
        &url,
        &pki.ca_pem,
        &pki.admin_cert_pem,
        &pki.admin_key_pem,
        "default",
    )
    .with_context(|| format!("cannot write the kubeconfig {}", cfg.write_kubeconfig.display()))?;

    tracing::info!(
        api = %url,
        kubeconfig = %cfg.write_kubeconfig.display(),
        token = %server_dir.join("token").display(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "skiff API server is ready",
    );
    let kubelet_tls = match &cfg.agent {
        Some(agent) => {
            let (dir, names) = (agent.agent_dir(), agent.serving_names());
            let signer = pki.clone();
            let serving = tokio::task::spawn_blocking(move || crate::pki::kubelet_serving(&dir, &names, Some(&signer)))
                .await
                .context("PKI task failed")?
                .context("cannot set up the kubelet's serving certificate")?;
            let serving = crate::pki::ServingCert::new(&serving.cert_pem, &serving.key_pem)
                .context("cannot load the kubelet's serving certificate")?;
            Some(crate::agent::KubeletTls { serving, client_ca_pem: pki.ca_pem.clone() })
        }
        None => None,
    };
    let components = start_components(&cfg, &api, &pki, &hostname, kubelet_tls, &shutdown);
    crate::systemd::notify_ready();

    shutdown.cancelled().await;
    crate::systemd::notify_stopping();
    for c in components {
        let _ = tokio::time::timeout(Duration::from_secs(4), c).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(4), serving).await;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Starts the scheduler and the controllers as in-process API clients, each behind its own
/// leader election; returns their tasks, which end after `shutdown`.
fn start_components(
    cfg: &ServerConfig,
    api: &Arc<apiserver::ApiServer>,
    pki: &Arc<crate::pki::ServerPki>,
    hostname: &str,
    kubelet_tls: Option<crate::agent::KubeletTls>,
    shutdown: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    use std::hash::{Hash, Hasher};
    // The same server (data dir) keeps its identity across restarts, so it takes its own
    // Lease back at once instead of waiting for it to expire.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    cfg.data_dir.hash(&mut h);
    let identity = format!("{hostname}_{:016x}", h.finish());
    let cm_client = inproc::client(api.clone(), "system:kube-controller-manager");
    let ca_pem = &pki.ca_pem;
    let informers = crate::runtime::Informers::new(cm_client.clone(), shutdown.child_token());
    // The scheduler and the controllers share this pod cache; see what it keeps there.
    informers.trim::<k8s_openapi::api::core::v1::Pod>(controllers::pods::control_plane_view);
    let mut tasks = Vec::new();

    let sa_api = api.clone();
    let ctx = Arc::new(controllers::Ctx {
        client: cm_client.clone(),
        client_for: Arc::new(move |sa: &str| inproc::service_account_client(sa_api.clone(), "kube-system", sa)),
        informers: informers.clone(),
        host: hostname.to_string(),
        cluster_cidr: cfg.cluster_cidr,
        node_cidr_mask: cfg.node_cidr_mask_size,
        node_monitor_grace: cfg.node_monitor_grace_period,
        terminated_pod_gc_threshold: cfg.terminated_pod_gc_threshold,
        ca_pem: ca_pem.to_string(),
        pki: pki.clone(),
        cluster_signing_duration: cfg.cluster_signing_duration,
    });
    let disabled = cfg.disable_controllers.clone();
    let elector = crate::runtime::leader::Elector::new(cm_client, "kube-controller-manager", &identity);
    tasks.push(tokio::spawn(
        elector.run(shutdown.clone(), move |term| controllers::run(ctx.clone(), disabled.clone(), term)),
    ));

    if let (Some(agent_cfg), Some(tls)) = (cfg.agent.clone(), kubelet_tls) {
        if nix::unistd::geteuid().is_root() {
            let labeller = inproc::service_account_client(api.clone(), "kube-system", node_role::SERVICE_ACCOUNT);
            tasks.push(tokio::spawn(node_role::run(labeller, agent_cfg.node_name.clone(), shutdown.clone())));
            let user = format!("system:node:{}", agent_cfg.node_name);
            let client = inproc::client_in_groups(api.clone(), &user, &[auth::NODES]);
            let proxy_client = inproc::client(api.clone(), "system:kube-proxy");
            let cancel = shutdown.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(e) = crate::agent::run(agent_cfg, client, Some(proxy_client), tls, cancel).await {
                    tracing::error!(error = %e, "the agent stopped; this server runs no pods");
                }
            }));
        } else {
            tracing::warn!(
                "not running as root: no agent, so this server runs no pods (--disable-agent silences this)"
            );
        }
    }

    if !cfg.disable_scheduler {
        let client = inproc::client(api.clone(), "system:kube-scheduler");
        let elector = crate::runtime::leader::Elector::new(client.clone(), "kube-scheduler", &identity);
        tasks.push(tokio::spawn(
            elector.run(shutdown.clone(), move |term| scheduler::run(client.clone(), informers.clone(), term)),
        ));
    }
    tasks
}

fn restrict_dir(p: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700));
}
