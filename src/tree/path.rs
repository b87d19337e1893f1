//! Path resolution inside a tree, as the kernel resolves inside a chroot:
//! shared by lookups in a finished tree and by the union while it builds.

use super::{NodeId, Tree, ROOT};
use crate::limits::MAX_SYMLINK_HOPS;
use std::collections::VecDeque;

/// What a walk needs to know of a node.
pub(crate) enum Step<'a> {
    Dir,
    Symlink(&'a [u8]),
    Other,
}

/// Where `walk` reads nodes and, when building, makes missing directories.
pub(crate) trait NodeStore {
    fn step_of(&self, id: NodeId) -> Step<'_>;
    /// The child `name` of directory `dir`; `None` also when `dir` is not
    /// a directory.
    fn child(&self, dir: NodeId, name: &[u8]) -> Option<NodeId>;
    /// Make directory `name` in `parent`, replacing what is there; `None`
    /// when this store is read-only.
    fn make_dir(&mut self, parent: NodeId, name: &[u8]) -> Option<NodeId>;
    /// Pay for one component of a walk; an error once the budget is spent.
    fn step(&mut self) -> Result<(), String>;
}

pub(crate) fn spend(budget: &mut u64) -> Result<(), String> {
    *budget = budget
        .checked_sub(1)
        .ok_or("resolving the layer's paths takes too many steps (long symlink chains?)")?;
    Ok(())
}

pub(crate) fn components(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
}

/// A finished tree, read-only.
pub(crate) struct TreeWalk<'a> {
    pub tree: &'a Tree,
    pub budget: &'a mut u64,
}

impl NodeStore for TreeWalk<'_> {
    fn step_of(&self, id: NodeId) -> Step<'_> {
        match self.tree.get(id).map(|n| n.kind) {
            Some(super::NodeKind::Dir { .. }) => Step::Dir,
            Some(super::NodeKind::Symlink { target }) => Step::Symlink(target),
            _ => Step::Other,
        }
    }
    fn child(&self, dir: NodeId, name: &[u8]) -> Option<NodeId> {
        self.tree.child(dir, name)
    }
    fn make_dir(&mut self, _: NodeId, _: &[u8]) -> Option<NodeId> {
        None
    }
    fn step(&mut self) -> Result<(), String> {
        spend(self.budget)
    }
}

/// Resolve `path` inside the tree as the kernel would inside a chroot:
/// symlinks in the middle are followed (absolute targets restart at the
/// root, `..` stops at it), the last component only if `follow_last`.
/// With `want_dir` every component must be a directory. Missing directories
/// (and non-directories in their way) are made if the store can; otherwise
/// the answer is `Ok(None)`.
pub(crate) fn walk(
    store: &mut impl NodeStore,
    path: &[u8],
    follow_last: bool,
    want_dir: bool,
) -> Result<Option<NodeId>, String> {
    let mut queue: VecDeque<Vec<u8>> = components(path).map(<[u8]>::to_vec).collect();
    let mut stack: Vec<NodeId> = vec![ROOT];
    let mut hops = 0;
    while let Some(comp) = queue.pop_front() {
        store.step()?;
        let cur = *stack.last().unwrap_or(&ROOT);
        if comp == b".." {
            if stack.len() > 1 {
                stack.pop();
            }
            continue;
        }
        if !matches!(store.step_of(cur), Step::Dir) {
            return Ok(None);
        }
        let child = store.child(cur, &comp);
        let more = !queue.is_empty();
        match child.map(|c| store.step_of(c)) {
            Some(Step::Symlink(target)) if follow_last || more => {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err("too many levels of symbolic links".to_string());
                }
                if target.first() == Some(&b'/') {
                    stack.truncate(1);
                }
                let parts: Vec<Vec<u8>> = components(target).map(<[u8]>::to_vec).collect();
                for part in parts.into_iter().rev() {
                    queue.push_front(part);
                }
            }
            Some(Step::Dir) => stack.extend(child),
            Some(_) if !more && !want_dir => stack.extend(child),
            // Missing, or a non-directory where a directory must be.
            _ => match store.make_dir(cur, &comp) {
                Some(dir) => stack.push(dir),
                None => return Ok(None),
            },
        }
    }
    Ok(stack.last().copied())
}
