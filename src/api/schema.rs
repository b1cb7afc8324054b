//! The kinds' OpenAPI definitions, and navigation of them: which type a field of a type has.
//!
//! The definitions are those k8s-openapi's schemars implementations render for every served
//! kind and everything it references, in two dialects: `v2` (JSON schema draft 7, `$ref`s to
//! `#/definitions/`, for `/openapi/v2` and for navigation) and `v3` (OpenAPI 3.0, `$ref`s to
//! `#/components/schemas/`). The binary carries them as data, `definitions-v2.json.gz` and
//! `definitions-v3.json.gz` (about 230 KiB together), each parsed when first needed, not as
//! schema-building code, which was several MiB of the binary; the test `embedded_definitions_are_current` renders them again and fails when the
//! file is stale (`SKIFF_WRITE_DEFINITIONS=1 cargo test embedded_definitions` rewrites it).
//! Strategic merge patch and managed fields use the navigation to know, for a field, which
//! type's rules apply; `decode.rs` checks request bodies against the same definitions.

use std::collections::HashMap;
use std::io::Read;
use std::sync::OnceLock;

use serde_json::{Map, Value};

const PREFIX: &str = "#/definitions/";
const PREFIX_V3: &str = "#/components/schemas/";

/// The embedded definitions, one file per dialect (`{name: schema}`), so that loading one
/// never parses the other.
static V2_GZ: &[u8] = include_bytes!("definitions-v2.json.gz");
static V3_GZ: &[u8] = include_bytes!("definitions-v3.json.gz");

/// One embedded dialect.
fn parse(gz: &[u8]) -> Map<String, Value> {
    let mut text = Vec::new();
    let parsed = flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut text)
        .ok()
        .and_then(|_| serde_json::from_slice::<Value>(&text).ok());
    match parsed {
        Some(Value::Object(m)) => m,
        // The file is part of the build and checked by a test; an unreadable one would only
        // leave the documents empty and patches without list strategies.
        _ => Map::new(),
    }
}

/// The v2 definitions, parsed once and kept: navigation and the body checks use them on every
/// write.
pub(crate) fn definitions() -> &'static Map<String, Value> {
    static DEFS: OnceLock<Map<String, Value>> = OnceLock::new();
    DEFS.get_or_init(|| parse(V2_GZ))
}

/// The definitions of the named roots and of everything they reference, in the v2 dialect:
/// what a document listing those kinds must contain.
pub fn definitions_for<'a>(roots: impl IntoIterator<Item = &'a str>) -> Map<String, Value> {
    closure(definitions(), PREFIX, roots)
}

/// The v3 definitions. Only the OpenAPI v3 documents need them, built once: they are parsed
/// for that and dropped with this value rather than kept (several MiB as JSON values).
pub struct V3Definitions(Map<String, Value>);

impl V3Definitions {
    pub fn load() -> V3Definitions {
        V3Definitions(parse(V3_GZ))
    }

    /// Like [`definitions_for`], in the v3 dialect.
    pub fn definitions_for<'a>(&self, roots: impl IntoIterator<Item = &'a str>) -> Map<String, Value> {
        closure(&self.0, PREFIX_V3, roots)
    }
}

fn closure<'a>(all: &Map<String, Value>, prefix: &str, roots: impl IntoIterator<Item = &'a str>) -> Map<String, Value> {
    let mut out = Map::new();
    let mut todo: Vec<String> = roots.into_iter().map(str::to_string).collect();
    while let Some(name) = todo.pop() {
        if out.contains_key(&name) {
            continue;
        }
        let Some(def) = all.get(&name) else { continue };
        collect_refs(def, prefix, &mut todo);
        out.insert(name, def.clone());
    }
    out
}

fn collect_refs(v: &Value, prefix: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                match (k.as_str(), child) {
                    ("$ref", Value::String(r)) => out.extend(r.strip_prefix(prefix).map(str::to_string)),
                    _ => collect_refs(child, prefix, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|child| collect_refs(child, prefix, out)),
        _ => {}
    }
}

pub(crate) fn ref_name(schema: &Value) -> Option<&str> {
    if let Some(r) = schema.get("$ref").and_then(|r| r.as_str()) {
        return r.strip_prefix(PREFIX);
    }
    for combinator in ["allOf", "anyOf", "oneOf"] {
        if let Some(found) = schema.get(combinator).and_then(|a| a.as_array()).and_then(|a| a.iter().find_map(ref_name))
        {
            return Some(found);
        }
    }
    None
}

/// Each definition's fields that name a definition (their own, or their items'), indexed once:
/// managed fields and patches look a field up for every field of every write.
fn field_index() -> &'static HashMap<&'static str, HashMap<&'static str, &'static str>> {
    static INDEX: OnceLock<HashMap<&'static str, HashMap<&'static str, &'static str>>> = OnceLock::new();
    INDEX.get_or_init(|| {
        let defs = definitions();
        let target = |prop: &Value| {
            let r = ref_name(prop).or_else(|| prop.get("items").and_then(ref_name))?;
            defs.get_key_value(r).map(|(k, _)| k.as_str())
        };
        defs.iter()
            .map(|(name, def)| {
                let props = def.get("properties").and_then(|p| p.as_object()).into_iter().flatten();
                (name.as_str(), props.filter_map(|(f, prop)| Some((f.as_str(), target(prop)?))).collect())
            })
            .collect()
    })
}

/// The definition of `field` in `definition`: the field's own type for objects, the item
/// type for lists. None for scalars, maps and unknown names.
pub fn field_definition(definition: &str, field: &str) -> Option<&'static str> {
    field_index().get(definition)?.get(field).copied()
}

/// Whether a definition is known.
pub fn is_known(definition: &str) -> bool {
    field_index().contains_key(definition)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::registry::{RESOURCES, ResourceInfo};
    use schemars::generate::SchemaSettings;

    /// What k8s-openapi's schemars implementations render for these kinds, in one dialect.
    fn rendered<'a>(resources: impl IntoIterator<Item = &'a ResourceInfo>, v3: bool) -> Map<String, Value> {
        let settings = if v3 {
            SchemaSettings::openapi3()
        } else {
            SchemaSettings::draft07().with(|s| s.definitions_path = PREFIX.into())
        };
        let mut generator = settings.into_generator();
        for r in resources {
            (r.schema)(&mut generator);
        }
        generator.take_definitions(true)
    }

    #[test]
    fn embedded_definitions_are_current() {
        let mut stale = Vec::new();
        for (v3, gz, file) in [(false, V2_GZ, "definitions-v2.json.gz"), (true, V3_GZ, "definitions-v3.json.gz")] {
            let fresh = rendered(RESOURCES, v3);
            if fresh == parse(gz) {
                continue;
            }
            if std::env::var_os("SKIFF_WRITE_DEFINITIONS").is_some() {
                use std::io::Write;
                let path = format!("{}/src/api/{file}", env!("CARGO_MANIFEST_DIR"));
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
                gz.write_all(&serde_json::to_vec(&fresh).unwrap()).unwrap();
                std::fs::write(&path, gz.finish().unwrap()).unwrap();
            }
            stale.push(file);
        }
        assert!(
            stale.is_empty(),
            "stale in src/api: {stale:?}; SKIFF_WRITE_DEFINITIONS=1 cargo test embedded_definitions rewrites them, then build again"
        );
    }

    #[test]
    fn a_kinds_definitions_are_what_it_references() {
        // Every group-version's document lists exactly what the generator would register for
        // its kinds.
        let mut groups: HashMap<(&str, &str), Vec<&ResourceInfo>> = HashMap::new();
        for r in RESOURCES {
            groups.entry((r.group, r.version)).or_default().push(r);
        }
        let all_v3 = V3Definitions::load();
        for ((group, version), resources) in groups {
            for v3 in [false, true] {
                let expected = rendered(resources.iter().copied(), v3);
                let roots = resources.iter().map(|r| r.definition);
                let got = if v3 { all_v3.definitions_for(roots) } else { definitions_for(roots) };
                assert_eq!(
                    got.keys().collect::<Vec<_>>(),
                    expected.keys().collect::<Vec<_>>(),
                    "{group}/{version} v3={v3}"
                );
                assert_eq!(got, expected, "{group}/{version} v3={v3}");
            }
        }
    }

    #[test]
    fn walks_from_a_deployment_to_container_ports() {
        let spec = field_definition("io.k8s.api.apps.v1.Deployment", "spec").unwrap();
        assert_eq!(spec, "io.k8s.api.apps.v1.DeploymentSpec");
        let tmpl = field_definition(spec, "template").unwrap();
        let pod = field_definition(field_definition(tmpl, "spec").unwrap(), "containers").unwrap();
        assert_eq!(pod, "io.k8s.api.core.v1.Container");
        assert_eq!(field_definition(pod, "ports"), Some("io.k8s.api.core.v1.ContainerPort"));
        assert_eq!(field_definition(pod, "image"), None);
        assert_eq!(field_definition("io.k8s.api.discovery.v1.Endpoint", "addresses"), None);
        assert!(is_known("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"));
    }
}
