//! The only door into a loop from other threads: [`LoopHandle::call_soon_threadsafe`].
//!
//! # Invariants
//! - Callbacks from other threads wait in one mutex-guarded `Vec`; the loop swaps the whole
//!   batch out at once, so the lock is held for a push or a swap, never while running code.
//! - The poll is woken (an eventfd write through `mio::Waker`) only when the queue goes
//!   from empty to non-empty: a burst of N calls costs one wake-up, not N. Waking a
//!   sleeping thread on another vCPU costs 100-190 us here, so this matters.
//! - After close, every call fails with [`Error::Closed`] and nothing queued is kept.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::{Error, Result};

/// A callback sent from another thread.
pub(crate) type RemoteCallback = Box<dyn FnOnce() + Send + 'static>;

pub(crate) struct Remote {
    queue: Mutex<Vec<RemoteCallback>>,
    waker: mio::Waker,
    closed: AtomicBool,
}

impl Remote {
    pub(crate) fn new(waker: mio::Waker) -> Self {
        Remote {
            queue: Mutex::new(Vec::new()),
            waker,
            closed: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<RemoteCallback>> {
        // A panic while holding this lock can only come from an allocation failure inside
        // `push`; the Vec is still valid, so poisoning is ignored.
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn push(&self, callback: RemoteCallback) -> Result<()> {
        let was_empty = {
            let mut queue = self.lock();
            if self.closed.load(Ordering::Acquire) {
                return Err(Error::Closed);
            }
            let was_empty = queue.is_empty();
            queue.push(callback);
            was_empty
        };
        if was_empty {
            self.waker
                .wake()
                .map_err(Error::io("waking the event loop"))?;
        }
        Ok(())
    }

    /// Swaps the waiting batch into `into` (which must be empty), keeping allocations.
    pub(crate) fn take_into(&self, into: &mut Vec<RemoteCallback>) {
        std::mem::swap(&mut *self.lock(), into);
    }

    /// Refuses further calls and returns what was still queued, for the caller to drop.
    pub(crate) fn close(&self) -> Vec<RemoteCallback> {
        let mut queue = self.lock();
        self.closed.store(true, Ordering::Release);
        std::mem::take(&mut *queue)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// A `Send + Clone` reference to an [`EventLoop`](crate::EventLoop) for other threads.
///
/// # Examples
/// ```
/// let lp = loopd::EventLoop::new().unwrap();
/// let handle = lp.handle();
/// std::thread::spawn(move || {
///     handle.call_soon_threadsafe(|| loopd::get_running_loop().unwrap().stop()).unwrap();
/// });
/// lp.run_forever().unwrap();
/// ```
#[derive(Clone)]
pub struct LoopHandle {
    pub(crate) remote: Arc<Remote>,
}

impl LoopHandle {
    /// Schedules `callback` to run on the loop's thread in its next iteration.
    ///
    /// Unlike asyncio this returns no cancellable handle (that would cost an allocation
    /// and an atomic per call). Fails with [`Error::Closed`] once the loop is closed.
    pub fn call_soon_threadsafe(&self, callback: impl FnOnce() + Send + 'static) -> Result<()> {
        self.remote.push(Box::new(callback))
    }

    /// Asks the loop to stop after its current iteration, from any thread.
    pub fn stop(&self) -> Result<()> {
        self.call_soon_threadsafe(|| {
            if let Ok(lp) = crate::get_running_loop() {
                lp.stop();
            }
        })
    }

    /// Whether the loop was closed.
    pub fn is_closed(&self) -> bool {
        self.remote.is_closed()
    }
}
