//! Server-side printing: `meta.k8s.io/v1 Table` responses with the columns upstream's printers
//! use, so `kubectl get` looks the same as against any cluster.
//!
//! Each printer is a list of columns and a function from an object to its cells; resources
//! without a printer get upstream's default (Name, Created At shown as AGE by kubectl).

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::api::registry::ResourceInfo;
use crate::api::status::ApiError;

/// What each row carries besides its cells (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl IncludeObject {
    /// Parses the `includeObject` query parameter (default Metadata).
    pub fn parse(s: Option<&str>) -> Result<Self, ApiError> {
        match s {
            None | Some("Metadata") => Ok(IncludeObject::Metadata),
            Some("None") => Ok(IncludeObject::None),
            Some("Object") => Ok(IncludeObject::Object),
            Some(o) => Err(ApiError::bad_request(format!(
                "includeObject: Unsupported value: {o:?}: supported values: \"Metadata\", \"None\", \"Object\""
            ))),
        }
    }
}

/// (name, type, priority) of a column.
type Col = (&'static str, &'static str, u8);

const NAME: Col = ("Name", "string", 0);
const AGE: Col = ("Age", "string", 0);

fn columns(info: &ResourceInfo) -> Vec<Col> {
    match (info.group, info.plural) {
        ("", "pods") => vec![
            NAME,
            ("Ready", "string", 0),
            ("Status", "string", 0),
            ("Restarts", "string", 0),
            AGE,
            ("IP", "string", 1),
            ("Node", "string", 1),
            ("Nominated Node", "string", 1),
            ("Readiness Gates", "string", 1),
        ],
        ("", "configmaps") => vec![NAME, ("Data", "integer", 0), AGE],
        ("", "secrets") => vec![NAME, ("Type", "string", 0), ("Data", "integer", 0), AGE],
        ("", "serviceaccounts") => vec![NAME, ("Secrets", "integer", 0), AGE],
        ("", "namespaces") => vec![NAME, ("Status", "string", 0), AGE],
        ("", "services") => vec![
            NAME,
            ("Type", "string", 0),
            ("Cluster-IP", "string", 0),
            ("External-IP", "string", 0),
            ("Port(s)", "string", 0),
            AGE,
            ("Selector", "string", 1),
        ],
        ("", "endpoints") => vec![NAME, ("Endpoints", "string", 0), AGE],
        ("", "nodes") => vec![
            NAME,
            ("Status", "string", 0),
            ("Roles", "string", 0),
            AGE,
            ("Version", "string", 0),
            ("Internal-IP", "string", 1),
            ("External-IP", "string", 1),
            ("OS-Image", "string", 1),
            ("Kernel-Version", "string", 1),
            ("Container-Runtime", "string", 1),
        ],
        ("" | "events.k8s.io", "events") => vec![
            ("Last Seen", "string", 0),
            ("Type", "string", 0),
            ("Reason", "string", 0),
            ("Object", "string", 0),
            ("Subobject", "string", 1),
            ("Source", "string", 1),
            ("Message", "string", 0),
            ("First Seen", "string", 1),
            ("Count", "string", 1),
            ("Name", "string", 1),
        ],
        ("", "podtemplates") => {
            vec![NAME, ("Containers", "string", 0), ("Images", "string", 0), ("Pod Labels", "string", 0)]
        }
        ("", "persistentvolumes") => vec![
            NAME,
            ("Capacity", "string", 0),
            ("Access Modes", "string", 0),
            ("Reclaim Policy", "string", 0),
            ("Status", "string", 0),
            ("Claim", "string", 0),
            ("StorageClass", "string", 0),
            ("VolumeAttributesClass", "string", 0),
            ("Reason", "string", 0),
            AGE,
            ("VolumeMode", "string", 1),
        ],
        ("", "componentstatuses") => {
            vec![NAME, ("Status", "string", 0), ("Message", "string", 0), ("Error", "string", 0)]
        }
        ("", "resourcequotas") => vec![NAME, AGE, ("Request", "string", 0), ("Limit", "string", 0)],
        ("autoscaling", "horizontalpodautoscalers") => vec![
            NAME,
            ("Reference", "string", 0),
            ("Targets", "string", 0),
            ("MinPods", "string", 0),
            ("MaxPods", "string", 0),
            ("Replicas", "string", 0),
            AGE,
        ],
        ("policy", "poddisruptionbudgets") => vec![
            NAME,
            ("Min Available", "string", 0),
            ("Max Unavailable", "string", 0),
            ("Allowed Disruptions", "integer", 0),
            AGE,
        ],
        ("networking.k8s.io", "networkpolicies") => vec![NAME, ("Pod-Selector", "string", 0), AGE],
        ("networking.k8s.io", "ingressclasses") => {
            vec![NAME, ("Controller", "string", 0), ("Parameters", "string", 0), AGE]
        }
        ("node.k8s.io", "runtimeclasses") => vec![NAME, ("Handler", "string", 0), AGE],
        ("storage.k8s.io", "volumeattachments") => vec![
            NAME,
            ("Attacher", "string", 0),
            ("PV", "string", 0),
            ("Node", "string", 0),
            ("Attached", "boolean", 0),
            AGE,
        ],
        ("storage.k8s.io", "csinodes") => vec![NAME, ("Drivers", "integer", 0), AGE],
        ("storage.k8s.io", "csidrivers") => vec![
            NAME,
            ("AttachRequired", "boolean", 0),
            ("PodInfoOnMount", "boolean", 0),
            ("StorageCapacity", "boolean", 0),
            ("TokenRequests", "string", 0),
            ("RequiresRepublish", "boolean", 0),
            ("Modes", "string", 0),
            AGE,
        ],
        ("storage.k8s.io", "csistoragecapacities") => {
            vec![NAME, ("StorageClassName", "string", 0), ("Capacity", "string", 0)]
        }
        ("admissionregistration.k8s.io", "mutatingwebhookconfigurations" | "validatingwebhookconfigurations") => {
            vec![NAME, ("Webhooks", "integer", 0), AGE]
        }
        ("admissionregistration.k8s.io", "validatingadmissionpolicies") => {
            vec![NAME, ("Validations", "integer", 0), ("ParamKind", "string", 0), AGE]
        }
        ("admissionregistration.k8s.io", "validatingadmissionpolicybindings") => {
            vec![NAME, ("PolicyName", "string", 0), ("ParamRef", "string", 0), AGE]
        }
        ("", "persistentvolumeclaims") => vec![
            NAME,
            ("Status", "string", 0),
            ("Volume", "string", 0),
            ("Capacity", "string", 0),
            ("Access Modes", "string", 0),
            ("StorageClass", "string", 0),
            ("VolumeAttributesClass", "string", 0),
            AGE,
            ("VolumeMode", "string", 1),
        ],
        ("", "replicationcontrollers") | ("apps", "replicasets") => vec![
            NAME,
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            AGE,
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        ("apps", "deployments") => vec![
            NAME,
            ("Ready", "string", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
            AGE,
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        ("apps", "statefulsets") => {
            vec![NAME, ("Ready", "string", 0), AGE, ("Containers", "string", 1), ("Images", "string", 1)]
        }
        ("apps", "daemonsets") => vec![
            NAME,
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
            ("Node Selector", "string", 0),
            AGE,
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        ("apps", "controllerrevisions") => vec![NAME, ("Controller", "string", 0), ("Revision", "integer", 0), AGE],
        ("batch", "jobs") => vec![
            NAME,
            ("Status", "string", 0),
            ("Completions", "string", 0),
            ("Duration", "string", 0),
            AGE,
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        ("batch", "cronjobs") => vec![
            NAME,
            ("Schedule", "string", 0),
            ("Timezone", "string", 0),
            ("Suspend", "boolean", 0),
            ("Active", "integer", 0),
            ("Last Schedule", "string", 0),
            AGE,
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        ("coordination.k8s.io", "leases") => vec![NAME, ("Holder", "string", 0), AGE],
        ("discovery.k8s.io", "endpointslices") => {
            vec![NAME, ("AddressType", "string", 0), ("Ports", "string", 0), ("Endpoints", "string", 0), AGE]
        }
        ("networking.k8s.io", "ingresses") => {
            vec![
                NAME,
                ("Class", "string", 0),
                ("Hosts", "string", 0),
                ("Address", "string", 0),
                ("Ports", "string", 0),
                AGE,
            ]
        }
        ("scheduling.k8s.io", "priorityclasses") => {
            vec![
                NAME,
                ("Value", "integer", 0),
                ("Global-Default", "boolean", 0),
                AGE,
                ("PreemptionPolicy", "string", 0),
            ]
        }
        ("storage.k8s.io", "storageclasses") => vec![
            NAME,
            ("Provisioner", "string", 0),
            ("ReclaimPolicy", "string", 0),
            ("VolumeBindingMode", "string", 0),
            ("AllowVolumeExpansion", "string", 0),
            AGE,
        ],
        ("rbac.authorization.k8s.io", "roles" | "clusterroles") => vec![NAME, ("Created At", "string", 0)],
        ("rbac.authorization.k8s.io", "rolebindings" | "clusterrolebindings") => {
            vec![
                NAME,
                ("Role", "string", 0),
                AGE,
                ("Users", "string", 1),
                ("Groups", "string", 1),
                ("ServiceAccounts", "string", 1),
            ]
        }
        ("certificates.k8s.io", "certificatesigningrequests") => vec![
            NAME,
            AGE,
            ("SignerName", "string", 0),
            ("Requestor", "string", 0),
            ("RequestedDuration", "string", 0),
            ("Condition", "string", 0),
        ],
        _ => vec![NAME, ("Created At", "date", 0)],
    }
}

/// Column definitions of a resource.
pub fn column_definitions(info: &ResourceInfo) -> Vec<Value> {
    columns(info)
        .into_iter()
        .map(|(name, ty, priority)| {
            let format = if name == "Name" { "name" } else { "" };
            json!({"name": name, "type": ty, "format": format, "description": describe(name), "priority": priority})
        })
        .collect()
}

fn describe(col: &str) -> &'static str {
    match col {
        "Name" => {
            "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically."
        }
        "Age" | "Created At" => {
            "CreationTimestamp is a timestamp representing the server time when this object was created."
        }
        _ => "",
    }
}

/// Upstream's `HumanDuration` (`5s`, `3m20s`, `4h`, `6d`, `2y`).
pub fn human_duration(secs: i64) -> String {
    if secs < 0 {
        return "<invalid>".into();
    }
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86400);
    if secs < 120 {
        format!("{secs}s")
    } else if m < 10 {
        let s = secs % 60;
        if s == 0 { format!("{m}m") } else { format!("{m}m{s}s") }
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        let mm = m % 60;
        if mm == 0 { format!("{h}h") } else { format!("{h}h{mm}m") }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        let hh = h % 24;
        if hh == 0 { format!("{d}d") } else { format!("{d}d{hh}h") }
    } else if h < 24 * 365 * 2 {
        format!("{d}d")
    } else if h < 24 * 365 * 8 {
        let dy = d % 365;
        if dy == 0 { format!("{}y", d / 365) } else { format!("{}y{dy}d", d / 365) }
    } else {
        format!("{}y", d / 365)
    }
}

fn age_of(ts: Option<&str>, now: DateTime<Utc>) -> String {
    match ts.and_then(|t| DateTime::parse_from_rfc3339(t).ok()) {
        Some(t) => human_duration((now - t.with_timezone(&Utc)).num_seconds()),
        None => "<unknown>".into(),
    }
}

fn s<'a>(obj: &'a Value, ptr: &str) -> &'a str {
    obj.pointer(ptr).and_then(|v| v.as_str()).unwrap_or("")
}

fn i(obj: &Value, ptr: &str) -> i64 {
    obj.pointer(ptr).and_then(|v| v.as_i64()).unwrap_or(0)
}

fn arr<'a>(obj: &'a Value, ptr: &str) -> &'a [Value] {
    obj.pointer(ptr).and_then(|v| v.as_array()).map(|a| a.as_slice()).unwrap_or(&[])
}

fn none_if_empty(v: String) -> String {
    if v.is_empty() { "<none>".into() } else { v }
}

fn selector_text(sel: Option<&Value>) -> String {
    match sel {
        Some(v) if v.get("matchLabels").is_some() || v.get("matchExpressions").is_some() => {
            crate::api::selector::LabelSelector::from_json(v).map(|l| l.to_string()).unwrap_or_default()
        }
        Some(Value::Object(m)) => map_text(m),
        _ => String::new(),
    }
}

/// A string map as `k=v,k2=v2`, sorted.
fn map_text(m: &serde_json::Map<String, Value>) -> String {
    let mut parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect();
    parts.sort();
    parts.join(",")
}

/// `RWO,ROX` as upstream abbreviates access modes.
fn access_modes(modes: &[Value]) -> String {
    let short: Vec<&str> = modes
        .iter()
        .filter_map(|m| m.as_str())
        .map(|m| match m {
            "ReadWriteOnce" => "RWO",
            "ReadOnlyMany" => "ROX",
            "ReadWriteMany" => "RWX",
            "ReadWriteOncePod" => "RWOP",
            o => o,
        })
        .collect();
    short.join(",")
}

fn volume_mode(obj: &Value) -> String {
    obj.pointer("/spec/volumeMode").and_then(|v| v.as_str()).unwrap_or("<unset>").to_string()
}

/// `k=v,k2=v2` (sorted), `<none>` when empty.
fn labels_text(labels: Option<&Value>) -> String {
    none_if_empty(labels.and_then(|l| l.as_object()).map(map_text).unwrap_or_default())
}

/// Both Event shapes (core/v1 and events.k8s.io/v1) in upstream's event columns.
fn event_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let first_of = |ptrs: &[&str]| ptrs.iter().map(|p| s(obj, p)).find(|t| !t.is_empty());
    let first = first_of(&["/firstTimestamp", "/deprecatedFirstTimestamp", "/eventTime"]);
    let last = first_of(&["/series/lastObservedTime", "/lastTimestamp", "/deprecatedLastTimestamp"]).or(first);
    let seen = |t: Option<&str>| t.map(|t| age_of(Some(t), now)).unwrap_or_else(|| "<unknown>".into());
    let regarding = obj.get("involvedObject").or_else(|| obj.get("regarding")).unwrap_or(&Value::Null);
    let object = format!("{}/{}", s(regarding, "/kind").to_lowercase(), s(regarding, "/name"));
    let message = if obj.get("note").is_some() { s(obj, "/note") } else { s(obj, "/message") };
    let source_obj = obj.get("source").or_else(|| obj.get("deprecatedSource"));
    let component = source_obj.map(|v| s(v, "/component")).filter(|c| !c.is_empty());
    let source = match component {
        Some(c) => {
            let host = s(source_obj.unwrap_or(&Value::Null), "/host");
            if host.is_empty() { c.to_string() } else { format!("{c}, {host}") }
        }
        None => {
            let controller = if obj.get("reportingController").is_some() {
                s(obj, "/reportingController")
            } else {
                s(obj, "/reportingComponent")
            };
            let instance = s(obj, "/reportingInstance");
            match (controller.is_empty(), instance.is_empty()) {
                (true, _) => "<none>".to_string(),
                (false, true) => controller.to_string(),
                (false, false) => format!("{controller}, {instance}"),
            }
        }
    };
    let count = obj
        .pointer("/series/count")
        .or_else(|| obj.get("count"))
        .or_else(|| obj.get("deprecatedCount"))
        .and_then(|v| v.as_i64())
        .filter(|c| *c > 0)
        .unwrap_or(1);
    vec![
        json!(seen(last)),
        json!(s(obj, "/type")),
        json!(s(obj, "/reason")),
        json!(object),
        json!(s(regarding, "/fieldPath")),
        json!(source),
        json!(message),
        json!(seen(first)),
        json!(count.to_string()),
        json!(s(obj, "/metadata/name")),
    ]
}

/// REQUEST and LIMIT of a ResourceQuota: `name: used/hard` for each enforced resource, sorted,
/// `limits.*` in the second column.
fn quota_text(obj: &Value) -> (String, String) {
    let Some(hard) = obj.pointer("/status/hard").and_then(|h| h.as_object()) else {
        return (String::new(), String::new());
    };
    let mut names: Vec<&String> = hard.keys().collect();
    names.sort();
    let (mut request, mut limit) = (Vec::new(), Vec::new());
    for n in names {
        let used = obj.pointer("/status/used").and_then(|u| u.get(n.as_str())).and_then(|v| v.as_str()).unwrap_or("0");
        let entry = format!("{n}: {used}/{}", hard[n].as_str().unwrap_or(""));
        if n.starts_with("limits.") { limit.push(entry) } else { request.push(entry) }
    }
    (request.join(", "), limit.join(", "))
}

/// The TARGETS column of a HorizontalPodAutoscaler, autoscaling/v1 or v2: `cpu: 40%/80%`, at
/// most two metrics and then `+ N more...`.
fn hpa_targets(obj: &Value) -> String {
    let mut list: Vec<String> = Vec::new();
    if let Some(target) = obj.pointer("/spec/targetCPUUtilizationPercentage").and_then(|v| v.as_i64()) {
        let current = obj
            .pointer("/status/currentCPUUtilizationPercentage")
            .and_then(|v| v.as_i64())
            .map(|c| format!("{c}%"))
            .unwrap_or_else(|| "<unknown>".into());
        list.push(format!("cpu: {current}/{target}%"));
    }
    let statuses = arr(obj, "/status/currentMetrics");
    for (n, spec) in arr(obj, "/spec/metrics").iter().enumerate() {
        let status = statuses.get(n).unwrap_or(&Value::Null);
        let ty = s(spec, "/type");
        let key = match ty {
            "Resource" => "resource",
            "ContainerResource" => "containerResource",
            "Pods" => "pods",
            "Object" => "object",
            "External" => "external",
            _ => {
                list.push("<unknown type>".into());
                continue;
            }
        };
        let target = spec.get(key).and_then(|t| t.get("target")).unwrap_or(&Value::Null);
        let current = status.get(key).and_then(|c| c.get("current")).unwrap_or(&Value::Null);
        let quantity = |v: &Value, field: &str| v.get(field).and_then(|q| q.as_str()).map(String::from);
        let unknown = || "<unknown>".to_string();
        let text = if let Some(avg) = quantity(target, "averageValue") {
            let cur = quantity(current, "averageValue").unwrap_or_else(unknown);
            if ty == "Object" || ty == "External" { format!("{cur}/{avg} (avg)") } else { format!("{cur}/{avg}") }
        } else if let Some(value) = quantity(target, "value") {
            format!("{}/{value}", quantity(current, "value").unwrap_or_else(unknown))
        } else {
            let cur = current
                .get("averageUtilization")
                .and_then(|v| v.as_i64())
                .map(|c| format!("{c}%"))
                .unwrap_or_else(unknown);
            let tgt = target
                .get("averageUtilization")
                .and_then(|v| v.as_i64())
                .map(|c| format!("{c}%"))
                .unwrap_or_else(|| "<auto>".into());
            format!("{cur}/{tgt}")
        };
        let label = match ty {
            "Resource" => format!("{}: ", s(spec, "/resource/name")),
            "ContainerResource" => {
                format!("{}/{}: ", s(spec, "/containerResource/container"), s(spec, "/containerResource/name"))
            }
            _ => String::new(),
        };
        list.push(format!("{label}{text}"));
    }
    match list.len() {
        0 => "<none>".into(),
        1 | 2 => list.join(", "),
        n => format!("{} + {} more...", list[..2].join(", "), n - 2),
    }
}

fn containers_and_images(obj: &Value, spec: &str) -> (String, String) {
    let cs = arr(obj, &format!("{spec}/containers"));
    let names: Vec<&str> = cs.iter().map(|c| s(c, "/name")).collect();
    let images: Vec<&str> = cs.iter().map(|c| s(c, "/image")).collect();
    (names.join(","), images.join(","))
}

fn service_ports(obj: &Value) -> String {
    let ports: Vec<String> = arr(obj, "/spec/ports")
        .iter()
        .map(|p| {
            let proto = p.get("protocol").and_then(|v| v.as_str()).unwrap_or("TCP");
            match p.get("nodePort").and_then(|n| n.as_i64()) {
                Some(n) => format!("{}:{n}/{proto}", i(p, "/port")),
                None => format!("{}/{proto}", i(p, "/port")),
            }
        })
        .collect();
    none_if_empty(ports.join(","))
}

fn external_ips(obj: &Value) -> String {
    let t = obj.pointer("/spec/type").and_then(|v| v.as_str()).unwrap_or("ClusterIP");
    let mut ips: Vec<String> =
        arr(obj, "/spec/externalIPs").iter().filter_map(|v| v.as_str().map(String::from)).collect();
    match t {
        "ExternalName" => return s(obj, "/spec/externalName").to_string(),
        "LoadBalancer" => {
            for ing in arr(obj, "/status/loadBalancer/ingress") {
                let v = if !s(ing, "/ip").is_empty() { s(ing, "/ip") } else { s(ing, "/hostname") };
                if !v.is_empty() {
                    ips.push(v.to_string());
                }
            }
            if ips.is_empty() {
                return "<pending>".into();
            }
        }
        _ => {}
    }
    none_if_empty(ips.join(","))
}

/// The pod STATUS column, following upstream's printer logic.
fn pod_status(obj: &Value) -> String {
    let mut reason = s(obj, "/status/phase").to_string();
    if !s(obj, "/status/reason").is_empty() {
        reason = s(obj, "/status/reason").to_string();
    }
    let init_statuses = arr(obj, "/status/initContainerStatuses");
    let init_total = arr(obj, "/spec/initContainers").len();
    let mut initializing = false;
    for (idx, c) in init_statuses.iter().enumerate() {
        if c.pointer("/state/terminated").is_some() && i(c, "/state/terminated/exitCode") == 0 {
            continue;
        }
        if let Some(t) = c.pointer("/state/terminated") {
            let r = s(t, "/reason");
            reason = if r.is_empty() {
                let sig = i(t, "/signal");
                if sig != 0 { format!("Init:Signal:{sig}") } else { format!("Init:ExitCode:{}", i(t, "/exitCode")) }
            } else {
                format!("Init:{r}")
            };
        } else if !s(c, "/state/waiting/reason").is_empty() && s(c, "/state/waiting/reason") != "PodInitializing" {
            reason = format!("Init:{}", s(c, "/state/waiting/reason"));
        } else {
            reason = format!("Init:{idx}/{init_total}");
        }
        initializing = true;
        break;
    }
    if !initializing {
        let mut has_running = false;
        for c in arr(obj, "/status/containerStatuses").iter().rev() {
            let waiting = s(c, "/state/waiting/reason");
            let term = c.pointer("/state/terminated");
            if !waiting.is_empty() {
                reason = waiting.to_string();
            } else if let Some(t) = term {
                let r = s(t, "/reason");
                reason = if !r.is_empty() {
                    r.to_string()
                } else if i(t, "/signal") != 0 {
                    format!("Signal:{}", i(t, "/signal"))
                } else {
                    format!("ExitCode:{}", i(t, "/exitCode"))
                };
            } else if c.get("ready").and_then(|r| r.as_bool()).unwrap_or(false) && c.pointer("/state/running").is_some()
            {
                has_running = true;
            }
        }
        if reason == "Completed" && has_running {
            reason = "Running".into();
        }
    }
    if obj.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null()) {
        reason = if s(obj, "/status/reason") == "NodeLost" { "Unknown".into() } else { "Terminating".into() };
    }
    reason
}

fn pod_restarts(obj: &Value, now: DateTime<Utc>) -> String {
    let mut restarts = 0;
    let mut last: Option<DateTime<Utc>> = None;
    for c in arr(obj, "/status/containerStatuses") {
        restarts += i(c, "/restartCount");
        if let Some(t) = c
            .pointer("/lastState/terminated/finishedAt")
            .and_then(|v| v.as_str())
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        {
            let t = t.with_timezone(&Utc);
            if last.is_none_or(|l| t > l) {
                last = Some(t);
            }
        }
    }
    match last {
        Some(t) if restarts > 0 => format!("{restarts} ({} ago)", human_duration((now - t).num_seconds())),
        _ => restarts.to_string(),
    }
}

fn node_roles(obj: &Value) -> String {
    let mut roles: Vec<String> = obj
        .pointer("/metadata/labels")
        .and_then(|l| l.as_object())
        .map(|l| {
            l.iter()
                .filter_map(|(k, v)| {
                    if let Some(r) = k.strip_prefix("node-role.kubernetes.io/") {
                        Some(r.to_string())
                    } else if k == "kubernetes.io/role" {
                        v.as_str().map(String::from)
                    } else {
                        None
                    }
                })
                .filter(|r| !r.is_empty())
                .collect()
        })
        .unwrap_or_default();
    roles.sort();
    none_if_empty(roles.join(","))
}

fn node_status(obj: &Value) -> String {
    let ready = arr(obj, "/status/conditions").iter().find(|c| s(c, "/type") == "Ready");
    let mut st = match ready.map(|c| s(c, "/status")) {
        Some("True") => "Ready".to_string(),
        Some(_) | None => "NotReady".to_string(),
    };
    if ready.is_none() {
        st = "Unknown".into();
    }
    if obj.pointer("/spec/unschedulable").and_then(|v| v.as_bool()).unwrap_or(false) {
        st.push_str(",SchedulingDisabled");
    }
    st
}

fn node_address(obj: &Value, kind: &str) -> String {
    arr(obj, "/status/addresses")
        .iter()
        .find(|a| s(a, "/type") == kind)
        .map(|a| s(a, "/address").to_string())
        .unwrap_or_else(|| "<none>".into())
}

fn endpoints_text(addrs: Vec<String>) -> String {
    if addrs.is_empty() {
        return "<none>".into();
    }
    let more = addrs.len().saturating_sub(3);
    let shown = addrs.into_iter().take(3).collect::<Vec<_>>().join(",");
    if more > 0 { format!("{shown} + {more} more...") } else { shown }
}

fn cells(info: &ResourceInfo, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let name = json!(s(obj, "/metadata/name"));
    let age = json!(age_of(obj.pointer("/metadata/creationTimestamp").and_then(|v| v.as_str()), now));
    match (info.group, info.plural) {
        ("", "pods") => {
            let statuses = arr(obj, "/status/containerStatuses");
            let total = arr(obj, "/spec/containers").len();
            let ready = statuses.iter().filter(|c| c.get("ready").and_then(|r| r.as_bool()).unwrap_or(false)).count();
            let gates = arr(obj, "/spec/readinessGates");
            let gates_text = if gates.is_empty() {
                "<none>".to_string()
            } else {
                let ok = gates
                    .iter()
                    .filter(|g| {
                        arr(obj, "/status/conditions")
                            .iter()
                            .any(|c| s(c, "/type") == s(g, "/conditionType") && s(c, "/status") == "True")
                    })
                    .count();
                format!("{ok}/{}", gates.len())
            };
            vec![
                name,
                json!(format!("{ready}/{total}")),
                json!(pod_status(obj)),
                json!(pod_restarts(obj, now)),
                age,
                json!(none_if_empty(s(obj, "/status/podIP").to_string())),
                json!(none_if_empty(s(obj, "/spec/nodeName").to_string())),
                json!(none_if_empty(s(obj, "/status/nominatedNodeName").to_string())),
                json!(gates_text),
            ]
        }
        ("", "configmaps") => {
            let n = obj.get("data").and_then(|d| d.as_object()).map(|m| m.len()).unwrap_or(0)
                + obj.get("binaryData").and_then(|d| d.as_object()).map(|m| m.len()).unwrap_or(0);
            vec![name, json!(n), age]
        }
        ("", "secrets") => {
            let n = obj.get("data").and_then(|d| d.as_object()).map(|m| m.len()).unwrap_or(0);
            vec![name, json!(s(obj, "/type")), json!(n), age]
        }
        ("", "serviceaccounts") => vec![name, json!(arr(obj, "/secrets").len()), age],
        ("", "namespaces") => vec![name, json!(s(obj, "/status/phase")), age],
        ("", "services") => {
            let t = obj.pointer("/spec/type").and_then(|v| v.as_str()).unwrap_or("ClusterIP");
            let cip = s(obj, "/spec/clusterIP");
            vec![
                name,
                json!(t),
                json!(if cip.is_empty() { "<none>" } else { cip }),
                json!(external_ips(obj)),
                json!(service_ports(obj)),
                age,
                json!(none_if_empty(selector_text(obj.pointer("/spec/selector")))),
            ]
        }
        ("", "endpoints") => {
            let mut addrs = Vec::new();
            for sub in arr(obj, "/subsets") {
                let ports = arr(sub, "/ports");
                for a in arr(sub, "/addresses") {
                    if ports.is_empty() {
                        addrs.push(s(a, "/ip").to_string());
                    }
                    for p in ports {
                        addrs.push(format!("{}:{}", s(a, "/ip"), i(p, "/port")));
                    }
                }
            }
            vec![name, json!(endpoints_text(addrs)), age]
        }
        ("", "nodes") => vec![
            name,
            json!(node_status(obj)),
            json!(node_roles(obj)),
            age,
            json!(s(obj, "/status/nodeInfo/kubeletVersion")),
            json!(node_address(obj, "InternalIP")),
            json!(node_address(obj, "ExternalIP")),
            json!(none_if_empty(s(obj, "/status/nodeInfo/osImage").to_string())),
            json!(none_if_empty(s(obj, "/status/nodeInfo/kernelVersion").to_string())),
            json!(none_if_empty(s(obj, "/status/nodeInfo/containerRuntimeVersion").to_string())),
        ],
        ("" | "events.k8s.io", "events") => event_cells(obj, now),
        ("", "podtemplates") => {
            let (c, im) = containers_and_images(obj, "/template/spec");
            vec![name, json!(c), json!(im), json!(labels_text(obj.pointer("/template/metadata/labels")))]
        }
        ("", "persistentvolumes") => {
            let claim = match obj.pointer("/spec/claimRef") {
                Some(c) if c.is_object() => format!("{}/{}", s(c, "/namespace"), s(c, "/name")),
                _ => String::new(),
            };
            vec![
                name,
                json!(s(obj, "/spec/capacity/storage")),
                json!(access_modes(arr(obj, "/spec/accessModes"))),
                json!(s(obj, "/spec/persistentVolumeReclaimPolicy")),
                json!(s(obj, "/status/phase")),
                json!(claim),
                json!(s(obj, "/spec/storageClassName")),
                json!(none_if_empty(s(obj, "/spec/volumeAttributesClassName").to_string())),
                json!(s(obj, "/status/reason")),
                age,
                json!(volume_mode(obj)),
            ]
        }
        ("", "componentstatuses") => {
            let healthy = arr(obj, "/conditions").iter().find(|c| s(c, "/type") == "Healthy");
            let (status, message, error) = match healthy {
                Some(c) => {
                    (if s(c, "/status") == "True" { "Healthy" } else { "Unhealthy" }, s(c, "/message"), s(c, "/error"))
                }
                None => ("Unknown", "", ""),
            };
            vec![name, json!(status), json!(message), json!(error)]
        }
        ("", "resourcequotas") => {
            let (request, limit) = quota_text(obj);
            vec![name, age, json!(request), json!(limit)]
        }
        ("autoscaling", "horizontalpodautoscalers") => {
            let min = obj
                .pointer("/spec/minReplicas")
                .and_then(|v| v.as_i64())
                .map(|n| n.to_string())
                .unwrap_or_else(|| "<unset>".into());
            vec![
                name,
                json!(format!("{}/{}", s(obj, "/spec/scaleTargetRef/kind"), s(obj, "/spec/scaleTargetRef/name"))),
                json!(hpa_targets(obj)),
                json!(min),
                json!(i(obj, "/spec/maxReplicas").to_string()),
                json!(i(obj, "/status/currentReplicas").to_string()),
                age,
            ]
        }
        ("policy", "poddisruptionbudgets") => {
            let int_or_string = |ptr: &str| match obj.pointer(ptr) {
                Some(Value::Number(n)) => n.to_string(),
                Some(Value::String(v)) => v.clone(),
                _ => "N/A".into(),
            };
            vec![
                name,
                json!(int_or_string("/spec/minAvailable")),
                json!(int_or_string("/spec/maxUnavailable")),
                json!(i(obj, "/status/disruptionsAllowed")),
                age,
            ]
        }
        ("networking.k8s.io", "networkpolicies") => {
            vec![name, json!(none_if_empty(selector_text(obj.pointer("/spec/podSelector")))), age]
        }
        ("networking.k8s.io", "ingressclasses") => {
            let params = match obj.pointer("/spec/parameters") {
                Some(p) if p.is_object() => {
                    let group = s(p, "/apiGroup");
                    let kind =
                        if group.is_empty() { s(p, "/kind").to_string() } else { format!("{}.{group}", s(p, "/kind")) };
                    format!("{kind}/{}", s(p, "/name"))
                }
                _ => "<none>".into(),
            };
            vec![name, json!(s(obj, "/spec/controller")), json!(params), age]
        }
        ("node.k8s.io", "runtimeclasses") => vec![name, json!(s(obj, "/handler")), age],
        ("storage.k8s.io", "volumeattachments") => vec![
            name,
            json!(s(obj, "/spec/attacher")),
            json!(s(obj, "/spec/source/persistentVolumeName")),
            json!(s(obj, "/spec/nodeName")),
            json!(obj.pointer("/status/attached").and_then(|v| v.as_bool()).unwrap_or(false)),
            age,
        ],
        ("storage.k8s.io", "csinodes") => vec![name, json!(arr(obj, "/spec/drivers").len()), age],
        ("storage.k8s.io", "csidrivers") => {
            let flag = |ptr: &str, default: bool| json!(obj.pointer(ptr).and_then(|v| v.as_bool()).unwrap_or(default));
            let tokens = match obj.pointer("/spec/tokenRequests").and_then(|v| v.as_array()) {
                Some(t) => t.iter().map(|r| s(r, "/audience")).collect::<Vec<_>>().join(","),
                None => "<unset>".into(),
            };
            let modes: Vec<&str> = arr(obj, "/spec/volumeLifecycleModes").iter().filter_map(|m| m.as_str()).collect();
            vec![
                name,
                flag("/spec/attachRequired", true),
                flag("/spec/podInfoOnMount", false),
                flag("/spec/storageCapacity", false),
                json!(tokens),
                flag("/spec/requiresRepublish", false),
                json!(if modes.is_empty() { "Persistent".to_string() } else { modes.join(",") }),
                age,
            ]
        }
        ("storage.k8s.io", "csistoragecapacities") => vec![
            name,
            json!(s(obj, "/storageClassName")),
            json!(obj.get("capacity").and_then(|v| v.as_str()).unwrap_or("<unset>")),
        ],
        ("admissionregistration.k8s.io", "mutatingwebhookconfigurations" | "validatingwebhookconfigurations") => {
            vec![name, json!(arr(obj, "/webhooks").len()), age]
        }
        ("admissionregistration.k8s.io", "validatingadmissionpolicies") => {
            let param = match obj.pointer("/spec/paramKind") {
                Some(p) if p.is_object() => format!("{}/{}", s(p, "/apiVersion"), s(p, "/kind")),
                _ => "<unset>".into(),
            };
            vec![name, json!(arr(obj, "/spec/validations").len()), json!(param), age]
        }
        ("admissionregistration.k8s.io", "validatingadmissionpolicybindings") => {
            let param = match obj.pointer("/spec/paramRef") {
                Some(p) if !s(p, "/name").is_empty() => {
                    if s(p, "/namespace").is_empty() {
                        s(p, "/name").to_string()
                    } else {
                        format!("{}/{}", s(p, "/namespace"), s(p, "/name"))
                    }
                }
                Some(p) if p.get("selector").is_some() => selector_text(p.get("selector")),
                _ => "<unset>".into(),
            };
            vec![name, json!(s(obj, "/spec/policyName")), json!(param), age]
        }
        ("", "persistentvolumeclaims") => vec![
            name,
            json!(s(obj, "/status/phase")),
            json!(s(obj, "/spec/volumeName")),
            json!(s(obj, "/status/capacity/storage")),
            json!(access_modes(arr(obj, "/status/accessModes"))),
            json!(none_if_empty(s(obj, "/spec/storageClassName").to_string())),
            json!(none_if_empty(s(obj, "/spec/volumeAttributesClassName").to_string())),
            age,
            json!(volume_mode(obj)),
        ],
        ("", "replicationcontrollers") | ("apps", "replicasets") => {
            let (c, im) = containers_and_images(obj, "/spec/template/spec");
            vec![
                name,
                json!(i(obj, "/spec/replicas")),
                json!(i(obj, "/status/replicas")),
                json!(i(obj, "/status/readyReplicas")),
                age,
                json!(c),
                json!(im),
                json!(none_if_empty(selector_text(obj.pointer("/spec/selector")))),
            ]
        }
        ("apps", "deployments") => {
            let (c, im) = containers_and_images(obj, "/spec/template/spec");
            vec![
                name,
                json!(format!("{}/{}", i(obj, "/status/readyReplicas"), i(obj, "/spec/replicas"))),
                json!(i(obj, "/status/updatedReplicas")),
                json!(i(obj, "/status/availableReplicas")),
                age,
                json!(c),
                json!(im),
                json!(none_if_empty(selector_text(obj.pointer("/spec/selector")))),
            ]
        }
        ("apps", "statefulsets") => {
            let (c, im) = containers_and_images(obj, "/spec/template/spec");
            vec![
                name,
                json!(format!("{}/{}", i(obj, "/status/readyReplicas"), i(obj, "/spec/replicas"))),
                age,
                json!(c),
                json!(im),
            ]
        }
        ("apps", "daemonsets") => {
            let (c, im) = containers_and_images(obj, "/spec/template/spec");
            let ns = selector_text(obj.pointer("/spec/template/spec/nodeSelector"));
            vec![
                name,
                json!(i(obj, "/status/desiredNumberScheduled")),
                json!(i(obj, "/status/currentNumberScheduled")),
                json!(i(obj, "/status/numberReady")),
                json!(i(obj, "/status/updatedNumberScheduled")),
                json!(i(obj, "/status/numberAvailable")),
                json!(none_if_empty(ns)),
                age,
                json!(c),
                json!(im),
                json!(none_if_empty(selector_text(obj.pointer("/spec/selector")))),
            ]
        }
        ("apps", "controllerrevisions") => {
            let owner = arr(obj, "/metadata/ownerReferences")
                .iter()
                .find(|o| o.get("controller").and_then(|c| c.as_bool()).unwrap_or(false))
                .map(|o| format!("{}/{}", s(o, "/kind").to_lowercase(), s(o, "/name")))
                .unwrap_or_else(|| "<none>".into());
            vec![name, json!(owner), json!(i(obj, "/revision")), age]
        }
        ("batch", "jobs") => {
            let (c, im) = containers_and_images(obj, "/spec/template/spec");
            let conds = arr(obj, "/status/conditions");
            let has = |t: &str| conds.iter().any(|c| s(c, "/type") == t && s(c, "/status") == "True");
            let status = if has("Complete") {
                "Complete"
            } else if has("Failed") {
                "Failed"
            } else if obj.pointer("/metadata/deletionTimestamp").is_some() {
                "Terminating"
            } else if has("Suspended") {
                "Suspended"
            } else if has("FailureTarget") {
                "FailureTarget"
            } else if has("SuccessCriteriaMet") {
                "SuccessCriteriaMet"
            } else {
                "Running"
            };
            let completions = match obj.pointer("/spec/completions").and_then(|v| v.as_i64()) {
                Some(n) => format!("{}/{n}", i(obj, "/status/succeeded")),
                None => format!(
                    "{}/1 of {}",
                    i(obj, "/status/succeeded"),
                    obj.pointer("/spec/parallelism").and_then(|v| v.as_i64()).unwrap_or(1)
                ),
            };
            let start = obj
                .pointer("/status/startTime")
                .and_then(|v| v.as_str())
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok());
            let end = obj
                .pointer("/status/completionTime")
                .and_then(|v| v.as_str())
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or(now);
            let duration =
                start.map(|st| human_duration((end - st.with_timezone(&Utc)).num_seconds())).unwrap_or_default();
            vec![
                name,
                json!(status),
                json!(completions),
                json!(duration),
                age,
                json!(c),
                json!(im),
                json!(none_if_empty(selector_text(obj.pointer("/spec/selector")))),
            ]
        }
        ("batch", "cronjobs") => {
            let (c, im) = containers_and_images(obj, "/spec/jobTemplate/spec/template/spec");
            let last = obj
                .pointer("/status/lastScheduleTime")
                .and_then(|v| v.as_str())
                .map(|t| age_of(Some(t), now))
                .unwrap_or_else(|| "<none>".into());
            vec![
                name,
                json!(s(obj, "/spec/schedule")),
                json!(none_if_empty(s(obj, "/spec/timeZone").to_string())),
                json!(obj.pointer("/spec/suspend").and_then(|v| v.as_bool()).unwrap_or(false)),
                json!(arr(obj, "/status/active").len()),
                json!(last),
                age,
                json!(c),
                json!(im),
                json!(none_if_empty(selector_text(obj.pointer("/spec/jobTemplate/spec/selector")))),
            ]
        }
        ("coordination.k8s.io", "leases") => vec![name, json!(s(obj, "/spec/holderIdentity")), age],
        ("discovery.k8s.io", "endpointslices") => {
            let ports: Vec<String> = arr(obj, "/ports").iter().map(|p| i(p, "/port").to_string()).collect();
            let addrs: Vec<String> = arr(obj, "/endpoints")
                .iter()
                .flat_map(|e| arr(e, "/addresses").iter().filter_map(|a| a.as_str().map(String::from)))
                .collect();
            vec![
                name,
                json!(s(obj, "/addressType")),
                json!(if ports.is_empty() { "<unset>".into() } else { ports.join(",") }),
                json!(endpoints_text(addrs)),
                age,
            ]
        }
        ("networking.k8s.io", "ingresses") => {
            let hosts: Vec<&str> =
                arr(obj, "/spec/rules").iter().map(|r| s(r, "/host")).filter(|h| !h.is_empty()).collect();
            let addr: Vec<&str> = arr(obj, "/status/loadBalancer/ingress")
                .iter()
                .map(|a| if s(a, "/ip").is_empty() { s(a, "/hostname") } else { s(a, "/ip") })
                .collect();
            let ports = if arr(obj, "/spec/tls").is_empty() { "80" } else { "80, 443" };
            vec![
                name,
                json!(none_if_empty(s(obj, "/spec/ingressClassName").to_string())),
                json!(if hosts.is_empty() { "*".to_string() } else { hosts.join(",") }),
                json!(addr.join(",")),
                json!(ports),
                age,
            ]
        }
        ("scheduling.k8s.io", "priorityclasses") => vec![
            name,
            json!(i(obj, "/value")),
            json!(obj.get("globalDefault").and_then(|v| v.as_bool()).unwrap_or(false)),
            age,
            json!(obj.get("preemptionPolicy").and_then(|v| v.as_str()).unwrap_or("PreemptLowerPriority")),
        ],
        ("storage.k8s.io", "storageclasses") => {
            let mut n = s(obj, "/metadata/name").to_string();
            let ann = obj.pointer("/metadata/annotations");
            if ann.and_then(|a| a.get("storageclass.kubernetes.io/is-default-class")).and_then(|v| v.as_str())
                == Some("true")
            {
                n.push_str(" (default)");
            }
            vec![
                json!(n),
                json!(s(obj, "/provisioner")),
                json!(obj.get("reclaimPolicy").and_then(|v| v.as_str()).unwrap_or("Delete")),
                json!(obj.get("volumeBindingMode").and_then(|v| v.as_str()).unwrap_or("Immediate")),
                json!(obj.get("allowVolumeExpansion").and_then(|v| v.as_bool()).unwrap_or(false).to_string()),
                age,
            ]
        }
        ("rbac.authorization.k8s.io", "roles" | "clusterroles") => {
            vec![name, json!(s(obj, "/metadata/creationTimestamp"))]
        }
        ("rbac.authorization.k8s.io", "rolebindings" | "clusterrolebindings") => {
            let subjects = arr(obj, "/subjects");
            let pick = |kind: &str| -> String {
                subjects
                    .iter()
                    .filter(|x| s(x, "/kind") == kind)
                    .map(|x| {
                        if kind == "ServiceAccount" {
                            format!("{}/{}", s(x, "/namespace"), s(x, "/name"))
                        } else {
                            s(x, "/name").to_string()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            vec![
                name,
                json!(format!("{}/{}", s(obj, "/roleRef/kind"), s(obj, "/roleRef/name"))),
                age,
                json!(pick("User")),
                json!(pick("Group")),
                json!(pick("ServiceAccount")),
            ]
        }
        ("certificates.k8s.io", "certificatesigningrequests") => {
            let conds: Vec<&str> = arr(obj, "/status/conditions").iter().map(|c| s(c, "/type")).collect();
            let mut cond = if conds.is_empty() { "Pending".to_string() } else { conds.join(",") };
            if obj.pointer("/status/certificate").is_some() {
                cond.push_str(",Issued");
            }
            let dur = obj
                .pointer("/spec/expirationSeconds")
                .and_then(|v| v.as_i64())
                .map(human_duration)
                .unwrap_or_else(|| "<none>".into());
            vec![name, age, json!(s(obj, "/spec/signerName")), json!(s(obj, "/spec/username")), json!(dur), json!(cond)]
        }
        _ => vec![name, json!(s(obj, "/metadata/creationTimestamp"))],
    }
}

/// One row.
pub fn row(info: &ResourceInfo, obj: &Value, include: IncludeObject, now: DateTime<Utc>) -> Value {
    let mut r = json!({"cells": cells(info, obj, now)});
    match include {
        IncludeObject::None => {}
        IncludeObject::Metadata => {
            r["object"] = json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata").cloned().unwrap_or(json!({}))});
        }
        IncludeObject::Object => r["object"] = obj.clone(),
    }
    r
}

/// A Table of objects.
pub fn table(
    info: &ResourceInfo,
    objects: &[Value],
    list_metadata: Value,
    include: IncludeObject,
    now: DateTime<Utc>,
) -> Value {
    let rows: Vec<Value> = objects.iter().map(|o| row(info, o, include, now)).collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_metadata, "columnDefinitions": column_definitions(info), "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::registry::{RESOURCES, lookup};

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-01-01T01:00:00Z").unwrap().with_timezone(&Utc)
    }

    #[test]
    fn durations_like_upstream() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(200), "3m20s");
        assert_eq!(human_duration(3600), "60m");
        assert_eq!(human_duration(4 * 3600 + 60), "4h1m");
        assert_eq!(human_duration(3 * 86400 + 3600), "3d1h");
        assert_eq!(human_duration(30 * 86400), "30d");
    }

    #[test]
    fn pods_show_status_and_restarts() {
        let pods = lookup("", "v1", "pods").unwrap();
        let pod = json!({"metadata": {"name": "p", "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "a"}], "nodeName": "n1"},
            "status": {"phase": "Running", "podIP": "10.42.0.5", "containerStatuses": [{"name": "a", "ready": false, "restartCount": 3,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}}, "lastState": {"terminated": {"finishedAt": "2024-01-01T00:58:00Z"}}}]}});
        let c = cells(pods, &pod, now());
        assert_eq!(
            c,
            vec![
                json!("p"),
                json!("0/1"),
                json!("CrashLoopBackOff"),
                json!("3 (2m ago)"),
                json!("60m"),
                json!("10.42.0.5"),
                json!("n1"),
                json!("<none>"),
                json!("<none>")
            ]
        );
    }

    #[test]
    fn services_ports_and_ips() {
        let svcs = lookup("", "v1", "services").unwrap();
        let svc = json!({"metadata": {"name": "web"}, "spec": {"type": "NodePort", "clusterIP": "10.43.0.9", "externalIPs": ["1.2.3.4"], "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}], "selector": {"app": "web"}}});
        let c = cells(svcs, &svc, now());
        assert_eq!(&c[1..5], &[json!("NodePort"), json!("10.43.0.9"), json!("1.2.3.4"), json!("80:30080/TCP")]);
        assert_eq!(c[6], json!("app=web"));
    }

    #[test]
    fn autoscaler_targets_like_upstream() {
        let v2 = lookup("autoscaling", "v2", "horizontalpodautoscalers").unwrap();
        let hpa = json!({"metadata": {"name": "web"}, "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 5,
            "metrics": [
                {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}},
                {"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "1k"}}},
                {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}}]},
            "status": {"currentReplicas": 2, "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 41}}}]}});
        let c = cells(v2, &hpa, now());
        assert_eq!(
            &c[1..6],
            &[
                json!("Deployment/web"),
                json!("cpu: 41%/80%, <unknown>/1k + 1 more..."),
                json!("<unset>"),
                json!("5"),
                json!("2")
            ]
        );
        let v1 = lookup("autoscaling", "v1", "horizontalpodautoscalers").unwrap();
        let hpa = json!({"spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 1, "maxReplicas": 3, "targetCPUUtilizationPercentage": 50}});
        assert_eq!(cells(v1, &hpa, now())[2], json!("cpu: <unknown>/50%"));
    }

    #[test]
    fn quotas_volumes_and_budgets() {
        let rq = lookup("", "v1", "resourcequotas").unwrap();
        let quota = json!({"metadata": {"name": "q"}, "status": {"hard": {"pods": "10", "limits.cpu": "2", "requests.memory": "1Gi"}, "used": {"pods": "3"}}});
        let c = cells(rq, &quota, now());
        assert_eq!(&c[2..], &[json!("pods: 3/10, requests.memory: 0/1Gi"), json!("limits.cpu: 0/2")]);

        let pvs = lookup("", "v1", "persistentvolumes").unwrap();
        let pv = json!({"metadata": {"name": "pv1"}, "spec": {"capacity": {"storage": "5Gi"}, "accessModes": ["ReadWriteOnce", "ReadOnlyMany"],
            "persistentVolumeReclaimPolicy": "Retain", "claimRef": {"namespace": "default", "name": "data"}, "storageClassName": "local", "volumeMode": "Filesystem"},
            "status": {"phase": "Bound"}});
        let c = cells(pvs, &pv, now());
        assert_eq!(
            &c[1..8],
            &[
                json!("5Gi"),
                json!("RWO,ROX"),
                json!("Retain"),
                json!("Bound"),
                json!("default/data"),
                json!("local"),
                json!("<none>")
            ]
        );
        assert_eq!(c[10], json!("Filesystem"));

        let pdbs = lookup("policy", "v1", "poddisruptionbudgets").unwrap();
        let pdb =
            json!({"metadata": {"name": "b"}, "spec": {"minAvailable": "50%"}, "status": {"disruptionsAllowed": 1}});
        assert_eq!(&cells(pdbs, &pdb, now())[1..4], &[json!("50%"), json!("N/A"), json!(1)]);
    }

    #[test]
    fn both_event_shapes_print_alike() {
        let core = lookup("", "v1", "events").unwrap();
        let ev = json!({"metadata": {"name": "e1"}, "type": "Normal", "reason": "Scheduled", "message": "assigned",
            "involvedObject": {"kind": "Pod", "name": "p", "fieldPath": "spec.containers{a}"}, "source": {"component": "scheduler"},
            "firstTimestamp": "2024-01-01T00:00:00Z", "lastTimestamp": "2024-01-01T00:59:00Z", "count": 3});
        assert_eq!(
            cells(core, &ev, now()),
            vec![
                json!("60s"),
                json!("Normal"),
                json!("Scheduled"),
                json!("pod/p"),
                json!("spec.containers{a}"),
                json!("scheduler"),
                json!("assigned"),
                json!("60m"),
                json!("3"),
                json!("e1")
            ]
        );
        let new = lookup("events.k8s.io", "v1", "events").unwrap();
        let ev = json!({"metadata": {"name": "e2"}, "type": "Warning", "reason": "Failed", "note": "boom", "eventTime": "2024-01-01T00:58:00.000000Z",
            "regarding": {"kind": "Node", "name": "n1"}, "reportingController": "skiff", "reportingInstance": "box"});
        let c = cells(new, &ev, now());
        assert_eq!(&c[..4], &[json!("2m"), json!("Warning"), json!("Failed"), json!("node/n1")]);
        assert_eq!(&c[5..9], &[json!("skiff, box"), json!("boom"), json!("2m"), json!("1")]);
    }

    #[test]
    fn odd_shapes_never_panic() {
        for r in RESOURCES {
            for v in [json!({}), json!(null), json!({"metadata": 5, "spec": "x", "status": []})] {
                let t = table(r, &[v], json!({}), IncludeObject::Metadata, now());
                assert_eq!(
                    t["rows"][0]["cells"].as_array().unwrap().len(),
                    t["columnDefinitions"].as_array().unwrap().len(),
                    "{r:?}"
                );
            }
        }
    }
}
