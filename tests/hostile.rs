//! Hostile images: decompression bombs, tar headers crafted to desync or
//! exhaust a reader, link tricks, paths that try to leave the image, and
//! metadata that tries to loop or eat memory. Each case asserts its exact
//! outcome: the whole error line, or the exact tree. Commands run through
//! the binary with a time limit, and where memory is the point, with their
//! peak RSS measured.
//!
//! Cases already covered elsewhere are not repeated here: missing blobs,
//! digest and size mismatches, truncated streams, garbage JSON, `..`, bare
//! `.wh.` and damaged caches (tests/bad_input.rs); the public hostile tar
//! fixtures (tests/public_fixtures.rs); union rules at the library level
//! (tests/union_cases.rs). Public fixtures are read from tests/fixtures
//! (see its ATTRIBUTION.md), the rest is generated here.

mod common;
mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use sha2::{Digest as _, Sha256};

// ------------------------------------------------------------------ tar bytes

/// One header block, ustar, with octal fields; `seal` sets its checksum.
fn header(name: &[u8], kind: u8, size: u64, link: &[u8]) -> [u8; 512] {
    let mut h = [0u8; 512];
    assert!(name.len() <= 100 && link.len() <= 100);
    h[..name.len()].copy_from_slice(name);
    octal(&mut h[100..108], 0o644);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], 1_700_000_000);
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h
}

fn octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let text = format!("{value:0width$o}");
    assert_eq!(text.len(), width, "{value} does not fit the field");
    field[..width].copy_from_slice(text.as_bytes());
    field[width] = 0;
}

/// GNU base-256: the top bit set, then the two's complement value.
fn base256(field: &mut [u8], value: i64) {
    let bytes = value.to_be_bytes();
    let fill = if value < 0 { 0xff } else { 0 };
    let n = field.len();
    field.fill(fill);
    field[n - 8..].copy_from_slice(&bytes);
    field[0] |= 0x80;
}

fn seal(h: &mut [u8; 512]) {
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

/// A tar written block by block, with no checks.
#[derive(Default, Clone)]
struct Tar(Vec<u8>);

impl Tar {
    /// Append a header (sealed here) and `data`, padded to a block.
    fn raw(mut self, mut h: [u8; 512], data: &[u8]) -> Self {
        seal(&mut h);
        self.0.extend_from_slice(&h);
        self.data(data)
    }

    fn data(mut self, data: &[u8]) -> Self {
        self.0.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.0.resize(self.0.len() + pad, 0);
        self
    }

    fn with(
        self,
        name: &str,
        kind: u8,
        size: u64,
        link: &str,
        f: impl FnOnce(&mut [u8; 512]),
    ) -> Self {
        let mut h = header(name.as_bytes(), kind, size, link.as_bytes());
        f(&mut h);
        self.raw(h, &[])
    }

    fn file(self, name: &str, data: &[u8]) -> Self {
        self.raw(header(name.as_bytes(), b'0', data.len() as u64, b""), data)
    }

    fn dir(self, name: &str) -> Self {
        let mut h = header(name.as_bytes(), b'5', 0, b"");
        octal(&mut h[100..108], 0o755);
        self.raw(h, &[])
    }

    fn symlink(self, name: &str, target: &str) -> Self {
        let mut h = header(name.as_bytes(), b'2', 0, target.as_bytes());
        octal(&mut h[100..108], 0o777);
        self.raw(h, &[])
    }

    fn hardlink(self, name: &str, target: &str) -> Self {
        self.raw(header(name.as_bytes(), b'1', 0, target.as_bytes()), &[])
    }

    /// A PAX `x` (or `g`) header with these records.
    fn pax_kind(self, kind: u8, records: &[(&str, &[u8])]) -> Self {
        let mut body = Vec::new();
        for (key, value) in records {
            let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
            let mut len = rest + 1;
            while format!("{len}").len() + rest != len {
                len += 1;
            }
            body.extend_from_slice(format!("{len} {key}=").as_bytes());
            body.extend_from_slice(value);
            body.push(b'\n');
        }
        self.raw(header(b"PaxHeaders/x", kind, body.len() as u64, b""), &body)
    }

    fn pax(self, records: &[(&str, &[u8])]) -> Self {
        self.pax_kind(b'x', records)
    }

    /// A GNU `L` (long name) or `K` (long link) header.
    fn gnu_long(self, kind: u8, value: &[u8]) -> Self {
        let mut h = header(b"././@LongLink", kind, value.len() as u64 + 1, b"");
        h[257..265].copy_from_slice(b"ustar  \0");
        self.raw(h, &[value, b"\0"].concat())
    }

    fn finish(mut self) -> Vec<u8> {
        self.0.resize(self.0.len() + 1024, 0);
        self.0
    }
}

// ------------------------------------------------------------------ images

/// A layout in a temporary directory, with its own cache.
struct Img {
    _tmp: tempfile::TempDir,
    layout: PathBuf,
    cache: PathBuf,
    digests: Vec<String>,
}

impl Img {
    fn new(layers: &[LayerSpec]) -> Img {
        let tmp = tempfile::tempdir().unwrap();
        let layout = build_layout(tmp.path(), layers);
        let cache = tmp.path().join("cache");
        Img {
            _tmp: tmp,
            layout,
            cache,
            digests: layers.iter().map(|l| digest_of(&l.0)).collect(),
        }
    }

    fn plain(tar: Vec<u8>) -> Img {
        Img::new(&[plain_layer(&tar)])
    }

    fn image(&self) -> String {
        self.layout.display().to_string()
    }

    fn run(&self, sub: &str, extra: &[&str]) -> Run {
        let image = self.image();
        let mut args = vec![sub, image.as_str()];
        args.extend_from_slice(extra);
        ocimount(&self.cache, &args)
    }

    fn ls_lr(&self) -> String {
        self.run("ls", &["-lR"]).ok()
    }

    fn cat(&self, path: &str) -> Vec<u8> {
        self.run("cat", &[path]).success().to_vec()
    }

    /// `ls`, `export` and `cat` all fail with exactly this error line
    /// (after `ocimount: error: `), twice: nothing half-built is trusted.
    fn refused(&self, message: &str) {
        let want = format!("ocimount: error: {message}\n");
        for sub in ["ls", "ls", "export", "cat"] {
            let extra: &[&str] = match sub {
                "export" => &["-o", "-"],
                "cat" => &["/x"],
                _ => &[],
            };
            let run = self.run(sub, extra);
            run.fails_with(&[]);
            assert_eq!(run.stderr, want, "ocimount {sub}");
        }
    }

    /// The error for entry `path` of layer `layer`.
    fn entry_error(&self, layer: usize, path: &str, reason: &str) -> String {
        format!(
            "layer {layer} ({}): entry {path:?}: {reason}",
            self.digests[layer]
        )
    }

    fn layer_error(&self, layer: usize, reason: &str) -> String {
        format!("layer {layer} ({}): {reason}", self.digests[layer])
    }
}

fn lines(text: &[&str]) -> String {
    text.iter().map(|l| format!("{l}\n")).collect()
}

const T: &str = "2023-11-14 22:13";

// ------------------------------------------------------------------ peak memory

/// Run `ocimount --cache CACHE ARGS` with its data segment (heap and
/// anonymous memory, thread stacks included) capped at `limit_mib`, so
/// buffering a bomb makes it fail; returns it with its peak RSS in MiB
/// as last seen in /proc (polled: the kernel's own `ru_maxrss` for a
/// child also counts the test process it was forked from).
fn run_limited(cache: &Path, args: &[&str], limit_mib: u64) -> (Run, u64) {
    run_limited_to(cache, args, limit_mib, |mut out| {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut out, &mut v);
        v
    })
}

/// `run_limited`, with stdout given to `stdout` as it comes (to check a
/// long output without holding it); what that returns is the run's stdout.
fn run_limited_to(
    cache: &Path,
    args: &[&str],
    limit_mib: u64,
    stdout: impl FnOnce(std::process::ChildStdout) -> Vec<u8> + Send + 'static,
) -> (Run, u64) {
    use std::os::unix::process::CommandExt;
    let limit = limit_mib << 20;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ocimount"));
    cmd.arg("--cache")
        .arg(cache)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            let rlim = libc::rlimit {
                rlim_cur: limit as libc::rlim_t,
                rlim_max: limit as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_DATA, &rlim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_thread = std::thread::spawn(move || stdout(out));
    let err_thread = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut err, &mut v);
        v
    });
    let status_path = format!("/proc/{}/status", child.id());
    let started = Instant::now();
    let mut peak_kib = 0u64;
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(&status_path) {
            if let Some(kib) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok())
            {
                peak_kib = peak_kib.max(kib);
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ocimount {args:?} did not finish within {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let run = Run {
        code: status.code(),
        stdout: out_thread.join().unwrap(),
        stderr: String::from_utf8_lossy(&err_thread.join().unwrap()).into_owned(),
    };
    (run, peak_kib / 1024)
}

/// Indexing a bomb runs under this cap (an ordinary layer needs ~10 MiB).
const BOMB_LIMIT_MIB: u64 = 128;

fn bomb_run(img: &Img, args: &[&str], what: &str) -> Run {
    let mut all = args.to_vec();
    let image = img.image();
    all.push(&image);
    let (run, peak) = run_limited(&img.cache, &all, BOMB_LIMIT_MIB);
    eprintln!("{what}: peak RSS about {peak} MiB");
    assert_no_panic(&run);
    run
}

/// `n` gzip members of 1 MiB of zeros each: `n` MiB from about `n` KiB.
fn gzip_zeros(n: usize) -> Vec<u8> {
    let member = {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&vec![0u8; 1 << 20]).unwrap();
        enc.finish().unwrap()
    };
    member.repeat(n)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// `n` zstd frames of 1 MiB of zeros each.
fn zstd_zeros(n: usize) -> Vec<u8> {
    zstd::stream::encode_all(&vec![0u8; 1 << 20][..], 19)
        .unwrap()
        .repeat(n)
}

/// A bomb layer: `head` (a tar prefix), then `mib` MiB of zeros, all
/// compressed; the diff_id is of the whole stream plus two end blocks.
fn bomb_layer(head: &[u8], mib: usize, media_type: &'static str) -> LayerSpec {
    let mut hasher = Sha256::new();
    hasher.update(head);
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..mib {
        hasher.update(&zeros);
    }
    let zstd = media_type == OCI_LAYER_ZSTD;
    let mut blob = if zstd {
        zstd::stream::encode_all(head, 3).unwrap()
    } else {
        gzip(head)
    };
    blob.extend(if zstd {
        zstd_zeros(mib)
    } else {
        gzip_zeros(mib)
    });
    (blob, media_type, hasher.finalize().into())
}

// ================================================================== bombs

/// A PAX header declaring 4 GiB, whose data a gzip bomb really provides:
/// refused at the header, before a byte of it is buffered.
#[test]
fn gzip_bomb_pax_header_of_4_gib_is_refused_unread() {
    let head = Tar::default()
        .raw(header(b"PaxHeaders/big", b'x', 4 << 30, b""), &[])
        .0;
    let img = Img::new(&[bomb_layer(&head, 4096, OCI_LAYER_GZIP)]);
    let run = bomb_run(&img, &["ls"], "4 GiB PAX header");
    run.fails_with(&[]);
    assert_eq!(
        run.stderr,
        format!(
            "ocimount: error: {}\n",
            img.entry_error(
                0,
                "PaxHeaders/big",
                "a 'x' extension header of 4294967296 bytes is larger than the 1048576-byte limit"
            )
        )
    );
}

/// The same with a GNU long name from a zstd bomb.
#[test]
fn zstd_bomb_gnu_long_name_of_4_gib_is_refused_unread() {
    let mut h = header(b"././@LongLink", b'L', 4 << 30, b"");
    h[257..265].copy_from_slice(b"ustar  \0");
    let head = Tar::default().raw(h, &[]).0;
    let img = Img::new(&[bomb_layer(&head, 4096, OCI_LAYER_ZSTD)]);
    let run = bomb_run(&img, &["ls"], "4 GiB GNU long name");
    run.fails_with(&[]);
    assert_eq!(
        run.stderr,
        format!(
            "ocimount: error: {}\n",
            img.entry_error(
                0,
                "././@LongLink",
                "a 'L' extension header of 4294967296 bytes is larger than the 1048576-byte limit"
            )
        )
    );
}

/// A global PAX header and a GNU long link of 2 GiB: refused alike.
#[test]
fn huge_global_pax_header_and_gnu_long_link_are_refused() {
    for (kind, name) in [(b'g', &b"pax_global_header"[..]), (b'K', b"././@LongLink")] {
        let head = Tar::default().raw(header(name, kind, 2 << 30, b""), &[]).0;
        let img = Img::new(&[bomb_layer(&head, 64, OCI_LAYER_GZIP)]);
        img.refused(&img.entry_error(
            0,
            std::str::from_utf8(name).unwrap(),
            &format!(
                "a '{}' extension header of 2147483648 bytes is larger than the 1048576-byte limit",
                char::from(kind)
            ),
        ));
    }
}

/// libarchive's 4 GiB global header in a 2 KiB file.
#[test]
fn libarchive_pax_g_large_is_refused() {
    let img = Img::plain(read_fixture(
        "libarchive/decoded/libarchive/test/test_read_format_tar_pax_g_large.tar",
    ));
    img.refused(&img.entry_error(
        0,
        "empty",
        "a 'g' extension header of 4294967296 bytes is larger than the 1048576-byte limit",
    ));
}

/// A 256 MiB file of zeros from a ~256 KiB gzip blob is fine: it is
/// streamed through the indexer, not held, and reads back exactly.
#[test]
fn gzip_bomb_file_of_256_mib_is_streamed_in_bounded_memory() {
    let mib = 256;
    let head = Tar::default()
        .raw(header(b"zeros", b'0', (mib as u64) << 20, b""), &[])
        .0;
    let mut layer = bomb_layer(&head, mib, OCI_LAYER_GZIP);
    // The two end-of-archive blocks, in a member of their own.
    layer.0.extend(gzip(&[0u8; 1024]));
    let mut hasher = Sha256::new();
    hasher.update(&head);
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..mib {
        hasher.update(&zeros);
    }
    hasher.update([0u8; 1024]);
    layer.2 = hasher.finalize().into();
    assert!(layer.0.len() < 1 << 20, "{} bytes", layer.0.len());
    let img = Img::new(&[layer]);
    let run = bomb_run(&img, &["ls", "-l"], "256 MiB gzip file");
    assert_eq!(
        run.ok(),
        lines(&[&format!("-rw-r--r--   1     0     0  268435456 {T} zeros")])
    );
    let out = img.cat("/zeros");
    assert_eq!(out.len(), mib << 20);
    assert!(out.iter().all(|&b| b == 0));
}

/// A single-frame zstd bomb is decoded into the cache's data file during
/// the pass (no checkpoint can exist inside one frame), in bounded memory.
#[test]
fn zstd_single_frame_bomb_is_materialised_in_bounded_memory() {
    let mib = 128;
    let mut tar = Tar::default()
        .raw(header(b"zeros", b'0', (mib as u64) << 20, b""), &[])
        .0;
    tar.resize(tar.len() + (mib << 20) + 1024, 0);
    let img = Img::new(&[zstd_layer(&tar)]);
    let run = bomb_run(&img, &["ls", "-l"], "128 MiB zstd frame");
    assert_eq!(
        run.ok(),
        lines(&[&format!("-rw-r--r--   1     0     0  134217728 {T} zeros")])
    );
    assert_eq!(img.cat("/zeros").len(), mib << 20);
}

/// A gzip member of ONE fixed-Huffman deflate block, written by hand. zlib
/// ends a block every 16K symbols or so, but the format does not, and no
/// checkpoint can be taken inside a block: runs are (258, distance 1)
/// matches, 13 bits for 258 bytes, so 512 MiB fit in 3.4 MB.
struct OneBlock {
    out: Vec<u8>,
    bits: u64,
    nbits: u32,
    last: Option<u8>,
    crc: flate2::Crc,
    sha: Sha256,
}

impl OneBlock {
    fn new() -> OneBlock {
        let mut b = OneBlock {
            // ID1 ID2 CM=deflate FLG=0 MTIME=0 XFL=0 OS=unknown
            out: vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255],
            bits: 0,
            nbits: 0,
            last: None,
            crc: flate2::Crc::new(),
            sha: Sha256::new(),
        };
        b.put(1, 1); // BFINAL
        b.put(1, 2); // BTYPE=01, fixed Huffman codes
        b
    }

    fn put(&mut self, value: u32, n: u32) {
        self.bits |= u64::from(value) << self.nbits;
        self.nbits += n;
        while self.nbits >= 8 {
            self.out.push(self.bits as u8);
            self.bits >>= 8;
            self.nbits -= 8;
        }
    }

    /// Huffman codes are packed from their most significant bit.
    fn code(&mut self, code: u32, len: u32) {
        self.put(code.reverse_bits() >> (32 - len), len);
    }

    fn literal_code(&mut self, b: u8) {
        match b {
            0..=143 => self.code(0x30 + u32::from(b), 8),
            _ => self.code(0x190 + u32::from(b - 144), 9),
        }
    }

    fn hash(&mut self, bytes: &[u8]) {
        self.crc.update(bytes);
        self.sha.update(bytes);
    }

    fn literal(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.literal_code(b);
        }
        self.hash(bytes);
        self.last = bytes.last().copied().or(self.last);
    }

    /// `n` zero bytes.
    fn zeros(&mut self, mut n: u64) {
        if n > 0 && self.last != Some(0) {
            self.literal(&[0]);
            n -= 1;
        }
        let zeros = vec![0u8; 1 << 20];
        let mut left = n;
        while left > 0 {
            let k = left.min(zeros.len() as u64) as usize;
            self.hash(&zeros[..k]);
            left -= k as u64;
        }
        for _ in 0..n / 258 {
            self.code(0b1100_0101, 8); // length symbol 285: 258 bytes
            self.code(0, 5); // distance code 0: 1 byte back
        }
        for _ in 0..n % 258 {
            self.literal_code(0);
        }
    }

    /// The gzip member and the sha256 of what it holds.
    fn finish(mut self) -> (Vec<u8>, [u8; 32]) {
        self.code(0, 7); // end of block
        if self.nbits > 0 {
            self.out.push(self.bits as u8);
        }
        self.out.extend(self.crc.sum().to_le_bytes());
        self.out.extend(self.crc.amount().to_le_bytes());
        (self.out, self.sha.finalize().into())
    }
}

/// Size of `/big` in the single-block layer, and where in it the marker is.
const BLOCK_FILE: u64 = 512 << 20;
const MARK_AT: u64 = (400 << 20) + 12345;
const MARK: &[u8] = b"deep inside the block";

/// A tar of `/small` ("hello\n") and `/big` (512 MiB of zeros with `MARK`
/// at `MARK_AT`) as one gzip member of one deflate block.
fn single_block_layer() -> LayerSpec {
    let head = Tar::default()
        .file("small", b"hello\n")
        .raw(header(b"big", b'0', BLOCK_FILE, b""), &[])
        .0;
    let mut block = OneBlock::new();
    block.literal(&head);
    block.zeros(MARK_AT);
    block.literal(MARK);
    block.zeros(BLOCK_FILE - MARK_AT - MARK.len() as u64 + 1024);
    let (blob, diff_id) = block.finish();
    (blob, OCI_LAYER_GZIP, diff_id)
}

/// Read `/big` of the single-block layer under the bomb cap, checking its
/// bytes as they stream past; returns the peak RSS in MiB.
fn cat_single_block_big(img: &Img) -> u64 {
    let image = img.image();
    let (run, peak) = run_limited_to(
        &img.cache,
        &["cat", &image, "/big"],
        BOMB_LIMIT_MIB,
        |mut out| {
            let mut buf = vec![0u8; 1 << 20];
            let mut at = 0u64;
            loop {
                let n = std::io::Read::read(&mut out, &mut buf).unwrap();
                if n == 0 {
                    break;
                }
                for (i, &b) in buf[..n].iter().enumerate() {
                    let pos = at + i as u64;
                    let want = match pos.checked_sub(MARK_AT) {
                        Some(k) if k < MARK.len() as u64 => MARK[k as usize],
                        _ => 0,
                    };
                    assert_eq!(b, want, "byte {pos} of /big");
                }
                at += n as u64;
            }
            assert_eq!(at, BLOCK_FILE, "length of /big");
            Vec::new()
        },
    );
    assert_no_panic(&run);
    run.success();
    peak
}

/// Issue 11: one deflate block of 512 MiB in a 3.4 MB layer. No checkpoint
/// exists inside it, so the span from the one before it would be 512 MiB,
/// decoded whole to read 6 bytes. The span is cut at `MAX_SPAN_BYTES` and
/// the rest of the block is written to the data file while indexing, so
/// every read runs in bounded memory.
#[test]
fn gzip_single_block_of_512_mib_is_read_in_bounded_memory() {
    use ocimount::layer::spans::{SpanStart, MAX_SPAN_BYTES};
    use std::os::unix::fs::MetadataExt;
    let layer = single_block_layer();
    assert!(layer.0.len() < 4 << 20, "{} bytes", layer.0.len());
    let img = Img::new(&[layer]);
    let image = img.image();
    for pass in ["indexing", "cached"] {
        let (run, peak) = run_limited(&img.cache, &["cat", &image, "/small"], BOMB_LIMIT_MIB);
        eprintln!("cat /small from one 512 MiB block, {pass}: peak RSS about {peak} MiB");
        assert_no_panic(&run);
        assert_eq!(run.success(), b"hello\n");
        assert!(peak < 64, "peak RSS {peak} MiB");
    }
    let hex = img.digests[0].strip_prefix("sha256:").unwrap();
    let dir = img.cache.join("layers/sha256").join(hex);
    let digest = ocimount::Digest::parse(&img.digests[0]).unwrap();
    let index =
        ocimount::layer::format::decode(&std::fs::read(dir.join("index")).unwrap(), &digest)
            .unwrap();
    assert!(
        index.spans.iter().all(|s| s.out_len <= MAX_SPAN_BYTES),
        "a span is longer than {MAX_SPAN_BYTES} bytes"
    );
    let materialized = index
        .spans
        .iter()
        .filter(|s| matches!(s.start, SpanStart::Materialized { .. }))
        .count();
    assert!(materialized >= 500, "{materialized} materialised spans");
    // The zeros the pass wrote are holes.
    let allocated = std::fs::metadata(dir.join("data")).unwrap().blocks() * 512;
    assert!(allocated < 16 << 20, "{allocated} bytes of data allocated");

    let peak = cat_single_block_big(&img);
    eprintln!("cat /big (512 MiB) from one block: peak RSS about {peak} MiB");
    assert!(peak < 64, "peak RSS {peak} MiB");
}

/// A damaged or unflagged materialised span of that block is decoded again
/// from the checkpoint before the block, streaming: the output before the
/// span is dropped as it comes, in bounded memory.
#[test]
fn gzip_single_block_damaged_materialised_spans_are_decoded_again() {
    use ocimount::layer::spans::SpanStart;
    use std::os::unix::fs::FileExt;
    let img = Img::new(&[single_block_layer()]);
    assert_eq!(img.cat("/small"), b"hello\n");
    let hex = img.digests[0].strip_prefix("sha256:").unwrap();
    let dir = img.cache.join("layers/sha256").join(hex);
    let digest = ocimount::Digest::parse(&img.digests[0]).unwrap();
    let index =
        ocimount::layer::format::decode(&std::fs::read(dir.join("index")).unwrap(), &digest)
            .unwrap();
    let big = index.entries.iter().find(|e| e.path() == b"big").unwrap();
    let mark = big.data_offset + MARK_AT;
    let last = index.spans.len() - 1;
    assert!(matches!(
        index.spans[last].start,
        SpanStart::Materialized { .. }
    ));
    let data = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join("data"))
        .unwrap();
    data.write_all_at(b"garbage over the marker!", mark - 3)
        .unwrap();
    let spans = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("spans"))
        .unwrap();
    spans.write_all_at(&[0], last as u64).unwrap();

    let started = Instant::now();
    let peak = cat_single_block_big(&img);
    eprintln!(
        "cat /big, two spans decoded again: peak RSS about {peak} MiB, {:?}",
        started.elapsed()
    );
    assert!(peak < 64, "peak RSS {peak} MiB");
    let mut repaired = vec![0u8; MARK.len() + 6];
    data.read_exact_at(&mut repaired, mark - 3).unwrap();
    assert_eq!(&repaired[..3], &[0, 0, 0]);
    assert_eq!(&repaired[3..3 + MARK.len()], MARK);
    let mut flag = [9u8];
    std::fs::File::open(dir.join("spans"))
        .unwrap()
        .read_exact_at(&mut flag, last as u64)
        .unwrap();
    assert_eq!(flag, [1]);
}

/// scrapy's bombs (27 KB gzip and 1 KB zstd, 11 MB of HTML each) as
/// layers: decoded as a stream, refused at the first "header".
#[test]
fn scrapy_bombs_are_not_tar_and_are_refused_in_bounded_memory() {
    for (file, media_type) in [
        ("bomb-gzip.bin", OCI_LAYER_GZIP),
        ("bomb-zstd.bin", OCI_LAYER_ZSTD),
    ] {
        let blob = read_fixture(&format!("scrapy/tests/sample_data/compressed/{file}"));
        let img = Img::new(&[layer_as_is(&blob, media_type)]);
        let run = bomb_run(&img, &["ls"], file);
        run.fails_with(&[]);
        assert_eq!(
            run.stderr,
            format!(
                "ocimount: error: {}\n",
                img.entry_error(
                    0,
                    &"This is a compression bomb.\n".repeat(4)[..100],
                    "the header checksum field is not octal"
                )
            )
        );
    }
}

/// gzip inside gzip is not unwrapped twice: the inner gzip (here shorter
/// than one tar header) is just bytes.
#[test]
fn gzip_inside_gzip_is_not_a_tar() {
    let inner = gzip(&Tar::default().file("a", b"a\n").finish());
    assert!(inner.len() < 512);
    let img = Img::new(&[(gzip(&inner), OCI_LAYER_GZIP, sha256(&inner))]);
    img.refused(&img.layer_error(
        0,
        &format!(
            "unexpected EOF: the archive ends inside a header, at offset {}",
            inner.len()
        ),
    ));
}

/// libarchive's zstd input that used to loop its reader: a skippable frame
/// claiming 4 GiB, then a frame header, then nothing.
#[test]
fn zstd_skippable_frame_of_4_gib_in_12_bytes_is_a_clean_truncation() {
    let blob = read_fixture("libarchive/decoded/libarchive/test/test_read_filter_zstd_raw_loop");
    let img = Img::new(&[(blob, OCI_LAYER_ZSTD, [0u8; 32])]);
    img.refused(&img.layer_error(
        0,
        "reading a tar header: truncated zstd stream: it ends at blob offset 12 inside a frame",
    ));
}

/// Bytes after the last gzip member are an error, not ignored.
#[test]
fn garbage_after_the_gzip_stream_is_refused() {
    let tar = Tar::default().file("a", b"a\n").finish();
    let mut blob = gzip(&tar);
    let end = blob.len();
    blob.extend_from_slice(b"trailing garbage");
    let img = Img::new(&[(blob, OCI_LAYER_GZIP, sha256(&tar))]);
    img.refused(&img.layer_error(
        0,
        &format!("after the end of the archive: data after the end of the gzip stream at blob offset {end}"),
    ));
}

// ================================================================== tar headers

/// A 1 TiB file declared in base-256 with no data behind it: a clean
/// "unexpected EOF", quickly (nothing is allocated for it).
#[test]
fn terabyte_base256_size_with_no_data_is_unexpected_eof() {
    let tar = Tar::default()
        .with("big", b'0', 0, "", |h| base256(&mut h[124..136], 1 << 40))
        .finish();
    let img = Img::new(&[gzip_layer(&tar)]);
    let started = Instant::now();
    img.refused(&img.entry_error(
        0,
        "big",
        "reading the entry's data: unexpected EOF: the archive ends 1099511626752 bytes short",
    ));
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn negative_base256_size_is_refused() {
    let tar = Tar::default()
        .with("neg", b'0', 0, "", |h| base256(&mut h[124..136], -512))
        .finish();
    let img = Img::plain(tar);
    img.refused(&img.entry_error(0, "neg", "negative size -512 in the header"));
}

#[test]
fn size_overflowing_63_bits_is_refused() {
    let tar = Tar::default()
        .with("huge", b'0', 0, "", |h| {
            h[124..136].copy_from_slice(&[0x80, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0]);
        })
        .finish();
    let img = Img::plain(tar);
    img.refused(&img.entry_error(0, "huge", "bad size field in the header"));
}

#[test]
fn negative_pax_size_is_refused() {
    // libarchive's oss-fuzz 48467 archive: "size=-19769411113659727436".
    let img = Img::plain(read_fixture(
        "libarchive/decoded/libarchive/test/test_read_format_tar_invalid_pax_size.tar",
    ));
    img.refused(&img.entry_error(
        0,
        "./PaxHeaders.14463/aaa",
        "bad PAX size record \"-19769411113659727436\"",
    ));
}

#[test]
fn pax_size_overflowing_63_bits_is_refused() {
    let tar = Tar::default()
        .pax(&[("size", b"9223372036854775808")])
        .file("f", b"")
        .finish();
    let img = Img::plain(tar);
    img.refused(&img.entry_error(
        0,
        "PaxHeaders/x",
        "bad PAX size record \"9223372036854775808\"",
    ));
}

/// tokio-tar `last_pax_size_wins`: two size records, 3 then 4.
#[test]
fn last_pax_size_record_wins() {
    let tar = Tar::default()
        .pax(&[("size", b"3"), ("size", b"4")])
        .raw(header(b"f", b'0', 0, b""), b"abcd")
        .finish();
    let img = Img::plain(tar);
    assert_eq!(
        img.ls_lr(),
        lines(&[&format!("-rw-r--r--   1     0     0          4 {T} f")])
    );
    assert_eq!(img.cat("/f"), b"abcd");
}

/// Negative and far-future times are kept, shown and exported, never a panic.
#[test]
fn negative_and_huge_mtimes_are_kept() {
    let tar = Tar::default()
        .with("old", b'0', 0, "", |h| {
            base256(&mut h[136..148], -86_400 * 365)
        })
        .with("max", b'0', 0, "", |h| base256(&mut h[136..148], i64::MAX))
        .with("min", b'0', 0, "", |h| base256(&mut h[136..148], i64::MIN))
        .pax(&[("mtime", b"-1.25")])
        .file("frac", b"")
        .finish();
    let img = Img::plain(tar);
    assert_eq!(
        img.ls_lr(),
        lines(&[
            "-rw-r--r--   1     0     0          0 1969-12-31 23:59 frac",
            "-rw-r--r--   1     0     0          0 292277026596-12-04 15:30 max",
            "-rw-r--r--   1     0     0          0 -292277022657-01-27 08:29 min",
            "-rw-r--r--   1     0     0          0 1969-01-01 00:00 old",
        ])
    );
    let exported = img.run("export", &["-o", "-"]).success().to_vec();
    let mut archive = tar::Archive::new(&exported[..]);
    let mut times = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let pax_mtime = entry.pax_extensions().unwrap().and_then(|exts| {
            exts.flatten()
                .find(|e| e.key_bytes() == b"mtime")
                .map(|e| String::from_utf8_lossy(e.value_bytes()).into_owned())
        });
        times.push((name, pax_mtime));
    }
    assert!(
        times.contains(&("frac".to_string(), Some("-1.250000000".to_string()))),
        "{times:?}"
    );
    assert!(
        times.contains(&("old".to_string(), Some("-31536000.000000000".to_string()))),
        "{times:?}"
    );
}

#[test]
fn pax_mtime_overflowing_64_bits_is_refused() {
    let tar = Tar::default()
        .pax(&[("mtime", b"99999999999999999999.5")])
        .file("f", b"")
        .finish();
    let img = Img::plain(tar);
    img.refused(&img.entry_error(0, "PaxHeaders/x", "bad PAX mtime record"));
}

#[test]
fn uid_beyond_32_bits_is_refused() {
    let tar = Tar::default()
        .with("f", b'0', 0, "", |h| base256(&mut h[108..116], 1 << 33))
        .finish();
    let img = Img::plain(tar);
    img.refused(&img.entry_error(0, "f", "uid 8589934592 does not fit in 32 bits"));
}

/// libarchive's `V` header with a negative size used to loop forever.
#[test]
fn libarchive_volume_header_with_negative_size_is_refused() {
    let tar =
        read_fixture("libarchive/decoded/libarchive/test/test_read_format_tar_V_negative_size.tar");
    let img = Img::plain(tar);
    img.refused(&img.entry_error(
        0,
        "",
        "header checksum mismatch: the header says 0, its bytes sum to 26400",
    ));
}

/// Numeric fields with leading NULs read as Go reads them (libarchive's
/// timestamp-overflow archive; its first entry is `tmp/f.txt`).
#[test]
fn libarchive_timestamp_overflow_lists_its_file() {
    let img = Img::plain(read_fixture(
        "libarchive/decoded/libarchive/test/test_read_format_tar_timestamp_overflow.tar",
    ));
    assert_eq!(
        img.ls_lr(),
        lines(&[
            "drwxr-xr-x   2     0     0          0 1970-01-01 00:00 tmp",
            "----rw-r--   1     0     0         14 2026-03-15 14:41 tmp/f.txt",
        ])
    );
}

#[test]
fn libarchive_malformed_pax_acl_is_refused() {
    let img = Img::plain(read_fixture(
        "libarchive/decoded/libarchive/test/test_read_format_tar_acl_oob_read.tar",
    ));
    img.refused(&img.entry_error(0, "PaxHeader/file", "malformed PAX record"));
}

/// A layer of only a global PAX header: an empty layer.
#[test]
fn libarchive_global_header_only_is_an_empty_layer() {
    let img = Img::plain(read_fixture(
        "libarchive/decoded/libarchive/test/test_read_format_tar_empty_pax.tar",
    ));
    assert_eq!(img.ls_lr(), "");
}

#[test]
fn redundant_gnu_long_names_are_refused() {
    let img = Img::plain(read_fixture(
        "libarchive/decoded/libarchive/test/test_read_format_gtar_redundant_L.tar",
    ));
    img.refused(&img.entry_error(
        0,
        "././@LongLink",
        "two GNU long name headers for one member",
    ));
}

/// tokio-tar `pax_path_and_gnu_longname_are_rejected`: which name wins
/// differs between readers, so neither is trusted.
#[test]
fn pax_path_and_gnu_long_name_together_are_refused() {
    let tar = Tar::default()
        .pax(&[("path", b"from-pax")])
        .gnu_long(b'L', b"from-gnu")
        .file("short", b"")
        .finish();
    let img = Img::plain(tar);
    img.refused(&img.entry_error(
        0,
        "short",
        "the member has both a PAX path and a GNU long name",
    ));
}

#[test]
fn two_pax_headers_for_one_member_are_refused() {
    let tar = Tar::default()
        .pax(&[("path", b"one")])
        .pax(&[("path", b"two")])
        .file("f", b"")
        .finish();
    let img = Img::plain(tar);
    img.refused(&img.entry_error(0, "PaxHeaders/x", "two PAX headers in a row for one member"));
}

/// Go's broken.tar: a GNU header carrying a ustar prefix (Go < 1.8 wrote
/// them); the long path must be found, as Go finds it.
#[test]
fn go_broken_tar_gnu_header_with_ustar_prefix_keeps_its_path() {
    let img = Img::plain(read_fixture("go-archive/testdata/broken.tar"));
    let listing = img.run("ls", &["-R"]).ok();
    assert!(
        listing.lines().any(|l| l
            == "root/.cpanm/work/1395823785.24209/Plack-1.0030/blib/man3/Plack::Middleware::LighttpdScriptNameFix.3pm"),
        "{listing}"
    );
    assert!(
        !listing.lines().any(|l| l.starts_with("Plack::")),
        "{listing}"
    );
}

/// A directory, symlink or device header with a non-zero size has no data
/// (Go, Python and GNU tar agree): the next block is the next header. A
/// reader that skipped "data" here would hide `hidden` from us while the
/// runtime extracts it.
#[test]
fn header_only_entries_with_a_size_have_no_data() {
    let tar = Tar::default()
        .with("d/", b'5', 512, "", |_| {})
        .file("hidden", b"seen\n")
        .with("l", b'2', 1024, "target", |_| {})
        .file("after", b"")
        .finish();
    let img = Img::plain(tar);
    assert_eq!(
        img.run("ls", &["-R"]).ok(),
        lines(&["after", "d", "hidden", "l"])
    );
    assert_eq!(img.cat("/hidden"), b"seen\n");
}

/// A PAX size on a directory changes nothing: a directory has no data.
#[test]
fn pax_size_on_a_directory_is_ignored() {
    let tar = Tar::default()
        .pax(&[("size", b"1024")])
        .dir("d/")
        .file("d/f", b"f\n")
        .finish();
    let img = Img::plain(tar);
    assert_eq!(img.run("ls", &["-R"]).ok(), lines(&["d", "d/f"]));
    assert_eq!(img.cat("/d/f"), b"f\n");
}

/// A V7 regular file whose name ends in `/` is a directory (Go, GNU tar).
#[test]
fn v7_regular_entry_with_trailing_slash_is_a_directory() {
    let tar = Tar::default()
        .with("old/", b'\0', 0, "", |h| h[257..265].fill(0))
        .file("old/f", b"")
        .finish();
    let img = Img::plain(tar);
    assert_eq!(
        img.ls_lr(),
        lines(&[
            &format!("drw-r--r--   2     0     0          0 {T} old"),
            &format!("-rw-r--r--   1     0     0          0 {T} old/f"),
        ])
    );
}

#[test]
fn unsupported_entry_types_are_named() {
    for (kind, shown) in [(b'D', "D"), (b'M', "M"), (b'N', "N"), (b'Z', "Z")] {
        let tar = Tar::default().with("odd", kind, 0, "", |_| {}).finish();
        let img = Img::plain(tar);
        img.refused(&img.entry_error(0, "odd", &format!("unsupported tar entry type \"{shown}\"")));
    }
}

#[test]
fn a_component_over_255_bytes_is_refused() {
    let long = "n".repeat(256);
    let tar = Tar::default()
        .pax(&[("path", long.as_bytes())])
        .file("short", b"")
        .finish();
    let img = Img::plain(tar);
    img.refused(&img.entry_error(0, &long, "a name is 256 bytes long (limit 255)"));
}

/// tar-split's "fat long link": 5 MiB files behind GNU long names.
#[test]
fn tar_split_fat_long_link_lists_its_files() {
    let blob = read_fixture("tar-split/tar/asm/testdata/fatlonglink.tar.gz");
    let img = Img::new(&[layer_as_is(&blob, OCI_LAYER_GZIP)]);
    let listing = img.run("ls", &["-R"]).ok();
    let files: Vec<&str> = listing.lines().filter(|l| l.contains("asdf.")).collect();
    assert_eq!(files.len(), 5, "{listing}");
    assert!(
        files[0].ends_with("/axcdfasdfasdfasdfasdfasdfasdfasdfasdfasdf.1"),
        "{listing}"
    );
    assert_eq!(listing.lines().count(), 22);
}

/// Paths and link targets longer than PATH_MAX. (Deep paths would also
/// make listings quadratic.)
#[test]
fn paths_and_link_targets_over_path_max_are_refused() {
    let deep = "d/".repeat(2100);
    let tar = Tar::default()
        .pax(&[("path", deep.as_bytes())])
        .dir("x")
        .finish();
    let img = Img::plain(tar);
    img.refused(&img.entry_error(0, &deep, "the path is 4199 bytes long (limit 4095)"));

    let target = "t".repeat(4096);
    let tar = Tar::default()
        .pax(&[("linkpath", target.as_bytes())])
        .symlink("l", "x")
        .finish();
    let img = Img::plain(tar);
    img.refused(&img.entry_error(0, "l", "the link target is 4096 bytes long (limit 4095)"));
}

#[test]
fn an_empty_link_target_is_refused() {
    let img = Img::plain(Tar::default().symlink("l", "").finish());
    img.refused(&img.entry_error(0, "l", "the link target is empty"));
}

#[test]
fn a_file_naming_the_root_is_refused() {
    let img = Img::plain(Tar::default().file("./", b"").finish());
    img.refused(&img.entry_error(0, "./", "an entry other than a directory names the root"));
}

/// Two archives back to back: only the first is read, as Docker and Go do.
#[test]
fn a_second_concatenated_archive_is_not_read() {
    let img = Img::plain(read_fixture(
        "libarchive/decoded/libarchive/test/test_read_format_tar_concatenated.tar",
    ));
    assert_eq!(img.run("ls", &["-R"]).ok(), lines(&["file1"]));
}

/// Data after the end-of-archive blocks (eStargz puts its TOC there) is
/// hashed for the diff_id but never becomes an entry.
#[test]
fn entries_after_the_end_of_archive_are_not_in_the_tree() {
    let mut tar = Tar::default().file("real", b"r\n").finish();
    tar.extend(Tar::default().file("ghost", b"g\n").finish());
    for img in [Img::plain(tar.clone()), Img::new(&[gzip_layer(&tar)])] {
        assert_eq!(img.run("ls", &["-R"]).ok(), lines(&["real"]));
    }
}

/// tar-split's archives with too few and too many end blocks.
#[test]
fn missing_and_extra_end_blocks_are_tolerated() {
    for name in ["notenoughnils", "extranils"] {
        let blob = read_fixture(&format!("tar-split/tar/asm/testdata/{name}.tar.gz"));
        let img = Img::new(&[layer_as_is(&blob, OCI_LAYER_GZIP)]);
        assert_eq!(
            img.ls_lr(),
            lines(&["-rw-r--r--   1  1000   100          0 2016-09-26 18:18 file"]),
            "{name}"
        );
    }
}

/// Absolute and dot-laden names (tar-rs `extracting_malicious_tarball`,
/// without its `..` ones, which refuse the whole layer) land inside.
#[test]
fn absolute_names_are_rerooted() {
    let mut tar = Tar::default();
    for (i, name) in [
        "/tmp/abs_evil.txt",
        "//tmp/abs_evil2.txt",
        "///tmp/abs_evil3.txt",
        "/./tmp/abs_evil4.txt",
        "//./tmp/abs_evil5.txt",
        "///./tmp/abs_evil6.txt",
    ]
    .iter()
    .enumerate()
    {
        tar = tar.file(name, format!("{i}").as_bytes());
    }
    let img = Img::plain(tar.finish());
    assert_eq!(
        img.run("ls", &["-R"]).ok(),
        lines(&[
            "tmp",
            "tmp/abs_evil.txt",
            "tmp/abs_evil2.txt",
            "tmp/abs_evil3.txt",
            "tmp/abs_evil4.txt",
            "tmp/abs_evil5.txt",
            "tmp/abs_evil6.txt",
        ])
    );
    assert_eq!(img.cat("/tmp/abs_evil6.txt"), b"5");
}

/// libarchive's leading-slash archive: `/foo/file` and a hardlink to it.
#[test]
fn leading_slash_names_and_their_hardlink_share_an_inode() {
    let img = Img::plain(read_fixture(
        "libarchive/decoded/tar/test/test_leading_slash.tar",
    ));
    assert_eq!(
        img.ls_lr(),
        lines(&[
            "drwxr-xr-x   2     0     0          0 1970-01-01 00:00 foo",
            "-rw-r--r--   2     0     0          4 2014-10-12 01:37 foo/file",
            "-rw-r--r--   2     0     0          4 2014-10-12 01:37 foo/hardlink",
        ])
    );
}

// ================================================================== duplicates

/// moby's tarsum collision archives: one path twice with different
/// metadata, in both orders; the last entry wins.
#[test]
fn duplicate_entries_last_one_wins() {
    let dir = "moby/daemon/builder/remotecontext/internal/tarsum/testdata/collision";
    let expected = [
        "-rw-r--r--   1  1000  1000          6 2014-09-04 20:19 file",
        "-rw-r--r--   1  1000  1000          6 2014-09-04 20:18 file",
        "-rw-r--r--   1  1000  1000          6 2014-09-04 20:19 file",
        "-rw-r--r--   1  1000  1000          6 2014-09-04 20:18 file",
    ];
    for (i, want) in expected.iter().enumerate() {
        let img = Img::plain(read_fixture(&format!("{dir}/collision-{i}.tar")));
        assert_eq!(img.ls_lr(), lines(&[want]), "collision-{i}");
    }
}

/// In one layer: a file twice (second content wins), a directory replaced
/// by a file (its subtree goes), a file replaced by a directory.
#[test]
fn duplicate_paths_of_different_kinds_in_one_layer() {
    let tar = Tar::default()
        .file("f", b"first\n")
        .file("f", b"second\n")
        .dir("d/")
        .file("d/inner", b"x")
        .file("d", b"now a file\n")
        .file("e", b"was a file\n")
        .dir("e/")
        .file("e/inner", b"y")
        .finish();
    let img = Img::plain(tar);
    assert_eq!(
        img.run("ls", &["-R"]).ok(),
        lines(&["d", "e", "e/inner", "f"])
    );
    assert_eq!(img.cat("/f"), b"second\n");
    assert_eq!(img.cat("/d"), b"now a file\n");
}

// ================================================================== links

/// A hardlink to a directory is refused, naming the link and the target.
#[test]
fn hardlink_to_a_directory_is_refused() {
    let tar = Tar::default().dir("d/").hardlink("l", "d").finish();
    let img = Img::plain(tar);
    img.refused(&img.entry_error(0, "l", "hardlink target \"d\" is a directory"));
}

/// A hardlink to itself with no earlier entry of that name: refused, not a loop.
#[test]
fn hardlink_to_itself_is_refused() {
    let img = Img::plain(Tar::default().hardlink("me", "me").finish());
    img.refused(&img.entry_error(0, "me", "hardlink target \"me\" does not exist"));
}

/// A hardlink to `/` (or to `..`, which stops at the root) names the root
/// directory: refused like any hardlink to a directory.
#[test]
fn hardlink_to_the_root_is_refused() {
    for target in ["/", "../.."] {
        let img = Img::plain(Tar::default().file("f", b"").hardlink("l", target).finish());
        img.refused(&img.entry_error(0, "l", "the hardlink target is the root directory"));
    }
}

/// Whiteouts apply before the layer's own entries, so a hardlink to a file
/// its own layer whites out has nothing to point at.
#[test]
fn hardlink_to_a_file_whited_out_in_its_own_layer_is_refused() {
    let lower = Tar::default().file("a", b"lower\n").finish();
    let upper = Tar::default()
        .file(".wh.a", b"")
        .hardlink("b", "a")
        .finish();
    let img = Img::new(&[plain_layer(&lower), plain_layer(&upper)]);
    img.refused(&img.entry_error(1, "b", "hardlink target \"a\" does not exist"));
}

/// A hardlink to a lower file keeps the content when a later layer whites
/// the original out.
#[test]
fn hardlink_across_layers_survives_a_later_whiteout_of_its_target() {
    let l0 = Tar::default().file("a", b"content\n").finish();
    let l1 = Tar::default().hardlink("b", "a").finish();
    let l2 = Tar::default().file(".wh.a", b"").finish();
    let img = Img::new(&[plain_layer(&l0), gzip_layer(&l1), zstd_layer(&l2)]);
    assert_eq!(
        img.ls_lr(),
        lines(&[&format!("-rw-r--r--   1     0     0          8 {T} b")])
    );
    assert_eq!(img.cat("/b"), b"content\n");
}

/// Chains, links to symlinks, targets through symlinked parents and with
/// `..` steps: all one inode each, resolved inside the image.
#[test]
fn hardlink_chains_and_odd_targets_resolve_inside() {
    let tar = Tar::default()
        .dir("real/")
        .file("real/f", b"data\n")
        .symlink("via", "/real")
        .hardlink("h1", "via/f")
        .hardlink("h2", "h1")
        .hardlink("h3", "../../../real/f")
        .symlink("s", "real/f")
        .hardlink("hs", "s")
        .finish();
    let img = Img::plain(tar);
    assert_eq!(
        img.ls_lr(),
        lines(&[
            &format!("-rw-r--r--   4     0     0          5 {T} h1"),
            &format!("-rw-r--r--   4     0     0          5 {T} h2"),
            &format!("-rw-r--r--   4     0     0          5 {T} h3"),
            &format!("lrwxrwxrwx   2     0     0          6 {T} hs -> real/f"),
            &format!("drwxr-xr-x   2     0     0          0 {T} real"),
            &format!("-rw-r--r--   4     0     0          5 {T} real/f"),
            &format!("lrwxrwxrwx   2     0     0          6 {T} s -> real/f"),
            &format!("lrwxrwxrwx   1     0     0          5 {T} via -> /real"),
        ])
    );
    assert_eq!(img.cat("/h3"), b"data\n");
}

/// Symlink loops and chains are listed as links; `cat` follows at most 40
/// hops inside the image, like the kernel.
#[test]
fn symlink_loops_and_long_chains_are_links_not_hangs() {
    let mut tar = Tar::default()
        .symlink("loop-a", "loop-b")
        .symlink("loop-b", "loop-a")
        .symlink("self", "self")
        .file("end", b"end\n");
    // c0 -> c1 -> ... -> c40 -> end: 41 links from c0, 40 from c1.
    for i in 0..40 {
        tar = tar.symlink(&format!("c{i}"), &format!("c{}", i + 1));
    }
    tar = tar.symlink("c40", "end");
    let img = Img::plain(tar.finish());
    let listing = img.ls_lr();
    assert!(listing.contains(&format!(
        "lrwxrwxrwx   1     0     0          6 {T} loop-a -> loop-b\n"
    )));
    assert!(listing.contains(&format!(
        "lrwxrwxrwx   1     0     0          4 {T} self -> self\n"
    )));
    for path in ["/loop-a", "/self", "/c0"] {
        img.run("cat", &[path])
            .fails_with(&[&format!("{path}: too many levels of symbolic links")]);
    }
    assert_eq!(img.cat("/c1"), b"end\n");
}

/// Entries placed under a symlink loop cannot be placed anywhere.
#[test]
fn entries_under_a_symlink_loop_are_refused() {
    let tar = Tar::default()
        .symlink("a", "b")
        .symlink("b", "a")
        .file("a/x", b"")
        .finish();
    let img = Img::plain(tar);
    img.refused(&img.entry_error(0, "a/x", "too many levels of symbolic links"));
}

/// 100,000 entries behind a 40-link chain whose every target climbs
/// `x/..` 800 times (64,000 steps an entry, hours in all): the merge stops
/// at its step budget with an error instead.
#[test]
fn symlink_chain_walk_bomb_is_cut_off() {
    let hop = |next: &str| format!("{}{next}", "x/../".repeat(800));
    let mut tar = Tar::default().dir("x/");
    for i in 0..40 {
        let next = if i == 39 {
            "x".to_string()
        } else {
            format!("c{}", i + 1)
        };
        tar = tar
            .pax(&[("linkpath", hop(&next).as_bytes())])
            .symlink(&format!("c{i}"), "placeholder");
    }
    for i in 0..100_000 {
        tar = tar.file(&format!("c0/f{i}"), b"");
    }
    let img = Img::new(&[gzip_layer(&tar.finish())]);
    let started = Instant::now();
    let run = img.run("ls", &[]);
    run.fails_with(&[
        &img.digests[0],
        "resolving the layer's paths takes too many steps",
    ]);
    eprintln!("walk bomb refused in {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(30));
}

// ================================================================== whiteouts

/// A whiteout whose parent is an absolute symlink hides the file in the
/// symlink's target; one through a symlink that climbs out of the root is
/// clamped at the root.
#[test]
fn whiteouts_through_symlinked_parents() {
    let lower = Tar::default()
        .dir("real/")
        .file("real/gone", b"")
        .file("real/kept", b"")
        .file("top", b"")
        .symlink("abs", "/real")
        .symlink("up", "../../../..")
        .finish();
    let upper = Tar::default()
        .file("abs/.wh.gone", b"")
        .file("up/.wh.top", b"")
        .finish();
    let img = Img::new(&[plain_layer(&lower), gzip_layer(&upper)]);
    assert_eq!(
        img.run("ls", &["-R"]).ok(),
        lines(&["abs", "real", "real/kept", "up"])
    );
}

/// A whiteout under a dangling symlink hides nothing, and `.wh..` (a
/// whiteout of `..`) is refused.
#[test]
fn whiteouts_under_dangling_symlinks_and_of_dotdot() {
    let lower = Tar::default()
        .file("keep", b"")
        .symlink("dangling", "/nowhere")
        .finish();
    let upper = Tar::default().file("dangling/.wh.keep", b"").finish();
    let img = Img::new(&[plain_layer(&lower), plain_layer(&upper)]);
    assert_eq!(img.run("ls", &["-R"]).ok(), lines(&["dangling", "keep"]));

    let bad = Tar::default().file("dir/.wh..", b"").finish();
    let img = Img::new(&[plain_layer(&lower), plain_layer(&bad)]);
    img.refused(&img.entry_error(
        1,
        "dir/.wh..",
        "invalid whiteout \".wh..\": it names no file",
    ));
}

// ================================================================== scale

/// Peak RSS allowed for a layer of a million entries: "under 300 MB"
/// (issue 11), whatever they are (issue 22). Files and directories measure
/// about 190 MiB, symlinks about 245: the peak is indexing, the entries (72
/// bytes and one allocation for the path and the link target) and the
/// index written from them. The union takes the entries back as it makes
/// nodes of them (64 bytes, a name and a slot in the parent's map; a
/// symlink's node keeps its entry's allocation), and the encoder the nodes
/// as it writes the flat tree.
const MILLION_ENTRIES_PEAK_MIB: u64 = 286;

/// An image of one gzip layer: 1,000 directories `dir-NNNN/`, each holding
/// 999 entries named by `child` (given the directory and the index).
fn million_entry_image(dir: &Path, child: impl Fn(usize, usize) -> [u8; 512]) -> String {
    let mut hasher = Sha256::new();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut block = |h: [u8; 512]| {
        hasher.update(h);
        enc.write_all(&h).unwrap();
    };
    for d in 0..1000 {
        let mut h = header(format!("dir-{d:04}/").as_bytes(), b'5', 0, b"");
        seal(&mut h);
        block(h);
        for f in 0..999 {
            let mut h = child(d, f);
            seal(&mut h);
            block(h);
        }
    }
    block([0u8; 512]);
    block([0u8; 512]);
    let blob = enc.finish().unwrap();
    let layout = build_layout(dir, &[(blob, OCI_LAYER_GZIP, hasher.finalize().into())]);
    layout.display().to_string()
}

/// Run each `(what, args, lines of output)` under the RSS bound.
fn assert_peaks_bounded(cache: &Path, runs: &[(&str, &[&str], usize)]) {
    for &(what, args, lines) in runs {
        let started = Instant::now();
        let (run, peak) = run_limited(cache, args, 768);
        assert_eq!(run.ok().lines().count(), lines, "{what}");
        eprintln!(
            "1M entries, {what}: peak RSS about {peak} MiB, {:?}",
            started.elapsed()
        );
        assert!(
            peak < MILLION_ENTRIES_PEAK_MIB,
            "1M entries, {what}: peak RSS {peak} MiB, limit {MILLION_ENTRIES_PEAK_MIB} MiB"
        );
    }
}

/// A layer of 1,000,000 entries (1,000 directories of 999 files): listing,
/// listing recursively and exporting work, and each peaks under
/// `MILLION_ENTRIES_PEAK_MIB` (about 250 bytes an entry: the entry list
/// plus the merged tree), indexing included.
#[test]
fn a_layer_of_a_million_entries_lists_in_bounded_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let image = million_entry_image(tmp.path(), |d, f| {
        header(
            format!("dir-{d:04}/file-{f:06}.txt").as_bytes(),
            b'0',
            0,
            b"",
        )
    });
    let cache = tmp.path().join("cache");
    assert_peaks_bounded(
        &cache,
        &[
            ("cold ls", &["ls", &image], 1000),
            ("warm ls", &["ls", &image], 1000),
            ("ls -R", &["ls", "-R", &image], 1_000_000),
            ("export", &["export", &image, "-o", "/dev/null"], 0),
        ],
    );
    let run = ocimount(&cache, &["ls", "-l", &image, "/dir-0999/file-000998.txt"]);
    assert_eq!(
        run.ok(),
        format!("-rw-r--r--   1     0     0          0 {T} /dir-0999/file-000998.txt\n")
    );
}

/// The same with directories for files (1,000 directories of 999 empty
/// ones): a directory node costs no more than a file's.
#[test]
fn a_layer_of_a_million_directories_lists_in_bounded_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let image = million_entry_image(tmp.path(), |d, f| {
        header(format!("dir-{d:04}/sub-{f:06}/").as_bytes(), b'5', 0, b"")
    });
    let cache = tmp.path().join("cache");
    assert_peaks_bounded(
        &cache,
        &[
            ("cold ls (directories)", &["ls", &image], 1000),
            ("ls -R (directories)", &["ls", "-R", &image], 1_000_000),
        ],
    );
}

/// The same with symlinks for files (1,000 directories of 999 symlinks,
/// their targets 20 to 38 bytes long, as a package's are): a target is
/// held once while the tree is built (the union's node takes over the
/// entry's allocation), so a symlink costs little more than a file (it
/// peaked near 400 MiB when the entry, the node and the flat tree each
/// held a copy).
#[test]
fn a_layer_of_a_million_symlinks_lists_in_bounded_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let target = |d: usize, f: usize| match f % 3 {
        0 => format!("../share/{f:06}/data"),
        1 => format!("../../dir-{d:04}/file-{f:06}.txt"),
        _ => format!("/usr/lib/x86_64-linux-gnu/lib{f:06}.so"),
    };
    let image = million_entry_image(tmp.path(), |d, f| {
        header(
            format!("dir-{d:04}/link-{f:06}").as_bytes(),
            b'2',
            0,
            target(d, f).as_bytes(),
        )
    });
    let cache = tmp.path().join("cache");
    assert_peaks_bounded(
        &cache,
        &[
            ("cold ls (symlinks)", &["ls", &image], 1000),
            ("ls -R (symlinks)", &["ls", "-R", &image], 1_000_000),
            (
                "export (symlinks)",
                &["export", &image, "-o", "/dev/null"],
                0,
            ),
        ],
    );
    for d in [0, 999] {
        let run = ocimount(&cache, &["ls", "-l", &image, &format!("/dir-{d:04}")]);
        let listing = run.ok();
        let lines: Vec<&str> = listing.lines().collect();
        assert_eq!(lines.len(), 999);
        for f in [0, 1, 2, 997, 998] {
            let target = target(d, f);
            assert_eq!(
                lines[f],
                format!(
                    "lrw-r--r--   1     0     0 {:>10} {T} link-{f:06} -> {target}",
                    target.len()
                )
            );
        }
    }
}

// ================================================================== metadata

/// An index listing the same nested index twice offers its manifests once;
/// it is not a loop.
#[test]
fn a_nested_index_listed_twice_is_not_a_loop() {
    let img = Img::plain(Tar::default().file("a", b"a\n").finish());
    let top = read_index(&img.layout)["manifests"][0].clone();
    let nested = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{
            "mediaType": OCI_MANIFEST, "digest": top["digest"], "size": top["size"],
            "platform": { "os": "linux", "architecture": host_arch() },
        }],
    }))
    .unwrap();
    let digest = write_blob(&img.layout, &nested);
    let desc = json!({ "mediaType": OCI_INDEX, "digest": digest, "size": nested.len() });
    let twice = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [desc.clone(), desc],
    }))
    .unwrap();
    let digest = write_blob(&img.layout, &twice);
    write_index(
        &img.layout,
        &[json!({ "mediaType": OCI_INDEX, "digest": digest, "size": twice.len() })],
    );
    assert_eq!(img.run("ls", &[]).ok(), "a\n");
}

/// JSON nested 100,000 deep where any value is allowed (a config's
/// ExposedPorts) is a parse error, not a stack overflow; in a field we
/// ignore, it is skipped.
#[test]
fn deeply_nested_json_is_a_parse_error_or_skipped() {
    let img = Img::plain(Tar::default().file("a", b"").finish());
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let original = read_index(&img.layout)["manifests"][0].clone();
    let mut top = original.clone();
    let mut manifest = read_json_blob(&img.layout, top["digest"].as_str().unwrap());
    let config = read_json_blob(&img.layout, manifest["config"]["digest"].as_str().unwrap());
    let text = serde_json::to_string(&config).unwrap();
    let nested = text.replacen(
        "\"config\":{}",
        &format!("\"config\":{{\"ExposedPorts\":{{\"80/tcp\":{deep}}}}}"),
        1,
    );
    assert_ne!(nested, text);
    let config_digest = write_blob(&img.layout, nested.as_bytes());
    manifest["config"]["digest"] = json!(config_digest);
    manifest["config"]["size"] = json!(nested.len());
    let bytes = serde_json::to_vec(&manifest).unwrap();
    top["digest"] = json!(write_blob(&img.layout, &bytes));
    top["size"] = json!(bytes.len());
    write_index(&img.layout, &[top]);
    let run = img.run("ls", &[]);
    let hex = config_digest.strip_prefix("sha256:").unwrap();
    assert!(
        run.stderr.starts_with(&format!(
            "ocimount: error: config {}/blobs/sha256/{hex}: recursion limit exceeded at line 1 column ",
            img.image()
        )),
        "{}",
        run.stderr
    );
    run.fails_with(&[]);

    let index = format!(
        "{{\"schemaVersion\":2,\"manifests\":[{}],\"x\":{deep}}}",
        serde_json::to_string(&original).unwrap()
    );
    std::fs::write(img.layout.join("index.json"), index).unwrap();
    assert_eq!(img.run("ls", &[]).ok(), "a\n");
}

/// Manifest and config descriptors claiming huge sizes are refused before
/// any read or allocation.
#[test]
fn huge_manifest_and_config_sizes_are_refused_unread() {
    let img = Img::plain(Tar::default().file("a", b"").finish());
    let mut top = read_index(&img.layout)["manifests"][0].clone();
    let manifest_digest = top["digest"].as_str().unwrap().to_string();
    top["size"] = json!(u64::MAX);
    write_index(&img.layout, &[top.clone()]);
    let hex = manifest_digest.strip_prefix("sha256:").unwrap();
    assert_eq!(
        img.run("ls", &[]).stderr,
        format!(
            "ocimount: error: manifest {}/blobs/sha256/{hex}: 18446744073709551615 bytes is larger than the 8388608-byte limit\n",
            img.image()
        )
    );

    let mut manifest = read_json_blob(&img.layout, &manifest_digest);
    let config_digest = manifest["config"]["digest"].as_str().unwrap().to_string();
    manifest["config"]["size"] = json!(9 << 20);
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let digest = write_blob(&img.layout, &bytes);
    top["digest"] = json!(digest);
    top["size"] = json!(bytes.len());
    write_index(&img.layout, &[top]);
    let hex = config_digest.strip_prefix("sha256:").unwrap();
    assert_eq!(
        img.run("ls", &[]).stderr,
        format!(
            "ocimount: error: config {}/blobs/sha256/{hex}: 9437184 bytes is larger than the 8388608-byte limit\n",
            img.image()
        )
    );
}

/// Encrypted layers (containers/image's `+encrypted`) are named, not decoded.
#[test]
fn encrypted_layer_media_type_is_refused() {
    let tar = Tar::default().file("a", b"").finish();
    let media_type = "application/vnd.oci.image.layer.v1.tar+gzip+encrypted";
    let blob = gzip(&tar);
    let img = Img::new(&[(blob.clone(), OCI_LAYER_GZIP, sha256(&tar))]);
    let mut top = read_index(&img.layout)["manifests"][0].clone();
    let mut manifest = read_json_blob(&img.layout, top["digest"].as_str().unwrap());
    manifest["layers"][0]["mediaType"] = json!(media_type);
    let bytes = serde_json::to_vec(&manifest).unwrap();
    top["digest"] = json!(write_blob(&img.layout, &bytes));
    top["size"] = json!(bytes.len());
    write_index(&img.layout, &[top]);
    assert_eq!(
        img.run("ls", &[]).stderr,
        format!(
            "ocimount: error: unsupported media type {media_type:?} for layer {}\n",
            digest_of(&blob)
        )
    );
}

// ================================================================== export

/// Build the moby/go-archive and containerd breakout shapes into an image,
/// export it, and extract the tar with GNU tar into `dest` beside a
/// `victim` directory: nothing outside `dest` changes, and no extracted
/// path leaves it.
#[test]
fn export_of_breakout_shapes_extracts_only_inside_its_target() {
    let tar = Tar::default()
        .symlink("loophole-victim", "../victim")
        .file("loophole-victim/file", b"through the link\n")
        .symlink("symlink", "loophole-victim/hello")
        .hardlink("hardlink", "loophole-victim/file")
        .dir("inner/")
        .symlink("inner/go_up", "..")
        .symlink("inner/go_up/escape", "../victim")
        .file("inner/go_up/escape/newfile", b"two hops\n")
        .symlink("dir-loophole", "../../victim")
        .file("dir-loophole/newdir/newfile", b"deep\n")
        .symlink("etc-escape", "../../../tmp/evil")
        .symlink("abs", "/etc/passwd")
        .finish();
    let img = Img::plain(tar);
    assert_eq!(
        img.run("ls", &["-R"]).ok(),
        lines(&[
            "abs",
            "dir-loophole",
            "escape",
            "etc-escape",
            "hardlink",
            "inner",
            "inner/go_up",
            "loophole-victim",
            "symlink",
            "victim",
            "victim/file",
            "victim/newdir",
            "victim/newdir/newfile",
            "victim/newfile",
        ])
    );
    let work = tempfile::tempdir().unwrap();
    let victim = work.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::write(victim.join("hello"), b"untouched\n").unwrap();
    let dest = work.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    let archive = work.path().join("out.tar");
    ok_export(&img, &archive);
    let out = support::run_bounded(
        Command::new("tar")
            .arg("-xpf")
            .arg(&archive)
            .arg("-C")
            .arg(&dest),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The victim is as it was.
    let mut victim_files: Vec<_> = std::fs::read_dir(&victim)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    victim_files.sort();
    assert_eq!(victim_files, vec![std::ffi::OsString::from("hello")]);
    assert_eq!(std::fs::read(victim.join("hello")).unwrap(), b"untouched\n");
    assert_eq!(
        std::fs::read_dir(work.path()).unwrap().count(),
        3,
        "something was created beside dest"
    );
    // What landed inside is what the image holds.
    assert_eq!(
        std::fs::read(dest.join("victim/file")).unwrap(),
        b"through the link\n"
    );
    assert_eq!(
        std::fs::read(dest.join("victim/newfile")).unwrap(),
        b"two hops\n"
    );
    assert_eq!(
        std::fs::read_link(dest.join("loophole-victim")).unwrap(),
        Path::new("../victim")
    );
    // Every name in the tar is relative and free of `..`.
    let bytes = std::fs::read(&archive).unwrap();
    for entry in tar::Archive::new(&bytes[..]).entries().unwrap() {
        let entry = entry.unwrap();
        let name = entry.path_bytes().into_owned();
        assert!(
            !name.starts_with(b"/") && !name.split(|&b| b == b'/').any(|c| c == b".."),
            "{}",
            String::from_utf8_lossy(&name)
        );
        if entry.header().entry_type() == tar::EntryType::Link {
            let target = entry.link_name_bytes().unwrap().into_owned();
            assert!(
                !target.starts_with(b"/") && !target.split(|&b| b == b'/').any(|c| c == b".."),
                "{}",
                String::from_utf8_lossy(&target)
            );
        }
    }
}

fn ok_export(img: &Img, archive: &Path) {
    img.run("export", &["-o", archive.to_str().unwrap()])
        .success();
}

// ================================================================== the mount

/// Through a mount, symlinks are served as links (readlink gives the
/// target verbatim) and never followed by the daemon: a loop gives the
/// kernel's ELOOP, an absolute link names the host path it would reach.
#[test]
fn mounted_symlinks_are_served_as_links_never_followed() {
    let tar = Tar::default()
        .symlink("loop-a", "loop-b")
        .symlink("loop-b", "loop-a")
        .symlink("abs", "/etc/hostname")
        .symlink("up", "../../..")
        .file("f", b"f\n")
        .finish();
    let img = Img::plain(tar);
    let mount = support::Mounted::new(&img.cache, &img.image(), &[]);
    let dir = mount.path();
    assert_eq!(
        std::fs::read_link(dir.join("abs")).unwrap(),
        Path::new("/etc/hostname")
    );
    assert_eq!(
        std::fs::read_link(dir.join("up")).unwrap(),
        Path::new("../../..")
    );
    let err = std::fs::read(dir.join("loop-a")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ELOOP));
    assert_eq!(std::fs::read(dir.join("f")).unwrap(), b"f\n");
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["abs", "f", "loop-a", "loop-b", "up"]);
}

// ================================================================== fuzz findings

#[path = "../fuzz/harness.rs"]
mod harness;

/// Every seed of the fuzz corpus, and every input a fuzzer once crashed on
/// (kept in fuzz/regressions/TARGET/), passes its target's checks.
#[test]
fn fuzz_seeds_and_regressions_pass_their_checks() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    type Check = fn(&[u8]);
    let targets: [(&str, Check); 6] = [
        ("tar_index", harness::tar_index),
        ("gzip_spans", harness::gzip_spans),
        ("index_format", harness::index_format),
        ("json_layout", harness::json_layout),
        ("tree_format", harness::tree_format),
        ("toc_json", harness::toc_json),
    ];
    let mut checked = 0;
    for (name, check) in targets {
        for kind in ["seeds", "regressions"] {
            let Ok(list) = std::fs::read_dir(root.join(kind).join(name)) else {
                continue;
            };
            for file in list {
                let path = file.unwrap().path();
                let bytes = std::fs::read(&path).unwrap();
                let result = std::panic::catch_unwind(|| check(&bytes));
                assert!(result.is_ok(), "{} fails its check", path.display());
                checked += 1;
            }
        }
    }
    harness::remove_scratch_dir();
    assert!(checked >= 20, "only {checked} inputs found under fuzz/");
}

/// An xattr value larger than Linux's XATTR_SIZE_MAX cannot exist on any
/// file system; the merged tree would hold it in memory for every entry.
#[test]
fn an_xattr_value_over_64_kib_is_refused() {
    let big = vec![b'v'; 65537];
    let tar = Tar::default()
        .pax(&[("SCHILY.xattr.user.big", &big[..])])
        .file("f", b"f\n")
        .finish();
    let img = Img::plain(tar);
    // The PAX header that carries it is the entry named.
    img.refused(&img.entry_error(
        0,
        "PaxHeaders/x",
        "the xattr user.big has a 65537-byte value (limit 65536)",
    ));
    // At the limit it is kept, byte for byte.
    let fits = vec![b'w'; 65536];
    let tar = Tar::default()
        .pax(&[("SCHILY.xattr.user.fits", &fits[..])])
        .file("f", b"f\n")
        .finish();
    let img = Img::plain(tar);
    assert_eq!(img.run("ls", &[]).ok(), lines(&["f"]));
}

/// Entries are at most PATH_MAX long, but symlinked parents let a layer
/// build a tree far deeper: each link points at the deepest directory so
/// far, and an entry below it adds 500 levels. Listing and exporting such
/// a tree must not recurse (a 256 KiB stack is plenty) nor hold every full
/// path at once.
#[test]
fn a_tree_5500_deep_through_symlinked_parents_lists_and_exports_on_a_small_stack() {
    const LEVELS: usize = 500;
    const LINKS: usize = 10;
    let chain = vec!["d"; LEVELS].join("/");
    // Names past 100 bytes go in PAX records, as real tars write them.
    let dir = |tar: Tar, path: String| tar.pax(&[("path", path.as_bytes())]).dir("x");
    let mut tar = dir(Tar::default(), format!("a0/{chain}"));
    for k in 1..=LINKS {
        let target = if k == 1 {
            format!("a0/{chain}")
        } else {
            format!("s{}/{chain}", k - 1)
        };
        tar = tar
            .pax(&[("linkpath", target.as_bytes())])
            .symlink(&format!("s{k}"), "x");
        tar = dir(tar, format!("s{k}/{chain}"));
    }
    let img = Img::plain(tar.finish());
    let small_stack = |args: &str| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "ulimit -s 256 && exec '{}' --cache '{}' {args}",
                env!("CARGO_BIN_EXE_ocimount"),
                img.cache.display()
            ))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let depth = LEVELS * (LINKS + 1);
    let deepest = format!("a0{}", "/d".repeat(depth));
    let listing = small_stack(&format!("ls -R '{}' /", img.image()));
    let listing = String::from_utf8(listing).unwrap();
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), 1 + depth + LINKS);
    assert_eq!(lines[0], "a0");
    assert!(
        lines[depth] == deepest,
        "the deepest path is not listed last"
    );
    assert_eq!(lines[depth + 1], "s1");
    assert_eq!(lines[depth + LINKS], "s9");

    let exported = small_stack(&format!("export '{}' -o -", img.image()));
    let mut names = Vec::new();
    let mut archive = tar::Archive::new(&exported[..]);
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        names.push(entry.path().unwrap().display().to_string());
    }
    assert_eq!(names.len(), 2 + depth + LINKS, "with ./");
    assert!(
        names[depth + 1] == format!("{deepest}/"),
        "the deepest directory is not exported last"
    );
}

/// One zero block is not the end of an archive in Go's reader: a header
/// after it is an error (GNU tar would skip the zero block and go on, so
/// a member could be seen by one tool and not by another). A zero block
/// then the end, or two zero blocks then anything, end it cleanly.
#[test]
fn a_header_after_a_single_zero_block_is_refused_as_go_refuses_it() {
    let mut hidden = Tar::default().file("a", b"a\n").0;
    let at = hidden.len();
    hidden.resize(at + 512, 0);
    let hidden = Tar(hidden).file("b", b"b\n").finish();
    let img = Img::plain(hidden);
    img.refused(&img.layer_error(
        0,
        &format!(
            "the zero block at offset {at} is followed by a header (one zero block is not the end of an archive)"
        ),
    ));

    let mut one_block = Tar::default().file("a", b"a\n").0;
    one_block.resize(one_block.len() + 512, 0);
    assert_eq!(
        Img::plain(one_block).ls_lr(),
        format!("-rw-r--r--   1     0     0          2 {T} a\n")
    );

    let mut trailing = Tar::default().file("a", b"a\n").finish();
    trailing.extend_from_slice(&Tar::default().file("b", b"b\n").finish());
    assert_eq!(Img::plain(trailing).run("ls", &[]).ok(), lines(&["a"]));
}
