//! A work queue of keys, as upstream's `workqueue`: a key waiting is stored once however often
//! it is added, a key is handed to one worker at a time, and a key added while being worked on
//! is handed out again when that worker is done. Failed keys come back with exponential backoff.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// First retry delay of a failing key.
const BASE_DELAY: Duration = Duration::from_millis(5);
/// Longest retry delay of a failing key.
const MAX_DELAY: Duration = Duration::from_secs(300);

struct State<T> {
    queue: VecDeque<T>,
    dirty: HashSet<T>,
    processing: HashSet<T>,
    failures: HashMap<T, u32>,
}

/// Keys waiting to be reconciled.
pub struct WorkQueue<T> {
    state: Mutex<State<T>>,
    ready: Notify,
}

impl<T: Hash + Eq + Clone + Send + Sync + 'static> WorkQueue<T> {
    pub fn new() -> Arc<Self> {
        Arc::new(WorkQueue {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                dirty: HashSet::new(),
                processing: HashSet::new(),
                failures: HashMap::new(),
            }),
            ready: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `key` unless it is already waiting.
    pub fn add(&self, key: T) {
        let mut s = self.lock();
        if !s.dirty.insert(key.clone()) {
            return;
        }
        if !s.processing.contains(&key) {
            s.queue.push_back(key);
            drop(s);
            self.ready.notify_one();
        }
    }

    /// Queues `key` after `delay`.
    pub fn add_after(self: &Arc<Self>, key: T, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Some(q) = me.upgrade() {
                q.add(key);
            }
        });
    }

    /// Queues a key that failed, after a delay doubling with each consecutive failure.
    pub fn add_rate_limited(self: &Arc<Self>, key: T) {
        let n = {
            let mut s = self.lock();
            let n = s.failures.entry(key.clone()).or_insert(0);
            *n += 1;
            *n
        };
        let delay = BASE_DELAY.saturating_mul(1u32 << (n - 1).min(20)).min(MAX_DELAY);
        self.add_after(key, delay);
    }

    /// Clears the failure count of `key`.
    pub fn forget(&self, key: &T) {
        self.lock().failures.remove(key);
    }

    /// Number of keys waiting (not counting those being worked on).
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// Whether no key waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next key; the caller must call [`WorkQueue::done`] with it.
    pub async fn next(&self) -> T {
        loop {
            let notified = self.ready.notified();
            {
                let mut s = self.lock();
                if let Some(key) = s.queue.pop_front() {
                    s.dirty.remove(&key);
                    s.processing.insert(key.clone());
                    let more = !s.queue.is_empty();
                    drop(s);
                    if more {
                        self.ready.notify_one();
                    }
                    return key;
                }
            }
            notified.await;
        }
    }

    /// Marks `key` as finished; re-queues it if it was added meanwhile.
    pub fn done(&self, key: &T) {
        let mut s = self.lock();
        s.processing.remove(key);
        if s.dirty.contains(key) {
            s.queue.push_back(key.clone());
            drop(s);
            self.ready.notify_one();
        }
    }
}

/// What a reconcile asks for next.
pub enum Next {
    /// Nothing until the key changes again.
    Done,
    /// Look again after this long (e.g. a deadline or a minimum-ready wait).
    After(Duration),
}

/// Runs `workers` concurrent reconcile loops over `queue` until `cancel` fires. A reconcile
/// error is logged and the key retried with backoff.
pub async fn run_workers<T, F, Fut, E>(
    name: &'static str,
    queue: Arc<WorkQueue<T>>,
    workers: usize,
    cancel: CancellationToken,
    reconcile: F,
) where
    T: Hash + Eq + Clone + Send + Sync + std::fmt::Display + 'static,
    F: Fn(T) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Result<Next, E>> + Send,
    E: std::fmt::Display,
{
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers.max(1) {
        let queue = queue.clone();
        let cancel = cancel.clone();
        let reconcile = reconcile.clone();
        tasks.spawn(async move {
            loop {
                let key = tokio::select! {
                    _ = cancel.cancelled() => return,
                    k = queue.next() => k,
                };
                let result = tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = reconcile(key.clone()) => r,
                };
                match result {
                    Ok(next) => {
                        queue.forget(&key);
                        if let Next::After(d) = next {
                            queue.add_after(key.clone(), d);
                        }
                    }
                    Err(e) => {
                        tracing::debug!(controller = name, key = %key, error = %e, "reconcile failed; retrying");
                        queue.add_rate_limited(key.clone());
                    }
                }
                queue.done(&key);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// Reconciles every object of `informer` by key with `workers` loops until `cancel` fires:
/// each cached object once the cache is filled, then each one applied (or all after a resync).
/// Deletions queue nothing. The whole loop of a controller that watches one kind and keeps no
/// state of its own.
pub async fn reconcile_each<K, F, Fut, E>(
    name: &'static str,
    informer: Arc<crate::runtime::Informer<K>>,
    workers: usize,
    cancel: CancellationToken,
    reconcile: F,
) where
    K: crate::runtime::informer::Cached,
    F: Fn(crate::runtime::Key) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Result<Next, E>> + Send,
    E: std::fmt::Display,
{
    use crate::runtime::{Change, Key, informer::next_change};
    let mut changes = informer.subscribe();
    informer.synced().await;
    let queue = WorkQueue::<Key>::new();
    let queue_all = || informer.list().iter().for_each(|o| queue.add(Key::of(o.as_ref())));
    queue_all();
    let feed = async {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                ch = next_change(&mut changes) => match ch {
                    Some(Change::Applied(o)) => queue.add(Key::of(o.as_ref())),
                    Some(Change::Deleted(_)) => {}
                    Some(Change::Resync) => queue_all(),
                    None => break,
                },
            }
        }
    };
    tokio::join!(run_workers(name, queue.clone(), workers, cancel.clone(), reconcile), feed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_waits_once_and_comes_back_when_added_during_work() {
        let q = WorkQueue::<String>::new();
        q.add("a".into());
        q.add("a".into());
        q.add("b".into());
        assert_eq!(q.len(), 2);
        let k = q.next().await;
        assert_eq!(k, "a");
        q.add("a".into());
        assert_eq!(q.len(), 1, "a is being worked on, so only b waits");
        q.done(&k);
        assert_eq!(q.next().await, "b");
        assert_eq!(q.next().await, "a");
    }
}
