//! [`DatagramTransport`]: the loop's handle to one datagram socket (UDP or Unix), as
//! asyncio's `_SelectorDatagramTransport`.
//!
//! # Invariants
//! - The socket is registered once, for reading and writing, edge-triggered. A readable
//!   edge queues the read cell, which receives datagrams until `EAGAIN`, or until it has
//!   taken [`READ_BUFFER_SIZE`] bytes or [`MAX_DATAGRAMS_PER_READ`] datagrams (then it
//!   queues itself again, for fairness). Datagrams are received into the loop's one read
//!   buffer; `datagram_received` borrows it.
//! - Datagrams leave in order: `sendto` sends at once only when nothing is buffered; a
//!   datagram the socket refuses with `EAGAIN` is buffered whole, and the buffer is
//!   flushed on writable edges. Buffered size counts each datagram plus 8 bytes of header
//!   (asyncio's `_header_size`), so empty datagrams count too.
//! - An OS error on a send or a receive goes to `error_received` and the endpoint stays
//!   open, as asyncio (e.g. `ECONNREFUSED` on a connected UDP socket after an ICMP
//!   port-unreachable).
//! - `connection_lost` runs exactly once: after `close()` once the buffer is flushed, or
//!   after `abort()`. Then the socket is closed and the protocol dropped.
//! - Protocol methods run from the ready queue, and a busy protocol gets its calls later,
//!   in order (see `net::calls`).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::{Rc, Weak};
use std::sync::Arc;

use mio::unix::SourceFd;
use mio::{Interest, Token};
use socket2::{SockAddr, Socket};

use crate::error::{Error, Result};
use crate::event_loop::{Core, EventLoop, IoDispatch, Readiness};
use crate::exception::{ExceptionContext, PanicError};
use crate::future::Future;
use crate::handle::{RepeatingCell, Runnable, cancel_cell};
use crate::net::calls::{self, CallsOwner, ProtocolCalls};
use crate::net::datagram::{DatagramProtocol, SharedDatagramProtocol};
use crate::net::{Address, DEFAULT_HIGH_WATER, DEFAULT_LOW_WATER, ExtraInfo, READ_BUFFER_SIZE};

/// The most datagrams one read callback takes before it lets other callbacks run.
pub const MAX_DATAGRAMS_PER_READ: usize = 256;

/// What each buffered datagram adds to the write buffer size besides its bytes (asyncio's
/// `_header_size`).
const HEADER_SIZE: usize = 8;

/// asyncio's datagram transport: send datagrams, close the endpoint.
///
/// A cheap handle (`Rc`) to an endpoint owned by its loop; clones share it. Every method
/// is for the loop's thread. Once the endpoint is closed the handle stays valid:
/// [`is_closing`](Self::is_closing) is `true` and `sendto` fails.
#[derive(Clone)]
pub struct DatagramTransport {
    pub(crate) inner: Rc<DatagramInner>,
}

pub(crate) struct DatagramInner {
    id: u64,
    core: Weak<Core>,
    fd: RawFd,
    socket: RefCell<Option<Socket>>,
    token: Cell<Option<Token>>,
    state: RefCell<State>,
    protocol: RefCell<Option<SharedDatagramProtocol>>,
    read_cell: RefCell<Option<Rc<dyn Runnable>>>,
    write_cell: RefCell<Option<Rc<dyn Runnable>>>,
    sockname: Option<Address>,
    peername: Option<Address>,
    /// Where `sendto(data, None)` goes: the peer, or the broadcast `remote_addr`.
    address: Option<Address>,
    calls: ProtocolCalls<dyn DatagramProtocol>,
}

struct State {
    /// Datagrams the socket refused for now, each with its destination (`None` when the
    /// socket is connected).
    buffer: VecDeque<(Vec<u8>, Option<SockAddr>)>,
    buffer_size: usize,
    high: usize,
    low: usize,
    protocol_paused: bool,
    started: bool,
    closing: bool,
    lost: bool,
    read_queued: bool,
    write_queued: bool,
}

impl State {
    fn wants_read(&self) -> bool {
        self.started && !self.closing && !self.lost
    }
}

/// Starts a transport on a non-blocking datagram `socket`: registers it, schedules
/// `connection_made`, the first read, then `waiter`'s result.
pub(crate) fn start(
    lp: &EventLoop,
    socket: Socket,
    protocol: SharedDatagramProtocol,
    address: Option<Address>,
    waiter: Future<()>,
) -> Result<DatagramTransport> {
    lp.check_open()?;
    let sockname = socket.local_addr().ok().map(|a| Address::of(&a));
    let peername = socket.peer_addr().ok().map(|a| Address::of(&a));
    let fd = socket.as_raw_fd();
    let inner = Rc::new_cyclic(|weak: &Weak<DatagramInner>| DatagramInner {
        id: lp.core.net.next_id(),
        core: Rc::downgrade(&lp.core),
        fd,
        socket: RefCell::new(Some(socket)),
        token: Cell::new(None),
        state: RefCell::new(State {
            buffer: VecDeque::new(),
            buffer_size: 0,
            high: DEFAULT_HIGH_WATER,
            low: DEFAULT_LOW_WATER,
            protocol_paused: false,
            started: false,
            closing: false,
            lost: false,
            read_queued: false,
            write_queued: false,
        }),
        protocol: RefCell::new(Some(protocol)),
        read_cell: RefCell::new(Some(cell(weak.clone(), DatagramInner::read_ready))),
        write_cell: RefCell::new(Some(cell(weak.clone(), DatagramInner::write_ready))),
        sockname,
        address: peername.clone().or(address),
        peername,
        calls: ProtocolCalls::default(),
    });
    let weak = Rc::downgrade(&inner);
    let dispatch: IoDispatch = Rc::new(move |lp: &EventLoop, readiness| {
        if let Some(inner) = weak.upgrade() {
            inner.on_ready(lp, readiness);
        }
    });
    let interest = Interest::READABLE | Interest::WRITABLE;
    let token = lp
        .register_source(&mut SourceFd(&fd), interest, dispatch)
        .map_err(|source| Error::Register { fd, source })?;
    inner.token.set(Some(token));
    lp.core
        .net
        .datagrams
        .borrow_mut()
        .insert(inner.id, inner.clone());
    let transport = DatagramTransport { inner };
    let made = transport.clone();
    lp.call_soon(move || made.inner.connection_made(made.clone(), waiter))?;
    Ok(transport)
}

fn cell(weak: Weak<DatagramInner>, method: fn(&Rc<DatagramInner>, &EventLoop)) -> Rc<dyn Runnable> {
    RepeatingCell::new_rc(move || {
        let (Some(inner), Some(lp)) = (weak.upgrade(), inner_loop(&weak)) else {
            return;
        };
        method(&inner, &lp);
    })
}

fn inner_loop(weak: &Weak<DatagramInner>) -> Option<EventLoop> {
    weak.upgrade().and_then(|inner| inner.event_loop())
}

impl DatagramTransport {
    /// Sends `data` as one datagram to `addr` (asyncio's `sendto`): at once if nothing is
    /// buffered and the socket takes it, else buffered and sent as the socket drains. With
    /// a `remote_addr`, `addr` must be `None` or that address. An OS error from the send
    /// goes to the protocol's `error_received`; `sendto` itself still returns `Ok`.
    ///
    /// Fails with [`Error::InvalidSendtoAddress`] for another address than the remote one,
    /// or for `None` on an endpoint without a remote address; with
    /// [`Error::TransportClosing`] once [`close`](Self::close) or [`abort`](Self::abort)
    /// was called (asyncio drops such data and logs a warning after a few sends).
    pub fn sendto(&self, data: &[u8], addr: Option<Address>) -> Result<()> {
        self.inner.sendto(data, addr)
    }

    /// Closes the endpoint: receiving stops now; buffered datagrams are still sent, then
    /// the protocol's `connection_lost(None)` is called and the socket closed. Idempotent.
    pub fn close(&self) {
        self.inner.close();
    }

    /// Closes at once, dropping buffered datagrams; `connection_lost(None)` follows.
    pub fn abort(&self) {
        self.inner.force_close(None);
    }

    /// Whether the endpoint is closing or closed.
    pub fn is_closing(&self) -> bool {
        let state = self.inner.state.borrow();
        state.closing || state.lost
    }

    /// Bytes waiting in the write buffer, plus 8 per datagram (asyncio's count).
    pub fn get_write_buffer_size(&self) -> usize {
        self.inner.state.borrow().buffer_size
    }

    /// Sets the write buffer's flow-control marks, as the stream transport's
    /// [`set_write_buffer_limits`](crate::Transport::set_write_buffer_limits).
    ///
    /// Fails with [`Error::InvalidArgument`] if `high < low`.
    pub fn set_write_buffer_limits(&self, high: Option<usize>, low: Option<usize>) -> Result<()> {
        let (high, low) = crate::net::transport::write_buffer_limits(high, low)?;
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

    /// asyncio's `get_extra_info`: `"peername"` (connected endpoints only), `"sockname"`,
    /// and `"socket"` (the fd, while open); any other name gives `None`.
    pub fn get_extra_info(&self, name: &str) -> Option<ExtraInfo> {
        match name {
            "peername" => self.peername().map(ExtraInfo::Address),
            "sockname" => self.sockname().map(ExtraInfo::Address),
            "socket" => self
                .inner
                .socket
                .borrow()
                .as_ref()
                .map(|s| ExtraInfo::Socket(s.as_raw_fd())),
            _ => None,
        }
    }

    /// The protocol receiving this endpoint's events; `None` once it is closed.
    pub fn get_protocol(&self) -> Option<Rc<RefCell<dyn DatagramProtocol>>> {
        self.inner.protocol.borrow().clone()
    }

    /// The connected peer's address (`get_extra_info("peername")`).
    pub fn peername(&self) -> Option<Address> {
        self.inner.peername.clone()
    }

    /// The local address (`get_extra_info("sockname")`).
    pub fn sockname(&self) -> Option<Address> {
        self.inner.sockname.clone()
    }
}

impl fmt::Debug for DatagramTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatagramTransport")
            .field("fd", &self.inner.fd)
            .field("sockname", &self.inner.sockname)
            .field("peername", &self.inner.peername)
            .field("closing", &self.is_closing())
            .finish()
    }
}

/// `addr` as a socket address to send to.
fn sockaddr_of(addr: &Address) -> Result<SockAddr> {
    let invalid = || Error::InvalidSendtoAddress {
        addr: addr.to_string(),
        expected: "a named address".to_string(),
    };
    match addr {
        Address::Inet(inet) => Ok(SockAddr::from(*inet)),
        Address::Unix(Some(path)) => SockAddr::unix(path).map_err(|_| invalid()),
        Address::Unix(None) => Err(invalid()),
    }
}

impl DatagramInner {
    fn event_loop(&self) -> Option<EventLoop> {
        self.core.upgrade().map(|core| EventLoop { core })
    }

    fn connection_made(self: &Rc<Self>, transport: DatagramTransport, waiter: Future<()>) {
        let Some(lp) = self.event_loop() else { return };
        self.state.borrow_mut().started = true;
        self.call_protocol(&lp, "connection_made", move |p| {
            p.connection_made(transport)
        });
        self.queue_read(&lp);
        if !waiter.done() {
            let _ = waiter.set_result(());
        }
    }

    fn on_ready(self: &Rc<Self>, lp: &EventLoop, readiness: Readiness) {
        if readiness.readable || readiness.error {
            self.queue_read(lp);
        }
        if readiness.writable || readiness.error {
            self.queue_write(lp);
        }
    }

    fn queue_read(&self, lp: &EventLoop) {
        {
            let mut state = self.state.borrow_mut();
            if state.read_queued || !state.wants_read() {
                return;
            }
            state.read_queued = true;
        }
        if let Some(cell) = self.read_cell.borrow().clone() {
            lp.push_ready(cell);
        }
    }

    fn queue_write(&self, lp: &EventLoop) {
        {
            let mut state = self.state.borrow_mut();
            if state.write_queued || state.buffer.is_empty() || state.lost {
                return;
            }
            state.write_queued = true;
        }
        if let Some(cell) = self.write_cell.borrow().clone() {
            lp.push_ready(cell);
        }
    }

    // ---- receiving ----------------------------------------------------------------

    /// Receives until `EAGAIN` or the per-callback budget (then queues itself again).
    fn read_ready(self: &Rc<Self>, lp: &EventLoop) {
        self.state.borrow_mut().read_queued = false;
        let mut buffer = lp.core.net.take_read_buffer();
        let (mut bytes, mut count) = (0, 0);
        while self.state.borrow().wants_read() {
            if bytes >= READ_BUFFER_SIZE || count >= MAX_DATAGRAMS_PER_READ {
                self.queue_read(lp);
                break;
            }
            count += 1;
            match self.recv_from(&mut buffer) {
                Ok((n, from)) => {
                    bytes += n;
                    crate::metrics::bump(&lp.core.net.counters.datagrams_received, 1);
                    self.datagram_received(lp, &buffer[..n], Address::of(&from));
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => self.error_received(lp, err),
            }
        }
        lp.core.net.put_read_buffer(buffer);
    }

    fn recv_from(&self, buffer: &mut [u8]) -> io::Result<(usize, SockAddr)> {
        let socket = self.socket.borrow();
        let Some(socket) = socket.as_ref() else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        // SAFETY: `[u8]` and `[MaybeUninit<u8>]` have the same layout, and recv_from only
        // writes initialised bytes into the (already initialised) buffer.
        let uninit = unsafe { &mut *(buffer as *mut [u8] as *mut [MaybeUninit<u8>]) };
        socket.recv_from(uninit)
    }

    fn datagram_received(self: &Rc<Self>, lp: &EventLoop, data: &[u8], from: Address) {
        let protocol = self.protocol.borrow().clone();
        let Some(protocol) = protocol else {
            return;
        };
        if self.calls.is_idle() {
            if let Ok(mut p) = protocol.try_borrow_mut() {
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    p.datagram_received(data, from)
                }));
                drop(p);
                if let Err(payload) = outcome {
                    self.panicked(lp, "datagram_received", PanicError::from_payload(&*payload));
                }
                return;
            }
        }
        // The protocol is busy: keep a copy, since the loop's read buffer is reused.
        let data = data.to_vec();
        self.call_protocol(lp, "datagram_received", move |p| {
            p.datagram_received(&data, from)
        });
    }

    fn error_received(self: &Rc<Self>, lp: &EventLoop, err: io::Error) {
        tracing::debug!(target: "loopd", "datagram endpoint fd {}: {err}", self.fd);
        self.call_protocol(lp, "error_received", move |p| p.error_received(err));
    }

    // ---- sending ------------------------------------------------------------------

    fn sendto(self: &Rc<Self>, data: &[u8], addr: Option<Address>) -> Result<()> {
        let target = self.destination(addr)?;
        {
            let state = self.state.borrow();
            if state.closing || state.lost {
                return Err(Error::TransportClosing);
            }
        }
        let lp = self.event_loop().ok_or(Error::Closed)?;
        let dest = match (&self.peername, &target) {
            (Some(_), _) => None, // connected: send(), as asyncio
            (None, target) => Some(sockaddr_of(target)?),
        };
        if self.state.borrow().buffer.is_empty() {
            match self.send_one(data, dest.as_ref()) {
                Ok(()) => {
                    crate::metrics::bump(&lp.core.net.counters.datagrams_sent, 1);
                    return Ok(());
                }
                Err(err) if is_retry(&err) => {}
                Err(err) => {
                    self.error_received(&lp, err);
                    return Ok(());
                }
            }
        }
        {
            let mut state = self.state.borrow_mut();
            state.buffer.push_back((data.to_vec(), dest));
            state.buffer_size += data.len() + HEADER_SIZE;
        }
        self.maybe_pause_protocol(&lp);
        Ok(())
    }

    /// Where a datagram for `addr` goes: asyncio's check against the endpoint's address.
    fn destination(&self, addr: Option<Address>) -> Result<Address> {
        match (&self.address, addr) {
            (Some(own), Some(given)) if given != *own => Err(Error::InvalidSendtoAddress {
                addr: given.to_string(),
                expected: format!("none or {own}"),
            }),
            (Some(own), _) => Ok(own.clone()),
            (None, Some(given)) => Ok(given),
            (None, None) => Err(Error::InvalidSendtoAddress {
                addr: "none".to_string(),
                expected: "an address: the endpoint has no remote address".to_string(),
            }),
        }
    }

    fn send_one(&self, data: &[u8], dest: Option<&SockAddr>) -> io::Result<()> {
        let socket = self.socket.borrow();
        let Some(socket) = socket.as_ref() else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        let flags = libc::MSG_NOSIGNAL;
        match dest {
            Some(dest) => socket.send_to_with_flags(data, dest, flags).map(drop),
            None => socket.send_with_flags(data, flags).map(drop),
        }
    }

    /// Sends the buffered datagrams in order until the socket refuses one (asyncio's
    /// `_sendto_ready`).
    fn write_ready(self: &Rc<Self>, lp: &EventLoop) {
        self.state.borrow_mut().write_queued = false;
        loop {
            let Some((data, dest)) = self.state.borrow_mut().buffer.pop_front() else {
                break;
            };
            match self.send_one(&data, dest.as_ref()) {
                Ok(()) => {
                    crate::metrics::bump(&lp.core.net.counters.datagrams_sent, 1);
                    self.state.borrow_mut().buffer_size -= data.len() + HEADER_SIZE;
                }
                Err(err) if is_retry(&err) => {
                    self.state.borrow_mut().buffer.push_front((data, dest));
                    break;
                }
                Err(err) => {
                    self.state.borrow_mut().buffer_size -= data.len() + HEADER_SIZE;
                    self.error_received(lp, err);
                    // Edge-triggered: no new edge comes for what is still buffered.
                    self.queue_write(lp);
                    break;
                }
            }
        }
        self.maybe_resume_protocol(lp);
        let (flushed, closing) = {
            let state = self.state.borrow();
            (state.buffer.is_empty(), state.closing)
        };
        if flushed && closing {
            self.schedule_connection_lost(lp, None);
        }
    }

    fn maybe_pause_protocol(self: &Rc<Self>, lp: &EventLoop) {
        {
            let mut state = self.state.borrow_mut();
            if state.protocol_paused || state.buffer_size <= state.high {
                return;
            }
            state.protocol_paused = true;
        }
        self.call_protocol(lp, "pause_writing", |p| p.pause_writing());
    }

    fn maybe_resume_protocol(self: &Rc<Self>, lp: &EventLoop) {
        {
            let mut state = self.state.borrow_mut();
            if !state.protocol_paused || state.buffer_size > state.low {
                return;
            }
            state.protocol_paused = false;
        }
        self.call_protocol(lp, "resume_writing", |p| p.resume_writing());
    }

    // ---- closing ------------------------------------------------------------------

    fn close(self: &Rc<Self>) {
        let Some(lp) = self.event_loop() else { return };
        let flushed = {
            let mut state = self.state.borrow_mut();
            if state.closing || state.lost {
                return;
            }
            state.closing = true;
            state.buffer.is_empty()
        };
        if flushed {
            self.schedule_connection_lost(&lp, None);
        }
    }

    fn force_close(self: &Rc<Self>, err: Option<io::Error>) {
        let Some(lp) = self.event_loop() else { return };
        {
            let mut state = self.state.borrow_mut();
            if state.lost {
                return;
            }
            state.buffer.clear();
            state.buffer_size = 0;
            state.closing = true;
        }
        self.schedule_connection_lost(&lp, err);
    }

    fn schedule_connection_lost(self: &Rc<Self>, lp: &EventLoop, err: Option<io::Error>) {
        if std::mem::replace(&mut self.state.borrow_mut().lost, true) {
            return;
        }
        let this = self.clone();
        // On a closed loop this fails, and `close_loop` releases the endpoint instead.
        let _ = lp.call_soon(move || this.connection_lost(err));
    }

    fn connection_lost(self: &Rc<Self>, err: Option<io::Error>) {
        let Some(lp) = self.event_loop() else { return };
        self.call_protocol(&lp, "connection_lost", move |p| p.connection_lost(err));
        self.release(&lp);
    }

    /// Closes the socket, cancels the cells, drops the protocol, leaves the registry.
    /// Idempotent.
    pub(crate) fn release(&self, lp: &EventLoop) {
        let socket = self.socket.borrow_mut().take();
        if let (Some(socket), Some(token)) = (&socket, self.token.take()) {
            if let Err(err) = lp.deregister_source(&mut SourceFd(&socket.as_raw_fd()), token) {
                tracing::debug!(target: "loopd", "deregistering fd {}: {err}", self.fd);
            }
        }
        let entry = lp.core.net.datagrams.borrow_mut().remove(&self.id);
        self.forget();
        drop((socket, entry));
    }

    /// Drops the socket, cells, protocol and waiting calls without the loop.
    pub(crate) fn forget(&self) {
        let socket = self.socket.borrow_mut().take();
        let cells = [
            self.read_cell.borrow_mut().take(),
            self.write_cell.borrow_mut().take(),
        ];
        for cell in cells.iter().flatten() {
            cancel_cell(cell);
        }
        let protocol = self.protocol.borrow_mut().take();
        self.calls.clear();
        {
            let mut state = self.state.borrow_mut();
            state.lost = true;
            state.closing = true;
            state.buffer.clear();
            state.buffer_size = 0;
        }
        drop((socket, cells, protocol));
    }

    fn call_protocol(
        self: &Rc<Self>,
        lp: &EventLoop,
        method: &'static str,
        f: impl FnOnce(&mut (dyn DatagramProtocol + 'static)) + 'static,
    ) {
        let Some(protocol) = self.protocol.borrow().clone() else {
            return;
        };
        calls::call_on(self, lp, protocol, method, Box::new(f));
    }
}

impl CallsOwner<dyn DatagramProtocol> for DatagramInner {
    fn calls(&self) -> &ProtocolCalls<dyn DatagramProtocol> {
        &self.calls
    }

    fn panicked(self: &Rc<Self>, lp: &EventLoop, method: &'static str, error: PanicError) {
        lp.call_exception_handler(ExceptionContext {
            message: format!("fatal error: protocol.{method}() call failed"),
            error: Some(Arc::new(error.clone())),
            ..Default::default()
        });
        if method != "connection_lost" {
            self.force_close(Some(io::Error::other(error)));
        }
    }
}

fn is_retry(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}
