//! Subprocesses: asyncio's `loop.subprocess_exec`/`subprocess_shell`, the
//! [`SubprocessTransport`] they return and the [`SubprocessProtocol`] they report to.
//!
//! A child is started with glibc's `posix_spawn` (see `spawn.rs`: `CLONE_VM | CLONE_VFORK`,
//! file actions for its stdio), its pipes are registered in the loop's poll, and it is
//! reaped by a [`ChildWatcher`]: the one in [`SubprocessOptions::watcher`], else the
//! policy's ([`get_child_watcher`](crate::get_child_watcher)).
//!
//! # Invariants
//! - Protocol events keep causal order: `connection_made` first; then
//!   `pipe_data_received`; each pipe's `pipe_connection_lost` after its last data;
//!   `process_exited` only once the child was reaped *and* every pipe's
//!   `pipe_connection_lost` was delivered; `connection_lost` last. Nothing follows it.
//! - The protocol is only ever called from a callback in a ready batch, never from inside
//!   a transport method: a method that closes a pipe schedules its `pipe_connection_lost`.
//!   So a protocol may call any transport method from any of its own methods.
//! - Pipe data is read into one reused buffer per pipe and handed out as a borrowed slice.
//! - Parent pipe ends are non-blocking and close-on-exec; children's ends are blocking.
//! - `send_signal` never signals a reaped pid (it could belong to another process by
//!   then): once the watcher has reaped the child, signalling is a no-op, as `Popen`'s.
//! - The loop's poll holds the transport while a pipe is registered and the watcher holds
//!   it until the child exits; after `connection_lost` only the caller's handles remain.
//!   Closing the loop drops both, so a closed loop leaks nothing.
//! - Differences from asyncio: see [`SubprocessTransport`].

use std::cell::{Cell, RefCell};
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::rc::{Rc, Weak};

use mio::unix::pipe::{Receiver, Sender};
use mio::{Interest, Token};

use super::ChildWatcher;
use super::spawn::{
    ParentEnds, Stdio, SubprocessOptions, check_inputs, invalid, kill_and_reap, spawn_child,
};
use crate::error::{Error, Result};
use crate::event_loop::{Core, EventLoop, IoDispatch};
use crate::future::Future;
use crate::handle::{OnceCell, RepeatingCell, Runnable};

/// Bytes read from a pipe per `read(2)`: below glibc's mmap threshold, so the buffer
/// comes from the heap, and it is allocated once per pipe.
const READ_CHUNK: usize = 64 * 1024;

/// Reads per readiness before other callbacks get a turn (the rest waits one iteration).
const READS_PER_TURN: usize = 16;

/// asyncio's default write buffer high-water mark (64 KiB); the low one is a quarter.
const DEFAULT_HIGH_WATER: usize = 64 * 1024;

/// asyncio's `SubprocessProtocol`: what a subprocess transport reports. Every method has
/// a do-nothing default. Methods run on the loop's thread, in ready batches, and each may
/// call any [`SubprocessTransport`] method.
///
/// Events come in causal order: `connection_made` first; then `pipe_data_received`;
/// each pipe's `pipe_connection_lost` after its last data; `process_exited` once the
/// child was reaped *and* every pipe is closed; `connection_lost` last.
pub trait SubprocessProtocol: 'static {
    /// The child was started; `transport` controls it (clone it to keep it).
    fn connection_made(&mut self, transport: &SubprocessTransport) {
        let _ = transport;
    }

    /// The child wrote `data` to its stdout (`fd` 1) or stderr (`fd` 2). `data` borrows a
    /// reused buffer: copy what you keep.
    fn pipe_data_received(&mut self, fd: i32, data: &[u8]) {
        let _ = (fd, data);
    }

    /// Pipe `fd` (0, 1 or 2) was closed: end of file, [`close`](PipeTransport::close), or
    /// an error (`Some`), such as a broken stdin pipe.
    fn pipe_connection_lost(&mut self, fd: i32, error: Option<io::Error>) {
        let _ = (fd, error);
    }

    /// The child exited and was reaped, and all its pipes are closed:
    /// [`SubprocessTransport::get_returncode`] is set.
    fn process_exited(&mut self) {}

    /// asyncio's `BaseProtocol.pause_writing`: more than the high-water mark is queued
    /// for stdin (see [`PipeTransport::set_write_buffer_limits`]); stop writing until
    /// `resume_writing`. Writing anyway still works: the queue just grows.
    fn pause_writing(&mut self) {}

    /// asyncio's `BaseProtocol.resume_writing`: the stdin queue drained to the low-water
    /// mark after a `pause_writing`.
    fn resume_writing(&mut self) {}

    /// asyncio's `BaseProtocol.connection_lost`: the last event, right after
    /// `process_exited`. The transport drops the protocol after it.
    fn connection_lost(&mut self, error: Option<io::Error>) {
        let _ = error;
    }
}

/// Where a pipe is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PipeState {
    /// The stream is not a pipe to the loop.
    Absent,
    Open,
    /// Closed; its `pipe_connection_lost` is scheduled, not yet delivered.
    Lost,
    /// `pipe_connection_lost` was delivered.
    Done,
}

/// The loop's end of the child's stdout or stderr.
struct ReadEnd {
    rx: Receiver,
    token: Token,
    /// Reused for every read; empty until the first one, and while lent to the protocol.
    buf: Vec<u8>,
    paused: bool,
    /// The callback that drains the pipe, pushed on each readiness.
    cell: Rc<dyn Runnable>,
}

/// The loop's end of the child's stdin.
struct WriteEnd {
    tx: Sender,
    token: Token,
    /// Bytes not written yet start at `sent`.
    buf: Vec<u8>,
    sent: usize,
    /// `write_eof` was called: close once the buffer is flushed.
    eof: bool,
    /// The reader went away (EPOLLERR): close once idle.
    hangup: bool,
    /// Flow control: `pause_writing` above `high` queued bytes, `resume_writing` at or
    /// below `low` once paused.
    high: usize,
    low: usize,
    /// The protocol was (or is about to be) told to pause writing.
    writing_paused: bool,
}

impl WriteEnd {
    fn pending(&self) -> usize {
        self.buf.len() - self.sent
    }

    /// The flow-control event the queue's size now calls for, if any: `Some(true)` to
    /// pause, `Some(false)` to resume.
    fn flow_change(&mut self) -> Option<bool> {
        let pending = self.pending();
        let change = if self.writing_paused {
            pending <= self.low
        } else {
            pending > self.high
        };
        if change {
            self.writing_paused = !self.writing_paused;
            return Some(self.writing_paused);
        }
        None
    }
}

struct Inner {
    core: Weak<Core>,
    pid: u32,
    /// The loop's child table tracks the pid (the built-in watchers): it tells whether
    /// the child was reaped even before our exit callback runs.
    tracked: Cell<bool>,
    returncode: Cell<Option<i32>>,
    closed: Cell<bool>,
    finished: Cell<bool>,
    states: [Cell<PipeState>; 3],
    stdin: RefCell<Option<WriteEnd>>,
    outputs: [RefCell<Option<ReadEnd>>; 2],
    protocol: RefCell<Option<Box<dyn SubprocessProtocol>>>,
}

/// asyncio's `SubprocessTransport`: controls one child started by
/// [`EventLoop::subprocess_exec`] or [`EventLoop::subprocess_shell`]. A cheap handle
/// (`Rc`): clones control the same child. Lives on the loop's thread.
///
/// # Differences from asyncio
/// - `subprocess_exec` returns the transport at once (the child is already started);
///   the protocol is a value, not a factory, and `connection_made` follows in the next
///   iteration, before any other event.
/// - `process_exited` waits until the pipes are closed too (asyncio calls it as soon as
///   the child is reaped), so no output ever follows it. A grandchild that keeps a pipe
///   open delays it; [`SubprocessTransport::close`] ends that wait.
/// - When the child exits, a still-open stdin pipe is closed (`pipe_connection_lost(0,
///   ..)`, with `BrokenPipe` if data was still queued).
/// - Writing to a closed stdin or after `write_eof` fails with [`Error::PipeClosed`]
///   (asyncio logs a warning and drops the data).
/// - [`Stdio::Fd`] takes ownership of the descriptor.
/// - `env` adds to the inherited environment; set `env_clear` for asyncio's `env=` (a
///   whole new environment).
/// - Writing to a pipe whose reader is gone raises `SIGPIPE` unless the process ignores
///   it, as Rust programs do by default (Rust's `main` sets `SIG_IGN`).
#[derive(Clone)]
pub struct SubprocessTransport {
    inner: Rc<Inner>,
}

/// One of a child's pipes (asyncio's `get_pipe_transport(fd)`): a write pipe for fd 0,
/// a read pipe for fds 1 and 2.
#[derive(Clone)]
pub struct PipeTransport {
    inner: Rc<Inner>,
    fd: i32,
}

/// What [`EventLoop::subprocess_exec_collect`] gives: the child's returncode and
/// everything it wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Output {
    /// The exit code, or `-N` if signal `N` killed the child.
    pub returncode: i32,
    /// All of stdout.
    pub stdout: Vec<u8>,
    /// All of stderr.
    pub stderr: Vec<u8>,
}

// ---- starting a child -----------------------------------------------------------------

impl EventLoop {
    /// asyncio's `loop.subprocess_exec(protocol_factory, *args, ...)`: starts `argv[0]`
    /// (looked up in `PATH` when it has no slash) with arguments `argv` passed to
    /// `execve` verbatim, no shell involved. `protocol` receives the child's events, the
    /// first (`connection_made`) in the next iteration.
    ///
    /// A program without a slash is searched in the child's `PATH` (the loop process's
    /// unless `env` sets one; `/bin:/usr/bin` after `env_clear` without one).
    ///
    /// Fails with [`Error::Closed`] if the loop is closed; [`Error::InvalidArgument`] for
    /// an empty `argv`, a NUL byte in an argument, `cwd` or `env` (naming which), a `=`
    /// in an environment name, a negative process group, [`Stdio::Stdout`] for stdin
    /// or stdout, or a `cwd` that is not a directory the child can enter;
    /// [`Error::ChildWatcherClosed`] if the watcher is closed; [`Error::Spawn`] (naming
    /// the program) if it cannot be started, e.g. `ENOENT`; [`Error::Io`] or
    /// [`Error::Register`] if making or registering a pipe fails.
    ///
    /// # Examples
    /// ```
    /// use loopd::{EventLoop, SubprocessOptions, SubprocessProtocol};
    /// struct Stop;
    /// impl SubprocessProtocol for Stop {
    ///     fn process_exited(&mut self) {
    ///         loopd::get_running_loop().unwrap().stop();
    ///     }
    /// }
    /// let lp = EventLoop::new().unwrap();
    /// # let safety = lp.clone();
    /// # lp.call_later(std::time::Duration::from_secs(5), move || safety.stop()).unwrap();
    /// let child = lp.subprocess_exec(Stop, &["sh", "-c", "exit 3"], SubprocessOptions::default())
    ///     .unwrap();
    /// lp.run_forever().unwrap();
    /// assert_eq!(child.get_returncode(), Some(3));
    /// ```
    pub fn subprocess_exec<S: AsRef<OsStr>>(
        &self,
        protocol: impl SubprocessProtocol,
        argv: &[S],
        options: SubprocessOptions,
    ) -> Result<SubprocessTransport> {
        self.check_open()?;
        let argv: Vec<&OsStr> = argv.iter().map(AsRef::as_ref).collect();
        check_inputs(&argv, &options)?;
        let watcher = match &options.watcher {
            Some(watcher) => watcher.clone(),
            None => crate::policy::get_child_watcher()?,
        };
        if !watcher.is_active() {
            return Err(Error::ChildWatcherClosed);
        }
        let (pid, ends) = spawn_child(&argv, options)?;
        let inner = Rc::new(Inner::new(self, pid, &ends));
        inner.watch(self, &*watcher)?;
        crate::metrics::bump(&self.core.children.spawned, 1);
        inner.register_pipes(self, ends)?;
        let transport = SubprocessTransport { inner };
        *transport.inner.protocol.borrow_mut() = Some(Box::new(protocol));
        let made = transport.clone();
        self.push_ready(OnceCell::new_rc(move || {
            made.inner.deliver(|p| p.connection_made(&made));
        }));
        Ok(transport)
    }

    /// asyncio's `loop.subprocess_shell(protocol_factory, cmd, ...)`: runs `cmd` with
    /// `/bin/sh -c`. Quoting is the caller's business; prefer
    /// [`subprocess_exec`](Self::subprocess_exec) for untrusted arguments. Fails as it does.
    pub fn subprocess_shell(
        &self,
        protocol: impl SubprocessProtocol,
        cmd: impl AsRef<OsStr>,
        options: SubprocessOptions,
    ) -> Result<SubprocessTransport> {
        let argv = [OsStr::new("/bin/sh"), OsStr::new("-c"), cmd.as_ref()];
        self.subprocess_exec(protocol, &argv, options)
    }

    /// Runs `argv` to completion (stdout and stderr piped; `stdin` written then closed, or
    /// `/dev/null` when `None`) and resolves to its [`Output`]: asyncio's
    /// `create_subprocess_exec(...).communicate(input)`. Fails as
    /// [`subprocess_exec`](Self::subprocess_exec) does.
    pub fn subprocess_exec_collect<S: AsRef<OsStr>>(
        &self,
        argv: &[S],
        stdin: Option<Vec<u8>>,
    ) -> Result<Future<Output>> {
        let future = self.create_future()?;
        let options = SubprocessOptions {
            stdin: if stdin.is_some() {
                Stdio::Pipe
            } else {
                Stdio::DevNull
            },
            ..SubprocessOptions::default()
        };
        let collector = Collector {
            future: future.clone(),
            output: Output::default(),
            transport: None,
        };
        let transport = self.subprocess_exec(collector, argv, options)?;
        if let Some(input) = stdin {
            if let Some(pipe) = transport.get_pipe_transport(0) {
                pipe.write(&input)?;
                pipe.write_eof()?;
            }
        }
        Ok(future)
    }
}

// ---- the transport's state ------------------------------------------------------------

impl Inner {
    fn new(lp: &EventLoop, pid: u32, ends: &ParentEnds) -> Inner {
        let state = |present: bool| {
            Cell::new(if present {
                PipeState::Open
            } else {
                PipeState::Absent
            })
        };
        Inner {
            core: Rc::downgrade(&lp.core),
            pid,
            tracked: Cell::new(false),
            returncode: Cell::new(None),
            closed: Cell::new(false),
            finished: Cell::new(false),
            states: [
                state(ends.stdin.is_some()),
                state(ends.stdout.is_some()),
                state(ends.stderr.is_some()),
            ],
            stdin: RefCell::new(None),
            outputs: [RefCell::new(None), RefCell::new(None)],
            protocol: RefCell::new(None),
        }
    }

    fn event_loop(&self) -> Option<EventLoop> {
        let core = self.core.upgrade()?;
        let lp = EventLoop { core };
        (!lp.is_closed()).then_some(lp)
    }

    /// Hands the child to `watcher`. If it refuses, the child is killed and reaped here,
    /// so no zombie is left behind.
    fn watch(self: &Rc<Self>, lp: &EventLoop, watcher: &dyn ChildWatcher) -> Result<()> {
        let inner = self.clone();
        let callback = Box::new(move |_pid, returncode| inner.on_exit(returncode));
        if let Err(err) = watcher.add_child_handler(lp, self.pid, callback) {
            kill_and_reap(self.pid);
            return Err(err);
        }
        self.tracked.set(watched_by_loop(lp, self.pid));
        Ok(())
    }

    /// Registers the loop's pipe ends. On failure the transport is closed (the child is
    /// killed; the watcher reaps it).
    fn register_pipes(self: &Rc<Self>, lp: &EventLoop, ends: ParentEnds) -> Result<()> {
        let registered = self.register_ends(lp, ends);
        if registered.is_err() {
            self.close();
        }
        registered
    }

    fn register_ends(self: &Rc<Self>, lp: &EventLoop, ends: ParentEnds) -> Result<()> {
        if let Some(mut tx) = ends.stdin {
            let token = self.register(lp, &mut tx, Interest::WRITABLE, writer_cell(self))?;
            *self.stdin.borrow_mut() = Some(WriteEnd {
                tx,
                token,
                buf: Vec::new(),
                sent: 0,
                eof: false,
                hangup: false,
                high: DEFAULT_HIGH_WATER,
                low: DEFAULT_HIGH_WATER / 4,
                writing_paused: false,
            });
        }
        for (slot, rx) in [ends.stdout, ends.stderr].into_iter().enumerate() {
            let Some(mut rx) = rx else { continue };
            let cell = reader_cell(self, slot + 1);
            let token = self.register(lp, &mut rx, Interest::READABLE, cell.clone())?;
            *self.outputs[slot].borrow_mut() = Some(ReadEnd {
                rx,
                token,
                buf: Vec::new(),
                paused: false,
                cell,
            });
        }
        Ok(())
    }

    /// Registers a pipe end; its readiness pushes `cell`. The poll holds the transport
    /// while the pipe is registered.
    fn register(
        self: &Rc<Self>,
        lp: &EventLoop,
        source: &mut (impl mio::event::Source + std::os::fd::AsRawFd),
        interest: Interest,
        cell: Rc<dyn Runnable>,
    ) -> Result<Token> {
        let inner = self.clone();
        let is_stdin = interest == Interest::WRITABLE;
        let dispatch: IoDispatch = Rc::new(move |lp, readiness| {
            if is_stdin && (readiness.error || readiness.write_closed) {
                if let Some(end) = inner.stdin.borrow_mut().as_mut() {
                    end.hangup = true; // the child closed its stdin (or exited)
                }
            }
            lp.push_ready(cell.clone());
        });
        let fd = source.as_raw_fd();
        lp.register_source(source, interest, dispatch)
            .map_err(|source| Error::Register { fd, source })
    }

    /// Calls the protocol, unless it is gone (after `connection_lost`).
    fn deliver(&self, call: impl FnOnce(&mut dyn SubprocessProtocol)) {
        // Never fails: the protocol is only called from ready callbacks, one at a time.
        let Ok(mut protocol) = self.protocol.try_borrow_mut() else {
            tracing::warn!(target: "loopd", "subprocess {} protocol re-entered", self.pid);
            return;
        };
        if let Some(protocol) = protocol.as_mut() {
            call(&mut **protocol);
        }
    }

    /// The watcher reaped the child.
    fn on_exit(self: Rc<Self>, returncode: i32) {
        self.returncode.set(Some(returncode));
        if let Some(core) = self.core.upgrade() {
            crate::metrics::bump(&core.children.exited, 1);
        }
        // The reader of stdin is gone (unless a grandchild holds it): stop writing.
        let unsent = self.stdin.borrow().as_ref().map(WriteEnd::pending);
        if let Some(unsent) = unsent {
            let error = (unsent > 0).then(|| io::Error::from(io::ErrorKind::BrokenPipe));
            self.close_pipe(0, error);
        }
        self.try_finish();
    }

    /// Closes pipe `fd` now and schedules its `pipe_connection_lost`.
    fn close_pipe(self: &Rc<Self>, fd: usize, error: Option<io::Error>) {
        if self.states[fd].get() != PipeState::Open {
            return;
        }
        self.states[fd].set(PipeState::Lost);
        let lp = self.event_loop();
        if fd == 0 {
            if let Some(end) = self.stdin.borrow_mut().take() {
                release(lp.as_ref(), end.tx, end.token);
            }
        } else if let Some(end) = self.outputs[fd - 1].borrow_mut().take() {
            release(lp.as_ref(), end.rx, end.token);
        }
        let Some(lp) = lp else { return };
        let inner = self.clone();
        lp.push_ready(OnceCell::new_rc(move || {
            inner.states[fd].set(PipeState::Done);
            inner.deliver(|p| p.pipe_connection_lost(fd as i32, error));
            inner.try_finish();
        }));
    }

    /// Delivers `process_exited` and `connection_lost` once the child was reaped and
    /// every pipe's loss was delivered; then drops the protocol.
    fn try_finish(&self) {
        let pipes_done = self
            .states
            .iter()
            .all(|s| matches!(s.get(), PipeState::Absent | PipeState::Done));
        if self.finished.get() || self.returncode.get().is_none() || !pipes_done {
            return;
        }
        self.finished.set(true);
        self.deliver(|p| p.process_exited());
        self.deliver(|p| p.connection_lost(None));
        let protocol = self.protocol.borrow_mut().take();
        drop(protocol); // outside the borrow: its drop may use the transport
    }

    /// Whether the child has been reaped (its pid may now be someone else's).
    fn is_reaped(&self) -> bool {
        if self.returncode.get().is_some() {
            return true;
        }
        match self.event_loop() {
            Some(lp) => self.tracked.get() && !watched_by_loop(&lp, self.pid),
            None => true, // a closed loop's children are reaped by a background thread
        }
    }

    fn close(self: &Rc<Self>) {
        if self.closed.replace(true) {
            return;
        }
        // Kill first: a child writing to a pipe closed under it would otherwise die of
        // SIGPIPE instead, and report -13 rather than -9.
        if !self.is_reaped() {
            // SAFETY: kill has no memory preconditions; the pid is our unreaped child.
            unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGKILL) };
        }
        for fd in 0..3 {
            self.close_pipe(fd, None);
        }
    }

    // ---- reading stdout and stderr ----

    /// Drains pipe `fd` (1 or 2) until it would block, hands each chunk to the protocol,
    /// and closes the pipe at end of file or on an error.
    fn read_ready(self: &Rc<Self>, fd: usize) {
        for _ in 0..READS_PER_TURN {
            let Some((buf, result)) = self.read_chunk(fd) else {
                return; // paused or closed
            };
            match result {
                Ok(0) => return self.close_pipe(fd, None),
                Ok(n) => self.deliver(|p| p.pipe_data_received(fd as i32, &buf[..n])),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    return self.return_buffer(fd, buf);
                }
                Err(err) => return self.close_pipe(fd, Some(err)),
            }
            self.return_buffer(fd, buf);
        }
        // Still more to read: give other callbacks a turn first.
        let cell = self.outputs[fd - 1]
            .borrow()
            .as_ref()
            .map(|e| e.cell.clone());
        if let (Some(cell), Some(lp)) = (cell, self.event_loop()) {
            lp.push_ready(cell);
        }
    }

    /// One `read(2)` into the pipe's buffer, which is lent out (the protocol may pause or
    /// close the pipe while it holds the data).
    fn read_chunk(&self, fd: usize) -> Option<(Vec<u8>, io::Result<usize>)> {
        let mut slot = self.outputs[fd - 1].borrow_mut();
        let end = slot.as_mut().filter(|end| !end.paused)?;
        let mut buf = std::mem::take(&mut end.buf);
        if buf.len() < READ_CHUNK {
            buf.resize(READ_CHUNK, 0);
        }
        let result = (&end.rx).read(&mut buf);
        Some((buf, result))
    }

    fn return_buffer(&self, fd: usize, buf: Vec<u8>) {
        if let Some(end) = self.outputs[fd - 1].borrow_mut().as_mut() {
            end.buf = buf;
        }
    }

    // ---- writing stdin ----

    /// Writes what is buffered; closes stdin once flushed if `write_eof` was called or
    /// the reader went away, or at once on an error.
    fn write_ready(self: &Rc<Self>) {
        let (outcome, flow) = {
            let mut slot = self.stdin.borrow_mut();
            let Some(end) = slot.as_mut() else { return };
            let outcome = flush(end).map(|()| end.pending() == 0 && (end.eof || end.hangup));
            (outcome, end.flow_change())
        };
        self.schedule_flow(flow);
        match outcome {
            Ok(true) => self.close_pipe(0, None),
            Ok(false) => {}
            Err(err) => self.close_pipe(0, Some(err)),
        }
    }
}

impl Inner {
    /// Schedules `pause_writing` (`Some(true)`) or `resume_writing` (`Some(false)`). Both
    /// go through the ready queue, so they reach the protocol in the order they happened.
    fn schedule_flow(self: &Rc<Self>, flow: Option<bool>) {
        let (Some(pause), Some(lp)) = (flow, self.event_loop()) else {
            return;
        };
        let inner = self.clone();
        lp.push_ready(OnceCell::new_rc(move || {
            if pause {
                inner.deliver(|p| p.pause_writing());
            } else {
                inner.deliver(|p| p.resume_writing());
            }
        }));
    }
}

/// Writes until the buffer is empty or the pipe is full.
fn flush(end: &mut WriteEnd) -> io::Result<()> {
    while end.pending() > 0 {
        match (&end.tx).write(&end.buf[end.sent..]) {
            Ok(n) => end.sent += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
            Err(err) => return Err(err),
        }
    }
    if end.pending() == 0 {
        end.buf.clear();
        end.sent = 0;
    } else if end.sent > end.buf.len() / 2 {
        end.buf.drain(..end.sent);
        end.sent = 0;
    }
    Ok(())
}

/// Deregisters and closes a pipe end.
fn release(lp: Option<&EventLoop>, mut source: impl mio::event::Source, token: Token) {
    if let Some(lp) = lp {
        if let Err(err) = lp.deregister_source(&mut source, token) {
            tracing::debug!(target: "loopd", "deregistering a subprocess pipe: {err}");
        }
    }
}

fn reader_cell(inner: &Rc<Inner>, fd: usize) -> Rc<dyn Runnable> {
    let weak = Rc::downgrade(inner);
    RepeatingCell::new_rc(move || {
        if let Some(inner) = weak.upgrade() {
            inner.read_ready(fd);
        }
    })
}

fn writer_cell(inner: &Rc<Inner>) -> Rc<dyn Runnable> {
    let weak = Rc::downgrade(inner);
    RepeatingCell::new_rc(move || {
        if let Some(inner) = weak.upgrade() {
            inner.write_ready();
        }
    })
}

/// Whether `lp`'s child table still holds `pid` (it leaves the table when reaped).
fn watched_by_loop(lp: &EventLoop, pid: u32) -> bool {
    lp.core.children.watched.borrow().contains_key(&pid)
}

// ---- the public handles ---------------------------------------------------------------

impl SubprocessTransport {
    /// The child's process id.
    pub fn get_pid(&self) -> u32 {
        self.inner.pid
    }

    /// The exit code once the child was reaped, `-N` if signal `N` killed it; `None`
    /// while it runs.
    pub fn get_returncode(&self) -> Option<i32> {
        self.inner.returncode.get()
    }

    /// The pipe for `fd` (0 stdin, 1 stdout, 2 stderr); `None` if that stream is not a
    /// pipe or the pipe is closed.
    pub fn get_pipe_transport(&self, fd: i32) -> Option<PipeTransport> {
        let slot = usize::try_from(fd).ok().filter(|&fd| fd < 3)?;
        (self.inner.states[slot].get() == PipeState::Open).then(|| PipeTransport {
            inner: self.inner.clone(),
            fd,
        })
    }

    /// Sends `signal` to the child. A no-op once the child has been reaped (as `Popen`),
    /// so a reused pid is never signalled.
    ///
    /// Fails with [`Error::InvalidSignal`] for a number outside `0..=SIGRTMAX`,
    /// [`Error::ProcessLookup`] once the transport has delivered `connection_lost`
    /// (asyncio's `ProcessLookupError`), and [`Error::Io`] if `kill(2)` fails.
    pub fn send_signal(&self, signal: i32) -> Result<()> {
        if !(0..=libc::SIGRTMAX()).contains(&signal) {
            return Err(Error::InvalidSignal(signal));
        }
        if self.inner.finished.get() {
            return Err(Error::ProcessLookup(self.inner.pid));
        }
        if self.inner.is_reaped() {
            return Ok(());
        }
        // SAFETY: kill has no memory preconditions; the pid is our unreaped child.
        if unsafe { libc::kill(self.inner.pid as libc::pid_t, signal) } == -1 {
            return Err(Error::Io {
                op: "kill",
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// `send_signal(SIGTERM)`.
    pub fn terminate(&self) -> Result<()> {
        self.send_signal(libc::SIGTERM)
    }

    /// `send_signal(SIGKILL)`.
    pub fn kill(&self) -> Result<()> {
        self.send_signal(libc::SIGKILL)
    }

    /// asyncio's `close()`: kills the child with SIGKILL if it still runs (before the
    /// pipes close, so it dies of that and not of SIGPIPE) and closes every pipe (each
    /// gets `pipe_connection_lost(fd, None)`). The watcher still reaps it, and
    /// `process_exited` and `connection_lost` follow. Idempotent.
    pub fn close(&self) {
        self.inner.close();
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closing(&self) -> bool {
        self.inner.closed.get()
    }
}

impl std::fmt::Debug for SubprocessTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubprocessTransport")
            .field("pid", &self.inner.pid)
            .field("returncode", &self.inner.returncode.get())
            .field("closed", &self.inner.closed.get())
            .finish()
    }
}

impl PipeTransport {
    /// Which of the child's streams this is: 0, 1 or 2.
    pub fn fd(&self) -> i32 {
        self.fd
    }

    fn slot(&self) -> usize {
        self.fd as usize
    }

    /// Whether the pipe is closed or closing.
    pub fn is_closing(&self) -> bool {
        let slot = self.slot();
        let closing = slot == 0 && self.inner.stdin.borrow().as_ref().is_some_and(|e| e.eof);
        closing || self.inner.states[slot].get() != PipeState::Open
    }

    /// Queues `data` for the child's stdin and writes what the pipe takes now; the rest is
    /// written as the child reads. A broken pipe closes the pipe with
    /// `pipe_connection_lost(0, Some(error))` rather than failing here, as asyncio does.
    ///
    /// Fails with [`Error::InvalidArgument`] on fds 1 and 2 and with
    /// [`Error::PipeClosed`] after [`write_eof`](Self::write_eof) or once the pipe closed
    /// (asyncio drops such data with a warning).
    pub fn write(&self, data: &[u8]) -> Result<()> {
        let (outcome, flow) = self.with_writer(|end| {
            end.buf.extend_from_slice(data);
            (flush(end), end.flow_change())
        })?;
        self.inner.schedule_flow(flow);
        if let Err(err) = outcome {
            self.inner.close_pipe(0, Some(err));
        }
        Ok(())
    }

    /// Closes stdin once everything queued is written (the child then reads end of
    /// file). Fails as [`write`](Self::write) does.
    pub fn write_eof(&self) -> Result<()> {
        let flushed = self.with_writer(|end| {
            end.eof = true;
            end.pending() == 0
        })?;
        if flushed {
            self.inner.close_pipe(0, None);
        }
        Ok(())
    }

    /// asyncio's `set_write_buffer_limits(high, low)` for stdin: the protocol gets
    /// `pause_writing` once more than `high` bytes are queued and `resume_writing` when
    /// the queue drains to `low`. `None` picks asyncio's defaults: `high` 64 KiB (or 4 ×
    /// `low`), `low` a quarter of `high`.
    ///
    /// Fails with [`Error::InvalidArgument`] if `low > high`, on fds 1 and 2, and with
    /// [`Error::PipeClosed`] once stdin is closed.
    pub fn set_write_buffer_limits(&self, high: Option<usize>, low: Option<usize>) -> Result<()> {
        let high = high.unwrap_or_else(|| low.map_or(DEFAULT_HIGH_WATER, |low| 4 * low));
        let low = low.unwrap_or(high / 4);
        if low > high {
            return Err(invalid(
                "write buffer limits",
                format!("high {high} < low {low}"),
            ));
        }
        let flow = self.with_writer(|end| {
            (end.high, end.low) = (high, low);
            end.flow_change()
        })?;
        self.inner.schedule_flow(flow);
        Ok(())
    }

    /// asyncio's `get_write_buffer_limits()`: `(low, high)` for stdin, `None` on fds 1
    /// and 2 or once stdin is closed.
    pub fn get_write_buffer_limits(&self) -> Option<(usize, usize)> {
        let end = self.inner.stdin.borrow();
        end.as_ref()
            .filter(|_| self.fd == 0)
            .map(|end| (end.low, end.high))
    }

    /// Bytes queued for stdin and not yet written (0 for fds 1 and 2).
    pub fn get_write_buffer_size(&self) -> usize {
        let end = self.inner.stdin.borrow();
        match end.as_ref() {
            Some(end) if self.fd == 0 => end.pending(),
            _ => 0,
        }
    }

    /// Stops reading stdout/stderr until [`resume_reading`](Self::resume_reading): the
    /// child blocks once the pipe is full. No-op on stdin or a closed pipe.
    pub fn pause_reading(&self) {
        self.set_paused(true);
    }

    /// Resumes reading after [`pause_reading`](Self::pause_reading).
    pub fn resume_reading(&self) {
        if self.set_paused(false) {
            let cell = self.inner.outputs[self.slot() - 1]
                .borrow()
                .as_ref()
                .map(|e| e.cell.clone());
            if let (Some(cell), Some(lp)) = (cell, self.inner.event_loop()) {
                lp.push_ready(cell); // data may be waiting with no new edge to report it
            }
        }
    }

    /// Whether reading is on (false for stdin and closed pipes).
    pub fn is_reading(&self) -> bool {
        self.fd != 0
            && self.inner.outputs[self.slot() - 1]
                .borrow()
                .as_ref()
                .is_some_and(|e| !e.paused)
    }

    /// asyncio's pipe `close()`: stdin is closed once flushed (as `write_eof`); stdout and
    /// stderr at once. `pipe_connection_lost(fd, None)` follows. Idempotent.
    pub fn close(&self) {
        if self.fd == 0 {
            let _ = self.write_eof();
        } else {
            self.inner.close_pipe(self.slot(), None);
        }
    }

    /// Sets `paused` on an open read pipe; whether it changed.
    fn set_paused(&self, paused: bool) -> bool {
        if self.fd == 0 {
            return false;
        }
        let mut slot = self.inner.outputs[self.slot() - 1].borrow_mut();
        match slot.as_mut() {
            Some(end) if end.paused != paused => {
                end.paused = paused;
                true
            }
            _ => false,
        }
    }

    fn with_writer<R>(&self, f: impl FnOnce(&mut WriteEnd) -> R) -> Result<R> {
        if self.fd != 0 {
            return Err(invalid(
                "pipe to write to",
                format!("fd {} (a read pipe)", self.fd),
            ));
        }
        let mut slot = self.inner.stdin.borrow_mut();
        match slot.as_mut() {
            Some(end) if !end.eof => Ok(f(end)),
            _ => Err(Error::PipeClosed { fd: self.fd }),
        }
    }
}

impl std::fmt::Debug for PipeTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipeTransport")
            .field("pid", &self.inner.pid)
            .field("fd", &self.fd)
            .finish()
    }
}

/// The protocol behind [`EventLoop::subprocess_exec_collect`].
struct Collector {
    future: Future<Output>,
    output: Output,
    transport: Option<SubprocessTransport>,
}

impl SubprocessProtocol for Collector {
    fn connection_made(&mut self, transport: &SubprocessTransport) {
        self.transport = Some(transport.clone());
    }

    fn pipe_data_received(&mut self, fd: i32, data: &[u8]) {
        let sink = if fd == 1 {
            &mut self.output.stdout
        } else {
            &mut self.output.stderr
        };
        sink.extend_from_slice(data);
    }

    fn process_exited(&mut self) {
        let transport = self.transport.take();
        self.output.returncode = transport.and_then(|t| t.get_returncode()).unwrap_or(-1);
        let _ = self.future.set_result(std::mem::take(&mut self.output));
    }
}
