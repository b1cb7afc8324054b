//! Navigation of the kinds' schemas: which type a field of a type has.
//!
//! The schemas come from k8s-openapi (through the registry) and are generated once, on first
//! use. Strategic merge patch uses this to know, for a field, which type's patch strategy
//! applies.

use std::collections::HashMap;
use std::sync::OnceLock;

use schemars::generate::SchemaSettings;
use serde_json::{Map, Value};

use crate::api::registry::RESOURCES;

const PREFIX: &str = "#/definitions/";

fn definitions() -> &'static Map<String, Value> {
    static DEFS: OnceLock<Map<String, Value>> = OnceLock::new();
    DEFS.get_or_init(|| {
        let mut generator = SchemaSettings::draft07().with(|s| s.definitions_path = PREFIX.into()).into_generator();
        for r in RESOURCES {
            (r.schema)(&mut generator);
        }
        generator.take_definitions(true)
    })
}

fn ref_name(schema: &Value) -> Option<&str> {
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
