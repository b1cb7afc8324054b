//! Image archives into containerd, for boxes without a registry.
//!
//! [`import_archive`] reads an OCI image layout or a `docker save` archive, plain or compressed
//! with gzip or zstd (told apart by their first bytes, not the file name), streams every blob
//! into containerd's content store and creates one image record per name in the `k8s.io`
//! namespace, where the CRI plugin sees it. A Docker archive's manifest is rewritten as an OCI
//! manifest on the way.
//!
//! Layers are not unpacked here: containerd 1.6 has no transfer service, and its CRI plugin
//! unpacks an image into the snapshotter the first time a container needs it. Everything
//! written is held by a lease until the image records point at it, and manifests carry the
//! `containerd.io/gc.ref.content.*` labels that keep their config and layers alive after.
//!
//! The archive is read once, on a blocking thread, in chunks; nothing is extracted to disk.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use super::containerd_api::services::content::v1 as content;
use super::containerd_api::services::images::v1 as images;
use super::containerd_api::services::leases::v1 as leases;
use super::containerd_api::types::Descriptor;
pub use super::image_dir::{DirImport, import_dir};
use super::{CriClient, CriError};

/// The containerd namespace the CRI plugin keeps its images in.
pub const NAMESPACE: &str = "k8s.io";

/// Bytes per chunk read from the archive and sent to containerd.
const CHUNK: usize = 1 << 20;
/// Blobs up to this size are also kept in memory, since manifests and configs must be read.
const SMALL_BLOB: u64 = 4 << 20;
/// Metadata files (`manifest.json`, `index.json`, ...) larger than this are refused.
const MAX_METADATA: u64 = 16 << 20;
/// The import lease expires on its own after this long, should skiff die mid-import.
const LEASE_TTL_SECS: i64 = 3600;

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// One image record the import created or updated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedImage {
    /// The full reference, e.g. `docker.io/library/busybox:latest`.
    pub name: String,
    /// Digest of the manifest or index the name points at.
    pub digest: String,
    /// Its media type.
    pub media_type: String,
}

/// Imports every named image in `archive` into containerd's `k8s.io` namespace through the
/// socket `client` talks to. Returns the records written; an archive with no named image is
/// an error.
pub async fn import_archive(client: &CriClient, archive: &Path) -> Result<Vec<ImportedImage>, CriError> {
    import(client, archive, Source::File(archive.to_path_buf())).await
}

/// Imports an archive held in memory, as [`import_archive`] does a file; `label` stands for it
/// in errors and logs.
pub async fn import_bytes(client: &CriClient, label: &Path, bytes: Vec<u8>) -> Result<Vec<ImportedImage>, CriError> {
    import(client, label, Source::Memory(bytes)).await
}

/// Where an archive's bytes come from.
enum Source {
    File(PathBuf),
    Memory(Vec<u8>),
}

async fn import(client: &CriClient, archive: &Path, source: Source) -> Result<Vec<ImportedImage>, CriError> {
    let fail = |reason: String| CriError::Import { archive: archive.to_path_buf(), reason };
    let lease = format!("skiff-import-{}", uuid::Uuid::new_v4());
    let api = Api { channel: client.channel(), lease: lease.clone() };
    let expire = chrono::Utc::now() + chrono::Duration::seconds(LEASE_TTL_SECS);
    let mut labels = HashMap::new();
    labels.insert("containerd.io/gc.expire".to_string(), expire.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    leases::leases_client::LeasesClient::new(api.channel.clone())
        .create(api.request(leases::CreateRequest { id: lease.clone(), labels }))
        .await
        .map_err(|s| fail(format!("creating lease: {}", s.message())))?;

    let span = tracing::info_span!("import", archive = %archive.display());
    let result = tracing::Instrument::instrument(import_with_lease(&api, source), span).await.map_err(fail);

    // Whatever happened, the lease goes: the image records now hold what they need, and a
    // failed import's blobs become garbage.
    if let Err(s) = leases::leases_client::LeasesClient::new(api.channel.clone())
        .delete(api.request(leases::DeleteRequest { id: lease.clone(), sync: false }))
        .await
    {
        tracing::warn!(lease, error = %s.message(), "could not delete the import lease; it expires by itself");
    }
    result
}

/// containerd's services on one channel, every request in the `k8s.io` namespace and lease.
struct Api {
    channel: Channel,
    lease: String,
}

impl Api {
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        let metadata = request.metadata_mut();
        metadata.insert("containerd-namespace", tonic::metadata::MetadataValue::from_static(NAMESPACE));
        if !self.lease.is_empty()
            && let Ok(lease) = self.lease.parse()
        {
            metadata.insert("containerd-lease", lease);
        }
        request
    }

    fn content(&self) -> content::content_client::ContentClient<Channel> {
        content::content_client::ContentClient::new(self.channel.clone())
    }
}

/// What the reading thread sends.
enum Event {
    /// A small metadata file, kept in memory only.
    Metadata {
        path: String,
        bytes: Vec<u8>,
    },
    /// A symbolic link (Docker archives link repeated layers).
    Link {
        path: String,
        target: String,
    },
    /// A blob begins; `Data` chunks and an `End` follow.
    Start {
        path: String,
        size: u64,
    },
    Data(Vec<u8>),
    End {
        digest: String,
        small: Option<Vec<u8>>,
    },
}

/// A blob as stored in containerd.
#[derive(Debug, Clone)]
struct Blob {
    digest: String,
    size: i64,
    /// Its first bytes, to tell compressed layers apart.
    head: Vec<u8>,
}

/// Everything the archive held, indexed.
#[derive(Default)]
struct Contents {
    metadata: HashMap<String, Vec<u8>>,
    links: HashMap<String, String>,
    blobs: HashMap<String, Blob>,
    /// Small blobs' bytes by digest.
    small: HashMap<String, Vec<u8>>,
}

impl Contents {
    /// The blob at `path`, following links.
    fn blob(&self, path: &str) -> Option<&Blob> {
        let mut path = clean(path);
        for _ in 0..8 {
            if let Some(blob) = self.blobs.get(&path) {
                return Some(blob);
            }
            let target = self.links.get(&path)?;
            let parent = Path::new(&path).parent().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
            path = resolve(&parent, target);
        }
        None
    }
}

async fn import_with_lease(api: &Api, source: Source) -> Result<Vec<ImportedImage>, String> {
    let (tx, mut rx) = mpsc::channel::<Event>(8);
    let reader = tokio::task::spawn_blocking(move || read_archive(source, &tx));

    let mut contents = Contents::default();
    let mut writer: Option<(String, BlobWriter)> = None;
    let mut written = 0usize;
    while let Some(event) = rx.recv().await {
        match event {
            Event::Metadata { path, bytes } => {
                contents.metadata.insert(path, bytes);
            }
            Event::Link { path, target } => {
                contents.links.insert(path, target);
            }
            Event::Start { path, size } => {
                let expected = digest_from_path(&path).unwrap_or_default();
                writer = Some((path, BlobWriter::start(api, size as i64, expected).await?));
            }
            Event::Data(chunk) => {
                if let Some((_, w)) = writer.as_mut() {
                    w.write(chunk).await?;
                }
            }
            Event::End { digest, small } => {
                let Some((path, w)) = writer.take() else { continue };
                let blob = w.commit(&digest, HashMap::new()).await?;
                if let Some(bytes) = small {
                    contents.small.insert(blob.digest.clone(), bytes);
                }
                contents.blobs.insert(path, blob);
                written += 1;
            }
        }
    }
    match reader.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(e) => return Err(format!("reading the archive: {e}")),
    }
    tracing::debug!(blobs = written, "archive streamed into the content store");

    let targets = if contents.metadata.contains_key("index.json") {
        oci_targets(&contents)?
    } else if contents.metadata.contains_key("manifest.json") {
        docker_targets(api, &mut contents).await?
    } else {
        return Err("neither an OCI image layout (index.json) nor a Docker archive (manifest.json)".to_string());
    };
    if targets.is_empty() {
        return Err("the archive names no image".to_string());
    }
    for (_, target) in &targets {
        label_children(api, &contents, target).await?;
    }
    let mut imported = Vec::new();
    for (name, target) in targets {
        put_image(api, &name, &target).await?;
        tracing::info!(image = %name, digest = %target.digest, "image imported");
        imported.push(ImportedImage { name, digest: target.digest, media_type: target.media_type });
    }
    Ok(imported)
}

/// Reads the archive, decompressing as its magic bytes say, and sends its entries.
fn read_archive(source: Source, tx: &mpsc::Sender<Event>) -> Result<(), String> {
    let raw: Box<dyn Read> = match source {
        Source::File(path) => Box::new(std::fs::File::open(path).map_err(|e| format!("opening: {e}"))?),
        Source::Memory(bytes) => Box::new(std::io::Cursor::new(bytes)),
    };
    let mut buffered = BufReader::with_capacity(CHUNK, raw);
    let magic = buffered.fill_buf().map_err(|e| format!("reading: {e}"))?;
    let decoded: Box<dyn Read> = if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(buffered))
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(ruzstd::decoding::StreamingDecoder::new(buffered).map_err(|e| format!("zstd: {e}"))?)
    } else {
        Box::new(buffered)
    };
    let mut tar = tar::Archive::new(decoded);
    let entries = tar.entries().map_err(|e| format!("reading the tar: {e}"))?;
    // A closed channel means the importer gave up; its error is the one to report.
    let send = |event| tx.blocking_send(event).map_err(|_| "import aborted".to_string());
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("reading the tar: {e}"))?;
        let path = clean(&entry.path().map_err(|e| format!("bad entry name: {e}"))?.to_string_lossy());
        let kind = entry.header().entry_type();
        if kind.is_symlink() {
            if let Ok(Some(target)) = entry.link_name() {
                send(Event::Link { path, target: target.to_string_lossy().into_owned() })?;
            }
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        let size = entry.size();
        if is_metadata(&path) {
            if size > MAX_METADATA {
                return Err(format!("{path} is {size} bytes, too large for metadata"));
            }
            let mut bytes = Vec::with_capacity(size as usize);
            entry.read_to_end(&mut bytes).map_err(|e| format!("reading {path}: {e}"))?;
            send(Event::Metadata { path, bytes })?;
            continue;
        }
        send(Event::Start { path: path.clone(), size })?;
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        let mut small = (size <= SMALL_BLOB).then(|| Vec::with_capacity(size as usize));
        loop {
            let mut chunk = vec![0u8; CHUNK];
            let n = entry.read(&mut chunk).map_err(|e| format!("reading {path}: {e}"))?;
            if n == 0 {
                break;
            }
            chunk.truncate(n);
            digest.update(&chunk);
            if let Some(small) = small.as_mut() {
                small.extend_from_slice(&chunk);
            }
            send(Event::Data(chunk))?;
        }
        send(Event::End { digest: digest_name(digest.finish()), small })?;
    }
    Ok(())
}

/// Files that describe an archive rather than being content.
fn is_metadata(path: &str) -> bool {
    matches!(path, "manifest.json" | "index.json" | "oci-layout" | "repositories")
        || path.ends_with("/VERSION")
        || path.ends_with("/json")
}

/// `blobs/sha256/<hex>` names its digest.
fn digest_from_path(path: &str) -> Option<String> {
    let hex = path.strip_prefix("blobs/sha256/")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| format!("sha256:{hex}"))
}

/// An archive path without `./` and doubled slashes.
fn clean(path: &str) -> String {
    path.split('/').filter(|p| !p.is_empty() && *p != ".").collect::<Vec<_>>().join("/")
}

/// `target` relative to `dir`, with `..` applied.
fn resolve(dir: &str, target: &str) -> String {
    let mut parts: Vec<&str> = if target.starts_with('/') { Vec::new() } else { dir.split('/').collect() };
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    clean(&parts.join("/"))
}

/// An open `Write` call: requests go in, and a task reads containerd's answers.
struct WriteCall {
    requests: mpsc::Sender<content::WriteContentRequest>,
    answers: tokio::task::JoinHandle<Result<(), tonic::Status>>,
}

/// One blob written to the content store.
struct BlobWriter {
    reference: String,
    total: i64,
    offset: i64,
    head: Vec<u8>,
    /// `None` when the blob was already stored and the data is skipped.
    call: Option<WriteCall>,
    existing: Option<String>,
}

impl BlobWriter {
    async fn start(api: &Api, total: i64, expected: String) -> Result<BlobWriter, String> {
        let reference = format!("{}-{}", api.lease, uuid::Uuid::new_v4());
        let (tx, rx) = mpsc::channel(4);
        let first = content::WriteContentRequest {
            action: content::WriteAction::Stat as i32,
            r#ref: reference.clone(),
            total,
            expected: expected.clone(),
            ..Default::default()
        };
        // The first message must be queued before the call: containerd answers it first.
        let _ = tx.send(first).await;
        let mut writer = BlobWriter { reference, total, offset: 0, head: Vec::new(), call: None, existing: None };
        match api.content().write(api.request(ReceiverStream::new(rx))).await {
            Ok(response) => {
                let mut responses = response.into_inner();
                // One answer per request; the commit's is checked by containerd itself, which
                // refuses a blob whose digest or size differs from what the commit expects.
                let answers = tokio::spawn(async move {
                    while responses.message().await?.is_some() {}
                    Ok(())
                });
                writer.call = Some(WriteCall { requests: tx, answers });
            }
            Err(s) if s.code() == tonic::Code::AlreadyExists && !expected.is_empty() => {
                writer.existing = Some(expected)
            }
            Err(s) => return Err(format!("writing content: {}", s.message())),
        }
        Ok(writer)
    }

    async fn write(&mut self, chunk: Vec<u8>) -> Result<(), String> {
        if self.head.len() < 8 {
            self.head.extend(chunk.iter().take(8 - self.head.len()));
        }
        let len = chunk.len() as i64;
        if let Some(call) = &self.call {
            let request = content::WriteContentRequest {
                action: content::WriteAction::Write as i32,
                r#ref: self.reference.clone(),
                offset: self.offset,
                data: chunk,
                ..Default::default()
            };
            if call.requests.send(request).await.is_err() {
                // The call ended early; its status says why.
                return Err(self.finish().await.err().unwrap_or_else(|| "content write ended early".to_string()));
            }
        }
        self.offset += len;
        Ok(())
    }

    /// Commits the blob as `digest` (which the reader computed) with `labels`.
    async fn commit(mut self, digest: &str, labels: HashMap<String, String>) -> Result<Blob, String> {
        if let Some(existing) = &self.existing {
            if existing != digest {
                return Err(format!("blob named {existing} has digest {digest}"));
            }
            return Ok(Blob { digest: digest.to_string(), size: self.total, head: self.head });
        }
        if let Some(call) = &self.call {
            let request = content::WriteContentRequest {
                action: content::WriteAction::Commit as i32,
                r#ref: self.reference.clone(),
                total: self.total,
                offset: self.offset,
                expected: digest.to_string(),
                labels,
                ..Default::default()
            };
            let _ = call.requests.send(request).await;
        }
        self.finish().await?;
        Ok(Blob { digest: digest.to_string(), size: self.total, head: std::mem::take(&mut self.head) })
    }

    /// Ends the call and waits for containerd's last word.
    async fn finish(&mut self) -> Result<(), String> {
        let Some(WriteCall { requests, answers }) = self.call.take() else { return Ok(()) };
        drop(requests);
        match answers.await {
            Ok(Ok(_)) => Ok(()),
            // Committing a blob that is already stored: the content is there, which is the goal.
            Ok(Err(s)) if s.code() == tonic::Code::AlreadyExists => Ok(()),
            Ok(Err(s)) => Err(format!("writing content: {}", s.message())),
            Err(e) => Err(format!("writing content: {e}")),
        }
    }
}

/// Names and targets from an OCI layout's `index.json`.
fn oci_targets(contents: &Contents) -> Result<Vec<(String, Descriptor)>, String> {
    let index: Value =
        serde_json::from_slice(&contents.metadata["index.json"]).map_err(|e| format!("index.json: {e}"))?;
    let mut targets = Vec::new();
    for manifest in index["manifests"].as_array().into_iter().flatten() {
        let descriptor = descriptor(manifest).ok_or("index.json: a manifest without digest, size or media type")?;
        let annotations = &manifest["annotations"];
        let name = annotations["io.containerd.image.name"]
            .as_str()
            .or_else(|| annotations["org.opencontainers.image.ref.name"].as_str().filter(|n| n.contains(['/', ':'])));
        match name.and_then(normalize_reference) {
            Some(name) => targets.push((name, descriptor)),
            None => tracing::warn!(digest = %descriptor.digest, "skipping an image without a full name in index.json"),
        }
    }
    Ok(targets)
}

/// Names and targets from a Docker archive's `manifest.json`, writing an OCI manifest for each.
async fn docker_targets(api: &Api, contents: &mut Contents) -> Result<Vec<(String, Descriptor)>, String> {
    let entries: Value =
        serde_json::from_slice(&contents.metadata["manifest.json"]).map_err(|e| format!("manifest.json: {e}"))?;
    let mut targets = Vec::new();
    for entry in entries.as_array().into_iter().flatten() {
        let config_path = entry["Config"].as_str().ok_or("manifest.json: an entry without Config")?;
        let config = contents
            .blob(config_path)
            .ok_or_else(|| format!("manifest.json: {config_path} is not in the archive"))?
            .clone();
        let mut layers = Vec::new();
        for layer in entry["Layers"].as_array().into_iter().flatten() {
            let path = layer.as_str().ok_or("manifest.json: a layer that is not a path")?;
            let blob = contents.blob(path).ok_or_else(|| format!("manifest.json: {path} is not in the archive"))?;
            layers.push(json!({"mediaType": layer_media_type(&blob.head), "digest": blob.digest, "size": blob.size}));
        }
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config.digest, "size": config.size},
            "layers": layers,
        });
        let bytes = serde_json::to_vec(&manifest).map_err(|e| e.to_string())?;
        let digest = sha256(&bytes);
        let mut writer = BlobWriter::start(api, bytes.len() as i64, digest.clone()).await?;
        writer.write(bytes.clone()).await?;
        let blob = writer.commit(&digest, HashMap::new()).await?;
        // Read again when its children are labelled.
        contents.small.insert(blob.digest.clone(), bytes);
        let target = Descriptor {
            media_type: OCI_MANIFEST.to_string(),
            digest: blob.digest,
            size: blob.size,
            annotations: HashMap::new(),
        };
        let names: Vec<String> = entry["RepoTags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str())
            .filter_map(normalize_reference)
            .collect();
        if names.is_empty() {
            tracing::warn!(config = %config.digest, "skipping an image without RepoTags in manifest.json");
        }
        for name in names {
            targets.push((name, target.clone()));
        }
    }
    Ok(targets)
}

/// Labels a manifest or index blob with references to its children, recursively, so that
/// containerd's garbage collector keeps them as long as the image record exists.
async fn label_children(api: &Api, contents: &Contents, target: &Descriptor) -> Result<(), String> {
    let mut pending = vec![target.clone()];
    while let Some(descriptor) = pending.pop() {
        let is_index = matches!(descriptor.media_type.as_str(), OCI_INDEX | DOCKER_LIST);
        let is_manifest = matches!(descriptor.media_type.as_str(), OCI_MANIFEST | DOCKER_MANIFEST);
        if !is_index && !is_manifest {
            continue;
        }
        // An index may list manifests of other platforms that the archive does not carry.
        let Some(bytes) = contents.small.get(&descriptor.digest) else { continue };
        let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("{}: {e}", descriptor.digest))?;
        let mut labels = HashMap::new();
        if is_index {
            for (i, child) in value["manifests"].as_array().into_iter().flatten().enumerate() {
                if let Some(child) = self::descriptor(child) {
                    labels.insert(format!("containerd.io/gc.ref.content.m.{i}"), child.digest.clone());
                    pending.push(child);
                }
            }
        } else {
            if let Some(config) = value["config"]["digest"].as_str() {
                labels.insert("containerd.io/gc.ref.content.config".to_string(), config.to_string());
            }
            for (i, layer) in value["layers"].as_array().into_iter().flatten().enumerate() {
                if let Some(digest) = layer["digest"].as_str() {
                    labels.insert(format!("containerd.io/gc.ref.content.l.{i}"), digest.to_string());
                }
            }
        }
        if labels.is_empty() {
            continue;
        }
        let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
        let info = content::Info { digest: descriptor.digest.clone(), labels, ..Default::default() };
        api.content()
            .update(api.request(content::UpdateRequest {
                info: Some(info),
                update_mask: Some(prost_types::FieldMask { paths }),
            }))
            .await
            .map_err(|s| format!("labelling {}: {}", descriptor.digest, s.message()))?;
    }
    Ok(())
}

/// The label that pins an image against garbage collection.
pub const PINNED_LABEL: &str = "io.cri-containerd.pinned";

/// Which of `names` (image references) carry the pinned label in containerd's `k8s.io`
/// namespace. A name that cannot be looked up counts as not pinned.
pub async fn pinned(client: &CriClient, names: &[String]) -> HashSet<String> {
    let api = Api { channel: client.channel(), lease: String::new() };
    let mut images = images::images_client::ImagesClient::new(api.channel.clone());
    let mut out = HashSet::new();
    for name in names {
        if let Ok(r) = images.get(api.request(images::GetImageRequest { name: name.clone() })).await
            && r.into_inner().image.is_some_and(|i| i.labels.get(PINNED_LABEL).is_some_and(|v| v == "pinned"))
        {
            out.insert(name.clone());
        }
    }
    out
}

/// Creates the image record, or points an existing one at the new target.
async fn put_image(api: &Api, name: &str, target: &Descriptor) -> Result<(), String> {
    let mut labels = HashMap::new();
    // What the CRI plugin puts on images it pulls itself.
    labels.insert("io.cri-containerd.image".to_string(), "managed".to_string());
    // An imported image cannot be pulled again on a box without a registry: image garbage
    // collection leaves it alone (skiff's own, and containerd 1.7+'s CRI reports it pinned).
    labels.insert(PINNED_LABEL.to_string(), "pinned".to_string());
    let image = images::Image { name: name.to_string(), labels, target: Some(target.clone()), ..Default::default() };
    let mut client = images::images_client::ImagesClient::new(api.channel.clone());
    match client
        .create(api.request(images::CreateImageRequest { image: Some(image.clone()), source_date_epoch: None }))
        .await
    {
        Ok(_) => Ok(()),
        Err(s) if s.code() == tonic::Code::AlreadyExists => client
            .update(api.request(images::UpdateImageRequest {
                image: Some(image),
                update_mask: None,
                source_date_epoch: None,
            }))
            .await
            .map(|_| ())
            .map_err(|s| format!("updating image {name}: {}", s.message())),
        Err(s) => Err(format!("creating image {name}: {}", s.message())),
    }
}

fn descriptor(value: &Value) -> Option<Descriptor> {
    Some(Descriptor {
        media_type: value["mediaType"].as_str()?.to_string(),
        digest: value["digest"].as_str()?.to_string(),
        size: value["size"].as_i64()?,
        annotations: HashMap::new(),
    })
}

/// The OCI media type of a layer, from its first bytes.
fn layer_media_type(head: &[u8]) -> &'static str {
    if head.starts_with(&[0x1f, 0x8b]) {
        "application/vnd.oci.image.layer.v1.tar+gzip"
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        "application/vnd.oci.image.layer.v1.tar+zstd"
    } else {
        "application/vnd.oci.image.layer.v1.tar"
    }
}

/// The OCI digest (`sha256:<hex>`) of `bytes`.
pub(crate) fn sha256(bytes: &[u8]) -> String {
    digest_name(ring::digest::digest(&ring::digest::SHA256, bytes))
}

/// A SHA-256 digest as OCI and containerd spell it: `sha256:<hex>`.
pub(crate) fn digest_name(digest: ring::digest::Digest) -> String {
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// A reference as containerd and the CRI plugin store it: `busybox` becomes
/// `docker.io/library/busybox:latest`, `me/app:1` becomes `docker.io/me/app:1`.
pub fn normalize_reference(name: &str) -> Option<String> {
    let name = name.trim();
    if name.is_empty() || name.contains(char::is_whitespace) {
        return None;
    }
    let full = match name.split_once('/') {
        None => format!("docker.io/library/{name}"),
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => name.to_string(),
        Some(_) => format!("docker.io/{name}"),
    };
    let last = full.rsplit('/').next().unwrap_or_default();
    if full.contains('@') || last.contains(':') { Some(full) } else { Some(format!("{full}:latest")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_normalized_like_dockers() {
        assert_eq!(normalize_reference("busybox").as_deref(), Some("docker.io/library/busybox:latest"));
        assert_eq!(normalize_reference("busybox:1.36").as_deref(), Some("docker.io/library/busybox:1.36"));
        assert_eq!(normalize_reference("me/app:1").as_deref(), Some("docker.io/me/app:1"));
        assert_eq!(normalize_reference("registry.k8s.io/pause:3.10").as_deref(), Some("registry.k8s.io/pause:3.10"));
        assert_eq!(normalize_reference("localhost/x").as_deref(), Some("localhost/x:latest"));
        assert_eq!(normalize_reference("host:5000/x").as_deref(), Some("host:5000/x:latest"));
        assert_eq!(
            normalize_reference("a.io/x@sha256:0000").as_deref(),
            Some("a.io/x@sha256:0000"),
            "a digest reference gets no tag"
        );
        assert_eq!(normalize_reference(""), None);
        assert_eq!(normalize_reference("a b"), None);
    }

    #[test]
    fn archive_paths_and_links_resolve() {
        assert_eq!(clean("./blobs//sha256/ab"), "blobs/sha256/ab");
        assert_eq!(resolve("abc", "../def/layer.tar"), "def/layer.tar");
        assert_eq!(resolve("", "x/layer.tar"), "x/layer.tar");
        let hex = "a".repeat(64);
        assert_eq!(digest_from_path(&format!("blobs/sha256/{hex}")), Some(format!("sha256:{hex}")));
        assert_eq!(digest_from_path("blobs/sha256/short"), None);
        assert_eq!(digest_from_path("abc/layer.tar"), None);
    }

    #[test]
    fn layer_media_types_follow_the_magic_bytes() {
        assert_eq!(layer_media_type(&[0x1f, 0x8b, 8, 0]), "application/vnd.oci.image.layer.v1.tar+gzip");
        assert_eq!(layer_media_type(&[0x28, 0xb5, 0x2f, 0xfd]), "application/vnd.oci.image.layer.v1.tar+zstd");
        assert_eq!(layer_media_type(b"bin/"), "application/vnd.oci.image.layer.v1.tar");
    }

    #[test]
    fn metadata_files_are_told_from_blobs() {
        assert!(is_metadata("manifest.json"));
        assert!(is_metadata("index.json"));
        assert!(is_metadata("0123/json"));
        assert!(is_metadata("0123/VERSION"));
        assert!(!is_metadata("0123/layer.tar"));
        assert!(!is_metadata("0123abc.json"), "a Docker archive's config is a blob");
    }
}
