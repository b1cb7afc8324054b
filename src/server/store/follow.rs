//! Following a key prefix: load everything under it, then apply its changes as they commit,
//! starting over with a fresh load whenever the watch ends (a watcher that fell behind, a
//! compaction). The in-memory indexes the API server keeps beside the store (RBAC, the node
//! authorizer's graph) are built this way.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Datastore, EventKind, KeyValue};

/// What a follower does with what it reads.
pub trait Follower: Send {
    /// Replaces everything known under the prefix with `kvs`, read at `revision`.
    fn reset(&mut self, kvs: &[KeyValue], revision: u64);
    /// Applies one change committed at `revision` (`deleted`: `kv` is the removed key).
    fn apply(&mut self, kv: &KeyValue, deleted: bool, revision: u64);
}

/// Follows `prefix` into `follower` until `cancel` fires; `what` names it in logs.
pub async fn follow(
    store: Arc<dyn Datastore>,
    prefix: &str,
    what: &str,
    follower: &mut dyn Follower,
    cancel: CancellationToken,
) {
    let retry = || async {
        tokio::select! {
            _ = cancel.cancelled() => false,
            _ = tokio::time::sleep(Duration::from_secs(1)) => true,
        }
    };
    loop {
        let start = match store.range(prefix, None, 0, None).await {
            Ok(r) => {
                follower.reset(&r.kvs, r.revision);
                r.revision
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot load {what}; retrying");
                if retry().await {
                    continue;
                }
                return;
            }
        };
        let mut watch = match store.watch(prefix, start).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch {what}; retrying");
                if retry().await {
                    continue;
                }
                return;
            }
        };
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                ev = watch.next() => match ev {
                    Some(Ok(ev)) => follower.apply(&ev.kv, ev.kind == EventKind::Deleted, ev.revision),
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "the watch of {what} ended; reloading");
                        break;
                    }
                    None => return,
                }
            }
        }
    }
}
