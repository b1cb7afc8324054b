//! Secrets encryption at rest (`--secrets-encryption`) and `skiff secrets-encrypt`.
//!
//! The keys live in `<data-dir>/server/cred/encryption-config.json` (mode 0600), in upstream's
//! `EncryptionConfiguration` shape: Secrets, an `aesgcm` provider with named 32-byte keys and
//! an `identity` provider, whichever is first writes. The file is read at every start while
//! it exists, so Secrets sealed earlier stay readable even when the flag is later dropped (new
//! writes are then plain again). The sealing itself is [`crate::server::store::encryption`].
//!
//! Rotation (`skiff secrets-encrypt rotate-keys`, `POST /skiff/v1/secrets-encryption/
//! rotate-keys` as an administrator): a new key goes first in the ring and the file, every
//! Secret is written again under it, the old keys are dropped, and the store's history is
//! compacted so no older revision sealed with them remains. Interrupted, the file still holds
//! both keys and the next rotation finishes the job.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use serde_json::{Value, json};

use crate::api::status::ApiError;
use crate::server::store::encryption::{Encrypted, Key, Keyring};
use crate::server::store::{Datastore, StoreError};

/// Where Secrets live in the store.
pub const SECRETS_PREFIX: &str = "/core/secrets/";
/// The status path; `<STATUS_PATH>/rotate-keys` rotates.
pub const STATUS_PATH: &str = "/skiff/v1/secrets-encryption";
pub const ROTATE_PATH: &str = "/skiff/v1/secrets-encryption/rotate-keys";

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The key file under the server folder.
pub fn config_path(server_dir: &Path) -> PathBuf {
    server_dir.join("cred").join("encryption-config.json")
}

/// The keys as the file holds them: name and secret bytes, the writing one first unless
/// `write_plain`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyFile {
    pub keys: Vec<(String, Vec<u8>)>,
    pub write_plain: bool,
}

impl KeyFile {
    /// Parses an `EncryptionConfiguration`; only what this server can honour is accepted.
    pub fn parse(text: &str) -> Result<KeyFile, String> {
        let doc: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        if doc.get("kind").and_then(Value::as_str) != Some("EncryptionConfiguration") {
            return Err("kind must be EncryptionConfiguration".into());
        }
        let resources = doc.get("resources").and_then(Value::as_array).cloned().unwrap_or_default();
        let [entry] = resources.as_slice() else {
            return Err("resources must hold exactly one entry, for secrets".into());
        };
        let names: Vec<&str> =
            entry.get("resources").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
        if names != ["secrets"] {
            return Err(format!("only secrets can be encrypted, not {names:?}"));
        }
        let mut file = KeyFile::default();
        let providers = entry.get("providers").and_then(Value::as_array).cloned().unwrap_or_default();
        for (i, p) in providers.iter().enumerate() {
            let kind = p.as_object().and_then(|o| o.keys().next()).map(String::as_str).unwrap_or("");
            match kind {
                "identity" => file.write_plain |= i == 0,
                "aesgcm" => {
                    for k in p.pointer("/aesgcm/keys").and_then(Value::as_array).into_iter().flatten() {
                        let name = k.get("name").and_then(Value::as_str).unwrap_or("").to_string();
                        let secret = k.get("secret").and_then(Value::as_str).unwrap_or("");
                        let bytes = B64.decode(secret).map_err(|_| format!("key {name:?}: secret is not base64"))?;
                        Key::new(&name, &bytes)?;
                        file.keys.push((name, bytes));
                    }
                }
                other => return Err(format!("provider {other:?} is not supported; use aesgcm")),
            }
        }
        if file.keys.is_empty() {
            return Err("no aesgcm key".into());
        }
        Ok(file)
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let keys: Vec<Value> = self.keys.iter().map(|(n, s)| json!({"name": n, "secret": B64.encode(s)})).collect();
        let aesgcm = json!({"aesgcm": {"keys": keys}});
        let identity = json!({"identity": {}});
        let providers = if self.write_plain { vec![identity, aesgcm] } else { vec![aesgcm, identity] };
        let doc = json!({
            "kind": "EncryptionConfiguration",
            "apiVersion": "apiserver.config.k8s.io/v1",
            "resources": [{"resources": ["secrets"], "providers": providers}],
        });
        serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
    }

    fn keyring(&self) -> Keyring {
        let keys = self.keys.iter().filter_map(|(n, s)| Key::new(n, s).ok()).collect();
        Keyring { keys, write_plain: self.write_plain }
    }

    fn save(&self, path: &Path) -> Result<(), String> {
        crate::pki::write_file(path, self.render().as_bytes(), 0o600).map_err(|e| e.to_string())
    }
}

/// A new key, named after the time it was made.
fn new_key() -> Result<(String, Vec<u8>), String> {
    let mut secret = vec![0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
        .map_err(|_| "no randomness for a key".to_string())?;
    Ok((format!("aesgcmkey-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ")), secret))
}

/// Encryption at rest of a running server.
pub struct SecretsEncryption {
    store: Arc<Encrypted>,
    path: PathBuf,
    rotation: tokio::sync::Mutex<()>,
}

/// Puts the encryption layer over `store`, sealing when the flag asks for it, opening with the
/// key file's keys when it exists; returns the store to use and the handle for status and
/// rotation.
pub fn wrap(
    store: Arc<dyn Datastore>,
    server_dir: &Path,
    enabled: bool,
) -> Result<(Arc<dyn Datastore>, Arc<SecretsEncryption>), String> {
    let path = config_path(server_dir);
    let mut file = match std::fs::read_to_string(&path) {
        Ok(text) => KeyFile::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !enabled {
                // Nothing is sealed and nothing will be: the layer only reports that.
                let plain = Encrypted::new(store, vec![SECRETS_PREFIX.to_string()], Keyring::default_plain());
                let handle = SecretsEncryption { store: plain.clone(), path, rotation: Default::default() };
                return Ok((plain, Arc::new(handle)));
            }
            KeyFile { keys: vec![new_key()?], write_plain: false }
        }
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    if file.write_plain == enabled || !path.exists() {
        file.write_plain = !enabled;
        file.save(&path)?;
    }
    let encrypted = Encrypted::new(store, vec![SECRETS_PREFIX.to_string()], file.keyring());
    let handle = SecretsEncryption { store: encrypted.clone(), path, rotation: Default::default() };
    Ok((encrypted, Arc::new(handle)))
}

impl SecretsEncryption {
    /// Whether new Secrets are sealed, the keys (active first) and how the stored Secrets are
    /// sealed: `{"enabled", "keys": [{"name", "type", "active"}], "secrets": {"active",
    /// "older", "plain"}}`.
    pub async fn status(&self) -> Result<Value, StoreError> {
        let ring = self.store.keyring();
        let active = ring.write_key().map(|k| k.name.clone());
        let (mut with_active, mut older, mut plain) = (0u64, 0u64, 0u64);
        self.each_stored(|_, sealed_with| match sealed_with {
            None => plain += 1,
            Some(n) if Some(n) == active.as_deref() => with_active += 1,
            Some(_) => older += 1,
        })
        .await?;
        let keys: Vec<Value> = ring
            .keys
            .iter()
            .map(|k| json!({"name": k.name, "type": "AES-GCM", "active": Some(&k.name) == active.as_ref()}))
            .collect();
        Ok(json!({
            "enabled": !ring.write_plain,
            "keys": keys,
            "secrets": {"active": with_active, "older": older, "plain": plain},
        }))
    }

    /// A new key, every Secret sealed again with it, the old keys and history gone.
    pub async fn rotate(&self) -> Result<Value, ApiError> {
        let _one_at_a_time = self.rotation.lock().await;
        let disabled = || {
            ApiError::bad_request("secrets encryption is disabled: start the server with --secrets-encryption first")
        };
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(disabled()),
            Err(e) => return Err(ApiError::internal(format!("cannot read {}: {e}", self.path.display()))),
        };
        let mut file = KeyFile::parse(&text).map_err(ApiError::internal)?;
        if file.write_plain {
            return Err(disabled());
        }
        let (name, secret) = new_key().map_err(ApiError::internal)?;
        file.keys.insert(0, (name.clone(), secret));
        file.save(&self.path).map_err(ApiError::internal)?;
        self.store.set_keyring(file.keyring());
        let rewritten = self.reseal(&name).await.map_err(ApiError::internal)?;
        file.keys.truncate(1);
        file.save(&self.path).map_err(ApiError::internal)?;
        self.store.set_keyring(file.keyring());
        // Older revisions of Secrets are still sealed with the dropped keys: drop them too.
        let store = self.store.inner();
        store.compact(store.current_revision()).await.map_err(ApiError::internal)?;
        tracing::info!(key = %name, secrets = rewritten, "secrets encryption key rotated");
        self.status().await.map_err(ApiError::internal)
    }

    /// Writes every Secret not sealed with `key` again (the same bytes, sealed anew).
    async fn reseal(&self, key: &str) -> Result<u64, StoreError> {
        let mut stale = Vec::new();
        self.each_stored(|k, sealed_with| {
            if sealed_with != Some(key) {
                stale.push(k.to_string());
            }
        })
        .await?;
        let mut count = 0;
        for k in stale {
            loop {
                let Some(current) = self.store.get(&k).await? else { break };
                match self.store.update(&k, current.value, current.mod_revision).await {
                    Ok(_) => {
                        count += 1;
                        break;
                    }
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(StoreError::NotFound { .. }) => break,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(count)
    }

    /// Calls `f` with every stored Secret's key and the name of the key it is sealed with
    /// (None: plain), read page by page from the store underneath.
    async fn each_stored(&self, mut f: impl FnMut(&str, Option<&str>)) -> Result<(), StoreError> {
        let mut after: Option<String> = None;
        loop {
            let page = self.store.inner().range(SECRETS_PREFIX, after.as_deref(), 500, None).await?;
            for kv in &page.kvs {
                f(&kv.key, Keyring::sealed_with(&kv.value));
            }
            after = page.kvs.last().map(|kv| kv.key.clone());
            if !page.more || after.is_none() {
                return Ok(());
            }
        }
    }
}

/// `skiff secrets-encrypt`.
#[derive(clap::Args, Debug)]
pub struct SecretsEncryptFlags {
    #[command(subcommand)]
    command: SecretsEncryptCommand,
    /// Admin kubeconfig [default: /etc/skiff/skiff.yaml, or ~/.skiff/skiff.yaml when not root]
    #[arg(long, env = "KUBECONFIG", value_name = "FILE", global = true)]
    kubeconfig: Option<PathBuf>,
}

#[derive(clap::Subcommand, Debug)]
enum SecretsEncryptCommand {
    /// Whether Secrets are encrypted, with which keys, and how the stored ones are sealed.
    Status,
    /// Make a new key, encrypt every Secret with it and drop the old keys.
    RotateKeys,
}

/// Runs `skiff secrets-encrypt`; returns the exit code.
pub fn run_blocking(flags: SecretsEncryptFlags) -> i32 {
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
        .and_then(|rt| rt.block_on(run(flags)));
    match result {
        Ok(out) => {
            print!("{out}");
            0
        }
        Err(e) => {
            eprintln!("skiff: {e}");
            1
        }
    }
}

async fn run(flags: SecretsEncryptFlags) -> Result<String, String> {
    let (client, _) = super::token_cli::admin_client(flags.kubeconfig).await.map_err(|e| e.to_string())?;
    let request = match flags.command {
        SecretsEncryptCommand::Status => http::Request::get(STATUS_PATH).body(Vec::new()),
        SecretsEncryptCommand::RotateKeys => http::Request::post(ROTATE_PATH).body(Vec::new()),
    };
    let request = request.map_err(|e| e.to_string())?;
    let text = client.request_text(request).await.map_err(|e| super::token_cli::api_err(e).to_string())?;
    let status: Value = serde_json::from_str(&text).map_err(|e| format!("unexpected answer from the server: {e}"))?;
    Ok(render_status(&status))
}

/// `skiff secrets-encrypt status` text from the status document.
pub fn render_status(status: &Value) -> String {
    let enabled = status["enabled"].as_bool().unwrap_or(false);
    let mut out = format!("Encryption Status: {}\n", if enabled { "Enabled" } else { "Disabled" });
    let n = |k: &str| status["secrets"][k].as_u64().unwrap_or(0);
    out.push_str(&format!(
        "Secrets: {} sealed with the active key, {} with older keys, {} in plain text\n",
        n("active"),
        n("older"),
        n("plain")
    ));
    let keys = status["keys"].as_array().cloned().unwrap_or_default();
    if !keys.is_empty() {
        out.push_str("\nActive  Key Type  Name\n------  --------  ----\n");
        for k in keys {
            let mark = if k["active"].as_bool().unwrap_or(false) { " *" } else { "  " };
            out.push_str(&format!(
                "{mark:<8}{:<10}{}\n",
                k["type"].as_str().unwrap_or(""),
                k["name"].as_str().unwrap_or("")
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_file_round_trips_and_refuses_what_it_cannot_honour() {
        let file = KeyFile { keys: vec![("k1".into(), vec![7; 32]), ("k0".into(), vec![9; 32])], write_plain: false };
        assert_eq!(KeyFile::parse(&file.render()), Ok(file.clone()));
        let plain = KeyFile { write_plain: true, ..file };
        assert_eq!(KeyFile::parse(&plain.render()), Ok(plain.clone()));
        let doc: Value = serde_json::from_str(&plain.render()).unwrap();
        assert_eq!(doc["resources"][0]["providers"][0], json!({"identity": {}}));
        let with = |providers: Value, resources: Value| {
            json!({"kind": "EncryptionConfiguration", "resources": [{"resources": resources, "providers": providers}]})
                .to_string()
        };
        let key = json!({"name": "k", "secret": B64.encode([1u8; 32])});
        let cases = [
            (
                with(json!([{"aescbc": {"keys": [key]}}]), json!(["secrets"])),
                "provider \"aescbc\" is not supported; use aesgcm",
            ),
            (
                with(json!([{"aesgcm": {"keys": [key]}}]), json!(["configmaps"])),
                "only secrets can be encrypted, not [\"configmaps\"]",
            ),
            (with(json!([{"identity": {}}]), json!(["secrets"])), "no aesgcm key"),
            (
                with(
                    json!([{"aesgcm": {"keys": [{"name": "k", "secret": B64.encode([1u8; 16])}]}}]),
                    json!(["secrets"]),
                ),
                "key \"k\" must be 32 bytes, not 16",
            ),
            ("[]".to_string(), "kind must be EncryptionConfiguration"),
        ];
        for (text, message) in cases {
            assert_eq!(KeyFile::parse(&text), Err(message.to_string()));
        }
    }

    #[test]
    fn status_text() {
        let status = json!({"enabled": true, "keys": [{"name": "aesgcmkey-1", "type": "AES-GCM", "active": true}],
            "secrets": {"active": 3, "older": 0, "plain": 1}});
        assert_eq!(
            render_status(&status),
            "Encryption Status: Enabled\nSecrets: 3 sealed with the active key, 0 with older keys, 1 in plain text\n\n\
             Active  Key Type  Name\n------  --------  ----\n *      AES-GCM   aesgcmkey-1\n"
        );
    }
}
