//! `create_connection` and `create_unix_connection`: connect, then start a transport.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use socket2::{SockAddr, Socket};

use crate::error::{Error, Result};
use crate::event_loop::EventLoop;
use crate::net::dns::{self, AddrInfoHints, Family, SockType};
use crate::net::eyeballs;
use crate::net::socket::{self, connect_error};
use crate::net::tls::{ClientTls, TlsClientConfig};
use crate::net::{Protocol, SharedProtocol, Transport, transport};

/// Options of [`EventLoop::create_connection`].
#[derive(Clone, Debug, Default)]
pub struct ConnectOptions {
    /// Bind the socket to this local address before connecting (asyncio's `local_addr`).
    /// Only remote addresses of the same family are tried.
    pub local_addr: Option<SocketAddr>,
    /// Speak TLS with this configuration (asyncio's `ssl`); the protocol's
    /// `connection_made` then runs once the handshake is done.
    pub ssl: Option<TlsClientConfig>,
    /// The name the server's certificate must match (default: the host connected to;
    /// required with `ssl` on a Unix socket). Only with `ssl`.
    pub server_hostname: Option<String>,
    /// How long the TLS handshake may take (default 60 s). Only with `ssl`.
    pub ssl_handshake_timeout: Option<Duration>,
    /// How long `close()` may take to flush and send `close_notify` before the transport
    /// is aborted (default 30 s). Only with `ssl`.
    pub ssl_shutdown_timeout: Option<Duration>,
    /// Only addresses of this family are tried (asyncio's `family`; `Unspec`: all).
    pub family: Family,
    /// Happy Eyeballs (RFC 8305): start the next address's attempt when the previous one
    /// failed or after this delay, whichever comes first; the first to connect wins and
    /// the others are closed. `None` (the default): one address after the other. RFC 8305
    /// recommends 250 ms.
    pub happy_eyeballs_delay: Option<Duration>,
    /// Reorder the addresses by family, alternating, with this many of the first family
    /// first (asyncio's `interleave`). `None` means 1 when `happy_eyeballs_delay` is set,
    /// else no reordering; `Some(0)` never reorders.
    pub interleave: Option<usize>,
}

impl EventLoop {
    /// Connects to `host:port` over TCP and starts a transport with a protocol from
    /// `factory` (asyncio's `loop.create_connection`). `host` is an IP literal (used as
    /// is) or a name resolved with getaddrinfo on the default executor; its addresses (of
    /// `options.family`) are tried in turn until one connects, or raced as Happy Eyeballs
    /// with `options.happy_eyeballs_delay` (see [`ConnectOptions`]). The future resolves
    /// once the protocol's `connection_made` ran, to the transport and the protocol.
    /// TCP_NODELAY is on.
    ///
    /// Fails with [`Error::ConnectionRefused`] or [`Error::Connect`] naming the address
    /// (a single error when there was one address, or when all attempts failed alike),
    /// [`Error::MultipleErrors`] when several addresses failed differently,
    /// [`Error::Resolve`] if the name does not resolve, [`Error::AddressInUse`]/
    /// [`Error::Bind`] for a bad `local_addr`, [`Error::InvalidArgument`] when no address
    /// has the asked family, [`Error::Closed`] if the loop is closed.
    /// With `ssl`: [`Error::TlsHandshake`] (rustls' reason names, e.g., the name the
    /// certificate is not valid for) or [`Error::HandshakeTimeout`]; before connecting,
    /// [`Error::InvalidArgument`] for TLS options without `ssl`, an invalid
    /// `server_hostname` or a zero timeout.
    ///
    /// # Examples
    /// ```
    /// use loopd::{ConnectOptions, EventLoop, Protocol};
    /// struct Quiet;
    /// impl Protocol for Quiet {}
    ///
    /// let lp = EventLoop::new().unwrap();
    /// let refused = lp.run_until_complete(lp.create_connection(
    ///     || Quiet, "127.0.0.1", 1, ConnectOptions::default(),
    /// ));
    /// let err = refused.unwrap().err().unwrap();
    /// assert_eq!(err.to_string(), "connection to 127.0.0.1:1 refused");
    /// ```
    pub fn create_connection<P, F>(
        &self,
        factory: F,
        host: &str,
        port: u16,
        options: ConnectOptions,
    ) -> impl std::future::Future<Output = Result<(Transport, Rc<RefCell<P>>)>> + 'static
    where
        P: Protocol + 'static,
        F: FnOnce() -> P + 'static,
    {
        let lp = self.clone();
        let host = host.to_string();
        async move {
            let tls = ClientTls::from_options(&options, Some(&host))?;
            let socket = connect_tcp(&lp, &host, port, &options).await?;
            start_client(&lp, socket, factory, tls).await
        }
    }

    /// Connects to the first of `addrs` that answers, as [`create_connection`] does with
    /// the addresses a host name resolves to (`options` apply alike: family, local address,
    /// Happy Eyeballs and interleaving). Not in asyncio: a Rust caller that already holds
    /// addresses (as `TcpStream::connect` takes several) needs no name to resolve.
    ///
    /// Fails as [`create_connection`] does; [`Error::InvalidArgument`] for an empty list.
    ///
    /// [`create_connection`]: Self::create_connection
    pub fn create_connection_to<P, F>(
        &self,
        factory: F,
        addrs: Vec<SocketAddr>,
        options: ConnectOptions,
    ) -> impl std::future::Future<Output = Result<(Transport, Rc<RefCell<P>>)>> + 'static
    where
        P: Protocol + 'static,
        F: FnOnce() -> P + 'static,
    {
        let lp = self.clone();
        async move {
            lp.check_open()?;
            // No host name to default to: with `ssl`, `server_hostname` is required.
            let tls = ClientTls::from_options(&options, None)?;
            let shown = format!("{addrs:?}");
            let socket = connect_addrs(&lp, addrs, &shown, &options).await?;
            start_client(&lp, socket, factory, tls).await
        }
    }

    /// Starts a client transport on `sock`, a stream socket that is already connected
    /// (asyncio's `create_connection(sock=sock)`): a `std::net::TcpStream`,
    /// `std::os::unix::net::UnixStream` or `socket2::Socket`. It is made non-blocking.
    ///
    /// Fails with [`Error::InvalidArgument`] if `sock` is not a stream socket (asyncio's
    /// "A Stream Socket was expected"), [`Error::Closed`] if the loop is closed.
    pub fn create_connection_with_sock<P, F>(
        &self,
        factory: F,
        sock: impl Into<Socket>,
    ) -> impl std::future::Future<Output = Result<(Transport, Rc<RefCell<P>>)>> + 'static
    where
        P: Protocol + 'static,
        F: FnOnce() -> P + 'static,
    {
        let lp = self.clone();
        let sock = sock.into();
        async move {
            let socket = adopt_stream(sock)?;
            start_client(&lp, socket, factory, None).await
        }
    }

    /// Starts a transport on `sock`, a connection accepted outside the loop (asyncio's
    /// `loop.connect_accepted_socket`), as [`create_connection_with_sock`] does.
    ///
    /// Fails as [`create_connection_with_sock`] does.
    ///
    /// [`create_connection_with_sock`]: Self::create_connection_with_sock
    pub fn connect_accepted_socket<P, F>(
        &self,
        factory: F,
        sock: impl Into<Socket>,
    ) -> impl std::future::Future<Output = Result<(Transport, Rc<RefCell<P>>)>> + 'static
    where
        P: Protocol + 'static,
        F: FnOnce() -> P + 'static,
    {
        self.create_connection_with_sock(factory, sock)
    }

    /// Connects to the Unix socket at `path` and starts a transport with a protocol from
    /// `factory` (asyncio's `loop.create_unix_connection`); otherwise as
    /// [`create_connection`](Self::create_connection).
    ///
    /// Fails with [`Error::ConnectionRefused`] (nobody listens) or [`Error::Connect`]
    /// (e.g. no such file) naming the path, [`Error::Closed`] if the loop is closed.
    pub fn create_unix_connection<P, F>(
        &self,
        factory: F,
        path: impl AsRef<Path>,
    ) -> impl std::future::Future<Output = Result<(Transport, Rc<RefCell<P>>)>> + 'static
    where
        P: Protocol + 'static,
        F: FnOnce() -> P + 'static,
    {
        self.create_unix_connection_with(factory, path, ConnectOptions::default())
    }

    /// [`create_unix_connection`](Self::create_unix_connection) with asyncio's keyword
    /// arguments: `ssl`, `server_hostname` (required with `ssl`),
    /// `ssl_handshake_timeout`, `ssl_shutdown_timeout`, as in
    /// [`create_connection`](Self::create_connection).
    ///
    /// Fails as `create_unix_connection`, and as `create_connection` does for TLS;
    /// [`Error::InvalidArgument`] if `local_addr` is set or `ssl` comes without
    /// `server_hostname` (asyncio's `ValueError`).
    pub fn create_unix_connection_with<P, F>(
        &self,
        factory: F,
        path: impl AsRef<Path>,
        options: ConnectOptions,
    ) -> impl std::future::Future<Output = Result<(Transport, Rc<RefCell<P>>)>> + 'static
    where
        P: Protocol + 'static,
        F: FnOnce() -> P + 'static,
    {
        let lp = self.clone();
        let path: PathBuf = path.as_ref().to_path_buf();
        async move {
            if let Some(local) = options.local_addr {
                return Err(Error::InvalidArgument {
                    what: "local_addr",
                    value: format!("{local}: not for a unix socket"),
                });
            }
            let tls = ClientTls::from_options(&options, None)?;
            let shown = path.display().to_string();
            let addr =
                SockAddr::unix(&path).map_err(|source| connect_error(shown.clone(), source))?;
            let socket = socket::connect(&lp, &addr, &shown, None).await?;
            start_client(&lp, socket, factory, tls).await
        }
    }
}

/// Resolves `host` (getaddrinfo on the executor), then tries its addresses.
async fn connect_tcp(
    lp: &EventLoop,
    host: &str,
    port: u16,
    options: &ConnectOptions,
) -> Result<Socket> {
    lp.check_open()?;
    let hints = AddrInfoHints {
        family: options.family,
        socktype: SockType::Stream,
        ..Default::default()
    };
    let addrs = dns::resolve_addrs(lp, host, port, hints).await?;
    connect_addrs(lp, addrs, host, options).await
}

/// Tries `addrs` as `options` say: in turn, or Happy Eyeballs; asyncio's error rules when
/// all fail.
async fn connect_addrs(
    lp: &EventLoop,
    mut addrs: Vec<SocketAddr>,
    host: &str,
    options: &ConnectOptions,
) -> Result<Socket> {
    addrs.retain(|addr| options.family.admits(addr));
    let local = options.local_addr;
    if let Some(local) = local {
        addrs.retain(|addr| addr.is_ipv4() == local.is_ipv4());
        if addrs.is_empty() {
            return Err(Error::InvalidArgument {
                what: "local_addr",
                value: format!("{local}: no address of {host} has its family"),
            });
        }
    }
    if addrs.is_empty() {
        return Err(Error::InvalidArgument {
            what: "family",
            value: format!("{:?}: no address of {host} has it", options.family),
        });
    }
    let delay = options.happy_eyeballs_delay;
    let interleave = options.interleave.or(delay.map(|_| 1)).unwrap_or(0);
    if interleave > 0 {
        addrs = eyeballs::interleave(addrs, interleave);
    }
    eyeballs::connect_any(lp, addrs, local, delay).await
}

/// Checks that `sock` is a stream socket and makes it non-blocking.
fn adopt_stream(sock: Socket) -> Result<Socket> {
    let fd = std::os::fd::AsRawFd::as_raw_fd(&sock);
    match sock.r#type() {
        Ok(kind) if kind == socket2::Type::STREAM => {}
        Ok(_) => {
            return Err(Error::InvalidArgument {
                what: "sock",
                value: format!("fd {fd}: a stream socket was expected"),
            });
        }
        Err(source) => {
            return Err(Error::Io {
                op: "getsockopt(SO_TYPE)",
                source,
            });
        }
    }
    sock.set_nonblocking(true)
        .map_err(Error::io("fcntl(O_NONBLOCK)"))?;
    Ok(sock)
}

async fn start_client<P, F>(
    lp: &EventLoop,
    socket: Socket,
    factory: F,
    tls: Option<ClientTls>,
) -> Result<(Transport, Rc<RefCell<P>>)>
where
    P: Protocol + 'static,
    F: FnOnce() -> P + 'static,
{
    let protocol = Rc::new(RefCell::new(factory()));
    let shared: SharedProtocol = protocol.clone();
    if let Some(tls) = tls {
        return Ok((tls.start(lp, socket, shared).await?, protocol));
    }
    let waiter = lp.create_future::<()>()?;
    let transport = transport::start(lp, socket, shared, None, Some(waiter.clone()))?;
    waiter.await?;
    Ok((transport, protocol))
}
