//! The registry of live mounts: one JSON record per mount point under
//! `CACHE/mounts/`, written by the daemon and pruned when stale.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::cache::{paths, Cache};
use crate::error::Result;
use crate::sys::atomic;
use crate::sys::mountinfo::is_mounted;

/// What the registry keeps about a live mount.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MountRecord {
    pub pid: u32,
    pub dir: PathBuf,
    pub image: String,
    pub manifest: String,
    pub log: Option<PathBuf>,
    /// The layer digests it serves.
    #[serde(default)]
    pub layers: Vec<String>,
}

/// Live mounts from this cache's registry; stale records are removed.
pub fn list_mounts(cache: &Cache) -> Vec<MountRecord> {
    let dir = paths::mounts(cache.root());
    let mut out = Vec::new();
    for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
        let path = entry.path();
        // Only records: a temp file is another writer's, swept when it dies.
        if path.extension().is_none_or(|e| e != "json")
            || atomic::is_temp(&entry.file_name().to_string_lossy())
        {
            continue;
        }
        match read_record(&path) {
            Some(rec) if process_alive(rec.pid) && is_mounted(&rec.dir) => out.push(rec),
            _ => {
                let _ = fs::remove_file(&path);
            }
        }
    }
    out.sort_by(|a, b| a.dir.cmp(&b.dir));
    out
}

pub fn registry_path(cache: &Cache, dir: &Path) -> PathBuf {
    paths::mounts(cache.root()).join(format!("{}.json", path_key(dir)))
}

pub fn write_record(path: &Path, record: &MountRecord) -> Result<()> {
    let json = serde_json::to_vec_pretty(record).unwrap_or_default();
    atomic::write_file(path, &json, false)
}

pub fn read_record(path: &Path) -> Option<MountRecord> {
    serde_json::from_slice(&fs::read(path).ok()?).ok()
}

/// A file-name-safe key for a mount point.
pub fn path_key(dir: &Path) -> String {
    crate::digest::Digest::of(dir.as_os_str().as_bytes()).short()
}

pub fn process_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

/// Wait up to `timeout` for process `pid` to end; whether it did.
pub fn wait_for_exit(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !process_alive(pid) || is_zombie(pid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn is_zombie(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_mounts_leaves_a_writers_temp_file_alone() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::locate(Some(dir.path())).unwrap();
        let mounts = paths::mounts(cache.root());
        fs::create_dir_all(&mounts).unwrap();
        // Half written by a live writer (this process): not a record.
        let writing = atomic::temp_path(&mounts.join("abc.json"));
        fs::write(&writing, b"{\"dir\":").unwrap();
        // A record whose daemon is gone: stale, removed.
        let stale = mounts.join("def.json");
        fs::write(&stale, b"not json").unwrap();
        assert!(list_mounts(&cache).is_empty());
        assert!(
            writing.exists(),
            "listing removed a live writer's temp file"
        );
        assert!(!stale.exists(), "a stale record outlived the listing");
    }
}
