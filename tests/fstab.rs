//! The system around the mount: `scripts/install.sh` puts the binary, the
//! mount(8) helper, completions and man pages in place, and with the helper
//! installed, an /etc/fstab line (`mount -T FSTAB -a`) and `mount -t
//! fuse.ocimount` mount an image like any FUSE file system.
//!
//! The helper must sit where mount(8) looks (/sbin). So as not to change
//! the host under other tests, the mounts run in a private mount namespace
//! in which an overlay on /usr/sbin holds the helper's link.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::{corpus, run_bounded, BIN, REPO};

#[test]
fn install_sh_puts_binary_helper_completions_and_man_pages_in_place() {
    let dest = tempfile::tempdir().unwrap();
    let out = run_bounded(
        Command::new("bash")
            .arg(Path::new(REPO).join("scripts/install.sh"))
            .env("DESTDIR", dest.path())
            .env("PREFIX", "/usr")
            .env("OCIMOUNT_BIN", BIN),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let root = dest.path();
    assert_eq!(
        std::fs::read(root.join("usr/bin/ocimount")).unwrap(),
        std::fs::read(BIN).unwrap()
    );
    assert_eq!(
        std::fs::read_link(root.join("sbin/mount.fuse.ocimount")).unwrap(),
        Path::new("/usr/bin/ocimount")
    );
    let bash = std::fs::read_to_string(root.join("usr/share/bash-completion/completions/ocimount"))
        .unwrap();
    assert!(bash.contains("complete -F _ocimount"), "{bash:.200}");
    for sub in ["mount", "umount", "cache", "bundle", "export"] {
        assert!(bash.contains(sub), "bash completion lacks {sub}");
    }
    let zsh = std::fs::read_to_string(root.join("usr/share/zsh/site-functions/_ocimount")).unwrap();
    assert!(zsh.starts_with("#compdef ocimount"), "{zsh:.100}");
    let fish =
        std::fs::read_to_string(root.join("usr/share/fish/vendor_completions.d/ocimount.fish"))
            .unwrap();
    assert!(fish.contains("complete -c ocimount"), "{fish:.100}");
    let page = std::fs::read_to_string(root.join("usr/share/man/man1/ocimount-mount.1")).unwrap();
    assert!(page.starts_with(".ie \\n(.g .ds Aq"), "{page:.100}");
    assert!(
        page.contains("\\-\\-allow\\-other"),
        "the mount page lacks --allow-other"
    );
    assert!(root.join("usr/share/man/man1/ocimount.1").is_file());
    assert!(
        !root.join("usr/share/man/man1/ocimount-daemon.1").exists(),
        "hidden commands get no page"
    );
}

#[test]
fn an_fstab_line_and_mount_t_fuse_ocimount_mount_the_image() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    for d in ["up", "work", "a", "b", "cache"] {
        std::fs::create_dir(w.join(d)).unwrap();
    }
    let image = corpus().image("tiny-opaque").layout.display().to_string();
    let cache = w.join("cache");
    std::fs::write(
        w.join("fstab"),
        format!(
            "# an ocimount image\n{image} {} fuse.ocimount ro,allow_other,cache={},x-test 0 0\n",
            w.join("a").display(),
            cache.display()
        ),
    )
    .unwrap();
    let script = r#"
        set -eu
        W=$1 BIN=$2 IMAGE=$3
        trap 'umount -l "$W/a" 2>/dev/null || true; umount -l "$W/b" 2>/dev/null || true' EXIT
        mount -t overlay overlay -o "lowerdir=/usr/sbin,upperdir=$W/up,workdir=$W/work" /usr/sbin
        # The host may have its own link (scripts/install.sh): stand one in,
        # pointing elsewhere, so that replacing it (-f) is always tested.
        ln -sfn /bin/false /usr/sbin/mount.fuse.ocimount
        ln -sfn "$BIN" /usr/sbin/mount.fuse.ocimount
        mount -T "$W/fstab" -a
        findmnt -n -o FSTYPE,OPTIONS "$W/a" > "$W/a.findmnt"
        cat "$W/a/keep/x" > "$W/a.x"
        umount "$W/a"
        mount -t fuse.ocimount -o "cache=$W/cache" "$IMAGE" "$W/b"
        cat "$W/b/n/file" > "$W/b.file"
        umount "$W/b"
        findmnt -n "$W/a" "$W/b" > "$W/left" || true
    "#;
    let out = run_bounded(
        Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
                "sh",
            ])
            .arg(w)
            .arg(BIN)
            .arg(&image),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let reference = corpus().reference("tiny-opaque");
    let findmnt = std::fs::read_to_string(w.join("a.findmnt")).unwrap();
    assert!(findmnt.starts_with("fuse.ocimount ro,"), "{findmnt}");
    assert!(findmnt.contains("allow_other"), "{findmnt}");
    assert_eq!(
        std::fs::read(w.join("a.x")).unwrap(),
        std::fs::read(reference.join("keep/x")).unwrap()
    );
    assert_eq!(
        std::fs::read(w.join("b.file")).unwrap(),
        std::fs::read(reference.join("n/file")).unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(w.join("left")).unwrap(),
        "",
        "a mount was left behind"
    );
    // The helper printed nothing: mount(8) helpers are quiet.
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    assert!(
        cache.join("layers/sha256").is_dir(),
        "cache= was not honoured"
    );
}
