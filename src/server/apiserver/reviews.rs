//! The review APIs that store nothing: SelfSubjectReview, SelfSubjectAccessReview,
//! SelfSubjectRulesReview, SubjectAccessReview, LocalSubjectAccessReview and TokenReview.

use serde_json::{Value, json};

use crate::api::status::ApiError;

use super::ApiServer;
use super::auth::{Decision, UserInfo};
use super::request::RequestInfo;

fn user_json(u: &UserInfo) -> Value {
    let mut v = json!({"username": u.name, "groups": u.groups});
    if !u.uid.is_empty() {
        v["uid"] = json!(u.uid);
    }
    if !u.extra.is_empty() {
        let extra: serde_json::Map<String, Value> = u.extra.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        v["extra"] = Value::Object(extra);
    }
    v
}

fn attributes(spec: &Value, namespace_override: Option<&str>) -> RequestInfo {
    if let Some(r) = spec.get("resourceAttributes") {
        let s = |k: &str| r.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
        RequestInfo {
            is_resource_request: true,
            verb: s("verb"),
            group: s("group"),
            version: s("version"),
            resource: s("resource"),
            subresource: s("subresource"),
            name: s("name"),
            namespace: namespace_override.map(String::from).unwrap_or_else(|| s("namespace")),
            // `fieldSelector.rawSelector` (authorization.k8s.io/v1 since 1.31): a node may
            // list its own pods only.
            field_selector: r
                .pointer("/fieldSelector/rawSelector")
                .and_then(|v| v.as_str())
                .and_then(|f| crate::api::field_selector::FieldSelector::parse(f).ok()),
            ..Default::default()
        }
    } else {
        let n = spec.get("nonResourceAttributes").cloned().unwrap_or(json!({}));
        let s = |k: &str| n.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
        RequestInfo { is_resource_request: false, verb: s("verb"), path: s("path"), ..Default::default() }
    }
}

fn access_status(server: &ApiServer, user: &UserInfo, attrs: &RequestInfo) -> Value {
    match server.authz.authorize(user, attrs) {
        Decision::Allow => json!({"allowed": true}),
        Decision::Deny(reason) => {
            let mut v = json!({"allowed": false});
            if !reason.is_empty() {
                v["reason"] = json!(reason);
            }
            v
        }
    }
}

/// Answers a review `create`; `body` is the decoded request object.
pub async fn review(
    server: &ApiServer,
    user: &UserInfo,
    resource: &str,
    namespace: &str,
    body: &Value,
) -> Result<Value, ApiError> {
    let spec = body.get("spec").cloned().unwrap_or(json!({}));
    let mut out = body.clone();
    if let Some(m) = out.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        m.insert("creationTimestamp".into(), Value::Null);
    } else {
        out["metadata"] = json!({"creationTimestamp": null});
    }
    let status = match resource {
        "selfsubjectreviews" => json!({"userInfo": user_json(user)}),
        "selfsubjectaccessreviews" => {
            if spec.get("resourceAttributes").is_none() && spec.get("nonResourceAttributes").is_none() {
                return Err(ApiError::invalid(
                    "authorization.k8s.io",
                    "SelfSubjectAccessReview",
                    "",
                    &[crate::api::field_error::FieldError::required(
                        "spec.resourceAttributes",
                        "exactly one of nonResourceAttributes or resourceAttributes must be specified",
                    )],
                ));
            }
            access_status(server, user, &attributes(&spec, None))
        }
        "localsubjectaccessreviews" | "subjectaccessreviews" => {
            let subject = UserInfo {
                name: spec.get("user").and_then(|v| v.as_str()).unwrap_or("").to_string(),
                uid: spec.get("uid").and_then(|v| v.as_str()).unwrap_or("").to_string(),
                groups: spec
                    .get("groups")
                    .and_then(|v| v.as_array())
                    .map(|a| a.iter().filter_map(|g| g.as_str().map(String::from)).collect())
                    .unwrap_or_default(),
                extra: Vec::new(),
            };
            let ns = if resource == "localsubjectaccessreviews" { Some(namespace) } else { None };
            access_status(server, &subject, &attributes(&spec, ns))
        }
        "selfsubjectrulesreviews" => {
            let ns = spec.get("namespace").and_then(|n| n.as_str()).unwrap_or("");
            if ns.is_empty() {
                return Err(ApiError::bad_request("no namespace on request"));
            }
            super::auth::rbac::rules_review(&server.objects.rbac, user, ns)
        }
        "tokenreviews" => {
            let token = spec.get("token").and_then(|t| t.as_str()).unwrap_or("");
            let audiences: Vec<String> = spec
                .get("audiences")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect();
            match server.bearer_user(token, &audiences).await {
                Ok((u, shared)) => json!({"authenticated": true, "user": user_json(&u), "audiences": shared}),
                Err(reason) => {
                    json!({"authenticated": false, "user": {}, "error": format!("[invalid bearer token, {reason}]")})
                }
            }
        }
        _ => return Err(ApiError::method_not_supported("", resource, "create")),
    };
    out["status"] = status;
    Ok(out)
}
