//! Per-loop counters and their snapshot, [`Metrics`].
//!
//! Counters are plain `Cell`s bumped on the loop thread; a snapshot copies them. Callback
//! time is measured per batch (two clock reads per iteration); only debug mode times each
//! callback, so only debug mode counts slow callbacks.

use std::cell::Cell;
use std::time::Duration;

use crate::clock::Nanos;

/// Upper bounds of the lateness histogram's buckets, in nanoseconds: powers of two from
/// 1 us to about 8.6 s; a last, unbounded bucket follows.
pub const LATENESS_BUCKET_BOUNDS_NS: [u64; 24] = {
    let mut bounds = [0u64; 24];
    let mut i = 0;
    while i < 24 {
        bounds[i] = 1 << (i + 10);
        i += 1;
    }
    bounds
};

/// How late timers fired, relative to their deadline.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LatenessHistogram {
    /// `counts[i]` timers fired with lateness `<= LATENESS_BUCKET_BOUNDS_NS[i]` (and above
    /// the previous bound); the last element counts everything later than the last bound.
    pub counts: Vec<u64>,
    /// The largest lateness seen.
    pub max: Duration,
    /// Timers fired in total.
    pub total: u64,
}

impl LatenessHistogram {
    /// The upper bound of the bucket holding quantile `q` (0.0-1.0), or `max` for the last.
    pub fn quantile(&self, q: f64) -> Duration {
        let rank = (q.clamp(0.0, 1.0) * self.total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let bound = LATENESS_BUCKET_BOUNDS_NS
                    .get(i)
                    .map(|ns| Duration::from_nanos(*ns));
                return bound.map_or(self.max, |bound| bound.min(self.max));
            }
        }
        self.max
    }
}

/// A point-in-time copy of one loop's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metrics {
    /// Iterations of `run_once`.
    pub iterations: u64,
    /// Callbacks run (cancelled ones are not counted).
    pub callbacks_run: u64,
    /// Callbacks waiting in the ready queue now.
    pub ready_len: usize,
    /// Timers that will still fire.
    pub timers_pending: usize,
    /// Cancelled timers still in the heap (removed lazily).
    pub timers_cancelled_in_heap: usize,
    /// Entries in the timer heap, cancelled ones included.
    pub timer_heap_len: usize,
    /// Timers fired since the loop was created.
    pub timers_fired: u64,
    /// Timer lateness distribution.
    pub lateness: LatenessHistogram,
    /// Time spent waiting in the poll.
    pub time_polling: Duration,
    /// Time spent running callbacks.
    pub time_in_callbacks: Duration,
    /// Callbacks slower than `slow_callback_duration` (counted in debug mode only).
    pub slow_callbacks: u64,
    /// Errors that reached the default exception handler.
    pub unhandled_errors: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) iterations: Cell<u64>,
    pub(crate) callbacks_run: Cell<u64>,
    pub(crate) timers_fired: Cell<u64>,
    pub(crate) polling: Cell<Nanos>,
    pub(crate) in_callbacks: Cell<Nanos>,
    pub(crate) slow_callbacks: Cell<u64>,
    pub(crate) unhandled_errors: Cell<u64>,
    lateness: [Cell<u64>; LATENESS_BUCKET_BOUNDS_NS.len() + 1],
    lateness_max: Cell<Nanos>,
}

pub(crate) fn bump(cell: &Cell<u64>, by: u64) {
    cell.set(cell.get().wrapping_add(by));
}

impl Counters {
    pub(crate) fn record_lateness(&self, late: Nanos) {
        let bucket = LATENESS_BUCKET_BOUNDS_NS.partition_point(|bound| *bound < late);
        bump(&self.lateness[bucket], 1);
        bump(&self.timers_fired, 1);
        self.lateness_max.set(self.lateness_max.get().max(late));
    }

    pub(crate) fn lateness(&self) -> LatenessHistogram {
        LatenessHistogram {
            counts: self.lateness.iter().map(Cell::get).collect(),
            max: Duration::from_nanos(self.lateness_max.get()),
            total: self.timers_fired.get(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lateness_lands_in_power_of_two_buckets() {
        let counters = Counters::default();
        for late in [0, 1024, 1025, 3_000, 10_000_000_000] {
            counters.record_lateness(late);
        }
        let hist = counters.lateness();
        assert_eq!(hist.counts[0], 2, "0 and 1024 ns are within 1 us");
        assert_eq!(hist.counts[1], 1);
        assert_eq!(hist.counts[2], 1);
        assert_eq!(hist.counts[LATENESS_BUCKET_BOUNDS_NS.len()], 1);
        assert_eq!(hist.total, 5);
        assert_eq!(hist.max, Duration::from_secs(10));
        assert_eq!(hist.quantile(0.5), Duration::from_nanos(2048));
        assert_eq!(hist.quantile(1.0), Duration::from_secs(10));
    }
}
