//! A repository in a registry as an [`ImageStore`].
//!
//! The store's "index" is the document the reference names (by tag or
//! digest) as the one entry of a made-up index, tagged with the reference's
//! tag, so that image resolution (platform choice, nested indexes) runs as
//! for a layout. Manifests and indexes come from `/manifests/`, everything
//! else from `/blobs/`; documents are kept in memory once read.
//!
//! Where the repository is read from is registries.conf's to say (see
//! `registries_conf`): with mirrors, each source is tried in order and the
//! first that answers the manifest request is the store's for everything
//! (a source that cannot be reached, or has no such manifest, gives way to
//! the next).
//!
//! With a documents directory (`Settings::documents`, the cache's), a
//! manifest or config asked for by digest is read from there when its
//! bytes hash to that digest, and [`ImageStore::keep`] writes the ones
//! image resolution verified: a mount's daemon, opening the image pinned
//! to the manifest its parent resolved, makes no request for either. A
//! file there that does not hash to its name is ignored (and replaced once
//! the document is fetched again).

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::blob::{Blob, MemoryBlob};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::limits::MAX_JSON_BYTES;
use crate::oci::manifest::{Descriptor, Index};
use crate::oci::media;
use crate::source::registry::blob::RegistryBlob;
use crate::source::registry::client::{Client, Document};
use crate::source::registry::index_artifact;
use crate::source::registry::reference::RepositoryName;
use crate::source::registry::registries_conf::RefKind;
use crate::source::registry::settings::Settings;
use crate::source::selector::Selector;
use crate::source::store::PublishedIndex;
use crate::source::ImageStore;

const REF_NAME: &str = "org.opencontainers.image.ref.name";

pub struct RegistryStore {
    client: Arc<Client>,
    selector: Selector,
    documents: Mutex<HashMap<Digest, Blob>>,
    /// The document the selector names, when choosing a source fetched it.
    top: Mutex<Option<Document>>,
    /// Manifests and configs verified before, by digest (see the module
    /// documentation).
    kept: Option<PathBuf>,
}

/// What the selector asks the registry for: the reference, the digest the
/// answer must have, and the tag to label it with.
fn top_reference(selector: &Selector) -> (String, Option<Digest>, Option<String>) {
    match selector {
        Selector::Digest(d) => (d.to_string(), Some(*d), None),
        Selector::Tag(t) => (t.clone(), None, Some(t.clone())),
        Selector::Default => ("latest".to_string(), None, Some("latest".to_string())),
    }
}

/// An error's reason, without the registry's name when it names one.
fn reason(e: &Error) -> String {
    match e {
        Error::Registry { reason, .. } => reason.clone(),
        other => other.to_string(),
    }
}

impl RegistryStore {
    /// Open `name` where registries.conf says to read it from: a blocked
    /// name is refused; one source is connected to; of several (mirrors,
    /// then the primary location), the first that answers the manifest
    /// request is used.
    pub fn open(
        name: &RepositoryName,
        selector: &Selector,
        settings: &Settings,
    ) -> Result<RegistryStore> {
        let kind = match selector {
            Selector::Digest(_) => RefKind::Digest,
            Selector::Tag(_) | Selector::Default => RefKind::Tag,
        };
        let sources = settings.pull_sources(name, kind)?;
        let store = |client, top| RegistryStore {
            client,
            selector: selector.clone(),
            documents: Mutex::new(HashMap::new()),
            top: Mutex::new(top),
            kept: settings.documents.clone(),
        };
        if let [only] = sources.as_slice() {
            if only.name != *name {
                tracing::debug!("{name} is read from {only} (registries.conf)");
            }
            let client = Client::connect(&only.name, &settings.for_source(only))?;
            return Ok(store(client, None));
        }
        let (reference, expected, _) = top_reference(selector);
        let mut failures = Vec::new();
        for (i, source) in sources.iter().enumerate() {
            let attempt =
                Client::connect(&source.name, &settings.for_source(source)).and_then(|client| {
                    let document = client.manifest(&reference, expected.as_ref())?;
                    Ok((client, document))
                });
            match attempt {
                Ok((client, document)) => {
                    tracing::debug!("{name} is read from {source} (registries.conf)");
                    return Ok(store(client, Some(document)));
                }
                Err(e) => {
                    let why = reason(&e);
                    let last = i + 1 == sources.len();
                    // A mirror without the image is ordinary (a partial
                    // mirror, a pull-through cache); one that fails is not.
                    if !last && matches!(e, Error::NoManifest(_)) {
                        tracing::info!("{source}: {why}; trying the next source");
                    } else if !last {
                        tracing::warn!("{source}: {why}; trying the next source");
                    }
                    failures.push(format!("{source}: {why}"));
                }
            }
        }
        let what = match selector {
            Selector::Digest(d) => format!("manifest {d}"),
            _ => format!("tag {reference:?}"),
        };
        Err(Error::Registry {
            registry: name.to_string(),
            reason: format!(
                "no source registries.conf gives could serve {what}: {}",
                failures.join("; ")
            ),
        })
    }

    pub fn client(&self) -> &Arc<Client> {
        &self.client
    }

    fn remember(&self, digest: Digest, bytes: Vec<u8>) -> Blob {
        let blob: Blob = Arc::new(MemoryBlob::new(
            bytes,
            format!("docker://{}@{digest}", self.client.name()),
        ));
        self.documents
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(digest, blob.clone());
        blob
    }

    fn known(&self, digest: &Digest) -> Option<Blob> {
        self.documents
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(digest)
            .cloned()
    }

    /// The bytes of `digest` from the documents directory, when they are
    /// there, of `size` (when given) and hash to it; anything else there
    /// (damaged, planted, a link) is ignored and the caller fetches.
    fn stored(&self, digest: &Digest, size: Option<u64>) -> Option<Vec<u8>> {
        let path = self.kept.as_ref()?.join(digest.hex());
        let bytes = match read_kept(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!("{}: {e}; fetching {digest} again", path.display());
                return None;
            }
        };
        let actual = Digest::of(&bytes);
        let check = match size {
            _ if actual != *digest => Err(format!("its bytes hash to {actual}")),
            Some(size) if size != bytes.len() as u64 => {
                Err(format!("{} bytes, not {size}", bytes.len()))
            }
            _ => Ok(()),
        };
        match check {
            Ok(()) => {
                tracing::debug!("{digest} read from {}", path.display());
                Some(bytes)
            }
            Err(why) => {
                tracing::warn!(
                    "{}: {why}; ignored, fetching {digest} from the registry",
                    path.display()
                );
                None
            }
        }
    }
}

/// A kept document's bytes, at most one past the bound: no link is
/// followed, and a FIFO planted there fails instead of blocking.
fn read_kept(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let mut bytes = Vec::new();
    file.take(MAX_JSON_BYTES + 1).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The media type of a document read back by digest: its own `mediaType`
/// (what the digest covers), else the OCI type its shape says (an OCI
/// manifest or index may leave `mediaType` out; Docker's never do).
fn kept_media_type(bytes: &[u8]) -> String {
    let value = serde_json::from_slice::<serde_json::Value>(bytes).unwrap_or_default();
    match value.get("mediaType").and_then(|m| m.as_str()) {
        Some(m) if !m.is_empty() => m.to_string(),
        _ if value.get("manifests").is_some() => media::OCI_INDEX.to_string(),
        _ => media::OCI_MANIFEST.to_string(),
    }
}

fn check_size(blob: &Blob, size: Option<u64>) -> Result<()> {
    match size {
        Some(expected) if expected != blob.size() => Err(Error::BlobSize {
            digest: blob.digest(),
            expected,
            actual: blob.size(),
        }),
        _ => Ok(()),
    }
}

impl ImageStore for RegistryStore {
    fn index(&self) -> Result<Index> {
        let (reference, expected, tag) = top_reference(&self.selector);
        let fetched = self.top.lock().unwrap_or_else(|p| p.into_inner()).take();
        let kept = expected.and_then(|d| Some((d, self.stored(&d, None)?)));
        let document = match (fetched, kept) {
            (Some(document), _) => document,
            (None, Some((digest, bytes))) => Document {
                media_type: kept_media_type(&bytes),
                digest,
                bytes,
            },
            (None, None) => self.client.manifest(&reference, expected.as_ref())?,
        };
        let size = document.bytes.len() as u64;
        let digest = document.digest;
        let media_type = document.media_type.clone();
        self.remember(digest, document.bytes);
        let mut annotations = BTreeMap::new();
        if let Some(tag) = tag {
            annotations.insert(REF_NAME.to_string(), tag);
        }
        Ok(Index {
            media_type: None,
            manifests: vec![Descriptor {
                media_type,
                digest,
                size,
                platform: None,
                annotations,
            }],
        })
    }

    fn blob(&self, digest: &Digest, size: Option<u64>) -> Result<Blob> {
        if let Some(blob) = self.known(digest) {
            check_size(&blob, size)?;
            return Ok(blob);
        }
        // A config kept before (only a document's size is looked up).
        if let Some(size) = size.filter(|s| *s <= MAX_JSON_BYTES) {
            if let Some(bytes) = self.stored(digest, Some(size)) {
                return Ok(self.remember(*digest, bytes));
            }
        }
        let size = match size {
            Some(size) => size,
            None => self
                .client
                .blob_size(digest)?
                .ok_or_else(|| Error::MissingBlob {
                    digest: *digest,
                    location: format!("docker://{}", self.client.name()),
                })?,
        };
        Ok(Arc::new(RegistryBlob::new(
            self.client.clone(),
            *digest,
            size,
        )))
    }

    fn document(&self, digest: &Digest, size: Option<u64>) -> Result<Blob> {
        if let Some(blob) = self.known(digest) {
            check_size(&blob, size)?;
            return Ok(blob);
        }
        let bytes = match self.stored(digest, size) {
            Some(bytes) => bytes,
            None => {
                self.client
                    .manifest(&digest.to_string(), Some(digest))?
                    .bytes
            }
        };
        let blob = self.remember(*digest, bytes);
        check_size(&blob, size)?;
        Ok(blob)
    }

    fn published_indexes(&self, manifest: &Digest) -> Result<Vec<PublishedIndex>> {
        index_artifact::find(&self.client, manifest)
    }

    fn fetch_published_index(&self, index: &PublishedIndex, limit: u64) -> Result<Vec<u8>> {
        index_artifact::fetch(&self.client, index, limit)
    }

    fn index_location(&self) -> String {
        format!("docker://{}", self.client.name())
    }

    fn keep(&self, digest: &Digest, bytes: &[u8]) {
        let Some(dir) = &self.kept else { return };
        let path = dir.join(digest.hex());
        if Digest::of(bytes) != *digest || read_kept(&path).is_ok_and(|kept| kept == bytes) {
            return;
        }
        if let Err(e) = crate::sys::atomic::write_file(&path, bytes, false) {
            tracing::debug!("cannot keep {digest}: {e}");
        }
    }
}
