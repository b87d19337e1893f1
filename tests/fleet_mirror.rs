//! A fleet behind a pull-through mirror (issue 24, item 4).
//!
//! An upstream registry holds a corpus image. A second Debian
//! `docker-registry` runs as a pull-through cache of it (distribution's
//! `proxy.remoteurl`), and a registries.conf names that cache as the mirror
//! of the upstream's location. Eight nodes, each with an empty cache of its
//! own, then read one file of the image through it, as a fleet rolling out
//! in waves does: node 1 alone, then nodes 2 to 8 at once.
//!
//! Two fleets are tried:
//! - the index artifact was published beforehand with `ocimount index
//!   push`, and every node takes it through the mirror;
//! - no artifact exists, and node 1 mounts with `--publish-index`: it makes
//!   the full passes, publishes to the primary location, and nodes 2 to 8
//!   take what it published, through the mirror.
//!
//! What is asserted: every node got the right bytes through the mirror (no
//! node read from the upstream itself); nodes 2 to 8 took the published
//! indexes (no full pass) and cost the upstream no layer byte; in total the
//! upstream served each layer at most twice. Twice, not once, is the floor
//! that distribution 2.8's pull-through cache allows: on a miss its
//! `proxyBlobStore.ServeBlob` streams the blob to the client from one
//! upstream fetch while a goroutine stores it from a second one. The bytes
//! each registry served and each node's time to the file are printed
//! (`--nocapture`).

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::registry::TestRegistry;
use support::{corpus, ok, run_bounded, Mounted, BIN};

/// The image the nodes read: the smallest corpus image whose layers are
/// all gzip and published by `index push`, with a file worth reading.
const IMAGE: &str = "debian-gzip";
const REPO: &str = "test/debian-gzip";
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

/// The upstream, the pull-through mirror in front of it, and the
/// registries.conf that names the mirror.
struct Fleet {
    upstream: TestRegistry,
    mirror: TestRegistry,
    _conf_dir: tempfile::TempDir,
    conf: String,
    image: String,
    /// digest -> compressed size of the image's layers.
    layers: BTreeMap<String, u64>,
    /// The file's bytes, from the layout.
    want: String,
    /// Where the upstream's access log stood once the fleet was ready.
    up_start: usize,
    report: Vec<String>,
    times: Vec<Duration>,
}

impl Fleet {
    /// `primary_insecure`: whether the registries.conf lets a node use the
    /// plain-HTTP primary at all. Without it, a node that fell back to the
    /// primary would fail, so every read went through the mirror; with it
    /// (needed to publish there), the upstream's log is what tells.
    fn new(publish_beforehand: bool, primary_insecure: bool) -> Fleet {
        let upstream = TestRegistry::new();
        upstream.push(
            &format!("oci:{}:latest", layout_dir().display()),
            &format!("{REPO}:v1"),
        );
        let image = format!("docker://{}/{REPO}:v1", upstream.host_port());
        let scratch = tempfile::tempdir().unwrap();
        let layout = layout_dir();
        let layout = layout.to_str().unwrap();
        let inspect = ok(&om(scratch.path(), &["inspect", "--json", layout]));
        let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
        let layers: BTreeMap<String, u64> = v["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l["digest"].as_str().unwrap().to_string(),
                    l["compressed_size"].as_u64().unwrap(),
                )
            })
            .collect();
        let want = ok(&om(scratch.path(), &["cat", layout, FILE]));

        if publish_beforehand {
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
        }

        let mirror = TestRegistry::builder().pull_through(&upstream).start();
        let conf_dir = tempfile::tempdir().unwrap();
        let conf = conf_dir.path().join("registries.conf");
        std::fs::File::create(&conf)
            .unwrap()
            .write_all(
                format!(
                    "[[registry]]\nprefix = \"{up}\"\nlocation = \"{up}\"\ninsecure = {primary_insecure}\n\n\
                     [[registry.mirror]]\nlocation = \"{mirror}\"\ninsecure = true\n",
                    up = upstream.host_port(),
                    mirror = mirror.host_port(),
                )
                .as_bytes(),
            )
            .unwrap();
        settle(&[&upstream]);
        let up_start = upstream.access_records().len();
        Fleet {
            conf: conf.to_str().unwrap().to_string(),
            _conf_dir: conf_dir,
            upstream,
            mirror,
            image,
            layers,
            want,
            up_start,
            report: Vec::new(),
            times: Vec::new(),
        }
    }

    /// Check one node's `cat` (or mount) and its stderr: the right bytes,
    /// and every layer from the published index.
    fn check_node(&self, node: usize, got: &str, stderr: &str) {
        assert_eq!(got, self.want, "node {node} read the wrong bytes");
        let taken = stderr.matches("using the published index").count();
        assert_eq!(
            taken,
            self.layers.len(),
            "node {node} did not take every published index through the mirror:\n{stderr}"
        );
    }

    /// Nodes `nodes` at once, each `cat`ting the file with an empty cache
    /// of its own; checked as `check_node` does.
    fn cat_wave(&mut self, nodes: std::ops::RangeInclusive<usize>) {
        let results: Vec<(usize, Duration, Output)> = std::thread::scope(|scope| {
            let handles: Vec<_> = nodes
                .map(|node| {
                    let fleet = &*self;
                    scope.spawn(move || {
                        let cache = tempfile::tempdir().unwrap();
                        let started = Instant::now();
                        let out = om(
                            cache.path(),
                            &["--registries-conf", &fleet.conf, "cat", &fleet.image, FILE],
                        );
                        (node, started.elapsed(), out)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (node, elapsed, out) in results {
            let got = ok(&out);
            self.check_node(node, &got, &String::from_utf8_lossy(&out.stderr));
            self.times.push(elapsed);
            self.report
                .push(format!("node {node}: {} ms to {FILE}", elapsed.as_millis()));
        }
    }

    /// Wait until the mirror answers every layer from its own storage:
    /// its background copy, from the upstream, may still run when node 1 is
    /// done. The next wave starts after that, as a fleet rolling out in
    /// waves does.
    fn wait_until_the_mirror_holds(&self, digests: &[&String]) {
        assert!(
            support::wait_until(Duration::from_secs(60), || digests
                .iter()
                .all(|d| self.mirror.layer_link_path(REPO, d).exists())),
            "the pull-through cache did not store the layers node 1 read within 60 s; its errors:\n{}",
            self.mirror_errors()
        );
    }

    fn mirror_errors(&self) -> String {
        self.mirror
            .log()
            .lines()
            .filter(|l| l.contains("level=error"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Upstream layer bytes served since access record `since`.
    fn upstream_layer_bytes(&self, since: usize) -> u64 {
        sum_of(&self.upstream.blob_bytes_by_digest(since), &self.layers)
    }

    /// The checks at the end: no node asked the upstream for a layer
    /// itself, and the upstream served each layer at most twice in all.
    fn check_upstream_and_report(&self, title: &str) {
        let records = self.upstream.access_records();
        let log = self.upstream.access_log();
        for (record, line) in records[self.up_start..].iter().zip(&log[self.up_start..]) {
            let asks_a_layer = self
                .layers
                .keys()
                .any(|d| record.path.ends_with(&format!("/blobs/{d}")));
            assert!(
                !(line.contains("ocimount/") && record.method == "GET" && asks_a_layer),
                "a node read a layer from the upstream directly: {record:?}"
            );
        }
        let up = self.upstream.blob_bytes_by_digest(self.up_start);
        for (digest, size) in &self.layers {
            let served = up.get(digest).copied().unwrap_or(0);
            assert!(
                served <= 2 * size,
                "the upstream served {served} bytes of layer {digest} ({size} bytes)"
            );
        }
        let layer_total: u64 = self.layers.values().sum();
        let up_layers = sum_of(&up, &self.layers);
        let mirror_all = self.mirror.blob_bytes_by_digest(0);
        let mut sorted = self.times.clone();
        sorted.sort();
        eprintln!("{title}");
        for line in &self.report {
            eprintln!("  {line}");
        }
        eprintln!(
            "  {NODES} nodes, {IMAGE} ({n} layers, {total} compressed): the upstream served \
             {up_layers_mib} of layer blobs ({ratio:.2}× the compressed layers; {up_all} of all \
             blobs, the artifact's included); the mirror served {mirror_layers} of layer blobs \
             ({mirror_all_mib} of all blobs); time to {FILE}: min {min} ms, median {med} ms, \
             max {max} ms",
            n = self.layers.len(),
            total = mib(layer_total),
            up_layers_mib = mib(up_layers),
            ratio = up_layers as f64 / layer_total as f64,
            up_all = mib(up.values().sum()),
            mirror_layers = mib(sum_of(&mirror_all, &self.layers)),
            mirror_all_mib = mib(mirror_all.values().sum()),
            min = sorted[0].as_millis(),
            med = (sorted[NODES / 2 - 1] + sorted[NODES / 2]).as_millis() / 2,
            max = sorted[NODES - 1].as_millis(),
        );
    }
}

#[test]
fn a_fleet_behind_a_pull_through_mirror_takes_the_published_index_and_costs_the_upstream_each_layer_at_most_twice(
) {
    // The primary is not marked insecure: a node that fell back to it
    // (plain HTTP) would fail, so every read below went through the mirror.
    let mut fleet = Fleet::new(true, false);

    fleet.cat_wave(1..=1);
    settle(&[&fleet.upstream, &fleet.mirror]);
    let asked: Vec<String> = fleet
        .mirror
        .blob_bytes_by_digest(0)
        .keys()
        .filter(|d| fleet.layers.contains_key(*d))
        .cloned()
        .collect();
    fleet.wait_until_the_mirror_holds(&asked.iter().collect::<Vec<_>>());
    let mark = fleet.upstream.access_records().len();

    fleet.cat_wave(2..=NODES);
    settle(&[&fleet.upstream, &fleet.mirror]);
    assert_eq!(
        fleet.upstream_layer_bytes(mark),
        0,
        "nodes 2 to {NODES}: the upstream served layer bytes again; the cache's errors:\n{}",
        fleet.mirror_errors()
    );
    fleet.check_upstream_and_report("the artifact published beforehand:");
}

#[test]
fn the_first_node_publishes_with_publish_index_and_the_rest_of_the_fleet_takes_it_through_the_mirror(
) {
    // The primary must take the push, so it is allowed (plain HTTP); the
    // upstream's log then shows that no node read a layer from it.
    let mut fleet = Fleet::new(false, true);
    let layer_total: u64 = fleet.layers.values().sum();

    // Node 1: no artifact anywhere, so full passes through the mirror,
    // then the publish to the primary.
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = om(
        cache.path(),
        &[
            "--registries-conf",
            &fleet.conf,
            "mount",
            "--publish-index",
            &fleet.image,
            dir.path().to_str().unwrap(),
        ],
    );
    ok(&out);
    let mounted = Mounted {
        dir,
        cache: cache.path().to_path_buf(),
    };
    let got = std::fs::read_to_string(mounted.path().join(FILE.trim_start_matches('/'))).unwrap();
    let elapsed = started.elapsed();
    drop(mounted);
    assert_eq!(got, fleet.want, "node 1 read the wrong bytes");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "published the indexes of {n} of {n} layers",
            n = fleet.layers.len()
        )),
        "node 1 did not publish:\n{stderr}"
    );
    assert!(
        !stderr.contains("using the published index"),
        "node 1 found an artifact where there was none:\n{stderr}"
    );
    fleet.times.push(elapsed);
    fleet.report.push(format!(
        "node 1: {} ms to mount (full passes, then the publish) and read {FILE}",
        elapsed.as_millis()
    ));
    settle(&[&fleet.upstream, &fleet.mirror]);
    let layers: Vec<String> = fleet.layers.keys().cloned().collect();
    fleet.wait_until_the_mirror_holds(&layers.iter().collect::<Vec<_>>());
    let up_mark = fleet.upstream.access_records().len();
    let mirror_mark = fleet.mirror.access_records().len();

    fleet.cat_wave(2..=NODES);
    settle(&[&fleet.upstream, &fleet.mirror]);
    assert_eq!(
        fleet.upstream_layer_bytes(up_mark),
        0,
        "nodes 2 to {NODES}: the upstream served layer bytes again; the cache's errors:\n{}",
        fleet.mirror_errors()
    );
    // Each later node read spans, not layers: together, less than 5 % of
    // the layers a node.
    let wave = sum_of(
        &fleet.mirror.blob_bytes_by_digest(mirror_mark),
        &fleet.layers,
    );
    let nodes = (NODES - 1) as u64;
    assert!(
        wave * 20 < layer_total * nodes,
        "nodes 2 to {NODES} fetched {wave} layer bytes from the mirror; 5 % of the layers \
         for each of them is {}",
        layer_total * nodes / 20
    );
    fleet.check_upstream_and_report("node 1 publishes with --publish-index:");
}
