//! ocimount against a real registry: Debian's `docker-registry` (the CNCF
//! distribution registry 2.8) on 127.0.0.1, filled with `skopeo copy`,
//! sometimes behind a proxy that counts, redirects, ignores Range or goes
//! down. Trees are compared with `umoci unpack` of the same images.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use support::registry::{ProxyMode, TestProxy, TestRegistry};
use support::{assert_same_tree, corpus, ok, run_bounded, Mounted, BIN};

/// The images every test may read, pushed once to one anonymous registry.
const SHARED_IMAGES: &[&str] = &[
    "debian-gzip",
    "debian-zstd",
    "debian-zstd-multiframe",
    "debian-gzip-multimember",
    "debian-plain",
    "tiny-opaque",
    "multiarch",
];

fn layout(name: &str) -> String {
    format!("oci:{}", corpus().image(name).layout.display())
}

fn shared() -> &'static TestRegistry {
    static SHARED: OnceLock<TestRegistry> = OnceLock::new();
    SHARED.get_or_init(|| {
        let reg = TestRegistry::new();
        for name in SHARED_IMAGES {
            reg.push(&layout(name), &format!("test/{name}:v1"));
        }
        reg
    })
}

/// `docker://HOST:PORT/test/NAME:v1`.
fn image_at(host_port: &str, name: &str) -> String {
    format!("docker://{host_port}/test/{name}:v1")
}

/// ocimount with a cache, plain HTTP allowed and a short request bound.
fn om(cache: &Path, args: &[&str]) -> Output {
    om_env(cache, args, &[])
}

fn om_env(cache: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("--cache")
        .arg(cache)
        .arg("--tls-verify=false")
        .arg("--registry-timeout")
        .arg("10")
        .args(args)
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("OCIMOUNT_REGISTRY_CREDS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = run_bounded(&mut cmd, Duration::from_secs(180));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "ocimount panicked: {stderr}");
    out
}

fn failed(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "expected a failure, got success: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(out.status.code(), Some(1), "exit code");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The stdout of a command that must succeed, as bytes.
fn bytes(out: &Output) -> Vec<u8> {
    ok(out);
    out.stdout.clone()
}

/// Equal bytes, without printing them all when they differ.
fn assert_same_bytes(got: &[u8], want: &[u8], what: &str) {
    assert!(
        got == want,
        "{what}: {} bytes, expected {} bytes ({:?}… vs {:?}…)",
        got.len(),
        want.len(),
        String::from_utf8_lossy(&got[..got.len().min(80)]),
        String::from_utf8_lossy(&want[..want.len().min(80)])
    );
}

fn local(cache: &Path, args: &[&str]) -> Vec<u8> {
    let out = run_bounded(
        Command::new(BIN).arg("--cache").arg(cache).args(args),
        Duration::from_secs(180),
    );
    ok(&out);
    out.stdout
}

#[test]
fn every_command_reads_a_registry_image_as_it_reads_the_layout() {
    let reg = shared();
    let image = image_at(&reg.host_port(), "debian-gzip");
    let layout_dir = corpus().image("debian-gzip").layout.display().to_string();
    let cache = tempfile::tempdir().unwrap();
    let local_cache = tempfile::tempdir().unwrap();
    let c = cache.path();
    let lc = local_cache.path();

    let inspect = ok(&om(c, &["inspect", &image]));
    let local_inspect = String::from_utf8(local(lc, &["inspect", &layout_dir])).unwrap();
    let manifest_line = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("Manifest:"))
            .unwrap()
            .to_string()
    };
    assert_eq!(manifest_line(&inspect), manifest_line(&local_inspect));
    assert!(
        inspect.contains(&format!("Image:       {image}")),
        "{inspect}"
    );

    for args in [
        vec!["ls", "-l", "/etc/apt"],
        vec!["cat", "/etc/os-release"],
        vec!["layers"],
    ] {
        let mut remote_args = vec![args[0], image.as_str()];
        remote_args.extend_from_slice(&args[1..]);
        let mut local_args = vec![args[0], layout_dir.as_str()];
        local_args.extend_from_slice(&args[1..]);
        let remote = om(c, &remote_args);
        assert_same_bytes(
            &bytes(&remote),
            &local(lc, &local_args),
            &format!("{args:?} differs"),
        );
    }

    let tar = c.join("r.tar");
    let local_tar = lc.join("l.tar");
    ok(&om(c, &["export", &image, "-o", tar.to_str().unwrap()]));
    local(
        lc,
        &["export", &layout_dir, "-o", local_tar.to_str().unwrap()],
    );
    assert!(
        std::fs::read(&tar).unwrap() == std::fs::read(&local_tar).unwrap(),
        "export of the registry image differs from the layout's"
    );

    let verify = om(c, &["verify", &image]);
    ok(&verify);
    let report = String::from_utf8_lossy(&verify.stderr).into_owned()
        + &String::from_utf8_lossy(&verify.stdout);
    assert_eq!(
        report.lines().filter(|l| l.starts_with("ok")).count(),
        8,
        "{report}"
    );

    let mounted = Mounted::new(c, &image, &["--tls-verify=false"]);
    assert_same_tree(&corpus().reference("debian-gzip"), mounted.path());
    drop(mounted);

    let run = om(c, &["run", &image, "--", "cat", "/etc/debian_version"]);
    let version =
        std::fs::read_to_string(corpus().reference("debian-gzip").join("etc/debian_version"))
            .unwrap();
    assert_eq!(ok(&run), version);
}

#[test]
fn gzip_zstd_plain_and_opaque_images_mount_as_umoci_unpacks_them() {
    let reg = shared();
    for name in [
        "debian-zstd",
        "debian-zstd-multiframe",
        "debian-gzip-multimember",
        "debian-plain",
        "tiny-opaque",
    ] {
        let cache = tempfile::tempdir().unwrap();
        let image = image_at(&reg.host_port(), name);
        let mounted = Mounted::new(cache.path(), &image, &["--tls-verify=false"]);
        let reference = corpus().image(name).reference.clone().unwrap();
        assert_same_tree(&reference, mounted.path());
    }
}

#[test]
fn the_platform_is_chosen_from_a_registry_index() {
    let reg = shared();
    let image = image_at(&reg.host_port(), "multiarch");
    let root = &corpus().root;
    for (platform, reference) in [
        ("linux/amd64", "ref/multiarch-amd64"),
        ("linux/arm64/v8", "ref/multiarch-arm64"),
    ] {
        let cache = tempfile::tempdir().unwrap();
        let inspect = ok(&om(
            cache.path(),
            &["inspect", "--platform", platform, &image],
        ));
        assert!(
            inspect.contains(&format!(
                "Chosen:      {platform} (exact match for the --platform"
            )),
            "{inspect}"
        );
        let mounted = Mounted::new(
            cache.path(),
            &image,
            &["--tls-verify=false", "--platform", platform],
        );
        assert_same_tree(&root.join(reference), mounted.path());
    }
    let cache = tempfile::tempdir().unwrap();
    let err = failed(&om(
        cache.path(),
        &["ls", "--platform", "linux/s390x", &image, "/"],
    ));
    assert!(
        err.contains(
            "no manifest for platform linux/s390x; the image offers: linux/amd64, linux/arm64/v8"
        ),
        "{err}"
    );
}

#[test]
fn bad_references_and_missing_images_are_clear_errors() {
    let reg = shared();
    let cache = tempfile::tempdir().unwrap();
    let c = cache.path();
    let err = failed(&om(c, &["ls", "docker://Debian", "/"]));
    assert!(
        err.contains("\"Debian\" is not a repository name component"),
        "{err}"
    );
    let err = failed(&om(c, &["ls", &image_at(&reg.host_port(), "nothere"), "/"]));
    assert!(err.contains("no manifest \"v1\" in the registry"), "{err}");
    let err = failed(&om(
        c,
        &[
            "ls",
            &format!("docker://{}/test/debian-gzip:v9", reg.host_port()),
            "/",
        ],
    ));
    assert!(
        err.contains("test/debian-gzip: no manifest \"v9\""),
        "{err}"
    );
    // Nothing listens there: a clear error, quickly.
    let started = Instant::now();
    let err = failed(&om(c, &["ls", "docker://127.0.0.1:9/x:y", "/"]));
    assert!(
        err.contains("registry 127.0.0.1:9/x: cannot reach the registry"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    // Plain HTTP needs --tls-verify=false, as in skopeo.
    let out = run_bounded(
        Command::new(BIN).arg("--cache").arg(c).args([
            "ls",
            &image_at(&reg.host_port(), "tiny-opaque"),
            "/",
        ]),
        Duration::from_secs(60),
    );
    let err = failed(&out);
    assert!(err.contains("cannot reach the registry"), "{err}");
}

#[test]
fn basic_auth_uses_creds_or_the_auth_file() {
    let reg = TestRegistry::builder()
        .basic_auth("alice", "s3cret")
        .start();
    reg.push(&layout("tiny-opaque"), "team/tiny:v1");
    let image = format!("docker://{}/team/tiny:v1", reg.host_port());
    let cache = tempfile::tempdir().unwrap();
    let c = cache.path();
    let want = local(
        c,
        &[
            "ls",
            corpus().image("tiny-opaque").layout.to_str().unwrap(),
            "/",
        ],
    );

    let err = failed(&om(c, &["ls", &image, "/"]));
    assert!(
        err.contains("asks for a user name and password; give --creds"),
        "{err}"
    );
    let err = failed(&om(c, &["--creds", "alice:wrong", "ls", &image, "/"]));
    assert!(err.contains("HTTP 401"), "{err}");
    let out = om(c, &["--creds", "alice:s3cret", "ls", &image, "/"]);
    assert_same_bytes(&bytes(&out), &want, "output");

    let auth = c.join("auth.json");
    reg.write_auth_json(&auth);
    let out = om_env(
        c,
        &["ls", &image, "/"],
        &[("REGISTRY_AUTH_FILE", auth.to_str().unwrap())],
    );
    assert_same_bytes(&bytes(&out), &want, "output");
    // A daemon gets the credentials too, without them on its command line.
    let mounted = Mounted::new(
        c,
        &image,
        &["--tls-verify=false", "--creds", "alice:s3cret"],
    );
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", mounted.daemon_pid())).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains("s3cret"));
    assert_same_tree(&corpus().reference("tiny-opaque"), mounted.path());
}

#[test]
fn bearer_tokens_anonymous_and_with_credentials() {
    let reg = TestRegistry::builder().token_auth("bob", "pw").start();
    reg.push(&layout("tiny-opaque"), "team/tiny:v1");
    let image = format!("docker://{}/team/tiny:v1", reg.host_port());
    let cache = tempfile::tempdir().unwrap();
    let c = cache.path();
    let want = local(
        c,
        &[
            "cat",
            corpus().image("tiny-opaque").layout.to_str().unwrap(),
            "/n/file",
        ],
    );

    let out = om(c, &["cat", &image, "/n/file"]);
    assert_same_bytes(&bytes(&out), &want, "output");
    assert!(
        reg.token_log().contains("user=anonymous status=200"),
        "{}",
        reg.token_log()
    );

    let cache2 = tempfile::tempdir().unwrap();
    let out = om(
        cache2.path(),
        &["--creds", "bob:pw", "cat", &image, "/n/file"],
    );
    assert_same_bytes(&bytes(&out), &want, "output");
    assert!(
        reg.token_log().contains("user=bob status=200"),
        "{}",
        reg.token_log()
    );

    let err = failed(&om(c, &["--creds", "bob:nope", "cat", &image, "/n/file"]));
    assert!(err.contains("token request to"), "{err}");
    assert!(err.contains("the credentials were refused"), "{err}");
}

#[test]
fn tls_with_a_private_ca_from_cert_dir_or_certs_d() {
    let reg = TestRegistry::builder().tls().start();
    reg.push(&layout("tiny-opaque"), "team/tiny:v1");
    let image = format!("docker://{}/team/tiny:v1", reg.host_port());
    let cache = tempfile::tempdir().unwrap();
    let c = cache.path();
    let want = local(
        c,
        &[
            "ls",
            corpus().image("tiny-opaque").layout.to_str().unwrap(),
            "/",
        ],
    );
    let verified = |extra: &[&str], home: &Path| {
        let mut cmd = Command::new(BIN);
        cmd.arg("--cache")
            .arg(c)
            .args(extra)
            .args(["ls", &image, "/"])
            .env("HOME", home);
        let out = run_bounded(&mut cmd, Duration::from_secs(60));
        assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
        out
    };
    let empty_home = tempfile::tempdir().unwrap();
    let err = failed(&verified(&[], empty_home.path()));
    assert!(
        err.contains("UnknownIssuer") || err.contains("certificate"),
        "{err}"
    );

    let cert_dir = reg.cert_dir().unwrap();
    let out = verified(
        &["--cert-dir", cert_dir.to_str().unwrap()],
        empty_home.path(),
    );
    assert_same_bytes(&bytes(&out), &want, "output");

    // $HOME/.config/containers/certs.d/HOST:PORT/ca.crt, as containers-image reads it.
    let home = tempfile::tempdir().unwrap();
    let certs_d = home
        .path()
        .join(".config/containers/certs.d")
        .join(reg.host_port());
    std::fs::create_dir_all(&certs_d).unwrap();
    std::fs::copy(reg.ca_pem().unwrap(), certs_d.join("ca.crt")).unwrap();
    let out = verified(&[], home.path());
    assert_same_bytes(&bytes(&out), &want, "output");

    let out = verified(&["--tls-verify=false"], empty_home.path());
    assert_same_bytes(&bytes(&out), &want, "output");
}

#[test]
fn redirected_blob_reads_keep_range_and_drop_credentials() {
    // The registry asks for credentials; its blobs are sent to "object
    // storage" (a second registry with the same blobs, behind a proxy that
    // records what it is sent).
    let reg = TestRegistry::builder()
        .basic_auth("alice", "s3cret")
        .start();
    let storage = TestRegistry::new();
    reg.push(&layout("debian-gzip"), "test/debian-gzip:v1");
    storage.push(&layout("debian-gzip"), "test/debian-gzip:v1");
    let storage_proxy = TestProxy::new(&storage, ProxyMode::Pass);
    let front = TestProxy::new(&reg, ProxyMode::RedirectBlobsTo(storage_proxy.port()));
    let image = image_at(&front.host_port(), "debian-gzip");
    let cache = tempfile::tempdir().unwrap();
    let c = cache.path();
    let out = om(
        c,
        &["--creds", "alice:s3cret", "cat", &image, "/etc/os-release"],
    );
    let want = local(
        c,
        &[
            "cat",
            corpus().image("debian-gzip").layout.to_str().unwrap(),
            "/etc/os-release",
        ],
    );
    assert_same_bytes(&bytes(&out), &want, "output");

    let front_requests = front.records();
    assert!(
        front_requests
            .iter()
            .any(|r| r.target.contains("/manifests/") && r.authorization),
        "the registry got no credentials"
    );
    let redirected = storage_proxy.records();
    assert!(redirected.iter().any(|r| r.target.contains("/blobs/")));
    assert!(
        redirected.iter().all(|r| !r.authorization),
        "credentials followed a redirect to another host"
    );
    assert!(
        redirected.iter().any(|r| r.range.is_some()),
        "no span was read by Range after a redirect: {redirected:?}"
    );
}

#[test]
fn a_registry_that_ignores_range_still_serves_the_right_bytes() {
    let reg = shared();
    let proxy = TestProxy::new(reg, ProxyMode::IgnoreRange);
    let image = image_at(&proxy.host_port(), "debian-gzip");
    let cache = tempfile::tempdir().unwrap();
    let c = cache.path();
    let layout_dir = corpus().image("debian-gzip").layout.display().to_string();
    for path in ["/etc/os-release", "/usr/bin/ls", "/etc/passwd"] {
        // index-only: every command reads its spans from the registry by
        // Range (a full cache would hold them after the first command's
        // pass, and the manifest and config come from the cache's
        // documents since one fetch each), so each meets the ignored Range.
        let out = om(c, &["--cache-mode", "index-only", "cat", &image, path]);
        assert_same_bytes(&bytes(&out), &local(c, &["cat", &layout_dir, path]), path);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            stderr
                .matches("the registry ignores Range requests")
                .count(),
            1,
            "{stderr}"
        );
    }
    assert!(proxy.requests().iter().any(|r| r.contains("Range: bytes=")));
}

#[test]
fn a_mount_outlives_its_registry_and_recovers_when_it_returns() {
    let mut reg = TestRegistry::new();
    reg.push(&layout("debian-gzip"), "test/debian-gzip:v1");
    let image = image_at(&reg.host_port(), "debian-gzip");
    // The indexes come from the registry, so that the mount's cache holds
    // only the spans read through it (a full pass would leave it all).
    let first_node = tempfile::tempdir().unwrap();
    ok(&om(first_node.path(), &["index", "push", &image]));
    let cache = tempfile::tempdir().unwrap();
    let c = cache.path();
    let layout_dir = corpus().image("debian-gzip").layout.display().to_string();
    let mounted = Mounted::new(
        c,
        &image,
        &["--tls-verify=false", "--registry-timeout", "3"],
    );
    let read = |path: &str| std::fs::read(mounted.path().join(path.trim_start_matches('/')));
    let first = read("/etc/os-release").unwrap();
    assert_eq!(first, local(c, &["cat", &layout_dir, "/etc/os-release"]));

    reg.stop();
    // Cached spans are served; a read that needs the registry fails with
    // EIO, in bounded time, and the log names the registry error.
    assert_eq!(read("/etc/os-release").unwrap(), first);
    let started = Instant::now();
    let err = read("/usr/bin/perl").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let log_dir = c.join("logs");
    let log: String = std::fs::read_dir(&log_dir)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert!(
        log.contains(&format!(
            "registry 127.0.0.1:{}/test/debian-gzip",
            reg.port()
        )),
        "{log}"
    );

    // Back: the read works again (a failure answers for the next 2 s, so
    // that reads queued behind a timed-out fetch fail at once).
    reg.start();
    let deadline = Instant::now() + Duration::from_secs(15);
    let again = loop {
        match read("/usr/bin/perl") {
            Ok(bytes) => break bytes,
            Err(e) if Instant::now() < deadline => {
                eprintln!("not yet: {e}");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => panic!("the registry is back and the read still fails: {e}"),
        }
    };
    assert_same_bytes(
        &again,
        &local(c, &["cat", &layout_dir, "/usr/bin/perl"]),
        "/usr/bin/perl",
    );
}

fn layer_bytes(layout_dir: &Path) -> u64 {
    let out = run_bounded(
        Command::new(BIN)
            .arg("inspect")
            .arg("--json")
            .arg(layout_dir),
        Duration::from_secs(60),
    );
    let v: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["compressed_size"].as_u64().unwrap())
        .sum()
}

#[test]
fn a_pushed_index_spares_the_next_node_its_full_pass() {
    let reg = TestRegistry::new();
    reg.push(&layout("debian-gzip"), "test/debian-gzip:v1");
    let image = image_at(&reg.host_port(), "debian-gzip");
    let first_node = tempfile::tempdir().unwrap();
    let pushed = ok(&om(first_node.path(), &["index", "push", &image]));
    assert!(pushed.contains("6 of 6 layers"), "{pushed}");
    assert!(
        pushed.contains("listed through the referrers tag sha256-"),
        "{pushed}"
    );
    // Pushing again replaces ours in the tag's index, and keeps one.
    ok(&om(first_node.path(), &["index", "push", &image]));
    let manifest = pushed
        .split('@')
        .nth(1)
        .unwrap()
        .split(':')
        .take(2)
        .collect::<Vec<_>>()
        .join(":");
    let tag = format!("sha256-{}", manifest.trim_start_matches("sha256:"));
    let listed = reg.http(
        "GET",
        &format!("/v2/test/debian-gzip/manifests/{tag}"),
        &["Accept: application/vnd.oci.image.index.v1+json"],
        None,
    );
    assert_eq!(listed.status, 200);
    let listed: serde_json::Value = serde_json::from_slice(&listed.body).unwrap();
    assert_eq!(listed["manifests"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(
        listed["manifests"][0]["artifactType"],
        "application/vnd.ocimount.index.v1"
    );

    // A second node, empty cache, behind a proxy that counts.
    let proxy = TestProxy::new(&reg, ProxyMode::Pass);
    let image = image_at(&proxy.host_port(), "debian-gzip");
    let second_node = tempfile::tempdir().unwrap();
    let out = om(second_node.path(), &["cat", &image, "/etc/os-release"]);
    let layout_dir = corpus().image("debian-gzip").layout.clone();
    let want = local(
        second_node.path(),
        &["cat", layout_dir.to_str().unwrap(), "/etc/os-release"],
    );
    assert_same_bytes(&bytes(&out), &want, "/etc/os-release");
    let total = layer_bytes(&layout_dir);
    let fetched = proxy.blob_body_bytes();
    eprintln!("fetched {fetched} of {total} compressed layer bytes");
    assert!(
        fetched * 20 < total,
        "fetched {fetched} bytes, 5% of the layers is {}",
        total / 20
    );
    // No layer was streamed whole: every blob read was a Range.
    assert!(proxy
        .records()
        .iter()
        .filter(|r| r.target.contains("/blobs/") && r.method == "GET")
        .all(|r| r.range.is_some()));

    // --no-remote-index: not looked for, every layer streamed.
    proxy.reset_counters();
    let third_node = tempfile::tempdir().unwrap();
    ok(&om(
        third_node.path(),
        &["--no-remote-index", "ls", &image, "/"],
    ));
    assert!(!proxy
        .requests()
        .iter()
        .any(|r| r.contains("referrers") || r.contains("sha256-")));
    assert!(proxy.blob_body_bytes() >= total);
}

#[test]
fn a_damaged_published_index_falls_back_to_a_full_pass() {
    let reg = TestRegistry::new();
    reg.push(&layout("tiny-opaque"), "test/tiny:v1");
    let image = format!("docker://{}/test/tiny:v1", reg.host_port());
    let node = tempfile::tempdir().unwrap();
    ok(&om(node.path(), &["index", "push", &image]));
    // Replace each published index with a damaged one, under the digest the
    // artifact names (the registry's storage is the attacker's here).
    let inspect = ok(&om(node.path(), &["inspect", "--json", &image]));
    let manifest = serde_json::from_str::<serde_json::Value>(&inspect).unwrap()["manifest"]
        .as_str()
        .unwrap()
        .to_string();
    let tag = format!("sha256-{}", manifest.trim_start_matches("sha256:"));
    let listed = reg.http(
        "GET",
        &format!("/v2/test/tiny/manifests/{tag}"),
        &["Accept: application/vnd.oci.image.index.v1+json"],
        None,
    );
    let listed: serde_json::Value = serde_json::from_slice(&listed.body).unwrap();
    let artifact = listed["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let artifact = reg.http(
        "GET",
        &format!("/v2/test/tiny/manifests/{artifact}"),
        &["Accept: application/vnd.oci.image.manifest.v1+json"],
        None,
    );
    let artifact: serde_json::Value = serde_json::from_slice(&artifact.body).unwrap();
    for layer in artifact["layers"].as_array().unwrap() {
        let path = reg.blob_data_path(layer["digest"].as_str().unwrap());
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
    }
    let fresh = tempfile::tempdir().unwrap();
    let out = om(fresh.path(), &["cat", &image, "/n/file"]);
    let want = local(
        fresh.path(),
        &[
            "cat",
            corpus().image("tiny-opaque").layout.to_str().unwrap(),
            "/n/file",
        ],
    );
    assert_same_bytes(&bytes(&out), &want, "output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("indexing it with a full pass"), "{stderr}");
    assert!(stderr.contains("sha256 mismatch"), "{stderr}");
}

#[test]
fn single_frame_zstd_layers_are_not_published_and_get_a_full_pass() {
    let reg = shared();
    let image = image_at(&reg.host_port(), "debian-zstd");
    let node = tempfile::tempdir().unwrap();
    let out = om(node.path(), &["index", "push", &image]);
    let stdout = ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not published: only a full pass can fill it"),
        "{stderr}"
    );
    let skipped = stderr.matches("not published").count();
    assert!(skipped >= 1);
    assert!(
        stdout.contains(&format!("{} of 6 layers", 6 - skipped)),
        "{stdout}"
    );
    let fresh = tempfile::tempdir().unwrap();
    let mounted = Mounted::new(fresh.path(), &image, &["--tls-verify=false"]);
    assert_same_tree(&corpus().reference("debian-gzip"), mounted.path());
}

#[test]
fn a_bundle_of_an_image_without_mount_points_reads_its_layers_from_the_registry() {
    let reg = shared();
    let image = image_at(&reg.host_port(), "tiny-opaque");
    let scratch = tempfile::tempdir().unwrap();
    let cache = scratch.path().join("cache");
    let dir = scratch.path().join("bundle");
    let dir_text = dir.to_str().unwrap();
    ok(&om(&cache, &["bundle", &image, dir_text]));
    let cleanup = || {
        let _ = om(&cache, &["bundle", "--remove", dir_text]);
    };
    let result = std::panic::catch_unwind(|| {
        let rootfs = dir.join("rootfs");
        for point in ["proc", "dev", "sys"] {
            assert!(rootfs.join(point).is_dir(), "no /{point} in the bundle");
        }
        // The image's own tree is all there, beside the mount points.
        for entry in std::fs::read_dir(corpus().reference("tiny-opaque")).unwrap() {
            let name = entry.unwrap().file_name();
            assert!(rootfs.join(&name).exists(), "{name:?} missing");
        }
        let layout = dir.join(".ocimount-image");
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
        let source = index["annotations"]["io.ocimount.blobs-from"]
            .as_str()
            .unwrap();
        assert!(
            source.starts_with(&format!(
                "docker://{}/test/tiny-opaque@sha256:",
                reg.host_port()
            )),
            "{source}"
        );
        // Only what the bundle made is on disk: manifest, config, the layer
        // of mount points; the image's layers stay in the registry.
        let blobs = std::fs::read_dir(layout.join("blobs/sha256"))
            .unwrap()
            .count();
        assert_eq!(blobs, 3);
    });
    cleanup();
    assert!(!dir.exists(), "bundle --remove left {}", dir.display());
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// An index taken from one repository's artifact serves that repository
/// only: the same layer read through another repository (or with
/// `--no-remote-index`) gets its own full pass, and `index push` never
/// republishes a taken index.
#[test]
fn a_published_index_is_trusted_only_for_its_own_repository() {
    let reg = TestRegistry::new();
    reg.push(&layout("tiny-opaque"), "team/a:v1");
    reg.push(&layout("tiny-opaque"), "other/b:v1");
    let a = format!("docker://{}/team/a:v1", reg.host_port());
    let first = tempfile::tempdir().unwrap();
    ok(&om(first.path(), &["index", "push", &a]));

    let node = tempfile::tempdir().unwrap();
    let c = node.path();
    ok(&om(c, &["ls", &a, "/"]));
    let origins: Vec<String> = std::fs::read_dir(c.join("layers/sha256"))
        .unwrap()
        .map(|d| std::fs::read_to_string(d.unwrap().path().join("origin")).unwrap())
        .collect();
    assert_eq!(origins.len(), 2);
    for origin in &origins {
        assert_eq!(
            origin.trim(),
            format!("published docker://{}/team/a", reg.host_port())
        );
    }

    // Through the other repository, behind a proxy that counts: both
    // layers are streamed whole, and the indexes are this node's own.
    let proxy = TestProxy::new(&reg, ProxyMode::Pass);
    let b = format!("docker://{}/other/b:v1", proxy.host_port());
    let listing = ok(&om(c, &["ls", &b, "/"]));
    let local_listing = local(
        c,
        &[
            "ls",
            corpus().image("tiny-opaque").layout.to_str().unwrap(),
            "/",
        ],
    );
    assert_same_bytes(listing.as_bytes(), &local_listing, "ls /");
    let whole = proxy
        .records()
        .iter()
        .filter(|r| r.target.contains("/blobs/") && r.method == "GET" && r.range.is_none())
        .count();
    assert!(whole >= 2, "{:?}", proxy.requests());
    for d in std::fs::read_dir(c.join("layers/sha256")).unwrap() {
        assert!(!d.unwrap().path().join("origin").exists());
    }
}

/// The referrers tag is shared with other tools: `index push` keeps their
/// entries as they are (fields and all) and replaces only its own.
#[test]
fn index_push_keeps_other_tools_referrers_in_the_tag() {
    let reg = TestRegistry::new();
    reg.push(&layout("tiny-opaque"), "test/tiny:v1");
    let image = format!("docker://{}/test/tiny:v1", reg.host_port());
    let node = tempfile::tempdir().unwrap();
    let inspect = ok(&om(node.path(), &["inspect", "--json", &image]));
    let manifest = serde_json::from_str::<serde_json::Value>(&inspect).unwrap()["manifest"]
        .as_str()
        .unwrap()
        .to_string();
    let manifest_size = reg
        .http(
            "GET",
            &format!("/v2/test/tiny/manifests/{manifest}"),
            &["Accept: application/vnd.oci.image.manifest.v1+json"],
            None,
        )
        .body
        .len();
    // Another tool's signature-like artifact, listed in the tag first.
    let config = reg.upload_blob("test/tiny", b"{}");
    let theirs = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.example.signature",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config, "size": 2},
        "layers": [],
        "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest, "size": manifest_size},
    }))
    .unwrap();
    let theirs_digest = support::registry::sha256_digest(&theirs);
    let put = reg.put_manifest(
        "test/tiny",
        &theirs_digest,
        "application/vnd.oci.image.manifest.v1+json",
        &theirs,
    );
    assert_eq!(put.status, 201, "{}", put.text());
    let foreign_entry = serde_json::json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": theirs_digest,
        "size": theirs.len(),
        "artifactType": "application/vnd.example.signature",
        "annotations": {"org.example.signed-by": "someone"},
    });
    let tag = format!("sha256-{}", manifest.trim_start_matches("sha256:"));
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [foreign_entry],
        "annotations": {"org.example.kept": "yes"},
    }))
    .unwrap();
    let put = reg.put_manifest(
        "test/tiny",
        &tag,
        "application/vnd.oci.image.index.v1+json",
        &index,
    );
    assert_eq!(put.status, 201, "{}", put.text());

    ok(&om(node.path(), &["index", "push", &image]));
    ok(&om(node.path(), &["index", "push", &image]));
    let listed = reg.http(
        "GET",
        &format!("/v2/test/tiny/manifests/{tag}"),
        &["Accept: application/vnd.oci.image.index.v1+json"],
        None,
    );
    let listed: serde_json::Value = serde_json::from_slice(&listed.body).unwrap();
    let manifests = listed["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 2, "{listed}");
    assert_eq!(manifests[0], foreign_entry);
    assert_eq!(
        manifests[1]["artifactType"],
        "application/vnd.ocimount.index.v1"
    );
    assert_eq!(listed["annotations"]["org.example.kept"], "yes");
}

/// The digests `inspect --json` reports: the manifest's and the config's.
fn manifest_and_config(cache: &Path, image: &str) -> (String, String) {
    let v: serde_json::Value =
        serde_json::from_str(&ok(&om(cache, &["inspect", "--json", image]))).unwrap();
    (
        v["manifest"].as_str().unwrap().to_string(),
        v["config"].as_str().unwrap().to_string(),
    )
}

/// How many of `requests` are a GET of `path`.
/// A registry holding tiny-opaque as `test/tiny:v1`: the registry, the
/// image's `docker://` reference and the bytes of its `/n/file`.
fn tiny_in_a_registry() -> (TestRegistry, String, Vec<u8>) {
    let reg = TestRegistry::new();
    reg.push(&layout("tiny-opaque"), "test/tiny:v1");
    let image = format!("docker://{}/test/tiny:v1", reg.host_port());
    let layout_dir = corpus().image("tiny-opaque").layout.display().to_string();
    let scratch = tempfile::tempdir().unwrap();
    let want = local(scratch.path(), &["cat", &layout_dir, "/n/file"]);
    (reg, image, want)
}

/// Nothing is sent to a registry until something must come from it: an
/// image by digest whose manifest, config, indexes and read spans are in
/// the cache opens, mounts and reads with its registry stopped. A tag
/// still needs the registry to say what it names.
#[test]
fn a_cached_image_by_digest_is_read_with_its_registry_stopped() {
    let (mut reg, image, want) = tiny_in_a_registry();
    let cache = tempfile::tempdir().unwrap();
    let c = cache.path();
    let got = bytes(&om(c, &["cat", &image, "/n/file"]));
    assert_same_bytes(&got, &want, "/n/file with the registry up");
    let (manifest, _) = manifest_and_config(c, &image);
    let pinned = format!("docker://{}/test/tiny@{manifest}", reg.host_port());

    reg.stop();
    let out = om(c, &["cat", &pinned, "/n/file"]);
    assert_same_bytes(&bytes(&out), &want, "/n/file by digest, registry stopped");
    {
        let mounted = Mounted::new(c, &pinned, &["--tls-verify=false"]);
        let got = std::fs::read(mounted.path().join("n/file")).unwrap();
        assert_same_bytes(&got, &want, "/n/file through a mount, registry stopped");
    }
    let out = om(c, &["cat", &image, "/n/file"]);
    assert!(!out.status.success(), "a tag resolved with no registry");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "registry {}/test/tiny: cannot reach the registry over HTTPS",
            reg.host_port()
        )),
        "{stderr}"
    );
}

fn gets(requests: &[String], path: &str) -> usize {
    requests
        .iter()
        .filter(|r| r.starts_with(&format!("GET {path} ")))
        .count()
}

#[test]
fn a_mount_fetches_its_manifest_and_config_once_across_parent_and_daemon() {
    let (reg, image, want) = tiny_in_a_registry();
    let cache = tempfile::tempdir().unwrap();
    let c = cache.path();

    let before = reg.access_requests().len();
    let mounted = Mounted::new(c, &image, &["--tls-verify=false"]);
    let got = std::fs::read(mounted.path().join("n/file")).unwrap();
    assert_same_bytes(&got, &want, "/n/file");
    let requests = reg.access_requests()[before..].to_vec();
    drop(mounted);
    let (manifest, config) = manifest_and_config(c, &image);
    let manifest_gets = gets(&requests, "/v2/test/tiny/manifests/v1")
        + gets(&requests, &format!("/v2/test/tiny/manifests/{manifest}"));
    let config_gets = gets(&requests, &format!("/v2/test/tiny/blobs/{config}"));
    assert_eq!(manifest_gets, 1, "{requests:#?}");
    assert_eq!(config_gets, 1, "{requests:#?}");
    let kept = c.join("documents/sha256");
    for digest in [&manifest, &config] {
        assert!(kept.join(digest.trim_start_matches("sha256:")).is_file());
    }

    // Wrong bytes planted under both names: ignored (said so), fetched
    // again and replaced; the image mounts with the right content.
    let planted = tempfile::tempdir().unwrap();
    let p = planted.path();
    let kept = p.join("documents/sha256");
    std::fs::create_dir_all(&kept).unwrap();
    for digest in [&manifest, &config] {
        std::fs::write(
            kept.join(digest.trim_start_matches("sha256:")),
            b"{\"schemaVersion\": 2, \"planted\": true}",
        )
        .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let out = om(p, &["mount", &image, dir.path().to_str().unwrap()]);
    ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let got = std::fs::read(dir.path().join("n/file"));
    ok(&om(p, &["umount", dir.path().to_str().unwrap()]));
    assert_same_bytes(&got.unwrap(), &want, "/n/file (planted documents)");
    assert!(stderr.contains("ignored, fetching"), "{stderr}");
    for digest in [&manifest, &config] {
        let bytes = std::fs::read(kept.join(digest.trim_start_matches("sha256:"))).unwrap();
        assert_eq!(support::registry::sha256_digest(&bytes), *digest);
    }

    // Opened by digest (as a daemon opens it) with a planted manifest: the
    // registry's is fetched and the image read right.
    std::fs::write(
        kept.join(manifest.trim_start_matches("sha256:")),
        b"{\"planted\": true}",
    )
    .unwrap();
    let pinned = format!("docker://{}/test/tiny@{manifest}", reg.host_port());
    let out = om(p, &["cat", &pinned, "/n/file"]);
    assert_same_bytes(&bytes(&out), &want, "/n/file by digest");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ignored, fetching"), "{stderr}");
}

#[test]
fn prune_keeps_the_documents_of_recorded_images_and_removes_the_rest() {
    let reg = TestRegistry::new();
    reg.push(&layout("tiny-opaque"), "test/tiny:v1");
    let image = format!("docker://{}/test/tiny:v1", reg.host_port());
    let cache = tempfile::tempdir().unwrap();
    let c = cache.path();
    let layout_dir = corpus().image("tiny-opaque").layout.display().to_string();
    let scratch = tempfile::tempdir().unwrap();
    let want = local(scratch.path(), &["cat", &layout_dir, "/n/file"]);
    let got = bytes(&om(c, &["cat", &image, "/n/file"]));
    assert_same_bytes(&got, &want, "/n/file");
    let (manifest, config) = manifest_and_config(c, &image);
    let kept = c.join("documents/sha256");
    let names = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&kept)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let hex = |digest: &str| digest.trim_start_matches("sha256:").to_string();
    // Two documents no image record names: one untouched for an hour,
    // one just written (an open in flight keeps its documents first).
    let stray = |content: &[u8]| hex(&support::registry::sha256_digest(content));
    let (old, fresh) = (stray(b"old"), stray(b"fresh"));
    std::fs::write(kept.join(&old), b"old").unwrap();
    std::fs::write(kept.join(&fresh), b"fresh").unwrap();
    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(kept.join(&old))
        .unwrap()
        .set_modified(hour_ago)
        .unwrap();

    ok(&om(c, &["cache", "prune"]));
    let mut left = vec![hex(&manifest), hex(&config), fresh];
    left.sort();
    assert_eq!(names(), left);

    // --all: the image's layers go, its record with them, and so do the
    // documents; the next open fetches them again.
    ok(&om(c, &["cache", "prune", "--all"]));
    assert_eq!(names(), Vec::<String>::new());
    let again = bytes(&om(c, &["cat", &image, "/n/file"]));
    assert_same_bytes(&again, &want, "/n/file after prune --all");
}

#[test]
fn publish_index_on_the_first_node_spares_the_next_its_full_pass() {
    let reg = TestRegistry::new();
    reg.push(&layout("debian-gzip"), "test/debian-gzip:v1");
    let image = image_at(&reg.host_port(), "debian-gzip");
    let layout_dir = corpus().image("debian-gzip").layout.clone();

    // Node A indexes with full passes and publishes.
    let node_a = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dir_a = dir.path().to_str().unwrap();
    let out = om(node_a.path(), &["mount", "--publish-index", &image, dir_a]);
    ok(&out);
    ok(&om(node_a.path(), &["umount", dir_a]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("published the indexes of 6 of 6 layers"),
        "{stderr}"
    );

    // Node B, empty cache, behind a proxy that counts: takes them, and
    // publishes nothing again (the artifact is there).
    let proxy = TestProxy::new(&reg, ProxyMode::Pass);
    let image_b = image_at(&proxy.host_port(), "debian-gzip");
    let node_b = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dir_b = dir.path().to_str().unwrap();
    let out = om(
        node_b.path(),
        &["mount", "--publish-index", &image_b, dir_b],
    );
    ok(&out);
    let got = std::fs::read(dir.path().join("etc/os-release"));
    ok(&om(node_b.path(), &["umount", dir_b]));
    let want = local(
        node_b.path(),
        &["cat", layout_dir.to_str().unwrap(), "/etc/os-release"],
    );
    assert_same_bytes(&got.unwrap(), &want, "/etc/os-release");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("published the indexes"), "{stderr}");
    let total = layer_bytes(&layout_dir);
    let fetched = proxy.blob_body_bytes();
    eprintln!("node B fetched {fetched} of {total} compressed layer bytes");
    assert!(
        fetched * 20 < total,
        "fetched {fetched} bytes, 5% of the layers is {}",
        total / 20
    );
    assert!(!proxy
        .requests()
        .iter()
        .any(|r| r.starts_with("PUT ") || r.starts_with("POST ")));
}

#[test]
fn publish_index_refused_by_the_registry_or_the_credentials_is_a_warning() {
    let mut reg = TestRegistry::new();
    reg.push(&layout("tiny-opaque"), "test/tiny:v1");
    reg.set_read_only();
    let image = format!("docker://{}/test/tiny:v1", reg.host_port());
    let node = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = om(node.path(), &["mount", "--publish-index", &image, d]);
    ok(&out);
    let got = std::fs::read(dir.path().join("n/file"));
    ok(&om(node.path(), &["umount", d]));
    let want = local(
        node.path(),
        &[
            "cat",
            corpus().image("tiny-opaque").layout.to_str().unwrap(),
            "/n/file",
        ],
    );
    assert_same_bytes(&got.unwrap(), &want, "/n/file");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: layer indexes not published"),
        "{stderr}"
    );

    // Credentials that allow only pulls (anonymous, where the token server
    // gives anonymous clients pull tokens only): a warning too.
    let reg = TestRegistry::builder()
        .token_auth("pusher", "secret")
        .start();
    reg.push(&layout("tiny-opaque"), "test/tiny:v1");
    let image = format!("docker://{}/test/tiny:v1", reg.host_port());
    let node = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = om(node.path(), &["mount", "--publish-index", &image, d]);
    ok(&out);
    let got = std::fs::read(dir.path().join("n/file"));
    ok(&om(node.path(), &["umount", d]));
    assert_same_bytes(&got.unwrap(), &want, "/n/file (pull-only credentials)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: layer indexes not published"),
        "{stderr}"
    );
}
