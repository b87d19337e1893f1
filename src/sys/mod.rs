//! The operating-system edge every stage shares: file locks, temp files,
//! `/proc/self/mountinfo` and progress bars. Nothing here knows about images.

pub mod atomic;
pub mod lock;
pub mod mountinfo;
pub mod progress;
pub mod rotating_log;
pub mod workers;
