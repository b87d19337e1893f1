//! Bytes at an offset of a layer's uncompressed stream, span by span.
//!
//! Compressed layers: a span is decoded once (gzip from its checkpoint, zstd
//! by frame), checked against the CRC-32 the verified indexing pass took,
//! written to the cache's sparse `data` file, marked in `spans`, and served
//! from the mapping. Plain tar is served straight from the mapped blob.
//! Every span is checked once per process before its bytes are served, so a
//! damaged cache is repaired and a damaged blob fails with an error, never
//! with wrong bytes.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Mutex;

use memmap2::{Mmap, MmapMut};

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::layer::gzip;
use crate::layer::index::LayerIndex;
use crate::layer::spans::{crc32, span_at, Span, SpanStart};
use crate::layer::zstd;
use crate::oci::media::Compression;

const LOCK_STRIPES: usize = 64;

pub struct LayerReader {
    digest: Digest,
    spans: Vec<Span>,
    blob: File,
    /// Plain tar only: the blob, mapped.
    blob_map: Option<Mmap>,
    data: Option<DataCache>,
    verified: Vec<AtomicBool>,
    locks: Vec<Mutex<()>>,
}

struct DataCache {
    file: File,
    map: Mmap,
    present: MmapMut,
}

impl LayerReader {
    /// `dir` is the layer's cache directory; `blob` the open layer blob.
    pub fn open(dir: &Path, index: &LayerIndex, blob: File) -> Result<LayerReader> {
        let mut blob_map = None;
        let mut data = None;
        if index.uncompressed_size > 0 {
            if index.compression == Compression::None {
                // SAFETY: blobs are content-addressed and never written by us;
                // reads check the file's length first, so a blob truncated
                // behind our back is an error, not SIGBUS.
                blob_map = Some(unsafe { Mmap::map(&blob) }.at(dir)?);
            } else {
                let data_path = dir.join("data");
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&data_path)
                    .at(&data_path)?;
                // SAFETY: data files are never truncated (see cache.rs); we
                // only pwrite whole spans before marking them present.
                let map = unsafe { Mmap::map(&file) }.at(&data_path)?;
                let spans_path = dir.join("spans");
                let spans_file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&spans_path)
                    .at(&spans_path)?;
                // SAFETY: as above; one byte per span, written with atomics.
                let present = unsafe { MmapMut::map_mut(&spans_file) }.at(&spans_path)?;
                if map.len() as u64 != index.uncompressed_size || present.len() != index.spans.len()
                {
                    return Err(Error::Cache {
                        path: dir.to_path_buf(),
                        reason: "data or spans file has the wrong size".to_string(),
                    });
                }
                data = Some(DataCache { file, map, present });
            }
        }
        Ok(LayerReader {
            digest: index.digest,
            spans: index.spans.clone(),
            blob,
            blob_map,
            data,
            verified: index.spans.iter().map(|_| AtomicBool::new(false)).collect(),
            locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
        })
    }

    /// Fill `buf` from `offset`; returns fewer bytes only at the stream's end.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            let pos = offset + done as u64;
            let Some(i) = span_at(&self.spans, pos) else {
                break;
            };
            let bytes = self.span_bytes(i)?;
            let from = (pos - self.spans[i].out_offset) as usize;
            let n = (bytes.len() - from).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&bytes[from..from + n]);
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

    fn span_bytes(&self, i: usize) -> Result<&[u8]> {
        let span = &self.spans[i];
        let (start, end) = (
            span.out_offset as usize,
            (span.out_offset + span.out_len) as usize,
        );
        if let Some(map) = &self.blob_map {
            let blob_len = self.blob.metadata().map(|m| m.len()).unwrap_or(0);
            if blob_len < span.in_offset + span.out_len || map.len() < end {
                return Err(self.damaged(
                    span,
                    "the blob is shorter than when it was indexed".to_string(),
                ));
            }
            let bytes = &map[start..end];
            if !self.verified[i].load(Ordering::Acquire) {
                if crc32(0, bytes) != span.crc32 {
                    return Err(
                        self.damaged(span, "the blob changed since it was indexed".to_string())
                    );
                }
                self.verified[i].store(true, Ordering::Release);
            }
            return Ok(bytes);
        }
        let Some(data) = &self.data else {
            return Err(self.damaged(span, "no data cache for this layer".to_string()));
        };
        let bytes = &data.map[start..end];
        if self.verified[i].load(Ordering::Acquire) {
            return Ok(bytes);
        }
        let _guard = self.locks[i % LOCK_STRIPES]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if self.verified[i].load(Ordering::Acquire) {
            return Ok(bytes);
        }
        let present = present_flag(&data.present, i);
        if present.load(Ordering::Acquire) == 1 && crc32(0, bytes) == span.crc32 {
            self.verified[i].store(true, Ordering::Release);
            return Ok(bytes);
        }
        let mut fresh = vec![0u8; span.out_len as usize];
        let decoded = match &span.start {
            SpanStart::GzipMember | SpanStart::GzipBlock { .. } => {
                gzip::decode_span(&self.blob, span, &mut fresh)
            }
            SpanStart::ZstdFrame { .. } => zstd::decode_span(&self.blob, span, &mut fresh),
            SpanStart::Materialized { .. } => {
                zstd::redecode_materialized(&self.blob, span, &mut fresh)
            }
            SpanStart::Blob => Err(std::io::Error::other("plain span in a compressed layer")),
        };
        decoded.map_err(|e| self.damaged(span, format!("cannot decode: {e}")))?;
        if crc32(0, &fresh) != span.crc32 {
            return Err(self.damaged(
                span,
                "decoded bytes do not match the index (the blob changed?)".to_string(),
            ));
        }
        data.file
            .write_all_at(&fresh, span.out_offset)
            .map_err(|e| self.damaged(span, format!("cannot write the data cache: {e}")))?;
        present.store(1, Ordering::Release);
        self.verified[i].store(true, Ordering::Release);
        Ok(bytes)
    }
}

fn present_flag(map: &MmapMut, i: usize) -> &AtomicU8 {
    // SAFETY: `i` is in bounds (one byte per span, checked at open) and
    // AtomicU8 has the size and alignment of u8; the mapping is shared with
    // other processes, which only ever store 0 or 1.
    unsafe { &*(map.as_ptr().add(i) as *const AtomicU8) }
}
