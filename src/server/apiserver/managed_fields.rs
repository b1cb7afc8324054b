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

use serde_json::{Map, Value};

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
pub(crate) fn is_item_path(p: &[String]) -> bool {
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

/// Whether field `k` of the object at `prefix` is left out of field sets.
fn skipped(prefix: &[String], k: &str, top: bool) -> bool {
    (top && matches!(k, "apiVersion" | "kind"))
        || (prefix.len() == 1 && prefix[0] == "metadata" && SYSTEM_META.contains(&k))
}

/// Leaf paths of an object of type `def` (see the module doc).
fn leaves(v: &Value, def: Option<&str>, prefix: &mut Path, out: &mut BTreeSet<Path>, top: bool) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                if skipped(prefix, k, top) {
                    continue;
                }
                let pos = Pos::field(def, k);
                prefix.push(k.clone());
                leaves_at(child, pos, prefix, out);
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

/// Where a value sits in its object, which decides how it is walked.
#[derive(Clone, Copy)]
enum Pos<'a> {
    /// A list item (or the whole object) of definition `def`.
    Value(Option<&'a str>),
    /// Field `field` of an object of definition `parent`; `def` is the field's own definition
    /// (its items' for a list). A non-empty list here is walked by its patch strategy.
    Field { parent: Option<&'a str>, field: &'a str, def: Option<&'a str> },
}

impl<'a> Pos<'a> {
    fn field(parent: Option<&'a str>, field: &'a str) -> Self {
        Pos::Field { parent, field, def: parent.and_then(|d| crate::api::schema::field_definition(d, field)) }
    }

    fn def(self) -> Option<&'a str> {
        match self {
            Pos::Value(def) | Pos::Field { def, .. } => def,
        }
    }
}

/// Leaf paths of `v`, found at `pos`.
fn leaves_at(v: &Value, pos: Pos, prefix: &mut Path, out: &mut BTreeSet<Path>) {
    match (pos, v) {
        (Pos::Field { parent, field, def }, Value::Array(items)) if !items.is_empty() => {
            list_leaves(items, parent, field, def, prefix, out)
        }
        _ => leaves(v, pos.def(), prefix, out, false),
    }
}

/// The strategy of a non-empty list field and each item's path segment; `None` when the list
/// is one atomic value (its strategy says so, or an item lacks its key).
fn item_segments(items: &[Value], parent_def: Option<&str>, field: &str) -> Option<(ListStrategy, Vec<String>)> {
    let strategy = crate::api::patch::strategy::strategy_for(parent_def, field, items.first());
    let segment = |item: &Value| match strategy {
        // `key` is a field name from the patch strategies (no character needs escaping); the
        // value prints as compact JSON, as `fieldsV1` spells it.
        ListStrategy::MergeByKey(key) => item.get(key).map(|k| format!("k:{{\"{key}\":{k}}}")),
        ListStrategy::MergeScalars if !item.is_object() && !item.is_array() => Some(format!("v:{item}")),
        _ => None,
    };
    let segs = items.iter().map(segment).collect::<Option<Vec<String>>>()?;
    Some((strategy, segs))
}

fn list_leaves(
    items: &[Value],
    parent_def: Option<&str>,
    field: &str,
    item_def: Option<&str>,
    prefix: &mut Path,
    out: &mut BTreeSet<Path>,
) {
    let Some((_, segs)) = item_segments(items, parent_def, field) else {
        // Atomic, or items without their key: the list is one value.
        out.insert(prefix.clone());
        return;
    };
    for (item, seg) in items.iter().zip(segs) {
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

pub(crate) fn get_path<'a>(v: &'a Value, p: &[String]) -> Option<&'a Value> {
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
    // Sorted paths sharing a first segment are neighbours, so each node of the tree is built
    // once from its run of paths. Paths here are never empty.
    fn node(paths: &[&[String]]) -> Map<String, Value> {
        let mut out = Map::new();
        let mut rest = paths;
        while let Some((first, _)) = rest.first().and_then(|p| p.split_first()) {
            let run = rest.iter().take_while(|p| p.first() == Some(first)).count();
            let inner: Vec<&[String]> = rest[..run].iter().map(|p| &p[1..]).filter(|p| !p.is_empty()).collect();
            let mut child = Map::new();
            if !inner.is_empty() {
                child.insert(".".into(), Value::Object(Map::new()));
                child.extend(node(&inner));
            }
            let key = if is_item(first) { first.clone() } else { format!("f:{first}") };
            out.insert(key, Value::Object(child));
            rest = &rest[run..];
        }
        out
    }
    let paths: Vec<&[String]> = paths.iter().map(Vec::as_slice).filter(|p| !p.is_empty()).collect();
    Value::Object(node(&paths))
}

/// What an update changed: `set` holds the new object's leaves whose value differs from the
/// old object's (and list items that are new), `removed` the old object's leaves that are gone.
#[derive(Default)]
struct Changes {
    set: BTreeSet<Path>,
    removed: BTreeSet<Path>,
}

impl Changes {
    fn is_empty(&self) -> bool {
        self.set.is_empty() && self.removed.is_empty()
    }

    fn iter(&self) -> impl Iterator<Item = &Path> {
        self.set.iter().chain(&self.removed)
    }
}

/// Compares `old` and `new`, both found at `pos`. Both are walked together as long as they
/// have the same shape (objects, or lists merged item by item), so only the parts that differ
/// cost more than a comparison; where the shapes part, the two sides' leaf sets are compared.
fn diff(old: Option<&Value>, new: &Value, pos: Pos, prefix: &mut Path, top: bool, out: &mut Changes) {
    match (old, new) {
        (Some(Value::Object(om)), Value::Object(nm)) if !om.is_empty() && !nm.is_empty() => {
            let def = pos.def();
            for (k, nv) in nm {
                if skipped(prefix, k, top) {
                    continue;
                }
                let child = Pos::field(def, k);
                prefix.push(k.clone());
                diff(om.get(k), nv, child, prefix, false, out);
                prefix.pop();
            }
            for (k, ov) in om {
                if nm.contains_key(k) || skipped(prefix, k, top) {
                    continue;
                }
                let child = Pos::field(def, k);
                prefix.push(k.clone());
                leaves_at(ov, child, prefix, &mut out.removed);
                prefix.pop();
            }
        }
        (Some(Value::Array(oi)), Value::Array(ni)) if !oi.is_empty() && !ni.is_empty() => {
            if let Pos::Field { parent, field, def } = pos
                && let Some((old_strategy, old_segs)) = item_segments(oi, parent, field)
                && let Some((strategy, segs)) = item_segments(ni, parent, field)
                && old_strategy == strategy
            {
                for (item, seg) in ni.iter().zip(&segs) {
                    // The first old item with the same key, as a path lookup would find it.
                    let before = old_segs.iter().position(|s| s == seg).map(|i| &oi[i]);
                    prefix.push(seg.clone());
                    if before.is_none() {
                        out.set.insert(prefix.clone());
                    }
                    if item.is_object() {
                        diff(before, item, Pos::Value(def), prefix, false, out);
                    }
                    prefix.pop();
                }
                for (item, seg) in oi.iter().zip(old_segs) {
                    if segs.contains(&seg) {
                        continue;
                    }
                    prefix.push(seg);
                    out.removed.insert(prefix.clone());
                    if item.is_object() {
                        leaves(item, def, prefix, &mut out.removed, false);
                    }
                    prefix.pop();
                }
            } else {
                compare_leaves(old, new, pos, prefix, out);
            }
        }
        _ => compare_leaves(old, new, pos, prefix, out),
    }
}

/// [`diff`] where the two sides differ in shape: compares their leaf sets.
fn compare_leaves(old: Option<&Value>, new: &Value, pos: Pos, prefix: &mut Path, out: &mut Changes) {
    let top = prefix.is_empty();
    let collect = |v: &Value, prefix: &mut Path| {
        let mut set = BTreeSet::new();
        if top {
            leaves(v, pos.def(), prefix, &mut set, true);
        } else {
            leaves_at(v, pos, prefix, &mut set);
        }
        set
    };
    let base = prefix.len();
    let now = collect(new, prefix);
    let before = old.map(|o| collect(o, prefix)).unwrap_or_default();
    for p in &now {
        let rel = &p[base..];
        let was = old.and_then(|o| get_path(o, rel));
        // A list item changes hands only when it is created; its fields are tracked apart.
        let changed = if is_item_path(p) { was.is_none() } else { was != get_path(new, rel) };
        if changed {
            out.set.insert(p.clone());
        }
    }
    out.removed.extend(before.difference(&now).cloned());
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
    let changes = match old {
        None => Changes { set: leaf_set(next, def), removed: BTreeSet::new() },
        Some(o) => {
            let mut c = Changes::default();
            diff(Some(o), next, Pos::Value(Some(def)), &mut Vec::new(), true, &mut c);
            c
        }
    };
    let mut entries: Vec<Value> = old
        .and_then(|o| meta::meta(o))
        .and_then(|m| m.get("managedFields"))
        .and_then(|m| m.as_array())
        .cloned()
        .unwrap_or_default();
    if changes.is_empty() && old.is_some() {
        meta::set_meta(next, "managedFields", Value::Array(entries));
        return;
    }
    let mut mine = BTreeSet::new();
    let mut kept = Vec::new();
    for mut e in entries.drain(..) {
        let m = e.get("manager").and_then(|m| m.as_str()).unwrap_or("");
        let op = e.get("operation").and_then(|m| m.as_str()).unwrap_or("");
        let own = m == manager && op == operation;
        // Most writes touch a corner of the object (a status, a label); another manager's
        // entry elsewhere is kept as it is, without parsing its field set.
        let untouched = |f: &Value| has_fields(f) && !changes.iter().any(|c| may_take(f, c));
        if !own && e.get("fieldsV1").is_some_and(untouched) {
            kept.push(e);
            continue;
        }
        let mut set = BTreeSet::new();
        if let Some(f) = e.get("fieldsV1") {
            parse_fields(f, &mut Vec::new(), &mut set);
        }
        if own {
            mine = set;
            continue;
        }
        // Changed and removed fields are taken from whoever owned them.
        let owned = set.len();
        let remaining: BTreeSet<Path> = set.into_iter().filter(|p| !changes.iter().any(|c| takes(c, p))).collect();
        if remaining.is_empty() {
            continue;
        }
        if remaining.len() < owned {
            e["fieldsV1"] = render_fields(&remaining);
        }
        kept.push(e);
    }
    mine.retain(|p| !changes.removed.contains(p));
    mine.extend(changes.set);
    if !mine.is_empty() {
        kept.push(entry(manager, operation, api_version, render_fields(&mine)));
    }
    if kept.is_empty() {
        meta::meta_mut(next).remove("managedFields");
    } else {
        meta::set_meta(next, "managedFields", Value::Array(kept));
    }
}

/// A `managedFields` entry. Built as a map: `json!` would copy the field tree.
fn entry(manager: &str, operation: &str, api_version: &str, fields: Value) -> Value {
    let mut e = Map::new();
    e.insert("manager".into(), manager.into());
    e.insert("operation".into(), operation.into());
    e.insert("apiVersion".into(), api_version.into());
    e.insert("time".into(), meta::now_rfc3339().into());
    e.insert("fieldsType".into(), "FieldsV1".into());
    e.insert("fieldsV1".into(), fields);
    Value::Object(e)
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

/// Whether a `fieldsV1` tree names any field (an empty one is dropped on the next write).
fn has_fields(fields: &Value) -> bool {
    fields.as_object().is_some_and(|m| m.keys().any(|k| k.starts_with("f:") || is_item(k)))
}

/// Whether writing path `c` may take a path of the `fieldsV1` tree `fields` from its owner
/// (see [`takes`]), found by walking the tree along `c` instead of parsing all of it. False
/// only when nothing can be taken.
fn may_take(fields: &Value, c: &Path) -> bool {
    let mut node = fields;
    for (depth, seg) in c.iter().enumerate() {
        let Some(m) = node.as_object() else { return false };
        let next = if is_item(seg) { m.get(seg.as_str()) } else { m.get(format!("f:{seg}").as_str()) };
        match next {
            Some(n) => node = n,
            // `c` lies inside a field owned as a whole (a leaf that is not a list item).
            None => return depth > 0 && !has_fields(node) && !is_item(&c[depth - 1]),
        }
    }
    // `c` itself, or fields inside it, are in the set.
    true
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
        out.push(entry(manager, "Apply", api_version, render_fields(&applied_leaves)));
    }
    if out.is_empty() {
        meta::meta_mut(next).remove("managedFields");
    } else {
        meta::set_meta(next, "managedFields", Value::Array(out));
    }
}

/// Whether two objects are equal apart from managedFields timestamps and resourceVersion.
pub fn equal_ignoring_times(a: &Value, b: &Value) -> bool {
    /// Equal maps, but for the keys `skip` leaves out and values `eq` compares.
    fn maps_equal(
        a: &Map<String, Value>,
        b: &Map<String, Value>,
        skip: &str,
        eq: impl Fn(&str, &Value, &Value) -> bool,
    ) -> bool {
        let len = |m: &Map<String, Value>| m.len() - usize::from(m.contains_key(skip));
        len(a) == len(b) && a.iter().filter(|(k, _)| *k != skip).all(|(k, v)| b.get(k).is_some_and(|w| eq(k, v, w)))
    }
    fn entries_equal(a: &Value, b: &Value) -> bool {
        match (a.as_array(), b.as_array()) {
            (Some(x), Some(y)) => {
                x.len() == y.len()
                    && x.iter().zip(y).all(|(e, f)| match (e.as_object(), f.as_object()) {
                        (Some(e), Some(f)) => maps_equal(e, f, "time", |_, v, w| v == w),
                        _ => e == f,
                    })
            }
            _ => a == b,
        }
    }
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else { return a == b };
    maps_equal(a, b, "", |k, v, w| match (k, v.as_object(), w.as_object()) {
        ("metadata", Some(m), Some(n)) => {
            maps_equal(
                m,
                n,
                "resourceVersion",
                |k, v, w| {
                    if k == "managedFields" { entries_equal(v, w) } else { v == w }
                },
            )
        }
        _ => v == w,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(segs: &[&str]) -> Path {
        segs.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn rendered_field_sets_parse_back_to_themselves() {
        let item = r#"k:{"name":"a"}"#;
        let paths: BTreeSet<Path> = [
            p(&["metadata", "labels", "app"]),
            p(&["metadata", "labels", "f:odd"]),
            p(&["spec", "containers", item]),
            p(&["spec", "containers", item, "image"]),
            p(&["spec", "containers", item, "ports", r#"k:{"containerPort":80}"#]),
            p(&["spec", "finalizers", r#"v:"x""#]),
            p(&["spec", "replicas"]),
        ]
        .into_iter()
        .collect();
        let tree = render_fields(&paths);
        assert_eq!(tree["f:spec"]["f:containers"][item]["."], json!({}));
        assert_eq!(tree["f:metadata"]["f:labels"]["f:f:odd"], json!({}));
        let mut back = BTreeSet::new();
        parse_fields(&tree, &mut Vec::new(), &mut back);
        assert_eq!(back, paths);
    }

    #[test]
    fn only_entries_a_change_cannot_reach_are_skipped() {
        let item = r#"k:{"name":"a"}"#;
        let owned: BTreeSet<Path> = [
            p(&["spec", "containers", item]),
            p(&["spec", "containers", item, "image"]),
            p(&["spec", "template"]),
            p(&["metadata", "labels", "app"]),
        ]
        .into_iter()
        .collect();
        let tree = render_fields(&owned);
        let changes = [
            p(&["status", "phase"]),
            p(&["spec", "containers", item, "image"]),
            p(&["spec", "containers", item]),
            p(&["spec", "containers", item, "args"]),
            p(&["spec", "containers", r#"k:{"name":"b"}"#]),
            p(&["spec", "template", "spec", "x"]),
            p(&["spec"]),
            p(&["metadata", "labels", "other"]),
            p(&["metadata", "labels", "app", "deeper"]),
        ];
        for c in &changes {
            let taken = owned.iter().any(|o| takes(c, o));
            assert!(may_take(&tree, c) || !taken, "{c:?} takes a field but was judged harmless");
        }
        // The point of the shortcut: writes elsewhere do not look inside.
        assert!(!may_take(&tree, &p(&["status", "phase"])));
        assert!(!may_take(&tree, &p(&["spec", "containers", item, "args"])));
        assert!(!may_take(&tree, &p(&["metadata", "labels", "other"])));
        assert!(may_take(&tree, &p(&["spec", "template", "spec", "x"])));
    }

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

    /// The change set by definition: every leaf of `new` whose value is not the same in `old`
    /// (list items: that did not exist), and every leaf of `old` that `new` lacks.
    fn changes_by_definition(old: &Value, new: &Value, def: &str) -> BTreeSet<Path> {
        let (before, now) = (leaf_set(old, def), leaf_set(new, def));
        let mut c: BTreeSet<Path> = now
            .iter()
            .filter(|p| if is_item_path(p) { get_path(old, p).is_none() } else { get_path(old, p) != get_path(new, p) })
            .cloned()
            .collect();
        c.extend(before.difference(&now).cloned());
        c
    }

    #[test]
    fn the_walk_finds_exactly_the_changed_fields() {
        const POD: &str = "io.k8s.api.core.v1.Pod";
        let base = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "d", "resourceVersion": "5", "labels": {"app": "a"},
                "finalizers": ["x"], "ownerReferences": [{"uid": "u1", "kind": "ReplicaSet", "name": "r", "controller": true}]},
            "spec": {"containers": [{"name": "a", "image": "i:1", "args": ["1"], "ports": [{"containerPort": 80}],
                "resources": {"requests": {"cpu": "10m"}}}], "tolerations": [{"key": "k"}], "affinity": {}},
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}]},
        });
        type Edit = fn(&mut Value);
        let edits: Vec<(&str, Edit)> = vec![
            ("bind", |v| v["spec"]["nodeName"] = json!("n1")),
            ("condition added", |v| {
                v["status"]["conditions"].as_array_mut().unwrap().push(json!({"type": "Ready", "status": "True"}))
            }),
            ("condition changed", |v| v["status"]["conditions"][0]["status"] = json!("False")),
            ("status gone", |v| {
                v.as_object_mut().unwrap().remove("status");
            }),
            ("image", |v| v["spec"]["containers"][0]["image"] = json!("i:2")),
            ("container added", |v| {
                v["spec"]["containers"].as_array_mut().unwrap().push(json!({"name": "b", "image": "j"}))
            }),
            ("container renamed", |v| v["spec"]["containers"][0]["name"] = json!("z")),
            ("list turns atomic", |v| {
                v["spec"]["containers"].as_array_mut().unwrap().push(json!({"image": "no name"}))
            }),
            ("scalar becomes object", |v| v["status"]["phase"] = json!({"a": 1})),
            ("empty object filled", |v| v["spec"]["affinity"] = json!({"nodeAffinity": {}})),
            ("finalizer swapped", |v| v["metadata"]["finalizers"] = json!(["y", "x"])),
            ("owner changed", |v| v["metadata"]["ownerReferences"][0]["controller"] = json!(false)),
            ("label removed", |v| {
                v["metadata"]["labels"].as_object_mut().unwrap().remove("app");
            }),
            ("args emptied", |v| v["spec"]["containers"][0]["args"] = json!([])),
            ("tolerations replaced", |v| v["spec"]["tolerations"] = json!([{"key": "k", "effect": "NoSchedule"}])),
            ("system fields only", |v| v["metadata"]["resourceVersion"] = json!("6")),
        ];
        for (what, edit) in &edits {
            let mut edited = base.clone();
            edit(&mut edited);
            for (old, new) in [(&base, &edited), (&edited, &base)] {
                let mut c = Changes::default();
                diff(Some(old), new, Pos::Value(Some(POD)), &mut Vec::new(), true, &mut c);
                let now = leaf_set(new, POD);
                assert!(c.set.is_subset(&now), "{what}: {:?} are not leaves of the new object", c.set.difference(&now));
                assert!(c.removed.is_disjoint(&now), "{what}: removed leaves still present");
                let found: BTreeSet<Path> = c.iter().cloned().collect();
                assert_eq!(found, changes_by_definition(old, new, POD), "{what}");
            }
        }
    }

    #[test]
    fn equality_ignores_only_times_and_the_resource_version() {
        let a = json!({"metadata": {"name": "x", "resourceVersion": "1",
            "managedFields": [{"manager": "m", "time": "2020-01-01T00:00:00Z"}]}, "data": {"k": "v"}});
        let mut b = a.clone();
        b["metadata"]["resourceVersion"] = json!("2");
        b["metadata"]["managedFields"][0]["time"] = json!("2021-01-01T00:00:00Z");
        assert!(equal_ignoring_times(&a, &b));
        b.as_object_mut().unwrap()["metadata"].as_object_mut().unwrap().remove("resourceVersion");
        assert!(equal_ignoring_times(&a, &b));
        let mut c = b.clone();
        c["metadata"]["managedFields"][0]["manager"] = json!("n");
        assert!(!equal_ignoring_times(&a, &c));
        let mut d = b.clone();
        d["data"]["k"] = json!("w");
        assert!(!equal_ignoring_times(&a, &d));
        let mut e = b.clone();
        e["metadata"]["labels"] = json!({});
        assert!(!equal_ignoring_times(&a, &e));
    }
}
