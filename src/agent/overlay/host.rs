//! The host side of the overlay: iproute2's `ip` and `bridge`, and `nft`. Each function makes
//! the host match what it is given and removes the entries it owns that are not asked for.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::Command;

use super::plan::Peer;
use super::{DEVICE, OverlayError, ROUTE_PROTO, VNI, VXLAN_PORT};

fn run(cmd: &str, args: &[&str]) -> Result<String, OverlayError> {
    let line = format!("{cmd} {}", args.join(" "));
    let out =
        Command::new(cmd).args(args).output().map_err(|source| OverlayError::Spawn { cmd: line.clone(), source })?;
    if !out.status.success() {
        return Err(OverlayError::Failed {
            cmd: line,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn json(cmd: &str, args: &[&str]) -> Result<Vec<serde_json::Value>, OverlayError> {
    let text = run(cmd, args)?;
    Ok(serde_json::from_str(&text).unwrap_or_default())
}

/// The device as `ip -d -j link show` describes it, if it exists. (Asked of the kernel through
/// netlink, not read from /sys, which shows the namespace it was mounted in.)
fn device() -> Option<serde_json::Value> {
    json("ip", &["-d", "-j", "link", "show", DEVICE]).ok()?.into_iter().next()
}

fn device_exists() -> bool {
    device().is_some()
}

/// Creates the VXLAN device if missing (learning off: entries come from the API), gives it
/// `gateway/32` and brings it up; returns its MAC address.
pub fn ensure_vxlan(local: Ipv4Addr, gateway: Ipv4Addr) -> Result<String, OverlayError> {
    let local_s = local.to_string();
    if let Some(info) = device() {
        // A device of another configuration (an older address) is made again.
        let data = &info["linkinfo"]["info_data"];
        if data["local"].as_str() != Some(local_s.as_str()) || data["id"].as_u64() != Some(u64::from(VNI)) {
            run("ip", &["link", "delete", DEVICE])?;
        }
    }
    if !device_exists() {
        let (vni, port) = (VNI.to_string(), VXLAN_PORT.to_string());
        run(
            "ip",
            &["link", "add", DEVICE, "type", "vxlan", "id", &vni, "local", &local_s, "dstport", &port, "nolearning"],
        )?;
    }
    run("ip", &["addr", "replace", &format!("{gateway}/32"), "dev", DEVICE])?;
    run("ip", &["link", "set", DEVICE, "up"])?;
    let mac = device().and_then(|d| d["address"].as_str().map(str::to_string));
    mac.ok_or_else(|| OverlayError::Failed { cmd: format!("ip link show {DEVICE}"), stderr: "no MAC address".into() })
}

/// Deletes the VXLAN device (its routes, neighbours and forwarding entries go with it).
pub fn delete_vxlan() -> Result<(), OverlayError> {
    if device_exists() {
        run("ip", &["link", "delete", DEVICE])?;
    }
    Ok(())
}

/// Routes, neighbours and forwarding entries of the VXLAN peers.
pub fn sync_vxlan_peers(peers: &[Peer]) -> Result<(), OverlayError> {
    // Forwarding and neighbour entries first, so a new route is usable at once.
    let wanted_fdb: BTreeSet<(String, String)> =
        peers.iter().filter_map(|p| Some((p.mac.clone()?, p.public_ip.to_string()))).collect();
    for (mac, dst) in &wanted_fdb {
        run("bridge", &["fdb", "replace", mac, "dev", DEVICE, "dst", dst, "self", "permanent"])?;
    }
    for e in json("bridge", &["-j", "fdb", "show", "dev", DEVICE])? {
        let (Some(mac), Some(dst)) = (e["mac"].as_str(), e["dst"].as_str()) else { continue };
        if !wanted_fdb.contains(&(mac.to_string(), dst.to_string())) {
            run("bridge", &["fdb", "del", mac, "dev", DEVICE, "dst", dst, "self"])?;
        }
    }
    let wanted_neigh: BTreeSet<String> = peers.iter().map(|p| p.via.to_string()).collect();
    for p in peers {
        let Some(mac) = &p.mac else { continue };
        run("ip", &["neigh", "replace", &p.via.to_string(), "lladdr", mac, "dev", DEVICE, "nud", "permanent"])?;
    }
    for e in json("ip", &["-j", "neigh", "show", "dev", DEVICE])? {
        let Some(dst) = e["dst"].as_str() else { continue };
        if !wanted_neigh.contains(dst) {
            run("ip", &["neigh", "del", dst, "dev", DEVICE])?;
        }
    }
    sync_routes(peers, Some(DEVICE))
}

/// Routes to the peers' pod CIDRs (through `dev` when given, "onlink"), and no other route
/// marked as this room's.
pub fn sync_routes(peers: &[Peer], dev: Option<&str>) -> Result<(), OverlayError> {
    let proto = ROUTE_PROTO.to_string();
    for p in peers {
        let (cidr, via) = (p.cidr.to_string(), p.via.to_string());
        let mut args = vec!["route", "replace", &cidr, "via", &via, "proto", &proto];
        if let Some(dev) = dev {
            args.extend(["dev", dev, "onlink"]);
        }
        run("ip", &args)?;
    }
    let wanted: BTreeSet<String> = peers.iter().map(|p| p.cidr.to_string()).collect();
    for r in json("ip", &["-j", "route", "show", "proto", &proto])? {
        let Some(dst) = r["dst"].as_str() else { continue };
        if !wanted.contains(dst) {
            run("ip", &["route", "del", dst, "proto", &proto])?;
        }
    }
    Ok(())
}

/// Applies an nftables script in one transaction (with the service proxy's runner).
pub fn apply_nft(script: &str) -> Result<(), OverlayError> {
    crate::netproxy::apply(script).map_err(|e| OverlayError::Failed { cmd: "nft -f -".into(), stderr: e.to_string() })
}
