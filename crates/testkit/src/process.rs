//! Running the `outpost` binary under test: a base command with a clean environment, commands
//! run to completion with what they print ([`run`], [`Run`]), and child processes owned by a
//! [`ChildGuard`] that kills them (SIGKILL) when dropped, so a failing test leaves nothing
//! running.
//!
//! Only the test crate knows where the binary is (`CARGO_BIN_EXE_outpost` is set for a
//! package's own integration tests alone), so it names it with a [`Binary`] of its own;
//! `OUTPOST_TEST_BIN`, when set, runs the suite against another build instead (an older one, to
//! watch a test fail before its fix).

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The binary under test, as the test crate knows it:
///
/// ```text
/// #[derive(Debug, Clone, Copy)]
/// pub struct Outpost;
/// impl testkit::Binary for Outpost {
///     const PATH: &'static str = env!("CARGO_BIN_EXE_outpost");
/// }
/// ```
pub trait Binary: 'static {
    /// The path of the binary this package builds.
    const PATH: &'static str;
}

/// The environment variable naming another binary to run the suite against.
pub const TEST_BIN_ENV: &str = "OUTPOST_TEST_BIN";

/// The binary the tests run: `OUTPOST_TEST_BIN` when set, else `B`'s.
pub fn binary<B: Binary>() -> OsString {
    std::env::var_os(TEST_BIN_ENV).unwrap_or_else(|| B::PATH.into())
}

/// The machine every process of the tests runs on, unless a test says otherwise: its identity
/// file is given to every `outpost` command (`OUTPOST_MACHINE_ID_FILE`), and raw requests carry
/// the fingerprint the binary would send (`http::machine`).
pub const TEST_MACHINE_ID: &str = "outpost-test-machine";

/// A file holding [`TEST_MACHINE_ID`], written once per test process (atomically: a command
/// must never read it half written).
pub fn test_machine_file() -> &'static Path {
    static FILE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let dir = std::env::temp_dir();
        let path = dir.join(format!("outpost-test-machine-{}", std::process::id()));
        let partial = dir.join(format!("outpost-test-machine-{}.partial", std::process::id()));
        std::fs::write(&partial, TEST_MACHINE_ID).expect("write the test machine's identity");
        std::fs::rename(&partial, &path).expect("put the test machine's identity in place");
        path
    })
}

/// How long one command may take before the test gives up on it (far above what any takes).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// A base command with a clean environment: nothing inherited may point it elsewhere.
pub fn outpost<B: Binary>() -> Command {
    let mut command = Command::new(binary::<B>());
    command
        .env_remove("OUTPOST_DATA")
        .env_remove("OUTPOST_DATABASE")
        .env_remove("OUTPOST_DB_SCHEMA")
        .env_remove("OUTPOST_SITE_PASSWORD")
        .env_remove("OUTPOST_ADMIN_PASSWORD")
        .env_remove("OUTPOST_IDLE_TIMEOUT_SECS")
        .env_remove("OUTPOST_MAX_CONNECTIONS_PER_ADDRESS")
        .env("OUTPOST_MACHINE_ID_FILE", test_machine_file())
        .env("OUTPOST_LOG", "warn");
    command
}

/// What a finished command did.
#[derive(Debug)]
pub struct Run {
    pub what: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Panics with everything the command said unless it succeeded.
    pub fn ok(self) -> Run {
        assert!(
            self.success(),
            "`{}` failed ({}):\nstdout:\n{}\nstderr:\n{}",
            self.what,
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Panics unless the command failed.
    pub fn failed(self) -> Run {
        assert!(
            !self.success(),
            "`{}` should have failed:\nstdout:\n{}\nstderr:\n{}",
            self.what,
            self.stdout,
            self.stderr
        );
        self
    }

    pub fn last_line(&self) -> &str {
        self.stdout.lines().last().unwrap_or_default().trim()
    }
}

/// A child process that is killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct ChildGuard {
    pub what: String,
    child: Option<Child>,
}

impl ChildGuard {
    pub fn spawn(what: impl Into<String>, command: &mut Command) -> ChildGuard {
        let what = what.into();
        let child = command.spawn().unwrap_or_else(|e| panic!("starting `{what}`: {e}"));
        ChildGuard { what, child: Some(child) }
    }

    /// Whether the process has exited (and its status), without waiting.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGKILL (what `Child::kill` sends on Unix), then reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for the process to exit on its own, at most `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                self.child = None;
                return status;
            }
            if Instant::now() > deadline {
                self.kill();
                panic!("`{}` did not finish within {timeout:?}", self.what);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The process id of the running child (to read its memory use).
    pub fn id(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("a running child")
    }

    /// The child's piped standard error (to read what it logs).
    pub fn take_stderr(&mut self) -> ChildStderr {
        self.child.as_mut().and_then(|c| c.stderr.take()).expect("a piped stderr")
    }

    /// The child's piped standard output (to read what it prints).
    pub fn take_stdout(&mut self) -> ChildStdout {
        self.child.as_mut().and_then(|c| c.stdout.take()).expect("a piped stdout")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs a command to completion (at most [`COMMAND_TIMEOUT`]), capturing what it prints.
pub fn run(what: &str, command: &mut Command) -> Run {
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut guard = ChildGuard::spawn(what, command);
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let child = guard.child.as_mut().expect("just spawned");
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let status = guard.wait(COMMAND_TIMEOUT);
    Run {
        what: what.to_owned(),
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// Polls `done` every few milliseconds until it holds; panics after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The peak resident memory of a process, in KiB (`VmHWM` of `/proc/PID/status`, Linux).
pub fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmHWM line")
}

/// Replaces what changes from run to run (times, the server's port) in text a person reads.
pub fn masked(text: &str, central_url: &str) -> String {
    let text = text.replace(central_url, "http://<central>");
    let mut out = String::new();
    for word in text.split_inclusive(char::is_whitespace) {
        let bare = word.trim_end().trim_end_matches([':', ';', ',', ')', '.']);
        let is_time = bare.len() >= 20 && bare.as_bytes().get(4) == Some(&b'-') && bare.contains('T');
        out.push_str(&if is_time { word.replacen(bare, "<time>", 1) } else { word.to_owned() });
    }
    out
}
