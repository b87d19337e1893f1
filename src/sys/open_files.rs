//! Which files under a directory processes hold open, from `/proc/PID/fd`:
//! a mount's log is still being written while its daemon, or the parent
//! starting it, holds it, whatever its age.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The files under a directory that processes hold open.
#[derive(Debug, Default)]
pub struct OpenUnder {
    /// Their paths, as the kernel names them (absolute, symlinks resolved).
    pub paths: HashSet<PathBuf>,
    /// Whether every process's open files could be read. Not when some are
    /// another user's (without root), hidden (`hidepid`), or otherwise
    /// refused: a file missing from `paths` may then be open all the same.
    pub complete: bool,
}

/// What processes hold open under `dir` (canonicalised here); `None` when
/// `dir` or `/proc` cannot be read. Each fd's link is read, never followed,
/// so a file on a hung FUSE or NFS mount cannot stall the scan. Processes
/// that end or close files while they are looked at are passed over.
pub fn open_under(dir: &Path) -> Option<OpenUnder> {
    let dir = fs::canonicalize(dir).ok()?;
    let mut open = OpenUnder {
        paths: HashSet::new(),
        complete: true,
    };
    for process in fs::read_dir("/proc").ok()?.flatten() {
        let name = process.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let fds = match fs::read_dir(process.path().join("fd")) {
            Ok(fds) => fds,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // gone
            Err(_) => {
                open.complete = false;
                continue;
            }
        };
        for fd in fds.flatten() {
            if let Ok(target) = fs::read_link(fd.path()) {
                if target.starts_with(&dir) {
                    open.paths.insert(target);
                }
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
        let path = fs::canonicalize(dir.path()).unwrap().join("log");
        let file = fs::File::create(&path).unwrap();
        let open = open_under(dir.path()).unwrap();
        assert!(open.paths.contains(&path), "{open:?}");
        assert!(open
            .paths
            .iter()
            .all(|p| p.starts_with(path.parent().unwrap())));
        drop(file);
        // Another test thread's fork may hold a copy of the fd until its
        // exec: wait for that to pass, boundedly.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while open_under(dir.path()).unwrap().paths.contains(&path) {
            assert!(std::time::Instant::now() < deadline, "still open");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}
