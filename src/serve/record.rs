//! `--record`: the order in which a mount's files are first read, kept
//! in the cache for `--prefetch recorded` to fill the data cache in.
//!
//! The record of an image is `CACHE/records/<manifest hex>`: UTF-8 text
//! (paths that are not UTF-8 are written lossily, and so are skipped when
//! read back), one line per regular file, its path relative to the image's
//! root with no leading `/`, in the order the files were first read. A
//! mount with `--record` writes it when it is unmounted, replacing the
//! one before (through a temporary file and a rename, so a reader sees a
//! whole record or the old one). Reading one is bounded
//! (`MAX_RECORD_BYTES`), and a path the image lacks is ignored.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::cache::{paths, Cache};
use crate::digest::Digest;
use crate::error::{IoContext, Result};
use crate::sys::atomic;
use crate::tree::{NodeId, NodeKind, Tree, ROOT};

/// The most of a record file that is read: past it, the rest is ignored.
pub const MAX_RECORD_BYTES: u64 = 64 << 20;

/// Where the record of the image with this manifest is kept.
pub fn record_path(cache: &Cache, manifest: &Digest) -> PathBuf {
    paths::first_reads_of(cache.root(), manifest)
}

/// The files a mount has read, in the order of their first read.
pub struct FirstReads {
    seen: Vec<AtomicBool>,
    order: Mutex<Vec<NodeId>>,
}

impl FirstReads {
    /// A recorder for a tree of `nodes` nodes.
    pub fn new(nodes: usize) -> FirstReads {
        FirstReads {
            seen: (0..nodes).map(|_| AtomicBool::new(false)).collect(),
            order: Mutex::new(Vec::new()),
        }
    }

    /// Note a read of `id`; only its first counts.
    pub fn note(&self, id: NodeId) {
        let Some(seen) = self.seen.get(id as usize) else {
            return;
        };
        if !seen.swap(true, Ordering::AcqRel) {
            self.order
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(id);
        }
    }

    /// The recorded files as paths of `tree`, in first-read order (a file
    /// with several names under its first name in walk order).
    pub fn paths(&self, tree: &Tree) -> Vec<Vec<u8>> {
        let order = self.order.lock().unwrap_or_else(|p| p.into_inner());
        let position: HashMap<NodeId, usize> =
            order.iter().enumerate().map(|(at, &id)| (id, at)).collect();
        let mut paths: Vec<Option<Vec<u8>>> = vec![None; order.len()];
        let _ = tree.visit(ROOT, |path, id| {
            if let Some(&at) = position.get(&id) {
                if paths[at].is_none() {
                    paths[at] = Some(path.to_vec());
                }
            }
            Ok::<(), ()>(())
        });
        paths.into_iter().flatten().collect()
    }
}

/// Write the record at `path`, atomically.
pub fn write_record(path: &Path, paths: &[Vec<u8>]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).at(dir)?;
    let mut text = Vec::new();
    for p in paths {
        // A newline in a name would split it: such a file is left out.
        if !p.contains(&b'\n') {
            text.extend_from_slice(String::from_utf8_lossy(p).as_bytes());
            text.push(b'\n');
        }
    }
    atomic::write_file(path, &text, true)
}

/// The regular files a record names, in its order, that `tree` has.
/// `None` when there is no record.
pub fn read_record(path: &Path, tree: &Tree) -> Result<Option<Vec<NodeId>>> {
    let file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(crate::error::Error::io(path, e)),
    };
    let mut text = Vec::new();
    file.take(MAX_RECORD_BYTES)
        .read_to_end(&mut text)
        .at(path)?;
    let files = text
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .filter_map(|line| tree.resolve(line, false).ok())
        .filter(|&id| matches!(tree.node(id).kind, NodeKind::File { .. }))
        .collect();
    Ok(Some(files))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merge::LayerEntries;
    use crate::tar::entry::{EntryKind, TarEntry};

    fn entry(path: &str, kind: EntryKind, offset: u64) -> TarEntry {
        let mut e = TarEntry::new(path.as_bytes(), kind);
        e.mode = 0o644;
        e.size = 1;
        e.data_offset = offset;
        e
    }

    fn tree() -> Tree {
        let entries = vec![
            entry("d", EntryKind::Dir, 0),
            entry("d/a", EntryKind::File, 512),
            entry("d/b", EntryKind::File, 1024),
            entry("c", EntryKind::File, 1536),
        ];
        Tree::build([LayerEntries {
            position: 0,
            digest: Digest::of(b"layer"),
            entries,
        }])
        .unwrap()
    }

    #[test]
    fn a_record_lists_first_reads_in_order_and_reads_back_what_the_tree_has() {
        let tree = tree();
        let id = |p: &str| tree.resolve(p.as_bytes(), false).unwrap();
        let reads = FirstReads::new(tree.len());
        for p in ["d/b", "c", "d/b", "d/a", "c"] {
            reads.note(id(p));
        }
        reads.note(NodeId::MAX);
        let paths = reads.paths(&tree);
        assert_eq!(paths, [b"d/b".to_vec(), b"c".to_vec(), b"d/a".to_vec()]);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records").join("abc");
        write_record(&path, &paths).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "d/b\nc\nd/a\n");
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );

        // Unknown paths and directories are ignored.
        std::fs::write(&path, "nothing/here\nd\nc\n\nd/a\n").unwrap();
        let files = read_record(&path, &tree).unwrap().unwrap();
        assert_eq!(files, [id("c"), id("d/a")]);
        assert_eq!(read_record(&dir.path().join("none"), &tree).unwrap(), None);
    }
}
