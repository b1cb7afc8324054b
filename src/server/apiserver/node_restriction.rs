//! NodeRestriction admission: what a node may write into the objects the node authorizer lets
//! it reach, as upstream's plugin of that name. A node changes its own Node (never its taints,
//! nor labels under `node-restriction.kubernetes.io/` or kubernetes.io labels a kubelet does
//! not own, such as `node-role.kubernetes.io/*`), its own Lease, the status of pods bound to
//! it, and creates or deletes only mirror pods and pods bound to it.
//!
//! Everything here is a pure function of the write and the stored object; the object layer
//! calls it for writes of users the node authorizer calls nodes, and turns the message into a
//! 403 naming the object.

use serde_json::Value;

use crate::api::node_labels;
use crate::api::registry::ResourceInfo;
use crate::api::status::ApiError;
use crate::server::auth::node::{self, Kind, NODE_LEASE_NAMESPACE};

/// An admission operation, named as upstream's messages print it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Create,
    Update,
    Delete,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Create => "CREATE",
            Op::Update => "UPDATE",
            Op::Delete => "DELETE",
        }
    }
}

/// One write as admission sees it.
#[derive(Debug, Clone, Copy)]
pub struct Write<'a> {
    pub op: Op,
    pub group: &'a str,
    pub plural: &'a str,
    pub subresource: &'a str,
    pub namespace: &'a str,
    /// The object's name (a create's is the body's).
    pub name: &'a str,
    /// The object after the write (create, update).
    pub new: Option<&'a Value>,
    /// The stored object (update, delete; for an eviction, the pod).
    pub old: Option<&'a Value>,
}

const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

fn labels(obj: Option<&Value>) -> serde_json::Map<String, Value> {
    obj.and_then(|o| o.pointer("/metadata/labels")).and_then(Value::as_object).cloned().unwrap_or_default()
}

/// The sorted keys whose labels differ between the two objects and that a node may not touch.
fn forbidden_changes(new: Option<&Value>, old: Option<&Value>) -> Vec<String> {
    let (a, b) = (labels(new), labels(old));
    let mut out: Vec<String> = a
        .iter()
        .filter(|(k, v)| b.get(*k) != Some(v))
        .chain(b.iter().filter(|(k, _)| !a.contains_key(*k)))
        .map(|(k, _)| k.clone())
        .filter(|k| node_labels::restricted(k))
        .collect();
    out.sort();
    out.dedup();
    out
}

fn node_name_of(pod: Option<&Value>) -> &str {
    pod.and_then(|p| p.pointer("/spec/nodeName")).and_then(Value::as_str).unwrap_or("")
}

/// A list that may be absent, null or empty: all the same to upstream's semantic equality.
fn list_at<'a>(obj: Option<&'a Value>, pointer: &str) -> &'a [Value] {
    obj.and_then(|o| o.pointer(pointer)).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

impl<'a> Write<'a> {
    /// A write of `info`'s objects with no bodies yet.
    pub fn of(op: Op, info: &'a ResourceInfo, subresource: &'a str, namespace: &'a str, name: &'a str) -> Self {
        Write { op, group: info.group, plural: info.plural, subresource, namespace, name, new: None, old: None }
    }
}

/// [`admit`], refusing with the API's 403 naming the object.
pub fn check(node: &str, w: &Write<'_>) -> Result<(), ApiError> {
    admit(node, w).map_err(|m| ApiError::forbidden(w.group, w.plural, w.name, m))
}

/// Checks a write by the node `node`; the error is the reason of a 403.
pub fn admit(node: &str, w: &Write<'_>) -> Result<(), String> {
    if node.is_empty() {
        return Err("could not determine node from user".into());
    }
    match (w.group, w.plural) {
        ("", "pods") => admit_pod(node, w),
        ("", "nodes") => admit_node(node, w),
        ("", "persistentvolumeclaims") => match (w.subresource, w.op) {
            ("status", Op::Update) => admit_claim_status(node, w),
            ("status", op) => Err(format!("unexpected operation {:?}", op.as_str())),
            _ => Err("may only update PVC status".into()),
        },
        ("coordination.k8s.io", "leases") => {
            if w.namespace != NODE_LEASE_NAMESPACE {
                return Err(format!("can only access leases in the {NODE_LEASE_NAMESPACE:?} system namespace"));
            }
            if w.name != node {
                return Err("can only access node lease with the same name as the requesting node".into());
            }
            Ok(())
        }
        ("storage.k8s.io", "csinodes") if w.name != node => {
            Err("can only access CSINode with the same name as the requesting node".into())
        }
        _ => Ok(()),
    }
}

fn admit_pod(node: &str, w: &Write<'_>) -> Result<(), String> {
    match (w.subresource, w.op) {
        ("", Op::Create) => Ok(()), // see `admit_mirror_pod`, which needs the Node
        ("", Op::Delete) if node_name_of(w.old) != node => {
            Err(format!("node {node:?} can only delete pods with spec.nodeName set to itself"))
        }
        ("", Op::Delete) => Ok(()),
        ("", op) => {
            Err(format!("unexpected operation {:?}, node {node:?} can only create and delete mirror pods", op.as_str()))
        }
        ("status", Op::Update) => {
            if node_name_of(w.old) != node {
                return Err(format!(
                    "node {node:?} can only update pod status for pods with spec.nodeName set to itself"
                ));
            }
            if labels(w.new) != labels(w.old) {
                return Err(format!("node {node:?} cannot update labels through pod status"));
            }
            Ok(())
        }
        ("status", op) => Err(format!("unexpected operation {:?}", op.as_str())),
        ("eviction", Op::Create) if node_name_of(w.old) != node => {
            Err(format!("node {node} can only evict pods with spec.nodeName set to itself"))
        }
        ("eviction", Op::Create) => Ok(()),
        ("eviction", op) => Err(format!("unexpected operation {}", op.as_str())),
        (sub, _) => Err(format!("unexpected pod subresource {sub:?}, only 'status' and 'eviction' are allowed")),
    }
}

/// A pod a node creates: a mirror pod of one of its static pods, bound to it, owned by its
/// Node (`node_uid`), naming no other object.
pub fn admit_mirror_pod(node: &str, pod: &Value, node_uid: &str) -> Result<(), String> {
    if pod.pointer("/metadata/annotations").and_then(|a| a.get(MIRROR_ANNOTATION)).is_none() {
        return Err(format!(
            "pod does not have {MIRROR_ANNOTATION:?} annotation, node {node:?} can only create mirror pods"
        ));
    }
    if node_name_of(Some(pod)) != node {
        return Err(format!("node {node:?} can only create pods with spec.nodeName set to itself"));
    }
    let owners = list_at(Some(pod), "/metadata/ownerReferences");
    match owners {
        [] => return Err(format!("node {node:?} can only create pods with an owner reference set to itself")),
        [owner] => {
            let s = |k: &str| owner.get(k).and_then(Value::as_str).unwrap_or("");
            if s("apiVersion") != "v1" || s("kind") != "Node" || s("name") != node {
                return Err(format!("node {node:?} can only create pods with an owner reference set to itself"));
            }
            if owner.get("controller").and_then(Value::as_bool) != Some(true) {
                return Err(format!(
                    "node {node:?} can only create pods with a controller owner reference set to itself"
                ));
            }
            if owner.get("blockOwnerDeletion").and_then(Value::as_bool) == Some(true) {
                return Err(format!("node {node:?} must not set blockOwnerDeletion on an owner reference"));
            }
            if s("uid") != node_uid {
                return Err(format!("node {node} UID mismatch: expected {} got {node_uid}", s("uid")));
            }
        }
        _ => return Err(format!("node {node:?} can only create pods with a single owner reference set to itself")),
    }
    let spec = pod.get("spec");
    let kinds = node::referenced_kinds(spec);
    let names = |kind: Kind| kinds.contains(&kind);
    if names(Kind::ServiceAccount) {
        return Err(format!("node {node:?} can not create pods that reference a service account"));
    }
    if names(Kind::Secret) {
        return Err(format!("node {node:?} can not create pods that reference secrets"));
    }
    if names(Kind::ConfigMap) {
        return Err(format!("node {node:?} can not create pods that reference configmaps"));
    }
    let trust_bundles = list_at(spec, "/volumes")
        .iter()
        .flat_map(|v| list_at(Some(v), "/projected/sources"))
        .any(|s| s.get("clusterTrustBundle").is_some_and(|x| !x.is_null()));
    if trust_bundles {
        return Err(format!("node {node:?} can not create pods that reference clustertrustbundles"));
    }
    if names(Kind::Claim) {
        return Err(format!("node {node:?} can not create pods that reference persistentvolumeclaims"));
    }
    Ok(())
}

fn config_source(node: Option<&Value>) -> Option<&Value> {
    node.and_then(|n| n.pointer("/spec/configSource")).filter(|c| !c.is_null())
}

fn admit_node(node: &str, w: &Write<'_>) -> Result<(), String> {
    if w.name != node {
        return Err(format!("node {node:?} is not allowed to modify node {:?}", w.name));
    }
    match w.op {
        Op::Create => {
            if config_source(w.new).is_some() {
                return Err(format!("node {node:?} is not allowed to create pods with a non-nil configSource"));
            }
            let forbidden = forbidden_changes(w.new, None);
            if !forbidden.is_empty() {
                return Err(format!(
                    "node {node:?} is not allowed to set the following labels: {}",
                    forbidden.join(", ")
                ));
            }
        }
        Op::Update => {
            if config_source(w.new).is_some() && config_source(w.new) != config_source(w.old) {
                return Err(format!(
                    "node {node:?} is not allowed to update configSource to a new non-nil configSource"
                ));
            }
            if list_at(w.new, "/spec/taints") != list_at(w.old, "/spec/taints") {
                return Err(format!("node {node:?} is not allowed to modify taints"));
            }
            let forbidden = forbidden_changes(w.new, w.old);
            if !forbidden.is_empty() {
                return Err(format!("is not allowed to modify labels: {}", forbidden.join(", ")));
            }
        }
        Op::Delete => {}
    }
    Ok(())
}

/// A claim's status written by a node: only capacity, conditions and the allocated resources
/// may change.
fn admit_claim_status(node: &str, w: &Write<'_>) -> Result<(), String> {
    let strip = |o: Option<&Value>| {
        let mut o = o.cloned().unwrap_or(Value::Null);
        if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
            m.remove("managedFields");
        }
        if let Some(s) = o.get_mut("status").and_then(Value::as_object_mut) {
            for k in ["capacity", "conditions", "allocatedResourceStatuses", "allocatedResources"] {
                s.remove(k);
            }
        }
        o
    };
    if strip(w.new) != strip(w.old) {
        return Err(format!(
            "node {node:?} is not allowed to update fields other than status.capacity and status.conditions"
        ));
    }
    Ok(())
}

/// The pod a node's TokenRequest must be bound to: (name, uid).
pub fn token_binding(request: &Value) -> Result<(&str, &str), String> {
    let r = request.pointer("/spec/boundObjectRef").filter(|r| !r.is_null());
    let s = |k: &str| r.and_then(|r| r.get(k)).and_then(Value::as_str).unwrap_or("");
    if r.is_none() || s("apiVersion") != "v1" || s("kind") != "Pod" || s("name").is_empty() {
        return Err("node requested token not bound to a pod".into());
    }
    if s("uid").is_empty() {
        return Err("node requested token with a pod binding without a uid".into());
    }
    Ok((s("name"), s("uid")))
}

/// The stored pod a node's TokenRequest is bound to (with `uid`) must be that pod, on the node.
pub fn admit_token_pod(node: &str, uid: &str, pod: &Value) -> Result<(), String> {
    if pod.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid) {
        return Err(format!(
            "the UID in the bound object reference ({uid}) does not match the UID in record. The object might have been deleted and then recreated"
        ));
    }
    if node_name_of(Some(pod)) != node {
        return Err("node requested token bound to a pod scheduled on a different node".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn write<'a>(
        op: Op,
        plural: &'a str,
        sub: &'a str,
        name: &'a str,
        new: Option<&'a Value>,
        old: Option<&'a Value>,
    ) -> Write<'a> {
        Write { op, group: "", plural, subresource: sub, namespace: "default", name, new, old }
    }

    fn node(labels: Value, taints: Value) -> Value {
        json!({"metadata": {"name": "n1", "labels": labels}, "spec": {"taints": taints}})
    }

    #[test]
    fn a_node_writes_only_itself_and_keeps_its_taints_and_restricted_labels() {
        let old =
            node(json!({"kubernetes.io/hostname": "n1", "node-role.kubernetes.io/control-plane": "true"}), json!(null));
        let mine = |new: &Value| admit("n1", &write(Op::Update, "nodes", "", "n1", Some(new), Some(&old)));
        assert_eq!(
            admit("n1", &write(Op::Update, "nodes", "", "n2", Some(&old), Some(&old))),
            Err("node \"n1\" is not allowed to modify node \"n2\"".into())
        );
        assert_eq!(
            admit("n1", &write(Op::Delete, "nodes", "", "n2", None, Some(&old))),
            Err("node \"n1\" is not allowed to modify node \"n2\"".into())
        );
        // Its own labels, and kubelet-owned ones, are the node's to change.
        let ok = node(
            json!({"kubernetes.io/hostname": "n1", "node-role.kubernetes.io/control-plane": "true", "example.com/rack": "3", "node.kubernetes.io/exclude-from-external-load-balancers": "", "topology.kubernetes.io/zone": "a"}),
            json!([]),
        );
        assert_eq!(mine(&ok), Ok(()));
        let roles = node(
            json!({"kubernetes.io/hostname": "n1", "node-role.kubernetes.io/worker": "", "node-restriction.kubernetes.io/pool": "x", "tier.k8s.io/x": "y"}),
            json!(null),
        );
        assert_eq!(
            mine(&roles),
            Err("is not allowed to modify labels: node-restriction.kubernetes.io/pool, node-role.kubernetes.io/control-plane, node-role.kubernetes.io/worker, tier.k8s.io/x".into())
        );
        let tainted = node(
            json!({"kubernetes.io/hostname": "n1", "node-role.kubernetes.io/control-plane": "true"}),
            json!([{"key": "k", "effect": "NoSchedule"}]),
        );
        assert_eq!(mine(&tainted), Err("node \"n1\" is not allowed to modify taints".into()));
        // Registering: taints are the node's own; restricted labels are not.
        assert_eq!(
            admit("n1", &write(Op::Create, "nodes", "", "n1", Some(&tainted), None)),
            Err("node \"n1\" is not allowed to set the following labels: node-role.kubernetes.io/control-plane".into())
        );
        let plain = node(
            json!({"kubernetes.io/hostname": "n1", "kubernetes.io/arch": "arm64"}),
            json!([{"key": "k", "effect": "NoSchedule"}]),
        );
        assert_eq!(admit("n1", &write(Op::Create, "nodes", "", "n1", Some(&plain), None)), Ok(()));
        assert_eq!(
            admit("", &write(Op::Create, "nodes", "", "n1", Some(&plain), None)),
            Err("could not determine node from user".into())
        );
    }

    #[test]
    fn pods_of_other_nodes_are_out_of_reach() {
        let theirs = json!({"metadata": {"name": "p", "labels": {"a": "1"}}, "spec": {"nodeName": "n2"}});
        let mine = json!({"metadata": {"name": "p", "labels": {"a": "1"}}, "spec": {"nodeName": "n1"}});
        assert_eq!(
            admit("n1", &write(Op::Delete, "pods", "", "p", None, Some(&theirs))),
            Err("node \"n1\" can only delete pods with spec.nodeName set to itself".into())
        );
        assert_eq!(admit("n1", &write(Op::Delete, "pods", "", "p", None, Some(&mine))), Ok(()));
        assert_eq!(
            admit("n1", &write(Op::Update, "pods", "status", "p", Some(&theirs), Some(&theirs))),
            Err("node \"n1\" can only update pod status for pods with spec.nodeName set to itself".into())
        );
        assert_eq!(admit("n1", &write(Op::Update, "pods", "status", "p", Some(&mine), Some(&mine))), Ok(()));
        let relabelled = json!({"metadata": {"name": "p", "labels": {"a": "2"}}, "spec": {"nodeName": "n1"}});
        assert_eq!(
            admit("n1", &write(Op::Update, "pods", "status", "p", Some(&relabelled), Some(&mine))),
            Err("node \"n1\" cannot update labels through pod status".into())
        );
        assert_eq!(
            admit("n1", &write(Op::Update, "pods", "", "p", Some(&mine), Some(&mine))),
            Err("unexpected operation \"UPDATE\", node \"n1\" can only create and delete mirror pods".into())
        );
        assert_eq!(
            admit("n1", &write(Op::Create, "pods", "eviction", "p", None, Some(&theirs))),
            Err("node n1 can only evict pods with spec.nodeName set to itself".into())
        );
        assert_eq!(
            admit("n1", &write(Op::Create, "pods", "binding", "p", None, Some(&mine))),
            Err("unexpected pod subresource \"binding\", only 'status' and 'eviction' are allowed".into())
        );
        let lease = Write {
            group: "coordination.k8s.io",
            namespace: "kube-node-lease",
            ..write(Op::Create, "leases", "", "n2", None, None)
        };
        assert_eq!(
            admit("n1", &lease),
            Err("can only access node lease with the same name as the requesting node".into())
        );
        assert_eq!(admit("n1", &Write { name: "n1", ..lease }), Ok(()));
    }

    #[test]
    fn mirror_pods_are_bound_owned_and_self_contained() {
        let base = json!({
            "metadata": {"name": "static-web-n1", "annotations": {MIRROR_ANNOTATION: "h"},
                "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": "n1", "uid": "u1", "controller": true}]},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]},
        });
        assert_eq!(admit_mirror_pod("n1", &base, "u1"), Ok(()));
        assert_eq!(admit_mirror_pod("n1", &base, "u2"), Err("node n1 UID mismatch: expected u1 got u2".into()));
        let with = |pointer: &str, v: Value| {
            let mut p = base.clone();
            *p.pointer_mut(pointer).unwrap() = v;
            admit_mirror_pod("n1", &p, "u1").unwrap_err()
        };
        assert_eq!(
            with("/metadata/annotations", json!({})),
            "pod does not have \"kubernetes.io/config.mirror\" annotation, node \"n1\" can only create mirror pods"
        );
        assert_eq!(
            with("/spec/nodeName", json!("n2")),
            "node \"n1\" can only create pods with spec.nodeName set to itself"
        );
        assert_eq!(
            with("/metadata/ownerReferences", json!([])),
            "node \"n1\" can only create pods with an owner reference set to itself"
        );
        assert_eq!(
            with("/spec/containers", json!([{"name": "c", "envFrom": [{"secretRef": {"name": "s"}}]}])),
            "node \"n1\" can not create pods that reference secrets"
        );
        // A reference counts even without a name, as upstream's visitors see it.
        assert_eq!(
            with(
                "/spec/containers",
                json!([{"name": "c", "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"key": "k"}}}]}])
            ),
            "node \"n1\" can not create pods that reference secrets"
        );
        let mut p = base.clone();
        p["spec"]["imagePullSecrets"] = json!([{}]);
        assert_eq!(
            admit_mirror_pod("n1", &p, "u1").unwrap_err(),
            "node \"n1\" can not create pods that reference secrets"
        );
        let mut p = base.clone();
        p["spec"]["serviceAccountName"] = json!("default");
        assert_eq!(
            admit_mirror_pod("n1", &p, "u1").unwrap_err(),
            "node \"n1\" can not create pods that reference a service account"
        );
        let mut p = base.clone();
        p["spec"]["volumes"] = json!([{"name": "v", "projected": {"sources": [{"configMap": {"name": "c"}}]}}]);
        assert_eq!(
            admit_mirror_pod("n1", &p, "u1").unwrap_err(),
            "node \"n1\" can not create pods that reference configmaps"
        );
        p["spec"]["volumes"] = json!([{"name": "v", "persistentVolumeClaim": {"claimName": "c"}}]);
        assert_eq!(
            admit_mirror_pod("n1", &p, "u1").unwrap_err(),
            "node \"n1\" can not create pods that reference persistentvolumeclaims"
        );
    }

    #[test]
    fn tokens_are_for_pods_on_the_node() {
        let pod = json!({"metadata": {"name": "p", "uid": "u1"}, "spec": {"nodeName": "n1"}});
        let req = |r: Value| json!({"spec": {"boundObjectRef": r}});
        let bound = req(json!({"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": "u1"}));
        assert_eq!(token_binding(&bound), Ok(("p", "u1")));
        assert_eq!(admit_token_pod("n1", "u1", &pod), Ok(()));
        assert_eq!(
            admit_token_pod("n2", "u1", &pod),
            Err("node requested token bound to a pod scheduled on a different node".into())
        );
        assert_eq!(token_binding(&json!({})), Err("node requested token not bound to a pod".into()));
        assert_eq!(
            token_binding(&req(json!({"apiVersion": "v1", "kind": "Secret", "name": "p", "uid": "u1"}))),
            Err("node requested token not bound to a pod".into())
        );
        assert_eq!(
            token_binding(&req(json!({"apiVersion": "v1", "kind": "Pod", "name": "p"}))),
            Err("node requested token with a pod binding without a uid".into())
        );
        assert!(
            admit_token_pod("n1", "old", &pod)
                .unwrap_err()
                .starts_with("the UID in the bound object reference (old) does not match")
        );
    }
}
