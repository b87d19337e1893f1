//! Publishing an image's layer indexes to its registry as the index
//! artifact (see `source::registry::index_artifact`): what `index push`
//! does, and what `mount --publish-index` and `run --publish-index` do when
//! they index an image that has no artifact yet.

use crate::cache::Cache;
use crate::digest::Digest;
use crate::error::{IoContext, Result};
use crate::image::Image;
use crate::layer::layer_index::LayerIndex;
use crate::layer::spans::SpanStart;
use crate::oci::manifest::Descriptor;
use crate::source::reference::Transport;
use crate::source::registry::client::Client;
use crate::source::registry::index_artifact::{self, LocalIndex, Pushed};
use crate::source::registry::settings::Settings;

/// A layer whose index is not published, and why.
pub struct LeftOut {
    /// 0-based.
    pub position: usize,
    pub digest: Digest,
    pub reason: &'static str,
}

/// What [`publish`] did.
pub struct Publication {
    /// The repository pushed to (registries.conf's primary location).
    pub target: String,
    pub pushed: Pushed,
    pub published: usize,
    pub left_out: Vec<LeftOut>,
}

/// Why a materialised layer is left out, for the report.
pub const ONLY_A_FULL_PASS: &str = "only a full pass can fill it (one zstd frame, or a deflate \
     block longer than a span), so every node indexes it";
const NOT_BUILT_HERE: &str =
    "its index here came from a published artifact, not from a full pass here";

/// Publish the indexes `indexes` (one per layer of `image`, in order, as
/// the cache holds them) that a full pass here built and that another node
/// can use alone, as an artifact of the image manifest, in the primary
/// location of the image's repository (never a mirror).
pub fn publish(
    image: &Image,
    indexes: &[&LayerIndex],
    cache: &Cache,
    settings: &Settings,
) -> Result<Publication> {
    let Transport::Registry(name) = &image.reference.transport else {
        return Err(crate::error::Error::BadArgument(
            "layer indexes are published to a registry; give a docker:// image".to_string(),
        ));
    };
    let mut local = Vec::new();
    let mut left_out = Vec::new();
    for (layer, index) in image.layers.iter().zip(indexes) {
        let reason = if index
            .spans
            .iter()
            .any(|s| matches!(s.start, SpanStart::Materialized { .. }))
        {
            Some(ONLY_A_FULL_PASS)
        } else if !cache.built_here(layer) {
            Some(NOT_BUILT_HERE)
        } else {
            None
        };
        if let Some(reason) = reason {
            left_out.push(LeftOut {
                position: layer.position,
                digest: layer.digest,
                reason,
            });
            continue;
        }
        let path = cache.layer_dir(layer).join(crate::cache::paths::INDEX);
        let bytes = std::fs::read(&path).at(&path)?;
        local.push(LocalIndex {
            layer: layer.digest,
            bytes,
        });
    }
    let manifest = image.store.document(&image.manifest_digest, None)?;
    let subject = Descriptor {
        media_type: image.manifest_media_type.clone(),
        digest: image.manifest_digest,
        size: crate::blob::BlobSource::size(&*manifest),
        platform: None,
        annotations: Default::default(),
    };
    let target = settings.push_source(name)?;
    let client = Client::connect(&target.name, &settings.for_source(&target))?;
    let pushed = index_artifact::push(&client, &subject, &local)?;
    Ok(Publication {
        target: target.name.to_string(),
        pushed,
        published: local.len(),
        left_out,
    })
}
