//! `skiff agent`: the node part alone, against a remote API server. It joins with `--server`
//! and `--token` (or the node credentials of an earlier join), or runs with the credentials of
//! `--kubeconfig`.

use tokio_util::sync::CancellationToken;

use super::config::{AgentConfig, AgentFlags};

/// Runs `skiff agent` until SIGINT/SIGTERM; returns the exit code.
pub fn run_blocking(flags: AgentFlags) -> i32 {
    let format = flags.log_format.unwrap_or(crate::server::config::LogFormat::Text);
    crate::cli::init_logging(format, flags.v.unwrap_or(0));
    let cfg = match flags.to_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("skiff: {e}");
            return 1;
        }
    };
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skiff: the agent runs containers and must run as root");
        return 1;
    }
    if flags.cleanup {
        return cleanup(&cfg);
    }
    if let Err(unfit) = crate::checkconfig::ensure_node_fit(cfg.runtime_endpoint.is_none()) {
        unfit.print();
        return 1;
    }
    // Blocking threads end after 1 s idle instead of 10: the agent uses them in bursts (image
    // imports at start, file work per pod), and an idle one keeps what its heap held, ~4 MiB
    // after the start-up imports (BENCHMARKS.md, node).
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("skiff-agent")
        .thread_keep_alive(std::time::Duration::from_secs(1))
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("skiff: cannot start the async runtime: {e}");
            return 1;
        }
    };
    rt.block_on(async move {
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        tokio::spawn(async move {
            crate::server::wait_for_signal().await;
            tracing::info!("shutting down");
            stop.cancel();
        });
        let (client, proxy_client, tls, renewer) = match connect(&flags, &cfg, &cancel).await {
            Ok(c) => c,
            // One line on stderr: e.g. the CA hash mismatch, naming both hashes.
            Err(_) if cancel.is_cancelled() => return 0,
            Err(e) => {
                eprintln!("skiff: {e}");
                return 1;
            }
        };
        if let Some(r) = renewer {
            tokio::spawn(r.run(cancel.clone()));
        }
        match super::run(cfg, client, proxy_client, tls, cancel).await {
            Ok(()) => 0,
            Err(e) => {
                tracing::error!("{e}");
                eprintln!("skiff: {e}");
                1
            }
        }
    })
}

/// The node's client, the service proxy's, the kubelet API's TLS identity and the renewer of a
/// joined node's certificates.
/// `skiff agent --cleanup`: removes the service proxy's tables, the overlay's device, routes and
/// table, and the cluster DNS address.
fn cleanup(cfg: &AgentConfig) -> i32 {
    let mut code = 0;
    if let Err(e) = crate::netproxy::cleanup() {
        eprintln!("skiff: {e}");
        code = 1;
    }
    if let Err(e) = super::overlay::cleanup() {
        eprintln!("skiff: {e}");
        code = 1;
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
    let removed = match rt {
        Ok(rt) => rt.block_on(super::dns::remove_local_address(cfg.cluster_dns)).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = removed {
        eprintln!("skiff: {e}");
        code = 1;
    }
    code
}

type Connected = (kube::Client, Option<kube::Client>, super::KubeletTls, Option<super::bootstrap::Renewer>);

/// The node's API client and kubelet TLS: from `--kubeconfig`, or by joining.
async fn connect(flags: &AgentFlags, cfg: &AgentConfig, cancel: &CancellationToken) -> Result<Connected, String> {
    if flags.kubeconfig.is_some() {
        let (client, ca) = flags.client().await?;
        let client_ca_pem = ca.ok_or(
            "the kubeconfig names no certificate authority, which the kubelet API needs to check the API server",
        )?;
        let (dir, names) = (cfg.agent_dir(), cfg.serving_names());
        let serving = tokio::task::spawn_blocking(move || crate::pki::kubelet_serving(&dir, &names, None))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot set up the kubelet's serving certificate: {e}"))?;
        let serving = crate::pki::ServingCert::new(&serving.cert_pem, &serving.key_pem).map_err(|e| e.to_string())?;
        // The kubeconfig's credentials serve the proxy too (RBAC decides what they may list).
        return Ok((client.clone(), Some(client), super::KubeletTls { serving, client_ca_pem }, None));
    }
    let join = super::bootstrap::Join {
        server: flags.server.clone(),
        token: flags.token.clone(),
        agent_dir: cfg.agent_dir(),
        node_name: cfg.node_name.clone(),
        serving_names: cfg.serving_names(),
    };
    let joined = super::bootstrap::join(join, cancel).await.map_err(|e| e.to_string())?;
    let tls = super::KubeletTls { serving: joined.serving, client_ca_pem: joined.ca_pem };
    Ok((joined.client, joined.proxy_client, tls, Some(joined.renewer)))
}
