use std::io::Write;

use clap::Args;

use crate::cli::{stdout_error, ImageArgs};
use crate::error::Result;
use crate::merge::{Node, NodeId, NodeKind};
use crate::rootfs::OpenOptions;

#[derive(Debug, Args)]
pub struct LsArgs {
    #[command(flatten)]
    pub image: ImageArgs,
    /// Directory (or file) inside the image
    #[arg(default_value = "/")]
    pub path: String,
    /// Long format: mode, links, uid, gid, size, mtime, name, link target
    #[arg(short, long)]
    pub long: bool,
    /// Recurse: print every path below PATH, one per line, like find
    #[arg(short = 'R', long)]
    pub recursive: bool,
}

pub fn run(args: &LsArgs, opts: &OpenOptions) -> Result<()> {
    let rootfs = args.image.open(opts)?;
    let tree = &rootfs.tree;
    let id = tree.resolve(args.path.as_bytes(), true)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    // Lines are written as they are found, never collected: a listing of
    // a million entries costs no more memory than the tree itself.
    let mut print = |name: &[u8], child: NodeId| -> Result<()> {
        if args.long {
            out.write_all(&long_line(&tree.node(child), name))
        } else {
            out.write_all(name)
        }
        .and_then(|()| out.write_all(b"\n"))
        .map_err(stdout_error)
    };
    match tree.node(id).children() {
        None => print(args.path.as_bytes(), id)?,
        Some(children) if !args.recursive => {
            for (name, child) in children.iter() {
                print(name, child)?;
            }
        }
        Some(_) => tree.visit(id, |path, child| {
            if path.is_empty() {
                Ok(())
            } else {
                print(path, child)
            }
        })?,
    }
    out.flush().map_err(stdout_error)
}

/// `ls -ln`-style line: numeric owners, since the host's names mean nothing here.
pub fn long_line(node: &Node, name: &[u8]) -> Vec<u8> {
    let size = match node.kind {
        NodeKind::CharDevice { major, minor } | NodeKind::BlockDevice { major, minor } => {
            format!("{major}, {minor}")
        }
        _ => node.size().to_string(),
    };
    let mut line = format!(
        "{} {:>3} {:>5} {:>5} {:>10} {} ",
        mode_string(node.file_type_bits(), node.meta.mode),
        node.nlink,
        node.meta.uid,
        node.meta.gid,
        size,
        format_time(node.meta.mtime)
    )
    .into_bytes();
    line.extend_from_slice(name);
    if let NodeKind::Symlink { target } = &node.kind {
        line.extend_from_slice(b" -> ");
        line.extend_from_slice(target);
    }
    line
}

pub fn mode_string(type_bits: u32, mode: u32) -> String {
    let kind = match type_bits {
        libc::S_IFDIR => 'd',
        libc::S_IFLNK => 'l',
        libc::S_IFCHR => 'c',
        libc::S_IFBLK => 'b',
        libc::S_IFIFO => 'p',
        _ => '-',
    };
    let mut s = String::with_capacity(10);
    s.push(kind);
    let special = [(0o4000, 's', 'S'), (0o2000, 's', 'S'), (0o1000, 't', 'T')];
    for (i, who) in [6u32, 3, 0].iter().enumerate() {
        let bits = (mode >> who) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        let (flag, set_x, set_nox) = special[i];
        s.push(match (bits & 1 != 0, mode & flag != 0) {
            (true, true) => set_x,
            (false, true) => set_nox,
            (true, false) => 'x',
            (false, false) => '-',
        });
    }
    s
}

/// UTC `YYYY-MM-DD HH:MM`, without a date library.
pub fn format_time(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_strings_show_special_bits() {
        assert_eq!(mode_string(libc::S_IFREG, 0o4755), "-rwsr-xr-x");
        assert_eq!(mode_string(libc::S_IFDIR, 0o1777), "drwxrwxrwt");
        assert_eq!(mode_string(libc::S_IFREG, 0o2644), "-rw-r-Sr--");
        assert_eq!(mode_string(libc::S_IFLNK, 0o777), "lrwxrwxrwx");
    }

    #[test]
    fn times_are_utc_dates() {
        assert_eq!(format_time(0), "1970-01-01 00:00");
        assert_eq!(format_time(1_700_000_000), "2023-11-14 22:13");
        assert_eq!(format_time(-86_400), "1969-12-31 00:00");
    }
}
