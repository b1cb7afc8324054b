//! Per-kind validation rules and immutable fields for the common kinds.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::api::field_error::FieldError;
use crate::api::registry::ResourceInfo;
use crate::api::selector::LabelSelector;

use super::names;

fn get<'a>(v: &'a Value, ptr: &str) -> Option<&'a Value> {
    v.pointer(ptr).filter(|x| !x.is_null())
}

fn arr<'a>(v: &'a Value, ptr: &str) -> &'a [Value] {
    v.pointer(ptr).and_then(|a| a.as_array()).map(|a| a.as_slice()).unwrap_or(&[])
}

fn port_range(errs: &mut Vec<FieldError>, field: String, v: Option<&Value>, required: bool) {
    match v {
        None if required => errs.push(FieldError::required(field, "")),
        None => {}
        Some(p) => match p.as_i64() {
            Some(n) if (1..=65535).contains(&n) => {}
            _ => errs.push(FieldError::invalid(field, p.clone(), "must be between 1 and 65535, inclusive")),
        },
    }
}

fn enum_value(errs: &mut Vec<FieldError>, field: &str, v: Option<&Value>, allowed: &[&str]) {
    if let Some(v) = v
        && !v.as_str().is_some_and(|s| allowed.contains(&s))
    {
        errs.push(FieldError::not_supported(field, v.clone(), allowed));
    }
}

fn non_negative(errs: &mut Vec<FieldError>, field: &str, v: Option<&Value>) {
    if let Some(v) = v
        && v.as_i64().is_none_or(|n| n < 0)
    {
        errs.push(FieldError::invalid(field, v.clone(), "must be greater than or equal to 0"));
    }
}

/// Validates a pod spec at `path` (e.g. `spec` or `spec.template.spec`).
fn pod_spec(spec: Option<&Value>, path: &str, errs: &mut Vec<FieldError>) {
    let Some(spec) = spec else {
        errs.push(FieldError::required(path.to_string(), ""));
        return;
    };
    let containers = arr(spec, "/containers");
    if containers.is_empty() {
        errs.push(FieldError::required(format!("{path}.containers"), ""));
    }
    let mut seen = HashSet::new();
    for (key, list) in [("initContainers", arr(spec, "/initContainers")), ("containers", containers)] {
        for (i, c) in list.iter().enumerate() {
            let f = format!("{path}.{key}[{i}]");
            match c.get("name").and_then(|n| n.as_str()) {
                None | Some("") => errs.push(FieldError::required(format!("{f}.name"), "")),
                Some(n) => {
                    for p in names::dns1123_label(n) {
                        errs.push(FieldError::invalid(format!("{f}.name"), json!(n), p));
                    }
                    if !seen.insert(n.to_string()) {
                        errs.push(FieldError::duplicate(format!("{f}.name"), json!(n)));
                    }
                }
            }
            if c.get("image").and_then(|n| n.as_str()).is_none_or(|s| s.trim().is_empty()) {
                errs.push(FieldError::required(format!("{f}.image"), ""));
            }
            let mut port_names = HashSet::new();
            for (j, p) in arr(c, "/ports").iter().enumerate() {
                port_range(errs, format!("{f}.ports[{j}].containerPort"), p.get("containerPort"), true);
                if let Some(hp) = p.get("hostPort").filter(|h| h.as_i64() != Some(0)) {
                    port_range(errs, format!("{f}.ports[{j}].hostPort"), Some(hp), false);
                }
                enum_value(errs, &format!("{f}.ports[{j}].protocol"), p.get("protocol"), &["SCTP", "TCP", "UDP"]);
                if let Some(n) = p.get("name").and_then(|n| n.as_str()) {
                    for e in names::port_name(n) {
                        errs.push(FieldError::invalid(format!("{f}.ports[{j}].name"), json!(n), e));
                    }
                    if !port_names.insert(n.to_string()) {
                        errs.push(FieldError::duplicate(format!("{f}.ports[{j}].name"), json!(n)));
                    }
                }
            }
            enum_value(
                errs,
                &format!("{f}.imagePullPolicy"),
                c.get("imagePullPolicy"),
                &["Always", "IfNotPresent", "Never"],
            );
        }
    }
    let mut vols = HashSet::new();
    for (i, v) in arr(spec, "/volumes").iter().enumerate() {
        match v.get("name").and_then(|n| n.as_str()) {
            None | Some("") => errs.push(FieldError::required(format!("{path}.volumes[{i}].name"), "")),
            Some(n) => {
                for p in names::dns1123_label(n) {
                    errs.push(FieldError::invalid(format!("{path}.volumes[{i}].name"), json!(n), p));
                }
                if !vols.insert(n.to_string()) {
                    errs.push(FieldError::duplicate(format!("{path}.volumes[{i}].name"), json!(n)));
                }
            }
        }
    }
    enum_value(errs, &format!("{path}.restartPolicy"), spec.get("restartPolicy"), &["Always", "OnFailure", "Never"]);
    enum_value(
        errs,
        &format!("{path}.dnsPolicy"),
        spec.get("dnsPolicy"),
        &["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"],
    );
    non_negative(errs, &format!("{path}.terminationGracePeriodSeconds"), spec.get("terminationGracePeriodSeconds"));
}

/// Workloads: a selector that matches the template's labels, replicas ≥ 0, a valid template.
fn workload(obj: &Value, errs: &mut Vec<FieldError>, selector_required: bool) {
    non_negative(errs, "spec.replicas", get(obj, "/spec/replicas"));
    let labels = get(obj, "/spec/template/metadata/labels").and_then(|l| l.as_object());
    match get(obj, "/spec/selector") {
        None if selector_required => errs.push(FieldError::required("spec.selector", "")),
        None => {}
        Some(sel) => match LabelSelector::from_json(sel) {
            Err(e) => errs.push(FieldError::invalid("spec.selector", sel.clone(), e.to_string())),
            Ok(s) if s.is_empty() => {
                errs.push(FieldError::invalid("spec.selector", sel.clone(), "empty selector is invalid for deployment"))
            }
            Ok(s) => {
                if !s.matches(labels) {
                    errs.push(FieldError::invalid(
                        "spec.template.metadata.labels",
                        json!(labels),
                        "`selector` does not match template `labels`",
                    ));
                }
            }
        },
    }
    pod_spec(get(obj, "/spec/template/spec"), "spec.template.spec", errs);
}

fn service(obj: &Value, errs: &mut Vec<FieldError>) {
    let t = get(obj, "/spec/type").and_then(|t| t.as_str()).unwrap_or("ClusterIP");
    enum_value(errs, "spec.type", get(obj, "/spec/type"), &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"]);
    let headless = get(obj, "/spec/clusterIP").and_then(|c| c.as_str()) == Some("None");
    let ports = arr(obj, "/spec/ports");
    if t == "ExternalName" {
        let name = get(obj, "/spec/externalName").and_then(|n| n.as_str()).unwrap_or("");
        if name.is_empty() {
            errs.push(FieldError::required("spec.externalName", ""));
        }
    } else if ports.is_empty() && !headless {
        errs.push(FieldError::required("spec.ports", ""));
    }
    let mut seen_names = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let f = format!("spec.ports[{i}]");
        match p.get("name").and_then(|n| n.as_str()) {
            Some(n) if !n.is_empty() => {
                for e in names::dns1123_label(n) {
                    errs.push(FieldError::invalid(format!("{f}.name"), json!(n), e));
                }
                if !seen_names.insert(n.to_string()) {
                    errs.push(FieldError::duplicate(format!("{f}.name"), json!(n)));
                }
            }
            _ if ports.len() > 1 => errs.push(FieldError::required(format!("{f}.name"), "")),
            _ => {}
        }
        port_range(errs, format!("{f}.port"), p.get("port"), true);
        enum_value(errs, &format!("{f}.protocol"), p.get("protocol"), &["SCTP", "TCP", "UDP"]);
        match p.get("targetPort") {
            Some(Value::String(s)) => {
                for e in names::port_name(s) {
                    errs.push(FieldError::invalid(format!("{f}.targetPort"), json!(s), e));
                }
            }
            Some(tp @ Value::Number(_)) => port_range(errs, format!("{f}.targetPort"), Some(tp), false),
            _ => {}
        }
        if let Some(np) = p.get("nodePort").filter(|n| !n.is_null())
            && t != "NodePort"
            && t != "LoadBalancer"
            && np.as_i64() != Some(0)
        {
            errs.push(FieldError::forbidden(format!("{f}.nodePort"), "may not be used when `type` is 'ClusterIP'"));
        }
    }
    enum_value(errs, "spec.sessionAffinity", get(obj, "/spec/sessionAffinity"), &["ClientIP", "None"]);
}

fn data_keys(obj: &Value, errs: &mut Vec<FieldError>, fields: &[&str]) {
    let mut total = 0usize;
    let mut seen = HashSet::new();
    for field in fields {
        if let Some(m) = obj.get(*field).and_then(|d| d.as_object()) {
            for (k, v) in m {
                for e in names::config_key(k) {
                    errs.push(FieldError::invalid(format!("{field}[{k}]"), json!(k), e));
                }
                if !seen.insert(k.clone()) {
                    errs.push(FieldError::invalid(
                        format!("{field}[{k}]"),
                        json!(k),
                        "duplicate of key present in data",
                    ));
                }
                total += v.as_str().map(|s| s.len()).unwrap_or(0);
            }
        }
    }
    if total > 1024 * 1024 {
        errs.push(FieldError::too_long(fields[0].to_string(), 1024 * 1024));
    }
}

/// Per-kind rules for create (and, with `immutable`, update).
pub fn validate(info: &ResourceInfo, obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    match (info.group, info.plural) {
        ("", "pods") => pod_spec(get(obj, "/spec"), "spec", &mut errs),
        ("", "podtemplates") => pod_spec(get(obj, "/template/spec"), "template.spec", &mut errs),
        ("apps", "deployments" | "replicasets" | "daemonsets" | "statefulsets") => workload(obj, &mut errs, true),
        ("", "replicationcontrollers") => workload(obj, &mut errs, false),
        ("batch", "jobs") => {
            pod_spec(get(obj, "/spec/template/spec"), "spec.template.spec", &mut errs);
            enum_value(
                &mut errs,
                "spec.template.spec.restartPolicy",
                get(obj, "/spec/template/spec/restartPolicy"),
                &["OnFailure", "Never"],
            );
            for k in ["parallelism", "completions", "backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished"]
            {
                non_negative(&mut errs, &format!("spec.{k}"), get(obj, &format!("/spec/{k}")));
            }
        }
        ("batch", "cronjobs") => {
            let sched = get(obj, "/spec/schedule").and_then(|s| s.as_str()).unwrap_or("");
            if sched.is_empty() {
                errs.push(FieldError::required("spec.schedule", ""));
            } else if !valid_schedule(sched) {
                errs.push(FieldError::invalid("spec.schedule", json!(sched), "unparseable schedule"));
            }
            enum_value(
                &mut errs,
                "spec.concurrencyPolicy",
                get(obj, "/spec/concurrencyPolicy"),
                &["Allow", "Forbid", "Replace"],
            );
            pod_spec(
                get(obj, "/spec/jobTemplate/spec/template/spec"),
                "spec.jobTemplate.spec.template.spec",
                &mut errs,
            );
        }
        ("", "services") => service(obj, &mut errs),
        ("", "configmaps") => data_keys(obj, &mut errs, &["data", "binaryData"]),
        ("", "secrets") => data_keys(obj, &mut errs, &["data"]),
        ("coordination.k8s.io", "leases") => {
            non_negative(&mut errs, "spec.leaseDurationSeconds", get(obj, "/spec/leaseDurationSeconds"));
        }
        ("rbac.authorization.k8s.io", "roles" | "clusterroles") => {
            for (i, r) in arr(obj, "/rules").iter().enumerate() {
                if arr(r, "/verbs").is_empty() {
                    errs.push(FieldError::required(
                        format!("rules[{i}].verbs"),
                        "verbs must contain at least one value",
                    ));
                }
            }
        }
        ("rbac.authorization.k8s.io", "rolebindings" | "clusterrolebindings") => {
            if get(obj, "/roleRef/name").and_then(|n| n.as_str()).is_none_or(str::is_empty) {
                errs.push(FieldError::required("roleRef.name", ""));
            }
            enum_value(&mut errs, "roleRef.kind", get(obj, "/roleRef/kind"), &["ClusterRole", "Role"]);
        }
        _ => {}
    }
    errs
}

/// Five cron fields (or a `@` macro), each made of numbers, names, `*`, `?`, `/`, `-` and `,`.
fn valid_schedule(s: &str) -> bool {
    let s = s.trim();
    let s = s
        .strip_prefix("TZ=")
        .or_else(|| s.strip_prefix("CRON_TZ="))
        .map(|r| r.split_once(' ').map(|x| x.1).unwrap_or(""))
        .unwrap_or(s);
    if let Some(m) = s.strip_prefix('@') {
        return matches!(m, "yearly" | "annually" | "monthly" | "weekly" | "daily" | "midnight" | "hourly")
            || m.starts_with("every ");
    }
    let fields: Vec<&str> = s.split_whitespace().collect();
    fields.len() == 5 && fields.iter().all(|f| f.chars().all(|c| c.is_ascii_alphanumeric() || "*?/-,".contains(c)))
}

/// Fields an update may not change.
pub fn immutable(info: &ResourceInfo, new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let same = |ptr: &str| new.pointer(ptr) == old.pointer(ptr);
    let mut check = |ptr: &str, field: &str| {
        if !same(ptr) {
            errs.push(FieldError::invalid(
                field,
                new.pointer(ptr).cloned().unwrap_or(Value::Null),
                "field is immutable",
            ));
        }
    };
    match (info.group, info.plural) {
        ("apps", "deployments" | "replicasets" | "daemonsets" | "statefulsets") => {
            check("/spec/selector", "spec.selector")
        }
        ("batch", "jobs") => {
            check("/spec/selector", "spec.selector");
            check("/spec/completionMode", "spec.completionMode");
        }
        ("", "services") => {
            let t_new = new.pointer("/spec/type").and_then(|t| t.as_str()).unwrap_or("ClusterIP");
            let t_old = old.pointer("/spec/type").and_then(|t| t.as_str()).unwrap_or("ClusterIP");
            if t_new != "ExternalName" && t_old != "ExternalName" {
                check("/spec/clusterIP", "spec.clusterIPs[0]");
            }
        }
        ("", "configmaps" | "secrets") => {
            if old.get("immutable").and_then(|i| i.as_bool()) == Some(true) {
                if !same("/data") || !same("/binaryData") {
                    errs.push(FieldError::forbidden("data", "field is immutable when `immutable` is set"));
                }
                if !same("/immutable") {
                    errs.push(FieldError::forbidden("immutable", "field is immutable when `immutable` is set"));
                }
            }
            if info.plural == "secrets" && !same("/type") {
                errs.push(FieldError::invalid(
                    "type",
                    new.get("type").cloned().unwrap_or(Value::Null),
                    "field is immutable",
                ));
            }
        }
        ("", "pods") => {
            // Only images, activeDeadlineSeconds, tolerations and scheduling gates may change.
            let strip = |v: &Value| -> Value {
                let mut s = v.pointer("/spec").cloned().unwrap_or(Value::Null);
                if let Some(m) = s.as_object_mut() {
                    for k in ["activeDeadlineSeconds", "tolerations", "schedulingGates", "nodeName"] {
                        m.remove(k);
                    }
                    for key in ["containers", "initContainers"] {
                        if let Some(Value::Array(cs)) = m.get_mut(key) {
                            for c in cs.iter_mut().filter_map(|c| c.as_object_mut()) {
                                c.remove("image");
                            }
                        }
                    }
                }
                s
            };
            if strip(new) != strip(old) {
                errs.push(FieldError::forbidden(
                    "spec",
                    "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
                ));
            }
            let old_node = old.pointer("/spec/nodeName").and_then(|n| n.as_str()).unwrap_or("");
            if !old_node.is_empty() && !same("/spec/nodeName") {
                errs.push(FieldError::invalid(
                    "spec.nodeName",
                    json!(new.pointer("/spec/nodeName")),
                    "field is immutable",
                ));
            }
        }
        ("", "persistentvolumeclaims") => {
            let strip = |v: &Value| -> Value {
                let mut s = v.pointer("/spec").cloned().unwrap_or(Value::Null);
                if let Some(m) = s.as_object_mut() {
                    m.remove("resources");
                    m.remove("volumeAttributesClassName");
                    m.remove("volumeName");
                }
                s
            };
            if strip(new) != strip(old) {
                errs.push(FieldError::forbidden("spec", "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims"));
            }
        }
        ("rbac.authorization.k8s.io", "rolebindings" | "clusterrolebindings") => check("/roleRef", "roleRef"),
        _ => {}
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::registry::lookup;

    #[test]
    fn deployment_selector_must_match() {
        let d = lookup("apps", "v1", "deployments").unwrap();
        let obj = json!({"metadata": {"name": "x"}, "spec": {"selector": {"matchLabels": {"app": "a"}}, "template": {"metadata": {"labels": {"app": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let e = validate(d, &obj);
        assert_eq!(e.len(), 1);
        assert_eq!(
            e[0].to_string(),
            "spec.template.metadata.labels: Invalid value: {\"app\":\"b\"}: `selector` does not match template `labels`"
        );
        let mut changed = obj.clone();
        changed["spec"]["selector"]["matchLabels"]["app"] = json!("c");
        assert_eq!(
            immutable(d, &changed, &obj)[0].to_string(),
            "spec.selector: Invalid value: {\"matchLabels\":{\"app\":\"c\"}}: field is immutable"
        );
    }

    #[test]
    fn services_and_pods() {
        let s = lookup("", "v1", "services").unwrap();
        let e = validate(s, &json!({"spec": {"ports": [{"port": 70000}]}}));
        assert_eq!(
            e[0].to_string(),
            "spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive"
        );
        let p = lookup("", "v1", "pods").unwrap();
        let e = validate(
            p,
            &json!({"spec": {"containers": [{"name": "a"}, {"name": "a", "image": "x"}], "restartPolicy": "Sometimes"}}),
        );
        let text: Vec<String> = e.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            text,
            [
                "spec.containers[0].image: Required value",
                "spec.containers[1].name: Duplicate value: \"a\"",
                "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
            ]
        );
        assert!(valid_schedule("*/5 * * * *"));
        assert!(valid_schedule("@hourly"));
        assert!(!valid_schedule("every minute"));
    }
}
