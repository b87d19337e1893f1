//! What the index keeps of one tar entry.

/// The type of a tar entry, after GNU/PAX extension headers are folded in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum EntryKind {
    File = 0,
    Dir = 1,
    Symlink = 2,
    Hardlink = 3,
    CharDevice = 4,
    BlockDevice = 5,
    Fifo = 6,
}

impl EntryKind {
    pub fn from_u8(v: u8) -> Option<EntryKind> {
        Some(match v {
            0 => EntryKind::File,
            1 => EntryKind::Dir,
            2 => EntryKind::Symlink,
            3 => EntryKind::Hardlink,
            4 => EntryKind::CharDevice,
            5 => EntryKind::BlockDevice,
            6 => EntryKind::Fifo,
            _ => return None,
        })
    }

    /// The `S_IFMT` bits for this kind (hardlinks take their target's).
    pub fn file_type_bits(self) -> u32 {
        match self {
            EntryKind::File | EntryKind::Hardlink => libc::S_IFREG,
            EntryKind::Dir => libc::S_IFDIR,
            EntryKind::Symlink => libc::S_IFLNK,
            EntryKind::CharDevice => libc::S_IFCHR,
            EntryKind::BlockDevice => libc::S_IFBLK,
            EntryKind::Fifo => libc::S_IFIFO,
        }
    }
}

/// One entry of a layer. Paths are raw bytes (Linux names need not be UTF-8),
/// normalised: no leading `/` or `./`, no `.` or `..` components, no trailing
/// `/`; the empty path is the root directory.
///
/// A layer can hold millions of entries, all alive while the union is built,
/// so this is kept small (72 bytes and the path): what few entries have (a
/// link target, device numbers, xattrs) is boxed in `extra`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TarEntry {
    pub path: Box<[u8]>,
    pub kind: EntryKind,
    /// Permission bits including setuid, setgid and sticky (`0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub size: u64,
    /// Where the entry's data starts in the uncompressed tar stream.
    pub data_offset: u64,
    /// `None` when the link target is empty, the device numbers are 0 and
    /// there are no xattrs (`set_extra` keeps it so, which `==` relies on).
    pub extra: Option<Box<EntryExtra>>,
}

/// The fields of a `TarEntry` that most entries leave empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EntryExtra {
    /// Symlink target as written, or the normalised hardlink target path.
    pub link: Vec<u8>,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl EntryExtra {
    fn is_empty(&self) -> bool {
        self.link.is_empty() && self.dev_major == 0 && self.dev_minor == 0 && self.xattrs.is_empty()
    }
}

impl TarEntry {
    /// Symlink target as written, or the normalised hardlink target path
    /// (empty for other kinds).
    pub fn link(&self) -> &[u8] {
        self.extra.as_deref().map_or(&[], |x| &x.link)
    }

    /// `(major, minor)` of a device; `(0, 0)` for other kinds.
    pub fn device(&self) -> (u32, u32) {
        self.extra
            .as_deref()
            .map_or((0, 0), |x| (x.dev_major, x.dev_minor))
    }

    pub fn xattrs(&self) -> &[(Vec<u8>, Vec<u8>)] {
        self.extra.as_deref().map_or(&[], |x| &x.xattrs)
    }

    /// Set the rare fields, boxing them only when one is not empty.
    pub fn set_extra(&mut self, extra: EntryExtra) {
        self.extra = (!extra.is_empty()).then(|| Box::new(extra));
    }

    /// Change the rare fields in place (`extra` stays `None` if they end up
    /// empty).
    pub fn update_extra(&mut self, change: impl FnOnce(&mut EntryExtra)) {
        let mut extra = self.extra.take().map(|b| *b).unwrap_or_default();
        change(&mut extra);
        self.set_extra(extra);
    }
}
