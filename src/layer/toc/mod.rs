//! Layers that carry their own table of contents (eStargz, zstd:chunked),
//! indexed from it instead of by a full pass: the TOC is fetched alone,
//! checked against the digest the manifest's annotation gives, and turned
//! into the cache's own index, whose spans are the TOC's chunks and whose
//! span digests are its chunk digests. No other byte of the layer is read
//! until a file is, but for the zstd:chunked chunks longer than a span,
//! which are fetched and checked whole at once (`large_chunks`).

pub mod agreement;
mod entries;
mod estargz;
mod large_chunks;
mod rfc3339;
mod zstd_chunked;

use crate::blob::BlobSource;
use crate::digest::Digest;
use crate::layer::layer_index::{BuiltFrom, LayerIndex};
use crate::layer::LayerInfo;

use crate::layer::toc_reference::TocReference;
/// The index a TOC's JSON describes, once it has been fetched and checked
/// (for the fuzzer: `fuzz/harness.rs`).
pub use entries::index_from_toc as index_from_toc_json;
pub use entries::{LargeChunk, TocIndex, ESTARGZ_OWN_ENTRIES};

/// Why a layer's TOC was not used (the layer is then indexed by a full
/// pass, which trusts nothing the TOC said).
#[derive(Debug, thiserror::Error)]
pub enum TocError {
    #[error("cannot read it from the blob: {0}")]
    Read(#[source] std::io::Error),
    #[error("its digest is {actual}, the manifest's annotation says {expected}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("it is {size} bytes, over the {limit}-byte limit")]
    TooLarge { size: u64, limit: u64 },
    #[error("it is malformed: {0}")]
    Malformed(String),
    #[error("{0} is not supported")]
    Unsupported(String),
}

/// The index of `layer`, made from the TOC `reference` names.
pub fn index_from_toc(
    layer: &LayerInfo,
    reference: &TocReference,
    blob: &dyn BlobSource,
) -> Result<LayerIndex, TocError> {
    match reference {
        TocReference::Estargz { json_digest } => {
            let (json, toc_offset) = estargz::fetch(blob, json_digest)?;
            // Large chunks are zstd:chunked's only: eStargz's are refused.
            entries::index_from_toc(layer, &json, BuiltFrom::EstargzToc, toc_offset)
                .map(|built| built.index)
        }
        TocReference::ZstdChunked {
            compressed_digest,
            offset,
            length,
            json_length,
        } => {
            let (json, data_end) =
                zstd_chunked::fetch(blob, compressed_digest, *offset, *length, *json_length)?;
            let mut built =
                entries::index_from_toc(layer, &json, BuiltFrom::ZstdChunkedToc, data_end)?;
            large_chunks::hash_spans(&mut built.index, &built.large_chunks, blob)?;
            Ok(built.index)
        }
    }
}
