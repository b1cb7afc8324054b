//! Service-account tokens: the claims this cluster signs and what makes one valid.
//!
//! A token is an ES256 JWT from [`crate::pki::ServiceAccountKey`]. [`TokenAuthenticator::verify`]
//! checks what needs no lookup: signature, issuer, time window (with upstream's one-minute
//! leeway) and audiences. A token also names the objects it is bound to, the service account
//! and at most one pod, secret or node, by name and UID; [`Claims::validate`] judges what the
//! caller found for each of [`Claims::lookups`], so the token stops working once one of them is
//! deleted (or deleted and recreated). This module does no I/O: the API server looks the objects
//! up in its store.
//!
//! Error texts are upstream's (`pkg/serviceaccount`): they reach a client only through a
//! TokenReview's `status.error`; a request with a bad token gets a bare 401.

use std::sync::Arc;

use serde_json::{Value, json};

use super::{AUTHENTICATED, UserInfo};
use crate::pki::ServiceAccountKey;

/// Clock skew tolerated on `exp`, `nbf` and `iat`, and how long a deleting object's tokens
/// stay good: go-jose's `DefaultLeeway`, which upstream uses for both.
pub const LEEWAY_SECS: i64 = 60;

/// The `user.Info` extra keys a bound token adds (upstream `ServiceAccountInfo.UserInfo`).
pub const EXTRA_POD_NAME: &str = "authentication.kubernetes.io/pod-name";
pub const EXTRA_POD_UID: &str = "authentication.kubernetes.io/pod-uid";
pub const EXTRA_NODE_NAME: &str = "authentication.kubernetes.io/node-name";
pub const EXTRA_NODE_UID: &str = "authentication.kubernetes.io/node-uid";
pub const EXTRA_CREDENTIAL_ID: &str = "authentication.kubernetes.io/credential-id";

/// The user name of a service account (upstream's `serviceaccount.MakeUsername`).
pub fn user_name(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// The groups every service account of `namespace` is in, besides `system:authenticated`
/// (upstream's `serviceaccount.MakeGroupNames`).
pub fn groups(namespace: &str) -> Vec<String> {
    vec!["system:serviceaccounts".into(), format!("system:serviceaccounts:{namespace}")]
}

/// The namespace and name of a service account's user name; None for other users.
pub fn split_user_name(user: &str) -> Option<(&str, &str)> {
    let (ns, name) = user.strip_prefix("system:serviceaccount:")?.split_once(':')?;
    (!ns.is_empty() && !name.is_empty() && !name.contains(':')).then_some((ns, name))
}

/// An object a token names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ref {
    pub name: String,
    pub uid: String,
}

/// The private claims of a token (`kubernetes.io`) plus its `jti`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Claims {
    pub namespace: String,
    pub service_account: Ref,
    pub pod: Option<Ref>,
    pub secret: Option<Ref>,
    /// The node a pod-bound token's pod was on, or the node a token is bound to.
    pub node: Option<Ref>,
    pub jti: String,
}

/// The kinds of objects a token can depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    ServiceAccount,
    Pod,
    Secret,
    Node,
}

/// What the caller found for a [`Bound`] object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub uid: String,
    /// `metadata.deletionTimestamp` as Unix seconds, when set.
    pub deleting_since: Option<i64>,
}

impl Found {
    /// The parts of a stored object's JSON that validation reads (only `metadata.uid` and
    /// `metadata.deletionTimestamp` are parsed; unreadable text counts as no uid).
    pub fn parse(json: &[u8]) -> Found {
        #[derive(serde::Deserialize, Default)]
        #[serde(default, rename_all = "camelCase")]
        struct Meta {
            uid: String,
            deletion_timestamp: Option<String>,
        }
        #[derive(serde::Deserialize, Default)]
        #[serde(default)]
        struct Object {
            metadata: Meta,
        }
        let meta = serde_json::from_slice::<Object>(json).unwrap_or_default().metadata;
        let deleting_since =
            meta.deletion_timestamp.and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok()).map(|t| t.timestamp());
        Found { uid: meta.uid, deleting_since }
    }
}

/// Why a token is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token this cluster issued (not a JWT, another issuer, a bad signature).
    #[error("invalid bearer token")]
    NotOurs,
    #[error("service account token has expired")]
    Expired,
    #[error("service account token is not valid yet")]
    NotYetValid,
    #[error("service account token is issued in the future")]
    IssuedInTheFuture,
    #[error("token audiences {token:?} is invalid for the target audiences {target:?}")]
    Audience { token: Vec<String>, target: Vec<String> },
    #[error("service account token claims could not be validated: {0}")]
    Malformed(&'static str),
    #[error("serviceaccount \"{0}\" not found")]
    ServiceAccountNotFound(String),
    #[error("service account UID ({stored}) does not match claim ({claimed})")]
    ServiceAccountUid { stored: String, claimed: String },
    #[error("service account {0} has been deleted")]
    ServiceAccountDeleted(String),
    #[error("service account token has been invalidated")]
    Invalidated,
    #[error("{kind} UID ({stored}) does not match service account {kind} ref claim ({claimed})")]
    BoundUid { kind: &'static str, stored: String, claimed: String },
}

/// Signs and checks this cluster's service-account tokens.
pub struct TokenAuthenticator {
    key: Arc<ServiceAccountKey>,
    issuer: String,
}

impl TokenAuthenticator {
    /// Tokens signed by `key` for `issuer`; the API server's own audience is the issuer too, as
    /// upstream defaults `--api-audiences` to `--service-account-issuer`.
    pub fn new(key: Arc<ServiceAccountKey>, issuer: String) -> Self {
        TokenAuthenticator { key, issuer }
    }

    /// The `iss` of every token, also the API server's audience.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The signing key.
    pub fn key(&self) -> &ServiceAccountKey {
        &self.key
    }

    /// Signs a token for `claims`, valid from `now` for `ttl` seconds.
    pub fn issue(&self, claims: &Claims, audiences: &[String], now: i64, ttl: i64) -> Result<String, String> {
        let reference = |r: &Ref| json!({"name": r.name, "uid": r.uid});
        let mut private = json!({
            "namespace": claims.namespace,
            "serviceaccount": reference(&claims.service_account),
        });
        for (key, r) in [("pod", &claims.pod), ("secret", &claims.secret), ("node", &claims.node)] {
            if let Some(r) = r {
                private[key] = reference(r);
            }
        }
        let body = json!({
            "aud": audiences,
            "exp": now + ttl,
            "iat": now,
            "iss": self.issuer,
            "jti": claims.jti,
            "kubernetes.io": private,
            "nbf": now,
            "sub": user_name(&claims.namespace, &claims.service_account.name),
        });
        self.key.sign(&body).map_err(|e| e.to_string())
    }

    /// Checks everything that needs no lookup. `audiences` are the ones the caller accepts (the
    /// API server's own when empty); returns the claims and the audiences the token and the
    /// caller share.
    pub fn verify(&self, token: &str, audiences: &[String], now: i64) -> Result<(Claims, Vec<String>), TokenError> {
        let body = self.key.verify(token).map_err(|_| TokenError::NotOurs)?;
        if body.get("iss").and_then(Value::as_str) != Some(self.issuer.as_str()) {
            return Err(TokenError::NotOurs);
        }
        let time = |k: &str| body.get(k).and_then(Value::as_i64);
        if time("exp").is_some_and(|exp| now > exp + LEEWAY_SECS) {
            return Err(TokenError::Expired);
        }
        if time("nbf").is_some_and(|nbf| now + LEEWAY_SECS < nbf) {
            return Err(TokenError::NotYetValid);
        }
        if time("iat").is_some_and(|iat| now + LEEWAY_SECS < iat) {
            return Err(TokenError::IssuedInTheFuture);
        }
        let token_audiences: Vec<String> = match body.get("aud") {
            Some(Value::String(a)) => vec![a.clone()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(String::from).collect(),
            _ => Vec::new(),
        };
        let target: Vec<String> = if audiences.is_empty() { vec![self.issuer.clone()] } else { audiences.to_vec() };
        let shared: Vec<String> = target.iter().filter(|a| token_audiences.contains(a)).cloned().collect();
        if shared.is_empty() {
            return Err(TokenError::Audience { token: token_audiences, target });
        }
        Ok((Claims::parse(&body)?, shared))
    }
}

impl Claims {
    fn parse(body: &Value) -> Result<Claims, TokenError> {
        let private = body.get("kubernetes.io").ok_or(TokenError::Malformed("no kubernetes.io claim"))?;
        let reference = |key: &str| {
            private.get(key).filter(|v| !v.is_null()).map(|r| {
                let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                Ref { name: s("name"), uid: s("uid") }
            })
        };
        let namespace = private.get("namespace").and_then(Value::as_str).unwrap_or("").to_string();
        let service_account = reference("serviceaccount").unwrap_or_default();
        let subject = user_name(&namespace, &service_account.name);
        if namespace.is_empty()
            || service_account.name.is_empty()
            || body.get("sub").and_then(Value::as_str) != Some(subject.as_str())
        {
            return Err(TokenError::Malformed("the subject does not name the service account"));
        }
        Ok(Claims {
            namespace,
            service_account,
            pod: reference("pod"),
            secret: reference("secret"),
            node: reference("node"),
            jti: body.get("jti").and_then(Value::as_str).unwrap_or("").to_string(),
        })
    }

    /// The objects whose existence the token depends on, by kind and name (in
    /// [`Claims::namespace`], except a node). A pod-bound token's node is information only.
    pub fn lookups(&self) -> Vec<(Bound, &str)> {
        let mut out = vec![(Bound::ServiceAccount, self.service_account.name.as_str())];
        if let Some(p) = &self.pod {
            out.push((Bound::Pod, &p.name));
        }
        if let Some(s) = &self.secret {
            out.push((Bound::Secret, &s.name));
        }
        if let (Some(n), None) = (&self.node, &self.pod) {
            out.push((Bound::Node, &n.name));
        }
        out
    }

    /// The user the token stands for, given what was found for each of [`Claims::lookups`]
    /// (`found` returns None for a missing object).
    pub fn validate(&self, found: impl Fn(Bound) -> Option<Found>, now: i64) -> Result<UserInfo, TokenError> {
        // Things deleted more than a leeway ago no longer vouch for a token.
        let gone = |f: &Found| f.deleting_since.is_some_and(|t| t < now - LEEWAY_SECS);
        let sa = &self.service_account;
        let stored = found(Bound::ServiceAccount).ok_or_else(|| TokenError::ServiceAccountNotFound(sa.name.clone()))?;
        if stored.uid != sa.uid {
            return Err(TokenError::ServiceAccountUid { stored: stored.uid, claimed: sa.uid.clone() });
        }
        if gone(&stored) {
            return Err(TokenError::ServiceAccountDeleted(format!("{}/{}", self.namespace, sa.name)));
        }
        let bound = |kind: Bound, label: &'static str, r: &Ref| -> Result<(), TokenError> {
            let f = found(kind).ok_or(TokenError::Invalidated)?;
            if f.uid != r.uid {
                return Err(TokenError::BoundUid { kind: label, stored: f.uid, claimed: r.uid.clone() });
            }
            if gone(&f) {
                return Err(TokenError::Invalidated);
            }
            Ok(())
        };
        if let Some(s) = &self.secret {
            bound(Bound::Secret, "secret", s)?;
        }
        if let Some(p) = &self.pod {
            bound(Bound::Pod, "pod", p)?;
        } else if let Some(n) = &self.node {
            bound(Bound::Node, "node", n)?;
        }
        let mut extra = Vec::new();
        let mut put = |k: &str, v: &str| extra.push((k.to_string(), vec![v.to_string()]));
        if let Some(p) = &self.pod {
            put(EXTRA_POD_NAME, &p.name);
            put(EXTRA_POD_UID, &p.uid);
        }
        if let Some(n) = &self.node {
            put(EXTRA_NODE_NAME, &n.name);
            put(EXTRA_NODE_UID, &n.uid);
        }
        if !self.jti.is_empty() {
            put(EXTRA_CREDENTIAL_ID, &format!("JTI={}", self.jti));
        }
        let mut groups = groups(&self.namespace);
        groups.push(AUTHENTICATED.into());
        Ok(UserInfo { name: user_name(&self.namespace, &sa.name), uid: sa.uid.clone(), groups, extra })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authenticator() -> (tempfile::TempDir, TokenAuthenticator) {
        let d = tempfile::tempdir().unwrap();
        let key = ServiceAccountKey::load_or_create(&d.path().join("sa.key"), &d.path().join("sa.pub")).unwrap();
        (d, TokenAuthenticator::new(Arc::new(key), "https://kubernetes.default.svc.cluster.local".into()))
    }

    fn pod_claims() -> Claims {
        Claims {
            namespace: "web".into(),
            service_account: Ref { name: "default".into(), uid: "sa-1".into() },
            pod: Some(Ref { name: "p".into(), uid: "pod-1".into() }),
            secret: None,
            node: Some(Ref { name: "n1".into(), uid: "node-1".into() }),
            jti: "j-1".into(),
        }
    }

    const NOW: i64 = 1_800_000_000;

    fn found(uid: &str) -> Option<Found> {
        Some(Found { uid: uid.into(), deleting_since: None })
    }

    #[test]
    fn a_pod_bound_token_round_trips_to_its_user() {
        let (_d, a) = authenticator();
        let token = a.issue(&pod_claims(), &[a.issuer().to_string()], NOW, 3607).unwrap();
        let (claims, auds) = a.verify(&token, &[], NOW + 10).unwrap();
        assert_eq!((&claims, auds), (&pod_claims(), vec![a.issuer().to_string()]));
        assert_eq!(claims.lookups(), [(Bound::ServiceAccount, "default"), (Bound::Pod, "p")]);
        let user = claims
            .validate(
                |k| match k {
                    Bound::ServiceAccount => found("sa-1"),
                    Bound::Pod => found("pod-1"),
                    _ => None,
                },
                NOW,
            )
            .unwrap();
        assert_eq!(user.name, "system:serviceaccount:web:default");
        assert_eq!(user.uid, "sa-1");
        assert_eq!(user.groups, ["system:serviceaccounts", "system:serviceaccounts:web", "system:authenticated"]);
        let extra: Vec<(&str, &str)> = user.extra.iter().map(|(k, v)| (k.as_str(), v[0].as_str())).collect();
        assert_eq!(
            extra,
            [
                (EXTRA_POD_NAME, "p"),
                (EXTRA_POD_UID, "pod-1"),
                (EXTRA_NODE_NAME, "n1"),
                (EXTRA_NODE_UID, "node-1"),
                (EXTRA_CREDENTIAL_ID, "JTI=j-1")
            ]
        );
    }

    #[test]
    fn time_window_and_audiences() {
        let (_d, a) = authenticator();
        let issuer = vec![a.issuer().to_string()];
        let token = a.issue(&pod_claims(), &issuer, NOW, 600).unwrap();
        // One minute of leeway each way, as upstream.
        assert!(a.verify(&token, &[], NOW + 660).is_ok());
        assert_eq!(a.verify(&token, &[], NOW + 661).unwrap_err(), TokenError::Expired);
        assert!(a.verify(&token, &[], NOW - 60).is_ok());
        assert_eq!(a.verify(&token, &[], NOW - 61).unwrap_err(), TokenError::NotYetValid);
        let vault = vec!["vault".to_string()];
        assert_eq!(
            a.verify(&token, &vault, NOW).unwrap_err().to_string(),
            r#"token audiences ["https://kubernetes.default.svc.cluster.local"] is invalid for the target audiences ["vault"]"#
        );
        let for_vault = a.issue(&pod_claims(), &[vault[0].clone(), "other".into()], NOW, 600).unwrap();
        assert_eq!(a.verify(&for_vault, &vault, NOW).unwrap().1, vault);
        assert!(matches!(a.verify(&for_vault, &[], NOW), Err(TokenError::Audience { .. })));
    }

    #[test]
    fn other_keys_issuers_and_garbage_are_not_ours() {
        let (_d, a) = authenticator();
        let (_d2, other) = authenticator();
        let token = other.issue(&pod_claims(), &[a.issuer().to_string()], NOW, 600).unwrap();
        assert_eq!(a.verify(&token, &[], NOW).unwrap_err(), TokenError::NotOurs);
        let foreign = a.key.sign(&json!({"iss": "https://elsewhere", "aud": a.issuer(), "sub": "x"})).unwrap();
        assert_eq!(a.verify(&foreign, &[], NOW).unwrap_err(), TokenError::NotOurs);
        for garbage in ["", "abc", "a.b.c", "K10abc::server:def"] {
            assert_eq!(a.verify(garbage, &[], NOW).unwrap_err(), TokenError::NotOurs, "{garbage}");
        }
        let no_subject = a.key.sign(&json!({"iss": a.issuer(), "aud": a.issuer(), "kubernetes.io": {}})).unwrap();
        assert_eq!(
            a.verify(&no_subject, &[], NOW).unwrap_err().to_string(),
            "service account token claims could not be validated: the subject does not name the service account"
        );
    }

    #[test]
    fn bound_objects_must_still_exist() {
        let claims = pod_claims();
        let check = |sa: Option<Found>, pod: Option<Found>| {
            claims
                .validate(
                    |k| match k {
                        Bound::ServiceAccount => sa.clone(),
                        Bound::Pod => pod.clone(),
                        _ => None,
                    },
                    NOW,
                )
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        let deleting = |uid: &str, since: i64| Some(Found { uid: uid.into(), deleting_since: Some(since) });
        assert_eq!(check(None, found("pod-1")), Err("serviceaccount \"default\" not found".into()));
        assert_eq!(
            check(found("sa-2"), found("pod-1")),
            Err("service account UID (sa-2) does not match claim (sa-1)".into())
        );
        assert_eq!(
            check(deleting("sa-1", NOW - 61), found("pod-1")),
            Err("service account web/default has been deleted".into())
        );
        assert_eq!(check(found("sa-1"), None), Err("service account token has been invalidated".into()));
        assert_eq!(
            check(found("sa-1"), found("pod-2")),
            Err("pod UID (pod-2) does not match service account pod ref claim (pod-1)".into())
        );
        // A pod in its grace period still vouches for its token for a minute.
        assert_eq!(check(found("sa-1"), deleting("pod-1", NOW - 60)), Ok(()));
        assert_eq!(
            check(found("sa-1"), deleting("pod-1", NOW - 61)),
            Err("service account token has been invalidated".into())
        );
    }

    #[test]
    fn node_and_secret_bound_tokens_check_their_object() {
        let node_bound = Claims { pod: None, ..pod_claims() };
        assert_eq!(node_bound.lookups(), [(Bound::ServiceAccount, "default"), (Bound::Node, "n1")]);
        let on = |node: Option<Found>| {
            node_bound.validate(
                |k| match k {
                    Bound::ServiceAccount => found("sa-1"),
                    Bound::Node => node.clone(),
                    _ => None,
                },
                NOW,
            )
        };
        assert_eq!(on(None).unwrap_err(), TokenError::Invalidated);
        assert!(on(found("node-1")).is_ok());
        let secret_bound = Claims {
            pod: None,
            node: None,
            secret: Some(Ref { name: "s".into(), uid: "sec-1".into() }),
            ..pod_claims()
        };
        assert_eq!(secret_bound.lookups(), [(Bound::ServiceAccount, "default"), (Bound::Secret, "s")]);
        let user = secret_bound
            .validate(
                |k| match k {
                    Bound::ServiceAccount => found("sa-1"),
                    Bound::Secret => found("sec-1"),
                    _ => None,
                },
                NOW,
            )
            .unwrap();
        assert_eq!(user.extra, [(EXTRA_CREDENTIAL_ID.to_string(), vec!["JTI=j-1".to_string()])]);
    }

    #[test]
    fn found_reads_uid_and_deletion_time() {
        let obj =
            br#"{"kind": "Pod", "metadata": {"uid": "u", "deletionTimestamp": "2027-01-15T08:00:00Z"}, "spec": {}}"#;
        assert_eq!(Found::parse(obj), Found { uid: "u".into(), deleting_since: Some(1_800_000_000) });
        assert_eq!(Found::parse(br#"{"metadata": {"uid": "u"}}"#).deleting_since, None);
        assert_eq!(Found::parse(b"not json"), Found { uid: String::new(), deleting_since: None });
    }
}
