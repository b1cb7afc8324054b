//! Authentication and authorization of API requests.
//!
//! Authentication turns a verified client certificate or a bearer token into a [`UserInfo`];
//! authorization answers allow/deny for request attributes behind the [`Authorizer`] trait,
//! implemented by [`Chain`]: `system:masters`, then the [`node`] authorizer for kubelets, then
//! [`rbac`] over the in-memory [`index::RbacIndex`]. The default policy lives in [`bootstrap`],
//! rule semantics in [`rules`]. Request handling never looks past this door; this room never
//! reads request bodies except the RBAC objects whose writes it checks for escalation (the
//! node graph reads stored pods and claims, never a request's).

pub mod bootstrap;
pub mod index;
pub mod node;
pub mod rbac;
pub mod rules;
pub mod serviceaccount;

use std::sync::Arc;

use crate::pki::ClientIdentity;

use super::apiserver::request::RequestInfo;
use index::RbacIndex;
pub use serviceaccount::TokenAuthenticator;

/// Group every authenticated user is in.
pub const AUTHENTICATED: &str = "system:authenticated";
/// Group of cluster administrators.
pub const MASTERS: &str = "system:masters";

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    /// Extra attributes (e.g. the service account's pod) as upstream's `user.Info.GetExtra`.
    pub extra: Vec<(String, Vec<String>)>,
}

impl UserInfo {
    /// Whether this is the anonymous user (no credentials).
    pub fn is_anonymous(&self) -> bool {
        self.name == "system:anonymous"
    }

    /// The anonymous user.
    pub fn anonymous() -> UserInfo {
        UserInfo {
            name: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
            ..Default::default()
        }
    }

    /// A user from a client certificate's subject.
    pub fn from_cert(id: ClientIdentity) -> UserInfo {
        let mut groups = id.groups;
        if !groups.iter().any(|g| g == AUTHENTICATED) {
            groups.push(AUTHENTICATED.into());
        }
        UserInfo { name: id.user, groups, ..Default::default() }
    }
}

/// The outcome of an authorization check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Denied, with the reason appended to upstream's "forbidden" message (may be empty).
    Deny(String),
}

/// Decides whether a user may perform a request.
pub trait Authorizer: Send + Sync {
    fn authorize(&self, user: &UserInfo, req: &RequestInfo) -> Decision;
}

/// The cluster's authorizer, upstream's `--authorization-mode=Node,RBAC` behind its
/// privileged-group check: `system:masters` may do anything; a node is allowed what the node
/// authorizer allows; then RBAC. When all say no, their reasons are joined by newlines, as
/// upstream's union authorizer does.
pub struct Chain {
    pub nodes: node::NodeAuthorizer,
    pub rbac: Arc<RbacIndex>,
}

impl Authorizer for Chain {
    fn authorize(&self, user: &UserInfo, req: &RequestInfo) -> Decision {
        if user.groups.iter().any(|g| g == MASTERS) {
            return Decision::Allow;
        }
        let mut reasons = Vec::new();
        if let Some(node) = node::identity(user) {
            match self.nodes.authorize(user, node, req) {
                Decision::Allow => return Decision::Allow,
                Decision::Deny(r) => reasons.push(r),
            }
        }
        match rbac::decide(&self.rbac, user, req) {
            Decision::Allow => Decision::Allow,
            Decision::Deny(r) => {
                reasons.push(r);
                reasons.retain(|r| !r.is_empty());
                Decision::Deny(reasons.join("\n"))
            }
        }
    }
}

/// Whether `user` is one of the components `skiff server` runs in-process (the scheduler, the
/// controller manager and its controllers' service accounts).
pub fn is_control_plane(user: &UserInfo) -> bool {
    user.name.starts_with("system:kube-") || user.name.starts_with("system:serviceaccount:kube-system:")
}

/// The group of node identities (`system:node:<name>`); see [`node`].
pub const NODES: &str = "system:nodes";

/// Upstream's forbidden message body: `User "x" cannot list resource "pods" in API group "" in the namespace "y"`.
pub fn forbidden_message(user: &UserInfo, req: &RequestInfo, reason: &str) -> String {
    let mut msg = if req.is_resource_request {
        let resource = if req.subresource.is_empty() {
            req.resource.clone()
        } else {
            format!("{}/{}", req.resource, req.subresource)
        };
        let mut m = format!(
            "User \"{}\" cannot {} resource \"{}\" in API group \"{}\"",
            user.name, req.verb, resource, req.group
        );
        if req.namespace.is_empty() {
            m.push_str(" at the cluster scope");
        } else {
            m.push_str(&format!(" in the namespace \"{}\"", req.namespace));
        }
        m
    } else {
        format!("User \"{}\" cannot {} path \"{}\"", user.name, req.verb, req.path)
    };
    if !reason.is_empty() {
        msg.push_str(": ");
        msg.push_str(reason);
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_messages() {
        let bob = UserInfo { name: "bob".into(), groups: vec![AUTHENTICATED.into()], ..Default::default() };
        let req = RequestInfo {
            is_resource_request: true,
            verb: "list".into(),
            resource: "pods".into(),
            namespace: "default".into(),
            ..Default::default()
        };
        assert_eq!(
            forbidden_message(&bob, &req, ""),
            "User \"bob\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
        );
        let path = RequestInfo { verb: "get".into(), path: "/metrics".into(), ..Default::default() };
        assert_eq!(forbidden_message(&bob, &path, "RBAC: x"), "User \"bob\" cannot get path \"/metrics\": RBAC: x");
    }
}
