//! Pipe transports: asyncio's `loop.connect_read_pipe` and `loop.connect_write_pipe`
//! (`_UnixReadPipeTransport`, `_UnixWritePipeTransport`), for pipes, FIFOs, sockets and
//! character devices the caller hands over.
//!
//! # Invariants
//! - The transport owns the descriptor from the start (it was given as an `OwnedFd`), makes
//!   it non-blocking, and closes it right after `connection_lost`.
//! - Registered once, edge-triggered: the read end for reading, the write end for writing
//!   (the poll reports the reader going away as an error on the write end, which closes
//!   the transport: with `BrokenPipe` if data was still buffered, as asyncio).
//! - Reads go into the loop's one read buffer, at most [`READ_BUFFER_SIZE`] per callback;
//!   EOF means `eof_received`, then `connection_lost(None)`: a read pipe ends with its
//!   writers.
//! - Protocol methods run from the ready queue; a busy protocol gets its calls later, in
//!   order (see `net::calls`).

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::{Rc, Weak};
use std::sync::Arc;

use mio::unix::SourceFd;
use mio::{Interest, Token};

use crate::error::{Error, Result};
use crate::event_loop::{Core, EventLoop, IoDispatch, Readiness};
use crate::exception::{ExceptionContext, PanicError};
use crate::future::Future;
use crate::handle::{RepeatingCell, Runnable, cancel_cell};
use crate::net::calls::{self, CallsOwner, ProtocolCalls};
use crate::net::transport::write_buffer_limits;
use crate::net::{DEFAULT_HIGH_WATER, DEFAULT_LOW_WATER, ExtraInfo, READ_BUFFER_SIZE};

/// The callbacks of a read pipe (asyncio's `Protocol` as `connect_read_pipe` uses it).
pub trait ReadPipeProtocol {
    /// The transport is ready.
    fn connection_made(&mut self, transport: ReadPipeTransport) {
        let _ = transport;
    }

    /// Bytes arrived. `data` borrows the loop's read buffer: copy what you keep.
    fn data_received(&mut self, data: &[u8]) {
        let _ = data;
    }

    /// Every writer closed its end; `connection_lost(None)` follows.
    fn eof_received(&mut self) {}

    /// The pipe is closed: `None` after EOF or `close()`, the error otherwise. Once.
    fn connection_lost(&mut self, error: Option<io::Error>) {
        let _ = error;
    }
}

/// The callbacks of a write pipe (asyncio's `BaseProtocol` as `connect_write_pipe` uses
/// it).
pub trait WritePipeProtocol {
    /// The transport is ready.
    fn connection_made(&mut self, transport: WritePipeTransport) {
        let _ = transport;
    }

    /// The pipe is closed: `None` after `close()`/`abort()` or when the reader went away
    /// with nothing buffered; the error otherwise (`BrokenPipe`, ...). Once.
    fn connection_lost(&mut self, error: Option<io::Error>) {
        let _ = error;
    }

    /// The write buffer went over its high-water mark: stop writing.
    fn pause_writing(&mut self) {}

    /// The write buffer drained to its low-water mark: writing may go on.
    fn resume_writing(&mut self) {}
}

type SharedRead = Rc<RefCell<dyn ReadPipeProtocol>>;
type SharedWrite = Rc<RefCell<dyn WritePipeProtocol>>;

/// What the loop's registry needs of a pipe transport.
pub(crate) trait PipeEnd {
    /// Closes the descriptor and drops the protocol, leaving the registry.
    fn release(&self, lp: &EventLoop);
    /// The same without the loop (it is being dropped).
    fn forget(&self);
}

impl EventLoop {
    /// Wraps the read end of a pipe (or a FIFO, socket or character device) in a
    /// transport with a protocol from `factory` (asyncio's `loop.connect_read_pipe`). The
    /// descriptor is taken over, made non-blocking, and closed with the transport. Resolves
    /// once `connection_made` ran.
    ///
    /// Fails with [`Error::InvalidArgument`] for a regular file or directory (asyncio's
    /// "Pipe transport is for pipes/sockets only."), [`Error::Register`] if the poll
    /// refuses the fd, [`Error::Closed`] if the loop is closed.
    pub fn connect_read_pipe<P, F>(
        &self,
        factory: F,
        pipe: impl Into<OwnedFd>,
    ) -> impl std::future::Future<Output = Result<(ReadPipeTransport, Rc<RefCell<P>>)>> + 'static
    where
        P: ReadPipeProtocol + 'static,
        F: FnOnce() -> P + 'static,
    {
        let lp = self.clone();
        let pipe = pipe.into();
        async move {
            let file = adopt(pipe)?;
            let protocol = Rc::new(RefCell::new(factory()));
            let waiter = lp.create_future::<()>()?;
            let transport = start_read(&lp, file, protocol.clone(), waiter.clone())?;
            waiter.await?;
            Ok((transport, protocol))
        }
    }

    /// Wraps the write end of a pipe (or a FIFO, socket or character device) in a
    /// transport with a protocol from `factory` (asyncio's `loop.connect_write_pipe`), as
    /// [`connect_read_pipe`](Self::connect_read_pipe) does.
    ///
    /// Fails as `connect_read_pipe` does.
    pub fn connect_write_pipe<P, F>(
        &self,
        factory: F,
        pipe: impl Into<OwnedFd>,
    ) -> impl std::future::Future<Output = Result<(WritePipeTransport, Rc<RefCell<P>>)>> + 'static
    where
        P: WritePipeProtocol + 'static,
        F: FnOnce() -> P + 'static,
    {
        let lp = self.clone();
        let pipe = pipe.into();
        async move {
            let file = adopt(pipe)?;
            let protocol = Rc::new(RefCell::new(factory()));
            let waiter = lp.create_future::<()>()?;
            let transport = start_write(&lp, file, protocol.clone(), waiter.clone())?;
            waiter.await?;
            Ok((transport, protocol))
        }
    }
}

/// Checks the descriptor's kind and makes it non-blocking.
fn adopt(pipe: OwnedFd) -> Result<File> {
    use std::os::unix::fs::FileTypeExt;
    let file = File::from(pipe);
    let fd = file.as_raw_fd();
    let kind = file.metadata().map_err(Error::io("fstat"))?.file_type();
    if !(kind.is_fifo() || kind.is_socket() || kind.is_char_device()) {
        return Err(Error::InvalidArgument {
            what: "pipe",
            value: format!("fd {fd}: pipe transport is for pipes/sockets only"),
        });
    }
    set_nonblocking(fd)?;
    Ok(file)
}

fn set_nonblocking(fd: RawFd) -> Result<()> {
    // SAFETY: F_GETFL/F_SETFL on an open descriptor this module owns.
    let ok = unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        flags >= 0 && libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) >= 0
    };
    if !ok {
        return Err(Error::Io {
            op: "fcntl(O_NONBLOCK)",
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Registers `fd` for `interest`, with `on_ready` called on the inner if it still exists.
fn register<T: 'static>(
    lp: &EventLoop,
    fd: RawFd,
    interest: Interest,
    inner: &Rc<T>,
    on_ready: fn(&Rc<T>, &EventLoop, Readiness),
) -> Result<Token> {
    let weak = Rc::downgrade(inner);
    let dispatch: IoDispatch = Rc::new(move |lp: &EventLoop, readiness| {
        if let Some(inner) = weak.upgrade() {
            on_ready(&inner, lp, readiness);
        }
    });
    lp.register_source(&mut SourceFd(&fd), interest, dispatch)
        .map_err(|source| Error::Register { fd, source })
}

/// A callback cell running `method` on the inner, if it and its loop still exist.
fn cell<T: HasLoop + 'static>(weak: Weak<T>, method: fn(&Rc<T>, &EventLoop)) -> Rc<dyn Runnable> {
    RepeatingCell::new_rc(move || {
        let Some(inner) = weak.upgrade() else { return };
        let Some(lp) = inner.event_loop() else { return };
        method(&inner, &lp);
    })
}

trait HasLoop {
    fn event_loop(&self) -> Option<EventLoop>;
}

/// Closes the fd's registration and the fd.
fn close_fd(lp: Option<&EventLoop>, file: Option<File>, token: Option<Token>) {
    if let (Some(lp), Some(file), Some(token)) = (lp, &file, token) {
        if let Err(err) = lp.deregister_source(&mut SourceFd(&file.as_raw_fd()), token) {
            tracing::debug!(target: "loopd", "deregistering pipe fd: {err}");
        }
    }
    drop(file);
}

fn report_panic(lp: &EventLoop, method: &'static str, error: &PanicError) {
    lp.call_exception_handler(ExceptionContext {
        message: format!("fatal error: protocol.{method}() call failed"),
        error: Some(Arc::new(error.clone())),
        ..Default::default()
    });
}

// ---- the read end -------------------------------------------------------------------

/// asyncio's read pipe transport: pause and resume reading, close.
///
/// A cheap handle to a transport owned by its loop; every method is for the loop's thread.
#[derive(Clone)]
pub struct ReadPipeTransport {
    inner: Rc<ReadInner>,
}

struct ReadInner {
    id: u64,
    core: Weak<Core>,
    fd: RawFd,
    file: RefCell<Option<File>>,
    token: Cell<Option<Token>>,
    state: RefCell<ReadState>,
    protocol: RefCell<Option<SharedRead>>,
    read_cell: RefCell<Option<Rc<dyn Runnable>>>,
    calls: ProtocolCalls<dyn ReadPipeProtocol>,
}

#[derive(Default)]
struct ReadState {
    started: bool,
    paused: bool,
    closing: bool,
    lost: bool,
    queued: bool,
}

impl ReadState {
    fn wants_read(&self) -> bool {
        self.started && !self.paused && !self.closing && !self.lost
    }
}

fn start_read(
    lp: &EventLoop,
    file: File,
    protocol: SharedRead,
    waiter: Future<()>,
) -> Result<ReadPipeTransport> {
    lp.check_open()?;
    let fd = file.as_raw_fd();
    let inner = Rc::new_cyclic(|weak: &Weak<ReadInner>| ReadInner {
        id: lp.core.net.next_id(),
        core: Rc::downgrade(&lp.core),
        fd,
        file: RefCell::new(Some(file)),
        token: Cell::new(None),
        state: RefCell::new(ReadState::default()),
        protocol: RefCell::new(Some(protocol)),
        read_cell: RefCell::new(Some(cell(weak.clone(), ReadInner::read_ready))),
        calls: ProtocolCalls::default(),
    });
    let token = register(lp, fd, Interest::READABLE, &inner, ReadInner::on_ready)?;
    inner.token.set(Some(token));
    lp.core
        .net
        .pipes
        .borrow_mut()
        .insert(inner.id, inner.clone());
    let transport = ReadPipeTransport { inner };
    let made = transport.clone();
    lp.call_soon(move || made.inner.connection_made(made.clone(), waiter))?;
    Ok(transport)
}

impl ReadPipeTransport {
    /// Stops reading until [`resume_reading`](Self::resume_reading).
    pub fn pause_reading(&self) {
        self.inner.state.borrow_mut().paused = true;
    }

    /// Resumes reading after [`pause_reading`](Self::pause_reading).
    pub fn resume_reading(&self) {
        let Some(lp) = self.inner.event_loop() else {
            return;
        };
        if std::mem::replace(&mut self.inner.state.borrow_mut().paused, false) {
            self.inner.queue_read(&lp);
        }
    }

    /// Whether the transport is reading: not paused, not closing.
    pub fn is_reading(&self) -> bool {
        let state = self.inner.state.borrow();
        !state.paused && !state.closing && !state.lost
    }

    /// Closes the transport: reading stops, `connection_lost(None)` follows. Idempotent.
    pub fn close(&self) {
        self.inner.close(None);
    }

    /// Whether the transport is closing or closed.
    pub fn is_closing(&self) -> bool {
        let state = self.inner.state.borrow();
        state.closing || state.lost
    }

    /// `"pipe"` gives the fd while the transport is open; other names give `None`.
    pub fn get_extra_info(&self, name: &str) -> Option<ExtraInfo> {
        pipe_info(name, &self.inner.file)
    }

    /// The protocol receiving the events; `None` once the pipe is closed.
    pub fn get_protocol(&self) -> Option<Rc<RefCell<dyn ReadPipeProtocol>>> {
        self.inner.protocol.borrow().clone()
    }
}

fn pipe_info(name: &str, file: &RefCell<Option<File>>) -> Option<ExtraInfo> {
    match name {
        "pipe" => file
            .borrow()
            .as_ref()
            .map(|f| ExtraInfo::Pipe(f.as_raw_fd())),
        _ => None,
    }
}

impl std::fmt::Debug for ReadPipeTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadPipeTransport")
            .field("fd", &self.inner.fd)
            .field("closing", &self.is_closing())
            .finish()
    }
}

impl HasLoop for ReadInner {
    fn event_loop(&self) -> Option<EventLoop> {
        self.core.upgrade().map(|core| EventLoop { core })
    }
}

impl ReadInner {
    fn connection_made(self: &Rc<Self>, transport: ReadPipeTransport, waiter: Future<()>) {
        let Some(lp) = self.event_loop() else { return };
        self.state.borrow_mut().started = true;
        self.call(&lp, "connection_made", move |p| {
            p.connection_made(transport)
        });
        self.queue_read(&lp);
        if !waiter.done() {
            let _ = waiter.set_result(());
        }
    }

    fn on_ready(self: &Rc<Self>, lp: &EventLoop, readiness: Readiness) {
        if readiness.readable || readiness.read_closed || readiness.error {
            self.queue_read(lp);
        }
    }

    fn queue_read(&self, lp: &EventLoop) {
        {
            let mut state = self.state.borrow_mut();
            if state.queued || !state.wants_read() {
                return;
            }
            state.queued = true;
        }
        if let Some(cell) = self.read_cell.borrow().clone() {
            lp.push_ready(cell);
        }
    }

    /// Reads until `EAGAIN`, EOF, a pause, or [`READ_BUFFER_SIZE`] bytes.
    fn read_ready(self: &Rc<Self>, lp: &EventLoop) {
        self.state.borrow_mut().queued = false;
        let mut buffer = lp.core.net.take_read_buffer();
        let mut budget = READ_BUFFER_SIZE;
        while self.state.borrow().wants_read() {
            let read = match self.file.borrow().as_ref() {
                Some(mut file) => file.read(&mut buffer[..budget]),
                None => break,
            };
            match read {
                Ok(0) => {
                    self.eof(lp);
                    break;
                }
                Ok(n) => {
                    self.data_received(lp, &buffer[..n]);
                    budget -= n;
                    if budget == 0 {
                        self.queue_read(lp);
                        break;
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    tracing::debug!(target: "loopd", "fatal read error on pipe fd {}: {err}", self.fd);
                    self.close(Some(err));
                    break;
                }
            }
        }
        lp.core.net.put_read_buffer(buffer);
    }

    fn data_received(self: &Rc<Self>, lp: &EventLoop, data: &[u8]) {
        let protocol = self.protocol.borrow().clone();
        let Some(protocol) = protocol else { return };
        if self.calls.is_idle() {
            if let Ok(mut p) = protocol.try_borrow_mut() {
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    p.data_received(data)
                }));
                drop(p);
                if let Err(payload) = outcome {
                    self.panicked(lp, "data_received", PanicError::from_payload(&*payload));
                }
                return;
            }
        }
        let data = data.to_vec(); // the loop's read buffer is reused
        self.call(lp, "data_received", move |p| p.data_received(&data));
    }

    /// asyncio: EOF closes the read pipe, after `eof_received`.
    fn eof(self: &Rc<Self>, lp: &EventLoop) {
        self.call(lp, "eof_received", |p| p.eof_received());
        self.close(None);
    }

    fn close(self: &Rc<Self>, err: Option<io::Error>) {
        let Some(lp) = self.event_loop() else { return };
        {
            let mut state = self.state.borrow_mut();
            if state.lost {
                return;
            }
            state.closing = true;
            state.lost = true;
        }
        let this = self.clone();
        // On a closed loop this fails, and `close_loop` releases the pipe instead.
        let _ = lp.call_soon(move || this.connection_lost(err));
    }

    fn connection_lost(self: &Rc<Self>, err: Option<io::Error>) {
        let Some(lp) = self.event_loop() else { return };
        self.call(&lp, "connection_lost", move |p| p.connection_lost(err));
        self.release(&lp);
    }

    fn call(
        self: &Rc<Self>,
        lp: &EventLoop,
        method: &'static str,
        f: impl FnOnce(&mut (dyn ReadPipeProtocol + 'static)) + 'static,
    ) {
        let protocol = self.protocol.borrow().clone();
        if let Some(protocol) = protocol {
            calls::call_on(self, lp, protocol, method, Box::new(f));
        }
    }
}

impl PipeEnd for ReadInner {
    fn release(&self, lp: &EventLoop) {
        close_fd(Some(lp), self.file.borrow_mut().take(), self.token.take());
        let entry = lp.core.net.pipes.borrow_mut().remove(&self.id);
        self.forget();
        drop(entry);
    }

    fn forget(&self) {
        let file = self.file.borrow_mut().take();
        let cell = self.read_cell.borrow_mut().take();
        if let Some(cell) = &cell {
            cancel_cell(cell);
        }
        let protocol = self.protocol.borrow_mut().take();
        self.calls.clear();
        {
            let mut state = self.state.borrow_mut();
            state.closing = true;
            state.lost = true;
        }
        drop((file, cell, protocol));
    }
}

impl CallsOwner<dyn ReadPipeProtocol> for ReadInner {
    fn calls(&self) -> &ProtocolCalls<dyn ReadPipeProtocol> {
        &self.calls
    }

    fn panicked(self: &Rc<Self>, lp: &EventLoop, method: &'static str, error: PanicError) {
        report_panic(lp, method, &error);
        if method != "connection_lost" {
            self.close(Some(io::Error::other(error)));
        }
    }
}

// ---- the write end ------------------------------------------------------------------

/// asyncio's write pipe transport: write with flow control, close, abort.
///
/// A cheap handle to a transport owned by its loop; every method is for the loop's thread.
#[derive(Clone)]
pub struct WritePipeTransport {
    inner: Rc<WriteInner>,
}

struct WriteInner {
    id: u64,
    core: Weak<Core>,
    fd: RawFd,
    file: RefCell<Option<File>>,
    token: Cell<Option<Token>>,
    state: RefCell<WriteState>,
    protocol: RefCell<Option<SharedWrite>>,
    write_cell: RefCell<Option<Rc<dyn Runnable>>>,
    calls: ProtocolCalls<dyn WritePipeProtocol>,
}

struct WriteState {
    buffer: Vec<u8>,
    head: usize,
    high: usize,
    low: usize,
    protocol_paused: bool,
    closing: bool,
    lost: bool,
    queued: bool,
}

impl WriteState {
    fn pending(&self) -> usize {
        self.buffer.len() - self.head
    }
}

fn start_write(
    lp: &EventLoop,
    file: File,
    protocol: SharedWrite,
    waiter: Future<()>,
) -> Result<WritePipeTransport> {
    lp.check_open()?;
    let fd = file.as_raw_fd();
    let inner = Rc::new_cyclic(|weak: &Weak<WriteInner>| WriteInner {
        id: lp.core.net.next_id(),
        core: Rc::downgrade(&lp.core),
        fd,
        file: RefCell::new(Some(file)),
        token: Cell::new(None),
        state: RefCell::new(WriteState {
            buffer: Vec::new(),
            head: 0,
            high: DEFAULT_HIGH_WATER,
            low: DEFAULT_LOW_WATER,
            protocol_paused: false,
            closing: false,
            lost: false,
            queued: false,
        }),
        protocol: RefCell::new(Some(protocol)),
        write_cell: RefCell::new(Some(cell(weak.clone(), WriteInner::write_ready))),
        calls: ProtocolCalls::default(),
    });
    let token = register(lp, fd, Interest::WRITABLE, &inner, WriteInner::on_ready)?;
    inner.token.set(Some(token));
    lp.core
        .net
        .pipes
        .borrow_mut()
        .insert(inner.id, inner.clone());
    let transport = WritePipeTransport { inner };
    let made = transport.clone();
    lp.call_soon(move || {
        let inner = made.inner.clone();
        let Some(lp) = inner.event_loop() else { return };
        inner.call(&lp, "connection_made", move |p| p.connection_made(made));
        if !waiter.done() {
            let _ = waiter.set_result(());
        }
    })?;
    Ok(transport)
}

impl WritePipeTransport {
    /// Writes `data`: at once if nothing is buffered and the pipe takes it, else buffered
    /// and written as the pipe drains. An I/O error closes the transport and reaches
    /// `connection_lost`; `write` itself still returns `Ok`.
    ///
    /// Fails with [`Error::TransportClosing`] once `close`, `write_eof` or `abort` was
    /// called or the pipe was lost (asyncio drops such data and logs a warning).
    pub fn write(&self, data: &[u8]) -> Result<()> {
        self.inner.write(data)
    }

    /// Closes the pipe once the buffer is flushed (asyncio's `write_eof`: a pipe has no
    /// half-close). Idempotent.
    pub fn write_eof(&self) {
        self.inner.write_eof();
    }

    /// Always `true`.
    pub fn can_write_eof(&self) -> bool {
        true
    }

    /// Closes the pipe once the buffer is flushed, as [`write_eof`](Self::write_eof).
    pub fn close(&self) {
        self.inner.write_eof();
    }

    /// Closes at once, dropping buffered data; `connection_lost(None)` follows.
    pub fn abort(&self) {
        self.inner.force_close(None);
    }

    /// Whether the transport is closing or closed.
    pub fn is_closing(&self) -> bool {
        let state = self.inner.state.borrow();
        state.closing || state.lost
    }

    /// Bytes waiting in the write buffer.
    pub fn get_write_buffer_size(&self) -> usize {
        self.inner.state.borrow().pending()
    }

    /// Sets the flow-control marks, as [`Transport::set_write_buffer_limits`].
    ///
    /// Fails with [`Error::InvalidArgument`] if `high < low`.
    ///
    /// [`Transport::set_write_buffer_limits`]: crate::Transport::set_write_buffer_limits
    pub fn set_write_buffer_limits(&self, high: Option<usize>, low: Option<usize>) -> Result<()> {
        let (high, low) = write_buffer_limits(high, low)?;
        {
            let mut state = self.inner.state.borrow_mut();
            state.high = high;
            state.low = low;
        }
        if let Some(lp) = self.inner.event_loop() {
            self.inner.maybe_pause_protocol(&lp);
        }
        Ok(())
    }

    /// The write buffer's `(low, high)` marks.
    pub fn get_write_buffer_limits(&self) -> (usize, usize) {
        let state = self.inner.state.borrow();
        (state.low, state.high)
    }

    /// `"pipe"` gives the fd while the transport is open; other names give `None`.
    pub fn get_extra_info(&self, name: &str) -> Option<ExtraInfo> {
        pipe_info(name, &self.inner.file)
    }

    /// The protocol receiving the events; `None` once the pipe is closed.
    pub fn get_protocol(&self) -> Option<Rc<RefCell<dyn WritePipeProtocol>>> {
        self.inner.protocol.borrow().clone()
    }
}

impl std::fmt::Debug for WritePipeTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WritePipeTransport")
            .field("fd", &self.inner.fd)
            .field("closing", &self.is_closing())
            .field("write_buffer", &self.get_write_buffer_size())
            .finish()
    }
}

impl HasLoop for WriteInner {
    fn event_loop(&self) -> Option<EventLoop> {
        self.core.upgrade().map(|core| EventLoop { core })
    }
}

impl WriteInner {
    fn on_ready(self: &Rc<Self>, lp: &EventLoop, readiness: Readiness) {
        if readiness.error || readiness.write_closed {
            // The reader went away (asyncio watches the write end for reading to see it).
            let buffered = self.state.borrow().pending() > 0;
            let err = buffered.then(|| io::Error::from(io::ErrorKind::BrokenPipe));
            return self.force_close(err);
        }
        if readiness.writable {
            self.queue_write(lp);
        }
    }

    fn queue_write(&self, lp: &EventLoop) {
        {
            let mut state = self.state.borrow_mut();
            if state.queued || state.pending() == 0 || state.lost {
                return;
            }
            state.queued = true;
        }
        if let Some(cell) = self.write_cell.borrow().clone() {
            lp.push_ready(cell);
        }
    }

    fn write(self: &Rc<Self>, data: &[u8]) -> Result<()> {
        {
            let state = self.state.borrow();
            if state.closing || state.lost {
                return Err(Error::TransportClosing);
            }
        }
        if data.is_empty() {
            return Ok(());
        }
        let lp = self.event_loop().ok_or(Error::Closed)?;
        let mut rest = data;
        if self.state.borrow().pending() == 0 {
            match self.send(rest) {
                Ok(n) => rest = &rest[n..],
                Err(err) => {
                    self.fatal_error(err);
                    return Ok(());
                }
            }
        }
        if !rest.is_empty() {
            self.state.borrow_mut().buffer.extend_from_slice(rest);
            self.maybe_pause_protocol(&lp);
        }
        Ok(())
    }

    /// Writes as much of `data` as the pipe takes; stops at `EAGAIN`.
    fn send(&self, data: &[u8]) -> io::Result<usize> {
        let file = self.file.borrow();
        let Some(mut file) = file.as_ref() else {
            return Err(io::ErrorKind::BrokenPipe.into());
        };
        let mut sent = 0;
        while sent < data.len() {
            match file.write(&data[sent..]) {
                Ok(n) => sent += n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        Ok(sent)
    }

    fn write_ready(self: &Rc<Self>, lp: &EventLoop) {
        let sent = {
            let mut state = self.state.borrow_mut();
            state.queued = false;
            if state.pending() == 0 || state.lost {
                return;
            }
            self.send(&state.buffer[state.head..])
        };
        match sent {
            Ok(n) => {
                let mut state = self.state.borrow_mut();
                state.head += n;
                if state.head == state.buffer.len() {
                    state.buffer.clear();
                    state.head = 0;
                }
            }
            Err(err) => return self.fatal_error(err),
        }
        self.maybe_resume_protocol(lp);
        let (flushed, closing) = {
            let state = self.state.borrow();
            (state.pending() == 0, state.closing)
        };
        if flushed && closing {
            self.schedule_connection_lost(lp, None);
        }
    }

    fn maybe_pause_protocol(self: &Rc<Self>, lp: &EventLoop) {
        {
            let mut state = self.state.borrow_mut();
            if state.protocol_paused || state.pending() <= state.high {
                return;
            }
            state.protocol_paused = true;
        }
        self.call(lp, "pause_writing", |p| p.pause_writing());
    }

    fn maybe_resume_protocol(self: &Rc<Self>, lp: &EventLoop) {
        {
            let mut state = self.state.borrow_mut();
            if !state.protocol_paused || state.pending() > state.low {
                return;
            }
            state.protocol_paused = false;
        }
        self.call(lp, "resume_writing", |p| p.resume_writing());
    }

    fn write_eof(self: &Rc<Self>) {
        let Some(lp) = self.event_loop() else { return };
        let flushed = {
            let mut state = self.state.borrow_mut();
            if state.closing || state.lost {
                return;
            }
            state.closing = true;
            state.pending() == 0
        };
        if flushed {
            self.schedule_connection_lost(&lp, None);
        }
    }

    fn fatal_error(self: &Rc<Self>, err: io::Error) {
        tracing::debug!(target: "loopd", "fatal write error on pipe fd {}: {err}", self.fd);
        self.force_close(Some(err));
    }

    /// Drops buffered data and schedules `connection_lost` (asyncio's `_close`).
    fn force_close(self: &Rc<Self>, err: Option<io::Error>) {
        let Some(lp) = self.event_loop() else { return };
        {
            let mut state = self.state.borrow_mut();
            state.buffer = Vec::new();
            state.head = 0;
            state.closing = true;
        }
        self.schedule_connection_lost(&lp, err);
    }

    fn schedule_connection_lost(self: &Rc<Self>, lp: &EventLoop, err: Option<io::Error>) {
        if std::mem::replace(&mut self.state.borrow_mut().lost, true) {
            return;
        }
        let this = self.clone();
        // On a closed loop this fails, and `close_loop` releases the pipe instead.
        let _ = lp.call_soon(move || {
            if let Some(lp) = this.event_loop() {
                this.call(&lp, "connection_lost", move |p| p.connection_lost(err));
                this.release(&lp);
            }
        });
    }

    fn call(
        self: &Rc<Self>,
        lp: &EventLoop,
        method: &'static str,
        f: impl FnOnce(&mut (dyn WritePipeProtocol + 'static)) + 'static,
    ) {
        let protocol = self.protocol.borrow().clone();
        if let Some(protocol) = protocol {
            calls::call_on(self, lp, protocol, method, Box::new(f));
        }
    }
}

impl PipeEnd for WriteInner {
    fn release(&self, lp: &EventLoop) {
        close_fd(Some(lp), self.file.borrow_mut().take(), self.token.take());
        let entry = lp.core.net.pipes.borrow_mut().remove(&self.id);
        self.forget();
        drop(entry);
    }

    fn forget(&self) {
        let file = self.file.borrow_mut().take();
        let cell = self.write_cell.borrow_mut().take();
        if let Some(cell) = &cell {
            cancel_cell(cell);
        }
        let protocol = self.protocol.borrow_mut().take();
        self.calls.clear();
        {
            let mut state = self.state.borrow_mut();
            state.closing = true;
            state.lost = true;
            state.buffer = Vec::new();
            state.head = 0;
        }
        drop((file, cell, protocol));
    }
}

impl CallsOwner<dyn WritePipeProtocol> for WriteInner {
    fn calls(&self) -> &ProtocolCalls<dyn WritePipeProtocol> {
        &self.calls
    }

    fn panicked(self: &Rc<Self>, lp: &EventLoop, method: &'static str, error: PanicError) {
        report_panic(lp, method, &error);
        if method != "connection_lost" {
            self.force_close(Some(io::Error::other(error)));
        }
    }
}
