//! A log file with a bound: past it the file is renamed to `NAME.1`
//! (replacing the previous one) and a new one begun, so a long-lived
//! daemon's log never holds more than twice the bound on disk.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub struct RotatingLog {
    path: PathBuf,
    file: File,
    written: u64,
    max: u64,
}

impl RotatingLog {
    /// Append to `path` (its current size counts toward `max`).
    pub fn open(path: &Path, max: u64) -> io::Result<RotatingLog> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let written = file.metadata()?.len();
        Ok(RotatingLog {
            path: path.to_path_buf(),
            file,
            written,
            max: max.max(1),
        })
    }

    /// Where the previous part of the log goes: `NAME.1`.
    pub fn rotated_path(path: &Path) -> PathBuf {
        let mut name = OsString::from(path.as_os_str());
        name.push(".1");
        PathBuf::from(name)
    }

    /// Write `bytes`, rotating first if they would take the file past its
    /// bound. A write that fails is dropped: a full disk must not stop a
    /// mount.
    pub fn write(&mut self, bytes: &[u8]) {
        if self.written > 0 && self.written.saturating_add(bytes.len() as u64) > self.max {
            if let Err(e) = self.rotate() {
                // Keep appending to what we have rather than lose the line.
                let _ = writeln!(self.file, "ocimount: cannot rotate this log: {e}");
            }
        }
        if self.file.write_all(bytes).is_ok() {
            self.written = self.written.saturating_add(bytes.len() as u64);
        }
    }

    fn rotate(&mut self) -> io::Result<()> {
        fs::rename(&self.path, Self::rotated_path(&self.path))?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.written = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_past_its_bound_is_rotated_and_never_grows_beyond_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mount-x.log");
        fs::write(&path, b"from the parent\n").unwrap();
        let mut log = RotatingLog::open(&path, 100).unwrap();
        for i in 0..50 {
            log.write(format!("line {i:04} of the daemon\n").as_bytes());
        }
        let current = fs::read_to_string(&path).unwrap();
        let previous = fs::read_to_string(RotatingLog::rotated_path(&path)).unwrap();
        assert!(current.len() <= 100 && previous.len() <= 100);
        assert!(current.ends_with("line 0049 of the daemon\n"), "{current}");
        // Whole lines on each side of the cut: the last ones are kept.
        let lines: Vec<&str> = previous.lines().chain(current.lines()).collect();
        assert_eq!(lines.last(), Some(&"line 0049 of the daemon"));
        assert!(lines.windows(2).all(|w| w[0] < w[1]), "{lines:?}");
    }
}
