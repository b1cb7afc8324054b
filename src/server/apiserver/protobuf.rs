//! Decoding the Kubernetes protobuf encoding of request bodies.
//!
//! client-go's typed clients (kubectl's `create`, `auth can-i`, `auth whoami`, ...) send
//! bodies as `application/vnd.kubernetes.protobuf`: the magic `k8s\0`, then a
//! `runtime.Unknown` whose `raw` field holds the typed message. The message is decoded with the
//! field tables in `protobuf_table` into exactly the JSON the kind has on the JSON API, so
//! everything after decoding is shared. Responses are always JSON, which such clients accept.

use base64::Engine;
use serde_json::{Map, Value, json};

use crate::api::status::ApiError;

use super::protobuf_table::MESSAGES;

/// Media type of protobuf bodies.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

const MAGIC: &[u8] = b"k8s\0";

/// Wire and JSON shape of a field.
#[derive(Debug, Clone, Copy)]
pub enum T {
    Str,
    I32,
    I64,
    Bool,
    F64,
    Bytes,
    /// A message: index into `MESSAGES`.
    Msg(u16),
    MapStr,
    MapBytes,
    MapMsg(u16),
    Skip,
}

/// One field of a message.
#[derive(Debug, Clone, Copy)]
pub struct F {
    pub tag: u32,
    /// The JSON name; "" for an embedded Go struct whose fields are inlined in the parent.
    pub json: &'static str,
    pub ty: T,
    pub repeated: bool,
    /// Whether a zero value ("", 0, false) is kept. Go writes every non-pointer field, so a
    /// zero on the wire usually means "unset" and is dropped, as Go's JSON encoding and
    /// defaulting would treat it; required fields and pointer fields keep theirs.
    pub keep_zero: bool,
}

/// A message type.
#[derive(Debug)]
pub struct Msg {
    pub name: &'static str,
    pub fields: &'static [F],
}

fn malformed() -> ApiError {
    ApiError::bad_request("the protobuf body is malformed")
}

enum Payload<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32,
}

struct Wire<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Wire<'a> {
    fn varint(&mut self) -> Result<u64, ApiError> {
        let mut out = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or_else(malformed)?;
            self.pos += 1;
            out |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(out);
            }
        }
        Err(malformed())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ApiError> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len()).ok_or_else(malformed)?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn next(&mut self) -> Result<Option<(u32, Payload<'a>)>, ApiError> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let payload = match key & 7 {
            0 => Payload::Varint(self.varint()?),
            1 => Payload::Fixed64(u64::from_le_bytes(self.take(8)?.try_into().map_err(|_| malformed())?)),
            2 => {
                let len = self.varint()? as usize;
                Payload::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Payload::Fixed32
            }
            _ => return Err(malformed()),
        };
        Ok(Some(((key >> 3) as u32, payload)))
    }
}

fn fields_of(buf: &[u8]) -> Result<Vec<(u32, Payload<'_>)>, ApiError> {
    let mut w = Wire { buf, pos: 0 };
    let mut out = Vec::new();
    while let Some(f) = w.next()? {
        out.push(f);
    }
    Ok(out)
}

fn text(b: &[u8]) -> Result<Value, ApiError> {
    std::str::from_utf8(b).map(|s| Value::String(s.to_string())).map_err(|_| malformed())
}

fn b64(b: &[u8]) -> Value {
    Value::String(base64::engine::general_purpose::STANDARD.encode(b))
}

/// Go's `time.Duration.String()` for whole nanoseconds.
fn go_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let neg = ns < 0;
    let mut n = ns.unsigned_abs();
    let mut out = String::new();
    if n < 1_000_000_000 {
        let (v, unit) = if n < 1_000 {
            (n as f64, "ns")
        } else if n < 1_000_000 {
            (n as f64 / 1e3, "µs")
        } else {
            (n as f64 / 1e6, "ms")
        };
        out = format!("{}{unit}", trim_float(v));
    } else {
        let h = n / 3_600_000_000_000;
        n %= 3_600_000_000_000;
        let m = n / 60_000_000_000;
        n %= 60_000_000_000;
        let s = n as f64 / 1e9;
        if h > 0 {
            out.push_str(&format!("{h}h"));
        }
        if h > 0 || m > 0 {
            out.push_str(&format!("{m}m"));
        }
        out.push_str(&format!("{}s", trim_float(s)));
    }
    if neg { format!("-{out}") } else { out }
}

fn trim_float(v: f64) -> String {
    let s = format!("{v:.9}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn timestamp(buf: &[u8], micro: bool) -> Result<Value, ApiError> {
    if buf.is_empty() {
        // Go writes a zero time as an empty message; its JSON form is null.
        return Ok(Value::Null);
    }
    let (mut secs, mut nanos) = (0i64, 0i64);
    for (n, p) in fields_of(buf)? {
        if let Payload::Varint(v) = p {
            match n {
                1 => secs = v as i64,
                2 => nanos = v as i64,
                _ => {}
            }
        }
    }
    let t = chrono::DateTime::from_timestamp(secs, nanos.clamp(0, 999_999_999) as u32).ok_or_else(malformed)?;
    Ok(Value::String(if micro {
        t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
    } else {
        t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    }))
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        _ => false,
    }
}

/// Decodes one message into its JSON form.
fn decode_message(buf: &[u8], idx: u16, depth: u32) -> Result<Value, ApiError> {
    if depth > 64 {
        return Err(ApiError::bad_request("the protobuf body is nested too deeply"));
    }
    let msg = MESSAGES.get(idx as usize).ok_or_else(malformed)?;
    match msg.name {
        "io.k8s.apimachinery.pkg.api.resource.Quantity" => {
            for (n, p) in fields_of(buf)? {
                if let (1, Payload::Bytes(b)) = (n, p) {
                    return text(b);
                }
            }
            return Ok(Value::String("0".into()));
        }
        "io.k8s.apimachinery.pkg.util.intstr.IntOrString" => {
            let (mut kind, mut int_val, mut str_val) = (0u64, 0i64, Value::String(String::new()));
            for (n, p) in fields_of(buf)? {
                match (n, p) {
                    (1, Payload::Varint(v)) => kind = v,
                    (2, Payload::Varint(v)) => int_val = v as i64 as i32 as i64,
                    (3, Payload::Bytes(b)) => str_val = text(b)?,
                    _ => {}
                }
            }
            return Ok(if kind == 1 { str_val } else { json!(int_val) });
        }
        "io.k8s.apimachinery.pkg.apis.meta.v1.Time" => return timestamp(buf, false),
        "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime" => return timestamp(buf, true),
        "io.k8s.apimachinery.pkg.apis.meta.v1.Duration" => {
            for (n, p) in fields_of(buf)? {
                if let (1, Payload::Varint(v)) = (n, p) {
                    return Ok(Value::String(go_duration(v as i64)));
                }
            }
            return Ok(Value::String("0s".into()));
        }
        "io.k8s.apimachinery.pkg.runtime.RawExtension" | "io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1" => {
            for (n, p) in fields_of(buf)? {
                if let (1, Payload::Bytes(b)) = (n, p) {
                    return serde_json::from_slice(b).map_err(|_| ApiError::bad_request("embedded object is not JSON"));
                }
            }
            return Ok(json!({}));
        }
        _ => {}
    }
    let mut out = Map::new();
    for (n, p) in fields_of(buf)? {
        let Some(f) = msg.fields.iter().find(|f| f.tag == n) else { continue };
        let values: Vec<Value> = match (f.ty, p) {
            (T::Str, Payload::Bytes(b)) => vec![text(b)?],
            (T::Bytes, Payload::Bytes(b)) => vec![b64(b)],
            (T::Bool, Payload::Varint(v)) => vec![Value::Bool(v != 0)],
            (T::I32, Payload::Varint(v)) => vec![json!(v as i64 as i32)],
            (T::I64, Payload::Varint(v)) => vec![json!(v as i64)],
            (T::F64, Payload::Fixed64(v)) => vec![json!(f64::from_bits(v))],
            // Packed repeated numbers.
            (T::I32 | T::I64 | T::Bool, Payload::Bytes(b)) => {
                let mut w = Wire { buf: b, pos: 0 };
                let mut vs = Vec::new();
                while w.pos < b.len() {
                    let v = w.varint()?;
                    vs.push(match f.ty {
                        T::I32 => json!(v as i64 as i32),
                        T::Bool => Value::Bool(v != 0),
                        _ => json!(v as i64),
                    });
                }
                vs
            }
            (T::Msg(i), Payload::Bytes(b)) => vec![decode_message(b, i, depth + 1)?],
            (T::MapStr | T::MapBytes | T::MapMsg(_), Payload::Bytes(b)) => {
                let (mut key, mut val) = (String::new(), Value::Null);
                for (en, ep) in fields_of(b)? {
                    match (en, ep, f.ty) {
                        (1, Payload::Bytes(k), _) => key = std::str::from_utf8(k).map_err(|_| malformed())?.to_string(),
                        (2, Payload::Bytes(v), T::MapStr) => val = text(v)?,
                        (2, Payload::Bytes(v), T::MapBytes) => val = b64(v),
                        (2, Payload::Bytes(v), T::MapMsg(i)) => val = decode_message(v, i, depth + 1)?,
                        _ => {}
                    }
                }
                if val.is_null() {
                    val = match f.ty {
                        T::MapMsg(_) => json!({}),
                        _ => Value::String(String::new()),
                    };
                }
                let map = out.entry(f.json.to_string()).or_insert_with(|| json!({}));
                if let Some(m) = map.as_object_mut() {
                    m.insert(key, val);
                }
                continue;
            }
            (T::Skip, _) => continue,
            _ => return Err(malformed()),
        };
        if f.repeated {
            let entry = out.entry(f.json.to_string()).or_insert_with(|| json!([]));
            if let Some(a) = entry.as_array_mut() {
                a.extend(values);
            }
        } else if let Some(v) = values.into_iter().last() {
            if f.json.is_empty() {
                // An embedded Go struct (`json:",inline"`): its fields are the parent's.
                if let Value::Object(m) = v {
                    out.extend(m);
                }
                continue;
            }
            if v.is_null() || (!f.keep_zero && is_zero(&v)) {
                continue;
            }
            out.insert(f.json.to_string(), v);
        }
    }
    Ok(Value::Object(out))
}

fn message_index(name: &str) -> Option<u16> {
    MESSAGES.binary_search_by(|m| m.name.cmp(name)).ok().map(|i| i as u16)
}

/// Decodes a protobuf request body for the resource whose OpenAPI definition is `definition`.
pub fn decode(body: &[u8], definition: &str) -> Result<Value, ApiError> {
    let rest =
        body.strip_prefix(MAGIC).ok_or_else(|| ApiError::bad_request("the protobuf body lacks the k8s envelope"))?;
    let (mut api_version, mut kind, mut raw): (String, String, &[u8]) = (String::new(), String::new(), &[]);
    for (n, p) in fields_of(rest)? {
        match (n, p) {
            (1, Payload::Bytes(tm)) => {
                for (tn, tp) in fields_of(tm)? {
                    match (tn, tp) {
                        (1, Payload::Bytes(b)) => api_version = std::str::from_utf8(b).map_err(|_| malformed())?.into(),
                        (2, Payload::Bytes(b)) => kind = std::str::from_utf8(b).map_err(|_| malformed())?.into(),
                        _ => {}
                    }
                }
            }
            (2, Payload::Bytes(b)) => raw = b,
            _ => {}
        }
    }
    // The body's kind must be the resource's kind (or a review/options kind it embeds).
    let group_prefix = definition.rsplit_once('.').map(|(p, _)| p).unwrap_or("");
    let idx = message_index(&format!("{group_prefix}.{kind}"))
        .or_else(|| message_index(definition))
        .ok_or_else(|| ApiError::unsupported_media_type(MEDIA_TYPE))?;
    let mut obj = decode_message(raw, idx, 0)?;
    if let Some(m) = obj.as_object_mut() {
        m.insert("apiVersion".into(), json!(api_version));
        m.insert("kind".into(), json!(kind));
    }
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut x: u64) -> Vec<u8> {
        let mut v = Vec::new();
        while x >= 0x80 {
            v.push((x as u8) | 0x80);
            x >>= 7;
        }
        v.push(x as u8);
        v
    }

    fn field(n: u32, payload: &[u8]) -> Vec<u8> {
        [varint(((n << 3) | 2) as u64), varint(payload.len() as u64), payload.to_vec()].concat()
    }

    fn number(n: u32, x: u64) -> Vec<u8> {
        [varint((n << 3) as u64), varint(x)].concat()
    }

    fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let tm = [field(1, api_version.as_bytes()), field(2, kind.as_bytes())].concat();
        [MAGIC.to_vec(), field(1, &tm), field(2, raw)].concat()
    }

    #[test]
    fn decodes_a_self_subject_access_review() {
        let attrs = [field(2, b"create"), field(3, b"apps"), field(5, b"deployments")].concat();
        let raw = field(2, &field(1, &attrs));
        let v = decode(
            &envelope("authorization.k8s.io/v1", "SelfSubjectAccessReview", &raw),
            "io.k8s.api.authorization.v1.SelfSubjectAccessReview",
        )
        .unwrap();
        assert_eq!(v["kind"], "SelfSubjectAccessReview");
        assert_eq!(
            v["spec"]["resourceAttributes"],
            json!({"verb": "create", "group": "apps", "resource": "deployments"})
        );
    }

    #[test]
    fn decodes_a_config_map_with_maps_and_bytes() {
        let meta = [field(1, b"cfg"), field(3, b"ns")].concat();
        let entry = [field(1, b"a"), field(2, b"1")].concat();
        let bin = [field(1, b"b"), field(2, &[0xff, 0x00])].concat();
        let raw = [field(1, &meta), field(2, &entry), field(3, &bin)].concat();
        let v = decode(&envelope("v1", "ConfigMap", &raw), "io.k8s.api.core.v1.ConfigMap").unwrap();
        assert_eq!(
            v,
            json!({"metadata": {"name": "cfg", "namespace": "ns"}, "data": {"a": "1"}, "binaryData": {"b": "/wA="}, "apiVersion": "v1", "kind": "ConfigMap"})
        );
    }

    #[test]
    fn decodes_maps_of_quantities() {
        // ResourceQuota{spec: {hard: {pods: 10, requests.cpu: 500m}}}, as `kubectl create quota` sends it.
        let meta = field(1, b"q");
        let pods = [field(1, b"pods"), field(2, &field(1, b"10"))].concat();
        let cpu = [field(1, b"requests.cpu"), field(2, &field(1, b"500m"))].concat();
        let spec = [field(1, &pods), field(1, &cpu)].concat();
        let raw = [field(1, &meta), field(2, &spec)].concat();
        let v = decode(&envelope("v1", "ResourceQuota", &raw), "io.k8s.api.core.v1.ResourceQuota").unwrap();
        assert_eq!(v["spec"], json!({"hard": {"pods": "10", "requests.cpu": "500m"}}));
    }

    #[test]
    fn go_zero_values_are_unset_and_embedded_structs_inline() {
        // Go writes empty strings for unset non-pointer fields and nests embedded structs.
        let volume = [field(1, b"v"), field(2, &field(19, &field(1, &field(1, b"cm"))))].concat();
        let container = [field(1, b"c"), field(2, b"busybox"), field(14, b"")].concat();
        let spec = [field(1, &volume), field(2, &container)].concat();
        let raw = [field(1, &field(1, b"p")), field(2, &spec)].concat();
        let v = decode(&envelope("v1", "Pod", &raw), "io.k8s.api.core.v1.Pod").unwrap();
        assert_eq!(
            v["spec"],
            json!({"volumes": [{"name": "v", "configMap": {"name": "cm"}}], "containers": [{"name": "c", "image": "busybox"}]})
        );
        // A pointer field set to zero keeps its zero.
        let raw = [field(1, &field(1, b"web")), field(2, &number(1, 0))].concat();
        let v = decode(&envelope("apps/v1", "Deployment", &raw), "io.k8s.api.apps.v1.Deployment").unwrap();
        assert_eq!(v["spec"], json!({"replicas": 0}));
    }

    #[test]
    fn garbage_is_a_bad_request() {
        assert_eq!(decode(b"k8s\0\x0a\xff", "io.k8s.api.core.v1.ConfigMap").unwrap_err().code, 400);
        assert_eq!(decode(b"nope", "io.k8s.api.core.v1.ConfigMap").unwrap_err().code, 400);
        assert_eq!(go_duration(3_723_000_000_000), "1h2m3s");
        assert_eq!(go_duration(500_000_000), "500ms");
    }
}
