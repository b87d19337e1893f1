//! `ocimount umount DIR`: unmount, wait for the daemon to go, forget it.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;

use crate::cache::mount_records::{read_record, registry_path, wait_for_exit};
use crate::cache::Cache;
use crate::error::{Error, IoContext, Result};
use crate::sys::mountinfo::{absolute, is_mounted};

pub const DAEMON_EXIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What `umount` saw of the daemon after the unmount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DaemonExit {
    /// It had exited (its layers let go) when `umount` returned.
    Exited,
    /// No record of a daemon for this mount (mounted by another cache).
    Unknown,
    /// Still running when the bounded wait ran out: this pid.
    StillRunning(u32),
}

/// `ocimount umount DIR`: unmount, then wait (bounded) for the daemon to
/// exit, so a script may prune or remove the cache right after. A busy
/// mount is an error unless `lazy`.
pub fn umount(dir: &Path, cache: &Cache, lazy: bool) -> Result<DaemonExit> {
    let dir = absolute(dir);
    if !is_mounted(&dir) {
        return Err(Error::BadPath {
            path: dir.display().to_string(),
            reason: "not a mount point".into(),
        });
    }
    let record = read_record(&registry_path(cache, &dir));
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(|_| Error::BadPath {
        path: dir.display().to_string(),
        reason: "contains a NUL byte".into(),
    })?;
    let flags = if lazy { libc::MNT_DETACH } else { 0 };
    // SAFETY: a valid C string.
    if unsafe { libc::umount2(path.as_ptr(), flags) } != 0 {
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EBUSY) => {
                return Err(Error::BadPath {
                    path: dir.display().to_string(),
                    reason: "busy: a process still uses the mount (see `fuser -vm DIR`); nothing was unmounted. Use --lazy to detach it anyway".into(),
                })
            }
            Some(libc::EPERM) => {
                let status = Command::new("fusermount3").arg("-u").arg(&dir).status().at("fusermount3")?;
                if !status.success() {
                    return Err(Error::BadPath { path: dir.display().to_string(), reason: "fusermount3 -u failed".into() });
                }
            }
            _ => return Err(Error::io(&dir, err)),
        }
    }
    let exit = match record {
        Some(rec) if !wait_for_exit(rec.pid, DAEMON_EXIT_TIMEOUT) => {
            DaemonExit::StillRunning(rec.pid)
        }
        Some(_) => DaemonExit::Exited,
        None => DaemonExit::Unknown,
    };
    let _ = fs::remove_file(registry_path(cache, &dir));
    Ok(exit)
}

pub(super) fn lazy_unmount(dir: &Path) {
    if let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) {
        // SAFETY: a valid C string.
        unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
    }
}
