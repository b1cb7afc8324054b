//! Request attributes: which verb, group, version, namespace, resource, name and subresource
//! a URL and method mean, following upstream's `RequestInfoFactory`.
//!
//! This module only reads the request line; it does not look resources up or authorize.

use std::collections::HashMap;

use crate::api::field_selector::FieldSelector;

/// Parsed attributes of a request under `/api` or `/apis`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestInfo {
    /// True for `/api/...` and `/apis/...` resource requests, false for other paths.
    pub is_resource_request: bool,
    /// The path for non-resource requests (`/healthz`, `/openapi/v2`, ...).
    pub path: String,
    /// Lower-case verb: get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: String,
    pub api_prefix: String,
    pub group: String,
    pub version: String,
    pub namespace: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
    /// Path segments after the subresource (e.g. proxy paths).
    pub rest: Vec<String>,
    /// The `fieldSelector` of a list, watch or deletecollection, when it parses (a bad one is
    /// the handler's 400, not the authorizer's business).
    pub field_selector: Option<FieldSelector>,
}

impl RequestInfo {
    /// The object name authorization sees: the path's, or for a list or watch the name a
    /// `metadata.name=` field selector pins, as upstream's request info sets it (so a rule
    /// with `resourceNames` covers watching that one object).
    pub fn object_name(&self) -> &str {
        if self.name.is_empty()
            && matches!(self.verb.as_str(), "list" | "watch")
            && let Some(n) = self.field_selector.as_ref().and_then(FieldSelector::exact_name)
        {
            return n;
        }
        &self.name
    }
}

/// Subresources of namespaces that would otherwise look like resources inside a namespace.
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

/// Parses the method, path and query into request attributes.
pub fn request_info(method: &http::Method, path: &str, query: &Query) -> RequestInfo {
    let mut info = RequestInfo { path: path.to_string(), ..Default::default() };
    let mut parts: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    info.verb = match *method {
        http::Method::POST => "create",
        http::Method::GET | http::Method::HEAD => "get",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => "",
    }
    .to_string();
    if parts.is_empty() || (parts[0] != "api" && parts[0] != "apis") {
        info.verb = method.as_str().to_lowercase();
        return info;
    }
    info.api_prefix = parts[0].to_string();
    parts.remove(0);
    if info.api_prefix == "api" {
        // /api/<version>/...
        if parts.is_empty() {
            info.verb = method.as_str().to_lowercase();
            return info;
        }
    } else {
        // /apis/<group>/<version>/...
        if parts.len() < 2 {
            info.verb = method.as_str().to_lowercase();
            return info;
        }
        info.group = parts.remove(0).to_string();
    }
    info.version = parts.remove(0).to_string();
    if parts.is_empty() {
        info.verb = method.as_str().to_lowercase();
        return info;
    }
    info.is_resource_request = true;
    // Legacy watch paths: /api/v1/watch/namespaces/ns/pods
    if parts[0] == "watch" {
        parts.remove(0);
        info.verb = "watch".into();
    }
    if parts.first() == Some(&"namespaces") && parts.len() > 1 {
        info.namespace = parts[1].to_string();
        if parts.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&parts[2]) {
            parts.drain(..2);
        }
    }
    if let Some(r) = parts.first() {
        info.resource = r.to_string();
    }
    if let Some(n) = parts.get(1) {
        info.name = n.to_string();
    }
    if let Some(s) = parts.get(2) {
        info.subresource = s.to_string();
    }
    if parts.len() > 3 {
        info.rest = parts[3..].iter().map(|s| s.to_string()).collect();
    }
    // `namespaces/<name>` names the namespace itself, not a namespace scope.
    if info.resource == "namespaces" {
        info.namespace.clear();
    }
    if info.name.is_empty() {
        if info.verb == "get" {
            info.verb = "list".into();
        } else if info.verb == "delete" {
            info.verb = "deletecollection".into();
        }
    }
    if (info.verb == "list" || info.verb == "get") && query.flag("watch") {
        info.verb = "watch".into();
    }
    if matches!(info.verb.as_str(), "list" | "watch" | "deletecollection") {
        info.field_selector = query.get("fieldSelector").and_then(|f| FieldSelector::parse(f).ok());
    }
    info
}

/// Decoded query parameters (the last value wins, as Go's `url.Values.Get` returns the first;
/// clients never repeat these).
#[derive(Debug, Clone, Default)]
pub struct Query {
    map: HashMap<String, String>,
}

impl Query {
    /// Parses a raw query string.
    pub fn parse(raw: Option<&str>) -> Query {
        let mut map = HashMap::new();
        if let Some(q) = raw {
            for (k, v) in form_urlencoded::parse(q.as_bytes()) {
                map.entry(k.into_owned()).or_insert_with(|| v.into_owned());
            }
        }
        Query { map }
    }

    /// The value of a parameter, if present and non-empty.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.map.get(key).map(|s| s.as_str()).filter(|s| !s.is_empty())
    }

    /// Whether a parameter is present at all (even empty).
    pub fn has(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    /// A boolean parameter: `true`/`1` (and a bare key) are true.
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.map.get(key).map(|s| s.as_str()), Some("") | Some("true") | Some("1") | Some("True"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn info(method: Method, path: &str, q: &str) -> RequestInfo {
        request_info(&method, path, &Query::parse(Some(q)))
    }

    #[test]
    fn namespaced_resources() {
        let i = info(Method::GET, "/apis/apps/v1/namespaces/ns1/deployments/web/scale", "");
        assert_eq!(
            (
                i.verb.as_str(),
                i.group.as_str(),
                i.namespace.as_str(),
                i.resource.as_str(),
                i.name.as_str(),
                i.subresource.as_str()
            ),
            ("get", "apps", "ns1", "deployments", "web", "scale")
        );
        let i = info(Method::GET, "/api/v1/namespaces/default/pods", "watch=1");
        assert_eq!((i.verb.as_str(), i.resource.as_str()), ("watch", "pods"));
        let i = info(Method::DELETE, "/api/v1/namespaces/default/pods", "");
        assert_eq!(i.verb, "deletecollection");
        let i = info(Method::GET, "/api/v1/watch/namespaces/default/pods/p", "");
        assert_eq!((i.verb.as_str(), i.name.as_str()), ("watch", "p"));
    }

    #[test]
    fn a_field_selector_names_the_object_of_a_list_or_watch() {
        let i = info(Method::GET, "/api/v1/nodes", "fieldSelector=metadata.name%3Dn1&watch=true");
        assert_eq!((i.verb.as_str(), i.name.as_str(), i.object_name()), ("watch", "", "n1"));
        let i = info(Method::GET, "/api/v1/pods", "fieldSelector=spec.nodeName%3Dn1");
        assert_eq!((i.verb.as_str(), i.object_name()), ("list", ""));
        assert_eq!(i.field_selector.as_ref().and_then(|f| f.exact("spec.nodeName")), Some("n1"));
        // A get names its object by path; the selector of a get means nothing.
        let i = info(Method::GET, "/api/v1/nodes/n2", "fieldSelector=metadata.name%3Dn1");
        assert_eq!((i.object_name(), i.field_selector.is_none()), ("n2", true));
        let i = info(Method::GET, "/api/v1/pods", "fieldSelector=nonsense");
        assert!(i.field_selector.is_none());
    }

    #[test]
    fn namespaces_themselves() {
        let i = info(Method::GET, "/api/v1/namespaces/kube-system", "");
        assert_eq!(
            (i.verb.as_str(), i.resource.as_str(), i.name.as_str(), i.namespace.as_str()),
            ("get", "namespaces", "kube-system", "")
        );
        let i = info(Method::PUT, "/api/v1/namespaces/x/finalize", "");
        assert_eq!((i.resource.as_str(), i.name.as_str(), i.subresource.as_str()), ("namespaces", "x", "finalize"));
        let i = info(Method::GET, "/api/v1/namespaces", "");
        assert_eq!(i.verb, "list");
    }

    #[test]
    fn non_resource_paths() {
        let i = info(Method::GET, "/healthz", "");
        assert!(!i.is_resource_request);
        let i = info(Method::GET, "/apis/apps/v1", "");
        assert!(!i.is_resource_request);
        assert_eq!(i.group, "apps");
    }

    #[test]
    fn query_decoding() {
        let q = Query::parse(Some("labelSelector=app%3Dweb%2Ctier+in+%28a%29&watch"));
        assert_eq!(q.get("labelSelector"), Some("app=web,tier in (a)"));
        assert!(q.flag("watch"));
        assert!(!q.flag("missing"));
    }
}
