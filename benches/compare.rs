//! The engine comparison workloads (a–f) on loopd, run once each; `bench/engine.py` runs the
//! same ones on asyncio and uvloop, and `bench/engine.sh` puts them side by side.
//!
//! Prints one JSON object per figure on stdout: `{"loop","name","value","unit"}`. Names and
//! units match `bench/engine.py` exactly, so `bench/table.py` can join them.
//!
//! # Invariants
//! - Every workload checks that exactly the expected callbacks ran, and fails otherwise:
//!   a fast wrong answer is not a figure.
//! - Memory (f) runs first, on a fresh heap, and counts bytes with this binary's global
//!   allocator; counting is switched on only for that window, so the other workloads pay
//!   one relaxed load per allocation and nothing more.
//! - Random delays come from a fixed seed, so every run schedules the same timers.
//! - Without `--bench` (so under `cargo test --all-targets`) every count is divided by 100:
//!   a quick check that the workloads run and count right, not a measurement.

use std::alloc::{GlobalAlloc, Layout};

use mimalloc::MiMalloc as System;
use std::cell::{Cell, RefCell};
use std::error::Error;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use loopd::EventLoop;

type Res<T> = Result<T, Box<dyn Error>>;

const SEED: u64 = 0x5EED;
const CALL_SOON_N: u64 = 1_000_000;
const TIMERS_N: u64 = 200_000;
const TIMERS_SPREAD: Duration = Duration::from_millis(100);
const CANCEL_SPREAD: Duration = Duration::from_millis(1);
const THREADSAFE_N: u64 = 200_000;
const LATENESS_N: u64 = 2_000;
const LATENESS_STEP: Duration = Duration::from_millis(1);
const PENDING_N: u64 = 1_000_000;

/// Set when run without `--bench` (as `cargo test --all-targets` does): every count is
/// divided by 100, so the workloads are checked quickly, and the figures mean nothing.
static SMOKE: AtomicBool = AtomicBool::new(false);

fn sized(full: u64) -> u64 {
    if SMOKE.load(Ordering::Relaxed) {
        (full / 100).max(2)
    } else {
        full
    }
}

// ---- allocator that counts net bytes while switched on -----------------------------

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static NET_BYTES: AtomicIsize = AtomicIsize::new(0);

fn count(delta: isize) {
    if COUNTING.load(Ordering::Relaxed) {
        NET_BYTES.fetch_add(delta, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to `System`; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

// ---- output -------------------------------------------------------------------------

fn emit(name: &str, value: f64, unit: &str) {
    let value = if value.is_finite() { value } else { -1.0 };
    println!(r#"{{"loop":"loopd","name":"{name}","value":{value},"unit":"{unit}"}}"#);
}

fn per_sec(n: u64, took: Duration) -> f64 {
    n as f64 / took.as_secs_f64()
}

fn expect(what: &str, got: u64, want: u64) -> Res<()> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: {got} callbacks ran, expected {want}").into())
    }
}

/// A callback counter that stops the loop when it reaches `target`.
#[derive(Clone)]
struct Countdown {
    lp: EventLoop,
    ran: Rc<Cell<u64>>,
    target: u64,
}

impl Countdown {
    fn new(lp: &EventLoop, target: u64) -> Self {
        Countdown {
            lp: lp.clone(),
            ran: Rc::default(),
            target,
        }
    }
    fn tick(&self) {
        let ran = self.ran.get() + 1;
        self.ran.set(ran);
        if ran == self.target {
            self.lp.stop();
        }
    }
}

fn uniform(rng: &mut fastrand::Rng, spread: Duration) -> Duration {
    Duration::from_nanos(rng.u64(0..=spread.as_nanos() as u64))
}

// ---- the workloads ------------------------------------------------------------------

/// a. `call_soon` N times, then run until all ran.
fn call_soon() -> Res<()> {
    let lp = EventLoop::new()?;
    let ran = Rc::new(Cell::new(0u64));
    let started = Instant::now();
    for _ in 0..sized(CALL_SOON_N) {
        let ran = ran.clone();
        lp.call_soon(move || ran.set(ran.get() + 1))?;
    }
    let stopper = lp.clone();
    lp.call_soon(move || stopper.stop())?;
    lp.run_forever()?;
    let took = started.elapsed();
    expect("call_soon", ran.get(), sized(CALL_SOON_N))?;
    emit(
        "call_soon",
        per_sec(sized(CALL_SOON_N), took),
        "callbacks/s",
    );
    Ok(lp.close()?)
}

/// b. `call_later` with random delays in [0, 100 ms]: scheduling rate, whole-run rate, wall time.
fn call_later() -> Res<()> {
    let lp = EventLoop::new()?;
    let mut rng = fastrand::Rng::with_seed(SEED);
    let delays: Vec<_> = (0..sized(TIMERS_N))
        .map(|_| uniform(&mut rng, TIMERS_SPREAD))
        .collect();
    let countdown = Countdown::new(&lp, sized(TIMERS_N));
    let started = Instant::now();
    for delay in delays {
        let countdown = countdown.clone();
        lp.call_later(delay, move || countdown.tick())?;
    }
    let scheduled = started.elapsed();
    lp.run_forever()?;
    let took = started.elapsed();
    expect("call_later", countdown.ran.get(), sized(TIMERS_N))?;
    emit(
        "call_later_schedule",
        per_sec(sized(TIMERS_N), scheduled),
        "timers/s",
    );
    emit("call_later_run", per_sec(sized(TIMERS_N), took), "timers/s");
    emit("call_later_wall", took.as_secs_f64() * 1e3, "ms");
    Ok(lp.close()?)
}

/// c. `call_later` with random delays in [0, 1 ms], every other one cancelled at once.
fn call_later_cancel() -> Res<()> {
    let lp = EventLoop::new()?;
    let mut rng = fastrand::Rng::with_seed(SEED);
    let delays: Vec<_> = (0..sized(TIMERS_N))
        .map(|_| uniform(&mut rng, CANCEL_SPREAD))
        .collect();
    let live = sized(TIMERS_N) / 2;
    let countdown = Countdown::new(&lp, live);
    let started = Instant::now();
    for (i, delay) in delays.into_iter().enumerate() {
        let countdown = countdown.clone();
        let timer = lp.call_later(delay, move || countdown.tick())?;
        if i % 2 == 1 {
            timer.cancel();
        }
    }
    lp.run_forever()?;
    let took = started.elapsed();
    expect("call_later_cancel", countdown.ran.get(), live)?;
    emit(
        "call_later_cancel",
        per_sec(sized(TIMERS_N), took),
        "timers/s",
    );
    Ok(lp.close()?)
}

thread_local! {
    static THREADSAFE_RAN: Cell<u64> = const { Cell::new(0) };
    static THREADSAFE_DONE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// d. `call_soon_threadsafe` N times from another thread, until all ran on the loop.
fn call_soon_threadsafe() -> Res<()> {
    let lp = EventLoop::new()?;
    let handle = lp.handle();
    let started = Rc::new(Cell::new(None));
    let started_in = started.clone();
    lp.call_soon(move || {
        started_in.set(Some(Instant::now()));
        std::thread::spawn(move || {
            for _ in 0..sized(THREADSAFE_N) {
                // Fails only if the loop closed, and then the count check below reports it.
                let _ = handle.call_soon_threadsafe(threadsafe_tick);
            }
        });
    })?;
    lp.run_forever()?;
    let ran = THREADSAFE_RAN.with(Cell::get);
    expect("call_soon_threadsafe", ran, sized(THREADSAFE_N))?;
    let (Some(started), Some(done)) = (started.get(), THREADSAFE_DONE.with(Cell::get)) else {
        return Err("call_soon_threadsafe: start or end time missing".into());
    };
    emit(
        "call_soon_threadsafe",
        per_sec(sized(THREADSAFE_N), done - started),
        "callbacks/s",
    );
    Ok(lp.close()?)
}

fn threadsafe_tick() {
    let ran = THREADSAFE_RAN.with(|ran| {
        ran.set(ran.get() + 1);
        ran.get()
    });
    if ran == sized(THREADSAFE_N) {
        THREADSAFE_DONE.with(|done| done.set(Some(Instant::now())));
        if let Ok(lp) = loopd::get_running_loop() {
            lp.stop();
        }
    }
}

/// e. Lateness of timers 1 ms apart (2,000 of them: 2 s): `lp.time() - handle.when()` in each callback.
fn lateness() -> Res<()> {
    let lp = EventLoop::new()?;
    let n = sized(LATENESS_N);
    let whens = Rc::new(RefCell::new(Vec::with_capacity(n as usize)));
    let late = Rc::new(RefCell::new(Vec::with_capacity(n as usize)));
    let countdown = Countdown::new(&lp, n);
    for i in 0..n {
        let (lp2, whens2, late2, countdown) =
            (lp.clone(), whens.clone(), late.clone(), countdown.clone());
        let timer = lp.call_later(LATENESS_STEP * (i as u32 + 1), move || {
            let when = whens2.borrow()[i as usize];
            late2.borrow_mut().push(lp2.time() - when);
            countdown.tick();
        })?;
        whens.borrow_mut().push(timer.when());
    }
    lp.run_forever()?;
    expect("lateness", countdown.ran.get(), n)?;
    let mut late = late.take();
    late.sort_by(f64::total_cmp);
    let quantile = |q: f64| late[((late.len() - 1) as f64 * q).round() as usize];
    emit("lateness_p50", quantile(0.5) * 1e6, "us");
    emit("lateness_p99", quantile(0.99) * 1e6, "us");
    emit("lateness_max", quantile(1.0) * 1e6, "us");
    let early = late.iter().filter(|l| **l < 0.0).count();
    emit("lateness_early", early as f64, "timers");
    Ok(lp.close()?)
}

/// Resident set size in bytes, from `/proc/self/statm`.
fn rss_bytes() -> Res<f64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .ok_or("/proc/self/statm has no resident field")?
        .parse()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Ok(pages * page as f64)
}

/// f. Bytes per pending timer: 1M timers an hour out, counted by the allocator and by RSS.
fn memory_per_timer() -> Res<()> {
    let lp = EventLoop::new()?;
    let fired = Rc::new(Cell::new(0u64));
    let make = |fired: Rc<Cell<u64>>| move || fired.set(fired.get() + 1);
    let closure_bytes = std::mem::size_of_val(&make(fired.clone()));
    let delay = Duration::from_secs(3600);
    let rss_before = rss_bytes()?;
    NET_BYTES.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::Relaxed);
    for _ in 0..sized(PENDING_N) {
        lp.call_later(delay, make(fired.clone()))?;
    }
    COUNTING.store(false, Ordering::Relaxed);
    let counted = NET_BYTES.load(Ordering::Relaxed) as f64;
    let rss_after = rss_bytes()?;
    let pending = lp.metrics().timers_pending as u64;
    expect("memory_per_timer (pending)", pending, sized(PENDING_N))?;
    emit(
        "timer_bytes_alloc",
        counted / sized(PENDING_N) as f64,
        "bytes",
    );
    emit(
        "timer_bytes_rss",
        (rss_after - rss_before) / sized(PENDING_N) as f64,
        "bytes",
    );
    emit("timer_closure_bytes", closure_bytes as f64, "bytes");
    Ok(lp.close()?)
}

type Workload = fn() -> Res<()>;

/// The workloads, by the names a command-line filter may pick (`-- call_later lateness`).
const WORKLOADS: [(&str, Workload); 6] = [
    ("memory", memory_per_timer),
    ("call_soon", call_soon),
    ("call_later", call_later),
    ("call_later_cancel", call_later_cancel),
    ("call_soon_threadsafe", call_soon_threadsafe),
    ("lateness", lateness),
];

fn main() -> Res<()> {
    // `cargo bench` passes `--bench`; every other argument names a workload to run.
    SMOKE.store(
        !std::env::args().any(|arg| arg == "--bench"),
        Ordering::Relaxed,
    );
    let picked: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with("--"))
        .collect();
    for (name, workload) in WORKLOADS {
        if picked.is_empty() || picked.iter().any(|p| p == name) {
            workload()?;
        }
    }
    Ok(())
}
