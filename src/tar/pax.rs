//! PAX extended headers, parsed strictly: the records that matter to a
//! layer, and their fractional timestamps.

use crate::limits::{MAX_NAME_BYTES, MAX_XATTR_VALUE_BYTES};

/// The records of one PAX header that matter to us; a record with an empty
/// value leaves the header's field as it is (POSIX, and Go).
#[derive(Default)]
pub(super) struct Pax {
    pub(super) path: Option<Vec<u8>>,
    pub(super) linkpath: Option<Vec<u8>>,
    pub(super) size: Option<u64>,
    pub(super) uid: Option<u32>,
    pub(super) gid: Option<u32>,
    pub(super) mtime: Option<(i64, u32)>,
    pub(super) xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Parse PAX records (`LEN KEY=VALUE\n`, LEN counting the whole record)
/// strictly: anything malformed is an error, as in Go.
pub(super) fn parse_pax(mut data: &[u8]) -> Result<Pax, String> {
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
pub(super) fn parse_pax_time(value: &[u8]) -> Option<(i64, u32)> {
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
