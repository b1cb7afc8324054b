//! The ttl-after-finished controller: deletes a finished Job `ttlSecondsAfterFinished`
//! seconds after it finished (its `Complete` or `Failed` condition's transition time), as
//! upstream's (`pkg/controller/ttlafterfinished`).
//!
//! A Job whose TTL has not expired is looked at again when it will have. Before deleting, the
//! Job is read again from the API (the TTL may have just been changed) and deleted with a UID
//! precondition and `Foreground` propagation, as upstream: the Job stays, being deleted, until
//! the garbage collector has deleted its pods.
//!
//! Invariant: it deletes finished Jobs that ask for it, nothing else.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::batch::v1::Job;
use kube::Api;
use kube::api::{DeleteParams, Preconditions, PropagationPolicy};
use tokio_util::sync::CancellationToken;

use super::Ctx;
use super::job::finished_at;
use crate::runtime::informer::next_change;
use crate::runtime::queue::{Next, run_workers};
use crate::runtime::{Change, Informer, Key, WorkQueue};

const COMPONENT: &str = "ttl-after-finished-controller";

pub async fn run(ctx: Arc<Ctx>, cancel: CancellationToken) {
    let jobs = ctx.informers.get::<Job>();
    let mut changes = jobs.subscribe();
    jobs.synced().await;
    let queue = WorkQueue::<Key>::new();
    let consider = |queue: &WorkQueue<Key>, j: &Job| {
        if needs_cleanup(j) {
            queue.add(Key::of(j));
        }
    };
    for j in jobs.list() {
        consider(&queue, &j);
    }
    let workers = {
        let (client, jobs) = (ctx.client.clone(), jobs.clone());
        tokio::spawn(run_workers(COMPONENT, queue.clone(), 2, cancel.clone(), move |key: Key| {
            let (client, jobs) = (client.clone(), jobs.clone());
            async move { process(&client, &jobs, &key).await }
        }))
    };
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            ch = next_change(&mut changes) => match ch {
                Some(Change::Applied(j)) => consider(&queue, &j),
                Some(Change::Deleted(_)) => {}
                Some(Change::Resync) => jobs.list().iter().for_each(|j| consider(&queue, j)),
                None => break,
            },
        }
    }
    let _ = workers.await;
}

/// Finished, with a TTL, and not already being deleted.
fn needs_cleanup(job: &Job) -> bool {
    job.metadata.deletion_timestamp.is_none()
        && job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished).is_some()
        && finished_at(job).is_some()
}

/// How long until the TTL expires (zero once it has); `None` when the Job needs no cleanup.
fn time_left(job: &Job) -> Option<Duration> {
    if !needs_cleanup(job) {
        return None;
    }
    let ttl = job.spec.as_ref()?.ttl_seconds_after_finished?;
    let expires = finished_at(job)? + chrono::Duration::seconds(i64::from(ttl));
    Some((expires - Utc::now()).to_std().unwrap_or(Duration::ZERO))
}

async fn process(client: &kube::Client, jobs: &Informer<Job>, key: &Key) -> Result<Next, kube::Error> {
    let Some(job) = jobs.get(&key.namespace, &key.name) else { return Ok(Next::Done) };
    match time_left(&job) {
        None => return Ok(Next::Done),
        Some(left) if !left.is_zero() => return Ok(Next::After(left)),
        Some(_) => {}
    }
    // The cached TTL may be stale: decide on a fresh read.
    let api: Api<Job> = Api::namespaced(client.clone(), &key.namespace);
    let Some(fresh) = api.get_opt(&key.name).await? else { return Ok(Next::Done) };
    match time_left(&fresh) {
        None => return Ok(Next::Done),
        Some(left) if !left.is_zero() => return Ok(Next::After(left)),
        Some(_) => {}
    }
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        preconditions: Some(Preconditions { uid: fresh.metadata.uid.clone(), resource_version: None }),
        ..Default::default()
    };
    tracing::debug!(job = %key, "cleaning up finished Job");
    match api.delete(&key.name, &dp).await {
        Ok(_) => Ok(Next::Done),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(Next::Done),
        Err(e) => Err(e),
    }
}
