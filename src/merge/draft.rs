//! The union's working nodes: a tree under construction, before it is
//! written in the flat form (`encode`). Its children maps and xattr lists
//! are boxed and optional, so the many nodes without them stay small.

use std::collections::BTreeMap;

use crate::tar::entry::TarEntry;
use crate::tree::NodeId;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct DraftMeta {
    /// Permission bits, setuid/setgid/sticky included.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub xattrs: DraftXattrs,
}

/// Extended attributes, `(name, value)` in archive order: 8 bytes and no
/// allocation for the many nodes that have none.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct DraftXattrs(Option<Box<XattrList>>);

type XattrList = Vec<(Vec<u8>, Vec<u8>)>;

impl DraftXattrs {
    pub(crate) fn new(list: XattrList) -> DraftXattrs {
        DraftXattrs((!list.is_empty()).then(|| Box::new(list)))
    }
}

impl std::ops::Deref for DraftXattrs {
    type Target = [(Vec<u8>, Vec<u8>)];
    fn deref(&self) -> &Self::Target {
        self.0.as_deref().map_or(&[], |v| v.as_slice())
    }
}

impl<'a> IntoIterator for &'a DraftXattrs {
    type Item = &'a (Vec<u8>, Vec<u8>);
    type IntoIter = std::slice::Iter<'a, (Vec<u8>, Vec<u8>)>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl PartialEq<XattrList> for DraftXattrs {
    fn eq(&self, other: &XattrList) -> bool {
        **self == **other
    }
}

impl DraftMeta {
    pub(super) fn of(e: &TarEntry) -> DraftMeta {
        DraftMeta {
            mode: e.mode & 0o7777,
            uid: e.uid,
            gid: e.gid,
            mtime: e.mtime,
            mtime_nsec: e.mtime_nsec,
            xattrs: DraftXattrs::new(e.xattrs().to_vec()),
        }
    }

    /// Directories a layer implies without listing them.
    pub(super) fn implied_dir() -> DraftMeta {
        DraftMeta {
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: 0,
            mtime_nsec: 0,
            xattrs: DraftXattrs::default(),
        }
    }
}

/// A directory's entries by name.
pub(crate) type DraftChildren = BTreeMap<Box<[u8]>, NodeId>;

static NO_CHILDREN: DraftChildren = BTreeMap::new();

/// A directory's children: 8 bytes, and no allocation while there are none
/// (a layer can hold a million empty directories). Reads see a `DraftChildren`.
#[derive(Clone, Default)]
pub(crate) struct DirChildren(Option<Box<DraftChildren>>);

impl DirChildren {
    /// The map, made on first use.
    pub(super) fn map_mut(&mut self) -> &mut DraftChildren {
        self.0.get_or_insert_with(Box::default)
    }

    /// The map if the directory has ever had a child.
    pub(super) fn map_if_any(&mut self) -> Option<&mut DraftChildren> {
        self.0.as_deref_mut()
    }

    pub(crate) fn clear(&mut self) {
        self.0 = None;
    }
}

impl std::ops::Deref for DirChildren {
    type Target = DraftChildren;
    fn deref(&self) -> &DraftChildren {
        self.0.as_deref().unwrap_or(&NO_CHILDREN)
    }
}

impl PartialEq for DirChildren {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for DirChildren {}

impl std::fmt::Debug for DirChildren {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum DraftKind {
    Dir {
        children: DirChildren,
    },
    /// Bytes `offset..offset+size` of layer `layer`'s uncompressed stream.
    File {
        layer: u32,
        offset: u64,
        size: u64,
    },
    /// The target is `names[target_at..]`: `names` is the allocation of
    /// the entry it came from (its path, then its target), taken over
    /// whole rather than copied (see [`DraftKind::symlink_target`]).
    Symlink {
        names: Box<[u8]>,
        target_at: u32,
    },
    CharDevice {
        major: u32,
        minor: u32,
    },
    BlockDevice {
        major: u32,
        minor: u32,
    },
    Fifo,
}

impl DraftKind {
    /// A symlink of this entry, keeping its allocation.
    pub(super) fn symlink(entry: TarEntry) -> DraftKind {
        let (names, target_at) = entry.into_names();
        DraftKind::Symlink { names, target_at }
    }

    /// A symlink's target.
    pub(crate) fn symlink_target(&self) -> Option<&[u8]> {
        match self {
            DraftKind::Symlink { names, target_at } => Some(&names[*target_at as usize..]),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Draft {
    pub kind: DraftKind,
    pub meta: DraftMeta,
    /// Names that refer to this node (for a directory: 2 + subdirectories).
    pub nlink: u32,
    /// The directory holding this node's first name (the root is its own).
    pub parent: NodeId,
}
