//! Validation of objects, as upstream's `validation` packages do it: object metadata for every
//! kind, then the rules of the common kinds, and which fields an update may not change.
//!
//! Validation reads values and returns [`FieldError`]s; it never changes an object and never
//! fails on odd shapes (a wrong JSON type is reported, not unwrapped).

mod kinds;
pub mod names;
mod scheduling;

use serde_json::{Value, json};

use crate::api::field_error::FieldError;
use crate::api::registry::ResourceInfo;

/// Which rule an object's name follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    Subdomain,
    Label,
    PathSegment,
}

/// The name rule of a resource, as upstream's strategies choose it.
pub fn name_kind(info: &ResourceInfo) -> NameKind {
    match (info.group, info.plural) {
        ("", "namespaces" | "services") => NameKind::Label,
        ("rbac.authorization.k8s.io", _) | ("certificates.k8s.io", _) => NameKind::PathSegment,
        _ => NameKind::Subdomain,
    }
}

/// Finalizers without a `/` that upstream accepts.
const STANDARD_FINALIZERS: &[&str] = &["kubernetes", "orphan", "foregroundDeletion"];

/// Total size limit of annotations.
const ANNOTATIONS_MAX: usize = 256 * 1024;

/// Checks `metadata` of any object.
pub fn validate_object_meta(meta: &Value, namespaced: bool, kind: NameKind) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = meta.get("name").and_then(|n| n.as_str()).unwrap_or("");
    let generate = meta.get("generateName").and_then(|n| n.as_str()).unwrap_or("");
    if name.is_empty() && generate.is_empty() {
        errs.push(FieldError::required("metadata.name", "name or generateName is required"));
    } else if !name.is_empty() {
        let problems = match kind {
            NameKind::Subdomain => names::dns1123_subdomain(name),
            NameKind::Label => names::dns1123_label(name),
            NameKind::PathSegment => names::path_segment(name),
        };
        for p in problems {
            errs.push(FieldError::invalid("metadata.name", json!(name), p));
        }
    }
    if namespaced {
        let ns = meta.get("namespace").and_then(|n| n.as_str()).unwrap_or("");
        for p in names::dns1123_label(ns) {
            errs.push(FieldError::invalid("metadata.namespace", json!(ns), p));
        }
    }
    match meta.get("labels") {
        None | Some(Value::Null) => {}
        Some(Value::Object(labels)) => {
            for (k, v) in labels {
                for p in names::qualified_name(k) {
                    errs.push(FieldError::invalid("metadata.labels", json!(k), p));
                }
                match v.as_str() {
                    Some(v) => {
                        for p in names::label_value(v) {
                            errs.push(FieldError::invalid("metadata.labels", json!(v), p));
                        }
                    }
                    None => {
                        errs.push(FieldError::invalid("metadata.labels", v.clone(), "label values must be strings"))
                    }
                }
            }
        }
        Some(other) => errs.push(FieldError::invalid("metadata.labels", other.clone(), "must be a map of strings")),
    }
    match meta.get("annotations") {
        None | Some(Value::Null) => {}
        Some(Value::Object(ann)) => {
            let mut total = 0;
            for (k, v) in ann {
                for p in names::qualified_name(&k.to_lowercase()) {
                    errs.push(FieldError::invalid("metadata.annotations", json!(k), p));
                }
                total += k.len() + v.as_str().map(|s| s.len()).unwrap_or(0);
            }
            if total > ANNOTATIONS_MAX {
                errs.push(FieldError::too_long("metadata.annotations", ANNOTATIONS_MAX));
            }
        }
        Some(other) => {
            errs.push(FieldError::invalid("metadata.annotations", other.clone(), "must be a map of strings"))
        }
    }
    if let Some(Value::Array(fins)) = meta.get("finalizers") {
        for (i, f) in fins.iter().enumerate() {
            let field = format!("metadata.finalizers[{i}]");
            let Some(f) = f.as_str() else {
                errs.push(FieldError::invalid(field, f.clone(), "must be a string"));
                continue;
            };
            let problems = names::qualified_name(f);
            if !problems.is_empty() {
                for p in problems {
                    errs.push(FieldError::invalid(field.clone(), json!(f), p));
                }
            } else if !f.contains('/') && !STANDARD_FINALIZERS.contains(&f) {
                errs.push(FieldError::invalid(
                    field,
                    json!(f),
                    "name is neither a standard finalizer name nor is it fully qualified",
                ));
            }
        }
    }
    if let Some(Value::Array(refs)) = meta.get("ownerReferences") {
        let mut controllers = 0;
        for (i, r) in refs.iter().enumerate() {
            for k in ["apiVersion", "kind", "name", "uid"] {
                if r.get(k).and_then(|v| v.as_str()).is_none_or(str::is_empty) {
                    errs.push(FieldError::invalid(
                        format!("metadata.ownerReferences[{i}].{k}"),
                        json!(""),
                        format!("{k} must not be empty"),
                    ));
                }
            }
            if r.get("controller").and_then(|c| c.as_bool()).unwrap_or(false) {
                controllers += 1;
            }
        }
        if controllers > 1 {
            errs.push(FieldError::invalid(
                "metadata.ownerReferences",
                json!(refs),
                "Only one reference can have Controller set to true",
            ));
        }
    }
    errs
}

/// Checks a new object.
pub fn validate_create(info: &ResourceInfo, obj: &Value) -> Vec<FieldError> {
    let mut errs = validate_object_meta(obj.get("metadata").unwrap_or(&Value::Null), info.namespaced, name_kind(info));
    errs.extend(kinds::validate(info, obj, None));
    errs
}

/// Checks an update against the stored object.
pub fn validate_update(info: &ResourceInfo, new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = validate_object_meta(new.get("metadata").unwrap_or(&Value::Null), info.namespaced, name_kind(info));
    errs.extend(kinds::validate(info, new, Some(old)));
    errs.extend(kinds::immutable(info, new, old));
    errs
}

/// Checks a status update.
pub fn validate_status_update(info: &ResourceInfo, new: &Value, _old: &Value) -> Vec<FieldError> {
    validate_object_meta(new.get("metadata").unwrap_or(&Value::Null), info.namespaced, name_kind(info))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::registry::lookup;

    #[test]
    fn metadata_rules() {
        let cm = lookup("", "v1", "configmaps").unwrap();
        let e = validate_create(cm, &json!({"metadata": {"name": "Bad_Name", "namespace": "default"}}));
        assert_eq!(e.len(), 1);
        assert!(
            e[0].to_string().starts_with("metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"),
            "{}",
            e[0]
        );
        let e =
            validate_create(cm, &json!({"metadata": {"name": "ok", "namespace": "default", "finalizers": ["bare"]}}));
        assert_eq!(
            e[0].to_string(),
            "metadata.finalizers[0]: Invalid value: \"bare\": name is neither a standard finalizer name nor is it fully qualified"
        );
        let role = lookup("rbac.authorization.k8s.io", "v1", "clusterroles").unwrap();
        assert!(validate_create(role, &json!({"metadata": {"name": "system:controller:x"}})).is_empty());
        assert!(!validate_create(cm, &json!({"metadata": {"namespace": "default"}})).is_empty());
        for r in crate::api::registry::RESOURCES {
            for v in [
                json!({}),
                json!(null),
                json!({"metadata": 1, "spec": "x"}),
                json!({"spec": {"containers": 5, "ports": [1], "selector": "x", "template": []}}),
            ] {
                let _ = validate_create(r, &v);
                let _ = validate_update(r, &v, &json!({}));
            }
        }
    }
}
