//! What the cache holds and who uses it, and taking it back: the work
//! behind `ocimount cache ls`, `du`, `prune` and `rm`.
//!
//! Every process that reads a layer holds a shared flock on the layer's
//! `inuse` file (see `LayerReader::open`), so a layer some mount or command
//! is reading is never pruned or removed under it: the exclusive lock that
//! pruning takes is simply not granted. Pruning drops decoded data by
//! punching holes in `data` and clearing the span flags, so the index stays
//! valid and an evicted span is decoded again when next read.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::cache::mount_records::list_mounts;
use crate::cache::paths;
use crate::cache::Cache;
use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::image::Image;
use crate::sys::atomic::{self, Stale};
use crate::sys::lock::try_exclusive_lock;
use crate::sys::rotating_log::RotatingLog;

/// An image opened with this cache, as `CACHE/images/<manifest hex>.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The image pinned to its manifest (`oci:/abs/path@sha256:…`).
    pub image: String,
    pub manifest: String,
    /// Its config's digest (absent from records written before it was
    /// kept): with `manifest`, the documents `prune` keeps for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    pub layers: Vec<String>,
}

/// Note that `image` was opened here, for `cache ls`. Best effort: a
/// read-only or full cache must not stop a command.
pub fn record_image(cache: &Cache, image: &Image) {
    let Ok(pinned) = image.reference.pinned(&image.manifest_digest) else {
        return;
    };
    let record = ImageRecord {
        image: pinned,
        manifest: image.manifest_digest.to_string(),
        config: Some(image.config_digest.to_string()),
        layers: image.layers.iter().map(|l| l.digest.to_string()).collect(),
    };
    let path = paths::image_record(cache.root(), &image.manifest_digest);
    let json = serde_json::to_vec_pretty(&record).unwrap_or_default();
    let _ = atomic::write_file(&path, &json, false);
}

/// One layer of the cache and what uses it.
#[derive(Clone, Debug, Serialize)]
pub struct LayerUsage {
    pub digest: String,
    /// Bytes of its index file.
    pub index_bytes: u64,
    /// Decoded bytes held on disk (allocated in its sparse `data` file).
    pub decoded_bytes: u64,
    /// When an image last opened it, in seconds since the epoch.
    pub last_used: u64,
    /// The images recorded here that have it.
    pub images: Vec<String>,
    /// The mount points of the live mounts that serve it.
    pub mounts: Vec<PathBuf>,
    /// Whether some process reads it right now (a mount, a `cat`, …).
    pub in_use: bool,
}

/// Totals for `cache du`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CacheTotals {
    pub layers: usize,
    pub images: usize,
    pub mounts: usize,
    pub index_bytes: u64,
    pub decoded_bytes: u64,
    /// Everything the cache directory holds on disk.
    pub disk_bytes: u64,
}

fn layers_root(cache: &Cache) -> PathBuf {
    paths::layers(cache.root())
}

fn image_records(cache: &Cache) -> Vec<(PathBuf, ImageRecord)> {
    let dir = paths::image_records(cache.root());
    let mut out = Vec::new();
    for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "json") {
            if let Some(record) = fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<ImageRecord>(&b).ok())
            {
                out.push((path, record));
            }
        }
    }
    out.sort_by(|a, b| a.1.image.cmp(&b.1.image));
    out
}

fn mtime_secs(path: &Path) -> Option<u64> {
    let modified = fs::metadata(path).ok()?.modified().ok()?;
    Some(modified.duration_since(UNIX_EPOCH).ok()?.as_secs())
}

/// Bytes a file holds on disk (a sparse `data` file only what it holds).
pub(crate) fn allocated(path: &Path) -> u64 {
    fs::metadata(path).map_or(0, |m| m.blocks() * 512)
}

/// When an image last opened the layer in `dir`, in seconds since the
/// epoch (its index's time for a layer that never recorded a use).
pub(crate) fn layer_last_used(dir: &Path) -> u64 {
    mtime_secs(&dir.join("used"))
        .or_else(|| mtime_secs(&dir.join("index")))
        .unwrap_or(0)
}

/// Every layer directory of the cache, by digest.
fn layer_dirs(cache: &Cache) -> Vec<(Digest, PathBuf)> {
    paths::layer_dirs(cache.root())
}

/// `cache ls`: every layer with its size, last use and users.
pub fn layers(cache: &Cache) -> Result<Vec<LayerUsage>> {
    let images = image_records(cache);
    let mounts = list_mounts(cache);
    let mut out = Vec::new();
    for (digest, dir) in layer_dirs(cache) {
        let name = digest.to_string();
        let in_use = try_exclusive_lock(&dir.join("inuse"))?.is_none();
        out.push(LayerUsage {
            index_bytes: fs::metadata(dir.join("index")).map_or(0, |m| m.len()),
            decoded_bytes: allocated(&dir.join("data")),
            last_used: layer_last_used(&dir),
            images: images
                .iter()
                .filter(|(_, r)| r.layers.contains(&name))
                .map(|(_, r)| r.image.clone())
                .collect(),
            mounts: mounts
                .iter()
                .filter(|m| m.layers.contains(&name))
                .map(|m| m.dir.clone())
                .collect(),
            in_use,
            digest: name,
        });
    }
    Ok(out)
}

/// `cache du`: the totals.
pub fn totals(cache: &Cache) -> Result<CacheTotals> {
    let layers = layers(cache)?;
    Ok(CacheTotals {
        layers: layers.len(),
        images: image_records(cache).len(),
        mounts: list_mounts(cache).len(),
        index_bytes: layers.iter().map(|l| l.index_bytes).sum(),
        decoded_bytes: layers.iter().map(|l| l.decoded_bytes).sum(),
        disk_bytes: disk_usage(cache.root()),
    })
}

fn disk_usage(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            total += meta.blocks() * 512;
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    total
}

/// What `prune` did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PruneReport {
    /// Layers whose decoded data was dropped (and, with `all`, their index).
    pub pruned: Vec<String>,
    /// Layers left alone because something reads them.
    pub in_use: Vec<String>,
    pub bytes_freed: u64,
}

/// `cache prune`: drop the decoded data of every layer nothing reads (and
/// last used before `older_than` ago, when given). With `all`, remove those
/// layers altogether, index included, the records of images left with no
/// layer here, and the trees of images with no record. Either way, the
/// temp files of tree writers that died go, and so do the kept manifests
/// and configs no image record names (`sweep_documents`).
pub fn prune(cache: &Cache, all: bool, older_than: Option<Duration>) -> Result<PruneReport> {
    let cutoff = older_than.map(|age| {
        SystemTime::now()
            .checked_sub(age)
            .unwrap_or(UNIX_EPOCH)
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    });
    let mut report = PruneReport::default();
    for layer in layers(cache)? {
        if cutoff.is_some_and(|cutoff| layer.last_used >= cutoff) {
            continue;
        }
        let dir = layers_root(cache).join(layer.digest.trim_start_matches("sha256:"));
        let Some(_claim) = try_exclusive_lock(&dir.join("inuse"))? else {
            report.in_use.push(layer.digest);
            continue;
        };
        let freed = if all {
            let before = disk_usage(&dir) + allocated(&dir);
            remove_layer_dir(&dir)?;
            before
        } else {
            drop_decoded(&dir)?
        };
        if freed > 0 || all {
            report.bytes_freed += freed;
            report.pruned.push(layer.digest);
        }
    }
    if all {
        forget_images_without_layers(cache);
    }
    report.bytes_freed += sweep_trees(cache, all);
    report.bytes_freed += sweep_temps(cache.root(), Stale::OlderThan(STALE_TEMP));
    report.bytes_freed += sweep_layer_temps(cache.root());
    report.bytes_freed += reclaim_abandoned_removals(cache.root());
    report.bytes_freed += remove_ended_mounts_logs(cache);
    report.bytes_freed += sweep_documents(cache, all);
    Ok(report)
}

/// `cache rm DIGEST`: remove one layer, unless something reads it.
pub fn remove(cache: &Cache, digest: &Digest) -> Result<u64> {
    let dir = layers_root(cache).join(digest.hex());
    if !dir.is_dir() {
        return Err(Error::Cache {
            path: dir,
            reason: format!("layer {digest} is not in this cache"),
        });
    }
    let Some(_claim) = try_exclusive_lock(&dir.join("inuse"))? else {
        let name = digest.to_string();
        let users: Vec<String> = list_mounts(cache)
            .into_iter()
            .filter(|m| m.layers.contains(&name))
            .map(|m| format!("{} (pid {})", m.dir.display(), m.pid))
            .collect();
        let by = if users.is_empty() {
            "a running ocimount command".to_string()
        } else {
            format!("the mount at {}", users.join(", "))
        };
        return Err(Error::Cache {
            path: dir,
            reason: format!("layer {digest} is in use by {by}; unmount it first"),
        });
    };
    let freed = disk_usage(&dir) + allocated(&dir);
    remove_layer_dir(&dir)?;
    forget_images_without_layers(cache);
    Ok(freed + sweep_trees(cache, true))
}

/// Rename the directory out of the way first, so no process ever sees a
/// half-removed entry under the layer's name.
fn remove_layer_dir(dir: &Path) -> Result<()> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let doomed = dir.with_file_name(paths::removing_name(&name));
    fs::rename(dir, &doomed).at(dir)?;
    fs::remove_dir_all(&doomed).at(&doomed)
}

/// Punch the decoded bytes out of `data` (keeping its size, so the index
/// stays valid and nothing mapped is truncated) and clear every span flag.
pub(crate) fn drop_decoded(dir: &Path) -> Result<u64> {
    let data_path = dir.join("data");
    let before = allocated(&data_path);
    if before == 0 {
        return Ok(0);
    }
    let spans_path = dir.join("spans");
    if let Ok(spans) = fs::OpenOptions::new().write(true).open(&spans_path) {
        let len = spans.metadata().at(&spans_path)?.len();
        spans
            .write_all_at(&vec![0u8; len as usize], 0)
            .at(&spans_path)?;
    }
    let data = fs::OpenOptions::new()
        .write(true)
        .open(&data_path)
        .at(&data_path)?;
    punch_hole(&data, &data_path)?;
    Ok(before.saturating_sub(allocated(&data_path)))
}

fn punch_hole(file: &File, path: &Path) -> Result<()> {
    let len = file.metadata().at(path)?.len();
    // SAFETY: fallocate on an fd we own, within its length.
    let r = unsafe {
        libc::fallocate64(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            0,
            len as libc::off64_t,
        )
    };
    if r != 0 {
        return Err(Error::io(path, std::io::Error::last_os_error()));
    }
    Ok(())
}

/// A tree writer's temp file this old was left by a writer that died: a
/// live one renames it into place within a second.
const STALE_TEMP: Duration = Duration::from_secs(600);

/// Whether a file was last changed more than `STALE_TEMP` before `now`:
/// no writer is at work on it.
fn untouched_for_a_while(meta: &fs::Metadata, now: SystemTime) -> bool {
    meta.modified()
        .ok()
        .and_then(|m| now.duration_since(m).ok())
        .is_some_and(|age| age > STALE_TEMP)
}

/// A directory itself, not a symlink to one: what a link points at is not
/// the cache's to sweep.
fn real_dir(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

/// Remove the logs of mounts that have ended: every file in `logs/` that
/// no live mount's record names (nor its rotated part) and that no process
/// holds open; where `/proc` cannot tell for every process, only those
/// also untouched for a while. The logs are listed before `/proc` is read:
/// a mount starting meanwhile holds its log open from its creation on, so
/// a listed log it uses is seen open, and a later one is not listed.
fn remove_ended_mounts_logs(cache: &Cache) -> u64 {
    // By name: the records hold the cache's path as their daemon spelled it.
    let live: Vec<std::ffi::OsString> = list_mounts(cache)
        .into_iter()
        .filter_map(|m| m.log)
        .flat_map(|log| [RotatingLog::rotated_path(&log), log])
        .filter_map(|log| log.file_name().map(|n| n.to_os_string()))
        .collect();
    let dir = paths::logs(cache.root());
    let listed: Vec<(PathBuf, std::ffi::OsString, fs::Metadata)> = fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| Some((entry.path(), entry.file_name(), entry.metadata().ok()?)))
        .filter(|(_, name, meta)| meta.is_file() && !live.contains(name))
        .collect();
    if listed.is_empty() {
        return 0;
    }
    let open = crate::sys::open_files::open_under(&dir);
    let canonical = fs::canonicalize(&dir).unwrap_or_else(|_| dir.clone());
    let now = SystemTime::now();
    let mut freed = 0;
    for (path, name, meta) in listed {
        let held = open
            .as_ref()
            .is_some_and(|o| o.paths.contains(&canonical.join(&name)));
        let sure = open.as_ref().is_some_and(|o| o.complete);
        let ended = !held && (sure || untouched_for_a_while(&meta, now));
        if ended && fs::remove_file(&path).is_ok() {
            freed += meta.blocks() * 512;
        }
    }
    freed
}

/// Remove what a `cache rm` or `prune --all` killed midway left of a
/// layer (its `.removing-*` directory). Returns the bytes freed.
fn reclaim_abandoned_removals(root: &Path) -> u64 {
    let mut freed = 0;
    for dir in paths::abandoned_removals(root) {
        let size = disk_usage(&dir) + allocated(&dir);
        if fs::remove_dir_all(&dir).is_ok() {
            freed += size;
        }
    }
    freed
}

/// Sweep the stale temp files of every directory of the cache written by
/// rename (see `paths::rename_dirs`). Returns the bytes freed.
pub fn sweep_temps(root: &Path, stale: Stale) -> u64 {
    paths::rename_dirs(root)
        .iter()
        .map(|dir| atomic::sweep(dir, stale))
        .sum()
}

/// Sweep the temp files of every layer directory no builder holds (a
/// builder killed mid-pass leaves its `data`). Returns the bytes freed.
fn sweep_layer_temps(root: &Path) -> u64 {
    let mut freed = 0;
    for (_, dir) in paths::layer_dirs(root) {
        // The build lock: held, a builder is writing its temps right now.
        if let Ok(Some(_lock)) = try_exclusive_lock(&dir.join(paths::BUILD_LOCK)) {
            freed += atomic::sweep(&dir, Stale::All);
        }
    }
    freed
}

/// Remove from `trees/sha256` what no open could use: the temp files of
/// tree writers that died, and (with `orphans`) every tree whose image has
/// no record here: its layers are gone, or it was never recorded, and it is
/// merged again if that image is opened. A tree mapped by a running process
/// stays valid for it (removing a file leaves its mapping whole). Returns
/// the bytes freed.
fn sweep_trees(cache: &Cache, orphans: bool) -> u64 {
    let records = paths::image_records(cache.root());
    let trees = paths::trees(cache.root());
    if !real_dir(&paths::trees_parent(cache.root())) || !real_dir(&trees) {
        return 0;
    }
    let mut freed = 0;
    for entry in fs::read_dir(&trees).into_iter().flatten().flatten() {
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        let name = entry.file_name().to_string_lossy().into_owned();
        let doomed = if name.starts_with('.') {
            false // temp files: see sweep_temps
        } else {
            // Only what a tree is named: a manifest digest's hex.
            let is_tree = Digest::parse(&format!("sha256:{name}")).is_ok();
            orphans && is_tree && !records.join(format!("{name}.json")).exists()
        };
        if doomed && meta.is_file() && fs::remove_file(entry.path()).is_ok() {
            freed += meta.blocks() * 512;
        }
    }
    freed
}

/// Remove the kept manifests and configs (`CACHE/documents/`) that no
/// image record names: with `all`, every one; else those untouched for a
/// while (an image being opened right now keeps its documents before it
/// is recorded). One of them gone costs its fetch again, nothing more.
fn sweep_documents(cache: &Cache, all: bool) -> u64 {
    let named: std::collections::BTreeSet<String> = image_records(cache)
        .into_iter()
        .flat_map(|(_, record)| [Some(record.manifest), record.config])
        .flatten()
        .filter_map(|digest| digest.strip_prefix("sha256:").map(str::to_string))
        .collect();
    let dir = paths::documents(cache.root());
    if !real_dir(dir.parent().unwrap_or(&dir)) || !real_dir(&dir) {
        return 0;
    }
    let now = SystemTime::now();
    let mut freed = 0;
    for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        // Only what a document is named (temp files: see sweep_temps).
        if Digest::parse(&format!("sha256:{name}")).is_err() || named.contains(&name) {
            continue;
        }
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        let idle = untouched_for_a_while(&meta, now);
        if meta.is_file() && (all || idle) && fs::remove_file(entry.path()).is_ok() {
            freed += meta.blocks() * 512;
        }
    }
    freed
}

fn forget_images_without_layers(cache: &Cache) {
    let present: BTreeMap<String, ()> = layer_dirs(cache)
        .into_iter()
        .map(|(d, _)| (d.to_string(), ()))
        .collect();
    for (path, record) in image_records(cache) {
        // A stored tree of an image that lost a layer could never be used
        // again (it names the layer's index file): it goes with the layer.
        if !record.layers.iter().all(|l| present.contains_key(l)) {
            if let Some(hex) = path.file_stem().and_then(|s| s.to_str()) {
                let _ = fs::remove_file(paths::trees(cache.root()).join(hex));
            }
        }
        if !record.layers.iter().any(|l| present.contains_key(l)) {
            let _ = fs::remove_file(path);
        }
    }
}
