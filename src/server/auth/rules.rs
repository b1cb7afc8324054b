//! RBAC policy rules: read from stored Roles and ClusterRoles, matched against request
//! attributes as upstream's RBAC authorizer matches them, compared for coverage (does one set
//! of rules include another, for escalation checks) and printed in upstream's compact form.
//!
//! This module knows nothing about bindings, subjects or the store.

use serde_json::{Value, json};

use crate::server::apiserver::request::RequestInfo;

/// One rule of a Role or ClusterRole.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicyRule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    pub non_resource_urls: Vec<String>,
}

const ALL: &str = "*";

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(|v| v.as_array())
        .map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

fn has(set: &[String], v: &str) -> bool {
    set.iter().any(|s| s == v)
}

fn has_all(set: &[String], wanted: &[String]) -> bool {
    wanted.iter().all(|w| has(set, w))
}

impl PolicyRule {
    /// A rule from its JSON form (`verbs`, `apiGroups`, `resources`, `resourceNames`,
    /// `nonResourceURLs`); missing or odd fields read as empty.
    pub fn from_json(v: &Value) -> PolicyRule {
        PolicyRule {
            verbs: strings(v.get("verbs")),
            api_groups: strings(v.get("apiGroups")),
            resources: strings(v.get("resources")),
            resource_names: strings(v.get("resourceNames")),
            non_resource_urls: strings(v.get("nonResourceURLs")),
        }
    }

    /// The JSON form, with empty lists left out as the API does.
    pub fn to_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        m.insert("verbs".into(), json!(self.verbs));
        for (k, v) in [
            ("apiGroups", &self.api_groups),
            ("resources", &self.resources),
            ("resourceNames", &self.resource_names),
            ("nonResourceURLs", &self.non_resource_urls),
        ] {
            if !v.is_empty() {
                m.insert(k.into(), json!(v));
            }
        }
        Value::Object(m)
    }

    /// Whether this rule allows the request.
    pub fn allows(&self, req: &RequestInfo) -> bool {
        if !(has(&self.verbs, ALL) || has(&self.verbs, &req.verb)) {
            return false;
        }
        if req.is_resource_request {
            let combined = if req.subresource.is_empty() {
                req.resource.clone()
            } else {
                format!("{}/{}", req.resource, req.subresource)
            };
            (has(&self.api_groups, ALL) || has(&self.api_groups, &req.group))
                && self.resources.iter().any(|r| {
                    r == ALL
                        || *r == combined
                        || (!req.subresource.is_empty() && r.strip_prefix("*/") == Some(req.subresource.as_str()))
                })
                && (self.resource_names.is_empty() || has(&self.resource_names, req.object_name()))
        } else {
            self.non_resource_urls.iter().any(|u| url_covers(u, &req.path))
        }
    }

    /// The rule as single-group, single-resource, single-verb (and single-name) pieces, and
    /// one piece per URL and verb; a rule is covered when all its pieces are.
    fn breakdown(&self) -> Vec<PolicyRule> {
        let mut out = Vec::new();
        let one = |s: &String| vec![s.clone()];
        for g in &self.api_groups {
            for r in &self.resources {
                for v in &self.verbs {
                    if self.resource_names.is_empty() {
                        out.push(PolicyRule {
                            api_groups: one(g),
                            resources: one(r),
                            verbs: one(v),
                            ..Default::default()
                        });
                    }
                    for n in &self.resource_names {
                        out.push(PolicyRule {
                            api_groups: one(g),
                            resources: one(r),
                            verbs: one(v),
                            resource_names: one(n),
                            ..Default::default()
                        });
                    }
                }
            }
        }
        for u in &self.non_resource_urls {
            for v in &self.verbs {
                out.push(PolicyRule { non_resource_urls: one(u), verbs: one(v), ..Default::default() });
            }
        }
        out
    }

    /// Whether this (owner) rule includes all of `sub`.
    fn covers(&self, sub: &PolicyRule) -> bool {
        let verbs = has(&self.verbs, ALL) || has_all(&self.verbs, &sub.verbs);
        let groups = has(&self.api_groups, ALL) || has_all(&self.api_groups, &sub.api_groups);
        let resources = has(&self.resources, ALL)
            || has_all(&self.resources, &sub.resources)
            || sub.resources.iter().all(|r| {
                has(&self.resources, r)
                    || r.split_once('/').is_some_and(|(_, sr)| has(&self.resources, &format!("*/{sr}")))
            });
        let urls = sub.non_resource_urls.iter().all(|p| self.non_resource_urls.iter().any(|o| url_covers(o, p)));
        let names = if sub.resource_names.is_empty() {
            self.resource_names.is_empty()
        } else {
            self.resource_names.is_empty() || has_all(&self.resource_names, &sub.resource_names)
        };
        verbs && groups && resources && urls && names
    }

    /// Upstream's compact text form: `{APIGroups:[""], Resources:["pods"], Verbs:["get"]}`.
    pub fn compact_string(&self) -> String {
        let mut parts = Vec::new();
        for (label, v) in [
            ("APIGroups", &self.api_groups),
            ("Resources", &self.resources),
            ("NonResourceURLs", &self.non_resource_urls),
            ("ResourceNames", &self.resource_names),
            ("Verbs", &self.verbs),
        ] {
            if !v.is_empty() {
                parts.push(format!("{label}:{}", go_quoted_list(v)));
            }
        }
        format!("{{{}}}", parts.join(", "))
    }
}

/// Whether an owned non-resource URL (exact, `*`, or a prefix ending in `*`) covers `path`.
fn url_covers(owner: &str, path: &str) -> bool {
    owner == ALL || owner == path || owner.strip_suffix('*').is_some_and(|prefix| path.starts_with(prefix))
}

/// A list as Go prints `%q` of a `[]string`: `["a" "b"]`.
pub fn go_quoted_list(v: &[String]) -> String {
    let items: Vec<String> = v.iter().map(|s| go_quote(s)).collect();
    format!("[{}]", items.join(" "))
}

/// A string as Go's `%q` prints it (for the printable ASCII names RBAC deals in).
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The rules of a Role or ClusterRole object.
pub fn rules_of(obj: &Value) -> Vec<PolicyRule> {
    obj.get("rules")
        .and_then(|r| r.as_array())
        .map(|a| a.iter().map(PolicyRule::from_json).collect())
        .unwrap_or_default()
}

/// The pieces of `wanted` that no rule of `owned` covers (empty: all covered).
pub fn missing(owned: &[PolicyRule], wanted: &[PolicyRule]) -> Vec<PolicyRule> {
    wanted.iter().flat_map(|r| r.breakdown()).filter(|sub| !owned.iter().any(|o| o.covers(sub))).collect()
}

/// Merges the verbs of rules that name one group, one resource and at most one name and
/// nothing else, as upstream does before printing what is missing.
pub fn compact(rules: Vec<PolicyRule>) -> Vec<PolicyRule> {
    let mut out: Vec<PolicyRule> = Vec::new();
    let mut simple: Vec<PolicyRule> = Vec::new();
    for r in rules {
        let is_simple = r.resource_names.len() <= 1
            && r.non_resource_urls.is_empty()
            && r.api_groups.len() == 1
            && r.resources.len() == 1;
        if !is_simple {
            out.push(r);
            continue;
        }
        match simple.iter_mut().find(|s| {
            s.api_groups == r.api_groups && s.resources == r.resources && s.resource_names == r.resource_names
        }) {
            Some(s) => {
                for v in r.verbs {
                    if !has(&s.verbs, &v) {
                        s.verbs.push(v);
                    }
                }
            }
            None => simple.push(r),
        }
    }
    out.extend(simple);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(v: Value) -> PolicyRule {
        PolicyRule::from_json(&v)
    }

    fn res(verb: &str, group: &str, resource: &str, sub: &str, name: &str) -> RequestInfo {
        RequestInfo {
            is_resource_request: true,
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            name: name.into(),
            namespace: "default".into(),
            ..Default::default()
        }
    }

    fn path(verb: &str, p: &str) -> RequestInfo {
        RequestInfo { verb: verb.into(), path: p.into(), ..Default::default() }
    }

    #[test]
    fn matching_as_upstream() {
        let pods = rule(json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}));
        assert!(pods.allows(&res("get", "", "pods", "", "x")));
        assert!(!pods.allows(&res("get", "", "pods", "log", "x")), "a resource does not grant its subresources");
        assert!(!pods.allows(&res("get", "apps", "pods", "", "x")));
        assert!(!pods.allows(&res("list", "", "pods", "", "")));
        let logs = rule(json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods/log"]}));
        assert!(logs.allows(&res("get", "", "pods", "log", "x")));
        assert!(!logs.allows(&res("get", "", "pods", "", "x")));
        let any_scale = rule(json!({"verbs": ["get"], "apiGroups": ["*"], "resources": ["*/scale"]}));
        assert!(any_scale.allows(&res("get", "apps", "deployments", "scale", "d")));
        assert!(!any_scale.allows(&res("get", "apps", "deployments", "", "d")));
        let star = rule(json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}));
        assert!(star.allows(&res("escalate", "x.io", "things", "status", "n")));
        let named = rule(
            json!({"verbs": ["get", "update"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["a"]}),
        );
        assert!(named.allows(&res("get", "", "configmaps", "", "a")));
        assert!(!named.allows(&res("get", "", "configmaps", "", "b")));
        assert!(!named.allows(&res("list", "", "configmaps", "", "")));
        let urls = rule(json!({"verbs": ["get"], "nonResourceURLs": ["/healthz", "/api/*"]}));
        assert!(urls.allows(&path("get", "/healthz")));
        assert!(!urls.allows(&path("get", "/healthz/ping")));
        assert!(urls.allows(&path("get", "/api/v1")));
        assert!(urls.allows(&path("get", "/api/")));
        assert!(!urls.allows(&path("get", "/api")));
        assert!(!urls.allows(&path("post", "/healthz")));
        assert!(!urls.allows(&res("get", "", "healthz", "", "")), "URL rules never match resources");
    }

    #[test]
    fn coverage_and_compact_form() {
        let owned = vec![
            rule(json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods", "*/status"]})),
            rule(json!({"verbs": ["get"], "nonResourceURLs": ["/logs/*"]})),
        ];
        let wanted = vec![
            rule(json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods", "pods/status"]})),
            rule(json!({"verbs": ["get"], "nonResourceURLs": ["/logs/a"]})),
        ];
        assert!(missing(&owned, &wanted).is_empty());
        let more = vec![rule(
            json!({"verbs": ["get", "create", "delete"], "apiGroups": [""], "resources": ["pods", "secrets"]}),
        )];
        let gap = compact(missing(&owned, &more));
        let text: Vec<String> = gap.iter().map(|r| r.compact_string()).collect();
        assert_eq!(
            text,
            [
                r#"{APIGroups:[""], Resources:["pods"], Verbs:["create" "delete"]}"#,
                r#"{APIGroups:[""], Resources:["secrets"], Verbs:["get" "create" "delete"]}"#,
            ]
        );
        let named = rule(json!({"verbs": ["get"], "apiGroups": [""], "resources": ["cm"], "resourceNames": ["a"]}));
        let any = rule(json!({"verbs": ["get"], "apiGroups": [""], "resources": ["cm"]}));
        assert!(missing(std::slice::from_ref(&any), std::slice::from_ref(&named)).is_empty());
        assert_eq!(missing(std::slice::from_ref(&named), std::slice::from_ref(&any)).len(), 1);
    }
}
