//! `mount -t fuse.ocimount IMAGE DIR` and `/etc/fstab`: mount(8) runs
//! `mount.fuse.ocimount IMAGE DIR [-o OPTIONS] [-n] [-s] [-f] [-v]`, the way
//! it runs every FUSE file system's helper. `scripts/install.sh` links that
//! name to the `ocimount` binary; run under it, the arguments are turned
//! into `ocimount mount`'s own.

use std::ffi::OsString;
use std::path::Path;

use crate::error::{Error, Result};

/// The names mount(8) runs the helper as.
const HELPER_NAMES: [&str; 2] = ["mount.fuse.ocimount", "mount.ocimount"];

/// Whether the binary was started as the mount helper.
pub fn is_helper(argv0: &OsString) -> bool {
    Path::new(argv0)
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| HELPER_NAMES.contains(&n))
}

/// The `ocimount …` arguments for a helper invocation.
pub fn translate(args: &[OsString]) -> Result<Vec<OsString>> {
    let bad = |reason: String| Error::BadReference {
        reference: args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" "),
        reason,
    };
    let mut positional = Vec::new();
    let mut options = Vec::new();
    let mut rest = args.iter().skip(1);
    while let Some(arg) = rest.next() {
        match arg.to_str() {
            Some("-o") => {
                let value = rest.next().ok_or_else(|| bad("-o needs options".into()))?;
                options.extend(
                    value
                        .to_string_lossy()
                        .split(',')
                        .filter(|o| !o.is_empty())
                        .map(str::to_string),
                );
            }
            Some(o) if o.starts_with("-o") => options.extend(
                o[2..]
                    .split(',')
                    .filter(|o| !o.is_empty())
                    .map(str::to_string),
            ),
            // Don't write mtab, sloppy, fake, verbose: nothing to do here.
            Some("-n" | "-s" | "-f" | "-v") => {}
            _ => positional.push(arg.clone()),
        }
    }
    let [image, dir] = positional.as_slice() else {
        return Err(bad(format!(
            "expected IMAGE and DIR, got {} argument(s)",
            positional.len()
        )));
    };
    let mut global = Vec::new();
    let mut flags: Vec<OsString> = vec!["--quiet".into()];
    for option in options {
        let (key, value) = match option.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (option.as_str(), None),
        };
        match (key, value) {
            ("cache", Some(dir)) => global.extend(["--cache".into(), dir.into()]),
            ("platform", Some(p)) => flags.extend(["--platform".into(), p.into()]),
            ("allow_other", None) => flags.push("--allow-other".into()),
            ("suid", None) => flags.push("--suid".into()),
            ("dev", None) => flags.push("--dev".into()),
            // mount(8) passes `rw` unless told `ro`; the mount is read-only
            // whatever it says. The rest are mount(8)'s and fstab's own.
            (
                "ro" | "rw" | "nosuid" | "nodev" | "noexec" | "exec" | "defaults" | "auto"
                | "noauto" | "user" | "users" | "nouser" | "nofail" | "_netdev" | "noatime"
                | "relatime" | "atime",
                None,
            ) => {}
            (k, _) if k.starts_with("x-") || k.starts_with("comment=") => {}
            _ => {
                return Err(bad(format!(
                    "unknown mount option {option:?} (known: cache=DIR, platform=P, \
                     allow_other, suid, dev, ro and mount(8)'s own)"
                )))
            }
        }
    }
    let mut out: Vec<OsString> = vec!["ocimount".into()];
    out.extend(global);
    out.extend(["mount".into(), image.clone(), dir.clone()]);
    out.extend(flags);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn fstab_options_become_mount_flags() {
        let got = translate(&strings(&[
            "/sbin/mount.fuse.ocimount",
            "oci-archive:/srv/img.tar:v1",
            "/mnt/img",
            "-o",
            "ro,noauto,allow_other,cache=/var/cache/x,platform=linux/arm64,x-systemd.automount",
        ]))
        .unwrap();
        assert_eq!(
            got,
            strings(&[
                "ocimount",
                "--cache",
                "/var/cache/x",
                "mount",
                "oci-archive:/srv/img.tar:v1",
                "/mnt/img",
                "--quiet",
                "--allow-other",
                "--platform",
                "linux/arm64",
            ])
        );
        assert!(is_helper(&"/usr/sbin/mount.fuse.ocimount".into()));
        assert!(!is_helper(&"/usr/bin/ocimount".into()));
    }

    #[test]
    fn unknown_options_and_missing_arguments_are_refused() {
        let plain = translate(&strings(&["mount.fuse.ocimount", "i", "d", "-o", "rw"])).unwrap();
        assert_eq!(plain, strings(&["ocimount", "mount", "i", "d", "--quiet"]));
        let err =
            translate(&strings(&["mount.fuse.ocimount", "i", "d", "-o", "bogus"])).unwrap_err();
        assert!(
            err.to_string().contains("unknown mount option \"bogus\""),
            "{err}"
        );
        let err = translate(&strings(&["mount.fuse.ocimount", "i"])).unwrap_err();
        assert!(err.to_string().contains("expected IMAGE and DIR"), "{err}");
    }
}
