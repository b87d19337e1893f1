//! Which table of contents a layer descriptor vouches for, read from its
//! annotations. Only an annotation vouches: a footer may say where a TOC
//! lies, never that it is to be trusted.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::digest::Digest;
use crate::layer::Compression;

/// eStargz (stargz-snapshotter, nerdctl, BuildKit, kaniko): the SHA-256 of
/// the TOC's JSON.
pub const ESTARGZ_TOC_DIGEST: &str = "containerd.io/snapshot/stargz/toc.digest";
/// zstd:chunked (podman, buildah, skopeo): the SHA-256 of the compressed TOC
/// and where it lies, under the names containers/storage has used since
/// late 2022, and under the older ones (skopeo 1.9 writes those).
const ZSTD_CHUNKED_NAMES: [(&str, &str); 2] = [
    (
        "io.github.containers.zstd-chunked.manifest-checksum",
        "io.github.containers.zstd-chunked.manifest-position",
    ),
    (
        "io.containers.zstd-chunked.manifest-checksum",
        "io.containers.zstd-chunked.manifest-position",
    ),
];

/// A layer's table of contents, as its descriptor names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "format")]
pub enum TocReference {
    /// The TOC is found through the blob's 51-byte footer; `json_digest`
    /// is the SHA-256 of its JSON.
    Estargz { json_digest: Digest },
    /// The TOC is the zstd frame at `offset..offset + length` of the blob,
    /// `compressed_digest` its SHA-256, `json_length` the JSON's length.
    ZstdChunked {
        compressed_digest: Digest,
        offset: u64,
        length: u64,
        json_length: u64,
    },
}

impl TocReference {
    /// Whether a layer compressed this way can carry this kind of TOC:
    /// eStargz is gzip, zstd:chunked is zstd. A manifest that says
    /// otherwise gets no TOC for the layer (its chunks would be decoded
    /// with the wrong codec), and a full pass.
    pub fn fits(&self, compression: Compression) -> bool {
        matches!(
            (self, compression),
            (TocReference::Estargz { .. }, Compression::Gzip)
                | (TocReference::ZstdChunked { .. }, Compression::Zstd)
        )
    }

    /// The reference the annotations make, if any. A malformed one is an
    /// error with a reason: the caller indexes the layer by a full pass.
    pub fn from_annotations(
        annotations: &BTreeMap<String, String>,
    ) -> Result<Option<TocReference>, String> {
        if let Some(digest) = annotations.get(ESTARGZ_TOC_DIGEST) {
            let json_digest = Digest::parse(digest)
                .map_err(|e| format!("{ESTARGZ_TOC_DIGEST} {digest:?}: {e}"))?;
            return Ok(Some(TocReference::Estargz { json_digest }));
        }
        for (checksum_key, position_key) in ZSTD_CHUNKED_NAMES {
            let (Some(checksum), Some(position)) =
                (annotations.get(checksum_key), annotations.get(position_key))
            else {
                continue;
            };
            let compressed_digest =
                Digest::parse(checksum).map_err(|e| format!("{checksum_key} {checksum:?}: {e}"))?;
            let fields: Vec<&str> = position.split(':').collect();
            let number = |s: &str| s.parse::<u64>().ok();
            let parsed = match fields[..] {
                [offset, length, json_length, kind] => {
                    (number(offset), number(length), number(json_length), kind)
                }
                _ => (None, None, None, ""),
            };
            let (Some(offset), Some(length), Some(json_length), kind) = parsed else {
                return Err(format!(
                    "{position_key} {position:?} is not OFFSET:LENGTH:UNCOMPRESSED_LENGTH:TYPE"
                ));
            };
            if kind != "1" {
                return Err(format!(
                    "{position_key} {position:?}: TOC type {kind} (only 1, a JSON TOC, is known)"
                ));
            }
            return Ok(Some(TocReference::ZstdChunked {
                compressed_digest,
                offset,
                length,
                json_length,
            }));
        }
        Ok(None)
    }

    pub fn format_name(&self) -> &'static str {
        match self {
            TocReference::Estargz { .. } => "eStargz",
            TocReference::ZstdChunked { .. } => "zstd:chunked",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const D: &str = "sha256:7d2187f6cfb6681dbce0adb63d7bba67bc098a7f854102b55fd9122505a4151b";

    #[test]
    fn each_format_is_read_from_its_annotations() {
        assert_eq!(
            TocReference::from_annotations(&annotations(&[(ESTARGZ_TOC_DIGEST, D)])).unwrap(),
            Some(TocReference::Estargz {
                json_digest: Digest::parse(D).unwrap()
            })
        );
        let want = Some(TocReference::ZstdChunked {
            compressed_digest: Digest::parse(D).unwrap(),
            offset: 1062695,
            length: 3261,
            json_length: 19053,
        });
        for prefix in ["io.github.containers", "io.containers"] {
            let got = TocReference::from_annotations(&annotations(&[
                (&format!("{prefix}.zstd-chunked.manifest-checksum"), D),
                (
                    &format!("{prefix}.zstd-chunked.manifest-position"),
                    "1062695:3261:19053:1",
                ),
            ]))
            .unwrap();
            assert_eq!(got, want, "{prefix}");
        }
        assert_eq!(TocReference::from_annotations(&BTreeMap::new()), Ok(None));
        let estargz = TocReference::Estargz {
            json_digest: Digest::parse(D).unwrap(),
        };
        let chunked = TocReference::ZstdChunked {
            compressed_digest: Digest::parse(D).unwrap(),
            offset: 1,
            length: 2,
            json_length: 3,
        };
        assert!(estargz.fits(Compression::Gzip) && chunked.fits(Compression::Zstd));
        for compression in [Compression::None, Compression::Zstd] {
            assert!(!estargz.fits(compression), "{compression:?}");
        }
        for compression in [Compression::None, Compression::Gzip] {
            assert!(!chunked.fits(compression), "{compression:?}");
        }
        // A checksum alone names no TOC.
        assert_eq!(
            TocReference::from_annotations(&annotations(&[(
                "io.containers.zstd-chunked.manifest-checksum",
                D
            )])),
            Ok(None)
        );
    }

    #[test]
    fn malformed_annotations_are_errors_with_the_key() {
        let bad = [
            (vec![(ESTARGZ_TOC_DIGEST, "sha256:12")], ESTARGZ_TOC_DIGEST),
            (
                vec![
                    ("io.containers.zstd-chunked.manifest-checksum", D),
                    ("io.containers.zstd-chunked.manifest-position", "1:2:3"),
                ],
                "is not OFFSET:LENGTH",
            ),
            (
                vec![
                    ("io.containers.zstd-chunked.manifest-checksum", D),
                    ("io.containers.zstd-chunked.manifest-position", "1:2:3:2"),
                ],
                "TOC type 2",
            ),
            (
                vec![
                    ("io.containers.zstd-chunked.manifest-checksum", D),
                    ("io.containers.zstd-chunked.manifest-position", "-1:2:3:1"),
                ],
                "is not OFFSET:LENGTH",
            ),
        ];
        for (pairs, needle) in bad {
            let err = TocReference::from_annotations(&annotations(&pairs)).unwrap_err();
            assert!(err.contains(needle), "{err}");
        }
    }
}
