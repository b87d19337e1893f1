//! A zstd:chunked blob's table of contents: the zstd frame the annotation
//! places (`manifest-position`), fetched with one read and checked against
//! the annotation's `manifest-checksum` (the SHA-256 of the compressed
//! bytes) before it is decompressed, to exactly the announced length.

use crate::blob::BlobSource;
use crate::digest::Digest;
use crate::limits::MAX_TOC_JSON_BYTES;

use super::TocError;

/// The skippable frame's header before the TOC: magic and length.
const SKIPPABLE_HEADER_LEN: u64 = 8;

/// The TOC's JSON; and where the frames of data end (the skippable frame
/// that holds the TOC starts there).
pub fn fetch(
    blob: &dyn BlobSource,
    compressed_digest: &Digest,
    offset: u64,
    length: u64,
    json_length: u64,
) -> Result<(Vec<u8>, u64), TocError> {
    let size = blob.size();
    if offset < SKIPPABLE_HEADER_LEN || offset.checked_add(length).is_none_or(|end| end > size) {
        return Err(TocError::Malformed(format!(
            "the annotation puts the TOC at [{offset}, {offset}+{length}), outside the \
             {size}-byte blob"
        )));
    }
    for n in [length, json_length] {
        if n > MAX_TOC_JSON_BYTES {
            return Err(TocError::TooLarge {
                size: n,
                limit: MAX_TOC_JSON_BYTES,
            });
        }
    }
    let mut compressed = vec![0u8; length as usize];
    blob.will_need(offset, length).map_err(TocError::Read)?;
    blob.read_exact_at(&mut compressed, offset)
        .map_err(TocError::Read)?;
    let actual = Digest::of(&compressed);
    if actual != *compressed_digest {
        return Err(TocError::DigestMismatch {
            expected: *compressed_digest,
            actual,
        });
    }
    let json = ::zstd::bulk::decompress(&compressed, json_length as usize)
        .map_err(|e| TocError::Malformed(format!("the TOC does not decompress: {e}")))?;
    if json.len() as u64 != json_length {
        return Err(TocError::Malformed(format!(
            "the TOC decompresses to {} bytes, the annotation says {json_length}",
            json.len()
        )));
    }
    Ok((json, offset - SKIPPABLE_HEADER_LEN))
}
