//! Join tokens: `K10<sha256 of the CA bundle>::<user>:<secret>`, as k3s writes them.

use std::path::Path;

use super::{PkiError, read_opt, write_file};

/// A parsed join token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// Hex SHA-256 of the CA bundle, when the token pins it.
    pub ca_hash: Option<String>,
    pub username: String,
    pub secret: String,
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
        return Ok(JoinToken { ca_hash: None, username: "server".into(), secret: s.to_string() });
    };
    let (hash, creds) =
        rest.split_once("::").ok_or_else(|| PkiError::Token("expected K10<ca-hash>::<user>:<secret>".into()))?;
    if hash.len() != 64 || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(PkiError::Token("the CA hash must be 64 hexadecimal characters".into()));
    }
    let (user, secret) =
        creds.split_once(':').ok_or_else(|| PkiError::Token("expected <user>:<secret> after the CA hash".into()))?;
    if user.is_empty() || secret.is_empty() {
        return Err(PkiError::Token("user and secret must not be empty".into()));
    }
    Ok(JoinToken { ca_hash: Some(hash.to_ascii_lowercase()), username: user.to_string(), secret: secret.to_string() })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_forms_and_rejects_garbage() {
        let full = format!("K10{}::server:s3cret", "a".repeat(64));
        let t = parse_token(&full).unwrap();
        assert_eq!(
            (t.ca_hash.as_deref(), t.username.as_str(), t.secret.as_str()),
            (Some("a".repeat(64).as_str()), "server", "s3cret")
        );
        let bare = parse_token("plain").unwrap();
        assert_eq!(bare.ca_hash, None);
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
