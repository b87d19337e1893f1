//! Turning `tar` crate entries into `TarEntry`s: PAX overrides, path
//! normalisation and the entry types we refuse.

use std::io::Read;

use crate::layer::entry::{EntryKind, TarEntry};

/// What to do with one raw tar entry.
pub enum Parsed {
    Entry(TarEntry),
    /// PAX global headers and volume labels carry no file.
    Skip,
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
                // NAME_MAX; a whiteout may carry the 4-byte `.wh.` on top.
                let limit = if part.starts_with(b".wh.") { 259 } else { 255 };
                if part.len() > limit {
                    return Err(format!("a name is {} bytes long (limit 255)", part.len()));
                }
                parts.push(part);
            }
        }
    }
    Ok(parts.join(&b'/'))
}

/// Read one entry's metadata. The data is not read.
pub fn parse_entry<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Parsed, String> {
    let mut pax_mtime = None;
    let mut xattrs = Vec::new();
    if let Some(pax) = entry
        .pax_extensions()
        .map_err(|e| format!("bad PAX header: {e}"))?
    {
        for ext in pax {
            let ext = ext.map_err(|e| format!("bad PAX record: {e}"))?;
            let key = ext.key_bytes();
            if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                if name.is_empty() || name.contains(&0) {
                    return Err("an xattr name is empty or contains a NUL byte".to_string());
                }
                xattrs.push((name.to_vec(), ext.value_bytes().to_vec()));
            } else if key == b"mtime" {
                pax_mtime = Some(
                    parse_pax_time(ext.value_bytes())
                        .ok_or_else(|| "bad PAX mtime record".to_string())?,
                );
            } else if key.starts_with(b"GNU.sparse.") {
                return Err("PAX sparse files are not supported".to_string());
            }
        }
    }
    let header = entry.header();
    let type_byte = header.entry_type().as_byte();
    let kind = match type_byte {
        b'0' | b'\0' | b'7' => EntryKind::File,
        b'1' => EntryKind::Hardlink,
        b'2' => EntryKind::Symlink,
        b'3' => EntryKind::CharDevice,
        b'4' => EntryKind::BlockDevice,
        b'5' => EntryKind::Dir,
        b'6' => EntryKind::Fifo,
        b'g' | b'V' => return Ok(Parsed::Skip),
        b'S' => return Err("GNU sparse files are not supported".to_string()),
        other => {
            return Err(format!(
                "unsupported tar entry type {:?}",
                char::from(other).escape_default().to_string()
            ))
        }
    };
    let (mtime, mtime_nsec) = match pax_mtime {
        Some(t) => t,
        None if blank(&header.as_old().mtime) => (0, 0),
        None => (
            header.mtime().map_err(|e| format!("bad mtime: {e}"))? as i64,
            0,
        ),
    };
    let path = normalize_path(&entry.path_bytes(), DotDot::Reject)?;
    let mut link = Vec::new();
    match kind {
        EntryKind::Symlink | EntryKind::Hardlink => {
            let raw = entry
                .link_name_bytes()
                .ok_or_else(|| "a link entry has no target".to_string())?;
            if raw.contains(&0) {
                return Err("the link target contains a NUL byte".to_string());
            }
            if raw.is_empty() {
                return Err("the link target is empty".to_string());
            }
            link = if kind == EntryKind::Hardlink {
                normalize_path(&raw, DotDot::ClampAtRoot)?
            } else {
                raw.into_owned()
            };
        }
        _ => {}
    }
    if path.is_empty() && kind != EntryKind::Dir {
        return Err("an entry other than a directory names the root".to_string());
    }
    let (dev_major, dev_minor) = match kind {
        EntryKind::CharDevice | EntryKind::BlockDevice => (
            header
                .device_major()
                .map_err(|e| format!("bad device major: {e}"))?
                .unwrap_or(0),
            header
                .device_minor()
                .map_err(|e| format!("bad device minor: {e}"))?
                .unwrap_or(0),
        ),
        _ => (0, 0),
    };
    let old = header.as_old();
    let id = |field: &[u8], v: std::io::Result<u64>, what: &str| -> Result<u32, String> {
        if blank(field) {
            return Ok(0);
        }
        let v = v.map_err(|e| format!("bad {what}: {e}"))?;
        u32::try_from(v).map_err(|_| format!("{what} {v} does not fit in 32 bits"))
    };
    let mode = if blank(&old.mode) {
        0
    } else {
        header.mode().map_err(|e| format!("bad mode: {e}"))?
    };
    Ok(Parsed::Entry(TarEntry {
        path,
        kind,
        mode: mode & 0o7777,
        uid: id(&old.uid, header.uid(), "uid")?,
        gid: id(&old.gid, header.gid(), "gid")?,
        mtime,
        mtime_nsec,
        size: if kind == EntryKind::File {
            entry.size()
        } else {
            0
        },
        data_offset: entry.raw_file_position(),
        link,
        dev_major,
        dev_minor,
        xattrs,
    }))
}

/// A numeric header field of only NULs and spaces reads as 0, as GNU tar
/// and Go read it (PAX records may still override it).
fn blank(field: &[u8]) -> bool {
    field.iter().all(|&b| b == 0 || b == b' ')
}

/// PAX times are decimal seconds with an optional fraction: `-12.5`, `1700000000.123`.
fn parse_pax_time(value: &[u8]) -> Option<(i64, u32)> {
    let text = std::str::from_utf8(value).ok()?;
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    let negative = whole.starts_with('-');
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
    }
}
