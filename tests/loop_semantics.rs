//! asyncio's event-loop semantics, one test per rule (the names are the list).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use loopd::{Error, EventLoop};

type Log = Rc<RefCell<Vec<String>>>;

fn new_loop() -> EventLoop {
    EventLoop::new().expect("creating a loop")
}

fn logger(log: &Log, entry: impl Into<String>) -> impl FnOnce() + 'static {
    let (log, entry) = (log.clone(), entry.into());
    move || log.borrow_mut().push(entry)
}

/// Records the loop iteration (0-based) in which the callback ran.
fn iteration_logger(lp: &EventLoop, log: &Log, name: &'static str) -> impl FnOnce() + 'static {
    let (lp, log) = (lp.clone(), log.clone());
    move || {
        log.borrow_mut()
            .push(format!("{name}@{}", lp.metrics().iterations))
    }
}

fn stop_after(lp: &EventLoop, delay: Duration) {
    let stopper = lp.clone();
    lp.call_later(delay, move || stopper.stop()).unwrap();
}

#[test]
fn call_soon_is_fifo_and_runs_each_callback_exactly_once() {
    let (lp, log) = (new_loop(), Log::default());
    for i in 0..100 {
        lp.call_soon(logger(&log, i.to_string())).unwrap();
    }
    lp.stop();
    lp.run_forever().unwrap();
    lp.stop();
    lp.run_forever().unwrap();
    let expected: Vec<String> = (0..100).map(|i| i.to_string()).collect();
    assert_eq!(*log.borrow(), expected);
}

#[test]
fn callbacks_scheduled_during_a_batch_run_in_the_next_iteration() {
    let (lp, log) = (new_loop(), Log::default());
    let (inner_lp, inner_log) = (lp.clone(), log.clone());
    lp.call_soon(move || {
        inner_lp
            .call_soon(iteration_logger(&inner_lp, &inner_log, "b"))
            .unwrap();
        iteration_logger(&inner_lp, &inner_log, "a")();
    })
    .unwrap();
    lp.call_soon(iteration_logger(&lp, &log, "c")).unwrap();
    stop_after(&lp, Duration::from_millis(20));
    lp.run_forever().unwrap();
    assert_eq!(*log.borrow(), ["a@0", "c@0", "b@1"]);
}

#[test]
fn stop_inside_a_callback_lets_the_batch_finish_but_not_what_it_scheduled() {
    let (lp, log) = (new_loop(), Log::default());
    let (inner_lp, inner_log) = (lp.clone(), log.clone());
    lp.call_soon(move || {
        inner_lp.stop();
        inner_lp
            .call_soon(logger(&inner_log, "scheduled by the stopper"))
            .unwrap();
    })
    .unwrap();
    lp.call_soon(logger(&log, "rest of the batch")).unwrap();
    lp.run_forever().unwrap();
    assert_eq!(*log.borrow(), ["rest of the batch"]);
    assert_eq!(
        lp.metrics().ready_len,
        1,
        "the newcomer waits for the next run"
    );
    lp.stop();
    lp.run_forever().unwrap();
    assert_eq!(
        *log.borrow(),
        ["rest of the batch", "scheduled by the stopper"]
    );
}

#[test]
fn stop_before_run_forever_polls_once_with_zero_timeout_and_returns() {
    let (lp, log) = (new_loop(), Log::default());
    lp.call_soon(logger(&log, "ready")).unwrap();
    let far = lp
        .call_later(Duration::from_secs(5), logger(&log, "timer"))
        .unwrap();
    lp.stop();
    lp.run_forever().unwrap();
    assert_eq!(*log.borrow(), ["ready"]);
    assert_eq!(lp.metrics().iterations, 1);
    assert!(
        !far.cancelled() && lp.metrics().timers_pending == 1,
        "the poll did not wait for the timer"
    );
}

#[test]
fn ready_callbacks_run_before_newly_due_timers() {
    let (lp, log) = (new_loop(), Log::default());
    lp.call_later(Duration::ZERO, logger(&log, "B")).unwrap();
    lp.call_soon(logger(&log, "A")).unwrap();
    stop_after(&lp, Duration::from_millis(10));
    lp.run_forever().unwrap();
    assert_eq!(*log.borrow(), ["A", "B"]);
}

#[test]
fn delays_over_one_day_work() {
    let lp = new_loop();
    let before = lp.time();
    let two_days = 2.0 * 24.0 * 3600.0;
    let timer = lp.call_later_secs(two_days, || {}).unwrap();
    assert!(timer.when() >= before + two_days);
    let by_duration = lp
        .call_later(Duration::from_secs(3 * 24 * 3600), || {})
        .unwrap();
    assert!(by_duration.when() > timer.when());
    lp.stop();
    lp.run_forever().unwrap();
    assert_eq!(lp.metrics().timers_pending, 2);
}

#[test]
fn cancelled_handles_are_skipped() {
    let (lp, log) = (new_loop(), Log::default());
    let soon = lp.call_soon(logger(&log, "soon")).unwrap();
    let later = lp
        .call_later(Duration::from_millis(1), logger(&log, "later"))
        .unwrap();
    lp.call_soon(logger(&log, "kept")).unwrap();
    soon.cancel();
    later.cancel();
    assert!(soon.cancelled() && later.cancelled());
    stop_after(&lp, Duration::from_millis(10));
    lp.run_forever().unwrap();
    assert_eq!(*log.borrow(), ["kept"]);
}

#[test]
fn a_callback_can_cancel_a_later_one_in_the_same_batch() {
    let (lp, log) = (new_loop(), Log::default());
    let victim = Rc::new(RefCell::new(None::<loopd::Handle>));
    let slot = victim.clone();
    lp.call_soon(move || slot.borrow().as_ref().unwrap().cancel())
        .unwrap();
    *victim.borrow_mut() = Some(lp.call_soon(logger(&log, "victim")).unwrap());
    lp.stop();
    lp.run_forever().unwrap();
    assert!(log.borrow().is_empty());
}

#[test]
fn close_while_running_is_an_error() {
    let lp = new_loop();
    let result = Rc::new(RefCell::new(None));
    let (inner_lp, slot) = (lp.clone(), result.clone());
    lp.call_soon(move || {
        *slot.borrow_mut() = Some(inner_lp.close());
        inner_lp.stop();
    })
    .unwrap();
    lp.run_forever().unwrap();
    assert!(matches!(
        result.borrow_mut().take(),
        Some(Err(Error::CloseWhileRunning))
    ));
    assert!(!lp.is_closed());
}

#[test]
fn close_is_idempotent_and_drops_pending_callbacks() {
    let lp = new_loop();
    let captured = Rc::new(());
    let (a, b) = (captured.clone(), captured.clone());
    lp.call_soon(move || drop(a)).unwrap();
    lp.call_later(Duration::from_secs(60), move || drop(b))
        .unwrap();
    assert_eq!(Rc::strong_count(&captured), 3);
    lp.close().unwrap();
    lp.close().unwrap();
    assert!(lp.is_closed());
    assert_eq!(
        Rc::strong_count(&captured),
        1,
        "pending closures were dropped"
    );
    assert_eq!(lp.metrics().timer_heap_len, 0);
}

#[test]
fn any_scheduling_after_close_is_an_error() {
    let lp = new_loop();
    let handle = lp.handle();
    lp.close().unwrap();
    assert!(matches!(lp.call_soon(|| {}), Err(Error::Closed)));
    assert!(matches!(
        lp.call_later(Duration::ZERO, || {}),
        Err(Error::Closed)
    ));
    assert!(matches!(lp.call_later_secs(1.0, || {}), Err(Error::Closed)));
    assert!(matches!(
        lp.call_at(Instant::now(), || {}),
        Err(Error::Closed)
    ));
    assert!(matches!(
        lp.call_at_loop_time(1.0, || {}),
        Err(Error::Closed)
    ));
    assert!(matches!(lp.call_soon_threadsafe(|| {}), Err(Error::Closed)));
    assert!(matches!(
        handle.call_soon_threadsafe(|| {}),
        Err(Error::Closed)
    ));
    assert!(handle.is_closed());
    assert!(matches!(lp.run_forever(), Err(Error::Closed)));
}

#[test]
fn run_forever_while_running_is_an_error() {
    let lp = new_loop();
    let result = Rc::new(RefCell::new(None));
    let (inner_lp, slot) = (lp.clone(), result.clone());
    lp.call_soon(move || {
        *slot.borrow_mut() = Some(inner_lp.run_forever());
        inner_lp.stop();
    })
    .unwrap();
    lp.run_forever().unwrap();
    assert!(matches!(
        result.borrow_mut().take(),
        Some(Err(Error::AlreadyRunning))
    ));
    assert!(!lp.is_running());
}

#[test]
fn running_two_loops_on_one_thread_at_once_is_an_error() {
    let (outer, inner) = (new_loop(), new_loop());
    let result = Rc::new(RefCell::new(None));
    let (stopper, slot) = (outer.clone(), result.clone());
    outer
        .call_soon(move || {
            *slot.borrow_mut() = Some(inner.run_forever());
            stopper.stop();
        })
        .unwrap();
    outer.run_forever().unwrap();
    assert!(matches!(
        result.borrow_mut().take(),
        Some(Err(Error::AnotherLoopRunning))
    ));
}

#[test]
fn get_running_loop_is_the_running_one_and_an_error_outside() {
    assert!(matches!(
        loopd::get_running_loop(),
        Err(Error::NoRunningLoop)
    ));
    let lp = new_loop();
    lp.set_debug(true);
    let seen = Rc::new(Cell::new(false));
    let flag = seen.clone();
    lp.call_soon(move || {
        let running = loopd::get_running_loop().unwrap();
        flag.set(running.get_debug() && running.is_running());
        running.stop();
    })
    .unwrap();
    lp.run_forever().unwrap();
    assert!(seen.get());
    assert!(matches!(
        loopd::get_running_loop(),
        Err(Error::NoRunningLoop)
    ));
}

#[test]
fn timers_never_fire_early_and_equal_deadlines_fire_fifo() {
    let (lp, log) = (new_loop(), Log::default());
    let early = Rc::new(Cell::new(0));
    let at = lp.time() + 0.005;
    for i in 0..50 {
        let (inner_lp, log, early) = (lp.clone(), log.clone(), early.clone());
        let handle = Rc::new(RefCell::new(None::<loopd::TimerHandle>));
        let slot = handle.clone();
        *handle.borrow_mut() = Some(
            lp.call_at_loop_time(at, move || {
                let when = slot.borrow().as_ref().unwrap().when();
                if inner_lp.time() < when {
                    early.set(early.get() + 1);
                }
                log.borrow_mut().push(i.to_string());
            })
            .unwrap(),
        );
    }
    stop_after(&lp, Duration::from_millis(30));
    lp.run_forever().unwrap();
    let expected: Vec<String> = (0..50).map(|i| i.to_string()).collect();
    assert_eq!(*log.borrow(), expected);
    assert_eq!(early.get(), 0);
}

#[test]
fn random_delays_fire_in_deadline_order_never_early() {
    let (lp, fired) = (new_loop(), Rc::new(RefCell::new(Vec::new())));
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..200 {
        let delay = Duration::from_micros(rng.u64(0..20_000));
        let (inner_lp, fired) = (lp.clone(), fired.clone());
        let when = Rc::new(Cell::new(0.0));
        let slot = when.clone();
        let timer = lp
            .call_later(delay, move || {
                fired.borrow_mut().push((slot.get(), inner_lp.time()))
            })
            .unwrap();
        when.set(timer.when());
    }
    stop_after(&lp, Duration::from_millis(40));
    lp.run_forever().unwrap();
    let fired = fired.borrow();
    assert_eq!(fired.len(), 200);
    assert!(
        fired.windows(2).all(|w| w[0].0 <= w[1].0),
        "fired out of deadline order"
    );
    assert!(
        fired.iter().all(|(when, now)| now >= when),
        "a timer fired early"
    );
}

#[test]
fn churn_keeps_the_timer_heap_bounded() {
    let lp = new_loop();
    let live: Vec<_> = (0..1000)
        .map(|_| lp.call_later(Duration::from_secs(60), || {}).unwrap())
        .collect();
    for _ in 0..1_000_000 {
        lp.call_later(Duration::from_secs(30), || {})
            .unwrap()
            .cancel();
    }
    let metrics = lp.metrics();
    assert_eq!(metrics.timers_pending, live.len());
    assert!(
        metrics.timer_heap_len * 2 <= live.len() * 3,
        "heap holds {} entries for {} live timers",
        metrics.timer_heap_len,
        live.len()
    );
}

#[test]
fn bad_delays_are_errors_not_panics() {
    let lp = new_loop();
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e300] {
        assert!(
            matches!(lp.call_later_secs(bad, || {}), Err(Error::InvalidDelay(v)) if v.to_bits() == bad.to_bits())
        );
    }
    for bad in [f64::NAN, f64::INFINITY, -1.0] {
        assert!(matches!(
            lp.call_at_loop_time(bad, || {}),
            Err(Error::InvalidTime(_))
        ));
    }
    let message = lp.call_later_secs(f64::NAN, || {}).unwrap_err().to_string();
    assert!(message.contains("NaN"), "{message}");
    let negative = lp.call_later_secs(-5.0, || {}).unwrap();
    assert!(negative.when() <= lp.time(), "a negative delay means now");
}

#[test]
fn threadsafe_calls_from_many_threads_each_run_once() {
    let lp = new_loop();
    let count = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (handle, count) = (lp.handle(), count.clone());
            std::thread::spawn(move || {
                for _ in 0..10_000 {
                    let count = count.clone();
                    handle
                        .call_soon_threadsafe(move || {
                            count.fetch_add(1, Ordering::Relaxed);
                        })
                        .unwrap();
                }
            })
        })
        .collect();
    let handle = lp.handle();
    std::thread::spawn(move || {
        threads.into_iter().for_each(|t| t.join().unwrap());
        handle.stop().unwrap();
    });
    lp.run_forever().unwrap();
    assert_eq!(count.load(Ordering::Relaxed), 40_000);
}

#[test]
fn threadsafe_callbacks_wake_a_sleeping_loop() {
    let lp = new_loop();
    let seen = Arc::new(Mutex::new(None));
    let (handle, slot) = (lp.handle(), seen.clone());
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        handle
            .call_soon_threadsafe(move || {
                *slot.lock().unwrap() = Some(std::thread::current().id());
                loopd::get_running_loop().unwrap().stop();
            })
            .unwrap();
    });
    let safety = lp
        .call_later(Duration::from_secs(10), || {
            panic!("the loop was never woken")
        })
        .unwrap();
    lp.run_forever().unwrap();
    safety.cancel();
    assert_eq!(
        *seen.lock().unwrap(),
        Some(std::thread::current().id()),
        "ran on the loop's thread"
    );
}

#[test]
fn a_panicking_callback_is_reported_and_the_loop_goes_on() {
    let (lp, log) = (new_loop(), Log::default());
    let reports = Rc::new(RefCell::new(Vec::new()));
    let sink = reports.clone();
    lp.set_exception_handler(Some(move |_: &EventLoop, ctx: &loopd::ExceptionContext| {
        sink.borrow_mut().push(ctx.to_string());
    }));
    lp.call_soon(|| panic!("boom")).unwrap();
    lp.call_soon(logger(&log, "after")).unwrap();
    lp.stop();
    lp.run_forever().unwrap();
    assert_eq!(*log.borrow(), ["after"]);
    let reports = reports.borrow();
    assert_eq!(reports.len(), 1);
    assert!(
        reports[0].contains("exception in callback") && reports[0].contains("boom"),
        "{}",
        reports[0]
    );
    assert_eq!(lp.metrics().unhandled_errors, 0);
}

#[test]
fn a_failing_exception_handler_is_reported_by_the_default_handler() {
    let lp = new_loop();
    lp.set_exception_handler(Some(|_: &EventLoop, _: &loopd::ExceptionContext| {
        panic!("handler broke")
    }));
    lp.call_soon(|| panic!("first")).unwrap();
    lp.stop();
    lp.run_forever().unwrap();
    assert_eq!(lp.metrics().unhandled_errors, 1);
    lp.set_exception_handler(None::<fn(&EventLoop, &loopd::ExceptionContext)>);
    assert!(lp.exception_handler().is_none());
    lp.call_exception_handler(loopd::ExceptionContext::new("direct"));
    assert_eq!(lp.metrics().unhandled_errors, 2);
}

#[test]
fn debug_mode_reports_slow_callbacks() {
    let lp = new_loop();
    lp.set_slow_callback_duration(Duration::from_millis(5));
    lp.call_soon(|| std::thread::sleep(Duration::from_millis(10)))
        .unwrap();
    lp.stop();
    lp.run_forever().unwrap();
    assert_eq!(
        lp.metrics().slow_callbacks,
        0,
        "not counted outside debug mode"
    );
    lp.set_debug(true);
    lp.call_soon(|| std::thread::sleep(Duration::from_millis(10)))
        .unwrap();
    lp.call_soon(|| {}).unwrap();
    lp.stop();
    lp.run_forever().unwrap();
    assert_eq!(lp.metrics().slow_callbacks, 1);
    assert_eq!(lp.slow_callback_duration(), Duration::from_millis(5));
}

#[test]
fn metrics_count_iterations_callbacks_and_timers() {
    let lp = new_loop();
    for _ in 0..3 {
        lp.call_soon(|| {}).unwrap();
    }
    lp.call_later(Duration::from_millis(1), || {}).unwrap();
    lp.call_later(Duration::from_secs(60), || {})
        .unwrap()
        .cancel();
    stop_after(&lp, Duration::from_millis(5));
    lp.run_forever().unwrap();
    let m = lp.metrics();
    assert_eq!(m.callbacks_run, 5, "3 soon + 1 timer + the stopper");
    assert_eq!(m.timers_fired, 2);
    assert_eq!(m.lateness.total, 2);
    assert!(m.iterations >= 2);
    assert_eq!((m.timers_pending, m.ready_len), (0, 0));
}

#[test]
fn a_timer_cancelling_another_due_in_the_same_batch_keeps_the_books_straight() {
    let (lp, log) = (new_loop(), Log::default());
    let victim = Rc::new(RefCell::new(None::<loopd::TimerHandle>));
    let slot = victim.clone();
    let at = lp.time() + 0.002;
    lp.call_at_loop_time(at, move || slot.borrow().as_ref().unwrap().cancel())
        .unwrap();
    *victim.borrow_mut() = Some(lp.call_at_loop_time(at, logger(&log, "victim")).unwrap());
    stop_after(&lp, Duration::from_millis(10));
    lp.run_forever().unwrap();
    assert!(
        log.borrow().is_empty(),
        "cancelled after it was due, before it ran"
    );
    let m = lp.metrics();
    assert_eq!(m.timers_fired, 2, "the canceller and the stopper");
    assert_eq!(
        (
            m.timers_pending,
            m.timers_cancelled_in_heap,
            m.timer_heap_len
        ),
        (0, 0, 0)
    );
    victim.borrow().as_ref().unwrap().cancel();
    assert_eq!(
        lp.metrics().timers_cancelled_in_heap,
        0,
        "cancelling again counts nothing"
    );
}
