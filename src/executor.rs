//! The default executor: a bounded thread pool for blocking work, and
//! [`EventLoop::run_in_executor`].
//!
//! # Invariants
//! - At most `max_workers` threads (Python's default: `min(32, cpus + 4)`), started lazily:
//!   a job starts a thread only when no idle thread can take it. Idle threads stay until
//!   shutdown.
//! - The pool lock is held for a push, a pop or a count, never while a job runs.
//! - After `shutdown`, `submit` fails with [`Error::ExecutorShutdown`]; jobs already queued
//!   still run, then the threads exit.
//! - A result crosses back to the loop only through `call_soon_threadsafe`; the loop side
//!   keeps the pending [`Future`]s in a map keyed by ids never reused, so the job carries
//!   an id, not the (non-`Send`) future.
//! - A job an executor drops without running still completes its future (with
//!   [`JobLost`]), so nobody awaits forever.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};

use crate::error::{Error, Result};
use crate::event_loop::{EventLoop, get_running_loop};
use crate::exception::{PanicError, SharedError};
use crate::future::Future;
use crate::remote::LoopHandle;

/// A unit of blocking work handed to an [`Executor`].
pub type Job = Box<dyn FnOnce() + Send + 'static>;

/// Runs blocking jobs off the loop thread (the role of `concurrent.futures.Executor`).
pub trait Executor {
    /// Queues `job` to run on some other thread. Fails with [`Error::ExecutorShutdown`]
    /// after [`shutdown`](Self::shutdown), or with another error if it cannot run it.
    fn submit(&self, job: Job) -> Result<()>;

    /// Refuses new jobs; jobs already queued still run. With `wait`, returns only once
    /// they have finished and the threads have exited.
    fn shutdown(&self, wait: bool);
}

/// A job was dropped by its executor without running.
#[derive(Clone, Copy, Debug, thiserror::Error)]
#[error("the executor dropped the job without running it")]
pub struct JobLost;

/// The default executor: a bounded pool of threads started on demand.
///
/// Dropping the pool shuts it down without waiting.
///
/// # Examples
/// ```
/// use loopd::{Executor, ThreadPool};
/// let pool = ThreadPool::new(2).unwrap();
/// let (tx, rx) = std::sync::mpsc::channel();
/// pool.submit(Box::new(move || tx.send(40 + 2).unwrap())).unwrap();
/// assert_eq!(rx.recv().unwrap(), 42);
/// pool.shutdown(true);
/// ```
pub struct ThreadPool {
    shared: Arc<Shared>,
    max_workers: usize,
}

struct Shared {
    state: Mutex<PoolState>,
    work: Condvar,
}

#[derive(Default)]
struct PoolState {
    queue: VecDeque<Job>,
    threads: Vec<JoinHandle<()>>,
    /// Workers waiting for a job.
    idle: usize,
    shutdown: bool,
}

impl ThreadPool {
    /// A pool of at most `max_workers` threads. Fails with [`Error::InvalidArgument`] if
    /// `max_workers` is 0.
    pub fn new(max_workers: usize) -> Result<Self> {
        if max_workers == 0 {
            return Err(Error::InvalidArgument {
                what: "max_workers (must be greater than 0)",
                value: max_workers.to_string(),
            });
        }
        Ok(Self::bounded(max_workers))
    }

    fn bounded(max_workers: usize) -> Self {
        ThreadPool {
            shared: Arc::new(Shared {
                state: Mutex::new(PoolState::default()),
                work: Condvar::new(),
            }),
            max_workers,
        }
    }

    /// Python's default size: `min(32, cpus + 4)`.
    pub fn default_max_workers() -> usize {
        let cpus = thread::available_parallelism().map_or(1, |n| n.get());
        (cpus + 4).min(32)
    }

    /// The most threads this pool starts.
    pub fn max_workers(&self) -> usize {
        self.max_workers
    }

    /// Threads started so far (they are started lazily).
    pub fn threads(&self) -> usize {
        self.shared.lock().threads.len()
    }

    fn spawn_worker(&self, state: &mut PoolState) -> Result<()> {
        let shared = self.shared.clone();
        let handle = thread::Builder::new()
            .name("loopd-executor".into())
            .spawn(move || shared.work_loop())
            .map_err(Error::io("spawning an executor thread"))?;
        state.threads.push(handle);
        Ok(())
    }
}

impl Default for ThreadPool {
    /// A pool of [`default_max_workers`](Self::default_max_workers) threads.
    fn default() -> Self {
        Self::bounded(Self::default_max_workers())
    }
}

impl Executor for ThreadPool {
    fn submit(&self, job: Job) -> Result<()> {
        let mut state = self.shared.lock();
        if state.shutdown {
            return Err(Error::ExecutorShutdown);
        }
        state.queue.push_back(job);
        if state.idle >= state.queue.len() {
            self.shared.work.notify_one();
            return Ok(());
        }
        if state.threads.len() >= self.max_workers {
            return Ok(()); // a busy worker takes it when done
        }
        match self.spawn_worker(&mut state) {
            Ok(()) => Ok(()),
            Err(_) if !state.threads.is_empty() => Ok(()), // queued for the others
            Err(err) => {
                state.queue.pop_back();
                Err(err)
            }
        }
    }

    fn shutdown(&self, wait: bool) {
        let threads = {
            let mut state = self.shared.lock();
            state.shutdown = true;
            self.shared.work.notify_all();
            if !wait {
                return;
            }
            std::mem::take(&mut state.threads)
        };
        let me = thread::current().id();
        for handle in threads {
            if handle.thread().id() != me {
                // Workers catch job panics, so a join error cannot carry anything useful.
                let _ = handle.join();
            }
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shutdown(false);
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // Jobs run outside the lock, so a poisoned lock still guards a consistent state.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn work_loop(&self) {
        while let Some(job) = self.next_job() {
            // run_in_executor catches its own panics; this keeps the thread alive for
            // raw submitted jobs.
            let _ = catch_unwind(AssertUnwindSafe(job));
        }
    }

    /// The next job, waiting for one; `None` once shut down and drained.
    fn next_job(&self) -> Option<Job> {
        let mut state = self.lock();
        loop {
            if let Some(job) = state.queue.pop_front() {
                return Some(job);
            }
            if state.shutdown {
                return None;
            }
            state.idle += 1;
            state = self.work.wait(state).unwrap_or_else(|p| p.into_inner());
            state.idle -= 1;
        }
    }
}

/// The loop's executor state (a field of the loop's core).
#[derive(Default)]
pub(crate) struct ExecutorState {
    default: RefCell<Option<Rc<dyn Executor>>>,
    shutdown_called: Cell<bool>,
    /// Futures waiting for a job's result, by job id (a `Future<T>` each, type-erased).
    pending: RefCell<HashMap<u64, Box<dyn Any>>>,
    next_id: Cell<u64>,
}

/// Shuts the default executor down without waiting and forgets pending jobs; called
/// when the loop closes (asyncio's `close()` does `executor.shutdown(wait=False)`).
pub(crate) fn release_on_close(lp: &EventLoop) {
    let state = &lp.core.executor;
    let executor = state.default.borrow_mut().take();
    let pending = std::mem::take(&mut *state.pending.borrow_mut());
    if let Some(executor) = &executor {
        executor.shutdown(false);
    }
    drop((executor, pending));
}

impl EventLoop {
    /// Runs `f` on the default executor and returns a [`Future`] for its result
    /// (asyncio's `loop.run_in_executor(None, func)`). The default [`ThreadPool`] is
    /// created on first use. The result comes back with `call_soon_threadsafe`; a panic in
    /// `f` becomes the future's exception (a [`PanicError`]). Cancelling the future does
    /// not stop `f`; its result is then dropped.
    ///
    /// Fails with [`Error::Closed`] if the loop is closed, [`Error::ExecutorShutdown`]
    /// after [`shutdown_default_executor`](Self::shutdown_default_executor), or with the
    /// executor's own error if it refuses the job.
    pub fn run_in_executor<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<Future<T>> {
        self.check_open()?;
        let executor = self.default_executor()?;
        let future = self.create_future::<T>()?;
        let state = &self.core.executor;
        let id = state.next_id.get();
        state.next_id.set(id + 1);
        state
            .pending
            .borrow_mut()
            .insert(id, Box::new(future.clone()));
        let sender = ResultSender::<T>::new(self.handle(), id);
        let submitted = executor.submit(Box::new(move || {
            let outcome = catch_unwind(AssertUnwindSafe(f))
                .map_err(|payload| Arc::new(PanicError::from_payload(&*payload)) as SharedError);
            sender.send(outcome);
        }));
        if let Err(err) = submitted {
            let entry = state.pending.borrow_mut().remove(&id);
            drop(entry);
            return Err(err);
        }
        Ok(future)
    }

    /// Replaces the default executor used by [`run_in_executor`](Self::run_in_executor)
    /// (asyncio's `loop.set_default_executor`). The old one is not shut down.
    pub fn set_default_executor(&self, executor: impl Executor + 'static) {
        *self.core.executor.default.borrow_mut() = Some(Rc::new(executor));
    }

    /// Shuts the default executor down, waiting for its queued jobs to finish and its
    /// threads to exit (asyncio's `loop.shutdown_default_executor()`, which is a
    /// coroutine there; here it blocks the calling thread). Afterwards `run_in_executor`
    /// fails with [`Error::ExecutorShutdown`]. Calling it again does nothing.
    ///
    /// Fails with [`Error::Closed`] if the loop is closed. Results of the jobs it waited
    /// for are delivered in the loop's next iteration. Called from a loop callback, a job
    /// that waits for the loop itself would never finish: call it outside the loop (e.g.
    /// after `run_until_complete`, before `close`).
    pub fn shutdown_default_executor(&self) -> Result<()> {
        self.check_open()?;
        let state = &self.core.executor;
        state.shutdown_called.set(true);
        let executor = state.default.borrow_mut().take();
        if let Some(executor) = executor {
            executor.shutdown(true);
        }
        Ok(())
    }

    fn default_executor(&self) -> Result<Rc<dyn Executor>> {
        let state = &self.core.executor;
        if state.shutdown_called.get() {
            return Err(Error::ExecutorShutdown);
        }
        let existing = state.default.borrow().clone();
        Ok(existing.unwrap_or_else(|| {
            let pool: Rc<dyn Executor> = Rc::new(ThreadPool::default());
            *state.default.borrow_mut() = Some(pool.clone());
            pool
        }))
    }
}

/// Carries a job's outcome back to the loop; if dropped unsent, reports [`JobLost`].
struct ResultSender<T: Send + 'static> {
    handle: LoopHandle,
    id: u64,
    sent: bool,
    _result: PhantomData<fn(T)>,
}

impl<T: Send + 'static> ResultSender<T> {
    fn new(handle: LoopHandle, id: u64) -> Self {
        ResultSender {
            handle,
            id,
            sent: false,
            _result: PhantomData,
        }
    }

    fn send(mut self, outcome: std::result::Result<T, SharedError>) {
        self.sent = true;
        self.deliver(outcome);
    }

    fn deliver(&self, outcome: std::result::Result<T, SharedError>) {
        let id = self.id;
        // Fails only if the loop closed; the outcome is dropped with the closure.
        let _ = self
            .handle
            .call_soon_threadsafe(move || complete_job::<T>(id, outcome));
    }
}

impl<T: Send + 'static> Drop for ResultSender<T> {
    fn drop(&mut self) {
        if !self.sent {
            self.deliver(Err(Arc::new(JobLost)));
        }
    }
}

/// On the loop thread: hands a job's outcome to its future (unless it was cancelled).
fn complete_job<T: 'static>(id: u64, outcome: std::result::Result<T, SharedError>) {
    let Ok(lp) = get_running_loop() else {
        return;
    };
    let entry = lp.core.executor.pending.borrow_mut().remove(&id);
    let Some(Ok(future)) = entry.map(|e| e.downcast::<Future<T>>()) else {
        return;
    };
    if future.done() {
        return;
    }
    // The loop is running, so it is open and the future pending: these cannot fail.
    let _ = match outcome {
        Ok(value) => future.set_result(value),
        Err(error) => future.set_exception(error),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A gate jobs wait on until the test opens it.
    #[derive(Clone, Default)]
    struct Gate(Arc<(Mutex<bool>, Condvar)>);

    impl Gate {
        fn wait(&self) {
            let (open, cond) = &*self.0;
            let mut open = open.lock().unwrap();
            while !*open {
                open = cond.wait(open).unwrap();
            }
        }
        fn open(&self) {
            let (open, cond) = &*self.0;
            *open.lock().unwrap() = true;
            cond.notify_all();
        }
    }

    #[test]
    fn zero_workers_is_invalid() {
        assert!(matches!(
            ThreadPool::new(0),
            Err(Error::InvalidArgument { value, .. }) if value == "0"
        ));
    }

    #[test]
    fn default_size_is_pythons() {
        let cpus = thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(ThreadPool::default().max_workers(), (cpus + 4).min(32));
    }

    #[test]
    fn threads_start_lazily_up_to_the_bound_and_queued_jobs_still_run() {
        let pool = ThreadPool::new(2).unwrap();
        assert_eq!(pool.threads(), 0);
        let gate = Gate::default();
        let (tx, rx) = mpsc::channel();
        for i in 0..5 {
            let (gate, tx) = (gate.clone(), tx.clone());
            pool.submit(Box::new(move || {
                gate.wait();
                tx.send(i).unwrap();
            }))
            .unwrap();
        }
        assert_eq!(pool.threads(), 2, "bounded by max_workers");
        gate.open();
        pool.shutdown(true);
        drop(tx);
        let mut done: Vec<i32> = rx.iter().collect();
        done.sort_unstable();
        assert_eq!(done, [0, 1, 2, 3, 4]);
    }

    #[test]
    fn submit_after_shutdown_fails_and_panicking_jobs_keep_the_worker() {
        let pool = ThreadPool::new(1).unwrap();
        let (tx, rx) = mpsc::channel();
        pool.submit(Box::new(|| panic!("job panicked"))).unwrap();
        pool.submit(Box::new(move || tx.send(1).unwrap())).unwrap();
        assert_eq!(rx.recv().unwrap(), 1);
        assert_eq!(pool.threads(), 1);
        pool.shutdown(true);
        assert!(matches!(
            pool.submit(Box::new(|| {})),
            Err(Error::ExecutorShutdown)
        ));
    }

    /// An executor that drops every job.
    struct Dropper;

    impl Executor for Dropper {
        fn submit(&self, job: Job) -> Result<()> {
            drop(job);
            Ok(())
        }
        fn shutdown(&self, _wait: bool) {}
    }

    #[test]
    fn dropped_job_completes_its_future_with_job_lost() {
        let lp = EventLoop::new().unwrap();
        lp.set_default_executor(Dropper);
        let fut = lp.run_in_executor(|| 1).unwrap();
        lp.stop();
        lp.run_forever().unwrap();
        assert!(
            matches!(fut.result(), Err(Error::Exception(e)) if e.to_string().contains("dropped the job"))
        );
        assert!(lp.core.executor.pending.borrow().is_empty());
    }
}
