//! Gzip: an indexing decoder that leaves zran-style checkpoints behind it,
//! and the span decoder that resumes from one.
//!
//! flate2 cannot resume mid-stream, so both sides drive zlib-rs through its
//! zlib-compatible API (`Z_BLOCK`, `inflatePrime`, `inflateSetDictionary`).

use crate::blob::BlobSource;
use std::io::{self, Read, Write};

use libz_rs_sys::{
    inflate, inflateEnd, inflateInit2_, inflatePrime, inflateReset2, inflateSetDictionary,
    z_stream, zlibVersion, Z_BLOCK, Z_BUF_ERROR, Z_NO_FLUSH, Z_OK, Z_STREAM_END,
};

use crate::layer::spans::{Span, SpanBuilder, SpanStart};

/// Deflate back-references reach at most this far.
const WINDOW: usize = 32 * 1024;
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
/// it into spans of about `span_size` output bytes at deflate block boundaries.
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
    spans: SpanBuilder,
    span_size: u64,
    state: State,
}

impl<R: Read> GzipIndexer<R> {
    pub fn new(inner: R, span_size: u64) -> io::Result<GzipIndexer<R>> {
        let mut spans = SpanBuilder::default();
        spans.begin(SpanStart::GzipMember, 0);
        Ok(GzipIndexer {
            inner,
            z: Inflater::new(GZIP_WINDOW_BITS)?,
            input: vec![0u8; INPUT_CHUNK].into_boxed_slice(),
            in_start: 0,
            in_end: 0,
            in_pos: 0,
            last_byte: 0,
            recent: Vec::with_capacity(2 * WINDOW),
            spans,
            span_size: span_size.max(WINDOW as u64),
            state: State::InMember,
        })
    }

    /// The input reader back, and the spans found.
    pub fn into_parts(self) -> (R, Vec<Span>) {
        (self.inner, self.spans.finish())
    }

    fn refill(&mut self) -> io::Result<usize> {
        let n = self.inner.read(&mut self.input)?;
        self.in_start = 0;
        self.in_end = n;
        Ok(n)
    }

    fn remember(&mut self, out: &[u8]) {
        self.spans.feed(out);
        if out.len() >= WINDOW {
            self.recent.clear();
            self.recent.extend_from_slice(&out[out.len() - WINDOW..]);
        } else {
            self.recent.extend_from_slice(out);
            if self.recent.len() > 2 * WINDOW {
                self.recent.drain(..self.recent.len() - WINDOW);
            }
        }
    }

    fn checkpoint(&mut self) -> io::Result<()> {
        let bits = (self.z.data_type() & 7) as u8;
        let prime = if bits > 0 {
            self.last_byte >> (8 - bits)
        } else {
            0
        };
        let window = &self.recent[self.recent.len().saturating_sub(WINDOW)..];
        let start = SpanStart::GzipBlock {
            bits,
            prime,
            window: compress_window(window)?,
        };
        self.spans.begin(start, self.in_pos);
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
                    self.spans.begin(SpanStart::GzipMember, self.in_pos);
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
                    let (ret, consumed, produced) =
                        self.z
                            .inflate(&self.input[self.in_start..self.in_end], buf, Z_BLOCK);
                    if consumed > 0 {
                        self.last_byte = self.input[self.in_start + consumed - 1];
                    }
                    self.in_start += consumed;
                    self.in_pos += consumed as u64;
                    self.remember(&buf[..produced]);
                    match ret {
                        Z_STREAM_END => self.state = State::BetweenMembers,
                        Z_OK | Z_BUF_ERROR => {
                            let at_block_end = self.z.data_type() & 0xc0 == 0x80;
                            if at_block_end && self.spans.current_len() >= self.span_size {
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

fn compress_window(window: &[u8]) -> io::Result<Vec<u8>> {
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(window)?;
    enc.finish()
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

/// Decode one gzip span from the blob into `out` (exactly `span.out_len` bytes).
pub fn decode_span(blob: &dyn BlobSource, span: &Span, out: &mut [u8]) -> io::Result<()> {
    let mut z = match &span.start {
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
    let mut input = vec![0u8; 64 * 1024];
    let (mut in_start, mut in_end) = (0usize, 0usize);
    let mut pos = span.in_offset;
    let mut filled = 0usize;
    while filled < out.len() {
        if in_start == in_end {
            let n = blob.read_at(&mut input, pos)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("blob ends at offset {pos}"),
                ));
            }
            pos += n as u64;
            (in_start, in_end) = (0, n);
            if input.len() < INPUT_CHUNK {
                input.resize(input.len() * 2, 0);
            }
        }
        let (ret, consumed, produced) =
            z.inflate(&input[in_start..in_end], &mut out[filled..], Z_NO_FLUSH);
        in_start += consumed;
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
