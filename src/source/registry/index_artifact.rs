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
use crate::source::store::PublishedIndex;
use crate::sys::bounded::{self, ReadError, Reserve};

pub const ARTIFACT_TYPE: &str = "application/vnd.ocimount.index.v1";
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.ocimount.layer-index.v5+zstd";
pub const LAYER_ANNOTATION: &str = "io.ocimount.layer.digest";
const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
const EMPTY_JSON: &[u8] = b"{}";

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
    let url = client.repo_url(&format!("referrers/{subject}?artifactType={ARTIFACT_TYPE}"))?;
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
///
/// Memory follows what arrives, not what the artifact claims: the packed
/// body is read as it comes and decompressed as a stream, each into a
/// buffer that grows by fallible reservations (`sys::bounded`). A body
/// that ends early, one that decompresses past `limit`, and a failed
/// allocation are errors, which the caller answers with a full pass over
/// the layer.
pub fn fetch(client: &Client, published: &PublishedIndex, limit: u64) -> Result<Vec<u8>> {
    let limit = limit.min(MAX_PUBLISHED_INDEX_BYTES);
    let layer = published.layer;
    if published.size > limit {
        return Err(client.error(format!(
            "the published index of layer {layer} is {} bytes, more than the {limit}-byte limit",
            published.size
        )));
    }
    if published.size == 0 {
        return Err(client.error(format!("the published index of layer {layer} is empty")));
    }
    let (body, what) = client.blob_range_body(&published.blob, 0, published.size)?;
    receive(body, published, limit, bounded::try_reserve_exact).map_err(|refused| match refused {
        Refused::Digest(actual) => Error::DigestMismatch {
            what: format!("published index of layer {layer}"),
            digest: published.blob,
            actual,
        },
        Refused::Body(e) => {
            client.body_error(&format!("the published index of layer {layer}: {what}"), e)
        }
        Refused::Bad(reason) => {
            client.error(format!("the published index of layer {layer}: {reason}"))
        }
    })
}

/// Why a published index was not taken.
#[derive(Debug)]
enum Refused {
    /// Its bytes have this digest, not the one the artifact names.
    Digest(Digest),
    /// The body failed while it was read.
    Body(std::io::Error),
    /// Too large, truncated, not zstd, or no memory to hold it.
    Bad(String),
}

/// A published index from `body` (its packed bytes, as they arrive):
/// exactly `published.size` bytes with `published.blob` for digest,
/// decompressed to at most `limit` bytes; every buffer grown by `reserve`.
fn receive(
    body: impl std::io::Read,
    published: &PublishedIndex,
    limit: u64,
    reserve: Reserve,
) -> std::result::Result<Vec<u8>, Refused> {
    let size = published.size;
    let mut packed = Vec::new();
    bounded::read_into(body, size, &mut packed, reserve).map_err(|e| match e {
        ReadError::Io(e) => Refused::Body(e),
        ReadError::TooLarge { .. } => Refused::Bad(format!("the body runs past its {size} bytes")),
        e @ ReadError::NoMemory { .. } => Refused::Bad(format!("reading it: {e}")),
    })?;
    if packed.len() as u64 != size {
        return Err(Refused::Bad(format!(
            "the body ends after {} of its {size} bytes",
            packed.len()
        )));
    }
    let actual = Digest::of(&packed);
    if actual != published.blob {
        return Err(Refused::Digest(actual));
    }
    let mut bytes = Vec::new();
    unpack_into(&packed, limit, &mut bytes, reserve).map_err(Refused::Bad)?;
    Ok(bytes)
}

/// Decompress a published index into `out`, refusing more than the limit:
/// a frame that declares more is refused unread, and a zstd bomb that
/// declares nothing costs at most the limit (and only as much as it
/// really decompresses to below it), never the memory it would take.
fn unpack_into(
    packed: &[u8],
    limit: u64,
    out: &mut Vec<u8>,
    reserve: Reserve,
) -> std::result::Result<(), String> {
    if let Ok(Some(declared)) = zstd::zstd_safe::get_frame_content_size(packed) {
        if declared > limit {
            return Err(format!(
                "it says it decompresses to {declared} bytes, more than the {limit}-byte limit"
            ));
        }
    }
    // The context too: out of memory, an error rather than a panic.
    let mut context = zstd::zstd_safe::DCtx::try_create()
        .ok_or("out of memory: no zstd context could be allocated")?;
    let decoder = zstd::stream::read::Decoder::with_context(packed, &mut context);
    bounded::read_into(decoder, limit, out, reserve).map_err(|e| match e {
        ReadError::TooLarge { .. } => format!("it decompresses past the {limit}-byte limit"),
        ReadError::Io(e) => format!("not zstd: {e}"),
        e @ ReadError::NoMemory { .. } => format!("decompressing it: {e}"),
    })
}

/// Upload `bytes` as a blob, unless the repository has it already.
fn upload_blob(client: &Client, bytes: &[u8]) -> Result<Digest> {
    let digest = Digest::of(bytes);
    if client.blob_size(&digest)? == Some(bytes.len() as u64) {
        return Ok(digest);
    }
    let start = client.send(
        "POST",
        &client.repo_url("blobs/uploads/")?,
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
    let base = client.repo_url("")?;
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
    let url = client.repo_url(&format!("manifests/{reference}"))?;
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

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::collections::TryReserveError;
    use std::io::{self, Read, Write};

    use super::*;

    const MIB: u64 = 1 << 20;

    thread_local! {
        /// The largest buffer any reservation on this thread asked for.
        static PEAK: Cell<usize> = const { Cell::new(0) };
    }

    /// The allocator's answer, with the buffer size it was asked for noted.
    fn noted(buf: &mut Vec<u8>, additional: usize) -> Result<(), TryReserveError> {
        PEAK.with(|p| p.set(p.get().max(buf.len() + additional)));
        buf.try_reserve_exact(additional)
    }

    /// An allocator out of memory past 1 MiB, as a 3 GiB armv7 address
    /// space runs out past a few hundred MiB.
    fn out_past_a_mib(buf: &mut Vec<u8>, additional: usize) -> Result<(), TryReserveError> {
        if buf.len() + additional > MIB as usize {
            // A real refusal: more than isize::MAX bytes.
            return Vec::<u8>::new().try_reserve_exact(usize::MAX);
        }
        buf.try_reserve_exact(additional)
    }

    fn peak_after<T>(f: impl FnOnce() -> T) -> (T, usize) {
        PEAK.with(|p| p.set(0));
        let out = f();
        (out, PEAK.with(Cell::get))
    }

    fn published(packed: &[u8]) -> PublishedIndex {
        PublishedIndex {
            layer: Digest::of(b"layer"),
            blob: Digest::of(packed),
            size: packed.len() as u64,
        }
    }

    /// Bytes that compress several fold, as an index does.
    fn index_like(len: usize) -> Vec<u8> {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        (0..len)
            .map(|i| {
                if i % 16 == 0 {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                } else {
                    (i % 64) as u8
                }
            })
            .collect()
    }

    /// A zstd stream that does not say how large it decompresses.
    fn pack_unsized(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        encoder.include_contentsize(false).unwrap();
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn a_published_index_is_received_whole() {
        let index = index_like(3 * MIB as usize);
        let packed = zstd::bulk::compress(&index, 9).unwrap();
        let (got, peak) =
            peak_after(|| receive(&packed[..], &published(&packed), 512 * MIB, noted).unwrap());
        assert_eq!(got, index);
        // No buffer more than a quarter and a chunk past what it holds.
        let bound = index.len() * 5 / 4 + bounded::CHUNK;
        assert!(peak <= bound, "{peak} > {bound}");
    }

    /// The artifact claims 512 MiB (its descriptor's size) and the
    /// registry sends 10 KB: the buffer follows the 10 KB, the claim costs
    /// nothing, and the short body is refused.
    #[test]
    fn a_body_that_claims_512_mib_and_sends_10_kb_costs_10_kb() {
        let claim = PublishedIndex {
            size: 512 * MIB,
            ..published(b"")
        };
        let (refused, peak) = peak_after(|| {
            receive(io::repeat(7).take(10_000), &claim, 512 * MIB, noted).unwrap_err()
        });
        assert!(
            matches!(&refused, Refused::Bad(r) if r == "the body ends after 10000 of its 536870912 bytes"),
            "{refused:?}"
        );
        assert!(peak < MIB as usize, "10 KB took a {peak}-byte buffer");
    }

    #[test]
    fn a_body_that_runs_past_its_size_is_refused() {
        let packed = zstd::bulk::compress(b"an index", 9).unwrap();
        let mut longer = packed.clone();
        longer.extend_from_slice(b"and more");
        let refused = receive(&longer[..], &published(&packed), MIB, noted).unwrap_err();
        assert!(
            matches!(&refused, Refused::Bad(r) if r.contains("the body runs past its")),
            "{refused:?}"
        );
    }

    #[test]
    fn a_body_with_another_digest_is_refused() {
        let packed = zstd::bulk::compress(b"an index", 9).unwrap();
        let mut damaged = packed.clone();
        damaged[3] ^= 0xff;
        let refused = receive(&damaged[..], &published(&packed), MIB, noted).unwrap_err();
        assert!(
            matches!(refused, Refused::Digest(d) if d == Digest::of(&damaged)),
            "{refused:?}"
        );
    }

    /// A zstd bomb that does not say its size: 64 MiB of zeros packed in a
    /// few KB, under a 1 MiB limit. Refused once it passes the limit, in a
    /// buffer no larger than the limit.
    #[test]
    fn a_zstd_bomb_is_refused_in_bounded_memory() {
        let packed = pack_unsized(&vec![0u8; 64 * MIB as usize]);
        assert!(packed.len() < 64 << 10, "{} bytes packed", packed.len());
        assert_eq!(
            zstd::zstd_safe::get_frame_content_size(&packed).unwrap(),
            None
        );
        let mut out = Vec::new();
        let (refused, peak) = peak_after(|| unpack_into(&packed, MIB, &mut out, noted));
        assert_eq!(
            refused.unwrap_err(),
            "it decompresses past the 1048576-byte limit"
        );
        assert!(out.capacity() as u64 <= MIB + 1, "{}", out.capacity());
        assert!(peak as u64 <= MIB + 1, "{peak}");

        // The same through `receive`, as `fetch` sees it.
        let refused = receive(&packed[..], &published(&packed), MIB, noted).unwrap_err();
        assert!(
            matches!(&refused, Refused::Bad(r) if r == "it decompresses past the 1048576-byte limit"),
            "{refused:?}"
        );
    }

    /// A bomb whose frame says how large it decompresses is refused before
    /// a byte of it is decoded.
    #[test]
    fn a_zstd_frame_that_declares_more_than_the_limit_is_refused_unread() {
        let packed = zstd::bulk::compress(&vec![0u8; 64 * MIB as usize], 3).unwrap();
        let mut out = Vec::new();
        let (refused, peak) = peak_after(|| unpack_into(&packed, MIB, &mut out, noted));
        assert_eq!(
            refused.unwrap_err(),
            "it says it decompresses to 67108864 bytes, more than the 1048576-byte limit"
        );
        assert_eq!(out.capacity(), 0);
        assert_eq!(peak, 0);
    }

    #[test]
    fn an_index_of_exactly_the_limit_is_taken() {
        let index = index_like(MIB as usize);
        for packed in [
            zstd::bulk::compress(&index, 9).unwrap(),
            pack_unsized(&index),
        ] {
            let got = receive(&packed[..], &published(&packed), MIB, noted).unwrap();
            assert_eq!(got, index);
        }
    }

    #[test]
    fn bytes_that_are_not_zstd_are_refused() {
        let packed = b"not a zstd frame at all".to_vec();
        let refused = receive(&packed[..], &published(&packed), MIB, noted).unwrap_err();
        assert!(
            matches!(&refused, Refused::Bad(r) if r.starts_with("not zstd")),
            "{refused:?}"
        );
    }

    /// Memory running out while the index is decompressed is an error
    /// (which `fetch` returns, and rootfs answers with a full pass), not an
    /// abort.
    #[test]
    fn running_out_of_memory_while_decompressing_is_an_error() {
        let index = index_like(4 * MIB as usize);
        let packed = zstd::bulk::compress(&index, 9).unwrap();
        assert!(packed.len() < MIB as usize);
        let refused =
            receive(&packed[..], &published(&packed), 512 * MIB, out_past_a_mib).unwrap_err();
        let Refused::Bad(reason) = &refused else {
            panic!("{refused:?}");
        };
        assert!(
            reason.starts_with("decompressing it: out of memory: holding ")
                && reason.contains("memory allocation failed"),
            "{reason}"
        );
    }

    /// And while the packed body arrives.
    #[test]
    fn running_out_of_memory_while_reading_the_body_is_an_error() {
        let claim = PublishedIndex {
            size: 4 * MIB,
            ..published(b"")
        };
        let refused = receive(
            io::repeat(1).take(4 * MIB),
            &claim,
            512 * MIB,
            out_past_a_mib,
        )
        .unwrap_err();
        let Refused::Bad(reason) = &refused else {
            panic!("{refused:?}");
        };
        assert!(
            reason.starts_with("reading it: out of memory: holding "),
            "{reason}"
        );
    }
}
