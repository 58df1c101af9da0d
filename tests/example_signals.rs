//! Runs `examples/signals.rs` as a child process and stops it with SIGTERM, then SIGINT.
//!
//! The example binary is built by `cargo test` next to this test's own binary:
//! `target/<profile>/deps/example_signals-*` → `target/<profile>/examples/signals`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

const PATIENCE: Duration = Duration::from_secs(5);

fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary lives in target/<profile>/deps");
    let path = profile_dir.join("examples").join("signals");
    assert!(
        path.exists(),
        "{} is missing: run `cargo test` (which builds the examples) or `cargo build --examples`",
        path.display()
    );
    path
}

/// Forwards the child's stdout lines; the channel closes at end of output.
fn lines_of(child: &mut Child) -> Receiver<String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_bounded(child: &mut Child) -> Option<ExitStatus> {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        thread::sleep(Duration::from_millis(10));
    }
    None
}

fn stops_on(sig: i32, name: &str) {
    let mut child = Command::new(example_binary())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the example");
    let lines = lines_of(&mut child);
    let first = lines.recv_timeout(PATIENCE);
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
    if first.is_ok() {
        // SAFETY: kill(2) on our own child, which has not been reaped yet.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
    }
    let status = wait_bounded(&mut child);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let rest: Vec<String> = lines.iter().collect();
    assert_eq!(
        first.as_deref(),
        Ok("Event loop running, press Ctrl+C to interrupt.")
    );
    assert_eq!(rest.len(), 2, "{rest:?}");
    assert!(rest[0].starts_with(&format!("pid {pid}:")), "{rest:?}");
    assert_eq!(rest[1], format!("got signal {name}: exit"));
    let status = status.expect("the example did not exit in time");
    assert!(status.success(), "{status}");
}

#[test]
fn sigterm_stops_the_example() {
    stops_on(libc::SIGTERM, "SIGTERM");
}

#[test]
fn sigint_stops_the_example() {
    stops_on(libc::SIGINT, "SIGINT");
}
