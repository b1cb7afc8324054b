//! `skiff images import FILE...` and `skiff images list`: image archives and the image list by
//! hand, through CRI on the agent's containerd socket (or any CRI socket).
//!
//! Only flags, the calls and the output live here; importing is [`super::images`]'s. Every
//! error is printed as one line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};

use super::images::import_archive;
use super::proto::ListImagesRequest;
use super::{CriClient, CriError};

/// How long to wait for the socket to answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// `skiff images`.
#[derive(Args, Debug)]
pub struct ImagesFlags {
    #[command(subcommand)]
    command: ImagesCommand,
    /// Folder for all state; the socket is <data-dir>/agent/containerd/containerd.sock
    /// [default: /var/lib/skiff, or ~/.skiff when not root]
    #[arg(short = 'd', long, env = "SKIFF_DATA_DIR", value_name = "DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// CRI socket to use instead of the agent's containerd (PATH or unix://PATH)
    #[arg(long, env = "SKIFF_CONTAINER_RUNTIME_ENDPOINT", value_name = "ENDPOINT", global = true)]
    container_runtime_endpoint: Option<String>,
}

#[derive(Subcommand, Debug)]
enum ImagesCommand {
    /// Import OCI or Docker image archives (plain, gzip or zstd) into the k8s.io namespace.
    Import {
        /// Archive files.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// List the images the container runtime has, as `crictl images` does.
    List,
}

/// The agent's containerd socket under `data_dir`.
pub fn agent_socket(data_dir: &Path) -> PathBuf {
    data_dir.join("agent").join("containerd").join("containerd.sock")
}

/// The socket path of a `--container-runtime-endpoint` value.
pub fn parse_endpoint(endpoint: &str) -> Result<PathBuf, String> {
    let path = match endpoint.split_once("://") {
        None => endpoint,
        Some(("unix", path)) => path,
        Some((scheme, _)) => {
            return Err(format!(
                "invalid value \"{endpoint}\" for --container-runtime-endpoint: {scheme}:// is not supported, only unix sockets"
            ));
        }
    };
    if path.is_empty() {
        return Err(format!("invalid value \"{endpoint}\" for --container-runtime-endpoint: no socket path"));
    }
    Ok(PathBuf::from(path))
}

/// Runs `skiff images ...`; returns the exit code.
pub fn run_blocking(flags: ImagesFlags) -> i32 {
    init_logging();
    let socket = match &flags.container_runtime_endpoint {
        Some(endpoint) => match parse_endpoint(endpoint) {
            Ok(path) => path,
            Err(e) => {
                eprintln!("skiff: {e}");
                return 1;
            }
        },
        None => agent_socket(
            &flags
                .data_dir
                .clone()
                .unwrap_or_else(|| crate::server::config::default_data_dir(nix::unistd::geteuid().is_root())),
        ),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("skiff: cannot start the async runtime: {e}");
            return 1;
        }
    };
    runtime.block_on(async move {
        let client = match connect(&socket, flags.container_runtime_endpoint.is_some()).await {
            Ok(client) => client,
            Err(e) => {
                eprintln!("skiff: {e}");
                return 1;
            }
        };
        match flags.command {
            ImagesCommand::Import { files } => import(&client, &files).await,
            ImagesCommand::List => match list(&client).await {
                Ok(table) => {
                    print!("{table}");
                    0
                }
                Err(e) => {
                    eprintln!("skiff: {e}");
                    1
                }
            },
        }
    })
}

/// Warnings only (an archive's unnamed image, ...); `SKIFF_LOG` overrides.
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("SKIFF_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

async fn connect(socket: &Path, explicit: bool) -> Result<CriClient, String> {
    if !socket.exists() {
        return Err(if explicit {
            format!("no CRI socket at {}", socket.display())
        } else {
            format!(
                "no containerd socket at {}: the skiff agent must be running (or give --data-dir or --container-runtime-endpoint)",
                socket.display()
            )
        });
    }
    CriClient::connect(socket, CONNECT_TIMEOUT).await.map_err(|e| e.to_string())
}

/// Imports each file, going on after a failure; 1 if any failed.
async fn import(client: &CriClient, files: &[PathBuf]) -> i32 {
    let mut code = 0;
    for file in files {
        match import_archive(client, file).await {
            Ok(images) => {
                for image in images {
                    println!("imported {} {}", image.name, image.digest);
                }
            }
            Err(e) => {
                eprintln!("skiff: {e}");
                code = 1;
            }
        }
    }
    code
}

/// The `crictl images` table: IMAGE, TAG, IMAGE ID (13 hex digits), SIZE.
async fn list(client: &CriClient) -> Result<String, CriError> {
    let images = client
        .images()
        .list_images(ListImagesRequest { filter: None })
        .await
        .map_err(|status| client.call_error("ListImages", status))?
        .into_inner()
        .images;
    let mut rows = Vec::new();
    for image in images {
        let id = image.id.strip_prefix("sha256:").unwrap_or(&image.id).chars().take(13).collect::<String>();
        let size = human_size(image.size);
        let mut names: Vec<(String, String)> = image.repo_tags.iter().map(|t| split_tag(t)).collect();
        if names.is_empty() {
            names = image
                .repo_digests
                .iter()
                .map(|d| (d.split('@').next().unwrap_or(d).to_string(), "<none>".into()))
                .collect();
            names.truncate(1);
        }
        if names.is_empty() {
            names.push(("<none>".to_string(), "<none>".to_string()));
        }
        for (repo, tag) in names {
            rows.push([repo, tag, id.clone(), size.clone()]);
        }
    }
    rows.sort();
    Ok(table(&["IMAGE", "TAG", "IMAGE ID", "SIZE"], &rows))
}

/// `registry:5000/a/b:tag` into (`registry:5000/a/b`, `tag`); the tag is after the last `:` that
/// follows the last `/`.
fn split_tag(reference: &str) -> (String, String) {
    let last = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[last..].rfind(':') {
        Some(i) => (reference[..last + i].to_string(), reference[last + i + 1..].to_string()),
        None => (reference.to_string(), "<none>".to_string()),
    }
}

/// Columns padded as `crictl` pads them (at least 20 wide, 3 spaces apart), the last one not.
fn table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for (i, title) in header.iter().enumerate() {
        widths[i] = rows.iter().map(|r| r[i].len()).chain([title.len()]).max().unwrap_or(0);
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == N {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}", width = (widths[i] + 3).max(20)));
            }
        }
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// Bytes in decimal units with three significant digits, as `crictl` prints them: `742kB`,
/// `1.24MB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    let decimals = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    let mut text = format!("{value:.decimals$}");
    if text.contains('.') {
        text = text.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{text}{}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_paths_or_unix_urls() {
        assert_eq!(
            parse_endpoint("/run/containerd/containerd.sock").unwrap(),
            Path::new("/run/containerd/containerd.sock")
        );
        assert_eq!(parse_endpoint("unix:///run/k3s/containerd.sock").unwrap(), Path::new("/run/k3s/containerd.sock"));
        let e = parse_endpoint("tcp://10.0.0.1:1234").unwrap_err();
        assert!(e.contains("tcp:// is not supported"), "{e}");
        assert!(parse_endpoint("unix://").is_err());
    }

    #[test]
    fn sizes_read_like_crictls() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(742_000), "742kB");
        assert_eq!(human_size(1_240_000), "1.24MB");
        assert_eq!(human_size(12_300_000), "12.3MB");
        assert_eq!(human_size(2_000_000_000), "2GB");
    }

    #[test]
    fn tags_split_after_the_last_slash() {
        assert_eq!(
            split_tag("docker.io/library/busybox:latest"),
            ("docker.io/library/busybox".into(), "latest".into())
        );
        assert_eq!(split_tag("host:5000/app:1"), ("host:5000/app".into(), "1".into()));
        assert_eq!(split_tag("host:5000/app"), ("host:5000/app".into(), "<none>".into()));
    }

    #[test]
    fn the_table_pads_like_crictl() {
        let rows = [["registry.k8s.io/pause".to_string(), "3.10".into(), "0123456789abc".into(), "800B".into()]];
        let text = table(&["IMAGE", "TAG", "IMAGE ID", "SIZE"], &rows);
        assert_eq!(
            text,
            "IMAGE                   TAG                 IMAGE ID            SIZE\n\
             registry.k8s.io/pause   3.10                0123456789abc       800B\n"
        );
    }
}
