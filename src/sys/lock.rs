//! flock(2) claims on cache files: a reader's shared claim on a layer, the
//! exclusive claims of builders, evictions and `cache rm`.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::error::{Error, IoContext, Result};

/// A shared flock(2) on `path` (created if need be), held until the file
/// is dropped: a reader's claim on a layer, which `cache rm` respects.
pub fn share_lock(path: &Path) -> Result<File> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .at(path)?;
    flock(&f, libc::LOCK_SH, path)?;
    Ok(f)
}

/// An exclusive flock(2) on `path`, or `None` when someone holds it.
pub fn try_exclusive_lock(path: &Path) -> Result<Option<File>> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .at(path)?;
    match flock(&f, libc::LOCK_EX | libc::LOCK_NB, path) {
        Ok(()) => Ok(Some(f)),
        Err(Error::Io { source, .. }) if source.raw_os_error() == Some(libc::EWOULDBLOCK) => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

pub fn flock(f: &File, op: libc::c_int, path: &Path) -> Result<()> {
    loop {
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(Error::io(path, err));
        }
    }
}

/// An exclusive flock(2), released on drop (or when the process dies).
pub struct DirLock(File);

impl DirLock {
    pub fn acquire(path: &Path) -> Result<DirLock> {
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .at(path)?;
        flock(&f, libc::LOCK_EX, path)?;
        Ok(DirLock(f))
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}
