//! `metadata.managedFields` for non-apply writes: which manager last set which fields.
//!
//! Each write by manager M makes M own every field it changed (and takes those fields away
//! from other managers), as upstream's field manager does for `Update` operations. Lists are
//! tracked as atomic values here; server-side apply owns the finer, list-key-aware sets.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::api::meta;

/// A field path as a list of keys.
pub(crate) type Path = Vec<String>;

/// Metadata fields the server owns; they never appear in field sets.
const SYSTEM_META: &[&str] = &[
    "managedFields",
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
    "name",
    "namespace",
];

/// Leaf paths of an object (objects recurse; arrays and scalars are leaves).
fn leaves(v: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>, top: bool) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                if top && matches!(k.as_str(), "apiVersion" | "kind") {
                    continue;
                }
                if prefix.len() == 1 && prefix[0] == "metadata" && SYSTEM_META.contains(&k.as_str()) {
                    continue;
                }
                prefix.push(k.clone());
                leaves(child, prefix, out, false);
                prefix.pop();
            }
        }
        _ => {
            if !prefix.is_empty() {
                out.insert(prefix.clone());
            }
        }
    }
}

pub(crate) fn leaf_set(v: &Value) -> BTreeSet<Path> {
    let mut out = BTreeSet::new();
    leaves(v, &mut Vec::new(), &mut out, true);
    out
}

pub(crate) fn get_path<'a>(v: &'a Value, p: &Path) -> Option<&'a Value> {
    p.iter().try_fold(v, |cur, k| cur.get(k.as_str()))
}

/// Parses a `fieldsV1` tree into leaf paths.
fn parse_fields(v: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
    let Some(m) = v.as_object() else { return };
    let mut has_child = false;
    for (k, child) in m {
        if let Some(name) = k.strip_prefix("f:") {
            has_child = true;
            prefix.push(name.to_string());
            parse_fields(child, prefix, out);
            prefix.pop();
        }
    }
    if !has_child && !prefix.is_empty() {
        out.insert(prefix.clone());
    }
}

/// Renders leaf paths as a `fieldsV1` tree.
fn render_fields(paths: &BTreeSet<Path>) -> Value {
    fn insert(node: &mut Map<String, Value>, path: &[String]) {
        let Some((first, rest)) = path.split_first() else { return };
        let entry = node.entry(format!("f:{first}")).or_insert_with(|| json!({}));
        if rest.is_empty() {
            return;
        }
        if let Some(obj) = entry.as_object_mut() {
            obj.entry(".").or_insert_with(|| json!({}));
            insert(obj, rest);
        }
    }
    let mut root = Map::new();
    for p in paths {
        insert(&mut root, p);
    }
    Value::Object(root)
}

/// Records that `manager` wrote `next` (previously `old`).
pub fn record_update(next: &mut Value, old: Option<&Value>, manager: &str, api_version: &str, operation: &str) {
    if manager.is_empty() {
        return;
    }
    let new_leaves = leaf_set(next);
    let changed: BTreeSet<Path> = match old {
        None => new_leaves.clone(),
        Some(o) => {
            let old_leaves = leaf_set(o);
            let mut c: BTreeSet<Path> =
                new_leaves.iter().filter(|p| get_path(o, p) != get_path(next, p)).cloned().collect();
            // Removed fields are taken from whoever owned them.
            c.extend(old_leaves.difference(&new_leaves).cloned());
            c
        }
    };
    let mut entries: Vec<Value> = old
        .and_then(|o| meta::meta(o))
        .and_then(|m| m.get("managedFields"))
        .and_then(|m| m.as_array())
        .cloned()
        .unwrap_or_default();
    if changed.is_empty() && old.is_some() {
        meta::set_meta(next, "managedFields", Value::Array(entries));
        return;
    }
    let mut mine = BTreeSet::new();
    let mut kept = Vec::new();
    for e in entries.drain(..) {
        let m = e.get("manager").and_then(|m| m.as_str()).unwrap_or("");
        let op = e.get("operation").and_then(|m| m.as_str()).unwrap_or("");
        let mut set = BTreeSet::new();
        if let Some(f) = e.get("fieldsV1") {
            parse_fields(f, &mut Vec::new(), &mut set);
        }
        if m == manager && op == operation {
            mine = set;
            continue;
        }
        let remaining: BTreeSet<Path> = set
            .into_iter()
            .filter(|p| !changed.iter().any(|c| c == p || c.starts_with(p) || p.starts_with(c)))
            .collect();
        if remaining.is_empty() {
            continue;
        }
        let mut e = e;
        e["fieldsV1"] = render_fields(&remaining);
        kept.push(e);
    }
    mine.extend(changed.into_iter().filter(|p| new_leaves.contains(p)));
    mine.retain(|p| new_leaves.contains(p));
    if !mine.is_empty() {
        kept.push(json!({
            "manager": manager,
            "operation": operation,
            "apiVersion": api_version,
            "time": meta::now_rfc3339(),
            "fieldsType": "FieldsV1",
            "fieldsV1": render_fields(&mine),
        }));
    }
    if kept.is_empty() {
        meta::meta_mut(next).remove("managedFields");
    } else {
        meta::set_meta(next, "managedFields", Value::Array(kept));
    }
}

/// The managers and their field sets of an object.
pub(crate) fn entries(obj: &Value) -> Vec<(String, String, String, BTreeSet<Path>)> {
    meta::meta(obj)
        .and_then(|m| m.get("managedFields"))
        .and_then(|m| m.as_array())
        .map(|a| {
            a.iter()
                .map(|e| {
                    let s = |k: &str| e.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
                    let mut set = BTreeSet::new();
                    if let Some(f) = e.get("fieldsV1") {
                        parse_fields(f, &mut Vec::new(), &mut set);
                    }
                    (s("manager"), s("operation"), s("apiVersion"), set)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Whether two paths overlap (one is a prefix of the other).
pub(crate) fn overlaps(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// Records a server-side apply by `manager`: it owns exactly the applied fields, which no
/// other manager owns any more.
pub fn record_apply(next: &mut Value, old: Option<&Value>, applied: &Value, manager: &str, api_version: &str) {
    let applied_leaves: BTreeSet<Path> = leaf_set(applied);
    let mut out = Vec::new();
    for e in old
        .and_then(|o| meta::meta(o))
        .and_then(|m| m.get("managedFields"))
        .and_then(|m| m.as_array())
        .cloned()
        .unwrap_or_default()
    {
        let m = e.get("manager").and_then(|m| m.as_str()).unwrap_or("");
        let op = e.get("operation").and_then(|m| m.as_str()).unwrap_or("");
        if m == manager && op == "Apply" {
            continue;
        }
        let mut set = BTreeSet::new();
        if let Some(f) = e.get("fieldsV1") {
            parse_fields(f, &mut Vec::new(), &mut set);
        }
        let remaining: BTreeSet<Path> =
            set.into_iter().filter(|p| !applied_leaves.iter().any(|a| overlaps(a, p))).collect();
        if remaining.is_empty() {
            continue;
        }
        let mut e = e;
        e["fieldsV1"] = render_fields(&remaining);
        out.push(e);
    }
    if !applied_leaves.is_empty() {
        out.push(json!({
            "manager": manager,
            "operation": "Apply",
            "apiVersion": api_version,
            "time": meta::now_rfc3339(),
            "fieldsType": "FieldsV1",
            "fieldsV1": render_fields(&applied_leaves),
        }));
    }
    if out.is_empty() {
        meta::meta_mut(next).remove("managedFields");
    } else {
        meta::set_meta(next, "managedFields", Value::Array(out));
    }
}

/// Whether two objects are equal apart from managedFields timestamps and resourceVersion.
pub fn equal_ignoring_times(a: &Value, b: &Value) -> bool {
    fn strip(v: &Value) -> Value {
        let mut v = v.clone();
        if let Some(m) = v.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            m.remove("resourceVersion");
            if let Some(mf) = m.get_mut("managedFields").and_then(|f| f.as_array_mut()) {
                for e in mf {
                    if let Some(e) = e.as_object_mut() {
                        e.remove("time");
                    }
                }
            }
        }
        v
    }
    strip(a) == strip(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_moves_to_the_writer() {
        let mut a = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "labels": {"a": "1"}}, "data": {"k": "v"}});
        record_update(&mut a, None, "alice", "v1", "Update");
        let mf = &a["metadata"]["managedFields"][0];
        assert_eq!(mf["manager"], "alice");
        assert_eq!(
            mf["fieldsV1"],
            json!({"f:data": {".": {}, "f:k": {}}, "f:metadata": {".": {}, "f:labels": {".": {}, "f:a": {}}}})
        );
        let mut b = a.clone();
        b["data"]["k"] = json!("w");
        record_update(&mut b, Some(&a), "bob", "v1", "Update");
        let mf = b["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(mf.len(), 2);
        assert_eq!(mf[0]["fieldsV1"], json!({"f:metadata": {".": {}, "f:labels": {".": {}, "f:a": {}}}}));
        assert_eq!(mf[1]["manager"], "bob");
        assert_eq!(mf[1]["fieldsV1"], json!({"f:data": {".": {}, "f:k": {}}}));
        assert!(equal_ignoring_times(&b, &b.clone()));
    }
}
