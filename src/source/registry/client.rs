//! A blocking client for the distribution API v2, one per repository.
//!
//! Every request goes through [`Client::send`], which:
//! - authenticates as the registry's `WWW-Authenticate` challenge asks:
//!   anonymous, Basic, or a Bearer token fetched from the challenge's realm
//!   (with the user's credentials when there are any) and kept per scope;
//!   an identity token (an OAuth2 refresh token) is exchanged for the
//!   Bearer token by the OAuth2 POST, and sent as a Basic password only to
//!   a token server that has no POST endpoint (404 or 405);
//! - follows redirects itself, keeping the `Range` header and dropping the
//!   registry's credentials once the host changes (blob GETs are sent to
//!   object storage);
//! - retries 429, 5xx and failed connections with backoff, within a
//!   bounded time (`Settings::request_timeout`).
//!
//! ureq is the HTTP crate: blocking, which suits the FUSE worker threads
//! that wait on a span anyway; small (no async runtime in the daemon); and
//! on rustls, so there is no OpenSSL to cross-build for arm64 and armv7.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use ureq::http::{self, Response};
use ureq::Body;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::limits::MAX_JSON_BYTES;
use crate::oci::media;
use crate::source::registry::challenge::{self, Challenge};
use crate::source::registry::credential::Credential;
use crate::source::registry::credentials::{self, Lookup};
use crate::source::registry::reference::RepositoryName;
use crate::source::registry::settings::Settings;
use crate::source::registry::tls;
use crate::sys::bounded::{self, ReadError};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A stream (a whole layer) may take long in all, but never this long
/// between two reads.
const STREAM_READ_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_REDIRECTS: usize = 5;
const MAX_ATTEMPTS: usize = 4;
const MAX_ERROR_BODY: u64 = 4096;
/// The largest token response read.
const MAX_TOKEN_BYTES: u64 = 1 << 20;
/// The `client_id` of the OAuth2 refresh-token grant.
const OAUTH_CLIENT_ID: &str = "ocimount";

/// What a manifest GET asks for: OCI and Docker v2s2 images and lists.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.list.v2+json";

/// The access a request needs, for the token's scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Pull,
    Push,
}

/// How the registry wants to be spoken to, learnt from `GET /v2/`.
#[derive(Clone, Debug)]
enum Auth {
    None,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// One request, as [`Client::retrying`] sends it. `access` is the scope
/// its registry credentials are for; none for a token request, which
/// carries its own.
struct Exchange<'a> {
    method: &'a str,
    url: &'a str,
    headers: &'a [(&'a str, String)],
    body: Option<&'a [u8]>,
    access: Option<Access>,
    streaming: bool,
    /// The body holds a secret (a refresh token): it is never sent to a
    /// host other than the one asked, whatever a redirect says.
    secret_body: bool,
}

/// A failed exchange, and whether another try may go better.
struct Failure {
    message: String,
    transient: bool,
}

impl Failure {
    fn transient(message: String) -> Failure {
        Failure {
            message,
            transient: true,
        }
    }

    fn fatal(e: impl std::fmt::Display) -> Failure {
        Failure {
            message: e.to_string(),
            transient: false,
        }
    }
}

/// The reason of a registry error, without the registry's name again.
fn reason_of(e: &Error) -> String {
    match e {
        Error::Registry { reason, .. } => reason.clone(),
        other => other.to_string(),
    }
}

/// A manifest or index, read and verified.
pub struct Document {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest: Digest,
}

pub struct Client {
    agent: ureq::Agent,
    name: RepositoryName,
    /// `HOST[:PORT]`, as the API is reached.
    host: String,
    /// `https://HOST` or, with `--tls-verify=false` and no TLS there,
    /// `http://HOST`: learnt by the first request (see [`Client::base`]).
    base: OnceLock<String>,
    /// Held while the first request learns `base`.
    probing: Mutex<()>,
    credential: Option<Credential>,
    auth: Mutex<Auth>,
    /// Bearer tokens by access.
    tokens: Mutex<Vec<(Access, String)>>,
    timeout: Duration,
    /// `--tls-verify`: refuse plain HTTP (for redirects and token realms too).
    tls_verify: bool,
    range_ignored: AtomicBool,
}

impl Client {
    /// A client for the registry of `name`. Nothing is sent yet: the first
    /// request reaches the registry (see [`Client::base`]), so that an image
    /// whose manifest, config and spans are all in the cache opens with no
    /// network (a mount by digest, the mount daemon), and the daemon does
    /// not ask again what its parent just asked.
    pub fn connect(name: &RepositoryName, settings: &Settings) -> Result<Arc<Client>> {
        let host = name.api_host().to_string();
        let agent = tls::agent(&name.domain, settings, CONNECT_TIMEOUT)?;
        let credential = find_credential(name, settings)?;
        Ok(Arc::new(Client {
            agent,
            name: name.clone(),
            host,
            base: OnceLock::new(),
            probing: Mutex::new(()),
            credential,
            auth: Mutex::new(Auth::None),
            tokens: Mutex::new(Vec::new()),
            timeout: settings.request_timeout,
            tls_verify: settings.tls_verify,
            range_ignored: AtomicBool::new(false),
        }))
    }

    /// `https://HOST`, or `http://HOST` where HTTPS fails and
    /// `--tls-verify=false` allows it: learnt once, by `GET /v2/`, which
    /// also tells how the registry authenticates.
    fn base(&self) -> Result<&str> {
        if let Some(base) = self.base.get() {
            return Ok(base);
        }
        let _probing = self.probing.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(base) = self.base.get() {
            return Ok(base);
        }
        let host = &self.host;
        let https = format!("https://{host}");
        let (base, ping) = match self.ping(&https) {
            Ok(ping) => (https, ping),
            Err(e) if !self.tls_verify => {
                tracing::info!(registry = %host, "HTTPS failed ({e}); trying plain HTTP (--tls-verify=false)");
                let http = format!("http://{host}");
                let ping = self.ping(&http).map_err(|e2| {
                    self.error(format!(
                        "cannot reach the registry over HTTPS ({e}) nor over HTTP ({e2})"
                    ))
                })?;
                (http, ping)
            }
            Err(e) => return Err(self.error(format!("cannot reach the registry: {e}"))),
        };
        if ping.status() == 401 {
            *self.auth.lock().unwrap_or_else(|p| p.into_inner()) =
                auth_from(&ping).unwrap_or(Auth::None);
        }
        Ok(self.base.get_or_init(|| base))
    }

    pub fn name(&self) -> &RepositoryName {
        &self.name
    }

    /// `https://HOST/v2/REPO/`: the base of every URL this client asks
    /// (the registry is reached for it the first time).
    pub fn repo_url(&self, tail: &str) -> Result<String> {
        Ok(format!(
            "{}/v2/{}/{tail}",
            self.base()?,
            self.name.repository
        ))
    }

    fn ping(&self, base: &str) -> std::result::Result<Response<Body>, String> {
        let url = format!("{base}/v2/");
        let request = http::Request::get(&url)
            .body(())
            .map_err(|e| e.to_string())?;
        let request = self
            .agent
            .configure_request(request)
            .timeout_global(Some(self.timeout.min(Duration::from_secs(20))))
            .build();
        self.agent.run(request).map_err(|e| e.to_string())
    }

    pub(crate) fn error(&self, reason: String) -> Error {
        Error::Registry {
            registry: self.name.to_string(),
            reason,
        }
    }

    /// A manifest or index by tag or digest, verified against the digest it
    /// was asked by (or, for a tag, the `Docker-Content-Digest` the
    /// registry sends, when it sends one).
    pub fn manifest(&self, reference: &str, expected: Option<&Digest>) -> Result<Document> {
        let url = self.repo_url(&format!("manifests/{reference}"))?;
        let response = self.send(
            "GET",
            &url,
            &[("Accept", MANIFEST_ACCEPT.to_string())],
            None,
            Access::Pull,
            false,
        )?;
        let status = response.status().as_u16();
        if status == 404 {
            return Err(Error::NoManifest(format!(
                "{}: no manifest {reference:?} in the registry",
                self.name
            )));
        }
        if status != 200 {
            return Err(self.status_error(&format!("GET manifest {reference}"), response));
        }
        let header_digest = header(&response, "docker-content-digest");
        let content_type = header(&response, "content-type").unwrap_or_default();
        let bytes = self.read_small(response, MAX_JSON_BYTES, "manifest")?;
        let digest = Digest::of(&bytes);
        let claimed = match expected {
            Some(d) => Some(*d),
            None => header_digest.and_then(|h| Digest::parse(&h).ok()),
        };
        if let Some(claimed) = claimed {
            if claimed != digest {
                return Err(Error::DigestMismatch {
                    what: format!("manifest {reference} from {}", self.name),
                    digest: claimed,
                    actual: digest,
                });
            }
        }
        // The document's own mediaType is what its digest covers: it wins,
        // and a Content-Type that names another kind of document is an
        // error (a registry must not choose how a pinned document is read).
        let declared = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("mediaType")?.as_str().map(str::to_string))
            .filter(|t| !t.is_empty());
        let sent = content_type
            .split(';')
            .next()
            .map(str::trim)
            .filter(|t| !matches!(media::document_kind(t), media::DocumentKind::Other))
            .map(str::to_string);
        let media_type = match (declared, sent) {
            (Some(declared), Some(sent))
                if media::document_kind(&declared) != media::document_kind(&sent) =>
            {
                return Err(self.error(format!(
                    "manifest {reference}: the registry sends it as {sent} but it says it is {declared}"
                )));
            }
            (Some(declared), _) => declared,
            (None, Some(sent)) => sent,
            (None, None) => String::new(),
        };
        Ok(Document {
            bytes,
            media_type,
            digest,
        })
    }

    /// A blob's size, from a HEAD.
    pub fn blob_size(&self, digest: &Digest) -> Result<Option<u64>> {
        let url = self.repo_url(&format!("blobs/{digest}"))?;
        let response = self.send("HEAD", &url, &[], None, Access::Pull, false)?;
        match response.status().as_u16() {
            200 => Ok(header(&response, "content-length").and_then(|l| l.parse().ok())),
            404 => Ok(None),
            _ => Err(self.status_error(&format!("HEAD blob {digest}"), response)),
        }
    }

    /// `len` bytes of blob `digest` from `start`, with a Range request. A
    /// server that ignores Range still works: the bytes before `start` are
    /// read and dropped (and the log says so once).
    pub fn blob_range(&self, digest: &Digest, start: u64, len: u64) -> Result<Vec<u8>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let (mut body, what) = self.blob_range_body(digest, start, len)?;
        let mut bytes = vec![0u8; len as usize];
        body.read_exact(&mut bytes)
            .map_err(|e| self.body_error(&format!("{what}: the body ends early or fails"), e))?;
        Ok(bytes)
    }

    /// The body of a Range request for `len` bytes of blob `digest` from
    /// `start`, as [`blob_range`](Self::blob_range) asks for it, unread:
    /// at most `len` bytes, which the caller reads as they arrive (and
    /// checks it had them all). With it, what it is for messages.
    pub fn blob_range_body(
        &self,
        digest: &Digest,
        start: u64,
        len: u64,
    ) -> Result<(impl Read + use<>, String)> {
        let end = start
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or_else(|| self.error(format!("blob {digest}: no bytes {start}+{len}")))?;
        let url = self.repo_url(&format!("blobs/{digest}"))?;
        let range = format!("bytes={start}-{}", end - 1);
        let response = self.send("GET", &url, &[("Range", range)], None, Access::Pull, false)?;
        let what = format!("blob {digest} bytes {start}..{end}");
        let skip = match response.status().as_u16() {
            206 => {
                let content_range = header(&response, "content-range").unwrap_or_default();
                if !content_range.starts_with(&format!("bytes {start}-")) {
                    return Err(self.error(format!(
                        "{what}: the registry answered with Content-Range {content_range:?}"
                    )));
                }
                0
            }
            200 => {
                if !self.range_ignored.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        registry = %self.name,
                        "the registry ignores Range requests; each read fetches the blob from its start"
                    );
                }
                start
            }
            404 => {
                return Err(Error::MissingBlob {
                    digest: *digest,
                    location: self.name.to_string(),
                })
            }
            _ => return Err(self.status_error(&format!("GET {what}"), response)),
        };
        let mut body = response
            .into_body()
            .into_with_config()
            .limit(u64::MAX)
            .reader();
        io::copy(&mut (&mut body).take(skip), &mut io::sink())
            .map_err(|e| self.body_error(&what, e))?;
        Ok((body.take(len), what))
    }

    /// The whole blob, front to back, as one GET. The reader yields exactly
    /// `size` bytes, or fails: a body that ends early or runs on is an error.
    pub fn blob_stream(&self, digest: &Digest, size: u64) -> Result<BlobStream> {
        let url = self.repo_url(&format!("blobs/{digest}"))?;
        let response = self.send("GET", &url, &[], None, Access::Pull, true)?;
        match response.status().as_u16() {
            200 => {}
            404 => {
                return Err(Error::MissingBlob {
                    digest: *digest,
                    location: self.name.to_string(),
                })
            }
            _ => return Err(self.status_error(&format!("GET blob {digest}"), response)),
        }
        if let Some(length) =
            header(&response, "content-length").and_then(|l| l.parse::<u64>().ok())
        {
            if length != size {
                return Err(self.error(format!(
                    "blob {digest}: the registry sends {length} bytes, the manifest says {size}"
                )));
            }
        }
        Ok(BlobStream {
            body: Box::new(
                response
                    .into_body()
                    .into_with_config()
                    .limit(u64::MAX)
                    .reader(),
            ),
            left: size,
            what: format!("{} blob {digest}", self.name),
            window_start: Instant::now(),
            window_bytes: 0,
        })
    }

    /// Send one request, authenticating, following redirects and retrying
    /// as the module comment says. `streaming` lifts the overall time bound
    /// (a whole layer) and keeps only the per-read one.
    pub fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        body: Option<&[u8]>,
        access: Access,
        streaming: bool,
    ) -> Result<Response<Body>> {
        let request = Exchange {
            method,
            url,
            headers,
            body,
            access: Some(access),
            streaming,
            secret_body: false,
        };
        self.retrying(&request, MAX_ATTEMPTS)
    }

    /// [`send`](Self::send) once, with no retry: for lookups that are
    /// optional (the referrers of an image), where waiting out a failing
    /// registry buys nothing.
    pub fn send_once(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
    ) -> Result<Response<Body>> {
        let request = Exchange {
            method,
            url,
            headers,
            body: None,
            access: Some(Access::Pull),
            streaming: false,
            secret_body: false,
        };
        self.retrying(&request, 1)
    }

    /// Up to `attempts` tries of `request` within the request bound:
    /// transient failures (a broken connection, a timeout, 429 and 5xx) are
    /// retried with backoff, a 401 is answered once by authenticating, and
    /// anything else is final.
    fn retrying(&self, request: &Exchange<'_>, attempts: usize) -> Result<Response<Body>> {
        let deadline = Instant::now() + self.timeout;
        let mut attempt = 0;
        let mut authenticated_again = false;
        loop {
            attempt += 1;
            let (outcome, at_origin) = match self.send_following_redirects(request, deadline) {
                Ok((response, at_origin)) => (Ok(response), at_origin),
                Err(f) => (Err(f), true),
            };
            let retry_after = match &outcome {
                // Only the registry's own 401 is answered: a host it
                // redirected to does not choose where credentials go.
                Ok(r)
                    if r.status() == 401
                        && at_origin
                        && !authenticated_again
                        && request.access.is_some() =>
                {
                    authenticated_again = true;
                    if self.authenticate(r, request.access.unwrap_or(Access::Pull))? {
                        attempt -= 1;
                        continue;
                    }
                    None
                }
                Ok(r) if matches!(r.status().as_u16(), 429 | 500 | 502 | 503 | 504) => Some(
                    header(r, "retry-after")
                        .and_then(|s| s.parse::<u64>().ok())
                        .map(|s| Duration::from_secs(s.min(10))),
                ),
                Ok(_) => None,
                Err(Failure {
                    transient: true, ..
                }) => Some(None),
                Err(Failure { message, .. }) => {
                    return Err(self.error(format!("{} {}: {message}", request.method, request.url)))
                }
            };
            let Some(retry_after) = retry_after else {
                return outcome.map_err(|f| self.error(f.message));
            };
            let pause = retry_after.unwrap_or(Duration::from_millis(250 << attempt.min(4)));
            if attempt >= attempts || Instant::now() + pause >= deadline {
                let tries = match attempt {
                    1 => "1 attempt".to_string(),
                    n => format!("{n} attempts"),
                };
                return Err(match outcome {
                    Ok(r) => {
                        let what = format!("{} {}", request.method, request.url);
                        let error = self.status_error(&what, r);
                        match error {
                            Error::Registry { registry, reason } => Error::Registry {
                                registry,
                                reason: format!("{reason} (gave up after {tries})"),
                            },
                            other => other,
                        }
                    }
                    Err(f) => self.error(format!(
                        "{} {}: {} (gave up after {tries})",
                        request.method, request.url, f.message
                    )),
                });
            }
            match &outcome {
                Ok(r) => {
                    tracing::debug!(url = request.url, status = r.status().as_u16(), "retrying")
                }
                Err(f) => tracing::debug!(url = request.url, "retrying after: {}", f.message),
            }
            std::thread::sleep(pause);
        }
    }

    fn send_following_redirects(
        &self,
        request: &Exchange<'_>,
        deadline: Instant,
    ) -> std::result::Result<(Response<Body>, bool), Failure> {
        // Whose credentials these are: the registry's for a registry
        // request (whatever URL its upload Location gave), the token
        // server's for a token request.
        let origin = match request.access {
            Some(_) => {
                host_of(self.base.get().map_or(request.url, String::as_str)).to_ascii_lowercase()
            }
            None => host_of(request.url).to_ascii_lowercase(),
        };
        let mut url = request.url.to_string();
        let mut method = request.method.to_string();
        let mut body = request.body;
        for _ in 0..=MAX_REDIRECTS {
            let at_origin = host_of(&url).to_ascii_lowercase() == origin;
            let mut builder = http::Request::builder().method(method.as_str()).uri(&url);
            for (name, value) in request.headers {
                // Credentials go to the host they are for, never further.
                let secret = name.eq_ignore_ascii_case("authorization")
                    || name.eq_ignore_ascii_case("cookie");
                if at_origin || !secret {
                    builder = builder.header(*name, value);
                }
            }
            if at_origin {
                if let Some(authorization) = request.access.and_then(|a| self.authorization(a)) {
                    builder = builder.header("Authorization", authorization);
                }
            }
            if request.secret_body && body.is_some() && !at_origin {
                return Err(Failure::fatal(format!(
                    "refusing to send the identity token to {}, where {} redirected it",
                    host_of(&url),
                    origin
                )));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Failure::transient(self.timed_out()));
            }
            let response = match body {
                Some(bytes) => {
                    let built = builder.body(bytes.to_vec()).map_err(Failure::fatal)?;
                    self.agent
                        .run(self.configured(built, request.streaming, left))
                }
                None => {
                    let built = builder.body(()).map_err(Failure::fatal)?;
                    self.agent
                        .run(self.configured(built, request.streaming, left))
                }
            }
            .map_err(|e| self.failure(e))?;
            let status = response.status().as_u16();
            if !matches!(status, 301 | 302 | 303 | 307 | 308) {
                return Ok((response, at_origin));
            }
            let location = header(&response, "location")
                .ok_or_else(|| Failure::fatal(format!("a {status} redirect without a Location")))?;
            let next = resolve(&url, &location);
            if self.tls_verify && is_https(&url) && !is_https(&next) {
                return Err(Failure::fatal(format!(
                    "refusing a redirect from HTTPS to {next} (plain HTTP only with --tls-verify=false)"
                )));
            }
            url = next;
            if status == 303 {
                // See Other: a GET of the new place, with nothing to send.
                method = "GET".to_string();
                body = None;
            }
            tracing::debug!(%url, "following a {status} redirect");
        }
        Err(Failure::fatal(format!(
            "more than {MAX_REDIRECTS} redirects"
        )))
    }

    /// What a failed exchange means: worth another try or not.
    fn failure(&self, e: ureq::Error) -> Failure {
        match e {
            ureq::Error::Timeout(_) => Failure::transient(self.timed_out()),
            ureq::Error::Io(e) if e.kind() == io::ErrorKind::TimedOut => {
                Failure::transient(self.timed_out())
            }
            ureq::Error::Io(_)
            | ureq::Error::ConnectionFailed
            | ureq::Error::HostNotFound
            | ureq::Error::Protocol(_) => Failure::transient(e.to_string()),
            other => Failure::fatal(other.to_string()),
        }
    }

    /// A body that could not be read, saying which bound it hit.
    pub(crate) fn body_error(&self, what: &str, e: io::Error) -> Error {
        let timed_out = e.kind() == io::ErrorKind::TimedOut || e.to_string().starts_with("timeout");
        if timed_out {
            self.error(format!("{what}: {}", self.timed_out()))
        } else {
            self.error(format!("{what}: {e}"))
        }
    }

    fn timed_out(&self) -> String {
        format!(
            "no answer within the registry timeout ({} s, --registry-timeout)",
            self.timeout.as_secs()
        )
    }

    fn configured<S: ureq::AsSendBody>(
        &self,
        request: http::Request<S>,
        streaming: bool,
        left: Duration,
    ) -> http::Request<S> {
        let config = self
            .agent
            .configure_request(request)
            .http_status_as_error(false)
            .max_redirects(0);
        if streaming {
            config
                .timeout_recv_response(Some(left))
                .timeout_per_read(Some(STREAM_READ_TIMEOUT))
                .build()
        } else {
            config
                .timeout_global(Some(left))
                .timeout_per_read(Some(STREAM_READ_TIMEOUT.min(left)))
                .build()
        }
    }

    fn authorization(&self, access: Access) -> Option<String> {
        match &*self.auth.lock().unwrap_or_else(|p| p.into_inner()) {
            Auth::None => None,
            Auth::Basic => self.credential.as_ref().map(basic_header),
            Auth::Bearer { .. } => {
                let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
                tokens
                    .iter()
                    .find(|(a, _)| *a == access || (*a == Access::Push && access == Access::Pull))
                    .map(|(_, t)| format!("Bearer {t}"))
            }
        }
    }

    /// Answer a 401: learn the scheme from its challenge and, for Bearer,
    /// fetch a token. Returns whether the request is worth sending again.
    fn authenticate(&self, response: &Response<Body>, access: Access) -> Result<bool> {
        let Some(auth) = auth_from(response) else {
            return Ok(false);
        };
        *self.auth.lock().unwrap_or_else(|p| p.into_inner()) = auth.clone();
        match auth {
            Auth::None => Ok(false),
            Auth::Basic => {
                if self.credential.is_none() {
                    return Err(self.error(
                        "the registry asks for a user name and password; give --creds USER:PASS \
                         or log in (skopeo login / podman login)"
                            .to_string(),
                    ));
                }
                Ok(true)
            }
            Auth::Bearer { realm, service } => {
                let token = self.fetch_token(&realm, service.as_deref(), access)?;
                let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
                tokens.retain(|(a, _)| *a != access);
                tokens.push((access, token));
                Ok(true)
            }
        }
    }

    fn fetch_token(&self, realm: &str, service: Option<&str>, access: Access) -> Result<String> {
        let actions = match access {
            Access::Pull => "pull",
            Access::Push => "pull,push",
        };
        if self.tls_verify && !realm.to_ascii_lowercase().starts_with("https://") {
            return Err(self.error(format!(
                "the token realm {realm} is not HTTPS; credentials are not sent in clear \
                 (--tls-verify=false allows it)"
            )));
        }
        let scope = format!("repository:{}:{actions}", self.name.repository);
        if let Some(Credential::IdentityToken { token, .. }) = &self.credential {
            if let Some(access_token) =
                self.exchange_identity_token(realm, service, &scope, token)?
            {
                return Ok(access_token);
            }
        }
        let url = challenge::token_url(realm, service, &[scope]);
        let authorization: Vec<(&str, String)> = self
            .credential
            .as_ref()
            .map(|c| ("Authorization", basic_header(c)))
            .into_iter()
            .collect();
        let request = Exchange {
            method: "GET",
            url: &url,
            headers: &authorization,
            body: None,
            access: None,
            streaming: false,
            secret_body: false,
        };
        let response = self
            .retrying(&request, MAX_ATTEMPTS)
            .map_err(|e| self.error(format!("token request to {realm}: {}", reason_of(&e))))?;
        let status = response.status().as_u16();
        if status != 200 {
            let reason = if status == 401 {
                "the credentials were refused".to_string()
            } else {
                format!("HTTP {status}")
            };
            return Err(self.error(format!("token request to {realm}: {reason}")));
        }
        let body = self.read_small(response, MAX_TOKEN_BYTES, "token response")?;
        let token = challenge::parse_token_response(&body)
            .map_err(|e| self.error(format!("token from {realm}: {e}")))?;
        Ok(token.token)
    }

    /// The OAuth2 refresh-token grant (the Docker token specification's
    /// `POST /token`): `refresh_token` exchanged at `realm` for an access
    /// token. None when the token server has no POST endpoint (404, or 405
    /// Method Not Allowed): the caller then asks with GET, as containerd
    /// does.
    fn exchange_identity_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        refresh_token: &str,
    ) -> Result<Option<String>> {
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ];
        if let Some(service) = service.filter(|s| !s.is_empty()) {
            form.push(("service", service));
        }
        form.push(("scope", scope));
        form.push(("client_id", OAUTH_CLIENT_ID));
        let body = challenge::form_urlencoded(&form);
        let url = realm.split('#').next().unwrap_or(realm);
        let headers = [(
            "Content-Type",
            "application/x-www-form-urlencoded".to_string(),
        )];
        let request = Exchange {
            method: "POST",
            url,
            headers: &headers,
            body: Some(body.as_bytes()),
            access: None,
            streaming: false,
            secret_body: true,
        };
        let what = format!("identity token exchange (OAuth2 POST) at {realm}");
        let response = self
            .retrying(&request, MAX_ATTEMPTS)
            .map_err(|e| self.error(format!("{what}: {}", reason_of(&e))))?;
        let status = response.status().as_u16();
        match status {
            200 => {}
            404 | 405 => {
                tracing::debug!(
                    realm,
                    status,
                    "the token server takes no OAuth2 POST; asking with GET"
                );
                return Ok(None);
            }
            _ => {
                let said = self
                    .read_small(response, MAX_ERROR_BODY, "token error")
                    .map(|body| oauth_error(&body))
                    .unwrap_or_default();
                let reason = match status {
                    400 | 401 => format!("the identity token was refused (HTTP {status}{said})"),
                    _ => format!("HTTP {status}{said}"),
                };
                return Err(self.error(format!("{what}: {reason}")));
            }
        }
        let body = self.read_small(response, MAX_TOKEN_BYTES, "token response")?;
        let token = challenge::parse_oauth2_token_response(&body)
            .map_err(|e| self.error(format!("{what}: {e}")))?;
        Ok(Some(token.token))
    }

    /// A small body, refused past `limit` bytes before it is all read.
    pub(crate) fn read_small(
        &self,
        response: Response<Body>,
        limit: u64,
        what: &str,
    ) -> Result<Vec<u8>> {
        if let Some(length) =
            header(&response, "content-length").and_then(|l| l.parse::<u64>().ok())
        {
            if length > limit {
                return Err(self.error(format!(
                    "the {what} is {length} bytes, more than the {limit}-byte limit"
                )));
            }
        }
        // In memory that follows what arrives (a failed allocation is an
        // error, never an abort), refused past the limit.
        let body = response
            .into_body()
            .into_with_config()
            .limit(u64::MAX)
            .reader();
        bounded::read(body, limit).map_err(|e| match e {
            ReadError::TooLarge { .. } => {
                self.error(format!("the {what} is more than the {limit}-byte limit"))
            }
            ReadError::Io(e) => self.body_error(&format!("reading the {what}"), e),
            e @ ReadError::NoMemory { .. } => self.error(format!("reading the {what}: {e}")),
        })
    }

    /// An unexpected status, with what the registry said (its first few KiB).
    pub(crate) fn status_error(&self, what: &str, response: Response<Body>) -> Error {
        let status = response.status();
        let mut text = String::new();
        let _ = response
            .into_body()
            .into_with_config()
            .limit(u64::MAX)
            .reader()
            .take(MAX_ERROR_BODY)
            .read_to_string(&mut text);
        let said = registry_message(&text);
        let hint = match status.as_u16() {
            401 => " (authentication failed; check --creds or the auth file)",
            403 => " (access denied)",
            _ => "",
        };
        self.error(format!("{what}: HTTP {status}{hint}{said}"))
    }
}

/// The credential to use for `name`: `--creds`, or the first auth file
/// (`--authfile`, else `$REGISTRY_AUTH_FILE`, else skopeo's search) that has
/// one, directly or through a credential helper it names.
fn find_credential(name: &RepositoryName, settings: &Settings) -> Result<Option<Credential>> {
    if let Some(creds) = &settings.creds {
        return Ok(Some(creds.clone()));
    }
    let mut env = credentials::Env::from_process();
    if let Some(authfile) = &settings.authfile {
        // A file named on the command line must be there: a typo would
        // otherwise quietly mean anonymous access.
        if let Err(e) = std::fs::metadata(authfile) {
            return Err(Error::Registry {
                registry: name.to_string(),
                reason: format!("--authfile {}: {e}", authfile.display()),
            });
        }
        env.registry_auth_file = Some(authfile.clone());
    }
    let helpers = env.helper_runner();
    match credentials::lookup(&env, &name.domain, &name.repository, &helpers) {
        Ok(Lookup::Found(found)) => {
            match &found.helper {
                Some(helper) => tracing::debug!(
                    file = %found.file.display(),
                    server = %found.key,
                    helper = %helper,
                    "registry credentials from a credential helper"
                ),
                None => tracing::debug!(
                    file = %found.file.display(),
                    key = %found.key,
                    "registry credentials"
                ),
            }
            Ok(Some(found.credential))
        }
        Ok(Lookup::None) => Ok(None),
        Err(e) => Err(Error::Registry {
            registry: name.to_string(),
            reason: e.to_string(),
        }),
    }
}

fn auth_from(response: &Response<Body>) -> Option<Auth> {
    let mut found = None;
    for value in response.headers().get_all("www-authenticate") {
        let Ok(text) = value.to_str() else { continue };
        for challenge in challenge::parse_challenges(text) {
            match challenge {
                Challenge::Bearer { realm, service, .. } => {
                    return Some(Auth::Bearer { realm, service });
                }
                Challenge::Basic { .. } => found = Some(Auth::Basic),
                Challenge::Other(_) => {}
            }
        }
    }
    found
}

/// The OAuth2 `error` code of an error body (`invalid_grant`), when it is a
/// plain code: the rest of the body is not repeated.
fn oauth_error(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error")?.as_str().map(str::to_string))
        .filter(|code| {
            !code.is_empty()
                && code.len() <= 64
                && code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        })
        .map(|code| format!(": {code}"))
        .unwrap_or_default()
}

/// `Authorization: Basic` for the credentials. An identity token is sent
/// as the password only where nothing better exists: to a registry that
/// asks for Basic, or to a token server without the OAuth2 POST.
fn basic_header(credential: &Credential) -> String {
    use base64::Engine;
    let (user, secret) = match credential {
        Credential::Basic { username, password } => (username, password),
        Credential::IdentityToken { username, token } => (username, token),
    };
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"));
    format!("Basic {encoded}")
}

pub(crate) fn header(response: &Response<Body>, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The `errors[].message` of a distribution error body, when there is one.
fn registry_message(text: &str) -> String {
    let messages: Vec<String> = serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| v.get("errors")?.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|e| {
            let code = e.get("code").and_then(|c| c.as_str()).unwrap_or("");
            let message = e.get("message").and_then(|m| m.as_str()).unwrap_or("");
            (!code.is_empty() || !message.is_empty())
                .then(|| format!("{code} {message}").trim().to_string())
        })
        .collect();
    if messages.is_empty() {
        String::new()
    } else {
        format!(": {}", messages.join("; "))
    }
}

/// `scheme://host[:port]` of a URL, for telling whether a redirect left the registry.
fn host_of(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let end = url[after_scheme..]
        .find('/')
        .map_or(url.len(), |i| after_scheme + i);
    &url[..end]
}

/// The scheme of an absolute URL (`SCHEME://…`, RFC 3986: a letter, then
/// letters, digits, `+`, `-` or `.`), lowercased; none for a relative one,
/// even one with `://` further on (in its query, say).
fn scheme_of(url: &str) -> Option<String> {
    let (scheme, _) = url.split_once("://")?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    let valid = first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then(|| scheme.to_ascii_lowercase())
}

/// Whether `url` is HTTPS, however its scheme is spelled.
fn is_https(url: &str) -> bool {
    scheme_of(url).as_deref() == Some("https")
}

/// A `Location` made absolute against the URL it answered, its scheme
/// lowercased.
fn resolve(base: &str, location: &str) -> String {
    if let Some(scheme) = scheme_of(location) {
        format!("{scheme}{}", &location[scheme.len()..])
    } else if let Some(rest) = location.strip_prefix("//") {
        let scheme = scheme_of(base).unwrap_or_else(|| "https".to_string());
        format!("{scheme}://{rest}")
    } else if location.starts_with('/') {
        format!("{}{location}", host_of(base))
    } else {
        let dir = base.rsplit_once('/').map_or(base, |(d, _)| d);
        format!("{dir}/{location}")
    }
}

/// A blob's body: exactly its size, or an error. A body that drips (less
/// than [`MIN_STREAM_RATE`] bytes in any [`STREAM_READ_TIMEOUT`]) fails
/// too: each read within the per-read timeout is not enough to bound it.
pub struct BlobStream {
    body: Box<dyn Read + Send>,
    left: u64,
    what: String,
    window_start: Instant,
    window_bytes: u64,
}

/// The least a stream must deliver per `STREAM_READ_TIMEOUT`.
const MIN_STREAM_RATE: u64 = 64 * 1024;

impl Read for BlobStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self
            .body
            .read(&mut buf[..want])
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.what)))?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{}: the body ends {} bytes early", self.what, self.left),
            ));
        }
        self.left -= n as u64;
        self.window_bytes += n as u64;
        if self.window_start.elapsed() >= STREAM_READ_TIMEOUT {
            if self.window_bytes < MIN_STREAM_RATE && self.left > 0 {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{}: only {} bytes in {} s; the registry is too slow",
                        self.what,
                        self.window_bytes,
                        STREAM_READ_TIMEOUT.as_secs()
                    ),
                ));
            }
            self.window_start = Instant::now();
            self.window_bytes = 0;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_locations_are_resolved() {
        let base = "https://r.io:5000/v2/a/blobs/sha256:x";
        assert_eq!(resolve(base, "https://s3/o?x=1"), "https://s3/o?x=1");
        assert_eq!(resolve(base, "//cdn/o"), "https://cdn/o");
        assert_eq!(resolve(base, "/v2/b"), "https://r.io:5000/v2/b");
        assert_eq!(resolve(base, "y"), "https://r.io:5000/v2/a/blobs/y");
        assert_eq!(host_of(base), "https://r.io:5000");
        assert_eq!(host_of("http://h"), "http://h");
        // `://` only in the query: a relative reference, not another host.
        assert_eq!(
            resolve(base, "/v2/b?next=http://evil/x"),
            "https://r.io:5000/v2/b?next=http://evil/x"
        );
        assert_eq!(
            resolve(base, "o?u=http://evil"),
            "https://r.io:5000/v2/a/blobs/o?u=http://evil"
        );
        // Schemes are case-insensitive: HTTP:// is plain HTTP.
        assert_eq!(resolve(base, "HTTP://evil/o"), "http://evil/o");
        assert!(!is_https(&resolve(base, "HTTP://evil/o")));
        assert!(is_https("HTTPS://cdn/o"));
        assert!(!is_https("/x?u=https://y"));
    }

    #[test]
    fn oauth_errors_are_quoted_only_as_codes() {
        assert_eq!(
            oauth_error(br#"{"error":"invalid_grant"}"#),
            ": invalid_grant"
        );
        assert_eq!(oauth_error(br#"{"error":"a b secret"}"#), "");
        assert_eq!(oauth_error(b"<html>"), "");
    }

    #[test]
    fn registry_errors_are_quoted() {
        let body = r#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}"#;
        assert_eq!(
            registry_message(body),
            ": BLOB_UNKNOWN blob unknown to registry"
        );
        assert_eq!(registry_message("<html>"), "");
    }
}
