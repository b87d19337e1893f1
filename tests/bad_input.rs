//! Bad input and damaged caches: every failure is exit 1 with an
//! `ocimount: error:` line that names the problem and the file, layer or
//! digest at fault, never a panic, always within the time limit; every
//! damaged cache entry is detected, rebuilt or re-decoded, and the bytes
//! served are exactly the bytes put into the layer.
//!
//! Layouts are generated here from tar bytes written by hand (so names like
//! `../x` or `.wh.` can be put in a header), with the helpers of
//! `tests/common`.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::{json, Value};

// ------------------------------------------------------------------ tar bytes

/// A ustar archive written header by header, with no checks on names.
#[derive(Default)]
struct Tar(Vec<u8>);

impl Tar {
    fn entry(mut self, name: &str, kind: u8, link: &str, mode: u32, data: &[u8]) -> Self {
        let mut h = [0u8; 512];
        assert!(name.len() <= 100 && link.len() <= 100, "name too long");
        h[..name.len()].copy_from_slice(name.as_bytes());
        octal(&mut h[100..108], mode.into());
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        octal(&mut h[124..136], data.len() as u64);
        octal(&mut h[136..148], 1_700_000_000);
        h[156] = kind;
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        self.0.extend_from_slice(&h);
        self.0.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.0.resize(self.0.len() + pad, 0);
        self
    }

    fn file(self, name: &str, data: &[u8]) -> Self {
        self.entry(name, b'0', "", 0o644, data)
    }

    fn dir(self, name: &str) -> Self {
        self.entry(name, b'5', "", 0o755, b"")
    }

    fn hardlink(self, name: &str, target: &str) -> Self {
        self.entry(name, b'1', target, 0o644, b"")
    }

    fn finish(mut self) -> Vec<u8> {
        self.0.resize(self.0.len() + 1024, 0);
        self.0
    }
}

fn octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let text = format!("{value:0width$o}");
    assert_eq!(text.len(), width, "{value} does not fit the field");
    field[..width].copy_from_slice(text.as_bytes());
    field[width] = 0;
}

/// Deterministic pseudo-random bytes (xorshift64*): incompressible, so a
/// gzip layer holding them has about one span per MiB.
fn random_bytes(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        out.extend_from_slice(&seed.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A small, ordinary layer: `etc/`, `etc/hostname`, `hello.txt`.
fn small_tar() -> Vec<u8> {
    Tar::default()
        .dir("etc/")
        .file("etc/hostname", b"box\n")
        .file("hello.txt", b"hello, world\n")
        .finish()
}

// ------------------------------------------------------------------ fixtures

/// A temporary directory holding one layout and a cache.
struct Fx {
    _tmp: tempfile::TempDir,
    layout: PathBuf,
    cache: PathBuf,
}

impl Fx {
    fn new(layers: &[LayerSpec]) -> Fx {
        let tmp = tempfile::tempdir().unwrap();
        let layout = build_layout(tmp.path(), layers);
        let cache = tmp.path().join("cache");
        Fx {
            _tmp: tmp,
            layout,
            cache,
        }
    }

    /// A layout whose manifest lists `descs` and whose config lists
    /// `diff_ids`; the blobs are written as given.
    fn custom(blobs: &[&[u8]], descs: Vec<Value>, diff_ids: Vec<String>) -> Fx {
        let fx = Fx::new(&[plain_layer(&small_tar())]);
        for b in blobs {
            write_blob(&fx.layout, b);
        }
        let config = serde_json::to_vec(&json!({
            "architecture": host_arch(),
            "os": "linux",
            "config": {},
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
        }))
        .unwrap();
        let config_digest = write_blob(&fx.layout, &config);
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": { "mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len() },
            "layers": descs,
        }))
        .unwrap();
        let manifest_digest = write_blob(&fx.layout, &manifest);
        write_index(
            &fx.layout,
            &[json!({
                "mediaType": OCI_MANIFEST,
                "digest": manifest_digest,
                "size": manifest.len(),
                "annotations": { "org.opencontainers.image.ref.name": "latest" },
            })],
        );
        fx
    }

    fn image(&self) -> String {
        self.layout.display().to_string()
    }

    /// `ocimount <sub> LAYOUT <extra...>`.
    fn run(&self, sub: &str, extra: &[&str]) -> Run {
        let image = self.image();
        let mut args = vec![sub, image.as_str()];
        args.extend_from_slice(extra);
        ocimount(&self.cache, &args)
    }

    fn manifest_digest(&self) -> String {
        read_index(&self.layout)["manifests"][0]["digest"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn manifest(&self) -> Value {
        read_json_blob(&self.layout, &self.manifest_digest())
    }

    fn config_digest(&self) -> String {
        self.manifest()["config"]["digest"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The digest of layer `i` (0 is the bottom).
    fn layer_digest(&self, i: usize) -> String {
        self.manifest()["layers"][i]["digest"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        self.layout
            .join("blobs/sha256")
            .join(digest.strip_prefix("sha256:").unwrap())
    }

    /// The cache directory of a layer.
    fn entry_dir(&self, layer_digest: &str) -> PathBuf {
        self.cache
            .join("layers/sha256")
            .join(layer_digest.strip_prefix("sha256:").unwrap())
    }
}

fn desc(media_type: &str, blob: &[u8]) -> Value {
    json!({ "mediaType": media_type, "digest": digest_of(blob), "size": blob.len() })
}

/// Flip one byte of a file in place (same size, new digest).
fn flip_byte(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0x55;
    std::fs::write(path, bytes).unwrap();
}

// ------------------------------------------------------------------ missing blobs

#[test]
fn missing_layer_blob_is_named() {
    let fx = Fx::new(&[gzip_layer(&small_tar())]);
    let layer = fx.layer_digest(0);
    std::fs::remove_file(fx.blob_path(&layer)).unwrap();
    for sub in ["ls", "cat"] {
        let extra: &[&str] = if sub == "cat" { &["/hello.txt"] } else { &[] };
        fx.run(sub, extra).fails_with(&[&format!(
            "blob {layer} is missing from {}",
            fx.layout.display()
        )]);
    }
}

#[test]
fn missing_config_blob_is_named() {
    let fx = Fx::new(&[gzip_layer(&small_tar())]);
    let config = fx.config_digest();
    std::fs::remove_file(fx.blob_path(&config)).unwrap();
    fx.run("inspect", &[]).fails_with(&[&format!(
        "blob {config} is missing from {}",
        fx.layout.display()
    )]);
    fx.run("ls", &[])
        .fails_with(&[&format!("blob {config} is missing")]);
}

#[test]
fn missing_manifest_blob_is_named() {
    let fx = Fx::new(&[gzip_layer(&small_tar())]);
    let manifest = fx.manifest_digest();
    std::fs::remove_file(fx.blob_path(&manifest)).unwrap();
    fx.run("ls", &[]).fails_with(&[&format!(
        "blob {manifest} is missing from {}",
        fx.layout.display()
    )]);
}

// ------------------------------------------------------------------ digests and sizes

#[test]
fn plain_layer_blob_digest_mismatch_names_layer_expected_and_actual() {
    let tar = small_tar();
    let fx = Fx::new(&[plain_layer(&tar)]);
    let layer = fx.layer_digest(0);
    let path = fx.blob_path(&layer);
    // A byte of hello.txt's content: the tar still parses.
    let at = tar.windows(5).position(|w| w == b"hello").unwrap();
    flip_byte(&path, at);
    let actual = digest_of(&std::fs::read(&path).unwrap());
    fx.run("ls", &[]).fails_with(&[
        &format!("layer 0 blob {layer}"),
        "sha256 mismatch",
        &format!("expected {layer}, got {actual}"),
    ]);
}

#[test]
fn gzip_layer_blob_digest_mismatch_names_layer_expected_and_actual() {
    let tar = Tar::default()
        .file("big.bin", &random_bytes(64 * 1024, 7))
        .finish();
    let fx = Fx::new(&[plain_layer(&small_tar()), gzip_layer(&tar)]);
    let layer = fx.layer_digest(1);
    let path = fx.blob_path(&layer);
    let len = std::fs::metadata(&path).unwrap().len() as usize;
    flip_byte(&path, len / 2);
    let actual = digest_of(&std::fs::read(&path).unwrap());
    fx.run("ls", &[]).fails_with(&[
        &format!("layer 1 blob {layer}"),
        "sha256 mismatch",
        &format!("expected {layer}, got {actual}"),
    ]);
}

#[test]
fn diff_id_mismatch_names_layer_expected_and_actual() {
    let tar = small_tar();
    let (blob, media_type, _) = gzip_layer(&tar);
    let wrong = sha256(b"not this layer");
    let fx = Fx::new(&[(blob, media_type, wrong)]);
    let layer = fx.layer_digest(0);
    let expected = format!("sha256:{}", hex(&wrong));
    let actual = digest_of(&tar);
    fx.run("ls", &[]).fails_with(&[
        &format!("layer 0 ({layer})"),
        "diff_id",
        &format!("expected {expected}, got {actual}"),
    ]);
}

#[test]
fn blob_larger_than_its_descriptor_is_refused() {
    let fx = Fx::new(&[gzip_layer(&small_tar())]);
    let layer = fx.layer_digest(0);
    let path = fx.blob_path(&layer);
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes.extend_from_slice(b"trailing junk");
    std::fs::write(&path, &bytes).unwrap();
    fx.run("ls", &[]).fails_with(&[&format!(
        "blob {layer}: size is {} bytes, the descriptor says {n}",
        n + 13
    )]);
}

#[test]
fn blob_smaller_than_its_descriptor_is_refused() {
    let tar = small_tar();
    let blob = gzip_layer(&tar).0;
    let short = &blob[..blob.len() - 8];
    // The blob file holds fewer bytes than the descriptor says.
    let fx = Fx::custom(
        &[],
        vec![desc(OCI_LAYER_GZIP, &blob)],
        vec![digest_of(&tar)],
    );
    let layer = digest_of(&blob);
    std::fs::write(fx.blob_path(&layer), short).unwrap();
    fx.run("ls", &[]).fails_with(&[&format!(
        "blob {layer}: size is {} bytes, the descriptor says {}",
        short.len(),
        blob.len()
    )]);
}

// ------------------------------------------------------------------ compression

fn biggish_tar() -> Vec<u8> {
    Tar::default()
        .dir("etc/")
        .file("etc/hostname", b"box\n")
        .file("data.bin", &random_bytes(200 * 1024, 3))
        .file("hello.txt", b"hello, world\n")
        .finish()
}

/// Exit 1 naming layer 0 and saying its `kind` stream ends early.
fn assert_truncation_reported(run: &Run, layer: &str, kind: &str) {
    run.fails_with(&[
        &format!("layer 0 ({layer})"),
        &format!("truncated {kind} stream: it ends at blob offset"),
    ]);
}

#[test]
fn truncated_gzip_layer_is_an_error_naming_the_layer() {
    let tar = biggish_tar();
    let (blob, media_type, diff_id) = gzip_layer(&tar);
    let cut = blob[..blob.len() / 2].to_vec();
    let fx = Fx::new(&[(cut, media_type, diff_id)]);
    let layer = fx.layer_digest(0);
    assert_truncation_reported(&fx.run("ls", &[]), &layer, "gzip");
}

#[test]
fn truncated_zstd_layer_is_an_error_naming_the_layer() {
    let tar = biggish_tar();
    let (blob, media_type, diff_id) = zstd_layer(&tar);
    let cut = blob[..blob.len() / 2].to_vec();
    let fx = Fx::new(&[(cut, media_type, diff_id)]);
    let layer = fx.layer_digest(0);
    assert_truncation_reported(&fx.run("ls", &[]), &layer, "zstd");
}

#[test]
fn gzip_media_type_on_a_zstd_blob_is_refused() {
    let tar = small_tar();
    let (blob, _, diff_id) = zstd_layer(&tar);
    let fx = Fx::new(&[(blob, OCI_LAYER_GZIP, diff_id)]);
    let layer = fx.layer_digest(0);
    fx.run("ls", &[]).fails_with(&[
        &format!("layer 0 ({layer})"),
        &format!("media type {OCI_LAYER_GZIP} says gzip but the blob starts like zstd"),
    ]);
}

#[test]
fn zstd_media_type_on_a_gzip_blob_is_refused() {
    let tar = small_tar();
    let (blob, _, diff_id) = gzip_layer(&tar);
    let fx = Fx::new(&[(blob, OCI_LAYER_ZSTD, diff_id)]);
    let layer = fx.layer_digest(0);
    fx.run("ls", &[]).fails_with(&[
        &format!("layer 0 ({layer})"),
        &format!("media type {OCI_LAYER_ZSTD} says zstd but the blob starts like gzip"),
    ]);
}

// ------------------------------------------------------------------ the layout itself

#[test]
fn garbage_index_json_is_a_json_error_naming_the_file() {
    let fx = Fx::new(&[plain_layer(&small_tar())]);
    let path = fx.layout.join("index.json");
    std::fs::write(&path, b"\x00\xffnot json at all{{{").unwrap();
    fx.run("ls", &[]).fails_with(&[
        &format!("index {}: ", path.display()),
        "expected value at line 1 column 1",
    ]);
}

#[test]
fn truncated_index_json_is_a_json_error_naming_the_file() {
    let fx = Fx::new(&[plain_layer(&small_tar())]);
    let path = fx.layout.join("index.json");
    let text = std::fs::read(&path).unwrap();
    std::fs::write(&path, &text[..text.len() / 2]).unwrap();
    fx.run("inspect", &[])
        .fails_with(&[&format!("index {}: ", path.display()), "EOF while parsing"]);
}

#[test]
fn huge_index_json_is_refused_before_it_is_read() {
    let fx = Fx::new(&[plain_layer(&small_tar())]);
    let path = fx.layout.join("index.json");
    // Valid JSON, 9 MiB of it: the size alone is the problem.
    let mut text = b"{\"schemaVersion\":2,\"manifests\":[]".to_vec();
    text.resize(9 << 20, b' ');
    text.push(b'}');
    std::fs::write(&path, &text).unwrap();
    fx.run("ls", &[]).fails_with(&[
        &format!("index {}: ", path.display()),
        "larger than the 8388608-byte limit",
    ]);
}

#[test]
fn missing_oci_layout_file_is_named() {
    let fx = Fx::new(&[plain_layer(&small_tar())]);
    std::fs::remove_file(fx.layout.join("oci-layout")).unwrap();
    fx.run("ls", &[]).fails_with(&[&format!(
        "{} is not an OCI image layout: it has no oci-layout file",
        fx.layout.display()
    )]);
}

#[test]
fn oci_layout_with_a_bad_version_is_refused() {
    let fx = Fx::new(&[plain_layer(&small_tar())]);
    std::fs::write(
        fx.layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"2.0.0"}"#,
    )
    .unwrap();
    fx.run("ls", &[]).fails_with(&[&format!(
        "{} is not an OCI image layout: unsupported imageLayoutVersion \"2.0.0\"",
        fx.layout.display()
    )]);
}

#[test]
fn oci_layout_that_is_not_json_is_named() {
    let fx = Fx::new(&[plain_layer(&small_tar())]);
    let path = fx.layout.join("oci-layout");
    std::fs::write(&path, b"1.0.0\n").unwrap();
    fx.run("ls", &[])
        .fails_with(&[&format!("oci-layout {}: ", path.display())]);
}

#[test]
fn a_regular_file_that_is_no_tar_is_neither_layout_nor_archive() {
    // A regular file is read as an image archive (docker-archive or
    // oci-archive); one that is not even a tar says so.
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("image.tar");
    std::fs::write(&file, b"not a directory").unwrap();
    let image = file.display().to_string();
    ocimount(&tmp.path().join("cache"), &["ls", image.as_str()]).fails_with(&[&format!(
        "image archive {image}: not a readable tar: unexpected EOF: the archive ends inside a header"
    )]);
    // With the layout transport named, it is still not a layout.
    let named = format!("oci:{image}");
    ocimount(&tmp.path().join("cache"), &["ls", named.as_str()]).fails_with(&[&format!(
        "{image} is not an OCI image layout: it is not a directory"
    )]);
}

#[test]
fn a_missing_directory_is_not_a_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("nowhere").display().to_string();
    ocimount(&tmp.path().join("cache"), &["ls", image.as_str()]).fails_with(&[&format!(
        "{image} is not an OCI image layout: no such directory"
    )]);
}

// ------------------------------------------------------------------ manifest and config

#[test]
fn unknown_layer_media_type_is_named() {
    let tar = small_tar();
    let bzip = "application/vnd.oci.image.layer.v1.tar+bzip2";
    let fx = Fx::custom(&[&tar], vec![desc(bzip, &tar)], vec![digest_of(&tar)]);
    fx.run("ls", &[]).fails_with(&[&format!(
        "unsupported media type \"{bzip}\" for layer {}",
        digest_of(&tar)
    )]);
}

#[test]
fn config_with_fewer_diff_ids_than_layers_is_refused() {
    let a = small_tar();
    let b = Tar::default().file("b.txt", b"b\n").finish();
    let fx = Fx::custom(
        &[&a, &b],
        vec![desc(OCI_LAYER_TAR, &a), desc(OCI_LAYER_TAR, &b)],
        vec![digest_of(&a)],
    );
    let config = fx.config_digest();
    // The message must say which document is inconsistent.
    fx.run("ls", &[]).fails_with(&[
        "the image config lists 1 diff_id(s) but the manifest has 2 layer(s)",
        &config,
    ]);
}

#[test]
fn garbage_manifest_is_a_json_error_naming_the_blob() {
    let fx = Fx::new(&[plain_layer(&small_tar())]);
    let garbage = b"<html>not a manifest</html>".to_vec();
    let digest = write_blob(&fx.layout, &garbage);
    write_index(
        &fx.layout,
        &[json!({ "mediaType": OCI_MANIFEST, "digest": digest, "size": garbage.len() })],
    );
    fx.run("ls", &[]).fails_with(&[
        &format!("manifest {}: ", fx.blob_path(&digest).display()),
        "expected value at line 1 column 1",
    ]);
}

#[test]
fn damaged_config_blob_is_refused() {
    let tar = small_tar();
    let fx = Fx::custom(
        &[&tar],
        vec![desc(OCI_LAYER_TAR, &tar)],
        vec![digest_of(&tar)],
    );
    let config = fx.config_digest();
    std::fs::write(fx.blob_path(&config), b"").unwrap();
    // An empty blob: its size and digest no longer match the descriptor.
    fx.run("ls", &[])
        .fails_with(&[&format!("blob {config}: size is 0 bytes")]);
    // Same size, other bytes: a digest mismatch naming the config.
    let good = fx.manifest()["config"]["size"].as_u64().unwrap() as usize;
    std::fs::write(fx.blob_path(&config), vec![b'x'; good]).unwrap();
    fx.run("ls", &[]).fails_with(&[&format!(
        "config {config}: sha256 mismatch: expected {config}, got {}",
        digest_of(&vec![b'x'; good])
    )]);
}

#[test]
fn garbage_config_is_a_json_error_naming_the_blob() {
    let tar = small_tar();
    let fx = Fx::new(&[plain_layer(&tar)]);
    let garbage = b"\x00\x01 definitely not JSON".to_vec();
    let config = write_blob(&fx.layout, &garbage);
    let mut manifest = fx.manifest();
    manifest["config"] =
        json!({ "mediaType": OCI_CONFIG, "digest": config, "size": garbage.len() });
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let manifest_digest = write_blob(&fx.layout, &manifest);
    write_index(
        &fx.layout,
        &[json!({ "mediaType": OCI_MANIFEST, "digest": manifest_digest, "size": manifest.len() })],
    );
    fx.run("ls", &[]).fails_with(&[
        &format!("config {}: ", fx.blob_path(&config).display()),
        "expected value at line 1 column 1",
    ]);
}

#[test]
fn manifest_with_a_sha512_layer_digest_is_refused() {
    let tar = small_tar();
    let mut d = desc(OCI_LAYER_TAR, &tar);
    let sha512 = format!("sha512:{}", "cd".repeat(64));
    d["digest"] = json!(sha512);
    let fx = Fx::custom(&[&tar], vec![d], vec![digest_of(&tar)]);
    let manifest = fx.manifest_digest();
    fx.run("ls", &[]).fails_with(&[
        &format!("manifest {}: ", fx.blob_path(&manifest).display()),
        &format!("unsupported digest algorithm in \"{sha512}\""),
    ]);
}

// ------------------------------------------------------------------ hostile tar entries

/// `ls` of a one-layer plain-tar image must fail naming layer 0, the entry
/// and the reason.
fn assert_entry_refused(tar: Vec<u8>, entry: &str, reason: &str) {
    let fx = Fx::new(&[plain_layer(&tar)]);
    let layer = fx.layer_digest(0);
    fx.run("ls", &[])
        .fails_with(&[&format!("layer 0 ({layer}): entry {entry:?}: {reason}")]);
}

#[test]
fn tar_path_with_dotdot_is_refused() {
    let tar = Tar::default()
        .dir("etc/")
        .file("etc/../../evil", b"x")
        .finish();
    assert_entry_refused(tar, "etc/../../evil", "the path contains '..'");
}

#[test]
fn bare_whiteout_is_refused() {
    let tar = Tar::default().dir("etc/").file("etc/.wh.", b"").finish();
    assert_entry_refused(
        tar,
        "etc/.wh.",
        "invalid whiteout \".wh.\": it names no file",
    );
}

#[test]
fn whiteout_of_dot_is_refused() {
    let tar = Tar::default().dir("etc/").file("etc/.wh..", b"").finish();
    assert_entry_refused(
        tar,
        "etc/.wh..",
        "invalid whiteout \".wh..\": it names no file",
    );
}

#[test]
fn hardlink_to_a_missing_target_is_refused() {
    let tar = Tar::default()
        .file("present", b"x")
        .hardlink("link", "absent")
        .finish();
    assert_entry_refused(tar, "link", "hardlink target \"absent\" does not exist");
}

// ------------------------------------------------------------------ references and platforms

#[test]
fn sha512_reference_is_unsupported() {
    let fx = Fx::new(&[plain_layer(&small_tar())]);
    let digest = format!("sha512:{}", "ab".repeat(64));
    let image = format!("{}@{digest}", fx.image());
    ocimount(&fx.cache, &["ls", image.as_str()]).fails_with(&[&format!(
        "unsupported digest algorithm in \"{digest}\": only sha256 is supported"
    )]);
}

#[test]
fn malformed_digest_reference_is_refused() {
    let fx = Fx::new(&[plain_layer(&small_tar())]);
    let image = format!("{}@sha256:NOTHEX", fx.image());
    ocimount(&fx.cache, &["ls", image.as_str()]).fails_with(&[
        "invalid digest \"sha256:NOTHEX\": expected sha256:<64 lowercase hex digits>",
    ]);
}

#[test]
fn reference_with_an_empty_tag_is_refused() {
    let fx = Fx::new(&[plain_layer(&small_tar())]);
    let image = format!("{}:", fx.image());
    ocimount(&fx.cache, &["ls", image.as_str()]).fails_with(&[&format!(
        "invalid image reference {image:?}: the tag after ':' is empty"
    )]);
}

#[test]
fn unknown_digest_reference_is_a_missing_blob() {
    let fx = Fx::new(&[plain_layer(&small_tar())]);
    let digest = digest_of(b"no such manifest");
    let image = format!("{}@{digest}", fx.image());
    ocimount(&fx.cache, &["ls", image.as_str()]).fails_with(&[&format!(
        "blob {digest} is missing from {}",
        fx.layout.display()
    )]);
}

#[test]
fn nonexistent_tag_lists_the_tags_present() {
    let fx = Fx::new(&[plain_layer(&small_tar())]);
    let mut entries = read_index(&fx.layout)["manifests"]
        .as_array()
        .unwrap()
        .clone();
    let mut v2 = entries[0].clone();
    v2["annotations"]["org.opencontainers.image.ref.name"] = json!("v2");
    entries.push(v2);
    write_index(&fx.layout, &entries);
    let image = format!("{}:nope", fx.image());
    ocimount(&fx.cache, &["ls", image.as_str()]).fails_with(&[&format!(
        "tag \"nope\" not found in {}/index.json (tags present: latest, v2)",
        fx.layout.display()
    )]);
}

#[test]
fn platform_without_an_architecture_is_refused() {
    let fx = Fx::new(&[plain_layer(&small_tar())]);
    for sub in ["ls", "inspect"] {
        fx.run(sub, &["--platform", "linux"])
            .fails_with(&["invalid platform \"linux\": expected os/arch[/variant]"]);
    }
}

// ------------------------------------------------------------------ paths inside the image

#[test]
fn cat_of_a_directory_is_refused() {
    let fx = Fx::new(&[gzip_layer(&small_tar())]);
    fx.run("cat", &["/etc"])
        .fails_with(&["/etc: not a regular file"]);
}

#[test]
fn cat_of_a_missing_path_is_enoent() {
    let fx = Fx::new(&[gzip_layer(&small_tar())]);
    fx.run("cat", &["/etc/shadow"])
        .fails_with(&["/etc/shadow: no such file or directory in the image"]);
    fx.run("cat", &["/hello.txt/x"])
        .fails_with(&["/hello.txt/x: no such file or directory in the image"]);
}

#[test]
fn ls_of_a_missing_path_is_enoent() {
    let fx = Fx::new(&[gzip_layer(&small_tar())]);
    fx.run("ls", &["/usr/bin"])
        .fails_with(&["/usr/bin: no such file or directory in the image"]);
    fx.run("ls", &["-l", "/nope"])
        .fails_with(&["/nope: no such file or directory in the image"]);
}

// ------------------------------------------------------------------ verify

#[test]
fn verify_reports_exactly_the_corrupted_layer() {
    let good_tar = small_tar();
    let bad_tar = Tar::default()
        .file("payload.bin", &random_bytes(32 * 1024, 11))
        .finish();
    let fx = Fx::new(&[gzip_layer(&good_tar), plain_layer(&bad_tar)]);
    let good = fx.layer_digest(0);
    let bad = fx.layer_digest(1);
    // Same size, one byte of payload.bin changed: digest and diff_id both wrong.
    flip_byte(&fx.blob_path(&bad), 4096);
    let actual = digest_of(&std::fs::read(fx.blob_path(&bad)).unwrap());
    let run = fx.run("verify", &[]);
    let stderr = run
        .fails_with(&[
            "verification failed",
            &format!("blob digest is {actual}, expected {bad}"),
        ])
        .to_string();
    let all = format!("{}{stderr}", String::from_utf8_lossy(&run.stdout));
    let ok_lines: Vec<&str> = all.lines().filter(|l| l.starts_with("ok")).collect();
    let failed_lines: Vec<&str> = all.lines().filter(|l| l.starts_with("FAILED")).collect();
    assert!(
        ok_lines
            .iter()
            .any(|l| l.contains("layer 1/2") && l.contains(&good)),
        "the good layer is not reported ok:\n{all}"
    );
    assert!(
        !ok_lines.iter().any(|l| l.contains(&bad)),
        "the bad layer is reported ok:\n{all}"
    );
    assert!(!failed_lines.is_empty(), "no FAILED line:\n{all}");
    for l in &failed_lines {
        assert!(
            l.contains("layer 2/2") && l.contains(&bad),
            "a FAILED line is not about the bad layer:\n{all}"
        );
    }
    assert!(
        !all.lines()
            .any(|l| l.contains(&good) && !l.starts_with("ok")),
        "the good layer is mentioned as a problem:\n{all}"
    );
    // The corruption is a diff_id problem too.
    assert!(
        failed_lines.iter().any(|l| l.contains("diff_id is")),
        "the diff_id mismatch is not reported:\n{all}"
    );
}

#[test]
fn verify_reports_a_missing_layer_blob_and_checks_the_others() {
    let fx = Fx::new(&[gzip_layer(&small_tar()), zstd_layer(&biggish_tar())]);
    let good = fx.layer_digest(0);
    let gone = fx.layer_digest(1);
    std::fs::remove_file(fx.blob_path(&gone)).unwrap();
    let run = fx.run("verify", &[]);
    let stderr = run.fails_with(&[
        "verification failed, 1 problem(s)",
        &format!("blob {gone} is missing from {}", fx.layout.display()),
    ]);
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("ok") && l.contains("layer 1/2") && l.contains(&good)),
        "the good layer is not reported ok:\n{stderr}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("FAILED  layer 2/2") && l.contains(&gone)),
        "the missing layer is not reported:\n{stderr}"
    );
}

#[test]
fn verify_of_an_intact_image_passes() {
    let fx = Fx::new(&[gzip_layer(&small_tar()), zstd_layer(&biggish_tar())]);
    let run = fx.run("verify", &[]);
    run.success();
    let ok = run.stderr.lines().filter(|l| l.starts_with("ok")).count();
    assert_eq!(ok, 4, "manifest, config and two layers:\n{}", run.stderr);
}

// ------------------------------------------------------------------ damaged caches

const BIG_LEN: usize = 3 * (1 << 20) + 12345;

/// An image whose one layer (gzip, or zstd) holds a 3 MiB pseudo-random
/// file, indexed once with `ls`, with what the checks compare against.
struct CacheFx {
    fx: Fx,
    big: Vec<u8>,
    tar: Vec<u8>,
    listing: String,
    dir: PathBuf,
    index_bytes: Vec<u8>,
}

impl CacheFx {
    fn gzip() -> CacheFx {
        CacheFx::new(false)
    }

    fn new(zstd: bool) -> CacheFx {
        let big = random_bytes(BIG_LEN, 0x0c1d_2023);
        let tar = Tar::default()
            .dir("etc/")
            .file("etc/hostname", b"box\n")
            .file("big.bin", &big)
            .file("tail.txt", b"after the big file\n")
            .finish();
        let layer = if zstd {
            zstd_layer(&tar)
        } else {
            gzip_layer(&tar)
        };
        let fx = Fx::new(&[layer]);
        let listing = fx.run("ls", &["-lR"]).ok();
        assert!(listing.contains("big.bin"), "{listing}");
        let dir = fx.entry_dir(&fx.layer_digest(0));
        let index_bytes = std::fs::read(dir.join("index")).unwrap();
        let spans = std::fs::metadata(dir.join("spans")).unwrap().len();
        assert!(
            zstd || spans >= 3,
            "only {spans} span(s) for a 3 MiB gzip layer"
        );
        assert_eq!(
            std::fs::metadata(dir.join("data")).unwrap().len(),
            tar.len() as u64
        );
        CacheFx {
            fx,
            big,
            tar,
            listing,
            dir,
            index_bytes,
        }
    }

    fn index_path(&self) -> PathBuf {
        self.dir.join("index")
    }

    fn index_ino(&self) -> u64 {
        std::fs::metadata(self.index_path()).unwrap().ino()
    }

    /// `ls -lR` and `cat` give exactly what the layer holds.
    fn check_output(&self) {
        assert_eq!(self.fx.run("ls", &["-lR"]).ok(), self.listing);
        let got = self.fx.run("cat", &["/big.bin"]).success().to_vec();
        assert!(
            got == self.big,
            "cat /big.bin: wrong bytes ({} bytes)",
            got.len()
        );
        let tail = self.fx.run("cat", &["/tail.txt"]).success().to_vec();
        assert_eq!(tail, b"after the big file\n");
    }

    /// The index was replaced (a new file renamed into place) by one equal
    /// to the index first built.
    fn check_index_rebuilt(&self, damaged_ino: u64) {
        let now = std::fs::read(self.index_path()).unwrap();
        assert!(
            now == self.index_bytes,
            "the index was not rewritten to a valid one ({} bytes, first build {})",
            now.len(),
            self.index_bytes.len()
        );
        assert_ne!(
            self.index_ino(),
            damaged_ino,
            "the damaged index file is still in place"
        );
    }

    /// Overwrite the index in place with `bytes` (same inode).
    fn damage_index(&self, bytes: &[u8]) -> u64 {
        let ino = self.index_ino();
        std::fs::write(self.index_path(), bytes).unwrap();
        assert_eq!(self.index_ino(), ino);
        ino
    }
}

#[test]
fn cache_truncated_index_is_rebuilt() {
    let c = CacheFx::gzip();
    let half = c.index_bytes.len() / 2;
    let ino = c.damage_index(&c.index_bytes[..half]);
    c.check_output();
    c.check_index_rebuilt(ino);
}

#[test]
fn cache_bit_flipped_index_is_rebuilt() {
    let c = CacheFx::gzip();
    let mut bytes = c.index_bytes.clone();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    let ino = c.damage_index(&bytes);
    c.check_output();
    c.check_index_rebuilt(ino);
}

#[test]
fn cache_index_of_another_version_is_rebuilt() {
    let c = CacheFx::gzip();
    let mut bytes = c.index_bytes.clone();
    bytes[8..12].copy_from_slice(&99u32.to_le_bytes());
    let ino = c.damage_index(&bytes);
    c.check_output();
    c.check_index_rebuilt(ino);
}

#[test]
fn cache_missing_data_file_is_rebuilt() {
    let c = CacheFx::gzip();
    let ino = c.index_ino();
    std::fs::remove_file(c.dir.join("data")).unwrap();
    c.check_output();
    c.check_index_rebuilt(ino);
    assert_eq!(
        std::fs::metadata(c.dir.join("data")).unwrap().len(),
        c.tar.len() as u64
    );
}

/// (e): garbage over the first 4 KiB of a filled `data` file, size kept.
fn damaged_span_is_decoded_again(c: &CacheFx) {
    // Fill every span of big.bin into `data`.
    let first = c.fx.run("cat", &["/big.bin"]).success().to_vec();
    assert!(first == c.big, "first cat: wrong bytes");
    let data_path = c.dir.join("data");
    let data = std::fs::read(&data_path).unwrap();
    assert!(
        data[..4096] == c.tar[..4096],
        "span 0 was not filled by cat"
    );
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&data_path)
            .unwrap();
        f.write_all(&random_bytes(4096, 99)).unwrap();
    }
    assert_eq!(
        std::fs::metadata(&data_path).unwrap().len(),
        data.len() as u64
    );
    assert!(std::fs::read(&data_path).unwrap()[..4096] != c.tar[..4096]);
    let index_before = c.index_ino();
    c.check_output();
    // The index was fine: it stays; the damaged span was written again.
    assert_eq!(c.index_ino(), index_before);
    let repaired = std::fs::read(&data_path).unwrap();
    assert!(
        repaired[..4096] == c.tar[..4096],
        "the damaged span was not rewritten in the data cache"
    );
}

#[test]
fn cache_damaged_span_in_data_is_decoded_again() {
    damaged_span_is_decoded_again(&CacheFx::gzip());
}

#[test]
fn cache_damaged_span_in_zstd_data_is_decoded_again() {
    damaged_span_is_decoded_again(&CacheFx::new(true));
}

#[test]
fn cache_missing_data_file_of_a_zstd_layer_is_rebuilt() {
    let c = CacheFx::new(true);
    let ino = c.index_ino();
    std::fs::remove_file(c.dir.join("data")).unwrap();
    c.check_output();
    c.check_index_rebuilt(ino);
}

#[test]
fn cache_missing_spans_file_is_rebuilt() {
    let c = CacheFx::gzip();
    let ino = c.index_ino();
    std::fs::remove_file(c.dir.join("spans")).unwrap();
    c.check_output();
    c.check_index_rebuilt(ino);
}

#[test]
fn cache_index_of_another_layer_is_rebuilt() {
    let c = CacheFx::gzip();
    let mut bytes = c.index_bytes.clone();
    // The layer digest in the header (bytes 12..44).
    bytes[12] ^= 0xff;
    let ino = c.damage_index(&bytes);
    c.check_output();
    c.check_index_rebuilt(ino);
}
