//! Runtime bundles with real runtimes (CI runs as root, with runc and crun
//! from Debian): `ocimount bundle` and `ocimount run` on real images, what
//! the container process sees (argv, environment, ids, working directory,
//! read-only rootfs, tmpfs volumes, exit status), `config.json` against
//! what `umoci unpack` writes for the same image, and nothing left behind:
//! no mount, no daemon, no file, no container.
//!
//! crun refuses hybrid-cgroup hosts (like CI's) unless it runs in a mount
//! namespace without the cgroup2 mount; `ocimount run --runtime crun` does
//! that itself, and [`runtime_run`] does it here for `bundle` + crun.

mod support;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{corpus, run_bounded, wait_until, BIN, REPO};

const RUN_LIMIT: Duration = Duration::from_secs(180);
const RUNTIMES: [&str; 2] = ["runc", "crun"];
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// ------------------------------------------------------------------ images

fn layout(name: &str) -> String {
    corpus().image(name).layout.to_str().unwrap().to_string()
}

fn sample() -> String {
    format!("{REPO}/sample/image")
}

/// The script that derives test images from the sample image, with umoci
/// (and `umoci unpack` of each as the reference config):
/// `sample:latest` as a single-platform layout, and tags for the user
/// forms and environment rules.
const DERIVE: &str = r#"
set -euo pipefail
SAMPLE=$1 OUT=$2
I=$OUT/img
skopeo --insecure-policy copy -q "oci:$SAMPLE:latest" "oci:$I:latest"
umoci unpack --image "$I:latest" "$OUT/b" >/dev/null
printf 'staff:x:50:app\nwheel:x:10:root,app\n' >>"$OUT/b/rootfs/etc/group"
umoci repack --image "$I:groups" "$OUT/b"
rm -rf "$OUT/b"
umoci config --image "$I:latest" --tag nosuch --config.user nosuchuser
umoci config --image "$I:latest" --tag numeric --config.user 4242
umoci config --image "$I:latest" --tag explicit --config.user nobody:app
umoci config --image "$I:latest" --tag envs --config.user root \
  --config.env PATH=/bin:/usr/bin --config.env HOME=/custom --config.env EMPTY=
for tag in latest groups numeric explicit envs; do
  umoci unpack --image "$I:$tag" "$OUT/u" >/dev/null
  mv "$OUT/u/config.json" "$OUT/$tag.config.json"
  umoci unpack --rootless --image "$I:$tag" "$OUT/u-rootless" >/dev/null
  mv "$OUT/u-rootless/config.json" "$OUT/$tag.rootless.config.json"
  rm -rf "$OUT/u" "$OUT/u-rootless"
done
"#;

/// The derived images, built once per version of the script and sample,
/// cached under target/ like the corpus.
fn derived() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let index = std::fs::read(format!("{}/index.json", sample())).unwrap();
        let stamp = ocimount::Digest::of(&[DERIVE.as_bytes(), &index].concat()).short();
        let root = Path::new(REPO).join("target/test-images-bundle");
        let out = root.join(&stamp);
        if out.join(".complete").exists() {
            return out;
        }
        std::fs::create_dir_all(&root).unwrap();
        let tmp = root.join(format!("{stamp}.tmp.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).unwrap();
        let result = run_bounded(
            Command::new("bash")
                .arg("-c")
                .arg(DERIVE)
                .arg("derive")
                .arg(sample())
                .arg(&tmp),
            Duration::from_secs(300),
        );
        assert!(
            result.status.success(),
            "deriving test images failed: {}",
            String::from_utf8_lossy(&result.stderr)
        );
        std::fs::write(tmp.join(".complete"), b"").unwrap();
        if std::fs::rename(&tmp, &out).is_err() {
            let _ = std::fs::remove_dir_all(&tmp); // built by another process
        }
        out
    })
}

fn derived_image(tag: &str) -> String {
    format!("{}/img:{tag}", derived().display())
}

fn derived_reference(tag: &str, rootless: bool) -> Value {
    let name = if rootless {
        format!("{tag}.rootless.config.json")
    } else {
        format!("{tag}.config.json")
    };
    read_json(&derived().join(name))
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The image config's Env, as `ocimount inspect` reports it.
fn image_env(cache: &Path, image: &str) -> Vec<String> {
    let out = ocimount_ok(cache, &["inspect", image, "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v["runtime"]["Env"]
        .as_array()
        .map(|a| a.iter().map(|e| e.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

// ------------------------------------------------------ processes, checks

fn ocimount_cmd(cache: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("--cache").arg(cache);
    cmd
}

fn ocimount_out(cache: &Path, args: &[&str]) -> Output {
    let out = run_bounded(ocimount_cmd(cache).args(args), RUN_LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "ocimount panicked: {stderr}");
    out
}

fn ocimount_ok(cache: &Path, args: &[&str]) -> String {
    let out = ocimount_out(cache, args);
    assert!(
        out.status.success(),
        "ocimount {args:?} failed ({:?}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Mount points at or under `dir`, from /proc/self/mountinfo.
fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_str().unwrap();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| *m == dir || m.starts_with(&format!("{dir}/")))
        .map(str::to_string)
        .collect()
}

/// Live processes whose command line mentions `text` (an ocimount daemon
/// serving a mount under our directory has it in its arguments).
fn processes_mentioning(text: &str) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(text) && support::process_alive(pid) {
            out.push((pid, cmdline));
        }
    }
    out
}

/// Containers the runtime still knows by `id`.
fn runtime_knows(runtime: &str, id: &str) -> bool {
    let out = run_bounded(Command::new(runtime).arg("list"), Duration::from_secs(30));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.split_whitespace().next() == Some(id))
}

/// A scratch directory for one test (its cache, its TMPDIR for `run`, its
/// bundles). On drop, whatever a failed test left is taken down: mounts
/// detached, our daemons stopped, containers deleted, files removed.
struct Scratch {
    dir: tempfile::TempDir,
    containers: Vec<(String, String)>,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().unwrap(),
            containers: Vec::new(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn cache(&self) -> PathBuf {
        self.path().join("cache")
    }

    /// The TMPDIR `ocimount run` makes its bundle in.
    fn tmp(&self) -> PathBuf {
        let t = self.path().join("tmp");
        std::fs::create_dir_all(&t).unwrap();
        t
    }

    /// A container ID unique to this test, deleted on drop.
    fn container(&mut self, runtime: &str) -> String {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("ocimount-test-{}-{n}", std::process::id());
        self.containers.push((runtime.to_string(), id.clone()));
        id
    }

    /// `ocimount run ARGS` with TMPDIR inside the scratch directory.
    fn run(&self, args: &[&str]) -> Output {
        let out = run_bounded(
            ocimount_cmd(&self.cache())
                .env("TMPDIR", self.tmp())
                .arg("run")
                .args(args),
            RUN_LIMIT,
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "ocimount panicked: {stderr}");
        out
    }

    /// After a run: TMPDIR is empty, nothing is mounted under the scratch
    /// directory, no daemon serves anything in it, no container is left.
    fn assert_clean(&self) {
        let leftovers: Vec<_> = std::fs::read_dir(self.tmp())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(leftovers.is_empty(), "stray files: {leftovers:?}");
        assert_eq!(
            mounts_under(self.path()),
            Vec::<String>::new(),
            "mounts left"
        );
        let text = self.path().to_str().unwrap().to_string();
        assert!(
            wait_until(Duration::from_secs(15), || processes_mentioning(&text)
                .is_empty()),
            "daemons left: {:?}",
            processes_mentioning(&text)
        );
        for (runtime, id) in &self.containers {
            assert!(!runtime_knows(runtime, id), "{runtime} still has {id}");
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for (runtime, id) in &self.containers {
            let _ = run_bounded(
                Command::new(runtime).args(["delete", "--force", id]),
                Duration::from_secs(30),
            );
        }
        for m in mounts_under(self.path()).into_iter().rev() {
            let _ = run_bounded(
                Command::new("umount").arg("-l").arg(&m),
                Duration::from_secs(30),
            );
        }
        for (pid, _) in processes_mentioning(self.path().to_str().unwrap()) {
            // SAFETY: signalling a daemon this test started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

/// `RUNTIME run -b BUNDLE ID`, crun inside a mount namespace without the
/// cgroup2 mount (this host has hybrid cgroups).
fn runtime_run(runtime: &str, bundle: &Path, id: &str) -> Output {
    let mut cmd = if runtime == "crun" {
        let mut c = Command::new("unshare");
        c.args([
            "-m",
            "sh",
            "-c",
            "umount /sys/fs/cgroup/unified 2>/dev/null; exec crun run -b \"$1\" \"$2\"",
            "sh",
        ]);
        c
    } else {
        let mut c = Command::new("runc");
        c.args(["run", "-b"]);
        c
    };
    cmd.arg(bundle).arg(id);
    run_bounded(&mut cmd, RUN_LIMIT)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `key=value` lines printed by [`PROBE`].
fn probe_field(out: &Output, key: &str) -> String {
    let text = stdout(out);
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in output:\n{text}\nstderr:\n{}", stderr(out)))
        .to_string()
}

/// What the container's process sees, one `key=value` line each; it then
/// exits 7. pid 1 is the shell running this, so /proc/1 shows the argv and
/// environment the runtime gave it, before any shell changes.
const PROBE: &str = r#"printf '%s\n' "argv=$(tr '\0\n' '|~' </proc/1/cmdline)"
printf '%s\n' "environ=$(tr '\0\n' '|~' </proc/1/environ)"
echo "id=$(id)"
echo "pwd=$(pwd)"
t=$(touch /probe-file 2>&1); echo "touch=$t rc=$?"
echo "nnp=$(grep NoNewPrivs /proc/self/status | tr -d '[:space:]')"
echo "rootmount=$(grep -E '^[^ ]+ / ' /proc/mounts | head -n1)"
echo "data=$(grep ' /data ' /proc/mounts)"
echo "write=$( (echo written >/data/probe && cat /data/probe) 2>&1)"
exit 7"#;

/// `items` as PROBE prints an argv or environment: NUL-terminated, as `|`,
/// with newlines as `~`.
fn joined(items: &[&str]) -> String {
    items
        .iter()
        .map(|s| format!("{}|", s.replace('\n', "~")))
        .collect()
}

// --------------------------------------------------- config.json vs umoci

/// Turn our config.json into what umoci writes, undoing only the
/// differences docs/containers.md documents ("The conversion").
fn as_umoci_would(ours: &Value, home_from_passwd: Option<&str>) -> Value {
    let mut v = ours.clone();
    let p = &mut v["process"];
    // 1. terminal: false unless --tty (umoci: always true) ...
    assert_eq!(p["terminal"], json!(false));
    p["terminal"] = json!(true);
    // ... and so TERM=xterm only with --tty (umoci: always, second).
    let env = p["env"].as_array_mut().unwrap();
    assert!(!env.iter().any(|e| e.as_str().unwrap().starts_with("TERM=")));
    env.insert(1, json!("TERM=xterm"));
    // 2. HOME from the image's Env is kept (umoci: passwd's home wins).
    if let Some(home) = home_from_passwd {
        for e in env.iter_mut() {
            if e.as_str().unwrap().starts_with("HOME=") {
                *e = json!(format!("HOME={home}"));
            }
        }
    }
    // 3. noNewPrivileges: false, so setuid programs on the suid rootfs work.
    assert_eq!(p["noNewPrivileges"], json!(false));
    p["noNewPrivileges"] = json!(true);
    // 4. root.readonly: true (umoci: false, omitted).
    assert_eq!(v["root"]["readonly"], json!(true));
    v["root"].as_object_mut().unwrap().remove("readonly");
    // 5. hostname.
    assert_eq!(v["hostname"], json!("ocimount"));
    v["hostname"] = json!("umoci-default");
    // 6. a volume's tmpfs gets the owner and mode of the image's directory.
    for m in v["mounts"].as_array_mut().unwrap() {
        if m["source"] == json!("none") {
            let opts = m["options"].as_array_mut().unwrap();
            opts.retain(|o| {
                let o = o.as_str().unwrap();
                !(o.starts_with("mode=") || o.starts_with("uid=") || o.starts_with("gid="))
            });
        }
    }
    // 7. the variant annotation (umoci 0.4.7 has none).
    v["annotations"]
        .as_object_mut()
        .unwrap()
        .remove("org.opencontainers.image.variant");
    v
}

/// The rootless differences on top: the process runs as 0:0 (the only
/// mapped id; umoci keeps the image's user, which runc then cannot set),
/// and the resolv.conf bind repeats the host mount's locked flags.
fn rootless_as_umoci_would(ours: &Value, umoci: &Value, home_from_passwd: Option<&str>) -> Value {
    let mut v = as_umoci_would(ours, home_from_passwd);
    assert_eq!(v["process"]["user"], json!({"uid": 0, "gid": 0}));
    v["process"]["user"] = umoci["process"]["user"].clone();
    for m in v["mounts"].as_array_mut().unwrap() {
        if m["destination"] == json!("/etc/resolv.conf") {
            m["options"] = json!(["rbind", "ro"]);
        }
    }
    v
}

fn assert_same_json(ours: &Value, umoci: &Value, what: &str) {
    if ours != umoci {
        let mut diffs = Vec::new();
        diff(ours, umoci, String::new(), &mut diffs);
        panic!(
            "{what}: config.json differs from umoci's beyond the documented differences:\n  {}",
            diffs.join("\n  ")
        );
    }
}

fn diff(a: &Value, b: &Value, path: String, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for k in x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))) {
                diff(
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    format!("{path}/{k}"),
                    out,
                );
            }
        }
        _ if a != b => out.push(format!("{path}: ours {a}, umoci {b}")),
        _ => {}
    }
}

/// `ocimount bundle IMAGE` (with `extra` flags) → its config.json; the
/// bundle is removed again and must leave nothing.
fn bundle_config(scratch: &Scratch, image: &str, extra: &[&str]) -> Value {
    let dir = scratch.path().join("bundle");
    let dir_text = dir.to_str().unwrap();
    let mut args = vec!["bundle", image, dir_text];
    args.extend_from_slice(extra);
    ocimount_ok(&scratch.cache(), &args);
    let config = read_json(&dir.join("config.json"));
    ocimount_ok(&scratch.cache(), &["bundle", "--remove", dir_text]);
    assert!(!dir.exists(), "bundle --remove left {}", dir.display());
    assert_eq!(mounts_under(scratch.path()), Vec::<String>::new());
    config
}

#[test]
fn config_equals_umoci_for_the_corpus_images() {
    let scratch = Scratch::new();
    let refs = corpus().root.join("ref");
    for (image, reference, extra) in [
        (layout("debian-gzip"), "debian-gzip", vec![]),
        (layout("tiny-opaque"), "tiny-opaque", vec![]),
        (
            layout("multiarch"),
            "multiarch-amd64",
            vec!["--platform", "linux/amd64"],
        ),
        (
            layout("multiarch"),
            "multiarch-arm64",
            vec!["--platform", "linux/arm64"],
        ),
    ] {
        let ours = bundle_config(&scratch, &image, &extra);
        let umoci = read_json(&refs.join(format!("{reference}.config.json")));
        assert_same_json(&as_umoci_would(&ours, None), &umoci, reference);
    }
}

#[test]
fn config_equals_umoci_for_users_groups_and_env() {
    let scratch = Scratch::new();
    for (tag, home_from_passwd) in [
        ("latest", None),
        ("groups", None),
        ("numeric", None),
        ("explicit", None),
        ("envs", Some("/root")),
    ] {
        let ours = bundle_config(&scratch, &derived_image(tag), &[]);
        let umoci = derived_reference(tag, false);
        assert_same_json(&as_umoci_would(&ours, home_from_passwd), &umoci, tag);
    }
    // The facts behind those comparisons, spelled out.
    let groups = bundle_config(&scratch, &derived_image("groups"), &[]);
    assert_eq!(
        groups["process"]["user"],
        json!({"uid": 1000, "gid": 1000, "additionalGids": [50, 10]})
    );
    let numeric = bundle_config(&scratch, &derived_image("numeric"), &[]);
    assert_eq!(numeric["process"]["user"], json!({"uid": 4242, "gid": 0}));
    assert!(!numeric["process"]["env"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e.as_str().unwrap().starts_with("HOME=")));
    let envs = bundle_config(&scratch, &derived_image("envs"), &[]);
    assert_eq!(
        envs["process"]["env"],
        json!([
            "PATH=/bin:/usr/bin",
            format!("OCIMOUNT_SAMPLE_PLATFORM={}", platform_of_sample(&scratch)),
            "HOME=/custom",
            "EMPTY="
        ])
    );
}

fn platform_of_sample(scratch: &Scratch) -> String {
    image_env(&scratch.cache(), &sample())
        .iter()
        .find_map(|e| {
            e.strip_prefix("OCIMOUNT_SAMPLE_PLATFORM=")
                .map(str::to_string)
        })
        .unwrap()
}

#[test]
fn rootless_config_equals_umoci_rootless() {
    let scratch = Scratch::new();
    for (tag, home_from_passwd) in [("latest", None), ("envs", Some("/root"))] {
        let ours = bundle_config(&scratch, &derived_image(tag), &["--rootless"]);
        let umoci = derived_reference(tag, true);
        assert_same_json(
            &rootless_as_umoci_would(&ours, &umoci, home_from_passwd),
            &umoci,
            &format!("{tag} --rootless"),
        );
        // Spelled out: the caller is root in a user namespace, the host's
        // network, /sys bind-mounted, no cgroup settings.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        assert_eq!(
            ours["linux"]["uidMappings"],
            json!([{"containerID": 0, "hostID": uid, "size": 1}])
        );
        assert_eq!(
            ours["linux"]["gidMappings"],
            json!([{"containerID": 0, "hostID": gid, "size": 1}])
        );
        let namespaces: Vec<&str> = ours["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(namespaces, ["pid", "ipc", "uts", "mount", "user"]);
        assert!(ours["linux"].get("resources").is_none());
        let sys: Vec<&Value> = ours["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["destination"].as_str().unwrap().starts_with("/sys"))
            .collect();
        assert_eq!(sys.len(), 1, "{sys:?}");
        assert_eq!(sys[0]["type"], json!("bind"));
        assert_eq!(sys[0]["source"], json!("/sys"));
    }
}

#[test]
fn tty_sets_terminal_and_term() {
    let scratch = Scratch::new();
    let config = bundle_config(&scratch, &layout("debian-gzip"), &["--tty"]);
    assert_eq!(config["process"]["terminal"], json!(true));
    assert_eq!(
        config["process"]["env"],
        json!([DEFAULT_PATH, "TERM=xterm", "HOME=/root"])
    );
}

// --------------------------------------------------------- real containers

/// The sample image (User app, WorkingDir /srv/app, Env, volume /data, no
/// /proc /dev /sys of its own) run by `ocimount run` with each runtime.
#[test]
fn run_sample_with_runc_and_crun() {
    for runtime in RUNTIMES {
        let mut scratch = Scratch::new();
        let id = scratch.container(runtime);
        let platform = platform_of_sample(&scratch);

        // No command: Entrypoint ++ Cmd as the image says.
        let out = scratch.run(&["--runtime", runtime, "--name", &id, &sample()]);
        assert!(out.status.success(), "{runtime}: {}", stderr(&out));
        assert_eq!(
            stdout(&out),
            format!("motd from layer 2 ({platform})\n{platform}\n"),
            "{runtime}: {}",
            stderr(&out)
        );
        scratch.assert_clean();

        // A command replaces Cmd; the Entrypoint (/bin/sh -c) stays.
        let out = scratch.run(&["--runtime", runtime, "--name", &id, &sample(), "--", PROBE]);
        assert_eq!(out.status.code(), Some(7), "{runtime}: {}", stderr(&out));
        assert_eq!(probe_field(&out, "argv"), joined(&["/bin/sh", "-c", PROBE]));
        assert_eq!(
            probe_field(&out, "environ"),
            joined(&[
                DEFAULT_PATH,
                &format!("OCIMOUNT_SAMPLE_PLATFORM={platform}"),
                "HOME=/home/app"
            ]),
            "{runtime}"
        );
        assert_eq!(probe_field(&out, "id"), "uid=1000(app) gid=1000(app)");
        assert_eq!(probe_field(&out, "pwd"), "/srv/app");
        assert_eq!(
            probe_field(&out, "touch"),
            "touch: /probe-file: Read-only file system rc=1"
        );
        assert_eq!(probe_field(&out, "nnp"), "NoNewPrivs:0");
        let data = probe_field(&out, "data");
        assert!(
            data.starts_with("none /data tmpfs rw,nosuid,nodev,noexec,relatime"),
            "{runtime}: {data}"
        );
        assert_eq!(probe_field(&out, "write"), "written");
        scratch.assert_clean();
    }
}

/// The Debian image (bash as Cmd, root, no WorkingDir), the command given
/// in full after `--`, with each runtime.
#[test]
fn run_debian_with_runc_and_crun() {
    for runtime in RUNTIMES {
        let mut scratch = Scratch::new();
        let id = scratch.container(runtime);
        let out = scratch.run(&[
            "--runtime",
            runtime,
            "--name",
            &id,
            &layout("debian-gzip"),
            "--",
            "/bin/sh",
            "-c",
            PROBE,
            "arg one",
            "-two",
        ]);
        assert_eq!(out.status.code(), Some(7), "{runtime}: {}", stderr(&out));
        assert_eq!(
            probe_field(&out, "argv"),
            joined(&["/bin/sh", "-c", PROBE, "arg one", "-two"])
        );
        assert_eq!(
            probe_field(&out, "environ"),
            joined(&[DEFAULT_PATH, "HOME=/root"])
        );
        assert_eq!(
            probe_field(&out, "id"),
            "uid=0(root) gid=0(root) groups=0(root)"
        );
        assert_eq!(probe_field(&out, "pwd"), "/");
        assert_eq!(
            probe_field(&out, "touch"),
            "touch: cannot touch '/probe-file': Read-only file system rc=1"
        );
        // The rootfs is the read-only, suid FUSE mount, and setuid works.
        let root = probe_field(&out, "rootmount");
        assert!(
            root.contains(" fuse.ocimount ") && root.contains(" ro,"),
            "{root}"
        );
        assert!(!root.contains("nosuid"), "{root}");
        assert_eq!(probe_field(&out, "nnp"), "NoNewPrivs:0");
        scratch.assert_clean();
    }
}

#[test]
fn exit_codes_are_propagated() {
    for runtime in RUNTIMES {
        let scratch = Scratch::new();
        for code in [0, 1, 7, 255] {
            let script = format!("exit {code}");
            let out = scratch.run(&["--runtime", runtime, &sample(), "--", &script]);
            assert_eq!(out.status.code(), Some(code), "{runtime}: {}", stderr(&out));
        }
        // --entrypoint replaces the Entrypoint and drops the Cmd.
        let out = scratch.run(&[
            "--runtime",
            runtime,
            "--entrypoint",
            "/bin/false",
            &sample(),
        ]);
        assert_eq!(out.status.code(), Some(1), "{runtime}: {}", stderr(&out));
        scratch.assert_clean();
    }
}

/// Supplementary groups, explicit groups and numeric users, as processes
/// see them.
#[test]
fn users_and_groups_in_a_real_container() {
    let scratch = Scratch::new();
    for (tag, expected) in [
        (
            "groups",
            "uid=1000(app) gid=1000(app) groups=10(wheel),50(staff)",
        ),
        ("numeric", "uid=4242 gid=0(root)"),
        ("explicit", "uid=65534(nobody) gid=1000(app)"),
    ] {
        let out = scratch.run(&[&derived_image(tag), "--", "id"]);
        assert!(out.status.success(), "{tag}: {}", stderr(&out));
        assert_eq!(stdout(&out).trim(), expected, "{tag}");
    }
    // The numeric user has no passwd entry: no HOME; the image's own HOME
    // wins over passwd's.
    let out = scratch.run(&[
        &derived_image("numeric"),
        "--",
        "tr '\\0' '\\n' </proc/1/environ",
    ]);
    assert!(!stdout(&out).contains("HOME="), "{}", stdout(&out));
    let out = scratch.run(&[&derived_image("envs"), "--", "echo $HOME $PATH $EMPTY."]);
    assert_eq!(stdout(&out), "/custom /bin:/usr/bin .\n");
    scratch.assert_clean();
}

#[test]
fn unknown_user_is_a_clear_error() {
    let scratch = Scratch::new();
    let dir = scratch.path().join("bundle");
    let out = ocimount_out(
        &scratch.cache(),
        &["bundle", &derived_image("nosuch"), dir.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1));
    // The message is the last line and the only error (nothing was mounted,
    // so nothing else is said).
    let err = stderr(&out);
    assert_eq!(
        err.lines().last(),
        Some(
            "ocimount: error: User \"nosuchuser\" of the image config: \
             no user \"nosuchuser\" in the image's /etc/passwd"
        ),
        "{err}"
    );
    assert_eq!(err.matches("error").count(), 1, "{err}");
    assert!(!err.contains("mounted"), "{err}");
    assert!(!dir.exists(), "a failed bundle left {}", dir.display());
    let out = scratch.run(&[&derived_image("nosuch"), "--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no user \"nosuchuser\" in the image's /etc/passwd"),
        "{}",
        stderr(&out)
    );
    scratch.assert_clean();
}

// ----------------------------------------------- bundle + runtime directly

/// `ocimount bundle`, then `runc run -b` / `crun run -b` as a user would,
/// then `ocimount bundle --remove`: the runtime sees the image's config,
/// and nothing is left.
#[test]
fn bundle_then_runtime_then_remove() {
    for runtime in RUNTIMES {
        let mut scratch = Scratch::new();
        let dir = scratch.path().join("bundle");
        let dir_text = dir.to_str().unwrap();
        ocimount_ok(&scratch.cache(), &["bundle", &sample(), dir_text]);
        let rootfs = dir.join("rootfs");
        assert_eq!(mounts_under(&dir), [rootfs.to_str().unwrap()]);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                ".ocimount-bundle",
                ".ocimount-image",
                "config.json",
                "rootfs"
            ]
        );
        // The rootfs the runtime gets: read-only, suid, nodev, allow_other.
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let line = info
            .lines()
            .find(|l| l.split(' ').nth(4) == rootfs.to_str())
            .unwrap();
        assert!(line.contains(" ro,nodev,noatime "), "{line}");
        assert!(line.contains("allow_other"), "{line}");
        // The mount points the image lacks exist, nothing else changed.
        for p in ["proc", "dev", "sys"] {
            assert!(rootfs.join(p).is_dir(), "{p}");
        }
        assert_eq!(
            std::fs::read_to_string(rootfs.join("srv/app/hello.txt")).unwrap(),
            std::str::from_utf8(
                &ocimount_out(&scratch.cache(), &["cat", &sample(), "/srv/app/hello.txt"]).stdout
            )
            .unwrap()
        );

        let id = scratch.container(runtime);
        let out = runtime_run(runtime, &dir, &id);
        let platform = platform_of_sample(&scratch);
        assert!(out.status.success(), "{runtime}: {}", stderr(&out));
        assert_eq!(
            stdout(&out),
            format!("motd from layer 2 ({platform})\n{platform}\n")
        );

        ocimount_ok(&scratch.cache(), &["bundle", "--remove", dir_text]);
        assert!(!dir.exists(), "{} left", dir.display());
        assert_eq!(mounts_under(scratch.path()), Vec::<String>::new());
        scratch.assert_clean();
    }
}

#[test]
fn remove_takes_only_what_bundle_created() {
    let scratch = Scratch::new();
    // An existing empty directory is used, and kept, with the user's file.
    let dir = scratch.path().join("mine");
    std::fs::create_dir(&dir).unwrap();
    let dir_text = dir.to_str().unwrap();
    ocimount_ok(
        &scratch.cache(),
        &["bundle", &layout("debian-gzip"), dir_text],
    );
    std::fs::write(dir.join("notes.txt"), "the user's").unwrap();
    let out = ocimount_out(&scratch.cache(), &["bundle", "--remove", dir_text]);
    assert!(out.status.success(), "{}", stderr(&out));
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["notes.txt"]);
    assert_eq!(mounts_under(scratch.path()), Vec::<String>::new());

    // A directory bundle created, holding a user's file: kept, and said so.
    let dir = scratch.path().join("made");
    let dir_text = dir.to_str().unwrap();
    ocimount_ok(
        &scratch.cache(),
        &["bundle", &layout("debian-gzip"), dir_text],
    );
    std::fs::write(dir.join("notes.txt"), "the user's").unwrap();
    let out = ocimount_out(&scratch.cache(), &["bundle", "--remove", dir_text]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("kept"), "{}", stderr(&out));
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["notes.txt"]);

    // No marker: refused, untouched.
    let out = ocimount_out(&scratch.cache(), &["bundle", "--remove", dir_text]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "ocimount: error: {dir_text}: not a bundle made by `ocimount bundle` \
             (no .ocimount-bundle in it); nothing was removed\n"
        )
    );
    assert!(dir.join("notes.txt").exists());

    // A non-empty directory is not a place for a bundle.
    let out = ocimount_out(
        &scratch.cache(),
        &["bundle", &layout("debian-gzip"), dir_text],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("is not empty"), "{}", stderr(&out));
    assert_eq!(mounts_under(scratch.path()), Vec::<String>::new());
    assert!(dir.join("notes.txt").exists());
}

/// A busy rootfs (a process inside it) makes --remove fail and remove
/// nothing; --lazy detaches it anyway.
#[test]
fn remove_of_a_busy_bundle() {
    let scratch = Scratch::new();
    let dir = scratch.path().join("bundle");
    let dir_text = dir.to_str().unwrap();
    ocimount_ok(
        &scratch.cache(),
        &["bundle", &layout("debian-gzip"), dir_text],
    );
    let mut holder = Command::new("sleep")
        .arg("600")
        .current_dir(dir.join("rootfs"))
        .spawn()
        .unwrap();
    let out = ocimount_out(&scratch.cache(), &["bundle", "--remove", dir_text]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("busy"), "{}", stderr(&out));
    assert!(dir.join("config.json").exists());
    assert_eq!(mounts_under(&dir).len(), 1);
    let out = ocimount_out(
        &scratch.cache(),
        &["bundle", "--remove", dir_text, "--lazy"],
    );
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!dir.exists());
    assert_eq!(mounts_under(scratch.path()), Vec::<String>::new());
}

// --------------------------------------------------------------- rootless

/// A rootless spec run by runc (as root here: the caller's id is 0): a
/// user namespace mapping only the caller, the host's network namespace.
#[test]
fn rootless_run_as_root() {
    let scratch = Scratch::new();
    let host_net = std::fs::read_link("/proc/self/ns/net").unwrap();
    let out = scratch.run(&[
        "--rootless",
        &sample(),
        "--",
        "id; cat /proc/self/uid_map; readlink /proc/self/ns/net; grep ' /sys ' /proc/mounts",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "uid=0(root) gid=0(root)");
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["0", "0", "1"]
    );
    assert_eq!(lines[2], host_net.to_str().unwrap());
    assert!(lines[3].contains(" /sys sysfs ro,"), "{}", lines[3]);
    assert!(
        stderr(&out).contains("a rootless container has only one id"),
        "{}",
        stderr(&out)
    );
    scratch.assert_clean();
}

/// The same as an unprivileged user (nobody), on a host that lets one use
/// FUSE (/dev/fuse rw for others, as Debian's udev rules make it).
#[test]
fn rootless_run_as_an_unprivileged_user() {
    use std::os::unix::fs::MetadataExt;
    // This machine's /dev/fuse is 0600. Rather than open the host's device
    // to everyone while other tests run, the run gets a mount namespace of
    // its own in which a 0666 node of the same device covers /dev/fuse.
    let scratch = Scratch::new();
    let rdev = std::fs::metadata("/dev/fuse").unwrap().rdev();
    let node = scratch.path().join("fuse-0666");
    let made = run_bounded(
        Command::new("mknod")
            .args(["-m", "666"])
            .arg(&node)
            .arg("c")
            .arg(libc::major(rdev).to_string())
            .arg(libc::minor(rdev).to_string()),
        RUN_LIMIT,
    );
    assert!(made.status.success(), "{}", stderr(&made));
    let home = scratch.path().join("home");
    std::fs::create_dir(&home).unwrap();
    for p in [scratch.path().to_path_buf(), home.clone(), scratch.tmp()] {
        let _ = std::os::unix::fs::chown(&p, Some(65534), Some(65534));
    }
    let out = run_bounded(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount --bind "$0" /dev/fuse && exec "$@""#)
            .arg(&node)
            .arg("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "env",
                "-i",
            ])
            .arg("PATH=/usr/sbin:/usr/bin:/sbin:/bin")
            .arg(format!("HOME={}", home.display()))
            .arg(format!("TMPDIR={}", scratch.tmp().display()))
            .arg(BIN)
            .arg("--cache")
            .arg(home.join("cache"))
            .args(["run", &sample(), "--"])
            .arg("id; cat /proc/self/uid_map; echo x >/data/f && cat /data/f; exit 3"),
        RUN_LIMIT,
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "uid=0(root) gid=0(root)");
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["0", "65534", "1"]
    );
    assert_eq!(lines[2], "x");
    scratch.assert_clean();
}

// ----------------------------------------------------------------- signals

/// Start `ocimount run` in the background and wait for the container to
/// print `ready`.
fn start_ready(scratch: &Scratch, args: &[&str]) -> std::process::Child {
    let mut child = ocimount_cmd(&scratch.cache())
        .env("TMPDIR", scratch.tmp())
        .arg("run")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + RUN_LIMIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line == "ready" => return child,
            Ok(_) => continue,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the container never said ready");
            }
        }
    }
}

fn wait_bounded(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ocimount run did not exit within {limit:?} of the signal");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM to `ocimount run` goes to the container; it exits by its trap,
/// and everything is cleaned up.
#[test]
fn sigterm_is_forwarded_and_cleaned_up() {
    for runtime in RUNTIMES {
        let mut scratch = Scratch::new();
        let id = scratch.container(runtime);
        let mut child = start_ready(
            &scratch,
            &[
                "--runtime",
                runtime,
                "--name",
                &id,
                &sample(),
                "--",
                "trap 'exit 42' TERM; echo ready; sleep 600 & wait",
            ],
        );
        assert!(runtime_knows(runtime, &id));
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = wait_bounded(&mut child, Duration::from_secs(60));
        assert_eq!(status.code(), Some(42), "{runtime}");
        scratch.assert_clean();
    }
}

/// A container that ignores SIGTERM (pid 1 without a handler) is killed
/// by a second signal; the exit status says SIGKILL; nothing is left.
#[test]
fn a_second_signal_kills_the_container() {
    let mut scratch = Scratch::new();
    let id = scratch.container("runc");
    let mut child = start_ready(
        &scratch,
        &["--name", &id, &sample(), "--", "echo ready; exec sleep 600"],
    );
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    std::thread::sleep(Duration::from_millis(500));
    assert!(child.try_wait().unwrap().is_none(), "pid 1 ignores SIGTERM");
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = wait_bounded(&mut child, Duration::from_secs(60));
    assert_eq!(status.code(), Some(128 + libc::SIGKILL));
    scratch.assert_clean();
}

/// `--name` of a container that exists is refused, and that container is
/// left alone (clean-up deletes containers by ID).
#[test]
fn a_taken_container_id_is_refused() {
    let mut scratch = Scratch::new();
    let id = scratch.container("runc");
    let mut first = start_ready(
        &scratch,
        &["--name", &id, &sample(), "--", "echo ready; exec sleep 600"],
    );
    let out = scratch.run(&["--name", &id, &sample(), "--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).ends_with(&format!(
            "ocimount: error: {id}: runc already has a container with this ID\n"
        )),
        "{}",
        stderr(&out)
    );
    assert!(
        runtime_knows("runc", &id),
        "the first container was deleted"
    );
    assert!(first.try_wait().unwrap().is_none());
    // SAFETY: signalling our own child, twice: pid 1 ignores the first.
    unsafe { libc::kill(first.id() as i32, libc::SIGTERM) };
    std::thread::sleep(Duration::from_millis(300));
    unsafe { libc::kill(first.id() as i32, libc::SIGTERM) };
    let status = wait_bounded(&mut first, Duration::from_secs(60));
    assert_eq!(status.code(), Some(128 + libc::SIGKILL));
    scratch.assert_clean();
}
