//! `export`: the merged rootfs as one tar stream, like `crane export`, with
//! every type and attribute kept (hardlinks as links to the first name,
//! xattrs and sub-second mtimes as PAX records).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;

use crate::error::{Error, Result};
use crate::merge::{Node, NodeId, NodeKind, ROOT};
use crate::rootfs::decode_ahead::DecodeAhead;
use crate::rootfs::Rootfs;

#[derive(Debug, Default, Clone, Copy)]
pub struct ExportStats {
    pub entries: u64,
    pub file_bytes: u64,
}

/// Write the merged tree as one tar to `out`. With `decode_ahead`, the
/// spans the walk will read next are decoded on the other cores while it
/// writes (`crate::rootfs::decode_ahead`).
pub fn export(
    rootfs: &Rootfs,
    out: impl Write,
    decode_ahead: Option<&DecodeAhead>,
) -> Result<ExportStats> {
    let mut builder = tar::Builder::new(out);
    builder.mode(tar::HeaderMode::Complete);
    let mut first_name: HashMap<NodeId, Vec<u8>> = HashMap::new();
    let mut stats = ExportStats::default();
    let io_err = |e: io::Error| Error::io("export output", e);
    rootfs.tree.visit(ROOT, |path, id| -> Result<()> {
        let node = rootfs.tree.node(id);
        let mut name = if path.is_empty() {
            b".".to_vec()
        } else {
            path.to_vec()
        };
        let mut header = tar::Header::new_gnu();
        set_metadata(&mut header, &node);
        write_pax(&mut builder, &node).map_err(io_err)?;
        let name_os = OsStr::from_bytes(&name).to_owned();
        stats.entries += 1;
        if node.nlink > 1 && !matches!(node.kind, NodeKind::Dir { .. }) {
            if let Some(first) = first_name.get(&id) {
                header.set_entry_type(tar::EntryType::Link);
                header.set_size(0);
                builder
                    .append_link(&mut header, &name_os, OsStr::from_bytes(first))
                    .map_err(io_err)?;
                return Ok(());
            }
            first_name.insert(id, path.to_vec());
        }
        match &node.kind {
            NodeKind::Dir { .. } => {
                name.push(b'/');
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                builder
                    .append_data(&mut header, OsStr::from_bytes(&name), io::empty())
                    .map_err(io_err)?;
            }
            NodeKind::File { size, .. } => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(*size);
                let reader = FileReader {
                    rootfs,
                    decode_ahead,
                    id,
                    pos: 0,
                    error: None,
                };
                let mut reader = reader;
                let result = builder.append_data(&mut header, &name_os, &mut reader);
                if let Some(e) = reader.error.take() {
                    return Err(e);
                }
                result.map_err(io_err)?;
                stats.file_bytes += size;
            }
            NodeKind::Symlink { target } => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                builder
                    .append_link(&mut header, &name_os, OsStr::from_bytes(target))
                    .map_err(io_err)?;
            }
            NodeKind::CharDevice { major, minor } | NodeKind::BlockDevice { major, minor } => {
                let kind = if matches!(node.kind, NodeKind::CharDevice { .. }) {
                    tar::EntryType::Char
                } else {
                    tar::EntryType::Block
                };
                header.set_entry_type(kind);
                header.set_size(0);
                header.set_device_major(*major).map_err(io_err)?;
                header.set_device_minor(*minor).map_err(io_err)?;
                builder
                    .append_data(&mut header, &name_os, io::empty())
                    .map_err(io_err)?;
            }
            NodeKind::Fifo => {
                header.set_entry_type(tar::EntryType::Fifo);
                header.set_size(0);
                builder
                    .append_data(&mut header, &name_os, io::empty())
                    .map_err(io_err)?;
            }
        }
        Ok(())
    })?;
    builder
        .into_inner()
        .map_err(io_err)?
        .flush()
        .map_err(io_err)?;
    Ok(stats)
}

fn set_metadata(header: &mut tar::Header, node: &Node) {
    header.set_mode(node.meta.mode);
    header.set_uid(node.meta.uid as u64);
    header.set_gid(node.meta.gid as u64);
    header.set_mtime(node.meta.mtime.max(0) as u64);
}

/// Xattrs and a fractional mtime go in a PAX header before the entry.
fn write_pax<W: Write>(builder: &mut tar::Builder<W>, node: &Node) -> io::Result<()> {
    let mut records: Vec<(Vec<u8>, Vec<u8>)> = node
        .meta
        .xattrs
        .iter()
        .map(|(k, v)| ([b"SCHILY.xattr.".as_slice(), k].concat(), v.to_vec()))
        .collect();
    let (secs, nsec) = (node.meta.mtime, node.meta.mtime_nsec);
    if nsec != 0 || secs < 0 {
        // PAX times are a signed decimal: second -2 plus 0.75 s is "-1.25".
        let t = if secs < 0 && nsec > 0 {
            format!("-{}.{:09}", -(secs + 1), 1_000_000_000 - nsec)
        } else {
            format!("{secs}.{nsec:09}")
        };
        records.push((b"mtime".to_vec(), t.into_bytes()));
    }
    if records.is_empty() {
        return Ok(());
    }
    builder.append_pax_extensions(records.iter().map(|(k, v)| (k_str(k), v.as_slice())))
}

/// PAX keys are UTF-8 in practice; a key that is not is written lossily
/// rather than dropped.
fn k_str(k: &[u8]) -> &str {
    std::str::from_utf8(k).unwrap_or("SCHILY.xattr.invalid-utf8")
}

struct FileReader<'a> {
    rootfs: &'a Rootfs,
    decode_ahead: Option<&'a DecodeAhead>,
    id: NodeId,
    pos: u64,
    /// The real error, kept because `io::Read` can only carry a string.
    error: Option<Error>,
}

impl Read for FileReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(decode_ahead) = self.decode_ahead {
            decode_ahead.before_read(self.id, self.pos);
        }
        match self.rootfs.read_file(self.id, self.pos, buf) {
            Ok(n) => {
                self.pos += n as u64;
                Ok(n)
            }
            Err(e) => {
                let msg = e.to_string();
                self.error = Some(e);
                Err(io::Error::other(msg))
            }
        }
    }
}
