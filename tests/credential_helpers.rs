//! Registry credentials from Docker credential helpers and identity tokens,
//! against the real loopback registry of tests/support/registry.rs
//! (docker-registry 2.8 with htpasswd, or with bearer tokens from
//! tests/support/token_server.py). Nothing leaves 127.0.0.1.
//!
//! Every ocimount run gets an environment of its own: HOME, the XDG
//! directories and DOCKER_CONFIG in a temporary directory, and a `bin/`
//! of `docker-credential-*` scripts first on PATH.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::registry::{base64, sha256_digest, TestRegistry};
use support::{is_mountpoint, ok, process_alive, run_bounded, wait_until, BIN};

const REPO: &str = "team/hello";
const TAG: &str = "v1";
const FILE: &str = "hello.txt";
const FILE_CONTENT: &[u8] = b"hello through a credential helper\n";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// What the helper scripts hand out; never printed by ocimount.
const HELPER_SECRET: &str = "s3cret-from-the-helper";
/// The identity token the token server takes for its user.
const REFRESH_TOKEN: &str = "refresh+token/for=bob";

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "x86" => "386",
        other => other,
    }
}

/// Pushes `hello.txt` as a one-layer image (an uncompressed layer) to
/// `REPO:TAG` with the registry's own credentials; the image reference.
fn push_hello(reg: &TestRegistry) -> String {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_path(FILE).unwrap();
    header.set_size(FILE_CONTENT.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(1_700_000_000);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    builder.append(&header, FILE_CONTENT).unwrap();
    let layer = builder.into_inner().unwrap();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": host_arch(),
        "os": "linux",
        "config": {},
        "rootfs": { "type": "layers", "diff_ids": [sha256_digest(&layer)] },
    }))
    .unwrap();
    let layer_digest = reg.upload_blob(REPO, &layer);
    let config_digest = reg.upload_blob(REPO, &config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len() },
        "layers": [{ "mediaType": OCI_LAYER_TAR, "digest": layer_digest, "size": layer.len() }],
    }))
    .unwrap();
    let put = reg.put_manifest(REPO, TAG, OCI_MANIFEST, &manifest);
    assert_eq!(put.status, 201, "{}", put.text());
    format!("docker://{}/{REPO}:{TAG}", reg.host_port())
}

/// A home of its own for ocimount: no credentials but those a test writes.
struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new() -> Home {
        let home = Home {
            dir: tempfile::Builder::new()
                .prefix("ocimount-cred-")
                .tempdir()
                .unwrap(),
        };
        for sub in ["bin", "home", "run", "config", "docker", "cache"] {
            fs::create_dir_all(home.path(sub)).unwrap();
        }
        home
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    /// `bin/docker-credential-NAME`: a /bin/sh script that appends its
    /// argument and stdin to `calls-NAME`, then runs `body`.
    fn helper(&self, name: &str, body: &str) {
        let path = self.path(&format!("bin/docker-credential-{name}"));
        let log = self.path(&format!("calls-{name}"));
        fs::write(
            &path,
            format!(
                "#!/bin/sh\nserver=$(cat)\necho \"$*|$server\" >> '{}'\n{body}\n",
                log.display()
            ),
        )
        .unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// The calls helper NAME had, as `ARGS|SERVER` lines.
    fn calls(&self, name: &str) -> Vec<String> {
        fs::read_to_string(self.path(&format!("calls-{name}")))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// `$DOCKER_CONFIG/config.json`.
    fn docker_config(&self, json: serde_json::Value) -> PathBuf {
        let path = self.path("docker/config.json");
        fs::write(&path, json.to_string()).unwrap();
        path
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut search_path = self.path("bin").into_os_string();
        search_path.push(":");
        search_path.push(std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()));
        let mut cmd = Command::new(BIN);
        cmd.arg("--cache")
            .arg(self.path("cache"))
            .args(["--tls-verify=false", "--registry-timeout", "20"])
            .args(args)
            .env("HOME", self.path("home"))
            .env("XDG_RUNTIME_DIR", self.path("run"))
            .env("XDG_CONFIG_HOME", self.path("config"))
            .env("DOCKER_CONFIG", self.path("docker"))
            .env("PATH", search_path)
            // Everything, ureq's wire included, must keep secrets out.
            .env("RUST_LOG", "trace")
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("OCIMOUNT_REGISTRY_CREDS");
        cmd
    }

    fn ocimount(&self, args: &[&str]) -> Output {
        let out = run_bounded(&mut self.command(args), Duration::from_secs(120));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "ocimount panicked: {stderr}");
        out
    }

    /// `ocimount cat IMAGE /hello.txt`, which must succeed.
    fn cat_hello(&self, image: &str, extra: &[&str]) -> Vec<u8> {
        let mut args = extra.to_vec();
        args.extend(["cat", image, "/hello.txt"]);
        let out = self.ocimount(&args);
        ok(&out);
        assert_no_secret(&out);
        out.stdout
    }

    /// `ocimount cat IMAGE /hello.txt`, which must fail: its stderr.
    fn cat_fails(&self, image: &str, extra: &[&str]) -> String {
        let mut args = extra.to_vec();
        args.extend(["cat", image, "/hello.txt"]);
        let out = self.ocimount(&args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "expected a failure: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_no_secret(&out);
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

/// The secrets, as they are and as a Basic header would carry them.
fn secrets() -> Vec<String> {
    let mut secrets = vec![HELPER_SECRET.to_string(), REFRESH_TOKEN.to_string()];
    for user in ["alice", "bob", ""] {
        for secret in [HELPER_SECRET, REFRESH_TOKEN] {
            secrets.push(base64(format!("{user}:{secret}").as_bytes()));
        }
    }
    // As a form body carries the refresh token.
    secrets.push("refresh%2Btoken%2Ffor%3Dbob".to_string());
    secrets
}

/// No secret in `text`, and no wire dump of ureq (TRACE, unredacted, in
/// 16-byte rows that a search for the secrets would not find).
fn assert_no_secret_in(text: &str, what: &str) {
    for secret in secrets() {
        assert!(
            !text.contains(&secret),
            "a secret ({secret}) is in {what}:\n{text}"
        );
    }
    if let Some(line) = text
        .lines()
        .find(|l| l.contains("TRACE") && l.contains("ureq"))
    {
        panic!("ureq's wire is in {what}: {line}");
    }
}

/// No secret in what ocimount printed, its trace log included.
fn assert_no_secret(out: &Output) {
    assert_no_secret_in(&String::from_utf8_lossy(&out.stdout), "stdout");
    assert_no_secret_in(&String::from_utf8_lossy(&out.stderr), "stderr");
}

/// A helper's JSON reply, as a shell command.
fn reply(username: &str, secret: &str) -> String {
    format!(
        "printf '%s' '{}'",
        serde_json::json!({ "ServerURL": "x", "Username": username, "Secret": secret })
    )
}

/// Unmounts a directory mounted by `ocimount mount` on drop.
struct Unmount<'a> {
    home: &'a Home,
    dir: PathBuf,
}

impl Drop for Unmount<'_> {
    fn drop(&mut self) {
        if is_mountpoint(&self.dir) {
            let dir = self.dir.to_str().unwrap().to_string();
            let _ = self.home.ocimount(&["umount", "--lazy", &dir]);
        }
    }
}

fn daemon_pid(home: &Home, dir: &Path) -> u32 {
    let listing = ok(&home.ocimount(&["mounts"]));
    let dir = dir.canonicalize().unwrap();
    listing
        .lines()
        .find(|l| l.starts_with(&format!("{}\t", dir.display())))
        .and_then(|l| l.split('\t').nth(2))
        .and_then(|p| p.trim_start_matches("pid ").parse().ok())
        .unwrap_or_else(|| panic!("no daemon for {} in:\n{listing}", dir.display()))
}

/// A registry that wants Basic auth as alice with the helpers' secret,
/// holding the hello image: the registry, the image, its host:port.
fn hello_behind_basic_auth() -> (TestRegistry, String, String) {
    let reg = TestRegistry::builder()
        .basic_auth("alice", HELPER_SECRET)
        .start();
    let image = push_hello(&reg);
    let server = reg.host_port();
    (reg, image, server)
}

#[test]
fn a_credential_helper_supplies_basic_credentials() {
    let (_registry, image, server) = hello_behind_basic_auth();

    // credHelpers for the registry, in $DOCKER_CONFIG/config.json.
    let home = Home::new();
    home.helper("loopback", &reply("alice", HELPER_SECRET));
    home.docker_config(serde_json::json!({ "credHelpers": { server.as_str(): "loopback" } }));
    assert_eq!(home.cat_hello(&image, &[]), FILE_CONTENT);
    assert_eq!(home.calls("loopback"), [format!("get|{server}")]);

    // credsStore, with Docker's placeholder entry in auths.
    let home = Home::new();
    home.helper("store", &reply("alice", HELPER_SECRET));
    home.docker_config(serde_json::json!({
        "auths": { server.as_str(): {} },
        "credsStore": "store",
    }));
    assert_eq!(home.cat_hello(&image, &[]), FILE_CONTENT);
    assert_eq!(home.calls("store"), [format!("get|{server}")]);

    // A helper with nothing for the registry: asked anonymously, refused.
    let home = Home::new();
    home.helper(
        "empty",
        "echo 'credentials not found in native keychain'; exit 1",
    );
    home.docker_config(serde_json::json!({ "credsStore": "empty" }));
    let err = home.cat_fails(&image, &[]);
    assert!(err.contains("asks for a user name and password"), "{err}");
    assert_eq!(home.calls("empty").len(), 1);

    // A failing helper, or one that is not there: an error naming it.
    let home = Home::new();
    home.helper("broken", &format!("echo '{HELPER_SECRET}'; exit 4"));
    home.docker_config(serde_json::json!({ "credHelpers": { server.as_str(): "broken" } }));
    let err = home.cat_fails(&image, &[]);
    assert!(err.contains("docker-credential-broken"), "{err}");
    assert!(err.contains("exit status 4"), "{err}");
    home.docker_config(serde_json::json!({ "credHelpers": { server.as_str(): "absent" } }));
    let err = home.cat_fails(&image, &[]);
    assert!(
        err.contains("docker-credential-absent is not on $PATH"),
        "{err}"
    );

    // --creds wins over the helper, which is not run.
    let home = Home::new();
    home.helper("loopback", "exit 1");
    home.docker_config(serde_json::json!({ "credHelpers": { server.as_str(): "loopback" } }));
    let creds = format!("alice:{HELPER_SECRET}");
    assert_eq!(home.cat_hello(&image, &["--creds", &creds]), FILE_CONTENT);
    assert!(home.calls("loopback").is_empty());
}

#[test]
fn a_mount_daemon_runs_the_helper_of_its_authfile() {
    let (_registry, image, server) = hello_behind_basic_auth();
    let home = Home::new();
    home.helper("loopback", &reply("alice", HELPER_SECRET));
    // Only in --authfile: the default files say nothing.
    let authfile = home.path("elsewhere/auth file.json");
    fs::create_dir_all(authfile.parent().unwrap()).unwrap();
    fs::write(
        &authfile,
        serde_json::json!({ "credHelpers": { server.as_str(): "loopback" } }).to_string(),
    )
    .unwrap();
    let authfile_arg = authfile.to_str().unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let mnt_arg = mnt.path().to_str().unwrap();
    let mounted = home.ocimount(&["--authfile", authfile_arg, "mount", &image, mnt_arg]);
    let _unmount = Unmount {
        home: &home,
        dir: mnt.path().to_path_buf(),
    };
    ok(&mounted);
    assert_no_secret(&mounted);
    assert_eq!(fs::read(mnt.path().join(FILE)).unwrap(), FILE_CONTENT);
    // The daemon found the helper through --authfile on its command line,
    // and ran it itself: the secret is on no command line, in no
    // environment.
    let pid = daemon_pid(&home, mnt.path());
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline);
    assert!(cmdline.contains("--authfile="), "{cmdline}");
    assert!(!cmdline.contains(HELPER_SECRET), "{cmdline}");
    let environ = fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(!String::from_utf8_lossy(&environ).contains(HELPER_SECRET));
    assert!(
        home.calls("loopback").len() >= 2,
        "{:?}",
        home.calls("loopback")
    );
    let logs = walk_text(&home.path("cache"));
    assert!(logs.contains("credential helper"), "no trace log:\n{logs}");
    assert_no_secret_in(&logs, "the daemon's log");

    // Without --authfile the same home has no credentials.
    let err = home.cat_fails(&image, &[]);
    assert!(err.contains("asks for a user name and password"), "{err}");
    // An --authfile that is not there is an error, not anonymous access.
    let missing = home.path("no-such-auth.json");
    let err = home.cat_fails(&image, &["--authfile", missing.to_str().unwrap()]);
    assert!(
        err.contains(&format!("--authfile {}", missing.display())),
        "{err}"
    );
}

/// Every small text file under `dir`, concatenated (the cache's logs).
fn walk_text(dir: &Path) -> String {
    let mut text = String::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return text;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            text += &walk_text(&path);
        } else if path.extension().is_some_and(|e| e == "log") {
            text += &String::from_utf8_lossy(&fs::read(&path).unwrap_or_default());
        }
    }
    text
}

/// The token server's log lines for POSTs and GETs.
fn token_lines(reg: &TestRegistry) -> Vec<String> {
    reg.token_log()
        .lines()
        .filter(|l| l.starts_with("token "))
        .map(str::to_string)
        .collect()
}

#[test]
fn an_identity_token_is_exchanged_by_oauth2_post() {
    let reg = TestRegistry::builder()
        .token_auth("bob", "pw")
        .anonymous_pull(false)
        .refresh_token(REFRESH_TOKEN)
        .start();
    let image = push_hello(&reg);
    let server = reg.host_port();
    let before = token_lines(&reg).len();

    // identitytoken in the file --authfile names.
    let home = Home::new();
    let authfile = home.path("auth.json");
    fs::write(
        &authfile,
        serde_json::json!({ "auths": { server.as_str(): {
            "auth": base64(b"bob:"),
            "identitytoken": REFRESH_TOKEN,
        }}})
        .to_string(),
    )
    .unwrap();
    let authfile_arg = authfile.to_str().unwrap();
    assert_eq!(
        home.cat_hello(&image, &["--authfile", authfile_arg]),
        FILE_CONTENT
    );
    let lines = token_lines(&reg)[before..].to_vec();
    assert!(!lines.is_empty());
    for line in &lines {
        // Every token came from the refresh-token grant; no GET, and the
        // token server's user was never asked for a password.
        assert!(
            line.starts_with("token POST /token user=bob status=200 ")
                && line.ends_with(" grant=refresh_token client_id=ocimount"),
            "{lines:#?}"
        );
    }

    // A helper's `<token>` reply is an identity token too.
    let before = token_lines(&reg).len();
    let home = Home::new();
    home.helper("tokens", &reply("<token>", REFRESH_TOKEN));
    home.docker_config(serde_json::json!({ "credHelpers": { server.as_str(): "tokens" } }));
    assert_eq!(home.cat_hello(&image, &[]), FILE_CONTENT);
    let lines = token_lines(&reg)[before..].to_vec();
    assert!(
        !lines.is_empty()
            && lines
                .iter()
                .all(|l| l.contains("POST /token user=bob status=200")),
        "{lines:#?}"
    );

    // A token the server does not know: refused, and said so.
    let home = Home::new();
    home.helper("stale", &reply("<token>", "not-the-token"));
    home.docker_config(serde_json::json!({ "credHelpers": { server.as_str(): "stale" } }));
    let err = home.cat_fails(&image, &[]);
    assert!(err.contains("identity token was refused"), "{err}");
    assert!(err.contains("invalid_grant"), "{err}");
    assert!(!err.contains("not-the-token"), "{err}");
}

#[test]
fn without_the_oauth2_post_an_identity_token_goes_by_get() {
    let reg = TestRegistry::builder()
        .token_auth("bob", "pw")
        .anonymous_pull(false)
        .refresh_token(REFRESH_TOKEN)
        .oauth_post(false)
        .start();
    let image = push_hello(&reg);
    let server = reg.host_port();
    let before = token_lines(&reg).len();

    // identitytoken in $XDG_RUNTIME_DIR/containers/auth.json.
    let home = Home::new();
    fs::create_dir_all(home.path("run/containers")).unwrap();
    fs::write(
        home.path("run/containers/auth.json"),
        serde_json::json!({ "auths": { server.as_str(): {
            "auth": base64(b"bob:"),
            "identitytoken": REFRESH_TOKEN,
        }}})
        .to_string(),
    )
    .unwrap();
    assert_eq!(home.cat_hello(&image, &[]), FILE_CONTENT);
    let lines = token_lines(&reg)[before..].to_vec();
    // Each token: a POST refused with 404, then a GET with Basic
    // bob:REFRESH_TOKEN that the server takes as bob's.
    let posts: Vec<&String> = lines.iter().filter(|l| l.contains(" POST ")).collect();
    let gets: Vec<&String> = lines.iter().filter(|l| l.contains(" GET ")).collect();
    assert!(!posts.is_empty(), "{lines:#?}");
    assert!(
        posts
            .iter()
            .all(|l| l.contains("status=404")
                && l.ends_with("grant=refresh_token client_id=ocimount")),
        "{lines:#?}"
    );
    assert_eq!(posts.len(), gets.len(), "{lines:#?}");
    assert!(
        gets.iter().all(|l| l.contains("user=bob status=200")),
        "{lines:#?}"
    );
}

/// `ocimount cat IMAGE /hello.txt` that must fail within `limit`: its
/// stderr (no secret in it, nor in stdout) and how long it took.
fn cat_fails_within(
    home: &Home,
    image: &str,
    extra: &[&str],
    limit: Duration,
) -> (String, Duration) {
    let mut args = extra.to_vec();
    args.extend(["cat", image, "/hello.txt"]);
    let started = Instant::now();
    let out = run_bounded(&mut home.command(&args), limit);
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "ocimount panicked: {stderr}");
    assert_eq!(out.status.code(), Some(1), "expected a failure: {stderr}");
    assert_no_secret(&out);
    (stderr, took)
}

/// The pid a helper wrote to `file`, which must be gone (or a zombie
/// about to be reaped by init) within a few seconds.
fn assert_process_gone(file: &Path, what: &str) {
    let pid: u32 = fs::read_to_string(file)
        .unwrap_or_else(|e| panic!("{what}: no pid in {}: {e}", file.display()))
        .trim()
        .parse()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || !process_alive(pid)),
        "{what} (pid {pid}) is still running"
    );
}

/// The line of stderr that is ocimount's error.
fn error_line(stderr: &str) -> &str {
    stderr
        .lines()
        .find(|l| l.starts_with("ocimount: error: "))
        .unwrap_or_else(|| panic!("no error line in:\n{stderr}"))
}

#[test]
fn a_slow_credential_helper_times_out_and_is_killed() {
    let (_registry, image, server) = hello_behind_basic_auth();
    let home = Home::new();
    let pid_file = home.path("helper.pid");
    let child_file = home.path("helper-child.pid");
    // Its reply written, it never exits: it waits on a child of its own,
    // which holds its stdout too.
    home.helper(
        "slow",
        &format!(
            "echo $$ > '{}'\n{}\nsleep 300 &\necho $! > '{}'\nwait",
            pid_file.display(),
            reply("alice", HELPER_SECRET),
            child_file.display()
        ),
    );
    let config =
        home.docker_config(serde_json::json!({ "credHelpers": { server.as_str(): "slow" } }));
    // No knob shortens the helper timeout (30 s): the real one is waited
    // for, with room for a loaded machine.
    let (stderr, took) = cat_fails_within(&home, &image, &[], Duration::from_secs(90));
    assert_eq!(
        error_line(&stderr),
        format!(
            "ocimount: error: registry {server}/{REPO}: credentials file {}: credential helper docker-credential-slow \
             did not answer within 30 s and was killed",
            config.display()
        ),
        "{stderr}"
    );
    assert!(
        took >= Duration::from_secs(30) && took < Duration::from_secs(75),
        "took {took:?}"
    );
    assert_eq!(home.calls("slow"), [format!("get|{server}")]);
    assert_process_gone(&pid_file, "the helper");
    assert_process_gone(&child_file, "the helper's child");
}

#[test]
fn a_credential_helper_with_huge_output_is_cut_off() {
    let (_registry, image, server) = hello_behind_basic_auth();
    const TEN_MIB: usize = 10 << 20;
    // 10 MiB of the secret: on stdout inside a reply, or on stderr before
    // a good reply.
    for (name, body) in [
        (
            "huge",
            format!(
                "printf '{{\"ServerURL\":\"x\",\"Username\":\"alice\",\"Secret\":\"'\n\
                 yes '{HELPER_SECRET}' | head -c {TEN_MIB}\nprintf '\"}}'"
            ),
        ),
        (
            "noisy",
            format!(
                "yes '{HELPER_SECRET}' | head -c {TEN_MIB} >&2\n{}",
                reply("alice", HELPER_SECRET)
            ),
        ),
    ] {
        let home = Home::new();
        let pid_file = home.path("helper.pid");
        home.helper(name, &format!("echo $$ > '{}'\n{body}", pid_file.display()));
        let config =
            home.docker_config(serde_json::json!({ "credHelpers": { server.as_str(): name } }));
        let (stderr, took) = cat_fails_within(&home, &image, &[], Duration::from_secs(90));
        assert_eq!(
            error_line(&stderr),
            format!(
                "ocimount: error: registry {server}/{REPO}: credentials file {}: credential helper docker-credential-{name} \
                 wrote more than 1048576 bytes and was killed",
                config.display()
            ),
            "{stderr}"
        );
        // Cut off at the bound, not at the timeout.
        assert!(took < Duration::from_secs(25), "{name} took {took:?}");
        assert_eq!(home.calls(name), [format!("get|{server}")]);
        assert_process_gone(&pid_file, name);
    }
}

#[test]
fn creds_store_in_an_authfile_is_used() {
    let (_registry, image, server) = hello_behind_basic_auth();
    let home = Home::new();
    home.helper("store", &reply("alice", HELPER_SECRET));
    // The default files name another helper: --authfile replaces them, so
    // it must not run.
    home.helper("decoy", "exit 3");
    home.docker_config(serde_json::json!({
        "credHelpers": { server.as_str(): "decoy" },
        "credsStore": "decoy",
    }));
    fs::create_dir_all(home.path("config/containers")).unwrap();
    fs::write(
        home.path("config/containers/auth.json"),
        serde_json::json!({ "credsStore": "decoy" }).to_string(),
    )
    .unwrap();
    let authfile = home.path("elsewhere/auth.json");
    fs::create_dir_all(authfile.parent().unwrap()).unwrap();
    let authfile_arg = authfile.to_str().unwrap();

    // credsStore alone, then with Docker's placeholder entry in auths.
    for auth in [
        serde_json::json!({ "credsStore": "store" }),
        serde_json::json!({ "auths": { server.as_str(): {} }, "credsStore": "store" }),
    ] {
        fs::write(&authfile, auth.to_string()).unwrap();
        let before = home.calls("store").len();
        assert_eq!(
            home.cat_hello(&image, &["--authfile", authfile_arg]),
            FILE_CONTENT,
            "{auth}"
        );
        assert_eq!(home.calls("store")[before..], [format!("get|{server}")]);
    }
    // $REGISTRY_AUTH_FILE names such a file as well.
    let before = home.calls("store").len();
    let out = run_bounded(
        home.command(&["cat", &image, "/hello.txt"])
            .env("REGISTRY_AUTH_FILE", &authfile),
        Duration::from_secs(120),
    );
    assert_eq!(ok(&out).as_bytes(), FILE_CONTENT);
    assert_no_secret(&out);
    assert_eq!(home.calls("store")[before..], [format!("get|{server}")]);
    assert!(home.calls("decoy").is_empty(), "{:?}", home.calls("decoy"));

    // The file's own entry for the registry comes before its credsStore,
    // which is then not run (it would fail).
    fs::write(
        &authfile,
        serde_json::json!({
            "auths": { server.as_str(): { "auth": base64(format!("alice:{HELPER_SECRET}").as_bytes()) } },
            "credsStore": "decoy",
        })
        .to_string(),
    )
    .unwrap();
    assert_eq!(
        home.cat_hello(&image, &["--authfile", authfile_arg]),
        FILE_CONTENT
    );
    assert!(home.calls("decoy").is_empty(), "{:?}", home.calls("decoy"));

    // A credsStore that fails is an error naming it and the --authfile.
    fs::write(
        &authfile,
        serde_json::json!({ "credsStore": "decoy" }).to_string(),
    )
    .unwrap();
    let err = home.cat_fails(&image, &["--authfile", authfile_arg]);
    assert_eq!(
        error_line(&err),
        format!(
            "ocimount: error: registry {server}/{REPO}: credentials file {}: credential helper docker-credential-decoy \
             failed (exit status 3); run `docker-credential-decoy get` to see why",
            authfile.display()
        ),
        "{err}"
    );
    assert_eq!(home.calls("decoy"), [format!("get|{server}")]);
}
