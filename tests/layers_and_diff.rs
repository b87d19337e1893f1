//! `ocimount layers` and `ocimount diff`, from the indexes alone: the
//! per-layer counts of an image built here with known adds, changes and
//! whiteouts, and the diff of two real images checked against what `diff
//! -rq` and `find -printf` say of the trees `umoci unpack` made of them.

mod common;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{build_layout, gzip_layer};
use serde_json::Value;
use support::{corpus, ocimount, ok, run_bounded};

fn tar(entries: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut h = tar::Header::new_ustar();
        h.set_mtime(1_700_000_000);
        match data {
            Some(bytes) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(bytes.len() as u64);
                b.append_data(&mut h, path, *bytes).unwrap();
            }
            None => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, path, &[][..]).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

#[test]
fn layers_counts_adds_changes_deletes_and_wasted_bytes() {
    let work = tempfile::tempdir().unwrap();
    let layers = [
        gzip_layer(&tar(&[
            ("a/", None),
            ("a/x", Some(&[1; 10])),
            ("a/y", Some(&[2; 20])),
            ("b/", None),
            ("b/z", Some(&[3; 30])),
        ])),
        // a/x replaced, b (and b/z) whited out, c new.
        gzip_layer(&tar(&[
            ("a/x", Some(&[4; 5])),
            (".wh.b", Some(b"")),
            ("c", Some(&[5; 7])),
        ])),
        // a made opaque: a/x (layer 2) and a/y (layer 1) go; a/w new.
        gzip_layer(&tar(&[
            ("a/.wh..wh..opq", Some(b"")),
            ("a/w", Some(&[6; 3])),
        ])),
    ];
    let layout = build_layout(work.path(), &layers);
    let cache = work.path().join("cache");
    let counts = layer_counts(&cache, &layout);
    assert_eq!(
        counts,
        vec![
            // added a a/x a/y b b/z; 60 bytes, all of it hidden later.
            [5, 0, 0, 0, 60, 60],
            // a/x changed, b and b/z deleted, c added; a/x's 5 bytes hidden.
            [1, 1, 2, 0, 12, 5],
            // a/w added, a/x and a/y deleted by the opaque directory.
            [1, 0, 2, 1, 3, 0],
        ]
    );
    let table = ok(&ocimount(&cache, &["layers", layout.to_str().unwrap()]));
    assert!(table.ends_with("wasted: 65 B of 75 B (86.7%)\n"), "{table}");
}

/// The counts `ocimount layers --json` gives for `layout`, per layer:
/// added, changed, deleted, opaque_dirs, bytes, wasted.
fn layer_counts(cache: &Path, layout: &Path) -> Vec<[u64; 6]> {
    let out = ok(&ocimount(
        cache,
        &["layers", "--json", layout.to_str().unwrap()],
    ));
    let got: Value = serde_json::from_str(&out).unwrap();
    got.as_array()
        .unwrap()
        .iter()
        .map(|l| {
            [
                "added",
                "changed",
                "deleted",
                "opaque_dirs",
                "bytes",
                "wasted",
            ]
            .map(|k| l[k].as_u64().unwrap())
        })
        .collect()
}

/// Issue 21: a whiteout under a parent that is a symlink in a lower layer
/// deletes what the symlink leads to, as the mount (and `umoci unpack`)
/// does; `layers` replayed whiteouts on literal paths and saw nothing go.
#[test]
fn layers_follows_a_symlinked_parent_as_the_union_does() {
    let work = tempfile::tempdir().unwrap();
    let mut lower = tar::Builder::new(Vec::new());
    for (path, data) in [
        ("usr/", None),
        ("usr/lib/", None),
        ("usr/lib/foo", Some(&[7u8; 11][..])),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_mtime(1_700_000_000);
        h.set_mode(if data.is_some() { 0o644 } else { 0o755 });
        h.set_entry_type(if data.is_some() {
            tar::EntryType::Regular
        } else {
            tar::EntryType::Directory
        });
        h.set_size(data.map_or(0, |d| d.len() as u64));
        lower
            .append_data(&mut h, path, data.unwrap_or(&[]))
            .unwrap();
    }
    let mut h = tar::Header::new_ustar();
    h.set_mtime(1_700_000_000);
    h.set_mode(0o777);
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    lower.append_link(&mut h, "lib", "usr/lib").unwrap();
    let layers = [
        gzip_layer(&lower.into_inner().unwrap()),
        // No `lib` entry of its own: `lib/` is the lower symlink.
        gzip_layer(&tar(&[
            ("lib/.wh.foo", Some(b"")),
            ("lib/new", Some(&[8; 3])),
        ])),
    ];
    let layout = build_layout(work.path(), &layers);
    let cache = work.path().join("cache");
    assert_eq!(
        layer_counts(&cache, &layout),
        vec![
            // usr, usr/lib, usr/lib/foo and lib; foo's 11 bytes hidden later.
            [4, 0, 0, 0, 11, 11],
            // usr/lib/foo deleted through lib, usr/lib/new added.
            [1, 0, 1, 0, 3, 0],
        ]
    );
    // diff --exit-code: 0 for the same image, 1 for a difference, 2 for trouble.
    std::fs::create_dir(work.path().join("lower")).unwrap();
    let lower_only = build_layout(&work.path().join("lower"), &layers[..1]);
    let (a, b) = (lower_only.to_str().unwrap(), layout.to_str().unwrap());
    let same = ocimount(&cache, &["diff", "--exit-code", a, a]);
    assert_eq!(
        (same.status.code(), same.stdout.as_slice()),
        (Some(0), &b""[..])
    );
    let differ = ocimount(&cache, &["diff", "--exit-code", a, b]);
    assert_eq!(differ.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&differ.stdout),
        "D /usr/lib/foo\nA /usr/lib/new\n"
    );
    let missing = work.path().join("nowhere").display().to_string();
    let trouble = ocimount(&cache, &["diff", "--exit-code", a, &missing]);
    assert_eq!(trouble.status.code(), Some(2));
    assert_eq!(ocimount(&cache, &["diff", a, b]).status.code(), Some(0));
    // The mount's own tree agrees: foo is gone, new is in usr/lib.
    let listing = ok(&ocimount(
        &cache,
        &["ls", layout.to_str().unwrap(), "/usr/lib"],
    ));
    assert!(
        listing.contains("new") && !listing.contains("foo"),
        "{listing}"
    );
}

/// A copy of the debian-gzip layout (blobs hard-linked) that stops after
/// its first `keep` layers, tagged `short`.
fn truncated_layout(dir: &Path, keep: usize) -> std::path::PathBuf {
    let source = &corpus().image("debian-gzip").layout;
    let copy = dir.join("short");
    std::fs::create_dir(&copy).unwrap();
    std::fs::copy(source.join("oci-layout"), copy.join("oci-layout")).unwrap();
    // Blobs hard-linked, never written through: new blobs get new names.
    let cp = run_bounded(
        Command::new("cp")
            .arg("-al")
            .arg(source.join("blobs"))
            .arg(copy.join("blobs")),
        Duration::from_secs(60),
    );
    assert!(cp.status.success());
    let read = |digest: &str| -> Value {
        let hex = digest.trim_start_matches("sha256:");
        serde_json::from_slice(&std::fs::read(copy.join("blobs/sha256").join(hex)).unwrap())
            .unwrap()
    };
    let write = |value: &Value| -> (String, usize) {
        let bytes = serde_json::to_vec(value).unwrap();
        let digest = common::digest_of(&bytes);
        let path = copy
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"));
        if !path.exists() {
            std::fs::write(path, &bytes).unwrap();
        }
        (digest, bytes.len())
    };
    let index: Value =
        serde_json::from_slice(&std::fs::read(source.join("index.json")).unwrap()).unwrap();
    let mut manifest = read(index["manifests"][0]["digest"].as_str().unwrap());
    let mut config = read(manifest["config"]["digest"].as_str().unwrap());
    config["rootfs"]["diff_ids"]
        .as_array_mut()
        .unwrap()
        .truncate(keep);
    if let Some(h) = config["history"].as_array_mut() {
        h.retain(|e| e["empty_layer"] == true);
    }
    let (config_digest, config_size) = write(&config);
    manifest["config"]["digest"] = config_digest.into();
    manifest["config"]["size"] = config_size.into();
    manifest["layers"].as_array_mut().unwrap().truncate(keep);
    let (digest, size) = write(&manifest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest, "size": size,
            "annotations": {"org.opencontainers.image.ref.name": "short"}
        }]
    });
    std::fs::write(copy.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    copy
}

/// Every path below `root` with `find -printf` facts: mode, uid, gid.
fn find_facts(root: &Path) -> BTreeMap<String, String> {
    let out = run_bounded(
        Command::new("find")
            .arg(root)
            // NUL-terminated, facts first: names may hold tabs and newlines.
            .args(["-mindepth", "1", "-printf", "%m %U %G /%P\\0"]),
        Duration::from_secs(120),
    );
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split('\0')
        .filter(|r| !r.is_empty())
        .map(|r| {
            let mut parts = r.splitn(4, ' ');
            let facts: Vec<&str> = parts.by_ref().take(3).collect();
            (parts.next().unwrap().to_string(), facts.join(" "))
        })
        .collect()
}

#[test]
fn diff_of_two_images_matches_diff_rq_and_find_on_their_umoci_trees() {
    let work = tempfile::tempdir().unwrap();
    let short = truncated_layout(work.path(), 4);
    let bundle = work.path().join("bundle");
    let unpack = run_bounded(
        Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:short", short.display()))
            .arg(&bundle),
        Duration::from_secs(600),
    );
    assert!(
        unpack.status.success(),
        "{}",
        String::from_utf8_lossy(&unpack.stderr)
    );
    let old_tree = bundle.join("rootfs");
    let new_tree = corpus().reference("debian-gzip");

    // What the standard tools say.
    let dq = run_bounded(
        Command::new("diff")
            .args(["-rq", "--no-dereference"])
            .arg(&old_tree)
            .arg(&new_tree),
        Duration::from_secs(300),
    );
    let text = String::from_utf8_lossy(&dq.stdout).into_owned();
    let (old_facts, new_facts) = (find_facts(&old_tree), find_facts(&new_tree));
    let rel = |root: &Path, p: &str| {
        format!("/{}", Path::new(p).strip_prefix(root).unwrap().display())
            .trim_end_matches('/')
            .to_string()
    };
    let mut content = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line
            .strip_prefix("Files ")
            .or_else(|| line.strip_prefix("Symbolic links "))
        {
            let (a, _) = rest.split_once(" and ").unwrap();
            content.insert(rel(&old_tree, a));
        } else if let Some((left, right)) = line
            .strip_prefix("File ")
            .and_then(|rest| rest.split_once(" while file "))
        {
            // diff says this of special files of the same type too (it
            // cannot compare them): only a change of type counts.
            let (a, old_type) = left.split_once(" is a ").unwrap();
            let (_, new_type) = right.split_once(" is a ").unwrap();
            if old_type != new_type {
                content.insert(rel(&old_tree, a));
            }
        }
    }
    let added: BTreeSet<&String> = new_facts
        .keys()
        .filter(|p| !old_facts.contains_key(*p))
        .collect();
    let removed: BTreeSet<&String> = old_facts
        .keys()
        .filter(|p| !new_facts.contains_key(*p))
        .collect();
    let mut changed: BTreeSet<String> = content.clone();
    for (p, facts) in &old_facts {
        if new_facts.get(p).is_some_and(|f| f != facts) {
            changed.insert(p.clone());
        }
    }
    assert!(!added.is_empty() && !removed.is_empty() && !changed.is_empty());

    // What ocimount says, from the indexes.
    let cache = work.path().join("cache");
    let got: Value = serde_json::from_str(&ok(&ocimount(
        &cache,
        &[
            "diff",
            "--json",
            &format!("{}:short", short.display()),
            corpus().image("debian-gzip").layout.to_str().unwrap(),
        ],
    )))
    .unwrap();
    let list = |k: &str| -> BTreeSet<String> {
        got[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(list("added"), added.into_iter().cloned().collect());
    assert_eq!(list("removed"), removed.into_iter().cloned().collect());
    let got_changed: BTreeMap<String, Vec<String>> = got["changed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let what = c["what"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w.as_str().unwrap().to_string())
                .collect();
            (c["path"].as_str().unwrap().to_string(), what)
        })
        .collect();
    assert_eq!(
        got_changed.keys().cloned().collect::<BTreeSet<_>>(),
        changed
    );
    for p in &content {
        let what = &got_changed[p];
        assert!(
            what.iter()
                .any(|w| ["content", "link", "type"].contains(&w.as_str())),
            "{p}: {what:?}"
        );
    }
}
