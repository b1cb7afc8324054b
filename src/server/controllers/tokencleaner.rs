//! The tokencleaner controller: deletes bootstrap token Secrets (`bootstrap-token-<id>` in
//! kube-system) once their `expiration` has passed, as upstream's. The API server already
//! refuses an expired token; this keeps them from piling up.
//!
//! Invariant: it deletes expired bootstrap token Secrets (UID precondition), nothing else.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DeleteParams, Preconditions};
use tokio_util::sync::CancellationToken;

use super::Ctx;
use crate::runtime::informer::next_change;
use crate::runtime::queue::{Next, run_workers};
use crate::runtime::{Change, Informer, Key, WorkQueue};

const COMPONENT: &str = "tokencleaner";
const NAMESPACE: &str = "kube-system";
const TOKEN_TYPE: &str = "bootstrap.kubernetes.io/token";

pub async fn run(ctx: Arc<Ctx>, cancel: CancellationToken) {
    let secrets = ctx.informers.get::<Secret>();
    let mut changes = secrets.subscribe();
    secrets.synced().await;
    let queue = WorkQueue::<Key>::new();
    let consider = |queue: &WorkQueue<Key>, s: &Secret| {
        if is_token(s) {
            queue.add(Key::of(s));
        }
    };
    secrets.list().iter().for_each(|s| consider(&queue, s));
    let workers = {
        let (client, secrets) = (ctx.client.clone(), secrets.clone());
        tokio::spawn(run_workers(COMPONENT, queue.clone(), 1, cancel.clone(), move |key: Key| {
            let (client, secrets) = (client.clone(), secrets.clone());
            async move { process(&client, &secrets, &key).await }
        }))
    };
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            ch = next_change(&mut changes) => match ch {
                Some(Change::Applied(s)) => consider(&queue, &s),
                Some(Change::Deleted(_)) => {}
                Some(Change::Resync) => secrets.list().iter().for_each(|s| consider(&queue, s)),
                None => break,
            },
        }
    }
    let _ = workers.await;
}

fn is_token(s: &Secret) -> bool {
    s.metadata.namespace.as_deref() == Some(NAMESPACE) && s.type_.as_deref() == Some(TOKEN_TYPE)
}

/// How long until the token expires (zero once it has); None without a (valid) expiration,
/// which upstream treats as expired too.
pub fn time_left(s: &Secret, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let raw = s.data.as_ref()?.get("expiration")?;
    let text = std::str::from_utf8(&raw.0).ok();
    match text.and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()) {
        Some(t) => Some((t.with_timezone(&chrono::Utc) - now).to_std().unwrap_or(Duration::ZERO)),
        None => Some(Duration::ZERO),
    }
}

async fn process(client: &kube::Client, secrets: &Informer<Secret>, key: &Key) -> Result<Next, kube::Error> {
    let Some(s) = secrets.get(&key.namespace, &key.name) else { return Ok(Next::Done) };
    if !is_token(&s) {
        return Ok(Next::Done);
    }
    match time_left(&s, chrono::Utc::now()) {
        None => return Ok(Next::Done),
        // A little past the expiration, so the API server has refused the token by then.
        Some(left) if !left.is_zero() => return Ok(Next::After(left + Duration::from_millis(100))),
        Some(_) => {}
    }
    let api: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    let dp = DeleteParams {
        preconditions: Some(Preconditions { uid: s.metadata.uid.clone(), resource_version: None }),
        ..Default::default()
    };
    tracing::info!(secret = %key.name, "deleting expired bootstrap token");
    match api.delete(&key.name, &dp).await {
        Ok(_) => Ok(Next::Done),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(Next::Done),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    #[test]
    fn expiry_read_as_upstream() {
        let now = chrono::Utc::now();
        let mut s = Secret { type_: Some(TOKEN_TYPE.into()), ..Default::default() };
        assert_eq!(time_left(&s, now), None, "no data, no expiration");
        let at = (now + chrono::Duration::seconds(30)).to_rfc3339();
        s.data = Some([("expiration".to_string(), ByteString(at.into_bytes()))].into());
        let left = time_left(&s, now).unwrap();
        assert!(left > Duration::from_secs(29) && left <= Duration::from_secs(30), "{left:?}");
        s.data = Some([("expiration".to_string(), ByteString(b"tomorrow".to_vec()))].into());
        assert_eq!(time_left(&s, now), Some(Duration::ZERO), "unparsable means expired");
    }
}
