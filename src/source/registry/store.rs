//! A repository in a registry as an [`ImageStore`].
//!
//! The store's "index" is the document the reference names (by tag or
//! digest) as the one entry of a made-up index, tagged with the reference's
//! tag, so that image resolution (platform choice, nested indexes) runs as
//! for a layout. Manifests and indexes come from `/manifests/`, everything
//! else from `/blobs/`; documents are kept in memory once read.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use crate::blob::{Blob, MemoryBlob};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::oci::manifest::{Descriptor, Index};
use crate::source::reference::Selector;
use crate::source::registry::blob::RegistryBlob;
use crate::source::registry::client::Client;
use crate::source::registry::index_artifact::{self, PublishedIndex};
use crate::source::registry::reference::RepositoryName;
use crate::source::registry::settings::Settings;
use crate::source::ImageStore;

const REF_NAME: &str = "org.opencontainers.image.ref.name";

pub struct RegistryStore {
    client: Arc<Client>,
    selector: Selector,
    documents: Mutex<HashMap<Digest, Blob>>,
}

impl RegistryStore {
    pub fn open(
        name: &RepositoryName,
        selector: &Selector,
        settings: &Settings,
    ) -> Result<RegistryStore> {
        Ok(RegistryStore {
            client: Client::connect(name, settings)?,
            selector: selector.clone(),
            documents: Mutex::new(HashMap::new()),
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
        let (reference, expected, tag) = match &self.selector {
            Selector::Digest(d) => (d.to_string(), Some(*d), None),
            Selector::Tag(t) => (t.clone(), None, Some(t.clone())),
            Selector::Default => ("latest".to_string(), None, Some("latest".to_string())),
        };
        let document = self.client.manifest(&reference, expected.as_ref())?;
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
