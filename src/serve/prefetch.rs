//! `--prefetch`: once a mount is live, decode the image's spans into the
//! data cache in the background, across the cores, in the order its files
//! are likely to be read, so that later reads find them decoded. Whatever
//! the mode, the files an eStargz producer put before its prefetch
//! landmark come first, each such layer's fetched in one request, as
//! stargz-snapshotter does (with `none`, the fill stops after them). The fill
//! gives way to every FUSE read (`ReadsInFlight`), stops at the first span
//! it cannot fill (logged once a thread; the mount goes on), and stops
//! promptly, between two spans, when the daemon exits.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::layer::spans::spans_covering;
use crate::merge::{NodeId, NodeKind, ROOT};
use crate::rootfs::Rootfs;
use crate::serve::reads_in_flight::ReadsInFlight;
use crate::serve::record::{read_record, record_path};
use crate::sys::workers;

/// How long a fill thread sleeps while FUSE reads are being served.
const YIELD_PAUSE: Duration = Duration::from_millis(2);

/// What the background fill decodes first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Prefetch {
    /// No background fill: spans are decoded when read, with those a read
    /// will want next decoded ahead on the other cores.
    #[default]
    None,
    /// Every span, the files' in the merged tree's order first.
    All,
    /// The files of the image's record (`--record`) first, then as `all`.
    Recorded,
}

impl fmt::Display for Prefetch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Prefetch::None => "none",
            Prefetch::All => "all",
            Prefetch::Recorded => "recorded",
        })
    }
}

/// A (layer, span) to fill.
type SpanRef = (usize, usize);

/// The running fill: stopped and joined by `stop`.
pub struct Fill {
    stop: Arc<AtomicBool>,
    /// Plans the fill, then runs and joins its threads.
    planner: JoinHandle<()>,
}

impl Fill {
    /// Start the fill, or nothing when `mode` is `none` or the cache keeps
    /// no decoded spans (`index-only`) or is bounded (`--cache-max`: a fill
    /// would only evict what the mount read).
    pub fn start(rootfs: Arc<Rootfs>, mode: Prefetch, reads: Arc<ReadsInFlight>) -> Option<Fill> {
        let landmarks = rootfs.indexes.iter().any(|i| i.prefetch_spans > 0);
        if mode == Prefetch::None && !landmarks {
            return None;
        }
        if !rootfs.readers.iter().any(|r| r.stores_decoded()) {
            tracing::info!(
                "--prefetch {mode}: skipped, nothing decoded is stored for this image \
                 (--cache-mode index-only, or plain layers served from the blob)"
            );
            return None;
        }
        if rootfs.limit.is_some() {
            tracing::info!("--prefetch {mode}: skipped, the cache is bounded (--cache-max)");
            return None;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        // The plan walks the whole tree: made off the thread that goes on
        // to serve the mount, so no request waits for it.
        let planner = std::thread::Builder::new()
            .name("prefetch".into())
            .spawn(move || fill_in_parallel(&rootfs, mode, &reads, &stopped));
        match planner {
            Ok(planner) => Some(Fill { stop, planner }),
            Err(e) => {
                tracing::warn!("--prefetch {mode}: cannot start a thread ({e}); no fill");
                None
            }
        }
    }

    /// Stop the fill after the spans being decoded now, and wait for it.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.planner.join();
    }
}

/// Plan the fill, then run it on as many threads as there are cores.
fn fill_in_parallel(rootfs: &Rootfs, mode: Prefetch, reads: &ReadsInFlight, stop: &AtomicBool) {
    fetch_landmarked(rootfs, stop);
    let plan = fill_order(rootfs, mode);
    let threads = workers::cores();
    tracing::info!(
        "--prefetch {mode}: filling {} spans with {threads} threads",
        plan.len()
    );
    workers::for_each_index(threads, plan.len(), |i| fill(rootfs, plan[i], reads, stop));
    if !stop.load(Ordering::Acquire) {
        tracing::info!("--prefetch {mode}: the fill has ended");
    }
}

/// For each eStargz layer with a prefetch landmark, fetch the compressed
/// bytes of the files before it in one request (they lead the plan).
fn fetch_landmarked(rootfs: &Rootfs, stop: &AtomicBool) {
    for (layer, (index, reader)) in rootfs.indexes.iter().zip(&rootfs.readers).enumerate() {
        let count = index.prefetch_spans as usize;
        if count == 0 || stop.load(Ordering::Acquire) {
            continue;
        }
        tracing::info!(
            layer = %index.digest,
            "prefetch: the {count} spans before layer {}'s prefetch landmark",
            layer + 1
        );
        if let Err(e) = reader.fetch_ahead(0, count) {
            tracing::warn!(layer = %index.digest, "prefetch: cannot fetch ahead: {e}");
        }
    }
}

/// Fill one span of the plan, after any FUSE read under way; `false`
/// when the daemon stops or the span cannot be filled (that thread stops).
fn fill(rootfs: &Rootfs, (layer, span): SpanRef, reads: &ReadsInFlight, stop: &AtomicBool) -> bool {
    while reads.any() && !stop.load(Ordering::Acquire) {
        std::thread::sleep(YIELD_PAUSE);
    }
    if stop.load(Ordering::Acquire) {
        return false;
    }
    let Some(reader) = rootfs.readers.get(layer) else {
        return true;
    };
    if let Err(e) = reader.fill_span(span) {
        tracing::warn!("prefetch: a fill thread stops: {e}");
        return false;
    }
    true
}

/// The spans to fill, each once, in order: those before each eStargz
/// layer's prefetch landmark; then (with `none`, nothing more) the
/// recorded files' (for `recorded`), every regular file's in walk order,
/// and the spans no file covers (headers, whiteouts, overwritten files).
fn fill_order(rootfs: &Rootfs, mode: Prefetch) -> Vec<SpanRef> {
    let mut queued: Vec<Vec<bool>> = rootfs
        .readers
        .iter()
        .map(|r| vec![false; r.span_count()])
        .collect();
    let mut plan = Vec::with_capacity(queued.iter().map(Vec::len).sum());
    for (layer, (index, queued)) in rootfs.indexes.iter().zip(&mut queued).enumerate() {
        let count = (index.prefetch_spans as usize).min(queued.len());
        queued[..count].fill(true);
        plan.extend((0..count).map(|i| (layer, i)));
    }
    if mode == Prefetch::None {
        return plan;
    }
    if mode == Prefetch::Recorded {
        let path = record_path(&rootfs.cache, &rootfs.image.manifest_digest);
        match read_record(&path, &rootfs.tree) {
            Ok(Some(files)) => {
                tracing::info!(
                    "--prefetch recorded: filling the {} files of the record first",
                    files.len()
                );
                for id in files {
                    queue_file(rootfs, id, &mut queued, &mut plan);
                }
            }
            Ok(None) => tracing::info!(
                "--prefetch recorded: no record at {} (made by a mount with --record); filling as --prefetch all",
                path.display()
            ),
            Err(e) => tracing::warn!(
                "--prefetch recorded: cannot read the record ({e}); filling as --prefetch all"
            ),
        }
    }
    let _ = rootfs.tree.visit(ROOT, |_, id| {
        queue_file(rootfs, id, &mut queued, &mut plan);
        Ok::<(), ()>(())
    });
    for (layer, spans) in queued.iter().enumerate() {
        plan.extend(
            spans
                .iter()
                .enumerate()
                .filter(|(_, &q)| !q)
                .map(|(i, _)| (layer, i)),
        );
    }
    plan
}

/// Queue the spans holding a regular file's bytes that are not queued yet.
fn queue_file(rootfs: &Rootfs, id: NodeId, queued: &mut [Vec<bool>], plan: &mut Vec<SpanRef>) {
    let NodeKind::File {
        layer,
        offset,
        size,
    } = rootfs.tree.node(id).kind
    else {
        return;
    };
    let (Some(index), Some(queued)) = (
        rootfs.indexes.get(layer as usize),
        queued.get_mut(layer as usize),
    ) else {
        return;
    };
    let Some(covering) = spans_covering(&index.spans, offset, size) else {
        return;
    };
    let (first, last) = covering.into_inner();
    for i in first..=last.min(queued.len().saturating_sub(1)) {
        if !queued[i] {
            queued[i] = true;
            plan.push((layer as usize, i));
        }
    }
}
