//! How this process talks to registries: TLS verification, credentials,
//! certificate directories and whether index artifacts are used. Set once
//! from the command line (`--tls-verify`, `--creds`, `--cert-dir`,
//! `--no-remote-index`) before any image is opened; a mount daemon gets the
//! same settings from its parent.

use std::path::PathBuf;
use std::sync::OnceLock;
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
            cert_dir: None,
            remote_index: true,
            request_timeout: Duration::from_secs(60),
        }
    }
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

/// Set this process's registry settings; the first call wins.
pub fn configure(settings: Settings) {
    let _ = SETTINGS.set(settings);
}

/// This process's registry settings (the defaults when none were set).
pub fn current() -> &'static Settings {
    SETTINGS.get_or_init(Settings::default)
}

/// Give a child `ocimount` process (the mount daemon) these settings: as
/// arguments, and the credentials in its environment.
pub fn pass_to(cmd: &mut std::process::Command) {
    let settings = current();
    cmd.arg(format!("--tls-verify={}", settings.tls_verify));
    cmd.arg("--registry-timeout")
        .arg(settings.request_timeout.as_secs().to_string());
    if let Some(dir) = &settings.cert_dir {
        cmd.arg("--cert-dir").arg(dir);
    }
    if !settings.remote_index {
        cmd.arg("--no-remote-index");
    }
    match &settings.creds {
        Some(Credential::Basic { username, password }) => {
            cmd.env(CREDS_ENV, format!("{username}:{password}"));
        }
        _ => {
            cmd.env_remove(CREDS_ENV);
        }
    }
}
