//! What resources the API serves, for the controllers that handle every kind (garbage
//! collector, namespace): found through API discovery, so CRDs are included.

use std::collections::HashMap;

use kube::discovery::{ApiCapabilities, ApiResource, Discovery, Scope, verbs};

/// Served resources: the preferred version of each, and every (apiVersion, kind) known.
#[derive(Default, Clone)]
pub struct Resources {
    /// The preferred version of every resource, with what it supports.
    pub preferred: Vec<(ApiResource, ApiCapabilities)>,
    by_kind: HashMap<(String, String), (ApiResource, bool)>,
}

impl Resources {
    /// Runs discovery.
    pub async fn discover(client: &kube::Client) -> Result<Resources, kube::Error> {
        let discovery = Discovery::new(client.clone()).run().await?;
        let mut r = Resources::default();
        for group in discovery.groups() {
            for v in group.versions() {
                for (ar, caps) in group.versioned_resources(v) {
                    let namespaced = caps.scope == Scope::Namespaced;
                    r.by_kind.insert((ar.api_version.clone(), ar.kind.clone()), (ar, namespaced));
                }
            }
            r.preferred.extend(group.recommended_resources());
        }
        Ok(r)
    }

    /// The resource of `kind` in `api_version`, and whether it is namespaced.
    pub fn resolve(&self, api_version: &str, kind: &str) -> Option<&(ApiResource, bool)> {
        self.by_kind.get(&(api_version.to_string(), kind.to_string()))
    }

    /// Preferred resources supporting every verb in `needed`.
    pub fn supporting<'a>(&'a self, needed: &'a [&'a str]) -> impl Iterator<Item = &'a (ApiResource, ApiCapabilities)> {
        self.preferred.iter().filter(move |(_, caps)| needed.iter().all(|v| caps.supports_operation(v)))
    }
}

/// Verbs a resource needs for the garbage collector to track it.
pub const GC_VERBS: &[&str] = &[verbs::LIST, verbs::WATCH, verbs::DELETE];
