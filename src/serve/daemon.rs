//! The mount daemon: serves one pinned image at one directory until it is
//! unmounted or signalled. `ocimount mount` starts it (as the hidden
//! `ocimount daemon` command, with every input an explicit argument) once
//! the image is indexed, and waits for its word on the ready fd;
//! `mount --foreground` serves in its own process through the same code.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fuser::{Config, MountOption, SessionACL};

use super::umount::lazy_unmount;
use crate::cache::mount_records::{registry_path, write_record as write_mount_record, MountRecord};
use crate::error::{Error, IoContext, Result};
use crate::limits::MAX_LOG_BYTES;
use crate::rootfs::decode_ahead::DecodeAhead;
use crate::rootfs::{OpenOptions, Rootfs};
use crate::serve::fs::{ImageFs, MAX_READ};
use crate::serve::prefetch::{Fill, Prefetch};
use crate::serve::reads_in_flight::ReadsInFlight;
use crate::serve::record::{record_path, write_record, FirstReads};
use crate::source::ImageRef;
use crate::sys::mountinfo::mount_device;
use crate::sys::rotating_log::RotatingLog;

/// How the mount treats setuid bits, devices and other users.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MountFlags {
    pub allow_other: bool,
    pub suid: bool,
    pub dev: bool,
}

/// Everything the daemon is told; nothing comes from the environment.
#[derive(Clone, Debug)]
pub struct DaemonArgs {
    /// The image pinned to its manifest digest (`ImageRef::pinned`), so a
    /// tag moved since the parent indexed it changes nothing.
    pub pinned: String,
    /// The image as the user named it: the mount's fsname, and what
    /// `ocimount mounts` shows.
    pub name: String,
    pub dir: PathBuf,
    /// The options the parent was given (cache, its mode and bound, registry).
    pub open: OpenOptions,
    /// Where to say `ready` (or `error: …`) once, for the parent.
    pub ready_fd: Option<i32>,
    /// The log file; stdout and stderr go there through a pipe.
    pub log: Option<PathBuf>,
    pub flags: MountFlags,
    /// `--prefetch`: the background fill of the data cache.
    pub prefetch: Prefetch,
    /// `--record`: write the order files are first read in at unmount.
    pub record: bool,
}

/// What `serve` needs besides the opened image.
#[derive(Clone, Debug)]
pub struct ServeSetup {
    pub name: String,
    pub dir: PathBuf,
    pub ready_fd: Option<i32>,
    pub log: Option<PathBuf>,
    pub flags: MountFlags,
    /// `--prefetch`: the background fill of the data cache.
    pub prefetch: Prefetch,
    /// `--record`: write the order files are first read in at unmount.
    pub record: bool,
}

/// The daemon's entry point: open the pinned image (its indexes are warm,
/// so no progress is drawn) and serve it.
pub fn run_daemon(args: &DaemonArgs) -> Result<()> {
    let Some(log) = &args.log else {
        return open_and_serve(args);
    };
    let pipe = LogPipe::start(log)?;
    let result = open_and_serve(args);
    if let Err(e) = &result {
        // The caller prints it to stderr, which is closed below.
        tracing::error!("{e}");
    }
    pipe.drain(LOG_DRAIN_TIMEOUT);
    result
}

/// How long an ending daemon waits for its last log lines (the tally of
/// span checks, an error) to reach the log file.
const LOG_DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn open_and_serve(args: &DaemonArgs) -> Result<()> {
    let opened = ImageRef::parse(&args.pinned).and_then(|reference| {
        let opts = OpenOptions {
            progress: false,
            ..args.open.clone()
        };
        Rootfs::open(&reference, &opts)
    });
    let rootfs = match opened {
        Ok(rootfs) => rootfs,
        Err(e) => {
            if let Some(fd) = args.ready_fd {
                tell_parent(fd, &format!("error: {e}"));
            }
            return Err(e);
        }
    };
    serve(
        rootfs,
        &ServeSetup {
            name: args.name.clone(),
            dir: args.dir.clone(),
            ready_fd: args.ready_fd,
            log: args.log.clone(),
            flags: args.flags,
            prefetch: args.prefetch,
            record: args.record,
        },
    )
}

fn fuse_config(name: &str, flags: &MountFlags) -> Config {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::FSName(format!("ocimount:{}", name.replace([',', ' '], "_"))),
        // The kernel takes `subtype` itself (fuser passes it only to
        // fusermount3): mountinfo then says `fuse.ocimount`, as mount(8)
        // and fstab expect.
        MountOption::CUSTOM("subtype=ocimount".to_string()),
        MountOption::DefaultPermissions,
        MountOption::NoAtime,
        if flags.suid {
            MountOption::Suid
        } else {
            MountOption::NoSuid
        },
        if flags.dev {
            MountOption::Dev
        } else {
            MountOption::NoDev
        },
        MountOption::CUSTOM(format!("max_read={MAX_READ}")),
    ];
    if flags.allow_other {
        config.acl = SessionACL::All;
    }
    config.n_threads = Some(crate::sys::workers::cores());
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
pub fn serve(rootfs: Rootfs, setup: &ServeSetup) -> Result<()> {
    let (dir, ready_fd) = (setup.dir.as_path(), setup.ready_fd);
    let signals = block_signals();
    let cache = rootfs.cache.clone();
    let record = MountRecord {
        pid: std::process::id(),
        dir: dir.to_path_buf(),
        image: setup.name.clone(),
        manifest: rootfs.image.manifest_digest.to_string(),
        log: setup.log.clone(),
        layers: rootfs
            .image
            .layers
            .iter()
            .map(|l| l.digest.to_string())
            .collect(),
    };
    let rootfs = Arc::new(rootfs);
    let reads = Arc::new(ReadsInFlight::default());
    let first_reads = setup
        .record
        .then(|| Arc::new(FirstReads::new(rootfs.tree.len())));
    let decode_ahead = DecodeAhead::start(rootfs.clone());
    let fs = ImageFs::watched(rootfs.clone(), reads.clone(), first_reads.clone())
        .with_decode_ahead(decode_ahead.clone());
    let mut session = match fuser::Session::new(fs, dir, &fuse_config(&setup.name, &setup.flags)) {
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
    let _ = write_mount_record(&registry, &record);
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
    tracing::info!("serving {} at {}", setup.name, dir.display());
    if let Some(fd) = ready_fd {
        tell_parent(fd, "ready");
    }
    let fill = Fill::start(rootfs.clone(), setup.prefetch, reads);
    let result = session.run();
    if let Some(fill) = fill {
        fill.stop();
    }
    if let Some(decode_ahead) = decode_ahead {
        decode_ahead.stop();
    }
    if let Some(first_reads) = first_reads {
        save_record(&rootfs, &first_reads);
    }
    rootfs.log_digest_checks();
    let _ = fs::remove_file(&registry);
    result.map_err(|e| Error::io(dir, e))
}

/// Write the mount's record of first reads into the cache (`--record`);
/// a failure is logged, the unmount goes on.
fn save_record(rootfs: &Rootfs, first_reads: &FirstReads) {
    let path = record_path(&rootfs.cache, &rootfs.image.manifest_digest);
    let paths = first_reads.paths(&rootfs.tree);
    match write_record(&path, &paths) {
        Ok(()) => tracing::info!("recorded {} files read at {}", paths.len(), path.display()),
        Err(e) => tracing::warn!("cannot write the record of first reads: {e}"),
    }
}

/// The daemon's stdout and stderr, sent to its log through a pipe drained
/// by a thread. Writing the log fails when the cache's disk is full, and a
/// failed write to stderr panics the thread that was logging (a FUSE
/// worker); a line dropped from the log is the lesser harm.
struct LogPipe {
    drained: std::sync::mpsc::Receiver<()>,
}

impl LogPipe {
    fn start(log: &Path) -> Result<LogPipe> {
        let mut file = RotatingLog::open(log, MAX_LOG_BYTES).at(log)?;
        let mut fds = [0i32; 2];
        // SAFETY: pipe2 fills two fds we then own.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(Error::io("pipe", std::io::Error::last_os_error()));
        }
        // SAFETY: fresh fds from pipe2; dup2 onto 1 and 2 (not close-on-exec).
        let mut read_end = unsafe {
            let read_end = File::from_raw_fd(fds[0]);
            let write_end = File::from_raw_fd(fds[1]);
            if libc::dup2(write_end.as_raw_fd(), 1) < 0 || libc::dup2(write_end.as_raw_fd(), 2) < 0
            {
                return Err(Error::io("dup2", std::io::Error::last_os_error()));
            }
            read_end
        };
        let (done, drained) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // SIGTERM must reach the thread that unmounts, never this one.
            block_signals();
            let mut buf = [0u8; 16 * 1024];
            loop {
                match read_end.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => file.write(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = done.send(());
        });
        Ok(LogPipe { drained })
    }

    /// Close the pipe's write end (stdout and stderr now go to /dev/null)
    /// and wait, at most `within`, for the thread to write what was left
    /// in it. Without this, the lines logged last were lost whenever the
    /// process exited before the thread had run.
    fn drain(self, within: std::time::Duration) {
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        if let Ok(null) = fs::OpenOptions::new().write(true).open("/dev/null") {
            // SAFETY: dup2 of an fd we own onto 1 and 2.
            unsafe {
                libc::dup2(null.as_raw_fd(), 1);
                libc::dup2(null.as_raw_fd(), 2);
            }
            let _ = self.drained.recv_timeout(within);
        }
    }
}

pub(super) fn tell_parent(fd: i32, message: &str) {
    // SAFETY: the parent handed us this fd for exactly this message.
    let mut f = unsafe { File::from_raw_fd(fd) };
    let _ = writeln!(f, "{message}");
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
