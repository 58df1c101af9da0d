//! [`WritePipeTransport`]: the write end of a pipe or FIFO, as asyncio's
//! `_UnixWritePipeTransport` (see `net::pipes` for the invariants).

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::rc::{Rc, Weak};

use mio::{Interest, Token};

use crate::error::{Error, Result};
use crate::event_loop::{Core, EventLoop, Readiness};
use crate::exception::PanicError;
use crate::future::Future;
use crate::handle::{Runnable, cancel_cell};
use crate::net::calls::{self, CallsOwner, ProtocolCalls};
use crate::net::pipes::{
    HasLoop, PipeEnd, SharedWrite, WritePipeProtocol, cell, close_fd, pipe_info, register,
    report_panic,
};
use crate::net::transport::write_buffer_limits;
use crate::net::{DEFAULT_HIGH_WATER, DEFAULT_LOW_WATER, ExtraInfo};

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

pub(crate) fn start_write(
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
