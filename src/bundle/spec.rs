//! Image config → OCI runtime spec (`config.json`), as `umoci unpack` does
//! it, on umoci's default spec.
//!
//! The rules (docs/containers.md, "The conversion"):
//! * `args` = Entrypoint ++ Cmd (umoci's default `sh` when both are empty);
//! * `env`: `PATH` (and `TERM=xterm` with a terminal), image entries replace
//!   defaults of the same name, `HOME` from passwd is added when unset;
//! * `cwd` = WorkingDir, or `/`;
//! * `user` from [`super::user::resolve`], supplementary gids included;
//! * each volume a tmpfs;
//! * the `org.opencontainers.image.*` annotations, with the labels on top;
//! * `root.readonly = true`; `terminal` only when asked for.
//!
//! Where this differs from umoci is listed in docs/containers.md ("The
//! conversion").

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxDeviceCgroupBuilder,
    LinuxIdMappingBuilder, LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType,
    LinuxResourcesBuilder, Mount, MountBuilder, PosixRlimitBuilder, PosixRlimitType,
    ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

use super::user::ExecUser;
use crate::error::{Error, Result};
use crate::oci::manifest::ImageConfig;

/// The runtime-spec version written (umoci writes the same).
pub const OCI_VERSION: &str = "1.0.0";
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
pub const HOSTNAME: &str = "ocimount";
/// `root.path`: the rootfs directory inside the bundle.
pub const ROOTFS: &str = "rootfs";
/// umoci's default command when the image has neither Entrypoint nor Cmd.
pub const DEFAULT_ARGS: &[&str] = &["sh"];

pub const ANNOTATION_OS: &str = "org.opencontainers.image.os";
pub const ANNOTATION_ARCH: &str = "org.opencontainers.image.architecture";
pub const ANNOTATION_VARIANT: &str = "org.opencontainers.image.variant";
pub const ANNOTATION_AUTHOR: &str = "org.opencontainers.image.author";
pub const ANNOTATION_CREATED: &str = "org.opencontainers.image.created";
pub const ANNOTATION_STOP_SIGNAL: &str = "org.opencontainers.image.stopSignal";
pub const ANNOTATION_EXPOSED_PORTS: &str = "org.opencontainers.image.exposedPorts";

/// Options for each volume's tmpfs, as umoci writes them.
const VOLUME_OPTIONS: &[&str] = &["rw", "nosuid", "nodev", "noexec", "relatime"];

/// How the spec is to be run.
#[derive(Clone, Debug, Default)]
pub struct SpecOptions {
    /// `process.terminal` (and `TERM=xterm`).
    pub tty: bool,
    /// Make the spec rootless for this caller.
    pub rootless: Option<Rootless>,
    /// Owner and mode of the image's directory at each volume path: the
    /// volume's tmpfs gets them (as a fresh Docker volume does), so that a
    /// non-root user can write to its volume.
    pub volume_owners: BTreeMap<String, Owner>,
}

/// Owner and permission bits of a directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

/// The caller a rootless spec maps to root in the container.
#[derive(Clone, Debug)]
pub struct Rootless {
    pub uid: u32,
    pub gid: u32,
    /// Bind the host's /etc/resolv.conf (the network namespace is the
    /// host's), with these flags the kernel locks on its mount; `None`:
    /// no bind.
    pub resolv_conf: Option<Vec<String>>,
}

/// What a spec conversion produced, beyond the spec.
#[derive(Clone, Debug, Default)]
pub struct Notes {
    /// Things the user should know (printed by `bundle` and `run`).
    pub warnings: Vec<String>,
}

fn bad_config(reason: String) -> Error {
    Error::BadPath {
        path: "image config".to_string(),
        reason,
    }
}

fn spec_error(e: oci_spec::OciSpecError) -> Error {
    bad_config(format!("cannot build the runtime spec: {e}"))
}

/// Set `name=value` in `env`, replacing an entry of the same name in place
/// (umoci's `appendEnv`).
fn set_env(env: &mut Vec<String>, name: &str, value: &str) {
    let entry = format!("{name}={value}");
    match env
        .iter_mut()
        .find(|e| e.split_once('=').map(|(n, _)| n) == Some(name))
    {
        Some(slot) => *slot = entry,
        None => env.push(entry),
    }
}

fn has_env(env: &[String], name: &str) -> bool {
    env.iter()
        .any(|e| e.split_once('=').map(|(n, _)| n) == Some(name))
}

/// The process environment: defaults, then the image's entries over them,
/// then `HOME` from passwd when still unset.
pub fn environment(config: &ImageConfig, user: &ExecUser, tty: bool) -> Result<Vec<String>> {
    let mut env = vec![format!("PATH={DEFAULT_PATH}")];
    if tty {
        env.push("TERM=xterm".to_string());
    }
    for entry in config.config.env.iter().flatten() {
        let (name, value) = entry.split_once('=').ok_or_else(|| {
            bad_config(format!(
                "Env entry {entry:?} has no '=' (expected NAME=VALUE)"
            ))
        })?;
        if name.is_empty() {
            return Err(bad_config(format!("Env entry {entry:?} has an empty name")));
        }
        set_env(&mut env, name, value);
    }
    if let Some(home) = &user.home {
        if !has_env(&env, "HOME") {
            set_env(&mut env, "HOME", home);
        }
    }
    Ok(env)
}

/// Entrypoint ++ Cmd, or umoci's default when both are empty.
pub fn arguments(config: &ImageConfig) -> Vec<String> {
    let args: Vec<String> = config
        .config
        .entrypoint
        .iter()
        .flatten()
        .chain(config.config.cmd.iter().flatten())
        .cloned()
        .collect();
    if args.is_empty() {
        DEFAULT_ARGS.iter().map(|s| s.to_string()).collect()
    } else {
        args
    }
}

/// The `org.opencontainers.image.*` annotations umoci writes (plus the
/// variant when the config has one), with the labels on top.
pub fn annotations(config: &ImageConfig) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let rc = &config.config;
    let ports: Vec<&str> = rc
        .exposed_ports
        .iter()
        .flat_map(|p| p.keys())
        .map(String::as_str)
        .collect();
    for (key, value) in [
        (ANNOTATION_OS, config.os.clone()),
        (ANNOTATION_ARCH, config.architecture.clone()),
        (ANNOTATION_AUTHOR, config.author.clone().unwrap_or_default()),
        (
            ANNOTATION_CREATED,
            config.created.clone().unwrap_or_default(),
        ),
        (
            ANNOTATION_STOP_SIGNAL,
            rc.stop_signal.clone().unwrap_or_default(),
        ),
        (ANNOTATION_EXPOSED_PORTS, ports.join(",")),
    ] {
        out.insert(key.to_string(), value);
    }
    if let Some(variant) = config.variant.as_ref().filter(|v| !v.is_empty()) {
        out.insert(ANNOTATION_VARIANT.to_string(), variant.clone());
    }
    for (key, value) in rc.labels.iter().flatten() {
        out.insert(key.clone(), value.clone());
    }
    out
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn mount(destination: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount> {
    let mut b = MountBuilder::default()
        .destination(destination)
        .typ(typ)
        .source(source);
    if !options.is_empty() {
        b = b.options(strings(options));
    }
    b.build().map_err(spec_error)
}

/// umoci's default mounts (those of runc's `runc spec`).
fn default_mounts() -> Result<Vec<Mount>> {
    Ok(vec![
        mount("/proc", "proc", "proc", &[])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        )?,
    ])
}

fn namespace(typ: LinuxNamespaceType) -> Result<LinuxNamespace> {
    LinuxNamespaceBuilder::default()
        .typ(typ)
        .build()
        .map_err(spec_error)
}

/// Convert an image config to a runtime spec for `user` (resolved from the
/// image's own passwd and group files).
pub fn convert(config: &ImageConfig, user: &ExecUser, opts: &SpecOptions) -> Result<(Spec, Notes)> {
    if config.os != "linux" {
        return Err(bad_config(format!(
            "unsupported OS {:?}: only linux images can be run",
            config.os
        )));
    }
    let mut notes = Notes::default();
    let caps: HashSet<Capability> = [
        Capability::AuditWrite,
        Capability::Kill,
        Capability::NetBindService,
    ]
    .into_iter()
    .collect();
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .inheritable(caps.clone())
        .permitted(caps.clone())
        .ambient(caps)
        .build()
        .map_err(spec_error)?;

    let mut uid = user.uid;
    let mut gid = user.gid;
    let mut sgids = user.sgids.clone();
    if let Some(r) = &opts.rootless {
        if uid != 0 || gid != 0 {
            notes.warnings.push(format!(
                "the image runs as {uid}:{gid}, but a rootless container has only one id \
                 (yours, {}:{}, as root); it runs as 0:0",
                r.uid, r.gid
            ));
        }
        (uid, gid) = (0, 0);
        // setgroups is denied in a user namespace without a mapping for it.
        sgids.clear();
    }
    let mut user_builder = UserBuilder::default().uid(uid).gid(gid);
    if !sgids.is_empty() {
        user_builder = user_builder.additional_gids(sgids);
    }
    let cwd = config
        .config
        .working_dir
        .clone()
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".to_string());
    let process = ProcessBuilder::default()
        .terminal(opts.tty)
        .user(user_builder.build().map_err(spec_error)?)
        .args(arguments(config))
        .env(environment(config, user, opts.tty)?)
        .cwd(cwd)
        .capabilities(capabilities)
        .rlimits(vec![PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .hard(1024u64)
            .soft(1024u64)
            .build()
            .map_err(spec_error)?])
        // The rootfs is mounted suid so that setuid programs work; with
        // no_new_privs they would not.
        .no_new_privileges(false)
        .build()
        .map_err(spec_error)?;

    let mut mounts = default_mounts()?;
    for volume in config.config.volumes.iter().flat_map(|v| v.keys()) {
        if !volume.starts_with('/') {
            return Err(bad_config(format!(
                "volume {volume:?} is not an absolute path"
            )));
        }
        let mut options: Vec<String> = strings(VOLUME_OPTIONS);
        if let Some(o) = opts.volume_owners.get(volume) {
            options.push(format!("mode={:o}", o.mode & 0o7777));
            options.push(format!("uid={}", o.uid));
            options.push(format!("gid={}", o.gid));
        }
        let options: Vec<&str> = options.iter().map(String::as_str).collect();
        mounts.push(mount(volume, "tmpfs", "none", &options)?);
    }

    let mut namespaces = vec![
        namespace(LinuxNamespaceType::Pid)?,
        namespace(LinuxNamespaceType::Network)?,
        namespace(LinuxNamespaceType::Ipc)?,
        namespace(LinuxNamespaceType::Uts)?,
        namespace(LinuxNamespaceType::Mount)?,
    ];
    let mut linux = LinuxBuilder::default()
        .masked_paths(strings(&[
            "/proc/kcore",
            "/proc/latency_stats",
            "/proc/timer_list",
            "/proc/timer_stats",
            "/proc/sched_debug",
            "/sys/firmware",
            "/proc/scsi",
        ]))
        .readonly_paths(strings(&[
            "/proc/asound",
            "/proc/bus",
            "/proc/fs",
            "/proc/irq",
            "/proc/sys",
            "/proc/sysrq-trigger",
        ]));

    if let Some(r) = &opts.rootless {
        namespaces.retain(|ns| {
            !matches!(
                ns.typ(),
                LinuxNamespaceType::Network | LinuxNamespaceType::User
            )
        });
        namespaces.push(namespace(LinuxNamespaceType::User)?);
        mounts = rootless_mounts(mounts, r)?;
        let map = |host: u32| {
            LinuxIdMappingBuilder::default()
                .container_id(0u32)
                .host_id(host)
                .size(1u32)
                .build()
                .map_err(spec_error)
        };
        linux = linux
            .uid_mappings(vec![map(r.uid)?])
            .gid_mappings(vec![map(r.gid)?]);
    } else {
        linux = linux.resources(
            LinuxResourcesBuilder::default()
                .devices(vec![LinuxDeviceCgroupBuilder::default()
                    .allow(false)
                    .access("rwm")
                    .build()
                    .map_err(spec_error)?])
                .build()
                .map_err(spec_error)?,
        );
    }
    let mut linux = linux.namespaces(namespaces).build().map_err(spec_error)?;
    if opts.rootless.is_some() {
        // No cgroup settings: an unprivileged caller may own no cgroup.
        linux.set_resources(None);
    }

    let annotations: HashMap<String, String> = annotations(config).into_iter().collect();
    let spec = SpecBuilder::default()
        .version(OCI_VERSION)
        .root(
            RootBuilder::default()
                .path(ROOTFS)
                .readonly(true)
                .build()
                .map_err(spec_error)?,
        )
        .process(process)
        .hostname(HOSTNAME)
        .mounts(mounts)
        .annotations(annotations)
        .linux(linux)
        .build()
        .map_err(spec_error)?;
    Ok((spec, notes))
}

/// umoci's `ToRootless` for mounts: nothing under /sys (a new sysfs needs a
/// network namespace we do not own), no uid=/gid= options, the host's /sys
/// bind-mounted read-only instead, and the host's resolv.conf.
fn rootless_mounts(mounts: Vec<Mount>, r: &Rootless) -> Result<Vec<Mount>> {
    let mut out = Vec::with_capacity(mounts.len() + 2);
    for mut m in mounts {
        if m.destination().starts_with("/sys") {
            continue;
        }
        if let Some(opts) = m.options().clone() {
            let kept: Vec<String> = opts
                .into_iter()
                .filter(|o| !o.starts_with("uid=") && !o.starts_with("gid="))
                .collect();
            m.set_options(Some(kept));
        }
        out.push(m);
    }
    out.push(mount(
        "/sys",
        "bind",
        "/sys",
        &["rbind", "nosuid", "noexec", "nodev", "ro"],
    )?);
    if let Some(locked) = &r.resolv_conf {
        let mut options: Vec<&str> = locked.iter().map(String::as_str).collect();
        options.extend(["rbind", "ro"]);
        out.push(mount(
            "/etc/resolv.conf",
            "bind",
            "/etc/resolv.conf",
            &options,
        )?);
    }
    Ok(out)
}

/// A path the container needs to exist in the rootfs before it starts: a
/// read-only rootfs lets no runtime create a missing one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountPoint {
    pub path: String,
    pub dir: bool,
}

/// The mount destinations (and the working directory) that must exist in
/// the rootfs itself: those not inside another of the spec's mounts.
pub fn mount_points(spec: &Spec) -> Vec<MountPoint> {
    let mounts = spec.mounts().clone().unwrap_or_default();
    let inside = |path: &Path, before: &[Mount]| {
        before
            .iter()
            .any(|m| path != m.destination() && path.starts_with(m.destination()))
    };
    let mut out: Vec<MountPoint> = Vec::new();
    for (i, m) in mounts.iter().enumerate() {
        let dest = m.destination();
        if inside(dest, &mounts[..i]) {
            continue;
        }
        let path = dest.to_string_lossy().into_owned();
        if out.iter().any(|p| p.path == path) {
            continue;
        }
        let dir = !(m.typ().as_deref() == Some("bind")
            && m.source()
                .as_ref()
                .is_some_and(|s| std::fs::metadata(s).is_ok_and(|md| !md.is_dir())));
        out.push(MountPoint { path, dir });
    }
    if let Some(process) = spec.process() {
        let cwd = process.cwd();
        let under_mount = mounts.iter().any(|m| cwd.starts_with(m.destination()));
        if !under_mount && cwd != Path::new("/") {
            let path = cwd.to_string_lossy().into_owned();
            if !out.iter().any(|p| p.path == path) {
                out.push(MountPoint { path, dir: true });
            }
        }
    }
    out
}

/// `config.json` text: deterministic (keys sorted, capability sets in
/// order), pretty-printed, ending in a newline.
pub fn to_json(spec: &Spec) -> Result<Vec<u8>> {
    let mut value = serde_json::to_value(spec)
        .map_err(|e| bad_config(format!("cannot serialise the runtime spec: {e}")))?;
    if let Some(caps) = value
        .pointer_mut("/process/capabilities")
        .and_then(|c| c.as_object_mut())
    {
        for set in caps.values_mut() {
            if let Some(list) = set.as_array_mut() {
                list.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
            }
        }
    }
    let mut text = serde_json::to_vec_pretty(&value)
        .map_err(|e| bad_config(format!("cannot serialise the runtime spec: {e}")))?;
    text.push(b'\n');
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::manifest::RuntimeConfig;

    fn image(rc: RuntimeConfig) -> ImageConfig {
        ImageConfig {
            architecture: "amd64".into(),
            os: "linux".into(),
            created: Some("2025-01-01T00:00:00Z".into()),
            config: rc,
            ..ImageConfig::default()
        }
    }

    fn root_user() -> ExecUser {
        ExecUser {
            home: Some("/root".into()),
            name: Some("root".into()),
            ..ExecUser::default()
        }
    }

    #[test]
    fn env_merges_over_defaults_and_adds_home() {
        let cfg = image(RuntimeConfig {
            env: Some(vec!["PATH=/bin".into(), "A=1=2".into(), "B=".into()]),
            ..Default::default()
        });
        assert_eq!(
            environment(&cfg, &root_user(), true).unwrap(),
            ["PATH=/bin", "TERM=xterm", "A=1=2", "B=", "HOME=/root"]
        );
        assert_eq!(
            environment(&cfg, &root_user(), false).unwrap(),
            ["PATH=/bin", "A=1=2", "B=", "HOME=/root"]
        );
        let cfg = image(RuntimeConfig {
            env: Some(vec!["HOME=/srv".into()]),
            ..Default::default()
        });
        assert_eq!(
            environment(&cfg, &root_user(), false).unwrap(),
            [&format!("PATH={DEFAULT_PATH}"), "HOME=/srv"]
        );
        let cfg = image(RuntimeConfig {
            env: Some(vec!["NOEQUALS".into()]),
            ..Default::default()
        });
        assert!(environment(&cfg, &root_user(), false).is_err());
    }

    #[test]
    fn args_are_entrypoint_then_cmd() {
        let cfg = image(RuntimeConfig {
            entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
            cmd: Some(vec!["echo hi".into()]),
            ..Default::default()
        });
        assert_eq!(arguments(&cfg), ["/bin/sh", "-c", "echo hi"]);
        assert_eq!(arguments(&image(RuntimeConfig::default())), ["sh"]);
    }

    #[test]
    fn labels_go_on_top_of_annotations() {
        let mut cfg = image(RuntimeConfig {
            labels: Some(BTreeMap::from([
                ("x".to_string(), "y".to_string()),
                (ANNOTATION_AUTHOR.to_string(), "label wins".to_string()),
            ])),
            exposed_ports: Some(BTreeMap::from([
                ("8080/tcp".to_string(), serde_json::json!({})),
                ("53/udp".to_string(), serde_json::json!({})),
            ])),
            ..Default::default()
        });
        cfg.variant = Some("v8".into());
        let a = annotations(&cfg);
        assert_eq!(a[ANNOTATION_AUTHOR], "label wins");
        assert_eq!(a["x"], "y");
        assert_eq!(a[ANNOTATION_EXPOSED_PORTS], "53/udp,8080/tcp");
        assert_eq!(a[ANNOTATION_VARIANT], "v8");
        assert_eq!(a[ANNOTATION_STOP_SIGNAL], "");
        assert!(!annotations(&image(RuntimeConfig::default())).contains_key(ANNOTATION_VARIANT));
    }

    #[test]
    fn volumes_are_tmpfs_and_mount_points_are_listed() {
        let cfg = image(RuntimeConfig {
            volumes: Some(BTreeMap::from([
                ("/data".to_string(), serde_json::json!({})),
                ("/var/x".to_string(), serde_json::json!({})),
            ])),
            working_dir: Some("/srv/app".into()),
            ..Default::default()
        });
        let opts = SpecOptions {
            volume_owners: BTreeMap::from([(
                "/data".to_string(),
                Owner {
                    uid: 1000,
                    gid: 1001,
                    mode: 0o40750,
                },
            )]),
            ..SpecOptions::default()
        };
        let (spec, _) = convert(&cfg, &root_user(), &opts).unwrap();
        let mounts = spec.mounts().clone().unwrap();
        let data = &mounts[mounts.len() - 2];
        assert_eq!(data.destination(), Path::new("/data"));
        assert_eq!(data.typ().as_deref(), Some("tmpfs"));
        assert_eq!(
            data.options().clone().unwrap(),
            ["rw", "nosuid", "nodev", "noexec", "relatime", "mode=750", "uid=1000", "gid=1001"]
        );
        assert_eq!(
            mounts.last().unwrap().options().clone().unwrap(),
            ["rw", "nosuid", "nodev", "noexec", "relatime"]
        );
        let points: Vec<String> = mount_points(&spec).into_iter().map(|p| p.path).collect();
        assert_eq!(
            points,
            ["/proc", "/dev", "/sys", "/data", "/var/x", "/srv/app"]
        );
        let json: serde_json::Value = serde_json::from_slice(&to_json(&spec).unwrap()).unwrap();
        assert_eq!(json["root"]["readonly"], true);
        assert_eq!(json["process"]["terminal"], false);
        assert_eq!(json["process"]["cwd"], "/srv/app");
        assert_eq!(
            json["process"]["capabilities"]["bounding"],
            serde_json::json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"])
        );
    }

    #[test]
    fn rootless_maps_the_caller_and_binds_sys() {
        let cfg = image(RuntimeConfig::default());
        let user = ExecUser {
            uid: 1000,
            gid: 1000,
            sgids: vec![4],
            ..ExecUser::default()
        };
        let opts = SpecOptions {
            tty: false,
            rootless: Some(Rootless {
                uid: 1234,
                gid: 5678,
                resolv_conf: None,
            }),
            ..SpecOptions::default()
        };
        let (spec, notes) = convert(&cfg, &user, &opts).unwrap();
        assert_eq!(notes.warnings.len(), 1);
        let json: serde_json::Value = serde_json::from_slice(&to_json(&spec).unwrap()).unwrap();
        assert_eq!(
            json["process"]["user"],
            serde_json::json!({"uid": 0, "gid": 0})
        );
        assert_eq!(
            json["linux"]["uidMappings"],
            serde_json::json!([{"containerID": 0, "hostID": 1234, "size": 1}])
        );
        let ns: Vec<&str> = json["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(ns, ["pid", "ipc", "uts", "mount", "user"]);
        assert!(json["linux"].get("resources").is_none());
        let sys: Vec<&serde_json::Value> = json["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["destination"].as_str().unwrap().starts_with("/sys"))
            .collect();
        assert_eq!(sys.len(), 1);
        assert_eq!(sys[0]["type"], "bind");
        let devpts = json["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/dev/pts")
            .unwrap();
        assert!(!devpts["options"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o.as_str().unwrap().starts_with("gid=")));
    }

    #[test]
    fn only_linux_images() {
        let mut cfg = image(RuntimeConfig::default());
        cfg.os = "windows".into();
        assert!(convert(&cfg, &root_user(), &SpecOptions::default()).is_err());
    }
}
