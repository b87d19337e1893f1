//! Serving a rootfs: the FUSE edge, the daemon that runs it, the command
//! side that spawns it and waits for the mount, `umount`, and the work a
//! live mount does in the background (prefetch, `--record`).

pub mod daemon;
pub mod fs;
pub mod prefetch;
pub mod reads_in_flight;
pub mod record;
pub mod spawn;
pub mod umount;

pub use daemon::{clone_fd_supported, run_daemon, DaemonArgs, MountFlags};
pub use spawn::*;
pub use umount::{umount, DaemonExit, DAEMON_EXIT_TIMEOUT};
