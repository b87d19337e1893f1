//! Zstd: an indexing decoder that records the frame table, and the frame
//! decoder used to serve a span.
//!
//! Frames up to `MAX_SPAN_BYTES` of output become spans of their own and are
//! decoded again on demand. A larger frame (typically the single frame of
//! `zstd`'s default output) cannot be entered in the middle, so its output is
//! written to the cache's data file during the pass instead.

use crate::blob::{BlobCursor, BlobSource};
use std::fs::File;
use std::io::{self, Read};

use zstd::stream::raw::{Decoder, InBuffer, Operation, OutBuffer};

use crate::layer::background_hash::SegmentEvent;
use crate::layer::spans::{
    write_materialized, Span, SpanBuilder, SpanStart, Stretch, MAX_SPAN_BYTES,
};

const MAX_FRAME_SPAN: usize = MAX_SPAN_BYTES as usize;
const INPUT_CHUNK: usize = 256 * 1024;

fn corrupt(e: io::Error, at: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("corrupt zstd data near blob offset {at}: {e}"),
    )
}

pub struct ZstdIndexer<R> {
    inner: R,
    dec: Decoder<'static>,
    input: Box<[u8]>,
    in_start: usize,
    in_end: usize,
    in_pos: u64,
    frame_start: u64,
    frame_out: u64,
    in_frame: bool,
    pending: Vec<u8>,
    spilled: bool,
    data: File,
    spans: SpanBuilder,
}

impl<R: Read> ZstdIndexer<R> {
    /// `data` is the cache's data file, sized to the uncompressed stream;
    /// `spans` gathers the frames (see `SpanBuilder::hashing_apart`).
    pub fn new(inner: R, data: File, spans: SpanBuilder) -> io::Result<ZstdIndexer<R>> {
        Ok(ZstdIndexer {
            inner,
            dec: Decoder::new()?,
            input: vec![0u8; INPUT_CHUNK].into_boxed_slice(),
            in_start: 0,
            in_end: 0,
            in_pos: 0,
            frame_start: 0,
            frame_out: 0,
            in_frame: false,
            pending: Vec::new(),
            spilled: false,
            data,
            spans,
        })
    }

    /// The input reader back, and the spans found.
    pub fn into_parts(self) -> io::Result<(R, Vec<Span>)> {
        Ok((self.inner, self.spans.finish()?))
    }

    fn on_output(&mut self, out: &[u8]) -> io::Result<()> {
        if !self.spilled {
            if self.pending.len() + out.len() <= MAX_FRAME_SPAN {
                self.pending.extend_from_slice(out);
                return Ok(());
            }
            self.spilled = true;
            let pending = std::mem::take(&mut self.pending);
            self.materialize(&pending)?;
        }
        self.materialize(out)
    }

    fn materialize(&mut self, out: &[u8]) -> io::Result<()> {
        write_materialized(&self.data, out, self.spans.out_pos())?;
        let (frame_start, frame_out) = (self.frame_start, self.frame_out);
        self.spans
            .feed_fixed(out, SpanStart::Materialized { frame_out }, |_| frame_start);
        Ok(())
    }

    /// A frame ends: a span of its own (hashed over the frame's bytes)
    /// unless it gave nothing (a skippable frame) or spilled into the data
    /// file (decoded spans, hashed over their bytes).
    fn end_frame(&mut self) {
        if !self.spilled && !self.pending.is_empty() {
            let in_len = self.in_pos - self.frame_start;
            self.spans
                .begin_compressed(SpanStart::ZstdFrame { in_len }, self.frame_start, None);
            self.spans.feed(&self.pending);
            self.pending.clear();
            self.spans.input_event(SegmentEvent::End);
        } else {
            self.spans.input_event(SegmentEvent::Drop);
        }
        self.spilled = false;
        self.frame_start = self.in_pos;
        self.frame_out = self.spans.out_pos();
        self.in_frame = false;
    }
}

impl<R: Read> Read for ZstdIndexer<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.in_start == self.in_end {
                let n = self.inner.read(&mut self.input)?;
                (self.in_start, self.in_end) = (0, n);
                if n == 0 {
                    if self.in_frame {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!(
                                "truncated zstd stream: it ends at blob offset {} inside a frame",
                                self.in_pos
                            ),
                        ));
                    }
                    return Ok(0);
                }
            }
            let mut src = InBuffer::around(&self.input[self.in_start..self.in_end]);
            let mut dst = OutBuffer::around(&mut *buf);
            let hint = self
                .dec
                .run(&mut src, &mut dst)
                .map_err(|e| corrupt(e, self.in_pos))?;
            let (consumed, produced) = (src.pos(), dst.pos());
            if !self.in_frame && consumed > 0 {
                self.spans.input_event(SegmentEvent::Start);
            }
            // One call never runs past a frame's end.
            self.spans
                .input(&self.input[self.in_start..self.in_start + consumed]);
            self.in_start += consumed;
            self.in_pos += consumed as u64;
            if consumed > 0 || produced > 0 {
                self.in_frame = true;
            }
            self.on_output(&buf[..produced])?;
            if hint == 0 {
                self.end_frame();
            }
            if produced > 0 {
                return Ok(produced);
            }
        }
    }
}

/// The materialised stretch (one zstd frame) span `i` belongs to, decoded
/// front to back: the index of the frame's first span, and a decoder
/// positioned at the frame's start (see `gzip::stretch_from`).
pub fn stretch_from<'a>(
    blob: &'a dyn BlobSource,
    spans: &[Span],
    i: usize,
) -> io::Result<Stretch<'a>> {
    let span = &spans[i];
    let SpanStart::Materialized { frame_out } = span.start else {
        return Err(io::Error::other("not a materialised span"));
    };
    let first = crate::layer::spans::span_at(spans, frame_out)
        .filter(|&j| j <= i)
        .filter(|&j| {
            let f = &spans[j];
            f.out_offset == frame_out
                && f.in_offset == span.in_offset
                && matches!(f.start, SpanStart::Materialized { frame_out: o } if o == frame_out)
        })
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "a materialised span names no frame start before it",
            )
        })?;
    let reader = BlobCursor::new(blob, span.in_offset);
    let mut dec = zstd::stream::read::Decoder::new(reader)?.single_frame();
    Ok(Stretch::new(first, move |out: &mut [u8]| {
        dec.read_exact(out)
    }))
}

/// Decode one frame span from the blob into `out` (exactly `span.out_len` bytes).
pub fn decode_span(blob: &dyn BlobSource, span: &Span, out: &mut [u8]) -> io::Result<()> {
    let SpanStart::ZstdFrame { in_len } = span.start else {
        return Err(io::Error::other("not a zstd frame span"));
    };
    let len = usize::try_from(in_len).map_err(|_| io::Error::other("frame too large"))?;
    let mut frame = vec![0u8; len];
    blob.read_exact_at(&mut frame, span.in_offset)?;
    let mut dec = Decoder::new()?;
    let mut src = InBuffer::around(&frame);
    let mut dst = OutBuffer::around(out);
    loop {
        let hint = dec
            .run(&mut src, &mut dst)
            .map_err(|e| corrupt(e, span.in_offset))?;
        if dst.pos() == dst.capacity() || hint == 0 || src.pos() == src.src.len() {
            break;
        }
    }
    if dst.pos() != dst.capacity() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "zstd frame is shorter than its span",
        ));
    }
    Ok(())
}
