//! Shared end-to-end helpers: a real `loopd` on a temp dir, and `loopctl` runs against it.
//!
//! # Invariants
//! - The daemon binary is the one next to `loopctl` in this target dir; it is built
//!   (once per test binary) if it is missing.
//! - Every wait is bounded by [`WAIT`]; a daemon is killed by its pid when its
//!   [`Daemon`] drops, and a `loopctl` child that overstays is killed by its pid too.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use loopd_client::Client;

/// The longest any single wait in these tests may take.
pub const WAIT: Duration = Duration::from_secs(5);

/// A `loopd` child on a temp dir, killed by pid on drop.
pub struct Daemon {
    child: Child,
    /// Holds the socket, the state dir and the daemon's log.
    pub dir: tempfile::TempDir,
    /// The daemon's socket.
    pub socket: PathBuf,
}

impl Daemon {
    /// Starts a daemon with its default settings.
    pub fn start() -> Daemon {
        Daemon::start_with(&[])
    }

    /// Starts a daemon with extra flags (e.g. `--event-ring-capacity 4`) and waits
    /// until its socket accepts connections.
    pub fn start_with(extra: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("loopd.sock");
        let log = std::fs::File::create(dir.path().join("loopd.log")).expect("log file");
        let child = Command::new(daemon_binary())
            .arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(extra)
            .env("XDG_RUNTIME_DIR", dir.path().join("xdg-run"))
            .env("XDG_STATE_HOME", dir.path().join("xdg-state"))
            .env("RUST_LOG", "warn")
            .env_remove("LOOPD_SOCKET")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn loopd");
        let daemon = Daemon { child, dir, socket };
        daemon.wait_for_socket();
        daemon
    }

    fn wait_for_socket(&self) {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let log = std::fs::read_to_string(self.dir.path().join("loopd.log")).unwrap_or_default();
        panic!("loopd did not listen within {WAIT:?}; its log:\n{log}");
    }

    /// A client connected to this daemon.
    pub async fn client(&self) -> Client {
        let target = self.socket.to_str().expect("utf-8 temp path");
        Client::connect(target).await.expect("connect to loopd")
    }

    /// `loopctl ARGS` against this daemon, waited for at most [`WAIT`].
    pub fn loopctl(&self, args: &[&str]) -> Output {
        wait_output(self.loopctl_command(args).spawn().expect("spawn loopctl"))
    }

    /// A `loopctl ARGS` command aimed at this daemon (through `LOOPD_SOCKET`), its
    /// stdout and stderr piped.
    pub fn loopctl_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_loopctl"));
        command
            .args(args)
            .env("LOOPD_SOCKET", &self.socket)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Child::kill sends SIGKILL to this child's pid only.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits at most [`WAIT`] for `child` to exit, killing it (by pid) if it does not.
/// Its output is read while it runs, so output larger than a pipe's buffer (e.g. the
/// completion scripts) cannot stall it.
pub fn wait_output(child: Child) -> Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(WAIT) {
        Ok(output) => output.expect("loopctl output"),
        Err(_) => {
            let pid = libc::pid_t::try_from(pid).expect("pid fits");
            // SAFETY: kill has no memory effects; the pid is our own child, unreaped
            // (the waiting thread reaps it once it dies).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("loopctl did not exit within {WAIT:?}");
        }
    }
}

/// The `loopd` binary next to `loopctl`, built first if it is missing.
fn daemon_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let dir = Path::new(env!("CARGO_BIN_EXE_loopctl"))
            .parent()
            .expect("bin dir");
        let binary = dir.join("loopd");
        if !binary.exists() {
            build_daemon(dir);
        }
        assert!(binary.exists(), "no loopd at {}", binary.display());
        binary
    })
}

/// Runs `cargo build -p loopd-daemon` with the profile that made `bin_dir`.
fn build_daemon(bin_dir: &Path) {
    let profile = match bin_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev",
        Some(other) => other,
    };
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "-p",
            "loopd-daemon",
            "--bin",
            "loopd",
            "--profile",
            profile,
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo build");
    assert!(
        status.success(),
        "cargo build -p loopd-daemon failed: {status}"
    );
}

/// stdout of a finished `loopctl`, as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// stderr of a finished `loopctl`, as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts `loopctl` exited 0 and returns its stdout.
pub fn ok(output: Output) -> String {
    assert_eq!(
        output.status.code(),
        Some(0),
        "loopctl failed: stderr {:?}",
        stderr(&output)
    );
    stdout(&output)
}

/// Parses every line of `text` as one JSON object.
pub fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?} is not JSON: {e}"))
        })
        .collect()
}

/// Awaits `future` for at most [`WAIT`].
pub async fn bounded<F: std::future::IntoFuture>(future: F) -> F::Output {
    tokio::time::timeout(WAIT, future).await.expect("timed out")
}
