//! Runs each example in `examples/` and checks what it prints and how it exits.
//!
//! `cargo test` builds the examples (into `target/<profile>/examples/`) before running this;
//! `cargo test --test examples` alone does not, so run `cargo build --examples` first then.
//! Every run is bounded by a timeout: an example that hangs is killed and the test fails.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long any example may run.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The path of the built example `name`: `current_exe()` is `target/<profile>/deps/<test>`,
/// examples are in `target/<profile>/examples/`.
pub fn example_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps");
    profile_dir.join("examples").join(name)
}

/// Starts example `name` with `args`, stdout and stderr piped, stdin closed.
pub fn spawn_example(name: &str, args: &[&str]) -> Child {
    let path = example_path(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo test` (or `cargo build --examples`)",
        path.display()
    );
    Command::new(&path)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("spawning {}: {err}", path.display()))
}

/// Collects `child`'s output and waits for it to exit; kills it (by its own handle) and
/// panics if it is still running after `timeout`.
pub fn wait_with_timeout(mut child: Child, timeout: Duration) -> Output {
    let stdout = collect(child.stdout.take());
    let stderr = collect(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the example") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let out = String::from_utf8_lossy(&stdout.join().unwrap_or_default()).into_owned();
            panic!("example still running after {timeout:?}; killed it. stdout so far:\n{out}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// Runs example `name` with `args` to completion (within [`TIMEOUT`]).
pub fn run_example(name: &str, args: &[&str]) -> Output {
    wait_with_timeout(spawn_example(name, args), TIMEOUT)
}

/// Reads a pipe to its end on a thread, so a chatty child never blocks on a full pipe.
fn collect(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut out = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut out);
        }
        out
    })
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).expect("output is UTF-8")
}

#[test]
fn hello_world_prints_once_and_exits() {
    let out = run_example("hello_world", &[]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "Hello World\n");
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn watch_fd_receives_what_call_soon_sent() {
    let out = run_example("watch_fd", &[]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "Received: abc\n");
    assert_eq!(text(&out.stderr), "");
}

/// Days from 1970-01-01 to a civil date (Howard Hinnant's `days_from_civil`): the inverse
/// of what the example uses, so a mistake in either shows.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses `YYYY-MM-DD HH:MM:SS.ffffff+00:00` into seconds since the Unix epoch.
fn parse_utc(line: &str) -> Option<f64> {
    let (date, time) = line.strip_suffix("+00:00")?.split_once(' ')?;
    let mut ymd = date.split('-').map(str::parse::<i64>);
    let (y, m, d) = (ymd.next()?.ok()?, ymd.next()?.ok()?, ymd.next()?.ok()?);
    let (hms, micros) = time.split_once('.')?;
    let mut hms = hms.split(':').map(str::parse::<i64>);
    let (h, min, s) = (hms.next()?.ok()?, hms.next()?.ok()?, hms.next()?.ok()?);
    let fields_ok = (1..=12).contains(&m)
        && (1..=31).contains(&d)
        && h < 24
        && min < 60
        && s < 60
        && micros.len() == 6;
    let micros: u32 = micros.parse().ok()?;
    let secs = days_from_civil(y, m, d) * 86_400 + h * 3600 + min * 60 + s;
    fields_ok.then(|| secs as f64 + f64::from(micros) / 1e6)
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs_f64()
}

#[test]
fn parse_utc_checks_the_format() {
    let cases = [
        ("1970-01-01 00:00:00.000000+00:00", Some(0.0)),
        ("2000-03-01 00:00:01.500000+00:00", Some(951_868_801.5)),
        ("2024-02-29 23:59:59.000000+00:00", Some(1_709_251_199.0)),
        ("2024-02-29 23:59:59+00:00", None),
        ("2024-13-01 00:00:00.000000+00:00", None),
        ("2024-01-01 00:00:00.000000", None),
    ];
    for (line, expected) in cases {
        assert_eq!(parse_utc(line), expected, "{line}");
    }
}

#[test]
fn display_date_prints_the_time_every_second_until_the_end() {
    let before = unix_now();
    let started = Instant::now();
    let out = run_example("display_date", &["--seconds", "2"]);
    let took = started.elapsed();
    let after = unix_now();
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<&str> = text(&out.stdout).lines().collect();
    assert_eq!(lines.len(), 2, "at 0 s and 1 s: {lines:?}");
    let times: Vec<f64> = lines
        .iter()
        .map(|line| parse_utc(line).unwrap_or_else(|| panic!("not a UTC date: {line:?}")))
        .collect();
    for time in &times {
        assert!(
            (before - 1.0..=after + 1.0).contains(time),
            "{time} not within the run [{before}, {after}]"
        );
    }
    let gap = times[1] - times[0];
    assert!((0.9..1.9).contains(&gap), "one second apart, not {gap}");
    assert!(took >= Duration::from_millis(900), "ran for {took:?}");
}

#[test]
fn display_date_rejects_bad_arguments() {
    for args in [
        &["--seconds", "x"][..],
        &["--seconds", "-1"],
        &["--seconds"],
        &["--bogus"],
    ] {
        let out = run_example("display_date", args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert_eq!(text(&out.stdout), "", "{args:?}");
        let stderr = text(&out.stderr);
        let named = args.last().copied().unwrap_or_default();
        assert!(stderr.contains(named), "{args:?}: stderr {stderr:?}");
    }
}

#[test]
fn echo_server_prints_its_port_echoes_and_stops_on_sigterm() {
    use std::io::{BufRead, BufReader, Write};
    let mut child = spawn_example("echo_server", &[]);
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let mut first = String::new();
        let _ = BufReader::new(stdout).read_line(&mut first);
        let _ = tx.send(first);
    });
    let first = rx.recv_timeout(TIMEOUT).unwrap_or_default();
    let port: Option<u16> = first.trim().parse().ok();
    // No panic before the child is stopped: it would outlive the test.
    let echo = |port: u16| -> std::io::Result<bool> {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        let sent: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        stream.write_all(&sent)?;
        let mut back = vec![0; sent.len()];
        stream.read_exact(&mut back)?;
        Ok(back == sent)
    };
    let echoed = port.map(|port| echo(port).map_err(|err| err.to_string()));
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
    // SAFETY: kill(2) on our own child, which has not been reaped yet.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let out = wait_with_timeout(child, TIMEOUT);
    assert!(port.is_some(), "first line {first:?}");
    assert_eq!(echoed, Some(Ok(true)), "100,000 bytes came back as sent");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn echo_server_rejects_bad_arguments() {
    let cases: [(&[&str], &str); 4] = [
        // (arguments, what the message names)
        (&["--port", "x"], "\"x\""),
        (&["--port", "70000"], "70000"),
        (&["--port"], "--port"),
        (&["--bogus", "1"], "--bogus"),
    ];
    for (args, named) in cases {
        let out = run_example("echo_server", args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert_eq!(text(&out.stdout), "", "{args:?}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(named), "{args:?}: stderr {stderr:?}");
    }
}
