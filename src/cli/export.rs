use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use crate::cli::{stdout_error, ImageArgs};
use crate::error::{Error, IoContext, Result};
use crate::rootfs::decode_ahead::DecodeAhead;
use crate::rootfs::OpenOptions;

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub image: ImageArgs,
    /// Output tar file, or - for stdout
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
}

pub fn run(args: &ExportArgs, opts: &OpenOptions) -> Result<()> {
    let rootfs = Arc::new(args.image.open(opts)?);
    // Stopped (and its workers joined) when dropped, however the export ends.
    let ahead = DecodeAhead::start(rootfs.clone());
    let decode_ahead = ahead.as_deref();
    let is_special = std::fs::metadata(&args.output).is_ok_and(|m| !m.is_file());
    if args.output.as_os_str() == "-" || is_special {
        if is_special {
            // A device or fifo (/dev/null, a pipe): write straight into it.
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&args.output)
                .at(&args.output)?;
            crate::view::export::export(
                &rootfs,
                BufWriter::with_capacity(1 << 20, file),
                decode_ahead,
            )?;
            return Ok(());
        }
        let stdout = std::io::stdout();
        let out = BufWriter::with_capacity(1 << 20, stdout.lock());
        crate::view::export::export(&rootfs, out, decode_ahead).map_err(|e| match e {
            Error::Io { source, .. } => stdout_error(source),
            e => e,
        })?;
        return Ok(());
    }
    // Write beside the target and rename, so a failed export leaves no
    // half-written tar under the requested name.
    let tmp = args.output.with_extension("tar.partial");
    let file = File::create(&tmp).at(&tmp)?;
    let result = crate::view::export::export(
        &rootfs,
        BufWriter::with_capacity(1 << 20, file),
        decode_ahead,
    );
    match result {
        Ok(stats) => {
            std::fs::rename(&tmp, &args.output).at(&args.output)?;
            let mut err = std::io::stderr();
            let _ = writeln!(
                err,
                "exported {} entries ({} bytes of file data) to {}",
                stats.entries,
                stats.file_bytes,
                args.output.display()
            );
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}
