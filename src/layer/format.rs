//! The on-disk layer index: a versioned, checksummed, little-endian binary
//! file. Fixed widths and byte order make it portable between 32- and 64-bit
//! builds and between architectures; the checksum makes a torn or bit-flipped
//! file a rebuild, never a misread.
//!
//! Layout: header (magic, version, layer digest, body length, body CRC-32),
//! then the body: diff_id, compression, sizes; the spans' length and a
//! CRC-32 of everything so far and the spans; the spans; the entries.

use crate::digest::Digest;
use crate::layer::layer_index::{BuiltFrom, LayerIndex};
use crate::layer::spans::{crc32, Span, SpanStart};
use crate::layer::Compression;
use crate::limits::{MAX_NAME_BYTES, MAX_PATH_BYTES, MAX_SPAN_BYTES, MAX_XATTR_VALUE_BYTES};
use crate::tar::entry::{EntryExtra, EntryKind, TarEntry};

/// What tells one layer index file from another without reading its body.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IndexIdentity {
    pub body_len: u64,
    /// SHA-256 of the body: a stored tree names the index it was merged
    /// from by it, which a crafted index cannot match as it could a CRC.
    pub sha256: [u8; 32],
}

pub const MAGIC: &[u8; 8] = b"OCIMIDX\0";
/// Bump whenever the body layout or the meaning of a field changes, or the
/// tar reader reads some archive differently (2: own PAX/GNU reader; 3:
/// gzip spans capped at `MAX_SPAN_BYTES`, `Materialized` in gzip layers
/// naming the checkpoint span before it, so an older index is rebuilt; 4:
/// the spans before the entries, with a CRC of their own, so a process
/// serving a stored tree reads the spans and never the entries; 5: a
/// SHA-256 of each span's bytes, which remote bytes are checked against,
/// and a SHA-256 of the body in the header instead of its CRC-32; 6: what
/// the index was built from, a full pass or a table of contents; 7: how
/// many of the first spans an eStargz producer put before its prefetch
/// landmark; 8: a full pass's own-start spans hashed over their compressed
/// range, `BuiltFrom::hashes_compressed_range`).
pub const VERSION: u32 = 8;
/// Magic, version, layer digest, body length, body SHA-256 (the last 32).
pub const HEADER_LEN: usize = 8 + 4 + 32 + 8 + 32;

/// The bytes [`peek`] reads: the header and the body's fixed start.
pub const PEEK_LEN: usize = HEADER_LEN + FIXED_LEN;

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
    let (digest, identity) = read_header(&mut r, file_len)?;
    let fixed = read_fixed(&mut r)?;
    Ok(Peek {
        digest,
        diff_id: fixed.diff_id,
        compression: fixed.compression,
        compressed_size: fixed.compressed_size,
        uncompressed_size: fixed.uncompressed_size,
        identity,
    })
}

/// The header: magic, version, the layer digest, and the body's length
/// (which must make the file `file_len` long) and CRC.
fn read_header(r: &mut Reader<'_>, file_len: u64) -> Result<(Digest, IndexIdentity), String> {
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
    let body_len = r.u64()?;
    let sha256 = r.array::<32>()?;
    if (HEADER_LEN as u64).checked_add(body_len) != Some(file_len) {
        return Err("index is truncated or has trailing bytes".to_string());
    }
    Ok((digest, IndexIdentity { body_len, sha256 }))
}

/// The body's fixed fields.
struct Fixed {
    diff_id: Digest,
    compression: Compression,
    built_from: BuiltFrom,
    prefetch_spans: u32,
    compressed_size: u64,
    uncompressed_size: u64,
}

fn read_fixed(r: &mut Reader<'_>) -> Result<Fixed, String> {
    let diff_id = Digest::from_bytes(r.array()?);
    let compression = match r.u8()? {
        0 => Compression::None,
        1 => Compression::Gzip,
        2 => Compression::Zstd,
        t => return Err(format!("unknown compression tag {t}")),
    };
    let built_from = r.u8()?;
    let built_from =
        BuiltFrom::from_tag(built_from).ok_or(format!("unknown origin tag {built_from}"))?;
    Ok(Fixed {
        diff_id,
        compression,
        built_from,
        prefetch_spans: r.u32()?,
        compressed_size: r.u64()?,
        uncompressed_size: r.u64()?,
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
    body.u8(index.built_from.tag());
    body.u32(index.prefetch_spans);
    body.u64(index.compressed_size);
    body.u64(index.uncompressed_size);
    // The spans' length and CRC, filled in once they are written.
    body.u64(0);
    body.u32(0);
    body.u64(index.spans.len() as u64);
    for s in index.spans.iter() {
        body.u64(s.out_offset);
        body.u64(s.out_len);
        body.u64(s.in_offset);
        body.u32(s.crc32);
        body.raw(&s.sha256);
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
    let spans_len = body.0.len() - HEADER_LEN - SPANS_AT;
    let at = HEADER_LEN + FIXED_LEN;
    body.0[at..at + 8].copy_from_slice(&(spans_len as u64).to_le_bytes());
    let crc = head_crc(&body.0[HEADER_LEN..], spans_len);
    body.0[at + 8..at + 12].copy_from_slice(&crc.to_le_bytes());
    body.u64(index.entries.len() as u64);
    for e in &index.entries {
        body.bytes(e.path());
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
    let mut out = body.0;
    let body = &out[HEADER_LEN..];
    let mut header = Writer(Vec::with_capacity(HEADER_LEN));
    header.raw(MAGIC);
    header.u32(VERSION);
    header.raw(index.digest.as_bytes());
    header.u64(body.len() as u64);
    header.raw(&crate::layer::spans::sha256(body));
    out[..HEADER_LEN].copy_from_slice(&header.0);
    out
}

/// Decode an index file; any inconsistency is an error with a reason, so the
/// caller can rebuild.
pub fn decode(bytes: &[u8], expected_digest: &Digest) -> Result<LayerIndex, String> {
    decode_full(bytes, expected_digest).map(|d| d.index)
}

/// An index, with what its header says of the file.
pub struct Decoded {
    pub index: LayerIndex,
    pub identity: IndexIdentity,
}

/// The body's fixed fields: diff_id, compression, what the index was
/// built from, both sizes.
const FIXED_LEN: usize = 32 + 1 + 1 + 4 + 8 + 8;
/// Where the spans section starts in the body: after the fixed fields, its
/// length (u64) and its CRC-32 (u32).
const SPANS_AT: usize = FIXED_LEN + 8 + 4;

/// The CRC-32 that covers the fixed fields, the spans' length and the
/// spans: what a process that reads no entry relies on.
fn head_crc(body: &[u8], spans_len: usize) -> u32 {
    let fixed = crc32(0, &body[..FIXED_LEN + 8]);
    crc32(fixed, &body[SPANS_AT..SPANS_AT + spans_len])
}

/// Check the header of an index file of `file_len` bytes; its body length
/// and CRC.
fn decode_header(
    header: &[u8],
    file_len: u64,
    expected_digest: &Digest,
) -> Result<IndexIdentity, String> {
    let mut r = Reader {
        bytes: header,
        pos: 0,
    };
    let (digest, identity) = read_header(&mut r, file_len)?;
    if digest != *expected_digest {
        return Err(format!("index is for layer {digest}"));
    }
    Ok(identity)
}

/// The body's head (fixed fields and spans, checked by their own CRC) from
/// `body`, which holds at least that much; and where the entries start.
///
/// With `shared`, the buffer `body` lies in, each window is a range of it
/// rather than a copy.
fn decode_head(
    body: &[u8],
    digest: Digest,
    shared: Option<&bytes::Bytes>,
) -> Result<(LayerIndex, usize), String> {
    let mut r = Reader {
        bytes: body,
        pos: 0,
    };
    let Fixed {
        diff_id,
        compression,
        built_from,
        prefetch_spans,
        compressed_size,
        uncompressed_size,
    } = read_fixed(&mut r)?;
    let spans_len = r.u64()?;
    let crc = r.u32()?;
    let spans_len = usize::try_from(spans_len)
        .ok()
        .filter(|&n| n <= body.len() - SPANS_AT)
        .ok_or("index is truncated")?;
    if head_crc(body, spans_len) != crc {
        return Err("index checksum mismatch (spans)".to_string());
    }
    let mut r = Reader {
        bytes: &body[..SPANS_AT + spans_len],
        pos: SPANS_AT,
    };
    let n = r.count(61)?;
    let mut spans: Vec<Span> = Vec::with_capacity(n);
    let mut expected_offset = 0u64;
    for _ in 0..n {
        let out_offset = r.u64()?;
        let out_len = r.u64()?;
        let in_offset = r.u64()?;
        let crc32 = r.u32()?;
        let sha256 = r.array::<32>()?;
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
                window: match shared {
                    Some(shared) => shared.slice_ref(r.bytes()?),
                    None => bytes::Bytes::copy_from_slice(r.bytes()?),
                },
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
            sha256,
            start,
        });
    }
    if expected_offset != uncompressed_size {
        return Err("spans do not cover the stream".to_string());
    }
    if prefetch_spans as usize > spans.len() {
        return Err("more spans to prefetch than spans".to_string());
    }
    if r.pos != r.bytes.len() {
        return Err("trailing bytes after the spans".to_string());
    }
    let index = LayerIndex {
        digest,
        diff_id,
        compression,
        compressed_size,
        uncompressed_size,
        entries: Vec::new(),
        spans: spans.into(),
        built_from,
        prefetch_spans,
    };
    Ok((index, SPANS_AT + spans_len))
}

/// Decode a whole index file, entries included.
pub fn decode_full(bytes: &[u8], expected_digest: &Digest) -> Result<Decoded, String> {
    let header = bytes.get(..HEADER_LEN).ok_or("index is truncated")?;
    let identity = decode_header(header, bytes.len() as u64, expected_digest)?;
    let body = &bytes[HEADER_LEN..];
    if crate::layer::spans::sha256(body) != identity.sha256 {
        return Err("index checksum mismatch".to_string());
    }
    let (mut index, entries_at) = decode_head(body, *expected_digest, None)?;
    let uncompressed_size = index.uncompressed_size;
    let mut r = Reader {
        bytes: body,
        pos: entries_at,
    };
    let n = r.count(60)?;
    // Every entry of a tar stream has a 512-byte header in it: no more
    // fit. A table of contents' stream holds file data alone, and its
    // entries are bounded by the index's own length (`count`).
    if index.built_from == BuiltFrom::FullPass && n as u64 > uncompressed_size / 512 {
        return Err("more entries than the stream has room for".to_string());
    }
    let mut entries = Vec::with_capacity(n);
    for _ in 0..n {
        let path = r.bytes()?;
        let kind = EntryKind::from_u8(r.u8()?).ok_or("unknown entry kind")?;
        let mode = r.u32()?;
        let uid = r.u32()?;
        let gid = r.u32()?;
        let mtime = r.u64()? as i64;
        let mtime_nsec = r.u32()?;
        let size = r.u64()?;
        let data_offset = r.u64()?;
        let link = r.bytes()?;
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
        check_entry(kind, path, link, mtime_nsec, &xattrs)?;
        let mut entry = TarEntry::with_link(path, link, kind);
        entry.mode = mode;
        entry.uid = uid;
        entry.gid = gid;
        entry.mtime = mtime;
        entry.mtime_nsec = mtime_nsec;
        entry.size = size;
        entry.data_offset = data_offset;
        entry.set_extra(EntryExtra {
            dev_major,
            dev_minor,
            xattrs,
        });
        entries.push(entry);
    }
    if r.pos != body.len() {
        return Err("trailing bytes after the entries".to_string());
    }
    index.entries = entries;
    Ok(Decoded { index, identity })
}

/// An index file's header and spans, read from `file` (of `file_len`
/// bytes) and checked by their own CRC; the entries are neither read nor
/// checked: what a process serving a stored merged tree needs, whatever
/// the layer's file count.
pub fn decode_without_entries(
    file: &std::fs::File,
    file_len: u64,
    expected_digest: &Digest,
) -> Result<Decoded, String> {
    use std::os::unix::fs::FileExt;
    let read = |len: u64, at: u64| -> Result<Vec<u8>, String> {
        // The length comes from the file: a failed allocation is an error
        // (and a rebuild), never an abort.
        let len = usize::try_from(len).map_err(|_| "index spans too large")?;
        let mut buf = Vec::new();
        buf.try_reserve_exact(len)
            .map_err(|_| "index spans too large to read")?;
        buf.resize(len, 0);
        file.read_exact_at(&mut buf, at)
            .map_err(|e| format!("index is truncated ({e})"))?;
        Ok(buf)
    };
    let start = read((HEADER_LEN + SPANS_AT) as u64, 0)?;
    let identity = decode_header(&start[..HEADER_LEN], file_len, expected_digest)?;
    let spans_len = u64::from_le_bytes(
        start[HEADER_LEN + FIXED_LEN..HEADER_LEN + FIXED_LEN + 8]
            .try_into()
            .map_err(|_| "index is truncated")?,
    );
    // The entries' count must follow the spans.
    let head_len = (SPANS_AT as u64)
        .checked_add(spans_len)
        .filter(|&n| n.saturating_add(8) <= identity.body_len)
        .ok_or("index is truncated")?;
    // The head is mapped, not read: its windows stay where they are in the
    // page cache, shared by every span that names one, with nothing copied
    // or zeroed (a gzip layer has megabytes of them). Index files are
    // replaced by rename, never truncated, so the mapping stays whole.
    let mapped_len = (HEADER_LEN as u64)
        .checked_add(head_len)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or("index spans too large")?;
    // SAFETY: a read-only mapping of a cache file that is only ever
    // replaced by rename (see above).
    let map = unsafe { memmap2::MmapOptions::new().len(mapped_len).map(file) }
        .map_err(|e| format!("cannot map the index ({e})"))?;
    let mapped = bytes::Bytes::from_owner(map);
    let head = mapped.slice(HEADER_LEN..);
    let (index, _) = decode_head(&head, *expected_digest, Some(&head))?;
    Ok(Decoded { index, identity })
}

/// Make the header (magic, version, body length, body CRC) and the spans'
/// CRC of `bytes` valid again, whatever the body holds, where the spans'
/// length allows: for fuzzing and tests, so that changed bytes reach the
/// parsers instead of stopping at a checksum.
pub fn reseal(bytes: &mut [u8]) {
    if bytes.len() < HEADER_LEN {
        return;
    }
    let body_len = (bytes.len() - HEADER_LEN) as u64;
    bytes[..8].copy_from_slice(MAGIC);
    bytes[8..12].copy_from_slice(&VERSION.to_le_bytes());
    bytes[44..52].copy_from_slice(&body_len.to_le_bytes());
    let body = &mut bytes[HEADER_LEN..];
    if body.len() >= SPANS_AT {
        let spans_len = u64::from_le_bytes(
            body[FIXED_LEN..FIXED_LEN + 8]
                .try_into()
                .unwrap_or_default(),
        );
        if let Some(n) = usize::try_from(spans_len)
            .ok()
            .filter(|&n| n <= body.len() - SPANS_AT)
        {
            let crc = head_crc(body, n);
            body[FIXED_LEN + 8..SPANS_AT].copy_from_slice(&crc.to_le_bytes());
        }
    }
    let sha = crate::layer::spans::sha256(&bytes[HEADER_LEN..]);
    bytes[52..84].copy_from_slice(&sha);
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

    /// The spans of an index a test is changing (the only holder).
    fn spans_mut(ix: &mut LayerIndex) -> &mut [Span] {
        std::sync::Arc::get_mut(&mut ix.spans).expect("the test's own index")
    }

    fn sample() -> LayerIndex {
        let mut entry = TarEntry::new(b"etc/passwd", EntryKind::File);
        entry.mode = 0o4755;
        entry.uid = 1000;
        entry.gid = 5678;
        entry.mtime = -5;
        entry.mtime_nsec = 7;
        entry.size = 10;
        entry.data_offset = 512;
        entry.set_extra(EntryExtra {
            xattrs: vec![
                (b"user.a".to_vec(), b"\0bin".to_vec()),
                (b"security.capability".to_vec(), vec![1, 2]),
            ],
            ..EntryExtra::default()
        });
        let mut link = entry.clone();
        link.kind = EntryKind::Hardlink;
        link.set_path(b"bin/x");
        link.set_link(b"etc/passwd");
        link.set_extra(EntryExtra::default());
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
                    sha256: [1; 32],
                    start: SpanStart::GzipMember,
                },
                Span {
                    out_offset: 1024,
                    out_len: 1024,
                    in_offset: 40,
                    crc32: 2,
                    sha256: [2; 32],
                    start: SpanStart::GzipBlock {
                        bits: 3,
                        prime: 5,
                        window: vec![9; 17].into(),
                    },
                },
                Span {
                    out_offset: 2048,
                    out_len: 512,
                    in_offset: 60,
                    crc32: 3,
                    sha256: [3; 32],
                    start: SpanStart::GzipMember,
                },
                Span {
                    out_offset: 2560,
                    out_len: 512,
                    in_offset: 70,
                    crc32: 4,
                    sha256: [4; 32],
                    start: SpanStart::Materialized { frame_out: 2560 },
                },
            ]
            .into(),
            built_from: BuiltFrom::FullPass,
            prefetch_spans: 2,
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
            "index format version 99, this build reads 8"
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
                Box::new(|ix| spans_mut(ix)[2].start = zstd_frame(7)),
                "a span has a bad kind for the layer's compression",
            ),
            (
                Box::new(|ix| {
                    ix.compression = Compression::Zstd;
                    for span in &mut spans_mut(ix)[..3] {
                        span.start = zstd_frame(50);
                    }
                }),
                "a span has a bad frame range",
            ),
            (
                Box::new(|ix| spans_mut(ix)[3].start = SpanStart::Materialized { frame_out: 2561 }),
                "a span has a bad frame start",
            ),
            (
                Box::new(|ix| {
                    spans_mut(ix)[1].start = SpanStart::GzipBlock {
                        bits: 8,
                        prime: 0,
                        window: bytes::Bytes::new(),
                    }
                }),
                "a span has a bad bit offset",
            ),
            (
                Box::new(|ix| spans_mut(ix)[3].in_offset = 100),
                "a span has a bad blob offset",
            ),
            (
                Box::new(|ix| {
                    ix.compression = Compression::None;
                    ix.compressed_size = 3072;
                    for span in spans_mut(ix).iter_mut() {
                        span.start = SpanStart::Blob;
                        span.in_offset = span.out_offset;
                    }
                    spans_mut(ix)[3].in_offset = 2561;
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
            spans_mut(ix)[3].out_len = MAX_SPAN_BYTES + 1;
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
            index.entries[0].set_path(&path);
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
        let mut eager = sample();
        eager.prefetch_spans = eager.spans.len() as u32 + 1;
        assert_eq!(
            decoded(&eager).unwrap_err(),
            "more spans to prefetch than spans"
        );
        let mut crowded = sample();
        crowded.entries = vec![crowded.entries[0].clone(); 7];
        assert_eq!(
            decoded(&crowded).unwrap_err(),
            "more entries than the stream has room for"
        );
        // A table of contents' stream has no headers: its crowd is sound
        // (each TOC-built index was refused on loading, and built again).
        for built_from in [BuiltFrom::EstargzToc, BuiltFrom::ZstdChunkedToc] {
            crowded.built_from = built_from;
            assert_eq!(decoded(&crowded).unwrap().entries, crowded.entries);
        }
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
    fn the_spans_are_read_without_the_entries_and_checked_on_their_own() {
        let index = sample();
        let bytes = encode(&index);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index");
        let read = |bytes: &[u8]| {
            std::fs::write(&path, bytes).unwrap();
            let file = std::fs::File::open(&path).unwrap();
            decode_without_entries(&file, bytes.len() as u64, &index.digest)
        };
        let decoded = read(&bytes).unwrap();
        assert_eq!(decoded.index.spans, index.spans);
        assert!(decoded.index.entries.is_empty());
        let full = decode_full(&bytes, &index.digest).unwrap();
        assert_eq!(decoded.identity, full.identity);
        // Every byte of the head (fixed fields, spans) is checked; the
        // entries are not read at all.
        let entries_at = HEADER_LEN + SPANS_AT + {
            let at = HEADER_LEN + FIXED_LEN;
            u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize
        };
        for i in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x10;
            let result = read(&flipped);
            if (52..HEADER_LEN).contains(&i) || i >= entries_at {
                // The body CRC in the header, and the entries (their count
                // included) are not read.
                assert!(result.is_ok(), "byte {i}");
            } else {
                assert!(result.is_err(), "a flip of byte {i} was not noticed");
            }
        }
        for cut in 0..bytes.len() {
            assert!(read(&bytes[..cut]).is_err(), "truncated at {cut}");
        }
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
        "4f43494d4944580008000000fa2c8cc4f28176bbeed4b736df569a34c79cd372",
        "3e9ec42f9674b4d46ac6b8b82702000000000000424547c92403aca5896c91d4",
        "ce521953bf59f0187198a3895e2279c2cd0cb21490aebae315675cbf04612de4",
        "f7d5874850f48e0b8dd82becbeaa47ca93f5ebfb010002000000630000000000",
        "0000000c0000000000001b01000000000000afde2c3b04000000000000000000",
        "0000000000000004000000000000000000000000000001000000010101010101",
        "0101010101010101010101010101010101010101010101010101030004000000",
        "0000000004000000000000280000000000000002000000020202020202020202",
        "0202020202020202020202020202020202020202020202040305110000000909",
        "090909090909090909090909090909000800000000000000020000000000003c",
        "0000000000000003000000030303030303030303030303030303030303030303",
        "030303030303030303030303000a000000000000000200000000000046000000",
        "0000000004000000040404040404040404040404040404040404040404040404",
        "040404040404040401000a00000000000002000000000000000a000000657463",
        "2f70617373776400ed090000e80300002e160000fbffffffffffffff07000000",
        "0a00000000000000000200000000000000000000000000000000000002000000",
        "06000000757365722e61040000000062696e1300000073656375726974792e63",
        "61706162696c6974790200000001020500000062696e2f7803ed090000e80300",
        "002e160000fbffffffffffffff070000000a0000000000000000020000000000",
        "000a0000006574632f706173737764000000000000000000000000",
    );
}
