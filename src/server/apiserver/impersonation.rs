//! Impersonation (`kubectl --as`, `--as-group`, `--as-uid`): the `Impersonate-*` headers turn
//! the authenticated user into another one, when the authorizer lets the requester
//! `impersonate` each part of the new identity, as upstream's impersonation filter does.
//!
//! What is asked is checked part by part: the user (`users`, or `serviceaccounts` in the
//! account's namespace for `system:serviceaccount:<ns>:<name>`), every group (`groups`), every
//! extra value (`userextras/<key>` in `authentication.k8s.io`) and the UID (`uids` in
//! `authentication.k8s.io`). The first refusal is the answer, worded as upstream's.

use http::HeaderMap;

use crate::api::status::ApiError;

use super::auth::{self, Authorizer, Decision, UserInfo, serviceaccount};
use super::request::RequestInfo;

const USER: &str = "impersonate-user";
const GROUP: &str = "impersonate-group";
const UID: &str = "impersonate-uid";
const EXTRA_PREFIX: &str = "impersonate-extra-";

/// One thing the requester asks to act as, as upstream's `ObjectReference` of it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ask {
    kind: &'static str,
    namespace: String,
    name: String,
    api_version: &'static str,
    /// The extra key, for `UserExtra`.
    field_path: String,
}

impl Ask {
    fn new(kind: &'static str, name: &str) -> Ask {
        Ask { kind, namespace: String::new(), name: name.to_string(), api_version: "", field_path: String::new() }
    }

    /// Go's `%v` of the reference, which upstream's 400 message prints.
    fn go_value(&self) -> String {
        format!("{{{} {} {}  {}  {}}}", self.kind, self.namespace, self.name, self.api_version, self.field_path)
    }

    fn attributes(&self) -> RequestInfo {
        let (group, version, resource, subresource) = match self.kind {
            "ServiceAccount" => ("", "v1", "serviceaccounts", ""),
            "User" => ("", "v1", "users", ""),
            "Group" => ("", "v1", "groups", ""),
            "UserExtra" => ("authentication.k8s.io", "v1", "userextras", self.field_path.as_str()),
            _ => ("authentication.k8s.io", "v1", "uids", ""),
        };
        RequestInfo {
            is_resource_request: true,
            verb: "impersonate".into(),
            group: group.into(),
            version: version.into(),
            resource: resource.into(),
            subresource: subresource.into(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            ..Default::default()
        }
    }
}

fn values<'a>(headers: &'a HeaderMap, name: &str) -> impl Iterator<Item = &'a str> {
    headers.get_all(name).into_iter().filter_map(|v| v.to_str().ok())
}

/// The impersonation the headers ask for, in upstream's order; empty when none.
fn asks(headers: &HeaderMap) -> Result<Vec<Ask>, ApiError> {
    let mut out = Vec::new();
    let user = values(headers, USER).next().unwrap_or("");
    if !user.is_empty() {
        match serviceaccount::split_user_name(user) {
            Some((ns, name)) => out.push(Ask { namespace: ns.to_string(), ..Ask::new("ServiceAccount", name) }),
            None => out.push(Ask::new("User", user)),
        }
    }
    let mut others = false;
    for group in values(headers, GROUP) {
        others = true;
        out.push(Ask::new("Group", group));
    }
    let mut extra_names: Vec<&str> =
        headers.keys().map(|k| k.as_str()).filter(|k| k.starts_with(EXTRA_PREFIX)).collect();
    extra_names.sort_unstable();
    extra_names.dedup();
    for header in extra_names {
        let key = percent_decode(&header[EXTRA_PREFIX.len()..]);
        for value in values(headers, header) {
            others = true;
            out.push(Ask {
                api_version: "authentication.k8s.io/v1",
                field_path: key.clone(),
                ..Ask::new("UserExtra", value)
            });
        }
    }
    let uid = values(headers, UID).next().unwrap_or("");
    if !uid.is_empty() {
        others = true;
        out.push(Ask { api_version: "authentication.k8s.io/v1", ..Ask::new("UID", uid) });
    }
    if others && user.is_empty() {
        let listed: Vec<String> = out.iter().map(Ask::go_value).collect();
        return Err(ApiError::bad_request(format!("requested [{}] without impersonating a user", listed.join(" "))));
    }
    Ok(out)
}

/// `%XX` escapes decoded (the extra key travels in a header name); a malformed key is kept.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            match s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok()) {
                Some(b) => {
                    out.push(b);
                    i += 3;
                    continue;
                }
                None => return s.to_string(),
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_string())
}

/// The user a request acts as: `requester` itself without impersonation headers, else the
/// identity they describe, when `authz` allows every part of it.
pub fn impersonate(authz: &dyn Authorizer, requester: UserInfo, headers: &HeaderMap) -> Result<UserInfo, ApiError> {
    let asks = asks(headers)?;
    if asks.is_empty() {
        return Ok(requester);
    }
    let groups_given = values(headers, GROUP).next().is_some();
    let mut user = UserInfo::default();
    for ask in &asks {
        let attributes = ask.attributes();
        if let Decision::Deny(reason) = authz.authorize(&requester, &attributes) {
            let message = auth::forbidden_message(&requester, &attributes, &reason);
            return Err(ApiError::forbidden(&attributes.group, &attributes.resource, &ask.name, message));
        }
        match ask.kind {
            "ServiceAccount" => {
                user.name = serviceaccount::user_name(&ask.namespace, &ask.name);
                if !groups_given {
                    user.groups = serviceaccount::groups(&ask.namespace);
                }
            }
            "User" => user.name = ask.name.clone(),
            "Group" => user.groups.push(ask.name.clone()),
            "UserExtra" => match user.extra.iter_mut().find(|(k, _)| *k == ask.field_path) {
                Some((_, v)) => v.push(ask.name.clone()),
                None => user.extra.push((ask.field_path.clone(), vec![ask.name.clone()])),
            },
            _ => user.uid = ask.name.clone(),
        }
    }
    const UNAUTHENTICATED: &str = "system:unauthenticated";
    if user.name == "system:anonymous" {
        if !user.groups.iter().any(|g| g == UNAUTHENTICATED) {
            user.groups.push(UNAUTHENTICATED.into());
        }
    } else if !user.groups.iter().any(|g| g == auth::AUTHENTICATED || g == UNAUTHENTICATED) {
        user.groups.push(auth::AUTHENTICATED.into());
    }
    tracing::debug!(requester = %requester.name, as_user = %user.name, "impersonating");
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Allows `impersonate` of the listed (resource, name) pairs only.
    struct Allow(Vec<(&'static str, &'static str)>);

    impl Authorizer for Allow {
        fn authorize(&self, _user: &UserInfo, req: &RequestInfo) -> Decision {
            let what = if req.subresource.is_empty() {
                req.resource.clone()
            } else {
                format!("{}/{}", req.resource, req.subresource)
            };
            if req.verb == "impersonate" && self.0.iter().any(|(r, n)| *r == what && *n == req.name) {
                Decision::Allow
            } else {
                Decision::Deny(String::new())
            }
        }
    }

    fn alice() -> UserInfo {
        UserInfo { name: "alice".into(), groups: vec![auth::AUTHENTICATED.into()], ..Default::default() }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    #[test]
    fn no_headers_no_change() {
        let u = impersonate(&Allow(vec![]), alice(), &HeaderMap::new()).unwrap();
        assert_eq!(u, alice());
    }

    #[test]
    fn a_user_with_groups_extra_and_uid() {
        let authz = Allow(vec![
            ("users", "bob"),
            ("groups", "devs"),
            ("userextras/scopes.example.com/team", "web"),
            ("uids", "u-1"),
        ]);
        let h = headers(&[
            ("Impersonate-User", "bob"),
            ("Impersonate-Group", "devs"),
            ("Impersonate-Extra-Scopes.example.com%2fteam", "web"),
            ("Impersonate-Uid", "u-1"),
        ]);
        let u = impersonate(&authz, alice(), &h).unwrap();
        assert_eq!(u.name, "bob");
        assert_eq!(u.groups, ["devs", "system:authenticated"]);
        assert_eq!(u.extra, [("scopes.example.com/team".to_string(), vec!["web".to_string()])]);
        assert_eq!(u.uid, "u-1");
    }

    #[test]
    fn a_service_account_gets_its_groups_unless_groups_are_given() {
        let authz = Allow(vec![("serviceaccounts", "robot"), ("groups", "x")]);
        let u = impersonate(&authz, alice(), &headers(&[("Impersonate-User", "system:serviceaccount:shop:robot")]))
            .unwrap();
        assert_eq!(u.name, "system:serviceaccount:shop:robot");
        assert_eq!(u.groups, ["system:serviceaccounts", "system:serviceaccounts:shop", "system:authenticated"]);
        let h = headers(&[("Impersonate-User", "system:serviceaccount:shop:robot"), ("Impersonate-Group", "x")]);
        assert_eq!(impersonate(&authz, alice(), &h).unwrap().groups, ["x", "system:authenticated"]);
    }

    #[test]
    fn refusals_are_upstreams() {
        let authz = Allow(vec![("users", "bob")]);
        let e = impersonate(&authz, alice(), &headers(&[("Impersonate-User", "carol")])).unwrap_err();
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            r#"users "carol" is forbidden: User "alice" cannot impersonate resource "users" in API group "" at the cluster scope"#
        );
        let h = headers(&[("Impersonate-User", "bob"), ("Impersonate-Group", "system:masters")]);
        assert_eq!(
            impersonate(&authz, alice(), &h).unwrap_err().message,
            r#"groups "system:masters" is forbidden: User "alice" cannot impersonate resource "groups" in API group "" at the cluster scope"#
        );
        let e = impersonate(&authz, alice(), &headers(&[("Impersonate-User", "system:serviceaccount:shop:robot")]))
            .unwrap_err();
        assert_eq!(
            e.message,
            r#"serviceaccounts "robot" is forbidden: User "alice" cannot impersonate resource "serviceaccounts" in API group "" in the namespace "shop""#
        );
        let e = impersonate(&authz, alice(), &headers(&[("Impersonate-Group", "system:masters")])).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (400, "requested [{Group  system:masters    }] without impersonating a user")
        );
    }

    #[test]
    fn anonymous_keeps_unauthenticated() {
        let authz = Allow(vec![("users", "system:anonymous")]);
        let u = impersonate(&authz, alice(), &headers(&[("Impersonate-User", "system:anonymous")])).unwrap();
        assert_eq!(u.groups, ["system:unauthenticated"]);
    }
}
