//! `ocimount run IMAGE [CMD…]`: a bundle in a temporary directory, run with
//! runc or crun in the foreground, the container's exit status as ours, and
//! everything removed afterwards, on error and on SIGINT/SIGTERM/SIGHUP too
//! (like `docker run --rm` for one command).

use std::ffi::OsString;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Args, ValueEnum};

use crate::bundle::{self, BundleOptions};
use crate::cli::mount::FillArgs;
use crate::error::{Error, IoContext, Result};
use crate::oci::Platform;
use crate::rootfs::OpenOptions;
use crate::serve::DaemonArgv;

/// How long `RUNTIME delete --force` may take during clean-up.
const DELETE_TIMEOUT: Duration = Duration::from_secs(30);
/// crun refuses hybrid cgroup hosts while this cgroup2 mount is visible.
const HYBRID_CGROUP2: &str = "/sys/fs/cgroup/unified";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Runtime {
    Runc,
    Crun,
}

impl Runtime {
    fn name(self) -> &'static str {
        match self {
            Runtime::Runc => "runc",
            Runtime::Crun => "crun",
        }
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The image: PATH[:TAG|@sha256:DIGEST] (optionally oci:PATH…),
    /// oci-archive:FILE[:TAG], docker-archive:FILE[:REPO:TAG], an archive FILE,
    /// or docker://[HOST[:PORT]/]REPO[:TAG|@sha256:DIGEST]
    #[arg(value_name = "IMAGE")]
    pub image: String,
    /// Platform to use instead of the host's, as os/arch[/variant]
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// The OCI runtime to run the bundle with
    #[arg(long, value_enum, default_value = "runc")]
    pub runtime: Runtime,
    /// Replace the image's Entrypoint ("" clears it); the image's Cmd is then
    /// dropped too, as in `docker run --entrypoint`
    #[arg(long, value_name = "PROGRAM")]
    pub entrypoint: Option<String>,
    /// Give the container a terminal (process.terminal; TERM=xterm)
    #[arg(short, long)]
    pub tty: bool,
    /// A rootless spec (the default when not run as root)
    #[arg(long)]
    pub rootless: bool,
    /// The container ID [default: ocimount-PID-RANDOM]
    #[arg(long, value_name = "ID")]
    pub name: Option<String>,
    #[command(flatten)]
    pub fill: FillArgs,
    /// Command and arguments replacing the image's Cmd (after IMAGE, or
    /// after `--`)
    #[arg(
        value_name = "CMD",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub cmd: Vec<String>,
}

/// The signals `run` forwards to the runtime instead of dying of them.
const FORWARDED: [i32; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// What the signal thread and the main thread share.
struct Signals {
    /// The runtime's pid while it runs (and is not yet reaped).
    child: Mutex<Option<u32>>,
    count: AtomicU32,
    last: AtomicI32,
}

/// Block the forwarded signals in every thread (children get a clean mask
/// from std's spawn) and handle them in one thread: the first goes to the
/// runtime, which passes it to the container; any later one kills the
/// container.
fn handle_signals(kill: Command) -> Arc<Signals> {
    // SAFETY: plain sigset manipulation on a local.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in FORWARDED {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    let shared = Arc::new(Signals {
        child: Mutex::new(None),
        count: AtomicU32::new(0),
        last: AtomicI32::new(0),
    });
    let thread_shared = shared.clone();
    let mut kill = kill;
    std::thread::spawn(move || loop {
        let mut sig = 0;
        // SAFETY: `set` is initialised; sigwait writes the signal number.
        if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
            continue;
        }
        thread_shared.last.store(sig, Ordering::SeqCst);
        let n = thread_shared.count.fetch_add(1, Ordering::SeqCst) + 1;
        let child = *thread_shared
            .child
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match child {
            Some(pid) if n == 1 => {
                // SAFETY: the pid is our unreaped child, so it is not reused.
                unsafe { libc::kill(pid as i32, sig) };
            }
            Some(_) => {
                let _ = kill
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
            None => {}
        }
    });
    shared
}

/// `PROGRAM` on `$PATH`, for a clear error before anything is created.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A cgroup v1 host with the cgroup2 hierarchy mounted beside it.
fn is_hybrid_cgroup_host() -> bool {
    crate::serve::is_mounted(Path::new(HYBRID_CGROUP2))
}

/// The runtime command line, with crun's hybrid-cgroup workaround where
/// needed: in a private mount namespace without the cgroup2 mount.
fn runtime_command(runtime: Runtime, state: Option<&Path>, args: &[OsString]) -> Command {
    let mut words: Vec<OsString> = vec![runtime.name().into()];
    if let Some(root) = state {
        words.push("--root".into());
        words.push(root.into());
    }
    words.extend(args.iter().cloned());
    let hybrid = runtime == Runtime::Crun && bundle::is_root() && is_hybrid_cgroup_host();
    if hybrid {
        let mut cmd = Command::new("unshare");
        cmd.args(["-m", "sh", "-c"])
            .arg(format!("umount {HYBRID_CGROUP2} 2>/dev/null; exec \"$@\""))
            .arg("sh")
            .args(words);
        cmd
    } else {
        let mut cmd = Command::new(&words[0]);
        cmd.args(&words[1..]);
        cmd
    }
}

/// The temporary directory of one run; removed (with the bundle in it, and
/// the container's state) on drop if not before.
struct RunDir {
    tmp: PathBuf,
    bundle: PathBuf,
    state: Option<PathBuf>,
    runtime: Runtime,
    id: String,
    started: bool,
    done: bool,
}

impl RunDir {
    fn new(runtime: Runtime, id: String) -> Result<RunDir> {
        let base = std::env::temp_dir();
        let mut attempt = 0u32;
        let tmp = loop {
            let tmp = base.join(format!("ocimount-run-{}-{}", std::process::id(), unique()));
            match std::fs::DirBuilder::new().mode(0o700).create(&tmp) {
                Ok(()) => break tmp,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 100 => {
                    attempt += 1;
                }
                Err(e) => return Err(Error::io(tmp, e)),
            }
        };
        let state = (!bundle::is_root()).then(|| tmp.join("state"));
        Ok(RunDir {
            bundle: tmp.join("bundle"),
            tmp,
            state,
            runtime,
            id,
            started: false,
            done: false,
        })
    }

    fn command(&self, args: &[&str]) -> Command {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        runtime_command(self.runtime, self.state.as_deref(), &args)
    }

    /// Delete the container (if it was started), unmount and remove the
    /// bundle, remove the directory.
    fn cleanup(&mut self) -> Result<()> {
        self.done = true;
        if self.started {
            let mut delete = self.command(&["delete", "--force", &self.id]);
            if let Ok(mut child) = delete
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
            {
                let deadline = Instant::now() + DELETE_TIMEOUT;
                while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // Busy: a container process outlived the runtime. Detach the mount;
        // it goes away with its last user.
        if bundle::is_bundle(&self.bundle) && bundle::remove(&self.bundle, None, false).is_err() {
            bundle::remove(&self.bundle, None, true)?;
        }
        if let Some(state) = &self.state {
            if state.exists() {
                std::fs::remove_dir_all(state).at(state)?;
            }
        }
        std::fs::remove_dir(&self.tmp).at(&self.tmp)
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if !self.done {
            if let Err(e) = self.cleanup() {
                eprintln!("ocimount: warning: clean-up of {}: {e}", self.tmp.display());
            }
        }
    }
}

fn unique() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{:x}", nanos & 0xffff_ffff_ffff)
}

/// Wait for `pid` to exit without reaping it (so the signal thread never
/// signals a recycled pid).
fn wait_exited(pid: u32) {
    loop {
        // SAFETY: waitid on our own child with a zeroed siginfo to fill.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if r == 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return;
        }
    }
}

pub fn run(args: &RunArgs, opts: &OpenOptions, daemon_argv: &DaemonArgv) -> Result<()> {
    let runtime = args.runtime;
    if find_program(runtime.name()).is_none() {
        return Err(Error::BadPath {
            path: runtime.name().to_string(),
            reason: format!(
                "not found on PATH (install it, e.g. apt-get install {})",
                runtime.name()
            ),
        });
    }
    if runtime == Runtime::Crun && !bundle::is_root() && is_hybrid_cgroup_host() {
        return Err(Error::BadPath {
            path: "crun".to_string(),
            reason: format!(
                "refuses hosts with hybrid cgroups ({HYBRID_CGROUP2} is mounted), and hiding \
                 that mount needs root; use --runtime runc"
            ),
        });
    }
    let id = args
        .name
        .clone()
        .unwrap_or_else(|| format!("ocimount-{}-{}", std::process::id(), unique()));
    let mut dir = RunDir::new(runtime, id.clone())?;
    let signals = handle_signals(dir.command(&["kill", &id, "KILL"]));
    if let Some(state) = &dir.state {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(state)
            .at(state)?;
    }
    // Clean-up deletes the container by its ID: never one we did not start.
    let taken = dir
        .command(&["state", &id])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if taken {
        return Err(Error::BadPath {
            path: id,
            reason: format!("{} already has a container with this ID", runtime.name()),
        });
    }

    let opts = BundleOptions {
        image: args.image.clone(),
        dir: dir.bundle.clone(),
        open: OpenOptions {
            platform: args.platform.as_deref().map(Platform::parse).transpose()?,
            publish_index: args.fill.publish_index,
            ..opts.clone()
        },
        rootless: args.rootless || !bundle::is_root(),
        tty: args.tty,
        entrypoint: args.entrypoint.as_ref().map(|e| {
            if e.is_empty() {
                Vec::new()
            } else {
                vec![e.clone()]
            }
        }),
        cmd: (!args.cmd.is_empty()).then(|| args.cmd.clone()),
        prefetch: args.fill.prefetch,
        record: args.fill.record,
        daemon_argv: daemon_argv.clone(),
    };
    let made = bundle::create(&opts)?;
    for w in &made.warnings {
        eprintln!("ocimount: warning: {w}");
    }

    let status = {
        let mut child_slot = signals.child.lock().unwrap_or_else(|p| p.into_inner());
        if signals.count.load(Ordering::SeqCst) > 0 {
            None
        } else {
            let bundle_dir = made.dir.display().to_string();
            let mut cmd = dir.command(&["run", "-b", &bundle_dir, &id]);
            dir.started = true;
            let child = cmd.spawn().at(runtime.name())?;
            *child_slot = Some(child.id());
            drop(child_slot);
            wait_exited(child.id());
            *signals.child.lock().unwrap_or_else(|p| p.into_inner()) = None;
            let mut child = child;
            Some(child.wait().at(runtime.name())?)
        }
    };
    // The container's status matters more than a failed clean-up, which
    // is reported.
    if let Err(e) = dir.cleanup() {
        eprintln!("ocimount: warning: clean-up of {}: {e}", dir.tmp.display());
    }
    let code = match status {
        None => 128 + signals.last.load(Ordering::SeqCst),
        Some(s) => s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)),
    };
    if code != 0 {
        std::process::exit(code);
    }
    Ok(())
}
