//! [`EventLoop`]: asyncio's event loop on one thread, built directly on `mio::Poll`.
//!
//! # Invariants
//! - One iteration ([`EventLoop::run_once`]) follows asyncio's `_run_once`: the poll
//!   timeout is zero if anything is ready or a stop is pending, else the time to the next
//!   timer (capped at one day), else infinite; I/O readiness becomes ready callbacks; due
//!   timers join them; then exactly the callbacks that were ready at that moment run.
//!   Callbacks they schedule wait for the next iteration. So within one iteration,
//!   callbacks that were already ready run before I/O callbacks, which run before timers
//!   that just became due.
//! - `stop()` lets the current batch finish; `run_forever()` after `stop()` polls once
//!   with a zero timeout, runs what is ready, and returns.
//! - No `RefCell` borrow is held while user code runs, so callbacks may call any method.
//! - Ids of I/O registrations (mio tokens) are never reused, so a stale event can never
//!   reach a newer registration.
//! - `close()` drops every pending callback and refuses all later scheduling.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::AsRawFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use crate::clock::{self, Nanos};
use crate::error::{Error, Result};
use crate::exception::{ExceptionContext, ExceptionHandler, PanicError};
use crate::handle::{Handle, OnceCell, Runnable, TimerHandle};
use crate::metrics::{Counters, Metrics, bump};
use crate::remote::{LoopHandle, Remote, RemoteCallback};
use crate::timer::timerfd::TimerFd;
use crate::timer::{TimerHeap, settle_popped};

/// The longest the poll ever sleeps while a timer is pending (asyncio's
/// `MAXIMUM_SELECT_TIMEOUT`); later timers simply take several polls.
pub const MAX_POLL_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// asyncio's default `slow_callback_duration`.
pub const DEFAULT_SLOW_CALLBACK: Duration = Duration::from_millis(100);

const WAKER: Token = Token(0);
const TIMERFD: Token = Token(1);
const FIRST_SOURCE_TOKEN: usize = 2;
const EVENTS_CAPACITY: usize = 1024;

/// An entry in the ready queue.
pub(crate) enum Ready {
    Local(Rc<dyn Runnable>),
    /// A timer that became due, and how late (ns): counted as fired only if it runs.
    Timer(Rc<dyn Runnable>, Nanos),
    Remote(RemoteCallback),
}

/// What the poll reported for one registration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Readiness {
    pub(crate) readable: bool,
    pub(crate) writable: bool,
    pub(crate) error: bool,
    pub(crate) read_closed: bool,
    pub(crate) write_closed: bool,
}

impl Readiness {
    fn of(event: &mio::event::Event) -> Self {
        Readiness {
            readable: event.is_readable(),
            writable: event.is_writable(),
            error: event.is_error(),
            read_closed: event.is_read_closed(),
            write_closed: event.is_write_closed(),
        }
    }
}

/// Turns readiness of one registered source into ready callbacks. Internal code only: it
/// must not run user code directly (user code runs from the ready queue).
pub(crate) type IoDispatch = Rc<dyn Fn(&EventLoop, Readiness)>;

pub(crate) struct Core {
    poll: RefCell<Poll>,
    events: RefCell<Events>,
    io_batch: RefCell<Vec<(Token, Readiness)>>,
    sources: RefCell<HashMap<usize, IoDispatch>>,
    next_token: Cell<usize>,
    ready: RefCell<VecDeque<Ready>>,
    /// The batch being run; swapped with `ready` so running takes no borrow per callback.
    batch: RefCell<VecDeque<Ready>>,
    timers: RefCell<TimerHeap>,
    timerfd: TimerFd,
    remote: Arc<Remote>,
    remote_batch: RefCell<Vec<RemoteCallback>>,
    running: Cell<bool>,
    stopping: Cell<bool>,
    closed: Cell<bool>,
    debug: Cell<bool>,
    slow_callback: Cell<Duration>,
    pub(crate) exception_handler: RefCell<Option<ExceptionHandler>>,
    pub(crate) counters: Counters,
    pub(crate) signals: RefCell<crate::signal::LoopSignals>,
    pub(crate) fd_watchers: crate::io::FdWatchers,
    pub(crate) tasks: crate::task::Tasks,
    pub(crate) executor: crate::executor::ExecutorState,
    pub(crate) children: crate::process::Children,
    pub(crate) net: crate::net::NetState,
}

/// An asyncio event loop. Not `Send`: it lives on the thread that made it; other threads
/// reach it through its [`LoopHandle`]. Cloning gives another reference to the same loop.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// let lp = loopd::EventLoop::new().unwrap();
/// let stopper = lp.clone();
/// lp.call_later(Duration::from_millis(5), move || stopper.stop()).unwrap();
/// lp.call_soon(|| println!("hello, world")).unwrap();
/// lp.run_forever().unwrap();
/// lp.close().unwrap();
/// ```
#[derive(Clone)]
pub struct EventLoop {
    pub(crate) core: Rc<Core>,
}

thread_local! {
    static RUNNING: RefCell<Option<EventLoop>> = const { RefCell::new(None) };
}

/// The loop running on this thread. Fails with [`Error::NoRunningLoop`] outside one.
pub fn get_running_loop() -> Result<EventLoop> {
    RUNNING
        .with(|running| running.borrow().clone())
        .ok_or(Error::NoRunningLoop)
}

/// Clears the thread's running loop when `run_forever` ends, even by unwinding.
struct RunningGuard<'a>(&'a EventLoop);

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        RUNNING.with(|running| running.borrow_mut().take());
        self.0.core.running.set(false);
        self.0.core.stopping.set(false);
    }
}

fn debug_from_env() -> bool {
    debug_flag(std::env::var_os("LOOPD_DEBUG").as_deref())
}

/// `LOOPD_DEBUG` turns debug mode on when set to anything but empty or `0`.
fn debug_flag(value: Option<&std::ffi::OsStr>) -> bool {
    value.is_some_and(|v| !v.is_empty() && v != "0")
}

impl EventLoop {
    /// Creates a loop: an epoll instance, a waker and a timerfd. Debug mode starts on when
    /// the `LOOPD_DEBUG` environment variable is set (and not `0`).
    pub fn new() -> Result<Self> {
        let poll = Poll::new().map_err(Error::io("epoll_create"))?;
        let waker =
            mio::Waker::new(poll.registry(), WAKER).map_err(Error::io("creating the waker"))?;
        let timerfd = TimerFd::new().map_err(Error::io("timerfd_create"))?;
        let fd = timerfd.as_raw_fd();
        poll.registry()
            .register(&mut SourceFd(&fd), TIMERFD, Interest::READABLE)
            .map_err(|source| Error::Register { fd, source })?;
        let core = Core {
            poll: RefCell::new(poll),
            events: RefCell::new(Events::with_capacity(EVENTS_CAPACITY)),
            io_batch: RefCell::new(Vec::new()),
            sources: RefCell::new(HashMap::new()),
            next_token: Cell::new(FIRST_SOURCE_TOKEN),
            ready: RefCell::new(VecDeque::new()),
            batch: RefCell::new(VecDeque::new()),
            timers: RefCell::new(TimerHeap::new()),
            timerfd,
            remote: Arc::new(Remote::new(waker)),
            remote_batch: RefCell::new(Vec::new()),
            running: Cell::new(false),
            stopping: Cell::new(false),
            closed: Cell::new(false),
            debug: Cell::new(debug_from_env()),
            slow_callback: Cell::new(DEFAULT_SLOW_CALLBACK),
            exception_handler: RefCell::new(None),
            counters: Counters::default(),
            signals: RefCell::default(),
            fd_watchers: crate::io::FdWatchers::default(),
            tasks: Default::default(),
            executor: Default::default(),
            children: Default::default(),
            net: Default::default(),
        };
        Ok(EventLoop {
            core: Rc::new(core),
        })
    }

    /// A `Send + Clone` handle for other threads.
    pub fn handle(&self) -> LoopHandle {
        LoopHandle {
            remote: self.core.remote.clone(),
        }
    }

    /// The loop's clock in seconds (`CLOCK_MONOTONIC`, like Python's `time.monotonic()`).
    pub fn time(&self) -> f64 {
        clock::to_secs(clock::now())
    }

    // ---- scheduling ---------------------------------------------------------------

    /// Runs `callback` in the next iteration, after everything already scheduled.
    pub fn call_soon(&self, callback: impl FnOnce() + 'static) -> Result<Handle> {
        self.check_open()?;
        let cell = OnceCell::new_rc(callback);
        self.core
            .ready
            .borrow_mut()
            .push_back(Ready::Local(cell.clone()));
        Ok(Handle { cell })
    }

    /// Same as [`LoopHandle::call_soon_threadsafe`]; usable from the loop's own thread too.
    pub fn call_soon_threadsafe(&self, callback: impl FnOnce() + Send + 'static) -> Result<()> {
        self.core.remote.push(Box::new(callback))
    }

    /// Runs `callback` once `delay` has passed (never earlier).
    pub fn call_later(
        &self,
        delay: Duration,
        callback: impl FnOnce() + 'static,
    ) -> Result<TimerHandle> {
        let deadline = clock::now().saturating_add(clock::duration_nanos(delay));
        self.schedule_timer(deadline, callback)
    }

    /// [`call_later`](Self::call_later) with a delay in seconds, as asyncio takes it:
    /// negative means now; NaN, infinities and absurdly large values are
    /// [`Error::InvalidDelay`].
    pub fn call_later_secs(
        &self,
        delay: f64,
        callback: impl FnOnce() + 'static,
    ) -> Result<TimerHandle> {
        let delay = clock::delay_from_secs(delay)?;
        self.schedule_timer(clock::now().saturating_add(delay), callback)
    }

    /// Runs `callback` at `when` (never earlier).
    pub fn call_at(&self, when: Instant, callback: impl FnOnce() + 'static) -> Result<TimerHandle> {
        self.schedule_timer(clock::from_instant(when), callback)
    }

    /// Runs `callback` at loop time `when` (seconds, as [`time`](Self::time) reports).
    /// NaN, infinite or negative times are [`Error::InvalidTime`].
    pub fn call_at_loop_time(
        &self,
        when: f64,
        callback: impl FnOnce() + 'static,
    ) -> Result<TimerHandle> {
        self.schedule_timer(clock::time_from_secs(when)?, callback)
    }

    fn schedule_timer(
        &self,
        deadline: Nanos,
        callback: impl FnOnce() + 'static,
    ) -> Result<TimerHandle> {
        self.check_open()?;
        Ok(self
            .core
            .timers
            .borrow_mut()
            .push(deadline, OnceCell::new_rc(callback)))
    }

    /// Appends an internal callback cell (an I/O or signal handle) to the ready queue.
    pub(crate) fn push_ready(&self, cell: Rc<dyn Runnable>) {
        self.core.ready.borrow_mut().push_back(Ready::Local(cell));
    }

    // ---- running ------------------------------------------------------------------

    /// Runs until [`stop`](Self::stop) is called.
    ///
    /// Fails with [`Error::Closed`], [`Error::AlreadyRunning`], or
    /// [`Error::AnotherLoopRunning`] if another loop runs on this thread; with
    /// [`Error::Io`] if the poll itself fails.
    pub fn run_forever(&self) -> Result<()> {
        self.check_open()?;
        if self.core.running.get() {
            return Err(Error::AlreadyRunning);
        }
        RUNNING.with(|running| {
            let mut running = running.borrow_mut();
            if running.is_some() {
                return Err(Error::AnotherLoopRunning);
            }
            *running = Some(self.clone());
            Ok(())
        })?;
        self.core.running.set(true);
        let _guard = RunningGuard(self);
        loop {
            self.run_once()?;
            if self.core.stopping.get() {
                return Ok(());
            }
        }
    }

    /// Stops the loop after the current batch of callbacks; before `run_forever`, makes the
    /// next `run_forever` run one iteration and return.
    pub fn stop(&self) {
        self.core.stopping.set(true);
    }

    /// Whether the loop is inside `run_forever`/`run_until_complete`.
    pub fn is_running(&self) -> bool {
        self.core.running.get()
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.core.closed.get()
    }

    /// Closes the loop: pending callbacks and timers are dropped, I/O registrations
    /// released, and every later scheduling call fails with [`Error::Closed`].
    /// Idempotent; fails with [`Error::CloseWhileRunning`] while the loop runs.
    pub fn close(&self) -> Result<()> {
        if self.core.running.get() {
            return Err(Error::CloseWhileRunning);
        }
        if self.core.closed.replace(true) {
            return Ok(());
        }
        // Take everything out before dropping it: a dropped closure may touch the loop.
        let ready = std::mem::take(&mut *self.core.ready.borrow_mut());
        let timers = self.core.timers.borrow_mut().clear();
        let sources = std::mem::take(&mut *self.core.sources.borrow_mut());
        let remote = self.core.remote.close();
        self.close_signal_handlers();
        self.release_fd_watchers();
        crate::task::release_on_close(self);
        crate::process::close_loop(self);
        crate::net::close_loop(self);
        drop((ready, timers, sources, remote));
        Ok(())
    }

    pub(crate) fn check_open(&self) -> Result<()> {
        if self.core.closed.get() {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// One iteration, as asyncio's `_run_once`.
    pub(crate) fn run_once(&self) -> Result<()> {
        let (timeout, deadline) = self.poll_timeout(clock::now()); // 1. cancelled heads leave
        self.arm_timerfd(timeout, deadline); //                          2. sub-ms wake-up
        self.poll(timeout)?; //                                          3. readiness, and
        self.drain_remote(); //                                             threadsafe calls,
        self.dispatch_io(); //                                              become callbacks
        self.drain_due_timers(); //                                      4. due timers
        self.run_ready(); //                                             5. newcomers wait
        bump(&self.core.counters.iterations, 1);
        Ok(())
    }

    /// The poll timeout for this iteration, and the timer deadline it aims at.
    pub(crate) fn poll_timeout(&self, now: Nanos) -> (Option<Duration>, Option<Nanos>) {
        let mut timers = self.core.timers.borrow_mut();
        let next = timers.next_deadline();
        if !self.core.ready.borrow().is_empty() || self.core.stopping.get() {
            return (Some(Duration::ZERO), None);
        }
        match next {
            None => (None, None),
            Some(deadline) => {
                let wait = Duration::from_nanos(deadline.saturating_sub(now)).min(MAX_POLL_TIMEOUT);
                (Some(wait), Some(deadline))
            }
        }
    }

    fn arm_timerfd(&self, timeout: Option<Duration>, deadline: Option<Nanos>) {
        let (Some(timeout), Some(deadline)) = (timeout, deadline) else {
            return;
        };
        if timeout.is_zero() || timeout >= MAX_POLL_TIMEOUT {
            return;
        }
        if let Err(err) = self.core.timerfd.arm(deadline) {
            // Still correct without it, just up to a millisecond later.
            tracing::warn!(target: "loopd", "timerfd_settime failed: {err}");
        }
    }

    fn poll(&self, timeout: Option<Duration>) -> Result<()> {
        let started = clock::now();
        let mut events = self.core.events.borrow_mut();
        match self.core.poll.borrow_mut().poll(&mut events, timeout) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::Interrupted => events.clear(),
            Err(err) => {
                return Err(Error::Io {
                    op: "epoll_wait",
                    source: err,
                });
            }
        }
        let counters = &self.core.counters;
        counters
            .polling
            .set(counters.polling.get() + clock::now().saturating_sub(started));
        let mut batch = self.core.io_batch.borrow_mut();
        batch.extend(
            events
                .iter()
                .map(|event| (event.token(), Readiness::of(event))),
        );
        Ok(())
    }

    fn drain_remote(&self) {
        let mut batch = self.core.remote_batch.borrow_mut();
        self.core.remote.take_into(&mut batch);
        if !batch.is_empty() {
            self.core
                .ready
                .borrow_mut()
                .extend(batch.drain(..).map(Ready::Remote));
        }
    }

    fn dispatch_io(&self) {
        let mut batch = std::mem::take(&mut *self.core.io_batch.borrow_mut());
        for (token, readiness) in batch.drain(..) {
            match token {
                WAKER => {}
                TIMERFD => self.core.timerfd.acknowledge(),
                Token(id) => {
                    let dispatch = self.core.sources.borrow().get(&id).cloned();
                    if let Some(dispatch) = dispatch {
                        dispatch(self, readiness);
                    }
                }
            }
        }
        *self.core.io_batch.borrow_mut() = batch;
    }

    fn drain_due_timers(&self) {
        let now = clock::now();
        let mut ready = self.core.ready.borrow_mut();
        self.core
            .timers
            .borrow_mut()
            .drain_due(now, |cell, late| ready.push_back(Ready::Timer(cell, late)));
    }

    /// Runs exactly the callbacks that are ready now: the ready queue becomes the batch and
    /// an empty queue (with the last batch's capacity) takes what the batch schedules.
    fn run_ready(&self) {
        let started = clock::now();
        let mut batch = std::mem::take(&mut *self.core.batch.borrow_mut());
        std::mem::swap(&mut batch, &mut *self.core.ready.borrow_mut());
        let heap_cancelled = self.core.timers.borrow().cancelled_counter();
        let counters = &self.core.counters;
        let mut ran = 0;
        for item in batch.drain(..) {
            match item {
                Ready::Local(cell) if cell.header().is_cancelled() => continue,
                Ready::Local(cell) => self.run_guarded(|| cell.callback_name(), || cell.run()),
                Ready::Timer(cell, late) => {
                    settle_popped(&*cell, &heap_cancelled);
                    if cell.header().is_cancelled() {
                        continue;
                    }
                    counters.record_lateness(late);
                    self.run_guarded(|| cell.callback_name(), || cell.run());
                }
                Ready::Remote(callback) => {
                    self.run_guarded(|| "call_soon_threadsafe callback", callback)
                }
            }
            ran += 1;
        }
        *self.core.batch.borrow_mut() = batch;
        bump(&counters.callbacks_run, ran);
        counters
            .in_callbacks
            .set(counters.in_callbacks.get() + clock::now().saturating_sub(started));
    }

    /// Runs one callback, turning a panic into a report to the exception handler and, in
    /// debug mode, reporting it if it was slow.
    fn run_guarded(&self, name: impl Fn() -> &'static str, callback: impl FnOnce()) {
        let started = self.core.debug.get().then(Instant::now);
        if let Err(payload) = catch_unwind(AssertUnwindSafe(callback)) {
            let name = name();
            self.call_exception_handler(ExceptionContext {
                message: format!("exception in callback {name}"),
                error: Some(Arc::new(PanicError::from_payload(&*payload))),
                handle: Some(name),
                ..Default::default()
            });
        }
        if let Some(started) = started {
            let took = started.elapsed();
            if took >= self.core.slow_callback.get() {
                bump(&self.core.counters.slow_callbacks, 1);
                tracing::warn!(target: "loopd", "executing {} took {:.3} seconds", name(), took.as_secs_f64());
            }
        }
    }

    // ---- I/O registrations (used by io, signal and process modules) ---------------

    /// Registers `source` with the poll; `dispatch` turns its readiness into callbacks.
    pub(crate) fn register_source(
        &self,
        source: &mut impl mio::event::Source,
        interest: Interest,
        dispatch: IoDispatch,
    ) -> io::Result<Token> {
        let token = Token(self.core.next_token.get());
        self.core
            .poll
            .borrow()
            .registry()
            .register(source, token, interest)?;
        self.core.next_token.set(token.0 + 1);
        self.core.sources.borrow_mut().insert(token.0, dispatch);
        Ok(token)
    }

    /// Changes the interest of a registered source. Re-registering a source that is ready
    /// now makes the (edge-triggered) poll report it again: how level-triggered
    /// `add_reader` semantics are kept.
    pub(crate) fn reregister_source(
        &self,
        source: &mut impl mio::event::Source,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        self.core
            .poll
            .borrow()
            .registry()
            .reregister(source, token, interest)
    }

    /// Removes a registration; events already reported for it are ignored.
    pub(crate) fn deregister_source(
        &self,
        source: &mut impl mio::event::Source,
        token: Token,
    ) -> io::Result<()> {
        let dispatch = self.core.sources.borrow_mut().remove(&token.0);
        drop(dispatch);
        self.core.poll.borrow().registry().deregister(source)
    }

    // ---- debug mode and metrics ---------------------------------------------------

    /// Whether debug mode is on.
    pub fn get_debug(&self) -> bool {
        self.core.debug.get()
    }

    /// Turns debug mode on or off. In debug mode each callback is timed and those slower
    /// than [`slow_callback_duration`](Self::slow_callback_duration) are reported.
    pub fn set_debug(&self, enabled: bool) {
        self.core.debug.set(enabled);
    }

    /// The threshold for slow-callback reports (100 ms by default).
    pub fn slow_callback_duration(&self) -> Duration {
        self.core.slow_callback.get()
    }

    /// Sets the slow-callback threshold.
    pub fn set_slow_callback_duration(&self, threshold: Duration) {
        self.core.slow_callback.set(threshold);
    }

    /// A snapshot of the loop's counters.
    pub fn metrics(&self) -> Metrics {
        let counters = &self.core.counters;
        let timers = self.core.timers.borrow();
        Metrics {
            iterations: counters.iterations.get(),
            callbacks_run: counters.callbacks_run.get(),
            ready_len: self.core.ready.borrow().len(),
            timers_pending: timers.live(),
            timers_cancelled_in_heap: timers.cancelled(),
            timer_heap_len: timers.len(),
            timers_fired: counters.timers_fired.get(),
            lateness: counters.lateness(),
            time_polling: Duration::from_nanos(counters.polling.get()),
            time_in_callbacks: Duration::from_nanos(counters.in_callbacks.get()),
            slow_callbacks: counters.slow_callbacks.get(),
            unhandled_errors: counters.unhandled_errors.get(),
        }
    }
}

impl std::fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLoop")
            .field("running", &self.is_running())
            .field("closed", &self.is_closed())
            .field("debug", &self.get_debug())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Nanos = 1_000_000_000;

    #[test]
    fn poll_timeout_is_zero_when_ready_or_stopping_and_capped_at_one_day() {
        let lp = EventLoop::new().unwrap();
        let now = clock::now();
        assert_eq!(
            lp.poll_timeout(now),
            (None, None),
            "nothing scheduled: wait for I/O"
        );

        let in_two_days = now + 2 * 24 * 3600 * SECOND;
        lp.call_at_loop_time(clock::to_secs(in_two_days), || {})
            .unwrap();
        assert_eq!(lp.poll_timeout(now).0, Some(MAX_POLL_TIMEOUT));

        lp.call_later(Duration::from_secs(3), || {}).unwrap();
        let (timeout, _) = lp.poll_timeout(clock::now());
        assert!(
            timeout.unwrap() <= Duration::from_secs(3) && timeout.unwrap() > Duration::from_secs(2)
        );

        lp.stop();
        assert_eq!(lp.poll_timeout(now).0, Some(Duration::ZERO), "stopping");
        lp.core.stopping.set(false);
        lp.call_soon(|| {}).unwrap();
        assert_eq!(lp.poll_timeout(now).0, Some(Duration::ZERO), "ready");
    }

    #[test]
    fn a_cancelled_head_does_not_shorten_the_timeout() {
        let lp = EventLoop::new().unwrap();
        let now = clock::now();
        lp.call_at_loop_time(clock::to_secs(now + SECOND), || {})
            .unwrap()
            .cancel();
        lp.call_at_loop_time(clock::to_secs(now + 10 * SECOND), || {})
            .unwrap();
        // The loop time in seconds (f64) comes back to nanoseconds within a rounding step,
        // which depends on the clock's value (the machine's uptime): compare with the
        // same round trip.
        let at = clock::time_from_secs(clock::to_secs(now + 10 * SECOND)).unwrap();
        assert!(at.abs_diff(now + 10 * SECOND) < 1_000, "{at} vs {now}");
        let (timeout, deadline) = lp.poll_timeout(now);
        assert_eq!(
            deadline,
            Some(at),
            "the live 10 s timer, not the cancelled 1 s one"
        );
        assert_eq!(timeout, Some(Duration::from_nanos(at - now)));
    }

    #[test]
    fn debug_mode_follows_loopd_debug() {
        for (value, expected) in [
            (None, false),
            (Some(""), false),
            (Some("0"), false),
            (Some("1"), true),
        ] {
            assert_eq!(
                debug_flag(value.map(std::ffi::OsStr::new)),
                expected,
                "{value:?}"
            );
        }
    }
}
