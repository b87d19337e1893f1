//! The cache directory's layout. No stage but `cache` spells a path under
//! `CACHE`: they ask this module where things go. Inside the stage, the
//! directories are spelled here, and the files of a layer's directory by
//! the modules that own them (the builder, the reader, eviction), as this
//! map names them.
//!
//! ```text
//! CACHE/layers/sha256/<hex>/index    versioned binary index (see layer::format)
//!                          /data     the uncompressed stream, sparse, filled span by span
//!                          /spans    one byte per span: 1 once the span is in `data`
//!                          /epoch    8 bytes: odd while an eviction is under way (see residency)
//!                          /evicting flock(2)ed by the eviction under way
//!                          /atimes   4 bytes per span: when it was last read
//!                          /lock     flock(2) held while the entry is built
//!                          /inuse    shared flock(2) held by every process reading the
//!                                    layer; `cache rm` and `prune` need it exclusively
//!                          /used     its mtime: when an image last opened the layer
//!                          /origin   present when the index came from a published
//!                                    artifact: `published <scope>`
//! CACHE/images/<manifest hex>.json   an image opened here: its name and its layers
//! CACHE/trees/sha256/<manifest hex>  its merged tree, mapped by the next process
//!                                    that opens it (see tree::stored)
//! CACHE/mounts/<key>.json            a live mount (see cache::mount_records)
//! CACHE/records/<manifest hex>       the files a `--record` mount read first, in order
//! CACHE/logs/mount-<key>.log         a mount daemon's log
//! CACHE/documents/sha256/<hex>       a registry manifest or config verified here, by
//!                                    digest: a later open by digest (a mount's daemon)
//!                                    reads it instead of the registry, checking the
//!                                    digest again; pruned once no image record names it
//! ```
//! Any of these directories may also hold `.NAME.tmp.PID.NANOS`: a file
//! being written, renamed into place when whole (see `sys::atomic`).

use std::path::{Path, PathBuf};

use crate::digest::Digest;

/// A layer's files, inside [`layer`].
pub const INDEX: &str = "index";
pub const DATA: &str = "data";
pub const SPANS: &str = "spans";
pub const EPOCH: &str = "epoch";
pub const EVICTING: &str = "evicting";
pub const ATIMES: &str = "atimes";
pub const BUILD_LOCK: &str = "lock";
pub const IN_USE: &str = "inuse";
pub const USED: &str = "used";
pub const ORIGIN: &str = "origin";

/// `CACHE/layers/sha256`: one directory per layer digest.
pub fn layers(root: &Path) -> PathBuf {
    root.join("layers").join("sha256")
}

/// `CACHE/layers/sha256/<hex>`: the files of one layer.
pub fn layer(root: &Path, digest: &Digest) -> PathBuf {
    layers(root).join(digest.hex())
}

/// Every layer directory, by digest: only names that are a digest's hex,
/// so that no walker enters a `.removing-*` directory (a layer on its way
/// out) or anything else that is not a layer.
pub fn layer_dirs(root: &Path) -> Vec<(Digest, PathBuf)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(layers(root))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Ok(digest) = Digest::parse(&format!("sha256:{name}")) {
            out.push((digest, entry.path()));
        }
    }
    out.sort_by_key(|(d, _)| *d);
    out
}

/// `.removing-<hex>-<pid>`, beside the layer directory `<hex>`: a layer
/// being removed, renamed out of the way first so no process sees it half
/// gone.
pub fn removing_name(digest_hex: &str) -> String {
    format!("{REMOVING}{digest_hex}-{}", std::process::id())
}

const REMOVING: &str = ".removing-";

/// The `.removing-*` directories whose remover is gone (killed midway):
/// what is left of them is to be removed.
pub fn abandoned_removals(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(layers(root))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(REMOVING) else {
            continue;
        };
        let pid = rest.rsplit('-').next().and_then(|p| p.parse::<u32>().ok());
        let alive = pid.is_some_and(|pid| {
            pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists()
        });
        if !alive {
            out.push(entry.path());
        }
    }
    out
}

/// `CACHE/images`: one JSON record per image opened here.
pub fn image_records(root: &Path) -> PathBuf {
    root.join("images")
}

/// `CACHE/images/<manifest hex>.json`.
pub fn image_record(root: &Path, manifest: &Digest) -> PathBuf {
    image_records(root).join(format!("{}.json", manifest.hex()))
}

/// `CACHE/trees`: the parent of the stored trees, checked to be a real
/// directory before anything in it is removed.
pub fn trees_parent(root: &Path) -> PathBuf {
    root.join("trees")
}

/// `CACHE/trees/sha256`: the stored merged trees.
pub fn trees(root: &Path) -> PathBuf {
    trees_parent(root).join("sha256")
}

/// `CACHE/trees/sha256/<manifest hex>`.
pub fn tree(root: &Path, manifest: &Digest) -> PathBuf {
    trees(root).join(manifest.hex())
}

/// `CACHE/mounts`: one JSON record per live mount.
pub fn mounts(root: &Path) -> PathBuf {
    root.join("mounts")
}

/// `CACHE/records`: the first-read orders `--record` keeps.
pub fn first_reads(root: &Path) -> PathBuf {
    root.join("records")
}

/// `CACHE/records/<manifest hex>`.
pub fn first_reads_of(root: &Path, manifest: &Digest) -> PathBuf {
    first_reads(root).join(manifest.hex())
}

/// `CACHE/logs`: the mount daemons' logs.
pub fn logs(root: &Path) -> PathBuf {
    root.join("logs")
}

/// `CACHE/logs/mount-<key>.log`: the log of the daemon serving the mount
/// whose directory has this key (and `….log.1`, its rotated part).
pub fn mount_log(root: &Path, key: &str) -> PathBuf {
    logs(root).join(format!("mount-{key}.log"))
}

/// `CACHE/documents/sha256`: registry manifests and configs by digest,
/// handed to the source stage as a plain path (`Settings::documents`).
pub fn documents(root: &Path) -> PathBuf {
    root.join("documents").join("sha256")
}

/// Every directory of the cache that holds whole files written by rename,
/// for the sweep of dead writers' temp files (layer directories are swept
/// by their builder, under the build lock, and by `prune`).
pub fn rename_dirs(root: &Path) -> [PathBuf; 6] {
    [
        documents(root),
        image_records(root),
        trees(root),
        mounts(root),
        first_reads(root),
        logs(root),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walkers_see_layers_only_and_reclaim_only_dead_removals() {
        let root = tempfile::tempdir().unwrap();
        let hex = "ab".repeat(32);
        let layers_dir = layers(root.path());
        for name in [
            hex.clone(),
            format!(".removing-{hex}-{}", u32::MAX),
            format!(".removing-{hex}-{}", std::process::id()),
            "not-a-layer".to_string(),
        ] {
            std::fs::create_dir_all(layers_dir.join(name)).unwrap();
        }
        let found: Vec<PathBuf> = layer_dirs(root.path())
            .into_iter()
            .map(|(_, d)| d)
            .collect();
        assert_eq!(found, [layers_dir.join(&hex)]);
        assert_eq!(
            abandoned_removals(root.path()),
            [layers_dir.join(format!(".removing-{hex}-{}", u32::MAX))]
        );
    }
}
