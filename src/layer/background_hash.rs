//! SHA-256 on a thread of its own: the indexing pass hands it each chunk
//! it reads and goes on decoding, so hashing the blob and the tar (a
//! quarter of the pass's CPU) overlaps the inflate instead of following
//! it. It pays only where a core would otherwise idle: an image whose
//! largest layer outlasts the others (the small bench image: `ls` from an
//! empty cache 202 -> 186 ms); where every core is busy indexing layers it
//! costs (the large bench image: 760 -> 820 ms), so the caller chooses
//! (`PassOptions::hash_apart`). Where the thread cannot be started, the
//! chunks are hashed in place.

use std::io;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use sha2::{Digest as _, Sha256};

/// Chunks waiting for the hashing thread: enough to ride out a slow
/// moment of either side, little enough to bound the memory held.
const QUEUED_CHUNKS: usize = 16;

/// Bytes gathered before they go to a hashing thread (with a segment
/// hasher's cuts among them): one channel message per 256 KiB, not one per
/// decoder output.
const BATCH: usize = 256 << 10;

/// Moves the front of `data` into `batch` until it holds `BATCH` bytes;
/// returns the rest.
fn fill_batch<'a>(batch: &mut Vec<u8>, data: &'a [u8]) -> &'a [u8] {
    let take = (BATCH - batch.len().min(BATCH)).min(data.len());
    batch.extend_from_slice(&data[..take]);
    &data[take..]
}

pub struct BackgroundHash {
    inner: Inner,
    /// Bytes gathered for the next chunk: one channel message (and one
    /// wake-up of the thread) per `BATCH` bytes, not one per `update`. A
    /// decoder's outputs are a few KiB to 64 KiB, and each wake-up could
    /// preempt the decoding thread, the one a pass waits for.
    pending: Vec<u8>,
    /// Empty buffers the hashing thread handed back, for the next chunks.
    spare: Option<Receiver<Vec<u8>>>,
}

enum Inner {
    Thread {
        chunks: SyncSender<Vec<u8>>,
        thread: JoinHandle<Sha256>,
    },
    InPlace(Sha256),
    /// The thread ended before its chunks did (it cannot, short of a bug).
    Lost,
}

impl BackgroundHash {
    /// Hash on the calling thread: where no core is spare for another.
    pub fn in_place() -> BackgroundHash {
        BackgroundHash {
            inner: Inner::InPlace(Sha256::new()),
            pending: Vec::new(),
            spare: None,
        }
    }

    /// Start the hashing thread (`name` names it, for a profiler).
    pub fn start(name: &str) -> BackgroundHash {
        let (chunks, incoming) = sync_channel::<Vec<u8>>(QUEUED_CHUNKS);
        let (give_back, spare) = sync_channel::<Vec<u8>>(QUEUED_CHUNKS);
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let mut hasher = Sha256::new();
                for chunk in incoming {
                    hasher.update(&chunk);
                    let _ = give_back.try_send(chunk);
                }
                hasher
            });
        match thread {
            Ok(thread) => BackgroundHash {
                inner: Inner::Thread { chunks, thread },
                pending: Vec::with_capacity(BATCH),
                spare: Some(spare),
            },
            Err(e) => {
                tracing::debug!("hashing in place: cannot start a thread ({e})");
                BackgroundHash::in_place()
            }
        }
    }

    /// Hash `data` after what came before.
    pub fn update(&mut self, mut data: &[u8]) {
        match &mut self.inner {
            Inner::InPlace(hasher) => hasher.update(data),
            Inner::Lost => {}
            Inner::Thread { .. } => {
                while !data.is_empty() {
                    data = fill_batch(&mut self.pending, data);
                    if self.pending.len() >= BATCH {
                        self.send_pending();
                    }
                }
            }
        }
    }

    /// Hands the gathered bytes to the thread.
    fn send_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let Inner::Thread { chunks, .. } = &self.inner else {
            return;
        };
        let mut next = self
            .spare
            .as_ref()
            .and_then(|spare| spare.try_recv().ok())
            .unwrap_or_else(|| Vec::with_capacity(BATCH));
        next.clear();
        let chunk = std::mem::replace(&mut self.pending, next);
        if chunks.send(chunk).is_err() {
            self.inner = Inner::Lost;
        }
    }

    /// The hasher of everything passed to `update`.
    pub fn finish(mut self) -> io::Result<Sha256> {
        self.send_pending();
        let lost = || io::Error::other("the SHA-256 thread ended early");
        match self.inner {
            Inner::InPlace(hasher) => Ok(hasher),
            Inner::Lost => Err(lost()),
            Inner::Thread { chunks, thread } => {
                drop(chunks);
                thread.join().map_err(|_| lost())
            }
        }
    }
}

/// The SHA-256 of each of a stream's consecutive segments (a layer's spans),
/// on a thread of its own: `begin` opens a segment (closing the one before),
/// `update` adds to the open one. The indexing pass decodes on while the
/// spans it cut are hashed: about a fifth of a gzip pass's CPU.
pub struct BackgroundSegmentHashes {
    batch: Vec<u8>,
    /// Where in `batch` each segment begun since the last send begins.
    cuts: Vec<usize>,
    sender: Option<SyncSender<(Vec<u8>, Vec<usize>)>>,
    thread: Option<JoinHandle<Vec<[u8; 32]>>>,
    spare: Receiver<Vec<u8>>,
}

impl BackgroundSegmentHashes {
    /// Start the thread (`name` names it); `None` where it cannot be started,
    /// and the caller hashes in place.
    pub fn start(name: &str) -> Option<BackgroundSegmentHashes> {
        let (sender, incoming) = sync_channel::<(Vec<u8>, Vec<usize>)>(QUEUED_CHUNKS);
        let (give_back, spare) = sync_channel::<Vec<u8>>(QUEUED_CHUNKS);
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let mut digests = Vec::new();
                let mut open: Option<Sha256> = None;
                for (data, cuts) in incoming {
                    let mut from = 0;
                    for cut in cuts.into_iter().chain(std::iter::once(usize::MAX)) {
                        let to = cut.min(data.len());
                        if let Some(hasher) = &mut open {
                            hasher.update(&data[from..to]);
                        }
                        from = to;
                        if cut == usize::MAX {
                            break;
                        }
                        if let Some(done) = open.replace(Sha256::new()) {
                            digests.push(done.finalize().into());
                        }
                    }
                    let _ = give_back.try_send(data);
                }
                digests.extend(open.map(|done| -> [u8; 32] { done.finalize().into() }));
                digests
            });
        match thread {
            Ok(thread) => Some(BackgroundSegmentHashes {
                batch: Vec::with_capacity(BATCH),
                cuts: Vec::new(),
                sender: Some(sender),
                thread: Some(thread),
                spare,
            }),
            Err(e) => {
                tracing::debug!("hashing spans in place: cannot start a thread ({e})");
                None
            }
        }
    }

    /// Open the next segment here.
    pub fn begin(&mut self) {
        self.cuts.push(self.batch.len());
    }

    /// Add `data` to the open segment (bytes before the first `begin`
    /// belong to none and are dropped).
    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            data = fill_batch(&mut self.batch, data);
            if self.batch.len() >= BATCH {
                self.send();
            }
        }
    }

    fn send(&mut self) {
        let mut next = self.spare.try_recv().unwrap_or_default();
        next.clear();
        let batch = std::mem::replace(&mut self.batch, next);
        let cuts = std::mem::take(&mut self.cuts);
        if let Some(sender) = &self.sender {
            if sender.send((batch, cuts)).is_err() {
                self.sender = None;
            }
        }
    }

    /// One digest per `begin`, in order.
    pub fn finish(mut self) -> io::Result<Vec<[u8; 32]>> {
        if !self.batch.is_empty() || !self.cuts.is_empty() {
            self.send();
        }
        let lost = || io::Error::other("the span-hashing thread ended early");
        if self.sender.take().is_none() {
            return Err(lost());
        }
        match self.thread.take() {
            Some(thread) => thread.join().map_err(|_| lost()),
            None => Err(lost()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_is_the_digest_of_the_chunks_in_order() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        // Chunks far below the batch, across batches, and one past several.
        for size in [65_521, 1_000, 3 * BATCH + 7] {
            for mut hash in [
                BackgroundHash::start("test-hash"),
                BackgroundHash::in_place(),
            ] {
                for chunk in data.chunks(size) {
                    hash.update(chunk);
                }
                hash.update(&[]);
                assert_eq!(hash.finish().unwrap().finalize(), Sha256::digest(&data));
            }
        }
        assert_eq!(
            BackgroundHash::start("test-hash")
                .finish()
                .unwrap()
                .finalize(),
            Sha256::digest(b"")
        );
    }

    #[test]
    fn each_segment_has_the_digest_of_its_own_bytes() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        // Ends inside one batch, on a batch boundary, twice at one place
        // (an empty segment) and at the very end.
        let ends = [
            10,
            10,
            4096,
            BATCH,
            BATCH + 1,
            2_999_999,
            3_000_000,
            3_000_000,
        ];
        let mut hashes = BackgroundSegmentHashes::start("test-spans").unwrap();
        hashes.update(&data[..5]); // before the first segment: belongs to none
        let mut from = 5;
        let mut expected = Vec::new();
        for end in ends {
            hashes.begin();
            for piece in data[from..end].chunks(65_521) {
                hashes.update(piece);
            }
            expected.push(<[u8; 32]>::from(Sha256::digest(&data[from..end])));
            from = end;
        }
        assert_eq!(hashes.finish().unwrap(), expected);
        let none = BackgroundSegmentHashes::start("test-spans").unwrap();
        assert_eq!(none.finish().unwrap(), Vec::<[u8; 32]>::new());
    }
}
