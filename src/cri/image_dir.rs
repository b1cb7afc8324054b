//! The images folder: every archive in it imported once per file content (air-gap images,
//! as k3s's `agent/images/`).
//!
//! [`import_dir`] imports each archive in one folder (not its subfolders) whose name ends in
//! `.tar`, `.tar.gz`, `.tgz`, `.tar.zst` or `.tzst` (the content decides the format, see
//! [`super::images`]), and remembers the SHA-256 of each file it imported in a state file, one
//! `sha256:<hex> <file name>` line per file. A file whose content is in the state file is not
//! imported again, under any name; a changed file is. Files that fail are named in the log and
//! the result and retried next time; the others go on.
//!
//! The state file belongs beside the content store it describes (the agent keeps it at
//! `<data-dir>/agent/containerd/imported-archives`, see [`STATE_FILE`]), so that wiping
//! containerd's folder also makes the next start import everything again.
//!
//! It only reads the folder; it never deletes or changes the archives.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::images::{ImportedImage, import_archive};
use super::{CriClient, CriError};

/// The state file's name inside containerd's folder.
pub const STATE_FILE: &str = "imported-archives";

/// File name endings taken for image archives.
pub const ARCHIVE_SUFFIXES: &[&str] = &[".tar", ".tar.gz", ".tgz", ".tar.zst", ".tzst"];

/// What one pass over the folder did, each list in file name order.
#[derive(Debug, Default)]
pub struct DirImport {
    /// Archives imported now, with the images each held.
    pub imported: Vec<(PathBuf, Vec<ImportedImage>)>,
    /// Archives skipped because a file with the same content was imported before.
    pub unchanged: Vec<PathBuf>,
    /// Files that are not image archives by their name (and hidden files, not listed).
    pub ignored: Vec<PathBuf>,
    /// Archives that could not be imported, with why.
    pub failed: Vec<(PathBuf, CriError)>,
}

/// Imports the archives in `dir` that `state_file` does not list, then records them there. A
/// missing `dir` is an empty one. Errors only when the folder cannot be read; a file that fails
/// is in [`DirImport::failed`].
pub async fn import_dir(client: &CriClient, dir: &Path, state_file: &Path) -> Result<DirImport, CriError> {
    let (files, ignored) = {
        let dir = dir.to_path_buf();
        blocking(move || list_dir(&dir)).await??
    };
    let mut done = {
        let state_file = state_file.to_path_buf();
        blocking(move || read_state(&state_file)).await?
    };
    let mut result = DirImport { ignored, ..Default::default() };
    for path in result.ignored.iter() {
        tracing::warn!(file = %path.display(), "not an image archive (expected {}); ignored", ARCHIVE_SUFFIXES.join(", "));
    }
    for path in files {
        let digest = {
            let path = path.clone();
            blocking(move || file_digest(&path)).await?
        };
        let digest = match digest {
            Ok(digest) => digest,
            Err(source) => {
                let error = CriError::Io { what: "reading image archive", path: path.clone(), source };
                tracing::warn!(file = %path.display(), %error, "image archive not imported");
                result.failed.push((path, error));
                continue;
            }
        };
        if done.contains_key(&digest) {
            tracing::debug!(file = %path.display(), %digest, "image archive imported before; skipped");
            result.unchanged.push(path);
            continue;
        }
        match import_archive(client, &path).await {
            Ok(images) => {
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                done.insert(digest, name);
                let (state_file, done) = (state_file.to_path_buf(), done.clone());
                // Written after every archive, so a crash half-way keeps what is done.
                if let Err(error) = blocking(move || write_state(&state_file, &done)).await? {
                    tracing::warn!(%error, "could not record the imported archive; it is imported again next time");
                }
                result.imported.push((path, images));
            }
            Err(error) => {
                tracing::warn!(file = %path.display(), %error, "image archive not imported");
                result.failed.push((path, error));
            }
        }
    }
    Ok(result)
}

/// Runs file I/O off the runtime's threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, CriError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| CriError::Io {
        what: "image folder task",
        path: PathBuf::new(),
        source: std::io::Error::other(e.to_string()),
    })
}

/// The archives and the other (visible) files in `dir`, both sorted.
fn list_dir(dir: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>), CriError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
        Err(source) => return Err(CriError::Io { what: "reading image folder", path: dir.to_path_buf(), source }),
    };
    let (mut archives, mut others) = (Vec::new(), Vec::new());
    for entry in entries {
        let entry =
            entry.map_err(|source| CriError::Io { what: "reading image folder", path: dir.to_path_buf(), source })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        // Follows links, so a link to an archive elsewhere counts.
        if name.starts_with('.') || !path.is_file() {
            continue;
        }
        if is_archive_name(&name) { archives.push(path) } else { others.push(path) }
    }
    archives.sort();
    others.sort();
    Ok((archives, others))
}

/// Whether a file name says "image archive".
pub fn is_archive_name(name: &str) -> bool {
    ARCHIVE_SUFFIXES.iter().any(|suffix| name.len() > suffix.len() && name.ends_with(suffix))
}

/// `sha256:<hex>` of a file's content, read in chunks.
fn file_digest(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        context.update(&buffer[..n]);
    }
    Ok(super::images::digest_name(context.finish()))
}

/// The state file's digests and the file names they came from. A missing or unreadable file is
/// empty (everything is imported again, which is harmless); lines that do not parse are skipped.
fn read_state(path: &Path) -> BTreeMap<String, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return BTreeMap::new(),
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot read the imported-archives record; importing all");
            return BTreeMap::new();
        }
    };
    parse_state(&text)
}

fn parse_state(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let (digest, name) = line.split_once(' ').unwrap_or((line, ""));
            let hex = digest.strip_prefix("sha256:")?;
            (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| (digest.to_string(), name.into()))
        })
        .collect()
}

fn render_state(done: &BTreeMap<String, String>) -> String {
    done.iter().map(|(digest, name)| format!("{digest} {name}\n")).collect()
}

/// Replaces the state file at once (write beside it, then rename), creating its folder.
fn write_state(path: &Path, done: &BTreeMap<String, String>) -> Result<(), CriError> {
    let io = |source| CriError::Io { what: "writing", path: path.to_path_buf(), source };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, render_state(done)).map_err(io)?;
    std::fs::rename(&temporary, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_names() {
        for name in ["a.tar", "a.tar.gz", "a.tgz", "a.tar.zst", "a.tzst", "airgap-images-amd64.tar.zst"] {
            assert!(is_archive_name(name), "{name}");
        }
        for name in ["a.txt", "a.tar.lz4", "tar", ".tar", "a.gz", "README"] {
            assert!(!is_archive_name(name), "{name}");
        }
    }

    #[test]
    fn state_round_trips_and_bad_lines_are_skipped() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        let mut done = BTreeMap::new();
        done.insert(digest.clone(), "my images.tar".to_string());
        let text = render_state(&done);
        assert_eq!(text, format!("{digest} my images.tar\n"));
        assert_eq!(parse_state(&text), done);
        let noisy = format!("garbage\nsha256:short x\n{text}\nsha256:{} y\n", "zz".repeat(32));
        assert_eq!(parse_state(&noisy), done);
    }

    #[test]
    fn listing_sorts_archives_and_sets_aside_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.tar.gz", "a.tar", "notes.txt", ".imported", "c.tzst"] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        std::fs::create_dir(dir.path().join("sub.tar")).unwrap();
        let (archives, others) = list_dir(dir.path()).unwrap();
        let names = |v: &[PathBuf]| -> Vec<String> {
            v.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect()
        };
        assert_eq!(names(&archives), ["a.tar", "b.tar.gz", "c.tzst"]);
        assert_eq!(names(&others), ["notes.txt"]);
        assert_eq!(list_dir(&dir.path().join("absent")).unwrap().0.len(), 0, "a missing folder is empty");
    }

    #[test]
    fn the_state_file_is_written_whole_with_its_folder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("containerd").join(STATE_FILE);
        let mut done = BTreeMap::new();
        done.insert(format!("sha256:{}", "01".repeat(32)), "a.tar".to_string());
        write_state(&path, &done).unwrap();
        assert_eq!(read_state(&path), done);
        assert!(!path.with_extension("tmp").exists());
        assert!(read_state(&dir.path().join("absent")).is_empty());
    }
}
