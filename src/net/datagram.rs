//! Datagram endpoints: asyncio's `loop.create_datagram_endpoint` and the
//! [`DatagramProtocol`] it reports to, for UDP and Unix datagram sockets. The transport
//! itself is in `datagram_transport`.
//!
//! # Invariants
//! - Addresses pair up as asyncio's: each family both given addresses resolve to is one
//!   way to open the endpoint, tried in getaddrinfo's order; the first that binds (and
//!   connects) wins, and when none does the first attempt's error is returned.
//! - `reuse_address` is refused before anything is resolved or opened, as asyncio.
//! - A stale socket file at a Unix `local_addr` is removed before binding.

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use socket2::{Domain, SockAddr, Socket, Type};

use crate::error::{Error, Result};
use crate::event_loop::EventLoop;
use crate::net::Address;
use crate::net::datagram_transport::{DatagramTransport, start};
use crate::net::dns::{self, AddrInfoHints, Family, SockType};
use crate::net::socket::{bind_error, connect_error};

/// The callbacks of a datagram endpoint (asyncio's `DatagramProtocol`); every method has
/// a default that does nothing. Called on the loop's thread from its ready queue:
/// `connection_made` first, `connection_lost` last and once.
pub trait DatagramProtocol {
    /// The endpoint is ready; `transport` is the handle to send with and close it.
    fn connection_made(&mut self, transport: DatagramTransport) {
        let _ = transport;
    }

    /// A datagram arrived from `addr`. `data` borrows the loop's read buffer: copy what
    /// you keep.
    fn datagram_received(&mut self, data: &[u8], addr: Address) {
        let _ = (data, addr);
    }

    /// A send or receive failed (e.g. `ECONNREFUSED` after an ICMP port-unreachable); the
    /// endpoint stays open.
    fn error_received(&mut self, error: io::Error) {
        let _ = error;
    }

    /// The endpoint is closed: `None` after `close()` or `abort()`. Called exactly once.
    fn connection_lost(&mut self, error: Option<io::Error>) {
        let _ = error;
    }

    /// The write buffer went over its high-water mark: stop sending.
    fn pause_writing(&mut self) {}

    /// The write buffer drained to its low-water mark: sending may go on.
    fn resume_writing(&mut self) {}
}

/// A datagram protocol as the loop stores it.
pub(crate) type SharedDatagramProtocol = Rc<RefCell<dyn DatagramProtocol>>;

/// An address to bind or connect a datagram endpoint to (asyncio's `local_addr` and
/// `remote_addr`: a `(host, port)` tuple, or a path for `AF_UNIX`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatagramAddr {
    /// A host (IP literal or name, resolved with getaddrinfo) and a port.
    Inet {
        /// IP literal or host name.
        host: String,
        /// The port; 0 lets the system choose when binding.
        port: u16,
    },
    /// A Unix datagram socket path.
    Unix(PathBuf),
}

impl From<SocketAddr> for DatagramAddr {
    fn from(addr: SocketAddr) -> Self {
        DatagramAddr::Inet {
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }
}

impl From<(&str, u16)> for DatagramAddr {
    fn from((host, port): (&str, u16)) -> Self {
        DatagramAddr::Inet {
            host: host.to_string(),
            port,
        }
    }
}

impl From<&Path> for DatagramAddr {
    fn from(path: &Path) -> Self {
        DatagramAddr::Unix(path.to_path_buf())
    }
}

impl From<PathBuf> for DatagramAddr {
    fn from(path: PathBuf) -> Self {
        DatagramAddr::Unix(path)
    }
}

impl fmt::Display for DatagramAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatagramAddr::Inet { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            DatagramAddr::Inet { host, port } => write!(f, "{host}:{port}"),
            DatagramAddr::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

/// Options of [`EventLoop::create_datagram_endpoint`], named as asyncio's arguments.
#[derive(Clone, Debug, Default)]
pub struct DatagramOptions {
    /// Bind the socket here (`port` 0: any port). A stale socket file at a Unix path is
    /// removed first, as asyncio does.
    pub local_addr: Option<DatagramAddr>,
    /// Connect the socket here (unless `allow_broadcast`): `sendto` then needs no address
    /// and only datagrams from this peer arrive.
    pub remote_addr: Option<DatagramAddr>,
    /// The address family; needed when neither address is given, else a filter on what
    /// the names resolve to.
    pub family: Family,
    /// getaddrinfo's `proto` (0: any).
    pub proto: i32,
    /// getaddrinfo's `flags` (`AI_*`).
    pub flags: i32,
    /// Refused with [`Error::ReuseAddressNotSupported`] when `true`, as asyncio does.
    pub reuse_address: bool,
    /// `SO_REUSEPORT`: several endpoints may bind the same address.
    pub reuse_port: bool,
    /// `SO_BROADCAST`; `remote_addr` is then the default destination, not connected.
    pub allow_broadcast: bool,
}

impl EventLoop {
    /// Creates a datagram endpoint and a protocol from `factory` (asyncio's
    /// `loop.create_datagram_endpoint`). Names in `local_addr`/`remote_addr` resolve with
    /// getaddrinfo (`SOCK_DGRAM`) on the executor; each family both addresses resolve to
    /// is tried in turn. A Unix path in either address makes a Unix datagram socket. The
    /// future resolves once `connection_made` ran, to the transport and the protocol.
    ///
    /// Fails with [`Error::ReuseAddressNotSupported`] for `reuse_address`,
    /// [`Error::InvalidArgument`] when neither address nor a family is given, when the
    /// addresses mix Unix and IP, or when they resolve to no common family,
    /// [`Error::Resolve`] for a name that does not resolve, [`Error::AddressInUse`]/
    /// [`Error::Bind`] and [`Error::ConnectionRefused`]/[`Error::Connect`] naming the
    /// address (the first attempt's error when every family failed), [`Error::Closed`] if
    /// the loop is closed.
    ///
    /// # Examples
    /// ```
    /// use loopd::{DatagramOptions, DatagramProtocol, EventLoop};
    /// struct Quiet;
    /// impl DatagramProtocol for Quiet {}
    ///
    /// let lp = EventLoop::new().unwrap();
    /// let options = DatagramOptions {
    ///     local_addr: Some(("127.0.0.1", 0).into()),
    ///     ..Default::default()
    /// };
    /// let (transport, _) = lp
    ///     .run_until_complete(lp.create_datagram_endpoint(|| Quiet, options))
    ///     .unwrap()
    ///     .unwrap();
    /// assert!(transport.sockname().is_some());
    /// transport.close();
    /// ```
    pub fn create_datagram_endpoint<P, F>(
        &self,
        factory: F,
        options: DatagramOptions,
    ) -> impl std::future::Future<Output = Result<(DatagramTransport, Rc<RefCell<P>>)>> + 'static
    where
        P: DatagramProtocol + 'static,
        F: FnOnce() -> P + 'static,
    {
        let lp = self.clone();
        async move {
            lp.check_open()?;
            if options.reuse_address {
                return Err(Error::ReuseAddressNotSupported);
            }
            let plans = plan(&lp, &options).await?;
            let (socket, address) = open_first(&plans, &options)?;
            let protocol = Rc::new(RefCell::new(factory()));
            let shared: SharedDatagramProtocol = protocol.clone();
            let waiter = lp.create_future::<()>()?;
            let transport = start(&lp, socket, shared, address, waiter.clone())?;
            waiter.await?;
            Ok((transport, protocol))
        }
    }
}

/// One way to open the endpoint: a family and the addresses to bind and connect.
struct Plan {
    domain: Domain,
    proto: i32,
    local: Option<SockAddr>,
    remote: Option<SockAddr>,
    shown_local: String,
    shown_remote: String,
}

/// asyncio's address pairing: the families both given addresses resolve to, in order.
async fn plan(lp: &EventLoop, options: &DatagramOptions) -> Result<Vec<Plan>> {
    let (local, remote) = (options.local_addr.as_ref(), options.remote_addr.as_ref());
    let is_unix = |a: Option<&DatagramAddr>| matches!(a, Some(DatagramAddr::Unix(_)));
    let is_inet = |a: Option<&DatagramAddr>| matches!(a, Some(DatagramAddr::Inet { .. }));
    if (is_unix(local) || is_unix(remote)) && (is_inet(local) || is_inet(remote))
        || (is_unix(local) || is_unix(remote))
            && !matches!(options.family, Family::Unspec | Family::Unix)
    {
        return Err(Error::InvalidArgument {
            what: "datagram addresses",
            value: format!(
                "{}: unix paths and ip addresses cannot be mixed",
                shown(local, remote)
            ),
        });
    }
    if local.is_none() && remote.is_none() {
        return unbound_plan(options.family, options.proto);
    }
    if is_unix(local) || is_unix(remote) || options.family == Family::Unix {
        return unix_plan(local, remote).map(|plan| vec![plan]);
    }
    let local_addrs = resolve(lp, local, options).await?;
    let remote_addrs = resolve(lp, remote, options).await?;
    let mut plans = Vec::new();
    for family in [Family::Inet, Family::Inet6] {
        let first = |addrs: &Option<Vec<SocketAddr>>| -> Option<Option<SocketAddr>> {
            match addrs {
                None => Some(None),
                Some(addrs) => addrs
                    .iter()
                    .find(|a| Family::of(a) == family)
                    .map(|a| Some(*a)),
            }
        };
        let (Some(l), Some(r)) = (first(&local_addrs), first(&remote_addrs)) else {
            continue;
        };
        plans.push(Plan {
            domain: if family == Family::Inet {
                Domain::IPV4
            } else {
                Domain::IPV6
            },
            proto: options.proto,
            local: l.map(SockAddr::from),
            remote: r.map(SockAddr::from),
            shown_local: l.map(|a| a.to_string()).unwrap_or_default(),
            shown_remote: r.map(|a| a.to_string()).unwrap_or_default(),
        });
    }
    // asyncio tries families in the order getaddrinfo gave them for the first address.
    let order = local_addrs.as_ref().or(remote_addrs.as_ref());
    if let Some(first) = order.and_then(|addrs| addrs.first()) {
        plans.sort_by_key(|p| p.domain != Domain::for_address(*first));
    }
    if plans.is_empty() {
        return Err(Error::InvalidArgument {
            what: "datagram addresses",
            value: format!("{}: can not get address information", shown(local, remote)),
        });
    }
    Ok(plans)
}

fn shown(local: Option<&DatagramAddr>, remote: Option<&DatagramAddr>) -> String {
    let one = |a: Option<&DatagramAddr>| a.map_or("none".to_string(), ToString::to_string);
    format!("local {} remote {}", one(local), one(remote))
}

async fn resolve(
    lp: &EventLoop,
    addr: Option<&DatagramAddr>,
    options: &DatagramOptions,
) -> Result<Option<Vec<SocketAddr>>> {
    let Some(DatagramAddr::Inet { host, port }) = addr else {
        return Ok(None);
    };
    let hints = AddrInfoHints {
        family: options.family,
        socktype: SockType::Datagram,
        proto: options.proto,
        flags: options.flags,
    };
    let addrs = dns::resolve_addrs(lp, host, *port, hints).await?;
    Ok(Some(addrs))
}

fn unbound_plan(family: Family, proto: i32) -> Result<Vec<Plan>> {
    let domain = match family {
        Family::Inet => Domain::IPV4,
        Family::Inet6 => Domain::IPV6,
        Family::Unix => Domain::UNIX,
        Family::Unspec => {
            return Err(Error::InvalidArgument {
                what: "family",
                value: "unspecified: unexpected address family without local_addr or \
                        remote_addr"
                    .to_string(),
            });
        }
    };
    Ok(vec![Plan {
        domain,
        proto,
        local: None,
        remote: None,
        shown_local: String::new(),
        shown_remote: String::new(),
    }])
}

fn unix_plan(local: Option<&DatagramAddr>, remote: Option<&DatagramAddr>) -> Result<Plan> {
    let path = |a: Option<&DatagramAddr>| match a {
        Some(DatagramAddr::Unix(p)) => Some(p.clone()),
        _ => None,
    };
    let (local, remote) = (path(local), path(remote));
    if let Some(local) = &local {
        remove_stale_socket(local);
    }
    let addr = |p: &Option<PathBuf>, fail: fn(String, io::Error) -> Error| {
        p.as_ref()
            .map(|p| SockAddr::unix(p).map_err(|e| fail(p.display().to_string(), e)))
            .transpose()
    };
    Ok(Plan {
        domain: Domain::UNIX,
        proto: 0,
        local: addr(&local, bind_error)?,
        remote: addr(&remote, connect_error)?,
        shown_local: local.map(|p| p.display().to_string()).unwrap_or_default(),
        shown_remote: remote.map(|p| p.display().to_string()).unwrap_or_default(),
    })
}

/// asyncio removes a socket file left at a Unix datagram endpoint's local path.
fn remove_stale_socket(path: &Path) {
    use std::os::unix::fs::FileTypeExt;
    if std::fs::metadata(path).is_ok_and(|meta| meta.file_type().is_socket()) {
        if let Err(err) = std::fs::remove_file(path) {
            tracing::debug!(target: "loopd", "removing stale socket {}: {err}", path.display());
        }
    }
}

/// Opens the first plan that works; asyncio raises the first error when none does.
fn open_first(plans: &[Plan], options: &DatagramOptions) -> Result<(Socket, Option<Address>)> {
    let mut first_error = None;
    for plan in plans {
        match open(plan, options) {
            Ok(opened) => return Ok(opened),
            Err(err) => {
                first_error.get_or_insert(err);
            }
        }
    }
    Err(first_error.unwrap_or(Error::InvalidArgument {
        what: "datagram addresses",
        value: "none to try".to_string(),
    }))
}

/// Makes, binds and connects one socket; returns it with its default destination.
fn open(plan: &Plan, options: &DatagramOptions) -> Result<(Socket, Option<Address>)> {
    let protocol = (plan.proto != 0).then_some(socket2::Protocol::from(plan.proto));
    let socket = Socket::new(plan.domain, Type::DGRAM, protocol).map_err(Error::io("socket"))?;
    socket
        .set_nonblocking(true)
        .map_err(Error::io("fcntl(O_NONBLOCK)"))?;
    if options.reuse_port {
        socket
            .set_reuse_port(true)
            .map_err(Error::io("setsockopt(SO_REUSEPORT)"))?;
    }
    if options.allow_broadcast {
        socket
            .set_broadcast(true)
            .map_err(Error::io("setsockopt(SO_BROADCAST)"))?;
    }
    if let Some(local) = &plan.local {
        socket
            .bind(local)
            .map_err(|source| bind_error(plan.shown_local.clone(), source))?;
    }
    let Some(remote) = &plan.remote else {
        return Ok((socket, None));
    };
    if !options.allow_broadcast {
        // Connecting a datagram socket only sets its peer: it never blocks.
        socket
            .connect(remote)
            .map_err(|source| connect_error(plan.shown_remote.clone(), source))?;
    }
    Ok((socket, Some(Address::of(remote))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagram_addrs_render_as_given() {
        let cases: [(DatagramAddr, &str); 4] = [
            (("127.0.0.1", 9).into(), "127.0.0.1:9"),
            (("::1", 9).into(), "[::1]:9"),
            ("[::1]:9".parse::<SocketAddr>().unwrap().into(), "[::1]:9"),
            (Path::new("/tmp/x.sock").into(), "/tmp/x.sock"),
        ];
        for (addr, shown) in cases {
            assert_eq!(addr.to_string(), shown);
        }
    }

    #[test]
    fn an_unbound_endpoint_needs_a_family() {
        assert!(unbound_plan(Family::Unspec, 0).is_err());
        for family in [Family::Inet, Family::Inet6, Family::Unix] {
            assert!(unbound_plan(family, 0).is_ok(), "{family:?}");
        }
    }
}
