//! Integration tests over real public fixtures (see tests/fixtures/ATTRIBUTION.md).
//!
//! Expectations come from the fixtures themselves (index and manifest JSON read
//! here with serde_json, layer tars read with the `tar` crate), from the
//! upstream tests that own them, or from GNU tar's listing of the same tar. No
//! command may panic or run for more than a minute.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

const TESTREPO: &str = "regclient/testdata/testrepo";
const STEREOSCOPE: &str = "stereoscope/pkg/image/oci/testdata";
const REF_NAME: &str = "org.opencontainers.image.ref.name";

fn cache() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn lines(text: &[&str]) -> String {
    text.iter().map(|l| format!("{l}\n")).collect()
}

/// `ls -lR` of an image, which must succeed.
fn ls_lr(cache: &Path, image: &str, extra: &[&str]) -> String {
    let mut args = vec!["ls", "-lR", image];
    args.extend_from_slice(extra);
    ocimount(cache, &args).ok()
}

fn cat(cache: &Path, image: &str, path: &str, extra: &[&str]) -> Vec<u8> {
    let mut args = vec!["cat", image, path];
    args.extend_from_slice(extra);
    ocimount(cache, &args).success().to_vec()
}

fn inspect_json(cache: &Path, image: &str, extra: &[&str]) -> Value {
    let mut args = vec!["inspect", "--json", image];
    args.extend_from_slice(extra);
    serde_json::from_str(&ocimount(cache, &args).ok()).expect("inspect --json prints JSON")
}

/// The regular files of a layer blob, by normalised name.
fn layer_files(blob: &[u8], media_type: &str) -> Vec<(String, Vec<u8>)> {
    tar_members(&decompress(blob, media_type))
        .into_iter()
        .map(|(n, d)| {
            (
                n.trim_start_matches("./")
                    .trim_start_matches('/')
                    .to_string(),
                d,
            )
        })
        .collect()
}

// ====================================================================
// regclient testdata/testrepo
// ====================================================================

fn testrepo() -> PathBuf {
    fixture(TESTREPO)
}

fn testrepo_ref(tag: &str) -> String {
    image_ref(&testrepo(), Some(tag))
}

/// The descriptor index.json tags `tag`.
fn tagged(layout: &Path, tag: &str) -> Value {
    read_index(layout)["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"][REF_NAME] == tag)
        .unwrap_or_else(|| panic!("index.json has no tag {tag}"))
        .clone()
}

/// (os, architecture, variant) with containerd's defaults: arm64 is v8,
/// 32-bit arm without a variant is v7.
fn norm_platform(os: &str, arch: &str, variant: Option<&str>) -> (String, String, String) {
    let variant = match (arch, variant) {
        ("arm64", None) => "v8",
        ("arm", None) => "v7",
        (_, Some(v)) => v,
        (_, None) => "",
    };
    (os.to_string(), arch.to_string(), variant.to_string())
}

/// What a host of platform `wanted` (os/arch[/variant]) runs, best first.
fn acceptable(wanted: &str) -> Vec<(String, String, String)> {
    let parts: Vec<&str> = wanted.split('/').collect();
    let me = norm_platform(parts[0], parts[1], parts.get(2).copied());
    let arm = |v: &str| norm_platform(parts[0], "arm", Some(v));
    let mut out = vec![me.clone()];
    match (me.1.as_str(), me.2.as_str()) {
        ("amd64", _) => out.push(norm_platform(parts[0], "386", None)),
        ("arm64", _) => out.extend(["v8", "v7", "v6", "v5"].map(arm)),
        ("arm", "v7") => out.extend(["v6", "v5"].map(arm)),
        ("arm", "v6") => out.push(arm("v5")),
        _ => {}
    }
    out
}

fn platform_of(desc: &Value) -> Option<(String, String, String)> {
    let p = desc.get("platform")?;
    Some(norm_platform(
        p["os"].as_str()?,
        p["architecture"].as_str()?,
        p["variant"].as_str(),
    ))
}

/// The manifest an image index offers for `wanted`, chosen from the JSON.
fn expected_manifest(index: &Value, wanted: &str) -> Option<Value> {
    let entries = index["manifests"].as_array().unwrap();
    acceptable(wanted).into_iter().find_map(|want| {
        entries
            .iter()
            .find(|d| platform_of(d).as_ref() == Some(&want))
            .cloned()
    })
}

const PLATFORMS: [&str; 4] = ["linux/amd64", "linux/arm64", "linux/arm/v7", "linux/arm/v6"];

#[test]
fn testrepo_platform_choice_matches_the_index() {
    let cache = cache();
    let repo = testrepo();
    let mut chosen_any = 0;
    for tag in ["v1", "v2", "v3", "b1", "b2", "b3"] {
        let desc = tagged(&repo, tag);
        assert_eq!(desc["mediaType"], OCI_INDEX, "{tag} is an index");
        let index = read_json_blob(&repo, desc["digest"].as_str().unwrap());
        for wanted in PLATFORMS {
            let image = testrepo_ref(tag);
            let Some(want) = expected_manifest(&index, wanted) else {
                // Nothing this platform can run: a clear error listing the offers.
                let run = ocimount(
                    cache.path(),
                    &["inspect", "--json", &image, "--platform", wanted],
                );
                let stderr = run.fails_with(&["no manifest for platform"]).to_string();
                for d in index["manifests"].as_array().unwrap() {
                    let (os, arch, variant) = platform_of(d).unwrap();
                    if os == "unknown" {
                        continue;
                    }
                    let shown = if arch == "arm" {
                        format!("{os}/{arch}/{variant}")
                    } else {
                        format!("{os}/{arch}")
                    };
                    assert!(
                        stderr.contains(&shown),
                        "{tag} {wanted}: offers should list {shown}: {stderr}"
                    );
                }
                assert!(
                    !stderr.contains("unknown"),
                    "attestations are not platforms: {stderr}"
                );
                continue;
            };
            chosen_any += 1;
            let report = inspect_json(cache.path(), &image, &["--platform", wanted]);
            let digest = want["digest"].as_str().unwrap();
            assert_eq!(report["manifest"], digest, "{tag} --platform {wanted}");
            let manifest = read_json_blob(&repo, digest);
            assert_eq!(
                report["config"], manifest["config"]["digest"],
                "{tag} {wanted}"
            );
            let config = read_json_blob(&repo, manifest["config"]["digest"].as_str().unwrap());
            let (_, arch, variant) = platform_of(&want).unwrap();
            assert_eq!(
                config["architecture"],
                arch.as_str(),
                "{tag} {wanted}: config architecture"
            );
            if arch == "arm" {
                assert_eq!(
                    config["variant"],
                    variant.as_str(),
                    "{tag} {wanted}: config variant"
                );
            }
            let layers: Vec<&Value> = report["layers"].as_array().unwrap().iter().collect();
            let manifest_layers = manifest["layers"].as_array().unwrap();
            assert_eq!(layers.len(), manifest_layers.len(), "{tag} {wanted}");
            for (i, (got, desc)) in layers.iter().zip(manifest_layers).enumerate() {
                assert_eq!(got["digest"], desc["digest"], "{tag} {wanted} layer {i}");
                assert_eq!(
                    got["diff_id"], config["rootfs"]["diff_ids"][i],
                    "{tag} {wanted} layer {i}"
                );
                assert_eq!(got["compression"], "gzip");
            }
            // The offers are the index's real platforms, attestations left out.
            let offered: Vec<&str> = report["platform"]["offered"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["digest"].as_str().unwrap())
                .collect();
            let real: Vec<&str> = index["manifests"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["platform"]["os"] != "unknown")
                .map(|d| d["digest"].as_str().unwrap())
                .collect();
            assert_eq!(offered, real, "{tag} {wanted}");
        }
    }
    // v1: amd64+arm64, v2: +arm/v7, v3/b*: +arm/v6; arm64 never falls back here.
    assert_eq!(chosen_any, 2 + 3 + 4 + 4 + 4 + 4);
}

#[test]
fn testrepo_v1_attestations_are_skipped() {
    let cache = cache();
    let repo = testrepo();
    let index = read_json_blob(&repo, tagged(&repo, "v1")["digest"].as_str().unwrap());
    let attestations: Vec<&Value> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["platform"]["os"] == "unknown")
        .collect();
    assert_eq!(attestations.len(), 2, "v1 carries two buildx attestations");
    let run = ocimount(
        cache.path(),
        &[
            "inspect",
            "--json",
            &testrepo_ref("v1"),
            "--platform",
            "unknown/unknown",
        ],
    );
    run.fails_with(&["no manifest for platform unknown/unknown"]);
    // The default choice on the usual hosts is the host's own manifest.
    let host = format!("linux/{}", host_arch());
    if let Some(want) = expected_manifest(&index, &host) {
        let report = inspect_json(cache.path(), &testrepo_ref("v1"), &[]);
        assert_eq!(report["manifest"], want["digest"]);
        assert_eq!(report["platform"]["explicit"], false);
    }
}

#[test]
fn testrepo_ls_long_is_exact() {
    let cache = cache();
    let c = cache.path();
    let p = ["--platform", "linux/amd64"];
    let base = "-rw-r--r--   1     0     0          2 2020-01-01 00:00 base.txt";
    let l1 = "-rw-r--r--   1     0     0          2 2021-01-01 00:00 layer1";
    let l2 = "-rw-r--r--   1     0     0          2 2021-01-01 00:00 layer2";
    let l3 = "-rw-r--r--   1     0     0          2 2021-01-01 00:00 layer3";
    let dir = "drwxr-xr-x   2     0     0          0 2021-01-01 00:00 dir";
    let inner = "-rw-r--r--   1     0     0      10240 2021-01-01 00:00 dir/layer.tar";
    let ls = |tag: &str| ocimount(c, &["ls", "-l", &testrepo_ref(tag), p[0], p[1]]).ok();
    assert_eq!(ls("v1"), lines(&[base, l1]));
    assert_eq!(ls("v2"), lines(&[base, l1, l2]));
    assert_eq!(ls("v3"), lines(&[base, dir, l1, l2, l3]));
    assert_eq!(ls("b1"), lines(&[base]));
    assert_eq!(
        ls_lr(c, &testrepo_ref("v3"), &p),
        lines(&[base, dir, inner, l1, l2, l3])
    );
    assert_eq!(
        ocimount(c, &["ls", "-l", &testrepo_ref("v3"), "/dir", p[0], p[1]]).ok(),
        lines(&["-rw-r--r--   1     0     0      10240 2021-01-01 00:00 layer.tar"])
    );
    assert_eq!(
        ocimount(c, &["ls", "-R", &testrepo_ref("v3"), p[0], p[1]]).ok(),
        lines(&[
            "base.txt",
            "dir",
            "dir/layer.tar",
            "layer1",
            "layer2",
            "layer3"
        ])
    );
}

#[test]
fn testrepo_file_bytes_match_the_layer_tars() {
    let cache = cache();
    let repo = testrepo();
    let image = testrepo_ref("v3");
    for wanted in PLATFORMS {
        let index = read_json_blob(&repo, tagged(&repo, "v3")["digest"].as_str().unwrap());
        let manifest = read_json_blob(
            &repo,
            expected_manifest(&index, wanted).unwrap()["digest"]
                .as_str()
                .unwrap(),
        );
        let mut expected = std::collections::BTreeMap::new();
        for l in manifest["layers"].as_array().unwrap() {
            let blob = read_blob(&repo, l["digest"].as_str().unwrap());
            for (name, data) in layer_files(&blob, l["mediaType"].as_str().unwrap()) {
                expected.insert(name, data);
            }
        }
        assert_eq!(expected.len(), 5, "base.txt, layer1-3, dir/layer.tar");
        for (name, data) in &expected {
            assert_eq!(
                &cat(cache.path(), &image, name, &["--platform", wanted]),
                data,
                "{wanted} {name}"
            );
        }
    }
    // Same tree on every platform: the layers are shared, only configs differ.
    let trees: Vec<String> = PLATFORMS
        .iter()
        .map(|p| ls_lr(cache.path(), &image, &["--platform", p]))
        .collect();
    assert!(trees.windows(2).all(|w| w[0] == w[1]), "{trees:?}");
    // b3 is built on another base: its base.txt differs from b1's.
    assert_eq!(
        cat(
            cache.path(),
            &testrepo_ref("b1"),
            "base.txt",
            &["--platform", "linux/amd64"]
        ),
        b"A\n"
    );
    assert_eq!(
        cat(
            cache.path(),
            &testrepo_ref("b3"),
            "base.txt",
            &["--platform", "linux/amd64"]
        ),
        b"B\n"
    );
}

#[test]
fn testrepo_digest_and_meta_references_resolve_like_tags() {
    let cache = cache();
    let repo = testrepo();
    let p = ["--platform", "linux/arm/v6"];
    let v3 = inspect_json(cache.path(), &testrepo_ref("v3"), &p);
    let v3_index = tagged(&repo, "v3")["digest"].as_str().unwrap().to_string();
    // The `.meta` tag points at the same index as v3.
    let meta_tag = read_index(&repo)["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m["annotations"][REF_NAME]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .find(|t| t.ends_with(".meta"))
        .unwrap();
    let by_meta = inspect_json(cache.path(), &testrepo_ref(&meta_tag), &p);
    let by_index_digest = inspect_json(cache.path(), &format!("{}@{v3_index}", repo.display()), &p);
    assert_eq!(by_meta["manifest"], v3["manifest"]);
    assert_eq!(by_index_digest["manifest"], v3["manifest"]);
    // A manifest digest that index.json does not list is still found by digest.
    let manifest = v3["manifest"].as_str().unwrap();
    let by_manifest = inspect_json(cache.path(), &format!("{}@{manifest}", repo.display()), &p);
    assert_eq!(by_manifest["manifest"], manifest);
    assert_eq!(
        ls_lr(cache.path(), &format!("{}@{manifest}", repo.display()), &[]),
        ls_lr(cache.path(), &testrepo_ref("v3"), &p)
    );
}

#[test]
fn testrepo_verify_passes_for_every_platform() {
    let cache = cache();
    for wanted in PLATFORMS {
        let run = ocimount(
            cache.path(),
            &["verify", &testrepo_ref("v3"), "--platform", wanted],
        );
        run.ok();
        assert_eq!(
            run.stderr
                .lines()
                .filter(|l| l.starts_with("ok      layer "))
                .count(),
            5,
            "{}",
            run.stderr
        );
        assert!(!run.stderr.contains("FAILED"), "{}", run.stderr);
    }
}

#[test]
fn testrepo_export_matches_the_tree() {
    let cache = cache();
    let run = ocimount(
        cache.path(),
        &[
            "export",
            "-o",
            "-",
            &testrepo_ref("v3"),
            "--platform",
            "linux/amd64",
        ],
    );
    run.success();
    let mut names = Vec::new();
    for entry in tar::Archive::new(run.stdout.as_slice()).entries().unwrap() {
        let entry = entry.unwrap();
        names.push(
            String::from_utf8_lossy(&entry.path_bytes())
                .trim_end_matches('/')
                .to_string(),
        );
    }
    names.retain(|n| !n.is_empty() && n != ".");
    let names: Vec<String> = names
        .into_iter()
        .map(|n| n.trim_start_matches("./").to_string())
        .collect();
    assert_eq!(
        names,
        [
            "base.txt",
            "dir",
            "dir/layer.tar",
            "layer1",
            "layer2",
            "layer3"
        ]
    );
}

#[test]
fn testrepo_default_without_latest_names_the_tags() {
    let cache = cache();
    let repo = testrepo();
    let run = ocimount(cache.path(), &["ls", repo.to_str().unwrap()]);
    let stderr = run.fails_with(&["\"latest\" not found"]);
    for m in read_index(&repo)["manifests"].as_array().unwrap() {
        if let Some(tag) = m["annotations"][REF_NAME].as_str() {
            assert!(stderr.contains(tag), "tag {tag} not named: {stderr}");
        }
    }
    ocimount(cache.path(), &["ls", &testrepo_ref("no-such-tag")])
        .fails_with(&["\"no-such-tag\" not found", "v3"]);
}

/// Tags whose manifest has an `application/vnd.oci.empty.v1+json` config:
/// artifacts, not images.
#[test]
fn testrepo_artifact_manifests_fail_cleanly() {
    let cache = cache();
    let repo = testrepo();
    for tag in ["a1", "a2", "a3", "a-example", "mirror", "child"] {
        let desc = tagged(&repo, tag);
        assert_eq!(desc["mediaType"], OCI_MANIFEST);
        let manifest = read_json_blob(&repo, desc["digest"].as_str().unwrap());
        let config_type = manifest["config"]["mediaType"].as_str().unwrap();
        for cmd in ["ls", "inspect", "verify"] {
            ocimount(cache.path(), &[cmd, &testrepo_ref(tag)])
                .fails_with(&["not a container image", config_type]);
        }
    }
}

/// buildx attestation manifests tagged on their own: an OCI image config of
/// `{}` and a layer of type `application/vnd.example.build-type+json`. The
/// error must name the layer media type we cannot read.
#[test]
fn testrepo_attestation_manifests_name_their_layer_type() {
    let cache = cache();
    let repo = testrepo();
    for tag in ["a-docker", "a-docker-oci"] {
        let manifest = read_json_blob(&repo, tagged(&repo, tag)["digest"].as_str().unwrap());
        let layer_type = manifest["layers"][0]["mediaType"].as_str().unwrap();
        assert!(!layer_type.contains("tar"));
        ocimount(cache.path(), &["ls", &testrepo_ref(tag)]).fails_with(&[layer_type]);
    }
}

/// `ai`, `loop` and the referrers index of `child` are indexes holding only
/// artifact manifests (empty config, no platform). `loop` is an index whose
/// entry and subject are the same artifact, and `sha256-8e54…` is an index
/// pointing at `loop`; neither is a real cycle, but every command must end
/// quickly with an error that says there is no container image, and must not
/// present an empty platform ("/") as an offer.
#[test]
fn testrepo_indexes_of_artifacts_fail_cleanly() {
    let cache = cache();
    let repo = testrepo();
    let child = tagged(&repo, "child")["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let referrers = format!("sha256-{}", child.trim_start_matches("sha256:"));
    let loop_index = read_json_blob(&repo, tagged(&repo, "loop")["digest"].as_str().unwrap());
    assert_eq!(loop_index["manifests"][0]["digest"], child.as_str());
    assert_eq!(loop_index["subject"]["digest"], child.as_str());
    for tag in ["loop", referrers.as_str(), "ai"] {
        for args in [
            vec!["ls", "-lR"],
            vec!["inspect"],
            vec!["cat"],
            vec!["export", "-o", "-"],
            vec!["verify"],
            vec!["ls", "--platform", "linux/arm64"],
        ] {
            let mut argv: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            argv.insert(1, testrepo_ref(tag));
            if args[0] == "cat" {
                argv.push("/x".to_string());
            }
            let run = ocimount(cache.path(), &argv);
            let stderr = run.fails_with(&["container image"]);
            assert!(
                !stderr.contains("offers: /"),
                "{tag} {args:?}: an empty platform shown as an offer: {stderr}"
            );
        }
    }
}

#[test]
fn testrepo_nested_indexes_resolve_and_a_deep_chain_is_refused() {
    let cache = cache();
    let work = tempfile::tempdir().unwrap();
    let layout = build_layout(
        work.path(),
        &[plain_layer(&read_fixture(
            "go-containerregistry/pkg/crane/testdata/content.tar",
        ))],
    );
    let top = read_index(&layout)["manifests"][0].clone();
    let wrap = |depth: usize| {
        let mut desc = serde_json::json!({
            "mediaType": OCI_MANIFEST,
            "digest": top["digest"],
            "size": top["size"],
            "platform": { "os": "linux", "architecture": host_arch() },
        });
        for _ in 0..depth {
            let index = serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [desc],
            }))
            .unwrap();
            let digest = write_blob(&layout, &index);
            desc = serde_json::json!({ "mediaType": OCI_INDEX, "digest": digest, "size": index.len() });
        }
        desc["annotations"] = serde_json::json!({ REF_NAME: format!("depth{depth}") });
        desc
    };
    write_index(&layout, &[wrap(1), wrap(3), wrap(30)]);
    let image = |tag: &str| image_ref(&layout, Some(tag));
    let expected = ls_lr(cache.path(), &image("depth1"), &[]);
    assert_eq!(ls_lr(cache.path(), &image("depth3"), &[]), expected);
    ocimount(cache.path(), &["ls", &image("depth30")]).fails_with(&["nesting deeper than"]);
}

// ====================================================================
// anchore/stereoscope per-platform layouts
// ====================================================================

fn stereoscope(name: &str) -> PathBuf {
    fixture(&format!("{STEREOSCOPE}/{name}"))
}

#[test]
fn stereoscope_multiplatform_trees_differ_by_platform() {
    let cache = cache();
    let layout = stereoscope("multiplatform_oci_dir");
    let image = layout.to_str().unwrap();
    let tree = |arch: &str| {
        lines(&[
            "drwxr-xr-x   3     0     0          0 2026-03-18 21:53 linux",
            &format!("drwxr-xr-x   2     0     0          0 2026-03-18 21:53 linux/{arch}"),
            &format!(
                "-rwxr-xr-x   1     0     0       1618 2026-03-18 21:13 linux/{arch}/README.md"
            ),
        ])
    };
    assert_eq!(
        ls_lr(cache.path(), image, &["--platform", "linux/amd64"]),
        tree("amd64")
    );
    assert_eq!(
        ls_lr(cache.path(), image, &["--platform", "linux/arm64"]),
        tree("arm64")
    );
    assert_eq!(
        ls_lr(
            cache.path(),
            &format!("{image}:latest"),
            &["--platform", "linux/arm64/v8"]
        ),
        tree("arm64")
    );

    // The nested index (tag latest) lists one manifest per platform; the
    // chosen one and the README bytes come from that manifest's layer.
    let nested = read_json_blob(
        &layout,
        tagged(&layout, "latest")["digest"].as_str().unwrap(),
    );
    for arch in ["amd64", "arm64"] {
        let want = expected_manifest(&nested, &format!("linux/{arch}")).unwrap();
        let report = inspect_json(
            cache.path(),
            image,
            &["--platform", &format!("linux/{arch}")],
        );
        assert_eq!(report["manifest"], want["digest"]);
        let manifest = read_json_blob(&layout, want["digest"].as_str().unwrap());
        let layer = &manifest["layers"][0];
        let files = layer_files(
            &read_blob(&layout, layer["digest"].as_str().unwrap()),
            layer["mediaType"].as_str().unwrap(),
        );
        let path = format!("linux/{arch}/README.md");
        let (_, data) = files
            .iter()
            .find(|(n, _)| *n == path)
            .expect("README in the layer");
        assert_eq!(
            &cat(
                cache.path(),
                image,
                &path,
                &["--platform", &format!("linux/{arch}")]
            ),
            data
        );
        // The other platform's path does not exist in this one.
        let other = if arch == "amd64" { "arm64" } else { "amd64" };
        ocimount(
            cache.path(),
            &[
                "cat",
                image,
                &format!("linux/{other}/README.md"),
                "--platform",
                &format!("linux/{arch}"),
            ],
        )
        .fails_with(&["no such file or directory in the image"]);
    }
    // Default: the host's platform, where the image has it.
    if ["amd64", "arm64"].contains(&host_arch()) {
        assert_eq!(ls_lr(cache.path(), image, &[]), tree(host_arch()));
    }
    ocimount(cache.path(), &["ls", image, "--platform", "linux/arm/v7"]).fails_with(&[
        "no manifest for platform linux/arm/v7",
        "linux/amd64",
        "linux/arm64",
    ]);
    ocimount(cache.path(), &["ls", image, "--platform", "linux/s390x"]).fails_with(&[
        "no manifest for platform linux/s390x",
        "linux/amd64",
        "linux/arm64",
    ]);
}

#[test]
fn stereoscope_valid_oci_dir_by_tag_and_default() {
    let cache = cache();
    let layout = stereoscope("valid_oci_dir");
    let image = layout.to_str().unwrap();
    let tree = lines(&["-rw-r--r--   1     0     0         10 2024-02-07 09:02 README.md"]);
    for reference in [
        image.to_string(),
        format!("{image}:latest"),
        format!("{image}:1.0"),
    ] {
        assert_eq!(
            ls_lr(cache.path(), &reference, &["--platform", "linux/amd64"]),
            tree,
            "{reference}"
        );
        assert_eq!(
            cat(
                cache.path(),
                &reference,
                "/README.md",
                &["--platform", "linux/amd64"]
            ),
            b"Some text\n"
        );
        ocimount(
            cache.path(),
            &["ls", &reference, "--platform", "linux/arm64"],
        )
        .fails_with(&["no manifest for platform linux/arm64", "linux/amd64"]);
    }
    // Both tags name the same manifest.
    assert_eq!(
        tagged(&layout, "latest")["digest"],
        tagged(&layout, "1.0")["digest"]
    );
    ocimount(cache.path(), &["ls", &format!("{image}:2.0")]).fails_with(&[
        "\"2.0\" not found",
        "latest",
        "1.0",
    ]);
}

/// Copy a stereoscope fixture into a scratch directory, adding the
/// `oci-layout` file it lacks upstream.
fn with_oci_layout(name: &str, scratch: &Path) -> PathBuf {
    let src = stereoscope(name);
    let dest = scratch.join(name);
    for entry in walk(&src) {
        let rel = entry.strip_prefix(&src).unwrap();
        let to = dest.join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&entry, &to).unwrap();
    }
    std::fs::write(
        dest.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    dest
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn stereoscope_broken_layouts_fail_cleanly() {
    let cache = cache();
    let scratch = tempfile::tempdir().unwrap();
    // As shipped, none of the three has an oci-layout file.
    for name in ["no_manifests", "invalid_file", "valid_manifest"] {
        let layout = stereoscope(name);
        ocimount(cache.path(), &["ls", layout.to_str().unwrap()]).fails_with(&[
            "is not an OCI image layout: it has no oci-layout file",
            name,
        ]);
    }
    // index.json is 0 bytes.
    let invalid = with_oci_layout("invalid_file", scratch.path());
    for cmd in ["ls", "inspect", "verify"] {
        ocimount(cache.path(), &[cmd, invalid.to_str().unwrap()])
            .fails_with(&["index.json", "EOF while parsing"]);
    }
    // The descriptor's blob is an empty file whose name is not its hash.
    let valid_manifest = with_oci_layout("valid_manifest", scratch.path());
    let desc = &read_index(&valid_manifest)["manifests"][0];
    let digest = desc["digest"].as_str().unwrap();
    assert_eq!(read_blob(&valid_manifest, digest).len(), 0);
    for platform in ["linux/arm", "linux/arm/v7"] {
        for cmd in ["ls", "verify"] {
            ocimount(
                cache.path(),
                &[
                    cmd,
                    valid_manifest.to_str().unwrap(),
                    "--platform",
                    platform,
                ],
            )
            .fails_with(&[digest, "size is 0 bytes, the descriptor says 424"]);
        }
    }
}

/// stereoscope's `no_manifests/index.json` is really an image manifest: it
/// has no `manifests` array at all. The error must say that index.json lists
/// no manifests rather than talk about a missing `latest` tag.
#[test]
fn stereoscope_index_without_manifests_says_so() {
    let cache = cache();
    let scratch = tempfile::tempdir().unwrap();
    let layout = with_oci_layout("no_manifests", scratch.path());
    assert!(read_index(&layout).get("manifests").is_none());
    let run = ocimount(cache.path(), &["ls", layout.to_str().unwrap()]);
    let stderr = run.fails_with(&["index.json"]).to_lowercase();
    assert!(
        stderr.contains("no manifests"),
        "should say index.json lists no manifests: {stderr}"
    );
}

// ====================================================================
// dive: one image, four layer encodings (OCI archives unpacked at test time)
// ====================================================================

fn dive_layout(variant: &str, scratch: &Path) -> PathBuf {
    let dest = scratch.join(variant);
    unpack_tar(
        &read_fixture(&format!("dive/.data/test-oci-{variant}-image.tar")),
        &dest,
    );
    dest
}

#[test]
fn dive_compression_variants_give_the_same_tree() {
    let cache = cache();
    let scratch = tempfile::tempdir().unwrap();
    let tree = lines(&["-rw-r--r--   1     0     0      11189 2025-01-16 20:27 README.md"]);
    // The README bytes, read with the tar crate from the uncompressed layer.
    let plain = dive_layout("uncompressed", scratch.path());
    let plain_manifest = read_json_blob(
        &plain,
        read_index(&plain)["manifests"][0]["digest"]
            .as_str()
            .unwrap(),
    );
    let layer = &plain_manifest["layers"][0];
    assert_eq!(layer["mediaType"], OCI_LAYER_TAR);
    let files = layer_files(
        &read_blob(&plain, layer["digest"].as_str().unwrap()),
        OCI_LAYER_TAR,
    );
    assert_eq!(files.len(), 1);
    let readme = files[0].1.clone();
    assert_eq!(readme.len(), 11189);

    for (variant, compression, uncompressed) in [
        ("gzip", "gzip", 12800),
        ("zstd", "zstd", 12800),
        ("uncompressed", "none", 12800),
        ("estargz", "gzip", 14848),
    ] {
        let layout = dive_layout(variant, scratch.path());
        let image = layout.to_str().unwrap();
        // The images are linux/arm64; without --platform the only manifest is used.
        assert_eq!(ls_lr(cache.path(), image, &[]), tree, "{variant}");
        assert_eq!(
            ls_lr(cache.path(), image, &["--platform", "linux/arm64"]),
            tree,
            "{variant}"
        );
        assert_eq!(
            cat(cache.path(), image, "README.md", &[]),
            readme,
            "{variant}"
        );
        let report = inspect_json(cache.path(), image, &[]);
        assert_eq!(report["layers"][0]["compression"], compression, "{variant}");
        assert_eq!(
            report["layers"][0]["entries"], 1,
            "{variant}: stargz.index.json is past the tar's end"
        );
        if variant == "estargz" {
            // Read through its TOC, which does not give the tar's length;
            // a full pass does.
            assert_eq!(report["layers"][0]["indexed_from"], "eStargz TOC");
            assert_eq!(report["layers"][0]["uncompressed_size"], Value::Null);
            let full = inspect_json(cache.path(), image, &["--no-toc"]);
            assert_eq!(full["layers"][0]["indexed_from"], "full pass");
            assert_eq!(full["layers"][0]["uncompressed_size"], uncompressed);
            assert_eq!(full["layers"][0]["entries"], 1);
        } else {
            assert_eq!(report["layers"][0]["indexed_from"], "full pass");
            assert_eq!(
                report["layers"][0]["uncompressed_size"], uncompressed,
                "{variant}"
            );
        }
        assert_eq!(report["platform"]["chosen"], "linux/arm64/v8");
        ocimount(cache.path(), &["verify", image]).ok();
        ocimount(cache.path(), &["ls", image, "--platform", "linux/amd64"])
            .fails_with(&["no manifest for platform linux/amd64", "linux/arm64"]);
    }
}

/// dive's 14-layer `docker save` image, its layers re-wrapped as an OCI
/// layout. Expected tree: WHITEOUT_CASES.md §J (whiteouts stored with
/// typeflag `\0`, 392 hardlinks to `bin/[`).
#[test]
fn dive_docker_image_whiteouts_and_hardlinks() {
    let cache = cache();
    let scratch = tempfile::tempdir().unwrap();
    let layers = docker_save_layers(&read_fixture("dive/.data/test-docker-image.tar"));
    assert_eq!(layers.len(), 14);
    let layout = build_layout(scratch.path(), &layers);
    let image = layout.to_str().unwrap();
    let all = ls_lr(cache.path(), image, &[]);
    let not_bin: Vec<&str> = all.lines().filter(|l| !l.contains(" bin/")).collect();
    assert_eq!(
        not_bin,
        [
            "drwxr-xr-x   2     0     0          0 2018-12-24 21:26 bin",
            "drwxr-xr-x   2     0     0          0 2018-12-24 21:26 dev",
            "drwxr-xr-x   3     0     0          0 2018-12-24 21:26 etc",
            "-rw-rw-r--   1     0     0        307 2018-12-19 22:04 etc/group",
            "-rw-r--r--   1     0     0        127 2018-10-27 13:20 etc/localtime",
            "drwxr-xr-x   6     0     0          0 2018-12-24 21:26 etc/network",
            "drwxr-xr-x   2     0     0          0 2018-12-24 21:26 etc/network/if-down.d",
            "drwxr-xr-x   2     0     0          0 2018-12-24 21:26 etc/network/if-post-down.d",
            "drwxr-xr-x   2     0     0          0 2018-12-24 21:26 etc/network/if-pre-up.d",
            "drwxr-xr-x   2     0     0          0 2018-12-24 21:26 etc/network/if-up.d",
            "-rw-r--r--   1     0     0        340 2018-12-19 22:04 etc/passwd",
            "-rw-------   1     0     0        243 2018-12-19 22:04 etc/shadow",
            "drwxr-xr-x   2 65534 65534          0 2018-12-24 21:26 home",
            "drwx------   3     0     0          0 2018-12-28 20:44 root",
            "drwxr-xr-x   2     0     0          0 2018-12-28 20:44 root/.data",
            "-rw-r--r--   1     0     0       6405 2018-12-28 20:44 root/.data/saved.again2.txt",
            "-rwxrwxr-x   1     0     0        917 2018-12-04 16:16 root/.data/tag.sh",
            "-rwxr-xr-x   1     0     0       1270 2018-12-28 20:35 root/.data/test.sh",
            "-rw-r--r--   1     0     0       6405 2018-12-28 16:50 root/.saved.txt",
            "-rwxr-xr-x   1     0     0       6405 2018-12-28 16:50 root/saved.txt",
            "-rw-rw-r--   1     0     0       6405 2018-12-08 18:35 somefile.txt",
            "drwxrwxrwt   2     0     0          0 2018-12-28 20:44 tmp",
            "-rw-r--r--   1     0     0       6405 2018-12-28 20:44 tmp/saved.again1.txt",
            "drwxr-xr-x   3     0     0          0 2018-12-24 21:26 usr",
            "drwxr-xr-x   2     1     1          0 2018-12-24 21:26 usr/sbin",
            "drwxr-xr-x   4     0     0          0 2018-12-24 21:26 var",
            "drwxr-xr-x   3     0     0          0 2018-12-24 21:26 var/spool",
            "drwxr-xr-x   2     8     8          0 2018-12-24 21:26 var/spool/mail",
            "drwxr-xr-x   2     0     0          0 2018-12-24 21:26 var/www",
        ]
    );
    // bin: busybox `[` plus 392 hardlinks to it (393 names, one inode), and getconf.
    let bin: Vec<&str> = all.lines().filter(|l| l.contains(" bin/")).collect();
    assert_eq!(bin.len(), 394);
    let linked = bin
        .iter()
        .filter(|l| l.starts_with("-rwxr-xr-x 393     0     0    1075464 2018-12-24 21:26 bin/"))
        .count();
    assert_eq!(linked, 393);
    assert!(bin.contains(&"-rwxr-xr-x   1     0     0      77880 2018-12-24 21:07 bin/getconf"));
    ocimount(cache.path(), &["ls", image, "/root/example"])
        .fails_with(&["no such file or directory in the image"]);
    // Contents: the same 6405 bytes as somefile.txt in layer 1.
    let l1 = layer_files(&layers[1].0, layers[1].1);
    let somefile = &l1.iter().find(|(n, _)| n == "somefile.txt").unwrap().1;
    for path in [
        "somefile.txt",
        "root/saved.txt",
        "root/.saved.txt",
        "tmp/saved.again1.txt",
        "root/.data/saved.again2.txt",
    ] {
        assert_eq!(&cat(cache.path(), image, path, &[]), somefile, "{path}");
    }
    assert_eq!(
        cat(cache.path(), image, "bin/sh", &[]),
        cat(cache.path(), image, "bin/[", &[])
    );
}

// ====================================================================
// go-containerregistry mutate whiteout images and crane content.tar(.zst)
// ====================================================================

fn gcr_image(name: &str, scratch: &Path) -> PathBuf {
    let layers = docker_save_layers(&read_fixture(&format!(
        "go-containerregistry/pkg/v1/mutate/testdata/{name}.tar"
    )));
    build_layout(scratch, &layers)
}

#[test]
fn gcr_whiteout_image_hides_foo() {
    let (cache, scratch) = (cache(), tempfile::tempdir().unwrap());
    let layout = gcr_image("whiteout_image", scratch.path());
    let image = layout.to_str().unwrap();
    assert_eq!(
        ls_lr(cache.path(), image, &[]),
        lines(&["-r-xr-xr-x   1     0     0          4 1970-01-01 00:00 bar.txt"])
    );
    assert_eq!(cat(cache.path(), image, "bar.txt", &[]), b"bar\n");
    ocimount(cache.path(), &["cat", image, "foo.txt"])
        .fails_with(&["foo.txt: no such file or directory in the image"]);
    ocimount(cache.path(), &["cat", image, ".wh.foo.txt"])
        .fails_with(&["no such file or directory in the image"]);
}

#[test]
fn gcr_whiteout_dir_is_not_resurrected() {
    let (cache, scratch) = (cache(), tempfile::tempdir().unwrap());
    let layout = gcr_image("whiteout_dir", scratch.path());
    let image = layout.to_str().unwrap();
    assert_eq!(
        ls_lr(cache.path(), image, &[]),
        lines(&[
            "drwxr-xr-x   2     0     0          0 2026-01-13 23:52 a",
            "-rw-r--r--   1     0     0          0 2026-01-13 23:17 a/baz",
            "drwxr-xr-x   2     0     0          0 2026-01-13 23:52 b",
            "-rw-r--r--   1     0     0          0 2026-01-13 23:17 b/bar",
        ])
    );
    let report = inspect_json(cache.path(), image, &[]);
    let comps: Vec<&str> = report["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["compression"].as_str().unwrap())
        .collect();
    assert_eq!(comps, ["gzip"; 4]);
}

#[test]
fn gcr_overwritten_file_becomes_a_symlink() {
    let (cache, scratch) = (cache(), tempfile::tempdir().unwrap());
    let layout = gcr_image("overwritten_file", scratch.path());
    let image = layout.to_str().unwrap();
    assert_eq!(
        ls_lr(cache.path(), image, &[]),
        lines(&[
            "-r-xr-xr-x   1     0     0          4 1970-01-01 00:00 bar.txt",
            "lrwxr-xr-x   1     0     0          7 1970-01-01 00:00 foo.txt -> bar.txt",
        ])
    );
    assert_eq!(cat(cache.path(), image, "foo.txt", &[]), b"bar\n");
}

/// Build a layout around regclient's layer.tar and layer-wh.tar (§K derived).
#[test]
fn regclient_layer_whiteouts_stack() {
    let (cache, scratch) = (cache(), tempfile::tempdir().unwrap());
    let lower = read_fixture("regclient/testdata/layer.tar");
    let upper = read_fixture("regclient/testdata/layer-wh.tar");
    let layout = build_layout(scratch.path(), &[plain_layer(&lower), gzip_layer(&upper)]);
    let image = layout.to_str().unwrap();
    assert_eq!(
        ls_lr(cache.path(), image, &[]),
        lines(&[
            "drwxr-xr-x   2  1000  1000          0 2022-09-11 15:16 exdir",
            "-rw-r--r--   1  1000  1000          2 2022-04-24 14:49 layer1.txt",
            "-rw-r--r--   1  1000  1000          2 2022-04-24 14:49 layer3.txt",
        ])
    );
    assert_eq!(cat(cache.path(), image, "/layer1.txt", &[]), b"1\n");
    assert_eq!(cat(cache.path(), image, "layer3.txt", &[]), b"3\n");
    for gone in [
        "layer2.txt",
        "exdir/test.txt",
        "missing.txt",
        ".wh.layer2.txt",
    ] {
        ocimount(cache.path(), &["cat", image, gone])
            .fails_with(&["no such file or directory in the image"]);
    }
}

/// One node of a merged tree as the library shows it.
#[derive(Debug, PartialEq)]
struct NodeSummary {
    path: String,
    type_bits: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    /// File bytes, or a symlink's target.
    content: Vec<u8>,
}

/// The tree, with every file's bytes, through the library.
fn library_tree(layout: PathBuf, cache: PathBuf) -> Vec<NodeSummary> {
    with_timeout("Rootfs::open", move || {
        use ocimount::merge::NodeKind;
        use ocimount::rootfs::{OpenOptions, Rootfs};
        use ocimount::source::ImageRef;
        let opts = OpenOptions {
            cache_dir: Some(cache),
            progress: false,
            ..OpenOptions::default()
        };
        let rootfs =
            Rootfs::open(&ImageRef::parse(layout.to_str().unwrap()).unwrap(), &opts).unwrap();
        let mut out = Vec::new();
        for (path, id) in rootfs.tree.walk() {
            let node = rootfs.tree.node(id);
            let content = match &node.kind {
                NodeKind::File { size, .. } => {
                    let mut buf = vec![0u8; *size as usize];
                    let n = rootfs.read_file(id, 0, &mut buf).unwrap();
                    assert_eq!(n as u64, *size);
                    buf
                }
                NodeKind::Symlink { target } => target.to_vec(),
                _ => Vec::new(),
            };
            out.push(NodeSummary {
                path: String::from_utf8_lossy(&path).into_owned(),
                type_bits: node.file_type_bits(),
                mode: node.meta.mode,
                uid: node.meta.uid,
                gid: node.meta.gid,
                mtime: node.meta.mtime,
                content,
            });
        }
        out
    })
}

#[test]
fn crane_content_tar_plain_zstd_and_gzip_agree() {
    let (cache, scratch) = (cache(), tempfile::tempdir().unwrap());
    let tar = read_fixture("go-containerregistry/pkg/crane/testdata/content.tar");
    let zst = read_fixture("go-containerregistry/pkg/crane/testdata/content.tar.zst");
    assert_eq!(
        decompress(&zst, OCI_LAYER_ZSTD),
        tar,
        "content.tar.zst is content.tar compressed"
    );
    let plain = build_layout(scratch.path(), &[plain_layer(&tar)]);
    let zstd = build_layout(scratch.path(), &[layer_as_is(&zst, OCI_LAYER_ZSTD)]);
    let gzip = build_layout(scratch.path(), &[gzip_layer(&tar)]);
    let expected = lines(&[
        "-r-xr-xr-x   1     0     0          4 1970-01-01 00:00 bat",
        "-r-xr-xr-x   1     0     0          4 1970-01-01 00:00 baz",
    ]);
    let members = tar_members(&tar);
    for layout in [&plain, &zstd, &gzip] {
        let image = layout.to_str().unwrap();
        assert_eq!(ls_lr(cache.path(), image, &[]), expected);
        for (name, data) in &members {
            assert_eq!(&cat(cache.path(), image, name, &[]), data, "{name}");
        }
        ocimount(cache.path(), &["verify", image]).ok();
    }
    assert_eq!(
        cat(cache.path(), zstd.to_str().unwrap(), "bat", &[]),
        b"bat\n"
    );
    let report = inspect_json(cache.path(), zstd.to_str().unwrap(), &[]);
    assert_eq!(report["layers"][0]["compression"], "zstd");
    assert_eq!(report["layers"][0]["diff_id"], digest_of(&tar));
    // Through the library, the three trees are identical, metadata and bytes.
    let a = library_tree(plain, cache.path().to_path_buf());
    let b = library_tree(zstd, cache.path().to_path_buf());
    let c = library_tree(gzip, cache.path().to_path_buf());
    assert_eq!(a.len(), 3, "root, bat, baz");
    assert_eq!(a, b);
    assert_eq!(a, c);
}

#[test]
fn crane_content_stacked_zstd_over_plain() {
    let (cache, scratch) = (cache(), tempfile::tempdir().unwrap());
    let tar = read_fixture("go-containerregistry/pkg/crane/testdata/content.tar");
    let zst = read_fixture("go-containerregistry/pkg/crane/testdata/content.tar.zst");
    let layout = build_layout(
        scratch.path(),
        &[plain_layer(&tar), layer_as_is(&zst, OCI_LAYER_ZSTD)],
    );
    let image = layout.to_str().unwrap();
    assert_eq!(
        ls_lr(cache.path(), image, &[]),
        lines(&[
            "-r-xr-xr-x   1     0     0          4 1970-01-01 00:00 bat",
            "-r-xr-xr-x   1     0     0          4 1970-01-01 00:00 baz",
        ])
    );
    // A wrong diff_id is caught and named.
    let mut wrong = layer_as_is(&zst, OCI_LAYER_ZSTD);
    wrong.2 = sha256(b"not the tar");
    let bad = build_layout(scratch.path(), &[wrong]);
    ocimount(cache.path(), &["ls", bad.to_str().unwrap()])
        .fails_with(&["diff_id", &digest_of(&tar)]);
    ocimount(cache.path(), &["verify", bad.to_str().unwrap()])
        .fails_with(&["diff_id", &digest_of(&tar)]);
}

// ====================================================================
// Other real layouts: containers/image placeholder blobs, gcr test_index
// ====================================================================

/// containers/image's delete_image_multiple_images: the "layers" are 33-byte
/// text files labelled tar+gzip.
#[test]
fn containers_image_placeholder_layers_fail_cleanly() {
    let cache = cache();
    let layout = fixture("image/oci/layout/fixtures/delete_image_multiple_images");
    for tag in ["latest", "3.18.3", "3", "3.18", "3.17.5", "3.16.7", "1.0.0"] {
        for platform in ["linux/amd64", "linux/386"] {
            let run = ocimount(
                cache.path(),
                &["ls", &image_ref(&layout, Some(tag)), "--platform", platform],
            );
            assert_no_panic(&run);
            assert_eq!(run.code, Some(1), "{tag} {platform}: {}", run.stderr);
            // Either the platform is missing or the layer is not gzip.
            assert!(
                run.stderr
                    .contains("says gzip but the blob starts like plain data")
                    || run.stderr.contains("no manifest for platform")
                    || run.stderr.contains("size is"),
                "{tag} {platform}: {}",
                run.stderr
            );
        }
    }
    let run = ocimount(
        cache.path(),
        &[
            "ls",
            &image_ref(&layout, Some("latest")),
            "--platform",
            "linux/amd64",
        ],
    );
    run.fails_with(&[
        "says gzip but the blob starts like plain data",
        "layer 0 (sha256:",
    ]);
}

/// go-containerregistry's test_index: tag 1 is a manifest, 2 an entry with
/// the descriptor media type, 3 a nested OCI index and 4 a Docker manifest
/// list stored as an index entry; 1, 3 and 4 reach the same image.
#[test]
fn gcr_test_index_tags() {
    let cache = cache();
    let layout = fixture("go-containerregistry/pkg/v1/layout/testdata/test_index");
    let image = |t: &str| image_ref(&layout, Some(t));
    let p = ["--platform", "linux/amd64"];
    // No `latest`: the tags present are named.
    ocimount(cache.path(), &["ls", layout.to_str().unwrap()])
        .fails_with(&["\"latest\" not found", "1, 2, 3, 4"]);
    let expected = lines(&[
        "-r-xr-xr-x   1     0     0          4 1970-01-01 00:00 bar",
        "-r-xr-xr-x   1     0     0          4 1970-01-01 00:00 foo",
    ]);
    let manifest = tagged(&layout, "1")["digest"].as_str().unwrap().to_string();
    for tag in ["1", "3", "4"] {
        assert_eq!(ls_lr(cache.path(), &image(tag), &p), expected, "tag {tag}");
        assert_eq!(cat(cache.path(), &image(tag), "foo", &p), b"foo\n");
        assert_eq!(cat(cache.path(), &image(tag), "bar", &p), b"bar\n");
        assert_eq!(
            inspect_json(cache.path(), &image(tag), &p)["manifest"],
            manifest.as_str()
        );
    }
    assert_eq!(
        tagged(&layout, "2")["mediaType"],
        "application/vnd.oci.descriptor.v1+json"
    );
    ocimount(cache.path(), &["ls", &image("2")]).fails_with(&[
        "unsupported media type",
        "application/vnd.oci.descriptor.v1+json",
    ]);
}

// ====================================================================
// Hostile tars (HOSTILE_CASES.md part 1) wrapped as one-layer images
// ====================================================================

/// What a one-layer image built from a fixture must do.
enum Expect {
    /// `ls -lR` prints exactly this.
    Tree(&'static [&'static str]),
    /// Exit 1, naming the layer, with each of these (case-insensitive).
    Fails(&'static [&'static str]),
}

/// Build a one-layer layout, then run every command against it: each must
/// finish in time without panicking; `ls`, `export` and `inspect` must agree
/// on success or failure.
fn hostile(
    layer: LayerSpec,
    expect: Expect,
    cat_path: &str,
) -> (tempfile::TempDir, PathBuf, tempfile::TempDir) {
    let scratch = tempfile::tempdir().unwrap();
    let cache = cache();
    let digest = digest_of(&layer.0);
    let layout = build_layout(scratch.path(), &[layer]);
    let image = layout.to_str().unwrap();
    let ls = ocimount(cache.path(), &["ls", "-lR", image]);
    assert_no_panic(&ls);
    let exported = ocimount(cache.path(), &["export", "-o", "-", image]);
    let inspected = ocimount(cache.path(), &["inspect", image]);
    let catted = ocimount(cache.path(), &["cat", image, cat_path]);
    let verified = ocimount(cache.path(), &["verify", image]);
    for run in [&exported, &inspected, &catted, &verified] {
        assert_no_panic(run);
        assert!(matches!(run.code, Some(0 | 1)), "{}", run.stderr);
    }
    match expect {
        Expect::Tree(expected) => {
            assert_eq!(ls.ok(), lines(expected));
            exported.success();
            inspected.ok();
            // A second run reads the cached index and agrees.
            assert_eq!(
                ocimount(cache.path(), &["ls", "-lR", image]).ok(),
                lines(expected)
            );
        }
        Expect::Fails(needles) => {
            ls.fails_with(&[&format!("layer 0 ({digest})")]);
            let lower = ls.stderr.to_lowercase();
            for n in needles {
                assert!(
                    lower.contains(&n.to_lowercase()),
                    "stderr lacks {n:?}:\n{}",
                    ls.stderr
                );
            }
            exported.fails_with(&[&digest]);
            inspected.fails_with(&[&digest]);
            catted.fails_with(&[&digest]);
            // A second run must fail the same way (no half-written cache entry).
            assert_eq!(
                ocimount(cache.path(), &["ls", "-lR", image]).stderr,
                ls.stderr
            );
        }
    }
    (scratch, layout, cache)
}

fn tar_fixture(rel: &str) -> LayerSpec {
    plain_layer(&read_fixture(rel))
}

macro_rules! hostile_tests {
    ($($name:ident: $fixture:expr => $expect:expr;)*) => {$(
        #[test]
        fn $name() {
            hostile(tar_fixture($fixture), $expect, "x");
        }
    )*};
}

const GO: &str = "tar-split/archive/tar/testdata";
const TOKIO: &str = "tokio-tar/tests/archives";
const RATAR: &str = "ratarmount/tests";

hostile_tests! {
    // Go archive/tar fuzz-found malformed headers: ErrHeader upstream.
    hostile_go_neg_size: &format!("{GO}/neg-size.tar") => Expect::Fails(&[]);
    hostile_go_issue10968: &format!("{GO}/issue10968.tar") => Expect::Fails(&[]);
    hostile_go_issue11169: &format!("{GO}/issue11169.tar") => Expect::Fails(&[]);
    hostile_go_issue12435: &format!("{GO}/issue12435.tar") => Expect::Fails(&["checksum"]);
    hostile_go_pax_bad_hdr_file: &format!("{GO}/pax-bad-hdr-file.tar") => Expect::Fails(&["pax"]);
    hostile_go_pax_bad_mtime_file: &format!("{GO}/pax-bad-mtime-file.tar") => Expect::Fails(&["mtime"]);
    hostile_go_pax_nul_path: &format!("{GO}/pax-nul-path.tar") => Expect::Fails(&["nul"]);
    // A header declaring a 16 GiB file with no data: fail cleanly at EOF.
    hostile_go_writer_big: &format!("{GO}/writer-big.tar") => Expect::Fails(&["eof"]);
    hostile_go_writer_big_long: &format!("{GO}/writer-big-long.tar") => Expect::Fails(&["eof"]);
    // 60 GB sparse files in 5-6 KB: refused, never materialised.
    hostile_go_gnu_sparse_big: &format!("{GO}/gnu-sparse-big.tar") => Expect::Fails(&["sparse"]);
    hostile_go_pax_sparse_big: &format!("{GO}/pax-sparse-big.tar") => Expect::Fails(&["sparse"]);
    // tokio-tar PAX desync fixtures; the trees are GNU tar's listing. The
    // ustar uid/gid (and in the last one mode) fields are all NUL bytes,
    // which GNU tar and Go read as 0.
    hostile_tokio_pax_hidden_entry: &format!("{TOKIO}/pax-hidden-entry.tar") => Expect::Tree(&[
        "-rw-r--r--   1     0     0       1536 1970-01-01 00:00 file_a",
        "-rw-r--r--   1     0     0          0 1970-01-01 00:00 file_b",
        "-rw-r--r--   1     0     0         73 1970-01-01 00:00 hidden",
    ]);
    hostile_tokio_pax_phantom_entry: &format!("{TOKIO}/pax-phantom-entry.tar") => Expect::Tree(&[
        "-rw-r--r--   1     0     0        512 1970-01-01 00:00 file_a",
        "-rw-r--r--   1     0     0       1536 1970-01-01 00:00 file_b",
    ]);
    hostile_tokio_pax_overrides_extension_header: &format!("{TOKIO}/pax-overrides-extension-header.tar") => Expect::Tree(&[
        // file_b's mode field is all NULs: 0, as GNU tar and Python read it.
        "----------   1     0     0          0 1970-01-01 00:00 file_b",
        "----------   1     0     0       2048 1970-01-01 00:00 longname.txt",
    ]);
    hostile_tokio_pax_header_precedence: &format!("{TOKIO}/pax-header-precedence.tar") => Expect::Tree(&[
        "-rw-r--r--   1     0     0       1024 2009-02-13 23:31 blob.bin",
        "-rw-r--r--   1     0     0          7 2009-02-13 23:31 marker.txt",
        "-rw-r--r--   1     0     0          6 2009-02-13 23:31 normal.txt",
    ]);
    hostile_tokio_pending_pax_boundary: &format!("{TOKIO}/diff-024-pending-pax-boundary.tar") => Expect::Fails(&[]);
    hostile_tokio_truncated_entry_body: &format!("{TOKIO}/diff-039-truncated-entry-body.tar") => Expect::Fails(&["eof"]);
    // ratarmount: `..` in member names must be refused, self-hardlinks must not loop.
    hostile_ratarmount_denormal_paths: &format!("{RATAR}/denormal-paths.tar") => Expect::Fails(&["root/../ufo", ".."]);
    hostile_ratarmount_single_self_link: &format!("{RATAR}/single-self-link.tar") => Expect::Fails(&["\"bar\"", "hardlink"]);
    hostile_ratarmount_two_self_links: &format!("{RATAR}/two-self-links.tar") => Expect::Fails(&["\"bar\"", "hardlink"]);
    hostile_ratarmount_truncated: &format!("{RATAR}/truncated.tar") => Expect::Fails(&["eof"]);
}

/// ratarmount's `bar`, then `bar => bar` twice: the self-links change
/// nothing, and the content ("foo\n", md5 d3b07384… in ratarmount's
/// EXPECTED_MD5.tsv) survives. (`ls` sorts names; GNU tar keeps archive
/// order, so the trees above are GNU tar's listing sorted.)
#[test]
fn hostile_ratarmount_two_self_links_to_existing_file() {
    let (_s, layout, cache) = hostile(
        tar_fixture(&format!("{RATAR}/two-self-links-to-existing-file.tar")),
        Expect::Tree(&["-rwx------   1  1000  1000          4 2021-06-27 17:00 bar"]),
        "bar",
    );
    assert_eq!(
        cat(cache.path(), layout.to_str().unwrap(), "bar", &[]),
        b"foo\n"
    );
}

#[test]
fn hostile_tokio_pax_hidden_entry_bytes() {
    let tar = read_fixture(&format!("{TOKIO}/pax-hidden-entry.tar"));
    let (_s, layout, cache) = hostile(
        plain_layer(&tar),
        Expect::Tree(&[
            "-rw-r--r--   1     0     0       1536 1970-01-01 00:00 file_a",
            "-rw-r--r--   1     0     0          0 1970-01-01 00:00 file_b",
            "-rw-r--r--   1     0     0         73 1970-01-01 00:00 hidden",
        ]),
        "hidden",
    );
    // file_a's 1536 bytes (PAX size) start right after its header at 1024.
    assert_eq!(
        cat(cache.path(), layout.to_str().unwrap(), "file_a", &[]),
        tar[1536..3072].to_vec()
    );
    assert_eq!(
        cat(cache.path(), layout.to_str().unwrap(), "hidden", &[]),
        tar[4096..4096 + 73].to_vec()
    );
}

/// Go's pax-nul-xattrs.tar: a `SCHILY.xattr.null\0` record. Go rejects the
/// archive (ErrHeader). An xattr name with a NUL byte can never be served
/// (listxattr separates names with NUL), so the layer must be refused or the
/// attribute dropped; it must not reach the tree.
#[test]
fn hostile_go_pax_nul_xattrs() {
    let scratch = tempfile::tempdir().unwrap();
    let cache = cache();
    let layout = build_layout(
        scratch.path(),
        &[tar_fixture(&format!("{GO}/pax-nul-xattrs.tar"))],
    );
    let run = ocimount(cache.path(), &["ls", "-lR", layout.to_str().unwrap()]);
    assert_no_panic(&run);
    let cache_dir = cache.path().to_path_buf();
    let result = with_timeout("Rootfs::open", move || {
        use ocimount::rootfs::{OpenOptions, Rootfs};
        use ocimount::source::ImageRef;
        let opts = OpenOptions {
            cache_dir: Some(cache_dir),
            progress: false,
            ..OpenOptions::default()
        };
        match Rootfs::open(&ImageRef::parse(layout.to_str().unwrap()).unwrap(), &opts) {
            Err(e) => Err(e.to_string()),
            Ok(rootfs) => {
                let id = rootfs.tree.resolve(b"bad-null.txt", false).unwrap();
                let xattrs = rootfs.tree.node(id).meta.xattrs;
                Ok(xattrs
                    .iter()
                    .map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .collect::<Vec<_>>())
            }
        }
    });
    match result {
        Err(message) => {
            assert_eq!(run.code, Some(1));
            assert!(message.to_lowercase().contains("nul"), "{message}");
        }
        Ok(xattrs) => {
            assert_eq!(run.code, Some(0));
            for (name, _) in &xattrs {
                assert!(
                    !name.contains(&0),
                    "xattr name with a NUL byte kept: {:?}",
                    String::from_utf8_lossy(name)
                );
            }
        }
    }
}

// ---------------------------------------------------------------- compression

/// What a streaming gzip decoder yields before the stream breaks off.
fn gzip_prefix(blob: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    let mut dec = flate2::read::MultiGzDecoder::new(blob);
    let mut buf = [0u8; 4096];
    while let Ok(n) = dec.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    out
}

/// scrapy's truncated gzip streams (HTML inside) as gzip layers: exit 1,
/// naming the layer, with a one-line message (no decoded HTML dumped on the
/// terminal); `verify` reports the broken stream.
#[test]
fn hostile_scrapy_truncated_gzip_layers() {
    let mut multi_line = Vec::new();
    for name in [
        "truncated-crc-error.gz",
        "truncated-crc-error-short.gz",
        "unexpected-eof.gz",
    ] {
        let blob = read_fixture(&format!("scrapy/tests/sample_data/compressed/{name}"));
        let layer = (blob.clone(), OCI_LAYER_GZIP, sha256(&gzip_prefix(&blob)));
        let scratch = tempfile::tempdir().unwrap();
        let cache = cache();
        let layout = build_layout(scratch.path(), &[layer]);
        let image = layout.to_str().unwrap();
        let digest = digest_of(&blob);
        let run = ocimount(cache.path(), &["ls", image]);
        run.fails_with(&[&format!("layer 0 ({digest})")]);
        ocimount(cache.path(), &["verify", image])
            .fails_with(&["cannot decompress (gzip)", &digest]);
        ocimount(cache.path(), &["export", "-o", "-", image]).fails_with(&[&digest]);
        if run.stderr.trim_end().lines().count() != 1 {
            multi_line.push(format!("{name}:\n{}", run.stderr));
        }
    }
    assert!(
        multi_line.is_empty(),
        "error messages span several lines (decoded data dumped):\n{}",
        multi_line.join("\n")
    );
}

/// The same failure shapes on a real tar (scrapy's feed-sample1.tar),
/// gzipped here and cut: without its 8-byte trailer, in the middle, and
/// after the gzip header.
#[test]
fn hostile_truncated_gzip_tar_layers() {
    let tar = read_fixture("scrapy/tests/sample_data/compressed/feed-sample1.tar");
    let (gz, _, diff_id) = gzip_layer(&tar);
    let scratch = tempfile::tempdir().unwrap();
    let cache = cache();
    let whole = build_layout(scratch.path(), &[(gz.clone(), OCI_LAYER_GZIP, diff_id)]);
    assert_eq!(
        ls_lr(cache.path(), whole.to_str().unwrap(), &[]),
        lines(&["-rw-r--r--   1  1000  1000       9950 2008-09-09 13:01 feed-sample1.xml"])
    );
    for cut in [gz.len() - 8, gz.len() / 2, 10] {
        hostile(
            (gz[..cut].to_vec(), OCI_LAYER_GZIP, diff_id),
            Expect::Fails(&["gzip"]),
            "feed-sample1.xml",
        );
    }
}

/// "13 path=name" with no closing newline: upstream rejects the malformed
/// PAX record, and so does ocimount's own strict PAX parser.
#[test]
fn hostile_tokio_unterminated_pax() {
    hostile(
        tar_fixture(&format!("{TOKIO}/diff-014-unterminated-pax.tar")),
        Expect::Fails(&["pax"]),
        "x",
    );
}
