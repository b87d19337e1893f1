//! A table of contents' JSON (eStargz and zstd:chunked share its shape)
//! turned into a layer index: the entries as a full pass would read them
//! from the tar, and one span per chunk.
//!
//! The spans address a stream of our own, not the tar: the data of every
//! regular file, chunk after chunk, in TOC order (the TOC does not say
//! where a file lies in the tar, only in the blob). Each span starts at its
//! chunk's gzip member or zstd frame, and its SHA-256 is the chunk's
//! digest, which the TOC carries and the manifest vouches for through it.
//!
//! The JSON is parsed strictly as the untrusted input it is, and even once
//! its digest has been checked its entries may be hostile: names are
//! normalised as the tar reader normalises them, sizes and offsets are
//! bounded, chunks must tile their file exactly and lie in the blob, in
//! order, without overlapping.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Deserialize;

use crate::digest::Digest;
use crate::layer::layer_index::{BuiltFrom, LayerIndex};
use crate::layer::spans::{Span, SpanStart, FIXED_SPAN, MAX_SPAN_BYTES};
use crate::layer::LayerInfo;
use crate::limits::{MAX_PATH_BYTES, MAX_XATTR_VALUE_BYTES};
use crate::tar::entry::{EntryExtra, EntryKind, TarEntry};
use crate::tar::{normalize_path, DotDot};

use super::rfc3339;
use super::TocError;

/// The eStargz entry that follows the files its producer prioritised.
const PREFETCH_LANDMARK: &[u8] = b".prefetch.landmark";

/// eStargz's own entries, at the root only: the TOC's tar entry and the
/// prefetch landmarks. Hidden on both paths, as stargz-snapshotter hides
/// them (`crate::layer::index` drops them from a full pass too).
pub const ESTARGZ_OWN_ENTRIES: [&[u8]; 3] = [
    b"stargz.index.json",
    PREFETCH_LANDMARK,
    b".no.prefetch.landmark",
];

/// The most compressed input for a zstd:chunked chunk of `out_len` bytes
/// (at least `MAX_SPAN_BYTES`): a frame that did not compress, with room
/// for its headers.
fn max_frame_in(out_len: u64) -> u64 {
    let out = out_len.max(MAX_SPAN_BYTES);
    out + (out >> 7) + (64 << 10)
}

/// The longest zstd:chunked chunk taken (skopeo writes a file's run of
/// like bytes as one frame: 30 MiB for a 30 MiB text file); a longer one
/// sends the layer to a full pass.
pub const MAX_LARGE_CHUNK_BYTES: u64 = 1 << 30;
/// The most output of a layer's large chunks together: each is decoded
/// whole when the layer is indexed (`super::large_chunks`).
pub const MAX_LARGE_CHUNKS_TOTAL: u64 = 16 << 30;

/// A zstd:chunked chunk longer than a span: its spans are `Materialized`
/// pieces of `FIXED_SPAN` that name the frame's start, and their SHA-256s
/// are not known until the frame has been decoded and checked whole
/// against `digest` (`super::large_chunks::hash_spans` does it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LargeChunk {
    /// Its first span in the index, and how many it has.
    pub first_span: usize,
    pub spans: usize,
    /// Its frame in the blob.
    pub in_offset: u64,
    pub in_len: u64,
    /// The chunk's digest, from the TOC.
    pub digest: [u8; 32],
}

/// What a TOC's JSON makes: the layer's index, and its large chunks, whose
/// span digests are still to be taken.
#[derive(Debug)]
pub struct TocIndex {
    pub index: LayerIndex,
    pub large_chunks: Vec<LargeChunk>,
}

#[derive(Deserialize)]
struct Toc {
    version: u64,
    entries: Vec<TocEntry>,
}

/// One entry, with the fields both formats write (others are ignored:
/// `accesstime`, `userName`, …, which the tree does not keep).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TocEntry {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    modtime: Option<String>,
    #[serde(default)]
    link_name: String,
    #[serde(default)]
    mode: u64,
    #[serde(default)]
    uid: u64,
    #[serde(default)]
    gid: u64,
    #[serde(default)]
    dev_major: u64,
    #[serde(default)]
    dev_minor: u64,
    #[serde(default)]
    xattrs: BTreeMap<String, String>,
    #[serde(default)]
    digest: Option<String>,
    #[serde(default)]
    offset: u64,
    #[serde(default)]
    end_offset: u64,
    #[serde(default)]
    chunk_offset: u64,
    #[serde(default)]
    chunk_size: u64,
    #[serde(default)]
    chunk_digest: Option<String>,
    #[serde(default)]
    inner_offset: u64,
}

/// One chunk of a regular file, as the TOC places it.
struct Chunk {
    /// Where its member or frame starts in the blob.
    in_offset: u64,
    /// Where it starts in its file.
    file_offset: u64,
    /// Its length, where the TOC gives it (the last one may leave it out).
    len: Option<u64>,
    digest: Option<[u8; 32]>,
}

/// A regular file whose chunks are being gathered.
struct OpenFile {
    name: String,
    size: u64,
    digest: Option<[u8; 32]>,
    /// zstd:chunked: where the file's last frame ends.
    end_offset: u64,
    chunks: Vec<Chunk>,
    /// An eStargz entry of its own, hidden: its chunks make no span.
    hidden: bool,
}

/// The index `json` describes. `format` says how chunks start (gzip
/// members or zstd frames); chunk data must lie before `data_end`, where
/// the TOC itself begins.
pub fn index_from_toc(
    layer: &LayerInfo,
    json: &[u8],
    format: BuiltFrom,
    data_end: u64,
) -> Result<TocIndex, TocError> {
    let toc: Toc =
        serde_json::from_slice(json).map_err(|e| TocError::Malformed(format!("JSON: {e}")))?;
    if toc.version != 1 {
        return Err(TocError::Unsupported(format!(
            "TOC version {} (only 1 is known)",
            toc.version
        )));
    }
    let mut builder = Builder {
        format,
        data_end,
        entries: Vec::with_capacity(toc.entries.len()),
        spans: Vec::new(),
        stream_len: 0,
        blob_pos: 0,
        file: None,
        prefetch_spans: 0,
        large_chunks: Vec::new(),
        large_total: 0,
    };
    for (i, entry) in toc.entries.into_iter().enumerate() {
        builder.add(entry).map_err(|e| e.at_entry(i))?;
    }
    builder.close_file()?;
    let index = LayerIndex {
        digest: layer.digest,
        // Not checked here: only a full pass hashes the tar.
        diff_id: layer.diff_id,
        compression: layer.compression,
        compressed_size: layer.size,
        uncompressed_size: builder.stream_len,
        entries: builder.entries,
        spans: builder.spans.into(),
        built_from: format,
        prefetch_spans: builder.prefetch_spans,
    };
    Ok(TocIndex {
        index,
        large_chunks: builder.large_chunks,
    })
}

struct Builder {
    format: BuiltFrom,
    data_end: u64,
    entries: Vec<TarEntry>,
    spans: Vec<Span>,
    /// The length of our stream so far: where the next file's data goes.
    stream_len: u64,
    /// The first blob byte the next chunk may start at.
    blob_pos: u64,
    file: Option<OpenFile>,
    /// The spans before eStargz's `.prefetch.landmark`, once it is met.
    prefetch_spans: u32,
    large_chunks: Vec<LargeChunk>,
    /// The bytes of the large chunks so far.
    large_total: u64,
}

fn malformed(reason: impl Into<String>) -> TocError {
    TocError::Malformed(reason.into())
}

fn sha256_of(text: &str, what: &str) -> Result<[u8; 32], TocError> {
    let digest = Digest::parse(text).map_err(|e| malformed(format!("{what} {text:?}: {e}")))?;
    Ok(*digest.as_bytes())
}

fn id32(value: u64, what: &str) -> Result<u32, TocError> {
    u32::try_from(value).map_err(|_| malformed(format!("{what} {value} is out of range")))
}

impl Builder {
    fn add(&mut self, e: TocEntry) -> Result<(), TocError> {
        if e.kind == "chunk" {
            return self.add_chunk(e);
        }
        self.close_file()?;
        // JSON holds text: a tar name that is not UTF-8 (Latin-1, say) was
        // written by the producer with U+FFFD in its place, which cannot be
        // turned back into the name. Only a full pass reads it right.
        if [&e.name, &e.link_name]
            .into_iter()
            .chain(e.xattrs.keys())
            .any(|text| text.contains(char::REPLACEMENT_CHARACTER))
        {
            return Err(TocError::Unsupported(format!(
                "{:?}: a name that is not UTF-8 in the tar (the TOC holds U+FFFD in its place)",
                e.name
            )));
        }
        let path = normalize_path(e.name.as_bytes(), DotDot::Reject)
            .map_err(|reason| malformed(format!("name {:?}: {reason}", e.name)))?;
        let kind = match e.kind.as_str() {
            "dir" => EntryKind::Dir,
            "reg" => EntryKind::File,
            "symlink" => EntryKind::Symlink,
            "hardlink" => EntryKind::Hardlink,
            "char" => EntryKind::CharDevice,
            "block" => EntryKind::BlockDevice,
            "fifo" => EntryKind::Fifo,
            other => return Err(malformed(format!("{:?}: unknown type {other:?}", e.name))),
        };
        if path.is_empty() && kind != EntryKind::Dir {
            return Err(malformed(format!(
                "{:?}: an entry other than a directory names the root",
                e.name
            )));
        }
        let link = match kind {
            EntryKind::Symlink | EntryKind::Hardlink => {
                let raw = e.link_name.as_bytes();
                if raw.is_empty() || raw.len() > MAX_PATH_BYTES || raw.contains(&0) {
                    return Err(malformed(format!(
                        "{:?}: the link target is empty, too long or holds a NUL byte",
                        e.name
                    )));
                }
                if kind == EntryKind::Hardlink {
                    let target = normalize_path(raw, DotDot::ClampAtRoot)
                        .map_err(|reason| malformed(format!("{:?}: {reason}", e.name)))?;
                    if target.is_empty() {
                        return Err(malformed(format!(
                            "{:?}: the hardlink target is the root directory",
                            e.name
                        )));
                    }
                    target
                } else {
                    raw.to_vec()
                }
            }
            _ => Vec::new(),
        };
        let (mtime, mtime_nsec) = match e.modtime.as_deref() {
            None | Some("") => (0, 0),
            Some(text) => {
                rfc3339::parse(text).map_err(|r| malformed(format!("{:?}: {r}", e.name)))?
            }
        };
        let mut xattrs = Vec::with_capacity(e.xattrs.len());
        for (name, value) in &e.xattrs {
            let value = base64::engine::general_purpose::STANDARD
                .decode(value)
                .map_err(|err| malformed(format!("{:?}: xattr {name:?}: {err}", e.name)))?;
            if name.is_empty() || name.contains('\0') || value.len() > MAX_XATTR_VALUE_BYTES {
                return Err(malformed(format!("{:?}: a bad xattr {name:?}", e.name)));
            }
            xattrs.push((name.clone().into_bytes(), value));
        }
        let size = if kind == EntryKind::File { e.size } else { 0 };
        let mut entry = TarEntry::with_link(&path, &link, kind);
        entry.mode = (e.mode & 0o7777) as u32;
        entry.uid = id32(e.uid, "uid")?;
        entry.gid = id32(e.gid, "gid")?;
        entry.mtime = mtime;
        entry.mtime_nsec = mtime_nsec;
        entry.size = size;
        entry.data_offset = self.stream_len;
        let (dev_major, dev_minor) = match kind {
            EntryKind::CharDevice | EntryKind::BlockDevice => (
                id32(e.dev_major, "devMajor")?,
                id32(e.dev_minor, "devMinor")?,
            ),
            _ => (0, 0),
        };
        entry.set_extra(EntryExtra {
            dev_major,
            dev_minor,
            xattrs,
        });
        let hidden =
            self.format == BuiltFrom::EstargzToc && ESTARGZ_OWN_ENTRIES.contains(&path.as_slice());
        if hidden && path == PREFETCH_LANDMARK {
            // The files before it (their spans, all closed by now) are the
            // ones its producer expects to be read first.
            self.prefetch_spans = u32::try_from(self.spans.len())
                .map_err(|_| malformed("more spans than an index holds"))?;
        }
        if kind == EntryKind::File && size > 0 {
            let digest = e
                .digest
                .as_deref()
                .map(|d| sha256_of(d, "digest"))
                .transpose()?;
            let first = self.chunk_of(&e, 0)?;
            self.file = Some(OpenFile {
                name: e.name,
                size,
                digest,
                end_offset: e.end_offset,
                chunks: vec![first],
                hidden,
            });
        }
        if !hidden {
            self.entries.push(entry);
        }
        Ok(())
    }

    /// The chunk `e` places at `file_offset` of its file.
    fn chunk_of(&self, e: &TocEntry, file_offset: u64) -> Result<Chunk, TocError> {
        if e.inner_offset != 0 {
            return Err(TocError::Unsupported(format!(
                "{:?}: a chunk inside a gzip member (innerOffset {})",
                e.name, e.inner_offset
            )));
        }
        Ok(Chunk {
            in_offset: e.offset,
            file_offset,
            len: (e.chunk_size > 0).then_some(e.chunk_size),
            digest: e
                .chunk_digest
                .as_deref()
                .map(|d| sha256_of(d, "chunkDigest"))
                .transpose()?,
        })
    }

    fn add_chunk(&mut self, e: TocEntry) -> Result<(), TocError> {
        let Some(file) = &self.file else {
            return Err(malformed(format!(
                "{:?}: a chunk that follows no regular file with data",
                e.name
            )));
        };
        if file.name != e.name {
            return Err(malformed(format!(
                "a chunk of {:?} among those of {:?}",
                e.name, file.name
            )));
        }
        let last = file.chunks.last().expect("a file starts with a chunk");
        let expected = last.len.map(|len| last.file_offset.saturating_add(len));
        if expected != Some(e.chunk_offset) {
            return Err(malformed(format!(
                "{:?}: a chunk at offset {} of the file, where {} was expected",
                e.name,
                e.chunk_offset,
                expected.map_or("none (the chunk before has no size)".to_string(), |o| {
                    o.to_string()
                })
            )));
        }
        let chunk = self.chunk_of(&e, e.chunk_offset)?;
        self.file
            .as_mut()
            .expect("checked above")
            .chunks
            .push(chunk);
        Ok(())
    }

    /// The open file's chunks as spans, once they are all known.
    fn close_file(&mut self) -> Result<(), TocError> {
        let Some(file) = self.file.take() else {
            return Ok(());
        };
        let n = file.chunks.len();
        for (k, chunk) in file.chunks.iter().enumerate() {
            let rest = file.size.checked_sub(chunk.file_offset).filter(|&r| r > 0);
            let out_len = match (chunk.len, rest) {
                (_, None) => None,
                // The last chunk runs to the end of the file.
                (None, Some(rest)) if k + 1 == n => Some(rest),
                (Some(len), Some(rest)) if len <= rest && (k + 1 < n || len == rest) => Some(len),
                _ => None,
            };
            let Some(out_len) = out_len else {
                return Err(malformed(format!(
                    "{:?}: its chunks do not cover its {} bytes exactly",
                    file.name, file.size
                )));
            };
            let large = out_len > MAX_SPAN_BYTES;
            if large && self.format != BuiltFrom::ZstdChunkedToc {
                return Err(TocError::Unsupported(format!(
                    "{:?}: a chunk of {out_len} bytes, over the {MAX_SPAN_BYTES}-byte span limit",
                    file.name
                )));
            }
            if large {
                self.large_total = self.large_total.saturating_add(out_len);
                if out_len > MAX_LARGE_CHUNK_BYTES || self.large_total > MAX_LARGE_CHUNKS_TOTAL {
                    return Err(TocError::Unsupported(format!(
                        "{:?}: a chunk of {out_len} bytes (at most {MAX_LARGE_CHUNK_BYTES} a \
                         chunk and {MAX_LARGE_CHUNKS_TOTAL} a layer are decoded when it is indexed)",
                        file.name
                    )));
                }
            }
            let digest = match (chunk.digest, file.digest) {
                (Some(d), Some(whole)) if n == 1 && d != whole => {
                    return Err(malformed(format!(
                        "{:?}: one chunk, whose digest is not the file's",
                        file.name
                    )))
                }
                (Some(d), _) => d,
                (None, Some(whole)) if n == 1 => whole,
                _ => {
                    return Err(malformed(format!(
                        "{:?}: a chunk without a digest",
                        file.name
                    )))
                }
            };
            if chunk.in_offset < self.blob_pos || chunk.in_offset >= self.data_end {
                return Err(malformed(format!(
                    "{:?}: a chunk at blob offset {}, outside [{}, {}) (chunks must lie in \
                     the blob, in order, without overlapping)",
                    file.name, chunk.in_offset, self.blob_pos, self.data_end
                )));
            }
            let (start, frame_in) = match self.format {
                BuiltFrom::ZstdChunkedToc => {
                    let end = match file.chunks.get(k + 1) {
                        Some(next) => next.in_offset,
                        None => file.end_offset,
                    };
                    let in_len = end
                        .checked_sub(chunk.in_offset)
                        .filter(|&len| {
                            len > 0 && len <= max_frame_in(out_len) && end <= self.data_end
                        })
                        .ok_or_else(|| {
                            malformed(format!(
                                "{:?}: a chunk's frame at [{}, {end}) is empty, too long or \
                                 past the data",
                                file.name, chunk.in_offset
                            ))
                        })?;
                    self.blob_pos = end;
                    (SpanStart::ZstdFrame { in_len }, in_len)
                }
                _ => {
                    self.blob_pos = chunk.in_offset + 1;
                    (SpanStart::GzipMember, 0)
                }
            };
            if file.hidden {
                continue;
            }
            if large {
                self.push_large_chunk(chunk.in_offset, frame_in, out_len, digest);
                continue;
            }
            self.spans.push(Span {
                out_offset: self.stream_len,
                out_len,
                in_offset: chunk.in_offset,
                crc32: 0,
                sha256: digest,
                start,
            });
            self.stream_len += out_len;
        }
        Ok(())
    }
}

impl Builder {
    /// A large chunk's spans: `FIXED_SPAN` pieces of its frame's output,
    /// each naming where that output starts, their digests to be taken.
    fn push_large_chunk(&mut self, in_offset: u64, in_len: u64, out_len: u64, digest: [u8; 32]) {
        let first_span = self.spans.len();
        let frame_out = self.stream_len;
        let mut left = out_len;
        while left > 0 {
            let piece = left.min(FIXED_SPAN);
            self.spans.push(Span {
                out_offset: self.stream_len,
                out_len: piece,
                in_offset,
                crc32: 0,
                sha256: [0; 32],
                start: SpanStart::Materialized { frame_out },
            });
            self.stream_len += piece;
            left -= piece;
        }
        self.large_chunks.push(LargeChunk {
            first_span,
            spans: self.spans.len() - first_span,
            in_offset,
            in_len,
            digest,
        });
    }
}

impl TocError {
    fn at_entry(self, i: usize) -> TocError {
        match self {
            TocError::Malformed(r) => TocError::Malformed(format!("entry {i}: {r}")),
            TocError::Unsupported(r) => TocError::Unsupported(format!("entry {i}: {r}")),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::Compression;

    const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const C: &str = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";

    fn layer(compression: Compression) -> LayerInfo {
        LayerInfo {
            position: 0,
            digest: Digest::of(b"blob"),
            size: 10_000,
            media_type: "test".to_string(),
            compression,
            diff_id: Digest::of(b"tar"),
            toc: None,
        }
    }

    fn estargz(entries: &str) -> Result<LayerIndex, TocError> {
        let json = format!(r#"{{"version": 1, "entries": [{entries}]}}"#);
        index_from_toc(
            &layer(Compression::Gzip),
            json.as_bytes(),
            BuiltFrom::EstargzToc,
            9_000,
        )
        .map(|built| built.index)
    }

    fn zstd_chunked(entries: &str) -> Result<LayerIndex, TocError> {
        let json = format!(r#"{{"version": 1, "entries": [{entries}]}}"#);
        index_from_toc(
            &layer(Compression::Zstd),
            json.as_bytes(),
            BuiltFrom::ZstdChunkedToc,
            9_000,
        )
        .map(|built| built.index)
    }

    fn sha(text: &str) -> [u8; 32] {
        *Digest::parse(text).unwrap().as_bytes()
    }

    /// Each span as (stream offset, length, blob offset, SHA-256, start).
    fn span_places(index: &LayerIndex) -> Vec<(u64, u64, u64, [u8; 32], SpanStart)> {
        index
            .spans
            .iter()
            .map(|s| {
                (
                    s.out_offset,
                    s.out_len,
                    s.in_offset,
                    s.sha256,
                    s.start.clone(),
                )
            })
            .collect()
    }

    #[test]
    fn an_estargz_toc_gives_entries_and_a_span_per_chunk() {
        let index = estargz(&format!(
            r#"{{"name": "./", "type": "dir", "mode": 493, "modtime": "2025-01-01T00:00:00Z"}},
               {{"name": "bin/big", "type": "reg", "size": 300, "mode": 493, "uid": 7, "gid": 8,
                 "offset": 100, "chunkSize": 200, "digest": "{C}", "chunkDigest": "{A}"}},
               {{"name": "bin/big", "type": "chunk", "offset": 400, "chunkOffset": 200, "chunkDigest": "{B}"}},
               {{"name": ".prefetch.landmark", "type": "reg", "size": 1, "offset": 500, "digest": "{C}", "chunkDigest": "{C}"}},
               {{"name": "bin/sh", "type": "symlink", "linkName": "big"}},
               {{"name": "bin/.wh.old", "type": "reg", "digest": "{C}"}},
               {{"name": "dev/null", "type": "char", "devMajor": 1, "devMinor": 3, "mode": 438,
                 "xattrs": {{"user.a": "AGJpbg=="}}}},
               {{"name": "bin/hard", "type": "hardlink", "linkName": "./bin/../bin/big"}}"#
        ))
        .unwrap();
        let described: Vec<String> = index
            .entries
            .iter()
            .map(|e| {
                format!(
                    "{} {:?} {:o} {}:{} {} {} {}@{} {:?} {:?}",
                    String::from_utf8_lossy(e.path()),
                    e.kind,
                    e.mode,
                    e.uid,
                    e.gid,
                    e.mtime,
                    String::from_utf8_lossy(e.link()),
                    e.size,
                    e.data_offset,
                    e.device(),
                    e.xattrs()
                )
            })
            .collect();
        assert_eq!(
            described,
            [
                " Dir 755 0:0 1735689600  0@0 (0, 0) []",
                "bin/big File 755 7:8 0  300@0 (0, 0) []",
                "bin/sh Symlink 0 0:0 0 big 0@300 (0, 0) []",
                "bin/.wh.old File 0 0:0 0  0@300 (0, 0) []",
                "dev/null CharDevice 666 0:0 0  0@300 (1, 3) [([117, 115, 101, 114, 46, 97], [0, 98, 105, 110])]",
                "bin/hard Hardlink 0 0:0 0 bin/big 0@300 (0, 0) []",
            ]
        );
        assert_eq!(index.uncompressed_size, 300);
        assert_eq!(index.built_from, BuiltFrom::EstargzToc);
        // bin/big's two chunks come before the landmark.
        assert_eq!(index.prefetch_spans, 2);
        let spans = span_places(&index);
        assert_eq!(
            spans,
            [
                (0, 200, 100, sha(A), SpanStart::GzipMember),
                (200, 100, 400, sha(B), SpanStart::GzipMember),
            ]
        );
    }

    #[test]
    fn a_zstd_chunked_toc_gives_frames_that_end_where_the_next_begins() {
        let index = zstd_chunked(&format!(
            r#"{{"type": "reg", "name": "a", "size": 5, "offset": 10, "endOffset": 40, "digest": "{A}"}},
               {{"type": "reg", "name": "b", "size": 3000, "offset": 50, "endOffset": 300, "digest": "{C}",
                 "chunkSize": 1000, "chunkDigest": "{B}"}},
               {{"type": "chunk", "name": "b", "offset": 100, "chunkOffset": 1000, "chunkSize": 2000,
                 "chunkDigest": "{C}", "chunkType": "zeros"}}"#
        ))
        .unwrap();
        let spans = span_places(&index);
        assert_eq!(
            spans,
            [
                (0, 5, 10, sha(A), SpanStart::ZstdFrame { in_len: 30 }),
                (5, 1000, 50, sha(B), SpanStart::ZstdFrame { in_len: 50 }),
                (
                    1005,
                    2000,
                    100,
                    sha(C),
                    SpanStart::ZstdFrame { in_len: 200 }
                ),
            ]
        );
        assert_eq!(index.entries[1].data_offset, 5);
    }

    #[test]
    fn hostile_tocs_are_refused_with_a_reason() {
        let cases: Vec<(Result<LayerIndex, TocError>, &str)> = vec![
            (
                estargz(&format!(
                    r#"{{"name": "a", "type": "reg", "size": 5, "offset": 9000, "chunkDigest": "{A}"}}"#
                )),
                "outside [0, 9000)",
            ),
            (
                estargz(&format!(
                    r#"{{"name": "a", "type": "reg", "size": 5, "offset": 300, "chunkDigest": "{A}"}},
                       {{"name": "b", "type": "reg", "size": 5, "offset": 200, "chunkDigest": "{A}"}}"#
                )),
                "without overlapping",
            ),
            (
                zstd_chunked(&format!(
                    r#"{{"type": "reg", "name": "a", "size": 5, "offset": 10, "endOffset": 60, "digest": "{A}"}},
                       {{"type": "reg", "name": "b", "size": 5, "offset": 50, "endOffset": 70, "digest": "{A}"}}"#
                )),
                "without overlapping",
            ),
            (
                zstd_chunked(&format!(
                    r#"{{"type": "reg", "name": "a", "size": 5, "offset": 10, "endOffset": 9500, "digest": "{A}"}}"#
                )),
                "past the data",
            ),
            (
                estargz(&format!(
                    r#"{{"name": "a", "type": "reg", "size": 500, "offset": 10, "chunkSize": 200, "chunkDigest": "{A}"}},
                       {{"name": "a", "type": "chunk", "offset": 20, "chunkOffset": 300, "chunkDigest": "{A}"}}"#
                )),
                "where 200 was expected",
            ),
            (
                estargz(&format!(
                    r#"{{"name": "a", "type": "reg", "size": 500, "offset": 10, "chunkSize": 600, "chunkDigest": "{A}"}}"#
                )),
                "do not cover its 500 bytes exactly",
            ),
            (
                estargz(&format!(
                    r#"{{"name": "a", "type": "chunk", "offset": 10, "chunkDigest": "{A}"}}"#
                )),
                "follows no regular file",
            ),
            (
                estargz(&format!(
                    r#"{{"name": "a", "type": "reg", "size": 5, "offset": 10, "digest": "{B}", "chunkDigest": "{A}"}}"#
                )),
                "whose digest is not the file's",
            ),
            (
                estargz(r#"{"name": "a", "type": "reg", "size": 5, "offset": 10}"#),
                "a chunk without a digest",
            ),
            (
                estargz(&format!(
                    r#"{{"name": "a", "type": "reg", "size": 99999999, "offset": 10, "chunkDigest": "{A}"}}"#
                )),
                "over the 4194304-byte span limit",
            ),
            (
                zstd_chunked(&format!(
                    r#"{{"type": "reg", "name": "a", "size": 1073741825, "offset": 10, "endOffset": 8000, "digest": "{A}"}}"#
                )),
                "a chunk of 1073741825 bytes (at most 1073741824 a chunk",
            ),
            (
                estargz(&format!(
                    r#"{{"name": "a", "type": "reg", "size": 5, "offset": 10, "innerOffset": 3, "chunkDigest": "{A}"}}"#
                )),
                "innerOffset 3",
            ),
            (
                estargz(r#"{"name": "../etc/passwd", "type": "reg"}"#),
                "the path contains '..'",
            ),
            (
                estargz(r#"{"name": "x", "type": "socket"}"#),
                "unknown type",
            ),
            (estargz(r#"{"name": "/", "type": "reg"}"#), "names the root"),
            (
                estargz(r#"{"name": "l", "type": "symlink"}"#),
                "the link target is empty",
            ),
            (
                estargz(r#"{"name": "u", "type": "dir", "uid": 4294967296}"#),
                "uid 4294967296",
            ),
            (
                estargz(r#"{"name": "t", "type": "dir", "modtime": "yesterday"}"#),
                "not an RFC 3339 time",
            ),
            (estargz(r#"{"name": 5, "type": "dir"}"#), "JSON"),
            (
                estargz(r#"{"name": "caf\ufffd-latin1", "type": "dir"}"#),
                "not UTF-8 in the tar",
            ),
            (
                estargz(r#"{"name": "l", "type": "symlink", "linkName": "\ufffd"}"#),
                "not UTF-8 in the tar",
            ),
        ];
        for (i, (result, needle)) in cases.into_iter().enumerate() {
            let err = result
                .err()
                .unwrap_or_else(|| panic!("case {i} was accepted"));
            assert!(err.to_string().contains(needle), "case {i}: {err}");
        }
        let json = br#"{"version": 2, "entries": []}"#;
        let err =
            index_from_toc(&layer(Compression::Gzip), json, BuiltFrom::EstargzToc, 10).unwrap_err();
        assert_eq!(
            err.to_string(),
            "TOC version 2 (only 1 is known) is not supported"
        );
    }

    /// A zstd:chunked chunk longer than a span (skopeo writes one frame for
    /// a long run of like bytes) becomes `FIXED_SPAN` pieces that name the
    /// frame's start, its digests still to be taken; the next file's span
    /// follows it in the stream.
    #[test]
    fn a_large_zstd_chunked_chunk_becomes_materialised_pieces_of_its_frame() {
        let size = 2 * MAX_SPAN_BYTES + 5;
        let json = format!(
            r#"{{"version": 1, "entries": [
                {{"type": "reg", "name": "big", "size": {size}, "offset": 100, "endOffset": 3000, "digest": "{A}"}},
                {{"type": "reg", "name": "small", "size": 7, "offset": 3000, "endOffset": 3100, "digest": "{B}"}}
            ]}}"#
        );
        let built = index_from_toc(
            &layer(Compression::Zstd),
            json.as_bytes(),
            BuiltFrom::ZstdChunkedToc,
            9_000,
        )
        .unwrap();
        let pieces = size.div_ceil(FIXED_SPAN) as usize;
        assert_eq!(
            built.large_chunks,
            vec![LargeChunk {
                first_span: 0,
                spans: pieces,
                in_offset: 100,
                in_len: 2900,
                digest: sha(A),
            }]
        );
        let spans = &built.index.spans;
        assert_eq!(spans.len(), pieces + 1);
        for (k, span) in spans[..pieces].iter().enumerate() {
            assert_eq!(span.out_offset, k as u64 * FIXED_SPAN);
            assert_eq!(span.in_offset, 100);
            assert_eq!(span.start, SpanStart::Materialized { frame_out: 0 });
            assert_eq!(span.sha256, [0; 32]);
        }
        assert_eq!(
            spans[pieces - 1].out_len,
            size - (pieces as u64 - 1) * FIXED_SPAN
        );
        assert_eq!(spans[pieces].out_offset, size);
        assert_eq!(spans[pieces].start, SpanStart::ZstdFrame { in_len: 100 });
        assert_eq!(spans[pieces].sha256, sha(B));
        assert_eq!(built.index.uncompressed_size, size + 7);
    }
}
