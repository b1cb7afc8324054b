//! The controller runtime: what every API-client component (scheduler, controllers, simulated
//! nodes, later the agent) shares.
//!
//! Start at [`informer`]: one watch per resource type feeds a cache ([`kube::runtime::reflector`]
//! store) and fans changes out to every subscriber. Components turn changes into keys on a
//! [`queue::WorkQueue`] and reconcile one key at a time with [`queue::run_workers`].
//! [`events::Recorder`] writes Kubernetes Events as upstream's event broadcaster does, and
//! [`leader`] elects one active instance through a `coordination.k8s.io` Lease.
//!
//! Invariant: this room speaks only through a [`kube::Client`]; it never sees the store or the
//! API server's internals, so the same code runs in-process and over HTTPS.

pub mod events;
pub mod informer;
pub mod leader;
pub mod matching;
pub mod queue;

pub use informer::{Change, Informer, Informers, Subscription};
pub use queue::WorkQueue;

/// The key of a namespaced or cluster-scoped object on a work queue.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub namespace: String,
    pub name: String,
}

impl Key {
    pub fn new(namespace: &str, name: &str) -> Key {
        Key { namespace: namespace.to_string(), name: name.to_string() }
    }

    /// The key of `obj`.
    pub fn of<K: kube::Resource>(obj: &K) -> Key {
        let m = obj.meta();
        Key { namespace: m.namespace.clone().unwrap_or_default(), name: m.name.clone().unwrap_or_default() }
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() { f.write_str(&self.name) } else { write!(f, "{}/{}", self.namespace, self.name) }
    }
}
