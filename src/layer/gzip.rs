//! Gzip: an indexing decoder that leaves zran-style checkpoints behind it,
//! and the span decoder that resumes from one.
//!
//! flate2 cannot resume mid-stream, so both sides drive zlib-rs through its
//! zlib-compatible API (`Z_BLOCK`, `inflatePrime`, `inflateSetDictionary`).
//!
//! Checkpoints can only be taken between deflate blocks, and one block can
//! hold any amount of output (512 MiB of zeros fit in a 3.4 MB block). So a
//! span is cut at `MAX_SPAN_BYTES` even inside a block: the bytes up to there
//! stay an ordinary span, decoded from its checkpoint on demand, and the rest
//! of the block is written to the cache's data file during the pass, as
//! `Materialized` spans that name that checkpoint, until the block ends.

use crate::blob::BlobSource;
use std::fs::File;
use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use libz_rs_sys::{
    inflate, inflateEnd, inflateInit2_, inflatePrime, inflateReset2, inflateSetDictionary,
    z_stream, zlibVersion, Z_BLOCK, Z_BUF_ERROR, Z_NO_FLUSH, Z_OK, Z_STREAM_END,
};

use crate::layer::deflate_frame;
use crate::layer::spans::{
    span_at, write_materialized, Span, SpanBuilder, SpanStart, Stretch, FIXED_SPAN, MAX_SPAN_BYTES,
};
use crate::layer::window_use::{self, WINDOW};
const GZIP_WINDOW_BITS: i32 = 31;
const RAW_WINDOW_BITS: i32 = -15;
const INPUT_CHUNK: usize = 256 * 1024;

fn zerr(what: &str, code: i32) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("corrupt gzip data: {what} (zlib code {code})"),
    )
}

/// A zlib inflate stream. Boxed: zlib keeps a pointer back to it.
struct Inflater {
    strm: Box<z_stream>,
}

impl Inflater {
    fn new(window_bits: i32) -> io::Result<Inflater> {
        let mut strm = Box::<z_stream>::default();
        // SAFETY: strm is a valid, default-initialised stream; the version and
        // size are the library's own.
        let ret = unsafe {
            inflateInit2_(
                &mut *strm,
                window_bits,
                zlibVersion(),
                std::mem::size_of::<z_stream>() as i32,
            )
        };
        if ret != Z_OK {
            return Err(zerr("inflateInit2 failed", ret));
        }
        Ok(Inflater { strm })
    }

    fn reset(&mut self, window_bits: i32) -> io::Result<()> {
        // SAFETY: the stream was initialised by `new`.
        let ret = unsafe { inflateReset2(&mut *self.strm, window_bits) };
        if ret != Z_OK {
            return Err(zerr("inflateReset2 failed", ret));
        }
        Ok(())
    }

    fn prime(&mut self, bits: u8, value: u8) -> io::Result<()> {
        // SAFETY: the stream was initialised by `new`.
        let ret = unsafe { inflatePrime(&mut *self.strm, bits as i32, value as i32) };
        if ret != Z_OK {
            return Err(zerr("inflatePrime failed", ret));
        }
        Ok(())
    }

    fn set_dictionary(&mut self, dict: &[u8]) -> io::Result<()> {
        // SAFETY: the pointer and length describe a live slice.
        let ret =
            unsafe { inflateSetDictionary(&mut *self.strm, dict.as_ptr(), dict.len() as u32) };
        if ret != Z_OK {
            return Err(zerr("inflateSetDictionary failed", ret));
        }
        Ok(())
    }

    /// One inflate call; returns (zlib code, bytes consumed, bytes produced).
    fn inflate(&mut self, input: &[u8], output: &mut [u8], flush: i32) -> (i32, usize, usize) {
        let in_len = input.len().min(u32::MAX as usize);
        let out_len = output.len().min(u32::MAX as usize);
        self.strm.next_in = input.as_ptr();
        self.strm.avail_in = in_len as u32;
        self.strm.next_out = output.as_mut_ptr();
        self.strm.avail_out = out_len as u32;
        // SAFETY: next_in/next_out point into live slices of the given lengths.
        let ret = unsafe { inflate(&mut *self.strm, flush) };
        let consumed = in_len - self.strm.avail_in as usize;
        let produced = out_len - self.strm.avail_out as usize;
        self.strm.next_in = std::ptr::null();
        self.strm.next_out = std::ptr::null_mut();
        (ret, consumed, produced)
    }

    fn data_type(&self) -> i32 {
        self.strm.data_type
    }
}

impl Drop for Inflater {
    fn drop(&mut self) {
        // SAFETY: the stream was initialised by `new` and is ended once.
        unsafe { inflateEnd(&mut *self.strm) };
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    InMember,
    BetweenMembers,
    Done,
}

/// Decompresses a (multi-member) gzip stream for the indexing pass and cuts
/// it into spans of about `span_size` output bytes at deflate block
/// boundaries, none longer than `max_span`.
pub struct GzipIndexer<R> {
    inner: R,
    z: Inflater,
    input: Box<[u8]>,
    in_start: usize,
    in_end: usize,
    /// Blob offset of `input[in_start]`.
    in_pos: u64,
    last_byte: u8,
    recent: Vec<u8>,
    /// Packs each checkpoint's window; one for the pass, so its buffers
    /// are allocated once.
    packer: WindowPacker,
    spans: SpanBuilder,
    span_size: u64,
    max_span: u64,
    /// Output and input offsets of the current checkpoint's span.
    anchor: (u64, u64),
    /// Inside a block that went past `max_span` since the checkpoint: the
    /// output goes to `data` until the block ends.
    materializing: bool,
    data: Option<File>,
    state: State,
    /// The checkpoint whose window waits for the output after it.
    pending: Option<PendingWindow>,
    /// Where checkpoints come closer, and how close.
    closer: Option<(CloserCheckpoints, u64)>,
}

/// The stretch of the stream where checkpoints come closer: the data of a
/// large file, which is read at random (a database, a model's weights, an
/// archive's directory at its end) more than small files are. The pass's
/// tar reader marks each large file as it parses its header, a buffer
/// ahead of the inflater; since sparse windows cost about 2 KiB each, the
/// index stays well under its budget.
#[derive(Clone, Debug, Default)]
pub struct CloserCheckpoints(Arc<AtomicU64>);

impl CloserCheckpoints {
    /// Checkpoints come closer up to stream offset `end`.
    pub fn until(&self, end: u64) {
        self.0.fetch_max(end, Ordering::Relaxed);
    }

    fn covers(&self, offset: u64) -> bool {
        offset < self.0.load(Ordering::Relaxed)
    }
}

/// A checkpoint's window, kept whole until the first 32 KiB of output
/// after it show which of its bytes are copied (`window_use`); the rest are
/// zeroed before it is packed.
struct PendingWindow {
    span: usize,
    bits: u8,
    prime: u8,
    window: Vec<u8>,
    /// The input since the checkpoint, and the output it gave (up to
    /// `WINDOW`); `None` once the input outgrew `PENDING_INPUT_MAX`.
    input: Option<Vec<u8>>,
    output: Vec<u8>,
}

/// Input kept for one pending window. 32 KiB of output come from less
/// (stored blocks: 32 KiB and 5 bytes a block); only a stream of empty
/// blocks gets here, and its window is kept whole.
const PENDING_INPUT_MAX: usize = 4 * WINDOW;

impl<R: Read> GzipIndexer<R> {
    /// `data` is the cache's data file, created empty for this pass: the
    /// output of a block too long for a span is written there. Without one,
    /// such a block is an error.
    /// `spans` gathers the checkpoints (`SpanBuilder::hashing_apart`, or a
    /// default one that hashes in place).
    pub fn new(
        inner: R,
        span_size: u64,
        data: Option<File>,
        mut spans: SpanBuilder,
    ) -> io::Result<GzipIndexer<R>> {
        spans.begin_compressed(SpanStart::GzipMember, 0, Some(None));
        Ok(GzipIndexer {
            inner,
            z: Inflater::new(GZIP_WINDOW_BITS)?,
            input: vec![0u8; INPUT_CHUNK].into_boxed_slice(),
            in_start: 0,
            in_end: 0,
            in_pos: 0,
            last_byte: 0,
            recent: Vec::with_capacity(2 * WINDOW),
            packer: WindowPacker::new(),
            spans,
            span_size: span_size.clamp(WINDOW as u64, MAX_SPAN_BYTES),
            max_span: MAX_SPAN_BYTES,
            anchor: (0, 0),
            materializing: false,
            data,
            state: State::InMember,
            pending: None,
            closer: None,
        })
    }

    /// Checkpoints about `span_size` apart (at least 32 KiB) where
    /// `regions` says.
    pub fn with_closer_checkpoints(mut self, regions: CloserCheckpoints, span_size: u64) -> Self {
        let span = span_size.clamp(WINDOW as u64, self.span_size);
        self.closer = Some((regions, span));
        self
    }

    /// How long the current span may grow before the next block end.
    fn span_here(&self) -> u64 {
        match &self.closer {
            Some((regions, span)) if regions.covers(self.spans.out_pos()) => *span,
            _ => self.span_size,
        }
    }

    /// Cap spans at `max_span` (at least 32 KiB) rather than
    /// `MAX_SPAN_BYTES`: for tests and the fuzzer, to cut blocks often.
    pub fn with_max_span(mut self, max_span: u64) -> Self {
        self.max_span = max_span.max(WINDOW as u64);
        self.span_size = self.span_size.min(self.max_span);
        self
    }

    /// The input reader back, and the spans found.
    pub fn into_parts(mut self) -> io::Result<(R, Vec<Span>)> {
        self.settle_window()?;
        Ok((self.inner, self.spans.finish()?))
    }

    fn refill(&mut self) -> io::Result<usize> {
        let n = self.inner.read(&mut self.input)?;
        self.in_start = 0;
        self.in_end = n;
        Ok(n)
    }

    /// Take `out` into the current span (or the data file) and the window.
    fn remember(&mut self, out: &[u8]) -> io::Result<()> {
        if self.materializing {
            let data = self.data.as_ref().ok_or_else(|| {
                io::Error::other(format!(
                    "a deflate block near blob offset {} holds more than {} bytes \
                     and there is no data file to decode it into",
                    self.in_pos, self.max_span
                ))
            })?;
            write_materialized(data, out, self.spans.out_pos())?;
            let (frame_out, in_offset) = self.anchor;
            let piece = FIXED_SPAN.min(self.max_span);
            self.spans
                .feed_pieces(out, piece, SpanStart::Materialized { frame_out }, |_| {
                    in_offset
                });
        } else {
            self.spans.feed(out);
        }
        if out.len() >= WINDOW {
            self.recent.clear();
            self.recent.extend_from_slice(&out[out.len() - WINDOW..]);
        } else {
            self.recent.extend_from_slice(out);
            if self.recent.len() > 2 * WINDOW {
                self.recent.drain(..self.recent.len() - WINDOW);
            }
        }
        Ok(())
    }

    /// A span of its own from here: its compressed range starts here, or
    /// at the byte before for a checkpoint inside a byte.
    fn begin(&mut self, start: SpanStart) -> io::Result<usize> {
        self.settle_window()?;
        self.anchor = (self.spans.out_pos(), self.in_pos);
        self.materializing = false;
        let overlap = match start {
            SpanStart::GzipBlock { bits, .. } if bits > 0 => Some(self.last_byte),
            _ => None,
        };
        Ok(self
            .spans
            .begin_compressed(start, self.in_pos, Some(overlap)))
    }

    /// A checkpoint here; its window is packed once the output after it is
    /// known (`settle_window`).
    fn checkpoint(&mut self) -> io::Result<()> {
        let bits = (self.z.data_type() & 7) as u8;
        let prime = if bits > 0 {
            self.last_byte >> (8 - bits)
        } else {
            0
        };
        let window = self.recent[self.recent.len().saturating_sub(WINDOW)..].to_vec();
        let start = SpanStart::GzipBlock {
            bits,
            prime,
            window: bytes::Bytes::new(),
        };
        let span = self.begin(start)?;
        self.pending = Some(PendingWindow {
            span,
            bits,
            prime,
            window,
            input: Some(Vec::with_capacity(WINDOW)),
            output: Vec::with_capacity(WINDOW),
        });
        Ok(())
    }

    /// Feed the pending window what one inflate call consumed and made;
    /// settle it once 32 KiB of output are in.
    fn follow_window(
        &mut self,
        consumed: std::ops::Range<usize>,
        produced: &[u8],
    ) -> io::Result<()> {
        let Some(p) = &mut self.pending else {
            return Ok(());
        };
        let consumed = &self.input[consumed];
        if let Some(input) = &mut p.input {
            if input.len() + consumed.len() > PENDING_INPUT_MAX {
                p.input = None;
            } else {
                input.extend_from_slice(consumed);
            }
        }
        let room = WINDOW - p.output.len();
        p.output
            .extend_from_slice(&produced[..produced.len().min(room)]);
        if p.output.len() == WINDOW {
            self.settle_window()?;
        }
        Ok(())
    }

    /// Pack the pending checkpoint's window into its span: sparse (the
    /// bytes nothing copies zeroed) where zlib, resuming from the sparse
    /// window, gives the output the pass saw; else whole.
    fn settle_window(&mut self) -> io::Result<()> {
        let Some(p) = self.pending.take() else {
            return Ok(());
        };
        let sparse = p.input.as_deref().and_then(|input| {
            let used = window_use::window_use(p.bits, p.prime, input, p.output.len())?;
            let sparse = window_use::zero_unused(&p.window, &used);
            resumes_the_same(&p, input, &sparse).then_some(sparse)
        });
        let window = self.packer.pack(sparse.as_deref().unwrap_or(&p.window))?;
        self.spans.set_start(
            p.span,
            SpanStart::GzipBlock {
                bits: p.bits,
                prime: p.prime,
                window: window.into(),
            },
        );
        Ok(())
    }
}

impl<R: Read> Read for GzipIndexer<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match self.state {
                State::Done => return Ok(0),
                State::BetweenMembers => {
                    if self.in_start == self.in_end && self.refill()? == 0 {
                        self.state = State::Done;
                        continue;
                    }
                    if self.input[self.in_start] != 0x1f {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "data after the end of the gzip stream at blob offset {}",
                                self.in_pos
                            ),
                        ));
                    }
                    self.z.reset(GZIP_WINDOW_BITS)?;
                    self.recent.clear();
                    self.begin(SpanStart::GzipMember)?;
                    self.state = State::InMember;
                }
                State::InMember => {
                    if self.in_start == self.in_end && self.refill()? == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!(
                                "truncated gzip stream: it ends at blob offset {} inside a member",
                                self.in_pos
                            ),
                        ));
                    }
                    // A span ends at `max_span`, inside a block if need be;
                    // the rest of that block is materialised.
                    let room = self.max_span - self.spans.current_len().min(self.max_span);
                    if !self.materializing && room == 0 {
                        self.materializing = true;
                    }
                    let out_len = if self.materializing {
                        buf.len()
                    } else {
                        buf.len().min(usize::try_from(room).unwrap_or(usize::MAX))
                    };
                    let (ret, consumed, produced) = self.z.inflate(
                        &self.input[self.in_start..self.in_end],
                        &mut buf[..out_len],
                        Z_BLOCK,
                    );
                    if consumed > 0 {
                        self.last_byte = self.input[self.in_start + consumed - 1];
                        self.spans
                            .input(&self.input[self.in_start..self.in_start + consumed]);
                    }
                    if self.pending.is_some() {
                        let consumed_at = self.in_start..self.in_start + consumed;
                        self.follow_window(consumed_at, &buf[..produced])?;
                    }
                    self.in_start += consumed;
                    self.in_pos += consumed as u64;
                    self.remember(&buf[..produced])?;
                    match ret {
                        Z_STREAM_END => {
                            self.settle_window()?;
                            self.state = State::BetweenMembers
                        }
                        Z_OK | Z_BUF_ERROR => {
                            let at_block_end = self.z.data_type() & 0xc0 == 0x80;
                            if at_block_end
                                && (self.materializing
                                    || self.spans.current_len() >= self.span_here())
                            {
                                self.checkpoint()?;
                            }
                        }
                        code => {
                            return Err(zerr(
                                &format!("inflate failed near blob offset {}", self.in_pos),
                                code,
                            ))
                        }
                    }
                    if produced > 0 {
                        return Ok(produced);
                    }
                }
            }
        }
    }
}

/// Compresses checkpoint windows (raw deflate, read back by
/// `expand_window`). The window is packed at every checkpoint of the pass,
/// so the level is a trade of index size for indexing time: on the small
/// bench image, level 9 took a quarter of the pass's CPU (`ls` from an
/// empty cache 250 ms) against 200 ms at level 6, for indexes 2 % larger
/// (1.31 against 1.34 MB); level 1 saved little more and grew them 19 %.
struct WindowPacker(flate2::Compress);

/// zlib's default level.
const WINDOW_LEVEL: u32 = 6;

impl WindowPacker {
    fn new() -> WindowPacker {
        WindowPacker(flate2::Compress::new(
            flate2::Compression::new(WINDOW_LEVEL),
            false,
        ))
    }

    fn pack(&mut self, window: &[u8]) -> io::Result<Vec<u8>> {
        self.0.reset();
        // More than deflate's worst case for 32 KiB (stored blocks).
        let mut out = Vec::with_capacity(window.len() + window.len() / 8 + 64);
        match self
            .0
            .compress_vec(window, &mut out, flate2::FlushCompress::Finish)
        {
            Ok(flate2::Status::StreamEnd) => Ok(out),
            Ok(status) => Err(io::Error::other(format!(
                "packing a checkpoint window stopped early ({status:?})"
            ))),
            Err(e) => Err(io::Error::other(format!(
                "packing a checkpoint window: {e}"
            ))),
        }
    }
}

fn expand_window(packed: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(WINDOW);
    flate2::read::DeflateDecoder::new(packed)
        .take(WINDOW as u64 + 1)
        .read_to_end(&mut out)?;
    if out.len() > WINDOW {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "checkpoint window is larger than 32 KiB",
        ));
    }
    Ok(out)
}

/// Whether zlib, resuming at `p`'s checkpoint from `window`, inflates
/// `input` into exactly the output the pass saw after it.
fn resumes_the_same(p: &PendingWindow, input: &[u8], window: &[u8]) -> bool {
    let check = || -> io::Result<bool> {
        let mut z = Inflater::new(RAW_WINDOW_BITS)?;
        if p.bits > 0 {
            z.prime(p.bits, p.prime)?;
        }
        if !window.is_empty() {
            z.set_dictionary(window)?;
        }
        let mut out = vec![0u8; p.output.len()];
        let mut done = 0;
        let mut at = 0;
        while done < out.len() {
            let (ret, consumed, produced) = z.inflate(&input[at..], &mut out[done..], Z_NO_FLUSH);
            at += consumed;
            done += produced;
            match ret {
                Z_OK if consumed + produced > 0 => {}
                Z_STREAM_END => break,
                _ => return Ok(false),
            }
        }
        Ok(done == out.len() && out == p.output)
    };
    check().unwrap_or(false)
}

/// Decode gzip span `spans[i]` from the blob into `out` (exactly its
/// `out_len` bytes): whole with libdeflate where the span can be framed as
/// a stream of its own (`deflate_frame`), else with zlib. Either way the
/// reader checks the bytes against the span's CRC.
pub fn decode_span_at(
    blob: &dyn BlobSource,
    spans: &[Span],
    i: usize,
    out: &mut [u8],
) -> io::Result<()> {
    match deflate_frame::decode(blob, spans, i, out) {
        Ok(true) => Ok(()),
        // A blob that cannot be read is not tried twice.
        Err(e)
            if !matches!(
                e.kind(),
                io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
            ) =>
        {
            Err(e)
        }
        // zlib streams what could not be framed; and where the framed
        // stream fails or gives other bytes than the index's, zlib's own
        // error (or bytes) is the one that counts, so a framing this code
        // got wrong never costs a valid span.
        _ => decode_span(blob, &spans[i], out),
    }
}

/// Decode one gzip span from the blob into `out` (exactly `span.out_len`
/// bytes) with zlib, streaming its input.
pub fn decode_span(blob: &dyn BlobSource, span: &Span, out: &mut [u8]) -> io::Result<()> {
    SpanDecoder::new(blob, span)?.fill(out)
}

/// Decode materialised span `spans[i]` again, from the checkpoint its
/// stretch began at: the bytes before it are decoded into a small buffer
/// and dropped, so memory stays bounded however long the block is. Slow
/// (up to a whole block of output per span), used only to repair a
/// damaged data cache.
pub fn redecode_materialized(
    blob: &dyn BlobSource,
    spans: &[Span],
    i: usize,
    out: &mut [u8],
) -> io::Result<()> {
    let mut stretch = stretch_from(blob, spans, i)?;
    let mut skip = spans[i].out_offset - spans[stretch.first].out_offset;
    let mut scratch = vec![0u8; INPUT_CHUNK];
    while skip > 0 {
        let n = skip.min(scratch.len() as u64) as usize;
        stretch.fill(&mut scratch[..n])?;
        skip -= n as u64;
    }
    stretch.fill(out)
}

/// The materialised stretch span `i` belongs to, decoded front to back
/// from the checkpoint it began at: that checkpoint's span index, and a
/// decoder positioned at its output. Reading a whole stretch this way
/// costs the stretch once, where decoding each span from the checkpoint
/// would cost it once per span.
pub fn stretch_from<'a>(
    blob: &'a dyn BlobSource,
    spans: &[Span],
    i: usize,
) -> io::Result<Stretch<'a>> {
    let span = &spans[i];
    let SpanStart::Materialized { frame_out } = span.start else {
        return Err(io::Error::other("not a materialised span"));
    };
    let anchor = span_at(spans, frame_out)
        .filter(|&j| j < i)
        .filter(|&j| {
            let a = &spans[j];
            a.out_offset == frame_out
                && a.in_offset == span.in_offset
                && matches!(a.start, SpanStart::GzipMember | SpanStart::GzipBlock { .. })
        })
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "a materialised span names no checkpoint before it",
            )
        })?;
    let mut dec = SpanDecoder::new(blob, &spans[anchor])?;
    Ok(Stretch::new(anchor, move |out: &mut [u8]| dec.fill(out)))
}

/// Inflates from a span's checkpoint, reading the blob as it goes.
struct SpanDecoder<'a> {
    blob: &'a dyn BlobSource,
    z: Inflater,
    input: Vec<u8>,
    in_start: usize,
    in_end: usize,
    pos: u64,
}

impl<'a> SpanDecoder<'a> {
    fn new(blob: &'a dyn BlobSource, span: &Span) -> io::Result<SpanDecoder<'a>> {
        let z = match &span.start {
            SpanStart::GzipMember => Inflater::new(GZIP_WINDOW_BITS)?,
            SpanStart::GzipBlock {
                bits,
                prime,
                window,
            } => {
                let mut z = Inflater::new(RAW_WINDOW_BITS)?;
                if *bits > 0 {
                    z.prime(*bits, *prime)?;
                }
                z.set_dictionary(&expand_window(window)?)?;
                z
            }
            _ => return Err(io::Error::other("not a gzip span")),
        };
        Ok(SpanDecoder {
            blob,
            z,
            input: vec![0u8; 64 * 1024],
            in_start: 0,
            in_end: 0,
            pos: span.in_offset,
        })
    }

    /// The next `out.len()` bytes of output; the member must not end first.
    fn fill(&mut self, out: &mut [u8]) -> io::Result<()> {
        let mut filled = 0usize;
        while filled < out.len() {
            if self.in_start == self.in_end {
                let n = self.blob.read_at(&mut self.input, self.pos)?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("blob ends at offset {}", self.pos),
                    ));
                }
                self.pos += n as u64;
                (self.in_start, self.in_end) = (0, n);
                if self.input.len() < INPUT_CHUNK {
                    self.input.resize(self.input.len() * 2, 0);
                }
            }
            let (ret, consumed, produced) = self.z.inflate(
                &self.input[self.in_start..self.in_end],
                &mut out[filled..],
                Z_NO_FLUSH,
            );
            self.in_start += consumed;
            filled += produced;
            match ret {
                Z_OK | Z_BUF_ERROR => {}
                Z_STREAM_END if filled == out.len() => {}
                Z_STREAM_END => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "gzip member ends before the span does",
                    ))
                }
                code => return Err(zerr("inflate failed", code)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::MemoryBlob;
    use crate::layer::spans::crc32;
    use std::io::Write;
    use std::os::unix::fs::FileExt;

    fn text(len: usize, mut seed: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                b' ' + (seed >> 58) as u8
            })
            .collect()
    }

    fn gzip(members: &[&[u8]]) -> Vec<u8> {
        let mut blob = Vec::new();
        for m in members {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            enc.write_all(m).unwrap();
            blob.extend(enc.finish().unwrap());
        }
        blob
    }

    /// Index `blob`, returning the output and the spans.
    fn index(
        blob: &[u8],
        span_size: u64,
        max_span: Option<u64>,
        data: Option<File>,
    ) -> io::Result<(Vec<u8>, Vec<Span>)> {
        let mut indexer = GzipIndexer::new(blob, span_size, data, SpanBuilder::default())?;
        if let Some(max) = max_span {
            indexer = indexer.with_max_span(max);
        }
        let mut out = Vec::new();
        indexer.read_to_end(&mut out)?;
        Ok((out, indexer.into_parts()?.1))
    }

    #[test]
    fn ordinary_streams_keep_their_checkpoints() {
        let plain = text(3 << 20, 7);
        let blob = gzip(&[&plain[..1 << 20], &plain[1 << 20..]]);
        let (out, spans) = index(&blob, 64 << 10, None, None).unwrap();
        assert!(out == plain);
        assert!(spans.len() > 10);
        assert!(spans
            .iter()
            .all(|s| !matches!(s.start, SpanStart::Materialized { .. })));
        let (_, uncapped) = index(&blob, 64 << 10, Some(u64::MAX), None).unwrap();
        assert_eq!(spans, uncapped);
    }

    /// Text with repeats, so that copies reach back into the windows, but
    /// not so many that a deflate block covers more than a span.
    fn repetitive(len: usize, seed: u64) -> Vec<u8> {
        let fresh = text(len, seed);
        let mut out = Vec::with_capacity(len + 64);
        let mut state = seed;
        while out.len() < len {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let n = 3 + (state >> 40) as usize % 20;
            if state >> 63 == 1 && out.len() > 40_000 {
                let from = out.len() - n - (state >> 20) as usize % 32_000;
                out.extend_from_within(from..from + n);
            } else {
                out.extend_from_slice(&fresh[out.len()..(out.len() + n).min(len)]);
            }
        }
        out.truncate(len);
        out
    }

    /// Bytes deflate cannot shrink, which it keeps in stored blocks.
    fn incompressible(len: usize, mut seed: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed >> 32) as u8
            })
            .collect()
    }

    /// Text with repeats, broken every 150 KB by 40 KB of bytes deflate
    /// keeps in stored blocks (a layer's compressed files).
    fn mixed(len: usize, seed: u64) -> Vec<u8> {
        let text = repetitive(len, seed);
        let mut out = Vec::with_capacity(len);
        for (n, piece) in text.chunks(150_000).enumerate() {
            out.extend_from_slice(piece);
            out.extend(incompressible(40_000, seed + n as u64));
        }
        out.truncate(len);
        out
    }

    #[test]
    fn framed_spans_decode_to_the_same_bytes_as_zlib_at_every_bit_position() {
        let mut framed = 0;
        let mut bit_positions = [false; 8];
        for (level, seed) in [(1, 11u64), (6, 12), (9, 13)] {
            let plain = mixed(3 << 20, seed);
            let mut blob = Vec::new();
            for part in [
                &plain[..1 << 20],
                &plain[1 << 20..(1 << 20) + 77],
                &plain[(1 << 20) + 77..],
            ] {
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
                enc.write_all(part).unwrap();
                blob.extend(enc.finish().unwrap());
            }
            let (out, spans) = index(&blob, 32 << 10, None, None).unwrap();
            assert!(out == plain);
            let source = MemoryBlob::new(blob.clone(), "test".to_string());
            for (i, span) in spans.iter().enumerate() {
                let want =
                    &out[span.out_offset as usize..(span.out_offset + span.out_len) as usize];
                let mut got = vec![0xa5u8; span.out_len as usize];
                // Every span the pass cut at a checkpoint frames: none is
                // left to zlib's second try.
                let frames = matches!(span.start, SpanStart::GzipBlock { .. });
                match deflate_frame::decode(&source, &spans, i, &mut got) {
                    Ok(true) => {
                        framed += 1;
                        if let SpanStart::GzipBlock { bits, .. } = span.start {
                            bit_positions[bits as usize] = true;
                        }
                        assert!(got == want, "framed span {i} (level {level}) differs");
                    }
                    Ok(false) => {
                        assert!(!frames, "span {i} (level {level}) was not framed");
                        assert!(got.iter().all(|&b| b == 0xa5), "a refused span wrote");
                    }
                    Err(e) => panic!("span {i} (level {level}) fails to frame: {e}"),
                }
                let mut zlib = vec![0u8; span.out_len as usize];
                decode_span(&source, span, &mut zlib).unwrap();
                assert!(zlib == want);
                decode_span_at(&source, &spans, i, &mut zlib).unwrap();
                assert!(zlib == want);
            }
        }
        assert!(framed > 100, "{framed} spans framed");
        assert_eq!(
            bit_positions, [true; 8],
            "checkpoints at every bit position"
        );
    }

    /// Decoding a span needs nothing of the blob outside its compressed
    /// range, the range the pass hashed for its digest (a materialised
    /// span's is of its bytes), through the framed path and through zlib: with every byte
    /// before it spoilt and none after it, each span still decodes to its
    /// own bytes. And a checkpoint's `prime` is the top of the range's
    /// first byte.
    #[test]
    fn spans_decode_from_their_compressed_range_alone() {
        let plain = mixed(3 << 20, 21);
        // With an empty member, whose span the pass drops: its bytes are
        // the last range's.
        let mut parts = vec![&plain[..1 << 20], &plain[1 << 20..(1 << 20) + 77], &[]];
        parts.push(&plain[(1 << 20) + 77..]);
        parts.push(&[]);
        let mut long = text(100_000, 4);
        long.resize(long.len() + (3 << 20), 0);
        let (mut checked, mut primed, mut materialised) = (0, 0, 0);
        for (blob, max_span) in [(gzip(&parts), None), (gzip(&[&long]), Some(256 << 10))] {
            let dir = tempfile::tempdir().unwrap();
            let data = File::create_new(dir.path().join("data")).unwrap();
            let (out, spans) = index(&blob, 32 << 10, max_span, Some(data)).unwrap();
            for (i, span) in spans.iter().enumerate() {
                let Some(range) =
                    crate::layer::spans::compressed_range(&spans, i, blob.len() as u64)
                else {
                    assert!(matches!(span.start, SpanStart::Materialized { .. }));
                    let bytes = &out[span.out_offset as usize..][..span.out_len as usize];
                    assert_eq!(span.sha256, crate::layer::spans::sha256(bytes));
                    materialised += 1;
                    continue;
                };
                let (from, to) = (range.start as usize, range.end as usize);
                assert_eq!(
                    span.sha256,
                    crate::layer::spans::sha256(&blob[from..to]),
                    "span {i}'s digest is its range's"
                );
                if let SpanStart::GzipBlock { bits, prime, .. } = span.start {
                    if bits > 0 {
                        assert_eq!(prime, blob[from] >> (8 - bits), "span {i}'s prime");
                        primed += 1;
                    }
                }
                // Ends with the range: zlib goes on past a span's last
                // output byte to read the next block's header, and would
                // fail on spoilt bytes there.
                let mut spoilt: Vec<u8> = blob[..to].iter().map(|b| !b).collect();
                spoilt[from..to].copy_from_slice(&blob[from..to]);
                let source = MemoryBlob::new(spoilt, "test".to_string());
                let want =
                    &out[span.out_offset as usize..(span.out_offset + span.out_len) as usize];
                let mut got = vec![0u8; span.out_len as usize];
                if deflate_frame::decode(&source, &spans, i, &mut got).unwrap() {
                    assert!(got == want, "span {i} framed from {range:?}");
                }
                let mut got = vec![0u8; span.out_len as usize];
                decode_span(&source, span, &mut got).unwrap();
                assert!(got == want, "span {i} through zlib from {range:?}");
                checked += 1;
            }
        }
        assert!(
            checked > 80 && primed > 5 && materialised > 5,
            "{checked} spans, {primed} primed, {materialised} materialised"
        );
    }

    #[test]
    fn spans_before_a_materialised_stretch_or_with_far_more_input_go_to_zlib() {
        // A long block cut into materialised spans.
        let mut plain = text(200_000, 1);
        plain.resize(plain.len() + (4 << 20), 0);
        plain.extend(text(100_000, 2));
        // Then a stretch of one-byte blocks, each with an empty stored
        // block after it (a sync flush): nine bytes in for one out.
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&plain).unwrap();
        let flushed = text(40_000, 3);
        for byte in &flushed {
            enc.write_all(std::slice::from_ref(byte)).unwrap();
            enc.flush().unwrap();
        }
        plain.extend_from_slice(&flushed);
        let blob = enc.finish().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let data = File::create_new(dir.path().join("data")).unwrap();
        let (out, spans) = index(&blob, 16 << 10, Some(128 << 10), data.try_clone().ok()).unwrap();
        assert!(out == plain);
        let source = MemoryBlob::new(blob, "test".to_string());
        let (mut before_materialised, mut long_input) = (0, 0);
        for (i, span) in spans.iter().enumerate() {
            if !matches!(span.start, SpanStart::GzipBlock { .. }) {
                continue;
            }
            let next = spans.get(i + 1);
            let reason = if matches!(next.map(|n| &n.start), Some(SpanStart::Materialized { .. })) {
                before_materialised += 1;
                "before a materialised stretch"
            } else if next.is_some_and(|n| {
                n.in_offset - span.in_offset > deflate_frame::input_cap(span.out_len)
            }) {
                long_input += 1;
                "far more input than output"
            } else {
                continue;
            };
            let mut got = vec![0xa5u8; span.out_len as usize];
            assert!(
                !deflate_frame::decode(&source, &spans, i, &mut got).unwrap(),
                "span {i}, {reason}, was framed"
            );
            assert!(got.iter().all(|&b| b == 0xa5), "a refused span wrote");
            decode_span_at(&source, &spans, i, &mut got).unwrap();
            let want = &out[span.out_offset as usize..(span.out_offset + span.out_len) as usize];
            assert!(got == want, "span {i}, {reason}, through zlib");
        }
        assert!(
            before_materialised > 0 && long_input > 0,
            "{before_materialised} / {long_input}"
        );
    }

    #[test]
    fn a_framed_span_from_damaged_input_is_an_error() {
        let plain = repetitive(1 << 20, 5);
        let blob = gzip(&[&plain]);
        let (_, spans) = index(&blob, 64 << 10, None, None).unwrap();
        let i = spans.len() / 2;
        let mut damaged = blob.clone();
        let from = spans[i].in_offset as usize;
        damaged[from..from + 200].fill(0xff);
        let source = MemoryBlob::new(damaged, "test".to_string());
        let mut got = vec![0u8; spans[i].out_len as usize];
        let err = deflate_frame::decode(&source, &spans, i, &mut got).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        // A span that claims more output than its blocks hold.
        let mut longer = spans.clone();
        longer[i].out_len += 1;
        let source = MemoryBlob::new(blob, "test".to_string());
        let mut got = vec![0u8; longer[i].out_len as usize];
        let err = deflate_frame::decode(&source, &longer, i, &mut got).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "the span decodes to {} bytes, the index says {}",
                spans[i].out_len, longer[i].out_len
            )
        );
    }

    #[test]
    fn long_blocks_are_cut_and_materialised() {
        let max = 128 << 10;
        let mut one = text(200_000, 1);
        one.resize(one.len() + (10 << 20), 0);
        one.extend(text(300_000, 2));
        let mut two = vec![0u8; 3 << 20];
        two.extend(text(100_000, 3));
        let blob = gzip(&[&one, &two]);
        let plain = [one, two].concat();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let data = File::create_new(&path).unwrap();
        let (out, spans) = index(&blob, 64 << 10, Some(max), data.try_clone().ok()).unwrap();
        assert!(out == plain);
        data.set_len(out.len() as u64).unwrap();
        let materialized = spans
            .iter()
            .filter(|s| matches!(s.start, SpanStart::Materialized { .. }))
            .count();
        assert!(materialized > 50, "{materialized} materialised spans");
        let source = MemoryBlob::new(blob.clone(), "test".to_string());
        let mut at = 0;
        for (i, span) in spans.iter().enumerate() {
            assert_eq!(span.out_offset, at);
            assert!(span.out_len > 0 && span.out_len <= max, "{span:?}");
            at += span.out_len;
            let want = &out[span.out_offset as usize..at as usize];
            assert_eq!(crc32(0, want), span.crc32);
            let mut got = vec![0u8; span.out_len as usize];
            if matches!(span.start, SpanStart::Materialized { .. }) {
                data.read_exact_at(&mut got, span.out_offset).unwrap();
                assert!(got == want, "materialised span {i} in the data file");
                got.fill(0xaa);
                redecode_materialized(&source, &spans, i, &mut got).unwrap();
                assert!(got == want, "materialised span {i} decoded again");
            } else {
                decode_span(&source, span, &mut got).unwrap();
                assert!(got == want, "span {i} from its checkpoint");
            }
        }
        assert_eq!(at, plain.len() as u64);
    }

    #[test]
    fn a_long_block_without_a_data_file_is_an_error() {
        let blob = gzip(&[&vec![0u8; 1 << 20]]);
        let err = index(&blob, 64 << 10, Some(64 << 10), None).unwrap_err();
        assert!(
            err.to_string().contains("holds more than 65536 bytes"),
            "{err}"
        );
    }

    #[test]
    fn a_materialised_span_without_its_checkpoint_is_refused() {
        let span = |out_offset, start| Span {
            out_offset,
            out_len: 10,
            in_offset: 0,
            crc32: 0,
            sha256: [0; 32],
            start,
        };
        let spans = [
            span(0, SpanStart::GzipMember),
            span(10, SpanStart::Materialized { frame_out: 10 }),
            span(20, SpanStart::Materialized { frame_out: 30 }),
        ];
        let source = MemoryBlob::new(Vec::new(), "test".to_string());
        for i in [1, 2] {
            let err = redecode_materialized(&source, &spans, i, &mut [0u8; 10]).unwrap_err();
            assert_eq!(
                err.to_string(),
                "a materialised span names no checkpoint before it"
            );
        }
    }
}
