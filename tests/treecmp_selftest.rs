//! The tree comparer of the test support (tests/support/treecmp.rs) on
//! small trees built here: identical trees compare equal, and each kind of
//! difference is reported, in the Python tool's words.
//!
//! Owner changes, device nodes and trusted.* xattrs need root; those cases
//! are skipped (with a note) without it.

mod support;

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest as _, Sha256};
use support::treecmp::{compare, treecmp, Options};

const T: u64 = 1_700_000_000;

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// Two empty roots, side by side in a scratch directory of the target dir
/// (a disk filesystem, so user xattrs work, unlike on some tmpfs).
struct Pair {
    _scratch: tempfile::TempDir,
    a: PathBuf,
    b: PathBuf,
}

impl Pair {
    fn new() -> Pair {
        let scratch = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let a = scratch.path().join("a");
        let b = scratch.path().join("b");
        fs::create_dir(&a).unwrap();
        fs::create_dir(&b).unwrap();
        Pair {
            _scratch: scratch,
            a,
            b,
        }
    }

    /// The same sample tree in both roots.
    fn sample() -> Pair {
        let pair = Pair::new();
        sample_tree(&pair.a);
        sample_tree(&pair.b);
        pair
    }

    fn report(&self) -> String {
        let (same, report) = treecmp(&self.a, &self.b);
        assert_eq!(same, report.ends_with(" 0 differences\n"), "{report}");
        report
    }

    /// The report must be exactly these difference lines and a summary.
    fn expect(&self, paths: usize, diffs: &[&str]) {
        let mut want: String = diffs.iter().map(|d| format!("{d}\n")).collect();
        want.push_str(&format!(
            "treecmp: {paths} paths, {} differences\n",
            diffs.len()
        ));
        assert_eq!(self.report(), want);
    }
}

fn write(path: &Path, data: &[u8]) {
    fs::write(path, data).unwrap();
    set_mtime(path, T);
}

fn set_mtime(path: &Path, secs: u64) {
    let f = fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
        .unwrap();
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn cpath(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap()
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let name = CString::new(name).unwrap();
    let rc = unsafe {
        libc::lsetxattr(
            cpath(path).as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn remove_xattr(path: &Path, name: &str) {
    let name = CString::new(name).unwrap();
    let rc = unsafe { libc::lremovexattr(cpath(path).as_ptr(), name.as_ptr()) };
    assert_eq!(rc, 0, "{}", io::Error::last_os_error());
}

fn mknod(path: &Path, kind: libc::mode_t, major: u32, minor: u32) {
    let rc = unsafe {
        libc::mknod(
            cpath(path).as_ptr(),
            kind | 0o644,
            libc::makedev(major, minor),
        )
    };
    assert_eq!(
        rc,
        0,
        "mknod {}: {}",
        path.display(),
        io::Error::last_os_error()
    );
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
}

fn sha256(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// dir/, dir/f, dir/sub/, dir/sub/g, link -> dir/f, h1 and h2 (one inode),
/// empty, exec (0755): 9 paths.
fn sample_tree(root: &Path) {
    fs::create_dir_all(root.join("dir/sub")).unwrap();
    write(&root.join("dir/f"), b"file f\n");
    write(&root.join("dir/sub/g"), b"file g\n");
    symlink("dir/f", root.join("link")).unwrap();
    write(&root.join("h1"), b"linked\n");
    fs::hard_link(root.join("h1"), root.join("h2")).unwrap();
    write(&root.join("empty"), b"");
    write(&root.join("exec"), b"#!/bin/sh\n");
    for (path, mode) in [
        ("dir", 0o755),
        ("dir/sub", 0o755),
        ("dir/f", 0o644),
        ("dir/sub/g", 0o644),
        ("h1", 0o644),
        ("empty", 0o644),
        ("exec", 0o755),
    ] {
        chmod(&root.join(path), mode);
    }
}

const SAMPLE_PATHS: usize = 9;

#[test]
fn identical_trees_have_no_differences() {
    let pair = Pair::sample();
    pair.expect(SAMPLE_PATHS, &[]);
    let (same, report) = treecmp(&pair.a, &pair.b);
    assert!(same);
    assert!(report.contains(" 0 differences"), "{report}");
    support::assert_same_tree(&pair.a, &pair.b);
}

#[test]
fn empty_trees_are_the_same() {
    let pair = Pair::new();
    pair.expect(0, &[]);
}

#[test]
#[should_panic(expected = "trees differ")]
fn assert_same_tree_fails_on_a_difference() {
    let pair = Pair::sample();
    write(&pair.b.join("dir/f"), b"file F\n");
    support::assert_same_tree(&pair.a, &pair.b);
}

#[test]
fn content_is_compared() {
    let pair = Pair::sample();
    // Same size, other bytes.
    write(&pair.b.join("dir/f"), b"file F\n");
    // Other size.
    write(&pair.b.join("dir/sub/g"), b"file gg\n");
    pair.expect(
        SAMPLE_PATHS,
        &[
            &format!(
                "differs dir/f: sha256: '{}' vs '{}'",
                sha256(b"file f\n"),
                sha256(b"file F\n")
            ),
            &format!(
                "differs dir/sub/g: size: 7 vs 8, sha256: '{}' vs '{}'",
                sha256(b"file g\n"),
                sha256(b"file gg\n")
            ),
        ],
    );
}

#[test]
fn content_past_the_first_chunks_is_compared() {
    let pair = Pair::new();
    let mut big = vec![7u8; (3 << 20) + 123];
    write(&pair.a.join("big"), &big);
    *big.last_mut().unwrap() = 8;
    write(&pair.b.join("big"), &big);
    let report = pair.report();
    assert!(report.starts_with("differs big: sha256: '"), "{report}");
    assert!(
        report.ends_with("treecmp: 1 paths, 1 differences\n"),
        "{report}"
    );
    *big.last_mut().unwrap() = 7;
    write(&pair.b.join("big"), &big);
    pair.expect(1, &[]);
}

#[test]
fn permission_bits_are_compared() {
    let pair = Pair::sample();
    chmod(&pair.b.join("dir/f"), 0o600);
    chmod(&pair.b.join("exec"), 0o4755);
    chmod(&pair.b.join("dir/sub"), 0o1777);
    pair.expect(
        SAMPLE_PATHS,
        &[
            "differs dir/f: mode: '0o644' vs '0o600'",
            "differs dir/sub: mode: '0o755' vs '0o1777'",
            "differs exec: mode: '0o755' vs '0o4755'",
        ],
    );
}

#[test]
fn owners_are_compared() {
    if !is_root() {
        eprintln!("skipped: changing owners needs root");
        return;
    }
    let pair = Pair::sample();
    chown(&pair.b.join("dir/f"), 1000, 0);
    chown(&pair.b.join("dir/sub"), 0, 50);
    chown(&pair.b.join("link"), 7, 8);
    pair.expect(
        SAMPLE_PATHS,
        &[
            "differs dir/f: uid: 0 vs 1000",
            "differs dir/sub: gid: 0 vs 50",
            "differs link: uid: 0 vs 7, gid: 0 vs 8",
        ],
    );
    let no_owner = Options {
        owner: false,
        ..Options::default()
    };
    assert!(compare(&pair.a, &pair.b, &no_owner).differences.is_empty());
}

#[test]
fn mtimes_of_files_are_compared_but_not_of_directories() {
    let pair = Pair::sample();
    set_mtime(&pair.b.join("dir/f"), T + 1);
    // Directories' mtimes are not compared.
    let dir = fs::File::open(pair.b.join("dir/sub")).unwrap();
    dir.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(5))
        .unwrap();
    pair.expect(
        SAMPLE_PATHS,
        &[&format!("differs dir/f: mtime: {T} vs {}", T + 1)],
    );
    let no_mtime = Options {
        mtime: false,
        ..Options::default()
    };
    assert!(compare(&pair.a, &pair.b, &no_mtime).differences.is_empty());
}

#[test]
fn mtimes_are_whole_seconds() {
    let pair = Pair::new();
    write(&pair.a.join("f"), b"x");
    write(&pair.b.join("f"), b"x");
    let f = fs::File::options()
        .write(true)
        .open(pair.b.join("f"))
        .unwrap();
    f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_millis(T * 1000 + 250))
        .unwrap();
    pair.expect(1, &[]);
}

#[test]
fn symlink_targets_are_compared() {
    let pair = Pair::sample();
    fs::remove_file(pair.b.join("link")).unwrap();
    symlink("dir/sub/g", pair.b.join("link")).unwrap();
    pair.expect(
        SAMPLE_PATHS,
        &["differs link: target: 'dir/f' vs 'dir/sub/g'"],
    );
}

#[test]
fn a_changed_type_lists_every_differing_key() {
    let pair = Pair::sample();
    fs::remove_file(pair.b.join("empty")).unwrap();
    symlink("dir", pair.b.join("empty")).unwrap();
    pair.expect(
        SAMPLE_PATHS,
        &[&format!(
            "differs empty: type: 32768 vs 40960, mode: '0o644' vs '0o777', mtime: {T} vs None, \
             size: 0 vs None, sha256: '{}' vs None, target: None vs 'dir'",
            sha256(b"")
        )],
    );
}

#[test]
fn missing_and_extra_paths_are_reported() {
    let pair = Pair::sample();
    fs::remove_dir_all(pair.b.join("dir/sub")).unwrap();
    fs::create_dir(pair.b.join("new")).unwrap();
    write(&pair.b.join("new/n"), b"n\n");
    write(&pair.b.join("zz"), b"z\n");
    pair.expect(
        SAMPLE_PATHS,
        &[
            "missing in candidate: dir/sub",
            "missing in candidate: dir/sub/g",
            "extra in candidate: new",
            "extra in candidate: new/n",
            "extra in candidate: zz",
        ],
    );
}

#[test]
fn user_xattrs_are_compared() {
    let pair = Pair::sample();
    match set_xattr(&pair.a.join("dir/f"), "user.one", b"1") {
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => {
            eprintln!("skipped: no user xattrs here");
            return;
        }
        r => r.unwrap(),
    }
    set_xattr(&pair.b.join("dir/f"), "user.one", b"2").unwrap();
    set_xattr(&pair.a.join("dir/sub"), "user.gone", b"").unwrap();
    set_xattr(&pair.b.join("exec"), "user.new", b"it's \x00\xff\n").unwrap();
    set_xattr(&pair.a.join("h1"), "user.same", b"same").unwrap();
    set_xattr(&pair.a.join("h1"), "user.x", b"v").unwrap();
    set_xattr(&pair.b.join("h1"), "user.same", b"same").unwrap();
    set_xattr(&pair.b.join("h1"), "user.x", b"v").unwrap();
    pair.expect(
        SAMPLE_PATHS,
        &[
            "differs dir/f: xattrs: {'user.one': b'1'} vs {'user.one': b'2'}",
            "differs dir/sub: xattrs: {'user.gone': b''} vs {}",
            "differs exec: xattrs: {} vs {'user.new': b\"it's \\x00\\xff\\n\"}",
        ],
    );
    remove_xattr(&pair.a.join("dir/sub"), "user.gone");
    let no_xattr = Options {
        xattr: false,
        ..Options::default()
    };
    assert!(compare(&pair.a, &pair.b, &no_xattr).differences.is_empty());
}

#[test]
fn only_user_xattrs_are_compared() {
    if !is_root() {
        eprintln!("skipped: trusted.* xattrs need root");
        return;
    }
    let pair = Pair::sample();
    match set_xattr(&pair.a.join("dir/f"), "trusted.x", b"1") {
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => {
            eprintln!("skipped: no trusted xattrs here");
            return;
        }
        r => r.unwrap(),
    }
    pair.expect(SAMPLE_PATHS, &[]);
}

#[test]
fn hardlink_groups_are_compared() {
    let pair = Pair::sample();
    // h1 and h2 are two inodes in the candidate, with the same content.
    fs::remove_file(pair.b.join("h2")).unwrap();
    fs::copy(pair.b.join("h1"), pair.b.join("h2")).unwrap();
    set_mtime(&pair.b.join("h2"), T);
    pair.expect(
        SAMPLE_PATHS,
        &["hardlink group not preserved: ['h1', 'h2']"],
    );
}

#[test]
fn hardlink_groups_must_be_the_same_groups() {
    let pair = Pair::new();
    for root in [&pair.a, &pair.b] {
        write(&root.join("x1"), b"x\n");
        write(&root.join("y1"), b"x\n");
        fs::hard_link(root.join("x1"), root.join("x2")).unwrap();
        fs::hard_link(root.join("y1"), root.join("y2")).unwrap();
    }
    pair.expect(4, &[]);
    // Regrouped: x1 with y1, x2 with y2. Same contents, same link counts.
    for name in ["x2", "y1"] {
        fs::remove_file(pair.b.join(name)).unwrap();
    }
    fs::hard_link(pair.b.join("x1"), pair.b.join("y1")).unwrap();
    fs::hard_link(pair.b.join("y2"), pair.b.join("x2")).unwrap();
    pair.expect(
        4,
        &[
            "hardlink group not preserved: ['x1', 'x2']",
            "hardlink group not preserved: ['y1', 'y2']",
        ],
    );
}

#[test]
fn extra_links_in_the_candidate_are_not_a_group_difference() {
    // As in treecmp.py: only the reference's groups must be preserved.
    let pair = Pair::new();
    for root in [&pair.a, &pair.b] {
        write(&root.join("p"), b"p\n");
        write(&root.join("q"), b"p\n");
    }
    fs::remove_file(pair.b.join("q")).unwrap();
    fs::hard_link(pair.b.join("p"), pair.b.join("q")).unwrap();
    pair.expect(2, &[]);
}

#[test]
fn device_numbers_are_compared() {
    if !is_root() {
        eprintln!("skipped: mknod needs root");
        return;
    }
    let pair = Pair::new();
    mknod(&pair.a.join("null"), libc::S_IFCHR, 1, 3);
    mknod(&pair.b.join("null"), libc::S_IFCHR, 1, 5);
    mknod(&pair.a.join("disk"), libc::S_IFBLK, 8, 0);
    mknod(&pair.b.join("disk"), libc::S_IFBLK, 8, 0);
    mknod(&pair.a.join("fifo"), libc::S_IFIFO, 0, 0);
    mknod(&pair.b.join("fifo"), libc::S_IFIFO, 0, 0);
    for root in [&pair.a, &pair.b] {
        for name in ["null", "disk", "fifo"] {
            let path = CString::new(root.join(name).as_os_str().as_bytes()).unwrap();
            let times = [
                libc::timespec {
                    tv_sec: T as libc::time_t,
                    tv_nsec: 0,
                },
                libc::timespec {
                    tv_sec: T as libc::time_t,
                    tv_nsec: 0,
                },
            ];
            let rc = unsafe { libc::utimensat(libc::AT_FDCWD, path.as_ptr(), times.as_ptr(), 0) };
            assert_eq!(rc, 0);
        }
    }
    pair.expect(3, &["differs null: rdev: (1, 3) vs (1, 5)"]);
}

#[test]
fn symlinks_are_never_followed() {
    // Each root has a sibling `outside`, different on each side; the links
    // have the same text but reach different things. A link to a
    // directory inside the tree is not entered either.
    let scratch = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let pair = Pair {
        a: scratch.path().join("left/tree"),
        b: scratch.path().join("right/tree"),
        _scratch: scratch,
    };
    for (root, content) in [(&pair.a, &b"one\n"[..]), (&pair.b, &b"two, longer\n"[..])] {
        let outside = root.parent().unwrap().join("outside");
        fs::create_dir_all(root.join("inside")).unwrap();
        fs::create_dir(&outside).unwrap();
        write(&outside.join("f"), content);
        symlink("../outside", root.join("dirlink")).unwrap();
        symlink("../outside/f", root.join("filelink")).unwrap();
        symlink("inside", root.join("insidelink")).unwrap();
    }
    write(&pair.b.parent().unwrap().join("outside/only-right"), b"\n");
    chmod(&pair.b.parent().unwrap().join("outside"), 0o700);
    write(&pair.b.join("inside/f"), b"\n");
    pair.expect(4, &["extra in candidate: inside/f"]);
}

#[test]
fn the_roots_themselves_are_not_compared() {
    // As in treecmp.py, which compares what os.walk lists below the roots.
    let pair = Pair::sample();
    chmod(&pair.b, 0o700);
    pair.expect(SAMPLE_PATHS, &[]);
}

#[test]
fn reports_are_capped_but_every_difference_counts() {
    let pair = Pair::new();
    for i in 0..60 {
        write(&pair.a.join(format!("f{i:02}")), b"");
    }
    let report = pair.report();
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines.len(), 52, "{report}");
    assert_eq!(lines[0], "missing in candidate: f00");
    assert_eq!(lines[49], "missing in candidate: f49");
    assert_eq!(lines[50], "... 10 more");
    assert_eq!(lines[51], "treecmp: 60 paths, 60 differences");
    let all = compare(
        &pair.a,
        &pair.b,
        &Options {
            max: 100,
            ..Options::default()
        },
    );
    assert_eq!(all.differences.len(), 60);
    assert_eq!(all.paths, 60);
    assert!(!all.report.contains("more"));
}

#[test]
fn odd_names_are_shown_like_python_does() {
    let pair = Pair::new();
    let name = std::ffi::OsStr::from_bytes(b"it's\tx\xff");
    write(&pair.a.join(name), b"1");
    write(&pair.b.join(name), b"1");
    fs::hard_link(pair.a.join(name), pair.a.join("plain")).unwrap();
    write(&pair.b.join("plain"), b"1");
    pair.expect(
        2,
        &["hardlink group not preserved: [\"it's\\tx\\udcff\", 'plain']"],
    );
}
