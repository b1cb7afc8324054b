//! Validation of objects, as upstream's `validation` packages do it.

use serde_json::Value;

use crate::api::field_error::FieldError;
use crate::api::registry::ResourceInfo;

/// Checks a new object.
pub fn validate_create(_info: &ResourceInfo, _obj: &Value) -> Vec<FieldError> {
    Vec::new()
}

/// Checks an update against the stored object.
pub fn validate_update(_info: &ResourceInfo, _new: &Value, _old: &Value) -> Vec<FieldError> {
    Vec::new()
}

/// Checks a status update.
pub fn validate_status_update(_info: &ResourceInfo, _new: &Value, _old: &Value) -> Vec<FieldError> {
    Vec::new()
}
