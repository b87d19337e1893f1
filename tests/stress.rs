//! The mount daemon under load and under failure: many threads reading
//! random files and ranges through two mounts of images that share their
//! layers (so both daemons fill the same cache entries at once), every byte
//! checked against `umoci unpack`, with a watchdog for deadlocks and the
//! daemons' memory measured; a blob that starts failing with EIO fails only
//! the reads that need it, is logged, and the daemon keeps serving (and
//! recovers when the blob does); SIGTERM in the middle of heavy reads
//! unmounts cleanly.

mod support;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyOpen, Request,
};
use support::{corpus, process_alive, wait_until, Mounted};

/// How long the readers run (STRESS_SECONDS overrides).
fn load_duration() -> Duration {
    Duration::from_secs(
        std::env::var("STRESS_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(15),
    )
}

/// No single read may take this long: past it, a reader is deadlocked.
const STUCK: Duration = Duration::from_secs(30);

fn layout(name: &str) -> String {
    corpus().image(name).layout.to_str().unwrap().to_string()
}

/// Regular files (relative, with their length) and symlinks (relative, with
/// their target).
type Listing = (Vec<(PathBuf, u64)>, Vec<(PathBuf, PathBuf)>);

/// Every regular file and every symlink of `root`.
fn files_and_links(root: &Path) -> Listing {
    let (mut files, mut links) = (Vec::new(), Vec::new());
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            let rel = e.path().strip_prefix(root).unwrap().to_path_buf();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                files.push((rel, e.metadata().unwrap().len()));
            } else if ft.is_symlink() {
                links.push((rel, std::fs::read_link(e.path()).unwrap()));
            }
        }
    }
    files.sort();
    (files, links)
}

fn regular_files(root: &Path) -> Vec<(PathBuf, u64)> {
    files_and_links(root).0
}

struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// `VmHWM` and `RssAnon` of a process, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("RssAnon:"))
}

/// A daemon's anonymous memory must stay below this under the load (the
/// tree of a Debian image is a few MiB; the cache lives in mapped files).
const DAEMON_ANON_LIMIT_KIB: u64 = 128 * 1024;
/// And its peak RSS, file pages included (spans are read with pread, so
/// the cache is not mapped into the daemon).
const DAEMON_PEAK_LIMIT_KIB: u64 = 256 * 1024;

// ------------------------------------------------------------------ load

#[test]
fn many_readers_on_two_mounts_sharing_layers_get_every_byte_right() {
    let cache = tempfile::tempdir().unwrap();
    // debian-docker has debian-gzip's layer blobs under Docker media types:
    // both daemons fill the same cache entries, from a cold data cache.
    let mounts = [
        Mounted::new(cache.path(), &layout("debian-gzip"), &[]),
        Mounted::new(cache.path(), &layout("debian-docker"), &[]),
    ];
    let pids: Vec<u32> = mounts.iter().map(Mounted::daemon_pid).collect();
    let reference = corpus().reference("debian-gzip");
    let (files, links) = files_and_links(&reference);
    let files: Arc<Vec<(PathBuf, u64)>> =
        Arc::new(files.into_iter().filter(|(_, len)| *len > 0).collect());
    let links = Arc::new(links);
    assert!(files.len() > 1000 && !links.is_empty());
    let deadline = Instant::now() + load_duration();
    let bytes_checked = Arc::new(AtomicU64::new(0));
    let ops = Arc::new(AtomicU64::new(0));
    let threads = 24u64;
    // Per thread: when its current operation started (0: idle).
    let busy_since: Arc<Vec<AtomicU64>> =
        Arc::new((0..threads).map(|_| AtomicU64::new(0)).collect());
    let epoch = Instant::now();
    let failures: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let mut handles = Vec::new();
    for t in 0..threads {
        let mnt = mounts[(t % 2) as usize].path().to_path_buf();
        let (files, links, reference) = (files.clone(), links.clone(), reference.clone());
        let (bytes_checked, ops, busy_since, failures) = (
            bytes_checked.clone(),
            ops.clone(),
            busy_since.clone(),
            failures.clone(),
        );
        handles.push(std::thread::spawn(move || {
            let mut rng = Xorshift(0x9e37_79b9_7f4a_7c15u64.wrapping_mul(t + 7));
            while Instant::now() < deadline {
                busy_since[t as usize]
                    .store(epoch.elapsed().as_millis() as u64 + 1, Ordering::Relaxed);
                let roll = rng.next() % 100;
                let outcome = if roll < 3 {
                    // A symlink, served as a link.
                    let (rel, target) = &links[(rng.next() % links.len() as u64) as usize];
                    match std::fs::read_link(mnt.join(rel)) {
                        Ok(got) if got == *target => Ok(0),
                        Ok(got) => Err(format!(
                            "{}: link to {got:?}, not {target:?}",
                            rel.display()
                        )),
                        Err(e) => Err(format!("{}: readlink: {e}", rel.display())),
                    }
                } else if roll < 6 {
                    // A directory listing.
                    let (rel, _) = &files[(rng.next() % files.len() as u64) as usize];
                    let dir = rel.parent().unwrap_or(Path::new(""));
                    let names = |root: &Path| -> std::io::Result<Vec<_>> {
                        let mut v: Vec<_> = std::fs::read_dir(root.join(dir))?
                            .map(|e| e.map(|e| e.file_name()))
                            .collect::<Result<_, _>>()?;
                        v.sort();
                        Ok(v)
                    };
                    match (names(&mnt), names(&reference)) {
                        (Ok(a), Ok(b)) if a == b => Ok(0),
                        (a, _) => Err(format!("{}: listing differs: {a:?}", dir.display())),
                    }
                } else {
                    let (rel, len) = &files[(rng.next() % files.len() as u64) as usize];
                    let (offset, want) = if roll < 16 {
                        (0, *len as usize)
                    } else {
                        let offset = rng.next() % len;
                        (offset, (rng.next() % (1 << 20)).min(len - offset) as usize)
                    };
                    let read = |root: &Path| -> std::io::Result<Vec<u8>> {
                        let mut f = std::fs::File::open(root.join(rel))?;
                        f.seek(SeekFrom::Start(offset))?;
                        let mut buf = vec![0u8; want];
                        f.read_exact(&mut buf)?;
                        Ok(buf)
                    };
                    match read(&mnt) {
                        Ok(got) if got == read(&reference).unwrap() => Ok(want as u64),
                        Ok(_) => Err(format!("{} at {offset}+{want}: wrong bytes", rel.display())),
                        Err(e) => Err(format!("{} at {offset}+{want}: {e}", rel.display())),
                    }
                };
                busy_since[t as usize].store(0, Ordering::Relaxed);
                match outcome {
                    Ok(n) => {
                        bytes_checked.fetch_add(n, Ordering::Relaxed);
                        ops.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        failures.lock().unwrap().push(format!("thread {t}: {e}"));
                        return;
                    }
                }
            }
        }));
    }
    // The watchdog: no operation may hang.
    let mut peak = [(0u64, 0u64); 2];
    while handles.iter().any(|h| !h.is_finished()) {
        std::thread::sleep(Duration::from_millis(200));
        let now = epoch.elapsed().as_millis() as u64;
        for (t, since) in busy_since.iter().enumerate() {
            let since = since.load(Ordering::Relaxed);
            assert!(
                since == 0 || now.saturating_sub(since) < STUCK.as_millis() as u64,
                "thread {t} is stuck in one operation for over {STUCK:?} (deadlock?)"
            );
        }
        for (i, &pid) in pids.iter().enumerate() {
            let (hwm, anon) = memory_kib(pid);
            peak[i] = (peak[i].0.max(hwm), peak[i].1.max(anon));
        }
    }
    for h in handles {
        h.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let ops = ops.load(Ordering::Relaxed);
    let bytes = bytes_checked.load(Ordering::Relaxed);
    eprintln!(
        "{threads} threads, {ops} operations, {} MiB checked against the reference",
        bytes >> 20
    );
    for (i, (hwm, anon)) in peak.iter().enumerate() {
        eprintln!(
            "daemon {i}: VmHWM {} MiB, RssAnon peak {} MiB",
            hwm / 1024,
            anon / 1024
        );
        assert!(
            *anon < DAEMON_ANON_LIMIT_KIB,
            "daemon {i}: RssAnon reached {anon} KiB"
        );
        assert!(
            *hwm < DAEMON_PEAK_LIMIT_KIB,
            "daemon {i}: VmHWM reached {hwm} KiB"
        );
    }
    assert!(ops > 1000, "only {ops} operations in {:?}", load_duration());
    for (m, pid) in mounts.iter().zip(&pids) {
        assert!(m.is_mounted() && process_alive(*pid));
    }
}

// ------------------------------------------------------------------ SIGTERM under load

/// SIGTERM while threads read: the mount goes away, the daemon exits, and
/// no reader hangs (reads in flight finish or fail).
#[test]
fn sigterm_during_heavy_reads_unmounts_cleanly() {
    let cache = tempfile::tempdir().unwrap();
    let m = Mounted::new(cache.path(), &layout("debian-zstd-multiframe"), &[]);
    let pid = m.daemon_pid();
    let reference = corpus().reference("debian-gzip");
    let files = Arc::new(regular_files(&reference));
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let (files, stop, reads) = (files.clone(), stop.clone(), reads.clone());
            let mnt = m.path().to_path_buf();
            std::thread::spawn(move || {
                let mut rng = Xorshift(0x1234_5678 + t);
                while !stop.load(Ordering::Relaxed) {
                    let (rel, _) = &files[(rng.next() % files.len() as u64) as usize];
                    if std::fs::read(mnt.join(rel)).is_ok() {
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    assert!(wait_until(Duration::from_secs(30), || reads
        .load(Ordering::Relaxed)
        > 200));
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    assert!(
        wait_until(Duration::from_secs(10), || !m.is_mounted()),
        "still mounted 10 s after SIGTERM"
    );
    stop.store(true, Ordering::Relaxed);
    let started = Instant::now();
    for h in handles {
        while !h.is_finished() {
            assert!(started.elapsed() < STUCK, "a reader hangs after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
        h.join().unwrap();
    }
    assert!(
        wait_until(Duration::from_secs(10), || !process_alive(pid)),
        "daemon {pid} still runs after SIGTERM"
    );
    assert_eq!(
        support::ok(&support::ocimount(cache.path(), &["mounts"])),
        ""
    );
}

// ------------------------------------------------------------------ a failing blob

/// A read-only passthrough filesystem over a directory whose reads of one
/// file fail with EIO while `fail` is set: a disk going bad under a blob.
struct FaultyFs {
    paths: Mutex<Vec<PathBuf>>,
    victim: PathBuf,
    fail: Arc<AtomicBool>,
}

const FAULTY_TTL: Duration = Duration::from_secs(1);

impl FaultyFs {
    fn path(&self, ino: INodeNo) -> Option<PathBuf> {
        self.paths.lock().unwrap().get(ino.0 as usize - 1).cloned()
    }

    fn ino(&self, path: PathBuf) -> INodeNo {
        let mut paths = self.paths.lock().unwrap();
        let i = match paths.iter().position(|p| *p == path) {
            Some(i) => i,
            None => {
                paths.push(path);
                paths.len() - 1
            }
        };
        INodeNo(i as u64 + 1)
    }

    fn attr(&self, ino: INodeNo, path: &Path) -> std::io::Result<FileAttr> {
        let m = std::fs::metadata(path)?;
        let t = m.modified()?;
        Ok(FileAttr {
            ino,
            size: m.len(),
            blocks: m.blocks(),
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            kind: if m.is_dir() {
                FileType::Directory
            } else {
                FileType::RegularFile
            },
            perm: (m.mode() & 0o7777) as u16,
            nlink: 1,
            uid: m.uid(),
            gid: m.gid(),
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }
}

impl Filesystem for FaultyFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(dir) = self.path(parent) else {
            return reply.error(Errno::ENOENT);
        };
        let path = dir.join(name);
        let ino = self.ino(path.clone());
        match self.attr(ino, &path) {
            Ok(attr) => reply.entry(&FAULTY_TTL, &attr, Generation(0)),
            Err(_) => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.path(ino).map(|p| self.attr(ino, &p)) {
            Some(Ok(attr)) => reply.attr(&FAULTY_TTL, &attr),
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // No page cache: every read comes here, so a fault shows at once.
        reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(path) = self.path(ino) else {
            return reply.error(Errno::ENOENT);
        };
        if path == self.victim && self.fail.load(Ordering::SeqCst) {
            return reply.error(Errno::EIO);
        }
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(_) => return reply.error(Errno::EIO),
        };
        let mut buf = vec![0u8; size as usize];
        let mut got = 0;
        while got < buf.len() {
            match file.read_at(&mut buf[got..], offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(_) => return reply.error(Errno::EIO),
            }
        }
        reply.data(&buf[..got]);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some(dir) = self.path(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for (i, name) in names.iter().enumerate().skip(offset as usize) {
            let path = dir.join(name);
            let kind = if path.is_dir() {
                FileType::Directory
            } else {
                FileType::RegularFile
            };
            if reply.add(self.ino(path), i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }
}

/// The layer blob behind each regular file of an image, by path.
fn layer_of_each_file(cache: &Path, image: &str) -> (Vec<String>, HashMap<PathBuf, usize>) {
    use ocimount::merge::NodeKind;
    use ocimount::rootfs::{OpenOptions, Rootfs};
    use ocimount::source::ImageRef;
    let rootfs = Rootfs::open(
        &ImageRef::parse(image).unwrap(),
        &OpenOptions {
            cache_dir: Some(cache.to_path_buf()),
            progress: false,
            ..OpenOptions::default()
        },
    )
    .unwrap();
    let mut by_path = HashMap::new();
    for (path, id) in rootfs.tree.walk() {
        if let NodeKind::File { layer, .. } = rootfs.tree.node(id).kind {
            by_path.insert(PathBuf::from(OsStr::from_bytes(&path)), layer as usize);
        }
    }
    let digests = rootfs
        .image
        .layers
        .iter()
        .map(|l| l.digest.to_string())
        .collect();
    (digests, by_path)
}

/// A blob that starts returning EIO under a live mount: only reads that
/// need it fail (EIO), each failure is logged with the layer, every other
/// read still gets the right bytes, the daemon stays up, and once the blob
/// reads again so do the files.
#[test]
fn an_io_error_on_one_blob_fails_only_its_reads_and_the_daemon_keeps_serving() {
    let work = tempfile::tempdir().unwrap();
    let source = PathBuf::from(layout("debian-gzip"));
    // Resolve symlinked blobs: the faulty fs serves plain files.
    let out = support::run_bounded(
        std::process::Command::new("cp")
            .arg("-rL")
            .arg(&source)
            .arg(work.path().join("layout")),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cache = tempfile::tempdir().unwrap();
    let (digests, layer_of) =
        layer_of_each_file(cache.path(), work.path().join("layout").to_str().unwrap());
    // The victim: the layer holding the most files.
    let mut counts = vec![0usize; digests.len()];
    for &l in layer_of.values() {
        counts[l] += 1;
    }
    let victim_layer = (0..counts.len()).max_by_key(|&i| counts[i]).unwrap();
    let victim_digest = &digests[victim_layer];
    let victim_blob = work
        .path()
        .join("layout/blobs/sha256")
        .join(victim_digest.strip_prefix("sha256:").unwrap());

    let fail = Arc::new(AtomicBool::new(false));
    let faulty_dir = tempfile::tempdir().unwrap();
    let fs = FaultyFs {
        paths: Mutex::new(vec![work.path().join("layout")]),
        victim: victim_blob,
        fail: fail.clone(),
    };
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::RO,
        fuser::MountOption::FSName("faulty".into()),
    ];
    let _session = fuser::spawn_mount(fs, faulty_dir.path(), &config).unwrap();
    let image = faulty_dir.path().to_str().unwrap().to_string();

    // The cache already holds the index (built above from the same blobs),
    // so the mount reads no blob until files are read.
    let m = Mounted::new(cache.path(), &image, &[]);
    let pid = m.daemon_pid();
    fail.store(true, Ordering::SeqCst);
    let reference = corpus().reference("debian-gzip");
    let (mut eio, mut good) = (0, 0);
    for (rel, len) in regular_files(&reference) {
        let Some(&layer) = layer_of.get(&rel) else {
            continue;
        };
        if len == 0 {
            continue;
        }
        match std::fs::read(m.path().join(&rel)) {
            Ok(bytes) => {
                assert_ne!(
                    layer,
                    victim_layer,
                    "{}: read despite its failing blob",
                    rel.display()
                );
                assert!(
                    bytes == std::fs::read(reference.join(&rel)).unwrap(),
                    "{}",
                    rel.display()
                );
                good += 1;
            }
            Err(e) => {
                assert_eq!(layer, victim_layer, "{}: {e}", rel.display());
                assert_eq!(e.raw_os_error(), Some(libc::EIO), "{}: {e}", rel.display());
                eio += 1;
            }
        }
    }
    eprintln!("with layer {victim_layer} failing: {eio} reads gave EIO, {good} others were right");
    assert!(eio > 0 && good > 0);
    assert!(process_alive(pid) && m.is_mounted(), "the daemon went away");
    let log = std::fs::read_to_string(
        std::fs::read_dir(cache.path().join("logs"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path(),
    )
    .unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("ERROR") && l.contains(victim_digest.as_str()))
        .unwrap_or_else(|| panic!("no error logged for {victim_digest}:\n{log}"));
    assert!(line.contains("Input/output error"), "{line}");
    assert!(!log.contains('\u{1b}'), "colour escapes in the log file");

    // The disk recovers: so do the reads.
    fail.store(false, Ordering::SeqCst);
    for (rel, len) in regular_files(&reference) {
        if len > 0 && layer_of.get(&rel) == Some(&victim_layer) {
            assert!(
                std::fs::read(m.path().join(&rel)).unwrap()
                    == std::fs::read(reference.join(&rel)).unwrap(),
                "{}",
                rel.display()
            );
        }
    }
    drop(m);
}
