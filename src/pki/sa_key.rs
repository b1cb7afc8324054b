//! The service-account signing key (ECDSA P-256) and compact ES256 JWTs signed with it.

use std::path::Path;

use base64::Engine;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _};
use serde_json::{Value, json};

use super::{PkiError, read_opt, write_file};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The key that signs service-account tokens.
pub struct ServiceAccountKey {
    pkcs8_pem: String,
    pair: EcdsaKeyPair,
    kid: String,
}

impl Clone for ServiceAccountKey {
    fn clone(&self) -> Self {
        Self::from_pem(&self.pkcs8_pem).expect("a key that parsed once parses again")
    }
}

fn jwt(msg: &str) -> PkiError {
    PkiError::Jwt(msg.to_string())
}

impl ServiceAccountKey {
    fn from_pem(pem: &str) -> Result<Self, PkiError> {
        let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| jwt(&e.to_string()))?;
        let rng = ring::rand::SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &p.contents, &rng)
            .map_err(|e| jwt(&e.to_string()))?;
        let kid = B64.encode(ring::digest::digest(&ring::digest::SHA256, pair.public_key().as_ref()));
        Ok(ServiceAccountKey { pkcs8_pem: pem.to_string(), pair, kid })
    }

    /// Loads the key from `key_path`, or creates it (and its public half at `pub_path`).
    pub fn load_or_create(key_path: &Path, pub_path: &Path) -> Result<Self, PkiError> {
        let pem = match read_opt(key_path)? {
            Some(p) => p,
            None => {
                let kp = rcgen::KeyPair::generate()?;
                let pem = kp.serialize_pem();
                write_file(key_path, pem.as_bytes(), 0o600)?;
                write_file(pub_path, kp.public_key_pem().as_bytes(), 0o644)?;
                pem
            }
        };
        Self::from_pem(&pem)
            .map_err(|e| PkiError::Parse { path: key_path.display().to_string(), message: e.to_string() })
    }

    /// Signs claims as a compact JWS (ES256).
    pub fn sign(&self, claims: &Value) -> Result<String, PkiError> {
        let header = json!({"alg": "ES256", "kid": self.kid});
        let input = format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()));
        let sig =
            self.pair.sign(&ring::rand::SystemRandom::new(), input.as_bytes()).map_err(|_| jwt("signing failed"))?;
        Ok(format!("{input}.{}", B64.encode(sig.as_ref())))
    }

    /// Verifies a token's signature and time claims; returns its claims.
    pub fn verify(&self, token: &str) -> Result<Value, PkiError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(jwt("not a compact JWS"));
        };
        let header: Value = serde_json::from_slice(&B64.decode(h).map_err(|_| jwt("bad header encoding"))?)
            .map_err(|_| jwt("bad header"))?;
        if header.get("alg").and_then(|a| a.as_str()) != Some("ES256") {
            return Err(jwt("unsupported algorithm"));
        }
        let sig = B64.decode(s).map_err(|_| jwt("bad signature encoding"))?;
        let public =
            signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, self.pair.public_key().as_ref());
        public.verify(format!("{h}.{p}").as_bytes(), &sig).map_err(|_| jwt("invalid signature"))?;
        let claims: Value = serde_json::from_slice(&B64.decode(p).map_err(|_| jwt("bad payload encoding"))?)
            .map_err(|_| jwt("bad payload"))?;
        let now = chrono::Utc::now().timestamp();
        if let Some(exp) = claims.get("exp").and_then(|e| e.as_i64())
            && now >= exp
        {
            return Err(jwt("token has expired"));
        }
        if let Some(nbf) = claims.get("nbf").and_then(|e| e.as_i64())
            && now < nbf
        {
            return Err(jwt("token is not valid yet"));
        }
        Ok(claims)
    }

    /// The public key as PEM.
    pub fn public_key_pem(&self) -> String {
        rcgen::KeyPair::from_pem(&self.pkcs8_pem).map(|k| k.public_key_pem()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_tamper_expire() {
        let d = tempfile::tempdir().unwrap();
        let k = ServiceAccountKey::load_or_create(&d.path().join("sa.key"), &d.path().join("sa.pub")).unwrap();
        let now = chrono::Utc::now().timestamp();
        let t = k.sign(&json!({"sub": "system:serviceaccount:default:x", "exp": now + 60})).unwrap();
        assert_eq!(k.verify(&t).unwrap()["sub"], "system:serviceaccount:default:x");
        let mut bad = t.clone();
        bad.insert(t.len() / 2, 'A');
        assert!(k.verify(&bad).is_err());
        let old = k.sign(&json!({"sub": "a", "exp": now - 1})).unwrap();
        assert_eq!(k.verify(&old).unwrap_err().to_string(), "service account token: token has expired");
        let again = ServiceAccountKey::load_or_create(&d.path().join("sa.key"), &d.path().join("sa.pub")).unwrap();
        assert!(again.verify(&t).is_ok());
    }
}
