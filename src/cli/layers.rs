//! `ocimount layers IMAGE`: what each layer adds, changes and deletes, its
//! bytes and the bytes later layers hide, from the indexes (no mount).

use std::io::Write;

use clap::Args;
use indicatif::HumanBytes;

use crate::cli::{stdout_error, ImageArgs};
use crate::error::{Error, Result};
use crate::rootfs::{open_indexes, OpenOptions};
use crate::view::layers::layer_changes;

#[derive(Debug, Args)]
pub struct LayersArgs {
    #[command(flatten)]
    pub image: ImageArgs,
    /// One JSON document instead of a table
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &LayersArgs, opts: &OpenOptions) -> Result<()> {
    let opts = OpenOptions {
        platform: args.image.platform()?,
        ..opts.clone()
    };
    let (_, indexes) = open_indexes(&args.image.reference()?, &opts)?;
    let changes = layer_changes(indexes)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let text =
            serde_json::to_string_pretty(&changes).map_err(|e| Error::Internal(e.to_string()))?;
        return writeln!(out, "{text}").map_err(stdout_error);
    }
    writeln!(
        out,
        "{:>3}  {:<19}  {:>7}  {:>7}  {:>7}  {:>6}  {:>11}  {:>11}",
        "#", "LAYER", "ADDED", "CHANGED", "DELETED", "OPAQUE", "BYTES", "WASTED"
    )
    .map_err(stdout_error)?;
    for (i, c) in changes.iter().enumerate() {
        writeln!(
            out,
            "{:>3}  {:<19}  {:>7}  {:>7}  {:>7}  {:>6}  {:>11}  {:>11}",
            i + 1,
            &c.digest[..c.digest.len().min(19)],
            c.added,
            c.changed,
            c.deleted,
            c.opaque_dirs,
            HumanBytes(c.bytes).to_string(),
            HumanBytes(c.wasted).to_string()
        )
        .map_err(stdout_error)?;
    }
    let wasted: u64 = changes.iter().map(|c| c.wasted).sum();
    let bytes: u64 = changes.iter().map(|c| c.bytes).sum();
    writeln!(
        out,
        "wasted: {} of {} ({:.1}%)",
        HumanBytes(wasted),
        HumanBytes(bytes),
        if bytes == 0 {
            0.0
        } else {
            wasted as f64 * 100.0 / bytes as f64
        }
    )
    .map_err(stdout_error)
}
