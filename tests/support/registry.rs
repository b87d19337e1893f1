//! A real OCI registry for the registry tests, and a proxy to put in front
//! of it.
//!
//! [`TestRegistry`] runs Debian's `docker-registry` (the CNCF distribution
//! registry, 2.8) on 127.0.0.1 with its own config, storage and log in a
//! temporary directory: anonymous plain HTTP by default, or with htpasswd
//! Basic auth, TLS from a CA made for it, or bearer tokens from
//! `token_server.py` (see [`RegistryBuilder`]). Images get in with
//! [`TestRegistry::push`] (skopeo, digests preserved); [`TestRegistry::stop`]
//! and [`TestRegistry::start`] kill and restart it on the same port and
//! storage.
//!
//! [`TestProxy`] is an HTTP/1.1 relay in a thread that a client uses as if
//! it were the registry; it can ignore `Range`, redirect blob reads, cut
//! bodies short or refuse service ([`ProxyMode`]), and counts what it
//! relays.
//!
//! Only std and tempfile; the tools are Debian's: docker-registry, skopeo,
//! curl, openssl, apache2-utils (htpasswd), python3-cryptography (for
//! /usr/bin/python3). A test that needs one that is missing fails and says
//! which package to install.
//!
//! Every child process is killed when its owner is dropped, and also when
//! the test process dies: they are started from one thread that lives as
//! long as the process, with `PR_SET_PDEATHSIG`, so a registry kept in a
//! `static` (shared by the tests of one binary; statics are never dropped)
//! dies with the test binary too, leaving only its temporary directory.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{run_bounded, REPO};

/// The `service` (token audience) of a token-auth registry.
pub const TOKEN_SERVICE: &str = "ocimount-test-registry";
/// The `issuer` of the tokens a token-auth registry trusts.
pub const TOKEN_ISSUER: &str = "ocimount-test-token-issuer";
/// The Python that has Debian's python3-cryptography (a pyenv `python3`
/// earlier on PATH may not).
pub const PYTHON: &str = "/usr/bin/python3";

/// How long a registry or token server may take to come up.
const READY_LIMIT: Duration = Duration::from_secs(20);
/// Bound on one skopeo copy.
const PUSH_LIMIT: Duration = Duration::from_secs(300);
/// Bound on one curl, openssl, htpasswd… run.
const TOOL_LIMIT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------
// Tools and processes

/// Fail the test (never skip it) when `program` is not installed.
pub fn require(program: &str, package: &str) {
    assert!(
        find_program(program).is_some(),
        "the registry tests need `{program}`: apt-get install {package}"
    );
}

fn find_program(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Path::new(program).is_file().then(|| PathBuf::from(program));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

fn require_python_cryptography() {
    require(PYTHON, "python3");
    let out = run_bounded(
        Command::new(PYTHON).args(["-c", "import cryptography"]),
        TOOL_LIMIT,
    );
    assert!(
        out.status.success(),
        "the token-auth registry tests need python3-cryptography for {PYTHON}: \
         apt-get install python3-cryptography ({})",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Run a tool that must succeed; its stdout.
fn tool(cmd: &mut Command) -> Vec<u8> {
    let shown = format!("{cmd:?}");
    let out = run_bounded(cmd, TOOL_LIMIT);
    assert!(
        out.status.success(),
        "{shown} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

extern "C" {
    fn prctl(option: std::os::raw::c_int, ...) -> std::os::raw::c_int;
}
const PR_SET_PDEATHSIG: std::os::raw::c_int = 1;
const SIGKILL: std::os::raw::c_ulong = 9;

/// Spawn `cmd` so that it is SIGKILLed when the test process exits, even
/// by a signal. The parent-death signal fires when the *thread* that forked
/// the child ends, so every child is forked by one thread that lives as
/// long as the process.
fn spawn_guarded(mut cmd: Command) -> io::Result<Child> {
    type Job = (Command, mpsc::Sender<io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("test-child-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("cannot start the spawner thread");
        Mutex::new(tx)
    });
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            Ok(())
        });
    }
    let (tx, rx) = mpsc::channel();
    spawner
        .lock()
        .unwrap()
        .send((cmd, tx))
        .expect("spawner thread gone");
    rx.recv().expect("spawner thread gone")
}

/// SIGKILL and reap a child, bounded.
fn kill_child(child: &mut Child) {
    let _ = child.kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!("process {} did not die within 10 s of SIGKILL", child.id());
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("cannot bind 127.0.0.1:0")
        .port()
}

/// Append-mode handle on a log file, for a child's stdout and stderr.
fn log_stdio(path: &Path) -> (Stdio, Stdio) {
    let open = || {
        File::options()
            .create(true)
            .append(true)
            .open(path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()))
    };
    (Stdio::from(open()), Stdio::from(open()))
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// What was appended to `path` after byte `from`.
fn read_from(path: &Path, from: u64) -> String {
    let text = fs::read(path).unwrap_or_default();
    String::from_utf8_lossy(text.get(from as usize..).unwrap_or_default()).into_owned()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Standard base64 with padding (for Basic auth and auth.json).
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `sha256:HEX` of `data` (with coreutils' sha256sum: no hashing crate).
pub fn sha256_digest(data: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data");
    fs::write(&file, data).unwrap();
    let out = tool(Command::new("sha256sum").arg(&file));
    let text = String::from_utf8(out).unwrap();
    format!("sha256:{}", text.split_whitespace().next().unwrap())
}

// ---------------------------------------------------------------------------
// HTTP through curl

/// One HTTP exchange made with curl: the last response when redirects were
/// followed.
#[derive(Clone, Debug)]
pub struct HttpReply {
    /// 0 when no response came (curl_exit says why).
    pub status: u16,
    /// Header lines of the response, in order, names as sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// curl's exit code: 0, or e.g. 7 (refused), 18 (body cut short),
    /// 52 (empty reply), 56 (receive failure), 60 (certificate).
    pub curl_exit: i32,
    /// curl's stderr.
    pub stderr: String,
}

impl HttpReply {
    /// The first header named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `curl -sS -X METHOD [-H header]… [--data-binary body] [curl_opts]… URL`,
/// bounded to two minutes. A failed transfer is not a panic: see
/// [`HttpReply::curl_exit`].
pub fn http(
    method: &str,
    url: &str,
    headers: &[&str],
    body: Option<&[u8]>,
    curl_opts: &[&str],
) -> HttpReply {
    require("curl", "curl");
    let dir = tempfile::tempdir().unwrap();
    let head_file = dir.path().join("head");
    let body_file = dir.path().join("body");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "100", "-X", method])
        .arg("-D")
        .arg(&head_file)
        .arg("-o")
        .arg(&body_file);
    if method == "HEAD" {
        cmd.arg("-I");
    }
    for h in headers {
        cmd.arg("-H").arg(h);
    }
    if let Some(data) = body {
        let data_file = dir.path().join("data");
        fs::write(&data_file, data).unwrap();
        cmd.arg("--data-binary")
            .arg(format!("@{}", data_file.display()));
    }
    cmd.args(curl_opts).arg(url);
    let out = run_bounded(&mut cmd, TOOL_LIMIT);
    let head = fs::read_to_string(&head_file).unwrap_or_default();
    // With -L or after "100 Continue" there are several blocks: the last
    // one is the answer.
    let block = head
        .split("\r\n\r\n")
        .filter(|b| b.starts_with("HTTP/"))
        .filter(|b| !b.split(' ').nth(1).is_some_and(|s| s.starts_with('1')))
        .last()
        .unwrap_or("");
    let mut lines = block.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    HttpReply {
        status,
        headers,
        body: fs::read(&body_file).unwrap_or_default(),
        curl_exit: out.status.code().unwrap_or(-1),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

// ---------------------------------------------------------------------------
// The registry

/// How clients authenticate to a [`TestRegistry`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Auth {
    /// No authentication: anyone can pull and push.
    #[default]
    Anonymous,
    /// htpasswd (bcrypt) Basic auth: only `user` can pull or push.
    Basic { user: String, password: String },
    /// Bearer tokens from `token_server.py`: anonymous clients get pull
    /// tokens (unless `anonymous_pull` is false), `user` gets pull and push.
    /// Tokens say `expires_in: ttl_secs`.
    Token {
        user: String,
        password: String,
        anonymous_pull: bool,
        ttl_secs: u64,
        /// Registry 2.8 honours a token for 60 s past its `exp`; when this
        /// is set the claim is made 60 s early, so that the registry
        /// refuses the token exactly `ttl_secs` after it was issued.
        expire_exactly: bool,
        /// An identity token (OAuth2 refresh token) that stands for `user`:
        /// exchanged by the refresh-token POST, or sent as the Basic
        /// password of a GET.
        refresh_token: Option<String>,
        /// Whether the token server answers POSTs (OAuth2 grants); when
        /// false every POST gets 404.
        oauth_post: bool,
    },
}

/// Options of a [`TestRegistry`]; `TestRegistry::builder()…start()`.
#[derive(Clone, Debug, Default)]
pub struct RegistryBuilder {
    auth: Auth,
    tls: bool,
    pull_through: Option<String>,
}

impl RegistryBuilder {
    /// htpasswd Basic auth for one user.
    pub fn basic_auth(mut self, user: &str, password: &str) -> Self {
        self.auth = Auth::Basic {
            user: user.into(),
            password: password.into(),
        };
        self
    }

    /// Bearer-token auth through a token server: anonymous pull, `user`
    /// pulls and pushes, tokens for 300 s.
    pub fn token_auth(mut self, user: &str, password: &str) -> Self {
        self.auth = Auth::Token {
            user: user.into(),
            password: password.into(),
            anonymous_pull: true,
            ttl_secs: 300,
            expire_exactly: false,
            refresh_token: None,
            oauth_post: true,
        };
        self
    }

    /// An identity token (OAuth2 refresh token) the token server takes for
    /// the configured user. Token auth only.
    pub fn refresh_token(mut self, token: &str) -> Self {
        match &mut self.auth {
            Auth::Token { refresh_token, .. } => *refresh_token = Some(token.to_string()),
            _ => panic!("refresh_token() is for token auth: call token_auth() first"),
        }
        self
    }

    /// Whether the token server answers POSTs (it does by default); without,
    /// every POST gets 404, as from a token server that only knows GET.
    /// Token auth only.
    pub fn oauth_post(mut self, allowed: bool) -> Self {
        match &mut self.auth {
            Auth::Token { oauth_post, .. } => *oauth_post = allowed,
            _ => panic!("oauth_post() is for token auth: call token_auth() first"),
        }
        self
    }

    /// Whether the token server gives anonymous clients pull tokens (it
    /// does by default). Token auth only.
    pub fn anonymous_pull(mut self, allowed: bool) -> Self {
        match &mut self.auth {
            Auth::Token { anonymous_pull, .. } => *anonymous_pull = allowed,
            _ => panic!("anonymous_pull() is for token auth: call token_auth() first"),
        }
        self
    }

    /// Tokens that the registry refuses `secs` after they were issued (see
    /// `expire_exactly` in [`Auth::Token`]). Token auth only.
    pub fn token_ttl(mut self, secs: u64) -> Self {
        match &mut self.auth {
            Auth::Token {
                ttl_secs,
                expire_exactly,
                ..
            } => {
                *ttl_secs = secs;
                *expire_exactly = true;
            }
            _ => panic!("token_ttl() is for token auth: call token_auth() first"),
        }
        self
    }

    /// Serve HTTPS with a certificate for 127.0.0.1 and localhost (IP and
    /// DNS subject alternative names) issued by a CA made for this registry
    /// ([`TestRegistry::ca_pem`]).
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Run as a pull-through cache of `upstream` (distribution's
    /// `proxy: {remoteurl: …}`): anonymous, plain HTTP, on 127.0.0.1.
    /// It serves pulls only (a push is refused); what it learnt from the
    /// upstream stays in its storage.
    ///
    /// What distribution 2.8 does as a cache (checked by
    /// tests/fleet_mirror.rs, written up in docs/registries.md):
    ///
    /// * a blob it does not hold is streamed whole (200, `Range` ignored)
    ///   while a second fetch of it from the upstream is written to its
    ///   storage: the first miss costs the upstream two copies of the blob,
    ///   and each further request for it while that store is under way
    ///   streams one more copy from the upstream (not stored);
    /// * a blob it holds is served from its storage, `Range` answered with
    ///   206;
    /// * a manifest by tag is asked of the upstream every time (a HEAD;
    ///   then a GET when it does not hold that digest) and served from its
    ///   storage when the upstream cannot be reached; a manifest by digest
    ///   once;
    /// * it has no referrers API: `GET /v2/…/referrers/…` is a 404 as on
    ///   the upstream, and a referrers tag is a tag like any other.
    pub fn pull_through(mut self, upstream: &TestRegistry) -> Self {
        assert!(
            !upstream.is_tls() && upstream.auth() == &Auth::Anonymous,
            "pull_through() is for an anonymous plain-HTTP upstream"
        );
        assert!(
            self.auth == Auth::Anonymous && !self.tls,
            "a pull-through cache here is anonymous plain HTTP"
        );
        self.pull_through = Some(upstream.url());
        self
    }

    pub fn start(self) -> TestRegistry {
        TestRegistry::launch(self)
    }
}

struct TokenServer {
    child: Child,
    port: u16,
    log: PathBuf,
}

/// A `docker-registry serve` on 127.0.0.1, killed on drop.
pub struct TestRegistry {
    dir: tempfile::TempDir,
    port: u16,
    auth: Auth,
    tls: bool,
    /// The upstream's URL when this is a pull-through cache.
    pull_through: Option<String>,
    child: Option<Child>,
    token: Option<TokenServer>,
}

impl TestRegistry {
    /// An anonymous plain-HTTP registry.
    pub fn new() -> TestRegistry {
        RegistryBuilder::default().start()
    }

    pub fn builder() -> RegistryBuilder {
        RegistryBuilder::default()
    }

    fn launch(opts: RegistryBuilder) -> TestRegistry {
        require("docker-registry", "docker-registry");
        let dir = tempfile::Builder::new()
            .prefix("ocimount-registry-")
            .tempdir()
            .unwrap();
        fs::create_dir(dir.path().join("storage")).unwrap();
        let mut reg = TestRegistry {
            dir,
            port: 0,
            auth: opts.auth,
            tls: opts.tls,
            pull_through: opts.pull_through,
            child: None,
            token: None,
        };
        if reg.tls || matches!(reg.auth, Auth::Token { .. }) {
            reg.make_ca();
        }
        if reg.tls {
            reg.make_leaf(
                "server",
                "127.0.0.1",
                "basicConstraints = critical,CA:FALSE\n\
                 keyUsage = critical,digitalSignature,keyEncipherment\n\
                 extendedKeyUsage = serverAuth\n\
                 subjectAltName = IP:127.0.0.1,DNS:localhost\n",
            );
        }
        match reg.auth.clone() {
            Auth::Anonymous => {}
            Auth::Basic { user, password } => {
                require("htpasswd", "apache2-utils");
                let line = tool(Command::new("htpasswd").args(["-Bbn", &user, &password]));
                fs::write(reg.dir.path().join("htpasswd"), line).unwrap();
            }
            Auth::Token { .. } => reg.start_token_server(),
        }
        // The port is picked before the registry binds it: on the rare
        // collision with another test, try another.
        let mut attempts = 0;
        loop {
            reg.port = free_port();
            reg.write_config();
            match reg.spawn_and_wait() {
                Ok(()) => return reg,
                Err(e) if e.contains("address already in use") && attempts < 5 => attempts += 1,
                Err(e) => panic!("{e}"),
            }
        }
    }

    // --- addresses -------------------------------------------------------

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`, the registry part of an image reference.
    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// `docker://127.0.0.1:PORT/REPO:TAG`, for skopeo.
    pub fn docker_ref(&self, repo_tag: &str) -> String {
        format!("docker://{}/{repo_tag}", self.host_port())
    }

    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The upstream's URL, when this is a pull-through cache
    /// ([`RegistryBuilder::pull_through`]).
    pub fn upstream_url(&self) -> Option<&str> {
        self.pull_through.as_deref()
    }

    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// The configured user and password (Basic or token auth).
    pub fn credentials(&self) -> Option<(&str, &str)> {
        match &self.auth {
            Auth::Anonymous => None,
            Auth::Basic { user, password } | Auth::Token { user, password, .. } => {
                Some((user.as_str(), password.as_str()))
            }
        }
    }

    /// `user:password`, as skopeo's `--creds` and curl's `-u` take it.
    pub fn creds(&self) -> Option<String> {
        self.credentials().map(|(u, p)| format!("{u}:{p}"))
    }

    // --- TLS -------------------------------------------------------------

    /// The PEM of the CA that issued the server certificate (TLS) or the
    /// token-signing certificate (token auth).
    pub fn ca_pem(&self) -> Option<PathBuf> {
        let ca = self.dir.path().join("ca.crt");
        ca.exists().then_some(ca)
    }

    /// A directory holding only `ca.crt` (TLS only): skopeo's
    /// `--cert-dir`, or what goes in `certs.d/HOST:PORT/`.
    pub fn cert_dir(&self) -> Option<PathBuf> {
        if !self.tls {
            return None;
        }
        let dir = self.dir.path().join("cert-dir");
        if !dir.exists() {
            fs::create_dir(&dir).unwrap();
            fs::copy(self.dir.path().join("ca.crt"), dir.join("ca.crt")).unwrap();
        }
        Some(dir)
    }

    /// A `certs.d` root (as /etc/containers/certs.d or /etc/docker/certs.d)
    /// with `127.0.0.1:PORT/ca.crt` and `localhost:PORT/ca.crt` (TLS only).
    pub fn certs_d(&self) -> Option<PathBuf> {
        if !self.tls {
            return None;
        }
        let root = self.dir.path().join("certs.d");
        for host in ["127.0.0.1", "localhost"] {
            let dir = root.join(format!("{host}:{}", self.port));
            fs::create_dir_all(&dir).unwrap();
            fs::copy(self.dir.path().join("ca.crt"), dir.join("ca.crt")).unwrap();
        }
        Some(root)
    }

    /// skopeo's TLS flags for this registry, `prefix` being "", "src-" or
    /// "dest-": `--PREFIXtls-verify=false` for plain HTTP (skopeo needs it
    /// to speak HTTP), `--PREFIXcert-dir=DIR` (verified TLS) for HTTPS.
    pub fn skopeo_tls_args(&self, prefix: &str) -> Vec<String> {
        match self.cert_dir() {
            Some(dir) => vec![format!("--{prefix}cert-dir={}", dir.display())],
            None => vec![format!("--{prefix}tls-verify=false")],
        }
    }

    // --- files -----------------------------------------------------------

    /// The temporary directory with config.yml, storage/, registry.log…
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// Where the filesystem driver keeps the bytes of blob `digest`
    /// (`sha256:…`): overwrite it to make the registry serve bad data.
    pub fn blob_data_path(&self, digest: &str) -> PathBuf {
        let (algo, hex) = digest.split_once(':').expect("digest is ALGO:HEX");
        self.storage_dir()
            .join("docker/registry/v2/blobs")
            .join(algo)
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// The link that makes blob `digest` part of repository `repo` in this
    /// registry's storage. A pull-through cache answers from its own
    /// storage only once this exists: it writes the blob's data first and
    /// links it a moment later, and a request between the two is a miss.
    pub fn layer_link_path(&self, repo: &str, digest: &str) -> PathBuf {
        let (algo, hex) = digest.split_once(':').expect("digest is ALGO:HEX");
        self.storage_dir()
            .join("docker/registry/v2/repositories")
            .join(repo)
            .join("_layers")
            .join(algo)
            .join(hex)
            .join("link")
    }

    /// Write a docker/containers `auth.json` (`{"auths": {HOST:PORT:
    /// {"auth": base64(user:password)}}}`) with this registry's
    /// credentials (an empty `auths` when anonymous).
    pub fn write_auth_json(&self, path: &Path) {
        let entry = match self.creds() {
            Some(c) => format!(
                "\"{}\": {{\"auth\": \"{}\"}}",
                self.host_port(),
                base64(c.as_bytes())
            ),
            None => String::new(),
        };
        fs::write(path, format!("{{\"auths\": {{{entry}}}}}\n")).unwrap();
    }

    /// Restart the registry in read-only maintenance mode: pulls work,
    /// every push is refused.
    pub fn set_read_only(&mut self) {
        self.stop();
        let path = self.dir.path().join("config.yml");
        let yml = fs::read_to_string(&path).unwrap();
        assert!(yml.contains("    uploadpurging:\n"), "{yml}");
        let yml = yml.replace(
            "    uploadpurging:\n",
            "    readonly:\n      enabled: true\n    uploadpurging:\n",
        );
        fs::write(&path, yml).unwrap();
        self.start();
    }

    // --- logs ------------------------------------------------------------

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    /// Everything the registry printed (all its runs): its logrus lines on
    /// stderr and its access log on stdout.
    pub fn log(&self) -> String {
        read_from(&self.log_path(), 0)
    }

    /// The access log: one combined-log-format line per request, e.g.
    /// `127.0.0.1 - - [30/Nov/2026:04:51:44 +0000] "GET /v2/ HTTP/1.1" 200 2 "" "curl/7.88.1"`.
    pub fn access_log(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.starts_with("127.0.0.1 - ") && l.contains("] \""))
            .map(str::to_string)
            .collect()
    }

    /// The quoted request lines of the access log, e.g.
    /// `GET /v2/debian/blobs/sha256:… HTTP/1.1`.
    pub fn access_requests(&self) -> Vec<String> {
        self.access_log()
            .iter()
            .filter_map(|l| l.split('"').nth(1).map(str::to_string))
            .collect()
    }

    /// The access log as records: method, path, status and the bytes of
    /// the response body written (a Range answer logs its part, a stream
    /// the client dropped what went out before).
    pub fn access_records(&self) -> Vec<AccessRecord> {
        self.access_log()
            .iter()
            .filter_map(|l| AccessRecord::parse(l))
            .collect()
    }

    /// Body bytes of the `GET …/blobs/DIGEST` answers, per digest, in the
    /// access log's records from index `since` on.
    pub fn blob_bytes_by_digest(&self, since: usize) -> std::collections::BTreeMap<String, u64> {
        let mut per = std::collections::BTreeMap::new();
        for r in self.access_records().iter().skip(since) {
            if let Some(digest) = r.blob_digest().filter(|_| r.method == "GET") {
                *per.entry(digest.to_string()).or_insert(0) += r.bytes;
            }
        }
        per
    }

    /// The token server's log, one line per request (see token_server.py).
    pub fn token_log(&self) -> String {
        self.token
            .as_ref()
            .map(|t| read_from(&t.log, 0))
            .unwrap_or_default()
    }

    // --- processes -------------------------------------------------------

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The registry's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn token_server_pid(&self) -> Option<u32> {
        self.token.as_ref().map(|t| t.child.id())
    }

    /// `http://127.0.0.1:PORT/token` (token auth only).
    pub fn token_url(&self) -> Option<String> {
        self.token
            .as_ref()
            .map(|t| format!("http://127.0.0.1:{}/token", t.port))
    }

    /// Kill the registry (SIGKILL, like a crash), keeping its storage and
    /// port; the token server keeps running.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_child(&mut child);
        }
    }

    /// Start the registry again after [`stop`](Self::stop), on the same
    /// port and storage.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "the registry is already running");
        // Nothing else should take the port meanwhile; if something holds
        // it for a moment, wait.
        let deadline = Instant::now() + READY_LIMIT;
        loop {
            match self.spawn_and_wait() {
                Ok(()) => return,
                Err(e) if e.contains("address already in use") && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200))
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let log = self.log_path();
        let from = file_len(&log);
        let (out, err) = log_stdio(&log);
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = spawn_guarded(cmd).map_err(|e| format!("cannot run docker-registry: {e}"))?;
        self.child = Some(child);
        let listening = format!("listening on 127.0.0.1:{}", self.port);
        let deadline = Instant::now() + READY_LIMIT;
        loop {
            let status = self.child.as_mut().unwrap().try_wait().ok().flatten();
            if let Some(status) = status {
                self.child = None;
                return Err(format!(
                    "docker-registry exited ({status}) on {}:\n{}",
                    self.host_port(),
                    tail(&read_from(&log, from), 40)
                ));
            }
            if read_from(&log, from).contains(&listening) && self.probe() {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(format!(
                    "docker-registry did not answer on {} within {READY_LIMIT:?}:\n{}",
                    self.host_port(),
                    tail(&read_from(&log, from), 40)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the registry answers: any HTTP response to `GET /v2/` (plain
    /// HTTP), a TCP connection (TLS).
    fn probe(&self) -> bool {
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
            return false;
        };
        if self.tls {
            return true;
        }
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
        let request = format!(
            "GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            self.port
        );
        let mut first = [0u8; 8];
        s.write_all(request.as_bytes()).is_ok()
            && s.read_exact(&mut first).is_ok()
            && first.starts_with(b"HTTP/1.")
    }

    fn write_config(&self) {
        let d = self.dir.path().display();
        let mut yml = format!(
            "version: 0.1\n\
             log:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {d}/storage\n  delete:\n    enabled: true\n\
             \x20 maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: ocimount-test-secret\n",
            port = self.port
        );
        if self.tls {
            yml += &format!("  tls:\n    certificate: {d}/server.crt\n    key: {d}/server.key\n");
        }
        match &self.auth {
            Auth::Anonymous => {}
            Auth::Basic { .. } => {
                yml += &format!(
                    "auth:\n  htpasswd:\n    realm: ocimount-test\n    path: {d}/htpasswd\n"
                )
            }
            Auth::Token { .. } => {
                yml += &format!(
                    "auth:\n  token:\n    realm: {realm}\n    service: {TOKEN_SERVICE}\n    \
                     issuer: {TOKEN_ISSUER}\n    rootcertbundle: {d}/ca.crt\n",
                    realm = self.token_url().unwrap()
                )
            }
        }
        if let Some(remote) = &self.pull_through {
            yml += &format!("proxy:\n  remoteurl: {remote}\n");
        }
        fs::write(self.dir.path().join("config.yml"), yml).unwrap();
    }

    // --- certificates ----------------------------------------------------

    fn make_ca(&self) {
        require("openssl", "openssl");
        let dir = self.dir.path();
        fs::write(
            dir.join("ca.cnf"),
            "[req]\ndistinguished_name = dn\nprompt = no\nx509_extensions = v3_ca\n\
             [dn]\nCN = ocimount test CA\n\
             [v3_ca]\nbasicConstraints = critical,CA:TRUE\n\
             keyUsage = critical,keyCertSign,cRLSign\nsubjectKeyIdentifier = hash\n",
        )
        .unwrap();
        tool(
            Command::new("openssl")
                .current_dir(dir)
                .args(["req", "-x509", "-config", "ca.cnf", "-newkey", "rsa:2048"])
                .args([
                    "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "3650",
                ]),
        );
    }

    /// NAME.key and NAME.crt, issued by the CA, with extensions `ext`.
    fn make_leaf(&self, name: &str, cn: &str, ext: &str) {
        let dir = self.dir.path();
        fs::write(
            dir.join(format!("{name}.cnf")),
            format!(
                "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = {cn}\n\
                 [ext]\n{ext}subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n"
            ),
        )
        .unwrap();
        tool(
            Command::new("openssl")
                .current_dir(dir)
                .args(["req", "-new", "-config", &format!("{name}.cnf")])
                .args(["-newkey", "rsa:2048", "-nodes"])
                .args(["-keyout", &format!("{name}.key")])
                .args(["-out", &format!("{name}.csr")]),
        );
        let serial = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        tool(
            Command::new("openssl")
                .current_dir(dir)
                .args(["x509", "-req", "-in", &format!("{name}.csr")])
                .args(["-CA", "ca.crt", "-CAkey", "ca.key"])
                .args(["-set_serial", &format!("0x{serial:x}"), "-days", "3650"])
                .args(["-extfile", &format!("{name}.cnf"), "-extensions", "ext"])
                .args(["-out", &format!("{name}.crt")]),
        );
    }

    // --- token server ----------------------------------------------------

    fn start_token_server(&mut self) {
        let Auth::Token {
            user,
            password,
            anonymous_pull,
            ttl_secs,
            expire_exactly,
            refresh_token,
            oauth_post,
        } = self.auth.clone()
        else {
            unreachable!()
        };
        require_python_cryptography();
        self.make_leaf(
            "token-signer",
            "ocimount test token signer",
            "basicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\n",
        );
        let dir = self.dir.path().to_path_buf();
        let log = dir.join("token.log");
        let port_file = dir.join("token.port");
        let (out, err) = log_stdio(&log);
        let mut cmd = Command::new(PYTHON);
        cmd.arg(Path::new(REPO).join("tests/support/token_server.py"))
            .arg("--key")
            .arg(dir.join("token-signer.key"))
            .arg("--cert")
            .arg(dir.join("token-signer.crt"))
            .args(["--issuer", TOKEN_ISSUER, "--service", TOKEN_SERVICE])
            .args(["--user", &user, "--password", &password])
            .args(["--ttl", &ttl_secs.to_string()])
            .arg("--port-file")
            .arg(&port_file)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        if expire_exactly {
            cmd.arg("--expire-exactly");
        }
        if !anonymous_pull {
            cmd.arg("--no-anonymous");
        }
        if let Some(token) = &refresh_token {
            cmd.args(["--refresh-token", token]);
        }
        if !oauth_post {
            cmd.arg("--no-oauth-post");
        }
        let mut child = spawn_guarded(cmd).expect("cannot run token_server.py");
        let deadline = Instant::now() + READY_LIMIT;
        let port = loop {
            if let Some(port) = fs::read_to_string(&port_file)
                .ok()
                .and_then(|p| p.trim().parse::<u16>().ok())
            {
                break port;
            }
            let exited = child.try_wait().ok().flatten();
            if exited.is_some() || Instant::now() > deadline {
                kill_child(&mut child);
                panic!(
                    "token_server.py did not start ({exited:?}):\n{}",
                    read_from(&log, 0)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.token = Some(TokenServer { child, port, log });
    }

    /// A token for `scopes` (e.g. `repository:debian:pull`) from the token
    /// server, with the configured credentials or anonymously; None when
    /// the server refuses. Token auth only.
    pub fn request_token(&self, scopes: &[&str], with_creds: bool) -> Option<String> {
        let mut url = format!(
            "{}?service={TOKEN_SERVICE}",
            self.token_url().expect("not a token-auth registry")
        );
        for s in scopes {
            url += &format!("&scope={s}");
        }
        let creds = self.creds().unwrap();
        let opts: &[&str] = if with_creds { &["-u", &creds] } else { &[] };
        let reply = http("GET", &url, &[], None, opts);
        (reply.status == 200).then(|| json_string(&reply.text(), "token").expect("no token"))
    }

    /// An `Authorization:` header line that lets the configured user do
    /// `actions` (e.g. "pull,push") on `repo`; None when anonymous.
    pub fn auth_header(&self, repo: &str, actions: &str) -> Option<String> {
        match &self.auth {
            Auth::Anonymous => None,
            Auth::Basic { .. } => Some(format!(
                "Authorization: Basic {}",
                base64(self.creds().unwrap().as_bytes())
            )),
            Auth::Token { .. } => {
                let scope = format!("repository:{repo}:{actions}");
                let token = self
                    .request_token(&[&scope], true)
                    .expect("the token server refused the configured user");
                Some(format!("Authorization: Bearer {token}"))
            }
        }
    }

    // --- content ---------------------------------------------------------

    /// Push `src` (a skopeo source: `oci:/path/to/layout`, `oci:/path:tag`,
    /// `docker-archive:…`) to `REPO:TAG` here with `skopeo copy --all
    /// --preserve-digests`: every image of an index, layers as they are
    /// (compression kept, digests unchanged; skopeo fails rather than
    /// change one). Uses the configured credentials; panics on failure.
    pub fn push(&self, src: &str, dest_repo_tag: &str) {
        let out = self.try_push(src, dest_repo_tag, self.creds().as_deref());
        assert!(
            out.status.success(),
            "skopeo copy {src} {} failed: {}\nregistry log:\n{}",
            self.docker_ref(dest_repo_tag),
            String::from_utf8_lossy(&out.stderr),
            tail(&self.log(), 30)
        );
    }

    /// [`push`](Self::push) with the given `user:password` (None:
    /// anonymously), returning skopeo's output whatever it was.
    pub fn try_push(&self, src: &str, dest_repo_tag: &str, creds: Option<&str>) -> Output {
        require("skopeo", "skopeo");
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--all", "--preserve-digests"])
            .args(self.skopeo_tls_args("dest-"));
        match creds {
            Some(c) => cmd.arg(format!("--dest-creds={c}")),
            None => cmd.arg("--dest-no-creds"),
        };
        cmd.arg(src).arg(self.docker_ref(dest_repo_tag));
        run_bounded(&mut cmd, PUSH_LIMIT)
    }

    /// `skopeo inspect [--raw]` of `REPO:TAG` with the given credentials
    /// (None: anonymously), output whatever it was.
    pub fn skopeo_inspect(&self, repo_tag: &str, raw: bool, creds: Option<&str>) -> Output {
        require("skopeo", "skopeo");
        let mut cmd = Command::new("skopeo");
        cmd.arg("inspect").args(self.skopeo_tls_args(""));
        if raw {
            cmd.arg("--raw");
        }
        match creds {
            Some(c) => cmd.arg(format!("--creds={c}")),
            None => cmd.arg("--no-creds"),
        };
        cmd.arg(self.docker_ref(repo_tag));
        run_bounded(&mut cmd, TOOL_LIMIT)
    }

    /// An HTTP request to this registry (`path` like `/v2/`), trusting its
    /// CA when TLS; no credentials unless `headers` has them (see
    /// [`auth_header`](Self::auth_header)).
    pub fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[&str],
        body: Option<&[u8]>,
    ) -> HttpReply {
        let url = format!("{}{path}", self.url());
        match self.ca_pem().filter(|_| self.tls) {
            Some(ca) => http(
                method,
                &url,
                headers,
                body,
                &["--cacert", ca.to_str().unwrap()],
            ),
            None => http(method, &url, headers, body, &[]),
        }
    }

    /// Upload `data` as a blob of `repo` (POST then PUT, monolithic) with
    /// the configured credentials; its digest.
    pub fn upload_blob(&self, repo: &str, data: &[u8]) -> String {
        let digest = sha256_digest(data);
        let auth = self.auth_header(repo, "pull,push");
        let headers: Vec<&str> = auth.iter().map(String::as_str).collect();
        let start = self.http(
            "POST",
            &format!("/v2/{repo}/blobs/uploads/"),
            &headers,
            None,
        );
        assert_eq!(start.status, 202, "starting an upload: {start:?}");
        let location = start.header("Location").expect("upload Location");
        let url = if location.starts_with("http") {
            location.to_string()
        } else {
            format!("{}{location}", self.url())
        };
        let sep = if url.contains('?') { '&' } else { '?' };
        let mut put_headers = headers.clone();
        put_headers.push("Content-Type: application/octet-stream");
        let put_url = format!("{url}{sep}digest={digest}");
        let opts: Vec<String> = match self.ca_pem().filter(|_| self.tls) {
            Some(ca) => vec!["--cacert".into(), ca.display().to_string()],
            None => vec![],
        };
        let opts: Vec<&str> = opts.iter().map(String::as_str).collect();
        let put = http("PUT", &put_url, &put_headers, Some(data), &opts);
        assert_eq!(put.status, 201, "finishing the upload of {digest}: {put:?}");
        digest
    }

    /// PUT `body` as manifest `repo:reference` with Content-Type
    /// `media_type` and the configured credentials; the reply as it is
    /// (201 and `Docker-Content-Digest` when accepted).
    pub fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> HttpReply {
        let auth = self.auth_header(repo, "pull,push");
        let content_type = format!("Content-Type: {media_type}");
        let mut headers: Vec<&str> = auth.iter().map(String::as_str).collect();
        headers.push(&content_type);
        self.http(
            "PUT",
            &format!("/v2/{repo}/manifests/{reference}"),
            &headers,
            Some(body),
        )
    }
}

impl Default for TestRegistry {
    fn default() -> Self {
        TestRegistry::new()
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.stop();
        if let Some(mut token) = self.token.take() {
            kill_child(&mut token.child);
        }
    }
}

/// The string value of `"key": "..."` in a flat JSON text (no escapes in
/// the value; enough for tokens).
/// One line of a [`TestRegistry`]'s access log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessRecord {
    pub method: String,
    /// The request target, e.g. `/v2/test/img/blobs/sha256:…`.
    pub path: String,
    pub status: u16,
    /// Bytes of the response body written (`-` is 0).
    pub bytes: u64,
}

impl AccessRecord {
    /// `127.0.0.1 - - [DATE] "GET /v2/… HTTP/1.1" 200 1234 "" "UA"`.
    pub fn parse(line: &str) -> Option<AccessRecord> {
        let mut quoted = line.split('"');
        let request = quoted.nth(1)?;
        let after = quoted.next()?;
        let mut words = request.split(' ');
        let method = words.next()?.to_string();
        let path = words.next()?.to_string();
        let mut nums = after.split_whitespace();
        let status = nums.next()?.parse().ok()?;
        let bytes = nums.next()?.parse().unwrap_or(0);
        Some(AccessRecord {
            method,
            path,
            status,
            bytes,
        })
    }

    /// `sha256:…` of a `/v2/REPO/blobs/DIGEST` request.
    pub fn blob_digest(&self) -> Option<&str> {
        let (_, digest) = self.path.rsplit_once("/blobs/")?;
        digest.starts_with("sha256:").then_some(digest)
    }
}

fn json_string(text: &str, key: &str) -> Option<String> {
    let at = text.find(&format!("\"{key}\""))?;
    let rest = text[at + key.len() + 2..].trim_start().strip_prefix(':')?;
    let rest = rest.trim_start().strip_prefix('"')?;
    Some(rest[..rest.find('"')?].to_string())
}

// ---------------------------------------------------------------------------
// The proxy

/// What a [`TestProxy`] does with requests; switch with
/// [`TestProxy::set_mode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyMode {
    /// Relay requests and responses as they are.
    Pass,
    /// Drop `Range` and `If-Range` from requests: the registry answers 200
    /// with the whole body, as a server without range support would.
    IgnoreRange,
    /// Answer GET and HEAD of `/v2/NAME/blobs/DIGEST` with `307 Temporary
    /// Redirect` to the same path on the registry's own port (another
    /// host:port than the proxy's, as a CDN would be); relay the rest.
    RedirectBlobs,
    /// As `RedirectBlobs`, but to this port on 127.0.0.1 (another proxy,
    /// say, in front of a registry that holds the same blobs).
    RedirectBlobsTo(u16),
    /// Accept connections and close them at once (and cut those open when
    /// the mode is set): an outage.
    Down,
    /// Relay, but close the connection after this many bytes of any
    /// response body: a transfer cut short.
    CutBodiesAfter(u64),
}

/// One request a [`TestProxy`] received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyRequest {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    /// The `Range` header the client sent, if any (even when the mode
    /// dropped it).
    pub range: Option<String>,
    /// Whether the request carried an `Authorization` header.
    pub authorization: bool,
}

impl std::fmt::Display for ProxyRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.target)?;
        if let Some(range) = &self.range {
            write!(f, " Range: {range}")?;
        }
        Ok(())
    }
}

/// Idle and I/O bound on every proxied socket.
const PROXY_IO_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_HEAD: usize = 64 * 1024;

struct ProxyShared {
    mode: Mutex<ProxyMode>,
    stop: AtomicBool,
    upstream_port: u16,
    body_bytes: AtomicU64,
    blob_body_bytes: AtomicU64,
    connections: AtomicU64,
    requests: Mutex<Vec<ProxyRequest>>,
    /// Open sockets (client and upstream sides), to cut them.
    open: Mutex<Vec<(u64, TcpStream)>>,
    next_id: AtomicU64,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl ProxyShared {
    fn mode(&self) -> ProxyMode {
        *self.mode.lock().unwrap()
    }

    fn track(&self, stream: &TcpStream) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(clone) = stream.try_clone() {
            self.open.lock().unwrap().push((id, clone));
        }
        id
    }

    fn untrack(&self, id: u64) {
        self.open.lock().unwrap().retain(|(i, _)| *i != id);
    }

    fn sever_all(&self) {
        for (_, s) in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// An HTTP/1.1 proxy on 127.0.0.1 in front of a plain-HTTP registry, in
/// threads; clients use `url()` as if it were the registry. Keeps client
/// connections alive (one upstream connection per request); stops on drop.
pub struct TestProxy {
    port: u16,
    shared: Arc<ProxyShared>,
    accept: Option<JoinHandle<()>>,
}

impl TestProxy {
    /// A proxy in front of `registry` (which must be plain HTTP; its auth
    /// passes through untouched).
    pub fn new(registry: &TestRegistry, mode: ProxyMode) -> TestProxy {
        assert!(
            !registry.is_tls(),
            "TestProxy speaks plain HTTP: put it in front of a registry without TLS"
        );
        TestProxy::to_port(registry.port(), mode)
    }

    /// A proxy in front of whatever serves plain HTTP on 127.0.0.1:`port`.
    pub fn to_port(upstream_port: u16, mode: ProxyMode) -> TestProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy bind");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(ProxyShared {
            mode: Mutex::new(mode),
            stop: AtomicBool::new(false),
            upstream_port,
            body_bytes: AtomicU64::new(0),
            blob_body_bytes: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            requests: Mutex::new(Vec::new()),
            open: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(0),
            workers: Mutex::new(Vec::new()),
        });
        let accept_shared = Arc::clone(&shared);
        let accept = std::thread::Builder::new()
            .name(format!("test-proxy-{port}"))
            .spawn(move || accept_loop(listener, accept_shared))
            .expect("proxy thread");
        TestProxy {
            port,
            shared,
            accept: Some(accept),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT` of the proxy.
    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT` of the proxy.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn mode(&self) -> ProxyMode {
        self.shared.mode()
    }

    /// Switch modes; switching to `Down` also cuts every open connection.
    pub fn set_mode(&self, mode: ProxyMode) {
        *self.shared.mode.lock().unwrap() = mode;
        if mode == ProxyMode::Down {
            self.shared.sever_all();
        }
    }

    /// Cut every open connection now (both sides), mid-transfer or idle.
    pub fn sever_connections(&self) {
        self.shared.sever_all();
    }

    /// Bytes of response bodies relayed to clients (all responses, counted
    /// as they pass, so a cut transfer counts what got through).
    pub fn body_bytes(&self) -> u64 {
        self.shared.body_bytes.load(Ordering::SeqCst)
    }

    /// The part of [`body_bytes`](Self::body_bytes) that answered `GET
    /// /v2/NAME/blobs/DIGEST`.
    pub fn blob_body_bytes(&self) -> u64 {
        self.shared.blob_body_bytes.load(Ordering::SeqCst)
    }

    /// Client connections accepted (including those refused when `Down`).
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Requests received, as `METHOD TARGET[ Range: bytes=A-B]`.
    pub fn requests(&self) -> Vec<String> {
        self.records().iter().map(ToString::to_string).collect()
    }

    /// Requests received, in full.
    pub fn records(&self) -> Vec<ProxyRequest> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Zero the byte and connection counters and forget the requests.
    pub fn reset_counters(&self) {
        self.shared.body_bytes.store(0, Ordering::SeqCst);
        self.shared.blob_body_bytes.store(0, Ordering::SeqCst);
        self.shared.connections.store(0, Ordering::SeqCst);
        self.shared.requests.lock().unwrap().clear();
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        self.shared.sever_all();
        let workers: Vec<_> = self.shared.workers.lock().unwrap().drain(..).collect();
        for w in workers {
            let _ = w.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<ProxyShared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                shared.connections.fetch_add(1, Ordering::SeqCst);
                if shared.mode() == ProxyMode::Down {
                    let _ = stream.shutdown(Shutdown::Both);
                    continue;
                }
                // Tracked before the worker starts, so that a drop (which
                // joins this thread first) cuts every connection.
                let id = shared.track(&stream);
                let worker_shared = Arc::clone(&shared);
                let handle = std::thread::spawn(move || {
                    let _ = serve_client(stream, &worker_shared);
                    worker_shared.untrack(id);
                });
                let mut workers = shared.workers.lock().unwrap();
                workers.retain(|w| !w.is_finished());
                workers.push(handle);
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// A request or response head: the start line and the header fields.
struct Head {
    start: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    fn remove(&mut self, name: &str) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = format!("{}\r\n", self.start);
        for (n, v) in &self.headers {
            out += &format!("{n}: {v}\r\n");
        }
        out += "\r\n";
        out.into_bytes()
    }
}

/// The next head on `r`; None on a clean end of stream before it.
fn read_head(r: &mut impl BufRead) -> io::Result<Option<Head>> {
    let mut lines = Vec::new();
    let mut total = 0;
    loop {
        let mut line = Vec::new();
        let n = r.read_until(b'\n', &mut line)?;
        if n == 0 {
            return if lines.is_empty() && total == 0 {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        total += n;
        if total > MAX_HEAD {
            return Err(io::Error::other("head too long"));
        }
        let line = String::from_utf8_lossy(&line)
            .trim_end_matches(['\r', '\n'])
            .to_string();
        if line.is_empty() {
            if lines.is_empty() {
                continue; // stray CRLF between messages
            }
            break;
        }
        lines.push(line);
    }
    let start = lines.remove(0);
    let headers = lines
        .iter()
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(Some(Head { start, headers }))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

fn request_framing(head: &Head) -> io::Result<Framing> {
    if head.has_token("Transfer-Encoding", "chunked") {
        return Ok(Framing::Chunked);
    }
    match head.get("Content-Length") {
        Some(v) => v
            .parse()
            .map(Framing::Length)
            .map_err(|_| io::Error::other("bad Content-Length")),
        None => Ok(Framing::Empty),
    }
}

fn response_framing(method: &str, status: u16, head: &Head) -> io::Result<Framing> {
    if method == "HEAD" || status < 200 || status == 204 || status == 304 {
        return Ok(Framing::Empty);
    }
    match request_framing(head)? {
        Framing::Empty => Ok(Framing::UntilClose),
        f => Ok(f),
    }
}

/// Whether `target` is `/v2/NAME/blobs/ALGO:HEX` (not an upload).
pub fn is_blob_path(target: &str) -> bool {
    let path = target.split('?').next().unwrap_or("");
    match path.rsplit_once("/blobs/") {
        Some((name, digest)) => {
            name.len() > 4
                && name.starts_with("/v2/")
                && digest.contains(':')
                && !digest.contains('/')
        }
        None => false,
    }
}

/// Copy a body framed as `framing` from `r` to `w`, passing each count of
/// payload bytes to `counted`; stop (Ok(false)) once `limit` payload bytes
/// went through. Ok(true) when the body is complete.
fn relay_body(
    r: &mut impl BufRead,
    w: &mut impl Write,
    framing: Framing,
    limit: Option<u64>,
    counted: &dyn Fn(u64),
) -> io::Result<bool> {
    let mut budget = limit.unwrap_or(u64::MAX);
    let mut copy = |r: &mut dyn BufRead, w: &mut dyn Write, len: Option<u64>| -> io::Result<bool> {
        let mut left = len.unwrap_or(u64::MAX);
        let mut buf = vec![0u8; 64 * 1024];
        while left > 0 {
            if budget == 0 {
                return Ok(false);
            }
            let want = left.min(budget).min(buf.len() as u64) as usize;
            let n = r.read(&mut buf[..want])?;
            if n == 0 {
                if len.is_none() {
                    return Ok(true);
                }
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            w.write_all(&buf[..n])?;
            counted(n as u64);
            left -= n as u64;
            budget -= n as u64;
        }
        Ok(true)
    };
    match framing {
        Framing::Empty => Ok(true),
        Framing::Length(n) => copy(r, w, Some(n)),
        Framing::UntilClose => copy(r, w, None),
        Framing::Chunked => loop {
            let mut line = Vec::new();
            r.read_until(b'\n', &mut line)?;
            if line.is_empty() || line.len() > 1024 {
                return Err(io::Error::other("bad chunk size line"));
            }
            w.write_all(&line)?;
            let text = String::from_utf8_lossy(&line);
            let hex = text.split(';').next().unwrap_or("").trim();
            let size =
                u64::from_str_radix(hex, 16).map_err(|_| io::Error::other("bad chunk size"))?;
            if size == 0 {
                // Trailers, then the empty line.
                loop {
                    let mut t = Vec::new();
                    r.read_until(b'\n', &mut t)?;
                    w.write_all(&t)?;
                    if t.is_empty() || t == b"\r\n" || t == b"\n" {
                        return Ok(true);
                    }
                }
            }
            if !copy(r, w, Some(size))? {
                return Ok(false);
            }
            let mut crlf = Vec::new();
            r.read_until(b'\n', &mut crlf)?;
            w.write_all(&crlf)?;
        },
    }
}

fn serve_client(client: TcpStream, shared: &ProxyShared) -> io::Result<()> {
    client.set_nonblocking(false)?;
    client.set_read_timeout(Some(PROXY_IO_TIMEOUT))?;
    client.set_write_timeout(Some(PROXY_IO_TIMEOUT))?;
    let mut from_client = BufReader::new(client.try_clone()?);
    let mut to_client = client;
    while let Some(mut req) = read_head(&mut from_client)? {
        let mode = shared.mode();
        if mode == ProxyMode::Down || shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let mut parts = req.start.split(' ');
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let version = parts.next().unwrap_or("HTTP/1.1").to_string();
        shared.requests.lock().unwrap().push(ProxyRequest {
            method: method.clone(),
            target: target.clone(),
            range: req.get("Range").map(str::to_string),
            authorization: req.get("Authorization").is_some(),
        });
        let client_closes = req.has_token("Connection", "close")
            || (version == "HTTP/1.0" && !req.has_token("Connection", "keep-alive"));
        let req_framing = request_framing(&req)?;
        let blob = is_blob_path(&target);

        let redirect_port = match mode {
            ProxyMode::RedirectBlobs => Some(shared.upstream_port),
            ProxyMode::RedirectBlobsTo(port) => Some(port),
            _ => None,
        };
        if let (Some(redirect_port), true) =
            (redirect_port, blob && (method == "GET" || method == "HEAD"))
        {
            relay_body(
                &mut from_client,
                &mut io::sink(),
                req_framing,
                None,
                &|_| {},
            )?;
            let location = format!("http://127.0.0.1:{redirect_port}{target}");
            let close = if client_closes {
                "Connection: close\r\n"
            } else {
                ""
            };
            write!(
                to_client,
                "HTTP/1.1 307 Temporary Redirect\r\nLocation: {location}\r\n\
                 Content-Length: 0\r\n{close}\r\n"
            )?;
            to_client.flush()?;
            if client_closes {
                break;
            }
            continue;
        }

        if mode == ProxyMode::IgnoreRange {
            req.remove("Range");
            req.remove("If-Range");
        }
        if req.has_token("Expect", "100-continue") {
            req.remove("Expect");
            to_client.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        for hop in [
            "Connection",
            "Keep-Alive",
            "Proxy-Connection",
            "TE",
            "Upgrade",
        ] {
            req.remove(hop);
        }
        req.headers.push(("Connection".into(), "close".into()));

        let addr: SocketAddr = ([127, 0, 0, 1], shared.upstream_port).into();
        let upstream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        let upstream_id = shared.track(&upstream);
        if shared.mode() == ProxyMode::Down || shared.stop.load(Ordering::SeqCst) {
            // Cut while connecting.
            shared.untrack(upstream_id);
            break;
        }
        let done = relay_exchange(
            shared,
            &upstream,
            &mut from_client,
            &mut to_client,
            &req,
            req_framing,
            &method,
            blob,
            client_closes,
            mode,
        );
        let _ = upstream.shutdown(Shutdown::Both);
        shared.untrack(upstream_id);
        if !done? {
            break;
        }
    }
    let _ = to_client.shutdown(Shutdown::Both);
    Ok(())
}

/// Send one request upstream and its response back; Ok(true) when the
/// client connection can carry another request.
#[allow(clippy::too_many_arguments)]
fn relay_exchange(
    shared: &ProxyShared,
    upstream: &TcpStream,
    from_client: &mut BufReader<TcpStream>,
    to_client: &mut TcpStream,
    req: &Head,
    req_framing: Framing,
    method: &str,
    blob: bool,
    client_closes: bool,
    mode: ProxyMode,
) -> io::Result<bool> {
    upstream.set_read_timeout(Some(PROXY_IO_TIMEOUT))?;
    upstream.set_write_timeout(Some(PROXY_IO_TIMEOUT))?;
    let mut to_upstream = upstream.try_clone()?;
    let mut from_upstream = BufReader::new(upstream.try_clone()?);
    to_upstream.write_all(&req.bytes())?;
    relay_body(from_client, &mut to_upstream, req_framing, None, &|_| {})?;
    to_upstream.flush()?;

    let mut resp = loop {
        let head = read_head(&mut from_upstream)?.ok_or(io::ErrorKind::UnexpectedEof)?;
        let status: u16 = head
            .start
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if (100..200).contains(&status) && status != 101 {
            continue; // interim answers were handled towards the client
        }
        break head;
    };
    let status: u16 = resp
        .start
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let framing = response_framing(method, status, &resp)?;
    let close_after = client_closes || framing == Framing::UntilClose;
    for hop in ["Connection", "Keep-Alive", "Proxy-Connection"] {
        resp.remove(hop);
    }
    if close_after {
        resp.headers.push(("Connection".into(), "close".into()));
    }
    to_client.write_all(&resp.bytes())?;
    let limit = match mode {
        ProxyMode::CutBodiesAfter(n) => Some(n),
        _ => None,
    };
    let blob_get = blob && method == "GET";
    let count = |n: u64| {
        shared.body_bytes.fetch_add(n, Ordering::SeqCst);
        if blob_get {
            shared.blob_body_bytes.fetch_add(n, Ordering::SeqCst);
        }
    };
    let complete = relay_body(&mut from_upstream, to_client, framing, limit, &count)?;
    to_client.flush()?;
    Ok(complete && !close_after)
}
