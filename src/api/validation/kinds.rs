//! Per-kind validation rules and immutable fields for the common kinds.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::api::cron::{Schedule, parse_time_zone};
use crate::api::field_error::FieldError;
use crate::api::registry::ResourceInfo;
use crate::api::selector::LabelSelector;

use super::{names, scheduling};

pub(super) fn get<'a>(v: &'a Value, ptr: &str) -> Option<&'a Value> {
    v.pointer(ptr).filter(|x| !x.is_null())
}

pub(super) fn arr<'a>(v: &'a Value, ptr: &str) -> &'a [Value] {
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

pub(super) fn enum_value(errs: &mut Vec<FieldError>, field: &str, v: Option<&Value>, allowed: &[&str]) {
    if let Some(v) = v
        && !v.as_str().is_some_and(|s| allowed.contains(&s))
    {
        errs.push(FieldError::not_supported(field, v.clone(), allowed));
    }
}

pub(super) fn non_negative(errs: &mut Vec<FieldError>, field: &str, v: Option<&Value>) {
    if let Some(v) = v
        && v.as_i64().is_none_or(|n| n < 0)
    {
        errs.push(FieldError::invalid(field, v.clone(), "must be greater than or equal to 0"));
    }
}

/// Runs `check` on `new`; on update, drops the errors `check` also finds in the stored `old`,
/// so that objects stored before a rule existed stay updatable while they keep the offending
/// value (upstream ratchets invalid label values in selectors and node affinity this way).
fn ratchet(errs: &mut Vec<FieldError>, new: &Value, old: Option<&Value>, check: impl Fn(&Value, &mut Vec<FieldError>)) {
    let mut found = Vec::new();
    check(new, &mut found);
    if let Some(old) = old
        && !found.is_empty()
    {
        let mut before = Vec::new();
        check(old, &mut before);
        found.retain(|e| !before.contains(e));
    }
    errs.extend(found);
}

/// Where the pod may run: node selector, affinity, spread, tolerations, priority class.
fn pod_scheduling(spec: &Value, path: &str, errs: &mut Vec<FieldError>) {
    scheduling::labels(errs, &format!("{path}.nodeSelector"), get(spec, "/nodeSelector"));
    scheduling::affinity(errs, get(spec, "/affinity"), &format!("{path}.affinity"));
    scheduling::topology_spread_constraints(
        errs,
        arr(spec, "/topologySpreadConstraints"),
        &format!("{path}.topologySpreadConstraints"),
    );
    scheduling::tolerations(errs, arr(spec, "/tolerations"), &format!("{path}.tolerations"));
    if let Some(pc) = get(spec, "/priorityClassName").and_then(|p| p.as_str()).filter(|p| !p.is_empty()) {
        for e in names::dns1123_subdomain(pc) {
            errs.push(FieldError::invalid(format!("{path}.priorityClassName"), json!(pc), e));
        }
    }
}

/// Validates a pod spec at `path` (e.g. `spec` or `spec.template.spec`); `old` is the stored
/// object's pod spec on update.
fn pod_spec(spec: Option<&Value>, old: Option<&Value>, path: &str, errs: &mut Vec<FieldError>) {
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
    ratchet(errs, spec, old, |s, e| pod_scheduling(s, path, e));
    non_negative(errs, &format!("{path}.terminationGracePeriodSeconds"), spec.get("terminationGracePeriodSeconds"));
}

/// A Job's spec at `path` (`spec`, or `spec.jobTemplate.spec` in a CronJob).
fn job_spec(spec: Option<&Value>, old: Option<&Value>, path: &str, errs: &mut Vec<FieldError>) {
    let spec = spec.unwrap_or(&Value::Null);
    let old = old.and_then(|o| get(o, "/template/spec"));
    pod_spec(get(spec, "/template/spec"), old, &format!("{path}.template.spec"), errs);
    enum_value(
        errs,
        &format!("{path}.template.spec.restartPolicy"),
        get(spec, "/template/spec/restartPolicy"),
        &["OnFailure", "Never"],
    );
    for k in ["parallelism", "completions", "backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished"] {
        non_negative(errs, &format!("{path}.{k}"), get(spec, &format!("/{k}")));
    }
}

/// The cronjob controller names Jobs `<cronjob>-<11 digits>`, and Job names stop at 63.
const CRONJOB_NAME_MAX: usize = 52;

/// A CronJob, as `ValidateCronJobCreate`/`ValidateCronJobUpdate` check it. On update a schedule
/// may keep a `TZ=` it already had, and an unchanged time zone is not checked again.
fn cronjob(obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    let sched = get(obj, "/spec/schedule").and_then(|s| s.as_str()).unwrap_or("");
    let time_zone = get(obj, "/spec/timeZone");
    if sched.is_empty() {
        errs.push(FieldError::required("spec.schedule", ""));
    } else {
        if let Err(e) = Schedule::parse(sched) {
            errs.push(FieldError::invalid("spec.schedule", json!(sched), e.to_string()));
        }
        let tz_allowed =
            old.and_then(|o| get(o, "/spec/schedule")).and_then(|s| s.as_str()).is_some_and(|s| s.contains("TZ"));
        if sched.contains("TZ") {
            if !tz_allowed {
                errs.push(FieldError::invalid(
                    "spec.schedule",
                    json!(sched),
                    "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
                ));
            } else if time_zone.is_some() {
                errs.push(FieldError::invalid(
                    "spec.schedule",
                    json!(sched),
                    "cannot use both timeZone field and TZ or CRON_TZ in schedule",
                ));
            }
        }
    }
    non_negative(errs, "spec.startingDeadlineSeconds", get(obj, "/spec/startingDeadlineSeconds"));
    if old.is_none_or(|o| get(o, "/spec/timeZone") != time_zone) {
        cronjob_time_zone(time_zone, errs);
    }
    enum_value(errs, "spec.concurrencyPolicy", get(obj, "/spec/concurrencyPolicy"), &["Allow", "Forbid", "Replace"]);
    let old_spec = old.and_then(|o| get(o, "/spec/jobTemplate/spec"));
    job_spec(get(obj, "/spec/jobTemplate/spec"), old_spec, "spec.jobTemplate.spec", errs);
    if let Some(sel) = get(obj, "/spec/jobTemplate/spec/selector") {
        errs.push(FieldError::invalid(
            "spec.jobTemplate.spec.selector",
            sel.clone(),
            "`selector` will be auto-generated",
        ));
    }
    if let Some(manual @ Value::Bool(true)) = get(obj, "/spec/jobTemplate/spec/manualSelector") {
        errs.push(FieldError::not_supported("spec.jobTemplate.spec.manualSelector", manual.clone(), &["nil", "false"]));
    }
    for k in ["successfulJobsHistoryLimit", "failedJobsHistoryLimit"] {
        non_negative(errs, &format!("spec.{k}"), get(obj, &format!("/spec/{k}")));
    }
    let name = get(obj, "/metadata/name").and_then(|n| n.as_str()).unwrap_or("");
    if old.is_none() && name.len() > CRONJOB_NAME_MAX {
        errs.push(FieldError::invalid(
            "metadata.name",
            json!(name),
            format!("must be no more than {CRONJOB_NAME_MAX} characters"),
        ));
    }
}

/// `spec.timeZone`: an IANA name, as upstream's `validateTimeZone` checks it.
fn cronjob_time_zone(tz: Option<&Value>, errs: &mut Vec<FieldError>) {
    let Some(tz) = tz.and_then(|t| t.as_str()) else { return };
    let field = "spec.timeZone";
    if tz.is_empty() {
        errs.push(FieldError::invalid(field, json!(tz), "timeZone must be nil or non-empty string"));
        return;
    }
    // IANA's naming rules, with digits and '+' tolerated for legacy names.
    let part_ok = |p: &str| {
        !matches!(p, "." | "..")
            && !p.starts_with('-')
            && (1..=14).contains(&p.len())
            && p.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_' | b'+'))
    };
    if !tz.split('/').all(part_ok) {
        errs.push(FieldError::invalid(field, json!(tz), format!("unknown time zone {tz}")));
        return;
    }
    if tz.eq_ignore_ascii_case("Local") {
        errs.push(FieldError::invalid(
            field,
            json!(tz),
            "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones",
        ));
    }
    // Go's LoadLocation knows "Local" (and only with that spelling).
    if tz != "Local"
        && let Err(e) = parse_time_zone(tz)
    {
        errs.push(FieldError::invalid(field, json!(tz), e.to_string()));
    }
}

/// A PodDisruptionBudget's spec (`ValidatePodDisruptionBudgetSpec`).
fn pod_disruption_budget(obj: &Value, errs: &mut Vec<FieldError>) {
    let min = get(obj, "/spec/minAvailable");
    let max = get(obj, "/spec/maxUnavailable");
    if min.is_some() && max.is_some() {
        errs.push(FieldError::invalid(
            "spec",
            get(obj, "/spec").cloned().unwrap_or(Value::Null),
            "minAvailable and maxUnavailable cannot be both set",
        ));
    }
    int_or_percent(errs, "spec.minAvailable", min);
    int_or_percent(errs, "spec.maxUnavailable", max);
    scheduling::label_selector(errs, get(obj, "/spec/selector"), "spec.selector");
    enum_value(
        errs,
        "spec.unhealthyPodEvictionPolicy",
        get(obj, "/spec/unhealthyPodEvictionPolicy"),
        &["AlwaysAllow", "IfHealthyBudget"],
    );
}

/// A non-negative integer or a percentage of at most 100%.
fn int_or_percent(errs: &mut Vec<FieldError>, field: &str, v: Option<&Value>) {
    match v {
        None => {}
        Some(n @ Value::Number(_)) if n.is_i64() || n.is_u64() => non_negative(errs, field, Some(n)),
        Some(Value::String(s)) => {
            let digits = s.strip_suffix('%').filter(|d| !d.is_empty() && d.bytes().all(|c| c.is_ascii_digit()));
            match digits {
                None => errs.push(FieldError::invalid(
                    field,
                    json!(s),
                    "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
                )),
                Some(d) if d.parse::<u64>().is_ok_and(|n| n > 100) => {
                    errs.push(FieldError::invalid(field, json!(s), "must not be greater than 100%"))
                }
                Some(_) => {}
            }
        }
        Some(other) => {
            errs.push(FieldError::invalid(field, other.clone(), "must be an integer or percentage (e.g '5%')"))
        }
    }
}

/// Workloads: a selector that matches the template's labels, replicas ≥ 0, a valid template.
fn workload(obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>, selector_required: bool) {
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
    let old = old.and_then(|o| get(o, "/spec/template/spec"));
    pod_spec(get(obj, "/spec/template/spec"), old, "spec.template.spec", errs);
}

fn service(obj: &Value, errs: &mut Vec<FieldError>) {
    let t = get(obj, "/spec/type").and_then(|t| t.as_str()).unwrap_or("ClusterIP");
    enum_value(errs, "spec.type", get(obj, "/spec/type"), &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"]);
    let headless = get(obj, "/spec/clusterIP").and_then(|c| c.as_str()) == Some("None");
    let ports = arr(obj, "/spec/ports");
    if t == "ExternalName" {
        let name = get(obj, "/spec/externalName").and_then(|n| n.as_str()).unwrap_or("");
        // A CNAME target; a trailing dot marks it fully qualified, as upstream allows.
        let cname = name.strip_suffix('.').unwrap_or(name);
        if cname.is_empty() {
            errs.push(FieldError::required("spec.externalName", ""));
        } else {
            for e in names::dns1123_subdomain(cname) {
                errs.push(FieldError::invalid("spec.externalName", json!(cname), e));
            }
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

/// An EndpointSlice's limits and addresses, as upstream checks them: at most 1,000 endpoints
/// and 100 ports, 1 to 100 addresses per endpoint, each of the slice's address type.
fn endpoint_slice(obj: &Value, errs: &mut Vec<FieldError>) {
    let address_type = get(obj, "/addressType").and_then(|v| v.as_str()).unwrap_or("");
    if address_type.is_empty() {
        errs.push(FieldError::required("addressType", ""));
    } else {
        enum_value(errs, "addressType", get(obj, "/addressType"), &["IPv4", "IPv6", "FQDN"]);
    }
    let endpoints = arr(obj, "/endpoints");
    if endpoints.len() > 1000 {
        errs.push(FieldError::too_many("endpoints", endpoints.len(), 1000));
        return;
    }
    let ports = arr(obj, "/ports");
    if ports.len() > 100 {
        errs.push(FieldError::too_many("ports", ports.len(), 100));
    }
    for (i, e) in endpoints.iter().enumerate() {
        let addresses = arr(e, "/addresses");
        let field = format!("endpoints[{i}].addresses");
        if addresses.is_empty() {
            errs.push(FieldError::required(field, "must contain at least 1 address"));
            continue;
        }
        if addresses.len() > 100 {
            errs.push(FieldError::too_many(field, addresses.len(), 100));
            continue;
        }
        for (j, a) in addresses.iter().enumerate() {
            let text = a.as_str().unwrap_or("");
            let ok = match address_type {
                "IPv4" => text.parse::<std::net::Ipv4Addr>().is_ok(),
                "IPv6" => text.parse::<std::net::Ipv6Addr>().is_ok(),
                _ => true,
            };
            if !ok {
                let what = if address_type == "IPv4" { "IPv4" } else { "IPv6" };
                errs.push(FieldError::invalid(
                    format!("{field}[{j}]"),
                    a.clone(),
                    format!("must be a valid {what} address"),
                ));
            }
        }
    }
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

/// Per-kind rules for create (`old` is `None`) and update (with `immutable` besides).
pub fn validate(info: &ResourceInfo, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    match (info.group, info.plural) {
        ("", "pods") => pod_spec(get(obj, "/spec"), old.and_then(|o| get(o, "/spec")), "spec", &mut errs),
        ("", "podtemplates") => {
            let old = old.and_then(|o| get(o, "/template/spec"));
            pod_spec(get(obj, "/template/spec"), old, "template.spec", &mut errs)
        }
        ("apps", "deployments" | "replicasets" | "daemonsets" | "statefulsets") => workload(obj, old, &mut errs, true),
        ("", "replicationcontrollers") => workload(obj, old, &mut errs, false),
        ("batch", "jobs") => job_spec(get(obj, "/spec"), old.and_then(|o| get(o, "/spec")), "spec", &mut errs),
        ("batch", "cronjobs") => cronjob(obj, old, &mut errs),
        ("policy", "poddisruptionbudgets") => ratchet(&mut errs, obj, old, pod_disruption_budget),
        ("", "services") => service(obj, &mut errs),
        ("discovery.k8s.io", "endpointslices") => endpoint_slice(obj, &mut errs),
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
        ("", "nodes") => {
            // The node IPAM controller may set a node's pod ranges once; nobody may change them.
            let cidrs = |v: &Value| -> Vec<Value> {
                match v.pointer("/spec/podCIDRs").and_then(|c| c.as_array()) {
                    Some(list) if !list.is_empty() => list.clone(),
                    _ => v.pointer("/spec/podCIDR").filter(|c| !c.is_null()).cloned().into_iter().collect(),
                }
            };
            let before = cidrs(old);
            let single_changed = old.pointer("/spec/podCIDR").is_some_and(|c| !c.is_null()) && !same("/spec/podCIDR");
            if !before.is_empty() && (before != cidrs(new) || single_changed) {
                errs.push(FieldError::forbidden(
                    "spec.podCIDRs",
                    "node updates may not change podCIDR except from \"\" to valid",
                ));
            }
            let provider = |v: &Value| v.pointer("/spec/providerID").and_then(|p| p.as_str()).unwrap_or("").to_string();
            if !provider(old).is_empty() && provider(old) != provider(new) {
                errs.push(FieldError::forbidden(
                    "spec.providerID",
                    "node updates may not change providerID except from \"\" to valid",
                ));
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
    fn node_pod_cidr_is_set_once() {
        let n = lookup("", "v1", "nodes").unwrap();
        let bare = json!({"metadata": {"name": "n"}, "spec": {}});
        let set = json!({"metadata": {"name": "n"}, "spec": {"podCIDR": "10.42.1.0/24", "podCIDRs": ["10.42.1.0/24"]}});
        assert!(immutable(n, &set, &bare).is_empty());
        assert!(immutable(n, &set, &set).is_empty());
        let moved =
            json!({"metadata": {"name": "n"}, "spec": {"podCIDR": "10.42.2.0/24", "podCIDRs": ["10.42.2.0/24"]}});
        let e = immutable(n, &moved, &set);
        assert_eq!(e.len(), 1);
        assert_eq!(
            e[0].to_string(),
            "spec.podCIDRs: Forbidden: node updates may not change podCIDR except from \"\" to valid"
        );
        assert_eq!(immutable(n, &bare, &set).len(), 1);
        let mut only_single = set.clone();
        only_single["spec"]["podCIDR"] = json!("10.42.9.0/24");
        assert_eq!(immutable(n, &only_single, &set).len(), 1);
        let p1 = json!({"metadata": {"name": "n"}, "spec": {"providerID": "skiff://a"}});
        let p2 = json!({"metadata": {"name": "n"}, "spec": {"providerID": "skiff://b"}});
        assert!(immutable(n, &p1, &bare).is_empty());
        assert_eq!(
            immutable(n, &p2, &p1)[0].to_string(),
            "spec.providerID: Forbidden: node updates may not change providerID except from \"\" to valid"
        );
    }

    #[test]
    fn deployment_selector_must_match() {
        let d = lookup("apps", "v1", "deployments").unwrap();
        let obj = json!({"metadata": {"name": "x"}, "spec": {"selector": {"matchLabels": {"app": "a"}}, "template": {"metadata": {"labels": {"app": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let e = validate(d, &obj, None);
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
        let e = validate(s, &json!({"spec": {"ports": [{"port": 70000}]}}), None);
        assert_eq!(
            e[0].to_string(),
            "spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive"
        );
        let p = lookup("", "v1", "pods").unwrap();
        let e = validate(
            p,
            &json!({"spec": {"containers": [{"name": "a"}, {"name": "a", "image": "x"}], "restartPolicy": "Sometimes"}}),
            None,
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
    }

    #[test]
    fn endpoint_slices() {
        let info = crate::api::registry::lookup("discovery.k8s.io", "v1", "endpointslices").unwrap();
        let eps = |n: usize, addr: &str| -> Vec<Value> { (0..n).map(|_| json!({"addresses": [addr]})).collect() };
        let slice = |t: &str, endpoints: Vec<Value>| json!({"addressType": t, "endpoints": endpoints});
        assert!(validate(info, &slice("IPv4", eps(1000, "10.42.0.5")), None).is_empty());
        assert_eq!(
            texts(validate(info, &slice("IPv4", eps(1001, "10.42.0.5")), None)),
            ["endpoints: Too many: 1001: must have at most 1000 items"]
        );
        assert_eq!(
            texts(validate(
                info,
                &slice("IPv4", vec![json!({"addresses": ["fd00::1"]}), json!({"addresses": []})]),
                None
            )),
            [
                "endpoints[0].addresses[0]: Invalid value: \"fd00::1\": must be a valid IPv4 address",
                "endpoints[1].addresses: Required value: must contain at least 1 address"
            ]
        );
        assert_eq!(
            texts(validate(info, &slice("IPX", vec![]), None)),
            ["addressType: Unsupported value: \"IPX\": supported values: \"IPv4\", \"IPv6\", \"FQDN\""]
        );
    }

    fn texts(errs: Vec<FieldError>) -> Vec<String> {
        errs.iter().map(|e| e.to_string()).collect()
    }

    fn cronjob(spec: Value) -> Value {
        let mut obj = json!({"metadata": {"name": "nightly", "namespace": "default"}, "spec": {
            "schedule": "0 3 * * *",
            "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}], "restartPolicy": "Never"}}}},
        }});
        for (k, v) in spec.as_object().unwrap() {
            obj["spec"][k] = v.clone();
        }
        obj
    }

    #[test]
    fn cronjob_schedule_and_time_zone() {
        let cj = lookup("batch", "v1", "cronjobs").unwrap();
        assert!(validate(cj, &cronjob(json!({})), None).is_empty());
        assert!(
            validate(cj, &cronjob(json!({"schedule": "@every 1h30m", "timeZone": "Europe/Paris"})), None).is_empty()
        );
        let e = |spec: Value| texts(validate(cj, &cronjob(spec), None));
        assert_eq!(
            e(json!({"schedule": "61 * * * *"})),
            ["spec.schedule: Invalid value: \"61 * * * *\": end of range (61) above maximum (59): 61"]
        );
        assert_eq!(
            e(json!({"schedule": "* * *"})),
            ["spec.schedule: Invalid value: \"* * *\": expected exactly 5 fields, found 3: [* * *]"]
        );
        assert_eq!(
            e(json!({"schedule": "x"})),
            ["spec.schedule: Invalid value: \"x\": expected exactly 5 fields, found 1: [x]"]
        );
        assert_eq!(
            e(json!({"schedule": "CRON_TZ=UTC * * * * *"})),
            [
                "spec.schedule: Invalid value: \"CRON_TZ=UTC * * * * *\": cannot use TZ or CRON_TZ in schedule, use timeZone field instead"
            ]
        );
        assert_eq!(
            e(json!({"schedule": "TZ=Mars/Base 0 3 * * *"})),
            [
                "spec.schedule: Invalid value: \"TZ=Mars/Base 0 3 * * *\": provided bad location Mars/Base: unknown time zone Mars/Base",
                "spec.schedule: Invalid value: \"TZ=Mars/Base 0 3 * * *\": cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
            ]
        );
        assert_eq!(e(json!({"schedule": ""})), ["spec.schedule: Required value"]);
        assert_eq!(
            e(json!({"timeZone": "Mars/Base"})),
            ["spec.timeZone: Invalid value: \"Mars/Base\": unknown time zone Mars/Base"]
        );
        assert_eq!(
            e(json!({"timeZone": "Europe/Pariss"})),
            ["spec.timeZone: Invalid value: \"Europe/Pariss\": unknown time zone Europe/Pariss"]
        );
        assert_eq!(
            e(json!({"timeZone": "Etc/GMT+5/-x"})),
            ["spec.timeZone: Invalid value: \"Etc/GMT+5/-x\": unknown time zone Etc/GMT+5/-x"]
        );
        assert_eq!(
            e(json!({"timeZone": ""})),
            ["spec.timeZone: Invalid value: \"\": timeZone must be nil or non-empty string"]
        );
        assert_eq!(
            e(json!({"timeZone": "Local"})),
            [
                "spec.timeZone: Invalid value: \"Local\": timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones"
            ]
        );
        assert_eq!(
            e(json!({"startingDeadlineSeconds": -1, "successfulJobsHistoryLimit": -2, "failedJobsHistoryLimit": -3})),
            [
                "spec.startingDeadlineSeconds: Invalid value: -1: must be greater than or equal to 0",
                "spec.successfulJobsHistoryLimit: Invalid value: -2: must be greater than or equal to 0",
                "spec.failedJobsHistoryLimit: Invalid value: -3: must be greater than or equal to 0",
            ]
        );
        let mut long = cronjob(json!({}));
        long["metadata"]["name"] = json!("a".repeat(53));
        assert_eq!(
            texts(validate(cj, &long, None)),
            [format!("metadata.name: Invalid value: \"{}\": must be no more than 52 characters", "a".repeat(53))]
        );
        // Updates: a name that long and a TZ= the schedule already had are kept; adding a
        // timeZone next to such a schedule is not.
        assert!(validate(cj, &long, Some(&long)).is_empty());
        let old = cronjob(json!({"schedule": "TZ=UTC 0 3 * * *"}));
        assert!(validate(cj, &cronjob(json!({"schedule": "TZ=UTC 0 4 * * *"})), Some(&old)).is_empty());
        assert_eq!(
            texts(validate(cj, &cronjob(json!({"schedule": "TZ=UTC 0 4 * * *", "timeZone": "UTC"})), Some(&old))),
            [
                "spec.schedule: Invalid value: \"TZ=UTC 0 4 * * *\": cannot use both timeZone field and TZ or CRON_TZ in schedule"
            ]
        );
        // The job template is checked as a Job is.
        let mut bad = cronjob(json!({}));
        bad["spec"]["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
        bad["spec"]["jobTemplate"]["spec"]["backoffLimit"] = json!(-1);
        assert_eq!(
            texts(validate(cj, &bad, None)),
            [
                "spec.jobTemplate.spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\"",
                "spec.jobTemplate.spec.backoffLimit: Invalid value: -1: must be greater than or equal to 0",
            ]
        );
    }

    fn pod(extra: Value) -> Value {
        let mut spec = json!({"containers": [{"name": "c", "image": "i"}]});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        json!({"metadata": {"name": "p", "namespace": "default"}, "spec": spec})
    }

    #[test]
    fn node_affinity() {
        let p = lookup("", "v1", "pods").unwrap();
        let e = |extra: Value| texts(validate(p, &pod(extra), None));
        assert_eq!(
            e(
                json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}}})
            ),
            [
                "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms: Required value: must have at least one node selector term"
            ]
        );
        let req = json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{
            "matchExpressions": [
                {"key": "zone", "operator": "Near", "values": ["a"]},
                {"key": "zone", "operator": "In"},
                {"key": "zone", "operator": "Exists", "values": ["a"]},
                {"key": "cpus", "operator": "Gt", "values": ["1", "2"]},
                {"key": "bad key", "operator": "In", "values": ["not ok"]},
            ],
            "matchFields": [{"key": "metadata.uid", "operator": "In", "values": ["a", "b"]}],
        }]}}}});
        let path = "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]";
        let got = e(req);
        assert_eq!(got.len(), 8, "{got:#?}");
        assert_eq!(
            got[0],
            format!("{path}.matchExpressions[0].operator: Invalid value: \"Near\": not a valid selector operator")
        );
        assert_eq!(
            got[1],
            format!(
                "{path}.matchExpressions[1].values: Required value: must be specified when `operator` is 'In' or 'NotIn'"
            )
        );
        assert_eq!(
            got[2],
            format!(
                "{path}.matchExpressions[2].values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'"
            )
        );
        assert_eq!(
            got[3],
            format!(
                "{path}.matchExpressions[3].values: Required value: must be specified single value when `operator` is 'Lt' or 'Gt'"
            )
        );
        assert!(got[4].starts_with(&format!(
            "{path}.matchExpressions[4].key: Invalid value: \"bad key\": name part must consist"
        )));
        assert!(
            got[5].starts_with(&format!(
                "{path}.matchExpressions[4].values[0]: Invalid value: \"not ok\": a valid label"
            ))
        );
        assert_eq!(
            got[6],
            format!(
                "{path}.matchFields[0].values: Required value: must be only one value when `operator` is 'In' or 'NotIn' for node field selector"
            )
        );
        assert_eq!(
            got[7],
            format!("{path}.matchFields[0].key: Invalid value: \"metadata.uid\": not a valid field selector key")
        );
        // Preferred terms: weights 1-100, and label values are not checked.
        assert_eq!(
            e(json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 0, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["not ok"]}]}},
                {"weight": 100, "preference": {}},
            ]}}})),
            [
                "spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight: Invalid value: 0: must be in the range 1-100"
            ]
        );
    }

    #[test]
    fn pod_affinity_in_templates() {
        let d = lookup("apps", "v1", "deployments").unwrap();
        let obj = json!({"metadata": {"name": "d", "namespace": "default"}, "spec": {
            "selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "a"}}, "spec": {
                "containers": [{"name": "c", "image": "i"}],
                "affinity": {
                    "podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                        {"labelSelector": {"matchExpressions": [{"key": "app", "operator": "Gt", "values": ["1"]}]}, "topologyKey": ""},
                    ]},
                    "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                        {"weight": 101, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname", "matchLabelKeys": ["app"]}},
                    ]},
                },
            }},
        }});
        let p = "spec.template.spec.affinity";
        assert_eq!(
            texts(validate(d, &obj, None)),
            [
                format!(
                    "{p}.podAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].labelSelector.matchExpressions[0].operator: Invalid value: \"Gt\": not a valid selector operator"
                ),
                format!(
                    "{p}.podAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey: Required value: can not be empty"
                ),
                format!(
                    "{p}.podAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey: Invalid value: \"\": name part must be non-empty"
                ),
                format!(
                    "{p}.podAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey: Invalid value: \"\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
                ),
                format!(
                    "{p}.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight: Invalid value: 101: must be in the range 1-100"
                ),
                format!(
                    "{p}.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].podAffinityTerm.matchLabelKeys: Forbidden: must not be specified when labelSelector is not set"
                ),
            ]
        );
    }

    #[test]
    fn stored_violations_do_not_block_updates() {
        let p = lookup("", "v1", "pods").unwrap();
        let old = pod(json!({"nodeSelector": {"disk": "not ok"}}));
        let mut new = old.clone();
        new["metadata"]["finalizers"] = json!(["example.com/keep"]);
        assert_eq!(validate(p, &new, None).len(), 1);
        assert!(validate(p, &new, Some(&old)).is_empty());
        // A new violation is still reported.
        new["spec"]["nodeSelector"]["zone"] = json!("-a");
        assert_eq!(
            texts(validate(p, &new, Some(&old)))[0],
            "spec.nodeSelector: Invalid value: \"-a\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
        );
    }

    #[test]
    fn tolerations() {
        let p = lookup("", "v1", "pods").unwrap();
        let got = texts(validate(
            p,
            &pod(json!({"tolerations": [
                {"operator": "Exists"},
                {"key": "k", "operator": "Equal", "value": "v", "effect": "NoExecute", "tolerationSeconds": 30},
                {"value": "v"},
                {"key": "k", "operator": "Exists", "value": "v"},
                {"key": "k", "operator": "Equal", "value": "-bad"},
                {"key": "k", "operator": "Above"},
                {"key": "k", "effect": "NoScheduleEver"},
                {"key": "k", "effect": "NoSchedule", "tolerationSeconds": 5},
            ]})),
            None,
        ));
        assert_eq!(
            got,
            [
                "spec.tolerations[2].operator: Invalid value: \"\": operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
                "spec.tolerations[3].operator: Invalid value: \"v\": value must be empty when `operator` is 'Exists'",
                "spec.tolerations[4].operator: Invalid value: \"-bad\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
                "spec.tolerations[5].operator: Unsupported value: \"Above\": supported values: \"Equal\", \"Exists\"",
                "spec.tolerations[6].effect: Unsupported value: \"NoScheduleEver\": supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\"",
                "spec.tolerations[7].effect: Invalid value: \"NoSchedule\": effect must be 'NoExecute' when `tolerationSeconds` is set",
            ]
        );
    }

    #[test]
    fn topology_spread_and_node_selector() {
        let j = lookup("batch", "v1", "jobs").unwrap();
        let obj = json!({"metadata": {"name": "j", "namespace": "default"}, "spec": {"template": {"spec": {
            "containers": [{"name": "c", "image": "i"}],
            "restartPolicy": "Never",
            "nodeSelector": {"disk": "ssd", "bad key": "x"},
            "priorityClassName": "High",
            "topologySpreadConstraints": [
                {"maxSkew": 0, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"},
                {"maxSkew": 1, "whenUnsatisfiable": "Sometimes"},
                {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway", "minDomains": 0},
                {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule", "nodeTaintsPolicy": "Maybe",
                 "labelSelector": {"matchLabels": {"app": "a"}}, "matchLabelKeys": ["app"]},
            ],
        }}}});
        let p = "spec.template.spec";
        let got = texts(validate(j, &obj, None));
        assert_eq!(got.len(), 10, "{got:#?}");
        assert!(got[0].starts_with(&format!("{p}.nodeSelector: Invalid value: \"bad key\": name part must consist")));
        assert_eq!(
            &got[1..],
            [
                format!("{p}.topologySpreadConstraints[0].maxSkew: Invalid value: 0: must be greater than zero"),
                format!(
                    "{p}.topologySpreadConstraints[0].{{topologyKey, whenUnsatisfiable}}: Duplicate value: \"{{zone, DoNotSchedule}}\""
                ),
                format!("{p}.topologySpreadConstraints[1].topologyKey: Required value: can not be empty"),
                format!(
                    "{p}.topologySpreadConstraints[1].whenUnsatisfiable: Unsupported value: \"Sometimes\": supported values: \"DoNotSchedule\", \"ScheduleAnyway\""
                ),
                format!("{p}.topologySpreadConstraints[2].minDomains: Invalid value: 0: must be greater than zero"),
                format!(
                    "{p}.topologySpreadConstraints[2].minDomains: Invalid value: 0: can only use minDomains if whenUnsatisfiable=DoNotSchedule, not ScheduleAnyway"
                ),
                format!(
                    "{p}.topologySpreadConstraints[3].nodeTaintsPolicy: Unsupported value: \"Maybe\": supported values: \"Honor\", \"Ignore\""
                ),
                format!(
                    "{p}.topologySpreadConstraints[3].matchLabelKeys[0]: Invalid value: \"app\": exists in both matchLabelKeys and labelSelector"
                ),
                format!(
                    "{p}.priorityClassName: Invalid value: \"High\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
                ),
            ]
        );
    }

    #[test]
    fn pod_disruption_budgets() {
        let pdb = lookup("policy", "v1", "poddisruptionbudgets").unwrap();
        let e = |spec: Value| {
            texts(validate(pdb, &json!({"metadata": {"name": "b", "namespace": "default"}, "spec": spec}), None))
        };
        assert!(e(json!({"minAvailable": 2, "selector": {"matchLabels": {"app": "a"}}})).is_empty());
        assert!(e(json!({"maxUnavailable": "100%"})).is_empty());
        assert_eq!(
            e(json!({"minAvailable": 1, "maxUnavailable": "10%"})),
            [
                "spec: Invalid value: {\"maxUnavailable\":\"10%\",\"minAvailable\":1}: minAvailable and maxUnavailable cannot be both set"
            ]
        );
        assert_eq!(
            e(json!({"minAvailable": -1})),
            ["spec.minAvailable: Invalid value: -1: must be greater than or equal to 0"]
        );
        assert_eq!(
            e(json!({"maxUnavailable": "120%"})),
            ["spec.maxUnavailable: Invalid value: \"120%\": must not be greater than 100%"]
        );
        assert_eq!(
            e(json!({"minAvailable": "50"})),
            [
                "spec.minAvailable: Invalid value: \"50\": a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')"
            ]
        );
        assert_eq!(
            e(json!({"maxUnavailable": 1, "selector": {"matchExpressions": [{"key": "app", "operator": "In"}]}})),
            [
                "spec.selector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'"
            ]
        );
    }
}
