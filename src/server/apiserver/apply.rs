//! Server-side apply: merging an applied configuration into the live object, with conflict
//! detection against other field managers and removal of fields the applier dropped.
//!
//! Field sets are tracked per field and per list item, see `managed_fields`.

use serde_json::{Value, json};

use crate::api::meta;
use crate::api::patch;
use crate::api::patch::strategy::ListStrategy;
use crate::api::registry::ResourceInfo;
use crate::api::status::{ApiError, StatusCause, StatusDetails};

use super::managed_fields::{self, Path};

/// A path as upstream prints it in conflicts: `.spec.containers[name="a"].image`.
fn path_string(p: &Path) -> String {
    p.iter()
        .map(|s| {
            if let Some(keys) = s.strip_prefix("k:") {
                let fields = match serde_json::from_str::<Value>(keys) {
                    Ok(Value::Object(m)) => m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
                    _ => keys.to_string(),
                };
                format!("[{fields}]")
            } else if let Some(v) = s.strip_prefix("v:") {
                format!("[={v}]")
            } else {
                format!(".{s}")
            }
        })
        .collect()
}

fn child_mut<'a>(cur: &'a mut Value, seg: &str) -> Option<&'a mut Value> {
    if managed_fields::is_item(seg) {
        cur.as_array_mut()?.iter_mut().find(|i| managed_fields::item_matches(seg, i))
    } else {
        cur.get_mut(seg)
    }
}

fn get_path_mut<'a>(v: &'a mut Value, p: &[String]) -> Option<&'a mut Value> {
    p.iter().try_fold(v, |cur, k| child_mut(cur, k))
}

/// The definition of the object at `path` below a root definition, when the schemas know it.
fn definition_at(root: &'static str, path: &[String]) -> Option<&'static str> {
    path.iter().try_fold(root, |def, field| crate::api::schema::field_definition(def, field))
}

fn remove_path(v: &mut Value, p: &Path) {
    let Some((last, parents)) = p.split_last() else { return };
    let Some(parent) = get_path_mut(v, parents) else { return };
    if managed_fields::is_item(last) {
        if let Some(items) = parent.as_array_mut() {
            items.retain(|i| !managed_fields::item_matches(last, i));
        }
    } else if let Some(m) = parent.as_object_mut() {
        m.remove(last);
    }
}

/// The object after applying `applied` as `manager`, or a 409 listing conflicts.
pub fn merge_applied(
    info: &ResourceInfo,
    current: &Value,
    applied: &Value,
    manager: &str,
    _api_version: &str,
    force: bool,
) -> Result<Value, ApiError> {
    let applied_leaves = managed_fields::leaf_set(applied, info.definition);
    let entries = managed_fields::entries(current);
    let mut conflicts: Vec<(String, String, Path)> = Vec::new();
    for (m, op, av, set) in &entries {
        if m == manager && op == "Apply" {
            continue;
        }
        // Owning a list item's existence never conflicts: both managers want the item.
        for owned in set.iter().filter(|p| !managed_fields::is_item_path(p)) {
            for a in
                applied_leaves.iter().filter(|a| !managed_fields::is_item_path(a) && managed_fields::overlaps(a, owned))
            {
                let want = managed_fields::get_path(applied, a);
                let have = managed_fields::get_path(current, a);
                if want != have && !conflicts.iter().any(|(cm, _, cp)| cm == m && cp == a) {
                    conflicts.push((m.clone(), av.clone(), a.clone()));
                }
            }
        }
    }
    if !conflicts.is_empty() && !force {
        let causes: Vec<StatusCause> = conflicts
            .iter()
            .map(|(m, av, p)| StatusCause {
                reason: "FieldManagerConflict".into(),
                message: format!("conflict with \"{m}\" using {av}"),
                field: path_string(p),
            })
            .collect();
        let summary = if causes.len() == 1 {
            format!("Apply failed with 1 conflict: {}: {}", causes[0].message, causes[0].field)
        } else {
            let lines: Vec<String> = causes.iter().map(|c| format!("{}: {}", c.message, c.field)).collect();
            format!("Apply failed with {} conflicts: {}", causes.len(), lines.join("\n"))
        };
        let mut e = ApiError::new(409, "Conflict", summary);
        e.details = Some(Box::new(StatusDetails { causes, ..Default::default() }));
        return Err(e);
    }
    // Fields this manager applied before but no longer does are removed, unless someone else
    // also owns them.
    let mut base = current.clone();
    if let Some((_, _, _, previous)) = entries.iter().find(|(m, op, _, _)| m == manager && op == "Apply") {
        for p in previous.iter().filter(|p| !applied_leaves.contains(*p)) {
            // Someone else owning the field, or anything inside it, keeps it.
            let shared = entries
                .iter()
                .any(|(m, op, _, set)| !(m == manager && op == "Apply") && set.iter().any(|q| q.starts_with(p)));
            if !shared {
                remove_path(&mut base, p);
            }
        }
    }
    let mut merged = patch::strategic_merge_patch(&base, applied, info.definition).map_err(ApiError::from)?;
    // Lists only this manager owns hold exactly the items it applies: an item it dropped from
    // its configuration is removed (merging alone would keep it).
    let previous = entries.iter().find(|(m, op, _, _)| m == manager && op == "Apply").map(|e| &e.3);
    for p in applied_leaves.iter().filter(|p| previous.is_some_and(|prev| prev.contains(*p))) {
        let owned_by_others = entries.iter().any(|(m, op, _, set)| {
            !(m == manager && op == "Apply") && set.iter().any(|o| managed_fields::overlaps(o, p))
        });
        if owned_by_others {
            continue;
        }
        let Some(Value::Array(wanted)) = managed_fields::get_path(applied, p).cloned() else { continue };
        let parent_def = definition_at(info.definition, &p[..p.len() - 1]);
        let field = p.last().map(String::as_str).unwrap_or("");
        let strategy = crate::api::patch::strategy::strategy_for(parent_def, field, wanted.first());
        if let Some(Value::Array(list)) = get_path_mut(&mut merged, p) {
            match strategy {
                ListStrategy::MergeByKey(key) => {
                    let keys: Vec<&Value> = wanted.iter().filter_map(|w| w.get(key)).collect();
                    list.retain(|item| item.get(key).is_some_and(|k| keys.contains(&k)));
                }
                ListStrategy::MergeScalars => list.retain(|item| wanted.contains(item)),
                ListStrategy::Replace => {}
            }
        }
    }
    if meta::resource_version(applied).is_empty() {
        meta::meta_mut(&mut merged).remove("resourceVersion");
    } else {
        meta::set_meta(&mut merged, "resourceVersion", json!(meta::resource_version(applied)));
    }
    Ok(merged)
}
