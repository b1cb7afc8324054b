//! Subresources with their own semantics: `scale`, `binding`, `eviction`, namespace
//! `finalize`, and server-side apply on the main resource.

use http::Response;
use serde_json::{Value, json};

use crate::api::field_error::FieldError;
use crate::api::meta;
use crate::api::patch;
use crate::api::selector::LabelSelector;
use crate::api::status::{ApiError, StatusCause};

use super::handlers::Call;
use super::objects::{DeleteOpts, Deleted, WriteCtx};
use super::response::{self, Body};

/// Where the replica count lives for each scalable kind.
fn selector_string(obj: &Value, kind: &str) -> String {
    let sel = obj.pointer("/spec/selector");
    match (kind, sel) {
        ("ReplicationController", Some(Value::Object(m))) => {
            let mut parts: Vec<String> =
                m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect();
            parts.sort();
            parts.join(",")
        }
        (_, Some(s)) => LabelSelector::from_json(s).map(|l| l.to_string()).unwrap_or_default(),
        _ => String::new(),
    }
}

/// The `autoscaling/v1 Scale` view of a scalable object.
pub fn scale_of(obj: &Value, kind: &str) -> Value {
    let m = meta::meta(obj).cloned().unwrap_or_default();
    let mut metadata = json!({});
    for k in ["name", "namespace", "uid", "resourceVersion", "creationTimestamp"] {
        if let Some(v) = m.get(k) {
            metadata[k] = v.clone();
        }
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": metadata,
        "spec": {"replicas": obj.pointer("/spec/replicas").and_then(|r| r.as_i64()).unwrap_or(0)},
        "status": {
            "replicas": obj.pointer("/status/replicas").and_then(|r| r.as_i64()).unwrap_or(0),
            "selector": selector_string(obj, kind),
        },
    })
}

/// GET, PUT and PATCH of `<resource>/scale`.
pub async fn scale(c: &Call<'_>, method: &http::Method) -> Result<Response<Body>, ApiError> {
    let info = c.info;
    let ns = c.req.namespace.clone();
    if *method == http::Method::GET {
        let obj = c.server.objects.get(info, &ns, &c.req.name).await?;
        return Ok(response::json(200, &scale_of(&obj, info.kind)));
    }
    let body = c.body.clone();
    let ct = c.content_type.clone().unwrap_or_default();
    let is_patch = *method == http::Method::PATCH;
    let mut ctx = c.write_ctx()?;
    let updated = c
        .server
        .objects
        .update_with(info, &ns, &c.req.name, "", &mut ctx, |current, _| {
            let current_scale = scale_of(current, info.kind);
            let desired = if is_patch {
                let kind =
                    patch::PatchKind::from_content_type(&ct).ok_or_else(|| ApiError::unsupported_media_type(&ct))?;
                match kind {
                    patch::PatchKind::Json => patch::json_patch(&current_scale, &body).map_err(ApiError::from)?,
                    _ => {
                        let p: Value = serde_json::from_slice(&body)
                            .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
                        patch::merge_patch(&current_scale, &p)
                    }
                }
            } else {
                super::codec::decode_body(&body, super::negotiate::body_format(Some(&ct))?)?
            };
            let replicas = match desired.pointer("/spec/replicas") {
                None | Some(Value::Null) => 0,
                Some(v) => v.as_i64().ok_or_else(|| ApiError::bad_request("spec.replicas must be an integer"))?,
            };
            if replicas < 0 {
                return Err(ApiError::invalid(
                    "autoscaling",
                    "Scale",
                    meta::name(current),
                    &[FieldError::invalid("spec.replicas", json!(replicas), "must be greater than or equal to 0")],
                ));
            }
            let mut next = current.clone();
            let rv = meta::resource_version(&desired).to_string();
            if rv.is_empty() {
                meta::meta_mut(&mut next).remove("resourceVersion");
            } else {
                meta::set_meta(&mut next, "resourceVersion", json!(rv));
            }
            if let Some(spec) = next.get_mut("spec").and_then(|s| s.as_object_mut()) {
                spec.insert("replicas".into(), json!(replicas));
            }
            Ok(next)
        })
        .await?;
    Ok(response::json(200, &scale_of(&updated, info.kind)))
}

/// POST `pods/<name>/binding` or `bindings`: assigns a pod to a node.
pub async fn bind(c: &Call<'_>, pod_name: &str) -> Result<Response<Body>, ApiError> {
    let binding = super::codec::decode_body(&c.body, super::negotiate::body_format(c.content_type.as_deref())?)?;
    let name = if pod_name.is_empty() { meta::name(&binding).to_string() } else { pod_name.to_string() };
    let node = binding.pointer("/target/name").and_then(|n| n.as_str()).unwrap_or("").to_string();
    let target_kind = binding.pointer("/target/kind").and_then(|n| n.as_str()).unwrap_or("");
    if node.is_empty() || (!target_kind.is_empty() && target_kind != "Node") {
        return Err(ApiError::invalid("", "Binding", &name, &[FieldError::not_found("target.name", json!(node))]));
    }
    let pods = crate::api::registry::lookup("", "v1", "pods").ok_or_else(|| ApiError::internal("no pods"))?;
    let mut ctx = c.write_ctx()?;
    let annotations = binding.pointer("/metadata/annotations").and_then(|a| a.as_object()).cloned();
    let ns = c.req.namespace.clone();
    c.server
        .objects
        .update_with(pods, &ns, &name, "binding", &mut ctx, |current, _| {
            if meta::is_deleting(current) {
                return Err(ApiError::conflict(
                    "",
                    "pods",
                    &name,
                    "pod is being deleted, cannot be assigned to a host",
                ));
            }
            let existing = current.pointer("/spec/nodeName").and_then(|n| n.as_str()).unwrap_or("");
            if !existing.is_empty() {
                return Err(ApiError::conflict(
                    "",
                    "pods",
                    &name,
                    &format!("pod {name} is already assigned to node \"{existing}\""),
                ));
            }
            let mut next = current.clone();
            meta::meta_mut(&mut next).remove("resourceVersion");
            if let Some(spec) = next.get_mut("spec").and_then(|s| s.as_object_mut()) {
                spec.insert("nodeName".into(), json!(node));
            }
            if let Some(a) = &annotations {
                let m = meta::meta_mut(&mut next);
                let ann = m.entry("annotations").or_insert_with(|| json!({}));
                if let Some(ann) = ann.as_object_mut() {
                    for (k, v) in a {
                        ann.insert(k.clone(), v.clone());
                    }
                }
            }
            set_condition(&mut next, "PodScheduled", "True");
            Ok(next)
        })
        .await?;
    Ok(response::json(
        201,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

fn set_condition(pod: &mut Value, kind: &str, status: &str) {
    let Some(obj) = pod.as_object_mut() else { return };
    let st = obj.entry("status").or_insert_with(|| json!({}));
    let Some(st) = st.as_object_mut() else { return };
    let conds = st.entry("conditions").or_insert_with(|| json!([]));
    let Some(conds) = conds.as_array_mut() else { return };
    let now = meta::now_rfc3339();
    match conds.iter_mut().find(|c| c.get("type").and_then(|t| t.as_str()) == Some(kind)) {
        // The condition is replaced whole, as upstream's UpdatePodCondition does: a scheduling
        // failure's reason and message do not outlive the binding.
        Some(c) => {
            let changed = c.get("status").and_then(|s| s.as_str()) != Some(status);
            let transition =
                if changed { json!(now) } else { c.get("lastTransitionTime").cloned().unwrap_or(json!(now)) };
            *c = json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": transition});
        }
        None => conds.push(json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": now})),
    }
}

/// POST `pods/<name>/eviction`: deletes the pod unless that would violate its
/// PodDisruptionBudget, as upstream's eviction REST handler does.
///
/// Pods that are Pending, Succeeded, Failed or already being deleted go without a budget
/// check. Otherwise the budgets of the pod's namespace whose selector matches its labels are
/// consulted: more than one is a 500; with one, a ready pod (or an unready one the budget
/// does not let go for free) needs `status.disruptionsAllowed` > 0 and a budget whose status
/// has observed its generation, else 429. An allowed eviction takes one disruption from the
/// budget and records the pod in `status.disruptedPods`, by a compare-and-swap status write
/// retried on conflicts; then the pod gets the `DisruptionTarget` condition and is deleted
/// with the eviction's `deleteOptions`. Dry runs check everything and write nothing.
pub async fn evict(c: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let eviction = super::codec::decode_body(&c.body, super::negotiate::body_format(c.content_type.as_deref())?)?;
    let name = c.req.name.clone();
    let ns = c.req.namespace.clone();
    if meta::name(&eviction) != name {
        return Err(ApiError::bad_request("name in URL does not match name in Eviction object"));
    }
    let body_ns = meta::namespace(&eviction);
    if !body_ns.is_empty() && body_ns != ns {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    let delete_options = eviction.get("deleteOptions").filter(|d| !d.is_null());
    if delete_options.and_then(|d| d.get("ignoreStoreReadErrorWithClusterBreakingPotential")).and_then(|v| v.as_bool())
        == Some(true)
    {
        return Err(ApiError::invalid(
            "policy",
            "Eviction",
            &name,
            &[FieldError::invalid(
                "deleteOptions.ignoreStoreReadErrorWithClusterBreakingPotential",
                json!(true),
                "can not be set for pod eviction, try after removing the option",
            )],
        ));
    }
    let mut opts = DeleteOpts::default();
    if let Some(d) = delete_options {
        opts.grace_period_seconds = d.get("gracePeriodSeconds").and_then(|g| g.as_i64());
        opts.propagation_policy = d.get("propagationPolicy").and_then(|g| g.as_str()).map(String::from);
        if opts.propagation_policy.is_none()
            && let Some(orphan) = d.get("orphanDependents").and_then(|b| b.as_bool())
        {
            opts.propagation_policy = Some(if orphan { "Orphan" } else { "Background" }.into());
        }
        opts.precondition_uid = d.pointer("/preconditions/uid").and_then(|g| g.as_str()).map(String::from);
        opts.precondition_rv = d.pointer("/preconditions/resourceVersion").and_then(|g| g.as_str()).map(String::from);
    }
    let mut ctx = c.write_ctx()?;
    ctx.dry_run = eviction_dry_run(ctx.dry_run, delete_options)?;
    let rv_unset = opts.precondition_rv.is_none();
    let success = || {
        response::json(
            201,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        )
    };

    if let Some(node) = crate::server::auth::node::identity(c.user) {
        use super::node_restriction::{Op, Write, check};
        let pod = c.server.objects.get(c.info, &ns, &name).await?;
        check(node, &Write { old: Some(&pod), ..Write::of(Op::Create, c.info, "eviction", &ns, &name) })?;
    }
    // Pods whose eviction disrupts nothing are deleted straight away; conflicts re-read the
    // pod, unless the caller pinned a resourceVersion.
    let mut attempt = 0;
    let pod = loop {
        let pod = c.server.objects.get(c.info, &ns, &name).await?;
        if !can_ignore_pdb(&pod) {
            break pod;
        }
        let mut o = opts.clone();
        if should_enforce_resource_version(&pod) && rv_unset {
            o.precondition_rv = Some(meta::resource_version(&pod).to_string());
        }
        match evict_pod(c, &ns, &name, o, &mut ctx).await {
            Ok(()) => return Ok(success()),
            Err(e) if is_conflict(&e) && rv_unset && attempt + 1 < EVICTION_RETRY_STEPS => {
                attempt += 1;
                eviction_backoff().await;
            }
            Err(e) => return Err(e),
        }
    };

    let pdbs = matching_pdbs(c, &pod).await?;
    if pdbs.len() > 1 {
        return Err(ApiError::new(
            500,
            "",
            "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
        ));
    }
    let mut pdb_name = String::new();
    let mut pin_pod_version = false;
    if let Some(pdb) = pdbs.into_iter().next() {
        pdb_name = meta::name(&pdb).to_string();
        // An unready pod does not count as healthy: it goes without taking a disruption when
        // the budget lets unhealthy pods go, or when the application is healthy without it.
        let mut decrement = true;
        if !is_pod_ready(&pod) {
            let status_i64 = |f: &str| pdb.pointer(&format!("/status/{f}")).and_then(|v| v.as_i64()).unwrap_or(0);
            let always_allow =
                pdb.pointer("/spec/unhealthyPodEvictionPolicy").and_then(|p| p.as_str()) == Some("AlwaysAllow");
            let (current, desired) = (status_i64("currentHealthy"), status_i64("desiredHealthy"));
            if always_allow || (current >= desired && desired > 0) {
                pin_pod_version = true;
                decrement = false;
            }
        }
        if decrement {
            check_and_decrement(c, &ns, &name, pdb, &ctx).await?;
        }
    }

    // Pinning the pod's version makes sure it did not become ready since it was judged.
    let mut o = opts;
    if pin_pod_version {
        o.precondition_rv = Some(meta::resource_version(&pod).to_string());
    }
    match evict_pod(c, &ns, &name, o, &mut ctx).await {
        Ok(()) => Ok(success()),
        Err(e) if is_conflict(&e) && pin_pod_version && rv_unset => Err(still_processing(&pdb_name)),
        Err(e) => Err(e),
    }
}

/// Attempts of upstream's `EvictionsRetry` backoff (500ms apart, 10% jitter).
const EVICTION_RETRY_STEPS: usize = 20;

/// Upstream refuses evictions while more than this many approved ones wait for the
/// disruption controller to notice them.
const MAX_DISRUPTED_POD_SIZE: usize = 2000;

async fn eviction_backoff() {
    let jitter = u64::from(chrono::Utc::now().timestamp_subsec_nanos()) % 51;
    tokio::time::sleep(std::time::Duration::from_millis(500 + jitter)).await;
}

fn is_conflict(e: &ApiError) -> bool {
    e.code == 409 && e.reason == "Conflict"
}

/// The eviction's dry-run: the request's and the body's `deleteOptions.dryRun` must agree
/// when both are given.
fn eviction_dry_run(query: bool, delete_options: Option<&Value>) -> Result<bool, ApiError> {
    let body: Vec<String> = delete_options
        .and_then(|d| d.get("dryRun"))
        .and_then(|d| d.as_array())
        .map(|a| a.iter().map(|v| v.as_str().unwrap_or_default().to_string()).collect())
        .unwrap_or_default();
    if body.is_empty() || !query {
        return Ok(query || !body.is_empty());
    }
    if body != ["All"] {
        return Err(ApiError::new(
            500,
            "",
            format!("Non-matching dry-run options in request and content: [All] and [{}]", body.join(" ")),
        ));
    }
    Ok(true)
}

fn pod_phase(pod: &Value) -> &str {
    pod.pointer("/status/phase").and_then(|p| p.as_str()).unwrap_or("")
}

/// Pods that can be deleted without consulting a disruption budget.
fn can_ignore_pdb(pod: &Value) -> bool {
    matches!(pod_phase(pod), "Succeeded" | "Failed" | "Pending") || meta::is_deleting(pod)
}

/// Whether the delete must not race a pod becoming ready (terminal and deleting pods cannot).
fn should_enforce_resource_version(pod: &Value) -> bool {
    !matches!(pod_phase(pod), "Succeeded" | "Failed") && !meta::is_deleting(pod)
}

/// Upstream's `IsPodReady`: the `Ready` condition is `True`.
fn is_pod_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions").and_then(|c| c.as_array()).is_some_and(|conds| {
        conds.iter().any(|c| {
            c.get("type").and_then(|t| t.as_str()) == Some("Ready")
                && c.get("status").and_then(|s| s.as_str()) == Some("True")
        })
    })
}

/// The PodDisruptionBudgets of the pod's namespace whose selector matches its labels. A
/// missing selector or one that does not parse matches nothing; an empty one matches all.
async fn matching_pdbs(c: &Call<'_>, pod: &Value) -> Result<Vec<Value>, ApiError> {
    let info = crate::api::registry::lookup("policy", "v1", "poddisruptionbudgets")
        .ok_or_else(|| ApiError::internal("no poddisruptionbudgets"))?;
    let ns = meta::namespace(pod);
    let page = super::listing::list(
        &c.server.objects.store,
        info,
        &info.prefix(Some(ns)),
        &super::listing::ListOptions::default(),
    )
    .await?;
    let mut out = Vec::new();
    for item in &page.items {
        let pdb = item.decode(info)?;
        if meta::namespace(&pdb) != ns {
            continue;
        }
        let Some(sel) = pdb.pointer("/spec/selector").filter(|s| !s.is_null()) else { continue };
        if LabelSelector::from_json(sel).is_ok_and(|s| s.matches(meta::labels(pod))) {
            out.push(pdb);
        }
    }
    Ok(out)
}

/// The 429 of an eviction the budget refuses, with its `DisruptionBudget` cause.
fn budget_refusal(retry_after_seconds: u32, cause: String) -> ApiError {
    let mut e = ApiError::too_many_requests(
        "Cannot evict pod as it would violate the pod's disruption budget.",
        retry_after_seconds,
    );
    if let Some(d) = e.details.as_mut() {
        d.causes.push(StatusCause { reason: "DisruptionBudget".into(), message: cause, field: String::new() });
    }
    e
}

/// The budget has not caught up with its spec (or the pod changed under the eviction).
fn still_processing(pdb_name: &str) -> ApiError {
    budget_refusal(10, format!("The disruption budget {pdb_name} is still being processed by the server."))
}

/// Takes one disruption from the budget and records the pod in `status.disruptedPods`, with
/// a compare-and-swap status write; a conflict re-reads the budget and judges again.
async fn check_and_decrement(
    c: &Call<'_>,
    ns: &str,
    pod_name: &str,
    mut pdb: Value,
    ctx: &WriteCtx,
) -> Result<(), ApiError> {
    let info = crate::api::registry::lookup("policy", "v1", "poddisruptionbudgets")
        .ok_or_else(|| ApiError::internal("no poddisruptionbudgets"))?;
    let pdb_name = meta::name(&pdb).to_string();
    let mut status_ctx = ctx.clone();
    // The budget is written the way upstream's loopback client writes it.
    status_ctx.field_manager = "kube-apiserver".into();
    status_ctx.apply = None;
    let mut attempt = 0;
    loop {
        let next = decremented(&pdb, pod_name)?;
        if ctx.dry_run {
            return Ok(());
        }
        let written =
            c.server.objects.update_with(info, ns, &pdb_name, "status", &mut status_ctx, |_, _| Ok(next.clone())).await;
        match written {
            Ok(_) => return Ok(()),
            Err(e) if is_conflict(&e) && attempt + 1 < EVICTION_RETRY_STEPS => {
                attempt += 1;
                eviction_backoff().await;
                pdb = c.server.objects.get(info, ns, &pdb_name).await?;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The budget after one more disruption (resourceVersion kept, so the write is a
/// compare-and-swap), or why there may not be one.
fn decremented(pdb: &Value, pod_name: &str) -> Result<Value, ApiError> {
    let name = meta::name(pdb);
    let status_i64 = |f: &str| pdb.pointer(&format!("/status/{f}")).and_then(|v| v.as_i64()).unwrap_or(0);
    let generation = meta::meta(pdb).and_then(|m| m.get("generation")).and_then(|g| g.as_i64()).unwrap_or(0);
    let observed = status_i64("observedGeneration");
    if observed < generation {
        return Err(still_processing(name));
    }
    let allowed = status_i64("disruptionsAllowed");
    if allowed < 0 {
        return Err(ApiError::forbidden("policy", "poddisruptionbudget", name, "pdb disruptions allowed is negative"));
    }
    let disrupted = pdb.pointer("/status/disruptedPods").and_then(|d| d.as_object()).map(|d| d.len()).unwrap_or(0);
    if disrupted > MAX_DISRUPTED_POD_SIZE {
        return Err(ApiError::forbidden(
            "policy",
            "poddisruptionbudget",
            name,
            "DisruptedPods map too big - too many evictions not confirmed by PDB controller",
        ));
    }
    if allowed == 0 {
        return Err(budget_refusal(
            0,
            format!(
                "The disruption budget {name} needs {} healthy pods and has {} currently",
                status_i64("desiredHealthy"),
                status_i64("currentHealthy")
            ),
        ));
    }
    let mut next = pdb.clone();
    let Some(obj) = next.as_object_mut() else { return Err(ApiError::internal("budget is not an object")) };
    let status = obj.entry("status").or_insert_with(|| json!({}));
    let Some(status) = status.as_object_mut() else { return Err(ApiError::internal("budget status is not an object")) };
    status.insert("disruptionsAllowed".into(), json!(allowed - 1));
    if allowed - 1 == 0 {
        set_disruption_allowed_condition(status, observed);
    }
    let pods = status.entry("disruptedPods").or_insert_with(|| json!({}));
    if !pods.is_object() {
        *pods = json!({});
    }
    if let Some(p) = pods.as_object_mut() {
        p.insert(pod_name.to_string(), json!(meta::now_rfc3339()));
    }
    Ok(next)
}

/// Upstream's `UpdateDisruptionAllowedCondition` for a budget with no disruption left:
/// `DisruptionAllowed` False for `InsufficientPods`, set as `meta.SetStatusCondition` does.
fn set_disruption_allowed_condition(status: &mut serde_json::Map<String, Value>, observed_generation: i64) {
    let conds = status.entry("conditions").or_insert_with(|| json!([]));
    if !conds.is_array() {
        *conds = json!([]);
    }
    let Some(conds) = conds.as_array_mut() else { return };
    let now = meta::now_rfc3339();
    match conds.iter_mut().find(|c| c.get("type").and_then(|t| t.as_str()) == Some("DisruptionAllowed")) {
        Some(c) => {
            if c.get("status").and_then(|s| s.as_str()) != Some("False") {
                c["status"] = json!("False");
                c["lastTransitionTime"] = json!(now);
            }
            c["reason"] = json!("InsufficientPods");
            c["message"] = json!("");
            if observed_generation == 0 {
                if let Some(m) = c.as_object_mut() {
                    m.remove("observedGeneration");
                }
            } else {
                c["observedGeneration"] = json!(observed_generation);
            }
        }
        None => {
            let mut cond = json!({"type": "DisruptionAllowed", "status": "False"});
            if observed_generation != 0 {
                cond["observedGeneration"] = json!(observed_generation);
            }
            cond["lastTransitionTime"] = json!(now);
            cond["reason"] = json!("InsufficientPods");
            cond["message"] = json!("");
            conds.push(cond);
        }
    }
}

/// Upstream's `addConditionAndDeletePod`: outside dry runs the pod first gets the
/// `DisruptionTarget` condition (checked against the delete's preconditions, whose
/// resourceVersion then follows that write), then it is deleted.
async fn evict_pod(
    c: &Call<'_>,
    ns: &str,
    name: &str,
    mut opts: DeleteOpts,
    ctx: &mut WriteCtx,
) -> Result<(), ApiError> {
    if !ctx.dry_run {
        let (uid, rv) = (opts.precondition_uid.clone(), opts.precondition_rv.clone());
        // The status write is internal: no field manager records it.
        let mut status_ctx = ctx.clone();
        status_ctx.field_manager = String::new();
        status_ctx.apply = None;
        let updated = c
            .server
            .objects
            .update_with(c.info, ns, name, "status", &mut status_ctx, |latest, _| {
                if let Some(uid) = uid.as_deref().filter(|u| !u.is_empty())
                    && uid != meta::uid(latest)
                {
                    return Err(ApiError::conflict(
                        "",
                        "Pod",
                        name,
                        &format!(
                            "the UID in the precondition ({uid}) does not match the UID in record ({}). The object might have been deleted and then recreated",
                            meta::uid(latest)
                        ),
                    ));
                }
                if let Some(rv) = rv.as_deref().filter(|r| !r.is_empty())
                    && rv != meta::resource_version(latest)
                {
                    return Err(ApiError::conflict(
                        "",
                        "Pod",
                        name,
                        &format!(
                            "the ResourceVersion in the precondition ({rv}) does not match the ResourceVersion in record ({}). The object might have been modified",
                            meta::resource_version(latest)
                        ),
                    ));
                }
                let mut next = latest.clone();
                meta::meta_mut(&mut next).remove("resourceVersion");
                set_disruption_target(&mut next);
                Ok(next)
            })
            .await?;
        if opts.precondition_rv.is_some() {
            opts.precondition_rv = Some(meta::resource_version(&updated).to_string());
        }
    }
    match c.server.objects.delete(c.info, ns, name, &opts, ctx).await? {
        Deleted::Gone(_) | Deleted::Pending(_) => Ok(()),
    }
}

/// Upstream's `UpdatePodCondition` with the eviction's `DisruptionTarget` condition.
fn set_disruption_target(pod: &mut Value) {
    let Some(obj) = pod.as_object_mut() else { return };
    let st = obj.entry("status").or_insert_with(|| json!({}));
    let Some(st) = st.as_object_mut() else { return };
    let conds = st.entry("conditions").or_insert_with(|| json!([]));
    if !conds.is_array() {
        *conds = json!([]);
    }
    let Some(conds) = conds.as_array_mut() else { return };
    let now = meta::now_rfc3339();
    let mut cond = json!({
        "type": "DisruptionTarget",
        "status": "True",
        "lastProbeTime": null,
        "lastTransitionTime": now,
        "reason": "EvictionByEvictionAPI",
        "message": "Eviction API: evicting",
    });
    match conds.iter_mut().find(|c| c.get("type").and_then(|t| t.as_str()) == Some("DisruptionTarget")) {
        Some(existing) => {
            if existing.get("status") == cond.get("status")
                && let Some(t) = existing.get("lastTransitionTime")
            {
                cond["lastTransitionTime"] = t.clone();
            }
            *existing = cond;
        }
        None => conds.push(cond),
    }
}

/// PUT `namespaces/<name>/finalize`: replaces `spec.finalizers`; an emptied, terminating
/// namespace is then removed.
pub async fn finalize(c: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let desired = super::codec::decode_body(&c.body, super::negotiate::body_format(c.content_type.as_deref())?)?;
    let finalizers = desired.pointer("/spec/finalizers").cloned().unwrap_or(json!([]));
    let mut ctx = c.write_ctx()?;
    let rv = meta::resource_version(&desired).to_string();
    let updated = c
        .server
        .objects
        .update_with(c.info, "", &c.req.name, "finalize", &mut ctx, |current, _| {
            let mut next = current.clone();
            if rv.is_empty() {
                meta::meta_mut(&mut next).remove("resourceVersion");
            } else {
                meta::set_meta(&mut next, "resourceVersion", json!(rv));
            }
            if let Some(o) = next.as_object_mut() {
                let spec = o.entry("spec").or_insert_with(|| json!({}));
                if let Some(s) = spec.as_object_mut() {
                    s.insert("finalizers".into(), finalizers.clone());
                }
            }
            Ok(next)
        })
        .await?;
    let spec_empty =
        updated.pointer("/spec/finalizers").and_then(|f| f.as_array()).map(|a| a.is_empty()).unwrap_or(true);
    if meta::is_deleting(&updated) && spec_empty && meta::finalizers(&updated).is_empty() && !ctx.dry_run {
        let _ = c.server.objects.delete(c.info, "", &c.req.name, &DeleteOpts::default(), &ctx).await;
    }
    c.object_response(200, &updated)
}

/// PATCH with `application/apply-patch+yaml`: server-side apply.
pub async fn apply(c: &Call<'_>, ctx: &mut WriteCtx) -> Result<Response<Body>, ApiError> {
    if c.query.get("fieldManager").is_none() {
        return Err(ApiError::bad_request("PATCH, application/apply-patch+yaml requests must specify a fieldManager"));
    }
    let applied = super::codec::decode_body(&c.body, super::codec::BodyFormat::Yaml)?;
    if !applied.is_object() {
        return Err(ApiError::bad_request("the applied configuration is not an object"));
    }
    let mut checked = applied;
    c.server.objects.check_body(c.info, &mut checked, ctx)?;
    let name = meta::name(&checked).to_string();
    if !name.is_empty() && name != c.req.name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({name}) does not match the name on the URL ({})",
            c.req.name
        )));
    }
    let info = c.info;
    let ns = c.req.namespace.clone();
    ctx.apply = Some(checked.clone());
    let force = c.query.flag("force");
    match c.server.objects.get(info, &ns, &c.req.name).await {
        Err(e) if e.code == 404 && c.req.subresource.is_empty() => {
            let mut obj = checked;
            meta::set_meta(&mut obj, "name", json!(c.req.name));
            let created = c.server.objects.create(info, &ns, obj, ctx).await?;
            let mut r = c.object_response(201, &created)?;
            response::add_warnings(&mut r, &ctx.warnings);
            Ok(r)
        }
        Err(e) => Err(e),
        Ok(_) => {
            let manager = ctx.field_manager.clone();
            let api_version = info.api_version();
            let updated = c
                .server
                .objects
                .update_with(info, &ns, &c.req.name, c.req.subresource.as_str(), ctx, |current, _| {
                    super::apply::merge_applied(info, current, &checked, &manager, &api_version, force)
                })
                .await?;
            let mut r = c.object_response(200, &updated)?;
            response::add_warnings(&mut r, &ctx.warnings);
            Ok(r)
        }
    }
}
