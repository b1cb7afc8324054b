//! OpenAPI v2 and v3 documents generated from the registry: the kinds' schemas are
//! k8s-openapi's (with their field descriptions, embedded as data by `api::schema`), paths and
//! operations come from the registry.
//!
//! kubectl reads the v3 documents for `explain` and to learn that the server validates fields
//! itself (the `fieldValidation` parameter on each kind's PATCH operation), so it never needs
//! client-side schema validation. Building takes tens of milliseconds and happens off the
//! start-up path.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::api::registry::{self, ResourceInfo, Storage};
use crate::api::schema::V3Definitions;

/// The built documents.
pub struct OpenApi {
    v2: Bytes,
    v2_etag: String,
    v3_index: Bytes,
    v3_docs: BTreeMap<String, (Bytes, String)>,
}

fn hash(b: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, b);
    d.as_ref()[..16].iter().map(|x| format!("{x:02X}")).collect()
}

fn gvk(r: &ResourceInfo) -> Value {
    json!([{"group": r.group, "version": r.version, "kind": r.kind}])
}

fn query_param(name: &str, description: &str, v3: bool) -> Value {
    if v3 {
        json!({"name": name, "in": "query", "description": description, "schema": {"type": "string", "uniqueItems": true}})
    } else {
        json!({"name": name, "in": "query", "description": description, "type": "string", "uniqueItems": true})
    }
}

fn write_params(v3: bool) -> Vec<Value> {
    vec![
        query_param(
            "dryRun",
            "When present, indicates that modifications should not be persisted. Valid values are: - All: all dry run stages will be processed",
            v3,
        ),
        query_param(
            "fieldManager",
            "fieldManager is a name associated with the actor or entity that is making these changes.",
            v3,
        ),
        query_param(
            "fieldValidation",
            "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields. Valid values are: - Ignore - Warn - Strict",
            v3,
        ),
    ]
}

fn body(def_ref: &str, v3: bool) -> Value {
    if v3 {
        json!({"content": {"*/*": {"schema": {"$ref": def_ref}}}, "required": true})
    } else {
        json!({"name": "body", "in": "body", "required": true, "schema": {"$ref": def_ref}})
    }
}

fn response(def_ref: &str, v3: bool) -> Value {
    if v3 {
        json!({"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": def_ref}}}}})
    } else {
        json!({"200": {"description": "OK", "schema": {"$ref": def_ref}}})
    }
}

fn op_name(r: &ResourceInfo) -> String {
    let g = r.group.split('.').next().unwrap_or("");
    let mut group: String = g.split('-').map(capitalize).collect();
    if group.is_empty() {
        group = "Core".into();
    }
    format!("{group}{}", capitalize(r.version))
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// Paths of one resource.
fn paths_for(r: &ResourceInfo, prefix: &str, v3: bool, out: &mut Map<String, Value>) {
    let base =
        if r.group.is_empty() { format!("/api/{}", r.version) } else { format!("/apis/{}/{}", r.group, r.version) };
    let scope = if r.namespaced { "/namespaces/{namespace}" } else { "" };
    let def_ref = format!("{prefix}{}", r.definition);
    let name = op_name(r);
    let ns = if r.namespaced { "Namespaced" } else { "" };
    let ext =
        |action: &str| json!({"x-kubernetes-action": action, "x-kubernetes-group-version-kind": gvk(r)[0].clone()});
    let with = |mut op: Value, action: &str| {
        if let (Some(o), Some(e)) = (op.as_object_mut(), ext(action).as_object()) {
            for (k, v) in e {
                o.insert(k.clone(), v.clone());
            }
        }
        op
    };
    let mut collection = Map::new();
    if r.has_verb("list") {
        collection.insert("get".into(), with(json!({"operationId": format!("list{name}{ns}{}", r.kind), "description": format!("list or watch objects of kind {}", r.kind), "responses": response(&def_ref, v3)}), "list"));
    }
    if r.has_verb("create") {
        let mut op = json!({"operationId": format!("create{name}{ns}{}", r.kind), "description": format!("create a {}", r.kind), "parameters": write_params(v3), "responses": response(&def_ref, v3)});
        if v3 {
            op["requestBody"] = body(&def_ref, true);
        } else if let Some(p) = op["parameters"].as_array_mut() {
            p.push(body(&def_ref, false));
        }
        collection.insert("post".into(), with(op, "post"));
    }
    if !collection.is_empty() {
        out.insert(format!("{base}{scope}/{}", r.plural), Value::Object(collection));
    }
    if r.storage != Storage::Stored {
        return;
    }
    let mut item = Map::new();
    item.insert("get".into(), with(json!({"operationId": format!("read{name}{ns}{}", r.kind), "description": format!("read the specified {}", r.kind), "responses": response(&def_ref, v3)}), "get"));
    let mut put = json!({"operationId": format!("replace{name}{ns}{}", r.kind), "description": format!("replace the specified {}", r.kind), "parameters": write_params(v3), "responses": response(&def_ref, v3)});
    let mut patch_params = write_params(v3);
    patch_params.push(query_param("force", "Force is going to \"force\" Apply requests.", v3));
    let mut patch = json!({"operationId": format!("patch{name}{ns}{}", r.kind), "description": format!("partially update the specified {}", r.kind), "parameters": patch_params, "responses": response(&def_ref, v3)});
    if v3 {
        put["requestBody"] = body(&def_ref, true);
        patch["requestBody"] = json!({"content": {
            "application/json-patch+json": {"schema": {"type": "object"}},
            "application/merge-patch+json": {"schema": {"type": "object"}},
            "application/strategic-merge-patch+json": {"schema": {"type": "object"}},
            "application/apply-patch+yaml": {"schema": {"type": "object"}},
        }, "required": true});
    }
    item.insert("put".into(), with(put, "put"));
    item.insert("patch".into(), with(patch, "patch"));
    item.insert("delete".into(), with(json!({"operationId": format!("delete{name}{ns}{}", r.kind), "description": format!("delete a {}", r.kind), "responses": response(&def_ref, v3)}), "delete"));
    out.insert(format!("{base}{scope}/{}/{{name}}", r.plural), Value::Object(item));
}

/// Schemas of the given resources with their GVK extension: v2, or v3 from these definitions.
fn schemas(resources: &[&ResourceInfo], v3: Option<&V3Definitions>) -> Map<String, Value> {
    let roots = resources.iter().map(|r| r.definition);
    let mut defs = match v3 {
        Some(all) => all.definitions_for(roots),
        None => crate::api::schema::definitions_for(roots),
    };
    for (def, field, strategy, key) in crate::api::patch::strategy::TABLE {
        if *strategy == "atomic" {
            continue;
        }
        if let Some(prop) = defs
            .get_mut(*def)
            .and_then(|d| d.pointer_mut(&format!("/properties/{field}")))
            .and_then(|p| p.as_object_mut())
        {
            prop.insert("x-kubernetes-patch-strategy".into(), json!(strategy));
            if !key.is_empty() {
                prop.insert("x-kubernetes-patch-merge-key".into(), json!(key));
            }
        }
    }
    for r in resources {
        if let Some(Value::Object(d)) = defs.get_mut(r.definition) {
            let entry = d.entry("x-kubernetes-group-version-kind").or_insert_with(|| json!([]));
            if let Some(a) = entry.as_array_mut() {
                let g = gvk(r)[0].clone();
                if !a.contains(&g) {
                    a.push(g);
                }
            }
        }
    }
    defs
}

impl OpenApi {
    /// Builds every document.
    pub fn build() -> OpenApi {
        let all: Vec<&ResourceInfo> = registry::RESOURCES.iter().collect();
        let mut v2_paths = Map::new();
        for r in &all {
            paths_for(r, "#/definitions/", false, &mut v2_paths);
        }
        let v2 = json!({
            "swagger": "2.0",
            "info": {"title": "Kubernetes", "version": format!("v{}.{}.0", super::KUBE_MAJOR, super::KUBE_MINOR)},
            "paths": v2_paths,
            "definitions": schemas(&all, None),
        });
        let v2 = Bytes::from(serde_json::to_vec(&v2).unwrap_or_default());
        let v2_etag = hash(&v2);
        let mut gvs: BTreeMap<String, Vec<&ResourceInfo>> = BTreeMap::new();
        for r in &all {
            let key = if r.group.is_empty() {
                format!("api/{}", r.version)
            } else {
                format!("apis/{}/{}", r.group, r.version)
            };
            gvs.entry(key).or_default().push(r);
        }
        let v3_definitions = V3Definitions::load();
        let mut v3_docs = BTreeMap::new();
        let mut index = Map::new();
        for (path, resources) in gvs {
            let mut paths = Map::new();
            for r in &resources {
                paths_for(r, "#/components/schemas/", true, &mut paths);
            }
            let doc = json!({
                "openapi": "3.0.0",
                "info": {"title": "Kubernetes", "version": format!("v{}.{}.0", super::KUBE_MAJOR, super::KUBE_MINOR)},
                "paths": paths,
                "components": {"schemas": schemas(&resources, Some(&v3_definitions))},
            });
            let bytes = Bytes::from(serde_json::to_vec(&doc).unwrap_or_default());
            let h = hash(&bytes);
            index.insert(path.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={h}")}));
            v3_docs.insert(path, (bytes, h));
        }
        let v3_index = Bytes::from(serde_json::to_vec(&json!({"paths": index})).unwrap_or_default());
        OpenApi { v2, v2_etag, v3_index, v3_docs }
    }

    /// `/openapi/v2` as JSON.
    pub fn v2(&self) -> &Bytes {
        &self.v2
    }

    /// `/openapi/v3`.
    pub fn v3_index(&self) -> &Bytes {
        &self.v3_index
    }

    /// One group-version document and its hash.
    pub fn v3_doc(&self, path: &str) -> Option<(&Bytes, &str)> {
        self.v3_docs.get(path).map(|(b, h)| (b, h.as_str()))
    }

    /// ETag of the v2 document.
    pub fn etag_v2(&self) -> &str {
        &self.v2_etag
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_patchable_kind_declares_field_validation() {
        let o = OpenApi::build();
        let (doc, _) = o.v3_doc("apis/apps/v1").unwrap();
        let v: Value = serde_json::from_slice(doc).unwrap();
        let p = &v["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(p["x-kubernetes-group-version-kind"]["kind"], "Deployment");
        assert!(p["parameters"].as_array().unwrap().iter().any(|x| x["name"] == "fieldValidation"));
        assert!(v["components"]["schemas"]["io.k8s.api.apps.v1.DeploymentSpec"].is_object());
        let idx: Value = serde_json::from_slice(o.v3_index()).unwrap();
        assert!(idx["paths"]["api/v1"]["serverRelativeURL"].as_str().unwrap().starts_with("/openapi/v3/api/v1?hash="));
    }
}
