//! Leader election through a `coordination.k8s.io/v1` Lease, as upstream's `leaderelection`:
//! the holder renews the Lease every [`RETRY`]; another candidate takes it over only after it
//! went unrenewed for [`LEASE_DURATION`]. A holder that cannot renew within [`RENEW_DEADLINE`]
//! stops acting before anyone else can start.

use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

/// How long a Lease stays valid without renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How long a holder keeps trying to renew before it gives up leadership.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// Time between attempts to acquire or renew.
pub const RETRY: Duration = Duration::from_secs(2);

/// A candidate for the Lease `kube-system/<name>`.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
}

impl Elector {
    pub fn new(client: Client, name: &str, identity: &str) -> Elector {
        Elector { api: Api::namespaced(client, "kube-system"), name: name.to_string(), identity: identity.to_string() }
    }

    /// Runs `lead` whenever this candidate holds the Lease, cancelling the token it was given
    /// when leadership is lost, until `cancel` fires.
    pub async fn run<F, Fut>(self, cancel: CancellationToken, lead: F)
    where
        F: Fn(CancellationToken) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        loop {
            // Acquire.
            loop {
                match self.try_acquire_or_renew().await {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(e) => tracing::debug!(lease = %self.name, error = %e, "cannot acquire the lease"),
                }
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(RETRY) => {}
                }
            }
            tracing::info!(lease = %self.name, identity = %self.identity, "became leader");
            let term = cancel.child_token();
            let running = tokio::spawn(lead(term.clone()));
            // Renew until cancelled or the deadline passes.
            let mut last_renew = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => {
                        term.cancel();
                        let _ = running.await;
                        self.release().await;
                        return;
                    }
                    _ = tokio::time::sleep(RETRY) => {}
                }
                match self.try_acquire_or_renew().await {
                    Ok(true) => last_renew = tokio::time::Instant::now(),
                    Ok(false) => break,
                    Err(e) => tracing::debug!(lease = %self.name, error = %e, "cannot renew the lease"),
                }
                if last_renew.elapsed() > RENEW_DEADLINE {
                    break;
                }
            }
            tracing::warn!(lease = %self.name, "lost leadership; stopping");
            term.cancel();
            let _ = running.await;
        }
    }

    /// Takes or renews the Lease; `Ok(false)` when another holder's Lease is still valid.
    async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Utc::now();
        let duration_secs = LEASE_DURATION.as_secs() as i32;
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..Default::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(duration_secs),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let mine = holder == self.identity;
        if !mine && !holder.is_empty() {
            let valid_for = chrono::Duration::seconds(spec.lease_duration_seconds.unwrap_or(duration_secs) as i64);
            let renewed = spec.renew_time.as_ref().map(|t| t.0).unwrap_or_default();
            if renewed + valid_for > now {
                return Ok(false);
            }
        }
        if !mine {
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.holder_identity = Some(self.identity.clone());
        spec.lease_duration_seconds = Some(duration_secs);
        spec.renew_time = Some(MicroTime(now));
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up on shutdown so a successor need not wait for it to expire.
    async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else { return };
        let Some(spec) = lease.spec.as_mut() else { return };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        let _ = self.api.replace(&self.name, &PostParams::default(), &lease).await;
    }
}
