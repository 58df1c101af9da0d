//! [`ReadPipeTransport`]: the read end of a pipe or FIFO, as asyncio's
//! `_UnixReadPipeTransport` (see `net::pipes` for the invariants).

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::rc::{Rc, Weak};

use mio::{Interest, Token};

use crate::error::Result;
use crate::event_loop::{Core, EventLoop, Readiness};
use crate::exception::PanicError;
use crate::future::Future;
use crate::handle::{Runnable, cancel_cell};
use crate::net::calls::{self, CallsOwner, ProtocolCalls};
use crate::net::pipes::{
    HasLoop, PipeEnd, ReadPipeProtocol, SharedRead, cell, close_fd, pipe_info, register,
    report_panic,
};
use crate::net::{ExtraInfo, READ_BUFFER_SIZE};

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

pub(crate) fn start_read(
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
