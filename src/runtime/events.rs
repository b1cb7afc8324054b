//! Writes core/v1 Events about objects, as upstream's event broadcaster and its correlator do:
//! asynchronously (a component never waits for its events), and without flooding the API:
//!
//! - the same event again within ten minutes is one Event whose `count` grows;
//! - past ten different messages for the same object and reason within ten minutes, the rest
//!   are folded into one Event "(combined from similar events): <latest message>";
//! - one component may write 25 Events about one object at once, then one every five minutes
//!   (a token bucket per object); the rest are dropped, like upstream's spam filter drops
//!   them, so a ReplicaSet creating 100 pods records 25 of its `SuccessfulCreate` events;
//! - when the API cannot keep up, new events are dropped rather than queued without bound.
//!
//! [`Correlator`] decides (pure, with the time passed in); writer lanes do the API calls. All
//! writes about one Event go through the same lane, so a count update never overtakes the
//! creation it updates.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource};
use tokio::sync::mpsc;

/// Events waiting to be correlated before new ones are dropped (upstream's broadcaster queue).
const QUEUE: usize = 1000;
/// Writes in flight at once; each lane writes one Event at a time.
const LANES: usize = 4;
/// Writes waiting per lane before new ones are dropped.
const LANE_QUEUE: usize = 256;
/// Repeats and similar events within this window are folded.
const FOLD_WINDOW: Duration = Duration::from_secs(600);
/// Different messages for one object and reason before they are combined.
const AGGREGATE_AFTER: usize = 10;
/// Events a component may write about one object at once ...
const SPAM_BURST: f64 = 25.0;
/// ... and how often one more is allowed after that.
const SPAM_REFILL: Duration = Duration::from_secs(300);
/// Most entries each table remembers (upstream's correlator keeps LRUs of 4096); beyond it
/// the oldest are forgotten, which costs only an unfolded repeat or a fresh burst.
const ENTRIES: usize = 4096;

/// `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
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
        tokio::spawn(correlate_loop(client, component.to_string(), host.to_string(), rx));
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

/// What to write for one recorded event.
#[derive(Debug, PartialEq)]
enum Decision {
    /// Nothing: the object's budget is spent.
    Drop,
    /// A new Event named `name` with this message and count 1.
    Create { name: String, message: String },
    /// Event `name` again: its count is now `count`, its message `message`.
    Repeat { name: String, message: String, count: i32 },
}

/// Messages seen for one object and reason.
struct Similar {
    messages: HashSet<String>,
    at: Instant,
}

/// An Event already written.
struct Written {
    name: String,
    count: i32,
    at: Instant,
}

/// One object's token bucket.
struct Budget {
    tokens: f64,
    at: Instant,
}

/// Upstream's event correlator: aggregation, then de-duplication, then the spam filter.
#[derive(Default)]
struct Correlator {
    similar: HashMap<String, Similar>,
    written: HashMap<String, Written>,
    budgets: HashMap<String, Budget>,
}

/// Keeps `map` under [`ENTRIES`]: drops entries older than the window, and everything if that
/// is not enough. Runs only when the map is full, so it costs nothing per event.
fn bound<V>(map: &mut HashMap<String, V>, now: Instant, at: impl Fn(&V) -> Instant, window: Duration) {
    if map.len() >= ENTRIES {
        map.retain(|_, v| now.saturating_duration_since(at(v)) < window);
        if map.len() >= ENTRIES / 2 {
            map.clear();
        }
    }
}

impl Correlator {
    fn correlate(&mut self, p: &Pending, name_for: impl FnOnce() -> String, now: Instant) -> Decision {
        let r = &p.regarding;
        let s = |v: &Option<String>| v.clone().unwrap_or_default();
        let object = [s(&r.kind), s(&r.namespace), s(&r.name), s(&r.uid), s(&r.api_version)].join("\u{0}");
        let group = format!("{object}\u{0}{}\u{0}{}", p.type_.as_str(), p.reason);

        // Similar events (another message, same object and reason) past the limit are combined.
        bound(&mut self.similar, now, |v| v.at, FOLD_WINDOW);
        let similar =
            self.similar.entry(group.clone()).or_insert_with(|| Similar { messages: HashSet::new(), at: now });
        if now.saturating_duration_since(similar.at) > FOLD_WINDOW {
            similar.messages.clear();
        }
        similar.messages.insert(p.message.clone());
        similar.at = now;
        let (key, message) = if similar.messages.len() < AGGREGATE_AFTER {
            (format!("{group}\u{0}{}\u{0}{}", s(&r.field_path), p.message), p.message.clone())
        } else {
            // Keep the set at the limit, so every further message is combined too.
            if let Some(any) = similar.messages.iter().next().cloned() {
                similar.messages.remove(&any);
            }
            (format!("{group}\u{0}combined"), format!("(combined from similar events): {}", p.message))
        };

        // The same Event again within the window: its count grows.
        bound(&mut self.written, now, |v| v.at, FOLD_WINDOW);
        let decision = match self.written.get_mut(&key) {
            Some(w) if now.saturating_duration_since(w.at) < FOLD_WINDOW => {
                w.count += 1;
                w.at = now;
                Decision::Repeat { name: w.name.clone(), message, count: w.count }
            }
            _ => {
                let name = name_for();
                self.written.insert(key, Written { name: name.clone(), count: 1, at: now });
                Decision::Create { name, message }
            }
        };

        // The object's budget, spent by repeats as well.
        let full = SPAM_REFILL.mul_f64(SPAM_BURST);
        bound(&mut self.budgets, now, |v| v.at, full);
        let budget = self.budgets.entry(object).or_insert(Budget { tokens: SPAM_BURST, at: now });
        let refill = now.saturating_duration_since(budget.at).as_secs_f64() / SPAM_REFILL.as_secs_f64();
        budget.tokens = (budget.tokens + refill).min(SPAM_BURST);
        budget.at = now;
        if budget.tokens < 1.0 {
            return Decision::Drop;
        }
        budget.tokens -= 1.0;
        decision
    }
}

/// One write for a lane.
struct Write {
    namespace: String,
    decision: Decision,
    event: Event,
}

async fn correlate_loop(client: Client, component: String, host: String, mut rx: mpsc::Receiver<Pending>) {
    let lanes: Vec<mpsc::Sender<Write>> = (0..LANES)
        .map(|_| {
            let (tx, rx) = mpsc::channel(LANE_QUEUE);
            tokio::spawn(write_lane(client.clone(), rx));
            tx
        })
        .collect();
    let mut correlator = Correlator::default();
    while let Some(p) = rx.recv().await {
        let object_name = p.regarding.name.clone().unwrap_or_default();
        let name_for = || {
            let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
            format!("{object_name}.{nanos:x}")
        };
        let decision = correlator.correlate(&p, name_for, Instant::now());
        let (Decision::Create { name, .. } | Decision::Repeat { name, .. }) = &decision else { continue };
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        name.hash(&mut hasher);
        let lane = &lanes[hasher.finish() as usize % LANES];
        let namespace = p.regarding.namespace.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| "default".into());
        let now = Time(chrono::Utc::now());
        let event = Event {
            metadata: ObjectMeta { name: Some(name.clone()), namespace: Some(namespace.clone()), ..Default::default() },
            involved_object: p.regarding,
            reason: Some(p.reason),
            message: None,
            type_: Some(p.type_.as_str().into()),
            source: Some(EventSource { component: Some(component.clone()), host: None }),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            reporting_component: Some(component.clone()),
            reporting_instance: Some(host.clone()),
            action: None,
            ..Default::default()
        };
        if lane.try_send(Write { namespace, decision, event }).is_err() {
            tracing::debug!("event writer busy; event dropped");
        }
    }
}

/// Writes one lane's events in order.
async fn write_lane(client: Client, mut rx: mpsc::Receiver<Write>) {
    while let Some(Write { namespace, decision, mut event }) = rx.recv().await {
        let api: Api<Event> = Api::namespaced(client.clone(), &namespace);
        match decision {
            Decision::Drop => {}
            Decision::Create { message, .. } => {
                event.message = Some(message);
                if let Err(e) = api.create(&PostParams::default(), &event).await {
                    tracing::debug!(error = %e, "cannot write event");
                }
            }
            Decision::Repeat { name, message, count } => {
                let patch =
                    serde_json::json!({"count": count, "lastTimestamp": event.last_timestamp, "message": message});
                match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                    // The Event is gone (expired or deleted): written anew under its name.
                    Err(kube::Error::Api(s)) if s.code == 404 => {
                        event.message = Some(message);
                        event.count = Some(count);
                        if let Err(e) = api.create(&PostParams::default(), &event).await {
                            tracing::debug!(error = %e, "cannot write event");
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "cannot update event"),
                    Ok(_) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(name: &str, reason: &str, message: &str) -> Pending {
        Pending {
            regarding: ObjectReference {
                kind: Some("ReplicaSet".into()),
                namespace: Some("default".into()),
                name: Some(name.into()),
                uid: Some(format!("uid-{name}")),
                api_version: Some("apps/v1".into()),
                ..Default::default()
            },
            type_: EventType::Normal,
            reason: reason.into(),
            message: message.into(),
        }
    }

    /// Records `p` at `now`, naming new Events `e<n>`.
    fn record(c: &mut Correlator, p: &Pending, now: Instant, n: &mut usize) -> Decision {
        *n += 1;
        let name = format!("e{n}");
        c.correlate(p, || name, now)
    }

    #[test]
    fn repeats_count_up_and_similar_messages_are_combined_after_ten() {
        let (mut c, t0, mut n) = (Correlator::default(), Instant::now(), 0);
        let first = pending("web", "SuccessfulCreate", "Created pod: web-0");
        assert_eq!(
            record(&mut c, &first, t0, &mut n),
            Decision::Create { name: "e1".into(), message: "Created pod: web-0".into() }
        );
        assert_eq!(
            record(&mut c, &first, t0, &mut n),
            Decision::Repeat { name: "e1".into(), message: "Created pod: web-0".into(), count: 2 }
        );
        let mut decisions = Vec::new();
        for i in 1..12 {
            decisions.push(record(
                &mut c,
                &pending("web", "SuccessfulCreate", &format!("Created pod: web-{i}")),
                t0,
                &mut n,
            ));
        }
        // web-1 .. web-8 are Events of their own; the tenth message starts the combined one.
        assert!(matches!(&decisions[7], Decision::Create { message, .. } if message == "Created pod: web-8"));
        let Decision::Create { name: combined, message } = &decisions[8] else { panic!("{:?}", decisions[8]) };
        assert_eq!(message, "(combined from similar events): Created pod: web-9");
        assert_eq!(
            decisions[10],
            Decision::Repeat {
                name: combined.clone(),
                message: "(combined from similar events): Created pod: web-11".into(),
                count: 3
            }
        );
        // Another reason about the same object is a group of its own.
        let other = record(&mut c, &pending("web", "SuccessfulDelete", "Deleted pod: web-0"), t0, &mut n);
        assert!(matches!(other, Decision::Create { message, .. } if message == "Deleted pod: web-0"));
    }

    #[test]
    fn an_object_gets_25_events_then_one_every_five_minutes() {
        let (mut c, t0, mut n) = (Correlator::default(), Instant::now(), 0);
        let written = (0..40)
            .map(|i| record(&mut c, &pending("rs", "SuccessfulCreate", &format!("Created pod: rs-{i}")), t0, &mut n))
            .filter(|d| *d != Decision::Drop)
            .count();
        assert_eq!(written, 25);
        // Other objects have budgets of their own.
        let elsewhere = record(&mut c, &pending("other", "SuccessfulCreate", "Created pod: other-0"), t0, &mut n);
        assert_ne!(elsewhere, Decision::Drop);
        let p = pending("rs", "SuccessfulCreate", "Created pod: rs-40");
        assert_eq!(record(&mut c, &p, t0 + Duration::from_secs(200), &mut n), Decision::Drop);
        assert_ne!(record(&mut c, &p, t0 + Duration::from_secs(301), &mut n), Decision::Drop);
        assert_eq!(record(&mut c, &p, t0 + Duration::from_secs(302), &mut n), Decision::Drop);
    }

    #[test]
    fn after_the_window_an_event_starts_afresh() {
        let (mut c, t0, mut n) = (Correlator::default(), Instant::now(), 0);
        let p = pending("web", "ScalingReplicaSet", "Scaled up to 3");
        assert!(matches!(record(&mut c, &p, t0, &mut n), Decision::Create { .. }));
        let later = t0 + FOLD_WINDOW + Duration::from_secs(1);
        assert!(matches!(record(&mut c, &p, later, &mut n), Decision::Create { name, .. } if name == "e2"));
    }
}
