//! Making sockets: name resolution, binding listeners, non-blocking connects.
//!
//! Errors name the address they concern (`address 127.0.0.1:8080 is already in use`,
//! `connection to 127.0.0.1:1 refused`), keeping the OS error as the source.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::Path;

use mio::Interest;
use socket2::{Domain, SockAddr, Socket, Type};

use crate::error::{Error, Result};
use crate::event_loop::EventLoop;
use crate::net::dns::{self, AddrInfoHints, SockType};

/// The addresses `host` names: an IP literal directly, anything else through getaddrinfo
/// on the default executor (as asyncio's `getaddrinfo`, `SOCK_STREAM`, `AI_PASSIVE`).
/// `None` (or an empty name) means every interface: `0.0.0.0` and `::`.
pub(crate) async fn resolve(
    lp: &EventLoop,
    host: Option<&str>,
    port: u16,
) -> Result<Vec<SocketAddr>> {
    let host = match host {
        None | Some("") => {
            return Ok(vec![
                SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
                SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
            ]);
        }
        Some(host) => host,
    };
    let hints = AddrInfoHints {
        socktype: SockType::Stream,
        flags: libc::AI_PASSIVE,
        ..Default::default()
    };
    dns::resolve_addrs(lp, host, port, hints).await
}

/// The error for a failed `bind` to `addr`.
pub(crate) fn bind_error(addr: String, source: io::Error) -> Error {
    if source.kind() == io::ErrorKind::AddrInUse {
        Error::AddressInUse { addr, source }
    } else {
        Error::Bind { addr, source }
    }
}

/// The error for a failed connect to `addr`.
pub(crate) fn connect_error(addr: String, source: io::Error) -> Error {
    if source.kind() == io::ErrorKind::ConnectionRefused {
        Error::ConnectionRefused { addr, source }
    } else {
        Error::Connect { addr, source }
    }
}

/// A non-blocking, close-on-exec stream socket.
fn stream_socket(domain: Domain) -> io::Result<Socket> {
    let protocol = (domain != Domain::UNIX).then_some(socket2::Protocol::TCP);
    let socket = Socket::new(domain, Type::STREAM, protocol)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// Options of a listening TCP socket.
pub(crate) struct BindOptions {
    pub(crate) reuse_address: bool,
    pub(crate) reuse_port: bool,
}

/// A TCP socket bound to `addr` (not listening yet). `Ok(None)` when the address family
/// is not supported here (e.g. IPv6 disabled), which asyncio skips silently too.
pub(crate) fn bind_tcp(addr: SocketAddr, options: &BindOptions) -> Result<Option<Socket>> {
    let socket = match stream_socket(Domain::for_address(addr)) {
        Ok(socket) => socket,
        Err(err) if err.raw_os_error() == Some(libc::EAFNOSUPPORT) => return Ok(None),
        Err(source) => {
            return Err(Error::Io {
                op: "socket",
                source,
            });
        }
    };
    let set = |result: io::Result<()>, op| result.map_err(|source| Error::Io { op, source });
    if options.reuse_address {
        set(socket.set_reuse_address(true), "setsockopt(SO_REUSEADDR)")?;
    }
    if options.reuse_port {
        set(socket.set_reuse_port(true), "setsockopt(SO_REUSEPORT)")?;
    }
    if addr.is_ipv6() {
        // As asyncio: `::` must not also take the IPv4 port that `0.0.0.0` binds.
        set(socket.set_only_v6(true), "setsockopt(IPV6_V6ONLY)")?;
    }
    socket
        .bind(&addr.into())
        .map_err(|source| bind_error(addr.to_string(), source))?;
    Ok(Some(socket))
}

/// A Unix stream socket bound to `path` (not listening yet). A stale socket file at
/// `path` is removed first, as asyncio does; any other kind of file makes the bind fail.
pub(crate) fn bind_unix(path: &Path) -> Result<Socket> {
    use std::os::unix::fs::FileTypeExt;
    let display = path.display().to_string();
    if std::fs::metadata(path).is_ok_and(|meta| meta.file_type().is_socket()) {
        if let Err(err) = std::fs::remove_file(path) {
            tracing::debug!(target: "loopd", "removing stale socket {}: {err}", path.display());
        }
    }
    let socket = stream_socket(Domain::UNIX).map_err(|source| Error::Io {
        op: "socket",
        source,
    })?;
    let addr = SockAddr::unix(path).map_err(|source| Error::Bind {
        addr: display.clone(),
        source,
    })?;
    socket
        .bind(&addr)
        .map_err(|source| bind_error(display, source))?;
    Ok(socket)
}

/// Connects a new socket to `addr` (bound first to `local` if given) without blocking the
/// loop: a non-blocking `connect`, then the loop waits for writability and reads
/// `SO_ERROR`, as asyncio's `sock_connect`.
pub(crate) async fn connect(
    lp: &EventLoop,
    addr: &SockAddr,
    shown: &str,
    local: Option<SocketAddr>,
) -> Result<Socket> {
    let domain = addr.domain();
    let socket = stream_socket(domain).map_err(|source| Error::Io {
        op: "socket",
        source,
    })?;
    if let Some(local) = local {
        socket
            .bind(&local.into())
            .map_err(|source| bind_error(local.to_string(), source))?;
    }
    let fail = |source| connect_error(shown.to_string(), source);
    match socket.connect(addr) {
        Ok(()) => return Ok(socket),
        Err(err)
            if err.raw_os_error() == Some(libc::EINPROGRESS)
                || err.kind() == io::ErrorKind::WouldBlock => {}
        Err(err) => return Err(fail(err)),
    }
    wait_writable(lp, &socket).await?;
    match socket.take_error() {
        Ok(None) => Ok(socket),
        Ok(Some(err)) | Err(err) => Err(fail(err)),
    }
}

/// Waits until `socket` is writable (or has an error), through a temporary registration.
async fn wait_writable(lp: &EventLoop, socket: &Socket) -> Result<()> {
    crate::net::sock::wait_ready(lp, socket.as_raw_fd(), Interest::WRITABLE).await
}
