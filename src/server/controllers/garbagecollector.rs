//! The garbage collector: deletes objects whose owners are gone, and carries out the
//! `Foreground` and `Orphan` deletion policies, as upstream's.
//!
//! The graph builder watches the metadata of every resource that can be listed, watched and
//! deleted (found by discovery, refreshed every 30 s so CRDs join) and keeps a graph of owner
//! references. Three things put an object's UID on the work queue: one of its owners
//! disappeared; it names an owner the graph has never seen; it is being deleted with the
//! `foregroundDeletion` or `orphan` finalizer. Processing an object:
//! - `orphan` finalizer: remove the owner reference to it from every dependent, then the
//!   finalizer.
//! - `foregroundDeletion` finalizer: delete its dependents; once none with
//!   `blockOwnerDeletion: true` is left, remove the finalizer (the API server then deletes it).
//! - otherwise, with owner references: each owner is checked (the graph, then a live read,
//!   so an owner the watch has not delivered yet is never taken for gone). All owners gone →
//!   delete the object (background, or as its own finalizers say); some gone but one alive →
//!   drop the dangling references; only owners waiting for their dependents → delete it in
//!   the foreground.
//!
//! Events are ignored, as upstream ignores them.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, DynamicObject, PartialObjectMeta, Patch, PatchParams, Preconditions, PropagationPolicy};
use kube::discovery::ApiResource;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Ctx;
use super::discovery::{GC_VERBS, Resources};
use crate::runtime::WorkQueue;
use crate::runtime::queue::{Next, run_workers};

const ORPHAN: &str = "orphan";
const FOREGROUND: &str = "foregroundDeletion";

/// One object in the graph.
#[derive(Clone)]
struct Node {
    ar: ApiResource,
    namespace: String,
    name: String,
    owners: Vec<OwnerReference>,
    deleting: bool,
    finalizers: Vec<String>,
}

#[derive(Default)]
struct Graph {
    nodes: HashMap<String, Node>,
    dependents: HashMap<String, HashSet<String>>,
}

impl Graph {
    fn dependents_of(&self, uid: &str) -> Vec<(String, Node)> {
        self.dependents
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|d| self.nodes.get(d).map(|n| (d.clone(), n.clone())))
            .collect()
    }

    /// Puts `node`; returns what to queue.
    fn put(&mut self, uid: String, node: Node) -> Vec<String> {
        let mut queue = Vec::new();
        if let Some(old) = self.nodes.get(&uid) {
            for o in &old.owners {
                if let Some(s) = self.dependents.get_mut(&o.uid) {
                    s.remove(&uid);
                }
            }
        }
        for o in &node.owners {
            self.dependents.entry(o.uid.clone()).or_default().insert(uid.clone());
            if !self.nodes.contains_key(&o.uid) {
                queue.push(uid.clone());
            }
        }
        if node.deleting && node.finalizers.iter().any(|f| f == ORPHAN || f == FOREGROUND) {
            queue.push(uid.clone());
        }
        self.nodes.insert(uid, node);
        queue
    }

    /// Removes `uid`; returns what to queue (its dependents, and owners waiting for it).
    fn remove(&mut self, uid: &str) -> Vec<String> {
        let mut queue = Vec::new();
        if let Some(old) = self.nodes.remove(uid) {
            for o in &old.owners {
                if let Some(s) = self.dependents.get_mut(&o.uid) {
                    s.remove(uid);
                    if s.is_empty() {
                        self.dependents.remove(&o.uid);
                    }
                }
                if self.nodes.get(&o.uid).is_some_and(|n| n.deleting) {
                    queue.push(o.uid.clone());
                }
            }
        }
        queue.extend(self.dependents.get(uid).into_iter().flatten().cloned());
        queue
    }
}

enum Seen {
    Apply(ApiResource, PartialObjectMeta<DynamicObject>),
    Delete(PartialObjectMeta<DynamicObject>),
}

struct Collector {
    client: Client,
    graph: Mutex<Graph>,
    resources: Mutex<Resources>,
}

pub async fn run(ctx: Arc<Ctx>, cancel: CancellationToken) {
    let client = ctx.client.clone();
    let c = Arc::new(Collector { client: client.clone(), graph: Mutex::default(), resources: Mutex::default() });
    let queue = WorkQueue::<String>::new();
    let (tx, mut rx) = mpsc::channel::<Seen>(4096);
    let workers = {
        let c = c.clone();
        tokio::spawn(run_workers("garbage-collector", queue.clone(), 4, cancel.clone(), move |uid: String| {
            let c = c.clone();
            async move { c.process(&uid).await }
        }))
    };
    let mut watched: HashSet<(String, String)> = HashSet::new();
    let mut refresh = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = refresh.tick() => {
                match Resources::discover(&client).await {
                    Ok(r) => {
                        for (ar, _) in r.supporting(GC_VERBS) {
                            if ar.plural == "events" {
                                continue;
                            }
                            if watched.insert((ar.group.clone(), ar.plural.clone())) {
                                tokio::spawn(watch(client.clone(), ar.clone(), tx.clone(), cancel.clone()));
                            }
                        }
                        *c.resources.lock().unwrap_or_else(|p| p.into_inner()) = r;
                    }
                    Err(e) => tracing::debug!(error = %e, "garbage collector discovery failed"),
                }
            }
            seen = rx.recv() => {
                let Some(seen) = seen else { break };
                let todo = {
                    let mut g = c.graph.lock().unwrap_or_else(|p| p.into_inner());
                    match seen {
                        Seen::Apply(ar, o) => {
                            let uid = o.metadata.uid.clone().unwrap_or_default();
                            let node = Node {
                                ar,
                                namespace: o.metadata.namespace.clone().unwrap_or_default(),
                                name: o.metadata.name.clone().unwrap_or_default(),
                                owners: o.metadata.owner_references.clone().unwrap_or_default(),
                                deleting: o.metadata.deletion_timestamp.is_some(),
                                finalizers: o.metadata.finalizers.clone().unwrap_or_default(),
                            };
                            g.put(uid, node)
                        }
                        Seen::Delete(o) => g.remove(o.metadata.uid.as_deref().unwrap_or("")),
                    }
                };
                for uid in todo {
                    queue.add(uid);
                }
            }
        }
    }
    let _ = workers.await;
}

/// Feeds one resource's metadata changes to the graph builder.
async fn watch(client: Client, ar: ApiResource, tx: mpsc::Sender<Seen>, cancel: CancellationToken) {
    let api: Api<DynamicObject> = Api::all_with(client, &ar);
    let mut stream = watcher::metadata_watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(|o| o.metadata.managed_fields = None)
        .boxed();
    loop {
        let ev = tokio::select! {
            _ = cancel.cancelled() => return,
            ev = stream.next() => ev,
        };
        let Some(ev) = ev else { return };
        let seen = match ev {
            Ok(watcher::Event::Apply(o)) | Ok(watcher::Event::InitApply(o)) => Seen::Apply(ar.clone(), o),
            Ok(watcher::Event::Delete(o)) => Seen::Delete(o),
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!(resource = %ar.plural, error = %e, "garbage collector watch failed; retrying");
                continue;
            }
        };
        if tx.send(seen).await.is_err() {
            return;
        }
    }
}

#[derive(PartialEq)]
enum OwnerState {
    Solid,
    Waiting,
    Dangling,
}

impl Collector {
    fn api(&self, n: &Node) -> Api<DynamicObject> {
        if n.namespace.is_empty() {
            Api::all_with(self.client.clone(), &n.ar)
        } else {
            Api::namespaced_with(self.client.clone(), &n.namespace, &n.ar)
        }
    }

    async fn process(&self, uid: &str) -> Result<Next, kube::Error> {
        let node = self.graph.lock().unwrap_or_else(|p| p.into_inner()).nodes.get(uid).cloned();
        let Some(node) = node else { return Ok(Next::Done) };
        if node.deleting && node.finalizers.iter().any(|f| f == ORPHAN) {
            return self.orphan_dependents(uid, &node).await;
        }
        if node.deleting && node.finalizers.iter().any(|f| f == FOREGROUND) {
            return self.delete_dependents(uid, &node).await;
        }
        if node.owners.is_empty() || node.deleting {
            return Ok(Next::Done);
        }
        let mut states = Vec::new();
        for o in &node.owners {
            states.push(self.owner_state(&node, o).await?);
        }
        let solid = states.contains(&OwnerState::Solid);
        let waiting = states.contains(&OwnerState::Waiting);
        let dangling = states.contains(&OwnerState::Dangling);
        if solid {
            if dangling || waiting {
                // Keep the object; forget the owners that are gone, stop blocking those leaving.
                let refs: Vec<OwnerReference> = node
                    .owners
                    .iter()
                    .zip(&states)
                    .filter(|(_, s)| **s != OwnerState::Dangling)
                    .map(|(o, s)| {
                        let mut o = o.clone();
                        if *s == OwnerState::Waiting {
                            o.block_owner_deletion = Some(false);
                        }
                        o
                    })
                    .collect();
                let refs = if refs.is_empty() { serde_json::Value::Null } else { json!(refs) };
                let patch = json!({"metadata": {"ownerReferences": refs, "uid": uid}});
                match self.api(&node).patch(&node.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                    Err(e) => return Err(e),
                }
            }
            return Ok(Next::Done);
        }
        let has_dependents =
            self.graph.lock().unwrap_or_else(|p| p.into_inner()).dependents.get(uid).is_some_and(|d| !d.is_empty());
        let policy = if waiting {
            if has_dependents { PropagationPolicy::Foreground } else { PropagationPolicy::Background }
        } else if node.finalizers.iter().any(|f| f == ORPHAN) {
            PropagationPolicy::Orphan
        } else if node.finalizers.iter().any(|f| f == FOREGROUND) {
            PropagationPolicy::Foreground
        } else {
            PropagationPolicy::Background
        };
        let dp = DeleteParams {
            propagation_policy: Some(policy),
            preconditions: Some(Preconditions { uid: Some(uid.to_string()), resource_version: None }),
            ..Default::default()
        };
        tracing::debug!(object = %node.name, kind = %node.ar.kind, "deleting an object whose owners are gone");
        match self.api(&node).delete(&node.name, &dp).await {
            Ok(_) => Ok(Next::Done),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(Next::Done),
            Err(e) => Err(e),
        }
    }

    /// Whether an owner exists (and is not waiting for its dependents), checked against the
    /// graph and, when the graph has not seen it, against the API.
    async fn owner_state(&self, node: &Node, owner: &OwnerReference) -> Result<OwnerState, kube::Error> {
        let known = self.graph.lock().unwrap_or_else(|p| p.into_inner()).nodes.get(&owner.uid).cloned();
        let (deleting, finalizers) = match known {
            Some(n) => (n.deleting, n.finalizers),
            None => {
                let resolved = self
                    .resources
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .resolve(&owner.api_version, &owner.kind)
                    .cloned();
                // An owner of a kind the API does not serve cannot be checked: keep the object.
                let Some((ar, namespaced)) = resolved else { return Ok(OwnerState::Solid) };
                let api: Api<DynamicObject> = if namespaced {
                    Api::namespaced_with(self.client.clone(), &node.namespace, &ar)
                } else {
                    Api::all_with(self.client.clone(), &ar)
                };
                match api.get_metadata_opt(&owner.name).await? {
                    Some(o) if o.metadata.uid.as_deref() == Some(owner.uid.as_str()) => {
                        (o.metadata.deletion_timestamp.is_some(), o.metadata.finalizers.unwrap_or_default())
                    }
                    _ => return Ok(OwnerState::Dangling),
                }
            }
        };
        Ok(if deleting && finalizers.iter().any(|f| f == FOREGROUND) { OwnerState::Waiting } else { OwnerState::Solid })
    }

    async fn orphan_dependents(&self, uid: &str, node: &Node) -> Result<Next, kube::Error> {
        let dependents = self.graph.lock().unwrap_or_else(|p| p.into_inner()).dependents_of(uid);
        for (_, dep) in dependents {
            let refs: Vec<&OwnerReference> = dep.owners.iter().filter(|o| o.uid != uid).collect();
            let refs = if refs.is_empty() { serde_json::Value::Null } else { json!(refs) };
            let patch = json!({"metadata": {"ownerReferences": refs}});
            match self.api(&dep).patch(&dep.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        self.remove_finalizer(node, ORPHAN).await
    }

    async fn delete_dependents(&self, uid: &str, node: &Node) -> Result<Next, kube::Error> {
        let dependents = self.graph.lock().unwrap_or_else(|p| p.into_inner()).dependents_of(uid);
        let mut blocking = 0;
        for (dep_uid, dep) in &dependents {
            if dep.owners.iter().any(|o| o.uid == uid && o.block_owner_deletion == Some(true)) {
                blocking += 1;
            }
            if dep.deleting {
                continue;
            }
            let has_own = self
                .graph
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .dependents
                .get(dep_uid)
                .is_some_and(|d| !d.is_empty());
            let others_alive = dep.owners.iter().any(|o| o.uid != uid);
            if others_alive {
                // Another owner may keep it; let the normal path decide.
                continue;
            }
            let dp = DeleteParams {
                propagation_policy: Some(if has_own {
                    PropagationPolicy::Foreground
                } else {
                    PropagationPolicy::Background
                }),
                preconditions: Some(Preconditions { uid: Some(dep_uid.clone()), resource_version: None }),
                ..Default::default()
            };
            match self.api(dep).delete(&dep.name, &dp).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => return Err(e),
            }
        }
        if blocking > 0 {
            // Their deletion requeues us; look again later in case an event was missed.
            return Ok(Next::After(Duration::from_secs(5)));
        }
        self.remove_finalizer(node, FOREGROUND).await
    }

    async fn remove_finalizer(&self, node: &Node, finalizer: &str) -> Result<Next, kube::Error> {
        let api = self.api(node);
        let Some(current) = api.get_metadata_opt(&node.name).await? else { return Ok(Next::Done) };
        let finalizers: Vec<String> =
            current.metadata.finalizers.unwrap_or_default().into_iter().filter(|f| f != finalizer).collect();
        let patch =
            json!({"metadata": {"finalizers": finalizers, "resourceVersion": current.metadata.resource_version}});
        match api.patch(&node.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => Ok(Next::Done),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(Next::Done),
            Err(e) => Err(e),
        }
    }
}
