use std::io::Write;

use clap::Args;

use crate::cli::ImageArgs;
use crate::error::{Error, Result};
use crate::image::Image;
use crate::layer::toc::index_from_toc;
use crate::layer::verify::check_layer;
use crate::rootfs::OpenOptions;
use crate::sys::progress::Progress;

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub image: ImageArgs,
}

/// Check every layer, report every problem, fail if there was one.
pub fn run(args: &VerifyArgs, opts: &OpenOptions) -> Result<()> {
    // Resolving the image already checks the index, manifest and config digests.
    let image = Image::open(
        &args.image.reference()?,
        args.image.platform()?.as_ref(),
        &opts.registry,
    )?;
    let progress = Progress::new();
    let mut problems = Vec::new();
    let mut err = std::io::stderr();
    let _ = writeln!(err, "ok      manifest {}", image.manifest_digest);
    let _ = writeln!(err, "ok      config   {}", image.config_digest);
    for layer in &image.layers {
        let label = format!("layer {}/{}", layer.position + 1, image.layers.len());
        let blob = match image.store.blob(&layer.digest, Some(layer.size)) {
            Ok(b) => b,
            Err(e) => {
                let _ = writeln!(err, "FAILED  {label}: {e}");
                problems.push(e.to_string());
                continue;
            }
        };
        // A layer a mount reads through its TOC: the TOC is compared with
        // the tar too. One a mount would not use is said so, and is no
        // failure (the mount reads the tar).
        let toc = match (&layer.toc, opts.registry.tocs) {
            (Some(reference), true) => match index_from_toc(layer, reference, &*blob) {
                Ok(index) => Some(index),
                Err(e) => {
                    let _ = writeln!(
                        err,
                        "note    {label} {}: its table of contents is not used by a mount ({e}); \
                         a full pass is",
                        layer.digest
                    );
                    None
                }
            },
            _ => None,
        };
        let bar = progress.layer_bar(label.clone(), layer.size);
        let check = check_layer(layer, &*blob, &bar, toc.as_ref())
            .map_err(|e| Error::io(blob.location(), e))?;
        bar.finish_and_clear();
        let mut layer_problems = Vec::new();
        if check.blob_digest != layer.digest {
            layer_problems.push(format!(
                "blob digest is {}, expected {}",
                check.blob_digest, layer.digest
            ));
        }
        if let Some(e) = &check.decode_error {
            layer_problems.push(format!(
                "cannot decompress ({}): {e}",
                layer.compression.name()
            ));
        }
        match check.diff_id {
            Some(d) if d != layer.diff_id => {
                layer_problems.push(format!("diff_id is {d}, the config says {}", layer.diff_id))
            }
            _ => {}
        }
        if let Some(found) = &check.toc {
            for what in &found.reported {
                layer_problems.push(format!(
                    "its table of contents disagrees with its tar: {what}"
                ));
            }
            if found.more > 0 {
                layer_problems.push(format!(
                    "its table of contents disagrees with its tar in {} more places",
                    found.more
                ));
            }
        }
        if layer_problems.is_empty() {
            let agrees = match (&check.toc, toc.as_ref().map(|t| t.built_from.describe())) {
                (Some(_), Some(what)) => format!("; {what} agrees with the tar"),
                _ => String::new(),
            };
            let _ = writeln!(
                err,
                "ok      {label} {} ({}, {} -> {} bytes{agrees})",
                layer.digest,
                layer.compression.name(),
                layer.size,
                check.uncompressed_size
            );
        }
        for p in layer_problems {
            let _ = writeln!(err, "FAILED  {label} {}: {p}", layer.digest);
            problems.push(format!("{label} {}: {p}", layer.digest));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::VerifyFailed(problems))
    }
}
