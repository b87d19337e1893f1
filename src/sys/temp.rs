//! Temp files left by writers that died between their write and their rename.

use std::fs;
use std::path::Path;

/// Remove the temp files `.STEM.tmp.PID…` in `dir` whose writer is gone: a process killed between its write and its rename leaves one, and
/// files replaced by rename without a lock (image records, stored trees)
/// have no builder to clean up after it. A live writer's file, this
/// process's or one whose pid still runs, is left alone.
pub fn remove_dead_writers_temps(dir: &Path, stem: &str) {
    let prefix = format!(".{stem}.tmp.");
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let file = entry.file_name();
        let Some(rest) = file.to_str().and_then(|f| f.strip_prefix(&prefix)) else {
            continue;
        };
        let Some(pid) = rest.split('.').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = fs::remove_file(entry.path());
        }
    }
}
