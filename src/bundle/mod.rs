//! Runtime bundles: an image's rootfs mounted read-only at `DIR/rootfs` and
//! a `DIR/config.json` converted from its config, so that
//! `runc run -b DIR ID` (or crun) runs the image with no container engine.
//!
//! `DIR/.ocimount-bundle` records what [`create`] made, and [`remove`]
//! undoes exactly that: it unmounts the rootfs and removes only the files
//! and directories listed there, never anything else in `DIR`.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use crate::cache::Cache;
use crate::error::{Error, IoContext, Result};
use crate::merge::NodeKind;
use crate::oci::manifest::ImageConfig;
use crate::rootfs::{OpenOptions, Rootfs};
use crate::serve::prefetch::Prefetch;
use crate::serve::{self, DaemonArgv, MountRequest};
use crate::source::ImageRef;

pub mod mountpoints;
pub mod spec;
pub mod user;

use spec::{Owner, Rootless, SpecOptions, ROOTFS};

/// The record of what `bundle` created, inside the bundle.
pub const MARKER: &str = ".ocimount-bundle";
pub const CONFIG: &str = "config.json";
const MARKER_TOOL: &str = "ocimount bundle";
/// The largest /etc/passwd or /etc/group read from an image.
const MAX_ACCOUNT_FILE: u64 = 16 << 20;

/// What to bundle, and how.
#[derive(Clone, Debug)]
pub struct BundleOptions {
    pub image: String,
    pub dir: PathBuf,
    /// Platform, cache and progress for opening the image.
    pub open: OpenOptions,
    /// A spec for an unprivileged caller (user namespace with the caller
    /// as root, host network, /sys bind-mounted).
    pub rootless: bool,
    /// `process.terminal`.
    pub tty: bool,
    /// Replace the image's Entrypoint (and then its Cmd too, as Docker does).
    pub entrypoint: Option<Vec<String>>,
    /// Replace the image's Cmd.
    pub cmd: Option<Vec<String>>,
    /// `--prefetch`: the background fill of the rootfs mount's data cache.
    pub prefetch: Prefetch,
    /// `--record`: the order files are first read in, kept at unmount.
    pub record: bool,
    /// How to write the rootfs mount daemon's command line.
    pub daemon_argv: DaemonArgv,
}

/// A bundle `create` made.
#[derive(Debug)]
pub struct Bundle {
    /// The bundle directory (absolute).
    pub dir: PathBuf,
    pub spec: Spec,
    /// Things the caller should tell the user.
    pub warnings: Vec<String>,
    /// The cache the rootfs mount belongs to.
    pub cache: PathBuf,
}

/// `DIR/.ocimount-bundle`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Marker {
    tool: String,
    image: String,
    manifest: String,
    cache: PathBuf,
    /// `DIR` itself was created by `bundle` (else it was an empty directory).
    created_dir: bool,
    /// Names inside `DIR` that `bundle` created, in creation order.
    created: Vec<String>,
}

/// What `remove` left in place, because it held things `bundle` did not make.
#[derive(Debug, Default)]
pub struct Removed {
    pub kept: Vec<PathBuf>,
}

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::BadPath {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

/// The caller's real uid and gid.
pub fn caller_ids() -> (u32, u32) {
    // SAFETY: getuid/getgid cannot fail.
    unsafe { (libc::getuid(), libc::getgid()) }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether `dir` already exists (then it must be an empty directory with
/// nothing mounted on it) or can be created (its parent exists).
fn check_dir(dir: &Path) -> Result<bool> {
    match fs::metadata(dir) {
        Ok(m) if !m.is_dir() => Err(bad(dir, "exists and is not a directory")),
        Ok(_) => {
            if fs::read_dir(dir).at(dir)?.next().is_some() {
                return Err(bad(
                    dir,
                    "is not empty: give a new or an empty directory for the bundle",
                ));
            }
            if serve::is_mounted(&fs::canonicalize(dir).at(dir)?) {
                return Err(bad(dir, "something is mounted here"));
            }
            Ok(false)
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let parent = dir
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            if !parent.is_dir() {
                return Err(bad(
                    dir,
                    format!("its parent {} is not a directory", parent.display()),
                ));
            }
            Ok(true)
        }
        Err(e) => Err(Error::io(dir, e)),
    }
}

/// Read a regular file of the merged image (symlinks followed inside the
/// image); `None` when it is absent or not a regular file.
pub fn read_image_file(rootfs: &Rootfs, path: &str) -> Result<Option<Vec<u8>>> {
    let id = match rootfs.tree.resolve(path.as_bytes(), true) {
        Ok(id) => id,
        Err(Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let NodeKind::File { size, .. } = rootfs.tree.node(id).kind else {
        return Ok(None);
    };
    if size > MAX_ACCOUNT_FILE {
        return Err(bad(
            Path::new(path),
            format!("{size} bytes is too large to be read as an account file"),
        ));
    }
    let mut out = vec![0u8; size as usize];
    let mut pos = 0usize;
    while pos < out.len() {
        let n = rootfs.read_file(id, pos as u64, &mut out[pos..])?;
        if n == 0 {
            break;
        }
        pos += n;
    }
    out.truncate(pos);
    Ok(Some(out))
}

/// Resolve the config's `User` through the image's passwd and group files.
pub fn resolve_user(rootfs: &Rootfs, user_spec: &str) -> Result<user::ExecUser> {
    let passwd = read_image_file(rootfs, "/etc/passwd")?;
    let group = read_image_file(rootfs, "/etc/group")?;
    let text = |b: &Option<Vec<u8>>| b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
    let (passwd, group) = (text(&passwd), text(&group));
    user::resolve(user_spec, passwd.as_deref(), group.as_deref()).map_err(|e| Error::BadPath {
        path: format!("User {user_spec:?} of the image config"),
        reason: e.to_string(),
    })
}

/// Mount flags the kernel locks on the mount holding `path` (a bind of it
/// inside a user namespace must repeat them), as umoci computes them.
fn locked_mount_flags(path: &Path) -> Vec<String> {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return Vec::new();
    };
    // SAFETY: statvfs fills the zeroed struct for a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Vec::new();
    }
    [
        (libc::ST_NODEV, "nodev"),
        (libc::ST_NOEXEC, "noexec"),
        (libc::ST_NOSUID, "nosuid"),
        (libc::ST_NOATIME, "noatime"),
        (libc::ST_RELATIME, "relatime"),
        (libc::ST_NODIRATIME, "nodiratime"),
    ]
    .into_iter()
    .filter(|(flag, _)| st.f_flag & flag != 0)
    .map(|(_, name)| name.to_string())
    .collect()
}

/// Owner and mode of the image's directory at each volume path.
fn volume_owners(rootfs: &Rootfs, config: &ImageConfig) -> BTreeMap<String, Owner> {
    let mut out = BTreeMap::new();
    for volume in config.config.volumes.iter().flat_map(|v| v.keys()) {
        if let Ok(id) = rootfs.tree.resolve(volume.as_bytes(), true) {
            let node = rootfs.tree.node(id);
            if matches!(node.kind, NodeKind::Dir { .. }) {
                out.insert(
                    volume.clone(),
                    Owner {
                        uid: node.meta.uid,
                        gid: node.meta.gid,
                        mode: node.meta.mode,
                    },
                );
            }
        }
    }
    out
}

/// The spec options for this caller.
fn spec_options(opts: &BundleOptions, volume_owners: BTreeMap<String, Owner>) -> SpecOptions {
    let rootless = opts.rootless.then(|| {
        let (uid, gid) = caller_ids();
        let resolv = Path::new("/etc/resolv.conf");
        Rootless {
            uid,
            gid,
            resolv_conf: resolv.is_file().then(|| locked_mount_flags(resolv)),
        }
    });
    SpecOptions {
        tty: opts.tty,
        rootless,
        volume_owners,
    }
}

/// `ocimount bundle IMAGE DIR`: convert the config, write `config.json`,
/// mount the rootfs; on failure nothing is left behind.
pub fn create(opts: &BundleOptions) -> Result<Bundle> {
    let create_dir = check_dir(&opts.dir)?;
    let reference = ImageRef::parse(&opts.image)?;
    let rootfs = Rootfs::open(&reference, &opts.open)?;

    let mut config = rootfs.image.config.clone();
    if let Some(entrypoint) = &opts.entrypoint {
        config.config.entrypoint = Some(entrypoint.clone());
        config.config.cmd = None;
    }
    if let Some(cmd) = &opts.cmd {
        config.config.cmd = Some(cmd.clone());
    }
    let user_spec = config.config.user.clone().unwrap_or_default();
    let exec_user = resolve_user(&rootfs, &user_spec)?;
    let (spec, notes) = spec::convert(
        &config,
        &exec_user,
        &spec_options(opts, volume_owners(&rootfs, &config)),
    )?;
    let mut warnings = notes.warnings;
    let (entries, point_warnings) = mountpoints::missing(&rootfs.tree, &spec::mount_points(&spec));
    warnings.extend(point_warnings);
    let config_json = spec::to_json(&spec)?;

    let cache = rootfs.cache.root().to_path_buf();
    let pinned = rootfs
        .image
        .reference
        .pinned(&rootfs.image.manifest_digest)?;

    if create_dir {
        fs::create_dir(&opts.dir).at(&opts.dir)?;
    }
    let dir = fs::canonicalize(&opts.dir).at(&opts.dir)?;
    let mut created = vec![CONFIG.to_string(), ROOTFS.to_string()];
    if !entries.is_empty() {
        created.insert(0, mountpoints::IMAGE_DIR.to_string());
    }
    let marker = Marker {
        tool: MARKER_TOOL.to_string(),
        image: opts.image.clone(),
        manifest: rootfs.image.manifest_digest.to_string(),
        cache: cache.clone(),
        created_dir: create_dir,
        created,
    };
    let result = (|| -> Result<()> {
        write_new(
            &dir.join(MARKER),
            &serde_json::to_vec_pretty(&marker).unwrap_or_default(),
        )?;
        let image = if entries.is_empty() {
            pinned
        } else {
            mountpoints::write_layout(&rootfs, &entries, &dir.join(mountpoints::IMAGE_DIR))?
        };
        write_new(&dir.join(CONFIG), &config_json)?;
        let rootfs_dir = dir.join(ROOTFS);
        fs::create_dir(&rootfs_dir).at(&rootfs_dir)?;
        let root = is_root();
        serve::mount(&MountRequest {
            image,
            dir: rootfs_dir,
            open: OpenOptions {
                platform: None,
                cache_dir: Some(cache.clone()),
                progress: false,
                ..opts.open.clone()
            },
            foreground: false,
            quiet: !opts.open.progress,
            // As root, the container's user is anyone: let every user in
            // (the kernel still checks permissions: default_permissions).
            // Unprivileged, the container runs as the caller, who needs no
            // allow_other (and may not use it).
            allow_other: root,
            // Setuid programs work where the kernel lets them (fusermount3
            // forces nosuid for unprivileged users anyway).
            suid: root,
            dev: false,
            prefetch: opts.prefetch,
            record: opts.record,
            daemon_argv: opts.daemon_argv.clone(),
        })
    })();
    drop(rootfs);
    if let Err(e) = result {
        let _ = remove_with(&dir, &marker, Some(&cache), true);
        return Err(e);
    }
    Ok(Bundle {
        dir,
        spec,
        warnings,
        cache,
    })
}

fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .at(path)?;
    f.write_all(bytes).at(path)?;
    f.sync_all().at(path)
}

fn read_marker(dir: &Path) -> Result<Marker> {
    let path = dir.join(MARKER);
    let text = match fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(bad(
                dir,
                format!(
                "not a bundle made by `ocimount bundle` (no {MARKER} in it); nothing was removed"
            ),
            ))
        }
        Err(e) => return Err(Error::io(path, e)),
    };
    match serde_json::from_slice::<Marker>(&text) {
        Ok(m) if m.tool == MARKER_TOOL => Ok(m),
        _ => Err(bad(
            &path,
            "not a record written by `ocimount bundle`; nothing was removed",
        )),
    }
}

/// Whether `dir` holds a bundle made by `ocimount bundle`.
pub fn is_bundle(dir: &Path) -> bool {
    read_marker(dir).is_ok()
}

/// `ocimount bundle --remove DIR`: unmount the rootfs and remove what
/// `bundle` created. A busy rootfs is an error (nothing is removed) unless
/// `lazy`. `cache` overrides the cache recorded in the marker.
pub fn remove(dir: &Path, cache: Option<&Path>, lazy: bool) -> Result<Removed> {
    let marker = read_marker(dir)?;
    let dir = fs::canonicalize(dir).at(dir)?;
    remove_with(&dir, &marker, cache, lazy)
}

fn remove_with(dir: &Path, marker: &Marker, cache: Option<&Path>, lazy: bool) -> Result<Removed> {
    let mut removed = Removed::default();
    let rootfs = dir.join(ROOTFS);
    if serve::is_mounted(&rootfs) {
        let cache = Cache::locate(Some(cache.unwrap_or(&marker.cache)))?;
        serve::umount(&rootfs, &cache, lazy)?;
    }
    for name in marker.created.iter().rev() {
        let path = dir.join(name);
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        // Only the names `create` writes, and only of the kind it writes:
        // a marker cannot make us delete anything else.
        let result = match name.as_str() {
            CONFIG if meta.is_file() => fs::remove_file(&path),
            ROOTFS if meta.is_dir() => fs::remove_dir(&path),
            mountpoints::IMAGE_DIR if meta.is_dir() => fs::remove_dir_all(&path),
            _ => {
                removed.kept.push(path);
                continue;
            }
        };
        match result {
            Ok(()) => {}
            Err(e) if name == ROOTFS && e.kind() == ErrorKind::DirectoryNotEmpty => {
                removed.kept.push(path)
            }
            Err(e) => return Err(Error::io(path, e)),
        }
    }
    let marker_path = dir.join(MARKER);
    match fs::remove_file(&marker_path) {
        Err(e) if e.kind() != ErrorKind::NotFound => return Err(Error::io(marker_path, e)),
        _ => {}
    }
    if marker.created_dir {
        match fs::remove_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::DirectoryNotEmpty => {
                removed.kept.push(dir.to_path_buf())
            }
            Err(e) => return Err(Error::io(dir, e)),
        }
    }
    Ok(removed)
}
