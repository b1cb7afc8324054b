//! The datastore: a key-value store shaped like etcd's model.
//!
//! One global revision counter; every successful write gets the next revision, which is also
//! the written object's `resourceVersion`. Reads can be consistent at a past revision (for
//! paginated lists), watches replay from a past revision, and history older than the kept
//! window is compacted away. [`Datastore`] is the door; [`RedbStore`] the embedded backend.
//!
//! This room stores bytes under string keys. It knows nothing about Kubernetes objects,
//! JSON, or HTTP.

pub mod encryption;
pub mod follow;
mod history;
mod redb_store;
mod watch_hub;

use std::time::Duration;

use bytes::Bytes;

pub use redb_store::RedbStore;
pub use watch_hub::{EventMap, Watch};

/// A global store revision.
pub type Revision = u64;

/// A stored key with its value and revisions.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    /// Revision of the write that created the key.
    pub create_revision: u64,
    /// Revision of the last write to the key (the delete's, for deleted keys in events).
    pub mod_revision: u64,
}

/// What happened to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Created,
    Updated,
    Deleted,
}

/// One change. For `Deleted`, `kv` is the last value with `mod_revision` = the delete's
/// revision; `prev` is the value before the change (None for `Created`).
#[derive(Clone, Debug)]
pub struct Event {
    pub kind: EventKind,
    pub revision: u64,
    pub kv: KeyValue,
    pub prev: Option<KeyValue>,
}

/// A page of keys.
#[derive(Clone, Debug, Default)]
pub struct RangeResult {
    pub kvs: Vec<KeyValue>,
    /// The revision the read is consistent at.
    pub revision: u64,
    /// Whether keys remain after this page.
    pub more: bool,
    /// How many keys remain after this page.
    pub remaining: u64,
}

/// Errors of the datastore.
#[derive(thiserror::Error, Debug, Clone)]
pub enum StoreError {
    #[error("key {key:?} already exists")]
    AlreadyExists { key: String },
    #[error("key {key:?} not found")]
    NotFound { key: String },
    #[error("key {key:?} was modified concurrently")]
    Conflict { key: String, current: Option<KeyValue> },
    #[error("revision {requested} has been compacted (oldest available is {compacted})")]
    Compacted { requested: u64, compacted: u64 },
    #[error("revision {requested} is in the future (current is {current})")]
    FutureRevision { requested: u64, current: u64 },
    #[error("value of {size} bytes exceeds the limit of {limit}")]
    ValueTooLarge { size: usize, limit: usize },
    #[error("watch ended: the watcher fell behind and was dropped")]
    WatcherTooSlow,
    #[error("the datastore is closed")]
    Closed,
    #[error("datastore failure: {0}")]
    Backend(String),
}

/// The datastore door.
#[async_trait::async_trait]
pub trait Datastore: Send + Sync + 'static {
    /// The latest committed revision.
    fn current_revision(&self) -> u64;
    /// The oldest revision still servable for range and watch.
    fn compacted_revision(&self) -> u64;
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;
    /// Keys starting with `prefix`, strictly after `start_after`, at most `limit` (0 = all),
    /// consistent at `at_revision` (None = now).
    async fn range(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        at_revision: Option<u64>,
    ) -> Result<RangeResult, StoreError>;
    /// Creates a key; `AlreadyExists` if present.
    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue, StoreError>;
    /// Replaces a key's value if its mod_revision is `expected_mod_revision`.
    async fn update(&self, key: &str, value: Bytes, expected_mod_revision: u64) -> Result<KeyValue, StoreError>;
    /// Deletes a key (if its mod_revision matches, when given); returns the deleted value
    /// with `mod_revision` = the delete's revision.
    async fn delete(&self, key: &str, expected_mod_revision: Option<u64>) -> Result<KeyValue, StoreError>;
    /// Events under `prefix` with revision > `after_revision`, in order, then live.
    async fn watch(&self, prefix: &str, after_revision: u64) -> Result<Watch, StoreError>;
    /// Drops history at or below `revision`.
    async fn compact(&self, revision: u64) -> Result<(), StoreError>;
    /// Stops the writer, ends all watches and closes the database.
    async fn close(&self);
}

/// Tuning of the redb backend.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Events buffered per watcher before it is dropped as too slow.
    pub watch_buffer: usize,
    /// Revisions of history kept for consistent paging and watch replay.
    pub history_window: u64,
    /// Recent events kept in memory for fast watch replay.
    pub memory_window: usize,
    /// How often history is compacted.
    pub compact_interval: Duration,
    /// Most writes committed in one transaction.
    pub max_batch: usize,
    /// Largest value accepted.
    pub max_value: usize,
    /// Bytes of database pages redb keeps in memory.
    pub cache_bytes: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            // Events share their bytes with the store's window, so a deep buffer is cheap; it
            // lets a watcher ride out a few seconds of a busy machine (10,000 pods rolling
            // out) instead of being dropped and relisting.
            watch_buffer: 10_000,
            // Enough for a paginated list of thousands of objects to finish while writes go on,
            // small enough that the history table stays a few MiB.
            history_window: 10_000,
            memory_window: 2_000,
            compact_interval: Duration::from_secs(60),
            max_batch: 256,
            max_value: 8 * 1024 * 1024,
            // Enough for the working set of a small cluster; an edge box's memory is precious.
            cache_bytes: 16 * 1024 * 1024,
        }
    }
}
