//! Shared informers: one list+watch per resource type, a cache every component reads, and a
//! broadcast of changes to every subscriber.
//!
//! An [`Informer`] runs kube-runtime's `watcher` (which relists after a `410 Gone` and backs off
//! on errors) into a reflector [`Store`]. Subscribers get [`Change`]s; a subscriber that falls
//! behind, and every subscriber after a relist, gets [`Change::Resync`] and must treat every
//! cached object as changed. [`Informers`] hands out one informer per type, created on first use.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::collections::HashSet;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Arc, Mutex, RwLock, Weak};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use futures::StreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// Buffered changes per subscriber before it is told to resync. The buffer is allocated in
/// full when the informer starts (~48 bytes a slot), and a process runs a score of informers,
/// so only pods, which change by the thousand when workloads roll, get a deep one.
const CHANGE_BUFFER: usize = 1024;
/// The change buffer of an informer of all pods: a resync there costs every pod-watching
/// controller a pass over all pods, so it should not happen while 10,000 pods are created.
const POD_CHANGE_BUFFER: usize = 16 * 1024;

/// One change seen by an informer.
#[derive(Debug)]
pub enum Change<K> {
    /// The object was created or updated; this is its new state.
    Applied(Arc<K>),
    /// The object was deleted; this is its last known state.
    Deleted(Arc<K>),
    /// The cache was rebuilt (first list, relist, or this subscriber lagged): every cached
    /// object may have changed, and objects may have vanished without a `Deleted`.
    Resync,
}

impl<K> Clone for Change<K> {
    fn clone(&self) -> Self {
        match self {
            Change::Applied(o) => Change::Applied(o.clone()),
            Change::Deleted(o) => Change::Deleted(o.clone()),
            Change::Resync => Change::Resync,
        }
    }
}

/// What the change buffer holds. An applied change holds its object weakly, so a subscriber
/// that falls behind does not keep alive every version that has since been replaced in the
/// cache: when 10,000 pods each changed a few times while one controller caught up, the
/// superseded versions it had yet to read were tens of MiB of the server's peak heap
/// (BENCHMARKS.md, control plane). A replaced version is skipped on receipt; the change that
/// replaced it (or deleted the object) is further on in the buffer.
enum Sent<K> {
    Applied(Weak<K>),
    /// An applied object the cache did not keep (it is handed over as is).
    Uncached(Arc<K>),
    Deleted(Arc<K>),
    Resync,
}

impl<K> Clone for Sent<K> {
    fn clone(&self) -> Self {
        match self {
            Sent::Applied(o) => Sent::Applied(o.clone()),
            Sent::Uncached(o) => Sent::Uncached(o.clone()),
            Sent::Deleted(o) => Sent::Deleted(o.clone()),
            Sent::Resync => Sent::Resync,
        }
    }
}

impl<K> Sent<K> {
    /// The change to hand out; `None` for an object replaced or deleted since (a later change
    /// in the buffer says so).
    fn into_change(self) -> Option<Change<K>> {
        match self {
            Sent::Applied(o) => o.upgrade().map(Change::Applied),
            Sent::Uncached(o) => Some(Change::Applied(o)),
            Sent::Deleted(o) => Some(Change::Deleted(o)),
            Sent::Resync => Some(Change::Resync),
        }
    }
}

/// A subscriber's place in an informer's changes; read it with [`next_change`].
pub struct Subscription<K> {
    rx: broadcast::Receiver<Sent<K>>,
}

impl<K> Subscription<K> {
    /// The next change if one is already waiting ([`Change::Resync`] when this subscriber
    /// lagged); `None` when none is.
    pub fn try_next(&mut self) -> Option<Change<K>> {
        loop {
            return match self.rx.try_recv() {
                Ok(sent) => match sent.into_change() {
                    Some(c) => Some(c),
                    None => continue,
                },
                Err(broadcast::error::TryRecvError::Lagged(_)) => Some(Change::Resync),
                Err(_) => None,
            };
        }
    }
}

/// Bounds every cached kind meets.
pub trait Cached: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static {}
impl<K> Cached for K where K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static {}

/// A watched, cached resource type.
pub struct Informer<K: Cached> {
    store: Store<K>,
    changes: broadcast::Sender<Sent<K>>,
    index: RwLock<Index>,
    /// Set once the first list is in the cache. (The store's own readiness future wakes only
    /// the last task that polled it, so several components waiting at once could hang.)
    ready: tokio::sync::watch::Sender<bool>,
}

/// Object names by namespace and by the UID of their controller (the owner reference with
/// `controller: true`), so controllers find their objects without scanning the cache.
#[derive(Default)]
struct Index {
    /// namespace → names
    by_namespace: HashMap<String, HashSet<String>>,
    /// controller UID → (namespace, name)
    by_controller: HashMap<String, HashSet<(String, String)>>,
    /// (namespace, name) → controller UID, to undo an entry when the object changes
    controller_of: HashMap<(String, String), String>,
    /// namespace → names of objects without a controller (the ones a controller may adopt)
    orphans: HashMap<String, HashSet<String>>,
}

fn controller_uid(meta: &ObjectMeta) -> Option<&str> {
    meta.owner_references.iter().flatten().find(|o| o.controller == Some(true)).map(|o| o.uid.as_str())
}

impl Index {
    fn remove(&mut self, ns: &str, name: &str) {
        for map in [&mut self.by_namespace, &mut self.orphans] {
            if let Some(set) = map.get_mut(ns) {
                set.remove(name);
                if set.is_empty() {
                    map.remove(ns);
                }
            }
        }
        let key = (ns.to_string(), name.to_string());
        if let Some(uid) = self.controller_of.remove(&key)
            && let Some(set) = self.by_controller.get_mut(&uid)
        {
            set.remove(&key);
            if set.is_empty() {
                self.by_controller.remove(&uid);
            }
        }
    }

    fn put(&mut self, meta: &ObjectMeta) {
        let ns = meta.namespace.clone().unwrap_or_default();
        let name = meta.name.clone().unwrap_or_default();
        self.remove(&ns, &name);
        self.by_namespace.entry(ns.clone()).or_default().insert(name.clone());
        match controller_uid(meta) {
            Some(uid) => {
                self.by_controller.entry(uid.to_string()).or_default().insert((ns.clone(), name.clone()));
                self.controller_of.insert((ns, name), uid.to_string());
            }
            None => {
                self.orphans.entry(ns).or_default().insert(name);
            }
        }
    }
}

impl<K: Cached> Informer<K>
where
    K::DynamicType: Eq + Hash + Clone + Default,
{
    /// Starts watching `api` until `cancel` fires.
    pub fn spawn(api: Api<K>, config: watcher::Config, cancel: CancellationToken) -> Arc<Self> {
        Self::spawn_trimmed(api, config, None, cancel)
    }

    /// Like [`Informer::spawn`], with `trim` applied to every object before it is cached and
    /// handed to subscribers (see [`Informers::trim`]).
    pub fn spawn_trimmed(
        api: Api<K>,
        config: watcher::Config,
        trim: Option<fn(&mut K)>,
        cancel: CancellationToken,
    ) -> Arc<Self> {
        let (store, mut writer) = reflector::store::<K>();
        // A field-selected pod informer (an agent's, of one node's pods) sees few pods.
        let all_pods = K::kind(&()) == "Pod" && K::group(&()).is_empty() && config.field_selector.is_none();
        let buffer = if all_pods { POD_CHANGE_BUFFER } else { CHANGE_BUFFER };
        let (changes, _) = broadcast::channel(buffer);
        let informer = Arc::new(Informer {
            store,
            changes,
            index: Default::default(),
            ready: tokio::sync::watch::Sender::new(false),
        });
        let me = informer.clone();
        tokio::spawn(async move {
            // No component reads managedFields; dropping them halves what the cache holds.
            let mut events = watcher(api, config)
                .default_backoff()
                .modify(move |o: &mut K| {
                    o.meta_mut().managed_fields = None;
                    if let Some(trim) = trim {
                        trim(o);
                    }
                })
                .boxed();
            loop {
                // Outside tokio's cooperative budget: on a busy server (hundreds of requests
                // runnable) this task would otherwise yield every 128 events and wait behind
                // all of them before reading on, while a watch that falls 10,000 events behind
                // is dropped by the API server and relisted (BENCHMARKS.md, control plane).
                // A turn reads only what the watch already holds.
                let event = tokio::select! {
                    _ = cancel.cancelled() => return,
                    e = tokio::task::unconstrained(events.next()) => e,
                };
                let Some(event) = event else { return };
                let event = match event {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::debug!(kind = %K::kind(&()), error = %e, "watch failed; retrying");
                        continue;
                    }
                };
                writer.apply_watcher_event(&event);
                match &event {
                    watcher::Event::Apply(o) => me.index_write().put(o.meta()),
                    watcher::Event::Delete(o) => {
                        let m = o.meta();
                        me.index_write().remove(m.namespace.as_deref().unwrap_or(""), m.name.as_deref().unwrap_or(""));
                    }
                    watcher::Event::InitDone => {
                        tracing::debug!(kind = %K::kind(&()), "informer synced");
                        let mut index = Index::default();
                        for o in me.store.state() {
                            index.put(o.meta());
                        }
                        *me.index_write() = index;
                        me.ready.send_replace(true);
                    }
                    _ => {}
                }
                let change = match event {
                    watcher::Event::Apply(o) => match me.store.get(&ObjectRef::from_obj(&o)) {
                        Some(cached) => Sent::Applied(Arc::downgrade(&cached)),
                        None => Sent::Uncached(Arc::new(o)),
                    },
                    watcher::Event::Delete(o) => Sent::Deleted(Arc::new(o)),
                    watcher::Event::InitDone => Sent::Resync,
                    watcher::Event::Init | watcher::Event::InitApply(_) => continue,
                };
                let _ = me.changes.send(change);
            }
        });
        informer
    }
}

impl<K: Cached> Informer<K> {
    fn index_write(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }

    fn index_read(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Every cached object in `namespace`.
    pub fn in_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        self.named_in(namespace, |i| &i.by_namespace)
    }

    /// Every cached object in `namespace` that has no controller: what a controller may
    /// adopt. Scanning these rather than the whole namespace keeps a sync proportional to the
    /// owner's own objects.
    pub fn orphans_in(&self, namespace: &str) -> Vec<Arc<K>> {
        self.named_in(namespace, |i| &i.orphans)
    }

    /// The cached objects a per-namespace name index lists for `namespace`.
    fn named_in(&self, namespace: &str, index: impl Fn(&Index) -> &HashMap<String, HashSet<String>>) -> Vec<Arc<K>> {
        let names: Vec<String> =
            index(&self.index_read()).get(namespace).map(|s| s.iter().cloned().collect()).unwrap_or_default();
        names.iter().filter_map(|n| self.get(namespace, n)).collect()
    }

    /// Every cached object whose controller has `uid`.
    pub fn controlled_by(&self, uid: &str) -> Vec<Arc<K>> {
        let keys: Vec<(String, String)> =
            self.index_read().by_controller.get(uid).map(|s| s.iter().cloned().collect()).unwrap_or_default();
        keys.iter().filter_map(|(ns, n)| self.get(ns, n)).collect()
    }

    /// The cache (readers never block the watch).
    pub fn store(&self) -> &Store<K> {
        &self.store
    }

    /// A new subscriber; it first sees the changes after this call.
    pub fn subscribe(&self) -> Subscription<K> {
        Subscription { rx: self.changes.subscribe() }
    }

    /// Waits until the first list has filled the cache.
    pub async fn synced(&self) {
        let mut ready = self.ready.subscribe();
        let _ = ready.wait_for(|r| *r).await;
    }

    /// Waits until the first list has filled the cache (true) or `cancel` fires (false). A
    /// component stopped before its informer synced must not wait for [`Informer::synced`],
    /// which a stopped informer never ends.
    pub async fn synced_or(&self, cancel: &CancellationToken) -> bool {
        tokio::select! {
            _ = self.synced() => true,
            _ = cancel.cancelled() => false,
        }
    }

    /// Whether the first list has filled the cache.
    pub fn is_synced(&self) -> bool {
        *self.ready.borrow()
    }

    /// The cached object `name` in `namespace` ("" for cluster-scoped kinds).
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        let mut r = ObjectRef::<K>::new(name);
        if !namespace.is_empty() {
            r = r.within(namespace);
        }
        self.store.get(&r)
    }

    /// Every cached object.
    pub fn list(&self) -> Vec<Arc<K>> {
        self.store.state()
    }
}

/// Receives the next change; a lagged receiver is turned into [`Change::Resync`]. `None` when
/// the informer stopped.
pub async fn next_change<K>(sub: &mut Subscription<K>) -> Option<Change<K>> {
    loop {
        return match sub.rx.recv().await {
            Ok(sent) => match sent.into_change() {
                Some(c) => Some(c),
                None => continue,
            },
            Err(broadcast::error::RecvError::Lagged(_)) => Some(Change::Resync),
            Err(broadcast::error::RecvError::Closed) => None,
        };
    }
}

/// One informer per type, shared by every component of a process.
pub struct Informers {
    client: Client,
    cancel: CancellationToken,
    started: Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
    /// `fn(&mut K)` by the `TypeId` of `K`.
    trims: Mutex<HashMap<TypeId, Box<dyn Any + Send + Sync>>>,
}

impl Informers {
    pub fn new(client: Client, cancel: CancellationToken) -> Arc<Self> {
        Arc::new(Informers { client, cancel, started: Mutex::new(HashMap::new()), trims: Mutex::new(HashMap::new()) })
    }

    /// Has the informer of `K` apply `trim` to every object before caching it, so a process
    /// keeps only the fields its components read (client-go's informer transform). Set it
    /// before the first [`Informers::get`] of `K`: an informer already started keeps whole
    /// objects, and this says so in the log.
    pub fn trim<K: Cached>(&self, trim: fn(&mut K)) {
        if self.started.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&TypeId::of::<K>()) {
            tracing::warn!(kind = %K::kind(&()), "informer already started; its objects are not trimmed");
        }
        self.trims.lock().unwrap_or_else(|p| p.into_inner()).insert(TypeId::of::<K>(), Box::new(trim));
    }

    /// The client the informers watch with.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The informer of `K` over all namespaces, started on first use.
    pub fn get<K: Cached>(&self) -> Arc<Informer<K>> {
        let mut started = self.started.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = started.get(&TypeId::of::<K>()).and_then(|a| a.clone().downcast::<Informer<K>>().ok()) {
            return i;
        }
        let api = Api::<K>::all(self.client.clone());
        tracing::debug!(kind = %K::kind(&()), "informer started");
        let trim = self
            .trims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&TypeId::of::<K>())
            .and_then(|t| t.downcast_ref::<fn(&mut K)>())
            .copied();
        let informer = Informer::spawn_trimmed(api, watcher::Config::default(), trim, self.cancel.child_token());
        started.insert(TypeId::of::<K>(), informer.clone());
        informer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;

    fn config_map(name: &str) -> Arc<ConfigMap> {
        Arc::new(ConfigMap {
            metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
            ..Default::default()
        })
    }

    fn name(c: &Change<ConfigMap>) -> &str {
        match c {
            Change::Applied(o) | Change::Deleted(o) => o.metadata.name.as_deref().unwrap_or(""),
            Change::Resync => "(resync)",
        }
    }

    #[tokio::test]
    async fn waiting_for_the_first_list_ends_with_the_cancellation() {
        // A server that accepts connections and never answers: the first list never completes.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                open.push(conn);
            }
        });
        let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
        let client = Client::try_from(config).unwrap();
        let cancel = CancellationToken::new();
        let informer = Informer::<ConfigMap>::spawn(Api::all(client), watcher::Config::default(), cancel.child_token());
        let waiting = {
            let (informer, cancel) = (informer.clone(), cancel.clone());
            tokio::spawn(async move { informer.synced_or(&cancel).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(!waiting.is_finished());
        cancel.cancel();
        let synced = tokio::time::timeout(std::time::Duration::from_secs(5), waiting).await;
        assert!(matches!(synced, Ok(Ok(false))), "{synced:?}");
        // The informer's own task stopped too; its `synced` alone would wait for ever.
        assert!(!informer.is_synced());
        held.abort();
    }

    #[tokio::test]
    async fn a_buffered_change_does_not_keep_a_replaced_version_alive() {
        let (tx, rx) = broadcast::channel(8);
        let mut sub = Subscription { rx };
        let (v1, v2) = (config_map("v1"), config_map("v2"));
        assert!(tx.send(Sent::Applied(Arc::downgrade(&v1))).is_ok());
        assert!(tx.send(Sent::Applied(Arc::downgrade(&v2))).is_ok());
        assert!(tx.send(Sent::Deleted(config_map("gone"))).is_ok());
        // The cache replaces v1 by v2: nothing else held v1, so it is freed although the
        // subscriber has not read its change yet, and the subscriber skips to v2.
        let weak = Arc::downgrade(&v1);
        drop(v1);
        assert!(weak.upgrade().is_none());
        assert_eq!(name(&next_change(&mut sub).await.unwrap()), "v2");
        assert_eq!(name(&sub.try_next().unwrap()), "gone");
        assert!(sub.try_next().is_none());
        drop(v2);
    }

    #[tokio::test]
    async fn a_lagging_subscriber_is_told_to_resync() {
        let (tx, rx) = broadcast::channel(2);
        let mut sub = Subscription { rx };
        let kept: Vec<_> = (0..3).map(|i| config_map(&format!("c{i}"))).collect();
        for o in &kept {
            assert!(tx.send(Sent::Applied(Arc::downgrade(o))).is_ok());
        }
        assert_eq!(name(&sub.try_next().unwrap()), "(resync)");
        assert_eq!(name(&next_change(&mut sub).await.unwrap()), "c1");
        drop(tx);
        assert_eq!(name(&next_change(&mut sub).await.unwrap()), "c2");
        assert!(next_change(&mut sub).await.is_none());
    }
}
