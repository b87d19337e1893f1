//! `verify`: recompute a layer's blob digest and diff_id from scratch,
//! ignoring the cache, with plain sequential decoders; for a layer that
//! carries a table of contents, compare it with the tar in the same pass
//! (`crate::layer::toc::agreement`).

use std::io::{self, Read};

use indicatif::ProgressBar;
use sha2::{Digest as _, Sha256};

use crate::blob::BlobSource;
use crate::digest::Digest;
use crate::layer::index::HashingReader;
use crate::layer::layer_index::LayerIndex;
use crate::layer::toc::agreement::{self, Disagreements};
use crate::layer::Compression;
use crate::layer::LayerInfo;

/// What one layer's check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerCheck {
    pub blob_digest: Digest,
    pub diff_id: Option<Digest>,
    pub uncompressed_size: u64,
    /// Set when decompression failed; the digests are then partial.
    pub decode_error: Option<String>,
    /// With a TOC to compare: what it says that the tar does not.
    pub toc: Option<Disagreements>,
}

/// Check one layer; `toc`, the index made from its table of contents, is
/// compared with its tar on the way.
pub fn check_layer(
    layer: &LayerInfo,
    blob: &dyn BlobSource,
    bar: &ProgressBar,
    toc: Option<&LayerIndex>,
) -> io::Result<LayerCheck> {
    let mut blob_hash = HashingReader::new(blob.stream(), bar.clone(), false);
    let mut tar_hash = Sha256::new();
    let mut total = 0u64;
    let mut toc_found = None;
    let result = {
        let decoder: Box<dyn Read + '_> = match layer.compression {
            Compression::None => Box::new(&mut blob_hash),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&mut blob_hash)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(&mut blob_hash)?),
        };
        match toc {
            None => copy_hashing(decoder, &mut tar_hash, &mut total),
            Some(toc) => {
                let tee = HashingTee {
                    inner: decoder,
                    hasher: &mut tar_hash,
                    total: &mut total,
                };
                agreement::compare(toc, tee).map(|found| toc_found = Some(found))
            }
        }
    };
    // Whatever happened to decompression, the blob digest is over every byte.
    io::copy(&mut blob_hash, &mut io::sink())?;
    Ok(LayerCheck {
        blob_digest: blob_hash.digest()?,
        diff_id: result.is_ok().then(|| Digest::from_hasher(tar_hash)),
        uncompressed_size: total,
        decode_error: result.err().map(|e| e.to_string()),
        toc: toc_found,
    })
}

/// The decoded stream, hashed and counted as it is read.
struct HashingTee<'a, R> {
    inner: R,
    hasher: &'a mut Sha256,
    total: &'a mut u64,
}

impl<R: Read> Read for HashingTee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        *self.total += n as u64;
        Ok(n)
    }
}

fn copy_hashing(mut r: impl Read, hasher: &mut Sha256, total: &mut u64) -> io::Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        hasher.update(&buf[..n]);
        *total += n as u64;
    }
}
