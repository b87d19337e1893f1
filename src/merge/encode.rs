//! Write a finished union (its drafts, numbered depth-first) in the flat
//! form of [`crate::tree::layout`]: one buffer of the exact size, filled
//! from the last node back while the drafts are popped and their vector
//! given back in steps, so the peak is one tree and a bit, not two (the
//! flat form of a layer of symlinks, names and targets, is larger than its
//! drafts' vector). Metadata the nodes share is written once.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::merge::draft::{Draft, DraftKind, DraftMeta};
use crate::merge::shrinking::Shrinking;
use crate::tree::layout::{self, meta, node as field, put_u32, put_u64, LayerRecord, Sections};
use crate::tree::layout::{DIRENT_LEN, META_LEN, NODE_LEN, XATTR_LEN};

pub(crate) fn encode(drafts: Vec<Draft>, layers: &[LayerRecord]) -> Result<Vec<u8>> {
    let too_big = || Error::Internal("the merged tree is too large to store".to_string());
    if drafts.len() > u32::MAX as usize || layers.len() > layout::LAYER_MASK as usize {
        return Err(too_big());
    }
    let (meta_of, metas) = shared_metadata(&drafts);
    let (mut dirents, mut strings) = (0usize, 0usize);
    for d in &drafts {
        match &d.kind {
            DraftKind::Dir { children } => {
                dirents += children.len();
                strings += children.keys().map(|k| k.len()).sum::<usize>();
            }
            kind @ DraftKind::Symlink { .. } => {
                strings += kind.symlink_target().unwrap_or_default().len()
            }
            _ => {}
        }
    }
    let xattrs: usize = metas.iter().map(|m| m.xattrs.len()).sum();
    strings += metas
        .iter()
        .flat_map(|m| m.xattrs.iter())
        .map(|(k, v)| k.len() + v.len())
        .sum::<usize>();
    let s = Sections::new(
        layers.len(),
        drafts.len(),
        metas.len(),
        dirents,
        xattrs,
        strings,
    )
    .ok_or_else(too_big)?;
    let mut out = vec![0u8; s.total_len()];
    for (i, layer) in layers.iter().enumerate() {
        layout::put_layer(&mut out, &s, i, layer);
    }
    let mut w = Cursors {
        dirent: 0,
        xattr: 0,
        string: 0,
    };
    for (i, m) in metas.iter().enumerate() {
        let at = s.metas + i * META_LEN;
        let first = w.xattr;
        for (name, value) in &m.xattrs {
            let name_at = w.string(&mut out, &s, name);
            let value_at = w.string(&mut out, &s, value);
            let e = s.xattrs + w.xattr * XATTR_LEN;
            put_u64(&mut out, e, name_at);
            put_u64(&mut out, e + 8, value_at);
            put_u32(&mut out, e + 16, name.len() as u32);
            put_u32(&mut out, e + 20, value.len() as u32);
            w.xattr += 1;
        }
        put_u32(&mut out, at + meta::MODE, m.mode & 0o7777);
        put_u32(&mut out, at + meta::UID, m.uid);
        put_u32(&mut out, at + meta::GID, m.gid);
        put_u32(&mut out, at + meta::MTIME_NSEC, m.mtime_nsec);
        put_u64(&mut out, at + meta::MTIME, m.mtime as u64);
        put_u64(&mut out, at + meta::XATTR_FIRST, first as u64);
        put_u32(&mut out, at + meta::XATTR_COUNT, m.xattrs.len() as u32);
    }
    drop(metas);
    // The nodes from the last one back: each takes its dirents and strings
    // from the end of what is left of their sections, which lays them out
    // as a pass from the first node would.
    let mut back = Cursors {
        dirent: dirents,
        xattr: xattrs,
        string: strings,
    };
    let mut nodes = Shrinking::from_back(drafts);
    while let Some(d) = nodes.next() {
        let id = nodes.len();
        let at = s.nodes + id * NODE_LEN;
        let (a, b, layer, type_bits) = match &d.kind {
            DraftKind::Dir { children } => {
                back.dirent -= children.len();
                back.string -= children.keys().map(|k| k.len()).sum::<usize>();
                let mut fill = back;
                for (name, &child) in children.iter() {
                    let name_at = fill.string(&mut out, &s, name);
                    let e = s.dirents + fill.dirent * DIRENT_LEN;
                    put_u64(&mut out, e, name_at);
                    put_u32(&mut out, e + 8, name.len() as u32);
                    put_u32(&mut out, e + 12, child);
                    fill.dirent += 1;
                }
                (back.dirent as u64, children.len() as u64, 0, libc::S_IFDIR)
            }
            DraftKind::File {
                layer,
                offset,
                size,
            } => (*offset, *size, *layer, libc::S_IFREG),
            kind @ DraftKind::Symlink { .. } => {
                let target = kind.symlink_target().unwrap_or_default();
                back.string -= target.len();
                let mut fill = back;
                (
                    fill.string(&mut out, &s, target),
                    target.len() as u64,
                    0,
                    libc::S_IFLNK,
                )
            }
            DraftKind::CharDevice { major, minor } => {
                (u64::from(*major), u64::from(*minor), 0, libc::S_IFCHR)
            }
            DraftKind::BlockDevice { major, minor } => {
                (u64::from(*major), u64::from(*minor), 0, libc::S_IFBLK)
            }
            DraftKind::Fifo => (0, 0, 0, libc::S_IFIFO),
        };
        put_u32(
            &mut out,
            at + field::KIND_LAYER,
            layout::kind_layer(type_bits, layer),
        );
        put_u32(&mut out, at + field::NLINK, d.nlink);
        put_u32(&mut out, at + field::PARENT, d.parent);
        put_u32(&mut out, at + field::META, meta_of[id]);
        put_u64(&mut out, at + field::A, a);
        put_u64(&mut out, at + field::B, b);
    }
    // What the nodes took back meets what the metadata took forward.
    if (back.dirent, back.xattr, back.string) != (0, w.xattr, w.string) {
        return Err(Error::Internal(
            "the merged tree's sections do not add up".to_string(),
        ));
    }
    layout::seal(&mut out, &s);
    Ok(out)
}

/// Each draft's metadata number, and the distinct metadata in number order
/// (first use first, so the same tree always encodes to the same bytes).
fn shared_metadata(drafts: &[Draft]) -> (Vec<u32>, Vec<DraftMeta>) {
    let mut numbers: HashMap<&DraftMeta, u32> = HashMap::new();
    let mut distinct: Vec<DraftMeta> = Vec::new();
    let meta_of = drafts
        .iter()
        .map(|d| {
            *numbers.entry(&d.meta).or_insert_with(|| {
                distinct.push(d.meta.clone());
                (distinct.len() - 1) as u32
            })
        })
        .collect();
    (meta_of, distinct)
}

/// The next free record of each variable section.
#[derive(Clone, Copy)]
struct Cursors {
    dirent: usize,
    xattr: usize,
    string: usize,
}

impl Cursors {
    /// Append `bytes` to the strings section; their offset in it.
    fn string(&mut self, out: &mut [u8], s: &Sections, bytes: &[u8]) -> u64 {
        let at = self.string;
        out[s.strings + at..s.strings + at + bytes.len()].copy_from_slice(bytes);
        self.string += bytes.len();
        at as u64
    }
}
