//! What the ARM builds must do, checked by the build under test on the
//! machine it runs on. `scripts/cross.sh test aarch64|armv7` runs these
//! under qemu-user (the daemon and every `ocimount` the tests start are ARM
//! binaries too, through binfmt_misc); `cargo test` runs them natively,
//! where they check the same things for the host.
//!
//! * the host platform is found with no `--platform`: arm64/v8 for aarch64,
//!   arm/v7 then v6 then v5 for armv7, on images whose content differs per
//!   platform;
//! * the mount daemon runs where `FUSE_DEV_IOC_CLONE` is missing (qemu-user);
//! * a layer whose stream is larger than 4 GiB indexes, mounts and reads
//!   right on a 32-bit build;
//! * an index written by another build (x86-64) is read as is.
//!
//! Environment, set by `scripts/cross.sh`: `OCIMOUNT_EMULATED=1` makes the
//! emulation-only expectations strict; `OCIMOUNT_OTHER_BIN` is an ocimount
//! built for another target (the x86-64 one), for the shared-cache test.

mod common;
mod support;

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    build_layout, gzip_layer, hex, plain_layer, run_with_timeout, sha256, write_blob, write_index,
    Run, OCI_CONFIG, OCI_LAYER_GZIP, OCI_LAYER_ZSTD, OCI_MANIFEST,
};
use serde_json::{json, Value};
use support::{process_alive, wait_until, Mounted, BIN, REPO};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// Running under qemu-user on another architecture (set by scripts/cross.sh).
fn emulated() -> bool {
    std::env::var_os("OCIMOUNT_EMULATED").is_some_and(|v| v == "1")
}

/// `ocimount --cache CACHE ARGS…` with its own time limit.
fn ocimount_within(limit: Duration, cache: &Path, args: &[&str]) -> Run {
    let mut all = vec!["--cache", cache.to_str().unwrap()];
    all.extend_from_slice(args);
    run_with_timeout(Path::new(BIN), &all, limit)
}

fn ocimount(cache: &Path, args: &[&str]) -> Run {
    ocimount_within(Duration::from_secs(180), cache, args)
}

fn sample_image() -> String {
    format!("{REPO}/sample/image")
}

/// The platform this build must choose from a multi-arch image offering
/// it, and the ELF `e_machine` of binaries built for it.
fn host_platform() -> Option<(&'static str, u16)> {
    match std::env::consts::ARCH {
        "x86_64" => Some(("linux/amd64", 62)),
        "aarch64" => Some(("linux/arm64/v8", 183)),
        "arm" => Some(("linux/arm/v7", 40)),
        _ => None,
    }
}

fn inspect(cache: &Path, image: &str) -> Value {
    serde_json::from_str(&ocimount(cache, &["inspect", "--json", image]).ok())
        .expect("inspect --json prints JSON")
}

fn elf_machine(bytes: &[u8]) -> u16 {
    assert_eq!(&bytes[..4], b"\x7fELF", "not an ELF file");
    u16::from_le_bytes([bytes[18], bytes[19]])
}

// ------------------------------------------------------------ host platform

#[test]
fn the_sample_image_gives_this_build_its_own_platform_without_platform_flag() {
    let Some((want, machine)) = host_platform() else {
        return eprintln!("no sample platform for {}", std::env::consts::ARCH);
    };
    let cache = tempfile::tempdir().unwrap();
    let report = inspect(cache.path(), &sample_image());
    assert_eq!(report["platform"]["chosen"], want, "{report:#}");
    assert_eq!(report["platform"]["explicit"], false);
    let platform_file = ocimount(
        cache.path(),
        &["cat", &sample_image(), "/etc/ocimount-sample-platform"],
    )
    .ok();
    assert_eq!(platform_file, format!("{want}\n"));
    let busybox = ocimount(cache.path(), &["cat", &sample_image(), "/bin/busybox"]);
    assert_eq!(elf_machine(busybox.success()), machine);

    let m = Mounted::new(cache.path(), &sample_image(), &[]);
    let mounted = std::fs::read_to_string(m.path().join("etc/ocimount-sample-platform")).unwrap();
    assert_eq!(mounted, format!("{want}\n"));
    let busybox = std::fs::read(m.path().join("bin/busybox")).unwrap();
    assert_eq!(elf_machine(&busybox), machine);
}

/// A tar of regular files given as (path, bytes).
fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(1_700_000_000);
        builder.append_data(&mut header, path, *data).unwrap();
    }
    builder.into_inner().unwrap()
}

/// An untagged multi-platform index (as `skopeo copy --all` writes) with
/// an attestation manifest first, then one image per platform: a shared
/// base layer and a layer whose `/platform` and `/payload` name the platform.
fn multi_arch_layout(parent: &Path, name: &str, platforms: &[&str]) -> PathBuf {
    let root = parent.join(name);
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(
        root.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let base = gzip_layer(&tar_of(&[("etc/base", b"shared by every platform\n")]));
    let mut manifests = Vec::new();
    let mut push_image = |platform: Value, layers: &[&common::LayerSpec]| {
        let mut config = json!({
            "os": platform["os"], "architecture": platform["architecture"],
            "rootfs": { "type": "layers", "diff_ids": layers.iter().map(|l| format!("sha256:{}", hex(&l.2))).collect::<Vec<_>>() },
        });
        if let Some(v) = platform.get("variant") {
            config["variant"] = v.clone();
        }
        let config = serde_json::to_vec(&config).unwrap();
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": { "mediaType": OCI_CONFIG, "digest": write_blob(&root, &config), "size": config.len() },
            "layers": layers.iter().map(|l| json!({
                "mediaType": l.1, "digest": write_blob(&root, &l.0), "size": l.0.len(),
            })).collect::<Vec<_>>(),
        }))
        .unwrap();
        manifests.push(json!({
            "mediaType": OCI_MANIFEST,
            "digest": write_blob(&root, &manifest),
            "size": manifest.len(),
            "platform": platform,
        }));
    };
    let attestation = gzip_layer(&tar_of(&[("sbom.json", b"{}")]));
    push_image(
        json!({ "os": "unknown", "architecture": "unknown" }),
        &[&attestation],
    );
    for text in platforms {
        let parts: Vec<&str> = text.split('/').collect();
        let mut platform = json!({ "os": parts[0], "architecture": parts[1] });
        if let Some(v) = parts.get(2) {
            platform["variant"] = json!(v);
        }
        let own = gzip_layer(&tar_of(&[
            ("platform", format!("{text}\n").as_bytes()),
            ("payload", &payload(text)),
        ]));
        push_image(platform, &[&base, &own]);
    }
    write_index(&root, &manifests);
    root
}

/// 64 KiB that differ per platform.
fn payload(platform: &str) -> Vec<u8> {
    let seed = sha256(platform.as_bytes());
    (0..64 * 1024u32)
        .map(|i| seed[(i % 32) as usize] ^ (i / 32) as u8)
        .collect()
}

/// The platform each build takes from `platforms`, or None when none fits.
fn expected_choice(platforms: &[&str]) -> Option<String> {
    let host_order: &[&str] = match std::env::consts::ARCH {
        "x86_64" => &["linux/amd64", "linux/386"],
        "aarch64" => &[
            "linux/arm64/v8",
            "linux/arm/v8",
            "linux/arm/v7",
            "linux/arm/v6",
            "linux/arm/v5",
        ],
        "arm" => &["linux/arm/v7", "linux/arm/v6", "linux/arm/v5"],
        _ => return None,
    };
    host_order
        .iter()
        .find(|p| platforms.contains(p))
        .map(|p| p.to_string())
}

#[test]
fn a_generated_multi_arch_image_gives_each_build_its_own_content() {
    let work = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let cases: [(&str, &[&str]); 3] = [
        (
            "arm64-and-arm-v6-v5",
            &[
                "linux/amd64",
                "linux/arm/v5",
                "linux/arm64/v8",
                "linux/arm/v6",
                "linux/386",
            ],
        ),
        (
            "arm-v5-only",
            &["linux/amd64", "linux/arm/v5", "linux/s390x"],
        ),
        (
            "arm-v7-and-v5",
            &["linux/arm/v5", "linux/arm/v7", "linux/amd64"],
        ),
    ];
    for (name, platforms) in cases {
        let layout = multi_arch_layout(work.path(), name, platforms);
        let image = layout.to_str().unwrap();
        let Some(want) = expected_choice(platforms) else {
            continue;
        };
        let report = inspect(cache.path(), image);
        assert_eq!(report["platform"]["chosen"], want, "{name}: {report:#}");
        let reason = report["platform"]["reason"].as_str().unwrap();
        let exact = report["platform"]["wanted"] == want;
        assert_eq!(
            reason.contains("fallback"),
            !exact,
            "{name}: chose {want} because {reason:?}"
        );
        let cat = |path: &str| {
            ocimount(cache.path(), &["cat", image, path])
                .success()
                .to_vec()
        };
        assert_eq!(cat("/platform"), format!("{want}\n").into_bytes(), "{name}");
        assert!(
            cat("/payload") == payload(&want),
            "{name}: payload of another platform"
        );
        assert_eq!(cat("/etc/base"), b"shared by every platform\n");
    }
    // Through the mount, where the 32-bit build must fall back past a missing v7.
    let layout = work.path().join("arm64-and-arm-v6-v5");
    let want = expected_choice(cases[0].1).unwrap();
    let m = Mounted::new(cache.path(), layout.to_str().unwrap(), &[]);
    assert_eq!(
        std::fs::read_to_string(m.path().join("platform")).unwrap(),
        format!("{want}\n")
    );
    assert!(std::fs::read(m.path().join("payload")).unwrap() == payload(&want));
    if std::env::consts::ARCH == "arm" {
        assert_eq!(want, "linux/arm/v6");
    }
}

#[test]
fn an_image_without_this_platform_is_refused_with_the_list_it_offers() {
    let work = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let offered = ["linux/s390x", "linux/ppc64le", "windows/amd64"];
    let layout = multi_arch_layout(work.path(), "elsewhere", &offered);
    let run = ocimount(cache.path(), &["ls", layout.to_str().unwrap()]);
    let stderr = run.fails_with(&["no manifest for platform", "the image offers"]);
    assert!(
        stderr.contains("linux/s390x, linux/ppc64le, windows/amd64"),
        "{stderr}"
    );
    if let Some((host, _)) = host_platform() {
        // The 32-bit build may read a v8 CPU (a Raspberry Pi 3 or 4) and ask for arm/v8.
        let host = host.trim_end_matches("/v7");
        assert!(stderr.contains(&format!("platform {host}")), "{stderr}");
    }
}

// ------------------------------------------------------------ FUSE clone

#[test]
fn the_mount_daemon_serves_where_fuse_dev_ioc_clone_is_missing() {
    let clone_works = ocimount::serve::clone_fd_supported();
    if emulated() {
        assert!(
            !clone_works,
            "qemu-user answered FUSE_DEV_IOC_CLONE: this test no longer proves the fallback"
        );
    }
    let cache = tempfile::tempdir().unwrap();
    let m = Mounted::new(cache.path(), &sample_image(), &[]);
    let pid = m.daemon_pid();
    // Many readers at once: the worker threads share the one /dev/fuse fd.
    let files = ["bin/busybox", "etc/passwd", "etc/motd", "srv/app/hello.txt"];
    let first: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(m.path().join(f)).unwrap())
        .collect();
    std::thread::scope(|s| {
        for t in 0..8 {
            let (first, mnt) = (&first, m.path());
            s.spawn(move || {
                for round in 0..5 {
                    let i = (t + round) % files.len();
                    let bytes = std::fs::read(mnt.join(files[i])).unwrap();
                    assert!(bytes == first[i], "{} changed between reads", files[i]);
                }
            });
        }
    });
    assert!(process_alive(pid), "the daemon died");
    let logs: String = std::fs::read_dir(cache.path().join("logs"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(
        logs.contains("FUSE_DEV_IOC_CLONE is not available"),
        !clone_works,
        "the daemon log should say whether it shares one fd:\n{logs}"
    );
    assert!(!logs.contains("panicked"), "{logs}");
    ocimount(cache.path(), &["umount", m.path().to_str().unwrap()]).ok();
    assert!(
        wait_until(Duration::from_secs(30), || !process_alive(pid)),
        "daemon {pid} still running after umount"
    );
}

// ------------------------------------------------------------ > 4 GiB layer

/// The big file: 5 GiB and a bit, zeros but for 16 bytes at every MiB
/// (the offset and its complement), so a read from a truncated offset
/// cannot pass for the right one.
const BIG_SIZE: u64 = 5 * GIB + 4097;
const TAIL: &[u8] = b"this file lies after the 5 GiB one\n";

fn big_file_bytes(offset: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let end = (offset + len as u64).min(BIG_SIZE);
    let mut mark = offset / MIB * MIB;
    while mark < end {
        let mut marker = [0u8; 16];
        marker[..8].copy_from_slice(&mark.to_le_bytes());
        marker[8..].copy_from_slice(&(!mark).to_le_bytes());
        for (i, b) in marker.iter().enumerate() {
            let at = mark + i as u64;
            if at >= offset && at < end {
                out[(at - offset) as usize] = *b;
            }
        }
        mark += MIB;
    }
    out.truncate(end.saturating_sub(offset) as usize);
    out
}

fn tar_header(path: &str, size: u64) -> [u8; 512] {
    let mut header = tar::Header::new_ustar();
    header.set_path(path).unwrap();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(1_700_000_000);
    header.set_cksum();
    *header.as_bytes()
}

/// Stream the layer's tar (a small file, the big file, the tail file) into
/// a native gzip and sha256sum at once; returns the diff_id and tar length.
/// Under qemu the compressors run natively, so this takes seconds.
fn write_big_layer(blob: &Path, limit: Duration) -> ([u8; 32], u64) {
    let gzip = if Command::new("pigz").arg("--version").output().is_ok() {
        "pigz"
    } else {
        "gzip"
    };
    let mut zip = Command::new(gzip)
        .args(["-1", "-c"])
        .stdin(Stdio::piped())
        .stdout(File::create(blob).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {gzip}: {e}"));
    let mut sum = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum");
    let (mut zin, mut sin) = (zip.stdin.take().unwrap(), sum.stdin.take().unwrap());
    let started = Instant::now();
    let mut total = 0u64;
    let mut put = |bytes: &[u8]| {
        assert!(
            started.elapsed() < limit,
            "writing the layer took over {limit:?}"
        );
        zin.write_all(bytes).unwrap();
        sin.write_all(bytes).unwrap();
        total += bytes.len() as u64;
    };
    let pad = |len: u64| vec![0u8; ((512 - len % 512) % 512) as usize];
    let small = b"before the big file\n";
    put(&tar_header("small.txt", small.len() as u64));
    put(small);
    put(&pad(small.len() as u64));
    put(&tar_header("big", BIG_SIZE));
    let mut chunk = vec![0u8; MIB as usize];
    let mut at = 0;
    while at < BIG_SIZE {
        let len = (BIG_SIZE - at).min(MIB) as usize;
        chunk[..16].copy_from_slice(&big_file_bytes(at, 16));
        put(&chunk[..len]);
        at += len as u64;
    }
    put(&pad(BIG_SIZE));
    put(&tar_header("tail.txt", TAIL.len() as u64));
    put(TAIL);
    put(&pad(TAIL.len() as u64));
    put(&[0u8; 1024]);
    drop((zin, sin));
    assert!(zip.wait().unwrap().success(), "{gzip} failed");
    let out = sum.wait_with_output().unwrap();
    assert!(out.status.success());
    let hex_sum = String::from_utf8(out.stdout).unwrap();
    let mut diff_id = [0u8; 32];
    for (i, b) in diff_id.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex_sum[2 * i..2 * i + 2], 16).unwrap();
    }
    (diff_id, total)
}

#[test]
fn a_layer_over_4_gib_indexes_mounts_and_reads_right() {
    let work = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let blob_path = work.path().join("big.tar.gz");
    let started = Instant::now();
    let (diff_id, tar_len) = write_big_layer(&blob_path, Duration::from_secs(300));
    let blob = std::fs::read(&blob_path).unwrap();
    eprintln!(
        "layer: {tar_len} bytes of tar, {} gzipped, written in {:.1?}",
        blob.len(),
        started.elapsed()
    );
    let layout = build_layout(work.path(), &[(blob, OCI_LAYER_GZIP, diff_id)]);
    let image = layout.to_str().unwrap();

    let started = Instant::now();
    let report: Value = serde_json::from_str(
        &ocimount_within(
            Duration::from_secs(20 * 60),
            cache.path(),
            &["inspect", "--json", image],
        )
        .ok(),
    )
    .unwrap();
    eprintln!("indexed in {:.1?}", started.elapsed());
    let layer = &report["layers"][0];
    assert_eq!(layer["uncompressed_size"], tar_len, "{layer:#}");
    assert_eq!(layer["entries"], 3);
    assert!(
        layer["spans"].as_u64().unwrap() > 4 * 1024 / 64,
        "{layer:#}"
    );

    let listing = ocimount(cache.path(), &["ls", "-l", image, "/"]).ok();
    let big_line = listing
        .lines()
        .find(|l| l.ends_with(" big"))
        .unwrap_or_else(|| panic!("no big file in:\n{listing}"));
    assert!(
        big_line
            .split_whitespace()
            .any(|f| f == BIG_SIZE.to_string()),
        "{big_line}"
    );
    assert_eq!(
        ocimount(cache.path(), &["cat", image, "/tail.txt"]).success(),
        TAIL
    );

    let m = Mounted::new(cache.path(), image, &[]);
    let big = File::open(m.path().join("big")).unwrap();
    assert_eq!(big.metadata().unwrap().len(), BIG_SIZE);
    for (offset, len) in [
        (0, 64),
        (4 * GIB - 8, 32),
        (4 * GIB + 12_345, 100),
        (4 * GIB + 3 * MIB - 5, 3 * MIB as usize),
        (BIG_SIZE - 4097 - 10, 4107),
        (BIG_SIZE - 100, 100),
    ] {
        let mut buf = vec![0u8; len];
        big.read_exact_at(&mut buf, offset)
            .unwrap_or_else(|e| panic!("read of {len} at {offset}: {e}"));
        assert!(
            buf == big_file_bytes(offset, len),
            "{len} bytes at {offset} differ"
        );
    }
    assert_eq!(std::fs::read(m.path().join("tail.txt")).unwrap(), TAIL);
    assert_eq!(
        std::fs::read(m.path().join("small.txt")).unwrap(),
        b"before the big file\n"
    );
}

// ------------------------------------------------------------ shared cache

/// A layout with every kind of span: gzip checkpoints with windows, zstd
/// frames (small ones decoded on demand, a large one materialised) and
/// plain tar; entries with xattrs, links, ids and times past 32 bits.
fn portable_layout(parent: &Path) -> PathBuf {
    let mut seed = 0x0123_4567_89ab_cdefu64;
    let mut text = |len: usize| -> Vec<u8> {
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                b' ' + (seed >> 58) as u8
            })
            .collect()
    };
    let gz = gzip_layer(&tar_of(&[
        ("gz/text", &text(3 << 20)),
        ("gz/small", b"x\n"),
    ]));
    let zstd_tar = tar_of(&[("zst/one", &text(200_000)), ("zst/big", &text(6 << 20))]);
    let (first, second) = zstd_tar.split_at(512 + 200_192);
    let mut zst = zstd::stream::encode_all(first, 3).unwrap();
    zst.extend(zstd::stream::encode_all(second, 3).unwrap());
    let zst = (zst, OCI_LAYER_ZSTD, sha256(&zstd_tar));
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(5);
    header.set_mode(0o4755);
    header.set_uid(70_000);
    header.set_gid(4_000_000_000);
    header.set_mtime(1);
    builder
        .append_pax_extensions([
            ("SCHILY.xattr.user.arm", b"64 and 32".as_slice()),
            ("mtime", b"1.5"),
        ])
        .unwrap();
    builder
        .append_data(&mut header, "plain/file", &b"plain"[..])
        .unwrap();
    let mut future = tar::Header::new_gnu();
    future.set_size(0);
    future.set_mode(0o600);
    future.set_mtime(4_102_444_800); // 2100-01-01: past a 32-bit time_t
    builder
        .append_data(&mut future, "plain/2100", &b""[..])
        .unwrap();
    let mut link = tar::Header::new_gnu();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_size(0);
    builder
        .append_link(&mut link, "plain/link", "file")
        .unwrap();
    let mut hard = tar::Header::new_gnu();
    hard.set_entry_type(tar::EntryType::Link);
    hard.set_size(0);
    builder
        .append_link(&mut hard, "plain/hard", "plain/file")
        .unwrap();
    let plain = plain_layer(&builder.into_inner().unwrap());
    build_layout(parent, &[gz, zst, plain])
}

/// Every index file of a cache: (layer, inode, mtime s and ns, bytes).
fn index_files(cache: &Path) -> Vec<(String, u64, i64, i64, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(cache.join("layers/sha256"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let path = e.path().join("index");
            let meta = std::fs::metadata(&path).unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                meta.ino(),
                meta.mtime(),
                meta.mtime_nsec(),
                std::fs::read(&path).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

/// What one build shows of an image: a long recursive listing and the
/// bytes of a file from each layer.
fn views(bin: &Path, cache: &Path, image: &str) -> Vec<Vec<u8>> {
    let run = |args: &[&str]| {
        let mut all = vec!["--cache", cache.to_str().unwrap()];
        all.extend_from_slice(args);
        run_with_timeout(bin, &all, Duration::from_secs(300))
            .success()
            .to_vec()
    };
    let mut out = vec![run(&["ls", "-lR", image])];
    for path in ["/gz/text", "/zst/big", "/zst/one", "/plain/hard"] {
        out.push(run(&["cat", image, path]));
    }
    out
}

#[test]
#[ignore = "needs OCIMOUNT_OTHER_BIN, an ocimount built for another target: scripts/cross.sh runs it"]
fn an_index_written_by_another_build_is_read_without_reindexing() {
    let other = std::env::var_os("OCIMOUNT_OTHER_BIN")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .expect("set OCIMOUNT_OTHER_BIN to an ocimount built for another target");
    let this = Path::new(BIN);
    let work = tempfile::tempdir().unwrap();
    let layout = portable_layout(work.path());
    let image = layout.to_str().unwrap();
    for (writer, reader) in [(&*other, this), (this, &*other)] {
        let cache = tempfile::tempdir().unwrap();
        let written = views(writer, cache.path(), image);
        let indexes = index_files(cache.path());
        assert_eq!(indexes.len(), 3);
        let read = views(reader, cache.path(), image);
        assert!(
            read == written,
            "{} shows the cache {} wrote differently",
            reader.display(),
            writer.display()
        );
        assert!(
            index_files(cache.path()) == indexes,
            "{} rewrote an index {} wrote",
            reader.display(),
            writer.display()
        );
    }
    // Both builds write the very same bytes.
    let caches = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    views(&other, caches[0].path(), image);
    views(this, caches[1].path(), image);
    let bytes = |c: &Path| -> Vec<(String, Vec<u8>)> {
        index_files(c).into_iter().map(|i| (i.0, i.4)).collect()
    };
    assert!(
        bytes(caches[0].path()) == bytes(caches[1].path()),
        "the two builds write different index files"
    );
}
