//! Mount points for a read-only rootfs: Docker's "init layer".
//!
//! A runtime creates each mount destination (`/proc`, `/dev`, `/sys`, the
//! volumes, the working directory) in the rootfs before mounting on it. The
//! rootfs `ocimount` serves is read-only, so for an image that lacks one of
//! them (a busybox or distroless image has no `/proc`) runc and crun fail
//! with EROFS. Like Docker's init layer, the bundle then serves the image
//! with one more layer on top holding just the missing directories (and
//! empty files for file binds): a small OCI layout inside the bundle
//! (`.ocimount-image/`) whose other blobs are symlinks to the image's own.
//! Nothing that exists in the image is changed.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use serde_json::json;

use super::spec::MountPoint;
use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::merge::{NodeKind, Tree};
use crate::oci::media;
use crate::rootfs::Rootfs;
use crate::source::layout::BLOBS_FROM;
use crate::source::store::json_blob;

/// The layout's directory inside the bundle.
pub const IMAGE_DIR: &str = crate::source::layout::BUNDLE_LAYOUT_DIR;
const TAR_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";

/// One entry of the extra layer, a path relative to the rootfs.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    pub path: String,
    pub dir: bool,
}

/// The entries the image needs so that every mount point exists, and a
/// warning for each mount point that cannot be made (a file is in the way).
pub fn missing(tree: &Tree, points: &[MountPoint]) -> (Vec<Entry>, Vec<String>) {
    let mut entries: BTreeSet<Entry> = BTreeSet::new();
    let mut warnings = Vec::new();
    for point in points {
        let parts: Vec<&str> = point.path.split('/').filter(|p| !p.is_empty()).collect();
        let mut prefix = String::new();
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            let want_dir = !last || point.dir;
            if entries.iter().any(|e| e.path == prefix) {
                continue;
            }
            match tree.resolve(format!("/{prefix}").as_bytes(), true) {
                Ok(id) => {
                    let is_dir = matches!(tree.node(id).kind, NodeKind::Dir { .. });
                    if is_dir != want_dir {
                        warnings.push(format!(
                            "{}: the image has a {} at /{prefix}, so the runtime cannot mount there",
                            point.path,
                            if is_dir { "directory" } else { "non-directory" }
                        ));
                        break;
                    }
                }
                Err(Error::NotFound { .. }) => {
                    entries.insert(Entry {
                        path: prefix.clone(),
                        dir: want_dir,
                    });
                }
                Err(e) => {
                    warnings.push(format!("{}: {e}", point.path));
                    break;
                }
            }
        }
    }
    (entries.into_iter().collect(), warnings)
}

/// The extra layer: an uncompressed tar, deterministic (root-owned, mtime 0),
/// so the same mount points give the same digest and one cache entry.
pub fn layer_tar(entries: &[Entry]) -> Result<Vec<u8>> {
    let err = |e: std::io::Error| Error::io("mount point layer", e);
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_ustar();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_size(0);
        let name = if entry.dir {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            format!("{}/", entry.path)
        } else {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(0o644);
            entry.path.clone()
        };
        builder
            .append_data(&mut header, name, std::io::empty())
            .map_err(err)?;
    }
    builder.into_inner().map_err(err)
}

fn write_blob(blobs: &Path, bytes: &[u8]) -> Result<(Digest, u64)> {
    let digest = Digest::of(bytes);
    let path = blobs.join(digest.hex());
    fs::write(&path, bytes).at(&path)?;
    Ok((digest, bytes.len() as u64))
}

/// Write an OCI layout at `out` (which must not exist): the image of
/// `rootfs` plus the layer `entries`. Returns its reference, pinned to the
/// manifest digest.
pub fn write_layout(rootfs: &Rootfs, entries: &[Entry], out: &Path) -> Result<String> {
    let image = &rootfs.image;
    let blobs = out.join("blobs").join("sha256");
    fs::create_dir(out).at(out)?;
    fs::create_dir_all(&blobs).at(&blobs)?;
    let oci_layout = out.join("oci-layout");
    fs::write(&oci_layout, b"{\"imageLayoutVersion\":\"1.0.0\"}").at(&oci_layout)?;

    let mut layers = Vec::with_capacity(image.layers.len() + 1);
    // Blobs that are files of their own are linked; the others (archive
    // members, registry blobs) are read from the image itself, which the
    // layout names for them.
    let mut blobs_from = None;
    for layer in &image.layers {
        let blob = image.store.blob(&layer.digest, Some(layer.size))?;
        match blob.whole_file() {
            Some(source) => {
                let source = fs::canonicalize(source).at(source)?;
                let link = blobs.join(layer.digest.hex());
                if fs::symlink_metadata(&link).is_err() {
                    std::os::unix::fs::symlink(&source, &link).at(&link)?;
                }
            }
            None => {
                blobs_from = Some(image.reference.pinned(&image.manifest_digest)?);
            }
        }
        layers.push(json!({
            "mediaType": layer.media_type,
            "digest": layer.digest.to_string(),
            "size": layer.size,
        }));
    }
    let tar = layer_tar(entries)?;
    let (tar_digest, tar_size) = write_blob(&blobs, &tar)?;
    layers.push(json!({
        "mediaType": TAR_MEDIA_TYPE,
        "digest": tar_digest.to_string(),
        "size": tar_size,
    }));

    // The image's own config, byte for byte but for one more diff_id (and
    // history entry), so everything else about the image is unchanged.
    let config_blob = image.store.blob(&image.config_digest, None)?;
    let config_path = std::path::PathBuf::from(config_blob.location());
    let (mut config, _) = json_blob::<serde_json::Value>(
        &*image.store,
        "config",
        &image.config_digest,
        config_blob.size(),
    )?;
    let diff_ids = config
        .pointer_mut("/rootfs/diff_ids")
        .and_then(|d| d.as_array_mut())
        .ok_or_else(|| Error::BadJson {
            what: "config",
            path: config_path.clone(),
            reason: "no rootfs.diff_ids".to_string(),
        })?;
    diff_ids.push(json!(tar_digest.to_string()));
    if let Some(history) = config.get_mut("history").and_then(|h| h.as_array_mut()) {
        history.push(json!({
            "created_by": "ocimount bundle: mount points for the read-only rootfs",
            "comment": entries.iter().map(|e| format!("/{}", e.path)).collect::<Vec<_>>().join(" "),
        }));
    }
    let config_bytes = serde_json::to_vec(&config).unwrap_or_default();
    let (config_digest, config_size) = write_blob(&blobs, &config_bytes)?;

    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": {
            "mediaType": media::OCI_CONFIG,
            "digest": config_digest.to_string(),
            "size": config_size,
        },
        "layers": layers,
    });
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap_or_default();
    let (manifest_digest, manifest_size) = write_blob(&blobs, &manifest_bytes)?;
    let mut index = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": [{
            "mediaType": media::OCI_MANIFEST,
            "digest": manifest_digest.to_string(),
            "size": manifest_size,
        }],
    });
    if let Some(source) = blobs_from {
        index["annotations"] = json!({ BLOBS_FROM: source });
    }
    let index_path = out.join("index.json");
    fs::write(&index_path, serde_json::to_vec(&index).unwrap_or_default()).at(&index_path)?;
    Ok(format!("{}@{}", out.display(), manifest_digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layer_holds_exactly_the_entries() {
        let entries = vec![
            Entry {
                path: "proc".into(),
                dir: true,
            },
            Entry {
                path: "srv".into(),
                dir: true,
            },
            Entry {
                path: "srv/app".into(),
                dir: true,
            },
            Entry {
                path: "etc/resolv.conf".into(),
                dir: false,
            },
        ];
        let bytes = layer_tar(&entries).unwrap();
        assert_eq!(bytes, layer_tar(&entries).unwrap(), "deterministic");
        let mut archive = tar::Archive::new(&bytes[..]);
        let got: Vec<(String, tar::EntryType, u32, u64)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    h.entry_type(),
                    h.mode().unwrap(),
                    h.uid().unwrap() + h.gid().unwrap() + h.mtime().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("proc/".to_string(), tar::EntryType::Directory, 0o755, 0),
                ("srv/".to_string(), tar::EntryType::Directory, 0o755, 0),
                ("srv/app/".to_string(), tar::EntryType::Directory, 0o755, 0),
                (
                    "etc/resolv.conf".to_string(),
                    tar::EntryType::Regular,
                    0o644,
                    0
                ),
            ]
        );
    }
}
