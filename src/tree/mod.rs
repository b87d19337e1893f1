//! The merged tree, read where it lies: a flat, checksummed byte string
//! (see [`layout`]) built by `union` or mapped from the cache (see
//! [`stored`]). Reading a node decodes one fixed-size record, a lookup is a
//! binary search in its directory's sorted run, and nothing is allocated
//! per node, so a tree of a million names opens in milliseconds and costs
//! only the pages that are touched.

pub mod layout;
pub(crate) mod path;
pub mod stored;

use std::sync::Arc;

use crate::error::{Error, Result};
use layout::{meta, node as field, u32_at, u64_at, LayerRecord, Sections};
use layout::{DIRENT_LEN, META_LEN, NODE_LEN, XATTR_LEN};

pub type NodeId = u32;
pub const ROOT: NodeId = 0;

/// The merged tree. Node ids are dense, deterministic for a given image
/// (depth-first, names in byte order), and the root is `ROOT`.
#[derive(Clone)]
pub struct Tree {
    bytes: Arc<Backing>,
    sections: Sections,
    layers: Vec<LayerRecord>,
}

enum Backing {
    Owned(Vec<u8>),
    Mapped(memmap2::Mmap),
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Backing::Owned(v) => v,
            Backing::Mapped(m) => m,
        }
    }
}

impl std::fmt::Debug for Tree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tree")
            .field("nodes", &self.sections.node_count)
            .field("bytes", &self.as_bytes().len())
            .finish()
    }
}

/// One node, decoded from its record; borrowed names and targets point
/// into the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node<'t> {
    pub kind: NodeKind<'t>,
    pub meta: Meta<'t>,
    /// Names that refer to this node (for a directory: 2 + subdirectories).
    pub nlink: u32,
    /// The directory holding this node's first name (the root is its own).
    pub parent: NodeId,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeKind<'t> {
    Dir {
        children: Children<'t>,
    },
    /// Bytes `offset..offset+size` of layer `layer`'s uncompressed stream.
    File {
        layer: u32,
        offset: u64,
        size: u64,
    },
    Symlink {
        target: &'t [u8],
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

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta<'t> {
    /// Permission bits, setuid/setgid/sticky included.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub xattrs: Xattrs<'t>,
}

impl<'t> Node<'t> {
    pub fn file_type_bits(&self) -> u32 {
        match self.kind {
            NodeKind::Dir { .. } => libc::S_IFDIR,
            NodeKind::File { .. } => libc::S_IFREG,
            NodeKind::Symlink { .. } => libc::S_IFLNK,
            NodeKind::CharDevice { .. } => libc::S_IFCHR,
            NodeKind::BlockDevice { .. } => libc::S_IFBLK,
            NodeKind::Fifo => libc::S_IFIFO,
        }
    }

    pub fn size(&self) -> u64 {
        match &self.kind {
            NodeKind::File { size, .. } => *size,
            NodeKind::Symlink { target } => target.len() as u64,
            _ => 0,
        }
    }

    pub fn children(&self) -> Option<Children<'t>> {
        match &self.kind {
            NodeKind::Dir { children } => Some(*children),
            _ => None,
        }
    }
}

/// A directory's entries, sorted by name.
#[derive(Clone, Copy)]
pub struct Children<'t> {
    tree: &'t Tree,
    first: usize,
    count: usize,
}

impl<'t> Children<'t> {
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn entry(&self, i: usize) -> (&'t [u8], NodeId) {
        let bytes = self.tree.as_bytes();
        let at = self.tree.sections.dirents + (self.first + i) * DIRENT_LEN;
        let name = self
            .tree
            .string(u64_at(bytes, at), u64::from(u32_at(bytes, at + 8)));
        (name, u32_at(bytes, at + 12))
    }

    /// The child called `name`.
    pub fn get(&self, name: &[u8]) -> Option<NodeId> {
        let (mut lo, mut hi) = (0, self.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let (here, id) = self.entry(mid);
            match here.cmp(name) {
                std::cmp::Ordering::Equal => return Some(id),
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
            }
        }
        None
    }

    /// `(name, child)` in byte order of the names.
    pub fn iter(&self) -> ChildIter<'t> {
        ChildIter {
            children: *self,
            front: 0,
            back: self.count,
        }
    }
}

impl PartialEq for Children<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Children<'_> {}

impl std::fmt::Debug for Children<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(k, v)| (String::from_utf8_lossy(k), v)))
            .finish()
    }
}

pub struct ChildIter<'t> {
    children: Children<'t>,
    front: usize,
    back: usize,
}

impl<'t> Iterator for ChildIter<'t> {
    type Item = (&'t [u8], NodeId);
    fn next(&mut self) -> Option<Self::Item> {
        (self.front < self.back).then(|| {
            self.front += 1;
            self.children.entry(self.front - 1)
        })
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.back - self.front;
        (n, Some(n))
    }
}

impl DoubleEndedIterator for ChildIter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        (self.front < self.back).then(|| {
            self.back -= 1;
            self.children.entry(self.back)
        })
    }
}

impl ExactSizeIterator for ChildIter<'_> {}

/// A node's extended attributes, `(name, value)` in archive order.
#[derive(Clone, Copy)]
pub struct Xattrs<'t> {
    tree: &'t Tree,
    first: usize,
    count: usize,
}

impl<'t> Xattrs<'t> {
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn iter(&self) -> XattrIter<'t> {
        XattrIter {
            xattrs: *self,
            next: 0,
        }
    }

    /// The value of attribute `name`.
    pub fn get(&self, name: &[u8]) -> Option<&'t [u8]> {
        self.iter().find(|(k, _)| *k == name).map(|(_, v)| v)
    }
}

pub struct XattrIter<'t> {
    xattrs: Xattrs<'t>,
    next: usize,
}

impl<'t> Iterator for XattrIter<'t> {
    type Item = (&'t [u8], &'t [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        let Xattrs { tree, first, count } = self.xattrs;
        if self.next >= count {
            return None;
        }
        let bytes = tree.as_bytes();
        let at = tree.sections.xattrs + (first + self.next) * XATTR_LEN;
        self.next += 1;
        Some((
            tree.string(u64_at(bytes, at), u64::from(u32_at(bytes, at + 16))),
            tree.string(u64_at(bytes, at + 8), u64::from(u32_at(bytes, at + 20))),
        ))
    }
}

impl<'t> IntoIterator for &Xattrs<'t> {
    type Item = (&'t [u8], &'t [u8]);
    type IntoIter = XattrIter<'t>;
    fn into_iter(self) -> XattrIter<'t> {
        self.iter()
    }
}

impl<'t> IntoIterator for &Children<'t> {
    type Item = (&'t [u8], NodeId);
    type IntoIter = ChildIter<'t>;
    fn into_iter(self) -> ChildIter<'t> {
        self.iter()
    }
}

impl PartialEq for Xattrs<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Xattrs<'_> {}

impl PartialEq<Vec<(Vec<u8>, Vec<u8>)>> for Xattrs<'_> {
    fn eq(&self, other: &Vec<(Vec<u8>, Vec<u8>)>) -> bool {
        self.iter()
            .eq(other.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))
    }
}

impl std::fmt::Debug for Xattrs<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.iter()
                    .map(|(k, v)| (String::from_utf8_lossy(k), String::from_utf8_lossy(v))),
            )
            .finish()
    }
}

impl Tree {
    /// A tree from its flat bytes, checked whole (see `layout::validate`).
    pub fn from_bytes(bytes: Vec<u8>) -> std::result::Result<Tree, String> {
        Tree::from_backing(Backing::Owned(bytes))
    }

    /// A tree from a mapped file of the cache, checked whole.
    pub fn from_map(map: memmap2::Mmap) -> std::result::Result<Tree, String> {
        Tree::from_backing(Backing::Mapped(map))
    }

    fn from_backing(backing: Backing) -> std::result::Result<Tree, String> {
        let (sections, layers) = layout::validate(backing.bytes())?;
        Ok(Tree {
            bytes: Arc::new(backing),
            sections,
            layers,
        })
    }

    /// The flat form, as stored.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.bytes()
    }

    /// The layers it was merged from, bottom first.
    pub fn layers(&self) -> &[LayerRecord] {
        &self.layers
    }

    fn string(&self, off: u64, len: u64) -> &[u8] {
        let start = self.sections.strings + off as usize;
        &self.as_bytes()[start..start + len as usize]
    }

    pub fn node(&self, id: NodeId) -> Node<'_> {
        match self.get(id) {
            Some(node) => node,
            None => panic!("node {id} is not in the tree"),
        }
    }

    pub fn get(&self, id: NodeId) -> Option<Node<'_>> {
        let id = id as usize;
        if id >= self.sections.node_count {
            return None;
        }
        let bytes = self.as_bytes();
        let at = self.sections.nodes + id * NODE_LEN;
        let word = |f| u32_at(bytes, at + f);
        let (a, b) = (u64_at(bytes, at + field::A), u64_at(bytes, at + field::B));
        let kind_layer = word(field::KIND_LAYER);
        let kind = match layout::kind_of(kind_layer) {
            libc::S_IFDIR => NodeKind::Dir {
                children: Children {
                    tree: self,
                    first: a as usize,
                    count: b as usize,
                },
            },
            libc::S_IFREG => NodeKind::File {
                layer: layout::layer_of(kind_layer),
                offset: a,
                size: b,
            },
            libc::S_IFLNK => NodeKind::Symlink {
                target: self.string(a, b),
            },
            libc::S_IFCHR => NodeKind::CharDevice {
                major: a as u32,
                minor: b as u32,
            },
            libc::S_IFBLK => NodeKind::BlockDevice {
                major: a as u32,
                minor: b as u32,
            },
            _ => NodeKind::Fifo,
        };
        let m = self.sections.metas + word(field::META) as usize * META_LEN;
        let meta_word = |f| u32_at(bytes, m + f);
        Some(Node {
            kind,
            meta: Meta {
                mode: meta_word(meta::MODE),
                uid: meta_word(meta::UID),
                gid: meta_word(meta::GID),
                mtime: u64_at(bytes, m + meta::MTIME) as i64,
                mtime_nsec: meta_word(meta::MTIME_NSEC),
                xattrs: Xattrs {
                    tree: self,
                    first: u64_at(bytes, m + meta::XATTR_FIRST) as usize,
                    count: meta_word(meta::XATTR_COUNT) as usize,
                },
            },
            nlink: word(field::NLINK),
            parent: word(field::PARENT),
        })
    }

    pub fn len(&self) -> usize {
        self.sections.node_count
    }

    pub fn is_empty(&self) -> bool {
        self.sections.node_count == 0
    }

    /// Look a path up inside the image, following symlinks in the middle
    /// and, if `follow_last`, at the end (`stat` versus `lstat`).
    pub fn resolve(&self, path: &[u8], follow_last: bool) -> Result<NodeId> {
        let shown = || String::from_utf8_lossy(path).into_owned();
        let mut budget = u64::MAX;
        let mut store = path::TreeWalk {
            tree: self,
            budget: &mut budget,
        };
        match path::walk(&mut store, path, follow_last, false) {
            Ok(Some(id)) => Ok(id),
            Ok(None) => Err(Error::NotFound { path: shown() }),
            Err(reason) => Err(Error::BadPath {
                path: shown(),
                reason,
            }),
        }
    }

    pub fn child(&self, dir: NodeId, name: &[u8]) -> Option<NodeId> {
        self.get(dir)?.children()?.get(name)
    }

    /// A path of node `id` from the root (the first a walk meets, where
    /// hard links give it several): for messages about a file, so it walks
    /// the tree and is not for the paths that serve reads.
    pub fn path_of(&self, id: NodeId) -> Option<Vec<u8>> {
        let found = self.visit(
            ROOT,
            |path, at| {
                if at == id {
                    Err(path.to_vec())
                } else {
                    Ok(())
                }
            },
        );
        found.err()
    }

    /// Visit `from` and every name below it, depth-first in byte order (a
    /// directory before its children), with its path relative to `from`
    /// (empty for `from` itself). One path buffer is reused and the stack
    /// holds one iterator a level, so memory grows with the depth, not with
    /// the sum of every path: a tree 100,000 directories deep costs what a
    /// flat one does, and nothing recurses.
    pub fn visit<E>(
        &self,
        from: NodeId,
        mut f: impl FnMut(&[u8], NodeId) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        let mut path = Vec::new();
        f(&path, from)?;
        let mut stack: Vec<(ChildIter<'_>, usize)> = Vec::new();
        if let Some(children) = self.get(from).and_then(|n| n.children().map(|c| c.iter())) {
            stack.push((children, 0));
        }
        while let Some((children, base)) = stack.last_mut() {
            let base = *base;
            let Some((name, child)) = children.next() else {
                stack.pop();
                continue;
            };
            path.truncate(base);
            if base > 0 {
                path.push(b'/');
            }
            path.extend_from_slice(name);
            f(&path, child)?;
            if let Some(NodeKind::Dir { children }) = self.get(child).map(|n| n.kind) {
                stack.push((children.iter(), path.len()));
            }
        }
        Ok(())
    }

    /// Every path of the tree with its node, collected (see `visit`, which
    /// does not hold them all): for tests and small trees.
    pub fn walk(&self) -> Vec<(Vec<u8>, NodeId)> {
        let mut out = Vec::with_capacity(self.len());
        let _ = self.visit(ROOT, |path, id| {
            out.push((path.to_vec(), id));
            Ok::<(), ()>(())
        });
        out
    }
}
