//! The daemon's loop policy: named loops, each on its own thread, reached by jobs.
//!
//! # How a request reaches a loop
//! A request becomes a job (a `Send` closure) pushed onto the loop's inbox. While the
//! loop runs, the first job into an empty inbox also sends one "drain the inbox" callback
//! through `call_soon_threadsafe`; the loop thread takes the whole inbox and runs the jobs
//! in that callback. While the loop is stopped, its thread blocks on the inbox's condvar
//! instead and runs jobs as they come. So a request costs one hand-off, bursts share one
//! wake-up, and a stopped loop still answers without running callbacks.
//!
//! # Invariants
//! - Jobs live in the inbox, never in the engine's queue: a "drain" callback left behind
//!   in the engine when the loop stops strands nothing. It finds the inbox empty (or
//!   drains it) when the loop runs again, which is harmless either way.
//! - The inbox's mode (running, stopped, closed) switches under its mutex, so a job is
//!   either seen by the condvar wait or announced by a drain callback, never neither.
//! - Engine state and [`LoopState`] are touched only on the loop's thread.
//! - A closed loop's inbox refuses jobs; jobs still queued are dropped, so their callers
//!   see their answer channel close and report the loop as closed.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime};

use loopd::{EventLoop, LoopHandle};
use loopd_proto::pb;
use pb::event::Kind as EventKind;
use tokio::sync::oneshot;

use crate::config::Limits;
use crate::events::EventRing;
use crate::local::LoopState;
use crate::status::{Error, Result};

/// The name of the loop that always exists.
pub const DEFAULT_LOOP: &str = "default";

/// Work for a loop thread.
pub type Job = Box<dyn FnOnce(&Rc<LoopCtx>) + Send>;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Running,
    Stopped,
    Closed { shutdown: bool },
}

struct Inbox {
    jobs: VecDeque<Job>,
    mode: Mode,
    /// A drain callback is on its way through the engine.
    poked: bool,
}

/// The part of a loop other threads see.
pub struct LoopShared {
    /// The loop's name.
    pub name: String,
    /// The loop's events.
    pub ring: Arc<EventRing>,
    /// The uid of the caller that created the loop, for access control and quotas.
    pub creator_uid: u32,
    created_at: SystemTime,
    inbox: Mutex<Inbox>,
    wakeup: Condvar,
    handle: OnceLock<LoopHandle>,
    final_info: Mutex<Option<pb::LoopInfo>>,
    /// When the loop closed, as a daemon-wide sequence number; 0 while open.
    closed_order: AtomicU64,
    exited: Mutex<Option<oneshot::Receiver<()>>>,
}

thread_local! {
    /// The loop context of this loop thread, for drain callbacks (which must be `Send`).
    static CTX: RefCell<Option<Rc<LoopCtx>>> = const { RefCell::new(None) };
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data stays consistent (no code that can panic runs under these
    // locks but allocation), so poisoning is ignored.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl LoopShared {
    /// Sends `job` to the loop thread. Fails if the loop is closed (or the daemon stops).
    pub fn send(&self, job: Job) -> Result<()> {
        let poke = {
            let mut inbox = lock(&self.inbox);
            match inbox.mode {
                Mode::Closed { shutdown: true } => return Err(Error::ShuttingDown),
                Mode::Closed { shutdown: false } => return Err(self.closed()),
                Mode::Stopped => {
                    inbox.jobs.push_back(job);
                    self.wakeup.notify_one();
                    false
                }
                Mode::Running => {
                    inbox.jobs.push_back(job);
                    !std::mem::replace(&mut inbox.poked, true)
                }
            }
        };
        if poke {
            let handle = self.handle.get().ok_or_else(|| self.closed())?;
            handle
                .call_soon_threadsafe(drain_inbox)
                .map_err(|_| self.closed())?;
        }
        Ok(())
    }

    /// Runs `f` on the loop thread and returns its answer.
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Rc<LoopCtx>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.send(Box::new(move |ctx| {
            let _ = tx.send(f(ctx));
        }))?;
        rx.await.map_err(|_| self.gone())?
    }

    /// Runs `f` on the loop thread; `f` answers through the sender when it likes.
    pub async fn call_later<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Rc<LoopCtx>, oneshot::Sender<Result<T>>) + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.send(Box::new(move |ctx| f(ctx, tx)))?;
        rx.await.map_err(|_| self.gone())?
    }

    fn closed(&self) -> Error {
        Error::LoopClosed(self.name.clone())
    }

    /// The error for a job dropped unanswered: the loop closed or the daemon stopped.
    pub fn gone(&self) -> Error {
        match lock(&self.inbox).mode {
            Mode::Closed { shutdown: true } => Error::ShuttingDown,
            _ => self.closed(),
        }
    }

    /// Whether the loop was closed.
    pub fn is_closed(&self) -> bool {
        matches!(lock(&self.inbox).mode, Mode::Closed { .. })
    }

    /// The order in which the loop was closed among all loops; `None` while open.
    pub fn closed_order(&self) -> Option<u64> {
        match self.closed_order.load(Ordering::SeqCst) {
            0 => None,
            order => Some(order),
        }
    }

    /// The snapshot taken when the loop closed.
    pub fn final_info(&self) -> Option<pb::LoopInfo> {
        lock(&self.final_info).clone()
    }

    /// A snapshot of the loop: from its thread, or the last one if it is closed.
    pub async fn info(&self) -> Result<pb::LoopInfo> {
        match self.call(|ctx| Ok(ctx.info())).await {
            Err(Error::LoopClosed(name)) => self.final_info().ok_or(Error::LoopClosed(name)),
            other => other,
        }
    }

    fn enter(&self, mode: Mode, lp: &EventLoop) {
        let mut inbox = lock(&self.inbox);
        inbox.mode = mode;
        inbox.poked = false;
        if mode == Mode::Running && !inbox.jobs.is_empty() {
            inbox.poked = true;
            // The loop is open (the thread is about to run it), so this cannot fail.
            let _ = lp.call_soon(drain_inbox);
        }
    }

    /// Refuses further jobs; returns those still queued, for the caller to drop.
    fn close_inbox(&self, shutdown: bool) -> VecDeque<Job> {
        let mut inbox = lock(&self.inbox);
        inbox.mode = Mode::Closed { shutdown };
        std::mem::take(&mut inbox.jobs)
    }

    /// Blocks until jobs arrive (the loop is stopped), then takes them all.
    fn wait_jobs(&self) -> VecDeque<Job> {
        let mut inbox = lock(&self.inbox);
        while inbox.jobs.is_empty() {
            inbox = self.wakeup.wait(inbox).unwrap_or_else(|p| p.into_inner());
        }
        std::mem::take(&mut inbox.jobs)
    }

    fn take_jobs(&self) -> VecDeque<Job> {
        let mut inbox = lock(&self.inbox);
        inbox.poked = false;
        std::mem::take(&mut inbox.jobs)
    }
}

/// The engine calls this (through `call_soon_threadsafe`) to run the inbox's jobs.
fn drain_inbox() {
    let Some(ctx) = CTX.with(|c| c.borrow().clone()) else {
        return;
    };
    for job in ctx.shared.take_jobs() {
        run_job(&ctx, job);
    }
}

/// Runs one job; a panic (a daemon bug) is logged and costs only that request, whose
/// caller sees its answer channel close.
fn run_job(ctx: &Rc<LoopCtx>, job: Job) {
    let run = std::panic::AssertUnwindSafe(|| job(ctx));
    if std::panic::catch_unwind(run).is_err() {
        tracing::error!(loop_name = %ctx.name, "a request panicked on the loop thread");
    }
}

/// What a loop thread owns: the engine, the tables, and its lifecycle requests.
pub struct LoopCtx {
    /// The engine.
    pub lp: EventLoop,
    /// The loop's name.
    pub name: String,
    /// What other threads see.
    pub shared: Arc<LoopShared>,
    /// Handles, futures, idempotency keys.
    pub state: RefCell<LoopState>,
    want_start: Cell<bool>,
    exit: Cell<bool>,
    closed: Cell<bool>,
    stop_waiters: RefCell<Vec<oneshot::Sender<Result<pb::LoopInfo>>>>,
    start_waiters: RefCell<Vec<oneshot::Sender<Result<pb::LoopInfo>>>>,
    /// Servers and transports held for clients (NetService).
    pub net: crate::net::NetState,
}

impl LoopCtx {
    /// FAILED_PRECONDITION if the loop is closed.
    pub fn check_open(&self) -> Result<()> {
        if self.lp.is_closed() {
            return Err(Error::LoopClosed(self.name.clone()));
        }
        Ok(())
    }

    /// Appends an event to the loop's ring, stamped with the loop's time.
    pub fn emit(&self, kind: EventKind) {
        self.shared.ring.emit(self.lp.time(), kind);
    }

    /// A snapshot of the loop, taken on its thread.
    pub fn info(&self) -> pb::LoopInfo {
        let metrics = self.lp.metrics();
        let st = self.state.borrow();
        let ring = &self.shared.ring;
        pb::LoopInfo {
            name: self.name.clone(),
            running: self.lp.is_running(),
            closed: self.lp.is_closed(),
            debug: self.lp.get_debug(),
            slow_callback_duration: prost_types::Duration::try_from(
                self.lp.slow_callback_duration(),
            )
            .ok(),
            time: self.lp.time(),
            wall_time: Some(SystemTime::now().into()),
            created_at: Some(self.shared.created_at.into()),
            ready_callbacks: metrics.ready_len as u64,
            timers_scheduled: (metrics.timers_pending + st.never_pending()) as u64,
            timers_cancelled: metrics.timers_cancelled_in_heap as u64,
            futures_pending: st.futures_pending() as u64,
            subscribers: ring.subscribers.load(Ordering::Relaxed),
            last_event_seq: ring.last_seq(),
            creator_uid: self.shared.creator_uid,
        }
    }

    /// The loop's metrics, taken on its thread.
    pub fn metrics(&self) -> pb::LoopMetrics {
        let m = self.lp.metrics();
        let net = self.lp.net_metrics();
        let process = self.lp.process_metrics();
        let ring = &self.shared.ring;
        let st = self.state.borrow();
        pb::LoopMetrics {
            r#loop: self.name.clone(),
            iterations: m.iterations,
            callbacks_run: m.callbacks_run,
            ready_queue_len: m.ready_len as u64,
            timers_pending: (m.timers_pending + st.never_pending()) as u64,
            timers_cancelled: m.timers_cancelled_in_heap as u64,
            timers_fired: m.timers_fired,
            timer_lateness: Some(histogram(&m.lateness, st.lateness_sum_ns())),
            time_polling: prost_types::Duration::try_from(m.time_polling).ok(),
            time_running_callbacks: prost_types::Duration::try_from(m.time_in_callbacks).ok(),
            slow_callbacks: m.slow_callbacks,
            futures_pending: st.futures_pending() as u64,
            events_emitted: ring.emitted(),
            subscribers: ring.subscribers.load(Ordering::Relaxed),
            gaps: ring.gaps.load(Ordering::Relaxed),
            events_missed: ring.missed.load(Ordering::Relaxed),
            open_servers: net.open_servers as u64,
            open_transports: net.open_transports as u64,
            open_datagram_endpoints: net.open_datagram_endpoints as u64,
            connections_accepted: net.connections_accepted,
            bytes_received: net.bytes_received,
            bytes_sent: net.bytes_sent,
            datagrams_received: net.datagrams_received,
            datagrams_sent: net.datagrams_sent,
            processes_spawned: process.spawned,
            processes_running: process.running,
            processes_exited: process.exited,
            signal_handlers: process.signal_handlers as u64,
        }
    }

    /// StopLoop: answers once the loop has stopped (at once if it is stopped).
    pub fn request_stop(&self, answer: oneshot::Sender<Result<pb::LoopInfo>>) {
        if self.lp.is_closed() {
            let _ = answer.send(Err(Error::LoopClosed(self.name.clone())));
        } else if self.lp.is_running() {
            self.lp.stop();
            self.stop_waiters.borrow_mut().push(answer);
        } else {
            let _ = answer.send(Ok(self.info()));
        }
    }

    /// StartLoop: answers once the loop runs again (at once if it runs).
    pub fn request_start(&self, answer: oneshot::Sender<Result<pb::LoopInfo>>) {
        if self.lp.is_closed() {
            let _ = answer.send(Err(Error::LoopClosed(self.name.clone())));
        } else if self.lp.is_running() {
            let _ = answer.send(Ok(self.info()));
        } else {
            self.want_start.set(true);
            self.start_waiters.borrow_mut().push(answer);
        }
    }

    /// CloseLoop: closes a stopped loop (asyncio's close()).
    pub fn request_close(&self) -> Result<pb::LoopInfo> {
        if self.name == DEFAULT_LOOP {
            return Err(Error::CloseDefault);
        }
        if self.lp.is_running() {
            return Err(Error::LoopRunning(self.name.clone()));
        }
        if !self.closed.replace(true) {
            crate::process::close_loop();
            self.lp.close()?;
            self.emit(EventKind::LoopClosed(pb::LoopClosed {}));
            self.shared.ring.close();
            let info = self.info();
            *lock(&self.shared.final_info) = Some(info);
            static CLOSED: AtomicU64 = AtomicU64::new(1);
            let order = CLOSED.fetch_add(1, Ordering::SeqCst);
            self.shared.closed_order.store(order, Ordering::SeqCst);
            // Refuse jobs now, before the caller hears back, so that a CreateLoop right
            // after this CloseLoop already sees the loop closed.
            drop(self.shared.close_inbox(false));
        }
        Ok(self.info())
    }

    /// Daemon shutdown: stop and leave the thread.
    fn request_exit(&self) {
        self.exit.set(true);
        self.lp.stop();
    }
}

fn histogram(h: &loopd::LatenessHistogram, sum_ns: u64) -> pb::LatencyHistogram {
    let dur = |d: Duration| prost_types::Duration::try_from(d).ok();
    pb::LatencyHistogram {
        upper_bounds_ns: loopd::LATENESS_BUCKET_BOUNDS_NS.to_vec(),
        counts: h.counts.clone(),
        count: h.total,
        sum_ns,
        p50: dur(h.quantile(0.5)),
        p99: dur(h.quantile(0.99)),
        max: dur(h.max),
    }
}

/// Settings a new loop starts with.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoopSettings {
    /// asyncio's debug mode.
    pub debug: bool,
    /// Slow-callback threshold; `None`: asyncio's 100 ms.
    pub slow_callback: Option<Duration>,
    /// Who asked for the loop (the daemon's own uid for `default`).
    pub creator_uid: u32,
}

/// Starts a loop thread; returns once its engine exists.
async fn spawn_loop(
    name: &str,
    limits: &Limits,
    settings: LoopSettings,
) -> Result<Arc<LoopShared>> {
    let (exited_tx, exited_rx) = oneshot::channel();
    let shared = Arc::new(LoopShared {
        name: name.to_owned(),
        ring: Arc::new(EventRing::new(name, limits.event_ring_capacity)),
        creator_uid: settings.creator_uid,
        created_at: SystemTime::now(),
        inbox: Mutex::new(Inbox {
            jobs: VecDeque::new(),
            mode: Mode::Stopped,
            poked: false,
        }),
        wakeup: Condvar::new(),
        handle: OnceLock::new(),
        final_info: Mutex::new(None),
        closed_order: AtomicU64::new(0),
        exited: Mutex::new(Some(exited_rx)),
    });
    let (ready_tx, ready_rx) = oneshot::channel();
    let thread_shared = shared.clone();
    let limits = limits.clone();
    std::thread::Builder::new()
        .name(format!("loop-{name}"))
        .spawn(move || {
            loop_thread(thread_shared, limits, settings, ready_tx);
            let _ = exited_tx.send(());
        })
        .map_err(|e| Error::Internal(format!("spawning the thread of loop {name:?}: {e}")))?;
    ready_rx
        .await
        .map_err(|_| Error::Internal(format!("loop {name:?} died while starting")))??;
    Ok(shared)
}

/// Closes the inbox and the ring however the loop thread ends, panics included, so no
/// caller waits forever on a thread that is gone.
struct ThreadGuard(Arc<LoopShared>);

impl Drop for ThreadGuard {
    fn drop(&mut self) {
        if !self.0.is_closed() {
            drop(self.0.close_inbox(false));
            self.0.ring.close();
        }
    }
}

fn loop_thread(
    shared: Arc<LoopShared>,
    limits: Limits,
    settings: LoopSettings,
    ready: oneshot::Sender<Result<()>>,
) {
    let _guard = ThreadGuard(shared.clone());
    let lp = match EventLoop::new() {
        Ok(lp) => lp,
        Err(err) => {
            shared.close_inbox(false);
            let _ = ready.send(Err(err.into()));
            return;
        }
    };
    lp.set_debug(settings.debug);
    if let Some(slow) = settings.slow_callback {
        lp.set_slow_callback_duration(slow);
    }
    let _ = shared.handle.set(lp.handle());
    let ctx = Rc::new(LoopCtx {
        lp,
        name: shared.name.clone(),
        shared: shared.clone(),
        state: RefCell::new(LoopState::new(limits)),
        want_start: Cell::new(false),
        exit: Cell::new(false),
        closed: Cell::new(false),
        stop_waiters: RefCell::new(Vec::new()),
        start_waiters: RefCell::new(Vec::new()),
        net: crate::net::NetState::default(),
    });
    CTX.with(|c| *c.borrow_mut() = Some(ctx.clone()));
    let _ = ready.send(Ok(()));
    run_phases(&ctx);
    finish(&ctx);
    CTX.with(|c| c.borrow_mut().take());
}

/// Alternates running (run_forever) and stopped (serving jobs from the inbox) until the
/// loop is closed or the daemon stops.
fn run_phases(ctx: &Rc<LoopCtx>) {
    loop {
        ctx.shared.enter(Mode::Running, &ctx.lp);
        ctx.emit(EventKind::LoopStarted(pb::LoopStarted {}));
        answer_start_waiters(ctx);
        if let Err(err) = ctx.lp.run_forever() {
            tracing::error!(loop_name = %ctx.name, "run_forever failed: {err}");
        }
        ctx.shared.enter(Mode::Stopped, &ctx.lp);
        ctx.emit(EventKind::LoopStopped(pb::LoopStopped {}));
        let info = ctx.info();
        for waiter in ctx.stop_waiters.take() {
            let _ = waiter.send(Ok(info.clone()));
        }
        if !serve_stopped(ctx) {
            return;
        }
    }
}

/// Answers StartLoop callers from inside the first iteration, where the loop runs.
fn answer_start_waiters(ctx: &Rc<LoopCtx>) {
    let waiters = ctx.start_waiters.take();
    if waiters.is_empty() {
        return;
    }
    let inner = ctx.clone();
    let _ = ctx.lp.call_soon(move || {
        let info = inner.info();
        for waiter in waiters {
            let _ = waiter.send(Ok(info.clone()));
        }
    });
}

/// Runs jobs while the loop is stopped. `true`: start again; `false`: leave.
fn serve_stopped(ctx: &Rc<LoopCtx>) -> bool {
    loop {
        if ctx.exit.get() || ctx.closed.get() {
            return false;
        }
        if ctx.want_start.replace(false) {
            return true;
        }
        for job in ctx.shared.wait_jobs() {
            run_job(ctx, job);
        }
    }
}

fn finish(ctx: &Rc<LoopCtx>) {
    let shutdown = ctx.exit.get();
    let dropped = ctx.shared.close_inbox(shutdown);
    drop(dropped);
    if !ctx.lp.is_closed() {
        let _ = ctx.lp.close();
    }
    // Futures' waiters are dropped with the state: WaitFuture callers see the loop go.
    let _ = std::mem::replace(
        &mut *ctx.state.borrow_mut(),
        LoopState::new(Limits::default()),
    );
    for waiter in ctx
        .stop_waiters
        .take()
        .into_iter()
        .chain(ctx.start_waiters.take())
    {
        let _ = waiter.send(Err(ctx.shared.gone()));
    }
    if !shutdown {
        ctx.shared.ring.close();
    }
}

/// The daemon's loops by name.
pub struct Registry {
    loops: std::sync::RwLock<BTreeMap<String, Arc<LoopShared>>>,
    /// Serializes CreateLoop, which awaits the new thread.
    creating: tokio::sync::Mutex<()>,
    limits: Limits,
    shutting_down: AtomicBool,
    /// Open Subscribe streams over all loops.
    pub subscribers: Arc<AtomicUsize>,
}

impl Registry {
    /// A registry with the `default` loop running.
    pub async fn new(limits: Limits) -> Result<Self> {
        let settings = LoopSettings {
            // SAFETY: geteuid has no preconditions and cannot fail.
            creator_uid: unsafe { libc::geteuid() },
            ..LoopSettings::default()
        };
        let default = spawn_loop(DEFAULT_LOOP, &limits, settings).await?;
        let mut loops = BTreeMap::new();
        loops.insert(DEFAULT_LOOP.to_owned(), default);
        Ok(Registry {
            loops: std::sync::RwLock::new(loops),
            creating: tokio::sync::Mutex::new(()),
            limits,
            shutting_down: AtomicBool::new(false),
            subscribers: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// The limits the daemon was configured with.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// UNAVAILABLE once the daemon shuts down.
    pub fn check_serving(&self) -> Result<()> {
        if self.shutting_down.load(Ordering::Relaxed) {
            return Err(Error::ShuttingDown);
        }
        Ok(())
    }

    /// The loop named `name` (empty: `default`), closed or not.
    pub fn get(&self, name: &str) -> Result<Arc<LoopShared>> {
        self.check_serving()?;
        let name = if name.is_empty() { DEFAULT_LOOP } else { name };
        self.read()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::LoopNotFound(name.to_owned()))
    }

    /// Every loop, by name.
    pub fn all(&self) -> Vec<Arc<LoopShared>> {
        self.read().values().cloned().collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<LoopShared>>> {
        self.loops.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates and starts loop `name`, replacing a closed loop of that name.
    pub async fn create(&self, name: &str, settings: LoopSettings) -> Result<Arc<LoopShared>> {
        self.check_serving()?;
        validate_name(name)?;
        let _creating = self.creating.lock().await;
        {
            let loops = self.read();
            if loops.get(name).is_some_and(|lp| !lp.is_closed()) {
                return Err(Error::LoopExists(name.to_owned()));
            }
            let open = loops.values().filter(|lp| !lp.is_closed()).count();
            if open >= self.limits.max_loops {
                return Err(Error::TooManyLoops(self.limits.max_loops));
            }
        }
        let shared = spawn_loop(name, &self.limits, settings).await?;
        self.loops
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_owned(), shared.clone());
        Ok(shared)
    }

    /// Forgets the loops closed first, keeping at most `max_loops` closed ones.
    pub fn forget_closed(&self) {
        let mut loops = self.loops.write().unwrap_or_else(|p| p.into_inner());
        forget_closed(&mut loops, self.limits.max_loops);
    }

    /// Makes every later request fail with UNAVAILABLE.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Stops every loop and waits (at most `grace`) for their threads to leave.
    pub async fn shutdown(&self, grace: Duration) {
        self.shutting_down.store(true, Ordering::SeqCst);
        let loops = self.all();
        for shared in &loops {
            let _ = shared.send(Box::new(|ctx| ctx.request_exit()));
        }
        for shared in &loops {
            let exited = lock(&shared.exited).take();
            if let Some(exited) = exited {
                if tokio::time::timeout(grace, exited).await.is_err() {
                    tracing::warn!(loop_name = %shared.name, "loop thread did not stop in time");
                }
            }
        }
    }
}

/// Closed loops stay listed (with their ring) until replaced; so that creating and
/// closing loops of ever new names cannot grow memory without bound, once more than
/// `max_loops` are closed the ones closed first are forgotten (NOT_FOUND afterwards).
fn forget_closed(loops: &mut BTreeMap<String, Arc<LoopShared>>, max_loops: usize) {
    let mut closed: Vec<(u64, String)> = loops
        .iter()
        .filter_map(|(name, lp)| lp.closed_order().map(|order| (order, name.clone())))
        .collect();
    closed.sort_unstable();
    for (_, name) in closed.iter().take(closed.len().saturating_sub(max_loops)) {
        loops.remove(name);
    }
}

/// Loop names: 1 to 63 bytes of ASCII letters, digits, `-`, `_` and `.`.
pub fn validate_name(name: &str) -> Result<()> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || name.len() > 63 || !name.chars().all(ok_char) {
        return Err(Error::invalid(
            "loop name",
            format!("{name:?} (1 to 63 ASCII letters, digits, '-', '_' or '.')"),
        ));
    }
    if name == DEFAULT_LOOP {
        return Err(Error::LoopExists(name.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loop_names_follow_the_proto() {
        for good in ["a", "loop-1", "x_y.z", &"a".repeat(63)] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in ["", "a b", "é", "a/b", &"a".repeat(64)] {
            assert!(
                matches!(validate_name(bad), Err(Error::Invalid { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            validate_name("default"),
            Err(Error::LoopExists(_))
        ));
    }
}
