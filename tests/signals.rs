//! `add_signal_handler` / `remove_signal_handler` with real signals raised in-process.
//!
//! Signal dispositions are process-wide, so every test takes [`serial`] first; a
//! terminating signal is only ever raised while a handler for it is installed. Every run
//! is bounded by a safety timer that stops the loop after [`SAFETY`]; tests assert it
//! did not fire.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::Duration;

use loopd::{Error, EventLoop, ExceptionContext};

const SAFETY: Duration = Duration::from_secs(2);

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

fn raise(sig: i32) {
    signal_hook::low_level::raise(sig).expect("raise");
}

/// The current handler address of `sig` (`SIG_DFL` is 0).
fn disposition(sig: i32) -> libc::sighandler_t {
    // SAFETY: a query: no new action, `old` is a valid out-pointer to plain data.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        assert_eq!(libc::sigaction(sig, std::ptr::null(), &mut old), 0);
        old.sa_sigaction
    }
}

/// Runs `lp` until something stops it; returns whether the safety timer had to.
fn run_bounded(lp: &EventLoop) -> bool {
    let hit = Rc::new(Cell::new(false));
    let (flag, stopper) = (hit.clone(), lp.clone());
    let safety = lp
        .call_later(SAFETY, move || {
            flag.set(true);
            stopper.stop();
        })
        .expect("call_later");
    lp.run_forever().expect("run_forever");
    safety.cancel();
    hit.get()
}

/// A handler that counts its runs and stops the loop.
fn counting(lp: &EventLoop) -> (Rc<Cell<u32>>, impl FnMut() + 'static) {
    let count = Rc::new(Cell::new(0));
    let (c, stopper) = (count.clone(), lp.clone());
    (count, move || {
        c.set(c.get() + 1);
        stopper.stop();
    })
}

#[test]
fn a_sigusr1_handler_runs_on_the_loop() {
    let _serial = serial();
    let lp = EventLoop::new().unwrap();
    let loop_thread = thread::current().id();
    let ran_on = Rc::new(RefCell::new(None));
    let (seen, stopper) = (ran_on.clone(), lp.clone());
    lp.add_signal_handler(libc::SIGUSR1, move || {
        let running = loopd::get_running_loop().is_ok();
        *seen.borrow_mut() = Some((thread::current().id(), running));
        stopper.stop();
    })
    .unwrap();
    assert_ne!(disposition(libc::SIGUSR1), libc::SIG_DFL);
    lp.call_soon(|| raise(libc::SIGUSR1)).unwrap();
    assert!(!run_bounded(&lp), "the handler never ran");
    assert_eq!(*ran_on.borrow(), Some((loop_thread, true)));
    lp.close().unwrap();
}

#[test]
fn a_signal_raised_before_the_loop_runs_is_delivered_when_it_runs() {
    let _serial = serial();
    let lp = EventLoop::new().unwrap();
    let (count, handler) = counting(&lp);
    lp.add_signal_handler(libc::SIGUSR1, handler).unwrap();
    raise(libc::SIGUSR1);
    raise(libc::SIGUSR1);
    assert_eq!(count.get(), 0, "callbacks only run on the loop");
    assert!(!run_bounded(&lp));
    assert_eq!(count.get(), 1, "deliveries not yet read coalesce");
    lp.close().unwrap();
}

#[test]
fn two_signals_each_reach_their_handler() {
    let _serial = serial();
    let lp = EventLoop::new().unwrap();
    let seen = Rc::new(RefCell::new(Vec::new()));
    for sig in [libc::SIGUSR1, libc::SIGUSR2] {
        let (seen, stopper) = (seen.clone(), lp.clone());
        lp.add_signal_handler(sig, move || {
            seen.borrow_mut().push(sig);
            if seen.borrow().len() == 2 {
                stopper.stop();
            }
        })
        .unwrap();
    }
    lp.call_soon(|| {
        raise(libc::SIGUSR2);
        raise(libc::SIGUSR1);
    })
    .unwrap();
    assert!(!run_bounded(&lp));
    assert_eq!(
        *seen.borrow(),
        [libc::SIGUSR2, libc::SIGUSR1],
        "in arrival order"
    );
    lp.close().unwrap();
}

#[test]
fn process_metrics_count_the_signals_with_a_handler() {
    let _serial = serial();
    let lp = EventLoop::new().unwrap();
    let count = |lp: &EventLoop| lp.process_metrics().signal_handlers;
    assert_eq!(count(&lp), 0);
    lp.add_signal_handler(libc::SIGUSR1, || {}).unwrap();
    lp.add_signal_handler(libc::SIGUSR2, || {}).unwrap();
    lp.add_signal_handler(libc::SIGUSR1, || {}).unwrap();
    assert_eq!(count(&lp), 2, "replacing a handler adds none");
    assert!(lp.remove_signal_handler(libc::SIGUSR2).unwrap());
    assert_eq!(count(&lp), 1);
    lp.close().unwrap();
    assert_eq!(count(&lp), 0, "closing removed every handler");
    assert_eq!(disposition(libc::SIGUSR1), libc::SIG_DFL);
}

#[test]
fn adding_again_replaces_the_handler() {
    let _serial = serial();
    let lp = EventLoop::new().unwrap();
    let (first, handler) = counting(&lp);
    let old = lp.add_signal_handler(libc::SIGUSR1, handler).unwrap();
    let (second, handler) = counting(&lp);
    let new = lp.add_signal_handler(libc::SIGUSR1, handler).unwrap();
    assert!(old.cancelled(), "the replaced callback is cancelled");
    assert!(!new.cancelled());
    lp.call_soon(|| raise(libc::SIGUSR1)).unwrap();
    assert!(!run_bounded(&lp));
    assert_eq!((first.get(), second.get()), (0, 1));
    assert!(lp.remove_signal_handler(libc::SIGUSR1).unwrap());
    assert_eq!(
        disposition(libc::SIGUSR1),
        libc::SIG_DFL,
        "one removal is enough"
    );
    lp.close().unwrap();
}

#[test]
fn remove_reports_whether_there_was_a_handler_and_restores_the_default() {
    let _serial = serial();
    let lp = EventLoop::new().unwrap();
    assert!(!lp.remove_signal_handler(libc::SIGUSR2).unwrap());
    let (_, handler) = counting(&lp);
    let handle = lp.add_signal_handler(libc::SIGUSR2, handler).unwrap();
    assert_ne!(disposition(libc::SIGUSR2), libc::SIG_DFL);
    assert!(lp.remove_signal_handler(libc::SIGUSR2).unwrap());
    assert!(handle.cancelled());
    assert_eq!(disposition(libc::SIGUSR2), libc::SIG_DFL);
    assert!(!lp.remove_signal_handler(libc::SIGUSR2).unwrap());
    lp.close().unwrap();
}

#[test]
fn a_handler_added_after_a_removal_is_reinstalled() {
    let _serial = serial();
    let lp = EventLoop::new().unwrap();
    // SIGWINCH is ignored by default: a handler that was not reinstalled shows as a
    // timeout here instead of killing the test process.
    for round in 0..3 {
        let (count, handler) = counting(&lp);
        lp.add_signal_handler(libc::SIGWINCH, handler).unwrap();
        assert_ne!(disposition(libc::SIGWINCH), libc::SIG_DFL, "round {round}");
        lp.call_soon(|| raise(libc::SIGWINCH)).unwrap();
        assert!(!run_bounded(&lp), "round {round}: the handler never ran");
        assert_eq!(count.get(), 1, "round {round}");
        assert!(lp.remove_signal_handler(libc::SIGWINCH).unwrap());
        assert_eq!(disposition(libc::SIGWINCH), libc::SIG_DFL, "round {round}");
    }
    lp.close().unwrap();
}

#[test]
fn after_removal_a_default_ignored_signal_is_ignored_again() {
    let _serial = serial();
    let lp = EventLoop::new().unwrap();
    let (count, handler) = counting(&lp);
    lp.add_signal_handler(libc::SIGWINCH, handler).unwrap();
    lp.call_soon(|| raise(libc::SIGWINCH)).unwrap();
    assert!(!run_bounded(&lp));
    assert!(lp.remove_signal_handler(libc::SIGWINCH).unwrap());
    raise(libc::SIGWINCH); // SIG_DFL ignores it; the process goes on
    let stopper = lp.clone();
    lp.call_later(Duration::from_millis(20), move || stopper.stop())
        .unwrap();
    assert!(!run_bounded(&lp));
    assert_eq!(count.get(), 1, "the removed handler did not run");
    assert_eq!(disposition(libc::SIGWINCH), libc::SIG_DFL);
    lp.close().unwrap();
}

#[test]
fn invalid_signal_numbers_are_refused() {
    let _serial = serial();
    let lp = EventLoop::new().unwrap();
    for sig in [0, -1, 1000, libc::SIGRTMAX() + 1, 32] {
        let added = lp.add_signal_handler(sig, || {});
        assert!(
            matches!(added, Err(Error::InvalidSignal(s)) if s == sig),
            "add {sig}: {added:?}"
        );
        let removed = lp.remove_signal_handler(sig);
        assert!(
            matches!(removed, Err(Error::InvalidSignal(s)) if s == sig),
            "remove {sig}"
        );
    }
    assert_eq!(
        Error::InvalidSignal(1000).to_string(),
        "invalid signal number 1000"
    );
    lp.close().unwrap();
}

#[test]
fn uncatchable_signals_are_refused() {
    let _serial = serial();
    let lp = EventLoop::new().unwrap();
    for sig in [libc::SIGKILL, libc::SIGSTOP, libc::SIGSEGV] {
        let before = disposition(sig);
        let added = lp.add_signal_handler(sig, || {});
        assert!(
            matches!(added, Err(Error::UncatchableSignal(s)) if s == sig),
            "add {sig}: {added:?}"
        );
        assert!(
            !lp.remove_signal_handler(sig).unwrap(),
            "as asyncio: nothing to remove"
        );
        assert_eq!(disposition(sig), before, "signal {sig} untouched");
    }
    assert_eq!(
        Error::UncatchableSignal(libc::SIGKILL).to_string(),
        "signal 9 cannot be caught"
    );
    lp.close().unwrap();
}

#[test]
fn a_closed_loop_refuses_handlers_and_close_restores_defaults() {
    let _serial = serial();
    let lp = EventLoop::new().unwrap();
    let handle = lp.add_signal_handler(libc::SIGUSR1, || {}).unwrap();
    lp.add_signal_handler(libc::SIGUSR2, || {}).unwrap();
    lp.close().unwrap();
    assert!(handle.cancelled());
    assert_eq!(disposition(libc::SIGUSR1), libc::SIG_DFL);
    assert_eq!(disposition(libc::SIGUSR2), libc::SIG_DFL);
    let added = lp.add_signal_handler(libc::SIGUSR1, || {});
    assert!(matches!(added, Err(Error::Closed)), "{added:?}");
    assert!(
        !lp.remove_signal_handler(libc::SIGUSR1).unwrap(),
        "close removed it"
    );
    let invalid = lp.add_signal_handler(0, || {});
    assert!(
        matches!(invalid, Err(Error::InvalidSignal(0))),
        "checked first, as asyncio"
    );
}

#[test]
fn dropping_a_loop_without_close_restores_defaults() {
    let _serial = serial();
    let lp = EventLoop::new().unwrap();
    lp.add_signal_handler(libc::SIGUSR1, || {}).unwrap();
    assert_ne!(disposition(libc::SIGUSR1), libc::SIG_DFL);
    drop(lp);
    assert_eq!(disposition(libc::SIGUSR1), libc::SIG_DFL);
}

#[test]
fn a_panicking_handler_is_reported_and_the_loop_goes_on() {
    let _serial = serial();
    let lp = EventLoop::new().unwrap();
    let reports = Rc::new(RefCell::new(Vec::new()));
    let sink = reports.clone();
    lp.set_exception_handler(Some(move |_: &EventLoop, ctx: &ExceptionContext| {
        sink.borrow_mut().push(ctx.to_string());
    }));
    let runs = Rc::new(Cell::new(0));
    let (r, stopper) = (runs.clone(), lp.clone());
    lp.add_signal_handler(libc::SIGUSR2, move || {
        r.set(r.get() + 1);
        if r.get() == 2 {
            stopper.stop();
        } else {
            // The second delivery comes after this panic: the handler stays installed.
            raise(libc::SIGUSR2);
        }
        panic!("handler failed on purpose");
    })
    .unwrap();
    lp.call_soon(|| raise(libc::SIGUSR2)).unwrap();
    assert!(!run_bounded(&lp));
    assert_eq!(runs.get(), 2);
    let reports = reports.borrow();
    assert_eq!(reports.len(), 2, "{reports:?}");
    assert!(
        reports[0].contains("handler failed on purpose"),
        "{}",
        reports[0]
    );
    lp.close().unwrap();
}

#[test]
fn cancelling_the_handle_removes_the_handler_at_the_next_delivery() {
    let _serial = serial();
    let lp = EventLoop::new().unwrap();
    let (count, handler) = counting(&lp);
    let handle = lp.add_signal_handler(libc::SIGWINCH, handler).unwrap();
    handle.cancel();
    assert_ne!(
        disposition(libc::SIGWINCH),
        libc::SIG_DFL,
        "still installed"
    );
    lp.call_soon(|| raise(libc::SIGWINCH)).unwrap();
    let stopper = lp.clone();
    lp.call_later(Duration::from_millis(20), move || stopper.stop())
        .unwrap();
    assert!(!run_bounded(&lp));
    assert_eq!(count.get(), 0);
    assert_eq!(
        disposition(libc::SIGWINCH),
        libc::SIG_DFL,
        "removed, as asyncio"
    );
    assert!(!lp.remove_signal_handler(libc::SIGWINCH).unwrap());
    lp.close().unwrap();
}

#[test]
fn loops_on_one_thread_each_get_a_delivery_and_let_go_separately() {
    let _serial = serial();
    let (a, b) = (EventLoop::new().unwrap(), EventLoop::new().unwrap());
    let (count_a, handler) = counting(&a);
    a.add_signal_handler(libc::SIGUSR1, handler).unwrap();
    let (count_b, handler) = counting(&b);
    b.add_signal_handler(libc::SIGUSR1, handler).unwrap();
    raise(libc::SIGUSR1);
    assert!(!run_bounded(&a));
    assert!(!run_bounded(&b));
    assert_eq!((count_a.get(), count_b.get()), (1, 1));

    assert!(a.remove_signal_handler(libc::SIGUSR1).unwrap());
    assert_ne!(
        disposition(libc::SIGUSR1),
        libc::SIG_DFL,
        "b still handles it"
    );
    raise(libc::SIGUSR1);
    assert!(!run_bounded(&b));
    a.stop(); // one iteration with a zero timeout: anything queued would run now
    a.run_forever().unwrap();
    assert_eq!((count_a.get(), count_b.get()), (1, 2));

    b.close().unwrap();
    assert_eq!(
        disposition(libc::SIGUSR1),
        libc::SIG_DFL,
        "the last one let go"
    );
    a.close().unwrap();
}

#[test]
fn loops_on_other_threads_each_get_a_process_directed_signal() {
    let _serial = serial();
    let (ready_tx, ready_rx) = mpsc::channel();
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let ready = ready_tx.clone();
            thread::spawn(move || {
                let lp = EventLoop::new().unwrap();
                let (count, handler) = counting(&lp);
                lp.add_signal_handler(libc::SIGUSR2, handler).unwrap();
                ready.send(()).unwrap();
                let timed_out = run_bounded(&lp);
                lp.close().unwrap();
                (timed_out, count.get(), thread::current().id())
            })
        })
        .collect();
    for _ in 0..2 {
        ready_rx.recv_timeout(SAFETY).expect("worker ready");
    }
    // SAFETY: kill(2) on our own pid; both loops handle SIGUSR2 until they ran.
    assert_eq!(unsafe { libc::kill(libc::getpid(), libc::SIGUSR2) }, 0);
    for worker in workers {
        let (timed_out, count, _) = worker.join().unwrap();
        assert!(!timed_out, "a loop missed the signal");
        assert_eq!(count, 1);
    }
    assert_eq!(disposition(libc::SIGUSR2), libc::SIG_DFL);
}
