//! Kubernetes `Status` errors: the one error type every API handler returns.
//!
//! Messages, reasons and codes follow upstream's `k8s.io/apimachinery/pkg/api/errors`
//! so clients (kubectl, client-go, kube-rs) recognise them. This module knows nothing
//! about HTTP beyond the status code.

use serde_json::{Value, json};

use super::field_error::FieldError;

/// One entry of `details.causes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusCause {
    /// Machine-readable cause, e.g. `FieldValueInvalid`.
    pub reason: String,
    /// Human-readable description.
    pub message: String,
    /// Field path, e.g. `spec.containers[0].name`.
    pub field: String,
}

/// `details` of a `Status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusDetails {
    pub name: String,
    pub group: String,
    /// Upstream puts the resource (plural) here for most errors and the Kind for `Invalid`.
    pub kind: String,
    pub causes: Vec<StatusCause>,
    pub retry_after_seconds: Option<u32>,
}

/// An API error rendered as a `meta/v1 Status` with `status: Failure`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Box<StatusDetails>>,
}

fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() { resource.to_string() } else { format!("{resource}.{group}") }
}

impl ApiError {
    /// A plain error with no details.
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError { code, reason, message: message.into(), details: None }
    }

    fn with_details(mut self, group: &str, kind: &str, name: &str) -> Self {
        self.details = Some(Box::new(StatusDetails {
            name: name.to_string(),
            group: group.to_string(),
            kind: kind.to_string(),
            ..Default::default()
        }));
        self
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 401 Unauthorized.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 403 Forbidden for an authorization decision.
    pub fn forbidden(group: &str, resource: &str, name: &str, message: impl Into<String>) -> Self {
        let q = qualified(group, resource);
        let msg = if name.is_empty() {
            format!("{q} is forbidden: {}", message.into())
        } else {
            format!("{q} \"{name}\" is forbidden: {}", message.into())
        };
        Self::new(403, "Forbidden", msg).with_details(group, resource, name)
    }

    /// 404 NotFound for a named object.
    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{} \"{name}\" not found", qualified(group, resource)))
            .with_details(group, resource, name)
    }

    /// 404 for a path that names no resource.
    pub fn path_not_found() -> Self {
        Self::new(404, "NotFound", "the server could not find the requested resource")
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_supported(group: &str, resource: &str, verb: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!("{verb} is not supported on resources of kind \"{}\"", qualified(group, resource)),
        )
        .with_details(group, resource, "")
    }

    /// 406 NotAcceptable.
    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self::new(406, "NotAcceptable", message)
    }

    /// 409 AlreadyExists.
    pub fn already_exists(group: &str, resource: &str, name: &str) -> Self {
        Self::new(409, "AlreadyExists", format!("{} \"{name}\" already exists", qualified(group, resource)))
            .with_details(group, resource, name)
    }

    /// 409 Conflict for a stale resourceVersion or failed precondition.
    pub fn conflict(group: &str, resource: &str, name: &str, detail: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {} \"{name}\": {detail}", qualified(group, resource)),
        )
        .with_details(group, resource, name)
    }

    /// 409 Conflict with the standard "object has been modified" wording.
    pub fn stale(group: &str, resource: &str, name: &str) -> Self {
        Self::conflict(
            group,
            resource,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 410 Expired: a resourceVersion older than the kept history.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// 413 RequestEntityTooLarge.
    pub fn too_large(limit: usize) -> Self {
        Self::new(413, "RequestEntityTooLarge", format!("Request entity too large: limit is {limit}"))
    }

    /// 415 UnsupportedMediaType.
    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/apply-patch+yaml, application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {content_type:?})"
            ),
        )
    }

    /// 422 Invalid with one cause per field error.
    ///
    /// `kind` is the object's Kind (e.g. `Deployment`), as upstream does for this reason.
    pub fn invalid(group: &str, kind: &str, name: &str, errors: &[FieldError]) -> Self {
        let subject = if group.is_empty() { kind.to_string() } else { format!("{kind}.{group}") };
        let rendered: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        let summary = match rendered.len() {
            0 => "unknown error".to_string(),
            1 => rendered[0].clone(),
            _ => format!("[{}]", rendered.join(", ")),
        };
        let mut err = Self::new(422, "Invalid", format!("{subject} \"{name}\" is invalid: {summary}"))
            .with_details(group, kind, name);
        if let Some(d) = err.details.as_mut() {
            d.causes = errors
                .iter()
                .map(|e| StatusCause { reason: e.reason().to_string(), message: e.message(), field: e.field.clone() })
                .collect();
        }
        err
    }

    /// 429 TooManyRequests; a zero `retry_after_seconds` suggests no delay (and sends no
    /// `Retry-After`), as upstream omits it.
    pub fn too_many_requests(message: impl Into<String>, retry_after_seconds: u32) -> Self {
        let mut e = Self::new(429, "TooManyRequests", message);
        e.details = Some(Box::new(StatusDetails {
            retry_after_seconds: Some(retry_after_seconds).filter(|s| *s > 0),
            ..Default::default()
        }));
        e
    }

    /// 500 InternalError.
    pub fn internal(message: impl std::fmt::Display) -> Self {
        Self::new(500, "InternalError", format!("Internal error occurred: {message}"))
    }

    /// 503 ServiceUnavailable.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", message)
    }

    /// 504 Timeout.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(504, "Timeout", message)
    }

    /// The `Status` object sent to clients.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        // An error without a reason (upstream's StatusReasonUnknown) leaves the field out.
        if self.reason.is_empty()
            && let Some(o) = status.as_object_mut()
        {
            o.remove("reason");
        }
        if let Some(d) = &self.details {
            let mut details = serde_json::Map::new();
            if !d.name.is_empty() {
                details.insert("name".into(), json!(d.name));
            }
            if !d.group.is_empty() {
                details.insert("group".into(), json!(d.group));
            }
            if !d.kind.is_empty() {
                details.insert("kind".into(), json!(d.kind));
            }
            if !d.causes.is_empty() {
                details.insert(
                    "causes".into(),
                    Value::Array(
                        d.causes
                            .iter()
                            .map(|c| {
                                // Empty members are left out, as Go's omitempty does.
                                let mut cause = serde_json::Map::new();
                                for (k, v) in [("reason", &c.reason), ("message", &c.message), ("field", &c.field)] {
                                    if !v.is_empty() {
                                        cause.insert(k.into(), json!(v));
                                    }
                                }
                                Value::Object(cause)
                            })
                            .collect(),
                    ),
                );
            }
            if let Some(s) = d.retry_after_seconds {
                details.insert("retryAfterSeconds".into(), json!(s));
            }
            status["details"] = Value::Object(details);
        }
        status
    }
}

/// The `Status` with `status: Success` that some deletes answer with.
pub fn success_status(group: &str, resource: &str, name: &str, uid: &str) -> Value {
    let mut details = json!({"name": name, "kind": resource, "uid": uid});
    if !group.is_empty() {
        details["group"] = json!(group);
    }
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::field_error::FieldError;

    #[test]
    fn not_found_message_names_group() {
        let e = ApiError::not_found("apps", "deployments", "web");
        assert_eq!(e.message, "deployments.apps \"web\" not found");
        assert_eq!(e.to_status()["details"]["group"], "apps");
        assert_eq!(ApiError::not_found("", "pods", "p").message, "pods \"p\" not found");
    }

    #[test]
    fn invalid_lists_causes() {
        let errs = vec![
            FieldError::required("spec.containers[0].name", ""),
            FieldError::invalid("metadata.name", serde_json::json!("A_b"), "bad name"),
        ];
        let e = ApiError::invalid("", "Pod", "x", &errs);
        assert_eq!(e.code, 422);
        assert_eq!(
            e.message,
            "Pod \"x\" is invalid: [spec.containers[0].name: Required value, metadata.name: Invalid value: \"A_b\": bad name]"
        );
        let s = e.to_status();
        assert_eq!(s["details"]["causes"][1]["field"], "metadata.name");
        assert_eq!(s["details"]["causes"][0]["reason"], "FieldValueRequired");
    }
}
