//! The on-disk layer index: a versioned, checksummed, little-endian binary
//! file. Fixed widths and byte order make it portable between 32- and 64-bit
//! builds and between architectures; the checksum makes a torn or bit-flipped
//! file a rebuild, never a misread.
//!
//! Layout: header (magic, version, layer digest, body length, body CRC-32),
//! then the body (diff_id, compression, sizes, entries, spans).

use crate::digest::Digest;
use crate::layer::entry::{EntryExtra, EntryKind, TarEntry};
use crate::layer::index::LayerIndex;
use crate::layer::spans::{crc32, Span, SpanStart};
use crate::layer::Compression;
use crate::limits::{MAX_NAME_BYTES, MAX_PATH_BYTES, MAX_SPAN_BYTES, MAX_XATTR_VALUE_BYTES};
use crate::tree::layout::IndexIdentity;

pub const MAGIC: &[u8; 8] = b"OCIMIDX\0";
/// Bump whenever the body layout or the meaning of a field changes, or the
/// tar reader reads some archive differently (2: own PAX/GNU reader; 3:
/// gzip spans capped at `MAX_SPAN_BYTES`, `Materialized` in gzip layers
/// naming the checkpoint span before it, so an older index is rebuilt).
pub const VERSION: u32 = 3;
const HEADER_LEN: usize = 8 + 4 + 32 + 8 + 4;

/// The bytes [`peek`] reads: the header and the body's fixed start.
pub const PEEK_LEN: usize = HEADER_LEN + 32 + 1 + 8 + 8;

/// What the start of an index file says, read without its body.
#[derive(Debug, PartialEq, Eq)]
pub struct Peek {
    pub digest: Digest,
    pub diff_id: Digest,
    pub compression: Compression,
    pub compressed_size: u64,
    pub uncompressed_size: u64,
    pub identity: IndexIdentity,
}

/// Read an index file's header and sizes from its first [`PEEK_LEN`]
/// bytes, checking magic, version and that the file is `file_len` long:
/// a cheap "is it there" for a process that will not use the entries. It
/// proves nothing about the body; whoever uses the index decodes it whole.
pub fn peek(start: &[u8], file_len: u64) -> Result<Peek, String> {
    let mut r = Reader {
        bytes: start,
        pos: 0,
    };
    if r.take(8)? != MAGIC {
        return Err("not an ocimount index (bad magic)".to_string());
    }
    if r.u32()? != VERSION {
        return Err("another index format version".to_string());
    }
    let digest = Digest::from_bytes(r.array()?);
    let body_len = r.u64()?;
    let crc = r.u32()?;
    if (HEADER_LEN as u64).checked_add(body_len) != Some(file_len) {
        return Err("index is truncated or has trailing bytes".to_string());
    }
    let diff_id = Digest::from_bytes(r.array()?);
    let compression = match r.u8()? {
        0 => Compression::None,
        1 => Compression::Gzip,
        2 => Compression::Zstd,
        t => return Err(format!("unknown compression tag {t}")),
    };
    Ok(Peek {
        digest,
        diff_id,
        compression,
        compressed_size: r.u64()?,
        uncompressed_size: r.u64()?,
        identity: IndexIdentity { body_len, crc },
    })
}

pub fn encode(index: &LayerIndex) -> Vec<u8> {
    // The header goes in front of the body once the body is known: one
    // buffer, not a body and then a copy of it (85 MB for 1M entries).
    let mut body = Writer(Vec::with_capacity(
        HEADER_LEN + 64 + index.entries.len() * 96,
    ));
    body.raw(&[0; HEADER_LEN]);
    body.raw(index.diff_id.as_bytes());
    body.u8(compression_tag(index.compression));
    body.u64(index.compressed_size);
    body.u64(index.uncompressed_size);
    body.u64(index.entries.len() as u64);
    for e in &index.entries {
        body.bytes(&e.path);
        body.u8(e.kind as u8);
        body.u32(e.mode);
        body.u32(e.uid);
        body.u32(e.gid);
        body.u64(e.mtime as u64);
        body.u32(e.mtime_nsec);
        body.u64(e.size);
        body.u64(e.data_offset);
        body.bytes(e.link());
        let (dev_major, dev_minor) = e.device();
        body.u32(dev_major);
        body.u32(dev_minor);
        body.u32(e.xattrs().len() as u32);
        for (name, value) in e.xattrs() {
            body.bytes(name);
            body.bytes(value);
        }
    }
    body.u64(index.spans.len() as u64);
    for s in &index.spans {
        body.u64(s.out_offset);
        body.u64(s.out_len);
        body.u64(s.in_offset);
        body.u32(s.crc32);
        match &s.start {
            SpanStart::Blob => body.u8(0),
            SpanStart::Materialized { frame_out } => {
                body.u8(1);
                body.u64(*frame_out);
            }
            SpanStart::ZstdFrame { in_len } => {
                body.u8(2);
                body.u64(*in_len);
            }
            SpanStart::GzipMember => body.u8(3),
            SpanStart::GzipBlock {
                bits,
                prime,
                window,
            } => {
                body.u8(4);
                body.u8(*bits);
                body.u8(*prime);
                body.bytes(window);
            }
        }
    }
    let mut out = body.0;
    let body = &out[HEADER_LEN..];
    let mut header = Writer(Vec::with_capacity(HEADER_LEN));
    header.raw(MAGIC);
    header.u32(VERSION);
    header.raw(index.digest.as_bytes());
    header.u64(body.len() as u64);
    header.u32(crc32(0, body));
    out[..HEADER_LEN].copy_from_slice(&header.0);
    out
}

/// Decode an index file; any inconsistency is an error with a reason, so the
/// caller can rebuild.
pub fn decode(bytes: &[u8], expected_digest: &Digest) -> Result<LayerIndex, String> {
    decode_with(bytes, expected_digest, true).map(|d| d.index)
}

/// An index, with what its header says of the file.
pub struct Decoded {
    pub index: LayerIndex,
    /// The entries the file lists, kept or not.
    pub entry_count: u64,
    pub identity: IndexIdentity,
}

/// Decode an index file, with its entries if `keep`; without, they are
/// stepped over and never allocated: what a process serving a stored tree
/// needs.
pub fn decode_with(bytes: &[u8], expected_digest: &Digest, keep: bool) -> Result<Decoded, String> {
    let mut r = Reader { bytes, pos: 0 };
    if r.take(8)? != MAGIC {
        return Err("not an ocimount index (bad magic)".to_string());
    }
    let version = r.u32()?;
    if version != VERSION {
        return Err(format!(
            "index format version {version}, this build reads {VERSION}"
        ));
    }
    let digest = Digest::from_bytes(r.array()?);
    if digest != *expected_digest {
        return Err(format!("index is for layer {digest}"));
    }
    let body_len = r.u64()?;
    let body_crc = r.u32()?;
    if body_len != (bytes.len() - r.pos) as u64 {
        return Err("index is truncated or has trailing bytes".to_string());
    }
    if crc32(0, &bytes[r.pos..]) != body_crc {
        return Err("index checksum mismatch".to_string());
    }
    let diff_id = Digest::from_bytes(r.array()?);
    let compression = match r.u8()? {
        0 => Compression::None,
        1 => Compression::Gzip,
        2 => Compression::Zstd,
        t => return Err(format!("unknown compression tag {t}")),
    };
    let compressed_size = r.u64()?;
    let uncompressed_size = r.u64()?;
    let n = r.count(60)?;
    // Every entry has a 512-byte header in the stream: no more fit.
    if n as u64 > uncompressed_size / 512 {
        return Err("more entries than the stream has room for".to_string());
    }
    let mut entries = Vec::with_capacity(if keep { n } else { 0 });
    for _ in 0..n {
        if !keep {
            skip_entry(&mut r)?;
            continue;
        }
        let path = r.bytes()?;
        let kind = EntryKind::from_u8(r.u8()?).ok_or("unknown entry kind")?;
        let mode = r.u32()?;
        let uid = r.u32()?;
        let gid = r.u32()?;
        let mtime = r.u64()? as i64;
        let mtime_nsec = r.u32()?;
        let size = r.u64()?;
        let data_offset = r.u64()?;
        let link = r.bytes()?.to_vec();
        let dev_major = r.u32()?;
        let dev_minor = r.u32()?;
        let nx = r.count32(8)?;
        let mut xattrs = Vec::with_capacity(nx);
        for _ in 0..nx {
            xattrs.push((r.bytes()?.to_vec(), r.bytes()?.to_vec()));
        }
        if data_offset
            .checked_add(size)
            .is_none_or(|end| end > uncompressed_size)
        {
            return Err("an entry's data lies outside the stream".to_string());
        }
        check_entry(kind, path, &link, mtime_nsec, &xattrs)?;
        let mut entry = TarEntry {
            path: path.into(),
            kind,
            mode,
            uid,
            gid,
            mtime,
            mtime_nsec,
            size,
            data_offset,
            extra: None,
        };
        entry.set_extra(EntryExtra {
            link,
            dev_major,
            dev_minor,
            xattrs,
        });
        entries.push(entry);
    }
    let n = r.count(29)?;
    let mut spans: Vec<Span> = Vec::with_capacity(n);
    let mut expected_offset = 0u64;
    for _ in 0..n {
        let out_offset = r.u64()?;
        let out_len = r.u64()?;
        let in_offset = r.u64()?;
        let crc32 = r.u32()?;
        let start = match r.u8()? {
            0 => SpanStart::Blob,
            1 => SpanStart::Materialized {
                frame_out: r.u64()?,
            },
            2 => SpanStart::ZstdFrame { in_len: r.u64()? },
            3 => SpanStart::GzipMember,
            4 => SpanStart::GzipBlock {
                bits: r.u8()?,
                prime: r.u8()?,
                window: r.bytes()?.to_vec(),
            },
            t => return Err(format!("unknown span tag {t}")),
        };
        if out_offset != expected_offset || out_len == 0 {
            return Err("spans do not tile the stream".to_string());
        }
        check_span(
            &start,
            compression,
            in_offset,
            out_offset,
            out_len,
            compressed_size,
        )?;
        expected_offset = out_offset.checked_add(out_len).ok_or("span overflow")?;
        spans.push(Span {
            out_offset,
            out_len,
            in_offset,
            crc32,
            start,
        });
    }
    if expected_offset != uncompressed_size {
        return Err("spans do not cover the stream".to_string());
    }
    if r.pos != bytes.len() {
        return Err("trailing bytes after the spans".to_string());
    }
    Ok(Decoded {
        index: LayerIndex {
            digest,
            diff_id,
            compression,
            compressed_size,
            uncompressed_size,
            entries,
            spans,
        },
        entry_count: n as u64,
        identity: IndexIdentity {
            body_len,
            crc: body_crc,
        },
    })
}

/// Step over one entry's record without keeping it.
fn skip_entry(r: &mut Reader<'_>) -> Result<(), String> {
    r.bytes()?; // path
    r.take(1 + 4 + 4 + 4 + 8 + 4 + 8 + 8)?;
    r.bytes()?; // link
    r.take(4 + 4)?;
    let nx = r.count32(8)?;
    for _ in 0..nx {
        r.bytes()?;
        r.bytes()?;
    }
    Ok(())
}

/// What the tar reader guarantees of an entry, checked again on load: the
/// union relies on it (a name `..` or `` in a directory would make paths
/// that resolve elsewhere), and only a file we wrote has it.
fn check_entry(
    kind: EntryKind,
    path: &[u8],
    link: &[u8],
    mtime_nsec: u32,
    xattrs: &[(Vec<u8>, Vec<u8>)],
) -> Result<(), String> {
    let normal = |p: &[u8]| {
        p.len() <= MAX_PATH_BYTES
            && (p.is_empty()
                || p.split(|&b| b == b'/').all(|c| {
                    // As the tar reader: a whiteout may carry `.wh.` on top.
                    let limit = MAX_NAME_BYTES + if c.starts_with(b".wh.") { 4 } else { 0 };
                    !c.is_empty() && c.len() <= limit && c != b"." && c != b".." && !c.contains(&0)
                }))
    };
    let bad = |what: &str| Err(format!("an entry has a bad {what}"));
    if !normal(path) || (path.is_empty() && kind != EntryKind::Dir) {
        return bad("path");
    }
    match kind {
        EntryKind::Hardlink if link.is_empty() || !normal(link) => return bad("hardlink target"),
        EntryKind::Symlink
            if link.is_empty() || link.len() > MAX_PATH_BYTES || link.contains(&0) =>
        {
            return bad("symlink target")
        }
        EntryKind::Hardlink | EntryKind::Symlink => {}
        _ if !link.is_empty() => return bad("link target"),
        _ => {}
    }
    if mtime_nsec >= 1_000_000_000 {
        return bad("mtime");
    }
    if xattrs
        .iter()
        .any(|(k, _)| k.is_empty() || k.len() > MAX_NAME_BYTES || k.contains(&0))
    {
        return bad("xattr name");
    }
    if xattrs.iter().any(|(_, v)| v.len() > MAX_XATTR_VALUE_BYTES) {
        return bad("xattr value");
    }
    Ok(())
}

/// What the indexer guarantees of a span, checked again on load: the
/// reader allocates `out_len` bytes and seeks the blob by these numbers.
fn check_span(
    start: &SpanStart,
    compression: Compression,
    in_offset: u64,
    out_offset: u64,
    out_len: u64,
    compressed_size: u64,
) -> Result<(), String> {
    let bad = |what: &str| Err(format!("a span has a bad {what}"));
    let fits = |end: Option<u64>| end.is_some_and(|end| end <= compressed_size);
    let kind_fits = match start {
        SpanStart::Blob => compression == Compression::None,
        SpanStart::Materialized { .. } => compression != Compression::None,
        SpanStart::ZstdFrame { .. } => compression == Compression::Zstd,
        SpanStart::GzipMember | SpanStart::GzipBlock { .. } => compression == Compression::Gzip,
    };
    if !kind_fits {
        return bad("kind for the layer's compression");
    }
    match start {
        SpanStart::Blob if in_offset != out_offset || !fits(out_offset.checked_add(out_len)) => {
            return bad("blob range")
        }
        SpanStart::Materialized { frame_out } if *frame_out > out_offset => {
            return bad("frame start")
        }
        SpanStart::ZstdFrame { in_len }
            if *in_len == 0 || !fits(in_offset.checked_add(*in_len)) =>
        {
            return bad("frame range")
        }
        SpanStart::GzipBlock { bits, .. } if *bits > 7 => return bad("bit offset"),
        _ if in_offset > compressed_size => return bad("blob offset"),
        _ => {}
    }
    if out_len > MAX_SPAN_BYTES {
        return Err(format!(
            "a span of {out_len} bytes is over the {MAX_SPAN_BYTES}-byte limit"
        ));
    }
    Ok(())
}

fn compression_tag(c: Compression) -> u8 {
    match c {
        Compression::None => 0,
        Compression::Gzip => 1,
        Compression::Zstd => 2,
    }
}

struct Writer(Vec<u8>);

impl Writer {
    fn raw(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.raw(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.raw(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.raw(b);
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| "index is truncated".to_string())?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    /// A record count, checked against the bytes left so a corrupt count
    /// cannot make us allocate more than the file could describe.
    fn count(&mut self, min_record: usize) -> Result<usize, String> {
        let n = self.u64()?;
        self.checked_count(n, min_record)
    }

    fn count32(&mut self, min_record: usize) -> Result<usize, String> {
        let n = self.u32()? as u64;
        self.checked_count(n, min_record)
    }

    fn checked_count(&self, n: u64, min_record: usize) -> Result<usize, String> {
        let n = usize::try_from(n).map_err(|_| "count overflow")?;
        if n.saturating_mul(min_record) > self.bytes.len() - self.pos {
            return Err("a record count exceeds the file".to_string());
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> LayerIndex {
        let mut entry = TarEntry {
            path: b"etc/passwd".as_slice().into(),
            kind: EntryKind::File,
            mode: 0o4755,
            uid: 1000,
            gid: 5678,
            mtime: -5,
            mtime_nsec: 7,
            size: 10,
            data_offset: 512,
            extra: None,
        };
        entry.set_extra(EntryExtra {
            xattrs: vec![
                (b"user.a".to_vec(), b"\0bin".to_vec()),
                (b"security.capability".to_vec(), vec![1, 2]),
            ],
            ..EntryExtra::default()
        });
        let mut link = TarEntry {
            path: b"bin/x".as_slice().into(),
            kind: EntryKind::Hardlink,
            ..entry.clone()
        };
        link.set_extra(EntryExtra {
            link: b"etc/passwd".to_vec(),
            ..EntryExtra::default()
        });
        LayerIndex {
            digest: Digest::of(b"blob"),
            diff_id: Digest::of(b"tar"),
            compression: Compression::Gzip,
            compressed_size: 99,
            uncompressed_size: 3072,
            entries: vec![entry, link],
            spans: vec![
                Span {
                    out_offset: 0,
                    out_len: 1024,
                    in_offset: 0,
                    crc32: 1,
                    start: SpanStart::GzipMember,
                },
                Span {
                    out_offset: 1024,
                    out_len: 1024,
                    in_offset: 40,
                    crc32: 2,
                    start: SpanStart::GzipBlock {
                        bits: 3,
                        prime: 5,
                        window: vec![9; 17],
                    },
                },
                Span {
                    out_offset: 2048,
                    out_len: 512,
                    in_offset: 60,
                    crc32: 3,
                    start: SpanStart::GzipMember,
                },
                Span {
                    out_offset: 2560,
                    out_len: 512,
                    in_offset: 70,
                    crc32: 4,
                    start: SpanStart::Materialized { frame_out: 2560 },
                },
            ],
        }
    }

    #[test]
    fn encode_then_decode_gives_the_same_index() {
        let index = sample();
        let bytes = encode(&index);
        assert_eq!(decode(&bytes, &index.digest).unwrap(), index);
    }

    #[test]
    fn every_truncation_and_bit_flip_is_detected() {
        let index = sample();
        let bytes = encode(&index);
        for cut in 0..bytes.len() {
            assert!(
                decode(&bytes[..cut], &index.digest).is_err(),
                "truncated at {cut}"
            );
        }
        for i in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x10;
            assert!(decode(&flipped, &index.digest).is_err(), "bit flip at {i}");
        }
    }

    #[test]
    fn other_versions_and_other_layers_are_refused() {
        let index = sample();
        let mut bytes = encode(&index);
        assert_eq!(
            decode(&bytes, &Digest::of(b"other")).unwrap_err(),
            format!("index is for layer {}", index.digest)
        );
        bytes[8] = 99;
        assert_eq!(
            decode(&bytes, &index.digest).unwrap_err(),
            "index format version 99, this build reads 3"
        );
    }

    /// Re-encode `index` after `change`, then decode it: what the loader
    /// says of an index that a damaged or hostile cache could hold.
    fn decode_changed(change: impl FnOnce(&mut LayerIndex)) -> Result<LayerIndex, String> {
        let mut index = sample();
        change(&mut index);
        decode(&encode(&index), &index.digest)
    }

    #[test]
    fn spans_the_reader_cannot_trust_are_refused_on_load() {
        fn zstd_frame(in_len: u64) -> SpanStart {
            SpanStart::ZstdFrame { in_len }
        }
        type Change = Box<dyn FnOnce(&mut LayerIndex)>;
        let cases: Vec<(Change, &str)> = vec![
            (
                Box::new(|ix| ix.spans[2].start = zstd_frame(7)),
                "a span has a bad kind for the layer's compression",
            ),
            (
                Box::new(|ix| {
                    ix.compression = Compression::Zstd;
                    for span in &mut ix.spans[..3] {
                        span.start = zstd_frame(50);
                    }
                }),
                "a span has a bad frame range",
            ),
            (
                Box::new(|ix| ix.spans[3].start = SpanStart::Materialized { frame_out: 2561 }),
                "a span has a bad frame start",
            ),
            (
                Box::new(|ix| {
                    ix.spans[1].start = SpanStart::GzipBlock {
                        bits: 8,
                        prime: 0,
                        window: vec![],
                    }
                }),
                "a span has a bad bit offset",
            ),
            (
                Box::new(|ix| ix.spans[3].in_offset = 100),
                "a span has a bad blob offset",
            ),
            (
                Box::new(|ix| {
                    ix.compression = Compression::None;
                    ix.compressed_size = 3072;
                    for span in &mut ix.spans {
                        span.start = SpanStart::Blob;
                        span.in_offset = span.out_offset;
                    }
                    ix.spans[3].in_offset = 2561;
                }),
                "a span has a bad blob range",
            ),
        ];
        for (change, want) in cases {
            assert_eq!(decode_changed(change).unwrap_err(), want);
        }
    }

    #[test]
    fn an_index_with_an_oversized_span_is_rebuilt() {
        // A materialised span is read whole into memory: one over the limit
        // makes the loader refuse the index (so it is built again).
        let err = decode_changed(|ix| {
            ix.uncompressed_size = 2560 + MAX_SPAN_BYTES + 1;
            ix.spans[3].out_len = MAX_SPAN_BYTES + 1;
        })
        .unwrap_err();
        assert_eq!(
            err,
            format!(
                "a span of {} bytes is over the {MAX_SPAN_BYTES}-byte limit",
                MAX_SPAN_BYTES + 1
            )
        );
    }

    /// The format, pinned byte for byte: a change to the layout that does
    /// not bump VERSION fails here.
    #[test]
    fn entries_past_the_tar_readers_limits_are_refused_on_load() {
        let decoded = |index: &LayerIndex| decode(&encode(index), &index.digest);
        let with_path = |path: Vec<u8>| {
            let mut index = sample();
            index.entries[0].path = path.into();
            index.entries.truncate(1);
            index
        };
        let long = "n".repeat(MAX_NAME_BYTES + 1);
        assert!(decoded(&with_path(format!("etc/{long}").into_bytes())).is_err());
        // A whiteout may carry `.wh.` on top of NAME_MAX, as in the tar reader.
        let whiteout = format!("etc/.wh.{}", "n".repeat(MAX_NAME_BYTES));
        assert!(decoded(&with_path(whiteout.into_bytes())).is_ok());
        let mut big_xattr = sample();
        big_xattr.entries.truncate(1);
        big_xattr.entries[0].set_extra(EntryExtra {
            xattrs: vec![(b"user.a".to_vec(), vec![0; MAX_XATTR_VALUE_BYTES + 1])],
            ..EntryExtra::default()
        });
        assert_eq!(
            decoded(&big_xattr).unwrap_err(),
            "an entry has a bad xattr value"
        );
        let mut crowded = sample();
        crowded.entries = vec![crowded.entries[0].clone(); 7];
        assert_eq!(
            decoded(&crowded).unwrap_err(),
            "more entries than the stream has room for"
        );
    }

    #[test]
    fn peek_reads_what_decode_reads_and_no_more() {
        let index = sample();
        let bytes = encode(&index);
        let peek = super::peek(&bytes[..PEEK_LEN], bytes.len() as u64).unwrap();
        assert_eq!(peek.digest, index.digest);
        assert_eq!(peek.diff_id, index.diff_id);
        assert_eq!(peek.compression, index.compression);
        assert_eq!(peek.compressed_size, index.compressed_size);
        assert_eq!(peek.uncompressed_size, index.uncompressed_size);
        assert!(super::peek(&bytes[..PEEK_LEN], bytes.len() as u64 - 1).is_err());
        assert!(super::peek(&bytes[..10], bytes.len() as u64).is_err());
    }

    #[test]
    fn the_encoding_is_pinned() {
        let hex: String = encode(&sample())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex, PINNED_SAMPLE_HEX,
            "the index layout changed: bump VERSION"
        );
    }

    const PINNED_SAMPLE_HEX: &str = concat!(
        "4f43494d4944580003000000fa2c8cc4f28176bbeed4b736df569a34c79cd372",
        "3e9ec42f9674b4d46ac6b8b89601000000000000cfb8155a90aebae315675cbf",
        "04612de4f7d5874850f48e0b8dd82becbeaa47ca93f5ebfb0163000000000000",
        "00000c00000000000002000000000000000a0000006574632f70617373776400",
        "ed090000e80300002e160000fbffffffffffffff070000000a00000000000000",
        "0002000000000000000000000000000000000000020000000600000075736572",
        "2e61040000000062696e1300000073656375726974792e6361706162696c6974",
        "790200000001020500000062696e2f7803ed090000e80300002e160000fbffff",
        "ffffffffff070000000a0000000000000000020000000000000a000000657463",
        "2f70617373776400000000000000000000000004000000000000000000000000",
        "0000000004000000000000000000000000000001000000030004000000000000",
        "0004000000000000280000000000000002000000040305110000000909090909",
        "090909090909090909090909000800000000000000020000000000003c000000",
        "000000000300000003000a000000000000000200000000000046000000000000",
        "000400000001000a000000000000",
    );
}
