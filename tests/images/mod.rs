//! Container images for tests, built from Debian's `busybox-static` (`/bin/busybox`): a root
//! filesystem with busybox and its applets, packed as a `docker save` archive or an OCI layout.

#![allow(dead_code)]

/// busybox's applets (`sh`, `sleep`, `nc`, `wget`, ...), as it lists them.
pub fn applets() -> Vec<String> {
    let out = std::process::Command::new("/bin/busybox").arg("--list").output().expect("busybox --list");
    let mut list: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "busybox" && !l.contains('/'))
        .map(str::to_string)
        .collect();
    for must in ["sh", "sleep", "echo", "cat"] {
        if !list.iter().any(|l| l == must) {
            list.push(must.to_string());
        }
    }
    list
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The platform's architecture as OCI names it.
pub fn goarch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

pub fn append_file(tar: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, bytes: &[u8]) {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(mode);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, path, bytes).expect("tar file");
}

pub fn append_symlink(tar: &mut tar::Builder<Vec<u8>>, path: &str, target: &str) {
    let mut header = tar::Header::new_gnu();
    header.set_size(0);
    header.set_mode(0o777);
    header.set_entry_type(tar::EntryType::Symlink);
    tar.append_link(&mut header, path, target).expect("tar link");
}

/// A root filesystem with busybox, a /bin link for each of its applets, and /tmp.
pub fn busybox_layer() -> Vec<u8> {
    busybox_layer_with(&[])
}

/// [`busybox_layer`] with more executables: (path, contents).
pub fn busybox_layer_with(extra: &[(&str, &[u8])]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_gnu();
    dir.set_size(0);
    dir.set_mode(0o755);
    dir.set_entry_type(tar::EntryType::Directory);
    tar.append_data(&mut dir, "bin/", std::io::empty()).expect("tar dir");
    let mut tmp = tar::Header::new_gnu();
    tmp.set_size(0);
    tmp.set_mode(0o1777);
    tmp.set_entry_type(tar::EntryType::Directory);
    tar.append_data(&mut tmp, "tmp/", std::io::empty()).expect("tar dir");
    append_file(&mut tar, "bin/busybox", 0o755, &std::fs::read("/bin/busybox").expect("busybox"));
    for tool in applets() {
        append_symlink(&mut tar, &format!("bin/{tool}"), "busybox");
    }
    for (path, bytes) in extra {
        append_file(&mut tar, path, 0o755, bytes);
    }
    tar.into_inner().expect("tar")
}

pub fn image_config(layer: &[u8]) -> Vec<u8> {
    variant_config(layer, "")
}

/// The config of a busybox image that differs from the others by a label, so it has an id of
/// its own.
fn variant_config(layer: &[u8], variant: &str) -> Vec<u8> {
    let mut config = serde_json::json!({"Cmd": ["sleep", "3600"], "Env": ["PATH=/bin"]});
    if !variant.is_empty() {
        config["Labels"] = serde_json::json!({"variant": variant});
    }
    serde_json::to_vec(&serde_json::json!({
        "architecture": goarch(),
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", sha256_hex(layer))]},
    }))
    .expect("config json")
}

/// A `docker save` archive: `<id>.json` config, `<layer id>/layer.tar` and a manifest.json.
pub fn docker_archive(tags: &[&str]) -> Vec<u8> {
    let layer = busybox_layer();
    let config = image_config(&layer);
    let config_name = format!("{}.json", sha256_hex(&config));
    let layer_dir = sha256_hex(b"layer id");
    let mut tar = tar::Builder::new(Vec::new());
    append_file(&mut tar, &config_name, 0o644, &config);
    append_file(&mut tar, &format!("{layer_dir}/VERSION"), 0o644, b"1.0");
    append_file(&mut tar, &format!("{layer_dir}/json"), 0o644, b"{}");
    append_file(&mut tar, &format!("{layer_dir}/layer.tar"), 0o644, &layer);
    let manifest =
        serde_json::json!([{"Config": config_name, "RepoTags": tags, "Layers": [format!("{layer_dir}/layer.tar")]}]);
    append_file(&mut tar, "manifest.json", 0o644, &serde_json::to_vec(&manifest).expect("json"));
    tar.into_inner().expect("tar")
}

/// An OCI image layout whose layer is gzip-compressed.
pub fn oci_archive(name: &str) -> Vec<u8> {
    oci_archive_variant(name, "")
}

/// [`oci_archive`] with a config of its own (see [`variant_config`]).
pub fn oci_archive_variant(name: &str, variant: &str) -> Vec<u8> {
    oci_archive_of(name, variant, busybox_layer())
}

/// An OCI image layout of busybox and more executables (see [`busybox_layer_with`]).
#[allow(dead_code)]
pub fn oci_archive_with(name: &str, extra: &[(&str, &[u8])]) -> Vec<u8> {
    oci_archive_of(name, "", busybox_layer_with(extra))
}

fn oci_archive_of(name: &str, variant: &str, layer: Vec<u8>) -> Vec<u8> {
    use std::io::Write;
    let config = variant_config(&layer, variant);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&layer).expect("gzip");
    let gz_layer = gz.finish().expect("gzip");
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{}", sha256_hex(&config)), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": format!("sha256:{}", sha256_hex(&gz_layer)), "size": gz_layer.len()}],
    }))
    .expect("manifest json");
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{}", sha256_hex(&manifest)),
            "size": manifest.len(),
            "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": "latest"},
        }],
    });
    let mut tar = tar::Builder::new(Vec::new());
    append_file(&mut tar, "oci-layout", 0o644, br#"{"imageLayoutVersion":"1.0.0"}"#);
    for blob in [&config, &gz_layer, &manifest] {
        append_file(&mut tar, &format!("blobs/sha256/{}", sha256_hex(blob)), 0o644, blob);
    }
    append_file(&mut tar, "index.json", 0o644, &serde_json::to_vec(&index).expect("json"));
    tar.into_inner().expect("tar")
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).expect("gzip");
    gz.finish().expect("gzip")
}

pub fn zstd(bytes: &[u8]) -> Vec<u8> {
    ruzstd::encoding::compress_to_vec(bytes, ruzstd::encoding::CompressionLevel::Fastest)
}
