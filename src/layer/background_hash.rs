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

/// What happens to a stream's segments at a point of it (see
/// [`SegmentDigests`]). A layer's spans are hashed over the compressed
/// range each is fetched from, and where one ends is known only after the
/// fact: a gzip span cut at a block end may get no output and be dropped,
/// and its bytes then belong to the span before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentEvent {
    /// A segment may begin here, with `overlap` (the byte holding its first
    /// bits, already counted in the running segment) in front. Until it is
    /// kept or merged, bytes go to both it and the running segment.
    Open { overlap: Option<u8> },
    /// The opened segment is kept: the running one ends where it opened.
    Keep,
    /// The opened segment is not kept: its bytes stay the running one's.
    Merge,
    /// A segment begins here, and the bytes before it belong to none.
    Start,
    /// The running segment ends here; what follows belongs to none.
    End,
    /// The running segment is dropped; what follows belongs to none.
    Drop,
}

/// The SHA-256 of each kept segment of a stream, in order, driven by
/// [`SegmentEvent`]s between its bytes. No byte is buffered: an open
/// segment is hashed beside the running one (a snapshot of the running
/// hasher is kept), so memory stays bounded whatever the stream does.
#[derive(Default)]
pub struct SegmentDigests {
    running: Option<Sha256>,
    /// An open segment: the running hasher as it was at the open, and
    /// the open segment's own.
    opened: Option<(Option<Sha256>, Sha256)>,
    digests: Vec<[u8; 32]>,
}

impl SegmentDigests {
    pub fn update(&mut self, data: &[u8]) {
        if let Some(running) = &mut self.running {
            running.update(data);
        }
        if let Some((_, open)) = &mut self.opened {
            open.update(data);
        }
    }

    pub fn event(&mut self, event: SegmentEvent) {
        match event {
            SegmentEvent::Open { overlap } => {
                let mut open = Sha256::new();
                if let Some(byte) = overlap {
                    open.update([byte]);
                }
                self.opened = Some((self.running.clone(), open));
            }
            SegmentEvent::Keep => {
                if let Some((before, open)) = self.opened.take() {
                    self.digests
                        .extend(before.map(|b| -> [u8; 32] { b.finalize().into() }));
                    self.running = Some(open);
                }
            }
            SegmentEvent::Merge => self.opened = None,
            SegmentEvent::Start => {
                self.opened = None;
                self.running = Some(Sha256::new());
            }
            SegmentEvent::End => {
                self.opened = None;
                let done = self.running.take();
                self.digests
                    .extend(done.map(|d| -> [u8; 32] { d.finalize().into() }));
            }
            SegmentEvent::Drop => {
                self.opened = None;
                self.running = None;
            }
        }
    }

    /// One digest per kept segment, in order; an open segment is merged and
    /// the running one ended.
    pub fn finish(mut self) -> Vec<[u8; 32]> {
        self.event(SegmentEvent::End);
        self.digests
    }
}

/// [`SegmentDigests`] on a thread of its own: `event` marks a point,
/// `update` adds bytes. The indexing pass decodes on while the spans it cut
/// are hashed.
pub struct BackgroundSegmentHashes {
    batch: Vec<u8>,
    /// Where in `batch` each event since the last send falls.
    events: Vec<(usize, SegmentEvent)>,
    sender: Option<SyncSender<Batch>>,
    thread: Option<JoinHandle<Vec<[u8; 32]>>>,
    spare: Receiver<Vec<u8>>,
}

/// Bytes for a segment hasher, with the events among them.
type Batch = (Vec<u8>, Vec<(usize, SegmentEvent)>);

impl BackgroundSegmentHashes {
    /// Start the thread (`name` names it); `None` where it cannot be started,
    /// and the caller hashes in place.
    pub fn start(name: &str) -> Option<BackgroundSegmentHashes> {
        let (sender, incoming) = sync_channel::<Batch>(QUEUED_CHUNKS);
        let (give_back, spare) = sync_channel::<Vec<u8>>(QUEUED_CHUNKS);
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let mut segments = SegmentDigests::default();
                for (data, events) in incoming {
                    let mut from = 0;
                    for (at, event) in events {
                        let to = at.min(data.len());
                        segments.update(&data[from..to]);
                        from = to;
                        segments.event(event);
                    }
                    segments.update(&data[from..]);
                    let _ = give_back.try_send(data);
                }
                segments.finish()
            });
        match thread {
            Ok(thread) => Some(BackgroundSegmentHashes {
                batch: Vec::with_capacity(BATCH),
                events: Vec::new(),
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

    /// `event` here, after the bytes so far.
    pub fn event(&mut self, event: SegmentEvent) {
        self.events.push((self.batch.len(), event));
    }

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
        let events = std::mem::take(&mut self.events);
        if let Some(sender) = &self.sender {
            if sender.send((batch, events)).is_err() {
                self.sender = None;
            }
        }
    }

    /// One digest per kept segment, in order.
    pub fn finish(mut self) -> io::Result<Vec<[u8; 32]>> {
        if !self.batch.is_empty() || !self.events.is_empty() {
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

/// Segment digests taken on a thread where one was started, else in place.
pub enum SegmentHasher {
    InPlace(Box<SegmentDigests>),
    Apart(BackgroundSegmentHashes),
}

impl Default for SegmentHasher {
    fn default() -> Self {
        SegmentHasher::InPlace(Box::default())
    }
}

impl SegmentHasher {
    /// On a thread named `name`, or in place where none can be started.
    pub fn apart(name: &str) -> SegmentHasher {
        BackgroundSegmentHashes::start(name)
            .map_or_else(SegmentHasher::default, SegmentHasher::Apart)
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            SegmentHasher::InPlace(s) => s.update(data),
            SegmentHasher::Apart(s) => s.update(data),
        }
    }

    pub fn event(&mut self, event: SegmentEvent) {
        match self {
            SegmentHasher::InPlace(s) => s.event(event),
            SegmentHasher::Apart(s) => s.event(event),
        }
    }

    pub fn finish(self) -> io::Result<Vec<[u8; 32]>> {
        match self {
            SegmentHasher::InPlace(s) => Ok(s.finish()),
            SegmentHasher::Apart(s) => s.finish(),
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

    /// Segments as the pass cuts them: opened and kept, opened and merged
    /// back (an empty span), with an overlap byte, started and ended or
    /// dropped (zstd frames), both in place and on a thread, in pieces
    /// that cross batches: each digest is SHA-256 of exactly its range.
    #[test]
    fn each_kept_segment_has_the_digest_of_its_own_range() {
        use SegmentEvent::*;
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        // (where, event) in stream order.
        let script: Vec<(usize, SegmentEvent)> = vec![
            (5, Open { overlap: None }),
            (9, Keep),
            (
                4096,
                Open {
                    overlap: Some(data[4095]),
                },
            ),
            (5000, Keep),
            (BATCH, Open { overlap: None }),
            (BATCH + 1, Merge),
            (
                BATCH + 7,
                Open {
                    overlap: Some(data[BATCH + 6]),
                },
            ),
            (BATCH + 9, Open { overlap: None }),
            (BATCH + 20, Keep),
            (1_000_000, End),
            (1_000_100, Start),
            (1_200_000, End),
            (1_300_000, Start),
            (1_400_000, Drop),
            (1_500_000, Start),
            (1_600_000, End),
            (1_700_000, Open { overlap: None }),
            (1_700_000, Keep),
            (
                2_999_999,
                Open {
                    overlap: Some(data[2_999_998]),
                },
            ),
        ];
        let expected: Vec<[u8; 32]> = [
            &data[5..4096],
            &data[4095..BATCH + 9],
            &data[BATCH + 9..1_000_000],
            &data[1_000_100..1_200_000],
            &data[1_500_000..1_600_000],
            &data[1_700_000..],
        ]
        .iter()
        .map(|range| Sha256::digest(range).into())
        .collect();
        for mut hasher in [SegmentHasher::apart("test-spans"), SegmentHasher::default()] {
            let mut from = 0;
            for &(at, event) in &script {
                for piece in data[from..at].chunks(65_521) {
                    hasher.update(piece);
                }
                from = at;
                hasher.event(event);
            }
            hasher.update(&data[from..]);
            assert_eq!(hasher.finish().unwrap(), expected);
        }
        assert_eq!(
            SegmentHasher::apart("test-spans").finish().unwrap(),
            Vec::<[u8; 32]>::new()
        );
    }
}
