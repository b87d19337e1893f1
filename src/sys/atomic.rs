//! Files written whole or not at all. A writer writes `.NAME.tmp.PID.NANOS`
//! beside the final name, created new (never a file someone else is
//! writing, even a process of the same pid in another pid namespace), and
//! renames it into place; a reader sees the old file or the new one. A
//! writer killed between its write and its rename leaves its temp file
//! behind, which [`sweep`] takes back. Every atomic write in ocimount goes
//! through here, so there is one naming scheme and one sweep.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{IoContext, Result};

/// The marker every temp name holds: `.NAME` + `TEMP_MARK` + `PID.NANOS`.
const TEMP_MARK: &str = ".tmp.";

/// A new temp name for `path`, in its directory.
pub fn temp_path(path: &Path) -> PathBuf {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    dir.join(format!(".{name}{TEMP_MARK}{}.{nanos}", std::process::id()))
}

/// A file being written for `path`: created new at a temp name, removed
/// if dropped before [`PendingFile::commit`] renames it into place.
pub struct PendingFile {
    file: File,
    temp: PathBuf,
    path: PathBuf,
    committed: bool,
}

impl PendingFile {
    pub fn create(path: &Path) -> Result<PendingFile> {
        let temp = temp_path(path);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&temp)
            .at(&temp)?;
        Ok(PendingFile {
            file,
            temp,
            path: path.to_path_buf(),
            committed: false,
        })
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// Rename the file into place, after syncing its data when `sync`.
    pub fn commit(mut self, sync: bool) -> Result<File> {
        if sync {
            self.file.sync_data().at(&self.temp)?;
        }
        fs::rename(&self.temp, &self.path).at(&self.path)?;
        self.committed = true;
        self.file.try_clone().at(&self.path)
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// Write `bytes` to `path` whole or not at all, creating its directory.
/// `sync` makes the data durable before the rename; files that are cheap
/// to make again (a torn one fails its own check) skip it.
pub fn write_file(path: &Path, bytes: &[u8], sync: bool) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).at(dir)?;
    }
    let mut pending = PendingFile::create(path)?;
    pending.file.write_all(bytes).at(&pending.temp)?;
    pending.commit(sync).map(drop)
}

/// Whether `name` is a temp file's name.
pub fn is_temp(name: &str) -> bool {
    // Without the leading dot: the layer builder's names before this scheme.
    name.contains(TEMP_MARK)
}

/// Which temp files [`sweep`] takes.
#[derive(Clone, Copy, Debug)]
pub enum Stale {
    /// Those whose writer's pid no longer runs (this process's are kept).
    WriterGone,
    /// Those not modified for this long, whoever wrote them: for writers in
    /// another pid namespace, whose pids mean nothing here.
    OlderThan(Duration),
    /// Every one: the caller holds the lock every writer in `dir` takes.
    All,
}

/// Remove the stale temp files in `dir` (never through a symlink, never a
/// directory). Returns the bytes freed.
pub fn sweep(dir: &Path, stale: Stale) -> u64 {
    use std::os::unix::fs::MetadataExt;
    if !fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
        return 0;
    }
    let now = SystemTime::now();
    let mut freed = 0;
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_temp(&name) {
            continue;
        }
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        let doomed = match stale {
            Stale::All => true,
            Stale::WriterGone => writer_pid(&name).is_some_and(|pid| !process_runs(pid)),
            Stale::OlderThan(limit) => meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .is_some_and(|age| age > limit),
        };
        if doomed && meta.is_file() && fs::remove_file(entry.path()).is_ok() {
            freed += meta.blocks() * 512;
        }
    }
    freed
}

/// The pid in `.NAME.tmp.PID[.NANOS]`.
fn writer_pid(name: &str) -> Option<u32> {
    let (_, rest) = name.rsplit_once(TEMP_MARK)?;
    rest.split('.').next()?.parse().ok()
}

fn process_runs(pid: u32) -> bool {
    pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_leaves_only_the_final_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("record.json");
        write_file(&path, b"{}", true).unwrap();
        write_file(&path, b"{\"a\":1}", false).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"{\"a\":1}");
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["record.json"]);
    }

    #[test]
    fn a_dropped_pending_file_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let pending = PendingFile::create(&dir.path().join("data")).unwrap();
        let temp = pending.temp_path().to_path_buf();
        assert!(is_temp(&temp.file_name().unwrap().to_string_lossy()));
        assert!(temp.exists());
        drop(pending);
        assert!(!temp.exists());
        assert!(!dir.path().join("data").exists());
    }

    #[test]
    fn the_sweep_takes_dead_writers_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let pid_max: u64 = fs::read_to_string("/proc/sys/kernel/pid_max")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let dead = dir.path().join(format!(".x.json.tmp.{}.5", pid_max + 1));
        let dead_old_scheme = dir.path().join(format!(".x.tmp.{}", pid_max + 1));
        let live = dir
            .path()
            .join(format!(".x.json.tmp.{}.6", std::process::id()));
        let final_file = dir.path().join("x.json");
        let not_ours = dir.path().join("notes.txt");
        for p in [&dead, &dead_old_scheme, &live, &final_file, &not_ours] {
            fs::write(p, b"x").unwrap();
        }
        sweep(dir.path(), Stale::WriterGone);
        assert!(!dead.exists() && !dead_old_scheme.exists());
        assert!(live.exists() && final_file.exists() && not_ours.exists());
        sweep(dir.path(), Stale::OlderThan(Duration::from_secs(600)));
        assert!(live.exists(), "a fresh file is not stale by age");
        sweep(dir.path(), Stale::All);
        assert!(!live.exists() && final_file.exists() && not_ours.exists());
    }
}
