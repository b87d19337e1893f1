//! The operating-system edge every stage shares: file locks, temp files,
//! `/proc/self/mountinfo`, progress bars, and untrusted bodies read in
//! memory that follows what arrives. Nothing here knows about images.

pub mod atomic;
pub mod bounded;
pub mod lock;
pub mod mountinfo;
pub mod open_files;
pub mod progress;
pub mod rotating_log;
pub mod thread_cpu;
pub mod workers;
