//! Writes core/v1 Events about objects, as upstream's event broadcaster does: asynchronously
//! (a component never waits for its events), with repeats of the same event within ten minutes
//! folded into one Event whose `count` grows, and dropped rather than queued without bound when
//! the API cannot keep up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource};
use tokio::sync::mpsc;

/// Events waiting to be written before new ones are dropped (upstream's broadcaster queue).
const QUEUE: usize = 1000;
/// Repeats within this window are folded into one Event.
const FOLD_WINDOW: Duration = Duration::from_secs(600);
/// Most events remembered for folding (upstream's correlator keeps an LRU of 4096); beyond
/// it the memory is forgotten, which costs only an unfolded repeat.
const FOLD_ENTRIES: usize = 4096;

/// `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

struct Pending {
    regarding: ObjectReference,
    type_: EventType,
    reason: String,
    message: String,
}

/// Records events for one component (`source.component`).
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Pending>,
}

impl Recorder {
    /// A recorder writing as `component` from `host` until the last clone is dropped.
    pub fn new(client: Client, component: &str, host: &str) -> Recorder {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write_loop(client, component.to_string(), host.to_string(), rx));
        Recorder { tx }
    }

    /// Records an event about `obj`.
    pub fn record<K: Resource<DynamicType = ()>>(&self, obj: &K, type_: EventType, reason: &str, message: String) {
        self.record_ref(object_ref(obj), type_, reason, message);
    }

    /// Records an event about the object `regarding` points to.
    pub fn record_ref(&self, regarding: ObjectReference, type_: EventType, reason: &str, message: String) {
        let p = Pending { regarding, type_, reason: reason.to_string(), message };
        if self.tx.try_send(p).is_err() {
            tracing::debug!("event queue full; event dropped");
        }
    }
}

/// A reference to `obj` as Events and owner references carry it.
pub fn object_ref<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    let m = obj.meta();
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        namespace: m.namespace.clone(),
        name: m.name.clone(),
        uid: m.uid.clone(),
        resource_version: m.resource_version.clone(),
        field_path: None,
    }
}

struct Folded {
    namespace: String,
    name: String,
    count: i32,
    at: Instant,
}

async fn write_loop(client: Client, component: String, host: String, mut rx: mpsc::Receiver<Pending>) {
    let seen: Arc<Mutex<HashMap<String, Folded>>> = Default::default();
    let limit = Arc::new(tokio::sync::Semaphore::new(4));
    while let Some(p) = rx.recv().await {
        let Ok(permit) = limit.clone().acquire_owned().await else { return };
        let client = client.clone();
        let seen = seen.clone();
        let (component, host) = (component.clone(), host.clone());
        tokio::spawn(async move {
            write_one(client, &component, &host, p, &seen).await;
            drop(permit);
        });
    }
}

async fn write_one(client: Client, component: &str, host: &str, p: Pending, seen: &Mutex<HashMap<String, Folded>>) {
    let namespace = p.regarding.namespace.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| "default".into());
    let api: Api<Event> = Api::namespaced(client, &namespace);
    let now = Time(chrono::Utc::now());
    let fold_key = format!(
        "{}/{}/{}/{}/{:?}/{}/{}",
        p.regarding.kind.as_deref().unwrap_or(""),
        namespace,
        p.regarding.name.as_deref().unwrap_or(""),
        p.regarding.uid.as_deref().unwrap_or(""),
        p.type_,
        p.reason,
        p.message
    );
    let repeat = {
        let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
        // Pruning scans the map, so it runs only when the map is full, not on every event
        // (10,000 pods' events made that scan quadratic).
        if seen.len() >= FOLD_ENTRIES {
            seen.retain(|_, f| f.at.elapsed() < FOLD_WINDOW);
            if seen.len() >= FOLD_ENTRIES / 2 {
                seen.clear();
            }
        }
        seen.get_mut(&fold_key).map(|f| {
            f.count += 1;
            f.at = Instant::now();
            (f.namespace.clone(), f.name.clone(), f.count)
        })
    };
    if let Some((ns, name, count)) = repeat {
        let patch = serde_json::json!({"count": count, "lastTimestamp": now});
        let api: Api<Event> = Api::namespaced(api.into_client(), &ns);
        if let Err(e) = api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            tracing::debug!(error = %e, "cannot update event");
        }
        return;
    }
    let object_name = p.regarding.name.clone().unwrap_or_default();
    let nanos = now.0.timestamp_nanos_opt().unwrap_or_default();
    let name = format!("{object_name}.{nanos:x}");
    let event = Event {
        metadata: ObjectMeta { name: Some(name.clone()), namespace: Some(namespace.clone()), ..Default::default() },
        involved_object: p.regarding,
        reason: Some(p.reason),
        message: Some(p.message),
        type_: Some(match p.type_ {
            EventType::Normal => "Normal".into(),
            EventType::Warning => "Warning".into(),
        }),
        source: Some(EventSource { component: Some(component.to_string()), host: None }),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now.clone()),
        count: Some(1),
        reporting_component: Some(component.to_string()),
        reporting_instance: Some(host.to_string()),
        action: None,
        ..Default::default()
    };
    match api.create(&PostParams::default(), &event).await {
        Ok(_) => {
            let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
            seen.insert(fold_key, Folded { namespace, name, count: 1, at: Instant::now() });
        }
        Err(e) => tracing::debug!(error = %e, "cannot write event"),
    }
}
