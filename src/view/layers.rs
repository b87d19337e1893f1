//! What each layer does to the image, from the layer indexes alone: the
//! paths it adds, changes and deletes (whiteouts, opaque directories), its
//! bytes, and the bytes of it that later layers hide ("wasted", as dive
//! shows it). The layers are replayed in order over a map of every path,
//! with the whiteout rules the union applies.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::layer::{EntryKind, LayerIndex};
use crate::merge::{classify, Action};

/// One layer's effect.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LayerChanges {
    pub digest: String,
    /// Paths that no lower layer had.
    pub added: u64,
    /// Paths a lower layer had, replaced here (a directory over a
    /// directory only merges, and is not counted).
    pub changed: u64,
    /// Paths of lower layers that this layer's whiteouts remove, each
    /// removed path counted once (a removed directory counts with its
    /// contents).
    pub deleted: u64,
    /// Directories made opaque here.
    pub opaque_dirs: u64,
    /// Bytes of the regular files this layer holds.
    pub bytes: u64,
    /// Of those, the bytes that later layers replace or delete.
    pub wasted: u64,
}

/// What the replay keeps of each path: the layer that put it there, its
/// size, and whether it is a directory.
struct Owner {
    layer: usize,
    size: u64,
    dir: bool,
}

/// The changes of every layer, bottom first.
pub fn layer_changes(indexes: &[LayerIndex]) -> Result<Vec<LayerChanges>> {
    let mut paths: BTreeMap<Vec<u8>, Owner> = BTreeMap::new();
    let mut out: Vec<LayerChanges> = indexes
        .iter()
        .map(|ix| LayerChanges {
            digest: ix.digest.to_string(),
            ..LayerChanges::default()
        })
        .collect();
    for (layer, index) in indexes.iter().enumerate() {
        let fail = |path: &[u8], reason: String| Error::LayerEntry {
            layer,
            digest: index.digest,
            path: String::from_utf8_lossy(path).into_owned(),
            reason,
        };
        // Whiteouts apply to the lower layers only, wherever they stand in
        // the tar: take them all first.
        for e in &index.entries {
            match classify(&e.path).map_err(|r| fail(&e.path, r))? {
                Action::Opaque(dir) => {
                    out[layer].opaque_dirs += 1;
                    let removed = remove_below(&mut paths, dir, false, layer, &mut out);
                    out[layer].deleted += removed;
                }
                Action::Whiteout(parent, name) => {
                    let target = join(parent, name);
                    let removed = remove_below(&mut paths, &target, true, layer, &mut out);
                    out[layer].deleted += removed;
                }
                Action::Skip | Action::Add => {}
            }
        }
        for e in &index.entries {
            if !matches!(classify(&e.path), Ok(Action::Add)) || e.path.is_empty() {
                continue;
            }
            let dir = e.kind == EntryKind::Dir;
            let size = if e.kind == EntryKind::File { e.size } else { 0 };
            out[layer].bytes += size;
            let previous = paths.insert(e.path.to_vec(), Owner { layer, size, dir });
            match previous {
                // Replaced within its own layer (the last entry wins).
                Some(p) if p.layer == layer => {
                    out[layer].wasted += p.size;
                }
                Some(p) if p.dir && dir => {}
                Some(p) => {
                    out[layer].changed += 1;
                    out[p.layer].wasted += p.size;
                    if p.dir {
                        // Anything replacing a directory removes what it held.
                        let gone = remove_below(&mut paths, &e.path, false, layer, &mut out);
                        out[layer].deleted += gone;
                    }
                }
                None => out[layer].added += 1,
            }
        }
    }
    Ok(out)
}

fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    if parent.is_empty() {
        name.to_vec()
    } else {
        [parent, b"/", name].concat()
    }
}

/// Remove `path` itself (when `itself`) and everything below it that lower
/// layers put there; their bytes count as wasted for their layers. Returns
/// how many paths went.
fn remove_below(
    paths: &mut BTreeMap<Vec<u8>, Owner>,
    path: &[u8],
    itself: bool,
    layer: usize,
    out: &mut [LayerChanges],
) -> u64 {
    let prefix: Vec<u8> = if path.is_empty() {
        Vec::new()
    } else {
        [path, b"/"].concat()
    };
    let doomed: Vec<Vec<u8>> = paths
        .range(prefix.clone()..)
        .take_while(|(p, _)| p.starts_with(&prefix))
        .filter(|(_, o)| o.layer < layer)
        .map(|(p, _)| p.clone())
        .chain(
            itself
                .then(|| path.to_vec())
                .filter(|p| paths.get(p).is_some_and(|o| o.layer < layer)),
        )
        .collect();
    for p in &doomed {
        if let Some(owner) = paths.remove(p) {
            out[owner.layer].wasted += owner.size;
        }
    }
    doomed.len() as u64
}
