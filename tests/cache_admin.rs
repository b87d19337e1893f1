//! `ocimount cache ls|du|prune|rm` against real images and real mounts:
//! each layer is listed with the images and mounts that use it, totals add
//! up to what is on disk, a layer something reads is never removed, and
//! pruned data is decoded again, byte for byte, when next read.

mod support;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::{corpus, ocimount, ok, run_bounded, Mounted};

fn layout(name: &str) -> String {
    corpus().image(name).layout.to_str().unwrap().to_string()
}

fn json(cache: &Path, args: &[&str]) -> Value {
    serde_json::from_str(&ok(&ocimount(cache, args))).unwrap()
}

/// The layer digests and pinned name of `image`, from `inspect --json`.
fn layers_of(cache: &Path, image: &str, platform: &str) -> (Vec<String>, String) {
    let info = json(cache, &["inspect", "--json", "--platform", platform, image]);
    let layers = info["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    let canonical = Path::new(image).canonicalize().unwrap();
    let pinned = format!(
        "{}@{}",
        canonical.display(),
        info["manifest"].as_str().unwrap()
    );
    (layers, pinned)
}

fn layer_dir(cache: &Path, digest: &str) -> PathBuf {
    cache
        .join("layers/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

fn listed<'a>(list: &'a Value, digest: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|l| l["digest"] == digest)
        .unwrap_or_else(|| panic!("{digest} not listed"))
}

fn fails(out: &std::process::Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in {stderr}");
}

#[test]
fn cache_ls_names_each_layers_images_and_mounts_and_du_adds_them_up() {
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = cache_dir.path();
    let debian = layout("debian-gzip");
    let multi = layout("multiarch");
    let (debian_layers, debian_name) = layers_of(cache, &debian, "linux/amd64");
    let (multi_layers, multi_name) = layers_of(cache, &multi, "linux/arm64");
    let mounted = Mounted::new(cache, &multi, &["--platform", "linux/arm64"]);

    let list = json(cache, &["cache", "ls", "--json"]);
    let mut all: Vec<&String> = debian_layers.iter().chain(&multi_layers).collect();
    all.sort();
    all.dedup();
    assert_eq!(list.as_array().unwrap().len(), all.len());
    let mount_dir = mounted.path().canonicalize().unwrap();
    for digest in &debian_layers {
        let layer = listed(&list, digest);
        assert_eq!(
            layer["images"],
            serde_json::json!([debian_name]),
            "{digest}"
        );
        assert_eq!(layer["mounts"], serde_json::json!([]), "{digest}");
        assert_eq!(layer["in_use"], false, "{digest}");
        let index_len = std::fs::metadata(layer_dir(cache, digest).join("index"))
            .unwrap()
            .len();
        assert_eq!(layer["index_bytes"], index_len, "{digest}");
    }
    for digest in &multi_layers {
        let layer = listed(&list, digest);
        assert_eq!(layer["images"], serde_json::json!([multi_name]), "{digest}");
        assert_eq!(layer["mounts"], serde_json::json!([mount_dir]), "{digest}");
        assert_eq!(layer["in_use"], true, "{digest}");
    }

    // Read one file so some decoded data is held, then total it all.
    ok(&ocimount(cache, &["cat", &debian, "/usr/bin/bash"]));
    let list = json(cache, &["cache", "ls", "--json"]);
    let du = json(cache, &["cache", "du", "--json"]);
    let sum = |field: &str| -> u64 {
        list.as_array()
            .unwrap()
            .iter()
            .map(|l| l[field].as_u64().unwrap())
            .sum()
    };
    let decoded: u64 = all
        .iter()
        .map(|d| {
            std::fs::metadata(layer_dir(cache, d).join("data")).map_or(0, |m| m.blocks() * 512)
        })
        .sum();
    assert!(decoded > 1 << 20, "reading bash decoded {decoded} bytes");
    assert_eq!(du["decoded_bytes"], decoded);
    assert_eq!(du["decoded_bytes"], sum("decoded_bytes"));
    assert_eq!(du["index_bytes"], sum("index_bytes"));
    assert_eq!(du["layers"], all.len());
    assert_eq!(du["images"], 2);
    assert_eq!(du["mounts"], 1);
    assert!(du["disk_bytes"].as_u64().unwrap() >= decoded);
    let text = ok(&ocimount(cache, &["cache", "du"]));
    assert!(
        text.starts_with(&format!("{} layers, 2 images, 1 live mounts\n", all.len())),
        "{text}"
    );
}

#[test]
fn cache_rm_refuses_a_mounted_layer_and_removes_an_unused_one() {
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = cache_dir.path();
    let debian = layout("debian-gzip");
    let tiny = layout("tiny-opaque");
    let (debian_layers, _) = layers_of(cache, &debian, "linux/amd64");
    let (tiny_layers, tiny_pinned) = layers_of(cache, &tiny, "linux/amd64");
    let before = ok(&ocimount(cache, &["ls", "-lR", &tiny, "/"]));
    let tree_of = |pinned: &str| {
        let hex = pinned.rsplit_once("@sha256:").unwrap().1.to_string();
        cache.join("trees/sha256").join(hex)
    };
    let (tiny_tree, debian_tree) = (
        tree_of(&tiny_pinned),
        tree_of(&layers_of(cache, &debian, "linux/amd64").1),
    );
    assert!(tiny_tree.is_file());
    let mounted = Mounted::new(cache, &debian, &[]);
    let pid = mounted.daemon_pid();

    let out = ocimount(cache, &["cache", "rm", &debian_layers[0]]);
    fails(
        &out,
        &format!(
            "layer {} is in use by the mount at {} (pid {pid}); unmount it first",
            debian_layers[0],
            mounted.path().canonicalize().unwrap().display()
        ),
    );
    assert!(layer_dir(cache, &debian_layers[0]).join("index").is_file());

    let out = ok(&ocimount(cache, &["cache", "rm", &tiny_layers[0]]));
    assert!(
        out.starts_with(&format!("removed {}, ", tiny_layers[0])),
        "{out}"
    );
    assert!(!layer_dir(cache, &tiny_layers[0]).exists());
    // The stored tree goes with its layer; the other image's stays.
    assert!(!tiny_tree.exists());
    assert!(debian_tree.is_file());
    // Indexed and merged again on next use, with the same result.
    assert_eq!(ok(&ocimount(cache, &["ls", "-lR", &tiny, "/"])), before);
    assert!(tiny_tree.is_file());

    fails(
        &ocimount(
            cache,
            &[
                "cache",
                "rm",
                "sha256:0000000000000000000000000000000000000000000000000000000000000000",
            ],
        ),
        "is not in this cache",
    );
}

#[test]
fn prune_drops_decoded_data_keeps_indexes_and_all_spares_what_is_mounted() {
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = cache_dir.path();
    let debian = layout("debian-gzip");
    let tiny = layout("tiny-opaque");
    let (debian_layers, _) = layers_of(cache, &debian, "linux/amd64");
    let (tiny_layers, _) = layers_of(cache, &tiny, "linux/amd64");
    let bash = ocimount(cache, &["cat", &debian, "/usr/bin/bash"]);
    let reference = std::fs::read(corpus().reference("debian-gzip").join("usr/bin/bash")).unwrap();
    assert!(bash.status.success() && bash.stdout == reference);
    let held = |d: &String| {
        std::fs::metadata(layer_dir(cache, d).join("data")).map_or(0, |m| m.blocks() * 512)
    };
    // The layers holding decoded data now: the one with bash, at least.
    let holding: Vec<&String> = debian_layers.iter().filter(|d| held(d) > 0).collect();
    assert!(!holding.is_empty());

    // An old layer only: the debian layers were used just now.
    let old = layer_dir(cache, holding[0]).join("used");
    let touched = run_bounded(
        Command::new("touch").args(["-d", "10 days ago"]).arg(&old),
        Duration::from_secs(10),
    );
    assert!(touched.status.success());
    let out = ok(&ocimount(cache, &["cache", "prune", "--older-than", "7d"]));
    assert!(
        out.starts_with("dropped the decoded data of 1 layer(s), "),
        "{out}"
    );
    assert_eq!(held(holding[0]), 0, "{out}");
    for d in &holding[1..] {
        assert!(held(d) > 0, "{d} was pruned though used just now");
    }

    let out = ok(&ocimount(cache, &["cache", "prune"]));
    assert!(out.starts_with("dropped the decoded data of "), "{out}");
    for d in &debian_layers {
        assert_eq!(held(d), 0, "{d} still holds data");
        assert!(
            layer_dir(cache, d).join("index").is_file(),
            "{d} lost its index"
        );
    }
    // Decoded again, byte for byte.
    let again = ocimount(cache, &["cat", &debian, "/usr/bin/bash"]);
    assert!(again.status.success() && again.stdout == reference);

    let _mounted = Mounted::new(cache, &tiny, &[]);
    let out = ok(&ocimount(cache, &["cache", "prune", "--all"]));
    assert!(
        out.starts_with(&format!("removed {} layer(s), ", debian_layers.len())),
        "{out}"
    );
    assert!(
        out.contains(&format!("kept {} layer(s) in use", tiny_layers.len())),
        "{out}"
    );
    for d in &debian_layers {
        assert!(!layer_dir(cache, d).exists(), "{d} was not removed");
    }
    for d in &tiny_layers {
        assert!(
            layer_dir(cache, d).join("index").is_file(),
            "{d} was removed while mounted"
        );
    }
    let du = json(cache, &["cache", "du", "--json"]);
    assert_eq!(
        du["images"], 1,
        "the debian image record outlived its layers"
    );
}

/// A pid no running process can have: one above pid_max.
fn dead_pid() -> u64 {
    let pid_max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    pid_max + 1
}

#[test]
fn an_open_that_indexes_and_merges_also_sweeps_killed_writers_temps() {
    // A process killed while it stored a tree, whose layers then had to be
    // built again (a torn index): the open that rebuilds them takes the
    // process's temp file back too, as the one that finds all built does.
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = cache_dir.path();
    let tiny = layout("tiny-opaque");
    let trees = cache.join("trees/sha256");
    std::fs::create_dir_all(&trees).unwrap();
    let killed_tree = trees.join(format!(".{}.tmp.{}.9", "cd".repeat(32), dead_pid()));
    std::fs::write(&killed_tree, b"half a tree").unwrap();
    ok(&ocimount(cache, &["ls", &tiny, "/"]));
    assert!(
        !killed_tree.exists(),
        "a killed tree writer's file outlived an open that merged"
    );
}

#[test]
fn prune_sweeps_dead_tree_writers_files_and_all_sweeps_trees_no_image_record_names() {
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = cache_dir.path();
    let tiny = layout("tiny-opaque");
    let (_, pinned) = layers_of(cache, &tiny, "linux/amd64");
    ok(&ocimount(cache, &["ls", &tiny, "/"]));
    let manifest = pinned.rsplit_once("@sha256:").unwrap().1.to_string();
    let trees = cache.join("trees/sha256");
    let tree = trees.join(&manifest);
    assert!(tree.is_file(), "ls stored no tree");
    let put = |name: &str, age: Option<&str>| {
        let path = trees.join(name);
        std::fs::write(&path, b"left behind").unwrap();
        if let Some(age) = age {
            let touched = run_bounded(
                Command::new("touch").args(["-d", age]).arg(&path),
                Duration::from_secs(10),
            );
            assert!(touched.status.success());
        }
        path
    };
    // A writer killed between its write and its rename: a pid above
    // pid_max cannot be running. The next open of the image removes its
    // files; a live writer's (this process) stay.
    let killed_tree = put(&format!(".{manifest}.tmp.{}.9", dead_pid()), None);
    let records = cache.join("images");
    let killed_record = records.join(format!(".{manifest}.tmp.{}", dead_pid()));
    std::fs::write(&killed_record, b"{").unwrap();
    let live_record = records.join(format!(".{manifest}.tmp.{}", std::process::id()));
    std::fs::write(&live_record, b"{").unwrap();
    ok(&ocimount(cache, &["ls", &tiny, "/"]));
    assert!(
        !killed_tree.exists(),
        "a killed tree writer's file outlived an open"
    );
    assert!(
        !killed_record.exists(),
        "a killed record writer's file outlived an open"
    );
    assert!(live_record.exists(), "an open took a live writer's file");
    std::fs::remove_file(&live_record).unwrap();
    let dead = put(&format!(".{manifest}.tmp.4242.17"), Some("1 hour ago"));
    let writing = put(&format!(".{manifest}.tmp.4243.18"), None);
    let orphan = put(&"ab".repeat(32), None);

    ok(&ocimount(cache, &["cache", "prune"]));
    assert!(!dead.exists(), "a dead writer's temp file outlived prune");
    assert!(writing.exists(), "prune took a live writer's temp file");
    assert!(
        orphan.exists() && tree.exists(),
        "plain prune removed a tree"
    );
    // The stored tree was kept, not merged again and replaced.
    let inode = |p: &Path| std::fs::metadata(p).unwrap().ino();
    let before = inode(&tree);
    ok(&ocimount(cache, &["ls", &tiny, "/"]));
    assert_eq!(inode(&tree), before, "the tree was stored again");
    let not_a_tree = put("notes.txt", None);

    let _ = std::fs::remove_file(&writing);
    ok(&ocimount(cache, &["cache", "prune", "--all"]));
    assert!(
        !orphan.exists(),
        "a tree no image record names outlived prune --all"
    );
    assert!(!tree.exists(), "the tree outlived its image's layers");
    assert!(
        not_a_tree.exists(),
        "prune --all removed a file not named as a tree"
    );
    std::fs::remove_file(&not_a_tree).unwrap();
    let left: Vec<_> = std::fs::read_dir(&trees).unwrap().flatten().collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Decoded bytes held, once written back (delayed allocation can move a
/// file's block count after its writes return).
fn decoded(cache: &Path) -> u64 {
    let synced = run_bounded(&mut Command::new("sync"), Duration::from_secs(60));
    assert!(synced.status.success());
    json(cache, &["cache", "du", "--json"])["decoded_bytes"]
        .as_u64()
        .unwrap()
}

#[test]
fn index_only_mode_serves_every_byte_and_stores_nothing_decoded() {
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = cache_dir.path();
    let debian = layout("debian-gzip");
    {
        let mounted = Mounted::new(cache, &debian, &["--cache-mode", "index-only"]);
        support::assert_same_tree(&corpus().reference("debian-gzip"), mounted.path());
    }
    assert_eq!(decoded(cache), 0, "index-only stored decoded data");
    let reference = std::fs::read(corpus().reference("debian-gzip").join("usr/bin/bash")).unwrap();
    let out = run_bounded(
        Command::new(support::BIN)
            .env("OCIMOUNT_CACHE_MODE", "index-only")
            .arg("--cache")
            .arg(cache)
            .args(["cat", &debian, "/usr/bin/bash"]),
        Duration::from_secs(120),
    );
    assert!(out.status.success() && out.stdout == reference);
    assert_eq!(
        decoded(cache),
        0,
        "OCIMOUNT_CACHE_MODE=index-only stored data"
    );
    // The same cache in full mode stores what it decodes.
    let out = ocimount(cache, &["cat", &debian, "/usr/bin/bash"]);
    assert!(out.status.success() && out.stdout == reference);
    assert!(decoded(cache) >= reference.len() as u64);
}

#[test]
fn index_only_mode_keeps_only_what_indexing_wrote_for_a_single_zstd_frame() {
    // One zstd frame cannot be entered in the middle: indexing writes its
    // stream, and index-only reads use that, storing nothing more.
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = cache_dir.path();
    let zstd = layout("debian-zstd");
    ok(&ocimount(
        cache,
        &["--cache-mode", "index-only", "ls", &zstd, "/"],
    ));
    let after_indexing = decoded(cache);
    assert!(after_indexing > 0);
    let work = tempfile::tempdir().unwrap();
    let tar = work.path().join("rootfs.tar");
    ok(&ocimount(
        cache,
        &[
            "--cache-mode",
            "index-only",
            "export",
            &zstd,
            "-o",
            tar.to_str().unwrap(),
        ],
    ));
    let rootfs = work.path().join("rootfs");
    std::fs::create_dir(&rootfs).unwrap();
    support::extract(&tar, &rootfs);
    support::assert_same_tree(&corpus().reference("debian-gzip"), &rootfs);
    assert_eq!(decoded(cache), after_indexing);
}

/// The largest regular files of a tree, relative to it.
fn largest_files(root: &Path, n: usize) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let meta = std::fs::symlink_metadata(entry.path()).unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                files.push((
                    meta.len(),
                    entry.path().strip_prefix(root).unwrap().to_path_buf(),
                ));
            }
        }
    }
    files.sort();
    files.into_iter().rev().take(n).map(|(_, p)| p).collect()
}

#[test]
fn cache_max_bounds_decoded_data_while_readers_race_and_every_byte_is_right() {
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = cache_dir.path();
    let debian = layout("debian-gzip");
    let max: u64 = 16 << 20;
    let reference = corpus().reference("debian-gzip");
    let mounted = Mounted::new(cache, &debian, &["--cache-max", "16M"]);
    // Every file once (the tree comparison reads them all)...
    support::assert_same_tree(&reference, mounted.path());
    // ...then the largest ones again, from four threads at once, while
    // their spans are evicted under them.
    let files = largest_files(&reference, 24);
    std::thread::scope(|s| {
        for t in 0..4 {
            let (files, reference, mount) = (&files, &reference, mounted.path());
            s.spawn(move || {
                for k in 0..files.len() {
                    let rel = &files[(k * 7 + t * 5) % files.len()];
                    let got = std::fs::read(mount.join(rel)).unwrap();
                    assert!(
                        got == std::fs::read(reference.join(rel)).unwrap(),
                        "{} has wrong bytes under --cache-max",
                        rel.display()
                    );
                }
            });
        }
    });
    let held = decoded(cache);
    // One check interval and the spans in flight may go past the bound.
    assert!(held <= max + (8 << 20), "{held} bytes decoded, limit {max}");
    assert!(held > 0, "nothing was kept at all");
    let total: u64 = largest_files(&reference, 24)
        .iter()
        .map(|f| std::fs::metadata(reference.join(f)).unwrap().len())
        .sum();
    assert!(
        total > 2 * max,
        "the test reads too little to need eviction"
    );
}
