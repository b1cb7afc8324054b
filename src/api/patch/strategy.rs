//! Which lists merge by key in strategic merge patch, following the `patchStrategy` and
//! `patchMergeKey` tags of upstream's Go types. Lists not named here are replaced whole.
//!
//! [`TABLE`] states the facts per type and field (the OpenAPI documents publish them, and
//! kubectl computes its apply patches from them); [`list_strategy`] is the field-name view
//! the patch code uses while it walks untyped JSON.

/// How a list field is patched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListStrategy {
    /// Items are objects merged by this key.
    MergeByKey(&'static str),
    /// Items are scalars merged as a set.
    MergeScalars,
    /// The list is replaced.
    Replace,
}

/// The strategy of list field `field` whose items look like `sample` (an item of either side).
pub fn list_strategy(field: &str, sample: Option<&serde_json::Value>) -> ListStrategy {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims"
        | "schedulingGates" => ListStrategy::MergeByKey("name"),
        "volumeMounts" => ListStrategy::MergeByKey("mountPath"),
        "volumeDevices" => ListStrategy::MergeByKey("devicePath"),
        "hostAliases" => ListStrategy::MergeByKey("ip"),
        "ownerReferences" => ListStrategy::MergeByKey("uid"),
        "conditions" | "addresses" => ListStrategy::MergeByKey("type"),
        "topologySpreadConstraints" => ListStrategy::MergeByKey("topologyKey"),
        "taints" => ListStrategy::MergeByKey("key"),
        "finalizers" => ListStrategy::MergeScalars,
        "ports" => match sample {
            Some(s) if s.get("containerPort").is_some() => ListStrategy::MergeByKey("containerPort"),
            Some(s) if s.get("port").is_some() => ListStrategy::MergeByKey("port"),
            _ => ListStrategy::Replace,
        },
        _ => ListStrategy::Replace,
    }
}

/// The strategy of a list field of a known type (from [`TABLE`]; untagged lists are atomic),
/// or by field name when the type is unknown.
pub fn strategy_for(definition: Option<&str>, field: &str, sample: Option<&serde_json::Value>) -> ListStrategy {
    let Some(def) = definition.filter(|d| crate::api::schema::is_known(d)) else {
        return list_strategy(field, sample);
    };
    match TABLE.iter().find(|(d, f, _, _)| *d == def && *f == field) {
        Some((_, _, strategy, key)) if strategy.contains("merge") => {
            if key.is_empty() {
                ListStrategy::MergeScalars
            } else {
                ListStrategy::MergeByKey(key)
            }
        }
        _ => ListStrategy::Replace,
    }
}

/// `(definition, field, patch strategy, merge key)` of upstream's tagged list fields.
pub static TABLE: &[(&str, &str, &str, &str)] = &[
    ("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "finalizers", "merge", ""),
    ("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "ownerReferences", "merge", "uid"),
    ("io.k8s.api.core.v1.PodSpec", "volumes", "merge,retainKeys", "name"),
    ("io.k8s.api.core.v1.PodSpec", "initContainers", "merge", "name"),
    ("io.k8s.api.core.v1.PodSpec", "containers", "merge", "name"),
    ("io.k8s.api.core.v1.PodSpec", "ephemeralContainers", "merge", "name"),
    ("io.k8s.api.core.v1.PodSpec", "imagePullSecrets", "merge", "name"),
    ("io.k8s.api.core.v1.PodSpec", "hostAliases", "merge", "ip"),
    ("io.k8s.api.core.v1.PodSpec", "topologySpreadConstraints", "merge", "topologyKey"),
    ("io.k8s.api.core.v1.PodSpec", "resourceClaims", "merge,retainKeys", "name"),
    ("io.k8s.api.core.v1.PodSpec", "schedulingGates", "merge", "name"),
    ("io.k8s.api.core.v1.Container", "ports", "merge", "containerPort"),
    ("io.k8s.api.core.v1.Container", "env", "merge", "name"),
    ("io.k8s.api.core.v1.Container", "volumeMounts", "merge", "mountPath"),
    ("io.k8s.api.core.v1.Container", "volumeDevices", "merge", "devicePath"),
    ("io.k8s.api.core.v1.EphemeralContainer", "ports", "merge", "containerPort"),
    ("io.k8s.api.core.v1.EphemeralContainer", "env", "merge", "name"),
    ("io.k8s.api.core.v1.EphemeralContainer", "volumeMounts", "merge", "mountPath"),
    ("io.k8s.api.core.v1.EphemeralContainer", "volumeDevices", "merge", "devicePath"),
    ("io.k8s.api.core.v1.ServiceSpec", "ports", "merge", "port"),
    ("io.k8s.api.core.v1.PodStatus", "conditions", "merge", "type"),
    ("io.k8s.api.core.v1.PodStatus", "podIPs", "merge", "ip"),
    ("io.k8s.api.core.v1.PodStatus", "hostIPs", "merge", "ip"),
    ("io.k8s.api.core.v1.NodeStatus", "conditions", "merge", "type"),
    ("io.k8s.api.core.v1.NodeStatus", "addresses", "merge", "type"),
    ("io.k8s.api.core.v1.NodeSpec", "podCIDRs", "merge", ""),
    ("io.k8s.api.core.v1.NamespaceStatus", "conditions", "merge", "type"),
    ("io.k8s.api.core.v1.PersistentVolumeClaimStatus", "conditions", "merge", "type"),
    ("io.k8s.api.core.v1.ReplicationControllerStatus", "conditions", "merge", "type"),
    ("io.k8s.api.apps.v1.DeploymentStatus", "conditions", "merge", "type"),
    ("io.k8s.api.apps.v1.ReplicaSetStatus", "conditions", "merge", "type"),
    ("io.k8s.api.apps.v1.StatefulSetStatus", "conditions", "merge", "type"),
    ("io.k8s.api.apps.v1.DaemonSetStatus", "conditions", "merge", "type"),
    ("io.k8s.api.batch.v1.JobStatus", "conditions", "atomic", ""),
];
