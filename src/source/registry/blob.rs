//! A layer or config blob in a registry, read lazily with Range requests.
//!
//! `stream()` is one GET of the whole blob, for the indexing pass.
//! `read_at` serves a span's compressed bytes: a miss fetches the range
//! asked for, widened to at least [`MIN_FETCH`] (neighbouring reads are
//! coalesced into one request) or to the exact range a `will_need` hint
//! named, and keeps the last few ranges fetched in memory. A read that
//! falls in a range another thread is fetching waits for that fetch
//! instead of asking for the same bytes again (a FUSE read catching up
//! with the decode-ahead's fetch of the stretch it reads next).

use std::collections::VecDeque;
use std::io::{self, Read};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::blob::BlobSource;
use crate::digest::Digest;
use crate::source::registry::client::Client;

/// The smallest range fetched on a miss.
const MIN_FETCH: u64 = 256 * 1024;
/// The largest range fetched at once (a hint may ask for more; it is split).
const MAX_FETCH: u64 = 16 << 20;
/// Ranges kept in memory per blob.
const WINDOWS: usize = 8;
/// The longest a read waits for another thread's fetch of its bytes before
/// it asks for them itself (that fetch is bounded by the client's own
/// timeouts; this only keeps a stuck one from holding others).
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(120);
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
    /// The ranges being fetched now.
    in_flight: Mutex<Vec<InFlight>>,
}

struct Window {
    start: u64,
    bytes: Arc<Vec<u8>>,
}

/// A range one thread is fetching; `done` is set and notified when the
/// fetch has ended, whether it worked or not.
#[derive(Clone)]
struct InFlight {
    start: u64,
    end: u64,
    done: Arc<(Mutex<bool>, Condvar)>,
}

/// Takes a fetch's range off the in-flight list and wakes its waiters when
/// the fetch ends, however it ends.
struct FetchGuard<'a> {
    blob: &'a RegistryBlob,
    done: Arc<(Mutex<bool>, Condvar)>,
}

impl Drop for FetchGuard<'_> {
    fn drop(&mut self) {
        lock(&self.blob.in_flight).retain(|f| !Arc::ptr_eq(&f.done, &self.done));
        *lock(&self.done.0) = true;
        self.done.1.notify_all();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl RegistryBlob {
    pub fn new(client: Arc<Client>, digest: Digest, size: u64) -> RegistryBlob {
        RegistryBlob {
            client,
            digest,
            size,
            windows: Mutex::new(VecDeque::with_capacity(WINDOWS)),
            failed: Mutex::new(None),
            in_flight: Mutex::new(Vec::new()),
        }
    }

    /// Wait until no other thread is fetching a range holding `offset`
    /// (bounded by `IN_FLIGHT_WAIT`). Returns whether it waited, after
    /// which the caller looks in the windows again.
    fn wait_for_fetch_of(&self, offset: u64) -> bool {
        let Some(fetch) = lock(&self.in_flight)
            .iter()
            .find(|f| offset >= f.start && offset < f.end)
            .cloned()
        else {
            return false;
        };
        let (done, wake) = &*fetch.done;
        let deadline = Instant::now() + IN_FLIGHT_WAIT;
        let mut finished = lock(done);
        while !*finished {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            finished = wake
                .wait_timeout(finished, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }

    /// The window holding `offset`, waiting first for another thread's
    /// fetch of it if there is one.
    fn cached_or_in_flight(&self, offset: u64) -> Option<(u64, Arc<Vec<u8>>)> {
        self.cached(offset).or_else(|| {
            self.wait_for_fetch_of(offset)
                .then(|| self.cached(offset))?
        })
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
        let done = Arc::new((Mutex::new(false), Condvar::new()));
        lock(&self.in_flight).push(InFlight {
            start,
            end: start + len,
            done: done.clone(),
        });
        let _guard = FetchGuard { blob: self, done };
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
        let (start, bytes) = match self.cached_or_in_flight(offset) {
            Some(hit) => hit,
            None => self.fetch(offset, (buf.len() as u64).max(MIN_FETCH))?,
        };
        let from = (offset - start) as usize;
        let n = buf.len().min(bytes.len() - from);
        buf[..n].copy_from_slice(&bytes[from..from + n]);
        Ok(n)
    }

    /// Fetch `offset..offset + len` in one request unless its start is in
    /// memory or on its way. Then only a rest longer than a read's worth
    /// is fetched (a large span whose first bytes came with the span
    /// before it); a shorter one is left to the reads.
    fn will_need(&self, offset: u64, len: u64) -> io::Result<()> {
        if offset >= self.size {
            return Ok(());
        }
        let end = offset.saturating_add(len.max(1)).min(self.size);
        match self.cached_or_in_flight(offset) {
            None => self.fetch(offset, end - offset).map(|_| ()),
            Some((start, bytes)) => {
                let from = start + bytes.len() as u64;
                if end > from && end - from > MIN_FETCH && self.cached_or_in_flight(from).is_none()
                {
                    self.fetch(from, end - from)?;
                }
                Ok(())
            }
        }
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
