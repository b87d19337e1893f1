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

use std::io::{self, Read};

use sha2::{Digest as _, Sha256};

use super::entries::LargeChunk;
use super::TocError;
use crate::blob::BlobSource;
use crate::digest::Digest;
use crate::layer::layer_index::LayerIndex;
use crate::layer::spans::FIXED_SPAN;

/// How much of a frame is asked for at once, ahead of the decoder's reads
/// (which a remote blob would otherwise fetch a read's worth at a time).
const HINT_BYTES: u64 = 4 << 20;

/// `blob[pos..end]` read front to back, `HINT_BYTES` at a time asked for
/// in one request before it is read.
struct HintedRange<'a> {
    blob: &'a dyn BlobSource,
    pos: u64,
    end: u64,
    hinted_to: u64,
}

impl Read for HintedRange<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.end || buf.is_empty() {
            return Ok(0);
        }
        if self.pos >= self.hinted_to {
            let len = HINT_BYTES.min(self.end - self.pos);
            self.blob.will_need(self.pos, len)?;
            self.hinted_to = self.pos + len;
        }
        let n = (buf.len() as u64).min(self.hinted_to - self.pos) as usize;
        let got = self.blob.read_at(&mut buf[..n], self.pos)?;
        self.pos += got as u64;
        Ok(got)
    }
}

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
        let frame = HintedRange {
            blob,
            pos: chunk.in_offset,
            end: chunk.in_offset.saturating_add(chunk.in_len),
            hinted_to: chunk.in_offset,
        };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::MemoryBlob;
    use crate::layer::layer_index::BuiltFrom;
    use crate::layer::spans::{Span, SpanStart};
    use crate::layer::Compression;

    /// A layer holding one large chunk: 100 bytes of other data, then the
    /// chunk's frame; its index as the TOC entries make it.
    fn layer_with(content: &[u8], toc_digest: [u8; 32]) -> (MemoryBlob, LayerIndex, LargeChunk) {
        let frame = zstd::bulk::compress(content, 3).unwrap();
        let mut blob = vec![0xAA; 100];
        blob.extend_from_slice(&frame);
        let len = content.len() as u64;
        let spans: Vec<Span> = (0..len.div_ceil(FIXED_SPAN))
            .map(|k| Span {
                out_offset: k * FIXED_SPAN,
                out_len: (len - k * FIXED_SPAN).min(FIXED_SPAN),
                in_offset: 100,
                crc32: 0,
                sha256: [0; 32],
                start: SpanStart::Materialized { frame_out: 0 },
            })
            .collect();
        let chunk = LargeChunk {
            first_span: 0,
            spans: spans.len(),
            in_offset: 100,
            in_len: frame.len() as u64,
            digest: toc_digest,
        };
        let index = LayerIndex {
            digest: Digest::of(&blob),
            diff_id: Digest::of(b"tar"),
            compression: Compression::Zstd,
            compressed_size: blob.len() as u64,
            uncompressed_size: len,
            entries: Vec::new(),
            spans: spans.into(),
            built_from: BuiltFrom::ZstdChunkedToc,
            prefetch_spans: 0,
        };
        (
            MemoryBlob::new(blob, "test layer".to_string()),
            index,
            chunk,
        )
    }

    fn content() -> Vec<u8> {
        (0..(9u32 << 20) + 12345)
            .map(|i| (i % 251) as u8 ^ (i >> 16) as u8)
            .collect()
    }

    #[test]
    fn each_piece_gets_the_digest_of_its_bytes_once_the_chunk_matches() {
        let content = content();
        let whole: [u8; 32] = Sha256::digest(&content).into();
        let (blob, mut index, chunk) = layer_with(&content, whole);
        hash_spans(&mut index, &[chunk], &blob).unwrap();
        assert_eq!(index.spans.len(), 10);
        for span in index.spans.iter() {
            let from = span.out_offset as usize;
            let bytes = &content[from..from + span.out_len as usize];
            assert_eq!(span.sha256, <[u8; 32]>::from(Sha256::digest(bytes)));
        }
    }

    #[test]
    fn a_chunk_that_does_not_match_its_digest_or_length_is_refused() {
        let content = content();
        let (blob, mut index, chunk) = layer_with(&content, [7; 32]);
        let err = hash_spans(&mut index, &[chunk], &blob)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("the chunk at blob offset 100: its bytes are sha256:")
                && err.contains(&format!(
                    "its chunkDigest says {}",
                    Digest::from_bytes([7; 32])
                )),
            "{err}"
        );
        assert!(index.spans.iter().all(|s| s.sha256 == [0; 32]));

        // The frame gives one byte more than the TOC says.
        let whole: [u8; 32] = Sha256::digest(&content[..content.len() - 1]).into();
        let (blob, index, chunk) = layer_with(&content, whole);
        let mut shorter = index.clone();
        let mut spans = shorter.spans.to_vec();
        spans.last_mut().unwrap().out_len -= 1;
        shorter.spans = spans.into();
        let err = hash_spans(&mut shorter, std::slice::from_ref(&chunk), &blob)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("decodes to more bytes than the TOC gives"),
            "{err}"
        );

        // And one byte fewer.
        let mut longer = index;
        let mut spans = longer.spans.to_vec();
        spans.last_mut().unwrap().out_len += 1;
        longer.spans = spans.into();
        let err = hash_spans(&mut longer, &[chunk], &blob)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("its frame does not decode to the bytes the TOC gives"),
            "{err}"
        );
    }
}
