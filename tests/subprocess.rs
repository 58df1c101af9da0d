//! Subprocesses against real children. Every test below is a function of the child
//! watcher that reaps them, instantiated once per watcher by `for_each_watcher!`, so the
//! pidfd and the threaded watcher pass the same suite. Every wait is bounded by a safety
//! timer; the children here take milliseconds.

use std::cell::{Cell, RefCell};
use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use loopd::{
    ChildWatcher, Error, EventLoop, Stdio, SubprocessOptions, SubprocessProtocol,
    SubprocessTransport,
};

/// Longest any test waits.
const SAFETY: Duration = Duration::from_secs(10);

/// Children run at once in the batch tests (each holds up to 3 pipes and a pidfd).
const BATCH: usize = 50;

type Watcher = Arc<dyn ChildWatcher>;

macro_rules! for_each_watcher {
    ($($test:ident),* $(,)?) => {
        mod pidfd {
            $(#[test] fn $test() { super::$test(std::sync::Arc::new(loopd::PidfdChildWatcher::new())) })*
        }
        mod threaded {
            $(#[test] fn $test() { super::$test(std::sync::Arc::new(loopd::ThreadedChildWatcher::new())) })*
        }
    };
}

for_each_watcher!(
    argv_reaches_the_child_byte_for_byte,
    returncodes_are_exit_codes_or_minus_the_signal,
    terminate_and_kill_give_negative_returncodes,
    stderr_can_be_merged_into_stdout,
    devnull_and_inherit_make_no_pipes,
    stdin_is_written_then_closed,
    eight_mib_round_trip_intact,
    two_hundred_children_leave_no_zombie,
    events_keep_causal_order_for_a_hundred_children,
    close_kills_the_child_and_closes_every_pipe,
    a_reaped_child_is_never_signalled,
    shell_env_and_cwd_are_honoured,
    bad_input_is_an_error_naming_it,
    a_new_process_group_is_led_by_the_child,
    paused_pipes_hold_their_data_until_resumed,
    the_protocol_may_close_the_transport_from_a_callback,
    closing_the_loop_under_a_running_child_is_safe,
    a_full_stdin_queue_pauses_then_resumes_writing,
    only_stdio_is_inherited,
    process_metrics_count_spawned_running_and_exited_children,
);

// ---- a recording protocol -------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Made,
    Data(i32, Vec<u8>),
    Lost(i32, Option<io::ErrorKind>),
    Exited(Option<i32>),
    ConnectionLost,
    PauseWriting,
    ResumeWriting,
}

/// Records every event; counts finished children in `done`.
struct Recorder {
    events: Rc<RefCell<Vec<Ev>>>,
    transport: Option<SubprocessTransport>,
    done: Rc<Cell<usize>>,
    /// Close the transport from inside the first `pipe_data_received`.
    close_on_data: bool,
}

impl SubprocessProtocol for Recorder {
    fn connection_made(&mut self, transport: &SubprocessTransport) {
        self.transport = Some(transport.clone());
        self.events.borrow_mut().push(Ev::Made);
    }
    fn pipe_data_received(&mut self, fd: i32, data: &[u8]) {
        let mut events = self.events.borrow_mut();
        // Coalesce consecutive chunks of one pipe: how the child's writes are split is
        // not part of the contract.
        if let Some(Ev::Data(last, buf)) = events.last_mut() {
            if *last == fd {
                buf.extend_from_slice(data);
                return;
            }
        }
        events.push(Ev::Data(fd, data.to_vec()));
        drop(events);
        if self.close_on_data {
            if let Some(transport) = &self.transport {
                transport.close();
            }
        }
    }
    fn pipe_connection_lost(&mut self, fd: i32, error: Option<io::Error>) {
        let kind = error.map(|e| e.kind());
        self.events.borrow_mut().push(Ev::Lost(fd, kind));
    }
    fn pause_writing(&mut self) {
        self.events.borrow_mut().push(Ev::PauseWriting);
    }
    fn resume_writing(&mut self) {
        self.events.borrow_mut().push(Ev::ResumeWriting);
    }
    fn process_exited(&mut self) {
        let code = self.transport.as_ref().and_then(|t| t.get_returncode());
        self.events.borrow_mut().push(Ev::Exited(code));
    }
    fn connection_lost(&mut self, _error: Option<io::Error>) {
        self.events.borrow_mut().push(Ev::ConnectionLost);
        self.transport = None;
        self.done.set(self.done.get() + 1);
    }
}

/// One started child and what it reported.
struct Run {
    transport: SubprocessTransport,
    events: Rc<RefCell<Vec<Ev>>>,
}

impl Run {
    fn events(&self) -> Vec<Ev> {
        self.events.borrow().clone()
    }
    /// Everything received on `fd`.
    fn output(&self, fd: i32) -> Vec<u8> {
        let mut out = Vec::new();
        for ev in self.events.borrow().iter() {
            if let Ev::Data(f, data) = ev {
                if *f == fd {
                    out.extend_from_slice(data);
                }
            }
        }
        out
    }
    fn returncode(&self) -> Option<i32> {
        self.transport.get_returncode()
    }
}

fn options(watcher: &Watcher) -> SubprocessOptions {
    SubprocessOptions {
        watcher: Some(watcher.clone()),
        ..Default::default()
    }
}

fn start(
    lp: &EventLoop,
    argv: &[OsString],
    options: SubprocessOptions,
    done: &Rc<Cell<usize>>,
) -> Run {
    let events = Rc::new(RefCell::new(Vec::new()));
    let recorder = Recorder {
        events: events.clone(),
        transport: None,
        done: done.clone(),
        close_on_data: false,
    };
    let transport = lp
        .subprocess_exec(recorder, argv, options)
        .expect("subprocess_exec");
    Run { transport, events }
}

fn os(argv: &[&str]) -> Vec<OsString> {
    argv.iter().map(OsString::from).collect()
}

/// Runs `lp` until `done` reaches `want`; panics if the safety timer fires first.
fn run_until(lp: &EventLoop, done: &Rc<Cell<usize>>, want: usize) {
    let timed_out = Rc::new(Cell::new(false));
    let (flag, stopper) = (timed_out.clone(), lp.clone());
    let safety = lp
        .call_later(SAFETY, move || {
            flag.set(true);
            stopper.stop();
        })
        .unwrap();
    let (stopper, watched) = (lp.clone(), done.clone());
    when(lp, move || watched.get() >= want, move || stopper.stop());
    lp.run_forever().unwrap();
    safety.cancel();
    assert!(
        !timed_out.get(),
        "timed out: {} of {want} finished",
        done.get()
    );
}

/// Runs `then` on `lp` once `cond()` holds, checking every millisecond.
fn when(lp: &EventLoop, cond: impl Fn() -> bool + 'static, then: impl FnOnce() + 'static) {
    fn check(lp: EventLoop, cond: Rc<dyn Fn() -> bool>, then: Box<dyn FnOnce()>) {
        if cond() {
            return then();
        }
        let again = lp.clone();
        lp.call_later(Duration::from_millis(1), move || check(again, cond, then))
            .unwrap();
    }
    let again = lp.clone();
    lp.call_soon(move || check(again, Rc::new(cond), Box::new(then)))
        .unwrap();
}

/// Runs one child to the end.
fn run_one(lp: &EventLoop, argv: &[OsString], options: SubprocessOptions) -> Run {
    let done = Rc::new(Cell::new(0));
    let run = start(lp, argv, options, &done);
    run_until(lp, &done, 1);
    run
}

/// Runs many children, `BATCH` at a time.
fn run_many(
    lp: &EventLoop,
    watcher: &Watcher,
    argvs: impl IntoIterator<Item = Vec<OsString>>,
) -> Vec<Run> {
    let argvs: Vec<_> = argvs.into_iter().collect();
    let mut runs = Vec::new();
    for chunk in argvs.chunks(BATCH) {
        let done = Rc::new(Cell::new(0));
        for argv in chunk {
            runs.push(start(lp, argv, options(watcher), &done));
        }
        run_until(lp, &done, chunk.len());
    }
    runs
}

/// Whether `pid` is gone for good: not even a zombie. Does not reap.
fn is_reaped(pid: u32) -> bool {
    // SAFETY: an all-zero siginfo_t is valid, and `info` outlives the call.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
    let rc = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) };
    rc == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD)
}

// ---- the suite ------------------------------------------------------------------------

/// A random argument full of what a shell would interpret; any byte but NUL.
fn nasty_arg(rng: &mut fastrand::Rng) -> OsString {
    const SPECIAL: &[u8] = b" \t\n'\"\\$`;&|*?()<>!~#{}[]%^=-";
    let len = rng.usize(0..12);
    let bytes = (0..len)
        .map(|_| match rng.u8(0..4) {
            0 => rng.u8(1..=255), // any byte but NUL, including invalid UTF-8
            1 => rng.alphanumeric() as u8,
            _ => SPECIAL[rng.usize(0..SPECIAL.len())],
        })
        .collect();
    OsString::from_vec(bytes)
}

fn argv_reaches_the_child_byte_for_byte(watcher: Watcher) {
    let lp = EventLoop::new().unwrap();
    let mut rng = fastrand::Rng::with_seed(5);
    let cases: Vec<Vec<OsString>> = (0..200)
        .map(|_| (0..rng.usize(0..6)).map(|_| nasty_arg(&mut rng)).collect())
        .collect();
    let argvs = cases.iter().map(|args| {
        // `printf '%s\0' "$@"` with no arguments would still print one NUL.
        let mut argv = os(&["sh", "-c", r#"for a; do printf '%s\0' "$a"; done"#, "sh"]);
        argv.extend(args.iter().cloned());
        argv
    });
    let runs = run_many(&lp, &watcher, argvs);
    for (args, run) in cases.iter().zip(&runs) {
        let mut want = Vec::new();
        for arg in args {
            want.extend_from_slice(arg.as_encoded_bytes());
            want.push(0);
        }
        assert_eq!(run.output(1), want, "args {args:?}");
        assert_eq!(run.returncode(), Some(0));
    }
    lp.close().unwrap();
}

fn returncodes_are_exit_codes_or_minus_the_signal(watcher: Watcher) {
    let lp = EventLoop::new().unwrap();
    let cases = [
        ("exit 0", 0),
        ("exit 3", 3),
        ("exit 255", 255),
        ("kill -KILL $$", -libc::SIGKILL),
        ("kill -TERM $$", -libc::SIGTERM),
        ("kill -USR1 $$", -libc::SIGUSR1),
    ];
    let runs = run_many(
        &lp,
        &watcher,
        cases.iter().map(|(script, _)| os(&["sh", "-c", script])),
    );
    for ((script, want), run) in cases.iter().zip(&runs) {
        assert_eq!(run.returncode(), Some(*want), "{script}");
        assert!(run.events().contains(&Ev::Exited(Some(*want))), "{script}");
    }
    lp.close().unwrap();
}

fn terminate_and_kill_give_negative_returncodes(watcher: Watcher) {
    let lp = EventLoop::new().unwrap();
    type Act = fn(&SubprocessTransport) -> loopd::Result<()>;
    let cases: [(Act, i32); 3] = [
        (SubprocessTransport::terminate, -libc::SIGTERM),
        (SubprocessTransport::kill, -libc::SIGKILL),
        (|t| t.send_signal(libc::SIGUSR1), -libc::SIGUSR1),
    ];
    for (act, want) in cases {
        let done = Rc::new(Cell::new(0));
        let run = start(&lp, &os(&["sleep", "10"]), options(&watcher), &done);
        act(&run.transport).unwrap();
        run_until(&lp, &done, 1);
        assert_eq!(run.returncode(), Some(want));
    }
    lp.close().unwrap();
}

fn stderr_can_be_merged_into_stdout(watcher: Watcher) {
    let lp = EventLoop::new().unwrap();
    let argv = os(&["sh", "-c", "echo out; echo err >&2; echo out2"]);
    let run = run_one(
        &lp,
        &argv,
        SubprocessOptions {
            stderr: Stdio::Stdout,
            ..options(&watcher)
        },
    );
    assert_eq!(run.output(1), b"out\nerr\nout2\n");
    let events = run.events();
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Ev::Data(2, _) | Ev::Lost(2, _)))
    );
    assert!(events.contains(&Ev::Lost(1, None)));

    // Without merging, each goes its own way.
    let run = run_one(&lp, &argv, options(&watcher));
    assert_eq!(
        (run.output(1), run.output(2)),
        (b"out\nout2\n".to_vec(), b"err\n".to_vec())
    );
    lp.close().unwrap();
}

fn devnull_and_inherit_make_no_pipes(watcher: Watcher) {
    let lp = EventLoop::new().unwrap();
    // cat reads end of file from /dev/null at once; its output goes to /dev/null.
    let done = Rc::new(Cell::new(0));
    let run = start(
        &lp,
        &os(&["sh", "-c", "cat; echo gone >&2"]),
        SubprocessOptions {
            stdin: Stdio::DevNull,
            stdout: Stdio::DevNull,
            stderr: Stdio::DevNull,
            ..options(&watcher)
        },
        &done,
    );
    for fd in 0..3 {
        assert!(run.transport.get_pipe_transport(fd).is_none(), "fd {fd}");
    }
    run_until(&lp, &done, 1);
    assert_eq!(
        run.events(),
        [Ev::Made, Ev::Exited(Some(0)), Ev::ConnectionLost]
    );

    // An fd: stdout goes to a file we name.
    let file = tempfile::tempfile().unwrap();
    let mut reader = file.try_clone().unwrap();
    let run = run_one(
        &lp,
        &os(&["echo", "to file"]),
        SubprocessOptions {
            stdin: Stdio::Inherit,
            stdout: Stdio::Fd(file.into()),
            ..options(&watcher)
        },
    );
    assert_eq!(run.returncode(), Some(0));
    assert!(run.output(1).is_empty());
    use std::io::{Read, Seek};
    reader.rewind().unwrap();
    let mut written = String::new();
    reader.read_to_string(&mut written).unwrap();
    assert_eq!(written, "to file\n");
    lp.close().unwrap();
}

fn stdin_is_written_then_closed(watcher: Watcher) {
    let lp = EventLoop::new().unwrap();
    let done = Rc::new(Cell::new(0));
    let run = start(&lp, &os(&["cat"]), options(&watcher), &done);
    let stdin = run.transport.get_pipe_transport(0).expect("stdin pipe");
    stdin.write(b"hello ").unwrap();
    stdin.write(b"world\n").unwrap();
    stdin.write_eof().unwrap();
    assert!(stdin.is_closing());
    assert!(matches!(
        stdin.write(b"late"),
        Err(Error::PipeClosed { fd: 0 })
    ));
    let stdout = run.transport.get_pipe_transport(1).expect("stdout pipe");
    assert!(matches!(
        stdout.write(b"x"),
        Err(Error::InvalidArgument { .. })
    ));
    run_until(&lp, &done, 1);
    assert_eq!(run.output(1), b"hello world\n");
    assert_eq!(run.returncode(), Some(0));
    let events = run.events();
    assert!(events.contains(&Ev::Lost(0, None)), "{events:?}");

    // A child that never reads: what the pipe cannot take stays queued, and the child's
    // death closes stdin with a broken pipe.
    let done = Rc::new(Cell::new(0));
    let run = start(&lp, &os(&["sleep", "10"]), options(&watcher), &done);
    let stdin = run.transport.get_pipe_transport(0).unwrap();
    stdin.write(&vec![b'x'; 1 << 20]).unwrap();
    assert!(stdin.get_write_buffer_size() > 0);
    run.transport.kill().unwrap();
    run_until(&lp, &done, 1);
    let events = run.events();
    assert!(
        events.contains(&Ev::Lost(0, Some(io::ErrorKind::BrokenPipe))),
        "{events:?}"
    );
    lp.close().unwrap();
}

fn eight_mib_round_trip_intact(watcher: Watcher) {
    let lp = EventLoop::new().unwrap();
    let mut rng = fastrand::Rng::with_seed(8);
    let mut data = vec![0; 8 << 20];
    rng.fill(&mut data);
    let done = Rc::new(Cell::new(0));
    let run = start(&lp, &os(&["cat"]), options(&watcher), &done);
    let stdin = run.transport.get_pipe_transport(0).unwrap();
    stdin.write(&data).unwrap();
    stdin.write_eof().unwrap();
    run_until(&lp, &done, 1);
    let out = run.output(1);
    // Compared whole (a memcmp), printed only as lengths.
    assert_eq!(out.len(), data.len());
    assert!(out == data, "8 MiB came back altered");
    assert_eq!(run.returncode(), Some(0));

    // And output the child makes itself.
    let run = run_one(
        &lp,
        &os(&["head", "-c", "8388608", "/dev/zero"]),
        options(&watcher),
    );
    let out = run.output(1);
    assert_eq!(out.len(), 8 << 20);
    assert!(out.iter().all(|&b| b == 0));
    lp.close().unwrap();
}

fn two_hundred_children_leave_no_zombie(watcher: Watcher) {
    let lp = EventLoop::new().unwrap();
    let runs = run_many(&lp, &watcher, (0..200).map(|_| os(&["true"])));
    for run in &runs {
        assert_eq!(run.returncode(), Some(0));
        let pid = run.transport.get_pid();
        assert!(is_reaped(pid), "pid {pid} left a zombie");
    }
    lp.close().unwrap();
}

/// Where `ev` sits in `events`.
fn position(events: &[Ev], ev: impl Fn(&Ev) -> bool) -> Option<usize> {
    events.iter().position(ev)
}

fn events_keep_causal_order_for_a_hundred_children(watcher: Watcher) {
    let lp = EventLoop::new().unwrap();
    let script = "echo out; echo err >&2; exit 7";
    let runs = run_many(&lp, &watcher, (0..100).map(|_| os(&["sh", "-c", script])));
    for run in &runs {
        let events = run.events();
        let at = |f: &dyn Fn(&Ev) -> bool| position(&events, f).expect("event missing");
        assert_eq!(events.first(), Some(&Ev::Made), "{events:?}");
        assert_eq!(events.last(), Some(&Ev::ConnectionLost), "{events:?}");
        let exited = at(&|e| *e == Ev::Exited(Some(7)));
        assert_eq!(exited, events.len() - 2, "{events:?}");
        for fd in [1, 2] {
            let data = at(&|e| matches!(e, Ev::Data(f, _) if *f == fd));
            let lost = at(&|e| *e == Ev::Lost(fd, None));
            assert!(data < lost && lost < exited, "{events:?}");
        }
        assert_eq!(
            (run.output(1), run.output(2)),
            (b"out\n".to_vec(), b"err\n".to_vec())
        );
    }
    lp.close().unwrap();
}

fn close_kills_the_child_and_closes_every_pipe(watcher: Watcher) {
    let lp = EventLoop::new().unwrap();
    let done = Rc::new(Cell::new(0));
    let run = start(&lp, &os(&["sleep", "10"]), options(&watcher), &done);
    run.transport.close();
    run.transport.close(); // idempotent
    assert!(run.transport.is_closing());
    run_until(&lp, &done, 1);
    assert_eq!(run.returncode(), Some(-libc::SIGKILL));
    let events = run.events();
    for fd in 0..3 {
        assert!(events.contains(&Ev::Lost(fd, None)), "{events:?}");
    }
    assert_eq!(
        events[events.len() - 2..],
        [Ev::Exited(Some(-9)), Ev::ConnectionLost]
    );
    assert!(is_reaped(run.transport.get_pid()));
    lp.close().unwrap();
}

fn a_reaped_child_is_never_signalled(watcher: Watcher) {
    let lp = EventLoop::new().unwrap();
    let run = run_one(&lp, &os(&["true"]), options(&watcher));
    assert!(matches!(
        run.transport.send_signal(libc::SIGTERM),
        Err(Error::ProcessLookup(pid)) if pid == run.transport.get_pid()
    ));
    for bad in [-1, 65, 1000] {
        assert!(matches!(
            run.transport.send_signal(bad),
            Err(Error::InvalidSignal(s)) if s == bad
        ));
    }
    // Exited and reaped, but the transport not finished yet (stdout held open by a
    // grandchild): signalling is a no-op, not a shot at a reused pid.
    let done = Rc::new(Cell::new(0));
    let run = start(
        &lp,
        &os(&["sh", "-c", "sleep 0.3 & exit 0"]),
        SubprocessOptions {
            stdin: Stdio::DevNull,
            stderr: Stdio::DevNull,
            ..options(&watcher)
        },
        &done,
    );
    let transport = run.transport.clone();
    let checked = Rc::new(Cell::new(false));
    let flag = checked.clone();
    let reaped = transport.clone();
    when(
        &lp,
        move || reaped.get_returncode() == Some(0),
        move || {
            assert!(transport.send_signal(libc::SIGKILL).is_ok());
            flag.set(true);
        },
    );
    run_until(&lp, &done, 1);
    assert!(
        checked.get(),
        "returncode was never seen before the pipe closed"
    );
    lp.close().unwrap();
}

fn shell_env_and_cwd_are_honoured(watcher: Watcher) {
    let lp = EventLoop::new().unwrap();
    let done = Rc::new(Cell::new(0));
    let events = Rc::new(RefCell::new(Vec::new()));
    let recorder = Recorder {
        events: events.clone(),
        transport: None,
        done: done.clone(),
        close_on_data: false,
    };
    let transport = lp
        .subprocess_shell(recorder, "echo $((1 + 2)) \"$0\"", options(&watcher))
        .unwrap();
    run_until(&lp, &done, 1);
    let run = Run { transport, events };
    assert_eq!(run.output(1), b"3 /bin/sh\n");

    let run = run_one(
        &lp,
        &os(&["/usr/bin/env"]),
        SubprocessOptions {
            env_clear: true,
            env: vec![("FOO".into(), "a b\nc".into())],
            ..options(&watcher)
        },
    );
    assert_eq!(run.output(1), b"FOO=a b\nc\n");

    let dir = tempfile::tempdir().unwrap();
    let run = run_one(
        &lp,
        &os(&["pwd", "-P"]),
        SubprocessOptions {
            cwd: Some(dir.path().to_path_buf()),
            ..options(&watcher)
        },
    );
    let want = dir.path().canonicalize().unwrap();
    assert_eq!(run.output(1), format!("{}\n", want.display()).into_bytes());
    lp.close().unwrap();
}

fn bad_input_is_an_error_naming_it(watcher: Watcher) {
    let lp = EventLoop::new().unwrap();
    let exec = |argv: &[&str], options| {
        let done = Rc::new(Cell::new(0));
        let recorder = Recorder {
            events: Rc::default(),
            transport: None,
            done,
            close_on_data: false,
        };
        lp.subprocess_exec(recorder, argv, options)
    };
    match exec(&["/no/such/program-xyz"], options(&watcher)) {
        Err(err @ Error::Spawn { .. }) => {
            assert!(err.to_string().contains("/no/such/program-xyz"), "{err}");
            let source = std::error::Error::source(&err).unwrap();
            let io = source.downcast_ref::<io::Error>().unwrap();
            assert_eq!(io.kind(), io::ErrorKind::NotFound);
        }
        other => panic!("missing program: {other:?}"),
    }
    match exec(&["echo", "ok", "a\0b"], options(&watcher)) {
        Err(err @ Error::InvalidArgument { .. }) => {
            assert!(err.to_string().contains("argv[2]"), "{err}")
        }
        other => panic!("NUL byte: {other:?}"),
    }
    assert!(matches!(
        exec(&[], options(&watcher)),
        Err(Error::InvalidArgument { what: "argv", .. })
    ));
    watcher.close();
    assert!(matches!(
        exec(&["true"], options(&watcher)),
        Err(Error::ChildWatcherClosed)
    ));
    lp.close().unwrap();
    assert!(matches!(
        exec(&["true"], SubprocessOptions::default()),
        Err(Error::Closed)
    ));
}

fn a_new_process_group_is_led_by_the_child(watcher: Watcher) {
    let lp = EventLoop::new().unwrap();
    // Field 5 of /proc/PID/stat is the process group.
    let argv = os(&["sh", "-c", "cut -d' ' -f5 /proc/$$/stat"]);
    let run = run_one(
        &lp,
        &argv,
        SubprocessOptions {
            process_group: Some(0),
            ..options(&watcher)
        },
    );
    let pid = run.transport.get_pid();
    assert_eq!(run.output(1), format!("{pid}\n").into_bytes());
    // Without it the child stays in ours.
    let run = run_one(&lp, &argv, options(&watcher));
    let ours = unsafe { libc::getpgrp() };
    assert_eq!(run.output(1), format!("{ours}\n").into_bytes());

    // stderr merged into a stdout that is /dev/null goes there too.
    let run = run_one(
        &lp,
        &os(&["sh", "-c", "echo out; echo err >&2"]),
        SubprocessOptions {
            stdout: Stdio::DevNull,
            stderr: Stdio::Stdout,
            ..options(&watcher)
        },
    );
    assert_eq!(
        run.events(),
        [
            Ev::Made,
            Ev::Lost(0, None),
            Ev::Exited(Some(0)),
            Ev::ConnectionLost
        ]
    );
    lp.close().unwrap();
}

fn paused_pipes_hold_their_data_until_resumed(watcher: Watcher) {
    let lp = EventLoop::new().unwrap();
    let done = Rc::new(Cell::new(0));
    let run = start(
        &lp,
        &os(&["printf", "abc"]),
        SubprocessOptions {
            stdin: Stdio::DevNull,
            stderr: Stdio::DevNull,
            ..options(&watcher)
        },
        &done,
    );
    let stdout = run.transport.get_pipe_transport(1).unwrap();
    stdout.pause_reading();
    assert!(!stdout.is_reading());
    let (events, seen) = (run.events.clone(), Rc::new(Cell::new(None)));
    let (seen_at_resume, transport) = (seen.clone(), run.transport.clone());
    let reaped = transport.clone();
    when(
        &lp,
        move || reaped.get_returncode().is_some(),
        move || {
            // The child has exited; nothing was read and nothing reported.
            seen_at_resume.set(Some((events.borrow().clone(), transport.get_returncode())));
            stdout.resume_reading();
        },
    );
    run_until(&lp, &done, 1);
    let (before, returncode) = seen.take().expect("timer ran");
    assert_eq!(before, [Ev::Made]);
    assert_eq!(returncode, Some(0), "reaped while its pipe was paused");
    assert_eq!(run.output(1), b"abc");
    lp.close().unwrap();
}

fn the_protocol_may_close_the_transport_from_a_callback(watcher: Watcher) {
    let lp = EventLoop::new().unwrap();
    let done = Rc::new(Cell::new(0));
    let events = Rc::new(RefCell::new(Vec::new()));
    let recorder = Recorder {
        events: events.clone(),
        transport: None,
        done: done.clone(),
        close_on_data: true,
    };
    // `yes` writes forever: only the close stops it.
    let transport = lp
        .subprocess_exec(recorder, &["yes"], options(&watcher))
        .unwrap();
    run_until(&lp, &done, 1);
    assert_eq!(transport.get_returncode(), Some(-libc::SIGKILL));
    let events = events.borrow();
    let n = events.len();
    assert_eq!(events[n - 2..], [Ev::Exited(Some(-9)), Ev::ConnectionLost]);
    assert_eq!(
        events.iter().filter(|e| matches!(e, Ev::Data(..))).count(),
        1
    );
    lp.close().unwrap();
}

fn closing_the_loop_under_a_running_child_is_safe(watcher: Watcher) {
    let lp = EventLoop::new().unwrap();
    let done = Rc::new(Cell::new(0));
    let run = start(&lp, &os(&["sleep", "0.2"]), options(&watcher), &done);
    lp.close().unwrap();
    // The transport outlives its loop: nothing panics, nothing is signalled.
    let transport = run.transport;
    assert!(transport.send_signal(libc::SIGKILL).is_ok());
    if let Some(stdin) = transport.get_pipe_transport(0) {
        let _ = stdin.write(b"x");
    }
    transport.close();
    assert_eq!(run.events.borrow().len(), 0, "no event after close");
    // The child is still reaped (by a background thread) when it exits.
    let pid = transport.get_pid();
    let deadline = std::time::Instant::now() + SAFETY;
    while !is_reaped(pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "pid {pid} never reaped"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(done.get(), 0);
}

fn a_full_stdin_queue_pauses_then_resumes_writing(watcher: Watcher) {
    let lp = EventLoop::new().unwrap();
    let done = Rc::new(Cell::new(0));
    // The child reads nothing for a while: our writes (made right after the spawn) fill
    // the pipe instead of racing a reader on the other CPU.
    let run = start(
        &lp,
        &os(&["sh", "-c", "sleep 0.1; exec cat"]),
        SubprocessOptions {
            stdout: Stdio::DevNull,
            ..options(&watcher)
        },
        &done,
    );
    let stdin = run.transport.get_pipe_transport(0).unwrap();
    assert_eq!(
        stdin.get_write_buffer_limits(),
        Some((16 * 1024, 64 * 1024))
    );
    let stdout_limits = run.transport.get_pipe_transport(2).unwrap();
    assert_eq!(stdout_limits.get_write_buffer_limits(), None);
    assert!(matches!(
        stdin.set_write_buffer_limits(Some(10), Some(20)),
        Err(Error::InvalidArgument { .. })
    ));
    // A pipe takes 64 KiB; the rest of 1 MiB stays queued, above the high-water mark.
    stdin.write(&vec![b'x'; 1 << 20]).unwrap();
    stdin.write_eof().unwrap();
    run_until(&lp, &done, 1);
    let events = run.events();
    let at = |want: Ev| {
        position(&events, |e| *e == want).unwrap_or_else(|| panic!("no {want:?} in {events:?}"))
    };
    let (pause, resume, lost) = (
        at(Ev::PauseWriting),
        at(Ev::ResumeWriting),
        at(Ev::Lost(0, None)),
    );
    assert!(pause < resume && resume < lost, "{events:?}");
    let flow = events
        .iter()
        .filter(|e| matches!(e, Ev::PauseWriting | Ev::ResumeWriting))
        .count();
    assert_eq!(flow, 2, "{events:?}");
    assert_eq!(run.returncode(), Some(0));
    lp.close().unwrap();
}

// ---- not per watcher ----------------------------------------------------------------------

#[test]
fn collect_gathers_output_and_returncode() {
    let lp = EventLoop::new().unwrap();
    let safety = lp.clone();
    let timer = lp.call_later(SAFETY, move || safety.stop()).unwrap();
    let argv = ["sh", "-c", "cat; echo err >&2; exit 4"];
    let future = lp
        .subprocess_exec_collect(&argv, Some(b"in".to_vec()))
        .unwrap();
    let output = lp.run_until_complete(future).unwrap().unwrap();
    timer.cancel();
    assert_eq!(
        output,
        loopd::Output {
            returncode: 4,
            stdout: b"in".to_vec(),
            stderr: b"err\n".to_vec(),
        }
    );
    lp.close().unwrap();
}

/// Runs `argv` with the policy's watcher and returns its stdout, or the spawn error.
fn output_of(argv: &[&str], options: SubprocessOptions) -> Result<Vec<u8>, Error> {
    let lp = EventLoop::new().unwrap();
    let done = Rc::new(Cell::new(0));
    let events = Rc::new(RefCell::new(Vec::new()));
    let recorder = Recorder {
        events: events.clone(),
        transport: None,
        done: done.clone(),
        close_on_data: false,
    };
    let spawned = lp.subprocess_exec(recorder, argv, options);
    let output = spawned.map(|transport| {
        run_until(&lp, &done, 1);
        Run { transport, events }.output(1)
    });
    lp.close().unwrap();
    output
}

#[test]
fn the_childs_own_path_is_searched_when_env_changes_it() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("loopd-probe-xyz");
    std::fs::write(&script, "#!/bin/sh\necho found \"$PATH\"\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("/nonexistent-xyz:{}", dir.path().display());
    let with_path = |clear| SubprocessOptions {
        env_clear: clear,
        env: vec![("PATH".into(), path.clone().into())],
        ..Default::default()
    };
    let want = format!("found {path}\n").into_bytes();
    assert_eq!(
        output_of(&["loopd-probe-xyz"], with_path(false)).unwrap(),
        want
    );
    assert_eq!(
        output_of(&["loopd-probe-xyz"], with_path(true)).unwrap(),
        want
    );
    // The loop's own PATH does not have it.
    match output_of(&["loopd-probe-xyz"], SubprocessOptions::default()) {
        Err(err @ Error::Spawn { .. }) => assert!(err.to_string().contains("loopd-probe-xyz")),
        other => panic!("found in the loop's PATH: {other:?}"),
    }
    // A cleared environment searches /bin:/usr/bin, where sh is.
    let cleared = SubprocessOptions {
        env_clear: true,
        ..Default::default()
    };
    assert_eq!(
        output_of(&["sh", "-c", "echo ok"], cleared).unwrap(),
        b"ok\n"
    );
}

#[test]
fn a_missing_cwd_is_an_error_naming_it() {
    let options = SubprocessOptions {
        cwd: Some("/no/such/dir-xyz".into()),
        ..Default::default()
    };
    match output_of(&["true"], options) {
        Err(err @ Error::InvalidArgument { what: "cwd", .. }) => {
            assert!(err.to_string().contains("/no/such/dir-xyz"), "{err}")
        }
        other => panic!("missing cwd: {other:?}"),
    }
}

#[test]
fn children_start_with_no_blocked_signals_and_default_sigpipe() {
    // Rust's runtime ignores SIGPIPE; block SIGUSR2 on this thread too. Neither may
    // reach the child (asyncio's restore_signals; the mask is always cleared).
    // SAFETY: plain signal-mask calls on this thread with valid sets.
    let old = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR2);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
        old
    };
    let status = output_of(
        // grep reads its own status: no shell, since dash blocks every signal while it
        // waits for a child, which a read of the shell's status would see.
        &["grep", "-E", "^Sig(Blk|Ign):", "/proc/self/status"],
        SubprocessOptions::default(),
    );
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    let status = String::from_utf8(status.unwrap()).unwrap();
    let mask = |name: &str| {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap();
        u64::from_str_radix(line[name.len()..].trim(), 16).unwrap()
    };
    let bit = |signal: i32| 1u64 << (signal - 1);
    assert_eq!(mask("SigBlk:"), 0, "{status}");
    let ignored = mask("SigIgn:");
    assert_eq!(
        ignored & (bit(libc::SIGPIPE) | bit(libc::SIGXFSZ)),
        0,
        "{status}"
    );
}

fn only_stdio_is_inherited(watcher: Watcher) {
    // An inheritable descriptor (dup clears close-on-exec), as one from a C library or
    // from the parent's parent would be: the child must still get only 0, 1 and 2.
    let null = std::fs::File::open("/dev/null").unwrap();
    // SAFETY: dup of an open descriptor; the copy is closed below.
    let leaky = unsafe { libc::dup(std::os::fd::AsRawFd::as_raw_fd(&null)) };
    assert!(leaky > 2, "dup: {}", std::io::Error::last_os_error());
    let lp = EventLoop::new().unwrap();
    let run = run_one(&lp, &os(&["sh", "-c", "ls /proc/$$/fd"]), options(&watcher));
    // SAFETY: `leaky` is ours and open.
    unsafe { libc::close(leaky) };
    let listed = String::from_utf8(run.output(1)).unwrap();
    let fds: Vec<&str> = listed.split_whitespace().collect();
    assert_eq!(
        fds,
        ["0", "1", "2"],
        "the child's descriptors (fd {leaky} was inheritable)"
    );
    lp.close().unwrap();
}

/// `(spawned, running, exited)` of `lp`'s process metrics.
fn counts(lp: &EventLoop) -> (u64, u64, u64) {
    let m = lp.process_metrics();
    (m.spawned, m.running, m.exited)
}

fn process_metrics_count_spawned_running_and_exited_children(watcher: Watcher) {
    let lp = EventLoop::new().unwrap();
    assert_eq!(counts(&lp), (0, 0, 0));
    let done = Rc::new(Cell::new(0));
    let sleeper = start(&lp, &os(&["sleep", "10"]), options(&watcher), &done);
    assert_eq!(counts(&lp), (1, 1, 0), "counted when started");
    let quick = run_one(&lp, &os(&["true"]), options(&watcher));
    assert_eq!(quick.returncode(), Some(0));
    assert_eq!(counts(&lp), (2, 1, 1));
    let missing = lp.subprocess_exec(
        Recorder {
            events: Rc::default(),
            transport: None,
            done: done.clone(),
            close_on_data: false,
        },
        &["/no/such/program-xyz"],
        options(&watcher),
    );
    assert!(matches!(missing, Err(Error::Spawn { .. })));
    assert_eq!(
        counts(&lp),
        (2, 1, 1),
        "a child that never started is not counted"
    );
    sleeper.transport.close();
    run_until(&lp, &done, 1);
    assert_eq!(sleeper.returncode(), Some(-libc::SIGKILL));
    assert_eq!(counts(&lp), (2, 0, 2));
    lp.close().unwrap();
    assert_eq!(counts(&lp), (2, 0, 2), "a closed loop keeps its counters");
}
