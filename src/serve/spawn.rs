//! The mount's life as the command sees it: index the image in this
//! process (with progress), then serve it from a daemon started on the
//! image pinned to its manifest digest, returning once the mount is live.
//! The daemon, the registry of mounts, mountinfo and umount each have a
//! file of their own.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use crate::cache::mount_records::{list_mounts, MountRecord};
pub use crate::sys::mountinfo::is_mounted;

use crate::cache::mount_records::path_key;

use super::daemon::{self, MountFlags};
use crate::error::{Error, IoContext, Result};
use crate::rootfs::{OpenOptions, Rootfs};
use crate::serve::prefetch::Prefetch;
use crate::source::registry::credential::Credential;
use crate::source::registry::settings::CREDS_ENV;
use crate::source::ImageRef;

/// How long `mount` waits for its daemon to mount (the index is warm by then).
const DAEMON_START_TIMEOUT: Duration = Duration::from_secs(60);

/// What the daemon must be told beyond the command's own options: the
/// command line builds its argv from these (see [`DaemonArgv`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonLaunch {
    pub pinned: String,
    pub name: String,
    pub dir: PathBuf,
    pub cache_root: PathBuf,
    pub log: PathBuf,
    pub ready_fd: i32,
    pub flags: MountFlags,
    pub prefetch: Prefetch,
    pub record: bool,
}

/// Builds the daemon's arguments (after the executable) from the same
/// definitions that parse them, so the two cannot drift; made by the
/// command line, which owns those definitions.
#[derive(Clone)]
pub struct DaemonArgv(pub Arc<WriteDaemonArgv>);

/// The function behind a [`DaemonArgv`].
pub type WriteDaemonArgv = dyn Fn(&DaemonLaunch) -> Vec<OsString> + Send + Sync;

impl std::fmt::Debug for DaemonArgv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DaemonArgv")
    }
}

#[derive(Clone, Debug)]
pub struct MountRequest {
    pub image: String,
    pub dir: PathBuf,
    pub open: OpenOptions,
    pub foreground: bool,
    /// No progress and no `mounted …` line: errors only.
    pub quiet: bool,
    pub allow_other: bool,
    pub suid: bool,
    pub dev: bool,
    /// `--prefetch`: the daemon's background fill of the data cache.
    pub prefetch: Prefetch,
    /// `--record`: the daemon records the order files are first read in.
    pub record: bool,
    /// How to write the daemon's command line.
    pub daemon_argv: DaemonArgv,
}

/// `ocimount mount`: index in this process (with progress), then serve in
/// a background daemon, returning once the mount is live; or open and
/// serve here with `--foreground`.
pub fn mount(req: &MountRequest) -> Result<()> {
    let dir = check_mountpoint(&req.dir)?;
    let reference = ImageRef::parse(&req.image)?;
    if !req.foreground {
        // Index here (with progress, and errors on this terminal), but
        // build no tree and open no reader: the daemon does that once.
        let image = crate::rootfs::ensure_indexed(&reference, &req.open)?;
        let pinned = image.reference.pinned(&image.manifest_digest)?;
        let cache_root = crate::cache::Cache::locate(req.open.cache_dir.as_deref())?
            .root()
            .to_path_buf();
        return spawn_daemon(req, &dir, &cache_root, &pinned);
    }
    let rootfs = Rootfs::open(&reference, &req.open)?;
    let setup = daemon::ServeSetup {
        name: req.image.clone(),
        dir,
        ready_fd: None,
        log: None,
        flags: MountFlags {
            allow_other: req.allow_other,
            suid: req.suid,
            dev: req.dev,
        },
        prefetch: req.prefetch,
        record: req.record,
    };
    daemon::serve(rootfs, &setup)
}

fn check_mountpoint(dir: &Path) -> Result<PathBuf> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(Error::BadPath { path: dir.display().to_string(), reason: "not a directory".into() }),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            return Err(Error::BadPath {
                path: dir.display().to_string(),
                reason: "a dead FUSE mount is here (transport endpoint is not connected); run `ocimount umount` on it first".into(),
            })
        }
        Err(e) => return Err(Error::io(dir, e)),
    }
    let dir = fs::canonicalize(dir).at(dir)?;
    if is_mounted(&dir) {
        return Err(Error::BadPath {
            path: dir.display().to_string(),
            reason: "something is already mounted here".into(),
        });
    }
    Ok(dir)
}

/// Start `ocimount daemon` detached on the pinned image, logging to the
/// cache, and wait until it reports the mount live (or fails).
fn spawn_daemon(req: &MountRequest, dir: &Path, cache_root: &Path, pinned: &str) -> Result<()> {
    let logs = crate::cache::paths::logs(cache_root);
    fs::create_dir_all(&logs).at(&logs)?;
    let log_path = crate::cache::paths::mount_log(cache_root, &path_key(dir));
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .at(&log_path)?;
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills two fds we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Error::io("pipe", std::io::Error::last_os_error()));
    }
    // SAFETY: fresh fds from pipe2.
    let (mut read_end, write_end) =
        unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
    let exe = std::env::current_exe().at("/proc/self/exe")?;
    let launch = DaemonLaunch {
        pinned: pinned.to_string(),
        name: req.image.clone(),
        dir: dir.to_path_buf(),
        cache_root: cache_root.to_path_buf(),
        log: log_path.clone(),
        ready_fd: 3,
        flags: MountFlags {
            allow_other: req.allow_other,
            suid: req.suid,
            dev: req.dev,
        },
        prefetch: req.prefetch,
        record: req.record,
    };
    let mut cmd = Command::new(exe);
    cmd.args((req.daemon_argv.0)(&launch));
    // Secrets go in the environment, never on a command line.
    match &req.open.registry.creds {
        Some(Credential::Basic { username, password }) => {
            cmd.env(CREDS_ENV, format!("{username}:{password}"));
        }
        _ => {
            cmd.env_remove(CREDS_ENV);
        }
    }
    // A log file is no terminal: no colour escapes in it.
    cmd.env("NO_COLOR", "1")
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone().at(&log_path)?)
        .stderr(log);
    let write_fd = write_end.as_raw_fd();
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 || libc::dup2(write_fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().at("ocimount daemon")?;
    drop(write_end);
    // The daemon opens the image again: from a registry it connects (its
    // manifest and config are in the cache's documents, kept by the open
    // above), each request bounded by --registry-timeout.
    let start_timeout = DAEMON_START_TIMEOUT.max(req.open.registry.request_timeout * 4);
    let message = read_with_timeout(&mut read_end, start_timeout);
    match message.as_deref().map(str::trim) {
        Some("ready") if req.quiet => Ok(()),
        Some("ready") => {
            eprintln!(
                "mounted {} at {} (daemon pid {}, log {})",
                req.image,
                dir.display(),
                child.id(),
                log_path.display()
            );
            Ok(())
        }
        other => {
            let reason = match other {
                Some(m) if !m.is_empty() => m.trim_start_matches("error: ").to_string(),
                Some(_) => format!(
                    "the daemon exited without mounting; see {}",
                    log_path.display()
                ),
                None => {
                    let _ = child.kill();
                    format!(
                        "the daemon did not mount within {start_timeout:?}; see {}",
                        log_path.display()
                    )
                }
            };
            let _ = child.wait();
            Err(Error::BadPath {
                path: dir.display().to_string(),
                reason,
            })
        }
    }
}

fn read_with_timeout(f: &mut File, timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let mut pfd = libc::pollfd {
            fd: f.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        if n <= 0 {
            return None;
        }
        let mut buf = [0u8; 4096];
        match f.read(&mut buf) {
            Ok(0) | Err(_) => return Some(String::from_utf8_lossy(&out).into_owned()),
            Ok(k) => out.extend_from_slice(&buf[..k]),
        }
    }
}
