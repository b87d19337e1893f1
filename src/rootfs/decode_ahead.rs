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
//! would only evict what was read); a remote blob's spans are only checked
//! ahead, never fetched ahead (see `LayerReader::prepare_span_if_idle`).

use std::collections::{HashSet, VecDeque};
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
        let (Some(reader), Some(last_span)) = (
            shared.rootfs.readers.get(layer),
            shared.last_span.get(layer),
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
        if previous != NONE && previous + 1 == here {
            let at = start.saturating_add(offset);
            let end = reader
                .span_at(at.saturating_add(shared.layer_ahead))
                .unwrap_or(reader.span_count().saturating_sub(1))
                .min(here.saturating_add(QUEUE_MAX));
            wanted.extend((here + 1..=end).filter(|&i| !reader.is_ready(i)));
        }
        if !wanted.is_empty() {
            shared.push(layer, &wanted);
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

/// The spans to prepare, newest wants first, each once; and whether the
/// workers are to stop (here, under the same lock as what they wait on).
#[derive(Default)]
struct Queue {
    order: VecDeque<(usize, usize)>,
    queued: HashSet<(usize, usize)>,
    stopped: bool,
}

impl Shared {
    /// Queue `spans` of `layer` ahead of what waits, in their order; the
    /// oldest wants go when the queue is full.
    fn push(&self, layer: usize, spans: &[usize]) {
        let mut queue = lock(&self.queue);
        for &span in spans.iter().rev() {
            if queue.queued.insert((layer, span)) {
                queue.order.push_front((layer, span));
            }
        }
        while queue.order.len() > QUEUE_MAX {
            if let Some(oldest) = queue.order.pop_back() {
                queue.queued.remove(&oldest);
            }
        }
        drop(queue);
        self.wake.notify_all();
    }

    /// The next span to prepare; `None` once stopped.
    fn next(&self) -> Option<(usize, usize)> {
        let mut queue = lock(&self.queue);
        loop {
            if queue.stopped {
                return None;
            }
            if let Some(next) = queue.order.pop_front() {
                queue.queued.remove(&next);
                return Some(next);
            }
            queue = self.wake.wait(queue).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// One worker: decode queued spans until stopped. A span that cannot be
/// decoded is left to the read that wants it, which reports the error.
fn work(shared: &Shared) {
    while let Some((layer, span)) = shared.next() {
        let Some(reader) = shared.rootfs.readers.get(layer) else {
            continue;
        };
        if let Err(e) = reader.prepare_span_if_idle(span) {
            tracing::debug!("decode-ahead: span {span} of layer {layer}: {e}");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
