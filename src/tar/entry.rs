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
/// so this is kept small (72 bytes and one allocation): the path and the link
/// target share that allocation (the union's node for a symlink takes it
/// over whole, so a target is held once, not copied), and what few entries
/// have besides (device numbers, xattrs) is boxed in `extra`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TarEntry {
    /// The path, then the link target.
    names: Box<[u8]>,
    /// Where the path ends in `names` (and the link target starts).
    path_len: u32,
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
    /// `None` when the device numbers are 0 and there are no xattrs
    /// (`set_extra` keeps it so, which `==` relies on).
    pub extra: Option<Box<EntryExtra>>,
}

/// The fields of a `TarEntry` that most entries leave empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EntryExtra {
    pub dev_major: u32,
    pub dev_minor: u32,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl EntryExtra {
    fn is_empty(&self) -> bool {
        self.dev_major == 0 && self.dev_minor == 0 && self.xattrs.is_empty()
    }
}

/// `path` then `link` in one allocation, and the length of `path`.
fn join(path: &[u8], link: &[u8]) -> (Box<[u8]>, u32) {
    let path_len = u32::try_from(path.len()).expect("a path fits in 4 GiB");
    let mut names = Vec::with_capacity(path.len() + link.len());
    names.extend_from_slice(path);
    names.extend_from_slice(link);
    (names.into_boxed_slice(), path_len)
}

impl TarEntry {
    /// An entry of this path and kind, everything else zero or empty.
    pub fn new(path: &[u8], kind: EntryKind) -> TarEntry {
        TarEntry::with_link(path, b"", kind)
    }

    /// An entry of this path, link target and kind, everything else zero
    /// or empty.
    pub fn with_link(path: &[u8], link: &[u8], kind: EntryKind) -> TarEntry {
        let (names, path_len) = join(path, link);
        TarEntry {
            names,
            path_len,
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            mtime: 0,
            mtime_nsec: 0,
            size: 0,
            data_offset: 0,
            extra: None,
        }
    }

    pub fn path(&self) -> &[u8] {
        &self.names[..self.path_len as usize]
    }

    /// Symlink target as written, or the normalised hardlink target path
    /// (empty for other kinds).
    pub fn link(&self) -> &[u8] {
        &self.names[self.path_len as usize..]
    }

    pub fn set_path(&mut self, path: &[u8]) {
        (self.names, self.path_len) = join(path, self.link());
    }

    pub fn set_link(&mut self, link: &[u8]) {
        (self.names, self.path_len) = join(self.path(), link);
    }

    /// The entry's one allocation (its path, then its link target) and
    /// where the link target starts in it: what a symlink's node keeps.
    pub fn into_names(self) -> (Box<[u8]>, u32) {
        (self.names, self.path_len)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_and_the_link_target_share_one_allocation() {
        let mut e = TarEntry::with_link(b"usr/lib64", b"lib", EntryKind::Symlink);
        assert_eq!((e.path(), e.link()), (&b"usr/lib64"[..], &b"lib"[..]));
        e.set_link(b"../lib");
        e.set_path(b"lib64");
        assert_eq!((e.path(), e.link()), (&b"lib64"[..], &b"../lib"[..]));
        assert_eq!(
            e,
            TarEntry::with_link(b"lib64", b"../lib", EntryKind::Symlink)
        );
        let (names, at) = e.clone().into_names();
        assert_eq!((&names[..], at), (&b"lib64../lib"[..], 5));
        let dir = TarEntry::new(b"", EntryKind::Dir);
        assert_eq!((dir.path(), dir.link()), (&b""[..], &b""[..]));
    }
}
