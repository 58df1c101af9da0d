//! ProcessService against a real daemon and real children: argv byte for byte, exit
//! statuses, stdio modes, stdin, lossless output, process groups, reaping, event order,
//! environment and descriptor hygiene, bad input.

mod support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use loopd_client::{
    Action, Client, Code, Command, EventBody, EventKind, OutputFd, ProcessId, Stdio,
    SubscribeOptions,
};
use sha2::{Digest, Sha256};
use support::{Daemon, WAIT};
use tokio_stream::StreamExt;

async fn client(daemon: &Daemon) -> Client {
    Client::from_channel(daemon.channel().await)
}

/// Runs `cmd` to the end: (returncode, stdout, stderr).
async fn run(client: &Client, cmd: Command) -> (i32, Vec<u8>, Vec<u8>) {
    let cmd = cmd.hold_output_until_read(true);
    let p = client.spawn("", &cmd).await.expect("spawn");
    let id = p.process_id;
    let (out, err) = tokio::join!(
        client.read_output_to_end("", id, OutputFd::Stdout),
        client.read_output_to_end("", id, OutputFd::Stderr),
    );
    let done = tokio::time::timeout(WAIT, client.wait_process("", id, None))
        .await
        .expect("exits in time")
        .expect("wait");
    let status = done.exit().expect("exited");
    (
        status.returncode,
        out.unwrap_or_default(),
        err.unwrap_or_default(),
    )
}

/// The status of a call that must fail.
fn failed<T>(result: loopd_client::Result<T>, what: &str) -> (Code, String) {
    match result {
        Ok(_) => panic!("{what}: succeeded"),
        Err(err) => status_of(err),
    }
}

fn status_of(err: loopd_client::Error) -> (Code, String) {
    match err {
        loopd_client::Error::Status { code, message } => (code, message),
        other => panic!("not a status: {other}"),
    }
}

/// Arguments full of what shells and parsers trip on, plus bytes that are not UTF-8.
fn nasty_args(n: usize) -> Vec<Vec<u8>> {
    const PIECES: &[&[u8]] = &[
        b"'",
        b"\"",
        b"\\",
        b"$HOME",
        b"`id`",
        b"$(id)",
        b";",
        b"&&",
        b"|",
        b">",
        b"<",
        b"*",
        b"?",
        b"[a]",
        b"{a,b}",
        b"~",
        b"#",
        b"!",
        b"\n",
        b"\r\n",
        b"\t",
        b" ",
        b"  ",
        b"-",
        b"--",
        b"-n",
        b"%s",
        b"%%",
        b"\xff\xfe",
        b"\xc3\xa9",
        b"\xe2\x80\xae",
        b"",
        b"a",
        b"=",
        b"x=y",
        b"\x1b[31m",
        b"\x7f",
    ];
    let mut rng = fastrand::Rng::with_seed(5);
    (0..n)
        .map(|i| {
            if i % 97 == 0 {
                return Vec::new(); // empty arguments must survive too
            }
            let mut arg = Vec::new();
            for _ in 0..rng.usize(1..6) {
                arg.extend_from_slice(PIECES[rng.usize(..PIECES.len())]);
            }
            arg
        })
        .collect()
}

#[tokio::test]
async fn argv_reaches_the_child_byte_for_byte() {
    let daemon = Daemon::start();
    let client = client(&daemon).await;
    let args = nasty_args(1000);
    for batch in args.chunks(125) {
        // printf prints each of "$@" followed by a NUL: the child's argv as it got it.
        let cmd = Command::from_argv(["sh", "-c", "printf '%s\\0' \"$@\"", "sh"])
            .args(batch.iter().cloned());
        let (rc, out, _) = run(&client, cmd).await;
        assert_eq!(rc, 0);
        let got: Vec<&[u8]> = out.split(|&b| b == 0).collect();
        let got = &got[..got.len() - 1]; // after the last NUL
        assert_eq!(got.len(), batch.len());
        for (i, (got, want)) in got.iter().zip(batch).enumerate() {
            assert_eq!(got, want, "argument {i}");
        }
    }
}

#[tokio::test]
async fn exit_codes_and_signals_are_asyncio_returncodes() {
    let daemon = Daemon::start();
    let client = client(&daemon).await;
    let cases: &[(&str, i32)] = &[
        ("exit 0", 0),
        ("exit 3", 3),
        ("exit 255", 255),
        ("kill -TERM $$", -libc::SIGTERM),
        ("kill -KILL $$", -libc::SIGKILL),
        ("kill -USR1 $$", -libc::SIGUSR1),
    ];
    for (script, want) in cases {
        let (rc, _, _) = run(&client, Command::from_argv(["sh", "-c", script])).await;
        assert_eq!(rc, *want, "{script}");
    }
}

#[tokio::test]
async fn stderr_merges_into_stdout_and_devnull_is_not_a_pipe() {
    let daemon = Daemon::start();
    let client = client(&daemon).await;
    let script = "echo out; echo err >&2; echo out2";
    let merged = Command::from_argv(["sh", "-c", script]).stderr(Stdio::Stdout);
    let p = client.spawn("", &merged).await.expect("spawn");
    let out = client
        .read_output_to_end("", p.process_id, OutputFd::Stdout)
        .await
        .expect("stdout");
    assert_eq!(out, b"out\nerr\nout2\n");
    let err = client
        .read_output("", p.process_id, OutputFd::Stderr, 0)
        .await;
    let (code, message) = failed(err, "stderr is not a pipe");
    assert_eq!(code, Code::FailedPrecondition);
    assert!(message.contains("fd 2"), "{message}");

    let quiet = Command::from_argv(["sh", "-c", "echo lost; cat"]).stdout(Stdio::DevNull);
    let p = client.spawn("", &quiet).await.expect("spawn");
    let done = client
        .wait_process("", p.process_id, Some(WAIT))
        .await
        .expect("wait");
    assert_eq!(
        done.exit().map(|s| s.returncode),
        Some(0),
        "cat read /dev/null"
    );
    assert_eq!(done.stdout_bytes, 0);
    let (code, _) = failed(
        client
            .read_output("", p.process_id, OutputFd::Stdout, 0)
            .await,
        "DEVNULL",
    );
    assert_eq!(code, Code::FailedPrecondition);
}

#[tokio::test]
async fn stdin_is_written_then_closed() {
    let daemon = Daemon::start();
    let client = client(&daemon).await;
    let cat = Command::new("cat")
        .stdin(Stdio::Pipe)
        .hold_output_until_read(true);
    let p = client.spawn("", &cat).await.expect("spawn");
    let id = p.process_id;
    assert!(p.stdin_open);
    client
        .write_stdin("", id, b"hello ".to_vec(), false)
        .await
        .expect("write");
    client
        .write_stdin("", id, b"world".to_vec(), false)
        .await
        .expect("write");
    client.close_stdin("", id).await.expect("close");
    client
        .close_stdin("", id)
        .await
        .expect("closing twice is fine");
    let out = client
        .read_output_to_end("", id, OutputFd::Stdout)
        .await
        .expect("out");
    assert_eq!(out, b"hello world");
    let done = client.wait_process("", id, Some(WAIT)).await.expect("wait");
    assert!(!done.stdin_open);
    let (code, message) = status_of(
        client
            .write_stdin("", id, b"late".to_vec(), false)
            .await
            .expect_err("closed"),
    );
    assert_eq!(code, Code::FailedPrecondition, "{message}");
    assert!(message.contains(&format!("process {id}")), "{message}");
}

#[tokio::test]
async fn sixty_four_mib_of_output_arrive_intact() {
    let daemon = Daemon::start();
    let client = client(&daemon).await;
    // Varied bytes (not zeros), so that a lost or repeated chunk changes the hash.
    let argv = ["sh", "-c", "seq 1 8600000 | head -c 67108864"];
    let cmd = Command::from_argv(argv)
        .stderr(Stdio::DevNull)
        .hold_output_until_read(true);
    let p = client.spawn("", &cmd).await.expect("spawn");
    let mut reader = client
        .read_output("", p.process_id, OutputFd::Stdout, 0)
        .await
        .expect("read");
    let mut hash = Sha256::new();
    let mut total = 0u64;
    let read_all = async {
        while let Some(chunk) = reader.next().await.expect("chunk") {
            assert_eq!(chunk.offset, total, "no hole, no overlap");
            total += chunk.data.len() as u64;
            hash.update(&chunk.data);
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read_all)
        .await
        .expect("64 MiB within a minute");
    let local = std::process::Command::new("sh")
        .args(["-c", argv[2]])
        .output()
        .expect("run locally");
    assert_eq!(total, 64 << 20);
    assert_eq!(hash.finalize()[..], Sha256::digest(&local.stdout)[..]);
}

/// Pids whose process group is `pgid`, from /proc.
fn group_members(pgid: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Some((state, _, group)) = stat(pid) {
            if group == pgid && state != 'Z' {
                pids.push(pid);
            }
        }
    }
    pids
}

/// (state, ppid, pgrp) of `pid`, from /proc/PID/stat.
fn stat(pid: u32) -> Option<(char, u32, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, ppid, pgrp))
}

#[tokio::test]
async fn kill_takes_the_whole_process_group() {
    let daemon = Daemon::start();
    let client = client(&daemon).await;
    let cmd = Command::from_argv(["sh", "-c", "sleep 100 & sleep 100 & wait"]);
    let p = client.spawn("", &cmd).await.expect("spawn");
    assert_eq!(p.pgid, p.pid, "a new group by default");
    let deadline = std::time::Instant::now() + WAIT;
    let members = loop {
        let members = group_members(p.pgid);
        if members.len() == 3 {
            break members;
        }
        assert!(std::time::Instant::now() < deadline, "group {members:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(client.kill("", p.process_id).await.expect("kill"));
    let done = client
        .wait_process("", p.process_id, Some(WAIT))
        .await
        .expect("wait");
    assert_eq!(done.exit().map(|s| s.returncode), Some(-libc::SIGKILL));
    let deadline = std::time::Instant::now() + WAIT;
    while members
        .iter()
        .any(|&pid| stat(pid).is_some_and(|(s, ..)| s != 'Z'))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{members:?} still run"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !client.kill("", p.process_id).await.expect("kill again"),
        "already exited"
    );
}

/// Zombie children of `pid`.
fn zombies_of(pid: u32) -> Vec<u32> {
    let mut zombies = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if stat(child).is_some_and(|(state, ppid, _)| state == 'Z' && ppid == pid) {
            zombies.push(child);
        }
    }
    zombies
}

/// Spawns `n` short children in rounds of `in_flight` concurrent spawns, waiting for
/// each round to exit before the next.
async fn spawn_many(client: &Client, n: usize, in_flight: usize) -> Vec<ProcessId> {
    let mut ids = Vec::with_capacity(n);
    for round in (0..n).collect::<Vec<_>>().chunks(in_flight) {
        let spawns = round.iter().map(|i| {
            let cmd = Command::from_argv(["echo", &format!("child {i}")]);
            let client = client.clone();
            async move { client.spawn("", &cmd).await.expect("spawn").process_id }
        });
        let round_ids = futures_util::future::join_all(spawns).await;
        let waits = round_ids
            .iter()
            .map(|&id| client.wait_process("", id, Some(WAIT)));
        for done in futures_util::future::join_all(waits).await {
            assert!(
                done.expect("wait").exit().is_some(),
                "exited within {WAIT:?}"
            );
        }
        ids.extend(round_ids);
    }
    ids
}

#[tokio::test]
async fn a_thousand_children_leave_no_zombie() {
    let daemon = Daemon::start();
    let client = client(&daemon).await;
    spawn_many(&client, 1000, 50).await;
    assert_eq!(zombies_of(daemon.pid()), Vec::<u32>::new());
}

/// Checks started < output < exited per process, over `n` children.
async fn events_keep_causal_order(n: usize) {
    let daemon = Daemon::start();
    let client = client(&daemon).await;
    let options = SubscribeOptions {
        kinds: vec![
            EventKind::ProcessStarted,
            EventKind::ProcessOutput,
            EventKind::ProcessExited,
        ],
        ..SubscribeOptions::default()
    };
    let mut events = client.subscribe("", &options).await.expect("subscribe");
    let ids = spawn_many(&client, n, 64).await;
    let mut state: HashMap<ProcessId, (u8, u64)> = HashMap::new();
    let mut exited = 0;
    let deadline = tokio::time::Instant::now() + WAIT * 4;
    while exited < n {
        let event = tokio::time::timeout_at(deadline, events.next())
            .await
            .expect("events in time")
            .expect("stream open")
            .expect("event");
        match event.body {
            EventBody::ProcessStarted { process_id, .. } => {
                let prev = state.insert(process_id, (1, 0));
                assert!(prev.is_none(), "{process_id} started twice");
            }
            EventBody::ProcessOutput {
                process_id,
                offset,
                data,
                ..
            } => {
                let s = state.get_mut(&process_id).expect("output after started");
                assert_eq!(s.0, 1, "{process_id}: output after exit");
                assert_eq!(offset, s.1, "{process_id}: contiguous output");
                s.1 += data.len() as u64;
            }
            EventBody::ProcessExited {
                process_id, exit, ..
            } => {
                let s = state.get_mut(&process_id).expect("exit after started");
                assert_eq!(s.0, 1, "{process_id} exited twice");
                assert!(s.1 > 0, "{process_id}: exit before its output");
                assert_eq!(exit.returncode, 0);
                s.0 = 2;
                exited += 1;
            }
            EventBody::Gap { .. } => panic!("the ring dropped events"),
            other => panic!("unexpected {other:?}"),
        }
    }
    let seen: HashSet<ProcessId> = state.keys().copied().collect();
    assert_eq!(seen, ids.into_iter().collect());
}

/// The figure, run by default: about a minute in a debug build on 2 cores.
#[tokio::test]
async fn ten_thousand_children_keep_event_order() {
    events_keep_causal_order(10_000).await;
}

#[tokio::test]
async fn the_environment_is_scrubbed() {
    let daemon = Daemon::start();
    let client = client(&daemon).await;
    let cmd = Command::new("env")
        .env("MY_VAR", "a b\nc")
        .env("HOME", "/nowhere");
    let (rc, out, _) = run(&client, cmd).await;
    assert_eq!(rc, 0);
    let out = String::from_utf8(out).expect("utf-8");
    let names: HashSet<&str> = out
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    let allowed: HashSet<&str> = ["PATH", "HOME", "LANG", "LC_ALL", "TZ", "MY_VAR"].into();
    assert!(names.is_subset(&allowed), "{names:?}");
    assert!(out.contains("MY_VAR=a b\nc\n"), "{out}");
    assert!(
        out.contains("HOME=/nowhere\n"),
        "the request overrides: {out}"
    );
    for reserved in ["NOTIFY_SOCKET", "LISTEN_FDS", "WATCHDOG_USEC"] {
        let cmd = Command::new("env").env(reserved, "1");
        let (code, message) = status_of(client.spawn("", &cmd).await.expect_err(reserved));
        assert_eq!(code, Code::InvalidArgument);
        assert!(message.contains(reserved), "{message}");
    }
}

#[tokio::test]
async fn children_inherit_only_fds_0_to_2() {
    let daemon = Daemon::start();
    let client = client(&daemon).await;
    // Give the daemon more descriptors to leak: a child with pipes and a subscriber.
    let busy = Command::new("sleep").arg("5").stdin(Stdio::Pipe);
    let busy = client.spawn("", &busy).await.expect("spawn");
    let _events = client
        .subscribe("", &SubscribeOptions::default())
        .await
        .expect("subscribe");
    // `ls` itself opens the directory it lists: that one is allowed.
    let cmd = Command::from_argv(["sh", "-c", "exec ls -l /proc/self/fd/"]);
    let (rc, out, _) = run(&client, cmd).await;
    assert_eq!(rc, 0);
    let out = String::from_utf8_lossy(&out);
    let mut fds = Vec::new();
    for line in out.lines().filter(|l| l.contains(" -> ")) {
        let (left, target) = line.split_once(" -> ").expect("a link");
        let fd: u32 = left
            .rsplit(' ')
            .next()
            .and_then(|f| f.parse().ok())
            .expect("fd");
        if fd > 2 {
            assert!(
                target.starts_with("/proc/") && target.ends_with("/fd"),
                "fd {fd} -> {target}"
            );
        }
        fds.push(fd);
    }
    assert!(fds.len() <= 4, "{out}");
    assert_eq!(&fds[..3], [0, 1, 2], "{out}");
    client.kill("", busy.process_id).await.expect("kill");
}

#[tokio::test]
async fn bad_input_gets_the_right_code_naming_the_value() {
    let daemon = Daemon::start();
    let client = client(&daemon).await;
    let cases: Vec<(Command, Code, &str)> = vec![
        (
            Command::new("no-such-program-xyz"),
            Code::NotFound,
            "no-such-program-xyz",
        ),
        (
            Command::new("/etc/passwd"),
            Code::PermissionDenied,
            "/etc/passwd",
        ),
        (
            Command::new("echo").arg(b"a\0b".to_vec()),
            Code::InvalidArgument,
            "argv[1]",
        ),
        (
            Command::from_argv(Vec::<&str>::new()),
            Code::InvalidArgument,
            "argv",
        ),
        (
            Command::shell("echo hi"),
            Code::FailedPrecondition,
            "allow_shell",
        ),
        (
            Command::new("true").cwd("/no/such/dir"),
            Code::InvalidArgument,
            "/no/such/dir",
        ),
        (
            Command::new("true").cwd(b"/tmp\0".to_vec()),
            Code::InvalidArgument,
            "cwd",
        ),
        (
            Command::new("true").env("A=B", "1"),
            Code::InvalidArgument,
            "A=B",
        ),
        (
            Command::new("true").stdout(Stdio::Stdout),
            Code::InvalidArgument,
            "stdout",
        ),
    ];
    for (cmd, want, needle) in cases {
        let (code, message) = status_of(client.spawn("", &cmd).await.expect_err(needle));
        assert_eq!(code, want, "{needle}: {message}");
        assert!(message.contains(needle), "{needle}: {message}");
    }
    let unknown = ProcessId(999_999);
    let (code, message) = status_of(client.kill("", unknown).await.expect_err("unknown"));
    assert_eq!(code, Code::NotFound);
    assert!(message.contains("999999"), "{message}");
    let (code, _) = status_of(client.get_process("", unknown).await.expect_err("unknown"));
    assert_eq!(code, Code::NotFound);
    let (code, _) = status_of(
        client
            .spawn("nope", &Command::new("true"))
            .await
            .expect_err("loop"),
    );
    assert_eq!(code, Code::NotFound);
    let p = client
        .spawn("", &Command::new("true"))
        .await
        .expect("spawn");
    let (code, message) = status_of(
        client
            .send_signal("", p.process_id, "SIGNOPE", false)
            .await
            .expect_err("bad signal"),
    );
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("SIGNOPE"), "{message}");
    client
        .wait_process("", p.process_id, Some(WAIT))
        .await
        .expect("wait");
    let (code, message) = failed(
        client
            .read_output("", p.process_id, OutputFd::Stdout, 1_000)
            .await,
        "beyond",
    );
    assert_eq!(code, Code::OutOfRange);
    assert!(message.contains("1000"), "{message}");
}

#[tokio::test]
async fn shell_commands_run_when_the_config_allows_them() {
    let daemon = Daemon::start_with("[process]\nallow_shell = true\n");
    let client = client(&daemon).await;
    let (rc, out, _) = run(&client, Command::shell("echo \"$((6 * 7))\"; exit 4")).await;
    assert_eq!((rc, out), (4, b"42\n".to_vec()));
}

#[tokio::test]
async fn timers_spawn_and_signal_processes() {
    let daemon = Daemon::start();
    let client = client(&daemon).await;
    let sleeper = client
        .spawn("", &Command::new("sleep").arg("100"))
        .await
        .expect("spawn");
    let signal = Action::SignalProcess {
        process_id: sleeper.process_id,
        signal: "TERM".into(),
        to_group: false,
    };
    client
        .call_later("", Duration::from_millis(10), signal)
        .await
        .expect("schedule the signal");
    let done = client
        .wait_process("", sleeper.process_id, Some(WAIT))
        .await
        .expect("wait");
    assert_eq!(done.exit().map(|s| s.returncode), Some(-libc::SIGTERM));

    let options = SubscribeOptions {
        kinds: vec![EventKind::ProcessExited],
        ..SubscribeOptions::default()
    };
    let mut events = client.subscribe("", &options).await.expect("subscribe");
    let spawn = Action::SpawnProcess(Command::from_argv(["sh", "-c", "exit 7"]));
    client
        .call_soon("", spawn)
        .await
        .expect("schedule the spawn");
    let event = tokio::time::timeout(WAIT, events.next())
        .await
        .expect("in time")
        .expect("open")
        .expect("event");
    let EventBody::ProcessExited { exit, .. } = event.body else {
        panic!("{event:?}");
    };
    assert_eq!(exit.returncode, 7);

    let (code, _) = status_of(
        client
            .call_soon(
                "",
                Action::SignalProcess {
                    process_id: ProcessId(424_242),
                    signal: "TERM".into(),
                    to_group: false,
                },
            )
            .await
            .expect_err("unknown process"),
    );
    assert_eq!(code, Code::NotFound);
    let (code, _) = status_of(
        client
            .call_soon("", Action::SpawnProcess(Command::shell("true")))
            .await
            .expect_err("shell disabled"),
    );
    assert_eq!(code, Code::FailedPrecondition);
}

#[tokio::test]
async fn shutdown_terminates_children_by_group() {
    let mut daemon = Daemon::start_with("[process]\nkill_grace_secs = 1\n");
    let client = client(&daemon).await;
    // The shell ignores SIGTERM, so only the SIGKILL after the grace period ends it.
    let stubborn = Command::from_argv(["sh", "-c", "trap '' TERM; sleep 100 & wait; sleep 100"]);
    let p = client.spawn("", &stubborn).await.expect("spawn");
    let plain = client
        .spawn("", &Command::new("sleep").arg("100"))
        .await
        .expect("spawn");
    tokio::time::sleep(Duration::from_millis(100)).await;
    daemon.sigterm();
    assert!(daemon.wait_exit(WAIT).is_some(), "daemon exits");
    for pid in [p.pid, plain.pid] {
        let deadline = std::time::Instant::now() + WAIT;
        while stat(pid).is_some_and(|(s, ..)| s != 'Z') {
            assert!(std::time::Instant::now() < deadline, "pid {pid} survived");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    assert!(group_members(p.pgid).is_empty(), "the group is gone");
}

/// `future`'s output, or a panic after [`WAIT`].
async fn bounded<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(WAIT, future)
        .await
        .expect("answered in time")
}

/// Joins a thread, or panics after [`WAIT`] (the thread is left behind).
fn bounded_join<T: Send + 'static>(handle: std::thread::JoinHandle<T>) -> T {
    let deadline = std::time::Instant::now() + WAIT;
    while !handle.is_finished() {
        assert!(
            std::time::Instant::now() < deadline,
            "thread still runs after {WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    handle.join().expect("thread")
}

fn mkfifo(path: &std::path::Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("no NUL");
    // SAFETY: `c` is a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// A new FIFO in a new temporary directory: the directory, the path, the path's bytes.
fn new_fifo() -> (tempfile::TempDir, std::path::PathBuf, Vec<u8>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("pipe");
    mkfifo(&path);
    let bytes = path.as_os_str().as_encoded_bytes().to_vec();
    (dir, path, bytes)
}

#[tokio::test]
async fn fifos_carry_bytes_both_ways() {
    let daemon = Daemon::start();
    let client = client(&daemon).await;
    let (dir, path, bytes) = new_fifo();
    // The daemon reads, a local writer writes 3 MiB (more than the window) and closes.
    let reading = bounded(client.open_fifo("", bytes.clone(), false, 0))
        .await
        .expect("open");
    let mut reader = bounded(client.read_fifo("", reading, 0))
        .await
        .expect("read");
    let payload: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8).collect();
    let writer_path = path.clone();
    let sent = payload.clone();
    let writer = std::thread::spawn(move || std::fs::write(writer_path, sent));
    let mut got = Vec::new();
    let read_all = async {
        while let Some(chunk) = reader.next().await.expect("chunk") {
            got.extend_from_slice(&chunk.data);
        }
    };
    tokio::time::timeout(WAIT, read_all)
        .await
        .expect("read in time");
    bounded_join(writer).expect("write");
    assert!(got == payload, "{} of {} bytes", got.len(), payload.len());

    // The daemon writes, a local reader reads.
    let reader_path = path.clone();
    let local = std::thread::spawn(move || std::fs::read(reader_path));
    let deadline = std::time::Instant::now() + WAIT;
    let writing = loop {
        match bounded(client.open_fifo("", bytes.clone(), true, 0)).await {
            Ok(id) => break id,
            // ENXIO until the local reader has opened its end.
            Err(err) if err.code() == Some(Code::FailedPrecondition) => {
                assert!(std::time::Instant::now() < deadline, "{err}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(err) => panic!("{err}"),
        }
    };
    let write = client.write_fifo("", writing, b"hello ".to_vec(), false);
    bounded(write).await.expect("write");
    let write = client.write_fifo("", writing, b"fifo".to_vec(), true);
    bounded(write).await.expect("write+eof");
    assert_eq!(bounded_join(local).expect("read"), b"hello fifo");
    let (code, _) = failed(
        client.write_fifo("", writing, b"x".to_vec(), false).await,
        "closed",
    );
    assert_eq!(code, Code::FailedPrecondition);
    let (code, message) = failed(client.read_fifo("", writing, 0).await, "a write fifo");
    assert_eq!(code, Code::FailedPrecondition);
    assert!(message.contains("writing"), "{message}");

    let plain = dir.path().join("plain");
    std::fs::write(&plain, b"x").expect("file");
    let cases: Vec<(Vec<u8>, Code, &str)> = vec![
        (
            plain.as_os_str().as_encoded_bytes().to_vec(),
            Code::InvalidArgument,
            "not a FIFO",
        ),
        (b"/no/such/fifo".to_vec(), Code::NotFound, "/no/such/fifo"),
        (b"".to_vec(), Code::InvalidArgument, "path"),
        (b"/tmp/a\0b".to_vec(), Code::InvalidArgument, "NUL"),
    ];
    for (path, want, needle) in cases {
        let (code, message) = failed(client.open_fifo("", path, false, 0).await, needle);
        assert_eq!(code, want, "{message}");
        assert!(message.contains(needle), "{message}");
    }
    let (code, _) = failed(
        client.write_fifo("", 777_777, b"x".to_vec(), false).await,
        "unknown",
    );
    assert_eq!(code, Code::NotFound);
}

#[tokio::test]
async fn closing_a_fifo_ends_its_readers_and_forgets_it() {
    let daemon = Daemon::start();
    let client = client(&daemon).await;
    let (_dir, _path, bytes) = new_fifo();
    // No writer ever comes: without CloseFifo this reader would wait forever.
    let id = bounded(client.open_fifo("", bytes, false, 0))
        .await
        .expect("open");
    let mut reader = bounded(client.read_fifo("", id, 0)).await.expect("read");
    bounded(client.close_fifo("", id)).await.expect("close");
    let end = tokio::time::timeout(WAIT, reader.next())
        .await
        .expect("the reader ends in time");
    let chunk = end.expect("stream ok").expect("a last chunk");
    assert!(chunk.data.is_empty(), "no writer, no bytes");
    match chunk.end {
        Some(loopd_client::StreamEnd::Error(why)) => assert!(why.contains("CloseFifo"), "{why}"),
        other => panic!("the stream ends with the close, not at end of file: {other:?}"),
    }

    for (what, outcome) in [
        ("closed twice", client.close_fifo("", id).await),
        ("unknown", client.close_fifo("", 777_777).await),
    ] {
        let (code, message) = failed(outcome, what);
        assert_eq!(code, Code::NotFound, "{what}: {message}");
        assert!(
            message.contains(&format!("{}", if what == "unknown" { 777_777 } else { id })),
            "{message}"
        );
    }
    let (code, _) = failed(client.read_fifo("", id, 0).await, "forgotten");
    assert_eq!(code, Code::NotFound);
}
