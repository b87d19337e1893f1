//! An eStargz blob's table of contents: found through the footer, fetched
//! with one read of the blob's tail (two when the TOC is larger than the
//! guess), and checked against the digest the manifest's annotation gives.
//!
//! The blob is gzip members; the last one before the footer holds a tar
//! entry `stargz.index.json` whose data is the TOC's JSON. The footer is an
//! empty gzip member whose extra field holds the TOC's offset: 51 bytes
//! (`SG` subfield), or 47 in the legacy stargz form.

use std::io::Read;

use crate::blob::BlobSource;
use crate::digest::Digest;
use crate::limits::MAX_TOC_JSON_BYTES;

use super::TocError;

const FOOTER_LEN: u64 = 51;
const LEGACY_FOOTER_LEN: u64 = 47;
/// How much of the blob's tail the first read takes: the footer and, for
/// most layers, the whole TOC member (1.9 KB for a busybox layer).
const TAIL_GUESS: u64 = 256 << 10;

/// The TOC's JSON, checked against `json_digest`; and where the TOC member
/// starts in the blob (every chunk lies before it).
pub fn fetch(blob: &dyn BlobSource, json_digest: &Digest) -> Result<(Vec<u8>, u64), TocError> {
    let size = blob.size();
    if size < LEGACY_FOOTER_LEN {
        return Err(TocError::Malformed(format!(
            "the blob is {size} bytes, too short for an eStargz footer"
        )));
    }
    let tail_len = size.min(TAIL_GUESS + FOOTER_LEN);
    let tail_start = size - tail_len;
    let mut tail = vec![0u8; tail_len as usize];
    blob.will_need(tail_start, tail_len)
        .map_err(TocError::Read)?;
    blob.read_exact_at(&mut tail, tail_start)
        .map_err(TocError::Read)?;
    let (toc_offset, footer_len) = footer(&tail)?;
    let toc_end = size - footer_len;
    if toc_offset >= toc_end {
        return Err(TocError::Malformed(format!(
            "the footer puts the TOC at {toc_offset}, past its end at {toc_end}"
        )));
    }
    let member_len = toc_end - toc_offset;
    if member_len > MAX_TOC_JSON_BYTES {
        return Err(TocError::TooLarge {
            size: member_len,
            limit: MAX_TOC_JSON_BYTES,
        });
    }
    let member = if toc_offset >= tail_start {
        let from = (toc_offset - tail_start) as usize;
        tail[from..from + member_len as usize].to_vec()
    } else {
        let mut member = vec![0u8; member_len as usize];
        blob.will_need(toc_offset, member_len)
            .map_err(TocError::Read)?;
        blob.read_exact_at(&mut member, toc_offset)
            .map_err(TocError::Read)?;
        member
    };
    let json = json_of_member(&member)?;
    let actual = Digest::of(&json);
    if actual != *json_digest {
        return Err(TocError::DigestMismatch {
            expected: *json_digest,
            actual,
        });
    }
    Ok((json, toc_offset))
}

/// The TOC offset and the footer's length, from the blob's tail.
fn footer(tail: &[u8]) -> Result<(u64, u64), TocError> {
    let at = |len: u64| &tail[tail.len() - len as usize..];
    if tail.len() as u64 >= FOOTER_LEN {
        let f = at(FOOTER_LEN);
        // gzip header with FEXTRA, XLEN 26, subfield `SG` of 22 bytes.
        if f[..4] == [0x1f, 0x8b, 8, 4] && f[10..16] == [26, 0, b'S', b'G', 22, 0] {
            if &f[32..38] != b"STARGZ" {
                return Err(bad_footer());
            }
            return Ok((hex_offset(&f[16..32])?, FOOTER_LEN));
        }
    }
    let f = at(LEGACY_FOOTER_LEN);
    if f[..4] == [0x1f, 0x8b, 8, 4] && f[10..12] == [22, 0] && &f[28..34] == b"STARGZ" {
        return Ok((hex_offset(&f[12..28])?, LEGACY_FOOTER_LEN));
    }
    Err(bad_footer())
}

fn bad_footer() -> TocError {
    TocError::Malformed("the blob does not end with an eStargz footer".to_string())
}

fn hex_offset(digits: &[u8]) -> Result<u64, TocError> {
    std::str::from_utf8(digits)
        .ok()
        .filter(|s| s.bytes().all(|b| b.is_ascii_hexdigit()))
        .and_then(|s| u64::from_str_radix(s, 16).ok())
        .ok_or_else(|| TocError::Malformed("the footer's TOC offset is not hex".to_string()))
}

/// The data of the tar entry `stargz.index.json` the TOC member holds, its
/// size bounded before it is read.
fn json_of_member(member: &[u8]) -> Result<Vec<u8>, TocError> {
    let mut tar = flate2::read::GzDecoder::new(member);
    let mut header = [0u8; 512];
    tar.read_exact(&mut header)
        .map_err(|e| TocError::Malformed(format!("the TOC member: {e}")))?;
    let name_end = header[..100].iter().position(|&b| b == 0).unwrap_or(100);
    if &header[..name_end] != b"stargz.index.json" {
        return Err(TocError::Malformed(format!(
            "the TOC member holds {:?}, not stargz.index.json",
            String::from_utf8_lossy(&header[..name_end])
        )));
    }
    let size_field = std::str::from_utf8(&header[124..136])
        .ok()
        .map(|s| s.trim_matches(|c: char| c == '\0' || c == ' '))
        .and_then(|s| u64::from_str_radix(s, 8).ok())
        .ok_or_else(|| TocError::Malformed("the TOC's tar size field".to_string()))?;
    if size_field > MAX_TOC_JSON_BYTES {
        return Err(TocError::TooLarge {
            size: size_field,
            limit: MAX_TOC_JSON_BYTES,
        });
    }
    let mut json = vec![0u8; size_field as usize];
    tar.read_exact(&mut json)
        .map_err(|e| TocError::Malformed(format!("the TOC's JSON: {e}")))?;
    Ok(json)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The footer of sample layer 0 (tests/tools/LAZY_FORMATS.md).
    fn sample_footer() -> Vec<u8> {
        let mut f = vec![
            0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 0xff, 26, 0, b'S', b'G', 22, 0,
        ];
        f.extend_from_slice(b"00000000001059a5STARGZ");
        f.extend_from_slice(&[1, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0]);
        f
    }

    #[test]
    fn the_footer_gives_the_toc_offset() {
        let f = sample_footer();
        assert_eq!(f.len(), 51);
        let mut tail = vec![7u8; 100];
        tail.extend_from_slice(&f);
        assert_eq!(footer(&tail).unwrap(), (0x1059a5, 51));
        let mut legacy = vec![0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 0xff, 22, 0];
        legacy.extend_from_slice(b"00000000000000ffSTARGZ");
        legacy.extend_from_slice(&[1, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(legacy.len(), 47);
        assert_eq!(footer(&legacy).unwrap(), (0xff, 47));
    }

    #[test]
    fn a_blob_without_a_footer_is_refused() {
        let mut f = sample_footer();
        f[33] = b'X';
        assert!(footer(&f).is_err());
        let mut f = sample_footer();
        f[20] = b'g';
        assert!(footer(&f).is_err());
        assert!(footer(&[0u8; 60]).is_err());
    }
}
