//! A fleet behind a pull-through mirror (issue 24, item 4).
//!
//! An upstream registry holds a corpus image and the index artifact one
//! node published with `ocimount index push`. A second Debian
//! `docker-registry` runs as a pull-through cache of it (distribution's
//! `proxy.remoteurl`), and a registries.conf names that cache as the mirror
//! of the upstream's location. Eight nodes, each with an empty cache of its
//! own, then read one file of the image through it, one after another, as
//! a fleet rolling out would.
//!
//! What is asserted: every node got the right bytes, read through the
//! mirror (no node's request reached the upstream), took the published
//! indexes (no full pass); after the first node the upstream served no
//! layer byte at all, and in total it served each layer at most twice:
//! distribution 2.8's cache, on a miss, streams the blob to the client from
//! one upstream fetch while it stores a second one (see
//! `RegistryBuilder::pull_through`). The bytes each registry served and
//! each node's time to the file are printed (`--nocapture`).

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::registry::TestRegistry;
use support::{corpus, ok, run_bounded, BIN};

/// The image the nodes read: the smallest corpus image whose layers are
/// all gzip and published by `index push`, with a file worth reading.
const IMAGE: &str = "debian-gzip";
const FILE: &str = "/etc/os-release";
const NODES: usize = 8;

fn layout_dir() -> PathBuf {
    corpus().image(IMAGE).layout.clone()
}

/// ocimount with a cache of its own, a short request bound, no auth file
/// and no TLS override: plain HTTP only where a registries.conf says so.
fn om(cache: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("--cache")
        .arg(cache)
        .arg("--registry-timeout")
        .arg("30")
        .args(args)
        .env("RUST_LOG", "ocimount=info")
        .env_remove("CONTAINERS_REGISTRIES_CONF")
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("OCIMOUNT_REGISTRY_CREDS")
        .env_remove("OCIMOUNT_TLS_VERIFY");
    let out = run_bounded(&mut cmd, Duration::from_secs(300));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "ocimount panicked: {stderr}");
    out
}

/// digest -> compressed size of the image's layers, from the layout.
fn layer_sizes(cache: &Path) -> BTreeMap<String, u64> {
    let out = om(
        cache,
        &["inspect", "--json", layout_dir().to_str().unwrap()],
    );
    let v: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["digest"].as_str().unwrap().to_string(),
                l["compressed_size"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Sum of the values of `per` whose key is in `keys`.
fn sum_of(per: &BTreeMap<String, u64>, keys: &BTreeMap<String, u64>) -> u64 {
    per.iter()
        .filter(|(d, _)| keys.contains_key(*d))
        .map(|(_, b)| b)
        .sum()
}

fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / (1 << 20) as f64)
}

/// Let the registries finish logging: a request is logged when its answer
/// ends, which for a stream a client dropped is a moment later.
fn settle(regs: &[&TestRegistry]) {
    let mut last = Vec::new();
    let mut quiet_since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let now: Vec<usize> = regs.iter().map(|r| r.access_log().len()).collect();
        if now != last {
            last = now;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() > Duration::from_millis(500) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
#[ignore = "flaky: failed 1 run in 6 (nodes 2-8 reached the upstream; likely distribution's background store cancelled when node 1 hung up early); run with --ignored"]
fn a_fleet_behind_a_pull_through_mirror_costs_the_upstream_each_layer_at_most_twice() {
    let upstream = TestRegistry::new();
    upstream.push(
        &format!("oci:{}:latest", layout_dir().display()),
        &format!("test/{IMAGE}:v1"),
    );
    let image = format!("docker://{}/test/{IMAGE}:v1", upstream.host_port());
    let scratch = tempfile::tempdir().unwrap();
    let layers = layer_sizes(scratch.path());
    let layer_total: u64 = layers.values().sum();
    let want = ok(&om(
        scratch.path(),
        &["cat", layout_dir().to_str().unwrap(), FILE],
    ));

    // One node publishes the indexes, straight to the upstream.
    let pusher = tempfile::tempdir().unwrap();
    let pushed = ok(&om(
        pusher.path(),
        &["--tls-verify=false", "index", "push", &image],
    ));
    assert!(
        pushed.contains(&format!("{n} of {n} layers", n = layers.len())),
        "{pushed}"
    );

    let mirror = TestRegistry::builder().pull_through(&upstream).start();
    let conf_dir = tempfile::tempdir().unwrap();
    let conf = conf_dir.path().join("registries.conf");
    // The primary is not marked insecure: a node that fell back to it
    // (plain HTTP) would fail, so every read below went through the mirror.
    std::fs::File::create(&conf)
        .unwrap()
        .write_all(
            format!(
                "[[registry]]\nprefix = \"{up}\"\nlocation = \"{up}\"\n\n\
                 [[registry.mirror]]\nlocation = \"{mirror}\"\ninsecure = true\n",
                up = upstream.host_port(),
                mirror = mirror.host_port(),
            )
            .as_bytes(),
        )
        .unwrap();
    let conf = conf.to_str().unwrap();

    settle(&[&upstream]);
    let up_start = upstream.access_records().len();
    let mut up_mark = up_start;
    let mut mirror_mark = 0;
    let mut times = Vec::new();
    let mut report = Vec::new();
    for node in 1..=NODES {
        let cache = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let out = om(
            cache.path(),
            &["--registries-conf", conf, "cat", &image, FILE],
        );
        let elapsed = started.elapsed();
        let got = ok(&out);
        assert_eq!(got, want, "node {node} read the wrong bytes");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let taken = stderr.matches("using the published index").count();
        assert_eq!(
            taken,
            layers.len(),
            "node {node} did not take every published index through the mirror:\n{stderr}"
        );
        settle(&[&upstream, &mirror]);
        let up = upstream.blob_bytes_by_digest(up_mark);
        let served = mirror.blob_bytes_by_digest(mirror_mark);
        let up_requests: Vec<_> = upstream.access_records()[up_mark..].to_vec();
        up_mark += up_requests.len();
        mirror_mark = mirror.access_records().len();
        report.push(format!(
            "node {node}: {ms} ms to {FILE}; mirror served {mirror_layers} of layers, \
             {mirror_all} of blobs; upstream served {up_layers} of layers, {up_all} of blobs \
             in {reqs} requests",
            ms = elapsed.as_millis(),
            mirror_layers = mib(sum_of(&served, &layers)),
            mirror_all = mib(served.values().sum()),
            up_layers = mib(sum_of(&up, &layers)),
            up_all = mib(up.values().sum()),
            reqs = up_requests.len(),
        ));
        times.push(elapsed);
        if node == 1 {
            // The cache stores a blob with a fetch of its own, which may
            // still run when the node is done: the next node is started
            // once it holds the layers node 1 read, as a fleet rolling out in waves is.
            let asked: Vec<&String> = served.keys().filter(|d| layers.contains_key(*d)).collect();
            assert!(
                support::wait_until(Duration::from_secs(60), || asked
                    .iter()
                    .all(|d| mirror.blob_data_path(d).exists())),
                "the cache did not store the layers node 1 read within 60 s"
            );
        }
        if node > 1 {
            assert_eq!(
                sum_of(&up, &layers),
                0,
                "node {node}: the upstream served layer bytes again: {up:?}; the cache's errors:\n{}",
                mirror
                    .log()
                    .lines()
                    .filter(|l| l.contains("level=error"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }

    // No node reached the upstream itself: everything it answered, it
    // answered to the mirror.
    let records = upstream.access_records();
    let log = upstream.access_log();
    for (record, line) in records[up_start..].iter().zip(&log[up_start..]) {
        assert!(
            !line.contains("ocimount/"),
            "a node asked the upstream directly: {record:?}"
        );
    }

    // Each layer at most twice in total (the cache's stream to the first
    // node and its own copy), whatever the number of nodes.
    let up = upstream.blob_bytes_by_digest(up_start);
    let mirror_all = mirror.blob_bytes_by_digest(0);
    for (digest, size) in &layers {
        let served = up.get(digest).copied().unwrap_or(0);
        assert!(
            served <= 2 * size,
            "the upstream served {served} bytes of layer {digest} ({size} bytes)"
        );
    }
    let up_layers = sum_of(&up, &layers);
    let mut sorted = times.clone();
    sorted.sort();
    for line in &report {
        eprintln!("{line}");
    }
    eprintln!(
        "{NODES} nodes, {IMAGE} ({n} layers, {total} compressed): the upstream served \
         {up_layers_mib} of layer blobs ({ratio:.2}× the compressed layers; {up_all} of all \
         blobs, the artifact's included); the mirror served {mirror_layers} of layer blobs \
         ({mirror_all_mib} of all blobs); time to {FILE}: min {min} ms, median {med} ms, \
         max {max} ms",
        n = layers.len(),
        total = mib(layer_total),
        up_layers_mib = mib(up_layers),
        ratio = up_layers as f64 / layer_total as f64,
        up_all = mib(up.values().sum()),
        mirror_layers = mib(sum_of(&mirror_all, &layers)),
        mirror_all_mib = mib(mirror_all.values().sum()),
        min = sorted[0].as_millis(),
        med = (sorted[NODES / 2 - 1] + sorted[NODES / 2]).as_millis() / 2,
        max = sorted[NODES - 1].as_millis(),
    );
}
