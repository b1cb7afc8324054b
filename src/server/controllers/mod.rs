//! The controllers of `skiff server`, one file each, as upstream's kube-controller-manager runs
//! them. Each is an API client: it reads through the shared [`Informers`], decides, and writes
//! through the API with optimistic concurrency (a 409 means "read again", never "force").
//!
//! Start at [`run`], which starts every enabled controller; then [`replicaset`] as the simplest
//! complete example of the pattern (changes → keys on a work queue → reconcile one key).
//!
//! Invariant: no controller reads the store or calls into the API server directly, and none
//! keeps state that cannot be rebuilt from the API (a restarted server resumes where it was).

pub mod clusterroleaggregation;
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
pub mod servicelb;
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
    "clusterrole-aggregation",
    "servicelb",
];

/// Makes a client acting as the service account `kube-system/<name>`.
pub type ClientFor = Arc<dyn Fn(&str) -> kube::Client + Send + Sync>;

/// What controllers share.
#[derive(Clone)]
pub struct Ctx {
    /// The client this controller writes (and reads live) with: its own identity once [`run`]
    /// started it, the controller manager's before.
    pub client: kube::Client,
    /// Clients for the controllers' own identities.
    pub client_for: ClientFor,
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

/// The service account (in `kube-system`) each controller acts as, as kube-controller-manager
/// with `--use-service-account-credentials`: upstream's names, bound by upstream's
/// `system:controller:*` roles. `nodepassword` is skiff's own and has a role of its own.
pub fn service_account(controller: &str) -> &'static str {
    match controller {
        "deployment" => "deployment-controller",
        "replicaset" => "replicaset-controller",
        "replicationcontroller" => "replication-controller",
        "endpoint" => "endpoint-controller",
        "endpointslice" => "endpointslice-controller",
        "disruption" => "disruption-controller",
        "daemonset" => "daemon-set-controller",
        "statefulset" => "statefulset-controller",
        "garbagecollector" => "generic-garbage-collector",
        "namespace" => "namespace-controller",
        "serviceaccount" => "service-account-controller",
        "root-ca-cert-publisher" => "root-ca-cert-publisher",
        "nodeipam" | "nodelifecycle" => "node-controller",
        "job" => "job-controller",
        "cronjob" => "cronjob-controller",
        "ttl-after-finished" => "ttl-after-finished-controller",
        "podgc" => "pod-garbage-collector",
        "csrapproving" | "csrsigning" => "certificate-controller",
        "tokencleaner" => "token-cleaner",
        "nodepassword" => "node-password-controller",
        "clusterrole-aggregation" => "clusterrole-aggregation-controller",
        "servicelb" => "service-controller",
        _ => "kube-controller-manager",
    }
}

impl Ctx {
    /// This context with the client of `controller`'s own service account.
    pub fn for_controller(&self, controller: &str) -> Arc<Ctx> {
        let mut c = self.clone();
        c.client = (self.client_for)(service_account(controller));
        Arc::new(c)
    }

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
                tasks.spawn($f(ctx.for_controller($name), cancel.clone()));
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
    start!("clusterrole-aggregation", clusterroleaggregation::run);
    start!("servicelb", servicelb::run);
    tracing::info!(disabled = ?disabled, "controllers started");
    while tasks.join_next().await.is_some() {}
}
