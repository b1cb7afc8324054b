//! The cronjob controller: creates a Job from a CronJob's template at each time its schedule
//! names, as upstream's (kube-controller-manager 1.32, `cronjob_controllerv2.go`).
//!
//! A pass over a CronJob ([`Controller::reconcile`]):
//! 1. deletes its oldest finished Jobs beyond `successfulJobsHistoryLimit` and
//!    `failedJobsHistoryLimit` (oldest by `status.startTime`);
//! 2. reconciles `status.active` with its Jobs (finished ones leave it, vanished ones too) and
//!    `status.lastSuccessfulTime` with their completion times;
//! 3. unless suspended or being deleted, finds the most recent schedule time not yet run
//!    (since `lastScheduleTime`, else the CronJob's creation, and not before
//!    `now - startingDeadlineSeconds`); a time missed by more than the deadline is skipped
//!    (`MissSchedule`), more than 100 missed times warn (`TooManyMissedTimes`);
//! 4. applies `concurrencyPolicy` (`Forbid` skips while a Job is active, `Replace` deletes the
//!    active ones first) and creates `<cronjob>-<scheduled time in minutes since the epoch>`
//!    with the `batch.kubernetes.io/cronjob-scheduled-timestamp` annotation; the name makes
//!    a second create for the same time fail, so no time runs twice;
//! 5. writes `status` (resourceVersion as a precondition) and comes back 100 ms after the next
//!    schedule time.
//!
//! Schedules are read by [`crate::api::cron`] in `spec.timeZone`. Without one, upstream uses
//! the controller manager's local time zone; skiff uses UTC, whatever the host's zone is.
//!
//! Invariant: it writes Jobs it owns and CronJob status, nothing else.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, PropagationPolicy};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::Ctx;
use super::job::finished;
use super::pods::{controller_of, controller_ref};
use crate::api::cron::{Schedule, parse_time_zone};
use crate::runtime::events::{EventType, Recorder, object_ref};
use crate::runtime::informer::next_change;
use crate::runtime::queue::{Next, run_workers};
use crate::runtime::{Change, Informer, Key, WorkQueue};

const COMPONENT: &str = "cronjob-controller";
/// Annotation with the time a Job was scheduled for (RFC 3339, in the CronJob's time zone).
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// Padding after the next schedule time before looking again (clock skew).
const NEXT_SCHEDULE_DELTA: Duration = Duration::from_millis(100);
/// More missed schedule times than this only warn.
const TOO_MANY_MISSED: i64 = 100;

struct Controller {
    client: kube::Client,
    cronjobs: Arc<Informer<CronJob>>,
    jobs: Arc<Informer<Job>>,
    recorder: Recorder,
}

pub async fn run(ctx: Arc<Ctx>, cancel: CancellationToken) {
    let cronjobs = ctx.informers.get::<CronJob>();
    let jobs = ctx.informers.get::<Job>();
    let mut cj_changes = cronjobs.subscribe();
    let mut job_changes = jobs.subscribe();
    cronjobs.synced().await;
    jobs.synced().await;
    let c = Arc::new(Controller { client: ctx.client.clone(), cronjobs, jobs, recorder: ctx.recorder(COMPONENT) });
    let queue = WorkQueue::<Key>::new();
    let all = |queue: &WorkQueue<Key>| c.cronjobs.list().iter().for_each(|cj| queue.add(Key::of(cj.as_ref())));
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
            ch = next_change(&mut cj_changes) => match ch {
                Some(Change::Applied(cj)) | Some(Change::Deleted(cj)) => queue.add(Key::of(cj.as_ref())),
                Some(Change::Resync) => all(&queue),
                None => break,
            },
            ch = next_change(&mut job_changes) => match ch {
                Some(Change::Applied(j)) | Some(Change::Deleted(j)) => {
                    let ns = j.metadata.namespace.as_deref().unwrap_or("");
                    if let Some(r) = controller_ref(&j.metadata).filter(|r| r.kind == "CronJob")
                        && c.cronjobs.get(ns, &r.name).is_some_and(|cj| cj.metadata.uid.as_deref() == Some(r.uid.as_str()))
                    {
                        queue.add(Key::new(ns, &r.name));
                    }
                }
                Some(Change::Resync) => all(&queue),
                None => break,
            },
        }
    }
    let _ = workers.await;
}

// ---- schedule arithmetic (upstream's utils.go) ----

/// How many schedule times were missed since the last one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Missed {
    None,
    Few,
    Many,
}

fn next(s: &Schedule, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    s.next_after(t.with_timezone(&Tz::UTC)).map(|t| t.with_timezone(&Utc))
}

/// The earliest time considered, the most recent schedule time due, and how many were missed.
type Recent = (DateTime<Utc>, Option<DateTime<Utc>>, Missed);

/// Upstream's `mostRecentScheduleTime`: the earliest time considered (last schedule time or
/// creation, moved up to `now - startingDeadlineSeconds` when `with_deadline`), the most recent
/// schedule time at or before `now` after it, and how many were missed.
fn most_recent(
    cj: &CronJob,
    status: &CronJobStatus,
    now: DateTime<Utc>,
    sched: &Schedule,
    with_deadline: bool,
) -> Result<Recent, String> {
    let created = cj.metadata.creation_timestamp.as_ref().map(|t| t.0).unwrap_or(now);
    let mut earliest = status.last_schedule_time.as_ref().map(|t| t.0).unwrap_or(created);
    if let Some(sds) = cj.spec.as_ref().and_then(|s| s.starting_deadline_seconds).filter(|_| with_deadline) {
        let deadline = now - chrono::Duration::seconds(sds);
        if deadline > earliest {
            earliest = deadline;
        }
    }
    let Some(t1) = next(sched, earliest) else { return Ok((earliest, None, Missed::None)) };
    if now < t1 {
        return Ok((earliest, None, Missed::None));
    }
    let Some(t2) = next(sched, t1) else { return Ok((earliest, Some(t1), Missed::None)) };
    if now < t2 {
        return Ok((earliest, Some(t1), Missed::None));
    }
    // Edge case: a schedule that parses but cannot repeat sensibly.
    let between = (t2 - t1).num_seconds();
    if between < 1 {
        return Err("time difference between two schedules is less than 1 second".into());
    }
    // A rough count of the times missed, then the most recent one from just before it.
    let missed = (now - t1).num_seconds() / between + 1;
    let mut t = t1 + chrono::Duration::seconds((missed - 2) * between);
    let mut recent = None;
    while let Some(n) = next(sched, t).filter(|n| *n <= now) {
        recent = Some(n);
        t = n;
    }
    let kind = match missed {
        n if n > TOO_MANY_MISSED => Missed::Many,
        n if n > 0 => Missed::Few,
        _ => Missed::None,
    };
    Ok((earliest, recent, kind))
}

/// How long until 100 ms after the next schedule time (upstream's `nextScheduleTimeDuration`).
fn next_schedule_in(cj: &CronJob, status: &CronJobStatus, now: DateTime<Utc>, sched: &Schedule) -> Option<Duration> {
    let base = match most_recent(cj, status, now, sched, false) {
        Err(_) => now,
        Ok((_, Some(t), _)) => t,
        Ok((earliest, None, Missed::None)) => earliest,
        Ok((_, None, _)) => now,
    };
    let at = next(sched, base)?;
    Some((at - now).to_std().unwrap_or(Duration::ZERO) + NEXT_SCHEDULE_DELTA)
}

/// The schedule as the controller parses it: `TZ=<timeZone> ` in front when the CronJob names
/// a valid time zone (a `TZ=` in the schedule itself wins, with a warning).
fn format_schedule(cj: &CronJob, recorder: Option<&Recorder>) -> String {
    let spec = cj.spec.clone().unwrap_or_default();
    if spec.schedule.contains("TZ") {
        if let Some(r) = recorder {
            r.record(
                cj,
                EventType::Warning,
                "UnsupportedSchedule",
                format!(
                    "CRON_TZ or TZ used in schedule {:?} is not officially supported, see https://kubernetes.io/docs/concepts/workloads/controllers/cron-jobs/ for more details",
                    spec.schedule
                ),
            );
        }
        return spec.schedule;
    }
    match spec.time_zone {
        Some(tz) if parse_time_zone(&tz).is_ok() => format!("TZ={tz} {}", spec.schedule),
        _ => spec.schedule,
    }
}

/// `<cronjob>-<minutes since the epoch>`.
fn job_name(cj: &CronJob, scheduled: DateTime<Utc>) -> String {
    format!("{}-{}", cj.metadata.name.as_deref().unwrap_or(""), scheduled.timestamp().div_euclid(60))
}

/// The Job to create for `scheduled` (upstream's `getJobFromTemplate2`).
fn job_from_template(cj: &CronJob, scheduled: DateTime<Utc>) -> Result<Job, String> {
    let spec = cj.spec.clone().unwrap_or_default();
    let tmeta = spec.job_template.metadata.clone().unwrap_or_default();
    let tz = parse_time_zone(spec.time_zone.as_deref().unwrap_or("")).map_err(|e| e.to_string())?;
    let mut annotations = tmeta.annotations.unwrap_or_default();
    annotations
        .insert(SCHEDULED_TIMESTAMP.into(), scheduled.with_timezone(&tz).to_rfc3339_opts(SecondsFormat::Secs, true));
    Ok(Job {
        metadata: ObjectMeta {
            name: Some(job_name(cj, scheduled)),
            namespace: cj.metadata.namespace.clone(),
            labels: tmeta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![controller_of(cj)]),
            ..Default::default()
        },
        spec: spec.job_template.spec,
        status: None,
    })
}

fn in_active(status: &CronJobStatus, uid: &str) -> bool {
    status.active.iter().flatten().any(|r| r.uid.as_deref() == Some(uid))
}

fn remove_active(status: &mut CronJobStatus, uid: &str) {
    if let Some(a) = status.active.as_mut() {
        a.retain(|r| r.uid.as_deref() != Some(uid));
    }
}

fn succeeded(job: &Job) -> bool {
    finished(job) == Some("Complete")
}

impl Controller {
    async fn reconcile(&self, key: &Key) -> Result<Next, kube::Error> {
        let Some(cj) = self.cronjobs.get(&key.namespace, &key.name) else { return Ok(Next::Done) };
        let uid = cj.metadata.uid.clone().unwrap_or_default();
        let mut jobs: Vec<Arc<Job>> = self.jobs.controlled_by(&uid);
        jobs.retain(|j| j.metadata.namespace == cj.metadata.namespace);
        let mut cj = cj.as_ref().clone();
        let mut status = cj.status.clone().unwrap_or_default();

        let cleaned = self.cleanup_finished(&cj, &mut status, &jobs).await;
        let (requeue, synced, err) = match self.sync(&mut cj, &mut status, &jobs).await {
            Ok((requeue, update)) => (requeue, update, None),
            Err((update, e)) => {
                tracing::debug!(cronjob = %key, error = %e, "cannot reconcile cronjob");
                (None, update, Some(e))
            }
        };
        if cleaned || synced {
            let api: Api<CronJob> = Api::namespaced(self.client.clone(), &key.namespace);
            let active = status.active.clone().filter(|a| !a.is_empty());
            let patch = json!({
                "metadata": {"resourceVersion": cj.metadata.resource_version},
                "status": {
                    "active": active,
                    "lastScheduleTime": status.last_schedule_time,
                    "lastSuccessfulTime": status.last_successful_time,
                },
            });
            match api.patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => return Ok(Next::Done),
                Err(e) => return Err(e),
            }
        }
        match (requeue, err) {
            (Some(d), _) => Ok(Next::After(d)),
            (None, Some(e)) => Err(e),
            (None, None) => Ok(Next::Done),
        }
    }

    /// Deletes the oldest finished Jobs beyond the history limits; whether `status` changed.
    async fn cleanup_finished(&self, cj: &CronJob, status: &mut CronJobStatus, jobs: &[Arc<Job>]) -> bool {
        let spec = cj.spec.clone().unwrap_or_default();
        let mut changed = false;
        for (kind, limit) in
            [("Complete", spec.successful_jobs_history_limit), ("Failed", spec.failed_jobs_history_limit)]
        {
            let Some(limit) = limit else { continue };
            let mut done: Vec<&Arc<Job>> = jobs.iter().filter(|j| finished(j) == Some(kind)).collect();
            let extra = done.len().saturating_sub(limit.max(0) as usize);
            if extra == 0 {
                continue;
            }
            // Oldest first by start time; Jobs that never started last; names break ties.
            done.sort_by(|a, b| {
                let start = |j: &Job| j.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0);
                match (start(a), start(b)) {
                    (Some(x), Some(y)) => x.cmp(&y).then_with(|| a.metadata.name.cmp(&b.metadata.name)),
                    (Some(_), None) => std::cmp::Ordering::Less,
                    (None, Some(_)) => std::cmp::Ordering::Greater,
                    (None, None) => a.metadata.name.cmp(&b.metadata.name),
                }
            });
            for j in done.into_iter().take(extra) {
                if self.delete_job(cj, status, j).await {
                    changed = true;
                }
            }
        }
        changed
    }

    /// Deletes a Job of `cj` (pods in the background) and drops it from `status.active`.
    async fn delete_job(&self, cj: &CronJob, status: &mut CronJobStatus, job: &Job) -> bool {
        let api: Api<Job> = Api::namespaced(self.client.clone(), job.metadata.namespace.as_deref().unwrap_or(""));
        let name = job.metadata.name.clone().unwrap_or_default();
        let dp = DeleteParams { propagation_policy: Some(PropagationPolicy::Background), ..Default::default() };
        match api.delete(&name, &dp).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => {
                self.recorder.record(cj, EventType::Warning, "FailedDelete", format!("Deleted job: {e}"));
                return false;
            }
        }
        remove_active(status, job.metadata.uid.as_deref().unwrap_or(""));
        self.recorder.record(cj, EventType::Normal, "SuccessfulDelete", format!("Deleted job {name}"));
        true
    }

    /// Upstream's `syncCronJob`: `Ok((requeue, status changed))`, or the error with whether
    /// status changed before it.
    async fn sync(
        &self,
        cj: &mut CronJob,
        status: &mut CronJobStatus,
        jobs: &[Arc<Job>],
    ) -> Result<(Option<Duration>, bool), (bool, kube::Error)> {
        let now = Utc::now();
        let mut update = false;
        let ns = cj.metadata.namespace.clone().unwrap_or_default();
        let job_api: Api<Job> = Api::namespaced(self.client.clone(), &ns);
        let cj_api: Api<CronJob> = Api::namespaced(self.client.clone(), &ns);
        let name = cj.metadata.name.clone().unwrap_or_default();

        let mut children: HashSet<String> = HashSet::new();
        for j in jobs {
            let juid = j.metadata.uid.clone().unwrap_or_default();
            children.insert(juid.clone());
            let found = in_active(status, &juid);
            let jname = j.metadata.name.clone().unwrap_or_default();
            if !found && finished(j).is_none() {
                // Maybe our own status write is not in the cache yet: look at the real thing.
                let fresh = cj_api.get_opt(&name).await.map_err(|e| (update, e))?;
                if let Some(fresh) = fresh {
                    let fresh_status = fresh.status.clone().unwrap_or_default();
                    if in_active(&fresh_status, &juid) {
                        *cj = fresh;
                        *status = fresh_status;
                        continue;
                    }
                }
                self.recorder.record(
                    &*cj,
                    EventType::Warning,
                    "UnexpectedJob",
                    format!("Saw a job that the controller did not create or forgot: {jname}"),
                );
            } else if found && finished(j).is_some() {
                remove_active(status, &juid);
                let how = finished(j).unwrap_or_default();
                self.recorder.record(
                    &*cj,
                    EventType::Normal,
                    "SawCompletedJob",
                    format!("Saw completed job: {jname}, status: {how}"),
                );
                update = true;
            } else if succeeded(j) {
                // A Job need not be active to count: any success moves lastSuccessfulTime.
                let done = j.status.as_ref().and_then(|s| s.completion_time.clone());
                if status.last_successful_time.is_none() {
                    status.last_successful_time = done.clone();
                    update = true;
                }
                if let (Some(d), Some(last)) = (&done, &status.last_successful_time)
                    && d.0 > last.0
                {
                    status.last_successful_time = done.clone();
                    update = true;
                }
            }
        }

        // Active Jobs that are gone (read for real: the cache may lag) leave the list.
        let listed: Vec<ObjectReference> = status.active.clone().unwrap_or_default();
        for r in listed {
            if children.contains(r.uid.as_deref().unwrap_or("")) {
                continue;
            }
            let rname = r.name.clone().unwrap_or_default();
            let api: Api<Job> = Api::namespaced(self.client.clone(), r.namespace.as_deref().unwrap_or(&ns));
            match api.get_opt(&rname).await {
                Ok(None) => {
                    self.recorder.record(
                        &*cj,
                        EventType::Normal,
                        "MissingJob",
                        format!("Active job went missing: {rname}"),
                    );
                    remove_active(status, r.uid.as_deref().unwrap_or(""));
                    update = true;
                }
                Ok(Some(_)) => {}
                Err(e) => return Err((update, e)),
            }
        }

        if cj.metadata.deletion_timestamp.is_some() {
            return Ok((None, update));
        }
        let spec = cj.spec.clone().unwrap_or_default();
        if let Some(tz) = &spec.time_zone
            && let Err(e) = parse_time_zone(tz)
        {
            self.recorder.record(&*cj, EventType::Warning, "UnknownTimeZone", format!("invalid timeZone: {tz:?}: {e}"));
            return Ok((None, update));
        }
        if spec.suspend == Some(true) {
            return Ok((None, update));
        }
        let sched = match Schedule::parse(&format_schedule(cj, Some(&self.recorder))) {
            Ok(s) => s,
            Err(e) => {
                self.recorder.record(
                    &*cj,
                    EventType::Warning,
                    "UnparseableSchedule",
                    format!("unparseable schedule: {:?} : {e}", spec.schedule),
                );
                return Ok((None, update));
            }
        };
        let scheduled = match most_recent(cj, status, now, &sched, true) {
            Err(e) => {
                self.recorder.record(
                    &*cj,
                    EventType::Warning,
                    "InvalidSchedule",
                    format!("invalid schedule: {} : {e}", spec.schedule),
                );
                return Ok((None, update));
            }
            Ok((_, None, _)) => {
                // No unmet start time: come back at the next one.
                return Ok((next_schedule_in(cj, status, now, &sched), update));
            }
            Ok((_, Some(t), missed)) => {
                if missed == Missed::Many {
                    self.recorder.record(
                        &*cj,
                        EventType::Warning,
                        "TooManyMissedTimes",
                        "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew"
                            .into(),
                    );
                }
                t
            }
        };
        let next_in = |status: &CronJobStatus| next_schedule_in(cj, status, now, &sched);
        if let Some(sds) = spec.starting_deadline_seconds
            && scheduled + chrono::Duration::seconds(sds) < now
        {
            self.recorder.record(
                &*cj,
                EventType::Warning,
                "MissSchedule",
                format!("Missed scheduled time to start a job: {}", scheduled.format("%a, %d %b %Y %H:%M:%S %z")),
            );
            return Ok((next_in(status), update));
        }
        let jname = job_name(cj, scheduled);
        let taken = status
            .active
            .iter()
            .flatten()
            .any(|r| r.name.as_deref() == Some(&jname) && r.namespace.as_deref() == Some(&ns));
        if taken || status.last_schedule_time.as_ref().is_some_and(|t| t.0 == scheduled) {
            return Ok((next_in(status), update));
        }
        let active_now = status.active.as_ref().is_some_and(|a| !a.is_empty());
        match spec.concurrency_policy.as_deref() {
            Some("Forbid") if active_now => {
                self.recorder.record(
                    &*cj,
                    EventType::Normal,
                    "JobAlreadyActive",
                    "Not starting job because prior execution is running and concurrency policy is Forbid".into(),
                );
                return Ok((next_in(status), update));
            }
            Some("Replace") => {
                for r in status.active.clone().unwrap_or_default() {
                    let rname = r.name.clone().unwrap_or_default();
                    let job = match job_api.get(&rname).await {
                        Ok(j) => j,
                        Err(e) => {
                            self.recorder.record(&*cj, EventType::Warning, "FailedGet", format!("Get job: {e}"));
                            return Err((update, e));
                        }
                    };
                    if !self.delete_job(cj, status, &job).await {
                        let e = kube::Error::Service(format!("could not replace job {ns}/{rname}").into());
                        return Err((update, e));
                    }
                    update = true;
                }
            }
            _ => {}
        }

        let req = match job_from_template(cj, scheduled) {
            Ok(j) => j,
            Err(e) => {
                tracing::debug!(cronjob = %name, error = %e, "cannot make a Job from the template");
                return Err((update, kube::Error::Service(e.into())));
            }
        };
        let job = match job_api.create(&PostParams::default(), &req).await {
            Ok(j) => {
                let jn = j.metadata.name.clone().unwrap_or_default();
                self.recorder.record(&*cj, EventType::Normal, "SuccessfulCreate", format!("Created job {jn}"));
                j
            }
            Err(kube::Error::Api(e)) if e.code == 409 && e.reason == "AlreadyExists" => {
                // Created by an earlier pass that could not record it, or by someone else.
                let j = job_api.get(&jname).await.map_err(|e| (update, e))?;
                let ours =
                    controller_ref(&j.metadata).is_some_and(|r| r.uid == cj.metadata.uid.clone().unwrap_or_default());
                if !ours || in_active(status, j.metadata.uid.as_deref().unwrap_or("")) {
                    return Ok((None, update));
                }
                j
            }
            Err(e) => {
                let msg = match &e {
                    kube::Error::Api(s) => s.message.clone(),
                    other => other.to_string(),
                };
                self.recorder.record(&*cj, EventType::Warning, "FailedCreate", format!("Error creating job: {msg}"));
                return Err((update, e));
            }
        };
        status.active.get_or_insert_with(Vec::new).push(object_ref(&job));
        status.last_schedule_time = Some(Time(scheduled));
        Ok((next_in(status), true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::CronJobSpec;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn cronjob(schedule: &str, created: &str, last: Option<&str>, sds: Option<i64>) -> (CronJob, CronJobStatus) {
        let cj = CronJob {
            metadata: ObjectMeta {
                name: Some("cj".into()),
                creation_timestamp: Some(Time(at(created))),
                ..Default::default()
            },
            spec: Some(CronJobSpec { schedule: schedule.into(), starting_deadline_seconds: sds, ..Default::default() }),
            status: None,
        };
        let status = CronJobStatus { last_schedule_time: last.map(|l| Time(at(l))), ..Default::default() };
        (cj, status)
    }

    #[test]
    fn most_recent_time_and_missed_count_as_upstream() {
        let s = Schedule::parse("*/1 * * * *").unwrap();
        let (cj, st) = cronjob("*/1 * * * *", "2024-01-01T10:00:30Z", None, None);
        // Not yet due.
        assert_eq!(
            most_recent(&cj, &st, at("2024-01-01T10:00:45Z"), &s, true),
            Ok((at("2024-01-01T10:00:30Z"), None, Missed::None))
        );
        // One due.
        let (_, t, m) = most_recent(&cj, &st, at("2024-01-01T10:01:10Z"), &s, true).unwrap();
        assert_eq!((t, m), (Some(at("2024-01-01T10:01:00Z")), Missed::None));
        // Several missed: the most recent one is run.
        let (_, t, m) = most_recent(&cj, &st, at("2024-01-01T10:05:10Z"), &s, true).unwrap();
        assert_eq!((t, m), (Some(at("2024-01-01T10:05:00Z")), Missed::Few));
        // Over a hundred missed.
        let (_, t, m) = most_recent(&cj, &st, at("2024-01-01T13:00:10Z"), &s, true).unwrap();
        assert_eq!((t, m), (Some(at("2024-01-01T13:00:00Z")), Missed::Many));
        // The starting deadline moves the earliest time up.
        let (cj, st) = cronjob("*/1 * * * *", "2024-01-01T10:00:30Z", None, Some(30));
        let (_, t, m) = most_recent(&cj, &st, at("2024-01-01T13:00:10Z"), &s, true).unwrap();
        assert_eq!((t, m), (Some(at("2024-01-01T13:00:00Z")), Missed::None));
    }

    #[test]
    fn requeue_lands_just_after_the_next_time() {
        let s = Schedule::parse("0 * * * *").unwrap();
        let (cj, st) = cronjob("0 * * * *", "2024-01-01T10:20:00Z", Some("2024-01-01T10:00:00Z"), None);
        let d = next_schedule_in(&cj, &st, at("2024-01-01T10:30:00Z"), &s).unwrap();
        assert_eq!(d, Duration::from_secs(30 * 60) + NEXT_SCHEDULE_DELTA);
    }

    #[test]
    fn jobs_are_named_by_minute_and_annotated_in_the_time_zone() {
        let (mut cj, _) = cronjob("0 * * * *", "2024-01-01T10:00:00Z", None, None);
        let t = at("2024-01-01T11:00:00Z");
        let j = job_from_template(&cj, t).unwrap();
        assert_eq!(j.metadata.name.as_deref(), Some(format!("cj-{}", t.timestamp() / 60).as_str()));
        assert_eq!(j.metadata.annotations.unwrap()[SCHEDULED_TIMESTAMP], "2024-01-01T11:00:00Z");
        cj.spec.as_mut().unwrap().time_zone = Some("Europe/Berlin".into());
        let j = job_from_template(&cj, t).unwrap();
        assert_eq!(j.metadata.annotations.unwrap()[SCHEDULED_TIMESTAMP], "2024-01-01T12:00:00+01:00");
        assert_eq!(format_schedule(&cj, None), "TZ=Europe/Berlin 0 * * * *");
    }
}
