//! registries.conf against a real registry: Debian's `docker-registry` on
//! 127.0.0.1 holds a one-layer image, and each test points
//! `$CONTAINERS_REGISTRIES_CONF` (or `--registries-conf`) at a file of its
//! own. Mirrors in front of a dead primary, a location rewrite of a name
//! that must never be resolved, a blocked prefix, a short name sent to the
//! loopback registry, the longest prefix and `*.domain` prefixes, a
//! digest-only mirror, and drop-ins. No request leaves 127.0.0.1: every
//! name the tests give that is not a loopback address is rewritten before
//! any connection (or, for the `*.mirrored.invalid` wildcard without a
//! location, served by its loopback mirror before the name is tried).

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
        let layout = hello_layout(dir.path());
        let reg = TestRegistry::new();
        reg.push(&format!("oci:{}:latest", layout.display()), "test/img:v1");
        (reg, dir)
    });
    reg
}

/// An OCI layout in `dir` of the one-layer image (`/etc/hello` says
/// [`HELLO`]); always the same bytes, so the same manifest digest.
fn hello_layout(dir: &Path) -> PathBuf {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, body) in [("etc/hello", HELLO), ("etc/os-release", "ID=test\n")] {
        let mut header = tar::Header::new_ustar();
        header.set_size(body.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(1_700_000_000);
        tar.append_data(&mut header, path, body.as_bytes()).unwrap();
    }
    let tar = tar.into_inner().unwrap();
    common::build_layout(dir, &[common::gzip_layer(&tar)])
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

#[test]
fn the_longest_prefix_wins_and_a_wildcard_prefix_matches_subdomains() {
    let reg = shared();
    let live = reg.host_port();
    let dead = dead_port();
    let (_dir, file) = conf(&format!(
        r#"
# The shorter prefix first: the order of the tables must not matter.
[[registry]]
prefix = "example.invalid"
location = "127.0.0.1:{dead}"
insecure = true

[[registry]]
prefix = "example.invalid/team"
location = "{live}/test"
insecure = true

# A wildcard with a location: the matched host is rewritten
# (containers-registries.conf(5) makes the location optional, not banned).
[[registry]]
prefix = "*.corp.invalid"
location = "{live}/test"
insecure = true

# Longer than the wildcard: wins over it for this one host.
[[registry]]
prefix = "dead.corp.invalid"
location = "127.0.0.1:{dead}/gone"
insecure = true

# A wildcard without a location: the name is kept as it is, and the
# table's mirrors apply (the name itself is never reached: the mirror
# answers first).
[[registry]]
prefix = "*.mirrored.invalid"

[[registry.mirror]]
location = "{live}/test"
insecure = true

[[registry]]
prefix = "*.blocked.invalid"
blocked = true
"#
    ));
    let cache = tempfile::tempdir().unwrap();

    // example.invalid/team/… is governed by the longer prefix: the live
    // registry, not the dead location of example.invalid.
    let image = "docker://example.invalid/team/img:v1";
    let before = reg.access_requests().len();
    let out = om(cache.path(), &file, &["cat", image, "/etc/hello"]);
    assert_eq!(ok(&out), HELLO);
    let requests = requests_since(reg, before);
    assert!(
        requests
            .iter()
            .any(|r| r == "GET /v2/test/img/manifests/v1"),
        "the rewritten name was not asked for: {requests:?}"
    );
    let inspect = ok(&om(cache.path(), &file, &["inspect", image]));
    assert!(
        inspect.contains(&format!(
            "Read from:   docker://{live}/test/img (registries.conf)\n"
        )),
        "{inspect}"
    );

    // A name that only starts with the longer prefix's text (teammate, not
    // team/) is not under it: the shorter prefix, dead, governs it.
    let err = failed(&om(
        cache.path(),
        &file,
        &[
            "cat",
            "docker://example.invalid/teammate/img:v1",
            "/etc/hello",
        ],
    ));
    assert!(
        err.contains(&format!("registry 127.0.0.1:{dead}/teammate/img: ")),
        "{err}"
    );

    // *.corp.invalid: a subdomain, at any depth, is rewritten to the live
    // registry.
    for image in [
        "docker://reg.corp.invalid/img:v1",
        "docker://a.b.corp.invalid/img:v1",
    ] {
        let fresh = tempfile::tempdir().unwrap();
        let out = om(fresh.path(), &file, &["cat", image, "/etc/hello"]);
        assert_eq!(ok(&out), HELLO, "{image}");
    }
    // …but dead.corp.invalid has a longer prefix of its own.
    let err = failed(&om(
        cache.path(),
        &file,
        &["cat", "docker://dead.corp.invalid/img:v1", "/etc/hello"],
    ));
    assert!(
        err.contains(&format!("registry 127.0.0.1:{dead}/gone/img: ")),
        "{err}"
    );

    // *.mirrored.invalid, no location: served by its mirror.
    let fresh = tempfile::tempdir().unwrap();
    let before = reg.access_requests().len();
    let out = om(
        fresh.path(),
        &file,
        &["cat", "docker://x.mirrored.invalid/img:v1", "/etc/hello"],
    );
    assert_eq!(ok(&out), HELLO);
    assert!(
        requests_since(reg, before)
            .iter()
            .any(|r| r.starts_with("GET /v2/test/img/blobs/sha256:")),
        "the mirror did not serve the layer"
    );

    // *.blocked.invalid: refused, naming the wildcard rule.
    let err = failed(&om(
        cache.path(),
        &file,
        &["cat", "docker://x.blocked.invalid/img:v1", "/etc/hello"],
    ));
    let line = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .position(|l| l == "prefix = \"*.blocked.invalid\"")
        .unwrap();
    assert!(
        err.contains(&format!(
            "registry x.blocked.invalid/img: blocked by the [[registry]] with prefix \
             \"*.blocked.invalid\" ({}:{line})",
            file.display()
        )),
        "{err}"
    );
}

/// A registry of its own holding the image of [`shared`] at `REPO:v1`, and
/// the image's manifest digest.
fn own_registry_with_image(repo: &str) -> (TestRegistry, String) {
    let dir = tempfile::tempdir().unwrap();
    let layout = hello_layout(dir.path());
    let digest = common::read_index(&layout)["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let reg = TestRegistry::new();
    reg.push(
        &format!("oci:{}:latest", layout.display()),
        &format!("{repo}:v1"),
    );
    (reg, digest)
}

#[test]
fn a_digest_only_mirror_is_not_used_for_a_tag() {
    let primary = shared();
    let live = primary.host_port();
    let (mirror, digest) = own_registry_with_image("mirrored/img");
    let mirror_at = mirror.host_port();
    let dead = dead_port();
    let rules = |primary_location: &str| {
        format!(
            r#"
[[registry]]
prefix = "example.invalid/app"
location = "{primary_location}"
insecure = true

[[registry.mirror]]
location = "{mirror_at}/mirrored"
insecure = true
pull-from-mirror = "digest-only"
"#
        )
    };
    let (_dir, file) = conf(&rules(&format!("{live}/test")));
    let by_tag = "docker://example.invalid/app/img:v1";
    let by_digest = format!("docker://example.invalid/app/img@{digest}");

    // By tag, primary live: the primary serves it, the mirror is not
    // asked anything at all.
    let cache = tempfile::tempdir().unwrap();
    let before_primary = primary.access_requests().len();
    let before_mirror = mirror.access_requests().len();
    let out = om(cache.path(), &file, &["cat", by_tag, "/etc/hello"]);
    assert_eq!(ok(&out), HELLO);
    let requests = requests_since(primary, before_primary);
    assert!(
        requests
            .iter()
            .any(|r| r == "GET /v2/test/img/manifests/v1"),
        "the primary was not asked for the tag: {requests:?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("GET /v2/test/img/blobs/sha256:")),
        "the primary did not serve the layer: {requests:?}"
    );
    assert_eq!(
        requests_since(&mirror, before_mirror),
        Vec::<String>::new(),
        "the digest-only mirror was asked for a tag"
    );

    // By tag, primary dead: it fails naming the primary alone, and the
    // mirror (which holds the image) is still not asked.
    let (_dir2, dead_primary) = conf(&rules(&format!("127.0.0.1:{dead}/test")));
    let fresh = tempfile::tempdir().unwrap();
    let err = failed(&om(
        fresh.path(),
        &dead_primary,
        &["cat", by_tag, "/etc/hello"],
    ));
    assert!(
        err.contains(&format!(
            "ocimount: error: registry 127.0.0.1:{dead}/test/img: "
        )),
        "{err}"
    );
    assert!(!err.contains(&mirror_at), "the mirror is named: {err}");
    assert_eq!(
        requests_since(&mirror, before_mirror),
        Vec::<String>::new(),
        "the digest-only mirror was asked for a tag"
    );

    // By digest, primary dead: the mirror serves the manifest and layer.
    let fresh = tempfile::tempdir().unwrap();
    let out = om(
        fresh.path(),
        &dead_primary,
        &["cat", &by_digest, "/etc/hello"],
    );
    assert_eq!(ok(&out), HELLO);
    let requests = requests_since(&mirror, before_mirror);
    assert!(
        requests
            .iter()
            .any(|r| *r == format!("GET /v2/mirrored/img/manifests/{digest}")),
        "the mirror was not asked for the digest: {requests:?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("GET /v2/mirrored/img/blobs/sha256:")),
        "the mirror did not serve the layer: {requests:?}"
    );
    assert!(
        requests.iter().all(|r| !r.contains("/manifests/v1")),
        "the mirror was asked for the tag: {requests:?}"
    );
}

#[test]
fn a_drop_in_overrides_the_main_file() {
    let reg = shared();
    let live = reg.host_port();
    let dead = dead_port();
    // The main file blocks example.invalid/team and sends
    // example.invalid/misrouted to a dead port.
    let (dir, main) = conf(&format!(
        "[[registry]]\nprefix = \"example.invalid/team\"\nlocation = \"example.invalid/team\"\n\
         blocked = true\n\n\
         [[registry]]\nprefix = \"example.invalid/misrouted\"\n\
         location = \"127.0.0.1:{dead}/test\"\ninsecure = true\n"
    ));
    let blocked = "docker://example.invalid/team/img:v1";
    let misrouted = "docker://example.invalid/misrouted/img:v1";
    let cache = tempfile::tempdir().unwrap();

    // The main file alone: blocked, and dead.
    let err = failed(&om(cache.path(), &main, &["cat", blocked, "/etc/hello"]));
    assert!(
        err.contains(&format!(
            "registry example.invalid/team/img: blocked by the [[registry]] with prefix \
             \"example.invalid/team\" ({}:1)",
            main.display()
        )),
        "{err}"
    );
    let err = failed(&om(cache.path(), &main, &["cat", misrouted, "/etc/hello"]));
    assert!(
        err.contains(&format!("registry 127.0.0.1:{dead}/test/img: ")),
        "{err}"
    );

    // registries.conf.d beside the main file: 10-wrong.conf routes both
    // prefixes to a dead port, 20-right.conf (read later, so it wins) to
    // the live registry; a file not ending in .conf is not read.
    let drop_ins = dir.path().join("registries.conf.d");
    std::fs::create_dir(&drop_ins).unwrap();
    let rule = |prefix: &str, location: &str| {
        format!(
            "[[registry]]\nprefix = \"{prefix}\"\nlocation = \"{location}\"\ninsecure = true\n\n"
        )
    };
    std::fs::write(
        drop_ins.join("10-wrong.conf"),
        rule("example.invalid/team", &format!("127.0.0.1:{dead}/x"))
            + &rule("example.invalid/misrouted", &format!("127.0.0.1:{dead}/x")),
    )
    .unwrap();
    std::fs::write(
        drop_ins.join("20-right.conf"),
        rule("example.invalid/team", &format!("{live}/test"))
            + &rule("example.invalid/misrouted", &format!("{live}/test")),
    )
    .unwrap();
    std::fs::write(
        drop_ins.join("30-ignored.conf.disabled"),
        "[[registry]]\nprefix = \"example.invalid/team\"\nlocation = \"x.invalid\"\nblocked = true\n",
    )
    .unwrap();
    for image in [blocked, misrouted] {
        let fresh = tempfile::tempdir().unwrap();
        let before = reg.access_requests().len();
        let out = om(fresh.path(), &main, &["cat", image, "/etc/hello"]);
        assert_eq!(ok(&out), HELLO, "{image}");
        assert!(
            requests_since(reg, before)
                .iter()
                .any(|r| r == "GET /v2/test/img/manifests/v1"),
            "{image}: the live registry was not asked"
        );
    }

    // The same through --registries-conf (what a mount's daemon gets):
    // the drop-ins beside that file are read too.
    let flag = format!("--registries-conf={}", main.display());
    let mut cmd = Command::new(BIN);
    let fresh = tempfile::tempdir().unwrap();
    cmd.arg("--cache")
        .arg(fresh.path())
        .args([flag.as_str(), "cat", blocked, "/etc/hello"])
        .env_remove("CONTAINERS_REGISTRIES_CONF")
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("OCIMOUNT_REGISTRY_CREDS")
        .env_remove("OCIMOUNT_TLS_VERIFY");
    let out = run_bounded(&mut cmd, Duration::from_secs(120));
    assert_eq!(ok(&out), HELLO);

    // A later drop-in that blocks again wins over 20-right.conf.
    std::fs::write(
        drop_ins.join("90-block.conf"),
        "[[registry]]\nprefix = \"example.invalid/team\"\nlocation = \"example.invalid/team\"\n\
         blocked = true\n",
    )
    .unwrap();
    let err = failed(&om(cache.path(), &main, &["cat", blocked, "/etc/hello"]));
    assert!(
        err.contains(&format!(
            "blocked by the [[registry]] with prefix \"example.invalid/team\" ({}:1)",
            drop_ins.join("90-block.conf").display()
        )),
        "{err}"
    );
}
