//! Bytes at an offset of a layer's uncompressed stream, span by span.
//!
//! Compressed layers: a span is decoded once (gzip from its checkpoint, zstd
//! by frame), checked against the CRC-32 the verified indexing pass took,
//! written to the cache's sparse `data` file, marked in `spans`, and served
//! from there. Plain tar is served straight from the blob. No span is longer
//! than `MAX_SPAN_BYTES`, so a whole one can be decoded into memory;
//! `Materialized` spans (the tail of a long zstd frame or deflate block) are
//! in `data` from the indexing pass on, and decoded again only to repair it.
//! Every span is checked once per process before its bytes are served, so a
//! damaged cache is repaired and a damaged blob fails with an error, never
//! with wrong bytes.
//!
//! Bytes are read with `pread`, not through a mapping of the blob or the
//! data file: the FUSE reply needs its own buffer either way, so a mapping
//! saves no copy, but its pages count in the daemon's RSS (240 MiB against
//! 25 MiB after reading the Debian test image), and a 32-bit address space
//! cannot hold a multi-GiB layer. Only the one-byte-per-span `spans` file is
//! mapped. A span is checked through a buffer the first time, and read with
//! `pread` after that.
//!
//! The blob is a [`BlobSource`]: a layout file, an archive member or any
//! other source; the reader never learns which.

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::blob::Blob;
use crate::blob::BlobSource;
use crate::cache::residency::Residency;
use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::layer::gzip;
use crate::layer::layer_index::{BuiltFrom, LayerIndex};
use crate::layer::spans::{self, crc32, span_at, Span, SpanStart};
use crate::layer::zstd;
use crate::layer::Compression;
use crate::sys::thread_cpu;

const LOCK_STRIPES: usize = 64;
/// The most compressed bytes one span's fetch takes in for the spans that
/// follow it (see `hint_compressed_range`).
const COALESCE_BYTES: u64 = 256 << 10;
/// How far the decode-ahead's fetch of a remote span reaches, when the
/// reads go along the layer in order: one request for the stretch ahead.
const AHEAD_FETCH_BYTES: u64 = 4 << 20;
/// Spans decoded but not stored kept in memory, so that the reads a file
/// is served in (128 KiB to 1 MiB each) decode a span once, not each time.
const RECENT_SPANS: usize = 8;

pub struct LayerReader {
    digest: Digest,
    compression: Compression,
    spans: Arc<[Span]>,
    blob: Blob,
    data: Option<DataCache>,
    /// For each span, 1 + the layer's eviction epoch it was checked under
    /// (0: not checked). A plain layer, which nothing evicts, uses 1.
    verified: Vec<AtomicU64>,
    locks: Vec<Mutex<()>>,
    /// Whether a span could not be stored (said once in the log).
    store_failed: AtomicBool,
    /// Whether decoded spans are written to the data cache (`--cache-mode
    /// full`) or only served (`index-only`).
    keep_decoded: bool,
    /// Spans decoded but not stored, most recent last.
    recent: Mutex<VecDeque<(usize, Arc<Vec<u8>>)>>,
    /// How far a remote blob's reads have gone along it in order.
    fetch_run: Mutex<FetchRun>,
    /// Decoded bytes this reader has stored, for the cache's size limit.
    stored: AtomicU64,
    /// Every span is hashed before it is served, not only remote ones: the
    /// index came from a table of contents, which vouches for the chunks'
    /// SHA-256 and for no CRC (see `BuiltFrom`).
    hash_every_span: bool,
    /// How the index was built, which says what each span's SHA-256 is
    /// taken over (`BuiltFrom::hashes_compressed_range`).
    built_from: BuiltFrom,
    /// What checking spans against their SHA-256 has cost so far.
    digest_checks: DigestCheckTally,
    /// A shared lock on the layer's `inuse` file while this reader lives.
    _in_use: std::fs::File,
}

/// Spans hashed to check them against the index's SHA-256, their bytes and
/// what it took: what the checks cost, which a daemon logs when it ends and
/// the benchmark holds to its goal. The cost is the hashing threads' CPU
/// time; the wall time around the hashing is kept beside it, and is larger
/// where a thread waited for a core in the middle of a hash.
#[derive(Debug, Default)]
pub struct DigestCheckTally {
    spans: AtomicU64,
    bytes: AtomicU64,
    cpu_nanos: AtomicU64,
    wall_nanos: AtomicU64,
}

/// A [`DigestCheckTally`] read out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DigestChecks {
    pub spans: u64,
    pub bytes: u64,
    /// CPU time of the threads that hashed.
    pub cpu: std::time::Duration,
    /// Wall time around the hashing, waits for a core included.
    pub wall: std::time::Duration,
}

impl std::ops::Add for DigestChecks {
    type Output = DigestChecks;

    fn add(self, other: DigestChecks) -> DigestChecks {
        DigestChecks {
            spans: self.spans + other.spans,
            bytes: self.bytes + other.bytes,
            cpu: self.cpu + other.cpu,
            wall: self.wall + other.wall,
        }
    }
}

impl DigestCheckTally {
    /// The SHA-256 of `bytes`, counted.
    fn sha256(&self, bytes: &[u8]) -> [u8; 32] {
        let nanos = |d: std::time::Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let (wall_start, cpu_start) = (std::time::Instant::now(), thread_cpu::now());
        let digest = spans::sha256(bytes);
        let cpu = thread_cpu::now().saturating_sub(cpu_start);
        let wall = wall_start.elapsed();
        self.spans.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        self.cpu_nanos.fetch_add(nanos(cpu), Ordering::Relaxed);
        self.wall_nanos.fetch_add(nanos(wall), Ordering::Relaxed);
        digest
    }

    fn read(&self) -> DigestChecks {
        let duration = |n: &AtomicU64| std::time::Duration::from_nanos(n.load(Ordering::Relaxed));
        DigestChecks {
            spans: self.spans.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            cpu: duration(&self.cpu_nanos),
            wall: duration(&self.wall_nanos),
        }
    }
}

struct DataCache {
    file: std::fs::File,
    residency: Residency,
}

impl LayerReader {
    /// `dir` is the layer's cache directory; `blob` the layer blob.
    pub fn open(dir: &Path, index: &LayerIndex, blob: Blob) -> Result<LayerReader> {
        let in_use = crate::sys::lock::share_lock(&dir.join("inuse"))?;
        let mut data = None;
        let cached = index.compression != Compression::None || dir.join("data").exists();
        if index.uncompressed_size > 0 && cached {
            {
                let data_path = dir.join("data");
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&data_path)
                    .at(&data_path)?;
                let data_len = file.metadata().at(&data_path)?.len();
                if data_len != index.uncompressed_size {
                    return Err(Error::Cache {
                        path: dir.to_path_buf(),
                        reason: "data or spans file has the wrong size".to_string(),
                    });
                }
                let residency = Residency::open(dir, index.spans.len())?;
                data = Some(DataCache { file, residency });
            }
        }
        Ok(LayerReader {
            digest: index.digest,
            compression: index.compression,
            spans: index.spans.clone(),
            blob,
            data,
            verified: index.spans.iter().map(|_| AtomicU64::new(0)).collect(),
            locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            store_failed: AtomicBool::new(false),
            keep_decoded: true,
            recent: Mutex::new(VecDeque::with_capacity(RECENT_SPANS)),
            fetch_run: Mutex::new(FetchRun::default()),
            stored: AtomicU64::new(0),
            hash_every_span: index.built_from.hashes_every_span(),
            built_from: index.built_from,
            digest_checks: DigestCheckTally::default(),
            _in_use: in_use,
        })
    }

    /// Serve decoded spans without storing them (`--cache-mode index-only`):
    /// the data cache then holds only what indexing wrote (streams that
    /// cannot be entered in the middle) and what other processes stored.
    pub fn without_storing(mut self) -> LayerReader {
        self.keep_decoded = false;
        self
    }

    /// What checking spans against their SHA-256 has cost this reader.
    pub fn digest_checks(&self) -> DigestChecks {
        self.digest_checks.read()
    }

    /// Decoded bytes this reader has stored so far.
    pub fn stored_bytes(&self) -> u64 {
        self.stored.load(Ordering::Relaxed)
    }

    /// The spans the data cache holds for this layer, as (span, last use,
    /// materialised): what the cache's size limit may evict. Materialised
    /// spans cost a decode from their stream's start to rebuild.
    pub fn resident_spans(&self) -> Vec<(usize, u32, bool)> {
        let Some(data) = &self.data else {
            return Vec::new();
        };
        (0..self.spans.len())
            .filter(|&i| data.residency.is_present(i))
            .map(|i| {
                let materialised = matches!(self.spans[i].start, SpanStart::Materialized { .. });
                (i, data.residency.last_used(i), materialised)
            })
            .collect()
    }

    /// Whether spans decoded through this reader are stored in the cache.
    pub fn stores_decoded(&self) -> bool {
        self.data.is_some() && self.keep_decoded
    }

    /// How many spans the layer is cut into.
    pub fn span_count(&self) -> usize {
        self.spans.len()
    }

    /// Fetch the compressed bytes of spans `first..first + count` of a
    /// remote blob in one request (as far as one request goes), ahead of
    /// filling them: an eStargz layer's prioritised files after a mount.
    /// A local blob, or a run whose first span is stored, asks nothing.
    pub fn fetch_ahead(&self, first: usize, count: usize) -> io::Result<()> {
        let Some(last) = (first + count)
            .checked_sub(1)
            .filter(|&l| l < self.spans.len())
        else {
            return Ok(());
        };
        let stored = |i| {
            self.data
                .as_ref()
                .is_some_and(|d| d.residency.is_present(i))
        };
        if !self.blob.is_remote() || count == 0 || stored(first) {
            return Ok(());
        }
        let start = self.compressed_start(first);
        let end = self.compressed_end(last).min(self.blob.size());
        self.blob.will_need(start, end.saturating_sub(start))
    }

    /// Decode span `i` into the data cache if it is not there yet (the
    /// background fill, `--prefetch`). A span already stored, a layer
    /// served straight from its blob, and a reader that stores nothing
    /// (`--cache-mode index-only`) are left as they are.
    pub fn fill_span(&self, i: usize) -> Result<()> {
        let Some(data) = self.data_to_fill(i) else {
            return Ok(());
        };
        self.stored_or_decoded(i, data, self.lock(i)).map(|_| ())
    }

    /// Whether the blob is read over the network (a registry).
    pub fn is_remote(&self) -> bool {
        self.blob.is_remote()
    }

    /// Make span `i` ready to serve (for the decode-ahead): decoded into
    /// the data cache if it is not there, read and checked if it is but
    /// this process has not checked it yet (a remount). Left alone: a span
    /// whose lock is held (a read is on it, or on one beside it in the
    /// lock's stripe), which is not waited for; a span of a remote blob not
    /// stored yet, unless `may_fetch` (the reads go along the layer in
    /// order, so the request is one they are about to make); and every
    /// span once a write to the data cache has failed or the eviction
    /// epoch cannot be seen, where nothing decoded would stay.
    pub fn prepare_span_if_idle(&self, i: usize, may_fetch: bool) -> Result<()> {
        let Some(data) = &self.data else {
            return Ok(());
        };
        if !self.keep_decoded
            || i >= self.spans.len()
            || self.store_failed.load(Ordering::Relaxed)
            || self.check_mark() == 0
            || self.is_ready(i)
            || (self.blob.is_remote() && !may_fetch && !data.residency.is_present(i))
        {
            return Ok(());
        }
        let guard = match self.locks[i % LOCK_STRIPES].try_lock() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Ok(()),
        };
        if self.blob.is_remote() && !data.residency.is_present(i) {
            // One request for the stretch ahead, not one per span.
            self.hint_compressed_range_within(i, AHEAD_FETCH_BYTES)
                .map_err(|e| self.unavailable(&self.spans[i], e))?;
        }
        self.stored_or_decoded(i, data, guard).map(|_| ())
    }

    /// The data cache, where span `i` is one a fill should decode into it:
    /// not stored yet, in a reader that stores what it decodes.
    fn data_to_fill(&self, i: usize) -> Option<&DataCache> {
        let data = self.data.as_ref()?;
        (self.keep_decoded && i < self.spans.len() && !data.residency.is_present(i)).then_some(data)
    }

    /// Whether a read of span `i` would be served at once, from bytes this
    /// process has checked. A hint (an eviction may change it at any
    /// time), for deciding what to prepare ahead, never for serving.
    pub fn is_ready(&self, i: usize) -> bool {
        self.verified.get(i).is_some_and(|v| {
            let checked = v.load(Ordering::Acquire);
            checked != 0 && checked == self.check_mark()
        })
    }

    /// The span holding byte `offset` of the layer's stream.
    pub fn span_at(&self, offset: u64) -> Option<usize> {
        span_at(&self.spans, offset)
    }

    /// The spans holding `len` bytes from `offset` (a file's data).
    pub fn spans_covering(&self, offset: u64, len: u64) -> Option<std::ops::RangeInclusive<usize>> {
        crate::layer::spans::spans_covering(&self.spans, offset, len)
    }

    /// Take these spans out of the data cache; a reader anywhere that had
    /// checked one reads it again the checked way. Returns the bytes freed.
    pub fn evict(&self, which: &[usize]) -> u64 {
        let Some(data) = &self.data else {
            return 0;
        };
        let spans: Vec<(usize, &Span)> = which.iter().map(|&i| (i, &self.spans[i])).collect();
        data.residency.evict(&data.file, &spans)
    }

    /// Fill `buf` from `offset`; returns fewer bytes only at the stream's end.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            let pos = offset + done as u64;
            let Some(i) = span_at(&self.spans, pos) else {
                break;
            };
            let from = pos - self.spans[i].out_offset;
            let n = (self.spans[i].out_len - from).min((buf.len() - done) as u64) as usize;
            let out = &mut buf[done..done + n];
            self.read_span(i, from, out)?;
            done += n;
        }
        Ok(done)
    }

    fn damaged(&self, span: &Span, reason: String) -> Error {
        tracing::error!(layer = %self.digest, offset = span.out_offset, "{reason}");
        Error::DamagedSpan {
            digest: self.digest,
            offset: span.out_offset,
            reason,
        }
    }

    /// A span whose bytes could not be fetched (a registry that is down):
    /// the read fails, and succeeds again once the source is back.
    fn unavailable(&self, span: &Span, e: io::Error) -> Error {
        tracing::error!(layer = %self.digest, offset = span.out_offset, "cannot fetch: {e}");
        Error::SpanUnavailable {
            digest: self.digest,
            offset: span.out_offset,
            reason: e.to_string(),
        }
    }

    /// Copy `out.len()` bytes of span `i`, from `from` within it, with pread:
    /// the whole span through a checked buffer on first use, then straight.
    fn read_span(&self, i: usize, from: u64, out: &mut [u8]) -> Result<()> {
        let span = &self.spans[i];
        if let Some(data) = &self.data {
            data.residency.touch(i);
        }
        let checked = self.verified[i].load(Ordering::Acquire);
        // A remote blob's bytes are read once, checked and kept: a second
        // read of them would be as unchecked as the first.
        let direct_from_blob = self.data.is_none();
        let unchecked_remote = direct_from_blob && self.blob.is_remote();
        if checked != 0 && checked == self.check_mark() && !unchecked_remote {
            let read = match &self.data {
                None => self.blob.read_exact_at(out, span.in_offset + from),
                Some(data) => data.file.read_exact_at(out, span.out_offset + from),
            };
            read.map_err(|e| self.read_failed(span, e))?;
            // An eviction during the read may have punched what it read:
            // then read it again, the checked way.
            if self.check_mark() == checked {
                return Ok(());
            }
        }
        let bytes = match self.recent_span(i) {
            Some(bytes) => bytes,
            None => self.checked_span(i)?,
        };
        let from = from as usize;
        out.copy_from_slice(&bytes[from..from + out.len()]);
        Ok(())
    }

    /// What `verified` holds for a span checked now: 1 + the eviction
    /// epoch; 0 (never trusted) where the epoch cannot be seen.
    fn check_mark(&self) -> u64 {
        match &self.data {
            // Odd: an eviction is under way; what is checked now may go.
            Some(data) => match data.residency.epoch() {
                Some(e) if e % 2 == 0 => e + 1,
                _ => 0,
            },
            None => 1,
        }
    }

    /// The whole of span `i`, read and checked (and decoded into the data
    /// cache if it is not there yet), for the pread path.
    fn checked_span(&self, i: usize) -> Result<Arc<Vec<u8>>> {
        let span = &self.spans[i];
        let Some(data) = &self.data else {
            let mut bytes = vec![0u8; self.span_len(span)?];
            self.blob
                .read_exact_at(&mut bytes, span.in_offset)
                .map_err(|e| self.read_failed(span, e))?;
            self.check_blob_span(span, &bytes)?;
            self.check_span_digest(i, &bytes)?;
            self.verified[i].store(1, Ordering::Release);
            let bytes = Arc::new(bytes);
            if self.blob.is_remote() {
                self.remember(i, bytes.clone());
            }
            return Ok(bytes);
        };
        self.stored_or_decoded(i, data, self.lock(i))
    }

    /// Span `i` from the data cache if it is there and checks, else
    /// decoded into it; `_guard` is the span's lock, held throughout.
    fn stored_or_decoded(
        &self,
        i: usize,
        data: &DataCache,
        _guard: std::sync::MutexGuard<'_, ()>,
    ) -> Result<Arc<Vec<u8>>> {
        let span = &self.spans[i];
        // Taken before the bytes are read: an eviction after this makes the
        // mark stale, and the span is checked again at its next read.
        let mark = self.check_mark();
        if data.residency.is_present(i) {
            let mut bytes = vec![0u8; self.span_len(span)?];
            data.file
                .read_exact_at(&mut bytes, span.out_offset)
                .map_err(|e| self.read_failed(span, e))?;
            if self.stored_span_sound(span, &bytes) {
                self.verified[i].store(mark, Ordering::Release);
                return Ok(Arc::new(bytes));
            }
        }
        // Another thread may have decoded it while this one waited.
        if let Some(bytes) = self.recent_span(i) {
            return Ok(bytes);
        }
        self.decode_into_cache(i, data)
    }

    fn recent_span(&self, i: usize) -> Option<Arc<Vec<u8>>> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent
            .iter()
            .find(|(j, _)| *j == i)
            .map(|(_, bytes)| bytes.clone())
    }

    /// Keep a span that was decoded but not stored, for the next reads.
    fn remember(&self, i: usize, bytes: Arc<Vec<u8>>) {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.retain(|(j, _)| *j != i);
        if recent.len() == RECENT_SPANS {
            recent.pop_front();
        }
        recent.push_back((i, bytes));
    }

    /// Decode span `i` from the blob, check it, write it to the data cache
    /// and mark it present and verified; returns the decoded bytes.
    /// The caller holds the span's lock.
    fn decode_into_cache(&self, i: usize, data: &DataCache) -> Result<Arc<Vec<u8>>> {
        let span = &self.spans[i];
        let mut fresh = vec![0u8; self.span_len(span)?];
        self.hint_compressed_range(i)
            .map_err(|e| self.unavailable(span, e))?;
        let checked = self.checked_compressed_range(i)?;
        let source: &dyn BlobSource = match &checked {
            Some(range) => range,
            None => &*self.blob,
        };
        let decoded = match &span.start {
            SpanStart::GzipMember | SpanStart::GzipBlock { .. } => {
                gzip::decode_span_at(source, &self.spans, i, &mut fresh)
            }
            SpanStart::ZstdFrame { .. } => zstd::decode_span(source, span, &mut fresh),
            SpanStart::Materialized { .. } => self.redecode_stretch(i, data, &mut fresh),
            // A plain layer whose blob is remote: cached like a decoded span.
            SpanStart::Blob if self.compression == Compression::None => {
                self.blob.read_exact_at(&mut fresh, span.in_offset)
            }
            SpanStart::Blob => Err(io::Error::other("plain span in a compressed layer")),
        };
        decoded.map_err(|e| match e.kind() {
            // A remote blob that cannot be reached is not damaged.
            io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof => {
                self.damaged(span, format!("cannot decode: {e}"))
            }
            _ if self.blob.is_remote() => self.unavailable(span, e),
            _ => self.damaged(span, format!("cannot decode: {e}")),
        })?;
        if !self.hash_every_span && crc32(0, &fresh) != span.crc32 {
            return Err(self.damaged(
                span,
                "decoded bytes do not match the index (the blob changed?)".to_string(),
            ));
        }
        self.check_span_digest(i, &fresh)?;
        let fresh = Arc::new(fresh);
        if !self.keep_decoded {
            self.remember(i, fresh.clone());
            return Ok(fresh);
        }
        let mark = self.check_mark();
        match data.file.write_all_at(&fresh, span.out_offset) {
            Ok(()) => {
                data.residency.mark_present(i);
                self.verified[i].store(mark, Ordering::Release);
                self.stored.fetch_add(span.out_len, Ordering::Relaxed);
            }
            // A full cache disk costs speed, not service: the span is served
            // from memory and decoded again once it leaves the recent few.
            Err(e) => {
                if !self.store_failed.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        layer = %self.digest,
                        "cannot write the data cache ({e}); serving decoded spans from memory until it can"
                    );
                }
                self.remember(i, fresh.clone());
            }
        }
        Ok(fresh)
    }

    /// Span `i`'s compressed range read from a remote blob and checked
    /// against the span's SHA-256 before anything inflates it, where the
    /// digest is over that range (a full pass's own-start spans); the span
    /// is then decoded from this copy and nothing else. A checkpoint inside
    /// a byte also has its `prime` checked against that byte, the first of
    /// the range. `None` where the digest is over the decoded bytes, or the
    /// blob is local (verified whole by the pass; its damage is the CRC's).
    fn checked_compressed_range(&self, i: usize) -> Result<Option<CheckedRange>> {
        let span = &self.spans[i];
        if !self.blob.is_remote() || !self.built_from.hashes_compressed_range(&span.start) {
            return Ok(None);
        }
        let range = spans::compressed_range(&self.spans, i, self.blob.size()).ok_or_else(|| {
            self.damaged(
                span,
                format!("span {i} has no compressed range in the blob"),
            )
        })?;
        let len = usize::try_from(range.end - range.start).map_err(|_| {
            self.damaged(
                span,
                format!("span {i}'s compressed range does not fit in memory here"),
            )
        })?;
        let mut bytes = vec![0u8; len];
        self.blob
            .read_exact_at(&mut bytes, range.start)
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => {
                    self.damaged(span, format!("cannot read span {i}: {e}"))
                }
                _ => self.unavailable(span, e),
            })?;
        let got = self.digest_checks.sha256(&bytes);
        if got != span.sha256 {
            return Err(self.damaged(
                span,
                format!(
                    "span {i}: sha256 mismatch over its compressed bytes {}..{}: the index says \
                     sha256:{}, the remote's are sha256:{}; not decoded",
                    range.start,
                    range.end,
                    spans::hex(&span.sha256),
                    spans::hex(&got)
                ),
            ));
        }
        if let SpanStart::GzipBlock { bits, prime, .. } = span.start {
            if bits > 0 && bits < 8 && bytes[0] >> (8 - bits) != prime {
                return Err(self.damaged(
                    span,
                    format!("span {i}: the index's first {bits} bits are not its compressed bytes'; not decoded"),
                ));
            }
        }
        Ok(Some(CheckedRange {
            start: range.start,
            bytes,
            digest: self.blob.digest(),
            location: self.blob.location(),
        }))
    }

    /// Span `i` of a materialised stretch (one zstd frame, or deflate
    /// blocks longer than a span), decoded from the stretch's start into
    /// `out`. Every other span decoded on the way is kept: stored where
    /// this reader stores (the rest of the stretch too), else the next few
    /// remembered. So reading a whole stretch after a prune or an eviction
    /// decodes (and from a registry, fetches) it once, not once per span.
    fn redecode_stretch(&self, i: usize, data: &DataCache, out: &mut [u8]) -> io::Result<()> {
        let blob = &*self.blob;
        let mut stretch = if self.compression == Compression::Gzip {
            gzip::stretch_from(blob, &self.spans, i)?
        } else {
            zstd::stretch_from(blob, &self.spans, i)?
        };
        let first = stretch.first;
        let stretch_out = self.spans[first].out_offset;
        let mut kept_after = 0;
        for j in first..self.spans.len() {
            let span = &self.spans[j];
            let in_stretch = j == first
                || matches!(span.start, SpanStart::Materialized { frame_out } if frame_out == stretch_out);
            if !in_stretch || (j > i && !self.keep_decoded && kept_after + 1 >= RECENT_SPANS) {
                break;
            }
            if j == i {
                stretch.fill(out)?;
                continue;
            }
            let mut bytes = vec![0u8; usize::try_from(span.out_len).map_err(io::Error::other)?];
            match stretch.fill(&mut bytes) {
                Ok(()) => {}
                Err(e) if j < i => return Err(e),
                // Past the span asked for: what was kept stays kept.
                Err(_) => break,
            }
            if j > i {
                kept_after += 1;
            }
            self.keep_decoded_neighbour(j, data, bytes);
        }
        Ok(())
    }

    /// Keep span `j`, decoded on the way to another span of its stretch,
    /// if it checks: stored (unless already there), or remembered.
    fn keep_decoded_neighbour(&self, j: usize, data: &DataCache, bytes: Vec<u8>) {
        let span = &self.spans[j];
        // A stretch's anchor, hashed over its compressed range, is checked
        // by its own read from a remote.
        let hash_ok = if self.built_from.hashes_compressed_range(&span.start) {
            !self.blob.is_remote()
        } else {
            !(self.blob.is_remote() || self.hash_every_span)
                || self.digest_checks.sha256(&bytes) == span.sha256
        };
        let crc_ok = self.hash_every_span || crc32(0, &bytes) == span.crc32;
        if !crc_ok || !hash_ok {
            return; // its own read will decode it again, and say why it fails
        }
        if !self.keep_decoded {
            self.remember(j, Arc::new(bytes));
            return;
        }
        if data.residency.is_present(j) {
            return;
        }
        if data.file.write_all_at(&bytes, span.out_offset).is_ok() {
            data.residency.mark_present(j);
            self.stored.fetch_add(span.out_len, Ordering::Relaxed);
        }
    }

    /// Tell the blob which bytes decoding span `i` reads, so that a remote
    /// blob fetches them in one request: from its checkpoint (the span's
    /// own, or for a materialised span the one its stretch began at) to the
    /// byte where the next span begins. From a remote blob, the spans that
    /// follow come in the same request while they are not stored, start on
    /// their own (a gzip member or checkpoint, a zstd frame), and the whole range (with
    /// the tar headers' frames between them) stays within
    /// `COALESCE_BYTES`: a table of contents' chunks are often a few KB,
    /// and reading many files in order would otherwise cost a request a
    /// chunk.
    ///
    /// Reads that go along the blob in order grow that reach: a fetch that
    /// starts where the last one ended takes in twice as much, up to
    /// `AHEAD_FETCH_BYTES`; one anywhere else starts again from
    /// `COALESCE_BYTES` (see `FetchRun`).
    fn hint_compressed_range(&self, i: usize) -> io::Result<()> {
        let reach = if self.blob.is_remote() {
            self.fetch_run
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .reach_for(self.spans[i].in_offset)
        } else {
            COALESCE_BYTES
        };
        self.hint_compressed_range_within(i, reach)
    }

    /// As `hint_compressed_range`, taking in following spans up to `reach`
    /// bytes from span `i`'s start.
    fn hint_compressed_range_within(&self, i: usize, reach: u64) -> io::Result<()> {
        let start = self.compressed_start(i);
        let mut end = self.compressed_end(i);
        if self.blob.is_remote() {
            let stored = |j| {
                self.data
                    .as_ref()
                    .is_some_and(|d| d.residency.is_present(j))
            };
            for j in i + 1..self.spans.len() {
                let span = &self.spans[j];
                let own_start = matches!(
                    span.start,
                    SpanStart::GzipMember
                        | SpanStart::GzipBlock { .. }
                        | SpanStart::ZstdFrame { .. }
                );
                let next_end = self.compressed_end(j);
                if !own_start
                    || stored(j)
                    || span.in_offset < self.spans[j - 1].in_offset
                    || next_end.saturating_sub(start) > reach
                {
                    break;
                }
                end = end.max(next_end);
            }
        }
        let end = end.min(self.blob.size());
        if self.blob.is_remote() {
            self.fetch_run
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .fetched(start, end);
        }
        self.blob.will_need(start, end.saturating_sub(start))
    }

    /// Where the compressed bytes of span `i` begin: one byte before its
    /// `in_offset` for a checkpoint inside a byte, whose digest covers it.
    fn compressed_start(&self, i: usize) -> u64 {
        let at = self.spans[i].in_offset;
        spans::compressed_range(&self.spans, i, self.blob.size()).map_or(at, |r| r.start.min(at))
    }

    /// Where the compressed bytes decoding span `i` reads end: its frame's
    /// end, or the byte where the next span begins.
    fn compressed_end(&self, i: usize) -> u64 {
        let span = &self.spans[i];
        let start = span.in_offset;
        match span.start {
            SpanStart::ZstdFrame { in_len } => start.saturating_add(in_len),
            SpanStart::Blob => start.saturating_add(span.out_len),
            _ => self.spans[i + 1..]
                .iter()
                .map(|s| s.in_offset)
                .find(|&o| o > start)
                .map_or(self.blob.size(), |o| o.saturating_add(1)),
        }
    }

    /// Whether a span's bytes read back from the data cache are what the
    /// index says: by CRC-32 (local damage), or by SHA-256 where the index
    /// came from a table of contents and has no CRC.
    fn stored_span_sound(&self, span: &Span, bytes: &[u8]) -> bool {
        if self.hash_every_span {
            self.digest_checks.sha256(bytes) == span.sha256
        } else {
            crc32(0, bytes) == span.crc32
        }
    }

    /// Bytes that came from a remote (a registry, or the store it
    /// redirects to) must hash to the span's SHA-256, which the verified
    /// pass recorded (or the published index carries): a CRC-32 match
    /// proves nothing against someone who chose the bytes. Local blobs
    /// were verified whole by the pass; their damage is the CRC's to find.
    /// Under an index made from a table of contents every span is hashed:
    /// nothing else has checked the blob.
    /// A digest over the compressed range was checked before decoding
    /// (`checked_compressed_range`).
    fn check_span_digest(&self, i: usize, bytes: &[u8]) -> Result<()> {
        let span = &self.spans[i];
        if (!self.blob.is_remote() && !self.hash_every_span)
            || self.built_from.hashes_compressed_range(&span.start)
        {
            return Ok(());
        }
        let got = self.digest_checks.sha256(bytes);
        if got != span.sha256 {
            return Err(self.damaged(
                span,
                format!(
                    "span {i}: sha256 mismatch: the index says sha256:{}, {} bytes are \
                     sha256:{}; not served",
                    spans::hex(&span.sha256),
                    if self.blob.is_remote() {
                        "the remote's"
                    } else {
                        "the blob's"
                    },
                    spans::hex(&got)
                ),
            ));
        }
        Ok(())
    }

    fn check_blob_span(&self, span: &Span, bytes: &[u8]) -> Result<()> {
        if crc32(0, bytes) != span.crc32 {
            return Err(self.damaged(span, "the blob changed since it was indexed".to_string()));
        }
        Ok(())
    }

    /// A span's length as a buffer size; only a 32-bit target can refuse one.
    fn span_len(&self, span: &Span) -> Result<usize> {
        usize::try_from(span.out_len).map_err(|_| {
            self.damaged(
                span,
                format!("a {}-byte span does not fit in memory here", span.out_len),
            )
        })
    }

    fn read_failed(&self, span: &Span, e: io::Error) -> Error {
        let what = if self.data.is_some() {
            "the data cache"
        } else {
            "the blob"
        };
        if e.kind() == io::ErrorKind::UnexpectedEof {
            self.damaged(span, format!("{what} is shorter than when it was indexed"))
        } else {
            self.damaged(span, format!("cannot read {what}: {e}"))
        }
    }

    fn lock(&self, i: usize) -> std::sync::MutexGuard<'_, ()> {
        self.locks[i % LOCK_STRIPES]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

/// A span's compressed range, read and checked against its digest: the
/// only bytes its decoding may read. Reads before it fail; reads past it
/// find the end of the blob.
struct CheckedRange {
    start: u64,
    bytes: Vec<u8>,
    digest: Digest,
    location: String,
}

impl BlobSource for CheckedRange {
    fn digest(&self) -> Digest {
        self.digest
    }

    fn size(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let Some(at) = offset.checked_sub(self.start) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a read at offset {offset} is before the checked range"),
            ));
        };
        let at = usize::try_from(at)
            .unwrap_or(usize::MAX)
            .min(self.bytes.len());
        let n = buf.len().min(self.bytes.len() - at);
        buf[..n].copy_from_slice(&self.bytes[at..at + n]);
        Ok(n)
    }

    fn location(&self) -> String {
        self.location.clone()
    }
}

/// A remote blob's readahead: where the last fetch ended and how far the
/// next one reaches. A fetch that starts at (or just past) the last one's
/// end doubles the reach, up to `AHEAD_FETCH_BYTES`; one that starts
/// anywhere else goes back to `COALESCE_BYTES`. A first file, or files read
/// here and there, are fetched with the small reach; `tar`, `cp -r` and a
/// container reading a layer in order soon take it in few large requests.
#[derive(Debug, Default)]
struct FetchRun {
    last_end: u64,
    reach: u64,
}

/// How far past the last fetch's end a fetch still counts as following it
/// (the bytes of the spans in between that were stored already).
const FETCH_RUN_SLACK: u64 = 64 << 10;

impl FetchRun {
    fn reach_for(&self, start: u64) -> u64 {
        if self.follows(start) {
            (self.reach.max(COALESCE_BYTES) * 2).min(AHEAD_FETCH_BYTES)
        } else {
            COALESCE_BYTES
        }
    }

    /// Whether a fetch from `start` follows the last one: it starts at its
    /// end, a little past it, or on one of its last two bytes. A gzip
    /// span's fetch ends one byte into the next span (`compressed_end`),
    /// and the next span's starts one byte before its own start where that
    /// is inside a byte (the byte holding both spans' bits, which its
    /// digest covers: `compressed_start`).
    fn follows(&self, start: u64) -> bool {
        self.last_end > 0
            && start.saturating_add(2) >= self.last_end
            && start.saturating_sub(self.last_end) <= FETCH_RUN_SLACK
    }

    /// A fetch of `start..end` is asked for. One inside the last fetch's
    /// stretch (its bytes are in memory, or on their way) changes nothing.
    fn fetched(&mut self, start: u64, end: u64) {
        if !self.follows(start) && start < self.last_end {
            return;
        }
        self.reach = self.reach_for(start);
        self.last_end = end;
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use indicatif::ProgressBar;

    use super::*;
    use crate::blob::MemoryBlob;
    use crate::cache::{Cache, CacheEntry};
    use crate::layer::LayerInfo;
    use crate::source::{ImageStore, Layout};

    /// A tar of two files of pseudo-random text (small deflate blocks, so
    /// many gzip checkpoints), so a read from a wrong offset cannot match.
    fn sample_tar() -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for (name, len) in [("a", 3 << 20), ("b", 300_001)] {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    b' ' + (seed >> 58) as u8
                })
                .collect();
            let mut header = tar::Header::new_ustar();
            header.set_size(len);
            header.set_mode(0o644);
            builder.append_data(&mut header, name, &data[..]).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn compress(tar: &[u8], compression: Compression) -> Vec<u8> {
        match compression {
            Compression::None => tar.to_vec(),
            Compression::Gzip => {
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                enc.write_all(tar).unwrap();
                enc.finish().unwrap()
            }
            // Frames of 256 KiB: each one a span of its own.
            Compression::Zstd => tar
                .chunks(256 << 10)
                .flat_map(|c| ::zstd::stream::encode_all(c, 3).unwrap())
                .collect(),
        }
    }

    /// A one-blob layout in `root` and the layer's cache entry, indexed
    /// with 64 KiB gzip spans.
    fn indexed(root: &Path, blob: &[u8], tar: &[u8], compression: Compression) -> CacheEntry {
        let pass = crate::layer::index::PassOptions {
            gzip_span: 64 << 10,
            large_file_span: 64 << 10,
            hash_apart: false,
        };
        indexed_with(root, blob, tar, compression, pass)
    }

    fn indexed_with(
        root: &Path,
        blob: &[u8],
        tar: &[u8],
        compression: Compression,
        pass: crate::layer::index::PassOptions,
    ) -> CacheEntry {
        let layout_dir = root.join("layout");
        std::fs::create_dir_all(layout_dir.join("blobs/sha256")).unwrap();
        std::fs::write(
            layout_dir.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
        let digest = Digest::of(blob);
        std::fs::write(layout_dir.join("blobs/sha256").join(digest.hex()), blob).unwrap();
        let layer = LayerInfo {
            position: 0,
            digest,
            size: blob.len() as u64,
            media_type: "test".to_string(),
            compression,
            diff_id: Digest::of(tar),
            toc: None,
        };
        let layout = Layout::open(&layout_dir).unwrap();
        let cache = Cache::locate(Some(&root.join("cache"))).unwrap();
        let blob = layout.open_blob(&digest, Some(blob.len() as u64)).unwrap();
        cache
            .entry(&blob, &layer, &ProgressBar::hidden(), pass)
            .unwrap()
    }

    /// The readahead of a remote blob: a fetch that follows the last one
    /// doubles the reach up to `AHEAD_FETCH_BYTES`; one elsewhere starts
    /// again; one inside the last stretch changes nothing.
    /// Gzip spans' ranges share a byte: the next span's fetch starts on
    /// one of the last two bytes of the one before, and that follows it too (it was
    /// taken as inside the last stretch, and the reach never grew).
    #[test]
    fn a_fetch_from_the_last_ones_final_byte_follows_it() {
        let mut run = FetchRun::default();
        let mut start = 1000;
        for n in 0..8 {
            let end = start + 100_001; // one byte into the next span
            run.fetched(start, end);
            // On the next span's first byte, or the byte before it.
            start = end - 1 - n % 2;
        }
        assert_eq!(run.reach_for(start), AHEAD_FETCH_BYTES);
        // Further inside the last stretch: no change.
        run.fetched(start - 10, start + 50);
        assert_eq!(run.reach_for(start), AHEAD_FETCH_BYTES);
        assert_eq!(run.reach_for(start - 2), COALESCE_BYTES);
    }

    #[test]
    fn the_fetch_run_grows_along_the_blob_and_starts_again_elsewhere() {
        let mut run = FetchRun::default();
        assert_eq!(run.reach_for(0), COALESCE_BYTES);
        run.fetched(0, 1000);
        assert_eq!(run.reach_for(1000), 2 * COALESCE_BYTES);
        run.fetched(1000, 2000);
        // Just past the end (stored spans in between) still follows.
        assert_eq!(run.reach_for(2000 + FETCH_RUN_SLACK), 4 * COALESCE_BYTES);
        let mut end = 2000;
        for _ in 0..10 {
            let next = end + 10;
            run.fetched(next, next + 100);
            end = next + 100;
        }
        assert_eq!(run.reach_for(end), AHEAD_FETCH_BYTES);
        // Inside the last stretch: no change.
        run.fetched(end - 50, end + 5000);
        assert_eq!(run.reach_for(end), AHEAD_FETCH_BYTES);
        // Elsewhere: back to the small reach, and the run starts there.
        assert_eq!(run.reach_for(end + FETCH_RUN_SLACK + 1), COALESCE_BYTES);
        run.fetched(10 << 30, (10 << 30) + 10);
        assert_eq!(run.reach_for((10 << 30) + 10), 2 * COALESCE_BYTES);
        assert_eq!(run.reach_for(5), COALESCE_BYTES);
    }

    /// Spans hashed on a thread of their own get the digests they get in
    /// place: the SHA-256 of the span's compressed range where it starts on
    /// its own (a gzip member or checkpoint, a zstd frame), else of its own
    /// bytes of the tar. Among the blobs: gzip members that are empty (their
    /// spans are dropped and their bytes go to the range before), a zstd
    /// skippable frame and a frame with no output (their bytes are no
    /// span's).
    #[test]
    fn spans_hashed_apart_have_the_digests_of_their_bytes() {
        let tar = sample_tar();
        let gzip_member = |part: &[u8]| {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(part).unwrap();
            enc.finish().unwrap()
        };
        let members: Vec<u8> = [
            &tar[..1 << 20],
            &[],
            &tar[1 << 20..(2 << 20) + 77],
            &[],
            &tar[(2 << 20) + 77..],
            &[],
        ]
        .iter()
        .flat_map(|part| gzip_member(part))
        .collect();
        let mut frames = Vec::new();
        for (n, chunk) in tar.chunks(256 << 10).enumerate() {
            frames.extend(::zstd::stream::encode_all(chunk, 3).unwrap());
            if n == 3 {
                // A skippable frame, then a frame of nothing.
                frames.extend(0x184d_2a50u32.to_le_bytes());
                frames.extend(5u32.to_le_bytes());
                frames.extend(b"skip!");
                frames.extend(::zstd::stream::encode_all(&[][..], 3).unwrap());
            }
        }
        let blobs = [
            (Compression::None, compress(&tar, Compression::None)),
            (Compression::Gzip, compress(&tar, Compression::Gzip)),
            (Compression::Gzip, members),
            (Compression::Zstd, compress(&tar, Compression::Zstd)),
            (Compression::Zstd, frames),
        ];
        for (compression, blob) in blobs {
            let [in_place, apart] = [false, true].map(|hash_apart| {
                let root = tempfile::tempdir().unwrap();
                let pass = crate::layer::index::PassOptions {
                    gzip_span: 64 << 10,
                    large_file_span: 64 << 10,
                    hash_apart,
                };
                indexed_with(root.path(), &blob, &tar, compression, pass).index
            });
            assert!(apart.spans.len() > 3, "{compression:?}");
            assert_eq!(apart.spans, in_place.spans, "{compression:?}");
            let mut over_ranges = 0;
            for (i, span) in apart.spans.iter().enumerate() {
                let bytes = if apart.built_from.hashes_compressed_range(&span.start) {
                    over_ranges += 1;
                    let range =
                        spans::compressed_range(&apart.spans, i, blob.len() as u64).unwrap();
                    &blob[range.start as usize..range.end as usize]
                } else {
                    &tar[span.out_offset as usize..][..span.out_len as usize]
                };
                assert_eq!(
                    span.sha256,
                    spans::sha256(bytes),
                    "{compression:?} span {i}"
                );
            }
            let every = compression != Compression::None;
            assert_eq!(over_ranges == apart.spans.len(), every, "{compression:?}");
        }
    }

    /// Inside a file of 1 MiB or more checkpoints come about 256 KiB apart,
    /// among small files about 1 MiB, and every byte reads back.
    #[test]
    fn checkpoints_come_closer_inside_large_files_and_every_byte_reads_back() {
        let mut seed = 0x5851_f42d_4c95_7f2du64;
        let mut text = |len: usize| -> Vec<u8> {
            let words: [&[u8]; 6] = [b"span ", b"layer ", b"window\n", b"tar ", b"oci ", b"blob "];
            let mut out = Vec::with_capacity(len + 8);
            while out.len() < len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                out.extend_from_slice(words[(seed % 6) as usize]);
                out.push(b'a' + (seed >> 59) as u8);
            }
            out.truncate(len);
            out
        };
        let mut builder = tar::Builder::new(Vec::new());
        let mut files: Vec<(String, Vec<u8>)> = Vec::new();
        for i in 0..60 {
            files.push((format!("small/{i}"), text(60_000)));
        }
        files.push(("big".to_string(), text(4 << 20)));
        for i in 60..120 {
            files.push((format!("small/{i}"), text(60_000)));
        }
        for (name, data) in &files {
            let mut header = tar::Header::new_ustar();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            builder.append_data(&mut header, name, &data[..]).unwrap();
        }
        let tar = builder.into_inner().unwrap();
        let root = tempfile::tempdir().unwrap();
        let pass = crate::layer::index::PassOptions {
            gzip_span: 1 << 20,
            large_file_span: 256 << 10,
            hash_apart: false,
        };
        let blob = compress(&tar, Compression::Gzip);
        let entry = indexed_with(root.path(), &blob, &tar, Compression::Gzip, pass);
        let big = entry
            .index
            .entries
            .iter()
            .find(|e| e.path() == b"big")
            .unwrap();
        let (from, to) = (big.data_offset, big.data_offset + big.size);
        let spans = &entry.index.spans;
        // Spans wholly inside the big file, past the first (the tar reader
        // marks the file a read buffer ahead of the inflater, no sooner).
        let inside: Vec<u64> = spans
            .iter()
            .filter(|s| s.out_offset >= from + (512 << 10) && s.out_offset + s.out_len <= to)
            .map(|s| s.out_len)
            .collect();
        assert!(
            inside.len() >= 8,
            "{} spans inside: {inside:?}",
            inside.len()
        );
        assert!(
            inside.iter().all(|&l| (256 << 10..1 << 20).contains(&l)),
            "{inside:?}"
        );
        // Among the small files, before the big one and after it.
        let outside: Vec<u64> = spans
            .iter()
            .filter(|s| s.out_offset + s.out_len <= from || s.out_offset >= to)
            .filter(|s| s.out_offset + s.out_len < tar.len() as u64)
            .map(|s| s.out_len)
            .collect();
        assert!(outside.len() >= 4, "{outside:?}");
        assert!(outside.iter().all(|&l| l >= 1 << 20), "{outside:?}");
        let reader = open_reader(root.path(), &entry);
        let mut all = vec![0u8; tar.len()];
        assert_eq!(reader.read_at(0, &mut all).unwrap(), tar.len());
        assert!(all == tar, "the bytes read back differ");
        for (offset, len) in read_ranges(tar.len() as u64) {
            let mut buf = vec![0u8; len];
            let fresh = open_reader(root.path(), &entry);
            assert_eq!(fresh.read_at(offset, &mut buf).unwrap(), len);
            assert!(buf == tar[offset as usize..offset as usize + len]);
        }
    }

    /// A blob that counts the bytes read from it.
    struct CountingBlob {
        inner: Blob,
        read: AtomicU64,
    }

    impl crate::blob::BlobSource for CountingBlob {
        fn digest(&self) -> Digest {
            self.inner.digest()
        }
        fn size(&self) -> u64 {
            self.inner.size()
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
            let n = self.inner.read_at(buf, offset)?;
            self.read.fetch_add(n as u64, Ordering::Relaxed);
            Ok(n)
        }
        fn location(&self) -> String {
            self.inner.location()
        }
    }

    /// Issue 22: after a prune (or an eviction), a layer of one zstd frame
    /// (every span materialised) read front to back costs the frame once,
    /// in bytes read from the blob (what a registry would send) and so in
    /// decoding; it cost the frame up to the span once per span.
    #[test]
    fn a_pruned_single_frame_layer_reads_back_in_one_pass_over_its_blob() {
        let mut tar = sample_tar();
        for _ in 0..2 {
            tar.extend_from_within(..tar.len() - 1024);
            tar.extend_from_slice(&[0u8; 1024]);
        }
        let root = tempfile::tempdir().unwrap();
        let blob_bytes = ::zstd::stream::encode_all(&tar[..], 3).unwrap();
        let entry = indexed(root.path(), &blob_bytes, &tar, Compression::Zstd);
        let spans = entry.index.spans.len();
        assert!(spans >= 8, "{spans} spans");
        assert!(entry
            .index
            .spans
            .iter()
            .all(|s| matches!(s.start, SpanStart::Materialized { .. })));
        let counting = Arc::new(CountingBlob {
            inner: blob_source(root.path(), &entry),
            read: AtomicU64::new(0),
        });
        let reader = LayerReader::open(&entry.dir, &entry.index, counting.clone()).unwrap();
        let all: Vec<usize> = (0..spans).collect();
        assert!(reader.evict(&all) > 0, "nothing was pruned");
        let mut back = vec![0u8; tar.len()];
        for (at, chunk) in back.chunks_mut(128 << 10).enumerate() {
            reader.read_at((at * (128 << 10)) as u64, chunk).unwrap();
        }
        assert!(back == tar, "the bytes read back differ");
        let read = counting.read.load(Ordering::Relaxed);
        let size = blob_bytes.len() as u64;
        eprintln!("{spans} spans: {read} bytes read from a {size}-byte blob");
        assert!(
            read <= 2 * size,
            "{read} bytes read from a {size}-byte blob"
        );
    }

    /// A blob as a registry serves it, with one byte changed where asked.
    struct RemoteBytes {
        blob: MemoryBlob,
        flipped: Option<u64>,
    }

    impl BlobSource for RemoteBytes {
        fn digest(&self) -> Digest {
            self.blob.digest()
        }

        fn size(&self) -> u64 {
            self.blob.size()
        }

        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
            let n = self.blob.read_at(buf, offset)?;
            if let Some(at) = self
                .flipped
                .filter(|at| (offset..offset + n as u64).contains(at))
            {
                buf[(at - offset) as usize] ^= 0x20;
            }
            Ok(n)
        }

        fn location(&self) -> String {
            self.blob.location()
        }

        fn is_remote(&self) -> bool {
            true
        }
    }

    /// From a remote, a full pass's gzip and zstd spans are checked over
    /// their compressed range: reading every byte hashes each span's range
    /// once (fewer bytes than decoded ones), and a byte changed inside
    /// one span's range fails that span before it is inflated, while the
    /// spans beside it still read.
    #[test]
    fn remote_spans_are_checked_over_their_compressed_range_before_inflating() {
        let tar = sample_tar();
        for compression in [Compression::Gzip, Compression::Zstd] {
            let root = tempfile::tempdir().unwrap();
            let blob = compress(&tar, compression);
            let entry = indexed(root.path(), &blob, &tar, compression);
            let spans = &entry.index.spans;
            let ranges: Vec<_> = (0..spans.len())
                .map(|i| spans::compressed_range(spans, i, blob.len() as u64).unwrap())
                .collect();
            let remote = |flipped| -> Blob {
                Arc::new(RemoteBytes {
                    blob: MemoryBlob::new(blob.clone(), "a test registry".to_string()),
                    flipped,
                })
            };
            let all: Vec<usize> = (0..spans.len()).collect();
            let honest = LayerReader::open(&entry.dir, &entry.index, remote(None)).unwrap();
            honest.evict(&all);
            let mut back = vec![0u8; tar.len()];
            assert_eq!(honest.read_at(0, &mut back).unwrap(), tar.len());
            assert!(back == tar, "{compression:?}: the bytes read back differ");
            let checks = honest.digest_checks();
            assert_eq!(checks.spans, spans.len() as u64, "{compression:?}");
            let range_bytes: u64 = ranges.iter().map(|r| r.end - r.start).sum();
            assert_eq!(checks.bytes, range_bytes, "{compression:?}");
            assert!(checks.bytes < tar.len() as u64, "{compression:?}");

            let k = spans.len() / 2;
            let flipped = (ranges[k].start + ranges[k].end) / 2;
            let forged =
                LayerReader::open(&entry.dir, &entry.index, remote(Some(flipped))).unwrap();
            forged.evict(&all);
            let span = &spans[k];
            let mut buf = vec![0u8; span.out_len as usize];
            let err = forged
                .read_at(span.out_offset, &mut buf)
                .unwrap_err()
                .to_string();
            let want = format!(
                "span {k}: sha256 mismatch over its compressed bytes {}..{}: the index says sha256:{}",
                ranges[k].start,
                ranges[k].end,
                spans::hex(&span.sha256)
            );
            assert!(err.contains(&want), "{compression:?}: {err}");
            assert!(err.ends_with("; not decoded"), "{compression:?}: {err}");
            for j in [k - 1, k + 1] {
                let span = &spans[j];
                let mut buf = vec![0u8; span.out_len as usize];
                forged.read_at(span.out_offset, &mut buf).unwrap();
                assert!(buf[..] == tar[span.out_offset as usize..][..buf.len()]);
            }
        }
    }

    /// A checkpoint's window is no part of what its compressed-range digest
    /// covers: an index (a damaged one, or a bug) with another window
    /// passes the range check and inflates to other bytes, which the
    /// CRC-32 of the decoded bytes refuses. No span with a wrong window is
    /// served other bytes than its own; some are refused.
    #[test]
    fn a_wrong_window_passes_the_range_check_and_fails_the_crc() {
        let root = tempfile::tempdir().unwrap();
        let (tar, entry) = gzip_sample(root.path());
        let blob = compress(&tar, Compression::Gzip);
        let checkpoints: Vec<usize> = (0..entry.index.spans.len())
            .filter(|&i| matches!(entry.index.spans[i].start, SpanStart::GzipBlock { .. }))
            .collect();
        assert!(checkpoints.len() > 4, "{} checkpoints", checkpoints.len());
        let mut refused = 0;
        for (n, &i) in checkpoints.iter().enumerate() {
            let other = checkpoints[(n + 1) % checkpoints.len()];
            let SpanStart::GzipBlock { window, .. } = entry.index.spans[other].start.clone() else {
                unreachable!()
            };
            let mut spans = entry.index.spans.to_vec();
            if let SpanStart::GzipBlock { window: w, .. } = &mut spans[i].start {
                *w = window;
            }
            let mut index = entry.index.clone();
            index.spans = spans.into();
            let blob: Blob = Arc::new(RemoteBytes {
                blob: MemoryBlob::new(blob.clone(), "a test registry".to_string()),
                flipped: None,
            });
            let reader = LayerReader::open(&entry.dir, &index, blob).unwrap();
            reader.evict(&[i]);
            let span = &index.spans[i];
            let mut buf = vec![0u8; span.out_len as usize];
            match reader.read_at(span.out_offset, &mut buf) {
                Ok(_) => assert!(buf[..] == tar[span.out_offset as usize..][..buf.len()]),
                Err(e) => {
                    let e = e.to_string();
                    assert!(
                        e.contains("decoded bytes do not match the index")
                            || e.contains("cannot decode"),
                        "{e}"
                    );
                    refused += 1;
                }
            }
        }
        assert!(refused > 0, "no span's output depends on its window");
    }

    fn blob_source(root: &Path, entry: &CacheEntry) -> Blob {
        let layout = Layout::open(&root.join("layout")).unwrap();
        layout.blob(&entry.index.digest, None).unwrap()
    }

    /// The sample tar, and its gzip layer indexed in `root`.
    fn gzip_sample(root: &Path) -> (Vec<u8>, CacheEntry) {
        let tar = sample_tar();
        let entry = indexed(
            root,
            &compress(&tar, Compression::Gzip),
            &tar,
            Compression::Gzip,
        );
        (tar, entry)
    }

    /// A new reader of `entry`, as another process would open it.
    fn open_reader(root: &Path, entry: &CacheEntry) -> LayerReader {
        LayerReader::open(&entry.dir, &entry.index, blob_source(root, entry)).unwrap()
    }

    /// Reads that start and end anywhere, across span boundaries too.
    fn read_ranges(len: u64) -> Vec<(u64, usize)> {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut out = vec![(0, 1), (len - 1, 1), (0, len as usize), (len - 5000, 5000)];
        for _ in 0..200 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let offset = seed % len;
            out.push((offset, ((seed >> 40) % 400_000).min(len - offset) as usize));
        }
        out
    }

    /// The decode-ahead's step: a span is decoded and stored, or (in a
    /// second reader, as after a remount) read back and checked; a span
    /// whose lock is held is left alone; nothing is prepared once a write
    /// to the data cache has failed. Reads then give the tar's bytes.
    #[test]
    fn prepare_span_if_idle_stores_checks_and_gives_way() {
        let work = tempfile::tempdir().unwrap();
        let (tar, entry) = gzip_sample(work.path());
        let open = || open_reader(work.path(), &entry);
        let spans = entry.index.spans.len();
        assert!(spans > 3);
        let first = open();
        assert!(!first.is_ready(1) && !first.is_ready(2));
        first.prepare_span_if_idle(1, false).unwrap();
        assert!(first.is_ready(1));
        {
            let _held = first.lock(2);
            first.prepare_span_if_idle(2, false).unwrap();
            assert!(!first.is_ready(2), "a span whose lock is held was prepared");
        }
        first.store_failed.store(true, Ordering::Relaxed);
        first.prepare_span_if_idle(2, false).unwrap();
        assert!(!first.is_ready(2), "prepared after a failed write");

        let second = open();
        assert!(
            !second.is_ready(1),
            "a new reader trusts what it has not checked"
        );
        second.prepare_span_if_idle(1, false).unwrap();
        assert!(second.is_ready(1));
        let span = &entry.index.spans[1];
        let mut buf = vec![0u8; span.out_len as usize];
        assert_eq!(
            second.read_at(span.out_offset, &mut buf).unwrap(),
            buf.len()
        );
        let at = span.out_offset as usize;
        assert!(buf == tar[at..at + buf.len()]);
    }

    #[test]
    fn reads_anywhere_equal_the_tar_for_every_compression() {
        let tar = sample_tar();
        for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let work = tempfile::tempdir().unwrap();
            let entry = indexed(work.path(), &compress(&tar, compression), &tar, compression);
            assert!(
                entry.index.spans.len() > 3,
                "{compression:?}: too few spans"
            );
            let open = || {
                let blob = blob_source(work.path(), &entry);
                LayerReader::open(&entry.dir, &entry.index, blob).unwrap()
            };
            // The first reader decodes the spans, the second finds them cached.
            let (pread, mapped) = (open(), open());
            for (offset, len) in read_ranges(tar.len() as u64) {
                let want = &tar[offset as usize..offset as usize + len];
                for (name, reader) in [("decoding", &pread), ("cached", &mapped)] {
                    let mut buf = vec![0u8; len];
                    assert_eq!(reader.read_at(offset, &mut buf).unwrap(), len);
                    assert!(
                        buf == want,
                        "{compression:?} {name}: {len} bytes at {offset} differ"
                    );
                }
            }
            let mut past_end = [0u8; 10];
            assert_eq!(
                pread.read_at(tar.len() as u64 - 4, &mut past_end).unwrap(),
                4
            );
        }
    }

    #[test]
    fn pread_path_repairs_a_damaged_data_cache() {
        let work = tempfile::tempdir().unwrap();
        let (tar, entry) = gzip_sample(work.path());
        let reader = || open_reader(work.path(), &entry);
        let mut buf = vec![0u8; tar.len()];
        reader().read_at(0, &mut buf).unwrap();
        let data = std::fs::OpenOptions::new()
            .write(true)
            .open(entry.dir.join("data"))
            .unwrap();
        data.write_all_at(&[0xee; 100], 1 << 20).unwrap();
        let mut again = vec![0u8; tar.len()];
        reader().read_at(0, &mut again).unwrap();
        assert!(again == tar, "a damaged span was served");
        assert!(
            std::fs::read(entry.dir.join("data")).unwrap() == tar,
            "the damaged span was not written again"
        );
    }

    #[test]
    fn pread_path_refuses_a_plain_blob_changed_after_indexing() {
        let tar = sample_tar();
        let work = tempfile::tempdir().unwrap();
        let entry = indexed(work.path(), &tar, &tar, Compression::None);
        let path = work
            .path()
            .join("layout/blobs/sha256")
            .join(entry.index.digest.hex());
        let blob = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        blob.write_all_at(b"changed", 2 << 20).unwrap();
        let reader =
            LayerReader::open(&entry.dir, &entry.index, blob_source(work.path(), &entry)).unwrap();
        let mut buf = vec![0u8; 4096];
        assert_eq!(reader.read_at(0, &mut buf).unwrap(), 4096);
        assert_eq!(&buf[..], &tar[..4096]);
        let err = reader.read_at(2 << 20, &mut buf).unwrap_err();
        assert!(
            matches!(&err, Error::DamagedSpan { reason, .. } if reason == "the blob changed since it was indexed"),
            "{err}"
        );
        blob.set_len(1 << 20).unwrap();
        let err = reader.read_at((1 << 20) + 10, &mut buf).unwrap_err();
        assert!(
            matches!(&err, Error::DamagedSpan { reason, .. } if reason == "the blob is shorter than when it was indexed"),
            "{err}"
        );
    }

    /// What "never wrong bytes" means, pinned: a process checks each span
    /// against the index's CRC-32 the first time it reads it, and reads it
    /// straight from the file after that. A cache file changed behind a
    /// live reader's back is served as it now is by that reader (ocimount
    /// itself only ever writes a span it has just decoded and checked);
    /// every other reader, and the same one after a remount, checks the
    /// span again and repairs it.
    #[test]
    fn a_data_file_changed_after_its_first_read_is_caught_by_the_next_reader() {
        let work = tempfile::tempdir().unwrap();
        let (tar, entry) = gzip_sample(work.path());
        let open = || open_reader(work.path(), &entry);
        let first = open();
        let mut buf = vec![0u8; 4096];
        first.read_at(1 << 20, &mut buf).unwrap();
        assert!(buf == tar[1 << 20..(1 << 20) + 4096]);
        let data = std::fs::OpenOptions::new()
            .write(true)
            .open(entry.dir.join("data"))
            .unwrap();
        data.write_all_at(&[0xee; 16], 1 << 20).unwrap();
        first.read_at(1 << 20, &mut buf).unwrap();
        assert_eq!(
            &buf[..16],
            &[0xee; 16],
            "the first reader trusts what it checked"
        );
        let mut again = vec![0u8; 4096];
        open().read_at(1 << 20, &mut again).unwrap();
        assert!(
            again == tar[1 << 20..(1 << 20) + 4096],
            "a new reader served a changed span"
        );
        let mut repaired = vec![0u8; 16];
        std::fs::File::open(entry.dir.join("data"))
            .unwrap()
            .read_exact_at(&mut repaired, 1 << 20)
            .unwrap();
        assert_eq!(
            repaired,
            tar[1 << 20..(1 << 20) + 16],
            "the span was not repaired"
        );
    }

    /// An eviction by another process (here another reader of the same
    /// cache files) under a reader that had checked the span: the reader
    /// sees the epoch move and reads it again the checked way, never the
    /// punched zeros; the span is decoded and stored again.
    #[test]
    fn a_span_evicted_under_a_reader_is_read_again_never_as_zeros() {
        let work = tempfile::tempdir().unwrap();
        let (tar, entry) = gzip_sample(work.path());
        let open = || open_reader(work.path(), &entry);
        let (reader, evictor) = (open(), open());
        let mut all = vec![0u8; tar.len()];
        reader.read_at(0, &mut all).unwrap();
        assert!(all == tar);
        let resident: Vec<usize> = evictor.resident_spans().iter().map(|s| s.0).collect();
        assert_eq!(resident.len(), entry.index.spans.len());
        let freed = evictor.evict(&resident);
        assert!(freed > (tar.len() as u64) / 2, "only {freed} bytes punched");
        assert!(evictor.resident_spans().is_empty());
        let mut again = vec![0u8; tar.len()];
        reader.read_at(0, &mut again).unwrap();
        assert!(
            again == tar,
            "an evicted span was served as it is on disk now"
        );
        assert_eq!(evictor.resident_spans().len(), entry.index.spans.len());
    }

    /// Readers on four threads and an evictor on a fifth, over two readers
    /// of the same cache files (as two processes would be): every byte read
    /// is the tar's, however the evictions fall between checks and reads.
    #[test]
    fn reads_racing_evictions_are_always_the_tars_bytes() {
        let work = tempfile::tempdir().unwrap();
        let (tar, entry) = gzip_sample(work.path());
        let open = || open_reader(work.path(), &entry);
        let (reader, evictor) = (open(), open());
        let stop = AtomicBool::new(false);
        /// Stops the evictor however the readers end, a failed check included.
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        std::thread::scope(|s| {
            let _stop = StopOnDrop(&stop);
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let resident: Vec<usize> =
                        evictor.resident_spans().iter().map(|r| r.0).collect();
                    evictor.evict(&resident);
                }
            });
            let workers: Vec<_> = (0..4u64)
                .map(|t| {
                    let (reader, tar) = (&reader, &tar);
                    s.spawn(move || {
                        let mut seed = 0x9e37_79b9 + t;
                        for _ in 0..300 {
                            seed ^= seed << 13;
                            seed ^= seed >> 7;
                            seed ^= seed << 17;
                            let offset = seed % tar.len() as u64;
                            let len = ((seed >> 33) % 200_000).min(tar.len() as u64 - offset);
                            let mut buf = vec![0u8; len as usize];
                            reader.read_at(offset, &mut buf).unwrap();
                            assert!(
                                buf[..] == tar[offset as usize..(offset + len) as usize],
                                "{len} bytes at {offset} differ"
                            );
                        }
                    })
                })
                .collect();
            let results: Vec<_> = workers.into_iter().map(|w| w.join()).collect();
            stop.store(true, Ordering::Relaxed);
            for r in results {
                r.unwrap();
            }
        });
    }
}
