//! Conversion between the served versions of a resource that share one storage version.
//!
//! Like upstream, each resource is stored in exactly one version and every other version it is
//! served in is converted on the way in and out, so all versions see the same objects:
//!
//! - HorizontalPodAutoscalers are stored as `autoscaling/v2` and also served as
//!   `autoscaling/v1`. What v1 cannot express (metrics other than CPU utilization, behavior,
//!   conditions) travels in the `autoscaling.alpha.kubernetes.io/*` annotations, as upstream
//!   does, so a v1 read-modify-write keeps it.
//! - Events are stored as core `v1` and also served as `events.k8s.io/v1`, whose fields are
//!   renames of the core ones.
//!
//! Every other resource is served only in its storage version and passes through unchanged.
//! Conversion is total: an object of an unexpected shape is converted as far as it goes and
//! never rejected here (validation is elsewhere).

use serde_json::{Map, Value, json};

use crate::api::registry::{self, ResourceInfo};

const METRICS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/metrics";
const CURRENT_METRICS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/current-metrics";
const CONDITIONS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/conditions";
const BEHAVIOR_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/behavior";

/// Field renames between core/v1 Events (left) and events.k8s.io/v1 Events (right).
const EVENT_RENAMES: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("reportingComponent", "reportingController"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
];

/// The version a resource is stored in, when it is not the version itself.
pub fn storage_version(info: &ResourceInfo) -> Option<&'static ResourceInfo> {
    match (info.group, info.version, info.plural) {
        ("autoscaling", "v1", "horizontalpodautoscalers") => registry::lookup("autoscaling", "v2", info.plural),
        ("events.k8s.io", "v1", "events") => registry::lookup("", "v1", "events"),
        _ => None,
    }
}

/// Whether objects of this resource version differ from their stored form.
pub fn converts(info: &ResourceInfo) -> bool {
    storage_version(info).is_some()
}

/// Converts an object of `info`'s version to its storage version.
pub fn to_storage(info: &ResourceInfo, mut obj: Value) -> Value {
    let Some(stored) = storage_version(info) else { return obj };
    if !obj.is_object() {
        return obj;
    }
    match info.group {
        "autoscaling" => hpa_v1_to_v2(&mut obj),
        _ => rename_fields(&mut obj, |(core, new)| (new, core)),
    }
    obj["apiVersion"] = json!(stored.api_version());
    crate::api::defaults::apply_defaults(stored, &mut obj);
    obj
}

/// Converts a stored object to `info`'s version.
pub fn from_storage(info: &ResourceInfo, mut obj: Value) -> Value {
    if !converts(info) || !obj.is_object() {
        return obj;
    }
    match info.group {
        "autoscaling" => hpa_v2_to_v1(&mut obj),
        _ => rename_fields(&mut obj, |(core, new)| (core, new)),
    }
    obj["apiVersion"] = json!(info.api_version());
    obj
}

/// Moves each top-level field `from` to `to` for every pair `pick` yields as (from, to).
fn rename_fields(obj: &mut Value, pick: impl Fn((&'static str, &'static str)) -> (&'static str, &'static str)) {
    let Some(m) = obj.as_object_mut() else { return };
    for &pair in EVENT_RENAMES {
        let (from, to) = pick(pair);
        if let Some(v) = m.remove(from) {
            m.insert(to.into(), v);
        }
    }
}

fn annotations(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    obj.pointer_mut("/metadata/annotations").and_then(|a| a.as_object_mut())
}

/// Removes an annotation and parses its JSON value.
fn take_annotation(obj: &mut Value, key: &str) -> Option<Value> {
    let anns = annotations(obj)?;
    let raw = anns.remove(key)?;
    if anns.is_empty()
        && let Some(m) = obj.get_mut("metadata").and_then(|m| m.as_object_mut())
    {
        m.remove("annotations");
    }
    raw.as_str().and_then(|s| serde_json::from_str(s).ok())
}

fn put_annotation(obj: &mut Value, key: &str, value: &Value) {
    let Some(meta) = obj.as_object_mut().map(|m| m.entry("metadata").or_insert_with(|| json!({}))) else { return };
    let Some(meta) = meta.as_object_mut() else { return };
    let anns = meta.entry("annotations").or_insert_with(|| json!({}));
    if let Some(a) = anns.as_object_mut() {
        a.insert(key.into(), json!(value.to_string()));
    }
}

fn is_cpu_utilization(metric: &Value) -> bool {
    metric.get("type").and_then(|t| t.as_str()) == Some("Resource")
        && metric.pointer("/resource/name").and_then(|n| n.as_str()) == Some("cpu")
        && metric.pointer("/resource/target/averageUtilization").is_some_and(|u| u.is_i64())
}

/// The CPU metric v1 names first, then the metrics the annotation carried; None when empty.
fn cpu_first(cpu: Option<Value>, annotated: Option<Value>) -> Option<Value> {
    let mut list: Vec<Value> = cpu.into_iter().collect();
    if let Some(Value::Array(more)) = annotated {
        list.extend(more);
    }
    (!list.is_empty()).then_some(Value::Array(list))
}

fn hpa_v1_to_v2(obj: &mut Value) {
    let extra_metrics = take_annotation(obj, METRICS_ANNOTATION);
    let current_metrics = take_annotation(obj, CURRENT_METRICS_ANNOTATION);
    let conditions = take_annotation(obj, CONDITIONS_ANNOTATION);
    let behavior = take_annotation(obj, BEHAVIOR_ANNOTATION);
    if let Some(spec) = obj.get_mut("spec").and_then(|s| s.as_object_mut()) {
        let cpu = spec.remove("targetCPUUtilizationPercentage").filter(|v| !v.is_null()).map(|cpu| {
            json!({"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": cpu}}})
        });
        if let Some(metrics) = cpu_first(cpu, extra_metrics) {
            spec.insert("metrics".into(), metrics);
        }
        if let Some(b) = behavior {
            spec.insert("behavior".into(), b);
        }
    }
    if let Some(status) = obj.get_mut("status").and_then(|s| s.as_object_mut()) {
        let cpu = status.remove("currentCPUUtilizationPercentage").filter(|v| !v.is_null()).map(
            |cpu| json!({"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": cpu}}}),
        );
        if let Some(current) = cpu_first(cpu, current_metrics) {
            status.insert("currentMetrics".into(), current);
        }
        if let Some(c) = conditions {
            status.insert("conditions".into(), c);
        }
    }
}

fn hpa_v2_to_v1(obj: &mut Value) {
    let mut extra_metrics = Vec::new();
    let mut behavior = None;
    if let Some(spec) = obj.get_mut("spec").and_then(|s| s.as_object_mut()) {
        if let Some(Value::Array(metrics)) = spec.remove("metrics") {
            let mut cpu = None;
            for m in metrics {
                if cpu.is_none() && is_cpu_utilization(&m) {
                    cpu = m.pointer("/resource/target/averageUtilization").cloned();
                } else {
                    extra_metrics.push(m);
                }
            }
            if let Some(c) = cpu {
                spec.insert("targetCPUUtilizationPercentage".into(), c);
            }
        }
        behavior = spec.remove("behavior");
    }
    let mut extra_current = Vec::new();
    let mut conditions = None;
    if let Some(status) = obj.get_mut("status").and_then(|s| s.as_object_mut()) {
        if let Some(Value::Array(current)) = status.remove("currentMetrics") {
            let mut cpu = None;
            for m in current {
                let is_cpu = m.get("type").and_then(|t| t.as_str()) == Some("Resource")
                    && m.pointer("/resource/name").and_then(|n| n.as_str()) == Some("cpu");
                match m.pointer("/resource/current/averageUtilization") {
                    Some(u) if is_cpu && cpu.is_none() => cpu = Some(u.clone()),
                    _ => extra_current.push(m),
                }
            }
            if let Some(c) = cpu {
                status.insert("currentCPUUtilizationPercentage".into(), c);
            }
        }
        conditions = status.remove("conditions").filter(|c| c.as_array().is_some_and(|a| !a.is_empty()));
    }
    if !extra_metrics.is_empty() {
        put_annotation(obj, METRICS_ANNOTATION, &Value::Array(extra_metrics));
    }
    if !extra_current.is_empty() {
        put_annotation(obj, CURRENT_METRICS_ANNOTATION, &Value::Array(extra_current));
    }
    if let Some(c) = conditions {
        put_annotation(obj, CONDITIONS_ANNOTATION, &c);
    }
    if let Some(b) = behavior {
        put_annotation(obj, BEHAVIOR_ANNOTATION, &b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::registry::lookup;

    #[test]
    fn autoscaler_v1_round_trips_through_v2() {
        let v1 = lookup("autoscaling", "v1", "horizontalpodautoscalers").unwrap();
        let obj = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "web"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web", "apiVersion": "apps/v1"}, "minReplicas": 2, "maxReplicas": 5, "targetCPUUtilizationPercentage": 70},
            "status": {"currentReplicas": 2, "desiredReplicas": 2, "currentCPUUtilizationPercentage": 40}});
        let stored = to_storage(v1, obj.clone());
        assert_eq!(stored["apiVersion"], "autoscaling/v2");
        assert_eq!(
            stored["spec"]["metrics"],
            json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}])
        );
        assert_eq!(stored["status"]["currentMetrics"][0]["resource"]["current"]["averageUtilization"], 40);
        assert_eq!(from_storage(v1, stored), obj);
    }

    #[test]
    fn what_v1_cannot_say_travels_in_annotations() {
        let v1 = lookup("autoscaling", "v1", "horizontalpodautoscalers").unwrap();
        let stored = json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "web"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 1, "maxReplicas": 5,
                "metrics": [
                    {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}},
                    {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}}],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}},
            "status": {"currentReplicas": 1, "desiredReplicas": 1, "conditions": [{"type": "AbleToScale", "status": "True"}]}});
        let served = from_storage(v1, stored.clone());
        assert_eq!(served["spec"]["targetCPUUtilizationPercentage"], 60);
        assert!(served["spec"].get("metrics").is_none());
        let anns = served["metadata"]["annotations"].as_object().unwrap();
        assert_eq!(anns.len(), 3, "{anns:?}");
        // A v1 client writing the object back keeps everything.
        let back = to_storage(v1, served);
        assert_eq!(back["spec"]["behavior"], stored["spec"]["behavior"]);
        assert_eq!(back["status"]["conditions"], stored["status"]["conditions"]);
        let metrics = back["spec"]["metrics"].as_array().unwrap();
        assert_eq!(metrics.len(), 2);
        assert!(metrics.contains(&stored["spec"]["metrics"][0]) && metrics.contains(&stored["spec"]["metrics"][1]));
        assert!(back["metadata"].get("annotations").is_none());
    }

    #[test]
    fn events_rename_between_groups() {
        let new = lookup("events.k8s.io", "v1", "events").unwrap();
        let obj = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"}, "eventTime": "2024-01-01T00:00:00.000000Z",
            "regarding": {"kind": "Pod", "name": "p"}, "note": "hi", "reason": "Started", "type": "Normal",
            "reportingController": "skiff", "reportingInstance": "box", "action": "Start"});
        let stored = to_storage(new, obj.clone());
        assert_eq!(stored["apiVersion"], "v1");
        assert_eq!(stored["involvedObject"]["name"], "p");
        assert_eq!(stored["message"], "hi");
        assert_eq!(stored["reportingComponent"], "skiff");
        assert_eq!(from_storage(new, stored), obj);
        let core = lookup("", "v1", "events").unwrap();
        assert!(!converts(core));
        assert_eq!(to_storage(core, obj.clone()), obj);
    }
}
