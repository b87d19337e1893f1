//! `ocimount diff IMAGE1 IMAGE2`: paths added, removed and changed between
//! two images' merged trees (or two tags of one), without a mount.

use std::io::Write;

use clap::Args;

use crate::cli::stdout_error;
use crate::error::{Error, Result};
use crate::oci::Platform;
use crate::rootfs::{OpenOptions, Rootfs};
use crate::source::ImageRef;
use crate::view::diff::diff;

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The image to compare from
    #[arg(value_name = "IMAGE1")]
    pub old: String,
    /// The image to compare to
    #[arg(value_name = "IMAGE2")]
    pub new: String,
    /// Platform to use for both, as os/arch[/variant]
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// One JSON document ({added, removed, changed}) instead of lines
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &DiffArgs, opts: &OpenOptions) -> Result<()> {
    let opts = OpenOptions {
        platform: args.platform.as_deref().map(Platform::parse).transpose()?,
        ..opts.clone()
    };
    let old = Rootfs::open(&ImageRef::parse(&args.old)?, &opts)?;
    let new = Rootfs::open(&ImageRef::parse(&args.new)?, &opts)?;
    let changes = diff(&old, &new)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let text =
            serde_json::to_string_pretty(&changes).map_err(|e| Error::Internal(e.to_string()))?;
        return writeln!(out, "{text}").map_err(stdout_error);
    }
    // git diff --name-status style, one path a line, in path order.
    let mut lines: Vec<(String, String)> = Vec::new();
    lines.extend(changes.added.iter().map(|p| (p.clone(), format!("A {p}"))));
    lines.extend(
        changes
            .removed
            .iter()
            .map(|p| (p.clone(), format!("D {p}"))),
    );
    lines.extend(changes.changed.iter().map(|c| {
        (
            c.path.clone(),
            format!("M {} ({})", c.path, c.what.join(", ")),
        )
    }));
    lines.sort();
    for (_, line) in lines {
        writeln!(out, "{line}").map_err(stdout_error)?;
    }
    Ok(())
}
