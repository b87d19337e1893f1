//! registries.conf against a real registry: Debian's `docker-registry` on
//! 127.0.0.1 holds a one-layer image, and each test points
//! `$CONTAINERS_REGISTRIES_CONF` (or `--registries-conf`) at a file of its
//! own. Mirrors in front of a dead primary, a location rewrite of a name
//! that must never be resolved, a blocked prefix, and a short name sent to
//! the loopback registry. No request leaves 127.0.0.1: every name the tests
//! give that is not a loopback address is rewritten before any connection.

mod common;
mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use support::registry::TestRegistry;
use support::{ok, run_bounded, Mounted, BIN};

const HELLO: &str = "hello through registries.conf\n";

/// One registry with the image at `test/img:v1`.
fn shared() -> &'static TestRegistry {
    static SHARED: OnceLock<(TestRegistry, tempfile::TempDir)> = OnceLock::new();
    let (reg, _) = SHARED.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut tar = tar::Builder::new(Vec::new());
        for (path, body) in [("etc/hello", HELLO), ("etc/os-release", "ID=test\n")] {
            let mut header = tar::Header::new_ustar();
            header.set_size(body.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(1_700_000_000);
            tar.append_data(&mut header, path, body.as_bytes()).unwrap();
        }
        let tar = tar.into_inner().unwrap();
        let layout = common::build_layout(dir.path(), &[common::gzip_layer(&tar)]);
        let reg = TestRegistry::new();
        reg.push(&format!("oci:{}:latest", layout.display()), "test/img:v1");
        (reg, dir)
    });
    reg
}

/// A loopback port nothing listens on.
fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// `registries.conf` with `text` in a new directory (kept by the caller).
fn conf(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registries.conf");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    (dir, path)
}

/// ocimount with `$CONTAINERS_REGISTRIES_CONF` set to `conf`, TLS verified
/// (a plain-HTTP source must be made `insecure` by the file), a short
/// request bound, no auth file.
fn om(cache: &Path, conf: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("--cache")
        .arg(cache)
        .arg("--registry-timeout")
        .arg("10")
        .args(args)
        .env("CONTAINERS_REGISTRIES_CONF", conf)
        .env("RUST_LOG", "ocimount=debug")
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("OCIMOUNT_REGISTRY_CREDS")
        .env_remove("OCIMOUNT_TLS_VERIFY");
    let out = run_bounded(&mut cmd, Duration::from_secs(120));
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

/// The registry's requests since `before` of them, as `METHOD /path`.
fn requests_since(reg: &TestRegistry, before: usize) -> Vec<String> {
    let all = reg.access_requests();
    all[before.min(all.len())..]
        .iter()
        .map(|r| {
            r.rsplit_once(' ')
                .map_or(r.as_str(), |(m, _)| m)
                .to_string()
        })
        .collect()
}

#[test]
fn mirrors_in_front_of_a_dead_primary_serve_the_image() {
    let reg = shared();
    let live = reg.host_port();
    let dead = dead_port();
    let dead_mirror = dead_port();
    let (_dir, file) = conf(&format!(
        r#"
[[registry]]
prefix = "127.0.0.1:{dead}/test"
location = "127.0.0.1:{dead}/test"

# Refuses connections: the next mirror is tried.
[[registry.mirror]]
location = "127.0.0.1:{dead_mirror}/test"
insecure = true

# Answers, but has no such image (404): the next mirror is tried.
[[registry.mirror]]
location = "{live}/elsewhere"
insecure = true

[[registry.mirror]]
location = "{live}/test"
insecure = true
"#
    ));
    let image = format!("docker://127.0.0.1:{dead}/test/img:v1");
    let cache = tempfile::tempdir().unwrap();
    let before = reg.access_requests().len();
    let out = om(cache.path(), &file, &["cat", &image, "/etc/hello"]);
    assert_eq!(ok(&out), HELLO);
    let requests = requests_since(reg, before);
    assert!(
        requests
            .iter()
            .any(|r| r == "GET /v2/elsewhere/img/manifests/v1"),
        "the 404 mirror was not asked: {requests:?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("GET /v2/test/img/blobs/sha256:")),
        "the layer was not read from the mirror that answered: {requests:?}"
    );
    assert!(
        !requests
            .iter()
            .any(|r| r.starts_with("GET /v2/elsewhere/img/blobs/")),
        "blobs were asked of the mirror without the image: {requests:?}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("mirror 127.0.0.1:{dead_mirror}/test/img")),
        "the dead mirror is not in the log: {stderr}"
    );

    // A mount: its daemon gets the file with --registries-conf and reads
    // the pinned image through the same mirrors.
    let conf_flag = format!("--registries-conf={}", file.display());
    let mount_cache = tempfile::tempdir().unwrap();
    let mounted = Mounted::new(mount_cache.path(), &image, &[conf_flag.as_str()]);
    assert_eq!(
        std::fs::read_to_string(mounted.path().join("etc/hello")).unwrap(),
        HELLO
    );
    drop(mounted);

    // Every source dead: the error names each of them.
    let (_dir2, all_dead) = conf(&format!(
        "[[registry]]\nlocation = \"127.0.0.1:{dead}\"\n\
         [[registry.mirror]]\nlocation = \"127.0.0.1:{dead_mirror}\"\ninsecure = true\n"
    ));
    let err = failed(&om(cache.path(), &all_dead, &["cat", &image, "/etc/hello"]));
    assert!(
        err.contains(&format!("mirror 127.0.0.1:{dead_mirror}/test/img: "))
            && err.contains(&format!("primary 127.0.0.1:{dead}/test/img: ")),
        "{err}"
    );
}

#[test]
fn a_location_rewrite_sends_a_name_to_the_loopback_registry() {
    let reg = shared();
    let live = reg.host_port();
    let (_dir, file) = conf(&format!(
        r#"
[[registry]]
prefix = "example.invalid/foo"
location = "{live}/test"
insecure = true
"#
    ));
    let cache = tempfile::tempdir().unwrap();
    let image = "docker://example.invalid/foo/img:v1";
    let out = om(cache.path(), &file, &["cat", image, "/etc/hello"]);
    assert_eq!(ok(&out), HELLO);
    let out = om(cache.path(), &file, &["inspect", image]);
    let inspect = ok(&out);
    assert!(
        inspect.contains("Image:       docker://example.invalid/foo/img:v1\n")
            && inspect.contains(&format!(
                "Read from:   docker://{live}/test/img (registries.conf)\n"
            )),
        "{inspect}"
    );

    // Not insecure: plain HTTP is refused, as for any registry under
    // --tls-verify; so `insecure` above is what allowed it, for that
    // source only.
    let (_dir2, strict) = conf(&format!(
        "[[registry]]\nprefix = \"example.invalid/foo\"\nlocation = \"{live}/test\"\n"
    ));
    let fresh = tempfile::tempdir().unwrap();
    let err = failed(&om(fresh.path(), &strict, &["cat", image, "/etc/hello"]));
    assert!(err.contains(&format!("registry {live}/test/img")), "{err}");
}

#[test]
fn a_blocked_prefix_is_refused_with_the_rule() {
    // A registry of its own: the shared one's log holds the other tests'
    // requests, made in parallel. Nothing needs to be pushed: a blocked
    // image is refused before any request.
    let own = TestRegistry::new();
    let reg = &own;
    let live = reg.host_port();
    let (_dir, file) = conf(&format!(
        "# blocked here\n[[registry]]\nprefix = \"{live}/test\"\nlocation = \"{live}/test\"\n\
         blocked = true\n"
    ));
    let cache = tempfile::tempdir().unwrap();
    let image = format!("docker://{live}/test/img:v1");
    let before = reg.access_requests().len();
    let out = om(
        cache.path(),
        &file,
        &["--tls-verify=false", "cat", &image, "/etc/hello"],
    );
    let err = failed(&out);
    assert!(
        err.contains(&format!(
            "registry {live}/test/img: blocked by the [[registry]] with prefix \"{live}/test\" ({}:2)",
            file.display()
        )),
        "{err}"
    );
    assert_eq!(
        requests_since(reg, before),
        Vec::<String>::new(),
        "a blocked image was asked for"
    );
    // Pushing to it is refused too.
    let err = failed(&om(
        cache.path(),
        &file,
        &["--tls-verify=false", "index", "push", &image],
    ));
    assert!(err.contains("blocked by the [[registry]]"), "{err}");
    // And a malformed file is refused naming file and line.
    let (_dir2, bad) = conf("[[registry]]\nlocation = \"x\"\ninsecure = \"yes\"\n");
    let err = failed(&om(cache.path(), &bad, &["cat", &image, "/etc/hello"]));
    assert!(
        err.contains(&format!(
            "{}:3: \"insecure\" must be a boolean",
            bad.display()
        )),
        "{err}"
    );
}

#[test]
fn a_docker_hub_short_name_follows_its_docker_io_rule_offline() {
    let reg = shared();
    let live = reg.host_port();
    let (_dir, file) = conf(&format!(
        r#"
unqualified-search-registries = ["docker.io"]

[aliases]
"debian" = "docker.io/library/debian"

[[registry]]
prefix = "docker.io/library/debian"
location = "{live}/test/img"
insecure = true
"#
    ));
    let cache = tempfile::tempdir().unwrap();
    let before = reg.access_requests().len();
    let out = om(
        cache.path(),
        &file,
        &["cat", "docker://debian:v1", "/etc/hello"],
    );
    assert_eq!(ok(&out), HELLO);
    assert!(
        requests_since(reg, before)
            .iter()
            .any(|r| r == "GET /v2/test/img/manifests/v1"),
        "the rewritten name was not asked for"
    );
}
