//! Defaulting: the values upstream fills in when a field is left out.

use serde_json::Value;

use crate::api::registry::ResourceInfo;

/// Applies upstream defaults for the kind in place.
pub fn apply_defaults(_info: &ResourceInfo, _obj: &mut Value) {}
