//! Decode-ahead: while a FUSE read decodes the span it needs, worker
//! threads decode the spans the reader will want next into the data cache,
//! so that a read finds them stored.
//!
//! Two patterns are followed, both decided from where each read falls:
//! - **Within a file.** A read that finds its span not ready queues the
//!   rest of its file's spans (up to `FILE_AHEAD` of them): a large file
//!   read at random or in order is then decoded on several cores, not one
//!   span at a time on the reading thread.
//! - **Along a layer.** A read that moves on from span `i - 1` to span `i`
//!   of a layer (files read in the order the layer holds them, as `tar`,
//!   `cp -r` and a container's start do) queues the next stretch of it.
//!
//! The newest wants are served first; the oldest are dropped when the
//! queue is full. A worker skips a span this process has checked already,
//! and one whose lock is held (a read is decoding it); a stored span not
//! yet checked here (after a remount) is read and checked. Spans are
//! checked against the index as every decoded span is: what is read is the
//! same bytes, only sooner. There is one worker per core but one (none on
//! a single core): the reading threads keep a core. Off where the cache
//! stores nothing decoded (`index-only`) or is bounded (`--cache-max`, it
//! would only evict what was read).
//!
//! **Remote blobs** (a registry, read through a published index or a table
//! of contents) are fetched ahead only along a layer, and only once the
//! reads have gone from span to span in order `REMOTE_RUN` times: then how
//! far ahead grows with the run, doubling from `REMOTE_AHEAD_MIN` up to
//! `REMOTE_AHEAD_MAX`, and falls back to nothing at
//! the first read out of order. A first file, or files read here and
//! there, cost no byte more than they ask for; `tar`, `cp -r` and a
//! container reading its files in the layer's order fetch and decode on
//! another core while they read (see `LayerReader::prepare_span_if_idle`).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crate::merge::{NodeId, NodeKind};
use crate::rootfs::Rootfs;
use crate::sys::workers;

/// How many spans of a file a miss queues (64 MiB at the spacing of the
/// checkpoints in a large file, 256 KiB).
const FILE_AHEAD: usize = 256;
/// How far past a layer read in order is queued, per worker, in bytes of
/// the stream (checkpoints are closer inside large files, so a count of
/// spans would reach less far there).
const LAYER_AHEAD_PER_WORKER: u64 = 2 << 20;
/// At most this many spans wait in the queue; the oldest are dropped.
const QUEUE_MAX: usize = 512;
/// Reads in order, span after span, before a remote layer is fetched ahead.
const REMOTE_RUN: usize = 2;
/// How far ahead a remote layer is fetched at the start of a run, in bytes
/// of the stream; it doubles with each read in order after that.
const REMOTE_AHEAD_MIN: u64 = 256 << 10;
/// The farthest a remote layer is fetched ahead, in bytes of the stream.
const REMOTE_AHEAD_MAX: u64 = 16 << 20;
/// No span recorded yet for a layer.
const NONE: usize = usize::MAX;

/// The running decode-ahead; stopped and joined by `stop`, or when the
/// last holder drops it.
pub struct DecodeAhead {
    shared: Arc<Shared>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

struct Shared {
    rootfs: Arc<Rootfs>,
    queue: Mutex<Queue>,
    wake: Condvar,
    /// For each layer, the span its last read fell in (`NONE`: no read).
    last_span: Vec<AtomicUsize>,
    /// For each layer, how many reads in a row moved on to the next span.
    run: Vec<AtomicUsize>,
    /// How far along a layer read in order is queued, in stream bytes.
    layer_ahead: u64,
}

impl DecodeAhead {
    /// Start a worker for each core but one, or nothing on a single core,
    /// where no layer stores what it decodes, or where the cache is bounded.
    pub fn start(rootfs: Arc<Rootfs>) -> Option<Arc<DecodeAhead>> {
        if rootfs.limit.is_some() || !rootfs.readers.iter().any(|r| r.stores_decoded()) {
            return None;
        }
        let workers = workers::cores() - 1;
        if workers == 0 {
            return None;
        }
        let shared = Arc::new(Shared {
            last_span: rootfs
                .readers
                .iter()
                .map(|_| AtomicUsize::new(NONE))
                .collect(),
            run: rootfs.readers.iter().map(|_| AtomicUsize::new(0)).collect(),
            rootfs,
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            layer_ahead: LAYER_AHEAD_PER_WORKER * workers as u64,
        });
        let worker_shared = shared.clone();
        let handles = workers::spawn_named("decode-ahead", workers, move || work(&worker_shared));
        if handles.is_empty() {
            return None;
        }
        tracing::info!("decode-ahead: {} threads", handles.len());
        Some(Arc::new(DecodeAhead {
            shared,
            workers: Mutex::new(handles),
        }))
    }

    /// Called before file `id` is read at `offset`: queue what that read
    /// says will be wanted next.
    pub fn before_read(&self, id: NodeId, offset: u64) {
        let shared = &self.shared;
        let NodeKind::File {
            layer,
            offset: start,
            size,
        } = shared.rootfs.tree.node(id).kind
        else {
            return;
        };
        let layer = layer as usize;
        let (Some(reader), Some(last_span), Some(run)) = (
            shared.rootfs.readers.get(layer),
            shared.last_span.get(layer),
            shared.run.get(layer),
        ) else {
            return;
        };
        if size == 0 || offset >= size || !reader.stores_decoded() {
            return;
        }
        let (Some(here), Some(covering)) = (
            reader.span_at(start.saturating_add(offset)),
            reader.spans_covering(start, size),
        ) else {
            return;
        };
        let (first, last) = covering.into_inner();
        let mut wanted = Vec::new();
        if !reader.is_ready(here) {
            // The rest of the file from here, then its start.
            wanted.extend(
                (here + 1..=last)
                    .chain(first..here)
                    .filter(|&i| !reader.is_ready(i))
                    .take(FILE_AHEAD),
            );
        }
        let previous = last_span.swap(here, Ordering::Relaxed);
        let in_order = previous != NONE && previous + 1 == here;
        let run_length = match previous {
            _ if in_order => run.fetch_add(1, Ordering::Relaxed) + 1,
            p if p == here => run.load(Ordering::Relaxed),
            _ => {
                run.store(0, Ordering::Relaxed);
                0
            }
        };
        let reach = if reader.is_remote() {
            remote_reach(run_length, REMOTE_AHEAD_MAX)
        } else {
            shared.layer_ahead
        };
        // The stretch ahead: spans `here + 1..=end` (empty unless in order).
        let end = if in_order && reach > 0 {
            let at = start.saturating_add(offset);
            reader
                .span_at(at.saturating_add(reach))
                .unwrap_or(reader.span_count().saturating_sub(1))
                .min(here.saturating_add(QUEUE_MAX))
        } else {
            here
        };
        let ahead: Vec<usize> = (here + 1..=end).filter(|&i| !reader.is_ready(i)).collect();
        // The file's own spans first (a remote one only if stored), then
        // the stretch ahead, which a remote layer may fetch.
        let may_fetch = reader.is_remote() && !ahead.is_empty();
        wanted.retain(|i| !(here + 1..=end).contains(i));
        if !ahead.is_empty() {
            shared.push(layer, &ahead, may_fetch);
        }
        if !wanted.is_empty() {
            shared.push(layer, &wanted, false);
        }
    }

    /// Stop after the spans being decoded now, and wait for the workers.
    pub fn stop(&self) {
        // Under the queue's lock, which a worker holds from its look at
        // `stopped` until it waits: the wake-up cannot fall in between and
        // be lost (the join below would then wait for ever).
        lock(&self.shared.queue).stopped = true;
        self.shared.wake.notify_all();
        let handles = std::mem::take(&mut *lock(&self.workers));
        for handle in handles {
            let _ = handle.join();
        }
    }
}

impl Drop for DecodeAhead {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How far ahead, in stream bytes, a remote layer read `run_length` times
/// in order is fetched: nothing before `REMOTE_RUN`, then
/// `REMOTE_AHEAD_MIN` doubling with each read, up to `most`.
fn remote_reach(run_length: usize, most: u64) -> u64 {
    if run_length < REMOTE_RUN {
        return 0;
    }
    let doublings = (run_length - REMOTE_RUN).min(16) as u32;
    (REMOTE_AHEAD_MIN << doublings).min(most)
}

/// The spans to prepare, newest wants first, each once, with whether a
/// remote one may be fetched for it; and whether the workers are to stop
/// (here, under the same lock as what they wait on).
#[derive(Default)]
struct Queue {
    order: VecDeque<(usize, usize)>,
    queued: HashMap<(usize, usize), bool>,
    stopped: bool,
}

impl Shared {
    /// Queue `spans` of `layer` ahead of what waits, in their order; the
    /// oldest wants go when the queue is full. `may_fetch`: a remote span
    /// not stored may be fetched (a span already queued keeps it if it had
    /// it); such spans go behind what waits instead, so that a remote
    /// layer is fetched in its order, one stretch after the other, as the
    /// reads extend it.
    fn push(&self, layer: usize, spans: &[usize], may_fetch: bool) {
        let mut queue = lock(&self.queue);
        let mut behind = Vec::new();
        for &span in spans.iter().rev() {
            match queue.queued.get_mut(&(layer, span)) {
                Some(fetch) => *fetch |= may_fetch,
                None => {
                    queue.queued.insert((layer, span), may_fetch);
                    if may_fetch {
                        behind.push((layer, span));
                    } else {
                        queue.order.push_front((layer, span));
                    }
                }
            }
        }
        queue.order.extend(behind.into_iter().rev());
        while queue.order.len() > QUEUE_MAX {
            if let Some(oldest) = queue.order.pop_back() {
                queue.queued.remove(&oldest);
            }
        }
        drop(queue);
        self.wake.notify_all();
    }

    /// The next span to prepare, and whether it may be fetched; `None`
    /// once stopped.
    fn next(&self) -> Option<(usize, usize, bool)> {
        let mut queue = lock(&self.queue);
        loop {
            if queue.stopped {
                return None;
            }
            if let Some((layer, span)) = queue.order.pop_front() {
                let may_fetch = queue.queued.remove(&(layer, span)).unwrap_or(false);
                return Some((layer, span, may_fetch));
            }
            queue = self.wake.wait(queue).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// One worker: decode queued spans until stopped. A span that cannot be
/// decoded is left to the read that wants it, which reports the error.
fn work(shared: &Shared) {
    while let Some((layer, span, may_fetch)) = shared.next() {
        let Some(reader) = shared.rootfs.readers.get(layer) else {
            continue;
        };
        if let Err(e) = reader.prepare_span_if_idle(span, may_fetch) {
            tracing::debug!("decode-ahead: span {span} of layer {layer}: {e}");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nothing before `REMOTE_RUN` reads in order, then a reach that
    /// doubles with each read, up to the most allowed.
    #[test]
    fn a_remote_layer_is_fetched_ahead_only_along_a_run_that_grows() {
        assert_eq!(remote_reach(0, REMOTE_AHEAD_MAX), 0);
        assert_eq!(remote_reach(REMOTE_RUN - 1, REMOTE_AHEAD_MAX), 0);
        assert_eq!(remote_reach(REMOTE_RUN, REMOTE_AHEAD_MAX), REMOTE_AHEAD_MIN);
        assert_eq!(
            remote_reach(REMOTE_RUN + 1, REMOTE_AHEAD_MAX),
            2 * REMOTE_AHEAD_MIN
        );
        assert_eq!(
            remote_reach(REMOTE_RUN + 40, REMOTE_AHEAD_MAX),
            REMOTE_AHEAD_MAX
        );
        assert_eq!(remote_reach(usize::MAX, 1 << 20), 1 << 20);
    }
}
