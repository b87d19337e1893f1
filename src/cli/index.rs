//! `ocimount index push IMAGE`: publish the image's layer indexes to its
//! registry, so that other nodes mount it with no full pass over a layer.

use clap::{Args, Subcommand};
use indicatif::HumanBytes;

use crate::cache::Cache;
use crate::cli::ImageArgs;
use crate::error::{Error, IoContext, Result};
use crate::layer::spans::SpanStart;
use crate::oci::manifest::Descriptor;
use crate::rootfs::{open_indexes, OpenOptions};
use crate::source::reference::Transport;
use crate::source::registry::client::Client;
use crate::source::registry::index_artifact::{self, LocalIndex};

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
    let Transport::Registry(name) = &reference.transport else {
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
    let mut local = Vec::new();
    for (layer, index) in image.layers.iter().zip(&indexes) {
        if index
            .spans
            .iter()
            .any(|s| matches!(s.start, SpanStart::Materialized { .. }))
        {
            eprintln!(
                "layer {} ({}): not published: only a full pass can fill it (one zstd frame, \
                 or a deflate block longer than a span), so every node indexes it",
                layer.position + 1,
                layer.digest
            );
            continue;
        }
        let path = cache.layer_dir(layer).join("index");
        let bytes = std::fs::read(&path).at(&path)?;
        local.push(LocalIndex {
            layer: layer.digest,
            bytes,
        });
    }
    let manifest = image.store.document(&image.manifest_digest, None)?;
    let subject = Descriptor {
        media_type: image.manifest_media_type.clone(),
        digest: image.manifest_digest,
        size: crate::blob::BlobSource::size(&*manifest),
        platform: None,
        annotations: Default::default(),
    };
    // Pushed to the primary location registries.conf gives, never a mirror.
    let target = opts.registry.push_source(name)?;
    let client = Client::connect(&target.name, &opts.registry.for_source(&target))?;
    let pushed = index_artifact::push(&client, &subject, &local)?;
    println!(
        "pushed index artifact {} for {}@{}: {} of {} layers, {}, listed through {}",
        pushed.artifact,
        target.name,
        image.manifest_digest,
        local.len(),
        image.layers.len(),
        HumanBytes(pushed.index_bytes),
        pushed.listed_through
    );
    Ok(())
}
