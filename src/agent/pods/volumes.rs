//! A pod's volumes on the host: emptyDir (a directory, or tmpfs for `medium: Memory`),
//! hostPath (with its type check), configMap, secret, downwardAPI and projected volumes
//! (written as upstream's atomic writer does, so updates appear in running containers at once),
//! and PVCs bound to hostPath or local PersistentVolumes.
//!
//! Everything lives under `<agent>/pods/<uid>/volumes/<name>`; [`cleanup`] removes it when the
//! pod is gone. Errors are the messages upstream's kubelet puts in its FailedMount events.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, KeyToPath, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Volume,
};
use kube::{Api, Client};

use super::env::field_value;

/// Where each volume of the pod was prepared, by volume name.
pub type Prepared = BTreeMap<String, PathBuf>;

/// Service-account tokens the agent holds for its pods' projected volumes, so a resync writes
/// the same token again until it is due for renewal, as upstream's kubelet token manager does:
/// after 80% of its lifetime or 24 hours, whichever comes first.
#[derive(Default)]
pub struct TokenCache {
    tokens: std::sync::Mutex<BTreeMap<TokenKey, Held>>,
}

/// Pod uid, account, audience, requested lifetime.
type TokenKey = (String, String, String, i64);

struct Held {
    token: String,
    renew_at: std::time::Instant,
    expires_at: std::time::Instant,
}

impl TokenCache {
    fn get(&self, key: &TokenKey) -> Option<String> {
        let now = std::time::Instant::now();
        let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens.get(key).filter(|h| h.renew_at > now).map(|h| h.token.clone())
    }

    fn put(&self, key: TokenKey, token: String, lifetime: std::time::Duration) {
        let now = std::time::Instant::now();
        let renew_in = (lifetime * 4 / 5).min(std::time::Duration::from_secs(24 * 3600));
        let held = Held { token, renew_at: now + renew_in, expires_at: now + lifetime };
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        // Expired tokens go, so the cache never outgrows the pods of the last hours.
        tokens.retain(|_, h| h.expires_at > now);
        tokens.insert(key, held);
    }
}

/// Prepares (or refreshes) every volume of `pod` under `pod_dir`.
pub async fn prepare(client: &Client, tokens: &TokenCache, pod: &Pod, pod_dir: &Path) -> Result<Prepared, String> {
    let mut out = Prepared::new();
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    for v in pod.spec.as_ref().and_then(|s| s.volumes.as_ref()).into_iter().flatten() {
        let path = prepare_one(client, tokens, pod, ns, v, &pod_dir.join("volumes").join(&v.name))
            .await
            .map_err(|e| format!("MountVolume.SetUp failed for volume \"{}\" : {e}", v.name))?;
        out.insert(v.name.clone(), path);
    }
    Ok(out)
}

async fn prepare_one(
    client: &Client,
    tokens: &TokenCache,
    pod: &Pod,
    ns: &str,
    v: &Volume,
    dir: &Path,
) -> Result<PathBuf, String> {
    if let Some(ed) = &v.empty_dir {
        create_dir(dir)?;
        if ed.medium.as_deref() == Some("Memory") {
            mount_tmpfs(dir, ed.size_limit.as_ref().map(|q| q.0.as_str()))?;
        }
        // Containers running as any user may write an emptyDir, as upstream.
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777));
        return Ok(dir.to_path_buf());
    }
    if let Some(hp) = &v.host_path {
        let p = PathBuf::from(&hp.path);
        check_host_path(&p, hp.type_.as_deref().unwrap_or(""))?;
        return Ok(p);
    }
    if let Some(cm) = &v.config_map {
        let files = config_map_files(client, ns, &cm.name, cm.items.as_deref(), cm.optional.unwrap_or(false)).await?;
        atomic_write(dir, files, cm.default_mode.unwrap_or(0o644))?;
        return Ok(dir.to_path_buf());
    }
    if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let files = secret_files(client, ns, &name, s.items.as_deref(), s.optional.unwrap_or(false)).await?;
        atomic_write(dir, files, s.default_mode.unwrap_or(0o644))?;
        return Ok(dir.to_path_buf());
    }
    if let Some(d) = &v.downward_api {
        let files = downward_files(pod, d.items.as_deref().unwrap_or(&[]))?;
        atomic_write(dir, files, d.default_mode.unwrap_or(0o644))?;
        return Ok(dir.to_path_buf());
    }
    if let Some(p) = &v.projected {
        let mut files = Vec::new();
        for src in p.sources.iter().flatten() {
            if let Some(cm) = &src.config_map {
                files.extend(
                    config_map_files(client, ns, &cm.name, cm.items.as_deref(), cm.optional.unwrap_or(false)).await?,
                );
            }
            if let Some(s) = &src.secret {
                files.extend(secret_files(client, ns, &s.name, s.items.as_deref(), s.optional.unwrap_or(false)).await?);
            }
            if let Some(d) = &src.downward_api {
                files.extend(downward_files(pod, d.items.as_deref().unwrap_or(&[]))?);
            }
            if let Some(t) = &src.service_account_token {
                let sa =
                    pod.spec.as_ref().and_then(|s| s.service_account_name.clone()).unwrap_or_else(|| "default".into());
                let token = service_account_token(client, tokens, pod, ns, &sa, t).await?;
                files.push((t.path.clone(), token.into_bytes(), None));
            }
        }
        atomic_write(dir, files, p.default_mode.unwrap_or(0o644))?;
        return Ok(dir.to_path_buf());
    }
    if let Some(claim) = &v.persistent_volume_claim {
        return claim_path(client, ns, &claim.claim_name).await;
    }
    Err("volume type is not supported by this node".into())
}

fn create_dir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

fn is_mount_point(dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
    let want = dir.to_string_lossy();
    text.lines().any(|l| l.split(' ').nth(4) == Some(want.as_ref()))
}

fn mount_tmpfs(dir: &Path, size: Option<&str>) -> Result<(), String> {
    if is_mount_point(dir) {
        return Ok(());
    }
    let mut data = String::from("mode=0777");
    if let Some(s) = size
        && let Ok(milli) = crate::api::quantity::parse_milli(s)
    {
        data.push_str(&format!(",size={}", milli / 1000));
    }
    nix::mount::mount(Some("tmpfs"), dir, Some("tmpfs"), nix::mount::MsFlags::empty(), Some(data.as_str()))
        .map_err(|e| format!("cannot mount tmpfs on {}: {e}", dir.display()))
}

/// Checks a hostPath against its `type`, creating it for the `...OrCreate` types.
pub fn check_host_path(p: &Path, type_: &str) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    let meta = std::fs::metadata(p);
    let fail = |what: &str| Err(format!("hostPath type check failed: {} is not {what}", p.display()));
    match type_ {
        "" => Ok(()),
        "DirectoryOrCreate" => {
            if meta.is_err() {
                std::fs::create_dir_all(p).map_err(|e| format!("cannot create {}: {e}", p.display()))?;
                let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755));
                return Ok(());
            }
            if meta.is_ok_and(|m| m.is_dir()) { Ok(()) } else { fail("a directory") }
        }
        "Directory" => {
            if meta.is_ok_and(|m| m.is_dir()) {
                Ok(())
            } else {
                fail("a directory")
            }
        }
        "FileOrCreate" => {
            if meta.is_err() {
                if let Some(parent) = p.parent() {
                    let _ = std::fs::create_dir_all(parent);
                }
                std::fs::File::create(p).map_err(|e| format!("cannot create {}: {e}", p.display()))?;
                return Ok(());
            }
            if meta.is_ok_and(|m| m.is_file()) { Ok(()) } else { fail("a file") }
        }
        "File" => {
            if meta.is_ok_and(|m| m.is_file()) {
                Ok(())
            } else {
                fail("a file")
            }
        }
        "Socket" => {
            if meta.is_ok_and(|m| m.file_type().is_socket()) {
                Ok(())
            } else {
                fail("a socket file")
            }
        }
        "CharDevice" => {
            if meta.is_ok_and(|m| m.file_type().is_char_device()) {
                Ok(())
            } else {
                fail("a character device")
            }
        }
        "BlockDevice" => {
            if meta.is_ok_and(|m| m.file_type().is_block_device()) {
                Ok(())
            } else {
                fail("a block device")
            }
        }
        other => Err(format!("hostPath type {other} is not known")),
    }
}

type File = (String, Vec<u8>, Option<i32>);

fn select(
    data: BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    what: &str,
    optional: bool,
) -> Result<Vec<File>, String> {
    match items {
        None => Ok(data.into_iter().map(|(k, v)| (k, v, None)).collect()),
        Some(items) => {
            let mut out = Vec::new();
            for item in items {
                match data.get(&item.key) {
                    Some(v) => out.push((item.path.clone(), v.clone(), item.mode)),
                    None if optional => {}
                    None => return Err(format!("configuration of {what} has no key \"{}\"", item.key)),
                }
            }
            Ok(out)
        }
    }
}

async fn config_map_files(
    client: &Client,
    ns: &str,
    name: &str,
    items: Option<&[KeyToPath]>,
    optional: bool,
) -> Result<Vec<File>, String> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    match api.get_opt(name).await.map_err(|e| e.to_string())? {
        Some(cm) => {
            let mut data: BTreeMap<String, Vec<u8>> =
                cm.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
            data.extend(cm.binary_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)));
            select(data, items, &format!("configmap \"{name}\""), optional)
        }
        None if optional => Ok(Vec::new()),
        None => Err(format!("configmap \"{name}\" not found")),
    }
}

async fn secret_files(
    client: &Client,
    ns: &str,
    name: &str,
    items: Option<&[KeyToPath]>,
    optional: bool,
) -> Result<Vec<File>, String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    match api.get_opt(name).await.map_err(|e| e.to_string())? {
        Some(s) => {
            let mut data: BTreeMap<String, Vec<u8>> =
                s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
            data.extend(s.string_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())));
            select(data, items, &format!("secret \"{name}\""), optional)
        }
        None if optional => Ok(Vec::new()),
        None => Err(format!("secret \"{name}\" not found")),
    }
}

fn downward_files(pod: &Pod, items: &[DownwardAPIVolumeFile]) -> Result<Vec<File>, String> {
    let mut out = Vec::new();
    for item in items {
        let value = if let Some(f) = &item.field_ref {
            match f.field_path.as_str() {
                // Whole maps are written one `key="value"` per line, as upstream.
                "metadata.labels" | "metadata.annotations" => {
                    let map = if f.field_path == "metadata.labels" {
                        &pod.metadata.labels
                    } else {
                        &pod.metadata.annotations
                    };
                    map.iter().flatten().map(|(k, v)| format!("{k}={v:?}")).collect::<Vec<_>>().join("\n")
                }
                path => field_value(pod, path)?,
            }
        } else if let Some(r) = &item.resource_field_ref {
            super::env::resource_value(pod, r)?
        } else {
            continue;
        };
        out.push((item.path.clone(), value.into_bytes(), item.mode));
    }
    Ok(out)
}

async fn service_account_token(
    client: &Client,
    tokens: &TokenCache,
    pod: &Pod,
    ns: &str,
    sa: &str,
    t: &k8s_openapi::api::core::v1::ServiceAccountTokenProjection,
) -> Result<String, String> {
    use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::ServiceAccount;
    let seconds = t.expiration_seconds.unwrap_or(3600);
    let audience = t.audience.clone().unwrap_or_default();
    let key = (pod.metadata.uid.clone().unwrap_or_default(), sa.to_string(), audience.clone(), seconds);
    if let Some(token) = tokens.get(&key) {
        return Ok(token);
    }
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let req = TokenRequest {
        spec: TokenRequestSpec {
            audiences: if audience.is_empty() { Vec::new() } else { vec![audience] },
            expiration_seconds: Some(seconds),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..Default::default()
    };
    let resp = api.create_token_request(sa, &Default::default(), &req).await.map_err(|e| e.to_string())?;
    let status = resp.status.ok_or("the token request returned no token")?;
    // The lifetime the server granted, which may be shorter than the one asked for.
    let granted = (status.expiration_timestamp.0 - chrono::Utc::now()).to_std().unwrap_or_default();
    tokens.put(key, status.token.clone(), granted);
    Ok(status.token)
}

async fn claim_path(client: &Client, ns: &str, claim: &str) -> Result<PathBuf, String> {
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let pvc = pvcs
        .get_opt(claim)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("persistentvolumeclaim \"{claim}\" not found"))?;
    let volume = pvc
        .spec
        .and_then(|s| s.volume_name)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| format!("persistentvolumeclaim \"{claim}\" is not bound"))?;
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let pv = pvs.get(&volume).await.map_err(|e| e.to_string())?;
    let spec = pv.spec.unwrap_or_default();
    if let Some(hp) = spec.host_path {
        check_host_path(Path::new(&hp.path), hp.type_.as_deref().unwrap_or("DirectoryOrCreate"))?;
        return Ok(PathBuf::from(hp.path));
    }
    if let Some(local) = spec.local {
        return Ok(PathBuf::from(local.path));
    }
    Err(format!("persistentvolume \"{volume}\" is neither hostPath nor local, which this node cannot mount"))
}

/// Writes `files` into `dir` the way upstream's atomic writer does: the payload goes into a new
/// timestamped directory, `..data` is switched to it with one rename, and each top-level entry
/// is a symlink through `..data`. A container watching the volume sees the old or the new
/// files, never a mix. Nothing is rewritten when the payload is unchanged.
pub fn atomic_write(dir: &Path, files: Vec<File>, default_mode: i32) -> Result<(), String> {
    let io = |what: &str, p: &Path, e: std::io::Error| format!("cannot {what} {}: {e}", p.display());
    std::fs::create_dir_all(dir).map_err(|e| io("create", dir, e))?;
    for (path, _, _) in &files {
        if path.starts_with('/') || path.split('/').any(|c| c == ".." || c.is_empty()) || path.starts_with("..") {
            return Err(format!("invalid path \"{path}\" in a volume"));
        }
    }
    let data_link = dir.join("..data");
    if let Ok(current) = std::fs::read_link(&data_link) {
        let current = dir.join(current);
        let same =
            files.iter().all(|(p, bytes, _)| std::fs::read(current.join(p)).ok().as_deref() == Some(bytes.as_slice()))
                && count_files(&current) == files.len();
        if same {
            return Ok(());
        }
    }
    let stamp = format!("..{}", chrono::Utc::now().format("%Y_%m_%d_%H_%M_%S.%f"));
    let payload = dir.join(&stamp);
    std::fs::create_dir_all(&payload).map_err(|e| io("create", &payload, e))?;
    let _ = std::fs::set_permissions(&payload, std::fs::Permissions::from_mode(0o755));
    for (path, bytes, mode) in &files {
        let target = payload.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io("create", parent, e))?;
        }
        std::fs::write(&target, bytes).map_err(|e| io("write", &target, e))?;
        let mode = mode.unwrap_or(default_mode) as u32 & 0o7777;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
            .map_err(|e| io("chmod", &target, e))?;
    }
    let tmp_link = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp_link);
    std::os::unix::fs::symlink(&stamp, &tmp_link).map_err(|e| io("link", &tmp_link, e))?;
    let old = std::fs::read_link(&data_link).ok();
    std::fs::rename(&tmp_link, &data_link).map_err(|e| io("rename", &data_link, e))?;
    // Top-level names point through ..data; names no longer in the payload go.
    let tops: std::collections::BTreeSet<String> =
        files.iter().filter_map(|(p, _, _)| p.split('/').next().map(str::to_string)).collect();
    for top in &tops {
        let link = dir.join(top);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{top}"), &link).map_err(|e| io("link", &link, e))?;
        }
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with("..") && !tops.contains(&name) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    if let Some(old) = old {
        let old = dir.join(old);
        if old != payload {
            let _ = std::fs::remove_dir_all(old);
        }
    }
    Ok(())
}

fn count_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries.flatten().map(|e| if e.path().is_dir() { count_files(&e.path()) } else { 1 }).sum()
}

/// Unmounts what [`prepare`] mounted and removes the pod's directory.
pub fn cleanup(pod_dir: &Path) {
    let volumes = pod_dir.join("volumes");
    if let Ok(entries) = std::fs::read_dir(&volumes) {
        for e in entries.flatten() {
            if is_mount_point(&e.path()) {
                let _ = nix::mount::umount2(&e.path(), nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
    let _ = std::fs::remove_dir_all(pod_dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_token_is_renewed_after_four_fifths_of_its_lifetime() {
        let cache = TokenCache::default();
        let key: TokenKey = ("uid".into(), "default".into(), "api".into(), 3600);
        cache.put(key.clone(), "t1".into(), std::time::Duration::from_millis(500));
        assert_eq!(cache.get(&key).as_deref(), Some("t1"), "fresh: the same token is written again");
        std::thread::sleep(std::time::Duration::from_millis(420));
        assert_eq!(cache.get(&key), None, "past 80%: due for a new one");
        // A new token replaces it; expired ones are dropped when the next is stored.
        cache.put(key.clone(), "t2".into(), std::time::Duration::from_secs(3600));
        assert_eq!(cache.get(&key).as_deref(), Some("t2"));
        let other: TokenKey = ("uid2".into(), "default".into(), "api".into(), 3600);
        cache.put(other, "t3".into(), std::time::Duration::from_millis(1));
        std::thread::sleep(std::time::Duration::from_millis(5));
        cache.put(key.clone(), "t4".into(), std::time::Duration::from_secs(3600));
        assert_eq!(cache.tokens.lock().unwrap().len(), 1);
    }

    #[test]
    fn atomic_writes_swap_the_data_link_and_drop_removed_keys() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("cfg");
        atomic_write(
            &dir,
            vec![("a".into(), b"1".to_vec(), None), ("sub/b".into(), b"2".to_vec(), Some(0o600))],
            0o644,
        )
        .unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "1");
        assert_eq!(std::fs::read_to_string(dir.join("sub/b")).unwrap(), "2");
        let first = std::fs::read_link(dir.join("..data")).unwrap();
        atomic_write(
            &dir,
            vec![("a".into(), b"1".to_vec(), None), ("sub/b".into(), b"2".to_vec(), Some(0o600))],
            0o644,
        )
        .unwrap();
        assert_eq!(std::fs::read_link(dir.join("..data")).unwrap(), first, "unchanged payload is not rewritten");
        atomic_write(&dir, vec![("a".into(), b"3".to_vec(), None)], 0o644).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "3");
        assert!(!dir.join("sub").exists(), "removed keys disappear");
        assert!(!dir.join(&first).exists(), "the old payload is removed");
        assert_eq!(
            atomic_write(&dir, vec![("../x".into(), vec![], None)], 0o644).unwrap_err(),
            "invalid path \"../x\" in a volume"
        );
    }

    #[test]
    fn host_path_types() {
        let d = tempfile::tempdir().unwrap();
        let missing = d.path().join("missing");
        assert_eq!(
            check_host_path(&missing, "Directory").unwrap_err(),
            format!("hostPath type check failed: {} is not a directory", missing.display())
        );
        check_host_path(&missing, "DirectoryOrCreate").unwrap();
        assert!(missing.is_dir());
        assert!(check_host_path(&missing, "File").is_err());
        check_host_path(&d.path().join("f"), "FileOrCreate").unwrap();
        check_host_path(&d.path().join("anything"), "").unwrap();
    }
}
