//! `--prefetch` and `--record` on real FUSE mounts: the background fill
//! stores every span and changes no byte, `none` stores nothing unread, a
//! record lists the files read in their order and orders the next fill,
//! and an unmount in the middle of a fill ends the daemon promptly.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::{assert_same_tree, corpus, ocimount, ok, process_alive, wait_until, Mounted};

fn layout(name: &str) -> String {
    corpus().image(name).layout.to_str().unwrap().to_string()
}

/// Every layer's `spans` file in the cache: one byte per span, 1 = stored.
fn span_files(cache: &Path) -> Vec<PathBuf> {
    let layers = cache.join("layers").join("sha256");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&layers)
        .unwrap()
        .map(|e| e.unwrap().path().join("spans"))
        .filter(|p| p.exists())
        .collect();
    files.sort();
    files
}

/// (spans stored, spans in all) over the cache's layers.
fn spans_stored(cache: &Path) -> (usize, usize) {
    span_files(cache).iter().fold((0, 0), |(stored, all), f| {
        let bytes = std::fs::read(f).unwrap();
        (
            stored + bytes.iter().filter(|&&b| b == 1).count(),
            all + bytes.len(),
        )
    })
}

fn all_stored(cache: &Path) -> bool {
    let (stored, all) = spans_stored(cache);
    all > 0 && stored == all
}

fn umount(cache: &Path, m: &Mounted) {
    ok(&ocimount(cache, &["umount", m.path().to_str().unwrap()]));
}

/// The daemon's log: the one file under CACHE/logs.
fn daemon_log(cache: &Path) -> String {
    let logs: Vec<PathBuf> = std::fs::read_dir(cache.join("logs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(logs.len(), 1, "{logs:?}");
    std::fs::read_to_string(&logs[0]).unwrap()
}

#[test]
fn prefetch_all_stores_every_span_and_changes_no_byte() {
    let cache = tempfile::tempdir().unwrap();
    let m = Mounted::new(cache.path(), &layout("debian-gzip"), &["--prefetch", "all"]);
    assert!(
        wait_until(Duration::from_secs(60), || all_stored(cache.path())),
        "spans stored after 60 s: {:?}",
        spans_stored(cache.path())
    );
    assert_same_tree(&corpus().reference("debian-gzip"), m.path());
}

#[test]
fn prefetch_none_stores_nothing_unread() {
    let cache = tempfile::tempdir().unwrap();
    let m = Mounted::new(cache.path(), &layout("debian-gzip"), &[]);
    let at_mount = spans_stored(cache.path());
    assert!(at_mount.0 < at_mount.1, "{at_mount:?}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(spans_stored(cache.path()), at_mount);
    std::fs::read(m.path().join("etc/passwd")).unwrap();
    let after_read = spans_stored(cache.path());
    assert!(
        after_read.0 <= at_mount.0 + 2,
        "{after_read:?} after one small file, {at_mount:?} before"
    );
}

#[test]
fn record_lists_the_files_read_in_order_and_orders_the_next_fill() {
    let reference = corpus().reference("debian-gzip");
    let read_order = ["usr/bin/ls", "etc/passwd", "usr/bin/apt"];
    let cache = tempfile::tempdir().unwrap();
    let m = Mounted::new(cache.path(), &layout("debian-gzip"), &["--record"]);
    let pid = m.daemon_pid();
    for (i, file) in read_order.iter().enumerate() {
        // The first file twice: a record names a file once.
        for _ in 0..if i == 0 { 2 } else { 1 } {
            std::fs::read(m.path().join(file)).unwrap();
        }
    }
    umount(cache.path(), &m);
    // The record is written as the daemon exits.
    assert!(wait_until(Duration::from_secs(10), || !process_alive(pid)));
    let records: Vec<PathBuf> = std::fs::read_dir(cache.path().join("records"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(records.len(), 1, "{records:?}");
    let record = std::fs::read_to_string(&records[0]).unwrap();
    assert_eq!(record.lines().collect::<Vec<_>>(), read_order);

    // A fresh data cache with the record (and a path the image lacks).
    let fresh = tempfile::tempdir().unwrap();
    let fresh_records = fresh.path().join("records");
    std::fs::create_dir_all(&fresh_records).unwrap();
    std::fs::write(
        fresh_records.join(records[0].file_name().unwrap()),
        format!("no/such/file\n{record}"),
    )
    .unwrap();
    let m = Mounted::new(
        fresh.path(),
        &layout("debian-gzip"),
        &["--prefetch", "recorded"],
    );
    // Reads during the fill get the right bytes.
    for file in read_order.iter().rev() {
        assert!(
            std::fs::read(m.path().join(file)).unwrap()
                == std::fs::read(reference.join(file)).unwrap(),
            "{file} differs"
        );
    }
    assert!(
        wait_until(Duration::from_secs(60), || all_stored(fresh.path())),
        "spans stored after 60 s: {:?}",
        spans_stored(fresh.path())
    );
    let log = daemon_log(fresh.path());
    assert!(
        log.contains("the 3 files of the record first"),
        "the record was not used:\n{log}"
    );
    assert_same_tree(&reference, m.path());
}

#[test]
fn prefetch_recorded_without_a_record_fills_everything() {
    let cache = tempfile::tempdir().unwrap();
    let _m = Mounted::new(
        cache.path(),
        &layout("debian-gzip"),
        &["--prefetch", "recorded"],
    );
    assert!(
        wait_until(Duration::from_secs(60), || all_stored(cache.path())),
        "spans stored after 60 s: {:?}",
        spans_stored(cache.path())
    );
    assert!(daemon_log(cache.path()).contains("filling as --prefetch all"));
}

#[test]
fn unmount_during_a_fill_ends_the_daemon_promptly() {
    let cache = tempfile::tempdir().unwrap();
    let m = Mounted::new(cache.path(), &layout("debian-gzip"), &["--prefetch", "all"]);
    let pid = m.daemon_pid();
    let started = Instant::now();
    umount(cache.path(), &m);
    assert!(!m.is_mounted());
    assert!(
        wait_until(Duration::from_secs(10), || !process_alive(pid)),
        "daemon {pid} still running 10 s after the unmount"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(ok(&ocimount(cache.path(), &["mounts"])), "");
}

#[test]
fn prefetch_is_skipped_when_the_cache_keeps_no_spans_or_is_bounded() {
    let image = layout("debian-gzip");
    for global in [["--cache-mode", "index-only"], ["--cache-max", "64M"]] {
        let cache = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut args = global.to_vec();
        args.extend([
            "mount",
            "--prefetch",
            "all",
            &image,
            dir.path().to_str().unwrap(),
        ]);
        ok(&ocimount(cache.path(), &args));
        let m = Mounted {
            dir,
            cache: cache.path().to_path_buf(),
        };
        let at_mount = spans_stored(cache.path());
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(spans_stored(cache.path()), at_mount, "{global:?}");
        assert!(at_mount.0 < at_mount.1, "{global:?}: {at_mount:?}");
        let log = daemon_log(cache.path());
        assert!(
            log.contains("--prefetch all: skipped"),
            "{global:?}:\n{log}"
        );
        umount(cache.path(), &m);
    }
}

#[test]
fn sigterm_during_a_fill_unmounts_and_still_writes_the_record() {
    let cache = tempfile::tempdir().unwrap();
    let m = Mounted::new(
        cache.path(),
        &layout("debian-gzip"),
        &["--prefetch", "all", "--record"],
    );
    let pid = m.daemon_pid();
    std::fs::read(m.path().join("etc/passwd")).unwrap();
    // SAFETY: a signal to the daemon this test started.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    assert!(
        wait_until(Duration::from_secs(10), || !process_alive(pid)),
        "daemon {pid} still running 10 s after SIGTERM"
    );
    assert!(!m.is_mounted());
    let records: Vec<PathBuf> = std::fs::read_dir(cache.path().join("records"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(
        std::fs::read_to_string(&records[0]).unwrap(),
        "etc/passwd\n"
    );
}

/// Every daemon log under CACHE/logs, one after another.
fn all_daemon_logs(cache: &Path) -> String {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(cache.join("logs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    logs.sort();
    logs.iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

#[test]
fn run_records_its_first_reads_and_the_next_run_prefetches_them_first() {
    let reference = corpus().reference("debian-gzip");
    let image = layout("debian-gzip");
    let cache = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let expected = std::fs::read(reference.join("etc/debian_version")).unwrap();
    // `run` must succeed and print /etc/debian_version.
    let run = |args: &[&str]| {
        let out = support::run_bounded(
            std::process::Command::new(support::BIN)
                .env("TMPDIR", tmp.path())
                .arg("--cache")
                .arg(cache.path())
                .arg("run")
                .args(args),
            Duration::from_secs(120),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert_eq!(out.stdout, expected, "{stderr}");
    };
    let script = "cat /etc/os-release >/dev/null; cat /etc/debian_version";
    run(&["--record", &image, "--", "sh", "-c", script]);
    // The daemon writes the record as it exits, after `run` unmounted.
    let records = cache.path().join("records");
    assert!(wait_until(Duration::from_secs(20), || std::fs::read_dir(
        &records
    )
    .is_ok_and(|mut d| d.next().is_some())));
    let record = std::fs::read_dir(&records)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let record = std::fs::read_to_string(record).unwrap();
    let lines: Vec<&str> = record.lines().collect();
    let at = |file: &str| lines.iter().position(|l| *l == file);
    // `os-release` is a symlink: its target is what was read.
    let (release, version) = (at("usr/lib/os-release"), at("etc/debian_version"));
    assert!(
        release.is_some() && version.is_some() && release < version,
        "{record}"
    );
    let count = lines.len();

    // Again with the record first: the same bytes, and the log says so.
    run(&["--prefetch", "recorded", &image, "--", "sh", "-c", script]);
    let logged = format!("the {count} files of the record first");
    assert!(
        wait_until(Duration::from_secs(20), || all_daemon_logs(cache.path())
            .contains(&logged)),
        "the record was not used:\n{}",
        all_daemon_logs(cache.path())
    );
}
