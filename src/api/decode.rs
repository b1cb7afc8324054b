//! Typed decoding checks: does a JSON object fit the Go type upstream would decode it into?
//!
//! The kinds' OpenAPI definitions (`schema.rs`) are compiled once into [`Shape`]s, and a body
//! is walked against its kind's shape. A value of the wrong JSON type is upstream's "cannot be
//! handled as a ..." 400, in Go's words (`json: cannot unmarshal string into Go struct field
//! DeploymentSpec.spec.replicas of type int32`); fields the type does not have are reported for
//! `fieldValidation`.
//!
//! The walk accepts exactly what k8s-openapi's deserializers accept, because the controllers,
//! the scheduler and the kubelet read stored objects with those types: whatever is stored must
//! decode there. A test compares the two on every field of every kind. The one difference is on
//! purpose: a resource quantity written as a JSON number (`cpu: 0.5` in YAML) is rewritten as the
//! string it stands for, as upstream stores it, where the typed decode refuses fractions.
//!
//! It is driven by data rather than by a serde decode per kind on purpose: decoding through
//! `serde_ignored` compiled every kind's deserializer once more, several MiB of the binary.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::OnceLock;

use serde_json::Value;

/// Outcome of decoding a value as a typed kind.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DecodeReport {
    /// Paths of unknown fields, upstream-style (`spec.template.spec.containers[0].foo`).
    pub unknown: Vec<String>,
}

/// Checks `v` against the named definition, collecting unknown field paths and rewriting
/// numeric quantities as strings; a type error is `Err(message)`. An unknown definition
/// accepts anything.
pub fn check(definition: &str, v: &mut Value) -> Result<DecodeReport, String> {
    let shapes = shapes();
    let Some(&root) = shapes.by_name.get(definition) else {
        return Ok(DecodeReport::default());
    };
    let mut walk = Walk { shapes, path: Vec::new(), owner: root, unknown: Vec::new() };
    walk.object(root, v)?;
    Ok(DecodeReport { unknown: walk.unknown })
}

/// What a JSON value must look like: the Go type behind a field, as far as decoding cares.
#[derive(Debug, Clone, PartialEq)]
enum Shape {
    Str,
    I32,
    I64,
    F64,
    Bool,
    /// `[]byte`: a base64 string (standard alphabet, padded).
    Bytes,
    /// `metav1.Time` and `MicroTime`: an RFC 3339 string.
    Time,
    /// `intstr.IntOrString`: a string or a 32-bit integer.
    IntOrString,
    /// `resource.Quantity`: a string or a number.
    Quantity,
    /// Free-form JSON (`runtime.RawExtension`, `FieldsV1`).
    Any,
    Array(Box<Shape>),
    Map(Box<Shape>),
    /// A struct: index into [`Shapes::structs`].
    Struct(usize),
}

impl Shape {
    /// Whether null is accepted where no `Option` wraps the type (list items, map values), as
    /// the typed decode allows it.
    fn takes_bare_null(&self) -> bool {
        matches!(self, Shape::Bytes | Shape::Any)
    }

    /// The Go type's name, as Go's decoder prints it.
    fn go_name(&self, shapes: &Shapes) -> String {
        match self {
            Shape::Str => "string".into(),
            Shape::I32 => "int32".into(),
            Shape::I64 => "int64".into(),
            Shape::F64 => "float64".into(),
            Shape::Bool => "bool".into(),
            Shape::Bytes => "[]uint8".into(),
            Shape::Time => "v1.Time".into(),
            Shape::IntOrString => "intstr.IntOrString".into(),
            Shape::Quantity => "resource.Quantity".into(),
            Shape::Any => "runtime.RawExtension".into(),
            Shape::Array(item) => format!("[]{}", item.go_name(shapes)),
            Shape::Map(value) => format!("map[string]{}", value.go_name(shapes)),
            Shape::Struct(i) => shapes.structs[*i].go_name(),
        }
    }
}

/// One struct type: its definition name and its fields by JSON name.
#[derive(Debug)]
struct StructShape {
    definition: &'static str,
    fields: HashMap<&'static str, Shape>,
    /// Required fields the typed struct has no default for (times: `Condition`'s
    /// `lastTransitionTime`): they must be present and not null.
    must_have: Vec<&'static str>,
    /// For a kind (`apiVersion`, `kind`): a kind's typed struct refuses other values for these
    /// two fields, also where it is nested (a StatefulSet's `volumeClaimTemplates`).
    identity: Option<(String, &'static str)>,
}

impl StructShape {
    /// `v1.PodSpec` for `io.k8s.api.core.v1.PodSpec`: package and type, as Go prints them.
    fn go_name(&self) -> String {
        let mut parts = self.definition.rsplit('.');
        let ty = parts.next().unwrap_or_default();
        match parts.next() {
            Some(package) => format!("{package}.{ty}"),
            None => ty.to_string(),
        }
    }

    /// `PodSpec`: the name Go's errors give the struct that holds a field.
    fn short_name(&self) -> &'static str {
        self.definition.rsplit('.').next().unwrap_or_default()
    }
}

/// Every definition's shape, compiled once from the embedded definitions.
#[derive(Debug)]
struct Shapes {
    structs: Vec<StructShape>,
    by_name: HashMap<&'static str, usize>,
}

const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";
const INT_OR_STRING: &str = "io.k8s.apimachinery.pkg.util.intstr.IntOrString";

fn shapes() -> &'static Shapes {
    static SHAPES: OnceLock<Shapes> = OnceLock::new();
    SHAPES.get_or_init(|| compile(super::schema::definitions()))
}

fn compile(defs: &'static serde_json::Map<String, Value>) -> Shapes {
    // Structs first, so that fields can refer to any of them by index.
    let mut by_name = HashMap::new();
    let mut names = Vec::new();
    for (name, def) in defs {
        if def.get("properties").is_some_and(Value::is_object) {
            by_name.insert(name.as_str(), names.len());
            names.push((name.as_str(), def));
        }
    }
    let structs = names
        .iter()
        .map(|(name, def)| {
            let props = def.get("properties").and_then(Value::as_object).into_iter().flatten();
            let fields: HashMap<&'static str, Shape> =
                props.map(|(field, schema)| (field.as_str(), shape_of(schema, defs, &by_name, 0))).collect();
            let required = def.get("required").and_then(Value::as_array).into_iter().flatten();
            let must_have = required
                .filter_map(Value::as_str)
                .filter_map(|f| fields.get_key_value(f))
                .filter(|(_, shape)| **shape == Shape::Time)
                .map(|(f, _)| *f)
                .collect();
            let identity =
                super::registry::RESOURCES.iter().find(|r| r.definition == *name).map(|r| (r.api_version(), r.kind));
            StructShape { definition: name, fields, must_have, identity }
        })
        .collect();
    Shapes { structs, by_name }
}

/// The shape of a property's schema. `depth` only guards against a definition that is a bare
/// `$ref` to itself.
fn shape_of(
    schema: &Value,
    defs: &serde_json::Map<String, Value>,
    structs: &HashMap<&str, usize>,
    depth: u32,
) -> Shape {
    if let Some(name) = super::schema::ref_name(schema) {
        return match name {
            QUANTITY => Shape::Quantity,
            INT_OR_STRING => Shape::IntOrString,
            _ => match (structs.get(name), defs.get(name)) {
                (Some(&i), _) => Shape::Struct(i),
                (None, Some(def)) if depth < 8 => shape_of(def, defs, structs, depth + 1),
                _ => Shape::Any,
            },
        };
    }
    if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        return Shape::IntOrString;
    }
    let format = schema.get("format").and_then(Value::as_str);
    match schema.get("type").and_then(Value::as_str) {
        Some("string") => match format {
            Some("byte") => Shape::Bytes,
            Some("date-time") => Shape::Time,
            _ => Shape::Str,
        },
        Some("integer") if format == Some("int32") => Shape::I32,
        Some("integer") => Shape::I64,
        Some("number") => Shape::F64,
        Some("boolean") => Shape::Bool,
        Some("array") => match schema.get("items") {
            Some(items) => Shape::Array(Box::new(shape_of(items, defs, structs, depth))),
            None => Shape::Array(Box::new(Shape::Any)),
        },
        Some("object") => match schema.get("additionalProperties") {
            Some(values) if values.is_object() => Shape::Map(Box::new(shape_of(values, defs, structs, depth))),
            _ => Shape::Any,
        },
        _ => Shape::Any,
    }
}

/// One step of the path from the root to the value being checked.
/// Keys borrow from the body being walked (or the path being parsed): the walk runs on every
/// write and visits every key.
#[derive(Debug, Clone, Copy)]
enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

struct Walk<'v> {
    shapes: &'static Shapes,
    path: Vec<Seg<'v>>,
    /// The innermost struct around the value: Go's errors name it.
    owner: usize,
    unknown: Vec<String>,
}

impl<'v> Walk<'v> {
    /// The path as upstream reports unknown fields: `spec.containers[0].imagee`.
    fn path_with_indices(&self) -> String {
        let mut out = String::new();
        for seg in &self.path {
            match seg {
                Seg::Key(k) if out.is_empty() => out.push_str(k),
                Seg::Key(k) => {
                    out.push('.');
                    out.push_str(k);
                }
                Seg::Index(i) => {
                    let _ = write!(out, "[{i}]");
                }
            }
        }
        out
    }

    /// `json: cannot unmarshal string into Go struct field PodSpec.spec.containers of type
    /// []v1.Container`: the field path without list indices, as Go writes it.
    fn mismatch(&self, v: &Value, shape: &Shape) -> String {
        let numeric = matches!(shape, Shape::I32 | Shape::I64 | Shape::IntOrString | Shape::Quantity);
        let found = match v {
            Value::Null => "null".to_string(),
            Value::Bool(_) => "bool".to_string(),
            Value::Number(n) if numeric => format!("number {n}"),
            Value::Number(_) => "number".to_string(),
            Value::String(_) => "string".to_string(),
            Value::Array(_) => "array".to_string(),
            Value::Object(_) => "object".to_string(),
        };
        format!("json: cannot unmarshal {found} into {} of type {}", self.field_name(), shape.go_name(self.shapes))
    }

    /// `Go struct field PodSpec.spec.containers`, or `Go value` at the root.
    fn field_name(&self) -> String {
        let keys: Vec<&str> = self
            .path
            .iter()
            .filter_map(|s| match s {
                Seg::Key(k) => Some(*k),
                Seg::Index(_) => None,
            })
            .collect();
        if keys.is_empty() {
            return "Go value".to_string();
        }
        format!("Go struct field {}.{}", self.shapes.structs[self.owner].short_name(), keys.join("."))
    }

    fn object(&mut self, index: usize, v: &'v mut Value) -> Result<(), String> {
        let Value::Object(map) = v else {
            return Err(self.mismatch(v, &Shape::Struct(index)));
        };
        let outer = std::mem::replace(&mut self.owner, index);
        let shape = &self.shapes.structs[index];
        if let Some(missing) = shape.must_have.iter().find(|f| map.get(**f).is_none_or(Value::is_null)) {
            self.path.push(Seg::Key(missing));
            return Err(format!("{}: required field is missing", self.field_name()));
        }
        if let Some((api_version, kind)) = &shape.identity {
            for (field, expected) in [("apiVersion", api_version.as_str()), ("kind", kind)] {
                match map.get(field) {
                    None => {}
                    Some(Value::String(s)) if s == expected => {}
                    Some(other) => {
                        self.path.push(Seg::Key(field));
                        let message = format!("{}: {other} is not \"{expected}\"", self.field_name());
                        return Err(message);
                    }
                }
            }
        }
        let fields = &shape.fields;
        for (key, child) in map.iter_mut() {
            self.path.push(Seg::Key(key));
            match fields.get(key.as_str()) {
                None => self.unknown.push(self.path_with_indices()),
                // Every field of the typed structs is optional: null leaves it unset.
                Some(_) if child.is_null() => {}
                Some(shape) => self.value(shape, child)?,
            }
            self.path.pop();
        }
        self.owner = outer;
        Ok(())
    }

    fn value(&mut self, shape: &Shape, v: &'v mut Value) -> Result<(), String> {
        let fits = match (shape, &*v) {
            (Shape::Any, _) => true,
            (Shape::Bytes, Value::Null) => true,
            (Shape::Str, Value::String(_)) | (Shape::Bool, Value::Bool(_)) | (Shape::F64, Value::Number(_)) => true,
            (Shape::I32 | Shape::IntOrString, Value::Number(n)) => n.as_i64().is_some_and(|i| i32::try_from(i).is_ok()),
            (Shape::I64, Value::Number(n)) => n.as_i64().is_some(),
            (Shape::IntOrString, Value::String(_)) => true,
            (Shape::Quantity, Value::String(_)) => true,
            (Shape::Quantity, Value::Number(n)) => {
                *v = Value::String(n.to_string());
                true
            }
            (Shape::Bytes, Value::String(s)) => {
                use base64::Engine;
                if let Err(e) = base64::engine::general_purpose::STANDARD.decode(s) {
                    return Err(format!(
                        "{}: illegal base64 data at input byte {}",
                        self.field_name(),
                        bad_byte(&e, s)
                    ));
                }
                true
            }
            (Shape::Time, Value::String(s)) => {
                if let Err(e) = s.parse::<chrono::DateTime<chrono::FixedOffset>>() {
                    return Err(format!(
                        "{}: parsing time \"{s}\" as \"2006-01-02T15:04:05Z07:00\": {e}",
                        self.field_name()
                    ));
                }
                true
            }
            (Shape::Struct(i), _) => return self.object(*i, v),
            (Shape::Array(item), Value::Array(_)) => {
                let Value::Array(items) = v else { return Ok(()) };
                for (i, child) in items.iter_mut().enumerate() {
                    self.path.push(Seg::Index(i));
                    self.element(item, child)?;
                    self.path.pop();
                }
                return Ok(());
            }
            (Shape::Map(value), Value::Object(_)) => {
                let Value::Object(map) = v else { return Ok(()) };
                for (key, child) in map.iter_mut() {
                    self.path.push(Seg::Key(key));
                    self.element(value, child)?;
                    self.path.pop();
                }
                return Ok(());
            }
            _ => false,
        };
        if fits { Ok(()) } else { Err(self.mismatch(v, shape)) }
    }

    /// A list item or a map value: no `Option` around it, so null only where the type takes it.
    fn element(&mut self, shape: &Shape, v: &'v mut Value) -> Result<(), String> {
        if v.is_null() && !shape.takes_bare_null() {
            return Err(self.mismatch(v, shape));
        }
        self.value(shape, v)
    }
}

/// The offset Go's base64 decoder would report for `e`.
fn bad_byte(e: &base64::DecodeError, s: &str) -> usize {
    match e {
        base64::DecodeError::InvalidByte(at, _) | base64::DecodeError::InvalidLastSymbol(at, _) => *at,
        base64::DecodeError::InvalidLength(_) | base64::DecodeError::InvalidPadding => s.len(),
    }
}
/// Removes the field at an upstream-style path (used to drop unknown fields when not strict).
pub fn remove_path(v: &mut Value, path: &str) {
    let mut segments = Vec::new();
    for part in path.split('.') {
        let mut rest = part;
        if let Some(i) = rest.find('[') {
            segments.push(Seg::Key(&rest[..i]));
            rest = &rest[i..];
            while let Some(end) = rest.find(']') {
                if let Ok(n) = rest[1..end].parse::<usize>() {
                    segments.push(Seg::Index(n));
                }
                rest = &rest[end + 1..];
            }
        } else {
            segments.push(Seg::Key(rest));
        }
    }
    let Some((last, parents)) = segments.split_last() else { return };
    let mut cur = v;
    for s in parents {
        let next = match s {
            Seg::Key(k) => cur.get_mut(*k),
            Seg::Index(i) => cur.get_mut(*i),
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let (Seg::Key(k), Some(m)) = (last, cur.as_object_mut()) {
        m.remove(*k);
    }
}

/// The typed decode the walk stands in for: k8s-openapi's deserializer for `T`, with unknown
/// fields collected by serde_ignored. Only the tests compile it, to hold the walk to it.
#[cfg(test)]
pub(crate) fn typed<T: serde::de::DeserializeOwned>(v: &Value) -> Result<Vec<String>, String> {
    fn render(path: &serde_ignored::Path<'_>) -> String {
        use serde_ignored::Path;
        match path {
            Path::Root => String::new(),
            Path::Seq { parent, index } => format!("{}[{index}]", render(parent)),
            Path::Map { parent, key } => {
                let p = render(parent);
                if p.is_empty() { key.clone() } else { format!("{p}.{key}") }
            }
            Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => render(parent),
        }
    }
    let mut unknown = Vec::new();
    let result: Result<T, _> = serde_ignored::deserialize(v, |path| unknown.push(render(&path)));
    result.map(|_| unknown).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::api::registry::{RESOURCES, ResourceInfo};
    use serde_json::json;

    const DEPLOYMENT: &str = "io.k8s.api.apps.v1.Deployment";

    #[test]
    fn unknown_fields_have_upstream_paths() {
        let mut d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x", "bogus": 1},
            "spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "a", "imagee": "x"}]}}}});
        let r = check(DEPLOYMENT, &mut d).unwrap();
        assert_eq!(r.unknown, vec!["metadata.bogus", "spec.template.spec.containers[0].imagee"]);
        for p in &r.unknown {
            remove_path(&mut d, p);
        }
        assert_eq!(check(DEPLOYMENT, &mut d).unwrap().unknown, Vec::<String>::new());
    }

    #[test]
    fn type_errors_are_reported_in_gos_words() {
        let base = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}, "spec": {"selector": {}, "template": {}}});
        let cases = [
            (
                "/spec",
                "replicas",
                json!("three"),
                "json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32",
            ),
            (
                "/spec",
                "replicas",
                json!(1.5),
                "json: cannot unmarshal number 1.5 into Go struct field DeploymentSpec.spec.replicas of type int32",
            ),
            (
                "/spec",
                "replicas",
                json!(3_000_000_000u64),
                "json: cannot unmarshal number 3000000000 into Go struct field DeploymentSpec.spec.replicas of type int32",
            ),
            (
                "/spec/template",
                "spec",
                json!({"containers": "web"}),
                "json: cannot unmarshal string into Go struct field PodSpec.spec.template.spec.containers of type []v1.Container",
            ),
            (
                "/spec/template",
                "spec",
                json!({"containers": [null]}),
                "json: cannot unmarshal null into Go struct field PodSpec.spec.template.spec.containers of type v1.Container",
            ),
            (
                "/spec/template",
                "spec",
                json!({"containers": [{"ports": [{"containerPort": 80, "hostPort": "80"}]}]}),
                "json: cannot unmarshal string into Go struct field ContainerPort.spec.template.spec.containers.ports.hostPort of type int32",
            ),
            (
                "/metadata",
                "labels",
                json!({"app": 1}),
                "json: cannot unmarshal number into Go struct field ObjectMeta.metadata.labels.app of type string",
            ),
            (
                "/metadata",
                "creationTimestamp",
                json!("yesterday"),
                "Go struct field ObjectMeta.metadata.creationTimestamp: parsing time \"yesterday\" as \"2006-01-02T15:04:05Z07:00\": input contains invalid characters",
            ),
            (
                "/spec",
                "strategy",
                json!({"rollingUpdate": {"maxSurge": true}}),
                "json: cannot unmarshal bool into Go struct field RollingUpdateDeployment.spec.strategy.rollingUpdate.maxSurge of type intstr.IntOrString",
            ),
            (
                "",
                "spec",
                json!([]),
                "json: cannot unmarshal array into Go struct field Deployment.spec of type v1.DeploymentSpec",
            ),
        ];
        for (parent, key, value, message) in cases {
            let mut d = base.clone();
            d.pointer_mut(parent).unwrap()[key] = value;
            assert_eq!(check(DEPLOYMENT, &mut d), Err(message.to_string()), "{parent}/{key}");
        }
        let mut service = json!({"apiVersion": "v1", "kind": "Service", "status": {"conditions": [{"type": "x"}]}});
        assert_eq!(
            check("io.k8s.api.core.v1.Service", &mut service),
            Err("Go struct field Condition.status.conditions.lastTransitionTime: required field is missing".to_string())
        );
        let mut set = json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "spec": {"volumeClaimTemplates": [{"apiVersion": "v2"}]}});
        assert_eq!(
            check("io.k8s.api.apps.v1.StatefulSet", &mut set),
            Err("Go struct field PersistentVolumeClaim.spec.volumeClaimTemplates.apiVersion: \"v2\" is not \"v1\""
                .to_string())
        );
        let mut secret = json!({"apiVersion": "v1", "kind": "Secret", "data": {"k": "aGk"}});
        assert_eq!(
            check("io.k8s.api.core.v1.Secret", &mut secret),
            Err("Go struct field Secret.data.k: illegal base64 data at input byte 3".to_string())
        );
    }

    #[test]
    fn numeric_quantities_become_strings() {
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": [{"name": "a",
            "resources": {"requests": {"cpu": 0.5, "memory": 64}, "limits": {"cpu": "1"}}}]}});
        check("io.k8s.api.core.v1.Pod", &mut pod).unwrap();
        assert_eq!(
            pod["spec"]["containers"][0]["resources"],
            json!({"requests": {"cpu": "0.5", "memory": "64"}, "limits": {"cpu": "1"}})
        );
        let mut bad = json!({"apiVersion": "v1", "kind": "Pod", "spec": {"overhead": {"cpu": [1]}}});
        assert_eq!(
            check("io.k8s.api.core.v1.Pod", &mut bad),
            Err(
                "json: cannot unmarshal array into Go struct field PodSpec.spec.overhead.cpu of type resource.Quantity"
                    .to_string()
            )
        );
    }

    /// Values put in place of each field in turn: every JSON type, the edges of the integer
    /// types, base64 with and without padding, times good and bad.
    fn replacements() -> Vec<Value> {
        vec![
            Value::Null,
            json!("s"),
            json!(""),
            json!(7),
            json!(-7),
            json!(3_000_000_000u64),
            json!(-3_000_000_000i64),
            json!(u64::MAX),
            json!(1.5),
            json!(true),
            json!([]),
            json!(["s"]),
            json!([null]),
            json!([7]),
            json!({}),
            json!({"k": "v"}),
            json!({"k": null}),
            json!({"k": 7}),
            json!("aGk="),
            json!("aGk"),
            json!("2024-01-02T03:04:05Z"),
            json!("2024-01-02T03:04:05.123456+02:00"),
            json!("2024-01-02 03:04:05Z"),
            json!("8080"),
        ]
    }

    /// A value of `shape` with every field set, deep enough to reach every field once.
    fn sample(shape: &Shape, depth: u32) -> Value {
        match shape {
            Shape::Str => json!("s"),
            Shape::I32 | Shape::I64 | Shape::IntOrString => json!(1),
            Shape::F64 => json!(1.5),
            Shape::Bool => json!(true),
            Shape::Bytes => json!("aGk="),
            Shape::Time => json!("2024-01-02T03:04:05Z"),
            Shape::Quantity => json!("1"),
            Shape::Any => json!({"a": [1]}),
            Shape::Array(item) => json!([sample(item, depth)]),
            Shape::Map(value) => json!({"k": sample(value, depth)}),
            Shape::Struct(_) if depth > 12 => json!({}),
            Shape::Struct(i) => {
                let fields = &shapes().structs[*i].fields;
                Value::Object(fields.iter().map(|(k, s)| (k.to_string(), sample(s, depth + 1))).collect())
            }
        }
    }

    /// Values of `shape` that each differ from a minimal one in one place: every field of every
    /// struct reached (the first time it is reached) replaced by each replacement, and an unknown
    /// field in each struct.
    fn variants(shape: &Shape, seen: &mut HashSet<(usize, &'static str)>, depth: u32, out: &mut Vec<Value>) {
        if depth > 40 {
            return;
        }
        match shape {
            Shape::Array(item) => {
                let mut inner = Vec::new();
                variants(item, seen, depth + 1, &mut inner);
                inner.extend(replacements());
                out.extend(inner.into_iter().map(|v| json!([sample(item, 13), v])));
            }
            Shape::Map(value) => {
                let mut inner = Vec::new();
                variants(value, seen, depth + 1, &mut inner);
                inner.extend(replacements());
                out.extend(inner.into_iter().map(|v| json!({"a": sample(value, 13), "k": v})));
            }
            Shape::Struct(i) => {
                let s = &shapes().structs[*i];
                out.push(json!({"unknownField": {"x": 1}}));
                let mut fields: Vec<_> = s.fields.iter().collect();
                fields.sort_by_key(|(k, _)| **k);
                for (name, field) in fields {
                    if !seen.insert((*i, name)) {
                        continue;
                    }
                    let mut inner = vec![sample(field, 13)];
                    variants(field, seen, depth + 1, &mut inner);
                    inner.extend(replacements());
                    out.extend(inner.into_iter().map(|v| json!({*name: v})));
                }
            }
            _ => {}
        }
    }

    fn compare(info: &ResourceInfo, body: &Value) {
        let mut walked = body.clone();
        let ours = check(info.definition, &mut walked).map(|r| r.unknown);
        let theirs = (info.typed)(&walked);
        match (ours, theirs) {
            (Ok(mut a), Ok(mut b)) => {
                a.sort();
                b.sort();
                assert_eq!(a, b, "unknown fields of {body}");
            }
            (Err(_), Err(_)) => {}
            (a, b) => panic!("{} disagree on {body}\n  walk:  {a:?}\n  typed: {b:?}", info.kind),
        }
    }

    #[test]
    fn the_walk_accepts_exactly_what_the_typed_decode_accepts() {
        let shapes = shapes();
        let mut seen = HashSet::new();
        let mut checked = 0;
        let mut kinds: Vec<&ResourceInfo> = RESOURCES.iter().collect();
        kinds.dedup_by_key(|r| r.definition);
        for info in kinds {
            let root =
                *shapes.by_name.get(info.definition).unwrap_or_else(|| panic!("no shape for {}", info.definition));
            let head = json!({"apiVersion": info.api_version(), "kind": info.kind});
            let mut full = sample(&Shape::Struct(root), 0);
            full.as_object_mut().unwrap().extend(head.as_object().unwrap().clone());
            compare(info, &full);
            let mut bodies = Vec::new();
            variants(&Shape::Struct(root), &mut seen, 0, &mut bodies);
            for mut body in bodies {
                let Value::Object(m) = &mut body else { unreachable!() };
                if m.contains_key("apiVersion") || m.contains_key("kind") {
                    continue; // checked by the caller before the walk
                }
                m.extend(head.as_object().unwrap().clone());
                compare(info, &body);
                checked += 1;
            }
        }
        assert!(checked > 10_000, "only {checked} bodies checked");
    }
}
