//! An OCI image layout on disk: `oci-layout`, `index.json`, `blobs/sha256/…`.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use std::sync::{Arc, OnceLock};

use crate::blob::{Blob, FileRange};
use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::oci::manifest::Index;
use crate::source::registry::settings::Settings;
use crate::source::store::{parse_json, ImageStore, MAX_JSON_BYTES};

/// The `index.json` annotation of a layout whose missing blobs are read
/// from another image: what `bundle` writes to add a layer on top of an
/// image it cannot link blob by blob (an archive member, a registry blob).
/// The value is a reference pinned to a manifest; blobs read there are
/// still checked against their digests.
pub const BLOBS_FROM: &str = "io.ocimount.blobs-from";

/// The directory name of the layout a bundle writes (the only one where
/// `BLOBS_FROM` is honoured).
pub const BUNDLE_LAYOUT_DIR: &str = ".ocimount-image";

#[derive(Clone)]
pub struct Layout {
    root: PathBuf,
    /// Where missing blobs are read: the store `BLOBS_FROM` names, opened
    /// on first need (none when the layout has no such annotation).
    blobs_from: Arc<OnceLock<Option<Arc<dyn ImageStore>>>>,
    /// How that store, if a registry, is spoken to.
    settings: Settings,
}

impl std::fmt::Debug for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layout").field("root", &self.root).finish()
    }
}

impl Layout {
    /// A layout whose `BLOBS_FROM` store (if any) is read with the default
    /// registry settings.
    pub fn open(root: &Path) -> Result<Layout> {
        Layout::open_with(root, Settings::default())
    }

    pub fn open_with(root: &Path, settings: Settings) -> Result<Layout> {
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
            blobs_from: Arc::new(OnceLock::new()),
            settings,
        })
    }

    /// The store missing blobs come from, if `index.json` names one.
    fn blobs_from(&self) -> Result<Option<Arc<dyn ImageStore>>> {
        if let Some(store) = self.blobs_from.get() {
            return Ok(store.clone());
        }
        let path = self.root.join("index.json");
        let bytes = read_bounded(&path, MAX_JSON_BYTES)?;
        let value: serde_json::Value = parse_json("index", &path.display().to_string(), &bytes)?;
        let store = match value
            .pointer(&format!("/annotations/{BLOBS_FROM}"))
            .and_then(|v| v.as_str())
        {
            None => None,
            Some(reference) => {
                use crate::source::reference::Transport;
                use crate::source::selector::Selector;
                // Only the layout a bundle writes, naming an image pinned
                // to its manifest, in a registry or a regular archive file:
                // a layout from elsewhere does not send ocimount to a
                // registry or to another file.
                let refuse = |why: &str| {
                    Err(Error::NotALayout(
                        self.root.clone(),
                        format!("{BLOBS_FROM} {reference:?}: {why}"),
                    ))
                };
                if self.root.file_name() != Some(std::ffi::OsStr::new(BUNDLE_LAYOUT_DIR)) {
                    return refuse("honoured only in a bundle's own layout");
                }
                let parsed = crate::source::ImageRef::parse(reference)?;
                if !matches!(parsed.selector, Selector::Digest(_)) {
                    return refuse("not pinned to a manifest digest");
                }
                match &parsed.transport {
                    Transport::Registry(_) => {}
                    Transport::OciArchive(p) | Transport::DockerArchive(p) | Transport::Path(p)
                        if std::fs::metadata(p).is_ok_and(|m| m.is_file()) => {}
                    _ => return refuse("neither a registry image nor an archive file"),
                }
                Some(parsed.open_store(&self.settings)?)
            }
        };
        Ok(self.blobs_from.get_or_init(|| store).clone())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs").join("sha256").join(digest.hex())
    }

    /// Open a blob and check its size against the descriptor's.
    pub fn open_blob(&self, digest: &Digest, expected_size: Option<u64>) -> Result<FileRange> {
        let path = self.blob_path(digest);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::MissingBlob {
                    digest: *digest,
                    location: self.root.display().to_string(),
                })
            }
            Err(e) => return Err(Error::io(path, e)),
        };
        let actual = file.metadata().at(&path)?.len();
        if let Some(expected) = expected_size.filter(|&e| e != actual) {
            return Err(Error::BlobSize {
                digest: *digest,
                expected,
                actual,
            });
        }
        Ok(FileRange::whole(file, path, *digest, actual))
    }
}

impl ImageStore for Layout {
    fn index(&self) -> Result<Index> {
        let path = self.root.join("index.json");
        let bytes = read_bounded(&path, MAX_JSON_BYTES)?;
        parse_json("index", &path.display().to_string(), &bytes)
    }

    fn blob(&self, digest: &Digest, size: Option<u64>) -> Result<Blob> {
        match self.open_blob(digest, size) {
            Err(Error::MissingBlob { .. }) if self.blobs_from()?.is_some() => {
                let store = self.blobs_from()?.expect("checked above");
                store.blob(digest, size)
            }
            other => Ok(Arc::new(other?)),
        }
    }

    fn index_location(&self) -> String {
        self.root.join("index.json").display().to_string()
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
