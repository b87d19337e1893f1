//! Spans: the units of random access into a layer's uncompressed stream.
//!
//! Every byte of the stream belongs to exactly one span. A span says where
//! decoding can start for it and carries a SHA-256 and a CRC-32 of its
//! bytes, taken during the verified indexing pass (whose blob digest ties
//! them to the manifest). Bytes that come from a remote (a registry, the
//! store it redirects to) are checked against the SHA-256 before they are
//! served or stored: a CRC-32 can be forged with four chosen bytes. The
//! CRC-32 detects damage to local copies (the data cache, a local blob).

use std::ops::{Range, RangeInclusive};

use sha2::{Digest as _, Sha256};

use crate::layer::background_hash::{SegmentEvent, SegmentHasher};

/// Plain and materialised streams are cut into spans of this size.
pub const FIXED_SPAN: u64 = 1 << 20;

/// The cap on one span's decoded bytes (see `crate::limits`).
pub use crate::limits::MAX_SPAN_BYTES;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpanStart {
    /// Plain tar: the bytes are the blob's own, at the same offset.
    Blob,
    /// Written to the cache's data file during indexing: part of a zstd
    /// frame, or of a deflate block, whose output exceeds `MAX_SPAN_BYTES`.
    /// zstd: `in_offset` is where the frame starts in the blob and
    /// `frame_out` where its output starts. gzip: `frame_out` is the start of
    /// the span of the last checkpoint before it (`in_offset` is that span's
    /// too). Either way a damaged copy can be decoded again from there.
    Materialized { frame_out: u64 },
    /// A zstd frame starts at `in_offset` and is `in_len` bytes long.
    ZstdFrame { in_len: u64 },
    /// A gzip member header starts at `in_offset`.
    GzipMember,
    /// Raw deflate resumes at `in_offset` after priming `bits` bits of
    /// `prime`, with `window` (deflate-compressed) as the dictionary. The
    /// window is shared, not copied: a range of the index file's mapping
    /// where the index was loaded for serving (a gzip layer's windows are
    /// megabytes; copying them was most of a warm mount).
    GzipBlock {
        bits: u8,
        prime: u8,
        window: bytes::Bytes,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Span {
    pub out_offset: u64,
    pub out_len: u64,
    pub in_offset: u64,
    pub crc32: u32,
    /// SHA-256 of the span's compressed range where the index was built
    /// by a full pass and the span starts on its own, else of its decoded
    /// bytes (see `BuiltFrom::hashes_compressed_range`).
    pub sha256: [u8; 32],
    pub start: SpanStart,
}

/// A materialised stretch (one zstd frame, or deflate blocks longer than a
/// span) decoded front to back from its start: `first` is the index of its
/// first span, and each `fill` hands out the next bytes of its output.
pub struct Stretch<'a> {
    pub first: usize,
    fill: Box<FillFn<'a>>,
}

/// What hands out a stretch's bytes.
type FillFn<'a> = dyn FnMut(&mut [u8]) -> std::io::Result<()> + 'a;

impl<'a> Stretch<'a> {
    pub fn new(first: usize, fill: impl FnMut(&mut [u8]) -> std::io::Result<()> + 'a) -> Self {
        Stretch {
            first,
            fill: Box::new(fill),
        }
    }

    /// The next `out.len()` bytes of the stretch.
    pub fn fill(&mut self, out: &mut [u8]) -> std::io::Result<()> {
        (self.fill)(out)
    }
}

/// The SHA-256 of `bytes`, as a span records it.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// A span digest as text, for messages.
pub fn hex(digest: &[u8; 32]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn crc32(crc: u32, data: &[u8]) -> u32 {
    let mut crc = crc as libc::c_ulong;
    for chunk in data.chunks(u32::MAX as usize) {
        // SAFETY: the pointer and length describe a live slice.
        crc = unsafe { libz_rs_sys::crc32(crc, chunk.as_ptr(), chunk.len() as u32) };
    }
    crc as u32
}

/// How a span built by [`SpanBuilder`] is hashed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanDigest {
    /// Over its decoded bytes (`Blob`, `Materialized`).
    Decoded,
    /// Over its compressed range (see [`compressed_range`]): the input the
    /// indexer hands [`SpanBuilder::input`] while it is the running segment.
    CompressedRange,
}

/// Accumulates spans as the decoder produces output, with their digests:
/// over the compressed range a span is fetched from where it starts on its
/// own (a gzip member or checkpoint, a zstd frame), else over its decoded
/// bytes (see `BuiltFrom::hashes_compressed_range`).
#[derive(Default)]
pub struct SpanBuilder {
    spans: Vec<Span>,
    /// For each span of `spans`, how it is hashed and its digest's place
    /// in that hasher's list.
    digest_at: Vec<(SpanDigest, usize)>,
    current: Option<Span>,
    /// How the current span is hashed, and whether it has had output.
    current_digest: Option<SpanDigest>,
    /// Segments of the decoded stream: spans hashed over their bytes.
    decoded: SegmentHasher,
    /// Segments of the blob: spans hashed over their compressed range.
    input: SegmentHasher,
    /// Decoded segments begun, kept or not: the next one's place.
    decoded_begun: usize,
    /// Compressed-range spans kept so far: the next one's place.
    compressed_kept: usize,
    /// How many spans were begun: the next one's id.
    begun: usize,
    /// For each span of `spans`, the id `begin` gave it.
    ids: Vec<usize>,
    out_pos: u64,
}

impl SpanBuilder {
    /// A builder whose spans are hashed on threads of their own (named
    /// after `name`), or in place where none can be started.
    pub fn hashing_apart(name: &str) -> SpanBuilder {
        SpanBuilder {
            decoded: SegmentHasher::apart(name),
            input: SegmentHasher::apart(&format!("{name}-in")),
            ..SpanBuilder::default()
        }
    }

    /// Close the current span and open one that starts here, hashed over
    /// its decoded bytes; returns its id, for `set_start`.
    pub fn begin(&mut self, start: SpanStart, in_offset: u64) -> usize {
        self.close();
        self.decoded.event(SegmentEvent::Start);
        self.decoded_begun += 1;
        self.open(start, in_offset, SpanDigest::Decoded)
    }

    /// Close the current span and open one that starts here on its own,
    /// hashed over its compressed range. `opens`: the blob's input from
    /// here is the new span's (a gzip member or checkpoint; `overlap` is
    /// the byte holding a checkpoint's first bits, already given to
    /// `input`), and if the span gets no output it goes to the span
    /// before. Without it the indexer marks the range itself with
    /// `input_event` (a zstd frame, known only at its end).
    pub fn begin_compressed(
        &mut self,
        start: SpanStart,
        in_offset: u64,
        opens: Option<Option<u8>>,
    ) -> usize {
        self.close();
        if let Some(overlap) = opens {
            self.input.event(SegmentEvent::Open { overlap });
        }
        self.open(start, in_offset, SpanDigest::CompressedRange)
    }

    fn open(&mut self, start: SpanStart, in_offset: u64, digest: SpanDigest) -> usize {
        self.current = Some(Span {
            out_offset: self.out_pos,
            out_len: 0,
            in_offset,
            crc32: 0,
            sha256: [0; 32],
            start,
        });
        self.current_digest = Some(digest);
        self.begun += 1;
        self.begun - 1
    }

    /// Blob bytes the indexer consumed, in order.
    pub fn input(&mut self, bytes: &[u8]) {
        self.input.update(bytes);
    }

    /// Mark the blob's segments at this point of the input (see
    /// `begin_compressed`).
    pub fn input_event(&mut self, event: SegmentEvent) {
        self.input.event(event);
    }

    /// Replace the start of span `id` (a checkpoint whose window is known
    /// only after the output that follows it). A span dropped as empty is
    /// left alone.
    pub fn set_start(&mut self, id: usize, start: SpanStart) {
        if id + 1 == self.begun {
            if let Some(span) = &mut self.current {
                span.start = start;
                return;
            }
        }
        if let Ok(at) = self.ids.binary_search(&id) {
            self.spans[at].start = start;
        }
    }

    pub fn feed(&mut self, data: &[u8]) {
        if let Some(span) = &mut self.current {
            if !data.is_empty() {
                match self.current_digest {
                    Some(SpanDigest::Decoded) => self.decoded.update(data),
                    Some(SpanDigest::CompressedRange) if span.out_len == 0 => {
                        self.input.event(SegmentEvent::Keep)
                    }
                    _ => {}
                }
            }
            span.crc32 = crc32(span.crc32, data);
            span.out_len += data.len() as u64;
        }
        self.out_pos += data.len() as u64;
    }

    /// Feed bytes that are cut into `FIXED_SPAN` pieces, each its own span;
    /// `in_offset_of` gives a piece's input offset from its output offset.
    pub fn feed_fixed(&mut self, data: &[u8], start: SpanStart, in_offset_of: impl Fn(u64) -> u64) {
        self.feed_pieces(data, FIXED_SPAN, start, in_offset_of);
    }

    /// `feed_fixed` with pieces of `piece` bytes.
    pub fn feed_pieces(
        &mut self,
        mut data: &[u8],
        piece: u64,
        start: SpanStart,
        in_offset_of: impl Fn(u64) -> u64,
    ) {
        let piece = piece.max(1);
        while !data.is_empty() {
            let need_new = match &self.current {
                Some(s) => s.start != start || s.out_len >= piece,
                None => true,
            };
            if need_new {
                self.begin(start.clone(), in_offset_of(self.out_pos));
            }
            let room = piece - self.current.as_ref().map_or(0, |s| s.out_len);
            let take = (room as usize).min(data.len());
            self.feed(&data[..take]);
            data = &data[take..];
        }
    }

    /// Output since the current span began.
    pub fn current_len(&self) -> u64 {
        self.current.as_ref().map_or(0, |s| s.out_len)
    }

    pub fn out_pos(&self) -> u64 {
        self.out_pos
    }

    fn close(&mut self) {
        let digest = self.current_digest.take();
        if let (Some(span), Some(digest)) = (self.current.take(), digest) {
            let kept = span.out_len > 0;
            let at = match digest {
                SpanDigest::Decoded => {
                    self.decoded.event(SegmentEvent::End);
                    self.decoded_begun - 1
                }
                SpanDigest::CompressedRange if kept => {
                    self.compressed_kept += 1;
                    self.compressed_kept - 1
                }
                SpanDigest::CompressedRange => {
                    self.input.event(SegmentEvent::Merge);
                    return;
                }
            };
            if kept {
                self.digest_at.push((digest, at));
                self.spans.push(span);
                self.ids.push(self.begun - 1);
            }
        }
    }

    /// The spans, each with its SHA-256.
    pub fn finish(mut self) -> std::io::Result<Vec<Span>> {
        self.close();
        let decoded = self.decoded.finish()?;
        let input = self.input.finish()?;
        let wrong = |what: &str, got: usize, want: usize| {
            std::io::Error::other(format!("{got} span digests of {what} for {want} spans"))
        };
        if decoded.len() != self.decoded_begun {
            return Err(wrong("decoded bytes", decoded.len(), self.decoded_begun));
        }
        if input.len() != self.compressed_kept {
            return Err(wrong(
                "compressed ranges",
                input.len(),
                self.compressed_kept,
            ));
        }
        for (span, &(digest, at)) in self.spans.iter_mut().zip(&self.digest_at) {
            span.sha256 = match digest {
                SpanDigest::Decoded => decoded[at],
                SpanDigest::CompressedRange => input[at],
            };
        }
        Ok(self.spans)
    }
}

/// Write materialised output to the cache's data file at `offset`, leaving
/// holes for runs of zero pages: the file is created empty for the indexing
/// pass, so they read as zeros already (and a bomb of zeros stays sparse).
pub fn write_materialized(file: &std::fs::File, bytes: &[u8], offset: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    const PAGE: usize = 4096;
    let write = |from: usize, to: usize| {
        file.write_all_at(&bytes[from..to], offset + from as u64)
            .map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot write the cache's data file: {e}"))
            })
    };
    let mut run: Option<usize> = None;
    let mut at = 0;
    for chunk in bytes.chunks(PAGE) {
        let zero = chunk.iter().fold(0u8, |a, &b| a | b) == 0;
        match (zero, run) {
            (true, Some(from)) => {
                write(from, at)?;
                run = None;
            }
            (false, None) => run = Some(at),
            _ => {}
        }
        at += chunk.len();
    }
    if let Some(from) = run {
        write(from, at)?;
    }
    Ok(())
}

/// The index of the span holding `offset`, if any.
pub fn span_at(spans: &[Span], offset: u64) -> Option<usize> {
    let i = spans.partition_point(|s| s.out_offset + s.out_len <= offset);
    (i < spans.len() && spans[i].out_offset <= offset).then_some(i)
}

/// The spans holding bytes `offset..offset + len` of the stream (a file's
/// data), first to last; `None` for an empty range or one past the spans.
pub fn spans_covering(spans: &[Span], offset: u64, len: u64) -> Option<RangeInclusive<usize>> {
    if len == 0 {
        return None;
    }
    let first = span_at(spans, offset)?;
    let last = span_at(spans, offset.saturating_add(len - 1))?;
    Some(first..=last)
}

/// The blob bytes span `spans[i]`'s compressed bytes lie in: the smallest
/// run of whole bytes that holds every bit decoding it reads.
///
/// - `Blob`: its own bytes, which are also its decoded bytes.
/// - `ZstdFrame`: the frame, `in_len` bytes from `in_offset`.
/// - `GzipMember`, `GzipBlock`: from `in_offset` (one byte earlier for a
///   checkpoint inside a byte: that byte holds the span's first `bits`
///   bits, whose value the index keeps as `prime`) up to the next span that
///   starts on its own (a member or a checkpoint further on; `Materialized`
///   spans share their anchor's `in_offset` and are passed over), or the
///   blob's end. When that next span starts inside a byte, the byte is in
///   both ranges.
/// - `Materialized`: `None`, since it is decoded from its anchor's range.
///
/// `None` too for a range that is empty or runs past `blob_size`. Exact
/// for an index whose own starts ascend through the blob, as a pass makes
/// them; for a table of contents' spans, a bound to fetch by.
pub fn compressed_range(spans: &[Span], i: usize, blob_size: u64) -> Option<Range<u64>> {
    let span = spans.get(i)?;
    let start = span.in_offset;
    let range = match span.start {
        SpanStart::Blob => start..start.checked_add(span.out_len)?,
        SpanStart::ZstdFrame { in_len } => start..start.checked_add(in_len)?,
        SpanStart::Materialized { .. } => return None,
        SpanStart::GzipMember | SpanStart::GzipBlock { .. } => {
            let first = match span.start {
                SpanStart::GzipBlock { bits, .. } if bits > 0 => start.checked_sub(1)?,
                _ => start,
            };
            let end = spans[i + 1..]
                .iter()
                .filter(|s| matches!(s.start, SpanStart::GzipMember | SpanStart::GzipBlock { .. }))
                .map(|s| s.in_offset)
                .find(|&o| o > start)
                .unwrap_or(blob_size);
            first..end
        }
    };
    (range.start < range.end && range.end <= blob_size).then_some(range)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(in_offset: u64, out_len: u64, start: SpanStart) -> Span {
        Span {
            out_offset: 0,
            out_len,
            in_offset,
            crc32: 0,
            sha256: [0; 32],
            start,
        }
    }

    fn block(in_offset: u64, bits: u8) -> Span {
        let window = bytes::Bytes::new();
        span(
            in_offset,
            10,
            SpanStart::GzipBlock {
                bits,
                prime: 0,
                window,
            },
        )
    }

    #[test]
    fn compressed_ranges_of_every_start() {
        let gzip = [
            span(0, 10, SpanStart::GzipMember),
            block(40, 0),
            block(70, 3),
            span(70, 5, SpanStart::Materialized { frame_out: 20 }),
            span(70, 5, SpanStart::Materialized { frame_out: 20 }),
            block(90, 8),
            span(120, 10, SpanStart::GzipMember),
        ];
        let ranges: Vec<_> = (0..gzip.len())
            .map(|i| compressed_range(&gzip, i, 150))
            .collect();
        assert_eq!(
            ranges,
            [
                Some(0..40),
                // Ends where the next checkpoint starts inside byte 69.
                Some(40..70),
                // Starts at that byte; runs through the materialised spans.
                Some(69..90),
                None,
                None,
                Some(89..120),
                // The last own start runs to the blob's end.
                Some(120..150),
            ]
        );
        let others = [
            span(0, 100, SpanStart::Blob),
            span(100, 7, SpanStart::ZstdFrame { in_len: 30 }),
        ];
        assert_eq!(compressed_range(&others, 0, 200), Some(0..100));
        assert_eq!(compressed_range(&others, 1, 200), Some(100..130));
        assert_eq!(compressed_range(&others, 2, 200), None);
        // Nothing past the blob, and nothing empty or backwards.
        assert_eq!(compressed_range(&others, 1, 120), None);
        assert_eq!(compressed_range(&gzip, 6, 120), None);
        assert_eq!(compressed_range(&[block(0, 1)], 0, 10), None);
        let backwards = [block(50, 0), span(20, 1, SpanStart::GzipMember)];
        assert_eq!(compressed_range(&backwards, 0, 60), Some(50..60));
        let overflowing = [span(u64::MAX - 1, 5, SpanStart::ZstdFrame { in_len: 5 })];
        assert_eq!(compressed_range(&overflowing, 0, u64::MAX), None);
    }

    #[test]
    fn a_range_maps_to_the_spans_that_hold_it() {
        let mut b = SpanBuilder::default();
        b.feed_fixed(
            &vec![0u8; (FIXED_SPAN * 3) as usize],
            SpanStart::Blob,
            |o| o,
        );
        let spans = b.finish().unwrap();
        assert_eq!(spans_covering(&spans, 0, 1), Some(0..=0));
        assert_eq!(spans_covering(&spans, FIXED_SPAN - 1, 2), Some(0..=1));
        assert_eq!(spans_covering(&spans, 5, 2 * FIXED_SPAN), Some(0..=2));
        assert_eq!(spans_covering(&spans, 0, 0), None);
        assert_eq!(spans_covering(&spans, 3 * FIXED_SPAN, 1), None);
        assert_eq!(spans_covering(&spans, 2 * FIXED_SPAN, FIXED_SPAN + 1), None);
    }

    #[test]
    fn fixed_spans_cut_at_exact_boundaries() {
        let mut b = SpanBuilder::default();
        let data = vec![7u8; (FIXED_SPAN * 2 + 10) as usize];
        b.feed_fixed(&data[..100], SpanStart::Blob, |o| o);
        b.feed_fixed(&data[100..], SpanStart::Blob, |o| o);
        let spans = b.finish().unwrap();
        let cuts: Vec<(u64, u64, u64)> = spans
            .iter()
            .map(|s| (s.out_offset, s.out_len, s.in_offset))
            .collect();
        assert_eq!(
            cuts,
            vec![
                (0, FIXED_SPAN, 0),
                (FIXED_SPAN, FIXED_SPAN, FIXED_SPAN),
                (2 * FIXED_SPAN, 10, 2 * FIXED_SPAN)
            ]
        );
        assert_eq!(spans[2].crc32, crc32(0, &[7u8; 10]));
        assert_eq!(span_at(&spans, 0), Some(0));
        assert_eq!(span_at(&spans, FIXED_SPAN), Some(1));
        assert_eq!(span_at(&spans, 2 * FIXED_SPAN + 9), Some(2));
        assert_eq!(span_at(&spans, 2 * FIXED_SPAN + 10), None);
    }

    #[test]
    fn materialized_writes_leave_zero_pages_as_holes() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let file = std::fs::File::create_new(&path).unwrap();
        let mut bytes = vec![0u8; 64 << 20];
        bytes[5000] = 1;
        let tail = bytes.len() - 3;
        bytes[tail] = 2;
        write_materialized(&file, &bytes[..100], 0).unwrap();
        write_materialized(&file, &bytes[100..], 100).unwrap();
        file.set_len(bytes.len() as u64).unwrap();
        assert!(std::fs::read(&path).unwrap() == bytes);
        let allocated = std::fs::metadata(&path).unwrap().blocks() * 512;
        assert!(allocated < 1 << 20, "{allocated} bytes allocated");
    }

    #[test]
    fn empty_spans_are_dropped() {
        let mut b = SpanBuilder::default();
        b.begin(SpanStart::GzipMember, 0);
        b.begin(SpanStart::GzipMember, 20);
        b.feed(b"abc");
        let spans = b.finish().unwrap();
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].in_offset, 20);
    }
}
