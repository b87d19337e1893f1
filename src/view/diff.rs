//! `ocimount diff`: the paths two images' merged trees add, remove and
//! change, from the indexes; file contents are read only where two files of
//! the same size come from different places.

use std::collections::HashMap;

use serde::Serialize;

use crate::error::Result;
use crate::merge::{NodeId, NodeKind, ROOT};
use crate::rootfs::Rootfs;

/// A path present in both images, and what differs about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Changed {
    pub path: String,
    /// Any of `type`, `content`, `link`, `device`, `mode`, `owner`.
    pub what: Vec<&'static str>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TreeDiff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<Changed>,
}

/// Compare `old` with `new`; paths are absolute, in byte order.
pub fn diff(old: &Rootfs, new: &Rootfs) -> Result<TreeDiff> {
    let mut before: HashMap<Vec<u8>, NodeId> = HashMap::new();
    old.tree
        .visit(ROOT, |path, id| {
            before.insert(path.to_vec(), id);
            Ok::<(), ()>(())
        })
        .ok();
    let mut out = TreeDiff::default();
    new.tree.visit(ROOT, |path, id| -> Result<()> {
        let shown = show(path);
        match before.remove(path) {
            None => out.added.push(shown),
            Some(old_id) => {
                let what = differences(old, old_id, new, id)?;
                if !what.is_empty() {
                    out.changed.push(Changed { path: shown, what });
                }
            }
        }
        Ok(())
    })?;
    out.removed = before.into_keys().map(|p| show(&p)).collect();
    out.removed.sort();
    Ok(out)
}

fn show(path: &[u8]) -> String {
    format!("/{}", String::from_utf8_lossy(path))
}

fn differences(old: &Rootfs, a: NodeId, new: &Rootfs, b: NodeId) -> Result<Vec<&'static str>> {
    let (na, nb) = (old.tree.node(a), new.tree.node(b));
    let mut what = Vec::new();
    match (&na.kind, &nb.kind) {
        (NodeKind::Dir { .. }, NodeKind::Dir { .. }) | (NodeKind::Fifo, NodeKind::Fifo) => {}
        (NodeKind::File { size: sa, .. }, NodeKind::File { size: sb, .. }) => {
            if sa != sb || !same_bytes(old, a, new, b, *sa)? {
                what.push("content");
            }
        }
        (NodeKind::Symlink { target: ta }, NodeKind::Symlink { target: tb }) => {
            if ta != tb {
                what.push("link");
            }
        }
        (
            NodeKind::CharDevice {
                major: ma,
                minor: ia,
            },
            NodeKind::CharDevice {
                major: mb,
                minor: ib,
            },
        )
        | (
            NodeKind::BlockDevice {
                major: ma,
                minor: ia,
            },
            NodeKind::BlockDevice {
                major: mb,
                minor: ib,
            },
        ) => {
            if (ma, ia) != (mb, ib) {
                what.push("device");
            }
        }
        _ => what.push("type"),
    }
    if na.meta.mode & 0o7777 != nb.meta.mode & 0o7777 {
        what.push("mode");
    }
    if (na.meta.uid, na.meta.gid) != (nb.meta.uid, nb.meta.gid) {
        what.push("owner");
    }
    Ok(what)
}

/// Whether two files of `size` bytes hold the same bytes: at once when they
/// are the same bytes of the same layer, else by reading both.
fn same_bytes(old: &Rootfs, a: NodeId, new: &Rootfs, b: NodeId, size: u64) -> Result<bool> {
    if let (
        NodeKind::File {
            layer: la,
            offset: oa,
            ..
        },
        NodeKind::File {
            layer: lb,
            offset: ob,
            ..
        },
    ) = (&old.tree.node(a).kind, &new.tree.node(b).kind)
    {
        let da = old.image.layers[*la as usize].digest;
        let db = new.image.layers[*lb as usize].digest;
        if da == db && oa == ob {
            return Ok(true);
        }
    }
    const CHUNK: usize = 1 << 20;
    let (mut ba, mut bb) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    let mut offset = 0;
    while offset < size {
        let n = old.read_file(a, offset, &mut ba)?;
        let m = new.read_file(b, offset, &mut bb)?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            break;
        }
        offset += n as u64;
    }
    Ok(true)
}
