//! Small helpers over `metadata` of objects held as JSON values.
//!
//! Every function tolerates odd shapes (a missing or non-object `metadata`) and never panics.

use serde_json::{Map, Value};

/// `metadata` as a map, if present.
pub fn meta(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata")?.as_object()
}

/// `metadata`, created when missing or not an object.
pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    let map = obj.as_object_mut().expect("ensured object above");
    let m = map.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    if !m.is_object() {
        *m = Value::Object(Map::new());
    }
    m.as_object_mut().expect("ensured object above")
}

/// A string field of `metadata` ("" when absent).
pub fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    meta(obj).and_then(|m| m.get(field)).and_then(|v| v.as_str()).unwrap_or("")
}

pub fn name(obj: &Value) -> &str {
    meta_str(obj, "name")
}
pub fn namespace(obj: &Value) -> &str {
    meta_str(obj, "namespace")
}
pub fn uid(obj: &Value) -> &str {
    meta_str(obj, "uid")
}
pub fn resource_version(obj: &Value) -> &str {
    meta_str(obj, "resourceVersion")
}

/// `metadata.labels`, if an object.
pub fn labels(obj: &Value) -> Option<&Map<String, Value>> {
    meta(obj)?.get("labels")?.as_object()
}

/// `metadata.finalizers` as strings.
pub fn finalizers(obj: &Value) -> Vec<String> {
    meta(obj)
        .and_then(|m| m.get("finalizers"))
        .and_then(|f| f.as_array())
        .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

/// Whether `metadata.deletionTimestamp` is set.
pub fn is_deleting(obj: &Value) -> bool {
    meta(obj).and_then(|m| m.get("deletionTimestamp")).map(|v| !v.is_null()).unwrap_or(false)
}

/// Sets a `metadata` field.
pub fn set_meta(obj: &mut Value, field: &str, value: Value) {
    meta_mut(obj).insert(field.to_string(), value);
}

/// Current time as upstream formats `metav1.Time` (RFC 3339, seconds, UTC).
pub fn now_rfc3339() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Current time as `metav1.MicroTime`.
pub fn now_micro() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Letters upstream uses for `generateName` suffixes (no vowels, no confusable digits).
const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// `prefix` plus five random characters, the prefix cut so the result fits 63 characters.
pub fn generate_name(prefix: &str) -> String {
    let max_prefix = 63 - 5;
    let cut = if prefix.len() > max_prefix { &prefix[..floor_char_boundary(prefix, max_prefix)] } else { prefix };
    let mut bytes = [0u8; 5];
    let rng = ring::rand::SystemRandom::new();
    if ring::rand::SecureRandom::fill(&rng, &mut bytes).is_err() {
        bytes = uuid::Uuid::new_v4().as_bytes()[..5].try_into().unwrap_or([0; 5]);
    }
    let suffix: String = bytes.iter().map(|b| ALPHANUMS[*b as usize % ALPHANUMS.len()] as char).collect();
    format!("{cut}{suffix}")
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// `"group/version"` or `"version"`.
pub fn api_version(group: &str, version: &str) -> String {
    if group.is_empty() { version.to_string() } else { format!("{group}/{version}") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn generate_name_shape() {
        let n = generate_name("web-");
        assert_eq!(n.len(), 9);
        assert!(n.starts_with("web-"));
        let long = "a".repeat(80);
        assert_eq!(generate_name(&long).len(), 63);
    }

    #[test]
    fn odd_shapes() {
        let mut v = json!("x");
        assert_eq!(name(&v), "");
        set_meta(&mut v, "name", json!("n"));
        assert_eq!(name(&v), "n");
        assert!(!is_deleting(&v));
        assert!(finalizers(&json!({"metadata": {"finalizers": "x"}})).is_empty());
    }
}
