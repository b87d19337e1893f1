//! Shared by the integration tests that use real images: the umoci-built
//! corpus (built once, cached in target/test-images), bounded command runs,
//! tree comparison (treecmp.rs), and mounts that always clean up after
//! themselves.
#![allow(dead_code)]

pub mod registry;
pub mod treecmp;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

#[allow(unused_imports)]
pub use treecmp::{assert_same_tree, treecmp};

pub const BIN: &str = env!("CARGO_BIN_EXE_ocimount");
pub const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// Run a command, killing it (and failing the test) if it outlives `limit`.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Output {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let out_thread = std::thread::spawn(move || read_all(stdout));
    let err_thread = std::thread::spawn(move || read_all(stderr));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{shown} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out_thread.join().unwrap(),
        stderr: err_thread.join().unwrap(),
    }
}

fn read_all(mut r: impl std::io::Read) -> Vec<u8> {
    let mut v = Vec::new();
    let _ = r.read_to_end(&mut v);
    v
}

/// `ocimount --cache CACHE ARGS…`, bounded to two minutes.
pub fn ocimount(cache: &Path, args: &[&str]) -> Output {
    let out = run_bounded(
        Command::new(BIN).arg("--cache").arg(cache).args(args),
        Duration::from_secs(120),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "ocimount panicked: {stderr}");
    out
}

pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "command failed ({:?}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One image of the corpus, and the tree umoci unpacked from it.
#[derive(Clone, Debug)]
pub struct CorpusImage {
    pub name: String,
    pub layout: PathBuf,
    pub reference: Option<PathBuf>,
}

pub struct Corpus {
    pub root: PathBuf,
    pub images: Vec<CorpusImage>,
}

impl Corpus {
    pub fn image(&self, name: &str) -> &CorpusImage {
        self.images
            .iter()
            .find(|i| i.name == name)
            .unwrap_or_else(|| panic!("corpus has no image {name}"))
    }

    pub fn reference(&self, name: &str) -> PathBuf {
        self.root.join("ref").join(name)
    }
}

/// The corpus, built by tests/images/build.sh on first use (it locks, so
/// parallel test processes build it once) and cached across runs.
pub fn corpus() -> &'static Corpus {
    static CORPUS: OnceLock<Corpus> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let root = std::env::var_os("OCIMOUNT_TEST_IMAGES")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(REPO).join("target/test-images"));
        let out = run_bounded(
            Command::new("bash")
                .arg(Path::new(REPO).join("tests/images/build.sh"))
                .arg(&root),
            Duration::from_secs(40 * 60),
        );
        assert!(
            out.status.success(),
            "building the test images failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read(root.join("corpus.json")).expect("corpus.json");
        let list: serde_json::Value = serde_json::from_slice(&text).expect("corpus.json is JSON");
        let images = list
            .as_array()
            .expect("corpus.json is a list")
            .iter()
            .map(|v| CorpusImage {
                name: v["name"].as_str().unwrap().to_string(),
                layout: root.join(v["layout"].as_str().unwrap()),
                reference: v["ref"].as_str().map(|r| root.join(r)),
            })
            .collect();
        Corpus { root, images }
    })
}

/// A mount made by `ocimount mount`, unmounted (and its daemon gone) on
/// drop even when the test failed.
pub struct Mounted {
    pub dir: tempfile::TempDir,
    pub cache: PathBuf,
}

impl Mounted {
    pub fn new(cache: &Path, image: &str, extra: &[&str]) -> Mounted {
        let dir = tempfile::tempdir().unwrap();
        let dir_text = dir.path().to_str().unwrap().to_string();
        let mounted = Mounted {
            dir,
            cache: cache.to_path_buf(),
        };
        let mut args = vec!["mount", image, dir_text.as_str()];
        args.extend_from_slice(extra);
        ok(&ocimount(cache, &args));
        assert!(
            mounted.is_mounted(),
            "mount returned but nothing is mounted"
        );
        mounted
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn is_mounted(&self) -> bool {
        is_mountpoint(self.dir.path())
    }

    /// The daemon's pid, from `ocimount mounts`.
    pub fn daemon_pid(&self) -> u32 {
        let listing = ok(&ocimount(&self.cache, &["mounts"]));
        let dir = self.dir.path().canonicalize().unwrap();
        listing
            .lines()
            .find(|l| l.starts_with(&format!("{}\t", dir.display())))
            .and_then(|l| l.split('\t').nth(2))
            .and_then(|p| p.trim_start_matches("pid ").parse().ok())
            .unwrap_or_else(|| panic!("no daemon for {} in:\n{listing}", dir.display()))
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.is_mounted() {
            let _ = run_bounded(
                Command::new(BIN)
                    .arg("--cache")
                    .arg(&self.cache)
                    .arg("umount")
                    .arg("--lazy")
                    .arg(self.dir.path()),
                Duration::from_secs(30),
            );
        }
        if self.is_mounted() {
            let _ = run_bounded(
                Command::new("umount").arg("-l").arg(self.dir.path()),
                Duration::from_secs(30),
            );
        }
    }
}

pub fn is_mountpoint(dir: &Path) -> bool {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .any(|l| l.split(' ').nth(4) == Some(dir.to_str().unwrap()))
}

pub fn process_alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty()
        && !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
}

/// Wait (bounded) until `cond` holds.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// Extract an `ocimount export` tar the way the README says.
pub fn extract(tar: &Path, into: &Path) {
    let out = run_bounded(
        Command::new("tar")
            .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf"])
            .arg(tar)
            .arg("-C")
            .arg(into),
        Duration::from_secs(600),
    );
    assert!(
        out.status.success(),
        "tar -x failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// (digest, compressed size) of each layer a manifest lists, in order.
pub fn manifest_layers<C: FromIterator<(String, u64)>>(manifest: &serde_json::Value) -> C {
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["digest"].as_str().unwrap().to_string(),
                l["size"].as_u64().unwrap(),
            )
        })
        .collect()
}
