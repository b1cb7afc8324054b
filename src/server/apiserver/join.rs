//! The join endpoints and credentials: `GET /cacerts` (the CA bundle, to anyone), the join
//! tokens as bearer credentials (the server token, the agent token and bootstrap tokens, each
//! authenticating as a bootstrapper and nothing more), and node passwords, which keep a node
//! name with the first box that joined under it.
//!
//! Invariant: a failed token check is a plain 401 whatever was wrong (unknown id, wrong
//! secret, expired, deleted), and secrets are compared in constant time. Nothing here grants
//! permissions: the authorizer decides what a bootstrapper may do.

use base64::Engine;
use serde_json::{Value, json};

use crate::api::meta;
use crate::api::registry;
use crate::api::status::ApiError;
use crate::pki::token::{Credential, secrets_equal};

use super::ApiServer;
use super::auth::{AUTHENTICATED, UserInfo};
use super::objects::WriteCtx;

/// The group of every join credential (upstream's bootstrap token group).
pub const BOOTSTRAPPERS: &str = "system:bootstrappers";
/// The user of the server token.
pub const SERVER_TOKEN_USER: &str = "system:bootstrap:skiff-server-token";
/// The user of the agent token.
pub const AGENT_TOKEN_USER: &str = "system:bootstrap:skiff-agent-token";
/// The extra group of the server token: reserved for servers joining (not granted anything yet).
pub const SERVER_TOKEN_GROUP: &str = "system:bootstrappers:skiff:servers";
/// Secret type of bootstrap tokens.
pub const BOOTSTRAP_TOKEN_TYPE: &str = "bootstrap.kubernetes.io/token";
/// Secret type of node passwords.
pub const NODE_PASSWORD_TYPE: &str = "skiff.io/node-password";
/// The header an agent joining with a token sends its node password in.
pub const NODE_PASSWORD_HEADER: &str = "skiff-node-password";
/// The namespace of bootstrap tokens and node passwords.
pub const SYSTEM_NAMESPACE: &str = "kube-system";

/// The secrets of the server token and the agent token.
#[derive(Debug, Clone, Default)]
pub struct JoinSecrets {
    pub server: String,
    pub agent: Option<String>,
}

/// The name of a node's password Secret (`<node>.node-password.skiff`, as k3s names its own).
pub fn node_password_secret(node: &str) -> String {
    format!("{node}.node-password.skiff")
}

fn bootstrapper(name: &str, extra: &[String]) -> UserInfo {
    let mut groups = vec![BOOTSTRAPPERS.to_string()];
    groups.extend(extra.iter().cloned());
    groups.push(AUTHENTICATED.to_string());
    UserInfo { name: name.to_string(), groups, ..Default::default() }
}

fn data_str(secret: &Value, key: &str) -> Option<String> {
    let b64 = secret.get("data")?.get(key)?.as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    String::from_utf8(bytes).ok()
}

/// Whether a bootstrap token Secret has expired (upstream: an unparsable expiration is
/// expired too).
pub fn token_expired(secret: &Value, now: chrono::DateTime<chrono::Utc>) -> bool {
    match data_str(secret, "expiration") {
        None => false,
        Some(e) => match chrono::DateTime::parse_from_rfc3339(&e) {
            Ok(t) => t.with_timezone(&chrono::Utc) <= now,
            Err(_) => true,
        },
    }
}

/// The identity a bootstrap token Secret grants for `id` and `secret`, if it does.
pub fn bootstrap_identity(
    stored: &Value,
    id: &str,
    secret: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<UserInfo> {
    if stored.get("type").and_then(Value::as_str) != Some(BOOTSTRAP_TOKEN_TYPE) || meta::is_deleting(stored) {
        return None;
    }
    let ok_secret = secrets_equal(data_str(stored, "token-secret")?.as_bytes(), secret.as_bytes());
    let ok_id = data_str(stored, "token-id")? == id;
    if !(ok_secret && ok_id) || data_str(stored, "usage-bootstrap-authentication").as_deref() != Some("true") {
        return None;
    }
    if token_expired(stored, now) {
        return None;
    }
    let extra: Vec<String> = data_str(stored, "auth-extra-groups")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|g| g.starts_with("system:bootstrappers:"))
        .map(String::from)
        .collect();
    Some(bootstrapper(&format!("system:bootstrap:{id}"), &extra))
}

impl ApiServer {
    /// A join token presented as a bearer credential; None when it is not one (401).
    pub(super) async fn authenticate_join_token(&self, token: &str) -> Option<UserInfo> {
        let server = |s: &str| secrets_equal(s.as_bytes(), self.join.server.as_bytes());
        let agent = |s: &str| self.join.agent.as_deref().is_some_and(|a| secrets_equal(s.as_bytes(), a.as_bytes()));
        let server_user = || bootstrapper(SERVER_TOKEN_USER, &[SERVER_TOKEN_GROUP.to_string()]);
        let agent_user = || bootstrapper(AGENT_TOKEN_USER, &[]);
        match Credential::parse(token) {
            Credential::Bootstrap { id, secret } => {
                let info = registry::lookup("", "v1", "secrets")?;
                let name = format!("bootstrap-token-{id}");
                if let Ok(stored) = self.objects.get(info, SYSTEM_NAMESPACE, &name).await
                    && let Some(u) = bootstrap_identity(&stored, id, secret, chrono::Utc::now())
                {
                    return Some(u);
                }
                // A server or agent secret may have the shape of a bootstrap token.
                if server(token) {
                    Some(server_user())
                } else if agent(token) {
                    Some(agent_user())
                } else {
                    None
                }
            }
            Credential::Server(s) => server(s).then(server_user),
            Credential::Agent(s) => agent(s).then(agent_user),
            Credential::Bare(s) => {
                if server(s) {
                    Some(server_user())
                } else if agent(s) {
                    Some(agent_user())
                } else {
                    None
                }
            }
        }
    }

    /// Checks (and on first use records) the password of the box claiming `node`. The first
    /// box keeps the name until an administrator deletes the Node; a Node that exists without
    /// a password (registered by the server itself) is never handed to a joining box.
    pub(super) async fn check_node_password(&self, node: &str, password: Option<&str>) -> Result<(), ApiError> {
        let refused = || {
            ApiError::forbidden(
                "certificates.k8s.io",
                "certificatesigningrequests",
                "",
                format!(
                    "node password rejected: the node name \"{node}\" belongs to another box; delete the Node to free the name, or join this box with another --node-name"
                ),
            )
        };
        let password = password.filter(|p| !p.is_empty()).ok_or_else(|| {
            ApiError::bad_request(format!(
                "a node joining with a token must send its node password ({NODE_PASSWORD_HEADER} header)"
            ))
        })?;
        let secrets = registry::lookup("", "v1", "secrets").ok_or_else(|| ApiError::internal("no secrets"))?;
        let nodes = registry::lookup("", "v1", "nodes").ok_or_else(|| ApiError::internal("no nodes"))?;
        let name = node_password_secret(node);
        for _ in 0..3 {
            match self.objects.get(secrets, SYSTEM_NAMESPACE, &name).await {
                Ok(stored) => {
                    let hash = data_str(&stored, "hash").unwrap_or_default();
                    return if verify_password(&hash, password) { Ok(()) } else { Err(refused()) };
                }
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
            match self.objects.get(nodes, "", node).await {
                Ok(_) => return Err(refused()),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
            let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
            let obj = json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name, "namespace": SYSTEM_NAMESPACE, "labels": {"skiff.io/node": node}},
                "type": NODE_PASSWORD_TYPE,
                "data": {"hash": b64(&hash_password(password))},
            });
            let mut ctx = WriteCtx {
                user: UserInfo { name: "system:apiserver".into(), ..Default::default() },
                dry_run: false,
                field_manager: "skiff-join".into(),
                validation: super::objects::FieldValidation::Ignore,
                warnings: Vec::new(),
                apply: None,
                body: Default::default(),
            };
            match self.objects.create(secrets, SYSTEM_NAMESPACE, obj, &mut ctx).await {
                Ok(_) => return Ok(()),
                // Another box claimed the name at the same moment: compare with its password.
                Err(e) if e.code == 409 => continue,
                Err(e) => return Err(e),
            }
        }
        Err(refused())
    }
}

/// `sha256:<salt>:<digest>` of a node password. The password is 32 random bytes the agent
/// generated, so a salted SHA-256 is enough (no dictionary to guess from).
pub fn hash_password(password: &str) -> String {
    let mut salt = [0u8; 16];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt);
    let salt = hex(&salt);
    format!("sha256:{salt}:{}", digest(&salt, password))
}

fn digest(salt: &str, password: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(salt.as_bytes());
    ctx.update(password.as_bytes());
    hex(ctx.finish().as_ref())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Whether `password` matches a stored `sha256:<salt>:<digest>`.
pub fn verify_password(stored: &str, password: &str) -> bool {
    let mut parts = stored.splitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("sha256"), Some(salt), Some(d)) => secrets_equal(digest(salt, password).as_bytes(), d.as_bytes()),
        _ => false,
    }
}

/// `GET /cacerts`: the cluster CA bundle exactly as stored, so its hash is the token's.
pub fn cacerts(ca_pem: &str) -> http::Response<super::response::Body> {
    super::response::with_body(200, "text/plain; charset=utf-8", ca_pem.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_secret(data: &[(&str, &str)]) -> Value {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
        let data: serde_json::Map<String, Value> = data.iter().map(|(k, v)| (k.to_string(), json!(b64(v)))).collect();
        json!({"type": BOOTSTRAP_TOKEN_TYPE, "metadata": {"name": "bootstrap-token-abcdef"}, "data": data})
    }

    #[test]
    fn bootstrap_tokens_as_upstream() {
        let now = chrono::Utc::now();
        let s = token_secret(&[
            ("token-id", "abcdef"),
            ("token-secret", "0123456789abcdef"),
            ("usage-bootstrap-authentication", "true"),
            ("auth-extra-groups", "system:bootstrappers:edge,system:masters"),
            ("expiration", &(now + chrono::Duration::hours(1)).to_rfc3339()),
        ]);
        let u = bootstrap_identity(&s, "abcdef", "0123456789abcdef", now).unwrap();
        assert_eq!(u.name, "system:bootstrap:abcdef");
        assert_eq!(u.groups, vec![BOOTSTRAPPERS, "system:bootstrappers:edge", AUTHENTICATED], "masters is not allowed");
        assert!(bootstrap_identity(&s, "abcdef", "0123456789abcdeX", now).is_none());
        assert!(bootstrap_identity(&s, "abcdef", "0123456789abcdef", now + chrono::Duration::hours(2)).is_none());
        let no_usage = token_secret(&[("token-id", "abcdef"), ("token-secret", "0123456789abcdef")]);
        assert!(bootstrap_identity(&no_usage, "abcdef", "0123456789abcdef", now).is_none());
        let bad_expiry = token_secret(&[("expiration", "soon")]);
        assert!(token_expired(&bad_expiry, now));
    }

    #[test]
    fn node_passwords_hash_and_verify() {
        let h = hash_password("p4ss");
        assert!(h.starts_with("sha256:"));
        assert!(verify_password(&h, "p4ss"));
        assert!(!verify_password(&h, "p4sS"));
        assert!(!verify_password("garbage", "p4ss"));
        assert_ne!(hash_password("p4ss"), h, "salted");
    }
}
