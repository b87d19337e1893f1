use std::io::Write;

use clap::Args;

use crate::cli::ImageArgs;
use crate::error::{Error, Result};
use crate::image::Image;
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
        let bar = progress.layer_bar(label.clone(), layer.size);
        let check = check_layer(layer, &*blob, &bar).map_err(|e| Error::io(blob.location(), e))?;
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
        if layer_problems.is_empty() {
            let _ = writeln!(
                err,
                "ok      {label} {} ({}, {} -> {} bytes)",
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
