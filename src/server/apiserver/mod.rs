//! The HTTPS front door of the control plane.
//!
//! Start at [`serve`] (TLS accept loop) and [`ApiServer::handle`] (one request: authn →
//! authz → route). Resource semantics live in [`objects`], collections in [`listing`], wire
//! formats in [`codec`] and [`negotiate`]. This room is the only one that touches the store;
//! everything else reaches objects through the HTTP API.

pub mod apply;
pub use crate::server::auth;
pub mod bootstrap;
pub mod certificates;
pub mod codec;
pub mod discovery;
pub mod handlers;
pub mod impersonation;
pub mod ipalloc;
pub mod join;
pub mod listing;
pub mod managed_fields;
pub mod negotiate;
pub mod node_proxy;
pub mod node_restriction;
pub mod objects;
pub mod openapi;
pub mod openapi_routes;
pub mod protobuf;
#[rustfmt::skip]
pub mod protobuf_table;
pub mod request;
pub mod response;
pub mod reviews;
pub mod serviceaccounts;
pub mod subresources;
pub mod tls;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response, header};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::api::registry::{self, Storage};
use crate::api::status::ApiError;

use auth::{Authorizer, Decision, TokenAuthenticator, UserInfo};
use handlers::Call;
use objects::Objects;
use request::{Query, RequestInfo};
use response::Body;

/// Version reported at `/version`: the Kubernetes API level skiff implements.
pub const KUBE_MAJOR: &str = "1";
pub const KUBE_MINOR: &str = "32";

/// Shared state of the API server.
pub struct ApiServer {
    pub objects: Objects,
    pub authz: Box<dyn Authorizer>,
    pub tokens: TokenAuthenticator,
    pub openapi: openapi_routes::OpenApiCache,
    /// Fired on shutdown: ends open watches.
    pub shutdown: CancellationToken,
    /// Set once bootstrap objects exist.
    pub ready: AtomicBool,
    /// `host:port` clients should use, for `/api`'s serverAddressByClientCIDRs.
    pub advertise: String,
    /// Encryption of Secrets at rest: status and key rotation.
    pub secrets_encryption: Arc<crate::server::secrets_encryption::SecretsEncryption>,
    /// The identity logs, exec, attach, port-forward and node proxying present to kubelets.
    pub kubelet_client: Option<Arc<node_proxy::KubeletClient>>,
    /// The cluster CA bundle as stored (`GET /cacerts`).
    pub ca_pem: String,
    /// The server and agent token secrets.
    pub join: join::JoinSecrets,
}

/// Paths anyone may read without credentials.
fn is_public_path(path: &str) -> bool {
    matches!(path, "/healthz" | "/livez" | "/readyz" | "/version" | "/version/")
        || path.starts_with("/healthz/")
        || path.starts_with("/livez/")
        || path.starts_with("/readyz/")
}

impl ApiServer {
    /// Authenticates a request: a verified client certificate first, then a bearer token (a
    /// service-account token, else a join token), as upstream's union authenticator orders
    /// them; neither means anonymous.
    async fn authenticate(&self, cert_user: Option<UserInfo>, headers: &http::HeaderMap) -> Result<UserInfo, ApiError> {
        if let Some(u) = cert_user {
            return Ok(u);
        }
        if let Some(token) = crate::pki::bearer_token(headers) {
            return match self.bearer_user(token, &[]).await {
                Ok((user, _)) => Ok(user),
                Err(reason) => {
                    // The client learns only that it is unauthorized, as upstream.
                    tracing::debug!(%reason, "bearer token refused");
                    Err(ApiError::unauthorized())
                }
            };
        }
        Ok(UserInfo::anonymous())
    }

    /// Serves one request; `cert_user` is the identity of a verified client certificate.
    pub async fn handle<B>(self: &Arc<Self>, cert_user: Option<UserInfo>, req: Request<B>) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path().to_string();
        let query = Query::parse(parts.uri.query());
        // The CA bundle is public: a joining box needs it before it can trust anything, and
        // compares its hash with the token's before it sends a credential.
        if path == "/cacerts" && (parts.method == Method::GET || parts.method == Method::HEAD) {
            return join::cacerts(&self.ca_pem);
        }
        let user = match self.authenticate(cert_user, &parts.headers).await {
            Ok(u) => u,
            Err(e) => return response::error(&e),
        };
        if user.is_anonymous() && !is_public_path(&path) {
            return response::error(&ApiError::unauthorized());
        }
        let user = match impersonation::impersonate(self.authz.as_ref(), user, &parts.headers) {
            Ok(u) => u,
            Err(e) => return response::error(&e),
        };
        let info = request::request_info(&parts.method, &path, &query);
        if let Decision::Deny(reason) = self.authz.authorize(&user, &info) {
            let msg = auth::forbidden_message(&user, &info, &reason);
            if auth::is_control_plane(&user) {
                // The in-process components' roles are fixed; a denial means one lacks a rule.
                tracing::warn!(user = %user.name, "control-plane request denied: {msg}");
            }
            let e = if info.is_resource_request {
                ApiError::forbidden(&info.group, &info.resource, &info.name, msg)
            } else {
                ApiError::new(403, "Forbidden", format!("forbidden: {msg}"))
            };
            return response::error(&e);
        }
        let result = if info.is_resource_request {
            self.resource(parts, body, &info, &query, &user).await
        } else if let Some(r) = self.secrets_encryption_path(&parts.method, &path).await {
            r
        } else {
            self.non_resource(&parts, &path, &query)
        };
        result.unwrap_or_else(|e| response::error(&e))
    }

    /// `skiff secrets-encrypt`'s paths: GET the status, POST to rotate the keys.
    async fn secrets_encryption_path(&self, method: &Method, path: &str) -> Option<Result<Response<Body>, ApiError>> {
        use crate::server::secrets_encryption::{ROTATE_PATH, STATUS_PATH};
        let status = match (method, path) {
            (&Method::GET, STATUS_PATH) => {
                self.secrets_encryption.status().await.map_err(|e| ApiError::internal(e.to_string()))
            }
            (&Method::POST, ROTATE_PATH) => self.secrets_encryption.rotate().await,
            (_, STATUS_PATH | ROTATE_PATH) => {
                return Some(Err(ApiError::method_not_supported("", path, method.as_str())));
            }
            _ => return None,
        };
        Some(status.map(|s| response::json(200, &s)))
    }

    fn non_resource(
        &self,
        parts: &http::request::Parts,
        path: &str,
        query: &Query,
    ) -> Result<Response<Body>, ApiError> {
        if parts.method != Method::GET && parts.method != Method::HEAD {
            return Err(ApiError::method_not_supported("", path, parts.method.as_str()));
        }
        let accept = parts.headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
        let trimmed = path.trim_end_matches('/');
        match trimmed {
            "/healthz" | "/livez" | "/readyz" => Ok(self.health(trimmed, query)),
            serviceaccounts::OPENID_CONFIGURATION | serviceaccounts::JWKS => {
                self.openid_document(trimmed).ok_or_else(ApiError::path_not_found)
            }
            "/version" => Ok(response::json(200, &version_info())),
            "/api" => match discovery::wants_aggregated(accept) {
                Some(v) => Ok(aggregated_response(true, v)),
                None => Ok(response::json(200, &discovery::core_versions(&self.advertise))),
            },
            "/apis" => match discovery::wants_aggregated(accept) {
                Some(v) => Ok(aggregated_response(false, v)),
                None => Ok(response::json(200, &discovery::group_list())),
            },
            "/api/v1" => {
                discovery::resource_list("", "v1").map(|v| response::json(200, &v)).ok_or_else(ApiError::path_not_found)
            }
            "/openapi/v2" => self.openapi.v2(accept, parts.headers.get(header::IF_NONE_MATCH)),
            "/openapi/v3" => Ok(self.openapi.v3_index()),
            _ if trimmed.starts_with("/openapi/v3/") => self.openapi.v3_doc(&trimmed["/openapi/v3/".len()..]),
            _ if trimmed.starts_with("/healthz/")
                || trimmed.starts_with("/livez/")
                || trimmed.starts_with("/readyz/") =>
            {
                let check = trimmed.rsplit('/').next().unwrap_or("");
                if ["ping", "log", "store", "poststarthook/bootstrap-objects", "shutdown"].contains(&check) {
                    Ok(response::text(200, "ok"))
                } else {
                    Err(ApiError::path_not_found())
                }
            }
            _ => {
                let segs: Vec<&str> = trimmed.trim_start_matches('/').split('/').collect();
                match segs.as_slice() {
                    ["apis", g] => {
                        discovery::group(g).map(|v| response::json(200, &v)).ok_or_else(ApiError::path_not_found)
                    }
                    ["apis", g, v] => discovery::resource_list(g, v)
                        .map(|v| response::json(200, &v))
                        .ok_or_else(ApiError::path_not_found),
                    _ => Err(ApiError::path_not_found()),
                }
            }
        }
    }

    fn health(&self, which: &str, query: &Query) -> Response<Body> {
        let ready = self.ready.load(Ordering::Acquire);
        let shutting_down = self.shutdown.is_cancelled();
        let mut checks: Vec<(&str, bool)> = vec![("ping", true), ("log", true), ("store", true)];
        if which != "/livez" {
            checks.push(("poststarthook/bootstrap-objects", ready));
        }
        if which == "/readyz" {
            checks.push(("shutdown", !shutting_down));
        }
        let ok = checks.iter().all(|(_, ok)| *ok);
        let name = &which[1..];
        if query.has("verbose") || !ok {
            let mut out = String::new();
            for (c, good) in &checks {
                out.push_str(&format!(
                    "[{}]{} {}\n",
                    if *good { "+" } else { "-" },
                    c,
                    if *good { "ok" } else { "failed: reason withheld" }
                ));
            }
            out.push_str(&format!("{name} check {}\n", if ok { "passed" } else { "failed" }));
            return response::text(if ok { 200 } else { 500 }, out);
        }
        response::text(200, "ok")
    }

    async fn resource<B>(
        self: &Arc<Self>,
        mut parts: http::request::Parts,
        body: B,
        info: &RequestInfo,
        query: &Query,
        user: &UserInfo,
    ) -> Result<Response<Body>, ApiError>
    where
        B: http_body::Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let resource =
            registry::lookup(&info.group, &info.version, &info.resource).ok_or_else(ApiError::path_not_found)?;
        if resource.namespaced && info.namespace.is_empty() && !info.name.is_empty() {
            return Err(ApiError::path_not_found());
        }
        if !resource.namespaced && !info.namespace.is_empty() {
            return Err(ApiError::path_not_found());
        }
        if !info.subresource.is_empty() && resource.subresource(&info.subresource).is_none() {
            return Err(ApiError::path_not_found());
        }
        if !info.rest.is_empty() && info.subresource != "proxy" {
            return Err(ApiError::path_not_found());
        }
        let accept = parts.headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
        let output = negotiate::choose_output(accept)?;
        let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(String::from);
        let user_agent = parts.headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let node_password =
            parts.headers.get(join::NODE_PASSWORD_HEADER).and_then(|v| v.to_str().ok()).map(String::from);
        let body = match parts.method {
            Method::POST | Method::PUT | Method::PATCH | Method::DELETE => handlers::read_body(body).await?,
            _ => Bytes::new(),
        };
        let call = Call {
            server: self,
            info: resource,
            req: info,
            query,
            user,
            output,
            content_type,
            user_agent,
            body,
            node_password,
        };
        let verb = info.verb.as_str();
        let check_verb = |v: &str| {
            if resource.has_verb(v) {
                Ok(())
            } else {
                Err(ApiError::method_not_supported(resource.group, resource.plural, v))
            }
        };
        match (info.subresource.as_str(), resource.storage) {
            ("", Storage::Virtual) => {
                check_verb(verb)?;
                return self.virtual_resource(&call).await;
            }
            ("", Storage::Stored) => {}
            // `approval` is a CertificateSigningRequest's second status-like subresource.
            (sub @ ("status" | "approval"), _) if sub == "status" || resource.group == "certificates.k8s.io" => {
                return match parts.method {
                    Method::GET => handlers::get(&call).await,
                    Method::PUT => handlers::update(&call).await,
                    Method::PATCH => handlers::patch(&call).await,
                    _ => {
                        Err(ApiError::method_not_supported(resource.group, &format!("{}/{sub}", resource.plural), verb))
                    }
                };
            }
            ("scale", _) => {
                return match parts.method {
                    Method::GET | Method::PUT | Method::PATCH => subresources::scale(&call, &parts.method).await,
                    _ => {
                        Err(ApiError::method_not_supported(resource.group, &format!("{}/scale", resource.plural), verb))
                    }
                };
            }
            ("binding", _) if parts.method == Method::POST => return subresources::bind(&call, &info.name).await,
            ("eviction", _) if parts.method == Method::POST => return subresources::evict(&call).await,
            ("finalize", _) if parts.method == Method::PUT => return subresources::finalize(&call).await,
            ("token", _) if parts.method == Method::POST => return serviceaccounts::token_request(&call).await,
            ("log" | "exec" | "attach" | "portforward", _) if resource.plural == "pods" => {
                return node_proxy::pod_subresource(&call, &mut parts, &info.subresource).await;
            }
            ("proxy", _) if resource.plural == "nodes" => return node_proxy::node_proxy(&call, &mut parts).await,
            (sub, _) => {
                return Err(ApiError::new(
                    503,
                    "ServiceUnavailable",
                    format!(
                        "the {} subresource of {} is served by the node agent, which is not running",
                        sub, resource.plural
                    ),
                ));
            }
        }
        check_verb(verb)?;
        match verb {
            "get" => handlers::get(&call).await,
            "list" => handlers::list(&call).await,
            "watch" => handlers::watch(&call).await,
            "create" => {
                if resource.namespaced && info.namespace.is_empty() {
                    return Err(ApiError::path_not_found());
                }
                if !info.name.is_empty() {
                    return Err(ApiError::method_not_supported(resource.group, resource.plural, "create"));
                }
                handlers::create(&call).await
            }
            "update" => handlers::update(&call).await,
            "patch" => handlers::patch(&call).await,
            "delete" => handlers::delete(&call).await,
            "deletecollection" => handlers::delete_collection(&call).await,
            other => Err(ApiError::method_not_supported(resource.group, resource.plural, other)),
        }
    }

    async fn virtual_resource(self: &Arc<Self>, call: &Call<'_>) -> Result<Response<Body>, ApiError> {
        let r = call.info;
        if r.plural == "componentstatuses" {
            let item = json!({"kind": "ComponentStatus", "apiVersion": "v1", "metadata": {"name": "store"}, "conditions": [{"type": "Healthy", "status": "True", "message": "ok"}]});
            return match call.req.verb.as_str() {
                "get" if call.req.name == "store" => call.object_response(200, &item),
                "get" => Err(ApiError::not_found("", "componentstatuses", &call.req.name)),
                _ => Ok(response::json(
                    200,
                    &json!({"kind": "ComponentStatusList", "apiVersion": "v1", "metadata": {}, "items": [item]}),
                )),
            };
        }
        if r.plural == "bindings" {
            return subresources::bind(call, "").await;
        }
        let is_protobuf = call.content_type.as_deref().is_some_and(|c| c.starts_with(protobuf::MEDIA_TYPE));
        let body = if is_protobuf {
            protobuf::decode(&call.body, call.info.definition)?
        } else {
            codec::decode_body(&call.body, negotiate::body_format(call.content_type.as_deref())?)?
        };
        let out = reviews::review(self, call.user, r.plural, &call.req.namespace, &body).await?;
        Ok(response::json(201, &out))
    }
}

fn aggregated_response(core: bool, version: &str) -> Response<Body> {
    let api_version = format!("apidiscovery.k8s.io/{version}");
    let doc = discovery::aggregated(core, &api_version);
    response::with_body(
        200,
        &format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList"),
        serde_json::to_vec(&doc).unwrap_or_default(),
    )
}

/// `/version`.
pub fn version_info() -> serde_json::Value {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        other => other,
    };
    json!({
        "major": KUBE_MAJOR,
        "minor": KUBE_MINOR,
        "gitVersion": format!("v{KUBE_MAJOR}.{KUBE_MINOR}.0+skiff.{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": env!("SKIFF_COMMIT"),
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "n/a (rust)",
        "compiler": "rustc",
        "platform": format!("linux/{arch}"),
    })
}

pub use tls::serve;
