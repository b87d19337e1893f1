use std::path::PathBuf;

use clap::Args;

use crate::cache::Cache;
use crate::cli::ImageArgs;
use crate::error::Result;
use crate::rootfs::OpenOptions;
use crate::serve::prefetch::Prefetch;
use crate::serve::{
    list_mounts, mount, run_daemon, umount, DaemonArgs, DaemonArgv, DaemonExit, MountFlags,
    MountRequest, DAEMON_EXIT_TIMEOUT,
};

#[derive(Debug, Args)]
pub struct MountArgs {
    #[command(flatten)]
    pub image: ImageArgs,
    /// Empty directory to mount the rootfs on
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Serve in this process, logging to stderr (RUST_LOG sets the level),
    /// instead of a background daemon that logs into the cache
    #[arg(short, long)]
    pub foreground: bool,
    /// Let other users in (needed by runc in a user namespace)
    #[arg(long)]
    pub allow_other: bool,
    /// Honour setuid/setgid bits (mounts are nosuid otherwise)
    #[arg(long)]
    pub suid: bool,
    /// Honour device nodes (mounts are nodev otherwise)
    #[arg(long)]
    pub dev: bool,
    /// Print nothing but errors (no progress, no `mounted …` line)
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub fill: FillArgs,
}

/// What `mount`, `bundle` and `run` do beside mounting: the background fill
/// of the data cache, the record of first reads, publishing indexes.
#[derive(Clone, Copy, Debug, Args)]
pub struct FillArgs {
    /// Once mounted, decode the image's spans into the data cache in the
    /// background, on every core, giving way to reads: `all` in the order
    /// of the image's files, `recorded` the files of the image's record
    /// (see --record) first. Nothing is prefetched with --cache-mode
    /// index-only or --cache-max
    #[arg(long, value_enum, value_name = "WHAT", default_value_t)]
    pub prefetch: Prefetch,
    /// Record the order files are first read in, written to the cache at
    /// unmount (CACHE/records/<manifest>) for --prefetch recorded
    #[arg(long)]
    pub record: bool,
    /// When this node indexes a docker:// image with a full pass and its
    /// registry has no published index artifact for it yet, publish one
    /// (as `ocimount index push` does), if the credentials allow a push;
    /// a failed publish is a warning, never a failed mount
    #[arg(long)]
    pub publish_index: bool,
}

/// The daemon `mount` starts: every input is an argument (written by
/// `daemon_argv` from these same definitions).
#[derive(Clone, Debug, PartialEq, Eq, Args)]
pub struct DaemonCliArgs {
    /// The image pinned to its manifest digest (…@sha256:…)
    #[arg(long, value_name = "IMAGE")]
    pub pinned: String,
    /// The image as the user named it, for the fsname and `ocimount mounts`
    #[arg(long)]
    pub name: String,
    /// Where to write `ready` or `error: …` once the mount is up or failed
    #[arg(long, value_name = "FD")]
    pub ready_fd: Option<i32>,
    /// Log file (stdout and stderr go there)
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    #[arg(long)]
    pub allow_other: bool,
    #[arg(long)]
    pub suid: bool,
    #[arg(long)]
    pub dev: bool,
    #[arg(long, value_enum, default_value_t)]
    pub prefetch: Prefetch,
    #[arg(long)]
    pub record: bool,
}

#[derive(Debug, Args)]
pub struct UmountArgs {
    /// Mount point to unmount
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Detach a busy mount anyway; it goes away when its last user does
    #[arg(long)]
    pub lazy: bool,
}

pub fn run_mount(args: &MountArgs, opts: &OpenOptions, daemon_argv: &DaemonArgv) -> Result<()> {
    let req = MountRequest {
        image: args.image.image.clone(),
        dir: args.dir.clone(),
        open: OpenOptions {
            platform: args.image.platform()?,
            progress: !args.quiet,
            publish_index: args.fill.publish_index,
            ..opts.clone()
        },
        foreground: args.foreground,
        quiet: args.quiet,
        allow_other: args.allow_other,
        suid: args.suid,
        dev: args.dev,
        prefetch: args.fill.prefetch,
        record: args.fill.record,
        daemon_argv: daemon_argv.clone(),
    };
    mount(&req)
}

pub fn run_daemon_command(args: &DaemonCliArgs, opts: &OpenOptions) -> Result<()> {
    run_daemon(&DaemonArgs {
        pinned: args.pinned.clone(),
        name: args.name.clone(),
        dir: args.dir.clone(),
        ready_fd: args.ready_fd,
        log: args.log.clone(),
        flags: MountFlags {
            allow_other: args.allow_other,
            suid: args.suid,
            dev: args.dev,
        },
        prefetch: args.prefetch,
        record: args.record,
        open: opts.clone(),
    })
}

pub fn run_umount(args: &UmountArgs, opts: &OpenOptions) -> Result<()> {
    let exit = umount(
        &args.dir,
        &Cache::locate(opts.cache_dir.as_deref())?,
        args.lazy,
    )?;
    if let DaemonExit::StillRunning(pid) = exit {
        eprintln!(
            "ocimount: warning: unmounted, but its daemon (pid {pid}) was still running after \
             {} s; it still holds the image's layers",
            DAEMON_EXIT_TIMEOUT.as_secs()
        );
    }
    Ok(())
}

pub fn run_mounts(opts: &OpenOptions) -> Result<()> {
    let cache = Cache::locate(opts.cache_dir.as_deref())?;
    for m in list_mounts(&cache) {
        println!(
            "{}\t{}\tpid {}\t{}",
            m.dir.display(),
            m.image,
            m.pid,
            m.manifest
        );
    }
    Ok(())
}
