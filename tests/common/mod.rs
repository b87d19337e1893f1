//! Helpers shared by the integration tests: running the binary with a time
//! limit, building OCI layouts from layer bytes, and reading fixtures.
//!
//! Use from a test file with `mod common;`.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// Every command a test runs must finish within this.
pub const TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------- fixtures

/// `tests/fixtures/<rel>`.
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

pub fn read_fixture(rel: &str) -> Vec<u8> {
    let path = fixture(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------- digests

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `sha256:<hex>` of some bytes.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&sha256(bytes)))
}

/// Decompress a layer blob as its media type says (the whole stream; gzip
/// with every member). Panics if the blob does not decode.
pub fn decompress(blob: &[u8], media_type: &str) -> Vec<u8> {
    let mut out = Vec::new();
    if media_type.ends_with("gzip") {
        flate2::read::MultiGzDecoder::new(blob)
            .read_to_end(&mut out)
            .expect("gzip layer decodes");
    } else if media_type.ends_with("zstd") {
        out = zstd::stream::decode_all(blob).expect("zstd layer decodes");
    } else {
        out = blob.to_vec();
    }
    out
}

/// The diff_id (sha256 of the uncompressed tar) of a layer blob.
pub fn diff_id(blob: &[u8], media_type: &str) -> [u8; 32] {
    sha256(&decompress(blob, media_type))
}

/// A layer as `build_layout` takes it: (blob, media type, diff_id).
pub type LayerSpec = (Vec<u8>, &'static str, [u8; 32]);

pub fn plain_layer(tar: &[u8]) -> LayerSpec {
    (tar.to_vec(), OCI_LAYER_TAR, sha256(tar))
}

pub fn gzip_layer(tar: &[u8]) -> LayerSpec {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(tar).unwrap();
    (enc.finish().unwrap(), OCI_LAYER_GZIP, sha256(tar))
}

pub fn zstd_layer(tar: &[u8]) -> LayerSpec {
    (
        zstd::stream::encode_all(tar, 3).unwrap(),
        OCI_LAYER_ZSTD,
        sha256(tar),
    )
}

/// A layer blob used as is, with its diff_id computed from its content.
pub fn layer_as_is(blob: &[u8], media_type: &'static str) -> LayerSpec {
    (blob.to_vec(), media_type, diff_id(blob, media_type))
}

// ---------------------------------------------------------------- layouts

/// The host's platform as an image config spells it (GOARCH names).
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// Write `bytes` as a blob of `layout`; returns its `sha256:` digest.
pub fn write_blob(layout: &Path, bytes: &[u8]) -> String {
    let dir = layout.join("blobs/sha256");
    std::fs::create_dir_all(&dir).unwrap();
    let hex = hex(&sha256(bytes));
    std::fs::write(dir.join(&hex), bytes).unwrap();
    format!("sha256:{hex}")
}

/// Build an OCI image layout holding one image made of `layers` (bottom
/// first), each given as (blob bytes, layer media type, diff_id bytes). The
/// config says linux and the host architecture; index.json has the one
/// manifest, tagged `latest`. The layout is made in a new directory inside
/// `parent` (named after the manifest digest), whose path is returned.
pub fn build_layout<B: AsRef<[u8]>>(parent: &Path, layers: &[(B, &str, [u8; 32])]) -> PathBuf {
    build_layout_for(parent, layers, "linux", host_arch())
}

/// `build_layout` with the config's os and architecture given.
pub fn build_layout_for<B: AsRef<[u8]>>(
    parent: &Path,
    layers: &[(B, &str, [u8; 32])],
    os: &str,
    architecture: &str,
) -> PathBuf {
    let staging = tempfile::Builder::new()
        .prefix(".layout-")
        .tempdir_in(parent)
        .unwrap();
    let root = staging.path();
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for (blob, media_type, diff_id) in layers {
        let blob = blob.as_ref();
        let digest = write_blob(root, blob);
        descs.push(
            serde_json::json!({ "mediaType": media_type, "digest": digest, "size": blob.len() }),
        );
        diff_ids.push(format!("sha256:{}", hex(diff_id)));
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": architecture,
        "os": os,
        "config": {},
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    }))
    .unwrap();
    let config_digest = write_blob(root, &config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len() },
        "layers": descs,
    }))
    .unwrap();
    let manifest_digest = write_blob(root, &manifest);
    write_index(
        root,
        &[serde_json::json!({
            "mediaType": OCI_MANIFEST,
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": { "org.opencontainers.image.ref.name": "latest" },
        })],
    );
    std::fs::write(
        root.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let dest = parent.join(format!("oci-{}", &manifest_digest["sha256:".len()..][..16]));
    if dest.exists() {
        std::fs::remove_dir_all(&dest).unwrap();
    }
    std::fs::rename(staging.keep(), &dest).unwrap();
    dest
}

/// Replace a layout's index.json with these descriptors.
pub fn write_index(layout: &Path, manifests: &[serde_json::Value]) {
    let index =
        serde_json::json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests });
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec_pretty(&index).unwrap(),
    )
    .unwrap();
}

/// index.json of a layout, parsed.
pub fn read_index(layout: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap()
}

/// A blob of a layout, by `sha256:` digest.
pub fn read_blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap()
}

pub fn read_json_blob(layout: &Path, digest: &str) -> serde_json::Value {
    serde_json::from_slice(&read_blob(layout, digest)).unwrap()
}

/// Unpack a tar (an OCI archive, say) into `dest`.
pub fn unpack_tar(tar_bytes: &[u8], dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    tar::Archive::new(tar_bytes).unpack(dest).unwrap();
}

/// The members of a tar, by name (regular files only).
pub fn tar_members(tar_bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut archive = tar::Archive::new(tar_bytes);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        out.push((name, data));
    }
    out
}

/// The layers of a `docker save` tarball, bottom first, from its
/// manifest.json (first image), each with the media type its bytes show.
pub fn docker_save_layers(tar_bytes: &[u8]) -> Vec<LayerSpec> {
    let members = tar_members(tar_bytes);
    let get = |name: &str| {
        members
            .iter()
            .find(|(n, _)| n.trim_start_matches("./") == name)
            .map(|(_, d)| d.clone())
            .unwrap_or_else(|| panic!("docker save tarball has no member {name}"))
    };
    let manifest: serde_json::Value = serde_json::from_slice(&get("manifest.json")).unwrap();
    manifest[0]["Layers"]
        .as_array()
        .expect("manifest.json lists Layers")
        .iter()
        .map(|l| {
            let blob = get(l.as_str().unwrap());
            let media_type = if blob.starts_with(&[0x1f, 0x8b]) {
                OCI_LAYER_GZIP
            } else {
                OCI_LAYER_TAR
            };
            layer_as_is(&blob, media_type)
        })
        .collect()
}

// ---------------------------------------------------------------- running

/// What a finished command left behind.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Run {
    pub fn stdout_str(&self) -> String {
        match String::from_utf8(self.stdout.clone()) {
            Ok(s) => s,
            Err(_) => panic!("stdout is not UTF-8 ({} bytes)", self.stdout.len()),
        }
    }

    /// Exit 0 without a panic; returns stdout's bytes.
    pub fn success(&self) -> &[u8] {
        assert_no_panic(self);
        assert_eq!(
            self.code,
            Some(0),
            "expected success, stderr:\n{}",
            self.stderr
        );
        &self.stdout
    }

    /// Exit 0 without a panic; returns stdout as text.
    pub fn ok(&self) -> String {
        self.success();
        self.stdout_str()
    }

    /// Exit 1 with an `ocimount: error:` message containing every one of
    /// `needles`; returns stderr.
    pub fn fails_with(&self, needles: &[&str]) -> &str {
        assert_no_panic(self);
        assert_eq!(
            self.code,
            Some(1),
            "expected exit 1; stdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&self.stdout),
            self.stderr
        );
        assert!(
            self.stderr.contains("ocimount: error: "),
            "no error line in stderr:\n{}",
            self.stderr
        );
        for needle in needles {
            assert!(
                self.stderr.contains(needle),
                "stderr lacks {needle:?}:\n{}",
                self.stderr
            );
        }
        &self.stderr
    }
}

pub fn assert_no_panic(run: &Run) {
    assert!(
        !run.stderr.contains("panicked"),
        "the command panicked:\n{}",
        run.stderr
    );
    assert!(
        run.code.is_some(),
        "the command was killed by a signal:\n{}",
        run.stderr
    );
    assert_ne!(
        run.code,
        Some(101),
        "exit 101 is a Rust panic:\n{}",
        run.stderr
    );
}

/// Run a program with a time limit; stdout and stderr are collected as it
/// runs. Past `timeout` the process is killed and the test fails.
///
/// One exception, retried once: a child that never became `program`. Under
/// qemu-user a multi-threaded test binary's fork can hang before its exec
/// (both of the child's threads in a futex wait, named after the test
/// thread that forked). That is the emulator's, not ocimount's: the hung
/// process never ran a line of ocimount, and it is started again.
pub fn run_with_timeout<S: AsRef<OsStr>>(program: &Path, args: &[S], timeout: Duration) -> Run {
    match try_run_with_timeout(program, args, timeout) {
        Ok(run) => run,
        Err(hung) if hung.never_started => {
            eprintln!(
                "{} never started (stuck between fork and exec under emulation):\n{}\
                 starting it again",
                program.display(),
                hung.threads
            );
            try_run_with_timeout(program, args, timeout)
                .unwrap_or_else(|hung| hung.fail(program, args, timeout))
        }
        Err(hung) => hung.fail(program, args, timeout),
    }
}

/// A run killed at its time limit.
struct Hung {
    threads: String,
    stdout_len: usize,
    stderr: Vec<u8>,
    /// The child was still the test binary's fork, not `program`.
    never_started: bool,
}

impl Hung {
    fn fail<S: AsRef<OsStr>>(self, program: &Path, args: &[S], timeout: Duration) -> ! {
        let shown: Vec<String> = args
            .iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect();
        panic!(
            "{} {} did not finish within {timeout:?} ({} bytes written to \
             stdout)\nits threads then:\n{}its stderr:\n{}",
            program.display(),
            shown.join(" "),
            self.stdout_len,
            self.threads,
            String::from_utf8_lossy(&self.stderr)
        );
    }
}

fn try_run_with_timeout<S: AsRef<OsStr>>(
    program: &Path,
    args: &[S],
    timeout: Duration,
) -> Result<Run, Hung> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("RUST_BACKTRACE", "1")
        .env_remove("OCIMOUNT_CACHE")
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out_thread = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out_pipe.read_to_end(&mut buf);
        buf
    });
    let err_thread = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err_pipe.read_to_end(&mut buf);
        buf
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > timeout {
            let threads = thread_states(child.id());
            let never_started = !became(child.id(), program);
            let _ = child.kill();
            let _ = child.wait();
            let stdout_len = out_thread.join().map_or(0, |b| b.len());
            let stderr = err_thread.join().unwrap_or_default();
            return Err(Hung {
                threads,
                never_started: never_started && stdout_len == 0 && stderr.is_empty(),
                stdout_len,
                stderr,
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = out_thread.join().unwrap();
    let stderr = String::from_utf8_lossy(&err_thread.join().unwrap()).into_owned();
    Ok(Run {
        code: status.code(),
        stdout,
        stderr,
    })
}

/// Whether process `pid` is running `program`: its name (at most 15
/// bytes) is the program's file name. A fork that has not exec'd yet
/// still bears the name of the thread that forked it.
fn became(pid: u32, program: &Path) -> bool {
    let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) else {
        return true;
    };
    let name = program
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let short: String = name.chars().take(15).collect();
    comm.trim() == short
}

/// Each thread of process `pid` with what it waits in (name and wchan from
/// /proc), one per line: where a hung command stood.
fn thread_states(pid: u32) -> String {
    let read = |p: std::path::PathBuf| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|e| format!("({e})"))
    };
    let mut out = String::new();
    let tasks = Path::new("/proc").join(pid.to_string()).join("task");
    for task in std::fs::read_dir(&tasks).into_iter().flatten().flatten() {
        let p = task.path();
        out += &format!(
            "  {} {} wchan={} state={}\n",
            task.file_name().to_string_lossy(),
            read(p.join("comm")),
            read(p.join("wchan")),
            read(p.join("stat"))
                .rsplit(") ")
                .next()
                .and_then(|rest| rest.split(' ').next())
                .unwrap_or("?")
        );
    }
    out
}

/// Run `ocimount --cache <cache> <args...>` with the standard time limit.
pub fn ocimount<S: AsRef<OsStr>>(cache: &Path, args: &[S]) -> Run {
    let mut all: Vec<&OsStr> = vec![OsStr::new("--cache"), cache.as_os_str()];
    all.extend(args.iter().map(AsRef::as_ref));
    run_with_timeout(Path::new(env!("CARGO_BIN_EXE_ocimount")), &all, TIMEOUT)
}

/// Run `f` on another thread and fail the test if it takes longer than the
/// standard time limit (for library calls that might hang).
pub fn with_timeout<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    });
    match rx.recv_timeout(TIMEOUT) {
        Ok(Ok(v)) => v,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("{what} did not finish within {TIMEOUT:?}"),
    }
}

/// A layout path plus tag as one IMAGE argument.
pub fn image_ref(layout: &Path, tag: Option<&str>) -> String {
    match tag {
        Some(t) => format!("{}:{t}", layout.display()),
        None => layout.display().to_string(),
    }
}
