//! The default RBAC policy (`policy.yaml`, upstream's bootstrap roles and bindings plus the
//! bindings a node join needs), reconciled at every start as upstream's API server does:
//! missing objects are created; objects not annotated `autoupdate: "false"` get the labels,
//! annotations, rules, aggregation selectors and subjects they lack. Nothing a user added is
//! ever removed, and an object whose roleRef differs is left alone.
//!
//! This module only writes through [`Objects`]; it never decides a request.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::api::registry;
use crate::api::status::ApiError;
use crate::server::apiserver::bootstrap::system_ctx;
use crate::server::apiserver::objects::Objects;

use super::rules::{self, PolicyRule};

const POLICY: &str = include_str!("policy.yaml");

const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";
const BOOTSTRAPPING: &str = "kubernetes.io/bootstrapping";
const API_VERSION: &str = "rbac.authorization.k8s.io/v1";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Policy {
    cluster_roles: Vec<RoleDef>,
    controller_roles: Vec<RoleDef>,
    skiff_controller_roles: Vec<RoleDef>,
    cluster_role_bindings: Vec<BindingDef>,
    roles: Vec<RoleDef>,
    role_bindings: Vec<BindingDef>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RoleDef {
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    aggregate: Option<String>,
    #[serde(default)]
    aggregate_to: Vec<String>,
    #[serde(default)]
    rules: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BindingDef {
    name: String,
    #[serde(default)]
    namespace: String,
    role: String,
    #[serde(default)]
    role_kind: Option<String>,
    subjects: Vec<String>,
}

fn metadata(name: &str, namespace: &str, extra_labels: &[String]) -> Value {
    let mut labels = Map::new();
    labels.insert(BOOTSTRAPPING.into(), json!("rbac-defaults"));
    for a in extra_labels {
        labels.insert(format!("rbac.authorization.k8s.io/aggregate-to-{a}"), json!("true"));
    }
    let mut m = json!({"name": name, "labels": labels, "annotations": {AUTOUPDATE: "true"}});
    if !namespace.is_empty() {
        m["namespace"] = json!(namespace);
    }
    m
}

fn role_object(kind: &str, d: &RoleDef) -> Value {
    let mut o =
        json!({"apiVersion": API_VERSION, "kind": kind, "metadata": metadata(&d.name, &d.namespace, &d.aggregate_to)});
    match &d.aggregate {
        Some(a) => {
            o["aggregationRule"] = json!({"clusterRoleSelectors": [
                {"matchLabels": {format!("rbac.authorization.k8s.io/aggregate-to-{a}"): "true"}}
            ]});
        }
        None => o["rules"] = json!(d.rules),
    }
    o
}

fn subject(s: &str) -> Value {
    let (kind, rest) = s.split_once(':').unwrap_or(("User", s));
    match kind {
        "ServiceAccount" => {
            let (ns, name) = rest.split_once(':').unwrap_or(("", rest));
            json!({"kind": "ServiceAccount", "name": name, "namespace": ns})
        }
        _ => json!({"kind": kind, "apiGroup": "rbac.authorization.k8s.io", "name": rest}),
    }
}

fn binding_object(kind: &str, d: &BindingDef) -> Value {
    json!({
        "apiVersion": API_VERSION, "kind": kind,
        "metadata": metadata(&d.name, &d.namespace, &[]),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": d.role_kind.as_deref().unwrap_or("ClusterRole"), "name": d.role},
        "subjects": d.subjects.iter().map(|s| subject(s)).collect::<Vec<_>>(),
    })
}

/// The rules of one default ClusterRole (empty when the policy has no such role).
pub fn cluster_role_rules(name: &str) -> Vec<PolicyRule> {
    let Ok(p) = serde_yaml::from_str::<Policy>(POLICY) else { return Vec::new() };
    p.cluster_roles
        .iter()
        .find(|r| r.name == name)
        .map(|r| r.rules.iter().map(PolicyRule::from_json).collect())
        .unwrap_or_default()
}

/// The default objects, by plural: clusterroles, clusterrolebindings, roles, rolebindings.
pub fn default_objects() -> Result<Vec<(&'static str, Value)>, String> {
    let p: Policy = serde_yaml::from_str(POLICY).map_err(|e| format!("the default RBAC policy does not parse: {e}"))?;
    let mut out = Vec::new();
    let controller_roles: Vec<&RoleDef> = p.controller_roles.iter().chain(&p.skiff_controller_roles).collect();
    for r in p.cluster_roles.iter().chain(controller_roles.iter().copied()) {
        out.push(("clusterroles", role_object("ClusterRole", r)));
    }
    for b in &p.cluster_role_bindings {
        out.push(("clusterrolebindings", binding_object("ClusterRoleBinding", b)));
    }
    // Every controller role is bound to the controller's service account.
    for r in controller_roles {
        let sa = r.name.rsplit(':').next().unwrap_or(&r.name);
        let b = BindingDef {
            name: r.name.clone(),
            namespace: String::new(),
            role: r.name.clone(),
            role_kind: None,
            subjects: vec![format!("ServiceAccount:kube-system:{sa}")],
        };
        out.push(("clusterrolebindings", binding_object("ClusterRoleBinding", &b)));
    }
    for r in &p.roles {
        out.push(("roles", role_object("Role", r)));
    }
    for b in &p.role_bindings {
        out.push(("rolebindings", binding_object("RoleBinding", b)));
    }
    Ok(out)
}

/// Adds to `into` the keys of `from` it lacks (existing values win, as upstream merges).
fn merge_map(into: &mut Value, from: &Value) -> bool {
    let Some(from) = from.as_object() else { return false };
    if !into.is_object() {
        *into = json!({});
    }
    let Some(m) = into.as_object_mut() else { return false };
    let mut changed = false;
    for (k, v) in from {
        if !m.contains_key(k) {
            m.insert(k.clone(), v.clone());
            changed = true;
        }
    }
    changed
}

/// The reconciled form of `current` against `expected`, or None when nothing is missing.
fn reconciled(plural: &str, current: &Value, expected: &Value) -> Option<Value> {
    if current["metadata"]["annotations"][AUTOUPDATE].as_str() == Some("false") {
        return None;
    }
    let mut next = current.clone();
    let mut changed = merge_map(&mut next["metadata"]["labels"], &expected["metadata"]["labels"]);
    changed |= merge_map(&mut next["metadata"]["annotations"], &expected["metadata"]["annotations"]);
    match plural {
        "clusterroles" | "roles" => {
            let have = rules::rules_of(current);
            let missing = rules::missing(&have, &rules::rules_of(expected));
            if !missing.is_empty() {
                let mut all: Vec<Value> = current["rules"].as_array().cloned().unwrap_or_default();
                all.extend(missing.iter().map(PolicyRule::to_json));
                next["rules"] = Value::Array(all);
                changed = true;
            }
            if let Some(want) = expected["aggregationRule"]["clusterRoleSelectors"].as_array() {
                let mut have: Vec<Value> =
                    current["aggregationRule"]["clusterRoleSelectors"].as_array().cloned().unwrap_or_default();
                let before = have.len();
                for s in want {
                    if !have.contains(s) {
                        have.push(s.clone());
                    }
                }
                if have.len() != before || current.get("aggregationRule").is_none_or(Value::is_null) {
                    next["aggregationRule"] = json!({"clusterRoleSelectors": have});
                    changed = true;
                }
            }
        }
        _ => {
            if current["roleRef"] != expected["roleRef"] {
                return None;
            }
            let mut have: Vec<Value> = current["subjects"].as_array().cloned().unwrap_or_default();
            let same = |a: &Value, b: &Value| {
                a["kind"] == b["kind"] && a["name"] == b["name"] && a["namespace"] == b["namespace"]
            };
            let before = have.len();
            for s in expected["subjects"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
                if !have.iter().any(|h| same(h, s)) {
                    have.push(s.clone());
                }
            }
            if have.len() != before {
                next["subjects"] = Value::Array(have);
                changed = true;
            }
        }
    }
    changed.then_some(next)
}

/// Creates the default roles and bindings that are missing and completes those that may be
/// updated (many at once, so a fresh server's writes share transactions); returns how many
/// objects were written.
pub async fn reconcile(objects: &Objects) -> Result<usize, ApiError> {
    use futures::StreamExt;
    let defaults = default_objects().map_err(ApiError::internal)?;
    let results: Vec<Result<bool, ApiError>> = futures::stream::iter(defaults)
        .map(|(plural, obj)| reconcile_one(objects, plural, obj))
        .buffer_unordered(32)
        .collect()
        .await;
    let mut written = 0;
    for r in results {
        written += usize::from(r?);
    }
    Ok(written)
}

/// Reconciles one default object; true when it was written.
async fn reconcile_one(objects: &Objects, plural: &'static str, obj: Value) -> Result<bool, ApiError> {
    let info = registry::lookup("rbac.authorization.k8s.io", "v1", plural)
        .ok_or_else(|| ApiError::internal(format!("no resource {plural}")))?;
    let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let ns = obj["metadata"]["namespace"].as_str().unwrap_or_default().to_string();
    match objects.get(info, &ns, &name).await {
        Ok(current) => {
            if reconciled(plural, &current, &obj).is_none() {
                return Ok(false);
            }
            let mut c = system_ctx();
            objects
                .update_with(info, &ns, &name, "", &mut c, |cur, _| {
                    let mut next = reconciled(plural, cur, &obj).unwrap_or_else(|| cur.clone());
                    crate::api::meta::meta_mut(&mut next).remove("resourceVersion");
                    Ok(next)
                })
                .await?;
            Ok(true)
        }
        Err(e) if e.code == 404 => {
            let mut c = system_ctx();
            match objects.create(info, &ns, obj, &mut c).await {
                Ok(_) => Ok(true),
                Err(e) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_expands_and_reconciles_additively() {
        let objs = default_objects().unwrap();
        let find = |plural: &str, name: &str| {
            objs.iter().find(|(p, o)| *p == plural && o["metadata"]["name"] == name).map(|(_, o)| o.clone()).unwrap()
        };
        let view = find("clusterroles", "view");
        assert_eq!(view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"], "true");
        assert_eq!(
            view["aggregationRule"]["clusterRoleSelectors"][0]["matchLabels"]["rbac.authorization.k8s.io/aggregate-to-view"],
            "true"
        );
        let rs = find("clusterrolebindings", "system:controller:replicaset-controller");
        assert_eq!(
            rs["subjects"],
            json!([{"kind": "ServiceAccount", "name": "replicaset-controller", "namespace": "kube-system"}])
        );
        let lock = find("rolebindings", "system::leader-locking-kube-scheduler");
        assert_eq!(lock["metadata"]["namespace"], "kube-system");
        assert_eq!(lock["roleRef"]["kind"], "Role");

        // A user's extra rule and subject stay; missing ones are added; opting out is honoured.
        let mut current = find("clusterroles", "system:basic-user");
        current["rules"] = json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["mine"]}]);
        let next = reconciled("clusterroles", &current, &find("clusterroles", "system:basic-user")).unwrap();
        let rules = next["rules"].as_array().unwrap();
        assert_eq!(rules[0]["resources"], json!(["mine"]));
        assert_eq!(rules.len(), 4, "{rules:?}");
        current["metadata"]["annotations"][AUTOUPDATE] = json!("false");
        assert!(reconciled("clusterroles", &current, &find("clusterroles", "system:basic-user")).is_none());
        let expected = find("clusterrolebindings", "cluster-admin");
        assert!(reconciled("clusterrolebindings", &expected, &expected).is_none());
        let mut b = expected.clone();
        b["subjects"] = json!([{"kind": "User", "name": "alice"}]);
        let next = reconciled("clusterrolebindings", &b, &expected).unwrap();
        assert_eq!(next["subjects"].as_array().unwrap().len(), 2);
    }
}
