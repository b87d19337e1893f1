//! Reading tar headers from a layer's uncompressed stream, with our own
//! strict, bounded handling of PAX and GNU extension headers.
//!
//! The `tar` crate buffers whole extension headers before anyone can look at
//! their size, so a gzip bomb declaring a 4 GiB PAX header or GNU long name
//! is read into memory. Here every extension header is refused above
//! `MAX_EXTENSION_BYTES` before a byte of it is read, PAX records are parsed
//! strictly, and entry data is skipped by streaming. Where formats disagree
//! we read as Go's `archive/tar` does, since that is what Docker and
//! containerd use on the same layers.

pub mod entry;

use std::io::{self, Read};

use crate::tar::entry::{EntryExtra, EntryKind, TarEntry};

const BLOCK: u64 = 512;

pub use crate::limits::{MAX_EXTENSION_BYTES, MAX_PATH_BYTES};
use crate::limits::{MAX_NAME_BYTES, MAX_XATTR_VALUE_BYTES};

/// Why a layer's tar stream was refused, with the entry it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarError {
    /// The entry's raw name, when the failure belongs to one.
    pub path: Option<Vec<u8>>,
    pub reason: String,
}

impl TarError {
    fn stream(reason: impl Into<String>) -> TarError {
        TarError {
            path: None,
            reason: reason.into(),
        }
    }

    fn entry(path: &[u8], reason: impl Into<String>) -> TarError {
        TarError {
            path: Some(path.to_vec()),
            reason: reason.into(),
        }
    }
}

/// How a path with `..` in it is treated.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum DotDot {
    /// Entry names: `..` is an error, as the image-spec asks.
    Reject,
    /// Hardlink targets: `..` steps stop at the root, like containerd.
    ClampAtRoot,
}

/// Normalise a tar path: strip leading `/` and `./`, drop `.` components and
/// empty ones, and deal with `..` as asked. NUL bytes are an error.
pub fn normalize_path(raw: &[u8], dotdot: DotDot) -> Result<Vec<u8>, String> {
    if raw.contains(&0) {
        return Err("the name contains a NUL byte".to_string());
    }
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in raw.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => match dotdot {
                DotDot::Reject => return Err("the path contains '..'".to_string()),
                DotDot::ClampAtRoot => {
                    parts.pop();
                }
            },
            _ => {
                // A whiteout may carry the 4-byte `.wh.` on top of NAME_MAX.
                let limit = if part.starts_with(b".wh.") {
                    MAX_NAME_BYTES + 4
                } else {
                    MAX_NAME_BYTES
                };
                if part.len() > limit {
                    return Err(format!(
                        "a name is {} bytes long (limit {MAX_NAME_BYTES})",
                        part.len()
                    ));
                }
                parts.push(part);
            }
        }
    }
    let path = parts.join(&b'/');
    if path.len() > MAX_PATH_BYTES {
        return Err(format!(
            "the path is {} bytes long (limit {MAX_PATH_BYTES})",
            path.len()
        ));
    }
    Ok(path)
}

/// The header formats Go's `archive/tar` tells apart; they differ in where
/// a name's prefix lives.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    V7,
    Ustar,
    Star,
    Gnu,
}

/// One 512-byte header block, checked.
struct Header<'a> {
    block: &'a [u8; 512],
    format: Format,
}

impl<'a> Header<'a> {
    fn parse(block: &'a [u8; 512]) -> Result<Header<'a>, String> {
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

    fn type_byte(&self) -> u8 {
        self.block[156]
    }

    /// The name, with the ustar prefix where the format has one.
    fn name(&self) -> Vec<u8> {
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

    fn link_name(&self) -> &'a [u8] {
        until_nul(&self.block[157..257])
    }

    fn numeric(&self, range: std::ops::Range<usize>, what: &str) -> Result<i64, String> {
        parse_numeric(&self.block[range]).ok_or_else(|| format!("bad {what} field in the header"))
    }

    fn size(&self) -> Result<u64, String> {
        let size = self.numeric(124..136, "size")?;
        u64::try_from(size).map_err(|_| format!("negative size {size} in the header"))
    }

    fn id(&self, range: std::ops::Range<usize>, what: &str) -> Result<u32, String> {
        let v = self.numeric(range, what)?;
        u32::try_from(v).map_err(|_| format!("{what} {v} does not fit in 32 bits"))
    }

    fn device(&self) -> Result<(u32, u32), String> {
        if self.format == Format::V7 {
            return Ok((0, 0));
        }
        Ok((
            self.id(329..337, "device major")?,
            self.id(337..345, "device minor")?,
        ))
    }
}

fn until_nul(field: &[u8]) -> &[u8] {
    field
        .iter()
        .position(|&b| b == 0)
        .map_or(field, |i| &field[..i])
}

/// A numeric header field as Go reads it: base-256 (two's complement) when
/// the top bit is set, else octal between optional NULs and spaces; a blank
/// field is 0.
fn parse_numeric(field: &[u8]) -> Option<i64> {
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

fn parse_octal(field: &[u8]) -> Option<u64> {
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

/// The records of one PAX header that matter to us; a record with an empty
/// value leaves the header's field as it is (POSIX, and Go).
#[derive(Default)]
struct Pax {
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
    size: Option<u64>,
    uid: Option<u32>,
    gid: Option<u32>,
    mtime: Option<(i64, u32)>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Parse PAX records (`LEN KEY=VALUE\n`, LEN counting the whole record)
/// strictly: anything malformed is an error, as in Go.
fn parse_pax(mut data: &[u8]) -> Result<Pax, String> {
    let mut pax = Pax::default();
    while !data.is_empty() {
        let malformed = || "malformed PAX record".to_string();
        let space = data.iter().position(|&b| b == b' ').ok_or_else(malformed)?;
        let len: usize = std::str::from_utf8(&data[..space])
            .ok()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .ok_or_else(malformed)?;
        if len < 5 || len > data.len() || len <= space + 1 || data[len - 1] != b'\n' {
            return Err(malformed());
        }
        let record = &data[space + 1..len - 1];
        data = &data[len..];
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(malformed)?;
        let (key, value) = (&record[..eq], &record[eq + 1..]);
        if key.is_empty() || key.contains(&0) {
            return Err("a PAX record key is empty or contains a NUL byte".to_string());
        }
        if matches!(key, b"path" | b"linkpath" | b"uname" | b"gname") && value.contains(&0) {
            return Err(format!(
                "the PAX {} record contains a NUL byte",
                String::from_utf8_lossy(key)
            ));
        }
        if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
            if name.is_empty() {
                return Err("an xattr name is empty".to_string());
            }
            // XATTR_NAME_MAX and XATTR_SIZE_MAX: no file system holds more.
            if name.len() > MAX_NAME_BYTES {
                return Err(format!(
                    "an xattr name is {} bytes long (limit {MAX_NAME_BYTES})",
                    name.len()
                ));
            }
            if value.len() > MAX_XATTR_VALUE_BYTES {
                return Err(format!(
                    "the xattr {} has a {}-byte value (limit {MAX_XATTR_VALUE_BYTES})",
                    String::from_utf8_lossy(name),
                    value.len()
                ));
            }
            match pax.xattrs.iter_mut().find(|(k, _)| k == name) {
                Some(slot) => slot.1 = value.to_vec(),
                None => pax.xattrs.push((name.to_vec(), value.to_vec())),
            }
            continue;
        }
        if key.starts_with(b"GNU.sparse.") {
            return Err("PAX sparse files are not supported".to_string());
        }
        if value.is_empty() {
            continue;
        }
        let number = |what: &str| -> Result<u64, String> {
            std::str::from_utf8(value)
                .ok()
                .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
                .filter(|&v| v <= i64::MAX as u64)
                .ok_or_else(|| {
                    format!(
                        "bad PAX {what} record {:?}",
                        String::from_utf8_lossy(&value[..value.len().min(40)])
                    )
                })
        };
        let id = |what: &str| -> Result<u32, String> {
            let v = number(what)?;
            u32::try_from(v).map_err(|_| format!("PAX {what} {v} does not fit in 32 bits"))
        };
        match key {
            b"path" => pax.path = Some(value.to_vec()),
            b"linkpath" => pax.linkpath = Some(value.to_vec()),
            b"size" => pax.size = Some(number("size")?),
            b"uid" => pax.uid = Some(id("uid")?),
            b"gid" => pax.gid = Some(id("gid")?),
            b"mtime" => {
                pax.mtime =
                    Some(parse_pax_time(value).ok_or_else(|| "bad PAX mtime record".to_string())?)
            }
            _ => {}
        }
    }
    Ok(pax)
}

/// PAX times are decimal seconds with an optional fraction: `-12.5`, `1700000000.123`.
fn parse_pax_time(value: &[u8]) -> Option<(i64, u32)> {
    let text = std::str::from_utf8(value).ok()?;
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    let negative = whole.starts_with('-');
    let digits = whole.strip_prefix('-').unwrap_or(whole);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = whole.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits: String = frac.chars().chain("000000000".chars()).take(9).collect();
    let nanos: u32 = digits.parse().ok()?;
    if negative && nanos > 0 {
        // -1.25 is 1.25 s before the epoch: second -2 plus 0.75 s.
        Some((secs.checked_sub(1)?, 1_000_000_000 - nanos))
    } else {
        Some((secs, nanos))
    }
}

/// Extension headers met before the member they describe.
#[derive(Default)]
struct Pending {
    pax: Option<Pax>,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.pax.is_none() && self.long_name.is_none() && self.long_link.is_none()
    }
}

/// Reads a tar stream entry by entry. Only headers and extension headers
/// are kept; entry data is read past (so a hashing reader underneath sees
/// every byte) without being stored.
pub struct TarReader<R> {
    inner: R,
    /// Stream offset of the next byte `inner` gives.
    pos: u64,
    /// Data and padding of the last entry, not read yet.
    to_skip: u64,
    /// The last entry's raw name, for an error in its data.
    last_path: Vec<u8>,
    done: bool,
    scratch: Vec<u8>,
    /// Skips entry data by seeking instead of reading, where the stream
    /// can: listing an archive's members then reads only its headers.
    seek_past: Option<fn(&mut R, u64) -> io::Result<()>>,
}

impl<R: Read> TarReader<R> {
    pub fn new(inner: R) -> TarReader<R> {
        TarReader {
            inner,
            pos: 0,
            to_skip: 0,
            last_path: Vec::new(),
            done: false,
            // As large as the indexer's read buffer, so skipped data bypasses it.
            scratch: vec![0u8; 256 * 1024],
            seek_past: None,
        }
    }

    /// The stream, positioned after the end-of-archive block (or wherever
    /// reading stopped).
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// The next file, directory, link or device, or `None` at the end of
    /// the archive.
    pub fn next_entry(&mut self) -> Result<Option<TarEntry>, TarError> {
        if self.done {
            return Ok(None);
        }
        let skip = std::mem::take(&mut self.to_skip);
        if let Err(e) = self.skip(skip) {
            return Err(TarError::entry(
                &self.last_path,
                format!("reading the entry's data: {e}"),
            ));
        }
        let mut pending = Pending::default();
        loop {
            let mut block = [0u8; 512];
            let got = self.read_full(&mut block).map_err(|e| {
                TarError::stream(format!("reading a tar header: {}", printable(&e)))
            })?;
            if got == 0 || block.iter().all(|&b| b == 0) {
                // No end-of-archive blocks at all is tolerated, as by GNU tar
                // and Go. After a zero block, Go reads one more: the end, or
                // a second zero block, ends the archive (whatever follows is
                // not ours); a header there is an error, and so is a torn
                // block. We read as Go does, not as the more lenient GNU tar.
                if got > 0 {
                    let mut next = [0u8; 512];
                    let more = self.read_full(&mut next).map_err(|e| {
                        TarError::stream(format!("reading a tar header: {}", printable(&e)))
                    })?;
                    if more > 0 && more < next.len() {
                        return Err(TarError::stream(format!(
                            "unexpected EOF: the archive ends inside the end-of-archive blocks, at offset {}",
                            self.pos
                        )));
                    }
                    if more > 0 && next.iter().any(|&b| b != 0) {
                        return Err(TarError::stream(format!(
                            "the zero block at offset {} is followed by a header (one zero \
                             block is not the end of an archive)",
                            self.pos - 1024
                        )));
                    }
                }
                if !pending.is_empty() {
                    return Err(TarError::stream(
                        "an extension header is not followed by a member before the end of the archive",
                    ));
                }
                self.done = true;
                return Ok(None);
            }
            if got < block.len() {
                return Err(TarError::stream(format!(
                    "unexpected EOF: the archive ends inside a header, at offset {}",
                    self.pos
                )));
            }
            let header = Header::parse(&block)
                .map_err(|reason| TarError::entry(until_nul(&block[..100]), reason))?;
            let raw_name = header.name();
            let fail = |reason: String| TarError::entry(&raw_name, reason);
            match header.type_byte() {
                b'x' => {
                    if pending.pax.is_some() {
                        return Err(fail("two PAX headers in a row for one member".into()));
                    }
                    let data = self.read_extension(&header).map_err(fail)?;
                    pending.pax = Some(parse_pax(&data).map_err(fail)?);
                }
                b'L' | b'K' => {
                    let is_name = header.type_byte() == b'L';
                    let slot = if is_name {
                        &pending.long_name
                    } else {
                        &pending.long_link
                    };
                    if slot.is_some() {
                        return Err(fail(format!(
                            "two GNU long {} headers for one member",
                            if is_name { "name" } else { "link" }
                        )));
                    }
                    let data = self.read_extension(&header).map_err(fail)?;
                    let value = until_nul(&data).to_vec();
                    if is_name {
                        pending.long_name = Some(value);
                    } else {
                        pending.long_link = Some(value);
                    }
                }
                b'g' | b'V' => {
                    if !pending.is_empty() {
                        return Err(fail(
                            "an extension header is followed by another header kind, not a member"
                                .into(),
                        ));
                    }
                    if header.type_byte() == b'g' {
                        // Global records describe no file; they are checked, then dropped.
                        let data = self.read_extension(&header).map_err(fail)?;
                        parse_pax(&data).map_err(fail)?;
                    } else {
                        let size = header.size().map_err(fail)?;
                        self.skip(padded(size))
                            .map_err(|e| fail(format!("reading a volume label: {e}")))?;
                    }
                }
                _ => {
                    let entry = self.member(&header, pending)?;
                    return Ok(Some(entry));
                }
            }
        }
    }

    /// Build the entry for a member header and the extensions before it.
    fn member(&mut self, header: &Header<'_>, pending: Pending) -> Result<TarEntry, TarError> {
        let pax = pending.pax.unwrap_or_default();
        if pax.path.is_some() && pending.long_name.is_some() {
            return Err(TarError::entry(
                &header.name(),
                "the member has both a PAX path and a GNU long name",
            ));
        }
        if pax.linkpath.is_some() && pending.long_link.is_some() {
            return Err(TarError::entry(
                &header.name(),
                "the member has both a PAX linkpath and a GNU long link",
            ));
        }
        let raw_path = pax
            .path
            .or(pending.long_name.filter(|n| !n.is_empty()))
            .unwrap_or_else(|| header.name());
        let fail = |reason: String| TarError::entry(&raw_path, reason);
        let type_byte = header.type_byte();
        let kind = match type_byte {
            b'\0' if raw_path.ends_with(b"/") => EntryKind::Dir,
            b'0' | b'\0' | b'7' => EntryKind::File,
            b'1' => EntryKind::Hardlink,
            b'2' => EntryKind::Symlink,
            b'3' => EntryKind::CharDevice,
            b'4' => EntryKind::BlockDevice,
            b'5' => EntryKind::Dir,
            b'6' => EntryKind::Fifo,
            b'S' => return Err(fail("GNU sparse files are not supported".into())),
            other => {
                return Err(fail(format!(
                    "unsupported tar entry type {:?}",
                    char::from(other).escape_default().to_string()
                )))
            }
        };
        // As in Go (and POSIX for most of them), only regular files have
        // data; the size field of the others is ignored.
        let size = match (kind, pax.size) {
            (EntryKind::File, Some(size)) => size,
            (EntryKind::File, None) => header.size().map_err(fail)?,
            _ => 0,
        };
        let data_offset = self.pos;
        self.to_skip = padded(size);
        self.last_path.clone_from(&raw_path);
        let (mtime, mtime_nsec) = match pax.mtime {
            Some(t) => t,
            None => (header.numeric(136..148, "mtime").map_err(fail)?, 0),
        };
        let uid = match pax.uid {
            Some(v) => v,
            None => header.id(108..116, "uid").map_err(fail)?,
        };
        let gid = match pax.gid {
            Some(v) => v,
            None => header.id(116..124, "gid").map_err(fail)?,
        };
        let mode = header.numeric(100..108, "mode").map_err(fail)?;
        if mode < 0 {
            return Err(fail(format!("negative mode {mode}")));
        }
        let path = normalize_path(&raw_path, DotDot::Reject).map_err(fail)?;
        if path.is_empty() && kind != EntryKind::Dir {
            return Err(fail(
                "an entry other than a directory names the root".into(),
            ));
        }
        let mut link = Vec::new();
        if matches!(kind, EntryKind::Symlink | EntryKind::Hardlink) {
            let raw = pax
                .linkpath
                .or(pending.long_link.filter(|l| !l.is_empty()))
                .unwrap_or_else(|| header.link_name().to_vec());
            if raw.contains(&0) {
                return Err(fail("the link target contains a NUL byte".into()));
            }
            if raw.is_empty() {
                return Err(fail("the link target is empty".into()));
            }
            if raw.len() > MAX_PATH_BYTES {
                return Err(fail(format!(
                    "the link target is {} bytes long (limit {MAX_PATH_BYTES})",
                    raw.len()
                )));
            }
            link = if kind == EntryKind::Hardlink {
                let target = normalize_path(&raw, DotDot::ClampAtRoot).map_err(fail)?;
                if target.is_empty() {
                    return Err(fail("the hardlink target is the root directory".into()));
                }
                target
            } else {
                raw
            };
        }
        let (dev_major, dev_minor) = match kind {
            EntryKind::CharDevice | EntryKind::BlockDevice => header.device().map_err(fail)?,
            _ => (0, 0),
        };
        if pax.xattrs.iter().any(|(k, _)| k.contains(&0)) {
            return Err(fail("an xattr name contains a NUL byte".into()));
        }
        let mut entry = TarEntry::with_link(&path, &link, kind);
        entry.mode = (mode & 0o7777) as u32;
        entry.uid = uid;
        entry.gid = gid;
        entry.mtime = mtime;
        entry.mtime_nsec = mtime_nsec;
        entry.size = size;
        entry.data_offset = data_offset;
        entry.set_extra(EntryExtra {
            dev_major,
            dev_minor,
            xattrs: pax.xattrs,
        });
        Ok(entry)
    }

    /// An extension header's data, refused above the limit before reading.
    fn read_extension(&mut self, header: &Header<'_>) -> Result<Vec<u8>, String> {
        let size = header.size()?;
        let kind = char::from(header.type_byte());
        if size > MAX_EXTENSION_BYTES {
            return Err(format!(
                "a '{kind}' extension header of {size} bytes is larger than the {MAX_EXTENSION_BYTES}-byte limit"
            ));
        }
        let mut data = vec![0u8; size as usize];
        let got = self
            .read_full(&mut data)
            .map_err(|e| format!("reading a '{kind}' extension header: {}", printable(&e)))?;
        if got < data.len() {
            return Err(format!(
                "unexpected EOF: the archive ends inside a '{kind}' extension header"
            ));
        }
        self.skip(padded(size) - size)
            .map_err(|e| format!("reading the padding of a '{kind}' extension header: {e}"))?;
        Ok(data)
    }

    /// Read until `buf` is full or the stream ends; returns the bytes read.
    fn read_full(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut got = 0;
        while got < buf.len() {
            match self.inner.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.pos += got as u64;
        Ok(got)
    }

    /// Read past `n` bytes; fewer is an "unexpected EOF" error.
    fn skip(&mut self, mut n: u64) -> Result<(), String> {
        if let Some(seek_past) = self.seek_past {
            seek_past(&mut self.inner, n).map_err(|e| printable(&e))?;
            self.pos += n;
            return Ok(());
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        let result = loop {
            if n == 0 {
                break Ok(());
            }
            let want = scratch.len().min(usize::try_from(n).unwrap_or(usize::MAX));
            match self.read_full(&mut scratch[..want]) {
                Ok(got) if got == want => n -= got as u64,
                Ok(got) => {
                    break Err(format!(
                        "unexpected EOF: the archive ends {} bytes short",
                        n - got as u64
                    ))
                }
                Err(e) => break Err(printable(&e)),
            }
        };
        self.scratch = scratch;
        result
    }
}

impl<R: Read + io::Seek> TarReader<R> {
    /// A reader that seeks past entry data rather than reading it, for
    /// listing the members of an archive file. (Seeking past the end is
    /// not an error; the next header read is, and callers check each
    /// member's range against the file's length.)
    pub fn seeking(inner: R) -> TarReader<R> {
        let mut reader = TarReader::new(inner);
        reader.scratch = Vec::new();
        reader.seek_past = Some(|inner, n| {
            let n = i64::try_from(n).map_err(io::Error::other)?;
            inner.seek(io::SeekFrom::Current(n)).map(|_| ())
        });
        reader
    }
}

/// A size rounded up to whole blocks (sizes are below 2^63, so this cannot
/// overflow).
fn padded(size: u64) -> u64 {
    size.div_ceil(BLOCK) * BLOCK
}

/// Keep an I/O error (from a decoder, say) one short printable line.
fn printable(e: &io::Error) -> String {
    let message = e.to_string();
    let mut out: String = message
        .chars()
        .flat_map(|c| {
            let escaped = c.is_control().then(|| c.escape_debug());
            escaped
                .into_iter()
                .flatten()
                .chain((!c.is_control()).then_some(c))
        })
        .take(200)
        .collect();
    if message.chars().count() > 200 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised() {
        let n = |p: &[u8]| normalize_path(p, DotDot::Reject);
        assert_eq!(n(b"./etc/passwd").unwrap(), b"etc/passwd");
        assert_eq!(n(b"/usr//bin/./sh").unwrap(), b"usr/bin/sh");
        assert_eq!(n(b"etc/").unwrap(), b"etc");
        assert_eq!(n(b"./").unwrap(), b"");
        assert_eq!(n(b"a/../../etc").unwrap_err(), "the path contains '..'");
        assert_eq!(n(b"a\0b").unwrap_err(), "the name contains a NUL byte");
        let deep = b"abc/".repeat(1100);
        assert_eq!(
            n(&deep).unwrap_err(),
            "the path is 4399 bytes long (limit 4095)"
        );
    }

    #[test]
    fn hardlink_targets_clamp_dotdot_at_the_root() {
        let n = |p: &[u8]| normalize_path(p, DotDot::ClampAtRoot).unwrap();
        assert_eq!(n(b"../../../../etc/passwd"), b"etc/passwd");
        assert_eq!(n(b"/a/b/../c"), b"a/c");
    }

    #[test]
    fn pax_times_keep_their_fraction() {
        assert_eq!(parse_pax_time(b"1700000000"), Some((1700000000, 0)));
        assert_eq!(
            parse_pax_time(b"1700000000.5"),
            Some((1700000000, 500_000_000))
        );
        assert_eq!(parse_pax_time(b"1.123456789123"), Some((1, 123_456_789)));
        assert_eq!(parse_pax_time(b"-1.25"), Some((-2, 750_000_000)));
        assert_eq!(parse_pax_time(b"12x"), None);
        assert_eq!(parse_pax_time(b"+12"), None);
        assert_eq!(parse_pax_time(b"-"), None);
        assert_eq!(parse_pax_time(b"99999999999999999999"), None);
    }

    #[test]
    fn numeric_fields_read_as_go_reads_them() {
        assert_eq!(parse_numeric(b"0000644\0"), Some(0o644));
        assert_eq!(parse_numeric(b"  644 \0"), Some(0o644));
        assert_eq!(parse_numeric(b"\0\0\0\0\0\0\x0016\0"), Some(0o16));
        assert_eq!(parse_numeric(b"\0\0\0\0\0\0\0\0"), Some(0));
        assert_eq!(parse_numeric(b"12 34\0"), None);
        assert_eq!(parse_numeric(b"9\0"), None);
        // Base-256: 2^33 and -1.
        assert_eq!(
            parse_numeric(&[0x80, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0]),
            Some(1 << 33)
        );
        assert_eq!(parse_numeric(&[0xff; 12]), Some(-1));
        // Does not fit in 63 bits.
        assert_eq!(
            parse_numeric(&[0x80, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0]),
            None
        );
    }

    #[test]
    fn pax_records_are_parsed_strictly() {
        let p = parse_pax(b"16 path=a/b/c.d\n13 size=2048\n10 uid=10\n").unwrap();
        assert_eq!(p.path.as_deref(), Some(&b"a/b/c.d"[..]));
        assert_eq!((p.size, p.uid), (Some(2048), Some(10)));
        // The last of two records wins; an empty value changes nothing.
        let p = parse_pax(b"10 size=3\n10 size=4\n8 size=\n").unwrap();
        assert_eq!(p.size, Some(4));
        for bad in [
            &b"13 path=name"[..],
            b"4 x=",
            b"9 path=a\n\n",
            b"99 path=a\n",
            b"x path=a\n",
            b"7 =abc\n",
            b"8 abcde\n",
            b"14 size=-1234\n",
            b"10 uid=-1\n",
            b"22 uid=99999999999999\n",
            b"12 path=a\0b\n",
            b"26 GNU.sparse.map=0,1,2,3\n",
        ] {
            assert!(
                parse_pax(bad).is_err(),
                "accepted {:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
