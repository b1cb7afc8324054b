//! The one error type of the runtime room. Every message names the socket, file or binary it
//! is about, since a node may talk to more than one runtime.

use std::path::PathBuf;
use std::time::Duration;

/// What can go wrong talking to or supervising the container runtime.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    /// The socket did not answer a CRI `Version` call in time.
    #[error("CRI socket {} did not answer within {:.1}s: {last}", socket.display(), waited.as_secs_f64())]
    Unavailable { socket: PathBuf, waited: Duration, last: String },

    /// A CRI call was answered with an error.
    #[error("CRI {call} on {}: {} ({:?})", socket.display(), status.message(), status.code())]
    Call { socket: PathBuf, call: &'static str, status: Box<tonic::Status> },

    /// The runtime answered, but not as a CRI v1 runtime should.
    #[error("CRI socket {}: {message}", socket.display())]
    Protocol { socket: PathBuf, message: String },

    /// A path that must be written into a TOML file is not UTF-8.
    #[error("path {} is not UTF-8", path.display())]
    NonUtf8Path { path: PathBuf },

    /// A file or directory of the runtime could not be written or read.
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The containerd binary was not found or could not be started.
    #[error("starting {}: {source}", binary.display())]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// containerd exited before its socket answered.
    #[error("containerd ({}) exited with {status} before {} answered; see {}", binary.display(), socket.display(), log.display())]
    Exited { binary: PathBuf, socket: PathBuf, status: String, log: PathBuf },

    /// An image archive could not be imported.
    #[error("importing {}: {reason}", archive.display())]
    Import { archive: PathBuf, reason: String },

    /// Start-up was cancelled.
    #[error("cancelled while starting containerd for {}", socket.display())]
    Cancelled { socket: PathBuf },
}
