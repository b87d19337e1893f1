//! The command line: argument types and one file per subcommand.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::error::Result;
use crate::oci::Platform;
use crate::rootfs::{OpenOptions, Rootfs};
use crate::source::ImageRef;

mod bundle;
mod cache;
mod cat;
mod daemon_argv;
mod diff;
mod export;
mod generate;
mod index;
mod inspect;
mod layers;
mod ls;
mod mount;
pub mod mount_helper;
mod run;
mod verify;

/// Mount an OCI image as a read-only directory, or look inside it without
/// mounting: from a layout, an image archive or a registry, lazily.
///
/// IMAGE is written as skopeo writes it: a local OCI image layout (a
/// directory with `oci-layout` and `index.json`) as PATH, PATH:TAG or
/// PATH@sha256:DIGEST, optionally `oci:PATH…`; `oci-archive:FILE[:TAG]`;
/// `docker-archive:FILE[:REPO:TAG]` (what `docker save` writes); or a plain
/// path to either kind of archive; or `docker://[HOST[:PORT]/]REPO[:TAG|@DIGEST]`
/// for an image in a registry, read lazily with Range requests (short names
/// are normalised as skopeo does: `docker://debian` is
/// docker.io/library/debian:latest). Archives are read in place. Layers are
/// indexed once into a shared cache; later commands reuse the index.
///
/// Exit status: 0 on success, 1 when the command failed (the message says
/// why and names the file or layer), 2 for a usage error.
#[derive(Debug, Parser)]
#[command(
    name = "ocimount",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Cache directory [default: $OCIMOUNT_CACHE, /var/cache/ocimount as
    /// root, else $XDG_CACHE_HOME/ocimount]
    #[arg(long, global = true, value_name = "DIR")]
    pub cache: Option<PathBuf>,

    /// What the cache keeps: `full` stores decoded spans for the next read;
    /// `index-only` stores nothing decoded and serves every read from the
    /// blob through its checkpoints (the smallest disk footprint)
    #[arg(
        long,
        global = true,
        value_name = "MODE",
        env = "OCIMOUNT_CACHE_MODE",
        default_value = "full"
    )]
    pub cache_mode: crate::cache::CacheMode,

    /// Bound the decoded data the cache holds (e.g. 500M, 2G): over it,
    /// spans are evicted, least recently read first, and decoded again
    /// when next read. Indexes are kept until pruned
    #[arg(
        long,
        global = true,
        value_name = "SIZE",
        env = "OCIMOUNT_CACHE_MAX",
        value_parser = crate::cache::eviction::parse_size
    )]
    pub cache_max: Option<u64>,

    #[command(flatten)]
    pub registry: RegistryArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the platforms an image offers, the one chosen and why, its
    /// layers and its config.
    Inspect(inspect::InspectArgs),
    /// List a directory of the merged rootfs.
    Ls(ls::LsArgs),
    /// Write a file of the merged rootfs to stdout (symlinks are followed
    /// inside the image).
    Cat(cat::CatArgs),
    /// Write the merged rootfs as one tar archive, like `crane export`.
    Export(export::ExportArgs),
    /// Check every blob digest and diff_id of the image, ignoring the cache.
    Verify(verify::VerifyArgs),
    /// Mount the image's rootfs read-only at DIR; returns once it is live.
    Mount(mount::MountArgs),
    /// Unmount a directory mounted by `ocimount mount` (fusermount3 -u works too).
    #[command(alias = "unmount")]
    Umount(mount::UmountArgs),
    /// List what this cache has mounted.
    #[command(alias = "ps")]
    Mounts,
    /// Make an OCI runtime bundle at DIR: config.json converted from the
    /// image config, and the rootfs mounted read-only at DIR/rootfs.
    Bundle(bundle::BundleArgs),
    /// Run a command in the image with runc or crun, then remove everything
    /// (exit status: the container's).
    Run(run::RunArgs),
    /// What each layer adds, changes and deletes, and the bytes later layers
    /// hide ("wasted"), from the indexes alone.
    Layers(layers::LayersArgs),
    /// Paths added, removed and changed between two images (or two tags).
    Diff(diff::DiffArgs),
    /// Publish layer indexes to a registry for other nodes (`index push`).
    Index(index::IndexArgs),
    /// What the cache holds and who uses it; prune it or remove a layer.
    Cache(cache::CacheArgs),
    /// Shell completions and man pages, from these definitions.
    Generate(generate::GenerateArgs),
    /// The mount daemon that `mount` starts (internal).
    #[command(hide = true)]
    Daemon(mount::DaemonCliArgs),
}

/// How registries are spoken to (`docker://` images), as skopeo's flags.
#[derive(Clone, Debug, PartialEq, Eq, Args)]
#[command(next_help_heading = "Registry options (docker:// images)")]
pub struct RegistryArgs {
    /// Require HTTPS and verify certificates; `--tls-verify=false` allows
    /// plain HTTP and unverified certificates
    #[arg(
        long,
        global = true,
        value_name = "BOOL",
        default_value_t = true,
        action = clap::ArgAction::Set,
        env = "OCIMOUNT_TLS_VERIFY"
    )]
    pub tls_verify: bool,

    /// Credentials for the registry, instead of the auth files
    #[arg(long, global = true, value_name = "USER:PASS")]
    pub creds: Option<String>,

    /// Read credentials from FILE only (auth.json or Docker's config.json
    /// format, credential helpers included), instead of $REGISTRY_AUTH_FILE
    /// or the default auth files
    #[arg(long, global = true, value_name = "FILE")]
    pub authfile: Option<PathBuf>,

    /// Use the *.crt, *.cert and *.key files in DIR instead of the
    /// /etc/containers/certs.d and /etc/docker/certs.d lookup
    #[arg(long, global = true, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,

    /// Ignore layer-index artifacts published with `ocimount index push`;
    /// index every layer with a full pass
    #[arg(long, global = true)]
    pub no_remote_index: bool,

    /// Ignore the tables of contents of eStargz and zstd:chunked layers
    /// (which the manifest vouches for); index those layers with a full
    /// pass too
    #[arg(long, global = true)]
    pub no_toc: bool,

    /// Bound on each registry request (a manifest, a token, the bytes of a
    /// span), retries included, in seconds
    #[arg(
        long,
        global = true,
        value_name = "SECONDS",
        default_value_t = 60,
        env = "OCIMOUNT_REGISTRY_TIMEOUT"
    )]
    pub registry_timeout: u64,

    /// The registries.conf to read (mirrors, rewritten locations, insecure
    /// and blocked registries) instead of $CONTAINERS_REGISTRIES_CONF,
    /// ~/.config/containers/registries.conf or
    /// /etc/containers/registries.conf; drop-ins from registries.conf.d
    /// beside it
    #[arg(long, global = true, value_name = "FILE")]
    pub registries_conf: Option<PathBuf>,
}

impl RegistryArgs {
    /// The registry settings these flags ask for (credentials from
    /// `--creds`, else from the parent's environment for a daemon).
    pub fn settings(&self) -> Result<crate::source::registry::settings::Settings> {
        use crate::source::registry::{credentials, settings};
        let creds = match &self.creds {
            Some(text) => Some(
                credentials::parse_creds_flag(text)
                    .map_err(|e| crate::error::Error::BadArgument(format!("--creds: {e}")))?,
            ),
            None => match std::env::var(settings::CREDS_ENV) {
                Ok(text) if !text.is_empty() => {
                    Some(credentials::parse_creds_flag(&text).map_err(|e| {
                        crate::error::Error::BadArgument(format!("{}: {e}", settings::CREDS_ENV))
                    })?)
                }
                _ => None,
            },
        };
        use crate::source::registry::registries_conf::{Env, RegistriesConf};
        let registries =
            RegistriesConf::load(&Env::from_process().with_file(self.registries_conf.clone()));
        Ok(settings::Settings {
            registries: std::sync::Arc::new(registries),
            tls_verify: self.tls_verify,
            creds,
            authfile: self.authfile.clone(),
            cert_dir: self.cert_dir.clone(),
            remote_index: !self.no_remote_index,
            tocs: !self.no_toc,
            // Past a day is no bound at all (and would overflow an Instant).
            request_timeout: std::time::Duration::from_secs(self.registry_timeout.clamp(1, 86_400)),
            // Named by the rootfs stage, which knows the cache.
            documents: None,
        })
    }
}

/// The image and platform every command takes.
#[derive(Debug, Args)]
pub struct ImageArgs {
    /// The image: PATH[:TAG|@sha256:DIGEST] (optionally oci:PATH…),
    /// oci-archive:FILE[:TAG], docker-archive:FILE[:REPO:TAG], an archive FILE,
    /// or docker://[HOST[:PORT]/]REPO[:TAG|@sha256:DIGEST]
    #[arg(value_name = "IMAGE")]
    pub image: String,

    /// Platform to use instead of the host's, as os/arch[/variant]
    /// (e.g. linux/arm64, linux/arm/v7)
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
}

impl ImageArgs {
    pub fn reference(&self) -> Result<ImageRef> {
        ImageRef::parse(&self.image)
    }

    pub fn platform(&self) -> Result<Option<Platform>> {
        self.platform.as_deref().map(Platform::parse).transpose()
    }

    pub fn open(&self, opts: &OpenOptions) -> Result<Rootfs> {
        let opts = OpenOptions {
            platform: self.platform()?,
            ..opts.clone()
        };
        Rootfs::open(&self.reference()?, &opts)
    }
}

impl Cli {
    /// The one options value every command is handed: built here, once,
    /// from the global flags; nothing below reads a process-wide default.
    pub fn options(&self) -> Result<OpenOptions> {
        Ok(OpenOptions {
            cache_dir: self.cache.clone(),
            cache_mode: self.cache_mode,
            cache_max: self.cache_max,
            registry: self.registry.settings()?,
            ..OpenOptions::default()
        })
    }
}

pub fn run(cli: Cli) -> Result<()> {
    let opts = cli.options()?;
    let daemon_argv = daemon_argv::for_globals(&cli);
    match &cli.command {
        Command::Inspect(a) => inspect::run(a, &opts),
        Command::Ls(a) => ls::run(a, &opts),
        Command::Cat(a) => cat::run(a, &opts),
        Command::Export(a) => export::run(a, &opts),
        Command::Verify(a) => verify::run(a, &opts),
        Command::Mount(a) => mount::run_mount(a, &opts, &daemon_argv),
        Command::Umount(a) => mount::run_umount(a, &opts),
        Command::Mounts => mount::run_mounts(&opts),
        Command::Bundle(a) => bundle::run(a, &opts, &daemon_argv),
        Command::Run(a) => run::run(a, &opts, &daemon_argv),
        Command::Daemon(a) => mount::run_daemon_command(a, &opts),
        Command::Cache(a) => cache::run(a, &opts),
        Command::Index(a) => index::run(a, &opts),
        Command::Layers(a) => layers::run(a, &opts),
        Command::Diff(a) => {
            let outcome = diff::run(a, &opts);
            if !a.exit_code {
                return outcome.map(drop);
            }
            // diff(1)'s statuses: 0 the same, 1 different, 2 trouble.
            let code = match outcome {
                Ok(diff::Outcome::Same) => 0,
                Ok(diff::Outcome::Different) => 1,
                Err(e) => {
                    eprintln!("ocimount: error: {e}");
                    2
                }
            };
            let _ = std::io::Write::flush(&mut std::io::stdout());
            std::process::exit(code)
        }
        Command::Generate(a) => generate::run(a),
    }
}

/// Write to stdout; a closed pipe (`| head`) ends the command quietly.
pub(crate) fn stdout_error(e: std::io::Error) -> crate::error::Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    crate::error::Error::io("stdout", e)
}
