//! The cache under crashes, races and a full disk: `kill -9` at random
//! points while layers are indexed and while spans are filled (by `cat` and
//! by a mount daemon), then the next run must give the reference bytes and
//! no half-written entry may ever be trusted; processes racing to index one
//! layer leave one correct entry; a full cache disk is a clear error, never
//! SIGBUS.
//!
//! The invariant checked after every kill: an `index` in place loads (so
//! `data` and `spans` beside it are complete), and every span marked
//! present in `spans` holds exactly the bytes the index's CRC describes.
//! (Truncated, bit-flipped and wrong-version index files are in
//! tests/bad_input.rs.)
//!
//! Set CRASH_SEED to replay a run; CRASH_ITERATIONS to run more kills.

mod support;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ocimount::image::Image;
use ocimount::layer::format;
use ocimount::layer::index::PassOptions;
use ocimount::layer::spans::crc32;
use ocimount::oci::media::Compression;
use ocimount::source::ImageRef;
use support::{corpus, ocimount, ok, run_bounded, wait_until, Mounted, BIN};

// ------------------------------------------------------------------ helpers

/// xorshift64*, seeded from CRASH_SEED or the clock (printed, to replay).
struct Rng(u64);

impl Rng {
    fn new(test: &str) -> Rng {
        let seed = std::env::var("CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("{test}: CRASH_SEED={seed}");
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn iterations(default: usize) -> usize {
    std::env::var("CRASH_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn layout(name: &str) -> PathBuf {
    corpus().image(name).layout.clone()
}

fn spawn(cache: &Path, args: &[&str]) -> Child {
    Command::new(BIN)
        .arg("--cache")
        .arg(cache)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// SIGKILL the child (if it still runs) and reap it; true if it was killed.
fn kill9(child: &mut Child) -> bool {
    let killed = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    killed
}

fn layer_dir(cache: &Path, digest: &ocimount::Digest) -> PathBuf {
    cache.join("layers/sha256").join(digest.hex())
}

/// The invariant: an index in place is complete and loads (unless it is
/// one the test itself tore, listed in `torn`), and every span marked
/// present holds the bytes its CRC says. Returns how many layers had a
/// loadable index and how many spans were present.
fn assert_cache_consistent(cache: &Path, layout: &Path) -> (usize, usize) {
    assert_cache_consistent_but(cache, layout, &[])
}

/// The decoded bytes of every span the cache marks present.
fn stored_span_bytes(cache: &Path, layout: &Path) -> u64 {
    let image = Image::open(
        &ImageRef::parse(layout.to_str().unwrap()).unwrap(),
        None,
        &Default::default(),
    )
    .unwrap();
    let mut total = 0;
    for layer in &image.layers {
        let dir = layer_dir(cache, &layer.digest);
        let (Ok(index), Ok(flags)) = (
            ocimount::cache::load(&dir, layer),
            std::fs::read(dir.join("spans")),
        ) else {
            continue;
        };
        total += index
            .spans
            .iter()
            .zip(&flags)
            .filter(|(_, &flag)| flag == 1)
            .map(|(span, _)| span.out_len)
            .sum::<u64>();
    }
    total
}

fn assert_cache_consistent_but(
    cache: &Path,
    layout: &Path,
    torn: &[(PathBuf, Vec<u8>)],
) -> (usize, usize) {
    let image = Image::open(
        &ImageRef::parse(layout.to_str().unwrap()).unwrap(),
        None,
        &Default::default(),
    )
    .unwrap();
    let (mut indexes, mut present) = (0, 0);
    for layer in &image.layers {
        let dir = layer_dir(cache, &layer.digest);
        let Ok(bytes) = std::fs::read(dir.join("index")) else {
            continue;
        };
        if torn
            .iter()
            .any(|(p, b)| *p == dir.join("index") && *b == bytes)
        {
            continue;
        }
        let index = ocimount::cache::load(&dir, layer)
            .unwrap_or_else(|e| panic!("{}: an index in place does not load: {e}", dir.display()));
        indexes += 1;
        if index.compression == Compression::None {
            continue;
        }
        let flags = std::fs::read(dir.join("spans")).unwrap();
        let data = std::fs::File::open(dir.join("data")).unwrap();
        for (span, &flag) in index.spans.iter().zip(&flags) {
            if flag != 1 {
                continue;
            }
            let mut bytes = vec![0u8; span.out_len as usize];
            data.read_exact_at(&mut bytes, span.out_offset).unwrap();
            assert_eq!(
                crc32(0, &bytes),
                span.crc32,
                "{}: span at {} is marked present but holds other bytes",
                dir.display(),
                span.out_offset
            );
            present += 1;
        }
    }
    (indexes, present)
}

/// No builder's temporary is left in the cache.
fn assert_no_temporaries(cache: &Path) {
    let left = temporaries(cache);
    assert!(left.is_empty(), "temporaries left behind: {left:?}");
}

/// Builders' temporaries in the cache.
fn temporaries(cache: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![cache.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else if e.file_name().to_string_lossy().contains(".tmp.") {
                out.push(e.path());
            }
        }
    }
    out
}

/// Clear every span flag of every compressed layer, so reads decode again.
fn forget_spans(cache: &Path) {
    for e in std::fs::read_dir(cache.join("layers/sha256")).unwrap() {
        let spans = e.unwrap().path().join("spans");
        if let Ok(len) = std::fs::metadata(&spans).map(|m| m.len()) {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&spans)
                .unwrap();
            f.write_all_at(&vec![0u8; len as usize], 0).unwrap();
        }
    }
}

fn ls_lr(cache: &Path, layout: &Path) -> String {
    ok(&ocimount(cache, &["ls", "-lR", layout.to_str().unwrap()]))
}

/// The largest regular files of the reference tree, relative.
fn largest_files(reference: &Path, n: usize) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![reference.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                let len = e.metadata().unwrap().len();
                files.push((len, e.path().strip_prefix(reference).unwrap().to_path_buf()));
            }
        }
    }
    files.sort();
    files.into_iter().rev().take(n).map(|(_, p)| p).collect()
}

fn cat(cache: &Path, layout: &Path, rel: &Path) -> Vec<u8> {
    let path = format!("/{}", rel.display());
    let out = ocimount(cache, &["cat", layout.to_str().unwrap(), &path]);
    assert!(
        out.status.success(),
        "cat {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

// ------------------------------------------------------------------ kill -9 while indexing

/// Kill `ls` at random points of a cold index (some layers' indexes
/// removed or truncated first, so rebuilds run over old files), check the
/// invariant after every kill, and every few kills let a run finish and
/// compare it with the reference.
fn kill_while_indexing(name: &str, rng: &mut Rng, rounds: usize) -> usize {
    let layout = layout(name);
    let reference = {
        let clean = tempfile::tempdir().unwrap();
        ls_lr(clean.path(), &layout)
    };
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = cache_dir.path();
    let started = Instant::now();
    ls_lr(cache, &layout);
    let cold = started.elapsed();
    let image = Image::open(
        &ImageRef::parse(layout.to_str().unwrap()).unwrap(),
        None,
        &Default::default(),
    )
    .unwrap();
    let big_file = &largest_files(&corpus().reference("debian-gzip"), 1)[0];
    let want_big = std::fs::read(corpus().reference("debian-gzip").join(big_file)).unwrap();
    let (mut killed, mut mid_build) = (0, 0);
    // Indexes this test tore and no run has rebuilt yet.
    let mut torn = Vec::new();
    for round in 0..rounds {
        for layer in &image.layers {
            let index = layer_dir(cache, &layer.digest).join("index");
            match rng.below(3) {
                0 => {
                    let _ = std::fs::remove_file(&index);
                }
                1 => {
                    if let Ok(bytes) = std::fs::read(&index) {
                        // A torn index, in place (as a crash of some other
                        // writer might leave): it must be rebuilt, not used.
                        let half = bytes[..bytes.len() / 2].to_vec();
                        std::fs::write(&index, &half).unwrap();
                        torn.push((index, half));
                    }
                }
                _ => {}
            }
        }
        let delay = Duration::from_micros(rng.below(cold.as_micros() as u64 * 5 / 4));
        let mut child = spawn(cache, &["ls", "-lR", layout.to_str().unwrap()]);
        std::thread::sleep(delay);
        if kill9(&mut child) {
            killed += 1;
            // Temporaries on disk: the kill landed while a layer was built.
            if !temporaries(cache).is_empty() {
                mid_build += 1;
            }
        }
        assert_cache_consistent_but(cache, &layout, &torn);
        if round % 4 == 3 {
            assert_eq!(ls_lr(cache, &layout), reference, "{name}: round {round}");
            torn.clear();
            assert_no_temporaries(cache);
            let (indexes, _) = assert_cache_consistent(cache, &layout);
            assert_eq!(indexes, image.layers.len());
        }
    }
    assert_eq!(ls_lr(cache, &layout), reference, "{name}: after the kills");
    assert!(
        cat(cache, &layout, big_file) == want_big,
        "{name}: wrong bytes"
    );
    assert_no_temporaries(cache);
    eprintln!(
        "{name}: {killed} of {rounds} runs killed, {mid_build} of them mid-build (cold index {cold:?})"
    );
    mid_build
}

#[test]
fn kill_9_while_indexing_never_leaves_a_trusted_half_written_entry() {
    let mut rng = Rng::new("indexing");
    let rounds = iterations(16);
    let mut mid_build = 0;
    // gzip (checkpoints), single-frame zstd (decoded into `data` during the
    // pass) and plain tar (no data file).
    for name in ["debian-gzip", "debian-zstd", "debian-plain"] {
        mid_build += kill_while_indexing(name, &mut rng, rounds);
    }
    assert!(
        mid_build >= rounds / 2,
        "only {mid_build} kills landed mid-build"
    );
}

// ------------------------------------------------------------------ kill -9 while filling spans

/// Kill `cat` of the largest files at random points while it decodes
/// spans into the data cache; spans flags are cleared between rounds so
/// every round fills.
#[test]
fn kill_9_while_filling_spans_never_leaves_a_wrong_span() {
    let mut rng = Rng::new("spans");
    let rounds = iterations(16);
    let reference = corpus().reference("debian-gzip");
    let files = largest_files(&reference, 4);
    let mut killed = 0;
    for name in ["debian-gzip", "debian-zstd-multiframe"] {
        let layout = layout(name);
        let cache_dir = tempfile::tempdir().unwrap();
        let cache = cache_dir.path();
        ls_lr(cache, &layout);
        // The fastest of three cold reads: one slowed by a busy machine
        // (the other tests of this file run beside it) would put most
        // kills after the read has ended.
        let cold = (0..3)
            .map(|_| {
                forget_spans(cache);
                let started = Instant::now();
                cat(cache, &layout, &files[0]);
                started.elapsed()
            })
            .min()
            .unwrap();
        for _ in 0..rounds {
            forget_spans(cache);
            let rel = &files[rng.below(files.len() as u64) as usize];
            let path = format!("/{}", rel.display());
            let mut child = spawn(cache, &["cat", layout.to_str().unwrap(), &path]);
            // Within the first three quarters of a cold read, so a busy
            // machine (where `cold` was measured fast) still kills mid-way.
            std::thread::sleep(Duration::from_micros(
                rng.below(cold.as_micros() as u64 * 3 / 4),
            ));
            if kill9(&mut child) {
                killed += 1;
            }
            assert_cache_consistent(cache, &layout);
        }
        for rel in &files {
            assert!(
                cat(cache, &layout, rel) == std::fs::read(reference.join(rel)).unwrap(),
                "{name}: {} has wrong bytes after the kills",
                rel.display()
            );
        }
        let (_, present) = assert_cache_consistent(cache, &layout);
        assert!(present > 0);
    }
    eprintln!(
        "{killed} of {} cat runs killed while filling spans",
        2 * rounds
    );
    assert!(
        killed >= rounds / 2,
        "only {killed} runs were killed mid-way"
    );
}

/// Kill the mount daemon while threads read through it, detach the dead
/// mount, remount: the files read back exactly, and no span is wrong.
#[test]
fn kill_9_of_the_daemon_during_reads_then_remount_gives_the_reference() {
    let mut rng = Rng::new("daemon");
    let rounds = iterations(16).div_ceil(3);
    let reference = corpus().reference("debian-gzip");
    let files = largest_files(&reference, 24);
    let image = layout("debian-gzip");
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = cache_dir.path();
    ls_lr(cache, &image);
    for round in 0..rounds {
        forget_spans(cache);
        let m = Mounted::new(cache, image.to_str().unwrap(), &[]);
        let pid = m.daemon_pid();
        let delay = Duration::from_millis(20 + rng.below(300));
        std::thread::scope(|s| {
            for t in 0..4 {
                let (files, mnt) = (&files, m.path());
                s.spawn(move || {
                    for rel in files.iter().skip(t).step_by(4) {
                        // After the kill reads fail (ENOTCONN); that is fine.
                        let _ = std::fs::read(mnt.join(rel));
                    }
                });
            }
            std::thread::sleep(delay);
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        });
        assert!(wait_until(Duration::from_secs(10), || {
            !support::process_alive(pid)
        }));
        let out = run_bounded(
            Command::new("umount").arg("-l").arg(m.path()),
            Duration::from_secs(30),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_cache_consistent(cache, &image);
        drop(m);
        let again = Mounted::new(cache, image.to_str().unwrap(), &[]);
        for rel in &files {
            assert!(
                std::fs::read(again.path().join(rel)).unwrap()
                    == std::fs::read(reference.join(rel)).unwrap(),
                "round {round}: {} differs after the daemon was killed",
                rel.display()
            );
        }
    }
    eprintln!("{rounds} daemons killed during reads, remounted correctly");
}

// ------------------------------------------------------------------ racing builders

/// Four processes start indexing the same layers at the same moment: all
/// list the reference tree, and each layer has one complete entry, equal
/// to one built alone, with no temporaries.
#[test]
fn processes_racing_to_index_one_layer_leave_one_correct_entry() {
    for name in ["debian-zstd", "debian-gzip-multimember"] {
        let layout = layout(name);
        let solo = tempfile::tempdir().unwrap();
        let reference = ls_lr(solo.path(), &layout);
        let cache_dir = tempfile::tempdir().unwrap();
        let cache = cache_dir.path();
        let children: Vec<Child> = (0..4)
            .map(|_| {
                Command::new(BIN)
                    .arg("--cache")
                    .arg(cache)
                    .args(["ls", "-lR", layout.to_str().unwrap()])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(String::from_utf8_lossy(&out.stdout), reference);
        }
        assert_no_temporaries(cache);
        for e in std::fs::read_dir(cache.join("layers/sha256")).unwrap() {
            let dir = e.unwrap().path();
            let mut names: Vec<String> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            assert_eq!(
                names,
                [
                    "atimes", "data", "epoch", "evicting", "index", "inuse", "lock", "spans",
                    "used"
                ],
                "{}",
                dir.display()
            );
            let theirs = solo.path().join(dir.strip_prefix(cache).unwrap());
            assert!(
                std::fs::read(dir.join("index")).unwrap()
                    == std::fs::read(theirs.join("index")).unwrap(),
                "{}: the index differs from one built alone",
                dir.display()
            );
        }
        assert_cache_consistent(cache, &layout);
    }
}

/// The library's own lock: threads of one process racing on one layer.
#[test]
fn threads_racing_to_index_one_layer_build_it_once() {
    let layout = layout("debian-gzip");
    let cache_dir = tempfile::tempdir().unwrap();
    let image = Image::open(
        &ImageRef::parse(layout.to_str().unwrap()).unwrap(),
        None,
        &Default::default(),
    )
    .unwrap();
    let cache = ocimount::cache::Cache::locate(Some(cache_dir.path())).unwrap();
    let layer = image.layers.iter().max_by_key(|l| l.size).unwrap().clone();
    let blob = image.store.blob(&layer.digest, Some(layer.size)).unwrap();
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|_| {
                s.spawn(|| {
                    let bar = indicatif::ProgressBar::hidden();
                    cache
                        .entry(&*blob, &layer, &bar, PassOptions::default())
                        .map(|e| (e.built, format::encode(&e.index)))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().unwrap())
            .collect()
    });
    assert_eq!(results.iter().filter(|(built, _)| *built).count(), 1);
    assert!(results.windows(2).all(|w| w[0].1 == w[1].1));
    assert_no_temporaries(cache_dir.path());
}

// ------------------------------------------------------------------ a full disk

/// A small filesystem mounted for the test, unmounted on drop.
struct SmallFs {
    dir: tempfile::TempDir,
    _image: Option<tempfile::NamedTempFile>,
}

impl SmallFs {
    fn tmpfs(size: &str) -> SmallFs {
        let dir = tempfile::tempdir().unwrap();
        let out = run_bounded(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir.path()),
            Duration::from_secs(30),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallFs { dir, _image: None }
    }

    fn ext4(mib: u64) -> SmallFs {
        let image = tempfile::NamedTempFile::new().unwrap();
        image.as_file().set_len(mib << 20).unwrap();
        let out = run_bounded(
            Command::new("mkfs.ext4")
                .args(["-q", "-F"])
                .arg(image.path()),
            Duration::from_secs(60),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dir = tempfile::tempdir().unwrap();
        let out = run_bounded(
            Command::new("mount")
                .args(["-o", "loop"])
                .arg(image.path())
                .arg(dir.path()),
            Duration::from_secs(30),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallFs {
            dir,
            _image: Some(image),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fill the filesystem up with one file; returns its path.
    fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        // Down to single bytes, so that no block is left a small span
        // could be stored in.
        for size in [64 * 1024, 4096, 1] {
            let chunk = vec![0x5au8; size];
            while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
        }
        let _ = f.sync_all();
        path
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = run_bounded(
            Command::new("umount").arg("-l").arg(self.dir.path()),
            Duration::from_secs(30),
        );
    }
}

/// A layer holding one 16 MiB file of random bytes (so no span compresses
/// away) and a small one.
fn big_random_tar() -> (Vec<u8>, Vec<u8>) {
    let mut seed = 0x0123_4567_89ab_cdefu64;
    let mut big = Vec::with_capacity(16 << 20);
    while big.len() < 16 << 20 {
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        big.extend_from_slice(&seed.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in [("big.bin", &big[..]), ("small.txt", b"small\n")] {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        builder.append_data(&mut h, name, data).unwrap();
    }
    (builder.into_inner().unwrap(), big)
}

/// One-layer layouts (zstd, gzip) of `tar` in `dir`.
fn layouts(dir: &Path, tar: &[u8]) -> (PathBuf, PathBuf) {
    let sha = |b: &[u8]| -> [u8; 32] {
        use sha2::Digest as _;
        sha2::Sha256::digest(b).into()
    };
    let write = |name: &str, blob: Vec<u8>, media_type: &str| -> PathBuf {
        let root = dir.join(name);
        let blobs = root.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        let put = |bytes: &[u8]| -> String {
            let hex: String = sha(bytes).iter().map(|b| format!("{b:02x}")).collect();
            std::fs::write(blobs.join(&hex), bytes).unwrap();
            format!("sha256:{hex}")
        };
        let diff_id: String = sha(tar).iter().map(|b| format!("{b:02x}")).collect();
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
            "os": "linux",
            "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{diff_id}")] },
        }))
        .unwrap();
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(&config), "size": config.len() },
            "layers": [{ "mediaType": media_type, "digest": put(&blob), "size": blob.len() }],
        }))
        .unwrap();
        let index = serde_json::json!({ "schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": put(&manifest), "size": manifest.len(),
        }]});
        std::fs::write(root.join("index.json"), index.to_string()).unwrap();
        std::fs::write(root.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        root
    };
    let zstd = write(
        "zstd",
        zstd::stream::encode_all(tar, 3).unwrap(),
        "application/vnd.oci.image.layer.v1.tar+zstd",
    );
    let gzip = {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(tar).unwrap();
        write(
            "gzip",
            enc.finish().unwrap(),
            "application/vnd.oci.image.layer.v1.tar+gzip",
        )
    };
    (zstd, gzip)
}

fn assert_clean_failure(out: &std::process::Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected exit 1 (not a signal): {stderr}"
    );
    // The last line is ours (a log line about a damaged span may precede it).
    assert!(
        stderr
            .lines()
            .last()
            .unwrap_or("")
            .starts_with("ocimount: error: "),
        "{stderr}"
    );
    for n in needles {
        assert!(stderr.contains(n), "stderr lacks {n:?}: {stderr}");
    }
}

/// Indexing a single-frame zstd layer (decoded into the cache during the
/// pass) onto a cache too small for it: exit 1 naming the layer, the data
/// file and ENOSPC; nothing left behind; on tmpfs and on ext4.
#[test]
fn a_full_cache_disk_while_indexing_is_a_clear_error() {
    let work = tempfile::tempdir().unwrap();
    let (tar, _) = big_random_tar();
    let (zstd, _) = layouts(work.path(), &tar);
    for fs in [SmallFs::tmpfs("4m"), SmallFs::ext4(8)] {
        let cache = fs.path().join("cache");
        for _ in 0..2 {
            let out = ocimount(&cache, &["ls", zstd.to_str().unwrap()]);
            assert_clean_failure(
                &out,
                &[
                    "entry \"big.bin\": reading the entry's data: cannot write the cache's data file: No space left on device",
                ],
            );
            assert_no_temporaries(&cache);
        }
    }
}

/// A cache that fills up under a mount: reads that need a new span fail
/// with EIO (no SIGBUS, the daemon stays up), `cat` fails with a clear
/// error, and once space is freed the same reads give the right bytes.
#[test]
fn a_full_cache_disk_under_a_mount_serves_from_memory_then_stores_again() {
    let work = tempfile::tempdir().unwrap();
    let (tar, big) = big_random_tar();
    let (_, gzip) = layouts(work.path(), &tar);
    for fs in [SmallFs::tmpfs("24m"), SmallFs::ext4(32)] {
        let cache = fs.path().join("cache");
        let m = Mounted::new(&cache, gzip.to_str().unwrap(), &[]);
        let pid = m.daemon_pid();
        // Spans stored while indexing (blocks past the span cap) stay.
        let (_, stored) = assert_cache_consistent(&cache, &gzip);
        let stored_bytes = stored_span_bytes(&cache, &gzip);
        let filler = fs.fill();
        // Nothing more can be stored: spans are decoded into memory and served.
        assert!(std::fs::read(m.path().join("big.bin")).unwrap() == big);
        let out = ocimount(&cache, &["cat", gzip.to_str().unwrap(), "/big.bin"]);
        assert!(out.status.success() && out.stdout == big);
        // No new block could be written; a span lying within blocks that
        // were written already (the 78-byte tail after the last stored
        // span, which decode-ahead may reach) can be stored.
        let (_, present) = assert_cache_consistent(&cache, &gzip);
        let grew = stored_span_bytes(&cache, &gzip) - stored_bytes;
        assert!(
            grew < 4096,
            "{} spans ({grew} bytes) stored on a full disk",
            present - stored
        );
        // Some spans were not stored before: those were served from memory.
        let info: serde_json::Value = serde_json::from_slice(
            &ocimount(&cache, &["inspect", "--json", gzip.to_str().unwrap()]).stdout,
        )
        .unwrap();
        let spans: u64 = info["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["spans"].as_u64().unwrap())
            .sum();
        assert!(
            spans > stored as u64,
            "every span was stored while indexing"
        );
        assert!(
            support::process_alive(pid),
            "the daemon died on a full disk"
        );
        std::fs::remove_file(filler).unwrap();
        assert!(std::fs::read(m.path().join("big.bin")).unwrap() == big);
        assert_eq!(
            std::fs::read(m.path().join("small.txt")).unwrap(),
            b"small\n"
        );
        let out = ocimount(&cache, &["cat", gzip.to_str().unwrap(), "/big.bin"]);
        assert!(out.status.success() && out.stdout == big);
    }
}
