//! Field selectors (`metadata.name=x,spec.nodeName!=`), limited per resource to the fields
//! upstream supports.

use serde_json::Value;

/// A field selector error (a 400 for the client).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FieldSelectorError(pub String);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Req {
    field: String,
    equal: bool,
    value: String,
}

/// A parsed field selector.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    reqs: Vec<Req>,
}

/// Field labels every resource supports.
const COMMON: &[&str] = &["metadata.name", "metadata.namespace"];

/// Field labels upstream supports for a resource, beyond `metadata.name`/`metadata.namespace`.
pub fn supported(group: &str, plural: &str) -> &'static [&'static str] {
    match (group, plural) {
        ("", "pods") => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.podIPs",
            "status.nominatedNodeName",
        ],
        ("", "events") => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        // The same labels under the names events.k8s.io/v1 gives the fields.
        ("events.k8s.io", "events") => &[
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
            "regarding.apiVersion",
            "regarding.resourceVersion",
            "regarding.fieldPath",
            "reason",
            "reportingController",
            "type",
        ],
        ("", "secrets") => &["type"],
        ("", "namespaces") => &["status.phase"],
        ("", "nodes") => &["spec.unschedulable"],
        ("", "replicationcontrollers") | ("apps", "replicasets") => &["status.replicas"],
        ("batch", "jobs") => &["status.successful"],
        ("certificates.k8s.io", "certificatesigningrequests") => &["spec.signerName"],
        ("", "persistentvolumeclaims") => &[],
        _ => &[],
    }
}

/// The value a field label reads from an object, as upstream's field set renders it.
fn field_value(obj: &Value, field: &str) -> Vec<String> {
    let s = |p: &str| obj.pointer(p).and_then(|v| v.as_str()).unwrap_or("").to_string();
    match field {
        "metadata.name" => vec![s("/metadata/name")],
        "metadata.namespace" => vec![s("/metadata/namespace")],
        "spec.hostNetwork" => {
            vec![obj.pointer("/spec/hostNetwork").and_then(|v| v.as_bool()).unwrap_or(false).to_string()]
        }
        "spec.unschedulable" => {
            vec![obj.pointer("/spec/unschedulable").and_then(|v| v.as_bool()).unwrap_or(false).to_string()]
        }
        "status.podIPs" => {
            let ips: Vec<String> = obj
                .pointer("/status/podIPs")
                .and_then(|v| v.as_array())
                .map(|a| a.iter().filter_map(|i| i.get("ip").and_then(|x| x.as_str()).map(String::from)).collect())
                .unwrap_or_default();
            if ips.is_empty() { vec![String::new()] } else { ips }
        }
        "status.replicas" | "status.successful" => {
            let p = format!("/{}", field.replace('.', "/"));
            vec![obj.pointer(&p).and_then(|v| v.as_i64()).unwrap_or(0).to_string()]
        }
        "source" => vec![s("/source/component")],
        other => vec![s(&format!("/{}", other.replace('.', "/")))],
    }
}

/// Splits on unescaped `sep` (upstream escapes `\`, `,` and `=` with a backslash).
fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.last_mut().expect("non-empty").push('\\');
                out.last_mut().expect("non-empty").push(n);
            }
        } else if c == sep {
            out.push(String::new());
        } else {
            out.last_mut().expect("non-empty").push(c);
        }
    }
    out
}

fn unescape(s: &str) -> Result<String, FieldSelectorError> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(n @ ('\\' | ',' | '=')) => out.push(n),
                Some(n) => {
                    return Err(FieldSelectorError(format!("invalid field selector: invalid escape sequence: \\{n}")));
                }
                None => return Err(FieldSelectorError("invalid field selector: unterminated escape".into())),
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

impl FieldSelector {
    /// Parses `a=b`, `a==b`, `a!=b`, comma-joined.
    pub fn parse(s: &str) -> Result<Self, FieldSelectorError> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(FieldSelector { reqs });
        }
        for part in split_unescaped(s, ',') {
            let (field, equal, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v)
            } else {
                return Err(FieldSelectorError(format!("invalid selector: '{s}'; can't understand '{part}'")));
            };
            reqs.push(Req { field: field.trim().to_string(), equal, value: unescape(value.trim())? });
        }
        Ok(FieldSelector { reqs })
    }

    /// Checks that every field is supported for the resource.
    pub fn validate_for(&self, group: &str, plural: &str) -> Result<(), FieldSelectorError> {
        for r in &self.reqs {
            if !COMMON.contains(&r.field.as_str()) && !supported(group, plural).contains(&r.field.as_str()) {
                return Err(FieldSelectorError(format!("field label not supported: {}", r.field)));
            }
        }
        Ok(())
    }

    /// The name every match must have (`metadata.name=x`), if the selector pins one.
    pub fn exact_name(&self) -> Option<&str> {
        self.exact("metadata.name")
    }

    /// The value every match must have in `field` (`field=value`), if the selector pins one.
    pub fn exact(&self, field: &str) -> Option<&str> {
        self.reqs.iter().find(|r| r.field == field && r.equal).map(|r| r.value.as_str())
    }

    /// Whether an object matches every requirement.
    pub fn matches(&self, obj: &Value) -> bool {
        self.reqs.iter().all(|r| {
            let vals = field_value(obj, &r.field);
            let hit = vals.contains(&r.value);
            if r.equal { hit } else { !hit }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parse_match_and_support() {
        let f = FieldSelector::parse("spec.nodeName=n1,status.phase!=Failed").unwrap();
        assert!(f.matches(&json!({"spec": {"nodeName": "n1"}, "status": {"phase": "Running"}})));
        assert!(!f.matches(&json!({"spec": {"nodeName": "n2"}})));
        assert!(f.validate_for("", "pods").is_ok());
        assert_eq!(
            f.validate_for("", "configmaps").unwrap_err().to_string(),
            "field label not supported: spec.nodeName"
        );
        assert!(FieldSelector::parse("spec.nodeName=").unwrap().matches(&json!({"spec": {}})));
        assert!(FieldSelector::parse("bogus").is_err());
        assert!(FieldSelector::parse("spec.hostNetwork=false").unwrap().matches(&json!({})));
        let esc = FieldSelector::parse(r"metadata.name=a\,b").unwrap();
        assert!(esc.matches(&json!({"metadata": {"name": "a,b"}})));
    }
}
