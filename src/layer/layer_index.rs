//! What indexing a layer yields, whichever way it was made: a full pass
//! (`index`) or a table of contents (`toc`).

use crate::digest::Digest;
use crate::layer::spans::Span;
use crate::layer::spans::SpanStart;
use crate::layer::Compression;
use crate::tar::entry::TarEntry;

/// Everything we know about one layer after the pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerIndex {
    pub digest: Digest,
    pub diff_id: Digest,
    pub compression: Compression,
    pub compressed_size: u64,
    pub uncompressed_size: u64,
    pub entries: Vec<TarEntry>,
    /// Shared, not copied, by the readers: a gzip layer's spans hold its
    /// checkpoint windows (sparse: about 2 KiB each, up to megabytes a layer).
    pub spans: std::sync::Arc<[Span]>,
    /// What made the index, which decides how its spans are checked.
    pub built_from: BuiltFrom,
    /// How many of the first spans hold the files an eStargz producer put
    /// before `.prefetch.landmark` (the files it expects to be read first):
    /// fetched in the background after a mount. 0 for other layers.
    pub prefetch_spans: u32,
}

/// What an index was made from.
///
/// A full pass checks the whole blob against its digest and the whole tar
/// against its diff_id, so a local blob's damage is the CRC-32's to find
/// afterwards, and only remote bytes are hashed. An index made from a
/// table of contents (`crate::layer::toc`) has checked nothing but the
/// TOC: its spans' SHA-256 are the TOC's chunk digests, and every span is
/// hashed before it is served, wherever the blob is (the CRC-32 of such a
/// span is unknown, and 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BuiltFrom {
    #[default]
    FullPass,
    EstargzToc,
    ZstdChunkedToc,
}

impl BuiltFrom {
    pub fn tag(self) -> u8 {
        match self {
            BuiltFrom::FullPass => 0,
            BuiltFrom::EstargzToc => 1,
            BuiltFrom::ZstdChunkedToc => 2,
        }
    }

    pub fn from_tag(tag: u8) -> Option<BuiltFrom> {
        Some(match tag {
            0 => BuiltFrom::FullPass,
            1 => BuiltFrom::EstargzToc,
            2 => BuiltFrom::ZstdChunkedToc,
            _ => return None,
        })
    }

    /// Whether every span is hashed before it is served, local or remote.
    pub fn hashes_every_span(self) -> bool {
        self != BuiltFrom::FullPass
    }

    /// Whether a span starting with `start` in an index built this way has
    /// its SHA-256 over its compressed range (`spans::compressed_range`)
    /// rather than its decoded bytes. A full pass hashes what a remote read
    /// fetches, so that those bytes are checked before they are inflated
    /// (and there are about a third as many); a table of contents vouches
    /// for decoded chunks only. A `Blob` span's bytes are both, and a
    /// `Materialized` span is decoded from its anchor's range, so both
    /// keep a digest of their decoded bytes.
    pub fn hashes_compressed_range(self, start: &SpanStart) -> bool {
        self == BuiltFrom::FullPass
            && matches!(
                start,
                SpanStart::GzipMember | SpanStart::GzipBlock { .. } | SpanStart::ZstdFrame { .. }
            )
    }

    pub fn describe(self) -> &'static str {
        match self {
            BuiltFrom::FullPass => "a full pass",
            BuiltFrom::EstargzToc => "its eStargz table of contents",
            BuiltFrom::ZstdChunkedToc => "its zstd:chunked table of contents",
        }
    }
}
