//! Registry credentials from the files `podman login`, `skopeo login` and
//! `docker login` write, found the way containers-image (and so skopeo and
//! podman) finds them.
//!
//! # Which files
//!
//! containers-auth.json(5) and containers-image's `pkg/docker/config`:
//!
//! * `$REGISTRY_AUTH_FILE`, when set, is the only file read: skopeo passes
//!   it as an explicit auth file, and an explicit file replaces the search.
//!   `--authfile FILE` (the caller sets [`Env::registry_auth_file`]) is
//!   such a file too, and takes the place of the variable.
//! * Otherwise, in order:
//!   1. `$XDG_RUNTIME_DIR/containers/auth.json`, or
//!      `/run/containers/$UID/auth.json` when `$XDG_RUNTIME_DIR` is unset;
//!   2. `$XDG_CONFIG_HOME/containers/auth.json` (default
//!      `$HOME/.config/containers/auth.json`);
//!   3. `$DOCKER_CONFIG/config.json` (default `$HOME/.docker/config.json`);
//!   4. `$HOME/.dockercfg`, Docker's legacy format, whose top level is the
//!      `auths` map itself.
//!
//! A missing file is skipped; one that cannot be read or is not valid JSON is
//! an error naming it, as in containers-image. The first file with usable
//! credentials for the image wins.
//!
//! # Which entry in a file
//!
//! The `auths` map's keys are registries (`quay.io`), namespaces or
//! repositories within one (`quay.io/myorg`, `quay.io/myorg/app`), or, as old
//! `docker login` wrote them, URLs (`https://index.docker.io/v1/`). For
//! `host` and `repository` the keys `host/repository`, then each parent
//! namespace, then `host` are tried exactly, most specific first (the legacy
//! file only knows hosts). Failing that, every key is normalised to a host
//! (scheme and path of a URL stripped; a schemeless key only loses a trailing
//! `/`, `/v1/` or `/v2/`) and compared with `host`, Docker Hub's names
//! `docker.io`, `index.docker.io` and `registry-1.docker.io` counting as one.
//! Several such keys are taken in sorted order, for determinism.
//!
//! An entry holds `auth`, base64 of `user:password`, optionally with an
//! `identitytoken` (an OAuth2 refresh token, returned as
//! [`Credential::IdentityToken`]); plain `username`/`password` fields are
//! tolerated too. An empty entry (`{}`) is the placeholder Docker writes when
//! a credential store holds the secret, and is passed over. Unlike
//! containers-image, which logs and passes over an `auth` without a `:`, that
//! is an error naming the file and key here, like bad base64.
//!
//! # Credential helpers
//!
//! Within each file, in containers-image's order:
//!
//! 1. a `credHelpers` entry for the host (its exact key, else a key that
//!    normalises to the host, as Docker keys Docker Hub by its v1 URL) runs
//!    that helper ([`crate::source::registry::cred_helper`]) for the server
//!    named by the key as written. Its credentials win; if it has none, the
//!    rest of the file is passed over (containers-image returns the
//!    helper's answer for the file, empty or not) and the search goes on
//!    with the next file;
//! 2. the `auths` entry, as above;
//! 3. `credsStore`, a helper for every registry, asked for the host (Docker
//!    Hub as `https://index.docker.io/v1/`, as Docker names it). This is
//!    Docker's, which containers-image does not read: it comes after the
//!    file's `auths` entry, so a file with both gives the entry, and before
//!    the next file.
//!
//! A helper that has no credentials lets the search go on; one that fails
//! (cannot be run, exits with an error, times out, answers with something
//! else than its JSON) stops it with an error naming the helper and file.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use serde_json::{Map, Value};

use crate::source::registry::cred_helper::{HelperError, HelperRunner, DOCKER_HUB_SERVER};
use crate::source::registry::credential::Credential;
use crate::sys::bounded::{self, FileRead};

/// The largest credentials file read.
pub const MAX_AUTH_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Standard base64, with or without padding (tools differ in what they write).
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The names Docker Hub goes by in credentials files.
const DOCKER_HUB_ALIASES: [&str; 3] = ["docker.io", "index.docker.io", "registry-1.docker.io"];

/// The parts of the process environment that decide where credentials are
/// looked for. Empty variables count as unset, as in containers-image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    /// `$REGISTRY_AUTH_FILE`, or `--authfile`: the only file read when set.
    pub registry_auth_file: Option<PathBuf>,
    /// `$XDG_RUNTIME_DIR`.
    pub xdg_runtime_dir: Option<PathBuf>,
    /// `$XDG_CONFIG_HOME`.
    pub xdg_config_home: Option<PathBuf>,
    /// `$HOME`.
    pub home: Option<PathBuf>,
    /// `$DOCKER_CONFIG`: the directory holding Docker's `config.json`.
    pub docker_config: Option<PathBuf>,
    /// The real user id, naming `/run/containers/$UID/auth.json` when
    /// `$XDG_RUNTIME_DIR` is unset (podman's primary file for root).
    pub uid: Option<u32>,
    /// `$PATH`, where credential helpers are looked for.
    pub search_path: Option<OsString>,
}

impl Env {
    /// Reads the variables of the running process.
    pub fn from_process() -> Env {
        let variable = |name: &str| {
            std::env::var_os(name)
                .filter(|value| !value.is_empty())
                .map(PathBuf::from)
        };
        // SAFETY: getuid cannot fail and has no preconditions.
        let uid = unsafe { libc::getuid() };
        Env {
            registry_auth_file: variable("REGISTRY_AUTH_FILE"),
            xdg_runtime_dir: variable("XDG_RUNTIME_DIR"),
            xdg_config_home: variable("XDG_CONFIG_HOME"),
            home: variable("HOME"),
            docker_config: variable("DOCKER_CONFIG"),
            uid: Some(uid),
            search_path: std::env::var_os("PATH").filter(|path| !path.is_empty()),
        }
    }

    /// The credential helpers of this environment, with the default bounds.
    pub fn helper_runner(&self) -> HelperRunner {
        HelperRunner::new(self.search_path.clone())
    }

    /// The credentials files to read, in order, with their formats.
    fn auth_files(&self) -> Vec<AuthFile> {
        if let Some(explicit) = &self.registry_auth_file {
            return vec![AuthFile::current(explicit.clone())];
        }
        let mut files = Vec::new();
        if let Some(runtime_dir) = &self.xdg_runtime_dir {
            files.push(AuthFile::current(runtime_dir.join("containers/auth.json")));
        } else if let Some(uid) = self.uid {
            files.push(AuthFile::current(PathBuf::from(format!(
                "/run/containers/{uid}/auth.json"
            ))));
        }
        let config_home = self
            .xdg_config_home
            .clone()
            .or_else(|| self.home.as_ref().map(|home| home.join(".config")));
        if let Some(config_home) = config_home {
            files.push(AuthFile::current(config_home.join("containers/auth.json")));
        }
        let docker_dir = self
            .docker_config
            .clone()
            .or_else(|| self.home.as_ref().map(|home| home.join(".docker")));
        if let Some(docker_dir) = docker_dir {
            files.push(AuthFile::current(docker_dir.join("config.json")));
        }
        if let Some(home) = &self.home {
            files.push(AuthFile {
                path: home.join(".dockercfg"),
                legacy_format: true,
            });
        }
        files
    }
}

/// Credentials and where they came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub credential: Credential,
    /// The file they were read from, or that named the helper.
    pub file: PathBuf,
    /// The `auths` or `credHelpers` key that matched, as written in the
    /// file; for `credsStore`, the server the helper was asked for.
    pub key: String,
    /// The credential helper that gave them, if one did.
    pub helper: Option<String>,
}

/// What the credentials files (and the helpers they name) say about a
/// registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Found(Found),
    /// No credentials: access is anonymous.
    None,
}

/// Runs a credential helper: `helper` is the name in the file (the program
/// is `docker-credential-<helper>`), `server` what it is asked for.
/// [`HelperRunner`] is the real one.
pub trait RunHelper {
    fn get(&self, helper: &str, server: &str) -> Result<Option<Credential>, HelperError>;
}

impl RunHelper for HelperRunner {
    fn get(&self, helper: &str, server: &str) -> Result<Option<Credential>, HelperError> {
        HelperRunner::get(self, helper, server)
    }
}

/// Why credentials could not be looked up or parsed.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("credentials file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("credentials file {} is larger than {limit} bytes", path.display())]
    TooLarge { path: PathBuf, limit: u64 },

    #[error("credentials file {} is not valid JSON: {source}", path.display())]
    InvalidJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    #[error("credentials file {}: {reason}", path.display())]
    InvalidFormat { path: PathBuf, reason: String },

    #[error("credentials file {}, entry {key:?}: {reason}", path.display())]
    InvalidEntry {
        path: PathBuf,
        key: String,
        reason: &'static str,
    },

    #[error("credentials file {}: {source}", path.display())]
    Helper {
        path: PathBuf,
        #[source]
        source: HelperError,
    },

    #[error("--creds is empty: expected USERNAME:PASSWORD")]
    EmptyCredsFlag,

    #[error("--creds has no password: expected USERNAME:PASSWORD (asking for the password is not supported)")]
    CredsFlagWithoutPassword,

    #[error("--creds has an empty user name: expected USERNAME:PASSWORD")]
    CredsFlagWithoutUsername,
}

/// Finds the credentials for `repository` (`library/debian`; may be empty)
/// on `host` (`docker.io`, `127.0.0.1:5000`), following the rules in the
/// module documentation; `helpers` runs the credential helpers the files
/// name.
pub fn lookup(
    env: &Env,
    host: &str,
    repository: &str,
    helpers: &dyn RunHelper,
) -> Result<Lookup, CredentialsError> {
    let target = Target::new(host, repository);
    for auth_file in env.auth_files() {
        let Some(contents) = read_bounded(&auth_file.path)? else {
            continue;
        };
        let parsed = ParsedFile::parse(&auth_file, &contents)?;
        let ask = |helper: &str, server: &str| {
            helpers
                .get(helper, server)
                .map_err(|source| CredentialsError::Helper {
                    path: auth_file.path.clone(),
                    source,
                })
        };
        if let Some((key, helper)) = parsed.credential_helper_for(&target) {
            if let Some(credential) = ask(&helper, &key)? {
                return Ok(Lookup::Found(Found {
                    credential,
                    file: auth_file.path,
                    key,
                    helper: Some(helper),
                }));
            }
            tracing::debug!(
                "credential helper {helper:?} ({}) has no credentials for {key:?}",
                auth_file.path.display()
            );
            continue;
        }
        if let Some((key, entry)) = parsed.matching_entry(&target) {
            if let Some(credential) = decode_entry(&auth_file.path, key, entry)? {
                return Ok(Lookup::Found(Found {
                    credential,
                    file: auth_file.path,
                    key: key.to_string(),
                    helper: None,
                }));
            }
            tracing::debug!(
                "empty credentials entry {key:?} in {} (a credential store placeholder?)",
                auth_file.path.display()
            );
        }
        if let Some(store) = &parsed.credential_store {
            let server = if is_docker_hub(host) {
                DOCKER_HUB_SERVER.to_string()
            } else {
                host.to_string()
            };
            if let Some(credential) = ask(store, &server)? {
                return Ok(Lookup::Found(Found {
                    credential,
                    file: auth_file.path,
                    key: server,
                    helper: Some(store.clone()),
                }));
            }
            tracing::debug!(
                "credential store {store:?} ({}) has no credentials for {server:?}",
                auth_file.path.display()
            );
        }
    }
    Ok(Lookup::None)
}

/// Parses skopeo's `--creds USERNAME[:PASSWORD]`, split at the first `:`
/// (the password may hold colons, and may be empty after one). A user name
/// alone, which skopeo would prompt for, is refused.
pub fn parse_creds_flag(value: &str) -> Result<Credential, CredentialsError> {
    if value.is_empty() {
        return Err(CredentialsError::EmptyCredsFlag);
    }
    let (username, password) = value
        .split_once(':')
        .ok_or(CredentialsError::CredsFlagWithoutPassword)?;
    if username.is_empty() {
        return Err(CredentialsError::CredsFlagWithoutUsername);
    }
    Ok(Credential::Basic {
        username: username.to_string(),
        password: password.to_string(),
    })
}

/// One credentials file to read.
struct AuthFile {
    path: PathBuf,
    /// `~/.dockercfg`: the top level is the `auths` map, keys are hosts.
    legacy_format: bool,
}

impl AuthFile {
    fn current(path: PathBuf) -> AuthFile {
        AuthFile {
            path,
            legacy_format: false,
        }
    }
}

/// The image credentials are wanted for, with the keys that would name it.
struct Target {
    /// `host/repository`, then each parent namespace, then `host`.
    exact_keys: Vec<String>,
    /// The registry alone, as an exact key.
    host_key: String,
    /// The host as credentials files may spell it after normalisation.
    normalized_host: String,
}

impl Target {
    fn new(host: &str, repository: &str) -> Target {
        // Files name Docker Hub images `docker.io/...`, whatever the caller calls it.
        let host = if is_docker_hub(host) {
            "docker.io"
        } else {
            host
        };
        let repository = repository.trim_matches('/');
        let mut key = if repository.is_empty() {
            host.to_string()
        } else {
            format!("{host}/{repository}")
        };
        let mut exact_keys = vec![key.clone()];
        while let Some(slash) = key.rfind('/') {
            key.truncate(slash);
            exact_keys.push(key.clone());
        }
        Target {
            exact_keys,
            host_key: host.to_string(),
            normalized_host: normalize_host(host),
        }
    }
}

/// What one credentials file says, with its entries still unparsed.
struct ParsedFile {
    auths: Map<String, Value>,
    credential_helpers: Map<String, Value>,
    credential_store: Option<String>,
    legacy_format: bool,
}

impl ParsedFile {
    fn parse(auth_file: &AuthFile, contents: &[u8]) -> Result<ParsedFile, CredentialsError> {
        let path = &auth_file.path;
        let invalid_format = |reason: &str| CredentialsError::InvalidFormat {
            path: path.clone(),
            reason: reason.to_string(),
        };
        let value: Value =
            serde_json::from_slice(contents).map_err(|source| CredentialsError::InvalidJson {
                path: path.clone(),
                source,
            })?;
        let Value::Object(mut top) = value else {
            return Err(invalid_format("the top level is not a JSON object"));
        };
        if auth_file.legacy_format {
            return Ok(ParsedFile {
                auths: top,
                credential_helpers: Map::new(),
                credential_store: None,
                legacy_format: true,
            });
        }
        let auths = match take_field(&mut top, "auths") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(auths)) => auths,
            Some(_) => return Err(invalid_format("\"auths\" is not a JSON object")),
        };
        let credential_helpers = match take_field(&mut top, "credHelpers") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(helpers)) if helpers.values().all(Value::is_string) => helpers,
            Some(_) => {
                return Err(invalid_format(
                    "\"credHelpers\" is not an object of helper names",
                ))
            }
        };
        let credential_store = match take_field(&mut top, "credsStore") {
            None | Some(Value::Null) => None,
            Some(Value::String(store)) => Some(store).filter(|store| !store.is_empty()),
            Some(_) => return Err(invalid_format("\"credsStore\" is not a string")),
        };
        Ok(ParsedFile {
            auths,
            credential_helpers,
            credential_store,
            legacy_format: false,
        })
    }

    /// The `credHelpers` entry for the host, as (key, helper): its exact
    /// key, else a key that normalises to the host (Docker keys Docker Hub
    /// by its v1 URL). An entry with an empty helper name counts as none.
    fn credential_helper_for(&self, target: &Target) -> Option<(String, String)> {
        let (key, helper) = self
            .credential_helpers
            .get_key_value(&target.host_key)
            .or_else(|| {
                let mut keys: Vec<&String> = self.credential_helpers.keys().collect();
                keys.sort();
                keys.into_iter()
                    .find(|key| normalize_key(key, true) == target.normalized_host)
                    .and_then(|key| self.credential_helpers.get_key_value(key))
            })?;
        helper
            .as_str()
            .filter(|helper| !helper.is_empty())
            .map(|helper| (key.clone(), helper.to_string()))
    }

    /// The `auths` entry for the target: the most specific exact key, else
    /// the first key (in sorted order) that normalises to the host.
    fn matching_entry(&self, target: &Target) -> Option<(&str, &Value)> {
        let exact_keys: &[String] = if self.legacy_format {
            std::slice::from_ref(&target.host_key)
        } else {
            &target.exact_keys
        };
        if let Some(found) = exact_keys
            .iter()
            .find_map(|key| self.auths.get_key_value(key.as_str()))
        {
            return Some((found.0.as_str(), found.1));
        }
        let mut keys: Vec<&String> = self.auths.keys().collect();
        keys.sort();
        let key = keys
            .into_iter()
            .find(|key| normalize_key(key, self.legacy_format) == target.normalized_host)?;
        self.auths
            .get_key_value(key.as_str())
            .map(|(key, value)| (key.as_str(), value))
    }
}

/// Reads an entry's credentials; `None` for an empty placeholder entry.
fn decode_entry(
    path: &Path,
    key: &str,
    entry: &Value,
) -> Result<Option<Credential>, CredentialsError> {
    let invalid = |reason: &'static str| CredentialsError::InvalidEntry {
        path: path.to_path_buf(),
        key: key.to_string(),
        reason,
    };
    let Value::Object(entry) = entry else {
        return Err(invalid("the entry is not a JSON object"));
    };
    let string_field = |name: &str| -> Result<&str, CredentialsError> {
        match get_field(entry, name) {
            None | Some(Value::Null) => Ok(""),
            Some(Value::String(text)) => Ok(text.as_str()),
            Some(_) => Err(invalid(match name {
                "auth" => "\"auth\" is not a string",
                "identitytoken" => "\"identitytoken\" is not a string",
                "username" => "\"username\" is not a string",
                _ => "\"password\" is not a string",
            })),
        }
    };
    let auth = string_field("auth")?.trim();
    let identity_token = string_field("identitytoken")?;
    let username_field = string_field("username")?;
    let password_field = string_field("password")?;

    let from_auth = if auth.is_empty() {
        None
    } else {
        let decoded = LENIENT_BASE64
            .decode(auth)
            .map_err(|_| invalid("\"auth\" is not valid base64"))?;
        let decoded = String::from_utf8(decoded)
            .map_err(|_| invalid("\"auth\" does not decode to UTF-8 text"))?;
        if decoded.is_empty() {
            None
        } else {
            let (username, password) = decoded
                .split_once(':')
                .ok_or_else(|| invalid("\"auth\" has no ':' between user name and password"))?;
            // Some writers pad the password with NULs; containers-image trims them.
            Some((
                username.to_string(),
                password.trim_matches('\0').to_string(),
            ))
        }
    };

    if !identity_token.is_empty() {
        let username = from_auth
            .map(|(username, _)| username)
            .unwrap_or_else(|| username_field.to_string());
        return Ok(Some(Credential::IdentityToken {
            username,
            token: identity_token.to_string(),
        }));
    }
    if let Some((username, password)) = from_auth {
        return Ok(Some(Credential::Basic { username, password }));
    }
    if !username_field.is_empty() {
        return Ok(Some(Credential::Basic {
            username: username_field.to_string(),
            password: password_field.to_string(),
        }));
    }
    Ok(None)
}

/// Reads a whole file of at most [`MAX_AUTH_FILE_BYTES`]; `None` if it does
/// not exist.
fn read_bounded(path: &Path) -> Result<Option<Vec<u8>>, CredentialsError> {
    let read_error = |source| CredentialsError::Read {
        path: path.to_path_buf(),
        source,
    };
    match bounded::read_file(path, MAX_AUTH_FILE_BYTES).map_err(read_error)? {
        FileRead::Missing => Ok(None),
        FileRead::TooLarge => Err(CredentialsError::TooLarge {
            path: path.to_path_buf(),
            limit: MAX_AUTH_FILE_BYTES,
        }),
        FileRead::Bytes(contents) => Ok(Some(contents)),
    }
}

/// A field by name, falling back to a case-insensitive match as Go's
/// `encoding/json` (which wrote and reads these files) does.
fn get_field<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    object.get(name).or_else(|| {
        object
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
    })
}

fn take_field(object: &mut Map<String, Value>, name: &str) -> Option<Value> {
    if let Some(value) = object.remove(name) {
        return Some(value);
    }
    let key = object
        .keys()
        .find(|key| key.eq_ignore_ascii_case(name))?
        .clone();
    object.remove(&key)
}

fn is_docker_hub(host: &str) -> bool {
    DOCKER_HUB_ALIASES
        .iter()
        .any(|alias| host.eq_ignore_ascii_case(alias))
}

/// A host as compared with normalised keys: lowercase, Docker Hub's aliases
/// folded into one.
fn normalize_host(host: &str) -> String {
    if is_docker_hub(host) {
        "index.docker.io".to_string()
    } else {
        host.to_ascii_lowercase()
    }
}

/// Turns an `auths` or `credHelpers` key into the host it names.
///
/// URL keys (`https://index.docker.io/v1/`) lose scheme and path, and so do
/// all keys of the legacy format, as in containers-image. A schemeless key
/// keeps its namespace (`quay.io/org` names no host) but loses a trailing
/// `/`, `/v1/` or `/v2/`, which only a hand-written registry URL has.
fn normalize_key(key: &str, host_only: bool) -> String {
    let without_scheme = strip_prefix_ignore_case(key, "https://")
        .or_else(|| strip_prefix_ignore_case(key, "http://"));
    let host = match without_scheme {
        Some(rest) => rest.split('/').next().unwrap_or(rest),
        None if host_only => key.split('/').next().unwrap_or(key),
        None => match key.strip_suffix('/') {
            Some(rest) => rest
                .strip_suffix("/v1")
                .or_else(|| rest.strip_suffix("/v2"))
                .unwrap_or(rest),
            None => key,
        },
    };
    normalize_host(host)
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn encode(text: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    fn basic(username: &str, password: &str) -> Credential {
        Credential::Basic {
            username: username.to_string(),
            password: password.to_string(),
        }
    }

    fn auths(entries: &[(&str, &str)]) -> String {
        let map: Map<String, Value> = entries
            .iter()
            .map(|(key, user_password)| {
                (
                    key.to_string(),
                    serde_json::json!({ "auth": encode(user_password) }),
                )
            })
            .collect();
        serde_json::json!({ "auths": map }).to_string()
    }

    /// A home directory with no credentials files, and an environment that
    /// points everything into it.
    struct Home {
        dir: tempfile::TempDir,
    }

    impl Home {
        fn new() -> Home {
            Home {
                dir: tempfile::tempdir().expect("temporary directory"),
            }
        }

        fn path(&self, relative: &str) -> PathBuf {
            self.dir.path().join(relative)
        }

        fn write(&self, relative: &str, contents: &str) -> PathBuf {
            let path = self.path(relative);
            fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
            fs::write(&path, contents).expect("write");
            path
        }

        fn env(&self) -> Env {
            Env {
                xdg_runtime_dir: Some(self.path("run")),
                home: Some(self.path("home")),
                ..Env::default()
            }
        }
    }

    fn found(lookup: Lookup) -> Found {
        match lookup {
            Lookup::Found(found) => found,
            other => panic!("expected credentials, got {other:?}"),
        }
    }

    /// Helpers that are never expected to run.
    struct NoHelpers;

    impl RunHelper for NoHelpers {
        fn get(&self, helper: &str, server: &str) -> Result<Option<Credential>, HelperError> {
            panic!("unexpected run of helper {helper:?} for {server:?}")
        }
    }

    /// The lookup of files that name no helper.
    fn lookup(env: &Env, host: &str, repository: &str) -> Result<Lookup, CredentialsError> {
        super::lookup(env, host, repository, &NoHelpers)
    }

    /// Helpers that answer from a table by (helper, server), recording the
    /// calls: credentials, `None` ("not found"), or a failure.
    #[derive(Default)]
    struct FakeHelpers {
        answers: Vec<(&'static str, &'static str, Option<Credential>)>,
        failing: Vec<&'static str>,
        calls: std::cell::RefCell<Vec<(String, String)>>,
    }

    impl FakeHelpers {
        fn answer(
            mut self,
            helper: &'static str,
            server: &'static str,
            credential: Option<Credential>,
        ) -> Self {
            self.answers.push((helper, server, credential));
            self
        }

        fn calls(&self) -> Vec<(String, String)> {
            self.calls.borrow().clone()
        }
    }

    impl RunHelper for FakeHelpers {
        fn get(&self, helper: &str, server: &str) -> Result<Option<Credential>, HelperError> {
            self.calls
                .borrow_mut()
                .push((helper.to_string(), server.to_string()));
            if self.failing.contains(&helper) {
                return Err(HelperError::Failed {
                    program: format!("docker-credential-{helper}"),
                    status: "exit status 1".to_string(),
                });
            }
            Ok(self
                .answers
                .iter()
                .find(|(h, s, _)| *h == helper && *s == server)
                .and_then(|(_, _, credential)| credential.clone()))
        }
    }

    #[test]
    fn no_files_means_no_credentials() {
        let home = Home::new();
        let result = lookup(&home.env(), "quay.io", "org/app").expect("lookup");
        assert_eq!(result, Lookup::None);
        assert_eq!(
            lookup(&Env::default(), "quay.io", "org/app").expect("lookup"),
            Lookup::None
        );
    }

    #[test]
    fn file_order_first_match_wins() {
        let home = Home::new();
        let runtime = home.write("run/containers/auth.json", &auths(&[("other.io", "r:r")]));
        let config = home.write(
            "home/.config/containers/auth.json",
            &auths(&[("quay.io", "config:c")]),
        );
        home.write(
            "home/.docker/config.json",
            &auths(&[("quay.io", "docker:d")]),
        );

        let result = found(lookup(&home.env(), "quay.io", "org/app").expect("lookup"));
        assert_eq!(result.credential, basic("config", "c"));
        assert_eq!(result.file, config);
        assert_eq!(result.key, "quay.io");

        let result = found(lookup(&home.env(), "other.io", "x").expect("lookup"));
        assert_eq!(result.file, runtime);

        // Only Docker's file knows this one.
        fs::write(
            home.path("home/.docker/config.json"),
            auths(&[("ghcr.io", "docker:d")]),
        )
        .expect("write");
        let result = found(lookup(&home.env(), "ghcr.io", "x").expect("lookup"));
        assert_eq!(result.credential, basic("docker", "d"));
    }

    #[test]
    fn xdg_config_home_and_docker_config_replace_home_defaults() {
        let home = Home::new();
        home.write(
            "home/.config/containers/auth.json",
            &auths(&[("a.io", "home:h")]),
        );
        let xdg = home.write("xdg/containers/auth.json", &auths(&[("a.io", "xdg:x")]));
        home.write("home/.docker/config.json", &auths(&[("b.io", "home:h")]));
        let docker = home.write("dockercfg/config.json", &auths(&[("b.io", "dc:d")]));
        let env = Env {
            xdg_config_home: Some(home.path("xdg")),
            docker_config: Some(home.path("dockercfg")),
            ..home.env()
        };
        assert_eq!(found(lookup(&env, "a.io", "r").expect("lookup")).file, xdg);
        assert_eq!(
            found(lookup(&env, "b.io", "r").expect("lookup")).file,
            docker
        );
    }

    #[test]
    fn per_uid_runtime_file_without_xdg_runtime_dir() {
        let env = Env {
            uid: Some(4242),
            home: Some(PathBuf::from("/home/u")),
            ..Env::default()
        };
        let paths: Vec<PathBuf> = env.auth_files().into_iter().map(|file| file.path).collect();
        assert_eq!(
            paths,
            [
                "/run/containers/4242/auth.json",
                "/home/u/.config/containers/auth.json",
                "/home/u/.docker/config.json",
                "/home/u/.dockercfg",
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn registry_auth_file_is_the_only_file_read() {
        let home = Home::new();
        let explicit = home.write("explicit.json", &auths(&[("quay.io", "explicit:e")]));
        home.write(
            "run/containers/auth.json",
            &auths(&[("quay.io", "runtime:r"), ("ghcr.io", "runtime:r")]),
        );
        let env = Env {
            registry_auth_file: Some(explicit.clone()),
            ..home.env()
        };
        let result = found(lookup(&env, "quay.io", "org/app").expect("lookup"));
        assert_eq!(result.credential, basic("explicit", "e"));
        assert_eq!(result.file, explicit);
        assert_eq!(lookup(&env, "ghcr.io", "x").expect("lookup"), Lookup::None);

        // A missing explicit file is no error: nothing is found.
        let env = Env {
            registry_auth_file: Some(home.path("missing.json")),
            ..home.env()
        };
        assert_eq!(
            lookup(&env, "quay.io", "org/app").expect("lookup"),
            Lookup::None
        );
    }

    #[test]
    fn most_specific_key_wins() {
        let home = Home::new();
        home.write(
            "run/containers/auth.json",
            &auths(&[
                ("quay.io", "registry:r"),
                ("quay.io/org", "namespace:n"),
                ("quay.io/org/app", "repository:p"),
                ("quay.io/org/app/deeper", "deeper:d"),
                ("quay.io/orgx", "prefix-but-not-parent:x"),
            ]),
        );
        let env = home.env();
        let check = |repository: &str, expected_user: &str, expected_key: &str| {
            let result = found(lookup(&env, "quay.io", repository).expect("lookup"));
            let Credential::Basic { username, .. } = &result.credential else {
                panic!("{repository}: expected a user name and password");
            };
            assert_eq!(username, expected_user, "{repository}");
            assert_eq!(result.key, expected_key, "{repository}");
        };
        check("org/app", "repository", "quay.io/org/app");
        check("org/app/sub", "repository", "quay.io/org/app");
        check("org/other", "namespace", "quay.io/org");
        check("orgxy/app", "registry", "quay.io");
        check("", "registry", "quay.io");
    }

    #[test]
    fn docker_hub_aliases_match() {
        for key in [
            "docker.io",
            "index.docker.io",
            "registry-1.docker.io",
            "https://index.docker.io/v1/",
            "http://index.docker.io/v1/",
            "https://registry-1.docker.io/v2/",
            "index.docker.io/v1/",
        ] {
            let home = Home::new();
            home.write("run/containers/auth.json", &auths(&[(key, "hub:h")]));
            for host in ["docker.io", "index.docker.io", "registry-1.docker.io"] {
                let result = found(lookup(&home.env(), host, "library/debian").expect("lookup"));
                assert_eq!(result.credential, basic("hub", "h"), "{key} for {host}");
                assert_eq!(result.key, key);
            }
        }
    }

    #[test]
    fn docker_hub_namespace_keys_use_docker_io() {
        let home = Home::new();
        home.write(
            "run/containers/auth.json",
            &auths(&[
                ("https://index.docker.io/v1/", "hub:h"),
                ("docker.io/myorg", "org:o"),
            ]),
        );
        let result =
            found(lookup(&home.env(), "registry-1.docker.io", "myorg/app").expect("lookup"));
        assert_eq!(result.credential, basic("org", "o"));
        let result = found(lookup(&home.env(), "docker.io", "library/debian").expect("lookup"));
        assert_eq!(result.credential, basic("hub", "h"));
    }

    #[test]
    fn url_form_keys_match_their_host() {
        let home = Home::new();
        home.write(
            "run/containers/auth.json",
            &auths(&[
                ("https://registry.example:5000/v2/", "url:u"),
                ("HTTPS://Upper.Example", "upper:u"),
                ("https://quay.io/org", "url-path:p"),
            ]),
        );
        let env = home.env();
        let result = found(lookup(&env, "registry.example:5000", "a/b").expect("lookup"));
        assert_eq!(result.credential, basic("url", "u"));
        assert_eq!(result.key, "https://registry.example:5000/v2/");
        let result = found(lookup(&env, "upper.example", "a").expect("lookup"));
        assert_eq!(result.credential, basic("upper", "u"));
        // A URL's path is not a namespace: it names the whole registry.
        let result = found(lookup(&env, "quay.io", "other/app").expect("lookup"));
        assert_eq!(result.credential, basic("url-path", "p"));
        // A different port is a different registry.
        assert_eq!(
            lookup(&env, "registry.example", "a/b").expect("lookup"),
            Lookup::None
        );
    }

    #[test]
    fn exact_keys_beat_normalized_ones_and_ties_are_sorted() {
        let home = Home::new();
        home.write(
            "run/containers/auth.json",
            &auths(&[
                ("https://index.docker.io/v1/", "url:u"),
                ("http://index.docker.io", "http:h"),
                ("docker.io", "exact:e"),
            ]),
        );
        let result = found(lookup(&home.env(), "docker.io", "library/debian").expect("lookup"));
        assert_eq!(result.credential, basic("exact", "e"));

        fs::write(
            home.path("run/containers/auth.json"),
            auths(&[
                ("https://index.docker.io/v1/", "url:u"),
                ("http://index.docker.io", "http:h"),
            ]),
        )
        .expect("write");
        let result = found(lookup(&home.env(), "docker.io", "library/debian").expect("lookup"));
        assert_eq!(result.key, "http://index.docker.io");
    }

    #[test]
    fn schemeless_namespace_keys_do_not_match_the_whole_registry() {
        let home = Home::new();
        home.write(
            "run/containers/auth.json",
            &auths(&[("quay.io/org", "org:o"), ("quay.io/v2", "ns:n")]),
        );
        assert_eq!(
            lookup(&home.env(), "quay.io", "other/app").expect("lookup"),
            Lookup::None
        );
    }

    #[test]
    fn legacy_dockercfg() {
        let home = Home::new();
        let file = home.write(
            "home/.dockercfg",
            &serde_json::json!({
                "https://index.docker.io/v1/": { "auth": encode("legacy:l"), "email": "x@example.com" },
                "registry.example/ns": { "auth": encode("ns:n") },
            })
            .to_string(),
        );
        let result = found(lookup(&home.env(), "docker.io", "library/debian").expect("lookup"));
        assert_eq!(result.credential, basic("legacy", "l"));
        assert_eq!(result.file, file);
        // The legacy format only knows hosts: the path of any key is dropped.
        let result = found(lookup(&home.env(), "registry.example", "other").expect("lookup"));
        assert_eq!(result.credential, basic("ns", "n"));
    }

    #[test]
    fn credential_helper_for_the_host_comes_first() {
        let home = Home::new();
        let docker = home.write(
            "home/.docker/config.json",
            &serde_json::json!({
                "auths": { "gcr.io": { "auth": encode("ignored:i") } },
                "credHelpers": {
                    "gcr.io": "gcloud",
                    "https://index.docker.io/v1/": "hub-helper",
                    "registry.example:5000": "",
                },
            })
            .to_string(),
        );
        home.write(
            "home/.dockercfg",
            &serde_json::json!({ "gcr.io": { "auth": encode("later:l") } }).to_string(),
        );
        let helpers = FakeHelpers::default()
            .answer("gcloud", "gcr.io", Some(basic("oauth2accesstoken", "ya29")))
            .answer(
                "hub-helper",
                "https://index.docker.io/v1/",
                Some(basic("hub", "h")),
            );
        let env = home.env();
        assert_eq!(
            found(super::lookup(&env, "gcr.io", "project/app", &helpers).expect("lookup")),
            Found {
                credential: basic("oauth2accesstoken", "ya29"),
                file: docker.clone(),
                key: "gcr.io".to_string(),
                helper: Some("gcloud".to_string()),
            }
        );
        // The helper is asked for the server as the key names it.
        let result =
            found(super::lookup(&env, "docker.io", "library/debian", &helpers).expect("lookup"));
        assert_eq!(result.credential, basic("hub", "h"));
        assert_eq!(result.key, "https://index.docker.io/v1/");
        assert_eq!(
            helpers.calls(),
            [
                ("gcloud".to_string(), "gcr.io".to_string()),
                (
                    "hub-helper".to_string(),
                    "https://index.docker.io/v1/".to_string()
                ),
            ]
        );
        // An empty helper name is no helper.
        assert_eq!(
            super::lookup(&env, "registry.example:5000", "a", &helpers).expect("lookup"),
            Lookup::None
        );
    }

    #[test]
    fn a_helper_without_credentials_passes_the_file_over() {
        let home = Home::new();
        let runtime = home.write(
            "run/containers/auth.json",
            &serde_json::json!({
                "auths": { "gcr.io": { "auth": encode("same-file:s") } },
                "credHelpers": { "gcr.io": "empty" },
            })
            .to_string(),
        );
        let docker = home.write("home/.docker/config.json", &auths(&[("gcr.io", "next:n")]));
        let helpers = FakeHelpers::default();
        let result = found(super::lookup(&home.env(), "gcr.io", "a", &helpers).expect("lookup"));
        // As in containers-image: the helper's file gives what the helper
        // gives, nothing, and the search goes on with the next file.
        assert_eq!(result.credential, basic("next", "n"));
        assert_eq!(result.file, docker);
        assert_eq!(result.helper, None);
        assert_eq!(
            helpers.calls(),
            [("empty".to_string(), "gcr.io".to_string())]
        );

        // A failing helper stops the search, naming helper and file.
        let helpers = FakeHelpers {
            failing: vec!["empty"],
            ..FakeHelpers::default()
        };
        let error = super::lookup(&home.env(), "gcr.io", "a", &helpers).expect_err("failing");
        let message = error.to_string();
        assert!(matches!(error, CredentialsError::Helper { ref path, .. } if *path == runtime));
        assert!(message.contains("docker-credential-empty"), "{message}");
        assert!(
            message.contains(&runtime.display().to_string()),
            "{message}"
        );
    }

    #[test]
    fn credential_store_comes_after_the_files_entry() {
        let home = Home::new();
        let docker = home.write(
            "home/.docker/config.json",
            &serde_json::json!({
                "auths": { "https://index.docker.io/v1/": {}, "quay.io": { "auth": encode("real:r") } },
                "credsStore": "desktop",
            })
            .to_string(),
        );
        home.write(
            "home/.dockercfg",
            &serde_json::json!({ "ghcr.io": { "auth": encode("legacy:l") } }).to_string(),
        );
        let helpers = FakeHelpers::default()
            .answer(
                "desktop",
                "https://index.docker.io/v1/",
                Some(Credential::IdentityToken {
                    username: String::new(),
                    token: "refresh".to_string(),
                }),
            )
            .answer(
                "desktop",
                "registry.example:5000",
                Some(basic("store", "s")),
            );
        let env = home.env();
        // Docker's placeholder entry, then the store, asked as Docker asks.
        assert_eq!(
            found(super::lookup(&env, "docker.io", "library/debian", &helpers).expect("lookup")),
            Found {
                credential: Credential::IdentityToken {
                    username: String::new(),
                    token: "refresh".to_string()
                },
                file: docker.clone(),
                key: "https://index.docker.io/v1/".to_string(),
                helper: Some("desktop".to_string()),
            }
        );
        let result =
            found(super::lookup(&env, "registry.example:5000", "a", &helpers).expect("lookup"));
        assert_eq!(result.credential, basic("store", "s"));
        assert_eq!(result.key, "registry.example:5000");
        // The file's own entry comes before its store.
        let calls = helpers.calls().len();
        assert_eq!(
            found(super::lookup(&env, "quay.io", "a", &helpers).expect("lookup")).credential,
            basic("real", "r")
        );
        assert_eq!(helpers.calls().len(), calls);
        // Nothing in the store: the next file.
        assert_eq!(
            found(super::lookup(&env, "ghcr.io", "a", &helpers).expect("lookup")).credential,
            basic("legacy", "l")
        );
        assert_eq!(
            super::lookup(&env, "unknown.example", "a", &helpers).expect("lookup"),
            Lookup::None
        );
        assert_eq!(
            helpers.calls()[calls..],
            [
                ("desktop".to_string(), "ghcr.io".to_string()),
                ("desktop".to_string(), "unknown.example".to_string()),
            ]
        );
    }

    #[test]
    fn helpers_run_for_real_from_the_search_path() {
        let home = Home::new();
        let bin = home.path("bin");
        fs::create_dir_all(&bin).expect("mkdir");
        for (name, body) in [
            (
                "per-host",
                r#"server=$(cat); [ "$server" = registry.example:5000 ] || exit 9
echo '{"ServerURL":"registry.example:5000","Username":"helper-user","Secret":"helper-secret"}'"#,
            ),
            (
                "store",
                r#"server=$(cat)
case "$server" in
  quay.io) echo '{"ServerURL":"quay.io","Username":"store-user","Secret":"store-secret"}' ;;
  *) echo 'credentials not found in native keychain'; exit 1 ;;
esac"#,
            ),
        ] {
            super::super::cred_helper::write_test_script(
                &bin.join(format!("docker-credential-{name}")),
                body,
            );
        }
        home.write(
            "home/.docker/config.json",
            &serde_json::json!({
                "credHelpers": { "registry.example:5000": "per-host" },
                "credsStore": "store",
            })
            .to_string(),
        );
        let mut search_path = OsString::from(&bin);
        search_path.push(":/usr/bin:/bin");
        let env = Env {
            search_path: Some(search_path),
            ..home.env()
        };
        let runner = env.helper_runner();
        let get = |host: &str| super::lookup(&env, host, "a/b", &runner).expect("lookup");
        assert_eq!(
            found(get("registry.example:5000")).credential,
            basic("helper-user", "helper-secret")
        );
        let result = found(get("quay.io"));
        assert_eq!(result.credential, basic("store-user", "store-secret"));
        assert_eq!(result.helper.as_deref(), Some("store"));
        assert_eq!(get("ghcr.io"), Lookup::None);
        // Not on the search path: an error naming the helper.
        let env = Env {
            search_path: None,
            ..env
        };
        let error = super::lookup(&env, "quay.io", "a", &env.helper_runner()).expect_err("missing");
        assert!(
            error
                .to_string()
                .contains("docker-credential-store is not on $PATH"),
            "{error}"
        );
    }

    #[test]
    fn empty_placeholder_entries_are_passed_over() {
        let home = Home::new();
        home.write(
            "run/containers/auth.json",
            &serde_json::json!({ "auths": { "quay.io": {}, "ghcr.io": { "auth": "" } } })
                .to_string(),
        );
        let docker = home.write(
            "home/.docker/config.json",
            &auths(&[("quay.io", "docker:d")]),
        );
        let result = found(lookup(&home.env(), "quay.io", "a").expect("lookup"));
        assert_eq!(result.file, docker);
        assert_eq!(
            lookup(&home.env(), "ghcr.io", "a").expect("lookup"),
            Lookup::None
        );
    }

    #[test]
    fn identity_token_and_plain_fields() {
        let home = Home::new();
        home.write(
            "run/containers/auth.json",
            &serde_json::json!({ "auths": {
                "token.example": { "auth": encode("user:"), "identitytoken": "refresh" },
                "token-only.example": { "IdentityToken": "refresh2" },
                "plain.example": { "username": "plain", "password": "p:w" },
                "both.example": { "auth": encode("from-auth:a"), "username": "field", "password": "f" },
                "nul.example": { "auth": encode("user:secret\0\0") },
                "unpadded.example": { "auth": encode("user:pw1").trim_end_matches('=') },
                "colons.example": { "Auth": encode("user:pass:word") },
            }})
            .to_string(),
        );
        let env = home.env();
        let credential = |host: &str| found(lookup(&env, host, "r").expect("lookup")).credential;
        assert_eq!(
            credential("token.example"),
            Credential::IdentityToken {
                username: "user".to_string(),
                token: "refresh".to_string()
            }
        );
        assert_eq!(
            credential("token-only.example"),
            Credential::IdentityToken {
                username: String::new(),
                token: "refresh2".to_string()
            }
        );
        assert_eq!(credential("plain.example"), basic("plain", "p:w"));
        assert_eq!(credential("both.example"), basic("from-auth", "a"));
        assert_eq!(credential("nul.example"), basic("user", "secret"));
        assert_eq!(credential("unpadded.example"), basic("user", "pw1"));
        assert_eq!(credential("colons.example"), basic("user", "pass:word"));
    }

    #[test]
    fn bad_json_names_the_file() {
        let home = Home::new();
        let file = home.write("run/containers/auth.json", "{ not json");
        let error = lookup(&home.env(), "quay.io", "a").expect_err("bad JSON");
        assert!(matches!(&error, CredentialsError::InvalidJson { path, .. } if *path == file));
        assert!(error.to_string().contains(&file.display().to_string()));

        for contents in [
            "",
            "[]",
            r#"{"auths": []}"#,
            r#"{"credHelpers": {"a": 1}}"#,
            r#"{"credsStore": 1}"#,
        ] {
            fs::write(&file, contents).expect("write");
            let error = lookup(&home.env(), "quay.io", "a").expect_err(contents);
            assert!(
                error.to_string().contains(&file.display().to_string()),
                "{error}"
            );
        }
    }

    #[test]
    fn unreadable_file_is_an_error() {
        let home = Home::new();
        // A directory where a file should be cannot be read.
        fs::create_dir_all(home.path("run/containers/auth.json")).expect("mkdir");
        let error = lookup(&home.env(), "quay.io", "a").expect_err("directory");
        assert!(matches!(error, CredentialsError::Read { .. }), "{error}");
    }

    #[test]
    fn oversized_file_is_refused() {
        let home = Home::new();
        let padding = " ".repeat(MAX_AUTH_FILE_BYTES as usize);
        home.write("run/containers/auth.json", &format!("{{}}{padding}"));
        let error = lookup(&home.env(), "quay.io", "a").expect_err("too large");
        assert!(
            matches!(error, CredentialsError::TooLarge { .. }),
            "{error}"
        );
    }

    #[test]
    fn bad_entries_name_file_and_key() {
        let home = Home::new();
        let file = home.write(
            "run/containers/auth.json",
            &serde_json::json!({ "auths": {
                "bad-base64.example": { "auth": "!!!not base64!!!" },
                "no-colon.example": { "auth": encode("userpassword") },
                "not-utf8.example": { "auth": base64::engine::general_purpose::STANDARD.encode([0xff, b':', b'x']) },
                "not-object.example": "dXNlcjpwYXNz",
                "number.example": { "auth": 5 },
            }})
            .to_string(),
        );
        for host in [
            "bad-base64.example",
            "no-colon.example",
            "not-utf8.example",
            "not-object.example",
            "number.example",
        ] {
            let error = lookup(&home.env(), host, "a").expect_err(host);
            match &error {
                CredentialsError::InvalidEntry { path, key, .. } => {
                    assert_eq!(*path, file);
                    assert_eq!(key, host);
                }
                other => panic!("{host}: {other}"),
            }
            let message = error.to_string();
            assert!(message.contains(host), "{message}");
            assert!(
                !message.contains("userpassword"),
                "secret leaked: {message}"
            );
        }
    }

    #[test]
    fn debug_output_hides_secrets() {
        let text = format!("{:?}", basic("user", "hunter2"));
        assert!(text.contains("user") && !text.contains("hunter2"), "{text}");
        let text = format!(
            "{:?}",
            Credential::IdentityToken {
                username: "u".to_string(),
                token: "refresh-secret".to_string()
            }
        );
        assert!(!text.contains("refresh-secret"), "{text}");
    }

    #[test]
    fn creds_flag() {
        assert_eq!(
            parse_creds_flag("user:pass").expect("valid"),
            basic("user", "pass")
        );
        assert_eq!(
            parse_creds_flag("user:pa:ss").expect("valid"),
            basic("user", "pa:ss")
        );
        assert_eq!(parse_creds_flag("user:").expect("valid"), basic("user", ""));
        assert!(matches!(
            parse_creds_flag(""),
            Err(CredentialsError::EmptyCredsFlag)
        ));
        assert!(matches!(
            parse_creds_flag("user"),
            Err(CredentialsError::CredsFlagWithoutPassword)
        ));
        assert!(matches!(
            parse_creds_flag(":pass"),
            Err(CredentialsError::CredsFlagWithoutUsername)
        ));
    }

    #[test]
    fn key_normalization() {
        assert_eq!(
            normalize_key("https://index.docker.io/v1/", false),
            "index.docker.io"
        );
        assert_eq!(
            normalize_key("registry-1.docker.io", false),
            "index.docker.io"
        );
        assert_eq!(normalize_key("quay.io/", false), "quay.io");
        assert_eq!(normalize_key("quay.io/v1/", false), "quay.io");
        assert_eq!(normalize_key("quay.io/org", false), "quay.io/org");
        assert_eq!(normalize_key("quay.io/org", true), "quay.io");
        assert_eq!(
            normalize_key("http://LOCALHOST:5000", false),
            "localhost:5000"
        );
        assert_eq!(normalize_key("", false), "");
        assert_eq!(normalize_key("é", false), "é");
        assert_eq!(normalize_key("httpé", false), "httpé");
    }
}
