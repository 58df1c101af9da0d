//! `create_connection` and `create_unix_connection`: connect, then start a transport.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use socket2::{SockAddr, Socket};

use crate::error::{Error, Result};
use crate::event_loop::EventLoop;
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
}

impl EventLoop {
    /// Connects to `host:port` over TCP and starts a transport with a protocol from
    /// `factory` (asyncio's `loop.create_connection`). `host` is an IP literal (used as
    /// is) or a name resolved with getaddrinfo on the default executor; each address is
    /// tried in turn until one connects. The future resolves once the protocol's
    /// `connection_made` ran, to the transport and the protocol. TCP_NODELAY is on.
    ///
    /// Fails with [`Error::ConnectionRefused`] or [`Error::Connect`] naming the address
    /// (a single error when there was one address, or when all attempts failed alike),
    /// [`Error::MultipleErrors`] when several addresses failed differently,
    /// [`Error::Resolve`] if the name does not resolve, [`Error::AddressInUse`]/
    /// [`Error::Bind`] for a bad `local_addr`, [`Error::Closed`] if the loop is closed.
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
            let socket = connect_tcp(&lp, &host, port, options.local_addr).await?;
            start_client(&lp, socket, factory, tls).await
        }
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

/// Tries every address of `host` in order; asyncio's error rules when all fail.
async fn connect_tcp(
    lp: &EventLoop,
    host: &str,
    port: u16,
    local: Option<SocketAddr>,
) -> Result<Socket> {
    lp.check_open()?;
    let mut addrs = socket::resolve(lp, Some(host), port).await?;
    if let Some(local) = local {
        addrs.retain(|addr| addr.is_ipv4() == local.is_ipv4());
        if addrs.is_empty() {
            return Err(Error::InvalidArgument {
                what: "local_addr",
                value: format!("{local}: no address of {host} has its family"),
            });
        }
    }
    let mut errors = Vec::new();
    for addr in addrs {
        match socket::connect(lp, &addr.into(), &addr.to_string(), local).await {
            Ok(socket) => return Ok(socket),
            Err(err) => errors.push(err),
        }
    }
    Err(combine(errors))
}

/// asyncio's rule: one error, or several with the same message, is raised as the first;
/// otherwise all of them together.
fn combine(mut errors: Vec<Error>) -> Error {
    let Some(first) = errors.first().map(ToString::to_string) else {
        return Error::MultipleErrors(errors);
    };
    if errors.iter().all(|e| e.to_string() == first) {
        return errors.swap_remove(0);
    }
    Error::MultipleErrors(errors)
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

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    fn refused(addr: &str) -> Error {
        connect_error(addr.into(), io::ErrorKind::ConnectionRefused.into())
    }

    #[test]
    fn failed_attempts_combine_as_asyncio() {
        let cases: [(Vec<Error>, &str); 3] = [
            (vec![refused("a:1")], "connection to a:1 refused"),
            (
                vec![Error::TransportClosing, Error::TransportClosing],
                "transport is closing",
            ),
            (
                vec![refused("a:1"), refused("b:1")],
                "multiple exceptions: connection to a:1 refused: connection refused, \
                 connection to b:1 refused: connection refused",
            ),
        ];
        for (errors, expected) in cases {
            assert_eq!(combine(errors).to_string(), expected);
        }
    }
}
