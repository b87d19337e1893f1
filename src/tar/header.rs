//! One 512-byte tar header block, in the formats Go's `archive/tar` tells
//! apart (V7, ustar, star, GNU), and its numeric fields.

/// The header formats Go's `archive/tar` tells apart; they differ in where
/// a name's prefix lives.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    V7,
    Ustar,
    Star,
    Gnu,
}

/// One 512-byte header block, checked.
pub(super) struct Header<'a> {
    pub(super) block: &'a [u8; 512],
    pub(super) format: Format,
}

impl<'a> Header<'a> {
    pub(super) fn parse(block: &'a [u8; 512]) -> Result<Header<'a>, String> {
        let stored =
            parse_octal(&block[148..156]).ok_or("the header checksum field is not octal")?;
        // POSIX's unsigned sum only, as tar-rs: the signed sums of some
        // ancient writers would also let through fuzz-made headers such as
        // Go's issue 12435.
        let sum: u64 = block
            .iter()
            .enumerate()
            .map(|(i, &b)| u64::from(if (148..156).contains(&i) { b' ' } else { b }))
            .sum();
        if stored != sum {
            return Err(format!(
                "header checksum mismatch: the header says {stored:o}, its bytes sum to {sum:o}"
            ));
        }
        let format = match (&block[257..263], &block[263..265]) {
            (b"ustar\0", _) if &block[508..512] == b"tar\0" => Format::Star,
            (b"ustar\0", _) => Format::Ustar,
            (b"ustar ", b" \0") => Format::Gnu,
            _ => Format::V7,
        };
        Ok(Header { block, format })
    }

    pub(super) fn type_byte(&self) -> u8 {
        self.block[156]
    }

    /// The name, with the ustar prefix where the format has one.
    pub(super) fn name(&self) -> Vec<u8> {
        let name = until_nul(&self.block[..100]);
        let prefix = match self.format {
            Format::Ustar => until_nul(&self.block[345..500]),
            Format::Star => until_nul(&self.block[345..476]),
            // Go before 1.8 wrote a ustar prefix into GNU headers, where the
            // atime and ctime fields live; Go reads it back when those fields
            // are not numbers (golang.org/issue/12594).
            Format::Gnu => {
                let times_ok = [&self.block[345..357], &self.block[357..369]]
                    .iter()
                    .all(|f| f[0] == 0 || parse_numeric(f).is_some());
                let prefix = until_nul(&self.block[345..500]);
                if times_ok || !prefix.is_ascii() {
                    &[][..]
                } else {
                    prefix
                }
            }
            Format::V7 => &[][..],
        };
        if prefix.is_empty() {
            name.to_vec()
        } else {
            [prefix, b"/", name].concat()
        }
    }

    pub(super) fn link_name(&self) -> &'a [u8] {
        until_nul(&self.block[157..257])
    }

    pub(super) fn numeric(&self, range: std::ops::Range<usize>, what: &str) -> Result<i64, String> {
        parse_numeric(&self.block[range]).ok_or_else(|| format!("bad {what} field in the header"))
    }

    pub(super) fn size(&self) -> Result<u64, String> {
        let size = self.numeric(124..136, "size")?;
        u64::try_from(size).map_err(|_| format!("negative size {size} in the header"))
    }

    pub(super) fn id(&self, range: std::ops::Range<usize>, what: &str) -> Result<u32, String> {
        let v = self.numeric(range, what)?;
        u32::try_from(v).map_err(|_| format!("{what} {v} does not fit in 32 bits"))
    }

    pub(super) fn device(&self) -> Result<(u32, u32), String> {
        if self.format == Format::V7 {
            return Ok((0, 0));
        }
        Ok((
            self.id(329..337, "device major")?,
            self.id(337..345, "device minor")?,
        ))
    }
}

pub(super) fn until_nul(field: &[u8]) -> &[u8] {
    field
        .iter()
        .position(|&b| b == 0)
        .map_or(field, |i| &field[..i])
}

/// A numeric header field as Go reads it: base-256 (two's complement) when
/// the top bit is set, else octal between optional NULs and spaces; a blank
/// field is 0.
pub(super) fn parse_numeric(field: &[u8]) -> Option<i64> {
    if field.first().is_some_and(|&b| b & 0x80 != 0) {
        let negative = field[0] & 0x40 != 0;
        let inv = if negative { 0xff } else { 0 };
        let mut x: u64 = 0;
        for (i, &c) in field.iter().enumerate() {
            let mut c = c ^ inv;
            if i == 0 {
                c &= 0x7f;
            }
            if x >> 56 != 0 {
                return None;
            }
            x = x << 8 | u64::from(c);
        }
        if x >> 63 != 0 {
            return None;
        }
        let x = x as i64;
        return Some(if negative { !x } else { x });
    }
    i64::try_from(parse_octal(field)?).ok()
}

pub(super) fn parse_octal(field: &[u8]) -> Option<u64> {
    let start = field.iter().position(|&b| b != 0 && b != b' ');
    let Some(start) = start else {
        return Some(0);
    };
    let end = field.iter().rposition(|&b| b != 0 && b != b' ')? + 1;
    let digits = until_nul(&field[start..end]);
    if digits.is_empty() || !digits.iter().all(|b| (b'0'..=b'7').contains(b)) {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(8)?.checked_add(u64::from(d - b'0'))
    })
}
