//! `loopctl run`, `loopctl proc`, `loopctl signal` and `loopctl fifo` against a real
//! daemon: output streamed to loopctl's stdout and stderr, stdin forwarded, the child's
//! exit status, named pipes both ways.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use support::{Daemon, ok, stderr, stdout};

const LIMIT: Duration = Duration::from_secs(20);

/// Waits for `child` while other threads feed and drain it; kills it (by pid) after
/// [`LIMIT`].
fn finish(child: Child) -> Output {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(LIMIT) {
        Ok(output) => output.expect("loopctl output"),
        Err(_) => {
            // SAFETY: kill has no memory effects; the pid is our own unreaped child.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("loopctl did not exit within {LIMIT:?}");
        }
    }
}

/// `loopctl run ARGS` with `input` on its stdin.
fn run(daemon: &Daemon, args: &[&str], input: &[u8]) -> Output {
    run_with(daemon, &[&["run"], args].concat(), input)
}

/// `loopctl ARGS` with `input` on its stdin.
fn run_with(daemon: &Daemon, args: &[&str], input: &[u8]) -> Output {
    let mut command = daemon.loopctl_command(args);
    let mut child = command
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn loopctl");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    finish(child)
}

#[test]
fn run_exits_with_the_childs_status() {
    let daemon = Daemon::start();
    let cases: &[(&str, i32)] = &[
        ("exit 0", 0),
        ("exit 3", 3),
        ("exit 255", 255),
        ("kill -TERM $$", 128 + libc::SIGTERM),
        ("kill -KILL $$", 128 + libc::SIGKILL),
    ];
    for (script, want) in cases {
        let output = run(&daemon, &["--", "sh", "-c", script], b"");
        assert_eq!(
            output.status.code(),
            Some(*want),
            "{script}: {}",
            stderr(&output)
        );
    }
    let missing = run(&daemon, &["--", "no-such-program-xyz"], b"");
    assert_eq!(missing.status.code(), Some(1));
    let message = stderr(&missing);
    assert!(
        message.contains("NOT_FOUND") && message.contains("no-such-program-xyz"),
        "{message}"
    );
    let shell = run(&daemon, &["--shell", "--", "echo", "hi"], b"");
    assert_eq!(shell.status.code(), Some(1));
    assert!(
        stderr(&shell).contains("FAILED_PRECONDITION"),
        "{}",
        stderr(&shell)
    );
}

#[test]
fn run_streams_stdout_and_stderr_apart_and_forwards_stdin() {
    let daemon = Daemon::start();
    let output = run(
        &daemon,
        &["--", "sh", "-c", "echo out; echo err >&2; echo out2"],
        b"",
    );
    assert_eq!(stdout(&output), "out\nout2\n");
    assert_eq!(stderr(&output), "err\n");

    let output = run(&daemon, &["--", "tr", "a-z", "A-Z"], b"hello\nworld\n");
    assert_eq!(stdout(&output), "HELLO\nWORLD\n");
    assert!(output.status.success());

    let big = vec![b'x'; 3 << 20];
    let output = run(&daemon, &["--", "wc", "-c"], &big);
    assert_eq!(
        stdout(&output).trim(),
        (3 << 20).to_string(),
        "all of stdin, then EOF"
    );

    let output = run(&daemon, &["--no-stdin", "--", "seq", "1", "300000"], b"");
    let local = std::process::Command::new("seq")
        .args(["1", "300000"])
        .output()
        .expect("seq");
    assert!(output.stdout == local.stdout, "seq output differs");

    let output = run(
        &daemon,
        &[
            "--cwd",
            "/tmp",
            "--env",
            "GREETING=a b",
            "--",
            "sh",
            "-c",
            "pwd; echo \"$GREETING\"",
        ],
        b"",
    );
    assert_eq!(stdout(&output), "/tmp\na b\n");
}

#[test]
fn run_streams_while_the_child_runs() {
    let daemon = Daemon::start();
    let script = "echo first; read line; echo \"got $line\"";
    let mut command = daemon.loopctl_command(&["run", "--", "sh", "-c", script]);
    let mut child = command
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn loopctl");
    // The first line arrives while the child still waits for its input.
    let (first, mut out) = first_line(&mut child);
    assert_eq!(first, "first\n");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"ping\n").expect("write");
    drop(stdin);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).expect("rest");
    assert_eq!(rest, "got ping\n");
    assert!(finish(child).status.success());
}

/// Starts `loopctl run -- sh -c SCRIPT`; returns it once the script printed "ready".
fn started(daemon: &Daemon, script: &str) -> (Child, BufReader<std::process::ChildStdout>) {
    let mut command = daemon.loopctl_command(&["run", "--no-stdin", "--", "sh", "-c", script]);
    let mut child = command.spawn().expect("spawn loopctl");
    let (first, out) = first_line(&mut child);
    assert_eq!(first, "ready\n");
    (child, out)
}

/// The first line of loopctl's stdout (within [`LIMIT`]), and the rest to read.
fn first_line(child: &mut Child) -> (String, BufReader<std::process::ChildStdout>) {
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = out.read_line(&mut line);
        let _ = tx.send((line, out));
    });
    rx.recv_timeout(LIMIT).expect("a first line in time")
}

fn signal(child: &Child, signal: libc::c_int) {
    // SAFETY: kill has no memory effects; the pid is our own unreaped child.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, signal) }, 0);
}

#[test]
fn run_forwards_signals_to_the_child_and_exits_with_its_status() {
    let daemon = Daemon::start();
    // A child that traps SIGINT finishes its own way; loopctl waits for it.
    let trapping = "trap 'echo \"got INT\"; exit 7' INT; echo ready; while :; do sleep 0.05; done";
    let (child, mut out) = started(&daemon, trapping);
    signal(&child, libc::SIGINT);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).expect("rest");
    assert_eq!(rest, "got INT\n");
    assert_eq!(finish(child).status.code(), Some(7));

    // One that does not dies of the signal, and so does loopctl's status: 128 + N.
    let (child, _out) = started(&daemon, "echo ready; exec sleep 30");
    signal(&child, libc::SIGTERM);
    assert_eq!(finish(child).status.code(), Some(128 + libc::SIGTERM));

    // Nothing is left running in the daemon.
    let listed = ok(daemon.loopctl(&["proc", "ls", "--json"]));
    assert!(!listed.contains("\"running\""), "{listed}");
}

#[test]
fn proc_commands_manage_a_process() {
    let daemon = Daemon::start();
    let id = ok(daemon.loopctl(&["proc", "spawn", "--stdin", "--", "cat"]));
    let id = id.trim();
    let listed = ok(daemon.loopctl(&["proc", "ls"]));
    assert!(
        listed.contains("running") && listed.contains("cat"),
        "{listed}"
    );
    ok(daemon.loopctl(&["proc", "write", id, "hello", "--newline", "--eof"]));
    let waited = daemon.loopctl(&["proc", "wait", id]);
    assert!(waited.status.success(), "{}", stderr(&waited));
    assert!(
        stdout(&waited).contains("exit code 0"),
        "{}",
        stdout(&waited)
    );
    assert_eq!(ok(daemon.loopctl(&["proc", "logs", id])), "hello\n");
    let shown = ok(daemon.loopctl(&["--json", "proc", "show", id]));
    assert!(shown.contains("\"returncode\":0"), "{shown}");

    let id = ok(daemon.loopctl(&["proc", "spawn", "--", "sleep", "100"]));
    let id = id.trim();
    assert_eq!(
        ok(daemon.loopctl(&["proc", "signal", id, "TERM"])).trim(),
        "sent"
    );
    let waited = daemon.loopctl(&["proc", "wait", id]);
    assert_eq!(waited.status.code(), Some(128 + libc::SIGTERM));
    assert!(ok(daemon.loopctl(&["proc", "kill", id])).contains("not sent"));

    let unknown = daemon.loopctl(&["proc", "kill", "999999"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(stderr(&unknown).contains("NOT_FOUND") && stderr(&unknown).contains("999999"));
}

#[test]
fn signal_commands_add_list_and_remove_handlers() {
    let daemon = Daemon::start();
    assert!(ok(daemon.loopctl(&["signal", "add", "USR2", "--tag", "t"])).contains("SIGUSR2"));
    let listed = ok(daemon.loopctl(&["signal", "ls"]));
    assert!(
        listed.contains("SIGUSR2") && listed.contains("emit_event"),
        "{listed}"
    );
    assert_eq!(
        ok(daemon.loopctl(&["signal", "rm", "SIGUSR2"])).trim(),
        "removed"
    );
    assert_eq!(
        ok(daemon.loopctl(&["signal", "rm", "SIGUSR2"])).trim(),
        "no handler"
    );
    let refused = daemon.loopctl(&["signal", "add", "KILL"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).contains("INVALID_ARGUMENT") && stderr(&refused).contains("SIGKILL"));
}

fn mkfifo(path: &std::path::Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("no NUL");
    // SAFETY: `c` is a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

#[test]
fn fifo_commands_copy_a_named_pipe_both_ways() {
    let daemon = Daemon::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("pipe");
    mkfifo(&path);
    let shown = path.to_str().expect("utf-8 path");
    let payload: Vec<u8> = (0..(3u32 << 20)).map(|i| (i % 251) as u8).collect();

    // The daemon reads what a local writer sends (more than a pipe holds) until it closes.
    let reader = daemon
        .loopctl_command(&["fifo", "read", shown])
        .spawn()
        .expect("spawn loopctl");
    let writer = {
        let (path, payload) = (path.clone(), payload.clone());
        std::thread::spawn(move || std::fs::write(path, payload))
    };
    let output = finish(reader);
    writer.join().expect("writer").expect("write");
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        output.stdout == payload,
        "{} of {} bytes",
        output.stdout.len(),
        payload.len()
    );

    // The daemon writes stdin to a local reader; it needs the reader's end open first.
    let local = {
        let path = path.clone();
        std::thread::spawn(move || std::fs::read(path))
    };
    let deadline = std::time::Instant::now() + LIMIT;
    let output = loop {
        let output = run_with(&daemon, &["fifo", "write", shown], &payload);
        if output.status.success() || std::time::Instant::now() > deadline {
            break output;
        }
        // FAILED_PRECONDITION (ENXIO) until the local reader has opened the FIFO.
        assert!(
            stderr(&output).contains("FAILED_PRECONDITION"),
            "{}",
            stderr(&output)
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(local.join().expect("reader").expect("read") == payload);

    // Not a FIFO, or missing: exit 1 with the daemon's code and the path.
    let plain = dir.path().join("plain");
    std::fs::write(&plain, b"x").expect("file");
    for (bad, code) in [
        (plain, "INVALID_ARGUMENT"),
        (dir.path().join("missing"), "NOT_FOUND"),
    ] {
        let output = daemon.loopctl(&["fifo", "read", bad.to_str().expect("utf-8")]);
        assert_eq!(output.status.code(), Some(1));
        let message = stderr(&output);
        assert!(
            message.contains(code) && message.contains(bad.to_str().unwrap()),
            "{message}"
        );
    }
}
