//! Image archives read in place: `oci-archive` (a tar of an OCI layout) and
//! what `docker save` writes (`manifest.json`, a config and a `layer.tar`
//! per layer, and since Docker 25 an OCI layout beside them).
//!
//! An archive stores its members uncompressed, so each blob is a byte range
//! of the archive file. Opening one reads only its tar headers (seeking past
//! the data) and keeps a table of members; layers are then indexed and
//! served where they lie, never extracted or copied.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::blob::{Blob, BlobSource, FileRange, MemoryBlob};
use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::layer::{Compression, EntryKind};
use crate::oci::manifest::{Descriptor, Index};
use crate::oci::media;
use crate::source::store::{parse_json, ImageStore, MAX_JSON_BYTES};
use crate::tar::{normalize_path, DotDot, TarReader};

use crate::limits::MAX_ARCHIVE_MEMBERS;
/// Symlinks and hardlinks followed to find one member (`docker save` links
/// a layer it stores twice).
const MAX_LINK_HOPS: usize = 16;
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Open a plain path to an archive file as whichever kind it is.
pub fn open(path: &Path) -> Result<Arc<dyn ImageStore>> {
    let members = Members::scan(path)?;
    if members.find("manifest.json").is_some() {
        Ok(Arc::new(DockerArchive::from_members(members)?))
    } else if members.find("index.json").is_some() {
        Ok(Arc::new(OciArchive::from_members(members)?))
    } else {
        Err(members.error(
            "neither a docker-archive (no manifest.json) nor an oci-archive (no index.json)",
        ))
    }
}

/// The members of one archive file.
struct Members {
    file: Arc<File>,
    path: PathBuf,
    /// Regular files: normalised name → (data offset, size). A name stored
    /// twice is the later one, as tar extraction would leave it.
    files: HashMap<Vec<u8>, (u64, u64)>,
    /// Symlinks (target as written) and hardlinks (normalised target).
    links: HashMap<Vec<u8>, (EntryKind, Vec<u8>)>,
}

impl Members {
    fn scan(path: &Path) -> Result<Members> {
        let file = File::open(path).at(path)?;
        let len = file.metadata().at(path)?.len();
        let mut head = [0u8; 4];
        let head_len = file.read_at(&mut head, 0).at(path)?;
        let mut members = Members {
            file: Arc::new(file.try_clone().at(path)?),
            path: path.to_path_buf(),
            files: HashMap::new(),
            links: HashMap::new(),
        };
        match Compression::sniff(&head[..head_len]) {
            Compression::None => {}
            c => {
                return Err(members.error(&format!(
                    "the archive is {}-compressed; image archives are read in place, so \
                     decompress it first",
                    c.name()
                )))
            }
        }
        let mut tar = TarReader::seeking(BufReader::with_capacity(64 * 1024, file));
        let mut count = 0usize;
        loop {
            let entry = match tar.next_entry() {
                Ok(Some(entry)) => entry,
                Ok(None) => break,
                Err(e) => {
                    let at = e
                        .path
                        .map(|p| format!(" at member {}", String::from_utf8_lossy(&p)))
                        .unwrap_or_default();
                    return Err(members.error(&format!("not a readable tar{at}: {}", e.reason)));
                }
            };
            count += 1;
            if count > MAX_ARCHIVE_MEMBERS {
                return Err(members.error(&format!(
                    "more than {MAX_ARCHIVE_MEMBERS} members; no image archive has that many"
                )));
            }
            match entry.kind {
                EntryKind::File => {
                    let end = entry.data_offset.checked_add(entry.size);
                    if end.is_none_or(|end| end > len) {
                        return Err(members.error(&format!(
                            "member {} runs past the end of the archive (truncated?)",
                            String::from_utf8_lossy(entry.path())
                        )));
                    }
                    members.links.remove(entry.path());
                    members
                        .files
                        .insert(entry.path().to_vec(), (entry.data_offset, entry.size));
                }
                EntryKind::Symlink | EntryKind::Hardlink => {
                    members.files.remove(entry.path());
                    members
                        .links
                        .insert(entry.path().to_vec(), (entry.kind, entry.link().to_vec()));
                }
                _ => {}
            }
        }
        Ok(members)
    }

    fn error(&self, reason: &str) -> Error {
        Error::Archive {
            path: self.path.clone(),
            reason: reason.to_string(),
        }
    }

    /// The (offset, size) of member `name`, through links.
    fn find(&self, name: &str) -> Option<(u64, u64)> {
        let mut name = normalize_path(name.as_bytes(), DotDot::Reject).ok()?;
        for _ in 0..MAX_LINK_HOPS {
            if let Some(range) = self.files.get(&name) {
                return Some(*range);
            }
            let (kind, target) = self.links.get(&name)?;
            name = if *kind == EntryKind::Hardlink || target.starts_with(b"/") {
                normalize_path(target, DotDot::ClampAtRoot).ok()?
            } else {
                let dir = match name.iter().rposition(|&b| b == b'/') {
                    Some(slash) => &name[..slash + 1],
                    None => &[][..],
                };
                normalize_path(&[dir, target.as_slice()].concat(), DotDot::ClampAtRoot).ok()?
            };
        }
        None
    }

    /// A member as a blob that must hash to `digest`.
    fn blob(&self, name: &str, digest: Digest) -> Option<FileRange> {
        let (start, size) = self.find(name)?;
        Some(FileRange::member(
            self.file.clone(),
            self.path.clone(),
            name.to_string(),
            start,
            size,
            digest,
        ))
    }

    /// A small member (a JSON document) read whole.
    fn read_small(&self, name: &str) -> Result<Vec<u8>> {
        let (start, size) = self
            .find(name)
            .ok_or_else(|| self.error(&format!("it has no {name}")))?;
        if size > MAX_JSON_BYTES {
            return Err(self.error(&format!(
                "{name} is {size} bytes, larger than the {MAX_JSON_BYTES}-byte limit"
            )));
        }
        let mut bytes = vec![0u8; size as usize];
        self.file.read_exact_at(&mut bytes, start).at(&self.path)?;
        Ok(bytes)
    }

    fn location(&self, name: &str) -> String {
        format!("{} (member {name})", self.path.display())
    }
}

fn check_size(blob: &dyn BlobSource, expected: Option<u64>) -> Result<()> {
    match expected {
        Some(expected) if expected != blob.size() => Err(Error::BlobSize {
            digest: blob.digest(),
            expected,
            actual: blob.size(),
        }),
        _ => Ok(()),
    }
}

/// `oci-archive:FILE`: a tar of an OCI image layout.
pub struct OciArchive {
    members: Members,
}

impl OciArchive {
    pub fn open(path: &Path) -> Result<OciArchive> {
        OciArchive::from_members(Members::scan(path)?)
    }

    fn from_members(members: Members) -> Result<OciArchive> {
        for name in ["oci-layout", "index.json"] {
            if members.find(name).is_none() {
                return Err(members.error(&format!("not an oci-archive: it has no {name}")));
            }
        }
        Ok(OciArchive { members })
    }
}

impl ImageStore for OciArchive {
    fn index(&self) -> Result<Index> {
        let bytes = self.members.read_small("index.json")?;
        parse_json("index", &self.index_location(), &bytes)
    }

    fn blob(&self, digest: &Digest, size: Option<u64>) -> Result<Blob> {
        let name = format!("blobs/sha256/{}", digest.hex());
        let blob = self
            .members
            .blob(&name, *digest)
            .ok_or_else(|| Error::MissingBlob {
                digest: *digest,
                location: self.members.path.display().to_string(),
            })?;
        check_size(&blob, size)?;
        Ok(Arc::new(blob))
    }

    fn index_location(&self) -> String {
        self.members.location("index.json")
    }
}

/// One image of a `docker save` archive's `manifest.json`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SavedImage {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    layers: Vec<String>,
}

/// `docker-archive:FILE`: what `docker save` (and `skopeo copy …
/// docker-archive:`) writes. It has no manifests of its own, so each image
/// gets a Docker v2 schema 2 manifest made here (deterministically, so its
/// digest pins the image across processes), and an index that names each
/// by its tags, as skopeo chooses among them.
pub struct DockerArchive {
    members: Members,
    index: Vec<Descriptor>,
    /// The made manifests, by digest.
    documents: HashMap<Digest, Arc<MemoryBlob>>,
    /// Configs and layers: digest → member name.
    blobs: HashMap<Digest, String>,
}

impl DockerArchive {
    pub fn open(path: &Path) -> Result<DockerArchive> {
        DockerArchive::from_members(Members::scan(path)?)
    }

    fn from_members(members: Members) -> Result<DockerArchive> {
        let list = members.read_small("manifest.json")?;
        let images: Vec<SavedImage> =
            parse_json("manifest", &members.location("manifest.json"), &list)?;
        let mut archive = DockerArchive {
            members,
            index: Vec::new(),
            documents: HashMap::new(),
            blobs: HashMap::new(),
        };
        for (n, image) in images.iter().enumerate() {
            archive.add_image(n, image)?;
        }
        Ok(archive)
    }

    fn add_image(&mut self, n: usize, image: &SavedImage) -> Result<()> {
        let config_bytes = self.members.read_small(&image.config)?;
        let config_digest = Digest::of(&config_bytes);
        #[derive(Deserialize, Default)]
        struct RootFs {
            #[serde(default)]
            diff_ids: Vec<Digest>,
        }
        #[derive(Deserialize)]
        struct ConfigRootFs {
            #[serde(default)]
            rootfs: Option<RootFs>,
        }
        let config: ConfigRootFs = parse_json(
            "config",
            &self.members.location(&image.config),
            &config_bytes,
        )?;
        let diff_ids = config.rootfs.unwrap_or_default().diff_ids;
        self.blobs.insert(config_digest, image.config.clone());
        let mut layers = Vec::with_capacity(image.layers.len());
        for (i, name) in image.layers.iter().enumerate() {
            let (start, size) = self.members.find(name).ok_or_else(|| {
                self.members
                    .error(&format!("image {n}: layer {name} is not in the archive"))
            })?;
            let mut head = [0u8; 4];
            let got = self
                .members
                .file
                .read_at(&mut head[..size.min(4) as usize], start)
                .at(&self.members.path)?;
            let compression = Compression::sniff(&head[..got]);
            let digest = self.layer_digest(name, i, compression, &diff_ids, start, size)?;
            self.blobs.insert(digest, name.clone());
            layers.push(json!({
                "mediaType": match compression {
                    Compression::None => "application/vnd.docker.image.rootfs.diff.tar",
                    Compression::Gzip => "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    Compression::Zstd => "application/vnd.docker.image.rootfs.diff.tar.zstd",
                },
                "digest": digest.to_string(),
                "size": size,
            }));
        }
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": media::DOCKER_MANIFEST,
            "config": {
                "mediaType": media::DOCKER_CONFIG,
                "digest": config_digest.to_string(),
                "size": config_bytes.len(),
            },
            "layers": layers,
        });
        let bytes = serde_json::to_vec(&manifest).unwrap_or_default();
        let blob = Arc::new(MemoryBlob::new(
            bytes,
            format!("{} (manifest of image {n})", self.members.path.display()),
        ));
        let descriptor = |tag: Option<&String>| Descriptor {
            media_type: media::DOCKER_MANIFEST.to_string(),
            digest: blob.digest(),
            size: blob.size(),
            platform: None,
            annotations: tag
                .map(|t| [(REF_NAME.to_string(), normalize_docker_name(t))].into())
                .unwrap_or_default(),
        };
        match image.repo_tags.as_deref() {
            Some(tags) if !tags.is_empty() => {
                self.index.extend(tags.iter().map(|t| descriptor(Some(t))))
            }
            _ => self.index.push(descriptor(None)),
        }
        self.documents.insert(blob.digest(), blob);
        Ok(())
    }

    /// A layer's digest: from its name where the archive names it by
    /// digest (`blobs/sha256/HEX`, `HEX.tar`), else its diff_id for a plain
    /// tar, else hashed here. The indexer checks it either way.
    fn layer_digest(
        &self,
        name: &str,
        i: usize,
        compression: Compression,
        diff_ids: &[Digest],
        start: u64,
        size: u64,
    ) -> Result<Digest> {
        let base = name.rsplit('/').next().unwrap_or(name);
        let hex = base.strip_suffix(".tar").unwrap_or(base);
        if name.contains("sha256") || compression != Compression::None {
            if let Ok(d) = Digest::parse(&format!("sha256:{hex}")) {
                return Ok(d);
            }
        }
        if compression == Compression::None {
            return diff_ids.get(i).copied().ok_or_else(|| {
                self.members.error(&format!(
                    "the config lists {} diff_id(s) but the image has a layer {i}",
                    diff_ids.len()
                ))
            });
        }
        let mut hasher = Sha256::new();
        let reader = FileRange::member(
            self.members.file.clone(),
            self.members.path.clone(),
            name.to_string(),
            start,
            size,
            Digest::of(b""),
        );
        let mut stream = reader.stream();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let got = stream.read(&mut buf).at(&self.members.path)?;
            if got == 0 {
                break;
            }
            hasher.update(&buf[..got]);
        }
        Ok(Digest::from_hasher(hasher))
    }
}

impl ImageStore for DockerArchive {
    fn index(&self) -> Result<Index> {
        Ok(Index {
            media_type: Some(media::OCI_INDEX.to_string()),
            manifests: self.index.clone(),
        })
    }

    fn blob(&self, digest: &Digest, size: Option<u64>) -> Result<Blob> {
        let blob: Blob = if let Some(doc) = self.documents.get(digest) {
            doc.clone()
        } else {
            let range = self
                .blobs
                .get(digest)
                .and_then(|name| self.members.blob(name, *digest))
                .ok_or_else(|| Error::MissingBlob {
                    digest: *digest,
                    location: self.members.path.display().to_string(),
                })?;
            Arc::new(range)
        };
        check_size(&*blob, size)?;
        Ok(blob)
    }

    fn index_location(&self) -> String {
        self.members.location("manifest.json")
    }

    fn normalize_tag(&self, tag: &str) -> String {
        normalize_docker_name(tag)
    }
}

/// A Docker reference in full, as skopeo compares them: `busybox` is
/// `docker.io/library/busybox:latest`.
pub fn normalize_docker_name(name: &str) -> String {
    let (first, rest) = name.split_once('/').unwrap_or(("", name));
    let is_registry =
        !first.is_empty() && (first.contains('.') || first.contains(':') || first == "localhost");
    let mut full = if first.is_empty() || (first == "docker.io" && !rest.contains('/')) {
        format!("docker.io/library/{rest}")
    } else if is_registry {
        name.to_string()
    } else {
        format!("docker.io/{name}")
    };
    let last = full.rsplit('/').next().unwrap_or("");
    if !last.contains(':') && !last.contains('@') {
        full.push_str(":latest");
    }
    full
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_names_normalise_as_skopeo_compares_them() {
        for (short, full) in [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("me/app:v1", "docker.io/me/app:v1"),
            ("localhost:5000/app", "localhost:5000/app:latest"),
            ("quay.io/a/b:c", "quay.io/a/b:c"),
            ("docker.io/library/debian:12", "docker.io/library/debian:12"),
            ("docker.io/debian", "docker.io/library/debian:latest"),
        ] {
            assert_eq!(normalize_docker_name(short), full, "{short}");
        }
    }
}
