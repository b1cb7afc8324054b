//! The embedded backend: redb tables `kv` (live keys), `history` (one event per revision,
//! with the previous value, for consistent paging and watch replay) and `meta` (revision
//! counters).
//!
//! One writer thread owns every write transaction. It drains the request queue and commits
//! many writes in one durable transaction (group commit), and only then answers the callers and
//! publishes the events. Reads use their own read transactions on blocking threads and never
//! wait for the writer.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use super::history::{decode_event, decode_record, encode_event, encode_record, split_record};
use super::watch_hub::{Hub, Watch};
use super::{Datastore, Event, EventKind, KeyValue, RangeResult, StoreError, StoreOptions};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const HISTORY: TableDefinition<u64, &[u8]> = TableDefinition::new("history");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const META_REVISION: &str = "revision";
const META_COMPACTED: &str = "compacted";

fn backend<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Backend(e.to_string())
}

enum Write {
    Create { key: String, value: Bytes },
    Update { key: String, value: Bytes, expected: u64 },
    Delete { key: String, expected: Option<u64> },
}

enum Op {
    Write(Write, oneshot::Sender<Result<KeyValue, StoreError>>),
    Compact(u64, oneshot::Sender<Result<(), StoreError>>),
}

/// A read run on the lister thread.
type Job = Box<dyn FnOnce() + Send>;

/// The redb-backed datastore.
pub struct RedbStore {
    /// Whole-prefix ranges (lists without a limit) run on one thread of their own, see
    /// [`RedbStore::list_read`]. Taken on close.
    lister: Mutex<Option<std::sync::mpsc::Sender<Job>>>,
    lister_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Taken on close, so the file is released once in-flight reads finish.
    db: Mutex<Option<Arc<Database>>>,
    queue: Mutex<Option<std::sync::mpsc::Sender<Op>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    hub: Arc<Mutex<Hub>>,
    revision: Arc<AtomicU64>,
    compacted: Arc<AtomicU64>,
    commits: Arc<AtomicU64>,
    closed: AtomicBool,
    opts: StoreOptions,
    stop_compactor: tokio_util::sync::CancellationToken,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl RedbStore {
    /// Opens (or creates) the database at `path` and starts the writer and the compactor.
    /// Must be called inside a tokio runtime.
    pub fn open(path: &Path, opts: StoreOptions) -> Result<Arc<Self>, StoreError> {
        let db = Database::builder().set_cache_size(opts.cache_bytes).create(path).map_err(backend)?;
        let (revision, compacted) = {
            let txn = db.begin_write().map_err(backend)?;
            let (r, c) = {
                txn.open_table(KV).map_err(backend)?;
                txn.open_table(HISTORY).map_err(backend)?;
                let meta = txn.open_table(META).map_err(backend)?;
                let r = meta.get(META_REVISION).map_err(backend)?.map(|v| v.value()).unwrap_or(0);
                let c = meta.get(META_COMPACTED).map_err(backend)?.map(|v| v.value()).unwrap_or(0);
                (r, c)
            };
            txn.commit().map_err(backend)?;
            (r, c)
        };
        let db = Arc::new(db);
        let hub = Arc::new(Mutex::new(Hub::new(opts.memory_window, opts.watch_buffer)));
        let revision = Arc::new(AtomicU64::new(revision));
        let compacted = Arc::new(AtomicU64::new(compacted));
        let commits = Arc::new(AtomicU64::new(0));
        let (tx, rx) = std::sync::mpsc::channel::<Op>();
        let writer = {
            let (db, hub, revision, compacted, commits) =
                (db.clone(), hub.clone(), revision.clone(), compacted.clone(), commits.clone());
            let max_batch = opts.max_batch.max(1);
            std::thread::Builder::new()
                .name("skiff-store-writer".into())
                .spawn(move || writer_loop(db, rx, hub, revision, compacted, commits, max_batch))
                .map_err(backend)?
        };
        let (lister, jobs) = std::sync::mpsc::channel::<Job>();
        let lister_thread = std::thread::Builder::new()
            .name("skiff-store-lister".into())
            .spawn(move || {
                for job in jobs {
                    // A read that panics fails its request (its reply is dropped), not the thread.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                }
            })
            .map_err(backend)?;
        let store = Arc::new(RedbStore {
            lister: Mutex::new(Some(lister)),
            lister_thread: Mutex::new(Some(lister_thread)),
            db: Mutex::new(Some(db)),
            queue: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            hub,
            revision,
            compacted,
            commits,
            closed: AtomicBool::new(false),
            opts,
            stop_compactor: tokio_util::sync::CancellationToken::new(),
        });
        let weak = Arc::downgrade(&store);
        let stop = store.stop_compactor.clone();
        let interval = store.opts.compact_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let Some(s) = weak.upgrade() else { return };
                let cur = s.current_revision();
                let keep = s.opts.history_window;
                if cur > keep
                    && cur - keep > s.compacted_revision()
                    && let Err(e) = s.compact(cur - keep).await
                {
                    tracing::warn!(error = %e, "compaction failed");
                }
            }
        });
        Ok(store)
    }

    /// Number of committed write transactions (to observe group commit).
    pub fn commit_count(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    async fn submit(&self, w: Write) -> Result<KeyValue, StoreError> {
        let (tx, rx) = oneshot::channel();
        {
            let q = lock(&self.queue);
            let q = q.as_ref().ok_or(StoreError::Closed)?;
            q.send(Op::Write(w, tx)).map_err(|_| StoreError::Closed)?;
        }
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    {
        let db = lock(&self.db).clone().ok_or(StoreError::Closed)?;
        tokio::task::spawn_blocking(move || f(&db)).await.map_err(backend)?
    }

    /// Runs a read of a whole prefix on the lister thread. Such a read goes through tens of
    /// MiB of pages and values; on the blocking pool each one ran on whichever idle thread
    /// woke, and what other threads later freed of it stayed in that thread's heap until the
    /// thread ended, 10 s on: seven lists of 10,000 pods in a row left ~350 MiB resident
    /// (BENCHMARKS.md). On one thread the next list reuses the last one's memory. Lists
    /// without a limit wait for each other; paged lists, gets and watches do not.
    async fn list_read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    {
        let db = lock(&self.db).clone().ok_or(StoreError::Closed)?;
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f(&db));
        });
        lock(&self.lister).as_ref().ok_or(StoreError::Closed)?.send(job).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

fn writer_loop(
    db: Arc<Database>,
    rx: std::sync::mpsc::Receiver<Op>,
    hub: Arc<Mutex<Hub>>,
    revision: Arc<AtomicU64>,
    compacted: Arc<AtomicU64>,
    commits: Arc<AtomicU64>,
    max_batch: usize,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let start_rev = revision.load(Ordering::Acquire);
        match commit_batch(&db, &batch, start_rev, compacted.load(Ordering::Acquire)) {
            Ok((results, events, new_rev, new_compacted)) => {
                commits.fetch_add(1, Ordering::Relaxed);
                revision.store(new_rev, Ordering::Release);
                compacted.store(new_compacted, Ordering::Release);
                lock(&hub).publish(&events);
                for (op, result) in batch.into_iter().zip(results) {
                    match (op, result) {
                        (Op::Write(_, reply), BatchResult::Write(r)) => {
                            let _ = reply.send(r);
                        }
                        (Op::Compact(_, reply), BatchResult::Compact(r)) => {
                            let _ = reply.send(r);
                        }
                        _ => {}
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "datastore commit failed");
                for op in batch {
                    match op {
                        Op::Write(_, reply) => {
                            let _ = reply.send(Err(e.clone()));
                        }
                        Op::Compact(_, reply) => {
                            let _ = reply.send(Err(e.clone()));
                        }
                    }
                }
            }
        }
    }
}

enum BatchResult {
    Write(Result<KeyValue, StoreError>),
    Compact(Result<(), StoreError>),
}

type Committed = (Vec<BatchResult>, Vec<Event>, u64, u64);

fn commit_batch(db: &Database, batch: &[Op], start_rev: u64, start_compacted: u64) -> Result<Committed, StoreError> {
    let txn = db.begin_write().map_err(backend)?;
    let mut results = Vec::with_capacity(batch.len());
    let mut events = Vec::new();
    let mut rev = start_rev;
    let mut compacted_to = start_compacted;
    {
        let mut kv = txn.open_table(KV).map_err(backend)?;
        let mut history = txn.open_table(HISTORY).map_err(backend)?;
        for op in batch {
            match op {
                Op::Write(w, _) => {
                    let key = match w {
                        Write::Create { key, .. } | Write::Update { key, .. } | Write::Delete { key, .. } => key,
                    };
                    let current = match kv.get(key.as_str()).map_err(backend)? {
                        Some(raw) => Some(decode_record(key, raw.value())?),
                        None => None,
                    };
                    let outcome = match (w, current) {
                        (Write::Create { .. }, Some(_)) => Err(StoreError::AlreadyExists { key: key.clone() }),
                        (Write::Create { value, .. }, None) => {
                            let r = rev + 1;
                            let new = KeyValue {
                                key: key.clone(),
                                value: value.clone(),
                                create_revision: r,
                                mod_revision: r,
                            };
                            Ok((EventKind::Created, new, None))
                        }
                        (Write::Update { .. } | Write::Delete { .. }, None) => {
                            Err(StoreError::NotFound { key: key.clone() })
                        }
                        (Write::Update { expected, .. }, Some(cur)) if cur.mod_revision != *expected => {
                            Err(StoreError::Conflict { key: key.clone(), current: Some(cur) })
                        }
                        (Write::Update { value, .. }, Some(cur)) => {
                            let r = rev + 1;
                            let new = KeyValue {
                                key: key.clone(),
                                value: value.clone(),
                                create_revision: cur.create_revision,
                                mod_revision: r,
                            };
                            Ok((EventKind::Updated, new, Some(cur)))
                        }
                        (Write::Delete { expected: Some(e), .. }, Some(cur)) if cur.mod_revision != *e => {
                            Err(StoreError::Conflict { key: key.clone(), current: Some(cur) })
                        }
                        (Write::Delete { .. }, Some(cur)) => {
                            let r = rev + 1;
                            let gone = KeyValue { mod_revision: r, ..cur.clone() };
                            Ok((EventKind::Deleted, gone, Some(cur)))
                        }
                    };
                    match outcome {
                        Err(e) => results.push(BatchResult::Write(Err(e))),
                        Ok((kind, new, prev)) => {
                            rev += 1;
                            if kind == EventKind::Deleted {
                                kv.remove(key.as_str()).map_err(backend)?;
                            } else {
                                let rec = encode_record(new.create_revision, new.mod_revision, &new.value);
                                kv.insert(key.as_str(), rec.as_slice()).map_err(backend)?;
                            }
                            let ev = Event { kind, revision: rev, kv: new.clone(), prev };
                            history.insert(rev, encode_event(&ev).as_slice()).map_err(backend)?;
                            events.push(ev);
                            results.push(BatchResult::Write(Ok(new)));
                        }
                    }
                }
                Op::Compact(to, _) => {
                    let to = (*to).min(rev);
                    if to > compacted_to {
                        history.retain_in(..=to, |_, _| false).map_err(backend)?;
                        compacted_to = to;
                    }
                    results.push(BatchResult::Compact(Ok(())));
                }
            }
        }
        let mut meta = txn.open_table(META).map_err(backend)?;
        meta.insert(META_REVISION, rev).map_err(backend)?;
        meta.insert(META_COMPACTED, compacted_to).map_err(backend)?;
    }
    txn.commit().map_err(backend)?;
    Ok((results, events, rev, compacted_to))
}

/// Reads the snapshot's revision and compacted marks.
fn snapshot_marks(txn: &redb::ReadTransaction) -> Result<(u64, u64), StoreError> {
    let meta = txn.open_table(META).map_err(backend)?;
    let r = meta.get(META_REVISION).map_err(backend)?.map(|v| v.value()).unwrap_or(0);
    let c = meta.get(META_COMPACTED).map_err(backend)?.map(|v| v.value()).unwrap_or(0);
    Ok((r, c))
}

/// History events in (after, through] for keys under `prefix`.
fn history_between(
    txn: &redb::ReadTransaction,
    prefix: &str,
    after: u64,
    through: u64,
) -> Result<Vec<Event>, StoreError> {
    let history = txn.open_table(HISTORY).map_err(backend)?;
    let mut out = Vec::new();
    if after >= through {
        return Ok(out);
    }
    for entry in history.range((Bound::Excluded(after), Bound::Included(through))).map_err(backend)? {
        let (k, v) = entry.map_err(backend)?;
        let ev = decode_event(k.value(), v.value())?;
        if ev.kv.key.starts_with(prefix) {
            out.push(ev);
        }
    }
    Ok(out)
}

fn range_blocking(
    db: &Database,
    prefix: &str,
    start_after: Option<&str>,
    limit: usize,
    at: Option<u64>,
) -> Result<RangeResult, StoreError> {
    let txn = db.begin_read().map_err(backend)?;
    let (snap, compacted) = snapshot_marks(&txn)?;
    let at_rev = at.unwrap_or(snap);
    if at_rev > snap {
        return Err(StoreError::FutureRevision { requested: at_rev, current: snap });
    }
    if at_rev < compacted {
        return Err(StoreError::Compacted { requested: at_rev, compacted });
    }
    let kv = txn.open_table(KV).map_err(backend)?;
    let lower = match start_after {
        Some(s) if s >= prefix => Bound::Excluded(s),
        _ => Bound::Included(prefix),
    };
    let mut out = RangeResult { revision: at_rev, ..Default::default() };
    if at_rev == snap {
        // The values are copied into one buffer that the items share, rather than one
        // allocation each: a list of 10,000 pods is then one block to free, wherever the
        // response is finished, instead of 10,000 freed on another thread than the one that
        // allocated them, which the allocator kept (see BENCHMARKS.md, API server).
        let mut values: Vec<u8> = Vec::new();
        let mut found: Vec<(String, std::ops::Range<usize>, u64, u64)> = Vec::new();
        for entry in kv.range::<&str>((lower, Bound::Unbounded)).map_err(backend)? {
            let (k, v) = entry.map_err(backend)?;
            let key = k.value();
            if !key.starts_with(prefix) {
                break;
            }
            if limit > 0 && found.len() >= limit {
                out.more = true;
                out.remaining += 1;
                continue;
            }
            let (create, modr, value) = split_record(v.value())?;
            let start = values.len();
            values.extend_from_slice(value);
            found.push((key.to_string(), start..values.len(), create, modr));
        }
        let values = Bytes::from(values);
        out.kvs = found
            .into_iter()
            .map(|(key, range, create_revision, mod_revision)| KeyValue {
                key,
                value: values.slice(range),
                create_revision,
                mod_revision,
            })
            .collect();
        return Ok(out);
    }
    // A past revision: start from the live keys and undo every change made after it.
    let mut state: BTreeMap<String, Option<KeyValue>> = BTreeMap::new();
    for entry in kv.range::<&str>((lower, Bound::Unbounded)).map_err(backend)? {
        let (k, v) = entry.map_err(backend)?;
        let key = k.value();
        if !key.starts_with(prefix) {
            break;
        }
        state.insert(key.to_string(), Some(decode_record(key, v.value())?));
    }
    let mut undone = std::collections::HashSet::new();
    for ev in history_between(&txn, prefix, at_rev, snap)? {
        if let Some(s) = start_after
            && ev.kv.key.as_str() <= s
        {
            continue;
        }
        if !undone.insert(ev.kv.key.clone()) {
            continue;
        }
        state.insert(ev.kv.key.clone(), if ev.kind == EventKind::Created { None } else { ev.prev.clone() });
    }
    for (_, v) in state {
        let Some(v) = v else { continue };
        if limit > 0 && out.kvs.len() >= limit {
            out.more = true;
            out.remaining += 1;
            continue;
        }
        out.kvs.push(v);
    }
    Ok(out)
}

#[async_trait::async_trait]
impl Datastore for RedbStore {
    fn current_revision(&self) -> u64 {
        self.revision.load(Ordering::Acquire)
    }

    fn compacted_revision(&self) -> u64 {
        self.compacted.load(Ordering::Acquire)
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let key = key.to_string();
        self.read(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let kv = txn.open_table(KV).map_err(backend)?;
            match kv.get(key.as_str()).map_err(backend)? {
                Some(raw) => Ok(Some(decode_record(&key, raw.value())?)),
                None => Ok(None),
            }
        })
        .await
    }

    async fn range(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        at_revision: Option<u64>,
    ) -> Result<RangeResult, StoreError> {
        let (prefix, start_after) = (prefix.to_string(), start_after.map(String::from));
        let read = move |db: &Database| range_blocking(db, &prefix, start_after.as_deref(), limit, at_revision);
        if limit == 0 { self.list_read(read).await } else { self.read(read).await }
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue, StoreError> {
        if value.len() > self.opts.max_value {
            return Err(StoreError::ValueTooLarge { size: value.len(), limit: self.opts.max_value });
        }
        self.submit(Write::Create { key: key.to_string(), value }).await
    }

    async fn update(&self, key: &str, value: Bytes, expected_mod_revision: u64) -> Result<KeyValue, StoreError> {
        if value.len() > self.opts.max_value {
            return Err(StoreError::ValueTooLarge { size: value.len(), limit: self.opts.max_value });
        }
        self.submit(Write::Update { key: key.to_string(), value, expected: expected_mod_revision }).await
    }

    async fn delete(&self, key: &str, expected_mod_revision: Option<u64>) -> Result<KeyValue, StoreError> {
        self.submit(Write::Delete { key: key.to_string(), expected: expected_mod_revision }).await
    }

    async fn watch(&self, prefix: &str, after_revision: u64) -> Result<Watch, StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        loop {
            let compacted = self.compacted_revision();
            if after_revision < compacted {
                return Err(StoreError::Compacted { requested: after_revision, compacted });
            }
            let current = self.current_revision();
            if after_revision > current {
                return Err(StoreError::FutureRevision { requested: after_revision, current });
            }
            {
                let mut hub = lock(&self.hub);
                let covered = after_revision >= self.current_revision()
                    || hub.window_start().is_some_and(|start| start <= after_revision);
                if covered {
                    return Ok(hub.subscribe(prefix, after_revision, VecDeque::new()));
                }
            }
            // Older than the memory window: replay from the history table, then join live.
            let p = prefix.to_string();
            let (events, through) = self
                .read(move |db| {
                    let txn = db.begin_read().map_err(backend)?;
                    let (snap, compacted) = snapshot_marks(&txn)?;
                    if after_revision < compacted {
                        return Err(StoreError::Compacted { requested: after_revision, compacted });
                    }
                    Ok((history_between(&txn, &p, after_revision, snap)?, snap))
                })
                .await?;
            let mut hub = lock(&self.hub);
            // Events committed after the snapshot must still be in the window; else retry.
            let gap = match hub.window_start() {
                Some(start) => start > through,
                None => self.current_revision() > through,
            };
            if gap {
                continue;
            }
            let mut w = hub.subscribe(prefix, through, events.into());
            let _ = &mut w;
            return Ok(w);
        }
    }

    async fn compact(&self, revision: u64) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        {
            let q = lock(&self.queue);
            let q = q.as_ref().ok_or(StoreError::Closed)?;
            q.send(Op::Compact(revision, tx)).map_err(|_| StoreError::Closed)?;
        }
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn close(&self) {
        self.stop_compactor.cancel();
        lock(&self.queue).take();
        lock(&self.lister).take();
        let lister = lock(&self.lister_thread).take();
        if let Some(l) = lister {
            let _ = tokio::task::spawn_blocking(move || l.join()).await;
        }
        let writer = lock(&self.writer).take();
        if let Some(w) = writer {
            let _ = tokio::task::spawn_blocking(move || w.join()).await;
        }
        self.closed.store(true, Ordering::Release);
        lock(&self.hub).close();
        lock(&self.db).take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> StoreOptions {
        StoreOptions { memory_window: 16, watch_buffer: 8, ..Default::default() }
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cas_semantics_and_revisions_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let s = RedbStore::open(&path, opts()).unwrap();
        let a = s.create("/x/a", b("1")).await.unwrap();
        assert_eq!((a.create_revision, a.mod_revision), (1, 1));
        assert!(matches!(s.create("/x/a", b("2")).await, Err(StoreError::AlreadyExists { .. })));
        assert!(matches!(s.update("/x/a", b("2"), 99).await, Err(StoreError::Conflict { .. })));
        assert!(matches!(s.update("/x/zz", b("2"), 1).await, Err(StoreError::NotFound { .. })));
        let a2 = s.update("/x/a", b("2"), 1).await.unwrap();
        assert_eq!((a2.create_revision, a2.mod_revision), (1, 2));
        let gone = s.delete("/x/a", Some(2)).await.unwrap();
        assert_eq!((gone.mod_revision, gone.value.as_ref()), (3, b"2".as_ref()));
        assert!(s.get("/x/a").await.unwrap().is_none());
        s.close().await;
        let s = RedbStore::open(&path, opts()).unwrap();
        assert_eq!(s.current_revision(), 3, "the delete's revision is remembered");
        assert_eq!(s.create("/x/b", b("1")).await.unwrap().mod_revision, 4);
        s.close().await;
        assert!(matches!(s.get("/x/b").await, Err(StoreError::Closed)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn paging_is_consistent_at_one_revision() {
        let dir = tempfile::tempdir().unwrap();
        let s = RedbStore::open(&dir.path().join("db"), opts()).unwrap();
        for i in 0..10 {
            s.create(&format!("/p/{i}"), b("v")).await.unwrap();
        }
        let first = s.range("/p/", None, 4, None).await.unwrap();
        assert_eq!((first.kvs.len(), first.more, first.remaining), (4, true, 6));
        // Writes after the first page must not show up in later pages.
        s.delete("/p/5", None).await.unwrap();
        s.create("/p/55", b("new")).await.unwrap();
        s.update("/p/6", b("changed"), 7).await.unwrap();
        let last = first.kvs.last().unwrap().key.clone();
        let rest = s.range("/p/", Some(&last), 0, Some(first.revision)).await.unwrap();
        let keys: Vec<&str> = rest.kvs.iter().map(|k| k.key.as_str()).collect();
        assert_eq!(keys, ["/p/4", "/p/5", "/p/6", "/p/7", "/p/8", "/p/9"]);
        assert_eq!(rest.kvs[2].value.as_ref(), b"v");
        assert!(matches!(s.range("/p/", None, 0, Some(999)).await, Err(StoreError::FutureRevision { .. })));
        s.compact(first.revision + 1).await.unwrap();
        assert!(matches!(s.range("/p/", None, 0, Some(first.revision)).await, Err(StoreError::Compacted { .. })));
        s.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watch_order_replay_and_slow_watchers() {
        let dir = tempfile::tempdir().unwrap();
        let s = RedbStore::open(&dir.path().join("db"), opts()).unwrap();
        let start = s.current_revision();
        s.create("/w/a", b("1")).await.unwrap();
        s.update("/w/a", b("2"), 1).await.unwrap();
        s.delete("/w/a", None).await.unwrap();
        s.create("/other/x", b("1")).await.unwrap();
        // Replay from before the writes, from the memory window.
        let mut w = s.watch("/w/", start).await.unwrap();
        let kinds: Vec<(EventKind, u64)> = {
            let mut v = Vec::new();
            for _ in 0..3 {
                let e = w.next().await.unwrap().unwrap();
                v.push((e.kind, e.revision));
            }
            v
        };
        assert_eq!(kinds, [(EventKind::Created, 1), (EventKind::Updated, 2), (EventKind::Deleted, 3)]);
        // Older than the memory window (16 events): replayed from the history table.
        for i in 0..40 {
            s.create(&format!("/w/n{i}"), b("x")).await.unwrap();
        }
        let mut old = s.watch("/w/", start).await.unwrap();
        let mut count = 0;
        while count < 43 {
            let e = old.next().await.unwrap().unwrap();
            assert!(e.kv.key.starts_with("/w/"));
            count += 1;
        }
        // A watcher that never reads is dropped once its buffer (8) fills; writers and a
        // reading watcher are unaffected.
        let mut slow = s.watch("/w/", s.current_revision()).await.unwrap();
        let mut live = s.watch("/w/", s.current_revision()).await.unwrap();
        let reader = tokio::spawn(async move {
            let mut n = 0;
            while n < 20 {
                live.next().await.unwrap().unwrap();
                n += 1;
            }
            n
        });
        for i in 0..20 {
            s.create(&format!("/w/m{i}"), b("x")).await.unwrap();
        }
        assert_eq!(reader.await.unwrap(), 20);
        let mut got = 0;
        let end = loop {
            match slow.next().await {
                Some(Ok(_)) => got += 1,
                other => break other,
            }
        };
        assert_eq!(got, 8);
        assert!(matches!(end, Some(Err(StoreError::WatcherTooSlow))));
        s.compact(s.current_revision()).await.unwrap();
        assert!(matches!(s.watch("/w/", start).await, Err(StoreError::Compacted { .. })));
        s.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_share_commits_and_compaction_bounds_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let s = RedbStore::open(&path, opts()).unwrap();
        let mut tasks = Vec::new();
        for i in 0..64 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move { s.create(&format!("/g/{i}"), b("x")).await.unwrap() }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert!(s.commit_count() < 64, "64 concurrent creates took {} commits", s.commit_count());
        let value = Bytes::from(vec![b'v'; 4096]);
        let mut rev = s.create("/churn", value.clone()).await.unwrap().mod_revision;
        for _ in 0..3000 {
            rev = s.update("/churn", value.clone(), rev).await.unwrap().mod_revision;
        }
        s.compact(rev - 100).await.unwrap();
        let size_after_first = std::fs::metadata(&path).unwrap().len();
        for _ in 0..3000 {
            rev = s.update("/churn", value.clone(), rev).await.unwrap().mod_revision;
        }
        s.compact(rev - 100).await.unwrap();
        for _ in 0..200 {
            rev = s.update("/churn", value.clone(), rev).await.unwrap().mod_revision;
        }
        let size_after_second = std::fs::metadata(&path).unwrap().len();
        assert!(
            size_after_second <= size_after_first + size_after_first / 2,
            "file grew from {size_after_first} to {size_after_second} despite compaction"
        );
        s.close().await;
    }
}
