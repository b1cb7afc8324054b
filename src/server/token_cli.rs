//! `skiff token create|list|delete`: bootstrap tokens for joining agents, kept as upstream
//! keeps them (`bootstrap-token-<id>` Secrets of type `bootstrap.kubernetes.io/token` in
//! kube-system), managed through the API with the admin kubeconfig, as `kubeadm token` does.
//!
//! Invariant: an API client only; the API server authenticates the tokens and the
//! tokencleaner controller deletes expired ones.

use std::collections::BTreeMap;
use std::path::PathBuf;

use base64::Engine;
use clap::{Args, Subcommand};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};

use crate::server::apiserver::join::{BOOTSTRAP_TOKEN_TYPE, SYSTEM_NAMESPACE};

/// The group every token created here adds (as kubeadm's `default-node-token`).
pub const DEFAULT_EXTRA_GROUP: &str = "system:bootstrappers:skiff:default-node-token";

/// `skiff token`.
#[derive(Args, Debug)]
pub struct TokenFlags {
    #[command(subcommand)]
    command: TokenCommand,
    /// Admin kubeconfig [default: /etc/skiff/skiff.yaml, or ~/.skiff/skiff.yaml when not root]
    #[arg(long, env = "KUBECONFIG", value_name = "FILE", global = true)]
    kubeconfig: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Create a bootstrap token and print it as a full K10 join token.
    Create {
        /// How long the token is valid, e.g. 24h, 30m, 5s; 0 never expires
        #[arg(long, default_value = "24h", value_name = "DURATION")]
        ttl: String,
        /// What the token is for
        #[arg(long, value_name = "TEXT")]
        description: Option<String>,
    },
    /// List bootstrap tokens.
    List,
    /// Delete bootstrap tokens (by ID, or the whole token): new joins with them stop working.
    Delete {
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
    },
}

/// Errors of `skiff token`, each one line.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot read kubeconfig {path}: {message}")]
    Kubeconfig { path: String, message: String },
    #[error("{0}")]
    Api(String),
    #[error("bootstrap token \"{0}\" not found")]
    NotFound(String),
}

pub fn api_err(e: kube::Error) -> TokenError {
    match e {
        kube::Error::Api(s) => TokenError::Api(s.message),
        other => TokenError::Api(other.to_string()),
    }
}

/// Runs `skiff token`; returns the exit code.
pub fn run_blocking(flags: TokenFlags) -> i32 {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("skiff: cannot start the async runtime: {e}");
            return 1;
        }
    };
    match rt.block_on(run(flags)) {
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

/// An API client from the admin kubeconfig (`kubeconfig`, else the default path), with the
/// kubeconfig's CA bundle exactly as it holds it (the server writes it as stored, so its hash
/// is the one joining boxes compare with).
pub async fn admin_client(kubeconfig: Option<PathBuf>) -> Result<(kube::Client, Option<String>), TokenError> {
    let root = nix::unistd::geteuid().is_root();
    let path = kubeconfig.unwrap_or_else(|| crate::server::config::default_kubeconfig_path(root));
    let kc_err =
        |m: &dyn std::fmt::Display| TokenError::Kubeconfig { path: path.display().to_string(), message: m.to_string() };
    let parsed = kube::config::Kubeconfig::read_from(&path).map_err(|e| kc_err(&e))?;
    let config = kube::Config::from_custom_kubeconfig(parsed, &Default::default()).await.map_err(|e| kc_err(&e))?;
    let ca_pem = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_yaml::from_str::<serde_yaml::Value>(&t).ok())
        .and_then(|v| v["clusters"][0]["cluster"]["certificate-authority-data"].as_str().map(String::from))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok());
    let client = kube::Client::try_from(config).map_err(|e| kc_err(&e))?;
    Ok((client, ca_pem))
}

async fn run(flags: TokenFlags) -> Result<String, TokenError> {
    let (client, ca_pem) = admin_client(flags.kubeconfig).await?;
    let api: Api<Secret> = Api::namespaced(client, SYSTEM_NAMESPACE);
    match flags.command {
        TokenCommand::Create { ttl, description } => {
            let ttl = parse_ttl(&ttl)?;
            let (id, secret) = (random_chars(6), random_chars(16));
            let mut data = BTreeMap::from([
                ("token-id".to_string(), id.clone()),
                ("token-secret".to_string(), secret.clone()),
                ("usage-bootstrap-authentication".to_string(), "true".to_string()),
                ("usage-bootstrap-signing".to_string(), "true".to_string()),
                ("auth-extra-groups".to_string(), DEFAULT_EXTRA_GROUP.to_string()),
            ]);
            if let Some(ttl) = ttl {
                let at = chrono::Utc::now() + ttl;
                data.insert("expiration".into(), at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
            }
            if let Some(d) = description {
                data.insert("description".into(), d);
            }
            let s = Secret {
                metadata: kube::api::ObjectMeta {
                    name: Some(format!("bootstrap-token-{id}")),
                    namespace: Some(SYSTEM_NAMESPACE.into()),
                    ..Default::default()
                },
                type_: Some(BOOTSTRAP_TOKEN_TYPE.into()),
                string_data: Some(data),
                ..Default::default()
            };
            api.create(&PostParams::default(), &s).await.map_err(api_err)?;
            Ok(match ca_pem {
                Some(ca) => format!("K10{}::{id}.{secret}\n", crate::pki::ca_hash(&ca)),
                None => format!("{id}.{secret}\n"),
            })
        }
        TokenCommand::List => {
            let list = api.list(&ListParams::default().fields(&format!("type={BOOTSTRAP_TOKEN_TYPE}"))).await;
            // Older field selector support aside, filter here too.
            let items = list.map_err(api_err)?.items;
            let now = chrono::Utc::now();
            let mut rows = vec![["TOKEN", "TTL", "EXPIRES", "USAGES", "DESCRIPTION", "EXTRA GROUPS"].map(String::from)];
            for s in items.iter().filter(|s| s.type_.as_deref() == Some(BOOTSTRAP_TOKEN_TYPE)) {
                let get = |k: &str| {
                    s.data
                        .as_ref()
                        .and_then(|d| d.get(k))
                        .map(|v| String::from_utf8_lossy(&v.0).into_owned())
                        .unwrap_or_default()
                };
                let expires = get("expiration");
                let ttl = match chrono::DateTime::parse_from_rfc3339(&expires) {
                    Ok(t) if t.with_timezone(&chrono::Utc) > now => human(t.with_timezone(&chrono::Utc) - now),
                    Ok(_) => "<invalid>".into(),
                    Err(_) if expires.is_empty() => "<forever>".into(),
                    Err(_) => "<invalid>".into(),
                };
                let usages: Vec<&str> =
                    [("authentication", "usage-bootstrap-authentication"), ("signing", "usage-bootstrap-signing")]
                        .into_iter()
                        .filter(|(_, k)| get(k) == "true")
                        .map(|(n, _)| n)
                        .collect();
                let none = |v: String| if v.is_empty() { "<none>".to_string() } else { v };
                rows.push([
                    format!("{}.{}", get("token-id"), get("token-secret")),
                    ttl,
                    if expires.is_empty() { "<never>".into() } else { expires },
                    usages.join(","),
                    none(get("description")),
                    none(get("auth-extra-groups")),
                ]);
            }
            Ok(table(&rows))
        }
        TokenCommand::Delete { ids } => {
            let mut out = String::new();
            for given in ids {
                let id = given.rsplit("::").next().unwrap_or(&given);
                let id = id.split('.').next().unwrap_or(id).to_string();
                if id.len() != 6 || !id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
                    return Err(TokenError::Usage(format!(
                        "invalid value \"{given}\" for ID: expected a token ID ([a-z0-9]{{6}}) or a token"
                    )));
                }
                match api.delete(&format!("bootstrap-token-{id}"), &DeleteParams::default()).await {
                    Ok(_) => out.push_str(&format!("bootstrap token \"{id}\" deleted\n")),
                    Err(kube::Error::Api(e)) if e.code == 404 => return Err(TokenError::NotFound(id)),
                    Err(e) => return Err(api_err(e)),
                }
            }
            Ok(out)
        }
    }
}

fn parse_ttl(text: &str) -> Result<Option<chrono::Duration>, TokenError> {
    let bad =
        || TokenError::Usage(format!("invalid value \"{text}\" for --ttl: expected a duration such as 24h, 30m or 0"));
    let ns = crate::api::cron::go_duration(text).map_err(|_| bad())?;
    if ns < 0 {
        return Err(bad());
    }
    Ok((ns > 0).then(|| chrono::Duration::nanoseconds(ns)))
}

fn random_chars(n: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let rng = ring::rand::SystemRandom::new();
    let mut out = String::with_capacity(n);
    while out.len() < n {
        let mut b = [0u8; 1];
        if ring::rand::SecureRandom::fill(&rng, &mut b).is_err() {
            continue;
        }
        // 252 = 7 * 36: reject the rest so every character is equally likely.
        if b[0] < 252 {
            out.push(ALPHABET[(b[0] % 36) as usize] as char);
        }
    }
    out
}

fn human(d: chrono::Duration) -> String {
    let s = d.num_seconds();
    if s >= 86_400 {
        format!("{}d", s / 86_400)
    } else if s >= 3600 {
        format!("{}h", s / 3600)
    } else if s >= 60 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

fn table(rows: &[[String; 6]]) -> String {
    let mut widths = [0usize; 6];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_upstreams_shape() {
        let t = format!("{}.{}", random_chars(6), random_chars(16));
        assert!(crate::pki::token::bootstrap_parts(&t).is_some(), "{t}");
        assert_eq!(parse_ttl("0").unwrap(), None);
        assert_eq!(parse_ttl("5s").unwrap(), Some(chrono::Duration::seconds(5)));
        assert_eq!(
            parse_ttl("soon").unwrap_err().to_string(),
            "invalid value \"soon\" for --ttl: expected a duration such as 24h, 30m or 0"
        );
    }
}
