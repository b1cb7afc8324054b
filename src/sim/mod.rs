//! Simulated nodes (`skiff sim`): nodes that register, heartbeat and "run" the pods bound to
//! them through the API, the way a kubelet would, without containers. They make the scheduler
//! and controllers testable and measurable at a scale no box here could run for real.
//!
//! [`node`] registers each node and renews its Lease; [`pods`] drives every pod bound to a
//! simulated node: Pending → Running (pod IP from the node's podCIDR, Ready) and, for pods of
//! Jobs or pods annotated with a run time, → Succeeded or Failed; deletion is honoured at once.
//!
//! Invariant: an API client only, like a kubelet; nodes carry `skiff.io/simulated=true` so no
//! one mistakes them for real ones.

pub mod config;
pub mod node;
pub mod pods;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Label every simulated node carries.
pub const SIMULATED_LABEL: &str = "skiff.io/simulated";
/// Pod annotation: how long the pod's containers run before they exit (e.g. `30s`).
pub const RUN_FOR_ANNOTATION: &str = "sim.skiff.io/run-for";
/// Pod annotation: the exit code of the pod's containers when they exit (default 0).
pub const EXIT_CODE_ANNOTATION: &str = "sim.skiff.io/exit-code";

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Number of nodes.
    pub nodes: u32,
    /// Node names are `<prefix><index>`.
    pub prefix: String,
    /// CPU capacity of each node (a quantity, e.g. `8`).
    pub cpu: String,
    /// Memory capacity of each node (a quantity, e.g. `32Gi`).
    pub memory: String,
    /// Pods per node.
    pub max_pods: u32,
    /// Extra labels of each node.
    pub labels: Vec<(String, String)>,
    /// Taints of each node (`key=value:Effect`).
    pub taints: Vec<k8s_openapi::api::core::v1::Taint>,
    /// How long pods of Jobs run before they succeed.
    pub job_duration: Duration,
    /// Concurrent pod status writers.
    pub workers: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: 1,
            prefix: "sim-".into(),
            cpu: "8".into(),
            memory: "32Gi".into(),
            max_pods: 110,
            labels: Vec::new(),
            taints: Vec::new(),
            job_duration: Duration::from_secs(5),
            workers: 16,
        }
    }
}

/// Parses a duration such as `500ms`, `5s`, `2m` or `1h`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.')?;
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().ok()?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

/// Runs the simulated nodes with `client` until `cancel` fires; returns when everything stopped.
pub async fn run(client: kube::Client, cfg: SimConfig, cancel: CancellationToken) -> Result<(), kube::Error> {
    let cfg = Arc::new(cfg);
    let names: Vec<String> = (0..cfg.nodes).map(|i| format!("{}{i}", cfg.prefix)).collect();
    for name in &names {
        node::register(&client, &cfg, name).await?;
    }
    tracing::info!(nodes = names.len(), "simulated nodes registered");
    let mut tasks = tokio::task::JoinSet::new();
    for name in names.clone() {
        tasks.spawn(node::heartbeat(client.clone(), cfg.clone(), name, cancel.clone()));
    }
    tasks.spawn(pods::run(client.clone(), cfg.clone(), names, cancel.clone()));
    while tasks.join_next().await.is_some() {}
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("5x"), None);
    }
}
