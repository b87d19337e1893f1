//! eStargz and zstd:chunked layers, made by their real producers from the
//! Debian test image (stargz-snapshotter's own estargz package through
//! tests/tools/estargz-build, and `skopeo copy --dest-compress-format
//! zstd:chunked`; scripts/make-lazy-images.sh), read through their tables
//! of contents: the same tree as `umoci unpack` of the source image and as
//! a full pass, a cold read from a registry that fetches a few percent of
//! the layers, and hostile changes that give an error or a full pass,
//! never wrong bytes.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;
use support::registry::TestRegistry;
use support::{
    assert_same_tree, corpus, extract, process_alive, run_bounded, wait_until, Mounted, BIN, REPO,
};

const FORMATS: [&str; 2] = ["estargz", "zstd-chunked"];
const TOC_DIGEST: &str = "containerd.io/snapshot/stargz/toc.digest";

/// The two layouts (`DIR/estargz`, `DIR/zstd-chunked`, tag `latest`),
/// built once from debian-gzip and kept while the producers and the
/// script are unchanged.
fn lazy_images() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let source = corpus().image("debian-gzip").layout.clone();
        let out = corpus().root.with_file_name("test-images-lazy");
        let script = r#"set -euo pipefail
            stamp=$(cat "$REPO/scripts/make-lazy-images.sh" "$REPO/tests/tools/estargz-build/main.go" \
                "$SOURCE/index.json" | sha256sum | cut -c1-32)
            exec 9>"$OUT.lock"; flock 9
            [[ -f $OUT/.stamp && $(<"$OUT/.stamp") == "$stamp" ]] && exit 0
            rm -rf "$OUT" "$OUT.tmp"
            # VERIFY=0: tests/tools/lazy-inspect.py cannot place the Latin-1
            # names of corpus/names either (the TOC holds U+FFFD for them).
            VERIFY=0 ESTARGZ_PRIORITIZE=/usr/lib/os-release,/usr/bin/bash \
                "$REPO/scripts/make-lazy-images.sh" "$SOURCE:latest" "$OUT.tmp" >&2
            echo "$stamp" >"$OUT.tmp/.stamp"
            mv "$OUT.tmp" "$OUT""#;
        let built = run_bounded(
            Command::new("bash")
                .arg("-c")
                .arg(script)
                .env("REPO", REPO)
                .env("SOURCE", &source)
                .env("OUT", &out),
            Duration::from_secs(15 * 60),
        );
        assert!(
            built.status.success(),
            "scripts/make-lazy-images.sh failed: {}",
            String::from_utf8_lossy(&built.stderr)
        );
        out
    })
}

fn layout(format: &str) -> PathBuf {
    lazy_images().join(format)
}

/// `ocimount --cache CACHE ARGS…` with info logging, bounded.
fn om(cache: &Path, args: &[&str]) -> Output {
    run_bounded(
        Command::new(BIN)
            .arg("--cache")
            .arg(cache)
            .args(args)
            .env("RUST_LOG", "ocimount=info")
            .env_remove("OCIMOUNT_CACHE"),
        Duration::from_secs(300),
    )
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn success(out: &Output, what: &str) -> Vec<u8> {
    assert!(out.status.success(), "{what} failed:\n{}", stderr(out));
    out.stdout.clone()
}

/// (digest, compressed size) of each layer of `format`'s image, in order.
fn layer_sizes<C: FromIterator<(String, u64)>>(format: &str) -> C {
    let (manifest, _) = manifest_of(&layout(format));
    support::manifest_layers(&manifest)
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

/// The layout's manifest (its only one) and where it lies.
fn manifest_of(layout: &Path) -> (Value, PathBuf) {
    let index = json(&layout.join("index.json"));
    let digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let path = blob_path(layout, &digest);
    (json(&path), path)
}

/// Export `image` through `extra` flags and compare with the source's
/// `umoci unpack`; returns the export's stderr.
fn export_matches_umoci(image: &str, extra: &[&str]) -> String {
    let cache = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let tar = work.path().join("rootfs.tar");
    let mut args = extra.to_vec();
    args.extend(["export", "-o", tar.to_str().unwrap(), image]);
    let out = om(cache.path(), &args);
    success(&out, &format!("export {image}"));
    let tree = work.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    extract(&tar, &tree);
    let reference = corpus()
        .image("debian-gzip")
        .reference
        .clone()
        .expect("debian-gzip has a reference unpack");
    assert_same_tree(&reference, &tree);
    stderr(&out)
}

#[test]
fn each_format_exports_the_tree_umoci_unpacks_from_the_source() {
    for format in FORMATS {
        let image = format!("{}:latest", layout(format).display());
        let log = export_matches_umoci(&image, &[]);
        let name = if format == "estargz" {
            "eStargz"
        } else {
            "zstd:chunked"
        };
        let (manifest, _) = manifest_of(&layout(format));
        let layers = manifest["layers"].as_array().unwrap().len();
        // Every layer through its TOC but those the TOC cannot describe,
        // each read by a full pass with a warning that says why: the two
        // with Latin-1 names (corpus/names, added then whited out), which
        // the TOC holds as U+FFFD. (For zstd:chunked that includes the
        // layer where skopeo made corpus/big/compressible.txt one 30 MiB
        // chunk: checked whole when the layer is indexed, then pieces.)
        let fallbacks = [
            "\"corpus/names/caf\u{fffd}-latin1\": a name that is not UTF-8 in the tar",
            "\"corpus/names/.wh.na\u{fffd}ve-latin1\": a name that is not UTF-8 in the tar",
        ];
        assert_eq!(
            log.matches(&format!("indexed from its {name} table of contents"))
                .count(),
            layers - fallbacks.len(),
            "{log}"
        );
        assert_eq!(log.matches("WARN").count(), fallbacks.len(), "{log}");
        for reason in fallbacks {
            assert!(log.contains(reason), "no warning {reason:?}:\n{log}");
        }
        // The same tree by a full pass.
        let full = export_matches_umoci(&image, &["--no-toc"]);
        assert!(!full.contains("table of contents:"), "{full}");
    }
}

#[test]
fn a_cold_read_from_a_registry_fetches_a_few_percent_of_the_layers() {
    let registry = TestRegistry::new();
    let reference = corpus().image("debian-gzip").reference.clone().unwrap();
    let want = std::fs::read(reference.join("usr/lib/os-release")).unwrap();
    for format in FORMATS {
        registry.push(
            &format!("oci:{}:latest", layout(format).display()),
            &format!("{format}:latest"),
        );
        let layers: Vec<(String, u64)> = layer_sizes(format);
        let mark = registry.access_records().len();
        let cache = tempfile::tempdir().unwrap();
        let image = registry.docker_ref(&format!("{format}:latest"));
        let out = om(
            cache.path(),
            &[
                "--tls-verify=false",
                "--no-remote-index",
                "cat",
                &image,
                "/etc/os-release",
            ],
        );
        assert_eq!(success(&out, &format!("cat {image}")), want, "{format}");
        // The layers whose TOC could not be used (see the export test)
        // are read by a full pass; the others must cost a few percent.
        let log = plain(&stderr(&out));
        let fell_back: Vec<&(String, u64)> = layers
            .iter()
            .filter(|(digest, _)| {
                log.lines()
                    .any(|l| l.contains("is not used") && l.contains(&format!("layer={digest}")))
            })
            .collect();
        // Two layers, in both formats: their corpus/names hold names
        // that are not UTF-8, which a TOC cannot carry.
        assert_eq!(fell_back.len(), 2, "{log}");
        let fetched = registry.blob_bytes_by_digest(mark);
        let (mut lazy_fetched, mut lazy_total, mut all_fetched) = (0, 0, 0);
        for layer @ (digest, size) in &layers {
            let got = fetched.get(digest).copied().unwrap_or(0);
            all_fetched += got;
            if !fell_back.contains(&layer) {
                lazy_fetched += got;
                lazy_total += size;
            }
        }
        let total: u64 = layers.iter().map(|(_, size)| size).sum();
        eprintln!(
            "{format}: cat /etc/os-release fetched {all_fetched} of {total} compressed layer \
             bytes; {lazy_fetched} of the {lazy_total} of the layers read through their TOC"
        );
        assert!(lazy_fetched > 0, "{format}: nothing fetched?");
        assert!(
            lazy_fetched * 20 < lazy_total,
            "{format}: {lazy_fetched} of {lazy_total} bytes of the TOC layers fetched"
        );
        if format == "estargz" {
            // Its fallbacks are two small layers: under 5% in all.
            assert!(all_fetched * 20 < total, "{all_fetched} of {total}");
        }
    }
}

/// Every regular file under `root`, in the order a directory walk (as
/// `tar` makes it) meets them.
fn files_in_walk_order(root: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(root).unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            files_in_walk_order(&entry.path(), out);
        } else if kind.is_file() {
            out.push(entry.path());
        }
    }
}

/// Reading every file of a mount through the TOCs, as `tar` does: each
/// compressed byte of the TOC layers is fetched about once (the readahead
/// and the decode-ahead never ask twice for the same range), and in large
/// requests (the readahead grows while the reads go along a layer in
/// order), never a request a chunk. The bytes read are the reference's.
#[test]
fn reading_everything_through_the_tocs_fetches_each_byte_once_in_large_requests() {
    let registry = TestRegistry::new();
    let reference = corpus().image("debian-gzip").reference.clone().unwrap();
    for format in FORMATS {
        registry.push(
            &format!("oci:{}:latest", layout(format).display()),
            &format!("{format}:latest"),
        );
        let layers: BTreeMap<String, u64> = layer_sizes(format);
        let cache = tempfile::tempdir().unwrap();
        let image = registry.docker_ref(&format!("{format}:latest"));
        let mark = registry.access_records().len();
        let dir = tempfile::tempdir().unwrap();
        let out = om(
            cache.path(),
            &[
                "--tls-verify=false",
                "mount",
                "--no-remote-index",
                &image,
                dir.path().to_str().unwrap(),
            ],
        );
        success(&out, &format!("mount {image}"));
        let mounted = Mounted {
            dir,
            cache: cache.path().to_path_buf(),
        };
        let mount_log = plain(&stderr(&out));
        let mut files = Vec::new();
        files_in_walk_order(mounted.path(), &mut files);
        assert!(files.len() > 1000, "{format}: {} files", files.len());
        for file in &files {
            let rel = file.strip_prefix(mounted.path()).unwrap();
            let got = std::fs::read(file).unwrap_or_else(|e| panic!("{format}: {rel:?}: {e}"));
            let want = std::fs::read(reference.join(rel)).unwrap();
            assert!(got == want, "{format}: {rel:?} differs from umoci's");
        }
        drop(mounted);
        // The layers read through their TOC (the others fell back to a
        // full pass, one GET each).
        let lazy: BTreeMap<&String, &u64> = layers
            .iter()
            .filter(|(digest, _)| {
                !mount_log
                    .lines()
                    .any(|l| l.contains("is not used") && l.contains(&format!("layer={digest}")))
            })
            .collect();
        assert_eq!(lazy.len(), 4, "{mount_log}");
        let records = registry.access_records()[mark..].to_vec();
        let (mut bytes, mut requests, mut size) = (0, 0, 0);
        for (digest, layer_size) in &lazy {
            let gets: Vec<_> = records
                .iter()
                .filter(|r| r.method == "GET" && r.path.ends_with(&format!("/blobs/{digest}")))
                .collect();
            requests += gets.len() as u64;
            bytes += gets.iter().map(|r| r.bytes).sum::<u64>();
            size += **layer_size;
        }
        eprintln!(
            "{format}: reading all {} files fetched {bytes} bytes of the {size} of the {} TOC \
             layers in {requests} requests",
            files.len(),
            lazy.len()
        );
        assert!(
            bytes * 100 <= size * 105,
            "{format}: {bytes} bytes fetched for {size} bytes of TOC layers"
        );
        // A request a 256 KiB window would be size / 256 KiB of them; the
        // readahead takes the layers in far fewer.
        assert!(
            requests * 2 * (256 << 10) <= size,
            "{format}: {requests} requests for {size} bytes"
        );
    }
}

#[test]
fn the_files_before_the_prefetch_landmark_are_fetched_after_a_mount() {
    let registry = TestRegistry::new();
    let reference = corpus().image("debian-gzip").reference.clone().unwrap();
    registry.push(
        &format!("oci:{}:latest", layout("estargz").display()),
        "estargz:latest",
    );
    let image = registry.docker_ref("estargz:latest");
    let cache = tempfile::tempdir().unwrap();
    let mark = registry.access_records().len();
    // No --prefetch: the landmark's files are fetched all the same.
    let mounted = Mounted::new(
        cache.path(),
        &image,
        &["--tls-verify=false", "--no-remote-index"],
    );
    let log = || -> String {
        std::fs::read_dir(cache.path().join("logs"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(60), || log()
            .contains("the fill has ended")),
        "the fill did not end:\n{}",
        log()
    );
    let log = plain(&log());
    // Which layers have a landmark: those holding the prioritised files
    // that are read through their TOC (the make-lazy-images.sh step).
    let landmarked: Vec<String> = log
        .lines()
        .filter(|l| l.contains("spans before layer"))
        .filter_map(|l| l.split("layer=").nth(1))
        .map(|d| d.trim().to_string())
        .collect();
    assert!(!landmarked.is_empty(), "no landmark prefetched:\n{log}");
    // Each such layer: the parent's TOC read (one or two requests) and one
    // for the prefetch.
    assert!(
        wait_until(Duration::from_secs(10), || landmarked.iter().all(|d| {
            registry.access_records()[mark..]
                .iter()
                .any(|r| r.method == "GET" && r.blob_digest() == Some(d.as_str()))
        })),
        "no request for the landmarked layers"
    );
    let requests = registry.access_records()[mark..].to_vec();
    for digest in &landmarked {
        let gets = requests
            .iter()
            .filter(|r| r.method == "GET" && r.blob_digest() == Some(digest.as_str()))
            .count();
        assert!((2..=3).contains(&gets), "{gets} requests for {digest}");
    }
    // The prioritised files are now read without a byte from the registry.
    let before = registry.access_records().len();
    for file in ["usr/lib/os-release", "usr/bin/bash"] {
        let got = std::fs::read(mounted.path().join(file)).unwrap();
        assert!(
            got == std::fs::read(reference.join(file)).unwrap(),
            "/{file} differs"
        );
    }
    // The registry logs a request once it has answered: give a late line
    // time to land before saying there is none.
    std::thread::sleep(Duration::from_millis(500));
    let fetched = registry.blob_bytes_by_digest(before);
    assert!(
        fetched.is_empty(),
        "fetched after the prefetch: {fetched:?}"
    );
    drop(mounted);
}

/// `text` without the terminal colour escapes the log may carry.
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A copy of `format`'s layout in `dir`, its layer `i` rewritten by
/// `change` (the blob's bytes, and the layer descriptor), with the
/// manifest and index.json following the new digests.
fn changed_layout(
    format: &str,
    dir: &Path,
    pick: impl Fn(&Value) -> bool,
    change: impl FnOnce(&mut Vec<u8>, &mut Value),
) -> PathBuf {
    let copy = dir.join(format);
    let status = Command::new("cp")
        .arg("-a")
        .arg(layout(format))
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    let (mut manifest, manifest_path) = manifest_of(&copy);
    let layers = manifest["layers"].as_array_mut().unwrap();
    let layer = layers
        .iter_mut()
        .find(|l| pick(l))
        .expect("a layer to change");
    let old = layer["digest"].as_str().unwrap().to_string();
    let mut blob = std::fs::read(blob_path(&copy, &old)).unwrap();
    change(&mut blob, layer);
    let new = support::registry::sha256_digest(&blob);
    std::fs::write(blob_path(&copy, &new), &blob).unwrap();
    layer["digest"] = Value::String(new);
    layer["size"] = Value::from(blob.len() as u64);
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let manifest_digest = support::registry::sha256_digest(&bytes);
    std::fs::write(blob_path(&copy, &manifest_digest), &bytes).unwrap();
    std::fs::remove_file(&manifest_path).unwrap();
    let mut index = json(&copy.join("index.json"));
    index["manifests"][0]["digest"] = Value::String(manifest_digest);
    index["manifests"][0]["size"] = Value::from(bytes.len() as u64);
    std::fs::write(copy.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    copy
}

/// The eStargz TOC entries of a blob, read as a test would by hand.
fn estargz_toc(blob: &[u8]) -> Vec<Value> {
    use std::io::Read;
    let footer = &blob[blob.len() - 51..];
    let at = u64::from_str_radix(std::str::from_utf8(&footer[16..32]).unwrap(), 16).unwrap();
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(&blob[at as usize..blob.len() - 51])
        .read_to_end(&mut tar)
        .unwrap();
    let size = usize::from_str_radix(
        std::str::from_utf8(&tar[124..135])
            .unwrap()
            .trim_matches('\0'),
        8,
    )
    .unwrap();
    let toc: Value = serde_json::from_slice(&tar[512..512 + size]).unwrap();
    toc["entries"].as_array().unwrap().clone()
}

/// A gzip member of exactly `len` bytes that inflates to `content` (the
/// header's comment field pads it).
fn gzip_member_of_length(content: &[u8], len: usize) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(content).unwrap();
    let plain = enc.finish().unwrap();
    // 10-byte header, then deflate data and the 8-byte trailer.
    let pad = len
        .checked_sub(plain.len() + 1)
        .expect("the replacement compresses to less than the member");
    let mut member = plain[..10].to_vec();
    member[3] |= 0x10; // FCOMMENT
    member.extend(std::iter::repeat_n(b'x', pad));
    member.push(0);
    member.extend_from_slice(&plain[10..]);
    assert_eq!(member.len(), len);
    member
}

#[test]
fn a_chunk_swapped_for_another_valid_member_is_an_error_not_its_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let reference = corpus().image("debian-gzip").reference.clone().unwrap();
    let target = "usr/lib/os-release";
    let true_bytes = std::fs::read(reference.join(target)).unwrap();
    let forged = vec![b'F'; true_bytes.len()];
    // The layer whose TOC lists the file: its member is swapped.
    let (manifest, _) = manifest_of(&layout("estargz"));
    let holder = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| {
            let blob = std::fs::read(blob_path(&layout("estargz"), l["digest"].as_str().unwrap()))
                .unwrap();
            estargz_toc(&blob)
                .iter()
                .any(|e| e["name"] == target && e["type"] == "reg")
        })
        .expect("a layer lists usr/lib/os-release")["digest"]
        .clone();
    let copy = changed_layout(
        "estargz",
        dir.path(),
        |l| l["digest"] == holder,
        |blob, _| {
            let entries = estargz_toc(blob);
            let i = entries
                .iter()
                .position(|e| e["name"] == target && e["type"] == "reg")
                .unwrap();
            let start = entries[i]["offset"].as_u64().unwrap() as usize;
            let end = entries[i + 1..]
                .iter()
                .filter_map(|e| e["offset"].as_u64())
                .find(|&o| o as usize > start)
                .unwrap() as usize;
            let member = gzip_member_of_length(&forged, end - start);
            blob[start..end].copy_from_slice(&member);
        },
    );
    let image = format!("{}:latest", copy.display());
    let cache = tempfile::tempdir().unwrap();
    let out = om(cache.path(), &["cat", &image, &format!("/{target}")]);
    assert!(!out.status.success(), "the forged chunk was served");
    assert!(
        !out.stdout.windows(forged.len()).any(|w| w == forged),
        "forged bytes reached stdout"
    );
    let log = stderr(&out);
    assert!(log.contains("sha256 mismatch"), "{log}");
    assert!(log.contains("the blob's bytes are sha256:"), "{log}");
    // The other files of the layer are still served.
    let hostname = om(cache.path(), &["cat", &image, "/etc/debian_version"]);
    assert_eq!(
        success(&hostname, "cat /etc/debian_version"),
        std::fs::read(reference.join("etc/debian_version")).unwrap()
    );
    // Through a mount: EIO, and the daemon's log names the file, the
    // layer and both digests.
    let mount_cache = tempfile::tempdir().unwrap();
    let mounted = Mounted::new(mount_cache.path(), &image, &[]);
    let read = std::fs::read(mounted.path().join(target));
    assert_eq!(
        read.as_ref().map_err(|e| e.raw_os_error()).err(),
        Some(Some(libc::EIO)),
        "{read:?}"
    );
    // The forged layer's digest in the copy: the layer at the same place.
    let position = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .position(|l| l["digest"] == holder)
        .unwrap();
    let forged_layer = manifest_of(&copy).0["layers"][position]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let logged = |needle: &str| {
        std::fs::read_dir(mount_cache.path().join("logs"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .find(|log| log.contains(needle))
    };
    let needle = format!("read of /{target} failed");
    assert!(
        wait_until(Duration::from_secs(10), || logged(&needle).is_some()),
        "no log line names the file"
    );
    let line = logged(&needle)
        .unwrap()
        .lines()
        .find(|l| l.contains(&needle))
        .unwrap()
        .to_string();
    assert!(line.contains(&format!("layer {forged_layer}")), "{line}");
    assert!(
        line.contains("sha256 mismatch: the index says sha256:"),
        "{line}"
    );
    assert!(line.contains("the blob's bytes are sha256:"), "{line}");
    // The daemon used the indexes its parent built from the TOCs.
    let daemon_log = logged("").unwrap_or_default();
    assert!(!daemon_log.contains("indexing"), "{daemon_log}");
    assert!(!daemon_log.contains("table of contents"), "{daemon_log}");
    // On its way out the daemon says what the checks cost (the
    // benchmark reads it): here the one span it refused. The line is in
    // the log by the time the daemon has exited: it waits for the thread
    // that copies its stderr into the log to write it. (Before, a daemon
    // could exit with its last lines still in the pipe, and a loaded
    // machine lost them.)
    let daemon = mounted.daemon_pid();
    drop(mounted);
    assert!(
        wait_until(Duration::from_secs(60), || !process_alive(daemon)),
        "the daemon (pid {daemon}) did not exit within 60 s of its unmount"
    );
    assert!(
        logged("span digest checks: ").is_some(),
        "no tally of the checks in the log once the daemon had exited:\n{}",
        logged("").unwrap_or_default()
    );
}

/// The entries of a zstd:chunked layer's TOC, found where the layer's
/// `manifest-position` annotation (`offset:length:json_length:type`) says.
fn zstd_chunked_toc(blob: &[u8], layer: &Value) -> Vec<Value> {
    let position = layer["annotations"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(k, _)| k.ends_with("zstd-chunked.manifest-position"))
        .map(|(_, v)| v.as_str().unwrap().to_string())
        .expect("a manifest-position annotation");
    let fields: Vec<u64> = position
        .split(':')
        .take(3)
        .map(|f| f.parse().unwrap())
        .collect();
    let (offset, length, json_length) = (fields[0] as usize, fields[1] as usize, fields[2]);
    let json =
        zstd::bulk::decompress(&blob[offset..offset + length], json_length as usize).unwrap();
    let toc: Value = serde_json::from_slice(&json).unwrap();
    toc["entries"].as_array().unwrap().clone()
}

/// A zstd:chunked chunk longer than a span (skopeo's 30 MiB frame for
/// corpus/big/compressible.txt) is decoded and checked whole when its
/// layer is indexed. A frame swapped for another valid one (forged bytes,
/// padded to the same length with a skippable frame) does not match the
/// TOC's chunkDigest: the TOC is not used, with a warning that names the
/// chunk, and the full pass that follows finds the tar is not the one the
/// config names. An error, never the forged bytes.
#[test]
fn a_large_chunk_swapped_for_another_valid_frame_sends_the_layer_to_a_full_pass() {
    let target = "corpus/big/compressible.txt";
    let dir = tempfile::tempdir().unwrap();
    let reference = corpus().image("debian-gzip").reference.clone().unwrap();
    let size = std::fs::metadata(reference.join(target)).unwrap().len();
    let forged = vec![b'F'; size as usize];
    let mut at = 0;
    let copy = changed_layout(
        "zstd-chunked",
        dir.path(),
        |l| {
            let blob = std::fs::read(blob_path(
                &layout("zstd-chunked"),
                l["digest"].as_str().unwrap(),
            ))
            .unwrap();
            l["annotations"].is_object()
                && zstd_chunked_toc(&blob, l)
                    .iter()
                    .any(|e| e["name"] == target && e["type"] == "reg")
        },
        |blob, l| {
            let entries = zstd_chunked_toc(blob, l);
            let file = entries
                .iter()
                .find(|e| e["name"] == target && e["type"] == "reg")
                .unwrap();
            assert!(
                entries
                    .iter()
                    .all(|e| e["name"] != target || e["type"] == "reg"),
                "{target} is one chunk"
            );
            let start = file["offset"].as_u64().unwrap() as usize;
            let end = file["endOffset"].as_u64().unwrap() as usize;
            let frame = zstd::bulk::compress(&forged, 19).unwrap();
            let pad = end - start - frame.len();
            assert!(pad >= 8, "the forged frame is longer than the real one");
            let mut swapped = frame;
            // A skippable frame: magic 0x184D2A50, a 32-bit length, bytes.
            swapped.extend_from_slice(&0x184D_2A50u32.to_le_bytes());
            swapped.extend_from_slice(&((pad - 8) as u32).to_le_bytes());
            swapped.resize(end - start, 0);
            blob[start..end].copy_from_slice(&swapped);
            at = start;
        },
    );
    let image = format!("{}:latest", copy.display());
    let cache = tempfile::tempdir().unwrap();
    let out = om(cache.path(), &["cat", &image, &format!("/{target}")]);
    let log = plain(&stderr(&out));
    assert!(!out.status.success(), "the forged chunk was served: {log}");
    assert!(
        !out.stdout.windows(4096).any(|w| w == &forged[..4096]),
        "forged bytes reached stdout"
    );
    assert!(
        log.contains(&format!(
            "the layer's zstd:chunked table of contents is not used, it is malformed: the chunk \
             at blob offset {at}: its bytes are sha256:"
        )),
        "{log}"
    );
    assert!(log.contains("diff_id"), "{log}");
}

#[test]
fn a_toc_the_annotation_does_not_vouch_for_is_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let copy = changed_layout(
        "estargz",
        dir.path(),
        |l| l["annotations"][TOC_DIGEST].is_string(),
        |_, layer| {
            layer["annotations"][TOC_DIGEST] = Value::String(format!("sha256:{}", "0".repeat(64)));
        },
    );
    let image = format!("{}:latest", copy.display());
    let log = export_matches_umoci(&image, &[]);
    assert!(
        log.contains("table of contents is not used, its digest is sha256:"),
        "{log}"
    );
    assert!(
        log.contains("the manifest's annotation says sha256:0000"),
        "{log}"
    );
}

#[test]
fn verify_compares_each_toc_with_its_tar_and_names_a_lie() {
    // The real producers' TOCs tell the truth.
    for format in FORMATS {
        let cache = tempfile::tempdir().unwrap();
        let image = format!("{}:latest", layout(format).display());
        let out = om(cache.path(), &["verify", &image]);
        let log = plain(&stderr(&out));
        assert!(out.status.success(), "{format}: {log}");
        let (manifest, _) = manifest_of(&layout(format));
        let layers = manifest["layers"].as_array().unwrap().len();
        let agreeing = log.matches("table of contents agrees with the tar").count();
        let unused = log.matches("is not used by a mount").count();
        // The layers whose TOC a mount falls back from (see the export
        // test) are said so; every other one agrees.
        assert_eq!((agreeing, unused), (layers - 2, 2), "{format}: {log}");
    }

    // A TOC that lies about a mode, vouched for all the way down: its
    // annotation, the layer digest and the diff_id all follow the lie.
    let target = "usr/lib/os-release";
    let dir = tempfile::tempdir().unwrap();
    let lists_target = |blob: &[u8]| {
        estargz_toc(blob)
            .iter()
            .any(|e| e["name"] == target && e["type"] == "reg")
    };
    let copy = changed_layout(
        "estargz",
        dir.path(),
        |l| {
            l["annotations"][TOC_DIGEST].is_string()
                && lists_target(
                    &std::fs::read(blob_path(&layout("estargz"), l["digest"].as_str().unwrap()))
                        .unwrap(),
                )
        },
        |blob, layer| {
            let mut entries = estargz_toc(blob);
            for e in entries.iter_mut() {
                if e["name"] == target {
                    e["mode"] = Value::from(0o600);
                }
            }
            let json =
                serde_json::to_vec(&serde_json::json!({"version": 1, "entries": entries})).unwrap();
            // The TOC member keeps its offset, so the footer stays.
            let footer = blob[blob.len() - 51..].to_vec();
            let at = u64::from_str_radix(std::str::from_utf8(&footer[16..32]).unwrap(), 16).unwrap()
                as usize;
            let mut tar = tar::Builder::new(Vec::new());
            let mut header = tar::Header::new_ustar();
            header.set_size(json.len() as u64);
            header.set_mode(0o644);
            tar.append_data(&mut header, "stargz.index.json", &json[..])
                .unwrap();
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            std::io::Write::write_all(&mut gz, &tar.into_inner().unwrap()).unwrap();
            blob.truncate(at);
            blob.extend(gz.finish().unwrap());
            blob.extend(footer);
            layer["annotations"][TOC_DIGEST] =
                Value::String(support::registry::sha256_digest(&json));
        },
    );
    recompute_diff_ids(&copy);
    let image = format!("{}:latest", copy.display());
    let cache = tempfile::tempdir().unwrap();
    // A mount believes it (nothing there reads the tar) …
    let listing = om(cache.path(), &["ls", "-l", &image, "/usr/lib"]);
    let listing = String::from_utf8_lossy(&success(&listing, "ls -l")).into_owned();
    let line = listing
        .lines()
        .find(|l| l.ends_with(" os-release"))
        .unwrap_or_else(|| panic!("{listing}"));
    assert!(line.starts_with("-rw-------"), "{line}");
    // … and verify says what the tar says instead, naming the file.
    let out = om(cache.path(), &["verify", &image]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let log = plain(&stderr(&out));
    assert!(
        log.contains(&format!(
            "its table of contents disagrees with its tar: \"{target}\": the TOC says mode 600, the tar 644"
        )),
        "{log}"
    );
    assert_eq!(
        log.lines().filter(|l| l.starts_with("FAILED")).count(),
        1,
        "{log}"
    );
}

/// Set the config's diff_ids to what the layers of `copy` decompress to,
/// and the manifest and index to that config.
fn recompute_diff_ids(copy: &Path) {
    use std::io::Read;
    let (mut manifest, manifest_path) = manifest_of(copy);
    let config_digest = manifest["config"]["digest"].as_str().unwrap().to_string();
    let mut config = json(&blob_path(copy, &config_digest));
    let diff_ids: Vec<Value> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let blob = std::fs::read(blob_path(copy, l["digest"].as_str().unwrap())).unwrap();
            let mut tar = Vec::new();
            flate2::read::MultiGzDecoder::new(&blob[..])
                .read_to_end(&mut tar)
                .unwrap();
            Value::String(support::registry::sha256_digest(&tar))
        })
        .collect();
    config["rootfs"]["diff_ids"] = Value::Array(diff_ids);
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let config_digest = support::registry::sha256_digest(&config_bytes);
    std::fs::write(blob_path(copy, &config_digest), &config_bytes).unwrap();
    manifest["config"]["digest"] = Value::String(config_digest);
    manifest["config"]["size"] = Value::from(config_bytes.len() as u64);
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let manifest_digest = support::registry::sha256_digest(&bytes);
    std::fs::write(blob_path(copy, &manifest_digest), &bytes).unwrap();
    std::fs::remove_file(&manifest_path).unwrap();
    let mut index = json(&copy.join("index.json"));
    index["manifests"][0]["digest"] = Value::String(manifest_digest);
    index["manifests"][0]["size"] = Value::from(bytes.len() as u64);
    std::fs::write(copy.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}
