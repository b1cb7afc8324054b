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

    /// Verifies a token's algorithm and signature; returns its claims, unchecked otherwise
    /// (time window, issuer and audience are the caller's to judge).
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
        serde_json::from_slice(&B64.decode(p).map_err(|_| jwt("bad payload encoding"))?).map_err(|_| jwt("bad payload"))
    }

    /// The public key as a JSON Web Key (RFC 7517), for the OIDC discovery document's key set.
    pub fn jwk(&self) -> Value {
        // An uncompressed P-256 point: 0x04 || X (32 bytes) || Y (32 bytes).
        let point = self.pair.public_key().as_ref();
        json!({
            "use": "sig",
            "kty": "EC",
            "kid": self.kid,
            "crv": "P-256",
            "alg": "ES256",
            "x": B64.encode(&point[1..33]),
            "y": B64.encode(&point[33..65]),
        })
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
    fn sign_verify_tamper() {
        let d = tempfile::tempdir().unwrap();
        let k = ServiceAccountKey::load_or_create(&d.path().join("sa.key"), &d.path().join("sa.pub")).unwrap();
        let t = k.sign(&json!({"sub": "system:serviceaccount:default:x"})).unwrap();
        assert_eq!(k.verify(&t).unwrap()["sub"], "system:serviceaccount:default:x");
        let mut bad = t.clone();
        bad.insert(t.len() / 2, 'A');
        assert!(k.verify(&bad).is_err());
        // `alg: none` with the signature stripped is refused whatever the payload says.
        let (input, _) = t.rsplit_once('.').unwrap();
        let payload = input.split('.').nth(1).unwrap();
        let none = format!("{}.{payload}.", B64.encode(r#"{"alg":"none"}"#));
        assert_eq!(k.verify(&none).unwrap_err().to_string(), "service account token: unsupported algorithm");
        let again = ServiceAccountKey::load_or_create(&d.path().join("sa.key"), &d.path().join("sa.pub")).unwrap();
        assert!(again.verify(&t).is_ok());
    }

    #[test]
    fn jwk_is_the_signing_key() {
        let d = tempfile::tempdir().unwrap();
        let k = ServiceAccountKey::load_or_create(&d.path().join("sa.key"), &d.path().join("sa.pub")).unwrap();
        let jwk = k.jwk();
        let x = B64.decode(jwk["x"].as_str().unwrap()).unwrap();
        let y = B64.decode(jwk["y"].as_str().unwrap()).unwrap();
        let point = [&[4u8][..], &x, &y].concat();
        let t = k.sign(&json!({"sub": "a"})).unwrap();
        let (input, sig) = t.rsplit_once('.').unwrap();
        let public = signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point);
        public.verify(input.as_bytes(), &B64.decode(sig).unwrap()).unwrap();
        assert_eq!(
            (&jwk["kty"], &jwk["crv"], &jwk["alg"], &jwk["use"]),
            (&json!("EC"), &json!("P-256"), &json!("ES256"), &json!("sig"))
        );
    }
}
