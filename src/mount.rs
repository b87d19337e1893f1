//! The mount's life: start a daemon that serves the image at a directory,
//! report when it is live, unmount it cleanly (on `umount` or a signal),
//! and keep a registry of what a cache has mounted.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fuser::{Config, MountOption, SessionACL};
use serde::{Deserialize, Serialize};

use crate::cache::Cache;
use crate::error::{Error, IoContext, Result};
use crate::fs::{ImageFs, MAX_READ};
use crate::rootfs::{OpenOptions, Rootfs};

/// The daemon's fd for telling its parent it is ready; set by the parent.
const READY_FD_ENV: &str = "OCIMOUNT_READY_FD";
/// How long `mount` waits for its daemon to mount (the index is warm by then).
const DAEMON_START_TIMEOUT: Duration = Duration::from_secs(60);
const DAEMON_EXIT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct MountRequest {
    pub image: String,
    pub dir: PathBuf,
    pub open: OpenOptions,
    pub foreground: bool,
    pub allow_other: bool,
    pub suid: bool,
    pub dev: bool,
}

/// What the registry keeps about a live mount.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MountRecord {
    pub pid: u32,
    pub dir: PathBuf,
    pub image: String,
    pub manifest: String,
    pub log: Option<PathBuf>,
}

/// `ocimount mount`: index in this process (with progress), then serve in
/// a background daemon, returning once the mount is live.
pub fn mount(req: &MountRequest) -> Result<()> {
    let dir = check_mountpoint(&req.dir)?;
    let reference = crate::oci::ImageRef::parse(&req.image)?;
    let ready_fd = std::env::var(READY_FD_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok());
    if req.foreground {
        if let Some(log) = std::env::var_os("OCIMOUNT_LOG") {
            log_through_pipe(Path::new(&log))?;
        }
    }
    let rootfs = Rootfs::open(&reference, &req.open);
    if req.foreground {
        if let (Err(e), Some(fd)) = (&rootfs, ready_fd) {
            tell_parent(fd, &format!("error: {e}"));
        }
        return serve(req, &dir, rootfs?, ready_fd);
    }
    let rootfs = rootfs?;
    let cache_root = rootfs.cache.root().to_path_buf();
    drop(rootfs);
    spawn_daemon(req, &dir, &cache_root)
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

fn fuse_config(req: &MountRequest) -> Config {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::FSName(format!("ocimount:{}", req.image.replace([',', ' '], "_"))),
        MountOption::Subtype("ocimount".to_string()),
        MountOption::DefaultPermissions,
        MountOption::NoAtime,
        if req.suid {
            MountOption::Suid
        } else {
            MountOption::NoSuid
        },
        if req.dev {
            MountOption::Dev
        } else {
            MountOption::NoDev
        },
        MountOption::CUSTOM(format!("max_read={MAX_READ}")),
    ];
    if req.allow_other {
        config.acl = SessionACL::All;
    }
    config.n_threads = Some(std::thread::available_parallelism().map_or(1, |n| n.get()));
    config.clone_fd = clone_fd_supported();
    if !config.clone_fd {
        tracing::warn!(
            "FUSE_DEV_IOC_CLONE is not available (qemu-user or an old kernel?); \
             the worker threads share one /dev/fuse fd"
        );
    }
    config
}

/// Whether the kernel (or emulator) implements `FUSE_DEV_IOC_CLONE`. Cloning
/// from a /dev/fuse fd with no connection fails with EPERM or EINVAL where
/// the ioctl exists; qemu-user and kernels without it answer ENOSYS or ENOTTY.
pub fn clone_fd_supported() -> bool {
    const FUSE_DEV_IOC_CLONE: libc::c_ulong = 0x8004_e500; // _IOR(229, 0, u32)
    let open = || {
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
    };
    let (Ok(a), Ok(b)) = (open(), open()) else {
        return false;
    };
    let source = a.as_raw_fd() as u32;
    // SAFETY: an ioctl on an fd we own, with a pointer to a live u32.
    let r = unsafe { libc::ioctl(b.as_raw_fd(), FUSE_DEV_IOC_CLONE as _, &source) };
    let errno = std::io::Error::last_os_error().raw_os_error();
    r == 0 || !matches!(errno, Some(libc::ENOSYS | libc::ENOTTY | libc::EOPNOTSUPP))
}

/// Mount and serve in this process until unmounted or signalled.
fn serve(req: &MountRequest, dir: &Path, mut rootfs: Rootfs, ready_fd: Option<i32>) -> Result<()> {
    let signals = block_signals();
    // The tree holds all the daemon serves; the layers' entry lists (about
    // 160 bytes an entry) are not needed again.
    for index in &mut rootfs.indexes {
        index.entries = Vec::new();
    }
    let cache = rootfs.cache.clone();
    let record = MountRecord {
        pid: std::process::id(),
        dir: dir.to_path_buf(),
        image: req.image.clone(),
        manifest: rootfs.image.manifest_digest.to_string(),
        log: std::env::var_os("OCIMOUNT_LOG").map(PathBuf::from),
    };
    let fs = ImageFs::new(Arc::new(rootfs));
    let mut session = match fuser::Session::new(fs, dir, &fuse_config(req)) {
        Ok(s) => s,
        Err(e) => {
            let err = Error::io(dir, e);
            if let Some(fd) = ready_fd {
                tell_parent(fd, &format!("error: cannot mount: {err}"));
            }
            return Err(err);
        }
    };
    raise_readahead(dir);
    let registry = registry_path(&cache, dir);
    let _ = write_record(&registry, &record);
    let mut unmounter = session.unmount_callable();
    let dir_owned = dir.to_path_buf();
    std::thread::spawn(move || {
        let sig = wait_for_signal(&signals);
        tracing::info!(signal = sig, "unmounting {}", dir_owned.display());
        if let Err(e) = unmounter.unmount() {
            tracing::warn!(
                "unmount of {} failed ({e}); detaching it lazily",
                dir_owned.display()
            );
            lazy_unmount(&dir_owned);
        }
    });
    tracing::info!("serving {} at {}", req.image, dir.display());
    if let Some(fd) = ready_fd {
        tell_parent(fd, "ready");
    }
    let result = session.run();
    let _ = fs::remove_file(&registry);
    result.map_err(|e| Error::io(dir, e))
}

/// Send the daemon's stdout and stderr to its log through a pipe drained by
/// a thread. Writing the log fails when the cache's disk is full, and a
/// failed write to stderr panics the thread that was logging (a FUSE
/// worker); a line dropped from the log is the lesser harm.
fn log_through_pipe(log: &Path) -> Result<()> {
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .at(log)?;
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills two fds we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Error::io("pipe", std::io::Error::last_os_error()));
    }
    // SAFETY: fresh fds from pipe2; dup2 onto 1 and 2 (not close-on-exec).
    let mut read_end = unsafe {
        let read_end = File::from_raw_fd(fds[0]);
        let write_end = File::from_raw_fd(fds[1]);
        if libc::dup2(write_end.as_raw_fd(), 1) < 0 || libc::dup2(write_end.as_raw_fd(), 2) < 0 {
            return Err(Error::io("dup2", std::io::Error::last_os_error()));
        }
        read_end
    };
    std::thread::spawn(move || {
        // SIGTERM must reach the thread that unmounts, never this one.
        block_signals();
        let mut buf = [0u8; 16 * 1024];
        loop {
            match read_end.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let _ = file.write_all(&buf[..n]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    });
    Ok(())
}

fn tell_parent(fd: i32, message: &str) {
    // SAFETY: the parent handed us this fd for exactly this message.
    let mut f = unsafe { File::from_raw_fd(fd) };
    let _ = writeln!(f, "{message}");
}

/// Start `ocimount mount --foreground` detached, logging to the cache,
/// and wait until it reports the mount live (or fails).
fn spawn_daemon(req: &MountRequest, dir: &Path, cache_root: &Path) -> Result<()> {
    let logs = cache_root.join("logs");
    fs::create_dir_all(&logs).at(&logs)?;
    let log_path = logs.join(format!("mount-{}.log", path_key(dir)));
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
    let mut cmd = Command::new(exe);
    cmd.arg("--cache")
        .arg(cache_root)
        .arg("mount")
        .arg(&req.image)
        .arg(dir)
        .arg("--foreground");
    if let Some(p) = &req.open.platform {
        cmd.arg("--platform").arg(p.to_string());
    }
    for (on, flag) in [
        (req.allow_other, "--allow-other"),
        (req.suid, "--suid"),
        (req.dev, "--dev"),
    ] {
        if on {
            cmd.arg(flag);
        }
    }
    cmd.env(READY_FD_ENV, "3")
        .env("OCIMOUNT_LOG", &log_path)
        // A log file is no terminal: no colour escapes in it.
        .env("NO_COLOR", "1")
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
    let message = read_with_timeout(&mut read_end, DAEMON_START_TIMEOUT);
    match message.as_deref().map(str::trim) {
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
                        "the daemon did not mount within {DAEMON_START_TIMEOUT:?}; see {}",
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

/// `ocimount umount DIR`: unmount; a busy mount is an error unless `lazy`.
pub fn umount(dir: &Path, cache: &Cache, lazy: bool) -> Result<()> {
    let dir = absolute(dir);
    if !is_mounted(&dir) {
        return Err(Error::BadPath {
            path: dir.display().to_string(),
            reason: "not a mount point".into(),
        });
    }
    let record = read_record(&registry_path(cache, &dir));
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(|_| Error::BadPath {
        path: dir.display().to_string(),
        reason: "contains a NUL byte".into(),
    })?;
    let flags = if lazy { libc::MNT_DETACH } else { 0 };
    // SAFETY: a valid C string.
    if unsafe { libc::umount2(path.as_ptr(), flags) } != 0 {
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EBUSY) => {
                return Err(Error::BadPath {
                    path: dir.display().to_string(),
                    reason: "busy: a process still uses the mount (see `fuser -vm DIR`); nothing was unmounted. Use --lazy to detach it anyway".into(),
                })
            }
            Some(libc::EPERM) => {
                let status = Command::new("fusermount3").arg("-u").arg(&dir).status().at("fusermount3")?;
                if !status.success() {
                    return Err(Error::BadPath { path: dir.display().to_string(), reason: "fusermount3 -u failed".into() });
                }
            }
            _ => return Err(Error::io(&dir, err)),
        }
    }
    if let Some(rec) = record {
        wait_for_exit(rec.pid, DAEMON_EXIT_TIMEOUT);
    }
    let _ = fs::remove_file(registry_path(cache, &dir));
    Ok(())
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

fn registry_path(cache: &Cache, dir: &Path) -> PathBuf {
    cache
        .root()
        .join("mounts")
        .join(format!("{}.json", path_key(dir)))
}

fn write_record(path: &Path, record: &MountRecord) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).at(parent)?;
    }
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    fs::write(&tmp, serde_json::to_vec_pretty(record).unwrap_or_default()).at(&tmp)?;
    fs::rename(&tmp, path).at(path)
}

fn read_record(path: &Path) -> Option<MountRecord> {
    serde_json::from_slice(&fs::read(path).ok()?).ok()
}

/// A file-name-safe key for a mount point.
fn path_key(dir: &Path) -> String {
    crate::digest::Digest::of(dir.as_os_str().as_bytes()).short()
}

fn absolute(dir: &Path) -> PathBuf {
    fs::canonicalize(dir)
        .unwrap_or_else(|_| std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf()))
}

/// Is `dir` a mount point? Read from mountinfo so a dead FUSE mount is
/// seen too (stat on it fails).
pub fn is_mounted(dir: &Path) -> bool {
    mount_device(dir).is_some()
}

/// The `major:minor` of the mount at `dir`, from /proc/self/mountinfo.
fn mount_device(dir: &Path) -> Option<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = dir.as_os_str().as_bytes();
    info.lines().rev().find_map(|line| {
        let mut fields = line.split(' ');
        let dev = fields.nth(2)?;
        let mount_point = fields.nth(1)?;
        (unescape_mountinfo(mount_point) == want).then(|| dev.to_string())
    })
}

fn unescape_mountinfo(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// The kernel reads ahead only 128 KiB on FUSE by default; ask for 1 MiB.
fn raise_readahead(dir: &Path) {
    if let Some(dev) = mount_device(dir) {
        let path = format!("/sys/class/bdi/{dev}/read_ahead_kb");
        if let Err(e) = fs::write(&path, format!("{}", MAX_READ / 1024)) {
            tracing::debug!("cannot raise readahead at {path}: {e}");
        }
    }
}

fn lazy_unmount(dir: &Path) {
    if let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) {
        // SAFETY: a valid C string.
        unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
    }
}

fn process_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

fn wait_for_exit(pid: u32, timeout: Duration) {
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

/// Block the termination signals in every thread, so one thread can wait
/// for them with sigwait and unmount cleanly.
fn block_signals() -> libc::sigset_t {
    // SAFETY: plain sigset manipulation on a local.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_for_signal(set: &libc::sigset_t) -> i32 {
    let mut sig = 0;
    // SAFETY: `set` is initialised; sigwait writes the signal number.
    unsafe { libc::sigwait(set, &mut sig) };
    sig
}
