//! Reading a tar stream entry by entry: headers, the PAX and GNU extension
//! headers before them (long names, long links), bounded, with entry data
//! streamed past.

use std::io::{self, Read};

use super::header::{until_nul, Header};
use super::path::{normalize_path, DotDot};
use super::pax::{parse_pax, Pax};
use super::{TarError, BLOCK};
use crate::limits::{MAX_EXTENSION_BYTES, MAX_PATH_BYTES};
use crate::tar::entry::{EntryExtra, EntryKind, TarEntry};

/// Extension headers met before the member they describe.
#[derive(Default)]
pub(super) struct Pending {
    pax: Option<Pax>,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
}

impl Pending {
    pub(super) fn is_empty(&self) -> bool {
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
    pub(super) fn member(
        &mut self,
        header: &Header<'_>,
        pending: Pending,
    ) -> Result<TarEntry, TarError> {
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
    pub(super) fn read_extension(&mut self, header: &Header<'_>) -> Result<Vec<u8>, String> {
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
    pub(super) fn read_full(&mut self, buf: &mut [u8]) -> io::Result<usize> {
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
    pub(super) fn skip(&mut self, mut n: u64) -> Result<(), String> {
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
pub(super) fn padded(size: u64) -> u64 {
    size.div_ceil(BLOCK) * BLOCK
}

/// Keep an I/O error (from a decoder, say) one short printable line.
pub(super) fn printable(e: &io::Error) -> String {
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
