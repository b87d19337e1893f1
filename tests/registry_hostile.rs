//! `docker://` images from a registry that misbehaves: a scripted fake
//! registry (std only, one thread per connection, `Connection: close`)
//! serves a tiny valid image and, per case, a hostile or broken answer.
//! Every case asserts that ocimount fails with a clear message, a non-zero
//! exit and no panic, in bounded time (and bounded memory where a body is
//! endless); or, for the transient failures, that it retries and succeeds.
//!
//! The fake registry speaks plain HTTP only; ocimount (`--tls-verify=false`)
//! first tries HTTPS, which the server answers by closing the connection.
//! The last tests mount an image (root and /dev/fuse, as tests/mount.rs).
//!
//! A test marked `#[ignore = "BUG: …"]` asserts what ocimount should do and
//! does not yet; `cargo test --test registry_hostile -- --ignored` runs them.
//! HOSTILE_RUST_LOG=debug passes RUST_LOG to ocimount (with --nocapture).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use flate2::write::GzEncoder;
use flate2::Compression;
use sha2::{Digest as _, Sha256};

const BIN: &str = env!("CARGO_BIN_EXE_ocimount");
const REPO: &str = "hostile/img";
const TAG: &str = "latest";
const FILE: &str = "hello.txt";
const FILE_CONTENT: &[u8] = b"hello from the fake registry\n";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// src/limits.rs MAX_JSON_BYTES.
const MAX_JSON_BYTES: u64 = 8 << 20;
/// How long any one server socket waits on a read or a write.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a streaming handler (endless body, drip) may go on at most.
const HANDLER_LIMIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// The image

fn sha256(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// A tar holding `files` (regular files, mode 0644).
fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, content) in files {
        let mut header = tar::Header::new_ustar();
        header.set_path(name).unwrap();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(1_700_000_000);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        builder.append(&header, *content).unwrap();
    }
    builder.into_inner().unwrap()
}

fn gzip(bytes: &[u8], level: Compression) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), level);
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "x86" => "386",
        other => other,
    }
}

/// A one-layer OCI image, as the registry holds it.
#[derive(Clone)]
struct Image {
    layer: Vec<u8>,
    layer_digest: String,
    config: Vec<u8>,
    config_digest: String,
    manifest: Vec<u8>,
    manifest_digest: String,
}

impl Image {
    /// `hello.txt` in one gzip layer.
    fn standard() -> Image {
        Image::with_layer(
            gzip(&tar_of(&[(FILE, FILE_CONTENT)]), Compression::default()),
            None,
        )
    }

    /// An image of gzip layer `layer`, with `config` (or a valid config
    /// whose diff_id is the layer's uncompressed digest).
    fn with_layer(layer: Vec<u8>, config: Option<Vec<u8>>) -> Image {
        let config = config.unwrap_or_else(|| {
            let mut tar = Vec::new();
            flate2::read::GzDecoder::new(&layer[..])
                .read_to_end(&mut tar)
                .unwrap();
            serde_json::to_vec(&serde_json::json!({
                "architecture": host_arch(),
                "os": "linux",
                "config": {},
                "rootfs": { "type": "layers", "diff_ids": [sha256(&tar)] },
            }))
            .unwrap()
        });
        let layer_digest = sha256(&layer);
        let config_digest = sha256(&config);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": OCI_CONFIG,
                "digest": config_digest,
                "size": config.len(),
            },
            "layers": [{
                "mediaType": OCI_LAYER_GZIP,
                "digest": layer_digest,
                "size": layer.len(),
            }],
        }))
        .unwrap();
        Image {
            manifest_digest: sha256(&manifest),
            layer_digest,
            config_digest,
            layer,
            config,
            manifest,
        }
    }

    fn blob(&self, digest: &str) -> Option<&[u8]> {
        if digest == self.layer_digest {
            Some(&self.layer)
        } else if digest == self.config_digest {
            Some(&self.config)
        } else {
            None
        }
    }
}

// ---------------------------------------------------------------------------
// The fake registry

/// One request as the server read it (header names lowercased).
#[derive(Clone, Debug)]
struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    /// When it was read.
    at: Instant,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// `Range: bytes=A-B` as (A, Some(B)) or `bytes=A-` as (A, None).
    fn range(&self) -> Option<(u64, Option<u64>)> {
        let spec = self.header("range")?.trim().strip_prefix("bytes=")?;
        let (a, b) = spec.split_once('-')?;
        let a = a.trim().parse().ok()?;
        let b = b.trim();
        Some((a, if b.is_empty() { None } else { b.parse().ok() }))
    }

    /// The reference of a `/v2/REPO/manifests/REF` request.
    fn manifest_ref(&self) -> Option<&str> {
        self.path
            .strip_prefix(&format!("/v2/{REPO}/manifests/"))
            .map(|r| r.split('?').next().unwrap_or(r))
    }

    /// The digest of a `/v2/REPO/blobs/DIGEST` request.
    fn blob_digest(&self) -> Option<&str> {
        self.path
            .strip_prefix(&format!("/v2/{REPO}/blobs/"))
            .map(|r| r.split('?').next().unwrap_or(r))
    }

    fn is_get(&self) -> bool {
        self.method == "GET"
    }
}

/// One connection, as a handler sees it.
struct Conn {
    stream: TcpStream,
    image: Arc<Image>,
    stop: Arc<AtomicBool>,
    started: Instant,
    /// `http://127.0.0.1:PORT`, the server's own address.
    base: String,
    log: Arc<Mutex<Vec<Request>>>,
}

impl Conn {
    /// How many requests so far (this one included) match `pred`.
    fn seen(&self, pred: impl Fn(&Request) -> bool) -> usize {
        self.log.lock().unwrap().iter().filter(|r| pred(r)).count()
    }

    /// Whether a streaming handler should give up: the server was dropped
    /// (the test is over) or it has gone on too long.
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.started.elapsed() > HANDLER_LIMIT
    }

    /// The status line and `headers` as given (plus `Connection: close`);
    /// the body, if any, is the caller's to write.
    fn head(&mut self, status: u16, headers: &[(&str, String)]) -> bool {
        let mut text = format!("HTTP/1.1 {status} {}\r\n", reason(status));
        for (name, value) in headers {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        text.push_str("Connection: close\r\n\r\n");
        self.write(text.as_bytes())
    }

    /// A whole response: `headers` plus a Content-Length of `body` (unless
    /// `headers` has one), and `body` (not for HEAD).
    fn respond(&mut self, req: &Request, status: u16, headers: &[(&str, String)], body: &[u8]) {
        let mut all: Vec<(&str, String)> = headers.to_vec();
        if !headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        {
            all.push(("Content-Length", body.len().to_string()));
        }
        if self.head(status, &all) && req.method != "HEAD" {
            self.write(body);
        }
    }

    fn write(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok() && self.stream.flush().is_ok()
    }

    /// A distribution error body.
    fn error(&mut self, req: &Request, status: u16, code: &str) {
        let body = format!(r#"{{"errors":[{{"code":"{code}","message":"{code} (fake)"}}]}}"#);
        self.respond(
            req,
            status,
            &[("Content-Type", "application/json".to_string())],
            body.as_bytes(),
        );
    }

    /// What a well-behaved registry answers.
    fn normal(&mut self, req: &Request) {
        let image = self.image.clone();
        if req.path == "/v2/" || req.path == "/v2" {
            return self.respond(
                req,
                200,
                &[("Content-Type", "application/json".to_string())],
                b"{}",
            );
        }
        if let Some(reference) = req.manifest_ref() {
            if reference == TAG || reference == image.manifest_digest {
                return self.respond(
                    req,
                    200,
                    &[
                        ("Content-Type", OCI_MANIFEST.to_string()),
                        ("Docker-Content-Digest", image.manifest_digest.clone()),
                    ],
                    &image.manifest,
                );
            }
            return self.error(req, 404, "MANIFEST_UNKNOWN");
        }
        if let Some(digest) = req.blob_digest() {
            let Some(blob) = image.blob(digest) else {
                return self.error(req, 404, "BLOB_UNKNOWN");
            };
            let total = blob.len() as u64;
            match req.range() {
                Some((start, end)) if req.is_get() => {
                    if start >= total {
                        return self.respond(
                            req,
                            416,
                            &[("Content-Range", format!("bytes */{total}"))],
                            b"",
                        );
                    }
                    let end = end.unwrap_or(total - 1).min(total - 1);
                    self.respond(
                        req,
                        206,
                        &[
                            ("Content-Type", "application/octet-stream".to_string()),
                            ("Content-Range", format!("bytes {start}-{end}/{total}")),
                        ],
                        &blob[start as usize..=end as usize],
                    )
                }
                _ => self.respond(
                    req,
                    200,
                    &[
                        ("Content-Type", "application/octet-stream".to_string()),
                        ("Docker-Content-Digest", digest.to_string()),
                    ],
                    blob,
                ),
            }
        } else {
            // The referrers API (which registry 2.8 lacks) and anything else.
            self.error(req, 404, "NAME_UNKNOWN")
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        401 => "Unauthorized",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Whatever",
    }
}

/// A handler answers a request itself (returning true) or leaves it to
/// [`Conn::normal`] (returning false).
type Handler = dyn Fn(&Request, &mut Conn) -> bool + Send + Sync;

struct FakeRegistry {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Request>>>,
    /// Connections that did not start with an HTTP request (TLS hellos).
    not_http: Arc<AtomicUsize>,
    image: Arc<Image>,
}

impl FakeRegistry {
    fn start(
        image: Image,
        handler: impl Fn(&Request, &mut Conn) -> bool + Send + Sync + 'static,
    ) -> FakeRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let not_http = Arc::new(AtomicUsize::new(0));
        let image = Arc::new(image);
        let handler: Arc<Handler> = Arc::new(handler);
        {
            let (stop, log, not_http, image) =
                (stop.clone(), log.clone(), not_http.clone(), image.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let conn = Conn {
                                stream,
                                image: image.clone(),
                                stop: stop.clone(),
                                started: Instant::now(),
                                base: format!("http://{addr}"),
                                log: log.clone(),
                            };
                            let (log, not_http, handler) =
                                (log.clone(), not_http.clone(), handler.clone());
                            thread::spawn(move || serve(conn, &log, &not_http, &*handler));
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            thread::sleep(Duration::from_millis(5));
                        }
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
            });
        }
        FakeRegistry {
            addr,
            stop,
            log,
            not_http,
            image,
        }
    }

    /// `docker://127.0.0.1:PORT/REPO:TAG`.
    fn by_tag(&self) -> String {
        format!("docker://{}/{REPO}:{TAG}", self.addr)
    }

    /// `docker://127.0.0.1:PORT/REPO@DIGEST`.
    fn by_digest(&self, digest: &str) -> String {
        format!("docker://{}/{REPO}@{digest}", self.addr)
    }

    fn requests(&self) -> Vec<Request> {
        self.log.lock().unwrap().clone()
    }

    fn count(&self, pred: impl Fn(&Request) -> bool) -> usize {
        self.requests().iter().filter(|r| pred(r)).count()
    }

    /// The requests, one a line (seconds since the first), for failure
    /// messages.
    fn shown(&self) -> String {
        let requests = self.requests();
        let Some(first) = requests.first().map(|r| r.at) else {
            return "  (none)\n".to_string();
        };
        requests
            .iter()
            .map(|r| {
                let range = r
                    .header("range")
                    .map(|v| format!(" [{v}]"))
                    .unwrap_or_default();
                let t = (r.at - first).as_secs_f64();
                format!("  {t:7.3} {} {}{range}\n", r.method, r.path)
            })
            .collect()
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(mut conn: Conn, log: &Mutex<Vec<Request>>, not_http: &AtomicUsize, handler: &Handler) {
    let _ = conn.stream.set_nonblocking(false);
    let _ = conn.stream.set_read_timeout(Some(SOCKET_TIMEOUT));
    let _ = conn.stream.set_write_timeout(Some(SOCKET_TIMEOUT));
    // A TLS ClientHello (ocimount tries HTTPS first) starts with 0x16:
    // close at once, so that the client falls back to plain HTTP.
    let mut first = [0u8; 1];
    match conn.stream.peek(&mut first) {
        Ok(1) if first[0].is_ascii_uppercase() => {}
        _ => {
            not_http.fetch_add(1, Ordering::Relaxed);
            let _ = conn.stream.shutdown(Shutdown::Both);
            return;
        }
    }
    let Some(req) = read_request(&conn.stream) else {
        let _ = conn.stream.shutdown(Shutdown::Both);
        return;
    };
    log.lock().unwrap().push(req.clone());
    if !handler(&req, &mut conn) {
        conn.normal(&req);
    }
    let _ = conn.stream.flush();
    let _ = conn.stream.shutdown(Shutdown::Write);
    // Let the client read everything before the socket goes away (a close
    // with unread input would reset the connection).
    let _ = conn
        .stream
        .set_read_timeout(Some(Duration::from_millis(500)));
    let mut sink = [0u8; 1024];
    while matches!(conn.stream.read(&mut sink), Ok(n) if n > 0) {}
}

/// The request line and headers (no request bodies here), bounded.
fn read_request(stream: &TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream.take(64 * 1024));
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    Some(Request {
        method,
        path,
        headers,
        at: Instant::now(),
    })
}

// ---------------------------------------------------------------------------
// Running ocimount

struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    elapsed: Duration,
    /// The process's peak resident set, in KiB, when measured.
    max_rss_kib: Option<u64>,
    shown: String,
}

impl Run {
    /// Failed (exit status 1, not a signal), said so cleanly, and said
    /// every one of `fragments`.
    fn assert_fails_with(&self, fragments: &[&str]) {
        self.assert_no_panic();
        assert!(
            !self.status.success(),
            "{} succeeded where it should fail\nstdout: {}\nstderr: {}",
            self.shown,
            self.stdout,
            self.stderr
        );
        assert_eq!(
            self.status.code(),
            Some(1),
            "{} did not exit with status 1 ({:?})\nstderr: {}",
            self.shown,
            self.status,
            self.stderr
        );
        assert!(
            self.stderr.contains("ocimount: error: "),
            "{}: no error line in stderr: {}",
            self.shown,
            self.stderr
        );
        for fragment in fragments {
            assert!(
                self.stderr.contains(fragment),
                "{}: stderr lacks {fragment:?}:\n{}",
                self.shown,
                self.stderr
            );
        }
    }

    fn assert_ok(&self) -> &str {
        self.assert_no_panic();
        assert!(
            self.status.success(),
            "{} failed ({:?}): {}",
            self.shown,
            self.status,
            self.stderr
        );
        &self.stdout
    }

    fn assert_no_panic(&self) {
        assert!(
            !self.stderr.contains("panicked"),
            "{} panicked: {}",
            self.shown,
            self.stderr
        );
    }

    fn assert_within(&self, limit: Duration) {
        assert!(
            self.elapsed <= limit,
            "{} took {:?}, more than {limit:?}; stderr: {}",
            self.shown,
            self.elapsed,
            self.stderr
        );
    }
}

/// ocimount with its own home (no auth files) and cache, both fresh
/// temporary directories, `--tls-verify=false` and a `--registry-timeout`.
struct Ocimount {
    home: tempfile::TempDir,
    timeout_secs: u64,
    /// Run under /usr/bin/time for the peak RSS. (wait4's ru_maxrss of a
    /// child spawned straight from here would count this test process too:
    /// Linux carries the high-water mark of the vforked address space
    /// across exec.)
    measure: bool,
}

impl Ocimount {
    fn new(timeout_secs: u64) -> Ocimount {
        Ocimount {
            home: tempfile::tempdir().unwrap(),
            timeout_secs,
            measure: false,
        }
    }

    fn measured(mut self) -> Ocimount {
        self.measure = true;
        self
    }

    /// `ocimount --cache CACHE --tls-verify=false --registry-timeout SECS
    /// ARGS…`, killed (and the test failed) past `limit`.
    fn run(&self, args: &[&str], limit: Duration) -> Run {
        let rss_file = self.home.path().join("max-rss");
        let mut cmd = if self.measure {
            let mut c = Command::new("/usr/bin/time");
            c.arg("-o").arg(&rss_file).arg("-f").arg("%M").arg(BIN);
            c
        } else {
            Command::new(BIN)
        };
        cmd.arg("--cache")
            .arg(self.home.path().join("cache"))
            .arg("--tls-verify=false")
            .arg("--registry-timeout")
            .arg(self.timeout_secs.to_string())
            // Nothing decoded is kept, so that every read of a file after
            // the indexing pass fetches its span by Range: what the span
            // cases answer wrongly.
            .arg("--cache-mode")
            .arg("index-only")
            .args(args);
        scrub(&mut cmd, self.home.path());
        let mut run = run_bounded(cmd, limit);
        if self.measure {
            let text = std::fs::read_to_string(&rss_file).unwrap_or_default();
            // GNU time writes "Command exited with non-zero status N" first.
            run.max_rss_kib = text.lines().last().and_then(|l| l.trim().parse().ok());
            assert!(
                run.max_rss_kib.is_some(),
                "/usr/bin/time wrote no peak RSS: {text:?}"
            );
        }
        if self.measure {
            eprintln!("peak RSS: {:?} KiB", run.max_rss_kib);
        }
        run
    }
}

/// One `ocimount` run with a fresh cache.
fn ocimount(timeout_secs: u64, args: &[&str], limit: Duration) -> Run {
    Ocimount::new(timeout_secs).run(args, limit)
}

fn scrub(cmd: &mut Command, home: &Path) {
    for var in [
        "RUST_LOG",
        "REGISTRY_AUTH_FILE",
        "DOCKER_CONFIG",
        "OCIMOUNT_TLS_VERIFY",
        "OCIMOUNT_REGISTRY_TIMEOUT",
        "OCIMOUNT_REGISTRY_CREDS",
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
        "no_proxy",
        "NO_PROXY",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("HOME", home).env("XDG_RUNTIME_DIR", home);
    // For debugging a case: HOSTILE_RUST_LOG=debug cargo test … -- --nocapture
    if let Ok(filter) = std::env::var("HOSTILE_RUST_LOG") {
        cmd.env("RUST_LOG", filter);
    }
}

/// Run `cmd` (in its own process group) to its end; past `limit`, kill
/// the group and fail the test.
fn run_bounded(mut cmd: Command, limit: Duration) -> Run {
    use std::os::unix::process::CommandExt;
    let shown = format!("{cmd:?}");
    let started = Instant::now();
    let mut child = cmd
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            // SAFETY: a plain kill(2) of the group this child leads.
            unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
            let _ = child.wait();
            let err = err.join().unwrap();
            panic!(
                "{shown} did not finish within {limit:?} (killed); stderr so far:\n{}",
                String::from_utf8_lossy(&err)
            );
        }
        thread::sleep(Duration::from_millis(10));
    };
    let run = Run {
        status,
        stdout: String::from_utf8_lossy(&out.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&err.join().unwrap()).into_owned(),
        elapsed: started.elapsed(),
        max_rss_kib: None,
        shown,
    };
    // Shown with --nocapture (and for a failed test).
    eprintln!(
        "ran {} ({:?}, {:?})\nstderr:\n{}",
        run.shown, run.status, run.elapsed, run.stderr
    );
    run
}

/// Generous bound on a run that should fail (or succeed) promptly.
const QUICK: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// The harness itself

#[test]
fn a_well_behaved_fake_registry_serves_the_image() {
    let registry = FakeRegistry::start(Image::standard(), |_, _| false);
    let run = ocimount(10, &["ls", &registry.by_tag(), "/"], QUICK);
    assert!(
        run.assert_ok().contains(FILE),
        "ls lacks {FILE}: {}",
        run.stdout
    );
    let run = ocimount(
        10,
        &[
            "cat",
            &registry.by_digest(&registry.image.manifest_digest),
            &format!("/{FILE}"),
        ],
        QUICK,
    );
    assert_eq!(run.assert_ok().as_bytes(), FILE_CONTENT);
    assert!(
        registry.not_http.load(Ordering::Relaxed) > 0,
        "ocimount never tried HTTPS first"
    );
}

// ---------------------------------------------------------------------------
// Manifests

/// Case 1: By digest: the body is another valid manifest (the right one
/// plus an annotation) than the digest asked for.
#[test]
fn a_manifest_that_is_not_the_digest_asked_for_is_refused() {
    let image = Image::standard();
    let asked = image.manifest_digest.clone();
    let mut other: serde_json::Value = serde_json::from_slice(&image.manifest).unwrap();
    other["annotations"] = serde_json::json!({ "evil": "yes" });
    let other = serde_json::to_vec(&other).unwrap();
    let served = sha256(&other);
    let registry = FakeRegistry::start(image, move |req, conn| {
        if req.manifest_ref().is_some_and(|r| r.starts_with("sha256:")) {
            conn.respond(
                req,
                200,
                &[("Content-Type", OCI_MANIFEST.to_string())],
                &other,
            );
            return true;
        }
        false
    });
    let run = ocimount(10, &["ls", &registry.by_digest(&asked), "/"], QUICK);
    run.assert_fails_with(&["manifest", &asked, &served]);
    assert!(
        run.stderr.contains("mismatch") || run.stderr.contains("does not match"),
        "{}",
        run.stderr
    );
}

/// Case 2: By tag: the Docker-Content-Digest header names another document.
#[test]
fn a_tag_whose_content_digest_header_disagrees_is_refused() {
    let image = Image::standard();
    let claimed = sha256(b"some other manifest");
    let actual = image.manifest_digest.clone();
    let header = claimed.clone();
    let registry = FakeRegistry::start(image, move |req, conn| {
        if req.manifest_ref() == Some(TAG) {
            let body = conn.image.manifest.clone();
            conn.respond(
                req,
                200,
                &[
                    ("Content-Type", OCI_MANIFEST.to_string()),
                    ("Docker-Content-Digest", header.clone()),
                ],
                &body,
            );
            return true;
        }
        false
    });
    let run = ocimount(10, &["ls", &registry.by_tag(), "/"], QUICK);
    run.assert_fails_with(&["manifest", TAG, &claimed, &actual]);
}

/// Case 3: A Content-Length of 9 GB, then nothing: refused from the header.
#[test]
fn a_manifest_of_9_gb_is_refused_before_it_is_read() {
    let registry = FakeRegistry::start(Image::standard(), |req, conn| {
        if req.manifest_ref() == Some(TAG) {
            conn.head(
                200,
                &[
                    ("Content-Type", OCI_MANIFEST.to_string()),
                    ("Content-Length", "9000000000".to_string()),
                ],
            );
            return true;
        }
        false
    });
    let run = ocimount(10, &["ls", &registry.by_tag(), "/"], QUICK);
    run.assert_fails_with(&[
        "manifest",
        "9000000000 bytes",
        &format!("{MAX_JSON_BYTES}-byte limit"),
    ]);
    run.assert_within(Duration::from_secs(8));
}

/// Stream `chunk` until the client goes away (or the handler limit).
fn endless(conn: &mut Conn, chunked: bool) {
    let block = vec![b'a'; 64 * 1024];
    let framed = if chunked {
        let mut f = format!("{:x}\r\n", block.len()).into_bytes();
        f.extend_from_slice(&block);
        f.extend_from_slice(b"\r\n");
        f
    } else {
        block
    };
    while !conn.stopped() && conn.write(&framed) {}
}

fn endless_manifest(chunked: bool) {
    let registry = FakeRegistry::start(Image::standard(), move |req, conn| {
        if req.manifest_ref() == Some(TAG) {
            let mut headers = vec![("Content-Type", OCI_MANIFEST.to_string())];
            if chunked {
                headers.push(("Transfer-Encoding", "chunked".to_string()));
            }
            if conn.head(200, &headers) {
                endless(conn, chunked);
            }
            return true;
        }
        false
    });
    let run = Ocimount::new(30)
        .measured()
        .run(&["ls", &registry.by_tag(), "/"], QUICK);
    run.assert_fails_with(&["manifest", &format!("{MAX_JSON_BYTES}-byte limit")]);
    run.assert_within(Duration::from_secs(15));
    let max_rss_kib = run.max_rss_kib.unwrap();
    assert!(
        max_rss_kib < 100 * 1024,
        "reading an endless manifest took {max_rss_kib} KiB of memory"
    );
}

/// Case 4: A body that never ends, delimited by the connection's close.
#[test]
fn an_endless_manifest_is_cut_at_the_limit_in_bounded_memory() {
    endless_manifest(false);
}

/// Case 4': The same, chunked.
#[test]
fn an_endless_chunked_manifest_is_cut_at_the_limit_in_bounded_memory() {
    endless_manifest(true);
}

/// Case 5: One byte a second, forever, with a 5 s bound.
#[test]
fn a_manifest_that_drips_fails_at_the_registry_timeout() {
    let registry = FakeRegistry::start(Image::standard(), |req, conn| {
        if req.manifest_ref() == Some(TAG) {
            if conn.head(200, &[("Content-Type", OCI_MANIFEST.to_string())]) {
                while !conn.stopped() && conn.write(b" ") {
                    thread::sleep(Duration::from_secs(1));
                }
            }
            return true;
        }
        false
    });
    let run = ocimount(5, &["ls", &registry.by_tag(), "/"], QUICK);
    run.assert_fails_with(&["manifest", "timeout"]);
    assert!(
        run.elapsed >= Duration::from_secs(4),
        "gave up after {:?}, before the 5 s timeout",
        run.elapsed
    );
    run.assert_within(Duration::from_secs(10));
}

/// Case 5': The timeout's message says which bound was hit and how to raise
/// it, in the user's terms: "reading the manifest: timeout: global" (and
/// "timeout: global (after 1 attempts)") is ureq's name for its timer.
#[test]
fn a_manifest_timeout_names_the_registry_timeout() {
    let registry = FakeRegistry::start(Image::standard(), |req, conn| {
        if req.manifest_ref() == Some(TAG) {
            if conn.head(200, &[("Content-Type", OCI_MANIFEST.to_string())]) {
                while !conn.stopped() && conn.write(b" ") {
                    thread::sleep(Duration::from_secs(1));
                }
            }
            return true;
        }
        false
    });
    let run = ocimount(5, &["ls", &registry.by_tag(), "/"], QUICK);
    run.assert_fails_with(&["--registry-timeout"]);
    assert!(!run.stderr.contains("timeout: global"), "{}", run.stderr);
}

// ---------------------------------------------------------------------------
// Layers

/// Case 6: The layer's bytes are another valid gzip of the same size.
#[test]
fn a_layer_whose_bytes_are_another_gzip_is_refused() {
    let real = gzip(&tar_of(&[(FILE, b"hello, world")]), Compression::none());
    let fake = gzip(&tar_of(&[(FILE, b"jello, world")]), Compression::none());
    assert_eq!(real.len(), fake.len());
    assert_ne!(real, fake);
    let image = Image::with_layer(real, None);
    let layer = image.layer_digest.clone();
    let registry = FakeRegistry::start(image, move |req, conn| {
        if req.blob_digest() == Some(layer.as_str()) && req.range().is_none() && req.is_get() {
            conn.respond(req, 200, &[], &fake);
            return true;
        }
        false
    });
    let layer = registry.image.layer_digest.clone();
    let run = ocimount(10, &["ls", &registry.by_tag(), "/"], QUICK);
    run.assert_fails_with(&[&layer]);
    assert!(
        run.stderr.contains("mismatch") || run.stderr.contains("does not match"),
        "no digest mismatch named: {}",
        run.stderr
    );
}

/// Which read of the image's layer `req` is: the head read (a Range
/// before the whole-blob GET: the indexing pass sniffs the compression),
/// the whole-blob GET of the indexing pass, or a span read (a Range after
/// it). None for anything else.
#[derive(Clone, Copy, Debug, PartialEq)]
enum LayerRead {
    Head,
    Whole,
    Span,
}

fn layer_read(req: &Request, conn: &Conn) -> Option<LayerRead> {
    let layer = conn.image.layer_digest.clone();
    if req.blob_digest() != Some(layer.as_str()) || !req.is_get() {
        return None;
    }
    let whole =
        |r: &Request| r.blob_digest() == Some(layer.as_str()) && r.is_get() && r.range().is_none();
    Some(if whole(req) {
        LayerRead::Whole
    } else if conn.seen(whole) > 0 {
        LayerRead::Span
    } else {
        LayerRead::Head
    })
}

/// Case 7: The whole-blob GET's Content-Length (and body) is 10 bytes less than
/// the descriptor's size.
#[test]
fn a_layer_with_a_short_content_length_is_refused() {
    let registry = FakeRegistry::start(Image::standard(), |req, conn| {
        if layer_read(req, conn) == Some(LayerRead::Whole) {
            let blob = conn.image.layer.clone();
            conn.respond(req, 200, &[], &blob[..blob.len() - 10]);
            return true;
        }
        false
    });
    let size = registry.image.layer.len();
    let run = ocimount(10, &["ls", &registry.by_tag(), "/"], QUICK);
    run.assert_fails_with(&[
        &registry.image.layer_digest,
        &format!("sends {} bytes", size - 10),
        &format!("says {size}"),
    ]);
    run.assert_within(Duration::from_secs(8));
}

/// Case 7': A Range read answered 206 with fewer bytes than asked (and a
/// Content-Range that says so).
#[test]
fn a_range_read_answered_with_fewer_bytes_is_an_error() {
    let registry = FakeRegistry::start(Image::standard(), |req, conn| {
        if layer_read(req, conn) == Some(LayerRead::Span) {
            let blob = conn.image.layer.clone();
            let (start, _) = req.range().unwrap();
            let end = start as usize + (blob.len() - start as usize) / 2;
            conn.respond(
                req,
                206,
                &[(
                    "Content-Range",
                    format!("bytes {start}-{}/{}", end - 1, blob.len()),
                )],
                &blob[start as usize..end],
            );
            return true;
        }
        false
    });
    let run = cat_after_ls(&registry);
    run.assert_fails_with(&[&registry.image.layer_digest, "ends early"]);
    run.assert_within(Duration::from_secs(8));
}

/// Answer `req` for `blob` (whole, or its Range) with the right headers,
/// but only the first half of the body, then close.
fn half_a_body(req: &Request, conn: &mut Conn) {
    let blob = conn.image.layer.clone();
    let (status, start, end, mut headers) = match req.range() {
        Some((start, end)) => {
            let end = end.map_or(blob.len() - 1, |e| (e as usize).min(blob.len() - 1));
            let range = format!("bytes {start}-{end}/{}", blob.len());
            (206, start as usize, end, vec![("Content-Range", range)])
        }
        None => (200, 0, blob.len() - 1, vec![]),
    };
    headers.push(("Content-Length", (end + 1 - start).to_string()));
    if conn.head(status, &headers) {
        conn.write(&blob[start..start + (end + 1 - start) / 2]);
    }
}

/// Case 8: The whole-blob GET has the right Content-Length, then the
/// connection closes half way.
#[test]
fn a_layer_stream_that_ends_early_is_an_error() {
    let registry = FakeRegistry::start(Image::standard(), |req, conn| {
        if layer_read(req, conn) == Some(LayerRead::Whole) {
            half_a_body(req, conn);
            return true;
        }
        false
    });
    let run = ocimount(10, &["ls", &registry.by_tag(), "/"], QUICK);
    run.assert_fails_with(&[&registry.image.layer_digest]);
    assert!(
        run.stderr.contains("early")
            || run.stderr.contains("disconnected")
            || run.stderr.contains("closed"),
        "no word of the body ending early: {}",
        run.stderr
    );
    run.assert_within(Duration::from_secs(8));
}

/// Case 8': The same for a span's Range read.
#[test]
fn a_range_read_that_ends_early_is_an_error() {
    let registry = FakeRegistry::start(Image::standard(), |req, conn| {
        if layer_read(req, conn) == Some(LayerRead::Span) {
            half_a_body(req, conn);
            return true;
        }
        false
    });
    let run = cat_after_ls(&registry);
    run.assert_fails_with(&[&registry.image.layer_digest, "ends early"]);
    run.assert_within(Duration::from_secs(8));
}

fn whole_layer_gets(registry: &FakeRegistry) -> usize {
    let layer = registry.image.layer_digest.clone();
    registry.count(|r| r.blob_digest() == Some(layer.as_str()) && r.is_get() && r.range().is_none())
}

/// Case 8'': A whole-blob GET that fails in transit (the body ends early) is
/// not sent again: the failure is the network's, and another full
/// download of the layer only to choose the error message costs as much
/// as the first (a 2 GB layer cut at 1.9 GB: another 2 GB).
#[test]
fn a_failed_layer_stream_is_not_downloaded_again() {
    let registry = FakeRegistry::start(Image::standard(), |req, conn| {
        if layer_read(req, conn) == Some(LayerRead::Whole) {
            half_a_body(req, conn);
            return true;
        }
        false
    });
    let run = ocimount(10, &["ls", &registry.by_tag(), "/"], QUICK);
    run.assert_fails_with(&[&registry.image.layer_digest]);
    assert_eq!(
        whole_layer_gets(&registry),
        1,
        "the layer was streamed more than once; requests:\n{}",
        registry.shown()
    );
}

/// A whole-blob GET that drips (1 byte a second after prompt headers, so
/// only the stream's own rate check can end it) fails once the 30 s rate
/// window has passed: in about 30 s, not twice that.
#[test]
fn a_layer_stream_that_drips_is_given_up_on() {
    let registry = FakeRegistry::start(Image::standard(), |req, conn| {
        if layer_read(req, conn) == Some(LayerRead::Whole) {
            let blob = conn.image.layer.clone();
            if conn.head(200, &[("Content-Length", blob.len().to_string())]) {
                for byte in &blob {
                    if conn.stopped() || !conn.write(&[*byte]) {
                        break;
                    }
                    thread::sleep(Duration::from_secs(1));
                }
            }
            return true;
        }
        false
    });
    // The layer is 120-odd bytes: at a byte a second it would take two
    // minutes, but the 64 KiB / 30 s rate check ends it at 30 s.
    let run = ocimount(5, &["ls", &registry.by_tag(), "/"], Duration::from_secs(90));
    run.assert_fails_with(&[&registry.image.layer_digest, "too slow"]);
    run.assert_within(Duration::from_secs(40));
    assert_eq!(whole_layer_gets(&registry), 1, "{}", registry.shown());
}

// ---------------------------------------------------------------------------
// Retries, redirects, auth

/// Case 9: Two 503s, then the manifest.
#[test]
fn two_503s_are_retried() {
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let registry = FakeRegistry::start(Image::standard(), move |req, conn| {
        if req.manifest_ref() == Some(TAG) && counter.fetch_add(1, Ordering::SeqCst) < 2 {
            conn.error(req, 503, "UNAVAILABLE");
            return true;
        }
        false
    });
    let run = ocimount(20, &["ls", &registry.by_tag(), "/"], QUICK);
    assert!(run.assert_ok().contains(FILE), "{}", run.stdout);
    assert_eq!(
        registry.count(|r| r.manifest_ref() == Some(TAG)),
        3,
        "requests:\n{}",
        registry.shown()
    );
}

/// Case 9': A 429 with Retry-After: 1, then the manifest.
#[test]
fn a_429_with_retry_after_is_retried_after_the_pause() {
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let times = Arc::new(Mutex::new(Vec::new()));
    let log = times.clone();
    let registry = FakeRegistry::start(Image::standard(), move |req, conn| {
        if req.manifest_ref() == Some(TAG) {
            log.lock().unwrap().push(Instant::now());
            if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                conn.respond(req, 429, &[("Retry-After", "1".to_string())], b"slow down");
                return true;
            }
        }
        false
    });
    let run = ocimount(20, &["ls", &registry.by_tag(), "/"], QUICK);
    assert!(run.assert_ok().contains(FILE), "{}", run.stdout);
    let times = times.lock().unwrap();
    assert_eq!(times.len(), 2, "requests:\n{}", registry.shown());
    let pause = times[1] - times[0];
    assert!(
        pause >= Duration::from_millis(900),
        "retried after {pause:?}, not after the Retry-After second"
    );
}

/// A Retry-After far past the timeout: no point waiting, fail at once.
#[test]
fn a_429_asking_for_longer_than_the_timeout_fails_promptly() {
    let registry = FakeRegistry::start(Image::standard(), |req, conn| {
        if req.manifest_ref() == Some(TAG) {
            conn.respond(
                req,
                429,
                &[("Retry-After", "100000".to_string())],
                b"go away",
            );
            return true;
        }
        false
    });
    let run = ocimount(4, &["ls", &registry.by_tag(), "/"], QUICK);
    run.assert_fails_with(&["manifest", "429"]);
    run.assert_within(Duration::from_secs(6));
}

fn always_500() -> FakeRegistry {
    FakeRegistry::start(Image::standard(), |req, conn| {
        if req.manifest_ref() == Some(TAG) {
            conn.error(req, 500, "UNKNOWN");
            return true;
        }
        false
    })
}

/// Case 10: 500 forever, 4 s bound: retried, given up on in time, and the
/// error says HTTP 500.
#[test]
fn a_registry_that_always_fails_is_given_up_on_in_time() {
    let registry = always_500();
    let run = ocimount(4, &["ls", &registry.by_tag(), "/"], QUICK);
    run.assert_fails_with(&["manifests/latest", "HTTP 500"]);
    run.assert_within(Duration::from_secs(8));
    let attempts = registry.count(|r| r.manifest_ref() == Some(TAG));
    assert!(attempts >= 2, "never retried: {}", registry.shown());
}

/// Case 10': …and says how often it tried, as it does when the connection
/// fails ("… (after 4 attempts)"): otherwise a 500 after four tries and
/// 3.5 s reads like one unlucky request.
#[test]
fn a_registry_that_always_fails_is_reported_with_the_attempt_count() {
    let registry = always_500();
    let run = ocimount(4, &["ls", &registry.by_tag(), "/"], QUICK);
    let attempts = registry.count(|r| r.manifest_ref() == Some(TAG));
    run.assert_fails_with(&["HTTP 500", &format!("gave up after {attempts} attempts")]);
}

/// Case 11: A 302 to itself.
#[test]
fn a_redirect_loop_is_cut_short() {
    let registry = FakeRegistry::start(Image::standard(), |req, conn| {
        if req.manifest_ref().is_some() {
            conn.respond(req, 302, &[("Location", req.path.clone())], b"");
            return true;
        }
        false
    });
    let run = ocimount(10, &["ls", &registry.by_tag(), "/"], QUICK);
    run.assert_fails_with(&["more than 5 redirects"]);
    run.assert_within(Duration::from_secs(8));
}

/// Case 11': …and not retried: a loop (or a redirect without a Location) is
/// the registry's answer, not a transient failure, yet the whole chain of
/// six requests is sent four times over, 3.5 s of back-off included.
#[test]
fn a_redirect_loop_is_not_retried() {
    let registry = FakeRegistry::start(Image::standard(), |req, conn| {
        if req.manifest_ref().is_some() {
            conn.respond(req, 302, &[("Location", req.path.clone())], b"");
            return true;
        }
        false
    });
    let run = ocimount(10, &["ls", &registry.by_tag(), "/"], QUICK);
    run.assert_fails_with(&["more than 5 redirects"]);
    let sent = registry.count(|r| r.manifest_ref().is_some());
    assert!(sent <= 6, "{sent} requests:\n{}", registry.shown());
    run.assert_within(Duration::from_secs(1));
}

/// Case 12: A 401 with no challenge at all.
#[test]
fn a_401_without_a_challenge_is_an_auth_error() {
    let registry = FakeRegistry::start(Image::standard(), |req, conn| {
        if req.path.starts_with("/v2") {
            conn.error(req, 401, "UNAUTHORIZED");
            return true;
        }
        false
    });
    let run = ocimount(10, &["ls", &registry.by_tag(), "/"], QUICK);
    run.assert_fails_with(&["401", "authentication"]);
    run.assert_within(Duration::from_secs(8));
}

/// A registry with Bearer auth whose token endpoint answers `token`
/// (given the number of token requests so far, this one included).
fn bearer_registry(
    token: impl Fn(usize, &Request, &mut Conn) + Send + Sync + 'static,
) -> FakeRegistry {
    let asked = AtomicUsize::new(0);
    FakeRegistry::start(Image::standard(), move |req, conn| {
        if req.path.starts_with("/token") {
            token(asked.fetch_add(1, Ordering::SeqCst) + 1, req, conn);
            return true;
        }
        if req.path.starts_with("/v2") && req.header("authorization") != Some("Bearer good-token") {
            let challenge = format!(
                "Bearer realm=\"{}/token\",service=\"fake\",scope=\"repository:{REPO}:pull\"",
                conn.base
            );
            conn.respond(req, 401, &[("WWW-Authenticate", challenge)], b"");
            return true;
        }
        false
    })
}

fn good_token(req: &Request, conn: &mut Conn) {
    conn.respond(
        req,
        200,
        &[("Content-Type", "application/json".to_string())],
        br#"{"token": "good-token", "expires_in": 300}"#,
    );
}

/// The fake's Bearer flow works when the token endpoint does.
#[test]
fn a_bearer_token_registry_serves_the_image() {
    let registry = bearer_registry(|_, req, conn| good_token(req, conn));
    let run = ocimount(10, &["ls", &registry.by_tag(), "/"], QUICK);
    assert!(run.assert_ok().contains(FILE), "{}", run.stdout);
}

/// A token endpoint that answers 503 once: retried like any other request
/// (Docker Hub's auth.docker.io does answer 503 and 429 at times).
#[test]
fn a_token_endpoint_503_is_retried() {
    let registry = bearer_registry(|n, req, conn| {
        if n == 1 {
            conn.error(req, 503, "UNAVAILABLE");
        } else {
            good_token(req, conn);
        }
    });
    let run = ocimount(10, &["ls", &registry.by_tag(), "/"], QUICK);
    assert!(run.assert_ok().contains(FILE), "{}", run.stdout);
}

/// Case 12': A Bearer challenge whose token endpoint answers garbage.
#[test]
fn a_token_endpoint_that_answers_garbage_is_named() {
    let registry = FakeRegistry::start(Image::standard(), |req, conn| {
        if req.path.starts_with("/token") {
            conn.respond(
                req,
                200,
                &[("Content-Type", "application/json".to_string())],
                b"{\"token\": <html>oops",
            );
            return true;
        }
        if req.path.starts_with("/v2") && req.header("authorization").is_none() {
            let challenge = format!(
                "Bearer realm=\"{}/token\",service=\"fake\",scope=\"repository:{REPO}:pull\"",
                conn.base
            );
            conn.respond(
                req,
                401,
                &[
                    ("WWW-Authenticate", challenge),
                    ("Content-Type", "application/json".to_string()),
                ],
                br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
            );
            return true;
        }
        false
    });
    let run = ocimount(10, &["ls", &registry.by_tag(), "/"], QUICK);
    run.assert_fails_with(&["token", &format!("http://{}/token", registry.addr)]);
    run.assert_within(Duration::from_secs(8));
}

// ---------------------------------------------------------------------------
// Range reads and the config

/// A 206 for `req`'s range with a Content-Range (and bytes) 7 bytes
/// further on.
fn other_range(req: &Request, conn: &mut Conn) {
    let blob = conn.image.layer.clone();
    let total = blob.len();
    let (start, _) = req.range().unwrap();
    let other = (start as usize + 7).min(total - 1);
    conn.respond(
        req,
        206,
        &[(
            "Content-Range",
            format!("bytes {other}-{}/{total}", total - 1),
        )],
        &blob[other..],
    );
}

/// `ls` of the standard image (the indexing pass, served right, fills the
/// cache), then `cat` of its file in a new process, whose span reads by
/// Range `answer` gives; the `cat` run and the layer's digest. Asserts
/// that `cat` did read a span by Range.
fn cat_with_span_reads_answered_by(answer: fn(&Request, &mut Conn)) -> (Run, String) {
    let registry = FakeRegistry::start(Image::standard(), move |req, conn| {
        if layer_read(req, conn) == Some(LayerRead::Span) {
            answer(req, conn);
            return true;
        }
        false
    });
    let ocimount = Ocimount::new(10);
    ocimount
        .run(&["ls", &registry.by_tag(), "/"], QUICK)
        .assert_ok();
    let run = ocimount.run(&["cat", &registry.by_tag(), &format!("/{FILE}")], QUICK);
    let layer = registry.image.layer_digest.clone();
    let spans = registry.count(|r| r.blob_digest() == Some(layer.as_str()) && r.range().is_some());
    assert!(
        spans >= 1,
        "cat read no span by Range (so this case tests nothing); requests:\n{}",
        registry.shown()
    );
    (run, layer)
}

/// Case 13: A span read by Range, answered with another range. The indexing
/// pass (`ls`, served right) fills the cache; `cat` in a new process then
/// reads the file's span from the registry by Range.
#[test]
fn a_span_read_answered_with_other_bytes_is_refused() {
    let (run, layer) = cat_with_span_reads_answered_by(other_range);
    run.assert_fails_with(&["Content-Range", "bytes 7-", &layer]);
    assert!(run.stdout.is_empty(), "cat wrote {:?}", run.stdout);
    run.assert_within(Duration::from_secs(8));
}

/// A 206 for exactly `req`'s range, with the right Content-Range and
/// length, one byte of which is flipped: the answer a tampering proxy or a
/// rotting disk would give.
fn flipped_range(req: &Request, conn: &mut Conn) {
    let blob = conn.image.layer.clone();
    let total = blob.len();
    let (start, end) = req.range().unwrap();
    let end = end.map_or(total - 1, |e| (e as usize).min(total - 1));
    let mut body = blob[start as usize..=end].to_vec();
    let middle = body.len() / 2;
    body[middle] ^= 0x20;
    conn.respond(
        req,
        206,
        &[("Content-Range", format!("bytes {start}-{end}/{total}"))],
        &body,
    );
}

/// A span read by Range answered with the right range, one byte of it
/// flipped. The full pass took the span's SHA-256 over its compressed
/// range, so the read is refused by that digest before a byte is inflated
/// (the CRC-32 after inflating is not what catches it), and the message
/// names the layer, the range and both digests.
#[test]
fn a_span_read_with_a_flipped_byte_is_refused_by_its_digest_before_inflating() {
    let (run, layer) = cat_with_span_reads_answered_by(flipped_range);
    run.assert_fails_with(&[
        &layer,
        "sha256 mismatch over its compressed bytes",
        "the index says sha256:",
        "the remote's are sha256:",
        "not decoded",
    ]);
    assert!(!run.stderr.contains("crc"), "{}", run.stderr);
    assert!(run.stdout.is_empty(), "cat wrote {:?}", run.stdout);
    run.assert_within(Duration::from_secs(8));
}

/// The indexing pass reads each layer in one request: no Range read for
/// its head first (a registry would send that part twice).
#[test]
fn the_indexing_pass_reads_each_layer_in_one_request() {
    let registry = FakeRegistry::start(Image::standard(), |_, _| false);
    ocimount(10, &["ls", &registry.by_tag(), "/"], QUICK).assert_ok();
    let layer = registry.image.layer_digest.clone();
    let reads = registry.count(|r| r.blob_digest() == Some(layer.as_str()) && r.is_get());
    assert_eq!(reads, 1, "requests:\n{}", registry.shown());
    assert_eq!(
        whole_layer_gets(&registry),
        1,
        "requests:\n{}",
        registry.shown()
    );
}

/// `ls` (the indexing pass, served right), then `cat` of the file in a new
/// process, which reads the file's span from the registry by Range.
fn cat_after_ls(registry: &FakeRegistry) -> Run {
    let ocimount = Ocimount::new(10);
    ocimount
        .run(&["ls", &registry.by_tag(), "/"], QUICK)
        .assert_ok();
    ocimount.run(&["cat", &registry.by_tag(), &format!("/{FILE}")], QUICK)
}

/// A registry that ignores Range (200 and the whole blob) still works.
#[test]
fn a_registry_that_ignores_range_still_serves_the_image() {
    let registry = FakeRegistry::start(Image::standard(), |req, conn| {
        if let Some(digest) = req.blob_digest() {
            if let Some(blob) = conn.image.blob(digest).map(<[u8]>::to_vec) {
                conn.respond(req, 200, &[], &blob);
                return true;
            }
        }
        false
    });
    let ocimount = Ocimount::new(10);
    let run = ocimount.run(&["ls", &registry.by_tag(), "/"], QUICK);
    assert!(run.assert_ok().contains(FILE), "{}", run.stdout);
    let run = ocimount.run(&["cat", &registry.by_tag(), &format!("/{FILE}")], QUICK);
    assert_eq!(run.assert_ok().as_bytes(), FILE_CONTENT);
    assert!(run.stderr.contains("ignores Range"), "{}", run.stderr);
}

/// Case 14: A config blob (of the right digest) that is not JSON.
#[test]
fn a_config_that_is_not_json_is_named() {
    let layer = gzip(&tar_of(&[(FILE, FILE_CONTENT)]), Compression::default());
    let image = Image::with_layer(layer, Some(b"this is not { JSON".to_vec()));
    let registry = FakeRegistry::start(image, |_, _| false);
    let run = ocimount(10, &["ls", &registry.by_tag(), "/"], QUICK);
    run.assert_fails_with(&[&format!(
        "config docker://{}/{REPO}@{}: ",
        registry.addr, registry.image.config_digest
    )]);
    run.assert_within(Duration::from_secs(8));
}

// ---------------------------------------------------------------------------
// More of the same kind

/// A manifest (by tag, no digest header) that is not JSON.
#[test]
fn a_manifest_that_is_not_json_is_refused() {
    let registry = FakeRegistry::start(Image::standard(), |req, conn| {
        if req.manifest_ref() == Some(TAG) {
            conn.respond(
                req,
                200,
                &[("Content-Type", OCI_MANIFEST.to_string())],
                b"<html>not a manifest</html>",
            );
            return true;
        }
        false
    });
    let run = ocimount(10, &["ls", &registry.by_tag(), "/"], QUICK);
    run.assert_fails_with(&["manifest"]);
    run.assert_within(Duration::from_secs(8));
}

/// A layer the registry does not have.
#[test]
fn a_missing_layer_is_named() {
    let registry = FakeRegistry::start(Image::standard(), |req, conn| {
        if layer_read(req, conn).is_some() {
            conn.error(req, 404, "BLOB_UNKNOWN");
            return true;
        }
        false
    });
    let run = ocimount(10, &["ls", &registry.by_tag(), "/"], QUICK);
    run.assert_fails_with(&[&registry.image.layer_digest]);
    assert!(
        run.stderr.contains("missing")
            || run.stderr.contains("not found")
            || run.stderr.contains("no blob"),
        "{}",
        run.stderr
    );
    run.assert_within(Duration::from_secs(8));
}

/// A Range read answered 416.
#[test]
fn a_range_read_answered_416_is_an_error() {
    let registry = FakeRegistry::start(Image::standard(), |req, conn| {
        if layer_read(req, conn) == Some(LayerRead::Span) {
            conn.respond(req, 416, &[("Content-Range", "bytes */1".to_string())], b"");
            return true;
        }
        false
    });
    let run = cat_after_ls(&registry);
    run.assert_fails_with(&[&registry.image.layer_digest, "416"]);
    run.assert_within(Duration::from_secs(8));
}

/// A manifest request that is accepted and never answered: given up on at
/// the registry timeout.
#[test]
fn a_registry_that_never_answers_is_given_up_on_at_the_timeout() {
    let registry = FakeRegistry::start(Image::standard(), |req, conn| {
        if req.manifest_ref() == Some(TAG) {
            while !conn.stopped() {
                thread::sleep(Duration::from_millis(50));
            }
            return true;
        }
        false
    });
    let run = ocimount(4, &["ls", &registry.by_tag(), "/"], QUICK);
    run.assert_fails_with(&["manifests/latest", "timeout"]);
    run.assert_within(Duration::from_secs(8));
}

/// Nothing listens on the port: said so at once, for both protocols.
#[test]
fn an_unreachable_registry_is_reported_at_once() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let image = format!("docker://127.0.0.1:{port}/{REPO}:{TAG}");
    let run = ocimount(10, &["ls", &image, "/"], QUICK);
    run.assert_fails_with(&["cannot reach the registry", "HTTPS", "HTTP"]);
    run.assert_within(Duration::from_secs(5));
}

/// A response whose header section never ends: refused at ureq's header
/// limit, in bounded time and memory.
#[test]
fn endless_response_headers_are_refused() {
    let registry = FakeRegistry::start(Image::standard(), |req, conn| {
        if req.manifest_ref() == Some(TAG) {
            if conn.write(b"HTTP/1.1 200 OK\r\nX-Junk: ") {
                endless(conn, false);
            }
            return true;
        }
        false
    });
    let run = Ocimount::new(5)
        .measured()
        .run(&["ls", &registry.by_tag(), "/"], QUICK);
    run.assert_fails_with(&["manifests/latest", "header is too big"]);
    run.assert_within(Duration::from_secs(8));
    let max_rss_kib = run.max_rss_kib.unwrap();
    assert!(max_rss_kib < 100 * 1024, "{max_rss_kib} KiB");
}

/// A 302 without a Location.
#[test]
fn a_redirect_without_a_location_is_an_error() {
    let registry = FakeRegistry::start(Image::standard(), |req, conn| {
        if req.manifest_ref() == Some(TAG) {
            conn.respond(req, 302, &[], b"");
            return true;
        }
        false
    });
    let run = ocimount(4, &["ls", &registry.by_tag(), "/"], QUICK);
    run.assert_fails_with(&["redirect without a Location"]);
    run.assert_within(Duration::from_secs(8));
}

/// A token endpoint whose body never ends: cut at the 1 MiB token limit.
#[test]
fn an_endless_token_response_is_cut_short() {
    let registry = FakeRegistry::start(Image::standard(), |req, conn| {
        if req.path.starts_with("/token") {
            if conn.head(200, &[("Content-Type", "application/json".to_string())]) {
                conn.write(b"{\"token\": \"");
                endless(conn, false);
            }
            return true;
        }
        if req.path.starts_with("/v2") && req.header("authorization").is_none() {
            let challenge = format!("Bearer realm=\"{}/token\",service=\"fake\"", conn.base);
            conn.respond(req, 401, &[("WWW-Authenticate", challenge)], b"");
            return true;
        }
        false
    });
    let run = Ocimount::new(10)
        .measured()
        .run(&["ls", &registry.by_tag(), "/"], QUICK);
    run.assert_fails_with(&["token", "limit"]);
    run.assert_within(Duration::from_secs(8));
    let max_rss_kib = run.max_rss_kib.unwrap();
    assert!(max_rss_kib < 100 * 1024, "{max_rss_kib} KiB");
}

/// The registry's credentials go to the registry only: a blob GET
/// redirected to another host (object storage) is sent there without
/// the Authorization header.
#[test]
fn credentials_are_not_sent_to_a_redirect_target() {
    let storage = FakeRegistry::start(Image::standard(), |_, _| false);
    let storage_base = format!("http://{}", storage.addr);
    let registry = FakeRegistry::start(Image::standard(), move |req, conn| {
        if req.path.starts_with("/v2") && req.header("authorization").is_none() {
            conn.respond(
                req,
                401,
                &[("WWW-Authenticate", "Basic realm=\"fake\"".to_string())],
                b"",
            );
            return true;
        }
        if req.blob_digest().is_some() {
            conn.respond(
                req,
                307,
                &[("Location", format!("{storage_base}{}", req.path))],
                b"",
            );
            return true;
        }
        false
    });
    let run = ocimount(
        10,
        &[
            "--creds",
            "alice:s3cret",
            "cat",
            &registry.by_tag(),
            &format!("/{FILE}"),
        ],
        QUICK,
    );
    assert_eq!(run.assert_ok().as_bytes(), FILE_CONTENT);
    assert!(
        registry.count(|r| r.header("authorization").is_some()) > 0,
        "the registry never got the credentials: {}",
        registry.shown()
    );
    assert!(
        storage.count(|r| r.blob_digest().is_some()) > 0,
        "nothing was redirected: {}",
        storage.shown()
    );
    let leaked: Vec<_> = storage
        .requests()
        .into_iter()
        .filter(|r| r.header("authorization").is_some())
        .collect();
    assert!(
        leaked.is_empty(),
        "credentials sent to the redirect target: {leaked:?}"
    );
}

/// A registry whose referrers API (for published layer indexes) fails or
/// answers garbage still serves the image: that lookup is optional.
#[test]
fn a_broken_referrers_api_does_not_fail_the_image() {
    for case in ["500", "garbage"] {
        let registry = FakeRegistry::start(Image::standard(), move |req, conn| {
            if req.path.contains("/referrers/") {
                if case == "500" {
                    conn.error(req, 500, "UNKNOWN");
                } else {
                    conn.respond(
                        req,
                        200,
                        &[(
                            "Content-Type",
                            "application/vnd.oci.image.index.v1+json".to_string(),
                        )],
                        b"{\"manifests\": 42",
                    );
                }
                return true;
            }
            false
        });
        let run = ocimount(4, &["ls", &registry.by_tag(), "/"], QUICK);
        assert!(run.assert_ok().contains(FILE), "{case}: {}", run.stdout);
        assert!(
            run.stderr.contains("published layer indexes"),
            "{case}: {}",
            run.stderr
        );
    }
}

// ---------------------------------------------------------------------------
// A mounted image whose registry turns hostile

/// An `ocimount mount` of `image` on a fresh directory, unmounted on drop.
struct Mount<'a> {
    dir: tempfile::TempDir,
    ocimount: &'a Ocimount,
}

impl<'a> Mount<'a> {
    fn new(ocimount: &'a Ocimount, image: &str) -> Mount<'a> {
        let dir = tempfile::tempdir().unwrap();
        let mount = Mount { dir, ocimount };
        ocimount
            .run(
                &[
                    "mount",
                    "--quiet",
                    image,
                    mount.dir.path().to_str().unwrap(),
                ],
                QUICK,
            )
            .assert_ok();
        mount
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Mount<'_> {
    fn drop(&mut self) {
        let dir = self.dir.path().to_str().unwrap().to_string();
        let _ = self
            .ocimount
            .run(&["umount", "--lazy", &dir], Duration::from_secs(30));
        let _ = run_bounded(
            {
                let mut c = Command::new("umount");
                c.arg("-l").arg(&dir);
                c
            },
            Duration::from_secs(30),
        );
    }
}

/// `cat PATH`, bounded.
fn cat(path: &Path, limit: Duration) -> Run {
    let mut c = Command::new("cat");
    c.arg(path);
    run_bounded(c, limit)
}

/// Mount an image whose layers were indexed while the registry behaved,
/// then read a file whose span the registry now answers with `span`.
fn read_through_a_mount(span: fn(&Request, &mut Conn)) -> (Run, Run, Run, FakeRegistry) {
    let registry = FakeRegistry::start(Image::standard(), move |req, conn| {
        if layer_read(req, conn) == Some(LayerRead::Span) {
            span(req, conn);
            return true;
        }
        false
    });
    let ocimount = Ocimount::new(4);
    ocimount
        .run(&["ls", &registry.by_tag(), "/"], QUICK)
        .assert_ok();
    let mount = Mount::new(&ocimount, &registry.by_tag());
    let first = cat(&mount.path(FILE), QUICK);
    let second = cat(&mount.path(FILE), QUICK);
    let listing = {
        let mut c = Command::new("ls");
        c.arg(mount.dir.path());
        run_bounded(c, QUICK)
    };
    eprintln!("requests:\n{}", registry.shown());
    (first, second, listing, registry)
}

/// A span read that drips (1 byte a second): each read of the file fails
/// with EIO at about the registry timeout (4 s), and the mount lives on.
#[test]
fn a_mounted_file_whose_span_read_drips_fails_with_eio_in_time() {
    let (first, second, listing, _) = read_through_a_mount(drip_span);
    for run in [&first, &second] {
        assert!(!run.status.success(), "cat read {:?}", run.stdout);
        assert!(run.stderr.contains("Input/output error"), "{}", run.stderr);
        // Not 4 s: see the next test.
        run.assert_within(Duration::from_secs(12));
    }
    assert!(listing.assert_ok().contains(FILE), "{}", listing.stdout);
}

/// …and the first read takes one registry timeout, not two: the span's
/// prefetch (`will_need`, from `hint_compressed_range`) times out, its
/// failure is dropped, and the read itself then sends the same Range
/// request again and waits the whole timeout a second time.
#[test]
fn a_mounted_file_whose_span_read_drips_waits_one_timeout_not_two() {
    let (first, _, _, registry) = read_through_a_mount(drip_span);
    assert!(!first.status.success(), "cat read {:?}", first.stdout);
    assert!(
        first.elapsed <= Duration::from_secs(6),
        "the first read took {:?} with --registry-timeout 4; requests:\n{}",
        first.elapsed,
        registry.shown()
    );
}

/// A 206 for `req`'s range with the right headers, its bytes one a second.
fn drip_span(req: &Request, conn: &mut Conn) {
    let blob = conn.image.layer.clone();
    let (start, end) = req.range().unwrap();
    let end = end.map_or(blob.len() - 1, |e| (e as usize).min(blob.len() - 1));
    let range = format!("bytes {start}-{end}/{}", blob.len());
    let length = (end + 1 - start as usize).to_string();
    if conn.head(206, &[("Content-Range", range), ("Content-Length", length)]) {
        for byte in &blob[start as usize..=end] {
            if conn.stopped() || !conn.write(&[*byte]) {
                break;
            }
            thread::sleep(Duration::from_secs(1));
        }
    }
}

/// A span read answered with another range: EIO at once.
#[test]
fn a_mounted_file_whose_span_read_is_answered_with_other_bytes_fails_with_eio() {
    let (first, second, listing, _) = read_through_a_mount(other_range);
    for run in [&first, &second] {
        assert!(!run.status.success(), "cat read {:?}", run.stdout);
        assert!(run.stderr.contains("Input/output error"), "{}", run.stderr);
        run.assert_within(Duration::from_secs(5));
    }
    assert!(listing.assert_ok().contains(FILE), "{}", listing.stdout);
}

// ---------------------------------------------------------------------------
// The referrers API (distribution-spec 1.1), which Debian's registry 2.8
// lacks: tests/registry.rs covers the tag schema against it.

/// A registry with the referrers API that lists an index artifact for
/// the standard image: its one layer index is the blob `packed_digest` of
/// `declared` bytes (what the artifact's descriptor says), which `blob`
/// answers; everything else is a well-behaved registry's answer.
fn publishing_registry(
    packed_digest: String,
    declared: u64,
    blob: impl Fn(&Request, &mut Conn) + Send + Sync + 'static,
) -> FakeRegistry {
    let image = Image::standard();
    let artifact = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.ocimount.index.v1",
        "config": {
            "mediaType": "application/vnd.oci.empty.v1+json",
            "digest": sha256(b"{}"),
            "size": 2,
        },
        "layers": [{
            "mediaType": "application/vnd.ocimount.layer-index.v5+zstd",
            "digest": packed_digest,
            "size": declared,
            "annotations": { "io.ocimount.layer.digest": image.layer_digest },
        }],
        "subject": {
            "mediaType": OCI_MANIFEST,
            "digest": image.manifest_digest,
            "size": image.manifest.len(),
        },
    }))
    .unwrap();
    let artifact_digest = sha256(&artifact);
    let listed = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": OCI_MANIFEST,
            "digest": artifact_digest,
            "size": artifact.len(),
            "artifactType": "application/vnd.ocimount.index.v1",
        }],
    }))
    .unwrap();
    let subject = image.manifest_digest.clone();
    FakeRegistry::start(image, move |req, conn| {
        if req.path.contains(&format!("/referrers/{subject}")) {
            let index_type = "application/vnd.oci.image.index.v1+json".to_string();
            conn.respond(req, 200, &[("Content-Type", index_type)], &listed);
            return true;
        }
        if req.manifest_ref() == Some(artifact_digest.as_str()) {
            let manifest_type = OCI_MANIFEST.to_string();
            conn.respond(req, 200, &[("Content-Type", manifest_type)], &artifact);
            return true;
        }
        if req.blob_digest() == Some(packed_digest.as_str()) {
            blob(req, conn);
            return true;
        }
        false
    })
}

/// A registry with the referrers API lists an index artifact (made here
/// from the index a first node built): a second node with an empty cache
/// finds it through the API, never asks for the `sha256-…` tag, and reads
/// the file with a Range request and no pass over the layer.
#[test]
fn a_published_index_is_found_through_the_referrers_api() {
    let plain = FakeRegistry::start(Image::standard(), |_, _| false);
    let first = Ocimount::new(10);
    first.run(&["ls", &plain.by_tag(), "/"], QUICK).assert_ok();
    let image = Image::standard();
    let hex = image.layer_digest.trim_start_matches("sha256:").to_string();
    let index = std::fs::read(
        first
            .home
            .path()
            .join("cache/layers/sha256")
            .join(&hex)
            .join("index"),
    )
    .unwrap();
    let packed = zstd::bulk::compress(&index, 3).unwrap();
    let size = packed.len() as u64;
    let registry = publishing_registry(sha256(&packed), size, move |req, conn| {
        conn.respond(req, 200, &[], &packed);
    });
    let second = Ocimount::new(10);
    let run = second.run(&["cat", &registry.by_tag(), &format!("/{FILE}")], QUICK);
    assert_eq!(run.assert_ok().as_bytes(), FILE_CONTENT);
    let layer = registry.image.layer_digest.clone();
    assert_eq!(
        registry.count(|r| r.blob_digest() == Some(layer.as_str()) && r.range().is_none()),
        0,
        "the layer was streamed whole:\n{}",
        registry.shown()
    );
    assert!(
        registry.count(|r| r.blob_digest() == Some(layer.as_str()) && r.range().is_some()) >= 1,
        "{}",
        registry.shown()
    );
    assert_eq!(
        registry.count(|r| r.path.contains("/manifests/sha256-")),
        0,
        "the referrers tag was asked for although the API answered:\n{}",
        registry.shown()
    );
}

/// The file is read, and the layer was streamed whole: a full pass.
fn assert_full_pass(registry: &FakeRegistry, run: &Run, why: &str) {
    assert_eq!(run.assert_ok().as_bytes(), FILE_CONTENT);
    let layer = registry.image.layer_digest.clone();
    assert!(
        registry.count(|r| r.blob_digest() == Some(layer.as_str()) && r.range().is_none()) >= 1,
        "no full pass:\n{}",
        registry.shown()
    );
    for said in ["indexing it with a full pass", why] {
        assert!(
            run.stderr.contains(said),
            "stderr lacks {said:?}: {}",
            run.stderr
        );
    }
}

/// The artifact says its index is 60 MiB (under the bound for this
/// layer, 64 MiB plus 8 times its size) and the registry sends 10 KB of
/// it, then closes: the 60 MiB are never allocated, and the layer gets a
/// full pass.
#[test]
fn a_published_index_that_claims_60_mib_and_sends_10_kb_gets_a_full_pass() {
    let declared: u64 = 60 << 20;
    let registry = publishing_registry(sha256(b"never whole"), declared, move |_, conn| {
        let range = format!("bytes 0-{}/{declared}", declared - 1);
        // No Content-Length: the body ends when the connection closes.
        if conn.head(206, &[("Content-Range", range)]) {
            conn.write(&[0x28; 10_000]);
        }
    });
    let run = Ocimount::new(10)
        .measured()
        .run(&["cat", &registry.by_tag(), &format!("/{FILE}")], QUICK);
    assert_full_pass(
        &registry,
        &run,
        &format!("the body ends after 10000 of its {declared} bytes"),
    );
    let max_rss_kib = run.max_rss_kib.unwrap();
    assert!(max_rss_kib < 50 * 1024, "{max_rss_kib} KiB");
}

/// The published index is a zstd bomb whose frame does not say its size:
/// 1 GiB of zeros in a few tens of KB. Decompression stops at the bound
/// (64 MiB plus 8 times the layer's size), and the layer gets a full pass.
#[test]
fn a_published_zstd_bomb_gets_a_full_pass() {
    let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
    encoder.include_contentsize(false).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..1024 {
        encoder.write_all(&zeros).unwrap();
    }
    let packed = encoder.finish().unwrap();
    assert!(packed.len() < 200_000, "{} bytes packed", packed.len());
    let size = packed.len() as u64;
    let registry = publishing_registry(sha256(&packed), size, move |req, conn| {
        conn.respond(req, 200, &[], &packed);
    });
    let run = Ocimount::new(10)
        .measured()
        .run(&["cat", &registry.by_tag(), &format!("/{FILE}")], QUICK);
    let bound = (64u64 << 20) + 8 * registry.image.layer.len() as u64;
    assert_full_pass(
        &registry,
        &run,
        &format!("it decompresses past the {bound}-byte limit"),
    );
    // The bound's worth of zeros, and a little more: not the gigabyte.
    let max_rss_kib = run.max_rss_kib.unwrap();
    assert!(max_rss_kib < 200 * 1024, "{max_rss_kib} KiB");
}

/// A token endpoint that redirects to another host gets the user's
/// credentials; the host it redirects to does not (the token is then
/// asked of it anonymously, and it answers one).
#[test]
fn credentials_are_not_sent_where_a_token_endpoint_redirects() {
    let elsewhere = FakeRegistry::start(Image::standard(), |req, conn| {
        if req.path.starts_with("/token") {
            good_token(req, conn);
            return true;
        }
        false
    });
    let elsewhere_base = format!("http://{}", elsewhere.addr);
    let registry = bearer_registry(move |_, req, conn| {
        conn.respond(
            req,
            302,
            &[("Location", format!("{elsewhere_base}{}", req.path))],
            b"",
        );
    });
    let run = ocimount(
        10,
        &["--creds", "alice:s3cret", "ls", &registry.by_tag(), "/"],
        QUICK,
    );
    assert!(run.assert_ok().contains(FILE), "{}", run.stdout);
    assert!(
        registry.count(|r| r.path.starts_with("/token") && r.header("authorization").is_some()) > 0,
        "the token endpoint never got the credentials: {}",
        registry.shown()
    );
    assert!(elsewhere.count(|r| r.path.starts_with("/token")) > 0);
    let leaked = elsewhere.count(|r| r.header("authorization").is_some());
    assert_eq!(
        leaked,
        0,
        "credentials followed the redirect: {}",
        elsewhere.shown()
    );
}

/// A 401 from a host the registry redirected to does not choose where
/// the credentials go: no token is asked of a realm it names.
#[test]
fn a_401_from_a_redirect_target_is_not_answered_with_credentials() {
    let storage = FakeRegistry::start(Image::standard(), |req, conn| {
        if req.path.starts_with("/steal") {
            good_token(req, conn);
            return true;
        }
        if req.blob_digest().is_some() {
            let challenge = format!("Bearer realm=\"{}/steal\",service=\"x\"", conn.base);
            conn.respond(req, 401, &[("WWW-Authenticate", challenge)], b"");
            return true;
        }
        false
    });
    let storage_base = format!("http://{}", storage.addr);
    let registry = FakeRegistry::start(Image::standard(), move |req, conn| {
        if req.path.starts_with("/v2") && req.header("authorization").is_none() {
            let basic = "Basic realm=\"fake\"".to_string();
            conn.respond(req, 401, &[("WWW-Authenticate", basic)], b"");
            return true;
        }
        if req.blob_digest().is_some() {
            let location = format!("{storage_base}{}", req.path);
            conn.respond(req, 307, &[("Location", location)], b"");
            return true;
        }
        false
    });
    let run = ocimount(
        10,
        &["--creds", "alice:s3cret", "ls", &registry.by_tag(), "/"],
        QUICK,
    );
    run.assert_fails_with(&["HTTP 401"]);
    assert_eq!(
        storage.count(|r| r.path.starts_with("/steal")),
        0,
        "a token was asked of the redirect target's realm: {}",
        storage.shown()
    );
    assert_eq!(storage.count(|r| r.header("authorization").is_some()), 0);
}
