//! [`Future`]: asyncio's `Future`, a result that will be set later on the loop's thread.
//!
//! A `Future<T>` is a cheap handle (`Rc`) to one shared state: pending, a result, an
//! exception, or cancelled. It is also a Rust future (`.await` it inside a task) and the
//! result holder of every [`Task`](crate::Task).
//!
//! # Invariants
//! - The state leaves *pending* exactly once (`set_result`, `set_exception`, `cancel`).
//! - Done callbacks never run synchronously: on completion each one is scheduled with
//!   `call_soon`, in the order they were added; one added to a done future is scheduled at
//!   once. Wakers of tasks awaiting the future are woken at the same moment.
//! - The future holds its loop weakly: a future never keeps a dropped loop alive.
//! - An exception nobody retrieved (`result`, `exception`, `take_result`) is reported to
//!   the loop's exception handler when the last handle is dropped, as asyncio's
//!   "Future exception was never retrieved".
//! - No `RefCell` borrow is held while user code (a callback, a waker, a `Drop`) runs.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};

use crate::error::{Error, Result};
use crate::event_loop::{Core, EventLoop};
use crate::exception::{ExceptionContext, SharedError};
use crate::task::TaskPart;

/// Identifies a done callback, for [`Future::remove_done_callback`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CallbackId(u64);

type DoneCallback<T> = Box<dyn FnOnce(&Future<T>)>;

pub(crate) enum State<T> {
    Pending,
    Finished(T),
    Failed(SharedError),
    Cancelled,
    /// The result was moved out by `take_result`.
    Taken,
}

pub(crate) struct FutureInner<T> {
    core: Weak<Core>,
    state: RefCell<State<T>>,
    callbacks: RefCell<Vec<(CallbackId, DoneCallback<T>)>>,
    next_callback: Cell<u64>,
    wakers: RefCell<Vec<Waker>>,
    /// An exception is set and nobody has looked at it yet.
    log_exception: Cell<bool>,
    /// Present when this future is a task's result holder.
    pub(crate) task: Option<Rc<TaskPart>>,
}

/// asyncio's `Future`: a result (or an exception, or a cancellation) set later.
///
/// Cloning gives another handle to the same future. Not `Send`: it lives on its loop's
/// thread; results computed elsewhere come back with
/// [`call_soon_threadsafe`](crate::LoopHandle::call_soon_threadsafe) (as
/// [`EventLoop::run_in_executor`] does).
///
/// Awaiting a future gives [`result`](Self::result): it needs `T: Clone` because a result
/// can be read any number of times; [`take`](Self::take) awaits and moves it out instead.
///
/// # Examples
/// ```
/// let lp = loopd::EventLoop::new().unwrap();
/// let fut = lp.create_future::<u32>().unwrap();
/// let setter = fut.clone();
/// lp.call_soon(move || setter.set_result(7).unwrap()).unwrap();
/// assert_eq!(lp.run_until_complete(fut).unwrap().unwrap(), 7);
/// ```
pub struct Future<T> {
    pub(crate) inner: Rc<FutureInner<T>>,
}

impl<T> Clone for Future<T> {
    fn clone(&self) -> Self {
        Future {
            inner: self.inner.clone(),
        }
    }
}

impl EventLoop {
    /// Creates a pending [`Future`] attached to this loop (asyncio's `loop.create_future()`).
    ///
    /// Fails with [`Error::Closed`] if the loop is closed.
    pub fn create_future<T: 'static>(&self) -> Result<Future<T>> {
        self.check_open()?;
        Ok(Future::new(self, None))
    }
}

impl<T: 'static> Future<T> {
    pub(crate) fn new(lp: &EventLoop, task: Option<Rc<TaskPart>>) -> Self {
        Future {
            inner: Rc::new(FutureInner {
                core: Rc::downgrade(&lp.core),
                state: RefCell::new(State::Pending),
                callbacks: RefCell::new(Vec::new()),
                next_callback: Cell::new(0),
                wakers: RefCell::new(Vec::new()),
                log_exception: Cell::new(false),
                task,
            }),
        }
    }

    /// The loop this future belongs to. Fails with [`Error::Closed`] if it was dropped.
    pub fn get_loop(&self) -> Result<EventLoop> {
        self.inner.event_loop().ok_or(Error::Closed)
    }

    /// Whether the future has a result, an exception, or was cancelled.
    pub fn done(&self) -> bool {
        !matches!(*self.inner.state.borrow(), State::Pending)
    }

    /// Whether the future was cancelled.
    pub fn cancelled(&self) -> bool {
        matches!(*self.inner.state.borrow(), State::Cancelled)
    }

    /// Marks the future done with `value` and schedules its done callbacks.
    ///
    /// Fails with [`Error::InvalidState`] if it is already done, and with [`Error::Closed`]
    /// (leaving it pending) if its loop is closed or dropped.
    pub fn set_result(&self, value: T) -> Result<()> {
        self.check_settable()?;
        self.complete(State::Finished(value));
        Ok(())
    }

    /// Marks the future done with an exception and schedules its done callbacks.
    ///
    /// Fails as [`set_result`](Self::set_result) does.
    pub fn set_exception(&self, error: SharedError) -> Result<()> {
        self.check_settable()?;
        self.inner.log_exception.set(true);
        self.complete(State::Failed(error));
        Ok(())
    }

    /// Cancels the future: if it is pending, marks it cancelled, schedules its done
    /// callbacks and returns `true`; if it is already done, returns `false`.
    pub fn cancel(&self) -> bool {
        if self.done() {
            return false;
        }
        self.complete(State::Cancelled);
        true
    }

    /// The result (cloned). Fails with [`Error::Cancelled`] if cancelled,
    /// [`Error::InvalidState`] if pending (or if [`take_result`](Self::take_result) took
    /// it), or [`Error::Exception`] carrying the exception that was set.
    pub fn result(&self) -> Result<T>
    where
        T: Clone,
    {
        self.inner.log_exception.set(false);
        match &*self.inner.state.borrow() {
            State::Finished(value) => Ok(value.clone()),
            other => Err(state_error(other)),
        }
    }

    /// Moves the result out, for results that are not `Clone`; afterwards the future stays
    /// done but [`result`](Self::result) fails with [`Error::InvalidState`]. Fails as
    /// `result` does. (Not in asyncio, where results are shared references.)
    pub fn take_result(&self) -> Result<T> {
        self.inner.log_exception.set(false);
        let mut state = self.inner.state.borrow_mut();
        match std::mem::replace(&mut *state, State::Taken) {
            State::Finished(value) => Ok(value),
            other => {
                let error = state_error(&other);
                *state = other;
                Err(error)
            }
        }
    }

    /// The exception, `None` if the future finished with a result. Fails with
    /// [`Error::Cancelled`] if cancelled and [`Error::InvalidState`] if pending.
    pub fn exception(&self) -> Result<Option<SharedError>> {
        self.inner.log_exception.set(false);
        match &*self.inner.state.borrow() {
            State::Pending => Err(Error::InvalidState("exception is not set yet")),
            State::Cancelled => Err(Error::Cancelled),
            State::Failed(error) => Ok(Some(error.clone())),
            State::Finished(_) | State::Taken => Ok(None),
        }
    }

    /// Adds a callback run with this future once it is done, scheduled with `call_soon`
    /// (never run synchronously, even on a done future). Returns an id for
    /// [`remove_done_callback`](Self::remove_done_callback).
    ///
    /// Fails with [`Error::Closed`] only when the future is done and its loop is closed, so
    /// the callback cannot be scheduled.
    pub fn add_done_callback(
        &self,
        callback: impl FnOnce(&Future<T>) + 'static,
    ) -> Result<CallbackId> {
        let id = CallbackId(self.inner.next_callback.get());
        self.inner.next_callback.set(id.0 + 1);
        if self.done() {
            let lp = self.inner.event_loop().ok_or(Error::Closed)?;
            let this = self.clone();
            lp.call_soon(move || callback(&this))?;
        } else {
            self.inner
                .callbacks
                .borrow_mut()
                .push((id, Box::new(callback)));
        }
        Ok(id)
    }

    /// Removes a callback that has not been scheduled yet; returns whether it was found.
    /// Once the future is done its callbacks are scheduled and this returns `false`.
    pub fn remove_done_callback(&self, id: CallbackId) -> bool {
        let removed = {
            let mut callbacks = self.inner.callbacks.borrow_mut();
            let index = callbacks.iter().position(|(cb_id, _)| *cb_id == id);
            index.map(|index| callbacks.remove(index))
        };
        removed.is_some()
    }

    /// A Rust future that awaits this one and moves its result out with
    /// [`take_result`](Self::take_result); for `T` that is not `Clone`.
    pub fn take(&self) -> Take<T> {
        Take {
            future: self.clone(),
        }
    }

    fn check_settable(&self) -> Result<()> {
        if self.done() {
            return Err(Error::InvalidState("future is already done"));
        }
        match self.inner.event_loop() {
            Some(lp) => lp.check_open(),
            None => Err(Error::Closed),
        }
    }

    /// Leaves the pending state: schedules the done callbacks, then wakes the awaiters.
    pub(crate) fn complete(&self, state: State<T>) {
        *self.inner.state.borrow_mut() = state;
        let callbacks = std::mem::take(&mut *self.inner.callbacks.borrow_mut());
        if let Some(lp) = self.inner.event_loop() {
            for (_, callback) in callbacks {
                let this = self.clone();
                // Fails only on a closed loop, where the callback could never run anyway.
                let _ = lp.call_soon(move || callback(&this));
            }
        }
        let wakers = std::mem::take(&mut *self.inner.wakers.borrow_mut());
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Finishes with an exception without the checks of `set_exception` (tasks use it).
    pub(crate) fn fail(&self, error: SharedError) {
        self.inner.log_exception.set(true);
        self.complete(State::Failed(error));
    }

    /// Registers `waker` to be woken on completion (once per distinct waker).
    pub(crate) fn register_waker(&self, waker: &Waker) {
        let mut wakers = self.inner.wakers.borrow_mut();
        if !wakers.iter().any(|known| known.will_wake(waker)) {
            wakers.push(waker.clone());
        }
    }

    fn poll_with(
        &self,
        cx: &mut Context<'_>,
        read: impl FnOnce(&Self) -> Result<T>,
    ) -> Poll<Result<T>> {
        if self.done() {
            return Poll::Ready(read(self));
        }
        if let Some(task) = &self.inner.task {
            if task.is_own_waker(cx.waker()) {
                // It would wait for itself forever.
                return Poll::Ready(Err(Error::InvalidState("task cannot await on itself")));
            }
        }
        self.register_waker(cx.waker());
        Poll::Pending
    }
}

/// The error `result`/`take_result` give for a state without a value.
fn state_error<T>(state: &State<T>) -> Error {
    match state {
        State::Pending => Error::InvalidState("result is not set yet"),
        State::Cancelled => Error::Cancelled,
        State::Failed(error) => Error::Exception(error.clone()),
        State::Taken => Error::InvalidState("result was already taken"),
        State::Finished(_) => Error::InvalidState("result is set"),
    }
}

impl<T> FutureInner<T> {
    pub(crate) fn event_loop(&self) -> Option<EventLoop> {
        self.core.upgrade().map(|core| EventLoop { core })
    }

    pub(crate) fn is_done(&self) -> bool {
        !matches!(*self.state.borrow(), State::Pending)
    }

    fn describe(&self) -> String {
        match &self.task {
            Some(task) => task.name(),
            None => "Future".to_string(),
        }
    }
}

impl<T> Drop for FutureInner<T> {
    fn drop(&mut self) {
        if !self.log_exception.get() {
            return;
        }
        let error = match &*self.state.borrow() {
            State::Failed(error) => error.clone(),
            _ => return,
        };
        let kind = if self.task.is_some() {
            "Task"
        } else {
            "Future"
        };
        let context = ExceptionContext {
            message: format!("{kind} exception was never retrieved"),
            error: Some(error),
            future: Some(self.describe()),
            ..Default::default()
        };
        match self.event_loop() {
            Some(lp) => lp.call_exception_handler(context),
            None => tracing::error!(target: "loopd", "{context}"),
        }
    }
}

impl<T: Clone + 'static> std::future::Future for Future<T> {
    type Output = Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        self.poll_with(cx, Future::result)
    }
}

/// Awaits a [`Future`] and moves its result out; made by [`Future::take`].
pub struct Take<T> {
    future: Future<T>,
}

impl<T: 'static> std::future::Future for Take<T> {
    type Output = Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        self.future.poll_with(cx, Future::take_result)
    }
}

impl<T> fmt::Debug for Future<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &*self.inner.state.borrow() {
            State::Pending => "pending",
            State::Finished(_) | State::Taken => "finished",
            State::Failed(_) => "failed",
            State::Cancelled => "cancelled",
        };
        f.debug_struct("Future")
            .field("name", &self.inner.describe())
            .field("state", &state)
            .finish()
    }
}

impl<T> fmt::Debug for Take<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Take").field(&self.future).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::PanicError;

    fn new_loop() -> EventLoop {
        EventLoop::new().expect("a new loop")
    }

    /// Runs one iteration, as a test stepping the loop by hand.
    fn step(lp: &EventLoop) {
        lp.stop();
        lp.run_forever().expect("one iteration");
    }

    fn boom() -> SharedError {
        Arc::new(PanicError("boom".into()))
    }

    #[test]
    fn done_callbacks_run_via_call_soon_in_order() {
        let lp = new_loop();
        let fut = lp.create_future::<u8>().unwrap();
        let log = Rc::new(RefCell::new(Vec::new()));
        for name in ["a", "b", "c"] {
            let log = log.clone();
            fut.add_done_callback(move |f| log.borrow_mut().push((name, f.result().unwrap())))
                .unwrap();
        }
        fut.set_result(5).unwrap();
        assert!(log.borrow().is_empty(), "never synchronously");
        step(&lp);
        assert_eq!(*log.borrow(), [("a", 5), ("b", 5), ("c", 5)]);
    }

    #[test]
    fn callback_added_to_done_future_is_scheduled_at_once() {
        let lp = new_loop();
        let fut = lp.create_future::<u8>().unwrap();
        fut.set_result(1).unwrap();
        let hits = Rc::new(Cell::new(0));
        let h = hits.clone();
        fut.add_done_callback(move |_| h.set(h.get() + 1)).unwrap();
        assert_eq!(hits.get(), 0);
        step(&lp);
        assert_eq!(hits.get(), 1);
    }

    #[test]
    fn removed_callback_does_not_run() {
        let lp = new_loop();
        let fut = lp.create_future::<u8>().unwrap();
        let hits = Rc::new(Cell::new(0));
        let (h1, h2) = (hits.clone(), hits.clone());
        let first = fut
            .add_done_callback(move |_| h1.set(h1.get() + 1))
            .unwrap();
        fut.add_done_callback(move |_| h2.set(h2.get() + 10))
            .unwrap();
        assert!(fut.remove_done_callback(first));
        assert!(!fut.remove_done_callback(first), "already removed");
        fut.cancel();
        step(&lp);
        assert_eq!(hits.get(), 10);
    }

    #[test]
    fn completing_twice_is_invalid_state() {
        let lp = new_loop();
        type Case = (&'static str, fn(&Future<u8>) -> Result<()>);
        let finish: [Case; 3] = [
            ("result", |f| f.set_result(1)),
            ("exception", |f| f.set_exception(boom())),
            ("cancel", |f| {
                f.cancel();
                Ok(())
            }),
        ];
        for (first, finish_first) in finish {
            let fut = lp.create_future::<u8>().unwrap();
            finish_first(&fut).unwrap();
            let _ = fut.exception();
            assert!(
                matches!(fut.set_result(2), Err(Error::InvalidState(_))),
                "{first}"
            );
            assert!(
                matches!(fut.set_exception(boom()), Err(Error::InvalidState(_))),
                "{first}"
            );
            assert!(!fut.cancel(), "{first}");
        }
    }

    #[test]
    fn result_and_exception_by_state() {
        let lp = new_loop();
        let fut = lp.create_future::<u8>().unwrap();
        assert!(matches!(fut.result(), Err(Error::InvalidState(m)) if m.contains("not set")));
        assert!(matches!(fut.exception(), Err(Error::InvalidState(_))));
        assert!(!fut.done());

        fut.set_exception(boom()).unwrap();
        assert!(fut.done() && !fut.cancelled());
        assert!(
            matches!(fut.result(), Err(Error::Exception(e)) if e.to_string() == "panicked: boom")
        );
        assert!(fut.exception().unwrap().is_some());

        let fut = lp.create_future::<u8>().unwrap();
        assert!(fut.cancel());
        assert!(fut.cancelled() && fut.done());
        assert!(matches!(fut.result(), Err(Error::Cancelled)));
        assert!(matches!(fut.exception(), Err(Error::Cancelled)));

        let fut = lp.create_future::<String>().unwrap();
        fut.set_result("x".into()).unwrap();
        assert_eq!(fut.result().unwrap(), "x");
        assert!(fut.exception().unwrap().is_none());
        assert_eq!(fut.take_result().unwrap(), "x");
        assert!(fut.done());
        assert!(matches!(fut.take_result(), Err(Error::InvalidState(m)) if m.contains("taken")));
    }

    #[test]
    fn closed_loop_refuses_futures_and_results() {
        let lp = new_loop();
        let fut = lp.create_future::<u8>().unwrap();
        lp.close().unwrap();
        assert!(matches!(lp.create_future::<u8>(), Err(Error::Closed)));
        assert!(matches!(fut.set_result(1), Err(Error::Closed)));
        assert!(!fut.done(), "a refused result leaves the future pending");
        drop(lp);
        assert!(matches!(fut.get_loop(), Err(Error::Closed)));
        assert!(matches!(fut.set_result(1), Err(Error::Closed)));
    }

    #[test]
    fn unretrieved_exception_is_reported_on_drop() {
        let lp = new_loop();
        let reports = Rc::new(RefCell::new(Vec::new()));
        let r = reports.clone();
        lp.set_exception_handler(Some(move |_: &EventLoop, ctx: &ExceptionContext| {
            r.borrow_mut().push(ctx.message.clone())
        }));
        let seen = lp.create_future::<u8>().unwrap();
        seen.set_exception(boom()).unwrap();
        assert!(seen.exception().unwrap().is_some());
        drop(seen);
        assert!(reports.borrow().is_empty(), "retrieved: not reported");

        let unseen = lp.create_future::<u8>().unwrap();
        unseen.set_exception(boom()).unwrap();
        let clone = unseen.clone();
        drop(unseen);
        assert!(reports.borrow().is_empty(), "a handle is still alive");
        drop(clone);
        assert_eq!(*reports.borrow(), ["Future exception was never retrieved"]);
    }
}
