//! The merged tree in its flat form (`src/tree/`): it keeps every node,
//! name and attribute the union made; a damaged or forged file is refused
//! with a reason, never read; the copy stored per manifest in the cache is
//! used only with the very layer indexes it was merged from, is rebuilt
//! when damaged or stale, and changes no byte any command prints.

mod support;

#[path = "support/hostile_blobs.rs"]
mod hostile_blobs;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use ocimount::layer::format;
use ocimount::layer::format::IndexIdentity;
use ocimount::layer::format::HEADER_LEN;
use ocimount::layer::spans::crc32;
use ocimount::merge::{LayerEntries, TreeBuilder};
use ocimount::tar::entry::{EntryKind, TarEntry};
use ocimount::tree::layout::{LayerRecord, LayerSource, Sections, DIRENT_LEN, NODE_LEN};
use ocimount::tree::{stored, NodeKind, Tree};
use ocimount::Digest;
use support::{corpus, ocimount, ok};

fn entry(path: &str, kind: EntryKind, mode: u32) -> TarEntry {
    let mut e = TarEntry::new(path.as_bytes(), kind);
    e.mode = mode;
    e
}

fn linked(path: &str, kind: EntryKind, target: &str) -> TarEntry {
    let mut e = entry(path, kind, 0o777);
    e.set_link(target.as_bytes());
    e
}

/// Two layers with every kind of node, owners, times, xattrs, a hardlink
/// and a whiteout.
fn sample_tree() -> Tree {
    let mut etc = entry("etc", EntryKind::Dir, 0o750);
    etc.uid = 7;
    etc.gid = 8;
    etc.mtime = -2;
    etc.mtime_nsec = 750_000_000;
    etc.update_extra(|x| {
        x.xattrs = vec![
            (b"user.b".to_vec(), b"2".to_vec()),
            (b"user.a".to_vec(), b"".to_vec()),
        ]
    });
    let mut passwd = entry("etc/passwd", EntryKind::File, 0o644);
    passwd.data_offset = 512;
    passwd.size = 33;
    let mut tty = entry("dev/tty", EntryKind::CharDevice, 0o666);
    tty.update_extra(|x| (x.dev_major, x.dev_minor) = (5, 0));
    let mut sda = entry("dev/sda", EntryKind::BlockDevice, 0o660);
    sda.update_extra(|x| (x.dev_major, x.dev_minor) = (8, 0));
    let lower = vec![
        etc,
        passwd,
        entry("etc/gone", EntryKind::File, 0o600),
        linked("etc/alias", EntryKind::Hardlink, "etc/passwd"),
        linked("lib", EntryKind::Symlink, "usr/lib"),
        entry("usr/lib/libc.so", EntryKind::File, 0o755),
        tty,
        sda,
        entry("run/fifo", EntryKind::Fifo, 0o600),
    ];
    let upper = vec![entry("etc/.wh.gone", EntryKind::File, 0o600)];
    let mut b = TreeBuilder::default();
    for (position, entries) in [lower, upper].into_iter().enumerate() {
        b.apply(LayerEntries {
            position,
            digest: Digest::of(&[position as u8]),
            entries,
        })
        .unwrap();
    }
    b.finish_with(&[
        LayerSource {
            index: IndexIdentity {
                body_len: 10,
                sha256: [1; 32],
            },
            stream_len: 4096,
        },
        LayerSource {
            index: IndexIdentity {
                body_len: 20,
                sha256: [2; 32],
            },
            stream_len: 1024,
        },
    ])
    .unwrap()
}

/// Every node as one line: path, kind, mode, owner, time, links, parent.
fn render(tree: &Tree) -> Vec<String> {
    tree.walk()
        .into_iter()
        .map(|(path, id)| {
            let n = tree.node(id);
            let kind = match n.kind {
                NodeKind::Dir { children } => format!("dir({})", children.len()),
                NodeKind::File {
                    layer,
                    offset,
                    size,
                } => format!("file L{layer}@{offset}+{size}"),
                NodeKind::Symlink { target } => {
                    format!("-> {}", String::from_utf8_lossy(target))
                }
                NodeKind::CharDevice { major, minor } => format!("c{major}:{minor}"),
                NodeKind::BlockDevice { major, minor } => format!("b{major}:{minor}"),
                NodeKind::Fifo => "fifo".to_string(),
            };
            let xattrs: Vec<String> = n
                .meta
                .xattrs
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{}={}",
                        String::from_utf8_lossy(k),
                        String::from_utf8_lossy(v)
                    )
                })
                .collect();
            format!(
                "/{} {kind} {:o} {}:{} t{}.{} n{} p{} [{}]",
                String::from_utf8_lossy(&path),
                n.meta.mode,
                n.meta.uid,
                n.meta.gid,
                n.meta.mtime,
                n.meta.mtime_nsec,
                n.nlink,
                n.parent,
                xattrs.join(",")
            )
        })
        .collect()
}

#[test]
fn the_flat_tree_keeps_every_node_name_and_attribute() {
    let tree = sample_tree();
    assert_eq!(
        render(&tree),
        [
            "/ dir(5) 755 0:0 t0.0 n6 p0 []",
            "/dev dir(2) 755 0:0 t0.0 n2 p0 []",
            "/dev/sda b8:0 660 0:0 t0.0 n1 p1 []",
            "/dev/tty c5:0 666 0:0 t0.0 n1 p1 []",
            "/etc dir(2) 750 7:8 t-2.750000000 n2 p0 [user.b=2,user.a=]",
            "/etc/alias file L0@512+33 644 0:0 t0.0 n2 p4 []",
            "/etc/passwd file L0@512+33 644 0:0 t0.0 n2 p4 []",
            "/lib -> usr/lib 777 0:0 t0.0 n1 p0 []",
            "/run dir(1) 755 0:0 t0.0 n2 p0 []",
            "/run/fifo fifo 600 0:0 t0.0 n1 p7 []",
            "/usr dir(1) 755 0:0 t0.0 n3 p0 []",
            "/usr/lib dir(1) 755 0:0 t0.0 n2 p9 []",
            "/usr/lib/libc.so file L0@0+0 755 0:0 t0.0 n1 p10 []",
        ]
    );
    assert_eq!(
        tree.layers(),
        [
            LayerRecord {
                digest: Digest::of(&[0]),
                index: IndexIdentity {
                    body_len: 10,
                    sha256: [1; 32]
                },
                entries: 9,
                stream_len: 4096
            },
            LayerRecord {
                digest: Digest::of(&[1]),
                index: IndexIdentity {
                    body_len: 20,
                    sha256: [2; 32]
                },
                entries: 1,
                stream_len: 1024
            },
        ]
    );
    // Lookups: by name in each directory's sorted run, and by path with
    // symlinks followed in the middle.
    let etc = tree.resolve(b"/etc", true).unwrap();
    assert_eq!(tree.child(etc, b"passwd"), tree.child(etc, b"alias"));
    assert_eq!(tree.child(etc, b"gone"), None);
    assert_eq!(tree.child(etc, b"passwe"), None);
    assert_eq!(
        tree.resolve(b"lib/libc.so", true).unwrap(),
        tree.resolve(b"usr/lib/libc.so", false).unwrap()
    );
    assert_eq!(
        tree.node(etc).meta.xattrs.get(b"user.b"),
        Some(b"2".as_slice())
    );
    // The same bytes read again are the same tree.
    let again = Tree::from_bytes(tree.as_bytes().to_vec()).unwrap();
    assert_eq!(render(&again), render(&tree));
    for id in 0..tree.len() as u32 {
        assert_eq!(again.node(id), tree.node(id));
    }
}

/// A symlink's target may make a directory of any of its components, and
/// a component may be longer than a name in a tar entry may be: the tree
/// keeps it (as the union always did), and it stores and reads back.
#[test]
fn a_directory_named_by_a_long_symlink_component_is_kept() {
    let long = "n".repeat(300);
    let entries = vec![
        linked("a", EntryKind::Symlink, &long),
        entry("a/f", EntryKind::File, 0o644),
    ];
    let tree = Tree::build([LayerEntries {
        position: 0,
        digest: Digest::of(b"layer"),
        entries,
    }])
    .unwrap();
    let again = Tree::from_bytes(tree.as_bytes().to_vec()).unwrap();
    let f = again
        .resolve(format!("{long}/f").as_bytes(), false)
        .unwrap();
    assert_eq!(again.resolve(b"a/f", true).unwrap(), f);
}

#[test]
fn every_flipped_bit_and_every_truncation_is_refused() {
    let bytes = sample_tree().as_bytes().to_vec();
    for at in 0..bytes.len() {
        for bit in [0x01u8, 0x80] {
            let mut bad = bytes.clone();
            bad[at] ^= bit;
            assert!(
                Tree::from_bytes(bad).is_err(),
                "a flip of byte {at} was not noticed"
            );
        }
    }
    for len in 0..bytes.len() {
        assert!(Tree::from_bytes(bytes[..len].to_vec()).is_err(), "{len}");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(
        Tree::from_bytes(longer).unwrap_err(),
        "tree is truncated or has trailing bytes"
    );
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

fn sections_of(bytes: &[u8]) -> Sections {
    Sections::new(
        u32_at(bytes, 32) as usize,
        u32_at(bytes, 12) as usize,
        u64_at(bytes, 56) as usize,
        u64_at(bytes, 16) as usize,
        u64_at(bytes, 24) as usize,
        u64_at(bytes, 40) as usize,
    )
    .unwrap()
}

/// Change `bytes` with `edit` and give them a valid checksum again: what
/// a forger (or a bug) would write.
fn forged(bytes: &[u8], edit: impl FnOnce(&mut Vec<u8>, &Sections)) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let s = sections_of(&out);
    edit(&mut out, &s);
    let crc = crc32(0, &out[64..]);
    out[36..40].copy_from_slice(&crc.to_le_bytes());
    out
}

#[test]
fn a_forged_tree_with_a_valid_checksum_is_refused_by_its_ranges() {
    let bytes = sample_tree().as_bytes().to_vec();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "directory entry 0: child out of range",
            forged(&bytes, |b, s| {
                let n = s.node_count as u32;
                b[s.dirents + 12..s.dirents + 16].copy_from_slice(&n.to_le_bytes());
            }),
        ),
        (
            // A loop back to the root: a walk would never end.
            "node 0: a directory out of place",
            forged(&bytes, |b, s| {
                b[s.dirents + 12..s.dirents + 16].copy_from_slice(&0u32.to_le_bytes());
            }),
        ),
        (
            // Two names for one directory (`/dev` again as `/etc`).
            "node 1: a directory out of place",
            forged(&bytes, |b, s| {
                let at = s.dirents + DIRENT_LEN;
                b[at + 12..at + 16].copy_from_slice(&1u32.to_le_bytes());
            }),
        ),
        (
            // `/etc/passwd` (node 5, layer 0) past the layer's 4096 bytes.
            "node 5: its contents lie outside the tree",
            forged(&bytes, |b, s| {
                let at = s.nodes + 5 * NODE_LEN + 16;
                b[at..at + 8].copy_from_slice(&4070u64.to_le_bytes());
            }),
        ),
        (
            // The root's `dev` and `etc` swapped: lookups would miss.
            "node 0: its entries are not in order",
            forged(&bytes, |b, s| {
                let (first, second) = (s.dirents, s.dirents + DIRENT_LEN);
                let a = b[first..first + DIRENT_LEN].to_vec();
                let c = b[second..second + DIRENT_LEN].to_vec();
                b[first..first + DIRENT_LEN].copy_from_slice(&c);
                b[second..second + DIRENT_LEN].copy_from_slice(&a);
            }),
        ),
        (
            // A name holding `/`: `dev` becomes `d/v`.
            "directory entry 0: bad name",
            forged(&bytes, |b, s| {
                let off = u64::from_le_bytes(b[s.dirents..s.dirents + 8].try_into().unwrap());
                b[s.strings + off as usize + 1] = b'/';
            }),
        ),
        (
            "directory entry 1: bad name",
            forged(&bytes, |b, s| {
                let at = s.dirents + DIRENT_LEN;
                b[at..at + 8].copy_from_slice(&(s.strings_len as u64).to_le_bytes());
            }),
        ),
        (
            "node 0: the root is not a directory",
            forged(&bytes, |b, s| {
                let file = 8u32 << 28; // S_IFREG >> 12, in the top 4 bits
                b[s.nodes..s.nodes + 4].copy_from_slice(&file.to_le_bytes());
            }),
        ),
        (
            "node 0: its contents lie outside the tree",
            forged(&bytes, |b, s| {
                // The root's children run past the last dirent.
                let at = s.nodes + 24;
                b[at..at + 8].copy_from_slice(&(s.dirent_count as u64 + 1).to_le_bytes());
            }),
        ),
        (
            "node 3: parent out of range",
            forged(&bytes, |b, s| {
                let at = s.nodes + 3 * NODE_LEN + 8;
                b[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
            }),
        ),
        (
            "node 2: unknown kind",
            forged(&bytes, |b, s| {
                let at = s.nodes + 2 * NODE_LEN;
                b[at..at + 4].copy_from_slice(&(0xfu32 << 28).to_le_bytes());
            }),
        ),
        (
            "node 2: metadata out of range",
            forged(&bytes, |b, s| {
                let at = s.nodes + 2 * NODE_LEN + 12;
                b[at..at + 4].copy_from_slice(&(s.meta_count as u32).to_le_bytes());
            }),
        ),
        (
            "metadata 0: unknown mode bits",
            forged(&bytes, |b, s| {
                b[s.metas..s.metas + 4].copy_from_slice(&0o170_755u32.to_le_bytes());
            }),
        ),
        (
            "the tree's counts do not match its length",
            forged(&bytes, |b, _| {
                b[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
            }),
        ),
        (
            "tree format version 9, this build reads 4",
            forged(&bytes, |b, _| b[8..12].copy_from_slice(&9u32.to_le_bytes())),
        ),
    ];
    for (reason, bad) in cases {
        assert_eq!(Tree::from_bytes(bad).unwrap_err(), reason);
    }
}

#[test]
fn a_stored_tree_is_used_only_with_the_layer_indexes_it_was_merged_from() {
    let dir = tempfile::tempdir().unwrap();
    let tree = sample_tree();
    let path = stored::path(dir.path(), &Digest::of(b"manifest"));
    stored::save(&path, &tree).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), tree.as_bytes());
    let records = tree.layers().to_vec();
    let loaded = stored::load(&path, &records).unwrap();
    assert_eq!(render(&loaded), render(&tree));

    let mut other_index = records.clone();
    other_index[1].index.sha256[0] ^= 1;
    let mut other_layer = records.clone();
    other_layer[0].digest = Digest::of(b"another layer");
    for stale in [other_index, other_layer, records[..1].to_vec()] {
        assert_eq!(
            stored::load(&path, &stale).unwrap_err(),
            "it was merged from other layer indexes"
        );
    }
    std::fs::remove_file(&path).unwrap();
    assert!(stored::load(&path, &records).is_err());
    // Nothing is left beside it.
    assert_eq!(
        std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
        0
    );
}

// --------------------------------------------------------- through the CLI

/// The stored tree of the corpus image `name` in `cache`.
fn stored_tree_file(cache: &Path) -> PathBuf {
    let dir = cache.join("trees/sha256");
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

#[test]
fn a_second_open_reads_the_stored_tree_and_prints_the_same_bytes() {
    let image = corpus().image("debian-gzip");
    let layout = image.layout.to_str().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let merged_export = ocimount(cache.path(), &["export", "-o", "-", layout]);
    let merged_ls = ok(&ocimount(cache.path(), &["ls", "-lR", layout, "/"]));
    let file = stored_tree_file(cache.path());
    let (ino, bytes) = (
        std::fs::metadata(&file).unwrap().ino(),
        std::fs::read(&file).unwrap(),
    );
    // The second export and listing come from the stored tree: the file
    // is not written again.
    let stored_export = ocimount(cache.path(), &["export", "-o", "-", layout]);
    let stored_ls = ok(&ocimount(cache.path(), &["ls", "-lR", layout, "/"]));
    ok(&merged_export);
    ok(&stored_export);
    assert!(merged_export.stdout.len() > 1 << 20);
    assert!(merged_export.stdout == stored_export.stdout);
    assert_eq!(merged_ls, stored_ls);
    assert_eq!(std::fs::metadata(&file).unwrap().ino(), ino);
    assert_eq!(std::fs::read(&file).unwrap(), bytes);
}

#[test]
fn a_damaged_stored_tree_is_merged_again_and_replaced() {
    let image = corpus().image("debian-gzip");
    let layout = image.layout.to_str().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let listing = ok(&ocimount(cache.path(), &["ls", "-lR", layout, "/etc"]));
    let file = stored_tree_file(cache.path());
    let good = std::fs::read(&file).unwrap();
    let middle = good.len() / 2;
    let mut flipped = good.clone();
    flipped[middle] ^= 0x10;
    let damages: Vec<(&str, Vec<u8>)> = vec![
        ("a flipped bit", flipped),
        ("a torn write", good[..middle].to_vec()),
        ("an empty file", Vec::new()),
        ("another file", b"not a tree".to_vec()),
    ];
    for (what, bytes) in damages {
        std::fs::write(&file, &bytes).unwrap();
        let again = ok(&ocimount(cache.path(), &["ls", "-lR", layout, "/etc"]));
        assert_eq!(again, listing, "after {what}");
        // Merged again, the same bytes: the encoding is deterministic.
        assert!(std::fs::read(&file).unwrap() == good, "after {what}");
    }
}

/// The cache's layer directories, in name order.
fn layer_dirs(cache: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(cache.join("layers/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn a_layer_indexed_again_makes_its_stored_tree_stale() {
    let image = corpus().image("debian-gzip");
    let layout = image.layout.to_str().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let before = ok(&ocimount(
        cache.path(),
        &["ls", "-l", layout, "/etc/hostname"],
    ));
    assert!(before.contains(" /etc/hostname"), "{before}");
    let file = stored_tree_file(cache.path());
    let old_tree = std::fs::read(&file).unwrap();
    // Give /etc/hostname another mtime in whichever layer index lists it
    // last: a valid index of the same layer, with another checksum.
    let mut changed = false;
    let dirs = layer_dirs(cache.path());
    for dir in dirs {
        let bytes = std::fs::read(dir.join("index")).unwrap();
        let digest = Digest::parse(&format!(
            "sha256:{}",
            dir.file_name().unwrap().to_str().unwrap()
        ))
        .unwrap();
        let mut index = format::decode(&bytes, &digest).unwrap();
        if let Some(e) = index
            .entries
            .iter_mut()
            .rev()
            .find(|e| e.path() == b"etc/hostname")
        {
            e.mtime = 86400 * 365;
            let tmp = dir.join("index.new");
            std::fs::write(&tmp, format::encode(&index)).unwrap();
            std::fs::rename(&tmp, dir.join("index")).unwrap();
            changed = true;
        }
    }
    assert!(changed, "no layer lists etc/hostname");
    let after = ok(&ocimount(
        cache.path(),
        &["ls", "-l", layout, "/etc/hostname"],
    ));
    assert!(after.contains(" 1971-01-01 00:00 /etc/hostname"), "{after}");
    assert!(std::fs::read(&file).unwrap() != old_tree);
}

/// An index crafted to keep the body length and CRC-32 of the one a tree
/// was merged from (what stored trees were matched by before tree format
/// 4) makes the stored tree stale all the same: trees name their indexes
/// by SHA-256.
#[test]
fn an_index_forged_to_keep_length_and_crc_makes_its_stored_tree_stale() {
    let image = corpus().image("debian-gzip");
    let layout = image.layout.to_str().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let ls = |cache: &Path| ok(&ocimount(cache, &["ls", "-l", layout, "/etc/hostname"]));
    let before = ls(cache.path());
    assert!(before.contains("     0     0 "), "{before}");
    let file = stored_tree_file(cache.path());
    let old_tree = std::fs::read(&file).unwrap();
    // In the last layer index that lists /etc/hostname: its uid changed,
    // and its gid made up so the body keeps its length and CRC-32.
    let dirs = layer_dirs(cache.path());
    let forged_uid = 4242u32;
    let mut forged_one = false;
    for dir in dirs.iter().rev() {
        let bytes = std::fs::read(dir.join("index")).unwrap();
        let digest = Digest::parse(&format!(
            "sha256:{}",
            dir.file_name().unwrap().to_str().unwrap()
        ))
        .unwrap();
        let mut index = format::decode(&bytes, &digest).unwrap();
        let Some(e) = index
            .entries
            .iter_mut()
            .rev()
            .find(|e| e.path() == b"etc/hostname")
        else {
            continue;
        };
        // Where the uid lies: the one byte that differs when only its
        // lowest bit does (the header's SHA-256 aside).
        let old_uid = e.uid;
        e.uid ^= 1;
        let probe = format::encode(&index);
        let uid_at = (HEADER_LEN..bytes.len())
            .find(|&i| bytes[i] != probe[i])
            .unwrap();
        assert_eq!(u32_at(&bytes, uid_at), old_uid);
        let mut forged = bytes.clone();
        hostile_blobs::forge_crc32(
            &mut forged[HEADER_LEN..],
            uid_at - HEADER_LEN,
            &forged_uid.to_le_bytes(),
        );
        let body_sha = ocimount::layer::spans::sha256(&forged[HEADER_LEN..]);
        forged[HEADER_LEN - 32..HEADER_LEN].copy_from_slice(&body_sha);
        assert_eq!(forged.len(), bytes.len());
        assert_eq!(
            crc32(0, &forged[HEADER_LEN..]),
            crc32(0, &bytes[HEADER_LEN..]),
            "the forgery keeps the body's CRC-32"
        );
        // A sound index of this layer, which only its SHA-256 tells apart.
        let decoded = format::decode(&forged, &digest).unwrap();
        let entry = decoded
            .entries
            .iter()
            .rev()
            .find(|e| e.path() == b"etc/hostname")
            .unwrap();
        assert_eq!(entry.uid, forged_uid);
        std::fs::write(dir.join("index"), &forged).unwrap();
        forged_one = true;
        break;
    }
    assert!(forged_one, "no layer lists etc/hostname");
    let after = ls(cache.path());
    assert!(
        after.contains(&format!(" {forged_uid} ")),
        "the stored tree was used with the forged index:\n{after}"
    );
    assert!(std::fs::read(&file).unwrap() != old_tree);
    // The same as a tree merged from these indexes with none stored.
    std::fs::remove_file(stored_tree_file(cache.path())).unwrap();
    assert_eq!(ls(cache.path()), after);
}
