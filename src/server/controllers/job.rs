//! The job controller: runs a Job's pods until enough of them succeed or the Job fails, as
//! upstream's (kube-controller-manager 1.32, `pkg/controller/job`).
//!
//! Each pass over a Job ([`Controller::reconcile`]):
//! 1. claims its pods (adopts matching orphans, releases controlled pods that stopped matching);
//! 2. counts succeeded and failed pods, and decides whether the Job is finishing: failures above
//!    `backoffLimit` (or, for `restartPolicy: OnFailure`, container restarts reaching it) →
//!    `BackoffLimitExceeded`; active longer than `activeDeadlineSeconds` → `DeadlineExceeded`;
//!    enough successes → `CompletionsReached`;
//! 3. a finishing Job has its active pods deleted and gets the interim condition first
//!    (`FailureTarget` or `SuccessCriteriaMet`), then the terminal one (`Failed` or `Complete`,
//!    same reason and message) once none of its pods is terminating, as upstream 1.32 does;
//! 4. otherwise keeps `min(parallelism, completions - succeeded)` pods active (Indexed Jobs:
//!    one pod per pending index, `<job>-<index>-` names, hostname `<job>-<index>`, the
//!    `batch.kubernetes.io/job-completion-index` annotation and label), waits out the pod
//!    failure backoff (10 s doubling to 10 min after consecutive failures) before replacing
//!    failed pods, and deletes every active pod of a suspended Job;
//! 5. writes `status` (with the resourceVersion as a precondition, so a stale cache cannot
//!    finish a Job twice) and records upstream's events.
//!
//! Counting without finalizers: upstream (since 1.26) puts the `batch.kubernetes.io/job-tracking`
//! finalizer on every pod and moves finished pods through `status.uncountedTerminatedPods`, so
//! that a pod deleted right after it finished is still counted. That costs a pod PATCH per
//! finished pod and a two-phase status protocol. skiff does not use it: here nothing but the
//! Job's own deletion (garbage collection) and users delete finished pods of a running Job, so
//! the finished pods that exist are the record. Succeeded and failed counts are the larger of
//! the recorded count and the finished pods that exist (never shrinking), Indexed Jobs merge
//! `completedIndexes` with the indexes of succeeded pods (exact, as upstream), and active pods
//! the controller deletes are counted as failed when it deletes them. What this gives up: a pod
//! deleted by someone else while it ran is replaced without counting as a failure, and a
//! finished pod deleted by hand can hide one later finish of the same kind.
//! `uncountedTerminatedPods` is always written empty.
//!
//! Not implemented: `podFailurePolicy`, `successPolicy`, `backoffLimitPerIndex` and
//! `maxFailedIndexes` (their fields are stored and ignored). Jobs whose `spec.managedBy` names
//! another controller are left alone, as upstream.
//!
//! Invariant: it writes pods of its Jobs and Job status, nothing else.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use futures::future::join_all;
use k8s_openapi::api::batch::v1::{Job, JobCondition};
use k8s_openapi::api::core::v1::{Container, EnvVar, EnvVarSource, ObjectFieldSelector, Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use super::Ctx;
use super::expectations::Expectations;
use super::pods::{controller_of, controller_ref, deletion_order, from_template, is_active, is_ready};
use crate::runtime::events::{EventType, Recorder};
use crate::runtime::informer::next_change;
use crate::runtime::matching::{selector_is_empty, selector_matches};
use crate::runtime::queue::{Next, run_workers};
use crate::runtime::{Change, Informer, Key, WorkQueue};

const COMPONENT: &str = "job-controller";
/// Annotation and label with an Indexed Job pod's completion index.
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
/// The environment variable an Indexed Job's containers read their index from.
const INDEX_ENV: &str = "JOB_COMPLETION_INDEX";
/// `spec.managedBy` of Jobs this controller runs (unset means the same).
const MANAGED_BY: &str = "kubernetes.io/job-controller";
/// Pod changes are batched for this long before the Job is synced (upstream's
/// `syncJobBatchPeriod`).
const BATCH_PERIOD: Duration = Duration::from_secs(1);
/// Delay before replacing a failed pod, doubled with each consecutive failure.
const POD_FAILURE_BACKOFF: Duration = Duration::from_secs(10);
const MAX_POD_FAILURE_BACKOFF: Duration = Duration::from_secs(600);
/// Most pods created or deleted in one pass.
const MAX_PER_SYNC: usize = 500;
/// Longest `generateName` the API server extends with a random suffix.
const MAX_GENERATED_NAME: usize = 58;

const BACKOFF_MESSAGE: &str = "Job has reached the specified backoff limit";
const DEADLINE_MESSAGE: &str = "Job was active longer than specified deadline";
const COMPLETIONS_MESSAGE: &str = "Reached expected number of succeeded pods";

struct Controller {
    client: kube::Client,
    jobs: Arc<Informer<Job>>,
    pods: Arc<Informer<Pod>>,
    expectations: Expectations,
    recorder: Recorder,
}

pub async fn run(ctx: Arc<Ctx>, cancel: CancellationToken) {
    let jobs = ctx.informers.get::<Job>();
    let pods = ctx.informers.get::<Pod>();
    let mut job_changes = jobs.subscribe();
    let mut pod_changes = pods.subscribe();
    jobs.synced().await;
    pods.synced().await;
    let c = Arc::new(Controller {
        client: ctx.client.clone(),
        jobs,
        pods,
        expectations: Expectations::default(),
        recorder: ctx.recorder(COMPONENT),
    });
    let queue = WorkQueue::<Key>::new();
    let all = |queue: &WorkQueue<Key>| c.jobs.list().iter().for_each(|j| queue.add(Key::of(j.as_ref())));
    all(&queue);
    let workers = {
        let c = c.clone();
        tokio::spawn(run_workers(COMPONENT, queue.clone(), 4, cancel.clone(), move |key: Key| {
            let c = c.clone();
            async move { c.reconcile(&key).await }
        }))
    };
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            ch = next_change(&mut job_changes) => match ch {
                Some(Change::Applied(j)) | Some(Change::Deleted(j)) => queue.add(Key::of(j.as_ref())),
                Some(Change::Resync) => all(&queue),
                None => break,
            },
            ch = next_change(&mut pod_changes) => match ch {
                Some(Change::Applied(p)) | Some(Change::Deleted(p)) => c.pod_changed(&p, &queue),
                Some(Change::Resync) => all(&queue),
                None => break,
            },
        }
    }
    let _ = workers.await;
}

// ---- facts about Jobs and their pods ----

fn spec(job: &Job) -> k8s_openapi::api::batch::v1::JobSpec {
    job.spec.clone().unwrap_or_default()
}

fn condition<'a>(conditions: &'a [JobCondition], type_: &str) -> Option<&'a JobCondition> {
    conditions.iter().find(|c| c.type_ == type_)
}

fn conditions_of(job: &Job) -> &[JobCondition] {
    job.status.as_ref().and_then(|s| s.conditions.as_deref()).unwrap_or(&[])
}

fn has_true(job: &Job, type_: &str) -> bool {
    condition(conditions_of(job), type_).is_some_and(|c| c.status == "True")
}

/// `Some("Complete")` or `Some("Failed")` once the Job has finished.
pub fn finished(job: &Job) -> Option<&'static str> {
    ["Complete", "Failed"].into_iter().find(|t| has_true(job, t))
}

/// When the Job finished (the terminal condition's transition time).
pub fn finished_at(job: &Job) -> Option<DateTime<Utc>> {
    let t = finished(job)?;
    condition(conditions_of(job), t)?.last_transition_time.as_ref().map(|t| t.0)
}

fn suspended(job: &Job) -> bool {
    job.spec.as_ref().and_then(|s| s.suspend).unwrap_or(false)
}

/// Indexed completion mode (it needs `completions`, which validation requires).
fn indexed(job: &Job) -> Option<i64> {
    let s = job.spec.as_ref()?;
    (s.completion_mode.as_deref() == Some("Indexed")).then_some(())?;
    s.completions.map(i64::from)
}

/// Whether only pods in the `Failed` phase are replaced (terminating ones are waited for).
fn only_replace_failed(job: &Job) -> bool {
    let s = job.spec.as_ref();
    s.and_then(|s| s.pod_replacement_policy.as_deref()) == Some("Failed")
        || s.is_some_and(|s| s.pod_failure_policy.is_some())
}

fn phase(p: &Pod) -> &str {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

fn is_terminating(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_some() && !matches!(phase(p), "Succeeded" | "Failed")
}

/// Upstream's `isPodFailed`: the Failed phase, or being deleted before succeeding.
fn is_pod_failed(p: &Pod, job: &Job) -> bool {
    phase(p) == "Failed"
        || (!only_replace_failed(job) && p.metadata.deletion_timestamp.is_some() && phase(p) != "Succeeded")
}

fn completion_index(p: &Pod) -> Option<i64> {
    p.metadata.annotations.as_ref()?.get(COMPLETION_INDEX)?.parse().ok().filter(|i: &i64| *i >= 0)
}

/// Upstream's `getFinishedTime`: the last container exit, else when Ready turned False, else
/// the deletion time less the grace period, else the creation time.
fn finish_time(p: &Pod) -> DateTime<Utc> {
    let status = p.status.as_ref();
    let containers = status.and_then(|s| s.container_statuses.as_deref()).unwrap_or(&[]);
    let exits: Option<Vec<DateTime<Utc>>> =
        containers.iter().map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref().map(|t| t.0)).collect();
    if let Some(t) = exits.and_then(|e| e.into_iter().max()) {
        return t;
    }
    let ready_false = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready" && c.status == "False"))
        .and_then(|c| c.last_transition_time.as_ref());
    if let Some(t) = ready_false {
        return t.0;
    }
    if let Some(d) = &p.metadata.deletion_timestamp {
        return d.0 - chrono::Duration::seconds(p.metadata.deletion_grace_period_seconds.unwrap_or(0));
    }
    p.metadata.creation_timestamp.as_ref().map(|t| t.0).unwrap_or_else(Utc::now)
}

/// Sum of container restarts of running and pending pods (for `restartPolicy: OnFailure`).
fn past_backoff_limit_on_failure(job: &Job, pods: &[Arc<Pod>], backoff_limit: i32) -> bool {
    let policy = job.spec.as_ref().and_then(|s| s.template.spec.as_ref()).and_then(|s| s.restart_policy.as_deref());
    if policy != Some("OnFailure") {
        return false;
    }
    let restarts: i32 = pods
        .iter()
        .filter(|p| matches!(phase(p), "Running" | "Pending"))
        .filter_map(|p| p.status.as_ref())
        .flat_map(|s| s.init_container_statuses.iter().flatten().chain(s.container_statuses.iter().flatten()))
        .map(|c| c.restart_count)
        .sum();
    if backoff_limit == 0 { restarts > 0 } else { restarts >= backoff_limit }
}

/// How long until a failed pod may be replaced: 10 s after the last failure, doubled per
/// consecutive failure since the last success (upstream's backoff record, rebuilt from pods).
fn backoff_remaining(succeeded: &[&Pod], failed: &[&Pod], now: DateTime<Utc>) -> Duration {
    let last_success = succeeded.iter().map(|p| finish_time(p)).max();
    let failures: Vec<DateTime<Utc>> =
        failed.iter().map(|p| finish_time(p)).filter(|t| last_success.is_none_or(|s| *t > s)).collect();
    let Some(last_failure) = failures.iter().max() else { return Duration::ZERO };
    let mut backoff = POD_FAILURE_BACKOFF;
    for _ in 1..failures.len() {
        backoff *= 2;
        if backoff >= MAX_POD_FAILURE_BACKOFF {
            backoff = MAX_POD_FAILURE_BACKOFF;
            break;
        }
    }
    let elapsed = (now - *last_failure).to_std().unwrap_or_default();
    backoff.saturating_sub(elapsed)
}

/// Sets the condition of `type_` as upstream's `ensureJobConditionStatus`: replaced when its
/// status, reason or message differ; appended when missing unless `status` is False. Returns
/// whether the list changed.
fn ensure_condition(
    list: &mut Vec<JobCondition>,
    type_: &str,
    status: &str,
    reason: &str,
    msg: &str,
    now: &Time,
) -> bool {
    let new = new_condition(type_, status, reason, msg, now);
    if let Some(c) = list.iter_mut().find(|c| c.type_ == type_) {
        if c.status != status || c.reason.as_deref() != Some(reason) || c.message.as_deref() != Some(msg) {
            *c = new;
            return true;
        }
        return false;
    }
    if status != "False" {
        list.push(new);
        return true;
    }
    false
}

fn new_condition(type_: &str, status: &str, reason: &str, msg: &str, now: &Time) -> JobCondition {
    JobCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(msg.into()),
        last_probe_time: Some(now.clone()),
        last_transition_time: Some(now.clone()),
    }
}

// ---- completion indexes ----

/// A set of completion indexes as ordered, disjoint, non-adjacent intervals (upstream's
/// `orderedIntervals`), written `1,3-5,7,8` in `status.completedIndexes`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Intervals(Vec<(i64, i64)>);

impl Intervals {
    /// Parses `status.completedIndexes`, ignoring corrupt parts and indexes ≥ `completions`.
    pub fn parse(s: &str, completions: i64) -> Intervals {
        let mut out: Vec<(i64, i64)> = Vec::new();
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let mut limits = part.splitn(2, '-');
            let Some(Ok(first)) = limits.next().map(str::parse::<i64>) else { continue };
            if first >= completions {
                break;
            }
            let last = match limits.next() {
                Some(l) => match l.parse::<i64>() {
                    Ok(l) => l.min(completions - 1),
                    Err(_) => continue,
                },
                None => first,
            };
            match out.last_mut() {
                Some(prev) if prev.1 == first - 1 => prev.1 = last,
                _ => out.push((first, last)),
            }
        }
        Intervals(out)
    }

    /// These intervals plus `indexes`.
    pub fn with(&self, indexes: impl IntoIterator<Item = i64>) -> Intervals {
        let mut ix: Vec<i64> = indexes.into_iter().collect();
        ix.sort_unstable();
        ix.dedup();
        self.merge(&Intervals(ix.into_iter().map(|i| (i, i)).collect()))
    }

    pub fn merge(&self, other: &Intervals) -> Intervals {
        let mut all: Vec<(i64, i64)> = self.0.iter().chain(other.0.iter()).copied().collect();
        all.sort_unstable();
        let mut out: Vec<(i64, i64)> = Vec::new();
        for iv in all {
            match out.last_mut() {
                Some(last) if iv.0 <= last.1 + 1 => last.1 = last.1.max(iv.1),
                _ => out.push(iv),
            }
        }
        Intervals(out)
    }

    pub fn total(&self) -> i64 {
        self.0.iter().map(|(a, b)| b - a + 1).sum()
    }

    pub fn has(&self, ix: i64) -> bool {
        self.0.iter().any(|(a, b)| *a <= ix && ix <= *b)
    }

    /// The first `count` indexes below `completions` not in the set.
    pub fn first_missing(&self, count: usize, completions: i64) -> Vec<i64> {
        let mut out = Vec::with_capacity(count);
        let mut candidate = 0;
        for (first, last) in &self.0 {
            while candidate < completions && out.len() < count && candidate < *first {
                out.push(candidate);
                candidate += 1;
            }
            candidate = candidate.max(last + 1);
        }
        while candidate < completions && out.len() < count {
            out.push(candidate);
            candidate += 1;
        }
        out
    }
}

impl fmt::Display for Intervals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (a, b)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{a}")?;
            if b > a {
                write!(f, "{}{b}", if *b == a + 1 { "," } else { "-" })?;
            }
        }
        Ok(())
    }
}

/// `<job>-<index>-`, shortened to fit a generated name, as upstream's `podGenerateNameWithIndex`.
fn indexed_prefix(job: &str, index: i64) -> String {
    let suffix = format!("-{index}-");
    let mut prefix = format!("{job}{suffix}");
    if prefix.len() > MAX_GENERATED_NAME {
        let keep = MAX_GENERATED_NAME.saturating_sub(suffix.len());
        prefix = format!("{}{suffix}", &job[..keep.min(job.len())]);
    }
    prefix
}

/// Adds `JOB_COMPLETION_INDEX` from the index label to every container that lacks it.
fn add_index_env(template: &mut PodTemplateSpec) {
    let Some(spec) = template.spec.as_mut() else { return };
    let add = |c: &mut Container| {
        let env = c.env.get_or_insert_with(Vec::new);
        if env.iter().any(|e| e.name == INDEX_ENV) {
            return;
        }
        env.push(EnvVar {
            name: INDEX_ENV.into(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    api_version: None,
                    field_path: format!("metadata.labels['{COMPLETION_INDEX}']"),
                }),
                ..Default::default()
            }),
        });
    };
    spec.init_containers.iter_mut().flatten().for_each(add);
    spec.containers.iter_mut().for_each(add);
}

/// Active pods to delete: for Indexed Jobs first those without a valid index or repeating one
/// (keeping the best of each index), then up to `at_least` in upstream's deletion order.
fn pods_for_removal(completions: Option<i64>, pods: &[Arc<Pod>], at_least: usize) -> Vec<Arc<Pod>> {
    let mut rm: Vec<Arc<Pod>> = Vec::new();
    let mut left: Vec<Arc<Pod>> = Vec::new();
    if let Some(completions) = completions {
        let mut by_index: BTreeMap<i64, Vec<Arc<Pod>>> = BTreeMap::new();
        for p in pods {
            match completion_index(p).filter(|i| *i < completions) {
                Some(i) => by_index.entry(i).or_default().push(p.clone()),
                None => rm.push(p.clone()),
            }
        }
        for (_, mut same) in by_index {
            same.sort_by(|a, b| deletion_order(a, b));
            let keep = same.pop();
            rm.extend(same);
            left.extend(keep);
        }
    } else {
        left = pods.to_vec();
    }
    if rm.len() < at_least {
        left.sort_by(|a, b| deletion_order(a, b));
        let more = at_least - rm.len();
        rm.extend(left.into_iter().take(more));
    }
    rm
}

/// What one pass computed, written to `status` at its end.
struct Pass {
    active: Vec<Arc<Pod>>,
    active_n: i32,
    ready: i32,
    terminating: i32,
    succeeded: i32,
    failed: i32,
    succeeded_indexes: Option<Intervals>,
    start_time: Option<Time>,
    conditions: Vec<JobCondition>,
    requeue: Option<Duration>,
    error: Option<kube::Error>,
}

impl Pass {
    fn requeue_after(&mut self, d: Duration) {
        self.requeue = Some(self.requeue.map_or(d, |r| r.min(d)));
    }
}

/// An interim finishing decision (`FailureTarget` or `SuccessCriteriaMet`).
enum Finish {
    Success { reason: String, message: String },
    Failure { reason: String, message: String },
}

impl Controller {
    fn pod_changed(&self, pod: &Pod, queue: &Arc<WorkQueue<Key>>) {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("");
        match controller_ref(&pod.metadata) {
            Some(r) if r.kind == "Job" => {
                if self.jobs.get(ns, &r.name).is_some_and(|j| j.metadata.uid.as_deref() == Some(r.uid.as_str())) {
                    queue.add_after(Key::new(ns, &r.name), BATCH_PERIOD);
                }
            }
            Some(_) => {}
            None => {
                let labels = pod.metadata.labels.clone().unwrap_or_default();
                for j in self.jobs.in_namespace(ns) {
                    let sel = j.spec.as_ref().and_then(|s| s.selector.as_ref());
                    if sel.is_some_and(|s| !selector_is_empty(s) && selector_matches(s, &labels)) {
                        queue.add_after(Key::of(j.as_ref()), BATCH_PERIOD);
                    }
                }
            }
        }
    }

    async fn reconcile(&self, key: &Key) -> Result<Next, kube::Error> {
        let Some(job) = self.jobs.get(&key.namespace, &key.name) else {
            self.expectations.forget(key);
            return Ok(Next::Done);
        };
        if finished(&job).is_some() {
            return Ok(Next::Done);
        }
        if job.spec.as_ref().and_then(|s| s.managed_by.as_deref()).is_some_and(|m| m != MANAGED_BY) {
            return Ok(Next::Done);
        }
        let job_spec = spec(&job);
        if let Some(mode) = job_spec.completion_mode.as_deref().filter(|m| !matches!(*m, "NonIndexed" | "Indexed")) {
            tracing::debug!(job = %key, mode, "unknown completion mode");
            self.recorder.record(
                job.as_ref(),
                EventType::Warning,
                "UnknownCompletionMode",
                "Skipped Job sync because completion mode is unknown".into(),
            );
            return Ok(Next::Done);
        }
        let now = Utc::now();
        let stamp = Time(now.trunc_subsecs(0));
        let pods_api: Api<Pod> = Api::namespaced(self.client.clone(), &key.namespace);
        let seen =
            |name: &str| self.pods.get(&key.namespace, name).is_some_and(|p| p.metadata.deletion_timestamp.is_none());
        let satisfied = self.expectations.satisfied(key, seen);
        let pods = self.claim(&job, &pods_api).await?;

        let status = job.status.clone().unwrap_or_default();
        let completions = indexed(&job);
        let valid = |p: &Pod| completions.is_none_or(|c| completion_index(p).is_some_and(|i| i < c));
        let succeeded_pods: Vec<&Pod> =
            pods.iter().map(|p| p.as_ref()).filter(|p| phase(p) == "Succeeded" && valid(p)).collect();
        let failed_pods: Vec<&Pod> =
            pods.iter().map(|p| p.as_ref()).filter(|p| is_pod_failed(p, &job) && valid(p)).collect();
        let active: Vec<Arc<Pod>> = pods.iter().filter(|p| is_active(p)).cloned().collect();
        let (succeeded, succeeded_indexes) = match completions {
            Some(c) => {
                let prev = Intervals::parse(status.completed_indexes.as_deref().unwrap_or(""), c);
                let all = prev.with(succeeded_pods.iter().filter_map(|p| completion_index(p)));
                (all.total() as i32, Some(all))
            }
            None => (status.succeeded.unwrap_or(0).max(succeeded_pods.len() as i32), None),
        };
        let mut pass = Pass {
            active_n: active.len() as i32,
            ready: active.iter().filter(|p| is_ready(p)).count() as i32,
            terminating: pods.iter().filter(|p| is_terminating(p)).count() as i32,
            active,
            succeeded,
            failed: status.failed.unwrap_or(0).max(failed_pods.len() as i32),
            succeeded_indexes,
            start_time: status.start_time.clone(),
            conditions: status.conditions.clone().unwrap_or_default(),
            requeue: None,
            error: None,
        };
        if pass.start_time.is_none() && !suspended(&job) {
            pass.start_time = Some(stamp.clone());
        }
        let backoff_limit = job_spec.backoff_limit.unwrap_or(6);
        let mut finish =
            if let Some(c) = condition(&pass.conditions, "SuccessCriteriaMet").filter(|c| c.status == "True") {
                Some(Finish::Success {
                    reason: c.reason.clone().unwrap_or_default(),
                    message: c.message.clone().unwrap_or_default(),
                })
            } else {
                condition(&pass.conditions, "FailureTarget").filter(|c| c.status == "True").map(|c| Finish::Failure {
                    reason: c.reason.clone().unwrap_or_default(),
                    message: c.message.clone().unwrap_or_default(),
                })
            };
        if finish.is_none() {
            let deadline = job_spec.active_deadline_seconds.filter(|_| !suspended(&job));
            let since_start = pass.start_time.as_ref().map(|s| (now - s.0).to_std().unwrap_or_default());
            if pass.failed > backoff_limit || past_backoff_limit_on_failure(&job, &pods, backoff_limit) {
                finish =
                    Some(Finish::Failure { reason: "BackoffLimitExceeded".into(), message: BACKOFF_MESSAGE.into() });
            } else if let (Some(ads), Some(elapsed)) = (deadline, since_start) {
                let allowed = Duration::from_secs(ads.max(0) as u64);
                if elapsed >= allowed {
                    finish =
                        Some(Finish::Failure { reason: "DeadlineExceeded".into(), message: DEADLINE_MESSAGE.into() });
                } else {
                    pass.requeue_after(allowed - elapsed);
                }
            }
        }

        if finish.is_some() {
            // A finishing Job keeps no pod running.
            let victims = pass.active.clone();
            let (deleted, deleted_ready) = self.delete_pods(key, &job, &pods_api, &victims, false, &mut pass).await;
            if deleted != victims.len() as i32 || !satisfied {
                // Not finished yet: some pod could not be deleted, or the cache may lack some.
                finish = None;
            }
            pass.active_n -= deleted;
            pass.terminating += deleted;
            pass.ready -= deleted_ready;
            pass.failed += deleted;
        } else {
            let mut managed = false;
            if satisfied && job.metadata.deletion_timestamp.is_none() {
                self.manage(key, &job, &pods_api, &succeeded_pods, &failed_pods, &pods, now, &mut pass).await;
                managed = true;
            }
            let complete = match job_spec.completions {
                None => pass.succeeded > 0 && pass.active_n == 0,
                Some(c) => pass.succeeded >= c && pass.active_n == 0,
            };
            if complete {
                finish =
                    Some(Finish::Success { reason: "CompletionsReached".into(), message: COMPLETIONS_MESSAGE.into() });
            } else if managed {
                if suspended(&job) {
                    if ensure_condition(
                        &mut pass.conditions,
                        "Suspended",
                        "True",
                        "JobSuspended",
                        "Job suspended",
                        &stamp,
                    ) {
                        self.recorder.record(job.as_ref(), EventType::Normal, "Suspended", "Job suspended".into());
                    }
                } else if ensure_condition(
                    &mut pass.conditions,
                    "Suspended",
                    "False",
                    "JobResumed",
                    "Job resumed",
                    &stamp,
                ) {
                    self.recorder.record(job.as_ref(), EventType::Normal, "Resumed", "Job resumed".into());
                    // activeDeadlineSeconds counts from the (last) resume.
                    pass.start_time = Some(stamp.clone());
                }
            }
        }

        // The interim condition goes first; the terminal one follows once no pod terminates.
        let terminal = match finish {
            Some(Finish::Failure { reason, message }) => {
                if !has_true(&job, "FailureTarget") {
                    pass.conditions.push(new_condition("FailureTarget", "True", &reason, &message, &stamp));
                }
                Some(("Failed", reason, message))
            }
            Some(Finish::Success { reason, message }) => {
                if !has_true(&job, "SuccessCriteriaMet") {
                    pass.conditions.push(new_condition("SuccessCriteriaMet", "True", &reason, &message, &stamp));
                }
                Some(("Complete", reason, message))
            }
            None => None,
        };
        let mut completion_time = status.completion_time.clone();
        let finished_now = terminal.filter(|_| pass.terminating == 0);
        if let Some((type_, reason, message)) = &finished_now {
            ensure_condition(&mut pass.conditions, type_, "True", reason, message, &stamp);
            if *type_ == "Complete" {
                completion_time = Some(stamp.clone());
            }
        }

        let written = self.write_status(key, &job, &pass, completion_time).await?;
        if written && let Some((type_, reason, message)) = finished_now {
            if type_ == "Complete" {
                if job_spec.completions.is_some_and(|c| pass.succeeded > c) {
                    self.recorder.record(
                        job.as_ref(),
                        EventType::Warning,
                        "TooManySucceededPods",
                        "Too many succeeded pods running after completion count reached".into(),
                    );
                }
                self.recorder.record(job.as_ref(), EventType::Normal, "Completed", "Job completed".into());
            } else {
                self.recorder.record(job.as_ref(), EventType::Warning, &reason, message);
            }
        }
        if let Some(e) = pass.error {
            return Err(e);
        }
        Ok(pass.requeue.map(Next::After).unwrap_or(Next::Done))
    }

    /// Upstream's `manageJob`: deletes surplus or suspended pods, or creates missing ones.
    #[allow(clippy::too_many_arguments)]
    async fn manage(
        &self,
        key: &Key,
        job: &Job,
        api: &Api<Pod>,
        succeeded_pods: &[&Pod],
        failed_pods: &[&Pod],
        pods: &[Arc<Pod>],
        now: DateTime<Utc>,
        pass: &mut Pass,
    ) {
        let job_spec = spec(job);
        let active = pass.active_n;
        let parallelism = job_spec.parallelism.unwrap_or(1).max(0);
        let completions = indexed(job);
        if suspended(job) {
            let victims = pods_for_removal(completions, &pass.active, active as usize);
            let (removed, removed_ready) = self.delete_pods(key, job, api, &victims, true, pass).await;
            pass.active_n -= removed;
            pass.terminating += removed;
            pass.ready -= removed_ready;
            pass.failed += removed;
            return;
        }
        let want = match job_spec.completions {
            None if pass.succeeded > 0 => active,
            None => parallelism,
            Some(c) => (c - pass.succeeded).clamp(0, parallelism),
        };
        let surplus = (active - want).max(0) as usize;
        let mut victims = pods_for_removal(completions, &pass.active, surplus);
        victims.truncate(MAX_PER_SYNC);
        if !victims.is_empty() {
            // Deleting and creating in one pass is never needed at once; deleting goes first.
            let (removed, removed_ready) = self.delete_pods(key, job, api, &victims, true, pass).await;
            pass.active_n -= removed;
            pass.terminating += removed;
            pass.ready -= removed_ready;
            pass.failed += removed;
            return;
        }
        let terminating = if only_replace_failed(job) { pass.terminating } else { 0 };
        let diff = want - terminating - active;
        if diff <= 0 {
            return;
        }
        let remaining = backoff_remaining(succeeded_pods, failed_pods, now);
        if !remaining.is_zero() {
            pass.requeue_after(remaining.max(BATCH_PERIOD));
            return;
        }
        let mut diff = (diff as usize).min(MAX_PER_SYNC);
        let mut indexes: Vec<i64> = Vec::new();
        if let Some(c) = completions {
            let mut busy: Vec<i64> = pass.active.iter().filter_map(|p| completion_index(p)).collect();
            if only_replace_failed(job) {
                busy.extend(pods.iter().filter(|p| is_terminating(p)).filter_map(|p| completion_index(p)));
            }
            let done = pass.succeeded_indexes.clone().unwrap_or_default();
            indexes = done.with(busy).first_missing(diff, c);
            diff = indexes.len();
        }
        let mut template = job_spec.template.clone();
        if completions.is_some() {
            add_index_env(&mut template);
        }
        let mut batch = 1;
        let mut next_index = indexes.into_iter();
        while diff > 0 {
            let n = batch.min(diff);
            let creates: Vec<_> = (0..n)
                .map(|_| {
                    let pod = self.pod_for(job, &template, &key.namespace, next_index.next());
                    async move { api.create(&PostParams::default(), &pod).await }
                })
                .collect();
            let mut failed = false;
            for r in join_all(creates).await {
                match r {
                    Ok(p) => {
                        let name = p.metadata.name.clone().unwrap_or_default();
                        self.expectations.created(key, &name);
                        pass.active_n += 1;
                        self.recorder.record(
                            job,
                            EventType::Normal,
                            "SuccessfulCreate",
                            format!("Created pod: {name}"),
                        );
                    }
                    Err(e) => {
                        let msg = match &e {
                            kube::Error::Api(s) => s.message.clone(),
                            other => other.to_string(),
                        };
                        self.recorder.record(job, EventType::Warning, "FailedCreate", format!("Error creating: {msg}"));
                        pass.error = Some(e);
                        failed = true;
                    }
                }
            }
            if failed {
                // Slow start: one failed batch skips the rest until the next pass.
                break;
            }
            diff -= n;
            batch *= 2;
        }
    }

    /// A new pod of `job` from `template`, with the completion index of Indexed Jobs.
    fn pod_for(&self, job: &Job, template: &PodTemplateSpec, ns: &str, index: Option<i64>) -> Pod {
        let name = job.metadata.name.clone().unwrap_or_default();
        let prefix = match index {
            Some(i) => indexed_prefix(&name, i),
            None => format!("{name}-"),
        };
        let mut pod = from_template(template, ns, &prefix, controller_of(job));
        if let Some(i) = index {
            let v = i.to_string();
            pod.metadata.annotations.get_or_insert_with(Default::default).insert(COMPLETION_INDEX.into(), v.clone());
            pod.metadata.labels.get_or_insert_with(Default::default).insert(COMPLETION_INDEX.into(), v);
            if let Some(s) = pod.spec.as_mut() {
                s.hostname = Some(format!("{name}-{i}"));
            }
        }
        pod
    }

    /// Deletes `victims`; returns how many are gone (or already were) and how many of those
    /// were ready. `expect` records the deletions as expectations (not when the Job finishes,
    /// as upstream).
    async fn delete_pods(
        &self,
        key: &Key,
        job: &Job,
        api: &Api<Pod>,
        victims: &[Arc<Pod>],
        expect: bool,
        pass: &mut Pass,
    ) -> (i32, i32) {
        let deletes = victims.iter().map(|p| {
            let name = p.metadata.name.clone().unwrap_or_default();
            async move { (api.delete(&name, &DeleteParams::default()).await, name) }
        });
        let mut deleted = 0;
        let mut ready = 0;
        for ((r, name), pod) in join_all(deletes).await.into_iter().zip(victims) {
            match r {
                Ok(_) => {
                    if expect {
                        self.expectations.deleted(key, &name);
                    }
                    self.recorder.record(job, EventType::Normal, "SuccessfulDelete", format!("Deleted pod: {name}"));
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => {
                    self.recorder.record(job, EventType::Warning, "FailedDelete", format!("Error deleting: {e}"));
                    pass.error = Some(e);
                    continue;
                }
            }
            deleted += 1;
            if is_ready(pod) {
                ready += 1;
            }
        }
        (deleted, ready)
    }

    /// The Job's pods: those it controls that match its selector, plus matching orphans it
    /// adopts; controlled pods that stopped matching are released.
    async fn claim(&self, job: &Job, api: &Api<Pod>) -> Result<Vec<Arc<Pod>>, kube::Error> {
        let uid = job.metadata.uid.clone().unwrap_or_default();
        let ns = job.metadata.namespace.clone().unwrap_or_default();
        let mine = self.pods.controlled_by(&uid);
        let Some(sel) = job.spec.as_ref().and_then(|s| s.selector.clone()).filter(|s| !selector_is_empty(s)) else {
            return Ok(mine);
        };
        let deleting = job.metadata.deletion_timestamp.is_some();
        let mut kept = Vec::with_capacity(mine.len());
        for p in mine {
            if deleting || selector_matches(&sel, &p.metadata.labels.clone().unwrap_or_default()) {
                kept.push(p);
            } else {
                release(api, &p, &uid).await?;
            }
        }
        if !deleting {
            for p in self.pods.orphans_in(&ns) {
                if controller_ref(&p.metadata).is_none()
                    && p.metadata.deletion_timestamp.is_none()
                    && selector_matches(&sel, &p.metadata.labels.clone().unwrap_or_default())
                    && let Some(adopted) = adopt(api, &p, job).await?
                {
                    kept.push(Arc::new(adopted));
                }
            }
        }
        Ok(kept)
    }

    /// Writes `status` when it differs; `false` when nothing needed writing or the Job is gone.
    async fn write_status(
        &self,
        key: &Key,
        job: &Job,
        pass: &Pass,
        completion_time: Option<Time>,
    ) -> Result<bool, kube::Error> {
        let current = serde_json::to_value(&job.status).unwrap_or(Value::Null);
        let nz = |n: i32| if n == 0 { Value::Null } else { json!(n) };
        let mut desired = Map::new();
        desired.insert("startTime".into(), json!(pass.start_time));
        desired.insert("active".into(), nz(pass.active_n.max(0)));
        desired.insert("ready".into(), json!(pass.ready.max(0)));
        desired.insert("terminating".into(), json!(pass.terminating.max(0)));
        desired.insert("succeeded".into(), nz(pass.succeeded));
        desired.insert("failed".into(), nz(pass.failed));
        if let Some(ix) = &pass.succeeded_indexes {
            let s = ix.to_string();
            desired.insert("completedIndexes".into(), if s.is_empty() { Value::Null } else { json!(s) });
        }
        // Always empty: every finished pod is counted when it is seen (see the module docs).
        desired.insert("uncountedTerminatedPods".into(), json!({}));
        desired
            .insert("conditions".into(), if pass.conditions.is_empty() { Value::Null } else { json!(pass.conditions) });
        desired.insert("completionTime".into(), json!(completion_time));
        let changed = desired.iter().any(|(k, v)| current.get(k).unwrap_or(&Value::Null) != v);
        if !changed {
            return Ok(false);
        }
        let api: Api<Job> = Api::namespaced(self.client.clone(), &key.namespace);
        let patch = json!({
            "metadata": {"resourceVersion": job.metadata.resource_version},
            "status": desired,
        });
        match api.patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Makes `job` the controller of the orphan `pod` (UID precondition: a pod replaced meanwhile
/// is not adopted). `None` when the pod changed or is gone.
async fn adopt(api: &Api<Pod>, pod: &Pod, job: &Job) -> Result<Option<Pod>, kube::Error> {
    let mut refs = pod.metadata.owner_references.clone().unwrap_or_default();
    refs.push(controller_of(job));
    let patch = json!({"metadata": {"ownerReferences": refs, "uid": pod.metadata.uid}});
    let name = pod.metadata.name.as_deref().unwrap_or("");
    match api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(p) => Ok(Some(p)),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 || e.code == 422 => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes the controller reference to `uid` from `pod`.
async fn release(api: &Api<Pod>, pod: &Pod, uid: &str) -> Result<(), kube::Error> {
    let refs: Vec<_> = pod.metadata.owner_references.iter().flatten().filter(|o| o.uid != uid).cloned().collect();
    let refs = if refs.is_empty() { Value::Null } else { json!(refs) };
    let patch = json!({"metadata": {"ownerReferences": refs, "uid": pod.metadata.uid}});
    let name = pod.metadata.name.as_deref().unwrap_or("");
    match api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 || e.code == 422 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerState, ContainerStateTerminated, ContainerStatus, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    #[test]
    fn intervals_parse_merge_and_print_as_upstream() {
        let iv = Intervals::parse("0,2-4,6,7,9-20", 12);
        assert_eq!(iv.0, vec![(0, 0), (2, 4), (6, 7), (9, 11)]);
        assert_eq!(iv.to_string(), "0,2-4,6,7,9-11");
        assert_eq!(iv.total(), 1 + 3 + 2 + 3);
        let merged = iv.with([1, 5, 8]);
        assert_eq!(merged.to_string(), "0-11");
        assert!(merged.has(5) && !merged.has(12));
        assert_eq!(Intervals::parse("x,1,3-y,5", 10).to_string(), "1,5");
        assert_eq!(Intervals::default().with([3, 1, 2]).to_string(), "1-3");
        assert_eq!(Intervals::default().with([1, 2]).to_string(), "1,2");
    }

    #[test]
    fn first_missing_skips_done_and_busy_indexes() {
        let done = Intervals::parse("0,2-3", 10);
        assert_eq!(done.first_missing(3, 10), vec![1, 4, 5]);
        assert_eq!(done.with([1, 4]).first_missing(10, 7), vec![5, 6]);
        assert_eq!(Intervals::default().first_missing(2, 1), vec![0]);
    }

    #[test]
    fn long_job_names_are_cut_to_fit_the_index() {
        assert_eq!(indexed_prefix("pi", 3), "pi-3-");
        let long = "a".repeat(63);
        let p = indexed_prefix(&long, 12);
        assert_eq!(p.len(), MAX_GENERATED_NAME);
        assert!(p.ends_with("a-12-"));
    }

    fn failed_at(secs: i64) -> Pod {
        let t = DateTime::from_timestamp(secs, 0).unwrap();
        Pod {
            metadata: ObjectMeta::default(),
            spec: None,
            status: Some(PodStatus {
                phase: Some("Failed".into()),
                container_statuses: Some(vec![ContainerStatus {
                    name: "c".into(),
                    state: Some(ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            exit_code: 1,
                            finished_at: Some(Time(t)),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn pod_failure_backoff_doubles_and_resets_after_a_success() {
        let now = DateTime::from_timestamp(1000, 0).unwrap();
        let (f1, f2) = (failed_at(995), failed_at(998));
        assert_eq!(backoff_remaining(&[], &[&f1], now), Duration::from_secs(5));
        assert_eq!(backoff_remaining(&[], &[&f1, &f2], now), Duration::from_secs(18));
        let mut ok = failed_at(996);
        ok.status.as_mut().unwrap().phase = Some("Succeeded".into());
        assert_eq!(backoff_remaining(&[&ok], &[&f1, &f2], now), Duration::from_secs(8));
        assert_eq!(backoff_remaining(&[], &[], now), Duration::ZERO);
    }

    #[test]
    fn conditions_are_replaced_only_when_they_change() {
        let t = Time(DateTime::from_timestamp(1, 0).unwrap());
        let mut list = Vec::new();
        assert!(!ensure_condition(&mut list, "Suspended", "False", "JobResumed", "Job resumed", &t));
        assert!(ensure_condition(&mut list, "Suspended", "True", "JobSuspended", "Job suspended", &t));
        assert!(!ensure_condition(&mut list, "Suspended", "True", "JobSuspended", "Job suspended", &t));
        assert!(ensure_condition(&mut list, "Suspended", "False", "JobResumed", "Job resumed", &t));
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].status, "False");
    }
}
