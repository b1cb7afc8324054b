//! Defaulting: the values upstream fills in when a field is left out, so stored objects look
//! the same as on any cluster (`pkg/apis/*/v1/defaults.go`).
//!
//! Runs on create and update, after system metadata is set and before validation. It fills
//! only absent fields and never fails.

use base64::Engine;
use serde_json::{Map, Value, json};

use crate::api::registry::ResourceInfo;

fn obj_at<'a>(v: &'a mut Value, path: &[&str]) -> Option<&'a mut Map<String, Value>> {
    let mut cur = v;
    for k in path {
        let m = cur.as_object_mut()?;
        cur = m.entry(k.to_string()).or_insert_with(|| json!({}));
    }
    cur.as_object_mut()
}

fn existing<'a>(v: &'a mut Value, path: &[&str]) -> Option<&'a mut Map<String, Value>> {
    let mut cur = v;
    for k in path {
        cur = cur.as_object_mut()?.get_mut(*k)?;
    }
    cur.as_object_mut()
}

fn set_default(m: &mut Map<String, Value>, key: &str, value: Value) {
    if m.get(key).is_none_or(|v| v.is_null()) {
        m.insert(key.to_string(), value);
    }
}

/// Applies upstream defaults for the kind in place.
pub fn apply_defaults(info: &ResourceInfo, obj: &mut Value) {
    if !obj.is_object() {
        return;
    }
    match (info.group, info.plural) {
        ("", "pods") => {
            if let Some(spec) = existing(obj, &["spec"]) {
                pod_spec(spec);
            }
        }
        ("", "podtemplates") => template(obj, &["template"]),
        ("", "replicationcontrollers") => {
            if let Some(spec) = existing(obj, &["spec"]) {
                set_default(spec, "replicas", json!(1));
                set_default(spec, "minReadySeconds", json!(0));
                if spec.get("selector").is_none()
                    && let Some(l) = spec.get("template").and_then(|t| t.pointer("/metadata/labels")).cloned()
                {
                    spec.insert("selector".into(), l);
                }
            }
            template(obj, &["spec", "template"]);
        }
        ("apps", "deployments") => {
            if let Some(spec) = existing(obj, &["spec"]) {
                set_default(spec, "replicas", json!(1));
                set_default(spec, "revisionHistoryLimit", json!(10));
                set_default(spec, "progressDeadlineSeconds", json!(600));
                rolling_update(spec, "strategy", &[("maxUnavailable", json!("25%")), ("maxSurge", json!("25%"))]);
            }
            template(obj, &["spec", "template"]);
        }
        ("autoscaling", "horizontalpodautoscalers") => {
            if let Some(spec) = existing(obj, &["spec"]) {
                set_default(spec, "minReplicas", json!(1));
                // autoscaling/v2 scales on 80% CPU when no metric is given (v1 gets the same
                // through conversion from the stored v2 object).
                if info.version == "v2" && spec.get("metrics").and_then(|m| m.as_array()).is_none_or(|m| m.is_empty()) {
                    spec.insert(
                        "metrics".into(),
                        json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]),
                    );
                }
            }
        }
        ("apps", "replicasets") => {
            if let Some(spec) = existing(obj, &["spec"]) {
                set_default(spec, "replicas", json!(1));
            }
            template(obj, &["spec", "template"]);
        }
        ("apps", "daemonsets") => {
            if let Some(spec) = existing(obj, &["spec"]) {
                set_default(spec, "revisionHistoryLimit", json!(10));
                rolling_update(spec, "updateStrategy", &[("maxUnavailable", json!(1)), ("maxSurge", json!(0))]);
            }
            template(obj, &["spec", "template"]);
        }
        ("apps", "statefulsets") => {
            if let Some(spec) = existing(obj, &["spec"]) {
                set_default(spec, "replicas", json!(1));
                set_default(spec, "podManagementPolicy", json!("OrderedReady"));
                set_default(spec, "revisionHistoryLimit", json!(10));
                set_default(
                    spec,
                    "persistentVolumeClaimRetentionPolicy",
                    json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
                );
                rolling_update(spec, "updateStrategy", &[("partition", json!(0))]);
                if let Some(Value::Array(claims)) = spec.get_mut("volumeClaimTemplates") {
                    for c in claims {
                        if let Some(s) = existing(c, &["spec"]) {
                            set_default(s, "volumeMode", json!("Filesystem"));
                        }
                    }
                }
            }
            template(obj, &["spec", "template"]);
        }
        ("batch", "jobs") => {
            let uid = obj.pointer("/metadata/uid").and_then(|u| u.as_str()).unwrap_or("").to_string();
            let name = obj.pointer("/metadata/name").and_then(|u| u.as_str()).unwrap_or("").to_string();
            if let Some(spec) = existing(obj, &["spec"]) {
                job_spec(spec, &uid, &name);
            }
            template(obj, &["spec", "template"]);
        }
        ("batch", "cronjobs") => {
            if let Some(spec) = existing(obj, &["spec"]) {
                set_default(spec, "concurrencyPolicy", json!("Allow"));
                set_default(spec, "suspend", json!(false));
                set_default(spec, "successfulJobsHistoryLimit", json!(3));
                set_default(spec, "failedJobsHistoryLimit", json!(1));
            }
            template(obj, &["spec", "jobTemplate", "spec", "template"]);
        }
        ("", "services") => {
            if let Some(spec) = existing(obj, &["spec"]) {
                service_spec(spec);
            }
        }
        ("", "secrets") => {
            if let Some(m) = obj.as_object_mut() {
                set_default(m, "type", json!("Opaque"));
                // stringData is write-only: merged into data, never stored.
                if let Some(Value::Object(sd)) = m.remove("stringData") {
                    let data = m.entry("data").or_insert_with(|| json!({}));
                    if let Some(d) = data.as_object_mut() {
                        for (k, v) in sd {
                            let text = v.as_str().unwrap_or_default();
                            d.insert(k, json!(base64::engine::general_purpose::STANDARD.encode(text)));
                        }
                    }
                }
            }
        }
        ("", "namespaces") => {
            let name = obj.pointer("/metadata/name").and_then(|n| n.as_str()).unwrap_or("").to_string();
            if let Some(spec) = obj_at(obj, &["spec"]) {
                set_default(spec, "finalizers", json!(["kubernetes"]));
            }
            if !name.is_empty()
                && let Some(labels) = obj_at(obj, &["metadata", "labels"])
            {
                labels.insert("kubernetes.io/metadata.name".into(), json!(name));
            }
        }
        ("", "persistentvolumeclaims") => {
            if let Some(spec) = existing(obj, &["spec"]) {
                set_default(spec, "volumeMode", json!("Filesystem"));
            }
        }
        ("", "persistentvolumes") => {
            if let Some(spec) = existing(obj, &["spec"]) {
                set_default(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
                set_default(spec, "volumeMode", json!("Filesystem"));
            }
        }
        ("", "endpoints") => {
            if let Some(Value::Array(subsets)) = obj.get_mut("subsets") {
                for s in subsets {
                    if let Some(Value::Array(ports)) = s.get_mut("ports") {
                        for p in ports.iter_mut().filter_map(|p| p.as_object_mut()) {
                            set_default(p, "protocol", json!("TCP"));
                        }
                    }
                }
            }
        }
        ("discovery.k8s.io", "endpointslices") => {
            if let Some(Value::Array(ports)) = obj.get_mut("ports") {
                for p in ports.iter_mut().filter_map(|p| p.as_object_mut()) {
                    set_default(p, "protocol", json!("TCP"));
                }
            }
        }
        ("rbac.authorization.k8s.io", "rolebindings" | "clusterrolebindings") => {
            if let Some(Value::Array(subjects)) = obj.get_mut("subjects") {
                for s in subjects.iter_mut().filter_map(|s| s.as_object_mut()) {
                    let api_group = match s.get("kind").and_then(|k| k.as_str()) {
                        Some("User" | "Group") => "rbac.authorization.k8s.io",
                        _ => "",
                    };
                    set_default(s, "apiGroup", json!(api_group));
                }
            }
        }
        ("scheduling.k8s.io", "priorityclasses") => {
            if let Some(m) = obj.as_object_mut() {
                set_default(m, "preemptionPolicy", json!("PreemptLowerPriority"));
            }
        }
        _ => {}
    }
}

/// A `RollingUpdate` strategy by default, with its parameters' defaults.
fn rolling_update(spec: &mut Map<String, Value>, key: &str, params: &[(&str, Value)]) {
    let strategy = spec.entry(key).or_insert_with(|| json!({}));
    let Some(st) = strategy.as_object_mut() else { return };
    set_default(st, "type", json!("RollingUpdate"));
    if st.get("type").and_then(|t| t.as_str()) == Some("RollingUpdate") {
        let ru = st.entry("rollingUpdate").or_insert_with(|| json!({}));
        if let Some(ru) = ru.as_object_mut() {
            for (k, v) in params {
                set_default(ru, k, v.clone());
            }
        }
    }
}

fn template(obj: &mut Value, path: &[&str]) {
    let mut full: Vec<&str> = path.to_vec();
    full.push("spec");
    if let Some(spec) = existing(obj, &full) {
        pod_spec(spec);
    }
}

/// Pod spec defaults, also applied to every pod template.
pub fn pod_spec(spec: &mut Map<String, Value>) {
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "enableServiceLinks", json!(true));
    for key in ["containers", "initContainers", "ephemeralContainers"] {
        if let Some(Value::Array(cs)) = spec.get_mut(key) {
            for c in cs.iter_mut().filter_map(|c| c.as_object_mut()) {
                container(c);
            }
        }
    }
    if let Some(Value::Array(vols)) = spec.get_mut("volumes") {
        for v in vols.iter_mut().filter_map(|v| v.as_object_mut()) {
            for (kind, mode_key) in [
                ("configMap", "defaultMode"),
                ("secret", "defaultMode"),
                ("projected", "defaultMode"),
                ("downwardAPI", "defaultMode"),
            ] {
                if let Some(src) = v.get_mut(kind).and_then(|s| s.as_object_mut()) {
                    set_default(src, mode_key, json!(420));
                }
            }
            if let Some(Value::Object(hp)) = v.get_mut("hostPath") {
                set_default(hp, "type", json!(""));
            }
        }
    }
}

fn container(c: &mut Map<String, Value>) {
    let image = c.get("image").and_then(|i| i.as_str()).unwrap_or("").to_string();
    set_default(c, "imagePullPolicy", json!(pull_policy(&image)));
    set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(c, "terminationMessagePolicy", json!("File"));
    set_default(c, "resources", json!({}));
    if let Some(Value::Array(ports)) = c.get_mut("ports") {
        for p in ports.iter_mut().filter_map(|p| p.as_object_mut()) {
            set_default(p, "protocol", json!("TCP"));
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(Value::Object(p)) = c.get_mut(probe) {
            set_default(p, "timeoutSeconds", json!(1));
            set_default(p, "periodSeconds", json!(10));
            set_default(p, "successThreshold", json!(1));
            set_default(p, "failureThreshold", json!(3));
            if let Some(Value::Object(h)) = p.get_mut("httpGet") {
                set_default(h, "path", json!("/"));
                set_default(h, "scheme", json!("HTTP"));
            }
        }
    }
}

/// `Always` for `:latest` or untagged images, else `IfNotPresent` (digests count as tags).
pub fn pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn job_spec(spec: &mut Map<String, Value>, uid: &str, name: &str) {
    let (c, p) =
        (spec.get("completions").is_some_and(|v| !v.is_null()), spec.get("parallelism").is_some_and(|v| !v.is_null()));
    if !c && !p {
        spec.insert("completions".into(), json!(1));
        spec.insert("parallelism".into(), json!(1));
    }
    set_default(spec, "parallelism", json!(1));
    set_default(spec, "backoffLimit", json!(6));
    set_default(spec, "completionMode", json!("NonIndexed"));
    set_default(spec, "suspend", json!(false));
    set_default(spec, "manualSelector", Value::Null);
    if spec.get("manualSelector").is_some_and(|v| v.is_null()) {
        spec.remove("manualSelector");
    }
    let pod_failure_policy = spec.get("podFailurePolicy").is_some_and(|v| !v.is_null());
    set_default(spec, "podReplacementPolicy", json!(if pod_failure_policy { "Failed" } else { "TerminatingOrFailed" }));
    let manual = spec.get("manualSelector").and_then(|m| m.as_bool()).unwrap_or(false);
    if !manual && !uid.is_empty() && spec.get("selector").is_none() {
        spec.insert("selector".into(), json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}));
        if let Some(labels) = spec.get_mut("template").and_then(|t| obj_at(t, &["metadata", "labels"])) {
            for (k, v) in [
                ("batch.kubernetes.io/controller-uid", uid),
                ("controller-uid", uid),
                ("batch.kubernetes.io/job-name", name),
                ("job-name", name),
            ] {
                set_default(labels, k, json!(v));
            }
        }
    }
}

fn service_spec(spec: &mut Map<String, Value>) {
    set_default(spec, "type", json!("ClusterIP"));
    let t = spec.get("type").and_then(|t| t.as_str()).unwrap_or("ClusterIP").to_string();
    if t != "ExternalName" {
        set_default(spec, "sessionAffinity", json!("None"));
        set_default(spec, "ipFamilies", json!(["IPv4"]));
        set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
        set_default(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if t == "NodePort" || t == "LoadBalancer" {
        set_default(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if t == "LoadBalancer" {
        set_default(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    if spec.get("sessionAffinity").and_then(|s| s.as_str()) == Some("ClientIP") {
        set_default(spec, "sessionAffinityConfig", json!({"clientIP": {"timeoutSeconds": 10800}}));
    }
    if let Some(Value::Array(ports)) = spec.get_mut("ports") {
        for p in ports.iter_mut().filter_map(|p| p.as_object_mut()) {
            set_default(p, "protocol", json!("TCP"));
            if let Some(port) = p.get("port").cloned() {
                set_default(p, "targetPort", port);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::registry::lookup;

    #[test]
    fn minimal_pod() {
        let mut p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox", "ports": [{"containerPort": 80}]}]}});
        apply_defaults(lookup("", "v1", "pods").unwrap(), &mut p);
        assert_eq!(
            p["spec"],
            json!({"containers": [{"name": "c", "image": "busybox", "ports": [{"containerPort": 80, "protocol": "TCP"}], "imagePullPolicy": "Always",
                "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File", "resources": {}}],
                "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst", "securityContext": {},
                "schedulerName": "default-scheduler", "enableServiceLinks": true})
        );
        assert_eq!(pull_policy("busybox:1.36"), "IfNotPresent");
        assert_eq!(pull_policy("registry:5000/busybox"), "Always");
        assert_eq!(pull_policy("busybox@sha256:abc"), "IfNotPresent");
    }

    #[test]
    fn deployment_service_secret_job() {
        let mut d = json!({"spec": {"selector": {}, "template": {"spec": {"containers": []}}}});
        apply_defaults(lookup("apps", "v1", "deployments").unwrap(), &mut d);
        assert_eq!(
            d["spec"]["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        assert_eq!((d["spec"]["replicas"].clone(), d["spec"]["revisionHistoryLimit"].clone()), (json!(1), json!(10)));
        let mut s = json!({"spec": {"ports": [{"port": 80}]}});
        apply_defaults(lookup("", "v1", "services").unwrap(), &mut s);
        assert_eq!(s["spec"]["ports"][0], json!({"port": 80, "protocol": "TCP", "targetPort": 80}));
        assert_eq!(s["spec"]["type"], "ClusterIP");
        let mut sec = json!({"stringData": {"password": "hunter2"}});
        apply_defaults(lookup("", "v1", "secrets").unwrap(), &mut sec);
        assert_eq!(sec, json!({"type": "Opaque", "data": {"password": "aHVudGVyMg=="}}));
        let mut j = json!({"metadata": {"name": "j", "uid": "u1"}, "spec": {"template": {"spec": {"containers": [], "restartPolicy": "Never"}}}});
        apply_defaults(lookup("batch", "v1", "jobs").unwrap(), &mut j);
        assert_eq!(j["spec"]["selector"], json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "u1"}}));
        assert_eq!(j["spec"]["template"]["metadata"]["labels"]["job-name"], "j");
        assert_eq!((j["spec"]["completions"].clone(), j["spec"]["backoffLimit"].clone()), (json!(1), json!(6)));
    }
}
