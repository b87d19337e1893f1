//! Which bytes of a checkpoint's 32 KiB window the deflate stream after it
//! copies from.
//!
//! A gzip checkpoint keeps the 32 KiB of output before it, since the blocks
//! after it may copy from anywhere in that window. Only the first 32 KiB of
//! output after the checkpoint can reach back into it, and on real layers
//! those copies touch 6–12 % of the window. Zeroing the rest leaves a
//! window that decodes the same bytes and packs to 12–20 % of the size, so
//! the index holds more checkpoints for the same bytes.
//!
//! This module decodes the deflate symbols after a checkpoint (puff-style,
//! counting output, never producing it) and marks every window byte a
//! length/distance pair copies. It only has to be right to save space: the
//! indexer decodes the same input again with zlib from the sparse window
//! and keeps the whole window unless the output is the same.

/// Deflate's window.
pub const WINDOW: usize = 32 * 1024;

const MAX_BITS: usize = 15;

/// Length codes 257..285: base lengths and extra bits.
const LENGTH_BASE: [u16; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
const LENGTH_EXTRA: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
/// Distance codes 0..29: base distances and extra bits.
const DIST_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];
const DIST_EXTRA: [u8; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];
/// The order code-length code lengths are sent in.
const CODE_LENGTH_ORDER: [usize; 19] = [
    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
];

/// The window bytes (index 0 is the oldest of the 32 KiB) that the first
/// `out_len` bytes of output after a checkpoint copy from. The stream
/// resumes after `bits` bits of `prime` (as `inflatePrime` takes them),
/// then `input`. `None` where the input is cut short or is not deflate:
/// the caller then keeps the whole window.
pub fn window_use(bits: u8, prime: u8, input: &[u8], out_len: usize) -> Option<Vec<bool>> {
    debug_assert!(bits < 8, "inflatePrime takes up to 7 bits here");
    let mut used = vec![false; WINDOW];
    let mut s = Symbols {
        input,
        pos: 0,
        buf: if bits > 0 {
            u64::from(prime) & ((1 << bits) - 1)
        } else {
            0
        },
        count: u32::from(bits.min(8)),
    };
    let mut out = 0usize;
    loop {
        if out >= out_len {
            return Some(used);
        }
        let last = s.bits(1)? == 1;
        match s.bits(2)? {
            0 => out += s.stored(out_len - out)?,
            1 => {
                let (lengths, dists) = fixed();
                s.codes(lengths, dists, &mut out, out_len, &mut used)?
            }
            2 => {
                let (lengths, dists) = s.dynamic_tables()?;
                s.codes(&lengths, &dists, &mut out, out_len, &mut used)?
            }
            _ => return None,
        }
        if last {
            return Some(used);
        }
    }
}

/// Codes this long or shorter are decoded by one table look-up.
const FAST_BITS: u32 = 9;

/// `window` (the newest `window.len()` bytes of the 32 KiB `used` covers)
/// with every byte `used` does not mark zeroed.
pub fn zero_unused(window: &[u8], used: &[bool]) -> Vec<u8> {
    let skip = used.len().saturating_sub(window.len());
    window
        .iter()
        .zip(&used[skip..])
        .map(|(&b, &u)| if u { b } else { 0 })
        .collect()
}

/// A canonical Huffman code as puff keeps it (how many codes of each
/// length, and the symbols in code order), with a table for the short
/// codes: indexed by the next `FAST_BITS` bits of the stream, each entry
/// holds `symbol | length << 12`, or 0 for a longer code.
struct Huffman {
    count: [u16; MAX_BITS + 1],
    symbol: Vec<u16>,
    fast: Vec<u16>,
}

impl Huffman {
    /// `None` for an over-subscribed code; incomplete codes are allowed
    /// (a lone distance code is legal), decoding simply fails on a hole.
    fn new(lengths: &[u8]) -> Option<Huffman> {
        let mut count = [0u16; MAX_BITS + 1];
        for &l in lengths {
            count[usize::from(l)] += 1;
        }
        count[0] = 0;
        let mut left = 1i32;
        for &c in &count[1..] {
            left = left * 2 - i32::from(c);
            if left < 0 {
                return None;
            }
        }
        let mut offsets = [0u16; MAX_BITS + 2];
        for len in 1..=MAX_BITS {
            offsets[len + 1] = offsets[len] + count[len];
        }
        let mut symbol = vec![0u16; lengths.len()];
        for (sym, &l) in lengths.iter().enumerate() {
            if l != 0 {
                let at = &mut offsets[usize::from(l)];
                symbol[usize::from(*at)] = sym as u16;
                *at += 1;
            }
        }
        // The canonical codes, first of each length, then in symbol order;
        // the stream sends them high bit first, so the table is indexed by
        // the code's bits reversed.
        let mut next = [0u32; MAX_BITS + 1];
        let mut code = 0u32;
        for len in 1..=MAX_BITS {
            code = (code + u32::from(count[len - 1])) << 1;
            next[len] = code;
        }
        let mut fast = vec![0u16; 1 << FAST_BITS];
        for (sym, &l) in lengths.iter().enumerate() {
            let len = u32::from(l);
            if len == 0 || len > FAST_BITS {
                if len != 0 {
                    next[len as usize] += 1;
                }
                continue;
            }
            let code = next[len as usize];
            next[len as usize] += 1;
            let reversed = code.reverse_bits() >> (32 - len);
            let entry = sym as u16 | (l as u16) << 12;
            for at in (reversed as usize..1 << FAST_BITS).step_by(1 << len) {
                fast[at] = entry;
            }
        }
        Some(Huffman {
            count,
            symbol,
            fast,
        })
    }
}

/// The fixed codes, built once: a hostile stream can hold a fixed block
/// every ten bits.
fn fixed() -> &'static (Huffman, Huffman) {
    static FIXED: std::sync::OnceLock<(Huffman, Huffman)> = std::sync::OnceLock::new();
    FIXED.get_or_init(|| {
        let mut l = [8u8; 288];
        l[144..256].fill(9);
        l[256..280].fill(7);
        (
            Huffman::new(&l).expect("the fixed code is complete"),
            Huffman::new(&[5u8; 30]).expect("the fixed code is complete"),
        )
    })
}

/// A bit reader over the input after the checkpoint.
struct Symbols<'a> {
    input: &'a [u8],
    pos: usize,
    buf: u64,
    count: u32,
}

impl Symbols<'_> {
    fn bits(&mut self, n: u32) -> Option<u32> {
        while self.count < n {
            let byte = *self.input.get(self.pos)?;
            self.pos += 1;
            self.buf |= u64::from(byte) << self.count;
            self.count += 8;
        }
        let v = (self.buf & ((1u64 << n) - 1)) as u32;
        self.buf >>= n;
        self.count -= n;
        Some(v)
    }

    fn decode(&mut self, h: &Huffman) -> Option<usize> {
        while self.count < FAST_BITS && self.pos < self.input.len() {
            self.buf |= u64::from(self.input[self.pos]) << self.count;
            self.pos += 1;
            self.count += 8;
        }
        let entry = h.fast[(self.buf & ((1 << FAST_BITS) - 1)) as usize];
        let len = u32::from(entry >> 12);
        if len != 0 && len <= self.count {
            self.buf >>= len;
            self.count -= len;
            return Some(usize::from(entry & 0x1ff));
        }
        self.decode_slowly(h)
    }

    /// Bit by bit, as puff does: codes longer than `FAST_BITS`, and the
    /// last few bits of the input.
    fn decode_slowly(&mut self, h: &Huffman) -> Option<usize> {
        let (mut code, mut first, mut index) = (0i32, 0i32, 0i32);
        for len in 1..=MAX_BITS {
            code |= self.bits(1)? as i32;
            let count = i32::from(h.count[len]);
            if code - count < first {
                return h
                    .symbol
                    .get((index + code - first) as usize)
                    .map(|&s| s.into());
            }
            index += count;
            first = (first + count) << 1;
            code <<= 1;
        }
        None
    }

    /// A stored block: its length; it copies nothing from the window. Its
    /// bytes need not all be there when the `wanted` output ends in it.
    fn stored(&mut self, wanted: usize) -> Option<usize> {
        // Whole bytes the bit buffer holds were read ahead: give them back.
        self.pos -= (self.count / 8) as usize;
        self.buf = 0;
        self.count = 0;
        let header = self.input.get(self.pos..self.pos.checked_add(4)?)?;
        let len = usize::from(u16::from_le_bytes([header[0], header[1]]));
        let nlen = u16::from_le_bytes([header[2], header[3]]);
        if len as u16 != !nlen {
            return None;
        }
        self.pos += 4 + len;
        (self.pos <= self.input.len() || len >= wanted).then_some(len)
    }

    fn dynamic_tables(&mut self) -> Option<(Huffman, Huffman)> {
        let nlen = self.bits(5)? as usize + 257;
        let ndist = self.bits(5)? as usize + 1;
        let ncode = self.bits(4)? as usize + 4;
        if nlen > 286 || ndist > 30 {
            return None;
        }
        let mut code_lengths = [0u8; 19];
        for &at in &CODE_LENGTH_ORDER[..ncode] {
            code_lengths[at] = self.bits(3)? as u8;
        }
        let code = Huffman::new(&code_lengths)?;
        let mut lengths = Vec::with_capacity(nlen + ndist);
        while lengths.len() < nlen + ndist {
            let (value, repeat) = match self.decode(&code)? {
                sym @ 0..=15 => (sym as u8, 1),
                16 => (*lengths.last()?, 3 + self.bits(2)? as usize),
                17 => (0, 3 + self.bits(3)? as usize),
                18 => (0, 11 + self.bits(7)? as usize),
                _ => return None,
            };
            if lengths.len() + repeat > nlen + ndist {
                return None;
            }
            lengths.extend(std::iter::repeat_n(value, repeat));
        }
        if lengths[256] == 0 {
            return None;
        }
        Some((
            Huffman::new(&lengths[..nlen])?,
            Huffman::new(&lengths[nlen..])?,
        ))
    }

    /// A Huffman-coded block, up to its end or `out_len` bytes of output;
    /// marks what its copies take from the window.
    fn codes(
        &mut self,
        lengths: &Huffman,
        dists: &Huffman,
        out: &mut usize,
        out_len: usize,
        used: &mut [bool],
    ) -> Option<()> {
        while *out < out_len {
            let sym = self.decode(lengths)?;
            if sym < 256 {
                *out += 1;
                continue;
            }
            if sym == 256 {
                return Some(());
            }
            let l = sym - 257;
            let len =
                usize::from(*LENGTH_BASE.get(l)?) + self.bits(u32::from(LENGTH_EXTRA[l]))? as usize;
            let d = self.decode(dists)?;
            let dist =
                usize::from(*DIST_BASE.get(d)?) + self.bits(u32::from(DIST_EXTRA[d]))? as usize;
            if dist > *out + WINDOW {
                return None;
            }
            if dist > *out {
                // Window index of the first byte copied; the copy runs on
                // into this output once it reaches the checkpoint.
                let from = WINDOW + *out - dist;
                let to = (from + len).min(WINDOW);
                used[from..to].fill(true);
            }
            *out += len;
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn text(len: usize, mut seed: u64) -> Vec<u8> {
        let words: [&[u8]; 8] = [
            b"layer ",
            b"span ",
            b"window ",
            b"checkpoint ",
            b"tar ",
            b"gzip\n",
            b"zstd ",
            b"oci ",
        ];
        let mut out = Vec::with_capacity(len + 16);
        while out.len() < len {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            out.extend_from_slice(words[(seed % 8) as usize]);
            if seed % 5 == 0 {
                out.push((seed >> 40) as u8);
            }
        }
        out.truncate(len);
        out
    }

    /// Raw `stream` inflated with `window` as its dictionary.
    fn inflate_from(window: &[u8], stream: &[u8], len: usize) -> Vec<u8> {
        let mut d = flate2::Decompress::new(false);
        d.set_dictionary(window).unwrap();
        let mut out = Vec::with_capacity(len);
        d.decompress_vec(stream, &mut out, flate2::FlushDecompress::Finish)
            .unwrap();
        out
    }

    fn raw_deflate(data: &[u8], level: u32) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(level));
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// With the window as a preset dictionary, a stream that starts at a
    /// byte boundary: the copies it makes before its first 32 KiB are the
    /// window bytes it uses. Checked against a brute force: every window
    /// byte not marked can be zeroed without changing the output.
    #[test]
    fn marks_every_window_byte_a_copy_takes_and_no_other_is_needed() {
        for (seed, level) in [(1u64, 6u32), (2, 9), (3, 1), (4, 0)] {
            let window = text(WINDOW, seed);
            let after = [&window[WINDOW - 9000..], &text(70_000, seed + 10)[..]].concat();
            let mut c = flate2::Compress::new(flate2::Compression::new(level), false);
            c.set_dictionary(&window).unwrap();
            let mut stream = Vec::with_capacity(after.len() + 1024);
            c.compress_vec(&after, &mut stream, flate2::FlushCompress::Finish)
                .unwrap();
            let used = window_use(0, 0, &stream, WINDOW).expect("a valid stream");
            let marked = used.iter().filter(|&&u| u).count();
            if level > 0 {
                assert!(marked > 0, "level {level}: nothing marked");
            } else {
                assert_eq!(marked, 0, "stored blocks copy nothing");
            }
            let out = inflate_from(&zero_unused(&window, &used), &stream, after.len());
            assert_eq!(
                out, after,
                "level {level}: the sparse window decodes other bytes"
            );
        }
    }

    /// A sync flush ends a Huffman block with an empty stored block, whose
    /// header sits at a byte boundary the bit reader has read past.
    #[test]
    fn a_stored_block_after_a_huffman_block_is_found_where_it_starts() {
        // Pieces of different lengths leave the flush at every bit offset.
        for k in 0..24usize {
            let window = text(WINDOW, 21 + k as u64);
            let mut c = flate2::Compress::new(flate2::Compression::new(6), false);
            c.set_dictionary(&window).unwrap();
            let mut stream = Vec::with_capacity(1 << 20);
            let mut after = Vec::new();
            let pieces = [
                &window[WINDOW - 3000 - 37 * k..],
                &text(500 + 131 * k, 22)[..],
                &window[..4000],
            ];
            for (i, piece) in pieces.iter().enumerate() {
                after.extend_from_slice(piece);
                let flush = if i == 2 {
                    flate2::FlushCompress::Finish
                } else {
                    flate2::FlushCompress::Sync
                };
                c.compress_vec(piece, &mut stream, flush).unwrap();
            }
            let used = window_use(0, 0, &stream, WINDOW)
                .unwrap_or_else(|| panic!("piece {k}: the sync-flushed stream was refused"));
            assert!(used.iter().any(|&u| u) && !used.iter().all(|&u| u));
            let out = inflate_from(&zero_unused(&window, &used), &stream, after.len());
            assert_eq!(out, after, "piece {k}");
        }
    }

    #[test]
    fn resumes_after_primed_bits() {
        // A fixed-code block of literals, then the stream shifted by three
        // bits: the first three bits come through `prime`.
        let data = text(5000, 7);
        let stream = raw_deflate(&data, 6);
        let used = window_use(0, 0, &stream, data.len()).unwrap();
        assert!(used.iter().all(|&u| !u), "no window: nothing to copy from");
        let mut shifted = vec![0u8; stream.len() + 1];
        let prime = 0b101u8;
        // bits 0..3 of the stream are `prime`; the deflate stream follows.
        let mut acc: u32 = u32::from(prime);
        let mut nbits = 3;
        let mut at = 0;
        for &b in &stream {
            acc |= u32::from(b) << nbits;
            nbits += 8;
            while nbits >= 8 {
                shifted[at] = acc as u8;
                acc >>= 8;
                nbits -= 8;
                at += 1;
            }
        }
        shifted[at] = acc as u8;
        // The checkpoint sits 3 bits into shifted[0]: five bits of it are
        // the stream's first, handed over as the primed bits.
        let first = shifted[0] >> 3;
        let used = window_use(5, first, &shifted[1..], data.len());
        assert_eq!(used, Some(vec![false; WINDOW]));
    }

    #[test]
    fn gives_up_on_cut_or_corrupt_input() {
        let data = text(40_000, 9);
        let stream = raw_deflate(&data, 6);
        assert!(window_use(0, 0, &stream[..stream.len() / 2], WINDOW).is_none());
        let mut bad = stream.clone();
        bad[0] |= 0b110; // block type 3
        assert!(window_use(0, 0, &bad, WINDOW).is_none());
        assert!(window_use(0, 0, &[], WINDOW).is_none());
    }
}
