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
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("skiff-agent").build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("skiff: cannot start the async runtime: {e}");
            return 1;
        }
    };
    rt.block_on(async move {
        let (client, _ca) = match flags.client().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("skiff: {e}");
                return 1;
            }
        };
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        tokio::spawn(async move {
            crate::server::wait_for_signal().await;
            tracing::info!("shutting down");
            stop.cancel();
        });
        match super::run(cfg, client, cancel).await {
            Ok(()) => 0,
            Err(e) => {
                tracing::error!("{e}");
                eprintln!("skiff: {e}");
                1
            }
        }
    })
}
