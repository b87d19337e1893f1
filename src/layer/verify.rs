//! `verify`: recompute a layer's blob digest and diff_id from scratch,
//! ignoring the cache, with plain sequential decoders.

use std::io::{self, Read};

use indicatif::ProgressBar;
use sha2::{Digest as _, Sha256};

use crate::blob::BlobSource;
use crate::digest::Digest;
use crate::layer::index::HashingReader;
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
}

pub fn check_layer(
    layer: &LayerInfo,
    blob: &dyn BlobSource,
    bar: &ProgressBar,
) -> io::Result<LayerCheck> {
    let mut blob_hash = HashingReader::new(blob.stream(), bar.clone(), false);
    let mut tar_hash = Sha256::new();
    let mut total = 0u64;
    let result = {
        let decoder: Box<dyn Read + '_> = match layer.compression {
            Compression::None => Box::new(&mut blob_hash),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&mut blob_hash)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(&mut blob_hash)?),
        };
        copy_hashing(decoder, &mut tar_hash, &mut total)
    };
    // Whatever happened to decompression, the blob digest is over every byte.
    io::copy(&mut blob_hash, &mut io::sink())?;
    Ok(LayerCheck {
        blob_digest: blob_hash.digest()?,
        diff_id: result.is_ok().then(|| Digest::from_hasher(tar_hash)),
        uncompressed_size: total,
        decode_error: result.err().map(|e| e.to_string()),
    })
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
