//! The node authorizer: what a kubelet may do, as upstream's `Node` authorization mode.
//!
//! A node is a user `system:node:<name>` in the group `system:nodes`. Its credentials reach
//! only what the pods bound to it need: a Secret, ConfigMap, PersistentVolumeClaim,
//! PersistentVolume or service-account token is readable when such a pod uses it (the
//! [`NodeGraph`], kept current from the store's pods and claims); pods are readable one by one
//! when bound to the node and listable only with `spec.nodeName=<node>`; of Nodes, Leases and
//! CSINodes only its own. Everything else is decided by the fixed rules of upstream's
//! `system:node` ClusterRole, read once from the default policy (not from the cluster, where
//! the role is bound to nobody).
//!
//! The authorizer decides *which* objects a node may touch, never *what* it writes into
//! them: that its pods' status is all it changes, that it keeps its taints and restricted
//! labels, is NodeRestriction admission's job in the object layer, which sees the bodies.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, RwLock};

use serde::Deserialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::server::apiserver::request::RequestInfo;
use crate::server::store::follow::{Follower, follow};
use crate::server::store::{Datastore, KeyValue};

use super::rules::PolicyRule;
use super::{Decision, NODES, UserInfo};

/// The user name prefix of node identities.
pub const NODE_USER_PREFIX: &str = "system:node:";

/// The namespace of node heartbeat Leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

const POD_PREFIX: &str = "/core/pods/";
const CLAIM_PREFIX: &str = "/core/persistentvolumeclaims/";

/// The node a user is, if it is one: `Some("")` for a member of `system:nodes` whose name does
/// not say which node (upstream refuses those), `None` for everyone else.
pub fn identity(user: &UserInfo) -> Option<&str> {
    if !user.groups.iter().any(|g| g == NODES) {
        return None;
    }
    Some(user.name.strip_prefix(NODE_USER_PREFIX).unwrap_or(""))
}

/// The kinds of object a pod makes readable to its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Pod,
    Secret,
    ConfigMap,
    Claim,
    ServiceAccount,
}

impl Kind {
    /// Upstream's vertex name, used in log lines.
    fn as_str(self) -> &'static str {
        match self {
            Kind::Pod => "pod",
            Kind::Secret => "secret",
            Kind::ConfigMap => "configmap",
            Kind::Claim => "pvc",
            Kind::ServiceAccount => "serviceAccount",
        }
    }
}

/// An object a pod uses, as one string: the kind's letter, then `namespace/name`.
type Obj = Box<str>;

fn obj(kind: Kind, namespace: &str, name: &str) -> Obj {
    let letter = match kind {
        Kind::Pod => 'p',
        Kind::Secret => 's',
        Kind::ConfigMap => 'c',
        Kind::Claim => 'v',
        Kind::ServiceAccount => 'a',
    };
    format!("{letter}{namespace}/{name}").into_boxed_str()
}

/// The pods-to-nodes relation the authorizer reads; cheap to share.
#[derive(Default)]
pub struct NodeGraph {
    pods: RwLock<Pods>,
    claims: RwLock<Claims>,
}

/// A bound pod: its node and what it uses.
type Bound = (Arc<str>, Box<[Obj]>);

/// Kept small, since it holds an entry for every bound pod of the cluster: one allocation per
/// pod (its `namespace/name`), node names shared.
#[derive(Default)]
struct Pods {
    /// `namespace/name` of every pod bound to a node → the node and what the pod uses.
    bound: HashMap<Box<str>, Bound>,
    /// Object → the nodes whose pods use it, with how many of them do.
    used: HashMap<Obj, Vec<(Arc<str>, u32)>>,
    /// Every node name seen, shared by the entries above.
    nodes: HashSet<Arc<str>>,
}

#[derive(Default)]
struct Claims {
    /// (namespace, claim) → the PersistentVolume it is bound to.
    volume_of: HashMap<(String, String), String>,
    /// PersistentVolume → the claims bound to it.
    claims_of: HashMap<String, BTreeSet<(String, String)>>,
}

/// The parts of a pod that name other objects (everything else is skipped while parsing,
/// and strings are borrowed from the stored bytes where they can be).
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct PodRefs<'a> {
    #[serde(borrow)]
    spec: Option<SpecRefs<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Named<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct SpecRefs<'a> {
    #[serde(borrow)]
    node_name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    service_account_name: Option<Cow<'a, str>>,
    volumes: Option<Vec<Value>>,
    #[serde(borrow)]
    containers: Option<Vec<ContainerRefs<'a>>>,
    #[serde(borrow)]
    init_containers: Option<Vec<ContainerRefs<'a>>>,
    #[serde(borrow)]
    ephemeral_containers: Option<Vec<ContainerRefs<'a>>>,
    #[serde(borrow)]
    image_pull_secrets: Option<Vec<Named<'a>>>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct ContainerRefs<'a> {
    env: Option<Vec<EnvRefs>>,
    #[serde(borrow)]
    env_from: Option<Vec<EnvFromRefs<'a>>>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct EnvRefs {
    value_from: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct EnvFromRefs<'a> {
    #[serde(borrow)]
    config_map_ref: Option<Named<'a>>,
    #[serde(borrow)]
    secret_ref: Option<Named<'a>>,
}

/// Volume sources that name a Secret: where the source is, and the key of its name
/// (upstream's `VisitPodSecretNames`).
const SECRET_SOURCES: &[(&str, &str)] = &[
    ("/secret", "secretName"),
    ("/azureFile", "secretName"),
    ("/cephfs/secretRef", "name"),
    ("/cinder/secretRef", "name"),
    ("/flexVolume/secretRef", "name"),
    ("/rbd/secretRef", "name"),
    ("/scaleIO/secretRef", "name"),
    ("/iscsi/secretRef", "name"),
    ("/storageos/secretRef", "name"),
    ("/csi/nodePublishSecretRef", "name"),
];

/// Calls `f` with every object of its namespace a pod spec names: the Secrets and ConfigMaps
/// upstream's `VisitPodSecretNames` and `VisitPodConfigmapNames` visit (a reference without a
/// name as ""), its claims and its service account.
fn visit_references(spec: &SpecRefs<'_>, f: &mut dyn FnMut(Kind, &str)) {
    let name_at = |source: Option<&Value>, key: &str| -> Option<String> {
        let s = source.filter(|s| !s.is_null())?;
        Some(s.get(key).and_then(Value::as_str).unwrap_or_default().to_string())
    };
    if let Some(sa) = spec.service_account_name.as_deref().filter(|s| !s.is_empty()) {
        f(Kind::ServiceAccount, sa);
    }
    for s in spec.image_pull_secrets.iter().flatten() {
        f(Kind::Secret, s.name.as_deref().unwrap_or_default());
    }
    let containers = [&spec.containers, &spec.init_containers, &spec.ephemeral_containers];
    for c in containers.into_iter().flatten().flatten() {
        for e in c.env_from.iter().flatten() {
            if let Some(r) = &e.config_map_ref {
                f(Kind::ConfigMap, r.name.as_deref().unwrap_or_default());
            }
            if let Some(r) = &e.secret_ref {
                f(Kind::Secret, r.name.as_deref().unwrap_or_default());
            }
        }
        for e in c.env.iter().flatten() {
            let from = e.value_from.as_ref();
            if let Some(n) = name_at(from.and_then(|v| v.get("configMapKeyRef")), "name") {
                f(Kind::ConfigMap, &n);
            }
            if let Some(n) = name_at(from.and_then(|v| v.get("secretKeyRef")), "name") {
                f(Kind::Secret, &n);
            }
        }
    }
    for v in spec.volumes.iter().flatten() {
        for (source, key) in SECRET_SOURCES {
            if let Some(n) = name_at(v.pointer(source), key) {
                f(Kind::Secret, &n);
            }
        }
        if let Some(n) = name_at(v.get("configMap"), "name") {
            f(Kind::ConfigMap, &n);
        }
        if let Some(n) = name_at(v.get("persistentVolumeClaim"), "claimName") {
            f(Kind::Claim, &n);
        }
        for src in v.pointer("/projected/sources").and_then(Value::as_array).into_iter().flatten() {
            if let Some(n) = name_at(src.get("secret"), "name") {
                f(Kind::Secret, &n);
            }
            if let Some(n) = name_at(src.get("configMap"), "name") {
                f(Kind::ConfigMap, &n);
            }
        }
    }
}

/// The kinds of objects a pod spec names (see [`visit_references`]): what NodeRestriction and
/// ServiceAccount admission keep out of mirror pods.
pub fn referenced_kinds(spec: Option<&Value>) -> Vec<Kind> {
    let mut out = Vec::new();
    if let Some(Ok(spec)) = spec.map(SpecRefs::deserialize) {
        visit_references(&spec, &mut |kind, _| {
            if !out.contains(&kind) {
                out.push(kind);
            }
        });
    }
    out
}

/// The node the pod `ns`/`name` is bound to and every object it uses; None when unbound.
fn pod_uses<'a>(ns: &str, name: &str, value: &'a [u8]) -> Option<(Cow<'a, str>, Vec<Obj>)> {
    let pod: PodRefs<'a> = serde_json::from_slice(value).ok()?;
    let mut spec = pod.spec?;
    let node = spec.node_name.take().filter(|n| !n.is_empty())?;
    let mut uses: Vec<Obj> = Vec::new();
    let mut add = |kind: Kind, n: &str| {
        if !n.is_empty() {
            let o = obj(kind, ns, n);
            if !uses.contains(&o) {
                uses.push(o);
            }
        }
    };
    visit_references(&spec, &mut add);
    for v in spec.volumes.iter().flatten() {
        if v.get("ephemeral").is_some_and(|e| !e.is_null()) {
            // A generic ephemeral volume's claim is named `<pod>-<volume>`.
            let vol = v.get("name").and_then(Value::as_str).unwrap_or_default();
            add(Kind::Claim, &format!("{name}-{vol}"));
        }
    }
    Some((node, uses))
}

impl Pods {
    fn remove(&mut self, id: &str) {
        let Some((node, uses)) = self.bound.remove(id) else { return };
        for o in uses {
            if let Some(nodes) = self.used.get_mut(&o) {
                if let Some(i) = nodes.iter().position(|(n, _)| *n == node) {
                    nodes[i].1 -= 1;
                    if nodes[i].1 == 0 {
                        nodes.swap_remove(i);
                    }
                }
                if nodes.is_empty() {
                    self.used.remove(&o);
                }
            }
        }
    }

    fn intern(&mut self, node: &str) -> Arc<str> {
        if let Some(n) = self.nodes.get(node) {
            return n.clone();
        }
        let n: Arc<str> = Arc::from(node);
        self.nodes.insert(n.clone());
        n
    }
}

/// The (namespace, name) a store key under `prefix` names.
fn key_id(key: &str, prefix: &str) -> Option<(String, String)> {
    let (ns, name) = key.strip_prefix(prefix)?.split_once('/')?;
    Some((ns.to_string(), name.to_string()))
}

/// One half of the graph, kept from the objects under one store prefix.
trait Part: Default + Send + Sync {
    fn put(&mut self, key: &str, value: Option<&[u8]>);
}

impl Part for Pods {
    fn put(&mut self, key: &str, value: Option<&[u8]>) {
        let Some(id) = key.strip_prefix(POD_PREFIX) else { return };
        let Some((ns, name)) = id.split_once('/') else { return };
        let uses = value.and_then(|v| pod_uses(ns, name, v));
        if let (Some((node, new)), Some((old_node, old))) = (&uses, self.bound.get(id))
            && **node == **old_node
            && new[..] == old[..]
        {
            return;
        }
        self.remove(id);
        if let Some((node, uses)) = uses {
            let node = self.intern(&node);
            for o in &uses {
                let nodes = self.used.entry(o.clone()).or_default();
                match nodes.iter_mut().find(|(n, _)| *n == node) {
                    Some((_, count)) => *count += 1,
                    None => nodes.push((node.clone(), 1)),
                }
            }
            self.bound.insert(id.into(), (node, uses.into_boxed_slice()));
        }
    }
}

impl Part for Claims {
    fn put(&mut self, key: &str, value: Option<&[u8]>) {
        let Some(id) = key_id(key, CLAIM_PREFIX) else { return };
        if let Some(old) = self.volume_of.remove(&id)
            && let Some(set) = self.claims_of.get_mut(&old)
        {
            set.remove(&id);
            if set.is_empty() {
                self.claims_of.remove(&old);
            }
        }
        let volume = value
            .and_then(|v| serde_json::from_slice::<Value>(v).ok())
            .and_then(|v| v.pointer("/spec/volumeName").and_then(Value::as_str).map(String::from))
            .filter(|v| !v.is_empty());
        if let Some(volume) = volume {
            self.claims_of.entry(volume.clone()).or_default().insert(id.clone());
            self.volume_of.insert(id, volume);
        }
    }
}

/// A half of the graph as a store follower.
struct Feed<'a, T>(&'a RwLock<T>);

impl<T: Part> Follower for Feed<'_, T> {
    fn reset(&mut self, kvs: &[KeyValue], _revision: u64) {
        let mut fresh = T::default();
        for kv in kvs {
            fresh.put(&kv.key, Some(&kv.value));
        }
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = fresh;
    }

    fn apply(&mut self, kv: &KeyValue, deleted: bool, _revision: u64) {
        let value = (!deleted).then_some(&kv.value[..]);
        self.0.write().unwrap_or_else(|e| e.into_inner()).put(&kv.key, value);
    }
}

impl NodeGraph {
    pub fn new() -> Self {
        Self::default()
    }

    /// Follows the store's pods and claims until `cancel`.
    pub async fn run(self: Arc<Self>, store: Arc<dyn Datastore>, cancel: CancellationToken) {
        let (mut pods, mut claims) = (Feed(&self.pods), Feed(&self.claims));
        let pods = follow(store.clone(), POD_PREFIX, "pods for the node authorizer", &mut pods, cancel.clone());
        let claims = follow(store, CLAIM_PREFIX, "claims for the node authorizer", &mut claims, cancel);
        tokio::join!(pods, claims);
    }

    /// Applies one stored pod (`None`: deleted) under its store key.
    pub fn put_pod(&self, key: &str, value: Option<&[u8]>) {
        self.pods.write().unwrap_or_else(|e| e.into_inner()).put(key, value);
    }

    /// Applies one stored PersistentVolumeClaim (`None`: deleted) under its store key.
    pub fn put_claim(&self, key: &str, value: Option<&[u8]>) {
        self.claims.write().unwrap_or_else(|e| e.into_inner()).put(key, value);
    }

    /// Whether a pod bound to `node` uses the object (a pod: is bound to it).
    fn uses(&self, node: &str, kind: Kind, namespace: &str, name: &str) -> bool {
        let pods = self.pods.read().unwrap_or_else(|e| e.into_inner());
        if kind == Kind::Pod {
            return pods.bound.get(format!("{namespace}/{name}").as_str()).is_some_and(|(n, _)| **n == *node);
        }
        pods.used.get(&obj(kind, namespace, name)).is_some_and(|n| n.iter().any(|(n, _)| **n == *node))
    }

    /// Whether a claim of a pod bound to `node` is bound to the PersistentVolume.
    fn uses_volume(&self, node: &str, volume: &str) -> bool {
        let claims: Vec<(String, String)> = {
            let c = self.claims.read().unwrap_or_else(|e| e.into_inner());
            c.claims_of.get(volume).map(|s| s.iter().cloned().collect()).unwrap_or_default()
        };
        claims.iter().any(|(ns, claim)| self.uses(node, Kind::Claim, ns, claim))
    }
}

/// The node authorizer: the graph plus the static rules of the `system:node` role.
pub struct NodeAuthorizer {
    pub graph: Arc<NodeGraph>,
    rules: Vec<PolicyRule>,
}

fn no_opinion(reason: impl Into<String>) -> Decision {
    Decision::Deny(reason.into())
}

impl NodeAuthorizer {
    pub fn new(graph: Arc<NodeGraph>) -> Self {
        NodeAuthorizer { graph, rules: super::bootstrap::cluster_role_rules("system:node") }
    }

    /// The decision for a request of the node `node` ("" when the user did not say which):
    /// Allow, or Deny with upstream's reason (empty when it has none), after which the caller
    /// asks RBAC as upstream's authorizer chain does.
    pub fn authorize(&self, user: &UserInfo, node: &str, req: &RequestInfo) -> Decision {
        if node.is_empty() {
            return no_opinion(format!("unknown node for user {:?}", user.name));
        }
        if req.is_resource_request {
            match (req.group.as_str(), req.resource.as_str()) {
                ("", "secrets") => return self.read_namespaced(node, Kind::Secret, req),
                ("", "configmaps") => return self.read_namespaced(node, Kind::ConfigMap, req),
                ("", "persistentvolumeclaims") if req.subresource == "status" => {
                    return match req.verb.as_str() {
                        "update" | "patch" => self.related(node, Kind::Claim, req),
                        _ => no_opinion("can only get/update/patch this type"),
                    };
                }
                ("", "persistentvolumeclaims") => return self.get(node, req, |n| self.related(n, Kind::Claim, req)),
                ("", "persistentvolumes") => {
                    return self.get(node, req, |n| {
                        if self.graph.uses_volume(n, &req.name) {
                            Decision::Allow
                        } else {
                            self.unrelated(n, "pv", req)
                        }
                    });
                }
                ("storage.k8s.io", "volumeattachments") => {
                    // No attach/detach here: no attachment is ever related to a node.
                    return self.get(node, req, |n| self.unrelated(n, "volumeattachment", req));
                }
                ("", "serviceaccounts") => return self.create_token(node, req),
                ("coordination.k8s.io", "leases") => return lease(node, req),
                ("storage.k8s.io", "csinodes") => return csi_node(node, req),
                ("", "nodes") => return own_node(node, req),
                ("", "pods") => return self.pod(node, req),
                _ => {}
            }
        }
        if self.rules.iter().any(|r| r.allows(req)) { Decision::Allow } else { no_opinion("") }
    }

    fn related(&self, node: &str, kind: Kind, req: &RequestInfo) -> Decision {
        let name = req.object_name();
        if name.is_empty() {
            return no_opinion("No Object name found");
        }
        if self.graph.uses(node, kind, &req.namespace, name) {
            Decision::Allow
        } else {
            self.unrelated(node, kind.as_str(), req)
        }
    }

    fn unrelated(&self, node: &str, kind: &str, req: &RequestInfo) -> Decision {
        tracing::debug!(node, kind, namespace = %req.namespace, name = %req.object_name(), verb = %req.verb, "node denied: no relationship");
        no_opinion(format!("no relationship found between node '{node}' and this object"))
    }

    /// `get` of one object of a kind only pods make readable.
    fn get(&self, node: &str, req: &RequestInfo, decide: impl FnOnce(&str) -> Decision) -> Decision {
        if req.verb != "get" {
            return no_opinion("can only get individual resources of this type");
        }
        if !req.subresource.is_empty() {
            return no_opinion("cannot get subresource");
        }
        if req.object_name().is_empty() {
            return no_opinion("No Object name found");
        }
        decide(node)
    }

    /// get, list or watch of one Secret or ConfigMap a pod of the node uses.
    fn read_namespaced(&self, node: &str, kind: Kind, req: &RequestInfo) -> Decision {
        if !matches!(req.verb.as_str(), "get" | "list" | "watch") {
            return no_opinion("can only read resources of this type");
        }
        if !req.subresource.is_empty() {
            return no_opinion("cannot read subresource");
        }
        if req.namespace.is_empty() {
            return no_opinion("can only read namespaced object of this type");
        }
        self.related(node, kind, req)
    }

    /// A token for a service account a pod of the node runs as.
    fn create_token(&self, node: &str, req: &RequestInfo) -> Decision {
        if req.verb != "create" || req.name.is_empty() {
            return no_opinion("can only create tokens for individual service accounts");
        }
        if req.subresource != "token" {
            return no_opinion("can only create token subresource of serviceaccount");
        }
        self.related(node, Kind::ServiceAccount, req)
    }

    fn pod(&self, node: &str, req: &RequestInfo) -> Decision {
        match (req.subresource.as_str(), req.verb.as_str()) {
            ("", "get") => self.get(node, req, |n| self.related(n, Kind::Pod, req)),
            ("", "list" | "watch") => {
                if req.field_selector.as_ref().and_then(|f| f.exact("spec.nodeName")) == Some(node) {
                    Decision::Allow
                } else if !req.object_name().is_empty() {
                    self.related(node, Kind::Pod, req)
                } else {
                    no_opinion("can only list/watch pods with spec.nodeName field selector")
                }
            }
            // Mirror pods; admission keeps them to pods bound to the node.
            ("", "create" | "delete") | ("status", "update" | "patch") | ("eviction", "create") => Decision::Allow,
            _ => no_opinion(""),
        }
    }
}

fn own_node(node: &str, req: &RequestInfo) -> Decision {
    match (req.subresource.as_str(), req.verb.as_str()) {
        // Admission keeps a node to writing its own Node.
        ("", "create" | "update" | "patch") | ("status", "update" | "patch") => Decision::Allow,
        ("", "get" | "list" | "watch") => match req.object_name() {
            n if n == node => Decision::Allow,
            "" => no_opinion(format!("node '{node}' cannot read all nodes, only its own Node object")),
            other => no_opinion(format!("node '{node}' cannot read '{other}', only its own Node object")),
        },
        _ => no_opinion(""),
    }
}

fn lease(node: &str, req: &RequestInfo) -> Decision {
    if !matches!(req.verb.as_str(), "get" | "create" | "update" | "patch" | "delete") {
        return no_opinion("can only get, create, update, patch, or delete a node lease");
    }
    if req.namespace != NODE_LEASE_NAMESPACE {
        return no_opinion(format!("can only access leases in the {NODE_LEASE_NAMESPACE:?} system namespace"));
    }
    // The name of a create is in the body, which admission checks.
    if req.verb != "create" && req.name != node {
        return no_opinion("can only access node lease with the same name as the requesting node");
    }
    Decision::Allow
}

fn csi_node(node: &str, req: &RequestInfo) -> Decision {
    if !matches!(req.verb.as_str(), "get" | "create" | "update" | "patch" | "delete") {
        return no_opinion("can only get, create, update, patch, or delete a CSINode");
    }
    if !req.subresource.is_empty() {
        return no_opinion("cannot authorize CSINode subresources");
    }
    if req.verb != "create" && req.name != node {
        return no_opinion("can only access CSINode with the same name as the requesting node");
    }
    Decision::Allow
}

#[cfg(test)]
mod tests {
    use http::Method;
    use serde_json::json;

    use super::*;
    use crate::server::apiserver::request::{Query, request_info};

    fn node_user(name: &str) -> UserInfo {
        UserInfo { name: format!("system:node:{name}"), groups: vec![NODES.into()], ..Default::default() }
    }

    fn req(method: Method, path: &str, query: &str) -> RequestInfo {
        request_info(&method, path, &Query::parse(Some(query)))
    }

    fn pod(ns: &str, name: &str, spec: Value) -> (String, Vec<u8>) {
        let v = json!({"metadata": {"namespace": ns, "name": name}, "spec": spec});
        (format!("{POD_PREFIX}{ns}/{name}"), serde_json::to_vec(&v).unwrap())
    }

    fn authz() -> NodeAuthorizer {
        let a = NodeAuthorizer::new(Arc::new(NodeGraph::new()));
        let (key, v) = pod(
            "default",
            "web",
            json!({
                "nodeName": "n1",
                "serviceAccountName": "web-sa",
                "imagePullSecrets": [{"name": "pull"}],
                "containers": [{"name": "c", "env": [
                    {"name": "A", "valueFrom": {"secretKeyRef": {"name": "env-secret", "key": "k"}}},
                    {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "env-cm", "key": "k"}}},
                    {"name": "C", "value": "plain"},
                ], "envFrom": [{"configMapRef": {"name": "from-cm"}}]}],
                "initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": "init-secret"}}]}],
                "volumes": [
                    {"name": "s", "secret": {"secretName": "vol-secret"}},
                    {"name": "p", "projected": {"sources": [{"configMap": {"name": "kube-root-ca.crt"}}, {"serviceAccountToken": {"path": "token"}}]}},
                    {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
                    {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}},
                ],
            }),
        );
        a.graph.put_pod(&key, Some(&v));
        let (key, v) = pod(
            "default",
            "other",
            json!({"nodeName": "n2", "volumes": [{"name": "s", "secret": {"secretName": "n2-secret"}}]}),
        );
        a.graph.put_pod(&key, Some(&v));
        let (key, v) =
            pod("default", "pending", json!({"volumes": [{"name": "s", "secret": {"secretName": "pending-secret"}}]}));
        a.graph.put_pod(&key, Some(&v));
        a.graph.put_claim(
            &format!("{CLAIM_PREFIX}default/data"),
            Some(&serde_json::to_vec(&json!({"spec": {"volumeName": "pv-data"}})).unwrap()),
        );
        a
    }

    fn decide(a: &NodeAuthorizer, node: &str, method: Method, path: &str, query: &str) -> Decision {
        a.authorize(&node_user(node), node, &req(method, path, query))
    }

    #[test]
    fn a_node_reads_what_its_pods_use_and_nothing_else() {
        let a = authz();
        for secret in ["pull", "env-secret", "init-secret", "vol-secret"] {
            let d = decide(&a, "n1", Method::GET, &format!("/api/v1/namespaces/default/secrets/{secret}"), "");
            assert_eq!(d, Decision::Allow, "{secret}");
        }
        for cm in ["env-cm", "from-cm", "kube-root-ca.crt"] {
            let d = decide(&a, "n1", Method::GET, &format!("/api/v1/namespaces/default/configmaps/{cm}"), "");
            assert_eq!(d, Decision::Allow, "{cm}");
        }
        // A watch of one object names it with a field selector.
        let d = decide(
            &a,
            "n1",
            Method::GET,
            "/api/v1/namespaces/default/secrets",
            "watch=1&fieldSelector=metadata.name%3Dvol-secret",
        );
        assert_eq!(d, Decision::Allow);
        let unrelated = Decision::Deny("no relationship found between node 'n1' and this object".into());
        for s in ["n2-secret", "pending-secret", "nope"] {
            assert_eq!(
                decide(&a, "n1", Method::GET, &format!("/api/v1/namespaces/default/secrets/{s}"), ""),
                unrelated
            );
        }
        // The same name in another namespace is another object.
        assert_eq!(decide(&a, "n1", Method::GET, "/api/v1/namespaces/other/secrets/vol-secret", ""), unrelated);
        assert_eq!(
            decide(&a, "n1", Method::GET, "/api/v1/namespaces/default/secrets", ""),
            Decision::Deny("No Object name found".into())
        );
        assert_eq!(
            decide(&a, "n1", Method::GET, "/api/v1/secrets", ""),
            Decision::Deny("can only read namespaced object of this type".into())
        );
        assert_eq!(
            decide(&a, "n1", Method::DELETE, "/api/v1/namespaces/default/secrets/vol-secret", ""),
            Decision::Deny("can only read resources of this type".into())
        );
        // Claims and the volumes they are bound to; tokens of the pods' service account.
        assert_eq!(
            decide(&a, "n1", Method::GET, "/api/v1/namespaces/default/persistentvolumeclaims/data", ""),
            Decision::Allow
        );
        assert_eq!(
            decide(&a, "n1", Method::GET, "/api/v1/namespaces/default/persistentvolumeclaims/web-scratch", ""),
            Decision::Allow
        );
        assert_eq!(decide(&a, "n1", Method::GET, "/api/v1/persistentvolumes/pv-data", ""), Decision::Allow);
        assert_eq!(
            decide(&a, "n2", Method::GET, "/api/v1/persistentvolumes/pv-data", ""),
            Decision::Deny("no relationship found between node 'n2' and this object".into())
        );
        assert_eq!(
            decide(&a, "n1", Method::GET, "/api/v1/persistentvolumes", ""),
            Decision::Deny("can only get individual resources of this type".into())
        );
        assert_eq!(
            decide(&a, "n1", Method::POST, "/api/v1/namespaces/default/serviceaccounts/web-sa/token", ""),
            Decision::Allow
        );
        assert_eq!(
            decide(&a, "n1", Method::POST, "/api/v1/namespaces/default/serviceaccounts/default/token", ""),
            unrelated
        );
        assert_eq!(
            decide(&a, "n1", Method::GET, "/api/v1/namespaces/default/serviceaccounts/web-sa", ""),
            Decision::Deny("can only create tokens for individual service accounts".into())
        );
    }

    #[test]
    fn the_graph_follows_pods_moving_and_going() {
        let a = authz();
        let get = |a: &NodeAuthorizer, node: &str| {
            decide(a, node, Method::GET, "/api/v1/namespaces/default/secrets/vol-secret", "") == Decision::Allow
        };
        assert!(get(&a, "n1") && !get(&a, "n2"));
        // A second pod using the secret on the same node: deleting one keeps it readable.
        let (key2, v2) = pod(
            "default",
            "web-2",
            json!({"nodeName": "n1", "volumes": [{"name": "s", "secret": {"secretName": "vol-secret"}}]}),
        );
        a.graph.put_pod(&key2, Some(&v2));
        a.graph.put_pod(&format!("{POD_PREFIX}default/web"), None);
        assert!(get(&a, "n1"));
        a.graph.put_pod(&key2, None);
        assert!(!get(&a, "n1"));
        // An unbound pod is bound later.
        let (key, v) = pod(
            "default",
            "pending",
            json!({"nodeName": "n2", "volumes": [{"name": "s", "secret": {"secretName": "vol-secret"}}]}),
        );
        a.graph.put_pod(&key, Some(&v));
        assert!(get(&a, "n2") && !get(&a, "n1"));
        // A claim unbound from its volume.
        a.graph.put_claim(&format!("{CLAIM_PREFIX}default/data"), Some(b"{\"spec\":{}}"));
        let (key, v) = pod(
            "default",
            "db",
            json!({"nodeName": "n1", "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]}),
        );
        a.graph.put_pod(&key, Some(&v));
        assert!(decide(&a, "n1", Method::GET, "/api/v1/persistentvolumes/pv-data", "") != Decision::Allow);
        assert!(a.graph.pods.read().unwrap().used.values().all(|n| n.iter().all(|(_, c)| *c > 0)));
    }

    #[test]
    fn pods_nodes_and_leases_are_the_nodes_own() {
        let a = authz();
        assert_eq!(decide(&a, "n1", Method::GET, "/api/v1/namespaces/default/pods/web", ""), Decision::Allow);
        assert_eq!(
            decide(&a, "n1", Method::GET, "/api/v1/namespaces/default/pods/other", ""),
            Decision::Deny("no relationship found between node 'n1' and this object".into())
        );
        assert_eq!(
            decide(&a, "n1", Method::GET, "/api/v1/pods", "fieldSelector=spec.nodeName%3Dn1&watch=true"),
            Decision::Allow
        );
        assert_eq!(
            decide(&a, "n1", Method::GET, "/api/v1/pods", "fieldSelector=spec.nodeName%3Dn2"),
            Decision::Deny("can only list/watch pods with spec.nodeName field selector".into())
        );
        assert_eq!(
            decide(&a, "n1", Method::PATCH, "/api/v1/namespaces/default/pods/other/status", ""),
            Decision::Allow
        );
        assert_eq!(
            decide(&a, "n1", Method::PATCH, "/api/v1/namespaces/default/pods/web", ""),
            Decision::Deny(String::new())
        );
        assert_eq!(decide(&a, "n1", Method::GET, "/api/v1/nodes/n1", ""), Decision::Allow);
        assert_eq!(decide(&a, "n1", Method::GET, "/api/v1/nodes", "fieldSelector=metadata.name%3Dn1"), Decision::Allow);
        assert_eq!(
            decide(&a, "n1", Method::GET, "/api/v1/nodes/n2", ""),
            Decision::Deny("node 'n1' cannot read 'n2', only its own Node object".into())
        );
        assert_eq!(
            decide(&a, "n1", Method::GET, "/api/v1/nodes", ""),
            Decision::Deny("node 'n1' cannot read all nodes, only its own Node object".into())
        );
        assert_eq!(decide(&a, "n1", Method::DELETE, "/api/v1/nodes/n1", ""), Decision::Deny(String::new()));
        assert_eq!(
            decide(&a, "n1", Method::PUT, "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1", ""),
            Decision::Allow
        );
        assert_eq!(
            decide(&a, "n1", Method::PUT, "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n2", ""),
            Decision::Deny("can only access node lease with the same name as the requesting node".into())
        );
        assert_eq!(
            decide(&a, "n1", Method::GET, "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/n1", ""),
            Decision::Deny("can only access leases in the \"kube-node-lease\" system namespace".into())
        );
        // The rest is the system:node role's: services yes, deployments no.
        assert_eq!(decide(&a, "n1", Method::GET, "/api/v1/services", "watch=1"), Decision::Allow);
        assert_eq!(decide(&a, "n1", Method::POST, "/api/v1/namespaces/default/events", ""), Decision::Allow);
        assert_eq!(decide(&a, "n1", Method::GET, "/apis/apps/v1/deployments", ""), Decision::Deny(String::new()));
        // A member of system:nodes that is no particular node gets nothing.
        let odd = UserInfo { name: "kubelet".into(), groups: vec![NODES.into()], ..Default::default() };
        assert_eq!(identity(&odd), Some(""));
        assert_eq!(
            a.authorize(&odd, "", &req(Method::GET, "/api/v1/services", "")),
            Decision::Deny("unknown node for user \"kubelet\"".into())
        );
        assert_eq!(identity(&UserInfo { name: "system:node:x".into(), ..Default::default() }), None);
    }
}
