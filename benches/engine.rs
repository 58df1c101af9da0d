//! Criterion benches of the engine's hot paths: `call_soon` batches, `call_later` into
//! heaps already holding 0 / 10k / 1M timers, schedule-then-cancel, `call_soon_threadsafe`.
//!
//! # Invariants
//! - Heap-size groups keep the heap at its size: the background timers are an hour out and
//!   never fire; what a sample adds is removed again outside the timed region.
//! - Each sample runs the real public API (`call_soon`, `call_later`, `run_forever`), not
//!   the internal structures, so the figures are what a caller pays.
//!
//! Run with `cargo bench --bench engine`; one group with `cargo bench --bench engine -- call_later`.

use std::cell::Cell;
use std::hint::black_box;
use std::rc::Rc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use loopd::{EventLoop, TimerHandle};

/// How full the timer heap already is in the heap-size groups.
const HEAP_SIZES: [usize; 3] = [0, 10_000, 1_000_000];
/// Timers pushed per timed chunk before they are removed again (untimed).
const CHUNK: u64 = 1_000;
const BACKGROUND_DELAY: Duration = Duration::from_secs(3600);

/// A loop whose heap holds `pending` timers spread over the hour after `BACKGROUND_DELAY`.
fn loop_with_pending(pending: usize) -> EventLoop {
    let lp = EventLoop::new().expect("creating an event loop");
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..pending {
        let delay = BACKGROUND_DELAY + Duration::from_millis(rng.u64(0..3_600_000));
        lp.call_later(delay, || {})
            .expect("scheduling a background timer");
    }
    lp
}

/// Runs one iteration: everything ready (and every due timer) runs, then the loop returns.
fn run_one_iteration(lp: &EventLoop) {
    lp.stop();
    lp.run_forever().expect("running the loop");
}

fn call_soon(c: &mut Criterion) {
    let mut group = c.benchmark_group("call_soon");
    for batch in [100u64, 10_000] {
        group.throughput(Throughput::Elements(batch));
        group.bench_with_input(
            BenchmarkId::new("schedule_and_run", batch),
            &batch,
            |b, &n| {
                let lp = EventLoop::new().expect("creating an event loop");
                let ran = Rc::new(Cell::new(0u64));
                b.iter(|| {
                    for _ in 0..n {
                        let ran = ran.clone();
                        lp.call_soon(move || ran.set(ran.get() + 1))
                            .expect("call_soon");
                    }
                    run_one_iteration(&lp);
                });
                black_box(ran.get());
            },
        );
    }
    group.finish();
}

/// `call_later(0)` into a heap of `pending` timers: the new timer is the earliest, so it
/// climbs the whole heap (the worst case of a push). Chunks are drained untimed by running
/// one iteration, which fires them and leaves the background untouched.
fn call_later(c: &mut Criterion) {
    let mut group = c.benchmark_group("call_later");
    group.throughput(Throughput::Elements(1));
    for pending in HEAP_SIZES {
        let lp = loop_with_pending(pending);
        group.bench_with_input(
            BenchmarkId::new("into_heap_of", pending),
            &pending,
            |b, _| {
                b.iter_custom(|iters| {
                    let mut timed = Duration::ZERO;
                    let mut left = iters;
                    while left > 0 {
                        let chunk = left.min(CHUNK);
                        let started = Instant::now();
                        for _ in 0..chunk {
                            black_box(lp.call_later(Duration::ZERO, || {}).expect("call_later"));
                        }
                        timed += started.elapsed();
                        run_one_iteration(&lp);
                        left -= chunk;
                    }
                    timed
                });
            },
        );
        assert_eq!(lp.metrics().timers_pending, pending, "background disturbed");
        lp.close().expect("closing the loop");
    }
    group.finish();
}

/// `call_later(50 ms)` then `cancel()` into a heap of `pending` timers. Cancelled entries
/// stay until compaction, whose amortised cost is part of what this measures.
fn schedule_cancel(c: &mut Criterion) {
    let mut group = c.benchmark_group("schedule_cancel");
    group.throughput(Throughput::Elements(1));
    for pending in HEAP_SIZES {
        let lp = loop_with_pending(pending);
        group.bench_with_input(
            BenchmarkId::new("into_heap_of", pending),
            &pending,
            |b, _| {
                b.iter(|| {
                    let timer: TimerHandle = lp
                        .call_later(Duration::from_millis(50), || {})
                        .expect("call_later");
                    timer.cancel();
                });
            },
        );
        assert_eq!(lp.metrics().timers_pending, pending, "background disturbed");
        lp.close().expect("closing the loop");
    }
    group.finish();
}

thread_local! {
    static REMOTE_RAN: Cell<u64> = const { Cell::new(0) };
}

fn remote_tick(target: u64) {
    let ran = REMOTE_RAN.with(|ran| {
        ran.set(ran.get() + 1);
        ran.get()
    });
    if ran == target {
        if let Ok(lp) = loopd::get_running_loop() {
            lp.stop();
        }
    }
}

/// N callbacks sent from another thread (spawned per sample) until all ran on the loop;
/// and the same call made from the loop's own thread, as a floor.
fn call_soon_threadsafe(c: &mut Criterion) {
    let mut group = c.benchmark_group("call_soon_threadsafe");
    group.throughput(Throughput::Elements(1));
    group.bench_function("other_thread", |b| {
        b.iter_custom(|iters| {
            let lp = EventLoop::new().expect("creating an event loop");
            let handle = lp.handle();
            REMOTE_RAN.with(|ran| ran.set(0));
            let started = Instant::now();
            let producer = std::thread::spawn(move || {
                for _ in 0..iters {
                    handle
                        .call_soon_threadsafe(move || remote_tick(iters))
                        .expect("call_soon_threadsafe");
                }
            });
            lp.run_forever().expect("running the loop");
            let took = started.elapsed();
            producer.join().expect("producer thread");
            lp.close().expect("closing the loop");
            took
        });
    });
    group.bench_function("loop_thread", |b| {
        let lp = EventLoop::new().expect("creating an event loop");
        b.iter_custom(|iters| {
            let started = Instant::now();
            let mut left = iters;
            while left > 0 {
                let chunk = left.min(CHUNK);
                for _ in 0..chunk {
                    lp.call_soon_threadsafe(|| {})
                        .expect("call_soon_threadsafe");
                }
                run_one_iteration(&lp);
                left -= chunk;
            }
            started.elapsed()
        });
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = call_soon, call_later, schedule_cancel, call_soon_threadsafe
}
criterion_main!(benches);
