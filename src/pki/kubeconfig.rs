//! Writing kubeconfig files for the admin (and later nodes).

use std::path::Path;

use base64::Engine;

use super::{PkiError, write_file};

/// Writes a kubeconfig with embedded credentials, atomically, with `mode`.
pub fn write_kubeconfig(
    path: &Path,
    mode: u32,
    server_url: &str,
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
    name: &str,
) -> Result<(), PkiError> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server_url, "certificate-authority-data": b64(ca_pem)}}],
        "users": [{"name": name, "user": {"client-certificate-data": b64(cert_pem), "client-key-data": b64(key_pem)}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
        "preferences": {},
    });
    let text = serde_yaml::to_string(&doc).map_err(|e| PkiError::Tls(e.to_string()))?;
    write_file(path, text.as_bytes(), mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_with_mode() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/k.yaml");
        write_kubeconfig(&p, 0o600, "https://127.0.0.1:6443", "CA", "C", "K", "default").unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        let v: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        assert_eq!(v["clusters"][0]["cluster"]["server"].as_str(), Some("https://127.0.0.1:6443"));
        assert_eq!(v["current-context"].as_str(), Some("default"));
    }
}
