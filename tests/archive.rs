//! Image archives read in place: `docker-archive` and `oci-archive`
//! tarballs written by skopeo from the umoci-built corpus must give exactly
//! the tree `umoci unpack` gave, through export and through a mount, with
//! nothing extracted into the cache; damaged, compressed and ambiguous
//! archives fail with a message that says what is wrong.

mod common;
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::{assert_same_tree, corpus, extract, ocimount, ok, run_bounded, Mounted};

/// `skopeo copy oci:LAYOUT DEST`, bounded.
fn skopeo_copy(layout: &Path, dest: &str) {
    // Every platform of an index, where the destination can hold them.
    let all: &[&str] = if dest.starts_with("oci-archive:") {
        &["--all"]
    } else {
        &[]
    };
    let out = run_bounded(
        Command::new("skopeo")
            .args(["copy", "-q", "--insecure-policy"])
            .args(all)
            .arg(format!("oci:{}", layout.display()))
            .arg(dest),
        Duration::from_secs(300),
    );
    assert!(
        out.status.success(),
        "skopeo copy to {dest} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A corpus image written by skopeo as `kind` (`docker-archive` or
/// `oci-archive`) with name `name`, in `dir`.
fn archive_of(image: &str, kind: &str, name: &str, dir: &Path) -> PathBuf {
    let file = dir.join(format!("{image}.{kind}.tar"));
    skopeo_copy(
        &corpus().image(image).layout,
        &format!("{kind}:{}:{name}", file.display()),
    );
    file
}

fn export_and_compare(cache: &Path, reference: &str, image_ref: &str) {
    let work = tempfile::tempdir().unwrap();
    let tar = work.path().join("rootfs.tar");
    ok(&ocimount(
        cache,
        &["export", image_ref, "-o", tar.to_str().unwrap()],
    ));
    let rootfs = work.path().join("rootfs");
    std::fs::create_dir(&rootfs).unwrap();
    extract(&tar, &rootfs);
    assert_same_tree(&corpus().reference(reference), &rootfs);
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let meta = std::fs::symlink_metadata(entry.path()).unwrap();
        total += if meta.is_dir() {
            dir_bytes(&entry.path())
        } else {
            // Allocated bytes: a sparse data file costs only what it holds.
            std::os::unix::fs::MetadataExt::blocks(&meta) * 512
        };
    }
    total
}

fn fails_with(out: &std::process::Output, needle: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "expected failure: {stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn docker_archive_from_skopeo_exports_the_umoci_tree_without_copying_layers() {
    let work = tempfile::tempdir().unwrap();
    let archive = archive_of("debian-gzip", "docker-archive", "debian:test", work.path());
    let cache = tempfile::tempdir().unwrap();
    let reference = format!("docker-archive:{}:debian:test", archive.display());
    export_and_compare(cache.path(), "debian-gzip", &reference);
    // The layers are plain tar members: served from the archive, so the
    // cache holds indexes only.
    // Mounted by its plain path, the daemon reopens the same archive.
    {
        let mounted = Mounted::new(cache.path(), archive.to_str().unwrap(), &[]);
        assert_eq!(
            std::fs::read(mounted.path().join("etc/debian_version")).unwrap(),
            std::fs::read(corpus().reference("debian-gzip").join("etc/debian_version")).unwrap()
        );
    }
    let archive_len = std::fs::metadata(&archive).unwrap().len();
    let cached = dir_bytes(cache.path());
    assert!(
        cached * 50 < archive_len,
        "the cache holds {cached} bytes for a {archive_len}-byte archive"
    );
    // The same image by its full name, by default (one image) and by plain path.
    for other in [
        format!(
            "docker-archive:{}:docker.io/library/debian:test",
            archive.display()
        ),
        format!("docker-archive:{}", archive.display()),
        archive.display().to_string(),
    ] {
        let out = ok(&ocimount(
            cache.path(),
            &["cat", &other, "/etc/debian_version"],
        ));
        assert_eq!(
            out,
            std::fs::read_to_string(corpus().reference("debian-gzip").join("etc/debian_version"))
                .unwrap(),
            "{other}"
        );
    }
}

#[test]
fn oci_archive_with_a_zstd_layer_mounts_the_umoci_tree() {
    let work = tempfile::tempdir().unwrap();
    let archive = archive_of("debian-zstd", "oci-archive", "v1", work.path());
    let cache = tempfile::tempdir().unwrap();
    let mounted = Mounted::new(
        cache.path(),
        &format!("oci-archive:{}:v1", archive.display()),
        &[],
    );
    assert_same_tree(&corpus().reference("debian-gzip"), mounted.path());
}

#[test]
fn a_plain_path_to_an_oci_archive_is_detected_and_gives_the_layout_listing() {
    let work = tempfile::tempdir().unwrap();
    let archive = archive_of("multiarch", "oci-archive", "latest", work.path());
    let cache = tempfile::tempdir().unwrap();
    let layout = corpus().image("multiarch").layout.clone();
    for platform in ["linux/amd64", "linux/arm64"] {
        let from_layout = ok(&ocimount(
            cache.path(),
            &[
                "ls",
                "-lR",
                "--platform",
                platform,
                layout.to_str().unwrap(),
                "/",
            ],
        ));
        let from_archive = ok(&ocimount(
            cache.path(),
            &[
                "ls",
                "-lR",
                "--platform",
                platform,
                archive.to_str().unwrap(),
                "/",
            ],
        ));
        assert_eq!(from_archive, from_layout, "{platform}");
        assert!(from_layout.contains("bin/hello"), "{from_layout}");
        let arch = platform.rsplit('/').next().unwrap();
        let served = ok(&ocimount(
            cache.path(),
            &[
                "cat",
                "--platform",
                platform,
                archive.to_str().unwrap(),
                "/platform",
            ],
        ));
        let want = std::fs::read_to_string(
            corpus()
                .reference(&format!("multiarch-{arch}"))
                .join("platform"),
        )
        .unwrap();
        assert_eq!(served, want, "{platform}");
    }
}

/// Join `archives` into `out` with one `manifest.json` listing all their
/// images, after `edit` has had its say on the list (links: link → target).
fn rewrite_archives(
    archives: &[&Path],
    out: &Path,
    edit: impl Fn(&mut Vec<serde_json::Value>, &[(String, String)]),
) {
    let mut builder = tar::Builder::new(std::fs::File::create(out).unwrap());
    let mut manifests = Vec::new();
    let mut links = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for file in archives {
        let mut archive = tar::Archive::new(std::fs::File::open(file).unwrap());
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().into_owned();
            if path == Path::new("manifest.json") {
                let mut text = Vec::new();
                std::io::Read::read_to_end(&mut entry, &mut text).unwrap();
                let list: Vec<serde_json::Value> = serde_json::from_slice(&text).unwrap();
                manifests.extend(list);
            } else if seen.insert(path.clone()) {
                let mut header = entry.header().clone();
                if header.entry_type() == tar::EntryType::Symlink {
                    let target = header.link_name().unwrap().unwrap().into_owned();
                    links.push((path.display().to_string(), target.display().to_string()));
                    builder.append_link(&mut header, &path, &target).unwrap();
                } else {
                    builder.append_data(&mut header, &path, &mut entry).unwrap();
                }
            }
        }
    }
    edit(&mut manifests, &links);
    let list = serde_json::to_vec(&manifests).unwrap();
    let mut header = tar::Header::new_ustar();
    header.set_size(list.len() as u64);
    header.set_mode(0o644);
    builder
        .append_data(&mut header, "manifest.json", &list[..])
        .unwrap();
    builder.into_inner().unwrap();
}

/// Two images in one `docker save` archive, as `docker save a b` writes
/// them: skopeo writes one per archive, so the test joins two.
fn two_image_archive(dir: &Path) -> PathBuf {
    let first = archive_of("tiny-opaque", "docker-archive", "tiny:one", dir);
    let second = archive_of("debian-plain", "docker-archive", "debian:two", dir);
    let joined = dir.join("joined.tar");
    rewrite_archives(&[&first, &second], &joined, |_, _| {});
    joined
}

#[test]
fn a_multi_image_docker_archive_is_chosen_by_tag_and_ambiguity_lists_the_tags() {
    let work = tempfile::tempdir().unwrap();
    let joined = two_image_archive(work.path());
    let cache = tempfile::tempdir().unwrap();
    let path = joined.display().to_string();
    export_and_compare(
        cache.path(),
        "tiny-opaque",
        &format!("docker-archive:{path}:tiny:one"),
    );
    let version = ok(&ocimount(
        cache.path(),
        &[
            "cat",
            &format!("docker-archive:{path}:debian:two"),
            "/etc/debian_version",
        ],
    ));
    assert_eq!(
        version,
        std::fs::read_to_string(corpus().reference("debian-gzip").join("etc/debian_version"))
            .unwrap()
    );
    let err = fails_with(
        &ocimount(
            cache.path(),
            &["ls", &format!("docker-archive:{path}"), "/"],
        ),
        "tag \"latest\" not found",
    );
    assert!(
        err.contains("docker.io/library/tiny:one, docker.io/library/debian:two"),
        "{err}"
    );
    fails_with(
        &ocimount(
            cache.path(),
            &["ls", &format!("docker-archive:{path}:nope:1"), "/"],
        ),
        "tag \"docker.io/library/nope:1\" not found",
    );
}

#[test]
fn a_compressed_archive_is_refused_with_what_to_do() {
    let work = tempfile::tempdir().unwrap();
    let archive = archive_of("tiny-opaque", "oci-archive", "v1", work.path());
    let gz = work.path().join("image.tar.gz");
    let out = run_bounded(
        Command::new("sh").arg("-c").arg(format!(
            "gzip -c '{}' > '{}'",
            archive.display(),
            gz.display()
        )),
        Duration::from_secs(60),
    );
    assert!(out.status.success());
    let cache = tempfile::tempdir().unwrap();
    let err = fails_with(
        &ocimount(
            cache.path(),
            &["ls", &format!("oci-archive:{}", gz.display()), "/"],
        ),
        "the archive is gzip-compressed; image archives are read in place, so decompress it first",
    );
    assert!(err.contains(&gz.display().to_string()), "{err}");
}

#[test]
fn damaged_archives_fail_with_the_archive_and_the_reason() {
    let work = tempfile::tempdir().unwrap();
    let archive = archive_of("debian-gzip", "docker-archive", "debian:test", work.path());
    let cache = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(&archive).unwrap();

    // Cut inside the largest layer: its member runs past the end.
    let cut = work.path().join("cut.tar");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    fails_with(
        &ocimount(
            cache.path(),
            &["ls", &format!("docker-archive:{}", cut.display()), "/"],
        ),
        "runs past the end of the archive (truncated?)",
    );

    // One flipped byte in a layer: its digest no longer matches.
    let flipped = work.path().join("flipped.tar");
    let mut changed = bytes.clone();
    let middle = changed.len() / 3;
    changed[middle] ^= 0x55;
    std::fs::write(&flipped, &changed).unwrap();
    let out = ocimount(
        cache.path(),
        &["ls", &format!("docker-archive:{}", flipped.display()), "/"],
    );
    let stderr = fails_with(&out, "sha256 mismatch");
    assert!(stderr.contains("layer"), "{stderr}");

    // Not an image archive at all.
    let other = work.path().join("other.tar");
    let mut builder = tar::Builder::new(std::fs::File::create(&other).unwrap());
    let mut header = tar::Header::new_ustar();
    header.set_size(5);
    header.set_mode(0o644);
    builder
        .append_data(&mut header, "hello.txt", &b"hello"[..])
        .unwrap();
    builder.into_inner().unwrap();
    fails_with(
        &ocimount(cache.path(), &["ls", other.to_str().unwrap(), "/"]),
        "neither a docker-archive (no manifest.json) nor an oci-archive (no index.json)",
    );
    fails_with(
        &ocimount(
            cache.path(),
            &["ls", &format!("oci-archive:{}", other.display()), "/"],
        ),
        "not an oci-archive: it has no oci-layout",
    );
}

#[test]
fn a_classic_docker_save_archive_reads_layers_through_its_symlinks() {
    // Classic `docker save` names each layer `<id>/layer.tar`, and links
    // a layer stored twice; skopeo writes those links too. Point the
    // manifest at the links, so every layer is read through one.
    let work = tempfile::tempdir().unwrap();
    let archive = archive_of("tiny-opaque", "docker-archive", "tiny:v1", work.path());
    let classic = work.path().join("classic.tar");
    rewrite_archives(&[&archive], &classic, |manifests, links| {
        assert!(!links.is_empty(), "skopeo wrote no layer symlinks");
        for layer in manifests[0]["Layers"].as_array_mut().unwrap() {
            let name = layer.as_str().unwrap().to_string();
            let (link, _) = links
                .iter()
                .find(|(_, target)| target.ends_with(&name))
                .unwrap_or_else(|| panic!("no link to {name}"));
            *layer = serde_json::json!(link);
        }
    });
    let cache = tempfile::tempdir().unwrap();
    export_and_compare(
        cache.path(),
        "tiny-opaque",
        &format!("docker-archive:{}", classic.display()),
    );
}

/// One member of a crafted archive: its name, and its data or (`Err`) the
/// target of a symlink.
type Member<'a> = (&'a str, Result<&'a [u8], &'a str>);

/// An archive made of these members.
fn craft(path: &Path, members: &[Member<'_>]) {
    let mut builder = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (name, content) in members {
        let mut header = tar::Header::new_gnu();
        // Written raw: the tar crate refuses some of these names itself.
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_mode(0o644);
        match content {
            Ok(data) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(data.len() as u64);
                header.set_cksum();
                builder.append(&header, *data).unwrap();
            }
            Err(target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                header.set_link_name(target).unwrap();
                header.set_cksum();
                builder.append(&header, &[][..]).unwrap();
            }
        }
    }
    builder.into_inner().unwrap();
}

#[test]
fn hostile_archives_fail_with_what_is_wrong() {
    let work = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"]}}"#;
    let manifest =
        |layer: &str| format!(r#"[{{"Config":"c.json","RepoTags":["x:1"],"Layers":["{layer}"]}}]"#);
    let cases: Vec<(&str, Vec<Member<'_>>, String)> = vec![
        (
            "dotdot.tar",
            vec![("../escape", Ok(&b"x"[..]))],
            "not a readable tar at member ../escape: the path contains '..'".to_string(),
        ),
        (
            "loop.tar",
            vec![
                ("manifest.json", Ok(Box::leak(manifest("a/layer.tar").into_bytes().into_boxed_slice()))),
                ("c.json", Ok(&config[..])),
                ("a/layer.tar", Err("../b/layer.tar")),
                ("b/layer.tar", Err("../a/layer.tar")),
            ],
            "image 0: layer a/layer.tar is not in the archive".to_string(),
        ),
        (
            "missing-config.tar",
            vec![("manifest.json", Ok(Box::leak(manifest("l.tar").into_bytes().into_boxed_slice())))],
            "it has no c.json".to_string(),
        ),
        (
            "garbage-manifest.tar",
            vec![("manifest.json", Ok(&b"[{\"Config\": 7}]"[..]))],
            "(member manifest.json): invalid type: integer `7`, expected a string".to_string(),
        ),
        (
            "no-blob.tar",
            vec![
                ("oci-layout", Ok(&br#"{"imageLayoutVersion":"1.0.0"}"#[..])),
                ("index.json", Ok(&br#"{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef","size":2}]}"#[..])),
            ],
            "blob sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef is missing from".to_string(),
        ),
    ];
    for (name, members, want) in cases {
        let path = work.path().join(name);
        craft(&path, &members);
        let stderr = fails_with(
            &ocimount(cache.path(), &["ls", path.to_str().unwrap(), "/"]),
            &want,
        );
        assert!(stderr.contains(path.to_str().unwrap()), "{name}: {stderr}");
    }
    // A manifest.json over the JSON limit is refused before it is read.
    let huge = work.path().join("huge.tar");
    let big = vec![b' '; (8 << 20) + 1];
    craft(&huge, &[("manifest.json", Ok(&big[..]))]);
    fails_with(
        &ocimount(cache.path(), &["ls", huge.to_str().unwrap(), "/"]),
        "manifest.json is 8388609 bytes, larger than the 8388608-byte limit",
    );
}

fn fixture(rel: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
        .display()
        .to_string()
}

const GCR: &str = "go-containerregistry/pkg/v1/tarball/testdata";

/// go-containerregistry's `docker save` fixtures (SOURCES.md): a layer
/// stored once and linked from a second image, two images in one archive,
/// Docker 25's layout beside manifest.json, and broken ones. Each tree is
/// what `tar -tv` of its layers lists.
#[test]
fn docker_save_fixtures_from_go_containerregistry_read_in_place() {
    let cache = tempfile::tempdir().unwrap();
    let ls = |image: String| ok(&ocimount(cache.path(), &["ls", "-lR", &image, "/"]));
    let link = fixture(&format!("{GCR}/test_link.tar"));
    let foo_bar = "-r-xr-xr-x   1     0     0          4 1970-01-01 00:00 bar\n\
                   -r-xr-xr-x   1     0     0          4 1970-01-01 00:00 foo\n";
    assert_eq!(
        ls(format!(
            "docker-archive:{link}:bazel/v1/tarball:test_image_1"
        )),
        foo_bar
    );
    // test_image_3's first layer.tar is a symlink to test_image_1's.
    assert_eq!(
        ls(format!(
            "docker-archive:{link}:bazel/v1/tarball:test_image_3"
        )),
        format!("{foo_bar}-rw-r-----   1     0     0          6 2021-04-21 02:24 test\n")
    );
    let test = ocimount(
        cache.path(),
        &[
            "cat",
            &format!("docker-archive:{link}:bazel/v1/tarball:test_image_3"),
            "/test",
        ],
    );
    assert_eq!(test.stdout, b"hello\n");

    let bundle = fixture(&format!("{GCR}/test_bundle.tar"));
    assert_eq!(
        ls(format!("docker-archive:{bundle}:test_image_2")),
        "-r-xr-xr-x   1     0     0          4 1970-01-01 00:00 bat\n\
         -r-xr-xr-x   1     0     0          4 1970-01-01 00:00 baz\n"
    );
    fails_with(
        &ocimount(cache.path(), &["ls", &bundle, "/"]),
        "(tags present: docker.io/library/test_image_2:latest, docker.io/library/test_image_1:latest)",
    );

    // Docker 25: manifest.json names the OCI layout's blobs; its index.json
    // lists no manifests, so it reads as a docker-archive only.
    let v25 = fixture(&format!("{GCR}/hello-world-v25.tar"));
    assert_eq!(
        ls(v25.clone()),
        "-rwxr-xr-x   1     0     0       9136 2023-12-15 23:12 hello\n"
    );
    fails_with(
        &ocimount(cache.path(), &["ls", &format!("oci-archive:{v25}"), "/"]),
        "(member index.json) lists no manifests",
    );

    fails_with(
        &ocimount(
            cache.path(),
            &["ls", &fixture(&format!("{GCR}/no_manifest.tar")), "/"],
        ),
        "neither a docker-archive (no manifest.json) nor an oci-archive (no index.json)",
    );
    fails_with(
        &ocimount(
            cache.path(),
            &["ls", &fixture(&format!("{GCR}/null_manifest.tar")), "/"],
        ),
        "(member manifest.json): invalid type: null, expected a sequence",
    );
}

/// dive's 14-layer `docker save` (whiteouts stored with typeflag `\0`, 392
/// hardlinks to `bin/[`), read in place, gives the tree the public fixture
/// test checks when its layers are re-wrapped as a layout.
#[test]
fn dives_docker_save_reads_in_place_as_its_layout_twin() {
    let cache = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let archive = fixture("dive/.data/test-docker-image.tar");
    let layers = common::docker_save_layers(&std::fs::read(&archive).unwrap());
    let layout = common::build_layout(work.path(), &layers);
    let from_layout = ok(&ocimount(
        cache.path(),
        &["ls", "-lR", layout.to_str().unwrap(), "/"],
    ));
    let from_archive = ok(&ocimount(cache.path(), &["ls", "-lR", &archive, "/"]));
    assert_eq!(from_archive, from_layout);
    assert_eq!(from_archive.lines().count(), 29 + 394);
}
