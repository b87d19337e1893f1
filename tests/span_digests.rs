//! Issue 22: bytes fetched from a registry after the indexing pass must be
//! checked against a digest, not only a CRC-32.
//!
//! The indexing pass reads a whole blob and checks its sha256; bytes
//! fetched later by HTTP Range are checked against what the index holds
//! for their span. A CRC-32 can be forged with 4 chosen bytes, so these
//! tests forge one: in the plain-tar layer of `debian-plain` that holds
//! `usr/lib/os-release` (what `/etc/os-release` points to), `Debian`
//! becomes `Hacked` and the 4 bytes after it are set so that the CRC-32 of
//! every range holding the change is unchanged ([`forge_crc32`]). A
//! [`HostileProxy`] in front of a real `docker-registry` relays everything
//! as it is, except the GETs of that blob after the first one (the honest,
//! digest-checked full pass), which it answers with the forged bytes
//! (Range honoured: 206 with the registry's Content-Range, same length).
//!
//! Each flow reads `/etc/os-release` with `ocimount cat` from the registry
//! after its layer was indexed elsewhere or earlier: from an index another
//! node published, in `--cache-mode index-only`, after `cache prune`, and
//! from an index built from a local layout of the same image. With the
//! forgery, the read must fail (exit 1, nothing on stdout, stderr naming
//! the failed read); with an honest proxy the same flow must give the true
//! bytes. Today (CRC-32 only) the forged flows print "Hacked".
//!
//! Root is not needed (no mount); the registry tests' tools are
//! (docker-registry, skopeo, curl; `scripts/install-deps.sh tests`).

mod support;

#[path = "support/hostile_blobs.rs"]
mod hostile_blobs;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use hostile_blobs::{
    crc32, forge_crc32, tar_members, BlobForgery, BlobGet, ForgeMode, HostileProxy,
};
use support::registry::{http, TestRegistry};
use support::{corpus, ok, run_bounded, BIN};

/// The corpus image with plain (uncompressed) tar layers.
const IMAGE: &str = "debian-plain";
const REPO_TAG: &str = "test/debian-plain:v1";
/// What is read, and the member of the layer tar it resolves to.
const FILE: &str = "/etc/os-release";
const MEMBER: &str = "usr/lib/os-release";
const NEEDLE: &[u8] = b"PRETTY_NAME=\"Debian";
const REPLACEMENT: &[u8] = b"Hacked";
const FORGED_MARK: &str = "Hacked";

// ---------------------------------------------------------------------------
// The forgery itself

/// A small deterministic generator (xorshift64*), for the unit tests.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn zlib_crc32(data: &[u8]) -> u32 {
    let mut crc = flate2::Crc::new();
    crc.update(data);
    crc.sum()
}

#[test]
fn crc32_is_zlibs() {
    assert_eq!(crc32(b""), 0);
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for len in [1, 3, 4, 5, 63, 512, 4096, 100_000] {
        let data = rng.bytes(len);
        assert_eq!(crc32(&data), zlib_crc32(&data), "{len} bytes");
    }
}

#[test]
fn a_forgery_keeps_the_crc32_of_every_range_that_holds_it() {
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    for round in 0..200 {
        let len = 8 + rng.below(5000);
        let original = rng.bytes(len);
        let rep_len = 1 + rng.below(16.min(len - 4));
        let pos = rng.below(len - rep_len - 4 + 1);
        // A replacement that differs from what it replaces.
        let mut replacement = rng.bytes(rep_len);
        replacement[0] = !original[pos];
        let mut forged = original.clone();
        let changed = forge_crc32(&mut forged, pos, &replacement);
        assert_eq!(changed, pos..pos + rep_len + 4, "round {round}");
        assert_eq!(&forged[pos..pos + rep_len], &replacement[..]);
        assert_ne!(forged, original, "round {round}: nothing changed");
        assert_eq!(forged[..pos], original[..pos], "round {round}");
        assert_eq!(forged[changed.end..], original[changed.end..]);
        // Every range holding the whole window, the whole buffer included.
        let mut ranges = vec![(0, len), (pos, changed.end)];
        for _ in 0..20 {
            ranges.push((
                rng.below(pos + 1),
                changed.end + rng.below(len - changed.end + 1),
            ));
        }
        for (a, b) in ranges {
            assert_ne!(forged[a..b], original[a..b]);
            assert_eq!(
                crc32(&forged[a..b]),
                crc32(&original[a..b]),
                "round {round}: the CRC-32 of {a}..{b} changed (window {changed:?})"
            );
            assert_eq!(
                zlib_crc32(&forged[a..b]),
                zlib_crc32(&original[a..b]),
                "round {round}: zlib's CRC-32 of {a}..{b} changed"
            );
        }
    }
}

/// The forged layer of `debian-plain`: where `Debian` is in the blob, and
/// the true bytes of /etc/os-release.
struct ForgedLayer {
    forgery: BlobForgery,
    layer_size: u64,
    truth: Vec<u8>,
}

fn layout_dir() -> PathBuf {
    corpus().image(IMAGE).layout.clone()
}

fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

fn forged_layer() -> &'static ForgedLayer {
    static FORGED: OnceLock<ForgedLayer> = OnceLock::new();
    FORGED.get_or_init(|| {
        let layout = layout_dir();
        let index = read_json(&layout.join("index.json"));
        let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap();
        let manifest = read_json(&blob_path(&layout, manifest_digest));
        // The topmost layer that has the member.
        let mut found = None;
        for layer in manifest["layers"].as_array().unwrap() {
            let digest = layer["digest"].as_str().unwrap().to_string();
            let media_type = layer["mediaType"].as_str().unwrap();
            assert_eq!(
                media_type, "application/vnd.oci.image.layer.v1.tar",
                "{IMAGE} should have plain tar layers"
            );
            let path = blob_path(&layout, &digest);
            let members = tar_members(&path).unwrap();
            if let Some(m) = members.iter().rev().find(|m| m.name == MEMBER) {
                found = Some((digest, path, m.clone()));
            }
        }
        let (digest, path, member) = found.unwrap_or_else(|| panic!("no layer has {MEMBER}"));
        assert!(
            member.kind == b'0' || member.kind == 0,
            "{MEMBER} is not a regular file"
        );
        let file = std::fs::File::open(&path).unwrap();
        let layer_size = file.metadata().unwrap().len();
        let mut data = vec![0u8; member.size as usize];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut data, member.data_offset).unwrap();
        let reference = corpus().image(IMAGE).reference.clone().unwrap();
        let truth = std::fs::read(reference.join(MEMBER)).unwrap();
        assert_eq!(data, truth, "{MEMBER} in the tar differs from umoci's tree");
        let at = data
            .windows(NEEDLE.len())
            .position(|w| w == NEEDLE)
            .expect("os-release has no PRETTY_NAME=\"Debian");
        // `Debian` and the 4 bytes of the fix, all inside the file's data.
        let in_file = at + NEEDLE.len() - REPLACEMENT.len();
        let window = REPLACEMENT.len() + 4;
        assert!(in_file + window <= data.len());
        let offset = member.data_offset + in_file as u64;
        let original = data[in_file..in_file + window].to_vec();
        let mut forged = original.clone();
        forge_crc32(&mut forged, 0, REPLACEMENT);

        // On the real blob: the CRC-32 of the ±1 MiB around it (more than
        // any span holding the window) is unchanged.
        let from = offset.saturating_sub(1 << 20);
        let to = (offset + (1 << 20)).min(layer_size);
        let mut around = vec![0u8; (to - from) as usize];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut around, from).unwrap();
        let before = crc32(&around);
        let rel = (offset - from) as usize;
        around[rel..rel + window].copy_from_slice(&forged);
        assert_eq!(crc32(&around), before, "the forgery changes the CRC-32");
        let mut forged_file = data.clone();
        forged_file[in_file..in_file + window].copy_from_slice(&forged);
        assert!(String::from_utf8_lossy(&forged_file).contains("PRETTY_NAME=\"Hacked"));
        eprintln!(
            "forging {MEMBER} in layer {digest} at blob offset {offset}: {:?} -> {:?}",
            String::from_utf8_lossy(&original),
            String::from_utf8_lossy(&forged)
        );
        ForgedLayer {
            forgery: BlobForgery {
                digest,
                offset,
                original,
                forged,
            },
            layer_size,
            truth,
        }
    })
}

#[test]
fn the_forged_os_release_layer_keeps_its_crc32() {
    let forged = forged_layer();
    let f = &forged.forgery;
    assert_eq!(f.forged.len(), REPLACEMENT.len() + 4);
    assert_eq!(&f.original[..REPLACEMENT.len()], b"Debian");
    assert_eq!(&f.forged[..REPLACEMENT.len()], REPLACEMENT);
    assert_ne!(
        f.forged[REPLACEMENT.len()..],
        f.original[REPLACEMENT.len()..]
    );
    assert!(f.offset + f.forged.len() as u64 <= forged.layer_size);
}

// ---------------------------------------------------------------------------
// A registry behind the hostile proxy

/// A registry holding `debian-plain`, the proxy in front of it, and a
/// directory for the nodes' caches; all gone on drop (proxy first).
struct Hostile {
    proxy: HostileProxy,
    registry: TestRegistry,
    work: tempfile::TempDir,
    image: String,
}

impl Hostile {
    fn start(mode: ForgeMode) -> Hostile {
        let forged = forged_layer();
        let registry = TestRegistry::new();
        registry.push(&format!("oci:{}", layout_dir().display()), REPO_TAG);
        // Pushed as it is: the registry holds the very plain-tar blob.
        let stored = registry.blob_data_path(&forged.forgery.digest);
        let stored_len = std::fs::metadata(&stored).map(|m| m.len()).unwrap_or(0);
        assert_eq!(
            stored_len, forged.layer_size,
            "the registry does not hold layer {} as the layout does",
            forged.forgery.digest
        );
        let proxy = HostileProxy::start(registry.port(), forged.forgery.clone(), mode);
        let image = format!("docker://{}/{REPO_TAG}", proxy.host_port());
        Hostile {
            proxy,
            registry,
            work: tempfile::tempdir().unwrap(),
            image,
        }
    }

    fn forging(forge: bool, honest_gets: u64) -> Hostile {
        Hostile::start(if forge {
            ForgeMode::ForgeAfter(honest_gets)
        } else {
            ForgeMode::Honest
        })
    }

    /// A node's cache directory.
    fn cache(&self, node: &str) -> PathBuf {
        self.work.path().join(node)
    }

    fn gets(&self) -> Vec<BlobGet> {
        self.proxy.blob_gets()
    }
}

/// `ocimount --cache CACHE --tls-verify=false ARGS…`, bounded, with no
/// cache or credential settings from the environment.
fn om(cache: &Path, args: &[&str]) -> Output {
    om_logging(cache, args, None)
}

/// `om` with `RUST_LOG` set to `log`, where given.
fn om_logging(cache: &Path, args: &[&str], log: Option<&str>) -> Output {
    let mut cmd = Command::new(BIN);
    if let Some(log) = log {
        cmd.env("RUST_LOG", log);
    }
    cmd.arg("--cache")
        .arg(cache)
        .arg("--tls-verify=false")
        .arg("--registry-timeout")
        .arg("10")
        .args(args);
    for var in [
        "REGISTRY_AUTH_FILE",
        "OCIMOUNT_REGISTRY_CREDS",
        "OCIMOUNT_CACHE_MODE",
        "OCIMOUNT_CACHE_MAX",
        "OCIMOUNT_TLS_VERIFY",
        "OCIMOUNT_REGISTRY_TIMEOUT",
    ] {
        cmd.env_remove(var);
    }
    let out = run_bounded(&mut cmd, Duration::from_secs(180));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "ocimount panicked: {stderr}");
    out
}

/// The one GET of the layer so far is the full pass: no Range, 200.
fn assert_only_the_pass(h: &Hostile, step: &str) {
    let gets = h.gets();
    assert!(
        gets.len() == 1 && gets[0].range.is_none() && gets[0].status == 200,
        "{step}: expected one GET of the layer, the full pass (no Range, 200); got {gets:?}"
    );
}

/// The first GET of the layer after `before` ones is a Range read (the
/// layer was not indexed again first), answered directly (no redirect).
fn assert_range_read_after(h: &Hostile, before: usize, step: &str) {
    let gets = h.gets();
    let next = gets.get(before);
    assert!(
        next.is_some_and(|g| g.range.is_some() && (g.status == 206 || g.status == 200)),
        "{step}: expected a Range read of the layer after its {before} earlier GET(s); got {gets:?}"
    );
}

/// The forged read is refused: exit 1, nothing on stdout, an error naming
/// the failed read; and the forged bytes really went out.
fn assert_forgery_refused(h: &Hostile, out: &Output, flow: &str) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        h.proxy.forged_bytes_served() > 0,
        "{flow}: the proxy never served the forged bytes, so this proves nothing \
         (GETs of the layer: {:?}); stdout {stdout:?}, stderr: {stderr}",
        h.gets()
    );
    assert!(
        !stdout.contains(FORGED_MARK),
        "{flow}: forged bytes were served: `ocimount cat {FILE}` printed {stdout:?} \
         (exit {:?}) from a Range read whose CRC-32 matched the index but whose \
         bytes are not the blob's; stderr: {stderr}",
        out.status.code()
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{flow}: `ocimount cat` of forged bytes should fail with exit 1; \
         stdout {stdout:?}, stderr: {stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "{flow}: nothing of the damaged span should reach stdout, got {stdout:?}"
    );
    let lower = stderr.to_ascii_lowercase();
    assert!(
        [
            "damaged",
            "mismatch",
            "does not match",
            "do not match",
            "input/output error",
            "eio",
        ]
        .iter()
        .any(|w| lower.contains(w)),
        "{flow}: stderr does not name the failed read (EIO, damaged data or a digest \
         mismatch): {stderr}"
    );
}

/// The honest flow gives exactly the true file.
fn assert_true_bytes(h: &Hostile, out: &Output, flow: &str) {
    let got = ok(out);
    assert_eq!(h.proxy.forged_bytes_served(), 0, "{flow}: the proxy forged");
    assert!(
        out.stdout == forged_layer().truth,
        "{flow}: `ocimount cat {FILE}` printed {got:?}, expected {:?}",
        String::from_utf8_lossy(&forged_layer().truth)
    );
}

// ---------------------------------------------------------------------------
// The flows

/// Node A indexes the image (the full pass, honest) and publishes its
/// indexes with `index push`; node B, empty cache, reads the file through
/// the published index, by Range.
fn published_index_flow(forge: bool) -> (Hostile, Output) {
    let h = Hostile::forging(forge, 1);
    let pushed = om(&h.cache("node-a"), &["index", "push", &h.image]);
    let pushed_text = ok(&pushed);
    assert!(pushed_text.contains("6 of 6 layers"), "{pushed_text}");
    assert_only_the_pass(&h, "node A's index push");
    let out = om(&h.cache("node-b"), &["cat", &h.image, FILE]);
    assert_range_read_after(&h, 1, "node B's cat through the published index");
    (h, out)
}

#[test]
fn published_index_forged_range_read_fails() {
    let (h, out) = published_index_flow(true);
    assert_forgery_refused(&h, &out, "published index, node B");
}

#[test]
fn published_index_honest_control() {
    let (h, out) = published_index_flow(false);
    assert_true_bytes(&h, &out, "published index, node B");
}

/// `--cache-mode index-only --no-remote-index`: the pass keeps only the
/// index, so the read fetches its span again.
fn index_only_flow(forge: bool) -> (Hostile, Output) {
    let h = Hostile::forging(forge, 1);
    let cache = h.cache("node");
    let index_only = |args: &[&str]| {
        let mut all = vec!["--cache-mode", "index-only", "--no-remote-index"];
        all.extend_from_slice(args);
        om(&cache, &all)
    };
    ok(&index_only(&["ls", &h.image, "/"]));
    assert_only_the_pass(&h, "the index-only pass");
    let out = index_only(&["cat", &h.image, FILE]);
    assert_range_read_after(&h, 1, "the index-only cat");
    (h, out)
}

#[test]
fn index_only_forged_range_read_fails() {
    let (h, out) = index_only_flow(true);
    assert_forgery_refused(&h, &out, "--cache-mode index-only");
}

#[test]
fn index_only_honest_control() {
    let (h, out) = index_only_flow(false);
    assert_true_bytes(&h, &out, "--cache-mode index-only");
}

/// The node that indexed (full cache mode: the pass stores the layer)
/// drops the decoded data with `cache prune`, then reads the file again.
fn after_prune_flow(forge: bool) -> (Hostile, Output) {
    let h = Hostile::forging(forge, 1);
    let cache = h.cache("node");
    ok(&om(&cache, &["--no-remote-index", "ls", &h.image, "/"]));
    assert_only_the_pass(&h, "the full pass");
    let pruned = ok(&om(&cache, &["cache", "prune"]));
    assert!(
        pruned.contains("dropped the decoded data of") && !pruned.contains(" of 0 layer"),
        "cache prune: {pruned}"
    );
    let out = om(&cache, &["--no-remote-index", "cat", &h.image, FILE]);
    assert_range_read_after(&h, 1, "the cat after cache prune");
    (h, out)
}

#[test]
fn after_cache_prune_forged_range_read_fails() {
    let (h, out) = after_prune_flow(true);
    assert_forgery_refused(&h, &out, "after cache prune");
}

#[test]
fn after_cache_prune_honest_control() {
    let (h, out) = after_prune_flow(false);
    assert_true_bytes(&h, &out, "after cache prune");
}

/// The file's span is stored by a read, then evicted by another process
/// under `--cache-max` (which read a big file of another layer and went
/// over the bound); the next read of the file fetches it again, by Range.
fn after_eviction_flow(forge: bool) -> (Hostile, Output) {
    let h = Hostile::forging(forge, 2);
    let cache = h.cache("node");
    // The pass stores nothing decoded here: the file's span is stored by
    // the first cat (the second GET of the layer, still honest).
    ok(&om(
        &cache,
        &[
            "--no-remote-index",
            "--cache-mode",
            "index-only",
            "ls",
            &h.image,
            "/",
        ],
    ));
    assert_only_the_pass(&h, "the full pass");
    let first = om(&cache, &["--no-remote-index", "cat", &h.image, FILE]);
    assert!(
        first.status.success() && first.stdout == forged_layer().truth,
        "the first cat: {}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_range_read_after(&h, 1, "the first cat");
    let big = om_logging(
        &cache,
        &[
            "--no-remote-index",
            "--cache-max",
            "1M",
            "cat",
            &h.image,
            "/corpus/big/random.bin",
        ],
        Some("ocimount=info"),
    );
    let log = String::from_utf8_lossy(&big.stderr).into_owned();
    assert!(big.status.success(), "{log}");
    assert!(
        log.contains("cache over its 1048576-byte limit"),
        "no eviction: {log}"
    );
    let out = om(&cache, &["--no-remote-index", "cat", &h.image, FILE]);
    assert_range_read_after(&h, 2, "the cat after the eviction");
    (h, out)
}

#[test]
fn after_eviction_forged_range_read_fails() {
    let (h, out) = after_eviction_flow(true);
    assert_forgery_refused(&h, &out, "after an eviction");
}

#[test]
fn after_eviction_honest_control() {
    let (h, out) = after_eviction_flow(false);
    assert_true_bytes(&h, &out, "after an eviction");
}

/// The layer is indexed from a local layout of the same image (same layer
/// digests), then read from the registry with the same cache: every byte
/// of it comes by Range.
fn local_layout_flow(forge: bool) -> (Hostile, Output) {
    let h = Hostile::forging(forge, 0);
    let cache = h.cache("node");
    let layout = layout_dir();
    ok(&om(&cache, &["ls", layout.to_str().unwrap(), "/"]));
    assert!(h.gets().is_empty(), "a local ls went to the registry");
    let out = om(&cache, &["cat", &h.image, FILE]);
    assert_range_read_after(&h, 0, "the registry cat after a local index");
    (h, out)
}

#[test]
fn local_layout_index_forged_range_read_fails() {
    let (h, out) = local_layout_flow(true);
    assert_forgery_refused(&h, &out, "indexed from the local layout");
}

#[test]
fn local_layout_index_honest_control() {
    let (h, out) = local_layout_flow(false);
    assert_true_bytes(&h, &out, "indexed from the local layout");
}

// ---------------------------------------------------------------------------
// The proxy itself

/// The proxy relays the first GET as it is, then forges: a Range answer is
/// 206 with the registry's Content-Range and the forged bytes where the
/// range covers them, the original ones elsewhere; `Honest` stops it.
#[test]
fn the_proxy_forges_after_the_pass_and_honours_range() {
    let forged = forged_layer();
    let f = &forged.forgery;
    let h = Hostile::start(ForgeMode::ForgeAfter(1));
    let url = format!(
        "http://{}/v2/{}/blobs/{}",
        h.proxy.host_port(),
        REPO_TAG.split(':').next().unwrap(),
        f.digest
    );
    let whole = http("GET", &url, &[], None, &[]);
    assert_eq!(
        (whole.status, whole.curl_exit),
        (200, 0),
        "{}",
        whole.stderr
    );
    assert_eq!(whole.body.len() as u64, forged.layer_size);
    let at = f.offset as usize;
    assert_eq!(&whole.body[at..at + f.original.len()], &f.original[..]);
    assert_eq!(crc32(&whole.body), {
        let mut b = whole.body.clone();
        b[at..at + f.forged.len()].copy_from_slice(&f.forged);
        crc32(&b)
    });
    drop(whole);

    let (a, b) = (f.offset - 100, f.offset + 99);
    let range = format!("Range: bytes={a}-{b}");
    let forged_part = http("GET", &url, &[&range], None, &[]);
    assert_eq!(forged_part.status, 206, "{}", forged_part.stderr);
    assert_eq!(
        forged_part.header("Content-Range"),
        Some(format!("bytes {a}-{b}/{}", forged.layer_size).as_str())
    );
    assert_eq!(forged_part.body.len(), 200);
    assert_eq!(&forged_part.body[100..100 + f.forged.len()], &f.forged[..]);
    assert!(String::from_utf8_lossy(&forged_part.body).contains("PRETTY_NAME=\"Hacked"));

    // A range beside the window is the registry's.
    let elsewhere = http("GET", &url, &["Range: bytes=0-511"], None, &[]);
    assert_eq!(elsewhere.status, 206);
    let layout_blob = std::fs::read(blob_path(&layout_dir(), &f.digest)).unwrap();
    assert_eq!(elsewhere.body, layout_blob[..512]);

    h.proxy.set_mode(ForgeMode::Honest);
    let honest = http("GET", &url, &[&range], None, &[]);
    assert_eq!(honest.status, 206);
    assert_eq!(honest.body, layout_blob[a as usize..=b as usize]);

    let gets = h.gets();
    let forged_flags: Vec<bool> = gets.iter().map(|g| g.forged).collect();
    assert_eq!(forged_flags, [false, true, true, false], "{gets:?}");
    assert_eq!(h.proxy.forged_bytes_served(), f.forged.len() as u64);
    // Other requests pass: the manifest by tag.
    let manifest = http(
        "GET",
        &format!(
            "http://{}/v2/test/debian-plain/manifests/v1",
            h.proxy.host_port()
        ),
        &["Accept: application/vnd.oci.image.manifest.v1+json"],
        None,
        &[],
    );
    assert_eq!(manifest.status, 200, "{}", manifest.text());
    assert!(manifest.text().contains(&f.digest));
    assert!(h
        .registry
        .access_requests()
        .iter()
        .any(|r| r.contains("/manifests/v1")));
}
