//! Tar entry names made safe to use: normalised, and `..` refused or
//! clamped as asked.

use crate::limits::{MAX_NAME_BYTES, MAX_PATH_BYTES};

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
