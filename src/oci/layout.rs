//! An OCI image layout on disk: `oci-layout`, `index.json`, `blobs/sha256/…`.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::oci::manifest::Index;

/// JSON documents larger than this are refused before they are read: real
/// manifests and configs are kilobytes, and a hostile one must not eat memory.
pub const MAX_JSON_BYTES: u64 = 8 << 20;

#[derive(Clone, Debug)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn open(root: &Path) -> Result<Layout> {
        let marker = root.join("oci-layout");
        let text = match std::fs::read(&marker) {
            Ok(t) => t,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                let why = if root.is_dir() {
                    "it has no oci-layout file".to_string()
                } else if root.exists() {
                    "it is not a directory".to_string()
                } else {
                    "no such directory".to_string()
                };
                return Err(Error::NotALayout(root.to_path_buf(), why));
            }
            Err(e) => return Err(Error::io(marker, e)),
        };
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct OciLayoutFile {
            image_layout_version: String,
        }
        let parsed: OciLayoutFile = serde_json::from_slice(&text).map_err(|e| Error::BadJson {
            what: "oci-layout",
            path: marker.clone(),
            reason: e.to_string(),
        })?;
        if !parsed.image_layout_version.starts_with("1.") {
            return Err(Error::NotALayout(
                root.to_path_buf(),
                format!(
                    "unsupported imageLayoutVersion {:?}",
                    parsed.image_layout_version
                ),
            ));
        }
        Ok(Layout {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs").join("sha256").join(digest.hex())
    }

    /// Open a blob and check its size against the descriptor's.
    pub fn open_blob(&self, digest: &Digest, expected_size: u64) -> Result<File> {
        let path = self.blob_path(digest);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::MissingBlob {
                    digest: *digest,
                    layout: self.root.clone(),
                })
            }
            Err(e) => return Err(Error::io(path, e)),
        };
        let actual = file.metadata().at(&path)?.len();
        if actual != expected_size {
            return Err(Error::BlobSize {
                digest: *digest,
                expected: expected_size,
                actual,
            });
        }
        Ok(file)
    }

    pub fn index(&self) -> Result<Index> {
        let path = self.root.join("index.json");
        let bytes = read_bounded(&path, MAX_JSON_BYTES)?;
        parse_json("index", &path, &bytes)
    }

    /// Read a small JSON blob, verify its size and digest, and parse it.
    pub fn json_blob<T: DeserializeOwned>(
        &self,
        what: &'static str,
        digest: &Digest,
        size: u64,
    ) -> Result<(T, Vec<u8>)> {
        if size > MAX_JSON_BYTES {
            return Err(Error::BadJson {
                what,
                path: self.blob_path(digest),
                reason: format!("{size} bytes is larger than the {MAX_JSON_BYTES}-byte limit"),
            });
        }
        let file = self.open_blob(digest, size)?;
        let mut bytes = Vec::with_capacity(size as usize);
        file.take(size)
            .read_to_end(&mut bytes)
            .at(self.blob_path(digest))?;
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(Error::DigestMismatch {
                what: what.to_string(),
                digest: *digest,
                actual,
            });
        }
        let value = parse_json(what, &self.blob_path(digest), &bytes)?;
        Ok((value, bytes))
    }
}

fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::NotALayout(
                path.parent().unwrap_or(path).to_path_buf(),
                format!("{} is missing", path.display()),
            ))
        }
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes).at(path)?;
    if bytes.len() as u64 > limit {
        return Err(Error::BadJson {
            what: "index",
            path: path.to_path_buf(),
            reason: format!("larger than the {limit}-byte limit"),
        });
    }
    Ok(bytes)
}

fn parse_json<T: DeserializeOwned>(what: &'static str, path: &Path, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::BadJson {
        what,
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}
