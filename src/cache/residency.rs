//! Which spans a layer's data cache holds, shared by every process through
//! mapped files in the layer's cache directory:
//!
//! ```text
//! spans    one byte per span: 1 while the span's bytes are in `data`
//! epoch    8 bytes: odd while an eviction from this layer is under way
//! evicting flock(2)ed by the eviction under way
//! atimes   4 bytes per span: when it was last read (seconds since 2020)
//! ```
//!
//! A presence flag is a hint, the span's CRC is the truth: a process
//! checks a span once and then reads it straight from `data`, but only
//! while the layer's epoch is the one it checked under (its "mark", taken
//! before it reads or writes the span). An eviction (one at a time per
//! layer, under a lock) makes the epoch odd, clears the flags, punches the
//! bytes out and makes the epoch even again; a check made while it is odd
//! is never trusted. A reader that raced with an eviction sees another
//! epoch after its read and reads the span again the checked way; a
//! writer that refilled the span meanwhile holds a mark from before the
//! eviction ended, so its check is stale too. Nobody is served the
//! punched zeros.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use memmap2::MmapMut;

use crate::cache::paths;
use crate::error::{Error, IoContext, Result};
use crate::layer::spans::Span;

/// 2020-01-01, so that last-use times fit in 32 bits for a century.
const ATIME_BASE: u64 = 1_577_836_800;

pub struct Residency {
    present: MmapMut,
    /// `None` when the file could not be made (a full disk): this process
    /// then cannot see evictions, so it trusts no check and reads every
    /// span the checked way.
    epoch: Option<MmapMut>,
    /// flock(2)ed by an eviction, so that one runs at a time.
    evict_lock: Option<File>,
    atimes: MmapMut,
}

impl Residency {
    /// Map the layer's files; `spans` (written with the index) must have
    /// one byte per span; `epoch` and `atimes` are made when missing.
    pub fn open(dir: &Path, span_count: usize) -> Result<Residency> {
        let present = map(&dir.join(paths::SPANS))?;
        if present.len() != span_count {
            return Err(Error::Cache {
                path: dir.to_path_buf(),
                reason: "data or spans file has the wrong size".to_string(),
            });
        }
        let epoch = map_sized(dir, paths::EPOCH, 8).ok();
        let atimes_len = 4 * span_count.max(1);
        // Last-use times only order evictions: a private map will do.
        let atimes = match map_sized(dir, paths::ATIMES, atimes_len) {
            Ok(map) => map,
            Err(_) => MmapMut::map_anon(atimes_len).at(dir.join(paths::ATIMES))?,
        };
        let evict_lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(paths::EVICTING))
            .ok();
        let residency = Residency {
            present,
            epoch,
            evict_lock,
            atimes,
        };
        residency.repair_epoch_if_idle();
        Ok(residency)
    }

    /// An eviction killed between its two bumps leaves the epoch odd for
    /// good: every check then goes untrusted, and the next eviction would
    /// run with the parity reversed (even while it punches), so a check
    /// made during it would be trusted. Under the eviction lock, an odd
    /// epoch can only be a dead evictor's: make it even again.
    fn repair_dead_eviction(&self, epoch: &AtomicU64) {
        if epoch.load(Ordering::SeqCst) % 2 == 1 {
            tracing::warn!("an eviction of this layer was killed midway; its epoch is repaired");
            epoch.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// [`Residency::repair_dead_eviction`] at open, when no eviction runs.
    fn repair_epoch_if_idle(&self) {
        let (Some(epoch), Some(lock)) = (self.epoch_cell(), &self.evict_lock) else {
            return;
        };
        if epoch.load(Ordering::SeqCst) % 2 == 0 {
            return;
        }
        let flag = libc::LOCK_EX | libc::LOCK_NB;
        if crate::sys::lock::flock(lock, flag, Path::new(paths::EVICTING)).is_ok() {
            self.repair_dead_eviction(epoch);
            let _ = crate::sys::lock::flock(lock, libc::LOCK_UN, Path::new(paths::EVICTING));
        }
    }

    fn flag(&self, i: usize) -> &AtomicU8 {
        // SAFETY: `i` < span count (checked at open); AtomicU8 has u8's
        // layout; other processes only ever store 0 or 1.
        unsafe { &*(self.present.as_ptr().add(i) as *const AtomicU8) }
    }

    fn epoch_cell(&self) -> Option<&AtomicU64> {
        // SAFETY: an 8-byte, page-aligned mapping.
        self.epoch
            .as_ref()
            .map(|map| unsafe { &*(map.as_ptr() as *const AtomicU64) })
    }

    fn atime_cell(&self, i: usize) -> &AtomicU32 {
        // SAFETY: 4 bytes a span, page-aligned mapping, `i` < span count.
        unsafe { &*(self.atimes.as_ptr().add(4 * i) as *const AtomicU32) }
    }

    pub fn is_present(&self, i: usize) -> bool {
        self.flag(i).load(Ordering::Acquire) == 1
    }

    pub fn mark_present(&self, i: usize) {
        self.flag(i).store(1, Ordering::Release);
    }

    /// The layer's eviction epoch, or `None` when this process cannot see
    /// it (and so must trust no earlier check). Odd while an eviction is
    /// under way: a check made then is not to be trusted later.
    pub fn epoch(&self) -> Option<u64> {
        self.epoch_cell().map(|e| e.load(Ordering::SeqCst))
    }

    /// Note that span `i` was read now.
    pub fn touch(&self, i: usize) {
        let now = now_tick();
        let cell = self.atime_cell(i);
        if cell.load(Ordering::Relaxed) != now {
            cell.store(now, Ordering::Relaxed);
        }
    }

    pub fn last_used(&self, i: usize) -> u32 {
        self.atime_cell(i).load(Ordering::Relaxed)
    }

    /// Take `spans` out of `data`: flags cleared, epoch bumped, then the
    /// whole pages inside each span punched out (a page shared with a
    /// neighbour stays). Returns the bytes punched.
    pub fn evict(&self, data: &File, spans: &[(usize, &Span)]) -> u64 {
        // Other readers would not see an eviction without the epoch: none.
        let (Some(epoch), Some(lock)) = (self.epoch_cell(), &self.evict_lock) else {
            return 0;
        };
        // One eviction of this layer at a time, across processes, so the
        // epoch is odd exactly while one is under way.
        if crate::sys::lock::flock(lock, libc::LOCK_EX, Path::new(paths::EVICTING)).is_err() {
            return 0;
        }
        self.repair_dead_eviction(epoch);
        epoch.fetch_add(1, Ordering::SeqCst);
        for (i, _) in spans {
            self.flag(*i).store(0, Ordering::SeqCst);
        }
        let page = 4096u64;
        let mut punched = 0;
        for (_, span) in spans {
            let start = span.out_offset.div_ceil(page) * page;
            let end = (span.out_offset + span.out_len) / page * page;
            if end <= start {
                continue;
            }
            // SAFETY: fallocate on an fd we own, within the file.
            let r = unsafe {
                libc::fallocate64(
                    data.as_raw_fd(),
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    start as libc::off64_t,
                    (end - start) as libc::off64_t,
                )
            };
            if r == 0 {
                punched += end - start;
            }
        }
        epoch.fetch_add(1, Ordering::SeqCst);
        let _ = crate::sys::lock::flock(lock, libc::LOCK_UN, Path::new(paths::EVICTING));
        punched
    }
}

fn now_tick() -> u32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    secs.saturating_sub(ATIME_BASE).min(u64::from(u32::MAX)) as u32
}

fn map(path: &Path) -> Result<MmapMut> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .at(path)?;
    // SAFETY: these files are never truncated (see `map_sized`); their
    // bytes are only touched through atomics.
    unsafe { MmapMut::map_mut(&file) }.at(path)
}

fn map_sized(dir: &Path, name: &str, len: usize) -> Result<MmapMut> {
    let path = dir.join(name);
    // Made in place, never replaced: every process must map the same
    // file. Only ever grown (several processes may do it at once, to the
    // same size), never truncated.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .at(&path)?;
    if file.metadata().at(&path)?.len() < len as u64 {
        file.set_len(len as u64).at(&path)?;
    }
    // Blocks reserved now: a store into a hole of a mapped file on a full
    // disk would be SIGBUS, not an error.
    // SAFETY: fallocate on an fd we own, within its length.
    if unsafe { libc::fallocate64(file.as_raw_fd(), 0, 0, len as libc::off64_t) } != 0 {
        return Err(Error::io(&path, std::io::Error::last_os_error()));
    }
    // SAFETY: see `map`.
    unsafe { MmapMut::map_mut(&file) }.at(&path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer_dir(spans: usize) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(paths::SPANS), vec![1u8; spans]).unwrap();
        dir
    }

    /// What `kill -9` between an eviction's two bumps leaves: the epoch
    /// odd, and the eviction lock free (the kernel dropped the flock).
    fn kill_an_eviction_midway(dir: &Path) {
        let epoch_path = dir.join(paths::EPOCH);
        let now = u64::from_le_bytes(std::fs::read(&epoch_path).unwrap()[..8].try_into().unwrap());
        assert_eq!(now % 2, 0);
        std::fs::write(&epoch_path, (now + 1).to_le_bytes()).unwrap();
    }

    #[test]
    fn an_eviction_killed_midway_is_repaired_by_the_next_one() {
        let dir = layer_dir(4);
        let data = tempfile::tempfile().unwrap();
        let residency = Residency::open(dir.path(), 4).unwrap();
        kill_an_eviction_midway(dir.path());
        assert_eq!(residency.epoch().map(|e| e % 2), Some(1));
        residency.evict(&data, &[]);
        // Even again, and the eviction ran with the right parity.
        assert_eq!(residency.epoch(), Some(4));
    }

    #[test]
    fn an_eviction_killed_midway_is_repaired_at_the_next_open() {
        let dir = layer_dir(4);
        drop(Residency::open(dir.path(), 4).unwrap());
        kill_an_eviction_midway(dir.path());
        let residency = Residency::open(dir.path(), 4).unwrap();
        assert_eq!(residency.epoch(), Some(2));
    }

    #[test]
    fn an_odd_epoch_is_left_alone_while_an_eviction_holds_the_lock() {
        let dir = layer_dir(4);
        let first = Residency::open(dir.path(), 4).unwrap();
        let lock = first.evict_lock.as_ref().unwrap();
        crate::sys::lock::flock(lock, libc::LOCK_EX, Path::new("evicting")).unwrap();
        first.epoch_cell().unwrap().fetch_add(1, Ordering::SeqCst);
        // Another process opens the layer mid-eviction: not repaired.
        let second = Residency::open(dir.path(), 4).unwrap();
        assert_eq!(second.epoch(), Some(1));
    }
}
