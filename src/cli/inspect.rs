use std::io::Write;

use clap::Args;
use serde::Serialize;

use crate::cli::{stdout_error, ImageArgs};
use crate::digest::Digest;
use crate::error::Result;
use crate::image::PlatformChoice;
use crate::layer::layer_index::BuiltFrom;
use crate::oci::manifest::RuntimeConfig;
use crate::rootfs::OpenOptions;
use crate::source::reference::Transport;

#[derive(Debug, Args)]
pub struct InspectArgs {
    #[command(flatten)]
    pub image: ImageArgs,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Report<'a> {
    image: &'a str,
    /// Where a registry image was read from, when registries.conf sent it
    /// elsewhere (a mirror, a rewritten location).
    #[serde(skip_serializing_if = "Option::is_none")]
    read_from: Option<String>,
    manifest: Digest,
    manifest_media_type: &'a str,
    config: Digest,
    platform: &'a PlatformChoice,
    layers: Vec<LayerReport<'a>>,
    runtime: &'a RuntimeConfig,
    created: Option<&'a str>,
    cache: String,
}

#[derive(Serialize)]
struct LayerReport<'a> {
    digest: Digest,
    diff_id: Digest,
    media_type: &'a str,
    compression: &'static str,
    compressed_size: u64,
    /// The tar's length, known from a full pass; `None` for an index made
    /// from a table of contents, which does not say it.
    uncompressed_size: Option<u64>,
    entries: usize,
    spans: usize,
    /// What the layer's index was made from: `full pass`, `eStargz TOC`
    /// or `zstd:chunked TOC`.
    indexed_from: &'static str,
}

pub fn run(args: &InspectArgs, opts: &OpenOptions) -> Result<()> {
    let rootfs = args.image.open(opts)?;
    let image = &rootfs.image;
    let read_from = match &image.reference.transport {
        Transport::Registry(name) => {
            let at = image.store.index_location();
            (at != format!("docker://{name}")).then_some(at)
        }
        _ => None,
    };
    let report = Report {
        image: &args.image.image,
        read_from,
        manifest: image.manifest_digest,
        manifest_media_type: &image.manifest_media_type,
        config: image.config_digest,
        platform: &image.platform,
        layers: image
            .layers
            .iter()
            .zip(rootfs.indexes.iter().zip(&rootfs.entry_counts))
            .map(|(l, (ix, &entries))| LayerReport {
                digest: l.digest,
                diff_id: l.diff_id,
                media_type: &l.media_type,
                compression: l.compression.name(),
                compressed_size: ix.compressed_size,
                uncompressed_size: (ix.built_from == BuiltFrom::FullPass)
                    .then_some(ix.uncompressed_size),
                entries,
                spans: ix.spans.len(),
                indexed_from: match ix.built_from {
                    BuiltFrom::FullPass => "full pass",
                    BuiltFrom::EstargzToc => "eStargz TOC",
                    BuiltFrom::ZstdChunkedToc => "zstd:chunked TOC",
                },
            })
            .collect(),
        runtime: &image.config.config,
        created: image.config.created.as_deref(),
        cache: rootfs.cache.root().display().to_string(),
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report).map_err(|e| stdout_error(e.into()))?;
        writeln!(out).map_err(stdout_error)?;
        return Ok(());
    }
    out.write_all(text(&report).as_bytes())
        .map_err(stdout_error)
}

fn text(r: &Report<'_>) -> String {
    let mut s = String::new();
    let mut line = |k: &str, v: String| s.push_str(&format!("{k:<13}{v}\n"));
    line("Image:", r.image.to_string());
    if let Some(at) = &r.read_from {
        line("Read from:", format!("{at} (registries.conf)"));
    }
    line(
        "Manifest:",
        format!("{} ({})", r.manifest, r.manifest_media_type),
    );
    line("Config:", r.config.to_string());
    let offered: Vec<&str> = r
        .platform
        .offered
        .iter()
        .map(|o| o.platform.as_str())
        .collect();
    line(
        "Platforms:",
        if offered.is_empty() {
            "single-platform image".to_string()
        } else {
            offered.join(", ")
        },
    );
    line(
        "Chosen:",
        format!("{} ({})", r.platform.chosen, r.platform.reason),
    );
    if let Some(c) = r.created {
        line("Created:", c.to_string());
    }
    let c = r.runtime;
    let join = |v: &Option<Vec<String>>| {
        v.as_ref()
            .map(|v| format!("{v:?}"))
            .unwrap_or_else(|| "-".to_string())
    };
    line("Entrypoint:", join(&c.entrypoint));
    line("Cmd:", join(&c.cmd));
    line(
        "User:",
        c.user
            .clone()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "- (root)".to_string()),
    );
    line(
        "WorkingDir:",
        c.working_dir
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "- (/)".to_string()),
    );
    let keys = |m: &Option<std::collections::BTreeMap<String, serde_json::Value>>| {
        m.as_ref()
            .map(|m| m.keys().cloned().collect::<Vec<_>>().join(", "))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "-".to_string())
    };
    line("Ports:", keys(&c.exposed_ports));
    line("Volumes:", keys(&c.volumes));
    s.push_str("Env:\n");
    for e in c.env.iter().flatten() {
        s.push_str(&format!("  {e}\n"));
    }
    s.push_str("Labels:\n");
    for (k, v) in c.labels.iter().flatten() {
        s.push_str(&format!("  {k}={v}\n"));
    }
    s.push_str(&format!(
        "Layers:\n  {:>2}  {:<19}  {:<5}  {:>12}  {:>12}  {:>7}\n",
        "#", "DIGEST", "COMP", "COMPRESSED", "UNCOMPRESSED", "ENTRIES"
    ));
    for (i, l) in r.layers.iter().enumerate() {
        s.push_str(&format!(
            "  {:>2}  sha256:{}  {:<5}  {:>12}  {:>12}  {:>7}\n",
            i + 1,
            l.digest.short(),
            l.compression,
            l.compressed_size,
            l.uncompressed_size
                .map_or_else(|| "(TOC)".to_string(), |n| n.to_string()),
            l.entries
        ));
    }
    s.push_str(&format!("Cache:       {}\n", r.cache));
    s
}
