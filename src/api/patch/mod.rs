//! Patch application: JSON patch (RFC 6902), JSON merge patch (RFC 7386) and strategic
//! merge patch, the form `kubectl apply`, `edit` and `patch` send for built-in kinds.
//!
//! Patches apply to JSON values; which lists merge by key is described in [`strategy`].

mod strategic;
pub mod strategy;

use serde_json::Value;

use crate::api::status::ApiError;

pub use strategic::strategic_merge_patch;

/// The kind of a PATCH body, from its content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    Json,
    Merge,
    StrategicMerge,
    Apply,
}

impl PatchKind {
    /// Maps a `Content-Type` to a patch kind.
    pub fn from_content_type(ct: &str) -> Option<PatchKind> {
        match ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase().as_str() {
            "application/json-patch+json" => Some(PatchKind::Json),
            "application/merge-patch+json" => Some(PatchKind::Merge),
            "application/strategic-merge-patch+json" => Some(PatchKind::StrategicMerge),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Some(PatchKind::Apply),
            _ => None,
        }
    }
}

/// Why a patch could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The patch document itself is malformed (400).
    #[error("{0}")]
    Malformed(String),
    /// The patch is well-formed but cannot apply to this object (422).
    #[error("{0}")]
    Inapplicable(String),
}

impl From<PatchError> for ApiError {
    fn from(e: PatchError) -> Self {
        match e {
            PatchError::Malformed(m) => ApiError::bad_request(m),
            PatchError::Inapplicable(m) => ApiError::new(422, "Invalid", m),
        }
    }
}

/// Applies an RFC 6902 JSON patch.
pub fn json_patch(doc: &Value, patch: &[u8]) -> Result<Value, PatchError> {
    let p: json_patch::Patch =
        serde_json::from_slice(patch).map_err(|e| PatchError::Malformed(format!("error decoding patch: {e}")))?;
    let mut out = doc.clone();
    json_patch::patch(&mut out, &p).map_err(|e| {
        PatchError::Inapplicable(format!("the server rejected our request due to an error in our request: {e}"))
    })?;
    Ok(out)
}

/// Applies an RFC 7386 merge patch.
pub fn merge_patch(doc: &Value, patch: &Value) -> Value {
    let mut out = doc.clone();
    json_patch::merge(&mut out, patch);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_patch_ops_and_errors() {
        let doc = json!({"a": {"b": 1}, "l": [1, 2]});
        let p = br#"[{"op":"replace","path":"/a/b","value":2},{"op":"add","path":"/l/-","value":3},{"op":"remove","path":"/l/0"}]"#;
        assert_eq!(json_patch(&doc, p).unwrap(), json!({"a": {"b": 2}, "l": [2, 3]}));
        assert!(matches!(json_patch(&doc, b"{"), Err(PatchError::Malformed(_))));
        assert!(matches!(
            json_patch(&doc, br#"[{"op":"test","path":"/a/b","value":9}]"#),
            Err(PatchError::Inapplicable(_))
        ));
        assert!(matches!(json_patch(&doc, br#"[{"op":"remove","path":"/zz"}]"#), Err(PatchError::Inapplicable(_))));
    }

    #[test]
    fn merge_patch_rfc7386() {
        assert_eq!(
            merge_patch(&json!({"a": "b", "c": {"d": "e", "f": "g"}}), &json!({"a": "z", "c": {"f": null}})),
            json!({"a": "z", "c": {"d": "e"}})
        );
        assert_eq!(merge_patch(&json!({"a": [1]}), &json!({"a": [2]})), json!({"a": [2]}));
    }

    #[test]
    fn content_types() {
        assert_eq!(
            PatchKind::from_content_type("application/strategic-merge-patch+json; charset=utf-8"),
            Some(PatchKind::StrategicMerge)
        );
        assert_eq!(PatchKind::from_content_type("text/plain"), None);
    }
}
