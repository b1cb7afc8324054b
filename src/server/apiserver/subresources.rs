//! Subresources with their own semantics: `scale`, `binding`, `eviction`, namespace
//! `finalize`, and server-side apply on the main resource.

use http::Response;
use serde_json::{Value, json};

use crate::api::field_error::FieldError;
use crate::api::meta;
use crate::api::patch;
use crate::api::selector::LabelSelector;
use crate::api::status::ApiError;

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
        Some(c) => {
            c["status"] = json!(status);
            c["lastTransitionTime"] = json!(now);
        }
        None => conds.push(json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": now})),
    }
}

/// POST `pods/<name>/eviction`: deletes the pod (disruption budgets are checked once the
/// disruption controller maintains their status).
pub async fn evict(c: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let eviction = super::codec::decode_body(&c.body, super::negotiate::body_format(c.content_type.as_deref())?)?;
    let mut opts = DeleteOpts::default();
    if let Some(d) = eviction.get("deleteOptions") {
        opts.grace_period_seconds = d.get("gracePeriodSeconds").and_then(|g| g.as_i64());
        opts.precondition_uid = d.pointer("/preconditions/uid").and_then(|g| g.as_str()).map(String::from);
        opts.precondition_rv = d.pointer("/preconditions/resourceVersion").and_then(|g| g.as_str()).map(String::from);
    }
    let ctx = c.write_ctx()?;
    match c.server.objects.delete(c.info, &c.req.namespace, &c.req.name, &opts, &ctx).await? {
        Deleted::Gone(_) | Deleted::Pending(_) => Ok(response::json(
            201,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        )),
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

/// POST `serviceaccounts/<name>/token`: a signed, time-bound token for the service account.
pub async fn token_request(c: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let req = if c.body.is_empty() {
        json!({})
    } else if c.content_type.as_deref().is_some_and(|t| t.starts_with(super::protobuf::MEDIA_TYPE)) {
        super::protobuf::decode(&c.body, "io.k8s.api.authentication.v1.TokenRequest")?
    } else {
        super::codec::decode_body(&c.body, super::negotiate::body_format(c.content_type.as_deref())?)?
    };
    let sa = c.server.objects.get(c.info, &c.req.namespace, &c.req.name).await?;
    let requested = req.pointer("/spec/expirationSeconds").and_then(|v| v.as_i64()).unwrap_or(3600);
    if requested < 600 {
        return Err(ApiError::invalid(
            "authentication.k8s.io",
            "TokenRequest",
            &c.req.name,
            &[FieldError::invalid(
                "spec.expirationSeconds",
                json!(requested),
                "may not specify a duration less than 10 minutes",
            )],
        ));
    }
    let ttl = requested.min(48 * 3600);
    let audiences = match req.pointer("/spec/audiences").and_then(|a| a.as_array()) {
        Some(a) if !a.is_empty() => Value::Array(a.clone()),
        _ => json!([c.server.sa_issuer]),
    };
    let now = chrono::Utc::now().timestamp();
    let claims = json!({
        "iss": c.server.sa_issuer,
        "sub": format!("system:serviceaccount:{}:{}", c.req.namespace, c.req.name),
        "aud": audiences,
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
        "jti": uuid::Uuid::new_v4().to_string(),
        "kubernetes.io": {
            "namespace": c.req.namespace,
            "serviceaccount": {"name": c.req.name, "uid": meta::uid(&sa)},
        },
    });
    let token = c.server.sa_signer.sign(&claims).map_err(ApiError::internal)?;
    let expires =
        chrono::DateTime::from_timestamp(now + ttl, 0).unwrap_or_default().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    Ok(response::json(
        201,
        &json!({
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": c.req.name, "namespace": c.req.namespace, "creationTimestamp": null},
            "spec": {"audiences": audiences, "expirationSeconds": ttl, "boundObjectRef": req.pointer("/spec/boundObjectRef").cloned()},
            "status": {"token": token, "expirationTimestamp": expires},
        }),
    ))
}
