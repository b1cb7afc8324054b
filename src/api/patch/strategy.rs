//! Which lists merge by key in strategic merge patch, following the `patchStrategy` and
//! `patchMergeKey` tags of upstream's Go types. Lists not named here are replaced whole.

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
