//! The FUSE edge: a thin translation from kernel requests to the merged
//! tree and the layer readers. Everything it answers is precomputed or read
//! through `Rootfs`, so the logic stays testable without a mount.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    IoctlFlags, KernelConfig, LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen, ReplyStatfs,
    ReplyXattr, Request,
};

use crate::error::{Error, Result};
use crate::merge::{Node, NodeId, NodeKind, Xattrs, ROOT};
use crate::rootfs::decode_ahead::DecodeAhead;
use crate::rootfs::Rootfs;
use crate::serve::reads_in_flight::ReadsInFlight;
use crate::serve::record::FirstReads;

/// The image never changes under a mount, so the kernel may cache for long.
pub const TTL: Duration = Duration::from_secs(24 * 3600);
pub const MAX_READ: u32 = 1 << 20;

/// Attributes are made from the tree on each request rather than kept: a
/// `FileAttr` per node would cost ~120 bytes per entry for the mount's life.
pub struct ImageFs {
    rootfs: Arc<Rootfs>,
    /// Counted around each read, for the background fill to give way to.
    reads: Arc<ReadsInFlight>,
    /// `--record`: the files read, in the order of their first read.
    first_reads: Option<Arc<FirstReads>>,
    /// Told of each read, to decode the spans after it on the other cores.
    decode_ahead: Option<Arc<DecodeAhead>>,
    /// Whether the kernel takes ENOSYS to `open` and `opendir` as "never
    /// send them again" (FUSE_NO_OPEN_SUPPORT, Linux 4.19 and later).
    no_open: bool,
}

fn ino_of(id: NodeId) -> INodeNo {
    INodeNo(id as u64 + 1)
}

fn id_of(ino: INodeNo) -> NodeId {
    ino.0.saturating_sub(1).min(u32::MAX as u64) as NodeId
}

fn file_type(node: &Node) -> FileType {
    match node.kind {
        NodeKind::Dir { .. } => FileType::Directory,
        NodeKind::File { .. } => FileType::RegularFile,
        NodeKind::Symlink { .. } => FileType::Symlink,
        NodeKind::CharDevice { .. } => FileType::CharDevice,
        NodeKind::BlockDevice { .. } => FileType::BlockDevice,
        NodeKind::Fifo => FileType::NamedPipe,
    }
}

/// An image's mtime as a `SystemTime`; times no `SystemTime` can hold
/// (an image may say anything) read as the epoch rather than panicking.
fn time_of(secs: i64, nsec: u32) -> SystemTime {
    let nanos = Duration::from_nanos(u64::from(nsec.min(999_999_999)));
    let whole = if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(secs as u64))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))
    };
    whole
        .and_then(|t| t.checked_add(nanos))
        .unwrap_or(UNIX_EPOCH)
}

pub fn attr_of(id: NodeId, node: &Node) -> FileAttr {
    let size = node.size();
    let rdev = match node.kind {
        NodeKind::CharDevice { major, minor } | NodeKind::BlockDevice { major, minor } => {
            libc::makedev(major, minor) as u32
        }
        _ => 0,
    };
    let mtime = time_of(node.meta.mtime, node.meta.mtime_nsec);
    FileAttr {
        ino: ino_of(id),
        size,
        blocks: size.div_ceil(512),
        atime: mtime,
        mtime,
        ctime: mtime,
        crtime: mtime,
        kind: file_type(node),
        perm: (node.meta.mode & 0o7777) as u16,
        nlink: node.nlink,
        uid: node.meta.uid,
        gid: node.meta.gid,
        rdev,
        blksize: 4096,
        flags: 0,
    }
}

impl ImageFs {
    pub fn new(rootfs: Arc<Rootfs>) -> ImageFs {
        ImageFs::watched(rootfs, Arc::default(), None)
    }

    /// A filesystem whose reads are counted in `reads` while served and,
    /// with `first_reads`, recorded in the order of their first read.
    pub fn watched(
        rootfs: Arc<Rootfs>,
        reads: Arc<ReadsInFlight>,
        first_reads: Option<Arc<FirstReads>>,
    ) -> ImageFs {
        ImageFs {
            rootfs,
            reads,
            first_reads,
            decode_ahead: None,
            no_open: false,
        }
    }

    /// Tell `decode_ahead` of each read before it is served.
    pub fn with_decode_ahead(mut self, decode_ahead: Option<Arc<DecodeAhead>>) -> ImageFs {
        self.decode_ahead = decode_ahead;
        self
    }

    fn attr(&self, ino: INodeNo) -> Option<FileAttr> {
        Some(attr_of(id_of(ino), &self.node(ino)?))
    }

    fn node(&self, ino: INodeNo) -> Option<Node<'_>> {
        if ino.0 == 0 || ino.0 > u64::from(u32::MAX) {
            return None;
        }
        self.rootfs.tree.get(id_of(ino))
    }

    /// `.`, `..` and the children, in a stable order; offsets are positions.
    fn dir_entries(&self, ino: INodeNo) -> Option<Vec<(INodeNo, &[u8])>> {
        let node = self.node(ino)?;
        let children = node.children()?;
        let mut out = Vec::with_capacity(children.len() + 2);
        out.push((ino, b".".as_slice()));
        out.push((ino_of(node.parent), b"..".as_slice()));
        out.extend(children.iter().map(|(name, child)| (ino_of(child), name)));
        Some(out)
    }

    fn xattrs(&self, ino: INodeNo) -> Option<Xattrs<'_>> {
        Some(self.node(ino)?.meta.xattrs)
    }
}

/// Answer an xattr request: the size when asked for it, ERANGE when the
/// caller's buffer is too small.
/// Run one request's work so that a panic in it (a bug, or input nothing
/// checked) fails that request with an error rather than taking the worker
/// thread, and with it the mount, down. The shared state is only ever
/// locked through poison-tolerant guards, so the mount goes on serving.
fn guarded<T>(work: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)) {
        Ok(result) => result,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".to_string());
            Err(Error::Internal(format!("a request panicked: {what}")))
        }
    }
}

fn reply_sized(reply: ReplyXattr, size: u32, value: &[u8]) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(value);
    }
}

impl Filesystem for ImageFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let wanted = InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_CACHE_SYMLINKS
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_ASYNC_READ;
        let available = wanted & config.capabilities();
        let _ = config.add_capabilities(available);
        self.no_open = config
            .capabilities()
            .contains(InitFlags::FUSE_NO_OPEN_SUPPORT | InitFlags::FUSE_NO_OPENDIR_SUPPORT);
        let _ = config.set_max_readahead(MAX_READ);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(node) = self.node(parent) else {
            return reply.error(Errno::ENOENT);
        };
        let Some(children) = node.children() else {
            return reply.error(Errno::ENOTDIR);
        };
        match children.get(name.as_bytes()) {
            Some(child) => match self.attr(ino_of(child)) {
                Some(attr) => reply.entry(&TTL, &attr, Generation(0)),
                None => reply.error(Errno::EIO),
            },
            None => {
                // A negative entry: the kernel remembers the miss for TTL.
                let mut attr = attr_of(ROOT, &self.rootfs.tree.node(ROOT));
                attr.ino = INodeNo(0);
                reply.entry(&TTL, &attr, Generation(0));
            }
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.node(ino).map(|n| n.kind) {
            Some(NodeKind::Symlink { target }) => reply.data(target),
            Some(_) => reply.error(Errno::EINVAL),
            None => reply.error(Errno::ENOENT),
        }
    }

    /// Where the kernel can do without, the first `open` is answered
    /// ENOSYS: it then sends no OPEN, FLUSH or RELEASE for any file again,
    /// and keeps each file's pages as `FOPEN_KEEP_CACHE` would (its default
    /// for files it opens itself), saving three round trips a file. Writes
    /// never get here: the mount is read-only.
    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.node(ino).map(|n| n.kind) {
            None => reply.error(Errno::ENOENT),
            Some(NodeKind::Dir { .. }) => reply.error(Errno::EISDIR),
            Some(_) if flags.acc_mode() != OpenAccMode::O_RDONLY => reply.error(Errno::EROFS),
            Some(_) if self.no_open => reply.error(Errno::ENOSYS),
            Some(_) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
        }
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
        let Some(NodeKind::File { .. }) = self.node(ino).map(|n| n.kind) else {
            return reply.error(Errno::EINVAL);
        };
        let _in_flight = self.reads.begin();
        if let Some(first_reads) = &self.first_reads {
            first_reads.note(id_of(ino));
        }
        if let Some(decode_ahead) = &self.decode_ahead {
            decode_ahead.before_read(id_of(ino), offset);
        }
        let mut buf = vec![0u8; size.min(MAX_READ) as usize];
        match guarded(|| self.rootfs.read_file(id_of(ino), offset, &mut buf)) {
            Ok(n) => reply.data(&buf[..n]),
            Err(e) => {
                let path = self.rootfs.tree.path_of(id_of(ino)).map_or_else(
                    || format!("inode {}", ino.0),
                    |p| format!("/{}", String::from_utf8_lossy(&p)),
                );
                tracing::error!(file = %path, offset, "read of {path} failed: {e}");
                reply.error(Errno::EIO)
            }
        }
    }

    /// As `open`: where the kernel can do without, no OPENDIR or
    /// RELEASEDIR after the first, and it caches the entries as
    /// `FOPEN_CACHE_DIR` asks.
    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.node(ino).map(|n| n.kind) {
            Some(NodeKind::Dir { .. }) if self.no_open => reply.error(Errno::ENOSYS),
            Some(NodeKind::Dir { .. }) => reply.opened(
                FileHandle(0),
                FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR,
            ),
            Some(_) => reply.error(Errno::ENOTDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some(entries) = self.dir_entries(ino) else {
            return reply.error(Errno::ENOTDIR);
        };
        for (i, (child, name)) in entries.iter().enumerate().skip(offset as usize) {
            let kind = self.attr(*child).map_or(FileType::Directory, |a| a.kind);
            if reply.add(*child, i as u64 + 1, kind, OsStr::from_bytes(name)) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let Some(entries) = self.dir_entries(ino) else {
            return reply.error(Errno::ENOTDIR);
        };
        for (i, (child, name)) in entries.iter().enumerate().skip(offset as usize) {
            let Some(attr) = self.attr(*child) else {
                continue;
            };
            if reply.add(
                *child,
                i as u64 + 1,
                OsStr::from_bytes(name),
                &TTL,
                &attr,
                Generation(0),
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let bytes: u64 = self
            .rootfs
            .indexes
            .iter()
            .map(|i| i.uncompressed_size)
            .sum();
        reply.statfs(
            bytes.div_ceil(4096),
            0,
            0,
            self.rootfs.tree.len() as u64,
            0,
            4096,
            255,
            4096,
        );
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let Some(xattrs) = self.xattrs(ino) else {
            return reply.error(Errno::ENOENT);
        };
        match xattrs.get(name.as_bytes()) {
            Some(value) => reply_sized(reply, size, value),
            None => reply.error(Errno::ENODATA),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let Some(xattrs) = self.xattrs(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let mut names = Vec::new();
        for (k, _) in xattrs.iter() {
            names.extend_from_slice(k);
            names.push(0);
        }
        reply_sized(reply, size, &names);
    }

    /// Nothing is written, so a close has nothing to flush: answered
    /// quietly (fuser's default logs a warning at every close).
    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    /// No file here is a terminal or a device: ENOTTY, which is what a
    /// program asking `isatty` expects (fuser's default is ENOSYS and a
    /// warning per call, three per Python `open`).
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        reply.error(Errno::ENOTTY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_in_a_request_becomes_its_error_and_the_next_request_works() {
        let lock = std::sync::Mutex::new(0u32);
        let err = guarded(|| -> Result<u32> {
            let _held = lock.lock().unwrap();
            panic!("span table out of bounds");
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "internal error: a request panicked: span table out of bounds"
        );
        assert_eq!(err.errno(), libc::EIO);
        // The poisoned lock is still usable the way the reader uses its locks.
        let next = guarded(|| Ok(*lock.lock().unwrap_or_else(|p| p.into_inner()) + 1));
        assert_eq!(next.unwrap(), 1);
    }

    #[test]
    fn extreme_mtimes_do_not_panic() {
        for secs in [i64::MIN, i64::MIN + 1, -1, 0, i64::MAX] {
            let _ = time_of(secs, 999_999_999);
            let _ = time_of(secs, u32::MAX);
        }
        assert_eq!(
            time_of(-2, 750_000_000),
            UNIX_EPOCH - Duration::from_millis(1250)
        );
    }
}
