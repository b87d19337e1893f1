//! `ocimount index push IMAGE`: publish the image's layer indexes to its
//! registry, so that other nodes mount it with no full pass over a layer.

use clap::{Args, Subcommand};
use indicatif::HumanBytes;

use crate::cache::Cache;
use crate::cli::ImageArgs;
use crate::error::{Error, Result};
use crate::layer::layer_index::LayerIndex;
use crate::rootfs::publish::publish;
use crate::rootfs::{open_indexes, OpenOptions};
use crate::source::reference::Transport;

#[derive(Debug, Args)]
pub struct IndexArgs {
    #[command(subcommand)]
    pub command: IndexCommand,
}

#[derive(Debug, Subcommand)]
pub enum IndexCommand {
    /// Index every layer of a docker:// image (or take the indexes from the
    /// cache) and publish them in its repository as an OCI artifact whose
    /// subject is the image manifest: through the referrers API, or the
    /// sha256-<hex> referrers tag where the registry has none.
    Push(ImageArgs),
}

pub fn run(args: &IndexArgs, opts: &OpenOptions) -> Result<()> {
    match &args.command {
        IndexCommand::Push(image) => push(image, opts),
    }
}

fn push(args: &ImageArgs, opts: &OpenOptions) -> Result<()> {
    let reference = args.reference()?;
    let Transport::Registry(_) = &reference.transport else {
        return Err(Error::BadArgument(format!(
            "{}: index push publishes to a registry; give a docker:// image",
            args.image
        )));
    };
    let opts = OpenOptions {
        platform: args.platform()?,
        progress: true,
        // What is published is what a full pass here built: never an
        // index taken from an artifact already there.
        published_indexes: false,
        ..opts.clone()
    };
    let (image, indexes) = open_indexes(&reference, &opts)?;
    let cache = Cache::locate(opts.cache_dir.as_deref())?;
    let indexes: Vec<&LayerIndex> = indexes.iter().collect();
    let done = publish(&image, &indexes, &cache, &opts.registry)?;
    for left in &done.left_out {
        eprintln!(
            "layer {} ({}): not published: {}",
            left.position + 1,
            left.digest,
            left.reason
        );
    }
    println!(
        "pushed index artifact {} for {}@{}: {} of {} layers, {}, listed through {}",
        done.pushed.artifact,
        done.target,
        image.manifest_digest,
        done.published,
        image.layers.len(),
        HumanBytes(done.pushed.index_bytes),
        done.pushed.listed_through
    );
    Ok(())
}
