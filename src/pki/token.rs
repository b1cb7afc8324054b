//! Join tokens: `K10<sha256 of the CA bundle>::<credentials>`, as k3s writes them. The
//! credentials are `server:<secret>` (the server token), `node:<secret>` (the agent token) or a
//! bootstrap token `<id>.<secret>`; a token without the `K10<hash>::` prefix is the credentials
//! alone and pins no CA.

use std::path::Path;

use super::{PkiError, read_opt, write_file};

/// A parsed join token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// Hex SHA-256 of the CA bundle, when the token pins it.
    pub ca_hash: Option<String>,
    /// `server`, `node`, or empty (a bootstrap token, or a bare secret).
    pub username: String,
    pub secret: String,
}

impl JoinToken {
    /// The credentials as the API server takes them in `Authorization: Bearer`.
    pub fn bearer(&self) -> String {
        if self.username.is_empty() { self.secret.clone() } else { format!("{}:{}", self.username, self.secret) }
    }
}

/// What a bearer credential claims to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential<'a> {
    /// A bootstrap token `<id>.<secret>` (`[a-z0-9]{6}.[a-z0-9]{16}`).
    Bootstrap { id: &'a str, secret: &'a str },
    /// `server:<secret>`.
    Server(&'a str),
    /// `node:<secret>`.
    Agent(&'a str),
    /// Anything else: a bare secret.
    Bare(&'a str),
}

impl<'a> Credential<'a> {
    /// Classifies a bearer credential (never fails: what does not match is `Bare`).
    pub fn parse(s: &'a str) -> Credential<'a> {
        if let Some((id, secret)) = bootstrap_parts(s) {
            return Credential::Bootstrap { id, secret };
        }
        if let Some(rest) = s.strip_prefix("server:") {
            return Credential::Server(rest);
        }
        if let Some(rest) = s.strip_prefix("node:") {
            return Credential::Agent(rest);
        }
        Credential::Bare(s)
    }
}

/// Splits a bootstrap token `[a-z0-9]{6}.[a-z0-9]{16}` into id and secret.
pub fn bootstrap_parts(s: &str) -> Option<(&str, &str)> {
    let (id, secret) = s.split_once('.')?;
    let ok = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    (ok(id, 6) && ok(secret, 16)).then_some((id, secret))
}

/// Compares two secrets in time that depends only on their lengths.
pub fn secrets_equal(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Hex SHA-256 of a CA bundle exactly as stored.
pub fn ca_hash(ca_pem: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, ca_pem.as_bytes()).as_ref())
}

/// Formats a full token for `secret`, pinned to the CA bundle.
pub fn format_token(ca_pem: &str, secret: &str) -> String {
    format!("K10{}::server:{secret}", ca_hash(ca_pem))
}

/// Parses a full token or a bare secret.
pub fn parse_token(s: &str) -> Result<JoinToken, PkiError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(PkiError::Token("token is empty".into()));
    }
    let Some(rest) = s.strip_prefix("K10") else {
        return Ok(match Credential::parse(s) {
            Credential::Server(secret) if !secret.is_empty() => {
                JoinToken { ca_hash: None, username: "server".into(), secret: secret.into() }
            }
            Credential::Agent(secret) if !secret.is_empty() => {
                JoinToken { ca_hash: None, username: "node".into(), secret: secret.into() }
            }
            _ => JoinToken { ca_hash: None, username: String::new(), secret: s.to_string() },
        });
    };
    let (hash, creds) =
        rest.split_once("::").ok_or_else(|| PkiError::Token("expected K10<ca-hash>::<user>:<secret>".into()))?;
    if hash.len() != 64 || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(PkiError::Token("the CA hash must be 64 hexadecimal characters".into()));
    }
    if bootstrap_parts(creds).is_some() {
        return Ok(JoinToken {
            ca_hash: Some(hash.to_ascii_lowercase()),
            username: String::new(),
            secret: creds.to_string(),
        });
    }
    let (user, secret) =
        creds.split_once(':').ok_or_else(|| PkiError::Token("expected <user>:<secret> after the CA hash".into()))?;
    if user.is_empty() || secret.is_empty() {
        return Err(PkiError::Token("user and secret must not be empty".into()));
    }
    Ok(JoinToken { ca_hash: Some(hash.to_ascii_lowercase()), username: user.to_string(), secret: secret.to_string() })
}

/// Writes (or, without one, removes) the agent token file; returns the full token
/// `K10<hash>::node:<secret>`.
pub fn agent_token(path: &Path, ca_pem: &str, given: Option<&str>) -> Result<Option<String>, PkiError> {
    let Some(g) = given else {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(PkiError::Io { path: path.display().to_string(), source: e }),
        }
        return Ok(None);
    };
    let t = parse_token(g)?;
    if let Some(h) = &t.ca_hash
        && *h != ca_hash(ca_pem)
    {
        return Err(PkiError::Token(format!(
            "--agent-token pins CA hash {h}, but this server's CA hash is {}",
            ca_hash(ca_pem)
        )));
    }
    let token = format!("K10{}::node:{}", ca_hash(ca_pem), t.secret);
    if read_opt(path)?.as_deref().map(str::trim) != Some(token.as_str()) {
        write_file(path, format!("{token}\n").as_bytes(), 0o600)?;
    }
    Ok(Some(token))
}

/// Reads, creates or replaces the token file; returns the full token.
pub fn load_or_create(path: &Path, ca_pem: &str, given: Option<&str>) -> Result<String, PkiError> {
    let secret = match given {
        Some(g) => {
            let t = parse_token(g)?;
            if let Some(h) = &t.ca_hash
                && *h != ca_hash(ca_pem)
            {
                return Err(PkiError::Token(format!(
                    "--token pins CA hash {h}, but this server's CA hash is {}",
                    ca_hash(ca_pem)
                )));
            }
            t.secret
        }
        None => match read_opt(path)? {
            Some(existing) => parse_token(&existing)?.secret,
            None => {
                let mut b = [0u8; 16];
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
                    .map_err(|_| PkiError::Token("no randomness available".into()))?;
                hex(&b)
            }
        },
    };
    let token = format_token(ca_pem, &secret);
    if read_opt(path)?.as_deref().map(str::trim) != Some(token.as_str()) {
        write_file(path, format!("{token}\n").as_bytes(), 0o600)?;
    }
    Ok(token)
}

/// The token of an `Authorization: Bearer <token>` header (the scheme in any case, as
/// upstream's bearer-token authenticator reads it); `None` without one or with an empty one.
pub fn bearer_token(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_as_upstream_reads_them() {
        let headers = |v: &str| {
            let mut h = http::HeaderMap::new();
            h.insert(http::header::AUTHORIZATION, v.parse().expect("header"));
            h
        };
        assert_eq!(bearer_token(&headers("Bearer abc.def")), Some("abc.def"));
        assert_eq!(bearer_token(&headers("bearer  abc")), Some("abc"));
        assert_eq!(bearer_token(&headers("Basic abc")), None);
        assert_eq!(bearer_token(&headers("Bearer ")), None);
        assert_eq!(bearer_token(&http::HeaderMap::new()), None);
    }

    #[test]
    fn parses_forms_and_rejects_garbage() {
        let full = format!("K10{}::server:s3cret", "a".repeat(64));
        let t = parse_token(&full).unwrap();
        assert_eq!(
            (t.ca_hash.as_deref(), t.username.as_str(), t.secret.as_str()),
            (Some("a".repeat(64).as_str()), "server", "s3cret")
        );
        let bare = parse_token("plain").unwrap();
        assert_eq!((bare.ca_hash.clone(), bare.bearer()), (None, "plain".to_string()));
        let pinned_bootstrap = parse_token(&format!("K10{}::abcdef.0123456789abcdef", "c".repeat(64))).unwrap();
        assert_eq!(pinned_bootstrap.bearer(), "abcdef.0123456789abcdef");
        assert_eq!(t.bearer(), "server:s3cret");
        assert_eq!(
            Credential::parse("abcdef.0123456789abcdef"),
            Credential::Bootstrap { id: "abcdef", secret: "0123456789abcdef" }
        );
        assert_eq!(Credential::parse("Abcdef.0123456789abcdef"), Credential::Bare("Abcdef.0123456789abcdef"));
        assert_eq!(Credential::parse("node:x"), Credential::Agent("x"));
        assert!(secrets_equal(b"abc", b"abc") && !secrets_equal(b"abc", b"abd") && !secrets_equal(b"ab", b"abc"));
        assert_eq!(
            parse_token("K10abc::server:x").unwrap_err().to_string(),
            "invalid token: the CA hash must be 64 hexadecimal characters"
        );
        assert_eq!(parse_token("").unwrap_err().to_string(), "invalid token: token is empty");
        assert_eq!(
            parse_token(&format!("K10{}::nocolon", "b".repeat(64))).unwrap_err().to_string(),
            "invalid token: expected <user>:<secret> after the CA hash"
        );
    }
}
