//! Which files processes hold open, from `/proc/PID/fd`: a mount's log is
//! still being written while its daemon, or the parent starting it, holds
//! it, whatever its age.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;

/// The device and inode of every file that a process this user may look
/// at holds open; `None` when `/proc` cannot be read, where the caller
/// must assume any file may be open. Processes that end or close files
/// while they are looked at are passed over.
pub fn open_inodes() -> Option<HashSet<(u64, u64)>> {
    let mut open = HashSet::new();
    for process in fs::read_dir("/proc").ok()?.flatten() {
        let name = process.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(fds) = fs::read_dir(process.path().join("fd")) else {
            continue; // another user's, or gone
        };
        for fd in fds.flatten() {
            // stat follows the fd's link to the open file, deleted or not.
            if let Ok(meta) = fs::metadata(fd.path()) {
                open.insert((meta.dev(), meta.ino()));
            }
        }
    }
    Some(open)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_seen_while_held_open_and_not_after() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let file = fs::File::create(&path).unwrap();
        let meta = fs::metadata(&path).unwrap();
        let id = (meta.dev(), meta.ino());
        assert!(open_inodes().unwrap().contains(&id));
        drop(file);
        assert!(!open_inodes().unwrap().contains(&id));
    }
}
