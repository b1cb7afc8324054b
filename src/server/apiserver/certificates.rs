//! CertificateSigningRequests: what a create records and admits, and what updates of the
//! object, its `/status` and its `/approval` may change, as upstream's CSR strategies.
//!
//! Create: the requester's identity goes into `spec.username/uid/groups/extra` (whatever the
//! body said) and the status starts empty, so nobody creates a pre-approved request. The
//! request must parse and carry a valid signature; a request for a kubelet signer must have the
//! subject, names and usages that signer issues (upstream's `ValidateKubeletClientCSR` and
//! `ValidateKubeletServingCSR`). A node may ask only for its own name; a bootstrapper (a join
//! token) only for a kubelet client certificate, and only for a node name its box owns (the
//! node password, [`super::join`]).
//!
//! Updates: the spec never changes; `/status` may not touch the Approved and Denied
//! conditions, `/approval` changes only conditions; the certificate is set once, and only on
//! an approved request.
//!
//! Invariant: approving and signing are the controllers' (`csrapproving`, `csrsigning`);
//! this file only keeps the object's rules.

use serde_json::{Value, json};

use crate::api::field_error::FieldError;
use crate::api::meta;
use crate::api::status::ApiError;
use crate::pki::csr::{self, NODE_USER_PREFIX, NODES_GROUP, SIGNER_KUBELET_CLIENT, SIGNER_KUBELET_SERVING};

use super::ApiServer;
use super::auth::{MASTERS, UserInfo};
use super::join::BOOTSTRAPPERS;

const GROUP: &str = "certificates.k8s.io";
const KIND: &str = "CertificateSigningRequest";

fn in_group(user: &UserInfo, g: &str) -> bool {
    user.groups.iter().any(|x| x == g)
}

fn forbidden(name: &str, msg: String) -> ApiError {
    ApiError::forbidden(GROUP, "certificatesigningrequests", name, msg)
}

/// The request PEM of a CSR object (`spec.request`, base64 in JSON).
pub fn request_pem(obj: &Value) -> Option<Vec<u8>> {
    use base64::Engine;
    let b64 = obj.pointer("/spec/request")?.as_str()?;
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

/// The usages of a CSR object.
pub fn usages(obj: &Value) -> Vec<String> {
    obj.pointer("/spec/usages")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|u| u.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

impl ApiServer {
    /// Admission of a new CSR from `user` (see the module's comment). `node_password` is the
    /// joining box's, when it sent one.
    pub(super) async fn admit_csr(
        &self,
        user: &UserInfo,
        obj: &mut Value,
        node_password: Option<&str>,
        dry_run: bool,
    ) -> Result<(), ApiError> {
        let name = meta::name(obj).to_string();
        if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("username".into(), json!(user.name));
            if user.uid.is_empty() {
                spec.remove("uid");
            } else {
                spec.insert("uid".into(), json!(user.uid));
            }
            spec.insert("groups".into(), json!(user.groups));
            if user.extra.is_empty() {
                spec.remove("extra");
            } else {
                let extra: serde_json::Map<String, Value> =
                    user.extra.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
                spec.insert("extra".into(), Value::Object(extra));
            }
        }
        if let Some(m) = obj.as_object_mut() {
            m.insert("status".into(), json!({}));
        }
        let invalid = |field: &str, detail: String| {
            ApiError::invalid(GROUP, KIND, &name, &[FieldError::invalid(field, json!("<omitted>"), detail)])
        };
        let signer = obj.pointer("/spec/signerName").and_then(Value::as_str).unwrap_or("").to_string();
        if signer.is_empty() {
            return Err(ApiError::invalid(GROUP, KIND, &name, &[FieldError::required("spec.signerName", "")]));
        }
        let pem = request_pem(obj)
            .ok_or_else(|| invalid("spec.request", "PEM block type must be CERTIFICATE REQUEST".into()))?;
        let subject = csr::parse_request(&pem).map_err(|e| invalid("spec.request", e))?;
        csr::validate_for_signer(&signer, &subject, &usages(obj)).map_err(|e| invalid("spec.request", e))?;
        if in_group(user, MASTERS) {
            return Ok(());
        }
        let kubelet_signer = signer == SIGNER_KUBELET_CLIENT || signer == SIGNER_KUBELET_SERVING;
        if in_group(user, NODES_GROUP) && kubelet_signer && subject.common_name != user.name {
            return Err(forbidden(
                &name,
                format!(
                    "node \"{}\" may only request certificates for itself, not for \"{}\"",
                    user.name, subject.common_name
                ),
            ));
        }
        if in_group(user, BOOTSTRAPPERS) {
            if signer != SIGNER_KUBELET_CLIENT {
                return Err(forbidden(
                    &name,
                    format!("a join token may only request certificates of signer \"{SIGNER_KUBELET_CLIENT}\""),
                ));
            }
            let node = subject.common_name.strip_prefix(NODE_USER_PREFIX).unwrap_or_default();
            if !dry_run {
                self.check_node_password(node, node_password).await?;
            }
        }
        Ok(())
    }
}

fn conditions(v: &Value) -> Vec<Value> {
    v.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default()
}

fn is_approval(c: &Value) -> bool {
    matches!(c.get("type").and_then(Value::as_str), Some("Approved" | "Denied"))
}

fn has_condition(v: &Value, t: &str) -> bool {
    conditions(v).iter().any(|c| c.get("type").and_then(Value::as_str) == Some(t))
}

/// The object an update of a CSR (`subresource` "", "status" or "approval") results in.
pub fn merge_update(subresource: &str, desired: Value, current: &Value, name: &str) -> Result<Value, ApiError> {
    let mut next = desired;
    let invalid = |field: &str, detail: &str| {
        ApiError::invalid(GROUP, KIND, name, &[FieldError::forbidden(field, detail.to_string())])
    };
    let Some(m) = next.as_object_mut() else {
        return Err(ApiError::bad_request("the body of the request is not a JSON object"));
    };
    match current.get("spec") {
        Some(s) => m.insert("spec".into(), s.clone()),
        None => m.remove("spec"),
    };
    let cur_status = current.get("status").cloned().unwrap_or_else(|| json!({}));
    let new_status = match subresource {
        "status" => {
            let mut st = m.get("status").cloned().unwrap_or_else(|| json!({}));
            let wanted = conditions(&next_or(&st));
            let mut conds: Vec<Value> = conditions(current).into_iter().filter(is_approval).collect();
            conds.extend(wanted.into_iter().filter(|c| !is_approval(c)));
            if let Some(o) = st.as_object_mut() {
                o.insert("conditions".into(), json!(conds));
            }
            st
        }
        "approval" => {
            let wanted = m.get("status").map(|s| conditions(&next_or(s))).unwrap_or_default();
            let mut st = cur_status.clone();
            if let Some(o) = st.as_object_mut() {
                o.insert("conditions".into(), json!(wanted));
            }
            st
        }
        _ => cur_status.clone(),
    };
    let mut new_status = new_status;
    stamp_conditions(&mut new_status, &cur_status);
    let wrapped = json!({"status": new_status});
    if has_condition(&wrapped, "Approved") && has_condition(&wrapped, "Denied") {
        return Err(invalid("status.conditions", "Approved and Denied conditions are mutually exclusive"));
    }
    for t in ["Approved", "Denied"] {
        if has_condition(current, t) && !has_condition(&wrapped, t) {
            return Err(invalid("status.conditions", &format!("updates may not remove a condition of type \"{t}\"")));
        }
    }
    let old_cert = cur_status.get("certificate");
    let new_cert = new_status.get("certificate");
    if old_cert.is_some() && old_cert != new_cert {
        return Err(invalid("status.certificate", "updates may not modify existing certificate content"));
    }
    if old_cert.is_none() && new_cert.is_some_and(|c| c.as_str().is_some_and(|s| !s.is_empty())) {
        if !has_condition(&wrapped, "Approved") {
            return Err(invalid(
                "status.certificate",
                "certificate may only be set if the Approved condition is present",
            ));
        }
        if has_condition(&wrapped, "Failed") {
            return Err(invalid("status.certificate", "certificate may not be set if the Failed condition is present"));
        }
    }
    if let Some(m) = next.as_object_mut() {
        m.insert("status".into(), new_status);
    }
    Ok(next)
}

fn next_or(status: &Value) -> Value {
    json!({"status": status})
}

/// Fills condition timestamps a client left out, as upstream's `populateConditionTimestamps`.
fn stamp_conditions(status: &mut Value, old: &Value) {
    let now = meta::now_rfc3339();
    let old_conds = old.get("conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    let Some(conds) = status.get_mut("conditions").and_then(Value::as_array_mut) else { return };
    for c in conds.iter_mut() {
        let Some(o) = c.as_object_mut() else { continue };
        o.entry("status").or_insert(json!("True"));
        if !o.contains_key("lastUpdateTime") {
            o.insert("lastUpdateTime".into(), json!(now));
        }
        if !o.contains_key("lastTransitionTime") {
            let same =
                old_conds.iter().find(|oc| oc.get("type") == o.get("type") && oc.get("status") == o.get("status"));
            let t = same.and_then(|oc| oc.get("lastTransitionTime").cloned()).unwrap_or_else(|| json!(now));
            o.insert("lastTransitionTime".into(), t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr(status: Value) -> Value {
        json!({"apiVersion": "certificates.k8s.io/v1", "kind": KIND, "metadata": {"name": "c"},
               "spec": {"signerName": SIGNER_KUBELET_CLIENT, "request": "UkVR", "username": "a"}, "status": status})
    }

    #[test]
    fn updates_keep_spec_and_approval_rules() {
        let pending = csr(json!({}));
        let mut tampered =
            csr(json!({"conditions": [{"type": "Approved", "status": "True"}], "certificate": "Q0VSVA=="}));
        tampered["spec"]["username"] = json!("system:admin");
        // The main resource changes neither spec nor status.
        let out = merge_update("", tampered.clone(), &pending, "c").unwrap();
        assert_eq!(out["spec"]["username"], "a");
        assert_eq!(out["status"], json!({}));
        // /status cannot approve, so it cannot set a certificate either.
        let e = merge_update("status", tampered.clone(), &pending, "c").unwrap_err();
        assert!(
            e.message.contains("certificate may only be set if the Approved condition is present"),
            "{}",
            e.message
        );
        // /approval approves but cannot set a certificate.
        let approved = merge_update("approval", tampered, &pending, "c").unwrap();
        assert_eq!(approved["status"]["conditions"][0]["type"], "Approved");
        assert!(approved["status"].get("certificate").is_none());
        let issued = merge_update("status", csr(json!({"certificate": "Q0VSVA=="})), &approved, "c").unwrap();
        assert_eq!(issued["status"]["certificate"], "Q0VSVA==");
        assert_eq!(issued["status"]["conditions"][0]["type"], "Approved", "approval kept by /status");
        let e = merge_update("status", csr(json!({"certificate": "T1RIRVI="})), &issued, "c").unwrap_err();
        assert!(e.message.contains("updates may not modify existing certificate content"), "{}", e.message);
        let e = merge_update("approval", csr(json!({"conditions": []})), &issued, "c").unwrap_err();
        assert!(e.message.contains("updates may not remove a condition of type \"Approved\""), "{}", e.message);
    }
}
