//! Other engines use the mount as it is: `podman run --rootfs DIR:O` runs
//! a Debian image straight from an ocimount mount, with podman's overlay on
//! top for writes, and the mount itself stays untouched.
//!
//! Two settings this machine kind needs, and docs/mount.md gives: podman's
//! root defaults raise RLIMIT_NOFILE and RLIMIT_NPROC, which needs
//! CAP_SYS_RESOURCE (this sandbox has none), so a containers.conf with
//! `default_ulimits = []`; and crun refuses hybrid cgroups, so runc.

mod support;

use std::process::Command;
use std::time::Duration;

use support::{corpus, run_bounded, Mounted};

#[test]
fn podman_runs_debian_from_the_mount_with_its_overlay_on_top() {
    let cache = tempfile::tempdir().unwrap();
    let image = corpus().image("debian-gzip").layout.display().to_string();
    let mounted = Mounted::new(cache.path(), &image, &["--quiet"]);
    let conf = cache.path().join("containers.conf");
    std::fs::write(&conf, "[containers]\ndefault_ulimits = []\n").unwrap();
    let rootfs = format!("{}:O", mounted.path().display());
    let out = run_bounded(
        Command::new("podman")
            .env("CONTAINERS_CONF", &conf)
            .args([
                "--runtime",
                "runc",
                "run",
                "--rm",
                "--network",
                "none",
                "--rootfs",
            ])
            .arg(&rootfs)
            .args([
                "/bin/sh",
                "-c",
                "cat /etc/debian_version; echo written > /etc/podman-wrote && cat /etc/podman-wrote; id -u",
            ]),
        Duration::from_secs(300),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let version =
        std::fs::read_to_string(corpus().reference("debian-gzip").join("etc/debian_version"))
            .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{version}written\n0\n")
    );
    // The write went to podman's overlay, not to the image.
    assert!(!mounted.path().join("etc/podman-wrote").exists());
    assert!(!corpus()
        .reference("debian-gzip")
        .join("etc/podman-wrote")
        .exists());
}
