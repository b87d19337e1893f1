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

pub struct BackgroundHash {
    inner: Inner,
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
                spare: Some(spare),
            },
            Err(e) => {
                tracing::debug!("hashing in place: cannot start a thread ({e})");
                BackgroundHash::in_place()
            }
        }
    }

    /// Hash `data` after what came before.
    pub fn update(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        match &mut self.inner {
            Inner::InPlace(hasher) => hasher.update(data),
            Inner::Lost => {}
            Inner::Thread { chunks, .. } => {
                let mut chunk = self
                    .spare
                    .as_ref()
                    .and_then(|spare| spare.try_recv().ok())
                    .unwrap_or_default();
                chunk.clear();
                chunk.extend_from_slice(data);
                if chunks.send(chunk).is_err() {
                    self.inner = Inner::Lost;
                }
            }
        }
    }

    /// The hasher of everything passed to `update`.
    pub fn finish(self) -> io::Result<Sha256> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_is_the_digest_of_the_chunks_in_order() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        for mut hash in [
            BackgroundHash::start("test-hash"),
            BackgroundHash::in_place(),
        ] {
            for chunk in data.chunks(65_521) {
                hash.update(chunk);
            }
            hash.update(&[]);
            assert_eq!(hash.finish().unwrap().finalize(), Sha256::digest(&data));
        }
        assert_eq!(
            BackgroundHash::start("test-hash")
                .finish()
                .unwrap()
                .finalize(),
            Sha256::digest(b"")
        );
    }
}
