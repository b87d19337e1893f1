//! Reading `/proc/self/mountinfo`: is a directory a mount point, and of
//! which device. A dead FUSE mount (whose stat fails) is seen there too.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub fn absolute(dir: &Path) -> PathBuf {
    fs::canonicalize(dir)
        .unwrap_or_else(|_| std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf()))
}

/// Is `dir` a mount point? Read from mountinfo so a dead FUSE mount is
/// seen too (stat on it fails).
pub fn is_mounted(dir: &Path) -> bool {
    mount_device(dir).is_some()
}

/// The `major:minor` of the mount at `dir`, from /proc/self/mountinfo.
pub fn mount_device(dir: &Path) -> Option<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = dir.as_os_str().as_bytes();
    info.lines().rev().find_map(|line| {
        let mut fields = line.split(' ');
        let dev = fields.nth(2)?;
        let mount_point = fields.nth(1)?;
        (unescape_mountinfo(mount_point) == want).then(|| dev.to_string())
    })
}

fn unescape_mountinfo(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}
