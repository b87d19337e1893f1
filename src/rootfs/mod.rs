//! An image opened for reading: resolved, every layer indexed (in parallel,
//! through the cache) and merged into one tree, with a byte reader per layer.

pub mod decode_ahead;
pub mod publish;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::blob::Blob;
use crate::cache::eviction::CacheLimit;
use crate::cache::reader::DigestChecks;
use crate::cache::LayerReader;
use crate::cache::{Cache, CacheEntry, CacheMode};
use crate::error::{Error, Result};
use crate::image::Image;
use crate::layer::index::{PassOptions, DEFAULT_GZIP_SPAN, LARGE_FILE_GZIP_SPAN};
use crate::layer::layer_index::LayerIndex;
use crate::layer::LayerInfo;
use crate::merge::{LayerEntries, NodeId, NodeKind, Tree, TreeBuilder};
use crate::oci::Platform;
use crate::source::registry::settings::Settings;
use crate::source::ImageRef;
use crate::sys::progress::Progress;
use crate::sys::workers;
use crate::tree::layout::{LayerRecord, LayerSource};
use crate::tree::stored;

#[derive(Clone, Debug)]
pub struct OpenOptions {
    pub platform: Option<Platform>,
    pub cache_dir: Option<PathBuf>,
    /// Output bytes between gzip checkpoints.
    pub gzip_span: u64,
    /// Draw progress bars (when stderr is a terminal).
    pub progress: bool,
    /// Whether decoded spans are stored in the cache.
    pub cache_mode: CacheMode,
    /// `--cache-max`: the decoded bytes the cache may hold.
    pub cache_max: Option<u64>,
    /// Take layer indexes published with the image (`index push`), when
    /// the settings allow it (`--no-remote-index` does not).
    pub published_indexes: bool,
    /// `--publish-index`: when this open indexes a registry image with a
    /// full pass and the registry has no index artifact for it yet,
    /// publish one (as `index push` does); a failure is a warning.
    pub publish_index: bool,
    /// How registries are spoken to.
    pub registry: Settings,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            platform: None,
            cache_dir: None,
            gzip_span: DEFAULT_GZIP_SPAN,
            progress: true,
            cache_mode: CacheMode::default(),
            cache_max: None,
            published_indexes: true,
            publish_index: false,
            registry: Settings::default(),
        }
    }
}

/// How opening went, for `inspect` and the benchmarks.
#[derive(Clone, Debug, Default)]
pub struct OpenStats {
    pub layers_indexed: usize,
    pub layers_from_cache: usize,
    pub elapsed: Duration,
}

pub struct Rootfs {
    pub image: Image,
    pub cache: Cache,
    /// Each layer's index, without its entries (they are merged into
    /// `tree`, or it was stored): see `entry_counts`.
    pub indexes: Vec<LayerIndex>,
    /// How many entries each layer's index lists.
    pub entry_counts: Vec<usize>,
    pub readers: Vec<LayerReader>,
    pub tree: Tree,
    pub stats: OpenStats,
    /// `--cache-max`, enforced after reads that stored spans.
    pub limit: Option<CacheLimit>,
}

/// Resolve the image and make sure every layer's index is in the cache,
/// building those that are not; decodes none that are (see
/// [`Cache::looks_built`]): what a parent needs before its daemon opens
/// the image for real.
pub fn ensure_indexed(reference: &ImageRef, opts: &OpenOptions) -> Result<Image> {
    let image = open_image(reference, opts)?;
    let cache = layer_cache(&image, opts)?;
    if image.layers.iter().all(|layer| cache.looks_built(layer)) {
        crate::cache::admin::record_image(&cache, &image);
    } else {
        index_image(&image, &cache, opts)?;
    }
    Ok(image)
}

/// An image with every layer indexed (through the cache) and no tree:
/// what `layers` needs.
pub fn open_indexes(reference: &ImageRef, opts: &OpenOptions) -> Result<(Image, Vec<LayerIndex>)> {
    let image = open_image(reference, opts)?;
    let cache = layer_cache(&image, opts)?;
    let (_, entries) = index_image(&image, &cache, opts)?;
    Ok((image, entries.into_iter().map(|e| e.index).collect()))
}

/// Resolve the image, keeping the manifest and config it verifies in the
/// cache's documents directory and reading them from there when it is
/// opened by digest: a mount's daemon, given the image pinned to the
/// manifest its parent resolved, fetches neither again.
fn open_image(reference: &ImageRef, opts: &OpenOptions) -> Result<Image> {
    let cache = Cache::locate(opts.cache_dir.as_deref())?;
    let settings = Settings {
        documents: Some(crate::cache::paths::documents(cache.root())),
        ..opts.registry.clone()
    };
    Image::open(reference, opts.platform.as_ref(), &settings)
}

/// The cache as `opts` and the image ask for it: whether a registry pass
/// keeps what it decodes, and whose published indexes are trusted. Every
/// open takes back first what writers killed between write and rename
/// left (stored trees, records), whichever path the open then takes.
fn layer_cache(image: &Image, opts: &OpenOptions) -> Result<Cache> {
    let cache = Cache::locate(opts.cache_dir.as_deref())?
        .keeping_remote_output(opts.cache_mode == CacheMode::Full && opts.cache_max.is_none())
        .trusting_published(published_scope(image, opts))
        .using_tocs(opts.registry.tocs);
    crate::cache::admin::sweep_temps(cache.root(), crate::sys::atomic::Stale::WriterGone);
    Ok(cache)
}

/// Every layer's blob and cache entry (indexed now where missing, from a
/// published index where there is one), and the image recorded in the cache.
fn index_image(
    image: &Image,
    cache: &Cache,
    opts: &OpenOptions,
) -> Result<(Vec<Blob>, Vec<CacheEntry>)> {
    let blobs = layer_blobs(image)?;
    let found = take_published_indexes(image, cache, opts);
    let entries = index_layers(image, &blobs, cache, opts)?;
    crate::cache::admin::record_image(cache, image);
    if opts.publish_index {
        publish_first(image, cache, opts, &entries, found);
    }
    Ok((blobs, entries))
}

/// `--publish-index`: publish the indexes this open built, when it built
/// any with a full pass and the registry has no artifact for the image
/// (`found`: whether looking for one found one, when it was looked for).
/// Never an error: a registry that refuses the push, or credentials that
/// allow only pulls, cost a warning.
fn publish_first(
    image: &Image,
    cache: &Cache,
    opts: &OpenOptions,
    entries: &[CacheEntry],
    found: Option<bool>,
) {
    let crate::source::reference::Transport::Registry(_) = &image.reference.transport else {
        return;
    };
    if !entries.iter().any(|e| e.built) {
        return;
    }
    let found = match found {
        Some(found) => found,
        None => match image.store.published_indexes(&image.manifest_digest) {
            Ok(published) => !published.is_empty(),
            Err(e) => {
                eprintln!(
                    "ocimount: warning: layer indexes not published: cannot tell whether {} has them already ({e})",
                    image.store.index_location()
                );
                return;
            }
        },
    };
    if found {
        tracing::info!("the registry has published indexes for the image already; not publishing");
        return;
    }
    let indexes: Vec<&LayerIndex> = entries.iter().map(|e| &e.index).collect();
    match publish::publish(image, &indexes, cache, &opts.registry) {
        Ok(done) => {
            let message = format!(
                "published the indexes of {} of {} layers for {}@{} ({})",
                done.published,
                image.layers.len(),
                done.target,
                image.manifest_digest,
                done.pushed.listed_through
            );
            if opts.progress {
                eprintln!("{message}");
            } else {
                tracing::info!("{message}");
            }
        }
        Err(e) => {
            eprintln!("ocimount: warning: layer indexes not published: {e} (the mount goes on)")
        }
    }
}

fn layer_blobs(image: &Image) -> Result<Vec<Blob>> {
    image
        .layers
        .iter()
        .map(|layer| image.store.blob(&layer.digest, Some(layer.size)))
        .collect()
}

/// The image's stored merged tree and its layers' indexes (without their
/// entries), when every index is in the cache and the tree was merged
/// from exactly those; `None` (and the log says why) otherwise.
fn stored_tree(image: &Image, cache: &Cache) -> Option<(Vec<CacheEntry>, Tree)> {
    let mut entries = Vec::with_capacity(image.layers.len());
    for layer in &image.layers {
        match cache.built_without_entries(layer) {
            Ok(entry) => entries.push(entry),
            Err(reason) => {
                tracing::debug!(layer = %layer.digest, "no stored tree use: {reason}");
                return None;
            }
        }
    }
    let records: Vec<LayerRecord> = image
        .layers
        .iter()
        .zip(&entries)
        .map(|(layer, entry)| LayerRecord {
            digest: layer.digest,
            index: entry.identity,
            entries: 0,
            stream_len: entry.index.uncompressed_size,
        })
        .collect();
    let path = stored::path(cache.root(), &image.manifest_digest);
    match stored::load(&path, &records) {
        Ok(tree) => Some((entries, tree)),
        Err(reason) => {
            tracing::info!(
                "merging the layers: the stored tree {}: {reason}",
                path.display()
            );
            None
        }
    }
}

/// Merge the layers' entries into the tree, the builder consuming each
/// layer's entries as it applies them (a layer of a million entries lists
/// 100 MB), and store the tree for the next process. A cache that cannot
/// take it costs only that.
fn merge(image: &Image, cache: &Cache, entries: &mut [CacheEntry]) -> Result<Tree> {
    let mut builder = TreeBuilder::default();
    for (position, entry) in entries.iter_mut().enumerate() {
        builder.apply(LayerEntries {
            position,
            digest: entry.index.digest,
            entries: std::mem::take(&mut entry.index.entries),
        })?;
    }
    let sources: Vec<LayerSource> = entries
        .iter()
        .map(|e| LayerSource {
            index: e.identity,
            stream_len: e.index.uncompressed_size,
        })
        .collect();
    let tree = builder.finish_with(&sources)?;
    let path = stored::path(cache.root(), &image.manifest_digest);
    if let Err(e) = stored::save(&path, &tree) {
        tracing::warn!("cannot store the merged tree: {e}");
    }
    Ok(tree)
}

impl Rootfs {
    /// What checking spans against their SHA-256 has cost, all layers.
    pub fn digest_checks(&self) -> DigestChecks {
        self.readers
            .iter()
            .map(LayerReader::digest_checks)
            .fold(DigestChecks::default(), |all, one| all + one)
    }

    /// Log what the span checks cost, where there were any: the benchmark
    /// reads the line from a daemon's log.
    pub fn log_digest_checks(&self) {
        let checks = self.digest_checks();
        if checks.spans > 0 {
            tracing::info!(
                spans = checks.spans,
                bytes = checks.bytes,
                cpu_seconds = checks.cpu.as_secs_f64(),
                wall_seconds = checks.wall.as_secs_f64(),
                "span digest checks: {} spans, {} bytes, {:.3} ms of CPU ({:.3} ms of wall time)",
                checks.spans,
                checks.bytes,
                checks.cpu.as_secs_f64() * 1e3,
                checks.wall.as_secs_f64() * 1e3
            );
        }
    }

    /// Open the image for reading: from its stored merged tree when the
    /// cache has one for exactly these layer indexes (no entry is decoded
    /// and nothing merged), else by indexing what is missing and merging
    /// the layers, storing the tree for the next process.
    pub fn open(reference: &ImageRef, opts: &OpenOptions) -> Result<Rootfs> {
        let started = Instant::now();
        let image = open_image(reference, opts)?;
        let cache = layer_cache(&image, opts)?;
        let (entries, tree, blobs) = match stored_tree(&image, &cache) {
            Some((entries, tree)) => {
                crate::cache::admin::record_image(&cache, &image);
                let blobs = layer_blobs(&image)?;
                (entries, tree, blobs)
            }
            None => {
                let (blobs, mut entries) = index_image(&image, &cache, opts)?;
                let tree = merge(&image, &cache, &mut entries)?;
                (entries, tree, blobs)
            }
        };
        let mut stats = OpenStats::default();
        let mut indexes = Vec::with_capacity(entries.len());
        let mut readers = Vec::with_capacity(entries.len());
        for (blob, entry) in blobs.into_iter().zip(entries) {
            if entry.built {
                stats.layers_indexed += 1;
            } else {
                stats.layers_from_cache += 1;
            }
            let reader = LayerReader::open(&entry.dir, &entry.index, blob)?;
            readers.push(match opts.cache_mode {
                CacheMode::Full => reader,
                CacheMode::IndexOnly => reader.without_storing(),
            });
            indexes.push(entry.index);
        }
        let entry_counts = tree.layers().iter().map(|l| l.entries as usize).collect();
        stats.elapsed = started.elapsed();
        let limit = match (opts.cache_mode, opts.cache_max) {
            (CacheMode::Full, Some(max)) => Some(CacheLimit::new(cache.root(), max)),
            _ => None,
        };
        Ok(Rootfs {
            image,
            cache,
            indexes,
            entry_counts,
            readers,
            tree,
            stats,
            limit,
        })
    }

    /// Read a regular file's bytes at `offset`; fewer bytes only at its end.
    pub fn read_file(&self, id: NodeId, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let NodeKind::File {
            layer,
            offset: start,
            size,
        } = self.tree.node(id).kind
        else {
            return Err(Error::BadPath {
                path: format!("inode {id}"),
                reason: "not a regular file".to_string(),
            });
        };
        if offset >= size {
            return Ok(0);
        }
        let want = (size - offset).min(buf.len() as u64) as usize;
        let (Some(reader), Some(index)) = (
            self.readers.get(layer as usize),
            self.indexes.get(layer as usize),
        ) else {
            return Err(Error::Internal(format!("inode {id}: no layer {layer}")));
        };
        // The tree was checked to keep every file inside its layer's
        // stream; checked here too, so no sum can wrap.
        let at = start
            .checked_add(offset)
            .ok_or_else(|| Error::DamagedSpan {
                digest: index.digest,
                offset: start,
                reason: "the file lies outside the stream".to_string(),
            })?;
        let n = reader.read_at(at, &mut buf[..want])?;
        if n < want {
            return Err(Error::DamagedSpan {
                digest: index.digest,
                offset: at + n as u64,
                reason: "the stream ends inside the file".to_string(),
            });
        }
        if let Some(limit) = &self.limit {
            limit.after_read(&self.readers);
        }
        Ok(n)
    }
}

/// The most a published index of a layer of `size` compressed bytes may
/// be: about 100 bytes an entry make an index a fraction of its layer, so a
/// bomb costs a bounded read, not the limit's worth of memory and disk.
fn published_index_limit(size: u64) -> u64 {
    (64u64 << 20)
        .saturating_add(size.saturating_mul(8))
        .min(crate::limits::MAX_PUBLISHED_INDEX_BYTES)
}

/// The scope whose published indexes this open may use: the repository
/// the image is read from (a mirror's, when registries.conf sent it
/// there), when it is in a registry and remote indexes are allowed.
fn published_scope(image: &Image, opts: &OpenOptions) -> Option<String> {
    let allowed = opts.published_indexes && opts.registry.remote_index;
    match &image.reference.transport {
        crate::source::reference::Transport::Registry(_) if allowed => {
            Some(image.store.index_location())
        }
        _ => None,
    }
}

/// Put the layer indexes published beside the image (`index push`) into
/// the cache for the layers it lacks, so that they get no full pass. Any
/// failure, or an index that is not sound, costs only that: the layer is
/// indexed by a full pass as usual, and the log says why.
///
/// Whether the registry has an artifact for the image: `None` when it was
/// not looked for (or could not be).
fn take_published_indexes(image: &Image, cache: &Cache, opts: &OpenOptions) -> Option<bool> {
    published_scope(image, opts)?;
    let missing: Vec<&LayerInfo> = image.layers.iter().filter(|l| !cache.has(l)).collect();
    if missing.is_empty() {
        return None;
    }
    let published = match image.store.published_indexes(&image.manifest_digest) {
        Ok(published) => published,
        Err(e) => {
            tracing::warn!(
                "cannot look for published layer indexes ({e}); indexing with full passes"
            );
            return None;
        }
    };
    for layer in missing {
        let Some(found) = published.iter().find(|p| p.layer == layer.digest) else {
            continue;
        };
        let taken = image
            .store
            .fetch_published_index(found, published_index_limit(layer.size))
            .and_then(|bytes| cache.install(layer, &bytes));
        match taken {
            Ok(_) => tracing::info!(layer = %layer.digest, "using the published index"),
            Err(e) => tracing::warn!(
                "layer {} ({}): {e}; indexing it with a full pass",
                layer.position + 1,
                layer.digest
            ),
        }
    }
    Some(!published.is_empty())
}

/// The smallest layer (compressed) whose hashes are taken on threads of
/// their own during its pass (`PassOptions::hash_apart`).
const HASH_APART_MIN_BYTES: u64 = 1 << 20;

/// Layer streams from a registry at once: they wait on the network more
/// than on a core, and more would invite 429s.
const REMOTE_STREAMS: usize = 4;

/// Index every layer through the cache, up to one thread per core.
fn index_layers(
    image: &Image,
    blobs: &[Blob],
    cache: &Cache,
    opts: &OpenOptions,
) -> Result<Vec<CacheEntry>> {
    let progress = if opts.progress {
        Progress::new()
    } else {
        Progress::hidden()
    };
    let count = image.layers.len();
    let cores = workers::cores();
    // Streams from a registry wait on the network more than on a core.
    let remote = blobs.iter().any(|b| b.is_remote());
    let threads = if remote { REMOTE_STREAMS } else { cores }.min(count.max(1));
    let total_size: u64 = image.layers.iter().map(|l| l.size).sum();
    let results: Mutex<Vec<Option<Result<CacheEntry>>>> =
        Mutex::new((0..count).map(|_| None).collect());
    workers::for_each_index(threads, count, |i| {
        let Some(layer) = image.layers.get(i) else {
            return false;
        };
        let bar = progress.layer_bar(format!("layer {}/{count}", i + 1), layer.size);
        let pass = PassOptions {
            gzip_span: opts.gzip_span,
            large_file_span: LARGE_FILE_GZIP_SPAN.min(opts.gzip_span),
            // A layer longer than the cores' fair share outlasts
            // the others: its hashing gets the cores they free. Not
            // for a small one, whose pass is over before three threads
            // would have started.
            hash_apart: cores > 1
                && layer.size >= HASH_APART_MIN_BYTES
                && u128::from(layer.size) * cores as u128 > u128::from(total_size),
        };
        let result = cache.entry(&*blobs[i], layer, &bar, pass);
        results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(result);
        true
    });
    let mut out = Vec::with_capacity(count);
    for r in results.into_inner().unwrap_or_else(|p| p.into_inner()) {
        out.push(r.ok_or_else(|| Error::NoManifest("a layer was not indexed".to_string()))??);
    }
    Ok(out)
}
