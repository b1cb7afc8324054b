//! Who a kubelet API request comes from and what it may do, decided as upstream's kubelet does
//! with webhook authentication and authorization:
//!
//! - a client certificate of the cluster's client CA names its user (CN) and groups (O);
//!   without one, a bearer token is put to the API server as a TokenReview;
//! - the API server's own identity (`kube-apiserver-kubelet-client`) and `system:masters` may do
//!   everything (RBAC grants them as much); every other user is put to the API server as a
//!   SubjectAccessReview on this Node: resource `nodes`, subresource `stats`, `metrics` or `log`
//!   by path and `proxy` for everything else, verb by HTTP method;
//! - answers are remembered as long as upstream's defaults: a token's for 2 minutes, an allowed
//!   request's for 5 minutes, a denied one's for 30 seconds.
//!
//! The reviews themselves are behind [`Reviews`], which the agent implements with its API client;
//! this module keeps only the caches.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::pki::ClientIdentity;

/// How long a reviewed token's answer (valid or not) is kept.
const TOKEN_TTL: Duration = Duration::from_secs(120);
/// How long an allowed request's answer is kept.
const ALLOWED_TTL: Duration = Duration::from_secs(300);
/// How long a denied request's answer is kept.
const DENIED_TTL: Duration = Duration::from_secs(30);
/// Entries per cache; a full cache drops its expired entries, then everything.
const CACHE_ENTRIES: usize = 4096;

/// A user as the API server knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl From<&ClientIdentity> for User {
    fn from(id: &ClientIdentity) -> Self {
        User { name: id.user.clone(), groups: id.groups.clone(), ..Default::default() }
    }
}

/// The API server's answers about users and their requests.
#[async_trait::async_trait]
pub trait Reviews: Send + Sync + 'static {
    /// The user a bearer token belongs to; `None` when the token is not valid.
    async fn authenticate(&self, token: &str) -> Result<Option<User>, String>;
    /// Whether `user` may `verb` the `subresource` of the Node `node`.
    async fn authorize(&self, user: &User, verb: &str, node: &str, subresource: &str) -> Result<bool, String>;
}

/// The kubelet's verb for an HTTP method (upstream's mapping; others are not authorized).
pub fn verb(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET | http::Method::HEAD => "get",
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => "",
    }
}

/// The Node subresource a kubelet path is authorized as.
pub fn subresource(path: &str) -> &'static str {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    match first {
        "stats" => "stats",
        "metrics" => "metrics",
        "logs" => "log",
        _ => "proxy",
    }
}

/// Whether a user may do everything without asking: the API server's client and
/// `system:masters`.
pub fn is_superuser(user: &User) -> bool {
    user.name == crate::pki::KUBELET_CLIENT_CN || user.groups.iter().any(|g| g == "system:masters")
}

/// The caches in front of [`Reviews`].
pub struct Gate {
    reviews: Arc<dyn Reviews>,
    tokens: Cache<[u8; 32], Option<User>>,
    decisions: Cache<(User, &'static str, &'static str), bool>,
}

impl Gate {
    pub fn new(reviews: Arc<dyn Reviews>) -> Self {
        Gate { reviews, tokens: Cache::default(), decisions: Cache::default() }
    }

    /// The user of a bearer token; `None` when it is not valid or cannot be reviewed now.
    pub async fn authenticate(&self, token: &str, now: Instant) -> Option<User> {
        // Tokens are kept by their digest, never in the clear.
        let digest: [u8; 32] =
            ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref().try_into().unwrap_or([0; 32]);
        if let Some(user) = self.tokens.get(&digest, now) {
            return user;
        }
        match self.reviews.authenticate(token).await {
            Ok(user) => {
                self.tokens.put(digest, user.clone(), now, TOKEN_TTL);
                user
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot review a bearer token");
                None
            }
        }
    }

    /// Whether `user` may `verb` the `subresource` of `node`.
    pub async fn authorize(
        &self,
        user: &User,
        verb: &'static str,
        node: &str,
        subresource: &'static str,
        now: Instant,
    ) -> Result<bool, String> {
        if is_superuser(user) {
            return Ok(true);
        }
        let key = (user.clone(), verb, subresource);
        if let Some(allowed) = self.decisions.get(&key, now) {
            return Ok(allowed);
        }
        let allowed = self.reviews.authorize(user, verb, node, subresource).await?;
        self.decisions.put(key, allowed, now, if allowed { ALLOWED_TTL } else { DENIED_TTL });
        Ok(allowed)
    }
}

/// A map whose entries expire.
struct Cache<K, V>(Mutex<HashMap<K, (V, Instant)>>);

impl<K, V> Default for Cache<K, V> {
    fn default() -> Self {
        Cache(Mutex::new(HashMap::new()))
    }
}

impl<K: Eq + Hash, V: Clone> Cache<K, V> {
    fn get(&self, key: &K, now: Instant) -> Option<V> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key).filter(|(_, until)| now < *until).map(|(v, _)| v.clone())
    }

    fn put(&self, key: K, value: V, now: Instant, ttl: Duration) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= CACHE_ENTRIES {
            map.retain(|_, (_, until)| now < *until);
            if map.len() >= CACHE_ENTRIES {
                map.clear();
            }
        }
        map.insert(key, (value, now + ttl));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Allows `reader` to get `proxy`; knows the token "good" as `reader`.
    #[derive(Default)]
    struct Counted {
        tokens: AtomicUsize,
        reviews: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Reviews for Counted {
        async fn authenticate(&self, token: &str) -> Result<Option<User>, String> {
            self.tokens.fetch_add(1, Ordering::SeqCst);
            Ok((token == "good").then(|| User { name: "reader".into(), ..Default::default() }))
        }
        async fn authorize(&self, user: &User, verb: &str, node: &str, sub: &str) -> Result<bool, String> {
            self.reviews.fetch_add(1, Ordering::SeqCst);
            assert_eq!(node, "n1");
            Ok(user.name == "reader" && verb == "get" && sub == "proxy")
        }
    }

    #[tokio::test]
    async fn answers_are_kept_as_long_as_upstreams_defaults() {
        let reviews = Arc::new(Counted::default());
        let gate = Gate::new(reviews.clone());
        let t0 = Instant::now();
        let reader = gate.authenticate("good", t0).await.expect("reader");
        assert_eq!(gate.authenticate("bad", t0).await, None);
        assert_eq!(gate.authenticate("good", t0 + Duration::from_secs(119)).await, Some(reader.clone()));
        assert_eq!(gate.authenticate("bad", t0 + Duration::from_secs(119)).await, None);
        assert_eq!(reviews.tokens.load(Ordering::SeqCst), 2);
        gate.authenticate("good", t0 + Duration::from_secs(121)).await;
        assert_eq!(reviews.tokens.load(Ordering::SeqCst), 3);

        assert_eq!(gate.authorize(&reader, "get", "n1", "proxy", t0).await, Ok(true));
        assert_eq!(gate.authorize(&reader, "get", "n1", "stats", t0).await, Ok(false));
        assert_eq!(reviews.reviews.load(Ordering::SeqCst), 2);
        let later = t0 + Duration::from_secs(31);
        assert_eq!(gate.authorize(&reader, "get", "n1", "proxy", later).await, Ok(true));
        assert_eq!(gate.authorize(&reader, "get", "n1", "stats", later).await, Ok(false));
        assert_eq!(reviews.reviews.load(Ordering::SeqCst), 3, "denied answers expire after 30 s, allowed ones later");
        gate.authorize(&reader, "get", "n1", "proxy", t0 + Duration::from_secs(301)).await.expect("review");
        assert_eq!(reviews.reviews.load(Ordering::SeqCst), 4);

        // The API server's identity and system:masters are never reviewed.
        let apiserver = User { name: crate::pki::KUBELET_CLIENT_CN.into(), ..Default::default() };
        let admin = User { name: "system:admin".into(), groups: vec!["system:masters".into()], ..Default::default() };
        for u in [apiserver, admin] {
            assert_eq!(gate.authorize(&u, "create", "n1", "proxy", t0).await, Ok(true));
        }
        assert_eq!(reviews.reviews.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn paths_and_methods_map_to_upstreams_subresources_and_verbs() {
        assert_eq!(
            [
                "/healthz",
                "/pods",
                "/stats/summary",
                "/metrics/cadvisor",
                "/logs/",
                "/exec/a/b/c",
                "/containerLogs/a/b/c"
            ]
            .map(subresource),
            ["proxy", "proxy", "stats", "metrics", "log", "proxy", "proxy"]
        );
        assert_eq!(
            [http::Method::GET, http::Method::HEAD, http::Method::POST, http::Method::PUT, http::Method::DELETE]
                .map(|m| verb(&m)),
            ["get", "get", "create", "update", "delete"]
        );
    }
}
