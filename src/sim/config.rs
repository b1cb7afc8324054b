//! `skiff sim` flags and their validation into a [`SimConfig`].

use std::path::PathBuf;

use clap::Args;
use k8s_openapi::api::core::v1::Taint;

use super::SimConfig;

/// `skiff sim` flags as parsed.
#[derive(Args, Debug, Clone)]
pub struct SimFlags {
    /// Number of simulated nodes
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=5000))]
    pub nodes: u32,
    /// API server URL [default: the kubeconfig's]
    #[arg(long, env = "SKIFF_URL", value_name = "URL")]
    pub server: Option<String>,
    /// Kubeconfig with the credentials to use [default: $KUBECONFIG, then ~/.kube/config]
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Node names are PREFIX0, PREFIX1, ...
    #[arg(long, default_value = "sim-", value_name = "PREFIX")]
    pub node_prefix: String,
    /// CPU capacity of each node
    #[arg(long, default_value = "8", value_name = "QUANTITY")]
    pub cpu: String,
    /// Memory capacity of each node
    #[arg(long, default_value = "32Gi", value_name = "QUANTITY")]
    pub memory: String,
    /// Pods per node
    #[arg(long, default_value_t = 110, value_name = "N")]
    pub max_pods: u32,
    /// Label of every node, KEY=VALUE (repeatable)
    #[arg(long = "node-label", value_name = "KEY=VALUE")]
    pub node_label: Vec<String>,
    /// Taint of every node, KEY[=VALUE]:EFFECT (repeatable)
    #[arg(long = "node-taint", value_name = "TAINT")]
    pub node_taint: Vec<String>,
    /// How long pods of Jobs run before they succeed
    #[arg(long, default_value = "5s", value_name = "DURATION")]
    pub job_duration: String,
    /// Log verbosity, 0-10
    #[arg(short = 'v', default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=10))]
    pub v: u8,
}

/// Parses `key[=value]:Effect` as `--node-taint` takes it.
pub fn parse_taint(s: &str) -> Result<Taint, String> {
    let bad = || format!("invalid value \"{s}\" for --node-taint: expected KEY[=VALUE]:EFFECT");
    let (kv, effect) = s.rsplit_once(':').ok_or_else(bad)?;
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        return Err(format!(
            "invalid value \"{s}\" for --node-taint: effect must be NoSchedule, PreferNoSchedule or NoExecute"
        ));
    }
    let (key, value) = match kv.split_once('=') {
        Some((k, v)) => (k, Some(v.to_string())),
        None => (kv, None),
    };
    if key.is_empty() {
        return Err(bad());
    }
    Ok(Taint { key: key.into(), value, effect: effect.into(), time_added: None })
}

impl SimFlags {
    /// Validates the flags; every error is one line naming its flag.
    pub fn to_config(&self) -> Result<SimConfig, String> {
        for (flag, q) in [("cpu", &self.cpu), ("memory", &self.memory)] {
            crate::api::quantity::parse_milli(q).map_err(|e| format!("invalid value \"{q}\" for --{flag}: {e}"))?;
        }
        let labels = self
            .node_label
            .iter()
            .map(|l| {
                l.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .ok_or_else(|| format!("invalid value \"{l}\" for --node-label: expected KEY=VALUE"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let taints = self.node_taint.iter().map(|t| parse_taint(t)).collect::<Result<Vec<_>, _>>()?;
        let job_duration = super::parse_duration(&self.job_duration).ok_or_else(|| {
            format!(
                "invalid value \"{}\" for --job-duration: expected a duration such as 5s or 500ms",
                self.job_duration
            )
        })?;
        Ok(SimConfig {
            nodes: self.nodes,
            prefix: self.node_prefix.clone(),
            cpu: self.cpu.clone(),
            memory: self.memory.clone(),
            max_pods: self.max_pods,
            labels,
            taints,
            job_duration,
            ..Default::default()
        })
    }

    /// The client these flags name: the kubeconfig's credentials, at `--server` if given.
    pub async fn client(&self) -> Result<kube::Client, String> {
        let kubeconfig = match &self.kubeconfig {
            Some(p) => kube::config::Kubeconfig::read_from(p)
                .map_err(|e| format!("cannot read kubeconfig {}: {e}", p.display()))?,
            None => kube::config::Kubeconfig::read().map_err(|e| format!("cannot read a kubeconfig: {e}"))?,
        };
        let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .map_err(|e| format!("invalid kubeconfig: {e}"))?;
        if let Some(url) = &self.server {
            config.cluster_url = url.parse().map_err(|_| format!("invalid value \"{url}\" for --server: not a URL"))?;
        }
        kube::Client::try_from(config).map_err(|e| format!("cannot build an API client: {e}"))
    }
}

/// Runs `skiff sim` on its own runtime until SIGINT/SIGTERM; returns the exit code.
pub fn run_blocking(flags: SimFlags) -> i32 {
    crate::cli::init_logging(crate::server::config::LogFormat::Text, flags.v);
    let cfg = match flags.to_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("skiff: {e}");
            return 1;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("skiff: cannot start the async runtime: {e}");
            return 1;
        }
    };
    rt.block_on(async move {
        let client = match flags.client().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("skiff: {e}");
                return 1;
            }
        };
        let cancel = tokio_util::sync::CancellationToken::new();
        let stop = cancel.clone();
        tokio::spawn(async move {
            crate::server::wait_for_signal().await;
            stop.cancel();
        });
        match super::run(client, cfg, cancel).await {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("skiff: cannot register the simulated nodes: {e}");
                1
            }
        }
    })
}
