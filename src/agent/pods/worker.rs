//! One pod's worker: it drives the runtime towards what the pod asks for, one sync at a time,
//! and reports what it sees.
//!
//! A sync reads the pod's sandboxes and containers from CRI (nothing about them is kept in
//! memory that the runtime cannot tell again, so an agent restart re-adopts everything), makes
//! sure a ready sandbox exists, runs the init containers in order, then the app containers,
//! restarting exited ones as the restart policy says with upstream's crash-loop back-off
//! (immediately, then 10 s doubling to 5 min), and posts the status when it changed. A pod
//! being deleted gets its preStop hooks and its grace period, then is removed from the runtime
//! and, last, from the API.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::core::v1::{Container, LifecycleHandler, ObjectReference, Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, Client};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::runtime::{self, Observed};
use super::spec::{self, ContainerInputs};
use super::status::{self, Killed, Waiting};
use super::volumes;
use crate::agent::config::AgentConfig;
use crate::cri::config::CgroupDriver;
use crate::cri::{CriClient, proto};
use crate::runtime::events::{EventType, Recorder, object_ref};

/// How often a pod is synced when nothing happens (configMap and secret volumes refresh then).
const RESYNC: Duration = Duration::from_secs(10);
/// First back-off after the first restart; it doubles up to [`MAX_BACKOFF`].
const BACKOFF: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A container that ran this long before exiting restarts without back-off.
const BACKOFF_RESET: Duration = Duration::from_secs(600);
/// How long a pull may take before the pod is told it failed.
const PULL_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest termination message kept, as upstream.
const MAX_TERMINATION_MESSAGE: usize = 4096;

/// What every worker shares.
pub struct Ctx {
    pub client: Client,
    pub cri: CriClient,
    pub cfg: Arc<AgentConfig>,
    pub recorder: Recorder,
    pub driver: CgroupDriver,
    /// The host's `/etc/resolv.conf`, for `dnsPolicy: Default`.
    pub host_resolv: String,
    /// `<agent>/pods`: one directory per pod uid (volumes, hosts file, termination logs).
    pub pods_dir: PathBuf,
    /// `<agent>/logs`: one directory per pod, as the runtime writes container logs.
    pub logs_dir: PathBuf,
    /// What the kubelet API reads about the pods.
    pub index: Arc<super::index::Index>,
    /// Every Service, for containers' service variables.
    pub services: Arc<crate::runtime::Informer<k8s_openapi::api::core::v1::Service>>,
    /// Pods the eviction manager chose, by uid, until their worker takes them.
    pub evictions: std::sync::Mutex<HashMap<String, Killed>>,
    /// Service-account tokens of projected volumes, until they are due for renewal.
    pub tokens: super::volumes::TokenCache,
}

impl Ctx {
    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.pods_dir.join(uid)
    }

    /// The service variables of a pod's containers, as upstream picks the services: the
    /// `kubernetes` Service of `default` always, those of the pod's namespace unless
    /// `enableServiceLinks: false` (a namespace's own `kubernetes` Service wins).
    pub fn service_vars(&self, pod: &Pod) -> Result<Vec<(String, String)>, String> {
        if !self.services.is_synced() {
            return Err("services have not yet been read at least once, cannot construct envvars".into());
        }
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let links = pod.spec.as_ref().and_then(|s| s.enable_service_links).unwrap_or(true);
        let mut picked: BTreeMap<String, Arc<k8s_openapi::api::core::v1::Service>> = BTreeMap::new();
        if links {
            for s in self.services.in_namespace(ns) {
                picked.insert(s.metadata.name.clone().unwrap_or_default(), s);
            }
        }
        if let Some(k) = self.services.get("default", "kubernetes") {
            picked.entry("kubernetes".into()).or_insert(k);
        }
        Ok(super::env::service_vars(picked.values().map(|s| s.as_ref())))
    }

    /// Marks a pod for eviction; its worker reports it at its next sync.
    pub fn evict(&self, uid: &str, k: Killed) {
        self.evictions.lock().unwrap_or_else(|p| p.into_inner()).insert(uid.to_string(), k);
    }

    fn take_eviction(&self, uid: &str) -> Option<Killed> {
        self.evictions.lock().unwrap_or_else(|p| p.into_inner()).remove(uid)
    }

    pub fn log_dir(&self, pod: &Pod) -> PathBuf {
        let (ns, name, uid) = spec::ids(pod);
        self.logs_dir.join(format!("{ns}_{name}_{uid}"))
    }
}

/// The message a worker receives: the pod's latest state, or `None` once it left the API.
pub type PodUpdates = watch::Receiver<Option<Arc<Pod>>>;

/// One pod's worker.
pub struct Worker {
    ctx: Arc<Ctx>,
    uid: String,
    waiting: HashMap<String, Waiting>,
    /// Final statuses of exited instances, which never change again.
    exited: HashMap<String, proto::ContainerStatus>,
    last_posted: Option<PodStatus>,
    start_time: Time,
    volumes_at: Option<tokio::time::Instant>,
    volumes: volumes::Prepared,
    /// Events already recorded, so a sync loop does not repeat them.
    said: HashSet<String>,
    /// Set once the pod finished (Succeeded/Failed); nothing runs again.
    terminal: Option<&'static str>,
    /// Why the agent ended the pod itself, if it did.
    killed: Option<Killed>,
    probes: super::probes::Probes,
    /// Per container name: readiness and startedness of the running instance.
    ready: HashMap<String, bool>,
    started: HashMap<String, bool>,
    /// Created instances the runtime refused to start; they are replaced, not started again.
    launch_failed: HashSet<String>,
}

/// A sandbox with its IP addresses.
type Sandbox = (proto::PodSandbox, Vec<String>);

fn restart_policy(pod: &Pod) -> &str {
    pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()).unwrap_or("Always")
}

fn is_running(s: &proto::ContainerStatus) -> bool {
    s.state == proto::ContainerState::ContainerRunning as i32
}

fn is_created(s: &proto::ContainerStatus) -> bool {
    s.state == proto::ContainerState::ContainerCreated as i32
}

fn is_exited(s: &proto::ContainerStatus) -> bool {
    s.state == proto::ContainerState::ContainerExited as i32
        || s.state == proto::ContainerState::ContainerCreated as i32
}

fn field_path(init: bool, name: &str) -> String {
    if init { format!("spec.initContainers{{{name}}}") } else { format!("spec.containers{{{name}}}") }
}

/// Whether the container should run again after exiting with `code`.
fn should_restart(policy: &str, code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => code != 0,
        _ => true,
    }
}

/// What is left of the pod's `activeDeadlineSeconds`, counted from its start time.
fn deadline_left(pod: &Pod, started: &Time) -> Option<Duration> {
    let secs = pod.spec.as_ref()?.active_deadline_seconds?;
    let start = pod.status.as_ref().and_then(|s| s.start_time.as_ref()).unwrap_or(started);
    let end = start.0 + chrono::Duration::seconds(secs);
    Some((end - Utc::now()).to_std().unwrap_or(Duration::ZERO))
}

/// The pause before restart number `restart` (1 for the first), counted from the exit.
pub fn backoff(restart: i32) -> Duration {
    if restart <= 1 {
        return Duration::ZERO;
    }
    let exp = (restart - 2).min(10) as u32;
    (BACKOFF * 2u32.pow(exp)).min(MAX_BACKOFF)
}

impl Worker {
    pub fn new(ctx: Arc<Ctx>, uid: String) -> Worker {
        Worker {
            ctx,
            uid,
            waiting: HashMap::new(),
            exited: HashMap::new(),
            last_posted: None,
            start_time: Time(Utc::now()),
            volumes_at: None,
            volumes: Default::default(),
            said: HashSet::new(),
            terminal: None,
            killed: None,
            probes: Default::default(),
            ready: HashMap::new(),
            started: HashMap::new(),
            launch_failed: HashSet::new(),
        }
    }

    /// Runs until the pod is gone from the API and the runtime, or `cancel` fires (then the
    /// containers keep running for the next agent to adopt).
    pub async fn run(mut self, mut updates: PodUpdates, wake: Arc<Notify>, cancel: CancellationToken) {
        loop {
            let pod = updates.borrow_and_update().clone();
            let next = match pod {
                None => {
                    self.teardown(None).await;
                    return;
                }
                Some(p) if p.metadata.deletion_timestamp.is_some() => {
                    if self.terminate(&p).await {
                        // Wait for the API to confirm the deletion (it sends `None`).
                        Duration::from_secs(5)
                    } else {
                        Duration::from_secs(1)
                    }
                }
                Some(p) => self.sync(&p).await,
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                changed = updates.changed() => if changed.is_err() { return },
                _ = wake.notified() => {}
                _ = tokio::time::sleep(next) => {}
            }
        }
    }

    fn event(&self, pod: &Pod, container: Option<(bool, &str)>, type_: EventType, reason: &str, message: String) {
        let mut r: ObjectReference = object_ref(pod);
        if let Some((init, name)) = container {
            r.field_path = Some(field_path(init, name));
        }
        self.ctx.recorder.record_ref(r, type_, reason, message);
    }

    /// Records an event once per `key`.
    fn event_once(
        &mut self,
        key: String,
        pod: &Pod,
        container: Option<(bool, &str)>,
        type_: EventType,
        reason: &str,
        message: String,
    ) {
        if self.said.insert(key) {
            self.event(pod, container, type_, reason, message);
        }
    }

    /// Statuses of every instance, per container name, newest first.
    async fn instance_statuses(&mut self, obs: &Observed) -> HashMap<String, Vec<proto::ContainerStatus>> {
        let mut out: HashMap<String, Vec<proto::ContainerStatus>> = HashMap::new();
        for c in &obs.containers {
            let name = c.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
            let status = match self.exited.get(&c.id) {
                Some(s) => s.clone(),
                None => match runtime::container_status(&self.ctx.cri, &c.id).await {
                    Ok(mut s) => {
                        if s.state == proto::ContainerState::ContainerExited as i32 {
                            s.message = termination_message(&s);
                            self.exited.insert(c.id.clone(), s.clone());
                        }
                        s
                    }
                    Err(_) => continue,
                },
            };
            out.entry(name).or_default().push(status);
        }
        for list in out.values_mut() {
            list.sort_by_key(|s| std::cmp::Reverse(s.created_at));
        }
        let live: HashSet<&str> = obs.containers.iter().map(|c| c.id.as_str()).collect();
        self.exited.retain(|id, _| live.contains(id.as_str()));
        out
    }

    /// One pass towards the pod's spec; returns when to look again.
    async fn sync(&mut self, pod: &Pod) -> Duration {
        let mut next = self.sync_once(pod).await;
        if self.terminal.is_none()
            && let Some(left) = deadline_left(pod, &self.start_time)
        {
            next = next.min(left.max(Duration::from_millis(100)));
        }
        tracing::debug!(pod = %key(pod), next_ms = next.as_millis() as u64, "synced");
        next
    }

    async fn sync_once(&mut self, pod: &Pod) -> Duration {
        let obs = match runtime::observe(&self.ctx.cri, &self.uid).await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(pod = %key(pod), error = %e, "cannot read the pod's containers");
                return Duration::from_secs(2);
            }
        };
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if self.terminal.is_none() && matches!(phase, Some("Succeeded") | Some("Failed")) && self.last_posted.is_none()
        {
            // Finished before this agent started: keep it finished.
            self.terminal = if phase == Some("Succeeded") { Some("Succeeded") } else { Some("Failed") };
        }
        self.end_if_evicted_or_past_deadline(pod);
        if self.terminal.is_some() {
            self.stop_all(pod, &obs, 0).await;
            for s in obs.sandboxes.iter().filter(|s| s.state == proto::PodSandboxState::SandboxReady as i32) {
                let _ = runtime::stop_sandbox(&self.ctx.cri, &s.id).await;
            }
            let obs = runtime::observe(&self.ctx.cri, &self.uid).await.unwrap_or(obs);
            self.report(pod, &obs, false, &[], true).await;
            return Duration::from_secs(60);
        }
        let mut next = RESYNC;
        let mut obs = obs;
        let (sandbox, pod_ips) = match obs.ready_sandbox() {
            Some(s) => (s.clone(), runtime::sandbox_ips(&self.ctx.cri, &s.id).await),
            None => match self.new_sandbox(pod, &obs).await {
                Ok(Some((s, ips))) => {
                    obs.sandboxes.insert(0, s.clone());
                    (s, ips)
                }
                Ok(None) => {
                    // restartPolicy Never and the sandbox died after the containers ran.
                    let statuses = self.instance_statuses(&obs).await;
                    self.terminal = Some(self.finished_phase(pod, &statuses));
                    self.report(pod, &obs, false, &[], true).await;
                    return Duration::from_secs(1);
                }
                Err(retry) => {
                    self.report(pod, &obs, false, &[], false).await;
                    return retry;
                }
            },
        };
        let sandbox_config = self.sandbox_config(pod, sandbox.metadata.as_ref().map(|m| m.attempt).unwrap_or(0));
        self.write_hosts(pod, &pod_ips);
        if self.volumes_at.is_none_or(|t| t.elapsed() >= RESYNC) {
            match volumes::prepare(&self.ctx.client, &self.ctx.tokens, pod, &self.ctx.pod_dir(&self.uid)).await {
                Ok(v) => {
                    self.volumes = v;
                    self.volumes_at = Some(tokio::time::Instant::now());
                }
                Err(e)
                    if self.volumes_at.is_none() && !obs.containers.iter().any(|c| c.pod_sandbox_id == sandbox.id) =>
                {
                    // Nothing runs in this sandbox yet: no container starts without its volumes.
                    self.failed_mount(pod, e);
                    self.report(pod, &obs, true, &pod_ips, false).await;
                    return Duration::from_secs(2);
                }
                Err(e) => tracing::debug!(pod = %key(pod), error = %e, "cannot refresh volumes"),
            }
        }
        let statuses = self.instance_statuses(&obs).await;
        let policy = restart_policy(pod).to_string();
        let spec = pod.spec.clone().unwrap_or_default();
        let mut started_any = false;
        let mut initialized = true;
        for c in spec.init_containers.iter().flatten() {
            let sidecar = c.restart_policy.as_deref() == Some("Always");
            let newest = statuses.get(&c.name).and_then(|l| l.first());
            let in_sandbox =
                newest.filter(|s| obs.containers.iter().any(|oc| oc.id == s.id && oc.pod_sandbox_id == sandbox.id));
            match in_sandbox {
                None => {
                    let attempt = newest.map(|s| status::restart_count(s) + 1).unwrap_or(0);
                    started_any |= self.start(pod, c, true, attempt, &sandbox.id, &sandbox_config, &pod_ips).await;
                    if !sidecar {
                        initialized = false;
                        break;
                    }
                }
                Some(s) if is_running(s) => {
                    self.waiting.remove(&c.name);
                    if !sidecar {
                        initialized = false;
                        break;
                    }
                }
                Some(s) if is_created(s) && !self.launch_failed.contains(&s.id) => {
                    started_any |= self.resume_created(pod, c, true, &s.id, &pod_ips).await;
                    if !sidecar {
                        initialized = false;
                        break;
                    }
                }
                Some(s) if s.exit_code == 0 && !sidecar && s.state == proto::ContainerState::ContainerExited as i32 => {
                }
                Some(s) => {
                    if policy == "Never" && !sidecar {
                        self.terminal = Some("Failed");
                        initialized = false;
                        break;
                    }
                    match self.restart_due(pod, c, true, s) {
                        Ok(()) => {
                            let attempt = status::restart_count(s) + 1;
                            started_any |=
                                self.start(pod, c, true, attempt, &sandbox.id, &sandbox_config, &pod_ips).await;
                        }
                        Err(wait) => next = next.min(wait),
                    }
                    if !sidecar {
                        initialized = false;
                        break;
                    }
                }
            }
        }
        if initialized && self.terminal.is_none() {
            for c in &spec.containers {
                let newest = statuses.get(&c.name).and_then(|l| l.first());
                let in_sandbox =
                    newest.filter(|s| obs.containers.iter().any(|oc| oc.id == s.id && oc.pod_sandbox_id == sandbox.id));
                match in_sandbox {
                    None => {
                        let attempt = newest.map(|s| status::restart_count(s) + 1).unwrap_or(0);
                        if newest.is_some() && !should_restart(&policy, newest.map(|s| s.exit_code).unwrap_or(0)) {
                            continue;
                        }
                        started_any |= self.start(pod, c, false, attempt, &sandbox.id, &sandbox_config, &pod_ips).await;
                        if !started_any && self.waiting.contains_key(&c.name) {
                            next = next.min(Duration::from_secs(2));
                        }
                    }
                    Some(s) if is_running(s) => {
                        self.waiting.remove(&c.name);
                    }
                    Some(s) if is_created(s) && !self.launch_failed.contains(&s.id) => {
                        started_any |= self.resume_created(pod, c, false, &s.id, &pod_ips).await;
                    }
                    Some(s) => {
                        if !should_restart(&policy, s.exit_code) || !is_exited(s) {
                            self.waiting.remove(&c.name);
                            continue;
                        }
                        match self.restart_due(pod, c, false, s) {
                            Ok(()) => {
                                let attempt = status::restart_count(s) + 1;
                                started_any |=
                                    self.start(pod, c, false, attempt, &sandbox.id, &sandbox_config, &pod_ips).await;
                            }
                            Err(wait) => next = next.min(wait),
                        }
                    }
                }
            }
        }
        let obs = if started_any { runtime::observe(&self.ctx.cri, &self.uid).await.unwrap_or(obs) } else { obs };
        if self.terminal.is_none()
            && let Some(wait) = self.run_probes(pod, &obs, &sandbox.id, &pod_ips).await
        {
            next = next.min(wait);
        }
        if self.terminal.is_none() && initialized {
            let statuses = self.instance_statuses(&obs).await;
            let all_done = spec.containers.iter().all(|c| {
                statuses.get(&c.name).and_then(|l| l.first()).is_some_and(|s| {
                    s.state == proto::ContainerState::ContainerExited as i32 && !should_restart(&policy, s.exit_code)
                })
            });
            if all_done {
                self.terminal = Some(self.finished_phase(pod, &statuses));
            }
        }
        self.end_if_evicted_or_past_deadline(pod);
        if self.terminal.is_some() {
            self.stop_all(pod, &obs, 0).await;
            let _ = runtime::stop_sandbox(&self.ctx.cri, &sandbox.id).await;
        }
        self.report(pod, &obs, self.terminal.is_none(), &pod_ips, initialized).await;
        if self.terminal.is_some() { Duration::from_secs(1) } else { next }
    }

    /// Runs the due probes of the running containers; a failed liveness or startup probe
    /// stops its container (the next sync restarts it). Returns when the next probe is due.
    async fn run_probes(&mut self, pod: &Pod, obs: &Observed, sandbox: &str, pod_ips: &[String]) -> Option<Duration> {
        let spec = pod.spec.clone().unwrap_or_default();
        let ip: Option<std::net::IpAddr> = pod_ips
            .first()
            .and_then(|i| i.parse().ok())
            .or_else(|| spec.host_network.unwrap_or(false).then(|| self.ctx.cfg.node_ips.first().copied()).flatten());
        let running: Vec<&proto::Container> = obs
            .containers
            .iter()
            .filter(|c| c.pod_sandbox_id == sandbox && c.state == proto::ContainerState::ContainerRunning as i32)
            .collect();
        self.probes.retain(&running.iter().map(|c| c.id.clone()).collect::<Vec<_>>());
        self.ready.clear();
        self.started.clear();
        let mut next: Option<tokio::time::Instant> = None;
        let containers: Vec<(bool, Container)> = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| (true, c.clone()))
            .chain(spec.containers.iter().map(|c| (false, c.clone())))
            .collect();
        for (init, c) in &containers {
            let Some(rc) = running.iter().find(|rc| rc.metadata.as_ref().is_some_and(|m| m.name == c.name)) else {
                continue;
            };
            let started_at = match runtime::container_status(&self.ctx.cri, &rc.id).await {
                Ok(s) if s.started_at > 0 => {
                    let ago = (Utc::now().timestamp_nanos_opt().unwrap_or(0) - s.started_at).max(0) as u64;
                    tokio::time::Instant::now() - Duration::from_nanos(ago)
                }
                _ => tokio::time::Instant::now(),
            };
            let (outcomes, due) = self.probes.run_due(&self.ctx.cri, c, &rc.id, started_at, ip).await;
            for o in &outcomes {
                tracing::debug!(pod = %key(pod), container = %c.name, probe = ?o.kind, failure = ?o.failure, "probe ran");
            }
            if let Some(d) = due {
                next = Some(next.map_or(d, |n| n.min(d)));
            }
            for o in outcomes {
                let who = Some((*init, o.container.as_str()));
                if let Some(msg) = &o.failure {
                    self.event(pod, who, EventType::Warning, "Unhealthy", msg.clone());
                }
                if o.tripped && o.kind != super::probes::Kind::Readiness {
                    let what = if o.kind == super::probes::Kind::Liveness { "liveness" } else { "startup" };
                    self.event(
                        pod,
                        who,
                        EventType::Normal,
                        "Killing",
                        format!("Container {} failed {what} probe, will be restarted", c.name),
                    );
                    let grace = c
                        .liveness_probe
                        .as_ref()
                        .and_then(|p| p.termination_grace_period_seconds)
                        .unwrap_or_else(|| spec::grace_seconds(pod));
                    let _ =
                        runtime::stop_container(&self.ctx.cri, &rc.id, Duration::from_secs(grace.max(0) as u64)).await;
                }
            }
            self.ready.insert(c.name.clone(), self.probes.ready(c, &rc.id));
            self.started.insert(c.name.clone(), self.probes.started(c, &rc.id));
        }
        next.map(|n| n.saturating_duration_since(tokio::time::Instant::now()))
    }

    fn finished_phase(&self, pod: &Pod, statuses: &HashMap<String, Vec<proto::ContainerStatus>>) -> &'static str {
        let spec = pod.spec.clone().unwrap_or_default();
        let failed = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .any(|c| statuses.get(&c.name).and_then(|l| l.first()).is_some_and(|s| s.exit_code != 0));
        if failed { "Failed" } else { "Succeeded" }
    }

    /// Whether an exited instance may be replaced now; otherwise the container waits in
    /// CrashLoopBackOff and the error says how long.
    fn restart_due(
        &mut self,
        pod: &Pod,
        c: &Container,
        init: bool,
        s: &proto::ContainerStatus,
    ) -> Result<(), Duration> {
        let restart = status::restart_count(s) + 1;
        let ran = match (
            status::finished_at(s),
            (s.started_at > 0).then(|| chrono::TimeZone::timestamp_nanos(&Utc, s.started_at)),
        ) {
            (Some(f), Some(st)) => (f - st).to_std().unwrap_or_default(),
            _ => Duration::ZERO,
        };
        let delay = if ran >= BACKOFF_RESET { Duration::ZERO } else { backoff(restart) };
        let finished = status::finished_at(s).unwrap_or_else(Utc::now);
        let due = finished + chrono::Duration::from_std(delay).unwrap_or_default();
        let now = Utc::now();
        if now >= due {
            return Ok(());
        }
        let (ns, name, uid) = spec::ids(pod);
        self.waiting.insert(
            c.name.clone(),
            Waiting {
                reason: "CrashLoopBackOff".into(),
                message: format!(
                    "back-off {}s restarting failed container={} pod={name}_{ns}({uid})",
                    delay.as_secs(),
                    c.name
                ),
            },
        );
        self.event_once(
            format!("backoff/{}/{restart}", c.name),
            pod,
            Some((init, &c.name)),
            EventType::Warning,
            "BackOff",
            format!("Back-off restarting failed container {} in pod {name}_{ns}({uid})", c.name),
        );
        Err((due - now).to_std().unwrap_or(Duration::from_secs(1)) + Duration::from_millis(50))
    }

    fn sandbox_config(&self, pod: &Pod, attempt: u32) -> proto::PodSandboxConfig {
        let dns = spec::dns_config(pod, self.ctx.cfg.cluster_dns, &self.ctx.cfg.cluster_domain, &self.ctx.host_resolv);
        spec::sandbox_config(pod, attempt, &self.ctx.log_dir(pod), dns, self.ctx.driver)
    }

    /// Creates a new sandbox after stopping any old one, and sets up the pod's volumes; returns
    /// the sandbox with its IP addresses. `Ok(None)`: none should be created.
    async fn new_sandbox(&mut self, pod: &Pod, obs: &Observed) -> Result<Option<Sandbox>, Duration> {
        let ran_before = !obs.containers.is_empty();
        if ran_before && restart_policy(pod) == "Never" {
            return Ok(None);
        }
        for s in &obs.sandboxes {
            if s.state == proto::PodSandboxState::SandboxReady as i32 {
                let _ = runtime::stop_sandbox(&self.ctx.cri, &s.id).await;
            }
        }
        if !obs.sandboxes.is_empty() {
            self.event_once(
                format!("sandbox-changed/{}", obs.sandboxes.len()),
                pod,
                None,
                EventType::Normal,
                "SandboxChanged",
                "Pod sandbox changed, it will be killed and re-created.".into(),
            );
        }
        let attempt =
            obs.sandboxes.iter().filter_map(|s| s.metadata.as_ref()).map(|m| m.attempt + 1).max().unwrap_or(0);
        let config = self.sandbox_config(pod, attempt);
        let _ = std::fs::create_dir_all(&config.log_directory);
        let req = proto::RunPodSandboxRequest { config: Some(config), runtime_handler: String::new() };
        // The volumes are written while the runtime builds the sandbox: neither needs the
        // other, and the sandbox (network set-up included) is most of a pod's start.
        let ctx = self.ctx.clone();
        let pod_dir = ctx.pod_dir(&self.uid);
        let mut rt = ctx.cri.runtime();
        let (volumes, created) =
            tokio::join!(volumes::prepare(&ctx.client, &ctx.tokens, pod, &pod_dir), rt.run_pod_sandbox(req));
        let id = match created {
            Ok(resp) => resp.into_inner().pod_sandbox_id,
            Err(e) => {
                let msg = format!("Failed to create pod sandbox: {}", e.message());
                self.set_all_waiting(pod, "ContainerCreating", "");
                self.event_once(
                    format!("sandbox-failed/{msg}"),
                    pod,
                    None,
                    EventType::Warning,
                    "FailedCreatePodSandBox",
                    msg,
                );
                return Err(Duration::from_secs(5));
            }
        };
        self.said.retain(|k| !k.starts_with("sandbox-failed/"));
        match volumes {
            Ok(v) => {
                self.volumes = v;
                self.volumes_at = Some(tokio::time::Instant::now());
            }
            // The sandbox stays; the next sync finds it ready and retries the volumes.
            Err(e) => {
                self.failed_mount(pod, e);
                return Err(Duration::from_secs(2));
            }
        }
        let (sandbox, ips) = runtime::sandbox(&self.ctx.cri, &id).await.map_err(|_| Duration::from_secs(1))?;
        Ok(Some((sandbox, ips)))
    }

    /// The pod's volumes cannot be set up: its containers wait, with an event saying why.
    fn failed_mount(&mut self, pod: &Pod, e: String) {
        self.set_all_waiting(pod, "ContainerCreating", "");
        self.event_once(format!("mount/{e}"), pod, None, EventType::Warning, "FailedMount", e);
    }

    fn set_all_waiting(&mut self, pod: &Pod, reason: &str, message: &str) {
        for c in pod.spec.iter().flat_map(|s| s.containers.iter()) {
            self.waiting.insert(c.name.clone(), Waiting { reason: reason.into(), message: message.into() });
        }
    }

    /// Writes the pod's `/etc/hosts` (not for host-network pods, which see the host's).
    fn write_hosts(&self, pod: &Pod, ips: &[String]) {
        let spec = pod.spec.clone().unwrap_or_default();
        if spec.host_network.unwrap_or(false) {
            return;
        }
        let name = spec.hostname.clone().or_else(|| pod.metadata.name.clone()).unwrap_or_default();
        let mut text = String::from(
            "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
        );
        let fqdn = spec.subdomain.as_ref().map(|sub| {
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            format!("{name}.{sub}.{ns}.svc.{}", self.ctx.cfg.cluster_domain)
        });
        for ip in ips {
            match &fqdn {
                Some(f) => text.push_str(&format!("{ip}\t{f}\t{name}\n")),
                None => text.push_str(&format!("{ip}\t{name}\n")),
            }
        }
        for alias in spec.host_aliases.iter().flatten() {
            let ip = &alias.ip;
            text.push_str(&format!(
                "\n# Entries added by HostAliases.\n{ip}\t{}\n",
                alias.hostnames.clone().unwrap_or_default().join("\t")
            ));
        }
        let path = self.ctx.pod_dir(&self.uid).join("etc-hosts");
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            let _ = std::fs::create_dir_all(self.ctx.pod_dir(&self.uid));
            let _ = std::fs::write(&path, text);
        }
    }

    /// Pulls if needed, creates and starts one container instance. Returns whether it started;
    /// failures leave a waiting reason and an event.
    #[allow(clippy::too_many_arguments)]
    async fn start(
        &mut self,
        pod: &Pod,
        c: &Container,
        init: bool,
        attempt: i32,
        sandbox_id: &str,
        sandbox_config: &proto::PodSandboxConfig,
        pod_ips: &[String],
    ) -> bool {
        let who = Some((init, c.name.as_str()));
        let image = c.image.clone().unwrap_or_default();
        let image_ref = match self.ensure_image(pod, c, init, &image).await {
            Ok(r) => r,
            Err(w) => {
                self.waiting.insert(c.name.clone(), w);
                return false;
            }
        };
        // Fields of the pod status that env may reference are as this sync sees them.
        let mut view = pod.clone();
        if let Some(st) = view.status.as_mut() {
            st.pod_ip = pod_ips.first().cloned();
            st.host_ip = self.ctx.cfg.node_ips.first().map(|i| i.to_string());
        }
        let services = match self.ctx.service_vars(pod) {
            Ok(v) => v,
            Err(e) => {
                self.fail(pod, c, init, "CreateContainerConfigError", e);
                return false;
            }
        };
        let envs = match super::env::resolve(&self.ctx.client, &view, c, services).await {
            Ok(e) => e,
            Err(e) => {
                self.fail(pod, c, init, "CreateContainerConfigError", e);
                return false;
            }
        };
        let mounts = match self.mounts(pod, c, attempt) {
            Ok(m) => m,
            Err(e) => {
                self.fail(pod, c, init, "CreateContainerConfigError", e);
                return false;
            }
        };
        let log_path = format!("{}/{attempt}.log", c.name);
        let _ = std::fs::create_dir_all(self.ctx.log_dir(pod).join(&c.name));
        let config = spec::container_config(
            pod,
            ContainerInputs { container: c, attempt: attempt as u32, image: image_ref, envs, mounts, log_path },
        );
        let req = proto::CreateContainerRequest {
            pod_sandbox_id: sandbox_id.to_string(),
            config: Some(config),
            sandbox_config: Some(sandbox_config.clone()),
        };
        let id = match self.ctx.cri.runtime().create_container(req).await {
            Ok(r) => r.into_inner().container_id,
            Err(e) => {
                self.fail(pod, c, init, "CreateContainerError", e.message().to_string());
                return false;
            }
        };
        self.event(pod, who, EventType::Normal, "Created", format!("Created container: {}", c.name));
        self.launch(pod, c, init, id, pod_ips).await
    }

    /// Starts an instance that was created but never started (the agent stopped in between):
    /// it is the same attempt, not a restart.
    async fn resume_created(&mut self, pod: &Pod, c: &Container, init: bool, id: &str, pod_ips: &[String]) -> bool {
        tracing::info!(pod = %key(pod), container = %c.name, id, "starting a container created before a restart");
        self.launch(pod, c, init, id.to_string(), pod_ips).await
    }

    /// Starts a created instance and runs its postStart hook. Returns whether the runtime was
    /// asked to start it (it then either runs or has exited with StartError).
    async fn launch(&mut self, pod: &Pod, c: &Container, init: bool, id: String, pod_ips: &[String]) -> bool {
        let who = Some((init, c.name.as_str()));
        if let Err(e) =
            self.ctx.cri.runtime().start_container(proto::StartContainerRequest { container_id: id.clone() }).await
        {
            // The instance stays, exited with StartError; the next sync backs off and retries.
            // Should the runtime leave it created instead, the next sync replaces it.
            self.event(pod, who, EventType::Warning, "Failed", format!("Error: {}", e.message()));
            self.launch_failed.insert(id);
            self.waiting.remove(&c.name);
            return true;
        }
        self.event(pod, who, EventType::Normal, "Started", format!("Started container {}", c.name));
        self.waiting.remove(&c.name);
        if let Some(hook) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref())
            && let Err(e) =
                self.run_hook(&id, c, hook, pod_ips.first().and_then(|i| i.parse().ok()), Duration::from_secs(30)).await
        {
            self.event(pod, who, EventType::Warning, "FailedPostStartHook", format!("PostStartHook failed: {e}"));
            let _ =
                runtime::stop_container(&self.ctx.cri, &id, Duration::from_secs(spec::grace_seconds(pod) as u64)).await;
        }
        true
    }

    /// Ends the pod for a reason of the agent's own, if one holds: the eviction manager chose
    /// it, or its `activeDeadlineSeconds` ran out. It is then stopped and reported Failed.
    /// Looked at before and after the containers are brought up, so an eviction marked
    /// during a sync is reported by that sync.
    fn end_if_evicted_or_past_deadline(&mut self, pod: &Pod) {
        if self.terminal.is_some() {
            return;
        }
        let killed = if let Some(k) = self.ctx.take_eviction(&self.uid) {
            self.event(pod, None, EventType::Warning, "Evicted", k.message.clone());
            k
        } else if deadline_left(pod, &self.start_time).is_some_and(|d| d.is_zero()) {
            let message = "Pod was active on the node longer than the specified deadline";
            self.event(pod, None, EventType::Normal, "DeadlineExceeded", message.into());
            Killed { reason: "DeadlineExceeded".into(), message: message.into(), disruption: false }
        } else {
            return;
        };
        self.killed = Some(killed);
        self.terminal = Some("Failed");
    }

    fn fail(&mut self, pod: &Pod, c: &Container, init: bool, reason: &str, message: String) {
        self.event_once(
            format!("fail/{}/{reason}/{message}", c.name),
            pod,
            Some((init, &c.name)),
            EventType::Warning,
            "Failed",
            format!("Error: {message}"),
        );
        self.waiting.insert(c.name.clone(), Waiting { reason: reason.into(), message });
    }

    /// Makes sure the image is on the node as the pull policy says; returns the reference to
    /// create the container from.
    async fn ensure_image(&mut self, pod: &Pod, c: &Container, init: bool, image: &str) -> Result<String, Waiting> {
        let who = Some((init, c.name.as_str()));
        let latest = !image.rsplit('/').next().unwrap_or(image).contains(':') || image.ends_with(":latest");
        let policy =
            c.image_pull_policy.clone().unwrap_or_else(|| if latest { "Always".into() } else { "IfNotPresent".into() });
        let present = runtime::image_present(&self.ctx.cri, image).await.unwrap_or(None);
        if policy == "Never" {
            return match present {
                Some(_) => Ok(image.to_string()),
                None => {
                    let msg = format!("Container image \"{image}\" is not present with pull policy of Never");
                    self.event_once(
                        format!("neverpull/{}", c.name),
                        pod,
                        who,
                        EventType::Warning,
                        "ErrImageNeverPull",
                        msg.clone(),
                    );
                    Err(Waiting { reason: "ErrImageNeverPull".into(), message: msg })
                }
            };
        }
        if policy == "IfNotPresent" && present.is_some() {
            self.event_once(
                format!("present/{}/{image}", c.name),
                pod,
                who,
                EventType::Normal,
                "Pulled",
                format!("Container image \"{image}\" already present on machine"),
            );
            return Ok(image.to_string());
        }
        // A previous failed pull backs off before the next attempt, as ImagePullBackOff.
        let backoff_key = format!("pull-failed/{}/{image}", c.name);
        if let Some(w) = self.waiting.get(&c.name)
            && (w.reason == "ErrImagePull" || w.reason == "ImagePullBackOff")
            && self.said.contains(&backoff_key)
            && present.is_none()
        {
            let w =
                Waiting { reason: "ImagePullBackOff".into(), message: format!("Back-off pulling image \"{image}\"") };
            self.event_once(
                format!("pull-backoff/{}", c.name),
                pod,
                who,
                EventType::Normal,
                "BackOff",
                w.message.clone(),
            );
            self.said.remove(&backoff_key);
            return Err(w);
        }
        self.event_once(
            format!("pulling/{}/{image}", c.name),
            pod,
            who,
            EventType::Normal,
            "Pulling",
            format!("Pulling image \"{image}\""),
        );
        match runtime::pull(&self.ctx.cri, image, PULL_TIMEOUT).await {
            Ok(r) => {
                self.event(pod, who, EventType::Normal, "Pulled", format!("Successfully pulled image \"{image}\""));
                Ok(r)
            }
            Err(e) if present.is_some() => {
                // No registry reachable (the usual case on an edge box): the node's copy serves.
                self.event_once(
                    format!("pull-fallback/{}/{image}", c.name),
                    pod,
                    who,
                    EventType::Normal,
                    "Pulled",
                    format!("Container image \"{image}\" already present on machine (pull failed: {e})"),
                );
                Ok(image.to_string())
            }
            Err(e) => {
                let msg = format!("failed to pull and unpack image \"{image}\": {e}");
                self.event(pod, who, EventType::Warning, "Failed", format!("Failed to pull image \"{image}\": {e}"));
                self.said.insert(backoff_key);
                Err(Waiting { reason: "ErrImagePull".into(), message: msg })
            }
        }
    }

    /// The container's mounts: its volumeMounts, `/etc/hosts` and the termination log.
    fn mounts(&self, pod: &Pod, c: &Container, attempt: i32) -> Result<Vec<proto::Mount>, String> {
        let mut out = Vec::new();
        for m in c.volume_mounts.iter().flatten() {
            let base = self
                .volumes
                .get(&m.name)
                .ok_or_else(|| format!("cannot find volume \"{}\" to mount into container \"{}\"", m.name, c.name))?;
            let mut host = base.clone();
            if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                if sub.starts_with('/') || sub.split('/').any(|p| p == "..") {
                    return Err(format!("subPath \"{sub}\" must be a relative path without '..'"));
                }
                host = host.join(sub);
                if !host.exists() {
                    let _ = std::fs::create_dir_all(&host);
                }
            }
            out.push(proto::Mount {
                container_path: m.mount_path.clone(),
                host_path: host.to_string_lossy().into_owned(),
                readonly: m.read_only.unwrap_or(false),
                propagation: match m.mount_propagation.as_deref() {
                    Some("HostToContainer") => proto::MountPropagation::PropagationHostToContainer as i32,
                    Some("Bidirectional") => proto::MountPropagation::PropagationBidirectional as i32,
                    _ => proto::MountPropagation::PropagationPrivate as i32,
                },
                ..Default::default()
            });
        }
        let pod_dir = self.ctx.pod_dir(&self.uid);
        let host_network = pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false);
        if !host_network && !out.iter().any(|m| m.container_path == "/etc/hosts") {
            out.push(proto::Mount {
                container_path: "/etc/hosts".into(),
                host_path: pod_dir.join("etc-hosts").to_string_lossy().into_owned(),
                ..Default::default()
            });
        }
        let term_path = c.termination_message_path.clone().unwrap_or_else(|| "/dev/termination-log".into());
        let term_file = pod_dir.join("containers").join(&c.name).join(format!("{attempt}.termination-log"));
        if let Some(parent) = term_file.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        std::fs::write(&term_file, b"").map_err(|e| format!("cannot create {}: {e}", term_file.display()))?;
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&term_file, std::fs::Permissions::from_mode(0o666));
        out.push(proto::Mount {
            container_path: term_path,
            host_path: term_file.to_string_lossy().into_owned(),
            ..Default::default()
        });
        Ok(out)
    }

    /// Runs a lifecycle hook: exec in the container, an HTTP GET (host defaulting to the pod
    /// IP), or a sleep. tcpSocket hooks are accepted by the API but, as upstream, never run.
    async fn run_hook(
        &self,
        container_id: &str,
        c: &Container,
        hook: &LifecycleHandler,
        pod_ip: Option<std::net::IpAddr>,
        timeout: Duration,
    ) -> Result<(), String> {
        if let Some(exec) = &hook.exec {
            let cmd = exec.command.clone().unwrap_or_default();
            let (code, out) = runtime::exec_sync(&self.ctx.cri, container_id, cmd.clone(), timeout).await?;
            if code != 0 {
                return Err(format!(
                    "command '{}' exited with {code}: {}",
                    cmd.join(" "),
                    String::from_utf8_lossy(&out).trim()
                ));
            }
        } else if let Some(http) = &hook.http_get {
            let host = http.host.as_deref().and_then(|h| h.parse().ok()).or(pod_ip).ok_or("the pod has no IP")?;
            let port = super::probes::port_of(c, &http.port)?;
            let path = http.path.clone().unwrap_or_else(|| "/".into());
            let https = http.scheme.as_deref() == Some("HTTPS");
            let headers: Vec<(String, String)> =
                http.http_headers.iter().flatten().map(|h| (h.name.clone(), h.value.clone())).collect();
            let url = format!("{}://{host}:{port}{path}", if https { "https" } else { "http" });
            match tokio::time::timeout(timeout, super::probes::http_get(host, port, &path, https, &headers)).await {
                Ok(Ok(code)) if (200..400).contains(&code) => {}
                Ok(Ok(code)) => return Err(format!("HTTP lifecycle hook ({path}) failed: {url} answered {code}")),
                Ok(Err(e)) => return Err(format!("HTTP lifecycle hook ({path}) failed: Get \"{url}\": {e}")),
                Err(_) => return Err(format!("HTTP lifecycle hook ({path}) failed: Get \"{url}\": timed out")),
            }
        } else if let Some(sleep) = &hook.sleep {
            tokio::time::sleep(Duration::from_secs(sleep.seconds.max(0) as u64).min(timeout)).await;
        } else if hook.tcp_socket.is_some() {
            return Err("invalid handler: tcpSocket lifecycle hooks are not supported".into());
        }
        Ok(())
    }

    /// Stops every running container of the pod: preStop hooks, then SIGTERM with what is
    /// left of the grace period, then SIGKILL.
    async fn stop_all(&mut self, pod: &Pod, obs: &Observed, grace: i64) {
        let spec = pod.spec.clone().unwrap_or_default();
        let mut stops = Vec::new();
        for oc in &obs.containers {
            if oc.state != proto::ContainerState::ContainerRunning as i32 {
                continue;
            }
            let name = oc.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
            let init = spec.init_containers.iter().flatten().any(|c| c.name == name);
            let hook = spec
                .containers
                .iter()
                .chain(spec.init_containers.iter().flatten())
                .find(|c| c.name == name)
                .and_then(|c| c.lifecycle.as_ref())
                .and_then(|l| l.pre_stop.clone());
            if grace > 0 {
                self.event(
                    pod,
                    Some((init, &name)),
                    EventType::Normal,
                    "Killing",
                    format!("Stopping container {name}"),
                );
            }
            let id = oc.id.clone();
            let cri = self.ctx.cri.clone();
            let me = &*self;
            let container =
                spec.containers.iter().chain(spec.init_containers.iter().flatten()).find(|c| c.name == name);
            let ip = pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()).and_then(|i| i.parse().ok());
            stops.push(async move {
                let started = tokio::time::Instant::now();
                let total = Duration::from_secs(grace.max(0) as u64);
                if let Some(hook) = hook
                    && let Some(container) = container
                    && grace > 0
                    && let Err(e) = me.run_hook(&id, container, &hook, ip, total).await
                {
                    tracing::debug!(container = %name, error = %e, "preStop hook failed");
                }
                let left = total.saturating_sub(started.elapsed());
                if let Err(e) = runtime::stop_container(&cri, &id, left).await {
                    tracing::debug!(container = %name, error = %e, "cannot stop container");
                }
            });
        }
        futures::future::join_all(stops).await;
    }

    /// Gracefully stops a pod being deleted, then removes it from the runtime and the API.
    /// Returns whether it is gone.
    async fn terminate(&mut self, pod: &Pod) -> bool {
        let obs = runtime::observe(&self.ctx.cri, &self.uid).await.unwrap_or_default();
        let grace = spec::grace_seconds(pod);
        self.stop_all(pod, &obs, grace).await;
        for s in &obs.sandboxes {
            let _ = runtime::stop_sandbox(&self.ctx.cri, &s.id).await;
        }
        let obs = runtime::observe(&self.ctx.cri, &self.uid).await.unwrap_or(obs);
        if self.terminal.is_none() {
            let statuses = self.instance_statuses(&obs).await;
            self.terminal = Some(self.finished_phase(pod, &statuses));
        }
        self.waiting.clear();
        self.report(pod, &obs, false, &[], true).await;
        self.teardown(Some(&obs)).await;
        let (ns, name, uid) = spec::ids(pod);
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), ns);
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions { uid: Some(uid.to_string()), resource_version: None }),
            ..Default::default()
        };
        match api.delete(name, &dp).await {
            Ok(_) => true,
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => true,
            Err(e) => {
                tracing::warn!(pod = %key(pod), error = %e, "cannot delete the pod");
                false
            }
        }
    }

    /// Removes every sandbox and container of the pod and its files.
    async fn teardown(&mut self, known: Option<&Observed>) {
        self.ctx.index.remove_uid(&self.uid);
        let obs = match known {
            Some(o) => o.clone(),
            None => runtime::observe(&self.ctx.cri, &self.uid).await.unwrap_or_default(),
        };
        remove_pod(&self.ctx, &self.uid, &obs).await;
    }

    /// Tells the index what this pod's containers are now.
    fn publish(&self, pod: &Pod, obs: &Observed, instances: &HashMap<String, Vec<proto::ContainerStatus>>) {
        let (ns, name, _) = spec::ids(pod);
        let log_dir = self.ctx.log_dir(pod);
        let path = |s: &proto::ContainerStatus| {
            let p = PathBuf::from(&s.log_path);
            if p.is_absolute() { p } else { log_dir.join(p) }
        };
        let containers = instances
            .iter()
            .filter_map(|(cname, list)| {
                let newest = list.first()?;
                Some((
                    cname.clone(),
                    crate::agent::kubelet_api::ContainerRef {
                        id: newest.id.clone(),
                        log_path: path(newest),
                        previous_log_path: list.get(1).map(path),
                        running: is_running(newest),
                    },
                ))
            })
            .collect();
        let sandbox = obs.ready_sandbox().or(obs.sandboxes.first()).map(|s| s.id.clone());
        self.ctx.index.put(ns, name, super::index::Entry { pod: Arc::new(pod.clone()), sandbox, containers });
    }

    /// Posts the status if it changed since the last post.
    async fn report(&mut self, pod: &Pod, obs: &Observed, sandbox_ready: bool, pod_ips: &[String], initialized: bool) {
        let instances = self.instance_statuses(obs).await;
        self.publish(pod, obs, &instances);
        let host_ips: Vec<String> = self.ctx.cfg.node_ips.iter().map(|i| i.to_string()).collect();
        let inputs = status::Inputs {
            pod,
            sandbox_ready,
            pod_ips,
            host_ips: &host_ips,
            instances: &instances,
            waiting: &self.waiting,
            ready: &self.ready,
            started: &self.started,
            initialized,
            terminal: self.terminal,
            start_time: self.start_time.clone(),
            killed: self.killed.as_ref(),
        };
        let new = status::compute(&inputs);
        if self.last_posted.as_ref() == Some(&new) {
            return;
        }
        let current = pod.status.clone().unwrap_or_default();
        if self.last_posted.is_none() && equal_ignoring_times(&current, &new) {
            self.last_posted = Some(new);
            return;
        }
        let (ns, name, _) = spec::ids(pod);
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), ns);
        let patch = serde_json::json!({"status": new});
        match api
            .patch_status(
                name,
                &PatchParams { field_manager: Some("kubelet".into()), ..Default::default() },
                &Patch::Strategic(&patch),
            )
            .await
        {
            Ok(_) => self.last_posted = Some(new),
            Err(e) => tracing::debug!(pod = %key(pod), error = %e, "cannot post the pod status"),
        }
    }
}

fn equal_ignoring_times(a: &PodStatus, b: &PodStatus) -> bool {
    let strip = |s: &PodStatus| {
        let mut s = s.clone();
        for c in s.conditions.iter_mut().flatten() {
            c.last_transition_time = None;
            c.last_probe_time = None;
        }
        s
    };
    strip(a) == strip(b)
}

/// Removes everything the runtime holds for pod `uid`, and its directory.
pub async fn remove_pod(ctx: &Ctx, uid: &str, obs: &Observed) {
    for c in &obs.containers {
        if c.state == proto::ContainerState::ContainerRunning as i32 {
            let _ = runtime::stop_container(&ctx.cri, &c.id, Duration::ZERO).await;
        }
        let _ = runtime::remove_container(&ctx.cri, &c.id).await;
    }
    for s in &obs.sandboxes {
        if let Err(e) = runtime::remove_sandbox(&ctx.cri, &s.id).await {
            tracing::warn!(sandbox = %s.id, error = %e, "cannot remove sandbox");
        }
    }
    let dir = ctx.pod_dir(uid);
    tokio::task::spawn_blocking(move || volumes::cleanup(&dir)).await.ok();
    if let Some(s) = obs.sandboxes.first()
        && let Some(m) = &s.metadata
    {
        let log_dir = ctx.logs_dir.join(format!("{}_{}_{}", m.namespace, m.name, m.uid));
        let _ = tokio::fs::remove_dir_all(log_dir).await;
    }
}

/// The termination message of an exited container: what it wrote to its termination-log
/// mount, or, with `FallbackToLogsOnError` and a failure, the end of its log (80 lines, at
/// most 2 KiB), as upstream.
fn termination_message(s: &proto::ContainerStatus) -> String {
    let path =
        s.annotations.get(spec::ANNOTATION_TERMINATION_PATH).cloned().unwrap_or_else(|| "/dev/termination-log".into());
    if let Some(m) = s.mounts.iter().find(|m| m.container_path == path)
        && let Ok(mut bytes) = std::fs::read(&m.host_path)
        && !bytes.is_empty()
    {
        bytes.truncate(MAX_TERMINATION_MESSAGE);
        return String::from_utf8_lossy(&bytes).into_owned();
    }
    let fallback =
        s.annotations.get(spec::ANNOTATION_TERMINATION_POLICY).map(String::as_str) == Some("FallbackToLogsOnError");
    if fallback && s.exit_code != 0 && !s.log_path.is_empty() {
        let log = crate::agent::kubelet_api::log_tail(std::path::Path::new(&s.log_path), 80, 2048);
        if !log.is_empty() {
            return log;
        }
    }
    s.message.clone()
}

fn key(pod: &Pod) -> String {
    let (ns, name, _) = spec::ids(pod);
    format!("{ns}/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_loop_backoff_is_upstreams() {
        let secs: Vec<u64> = (1..=8).map(|r| backoff(r).as_secs()).collect();
        assert_eq!(secs, [0, 10, 20, 40, 80, 160, 300, 300]);
    }

    #[test]
    fn restart_policies() {
        assert!(should_restart("Always", 0));
        assert!(should_restart("OnFailure", 1));
        assert!(!should_restart("OnFailure", 0));
        assert!(!should_restart("Never", 1));
    }
}
