//! Pod facts every workload controller uses: active, ready, available; the controller owner
//! reference; a pod made from a template; and which pods to delete first when scaling down.

use std::cmp::Ordering;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;

/// What the control plane keeps of a pod in its shared cache (the scheduler and every
/// controller read the same one): the fields they decide by, without the ones only a kubelet
/// reads. Dropped: the client-side `last-applied-configuration` annotation; volumes other than
/// persistent volume claims and generic ephemeral volumes; and of each container and init
/// container its command, arguments, environment, mounts, probes, lifecycle hooks and
/// security context. Everything else stays. With 10,000 pods cached this is a few KiB a pod
/// less (a projected service-account volume alone is ~4 KiB as a typed struct). Components
/// that need a whole pod read it from the API; nothing writes a cached pod back (pods are
/// changed by patches).
pub fn control_plane_view(pod: &mut Pod) {
    if let Some(a) = pod.metadata.annotations.as_mut() {
        a.remove(LAST_APPLIED);
    }
    let Some(spec) = pod.spec.as_mut() else { return };
    if let Some(volumes) = spec.volumes.as_mut() {
        volumes.retain(|v| v.persistent_volume_claim.is_some() || v.ephemeral.is_some());
    }
    let init = spec.init_containers.iter_mut().flatten();
    for c in spec.containers.iter_mut().chain(init) {
        c.command = None;
        c.args = None;
        c.env = None;
        c.env_from = None;
        c.volume_mounts = None;
        c.volume_devices = None;
        c.liveness_probe = None;
        c.readiness_probe = None;
        c.startup_probe = None;
        c.lifecycle = None;
        c.security_context = None;
    }
}

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Not finished and not being deleted.
pub fn is_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("");
    phase != "Succeeded" && phase != "Failed" && pod.metadata.deletion_timestamp.is_none()
}

/// When the pod's Ready condition became true, if it is.
pub fn ready_since(pod: &Pod) -> Option<DateTime<Utc>> {
    let c = pod.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready")?;
    if c.status != "True" {
        return None;
    }
    Some(c.last_transition_time.as_ref().map(|t| t.0).unwrap_or_else(Utc::now))
}

pub fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// Ready for at least `min_ready_seconds` at `now`.
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: DateTime<Utc>) -> bool {
    match ready_since(pod) {
        Some(t) => min_ready_seconds <= 0 || t + chrono::Duration::seconds(min_ready_seconds as i64) <= now,
        None => false,
    }
}

/// The owner reference with `controller: true`.
pub fn controller_ref(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references.iter().flatten().find(|o| o.controller == Some(true))
}

/// An owner reference making `owner` the controller of a new object.
pub fn controller_of<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A new pod from `template`, named `<prefix>` + random suffix, controlled by `owner`.
pub fn from_template(template: &PodTemplateSpec, namespace: &str, prefix: &str, owner: OwnerReference) -> Pod {
    let tm = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(prefix.to_string()),
            namespace: Some(namespace.to_string()),
            labels: tm.labels,
            annotations: tm.annotations,
            finalizers: tm.finalizers,
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

fn rank_phase(pod: &Pod) -> u8 {
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending") {
        "Pending" => 0,
        "Unknown" => 1,
        "Running" => 2,
        _ => 3,
    }
}

fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|c| c.iter().map(|c| c.restart_count).sum())
        .unwrap_or(0)
}

/// Upstream's order of pods to delete first when scaling down: unscheduled before scheduled,
/// pending before running, not ready before ready, recently ready before long ready, more
/// restarts before fewer, newer before older.
pub fn deletion_order(a: &Pod, b: &Pod) -> Ordering {
    let scheduled = |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty());
    scheduled(a)
        .cmp(&scheduled(b))
        .then_with(|| rank_phase(a).cmp(&rank_phase(b)))
        .then_with(|| is_ready(a).cmp(&is_ready(b)))
        .then_with(|| ready_since(b).cmp(&ready_since(a)))
        .then_with(|| restarts(b).cmp(&restarts(a)))
        .then_with(|| {
            let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
            created(b).cmp(&created(a))
        })
}

/// Makes `owner` the controller of the orphan `obj` (with a UID precondition, so an object
/// replaced meanwhile is not adopted by mistake). `None` when the object changed or is gone.
pub async fn adopt<K>(api: &kube::Api<K>, obj: &K, owner: OwnerReference) -> Result<Option<K>, kube::Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let meta = obj.meta();
    let mut refs = meta.owner_references.clone().unwrap_or_default();
    refs.push(owner);
    let patch = serde_json::json!({"metadata": {"ownerReferences": refs, "uid": meta.uid}});
    let name = meta.name.as_deref().unwrap_or("");
    match api.patch(name, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch)).await {
        Ok(o) => Ok(Some(o)),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 || e.code == 422 => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes the owner reference to `uid` from `obj` (it no longer matches its controller).
pub async fn release<K>(api: &kube::Api<K>, obj: &K, uid: &str) -> Result<(), kube::Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let meta = obj.meta();
    let refs: Vec<_> = meta.owner_references.iter().flatten().filter(|o| o.uid != uid).cloned().collect();
    let refs = if refs.is_empty() { serde_json::Value::Null } else { serde_json::json!(refs) };
    let patch = serde_json::json!({"metadata": {"ownerReferences": refs, "uid": meta.uid}});
    let name = meta.name.as_deref().unwrap_or("");
    match api.patch(name, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 || e.code == 422 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether the pod finished (Succeeded or Failed).
pub fn is_terminal(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded") | Some("Failed"))
}

/// Queues the controller an object changed for: the owner of kind `kind` its controller
/// reference names, or, for an orphan, every owner in its namespace whose selector matches it
/// (each may adopt it).
pub fn queue_controller_of<K: crate::runtime::informer::Cached>(
    meta: &ObjectMeta,
    kind: &str,
    owners: &crate::runtime::Informer<K>,
    selector: impl Fn(&K) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
    queue: &crate::runtime::WorkQueue<crate::runtime::Key>,
) {
    let ns = meta.namespace.as_deref().unwrap_or("");
    match controller_ref(meta) {
        Some(r) if r.kind == kind => queue.add(crate::runtime::Key::new(ns, &r.name)),
        Some(_) => {}
        None => {
            let labels = meta.labels.clone().unwrap_or_default();
            for o in owners.in_namespace(ns) {
                if selector(&o).is_some_and(|s| crate::runtime::matching::selector_matches(&s, &labels)) {
                    queue.add(crate::runtime::Key::of(o.as_ref()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_plane_view_keeps_what_scheduling_and_controllers_read() {
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "labels": {"app": "web"},
                "annotations": {"keep": "1", "kubectl.kubernetes.io/last-applied-configuration": "{}"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u", "controller": true}]},
            "spec": {
                "nodeName": "n1",
                "tolerations": [{"key": "k", "operator": "Exists"}],
                "volumes": [
                    {"name": "data", "persistentVolumeClaim": {"claimName": "data-p"}},
                    {"name": "kube-api-access", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}},
                    {"name": "cfg", "configMap": {"name": "c"}}
                ],
                "initContainers": [{"name": "init", "image": "busybox", "command": ["true"], "restartPolicy": "Always"}],
                "containers": [{"name": "app", "image": "busybox", "command": ["sleep"], "args": ["1"],
                    "env": [{"name": "A", "value": "b"}], "volumeMounts": [{"name": "cfg", "mountPath": "/c"}],
                    "readinessProbe": {"exec": {"command": ["true"]}},
                    "ports": [{"name": "http", "containerPort": 80, "hostPort": 8080}],
                    "resources": {"requests": {"cpu": "10m"}}}]
            },
            "status": {"phase": "Running", "podIP": "10.42.0.5", "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap();
        let before = pod.clone();
        control_plane_view(&mut pod);

        assert_eq!(pod.status, before.status);
        assert_eq!(pod.metadata.labels, before.metadata.labels);
        assert_eq!(pod.metadata.owner_references, before.metadata.owner_references);
        let annotations: Vec<&String> = pod.metadata.annotations.as_ref().unwrap().keys().collect();
        assert_eq!(annotations, ["keep"]);
        let spec = pod.spec.as_ref().unwrap();
        let old = before.spec.as_ref().unwrap();
        assert_eq!((&spec.node_name, &spec.tolerations), (&old.node_name, &old.tolerations));
        let volumes: Vec<&str> = spec.volumes.iter().flatten().map(|v| v.name.as_str()).collect();
        assert_eq!(volumes, ["data"]);
        let c = &spec.containers[0];
        assert_eq!(
            (&c.name, &c.image, &c.ports, &c.resources),
            (&old.containers[0].name, &old.containers[0].image, &old.containers[0].ports, &old.containers[0].resources)
        );
        assert_eq!(
            (&c.command, &c.args, &c.env, &c.volume_mounts, &c.readiness_probe),
            (&None, &None, &None, &None, &None)
        );
        let init = &spec.init_containers.as_ref().unwrap()[0];
        assert_eq!((init.restart_policy.as_deref(), &init.command), (Some("Always"), &None));
    }
}
