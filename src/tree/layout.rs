//! The merged tree's flat form: one versioned, checksummed, little-endian
//! byte string that is used where it lies (a `Vec` just built, or a file of
//! the cache mapped read-only). Fixed-width records make any node, child
//! or attribute an offset away, so opening a tree costs one checksum and
//! one bounds pass over the records, and no allocation per node.
//!
//! ```text
//! header   64 bytes   magic, version, counts, body length and CRC-32
//! layers   64 each    digest, the layer index it was built from (length,
//!                     CRC-32), its entry count and its stream's length
//! nodes    32 each    file type and layer, nlink, parent, metadata number,
//!                     two kind words
//! metas    40 each    permission bits, owner, mtime, xattr range: shared by
//!                     every node that has the same (most files of a
//!                     package do), so a node stays 32 bytes
//! dirents  16 each    name (offset, length in strings), child; each
//!                     directory's run is sorted by name
//! xattrs   24 each    name and value (offset in strings), their lengths
//! strings             names, symlink targets, xattr names and values
//! ```

use crate::digest::Digest;
use crate::layer::format::IndexIdentity;
use crate::layer::spans::crc32;
use crate::limits::{MAX_NAME_BYTES, MAX_PATH_BYTES, MAX_XATTR_VALUE_BYTES};

pub const MAGIC: &[u8; 8] = b"OCIMTRE\0";
/// Bump whenever a record's layout or meaning changes, or the union rules
/// merge some image differently: a stored tree of another version is
/// rebuilt, never read (4: layers named by their index's SHA-256).
pub const VERSION: u32 = 4;
pub const HEADER_LEN: usize = 64;
pub const LAYER_LEN: usize = 96;
pub const NODE_LEN: usize = 32;
pub const META_LEN: usize = 40;
pub const DIRENT_LEN: usize = 16;
pub const XATTR_LEN: usize = 24;

/// Where each section starts and how many records it holds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sections {
    pub layers: usize,
    pub layer_count: usize,
    pub nodes: usize,
    pub node_count: usize,
    pub metas: usize,
    pub meta_count: usize,
    pub dirents: usize,
    pub dirent_count: usize,
    pub xattrs: usize,
    pub xattr_count: usize,
    pub strings: usize,
    pub strings_len: usize,
}

impl Sections {
    /// The layout of a tree with these counts, or `None` when it cannot be
    /// addressed on this machine.
    pub fn new(
        layer_count: usize,
        node_count: usize,
        meta_count: usize,
        dirent_count: usize,
        xattr_count: usize,
        strings_len: usize,
    ) -> Option<Sections> {
        let layers = HEADER_LEN;
        let nodes = layers.checked_add(layer_count.checked_mul(LAYER_LEN)?)?;
        let metas = nodes.checked_add(node_count.checked_mul(NODE_LEN)?)?;
        let dirents = metas.checked_add(meta_count.checked_mul(META_LEN)?)?;
        let xattrs = dirents.checked_add(dirent_count.checked_mul(DIRENT_LEN)?)?;
        let strings = xattrs.checked_add(xattr_count.checked_mul(XATTR_LEN)?)?;
        strings.checked_add(strings_len)?;
        Some(Sections {
            layers,
            layer_count,
            nodes,
            node_count,
            metas,
            meta_count,
            dirents,
            dirent_count,
            xattrs,
            xattr_count,
            strings,
            strings_len,
        })
    }

    pub fn total_len(&self) -> usize {
        self.strings + self.strings_len
    }
}

/// The file-type bits a node's mode may carry.
pub const KINDS: [u32; 6] = [
    libc::S_IFDIR,
    libc::S_IFREG,
    libc::S_IFLNK,
    libc::S_IFCHR,
    libc::S_IFBLK,
    libc::S_IFIFO,
];

/// Node record field offsets.
pub mod node {
    /// The file type (`S_IFMT` bits, shifted down 12) in the top 4 bits; a
    /// file's layer in the other 28 (zero for anything else).
    pub const KIND_LAYER: usize = 0;
    pub const NLINK: usize = 4;
    pub const PARENT: usize = 8;
    /// Its record in the metadata table.
    pub const META: usize = 12;
    /// File: stream offset. Dir: first dirent. Symlink: target offset in
    /// strings. Device: major.
    pub const A: usize = 16;
    /// File: size. Dir: child count. Symlink: target length. Device: minor.
    pub const B: usize = 24;
}

/// Metadata record field offsets.
pub mod meta {
    /// Permission bits, setuid/setgid/sticky included.
    pub const MODE: usize = 0;
    pub const UID: usize = 4;
    pub const GID: usize = 8;
    pub const MTIME_NSEC: usize = 12;
    pub const MTIME: usize = 16;
    pub const XATTR_FIRST: usize = 24;
    pub const XATTR_COUNT: usize = 32;
}

/// The file type of a node's `KIND_LAYER` word, as `S_IFMT` bits.
pub fn kind_of(word: u32) -> u32 {
    (word >> 28) << 12
}

/// The layer of a file node's `KIND_LAYER` word.
pub fn layer_of(word: u32) -> u32 {
    word & LAYER_MASK
}

pub const LAYER_MASK: u32 = (1 << 28) - 1;

/// A `KIND_LAYER` word.
pub fn kind_layer(type_bits: u32, layer: u32) -> u32 {
    ((type_bits >> 12) << 28) | (layer & LAYER_MASK)
}

pub fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

pub fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

pub fn put_u32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

pub fn put_u64(bytes: &mut [u8], at: usize, v: u64) {
    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// The layer a tree was merged from, as its layer table records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerRecord {
    pub digest: Digest,
    /// The layer index the entries came from: its body length and CRC-32
    /// (see `layer::format::peek`). A layer indexed again, from a published
    /// index say, may list other entries, so the tree is rebuilt.
    pub index: IndexIdentity,
    pub entries: u64,
    /// The layer's uncompressed stream length: every file of the layer lies
    /// inside it.
    pub stream_len: u64,
}

/// Where a layer's entries came from, as a stored tree records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerSource {
    pub index: IndexIdentity,
    /// The layer's uncompressed stream length.
    pub stream_len: u64,
}

/// Fill in the header (counts, body length and CRC) of a tree whose body
/// is written.
pub fn seal(bytes: &mut [u8], s: &Sections) {
    bytes[..8].copy_from_slice(MAGIC);
    put_u32(bytes, 8, VERSION);
    put_u32(bytes, 12, s.node_count as u32);
    put_u64(bytes, 16, s.dirent_count as u64);
    put_u64(bytes, 24, s.xattr_count as u64);
    put_u32(bytes, 32, s.layer_count as u32);
    put_u64(bytes, 40, s.strings_len as u64);
    put_u64(bytes, 48, (bytes.len() - HEADER_LEN) as u64);
    put_u64(bytes, 56, s.meta_count as u64);
    let crc = crc32(0, &bytes[HEADER_LEN..]);
    put_u32(bytes, 36, crc);
}

/// Check a tree's header, checksum and every record's ranges, so that the
/// accessors can index without bounds failing: a torn, bit-flipped or
/// foreign file is an error with a reason (and a rebuild), never a panic.
pub fn validate(bytes: &[u8]) -> Result<(Sections, Vec<LayerRecord>), String> {
    if bytes.len() < HEADER_LEN || &bytes[..8] != MAGIC {
        return Err("not an ocimount tree (bad magic)".to_string());
    }
    let version = u32_at(bytes, 8);
    if version != VERSION {
        return Err(format!(
            "tree format version {version}, this build reads {VERSION}"
        ));
    }
    let count = |v: u64| usize::try_from(v).map_err(|_| "a count is too large".to_string());
    let node_count = u32_at(bytes, 12) as usize;
    let dirent_count = count(u64_at(bytes, 16))?;
    let xattr_count = count(u64_at(bytes, 24))?;
    let layer_count = u32_at(bytes, 32) as usize;
    let crc = u32_at(bytes, 36);
    let strings_len = count(u64_at(bytes, 40))?;
    let body_len = u64_at(bytes, 48);
    let meta_count = count(u64_at(bytes, 56))?;
    if (HEADER_LEN as u64).checked_add(body_len) != Some(bytes.len() as u64) {
        return Err("tree is truncated or has trailing bytes".to_string());
    }
    let s = Sections::new(
        layer_count,
        node_count,
        meta_count,
        dirent_count,
        xattr_count,
        strings_len,
    )
    .filter(|s| s.total_len() == bytes.len())
    .ok_or("the tree's counts do not match its length")?;
    if crc32(0, &bytes[HEADER_LEN..]) != crc {
        return Err("tree checksum mismatch".to_string());
    }
    let layers: Vec<LayerRecord> = (0..layer_count)
        .map(|i| {
            let at = s.layers + i * LAYER_LEN;
            let mut digest = [0u8; 32];
            digest.copy_from_slice(&bytes[at..at + 32]);
            LayerRecord {
                digest: Digest::from_bytes(digest),
                index: IndexIdentity {
                    body_len: u64_at(bytes, at + 32),
                    sha256: bytes[at + 40..at + 72].try_into().unwrap_or([0; 32]),
                },
                entries: u64_at(bytes, at + 72),
                stream_len: u64_at(bytes, at + 80),
            }
        })
        .collect();
    check_records(bytes, &s, &layers)?;
    Ok((s, layers))
}

fn check_records(bytes: &[u8], s: &Sections, layers: &[LayerRecord]) -> Result<(), String> {
    let in_strings = |off: u64, len: u64| {
        off.checked_add(len)
            .is_some_and(|end| end <= s.strings_len as u64)
    };
    if s.node_count == 0 {
        return Err("the tree has no root".to_string());
    }
    for i in 0..s.dirent_count {
        let at = s.dirents + i * DIRENT_LEN;
        let (off, len) = (u64_at(bytes, at), u64::from(u32_at(bytes, at + 8)));
        // Names are components: a symlink's target may make a directory of
        // any of its components, so only the path limit bounds them.
        if len == 0 || len as usize > MAX_PATH_BYTES || !in_strings(off, len) {
            return Err(format!("directory entry {i}: bad name"));
        }
        let start = s.strings + off as usize;
        let name = &bytes[start..start + len as usize];
        if name == b"." || name == b".." || name.iter().any(|&b| b == b'/' || b == 0) {
            return Err(format!("directory entry {i}: bad name"));
        }
        if u32_at(bytes, at + 12) as usize >= s.node_count {
            return Err(format!("directory entry {i}: child out of range"));
        }
    }
    // Which directories have a name already: each has one, the root none.
    let mut named = vec![false; s.node_count];
    named[0] = true;
    for id in 0..s.node_count {
        let at = s.nodes + id * NODE_LEN;
        let field = |f| u64_at(bytes, at + f);
        let word = u32_at(bytes, at + node::KIND_LAYER);
        let kind = kind_of(word);
        let bad = |what: &str| Err(format!("node {id}: {what}"));
        if !KINDS.contains(&kind) || (kind != libc::S_IFREG && layer_of(word) != 0) {
            return bad("unknown kind");
        }
        if id == 0 && kind != libc::S_IFDIR {
            return bad("the root is not a directory");
        }
        if u32_at(bytes, at + node::PARENT) as usize >= s.node_count {
            return bad("parent out of range");
        }
        if u32_at(bytes, at + node::META) as usize >= s.meta_count {
            return bad("metadata out of range");
        }
        let (a, b) = (field(node::A), field(node::B));
        let ok = match kind {
            libc::S_IFDIR => {
                a.checked_add(b).is_some_and(|e| e <= s.dirent_count as u64)
                    && subdirs_are_below(bytes, s, id, a as usize, b as usize, &mut named)?
            }
            libc::S_IFREG => layers
                .get(layer_of(word) as usize)
                .is_some_and(|l| a.checked_add(b).is_some_and(|end| end <= l.stream_len)),
            libc::S_IFLNK => b as usize <= MAX_PATH_BYTES && in_strings(a, b),
            libc::S_IFCHR | libc::S_IFBLK => a <= u64::from(u32::MAX) && b <= u64::from(u32::MAX),
            _ => true,
        };
        if !ok {
            return bad("its contents lie outside the tree");
        }
    }
    for i in 0..s.meta_count {
        let at = s.metas + i * META_LEN;
        let bad = |what: &str| Err(format!("metadata {i}: {what}"));
        if u32_at(bytes, at + meta::MODE) & !0o7777 != 0 {
            return bad("unknown mode bits");
        }
        if u32_at(bytes, at + meta::MTIME_NSEC) > 999_999_999 {
            return bad("nanoseconds out of range");
        }
        let (first, n) = (
            u64_at(bytes, at + meta::XATTR_FIRST),
            u64::from(u32_at(bytes, at + meta::XATTR_COUNT)),
        );
        if first
            .checked_add(n)
            .is_none_or(|e| e > s.xattr_count as u64)
        {
            return bad("its xattrs lie outside the tree");
        }
    }
    for i in 0..s.xattr_count {
        let at = s.xattrs + i * XATTR_LEN;
        let (name_len, value_len) = (
            u64::from(u32_at(bytes, at + 16)),
            u64::from(u32_at(bytes, at + 20)),
        );
        if name_len as usize > MAX_NAME_BYTES
            || value_len as usize > MAX_XATTR_VALUE_BYTES
            || !in_strings(u64_at(bytes, at), name_len)
            || !in_strings(u64_at(bytes, at + 8), value_len)
        {
            return Err(format!("xattr {i}: outside the tree"));
        }
    }
    Ok(())
}

/// Whether `dir`'s `count` entries from dirent `first` are in strictly
/// increasing byte order of their names (lookups search them), and every
/// directory among them comes after it in the depth-first numbering, names
/// it as its parent and has no other name: then no walk can loop or branch
/// back, as a forged file could otherwise make it. (Every dirent is
/// range-checked before this.)
fn subdirs_are_below(
    bytes: &[u8],
    s: &Sections,
    dir: usize,
    first: usize,
    count: usize,
    named: &mut [bool],
) -> Result<bool, String> {
    let name = |i: usize| {
        let at = s.dirents + i * DIRENT_LEN;
        let start = s.strings + u64_at(bytes, at) as usize;
        &bytes[start..start + u32_at(bytes, at + 8) as usize]
    };
    for i in first..first + count {
        if i > first && name(i - 1) >= name(i) {
            return Err(format!("node {dir}: its entries are not in order"));
        }
        let child = u32_at(bytes, s.dirents + i * DIRENT_LEN + 12) as usize;
        let at = s.nodes + child * NODE_LEN;
        if kind_of(u32_at(bytes, at + node::KIND_LAYER)) != libc::S_IFDIR {
            continue;
        }
        if child <= dir || u32_at(bytes, at + node::PARENT) as usize != dir || named[child] {
            return Err(format!("node {child}: a directory out of place"));
        }
        named[child] = true;
    }
    Ok(true)
}

/// Write the layer table's record `i`.
pub fn put_layer(bytes: &mut [u8], s: &Sections, i: usize, layer: &LayerRecord) {
    let at = s.layers + i * LAYER_LEN;
    bytes[at..at + 32].copy_from_slice(layer.digest.as_bytes());
    put_u64(bytes, at + 32, layer.index.body_len);
    bytes[at + 40..at + 72].copy_from_slice(&layer.index.sha256);
    put_u64(bytes, at + 72, layer.entries);
    put_u64(bytes, at + 80, layer.stream_len);
    put_u64(bytes, at + 88, 0);
}
