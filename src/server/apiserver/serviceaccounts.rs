//! Service accounts in the API server: bearer-token authentication against the store, the
//! TokenRequest subresource, the OIDC discovery documents, and upstream's `ServiceAccount`
//! admission that gives a new pod its account and the `kube-api-access-*` projected volume.
//!
//! What makes a token valid lives in [`crate::server::auth::serviceaccount`]; this module only
//! fetches the objects a token is bound to and shapes the HTTP side.

use http::Response;
use serde_json::{Value, json};

use crate::api::field_error::FieldError;
use crate::api::meta;
use crate::api::registry::{self, ResourceInfo};
use crate::api::status::ApiError;
use crate::server::auth::UserInfo;
use crate::server::auth::serviceaccount::{Bound, Claims, Found, Ref, TokenError};

use super::ApiServer;
use super::handlers::Call;
use super::response::{self, Body};

/// Where containers find their token, CA and namespace.
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The projected volume's name prefix.
pub const VOLUME_PREFIX: &str = "kube-api-access-";
/// The lifetime admission asks the kubelet to request (upstream's 1 h + 7 s, a marker of
/// admission-made projections).
pub const PROJECTED_TOKEN_SECONDS: i64 = 3607;
/// `GET` paths of the OIDC discovery documents.
pub const OPENID_CONFIGURATION: &str = "/.well-known/openid-configuration";
pub const JWKS: &str = "/openid/v1/jwks";

fn info(plural: &str) -> Result<&'static ResourceInfo, ApiError> {
    registry::lookup("", "v1", plural).ok_or_else(|| ApiError::internal(format!("no {plural} resource")))
}

impl ApiServer {
    /// The user behind one of this cluster's service-account tokens, with the audiences it was
    /// accepted for (`audiences` empty: the API server's own).
    pub(super) async fn service_account_user(
        &self,
        token: &str,
        audiences: &[String],
    ) -> Result<(UserInfo, Vec<String>), TokenError> {
        let now = chrono::Utc::now().timestamp();
        let (claims, shared) = self.tokens.verify(token, audiences, now)?;
        let mut found: Vec<(Bound, Found)> = Vec::new();
        for (kind, name) in claims.lookups() {
            let (plural, ns) = match kind {
                Bound::ServiceAccount => ("serviceaccounts", claims.namespace.as_str()),
                Bound::Pod => ("pods", claims.namespace.as_str()),
                Bound::Secret => ("secrets", claims.namespace.as_str()),
                Bound::Node => ("nodes", ""),
            };
            let info = info(plural).map_err(|_| TokenError::Invalidated)?;
            match self.objects.get_raw(info, ns, name).await {
                Ok(json) => found.push((kind, Found::parse(&json))),
                Err(e) if e.code == 404 => {}
                Err(e) => {
                    tracing::warn!(error = %e.message, "cannot look up what a service-account token is bound to");
                    return Err(TokenError::Invalidated);
                }
            }
        }
        let user = claims.validate(|k| found.iter().find(|(kind, _)| *kind == k).map(|(_, f)| f.clone()), now)?;
        Ok((user, shared))
    }

    /// Any bearer token this server accepts, for `audiences` (empty: the API server's own): a
    /// service-account token, else a join or bootstrap token (which only the API server's own
    /// audience accepts, as upstream wraps audience-unaware authenticators).
    pub(super) async fn bearer_user(
        &self,
        token: &str,
        audiences: &[String],
    ) -> Result<(UserInfo, Vec<String>), String> {
        match self.service_account_user(token, audiences).await {
            Ok(ok) => Ok(ok),
            Err(TokenError::NotOurs) => {
                let ours = self.tokens.issuer().to_string();
                if !audiences.is_empty() && !audiences.contains(&ours) {
                    return Err(TokenError::NotOurs.to_string());
                }
                match self.authenticate_join_token(token).await {
                    Some(u) => Ok((u, vec![ours])),
                    None => Err(TokenError::NotOurs.to_string()),
                }
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// The OIDC discovery documents, for a `GET` of `path`; None for other paths.
    pub(super) fn openid_document(&self, path: &str) -> Option<Response<Body>> {
        let (content_type, doc) = match path {
            OPENID_CONFIGURATION => (
                "application/json",
                json!({
                    "issuer": self.tokens.issuer(),
                    "jwks_uri": format!("https://{}{JWKS}", self.advertise),
                    "response_types_supported": ["id_token"],
                    "subject_types_supported": ["public"],
                    "id_token_signing_alg_values_supported": ["ES256"],
                }),
            ),
            JWKS => ("application/jwk-set+json", json!({"keys": [self.tokens.key().jwk()]})),
            _ => return None,
        };
        let mut r = response::with_body(200, content_type, serde_json::to_vec(&doc).unwrap_or_default());
        r.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("public, max-age=3600"));
        Some(r)
    }
}

/// Upstream's 409 for a bound object whose UID is not the one the request names.
fn bind_error(kind_label: &str, name: &str, claimed: &str, group: &str) -> ApiError {
    ApiError::conflict(
        group,
        kind_label,
        name,
        &format!(
            "the UID in the bound object reference ({claimed}) does not match the UID in record. The object might have been deleted and then recreated"
        ),
    )
}

/// POST `serviceaccounts/<name>/token`: a signed token for the service account, bound to a pod,
/// secret or node when `spec.boundObjectRef` says so (upstream's `TokenREST`).
pub async fn token_request(c: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let req = if c.body.is_empty() {
        json!({})
    } else if c.content_type.as_deref().is_some_and(|t| t.starts_with(super::protobuf::MEDIA_TYPE)) {
        super::protobuf::decode(&c.body, "io.k8s.api.authentication.v1.TokenRequest")?
    } else {
        super::codec::decode_body(&c.body, super::negotiate::body_format(c.content_type.as_deref())?)?
    };
    let ttl = req.pointer("/spec/expirationSeconds").and_then(Value::as_i64).unwrap_or(3600);
    let invalid = |detail: &str| {
        ApiError::invalid(
            "authentication.k8s.io",
            "TokenRequest",
            "",
            &[FieldError::invalid("spec.expirationSeconds", json!(ttl), detail)],
        )
    };
    if ttl < 600 {
        return Err(invalid("may not specify a duration less than 10 minutes"));
    }
    if ttl > 1 << 32 {
        return Err(invalid("may not specify a duration larger than 2^32 seconds"));
    }
    let ns = c.req.namespace.as_str();
    let sa = c.server.objects.get(c.info, ns, &c.req.name).await?;
    if let Some(node) = crate::server::auth::node::identity(c.user) {
        // A node asks for tokens of its own pods only.
        let forbidden = |m: String| ApiError::forbidden("", "serviceaccounts", &c.req.name, m);
        let (pod_name, uid) = super::node_restriction::token_binding(&req).map_err(forbidden)?;
        let pod = c.server.objects.get(info("pods")?, ns, pod_name).await?;
        super::node_restriction::admit_token_pod(node, uid, &pod).map_err(forbidden)?;
    }
    let mut claims = Claims {
        namespace: ns.to_string(),
        service_account: Ref { name: c.req.name.clone(), uid: meta::uid(&sa).to_string() },
        jti: uuid::Uuid::new_v4().to_string(),
        ..Default::default()
    };
    let bound = req.pointer("/spec/boundObjectRef").filter(|b| !b.is_null());
    if let Some(b) = bound {
        let s = |k: &str| b.get(k).and_then(Value::as_str).unwrap_or("");
        let (group, version) = match s("apiVersion").split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", s("apiVersion")),
        };
        let (kind, name, claimed) = (s("kind"), s("name"), s("uid"));
        let (plural, obj_ns) = match (group, kind) {
            ("", "Pod") => ("pods", ns),
            ("", "Secret") => ("secrets", ns),
            ("", "Node") => ("nodes", ""),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "cannot bind token to object of type {group}/{version}, Kind={kind}"
                )));
            }
        };
        let obj = c.server.objects.get(info(plural)?, obj_ns, name).await?;
        let uid = meta::uid(&obj).to_string();
        if !claimed.is_empty() && claimed != uid {
            return Err(bind_error(kind, name, claimed, group));
        }
        let reference = Ref { name: name.to_string(), uid };
        match plural {
            "pods" => {
                let account = obj.pointer("/spec/serviceAccountName").and_then(Value::as_str).unwrap_or("");
                if account != c.req.name {
                    return Err(ApiError::bad_request(format!(
                        "cannot bind token for serviceaccount {:?} to pod running with different serviceaccount name.",
                        c.req.name
                    )));
                }
                // The pod's node goes into the token as information (upstream's
                // ServiceAccountTokenPodNodeInfo), with its UID when the node exists.
                let node = obj.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or("");
                if !node.is_empty() {
                    let uid = match c.server.objects.get(info("nodes")?, "", node).await {
                        Ok(n) => meta::uid(&n).to_string(),
                        Err(e) if e.code == 404 => String::new(),
                        Err(e) => return Err(e),
                    };
                    claims.node = Some(Ref { name: node.to_string(), uid });
                }
                claims.pod = Some(reference);
            }
            "secrets" => claims.secret = Some(reference),
            _ => claims.node = Some(reference),
        }
    }
    let audiences: Vec<String> = match req.pointer("/spec/audiences").and_then(Value::as_array) {
        Some(a) if !a.is_empty() => a.iter().filter_map(Value::as_str).map(String::from).collect(),
        _ => vec![c.server.tokens.issuer().to_string()],
    };
    let now = chrono::Utc::now().timestamp();
    let token = c.server.tokens.issue(&claims, &audiences, now, ttl).map_err(ApiError::internal)?;
    let expires =
        chrono::DateTime::from_timestamp(now + ttl, 0).unwrap_or_default().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    Ok(response::json(
        201,
        &json!({
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": c.req.name, "namespace": ns, "creationTimestamp": null},
            "spec": {"audiences": audiences, "expirationSeconds": ttl, "boundObjectRef": bound.cloned()},
            "status": {"token": token, "expirationTimestamp": expires},
        }),
    ))
}

/// The account a new pod runs as: `spec.serviceAccountName`, else the deprecated
/// `spec.serviceAccount`, else `default`. Both fields are set to it, as upstream's v1
/// conversion shows them.
pub fn account_of(pod: &mut Value) -> String {
    let spec = &mut pod["spec"];
    let s = |k: &str| spec.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let name = [s("serviceAccountName"), s("serviceAccount")]
        .into_iter()
        .find(|n| !n.is_empty())
        .unwrap_or_else(|| "default".into());
    spec["serviceAccountName"] = json!(name);
    spec["serviceAccount"] = json!(name);
    name
}

/// Upstream `ServiceAccount` admission's changes to a new pod running as `sa`: unless the pod
/// (or else the account) turns `automountServiceAccountToken` off, every container and init
/// container that has nothing mounted at [`TOKEN_MOUNT_PATH`] mounts a projected volume there
/// (token, cluster CA, namespace); a pod without image pull secrets gets the account's.
/// `suffix` makes the volume name (`kube-api-access-<suffix>`).
pub fn mount_token(pod: &mut Value, sa: &Value, suffix: &str) {
    let flag = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_bool);
    let automount =
        flag(pod, "/spec/automountServiceAccountToken").or(flag(sa, "/automountServiceAccountToken")).unwrap_or(true);
    let spec = &mut pod["spec"];
    if automount {
        let existing = spec
            .get("volumes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| v.get("name").and_then(Value::as_str))
            .find(|n| n.starts_with(VOLUME_PREFIX))
            .map(String::from);
        let volume = existing.clone().unwrap_or_else(|| format!("{VOLUME_PREFIX}{suffix}"));
        let mut needed = false;
        for list in ["initContainers", "containers"] {
            for c in spec.get_mut(list).and_then(Value::as_array_mut).into_iter().flatten() {
                let mounts = c.as_object_mut().map(|c| c.entry("volumeMounts").or_insert(json!([])));
                let Some(mounts) = mounts.and_then(Value::as_array_mut) else { continue };
                if mounts.iter().any(|m| m.get("mountPath").and_then(Value::as_str) == Some(TOKEN_MOUNT_PATH)) {
                    continue;
                }
                mounts.push(json!({"name": volume, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH}));
                needed = true;
            }
        }
        if needed && existing.is_none() {
            let volumes = spec.as_object_mut().map(|s| s.entry("volumes").or_insert(json!([])));
            if let Some(volumes) = volumes.and_then(Value::as_array_mut) {
                volumes.push(projected_volume(&volume));
            }
        }
    }
    let has_pull_secrets = spec.get("imagePullSecrets").and_then(Value::as_array).is_some_and(|a| !a.is_empty());
    if let Some(secrets) = sa.get("imagePullSecrets").and_then(Value::as_array).filter(|a| !a.is_empty())
        && !has_pull_secrets
    {
        spec["imagePullSecrets"] = Value::Array(secrets.clone());
    }
}

/// Upstream admission's rule for mirror pods (static pods a kubelet reflects into the API):
/// their spec is the kubelet's file, left alone, and may reference no account, secret or config
/// map, which the kubelet could not have been allowed to read for it.
pub fn check_mirror_pod(pod: &Value) -> Result<(), String> {
    use crate::server::auth::node::{Kind, referenced_kinds};
    let kinds = referenced_kinds(pod.get("spec"));
    for (kind, what) in
        [(Kind::ServiceAccount, "service accounts"), (Kind::Secret, "secrets"), (Kind::ConfigMap, "configmaps")]
    {
        if kinds.contains(&kind) {
            return Err(format!("a mirror pod may not reference {what}"));
        }
    }
    Ok(())
}

/// Whether a pod is a mirror pod.
pub fn is_mirror_pod(pod: &Value) -> bool {
    pod.pointer("/metadata/annotations/kubernetes.io~1config.mirror").is_some()
}

/// The volume upstream's admission adds: a token for the API server, the cluster CA and the
/// pod's namespace.
fn projected_volume(name: &str) -> Value {
    json!({
        "name": name,
        "projected": {
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": PROJECTED_TOKEN_SECONDS, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
            ],
            "defaultMode": 420
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec: Value) -> Value {
        json!({"metadata": {"name": "p"}, "spec": spec})
    }

    #[test]
    fn every_container_mounts_one_projected_volume() {
        let mut p = pod(json!({
            "initContainers": [{"name": "i", "image": "busybox"}],
            "containers": [
                {"name": "a", "image": "busybox", "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
                {"name": "b", "image": "busybox", "volumeMounts": [{"name": "own", "mountPath": TOKEN_MOUNT_PATH}]}
            ],
            "volumes": [{"name": "data", "emptyDir": {}}, {"name": "own", "emptyDir": {}}]
        }));
        assert_eq!(account_of(&mut p), "default");
        mount_token(&mut p, &json!({"metadata": {"name": "default"}}), "x7k2q");
        let mount = json!({"name": "kube-api-access-x7k2q", "readOnly": true, "mountPath": TOKEN_MOUNT_PATH});
        assert_eq!(p["spec"]["initContainers"][0]["volumeMounts"], json!([mount]));
        assert_eq!(p["spec"]["containers"][0]["volumeMounts"][1], mount);
        // A container with its own mount at the path keeps it.
        assert_eq!(p["spec"]["containers"][1]["volumeMounts"].as_array().unwrap().len(), 1);
        let volumes = p["spec"]["volumes"].as_array().unwrap();
        assert_eq!(volumes.len(), 3);
        assert_eq!(volumes[2], projected_volume("kube-api-access-x7k2q"));
        assert_eq!(
            volumes[2]["projected"]["sources"][0]["serviceAccountToken"],
            json!({"expirationSeconds": 3607, "path": "token"})
        );
        assert_eq!(
            (&p["spec"]["serviceAccountName"], &p["spec"]["serviceAccount"]),
            (&json!("default"), &json!("default"))
        );
    }

    #[test]
    fn automount_pod_wins_over_account() {
        let off = json!({"automountServiceAccountToken": false});
        let containers = json!([{"name": "a", "image": "busybox"}]);
        let mut p = pod(json!({"containers": containers}));
        mount_token(&mut p, &off, "aaaaa");
        assert_eq!(p["spec"].get("volumes"), None);
        let mut p = pod(json!({"containers": containers, "automountServiceAccountToken": true}));
        mount_token(&mut p, &off, "aaaaa");
        assert_eq!(p["spec"]["volumes"][0]["name"], "kube-api-access-aaaaa");
        let mut p = pod(json!({"containers": containers, "automountServiceAccountToken": false}));
        mount_token(&mut p, &json!({}), "aaaaa");
        assert_eq!(p["spec"].get("volumes"), None);
        assert_eq!(p["spec"]["containers"][0].get("volumeMounts"), None);
    }

    #[test]
    fn an_existing_projection_is_reused_and_pull_secrets_come_from_the_account() {
        let mut p = pod(json!({
            "containers": [{"name": "a", "image": "busybox"}],
            "volumes": [projected_volume("kube-api-access-old01")]
        }));
        let sa = json!({"imagePullSecrets": [{"name": "regcred"}]});
        mount_token(&mut p, &sa, "new02");
        assert_eq!(p["spec"]["volumes"].as_array().unwrap().len(), 1);
        assert_eq!(p["spec"]["containers"][0]["volumeMounts"][0]["name"], "kube-api-access-old01");
        assert_eq!(p["spec"]["imagePullSecrets"], json!([{"name": "regcred"}]));
        let mut own = pod(json!({"containers": [], "imagePullSecrets": [{"name": "mine"}]}));
        mount_token(&mut own, &sa, "a");
        assert_eq!(own["spec"]["imagePullSecrets"], json!([{"name": "mine"}]));
    }

    #[test]
    fn mirror_pods_reference_nothing_the_kubelet_reads_for_them() {
        let mirror =
            |spec: Value| json!({"metadata": {"annotations": {"kubernetes.io/config.mirror": "x"}}, "spec": spec});
        let plain = mirror(json!({"containers": [{"name": "a", "image": "busybox"}]}));
        assert!(is_mirror_pod(&plain) && !is_mirror_pod(&pod(json!({}))));
        assert_eq!(check_mirror_pod(&plain), Ok(()));
        let cases = [
            (json!({"serviceAccountName": "default"}), "a mirror pod may not reference service accounts"),
            (
                json!({"volumes": [{"name": "s", "secret": {"secretName": "s"}}]}),
                "a mirror pod may not reference secrets",
            ),
            (
                json!({"containers": [{"name": "a", "envFrom": [{"configMapRef": {"name": "c"}}]}]}),
                "a mirror pod may not reference configmaps",
            ),
        ];
        for (spec, message) in cases {
            assert_eq!(check_mirror_pod(&mirror(spec)), Err(message.to_string()));
        }
    }

    #[test]
    fn the_deprecated_field_names_the_account_when_the_new_one_is_empty() {
        let mut p = pod(json!({"serviceAccount": "builder", "containers": []}));
        assert_eq!(account_of(&mut p), "builder");
        assert_eq!(p["spec"]["serviceAccountName"], "builder");
        let mut p = pod(json!({"serviceAccountName": "web", "serviceAccount": "old", "containers": []}));
        assert_eq!(account_of(&mut p), "web");
        assert_eq!(p["spec"]["serviceAccount"], "web");
    }
}
