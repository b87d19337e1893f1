//! Decode-ahead on real FUSE mounts: one read of a large file has the rest
//! of the file decoded into the data cache by the worker threads (on a
//! machine of two cores or more), and reads at random offsets while that
//! runs return the file's exact bytes.

mod support;

use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::{corpus, wait_until, Mounted};

/// 20 MiB of incompressible bytes: deflate keeps them in stored blocks,
/// so the layer's spans hold them with ordinary checkpoints, none
/// materialised while indexing.
const BIG: &str = "corpus/big/random.bin";

fn layout() -> PathBuf {
    corpus().image("debian-gzip").layout.clone()
}

/// Where `path`'s bytes lie in its layer: (layer blob hex, offset in the
/// uncompressed tar, size), found by reading every layer blob with the
/// `tar` crate.
fn tar_position(layout: &Path, path: &str) -> (String, u64, u64) {
    let blobs = layout.join("blobs").join("sha256");
    for entry in std::fs::read_dir(&blobs).unwrap() {
        let blob = entry.unwrap().path();
        let mut magic = [0u8; 2];
        let mut file = std::fs::File::open(&blob).unwrap();
        if file.read_exact(&mut magic).is_err() || magic != [0x1f, 0x8b] {
            continue;
        }
        let gz = flate2::read::MultiGzDecoder::new(std::fs::File::open(&blob).unwrap());
        let mut archive = tar::Archive::new(gz);
        for member in archive.entries().unwrap() {
            let member = member.unwrap();
            let name = member.path().unwrap().to_string_lossy().into_owned();
            if name.trim_start_matches("./") == path {
                let hex = blob.file_name().unwrap().to_str().unwrap().to_string();
                return (hex, member.raw_file_position(), member.size());
            }
        }
    }
    panic!("{path} is in no gzip layer of {}", layout.display());
}

/// `len` bytes at `offset` of the layer's data cache file (holes read as
/// zeros).
fn cached_bytes(cache: &Path, layer_hex: &str, offset: u64, len: u64) -> Vec<u8> {
    let data = cache.join("layers/sha256").join(layer_hex).join("data");
    let mut bytes = vec![0u8; len as usize];
    let file = std::fs::File::open(data).unwrap();
    file.read_exact_at(&mut bytes, offset).unwrap();
    bytes
}

/// xorshift64: the offsets of the random reads, the same every run.
fn offsets(count: usize, size: u64, mut seed: u64) -> Vec<u64> {
    (0..count)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % (size - 4096)
        })
        .collect()
}

#[test]
fn one_read_of_a_large_file_has_the_rest_of_it_decoded_on_the_other_cores() {
    let reference = std::fs::read(corpus().reference("debian-gzip").join(BIG)).unwrap();
    let (layer, at, size) = tar_position(&layout(), BIG);
    assert_eq!(size, reference.len() as u64);
    let cache = tempfile::tempdir().unwrap();
    let m = Mounted::new(cache.path(), layout().to_str().unwrap(), &[]);
    assert!(
        cached_bytes(cache.path(), &layer, at, size) != reference,
        "the file was decoded before it was read"
    );

    let middle = size / 2;
    let mut buf = vec![0u8; 4096];
    let file = std::fs::File::open(m.path().join(BIG)).unwrap();
    file.read_exact_at(&mut buf, middle).unwrap();
    assert_eq!(buf, reference[middle as usize..middle as usize + 4096]);

    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        // One core: no worker, so only the span read is stored.
        std::thread::sleep(Duration::from_secs(2));
        assert!(cached_bytes(cache.path(), &layer, at, size) != reference);
        return;
    }
    assert!(
        wait_until(Duration::from_secs(30), || cached_bytes(
            cache.path(),
            &layer,
            at,
            size
        ) == reference),
        "30 s after one read, the data cache does not hold all of {BIG}"
    );
    assert_eq!(std::fs::read(m.path().join(BIG)).unwrap(), reference);
}

#[test]
fn random_reads_while_decoding_ahead_are_the_files_bytes() {
    let reference = std::fs::read(corpus().reference("debian-gzip").join(BIG)).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let m = Mounted::new(cache.path(), layout().to_str().unwrap(), &[]);
    let file = std::fs::File::open(m.path().join(BIG)).unwrap();
    let mut buf = vec![0u8; 4096];
    for (n, offset) in offsets(500, reference.len() as u64, 0x9e37_79b9_7f4a_7c15)
        .into_iter()
        .enumerate()
    {
        file.read_exact_at(&mut buf, offset).unwrap();
        let want = &reference[offset as usize..offset as usize + 4096];
        assert!(buf == want, "read {n} at offset {offset} differs");
    }
}
