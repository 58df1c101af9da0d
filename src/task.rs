//! [`Task`]: a Rust future polled on the loop's thread (asyncio's `Task`), and
//! [`EventLoop::run_until_complete`].
//!
//! A task is a [`Future`] (its result holder) plus a *body*: the user's future wrapped so
//! that its output becomes the task's result. The loop keeps every unfinished task in a
//! per-loop registry keyed by a task id that is never reused; a wake-up names the task by
//! id, so the waker is `Send + Sync` although the task is not.
//!
//! # Invariants
//! - One pending poll per task: a wake-up only schedules a step if none is scheduled; the
//!   flag is cleared just before the step polls, so a wake during the poll schedules again.
//! - A wake on the loop's own thread while that loop runs goes straight to its ready queue;
//!   any other wake goes through `call_soon_threadsafe`. Either way the poll runs as a
//!   callback in a later batch, as asyncio's `Task.__step`.
//! - A task leaves the registry when it finishes, is cancelled, or the loop closes; a step
//!   scheduled for a task no longer registered does nothing.
//! - The body is taken out of its cell while it is polled (and dropped outside any borrow),
//!   so a task may cancel itself or others from inside its poll.
//!
//! # Unlike asyncio
//! - `cancel()` is immediate: the body is dropped (Rust's way to cancel a future), the task
//!   is marked cancelled and its done callbacks are scheduled. asyncio instead throws
//!   `CancelledError` into the coroutine at its next step, which may catch it.
//! - Awaiting a cancelled future or task gives `Err(Error::Cancelled)`; the awaiting task
//!   decides what to do, nothing is cancelled for it.
//! - A panic in the body is caught; the task finishes with a [`PanicError`]. An exception
//!   nobody retrieved is reported ("Task exception was never retrieved") when the task's
//!   last handle is dropped, which for a task nobody holds is when it finishes. Done
//!   callbacks do not count as retrieving it; calling `result()` in one does.
//! - `close()` drops the bodies of unfinished tasks and reports each one as asyncio's
//!   "Task was destroyed but it is pending!"; such tasks stay pending.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use crate::error::{Error, Result};
use crate::event_loop::{EventLoop, get_running_loop};
use crate::exception::{ExceptionContext, PanicError, SharedError};
use crate::future::{CallbackId, Future, FutureInner, State, Take};
use crate::handle::OnceCell;
use crate::remote::Remote;

/// A task's type-erased body: the user's future, wrapped so its output becomes the result.
pub type TaskBody = Pin<Box<dyn std::future::Future<Output = ()> + 'static>>;

/// What a task factory receives and returns: the body about to be polled and the name.
#[non_exhaustive]
pub struct TaskSpec {
    /// The body. A factory may wrap it (to instrument, time or log polls) but must poll it
    /// to completion: a body that ends without having produced the result leaves the task
    /// failed with a [`ResultLost`] exception.
    pub future: TaskBody,
    /// The task's name (given, or the default `Task-N`); a factory may change it.
    pub name: String,
}

/// A task factory, as set by [`EventLoop::set_task_factory`].
///
/// asyncio's factory builds the task object itself; in Rust the loop builds the [`Task`]
/// and the factory gets the type-erased body and name to wrap or rename.
pub type TaskFactory = Rc<dyn Fn(&EventLoop, TaskSpec) -> TaskSpec>;

/// A task's body finished without producing its result (a task factory dropped the future).
#[derive(Clone, Copy, Debug, thiserror::Error)]
#[error("task body finished without producing a result")]
pub struct ResultLost;

/// Process-wide counter for default names, as asyncio's `_task_name_counter`.
static TASK_NAME_COUNTER: AtomicU64 = AtomicU64::new(1);

/// The per-loop registry of unfinished tasks, and the task factory.
#[derive(Default)]
pub(crate) struct Tasks {
    live: RefCell<HashMap<u64, Rc<dyn TaskStep>>>,
    next_id: Cell<u64>,
    factory: RefCell<Option<TaskFactory>>,
}

/// What the registry can do with a task without knowing its output type.
trait TaskStep {
    /// Polls the body once (on the loop thread, from the ready queue).
    fn step(self: Rc<Self>, lp: &EventLoop);
    /// Drops the body of a task whose loop closes, reporting it if it was pending.
    fn destroy(&self, lp: &EventLoop);
}

/// The task-only part of a [`Future`]'s state.
pub(crate) struct TaskPart {
    id: u64,
    name: RefCell<String>,
    body: RefCell<Option<TaskBody>>,
    wake: Arc<TaskWake>,
    waker: Waker,
}

impl TaskPart {
    pub(crate) fn name(&self) -> String {
        self.name.borrow().clone()
    }

    /// Whether `waker` is this task's own (a task awaiting itself).
    pub(crate) fn is_own_waker(&self, waker: &Waker) -> bool {
        waker.will_wake(&self.waker)
    }

    fn take_body(&self) -> Option<TaskBody> {
        self.body.borrow_mut().take()
    }
}

/// The `Send + Sync` half of a task: enough to schedule its next step from any thread.
struct TaskWake {
    id: u64,
    remote: Arc<Remote>,
    /// A step is scheduled and has not started yet.
    scheduled: AtomicBool,
}

impl Wake for TaskWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        let id = self.id;
        if let Some(lp) = running_owner(&self.remote) {
            lp.push_ready(OnceCell::new_rc(move || run_step(id)));
        } else if self.remote.push(Box::new(move || run_step(id))).is_err() {
            // The loop is closed: its tasks were destroyed, there is nothing to poll.
        }
    }
}

/// The loop that owns `remote`, if it is the one running on this thread.
fn running_owner(remote: &Arc<Remote>) -> Option<EventLoop> {
    get_running_loop()
        .ok()
        .filter(|lp| Arc::ptr_eq(&lp.handle().remote, remote))
}

/// Runs one step of task `id` of the running loop (the loop that scheduled it).
fn run_step(id: u64) {
    let Ok(lp) = get_running_loop() else {
        return;
    };
    let task = lp.core.tasks.live.borrow().get(&id).cloned();
    if let Some(task) = task {
        task.step(&lp);
    }
}

fn unregister(lp: &EventLoop, id: u64) -> Option<Rc<dyn TaskStep>> {
    // Edition 2024: the borrow ends before the removed task is returned (and dropped).
    lp.core.tasks.live.borrow_mut().remove(&id)
}

impl<T: 'static> TaskStep for FutureInner<T> {
    fn step(self: Rc<Self>, lp: &EventLoop) {
        let Some(part) = self.task.clone() else {
            return;
        };
        part.wake.scheduled.store(false, Ordering::Release);
        let future = Future { inner: self };
        let Some(mut body) = part.take_body() else {
            return;
        };
        let polled = catch_unwind(AssertUnwindSafe(|| {
            body.as_mut().poll(&mut Context::from_waker(&part.waker))
        }));
        match polled {
            Ok(Poll::Pending) if !future.done() => {
                *part.body.borrow_mut() = Some(body);
                return;
            }
            Ok(Poll::Pending) => {} // cancelled while it ran
            Ok(Poll::Ready(())) if !future.done() => future.fail(Arc::new(ResultLost)),
            Ok(Poll::Ready(())) => {}
            Err(payload) if !future.done() => {
                future.fail(Arc::new(PanicError::from_payload(&*payload)))
            }
            Err(_) => {}
        }
        let entry = unregister(lp, part.id);
        drop(body);
        drop(entry);
    }

    fn destroy(&self, lp: &EventLoop) {
        let Some(part) = &self.task else {
            return;
        };
        let body = part.take_body();
        if body.is_some() && !self.is_done() {
            lp.call_exception_handler(ExceptionContext {
                message: "Task was destroyed but it is pending!".into(),
                future: Some(part.name()),
                ..Default::default()
            });
        }
        drop(body);
    }
}

/// Drops every unfinished task of a closing loop and shuts its default executor down;
/// called once from [`EventLoop::close`].
pub(crate) fn release_on_close(lp: &EventLoop) {
    let live = std::mem::take(&mut *lp.core.tasks.live.borrow_mut());
    let mut live: Vec<_> = live.into_iter().collect();
    live.sort_unstable_by_key(|(id, _)| *id);
    for (_, task) in &live {
        task.destroy(lp);
    }
    drop(live);
    crate::executor::release_on_close(lp);
}

/// asyncio's `Task`: a Rust future run by the loop, with a name and a result.
///
/// Cloning gives another handle to the same task. Awaiting a task gives its
/// [`result`](Self::result) (`T: Clone`); [`take`](Self::take) moves it out instead.
///
/// # Examples
/// ```
/// let lp = loopd::EventLoop::new().unwrap();
/// let task = lp.create_task(async { 6 * 7 }, Some("answer")).unwrap();
/// assert_eq!(task.name(), "answer");
/// let total = lp.run_until_complete(async move { task.await.unwrap() + 1 }).unwrap();
/// assert_eq!(total, 43);
/// ```
pub struct Task<T> {
    future: Future<T>,
    part: Rc<TaskPart>,
}

impl<T> Clone for Task<T> {
    fn clone(&self) -> Self {
        Task {
            future: self.future.clone(),
            part: self.part.clone(),
        }
    }
}

impl EventLoop {
    /// Wraps `fut` in a [`Task`] and schedules its first step with `call_soon`
    /// (asyncio's `loop.create_task(coro, name=name)`). Without a name the task is called
    /// `Task-N`, N counting unnamed tasks in this process. A task factory, if set, sees the
    /// body and name first (see [`set_task_factory`](Self::set_task_factory)).
    ///
    /// Fails with [`Error::Closed`] if the loop is closed. A panicking task factory
    /// propagates its panic to the caller.
    pub fn create_task<F>(&self, fut: F, name: Option<&str>) -> Result<Task<F::Output>>
    where
        F: std::future::Future + 'static,
        F::Output: 'static,
    {
        self.check_open()?;
        let task = self.new_task();
        let body = wrap_body(fut, Rc::downgrade(&task.future.inner));
        let name = name.map_or_else(default_name, str::to_string);
        let spec = self.apply_task_factory(TaskSpec { future: body, name });
        *task.part.name.borrow_mut() = spec.name;
        *task.part.body.borrow_mut() = Some(spec.future);
        let id = task.part.id;
        let entry: Rc<dyn TaskStep> = task.future.inner.clone();
        self.core.tasks.live.borrow_mut().insert(id, entry);
        if let Err(err) = self.call_soon(move || run_step(id)) {
            // Only if the factory closed the loop.
            let entry = unregister(self, id);
            let body = task.part.take_body();
            drop((entry, body));
            return Err(err);
        }
        Ok(task)
    }

    fn new_task<T: 'static>(&self) -> Task<T> {
        let tasks = &self.core.tasks;
        let id = tasks.next_id.get();
        tasks.next_id.set(id + 1);
        let wake = Arc::new(TaskWake {
            id,
            remote: self.handle().remote,
            scheduled: AtomicBool::new(true), // the first step, scheduled by create_task
        });
        let part = Rc::new(TaskPart {
            id,
            name: RefCell::new(String::new()),
            body: RefCell::new(None),
            waker: Waker::from(wake.clone()),
            wake,
        });
        Task {
            future: Future::new(self, Some(part.clone())),
            part,
        }
    }

    fn apply_task_factory(&self, spec: TaskSpec) -> TaskSpec {
        let factory = self.core.tasks.factory.borrow().clone();
        match factory {
            Some(factory) => factory(self, spec),
            None => spec,
        }
    }

    /// Sets the task factory used by [`create_task`](Self::create_task); `None` restores
    /// the default (asyncio's `loop.set_task_factory`).
    ///
    /// The factory is called with the loop and a [`TaskSpec`] (the type-erased body and the
    /// name) and returns the spec to use: it may wrap the body, e.g. to time each poll, or
    /// rename the task. It runs synchronously inside `create_task`.
    ///
    /// # Examples
    /// ```
    /// use loopd::{EventLoop, TaskSpec};
    /// let lp = EventLoop::new().unwrap();
    /// lp.set_task_factory(Some(|_: &EventLoop, mut spec: TaskSpec| {
    ///     spec.name = format!("traced-{}", spec.name);
    ///     spec
    /// }));
    /// let task = lp.create_task(async {}, Some("job")).unwrap();
    /// assert_eq!(task.name(), "traced-job");
    /// ```
    pub fn set_task_factory(
        &self,
        factory: Option<impl Fn(&EventLoop, TaskSpec) -> TaskSpec + 'static>,
    ) {
        *self.core.tasks.factory.borrow_mut() = factory.map(|f| Rc::new(f) as TaskFactory);
    }

    /// The task factory, if one is set.
    pub fn get_task_factory(&self) -> Option<TaskFactory> {
        self.core.tasks.factory.borrow().clone()
    }

    /// Runs the loop until `fut` (wrapped in a task) is done and returns its output.
    ///
    /// Fails with [`Error::Closed`], [`Error::AlreadyRunning`] or
    /// [`Error::AnotherLoopRunning`] as [`run_forever`](Self::run_forever) does (checked
    /// before the task is created); with [`Error::StoppedBeforeComplete`] if `stop()` ended
    /// the loop first (the task stays scheduled); with [`Error::Exception`] if the future
    /// panicked; with [`Error::Io`] if the poll failed.
    pub fn run_until_complete<F>(&self, fut: F) -> Result<F::Output>
    where
        F: std::future::Future + 'static,
        F::Output: 'static,
    {
        self.check_open()?;
        if self.is_running() {
            return Err(Error::AlreadyRunning);
        }
        if get_running_loop().is_ok() {
            return Err(Error::AnotherLoopRunning);
        }
        let task = self.create_task(fut, None)?;
        let stopper = task.future.add_done_callback(|_| {
            if let Ok(lp) = get_running_loop() {
                lp.stop();
            }
        })?;
        let ran = self.run_forever();
        task.future.remove_done_callback(stopper);
        ran?;
        if !task.done() {
            return Err(Error::StoppedBeforeComplete);
        }
        task.take_result()
    }
}

fn default_name() -> String {
    format!("Task-{}", TASK_NAME_COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// The body: awaits `fut` and stores its output as the task's result (unless the task was
/// cancelled meanwhile). Holds the result holder weakly: the body never keeps it alive.
fn wrap_body<F>(fut: F, holder: Weak<FutureInner<F::Output>>) -> TaskBody
where
    F: std::future::Future + 'static,
    F::Output: 'static,
{
    Box::pin(async move {
        let output = fut.await;
        if let Some(inner) = holder.upgrade() {
            let future = Future { inner };
            if !future.done() {
                future.complete(State::Finished(output));
            }
        }
    })
}

impl<T: 'static> Task<T> {
    /// The task's name.
    pub fn name(&self) -> String {
        self.part.name()
    }

    /// Renames the task.
    pub fn set_name(&self, name: &str) {
        *self.part.name.borrow_mut() = name.to_string();
    }

    /// The loop this task belongs to. Fails with [`Error::Closed`] if it was dropped.
    pub fn get_loop(&self) -> Result<EventLoop> {
        self.future.get_loop()
    }

    /// Cancels the task: if it is not done, drops its body, marks it cancelled, schedules
    /// its done callbacks and returns `true`; otherwise returns `false`. Unlike asyncio the
    /// cancellation is immediate (see the module docs).
    pub fn cancel(&self) -> bool {
        if self.future.done() {
            return false;
        }
        let body = self.part.take_body();
        self.future.complete(State::Cancelled);
        let entry = self
            .future
            .inner
            .event_loop()
            .and_then(|lp| unregister(&lp, self.part.id));
        drop(body);
        drop(entry);
        true
    }

    /// Whether the task was cancelled.
    pub fn cancelled(&self) -> bool {
        self.future.cancelled()
    }

    /// Whether the task finished, failed or was cancelled.
    pub fn done(&self) -> bool {
        self.future.done()
    }

    /// The output, cloned; fails as [`Future::result`] does (a panic in the task is an
    /// [`Error::Exception`] holding a [`PanicError`]).
    pub fn result(&self) -> Result<T>
    where
        T: Clone,
    {
        self.future.result()
    }

    /// Moves the output out; fails as [`Future::take_result`] does.
    pub fn take_result(&self) -> Result<T> {
        self.future.take_result()
    }

    /// The exception, `None` if the task finished normally; fails as
    /// [`Future::exception`] does.
    pub fn exception(&self) -> Result<Option<SharedError>> {
        self.future.exception()
    }

    /// Adds a callback run with this task once it is done, scheduled with `call_soon`;
    /// fails as [`Future::add_done_callback`] does.
    pub fn add_done_callback(
        &self,
        callback: impl FnOnce(&Task<T>) + 'static,
    ) -> Result<CallbackId> {
        let part = self.part.clone();
        self.future.add_done_callback(move |future| {
            callback(&Task {
                future: future.clone(),
                part,
            })
        })
    }

    /// Removes a callback not scheduled yet; returns whether it was found.
    pub fn remove_done_callback(&self, id: CallbackId) -> bool {
        self.future.remove_done_callback(id)
    }

    /// A Rust future that awaits this task and moves its output out.
    pub fn take(&self) -> Take<T> {
        self.future.take()
    }
}

impl<T: Clone + 'static> std::future::Future for Task<T> {
    type Output = Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        Pin::new(&mut self.future).poll(cx)
    }
}

impl<T> fmt::Debug for Task<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Task").field(&self.future).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_loop() -> EventLoop {
        EventLoop::new().expect("a new loop")
    }

    fn step(lp: &EventLoop) {
        lp.stop();
        lp.run_forever().expect("one iteration");
    }

    /// A future that is pending the first `n` polls, waking itself each time.
    struct YieldTimes(u32);

    impl std::future::Future for YieldTimes {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if self.0 == 0 {
                return Poll::Ready(());
            }
            self.0 -= 1;
            cx.waker().wake_by_ref();
            cx.waker().wake_by_ref(); // coalesced: still one step per iteration
            Poll::Pending
        }
    }

    #[test]
    fn first_step_runs_in_the_next_iteration_and_wakes_coalesce() {
        let lp = new_loop();
        let polls = Rc::new(Cell::new(0));
        let p = polls.clone();
        let task = lp
            .create_task(
                async move {
                    p.set(p.get() + 1);
                    YieldTimes(2).await;
                    p.set(p.get() + 1);
                },
                None,
            )
            .unwrap();
        assert_eq!(polls.get(), 0, "create_task does not poll");
        let expected = [(1, false), (1, false), (2, true)];
        for (i, (count, done)) in expected.into_iter().enumerate() {
            step(&lp);
            assert_eq!((polls.get(), task.done()), (count, done), "iteration {i}");
        }
        assert!(
            lp.core.tasks.live.borrow().is_empty(),
            "finished tasks leave"
        );
    }

    #[test]
    fn wake_on_the_running_loop_thread_skips_the_threadsafe_queue() {
        let lp = new_loop();
        let queued = Rc::new(Cell::new((0, 0)));
        let (q, inner_lp) = (queued.clone(), lp.clone());
        let mut first = true;
        lp.run_until_complete(std::future::poll_fn(move |cx| {
            if !std::mem::take(&mut first) {
                return Poll::Ready(());
            }
            let before = inner_lp.metrics().ready_len;
            cx.waker().wake_by_ref();
            q.set((before, inner_lp.metrics().ready_len));
            Poll::Pending
        }))
        .unwrap();
        let (before, after) = queued.get();
        assert_eq!(
            after,
            before + 1,
            "the step went straight to the ready queue"
        );
    }

    #[test]
    fn task_awaiting_itself_is_invalid_state() {
        let lp = new_loop();
        let slot: Rc<RefCell<Option<Task<String>>>> = Rc::default();
        let me = slot.clone();
        let selfish = lp
            .create_task(
                async move {
                    let me = me.borrow_mut().take();
                    match me {
                        Some(me) => me.take().await.unwrap_or_else(|e| e.to_string()),
                        None => "no handle".into(),
                    }
                },
                None,
            )
            .unwrap();
        *slot.borrow_mut() = Some(selfish.clone());
        step(&lp);
        assert_eq!(
            selfish.result().unwrap(),
            "invalid future state: task cannot await on itself"
        );
    }

    #[test]
    fn cancel_drops_the_body_and_runs_done_callbacks() {
        let lp = new_loop();
        let dropped = Rc::new(());
        let held = dropped.clone();
        let task = lp
            .create_task(
                async move {
                    let _held = held;
                    std::future::pending::<()>().await
                },
                None,
            )
            .unwrap();
        step(&lp);
        let seen = Rc::new(Cell::new(false));
        let s = seen.clone();
        task.add_done_callback(move |t| s.set(t.cancelled()))
            .unwrap();
        assert!(task.cancel());
        assert!(!task.cancel(), "already done");
        assert_eq!(Rc::strong_count(&dropped), 1, "body dropped at once");
        assert!(matches!(task.result(), Err(Error::Cancelled)));
        assert!(!seen.get(), "callbacks are scheduled, not run");
        step(&lp);
        assert!(seen.get());
        assert!(lp.core.tasks.live.borrow().is_empty());
    }

    #[test]
    fn task_cancelling_itself_finishes_cancelled() {
        let lp = new_loop();
        let slot: Rc<RefCell<Option<Task<u8>>>> = Rc::default();
        let me = slot.clone();
        let task = lp
            .create_task(
                async move {
                    if let Some(me) = me.borrow_mut().take() {
                        me.cancel();
                    }
                    1
                },
                None,
            )
            .unwrap();
        *slot.borrow_mut() = Some(task.clone());
        step(&lp);
        assert!(task.cancelled());
        assert!(lp.core.tasks.live.borrow().is_empty());
    }

    #[test]
    fn panicking_task_fails_and_unretrieved_panic_is_reported() {
        let lp = new_loop();
        let reports = Rc::new(RefCell::new(Vec::new()));
        let r = reports.clone();
        lp.set_exception_handler(Some(move |_: &EventLoop, ctx: &ExceptionContext| {
            r.borrow_mut()
                .push((ctx.message.clone(), ctx.future.clone()))
        }));
        let kept = lp
            .create_task(async { panic!("kept") }, Some("kept"))
            .unwrap();
        lp.create_task(async { panic!("lost") }, Some("lost"))
            .unwrap();
        step(&lp);
        assert!(
            matches!(kept.result(), Err(Error::Exception(e)) if e.to_string() == "panicked: kept")
        );
        assert_eq!(
            *reports.borrow(),
            [(
                "Task exception was never retrieved".to_string(),
                Some("lost".to_string())
            )]
        );
    }

    #[test]
    fn close_destroys_pending_tasks_and_reports_them() {
        let lp = new_loop();
        let reports = Rc::new(RefCell::new(Vec::new()));
        let r = reports.clone();
        lp.set_exception_handler(Some(move |_: &EventLoop, ctx: &ExceptionContext| {
            r.borrow_mut()
                .push((ctx.message.clone(), ctx.future.clone()))
        }));
        let keep_alive = lp.clone();
        let task = lp
            .create_task(
                async move {
                    let _cycle = keep_alive;
                    std::future::pending::<()>().await
                },
                Some("forever"),
            )
            .unwrap();
        step(&lp);
        lp.close().unwrap();
        assert!(!task.done(), "asyncio leaves destroyed tasks pending");
        assert_eq!(
            *reports.borrow(),
            [(
                "Task was destroyed but it is pending!".to_string(),
                Some("forever".to_string())
            )]
        );
        assert_eq!(
            Rc::strong_count(&lp.core),
            1,
            "the body's loop handle was dropped"
        );
        assert!(matches!(lp.create_task(async {}, None), Err(Error::Closed)));
    }

    #[test]
    fn factory_that_drops_the_body_leaves_result_lost() {
        let lp = new_loop();
        lp.set_task_factory(Some(|_: &EventLoop, spec: TaskSpec| TaskSpec {
            future: Box::pin(async {}),
            name: spec.name,
        }));
        let task = lp.create_task(async { 1 }, None).unwrap();
        step(&lp);
        assert!(
            matches!(task.result(), Err(Error::Exception(e)) if e.to_string().contains("without producing"))
        );
    }
}
