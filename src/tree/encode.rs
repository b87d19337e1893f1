//! Write a finished union (its drafts, numbered depth-first) in the flat
//! form of [`super::layout`]: one buffer of the exact size, each draft's
//! children and attributes freed as soon as they are written, so the peak
//! is one tree and a bit, not two.

use super::layout::{self, node as field, put_u32, put_u64, LayerRecord, Sections};
use super::layout::{DIRENT_LEN, NODE_LEN, XATTR_LEN};
use crate::error::{Error, Result};
use crate::union::{Draft, DraftKind};

pub(crate) fn encode(drafts: Vec<Draft>, layers: &[LayerRecord]) -> Result<Vec<u8>> {
    let too_big = || Error::Internal("the merged tree is too large to store".to_string());
    let (mut dirents, mut xattrs, mut strings) = (0usize, 0usize, 0usize);
    for d in &drafts {
        match &d.kind {
            DraftKind::Dir { children } => {
                dirents += children.len();
                strings += children.keys().map(|k| k.len()).sum::<usize>();
            }
            DraftKind::Symlink { target } => strings += target.len(),
            _ => {}
        }
        xattrs += d.meta.xattrs.len();
        strings += d
            .meta
            .xattrs
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>();
    }
    if drafts.len() > u32::MAX as usize {
        return Err(too_big());
    }
    let s =
        Sections::new(layers.len(), drafts.len(), dirents, xattrs, strings).ok_or_else(too_big)?;
    let mut out = vec![0u8; s.total_len()];
    for (i, layer) in layers.iter().enumerate() {
        layout::put_layer(&mut out, &s, i, layer);
    }
    let mut w = Cursors {
        dirent: 0,
        xattr: 0,
        string: 0,
    };
    for (id, mut d) in drafts.into_iter().enumerate() {
        let at = s.nodes + id * NODE_LEN;
        let (a, b, layer, type_bits) = match &mut d.kind {
            DraftKind::Dir { children } => {
                let first = w.dirent;
                for (name, &child) in children.iter() {
                    let name_at = w.string(&mut out, &s, name);
                    let e = s.dirents + w.dirent * DIRENT_LEN;
                    put_u64(&mut out, e, name_at);
                    put_u32(&mut out, e + 8, name.len() as u32);
                    put_u32(&mut out, e + 12, child);
                    w.dirent += 1;
                }
                let count = children.len() as u64;
                children.clear();
                (first as u64, count, 0, libc::S_IFDIR)
            }
            DraftKind::File {
                layer,
                offset,
                size,
            } => (*offset, *size, *layer, libc::S_IFREG),
            DraftKind::Symlink { target } => (
                w.string(&mut out, &s, target),
                target.len() as u64,
                0,
                libc::S_IFLNK,
            ),
            DraftKind::CharDevice { major, minor } => {
                (u64::from(*major), u64::from(*minor), 0, libc::S_IFCHR)
            }
            DraftKind::BlockDevice { major, minor } => {
                (u64::from(*major), u64::from(*minor), 0, libc::S_IFBLK)
            }
            DraftKind::Fifo => (0, 0, 0, libc::S_IFIFO),
        };
        let xattr_first = w.xattr;
        for (name, value) in &d.meta.xattrs {
            let name_at = w.string(&mut out, &s, name);
            let value_at = w.string(&mut out, &s, value);
            let e = s.xattrs + w.xattr * XATTR_LEN;
            put_u64(&mut out, e, name_at);
            put_u64(&mut out, e + 8, value_at);
            put_u32(&mut out, e + 16, name.len() as u32);
            put_u32(&mut out, e + 20, value.len() as u32);
            w.xattr += 1;
        }
        put_u32(
            &mut out,
            at + field::MODE,
            type_bits | (d.meta.mode & 0o7777),
        );
        put_u32(&mut out, at + field::UID, d.meta.uid);
        put_u32(&mut out, at + field::GID, d.meta.gid);
        put_u32(&mut out, at + field::NLINK, d.nlink);
        put_u32(&mut out, at + field::PARENT, d.parent);
        put_u32(&mut out, at + field::MTIME_NSEC, d.meta.mtime_nsec);
        put_u64(&mut out, at + field::MTIME, d.meta.mtime as u64);
        put_u64(&mut out, at + field::A, a);
        put_u64(&mut out, at + field::B, b);
        put_u32(&mut out, at + field::LAYER, layer);
        put_u32(
            &mut out,
            at + field::XATTR_COUNT,
            d.meta.xattrs.len() as u32,
        );
        put_u64(&mut out, at + field::XATTR_FIRST, xattr_first as u64);
    }
    layout::seal(&mut out, &s);
    Ok(out)
}

/// The next free record of each variable section.
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
