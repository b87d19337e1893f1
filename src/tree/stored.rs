//! The merged tree kept in the cache, one file per manifest:
//! `CACHE/trees/sha256/<manifest hex>`, the flat form of `layout` as it
//! is, mapped read-only by whoever opens the image next. It names the
//! layer index files it was merged from, so a layer indexed again (from a
//! published index, say, which may list other entries) makes it stale; a
//! stale, damaged or foreign file is rebuilt, never read. Files are
//! replaced by rename, never written in place, so a mapping stays valid.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::layout::LayerRecord;
use super::Tree;
use crate::cache::paths;
use crate::digest::Digest;
use crate::error::Result;
use crate::sys::atomic;

/// Where the tree of the image with manifest `manifest` is kept.
pub fn path(cache_root: &Path, manifest: &Digest) -> PathBuf {
    paths::tree(cache_root, manifest)
}

/// The stored tree at `path`, if it was merged from exactly the layer
/// index files `layers` describes (digest, identity and stream length;
/// entry counts are the tree's own). The error says why not.
pub fn load(path: &Path, layers: &[LayerRecord]) -> std::result::Result<Tree, String> {
    let file = File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "none is stored yet".to_string(),
        _ => format!("cannot open it: {e}"),
    })?;
    // SAFETY: stored trees are only ever replaced by rename, never modified
    // in place, so the mapping cannot change under us.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| e.to_string())?;
    let tree = Tree::from_map(map)?;
    let same = tree.layers().len() == layers.len()
        && tree.layers().iter().zip(layers).all(|(a, b)| {
            a.digest == b.digest && a.index == b.index && a.stream_len == b.stream_len
        });
    if !same {
        return Err("it was merged from other layer indexes".to_string());
    }
    Ok(tree)
}

/// Keep `tree` at `path` for the next process, crash safe: written beside
/// it and renamed into place. Not synced: a file torn by a crash fails its
/// checksum and is merged again, which costs less than a sync on every
/// first open.
pub fn save(path: &Path, tree: &Tree) -> Result<()> {
    atomic::write_file(path, tree.as_bytes(), false)
}
