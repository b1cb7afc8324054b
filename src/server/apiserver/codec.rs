//! Bytes in, bytes out: request bodies to JSON values, objects to their stored form, and the
//! stored form back to what clients see (with `metadata.resourceVersion`).
//!
//! Stored objects never contain `resourceVersion`: the store's revision is the truth, and it is
//! spliced into the JSON text on the way out so a `get` or a large `list` needs no parse.
//! Objects are always stored with `apiVersion`, `kind` and `metadata` as their first keys, which
//! makes the splice point the first `"metadata":{`.

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{Map, Value};

use crate::api::registry::ResourceInfo;
use crate::api::status::ApiError;

/// Largest request body accepted (upstream's limit is 3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// Media type of a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    Json,
    Yaml,
}

/// Decodes a JSON or YAML body into a value; a parse failure is a 400.
pub fn decode_body(bytes: &[u8], format: BodyFormat) -> Result<Value, ApiError> {
    if bytes.len() > MAX_BODY {
        return Err(ApiError::too_large(MAX_BODY));
    }
    match format {
        BodyFormat::Json => serde_json::from_slice(bytes)
            .map_err(|e| ApiError::bad_request(format!("error decoding JSON request body: {e}"))),
        BodyFormat::Yaml => {
            let text = std::str::from_utf8(bytes)
                .map_err(|_| ApiError::bad_request("error decoding YAML request body: not UTF-8"))?;
            // JSON is YAML; parse JSON first so numbers keep their exact form.
            if let Ok(v) = serde_json::from_str::<Value>(text) {
                return Ok(v);
            }
            serde_yaml::from_str::<Value>(text)
                .map_err(|e| ApiError::bad_request(format!("error decoding YAML request body: {e}")))
        }
    }
}

/// Serializes an object for the store: `apiVersion`, `kind`, `metadata` first, no
/// `resourceVersion`. Written key by key, since a JSON map orders its keys by name and the
/// splice below needs `metadata` ahead of every other object-valued key.
pub fn encode_for_store(obj: &Value) -> Result<Bytes, ApiError> {
    let map = obj.as_object().ok_or_else(|| ApiError::internal("object is not a JSON object"))?;
    let empty = Map::new();
    let meta = map.get("metadata").and_then(Value::as_object).unwrap_or(&empty);
    let mut out = Vec::with_capacity(512);
    out.push(b'{');
    let mut first = true;
    for key in ["apiVersion", "kind"] {
        if let Some(v) = map.get(key) {
            write_member(&mut out, &mut first, key, v)?;
        }
    }
    write_key(&mut out, &mut first, "metadata")?;
    out.push(b'{');
    let mut first_meta = true;
    for (k, v) in meta.iter().filter(|(k, _)| k.as_str() != "resourceVersion") {
        write_member(&mut out, &mut first_meta, k, v)?;
    }
    out.push(b'}');
    for (k, v) in map.iter().filter(|(k, _)| !matches!(k.as_str(), "apiVersion" | "kind" | "metadata")) {
        write_member(&mut out, &mut first, k, v)?;
    }
    out.push(b'}');
    Ok(Bytes::from(out))
}

fn write_key(out: &mut Vec<u8>, first: &mut bool, key: &str) -> Result<(), ApiError> {
    if !std::mem::take(first) {
        out.push(b',');
    }
    serde_json::to_writer(&mut *out, key).map_err(ApiError::internal)?;
    out.push(b':');
    Ok(())
}

fn write_member(out: &mut Vec<u8>, first: &mut bool, key: &str, value: &Value) -> Result<(), ApiError> {
    write_key(out, first, key)?;
    serde_json::to_writer(&mut *out, value).map_err(ApiError::internal)
}

const META_KEY: &[u8] = b"\"metadata\":{";

/// Returns the stored JSON with `metadata.resourceVersion` set to `rev`.
pub fn with_resource_version(stored: &[u8], rev: u64) -> Bytes {
    let mut out = BytesMut::with_capacity(stored.len() + 32);
    splice_into(&mut out, stored, rev);
    out.freeze()
}

/// Appends the stored JSON with `resourceVersion` spliced in to `out`.
pub fn splice_into(out: &mut BytesMut, stored: &[u8], rev: u64) {
    match find(stored, META_KEY) {
        Some(pos) => {
            let at = pos + META_KEY.len();
            out.put_slice(&stored[..at]);
            out.put_slice(b"\"resourceVersion\":\"");
            out.put_slice(rev.to_string().as_bytes());
            out.put_u8(b'"');
            if stored.get(at) != Some(&b'}') {
                out.put_u8(b',');
            }
            out.put_slice(&stored[at..]);
        }
        None => out.put_slice(stored),
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Decodes a stored object and sets its resourceVersion.
pub fn decode_stored(stored: &[u8], rev: u64) -> Result<Value, ApiError> {
    let mut v: Value =
        serde_json::from_slice(stored).map_err(|e| ApiError::internal(format!("stored object is not JSON: {e}")))?;
    set_resource_version(&mut v, rev);
    Ok(v)
}

/// Decodes only the metadata of a stored object (as `{"metadata": ...}`, with its
/// resourceVersion set), skipping the rest without building it.
pub fn decode_stored_metadata(stored: &[u8], rev: u64) -> Result<Value, ApiError> {
    #[derive(serde::Deserialize)]
    struct MetadataOnly {
        #[serde(default)]
        metadata: Map<String, Value>,
    }
    let m: MetadataOnly =
        serde_json::from_slice(stored).map_err(|e| ApiError::internal(format!("stored object is not JSON: {e}")))?;
    let mut v = Value::Object(Map::from_iter([("metadata".to_string(), Value::Object(m.metadata))]));
    set_resource_version(&mut v, rev);
    Ok(v)
}

/// Decodes a stored object as `info`'s version (converting from the storage version).
pub fn decode_stored_as(info: &ResourceInfo, stored: &[u8], rev: u64) -> Result<Value, ApiError> {
    let v = decode_stored(stored, rev)?;
    Ok(crate::api::convert::from_storage(info, v))
}

/// Sets `metadata.resourceVersion`.
pub fn set_resource_version(obj: &mut Value, rev: u64) {
    if let Some(m) = obj.as_object_mut() {
        let meta = m.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
        if let Some(meta) = meta.as_object_mut() {
            meta.insert("resourceVersion".into(), Value::String(rev.to_string()));
        }
    }
}

/// Parses a resourceVersion string as sent by clients.
pub fn parse_resource_version(s: &str) -> Result<u64, ApiError> {
    s.parse::<u64>().map_err(|_| ApiError::bad_request(format!("invalid resource version: {s:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn metadata_alone_is_decoded() {
        let stored =
            br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","labels":{"a":"b"}},"spec":{"x":[1,2]}}"#;
        let v = decode_stored_metadata(stored, 12).unwrap();
        assert_eq!(v, json!({"metadata": {"name": "p", "labels": {"a": "b"}, "resourceVersion": "12"}}));
        assert_eq!(decode_stored_metadata(b"{}", 3).unwrap(), json!({"metadata": {"resourceVersion": "3"}}));
        assert!(decode_stored_metadata(b"[", 3).is_err());
    }

    #[test]
    fn splice_round_trip() {
        let obj = json!({"data": {"a": "b"}, "metadata": {"name": "x", "resourceVersion": "9"}, "kind": "ConfigMap", "apiVersion": "v1"});
        let stored = encode_for_store(&obj).unwrap();
        assert_eq!(
            std::str::from_utf8(&stored).unwrap(),
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"},"data":{"a":"b"}}"#
        );
        let out = with_resource_version(&stored, 42);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["metadata"]["resourceVersion"], "42");
        assert_eq!(v["metadata"]["name"], "x");
        // A key that sorts before `metadata` and holds a `metadata` of its own stays behind
        // the object's metadata, so the resourceVersion lands in the right place.
        let custom =
            json!({"config": {"metadata": {"a": 1}}, "kind": "W", "apiVersion": "x/v1", "metadata": {"name": "w"}});
        let stored = encode_for_store(&custom).unwrap();
        assert_eq!(
            std::str::from_utf8(&stored).unwrap(),
            r#"{"apiVersion":"x/v1","kind":"W","metadata":{"name":"w"},"config":{"metadata":{"a":1}}}"#
        );
        let v: Value = serde_json::from_slice(&with_resource_version(&stored, 5)).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "x/v1", "kind": "W", "metadata": {"name": "w", "resourceVersion": "5"}, "config": {"metadata": {"a": 1}}})
        );
        let empty = encode_for_store(&json!({"apiVersion": "v1", "kind": "X"})).unwrap();
        let v: Value = serde_json::from_slice(&with_resource_version(&empty, 7)).unwrap();
        assert_eq!(v["metadata"], json!({"resourceVersion": "7"}));
    }

    #[test]
    fn bodies() {
        assert_eq!(decode_body(b"a: 1\nb: [x]\n", BodyFormat::Yaml).unwrap(), json!({"a": 1, "b": ["x"]}));
        let e = decode_body(b"{not json", BodyFormat::Json).unwrap_err();
        assert_eq!(e.code, 400);
        let e = decode_body(b"a: [\n", BodyFormat::Yaml).unwrap_err();
        assert_eq!(e.code, 400);
        assert!(parse_resource_version("12a").is_err());
    }
}
