//! Child processes of the daemon's loops (ProcessService), kept on their loop's thread.
//!
//! Each loop thread has one [`Table`] of its processes (a thread-local: one loop per
//! thread). A process is started with the engine's `subprocess_exec` and a [`Reporter`]
//! protocol, which turns the engine's protocol calls into events and into the lossless
//! output streams ([`ByteStream`]) that ReadOutput serves.
//!
//! # Invariants
//! - Events of one process keep the engine's causal order: ProcessStarted (from
//!   `connection_made`), ProcessOutput (from `pipe_data_received`), then ProcessExited
//!   (from `process_exited`, which the engine calls only once the child is reaped *and*
//!   both output pipes reached end of file). The ring numbers events in the order they
//!   are emitted, on this one thread.
//! - Output goes to the stream before its event is emitted, so a reader that saw an event
//!   can read its bytes. A stream with a reader behind by more than its window pauses the
//!   pipe (the child blocks); without a reader the oldest bytes beyond the retention are
//!   dropped, unless the spec holds output until a reader comes.
//! - Only ids cross threads: a stream's resume callback posts the process id to the loop,
//!   which looks the process up again, so nothing `!Send` escapes its thread.
//! - A process leads its own group unless asked otherwise; Terminate, Kill and the
//!   shutdown signal the group, so descendants holding the pipes go too.
//! - Exited processes are forgotten oldest first past `max_exited_kept`.

pub mod env;
pub mod fifo;
pub mod signals;
mod spec;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::os::unix::ffi::OsStrExt;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use loopd::{LoopHandle, SubprocessProtocol, SubprocessTransport};
use loopd_proto::pb;
use pb::event::Kind as EventKind;
use tokio::sync::oneshot;

use crate::bytestream::{ByteStream, StreamConfig, StreamEnd};
use crate::config::{ProcessSettings, SignalSettings};
use crate::events::EventRing;
use crate::loops::LoopCtx;
use crate::service::paging::Page;
use crate::status::{Error, Result};

pub use spec::Spec;

/// Bytes a reader may lag behind before the pipe is paused.
const OUTPUT_WINDOW: usize = 1024 * 1024;

static NEXT_PROCESS_ID: AtomicU64 = AtomicU64::new(1);
static SETTINGS: OnceLock<(ProcessSettings, SignalSettings)> = OnceLock::new();

/// Sets the daemon's process and signal settings; the first call wins.
pub fn configure(process: ProcessSettings, signals: SignalSettings) {
    let _ = SETTINGS.set((process, signals));
}

fn all_settings() -> &'static (ProcessSettings, SignalSettings) {
    SETTINGS.get_or_init(Default::default)
}

/// The process settings (the defaults until [`configure`] is called).
pub fn settings() -> &'static ProcessSettings {
    &all_settings().0
}

/// The signal settings.
pub fn signal_settings() -> &'static SignalSettings {
    &all_settings().1
}

/// One process of a loop.
struct Proc {
    pid: u32,
    pgid: u32,
    argv: Vec<Vec<u8>>,
    started_at: SystemTime,
    started: Instant,
    transport: SubprocessTransport,
    /// stdout and stderr, when they are pipes.
    outputs: [Option<ByteStream>; 2],
    /// asyncio's returncode and the time to exit, once `process_exited` ran.
    exit: Option<(i32, Duration)>,
    retain: u64,
    /// stdin was a pipe at spawn (it may be closed by now).
    stdin_pipe: bool,
    creator_uid: u32,
    waiters: Vec<oneshot::Sender<pb::ProcessInfo>>,
}

/// The processes of the loop on this thread.
#[derive(Default)]
pub struct Table {
    procs: RefCell<BTreeMap<u64, Proc>>,
    exited: RefCell<VecDeque<u64>>,
    running: Cell<usize>,
}

thread_local! {
    static TABLE: Rc<Table> = Rc::new(Table::default());
}

fn table() -> Rc<Table> {
    TABLE.with(Rc::clone)
}

fn not_found(ctx: &LoopCtx, id: u64) -> Error {
    Error::ProcessNotFound {
        loop_name: ctx.name.clone(),
        id,
    }
}

impl Table {
    fn with<R>(&self, id: u64, f: impl FnOnce(&mut Proc) -> R) -> Option<R> {
        self.procs.borrow_mut().get_mut(&id).map(f)
    }
}

/// Whether process `id` exists on this loop.
pub fn exists(id: u64) -> bool {
    table().procs.borrow().contains_key(&id)
}

// ---- spawning -------------------------------------------------------------------------

/// Starts `spec` on the loop for caller `uid`. The ProcessStarted event follows in the
/// next iteration, before any other event of the process.
pub fn spawn(ctx: &LoopCtx, uid: u32, spec: &Spec) -> Result<pb::ProcessInfo> {
    ctx.check_open()?;
    let settings = settings();
    let table = table();
    if table.running.get() >= settings.max_processes {
        return Err(Error::TooManyProcesses {
            loop_name: ctx.name.clone(),
            limit: settings.max_processes,
        });
    }
    check_cwd(spec)?;
    let id = NEXT_PROCESS_ID.fetch_add(1, Ordering::Relaxed);
    let reporter = Reporter {
        id,
        table: Rc::downgrade(&table),
        ring: ctx.shared.ring.clone(),
        loop_name: ctx.name.clone(),
        event_bytes: settings.event_output_bytes,
    };
    let argv = spec.os_argv();
    let options = spec.options(&settings.env_allowlist);
    let transport = ctx
        .lp
        .subprocess_exec(reporter, &argv, options)
        .map_err(spawn_error)?;
    let outputs = [1, 2].map(|fd| {
        transport
            .get_pipe_transport(fd)
            .map(|_| output_stream(ctx.lp.handle(), id, fd, spec))
    });
    let pid = transport.get_pid();
    let stdin_pipe = transport.get_pipe_transport(0).is_some();
    let proc = Proc {
        pid,
        pgid: if spec.new_group { pid } else { 0 },
        argv: spec.argv.clone(),
        started_at: SystemTime::now(),
        started: Instant::now(),
        transport,
        outputs,
        exit: None,
        retain: spec.retain,
        stdin_pipe,
        creator_uid: uid,
        waiters: Vec::new(),
    };
    let info = info(ctx, id, &proc);
    table.procs.borrow_mut().insert(id, proc);
    table.running.set(table.running.get() + 1);
    Ok(info)
}

/// A missing or unusable cwd would be reported as the program's `ENOENT`: say so first.
fn check_cwd(spec: &Spec) -> Result<()> {
    let Some(cwd) = &spec.cwd else { return Ok(()) };
    let path = std::path::Path::new(std::ffi::OsStr::from_bytes(cwd));
    if !path.is_dir() {
        return Err(Error::invalid(
            "cwd",
            format!("{path:?} is not an existing directory"),
        ));
    }
    Ok(())
}

/// The engine's spawn error, with its OS error, coded by what went wrong.
fn spawn_error(err: loopd::Error) -> Error {
    match err {
        loopd::Error::Spawn { program, source } => Error::SpawnFailed { program, source },
        other => Error::Engine(other),
    }
}

/// The stream for output `fd` of process `id`; its resume posts to the loop.
fn output_stream(handle: LoopHandle, id: u64, fd: i32, spec: &Spec) -> ByteStream {
    let stream = ByteStream::new(StreamConfig {
        window: OUTPUT_WINDOW,
        retain: usize::try_from(spec.retain).unwrap_or(usize::MAX),
        pause_without_reader: spec.hold_output,
    });
    let handle = std::sync::Mutex::new(handle);
    stream.set_resume(move || {
        let handle = handle.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let _ = handle.call_soon_threadsafe(move || resume_reading(id, fd));
    });
    stream
}

/// On the loop thread: a reader caught up, read pipe `fd` of process `id` again.
fn resume_reading(id: u64, fd: i32) {
    let pipe = table().with(id, |p| p.transport.get_pipe_transport(fd));
    if let Some(Some(pipe)) = pipe {
        pipe.resume_reading();
    }
}

// ---- the protocol ---------------------------------------------------------------------

/// Reports one child's protocol calls as events, output streams and its exit.
struct Reporter {
    id: u64,
    table: Weak<Table>,
    ring: Arc<EventRing>,
    loop_name: String,
    event_bytes: usize,
}

impl Reporter {
    fn emit(&self, kind: EventKind) {
        let now = loopd::get_running_loop().map_or(0.0, |lp| lp.time());
        self.ring.emit(now, kind);
    }

    fn with<R>(&self, f: impl FnOnce(&mut Proc) -> R) -> Option<R> {
        self.table.upgrade()?.with(self.id, f)
    }
}

impl SubprocessProtocol for Reporter {
    fn connection_made(&mut self, transport: &SubprocessTransport) {
        let Some((pgid, argv)) = self.with(|p| (p.pgid, p.argv.clone())) else {
            return;
        };
        self.emit(EventKind::ProcessStarted(pb::ProcessStarted {
            process_id: self.id,
            pid: transport.get_pid(),
            pgid,
            argv,
        }));
    }

    fn pipe_data_received(&mut self, fd: i32, data: &[u8]) {
        let slot = if fd == 1 { 0 } else { 1 };
        let pushed = self.with(|p| {
            let stream = p.outputs[slot].as_ref()?;
            let offset = stream.written();
            let keep_reading = stream.push(data);
            if !keep_reading {
                if let Some(pipe) = p.transport.get_pipe_transport(fd) {
                    pipe.pause_reading();
                }
            }
            Some(offset)
        });
        let Some(Some(offset)) = pushed else { return };
        let shown = data.len().min(self.event_bytes);
        let output_fd = if fd == 1 {
            pb::OutputFd::Stdout
        } else {
            pb::OutputFd::Stderr
        };
        self.emit(EventKind::ProcessOutput(pb::ProcessOutput {
            process_id: self.id,
            fd: output_fd as i32,
            offset,
            data: data[..shown].to_vec(),
            truncated_bytes: (data.len() - shown) as u64,
        }));
    }

    fn pipe_connection_lost(&mut self, fd: i32, error: Option<std::io::Error>) {
        if !(1..=2).contains(&fd) {
            return;
        }
        let end = match error {
            None => StreamEnd::Eof,
            Some(err) => StreamEnd::Error(err.to_string()),
        };
        self.with(|p| {
            if let Some(stream) = &p.outputs[fd as usize - 1] {
                stream.finish(end);
            }
        });
    }

    fn process_exited(&mut self) {
        let Some(table) = self.table.upgrade() else {
            return;
        };
        let exited = table.with(self.id, |p| {
            let returncode = p.transport.get_returncode().unwrap_or(-1);
            let duration = p.started.elapsed();
            p.exit = Some((returncode, duration));
            for stream in p.outputs.iter().flatten() {
                stream.finish(StreamEnd::Eof); // no-op when the pipe already ended
            }
            (p.pid, returncode, duration, std::mem::take(&mut p.waiters))
        });
        let Some((pid, returncode, duration, waiters)) = exited else {
            return;
        };
        table.running.set(table.running.get().saturating_sub(1));
        self.emit(EventKind::ProcessExited(pb::ProcessExited {
            process_id: self.id,
            pid,
            exit: Some(exit_status(returncode, duration)),
        }));
        if !waiters.is_empty() {
            let info = table
                .procs
                .borrow()
                .get(&self.id)
                .map(|p| info_with_loop(&self.loop_name, self.id, p));
            if let Some(info) = info {
                for waiter in waiters {
                    let _ = waiter.send(info.clone());
                }
            }
        }
        forget_old(&table, self.id); // after the waiters got it, even with a limit of 0
    }
}

/// Remembers `id` as exited; forgets the oldest exited processes past the limit.
fn forget_old(table: &Table, id: u64) {
    let mut exited = table.exited.borrow_mut();
    exited.push_back(id);
    while exited.len() > settings().max_exited_kept {
        if let Some(old) = exited.pop_front() {
            let forgotten = table.procs.borrow_mut().remove(&old);
            drop(forgotten);
        }
    }
}

fn exit_status(returncode: i32, duration: Duration) -> pb::ExitStatus {
    let (code, signal) = if returncode < 0 {
        (None, Some(-returncode))
    } else {
        (Some(returncode), None)
    };
    pb::ExitStatus {
        returncode,
        code,
        signal,
        duration: prost_types::Duration::try_from(duration).ok(),
    }
}

// ---- describing -----------------------------------------------------------------------

fn info(ctx: &LoopCtx, id: u64, p: &Proc) -> pb::ProcessInfo {
    info_with_loop(&ctx.name, id, p)
}

fn info_with_loop(loop_name: &str, id: u64, p: &Proc) -> pb::ProcessInfo {
    let written = |slot: usize| p.outputs[slot].as_ref().map_or(0, ByteStream::written);
    let state = if p.exit.is_some() {
        pb::ProcessState::Exited
    } else {
        pb::ProcessState::Running
    };
    let stdin_open = p
        .transport
        .get_pipe_transport(0)
        .is_some_and(|pipe| !pipe.is_closing());
    pb::ProcessInfo {
        process_id: id,
        r#loop: loop_name.to_owned(),
        pid: p.pid,
        pgid: p.pgid,
        argv: p.argv.clone(),
        state: state as i32,
        exit: p.exit.map(|(rc, d)| exit_status(rc, d)),
        started_at: Some(p.started_at.into()),
        stdout_bytes: written(0),
        stderr_bytes: written(1),
        retain_output_bytes: p.retain,
        stdin_open,
        creator_uid: p.creator_uid,
    }
}

/// Describes process `id`.
pub fn get(ctx: &LoopCtx, id: u64) -> Result<pb::ProcessInfo> {
    let table = table();
    let procs = table.procs.borrow();
    let p = procs.get(&id).ok_or_else(|| not_found(ctx, id))?;
    Ok(info(ctx, id, p))
}

/// Every process of the loop, by id.
pub fn list(ctx: &LoopCtx, page: Page) -> (Vec<pb::ProcessInfo>, Option<u64>) {
    let table = table();
    let procs = table.procs.borrow();
    page.take(
        procs
            .range(page.range())
            .map(|(id, p)| (*id, info(ctx, *id, p))),
    )
}

/// The process if it has exited; else registers `waiter` for when it does.
pub fn wait(
    ctx: &LoopCtx,
    id: u64,
    waiter: oneshot::Sender<pb::ProcessInfo>,
) -> Result<Option<pb::ProcessInfo>> {
    let table = table();
    let mut procs = table.procs.borrow_mut();
    let p = procs.get_mut(&id).ok_or_else(|| not_found(ctx, id))?;
    if p.exit.is_some() {
        return Ok(Some(info(ctx, id, p)));
    }
    p.waiters.retain(|w| !w.is_closed());
    p.waiters.push(waiter);
    Ok(None)
}

/// The stream of output `fd` (1 or 2) of process `id`.
pub fn output(ctx: &LoopCtx, id: u64, fd: i32) -> Result<ByteStream> {
    let table = table();
    let procs = table.procs.borrow();
    let p = procs.get(&id).ok_or_else(|| not_found(ctx, id))?;
    p.outputs[fd as usize - 1]
        .clone()
        .ok_or(Error::NotAPipe { id, fd })
}

// ---- stdin ----------------------------------------------------------------------------

/// Queues `data` for stdin (closing it after if `eof`); the bytes still queued.
pub fn write_stdin(ctx: &LoopCtx, id: u64, data: &[u8], eof: bool) -> Result<u64> {
    let pipe = stdin(ctx, id)?;
    if !data.is_empty() {
        pipe.write(data).map_err(|_| Error::StdinClosed(id))?;
    }
    let buffered = pipe.get_write_buffer_size() as u64;
    if eof {
        pipe.write_eof().map_err(|_| Error::StdinClosed(id))?;
    }
    Ok(buffered)
}

/// Closes stdin once flushed; closing a closed stdin is fine.
pub fn close_stdin(ctx: &LoopCtx, id: u64) -> Result<()> {
    match stdin(ctx, id) {
        Ok(pipe) => {
            pipe.close();
            Ok(())
        }
        Err(Error::StdinClosed(_)) => Ok(()),
        Err(err) => Err(err),
    }
}

fn stdin(ctx: &LoopCtx, id: u64) -> Result<loopd::PipeTransport> {
    let table = table();
    let procs = table.procs.borrow();
    let p = procs.get(&id).ok_or_else(|| not_found(ctx, id))?;
    if !p.stdin_pipe {
        return Err(Error::NotAPipe { id, fd: 0 });
    }
    p.transport
        .get_pipe_transport(0)
        .filter(|pipe| !pipe.is_closing())
        .ok_or(Error::StdinClosed(id))
}

// ---- signals --------------------------------------------------------------------------

/// Sends `sig` to process `id`, or to its group; `false` if it had already exited.
pub fn send_signal(ctx: &LoopCtx, id: u64, sig: i32, to_group: bool) -> Result<bool> {
    let table = table();
    let procs = table.procs.borrow();
    let p = procs.get(&id).ok_or_else(|| not_found(ctx, id))?;
    if to_group && p.pgid == 0 {
        return Err(Error::invalid(
            "to_group",
            format!("process {id} has no process group of its own"),
        ));
    }
    signal_proc(p, sig, to_group)
}

fn signal_proc(p: &Proc, sig: i32, to_group: bool) -> Result<bool> {
    if p.exit.is_some() {
        return Ok(false);
    }
    if to_group {
        // The group outlives its leader while a descendant (holding our pipes, since
        // `exit` is unset) is in it, so its id is not reused yet.
        // SAFETY: kill has no memory preconditions.
        let sent = unsafe { libc::kill(-(p.pgid as libc::pid_t), sig) } == 0;
        return Ok(sent);
    }
    if p.transport.get_returncode().is_some() {
        return Ok(false); // reaped: its pid may belong to someone else now
    }
    p.transport.send_signal(sig)?;
    Ok(true)
}

/// SIGTERM or SIGKILL to the group when it has one, else to the process.
pub fn terminate(ctx: &LoopCtx, id: u64, sig: i32) -> Result<bool> {
    let table = table();
    let procs = table.procs.borrow();
    let p = procs.get(&id).ok_or_else(|| not_found(ctx, id))?;
    signal_proc(p, sig, p.pgid != 0)
}

/// Sends `sig` to every running process of this loop (to the group of those that lead
/// one); returns how many still run.
pub fn signal_all(sig: i32) -> usize {
    let table = table();
    let procs = table.procs.borrow();
    for p in procs.values() {
        let _ = signal_proc(p, sig, p.pgid != 0);
    }
    table.running.get()
}

/// The loop closes: kill every child's group and forget the processes and handlers.
pub fn close_loop() {
    signal_all(libc::SIGKILL);
    let table = table();
    let procs = std::mem::take(&mut *table.procs.borrow_mut());
    table.exited.borrow_mut().clear();
    table.running.set(0);
    for p in procs.values() {
        for stream in p.outputs.iter().flatten() {
            stream.finish(StreamEnd::Error("the loop was closed".into()));
        }
    }
    drop(procs);
    signals::close_loop();
    fifo::close_loop();
}

// ---- actions --------------------------------------------------------------------------

/// Runs a SignalProcessAction.
pub fn run_signal_action(ctx: &LoopCtx, action: &pb::SignalProcessAction) -> Result<()> {
    let sig = signals::parse(&action.signal)?;
    send_signal(ctx, action.process_id, sig, action.to_group).map(drop)
}

/// Runs a SpawnProcessAction; the process belongs to the daemon's own uid.
pub fn run_spawn_action(ctx: &LoopCtx, action: &pb::SpawnProcessAction) -> Result<()> {
    let spec = Spec::check(action.spec.as_ref(), settings())?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    spawn(ctx, uid, &spec).map(drop)
}

/// Checks an action's arguments at the front door.
pub fn check_action(kind: &pb::action::Kind) -> Result<()> {
    match kind {
        pb::action::Kind::SignalProcess(a) => {
            if a.process_id == 0 {
                return Err(Error::invalid("process_id", "0 (ids start at 1)"));
            }
            signals::parse(&a.signal).map(drop)
        }
        pb::action::Kind::SpawnProcess(a) => Spec::check(a.spec.as_ref(), settings()).map(drop),
        _ => Ok(()),
    }
}

/// Checks, on the loop thread, that an action's process exists.
pub fn check_action_target(ctx: &LoopCtx, kind: &pb::action::Kind) -> Result<()> {
    match kind {
        pb::action::Kind::SignalProcess(a) if !exists(a.process_id) => {
            Err(not_found(ctx, a.process_id))
        }
        _ => Ok(()),
    }
}

// ---- shutdown -------------------------------------------------------------------------

/// Daemon shutdown: SIGTERM to every child's group on every loop, SIGKILL to what is
/// left after `grace`.
pub async fn shutdown(registry: &crate::loops::Registry, grace: Duration) {
    let loops = registry.all();
    let deadline = Instant::now() + grace;
    let mut running = signal_loops(&loops, libc::SIGTERM).await;
    while running > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        running = signal_loops(&loops, 0).await;
    }
    if running > 0 {
        tracing::warn!("{running} children still run {grace:?} after SIGTERM: SIGKILL");
        signal_loops(&loops, libc::SIGKILL).await;
    }
}

/// Sends `sig` (0: none) to every loop's children; the number still running.
async fn signal_loops(loops: &[Arc<crate::loops::LoopShared>], sig: i32) -> usize {
    let mut running = 0;
    for shared in loops {
        let count = shared
            .call(move |_| {
                Ok(if sig == 0 {
                    table().running.get()
                } else {
                    signal_all(sig)
                })
            })
            .await;
        running += count.unwrap_or(0);
    }
    running
}
