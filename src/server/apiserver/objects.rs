//! The object layer between HTTP handlers and the store: what create, update, patch and delete
//! *mean* for a Kubernetes object.
//!
//! It sets system fields (uid, creationTimestamp, generation, managedFields), runs defaulting,
//! validation and admission, keeps the status/spec split of subresources, allocates Service
//! addresses, implements finalizers and graceful deletion, and retries read-modify-write loops
//! on conflicts. It knows nothing of HTTP, content types or authentication.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::api::field_error::FieldError;
use crate::api::meta;
use crate::api::registry::{self, ResourceInfo, Storage};
use crate::api::status::ApiError;
use crate::server::store::{Datastore, KeyValue, StoreError};

use super::auth::UserInfo;
use super::auth::index::RbacIndex;
use super::auth::{node, rbac};
use super::codec;
use super::ipalloc::{self, Allocators};
use super::managed_fields;
use super::node_restriction::{self, Op, Write};
use super::serviceaccounts;

/// How unknown fields in a body are treated (`fieldValidation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

impl FieldValidation {
    /// Parses the query parameter; upstream's default is Warn.
    pub fn parse(v: Option<&str>) -> Result<Self, ApiError> {
        match v {
            None | Some("Warn") => Ok(Self::Warn),
            Some("Ignore") => Ok(Self::Ignore),
            Some("Strict") => Ok(Self::Strict),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation must be one of \"Ignore\", \"Warn\" or \"Strict\", got {other:?}"
            ))),
        }
    }
}

/// Per-request options of a write.
#[derive(Debug, Clone)]
pub struct WriteCtx {
    pub user: UserInfo,
    pub dry_run: bool,
    pub field_manager: String,
    pub validation: FieldValidation,
    /// `Warning` headers to send back.
    pub warnings: Vec<String>,
    /// The applied configuration of a server-side apply (None for other writes).
    pub apply: Option<Value>,
    /// The request body as sent, to report its unknown fields in the order it names them.
    pub body: Bytes,
}

/// Options of a delete (`DeleteOptions` body merged with query parameters).
#[derive(Debug, Clone, Default)]
pub struct DeleteOpts {
    pub grace_period_seconds: Option<i64>,
    pub propagation_policy: Option<String>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
}

/// What a delete did.
#[derive(Debug)]
pub enum Deleted {
    /// The object is gone; this is its last state.
    Gone(Value),
    /// The object is marked for deletion and waits for finalizers or its grace period.
    Pending(Value),
}

/// Resources whose objects track `metadata.generation`.
fn tracks_generation(info: &ResourceInfo) -> bool {
    matches!(
        (info.group, info.plural),
        ("apps", _)
            | ("batch", _)
            | ("autoscaling", _)
            | ("policy", "poddisruptionbudgets")
            | ("networking.k8s.io", "ingresses" | "networkpolicies" | "ingressclasses")
            | ("", "replicationcontrollers")
            | ("admissionregistration.k8s.io", _)
            | ("storage.k8s.io", "volumeattachments")
    )
}

/// Resources upstream answers a finished delete with the object for (rather than a Status).
pub fn returns_deleted_object(info: &ResourceInfo) -> bool {
    matches!(
        (info.group, info.plural),
        ("", "pods" | "services" | "namespaces" | "nodes" | "persistentvolumes" | "persistentvolumeclaims")
    )
}

fn has_status(info: &ResourceInfo) -> bool {
    info.subresource("status").is_some()
}

/// Maps store errors to API errors for one object.
pub fn store_error(info: &ResourceInfo, name: &str, e: StoreError) -> ApiError {
    match e {
        StoreError::AlreadyExists { .. } => ApiError::already_exists(info.group, info.plural, name),
        StoreError::NotFound { .. } => ApiError::not_found(info.group, info.plural, name),
        StoreError::Conflict { .. } => ApiError::stale(info.group, info.plural, name),
        StoreError::Compacted { requested, compacted } => {
            ApiError::expired(format!("too old resource version: {requested} ({compacted})"))
        }
        StoreError::FutureRevision { requested, current } => {
            ApiError::timeout(format!("Too large resource version: {requested}, current: {current}"))
        }
        other => ApiError::internal(other),
    }
}

/// The object layer.
pub struct Objects {
    pub store: Arc<dyn Datastore>,
    pub alloc: Arc<Allocators>,
    /// The RBAC index: writes of roles and bindings are checked against it for escalation and
    /// return only once it has seen them.
    pub rbac: Arc<RbacIndex>,
}

/// Spec-like content: everything except metadata and status.
fn spec_part(obj: &Value) -> Map<String, Value> {
    obj.as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "metadata" | "status"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// An object of `info`'s version as stored bytes, and as a later read returns it. Versions
/// stored in another version are converted once, and the response is converted back from
/// that, so storage defaults show in the response of the write that set them.
fn for_store(info: &ResourceInfo, obj: Value) -> Result<(Bytes, Value), ApiError> {
    if !crate::api::convert::converts(info) {
        return Ok((codec::encode_for_store(&obj)?, obj));
    }
    let stored = crate::api::convert::to_storage(info, obj);
    let bytes = codec::encode_for_store(&stored)?;
    Ok((bytes, crate::api::convert::from_storage(info, stored)))
}

fn kv_value(info: &ResourceInfo, kv: &KeyValue) -> Result<Value, ApiError> {
    codec::decode_stored_as(info, &kv.value, kv.mod_revision)
}

impl Objects {
    pub fn new(store: Arc<dyn Datastore>, alloc: Arc<Allocators>) -> Self {
        Objects { store, alloc, rbac: Arc::new(RbacIndex::new()) }
    }

    /// Waits until the RBAC index has applied a write of a role or binding, so the writer's
    /// next request is decided by it.
    async fn rbac_synced(&self, info: &ResourceInfo, obj: &Value) {
        if info.group == rbac::RBAC_GROUP
            && let Ok(rev) = codec::parse_resource_version(meta::resource_version(obj))
        {
            self.rbac.wait_for(rev).await;
        }
    }

    /// Upstream's escalation checks on writes of roles and bindings.
    fn admit_rbac(
        &self,
        info: &ResourceInfo,
        ns: &str,
        obj: &Value,
        old: Option<&Value>,
        ctx: &WriteCtx,
    ) -> Result<(), ApiError> {
        if info.group != rbac::RBAC_GROUP {
            return Ok(());
        }
        rbac::admit_write(&self.rbac, &ctx.user, info.plural, if info.namespaced { ns } else { "" }, obj, old)
    }

    fn key(info: &ResourceInfo, ns: &str, name: &str) -> String {
        info.key(if info.namespaced { ns } else { "" }, name)
    }

    /// The stored object with its resourceVersion, as bytes (no parse).
    pub async fn get_raw(&self, info: &ResourceInfo, ns: &str, name: &str) -> Result<Bytes, ApiError> {
        let kv = self.store.get(&Self::key(info, ns, name)).await.map_err(|e| store_error(info, name, e))?;
        let kv = kv.ok_or_else(|| ApiError::not_found(info.group, info.plural, name))?;
        if crate::api::convert::converts(info) {
            return serde_json::to_vec(&kv_value(info, &kv)?).map(Bytes::from).map_err(ApiError::internal);
        }
        Ok(codec::with_resource_version(&kv.value, kv.mod_revision))
    }

    /// The stored object, decoded.
    pub async fn get(&self, info: &ResourceInfo, ns: &str, name: &str) -> Result<Value, ApiError> {
        Ok(self.get_kv(info, ns, name).await?.1)
    }

    async fn get_kv(&self, info: &ResourceInfo, ns: &str, name: &str) -> Result<(KeyValue, Value), ApiError> {
        let kv = self.store.get(&Self::key(info, ns, name)).await.map_err(|e| store_error(info, name, e))?;
        let kv = kv.ok_or_else(|| ApiError::not_found(info.group, info.plural, name))?;
        let v = kv_value(info, &kv)?;
        Ok((kv, v))
    }

    /// Checks a decoded body against the kind's type; drops or rejects unknown fields.
    pub fn check_body(&self, info: &ResourceInfo, obj: &mut Value, ctx: &mut WriteCtx) -> Result<(), ApiError> {
        let kind = obj.get("kind").and_then(|k| k.as_str()).unwrap_or("");
        let api_version = obj.get("apiVersion").and_then(|k| k.as_str()).unwrap_or("");
        if !obj.is_object() {
            return Err(ApiError::bad_request("the body of the request is not a JSON object"));
        }
        if kind.is_empty() {
            return Err(ApiError::bad_request(format!("Object 'Kind' is missing in '{}'", truncate(&obj.to_string()))));
        }
        let expected_av = info.api_version();
        if kind != info.kind || api_version != expected_av {
            let body_info = registry::RESOURCES.iter().find(|r| r.kind == kind && r.api_version() == api_version);
            let msg = match body_info {
                Some(_) => format!(
                    "the API version in the data ({api_version}) does not match the expected API version ({expected_av})"
                ),
                None if api_version.is_empty() => {
                    format!("Object 'apiVersion' is missing in '{}'", truncate(&obj.to_string()))
                }
                None => format!("no kind \"{kind}\" is registered for version \"{api_version}\" in scheme"),
            };
            let msg = if kind != info.kind && body_info.is_some() {
                format!(
                    "the object provided is unrecognized (must be of type {}): {kind} in version {api_version:?}",
                    info.kind
                )
            } else {
                msg
            };
            return Err(ApiError::bad_request(msg));
        }
        let mut report = crate::api::decode::check(info.definition, obj).map_err(|e| {
            ApiError::bad_request(format!(
                "{} in version \"{}\" cannot be handled as a {}: {e}",
                info.kind, info.version, info.kind
            ))
        })?;
        if !report.unknown.is_empty() {
            if report.unknown.len() > 1 && ctx.validation != FieldValidation::Ignore {
                crate::api::duplicates::sort_by_document_order(&mut report.unknown, &ctx.body);
            }
            match ctx.validation {
                FieldValidation::Strict => {
                    let list: Vec<String> = report.unknown.iter().map(|p| format!("unknown field \"{p}\"")).collect();
                    return Err(ApiError::bad_request(format!("strict decoding error: {}", list.join(", "))));
                }
                FieldValidation::Warn => {
                    for p in &report.unknown {
                        ctx.warnings.push(format!("unknown field \"{p}\""));
                    }
                }
                FieldValidation::Ignore => {}
            }
            for p in &report.unknown {
                crate::api::decode::remove_path(obj, p);
            }
        }
        Ok(())
    }

    /// Namespace admission: it must exist, and must not be terminating for creates.
    async fn admit_namespace(&self, info: &ResourceInfo, ns: &str, creating: bool) -> Result<(), ApiError> {
        if !info.namespaced {
            return Ok(());
        }
        let ns_info = registry::lookup("", "v1", "namespaces").ok_or_else(|| ApiError::internal("no namespaces"))?;
        let kv = self.store.get(&ns_info.key("", ns)).await.map_err(|e| store_error(ns_info, ns, e))?;
        let Some(kv) = kv else {
            return Err(ApiError::not_found("", "namespaces", ns));
        };
        if creating {
            let v = kv_value(ns_info, &kv)?;
            if meta::is_deleting(&v) {
                return Err(ApiError::forbidden(
                    info.group,
                    info.plural,
                    "",
                    format!("unable to create new content in namespace {ns} because it is being terminated"),
                ));
            }
        }
        Ok(())
    }

    /// Pod admission, as upstream's `Priority` and `DefaultTolerationSeconds` plugins: the
    /// priority is resolved from `priorityClassName` (or the global default class), and a pod
    /// that does not say otherwise tolerates an unreachable or not-ready node for 300 s.
    async fn admit_pod(&self, obj: &mut Value) -> Result<(), ApiError> {
        let name = meta::name(obj).to_string();
        let class_name = obj.pointer("/spec/priorityClassName").and_then(|v| v.as_str()).unwrap_or("").to_string();
        let pc_info = registry::lookup("scheduling.k8s.io", "v1", "priorityclasses")
            .ok_or_else(|| ApiError::internal("no priorityclasses"))?;
        let class = if class_name.is_empty() {
            let all = self
                .store
                .range(&pc_info.prefix(None), None, 0, None)
                .await
                .map_err(|e| store_error(pc_info, "", e))?;
            let mut found = None;
            for kv in all.kvs {
                let v = kv_value(pc_info, &kv)?;
                if v.get("globalDefault").and_then(|g| g.as_bool()) == Some(true) {
                    found = Some(v);
                    break;
                }
            }
            found
        } else {
            match self
                .store
                .get(&pc_info.key("", &class_name))
                .await
                .map_err(|e| store_error(pc_info, &class_name, e))?
            {
                Some(kv) => Some(kv_value(pc_info, &kv)?),
                None => {
                    return Err(ApiError::forbidden(
                        "",
                        "pods",
                        &name,
                        format!("no PriorityClass with name {class_name} was found"),
                    ));
                }
            }
        };
        let (priority, policy) = match &class {
            Some(c) => (
                c.get("value").and_then(|v| v.as_i64()).unwrap_or(0),
                c.get("preemptionPolicy").and_then(|v| v.as_str()).unwrap_or("PreemptLowerPriority").to_string(),
            ),
            None => (0, "PreemptLowerPriority".to_string()),
        };
        if let Some(given) = obj.pointer("/spec/priority").and_then(|p| p.as_i64())
            && given != priority
        {
            return Err(ApiError::forbidden(
                "",
                "pods",
                &name,
                format!(
                    "the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {priority} from the given PriorityClass name"
                ),
            ));
        }
        if let Some(spec) = obj.get_mut("spec").and_then(|s| s.as_object_mut()) {
            if let Some(c) = &class {
                spec.insert("priorityClassName".into(), json!(meta::name(c)));
            }
            spec.insert("priority".into(), json!(priority));
            spec.entry("preemptionPolicy").or_insert(json!(policy));
            let tolerations = spec.entry("tolerations").or_insert(json!([]));
            if let Some(list) = tolerations.as_array_mut() {
                for key in ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"] {
                    let covered = list.iter().any(|t| {
                        let k = t.get("key").and_then(|k| k.as_str()).unwrap_or("");
                        let effect = t.get("effect").and_then(|e| e.as_str()).unwrap_or("");
                        let exists_all = k.is_empty() && t.get("operator").and_then(|o| o.as_str()) == Some("Exists");
                        (k == key || exists_all) && (effect.is_empty() || effect == "NoExecute")
                    });
                    if !covered {
                        list.push(
                            json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}),
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// Upstream's `ServiceAccount` admission of a new pod: it runs as an account that exists
    /// (`default` unless it names one) and mounts its token (see [`serviceaccounts::mount_token`]).
    /// A new namespace's `default` account may still be on its way from its controller: like
    /// upstream, that one is looked for ten times over one to two seconds.
    async fn admit_service_account(&self, ns: &str, name: &str, pod: &mut Value) -> Result<(), ApiError> {
        let forbidden = |m: String| ApiError::forbidden("", "pods", name, m);
        if serviceaccounts::is_mirror_pod(pod) {
            return serviceaccounts::check_mirror_pod(pod).map_err(forbidden);
        }
        let account = serviceaccounts::account_of(pod);
        let sa_info =
            registry::lookup("", "v1", "serviceaccounts").ok_or_else(|| ApiError::internal("no serviceaccounts"))?;
        let attempts = if account == "default" { 10 } else { 1 };
        let mut found = None;
        for attempt in 0..attempts {
            if attempt > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(
                    100 + u64::from(chrono::Utc::now().timestamp_subsec_nanos()) % 100,
                ))
                .await;
            }
            match self.get(sa_info, ns, &account).await {
                Ok(sa) => {
                    found = Some(sa);
                    break;
                }
                Err(e) if e.code == 404 => {}
                Err(e) => {
                    return Err(forbidden(format!("error looking up service account {ns}/{account}: {}", e.message)));
                }
            }
        }
        let sa = found.ok_or_else(|| {
            forbidden(format!(
                "service account {ns}/{account} was not found, retry after the service account is created"
            ))
        })?;
        serviceaccounts::mount_token(pod, &sa, &meta::generate_name(""));
        Ok(())
    }

    /// NodeRestriction for a create by the node `node`; a pod must be one of its mirror pods.
    async fn admit_node_create(
        &self,
        node: &str,
        info: &ResourceInfo,
        ns: &str,
        name: &str,
        obj: &Value,
    ) -> Result<(), ApiError> {
        node_restriction::check(node, &Write { new: Some(obj), ..Write::of(Op::Create, info, "", ns, name) })?;
        if info.group.is_empty() && info.plural == "pods" {
            let nodes = registry::lookup("", "v1", "nodes").ok_or_else(|| ApiError::internal("no nodes"))?;
            let uid = meta::uid(&self.get(nodes, "", node).await?).to_string();
            node_restriction::admit_mirror_pod(node, obj, &uid)
                .map_err(|m| ApiError::forbidden(info.group, info.plural, name, m))?;
        }
        Ok(())
    }

    /// Creates an object; `obj` has been checked with `check_body`.
    pub async fn create(
        &self,
        info: &ResourceInfo,
        ns: &str,
        mut obj: Value,
        ctx: &mut WriteCtx,
    ) -> Result<Value, ApiError> {
        if info.storage != Storage::Stored {
            return Err(ApiError::method_not_supported(info.group, info.plural, "create"));
        }
        let body_ns = meta::namespace(&obj).to_string();
        if info.namespaced {
            if !body_ns.is_empty() && body_ns != ns {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            meta::set_meta(&mut obj, "namespace", json!(ns));
        } else if !body_ns.is_empty() {
            meta::meta_mut(&mut obj).remove("namespace");
        }
        if meta::name(&obj).is_empty() {
            let prefix = meta::meta_str(&obj, "generateName").to_string();
            if !prefix.is_empty() {
                meta::set_meta(&mut obj, "name", json!(meta::generate_name(&prefix)));
            }
        }
        let name = meta::name(&obj).to_string();
        {
            let m = meta::meta_mut(&mut obj);
            m.remove("resourceVersion");
            m.remove("deletionTimestamp");
            m.remove("deletionGracePeriodSeconds");
            m.remove("selfLink");
            m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            m.insert("creationTimestamp".into(), json!(meta::now_rfc3339()));
            if tracks_generation(info) {
                m.insert("generation".into(), json!(1));
            } else {
                m.remove("generation");
            }
        }
        prepare_status_for_create(info, &mut obj);
        crate::api::defaults::apply_defaults(info, &mut obj);
        let mut errors = crate::api::validation::validate_create(info, &obj);
        if name.is_empty() && errors.iter().all(|e| e.field != "metadata.name") {
            errors.push(FieldError::required("metadata.name", "name or generateName is required"));
        }
        if !errors.is_empty() {
            return Err(ApiError::invalid(info.group, info.kind, &name, &errors));
        }
        self.admit_rbac(info, ns, &obj, None, ctx)?;
        if let Some(node) = node::identity(&ctx.user) {
            self.admit_node_create(node, info, ns, &name, &obj).await?;
        }
        self.admit_namespace(info, ns, true).await?;
        if info.group.is_empty() && info.plural == "pods" {
            self.admit_service_account(ns, &name, &mut obj).await?;
            self.admit_pod(&mut obj).await?;
        }
        record_managed_fields(info, &mut obj, None, ctx);
        let alloc = if info.group.is_empty() && info.plural == "services" {
            Some(self.alloc.allocate(&mut obj, None).map_err(|e| ApiError::invalid(info.group, info.kind, &name, &e))?)
        } else {
            None
        };
        let release = |a: &Option<ipalloc::Allocation>| {
            if let Some(a) = a {
                self.alloc.release(a);
            }
        };
        let (bytes, mut obj) = match for_store(info, obj) {
            Ok(b) => b,
            Err(e) => {
                release(&alloc);
                return Err(e);
            }
        };
        if ctx.dry_run {
            release(&alloc);
            if self.store.get(&Self::key(info, ns, &name)).await.map_err(|e| store_error(info, &name, e))?.is_some() {
                return Err(ApiError::already_exists(info.group, info.plural, &name));
            }
            return Ok(obj);
        }
        match self.store.create(&Self::key(info, ns, &name), bytes).await {
            Ok(kv) => {
                codec::set_resource_version(&mut obj, kv.mod_revision);
                self.rbac_synced(info, &obj).await;
                Ok(obj)
            }
            Err(e) => {
                release(&alloc);
                Err(store_error(info, &name, e))
            }
        }
    }

    /// Read-modify-write of one object with conflict retries.
    ///
    /// `mutate` gets the current object (with resourceVersion) and returns the desired one.
    /// When the desired object carries a resourceVersion, it is a precondition; otherwise the
    /// loop retries on conflicts. `subresource` is "" or "status" (other subresources are
    /// mapped by the caller).
    pub async fn update_with<F>(
        &self,
        info: &ResourceInfo,
        ns: &str,
        name: &str,
        subresource: &str,
        ctx: &mut WriteCtx,
        mut mutate: F,
    ) -> Result<Value, ApiError>
    where
        F: FnMut(&Value, &mut WriteCtx) -> Result<Value, ApiError>,
    {
        for _attempt in 0..16 {
            let (kv, current) = self.get_kv(info, ns, name).await?;
            let desired = mutate(&current, ctx)?;
            let precondition = meta::resource_version(&desired).to_string();
            if !precondition.is_empty() {
                let rv = codec::parse_resource_version(&precondition).map_err(|_| {
                    ApiError::invalid(
                        info.group,
                        info.kind,
                        name,
                        &[FieldError::invalid(
                            "metadata.resourceVersion",
                            json!(precondition),
                            "must be a decimal number",
                        )],
                    )
                })?;
                if rv != kv.mod_revision {
                    return Err(ApiError::stale(info.group, info.plural, name));
                }
            }
            let next = self.prepare_update(info, ns, name, subresource, desired, &current, ctx)?;
            match self.write_update(info, name, &kv, &current, next, ctx).await {
                Err(ApiError { code: 409, reason: "Conflict", .. }) if precondition.is_empty() => continue,
                other => {
                    if let Ok(v) = &other {
                        self.rbac_synced(info, v).await;
                    }
                    return other;
                }
            }
        }
        Err(ApiError::stale(info.group, info.plural, name))
    }

    /// Applies the update rules: system fields kept, spec/status split, generation, defaults,
    /// validation.
    #[allow(clippy::too_many_arguments)]
    fn prepare_update(
        &self,
        info: &ResourceInfo,
        ns: &str,
        name: &str,
        subresource: &str,
        desired: Value,
        current: &Value,
        ctx: &mut WriteCtx,
    ) -> Result<Value, ApiError> {
        if !desired.is_object() {
            return Err(ApiError::bad_request("the body of the request is not a JSON object"));
        }
        let body_name = meta::name(&desired);
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let body_ns = meta::namespace(&desired);
        if info.namespaced && !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let is_csr = info.group == "certificates.k8s.io" && info.plural == "certificatesigningrequests";
        let mut next = if is_csr {
            super::certificates::merge_update(subresource, desired, current, name)?
        } else if subresource == "status" {
            // Status writes change only status (and never spec, labels or annotations).
            let mut n = current.clone();
            if let Some(m) = n.as_object_mut() {
                match desired.get("status") {
                    Some(s) => m.insert("status".into(), s.clone()),
                    None => m.remove("status"),
                };
            }
            n
        } else {
            let mut n = desired;
            // A binding sets spec.nodeName and the PodScheduled condition together; every other
            // write through the main resource leaves status as it was.
            if has_status(info)
                && subresource != "binding"
                && let Some(m) = n.as_object_mut()
            {
                match current.get("status") {
                    Some(s) => m.insert("status".into(), s.clone()),
                    None => m.remove("status"),
                };
            }
            n
        };
        {
            let cur_meta = meta::meta(current).cloned().unwrap_or_default();
            let m = meta::meta_mut(&mut next);
            m.insert("name".into(), json!(name));
            if info.namespaced {
                m.insert("namespace".into(), json!(ns));
            } else {
                m.remove("namespace");
            }
            for k in ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"] {
                match cur_meta.get(k) {
                    Some(v) => m.insert(k.into(), v.clone()),
                    None => m.remove(k),
                };
            }
            m.remove("selfLink");
            if let Some(gn) = cur_meta.get("generateName")
                && !m.contains_key("generateName")
            {
                m.insert("generateName".into(), gn.clone());
            }
        }
        if info.group.is_empty() && info.plural == "services" {
            ipalloc::carry_over_allocations(&mut next, current);
        }
        crate::api::defaults::apply_defaults(info, &mut next);
        if tracks_generation(info) && subresource != "status" && spec_part(&next) != spec_part(current) {
            let g = meta::meta(current).and_then(|m| m.get("generation")).and_then(|g| g.as_i64()).unwrap_or(0);
            meta::set_meta(&mut next, "generation", json!(g + 1));
        }
        if meta::is_deleting(current) {
            // Once deletion started, finalizers may only be removed.
            let before = meta::finalizers(current);
            let added: Vec<String> = meta::finalizers(&next).into_iter().filter(|f| !before.contains(f)).collect();
            if !added.is_empty() {
                return Err(ApiError::invalid(
                    info.group,
                    info.kind,
                    name,
                    &[FieldError::forbidden(
                        "metadata.finalizers",
                        format!(
                            "no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                            added.iter().map(|f| format!("{f:?}")).collect::<Vec<_>>().join(", ")
                        ),
                    )],
                ));
            }
        }
        let errors = if subresource == "status" {
            crate::api::validation::validate_status_update(info, &next, current)
        } else {
            crate::api::validation::validate_update(info, &next, current)
        };
        if !errors.is_empty() {
            return Err(ApiError::invalid(info.group, info.kind, name, &errors));
        }
        if subresource.is_empty() {
            self.admit_rbac(info, ns, &next, Some(current), ctx)?;
        }
        if let Some(node) = node::identity(&ctx.user) {
            let w =
                Write { new: Some(&next), old: Some(current), ..Write::of(Op::Update, info, subresource, ns, name) };
            node_restriction::check(node, &w)?;
        }
        record_managed_fields(info, &mut next, Some(current), ctx);
        Ok(next)
    }

    async fn write_update(
        &self,
        info: &ResourceInfo,
        name: &str,
        kv: &KeyValue,
        current: &Value,
        mut next: Value,
        ctx: &WriteCtx,
    ) -> Result<Value, ApiError> {
        // A no-op write keeps the resourceVersion, as upstream does.
        if managed_fields::equal_ignoring_times(&next, current) {
            return Ok(current.clone());
        }
        let is_service = info.group.is_empty() && info.plural == "services";
        let alloc = if is_service {
            Some(
                self.alloc
                    .allocate(&mut next, Some(current))
                    .map_err(|e| ApiError::invalid(info.group, info.kind, name, &e))?,
            )
        } else {
            None
        };
        let release_new = |a: &Option<ipalloc::Allocation>| {
            if let Some(a) = a {
                self.alloc.release(a);
            }
        };
        let (bytes, mut next) = match for_store(info, next) {
            Ok(b) => b,
            Err(e) => {
                release_new(&alloc);
                return Err(e);
            }
        };
        if ctx.dry_run {
            release_new(&alloc);
            return Ok(next);
        }
        // The last finalizer removed from an object being deleted completes the delete.
        if meta::is_deleting(&next) && meta::finalizers(&next).is_empty() && !namespace_finalizers_pending(info, &next)
        {
            release_new(&alloc);
            return match self.store.delete(&kv.key, Some(kv.mod_revision)).await {
                Ok(d) => {
                    if is_service {
                        self.alloc.release(&ipalloc::held(current));
                    }
                    codec::set_resource_version(&mut next, d.mod_revision);
                    Ok(next)
                }
                Err(e) => Err(store_error(info, name, e)),
            };
        }
        match self.store.update(&kv.key, bytes, kv.mod_revision).await {
            Ok(new_kv) => {
                if is_service {
                    // Release what the old version held and the new one no longer does.
                    let old = ipalloc::held(current);
                    let now = ipalloc::held(&next);
                    let freed = ipalloc::Allocation {
                        ips: old.ips.into_iter().filter(|i| !now.ips.contains(i)).collect(),
                        node_ports: old.node_ports.into_iter().filter(|p| !now.node_ports.contains(p)).collect(),
                    };
                    self.alloc.release(&freed);
                }
                codec::set_resource_version(&mut next, new_kv.mod_revision);
                Ok(next)
            }
            Err(e) => {
                release_new(&alloc);
                Err(store_error(info, name, e))
            }
        }
    }

    /// PUT: replaces the object (or its status).
    pub async fn update(
        &self,
        info: &ResourceInfo,
        ns: &str,
        name: &str,
        subresource: &str,
        obj: Value,
        ctx: &mut WriteCtx,
    ) -> Result<Value, ApiError> {
        self.update_with(info, ns, name, subresource, ctx, |_, _| Ok(obj.clone())).await
    }

    /// DELETE of one object.
    pub async fn delete(
        &self,
        info: &ResourceInfo,
        ns: &str,
        name: &str,
        opts: &DeleteOpts,
        ctx: &WriteCtx,
    ) -> Result<Deleted, ApiError> {
        let out = self.delete_once(info, ns, name, opts, ctx).await;
        if let Ok(Deleted::Gone(v) | Deleted::Pending(v)) = &out {
            self.rbac_synced(info, v).await;
        }
        out
    }

    async fn delete_once(
        &self,
        info: &ResourceInfo,
        ns: &str,
        name: &str,
        opts: &DeleteOpts,
        ctx: &WriteCtx,
    ) -> Result<Deleted, ApiError> {
        if let Some(p) = &opts.propagation_policy
            && !matches!(p.as_str(), "Orphan" | "Background" | "Foreground")
        {
            return Err(ApiError::invalid(
                info.group,
                info.kind,
                name,
                &[FieldError::not_supported(
                    "propagationPolicy",
                    json!(p),
                    &["Foreground", "Background", "Orphan", "nil"],
                )],
            ));
        }
        if info.group.is_empty()
            && info.plural == "namespaces"
            && matches!(name, "default" | "kube-system" | "kube-public")
        {
            return Err(ApiError::forbidden("", "namespaces", name, "this namespace may not be deleted"));
        }
        if let Some(g) = opts.grace_period_seconds
            && g < 0
        {
            return Err(ApiError::invalid(
                info.group,
                info.kind,
                name,
                &[FieldError::invalid("gracePeriodSeconds", json!(g), "must be greater than or equal to 0")],
            ));
        }
        for _attempt in 0..16 {
            let (kv, current) = self.get_kv(info, ns, name).await?;
            if let Some(node) = node::identity(&ctx.user) {
                node_restriction::check(
                    node,
                    &Write { old: Some(&current), ..Write::of(Op::Delete, info, "", ns, name) },
                )?;
            }
            if let Some(uid) = &opts.precondition_uid
                && uid != meta::uid(&current)
            {
                return Err(ApiError::conflict(
                    info.group,
                    info.plural,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        meta::uid(&current)
                    ),
                ));
            }
            if let Some(rv) = &opts.precondition_rv
                && *rv != kv.mod_revision.to_string()
            {
                return Err(ApiError::conflict(
                    info.group,
                    info.plural,
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        kv.mod_revision
                    ),
                ));
            }
            let mut next = current.clone();
            let mut finalizers = meta::finalizers(&current);
            // Without dependents, foreground and orphan deletion have nothing to wait for.
            let wait_for_dependents = matches!(opts.propagation_policy.as_deref(), Some("Orphan" | "Foreground"))
                && self.has_dependents(meta::uid(&current)).await?;
            match opts.propagation_policy.as_deref().filter(|_| wait_for_dependents) {
                Some("Orphan") if !finalizers.iter().any(|f| f == "orphan") => finalizers.push("orphan".into()),
                Some("Foreground") if !finalizers.iter().any(|f| f == "foregroundDeletion") => {
                    finalizers.push("foregroundDeletion".into())
                }
                _ => {}
            }
            let grace = self.grace_period(info, &current, opts);
            let already_deleting = meta::is_deleting(&current);
            if finalizers.is_empty() && grace == 0 && !namespace_finalizers_pending(info, &current) {
                if ctx.dry_run {
                    return Ok(Deleted::Gone(current));
                }
                match self.store.delete(&kv.key, Some(kv.mod_revision)).await {
                    Ok(d) => {
                        if info.group.is_empty() && info.plural == "services" {
                            self.alloc.release(&ipalloc::held(&current));
                        }
                        let mut gone = current;
                        codec::set_resource_version(&mut gone, d.mod_revision);
                        return Ok(Deleted::Gone(gone));
                    }
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(store_error(info, name, e)),
                }
            }
            {
                let m = meta::meta_mut(&mut next);
                if !already_deleting {
                    let ts = chrono::Utc::now() + chrono::Duration::seconds(grace);
                    m.insert("deletionTimestamp".into(), json!(ts.format("%Y-%m-%dT%H:%M:%SZ").to_string()));
                    m.insert("deletionGracePeriodSeconds".into(), json!(grace));
                } else if let Some(old) = m.get("deletionGracePeriodSeconds").and_then(|g| g.as_i64())
                    && grace < old
                {
                    // A shorter grace period may replace a longer one.
                    let ts = chrono::Utc::now() + chrono::Duration::seconds(grace);
                    m.insert("deletionTimestamp".into(), json!(ts.format("%Y-%m-%dT%H:%M:%SZ").to_string()));
                    m.insert("deletionGracePeriodSeconds".into(), json!(grace));
                }
                if finalizers.is_empty() {
                    m.remove("finalizers");
                } else {
                    m.insert("finalizers".into(), json!(finalizers));
                }
            }
            if info.group.is_empty()
                && info.plural == "namespaces"
                && let Some(o) = next.as_object_mut()
            {
                let status = o.entry("status").or_insert_with(|| json!({}));
                if let Some(s) = status.as_object_mut() {
                    s.insert("phase".into(), json!("Terminating"));
                }
            }
            if next == current {
                return Ok(Deleted::Pending(current));
            }
            if ctx.dry_run {
                return Ok(Deleted::Pending(next));
            }
            let (bytes, mut next) = for_store(info, next)?;
            match self.store.update(&kv.key, bytes, kv.mod_revision).await {
                Ok(kv) => {
                    codec::set_resource_version(&mut next, kv.mod_revision);
                    return Ok(Deleted::Pending(next));
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(store_error(info, name, e)),
            }
        }
        Err(ApiError::stale(info.group, info.plural, name))
    }

    /// Whether any stored object names `uid` in its ownerReferences.
    async fn has_dependents(&self, uid: &str) -> Result<bool, ApiError> {
        if uid.is_empty() {
            return Ok(false);
        }
        let needle = format!("\"uid\":\"{uid}\"");
        let mut after: Option<String> = None;
        loop {
            let page = self.store.range("/", after.as_deref(), 1000, None).await.map_err(ApiError::internal)?;
            for kv in &page.kvs {
                // Cheap text check first; parse only candidates.
                if kv.value.windows(needle.len()).any(|w| w == needle.as_bytes())
                    && let Ok(v) = serde_json::from_slice::<Value>(&kv.value)
                    && v.pointer("/metadata/ownerReferences")
                        .and_then(|o| o.as_array())
                        .is_some_and(|refs| refs.iter().any(|r| r.get("uid").and_then(|u| u.as_str()) == Some(uid)))
                {
                    return Ok(true);
                }
            }
            if !page.more {
                return Ok(false);
            }
            after = page.kvs.last().map(|kv| kv.key.clone());
        }
    }

    /// Grace period for a delete: only pods bound to a node and still running get one.
    fn grace_period(&self, info: &ResourceInfo, obj: &Value, opts: &DeleteOpts) -> i64 {
        if !(info.group.is_empty() && info.plural == "pods") {
            return 0;
        }
        let bound = obj.pointer("/spec/nodeName").and_then(|v| v.as_str()).map(|s| !s.is_empty()).unwrap_or(false);
        let phase = obj.pointer("/status/phase").and_then(|v| v.as_str()).unwrap_or("");
        if !bound || phase == "Succeeded" || phase == "Failed" {
            return 0;
        }
        opts.grace_period_seconds
            .or_else(|| obj.pointer("/spec/terminationGracePeriodSeconds").and_then(|v| v.as_i64()))
            .unwrap_or(30)
            .max(0)
    }
}

fn record_managed_fields(info: &ResourceInfo, obj: &mut Value, old: Option<&Value>, ctx: &WriteCtx) {
    match &ctx.apply {
        Some(applied) => {
            managed_fields::record_apply(obj, old, applied, info.definition, &ctx.field_manager, &info.api_version())
        }
        None => {
            managed_fields::record_update(obj, old, info.definition, &ctx.field_manager, &info.api_version(), "Update")
        }
    }
}

fn truncate(s: &str) -> String {
    if s.len() > 200 {
        let mut cut = 200;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}...", &s[..cut])
    } else {
        s.to_string()
    }
}

/// A namespace stays (Terminating) while `spec.finalizers` lists something: the namespace
/// controller empties it and then clears the list through `finalize`.
fn namespace_finalizers_pending(info: &ResourceInfo, obj: &Value) -> bool {
    info.group.is_empty()
        && info.plural == "namespaces"
        && obj.pointer("/spec/finalizers").and_then(|f| f.as_array()).is_some_and(|a| !a.is_empty())
}

/// What `status` looks like right after create, as upstream strategies reset it.
fn prepare_status_for_create(info: &ResourceInfo, obj: &mut Value) {
    let Some(m) = obj.as_object_mut() else { return };
    match (info.group, info.plural) {
        ("", "pods") => {
            let qos = qos_class(m.get("spec"));
            m.insert("status".into(), json!({"phase": "Pending", "qosClass": qos}));
        }
        ("", "namespaces") => {
            m.insert("status".into(), json!({"phase": "Active"}));
        }
        // Go's zero status, as upstream's JSON shows it (fields without omitempty).
        ("", "services") | ("networking.k8s.io", "ingresses") => {
            m.insert("status".into(), json!({"loadBalancer": {}}));
        }
        ("policy", "poddisruptionbudgets") => {
            m.insert(
                "status".into(),
                json!({"disruptionsAllowed": 0, "currentHealthy": 0, "desiredHealthy": 0, "expectedPods": 0}),
            );
        }
        ("", "persistentvolumes") | ("", "persistentvolumeclaims") => {
            m.insert("status".into(), json!({"phase": "Pending"}));
        }
        // Nodes and certificate requests are created with the status their creator sets.
        ("", "nodes") | ("certificates.k8s.io", _) => {}
        _ if has_status(info) => {
            m.insert("status".into(), json!({}));
        }
        _ => {}
    }
}

/// Upstream's QoS class of a pod spec.
fn qos_class(spec: Option<&Value>) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .filter_map(|k| spec.and_then(|s| s.get(*k)).and_then(|c| c.as_array()))
        .flatten()
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &containers {
        let req = c.pointer("/resources/requests").and_then(|r| r.as_object());
        let lim = c.pointer("/resources/limits").and_then(|r| r.as_object());
        for res in ["cpu", "memory"] {
            let r = req.and_then(|m| m.get(res)).or_else(|| lim.and_then(|m| m.get(res)));
            let l = lim.and_then(|m| m.get(res));
            if r.is_some() || l.is_some() {
                any = true;
            }
            if l.is_none() || r != l {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed && !containers.is_empty() {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qos() {
        assert_eq!(qos_class(Some(&json!({"containers": [{"name": "a"}]}))), "BestEffort");
        assert_eq!(
            qos_class(Some(&json!({"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}))),
            "Guaranteed"
        );
        assert_eq!(qos_class(Some(&json!({"containers": [{"resources": {"requests": {"cpu": "1"}}}]}))), "Burstable");
    }

    #[test]
    fn field_validation_param() {
        assert_eq!(FieldValidation::parse(None).unwrap(), FieldValidation::Warn);
        assert_eq!(FieldValidation::parse(Some("Strict")).unwrap(), FieldValidation::Strict);
        assert_eq!(FieldValidation::parse(Some("strict")).unwrap_err().code, 400);
    }
}
