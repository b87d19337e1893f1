//! The crate's one error type. Every variant names the file, layer or path it
//! is about, so a user can act on the message without a debugger.

use std::path::PathBuf;

use crate::digest::{Digest, DigestError};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("image archive {path}: {reason}")]
    Archive { path: PathBuf, reason: String },

    #[error("registry {registry}: {reason}")]
    Registry { registry: String, reason: String },

    #[error("{0} is not an OCI image layout: {1}")]
    NotALayout(PathBuf, String),

    #[error("invalid image reference {reference:?}: {reason}")]
    BadReference { reference: String, reason: String },

    #[error(transparent)]
    Digest(#[from] DigestError),

    #[error("{what} {path}: {reason}")]
    BadJson {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },

    #[error("blob {digest} is missing from {location}")]
    MissingBlob { digest: Digest, location: String },

    #[error("blob {digest}: size is {actual} bytes, the descriptor says {expected}")]
    BlobSize {
        digest: Digest,
        expected: u64,
        actual: u64,
    },

    #[error("{what} {digest}: sha256 mismatch: expected {digest}, got {actual}")]
    DigestMismatch {
        what: String,
        digest: Digest,
        actual: Digest,
    },

    #[error("tag {tag:?} not found in {index} (tags present: {available})")]
    TagNotFound {
        tag: String,
        index: String,
        available: String,
    },

    #[error("{0}")]
    NoManifest(String),

    #[error("verification failed, {} problem(s):\n  {}", .0.len(), .0.join("\n  "))]
    VerifyFailed(Vec<String>),

    #[error("no manifest for platform {wanted}; the image offers: {offered}")]
    NoPlatform { wanted: String, offered: String },

    #[error(
        "invalid platform {0:?}: expected os/arch[/variant], e.g. linux/arm64 or linux/arm/v7"
    )]
    BadPlatform(String),

    #[error("index nesting deeper than {0} levels or a loop at {1}")]
    IndexLoop(usize, Digest),

    #[error("unsupported media type {media_type:?} for {what} {digest}")]
    UnsupportedMediaType {
        what: &'static str,
        media_type: String,
        digest: Digest,
    },

    #[error("layer {layer} ({digest}): {reason}")]
    Layer {
        layer: usize,
        digest: Digest,
        reason: String,
    },

    #[error("layer {layer} ({digest}): entry {path:?}: {reason}")]
    LayerEntry {
        layer: usize,
        digest: Digest,
        path: String,
        reason: String,
    },

    #[error(
        "the image config lists {diff_ids} diff_id(s) but the manifest has {layers} layer(s) \
         (config {config}, manifest {manifest})"
    )]
    LayerCountMismatch {
        diff_ids: usize,
        layers: usize,
        config: Digest,
        manifest: Digest,
    },

    #[error("cache {path}: {reason}")]
    Cache { path: PathBuf, reason: String },

    #[error("{path}: no such file or directory in the image")]
    NotFound { path: String },

    #[error("{path}: {reason}")]
    BadPath { path: String, reason: String },

    #[error("{0}")]
    BadArgument(String),

    #[error("internal error: {0}")]
    Internal(String),

    #[error("layer {digest}: cannot fetch the data at uncompressed offset {offset}: {reason}")]
    SpanUnavailable {
        digest: Digest,
        offset: u64,
        reason: String,
    },

    #[error("layer {digest}: damaged data at uncompressed offset {offset}: {reason}")]
    DamagedSpan {
        digest: Digest,
        offset: u64,
        reason: String,
    },
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// The errno a filesystem caller should see for this error.
    pub fn errno(&self) -> i32 {
        match self {
            Error::NotFound { .. } => libc::ENOENT,
            Error::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            _ => libc::EIO,
        }
    }
}

/// Attach a path to an `io::Error`.
pub trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
