//! Layer indexes shared through the registry, so that a second node does
//! no full pass: `ocimount index push` publishes an OCI artifact whose
//! `subject` is the image manifest and whose layers are the layer indexes;
//! a node with an empty cache finds it through the referrers API or, where
//! the registry has none (distribution 2.8), the `sha256-<hex>` referrers
//! tag, and takes each layer's index in place of a pass over the layer.
//!
//! The artifact (format 1):
//! - an OCI image manifest, `artifactType` [`ARTIFACT_TYPE`], config the
//!   empty descriptor (`application/vnd.oci.empty.v1+json`, `{}`), and
//!   `subject` the image manifest it describes;
//! - one layer per published layer index, media type [`INDEX_MEDIA_TYPE`]:
//!   the cache's own index file (`layer::format::VERSION`: little-endian and fixed-width,
//!   the same on x86-64, arm64 and armv7, checksummed) compressed with
//!   zstd, annotated with the layer's digest under [`LAYER_ANNOTATION`].
//!
//! Everything read here is untrusted: documents are size-bounded and
//! digest-checked, and an index is taken only if it decodes as an index of
//! that very layer (see `Cache::install`); otherwise the layer gets a full
//! pass.

use serde::Deserialize;
use serde_json::json;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::limits::{MAX_JSON_BYTES, MAX_PUBLISHED_INDEX_BYTES};
use crate::oci::manifest::Descriptor;
use crate::oci::media;
use crate::source::registry::client::{header, Access, Client};

pub const ARTIFACT_TYPE: &str = "application/vnd.ocimount.index.v1";
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.ocimount.layer-index.v4+zstd";
pub const LAYER_ANNOTATION: &str = "io.ocimount.layer.digest";
const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
const EMPTY_JSON: &[u8] = b"{}";

/// One layer's published index: which layer, and the blob that holds it.
#[derive(Clone, Debug)]
pub struct PublishedIndex {
    pub layer: Digest,
    pub blob: Digest,
    pub size: u64,
}

/// Another tool's referrers are kept as they are (platform, annotations,
/// digests of other algorithms): only ours are read and replaced.
#[derive(Deserialize)]
struct ListedReferrers {
    #[serde(default)]
    manifests: Vec<serde_json::Value>,
}

/// Our newest artifact in a referrers list: its digest and size.
fn our_artifact(referrers: &[serde_json::Value]) -> Option<(Digest, u64)> {
    referrers.iter().rev().find_map(|r| {
        if r.get("artifactType")?.as_str()? != ARTIFACT_TYPE {
            return None;
        }
        let digest = Digest::parse(r.get("digest")?.as_str()?).ok()?;
        Some((digest, r.get("size")?.as_u64()?))
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArtifactManifest {
    #[serde(default)]
    artifact_type: Option<String>,
    subject: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

/// The `sha256-<hex>` tag the referrers tag schema keeps a subject's
/// referrers under.
pub fn referrers_tag(subject: &Digest) -> String {
    format!("sha256-{}", subject.hex())
}

/// How the registry lists referrers: the API, or the tag schema (with
/// the tag's document as it is, when the tag exists).
enum Listing {
    Api(Vec<serde_json::Value>),
    Tag(Vec<serde_json::Value>, Option<serde_json::Value>),
}

fn list_referrers(client: &Client, subject: &Digest) -> Result<Listing> {
    let url = client.repo_url(&format!("referrers/{subject}?artifactType={ARTIFACT_TYPE}"));
    let response = client.send_once("GET", &url, &[("Accept", media::OCI_INDEX.to_string())])?;
    let is_index =
        header(&response, "content-type").is_some_and(|t| t.starts_with(media::OCI_INDEX));
    if response.status() == 200 && is_index {
        let bytes = client.read_small(response, MAX_JSON_BYTES, "referrers list")?;
        let listed: ListedReferrers = serde_json::from_slice(&bytes)
            .map_err(|e| client.error(format!("the referrers list of {subject}: {e}")))?;
        return Ok(Listing::Api(listed.manifests));
    }
    if !matches!(response.status().as_u16(), 200 | 404) {
        return Err(client.status_error(&format!("GET referrers of {subject}"), response));
    }
    drop(response);
    match client.manifest(&referrers_tag(subject), None) {
        Ok(document) => {
            let bad = |e: String| {
                client.error(format!("the referrers tag {}: {e}", referrers_tag(subject)))
            };
            let raw: serde_json::Value =
                serde_json::from_slice(&document.bytes).map_err(|e| bad(e.to_string()))?;
            if !raw.get("manifests").is_some_and(|m| m.is_array()) {
                return Err(bad("it is not an image index".to_string()));
            }
            let listed: ListedReferrers =
                serde_json::from_value(raw.clone()).map_err(|e| bad(e.to_string()))?;
            Ok(Listing::Tag(listed.manifests, Some(raw)))
        }
        Err(Error::NoManifest(_)) => Ok(Listing::Tag(Vec::new(), None)),
        Err(e) => Err(e),
    }
}

/// The layer indexes published for image manifest `subject`, newest
/// artifact first; empty when there are none.
pub fn find(client: &Client, subject: &Digest) -> Result<Vec<PublishedIndex>> {
    let referrers = match list_referrers(client, subject)? {
        Listing::Api(r) | Listing::Tag(r, _) => r,
    };
    let Some((artifact_digest, artifact_size)) = our_artifact(&referrers) else {
        return Ok(Vec::new());
    };
    if artifact_size > MAX_JSON_BYTES {
        return Err(client.error(format!(
            "the index artifact {artifact_digest} is {artifact_size} bytes, more than the \
             {MAX_JSON_BYTES}-byte limit"
        )));
    }
    let document = client.manifest(&artifact_digest.to_string(), Some(&artifact_digest))?;
    let manifest: ArtifactManifest = serde_json::from_slice(&document.bytes)
        .map_err(|e| client.error(format!("index artifact {artifact_digest}: {e}")))?;
    if manifest.artifact_type.as_deref() != Some(ARTIFACT_TYPE)
        || manifest.subject.as_ref().map(|s| s.digest) != Some(*subject)
    {
        return Err(client.error(format!(
            "index artifact {artifact_digest} is not an ocimount index of {subject}"
        )));
    }
    Ok(manifest
        .layers
        .iter()
        .filter(|d| d.media_type == INDEX_MEDIA_TYPE)
        .filter_map(|d| {
            let layer = Digest::parse(d.annotations.get(LAYER_ANNOTATION)?).ok()?;
            Some(PublishedIndex {
                layer,
                blob: d.digest,
                size: d.size,
            })
        })
        .collect())
}

/// The bytes of a published index, size-bounded and digest-checked.
pub fn fetch(client: &Client, published: &PublishedIndex, limit: u64) -> Result<Vec<u8>> {
    let limit = limit.min(MAX_PUBLISHED_INDEX_BYTES);
    if published.size > limit {
        return Err(client.error(format!(
            "the published index of layer {} is {} bytes, more than the {limit}-byte limit",
            published.layer, published.size
        )));
    }
    let packed = client.blob_range(&published.blob, 0, published.size)?;
    let actual = Digest::of(&packed);
    if actual != published.blob {
        return Err(Error::DigestMismatch {
            what: format!("published index of layer {}", published.layer),
            digest: published.blob,
            actual,
        });
    }
    unpack(&packed, limit).map_err(|reason| {
        client.error(format!(
            "the published index of layer {}: {reason}",
            published.layer
        ))
    })
}

/// Decompress a published index, refusing more than the limit (a zstd
/// bomb costs a bounded read, never the memory it claims).
fn unpack(packed: &[u8], limit: u64) -> std::result::Result<Vec<u8>, String> {
    use std::io::Read;
    let decoder = zstd::stream::read::Decoder::new(packed).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    decoder
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("not zstd: {e}"))?;
    if bytes.len() as u64 > limit {
        return Err(format!("it decompresses past the {limit}-byte limit"));
    }
    Ok(bytes)
}

/// Upload `bytes` as a blob, unless the repository has it already.
fn upload_blob(client: &Client, bytes: &[u8]) -> Result<Digest> {
    let digest = Digest::of(bytes);
    if client.blob_size(&digest)? == Some(bytes.len() as u64) {
        return Ok(digest);
    }
    let start = client.send(
        "POST",
        &client.repo_url("blobs/uploads/"),
        &[],
        Some(&[]),
        Access::Push,
        false,
    )?;
    if start.status() != 202 {
        return Err(client.status_error("starting a blob upload", start));
    }
    let location = header(&start, "location")
        .ok_or_else(|| client.error("a blob upload without a Location".to_string()))?;
    drop(start);
    let base = client.repo_url("");
    let location = absolute(&base, &location);
    let separator = if location.contains('?') { '&' } else { '?' };
    let url = format!("{location}{separator}digest={digest}");
    let done = client.send(
        "PUT",
        &url,
        &[("Content-Type", "application/octet-stream".to_string())],
        Some(bytes),
        Access::Push,
        false,
    )?;
    if done.status() != 201 {
        return Err(client.status_error(&format!("uploading blob {digest}"), done));
    }
    Ok(digest)
}

fn absolute(base: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_string();
    }
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[after_scheme..]
        .find('/')
        .map_or(base.len(), |i| after_scheme + i);
    format!("{}{location}", &base[..host_end])
}

fn put_manifest(client: &Client, reference: &str, media_type: &str, bytes: &[u8]) -> Result<()> {
    let url = client.repo_url(&format!("manifests/{reference}"));
    let response = client.send(
        "PUT",
        &url,
        &[("Content-Type", media_type.to_string())],
        Some(bytes),
        Access::Push,
        false,
    )?;
    if response.status() != 201 {
        return Err(client.status_error(&format!("PUT manifest {reference}"), response));
    }
    Ok(())
}

/// One layer index to publish.
pub struct LocalIndex {
    pub layer: Digest,
    pub bytes: Vec<u8>,
}

/// What `push` did, for its report.
pub struct Pushed {
    pub artifact: Digest,
    /// "referrers API" or "referrers tag sha256-…".
    pub listed_through: String,
    pub index_bytes: u64,
}

/// Publish `indexes` as an artifact of the image manifest `subject`.
pub fn push(client: &Client, subject: &Descriptor, indexes: &[LocalIndex]) -> Result<Pushed> {
    let config = upload_blob(client, EMPTY_JSON)?;
    let mut layers = Vec::with_capacity(indexes.len());
    let mut index_bytes = 0;
    for index in indexes {
        let packed = zstd::bulk::compress(&index.bytes, 9)
            .map_err(|e| Error::Internal(format!("compressing an index: {e}")))?;
        let digest = upload_blob(client, &packed)?;
        index_bytes += packed.len() as u64;
        layers.push(json!({
            "mediaType": INDEX_MEDIA_TYPE,
            "digest": digest.to_string(),
            "size": packed.len(),
            "annotations": { LAYER_ANNOTATION: index.layer.to_string() },
        }));
    }
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": {
            "mediaType": EMPTY_MEDIA_TYPE,
            "digest": config.to_string(),
            "size": EMPTY_JSON.len(),
        },
        "layers": layers,
        "subject": {
            "mediaType": subject.media_type,
            "digest": subject.digest.to_string(),
            "size": subject.size,
        },
        "annotations": { "io.ocimount.index.format": "1" },
    });
    let bytes = serde_json::to_vec(&manifest).map_err(|e| Error::Internal(e.to_string()))?;
    let artifact = Digest::of(&bytes);
    put_manifest(client, &artifact.to_string(), media::OCI_MANIFEST, &bytes)?;
    let listed_through = match list_referrers(client, &subject.digest)? {
        Listing::Api(_) => "the referrers API".to_string(),
        Listing::Tag(_, existing) => {
            // The tag schema: the tag's index as it is, ours replaced.
            let mut index = existing.unwrap_or_else(|| {
                json!({
                    "schemaVersion": 2,
                    "mediaType": media::OCI_INDEX,
                    "manifests": [],
                })
            });
            let manifests = index["manifests"].as_array_mut().ok_or_else(|| {
                Error::Internal("a referrers index without manifests".to_string())
            })?;
            manifests
                .retain(|m| m.get("artifactType").and_then(|t| t.as_str()) != Some(ARTIFACT_TYPE));
            manifests.push(json!({
                "mediaType": media::OCI_MANIFEST,
                "digest": artifact.to_string(),
                "size": bytes.len(),
                "artifactType": ARTIFACT_TYPE,
            }));
            let index = serde_json::to_vec(&index).map_err(|e| Error::Internal(e.to_string()))?;
            let tag = referrers_tag(&subject.digest);
            put_manifest(client, &tag, media::OCI_INDEX, &index)?;
            format!("the referrers tag {tag}")
        }
    };
    Ok(Pushed {
        artifact,
        listed_through,
        index_bytes,
    })
}
