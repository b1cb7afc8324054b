//! Encryption at rest: a [`Datastore`] over another that seals the values of chosen key
//! prefixes with AES-256-GCM, in upstream's envelope-free `aesgcm` format:
//! `k8s:enc:aesgcm:v1:<key name>:` + 12-byte nonce + ciphertext and tag, with the store key as
//! additional authenticated data (a sealed value copied under another key does not open).
//!
//! Writes use the keyring's first key, or store plain bytes when the keyring writes in the
//! clear (`identity`); reads open a value with the key its prefix names and pass values
//! without the `k8s:enc:` prefix through unchanged, so turning encryption on or rotating keys
//! never makes stored data unreadable while the old key is still in the ring. Keys are
//! swapped at run time ([`Encrypted::set_keyring`]); which keys exist and where they are kept
//! is the caller's business.

use std::sync::{Arc, RwLock};

use bytes::Bytes;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use super::{Datastore, Event, KeyValue, RangeResult, StoreError, Watch};

/// What every sealed value starts with.
pub const SEALED_PREFIX: &[u8] = b"k8s:enc:";
const AESGCM_PREFIX: &str = "k8s:enc:aesgcm:v1:";

/// One AES-256-GCM key and its name.
pub struct Key {
    pub name: String,
    key: LessSafeKey,
}

impl Key {
    /// A key from its 32 secret bytes.
    pub fn new(name: &str, secret: &[u8]) -> Result<Key, String> {
        if name.is_empty() || name.contains(':') {
            return Err(format!("key name {name:?} must be non-empty and without ':'"));
        }
        let unbound = UnboundKey::new(&AES_256_GCM, secret)
            .map_err(|_| format!("key {name:?} must be 32 bytes, not {}", secret.len()))?;
        Ok(Key { name: name.to_string(), key: LessSafeKey::new(unbound) })
    }

    fn seal(&self, store_key: &str, plain: &[u8]) -> Result<Bytes, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).map_err(|_| StoreError::Backend("no randomness for a nonce".into()))?;
        let mut sealed = plain.to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(store_key.as_bytes()), &mut sealed)
            .map_err(|_| StoreError::Backend(format!("cannot encrypt {store_key}")))?;
        let mut out = Vec::with_capacity(AESGCM_PREFIX.len() + self.name.len() + 1 + NONCE_LEN + sealed.len());
        out.extend_from_slice(AESGCM_PREFIX.as_bytes());
        out.extend_from_slice(self.name.as_bytes());
        out.push(b':');
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out.into())
    }

    fn open(&self, store_key: &str, body: &[u8]) -> Result<Bytes, String> {
        if body.len() < NONCE_LEN {
            return Err("the sealed value is too short".into());
        }
        let (nonce, sealed) = body.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| "bad nonce".to_string())?;
        let mut buf = sealed.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(store_key.as_bytes()), &mut buf)
            .map_err(|_| format!("key {:?} does not open it", self.name))?;
        Ok(Bytes::copy_from_slice(plain))
    }
}

/// The keys in use: the first seals new writes unless `write_plain`; all of them open.
#[derive(Default)]
pub struct Keyring {
    pub keys: Vec<Key>,
    /// New writes are stored in the clear (upstream's `identity` provider first).
    pub write_plain: bool,
}

impl Keyring {
    /// No keys, writes in the clear: the layer changes nothing.
    pub fn default_plain() -> Keyring {
        Keyring { keys: Vec::new(), write_plain: true }
    }

    /// The key new writes are sealed with.
    pub fn write_key(&self) -> Option<&Key> {
        if self.write_plain { None } else { self.keys.first() }
    }

    /// The name of the key a stored value is sealed with; None for a plain value.
    pub fn sealed_with(value: &[u8]) -> Option<&str> {
        let rest = value.strip_prefix(AESGCM_PREFIX.as_bytes())?;
        let end = rest.iter().position(|b| *b == b':')?;
        std::str::from_utf8(&rest[..end]).ok()
    }

    fn open(&self, store_key: &str, value: &Bytes) -> Result<Bytes, String> {
        if !value.starts_with(SEALED_PREFIX) {
            return Ok(value.clone());
        }
        let Some(name) = Self::sealed_with(value) else {
            return Err("sealed in a format this server does not read (only aesgcm)".into());
        };
        let key = self.keys.iter().find(|k| k.name == name).ok_or_else(|| format!("no key named {name:?}"))?;
        key.open(store_key, &value[AESGCM_PREFIX.len() + name.len() + 1..])
    }
}

/// A datastore that seals values under `prefixes` with its keyring.
pub struct Encrypted {
    inner: Arc<dyn Datastore>,
    prefixes: Vec<String>,
    keyring: Arc<RwLock<Arc<Keyring>>>,
}

impl Encrypted {
    pub fn new(inner: Arc<dyn Datastore>, prefixes: Vec<String>, keyring: Keyring) -> Arc<Encrypted> {
        Arc::new(Encrypted { inner, prefixes, keyring: Arc::new(RwLock::new(Arc::new(keyring))) })
    }

    /// The store underneath, whose values under the prefixes are sealed.
    pub fn inner(&self) -> &Arc<dyn Datastore> {
        &self.inner
    }

    /// The keyring in use.
    pub fn keyring(&self) -> Arc<Keyring> {
        self.keyring.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the keyring: later writes and reads use the new one.
    pub fn set_keyring(&self, keyring: Keyring) {
        *self.keyring.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keyring);
    }

    fn covers(&self, key: &str) -> bool {
        self.prefixes.iter().any(|p| key.starts_with(p.as_str()))
    }

    /// Whether keys under `prefix` may be sealed; ranges and watches elsewhere (every list
    /// of pods, say) pass through untouched.
    fn overlaps(&self, prefix: &str) -> bool {
        self.prefixes.iter().any(|p| p.starts_with(prefix) || prefix.starts_with(p.as_str()))
    }

    fn seal(&self, key: &str, value: Bytes) -> Result<Bytes, StoreError> {
        if !self.covers(key) {
            return Ok(value);
        }
        match self.keyring().write_key() {
            Some(k) => k.seal(key, &value),
            None => Ok(value),
        }
    }

    fn open_kv(&self, ring: &Keyring, mut kv: KeyValue) -> Result<KeyValue, StoreError> {
        if self.covers(&kv.key) {
            kv.value = ring
                .open(&kv.key, &kv.value)
                .map_err(|e| StoreError::Backend(format!("cannot decrypt {}: {e}", kv.key)))?;
        }
        Ok(kv)
    }

    fn open_error(&self, e: StoreError) -> StoreError {
        match e {
            StoreError::Conflict { key, current: Some(kv) } => {
                let current = self.open_kv(&self.keyring(), kv).ok();
                StoreError::Conflict { key, current }
            }
            other => other,
        }
    }
}

#[async_trait::async_trait]
impl Datastore for Encrypted {
    fn current_revision(&self) -> u64 {
        self.inner.current_revision()
    }

    fn compacted_revision(&self) -> u64 {
        self.inner.compacted_revision()
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        match self.inner.get(key).await? {
            Some(kv) => self.open_kv(&self.keyring(), kv).map(Some),
            None => Ok(None),
        }
    }

    async fn range(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        at_revision: Option<u64>,
    ) -> Result<RangeResult, StoreError> {
        let mut r = self.inner.range(prefix, start_after, limit, at_revision).await?;
        if !self.overlaps(prefix) {
            return Ok(r);
        }
        let ring = self.keyring();
        r.kvs = r.kvs.into_iter().map(|kv| self.open_kv(&ring, kv)).collect::<Result<_, _>>()?;
        Ok(r)
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue, StoreError> {
        let mut kv = self.inner.create(key, self.seal(key, value.clone())?).await?;
        kv.value = value;
        Ok(kv)
    }

    async fn update(&self, key: &str, value: Bytes, expected_mod_revision: u64) -> Result<KeyValue, StoreError> {
        let sealed = self.seal(key, value.clone())?;
        let mut kv = self.inner.update(key, sealed, expected_mod_revision).await.map_err(|e| self.open_error(e))?;
        kv.value = value;
        Ok(kv)
    }

    async fn delete(&self, key: &str, expected_mod_revision: Option<u64>) -> Result<KeyValue, StoreError> {
        let kv = self.inner.delete(key, expected_mod_revision).await.map_err(|e| self.open_error(e))?;
        self.open_kv(&self.keyring(), kv)
    }

    async fn watch(&self, prefix: &str, after_revision: u64) -> Result<Watch, StoreError> {
        let watch = self.inner.watch(prefix, after_revision).await?;
        if !self.overlaps(prefix) {
            return Ok(watch);
        }
        // A watch outlives keyring swaps: each event is opened with the ring of its moment.
        let keyring = self.keyring.clone();
        let prefixes = self.prefixes.clone();
        Ok(watch.map_events(Arc::new(move |e| {
            let ring = keyring.read().unwrap_or_else(|p| p.into_inner()).clone();
            open_event(&prefixes, &ring, e)
        })))
    }

    async fn compact(&self, revision: u64) -> Result<(), StoreError> {
        self.inner.compact(revision).await
    }

    async fn close(&self) {
        self.inner.close().await
    }
}

/// Opens an event's values in place; a value that does not open is left sealed (and fails to
/// decode where it is used), with the reason logged.
fn open_event(prefixes: &[String], ring: &Keyring, e: &mut Event) {
    let covers = |k: &str| prefixes.iter().any(|p| k.starts_with(p.as_str()));
    for kv in std::iter::once(&mut e.kv).chain(e.prev.as_mut()) {
        if covers(&kv.key) {
            match ring.open(&kv.key, &kv.value) {
                Ok(v) => kv.value = v,
                Err(err) => tracing::error!(key = %kv.key, "cannot decrypt a watched value: {err}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::store::{RedbStore, StoreOptions};

    const SECRETS: &str = "/core/secrets/";

    fn key(name: &str, byte: u8) -> Key {
        Key::new(name, &[byte; 32]).unwrap()
    }

    fn ring(keys: Vec<Key>) -> Keyring {
        Keyring { keys, write_plain: false }
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    async fn store(dir: &tempfile::TempDir, keyring: Keyring) -> Arc<Encrypted> {
        let inner: Arc<dyn Datastore> = RedbStore::open(&dir.path().join("db"), StoreOptions::default()).unwrap();
        Encrypted::new(inner, vec![SECRETS.to_string()], keyring)
    }

    async fn raw(s: &Encrypted, k: &str) -> Bytes {
        s.inner().get(k).await.unwrap().unwrap().value
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn secrets_are_sealed_and_everything_else_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir, ring(vec![key("k1", 1)])).await;
        let created = s.create("/core/secrets/ns/a", b("hunter2")).await.unwrap();
        assert_eq!(created.value, b("hunter2"));
        s.create("/core/configmaps/ns/a", b("plain")).await.unwrap();
        let sealed = raw(&s, "/core/secrets/ns/a").await;
        assert!(sealed.starts_with(b"k8s:enc:aesgcm:v1:k1:"), "{sealed:?}");
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(Keyring::sealed_with(&sealed), Some("k1"));
        assert_eq!(raw(&s, "/core/configmaps/ns/a").await, b("plain"));
        assert_eq!(s.get("/core/secrets/ns/a").await.unwrap().unwrap().value, b("hunter2"));
        let listed = s.range(SECRETS, None, 0, None).await.unwrap();
        assert_eq!(listed.kvs[0].value, b("hunter2"));
        // The store key is authenticated: a sealed value moved to another key does not open.
        s.inner().create("/core/secrets/ns/b", sealed).await.unwrap();
        assert_eq!(
            s.get("/core/secrets/ns/b").await.unwrap_err().to_string(),
            "datastore failure: cannot decrypt /core/secrets/ns/b: key \"k1\" does not open it"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rotation_keeps_old_values_readable_until_the_old_key_goes() {
        let dir = tempfile::tempdir().unwrap();
        // Plain values written before encryption was turned on stay readable.
        let s = store(&dir, Keyring { keys: vec![key("k1", 1)], write_plain: true }).await;
        s.create("/core/secrets/ns/old", b("before")).await.unwrap();
        assert_eq!(raw(&s, "/core/secrets/ns/old").await, b("before"));
        s.set_keyring(ring(vec![key("k1", 1)]));
        let a = s.create("/core/secrets/ns/a", b("one")).await.unwrap();
        assert_eq!(s.get("/core/secrets/ns/old").await.unwrap().unwrap().value, b("before"));
        s.set_keyring(ring(vec![key("k2", 2), key("k1", 1)]));
        assert_eq!(s.get("/core/secrets/ns/a").await.unwrap().unwrap().value, b("one"));
        let b2 = s.update("/core/secrets/ns/a", b("two"), a.mod_revision).await.unwrap();
        assert_eq!(Keyring::sealed_with(&raw(&s, "/core/secrets/ns/a").await), Some("k2"));
        s.set_keyring(ring(vec![key("k2", 2)]));
        assert_eq!(s.get("/core/secrets/ns/a").await.unwrap().unwrap().value, b("two"));
        s.update("/core/secrets/ns/old", b("after"), 1).await.unwrap();
        // A value sealed with a key no longer in the ring is an error, not garbage.
        s.inner().create("/core/secrets/ns/k1", key("k1", 1).seal("/core/secrets/ns/k1", b"x").unwrap()).await.unwrap();
        assert_eq!(
            s.get("/core/secrets/ns/k1").await.unwrap_err().to_string(),
            "datastore failure: cannot decrypt /core/secrets/ns/k1: no key named \"k1\""
        );
        // A conflict hands back the current value opened.
        match s.update("/core/secrets/ns/a", b("three"), b2.mod_revision - 1).await {
            Err(StoreError::Conflict { current: Some(kv), .. }) => assert_eq!(kv.value, b("two")),
            other => panic!("{other:?}"),
        }
        assert_eq!(s.delete("/core/secrets/ns/a", None).await.unwrap().value, b("two"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watches_see_plain_values() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir, ring(vec![key("k1", 1)])).await;
        let mut w = s.watch(SECRETS, s.current_revision()).await.unwrap();
        let a = s.create("/core/secrets/ns/a", b("one")).await.unwrap();
        s.update("/core/secrets/ns/a", b("two"), a.mod_revision).await.unwrap();
        let created = w.next().await.unwrap().unwrap();
        assert_eq!(created.kv.value, b("one"));
        let updated = w.next().await.unwrap().unwrap();
        assert_eq!((updated.kv.value, updated.prev.unwrap().value), (b("two"), b("one")));
    }

    #[test]
    fn bad_keys_are_refused() {
        assert_eq!(Key::new("k", &[0; 16]).err().unwrap(), "key \"k\" must be 32 bytes, not 16");
        assert!(Key::new("a:b", &[0; 32]).is_err());
    }
}
