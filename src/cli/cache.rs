//! `ocimount cache ls|du|prune|rm`: what the cache holds, and taking it back.

use std::io::Write;
use std::time::Duration;

use clap::{Args, Subcommand};
use indicatif::HumanBytes;

use crate::cache::admin;
use crate::cache::Cache;
use crate::cli::ls::format_time;
use crate::cli::stdout_error;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::rootfs::OpenOptions;

#[derive(Debug, Args)]
pub struct CacheArgs {
    #[command(subcommand)]
    pub command: CacheCommand,
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// List each layer: index size, decoded bytes held, last use, and the
    /// images and live mounts that use it.
    Ls {
        /// One JSON document instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Print the totals: layers, images, mounts, index and decoded bytes,
    /// and the disk the cache uses.
    Du {
        #[arg(long)]
        json: bool,
    },
    /// Drop the decoded data of every layer nothing is reading (it is
    /// decoded again when next read); with --all, remove those layers
    /// altogether, indexes included, and the merged trees of images no
    /// longer recorded. Either way, files left by a crashed writer go.
    Prune {
        /// Remove whole layers, not just their decoded data
        #[arg(long)]
        all: bool,
        /// Only layers last used longer ago than this (e.g. 90s, 30m, 12h, 7d, 2w)
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        older_than: Option<Duration>,
    },
    /// Remove one layer (refused while a mount or command reads it), and
    /// the merged trees of images no longer recorded.
    Rm {
        /// The layer digest, sha256:HEX
        #[arg(value_name = "DIGEST")]
        digest: String,
    },
}

pub fn run(args: &CacheArgs, opts: &OpenOptions) -> Result<()> {
    let cache = Cache::locate(opts.cache_dir.as_deref())?;
    let mut out = std::io::stdout().lock();
    match &args.command {
        CacheCommand::Ls { json: true } => {
            let text = serde_json::to_string_pretty(&admin::layers(&cache)?)
                .map_err(|e| Error::Internal(e.to_string()))?;
            writeln!(out, "{text}").map_err(stdout_error)
        }
        CacheCommand::Ls { json: false } => {
            writeln!(
                out,
                "{:<19}  {:>10}  {:>10}  {:<16}  USED BY",
                "LAYER", "INDEX", "DECODED", "LAST USED"
            )
            .map_err(stdout_error)?;
            for layer in admin::layers(&cache)? {
                let mut users: Vec<String> = layer
                    .mounts
                    .iter()
                    .map(|m| format!("mount {}", m.display()))
                    .collect();
                users.extend(layer.images.iter().cloned());
                if users.is_empty() && layer.in_use {
                    users.push("(a running command)".to_string());
                }
                writeln!(
                    out,
                    "{:<19}  {:>10}  {:>10}  {:<16}  {}",
                    &layer.digest[..layer.digest.len().min(19)],
                    HumanBytes(layer.index_bytes).to_string(),
                    HumanBytes(layer.decoded_bytes).to_string(),
                    format_time(layer.last_used as i64),
                    if users.is_empty() {
                        "-".to_string()
                    } else {
                        users.join(", ")
                    }
                )
                .map_err(stdout_error)?;
            }
            Ok(())
        }
        CacheCommand::Du { json } => {
            let totals = admin::totals(&cache)?;
            if *json {
                let text = serde_json::to_string_pretty(&totals)
                    .map_err(|e| Error::Internal(e.to_string()))?;
                return writeln!(out, "{text}").map_err(stdout_error);
            }
            writeln!(
                out,
                "{} layers, {} images, {} live mounts\nindexes  {}\ndecoded  {}\non disk  {} ({})",
                totals.layers,
                totals.images,
                totals.mounts,
                HumanBytes(totals.index_bytes),
                HumanBytes(totals.decoded_bytes),
                HumanBytes(totals.disk_bytes),
                cache.root().display()
            )
            .map_err(stdout_error)
        }
        CacheCommand::Prune { all, older_than } => {
            let report = admin::prune(&cache, *all, *older_than)?;
            let what = if *all {
                "removed"
            } else {
                "dropped the decoded data of"
            };
            writeln!(
                out,
                "{what} {} layer(s), {} freed",
                report.pruned.len(),
                HumanBytes(report.bytes_freed)
            )
            .map_err(stdout_error)?;
            if !report.in_use.is_empty() {
                writeln!(out, "kept {} layer(s) in use", report.in_use.len())
                    .map_err(stdout_error)?;
            }
            Ok(())
        }
        CacheCommand::Rm { digest } => {
            let digest = Digest::parse(digest)?;
            let freed = admin::remove(&cache, &digest)?;
            writeln!(out, "removed {digest}, {} freed", HumanBytes(freed)).map_err(stdout_error)
        }
    }
}

/// `90s`, `30m`, `12h`, `7d`, `2w`, or plain seconds.
fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90s, 30m, 12h, 7d or 2w"))?;
    let seconds = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {text:?}: use s, m, h, d or w"
            ))
        }
    };
    n.checked_mul(seconds)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_their_units() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("2w"), Ok(Duration::from_secs(1_209_600)));
        assert!(parse_duration("3y").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("d").is_err());
    }
}
