//! Decoding one whole gzip span with libdeflate, which inflates the large
//! bench image's layers at 650–730 MB/s where zlib-rs does 430–460.
//!
//! libdeflate inflates a complete deflate stream in one call: it cannot be
//! primed with bits or given a dictionary. So the span is framed as a stream
//! of its own:
//!
//! 1. a stored block (non-final) holding the checkpoint's window, which
//!    gives the copies their history;
//! 2. the span's own blocks, shifted by the `bits` the checkpoint primes so
//!    that they start on the byte the stored block ends on;
//! 3. where the next span starts at a checkpoint, an empty final block of
//!    fixed codes, written where the span's last block ends (a checkpoint is
//!    always between blocks). A span that ends its member needs none: its
//!    last block is final already.
//!
//! The output is the window then the span; only the span is kept. Spans
//! that cannot be framed (a member's first span, one followed by a
//! materialised stretch, one whose input is far longer than its output) go
//! to zlib, and every decoded span is CRC-checked by the reader either way.

use std::cell::RefCell;
use std::io;

use libdeflater::{DecompressionError, Decompressor};

use crate::blob::BlobSource;
use crate::layer::spans::{Span, SpanStart};
use crate::layer::window_use::WINDOW;

/// A stored block's header on a byte boundary: BFINAL 0, BTYPE 00, padding.
const STORED_HEADER: u8 = 0;

/// An empty final block of fixed codes: BFINAL 1, BTYPE 01, then the 7-bit
/// end-of-block code 0000000 (ten bits, least significant first: 1, 1, 0,
/// then seven zeros).
const EMPTY_FINAL_BLOCK: u16 = 0b011;
const EMPTY_FINAL_BLOCK_BITS: u64 = 10;

/// Input beyond this, for a span of `out_len` bytes, goes to zlib, which
/// streams it: deflate's worst case (stored blocks) is 5 bytes in 64 KiB
/// over the output, so only a stream of empty blocks gets here.
fn input_cap(out_len: u64) -> u64 {
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
    let mut frame = Vec::with_capacity(5 + WINDOW + (in_end - span.in_offset) as usize + 3);
    DECOMPRESSOR.with(|d| -> io::Result<()> {
        let mut d = d.borrow_mut();
        append_window(&mut d, &mut frame, window)?;
        let mut input = vec![0u8; (in_end - span.in_offset) as usize];
        blob.read_exact_at(&mut input, span.in_offset)?;
        append_shifted(&mut frame, *prime, *bits, &input);
        if let Some(end_bits) = end_bits {
            let header_and_window = (5 + window_len(&frame)) as u64;
            let span_bits = (u64::from(*bits) + 8 * input.len() as u64)
                .checked_sub(u64::from(end_bits))
                .ok_or_else(|| bad("a span ends before it starts"))?;
            end_stream_at(&mut frame, header_and_window * 8 + span_bits);
        }
        let history = window_len(&frame);
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
        out.copy_from_slice(&decoded[history..]);
        Ok(())
    })?;
    Ok(true)
}

/// The stored block's length, as its header gives it.
fn window_len(frame: &[u8]) -> usize {
    usize::from(u16::from_le_bytes([frame[1], frame[2]]))
}

/// The stored block that carries the checkpoint's window, unpacked from its
/// raw-deflate form straight into the frame.
fn append_window(d: &mut Decompressor, frame: &mut Vec<u8>, packed: &[u8]) -> io::Result<()> {
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
    let len = len as u16;
    frame[0] = STORED_HEADER;
    frame[1..3].copy_from_slice(&len.to_le_bytes());
    frame[3..5].copy_from_slice(&(!len).to_le_bytes());
    Ok(())
}

/// Append the bit stream "`bits` bits of `prime`, then `input`" from a byte
/// boundary.
fn append_shifted(frame: &mut Vec<u8>, prime: u8, bits: u8, input: &[u8]) {
    if bits == 0 {
        frame.extend_from_slice(input);
        return;
    }
    let (up, down) = (u32::from(bits), 8 - u32::from(bits));
    let start = frame.len();
    frame.resize(start + input.len() + 1, 0);
    let out = &mut frame[start..];
    out[0] = prime & ((1u8 << up) - 1);
    let Some((&first, _)) = input.split_first() else {
        return;
    };
    out[0] |= first << up;
    // Each output byte takes the top of one input byte and the bottom of
    // the next; written as a zip so that it vectorises.
    for ((o, &lo), &hi) in out[1..input.len()].iter_mut().zip(input).zip(&input[1..]) {
        *o = (lo >> down) | (hi << up);
    }
    out[input.len()] = input[input.len() - 1] >> down;
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

    #[test]
    fn shifting_keeps_the_primed_bits_then_every_input_bit() {
        let input = [0b1010_0110u8, 0xff, 0x00, 0b0101_1001, 0x80];
        for bits in 0..8u8 {
            let prime = 0b0110_1101u8 >> (8 - bits.max(1));
            let mut frame = vec![0xeeu8];
            append_shifted(&mut frame, prime, bits, &input);
            let want = format!(
                "{}{}",
                bit_string(&[prime], 0, u64::from(bits)),
                bit_string(&input, 0, 40)
            );
            assert_eq!(
                bit_string(&frame, 8, 40 + u64::from(bits)),
                want,
                "bits {bits}"
            );
            assert_eq!(frame[0], 0xee);
        }
        let mut frame = Vec::new();
        append_shifted(&mut frame, 0b101, 3, &[]);
        assert_eq!(frame, [0b101]);
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
