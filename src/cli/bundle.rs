use std::path::PathBuf;

use clap::Args;

use crate::bundle::{self, BundleOptions};
use crate::cli::mount::FillArgs;
use crate::error::Result;
use crate::oci::Platform;
use crate::rootfs::OpenOptions;
use crate::serve::DaemonArgv;

#[derive(Debug, Args)]
#[command(
    override_usage = "ocimount bundle [OPTIONS] IMAGE DIR\n       ocimount bundle --remove DIR [--lazy]"
)]
pub struct BundleArgs {
    /// The image: PATH[:TAG|@sha256:DIGEST] (optionally oci:PATH…),
    /// oci-archive:FILE[:TAG], docker-archive:FILE[:REPO:TAG], an archive FILE,
    /// or docker://[HOST[:PORT]/]REPO[:TAG|@sha256:DIGEST]
    #[arg(value_name = "IMAGE", required_unless_present = "remove")]
    pub image: Option<String>,
    /// The bundle directory: created, or an existing empty one
    #[arg(value_name = "DIR", required_unless_present = "remove")]
    pub dir: Option<PathBuf>,
    /// Platform to use instead of the host's, as os/arch[/variant]
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// Write a spec for an unprivileged caller: a user namespace with you as
    /// root, the host's network, /sys bind-mounted
    #[arg(long)]
    pub rootless: bool,
    /// Give the container a terminal (process.terminal; TERM=xterm)
    #[arg(long)]
    pub tty: bool,
    /// Unmount the rootfs of the bundle at DIR and remove what `ocimount
    /// bundle` created there, and nothing else
    #[arg(
        long,
        value_name = "DIR",
        conflicts_with_all = ["image", "dir", "platform", "rootless", "tty"]
    )]
    pub remove: Option<PathBuf>,
    /// With --remove: detach a busy rootfs anyway
    #[arg(long, requires = "remove")]
    pub lazy: bool,
    /// Print nothing but errors and warnings (no progress, no `bundle ready` line)
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub fill: FillArgs,
}

pub fn run(args: &BundleArgs, opts: &OpenOptions, daemon_argv: &DaemonArgv) -> Result<()> {
    if let Some(dir) = &args.remove {
        let removed = bundle::remove(dir, opts.cache_dir.as_deref(), args.lazy)?;
        for path in removed.kept {
            eprintln!(
                "ocimount: kept {}: it holds files `ocimount bundle` did not create",
                path.display()
            );
        }
        return Ok(());
    }
    let (Some(image), Some(dir)) = (&args.image, &args.dir) else {
        unreachable!("clap requires IMAGE and DIR without --remove");
    };
    let opts = BundleOptions {
        image: image.clone(),
        dir: dir.clone(),
        open: OpenOptions {
            platform: args.platform.as_deref().map(Platform::parse).transpose()?,
            progress: !args.quiet,
            publish_index: args.fill.publish_index,
            ..opts.clone()
        },
        rootless: args.rootless,
        tty: args.tty,
        entrypoint: None,
        cmd: None,
        prefetch: args.fill.prefetch,
        record: args.fill.record,
        daemon_argv: daemon_argv.clone(),
    };
    let made = bundle::create(&opts)?;
    for w in &made.warnings {
        eprintln!("ocimount: warning: {w}");
    }
    if args.quiet {
        return Ok(());
    }
    eprintln!(
        "bundle ready at {dir}: runc run -b {dir} ID (remove it with: ocimount bundle --remove {dir})",
        dir = made.dir.display()
    );
    Ok(())
}
