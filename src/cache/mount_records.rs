//! The registry of live mounts: one JSON record per mount point under
//! `CACHE/mounts/`, written by the daemon and pruned when stale.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::cache::Cache;
use crate::error::{IoContext, Result};
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
    let dir = cache.root().join("mounts");
    let mut out = Vec::new();
    for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
        let path = entry.path();
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
    cache
        .root()
        .join("mounts")
        .join(format!("{}.json", path_key(dir)))
}

pub fn write_record(path: &Path, record: &MountRecord) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).at(parent)?;
    }
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    fs::write(&tmp, serde_json::to_vec_pretty(record).unwrap_or_default()).at(&tmp)?;
    fs::rename(&tmp, path).at(path)
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

pub fn wait_for_exit(pid: u32, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while process_alive(pid) && !is_zombie(pid) && Instant::now() < deadline {
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
