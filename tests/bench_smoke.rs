//! The benchmark is not a test: nothing here looks at a timing. These keep
//! it from rotting: `scripts/bench.sh` runs end to end on the tiny image
//! with one repetition and writes a Markdown table, JSON that parses with
//! every system measured, and an SVG chart, with the registry rows (the
//! image served by Debian's `docker-registry`, every way measured, its
//! bytes counted, nothing left running); and `vagrant validate` accepts
//! the Vagrantfile (Debian's `vagrant` and `vagrant-libvirt`, installed by
//! scripts/install-deps.sh; a missing `vagrant` fails the test).
//! Needs root and /dev/fuse, as the mount tests do.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const BIN: &str = env!("CARGO_BIN_EXE_ocimount");

/// Run `cmd` in its own process group; past `limit`, SIGTERM the group (so
/// the script's traps unmount), then SIGKILL it. Returns status and output.
fn run_group_bounded(cmd: &mut Command, limit: Duration) -> (ExitStatus, String) {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    let pgid = child.id() as libc::pid_t;
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let mut termed: Option<Instant> = None;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        let now = Instant::now();
        if termed.is_none() && now > deadline {
            unsafe { libc::kill(-pgid, libc::SIGTERM) };
            termed = Some(now);
        }
        if termed.is_some_and(|t| now > t + Duration::from_secs(90)) {
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            let _ = child.wait();
            unmount_leftovers();
            panic!("{shown} outlived {limit:?} and SIGTERM; killed");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = format!(
        "--- stdout\n{}\n--- stderr\n{}",
        t_out.join().unwrap(),
        t_err.join().unwrap()
    );
    if termed.is_some() {
        unmount_leftovers();
        panic!("{shown} did not finish within {limit:?}\n{text}");
    }
    (status, text)
}

fn bench_mounts() -> Vec<String> {
    let prefix = format!("{REPO}/target/bench-work.");
    std::fs::read_to_string("/proc/mounts")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .filter(|m| m.starts_with(&prefix))
        .map(str::to_string)
        .collect()
}

/// Processes (the registry, a mount daemon) still running from a bench work dir.
fn bench_processes() -> Vec<String> {
    let prefix = format!("{REPO}/target/bench-work.");
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&prefix) {
            out.push(format!(
                "{}: {cmdline}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    out
}

fn unmount_leftovers() {
    let mut mounts = bench_mounts();
    mounts.sort();
    for m in mounts.iter().rev() {
        let _ = Command::new("umount").arg("-l").arg(m).status();
    }
}

#[test]
fn bench_smoke_run_writes_table_json_and_chart() {
    let out = tempfile::tempdir().unwrap();
    let (status, log) = run_group_bounded(
        Command::new("bash")
            .arg(format!("{REPO}/scripts/bench.sh"))
            .args([
                "--size",
                "tiny",
                "--reps",
                "1",
                "--nrand",
                "50",
                "--name",
                "smoke",
                // The fleet rows run in tests/fleet_mirror.rs, not here.
                "--fleet-nodes",
                "0",
            ])
            .args(["--timeout", "300", "--max-time", "480", "--bin", BIN])
            .arg("--out")
            .arg(out.path()),
        Duration::from_secs(600),
    );
    assert!(
        status.success(),
        "scripts/bench.sh failed ({status:?})\n{log}"
    );
    assert!(
        bench_mounts().is_empty(),
        "mounts left behind: {:?}",
        bench_mounts()
    );

    assert!(
        bench_processes().is_empty(),
        "processes left behind: {:?}",
        bench_processes()
    );

    let md = std::fs::read_to_string(out.path().join("smoke.md")).expect("smoke.md");
    let svg = std::fs::read_to_string(out.path().join("smoke.svg")).expect("smoke.svg");
    let json = std::fs::read_to_string(out.path().join("smoke.json")).expect("smoke.json");
    let res: serde_json::Value = serde_json::from_str(&json).expect("smoke.json parses");

    // Every system and every limit measured something; the main measures exist.
    let systems: Vec<&str> = res["systems"]
        .as_array()
        .expect("systems")
        .iter()
        .map(|s| s["key"].as_str().unwrap())
        .collect();
    for want in [
        "ocimount-gzip",
        "ocimount-zstd",
        "zcat",
        "zstdcat",
        "umoci",
        "ratarmount",
        "fuse-overlayfs",
        "overlayfs",
    ] {
        assert!(systems.contains(&want), "{want} missing from {systems:?}");
        assert!(
            res["medians"][want]
                .as_object()
                .is_some_and(|m| !m.is_empty()),
            "no medians for {want}"
        );
    }
    let oci = &res["medians"]["ocimount-gzip"];
    for metric in [
        "ready_cold",
        "ready_warm",
        "ttfb",
        "find_1",
        "find_2",
        "stat_storm",
        "read_cold",
        "read_warm",
        "read_disk",
        "rand_cold",
        "rand_warm",
        "rand_mount",
        "rss_hwm",
        "rss_anon",
        "state",
        "index",
        "verify",
    ] {
        assert!(
            oci[metric].as_f64().is_some(),
            "ocimount-gzip has no {metric}"
        );
        assert_eq!(
            res["samples"]["ocimount-gzip"][metric]
                .as_array()
                .map(Vec::len),
            Some(1),
            "one repetition of {metric}"
        );
    }
    for peer in ["umoci", "ratarmount", "fuse-overlayfs", "overlayfs"] {
        for metric in ["ready_cold", "find_1", "read_cold", "rand_cold"] {
            assert!(
                res["medians"][peer][metric].as_f64().is_some(),
                "{peer} has no {metric}"
            );
        }
    }
    // Every system that mounts again times the mount and the reads after
    // it; umoci's extracted directory has no mount to time.
    for peer in ["ratarmount", "fuse-overlayfs", "overlayfs"] {
        assert!(
            res["medians"][peer]["rand_mount"].as_f64().is_some(),
            "{peer} has no rand_mount"
        );
    }
    assert!(res["medians"]["umoci"]["rand_mount"].is_null());
    assert_eq!(res["image"]["size"], "tiny");
    assert_eq!(res["image"]["layer_count"], 3);
    assert!(res["machine"]["cores"].as_u64().unwrap() >= 1);

    // The table has a row per measure and a column per system, and names the worst ratio.
    let header = md
        .lines()
        .find(|l| l.starts_with("| measure |"))
        .expect("table header");
    assert_eq!(header.matches(" | ").count(), systems.len(), "{header}");
    assert!(md.contains("| cold start |"), "{md}");
    assert!(md.contains("| read all, cold |"), "{md}");
    assert!(md.contains("Worst ratio against a peer"), "{md}");
    assert!(md.contains("(smoke.svg)"), "{md}");

    // The registry rows: every way timed and its blob bytes counted from the
    // registry's access log. The tiny image has no /usr/bin/true, so no `run`
    // rows; its /etc/os-release dangles, so the first file is another.
    let reg = &res["registry"];
    assert!(reg.is_object(), "no registry results in {json}");
    assert!(reg["error"].is_null(), "registry: {}", reg["error"]);
    assert_eq!(
        reg["errors"].as_object().map(|e| e.len()),
        Some(0),
        "registry: {}",
        reg["errors"]
    );
    assert_eq!(reg["first_file"], "/etc/debian_version");
    assert!(
        reg["run"]
            .as_str()
            .is_some_and(|r| r.starts_with("not measured")),
        "{}",
        reg["run"]
    );
    let layers = reg["layer_bytes"].as_f64().expect("layer_bytes");
    assert_eq!(layers, res["image"]["gzip_bytes"].as_f64().unwrap());
    assert!(
        reg["artifact_bytes"].as_f64().is_some_and(|b| b > 0.0),
        "{reg}"
    );
    assert!(reg["index_push_seconds"].as_f64().is_some(), "{reg}");
    let measured = [
        ("skopeo-copy", "copy"),
        ("registry-skopeo", "first_file"),
        ("registry-noindex", "first_file"),
        ("registry-noindex", "read_all"),
        ("registry-index", "first_file"),
        ("registry-index", "read_all"),
        // Issue 23: through the TOCs, and on paced links.
        ("registry-estargz", "first_file"),
        ("registry-estargz", "read_all"),
        ("registry-zstdchunked", "first_file"),
        ("registry-zstdchunked", "read_all"),
        ("registry-noindex@1g", "first_file"),
        ("skopeo-copy@1g", "copy"),
        ("registry-noindex@100m", "first_file"),
        ("skopeo-copy@100m", "copy"),
    ];
    for (system, metric) in measured {
        for m in [metric.to_string(), format!("{metric}_bytes")] {
            assert!(
                res["medians"][system][&m].as_f64().is_some(),
                "{system} has no {m}"
            );
        }
    }
    // What each way fetched: skopeo and the full pass, every layer; the
    // published indexes spare most of them.
    let bytes = |system: &str, metric: &str| {
        res["medians"][system][format!("{metric}_bytes")]
            .as_f64()
            .unwrap()
    };
    assert!(bytes("skopeo-copy", "copy") >= layers);
    assert!(bytes("registry-skopeo", "first_file") >= layers);
    assert!(bytes("registry-noindex", "first_file") >= layers);
    assert!(bytes("registry-index", "first_file") < layers / 2.0);
    // The section: a row with a time, bytes and a share per measure, and the goals.
    let section = md.split("## Registry").nth(1).expect("a Registry section");
    let rows: Vec<&str> = section
        .lines()
        .filter(|l| l.starts_with("| ") && l.ends_with(" % |"))
        .collect();
    assert_eq!(rows.len(), measured.len(), "{section}");
    for row in rows {
        let cells: Vec<&str> = row.trim_matches('|').split(" | ").map(str::trim).collect();
        assert!(
            cells[2].ends_with(" ms") || cells[2].ends_with(" s"),
            "{row}"
        );
        assert!(cells[3].ends_with("iB"), "{row}");
    }
    for goal in [
        "with the artifact, the first file in ≤ 0.5 s",
        "with the artifact, the first file with ≤ 5 % of the compressed bytes",
        "with no artifact, the first file in ≤ 1.0× the time of `skopeo copy` alone",
        "the same at 1 Gbit/s",
        "the same at 100 Mbit/s",
        "with the artifact, span digest checks ≤ 5 % of reading everything",
        "eStargz: the first file in ≤ 0.5 s",
        "zstd:chunked: reading everything in ≤ 1.5× way 2's (the full pass)",
        "eStargz: chunk digest checks ≤ 5 % of reading everything",
        "zstd:chunked: chunk digest checks ≤ 5 % of reading everything",
    ] {
        let line = section
            .lines()
            .find(|l| l.starts_with(&format!("| {goal} |")))
            .unwrap_or_else(|| panic!("no goal {goal:?} in {section}"));
        assert!(
            line.ends_with("| met |") || line.ends_with("| **missed** |"),
            "{line}"
        );
    }
    assert!(
        section.contains("way 2 first file ÷ `skopeo copy` alone: **"),
        "{section}"
    );
    assert!(
        section.contains("way 3 first file blob bytes ÷ compressed layer bytes: **"),
        "{section}"
    );

    assert!(
        svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>") && svg.contains("<rect"),
        "{svg}"
    );
}

#[test]
fn vagrantfile_validates() {
    assert!(Path::new(REPO).join("Vagrantfile").is_file());
    let dotfiles = tempfile::tempdir().unwrap(); // no .vagrant/ in the checkout
    let (status, log) = run_group_bounded(
        Command::new("vagrant")
            .arg("validate")
            .current_dir(REPO)
            .env("VAGRANT_DOTFILE_PATH", dotfiles.path())
            .env("VAGRANT_CHECKPOINT_DISABLE", "1"),
        Duration::from_secs(180),
    );
    assert!(status.success(), "vagrant validate failed\n{log}");
    assert!(log.contains("validated successfully"), "{log}");
}
