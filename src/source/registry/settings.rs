//! How to talk to registries: TLS verification, credentials, certificate
//! directories and whether index artifacts are used. Built once from the
//! command line (`--tls-verify`, `--creds`, `--authfile`, `--cert-dir`,
//! `--no-remote-index`) and passed down with the options of the command;
//! a mount daemon gets the same flags from its parent.

use std::path::PathBuf;
use std::time::Duration;

use crate::source::registry::credentials::Credential;

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
    /// Bound on one bounded request (a manifest, a token, a span's bytes),
    /// retries included.
    pub request_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            tls_verify: true,
            creds: None,
            authfile: None,
            cert_dir: None,
            remote_index: true,
            request_timeout: Duration::from_secs(60),
        }
    }
}
