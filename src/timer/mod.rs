//! Timers scheduled with `call_later` and `call_at`.
//!
//! # Invariants
//! - Ordered by `(deadline, seq)`: equal deadlines fire in insertion order (asyncio leaves
//!   this undefined; loopd picks FIFO).
//! - A timer is due when `now >= deadline`, never before: inside a timer callback
//!   `loop.time() >= handle.when()` always holds (asyncio fires up to ~1 ms early).
//! - Cancelling only marks an entry; it leaves when it reaches the top, or when cancelled
//!   entries pass a quarter of the heap and the heap is compacted.
//! - A 4-ary heap: half the depth of a binary one, and a node's children share cache lines.
//!   With 200k timers the heap is megabytes, and each level of a pop is a likely cache miss.
//! - `drain_due` never reads the timers' cells (scattered in memory: a miss each). The ready
//!   batch reads each cell once anyway, and settles the heap bookkeeping then
//!   ([`settle_popped`]): a timer popped here still says `IN_HEAP` until that moment. So the heap holds at most
//!   4/3 of the live timers (plus [`COMPACT_MIN`]) however many timers churn through it.

pub(crate) mod timerfd;

use std::cell::Cell;
use std::cmp::Ordering;

use dary_heap::QuaternaryHeap;
use std::rc::Rc;

use crate::clock::Nanos;
use crate::handle::{Handle, Runnable, TimerHandle};

/// Below this many entries the heap is never compacted (rebuilding a tiny heap buys nothing).
pub(crate) const COMPACT_MIN: usize = 64;

struct Entry {
    deadline: Nanos,
    seq: u64,
    cell: Rc<dyn Runnable>,
}

impl Entry {
    fn key(&self) -> (Nanos, u64) {
        (self.deadline, self.seq)
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    // Reversed: the heap is a max-heap and we want the earliest deadline on top.
    fn cmp(&self, other: &Self) -> Ordering {
        other.key().cmp(&self.key())
    }
}

/// A min-heap of timers with lazy cancellation.
pub(crate) struct TimerHeap {
    heap: QuaternaryHeap<Entry>,
    next_seq: u64,
    /// Cancelled entries still in `heap`; shared with every `TimerHandle` from this heap.
    cancelled: Rc<Cell<usize>>,
}

impl TimerHeap {
    pub(crate) fn new() -> Self {
        TimerHeap {
            heap: QuaternaryHeap::new(),
            next_seq: 0,
            cancelled: Rc::new(Cell::new(0)),
        }
    }

    /// Schedules `cell` at `deadline` and returns its handle.
    pub(crate) fn push(&mut self, deadline: Nanos, cell: Rc<dyn Runnable>) -> TimerHandle {
        self.compact_if_mostly_cancelled();
        cell.header().set_in_heap(true);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Entry {
            deadline,
            seq,
            cell: cell.clone(),
        });
        TimerHandle {
            handle: Handle { cell },
            deadline,
            heap_cancelled: self.cancelled.clone(),
        }
    }

    /// Entries in the heap, cancelled ones included.
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Timers that will still fire.
    pub(crate) fn live(&self) -> usize {
        // Popped-but-not-yet-settled cancelled timers are still counted (see `settle_popped`).
        self.heap.len().saturating_sub(self.cancelled.get())
    }

    /// Cancelled entries not yet removed.
    pub(crate) fn cancelled(&self) -> usize {
        self.cancelled.get()
    }

    /// Drops cancelled entries from the top, then compacts if too many remain inside.
    pub(crate) fn purge_cancelled(&mut self) {
        while self
            .heap
            .peek()
            .is_some_and(|top| top.cell.header().is_cancelled())
        {
            if let Some(entry) = self.heap.pop() {
                self.forget_cancelled(&entry);
            }
        }
        self.compact_if_mostly_cancelled();
    }

    /// The earliest live deadline, if any.
    pub(crate) fn next_deadline(&mut self) -> Option<Nanos> {
        self.purge_cancelled();
        self.heap.peek().map(|top| top.deadline)
    }

    /// Hands every timer with `deadline <= now` to `on_due` in `(deadline, seq)` order, with
    /// its lateness in nanoseconds, without reading its cell: cancelled ones included, which
    /// the ready batch skips (see [`settle_popped`]).
    pub(crate) fn drain_due(
        &mut self,
        now: Nanos,
        mut on_due: impl FnMut(Rc<dyn Runnable>, Nanos),
    ) {
        while self.heap.peek().is_some_and(|top| top.deadline <= now) {
            let Some(entry) = self.heap.pop() else { break };
            on_due(entry.cell, now - entry.deadline);
        }
    }

    /// The shared count of cancelled entries, for [`settle_popped`].
    pub(crate) fn cancelled_counter(&self) -> Rc<Cell<usize>> {
        self.cancelled.clone()
    }

    /// Removes everything (loop close): callbacks are dropped, handles stay valid.
    pub(crate) fn clear(&mut self) -> Vec<Rc<dyn Runnable>> {
        self.cancelled.set(0);
        let cells: Vec<_> = self.heap.drain().map(|entry| entry.cell).collect();
        // (entries popped but not yet run are dropped with the ready queue)
        for cell in &cells {
            cell.header().set_in_heap(false);
        }
        cells
    }

    fn forget_cancelled(&mut self, entry: &Entry) {
        entry.cell.header().set_in_heap(false);
        self.cancelled.set(self.cancelled.get().saturating_sub(1));
    }

    fn compact_if_mostly_cancelled(&mut self) {
        let cancelled = self.cancelled.get();
        if self.heap.len() < COMPACT_MIN || cancelled * 4 <= self.heap.len() {
            return;
        }
        self.heap.retain(|entry| {
            let keep = !entry.cell.header().is_cancelled();
            if !keep {
                entry.cell.header().set_in_heap(false);
            }
            keep
        });
        self.cancelled.set(0);
    }
}

/// Called by the ready batch for each cell it takes: a timer popped by `drain_due` leaves the
/// heap's books here. Its `IN_HEAP` flag is cleared (so cancelling it from now on counts
/// nothing), and if it was cancelled while flagged, the heap's count gives it back.
pub(crate) fn settle_popped(cell: &dyn Runnable, heap_cancelled: &Cell<usize>) {
    let header = cell.header();
    if header.take_in_heap() && header.is_cancelled() {
        heap_cancelled.set(heap_cancelled.get().saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handle::OnceCell;
    use std::cell::RefCell;

    const MS: Nanos = 1_000_000;

    fn named(log: &Rc<RefCell<Vec<&'static str>>>, name: &'static str) -> Rc<dyn Runnable> {
        let log = log.clone();
        OnceCell::new_rc(move || log.borrow_mut().push(name))
    }

    fn fire_due(timers: &mut TimerHeap, now: Nanos) {
        let mut due = Vec::new();
        timers.drain_due(now, |cell, _| due.push(cell));
        let counter = timers.cancelled_counter();
        for cell in due {
            settle_popped(&*cell, &counter);
            if !cell.header().is_cancelled() {
                cell.run();
            }
        }
    }

    #[test]
    fn equal_deadlines_fire_in_insertion_order() {
        let (log, mut timers) = (Rc::default(), TimerHeap::new());
        for name in ["a", "b", "c"] {
            timers.push(5 * MS, named(&log, name));
        }
        fire_due(&mut timers, 5 * MS);
        assert_eq!(*log.borrow(), ["a", "b", "c"]);
    }

    #[test]
    fn earlier_deadlines_fire_first_and_nothing_fires_early() {
        let (log, mut timers) = (Rc::default(), TimerHeap::new());
        timers.push(9 * MS, named(&log, "late"));
        timers.push(3 * MS, named(&log, "early"));
        fire_due(&mut timers, 9 * MS - 1);
        assert_eq!(*log.borrow(), ["early"], "one nanosecond before is not due");
        fire_due(&mut timers, 9 * MS);
        assert_eq!(*log.borrow(), ["early", "late"]);
    }

    #[test]
    fn lateness_is_measured_from_the_deadline() {
        let (log, mut timers) = (Rc::default(), TimerHeap::new());
        timers.push(2 * MS, named(&log, "t"));
        let mut lateness = Vec::new();
        timers.drain_due(2 * MS + 1234, |_, late| lateness.push(late));
        assert_eq!(lateness, [1234]);
    }

    #[test]
    fn cancelled_timers_are_skipped_and_leave_from_the_top() {
        let (log, mut timers) = (Rc::default(), TimerHeap::new());
        timers.push(MS, named(&log, "cancelled")).cancel();
        timers.push(2 * MS, named(&log, "kept"));
        assert_eq!((timers.len(), timers.live(), timers.cancelled()), (2, 1, 1));
        assert_eq!(timers.next_deadline(), Some(2 * MS));
        assert_eq!((timers.len(), timers.cancelled()), (1, 0));
        fire_due(&mut timers, 2 * MS);
        assert_eq!(*log.borrow(), ["kept"]);
    }

    #[test]
    fn churn_keeps_the_heap_within_a_third_of_the_live_timers() {
        let (log, mut timers) = (Rc::default(), TimerHeap::new());
        let live: Vec<_> = (0..1000)
            .map(|i| timers.push(i * MS, named(&log, "live")))
            .collect();
        let mut worst = 0;
        for i in 0..1_000_000 {
            timers.push(i, named(&log, "churn")).cancel();
            worst = worst.max(timers.len());
        }
        assert_eq!(timers.live(), live.len());
        assert!(
            worst * 2 <= live.len() * 3,
            "heap peaked at {worst} entries for {} live",
            live.len()
        );
    }

    #[test]
    fn clear_empties_the_heap_and_resets_the_count() {
        let (log, mut timers) = (Rc::default(), TimerHeap::new());
        timers.push(MS, named(&log, "a")).cancel();
        timers.push(MS, named(&log, "b"));
        assert_eq!(timers.clear().len(), 2);
        assert_eq!((timers.len(), timers.cancelled()), (0, 0));
    }
}
