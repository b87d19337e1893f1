//! Resolving an image reference to one manifest, its config and its layers:
//! tags, digests, nested indexes and platform choice.

use std::collections::HashSet;
use std::sync::Arc;

use serde::Serialize;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::oci::manifest::{Descriptor, ImageConfig, Index, Manifest};
use crate::oci::media::{self, Compression, DocumentKind};
use crate::oci::Platform;
use crate::source::registry::settings::Settings;
use crate::source::selector::Selector;
use crate::source::store::{json_blob, ImageStore};
use crate::source::ImageRef;

const REF_NAME: &str = "org.opencontainers.image.ref.name";
use crate::limits::MAX_INDEX_DEPTH;

use crate::layer::toc_reference::TocReference;
pub use crate::layer::LayerInfo;

/// A manifest an index offers for one platform.
#[derive(Clone, Debug, Serialize)]
pub struct PlatformOffer {
    pub platform: String,
    pub digest: Digest,
}

/// Why this manifest was chosen, for `inspect` and for error messages.
#[derive(Clone, Debug, Serialize)]
pub struct PlatformChoice {
    pub wanted: String,
    pub explicit: bool,
    pub offered: Vec<PlatformOffer>,
    pub chosen: String,
    pub reason: String,
}

#[derive(Clone)]
pub struct Image {
    /// The reference it was opened from.
    pub reference: ImageRef,
    /// Where its documents and blobs are read.
    pub store: Arc<dyn ImageStore>,
    pub manifest_digest: Digest,
    pub manifest_media_type: String,
    pub config_digest: Digest,
    pub config: ImageConfig,
    pub layers: Vec<LayerInfo>,
    pub platform: PlatformChoice,
}

impl Image {
    /// Resolve `reference`; `platform` overrides the host platform;
    /// `settings` say how a registry is spoken to.
    pub fn open(
        reference: &ImageRef,
        platform: Option<&Platform>,
        settings: &Settings,
    ) -> Result<Image> {
        let store = reference.open_store(settings)?;
        let resolver = Resolver {
            store: &*store,
            wanted: platform.cloned().unwrap_or_else(Platform::host),
            explicit: platform.is_some(),
        };
        let (manifest_desc, choice) = resolver.choose(&reference.selector)?;
        let (manifest, manifest_bytes) = json_blob::<Manifest>(
            &*store,
            "manifest",
            &manifest_desc.digest,
            manifest_desc.size,
        )?;
        let manifest_media_type = manifest
            .media_type
            .clone()
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| manifest_desc.media_type.clone());
        let config_type = manifest.config.media_type.as_str();
        if !matches!(config_type, "" | media::OCI_CONFIG | media::DOCKER_CONFIG) {
            return Err(Error::UnsupportedMediaType {
                what: "image config (this is not a container image)",
                media_type: config_type.to_string(),
                digest: manifest.config.digest,
            });
        }
        let (config, config_bytes) = json_blob::<ImageConfig>(
            &*store,
            "config",
            &manifest.config.digest,
            manifest.config.size,
        )?;
        // Both verified: a later open by digest (a mount's daemon) may
        // take them from the store instead of fetching them again.
        store.keep(&manifest_desc.digest, &manifest_bytes);
        store.keep(&manifest.config.digest, &config_bytes);
        let mut compressions = Vec::with_capacity(manifest.layers.len());
        for desc in &manifest.layers {
            compressions.push(
                Compression::from_layer_media_type(&desc.media_type).ok_or_else(|| {
                    Error::UnsupportedMediaType {
                        what: "layer",
                        media_type: desc.media_type.clone(),
                        digest: desc.digest,
                    }
                })?,
            );
        }
        let diff_ids = &config.rootfs.diff_ids;
        if diff_ids.len() != manifest.layers.len() {
            return Err(Error::LayerCountMismatch {
                diff_ids: diff_ids.len(),
                layers: manifest.layers.len(),
                config: manifest.config.digest,
                manifest: manifest_desc.digest,
            });
        }
        let mut layers = Vec::with_capacity(manifest.layers.len());
        for (position, ((desc, diff_id), compression)) in manifest
            .layers
            .iter()
            .zip(diff_ids)
            .zip(compressions)
            .enumerate()
        {
            let toc = TocReference::from_annotations(&desc.annotations)
                .unwrap_or_else(|reason| {
                    tracing::warn!(
                        layer = %desc.digest,
                        "a table-of-contents annotation is malformed ({reason}): the layer is \
                         indexed by a full pass"
                    );
                    None
                })
                .filter(|toc| {
                    let fits = toc.fits(compression);
                    if !fits {
                        tracing::warn!(
                            layer = %desc.digest,
                            "a table-of-contents annotation on a {} layer ({}), which cannot \
                             carry that kind: the layer is indexed by a full pass",
                            compression.name(),
                            desc.media_type
                        );
                    }
                    fits
                });
            layers.push(LayerInfo {
                position,
                digest: desc.digest,
                size: desc.size,
                media_type: desc.media_type.clone(),
                compression,
                diff_id: *diff_id,
                toc,
            });
        }
        let mut platform = choice;
        if platform.chosen.is_empty() {
            let from_config = config.platform();
            platform.chosen = from_config.to_string();
            if resolver.explicit && resolver.wanted.rank(&from_config).is_none() {
                return Err(Error::NoPlatform {
                    wanted: resolver.wanted.to_string(),
                    offered: from_config.to_string(),
                });
            }
            platform.reason = if resolver.wanted.rank(&from_config).is_some() {
                "the image has a single manifest, and it matches".to_string()
            } else {
                format!(
                    "the image has a single manifest; it does not match the host ({})",
                    resolver.wanted
                )
            };
        }
        Ok(Image {
            reference: reference.clone(),
            store,
            manifest_digest: manifest_desc.digest,
            manifest_media_type,
            config_digest: manifest.config.digest,
            config,
            layers,
            platform,
        })
    }
}

struct Resolver<'a> {
    store: &'a dyn ImageStore,
    wanted: Platform,
    explicit: bool,
}

impl Resolver<'_> {
    /// Find the manifest descriptor the selector and platform name.
    fn choose(&self, selector: &Selector) -> Result<(Descriptor, PlatformChoice)> {
        let top = self.store.index()?;
        if top.manifests.is_empty() {
            return Err(Error::NoManifest(format!(
                "{} lists no manifests",
                self.store.index_location()
            )));
        }
        let start = match selector {
            Selector::Digest(d) => match top.manifests.iter().find(|m| m.digest == *d) {
                Some(desc) => desc.clone(),
                None => self.describe_blob(d)?,
            },
            Selector::Tag(tag) => self.by_tag(&top, &self.store.normalize_tag(tag))?,
            Selector::Default if top.manifests.len() == 1 => top.manifests[0].clone(),
            Selector::Default => match self.by_tag(&top, "latest") {
                Ok(desc) => desc,
                // An untagged multi-platform list at the top level is an index itself.
                Err(_) if top.manifests.iter().any(|m| m.platform.is_some()) => {
                    return self.choose_among(top.manifests, &mut HashSet::new(), 0);
                }
                Err(e) => return Err(e),
            },
        };
        self.resolve(start, &mut HashSet::new(), 0)
    }

    fn by_tag(&self, top: &Index, tag: &str) -> Result<Descriptor> {
        if let Some(desc) = top
            .manifests
            .iter()
            .find(|m| m.annotations.get(REF_NAME).map(String::as_str) == Some(tag))
        {
            return Ok(desc.clone());
        }
        let tags: Vec<&str> = top
            .manifests
            .iter()
            .filter_map(|m| m.annotations.get(REF_NAME).map(String::as_str))
            .collect();
        Err(Error::TagNotFound {
            tag: tag.to_string(),
            index: self.store.index_location(),
            available: if tags.is_empty() {
                "none".to_string()
            } else {
                tags.join(", ")
            },
        })
    }

    /// A digest given by the user that index.json does not list: learn its
    /// kind from the blob itself.
    fn describe_blob(&self, digest: &Digest) -> Result<Descriptor> {
        let size = self.store.blob(digest, None)?.size();
        Ok(Descriptor {
            media_type: self.sniff_kind(digest, size)?.to_string(),
            digest: *digest,
            size,
            platform: None,
            annotations: Default::default(),
        })
    }

    fn sniff_kind(&self, digest: &Digest, size: u64) -> Result<&'static str> {
        let (value, _) = json_blob::<serde_json::Value>(self.store, "document", digest, size)?;
        if let Some(m) = value.get("mediaType").and_then(|m| m.as_str()) {
            match media::document_kind(m) {
                DocumentKind::Index => return Ok(media::OCI_INDEX),
                DocumentKind::Manifest => return Ok(media::OCI_MANIFEST),
                DocumentKind::Other => {}
            }
        }
        if value.get("manifests").is_some() {
            Ok(media::OCI_INDEX)
        } else if value.get("layers").is_some() && value.get("config").is_some() {
            Ok(media::OCI_MANIFEST)
        } else {
            Err(Error::UnsupportedMediaType {
                what: "document",
                media_type: "unknown (neither an index nor a manifest)".to_string(),
                digest: *digest,
            })
        }
    }

    fn resolve(
        &self,
        desc: Descriptor,
        seen: &mut HashSet<Digest>,
        depth: usize,
    ) -> Result<(Descriptor, PlatformChoice)> {
        let kind = match media::document_kind(&desc.media_type) {
            DocumentKind::Other if desc.media_type.is_empty() => {
                media::document_kind(self.sniff_kind(&desc.digest, desc.size)?)
            }
            kind => kind,
        };
        match kind {
            DocumentKind::Manifest => {
                let choice = PlatformChoice {
                    wanted: self.wanted.to_string(),
                    explicit: self.explicit,
                    offered: vec![],
                    chosen: String::new(),
                    reason: String::new(),
                };
                Ok((desc, choice))
            }
            DocumentKind::Index => {
                let index = self.nested_index(&desc, seen, depth)?;
                self.choose_among(index.manifests, seen, depth + 1)
            }
            DocumentKind::Other => Err(Error::UnsupportedMediaType {
                what: "image",
                media_type: desc.media_type.clone(),
                digest: desc.digest,
            }),
        }
    }

    /// Rank every manifest of an index (and of the indexes nested in it) for
    /// the wanted platform and take the best; ties go to the first listed.
    fn choose_among(
        &self,
        entries: Vec<Descriptor>,
        seen: &mut HashSet<Digest>,
        depth: usize,
    ) -> Result<(Descriptor, PlatformChoice)> {
        let mut offers: Vec<(Platform, Descriptor)> = Vec::new();
        self.collect_offers(entries, seen, depth, &mut offers)?;
        let offered: Vec<PlatformOffer> = offers
            .iter()
            .filter(|(p, _)| !p.is_unknown())
            .map(|(p, d)| PlatformOffer {
                platform: p.to_string(),
                digest: d.digest,
            })
            .collect();
        let best = offers
            .iter()
            .filter_map(|(p, d)| self.wanted.rank(p).map(|rank| (rank, p, d)))
            .min_by_key(|(rank, _, _)| *rank);
        let Some((rank, platform, desc)) = best else {
            if offered.is_empty() {
                return Err(Error::NoManifest(
                    "the index holds no container images (only artifacts, attestations or other documents)".to_string(),
                ));
            }
            let list: Vec<String> = offered.iter().map(|o| o.platform.clone()).collect();
            return Err(Error::NoPlatform {
                wanted: self.wanted.to_string(),
                offered: if list.is_empty() {
                    "no platforms".to_string()
                } else {
                    list.join(", ")
                },
            });
        };
        let source = if self.explicit { "--platform" } else { "host" };
        let reason = if rank == 0 {
            format!("exact match for the {source} platform {}", self.wanted)
        } else {
            format!(
                "no exact match for the {source} platform {}; {platform} is fallback #{rank}",
                self.wanted
            )
        };
        Ok((
            desc.clone(),
            PlatformChoice {
                wanted: self.wanted.to_string(),
                explicit: self.explicit,
                offered,
                chosen: platform.to_string(),
                reason,
            },
        ))
    }

    fn collect_offers(
        &self,
        entries: Vec<Descriptor>,
        seen: &mut HashSet<Digest>,
        depth: usize,
        offers: &mut Vec<(Platform, Descriptor)>,
    ) -> Result<()> {
        for desc in entries {
            match media::document_kind(&desc.media_type) {
                DocumentKind::Manifest => {
                    let platform = match &desc.platform {
                        Some(p) => p.normalised(),
                        None => self.platform_from_config(&desc)?,
                    };
                    offers.push((platform, desc));
                }
                // An index listed twice (or by two parents) offers the same
                // manifests twice; reading it once also keeps an index
                // that lists its child N times from costing N^depth reads.
                DocumentKind::Index if seen.contains(&desc.digest) => {}
                DocumentKind::Index => {
                    let index = self.nested_index(&desc, seen, depth)?;
                    self.collect_offers(index.manifests, seen, depth + 1, offers)?;
                }
                // Signatures, SBOMs and other artifacts: not ours to judge.
                DocumentKind::Other => {}
            }
        }
        Ok(())
    }

    /// Load an index met while descending, refusing deep nesting. (A true
    /// loop cannot be written with content-addressed digests; a chain of
    /// distinct indexes can, and is cut at `MAX_INDEX_DEPTH`.)
    fn nested_index(
        &self,
        desc: &Descriptor,
        seen: &mut HashSet<Digest>,
        depth: usize,
    ) -> Result<Index> {
        if depth >= MAX_INDEX_DEPTH || !seen.insert(desc.digest) {
            return Err(Error::IndexLoop(MAX_INDEX_DEPTH, desc.digest));
        }
        Ok(json_blob::<Index>(self.store, "index", &desc.digest, desc.size)?.0)
    }

    /// A manifest listed without a platform: its config says what it is.
    /// An artifact (any other config type) has no platform.
    fn platform_from_config(&self, desc: &Descriptor) -> Result<Platform> {
        let (manifest, _) = json_blob::<Manifest>(self.store, "manifest", &desc.digest, desc.size)?;
        if !matches!(
            manifest.config.media_type.as_str(),
            "" | media::OCI_CONFIG | media::DOCKER_CONFIG
        ) {
            return Ok(Platform::new("unknown", "unknown", None));
        }
        let (config, _) = json_blob::<ImageConfig>(
            self.store,
            "config",
            &manifest.config.digest,
            manifest.config.size,
        )?;
        Ok(config.platform())
    }
}
