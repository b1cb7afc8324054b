//! `skiff agent`: the node part alone, against a remote API server.

use tokio_util::sync::CancellationToken;

use super::config::AgentFlags;

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
        let (client, ca) = match flags.client().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("skiff: {e}");
                return 1;
            }
        };
        let Some(client_ca_pem) = ca else {
            eprintln!("skiff: the kubeconfig names no certificate authority, which the kubelet API needs to check the API server");
            return 1;
        };
        let (dir, names) = (cfg.agent_dir(), cfg.serving_names());
        let serving = match tokio::task::spawn_blocking(move || crate::pki::kubelet_serving(&dir, &names, None)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                eprintln!("skiff: cannot set up the kubelet's serving certificate: {e}");
                return 1;
            }
            Err(e) => {
                eprintln!("skiff: {e}");
                return 1;
            }
        };
        let tls = super::KubeletTls { serving, client_ca_pem };
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        tokio::spawn(async move {
            crate::server::wait_for_signal().await;
            tracing::info!("shutting down");
            stop.cancel();
        });
        match super::run(cfg, client, tls, cancel).await {
            Ok(()) => 0,
            Err(e) => {
                tracing::error!("{e}");
                eprintln!("skiff: {e}");
                1
            }
        }
    })
}
