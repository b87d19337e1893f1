//! Decoding one whole gzip span with libdeflate, which inflates the large
//! bench image's layers at 650–730 MB/s where zlib-rs does 430–460.
//!
//! libdeflate inflates a complete deflate stream in one call: it cannot be
//! primed with bits or given a dictionary. So the span is framed as a stream
//! of its own:
//!
//! 1. a stored block (non-final) holding the checkpoint's window, which
//!    gives the copies their history;
//! 2. empty non-final blocks, as many bits long as it takes to bring the
//!    stream to the bit, within a byte, where the span starts in the blob
//!    (a stored block inside the span pads to a byte boundary, so the
//!    span's bytes must keep their alignment: shifting them would move it);
//! 3. the `bits` the checkpoint primes, then the span's bytes as they are;
//! 4. where the next span starts at a checkpoint, an empty final block of
//!    fixed codes, written where the span's last block ends (a checkpoint is
//!    always between blocks). A span that ends its member needs none: its
//!    last block is final already.
//!
//! The output is the window then the span; only the span is kept, and only
//! if its CRC is the index's. Spans that cannot be framed (a member's first
//! span, one followed by a materialised stretch, one whose input is far
//! longer than its output) go to zlib, as does a span whose frame fails.

use std::cell::RefCell;
use std::io;

use libdeflater::{DecompressionError, Decompressor};

use crate::blob::BlobSource;
use crate::layer::spans::{crc32, Span, SpanStart};
use crate::layer::window_use::WINDOW;

/// A stored block's header on a byte boundary: BFINAL 0, BTYPE 00, padding.
const STORED_HEADER: u8 = 0;

/// An empty final block of fixed codes: BFINAL 1, BTYPE 01, then the 7-bit
/// end-of-block code 0000000 (ten bits, least significant first: 1, 1, 0,
/// then seven zeros).
const EMPTY_FINAL_BLOCK: u16 = 0b011;
const EMPTY_FINAL_BLOCK_BITS: u64 = 10;

/// The same block, not final: 10 bits, 2 more than a whole number of bytes.
const EMPTY_FIXED_BLOCK: u16 = 0b010;
const EMPTY_FIXED_BLOCK_BITS: u8 = 10;

const _: () = assert!(
    WINDOW <= u16::MAX as usize,
    "a window must fit one stored block"
);

/// Input beyond this, for a span of `out_len` bytes, goes to zlib, which
/// streams it: deflate's worst case (stored blocks) is 5 bytes in 64 KiB
/// over the output, so only a stream of empty blocks gets here.
pub(crate) fn input_cap(out_len: u64) -> u64 {
    out_len + out_len / 8 + 64 * 1024
}

thread_local! {
    static DECOMPRESSOR: RefCell<Decompressor> = RefCell::new(Decompressor::new());
}

/// Decode gzip span `spans[i]` into `out` (exactly its `out_len` bytes).
/// `Ok(false)`: the span cannot be framed, and `out` is untouched.
pub fn decode(blob: &dyn BlobSource, spans: &[Span], i: usize, out: &mut [u8]) -> io::Result<bool> {
    let span = &spans[i];
    let SpanStart::GzipBlock {
        bits,
        prime,
        window,
    } = &span.start
    else {
        return Ok(false);
    };
    // Where the span's input ends, and the bits of its last byte that
    // belong to the next span.
    let (in_end, end_bits) = match spans.get(i + 1).map(|next| (next, &next.start)) {
        Some((next, SpanStart::GzipBlock { bits, .. })) => (next.in_offset, Some(*bits)),
        Some((next, SpanStart::GzipMember)) => (next.in_offset, None),
        None => (blob.size(), None),
        Some(_) => return Ok(false),
    };
    if *bits > 7 || end_bits.is_some_and(|b| b > 7) || in_end < span.in_offset {
        return Err(bad("a checkpoint's bit position is out of range"));
    }
    if in_end - span.in_offset > input_cap(span.out_len) {
        return Ok(false);
    }
    let in_len = usize::try_from(in_end - span.in_offset).map_err(|_| bad("a span too long"))?;
    let mut frame = Vec::with_capacity(5 + WINDOW + 32 + in_len + 3);
    DECOMPRESSOR.with(|d| -> io::Result<()> {
        let mut d = d.borrow_mut();
        let history = append_window(&mut d, &mut frame, window)?;
        let mut bits_out = BitWriter::new(&mut frame);
        align_for(&mut bits_out, *bits);
        bits_out.put(u32::from(*prime), *bits);
        // The writer ends on a byte boundary: the span's bytes follow as
        // they are in the blob.
        let at = frame.len();
        frame.resize(at + in_len, 0);
        blob.read_exact_at(&mut frame[at..], span.in_offset)?;
        if let Some(end_bits) = end_bits {
            let end = ((at + in_len) as u64 * 8)
                .checked_sub(u64::from(end_bits))
                .filter(|&end| end + u64::from(*bits) >= at as u64 * 8)
                .ok_or_else(|| bad("a span ends before it starts"))?;
            end_stream_at(&mut frame, end);
        }
        let mut decoded = vec![0u8; history + out.len()];
        let made = d
            .deflate_decompress(&frame, &mut decoded)
            .map_err(|e| match e {
                DecompressionError::BadData => bad("the span's deflate data is invalid"),
                DecompressionError::InsufficientSpace => {
                    bad("the span decodes to more bytes than the index says")
                }
            })?;
        if made != decoded.len() {
            return Err(bad(&format!(
                "the span decodes to {} bytes, the index says {}",
                made.saturating_sub(history),
                out.len()
            )));
        }
        if crc32(0, &decoded[history..]) != span.crc32 {
            return Err(bad("the framed span's bytes do not match the index"));
        }
        out.copy_from_slice(&decoded[history..]);
        Ok(())
    })?;
    Ok(true)
}

/// The stored block that carries the checkpoint's window, unpacked from its
/// raw-deflate form straight into the frame; returns the window's length.
fn append_window(d: &mut Decompressor, frame: &mut Vec<u8>, packed: &[u8]) -> io::Result<usize> {
    frame.clear();
    frame.resize(5 + WINDOW, 0);
    let len = match d.deflate_decompress(packed, &mut frame[5..]) {
        Ok(len) => len,
        Err(DecompressionError::InsufficientSpace) => {
            return Err(bad("checkpoint window is larger than 32 KiB"))
        }
        Err(DecompressionError::BadData) => return Err(bad("checkpoint window is damaged")),
    };
    frame.truncate(5 + len);
    let stored_len = len as u16;
    frame[0] = STORED_HEADER;
    frame[1..3].copy_from_slice(&stored_len.to_le_bytes());
    frame[3..5].copy_from_slice(&(!stored_len).to_le_bytes());
    Ok(len)
}

/// Bring the stream, now on a byte boundary, to where `bits` primed bits
/// then a byte boundary follow: `(8 - bits) % 8` bits on, in empty
/// non-final blocks. A fixed one is 2 bits past a byte, a dynamic one
/// (`put_empty_dynamic_block`) 3; one dynamic and up to three fixed reach every
/// bit of a byte.
fn align_for(out: &mut BitWriter<'_>, bits: u8) {
    let mut rest = (8 - bits) % 8;
    if rest % 2 == 1 {
        put_empty_dynamic_block(out);
        rest = (rest + 8 - 3) % 8;
    }
    for _ in 0..rest / 2 {
        out.put(u32::from(EMPTY_FIXED_BLOCK), EMPTY_FIXED_BLOCK_BITS);
    }
}

/// The order in which a dynamic block sends its code-length code's lengths.
const CODE_LENGTH_ORDER: [u8; 18] = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1];

/// An empty non-final block of dynamic codes, 91 bits:
/// - BFINAL 0, BTYPE 10; HLIT 0 (257 length codes), HDIST 0 (one distance
///   code), HCLEN 14 (18 code-length codes);
/// - the code-length code: symbols 18 and 1 of length 1 (codes 1 and 0),
///   the other 16 of length 0;
/// - the code lengths: 138 and 117 zeros (symbol 18 with its 7 extra
///   bits), then 1 for literal 255, for end-of-block and for distance 0;
/// - the block's only symbol, end-of-block (code 1: literal 255 has 0).
fn put_empty_dynamic_block(out: &mut BitWriter<'_>) {
    out.put(0b100, 3);
    out.put(0, 5);
    out.put(0, 5);
    out.put(14, 4);
    for symbol in CODE_LENGTH_ORDER {
        out.put(u32::from(symbol == 18 || symbol == 1), 3);
    }
    for zeros in [138, 117] {
        out.put(1, 1);
        out.put(zeros - 11, 7);
    }
    for _length_one in 0..3 {
        out.put(0, 1);
    }
    out.put(1, 1);
}

/// Writes bit fields into a frame, least significant bit first, from the
/// frame's end (a byte boundary); the last byte is padded with zeros.
struct BitWriter<'a> {
    frame: &'a mut Vec<u8>,
    /// Bits used in the frame's last byte; 0: it is whole (or absent).
    used: u8,
}

impl<'a> BitWriter<'a> {
    fn new(frame: &'a mut Vec<u8>) -> BitWriter<'a> {
        BitWriter { frame, used: 0 }
    }

    fn put(&mut self, value: u32, len: u8) {
        for i in 0..len {
            if self.used == 0 {
                self.frame.push(0);
            }
            let bit = ((value >> i) & 1) as u8;
            if let Some(last) = self.frame.last_mut() {
                *last |= bit << self.used;
            }
            self.used = (self.used + 1) % 8;
        }
    }
}

/// Cut the frame at bit `end` and close the stream there with an empty
/// final block.
fn end_stream_at(frame: &mut Vec<u8>, end: u64) {
    let (byte, bit) = ((end / 8) as usize, (end % 8) as u32);
    frame.truncate(byte + 1);
    frame.resize(byte + 1, 0);
    frame[byte] &= ((1u16 << bit) - 1) as u8;
    frame.resize(((end + EMPTY_FINAL_BLOCK_BITS).div_ceil(8)) as usize, 0);
    let closing = EMPTY_FINAL_BLOCK << bit;
    frame[byte] |= closing as u8;
    if let Some(next) = frame.get_mut(byte + 1) {
        *next |= (closing >> 8) as u8;
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `bit_len` bits of `bytes` from bit `from`, least significant
    /// first, as a string of 0s and 1s.
    fn bit_string(bytes: &[u8], from: u64, bit_len: u64) -> String {
        (from..from + bit_len)
            .map(|i| {
                if bytes[(i / 8) as usize] >> (i % 8) & 1 == 1 {
                    '1'
                } else {
                    '0'
                }
            })
            .collect()
    }

    /// Inflate a whole raw deflate stream with libdeflate and with zlib.
    fn inflate_both(frame: &[u8], len: usize) -> (Vec<u8>, Vec<u8>) {
        let mut by_libdeflate = vec![0u8; len];
        let made = Decompressor::new()
            .deflate_decompress(frame, &mut by_libdeflate)
            .unwrap();
        by_libdeflate.truncate(made);
        let mut by_zlib = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::DeflateDecoder::new(frame), &mut by_zlib)
            .unwrap();
        (by_libdeflate, by_zlib)
    }

    #[test]
    fn the_empty_blocks_reach_every_bit_of_a_byte_and_decode_to_nothing() {
        let mut block = Vec::new();
        let mut out = BitWriter::new(&mut block);
        put_empty_dynamic_block(&mut out);
        let bits = out.frame.len() * 8 - usize::from((8 - out.used) % 8);
        assert_eq!(bits, 91);
        for primed in 0..8u8 {
            // A stored block ("window"), the padding for `primed` bits, and
            // where the span would start, an empty final block.
            let mut frame = vec![STORED_HEADER, 6, 0, !6, !0];
            frame.extend_from_slice(b"window");
            let mut out = BitWriter::new(&mut frame);
            align_for(&mut out, primed);
            assert_eq!(
                (8 - out.used) % 8,
                primed,
                "the padding leaves room for {primed} primed bits in its byte"
            );
            out.put(u32::from(EMPTY_FINAL_BLOCK), EMPTY_FINAL_BLOCK_BITS as u8);
            let (a, b) = inflate_both(&frame, 64);
            assert_eq!(a, b"window", "libdeflate, {primed} primed bits");
            assert_eq!(b, b"window", "zlib, {primed} primed bits");
        }
    }

    #[test]
    fn the_stream_is_closed_exactly_where_the_span_ends() {
        for end in 16..40u64 {
            let mut frame = vec![0xffu8; 6];
            end_stream_at(&mut frame, end);
            assert_eq!(frame.len() as u64, (end + 10).div_ceil(8));
            assert_eq!(bit_string(&frame, 0, end), "1".repeat(end as usize));
            assert_eq!(bit_string(&frame, end, 10), "1100000000", "end {end}");
            let tail = frame.len() as u64 * 8 - end - 10;
            assert_eq!(
                bit_string(&frame, end + 10, tail),
                "0".repeat(tail as usize)
            );
        }
    }
}
