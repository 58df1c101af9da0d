//! Callback handles: what `call_soon`, `call_later` and friends return.
//!
//! A scheduled callback lives in one reference-counted cell that holds both its state and
//! its closure, so scheduling costs one allocation; the ready queue, the timer heap and the
//! caller's [`Handle`] share that cell.
//!
//! # Invariants
//! - A one-shot callback runs at most once: running takes the closure out of its cell.
//! - Cancelling drops the closure at once (releasing what it captured) and is idempotent.
//! - A cell is `IN_HEAP` exactly while its entry sits in a timer heap; only then does
//!   cancelling count towards that heap's lazily-removed entries.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::Rc;

use crate::clock::{self, Nanos};

const CANCELLED: u8 = 1;
const IN_HEAP: u8 = 2;

/// State shared by every kind of callback cell.
#[derive(Default)]
pub(crate) struct Header {
    flags: Cell<u8>,
}

impl Header {
    pub(crate) fn is_cancelled(&self) -> bool {
        self.flags.get() & CANCELLED != 0
    }
    /// Marks the cell cancelled; returns whether it was still in a timer heap.
    fn mark_cancelled(&self) -> Option<bool> {
        let flags = self.flags.get();
        if flags & CANCELLED != 0 {
            return None;
        }
        self.flags.set(flags | CANCELLED);
        Some(flags & IN_HEAP != 0)
    }
    /// Clears `IN_HEAP`; returns whether it was set.
    pub(crate) fn take_in_heap(&self) -> bool {
        let flags = self.flags.get();
        self.flags.set(flags & !IN_HEAP);
        flags & IN_HEAP != 0
    }
    pub(crate) fn set_in_heap(&self, in_heap: bool) {
        let flags = self.flags.get() & !IN_HEAP;
        self.flags
            .set(if in_heap { flags | IN_HEAP } else { flags });
    }
}

/// A callback as the loop sees it: runnable, cancellable, nameable.
pub(crate) trait Runnable {
    fn header(&self) -> &Header;
    /// Runs the callback (a no-op for a one-shot cell that already ran).
    fn run(&self);
    /// Drops the closure; called once, on the first `cancel`.
    fn drop_callback(&self);
    /// The closure's type name, for debug-mode reports.
    fn callback_name(&self) -> &'static str;
}

/// A one-shot callback (`call_soon`, `call_later`, `call_at`).
pub(crate) struct OnceCell<F> {
    header: Header,
    callback: Cell<Option<F>>,
}

impl<F: FnOnce() + 'static> OnceCell<F> {
    pub(crate) fn new_rc(callback: F) -> Rc<dyn Runnable> {
        Rc::new(OnceCell {
            header: Header::default(),
            callback: Cell::new(Some(callback)),
        })
    }
}

impl<F: FnOnce() + 'static> Runnable for OnceCell<F> {
    fn header(&self) -> &Header {
        &self.header
    }
    fn run(&self) {
        if let Some(callback) = self.callback.take() {
            callback();
        }
    }
    fn drop_callback(&self) {
        drop(self.callback.take());
    }
    fn callback_name(&self) -> &'static str {
        std::any::type_name::<F>()
    }
}

/// A callback that runs every time its event happens (readers, writers, signals).
pub(crate) struct RepeatingCell<F> {
    header: Header,
    callback: RefCell<Option<F>>,
}

impl<F: FnMut() + 'static> RepeatingCell<F> {
    pub(crate) fn new_rc(callback: F) -> Rc<dyn Runnable> {
        Rc::new(RepeatingCell {
            header: Header::default(),
            callback: RefCell::new(Some(callback)),
        })
    }
}

impl<F: FnMut() + 'static> Runnable for RepeatingCell<F> {
    fn header(&self) -> &Header {
        &self.header
    }
    fn run(&self) {
        // A callback re-entering itself is impossible (it only runs from the ready queue),
        // but a failed borrow must never panic the loop: skip instead.
        if let Ok(mut slot) = self.callback.try_borrow_mut() {
            if let Some(callback) = slot.as_mut() {
                callback();
            }
        }
    }
    fn drop_callback(&self) {
        if let Ok(mut slot) = self.callback.try_borrow_mut() {
            drop(slot.take());
        }
    }
    fn callback_name(&self) -> &'static str {
        std::any::type_name::<F>()
    }
}

/// Cancels a cell; returns whether it was still waiting in a timer heap.
pub(crate) fn cancel_cell(cell: &Rc<dyn Runnable>) -> bool {
    match cell.header().mark_cancelled() {
        Some(was_in_heap) => {
            cell.drop_callback();
            was_in_heap
        }
        None => false,
    }
}

/// A callback scheduled with `call_soon` (asyncio's `Handle`).
///
/// Dropping a `Handle` does not cancel the callback.
#[derive(Clone)]
pub struct Handle {
    pub(crate) cell: Rc<dyn Runnable>,
}

impl Handle {
    /// Cancels the callback. Cancelling one that already ran, or cancelling twice, does nothing.
    pub fn cancel(&self) {
        cancel_cell(&self.cell);
    }

    /// Whether [`cancel`](Self::cancel) was called.
    pub fn cancelled(&self) -> bool {
        self.cell.header().is_cancelled()
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("callback", &self.cell.callback_name())
            .field("cancelled", &self.cancelled())
            .finish()
    }
}

/// A callback scheduled with `call_later` or `call_at` (asyncio's `TimerHandle`).
#[derive(Clone)]
pub struct TimerHandle {
    pub(crate) handle: Handle,
    pub(crate) deadline: Nanos,
    /// The owning heap's count of cancelled entries still inside it.
    pub(crate) heap_cancelled: Rc<Cell<usize>>,
}

impl TimerHandle {
    /// Cancels the timer; it leaves the heap lazily (see [`crate::timer`]).
    pub fn cancel(&self) {
        if cancel_cell(&self.handle.cell) {
            self.heap_cancelled.set(self.heap_cancelled.get() + 1);
        }
    }

    /// Whether [`cancel`](Self::cancel) was called.
    pub fn cancelled(&self) -> bool {
        self.handle.cancelled()
    }

    /// The loop time (seconds, as [`EventLoop::time`](crate::EventLoop::time)) it fires at.
    pub fn when(&self) -> f64 {
        clock::to_secs(self.deadline)
    }

    /// The plain handle view of this timer.
    pub fn as_handle(&self) -> &Handle {
        &self.handle
    }
}

impl fmt::Debug for TimerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimerHandle")
            .field("when", &self.when())
            .field("callback", &self.handle.cell.callback_name())
            .field("cancelled", &self.cancelled())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_cell_runs_once_and_cancel_drops_the_closure() {
        let hits = Rc::new(Cell::new(0));
        let h = hits.clone();
        let cell = OnceCell::new_rc(move || h.set(h.get() + 1));
        cell.run();
        cell.run();
        assert_eq!(hits.get(), 1);

        let captured = Rc::new(());
        let c = captured.clone();
        let cell = OnceCell::new_rc(move || drop(c));
        assert_eq!(Rc::strong_count(&captured), 2);
        Handle { cell: cell.clone() }.cancel();
        assert_eq!(Rc::strong_count(&captured), 1, "cancel releases captures");
        assert!(cell.header().is_cancelled());
    }

    #[test]
    fn cancelling_counts_towards_the_heap_only_while_in_it() {
        let counter = Rc::new(Cell::new(0));
        let cell = OnceCell::new_rc(|| {});
        let timer = TimerHandle {
            handle: Handle { cell: cell.clone() },
            deadline: 0,
            heap_cancelled: counter.clone(),
        };
        cell.header().set_in_heap(true);
        timer.cancel();
        timer.cancel();
        assert_eq!(counter.get(), 1);

        let cell = OnceCell::new_rc(|| {});
        let fired = TimerHandle {
            handle: Handle { cell },
            deadline: 0,
            heap_cancelled: counter.clone(),
        };
        fired.cancel();
        assert_eq!(counter.get(), 1, "not in the heap: nothing to compact");
    }
}
