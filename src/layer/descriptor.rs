//! What the layer stage is given about one layer: plain values, with no
//! knowledge of where the image came from.

use serde::Serialize;

use crate::digest::Digest;
use crate::layer::toc_reference::TocReference;
use crate::layer::Compression;

/// One layer of the chosen manifest, with what is needed to index it.
#[derive(Clone, Debug, Serialize)]
pub struct LayerInfo {
    /// 0 is the bottom layer.
    pub position: usize,
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub compression: Compression,
    pub diff_id: Digest,
    /// The table of contents the descriptor's annotations vouch for
    /// (eStargz, zstd:chunked), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub toc: Option<TocReference>,
}
