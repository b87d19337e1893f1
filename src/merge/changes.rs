//! What each layer does to the image, recorded by the union itself while
//! it merges (so `ocimount layers` follows the very rules the mount does:
//! symlinked parents, opaque directories, whiteouts before adds): the paths
//! a layer adds, changes and deletes, its bytes, and the bytes of it that
//! later layers hide ("wasted", as dive shows it).

use std::collections::HashSet;

use serde::Serialize;

use super::draft::{Draft, DraftKind};
use crate::tree::NodeId;

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

/// A node no entry made: a directory the union implied for a path.
const IMPLIED: u32 = u32::MAX;

/// The union's side record of who made each node, and the changes so far.
#[derive(Default)]
pub(crate) struct ChangeLog {
    /// Per node: the layer whose entry made it (or last merged into it).
    made_by: Vec<u32>,
    /// File nodes whose bytes already count as wasted (a file with two
    /// names hidden twice is hidden once).
    wasted: HashSet<NodeId>,
    pub(crate) layers: Vec<LayerChanges>,
}

impl ChangeLog {
    pub(crate) fn start_layer(&mut self, digest: String) {
        self.layers.push(LayerChanges {
            digest,
            ..LayerChanges::default()
        });
    }

    fn current(&mut self) -> &mut LayerChanges {
        if self.layers.is_empty() {
            self.layers.push(LayerChanges::default());
        }
        let last = self.layers.len() - 1;
        &mut self.layers[last]
    }

    pub(crate) fn node_made(&mut self, id: NodeId) {
        let i = id as usize;
        if self.made_by.len() <= i {
            self.made_by.resize(i + 1, IMPLIED);
        }
        self.made_by[i] = IMPLIED;
    }

    fn made_by(&self, id: NodeId) -> u32 {
        self.made_by.get(id as usize).copied().unwrap_or(IMPLIED)
    }

    pub(crate) fn opaque_dir(&mut self) {
        self.current().opaque_dirs += 1;
    }

    /// The layer's entry at `id`, a new name (`existing` is what the name
    /// held before, if anything). `bytes`: the entry's file bytes.
    pub(crate) fn entry_placed(
        &mut self,
        nodes: &[Draft],
        layer: usize,
        id: NodeId,
        existing: Option<NodeId>,
        bytes: u64,
        is_link: bool,
    ) {
        self.current().bytes += bytes;
        match existing {
            Some(old) if old == id => {
                // A directory over a directory: merged, now this layer's.
                let was = self.made_by(old);
                if was == IMPLIED {
                    self.current().added += 1;
                }
            }
            Some(old) => {
                let was = self.made_by(old);
                if was == layer as u32 {
                    // Its own layer held the path: the last entry wins.
                    self.waste(nodes, old);
                } else if was == IMPLIED {
                    self.current().added += 1;
                } else {
                    self.current().changed += 1;
                    self.waste(nodes, old);
                }
                if matches!(nodes[old as usize].kind, DraftKind::Dir { .. }) {
                    // Anything replacing a directory removes what it held.
                    let gone = self.remove_children(nodes, old);
                    self.current().deleted += gone;
                }
            }
            None => self.current().added += 1,
        }
        // A hardlink's node stays its target's.
        if is_link && self.made_by(id) != IMPLIED {
            return;
        }
        let i = id as usize;
        if self.made_by.len() <= i {
            self.made_by.resize(i + 1, IMPLIED);
        }
        self.made_by[i] = layer as u32;
    }

    /// A whiteout took the name of `id` away: it and all below it go.
    pub(crate) fn whited_out(&mut self, nodes: &[Draft], id: NodeId) {
        let own = u64::from(self.made_by(id) != IMPLIED);
        self.waste(nodes, id);
        let below = self.remove_children(nodes, id);
        self.current().deleted += own + below;
    }

    /// An opaque marker emptied directory `id`.
    pub(crate) fn emptied(&mut self, nodes: &[Draft], id: NodeId) {
        let gone = self.remove_children(nodes, id);
        self.current().deleted += gone;
    }

    /// Count the names below directory `dir` that entries made, and waste
    /// their files' bytes.
    fn remove_children(&mut self, nodes: &[Draft], dir: NodeId) -> u64 {
        let mut count = 0;
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            let DraftKind::Dir { children } = &nodes[d as usize].kind else {
                continue;
            };
            for &child in children.values() {
                count += u64::from(self.made_by(child) != IMPLIED);
                self.waste(nodes, child);
                if matches!(nodes[child as usize].kind, DraftKind::Dir { .. }) {
                    stack.push(child);
                }
            }
        }
        count
    }

    fn waste(&mut self, nodes: &[Draft], id: NodeId) {
        if let DraftKind::File { layer, size, .. } = nodes[id as usize].kind {
            if self.wasted.insert(id) {
                if let Some(owner) = self.layers.get_mut(layer as usize) {
                    owner.wasted += size;
                }
            }
        }
    }
}
