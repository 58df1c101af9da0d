//! `add_reader`/`add_writer` on real sockets: level-triggered readiness, replacement,
//! removal, bad fds, and where I/O callbacks fall in an iteration.
//!
//! Every test that runs the loop also arms a safety timer, so a broken loop ends the test
//! (with a failed assertion) instead of hanging it.

use std::cell::{Cell, RefCell};
use std::error::Error as _;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::Duration;

use loopd::{Error, EventLoop};

const SAFETY: Duration = Duration::from_secs(5);

/// A connected, non-blocking socket pair.
fn pair() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    (a, b)
}

/// A loop that stops by itself after `SAFETY` whatever happens.
fn new_loop() -> EventLoop {
    let lp = EventLoop::new().unwrap();
    let stopper = lp.clone();
    lp.call_later(SAFETY, move || stopper.stop()).unwrap();
    lp
}

/// Stops `lp` at the end of its `n`th iteration from now, by a chain of `call_soon`s (which
/// also keeps the poll timeout at zero).
fn stop_after_iterations(lp: &EventLoop, n: usize) {
    let inner = lp.clone();
    lp.call_soon(move || {
        if n <= 1 {
            inner.stop();
        } else {
            stop_after_iterations(&inner, n - 1);
        }
    })
    .unwrap();
}

fn counter() -> (Rc<Cell<usize>>, Rc<Cell<usize>>) {
    let count = Rc::new(Cell::new(0));
    (count.clone(), count)
}

fn bump(count: &Cell<usize>) -> usize {
    count.set(count.get() + 1);
    count.get()
}

/// Reads whatever is available, without blocking.
fn drain(mut sock: &UnixStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0; 4096];
    loop {
        match sock.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(err) if err.kind() == ErrorKind::WouldBlock => return out,
            Err(err) => panic!("read failed: {err}"),
        }
    }
}

#[test]
fn reader_fires_when_data_arrives() {
    let lp = new_loop();
    let (a, b) = pair();
    let fd = a.as_raw_fd();
    let received = Rc::new(RefCell::new(Vec::new()));
    let (got, inner) = (received.clone(), lp.clone());
    lp.add_reader(fd, move || {
        got.borrow_mut().extend(drain(&a));
        assert!(inner.remove_reader(fd).unwrap());
        inner.stop();
    })
    .unwrap();
    // Nothing to read yet: the first iterations must not call the reader.
    lp.call_soon(move || (&b).write_all(b"abc").unwrap())
        .unwrap();
    lp.run_forever().unwrap();
    assert_eq!(*received.borrow(), b"abc");
}

#[test]
fn reader_that_does_not_read_is_called_again_in_the_next_iteration() {
    let lp = new_loop();
    let (a, mut b) = pair();
    b.write_all(b"x").unwrap();
    let iterations = Rc::new(RefCell::new(Vec::new()));
    let (seen, inner) = (iterations.clone(), lp.clone());
    lp.add_reader(a.as_raw_fd(), move || {
        let mut seen = seen.borrow_mut();
        seen.push(inner.metrics().iterations);
        if seen.len() == 3 {
            inner.stop();
        }
    })
    .unwrap();
    lp.run_forever().unwrap();
    let seen = iterations.borrow();
    assert_eq!(seen.len(), 3, "level-triggered: called while readable");
    assert_eq!(seen[1], seen[0] + 1, "once per iteration: {seen:?}");
    assert_eq!(seen[2], seen[1] + 1, "once per iteration: {seen:?}");
    assert_eq!(drain(&a), b"x", "the reader never consumed the data");
}

#[test]
fn reader_that_drains_is_not_called_again() {
    let lp = new_loop();
    let (a, mut b) = pair();
    b.write_all(b"once").unwrap();
    let (calls, count) = counter();
    lp.add_reader(a.as_raw_fd(), move || {
        bump(&count);
        assert_eq!(drain(&a), b"once");
    })
    .unwrap();
    stop_after_iterations(&lp, 5);
    lp.run_forever().unwrap();
    assert_eq!(calls.get(), 1);
}

#[test]
fn writer_fires_when_writable() {
    let lp = new_loop();
    let (a, b) = pair();
    let fd = a.as_raw_fd();
    let (calls, count) = counter();
    let inner = lp.clone();
    lp.add_writer(fd, move || {
        bump(&count);
        (&a).write_all(b"ping").unwrap();
        assert!(inner.remove_writer(fd).unwrap());
        inner.stop();
    })
    .unwrap();
    lp.run_forever().unwrap();
    assert_eq!(calls.get(), 1);
    assert_eq!(drain(&b), b"ping");
    assert!(!lp.remove_writer(fd).unwrap(), "already removed");
}

#[test]
fn remove_returns_true_then_false() {
    let lp = EventLoop::new().unwrap();
    let (a, _b) = pair();
    let fd = a.as_raw_fd();
    lp.add_reader(fd, || {}).unwrap();
    lp.add_writer(fd, || {}).unwrap();
    assert!(lp.remove_reader(fd).unwrap());
    assert!(!lp.remove_reader(fd).unwrap());
    assert!(lp.remove_writer(fd).unwrap());
    assert!(!lp.remove_writer(fd).unwrap());
}

#[test]
fn removing_what_was_never_added_returns_false() {
    let lp = EventLoop::new().unwrap();
    let (a, _b) = pair();
    let fd = a.as_raw_fd();
    assert!(!lp.remove_reader(fd).unwrap());
    assert!(!lp.remove_writer(fd).unwrap());
    lp.add_writer(fd, || {}).unwrap();
    assert!(!lp.remove_reader(fd).unwrap(), "a writer is not a reader");
    assert!(!lp.remove_reader(1_000_000).unwrap(), "not even open");
}

#[test]
fn adding_a_reader_again_replaces_it_and_cancels_the_old_handle() {
    let lp = new_loop();
    let (a, mut b) = pair();
    b.write_all(b"x").unwrap();
    let fd = a.as_raw_fd();
    let (old_calls, old_count) = counter();
    let old = lp
        .add_reader(fd, move || {
            bump(&old_count);
        })
        .unwrap();
    let (new_calls, new_count) = counter();
    let inner = lp.clone();
    let new = lp
        .add_reader(fd, move || {
            bump(&new_count);
            inner.stop();
        })
        .unwrap();
    assert!(old.cancelled());
    assert!(!new.cancelled());
    lp.run_forever().unwrap();
    assert_eq!((old_calls.get(), new_calls.get()), (0, 1));
    assert!(lp.remove_reader(fd).unwrap());
    assert!(!lp.remove_reader(fd).unwrap(), "one reader per fd");
}

#[test]
fn reader_and_writer_share_one_fd_independently() {
    let lp = new_loop();
    let (a, mut b) = pair();
    b.write_all(b"x").unwrap();
    let fd = a.as_raw_fd();
    let (reads, read_count) = counter();
    let (writes, write_count) = counter();
    let inner = lp.clone();
    lp.add_reader(fd, move || {
        if bump(&read_count) == 3 {
            inner.stop();
        }
    })
    .unwrap();
    let inner = lp.clone();
    lp.add_writer(fd, move || {
        bump(&write_count);
        assert!(inner.remove_writer(fd).unwrap());
    })
    .unwrap();
    lp.run_forever().unwrap();
    assert_eq!(
        (reads.get(), writes.get()),
        (3, 1),
        "the reader outlives the writer"
    );

    // And the other way round: the writer keeps firing once the reader is gone.
    let inner = lp.clone();
    let (writes, write_count) = counter();
    lp.add_writer(fd, move || {
        if bump(&write_count) == 3 {
            inner.stop();
        }
    })
    .unwrap();
    assert!(lp.remove_reader(fd).unwrap());
    let before = reads.get();
    lp.run_forever().unwrap();
    assert_eq!((reads.get(), writes.get()), (before, 3));
}

type Adder = fn(&EventLoop, RawFd) -> loopd::Result<loopd::Handle>;

#[test]
fn bad_fds_are_errors_naming_the_fd() {
    let lp = EventLoop::new().unwrap();
    let file = tempfile::tempfile().unwrap();
    let regular: RawFd = file.as_raw_fd();
    // (fd, expected message, expected OS error)
    let cases = [
        (-1, "invalid file descriptor: -1".to_string(), None),
        (
            1_000_000,
            "failed to register fd 1000000".to_string(),
            Some(libc::EBADF),
        ),
        (
            regular,
            format!("failed to register fd {regular}"),
            Some(libc::EPERM),
        ),
    ];
    for (fd, message, errno) in cases {
        let adders: [Adder; 2] = [
            |lp, fd| lp.add_reader(fd, || {}),
            |lp, fd| lp.add_writer(fd, || {}),
        ];
        for add in adders {
            let err = add(&lp, fd).unwrap_err();
            assert_eq!(err.to_string(), message, "fd {fd}");
            let os = err
                .source()
                .and_then(|s| s.downcast_ref::<std::io::Error>())
                .and_then(std::io::Error::raw_os_error);
            assert_eq!(os, errno, "fd {fd}");
        }
    }
    assert!(matches!(
        lp.remove_reader(-1),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        lp.remove_writer(-1),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn a_closed_loop_refuses_watches_and_removes_nothing() {
    let lp = EventLoop::new().unwrap();
    let (a, _b) = pair();
    let fd = a.as_raw_fd();
    lp.add_reader(fd, || {}).unwrap();
    lp.close().unwrap();
    assert!(matches!(lp.add_reader(fd, || {}), Err(Error::Closed)));
    assert!(matches!(lp.add_writer(fd, || {}), Err(Error::Closed)));
    assert!(!lp.remove_reader(fd).unwrap(), "asyncio returns False");
    assert!(!lp.remove_writer(fd).unwrap());
}

#[test]
fn removing_cancels_a_reader_already_queued_in_this_iteration() {
    let lp = new_loop();
    let (a, mut b) = pair();
    b.write_all(b"x").unwrap();
    let fd = a.as_raw_fd();
    let (calls, count) = counter();
    let removed = Rc::new(Cell::new(false));
    let (inner, flag) = (lp.clone(), removed.clone());
    // Iteration 1: the ready queue holds this callback, then the poll queues the reader
    // behind it; removing the reader here must keep the queued copy from running.
    lp.call_soon(move || {
        flag.set(inner.remove_reader(fd).unwrap());
        inner.stop();
    })
    .unwrap();
    let handle = lp
        .add_reader(fd, move || {
            bump(&count);
        })
        .unwrap();
    lp.run_forever().unwrap();
    assert!(removed.get());
    assert!(handle.cancelled());
    assert_eq!(calls.get(), 0);
}

#[test]
fn a_cancelled_reader_handle_is_removed_when_the_fd_is_ready() {
    let lp = new_loop();
    let (a, mut b) = pair();
    b.write_all(b"x").unwrap();
    let fd = a.as_raw_fd();
    let (calls, count) = counter();
    let handle = lp
        .add_reader(fd, move || {
            bump(&count);
        })
        .unwrap();
    handle.cancel();
    stop_after_iterations(&lp, 2);
    lp.run_forever().unwrap();
    assert_eq!(calls.get(), 0);
    assert!(
        !lp.remove_reader(fd).unwrap(),
        "asyncio removed it on readiness"
    );
}

#[test]
fn peer_hangup_wakes_the_reader() {
    let lp = new_loop();
    let (a, b) = pair();
    let fd = a.as_raw_fd();
    let (calls, count) = counter();
    let inner = lp.clone();
    lp.add_reader(fd, move || {
        bump(&count);
        assert_eq!(drain(&a), b"", "end of file");
        inner.remove_reader(fd).unwrap();
        inner.stop();
    })
    .unwrap();
    lp.call_soon(move || drop(b)).unwrap();
    lp.run_forever().unwrap();
    assert_eq!(calls.get(), 1);
}

#[test]
fn io_callbacks_run_after_ready_ones_and_before_new_timers() {
    let lp = new_loop();
    let (a, mut b) = pair();
    // Readable before the loop starts, so the first poll reports it.
    b.write_all(b"x").unwrap();
    let order = Rc::new(RefCell::new(Vec::new()));
    let log = |name: &'static str| {
        let order = order.clone();
        move || order.borrow_mut().push(name)
    };
    let (timer_log, inner) = (log("timer"), lp.clone());
    // Due by the time the first iteration looks at the timer heap.
    lp.call_later(Duration::ZERO, move || {
        timer_log();
        inner.stop();
    })
    .unwrap();
    lp.add_reader(a.as_raw_fd(), log("reader")).unwrap();
    lp.call_soon(log("ready")).unwrap();
    lp.run_forever().unwrap();
    // One iteration: a later reader call would come after "timer" (and the stop).
    assert_eq!(*order.borrow(), ["ready", "reader", "timer"]);
}
