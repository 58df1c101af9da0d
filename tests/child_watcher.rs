//! Child watchers against real children. Every watcher passes the same suite: each test
//! below is a function of `&dyn ChildWatcher`, instantiated once per watcher by
//! `for_each_watcher!`. Every wait is bounded by a safety timer.

use std::cell::{Cell, RefCell};
use std::process::Command;
use std::rc::Rc;
use std::time::{Duration, Instant};

use loopd::{ChildWatcher, Error, EventLoop, get_running_loop};

/// Longest any test waits for a child; the children here take milliseconds.
const SAFETY: Duration = Duration::from_secs(5);

macro_rules! for_each_watcher {
    ($($test:ident),* $(,)?) => {
        mod pidfd {
            $(#[test] fn $test() { super::$test(&loopd::PidfdChildWatcher::new()) })*
        }
        mod threaded {
            $(#[test] fn $test() { super::$test(&loopd::ThreadedChildWatcher::new()) })*
        }
    };
}

for_each_watcher!(
    returncodes_are_exit_codes_or_minus_the_signal,
    callback_runs_on_the_loop_with_the_pid,
    sigkill_gives_minus_nine,
    remove_child_handler_is_true_then_false_and_the_child_is_still_reaped,
    a_second_handler_replaces_the_first,
    a_child_that_already_exited_is_reported,
    bad_pids_are_refused,
    closed_loops_and_closed_watchers_are_refused,
    closing_the_loop_still_reaps_its_children,
    dropping_the_loop_still_reaps_its_children,
);

// ---- helpers ------------------------------------------------------------------------

fn spawn(argv: &[&str]) -> u32 {
    // Dropping the std handle neither kills nor reaps: the watcher does the reaping.
    Command::new(argv[0])
        .args(&argv[1..])
        .spawn()
        .expect("spawn")
        .id()
}

/// Runs `lp` until something stops it; false if the safety timer had to.
fn run_bounded(lp: &EventLoop) -> bool {
    let timed_out = Rc::new(Cell::new(false));
    let (flag, stopper) = (timed_out.clone(), lp.clone());
    let timer = lp
        .call_later(SAFETY, move || {
            flag.set(true);
            stopper.stop();
        })
        .unwrap();
    lp.run_forever().unwrap();
    timer.cancel();
    !timed_out.get()
}

/// Stops `lp` once `done()` holds, checking every 2 ms.
fn stop_when(lp: &EventLoop, done: impl Fn() -> bool + 'static) {
    fn check(lp: EventLoop, done: Rc<dyn Fn() -> bool>) {
        let again = lp.clone();
        lp.call_later(Duration::from_millis(2), move || {
            if done() {
                again.stop();
            } else {
                check(again, done);
            }
        })
        .unwrap();
    }
    check(lp.clone(), Rc::new(done));
}

/// Whether `pid` is gone for good: no longer a child, not even a zombie. Does not reap.
fn is_reaped(pid: u32) -> bool {
    // SAFETY: an all-zero siginfo_t is valid, and `info` outlives the call.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
    let rc = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) };
    rc == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD)
}

/// The check the brief asks for: `waitpid(pid, WNOHANG)` fails with ECHILD. (Reaps a
/// zombie if there is one, so the test fails exactly once for it.)
fn assert_no_zombie(pid: u32) {
    let rc = unsafe { libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), libc::WNOHANG) };
    let errno = std::io::Error::last_os_error().raw_os_error();
    assert_eq!(
        (rc, errno),
        (-1, Some(libc::ECHILD)),
        "pid {pid} not reaped"
    );
}

fn kill(pid: u32, signal: libc::c_int) {
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, signal) }, 0);
}

/// A callback that records what it got into `slot` and stops the loop it runs on.
fn record(slot: &Rc<RefCell<Vec<(u32, i32)>>>) -> loopd::ChildCallback {
    let slot = slot.clone();
    Box::new(move |pid, returncode| {
        slot.borrow_mut().push((pid, returncode));
        get_running_loop().expect("called on its loop").stop();
    })
}

// ---- the suite ------------------------------------------------------------------------

fn returncodes_are_exit_codes_or_minus_the_signal(watcher: &dyn ChildWatcher) {
    let cases: [(&[&str], i32); 5] = [
        (&["true"], 0),
        (&["false"], 1),
        (&["sh", "-c", "exit 3"], 3),
        (&["sh", "-c", "exit 255"], 255),
        (&["sh", "-c", "kill -TERM $$"], -libc::SIGTERM),
    ];
    let lp = EventLoop::new().unwrap();
    let got = Rc::new(RefCell::new(Vec::new()));
    let mut want = Vec::new();
    for (argv, returncode) in cases {
        let pid = spawn(argv);
        want.push((pid, returncode));
        let got = got.clone();
        let callback = Box::new(move |pid, code| got.borrow_mut().push((pid, code)));
        watcher.add_child_handler(&lp, pid, callback).unwrap();
    }
    let (seen, total) = (got.clone(), want.len());
    stop_when(&lp, move || seen.borrow().len() == total);
    assert!(run_bounded(&lp), "timed out with {:?}", got.borrow());
    let mut got = got.take();
    got.sort();
    want.sort();
    assert_eq!(
        got, want,
        "each child reported once, with its own returncode"
    );
    for (pid, _) in want {
        assert_no_zombie(pid);
    }
    lp.close().unwrap();
}

fn callback_runs_on_the_loop_with_the_pid(watcher: &dyn ChildWatcher) {
    let lp = EventLoop::new().unwrap();
    let pid = spawn(&["true"]);
    let got = Rc::new(RefCell::new(Vec::new()));
    watcher.add_child_handler(&lp, pid, record(&got)).unwrap();
    assert!(
        got.borrow().is_empty(),
        "never called from inside add_child_handler"
    );
    assert!(run_bounded(&lp));
    assert_eq!(*got.borrow(), [(pid, 0)]);
    assert_no_zombie(pid);
    lp.close().unwrap();
}

fn sigkill_gives_minus_nine(watcher: &dyn ChildWatcher) {
    let lp = EventLoop::new().unwrap();
    let pid = spawn(&["sleep", "5"]);
    let got = Rc::new(RefCell::new(Vec::new()));
    watcher.add_child_handler(&lp, pid, record(&got)).unwrap();
    lp.call_soon(move || kill(pid, libc::SIGKILL)).unwrap();
    let started = Instant::now();
    assert!(run_bounded(&lp));
    assert_eq!(*got.borrow(), [(pid, -9)]);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "killed, not slept out"
    );
    assert_no_zombie(pid);
    lp.close().unwrap();
}

fn remove_child_handler_is_true_then_false_and_the_child_is_still_reaped(
    watcher: &dyn ChildWatcher,
) {
    let lp = EventLoop::new().unwrap();
    let pid = spawn(&["sleep", "5"]);
    let called = Rc::new(Cell::new(false));
    let flag = called.clone();
    let callback = Box::new(move |_, _| flag.set(true));
    watcher.add_child_handler(&lp, pid, callback).unwrap();
    assert!(watcher.remove_child_handler(&lp, pid));
    assert!(!watcher.remove_child_handler(&lp, pid));
    assert!(!watcher.remove_child_handler(&lp, 1), "never watched");

    kill(pid, libc::SIGKILL);
    stop_when(&lp, move || is_reaped(pid));
    assert!(
        run_bounded(&lp),
        "the watcher kept reaping after the removal"
    );
    assert!(!called.get());
    assert_no_zombie(pid);
    lp.close().unwrap();
}

fn a_second_handler_replaces_the_first(watcher: &dyn ChildWatcher) {
    let lp = EventLoop::new().unwrap();
    let pid = spawn(&["sh", "-c", "exit 7"]);
    let (first, second) = (
        Rc::new(RefCell::new(Vec::new())),
        Rc::new(RefCell::new(Vec::new())),
    );
    watcher.add_child_handler(&lp, pid, record(&first)).unwrap();
    watcher
        .add_child_handler(&lp, pid, record(&second))
        .unwrap();
    assert_eq!(
        Rc::strong_count(&first),
        1,
        "the replaced callback was dropped"
    );
    assert!(run_bounded(&lp));
    assert_eq!(
        (first.borrow().len(), second.borrow().clone()),
        (0, vec![(pid, 7)])
    );
    assert_no_zombie(pid);
    lp.close().unwrap();
}

fn a_child_that_already_exited_is_reported(watcher: &dyn ChildWatcher) {
    let lp = EventLoop::new().unwrap();
    let pid = spawn(&["sh", "-c", "exit 4"]);
    // Block until it is a zombie, without reaping it.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let flags = libc::WEXITED | libc::WNOWAIT;
    assert_eq!(
        unsafe { libc::waitid(libc::P_PID, pid, &mut info, flags) },
        0
    );

    let got = Rc::new(RefCell::new(Vec::new()));
    watcher.add_child_handler(&lp, pid, record(&got)).unwrap();
    assert!(run_bounded(&lp));
    assert_eq!(*got.borrow(), [(pid, 4)]);
    assert_no_zombie(pid);
    lp.close().unwrap();
}

fn bad_pids_are_refused(watcher: &dyn ChildWatcher) {
    let mut reaped = Command::new("true").spawn().unwrap();
    reaped.wait().unwrap();
    let lp = EventLoop::new().unwrap();
    let cases = [
        (0, "invalid pid: 0"),
        (u32::MAX, "invalid pid: 4294967295"),
        (1, "no child process with pid 1"),
    ];
    for (pid, message) in cases {
        let err = watcher.add_child_handler(&lp, pid, Box::new(|_, _| {}));
        assert_eq!(err.map_err(|e| e.to_string()), Err(message.to_string()));
    }
    let err = watcher.add_child_handler(&lp, reaped.id(), Box::new(|_, _| {}));
    assert!(matches!(err, Err(Error::NoChildProcess(pid)) if pid == reaped.id()));
    lp.close().unwrap();
}

fn closed_loops_and_closed_watchers_are_refused(watcher: &dyn ChildWatcher) {
    let mut child = Command::new("true").spawn().unwrap();
    let closed = EventLoop::new().unwrap();
    closed.close().unwrap();
    let err = watcher.add_child_handler(&closed, child.id(), Box::new(|_, _| {}));
    assert!(matches!(err, Err(Error::Closed)), "{err:?}");

    assert!(watcher.is_active());
    watcher.close();
    watcher.close();
    assert!(!watcher.is_active());
    let lp = EventLoop::new().unwrap();
    let err = watcher.add_child_handler(&lp, child.id(), Box::new(|_, _| {}));
    assert!(matches!(err, Err(Error::ChildWatcherClosed)), "{err:?}");
    assert_eq!(
        child.wait().unwrap().code(),
        Some(0),
        "nobody else reaped it"
    );
    lp.close().unwrap();
}

fn closing_the_loop_still_reaps_its_children(watcher: &dyn ChildWatcher) {
    let lp = EventLoop::new().unwrap();
    let pid = spawn(&["sleep", "5"]);
    let token = Rc::new(());
    let held = token.clone();
    let callback = Box::new(move |_, _| drop(held));
    watcher.add_child_handler(&lp, pid, callback).unwrap();
    lp.close().unwrap();
    assert_eq!(Rc::strong_count(&token), 1, "close dropped the handler");
    kill_and_wait_until_reaped(pid);
}

fn dropping_the_loop_still_reaps_its_children(watcher: &dyn ChildWatcher) {
    let lp = EventLoop::new().unwrap();
    let pid = spawn(&["sleep", "5"]);
    watcher
        .add_child_handler(&lp, pid, Box::new(|_, _| {}))
        .unwrap();
    drop(lp);
    kill_and_wait_until_reaped(pid);
}

/// With no loop left to wait on, polls every 2 ms, for at most `SAFETY`.
fn kill_and_wait_until_reaped(pid: u32) {
    kill(pid, libc::SIGKILL);
    let deadline = Instant::now() + SAFETY;
    while !is_reaped(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_no_zombie(pid);
}
