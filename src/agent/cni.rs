//! The node's CNI network configuration: one conflist (bridge with host-local addresses from
//! the node's podCIDR, then portmap for `hostPort`) that containerd reads when it creates a
//! sandbox. containerd adds the loopback interface itself (with the `loopback` plugin). The
//! bridge does not masquerade: traffic between pods of different nodes keeps its source, and
//! the overlay masquerades what leaves the cluster.
//!
//! The file is written atomically and only when its content changes, so containerd never reads
//! half a file.

use std::path::{Path, PathBuf};

/// The bridge every pod on this node is attached to.
pub const BRIDGE: &str = "skiff0";
/// The conflist's file name; containerd uses the first file of the directory.
pub const FILE_NAME: &str = "10-skiff.conflist";

/// The conflist for a node whose pods get addresses from `pod_cidr`, with interfaces of `mtu`
/// (`None`: the default) so that an encapsulated packet still fits the node's link.
pub fn conflist(pod_cidr: &str, ipam_dir: &Path, mtu: Option<u32>) -> String {
    let mut cfg = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "skiff",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": pod_cidr}]],
                    "routes": [{"dst": if pod_cidr.contains(':') { "::/0" } else { "0.0.0.0/0" }}],
                    "dataDir": ipam_dir,
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true},
        ],
    });
    if let Some(mtu) = mtu {
        cfg["plugins"][0]["mtu"] = serde_json::json!(mtu);
    }
    let mut text = serde_json::to_string_pretty(&cfg).unwrap_or_default();
    text.push('\n');
    text
}

/// Writes the conflist into `conf_dir` unless it already says the same; returns its path.
pub fn write(conf_dir: &Path, pod_cidr: &str, ipam_dir: &Path, mtu: Option<u32>) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(conf_dir)?;
    std::fs::create_dir_all(ipam_dir)?;
    let path = conf_dir.join(FILE_NAME);
    let text = conflist(pod_cidr, ipam_dir, mtu);
    if std::fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
        return Ok(path);
    }
    let tmp = conf_dir.join(format!(".{FILE_NAME}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflist_has_bridge_and_portmap_with_the_pod_cidr() {
        let v: serde_json::Value =
            serde_json::from_str(&conflist("10.42.3.0/24", Path::new("/d/ipam"), Some(1450))).unwrap();
        assert_eq!(v["plugins"][0]["ipMasq"], false);
        assert_eq!(v["plugins"][0]["mtu"], 1450);
        assert_eq!(v["plugins"][0]["type"], "bridge");
        assert_eq!(v["plugins"][0]["ipam"]["ranges"][0][0]["subnet"], "10.42.3.0/24");
        assert_eq!(v["plugins"][0]["ipam"]["dataDir"], "/d/ipam");
        assert_eq!(v["plugins"][1]["capabilities"]["portMappings"], true);
    }

    #[test]
    fn write_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir.path().join("net.d"), "10.42.0.0/24", &dir.path().join("ipam"), None).unwrap();
        let mtime = std::fs::metadata(&p).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        write(&dir.path().join("net.d"), "10.42.0.0/24", &dir.path().join("ipam"), None).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().modified().unwrap(), mtime);
    }
}
