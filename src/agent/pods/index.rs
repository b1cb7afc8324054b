//! What the kubelet API may ask about the pods this node runs, kept current by the workers:
//! each pod's latest object, its sandbox and, per container, the newest instance and its log
//! files. Reads never touch CRI or the API.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::Pod;

use crate::agent::kubelet_api::{ContainerRef, PodSource};

/// One pod as the workers last saw it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub pod: Arc<Pod>,
    pub sandbox: Option<String>,
    /// Each container's newest instance, by container name.
    pub containers: HashMap<String, ContainerRef>,
}

/// The node's pods by namespace and name.
#[derive(Default)]
pub struct Index {
    map: RwLock<HashMap<(String, String), Entry>>,
}

impl Index {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<(String, String), Entry>> {
        self.map.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<(String, String), Entry>> {
        self.map.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn put(&self, namespace: &str, name: &str, entry: Entry) {
        self.write().insert((namespace.to_string(), name.to_string()), entry);
    }

    /// Forgets the pod with this uid.
    pub fn remove_uid(&self, uid: &str) {
        self.write().retain(|_, e| e.pod.metadata.uid.as_deref() != Some(uid));
    }
}

impl PodSource for Index {
    fn pods(&self) -> Vec<Pod> {
        self.read().values().map(|e| (*e.pod).clone()).collect()
    }

    fn container(&self, namespace: &str, pod: &str, container: &str) -> Option<ContainerRef> {
        self.read().get(&(namespace.to_string(), pod.to_string()))?.containers.get(container).cloned()
    }

    fn sandbox(&self, namespace: &str, pod: &str) -> Option<String> {
        self.read().get(&(namespace.to_string(), pod.to_string()))?.sandbox.clone()
    }
}
