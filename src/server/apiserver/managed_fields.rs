//! `metadata.managedFields`: which manager owns which fields.
//!
//! Each write by manager M makes M own every field it changed (and takes those fields away
//! from other managers), as upstream's field manager does for `Update` operations; a
//! server-side apply owns exactly the fields it applied (see `apply.rs`).
//!
//! A field set is a set of paths. Objects are walked field by field; lists that merge by key
//! are walked item by item, each item named `k:{"name":"a"}` as in `fieldsV1` (and owning the
//! item itself, like upstream's `.`), sets of scalars item by item as `v:"x"`, and every other
//! list is one atomic value. Which lists are which comes from the kinds' patch strategies.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::api::meta;
use crate::api::patch::strategy::ListStrategy;

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

/// Whether a path segment names a list item (`k:{...}` or `v:...`) rather than a field.
pub(crate) fn is_item(seg: &str) -> bool {
    seg.starts_with("k:{") || seg.starts_with("v:")
}

/// Whether a path ends in a list item: owning it means owning the item's existence.
pub(crate) fn is_item_path(p: &Path) -> bool {
    p.last().is_some_and(|s| is_item(s))
}

/// Whether list item `item` is the one segment `seg` names.
pub(crate) fn item_matches(seg: &str, item: &Value) -> bool {
    if let Some(keys) = seg.strip_prefix("k:") {
        match serde_json::from_str::<Value>(keys) {
            Ok(Value::Object(keys)) => keys.iter().all(|(k, v)| item.get(k) == Some(v)),
            _ => false,
        }
    } else if let Some(v) = seg.strip_prefix("v:") {
        serde_json::from_str::<Value>(v).is_ok_and(|v| &v == item)
    } else {
        false
    }
}

fn child<'a>(cur: &'a Value, seg: &str) -> Option<&'a Value> {
    if is_item(seg) { cur.as_array()?.iter().find(|i| item_matches(seg, i)) } else { cur.get(seg) }
}

/// Leaf paths of an object of type `def` (see the module doc).
fn leaves(v: &Value, def: Option<&str>, prefix: &mut Path, out: &mut BTreeSet<Path>, top: bool) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                if top && matches!(k.as_str(), "apiVersion" | "kind") {
                    continue;
                }
                if prefix.len() == 1 && prefix[0] == "metadata" && SYSTEM_META.contains(&k.as_str()) {
                    continue;
                }
                let child_def = def.and_then(|d| crate::api::schema::field_definition(d, k));
                prefix.push(k.clone());
                match child {
                    Value::Array(items) if !items.is_empty() => {
                        list_leaves(items, def, k, child_def, prefix, out);
                    }
                    _ => leaves(child, child_def, prefix, out, false),
                }
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

fn list_leaves(
    items: &[Value],
    parent_def: Option<&str>,
    field: &str,
    item_def: Option<&str>,
    prefix: &mut Path,
    out: &mut BTreeSet<Path>,
) {
    let strategy = crate::api::patch::strategy::strategy_for(parent_def, field, items.first());
    let segment = |item: &Value| match strategy {
        ListStrategy::MergeByKey(key) => item.get(key).map(|k| format!("k:{}", json!({ key: k }))),
        ListStrategy::MergeScalars if !item.is_object() && !item.is_array() => Some(format!("v:{item}")),
        _ => None,
    };
    let segs: Vec<Option<String>> = items.iter().map(segment).collect();
    if segs.iter().any(|s| s.is_none()) {
        // Atomic, or items without their key: the list is one value.
        out.insert(prefix.clone());
        return;
    }
    for (item, seg) in items.iter().zip(segs.into_iter().flatten()) {
        prefix.push(seg);
        out.insert(prefix.clone());
        if item.is_object() {
            leaves(item, item_def, prefix, out, false);
        }
        prefix.pop();
    }
}

/// The field set of `v`, an object of OpenAPI definition `def`.
pub(crate) fn leaf_set(v: &Value, def: &str) -> BTreeSet<Path> {
    let mut out = BTreeSet::new();
    leaves(v, Some(def), &mut Vec::new(), &mut out, true);
    out
}

pub(crate) fn get_path<'a>(v: &'a Value, p: &Path) -> Option<&'a Value> {
    p.iter().try_fold(v, |cur, k| child(cur, k))
}

/// Parses a `fieldsV1` tree into leaf paths.
fn parse_fields(v: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
    let Some(m) = v.as_object() else { return };
    if is_item_path(prefix) {
        out.insert(prefix.clone());
    }
    let mut has_child = false;
    for (k, child) in m {
        let seg = match k.strip_prefix("f:") {
            Some(name) => name.to_string(),
            None if is_item(k) => k.clone(),
            None => continue,
        };
        has_child = true;
        prefix.push(seg);
        parse_fields(child, prefix, out);
        prefix.pop();
    }
    if !has_child && !prefix.is_empty() {
        out.insert(prefix.clone());
    }
}

/// Renders leaf paths as a `fieldsV1` tree.
fn render_fields(paths: &BTreeSet<Path>) -> Value {
    fn insert(node: &mut Map<String, Value>, path: &[String]) {
        let Some((first, rest)) = path.split_first() else { return };
        let key = if is_item(first) { first.clone() } else { format!("f:{first}") };
        let entry = node.entry(key).or_insert_with(|| json!({}));
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
pub fn record_update(
    next: &mut Value,
    old: Option<&Value>,
    def: &str,
    manager: &str,
    api_version: &str,
    operation: &str,
) {
    if manager.is_empty() {
        return;
    }
    let new_leaves = leaf_set(next, def);
    let changed: BTreeSet<Path> = match old {
        None => new_leaves.clone(),
        Some(o) => {
            let old_leaves = leaf_set(o, def);
            // A list item changes hands only when it is created; its fields are tracked apart.
            let mut c: BTreeSet<Path> =
                new_leaves
                    .iter()
                    .filter(|p| {
                        if is_item_path(p) { get_path(o, p).is_none() } else { get_path(o, p) != get_path(next, p) }
                    })
                    .cloned()
                    .collect();
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
        let remaining: BTreeSet<Path> = set.into_iter().filter(|p| !changed.iter().any(|c| takes(c, p))).collect();
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

/// Whether writing path `c` takes path `p` from its owner: the same field, a field inside it
/// or around it; the existence of a list item is taken only by re-creating the item.
fn takes(c: &Path, p: &Path) -> bool {
    if is_item_path(p) { c == p } else { c == p || c.starts_with(p) || p.starts_with(c) }
}

/// Whether two paths overlap (one is a prefix of the other).
pub(crate) fn overlaps(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// Records a server-side apply by `manager`: it owns exactly the applied fields, which no
/// other manager owns any more.
pub fn record_apply(
    next: &mut Value,
    old: Option<&Value>,
    applied: &Value,
    def: &str,
    manager: &str,
    api_version: &str,
) {
    let applied_leaves: BTreeSet<Path> = leaf_set(applied, def);
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
        // Others keep what still exists and what this apply did not change (co-ownership of
        // equal values); a forced apply takes the fields whose values it changed.
        let remaining: BTreeSet<Path> = set
            .into_iter()
            .filter(|p| {
                let now = get_path(next, p);
                now.is_some()
                    && (is_item_path(p)
                        || !applied_leaves.iter().any(|a| overlaps(a, p))
                        || old.and_then(|o| get_path(o, p)) == now)
            })
            .collect();
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

    const CM: &str = "io.k8s.api.core.v1.ConfigMap";

    #[test]
    fn keyed_lists_are_owned_item_by_item() {
        let pod = json!({"spec": {"containers": [{"name": "a", "image": "x", "args": ["1", "2"]}]}, "metadata": {"finalizers": ["f"]}});
        let set = leaf_set(&pod, "io.k8s.api.core.v1.Pod");
        let p = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Path>();
        let item = r#"k:{"name":"a"}"#;
        assert!(set.contains(&p(&["spec", "containers", item])));
        assert!(set.contains(&p(&["spec", "containers", item, "image"])));
        assert!(set.contains(&p(&["spec", "containers", item, "args"])), "args is atomic: {set:?}");
        assert!(set.contains(&p(&["metadata", "finalizers", r#"v:"f""#])));
        assert_eq!(get_path(&pod, &p(&["spec", "containers", item, "image"])), Some(&json!("x")));
        let rendered = render_fields(&set);
        assert_eq!(rendered["f:spec"]["f:containers"][item]["f:image"], json!({}));
        let mut back = BTreeSet::new();
        parse_fields(&rendered, &mut Vec::new(), &mut back);
        assert_eq!(back, set);
    }

    #[test]
    fn ownership_moves_to_the_writer() {
        let mut a = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "labels": {"a": "1"}}, "data": {"k": "v"}});
        record_update(&mut a, None, CM, "alice", "v1", "Update");
        let mf = &a["metadata"]["managedFields"][0];
        assert_eq!(mf["manager"], "alice");
        assert_eq!(
            mf["fieldsV1"],
            json!({"f:data": {".": {}, "f:k": {}}, "f:metadata": {".": {}, "f:labels": {".": {}, "f:a": {}}}})
        );
        let mut b = a.clone();
        b["data"]["k"] = json!("w");
        record_update(&mut b, Some(&a), CM, "bob", "v1", "Update");
        let mf = b["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(mf.len(), 2);
        assert_eq!(mf[0]["fieldsV1"], json!({"f:metadata": {".": {}, "f:labels": {".": {}, "f:a": {}}}}));
        assert_eq!(mf[1]["manager"], "bob");
        assert_eq!(mf[1]["fieldsV1"], json!({"f:data": {".": {}, "f:k": {}}}));
        assert!(equal_ignoring_times(&b, &b.clone()));
    }
}
