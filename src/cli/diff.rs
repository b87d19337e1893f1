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
    /// Exit with 1 when the images differ and 0 when they do not, as
    /// `git diff --exit-code` and diff(1) do (errors then exit with 2)
    #[arg(long)]
    pub exit_code: bool,
}

/// How `diff` ended, for the exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Same,
    Different,
}

pub fn run(args: &DiffArgs, opts: &OpenOptions) -> Result<Outcome> {
    let opts = OpenOptions {
        platform: args.platform.as_deref().map(Platform::parse).transpose()?,
        ..opts.clone()
    };
    let old = Rootfs::open(&ImageRef::parse(&args.old)?, &opts)?;
    let new = Rootfs::open(&ImageRef::parse(&args.new)?, &opts)?;
    let changes = diff(&old, &new)?;
    let outcome =
        if changes.added.is_empty() && changes.removed.is_empty() && changes.changed.is_empty() {
            Outcome::Same
        } else {
            Outcome::Different
        };
    let mut out = std::io::stdout().lock();
    if args.json {
        let text =
            serde_json::to_string_pretty(&changes).map_err(|e| Error::Internal(e.to_string()))?;
        writeln!(out, "{text}").map_err(stdout_error)?;
        return Ok(outcome);
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
    Ok(outcome)
}
