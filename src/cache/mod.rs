//! The content-addressed cache: one directory per layer digest, shared by
//! every image and every process that uses the layer.
//!
//! Its directory's layout, every file of it, is in [`paths`].
//! `index` is renamed into place last, so its presence means `data` and
//! `spans` are complete. Files are replaced by rename, never truncated, so
//! a process that has them mapped never takes SIGBUS.

pub mod admin;
pub mod eviction;
pub mod mount_records;
pub mod paths;
pub mod reader;
pub mod residency;

pub use reader::LayerReader;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;

use crate::blob::BlobSource;
use crate::error::{Error, IoContext, Result};
use crate::layer::format;
use crate::layer::format::IndexIdentity;
use crate::layer::index::{build_index, PassOptions};
use crate::layer::layer_index::{BuiltFrom, LayerIndex};
use crate::layer::spans::SpanStart;
use crate::layer::toc;
use crate::layer::Compression;
use crate::layer::LayerInfo;
use crate::sys::atomic::{self, Stale};
use crate::sys::lock::DirLock;

/// What the cache keeps of a layer besides its index.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CacheMode {
    /// Decoded spans are stored in `data` and read from there next time.
    #[default]
    Full,
    /// Nothing decoded is stored: every read decodes from the blob through
    /// the checkpoints (ratarmount's footprint, for the smallest disks).
    /// Streams that cannot be entered in the middle (one zstd frame, a
    /// deflate block past the span cap) are still kept as indexing wrote
    /// them: without that, every read would decode them from their start.
    IndexOnly,
}

impl std::str::FromStr for CacheMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<CacheMode, String> {
        match s {
            "full" => Ok(CacheMode::Full),
            "index-only" => Ok(CacheMode::IndexOnly),
            _ => Err(format!("{s:?} is not a cache mode: use full or index-only")),
        }
    }
}

impl std::fmt::Display for CacheMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CacheMode::Full => "full",
            CacheMode::IndexOnly => "index-only",
        })
    }
}

/// In a layer's directory: `published SCOPE` when its index was taken from
/// an artifact published in SCOPE (`docker://HOST/REPO`), absent when it was
/// built here by a full pass.
use paths::ORIGIN;

#[derive(Clone, Debug)]
pub struct Cache {
    root: PathBuf,
    /// Whether the indexing pass over a remote blob stores everything it
    /// decodes (see [`Cache::keeping_remote_output`]).
    keep_remote_output: bool,
    /// The image scope (`docker://HOST/REPO`) whose published indexes this
    /// process may use; an index taken from another scope's artifact is
    /// rebuilt by a full pass rather than trusted.
    published_scope: Option<String>,
    /// Whether a layer that carries a table of contents is indexed from it
    /// (and an index made so is used); `--no-toc`: by a full pass.
    use_tocs: bool,
}

/// A layer's cache files, with its index loaded.
pub struct CacheEntry {
    pub dir: PathBuf,
    pub index: LayerIndex,
    /// Which index file `index` was read from or written to (a stored
    /// tree records it, see `tree::stored`).
    pub identity: IndexIdentity,
    /// True when this call built the index (false: found in the cache).
    pub built: bool,
}

impl Cache {
    /// `--cache DIR`, then `$OCIMOUNT_CACHE`, then `/var/cache/ocimount` for
    /// root, then `$XDG_CACHE_HOME/ocimount` (or `~/.cache/ocimount`).
    pub fn locate(explicit: Option<&Path>) -> Result<Cache> {
        let root = if let Some(p) = explicit {
            p.to_path_buf()
        } else if let Some(p) = std::env::var_os("OCIMOUNT_CACHE").filter(|p| !p.is_empty()) {
            PathBuf::from(p)
        } else if unsafe { libc::geteuid() } == 0 {
            PathBuf::from("/var/cache/ocimount")
        } else if let Some(p) = std::env::var_os("XDG_CACHE_HOME").filter(|p| !p.is_empty()) {
            PathBuf::from(p).join("ocimount")
        } else if let Some(home) = std::env::var_os("HOME") {
            PathBuf::from(home).join(".cache").join("ocimount")
        } else {
            return Err(Error::Cache {
                path: PathBuf::from("."),
                reason: "no cache directory: pass --cache DIR or set OCIMOUNT_CACHE".to_string(),
            });
        };
        if !root.exists() {
            // New: private from the start, whatever the umask.
            fs::create_dir_all(&root).at(&root)?;
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&root, fs::Permissions::from_mode(0o700)).at(&root)?;
        }
        make_private(&root)?;
        Ok(Cache {
            root,
            keep_remote_output: false,
            published_scope: None,
            use_tocs: true,
        })
    }

    /// Make the indexing pass over a remote blob (a registry layer) store
    /// all it decodes in `data`, every span then present: the pass has
    /// fetched and decoded the whole layer anyway, and otherwise each later
    /// read would fetch its part of the layer a second time. Local blobs are
    /// not affected: there a span is decoded again from the file in
    /// milliseconds, and storing everything would cost the disk.
    pub fn keeping_remote_output(mut self, keep: bool) -> Cache {
        self.keep_remote_output = keep;
        self
    }

    /// Trust indexes taken from the artifacts published in `scope` (see
    /// [`Cache::install`]); none: only indexes built here are used.
    pub fn trusting_published(mut self, scope: Option<String>) -> Cache {
        self.published_scope = scope;
        self
    }

    /// Index layers that carry a table of contents from it (see
    /// `crate::layer::toc`), or (false) by a full pass like the others.
    pub fn using_tocs(mut self, use_tocs: bool) -> Cache {
        self.use_tocs = use_tocs;
        self
    }

    /// Whether the index in `dir` may be used: one built by a full pass
    /// here, or one published in the scope this process trusts.
    fn trusts(&self, dir: &Path) -> bool {
        match fs::read_to_string(dir.join(ORIGIN)) {
            // No mark: built here by a full pass.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            // A mark that cannot be read (EMFILE, EIO, not a file) may be
            // anyone's: fail closed, the index is built again.
            Err(_) => false,
            Ok(origin) => {
                let scope = origin.trim().strip_prefix("published ");
                scope.is_some() && scope == self.published_scope.as_deref()
            }
        }
    }

    /// Load an index the way `entry` may use it: sound and trusted.
    fn load_trusted(
        &self,
        dir: &Path,
        layer: &LayerInfo,
        keep_entries: bool,
    ) -> std::result::Result<format::Decoded, String> {
        let decoded = load_with(dir, layer, keep_entries)?;
        if !self.trusts(dir) {
            return Err("the index came from another image's published artifact".to_string());
        }
        if !self.use_tocs && decoded.index.built_from != BuiltFrom::FullPass {
            return Err(format!(
                "the index was made from {}, and --no-toc asks for a full pass",
                decoded.index.built_from.describe()
            ));
        }
        Ok(decoded)
    }

    /// The layer's index without its entries, when it is in the cache,
    /// sound and trusted (nothing is built): what serving a stored merged
    /// tree needs of a layer.
    pub fn built_without_entries(
        &self,
        layer: &LayerInfo,
    ) -> std::result::Result<CacheEntry, String> {
        let dir = self.layer_dir(layer);
        let decoded = self.load_trusted(&dir, layer, false)?;
        mark_used(&dir.join("used"));
        Ok(CacheEntry {
            dir,
            index: decoded.index,
            identity: decoded.identity,
            built: false,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn layer_dir(&self, layer: &LayerInfo) -> PathBuf {
        paths::layer(&self.root, &layer.digest)
    }

    /// Load the layer's index, building it first if it is missing, damaged
    /// or from another format version.
    pub fn entry(
        &self,
        blob: &dyn BlobSource,
        layer: &LayerInfo,
        bar: &ProgressBar,
        pass: PassOptions,
    ) -> Result<CacheEntry> {
        let dir = self.layer_dir(layer);
        fs::create_dir_all(&dir).at(&dir)?;
        mark_used(&dir.join("used"));
        match self.load_trusted(&dir, layer, true) {
            Ok(decoded) => {
                bar.finish_and_clear();
                return Ok(CacheEntry {
                    dir,
                    index: decoded.index,
                    identity: decoded.identity,
                    built: false,
                });
            }
            Err(reason) => tracing::info!(layer = %layer.digest, "indexing: {reason}"),
        }
        let _lock = DirLock::acquire(&dir.join("lock"))?;
        // Another process may have built it while we waited for the lock.
        if let Ok(decoded) = self.load_trusted(&dir, layer, true) {
            bar.finish_and_clear();
            return Ok(CacheEntry {
                dir,
                index: decoded.index,
                identity: decoded.identity,
                built: false,
            });
        }
        remove_temporaries(&dir);
        if let Some(entry) = self.entry_from_toc(&dir, blob, layer)? {
            bar.finish_and_clear();
            return Ok(entry);
        }
        let (index, identity) = build(&dir, blob, layer, bar, pass, self.keep_remote_output)?;
        bar.finish_and_clear();
        Ok(CacheEntry {
            dir,
            index,
            identity,
            built: true,
        })
    }
}

impl Cache {
    /// The layer's index made from its table of contents, where it has one
    /// the manifest vouches for and TOCs are used; `None` (the caller makes
    /// a full pass) where it has none or it cannot be used, which is said.
    /// The caller holds the layer's lock.
    fn entry_from_toc(
        &self,
        dir: &Path,
        blob: &dyn BlobSource,
        layer: &LayerInfo,
    ) -> Result<Option<CacheEntry>> {
        let Some(reference) = layer.toc.as_ref().filter(|_| self.use_tocs) else {
            return Ok(None);
        };
        let index = match toc::index_from_toc(layer, reference, blob) {
            Ok(index) => index,
            Err(e) => {
                tracing::warn!(
                    layer = %layer.digest,
                    "the layer's {} table of contents is not used, {e}: indexing it by a full pass",
                    reference.format_name()
                );
                return Ok(None);
            }
        };
        let mut temps = Temporaries(Vec::new());
        let data_tmp = temps.add(temporary(dir, "data"));
        let data = create_new(&data_tmp)?;
        let present = vec![0u8; index.spans.len()];
        let identity = put_in_place(dir, &mut temps, Some((data, &data_tmp, &present)), &index)?;
        // Made here: not a published index.
        remove_if_present(&dir.join(ORIGIN))?;
        tracing::info!(
            layer = %layer.digest,
            "indexed from its {} table of contents: {} entries, {} spans",
            reference.format_name(),
            index.entries.len(),
            index.spans.len()
        );
        Ok(Some(CacheEntry {
            dir: dir.to_path_buf(),
            index,
            identity,
            built: true,
        }))
    }

    /// Take a layer index made elsewhere (published to a registry with
    /// `ocimount index push`) into the cache, in place of a full pass.
    /// `bytes` are untrusted: they must decode as an index of this very
    /// layer (digest, diff_id, compression, size), and hold no span that
    /// only a full pass can fill (`Materialized`). An entry already in the
    /// cache is kept.
    pub fn install(&self, layer: &LayerInfo, bytes: &[u8]) -> Result<CacheEntry> {
        self.install_cut_after_mark(layer, bytes, || Ok(()))
    }

    /// [`Cache::install`], with `after_mark` run once the origin mark is
    /// written: an error from it stands for a crash at that point (tests).
    fn install_cut_after_mark(
        &self,
        layer: &LayerInfo,
        bytes: &[u8],
        after_mark: impl FnOnce() -> Result<()>,
    ) -> Result<CacheEntry> {
        let dir = self.layer_dir(layer);
        let Some(scope) = self.published_scope.clone() else {
            return Err(Error::Cache {
                path: dir,
                reason: "published indexes are not trusted here".to_string(),
            });
        };
        let refuse = |reason: String| Error::Cache {
            path: dir.clone(),
            reason: format!("published index refused: {reason}"),
        };
        let index = format::decode(bytes, &layer.digest).map_err(refuse)?;
        if index.diff_id != layer.diff_id {
            return Err(refuse(format!("it is for diff_id {}", index.diff_id)));
        }
        if index.compression != layer.compression || index.compressed_size != layer.size {
            return Err(refuse(
                "its compression or size differs from the layer's".to_string(),
            ));
        }
        if index
            .spans
            .iter()
            .any(|s| matches!(s.start, SpanStart::Materialized { .. }))
        {
            return Err(refuse(
                "the layer has stretches only a full pass can fill (one zstd frame, or a \
                 deflate block longer than a span)"
                    .to_string(),
            ));
        }
        fs::create_dir_all(&dir).at(&dir)?;
        mark_used(&dir.join("used"));
        let _lock = DirLock::acquire(&dir.join("lock"))?;
        if let Ok(decoded) = self.load_trusted(&dir, layer, true) {
            return Ok(CacheEntry {
                dir,
                index: decoded.index,
                identity: decoded.identity,
                built: false,
            });
        }
        remove_temporaries(&dir);
        // The index in place (built here, or another repository's) goes
        // before the new mark is written: a crash between the two must not
        // leave it under this repository's origin. Then the mark, before
        // the new index appears, so that is never taken for one built here.
        remove_if_present(&dir.join(paths::INDEX))?;
        atomic::write_file(
            &dir.join(ORIGIN),
            format!("published {scope}\n").as_bytes(),
            true,
        )?;
        after_mark()?;
        let mut temps = Temporaries(Vec::new());
        let data_tmp = temps.add(temporary(&dir, "data"));
        let data = create_new(&data_tmp)?;
        // Our own encoding of what was decoded, not the bytes as received.
        let present = vec![0u8; index.spans.len()];
        let identity = put_in_place(&dir, &mut temps, Some((data, &data_tmp, &present)), &index)?;
        Ok(CacheEntry {
            dir,
            index,
            identity,
            built: true,
        })
    }

    /// Whether the layer's index looks built, from its header and the
    /// sizes of its files alone (no decoding): for a process that only
    /// makes sure the cache is warm before another one uses it. That one
    /// decodes the index whole, and rebuilds it if it is damaged.
    pub fn looks_built(&self, layer: &LayerInfo) -> bool {
        let dir = self.layer_dir(layer);
        let peeked = (|| -> std::io::Result<Option<format::Peek>> {
            let mut file = File::open(dir.join("index"))?;
            let len = file.metadata()?.len();
            let mut start = [0u8; format::PEEK_LEN];
            std::io::Read::read_exact(&mut file, &mut start)?;
            Ok(format::peek(&start, len).ok())
        })();
        let Ok(Some(peek)) = peeked else {
            return false;
        };
        let sizes_match = peek.digest == layer.digest
            && peek.diff_id == layer.diff_id
            && peek.compression == layer.compression
            && peek.compressed_size == layer.size;
        // A compressed layer has `data` (the stream's size) and `spans`; a
        // plain one has both or neither.
        let data_ok = match fs::metadata(dir.join("data")) {
            Ok(m) => m.len() == peek.uncompressed_size && dir.join("spans").exists(),
            Err(_) => layer.compression == Compression::None,
        };
        sizes_match && data_ok && self.trusts(&dir)
    }

    /// Whether the layer's index in the cache was built here by a full
    /// pass (it has no `origin` mark): only such an index may be published.
    pub fn built_here(&self, layer: &LayerInfo) -> bool {
        let origin = self.layer_dir(layer).join(ORIGIN);
        matches!(fs::symlink_metadata(&origin), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
    }

    /// Whether the layer's index is in the cache and sound.
    pub fn has(&self, layer: &LayerInfo) -> bool {
        let dir = self.layer_dir(layer);
        self.load_trusted(&dir, layer, true).is_ok()
    }
}

/// Keep the cache its owner's alone: decoded data holds every file of
/// every image read, root-only ones included (`/etc/shadow`), and the
/// indexes, trees, records and logs name them. The mount enforces the
/// image's permissions; the cache must not go around them. A cache that
/// others can enter (made by an older ocimount, or under a loose umask)
/// is tightened once, every directory to 0700 and every file to 0600,
/// and that is said. Someone else's directory (`--cache` at a shared
/// path) is left as it is.
fn make_private(root: &Path) -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = fs::metadata(root).at(root)?;
    // SAFETY: geteuid has no failure mode.
    if meta.uid() != unsafe { libc::geteuid() } || meta.mode() & 0o077 == 0 {
        return Ok(());
    }
    let was = meta.mode() & 0o777;
    let empty = fs::read_dir(root).at(root)?.next().is_none();
    fs::set_permissions(root, fs::Permissions::from_mode(0o700)).at(root)?;
    if empty {
        return Ok(()); // a directory made for the cache: nothing was exposed
    }
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            // Never through a symlink: what it points at is not the cache's.
            let mode = if kind.is_dir() {
                stack.push(entry.path());
                0o700
            } else if kind.is_file() {
                0o600
            } else {
                continue;
            };
            let _ = fs::set_permissions(entry.path(), fs::Permissions::from_mode(mode));
        }
    }
    tracing::warn!(
        "the cache {} was {was:o}, open to other users: made it private (directories 0700, \
         files 0600)",
        root.display()
    );
    Ok(())
}

/// Set `path`'s mtime to now, creating it: the layer's last use, for
/// `cache ls` and `prune --older-than`. Best effort: a read-only or full
/// cache must not stop a read.
fn mark_used(path: &Path) {
    let _ = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(std::time::SystemTime::now()));
}

/// Read and check an index and its companion files.
pub fn load(dir: &Path, layer: &LayerInfo) -> std::result::Result<LayerIndex, String> {
    load_with(dir, layer, true).map(|d| d.index)
}

/// `load`, keeping the entries or not.
fn load_with(
    dir: &Path,
    layer: &LayerInfo,
    keep_entries: bool,
) -> std::result::Result<format::Decoded, String> {
    let path = dir.join("index");
    let file = File::open(&path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => "not in the cache yet".to_string(),
        _ => format!("cannot open {}: {e}", path.display()),
    })?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    if len == 0 {
        return Err("empty index".to_string());
    }
    let decoded = if keep_entries {
        // SAFETY: index files are only ever replaced by rename, never
        // modified in place, so the mapping cannot change under us.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| e.to_string())?;
        format::decode_full(&map, &layer.digest)?
    } else {
        format::decode_without_entries(&file, len, &layer.digest)?
    };
    let index = &decoded.index;
    if index.diff_id != layer.diff_id || index.compression != layer.compression {
        return Err("index does not match the layer descriptor".to_string());
    }
    // A plain layer has `data` only when its blob was remote.
    if index.compression != Compression::None || dir.join("data").exists() {
        let data_len = fs::metadata(dir.join("data"))
            .map_err(|e| e.to_string())?
            .len();
        let spans_len = fs::metadata(dir.join("spans"))
            .map_err(|e| e.to_string())?
            .len();
        if data_len != index.uncompressed_size || spans_len != index.spans.len() as u64 {
            return Err("data or spans file has the wrong size".to_string());
        }
    }
    Ok(decoded)
}

fn build(
    dir: &Path,
    blob: &dyn BlobSource,
    layer: &LayerInfo,
    bar: &ProgressBar,
    pass: PassOptions,
    keep_remote_output: bool,
) -> Result<(LayerIndex, IndexIdentity)> {
    // Whatever fails (a full disk, say), no temporary outlives this call.
    let mut temps = Temporaries(Vec::new());
    let compressed = layer.compression != Compression::None;
    let data_tmp = temps.add(temporary(dir, "data"));
    // A plain layer's bytes are the blob's own: served from the blob where
    // it is local, cached in `data` like decoded spans where it is remote.
    let data = if compressed || blob.is_remote() {
        Some(create_new(&data_tmp)?)
    } else {
        None
    };
    let keep_all = keep_remote_output && blob.is_remote();
    let index = build_index(
        layer,
        blob,
        data.as_ref()
            .filter(|_| compressed)
            .map(|f| f.try_clone())
            .transpose()
            .at(&data_tmp)?,
        data.as_ref()
            .filter(|_| keep_all)
            .map(|f| f.try_clone())
            .transpose()
            .at(&data_tmp)?,
        bar,
        pass,
    )?;
    let present: Vec<u8> = index
        .spans
        .iter()
        .map(|s| (keep_all || matches!(s.start, SpanStart::Materialized { .. })) as u8)
        .collect();
    let data = data.map(|file| (file, data_tmp.as_path(), present.as_slice()));
    let identity = put_in_place(dir, &mut temps, data, &index)?;
    // Built here: no longer a published index (removed after the rename,
    // so a published index is never left unmarked).
    remove_if_present(&dir.join(ORIGIN))?;
    Ok((index, identity))
}

/// Where `dir/NAME` is written before it is renamed into place.
fn temporary(dir: &Path, name: &str) -> PathBuf {
    atomic::temp_path(&dir.join(name))
}

/// Rename a layer's files into place, `index` last, so that its presence
/// means the others are there: `data` (written at `data_tmp`, sized here to
/// the stream) with its `spans` flags, when the layer has them.
fn put_in_place(
    dir: &Path,
    temps: &mut Temporaries,
    data: Option<(File, &Path, &[u8])>,
    index: &LayerIndex,
) -> Result<IndexIdentity> {
    if let Some((file, data_tmp, present)) = data {
        file.set_len(index.uncompressed_size).at(data_tmp)?;
        let spans_tmp = temps.add(temporary(dir, "spans"));
        write_file(&spans_tmp, present)?;
        rename(data_tmp, &dir.join("data"))?;
        rename(&spans_tmp, &dir.join("spans"))?;
    }
    let index_tmp = temps.add(temporary(dir, "index"));
    let bytes = format::encode(index);
    let identity = format::peek(&bytes[..format::PEEK_LEN], bytes.len() as u64)
        .map_err(|reason| Error::Internal(format!("an index just encoded: {reason}")))?
        .identity;
    write_file(&index_tmp, &bytes)?;
    rename(&index_tmp, &dir.join("index"))?;
    Ok(identity)
}

/// Files written beside their final names, removed on drop (a no-op for
/// those already renamed into place).
struct Temporaries(Vec<PathBuf>);

impl Temporaries {
    fn add(&mut self, path: PathBuf) -> PathBuf {
        self.0.push(path.clone());
        path
    }
}

impl Drop for Temporaries {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = fs::remove_file(path);
        }
    }
}

fn create_new(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .at(path)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = create_new(path)?;
    f.write_all(bytes).at(path)?;
    f.sync_data().at(path)
}

fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).at(to)
}

/// Leftovers of a builder that was killed: safe to delete under the lock.
fn remove_temporaries(dir: &Path) {
    atomic::sweep(dir, Stale::All);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-file uncompressed layer in a layout under `root`, indexed
    /// here by `cache`: the layer, and its index file's bytes.
    fn indexed_plain_layer(root: &Path, cache: &Cache) -> (LayerInfo, Vec<u8>) {
        use crate::source::Layout;
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_ustar();
        header.set_size(5);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, "hello", &b"hello"[..])
            .unwrap();
        let tar = builder.into_inner().unwrap();
        let layout_dir = root.join("layout");
        fs::create_dir_all(layout_dir.join("blobs/sha256")).unwrap();
        fs::write(
            layout_dir.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
        let digest = crate::digest::Digest::of(&tar);
        fs::write(layout_dir.join("blobs/sha256").join(digest.hex()), &tar).unwrap();
        let layer = LayerInfo {
            position: 0,
            digest,
            size: tar.len() as u64,
            media_type: "test".to_string(),
            compression: Compression::None,
            diff_id: digest,
            toc: None,
        };
        let layout = Layout::open(&layout_dir).unwrap();
        let blob = layout.open_blob(&digest, Some(tar.len() as u64)).unwrap();
        let pass = crate::layer::index::PassOptions {
            gzip_span: 64 << 10,
            large_file_span: 64 << 10,
            hash_apart: false,
        };
        let entry = cache
            .entry(&blob, &layer, &ProgressBar::hidden(), pass)
            .unwrap();
        let bytes = fs::read(entry.dir.join(paths::INDEX)).unwrap();
        (layer, bytes)
    }

    /// An install cut short once it has written its origin mark (a crash
    /// there) must not leave the index that was there, another
    /// repository's, under this repository's mark.
    #[test]
    fn an_install_cut_short_leaves_no_foreign_index_under_its_origin() {
        let root = tempfile::tempdir().unwrap();
        let cache_root = root.path().join("cache");
        let from_b = Cache::locate(Some(&cache_root))
            .unwrap()
            .trusting_published(Some("docker://r/b".to_string()));
        let (layer, index_bytes) = indexed_plain_layer(root.path(), &from_b);
        let dir = from_b.layer_dir(&layer);
        // The index in place is repository b's published one.
        fs::write(dir.join(ORIGIN), "published docker://r/b\n").unwrap();
        assert!(from_b.has(&layer));
        let from_a = from_b
            .clone()
            .trusting_published(Some("docker://r/a".to_string()));
        assert!(!from_a.has(&layer), "b's index is not a's");
        let crash = || Err(Error::Internal("killed here".to_string()));
        assert!(from_a
            .install_cut_after_mark(&layer, &index_bytes, crash)
            .is_err());
        assert_eq!(
            fs::read_to_string(dir.join(ORIGIN)).unwrap(),
            "published docker://r/a\n"
        );
        assert!(
            !from_a.has(&layer),
            "repository b's index is trusted under repository a's mark"
        );
    }

    #[test]
    fn an_origin_mark_that_cannot_be_read_is_not_trusted() {
        let root = tempfile::tempdir().unwrap();
        let cache = Cache::locate(Some(root.path()))
            .unwrap()
            .trusting_published(Some("docker://r/a".to_string()));
        let dir = root.path().join("layer");
        fs::create_dir_all(&dir).unwrap();
        assert!(cache.trusts(&dir), "no mark: built here");
        fs::write(dir.join(ORIGIN), "published docker://r/a\n").unwrap();
        assert!(cache.trusts(&dir));
        fs::write(dir.join(ORIGIN), "published docker://r/b\n").unwrap();
        assert!(!cache.trusts(&dir), "another repository's index");
        // A mark that exists but cannot be read (here: a directory).
        fs::remove_file(dir.join(ORIGIN)).unwrap();
        fs::create_dir(dir.join(ORIGIN)).unwrap();
        assert!(!cache.trusts(&dir), "an unreadable mark was trusted");
    }
}
