//! Stream transports and protocols: asyncio's `create_server`, `create_connection` and their
//! Unix-socket twins, on epoll (edge-triggered, through the loop's mio registry) and socket2.
//! Also datagram endpoints (`create_datagram_endpoint`: [`DatagramTransport`],
//! [`DatagramProtocol`], UDP and Unix), name resolution on the executor
//! (`getaddrinfo`, `getnameinfo`), `sendfile`/`sock_sendfile` (the kernel's `sendfile(2)`,
//! or chunks read on the executor), `sock_*` operations on sockets the caller owns, and
//! pipe transports (`connect_read_pipe`, `connect_write_pipe`: pipes, FIFOs).
//!
//! asyncio's model: a [`Protocol`] is user code called when things happen (connection made,
//! data received, EOF, connection lost, write buffer too full / drained); a [`Transport`] is
//! the loop's handle to the socket, which the protocol writes to and controls.
//!
//! # Invariants
//! - The loop owns every open transport (stream, datagram, pipe) and every serving server
//!   (per-loop registries), so none needs a user handle to stay alive; a transport leaves
//!   its registry right after `connection_lost`, a server when it is closed. `close()` of
//!   the loop releases them all, without calling their protocols.
//! - Readiness only queues the transport's read or write callback cell (at most one of each
//!   in the ready queue); protocol methods run from the ready queue, never from the poll.
//! - Edge-triggered: a read callback reads until `EAGAIN`, or until it has read
//!   [`READ_BUFFER_SIZE`] bytes, in which case it queues itself again (fairness between
//!   transports); a transport whose reading resumes queues a read, since no new edge comes.
//! - Reads go into one buffer per loop, reused for every read (a fresh buffer per read makes
//!   glibc mmap/munmap each time).
//! - No `RefCell` borrow is held while a protocol method runs. A protocol that is already
//!   borrowed (its method is running, e.g. it writes from `data_received` and the write
//!   crosses the high-water mark) gets the call on the ready queue instead, queued behind
//!   any call already waiting, so a protocol sees its events in order.
//!
//! # Unlike asyncio
//! - `write` on a closing or closed transport fails with [`Error::TransportClosing`]
//!   (asyncio drops the data, and logs "socket.send() raised exception." from the fifth
//!   such write on); after `write_eof` it fails with [`Error::WriteAfterEof`] (asyncio's
//!   `RuntimeError`). An I/O error during `write` still goes to `connection_lost`, as asyncio.
//! - asyncio calls `pause_writing` synchronously inside `write`; here too, unless the
//!   protocol is borrowed at that moment (see the invariants), when it runs from the ready
//!   queue in the next iteration.
//! - A panic in a protocol method is reported to the exception handler ("fatal error:
//!   protocol.data_received() call failed") and the transport is closed, its
//!   `connection_lost` getting the panic as an `io::Error` (asyncio's `_fatal_error`).
//! - [`Server::sockets`] gives the listening addresses, not socket objects;
//!   [`Server::start_serving`] is a plain call (asyncio's coroutine also yields once);
//!   [`Server::serve_forever`] ends with `Err(Error::Cancelled)` when the server is closed,
//!   where asyncio raises `CancelledError`.
//! - [`Transport::is_reading`] is also `false` once the peer's EOF was read.
//! - `create_connection` tries the addresses one after the other unless
//!   `happy_eyeballs_delay` is set, as asyncio. [`EventLoop::create_connection_to`] (not in
//!   asyncio) takes the addresses themselves; asyncio's `create_connection(sock=...)` is
//!   [`EventLoop::create_connection_with_sock`].
//! - Sockets are `socket2::Socket`s registered through `SourceFd` rather than
//!   `mio::net` types: one code path serves TCP and Unix sockets.
//! - TLS (rustls) is a layer inside the [`Transport`], not a second transport stacked on
//!   it; see [`TlsServerConfig`] and [`EventLoop::start_tls`], and `tls.rs` for how its
//!   behaviour differs from asyncio's.
//!
//! - [`DatagramTransport::sendto`] takes a resolved [`Address`] (asyncio's `sock.sendto`
//!   would resolve a host name on the loop thread); it fails with
//!   [`Error::TransportClosing`] once the endpoint is closing, where asyncio drops the data.
//! - [`getaddrinfo`](EventLoop::getaddrinfo) returns IPv4 and IPv6 entries only, and takes
//!   the port as a number (no service names).
//! - The `sock_*` methods borrow the socket (any `AsFd`) and refuse a blocking one with
//!   [`Error::InvalidArgument`] (asyncio checks only in debug mode); they fail with
//!   [`Error::Register`] on an fd the loop already watches (a transport's, `add_reader`).
//! - Pipe transports take an `OwnedFd` (a `File`, a child's pipe, ...) and have their own
//!   protocol traits, [`ReadPipeProtocol`] and [`WritePipeProtocol`], since a stream
//!   [`Protocol`]'s `connection_made` gets a socket [`Transport`]. `write` on a closing
//!   write pipe fails with [`Error::TransportClosing`], as on a stream transport.
//! - The `sendfile` fallback reads 64 KiB at a time (asyncio: 16 KiB), since each read is a
//!   trip to the executor.
//!
//! # Not yet
//! `flags`/`proto` of stream connections, `keep_alive`,
//! `Server.close_clients`, `ssl` with `create_connection_with_sock`.

mod calls;
mod connect;
mod datagram;
mod datagram_transport;
mod dns;
mod eyeballs;
mod pipes;
mod protocol;
mod read_pipe;
mod sendfile;
mod server;
mod sock;
mod socket;
mod tls;
mod transport;
mod write_pipe;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;

pub use connect::ConnectOptions;
pub use datagram::{DatagramAddr, DatagramOptions, DatagramProtocol};
pub use datagram_transport::{DatagramTransport, MAX_DATAGRAMS_PER_READ};
pub use dns::{AddrInfo, AddrInfoHints, Family, SockType};
pub use pipes::{ReadPipeProtocol, WritePipeProtocol};
pub use protocol::Protocol;
pub use read_pipe::ReadPipeTransport;
pub use server::{Hosts, Server, ServerOptions};
pub use tls::{
    DEFAULT_SSL_HANDSHAKE_TIMEOUT, DEFAULT_SSL_SHUTDOWN_TIMEOUT, StartTlsOptions, TlsClientConfig,
    TlsContext, TlsServerConfig,
};
pub use transport::{DEFAULT_HIGH_WATER, DEFAULT_LOW_WATER, ExtraInfo, Transport};
pub use write_pipe::WritePipeTransport;

#[cfg(doc)]
use crate::error::Error;
use crate::event_loop::EventLoop;

/// Size of the per-loop read buffer, and the most one transport reads per readiness event
/// (asyncio reads at most 256 KiB per event too).
pub const READ_BUFFER_SIZE: usize = 256 * 1024;

/// A socket address as `get_extra_info("peername")` reports it: an IP address and port, or
/// a Unix socket path (`None` for an unnamed socket, such as a client's end).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    /// An IPv4 or IPv6 address and port.
    Inet(SocketAddr),
    /// A Unix socket path; `None` when the socket has no name.
    Unix(Option<PathBuf>),
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Inet(addr) => write!(f, "{addr}"),
            Address::Unix(Some(path)) => write!(f, "{}", path.display()),
            Address::Unix(None) => f.write_str("<unnamed unix socket>"),
        }
    }
}

impl Address {
    fn of(addr: &socket2::SockAddr) -> Address {
        match addr.as_socket() {
            Some(inet) => Address::Inet(inet),
            None => Address::Unix(addr.as_pathname().map(PathBuf::from)),
        }
    }
}

/// A protocol as the loop stores it.
pub(crate) type SharedProtocol = Rc<RefCell<dyn Protocol>>;

/// Makes one protocol per connection (asyncio's `protocol_factory`).
pub(crate) type ProtocolFactory = Rc<dyn Fn() -> SharedProtocol>;

/// Per-loop networking state (a field of the loop's core).
#[derive(Default)]
pub(crate) struct NetState {
    transports: RefCell<HashMap<u64, Rc<transport::TransportInner>>>,
    servers: RefCell<HashMap<u64, Rc<server::ServerInner>>>,
    next_id: Cell<u64>,
    read_buffer: RefCell<Vec<u8>>,
    pub(crate) counters: NetCounters,
    datagrams: RefCell<HashMap<u64, Rc<datagram_transport::DatagramInner>>>,
    pipes: RefCell<HashMap<u64, Rc<dyn pipes::PipeEnd>>>,
}

/// Running totals of one loop's stream traffic.
#[derive(Default)]
pub(crate) struct NetCounters {
    pub(crate) bytes_received: Cell<u64>,
    pub(crate) bytes_sent: Cell<u64>,
    pub(crate) accepted: Cell<u64>,
    pub(crate) datagrams_received: Cell<u64>,
    pub(crate) datagrams_sent: Cell<u64>,
}

/// A snapshot of one loop's networking (see [`EventLoop::net_metrics`]): gauges (`open_*`)
/// are the value now, counters count from the loop's creation and only grow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NetMetrics {
    /// Transports made and not yet lost.
    pub open_transports: usize,
    /// Servers not closed.
    pub open_servers: usize,
    /// Bytes handed to protocols' `data_received`, in total.
    pub bytes_received: u64,
    /// Bytes the sockets took from transports' writes, in total.
    pub bytes_sent: u64,
    /// Connections accepted by servers, in total.
    pub connections_accepted: u64,
    /// Datagram endpoints made and not yet lost.
    pub open_datagram_endpoints: usize,
    /// Datagrams handed to protocols' `datagram_received`, in total.
    pub datagrams_received: u64,
    /// Datagrams the sockets took from `sendto`, in total (dropped ones not counted).
    pub datagrams_sent: u64,
}

impl NetState {
    fn next_id(&self) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        id
    }

    /// Takes the loop's read buffer out (allocating it on first use); give it back with
    /// [`put_read_buffer`](Self::put_read_buffer).
    fn take_read_buffer(&self) -> Vec<u8> {
        let mut buffer = std::mem::take(&mut *self.read_buffer.borrow_mut());
        if buffer.len() < READ_BUFFER_SIZE {
            buffer = vec![0; READ_BUFFER_SIZE];
        }
        buffer
    }

    fn put_read_buffer(&self, buffer: Vec<u8>) {
        *self.read_buffer.borrow_mut() = buffer;
    }
}

impl Drop for NetState {
    /// A loop dropped without `close()`: break each transport's cycle with its protocol
    /// (which usually holds the transport) so sockets and protocols are freed.
    fn drop(&mut self) {
        let transports = std::mem::take(self.transports.get_mut());
        for transport in transports.values() {
            transport.forget();
        }
        let datagrams = std::mem::take(self.datagrams.get_mut());
        datagrams.values().for_each(|endpoint| endpoint.forget());
        let pipes = std::mem::take(self.pipes.get_mut());
        pipes.values().for_each(|pipe| pipe.forget());
    }
}

impl EventLoop {
    /// How many transports of this loop are open (made and not yet lost).
    pub fn open_transports(&self) -> usize {
        self.core.net.transports.borrow().len()
    }

    /// Counters and gauges of this loop's servers, transports and datagram endpoints: a
    /// cheap copy of a few cells, taken on the loop's thread. Never fails.
    pub fn net_metrics(&self) -> NetMetrics {
        let net = &self.core.net;
        NetMetrics {
            open_transports: net.transports.borrow().len(),
            open_servers: net.servers.borrow().len(),
            bytes_received: net.counters.bytes_received.get(),
            bytes_sent: net.counters.bytes_sent.get(),
            connections_accepted: net.counters.accepted.get(),
            open_datagram_endpoints: net.datagrams.borrow().len(),
            datagrams_received: net.counters.datagrams_received.get(),
            datagrams_sent: net.counters.datagrams_sent.get(),
        }
    }
}

/// Closes every server and drops every transport of a closing loop, without calling
/// protocols (the loop can no longer run them); called once from [`EventLoop::close`].
pub(crate) fn close_loop(lp: &EventLoop) {
    let servers = std::mem::take(&mut *lp.core.net.servers.borrow_mut());
    for server in servers.values() {
        server.release();
    }
    let transports = std::mem::take(&mut *lp.core.net.transports.borrow_mut());
    for transport in transports.values() {
        transport.release(lp);
        transport.forget(); // waiting protocol calls hold the protocol: drop them too
    }
    drop((servers, transports));
    let datagrams = std::mem::take(&mut *lp.core.net.datagrams.borrow_mut());
    datagrams.values().for_each(|endpoint| endpoint.release(lp));
    let pipes = std::mem::take(&mut *lp.core.net.pipes.borrow_mut());
    pipes.values().for_each(|pipe| pipe.release(lp));
}
