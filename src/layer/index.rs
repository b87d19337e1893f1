//! The one streaming pass over a layer blob: sha256 of the blob,
//! decompression with checkpoints, the tar parse and sha256 of the tar, all
//! at once, reading every byte exactly once.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;

use indicatif::ProgressBar;

use crate::blob::BlobSource;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::layer::background_hash::BackgroundHash;
use crate::layer::gzip::{CloserCheckpoints, GzipIndexer};
use crate::layer::layer_index::{BuiltFrom, LayerIndex};
use crate::layer::spans::{Span, SpanBuilder, SpanStart};
use crate::layer::toc::ESTARGZ_OWN_ENTRIES;
use crate::layer::toc_reference::TocReference;
use crate::layer::zstd::ZstdIndexer;
use crate::layer::Compression;
use crate::layer::LayerInfo;
use crate::tar::entry::{EntryKind, TarEntry};
use crate::tar::{TarError, TarReader};

/// Gzip checkpoints are about this far apart in the uncompressed stream.
pub const DEFAULT_GZIP_SPAN: u64 = 1 << 20;
/// Regular files at least this long get closer checkpoints (data files,
/// not the binaries of a distribution, which are read whole)…
pub const LARGE_FILE: u64 = 4 << 20;
/// … this far apart: a random read in one decodes a quarter as much.
pub const LARGE_FILE_GZIP_SPAN: u64 = 256 << 10;

/// How one indexing pass runs.
#[derive(Clone, Copy, Debug)]
pub struct PassOptions {
    /// About how far apart gzip checkpoints are.
    pub gzip_span: u64,
    /// How far apart they are inside regular files of `LARGE_FILE` bytes
    /// or more (no closer than `gzip_span`).
    pub large_file_span: u64,
    /// Hash the blob and the tar on threads of their own
    /// (`crate::layer::background_hash`): for a layer that outlasts the
    /// others, while the cores they used are free.
    pub hash_apart: bool,
}

impl Default for PassOptions {
    fn default() -> PassOptions {
        PassOptions {
            gzip_span: DEFAULT_GZIP_SPAN,
            large_file_span: LARGE_FILE_GZIP_SPAN,
            hash_apart: false,
        }
    }
}

/// Index one layer. `data` is the cache's data file for the uncompressed
/// stream, created empty (zstd writes large frames into it, gzip the part
/// of a deflate block past `MAX_SPAN_BYTES`); plain tar needs none. With
/// `keep`, the same file again, every decoded byte is written there too.
pub fn build_index(
    layer: &LayerInfo,
    blob: &dyn BlobSource,
    data: Option<File>,
    keep: Option<File>,
    bar: &ProgressBar,
    pass: PassOptions,
) -> Result<LayerIndex> {
    let fail = |reason: String| Error::Layer {
        layer: layer.position,
        digest: layer.digest,
        reason,
    };
    // The head is read from the stream itself and put back in front of it:
    // one sequential read of the blob, even where reading at an offset
    // costs a request of its own (a registry).
    let mut stream = blob.stream();
    let mut head = [0u8; 4];
    let head_len = read_head(&mut stream, &mut head)
        .map_err(|e| fail(format!("cannot read blob {}: {e}", blob.location())))?;
    let stream: Box<dyn Read + Send + '_> =
        Box::new(io::Cursor::new(head[..head_len].to_vec()).chain(stream));
    let sniffed = Compression::sniff(&head[..head_len]);
    if head_len > 0 && sniffed != layer.compression {
        return Err(fail(format!(
            "media type {} says {} but the blob starts like {}",
            layer.media_type,
            layer.compression.name(),
            if sniffed == Compression::None {
                "plain data"
            } else {
                sniffed.name()
            }
        )));
    }
    if head_len == 0 && layer.compression != Compression::None {
        return Err(fail(format!(
            "the blob is empty, which is not valid {}",
            layer.compression.name()
        )));
    }

    let hashing = HashingReader::new(stream, bar.clone(), pass.hash_apart);
    let closer = CloserCheckpoints::default();
    let spans = if pass.hash_apart {
        SpanBuilder::hashing_apart("sha256-spans")
    } else {
        SpanBuilder::default()
    };
    let decoder = match layer.compression {
        Compression::None => Decoder::Plain(PlainIndexer {
            inner: hashing,
            spans,
        }),
        Compression::Gzip => Decoder::Gzip(Box::new(
            GzipIndexer::new(hashing, pass.gzip_span, data, spans)
                .map_err(|e| fail(e.to_string()))?
                .with_closer_checkpoints(closer.clone(), pass.large_file_span),
        )),
        Compression::Zstd => {
            let data = data.ok_or_else(|| fail("zstd layers need a data file".to_string()))?;
            Decoder::Zstd(ZstdIndexer::new(hashing, data, spans).map_err(|e| fail(e.to_string()))?)
        }
    };
    let result = read_tar(layer, decoder, keep, pass.hash_apart, &closer);
    let (entries, tar_hasher) = match result {
        Ok(ok) => ok,
        Err(e) => {
            // A damaged blob explains a failed parse better than the parse
            // error does; but a remote blob is not read twice for that (a
            // stream cut at 1.9 GB would cost another 2 GB to explain).
            if !blob.is_remote() {
                check_blob_digest(layer, blob)?;
            }
            return Err(e);
        }
    };
    let uncompressed_size = tar_hasher.count;
    let diff_id = Digest::from_hasher(
        tar_hasher
            .hasher
            .finish()
            .map_err(|e| fail(e.to_string()))?,
    );
    let (hashing, spans) = tar_hasher.inner.finish().map_err(|e| fail(e.to_string()))?;
    let compressed_size = hashing.count;
    expect_blob_digest(layer, hashing.digest().map_err(|e| fail(e.to_string()))?)?;
    if diff_id != layer.diff_id {
        return Err(Error::DigestMismatch {
            what: format!(
                "layer {} ({}) uncompressed tar: diff_id",
                layer.position, layer.digest
            ),
            digest: layer.diff_id,
            actual: diff_id,
        });
    }
    // eStargz's own entries are hidden, as through its TOC (see
    // `crate::layer::toc::ESTARGZ_OWN_ENTRIES`): the same tree either way.
    let mut entries = entries;
    if matches!(layer.toc, Some(TocReference::Estargz { .. })) {
        entries.retain(|e| !ESTARGZ_OWN_ENTRIES.contains(&e.path()));
    }
    Ok(LayerIndex {
        digest: layer.digest,
        diff_id,
        compression: layer.compression,
        compressed_size,
        uncompressed_size,
        entries,
        spans: spans.into(),
        built_from: BuiltFrom::FullPass,
        prefetch_spans: 0,
    })
}

fn read_tar<'a>(
    layer: &LayerInfo,
    decoder: Decoder<HashingReader<'a>>,
    keep: Option<File>,
    hash_apart: bool,
    closer: &CloserCheckpoints,
) -> Result<(Vec<TarEntry>, TarHasher<Decoder<HashingReader<'a>>>)> {
    let tar_hasher = TarHasher {
        inner: decoder,
        hasher: if hash_apart {
            BackgroundHash::start("sha256-tar")
        } else {
            BackgroundHash::in_place()
        },
        count: 0,
        keep,
    };
    let mut tar = TarReader::new(BufReader::with_capacity(256 * 1024, tar_hasher));
    let mut entries = Vec::new();
    loop {
        match tar.next_entry() {
            Ok(Some(entry)) => {
                if entry.kind == EntryKind::File && entry.size >= LARGE_FILE {
                    closer.until(entry.data_offset.saturating_add(entry.size));
                }
                entries.push(entry)
            }
            Ok(None) => break,
            Err(TarError {
                path: Some(path),
                reason,
            }) => {
                return Err(Error::LayerEntry {
                    layer: layer.position,
                    digest: layer.digest,
                    path: String::from_utf8_lossy(&path).into_owned(),
                    reason,
                })
            }
            Err(TarError { path: None, reason }) => {
                return Err(Error::Layer {
                    layer: layer.position,
                    digest: layer.digest,
                    reason,
                })
            }
        }
    }
    // The diff_id covers the whole stream, padding and trailing bytes included.
    let mut rest = tar.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|e| Error::Layer {
        layer: layer.position,
        digest: layer.digest,
        reason: format!("after the end of the archive: {e}"),
    })?;
    let tar_hasher = rest.into_inner();
    entries.shrink_to_fit();
    Ok((entries, tar_hasher))
}

/// The first bytes of a blob, up to `head.len()` (fewer only at its end).
fn read_head(stream: &mut dyn Read, head: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < head.len() {
        match stream.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn check_blob_digest(layer: &LayerInfo, blob: &dyn BlobSource) -> Result<()> {
    let mut hashing = HashingReader::new(blob.stream(), ProgressBar::hidden(), false);
    let fail = |e: io::Error| Error::Layer {
        layer: layer.position,
        digest: layer.digest,
        reason: format!("cannot read blob: {e}"),
    };
    io::copy(&mut hashing, &mut io::sink()).map_err(fail)?;
    expect_blob_digest(layer, hashing.digest().map_err(fail)?)
}

fn expect_blob_digest(layer: &LayerInfo, actual: Digest) -> Result<()> {
    if actual != layer.digest {
        return Err(Error::DigestMismatch {
            what: format!("layer {} blob", layer.position),
            digest: layer.digest,
            actual,
        });
    }
    Ok(())
}

/// Reads the blob front to back, hashing it (on a thread of its own with
/// `apart`) and moving the progress bar.
pub(crate) struct HashingReader<'a> {
    inner: Box<dyn Read + Send + 'a>,
    hasher: BackgroundHash,
    count: u64,
    bar: ProgressBar,
}

impl<'a> HashingReader<'a> {
    pub(crate) fn new(inner: Box<dyn Read + Send + 'a>, bar: ProgressBar, apart: bool) -> Self {
        HashingReader {
            inner,
            hasher: if apart {
                BackgroundHash::start("sha256-blob")
            } else {
                BackgroundHash::in_place()
            },
            count: 0,
            bar,
        }
    }

    /// The digest of every byte read.
    pub(crate) fn digest(self) -> io::Result<Digest> {
        self.hasher.finish().map(Digest::from_hasher)
    }
}

impl Read for HashingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

/// Hashes and counts the uncompressed tar stream.
struct TarHasher<R> {
    inner: R,
    hasher: BackgroundHash,
    count: u64,
    /// Where every decoded byte is also written, at its own offset.
    keep: Option<File>,
}

impl<R: Read> Read for TarHasher<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        if let Some(keep) = &self.keep {
            keep.write_all_at(&buf[..n], self.count)?;
        }
        self.count += n as u64;
        Ok(n)
    }
}

/// Plain tar: the stream is the blob; spans are fixed-size slices of it.
struct PlainIndexer<R> {
    inner: R,
    spans: SpanBuilder,
}

impl<R: Read> Read for PlainIndexer<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.spans.feed_fixed(&buf[..n], SpanStart::Blob, |o| o);
        Ok(n)
    }
}

enum Decoder<R> {
    Plain(PlainIndexer<R>),
    Gzip(Box<GzipIndexer<R>>),
    Zstd(ZstdIndexer<R>),
}

impl<'a> Decoder<HashingReader<'a>> {
    fn finish(self) -> io::Result<(HashingReader<'a>, Vec<Span>)> {
        Ok(match self {
            Decoder::Plain(p) => (p.inner, p.spans.finish()?),
            Decoder::Gzip(g) => g.into_parts()?,
            Decoder::Zstd(z) => z.into_parts()?,
        })
    }
}

impl<R: Read> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::Plain(d) => d.read(buf),
            Decoder::Gzip(d) => d.read(buf),
            Decoder::Zstd(d) => d.read(buf),
        }
    }
}
