//! How to talk to registries: TLS verification, credentials, certificate
//! directories, whether index artifacts are used, and registries.conf.
//! Built once from the command line (`--tls-verify`, `--creds`,
//! `--authfile`, `--cert-dir`, `--no-remote-index`, `--registries-conf`) and passed down
//! with the options of the command; a mount daemon gets the same flags from
//! its parent.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::source::registry::credential::Credential;
use crate::source::registry::reference::RepositoryName;
use crate::source::registry::registries_conf::{ConfError, PullSource, RefKind, RegistriesConf};

/// The environment variable the parent hands `--creds` to its daemon in:
/// never on a command line, where any user can read it.
pub const CREDS_ENV: &str = "OCIMOUNT_REGISTRY_CREDS";

#[derive(Clone, Debug)]
pub struct Settings {
    /// Verify TLS certificates and refuse plain HTTP (skopeo's default).
    pub tls_verify: bool,
    /// `--creds USER:PASS`: used instead of any auth file.
    pub creds: Option<Credential>,
    /// `--authfile FILE`: the only credentials file read (it replaces
    /// `$REGISTRY_AUTH_FILE` and the default search).
    pub authfile: Option<PathBuf>,
    /// `--cert-dir`: replaces the certs.d lookup.
    pub cert_dir: Option<PathBuf>,
    /// Look for and use layer-index artifacts pushed with `index push`.
    pub remote_index: bool,
    /// Index eStargz and zstd:chunked layers from their tables of contents
    /// (`--no-toc`: by a full pass). Local images too: it is here because
    /// it travels with the other flags on what may vouch for an index.
    pub tocs: bool,
    /// Bound on one bounded request (a manifest, a token, a span's bytes),
    /// retries included.
    pub request_timeout: Duration,
    /// registries.conf, read once by the command line. A file that cannot
    /// be read is kept as its error, reported when a registry image is
    /// opened: a broken registries.conf does not stop `ls ./layout`.
    pub registries: Arc<std::result::Result<RegistriesConf, ConfError>>,
    /// A content-addressed directory of manifests and configs verified
    /// before (the cache's `documents/sha256`, named by the stage that
    /// knows the cache): one asked for by digest is read from here when
    /// its bytes still hash to it, and one fetched is kept here. None: no
    /// such directory is read or written.
    pub documents: Option<PathBuf>,
}

impl Settings {
    /// The registries.conf rules, or why they could not be read (as an
    /// error about `name`, the image that needed them).
    pub fn registries_conf(&self, name: &RepositoryName) -> Result<&RegistriesConf> {
        self.registries
            .as_ref()
            .as_ref()
            .map_err(|e| Error::Registry {
                registry: name.to_string(),
                reason: format!("registries.conf: {e}"),
            })
    }

    /// Where to pull `name` from, mirrors first (see `registries_conf`);
    /// an error names a blocking rule.
    pub fn pull_sources(&self, name: &RepositoryName, kind: RefKind) -> Result<Vec<PullSource>> {
        self.registries_conf(name)?
            .pull_sources(name, kind)
            .map_err(|e| refused(name, e))
    }

    /// Where to push to `name`: its primary location only.
    pub fn push_source(&self, name: &RepositoryName) -> Result<PullSource> {
        self.registries_conf(name)?
            .push_source(name)
            .map_err(|e| refused(name, e))
    }

    /// These settings for one pull source: an insecure one (registries.conf
    /// `insecure = true`) is spoken to as with `--tls-verify=false`.
    pub fn for_source(&self, source: &PullSource) -> Settings {
        Settings {
            tls_verify: self.tls_verify && !source.insecure,
            ..self.clone()
        }
    }
}

fn refused(name: &RepositoryName, e: ConfError) -> Error {
    Error::Registry {
        registry: name.to_string(),
        reason: e.to_string(),
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            tls_verify: true,
            creds: None,
            authfile: None,
            cert_dir: None,
            remote_index: true,
            tocs: true,
            request_timeout: Duration::from_secs(60),
            // No rules: a library user reads no file unless it asks.
            registries: Arc::new(Ok(RegistriesConf::default())),
            documents: None,
        }
    }
}
