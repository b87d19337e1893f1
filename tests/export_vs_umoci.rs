//! `ocimount export`, extracted with tar, must equal `umoci unpack` of the
//! same real multi-layer images (gzip, zstd, multi-frame zstd, multi-member
//! gzip, plain tar, Docker media types), compared by the test support's
//! treecmp (tests/support/treecmp.rs).

mod support;

use support::{assert_same_tree, corpus, extract, ocimount, ok};

fn export_equals_reference(name: &str, reference: &str) {
    let corpus = corpus();
    let image = corpus.image(name);
    let cache = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let tar = work.path().join("rootfs.tar");
    ok(&ocimount(
        cache.path(),
        &[
            "export",
            image.layout.to_str().unwrap(),
            "-o",
            tar.to_str().unwrap(),
        ],
    ));
    let rootfs = work.path().join("rootfs");
    std::fs::create_dir(&rootfs).unwrap();
    extract(&tar, &rootfs);
    assert_same_tree(&corpus.reference(reference), &rootfs);
}

#[test]
fn gzip_image_export_equals_umoci_unpack() {
    export_equals_reference("debian-gzip", "debian-gzip");
}

#[test]
fn zstd_twin_export_equals_the_gzip_reference() {
    export_equals_reference("debian-zstd", "debian-gzip");
}

#[test]
fn multiframe_zstd_export_equals_the_gzip_reference() {
    export_equals_reference("debian-zstd-multiframe", "debian-gzip");
}

#[test]
fn multimember_gzip_export_equals_the_gzip_reference() {
    export_equals_reference("debian-gzip-multimember", "debian-gzip");
}

#[test]
fn plain_tar_export_equals_the_gzip_reference() {
    export_equals_reference("debian-plain", "debian-gzip");
}

#[test]
fn docker_media_types_export_equals_the_gzip_reference() {
    export_equals_reference("debian-docker", "debian-gzip");
}

#[test]
fn second_export_reuses_the_index_and_gives_identical_bytes() {
    let corpus = corpus();
    let image = corpus
        .image("debian-gzip")
        .layout
        .to_str()
        .unwrap()
        .to_string();
    let cache = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let first = work.path().join("a.tar");
    let second = work.path().join("b.tar");
    ok(&ocimount(
        cache.path(),
        &["export", &image, "-o", first.to_str().unwrap()],
    ));
    let index_times: Vec<_> = glob_indexes(cache.path())
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .collect();
    ok(&ocimount(
        cache.path(),
        &["export", &image, "-o", second.to_str().unwrap()],
    ));
    let again: Vec<_> = glob_indexes(cache.path())
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .collect();
    assert!(!index_times.is_empty());
    assert_eq!(index_times, again, "the second run rebuilt an index");
    assert!(
        std::fs::read(&first).unwrap() == std::fs::read(&second).unwrap(),
        "exports differ"
    );
}

fn glob_indexes(cache: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out: Vec<_> = std::fs::read_dir(cache.join("layers/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path().join("index"))
        .collect();
    out.sort();
    out
}
