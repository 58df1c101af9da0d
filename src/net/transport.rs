//! [`Transport`]: the loop's handle to one connected stream socket (TCP or Unix), as
//! asyncio's `_SelectorSocketTransport`.
//!
//! # Invariants
//! - The socket is registered once, for reading and writing, edge-triggered. A readable
//!   edge queues the read cell while the transport reads; a writable edge queues the write
//!   cell while the write buffer holds data. Each cell is queued at most once at a time.
//! - A read that returns less than it asked for drained the socket, so reading stops there
//!   without a last `recv` seeing `EAGAIN`: data arriving later raises a new edge. Not
//!   once the poll reported the peer's hang-up or an error, which raise no further edge:
//!   from then on reading goes on until `EAGAIN`, EOF or the error.
//! - Bytes leave in order: `write` sends at once only when the buffer is empty, and
//!   whatever the socket does not take goes to the end of the buffer. When a writable
//!   edge waits in the ready queue, `write` first sends the buffer (what `write_ready`
//!   would do next), so that its data may go out without a copy into the buffer.
//! - Each `read` goes into the loop's shared buffer (no allocation per read), each
//!   `write` tries one `send` when nothing is buffered: an echo costs one of each.
//! - `pause_writing` is called when the buffer grows above the high-water mark, and
//!   `resume_writing` when it drains to the low-water mark; they alternate.
//! - `connection_lost` is scheduled exactly once: by `close()` once the buffer is flushed,
//!   by `abort()`, or by an I/O error. After it ran the socket is closed, the cells are
//!   cancelled, and the protocol is dropped (breaking the transport/protocol cycle).
//! - Over TLS (a session in `tls`, driven by `tls_io`), `connection_made` follows the
//!   handshake, and a transport whose handshake failed never calls its protocol, not even
//!   `connection_lost`; the design is in `crate::net::tls`.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::{Rc, Weak};
use std::sync::Arc;

use mio::unix::SourceFd;
use mio::{Interest, Token};
use socket2::Socket;

use crate::error::{Error, Result};
use crate::event_loop::{Core, EventLoop, IoDispatch, Readiness};
use crate::exception::{ExceptionContext, PanicError};
use crate::future::Future;
use crate::handle::{RepeatingCell, Runnable, cancel_cell};
use crate::net::server::ServerInner;
use crate::net::tls::TlsSession;
use crate::net::{Address, Protocol, READ_BUFFER_SIZE, SharedProtocol};

mod tls_io;

/// asyncio's default high-water mark of a transport's write buffer (64 KiB).
pub const DEFAULT_HIGH_WATER: usize = 64 * 1024;

/// asyncio's default low-water mark (a quarter of the high-water mark: 16 KiB).
pub const DEFAULT_LOW_WATER: usize = DEFAULT_HIGH_WATER / 4;

/// What [`Transport::get_extra_info`] returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExtraInfo {
    /// `peername` or `sockname`.
    Address(Address),
    /// `socket`: the raw file descriptor (still owned by the transport).
    Socket(RawFd),
    /// `cipher` on a TLS transport: the negotiated cipher suite (rustls' name), the
    /// protocol version (`TLSv1.3`) and the key size in bits, as asyncio's 3-tuple.
    Cipher {
        /// The cipher suite, e.g. `TLS13_AES_256_GCM_SHA384`.
        name: String,
        /// The protocol version: `TLSv1.2` or `TLSv1.3`.
        protocol: String,
        /// The symmetric key's size in bits (0 if unknown).
        secret_bits: u16,
    },
    /// `peercert` on a TLS transport: the peer's end-entity certificate, DER-encoded
    /// (asyncio's `getpeercert(binary_form=True)`).
    PeerCert(Vec<u8>),
    /// `pipe`: a pipe transport's file descriptor (still owned by the transport).
    Pipe(RawFd),
}

/// asyncio's stream transport: write to it, close it, pause and resume its reading.
///
/// A cheap handle (`Rc`) to a transport owned by its loop; clones share it. Every method
/// is for the loop's thread. Once the connection is lost the handle stays valid:
/// [`is_closing`](Self::is_closing) is `true` and writes fail.
#[derive(Clone)]
pub struct Transport {
    pub(crate) inner: Rc<TransportInner>,
}

pub(crate) struct TransportInner {
    id: u64,
    core: Weak<Core>,
    fd: RawFd,
    socket: RefCell<Option<Socket>>,
    token: Cell<Option<Token>>,
    state: RefCell<State>,
    protocol: RefCell<Option<SharedProtocol>>,
    read_cell: RefCell<Option<Rc<dyn Runnable>>>,
    write_cell: RefCell<Option<Rc<dyn Runnable>>>,
    server: Option<Weak<ServerInner>>,
    sockname: Option<Address>,
    peername: Option<Address>,
    /// Protocol calls waiting for a busy protocol, in order (see `call_on`).
    deferred: RefCell<VecDeque<Deferred>>,
    drain_scheduled: Cell<bool>,
    /// The TLS layer, between the socket and the buffers (see `crate::net::tls`).
    tls: RefCell<Option<TlsSession>>,
    /// `loop.sendfile`'s waiters and its in-progress flag.
    pub(crate) sendfile: crate::net::sendfile::SendfileHook,
}

/// A protocol call that could not run at once: the protocol, the method's name, the call.
type Deferred = (SharedProtocol, &'static str, ProtocolCall);

/// One call of a protocol method, with its arguments.
type ProtocolCall = Box<dyn FnOnce(&mut dyn Protocol)>;

struct State {
    buffer: Vec<u8>,
    /// Bytes of `buffer` already sent.
    head: usize,
    high: usize,
    low: usize,
    protocol_paused: bool,
    /// `connection_made` ran: reading may start.
    started: bool,
    reading_paused: bool,
    /// The peer's EOF was read: no more reads.
    eof_seen: bool,
    closing: bool,
    /// `write_eof()` was called.
    eof_requested: bool,
    /// `connection_lost` is scheduled (or ran).
    lost: bool,
    read_queued: bool,
    write_queued: bool,
    /// A TLS handshake is in progress: reading goes on before `connection_made`.
    handshaking: bool,
    /// The poll reported the peer's hang-up or an error: a short read no longer means
    /// that a later edge will come (see the invariants).
    read_closed: bool,
}

impl State {
    fn pending(&self) -> usize {
        self.buffer.len() - self.head
    }

    fn wants_read(&self) -> bool {
        (self.started || self.handshaking)
            && !self.reading_paused
            && !self.eof_seen
            && !self.closing
            && !self.lost
    }

    fn consume(&mut self, sent: usize) {
        self.head += sent;
        if self.head == self.buffer.len() {
            self.buffer.clear();
            self.head = 0;
        } else if self.head > self.buffer.len() / 2 {
            self.buffer.drain(..self.head);
            self.head = 0;
        }
    }
}

impl Default for State {
    fn default() -> Self {
        State {
            buffer: Vec::new(),
            head: 0,
            high: DEFAULT_HIGH_WATER,
            low: DEFAULT_LOW_WATER,
            protocol_paused: false,
            started: false,
            reading_paused: false,
            eof_seen: false,
            closing: false,
            eof_requested: false,
            lost: false,
            read_queued: false,
            write_queued: false,
            handshaking: false,
            read_closed: false,
        }
    }
}

/// Starts a transport on a connected, non-blocking `socket`: registers it, and schedules
/// `connection_made`, then the first read, then `waiter`'s result (as asyncio's
/// `_SelectorSocketTransport.__init__`).
pub(crate) fn start(
    lp: &EventLoop,
    socket: Socket,
    protocol: SharedProtocol,
    server: Option<Weak<ServerInner>>,
    waiter: Option<Future<()>>,
) -> Result<Transport> {
    let transport = open(lp, socket, protocol, server)?;
    let made = transport.clone();
    lp.call_soon(move || made.inner.connection_made(made.clone(), waiter))?;
    Ok(transport)
}

/// Starts a TLS transport on a connected, non-blocking `socket`: registers it and starts
/// the handshake; `connection_made` follows the handshake (see `crate::net::tls`).
pub(crate) fn start_tls(
    lp: &EventLoop,
    socket: Socket,
    protocol: SharedProtocol,
    server: Option<Weak<ServerInner>>,
    session: TlsSession,
) -> Result<Transport> {
    let transport = open(lp, socket, protocol, server)?;
    transport.inner.install_tls(lp, session);
    Ok(transport)
}

/// Registers a transport on `socket` with the loop (and its server).
fn open(
    lp: &EventLoop,
    socket: Socket,
    protocol: SharedProtocol,
    server: Option<Weak<ServerInner>>,
) -> Result<Transport> {
    lp.check_open()?;
    let sockname = socket.local_addr().ok().map(|a| Address::of(&a));
    let peername = socket.peer_addr().ok().map(|a| Address::of(&a));
    if matches!(sockname, Some(Address::Inet(_))) {
        // asyncio turns Nagle off for every TCP transport since 3.6.
        if let Err(err) = socket.set_tcp_nodelay(true) {
            tracing::debug!(target: "loopd", "setting TCP_NODELAY: {err}");
        }
    }
    let fd = socket.as_raw_fd();
    let inner = Rc::new_cyclic(|weak: &Weak<TransportInner>| TransportInner {
        id: lp.core.net.next_id(),
        core: Rc::downgrade(&lp.core),
        fd,
        socket: RefCell::new(Some(socket)),
        token: Cell::new(None),
        state: RefCell::new(State::default()),
        protocol: RefCell::new(Some(protocol)),
        read_cell: RefCell::new(Some(cell(weak.clone(), TransportInner::read_ready))),
        write_cell: RefCell::new(Some(cell(weak.clone(), TransportInner::write_ready))),
        server,
        sockname,
        peername,
        deferred: RefCell::new(VecDeque::new()),
        drain_scheduled: Cell::new(false),
        tls: RefCell::new(None),
        sendfile: Default::default(),
    });
    let weak = Rc::downgrade(&inner);
    let dispatch: IoDispatch = Rc::new(move |lp: &EventLoop, readiness| {
        if let Some(inner) = weak.upgrade() {
            inner.on_ready(lp, readiness);
        }
    });
    let token = lp
        .register_source(
            &mut SourceFd(&fd),
            Interest::READABLE | Interest::WRITABLE,
            dispatch,
        )
        .map_err(|source| Error::Register { fd, source })?;
    inner.token.set(Some(token));
    lp.core
        .net
        .transports
        .borrow_mut()
        .insert(inner.id, inner.clone());
    if let Some(server) = inner.server.as_ref().and_then(Weak::upgrade) {
        server.attach();
    }
    Ok(Transport { inner })
}

/// A callback cell running `method` on the transport, if it still exists.
fn cell(
    weak: Weak<TransportInner>,
    method: fn(&Rc<TransportInner>, &EventLoop),
) -> Rc<dyn Runnable> {
    RepeatingCell::new_rc(move || {
        let (Some(inner), Some(lp)) = (weak.upgrade(), crate::get_running_loop().ok()) else {
            return;
        };
        method(&inner, &lp);
    })
}

impl Transport {
    /// Sends `data`: at once if nothing is buffered and the socket takes it, else appended
    /// to the write buffer and sent as the socket drains (asyncio's `write`). Empty data
    /// does nothing. An I/O error closes the transport and reaches the protocol's
    /// `connection_lost`; `write` itself still returns `Ok`.
    ///
    /// Fails with [`Error::WriteAfterEof`] after [`write_eof`](Self::write_eof), and with
    /// [`Error::TransportClosing`] once [`close`](Self::close) or
    /// [`abort`](Self::abort) was called or the connection was lost (asyncio drops such
    /// data and logs "socket.send() raised exception." after a few writes).
    pub fn write(&self, data: &[u8]) -> Result<()> {
        self.inner.write(data)
    }

    /// Writes every chunk, in order, as one write (asyncio's `writelines`). Fails as
    /// [`write`](Self::write).
    pub fn writelines<I>(&self, chunks: I) -> Result<()>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let mut joined = Vec::new();
        for chunk in chunks {
            joined.extend_from_slice(chunk.as_ref());
        }
        self.write(&joined)
    }

    /// Closes the writing side once the buffer is flushed (`shutdown(SHUT_WR)`); reading
    /// goes on. Does nothing if the transport is closing or EOF was already written.
    pub fn write_eof(&self) {
        self.inner.write_eof();
    }

    /// `true` for plain stream sockets, which can half-close; `false` over TLS, as
    /// asyncio (where [`write_eof`](Self::write_eof) still sends `close_notify`).
    pub fn can_write_eof(&self) -> bool {
        !self.inner.is_tls()
    }

    /// Closes the transport: reading stops now; buffered data is still sent, then the
    /// protocol's `connection_lost(None)` is called and the socket closed. Idempotent.
    pub fn close(&self) {
        self.inner.close();
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

    /// Stops reading: no `data_received` until [`resume_reading`](Self::resume_reading).
    /// The kernel's buffers then fill and the peer's writes block (TCP backpressure).
    /// Does nothing if already paused or closing.
    pub fn pause_reading(&self) {
        self.inner.state.borrow_mut().reading_paused = true;
    }

    /// Resumes reading after [`pause_reading`](Self::pause_reading). Does nothing if
    /// reading is not paused or the transport is closing.
    pub fn resume_reading(&self) {
        let Some(lp) = self.inner.event_loop() else {
            return;
        };
        if !std::mem::replace(&mut self.inner.state.borrow_mut().reading_paused, false) {
            return;
        }
        self.inner.queue_read(&lp);
    }

    /// Whether the transport is reading: not paused, not closing, no EOF read yet.
    pub fn is_reading(&self) -> bool {
        let state = self.inner.state.borrow();
        !state.reading_paused && !state.closing && !state.lost && !state.eof_seen
    }

    /// Sets the write buffer's flow-control marks, as asyncio: without `high`, it is
    /// `4 * low`, or 64 KiB if `low` is missing too; without `low`, it is `high / 4`.
    /// `pause_writing` is called at once if the buffer is already above the new mark.
    ///
    /// Fails with [`Error::InvalidArgument`] if `high < low`.
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

    /// The write buffer's `(low, high)` marks, as asyncio's `get_write_buffer_limits`.
    pub fn get_write_buffer_limits(&self) -> (usize, usize) {
        let state = self.inner.state.borrow();
        (state.low, state.high)
    }

    /// Bytes waiting in the write buffer.
    pub fn get_write_buffer_size(&self) -> usize {
        self.inner.state.borrow().pending()
    }

    /// asyncio's `get_extra_info`: `"peername"` and `"sockname"` give the [`Address`]es
    /// (read when the transport was made, so they stay available after it closed);
    /// `"socket"` gives the fd while the transport is open. Over TLS, once the handshake
    /// is done, `"cipher"` gives [`ExtraInfo::Cipher`] and `"peercert"` the peer's
    /// certificate ([`ExtraInfo::PeerCert`], if it sent one). Any other name gives `None`.
    pub fn get_extra_info(&self, name: &str) -> Option<ExtraInfo> {
        match name {
            "cipher" | "peercert" => self.inner.tls_extra_info(name),
            "peername" => self.inner.peername.clone().map(ExtraInfo::Address),
            "sockname" => self.inner.sockname.clone().map(ExtraInfo::Address),
            "socket" => self
                .inner
                .socket
                .borrow()
                .as_ref()
                .map(|s| ExtraInfo::Socket(s.as_raw_fd())),
            _ => None,
        }
    }

    /// The protocol receiving this transport's events (asyncio's `get_protocol`); `None`
    /// once the connection is lost.
    pub fn get_protocol(&self) -> Option<Rc<RefCell<dyn Protocol>>> {
        self.inner.protocol.borrow().clone()
    }

    /// Sends this transport's later events to `protocol` instead (asyncio's
    /// `set_protocol`); its `connection_made` is not called. Does nothing once the
    /// connection is lost.
    pub fn set_protocol(&self, protocol: Rc<RefCell<dyn Protocol>>) {
        let mut slot = self.inner.protocol.borrow_mut();
        if slot.is_some() {
            let old = slot.replace(protocol);
            drop(slot);
            drop(old);
        }
    }

    /// The peer's address (`get_extra_info("peername")`).
    pub fn peername(&self) -> Option<Address> {
        self.inner.peername.clone()
    }

    /// The local address (`get_extra_info("sockname")`).
    pub fn sockname(&self) -> Option<Address> {
        self.inner.sockname.clone()
    }
}

/// asyncio's `_set_write_buffer_limits`: the missing mark is derived from the other one.
pub(crate) fn write_buffer_limits(
    high: Option<usize>,
    low: Option<usize>,
) -> Result<(usize, usize)> {
    let high = high.unwrap_or_else(|| low.map_or(DEFAULT_HIGH_WATER, |l| l.saturating_mul(4)));
    let low = low.unwrap_or(high / 4);
    if high < low {
        return Err(Error::InvalidArgument {
            what: "write buffer limits",
            value: format!("high ({high}) must be >= low ({low})"),
        });
    }
    Ok((high, low))
}

fn bump(counter: &Cell<u64>, n: usize) {
    counter.set(counter.get() + n as u64);
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("fd", &self.inner.fd)
            .field("peername", &self.inner.peername)
            .field("closing", &self.is_closing())
            .field("write_buffer", &self.get_write_buffer_size())
            .finish()
    }
}

impl TransportInner {
    fn event_loop(&self) -> Option<EventLoop> {
        self.core.upgrade().map(|core| EventLoop { core })
    }

    fn connection_made(self: &Rc<Self>, transport: Transport, waiter: Option<Future<()>>) {
        let Some(lp) = self.event_loop() else { return };
        self.state.borrow_mut().started = true;
        self.call_protocol(&lp, "connection_made", move |p| {
            p.connection_made(transport)
        });
        self.queue_read(&lp);
        if let Some(waiter) = waiter {
            if !waiter.done() {
                let _ = waiter.set_result(());
            }
        }
    }

    // ---- readiness ----------------------------------------------------------------

    fn on_ready(self: &Rc<Self>, lp: &EventLoop, readiness: Readiness) {
        if readiness.read_closed || readiness.error {
            self.state.borrow_mut().read_closed = true;
        }
        if readiness.writable || readiness.write_closed || readiness.error {
            self.sendfile.on_writable();
        }
        if readiness.readable || readiness.read_closed || readiness.error {
            self.queue_read(lp);
        }
        if readiness.writable || readiness.write_closed || readiness.error {
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
            if state.write_queued || state.lost || (state.pending() == 0 && !self.tls_wants_write())
            {
                return;
            }
            state.write_queued = true;
        }
        if let Some(cell) = self.write_cell.borrow().clone() {
            lp.push_ready(cell);
        }
    }

    // ---- reading ------------------------------------------------------------------

    /// Reads until `EAGAIN`, a short read (unless the peer hung up), EOF, a pause, or
    /// [`READ_BUFFER_SIZE`] bytes (then queues itself again: an edge-triggered poll would
    /// not report the rest).
    fn read_ready(self: &Rc<Self>, lp: &EventLoop) {
        self.state.borrow_mut().read_queued = false;
        if self.is_tls() {
            return self.tls_read_ready(lp);
        }
        let mut buffer = lp.core.net.take_read_buffer();
        let mut budget = READ_BUFFER_SIZE;
        while self.state.borrow().wants_read() {
            match self.recv(&mut buffer[..budget]) {
                Ok(0) => {
                    self.eof_received(lp);
                    break;
                }
                Ok(n) => {
                    bump(&lp.core.net.counters.bytes_received, n);
                    self.data_received(lp, &buffer[..n]);
                    let drained = n < budget && !self.state.borrow().read_closed;
                    budget -= n;
                    if budget == 0 || self.is_tls() {
                        // Out of budget, or `start_tls` ran: go on in a new callback.
                        self.queue_read(lp);
                        break;
                    }
                    if drained {
                        break; // a new edge comes with the next data
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    self.fatal_error(lp, err);
                    break;
                }
            }
        }
        lp.core.net.put_read_buffer(buffer);
    }

    fn recv(&self, buffer: &mut [u8]) -> io::Result<usize> {
        match self.socket.borrow().as_ref() {
            Some(mut socket) => socket.read(buffer),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    fn data_received(self: &Rc<Self>, lp: &EventLoop, data: &[u8]) {
        let Some(protocol) = self.protocol.borrow().clone() else {
            return;
        };
        if self.deferred.borrow().is_empty() {
            if let Ok(mut p) = protocol.try_borrow_mut() {
                let outcome = catch_unwind(AssertUnwindSafe(|| p.data_received(data)));
                drop(p);
                if let Err(payload) = outcome {
                    self.protocol_panicked(lp, "data_received", &*payload);
                }
                return;
            }
        }
        // The protocol is busy: keep a copy, since the loop's read buffer is reused.
        let data = data.to_vec();
        self.defer(
            lp,
            protocol,
            "data_received",
            Box::new(move |p| p.data_received(&data)),
        );
    }

    /// The peer shut down writing: ask the protocol whether to stay open (asyncio's
    /// `_read_ready__on_eof`); either way reading is over.
    fn eof_received(self: &Rc<Self>, lp: &EventLoop) {
        self.state.borrow_mut().eof_seen = true;
        let transport = Transport {
            inner: self.clone(),
        };
        self.call_protocol(lp, "eof_received", move |p| {
            if !p.eof_received() {
                transport.close();
            }
        });
    }

    // ---- writing ------------------------------------------------------------------

    fn write(self: &Rc<Self>, data: &[u8]) -> Result<()> {
        {
            let state = self.state.borrow();
            if state.eof_requested {
                return Err(Error::WriteAfterEof);
            }
            if self.sendfile.is_active() {
                return Err(Error::SendfileInProgress);
            }
            if state.closing || state.lost {
                return Err(Error::TransportClosing);
            }
        }
        if data.is_empty() {
            return Ok(());
        }
        let lp = self.event_loop().ok_or(Error::Closed)?;
        if self.is_tls() {
            self.tls_write(&lp, data);
            return Ok(());
        }
        if self.state.borrow().write_queued && !self.flush_early(&lp) {
            return Ok(()); // an I/O error: the transport is closing
        }
        let mut rest = data;
        if self.state.borrow().pending() == 0 {
            match self.send(rest) {
                Ok(sent) => {
                    bump(&lp.core.net.counters.bytes_sent, sent);
                    rest = &rest[sent..];
                }
                Err(err) => {
                    self.fatal_error(&lp, err);
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

    /// A writable edge is waiting for `write_ready` in the ready queue, so the socket has
    /// room: send the buffer now, so that the data being written may go straight out
    /// rather than be copied behind it. `false` after an I/O error (the transport is
    /// closing). `write_ready` still runs later, finds less or nothing to send, and calls
    /// `resume_writing` if due (never from here: a protocol writing from `resume_writing`
    /// would get its bytes out ahead of the ones being written).
    fn flush_early(self: &Rc<Self>, lp: &EventLoop) -> bool {
        let sent = {
            let state = self.state.borrow();
            if state.pending() == 0 {
                return true;
            }
            self.send(&state.buffer[state.head..])
        };
        match sent {
            Ok(n) => {
                bump(&lp.core.net.counters.bytes_sent, n);
                self.state.borrow_mut().consume(n);
                true
            }
            Err(err) => {
                self.fatal_error(lp, err);
                false
            }
        }
    }

    /// Sends as much of `data` as the socket takes; stops at `EAGAIN`.
    fn send(&self, data: &[u8]) -> io::Result<usize> {
        let socket = self.socket.borrow();
        let Some(socket) = socket.as_ref() else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        let mut sent = 0;
        while sent < data.len() {
            match socket.send_with_flags(&data[sent..], libc::MSG_NOSIGNAL) {
                Ok(n) => sent += n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            }
        }
        Ok(sent)
    }

    /// Flushes the buffer as far as the socket takes it (asyncio's `_write_ready`).
    fn write_ready(self: &Rc<Self>, lp: &EventLoop) {
        if self.is_tls() {
            self.state.borrow_mut().write_queued = false;
            return self.tls_pump(lp);
        }
        let sent = {
            let mut state = self.state.borrow_mut();
            state.write_queued = false;
            if state.lost || (state.pending() == 0 && !state.protocol_paused) {
                return;
            }
            if state.pending() == 0 {
                Ok(0) // `flush_early` sent it all; resume_writing is still due
            } else {
                self.send(&state.buffer[state.head..])
            }
        };
        match sent {
            Ok(n) => {
                bump(&lp.core.net.counters.bytes_sent, n);
                self.state.borrow_mut().consume(n);
            }
            Err(err) => return self.fatal_error(lp, err),
        }
        self.maybe_resume_protocol(lp);
        let (flushed, closing, eof) = {
            let state = self.state.borrow();
            (state.pending() == 0, state.closing, state.eof_requested)
        };
        if flushed {
            self.sendfile.on_drained();
        }
        if flushed && closing {
            self.schedule_connection_lost(lp, None);
        } else if flushed && eof {
            self.shutdown_write();
        }
    }

    fn write_eof(self: &Rc<Self>) {
        let flushed = {
            let mut state = self.state.borrow_mut();
            if state.closing || state.lost || state.eof_requested {
                return;
            }
            state.eof_requested = true;
            state.pending() == 0
        };
        if let (true, Some(lp)) = (self.is_tls(), self.event_loop()) {
            return self.tls_pump(&lp); // close_notify once flushed
        }
        if flushed {
            self.shutdown_write();
        }
    }

    fn shutdown_write(&self) {
        if let Some(socket) = self.socket.borrow().as_ref() {
            if let Err(err) = socket.shutdown(Shutdown::Write) {
                tracing::debug!(target: "loopd", "shutdown(SHUT_WR) of fd {}: {err}", self.fd);
            }
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
        self.call_protocol(lp, "pause_writing", |p| p.pause_writing());
    }

    fn maybe_resume_protocol(self: &Rc<Self>, lp: &EventLoop) {
        {
            let mut state = self.state.borrow_mut();
            if !state.protocol_paused || state.pending() > state.low {
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
            state.pending() == 0
        };
        if self.is_tls() {
            return self.tls_close(&lp);
        }
        if flushed {
            self.schedule_connection_lost(&lp, None);
        }
    }

    fn fatal_error(self: &Rc<Self>, lp: &EventLoop, err: io::Error) {
        tracing::debug!(target: "loopd", "fatal error on transport fd {}: {err}", self.fd);
        self.force_close_on(lp, Some(err));
    }

    fn force_close(self: &Rc<Self>, err: Option<io::Error>) {
        if let Some(lp) = self.event_loop() {
            self.force_close_on(&lp, err);
        }
    }

    /// Drops buffered data and schedules `connection_lost` (asyncio's `_force_close`).
    fn force_close_on(self: &Rc<Self>, lp: &EventLoop, err: Option<io::Error>) {
        {
            let mut state = self.state.borrow_mut();
            if state.lost {
                return;
            }
            state.buffer = Vec::new();
            state.head = 0;
            state.closing = true;
        }
        self.schedule_connection_lost(lp, err);
    }

    fn schedule_connection_lost(self: &Rc<Self>, lp: &EventLoop, err: Option<io::Error>) {
        if std::mem::replace(&mut self.state.borrow_mut().lost, true) {
            return;
        }
        let this = self.clone();
        let scheduled = lp.call_soon(move || this.connection_lost(err));
        if scheduled.is_err() {
            // The loop is closed: `close_loop` releases the transport.
        }
    }

    /// Calls the protocol's `connection_lost`, then closes the socket and forgets the
    /// transport (asyncio's `_call_connection_lost`).
    fn connection_lost(self: &Rc<Self>, err: Option<io::Error>) {
        let Some(lp) = self.event_loop() else { return };
        if self.state.borrow().started {
            // A failed TLS handshake never made the connection: nothing to tell.
            self.call_protocol(&lp, "connection_lost", move |p| p.connection_lost(err));
        }
        self.release(&lp);
    }

    /// Closes the socket, cancels the cells, drops the protocol, leaves the registry and
    /// the server. Idempotent.
    pub(crate) fn release(&self, lp: &EventLoop) {
        self.tls_release();
        self.sendfile.on_lost();
        let socket = self.socket.borrow_mut().take();
        if let (Some(socket), Some(token)) = (&socket, self.token.take()) {
            if let Err(err) = lp.deregister_source(&mut SourceFd(&socket.as_raw_fd()), token) {
                tracing::debug!(target: "loopd", "deregistering fd {}: {err}", self.fd);
            }
        }
        let cells = [
            self.read_cell.borrow_mut().take(),
            self.write_cell.borrow_mut().take(),
        ];
        for cell in cells.iter().flatten() {
            cancel_cell(cell);
        }
        let protocol = self.protocol.borrow_mut().take();
        {
            let mut state = self.state.borrow_mut();
            state.lost = true;
            state.closing = true;
            state.buffer = Vec::new();
            state.head = 0;
        }
        let entry = lp.core.net.transports.borrow_mut().remove(&self.id);
        if let Some(server) = self.server.as_ref().and_then(Weak::upgrade) {
            if socket.is_some() {
                server.detach(); // once: only the first release had the socket
            }
        }
        drop((socket, cells, protocol, entry));
    }

    /// Drops the socket, cells, protocol and waiting protocol calls without the loop (which
    /// is being dropped or closed).
    pub(crate) fn forget(&self) {
        self.tls_release();
        let socket = self.socket.borrow_mut().take();
        let cells = [
            self.read_cell.borrow_mut().take(),
            self.write_cell.borrow_mut().take(),
        ];
        for cell in cells.iter().flatten() {
            cancel_cell(cell);
        }
        let protocol = self.protocol.borrow_mut().take();
        let deferred = std::mem::take(&mut *self.deferred.borrow_mut());
        self.state.borrow_mut().lost = true;
        drop((socket, cells, protocol, deferred));
    }

    // ---- calling the protocol -----------------------------------------------------

    /// Calls `f` on the protocol now, or from the ready queue if the protocol is busy (one
    /// of its methods is running). A panic closes the transport, as an exception in a
    /// protocol method does in asyncio.
    fn call_protocol(
        self: &Rc<Self>,
        lp: &EventLoop,
        method: &'static str,
        f: impl FnOnce(&mut dyn Protocol) + 'static,
    ) {
        let Some(protocol) = self.protocol.borrow().clone() else {
            return;
        };
        self.call_on(lp, protocol, method, f);
    }

    /// Runs `f` now if the protocol is free and no earlier call waits; else queues it
    /// behind the waiting ones, so calls reach the protocol in order.
    fn call_on(
        self: &Rc<Self>,
        lp: &EventLoop,
        protocol: SharedProtocol,
        method: &'static str,
        f: impl FnOnce(&mut dyn Protocol) + 'static,
    ) {
        if self.deferred.borrow().is_empty() {
            if let Ok(mut p) = protocol.try_borrow_mut() {
                let outcome = catch_unwind(AssertUnwindSafe(|| f(&mut *p)));
                drop(p);
                if let Err(payload) = outcome {
                    self.protocol_panicked(lp, method, &*payload);
                }
                return;
            }
        }
        self.defer(lp, protocol, method, Box::new(f));
    }

    fn defer(
        self: &Rc<Self>,
        lp: &EventLoop,
        protocol: SharedProtocol,
        method: &'static str,
        f: ProtocolCall,
    ) {
        self.deferred.borrow_mut().push_back((protocol, method, f));
        self.schedule_drain(lp);
    }

    fn schedule_drain(self: &Rc<Self>, lp: &EventLoop) {
        if self.drain_scheduled.replace(true) {
            return;
        }
        let this = self.clone();
        if lp.call_soon(move || this.drain_deferred()).is_err() {
            // The loop is closed: nothing will run any more.
            self.drain_scheduled.set(false);
        }
    }

    /// Runs the waiting protocol calls in order, until one finds its protocol still busy.
    fn drain_deferred(self: &Rc<Self>) {
        self.drain_scheduled.set(false);
        let Some(lp) = self.event_loop() else { return };
        loop {
            let Some((protocol, method, f)) = self.deferred.borrow_mut().pop_front() else {
                return;
            };
            let outcome = match protocol.try_borrow_mut() {
                Ok(mut p) => catch_unwind(AssertUnwindSafe(|| f(&mut *p))),
                Err(_) => {
                    let entry = (protocol.clone(), method, f);
                    self.deferred.borrow_mut().push_front(entry);
                    return self.schedule_drain(&lp);
                }
            };
            if let Err(payload) = outcome {
                self.protocol_panicked(&lp, method, &*payload);
            }
        }
    }

    fn protocol_panicked(
        self: &Rc<Self>,
        lp: &EventLoop,
        method: &'static str,
        payload: &(dyn std::any::Any + Send),
    ) {
        let error = PanicError::from_payload(payload);
        lp.call_exception_handler(ExceptionContext {
            message: format!("fatal error: protocol.{method}() call failed"),
            error: Some(Arc::new(error.clone())),
            ..Default::default()
        });
        if method != "connection_lost" {
            self.force_close_on(lp, Some(io::Error::other(error)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_buffer_limits_follow_asyncio() {
        let k = 1024;
        let cases = [
            // (high, low) given -> (high, low) used
            ((None, None), Some((64 * k, 16 * k))),
            ((Some(100), None), Some((100, 25))),
            ((None, Some(100)), Some((400, 100))),
            ((Some(10), Some(10)), Some((10, 10))),
            ((Some(0), None), Some((0, 0))),
            ((None, Some(usize::MAX)), Some((usize::MAX, usize::MAX))),
            ((Some(1), Some(2)), None),
        ];
        for ((high, low), expected) in cases {
            assert_eq!(
                write_buffer_limits(high, low).ok(),
                expected,
                "high {high:?}, low {low:?}"
            );
        }
    }

    #[test]
    fn consuming_the_buffer_keeps_the_unsent_tail() {
        let mut state = State {
            buffer: b"abcdefgh".to_vec(),
            ..Default::default()
        };
        let steps: [(usize, &[u8], usize); 4] = [
            // (sent, unsent, head afterwards)
            (2, b"cdefgh", 2),
            (1, b"defgh", 3),
            (2, b"fgh", 0), // past half: compacted
            (3, b"", 0),
        ];
        for (sent, unsent, head) in steps {
            state.consume(sent);
            assert_eq!(&state.buffer[state.head..], unsent, "after sending {sent}");
            assert_eq!(state.pending(), unsent.len());
            assert_eq!(state.head, head);
        }
    }
}
