use std::io::Write;
use std::sync::Arc;

use clap::Args;

use crate::cli::{stdout_error, ImageArgs};
use crate::error::{Error, Result};
use crate::merge::NodeKind;
use crate::rootfs::decode_ahead::DecodeAhead;
use crate::rootfs::OpenOptions;

#[derive(Debug, Args)]
pub struct CatArgs {
    #[command(flatten)]
    pub image: ImageArgs,
    /// Path inside the image, e.g. /etc/os-release
    pub path: String,
}

pub fn run(args: &CatArgs, opts: &OpenOptions) -> Result<()> {
    let rootfs = Arc::new(args.image.open(opts)?);
    let id = rootfs.tree.resolve(args.path.as_bytes(), true)?;
    if !matches!(rootfs.tree.node(id).kind, NodeKind::File { .. }) {
        return Err(Error::BadPath {
            path: args.path.clone(),
            reason: "not a regular file".to_string(),
        });
    }
    // The file's next spans are decoded on the other cores while this one
    // decodes and writes; stopped when dropped, however the copy ends.
    let ahead = DecodeAhead::start(rootfs.clone());
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    loop {
        if let Some(ahead) = &ahead {
            ahead.before_read(id, pos);
        }
        let n = rootfs.read_file(id, pos, &mut buf)?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n]).map_err(stdout_error)?;
        pos += n as u64;
    }
    out.flush().map_err(stdout_error)
}
