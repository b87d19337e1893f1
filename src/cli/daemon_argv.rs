//! The mount daemon's command line, written back from the clap definitions
//! that parse it: each argument struct the daemon takes has its `to_args`
//! here, and a test parses what they write and must get the same values
//! back, so the parent's flags and the daemon's cannot drift apart.

use std::ffi::OsString;
use std::sync::Arc;

use super::mount::DaemonCliArgs;
use super::{Cli, RegistryArgs};
use crate::cache::CacheMode;
use crate::serve::{DaemonArgv, DaemonLaunch};

/// The global flags a daemon inherits from its parent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DaemonGlobals {
    pub cache_mode: CacheMode,
    pub cache_max: Option<u64>,
    pub registry: RegistryArgs,
}

impl DaemonGlobals {
    /// Everything but `--creds`, which goes in the daemon's environment.
    fn to_args(&self, cache_root: &std::path::Path, out: &mut Vec<OsString>) {
        flag(out, "--cache", cache_root);
        flag(out, "--cache-mode", self.cache_mode.to_string());
        if let Some(max) = self.cache_max {
            flag(out, "--cache-max", max.to_string());
        }
        self.registry.to_args(out);
    }
}

impl RegistryArgs {
    fn to_args(&self, out: &mut Vec<OsString>) {
        flag(out, "--tls-verify", self.tls_verify.to_string());
        flag(out, "--registry-timeout", self.registry_timeout.to_string());
        if let Some(file) = &self.authfile {
            flag(out, "--authfile", file);
        }
        if let Some(dir) = &self.cert_dir {
            flag(out, "--cert-dir", dir);
        }
        if self.no_remote_index {
            out.push("--no-remote-index".into());
        }
        if self.no_toc {
            out.push("--no-toc".into());
        }
        if let Some(file) = &self.registries_conf {
            flag(out, "--registries-conf", file);
        }
    }
}

impl DaemonCliArgs {
    fn of(launch: &DaemonLaunch) -> DaemonCliArgs {
        DaemonCliArgs {
            pinned: launch.pinned.clone(),
            name: launch.name.clone(),
            ready_fd: Some(launch.ready_fd),
            log: Some(launch.log.clone()),
            dir: launch.dir.clone(),
            allow_other: launch.flags.allow_other,
            suid: launch.flags.suid,
            dev: launch.flags.dev,
            prefetch: launch.prefetch,
            record: launch.record,
        }
    }

    fn to_args(&self, out: &mut Vec<OsString>) {
        out.push("daemon".into());
        flag(out, "--pinned", self.pinned.clone());
        flag(out, "--name", self.name.clone());
        if let Some(fd) = self.ready_fd {
            flag(out, "--ready-fd", fd.to_string());
        }
        if let Some(log) = &self.log {
            flag(out, "--log", log);
        }
        flag(out, "--prefetch", self.prefetch.to_string());
        for (on, name) in [
            (self.allow_other, "--allow-other"),
            (self.suid, "--suid"),
            (self.dev, "--dev"),
            (self.record, "--record"),
        ] {
            if on {
                out.push(name.into());
            }
        }
        // Last, after `--`: a directory named like a flag stays a directory.
        out.push("--".into());
        out.push(self.dir.clone().into());
    }
}

/// `--NAME=VALUE` as one argument: a value that starts with `-` stays a value.
fn flag(out: &mut Vec<OsString>, name: &str, value: impl AsRef<std::ffi::OsStr>) {
    let mut arg = OsString::from(name);
    arg.push("=");
    arg.push(value);
    out.push(arg);
}

/// The daemon's argv for this command line's global flags.
pub(crate) fn for_globals(cli: &Cli) -> DaemonArgv {
    let globals = DaemonGlobals {
        cache_mode: cli.cache_mode,
        cache_max: cli.cache_max,
        registry: cli.registry.clone(),
    };
    DaemonArgv(Arc::new(move |launch: &DaemonLaunch| {
        argv(&globals, launch)
    }))
}

fn argv(globals: &DaemonGlobals, launch: &DaemonLaunch) -> Vec<OsString> {
    let mut out = Vec::new();
    globals.to_args(&launch.cache_root, &mut out);
    DaemonCliArgs::of(launch).to_args(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Command;
    use crate::serve::prefetch::Prefetch;
    use crate::serve::MountFlags;
    use clap::{CommandFactory, Parser};
    use std::path::PathBuf;

    fn parse(argv: Vec<OsString>) -> Cli {
        let mut full = vec![OsString::from("ocimount")];
        full.extend(argv);
        Cli::try_parse_from(full).unwrap()
    }

    fn round_trip(globals: DaemonGlobals, launch: DaemonLaunch) {
        let cli = parse(argv(&globals, &launch));
        assert_eq!(cli.cache.as_deref(), Some(launch.cache_root.as_path()));
        let parsed = DaemonGlobals {
            cache_mode: cli.cache_mode,
            cache_max: cli.cache_max,
            registry: cli.registry.clone(),
        };
        assert_eq!(parsed, globals);
        let Command::Daemon(daemon) = &cli.command else {
            panic!("not the daemon command: {:?}", cli.command);
        };
        assert_eq!(*daemon, DaemonCliArgs::of(&launch));
    }

    #[test]
    fn every_daemon_flag_set_parses_back_to_the_same_values() {
        round_trip(
            DaemonGlobals {
                cache_mode: CacheMode::IndexOnly,
                cache_max: Some(123 << 20),
                registry: RegistryArgs {
                    tls_verify: false,
                    creds: None,
                    authfile: Some(PathBuf::from("/home/u/auth file.json")),
                    cert_dir: Some(PathBuf::from("/etc/certs dir")),
                    no_remote_index: true,
                    no_toc: true,
                    registry_timeout: 7,
                    registries_conf: Some(PathBuf::from("/etc/my registries.conf")),
                },
            },
            DaemonLaunch {
                pinned: "docker://127.0.0.1:5000/a@sha256:".to_string() + &"a".repeat(64),
                name: "--looks-like-a-flag".to_string(),
                dir: PathBuf::from("--also a flag"),
                cache_root: PathBuf::from("/var/cache/o m"),
                log: PathBuf::from("/var/cache/o m/logs/mount-1.log"),
                ready_fd: 3,
                flags: MountFlags {
                    allow_other: true,
                    suid: true,
                    dev: true,
                },
                prefetch: Prefetch::Recorded,
                record: true,
            },
        );
    }

    #[test]
    fn default_flags_parse_back_too() {
        round_trip(
            DaemonGlobals {
                cache_mode: CacheMode::Full,
                cache_max: None,
                registry: RegistryArgs {
                    tls_verify: true,
                    creds: None,
                    authfile: None,
                    cert_dir: None,
                    no_remote_index: false,
                    no_toc: false,
                    registry_timeout: 60,
                    registries_conf: None,
                },
            },
            DaemonLaunch {
                pinned: "/images/x@sha256:".to_string() + &"b".repeat(64),
                name: "x".to_string(),
                dir: PathBuf::from("/mnt"),
                cache_root: PathBuf::from("/c"),
                log: PathBuf::from("/c/logs/m.log"),
                ready_fd: 3,
                flags: MountFlags::default(),
                prefetch: Prefetch::None,
                record: false,
            },
        );
    }

    /// A flag added to the daemon's definitions (or to the globals it
    /// inherits) must be written back: the all-set case writes one value
    /// for each of them.
    #[test]
    fn the_written_flags_are_all_the_daemon_and_globals_take() {
        let cmd = Cli::command();
        let daemon = cmd.find_subcommand("daemon").unwrap();
        let mut taken: Vec<String> = daemon
            .get_arguments()
            .chain(cmd.get_arguments())
            .filter_map(|a| a.get_long().map(str::to_string))
            .filter(|l| !["help", "version", "creds"].contains(&l.as_str()))
            .collect();
        taken.sort();
        taken.dedup();
        let mut written = Vec::new();
        DaemonGlobals {
            cache_mode: CacheMode::IndexOnly,
            cache_max: Some(1),
            registry: RegistryArgs {
                tls_verify: false,
                creds: None,
                authfile: Some(PathBuf::from("--auth.json")),
                cert_dir: Some(PathBuf::from("/d")),
                no_remote_index: true,
                no_toc: true,
                registry_timeout: 1,
                registries_conf: Some(PathBuf::from("/r.conf")),
            },
        }
        .to_args(std::path::Path::new("/c"), &mut written);
        DaemonCliArgs {
            pinned: "p".into(),
            name: "n".into(),
            ready_fd: Some(3),
            log: Some(PathBuf::from("/l")),
            dir: PathBuf::from("/m"),
            allow_other: true,
            suid: true,
            dev: true,
            prefetch: Prefetch::All,
            record: true,
        }
        .to_args(&mut written);
        let mut flags: Vec<String> = written
            .iter()
            .filter_map(|a| a.to_str()?.strip_prefix("--"))
            .map(|f| f.split('=').next().unwrap_or(f).to_string())
            .filter(|f| !f.is_empty())
            .collect();
        flags.sort();
        flags.dedup();
        assert_eq!(flags, taken);
    }
}
