//! zstd:chunked chunks longer than a span, checked when the layer is
//! indexed.
//!
//! skopeo writes a long run of like bytes as one frame (a 30 MiB chunk for
//! a 30 MiB text file). Such a chunk cannot be one span: a span is decoded
//! whole into memory before it is served (`crate::limits::MAX_SPAN_BYTES`).
//! The TOC entries make it `FIXED_SPAN` pieces that name the frame's start
//! (`SpanStart::Materialized`, as a full pass does with a long zstd frame),
//! but the TOC gives a digest for the whole chunk only, and a span is served
//! only once its own bytes have matched a digest.
//!
//! So each large chunk is fetched once (one request for its frame), decoded
//! front to back, and its output is held to the chunk's digest; the SHA-256
//! of each piece is taken on the way and written into the index. Nothing of
//! the chunk is kept: a read of a piece decodes the frame again from its
//! start (`LayerReader::redecode_stretch`), keeping the pieces it passes, and
//! each is checked against the digest taken here. A frame that decodes to
//! other bytes, or to more or fewer than the TOC gives, sends the layer to a
//! full pass.

use std::io::Read;

use sha2::{Digest as _, Sha256};

use super::entries::LargeChunk;
use super::TocError;
use crate::blob::{BlobCursor, BlobSource};
use crate::digest::Digest;
use crate::layer::index::LayerIndex;
use crate::layer::spans::FIXED_SPAN;

/// Take the SHA-256 of every piece of every large chunk of `index`, after
/// checking each chunk whole against its digest.
pub fn hash_spans(
    index: &mut LayerIndex,
    chunks: &[LargeChunk],
    blob: &dyn BlobSource,
) -> Result<(), TocError> {
    if chunks.is_empty() {
        return Ok(());
    }
    let mut spans = index.spans.to_vec();
    let mut piece = vec![0u8; FIXED_SPAN as usize];
    for chunk in chunks {
        let what = || format!("the chunk at blob offset {}", chunk.in_offset);
        let bad = |reason: String| TocError::Malformed(format!("{}: {reason}", what()));
        blob.will_need(chunk.in_offset, chunk.in_len)
            .map_err(TocError::Read)?;
        let frame = BlobCursor::new(blob, chunk.in_offset).take(chunk.in_len);
        let mut decoder = zstd::stream::read::Decoder::new(frame)
            .map_err(TocError::Read)?
            .single_frame();
        let mut whole = Sha256::new();
        let pieces = spans
            .get_mut(chunk.first_span..chunk.first_span + chunk.spans)
            .ok_or_else(|| bad("its spans are not in the index".to_string()))?;
        for span in pieces {
            let out = piece
                .get_mut(..span.out_len as usize)
                .ok_or_else(|| bad(format!("a piece of {} bytes", span.out_len)))?;
            decoder.read_exact(out).map_err(|e| {
                bad(format!(
                    "its frame does not decode to the bytes the TOC gives: {e}"
                ))
            })?;
            whole.update(&*out);
            span.sha256 = Sha256::digest(&*out).into();
        }
        let mut more = [0u8; 1];
        if decoder.read(&mut more).unwrap_or(0) != 0 {
            return Err(bad(
                "its frame decodes to more bytes than the TOC gives".to_string()
            ));
        }
        let actual: [u8; 32] = whole.finalize().into();
        if actual != chunk.digest {
            return Err(bad(format!(
                "its bytes are {}, its chunkDigest says {}",
                Digest::from_bytes(actual),
                Digest::from_bytes(chunk.digest)
            )));
        }
    }
    index.spans = spans.into();
    Ok(())
}
