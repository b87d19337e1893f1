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

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use crate::blob::{Blob, MemoryBlob};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::oci::manifest::{Descriptor, Index};
use crate::source::reference::Selector;
use crate::source::registry::blob::RegistryBlob;
use crate::source::registry::client::{Client, Document};
use crate::source::registry::index_artifact::{self, PublishedIndex};
use crate::source::registry::reference::RepositoryName;
use crate::source::registry::registries_conf::RefKind;
use crate::source::registry::settings::Settings;
use crate::source::ImageStore;

const REF_NAME: &str = "org.opencontainers.image.ref.name";

pub struct RegistryStore {
    client: Arc<Client>,
    selector: Selector,
    documents: Mutex<HashMap<Digest, Blob>>,
    /// The document the selector names, when choosing a source fetched it.
    top: Mutex<Option<Document>>,
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
        let document = match fetched {
            Some(document) => document,
            None => self.client.manifest(&reference, expected.as_ref())?,
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
        let document = self.client.manifest(&digest.to_string(), Some(digest))?;
        let blob = self.remember(*digest, document.bytes);
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
}
