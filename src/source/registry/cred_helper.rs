//! Docker credential helpers: `docker-credential-NAME get`.
//!
//! The protocol is docker-credential-helpers': the program, found on
//! `$PATH`, is run with the single argument `get`, reads the server (a
//! registry host such as `registry.example:5000`, or Docker Hub's
//! `https://index.docker.io/v1/`) on its stdin and writes
//! `{"ServerURL": …, "Username": …, "Secret": …}` on its stdout. A helper
//! that has nothing for the server says `credentials not found in native
//! keychain` and exits with a non-zero status: that is no credentials, not
//! an error. A `Username` of `<token>` means the secret is an identity
//! token (an OAuth2 refresh token), as containers-image and Docker read it.
//!
//! A helper is an arbitrary program holding secrets, so every run is
//! bounded: [`HELPER_TIMEOUT`] in all (the helper and whatever it started
//! in its process group are killed, and the helper reaped, when it runs
//! over), at most [`MAX_HELPER_OUTPUT`] bytes on each of stdout and stderr
//! (read concurrently, so a helper that fills one pipe cannot stall on
//! it). Nothing a helper prints reaches an error message or a log: its
//! output is parsed or dropped, and errors say which helper failed and how
//! (its exit status, a timeout, a reply that is not the expected JSON).

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::source::registry::credential::Credential;

/// How long one helper run may take.
pub const HELPER_TIMEOUT: Duration = Duration::from_secs(30);
/// The most a helper may write on stdout, and on stderr.
pub const MAX_HELPER_OUTPUT: usize = 1 << 20;
/// Docker Hub's name for credential helpers and `credsStore`.
pub const DOCKER_HUB_SERVER: &str = "https://index.docker.io/v1/";

/// The user name by which a helper says its secret is an identity token.
const IDENTITY_TOKEN_USERNAME: &str = "<token>";
/// What docker-credential-helpers prints when it has nothing for a server.
const NOT_FOUND_MESSAGE: &str = "credentials not found";
/// How often a running helper is looked at.
const POLL: Duration = Duration::from_millis(5);

/// Why a helper gave no usable answer. The messages name the program and
/// never quote its output.
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error("credential helper name {name:?} is not valid (empty, or with '/' or NUL)")]
    InvalidName { name: String },

    #[error("credential helper {program} is not on $PATH")]
    NotFound { program: String },

    #[error("credential helper {program} could not be run: {source}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },

    #[error("credential helper {program} failed ({status}); run `{program} get` to see why")]
    Failed { program: String, status: String },

    #[error("credential helper {program} did not answer within {} s and was killed", after.as_secs_f64())]
    TimedOut { program: String, after: Duration },

    #[error("credential helper {program} wrote more than {limit} bytes and was killed")]
    OutputTooLarge { program: String, limit: usize },

    #[error("credential helper {program} gave a reply that cannot be used: {reason}")]
    InvalidReply {
        program: String,
        reason: &'static str,
    },
}

/// Runs credential helpers found on a search path, within bounds.
#[derive(Debug, Clone)]
pub struct HelperRunner {
    /// `$PATH`: where `docker-credential-NAME` is looked for.
    pub search_path: Option<OsString>,
    pub timeout: Duration,
    pub max_output: usize,
}

impl HelperRunner {
    /// A runner that searches `search_path` (a `$PATH` value), with the
    /// default bounds.
    pub fn new(search_path: Option<OsString>) -> HelperRunner {
        HelperRunner {
            search_path,
            timeout: HELPER_TIMEOUT,
            max_output: MAX_HELPER_OUTPUT,
        }
    }

    /// Asks helper `name` (`docker-credential-NAME`) for the credentials of
    /// `server`. `Ok(None)` when it has none.
    pub fn get(&self, name: &str, server: &str) -> Result<Option<Credential>, HelperError> {
        let program = program_name(name)?;
        let path = self.find(&program)?;
        let started = Instant::now();
        let output = self.run(&program, &path, server)?;
        tracing::debug!(
            helper = %program,
            server,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "credential helper answered"
        );
        interpret(&program, output)
    }

    /// The first executable regular file named `program` in an absolute
    /// directory of the search path (relative entries, `.` included, are
    /// passed over, as Go's os/exec does since 1.19).
    fn find(&self, program: &str) -> Result<PathBuf, HelperError> {
        let not_found = || HelperError::NotFound {
            program: program.to_string(),
        };
        let search_path = self.search_path.as_ref().ok_or_else(not_found)?;
        std::env::split_paths(search_path)
            .filter(|dir| dir.is_absolute())
            .map(|dir| dir.join(program))
            .find(|candidate| is_executable_file(candidate))
            .ok_or_else(not_found)
    }

    fn run(&self, program: &str, path: &Path, server: &str) -> Result<Output, HelperError> {
        let deadline = Instant::now() + self.timeout;
        let mut child = spawn(program, path)?;
        let pid = child.id();
        let mut guard = ChildGuard {
            child: &mut child,
            pid,
            reaped: false,
        };

        // The server is tiny, but a helper that never reads its stdin must
        // not hold us up: write it from a thread, which a killed helper frees.
        if let Some(mut stdin) = guard.child.stdin.take() {
            let server = server.as_bytes().to_vec();
            std::thread::spawn(move || {
                let _ = stdin.write_all(&server);
            });
        }
        let overflow = Arc::new(AtomicBool::new(false));
        let (sender, receiver) = mpsc::channel::<(Stream, Vec<u8>)>();
        for (stream, reader) in [
            (
                Stream::Stdout,
                guard
                    .child
                    .stdout
                    .take()
                    .map(|r| Box::new(r) as Box<dyn Read + Send>),
            ),
            (
                Stream::Stderr,
                guard
                    .child
                    .stderr
                    .take()
                    .map(|r| Box::new(r) as Box<dyn Read + Send>),
            ),
        ] {
            let Some(reader) = reader else { continue };
            let sender = sender.clone();
            let overflow = Arc::clone(&overflow);
            let limit = self.max_output;
            std::thread::spawn(move || {
                let bytes = read_bounded(reader, limit, &overflow);
                let _ = sender.send((stream, bytes));
            });
        }
        drop(sender);

        let too_large = || HelperError::OutputTooLarge {
            program: program.to_string(),
            limit: self.max_output,
        };
        let timed_out = || HelperError::TimedOut {
            program: program.to_string(),
            after: self.timeout,
        };

        // Wait for the helper to exit, killing it at the deadline or as
        // soon as it writes too much.
        let status = loop {
            if overflow.load(Ordering::Relaxed) {
                guard.kill();
                return Err(too_large());
            }
            match guard.child.try_wait() {
                Ok(Some(status)) => {
                    guard.reaped = true;
                    break status;
                }
                Ok(None) => {}
                Err(source) => {
                    guard.kill();
                    return Err(HelperError::Spawn {
                        program: program.to_string(),
                        source,
                    });
                }
            }
            if Instant::now() >= deadline {
                guard.kill();
                return Err(timed_out());
            }
            std::thread::sleep(POLL);
        };

        // Then for its pipes to close, which something it started and left
        // running could delay: the deadline bounds that too.
        let mut stdout = None;
        let mut stderr = None;
        while stdout.is_none() || stderr.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match receiver.recv_timeout(left) {
                Ok((Stream::Stdout, bytes)) => stdout = Some(bytes),
                Ok((Stream::Stderr, bytes)) => stderr = Some(bytes),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    guard.kill_group();
                    return Err(timed_out());
                }
            }
        }
        if overflow.load(Ordering::Relaxed) {
            guard.kill_group();
            return Err(too_large());
        }
        Ok(Output {
            status,
            stdout: stdout.unwrap_or_default(),
            stderr: stderr.unwrap_or_default(),
        })
    }
}

/// `docker-credential-NAME`, for a name that cannot leave the search path.
fn program_name(name: &str) -> Result<String, HelperError> {
    if name.is_empty() || name.contains('/') || name.contains('\0') {
        return Err(HelperError::InvalidName {
            name: name.to_string(),
        });
    }
    Ok(format!("docker-credential-{name}"))
}

fn is_executable_file(path: &Path) -> bool {
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Starts `path get` in a process group of its own (so that it and what
/// it starts can be killed together), with its three streams piped.
fn spawn(program: &str, path: &Path) -> Result<Child, HelperError> {
    let mut attempts = 0;
    loop {
        let mut command = Command::new(path);
        command
            .arg("get")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        match command.spawn() {
            Ok(child) => return Ok(child),
            // A helper just written (by a test, an installer) may still be
            // open for writing in a process another thread is forking.
            Err(error) if error.raw_os_error() == Some(libc::ETXTBSY) && attempts < 20 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(source) => {
                return Err(HelperError::Spawn {
                    program: program.to_string(),
                    source,
                })
            }
        }
    }
}

/// Reads up to `limit` bytes; past that, sets `overflow` and stops.
fn read_bounded(mut reader: Box<dyn Read + Send>, limit: usize, overflow: &AtomicBool) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                if bytes.len() + n > limit {
                    overflow.store(true, Ordering::Relaxed);
                    break;
                }
                bytes.extend_from_slice(&buffer[..n]);
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    bytes
}

#[derive(Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

/// What a helper that exited wrote.
struct Output {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Kills the helper's process group and reaps the helper unless it was
/// reaped already, however the run ends.
struct ChildGuard<'a> {
    child: &'a mut Child,
    pid: u32,
    reaped: bool,
}

impl ChildGuard<'_> {
    fn kill(&mut self) {
        self.kill_group();
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.reaped = true;
        }
    }

    /// SIGKILL to the helper's process group: the helper, if it still runs,
    /// and anything it started that kept the group.
    fn kill_group(&self) {
        if let Ok(pgid) = libc::pid_t::try_from(self.pid) {
            // SAFETY: kill has no memory-safety preconditions; the group is
            // the helper's own (process_group(0) at spawn).
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for ChildGuard<'_> {
    fn drop(&mut self) {
        if !self.reaped {
            self.kill();
        }
    }
}

/// The credentials in a helper's output, or none when it says it has none.
fn interpret(program: &str, output: Output) -> Result<Option<Credential>, HelperError> {
    let says_not_found = |bytes: &[u8]| {
        String::from_utf8_lossy(bytes)
            .to_ascii_lowercase()
            .contains(NOT_FOUND_MESSAGE)
    };
    if says_not_found(&output.stdout) || says_not_found(&output.stderr) {
        tracing::debug!(helper = %program, "the credential helper has no credentials for the server");
        return Ok(None);
    }
    if !output.status.success() {
        let status = match (output.status.code(), output.status_signal()) {
            (Some(code), _) => format!("exit status {code}"),
            (None, Some(signal)) => format!("killed by signal {signal}"),
            (None, None) => output.status.to_string(),
        };
        return Err(HelperError::Failed {
            program: program.to_string(),
            status,
        });
    }
    let invalid = |reason: &'static str| HelperError::InvalidReply {
        program: program.to_string(),
        reason,
    };
    // serde_json's messages can quote the input: they are not passed on.
    let reply: Value =
        serde_json::from_slice(&output.stdout).map_err(|_| invalid("its output is not JSON"))?;
    let Value::Object(reply) = reply else {
        return Err(invalid("its output is not a JSON object"));
    };
    let field = |name: &str| -> Result<String, HelperError> {
        match reply.get(name).or_else(|| {
            reply
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
        }) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(text)) => Ok(text.clone()),
            Some(_) => Err(invalid(if name == "Username" {
                "\"Username\" is not a string"
            } else {
                "\"Secret\" is not a string"
            })),
        }
    };
    let username = field("Username")?;
    let secret = field("Secret")?;
    if username.is_empty() && secret.is_empty() {
        return Ok(None);
    }
    if username == IDENTITY_TOKEN_USERNAME {
        if secret.is_empty() {
            return Err(invalid("an identity token reply has an empty \"Secret\""));
        }
        return Ok(Some(Credential::IdentityToken {
            username: String::new(),
            token: secret,
        }));
    }
    Ok(Some(Credential::Basic {
        username,
        password: secret,
    }))
}

impl Output {
    fn status_signal(&self) -> Option<i32> {
        std::os::unix::process::ExitStatusExt::signal(&self.status)
    }
}

/// Writes `path` as an executable `/bin/sh` script with `body`, for tests.
///
/// A child process writes it, never this one: a test process forks from
/// many threads, and a fork taken while this process held the script open
/// for writing keeps it so until the child execs, which makes running the
/// script fail with ETXTBSY. `spawn` retries that where it sees it, but
/// under qemu-user `posix_spawn`'s vfork is a plain fork, so the error
/// never reaches the parent: the child just exits 127.
#[cfg(test)]
pub(crate) fn write_test_script(path: &Path, body: &str) {
    let mut writer = Command::new("/bin/sh")
        .args(["-c", r#"cat > "$1" && chmod 755 "$1""#, "sh"])
        .arg(path)
        .stdin(Stdio::piped())
        .spawn()
        .expect("start /bin/sh to write a test script");
    writer
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(format!("#!/bin/sh\n{body}\n").as_bytes())
        .expect("write the test script");
    let status = writer.wait().expect("wait for /bin/sh");
    assert!(
        status.success(),
        "writing {} failed: {status}",
        path.display()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A directory of `docker-credential-*` scripts to search.
    struct Helpers {
        dir: tempfile::TempDir,
    }

    impl Helpers {
        fn new() -> Helpers {
            Helpers {
                dir: tempfile::tempdir().expect("tempdir"),
            }
        }

        /// `docker-credential-NAME`, a /bin/sh script with `body`.
        fn script(&self, name: &str, body: &str) -> &Self {
            write_test_script(
                &self.dir.path().join(format!("docker-credential-{name}")),
                body,
            );
            self
        }

        fn runner(&self) -> HelperRunner {
            let mut search = OsString::from("/nonexistent-dir:relative-dir:");
            search.push(self.dir.path());
            search.push(":/usr/bin:/bin");
            HelperRunner::new(Some(search))
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }
    }

    fn basic(username: &str, password: &str) -> Credential {
        Credential::Basic {
            username: username.to_string(),
            password: password.to_string(),
        }
    }

    #[test]
    fn found_returns_user_and_secret() {
        let helpers = Helpers::new();
        let log = helpers.path("calls");
        helpers.script(
            "found",
            &format!(
                r#"server=$(cat)
echo "$*|$server" >> '{}'
printf '{{"ServerURL":"%s","Username":"alice","Secret":"s3cret"}}' "$server""#,
                log.display()
            ),
        );
        let got = helpers
            .runner()
            .get("found", "registry.example:5000")
            .expect("helper");
        assert_eq!(got, Some(basic("alice", "s3cret")));
        assert_eq!(
            fs::read_to_string(&log).expect("log"),
            "get|registry.example:5000\n"
        );
    }

    #[test]
    fn token_username_is_an_identity_token() {
        let helpers = Helpers::new();
        helpers.script(
            "token",
            r#"cat >/dev/null; echo '{"ServerURL":"x","Username":"<token>","Secret":"refresh-me"}'"#,
        );
        let got = helpers
            .runner()
            .get("token", DOCKER_HUB_SERVER)
            .expect("helper");
        assert_eq!(
            got,
            Some(Credential::IdentityToken {
                username: String::new(),
                token: "refresh-me".to_string()
            })
        );
    }

    #[test]
    fn not_found_means_anonymous() {
        let helpers = Helpers::new();
        helpers
            .script(
                "none",
                "cat >/dev/null; echo 'credentials not found in native keychain'; exit 1",
            )
            .script(
                "none-stderr",
                "cat >/dev/null; echo 'Credentials not found in native keychain' >&2; exit 1",
            )
            .script(
                "empty",
                r#"cat >/dev/null; echo '{"Username":"","Secret":""}'"#,
            );
        for name in ["none", "none-stderr", "empty"] {
            assert_eq!(
                helpers.runner().get(name, "quay.io").expect(name),
                None,
                "{name}"
            );
        }
    }

    #[test]
    fn failures_name_the_helper_and_not_its_output() {
        let helpers = Helpers::new();
        helpers
            .script(
                "failing",
                "cat >/dev/null; echo 'hunter2 is wrong'; echo hunter2 >&2; exit 3",
            )
            .script("bad-json", "cat >/dev/null; echo 'hunter2 {'")
            .script("not-object", r#"cat >/dev/null; echo '["hunter2"]'"#)
            .script(
                "bad-field",
                r#"cat >/dev/null; echo '{"Username":"u","Secret":["hunter2"]}'"#,
            )
            .script("killed", "kill -9 $$");
        for (name, what) in [
            ("failing", "exit status 3"),
            ("bad-json", "not JSON"),
            ("not-object", "not a JSON object"),
            ("bad-field", "\"Secret\" is not a string"),
            ("killed", "signal 9"),
            ("missing", "is not on $PATH"),
        ] {
            let error = helpers.runner().get(name, "quay.io").expect_err(name);
            let message = error.to_string();
            assert!(
                message.contains(&format!("docker-credential-{name}")),
                "{message}"
            );
            assert!(message.contains(what), "{name}: {message}");
            assert!(!message.contains("hunter2"), "{message}");
            assert!(!format!("{error:?}").contains("hunter2"), "{error:?}");
        }
        for name in ["", "../evil", "a/b"] {
            assert!(matches!(
                helpers.runner().get(name, "quay.io"),
                Err(HelperError::InvalidName { .. })
            ));
        }
        // Not executable, or in a relative directory only: not found.
        let plain = helpers.path("docker-credential-plain");
        fs::write(&plain, "#!/bin/sh\necho {}\n").expect("write");
        assert!(matches!(
            helpers.runner().get("plain", "quay.io"),
            Err(HelperError::NotFound { .. })
        ));
        let relative = HelperRunner::new(Some(OsString::from(".:relative")));
        assert!(matches!(
            relative.get("found", "quay.io"),
            Err(HelperError::NotFound { .. })
        ));
        assert!(matches!(
            HelperRunner::new(None).get("found", "quay.io"),
            Err(HelperError::NotFound { .. })
        ));
    }

    fn process_exists(pid: &str) -> bool {
        Path::new(&format!("/proc/{}", pid.trim())).exists()
    }

    fn wait_gone(pid: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while process_exists(pid) {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    #[test]
    fn slow_helpers_time_out_and_are_killed_and_reaped() {
        let helpers = Helpers::new();
        let pid_file = helpers.path("pid");
        let child_file = helpers.path("grandchild");
        helpers
            .script(
                "slow",
                &format!("echo $$ > '{}'; exec sleep 60", pid_file.display()),
            )
            .script(
                "slow-family",
                &format!(
                    "sleep 60 & echo $! > '{}'; echo $$ > '{}'; wait",
                    child_file.display(),
                    pid_file.display()
                ),
            );
        let mut runner = helpers.runner();
        runner.timeout = Duration::from_millis(500);
        for name in ["slow", "slow-family"] {
            let started = Instant::now();
            let error = runner.get(name, "quay.io").expect_err(name);
            assert!(matches!(error, HelperError::TimedOut { .. }), "{error}");
            assert!(error
                .to_string()
                .contains(&format!("docker-credential-{name}")));
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{:?}",
                started.elapsed()
            );
            // Reaped, not a zombie: its /proc entry is gone at once.
            let pid = fs::read_to_string(&pid_file).expect("pid");
            assert!(!process_exists(&pid), "helper {name} ({pid}) still exists");
        }
        let grandchild = fs::read_to_string(&child_file).expect("grandchild pid");
        assert!(
            wait_gone(&grandchild),
            "the helper's child {grandchild} survived"
        );
    }

    #[test]
    fn a_helper_that_leaves_a_child_holding_its_pipes_is_bounded() {
        let helpers = Helpers::new();
        let child_file = helpers.path("grandchild");
        // Exits at once, but its child keeps stdout open.
        helpers.script(
            "lingering",
            &format!("sleep 60 & echo $! > '{}'; exit 0", child_file.display()),
        );
        let mut runner = helpers.runner();
        runner.timeout = Duration::from_millis(500);
        let started = Instant::now();
        let error = runner.get("lingering", "quay.io").expect_err("lingering");
        assert!(matches!(error, HelperError::TimedOut { .. }), "{error}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let grandchild = fs::read_to_string(&child_file).expect("grandchild pid");
        assert!(
            wait_gone(&grandchild),
            "the helper's child {grandchild} survived"
        );
    }

    #[test]
    fn huge_output_is_bounded() {
        let helpers = Helpers::new();
        let pid_file = helpers.path("pid");
        helpers
            .script(
                "huge",
                &format!("echo $$ > '{}'; exec yes hunter2", pid_file.display()),
            )
            .script("huge-stderr", "exec yes hunter2 >&2")
            .script(
                "just-over",
                "cat >/dev/null; head -c 1048577 /dev/zero | tr '\\0' x",
            );
        for name in ["huge", "huge-stderr", "just-over"] {
            let started = Instant::now();
            let error = helpers.runner().get(name, "quay.io").expect_err(name);
            assert!(
                matches!(error, HelperError::OutputTooLarge { limit, .. } if limit == MAX_HELPER_OUTPUT),
                "{name}: {error}"
            );
            assert!(!error.to_string().contains("hunter2"));
            assert!(started.elapsed() < Duration::from_secs(10));
        }
        let pid = fs::read_to_string(&pid_file).expect("pid");
        assert!(!process_exists(&pid), "helper {pid} still exists");
        // Just under the bound is read (and then found not to be JSON).
        helpers.script(
            "just-under",
            "cat >/dev/null; head -c 1048576 /dev/zero | tr '\\0' x",
        );
        assert!(matches!(
            helpers.runner().get("just-under", "quay.io"),
            Err(HelperError::InvalidReply { .. })
        ));
    }

    #[test]
    fn a_helper_that_ignores_stdin_works() {
        let helpers = Helpers::new();
        helpers.script("deaf", r#"exec 0<&-; echo '{"Username":"u","Secret":"p"}'"#);
        assert_eq!(
            helpers.runner().get("deaf", "quay.io").expect("deaf"),
            Some(basic("u", "p"))
        );
    }
}
