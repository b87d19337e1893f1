//! Where an image's documents and blobs are kept: an OCI layout directory,
//! an `oci-archive` or `docker save` tarball, or a registry. Image
//! resolution sees only this trait; the layer stage sees only the blobs.

use serde::de::DeserializeOwned;

use crate::blob::Blob;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::oci::manifest::Index;

pub use crate::limits::MAX_JSON_BYTES;

/// One layer's published index: which layer, and the blob that holds it.
#[derive(Clone, Debug)]
pub struct PublishedIndex {
    pub layer: Digest,
    pub blob: Digest,
    pub size: u64,
}

pub trait ImageStore: Send + Sync {
    /// The store's top-level index: `index.json`, or one made from an
    /// archive's `manifest.json`.
    fn index(&self) -> Result<Index>;

    /// The blob `digest`; when `size` is given, a blob of another size is
    /// an error. A missing blob is [`Error::MissingBlob`].
    fn blob(&self, digest: &Digest, size: Option<u64>) -> Result<Blob>;

    /// A manifest or index `digest`: a registry serves these from another
    /// endpoint than blobs; everywhere else they are blobs.
    fn document(&self, digest: &Digest, size: Option<u64>) -> Result<Blob> {
        self.blob(digest, size)
    }

    /// Where the top-level index was read, for messages (`DIR/index.json`).
    fn index_location(&self) -> String;

    /// Layer indexes published beside the image manifest `manifest` (a
    /// registry's index artifact, see `registry::index_artifact`).
    fn published_indexes(&self, _manifest: &Digest) -> Result<Vec<PublishedIndex>> {
        Ok(Vec::new())
    }

    /// The bytes of one published index, digest-checked and at most
    /// `limit` bytes (packed or not); untrusted still.
    fn fetch_published_index(&self, index: &PublishedIndex, _limit: u64) -> Result<Vec<u8>> {
        Err(Error::Internal(format!(
            "this store publishes no index (layer {})",
            index.layer
        )))
    }

    /// `bytes`, read and verified against `digest` (a manifest or config):
    /// a store that can keep them for a later open by digest does (a
    /// registry's, in the cache's documents directory); others need not.
    fn keep(&self, _digest: &Digest, _bytes: &[u8]) {}

    /// A tag as the store spells its names (`docker save` archives name
    /// images `docker.io/library/busybox:latest`, whatever the user typed).
    fn normalize_tag(&self, tag: &str) -> String {
        tag.to_string()
    }
}

/// Read a small JSON blob, verify its size and digest, and parse it.
pub fn json_blob<T: DeserializeOwned>(
    store: &dyn ImageStore,
    what: &'static str,
    digest: &Digest,
    size: u64,
) -> Result<(T, Vec<u8>)> {
    if size > MAX_JSON_BYTES {
        let location = store
            .blob(digest, None)
            .map_or_else(|_| format!("blob {digest}"), |b| b.location());
        return Err(Error::BadJson {
            what,
            path: location.into(),
            reason: format!("{size} bytes is larger than the {MAX_JSON_BYTES}-byte limit"),
        });
    }
    let blob = if what == "config" {
        store.blob(digest, Some(size))?
    } else {
        store.document(digest, Some(size))?
    };
    let mut bytes = vec![0u8; size as usize];
    blob.read_exact_at(&mut bytes, 0)
        .map_err(|e| Error::io(blob.location(), e))?;
    let actual = Digest::of(&bytes);
    if actual != *digest {
        return Err(Error::DigestMismatch {
            what: what.to_string(),
            digest: *digest,
            actual,
        });
    }
    let value = parse_json(what, &blob.location(), &bytes)?;
    Ok((value, bytes))
}

pub fn parse_json<T: DeserializeOwned>(
    what: &'static str,
    location: &str,
    bytes: &[u8],
) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::BadJson {
        what,
        path: location.into(),
        reason: e.to_string(),
    })
}
