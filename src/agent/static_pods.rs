//! Static pods: pod manifests in `<data-dir>/agent/pod-manifests/` (YAML or JSON, one pod per
//! file, `.yaml`, `.yml` or `.json`) that the node runs without anyone asking through the API.
//!
//! Each becomes a mirror pod in the API, named `<name>-<node>` as upstream names them, bound to
//! this node, owned by the Node, and annotated with the manifest's hash
//! (`kubernetes.io/config.mirror`, `kubernetes.io/config.hash`) and `kubernetes.io/config.source:
//! file`; the pod workers then run it like any other pod. The folder is read every few seconds:
//! a changed file replaces its pod, a removed file deletes it, and a mirror pod deleted through
//! the API is created again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

/// Annotation carrying the manifest's hash on a mirror pod.
pub const MIRROR: &str = "kubernetes.io/config.mirror";
const HASH: &str = "kubernetes.io/config.hash";
const SOURCE: &str = "kubernetes.io/config.source";
/// How often the folder is read.
const POLL: Duration = Duration::from_secs(5);

/// A manifest turned into the mirror pod the API should hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub file: PathBuf,
    pub pod: Pod,
    pub hash: String,
}

/// Parses one manifest file into its mirror pod for `node`.
pub fn parse(file: &Path, text: &str, node: &str) -> Result<Manifest, String> {
    let mut pod: Pod =
        serde_yaml::from_str(text).map_err(|e| format!("{}: not a Pod manifest: {e}", file.display()))?;
    let name = pod
        .metadata
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| format!("{}: the pod has no name", file.display()))?;
    let hash = {
        let d = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
        d.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    pod.metadata.name = Some(format!("{name}-{node}"));
    if pod.metadata.namespace.as_deref().is_none_or(str::is_empty) {
        pod.metadata.namespace = Some("default".into());
    }
    let ann = pod.metadata.annotations.get_or_insert_with(BTreeMap::new);
    ann.insert(MIRROR.into(), hash.clone());
    ann.insert(HASH.into(), hash.clone());
    ann.insert(SOURCE.into(), "file".into());
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.node_name = Some(node.to_string());
    pod.status = None;
    Ok(Manifest { file: file.to_path_buf(), pod, hash })
}

/// Reads every manifest in `dir`; bad files are logged and skipped.
pub fn read_dir(dir: &Path, node: &str) -> Vec<Manifest> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out = Vec::new();
    let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    files.sort();
    for file in files {
        let ext = file.extension().and_then(|e| e.to_str()).unwrap_or("");
        if !matches!(ext, "yaml" | "yml" | "json") || !file.is_file() {
            continue;
        }
        match std::fs::read_to_string(&file).map_err(|e| e.to_string()).and_then(|t| parse(&file, &t, node)) {
            Ok(m) => out.push(m),
            Err(e) => tracing::warn!(error = %e, "static pod manifest skipped"),
        }
    }
    out
}

/// Keeps the mirror pods in line with the folder until `cancel` fires.
pub async fn run(client: Client, dir: PathBuf, node: String, cancel: CancellationToken) {
    let nodes: Api<Node> = Api::all(client.clone());
    loop {
        let wanted = tokio::task::spawn_blocking({
            let dir = dir.clone();
            let node = node.clone();
            move || read_dir(&dir, &node)
        })
        .await
        .unwrap_or_default();
        if let Ok(Some(n)) = nodes.get_opt(&node).await {
            sync(&client, &n, wanted).await;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

async fn sync(client: &Client, node: &Node, wanted: Vec<Manifest>) {
    let node_name = node.metadata.name.clone().unwrap_or_default();
    let all: Api<Pod> = Api::all(client.clone());
    let lp = ListParams::default().fields(&format!("spec.nodeName={node_name}"));
    let Ok(existing) = all.list(&lp).await else { return };
    let mirrors: Vec<&Pod> = existing
        .items
        .iter()
        .filter(|p| p.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(MIRROR)))
        .collect();
    let owner = OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: node_name.clone(),
        uid: node.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        ..Default::default()
    };
    for m in &wanted {
        let ns = m.pod.metadata.namespace.clone().unwrap_or_default();
        let name = m.pod.metadata.name.clone().unwrap_or_default();
        let current = mirrors.iter().find(|p| {
            p.metadata.namespace.as_deref() == Some(ns.as_str()) && p.metadata.name.as_deref() == Some(name.as_str())
        });
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        match current {
            Some(p) if p.metadata.annotations.as_ref().and_then(|a| a.get(MIRROR)) == Some(&m.hash) => continue,
            Some(_) => {
                // The manifest changed: the old pod goes first (the next pass creates the new one).
                let _ = api.delete(&name, &DeleteParams::default()).await;
                continue;
            }
            None => {}
        }
        let mut pod = m.pod.clone();
        pod.metadata.owner_references = Some(vec![owner.clone()]);
        match api.create(&PostParams::default(), &pod).await {
            Ok(_) => tracing::info!(pod = %format!("{ns}/{name}"), file = %m.file.display(), "mirror pod created"),
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "cannot create the mirror pod"),
        }
    }
    for p in mirrors {
        let keep = wanted
            .iter()
            .any(|m| m.pod.metadata.namespace == p.metadata.namespace && m.pod.metadata.name == p.metadata.name);
        if !keep && p.metadata.deletion_timestamp.is_none() {
            let api: Api<Pod> = Api::namespaced(client.clone(), p.metadata.namespace.as_deref().unwrap_or("default"));
            let _ = api.delete(p.metadata.name.as_deref().unwrap_or(""), &DeleteParams::default()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_become_mirror_pods_of_the_node() {
        let m = parse(
            Path::new("/m/web.yaml"),
            "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec: {containers: [{name: c, image: busybox}]}\n",
            "pi",
        )
        .unwrap();
        assert_eq!(m.pod.metadata.name.as_deref(), Some("web-pi"));
        assert_eq!(m.pod.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(m.pod.spec.as_ref().unwrap().node_name.as_deref(), Some("pi"));
        let ann = m.pod.metadata.annotations.as_ref().unwrap();
        assert_eq!(ann[MIRROR], m.hash);
        assert_eq!(ann[SOURCE], "file");
        let e = parse(Path::new("/m/x.yaml"), "metadata: {}\n", "pi").unwrap_err();
        assert_eq!(e, "/m/x.yaml: the pod has no name");
    }
}
