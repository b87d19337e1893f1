//! The registry test harness (tests/support/registry.rs) checked on its
//! own, with skopeo and curl as the clients: a real `docker-registry` with
//! each kind of auth and TLS, pushes that keep digests, the proxy's modes
//! and counters, restarts, and the cleanup. Also pins down what registry
//! 2.8 does that a client must expect (OCI artifacts, no referrers API,
//! Accept-driven manifests, its 416 answer).
//!
//! Needs docker-registry, skopeo, curl, openssl, apache2-utils and
//! python3-cryptography; a missing one fails the test and says so.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use support::registry::{http, ProxyMode, TestProxy, TestRegistry};
use support::{corpus, process_alive, run_bounded, wait_until};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const ACCEPT_ALL: &str = "Accept: application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

/// The layout of corpus image `name`, and a skopeo source for it.
fn layout(name: &str) -> PathBuf {
    corpus().image(name).layout.clone()
}

fn oci_src(name: &str) -> String {
    format!("oci:{}", layout(name).display())
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(500)])
        )
    })
}

fn blob_path(name: &str, digest: &str) -> PathBuf {
    layout(name)
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

/// The digest of the image in layout `name`'s index.json.
fn index_digest(name: &str) -> String {
    let index = json(&std::fs::read(layout(name).join("index.json")).unwrap());
    index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The layers (digest, size) of single-image layout `name`.
fn layers(name: &str) -> Vec<(String, u64)> {
    let manifest = json(&std::fs::read(blob_path(name, &index_digest(name))).unwrap());
    support::manifest_layers(&manifest)
}

/// A layer of debian-gzip of a few MB: big enough to be many TCP
/// segments, small enough to read whole quickly.
fn medium_layer() -> (String, u64) {
    layers("debian-gzip")
        .into_iter()
        .filter(|(_, size)| (1 << 20..64 << 20).contains(size))
        .min_by_key(|(_, size)| *size)
        .expect("debian-gzip has a layer between 1 and 64 MiB")
}

fn ok_output(out: &std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn plain_registry_serves_a_pushed_layout_unchanged() {
    let reg = TestRegistry::new();
    reg.push(&oci_src("debian-gzip"), "debian:gzip");

    let out = reg.skopeo_inspect("debian:gzip", false, None);
    let info = json(ok_output(&out, "skopeo inspect").as_bytes());
    assert_eq!(info["Digest"], index_digest("debian-gzip"));
    assert_eq!(info["RepoTags"], serde_json::json!(["gzip"]));

    // The manifest is the layout's, byte for byte.
    let digest = index_digest("debian-gzip");
    let m = reg.http("GET", "/v2/debian/manifests/gzip", &[ACCEPT_ALL], None);
    assert_eq!(m.status, 200);
    assert_eq!(m.header("Content-Type"), Some(OCI_MANIFEST));
    assert_eq!(m.header("Docker-Content-Digest"), Some(digest.as_str()));
    assert_eq!(
        m.body,
        std::fs::read(blob_path("debian-gzip", &digest)).unwrap()
    );
    // Every layer is there with its size (compression kept).
    for (layer, size) in layers("debian-gzip") {
        let h = reg.http("HEAD", &format!("/v2/debian/blobs/{layer}"), &[], None);
        assert_eq!(h.status, 200, "{layer}");
        assert_eq!(h.header("Content-Length"), Some(size.to_string().as_str()));
        assert!(reg.blob_data_path(&layer).is_file());
    }

    let requests = reg.access_requests();
    assert!(
        requests.contains(&"PUT /v2/debian/manifests/gzip HTTP/1.1".to_string()),
        "{requests:#?}"
    );
    assert!(reg
        .access_log()
        .iter()
        .any(|l| l.contains("\"HEAD /v2/debian/blobs/") && l.contains("\" 200 ")));
}

#[test]
fn push_keeps_indexes_and_docker_manifests() {
    let reg = TestRegistry::new();
    reg.push(&oci_src("multiarch"), "multi:latest");
    reg.push(&oci_src("tiny-opaque"), "tiny:1");
    for (repo_tag, name) in [("multi:latest", "multiarch"), ("tiny:1", "tiny-opaque")] {
        let raw = ok_output(&reg.skopeo_inspect(repo_tag, true, None), "inspect --raw");
        assert_eq!(
            raw.as_bytes(),
            std::fs::read(blob_path(name, &index_digest(name))).unwrap(),
            "{repo_tag} is not the layout's manifest"
        );
    }
}

#[test]
fn proxy_passes_ranges_and_counts_what_it_relays() {
    let reg = TestRegistry::new();
    reg.push(&oci_src("debian-gzip"), "debian:gzip");
    let proxy = TestProxy::new(&reg, ProxyMode::Pass);
    let (layer, size) = medium_layer();
    let url = format!("{}/v2/debian/blobs/{layer}", proxy.url());
    let local = std::fs::read(blob_path("debian-gzip", &layer)).unwrap();

    let r = http("GET", &url, &["Range: bytes=0-99"], None, &[]);
    assert_eq!((r.curl_exit, r.status), (0, 206));
    assert_eq!(r.body, local[..100]);
    assert_eq!(
        r.header("Content-Range"),
        Some(format!("bytes 0-99/{size}").as_str())
    );
    assert_eq!(proxy.blob_body_bytes(), 100);
    assert_eq!(proxy.body_bytes(), 100);
    assert_eq!(
        proxy.requests(),
        vec![format!("GET /v2/debian/blobs/{layer} Range: bytes=0-99")]
    );

    // A whole blob, then a manifest: only the first is a blob body.
    proxy.reset_counters();
    let r = http("GET", &url, &[], None, &[]);
    assert_eq!((r.curl_exit, r.status), (0, 200));
    assert_eq!(r.body, local);
    let m = http(
        "GET",
        &format!("{}/v2/debian/manifests/gzip", proxy.url()),
        &[ACCEPT_ALL],
        None,
        &[],
    );
    assert_eq!(m.status, 200);
    assert_eq!(proxy.blob_body_bytes(), size);
    assert_eq!(proxy.body_bytes(), size + m.body.len() as u64);

    // HEAD relays headers only.
    proxy.reset_counters();
    let h = http("HEAD", &url, &[], None, &[]);
    assert_eq!(h.status, 200);
    assert_eq!(h.header("Content-Length"), Some(size.to_string().as_str()));
    assert_eq!(proxy.body_bytes(), 0);
    assert_eq!(proxy.records()[0].method, "HEAD");
}

#[test]
fn proxy_ignore_range_answers_whole_blobs() {
    let reg = TestRegistry::new();
    reg.push(&oci_src("debian-gzip"), "debian:gzip");
    let proxy = TestProxy::new(&reg, ProxyMode::IgnoreRange);
    let (layer, size) = medium_layer();
    let url = format!("{}/v2/debian/blobs/{layer}", proxy.url());

    let r = http("GET", &url, &["Range: bytes=0-99"], None, &[]);
    assert_eq!((r.curl_exit, r.status), (0, 200));
    assert_eq!(r.body.len() as u64, size);
    assert_eq!(r.header("Content-Range"), None);
    assert_eq!(proxy.blob_body_bytes(), size);
    // The record shows what the client asked for.
    assert_eq!(
        proxy.requests(),
        vec![format!("GET /v2/debian/blobs/{layer} Range: bytes=0-99")]
    );

    // Switched at run time.
    proxy.set_mode(ProxyMode::Pass);
    proxy.reset_counters();
    let r = http("GET", &url, &["Range: bytes=10-19"], None, &[]);
    assert_eq!((r.status, r.body.len()), (206, 10));
    assert_eq!(proxy.blob_body_bytes(), 10);
}

#[test]
fn proxy_keeps_client_connections_alive() {
    let reg = TestRegistry::new();
    reg.push(&oci_src("tiny-opaque"), "tiny:1");
    let proxy = TestProxy::new(&reg, ProxyMode::Pass);
    let (layer, size) = layers("tiny-opaque")[0].clone();
    let url = format!("{}/v2/tiny/blobs/{layer}", proxy.url());
    // One curl, three requests (a range, a whole body, a HEAD): one
    // connection.
    let out = run_bounded(
        Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "60",
                "-w",
                "%{http_code} %{num_connects} %{size_download}\n",
            ])
            .args(["-r", "0-9", "-o", "/dev/null", &url])
            .args([
                "--next",
                "-sS",
                "-w",
                "%{http_code} %{num_connects} %{size_download}\n",
            ])
            .args(["-o", "/dev/null", &url])
            .args([
                "--next",
                "-sS",
                "-I",
                "-w",
                "%{http_code} %{num_connects}\n",
            ])
            .args(["-o", "/dev/null", &url]),
        Duration::from_secs(90),
    );
    let text = ok_output(&out, "curl");
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        vec![
            "206 1 10".to_string(),
            format!("200 0 {size}"),
            "200 0".to_string()
        ]
    );
    assert_eq!(proxy.connections(), 1);
    assert_eq!(proxy.blob_body_bytes(), 10 + size);
}

/// A stand-in upstream for the proxy's framing: `/chunked` answers with a
/// chunked body, `/eof` with a body delimited by closing the connection,
/// `PUT /echo` with the length of the body it got. Serves `n` connections.
fn fake_upstream(n: usize) -> (u16, std::thread::JoinHandle<()>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        for _ in 0..n {
            let (stream, _) = listener.accept().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = Vec::new();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line == "\r\n" || line.is_empty() {
                    break;
                }
                head.push(line);
            }
            let length: usize = head
                .iter()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .map_or(0, |v| v.trim().parse().unwrap());
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let answer = if head[0].starts_with("GET /chunked ") {
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                 5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
                    .to_string()
            } else if head[0].starts_with("GET /eof ") {
                "HTTP/1.1 200 OK\r\n\r\nuntil close".to_string()
            } else {
                let text = format!("got {}", body.len());
                format!(
                    "HTTP/1.1 201 Created\r\nContent-Length: {}\r\n\r\n{text}",
                    text.len()
                )
            };
            let mut stream = stream;
            stream.write_all(answer.as_bytes()).unwrap();
        }
    });
    (port, server)
}

#[test]
fn proxy_relays_chunked_close_delimited_and_request_bodies() {
    let (port, server) = fake_upstream(4);
    let proxy = TestProxy::to_port(port, ProxyMode::Pass);
    let url = proxy.url();
    let format = "%{http_code} %{num_connects} %{size_download}\n";
    let out = run_bounded(
        Command::new("curl")
            .args(["-sS", "--max-time", "30", "-w", format])
            .args([&format!("{url}/chunked"), &format!("{url}/eof")])
            .args([&format!("{url}/chunked")])
            .args(["--next", "-sS", "--max-time", "30", "-w", format])
            .args(["-X", "PUT", "--data-binary", "0123456789"])
            .arg(format!("{url}/echo")),
        Duration::from_secs(60),
    );
    let text = ok_output(&out, "curl");
    // The chunked answer keeps the connection, the close-delimited one
    // ends it, so the third request reconnects; its successor reuses it.
    assert_eq!(
        text,
        "hello world200 1 11\nuntil close200 0 11\nhello world200 1 11\ngot 10201 0 6\n"
    );
    assert_eq!(proxy.body_bytes(), 11 + 11 + 11 + 6);
    assert_eq!(proxy.blob_body_bytes(), 0);
    assert_eq!(proxy.connections(), 2);
    assert_eq!(
        proxy.requests(),
        vec!["GET /chunked", "GET /eof", "GET /chunked", "PUT /echo"]
    );
    server.join().unwrap();
}

#[test]
fn proxy_redirects_blob_reads_to_the_registry_port() {
    let reg = TestRegistry::new();
    reg.push(&oci_src("debian-gzip"), "debian:gzip");
    let proxy = TestProxy::new(&reg, ProxyMode::RedirectBlobs);
    let (layer, size) = medium_layer();
    let path = format!("/v2/debian/blobs/{layer}");

    let r = http("GET", &format!("{}{path}", proxy.url()), &[], None, &[]);
    assert_eq!(r.status, 307);
    let location = format!("http://127.0.0.1:{}{path}", reg.port());
    assert_eq!(r.header("Location"), Some(location.as_str()));
    assert!(r.body.is_empty());
    let h = http("HEAD", &format!("{}{path}", proxy.url()), &[], None, &[]);
    assert_eq!(h.status, 307);

    // Followed, the range is answered by the registry itself.
    let r = http(
        "GET",
        &format!("{}{path}", proxy.url()),
        &["Range: bytes=100-199"],
        None,
        &["-L"],
    );
    assert_eq!((r.curl_exit, r.status), (0, 206));
    assert_eq!(
        r.header("Content-Range"),
        Some(format!("bytes 100-199/{size}").as_str())
    );
    assert_eq!(proxy.blob_body_bytes(), 0);
    assert!(reg
        .access_log()
        .iter()
        .any(|l| l.contains(&format!("\"GET {path} HTTP/1.1\" 206 100 "))));

    // Manifests are still relayed.
    let m = http(
        "GET",
        &format!("{}/v2/debian/manifests/gzip", proxy.url()),
        &[ACCEPT_ALL],
        None,
        &[],
    );
    assert_eq!(m.status, 200);
    assert_eq!(proxy.body_bytes(), m.body.len() as u64);
}

#[test]
fn proxy_outage_and_cut_bodies() {
    let reg = TestRegistry::new();
    reg.push(&oci_src("debian-gzip"), "debian:gzip");
    let proxy = TestProxy::new(&reg, ProxyMode::Down);
    let (layer, _) = medium_layer();
    let url = format!("{}/v2/debian/blobs/{layer}", proxy.url());

    let r = http("GET", &url, &[], None, &[]);
    assert_eq!(r.status, 0);
    assert!(
        [52, 56].contains(&r.curl_exit),
        "curl should get no reply: {r:?}"
    );
    assert_eq!(proxy.connections(), 1);

    proxy.set_mode(ProxyMode::CutBodiesAfter(1000));
    let r = http("GET", &url, &[], None, &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.curl_exit, 18, "curl should see a short body: {r:?}");
    assert_eq!(r.body.len(), 1000);
    assert_eq!(proxy.blob_body_bytes(), 1000);

    proxy.set_mode(ProxyMode::Pass);
    let r = http("GET", &url, &["Range: bytes=0-0"], None, &[]);
    assert_eq!((r.curl_exit, r.status, r.body.len()), (0, 206, 1));
}

#[test]
fn proxy_set_down_cuts_a_transfer_in_flight() {
    let reg = TestRegistry::new();
    reg.push(&oci_src("debian-gzip"), "debian:gzip");
    let proxy = TestProxy::new(&reg, ProxyMode::Pass);
    let (layer, size) = layers("debian-gzip")
        .into_iter()
        .max_by_key(|(_, s)| *s)
        .unwrap();
    let url = format!("{}/v2/debian/blobs/{layer}", proxy.url());
    // A slow reader (1 MB/s) of the biggest layer, cut once it started.
    let reader = std::thread::spawn(move || http("GET", &url, &[], None, &["--limit-rate", "1M"]));
    assert!(
        wait_until(Duration::from_secs(20), || proxy.blob_body_bytes() > 0),
        "the transfer did not start"
    );
    proxy.set_mode(ProxyMode::Down);
    let r = reader.join().unwrap();
    assert_eq!(r.status, 200);
    assert_ne!(r.curl_exit, 0);
    assert!((r.body.len() as u64) < size);
    assert!(proxy.blob_body_bytes() < size);
}

#[test]
fn htpasswd_registry_wants_credentials() {
    let reg = TestRegistry::builder()
        .basic_auth("alice", "s3cret")
        .start();
    let anon = reg.http("GET", "/v2/", &[], None);
    assert_eq!(anon.status, 401);
    assert_eq!(
        anon.header("WWW-Authenticate"),
        Some("Basic realm=\"ocimount-test\"")
    );
    let good = http(
        "GET",
        &format!("{}/v2/", reg.url()),
        &[],
        None,
        &["-u", "alice:s3cret"],
    );
    assert_eq!(good.status, 200);
    let bad = http(
        "GET",
        &format!("{}/v2/", reg.url()),
        &[],
        None,
        &["-u", "alice:nope"],
    );
    assert_eq!(bad.status, 401);

    let denied = reg.try_push(&oci_src("tiny-opaque"), "tiny:1", None);
    assert!(!denied.status.success(), "anonymous push went through");
    reg.push(&oci_src("tiny-opaque"), "tiny:1");
    let out = reg.skopeo_inspect("tiny:1", false, reg.creds().as_deref());
    let info = json(ok_output(&out, "skopeo inspect with creds").as_bytes());
    assert_eq!(info["Digest"], index_digest("tiny-opaque"));
    assert!(!reg.skopeo_inspect("tiny:1", false, None).status.success());

    // The proxy passes Basic auth through.
    let proxy = TestProxy::new(&reg, ProxyMode::Pass);
    let auth = reg.auth_header("tiny", "pull").unwrap();
    let url = format!("{}/v2/tiny/manifests/1", proxy.url());
    assert_eq!(http("GET", &url, &[ACCEPT_ALL], None, &[]).status, 401);
    assert_eq!(
        http("GET", &url, &[ACCEPT_ALL, &auth], None, &[]).status,
        200
    );
    assert_eq!(
        proxy
            .records()
            .iter()
            .map(|r| r.authorization)
            .collect::<Vec<_>>(),
        vec![false, true]
    );

    // auth.json as docker and containers write it.
    let auth_json = reg.dir().join("auth.json");
    reg.write_auth_json(&auth_json);
    let out = run_bounded(
        Command::new("skopeo")
            .args(["inspect", "--tls-verify=false", "--authfile"])
            .arg(&auth_json)
            .arg(reg.docker_ref("tiny:1")),
        Duration::from_secs(60),
    );
    ok_output(&out, "skopeo inspect --authfile");
}

#[test]
fn tls_registry_is_verified_with_its_ca() {
    let reg = TestRegistry::builder().tls().start();
    assert!(reg.url().starts_with("https://127.0.0.1:"));
    let ca = reg.ca_pem().unwrap();
    let ca = ca.to_str().unwrap();
    for host in ["127.0.0.1", "localhost"] {
        let url = format!("https://{host}:{}/v2/", reg.port());
        let r = http("GET", &url, &[], None, &["--cacert", ca]);
        assert_eq!((r.curl_exit, r.status), (0, 200), "{url}: {r:?}");
        // Without the CA the certificate is refused.
        let r = http("GET", &url, &[], None, &[]);
        assert_eq!((r.curl_exit, r.status), (60, 0), "{url}: {r:?}");
    }
    let certs_d = reg.certs_d().unwrap();
    assert!(certs_d
        .join(format!("127.0.0.1:{}/ca.crt", reg.port()))
        .is_file());

    reg.push(&oci_src("tiny-opaque"), "tiny:1");
    let out = reg.skopeo_inspect("tiny:1", false, None);
    let info = json(ok_output(&out, "skopeo inspect over TLS").as_bytes());
    assert_eq!(info["Digest"], index_digest("tiny-opaque"));
    // The certificate: IP and DNS names, issued by the CA.
    let text = run_bounded(
        Command::new("openssl")
            .args(["x509", "-noout", "-text", "-in"])
            .arg(reg.dir().join("server.crt")),
        Duration::from_secs(30),
    );
    let text = ok_output(&text, "openssl x509");
    assert!(text.contains("IP Address:127.0.0.1"), "{text}");
    assert!(text.contains("DNS:localhost"), "{text}");
    assert!(text.contains("CA:FALSE"), "{text}");
}

#[test]
fn tls_combines_with_basic_and_token_auth() {
    let basic = TestRegistry::builder()
        .tls()
        .basic_auth("alice", "s3cret")
        .start();
    let token = TestRegistry::builder()
        .tls()
        .token_auth("bob", "hunter2")
        .start();
    for reg in [&basic, &token] {
        assert_eq!(reg.http("GET", "/v2/", &[], None).status, 401);
        reg.push(&oci_src("tiny-opaque"), "tiny:1");
        let out = reg.skopeo_inspect("tiny:1", false, reg.creds().as_deref());
        let info = json(ok_output(&out, "skopeo inspect over TLS with creds").as_bytes());
        assert_eq!(info["Digest"], index_digest("tiny-opaque"));
        let auth = reg.auth_header("tiny", "pull").unwrap();
        let m = reg.http("GET", "/v2/tiny/manifests/1", &[ACCEPT_ALL, &auth], None);
        assert_eq!(m.status, 200);
    }
    // The token server itself is plain HTTP.
    assert!(token.token_url().unwrap().starts_with("http://127.0.0.1:"));
}

#[test]
fn token_registry_issues_and_checks_tokens() {
    let reg = TestRegistry::builder().token_auth("bob", "hunter2").start();
    let realm = reg.token_url().unwrap();
    let challenge = reg.http("GET", "/v2/", &[], None);
    assert_eq!(challenge.status, 401);
    assert_eq!(
        challenge.header("WWW-Authenticate"),
        Some(
            format!(
                "Bearer realm=\"{realm}\",service=\"{}\"",
                support::registry::TOKEN_SERVICE
            )
            .as_str()
        )
    );

    reg.push(&oci_src("debian-gzip"), "debian:gzip");
    // Anonymous pull works (skopeo does the token dance itself)…
    let out = reg.skopeo_inspect("debian:gzip", false, None);
    let info = json(ok_output(&out, "anonymous skopeo inspect").as_bytes());
    assert_eq!(info["Digest"], index_digest("debian-gzip"));
    // … anonymous push does not.
    let denied = reg.try_push(&oci_src("tiny-opaque"), "tiny:1", None);
    assert!(!denied.status.success(), "anonymous push went through");

    // The token endpoint by hand.
    let pull = "repository:debian:pull,push";
    let t = http(
        "GET",
        &format!(
            "{realm}?service={}&scope={pull}",
            support::registry::TOKEN_SERVICE
        ),
        &[],
        None,
        &[],
    );
    assert_eq!(t.status, 200);
    let body = json(&t.body);
    assert_eq!(body["expires_in"], 300);
    assert_eq!(body["token"], body["access_token"]);
    let bad = http(
        "GET",
        &format!(
            "{realm}?service={}&scope={pull}",
            support::registry::TOKEN_SERVICE
        ),
        &[],
        None,
        &["-u", "bob:wrong"],
    );
    assert_eq!(bad.status, 401);
    let log = reg.token_log();
    assert!(
        log.contains("user=anonymous status=200 granted=repository:debian:pull\n"),
        "{log}"
    );
    assert!(log.contains("user=invalid status=401"), "{log}");

    // A pull token reads the manifest and a blob range; it cannot push.
    let anon = reg
        .request_token(&["repository:debian:pull"], false)
        .unwrap();
    let bearer = format!("Authorization: Bearer {anon}");
    let m = reg.http(
        "GET",
        "/v2/debian/manifests/gzip",
        &[ACCEPT_ALL, &bearer],
        None,
    );
    assert_eq!(m.status, 200);
    let (layer, _) = medium_layer();
    let r = reg.http(
        "GET",
        &format!("/v2/debian/blobs/{layer}"),
        &[&bearer, "Range: bytes=0-99"],
        None,
    );
    assert_eq!((r.status, r.body.len()), (206, 100));
    let up = reg.http("POST", "/v2/debian/blobs/uploads/", &[&bearer], None);
    assert_eq!(up.status, 401);
    // A token for another repository does not open this one.
    let other = reg
        .request_token(&["repository:other:pull"], false)
        .unwrap();
    let m = reg.http(
        "GET",
        "/v2/debian/manifests/gzip",
        &[ACCEPT_ALL, &format!("Authorization: Bearer {other}")],
        None,
    );
    assert_eq!(m.status, 401);
    // The user's token pushes.
    let push = reg.auth_header("debian", "pull,push").unwrap();
    let up = reg.http("POST", "/v2/debian/blobs/uploads/", &[&push], None);
    assert_eq!(up.status, 202);

    // OAuth2 password grant (POST), as containerd sends it.
    let form = format!(
        "grant_type=password&username=bob&password=hunter2&service={}&scope={pull}",
        support::registry::TOKEN_SERVICE
    );
    let t = http("POST", &realm, &[], Some(form.as_bytes()), &[]);
    assert_eq!(t.status, 200);
    assert!(json(&t.body)["access_token"].is_string());
}

#[test]
fn token_registry_without_anonymous_pull() {
    let reg = TestRegistry::builder()
        .token_auth("bob", "hunter2")
        .anonymous_pull(false)
        .start();
    reg.push(&oci_src("tiny-opaque"), "tiny:1");
    assert!(reg
        .request_token(&["repository:tiny:pull"], false)
        .is_none());
    assert!(!reg.skopeo_inspect("tiny:1", false, None).status.success());
    let out = reg.skopeo_inspect("tiny:1", false, reg.creds().as_deref());
    ok_output(&out, "skopeo inspect with creds");
}

#[test]
fn token_ttl_is_what_the_registry_enforces() {
    let reg = TestRegistry::builder()
        .token_auth("bob", "hunter2")
        .token_ttl(3)
        .start();
    reg.push(&oci_src("tiny-opaque"), "tiny:1");
    let issued = Instant::now();
    let token = reg.request_token(&["repository:tiny:pull"], false).unwrap();
    let bearer = format!("Authorization: Bearer {token}");
    let get = || {
        reg.http("GET", "/v2/tiny/manifests/1", &[ACCEPT_ALL, &bearer], None)
            .status
    };
    assert_eq!(get(), 200);
    assert!(
        wait_until(Duration::from_secs(10), || get() == 401),
        "the token was still accepted 10 s after its 3 s"
    );
    assert!(issued.elapsed() >= Duration::from_secs(2));
}

#[test]
fn stop_and_start_keep_images_and_port() {
    let mut reg = TestRegistry::new();
    reg.push(&oci_src("tiny-opaque"), "tiny:1");
    let port = reg.port();
    let first = reg.pid().unwrap();
    reg.stop();
    assert!(!reg.is_running());
    assert!(!process_alive(first));
    let r = reg.http("GET", "/v2/", &[], None);
    assert_eq!((r.curl_exit, r.status), (7, 0), "refused while stopped");

    reg.start();
    assert_eq!(reg.port(), port);
    assert!(reg.is_running());
    let out = reg.skopeo_inspect("tiny:1", true, None);
    assert_eq!(
        ok_output(&out, "inspect after restart").as_bytes(),
        std::fs::read(blob_path("tiny-opaque", &index_digest("tiny-opaque"))).unwrap()
    );
    // The log covers both runs.
    assert_eq!(reg.log().matches("listening on").count(), 2);
}

#[test]
fn drop_kills_the_registry_and_the_token_server() {
    let reg = TestRegistry::builder().token_auth("bob", "hunter2").start();
    let pids = [reg.pid().unwrap(), reg.token_server_pid().unwrap()];
    let dir = reg.dir().to_path_buf();
    assert!(pids.iter().all(|&p| process_alive(p)));
    drop(reg);
    assert!(pids.iter().all(|&p| !process_alive(p)), "{pids:?} outlived");
    assert!(!dir.exists());
}

/// What Debian's registry 2.8 does that a client must cope with; each
/// assertion is a fact about 2.8, not a wish.
#[test]
fn registry_2_8_behaviour_clients_must_expect() {
    let reg = TestRegistry::new();
    reg.push(&oci_src("debian-gzip"), "art:base");
    reg.push(&oci_src("debian-docker"), "art:docker");
    reg.push(&oci_src("multiarch"), "art:multi");
    let subject = index_digest("debian-gzip");

    // An OCI artifact: artifactType, the empty config (with inline data),
    // a text/plain layer and a subject: accepted and served back verbatim.
    let empty = reg.upload_blob("art", b"{}");
    assert_eq!(
        empty,
        "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    );
    let payload = reg.upload_blob("art", b"hello\n");
    let artifact = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"application/vnd.example.sbom.v1","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{empty}","size":2,"data":"e30="}},"layers":[{{"mediaType":"text/plain","digest":"{payload}","size":6}}],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{subject}","size":1129}},"annotations":{{"a":"b"}}}}"#
    );
    let put = reg.put_manifest("art", "sbom", OCI_MANIFEST, artifact.as_bytes());
    assert_eq!(put.status, 201, "{put:?}");
    let digest = support::registry::sha256_digest(artifact.as_bytes());
    assert_eq!(put.header("Docker-Content-Digest"), Some(digest.as_str()));
    // 2.8 knows nothing of the referrers API: no OCI-Subject answer …
    assert_eq!(put.header("OCI-Subject"), None);
    let get = reg.http(
        "GET",
        &format!("/v2/art/manifests/{digest}"),
        &[ACCEPT_ALL],
        None,
    );
    assert_eq!(get.status, 200);
    assert_eq!(get.header("Content-Type"), Some(OCI_MANIFEST));
    assert_eq!(get.body, artifact.as_bytes());
    // … and no referrers endpoint (a plain-text 404 of its router).
    let referrers = reg.http("GET", &format!("/v2/art/referrers/{subject}"), &[], None);
    assert_eq!(referrers.status, 404);
    assert_eq!(referrers.text(), "404 page not found\n");

    // A custom config media type, no top-level mediaType and a subject
    // that does not exist: accepted too (only config and layers must be
    // present).
    let config = reg.upload_blob("art", br#"{"x":1}"#);
    let custom = format!(
        r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.example.config.v1+json","digest":"{config}","size":7}},"layers":[{{"mediaType":"application/vnd.example.data","digest":"{payload}","size":6}}],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"sha256:{zeros}","size":1}}}}"#,
        zeros = "0".repeat(64)
    );
    let put = reg.put_manifest("art", "custom", OCI_MANIFEST, custom.as_bytes());
    assert_eq!(put.status, 201, "{put:?}");
    let get = reg.http("GET", "/v2/art/manifests/custom", &[ACCEPT_ALL], None);
    assert_eq!(get.header("Content-Type"), Some(OCI_MANIFEST));
    // A layer that is not in the repository is refused.
    let missing = custom.replace(&payload[7..], &"f".repeat(64));
    let put = reg.put_manifest("art", "missing", OCI_MANIFEST, missing.as_bytes());
    assert_eq!(put.status, 400);
    assert!(put.text().contains("MANIFEST_BLOB_UNKNOWN"), "{put:?}");

    // Without an Accept that names OCI types, an OCI manifest or index is
    // a 404 (GET and HEAD) …
    let get = reg.http("GET", "/v2/art/manifests/base", &[], None);
    assert_eq!(get.status, 404);
    assert!(get.text().contains("MANIFEST_UNKNOWN"), "{get:?}");
    assert_eq!(
        reg.http("HEAD", "/v2/art/manifests/base", &[], None).status,
        404
    );
    let only_manifest = format!("Accept: {OCI_MANIFEST}");
    let get = reg.http("GET", "/v2/art/manifests/multi", &[&only_manifest], None);
    assert_eq!(get.status, 404);
    // … and a Docker schema 2 manifest is rewritten to schema 1, with
    // another digest.
    let get = reg.http("GET", "/v2/art/manifests/docker", &[], None);
    assert_eq!(get.status, 200);
    assert_eq!(
        get.header("Content-Type"),
        Some("application/vnd.docker.distribution.manifest.v1+prettyjws")
    );
    assert_ne!(
        get.header("Docker-Content-Digest"),
        Some(index_digest("debian-docker").as_str())
    );
    let get = reg.http("GET", "/v2/art/manifests/docker", &[ACCEPT_ALL], None);
    assert_eq!(
        get.header("Docker-Content-Digest"),
        Some(index_digest("debian-docker").as_str())
    );

    // Blobs: ranges as asked, a suffix past the end is 416 — whose
    // Content-Length is the blob's size while the body is a short error
    // text, so the connection breaks (curl: 18). Multiple ranges come back
    // as multipart/byteranges.
    let (layer, size) = medium_layer();
    let path = format!("/v2/art/blobs/{layer}");
    let r = reg.http(
        "GET",
        &path,
        &[&format!("Range: bytes={}-", size - 50)],
        None,
    );
    assert_eq!((r.status, r.body.len()), (206, 50));
    let r = reg.http("GET", &path, &[&format!("Range: bytes={size}-")], None);
    assert_eq!(r.status, 416);
    assert_eq!(
        r.header("Content-Range"),
        Some(format!("bytes */{size}").as_str())
    );
    assert_eq!(r.header("Content-Length"), Some(size.to_string().as_str()));
    assert_eq!(r.curl_exit, 18);
    assert_eq!(r.text(), "invalid range: failed to overlap\n");
    let r = reg.http("GET", &path, &["Range: bytes=0-9,20-29"], None);
    assert_eq!(r.status, 206);
    assert!(r
        .header("Content-Type")
        .unwrap()
        .starts_with("multipart/byteranges"));
    let h = reg.http("HEAD", &path, &[], None);
    assert_eq!(h.header("Accept-Ranges"), Some("bytes"));
    assert_eq!(h.header("Docker-Content-Digest"), Some(layer.as_str()));
}
