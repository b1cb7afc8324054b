//! Strategic merge patch: a merge patch in which lists with a merge key merge item by item,
//! with upstream's `$patch`, `$retainKeys`, `$deleteFromPrimitiveList` and `$setElementOrder`
//! directives.

use serde_json::{Map, Value};

use super::PatchError;
use super::strategy::{ListStrategy, strategy_for};
use crate::api::schema::field_definition;

/// The type being patched, when known.
type Def = Option<&'static str>;

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const DELETE_PRIMITIVE: &str = "$deleteFromPrimitiveList/";
const SET_ORDER: &str = "$setElementOrder/";

/// Applies a strategic merge patch to `doc`. `definition` names the root type (its OpenAPI
/// definition); lists then merge exactly as their Go types say.
pub fn strategic_merge_patch(doc: &Value, patch: &Value, definition: &str) -> Result<Value, PatchError> {
    let Some(p) = patch.as_object() else {
        return Err(PatchError::Malformed("the patch is not a JSON object".into()));
    };
    let base = doc.as_object().cloned().unwrap_or_default();
    let def = crate::api::registry::RESOURCES.iter().find(|r| r.definition == definition).map(|r| r.definition);
    match merge_map(base, p, def)? {
        Some(m) => Ok(Value::Object(m)),
        None => Ok(Value::Object(Map::new())),
    }
}

/// Merges `patch` into `base`; `None` means the whole map is deleted (`$patch: delete`).
fn merge_map(
    mut base: Map<String, Value>,
    patch: &Map<String, Value>,
    def: Def,
) -> Result<Option<Map<String, Value>>, PatchError> {
    match patch.get(DIRECTIVE).map(|d| d.as_str()) {
        Some(Some("delete")) => return Ok(None),
        Some(Some("replace")) => {
            let mut out = patch.clone();
            strip_directives(&mut out);
            return Ok(Some(out));
        }
        Some(Some("merge")) | None => {}
        Some(other) => {
            return Err(PatchError::Malformed(format!("unknown patch type: {}", other.unwrap_or("<non-string>"))));
        }
    }
    let mut orders: Vec<(String, Vec<Value>)> = Vec::new();
    for (k, v) in patch {
        if k == DIRECTIVE || k == RETAIN_KEYS {
            continue;
        }
        if let Some(field) = k.strip_prefix(SET_ORDER) {
            if let Some(a) = v.as_array() {
                orders.push((field.to_string(), a.clone()));
            }
            continue;
        }
        if let Some(field) = k.strip_prefix(DELETE_PRIMITIVE) {
            let del = v.as_array().ok_or_else(|| PatchError::Malformed(format!("{k} must be a list")))?;
            if let Some(Value::Array(list)) = base.get_mut(field) {
                list.retain(|item| !del.contains(item));
            }
            continue;
        }
        if v.is_null() {
            base.remove(k);
            continue;
        }
        let child = def.and_then(|d| field_definition(d, k));
        let merged = match (base.remove(k), v) {
            (Some(Value::Object(b)), Value::Object(pm)) => merge_map(b, pm, child)?.map(Value::Object),
            (None, Value::Object(pm)) => merge_map(Map::new(), pm, child)?.map(Value::Object),
            (Some(Value::Array(b)), Value::Array(pl)) => Some(Value::Array(merge_list(k, b, pl, def)?)),
            (None, Value::Array(pl)) => Some(Value::Array(merge_list(k, Vec::new(), pl, def)?)),
            (_, other) => Some(other.clone()),
        };
        if let Some(m) = merged {
            base.insert(k.clone(), m);
        }
    }
    if let Some(Value::Array(keep)) = patch.get(RETAIN_KEYS) {
        let keep: Vec<&str> = keep.iter().filter_map(|k| k.as_str()).collect();
        base.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (field, order) in orders {
        if let Some(Value::Array(list)) = base.get_mut(&field) {
            let strategy = strategy_for(def, &field, list.first());
            reorder(strategy, list, &order);
        }
    }
    Ok(Some(base))
}

fn strip_directives(m: &mut Map<String, Value>) {
    m.retain(|k, _| !k.starts_with('$'));
}

fn merge_list(field: &str, base: Vec<Value>, patch: &[Value], parent: Def) -> Result<Vec<Value>, PatchError> {
    let sample = patch.iter().find(|v| v.is_object() && v.get(DIRECTIVE).is_none()).or(base.first());
    let strategy = strategy_for(parent, field, sample);
    let item_def = parent.and_then(|d| field_definition(d, field));
    // A `{"$patch": "replace"}` item replaces the whole list with the other items.
    if patch.iter().any(|p| p.get(DIRECTIVE).and_then(|d| d.as_str()) == Some("replace")) {
        return Ok(patch.iter().filter(|p| p.get(DIRECTIVE).is_none()).cloned().collect());
    }
    match strategy {
        ListStrategy::Replace => Ok(patch.iter().map(|v| strip_value(v.clone())).collect()),
        ListStrategy::MergeScalars => {
            let mut out = base;
            for v in patch {
                if !out.contains(v) {
                    out.push(v.clone());
                }
            }
            Ok(out)
        }
        ListStrategy::MergeByKey(key) => {
            let mut out = base;
            for item in patch {
                let Some(pm) = item.as_object() else {
                    return Err(PatchError::Malformed(format!(
                        "list {field} merges by {key:?} but an item is not an object"
                    )));
                };
                let k = pm.get(key).cloned().ok_or_else(|| {
                    PatchError::Malformed(format!("map: {item} does not contain declared merge key: {key}"))
                })?;
                let pos = out.iter().position(|b| b.get(key) == Some(&k));
                let delete = pm.get(DIRECTIVE).and_then(|d| d.as_str()) == Some("delete");
                match (pos, delete) {
                    (Some(i), true) => {
                        out.remove(i);
                    }
                    (None, true) => {}
                    (Some(i), false) => {
                        let b = out[i].as_object().cloned().unwrap_or_default();
                        match merge_map(b, pm, item_def)? {
                            Some(m) => out[i] = Value::Object(m),
                            None => {
                                out.remove(i);
                            }
                        }
                    }
                    (None, false) => {
                        if let Some(m) = merge_map(Map::new(), pm, item_def)? {
                            out.push(Value::Object(m));
                        }
                    }
                }
            }
            Ok(out)
        }
    }
}

fn strip_value(v: Value) -> Value {
    match v {
        Value::Object(mut m) => {
            strip_directives(&mut m);
            Value::Object(m.into_iter().map(|(k, v)| (k, strip_value(v))).collect())
        }
        other => other,
    }
}

/// Orders a merged list as `$setElementOrder` says; items not named keep their place after.
fn reorder(strategy: ListStrategy, list: &mut Vec<Value>, order: &[Value]) {
    let key = match strategy {
        ListStrategy::MergeByKey(k) => Some(k),
        ListStrategy::MergeScalars => None,
        ListStrategy::Replace => return,
    };
    let ident = |v: &Value| -> Value {
        match key {
            Some(k) => v.get(k).cloned().unwrap_or(Value::Null),
            None => v.clone(),
        }
    };
    let mut sorted = Vec::with_capacity(list.len());
    for o in order {
        let want = ident(o);
        if let Some(i) = list.iter().position(|v| ident(v) == want) {
            sorted.push(list.remove(i));
        }
    }
    sorted.append(list);
    *list = sorted;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const D: &str = "io.k8s.api.apps.v1.Deployment";

    fn dep() -> Value {
        json!({"metadata": {"name": "web", "finalizers": ["a"]}, "spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": "busybox:1", "env": [{"name": "A", "value": "1"}]},
            {"name": "side", "image": "busybox:1"}
        ]}}}})
    }

    #[test]
    fn containers_merge_by_name() {
        let p = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "busybox:2", "env": [{"name": "B", "value": "2"}]}]}}}});
        let out = strategic_merge_patch(&dep(), &p, D).unwrap();
        let c = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(c[0]["image"], "busybox:2");
        assert_eq!(c[0]["env"], json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]));
        assert_eq!(c[1]["name"], "side");
    }

    #[test]
    fn lists_follow_their_types() {
        // EndpointSlice endpoints are atomic and their addresses are plain strings.
        let slice = json!({"endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": true}}]});
        let p = json!({"endpoints": [{"addresses": ["10.0.0.2"]}]});
        let out = strategic_merge_patch(&slice, &p, "io.k8s.api.discovery.v1.EndpointSlice").unwrap();
        assert_eq!(out["endpoints"], json!([{"addresses": ["10.0.0.2"]}]));
        // Service ports merge by port, tolerations are replaced.
        let svc = json!({"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}]}});
        let p = json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}]}});
        let out = strategic_merge_patch(&svc, &p, "io.k8s.api.core.v1.Service").unwrap();
        assert_eq!(
            out["spec"]["ports"],
            json!([{"port": 80, "name": "http", "targetPort": 8080}, {"port": 443, "name": "https"}])
        );
        let pod = json!({"spec": {"tolerations": [{"key": "a"}], "containers": [{"name": "c", "ports": [{"containerPort": 1}]}]}});
        let p = json!({"spec": {"tolerations": [{"key": "b"}], "containers": [{"name": "c", "ports": [{"containerPort": 2}]}]}});
        let out = strategic_merge_patch(&pod, &p, "io.k8s.api.core.v1.Pod").unwrap();
        assert_eq!(out["spec"]["tolerations"], json!([{"key": "b"}]));
        assert_eq!(out["spec"]["containers"][0]["ports"], json!([{"containerPort": 1}, {"containerPort": 2}]));
    }

    #[test]
    fn directives() {
        let p = json!({"spec": {"template": {"spec": {"containers": [{"name": "side", "$patch": "delete"}]}}}, "metadata": {"finalizers": ["b"]}});
        let out = strategic_merge_patch(&dep(), &p, D).unwrap();
        assert_eq!(out["spec"]["template"]["spec"]["containers"].as_array().unwrap().len(), 1);
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b"]));
        let p = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}});
        assert_eq!(strategic_merge_patch(&dep(), &p, D).unwrap()["metadata"]["finalizers"], json!([]));
        let p = json!({"spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "side"}, {"name": "app"}]}}}});
        assert_eq!(
            strategic_merge_patch(&dep(), &p, D).unwrap()["spec"]["template"]["spec"]["containers"][0]["name"],
            "side"
        );
        let s = json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
        let p = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
        assert_eq!(strategic_merge_patch(&s, &p, D).unwrap()["spec"]["strategy"], json!({"type": "Recreate"}));
        let p = json!({"metadata": {"name": null}});
        assert!(strategic_merge_patch(&dep(), &p, D).unwrap()["metadata"].get("name").is_none());
        assert!(
            strategic_merge_patch(
                &dep(),
                &json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}),
                ""
            )
            .is_err()
        );
    }
}
