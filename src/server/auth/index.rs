//! The in-memory RBAC index: every Role, ClusterRole, RoleBinding and ClusterRoleBinding,
//! kept current from a watch of the store, with bindings indexed by subject (and RoleBindings
//! also by namespace) so that resolving one user's rules touches only the bindings naming that
//! user or one of its groups.
//!
//! It owns no policy decisions (see `rbac.rs`); it only answers "which rules apply to this user
//! in this namespace, and which referenced roles are missing", in upstream's visiting order
//! (ClusterRoleBindings first, then RoleBindings of the namespace; each by name here, since
//! upstream's order is its cache's).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::server::store::follow::{Follower, follow};
use crate::server::store::{Datastore, KeyValue};

use super::rules::{PolicyRule, rules_of};
use super::{Decision, UserInfo};
use crate::server::apiserver::request::RequestInfo;

/// Store prefix of the four RBAC kinds.
pub const PREFIX: &str = "/rbac.authorization.k8s.io/";

/// Which of the four kinds a stored key holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Role,
    ClusterRole,
    RoleBinding,
    ClusterRoleBinding,
}

impl Kind {
    fn of_key(key: &str) -> Option<Kind> {
        let rest = key.strip_prefix(PREFIX)?;
        match rest.split('/').next()? {
            "roles" => Some(Kind::Role),
            "clusterroles" => Some(Kind::ClusterRole),
            "rolebindings" => Some(Kind::RoleBinding),
            "clusterrolebindings" => Some(Kind::ClusterRoleBinding),
            _ => None,
        }
    }
}

/// A binding as the index needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Binding {
    /// Empty for ClusterRoleBindings.
    namespace: String,
    name: String,
    role_kind: String,
    role_name: String,
    /// Subject keys (`u:<user>` or `g:<group>`); service accounts are users
    /// `system:serviceaccount:<ns>:<name>`, their namespace defaulting to the binding's.
    keys: Vec<String>,
}

fn user_key(name: &str) -> String {
    format!("u:{name}")
}

fn group_key(name: &str) -> String {
    format!("g:{name}")
}

fn binding_of(obj: &Value) -> Binding {
    let meta = &obj["metadata"];
    let namespace = meta["namespace"].as_str().unwrap_or("").to_string();
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    let mut keys = Vec::new();
    for subject in obj["subjects"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
        let name = subject["name"].as_str().unwrap_or("");
        let key = match subject["kind"].as_str().unwrap_or("") {
            "User" => Some(user_key(name)),
            "Group" => Some(group_key(name)),
            "ServiceAccount" => {
                let ns = subject["namespace"].as_str().filter(|n| !n.is_empty()).unwrap_or(&namespace);
                (!ns.is_empty()).then(|| user_key(&super::serviceaccount::user_name(ns, name)))
            }
            _ => None,
        };
        if let Some(k) = key
            && !keys.contains(&k)
        {
            keys.push(k);
        }
    }
    Binding {
        name: s(&meta["name"]),
        namespace,
        role_kind: s(&obj["roleRef"]["kind"]),
        role_name: s(&obj["roleRef"]["name"]),
        keys,
    }
}

/// What a visit yields: a rule that applies, or why some binding contributed nothing.
pub enum Visit<'a> {
    Rule(&'a PolicyRule),
    Error(String),
}

#[derive(Default)]
struct State {
    cluster_roles: HashMap<String, Arc<[PolicyRule]>>,
    roles: HashMap<(String, String), Arc<[PolicyRule]>>,
    cluster_bindings: HashMap<String, Binding>,
    bindings: HashMap<(String, String), Binding>,
    /// Subject key → names of ClusterRoleBindings naming it.
    cluster_by_subject: HashMap<String, BTreeSet<String>>,
    /// (subject key, namespace) → names of that namespace's RoleBindings naming it.
    by_subject: HashMap<(String, String), BTreeSet<String>>,
}

impl State {
    fn apply(&mut self, key: &str, obj: Option<&Value>) {
        let Some(kind) = Kind::of_key(key) else { return };
        // Keys are `<prefix><plural>/<namespace>/<name>`.
        let mut parts = key[PREFIX.len()..].splitn(3, '/').skip(1);
        let ns = parts.next().unwrap_or("").to_string();
        let name = parts.next().unwrap_or("").to_string();
        match kind {
            Kind::ClusterRole => match obj {
                Some(o) => {
                    self.cluster_roles.insert(name, rules_of(o).into());
                }
                None => {
                    self.cluster_roles.remove(&name);
                }
            },
            Kind::Role => match obj {
                Some(o) => {
                    self.roles.insert((ns, name), rules_of(o).into());
                }
                None => {
                    self.roles.remove(&(ns, name));
                }
            },
            Kind::ClusterRoleBinding => {
                if let Some(old) = self.cluster_bindings.remove(&name) {
                    for k in &old.keys {
                        if let Some(set) = self.cluster_by_subject.get_mut(k) {
                            set.remove(&name);
                            if set.is_empty() {
                                self.cluster_by_subject.remove(k);
                            }
                        }
                    }
                }
                if let Some(o) = obj {
                    let b = binding_of(o);
                    for k in &b.keys {
                        self.cluster_by_subject.entry(k.clone()).or_default().insert(name.clone());
                    }
                    self.cluster_bindings.insert(name, b);
                }
            }
            Kind::RoleBinding => {
                let id = (ns.clone(), name.clone());
                if let Some(old) = self.bindings.remove(&id) {
                    for k in &old.keys {
                        let sk = (k.clone(), ns.clone());
                        if let Some(set) = self.by_subject.get_mut(&sk) {
                            set.remove(&name);
                            if set.is_empty() {
                                self.by_subject.remove(&sk);
                            }
                        }
                    }
                }
                if let Some(o) = obj {
                    let mut b = binding_of(o);
                    b.namespace = ns.clone();
                    for k in &b.keys {
                        self.by_subject.entry((k.clone(), ns.clone())).or_default().insert(name.clone());
                    }
                    self.bindings.insert(id, b);
                }
            }
        }
    }

    fn role_rules(&self, b: &Binding) -> Result<&Arc<[PolicyRule]>, String> {
        match b.role_kind.as_str() {
            "ClusterRole" => self
                .cluster_roles
                .get(&b.role_name)
                .ok_or_else(|| format!("clusterrole.rbac.authorization.k8s.io \"{}\" not found", b.role_name)),
            "Role" => self
                .roles
                .get(&(b.namespace.clone(), b.role_name.clone()))
                .ok_or_else(|| format!("role.rbac.authorization.k8s.io \"{}\" not found", b.role_name)),
            other => Err(format!("unsupported role reference kind: \"{other}\"")),
        }
    }
}

/// The index; cheap to share, read without waiting on the store.
pub struct RbacIndex {
    state: RwLock<State>,
    /// The store revision up to which every RBAC change has been applied.
    synced: tokio::sync::watch::Sender<u64>,
    /// Bumped, and `decisions` emptied, by every change of `state` (under its write lock).
    generation: AtomicU64,
    /// Decisions already made with the current state, by [`decision_key`].
    decisions: RwLock<HashMap<String, Decision>>,
}

/// Decisions remembered at most; the cache starts over when full.
const DECISIONS_KEPT: usize = 8192;

/// The cache key of a decision: the user, its groups and the request attributes RBAC reads;
/// `name` only when a rule with `resourceNames` took part.
pub fn decision_key(user: &UserInfo, req: &RequestInfo, name: Option<&str>) -> String {
    let mut k = String::with_capacity(128);
    for part in [user.name.as_str(), &req.verb, &req.group, &req.resource, &req.subresource, &req.namespace, &req.path]
    {
        k.push_str(part);
        k.push('\0');
    }
    k.push(if req.is_resource_request { 'r' } else { 'n' });
    match name {
        Some(n) => {
            k.push('=');
            k.push_str(n);
        }
        None => k.push('*'),
    }
    for g in &user.groups {
        k.push('\0');
        k.push_str(g);
    }
    k
}

impl Default for RbacIndex {
    fn default() -> Self {
        Self::new()
    }
}

impl RbacIndex {
    pub fn new() -> Self {
        RbacIndex {
            state: RwLock::new(State::default()),
            synced: tokio::sync::watch::Sender::new(0),
            generation: AtomicU64::new(0),
            decisions: RwLock::new(HashMap::new()),
        }
    }

    /// Changes the state; decisions made before no longer count.
    fn change(&self, f: impl FnOnce(&mut State)) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        f(&mut state);
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.decisions.write().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Applies one stored object (`None`: deleted) under its store key.
    pub fn apply(&self, key: &str, obj: Option<&Value>) {
        self.change(|s| s.apply(key, obj));
    }

    /// The state's generation, read before deciding (see [`RbacIndex::remember`]).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// A decision made earlier for `key` with the current state.
    pub fn cached(&self, key: &str) -> Option<Decision> {
        self.decisions.read().unwrap_or_else(|e| e.into_inner()).get(key).cloned()
    }

    /// Remembers a decision made with the state of `generation`, unless the state changed
    /// since (then the decision may be stale and is dropped).
    pub fn remember(&self, generation: u64, key: String, decision: Decision) {
        let mut decisions = self.decisions.write().unwrap_or_else(|e| e.into_inner());
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if decisions.len() >= DECISIONS_KEPT {
            decisions.clear();
        }
        decisions.insert(key, decision);
    }

    fn apply_kv(&self, kv: &KeyValue, deleted: bool) {
        if deleted {
            self.apply(&kv.key, None);
        } else if let Ok(v) = serde_json::from_slice::<Value>(&kv.value) {
            self.apply(&kv.key, Some(&v));
        }
    }

    /// Calls `visit` with every rule that applies to `user` in `namespace` ("" for cluster
    /// scope, which reads ClusterRoleBindings only) and every missing role; stops when `visit`
    /// returns false.
    pub fn visit_rules(&self, user: &UserInfo, namespace: &str, visit: &mut dyn FnMut(Visit<'_>) -> bool) {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        let mut keys = Vec::with_capacity(user.groups.len() + 1);
        keys.push(user_key(&user.name));
        keys.extend(user.groups.iter().map(|g| group_key(g)));
        let mut names: BTreeSet<&String> = BTreeSet::new();
        for k in &keys {
            if let Some(set) = state.cluster_by_subject.get(k) {
                names.extend(set.iter());
            }
        }
        let cluster = names.iter().filter_map(|n| state.cluster_bindings.get(*n));
        let mut local_names: BTreeSet<&String> = BTreeSet::new();
        if !namespace.is_empty() {
            for k in keys {
                if let Some(set) = state.by_subject.get(&(k, namespace.to_string())) {
                    local_names.extend(set.iter());
                }
            }
        }
        let local = local_names.iter().filter_map(|n| state.bindings.get(&(namespace.to_string(), (*n).clone())));
        for b in cluster.chain(local) {
            match state.role_rules(b) {
                Ok(rules) => {
                    for r in rules.iter() {
                        if !visit(Visit::Rule(r)) {
                            return;
                        }
                    }
                }
                Err(e) => {
                    if !visit(Visit::Error(e)) {
                        return;
                    }
                }
            }
        }
    }

    /// The rules of the role a binding in `namespace` ("" for a ClusterRoleBinding) refers to.
    pub fn role_ref_rules(&self, namespace: &str, kind: &str, name: &str) -> Result<Vec<PolicyRule>, String> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        let b = Binding {
            namespace: namespace.to_string(),
            name: String::new(),
            role_kind: kind.to_string(),
            role_name: name.to_string(),
            keys: Vec::new(),
        };
        state.role_rules(&b).map(|r| r.to_vec())
    }

    /// Waits (at most a few seconds) until every RBAC change up to `revision` is applied, so a
    /// client that wrote a role or binding is authorized by it on its next request.
    pub async fn wait_for(&self, revision: u64) {
        let mut rx = self.synced.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|r| *r >= revision)).await;
    }

    /// Loads every RBAC object from `store`, then follows its changes until `cancel`.
    pub async fn run(self: Arc<Self>, store: Arc<dyn Datastore>, cancel: CancellationToken) {
        follow(store, PREFIX, "RBAC objects", &mut Feed(&self), cancel).await;
    }
}

/// The index as a store follower.
struct Feed<'a>(&'a RbacIndex);

impl Follower for Feed<'_> {
    fn reset(&mut self, kvs: &[KeyValue], revision: u64) {
        let mut fresh = State::default();
        for kv in kvs {
            if let Ok(v) = serde_json::from_slice::<Value>(&kv.value) {
                fresh.apply(&kv.key, Some(&v));
            }
        }
        self.0.change(|s| *s = fresh);
        self.0.synced.send_replace(revision);
    }

    fn apply(&mut self, kv: &KeyValue, deleted: bool, revision: u64) {
        self.0.apply_kv(kv, deleted);
        self.0.synced.send_replace(revision);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn crb(name: &str, role: &str, subjects: Value) -> Value {
        json!({"metadata": {"name": name}, "roleRef": {"kind": "ClusterRole", "name": role}, "subjects": subjects})
    }

    fn rb(ns: &str, name: &str, kind: &str, role: &str, subjects: Value) -> Value {
        json!({"metadata": {"name": name, "namespace": ns}, "roleRef": {"kind": kind, "name": role}, "subjects": subjects})
    }

    fn role(verb: &str) -> Value {
        json!({"rules": [{"verbs": [verb], "apiGroups": [""], "resources": ["pods"]}]})
    }

    fn collect(idx: &RbacIndex, user: &UserInfo, ns: &str) -> (Vec<String>, Vec<String>) {
        let (mut verbs, mut errors) = (Vec::new(), Vec::new());
        idx.visit_rules(user, ns, &mut |v| {
            match v {
                Visit::Rule(r) => verbs.push(r.verbs[0].clone()),
                Visit::Error(e) => errors.push(e),
            }
            true
        });
        (verbs, errors)
    }

    #[test]
    fn finds_exactly_the_bindings_of_a_user_among_many() {
        let idx = RbacIndex::new();
        idx.apply("/rbac.authorization.k8s.io/clusterroles//reader", Some(&role("get")));
        idx.apply("/rbac.authorization.k8s.io/clusterroles//writer", Some(&role("create")));
        idx.apply("/rbac.authorization.k8s.io/roles/ns7/local", Some(&role("delete")));
        // Thousands of bindings for other users, in many namespaces.
        for i in 0..5000 {
            let ns = format!("ns{}", i % 50);
            idx.apply(
                &format!("/rbac.authorization.k8s.io/rolebindings/{ns}/b{i}"),
                Some(&rb(
                    &ns,
                    &format!("b{i}"),
                    "ClusterRole",
                    "writer",
                    json!([{"kind": "User", "name": format!("user{i}")}]),
                )),
            );
        }
        idx.apply(
            "/rbac.authorization.k8s.io/clusterrolebindings//readers",
            Some(&crb("readers", "reader", json!([{"kind": "Group", "name": "team"}]))),
        );
        idx.apply(
            "/rbac.authorization.k8s.io/rolebindings/ns7/mine",
            Some(&rb("ns7", "mine", "Role", "local", json!([{"kind": "ServiceAccount", "name": "bot"}]))),
        );
        idx.apply(
            "/rbac.authorization.k8s.io/rolebindings/ns7/dangling",
            Some(&rb("ns7", "dangling", "ClusterRole", "nope", json!([{"kind": "Group", "name": "team"}]))),
        );
        let bot = UserInfo {
            name: "system:serviceaccount:ns7:bot".into(),
            groups: vec!["team".into()],
            ..Default::default()
        };
        let (verbs, errors) = collect(&idx, &bot, "ns7");
        assert_eq!(verbs, ["get", "delete"]);
        assert_eq!(errors, ["clusterrole.rbac.authorization.k8s.io \"nope\" not found"]);
        // Elsewhere only the cluster-wide binding applies; at cluster scope too.
        assert_eq!(collect(&idx, &bot, "ns8"), (vec!["get".to_string()], vec![]));
        assert_eq!(collect(&idx, &bot, "").0, ["get"]);
        let u7 = UserInfo { name: "user7".into(), ..Default::default() };
        assert_eq!(collect(&idx, &u7, "ns7").0, ["create"]);
        assert!(collect(&idx, &u7, "ns8").0.is_empty());
        // Updates replace subjects; deletes remove bindings and roles.
        idx.apply(
            "/rbac.authorization.k8s.io/rolebindings/ns7/b7",
            Some(&rb("ns7", "b7", "ClusterRole", "writer", json!([{"kind": "User", "name": "other"}]))),
        );
        assert!(collect(&idx, &u7, "ns7").0.is_empty());
        idx.apply("/rbac.authorization.k8s.io/roles/ns7/local", None);
        let (verbs, errors) = collect(&idx, &bot, "ns7");
        assert_eq!(verbs, ["get"]);
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[1], "role.rbac.authorization.k8s.io \"local\" not found");
        idx.apply("/rbac.authorization.k8s.io/clusterrolebindings//readers", None);
        assert!(collect(&idx, &bot, "ns8").0.is_empty());
        let state = idx.state.read().unwrap();
        assert!(!state.cluster_by_subject.contains_key("g:team"));
    }
}
