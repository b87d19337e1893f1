//! The union of a manifest's layers, per the image-spec's layer.md.
//!
//! Layers are applied bottom to top. In each layer, opaque markers and
//! whiteouts are applied first, since they only ever hide *lower* content,
//! then the entries in archive order (so a duplicate path: last wins).
//! Parent directories are resolved through symlinks inside the tree, as
//! umoci and containerd do, so `lib -> usr/lib` plus `lib/x` lands in
//! `usr/lib/x`. Hardlinks point at the same node, so they share an inode.

use super::changes::{ChangeLog, LayerChanges};
use super::draft::{DirChildren, Draft, DraftChildren, DraftKind, DraftMeta};
use super::shrinking::Shrinking;
use std::collections::HashSet;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::layer::format::IndexIdentity;
use crate::limits::{WALK_STEPS_BASE, WALK_STEPS_PER_ENTRY};
use crate::tar::entry::{EntryKind, TarEntry};
use crate::tree::layout::{LayerRecord, LayerSource};
use crate::tree::path::{spend, walk, NodeStore, Step};

pub use crate::tree::{Children, Meta, Node, NodeId, NodeKind, Tree, Xattrs, ROOT};

const OPAQUE: &[u8] = b".wh..wh..opq";
const WHITEOUT_PREFIX: &[u8] = b".wh.";
const AUFS_META_PREFIX: &[u8] = b".wh..wh.";

/// One layer's entries, with what error messages need to name it. The
/// builder consumes them: a symlink's node keeps its entry's allocation
/// rather than copy its target, so that a layer of symlinks holds each
/// target once while it is merged.
pub struct LayerEntries {
    pub position: usize,
    pub digest: Digest,
    pub entries: Vec<TarEntry>,
}

/// Builds a `Tree` one layer at a time, bottom first, consuming each
/// layer's entries as it applies them.
pub struct TreeBuilder {
    builder: Builder,
    layers: Vec<LayerRecord>,
}

impl Default for TreeBuilder {
    fn default() -> Self {
        TreeBuilder {
            layers: Vec::new(),
            builder: Builder {
                budget: 0,
                changes: None,
                nodes: vec![Draft {
                    kind: DraftKind::Dir {
                        children: DirChildren::default(),
                    },
                    meta: DraftMeta::implied_dir(),
                    nlink: 0,
                    parent: ROOT,
                }],
            },
        }
    }
}

impl TreeBuilder {
    /// A builder that also records what each layer adds, changes, deletes
    /// and hides (see [`TreeBuilder::changes`]).
    pub fn recording_changes() -> TreeBuilder {
        let mut b = TreeBuilder::default();
        let mut log = ChangeLog::default();
        log.node_made(ROOT);
        b.builder.changes = Some(log);
        b
    }

    /// What each layer applied so far did, bottom first (empty unless made
    /// with [`TreeBuilder::recording_changes`]).
    pub fn changes(&self) -> &[LayerChanges] {
        self.builder.changes.as_ref().map_or(&[], |c| &c.layers[..])
    }

    /// Apply the next layer up.
    pub fn apply(&mut self, layer: LayerEntries) -> Result<()> {
        if let Some(changes) = &mut self.builder.changes {
            changes.start_layer(layer.digest.to_string());
        }
        let (digest, entries) = (layer.digest, layer.entries.len() as u64);
        self.builder.apply(layer)?;
        self.layers.push(LayerRecord {
            digest,
            index: IndexIdentity::default(),
            entries,
            // No bound until the caller says (see `finish_with`).
            stream_len: u64::MAX,
        });
        Ok(())
    }

    /// The tree, in its flat form.
    pub fn finish(self) -> Result<Tree> {
        self.finish_with(&[])
    }

    /// The tree, recording where each layer's entries came from
    /// (`sources[i]` for layer `i`: its index file and stream length), as
    /// a stored tree must.
    pub fn finish_with(mut self, sources: &[LayerSource]) -> Result<Tree> {
        for (layer, source) in self.layers.iter_mut().zip(sources) {
            layer.index = source.index;
            layer.stream_len = source.stream_len;
        }
        let drafts = self.builder.finish();
        let bytes = crate::merge::encode::encode(drafts, &self.layers)?;
        Tree::from_bytes(bytes)
            .map_err(|e| Error::Internal(format!("the merged tree does not check: {e}")))
    }
}

impl Tree {
    /// Merge `layers`, bottom first.
    pub fn build(layers: impl IntoIterator<Item = LayerEntries>) -> Result<Tree> {
        let mut b = TreeBuilder::default();
        for layer in layers {
            b.apply(layer)?;
        }
        b.finish()
    }
}

/// The drafts of a finished builder, read-only: for `replaced_by_layer`
/// and `resolve_dir` without making anything.
struct DraftWalk<'a> {
    nodes: &'a [Draft],
    budget: &'a mut u64,
}

fn draft_step(nodes: &[Draft], id: NodeId) -> Step<'_> {
    match nodes.get(id as usize).map(|n| &n.kind) {
        Some(DraftKind::Dir { .. }) => Step::Dir,
        Some(kind @ DraftKind::Symlink { .. }) => {
            Step::Symlink(kind.symlink_target().unwrap_or_default())
        }
        _ => Step::Other,
    }
}

fn draft_child(nodes: &[Draft], dir: NodeId, name: &[u8]) -> Option<NodeId> {
    match &nodes.get(dir as usize)?.kind {
        DraftKind::Dir { children } => children.get(name).copied(),
        _ => None,
    }
}

impl NodeStore for DraftWalk<'_> {
    fn step_of(&self, id: NodeId) -> Step<'_> {
        draft_step(self.nodes, id)
    }
    fn child(&self, dir: NodeId, name: &[u8]) -> Option<NodeId> {
        draft_child(self.nodes, dir, name)
    }
    fn make_dir(&mut self, _: NodeId, _: &[u8]) -> Option<NodeId> {
        None
    }
    fn step(&mut self) -> std::result::Result<(), String> {
        spend(self.budget)
    }
}

struct Builder {
    nodes: Vec<Draft>,
    /// Walk steps this layer may still take.
    budget: u64,
    /// What each layer did, when asked for (`ocimount layers`).
    changes: Option<ChangeLog>,
}

impl NodeStore for Builder {
    fn step_of(&self, id: NodeId) -> Step<'_> {
        draft_step(&self.nodes, id)
    }
    fn child(&self, dir: NodeId, name: &[u8]) -> Option<NodeId> {
        draft_child(&self.nodes, dir, name)
    }
    fn step(&mut self) -> std::result::Result<(), String> {
        spend(&mut self.budget)
    }
    fn make_dir(&mut self, parent: NodeId, name: &[u8]) -> Option<NodeId> {
        let dir = self.new_node(
            DraftKind::Dir {
                children: DirChildren::default(),
            },
            DraftMeta::implied_dir(),
            parent,
        );
        self.dir_children_mut(parent).insert(name.into(), dir);
        Some(dir)
    }
}

pub(crate) enum Action<'e> {
    Opaque(&'e [u8]),
    Whiteout(&'e [u8], &'e [u8]),
    Skip,
    Add,
}

fn split_parent(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

/// `a`, `a/b`, `a/b/c` for `a/b/c`: the directories `replaced_by_layer`
/// looks up, outermost first.
fn prefixes(dir: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut end = 0;
    std::iter::from_fn(move || {
        if end >= dir.len() {
            return None;
        }
        end = dir[end..]
            .iter()
            .position(|&b| b == b'/')
            .map_or(dir.len(), |i| end + i);
        let prefix = &dir[..end];
        end += 1;
        Some(prefix)
    })
}

/// The directory entries of a layer that `replaced_by_layer` can ask about:
/// those a whiteout or an opaque marker of the layer lies under. (Not every
/// directory entry: a layer of a million directories and no whiteouts
/// needs no set of a million paths.)
fn whiteout_dirs_of(entries: &[TarEntry]) -> HashSet<&[u8]> {
    let mut under_whiteouts: HashSet<&[u8]> = HashSet::new();
    for e in entries {
        if let Ok(Action::Opaque(dir) | Action::Whiteout(dir, _)) = classify(e.path()) {
            under_whiteouts.extend(prefixes(dir));
        }
    }
    if under_whiteouts.is_empty() {
        return under_whiteouts;
    }
    entries
        .iter()
        .filter(|e| e.kind == EntryKind::Dir && under_whiteouts.contains(e.path()))
        .map(|e| e.path())
        .collect()
}

pub(crate) fn classify(path: &[u8]) -> std::result::Result<Action<'_>, String> {
    let (parent, name) = split_parent(path);
    if parent
        .split(|&b| b == b'/')
        .any(|c| c.starts_with(AUFS_META_PREFIX))
    {
        return Ok(Action::Skip);
    }
    if name == OPAQUE {
        return Ok(Action::Opaque(parent));
    }
    if name.starts_with(AUFS_META_PREFIX) {
        return Ok(Action::Skip);
    }
    if let Some(target) = name.strip_prefix(WHITEOUT_PREFIX) {
        if target.is_empty() || target == b"." || target == b".." {
            return Err(format!(
                "invalid whiteout {:?}: it names no file",
                String::from_utf8_lossy(name)
            ));
        }
        return Ok(Action::Whiteout(parent, target));
    }
    Ok(Action::Add)
}

impl Builder {
    fn apply(&mut self, layer: LayerEntries) -> Result<()> {
        let fail = |path: &[u8], reason: String| Error::LayerEntry {
            layer: layer.position,
            digest: layer.digest,
            path: String::from_utf8_lossy(path).into_owned(),
            reason,
        };
        self.budget = WALK_STEPS_BASE
            .saturating_add(WALK_STEPS_PER_ENTRY.saturating_mul(layer.entries.len() as u64));
        // Opaque markers and whiteouts hide lower content only: apply them
        // before anything this layer adds. (Entries are classified again in
        // the second pass rather than keeping a list as long as the layer.)
        let new_dirs = whiteout_dirs_of(&layer.entries);
        for e in &layer.entries {
            let action = classify(e.path()).map_err(|r| fail(e.path(), r))?;
            if let (Action::Opaque(_), Some(changes)) = (&action, &mut self.changes) {
                changes.opaque_dir();
            }
            if let Action::Opaque(dir) | Action::Whiteout(dir, _) = action {
                if self
                    .replaced_by_layer(dir, &new_dirs)
                    .map_err(|r| fail(e.path(), r))?
                {
                    continue;
                }
            }
            match action {
                Action::Opaque(dir) => {
                    if let Some(d) = self.resolve_dir(dir, false).map_err(|r| fail(dir, r))? {
                        if let Some(changes) = &mut self.changes {
                            changes.emptied(&self.nodes, d);
                        }
                        if let DraftKind::Dir { children } = &mut self.nodes[d as usize].kind {
                            children.clear();
                        }
                    }
                }
                Action::Whiteout(dir, name) => {
                    if let Some(d) = self.resolve_dir(dir, false).map_err(|r| fail(dir, r))? {
                        let mut removed = None;
                        if let DraftKind::Dir { children } = &mut self.nodes[d as usize].kind {
                            if let Some(map) = children.map_if_any() {
                                removed = map.remove(name);
                            }
                        }
                        if let (Some(id), Some(changes)) = (removed, &mut self.changes) {
                            changes.whited_out(&self.nodes, id);
                        }
                    }
                }
                _ => {}
            }
        }
        drop(new_dirs);
        // Taken in order from a list given back as it empties, so that the
        // layer's entries and the nodes made of them are not both whole.
        for e in Shrinking::in_order(layer.entries) {
            if matches!(classify(e.path()), Ok(Action::Add)) {
                self.add(layer.position, e, &fail)?;
            }
        }
        Ok(())
    }

    /// Place an entry (consumed: a symlink's node keeps its allocation);
    /// `fail` makes an error about its path.
    fn add(
        &mut self,
        position: usize,
        e: TarEntry,
        fail: &dyn Fn(&[u8], String) -> Error,
    ) -> Result<()> {
        if e.path().is_empty() {
            // The root itself (`./`): only a directory entry may change its
            // metadata; anything else naming the root is ignored.
            if e.kind == EntryKind::Dir {
                self.nodes[ROOT as usize].meta = DraftMeta::of(&e);
            }
            return Ok(());
        }
        let (parent_path, name) = split_parent(e.path());
        let parent = self
            .resolve_dir(parent_path, true)
            .and_then(|found| found.ok_or_else(|| "parent directory cannot be created".into()))
            .map_err(|r| fail(e.path(), r))?;
        let existing = self.dir_children(parent).get(name).copied();
        if let (EntryKind::Dir, Some(id)) = (e.kind, existing) {
            if matches!(self.nodes[id as usize].kind, DraftKind::Dir { .. }) {
                self.nodes[id as usize].meta = DraftMeta::of(&e);
                if let Some(changes) = &mut self.changes {
                    changes.entry_placed(&self.nodes, position, id, existing, 0, false);
                }
                return Ok(());
            }
        }
        // Owned before a symlink's entry is taken over.
        let name: Box<[u8]> = name.into();
        let (kind, size) = (e.kind, e.size);
        let node = match e.kind {
            EntryKind::Dir => self.new_node(
                DraftKind::Dir {
                    children: DirChildren::default(),
                },
                DraftMeta::of(&e),
                parent,
            ),
            EntryKind::Hardlink => {
                let node = self
                    .hardlink_target(e.link())
                    .map_err(|r| fail(e.path(), r))?;
                if node == parent {
                    let reason = "a hardlink to its own parent directory".to_string();
                    return Err(fail(e.path(), reason));
                }
                node
            }
            EntryKind::File => self.new_node(
                DraftKind::File {
                    layer: position as u32,
                    offset: e.data_offset,
                    size: e.size,
                },
                DraftMeta::of(&e),
                parent,
            ),
            EntryKind::Symlink => {
                let meta = DraftMeta::of(&e);
                self.new_node(DraftKind::symlink(e), meta, parent)
            }
            EntryKind::CharDevice => self.new_node(
                DraftKind::CharDevice {
                    major: e.device().0,
                    minor: e.device().1,
                },
                DraftMeta::of(&e),
                parent,
            ),
            EntryKind::BlockDevice => self.new_node(
                DraftKind::BlockDevice {
                    major: e.device().0,
                    minor: e.device().1,
                },
                DraftMeta::of(&e),
                parent,
            ),
            EntryKind::Fifo => self.new_node(DraftKind::Fifo, DraftMeta::of(&e), parent),
        };
        if let Some(changes) = &mut self.changes {
            let bytes = if kind == EntryKind::File { size } else { 0 };
            let is_link = kind == EntryKind::Hardlink;
            changes.entry_placed(&self.nodes, position, node, existing, bytes, is_link);
        }
        self.dir_children_mut(parent).insert(name, node);
        Ok(())
    }

    /// Whether some prefix of `dir` is a directory entry of this layer that
    /// replaces a lower non-directory (a symlink, say): then the layer's
    /// directory starts empty and whiteouts under it hide nothing.
    fn replaced_by_layer(
        &mut self,
        dir: &[u8],
        new_dirs: &HashSet<&[u8]>,
    ) -> std::result::Result<bool, String> {
        for prefix in prefixes(dir) {
            if new_dirs.contains(prefix) {
                let mut store = DraftWalk {
                    nodes: &self.nodes,
                    budget: &mut self.budget,
                };
                if let Some(id) = walk(&mut store, prefix, false, false)? {
                    if !matches!(self.nodes[id as usize].kind, DraftKind::Dir { .. }) {
                        return Ok(true);
                    }
                }
            }
        }
        Ok(false)
    }

    fn hardlink_target(&mut self, target: &[u8]) -> std::result::Result<NodeId, String> {
        let (dir, name) = split_parent(target);
        let shown = || String::from_utf8_lossy(target).into_owned();
        let dir = self
            .resolve_dir(dir, false)?
            .ok_or_else(|| format!("hardlink target {:?} does not exist", shown()))?;
        let id = self
            .dir_children(dir)
            .get(name)
            .copied()
            .ok_or_else(|| format!("hardlink target {:?} does not exist", shown()))?;
        if matches!(self.nodes[id as usize].kind, DraftKind::Dir { .. }) {
            return Err(format!("hardlink target {:?} is a directory", shown()));
        }
        Ok(id)
    }

    fn new_node(&mut self, kind: DraftKind, meta: DraftMeta, parent: NodeId) -> NodeId {
        self.nodes.push(Draft {
            kind,
            meta,
            nlink: 0,
            parent,
        });
        let id = (self.nodes.len() - 1) as NodeId;
        if let Some(changes) = &mut self.changes {
            changes.node_made(id);
        }
        id
    }

    fn dir_children(&self, dir: NodeId) -> &DraftChildren {
        match &self.nodes[dir as usize].kind {
            DraftKind::Dir { children } => children,
            _ => unreachable!("resolve_dir only returns directories"),
        }
    }

    fn dir_children_mut(&mut self, dir: NodeId) -> &mut DraftChildren {
        match &mut self.nodes[dir as usize].kind {
            DraftKind::Dir { children } => children.map_mut(),
            _ => unreachable!("resolve_dir only returns directories"),
        }
    }

    /// Resolve a directory path, following symlinks. With `create`, missing
    /// directories are made and non-directories in the way are replaced;
    /// without it, `None` means there is no such directory.
    fn resolve_dir(
        &mut self,
        path: &[u8],
        create: bool,
    ) -> std::result::Result<Option<NodeId>, String> {
        let found = if create {
            walk(self, path, true, true)?
        } else {
            let mut store = DraftWalk {
                nodes: &self.nodes,
                budget: &mut self.budget,
            };
            walk(&mut store, path, true, true)?
        };
        Ok(found.filter(|&id| matches!(self.nodes[id as usize].kind, DraftKind::Dir { .. })))
    }

    /// Keep only what is reachable, renumbered depth-first, with link counts.
    /// Nodes are permuted in place, so the peak is one tree, not two.
    fn finish(self) -> Vec<Draft> {
        const UNSEEN: NodeId = NodeId::MAX;
        let mut nodes = self.nodes;
        let mut new_id: Vec<NodeId> = vec![UNSEEN; nodes.len()];
        let mut parents: Vec<NodeId> = Vec::new();
        let mut names: Vec<u32> = Vec::new();
        let mut stack = vec![(ROOT, ROOT)];
        while let Some((old, parent)) = stack.pop() {
            let seen = new_id[old as usize];
            if seen != UNSEEN {
                names[seen as usize] += 1;
                continue;
            }
            let id = parents.len() as NodeId;
            new_id[old as usize] = id;
            parents.push(parent);
            names.push(1);
            if let DraftKind::Dir { children } = &nodes[old as usize].kind {
                for &child in children.values().rev() {
                    stack.push((child, id));
                }
            }
        }
        let reachable = parents.len();
        // Unreachable nodes go after the reachable ones, then are cut off.
        let unseen = new_id.iter_mut().filter(|id| **id == UNSEEN);
        for (next, id) in (reachable as NodeId..).zip(unseen) {
            *id = next;
        }
        for node in &mut nodes {
            if let Some(children) = match &mut node.kind {
                DraftKind::Dir { children } => children.map_if_any(),
                _ => None,
            } {
                for v in children.values_mut() {
                    *v = new_id[*v as usize];
                }
            }
        }
        // Apply the permutation: move each node to its new place.
        for i in 0..nodes.len() {
            while new_id[i] as usize != i {
                let j = new_id[i] as usize;
                nodes.swap(i, j);
                new_id.swap(i, j);
            }
        }
        nodes.truncate(reachable);
        nodes.shrink_to_fit();
        for (node, (&parent, &count)) in nodes.iter_mut().zip(parents.iter().zip(&names)) {
            node.parent = parent;
            node.nlink = count;
        }
        let subdirs: Vec<u32> = nodes
            .iter()
            .map(|n| match &n.kind {
                DraftKind::Dir { children } => children
                    .values()
                    .filter(|&&c| matches!(nodes[c as usize].kind, DraftKind::Dir { .. }))
                    .count() as u32,
                _ => 0,
            })
            .collect();
        for (node, sub) in nodes.iter_mut().zip(subdirs) {
            if matches!(node.kind, DraftKind::Dir { .. }) {
                node.nlink = 2 + sub;
            }
        }
        nodes
    }
}

// The sizes are those of a 64-bit target; 32-bit ones are smaller still.
#[cfg(all(test, target_pointer_width = "64"))]
mod tests {
    use super::*;

    /// A tree holds one `Draft` per name and is built from a layer's
    /// entries, given back only as they are applied: both are sized for
    /// millions (issue 11).
    #[test]
    fn nodes_and_entries_stay_small() {
        assert_eq!(std::mem::size_of::<TarEntry>(), 72);
        assert_eq!(std::mem::size_of::<DraftMeta>(), 32);
        assert_eq!(std::mem::size_of::<DraftKind>(), 24);
        assert_eq!(std::mem::size_of::<Draft>(), 64);
    }

    /// A symlink's node keeps its entry's allocation rather than copy the
    /// target (a layer of a million symlinks, issue 22).
    #[test]
    fn a_symlink_node_takes_over_its_entrys_allocation() {
        let entry = TarEntry::with_link(b"lib", b"usr/lib", EntryKind::Symlink);
        let allocation = entry.path().as_ptr();
        let mut b = TreeBuilder::default();
        b.apply(LayerEntries {
            position: 0,
            digest: Digest::of(b"layer"),
            entries: vec![entry],
        })
        .unwrap();
        let kind = &b.builder.nodes[1].kind;
        assert_eq!(kind.symlink_target(), Some(&b"usr/lib"[..]));
        assert!(matches!(kind, DraftKind::Symlink { names, .. } if names.as_ptr() == allocation));
        let tree = b.finish().unwrap();
        let id = tree.resolve(b"lib", false).unwrap();
        assert!(matches!(
            &tree.node(id).kind,
            NodeKind::Symlink { target } if &target[..] == b"usr/lib"
        ));
    }
}
