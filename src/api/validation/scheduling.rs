//! Where a pod may run: node selector, affinity, tolerations and topology spread constraints,
//! plus the label selectors they (and PodDisruptionBudgets) hold. Rules, field paths and
//! messages are upstream's (`pkg/apis/core/validation` and apimachinery's label selector
//! validation), for objects being created: label values in selectors and in required node
//! affinity must be valid, as upstream requires unless the old object already broke the rule.
//!
//! Where upstream reports a Go zero value for a missing field (`""` for an operator, `0` for a
//! weight), the same value is reported here.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::api::field_error::FieldError;

use super::kinds::{arr, enum_value, get};
use super::names;

static NULL: Value = Value::Null;

fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
    get(v, ptr).and_then(|s| s.as_str()).unwrap_or("")
}

/// A label key (`ValidateLabelName`).
fn label_name(errs: &mut Vec<FieldError>, field: &str, key: &str) {
    for m in names::qualified_name(key) {
        errs.push(FieldError::invalid(field, json!(key), m));
    }
}

fn label_value(errs: &mut Vec<FieldError>, field: &str, value: &str) {
    for m in names::label_value(value) {
        errs.push(FieldError::invalid(field, json!(value), m));
    }
}

/// A map of labels (`ValidateLabels`): keys and values, all reported at `field`.
pub(super) fn labels(errs: &mut Vec<FieldError>, field: &str, map: Option<&Value>) {
    let Some(map) = map.and_then(|m| m.as_object()) else { return };
    for (k, v) in map {
        label_name(errs, field, k);
        match v.as_str() {
            Some(v) => label_value(errs, field, v),
            None => errs.push(FieldError::invalid(field, v.clone(), "label values must be strings")),
        }
    }
}

/// A label selector (`ValidateLabelSelector`, invalid label values not allowed).
pub(super) fn label_selector(errs: &mut Vec<FieldError>, sel: Option<&Value>, path: &str) {
    let Some(sel) = sel else { return };
    labels(errs, &format!("{path}.matchLabels"), get(sel, "/matchLabels"));
    for (i, req) in arr(sel, "/matchExpressions").iter().enumerate() {
        let p = format!("{path}.matchExpressions[{i}]");
        let values = arr(req, "/values");
        match str_at(req, "/operator") {
            "In" | "NotIn" => in_needs_values(errs, &p, values),
            "Exists" | "DoesNotExist" => exists_forbids_values(errs, &p, values),
            _ => bad_operator(errs, &p, req),
        }
        label_name(errs, &format!("{p}.key"), str_at(req, "/key"));
        for (j, v) in values.iter().enumerate() {
            label_value(errs, &format!("{p}.values[{j}]"), v.as_str().unwrap_or(""));
        }
    }
}

fn in_needs_values(errs: &mut Vec<FieldError>, p: &str, values: &[Value]) {
    if values.is_empty() {
        errs.push(FieldError::required(format!("{p}.values"), "must be specified when `operator` is 'In' or 'NotIn'"));
    }
}

fn exists_forbids_values(errs: &mut Vec<FieldError>, p: &str, values: &[Value]) {
    if !values.is_empty() {
        errs.push(FieldError::forbidden(
            format!("{p}.values"),
            "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
        ));
    }
}

fn bad_operator(errs: &mut Vec<FieldError>, p: &str, req: &Value) {
    let op = get(req, "/operator").cloned().unwrap_or(json!(""));
    errs.push(FieldError::invalid(format!("{p}.operator"), op, "not a valid selector operator"));
}

/// One node selector term: `matchExpressions` on labels, `matchFields` on `metadata.name`.
fn node_selector_term(errs: &mut Vec<FieldError>, term: &Value, allow_invalid_values: bool, path: &str) {
    for (j, req) in arr(term, "/matchExpressions").iter().enumerate() {
        let p = format!("{path}.matchExpressions[{j}]");
        let values = arr(req, "/values");
        match str_at(req, "/operator") {
            "In" | "NotIn" => in_needs_values(errs, &p, values),
            "Exists" | "DoesNotExist" => exists_forbids_values(errs, &p, values),
            "Gt" | "Lt" => {
                if values.len() != 1 {
                    errs.push(FieldError::required(
                        format!("{p}.values"),
                        "must be specified single value when `operator` is 'Lt' or 'Gt'",
                    ));
                }
            }
            _ => bad_operator(errs, &p, req),
        }
        label_name(errs, &format!("{p}.key"), str_at(req, "/key"));
        if !allow_invalid_values {
            for (k, v) in values.iter().enumerate() {
                label_value(errs, &format!("{p}.values[{k}]"), v.as_str().unwrap_or(""));
            }
        }
    }
    for (j, req) in arr(term, "/matchFields").iter().enumerate() {
        let p = format!("{path}.matchFields[{j}]");
        let values = arr(req, "/values");
        match str_at(req, "/operator") {
            "In" | "NotIn" => {
                if values.len() != 1 {
                    errs.push(FieldError::required(
                        format!("{p}.values"),
                        "must be only one value when `operator` is 'In' or 'NotIn' for node field selector",
                    ));
                }
            }
            _ => bad_operator(errs, &p, req),
        }
        let key = str_at(req, "/key");
        if key != "metadata.name" {
            errs.push(FieldError::invalid(format!("{p}.key"), json!(key), "not a valid field selector key"));
        } else {
            for (k, v) in values.iter().enumerate() {
                let v = v.as_str().unwrap_or("");
                for m in names::dns1123_subdomain(v) {
                    errs.push(FieldError::invalid(format!("{p}.values[{k}]"), json!(v), m));
                }
            }
        }
    }
}

fn weight(errs: &mut Vec<FieldError>, field: String, v: Option<&Value>) {
    let w = v.cloned().unwrap_or(json!(0));
    if w.as_i64().is_none_or(|n| !(1..=100).contains(&n)) {
        errs.push(FieldError::invalid(field, w, "must be in the range 1-100"));
    }
}

/// `matchLabelKeys` or `mismatchLabelKeys` of a pod affinity term.
fn label_keys(errs: &mut Vec<FieldError>, path: &str, keys: &[Value], sel: Option<&Value>) {
    if keys.is_empty() {
        return;
    }
    if sel.is_none() {
        errs.push(FieldError::forbidden(path, "must not be specified when labelSelector is not set"));
        return;
    }
    for (i, k) in keys.iter().enumerate() {
        label_name(errs, &format!("{path}[{i}]"), k.as_str().unwrap_or(""));
    }
}

fn pod_affinity_term(errs: &mut Vec<FieldError>, term: &Value, path: &str) {
    let sel = get(term, "/labelSelector");
    label_selector(errs, sel, &format!("{path}.labelSelector"));
    label_selector(errs, get(term, "/namespaceSelector"), &format!("{path}.namespaceSelector"));
    for ns in arr(term, "/namespaces") {
        let ns = ns.as_str().unwrap_or("");
        for m in names::dns1123_label(ns) {
            // Upstream's path is `namespace`, without the s.
            errs.push(FieldError::invalid(format!("{path}.namespace"), json!(ns), m));
        }
    }
    let match_keys = arr(term, "/matchLabelKeys");
    let mismatch_keys = arr(term, "/mismatchLabelKeys");
    label_keys(errs, &format!("{path}.matchLabelKeys"), match_keys, sel);
    label_keys(errs, &format!("{path}.mismatchLabelKeys"), mismatch_keys, sel);
    if let Some(sel) = sel {
        // A key of matchLabelKeys that the selector already names, then names again in an
        // expression. The path is upstream's: the term's, indexed by the key's position.
        let mut seen: HashSet<&str> = get(sel, "/matchLabels")
            .and_then(|m| m.as_object())
            .into_iter()
            .flatten()
            .map(|(k, _)| k.as_str())
            .collect();
        for e in arr(sel, "/matchExpressions") {
            let key = str_at(e, "/key");
            if let Some(i) = match_keys.iter().rposition(|k| k.as_str() == Some(key))
                && seen.contains(key)
            {
                errs.push(FieldError::invalid(
                    format!("{path}[{i}]"),
                    json!(key),
                    "exists in both matchLabelKeys and labelSelector",
                ));
            }
            seen.insert(key);
        }
    }
    for (i, k) in match_keys.iter().enumerate() {
        if mismatch_keys.contains(k) {
            errs.push(FieldError::invalid(
                format!("{path}.matchLabelKeys[{i}]"),
                k.clone(),
                "exists in both matchLabelKeys and mismatchLabelKeys",
            ));
        }
    }
    let topology_key = str_at(term, "/topologyKey");
    if topology_key.is_empty() {
        errs.push(FieldError::required(format!("{path}.topologyKey"), "can not be empty"));
    }
    label_name(errs, &format!("{path}.topologyKey"), topology_key);
}

/// `spec.affinity` (`validateAffinity`).
pub(super) fn affinity(errs: &mut Vec<FieldError>, affinity: Option<&Value>, path: &str) {
    let Some(a) = affinity else { return };
    if let Some(na) = get(a, "/nodeAffinity") {
        let p = format!("{path}.nodeAffinity");
        if let Some(req) = get(na, "/requiredDuringSchedulingIgnoredDuringExecution") {
            let tp = format!("{p}.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms");
            let terms = arr(req, "/nodeSelectorTerms");
            if terms.is_empty() {
                errs.push(FieldError::required(tp.clone(), "must have at least one node selector term"));
            }
            for (i, term) in terms.iter().enumerate() {
                node_selector_term(errs, term, false, &format!("{tp}[{i}]"));
            }
        }
        for (i, t) in arr(na, "/preferredDuringSchedulingIgnoredDuringExecution").iter().enumerate() {
            let tp = format!("{p}.preferredDuringSchedulingIgnoredDuringExecution[{i}]");
            weight(errs, format!("{tp}.weight"), get(t, "/weight"));
            // Preferred terms may name label values no node has: upstream allows any.
            node_selector_term(errs, get(t, "/preference").unwrap_or(&NULL), true, &format!("{tp}.preference"));
        }
    }
    for kind in ["podAffinity", "podAntiAffinity"] {
        let Some(pa) = get(a, &format!("/{kind}")) else { continue };
        let p = format!("{path}.{kind}");
        for (i, t) in arr(pa, "/requiredDuringSchedulingIgnoredDuringExecution").iter().enumerate() {
            pod_affinity_term(errs, t, &format!("{p}.requiredDuringSchedulingIgnoredDuringExecution[{i}]"));
        }
        for (i, t) in arr(pa, "/preferredDuringSchedulingIgnoredDuringExecution").iter().enumerate() {
            let tp = format!("{p}.preferredDuringSchedulingIgnoredDuringExecution[{i}]");
            weight(errs, format!("{tp}.weight"), get(t, "/weight"));
            pod_affinity_term(errs, get(t, "/podAffinityTerm").unwrap_or(&NULL), &format!("{tp}.podAffinityTerm"));
        }
    }
}

const TAINT_EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];

/// `spec.tolerations` (`ValidateTolerations`).
pub(super) fn tolerations(errs: &mut Vec<FieldError>, list: &[Value], path: &str) {
    for (i, t) in list.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let (key, op, value, effect) =
            (str_at(t, "/key"), str_at(t, "/operator"), str_at(t, "/value"), str_at(t, "/effect"));
        if !key.is_empty() {
            label_name(errs, &format!("{p}.key"), key);
        }
        // An empty key with Exists (and no value) matches every taint.
        if key.is_empty() && op != "Exists" {
            errs.push(FieldError::invalid(
                format!("{p}.operator"),
                json!(op),
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            ));
        }
        if get(t, "/tolerationSeconds").is_some() && effect != "NoExecute" {
            errs.push(FieldError::invalid(
                format!("{p}.effect"),
                json!(effect),
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            ));
        }
        match op {
            // An empty operator means Equal. Upstream reports the value at `operator`.
            "Equal" | "" => {
                let problems = names::label_value(value);
                if !problems.is_empty() {
                    errs.push(FieldError::invalid(format!("{p}.operator"), json!(value), problems.join(";")));
                }
            }
            "Exists" => {
                if !value.is_empty() {
                    errs.push(FieldError::invalid(
                        format!("{p}.operator"),
                        json!(value),
                        "value must be empty when `operator` is 'Exists'",
                    ));
                }
            }
            _ => errs.push(FieldError::not_supported(format!("{p}.operator"), json!(op), &["Equal", "Exists"])),
        }
        if !effect.is_empty() {
            enum_value(errs, &format!("{p}.effect"), get(t, "/effect"), TAINT_EFFECTS);
        }
    }
}

/// `spec.topologySpreadConstraints` (`validateTopologySpreadConstraints`).
pub(super) fn topology_spread_constraints(errs: &mut Vec<FieldError>, list: &[Value], path: &str) {
    for (i, c) in list.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let skew = get(c, "/maxSkew").cloned().unwrap_or(json!(0));
        if skew.as_i64().is_none_or(|n| n <= 0) {
            errs.push(FieldError::invalid(format!("{p}.maxSkew"), skew, "must be greater than zero"));
        }
        let key = str_at(c, "/topologyKey");
        if key.is_empty() {
            errs.push(FieldError::required(format!("{p}.topologyKey"), "can not be empty"));
        }
        let when = str_at(c, "/whenUnsatisfiable");
        if !matches!(when, "DoNotSchedule" | "ScheduleAnyway") {
            let v = get(c, "/whenUnsatisfiable").cloned().unwrap_or(json!(""));
            errs.push(FieldError::not_supported(
                format!("{p}.whenUnsatisfiable"),
                v,
                &["DoNotSchedule", "ScheduleAnyway"],
            ));
        }
        // {topologyKey, whenUnsatisfiable} names one kind of constraint.
        if list[i + 1..].iter().any(|o| str_at(o, "/topologyKey") == key && str_at(o, "/whenUnsatisfiable") == when) {
            errs.push(FieldError::duplicate(
                format!("{p}.{{topologyKey, whenUnsatisfiable}}"),
                json!(format!("{{{key}, {when}}}")),
            ));
        }
        if let Some(min) = get(c, "/minDomains") {
            if min.as_i64().is_none_or(|n| n <= 0) {
                errs.push(FieldError::invalid(format!("{p}.minDomains"), min.clone(), "must be greater than zero"));
            }
            if when != "DoNotSchedule" {
                errs.push(FieldError::invalid(
                    format!("{p}.minDomains"),
                    min.clone(),
                    format!("can only use minDomains if whenUnsatisfiable=DoNotSchedule, not {when}"),
                ));
            }
        }
        for policy in ["nodeAffinityPolicy", "nodeTaintsPolicy"] {
            enum_value(errs, &format!("{p}.{policy}"), get(c, &format!("/{policy}")), &["Honor", "Ignore"]);
        }
        let sel = get(c, "/labelSelector");
        let match_keys = arr(c, "/matchLabelKeys");
        if !match_keys.is_empty() {
            let kp = format!("{p}.matchLabelKeys");
            let mut selector_keys = HashSet::new();
            match sel {
                Some(sel) => {
                    if let Some(m) = get(sel, "/matchLabels").and_then(|m| m.as_object()) {
                        selector_keys.extend(m.keys().map(String::as_str));
                    }
                    selector_keys.extend(arr(sel, "/matchExpressions").iter().map(|e| str_at(e, "/key")));
                }
                None => {
                    errs.push(FieldError::forbidden(kp.clone(), "must not be specified when labelSelector is not set"))
                }
            }
            for (j, k) in match_keys.iter().enumerate() {
                let k = k.as_str().unwrap_or("");
                label_name(errs, &format!("{kp}[{j}]"), k);
                if selector_keys.contains(k) {
                    errs.push(FieldError::invalid(
                        format!("{kp}[{j}]"),
                        json!(k),
                        "exists in both matchLabelKeys and labelSelector",
                    ));
                }
            }
        }
        label_selector(errs, sel, &format!("{p}.labelSelector"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(f: impl FnOnce(&mut Vec<FieldError>)) -> Vec<String> {
        let mut errs = Vec::new();
        f(&mut errs);
        errs.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn selectors() {
        let sel = json!({"matchLabels": {"app": "-x"}, "matchExpressions": [
            {"key": "tier", "operator": "In"},
            {"key": "tier", "operator": "Exists", "values": ["a"]},
            {"key": "bad key", "operator": "Gt", "values": ["1"]},
            {"key": "tier", "operator": "NotIn", "values": ["ok", "not ok"]},
        ]});
        let e = run(|errs| label_selector(errs, Some(&sel), "spec.selector"));
        assert_eq!(e.len(), 6, "{e:#?}");
        assert!(
            e[0].starts_with("spec.selector.matchLabels: Invalid value: \"-x\": a valid label must be an empty string")
        );
        assert_eq!(
            e[1],
            "spec.selector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'"
        );
        assert_eq!(
            e[2],
            "spec.selector.matchExpressions[1].values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'"
        );
        assert_eq!(
            e[3],
            "spec.selector.matchExpressions[2].operator: Invalid value: \"Gt\": not a valid selector operator"
        );
        assert!(
            e[4].starts_with(
                "spec.selector.matchExpressions[2].key: Invalid value: \"bad key\": name part must consist"
            )
        );
        assert!(
            e[5].starts_with("spec.selector.matchExpressions[3].values[1]: Invalid value: \"not ok\": a valid label")
        );
    }
}
