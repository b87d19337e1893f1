//! Per-registry TLS material, found where containers-image (skopeo, podman)
//! and Docker look for it: containers-certs.d(5) and Docker's "Verify
//! repository client certificates".
//!
//! # Which directory
//!
//! For a registry `HOST[:PORT]` the candidates are `ROOT/HOST[:PORT]` for each
//! root in order (by default `/etc/containers/certs.d`, then
//! `/etc/docker/certs.d`; containers-image puts
//! `$HOME/.config/containers/certs.d` first, see [`CertDirs::for_user`]).
//! As in containers-image's `dockerCertDir`, the **first directory that
//! exists is the only one used**; directories are not merged. Candidates that
//! are missing or that we may not look at are skipped. An explicit directory
//! (skopeo's `--cert-dir`) replaces the search altogether.
//!
//! # What is in it
//!
//! As containers-image's `tlsclientconfig.SetupCertificates` reads it:
//!
//! * every `*.crt` file holds CA certificates to trust (PEM, possibly several
//!   per file), in addition to the system roots;
//! * `NAME.cert` with `NAME.key` is a client certificate and its private key.
//!   One without the other is an error naming both files (containers-image's
//!   message, including its hint that CA files end in `.crt`);
//! * anything else is ignored.
//!
//! Files are taken in name order, so results do not depend on the directory's
//! order. containers-image loads every client pair and lets Go's TLS stack
//! choose; here the first pair by name is used and any others are logged and
//! ignored. Contents are returned as bytes, unparsed; each file is bounded to
//! [`MAX_CERT_FILE_BYTES`] and a directory to [`MAX_DIRECTORY_ENTRIES`].

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The largest certificate or key file read.
pub const MAX_CERT_FILE_BYTES: u64 = 1024 * 1024;

/// The most directory entries looked at in one certificate directory.
pub const MAX_DIRECTORY_ENTRIES: usize = 4096;

/// The longest `HOST[:PORT]` accepted as a directory name (`NAME_MAX`).
const MAX_HOST_PORT_BYTES: usize = 255;

/// The roots searched for a `HOST[:PORT]` directory, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertDirs {
    pub roots: Vec<PathBuf>,
}

impl Default for CertDirs {
    /// `/etc/containers/certs.d`, then `/etc/docker/certs.d`.
    fn default() -> Self {
        CertDirs {
            roots: vec![
                PathBuf::from("/etc/containers/certs.d"),
                PathBuf::from("/etc/docker/certs.d"),
            ],
        }
    }
}

impl CertDirs {
    /// containers-image's full list: `$HOME/.config/containers/certs.d`
    /// (when a home is known) before the system roots of [`CertDirs::default`].
    pub fn for_user(home: Option<&Path>) -> Self {
        let mut dirs = CertDirs::default();
        if let Some(home) = home {
            dirs.roots
                .insert(0, home.join(".config/containers/certs.d"));
        }
        dirs
    }
}

/// The TLS files found for a registry.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// Each `*.crt` file and its contents (PEM CA certificates), by name.
    pub ca_pems: Vec<(PathBuf, Vec<u8>)>,
    /// The client certificate: its path and contents, then its key's path and
    /// contents.
    pub client: Option<(PathBuf, Vec<u8>, PathBuf, Vec<u8>)>,
    /// The directory read, if one existed (at most one; see the module
    /// documentation).
    pub dirs_used: Vec<PathBuf>,
}

/// Private keys stay out of logs.
impl fmt::Debug for TlsFiles {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ca_files: Vec<&PathBuf> = self.ca_pems.iter().map(|(path, _)| path).collect();
        let client = self
            .client
            .as_ref()
            .map(|(certificate, _, key, _)| (certificate, key));
        formatter
            .debug_struct("TlsFiles")
            .field("ca_files", &ca_files)
            .field("client", &client)
            .field("dirs_used", &self.dirs_used)
            .finish()
    }
}

/// Why the TLS files for a registry could not be gathered.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("invalid registry {0:?} for a certificate directory: expected HOST[:PORT]")]
    InvalidHostPort(String),

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("{} is larger than {limit} bytes", path.display())]
    TooLarge { path: PathBuf, limit: u64 },

    #[error("certificate directory {} has more than {limit} entries", path.display())]
    TooManyEntries { path: PathBuf, limit: usize },

    #[error(
        "missing key {} for client certificate {}. Note that CA certificates should use the extension .crt",
        key.display(),
        certificate.display()
    )]
    MissingKey { certificate: PathBuf, key: PathBuf },

    #[error("missing client certificate {} for key {}", certificate.display(), key.display())]
    MissingCertificate { key: PathBuf, certificate: PathBuf },
}

/// Gathers the TLS files for the registry `host_port` (`quay.io`,
/// `localhost:5000`, `[::1]:5000`): from `override_dir` if given, else from
/// the first `ROOT/host_port` of `dirs` that exists. A missing directory
/// gives an empty result.
pub fn tls_files(
    dirs: &CertDirs,
    host_port: &str,
    override_dir: Option<&Path>,
) -> Result<TlsFiles, CertsError> {
    let directory = match override_dir {
        Some(directory) => Some(directory.to_path_buf()),
        None => {
            validate_host_port(host_port)?;
            first_existing_directory(dirs, host_port)?
        }
    };
    match directory {
        Some(directory) => read_directory(&directory),
        None => Ok(TlsFiles::default()),
    }
}

/// Refuses names that would leave the root: empty, `.`, anything with `/`,
/// `..` or NUL, or longer than a file name can be.
fn validate_host_port(host_port: &str) -> Result<(), CertsError> {
    let invalid = host_port.is_empty()
        || host_port == "."
        || host_port.contains("..")
        || host_port.contains(['/', '\0'])
        || host_port.len() > MAX_HOST_PORT_BYTES;
    if invalid {
        Err(CertsError::InvalidHostPort(host_port.to_string()))
    } else {
        Ok(())
    }
}

fn first_existing_directory(
    dirs: &CertDirs,
    host_port: &str,
) -> Result<Option<PathBuf>, CertsError> {
    for root in &dirs.roots {
        let candidate = root.join(host_port);
        match fs::metadata(&candidate) {
            Ok(_) => return Ok(Some(candidate)),
            Err(error) if is_absent(&error) => continue,
            Err(error) if error.kind() == io::ErrorKind::PermissionDenied => {
                tracing::debug!(
                    "skipping certificate directory {}: {error}",
                    candidate.display()
                );
                continue;
            }
            Err(source) => {
                return Err(CertsError::Io {
                    path: candidate,
                    source,
                })
            }
        }
    }
    Ok(None)
}

fn read_directory(directory: &Path) -> Result<TlsFiles, CertsError> {
    let Some(names) = list_directory(directory)? else {
        return Ok(TlsFiles::default());
    };
    let mut files = TlsFiles {
        dirs_used: vec![directory.to_path_buf()],
        ..TlsFiles::default()
    };
    for name in &names {
        let name_bytes = name.as_bytes();
        let path = directory.join(name);
        if name_bytes.ends_with(b".crt") {
            // Like containers-image, a file removed since the listing is skipped.
            if let Some(contents) = read_bounded(&path)? {
                files.ca_pems.push((path, contents));
            }
        } else if let Some(stem) = name_bytes.strip_suffix(b".cert") {
            let key_name = with_suffix(stem, b".key");
            let key_path = directory.join(&key_name);
            if !names.contains(&key_name) {
                return Err(CertsError::MissingKey {
                    certificate: path,
                    key: key_path,
                });
            }
            if files.client.is_some() {
                tracing::debug!(
                    "ignoring client certificate {}: an earlier one is used",
                    path.display()
                );
                continue;
            }
            let certificate = read_required(&path)?;
            let key = read_required(&key_path)?;
            files.client = Some((path, certificate, key_path, key));
        } else if let Some(stem) = name_bytes.strip_suffix(b".key") {
            let certificate_name = with_suffix(stem, b".cert");
            if !names.contains(&certificate_name) {
                return Err(CertsError::MissingCertificate {
                    key: path,
                    certificate: directory.join(certificate_name),
                });
            }
        }
    }
    Ok(files)
}

/// The entry names of `directory`, sorted; `None` if it is missing or may
/// not be read (containers-image skips it then too). A file where the
/// directory should be is an error, as there.
fn list_directory(directory: &Path) -> Result<Option<BTreeSet<OsString>>, CertsError> {
    let io_error = |source| CertsError::Io {
        path: directory.to_path_buf(),
        source,
    };
    let entries = match fs::read_dir(directory) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) if error.kind() == io::ErrorKind::PermissionDenied => {
            tracing::debug!(
                "skipping certificate directory {}: {error}",
                directory.display()
            );
            return Ok(None);
        }
        Err(error) => return Err(io_error(error)),
    };
    let mut names = BTreeSet::new();
    for entry in entries {
        if names.len() == MAX_DIRECTORY_ENTRIES {
            return Err(CertsError::TooManyEntries {
                path: directory.to_path_buf(),
                limit: MAX_DIRECTORY_ENTRIES,
            });
        }
        names.insert(entry.map_err(io_error)?.file_name());
    }
    Ok(Some(names))
}

fn with_suffix(stem: &[u8], suffix: &[u8]) -> OsString {
    let mut name = stem.to_vec();
    name.extend_from_slice(suffix);
    std::ffi::OsStr::from_bytes(&name).to_os_string()
}

fn is_absent(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

/// Reads a whole file of at most [`MAX_CERT_FILE_BYTES`]; `None` if it no
/// longer exists.
fn read_bounded(path: &Path) -> Result<Option<Vec<u8>>, CertsError> {
    let io_error = |source| CertsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io_error(error)),
    };
    let mut contents = Vec::new();
    file.take(MAX_CERT_FILE_BYTES + 1)
        .read_to_end(&mut contents)
        .map_err(io_error)?;
    if contents.len() as u64 > MAX_CERT_FILE_BYTES {
        return Err(CertsError::TooLarge {
            path: path.to_path_buf(),
            limit: MAX_CERT_FILE_BYTES,
        });
    }
    Ok(Some(contents))
}

/// Like [`read_bounded`], for a file the pair needs: gone is an error.
fn read_required(path: &Path) -> Result<Vec<u8>, CertsError> {
    read_bounded(path)?.ok_or_else(|| CertsError::Io {
        path: path.to_path_buf(),
        source: io::Error::from(io::ErrorKind::NotFound),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEM_A: &str = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    const PEM_B: &str = "-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----\n\
                         -----BEGIN CERTIFICATE-----\nCCCC\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nSECRETKEY\n-----END PRIVATE KEY-----\n";

    struct Roots {
        dir: tempfile::TempDir,
    }

    impl Roots {
        fn new() -> Roots {
            Roots {
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

        /// `containers/` then `docker/`, as the defaults are ordered.
        fn dirs(&self) -> CertDirs {
            CertDirs {
                roots: vec![self.path("containers"), self.path("docker")],
            }
        }
    }

    #[test]
    fn defaults_are_the_system_directories() {
        assert_eq!(
            CertDirs::default().roots,
            [
                PathBuf::from("/etc/containers/certs.d"),
                PathBuf::from("/etc/docker/certs.d")
            ]
        );
        assert_eq!(
            CertDirs::for_user(Some(Path::new("/home/u"))).roots[0],
            PathBuf::from("/home/u/.config/containers/certs.d")
        );
        assert_eq!(CertDirs::for_user(None), CertDirs::default());
    }

    #[test]
    fn missing_directories_give_nothing() {
        let roots = Roots::new();
        let files = tls_files(&roots.dirs(), "registry.example:5000", None).expect("no error");
        assert_eq!(files, TlsFiles::default());
        let files = tls_files(&roots.dirs(), "x", Some(&roots.path("nope"))).expect("no error");
        assert_eq!(files, TlsFiles::default());
    }

    #[test]
    fn ca_files_in_name_order_and_other_files_ignored() {
        let roots = Roots::new();
        let b = roots.write("docker/localhost:5000/b.crt", PEM_B);
        let a = roots.write("docker/localhost:5000/a.crt", PEM_A);
        roots.write("docker/localhost:5000/ca.pem", PEM_A);
        roots.write("docker/localhost:5000/README", "notes");
        let files = tls_files(&roots.dirs(), "localhost:5000", None).expect("read");
        assert_eq!(
            files.ca_pems,
            vec![
                (a, PEM_A.as_bytes().to_vec()),
                (b, PEM_B.as_bytes().to_vec())
            ]
        );
        assert_eq!(files.client, None);
        assert_eq!(files.dirs_used, vec![roots.path("docker/localhost:5000")]);
    }

    #[test]
    fn first_existing_directory_is_the_only_one_used() {
        let roots = Roots::new();
        let containers = roots.write("containers/quay.io/ca.crt", PEM_A);
        roots.write("docker/quay.io/other.crt", PEM_B);
        let files = tls_files(&roots.dirs(), "quay.io", None).expect("read");
        assert_eq!(files.ca_pems, vec![(containers, PEM_A.as_bytes().to_vec())]);
        assert_eq!(files.dirs_used, vec![roots.path("containers/quay.io")]);

        // An empty directory still wins over a later one.
        fs::remove_file(roots.path("containers/quay.io/ca.crt")).expect("remove");
        let files = tls_files(&roots.dirs(), "quay.io", None).expect("read");
        assert!(files.ca_pems.is_empty());
        assert_eq!(files.dirs_used, vec![roots.path("containers/quay.io")]);
    }

    #[test]
    fn client_certificate_pair() {
        let roots = Roots::new();
        let certificate = roots.write("containers/[::1]:5000/client.cert", PEM_A);
        let key = roots.write("containers/[::1]:5000/client.key", KEY);
        roots.write("containers/[::1]:5000/ca.crt", PEM_B);
        let files = tls_files(&roots.dirs(), "[::1]:5000", None).expect("read");
        assert_eq!(
            files.client,
            Some((
                certificate,
                PEM_A.as_bytes().to_vec(),
                key,
                KEY.as_bytes().to_vec()
            ))
        );
        assert_eq!(files.ca_pems.len(), 1);
    }

    #[test]
    fn first_client_pair_by_name_is_used() {
        let roots = Roots::new();
        roots.write("docker/h/z.cert", PEM_B);
        roots.write("docker/h/z.key", KEY);
        let first = roots.write("docker/h/a.cert", PEM_A);
        roots.write("docker/h/a.key", KEY);
        let files = tls_files(&roots.dirs(), "h", None).expect("read");
        assert_eq!(files.client.map(|(path, ..)| path), Some(first));
    }

    #[test]
    fn certificate_without_key_is_an_error() {
        let roots = Roots::new();
        let certificate = roots.write("docker/h/client.cert", PEM_A);
        roots.write("docker/h/other.key", KEY);
        let error = tls_files(&roots.dirs(), "h", None).expect_err("missing key");
        match &error {
            CertsError::MissingKey {
                certificate: reported,
                key,
            } => {
                assert_eq!(*reported, certificate);
                assert_eq!(*key, roots.path("docker/h/client.key"));
            }
            other => panic!("{other}"),
        }
        assert!(error.to_string().contains("client.cert"), "{error}");
        assert!(error.to_string().contains(".crt"), "{error}");
    }

    #[test]
    fn key_without_certificate_is_an_error() {
        let roots = Roots::new();
        roots.write("docker/h/client.key", KEY);
        roots.write("docker/h/ca.crt", PEM_A);
        let error = tls_files(&roots.dirs(), "h", None).expect_err("missing certificate");
        assert!(
            matches!(&error, CertsError::MissingCertificate { key, .. } if key.ends_with("client.key")),
            "{error}"
        );
        assert!(!error.to_string().contains("SECRETKEY"));
    }

    #[test]
    fn override_replaces_the_search() {
        let roots = Roots::new();
        roots.write("containers/h/ca.crt", PEM_A);
        let own = roots.write("mine/own.crt", PEM_B);
        let files = tls_files(&roots.dirs(), "h", Some(&roots.path("mine"))).expect("read");
        assert_eq!(files.ca_pems, vec![(own, PEM_B.as_bytes().to_vec())]);
        assert_eq!(files.dirs_used, vec![roots.path("mine")]);
        // The host is not used for an override, so it is not checked either.
        assert!(tls_files(&roots.dirs(), "../x", Some(&roots.path("mine"))).is_ok());
    }

    #[test]
    fn host_port_cannot_escape_the_root() {
        let roots = Roots::new();
        roots.write("secret/ca.crt", PEM_A);
        let long = "a".repeat(256);
        for host_port in [
            "",
            ".",
            "..",
            "../secret",
            "a/b",
            "/etc",
            "a..b",
            "a\0b",
            long.as_str(),
        ] {
            let error = tls_files(&roots.dirs(), host_port, None).expect_err(host_port);
            assert!(
                matches!(error, CertsError::InvalidHostPort(_)),
                "{host_port:?}: {error}"
            );
        }
        for host_port in [
            "localhost",
            "localhost:5000",
            "[::1]:5000",
            "my-registry.local",
        ] {
            assert!(
                tls_files(&roots.dirs(), host_port, None).is_ok(),
                "{host_port}"
            );
        }
    }

    #[test]
    fn a_root_that_is_a_file_is_skipped_but_a_host_entry_that_is_a_file_is_an_error() {
        let roots = Roots::new();
        roots.write("containers", "not a directory");
        let docker = roots.write("docker/h/ca.crt", PEM_A);
        let files = tls_files(&roots.dirs(), "h", None).expect("read");
        assert_eq!(files.ca_pems, vec![(docker, PEM_A.as_bytes().to_vec())]);

        let roots = Roots::new();
        roots.write("containers/h", "a file, not a directory");
        let error = tls_files(&roots.dirs(), "h", None).expect_err("not a directory");
        assert!(matches!(error, CertsError::Io { .. }), "{error}");
    }

    #[test]
    fn a_directory_named_like_a_ca_file_is_an_error() {
        let roots = Roots::new();
        fs::create_dir_all(roots.path("docker/h/odd.crt")).expect("mkdir");
        let error = tls_files(&roots.dirs(), "h", None).expect_err("directory");
        assert!(
            matches!(&error, CertsError::Io { path, .. } if path.ends_with("odd.crt")),
            "{error}"
        );
    }

    #[test]
    fn oversized_files_are_refused() {
        let roots = Roots::new();
        let big = "A".repeat(MAX_CERT_FILE_BYTES as usize + 1);
        roots.write("docker/h/big.crt", &big);
        let error = tls_files(&roots.dirs(), "h", None).expect_err("too large");
        assert!(matches!(error, CertsError::TooLarge { .. }), "{error}");
    }

    #[test]
    fn debug_output_hides_the_private_key() {
        let roots = Roots::new();
        roots.write("docker/h/c.cert", PEM_A);
        roots.write("docker/h/c.key", KEY);
        let files = tls_files(&roots.dirs(), "h", None).expect("read");
        let text = format!("{files:?}");
        assert!(
            text.contains("c.key") && !text.contains("SECRETKEY"),
            "{text}"
        );
    }
}
