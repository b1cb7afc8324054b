//! Authorization decisions from RBAC: `system:masters` first (always allowed, as upstream's
//! privileged-group authorizer), then the RBAC rules of the user's bindings. Also the two
//! things upstream's RBAC storage checks on writes of roles and bindings (no escalation, see
//! [`confirm_no_escalation`]) and the rule listing behind SelfSubjectRulesReview. Nodes are
//! asked of the node authorizer before this (see [`super::Chain`]).
//!
//! Rules come from [`RbacIndex`]; this module holds no state of its own.

use serde_json::{Value, json};

use crate::api::status::ApiError;
use crate::server::apiserver::request::RequestInfo;

use super::index::{RbacIndex, Visit, decision_key};
use super::rules::{self, PolicyRule};
use super::{Decision, MASTERS, UserInfo};

/// The API group of the four RBAC kinds.
pub const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

fn in_group(user: &UserInfo, group: &str) -> bool {
    user.groups.iter().any(|g| g == group)
}

/// The decision for a request: masters, then RBAC; a denial carries upstream's reason
/// (`RBAC: <roles that could not be found>`, or nothing). Decisions are remembered until the
/// next RBAC change ([`RbacIndex::cached`]), by the request's attributes without the object
/// name unless a rule naming objects (`resourceNames`) was looked at.
pub fn decide(index: &RbacIndex, user: &UserInfo, req: &RequestInfo) -> Decision {
    if in_group(user, MASTERS) {
        return Decision::Allow;
    }
    let generation = index.generation();
    let any_name = decision_key(user, req, None);
    if let Some(d) = index.cached(&any_name) {
        return d;
    }
    let name = req.object_name();
    let this_name = decision_key(user, req, Some(name));
    if let Some(d) = index.cached(&this_name) {
        return d;
    }
    let mut allowed = false;
    let mut names_matter = false;
    let mut errors = Vec::new();
    index.visit_rules(user, &req.namespace, &mut |v| match v {
        Visit::Rule(r) => {
            names_matter |= !r.resource_names.is_empty();
            allowed = r.allows(req);
            !allowed
        }
        Visit::Error(e) => {
            errors.push(e);
            true
        }
    });
    let decision = if allowed {
        Decision::Allow
    } else if errors.is_empty() {
        Decision::Deny(String::new())
    } else {
        Decision::Deny(format!("RBAC: {}", aggregate(&errors)))
    };
    index.remember(generation, if names_matter { this_name } else { any_name }, decision.clone());
    decision
}

/// Upstream's aggregate error text: the one message, or `[a, b]`.
fn aggregate(errors: &[String]) -> String {
    if errors.len() == 1 { errors[0].clone() } else { format!("[{}]", errors.join(", ")) }
}

/// What a SelfSubjectRulesReview reports for `user` in `namespace`: `status` with
/// `resourceRules`, `nonResourceRules`, `incomplete` and, when roles were missing,
/// `evaluationError`.
pub fn rules_review(index: &RbacIndex, user: &UserInfo, namespace: &str) -> Value {
    let mut resource_rules = Vec::new();
    let mut non_resource_rules = Vec::new();
    let mut errors = Vec::new();
    let mut incomplete = false;
    if in_group(user, MASTERS) {
        resource_rules.push(json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}));
        non_resource_rules.push(json!({"verbs": ["*"], "nonResourceURLs": ["*"]}));
    }
    if super::node::identity(user).is_some() {
        // As upstream's node authorizer: a node's permissions are not enumerable.
        incomplete = true;
        errors.push("node authorizer does not support user rule resolution".to_string());
    }
    let mut rbac_errors = Vec::new();
    index.visit_rules(user, namespace, &mut |v| {
        match v {
            Visit::Rule(r) => {
                if !r.resources.is_empty() {
                    let mut j = json!({"verbs": r.verbs, "apiGroups": r.api_groups, "resources": r.resources});
                    if !r.resource_names.is_empty() {
                        j["resourceNames"] = json!(r.resource_names);
                    }
                    resource_rules.push(j);
                }
                if !r.non_resource_urls.is_empty() {
                    non_resource_rules.push(json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls}));
                }
            }
            Visit::Error(e) => rbac_errors.push(e),
        }
        true
    });
    if !rbac_errors.is_empty() {
        errors.push(aggregate(&rbac_errors));
    }
    let mut status = json!({
        "resourceRules": resource_rules,
        "nonResourceRules": non_resource_rules,
        "incomplete": incomplete,
    });
    if !errors.is_empty() {
        status["evaluationError"] = json!(aggregate(&errors));
    }
    status
}

/// All rules `user` holds in `namespace`, and the errors met resolving them.
fn rules_for(index: &RbacIndex, user: &UserInfo, namespace: &str) -> (Vec<PolicyRule>, Vec<String>) {
    let (mut out, mut errors) = (Vec::new(), Vec::new());
    index.visit_rules(user, namespace, &mut |v| {
        match v {
            Visit::Rule(r) => out.push(r.clone()),
            Visit::Error(e) => errors.push(e),
        }
        true
    });
    (out, errors)
}

/// Upstream's `ConfirmNoEscalation`: `Ok` when `user` already holds every rule of `wanted`
/// in `namespace`, else the message naming what is missing.
pub fn confirm_no_escalation(
    index: &RbacIndex,
    user: &UserInfo,
    namespace: &str,
    wanted: &[PolicyRule],
) -> Result<(), String> {
    let (owned, errors) = rules_for(index, user, namespace);
    let missing = rules::missing(&owned, wanted);
    if missing.is_empty() {
        return Ok(());
    }
    let mut lines: Vec<String> = rules::compact(missing).iter().map(PolicyRule::compact_string).collect();
    lines.sort();
    lines.dedup();
    let mut msg = format!(
        "user {} (groups={}) is attempting to grant RBAC permissions not currently held:\n{}",
        rules::go_quote(&user.name),
        rules::go_quoted_list(&user.groups),
        lines.join("\n")
    );
    if !errors.is_empty() {
        msg.push_str(&format!("; resolution errors: [{}]", aggregate(&errors)));
    }
    Err(msg)
}

/// A check of `verb` (`escalate` or `bind`) on a role, as upstream's RBAC storage asks the
/// authorizer.
fn may(index: &RbacIndex, user: &UserInfo, verb: &str, plural: &str, namespace: &str, name: &str) -> bool {
    let req = RequestInfo {
        is_resource_request: true,
        verb: verb.into(),
        group: RBAC_GROUP.into(),
        version: "v1".into(),
        resource: plural.into(),
        namespace: namespace.into(),
        name: name.into(),
        ..Default::default()
    };
    decide(index, user, &req) == Decision::Allow
}

/// Whether an update changes only what the garbage collector may change (owner references and
/// finalizers), which upstream lets through without escalation checks.
fn only_gc_fields_change(new: &Value, old: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            for k in ["ownerReferences", "finalizers", "resourceVersion", "managedFields", "generation"] {
                m.remove(k);
            }
        }
        v
    };
    strip(new) == strip(old)
}

/// Upstream's escalation rules for writes of the four kinds by `user`: a role may only grant
/// what its writer holds unless the writer may `escalate` it, an aggregationRule needs full
/// authority, and a binding may only grant what its writer holds unless the writer may `bind`
/// its role. `system:masters` is never checked. Other kinds pass.
pub fn admit_write(
    index: &RbacIndex,
    user: &UserInfo,
    plural: &str,
    namespace: &str,
    obj: &Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    if !matches!(plural, "roles" | "clusterroles" | "rolebindings" | "clusterrolebindings") || in_group(user, MASTERS) {
        return Ok(());
    }
    if let Some(old) = old
        && only_gc_fields_change(obj, old)
    {
        return Ok(());
    }
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    let forbidden = |msg: String| ApiError::forbidden(RBAC_GROUP, plural, name, msg);
    match plural {
        "roles" | "clusterroles" => {
            if may(index, user, "escalate", plural, namespace, name) {
                return Ok(());
            }
            confirm_no_escalation(index, user, namespace, &rules::rules_of(obj)).map_err(forbidden)?;
            let aggregation = obj.get("aggregationRule").filter(|a| !a.is_null());
            let aggregation_changed =
                old.is_none_or(|o| o.get("aggregationRule").filter(|a| !a.is_null()) != aggregation);
            if plural == "clusterroles" && aggregation.is_some() && aggregation_changed {
                let everything = [
                    PolicyRule {
                        verbs: vec!["*".into()],
                        api_groups: vec!["*".into()],
                        resources: vec!["*".into()],
                        ..Default::default()
                    },
                    PolicyRule { verbs: vec!["*".into()], non_resource_urls: vec!["*".into()], ..Default::default() },
                ];
                if confirm_no_escalation(index, user, namespace, &everything).is_err() {
                    return Err(forbidden("must have cluster-admin privileges to use the aggregationRule".into()));
                }
            }
            Ok(())
        }
        _ => {
            let kind = obj["roleRef"]["kind"].as_str().unwrap_or("");
            let role = obj["roleRef"]["name"].as_str().unwrap_or("");
            let role_plural = if kind == "Role" { "roles" } else { "clusterroles" };
            if may(index, user, "bind", role_plural, namespace, role) {
                return Ok(());
            }
            let wanted = index
                .role_ref_rules(namespace, kind, role)
                .map_err(|_| ApiError::not_found(RBAC_GROUP, role_plural, role))?;
            confirm_no_escalation(index, user, namespace, &wanted).map_err(forbidden)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo { name: name.into(), groups: groups.iter().map(|g| g.to_string()).collect(), ..Default::default() }
    }

    #[test]
    fn remembered_decisions_end_with_any_rbac_change_and_keep_names_apart() {
        let idx = RbacIndex::new();
        let role = "/rbac.authorization.k8s.io/clusterroles//cm";
        idx.apply(
            role,
            Some(&json!({"rules": [
                {"verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["mine"]},
                {"verbs": ["list"], "apiGroups": [""], "resources": ["configmaps"]}]})),
        );
        idx.apply(
            "/rbac.authorization.k8s.io/rolebindings/dev/b",
            Some(&json!({"metadata": {"name": "b", "namespace": "dev"},
                "roleRef": {"kind": "ClusterRole", "name": "cm"}, "subjects": [{"kind": "User", "name": "bob"}]})),
        );
        let bob = user("bob", &["system:authenticated"]);
        let req = |verb: &str, name: &str| RequestInfo {
            is_resource_request: true,
            verb: verb.into(),
            resource: "configmaps".into(),
            namespace: "dev".into(),
            name: name.into(),
            ..Default::default()
        };
        // A decision that a rule naming objects took part in holds for that name only.
        assert_eq!(decide(&idx, &bob, &req("get", "mine")), Decision::Allow);
        assert_eq!(decide(&idx, &bob, &req("get", "yours")), Decision::Deny(String::new()));
        assert_eq!(decide(&idx, &bob, &req("get", "mine")), Decision::Allow);
        assert!(idx.cached(&decision_key(&bob, &req("get", "x"), None)).is_none());
        // list went past the named rule too, so it is remembered per name ("" here).
        assert_eq!(decide(&idx, &bob, &req("list", "")), Decision::Allow);
        assert_eq!(idx.cached(&decision_key(&bob, &req("list", ""), Some(""))), Some(Decision::Allow));
        // Any change of RBAC forgets every decision.
        idx.apply(role, Some(&json!({"rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"]}]})));
        assert_eq!(decide(&idx, &bob, &req("list", "")), Decision::Deny(String::new()));
        assert_eq!(decide(&idx, &bob, &req("get", "yours")), Decision::Allow);
        assert_eq!(idx.cached(&decision_key(&bob, &req("get", "other"), None)), Some(Decision::Allow));
        // A decision made with a state that changed meanwhile is not kept.
        let generation = idx.generation();
        idx.apply(role, None);
        idx.remember(generation, decision_key(&bob, &req("get", "z"), None), Decision::Allow);
        assert_eq!(idx.cached(&decision_key(&bob, &req("get", "z"), None)), None);
        assert_eq!(
            decide(&idx, &bob, &req("get", "yours")),
            Decision::Deny("RBAC: clusterrole.rbac.authorization.k8s.io \"cm\" not found".into())
        );
    }

    #[test]
    fn masters_and_rbac() {
        let idx = RbacIndex::new();
        idx.apply(
            "/rbac.authorization.k8s.io/clusterroles//pod-reader",
            Some(&json!({"rules": [{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}]})),
        );
        idx.apply(
            "/rbac.authorization.k8s.io/rolebindings/dev/bob-reads",
            Some(&json!({"metadata": {"name": "bob-reads", "namespace": "dev"},
                "roleRef": {"kind": "ClusterRole", "name": "pod-reader"}, "subjects": [{"kind": "User", "name": "bob"}]})),
        );
        let list = |ns: &str| RequestInfo {
            is_resource_request: true,
            verb: "list".into(),
            resource: "pods".into(),
            namespace: ns.into(),
            ..Default::default()
        };
        let bob = user("bob", &["system:authenticated"]);
        assert_eq!(decide(&idx, &bob, &list("dev")), Decision::Allow);
        assert_eq!(decide(&idx, &bob, &list("prod")), Decision::Deny(String::new()));
        assert_eq!(decide(&idx, &bob, &list("")), Decision::Deny(String::new()));
        assert_eq!(decide(&idx, &user("root", &[MASTERS]), &list("")), Decision::Allow);
        // Nodes hold no RBAC rules of their own (the node authorizer answers for them).
        assert_eq!(
            decide(&idx, &user("system:node:a", &[super::super::NODES]), &list("")),
            Decision::Deny(String::new())
        );
        idx.apply(
            "/rbac.authorization.k8s.io/rolebindings/prod/gone",
            Some(&json!({"metadata": {"name": "gone", "namespace": "prod"},
                "roleRef": {"kind": "Role", "name": "missing"}, "subjects": [{"kind": "User", "name": "bob"}]})),
        );
        assert_eq!(
            decide(&idx, &bob, &list("prod")),
            Decision::Deny("RBAC: role.rbac.authorization.k8s.io \"missing\" not found".into())
        );
        // Escalation: bob may not grant what he does not hold.
        let wanted = rules::rules_of(
            &json!({"rules": [{"verbs": ["get", "delete"], "apiGroups": [""], "resources": ["pods"]}]}),
        );
        assert_eq!(
            confirm_no_escalation(&idx, &bob, "dev", &wanted),
            Err("user \"bob\" (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"\"], Resources:[\"pods\"], Verbs:[\"delete\"]}".into())
        );
        assert!(confirm_no_escalation(&idx, &bob, "dev", &wanted[..0]).is_ok());
    }
}
