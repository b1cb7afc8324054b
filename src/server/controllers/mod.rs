//! The controllers of `skiff server`, one file each, as upstream's kube-controller-manager runs
//! them. Each is an API client: it reads through the shared [`Informers`], decides, and writes
//! through the API with optimistic concurrency (a 409 means "read again", never "force").
//!
//! Start at [`run`], which starts every enabled controller; then [`replicaset`] as the simplest
//! complete example of the pattern (changes → keys on a work queue → reconcile one key).
//!
//! Invariant: no controller reads the store or calls into the API server directly, and none
//! keeps state that cannot be rebuilt from the API (a restarted server resumes where it was).

pub mod cronjob;
pub mod csrapproving;
pub mod csrsigning;
pub mod daemonset;
pub mod deployment;
pub mod discovery;
pub mod disruption;
pub mod endpoints;
pub mod endpointslice;
pub mod expectations;
pub mod garbagecollector;
pub mod history;
pub mod job;
pub mod namespace;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod nodepassword;
pub mod per_namespace;
pub mod podgc;
pub mod pods;
pub mod replicaset;
pub mod rootca;
pub mod serviceaccount;
pub mod statefulset;
pub mod tokencleaner;
pub mod ttlafterfinished;

use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use tokio_util::sync::CancellationToken;

use crate::runtime::Informers;
use crate::runtime::events::Recorder;

/// Every controller name `--disable-controller` accepts (upstream's names).
pub const NAMES: &[&str] = &[
    "deployment",
    "replicaset",
    "replicationcontroller",
    "endpoint",
    "endpointslice",
    "disruption",
    "daemonset",
    "statefulset",
    "garbagecollector",
    "namespace",
    "serviceaccount",
    "root-ca-cert-publisher",
    "nodeipam",
    "nodelifecycle",
    "job",
    "cronjob",
    "ttl-after-finished",
    "podgc",
    "csrapproving",
    "csrsigning",
    "tokencleaner",
    "nodepassword",
];

/// What controllers share.
pub struct Ctx {
    pub client: kube::Client,
    pub informers: Arc<Informers>,
    /// This server's host name (events' `reportingInstance`).
    pub host: String,
    /// Pod network; nodes get a slice of it.
    pub cluster_cidr: IpNet,
    /// Prefix length of each node's podCIDR.
    pub node_cidr_mask: u8,
    /// How long a node may go without a heartbeat before it is NotReady.
    pub node_monitor_grace: Duration,
    /// Terminated pods kept before the oldest are deleted (0: never).
    pub terminated_pod_gc_threshold: usize,
    /// The cluster CA bundle published in every namespace.
    pub ca_pem: String,
    /// The cluster CA, which signs approved certificate requests.
    pub pki: Arc<crate::pki::ServerPki>,
    /// Lifetime of the certificates signed for requests (`--cluster-signing-duration`).
    pub cluster_signing_duration: Duration,
}

impl Ctx {
    /// An event recorder for `component`.
    pub fn recorder(&self, component: &str) -> Recorder {
        Recorder::new(self.client.clone(), component, &self.host)
    }
}

/// Starts every controller not in `disabled`, until `cancel` fires.
pub async fn run(ctx: Arc<Ctx>, disabled: Vec<String>, cancel: CancellationToken) {
    let mut tasks = tokio::task::JoinSet::new();
    let on = |name: &str| !disabled.iter().any(|d| d == name);
    macro_rules! start {
        ($name:literal, $f:expr) => {
            if on($name) {
                tasks.spawn($f(ctx.clone(), cancel.clone()));
            }
        };
    }
    start!("replicaset", replicaset::run_replicasets);
    start!("replicationcontroller", replicaset::run_replication_controllers);
    start!("deployment", deployment::run);
    start!("endpoint", endpoints::run);
    start!("endpointslice", endpointslice::run);
    start!("disruption", disruption::run);
    start!("daemonset", daemonset::run);
    start!("statefulset", statefulset::run);
    start!("garbagecollector", garbagecollector::run);
    start!("namespace", namespace::run);
    start!("serviceaccount", serviceaccount::run);
    start!("root-ca-cert-publisher", rootca::run);
    start!("nodeipam", nodeipam::run);
    start!("nodelifecycle", nodelifecycle::run);
    start!("job", job::run);
    start!("cronjob", cronjob::run);
    start!("ttl-after-finished", ttlafterfinished::run);
    start!("podgc", podgc::run);
    start!("csrapproving", csrapproving::run);
    start!("csrsigning", csrsigning::run);
    start!("tokencleaner", tokencleaner::run);
    start!("nodepassword", nodepassword::run);
    tracing::info!(disabled = ?disabled, "controllers started");
    while tasks.join_next().await.is_some() {}
}
