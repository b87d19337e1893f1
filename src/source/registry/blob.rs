//! A layer or config blob in a registry, read lazily with Range requests.
//!
//! `stream()` is one GET of the whole blob, for the indexing pass.
//! `read_at` serves a span's compressed bytes: a miss fetches the range
//! asked for, widened to at least [`MIN_FETCH`] (neighbouring reads are
//! coalesced into one request) or to the exact range a `will_need` hint
//! named, and keeps the last few ranges fetched in memory.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::blob::BlobSource;
use crate::digest::Digest;
use crate::source::registry::client::Client;

/// The smallest range fetched on a miss.
const MIN_FETCH: u64 = 256 * 1024;
/// The largest range fetched at once (a hint may ask for more; it is split).
const MAX_FETCH: u64 = 16 << 20;
/// Ranges kept in memory per blob.
const WINDOWS: usize = 4;
/// How long a failed fetch answers for the blob: reads queued behind one
/// that waited out the registry timeout fail at once, not one timeout each.
const FAILURE_MEMORY: Duration = Duration::from_secs(2);

pub struct RegistryBlob {
    client: Arc<Client>,
    digest: Digest,
    size: u64,
    windows: Mutex<VecDeque<Window>>,
    /// The last fetch that failed: when it ended, and why.
    failed: Mutex<Option<(Instant, String)>>,
}

struct Window {
    start: u64,
    bytes: Arc<Vec<u8>>,
}

impl RegistryBlob {
    pub fn new(client: Arc<Client>, digest: Digest, size: u64) -> RegistryBlob {
        RegistryBlob {
            client,
            digest,
            size,
            windows: Mutex::new(VecDeque::with_capacity(WINDOWS)),
            failed: Mutex::new(None),
        }
    }

    fn cached(&self, offset: u64) -> Option<(u64, Arc<Vec<u8>>)> {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let i = windows
            .iter()
            .position(|w| offset >= w.start && offset < w.start + w.bytes.len() as u64)?;
        let w = windows.remove(i)?;
        let found = (w.start, w.bytes.clone());
        windows.push_back(w);
        Some(found)
    }

    fn fetch(&self, start: u64, len: u64) -> io::Result<(u64, Arc<Vec<u8>>)> {
        let len = len.min(self.size - start).min(MAX_FETCH);
        if let Some((when, reason)) = &*self.failed.lock().unwrap_or_else(|p| p.into_inner()) {
            if when.elapsed() < FAILURE_MEMORY {
                return Err(io::Error::other(reason.clone()));
            }
        }
        let bytes = self
            .client
            .blob_range(&self.digest, start, len)
            .map_err(|e| {
                let reason = e.to_string();
                *self.failed.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((Instant::now(), reason.clone()));
                io::Error::other(reason)
            })?;
        *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let bytes = Arc::new(bytes);
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if windows.len() == WINDOWS {
            windows.pop_front();
        }
        windows.push_back(Window {
            start,
            bytes: bytes.clone(),
        });
        Ok((start, bytes))
    }
}

impl BlobSource for RegistryBlob {
    fn digest(&self) -> Digest {
        self.digest
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if offset >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let (start, bytes) = match self.cached(offset) {
            Some(hit) => hit,
            None => self.fetch(offset, (buf.len() as u64).max(MIN_FETCH))?,
        };
        let from = (offset - start) as usize;
        let n = buf.len().min(bytes.len() - from);
        buf[..n].copy_from_slice(&bytes[from..from + n]);
        Ok(n)
    }

    fn will_need(&self, offset: u64, len: u64) -> io::Result<()> {
        if offset >= self.size || self.cached(offset).is_some() {
            return Ok(());
        }
        self.fetch(offset, len.max(1)).map(|_| ())
    }

    fn location(&self) -> String {
        format!("docker://{}@{}", self.client.name(), self.digest)
    }

    fn stream(&self) -> Box<dyn Read + Send + '_> {
        match self.client.blob_stream(&self.digest, self.size) {
            Ok(stream) => Box::new(stream),
            Err(e) => Box::new(FailedStream(Some(io::Error::other(e.to_string())))),
        }
    }

    fn is_remote(&self) -> bool {
        true
    }
}

/// A stream that could not be opened: its first read says why.
struct FailedStream(Option<io::Error>);

impl Read for FailedStream {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(self
            .0
            .take()
            .unwrap_or_else(|| io::Error::other("the blob stream failed")))
    }
}
