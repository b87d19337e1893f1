//! What each fuzz target checks, shared with the regression test in
//! tests/hostile.rs (`#[path]`-included by both), so every crash the fuzzer
//! finds, kept under fuzz/regressions/, is replayed by `cargo test`.
//!
//! Each function takes arbitrary bytes; an error from ocimount is a fine
//! outcome, a panic (or a broken invariant, asserted here) is a finding.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use ocimount::blob::MemoryBlob;
use ocimount::image::{Image, LayerInfo};
use ocimount::layer::deflate_frame;
use ocimount::layer::format;
use ocimount::layer::gzip::{decode_span, decode_span_at, redecode_materialized, GzipIndexer};
use ocimount::layer::index::{build_index, PassOptions};
use ocimount::layer::layer_index::{BuiltFrom, LayerIndex};
use ocimount::layer::spans::{compressed_range, crc32, sha256, Span, SpanBuilder, SpanStart};
use ocimount::layer::toc;
use ocimount::merge::{LayerEntries, NodeKind, Tree, ROOT};
use ocimount::oci::media::Compression;
use ocimount::source::ImageRef;
use ocimount::tar::entry::{EntryKind, TarEntry};
use ocimount::Digest;

/// A blob holding `data` (what the readers take).
fn memblob(data: &[u8]) -> MemoryBlob {
    MemoryBlob::new(data.to_vec(), "fuzz input".to_string())
}

/// Spans must tile `0..len` exactly, in order.
fn assert_spans_tile(spans: &[Span], len: u64) {
    let mut at = 0;
    for s in spans {
        assert_eq!(s.out_offset, at, "spans leave a gap or overlap");
        assert!(s.out_len > 0, "an empty span");
        at += s.out_len;
    }
    assert_eq!(at, len, "spans do not cover the stream");
}

/// An index and the tree merged from it keep their promises: entries and
/// files lie inside the stream, paths are normal, the binary form round
/// trips, and every walked path resolves to its node.
fn assert_index_sound(index: &LayerIndex, stream_len: u64) {
    assert_eq!(index.uncompressed_size, stream_len);
    assert_spans_tile(&index.spans, stream_len);
    for e in &index.entries {
        assert!(
            e.data_offset
                .checked_add(e.size)
                .is_some_and(|end| end <= stream_len),
            "entry data outside the stream"
        );
        assert!(!e.path().contains(&0) && !e.path().starts_with(b"/") && !e.path().ends_with(b"/"));
        assert!(
            e.path().is_empty()
                || e.path()
                    .split(|&b| b == b'/')
                    .all(|c| !c.is_empty() && c != b"." && c != b".."),
            "path not normalised: {:?}",
            String::from_utf8_lossy(e.path())
        );
    }
    let bytes = format::encode(index);
    assert_eq!(&format::decode(&bytes, &index.digest).unwrap(), index);
    assert_tree_sound(index, stream_len);
}

fn assert_tree_sound(index: &LayerIndex, stream_len: u64) {
    let layers = [LayerEntries {
        position: 0,
        digest: index.digest,
        entries: index.entries.clone(),
    }];
    let Ok(tree) = Tree::build(layers) else {
        return;
    };
    for (path, id) in tree.walk() {
        if let NodeKind::File { offset, size, .. } = tree.node(id).kind {
            assert!(offset
                .checked_add(size)
                .is_some_and(|end| end <= stream_len));
        }
        let found = tree.resolve(&path, false).unwrap();
        assert_eq!(found, if path.is_empty() { ROOT } else { id });
    }
}

/// A tree merged from entries the input names (up to its first byte's
/// value in bytes: one a line, `d` dir, `l` symlink `PATH>TARGET`, `h`
/// hardlink, else a file), its flat form then changed by the rest (five
/// bytes an edit: offset, xor), its checksum made valid again when the
/// edits are of odd length. Reading it must refuse it with a reason or
/// serve every path, never panic or loop.
pub fn tree_format(data: &[u8]) {
    let split = (data.first().copied().unwrap_or(0) as usize).min(data.len());
    let (names, edits) = data.split_at(split);
    let entries: Vec<TarEntry> = names
        .get(1..)
        .unwrap_or_default()
        .split(|&b| b == b'\n')
        .filter_map(entry_from_line)
        .collect();
    let layers = [LayerEntries {
        position: 0,
        digest: Digest::of(b""),
        entries,
    }];
    let Ok(tree) = Tree::build(layers) else {
        return;
    };
    let mut bytes = tree.as_bytes().to_vec();
    for edit in edits.chunks_exact(5) {
        let at = u32::from_le_bytes(edit[..4].try_into().unwrap()) as usize % bytes.len();
        bytes[at] ^= edit[4];
    }
    if edits.len() % 2 == 1 {
        let crc = crc32(0, &bytes[64..]);
        bytes[36..40].copy_from_slice(&crc.to_le_bytes());
    }
    let Ok(tree) = Tree::from_bytes(bytes) else {
        return;
    };
    for (path, id) in tree.walk() {
        let node = tree.node(id);
        for (name, _) in node.meta.xattrs.iter() {
            // The first of its name (an edit may repeat a name).
            assert!(node.meta.xattrs.get(name).is_some());
        }
        if let Some(children) = node.children() {
            for (name, child) in children.iter() {
                let _ = children.get(name);
                assert!(tree.get(child).is_some());
            }
        }
        let _ = tree.resolve(&path, true);
        let _ = tree.resolve(&path, false);
    }
}

fn entry_from_line(line: &[u8]) -> Option<TarEntry> {
    let (&tag, rest) = line.split_first()?;
    let (path, link) = match rest.iter().position(|&b| b == b'>') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let kind = match tag {
        b'd' => EntryKind::Dir,
        b'l' => EntryKind::Symlink,
        b'h' => EntryKind::Hardlink,
        _ => EntryKind::File,
    };
    let mut entry = TarEntry::with_link(path, link, kind);
    entry.mode = 0o755;
    entry.uid = u32::from(tag);
    entry.mtime = i64::from(tag);
    entry.size = 1;
    entry.data_offset = u64::from(tag);
    if tag == b'x' {
        entry.update_extra(|x| x.xattrs = vec![(b"user.x".to_vec(), path.to_vec())]);
    }
    Some(entry)
}

/// The bytes as a plain tar layer, through the indexer and the union.
pub fn tar_index(data: &[u8]) {
    let digest = Digest::of(data);
    let layer = LayerInfo {
        position: 0,
        digest,
        size: data.len() as u64,
        media_type: "application/vnd.oci.image.layer.v1.tar".to_string(),
        compression: Compression::None,
        diff_id: digest,
        toc: None,
    };
    let bar = ProgressBar::hidden();
    if let Ok(index) = build_index(
        &layer,
        &memblob(data),
        None,
        None,
        &bar,
        PassOptions::default(),
    ) {
        assert_index_sound(&index, data.len() as u64);
    }
}

/// Decoded output is capped so a deflate bomb in the input stays cheap.
const MAX_GZIP_OUTPUT: u64 = 32 << 20;

/// gzip checkpoints: index a gzip stream, then decode every span from its
/// checkpoint and compare with what the straight pass produced. The first
/// byte picks the span size and whether the rest is compressed here (a
/// valid stream, members split where the data says, repeated to cross
/// several checkpoints) or used as a gzip blob as it is. Spans are capped
/// at twice their size, so long blocks are cut often: the part past the
/// cap is materialised into a data file, compared too, and the first and
/// last materialised span of each block decoded again from its checkpoint.
pub fn gzip_spans(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let span_size = (32 << 10) << (mode & 3);
    let valid = mode & 0x80 == 0;
    let (blob, expected) = if valid {
        let copies = 1 + usize::from((mode >> 2) & 0x1f) * 2;
        let plain = rest.repeat(copies);
        let level = flate2::Compression::new(u32::from((mode >> 2) & 0x7) + 1);
        let cut = if plain.is_empty() {
            0
        } else {
            usize::from(mode) * 7919 % plain.len()
        };
        let mut blob = Vec::new();
        for part in [&plain[..cut], &plain[cut..]] {
            if part.is_empty() && !blob.is_empty() {
                continue;
            }
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), level);
            enc.write_all(part).unwrap();
            blob.extend(enc.finish().unwrap());
        }
        (blob, Some(plain))
    } else {
        (rest.to_vec(), None)
    };
    let max_span = 2 * span_size;
    let data_path = scratch_dir().join("gzip-data");
    let data = std::fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&data_path)
        .unwrap();
    let mut indexer = GzipIndexer::new(
        &blob[..],
        span_size,
        Some(data.try_clone().unwrap()),
        SpanBuilder::default(),
    )
    .unwrap()
    .with_max_span(max_span);
    let mut out = Vec::new();
    let read = (&mut indexer).take(MAX_GZIP_OUTPUT).read_to_end(&mut out);
    if let Some(plain) = &expected {
        assert!(read.is_ok(), "valid gzip refused: {read:?}");
        assert!(out == *plain, "the indexing pass decoded other bytes");
    }
    if read.is_err() || out.len() as u64 == MAX_GZIP_OUTPUT {
        return;
    }
    let (_, spans) = indexer
        .into_parts()
        .expect("the windows of a valid pass pack");
    assert_spans_tile(&spans, out.len() as u64);
    data.set_len(out.len() as u64).unwrap();
    let file = memblob(&blob);
    let anchor = |i: usize| match spans.get(i).map(|s| &s.start) {
        Some(SpanStart::Materialized { frame_out }) => Some(*frame_out),
        _ => None,
    };
    for (i, span) in spans.iter().enumerate() {
        assert!(span.out_len <= max_span, "a span longer than the cap");
        let range = span.out_offset as usize..(span.out_offset + span.out_len) as usize;
        let want = &out[range];
        assert_eq!(crc32(0, want), span.crc32);
        let mut buf = vec![0u8; span.out_len as usize];
        if let Some(frame_out) = anchor(i) {
            data.read_exact_at(&mut buf, span.out_offset).unwrap();
            assert!(
                buf == want,
                "materialised span at {} differs in the data file",
                span.out_offset
            );
            let first = i == 0 || anchor(i - 1) != Some(frame_out);
            if first || anchor(i + 1) != Some(frame_out) {
                buf.fill(0xa5);
                redecode_materialized(&file, &spans, i, &mut buf).unwrap();
                assert!(
                    buf == want,
                    "materialised span at {} decodes differently",
                    span.out_offset
                );
            }
            continue;
        }
        decode_span(&file, span, &mut buf).unwrap();
        assert!(
            buf == want,
            "span at {} decodes differently",
            span.out_offset
        );
        // Its digest is its compressed range's, and that range alone
        // decodes it (what a remote read checks, then inflates).
        let range = compressed_range(&spans, i, blob.len() as u64).expect("a compressed range");
        let (from, to) = (range.start as usize, range.end as usize);
        assert_eq!(span.sha256, sha256(&blob[from..to]), "span {i}'s digest");
        let mut alone: Vec<u8> = blob[..to].iter().map(|b| !b).collect();
        alone[from..to].copy_from_slice(&blob[from..to]);
        buf.fill(0xa5);
        decode_span(&memblob(&alone), span, &mut buf).unwrap();
        assert!(
            buf == want,
            "span {i} decodes differently from its range alone"
        );
        // Whole with libdeflate: a span the pass cut at a checkpoint always
        // frames (zlib's second try would hide a framing mistake), and one
        // that is refused is left untouched.
        buf.fill(0xa5);
        match deflate_frame::decode(&file, &spans, i, &mut buf) {
            Ok(true) => assert!(
                buf == want,
                "span at {} decodes differently when framed",
                span.out_offset
            ),
            Ok(false) => assert!(buf.iter().all(|&b| b == 0xa5), "a refused span wrote"),
            Err(e) => panic!("span at {} fails to frame: {e}", span.out_offset),
        }
        buf.fill(0xa5);
        decode_span_at(&file, &spans, i, &mut buf).unwrap();
        assert!(
            buf == want,
            "span at {} decodes differently",
            span.out_offset
        );
    }
}

/// Header length of the binary index: magic, version, digest, body length, CRC.
const INDEX_HEADER: usize = 8 + 4 + 32 + 8 + 4;

/// The binary index loader. Half the inputs get a valid header and
/// checksums patched in, so mutations reach the body parser.
pub fn index_format(data: &[u8]) {
    let mut bytes = data.to_vec();
    if bytes.len() >= INDEX_HEADER && bytes[INDEX_HEADER - 1] & 1 == 1 {
        format::reseal(&mut bytes);
    }
    let digest = match bytes.get(12..44) {
        Some(d) => Digest::from_bytes(d.try_into().unwrap()),
        None => Digest::of(b""),
    };
    if let Ok(index) = format::decode(&bytes, &digest) {
        assert_spans_tile(&index.spans, index.uncompressed_size);
        let again = format::encode(&index);
        assert_eq!(format::decode(&again, &digest).unwrap(), index);
        assert_tree_sound(&index, index.uncompressed_size);
    }
}

/// A table of contents, as JSON, after its digest was checked: the first
/// byte says which format (even: eStargz, odd: zstd:chunked) and how far
/// into the blob chunks may lie; the rest is the JSON. Building the index
/// must refuse it with a reason or give an index whose spans tile its
/// stream, chunks inside the blob and in order, every entry's data inside
/// the stream, whose binary form round trips and whose tree resolves.
pub fn toc_json(data: &[u8]) {
    let Some((&first, json)) = data.split_first() else {
        return;
    };
    let (format, compression) = if first % 2 == 0 {
        (BuiltFrom::EstargzToc, Compression::Gzip)
    } else {
        (BuiltFrom::ZstdChunkedToc, Compression::Zstd)
    };
    let data_end = (u64::from(first) + 1) << 12;
    let layer = LayerInfo {
        position: 0,
        digest: Digest::of(b"toc layer"),
        size: data_end + 4096,
        media_type: "application/vnd.oci.image.layer.v1.tar".to_string(),
        compression,
        diff_id: Digest::of(b"toc tar"),
        toc: None,
    };
    let Ok(built) = toc::index_from_toc_json(&layer, json, format, data_end) else {
        return;
    };
    let index = built.index;
    for chunk in &built.large_chunks {
        assert!(
            chunk.spans > 0 && chunk.first_span + chunk.spans <= index.spans.len(),
            "a large chunk's spans outside the index"
        );
    }
    assert_eq!(index.built_from, format);
    assert!(index.prefetch_spans as usize <= index.spans.len());
    let mut blob_pos = 0;
    for span in index.spans.iter() {
        assert!(
            span.in_offset >= blob_pos,
            "chunks out of order or overlapping"
        );
        assert!(span.in_offset < data_end, "a chunk past the data");
        blob_pos = span.in_offset;
    }
    assert_index_sound(&index, index.uncompressed_size);
}

/// The JSON layer: index.json, a manifest and a config, separated by
/// `\n--\n`, then an optional reference suffix (`:tag`, `@sha256:…`).
/// `@MANIFEST@`/`@MSIZE@` in the index and `@CONFIG@`/`@CSIZE@` in the
/// manifest become the real digests and sizes, so the fuzzer need not
/// find sha256 preimages.
pub fn json_layout(data: &[u8]) {
    let mut parts = split(data, b"\n--\n").into_iter();
    let index = parts.next().unwrap_or_default();
    let manifest = parts.next().unwrap_or_default();
    let config = parts.next().unwrap_or_default();
    let suffix = parts.next().unwrap_or_default();
    let dir = scratch_dir();
    let blobs = dir.join("blobs/sha256");
    let _ = std::fs::remove_dir_all(&blobs);
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| -> Digest {
        let d = Digest::of(bytes);
        std::fs::write(blobs.join(d.hex()), bytes).unwrap();
        d
    };
    let config_digest = put(config);
    let manifest = replace(
        &replace(manifest, b"@CONFIG@", config_digest.to_string().as_bytes()),
        b"@CSIZE@",
        config.len().to_string().as_bytes(),
    );
    let manifest_digest = put(&manifest);
    let index = replace(
        &replace(index, b"@MANIFEST@", manifest_digest.to_string().as_bytes()),
        b"@MSIZE@",
        manifest.len().to_string().as_bytes(),
    );
    std::fs::write(dir.join("index.json"), index).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let reference = format!("{}{}", dir.display(), String::from_utf8_lossy(suffix));
    if let Ok(reference) = ImageRef::parse(&reference) {
        let platform = ocimount::oci::Platform::parse("linux/arm/v7").ok();
        let _ = Image::open(&reference, None, &Default::default());
        let _ = Image::open(&reference, platform.as_ref(), &Default::default());
    }
}

fn split<'a>(data: &'a [u8], sep: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some(i) = rest.windows(sep.len()).position(|w| w == sep) {
        out.push(&rest[..i]);
        rest = &rest[i + sep.len()..];
    }
    out.push(rest);
    out
}

fn replace(data: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let parts = split(data, from);
    parts.join(to)
}

static SCRATCH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Remove the JSON target's scratch directory (for a test; a fuzzer never
/// ends cleanly, and leaves one small directory behind).
pub fn remove_scratch_dir() {
    if let Some(dir) = SCRATCH.get() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// One directory per process for the JSON target's layouts.
fn scratch_dir() -> &'static Path {
    SCRATCH.get_or_init(|| {
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("ocimount-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}
