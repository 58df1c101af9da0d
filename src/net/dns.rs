//! Name resolution: asyncio's `loop.getaddrinfo` and `loop.getnameinfo`, which run the
//! blocking C library calls on the loop's default executor and return futures.
//!
//! # Invariants
//! - The loop thread never blocks on a lookup: libc's `getaddrinfo`/`getnameinfo` run on
//!   an executor thread; the loop only awaits the executor's future.
//! - Errors name what was looked up: [`Error::Resolve`] carries the host as given,
//!   [`Error::NameInfo`] the address; the C library's own message (`gai_strerror`) is the
//!   source, or the OS error for `EAI_SYSTEM`.
//! - The C list is freed on every path (`freeaddrinfo` in a drop guard).

use std::ffi::{CStr, CString, c_char, c_int};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use crate::error::{Error, Result};
use crate::event_loop::EventLoop;

/// An address family (asyncio's `family=`: `socket.AF_*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Family {
    /// `AF_UNSPEC` (asyncio's `family=0`): any family.
    #[default]
    Unspec,
    /// `AF_INET`: IPv4.
    Inet,
    /// `AF_INET6`: IPv6.
    Inet6,
    /// `AF_UNIX`: Unix-domain sockets (paths).
    Unix,
}

impl Family {
    /// The C constant.
    pub fn raw(self) -> c_int {
        match self {
            Family::Unspec => libc::AF_UNSPEC,
            Family::Inet => libc::AF_INET,
            Family::Inet6 => libc::AF_INET6,
            Family::Unix => libc::AF_UNIX,
        }
    }

    /// The family of an IP socket address.
    pub fn of(addr: &SocketAddr) -> Family {
        match addr {
            SocketAddr::V4(_) => Family::Inet,
            SocketAddr::V6(_) => Family::Inet6,
        }
    }

    /// Whether `addr` belongs to this family (`Unspec` admits every address).
    pub fn admits(self, addr: &SocketAddr) -> bool {
        self == Family::Unspec || self == Family::of(addr)
    }
}

/// A socket type (asyncio's `type=`: `socket.SOCK_*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SockType {
    /// `0`: any type (getaddrinfo then lists each address once per type).
    #[default]
    Any,
    /// `SOCK_STREAM`.
    Stream,
    /// `SOCK_DGRAM`.
    Datagram,
    /// `SOCK_RAW`.
    Raw,
}

impl SockType {
    /// The C constant.
    pub fn raw(self) -> c_int {
        match self {
            SockType::Any => 0,
            SockType::Stream => libc::SOCK_STREAM,
            SockType::Datagram => libc::SOCK_DGRAM,
            SockType::Raw => libc::SOCK_RAW,
        }
    }

    fn from_raw(raw: c_int) -> SockType {
        match raw {
            libc::SOCK_STREAM => SockType::Stream,
            libc::SOCK_DGRAM => SockType::Datagram,
            libc::SOCK_RAW => SockType::Raw,
            _ => SockType::Any,
        }
    }
}

/// The hints of [`EventLoop::getaddrinfo`]: asyncio's keyword arguments `family`, `type`,
/// `proto` and `flags` (the `libc::AI_*` bits, e.g. `AI_PASSIVE`, `AI_CANONNAME`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddrInfoHints {
    /// Only addresses of this family; `Unspec` for all.
    pub family: Family,
    /// Only this socket type; `Any` for all.
    pub socktype: SockType,
    /// Only this protocol (`IPPROTO_*`); 0 for all.
    pub proto: i32,
    /// `AI_*` flags.
    pub flags: i32,
}

/// One entry of [`EventLoop::getaddrinfo`]'s answer, as asyncio's 5-tuple
/// `(family, type, proto, canonname, sockaddr)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddrInfo {
    /// `Inet` or `Inet6`.
    pub family: Family,
    /// The socket type this entry is for.
    pub socktype: SockType,
    /// The protocol (`IPPROTO_TCP`, `IPPROTO_UDP`, ...).
    pub proto: i32,
    /// The canonical name, on the first entry when `AI_CANONNAME` was asked; else empty.
    pub canonname: String,
    /// The address and port.
    pub addr: SocketAddr,
}

impl EventLoop {
    /// Resolves `host` and `port` on the default executor (asyncio's `loop.getaddrinfo`):
    /// the C library's `getaddrinfo` with `hints`. `None` for `host` with `AI_PASSIVE`
    /// gives the wildcard addresses, without it the loopback ones; `None` for `port` gives
    /// port 0. Only IPv4 and IPv6 entries are returned.
    ///
    /// Fails with [`Error::Resolve`] naming the host (the source is `gai_strerror`'s
    /// message, e.g. "Name or service not known"), [`Error::Closed`] if the loop is closed,
    /// [`Error::ExecutorShutdown`] after `shutdown_default_executor`.
    ///
    /// # Examples
    /// ```
    /// use loopd::{AddrInfoHints, EventLoop, SockType};
    /// let lp = EventLoop::new().unwrap();
    /// let hints = AddrInfoHints { socktype: SockType::Stream, ..Default::default() };
    /// let infos = lp
    ///     .run_until_complete(lp.getaddrinfo(Some("127.0.0.1"), Some(80), hints))
    ///     .unwrap()
    ///     .unwrap();
    /// assert_eq!(infos[0].addr, "127.0.0.1:80".parse().unwrap());
    /// ```
    pub fn getaddrinfo(
        &self,
        host: Option<&str>,
        port: Option<u16>,
        hints: AddrInfoHints,
    ) -> impl std::future::Future<Output = Result<Vec<AddrInfo>>> + 'static {
        let lp = self.clone();
        let host = host.map(str::to_string);
        async move {
            let shown = host.clone().unwrap_or_default();
            let lookup =
                lp.run_in_executor(move || lookup_addrinfo(host.as_deref(), port, hints))?;
            lookup.take().await?.map_err(|source| Error::Resolve {
                host: shown,
                source,
            })
        }
    }

    /// The host and service names of `addr` on the default executor (asyncio's
    /// `loop.getnameinfo`): the C library's `getnameinfo` with `flags` (`libc::NI_*`, e.g.
    /// `NI_NUMERICHOST | NI_NUMERICSERV`).
    ///
    /// Fails with [`Error::NameInfo`] naming the address (e.g. with `NI_NAMEREQD` for an
    /// address without a name), [`Error::Closed`] if the loop is closed.
    pub fn getnameinfo(
        &self,
        addr: SocketAddr,
        flags: i32,
    ) -> impl std::future::Future<Output = Result<(String, String)>> + 'static {
        let lp = self.clone();
        async move {
            let lookup = lp.run_in_executor(move || lookup_nameinfo(addr, flags))?;
            lookup.take().await?.map_err(|source| Error::NameInfo {
                addr: addr.to_string(),
                source,
            })
        }
    }
}

/// The addresses of `host` for the given family and type, in getaddrinfo's order, with
/// duplicates (the same address for another protocol) left out: what connecting and
/// binding iterate over.
pub(crate) async fn resolve_addrs(
    lp: &EventLoop,
    host: &str,
    port: u16,
    hints: AddrInfoHints,
) -> Result<Vec<SocketAddr>> {
    let family = hints.family;
    let literal = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = literal.parse::<std::net::IpAddr>() {
        let addr = SocketAddr::new(ip, port);
        if !family.admits(&addr) {
            return Err(Error::Resolve {
                host: host.to_string(),
                source: io::Error::other(format!("address is not of family {family:?}")),
            });
        }
        return Ok(vec![addr]);
    }
    let infos = lp.getaddrinfo(Some(host), Some(port), hints).await?;
    let mut addrs: Vec<SocketAddr> = Vec::with_capacity(infos.len());
    for info in infos {
        if !addrs.contains(&info.addr) {
            addrs.push(info.addr);
        }
    }
    if addrs.is_empty() {
        return Err(Error::Resolve {
            host: host.to_string(),
            source: io::Error::other("getaddrinfo() returned empty list"),
        });
    }
    Ok(addrs)
}

/// Frees a getaddrinfo list when dropped.
struct AddrInfoList(*mut libc::addrinfo);

impl Drop for AddrInfoList {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the pointer came from a successful getaddrinfo and is freed once.
            unsafe { libc::freeaddrinfo(self.0) };
        }
    }
}

/// Blocking `getaddrinfo` (run on an executor thread).
fn lookup_addrinfo(
    host: Option<&str>,
    port: Option<u16>,
    hints: AddrInfoHints,
) -> io::Result<Vec<AddrInfo>> {
    let invalid = |what| io::Error::new(io::ErrorKind::InvalidInput, what);
    let host = host
        .map(CString::new)
        .transpose()
        .map_err(|_| invalid("host name contains a NUL byte"))?;
    let service = port.map(|p| CString::new(p.to_string())).transpose();
    let service = service.map_err(|_| invalid("port"))?;
    // SAFETY: an all-zero addrinfo is a valid "no hints" value.
    let mut c_hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    c_hints.ai_family = hints.family.raw();
    c_hints.ai_socktype = hints.socktype.raw();
    c_hints.ai_protocol = hints.proto;
    c_hints.ai_flags = hints.flags;
    let mut list = AddrInfoList(std::ptr::null_mut());
    // SAFETY: the strings are NUL-terminated or null, the hints and out-pointer valid.
    let rc = unsafe {
        libc::getaddrinfo(
            host.as_ref().map_or(std::ptr::null(), |h| h.as_ptr()),
            service.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            &c_hints,
            &mut list.0,
        )
    };
    if rc != 0 {
        return Err(gai_error(rc));
    }
    let mut infos = Vec::new();
    let mut entry = list.0;
    while !entry.is_null() {
        // SAFETY: entries of a live list returned by getaddrinfo.
        let info = unsafe { &*entry };
        if let Some(addr) = socket_addr(info.ai_addr, info.ai_addrlen) {
            infos.push(AddrInfo {
                family: Family::of(&addr),
                socktype: SockType::from_raw(info.ai_socktype),
                proto: info.ai_protocol,
                canonname: c_string(info.ai_canonname),
                addr,
            });
        }
        entry = info.ai_next;
    }
    Ok(infos)
}

/// Blocking `getnameinfo` (run on an executor thread).
fn lookup_nameinfo(addr: SocketAddr, flags: i32) -> io::Result<(String, String)> {
    let sockaddr = socket2::SockAddr::from(addr);
    let mut host = [0 as c_char; libc::NI_MAXHOST as usize];
    let mut service = [0 as c_char; 32];
    // SAFETY: the address and both buffers are valid for the lengths given.
    let rc = unsafe {
        libc::getnameinfo(
            sockaddr.as_ptr().cast(),
            sockaddr.len(),
            host.as_mut_ptr(),
            host.len() as libc::socklen_t,
            service.as_mut_ptr(),
            service.len() as libc::socklen_t,
            flags,
        )
    };
    if rc != 0 {
        return Err(gai_error(rc));
    }
    Ok((c_string(host.as_ptr()), c_string(service.as_ptr())))
}

/// A getaddrinfo/getnameinfo error code as an `io::Error` with the C library's message.
fn gai_error(rc: c_int) -> io::Error {
    if rc == libc::EAI_SYSTEM {
        return io::Error::last_os_error();
    }
    // SAFETY: gai_strerror returns a static NUL-terminated string for any code.
    let message = c_string(unsafe { libc::gai_strerror(rc) });
    io::Error::other(message)
}

/// A C string as an owned `String` (empty for null).
fn c_string(ptr: *const c_char) -> String {
    if ptr.is_null() {
        return String::new();
    }
    // SAFETY: callers pass NUL-terminated strings that outlive this call.
    unsafe { CStr::from_ptr(ptr) }
        .to_string_lossy()
        .into_owned()
}

/// An IPv4/IPv6 `sockaddr` as a `SocketAddr`; `None` for other families.
fn socket_addr(ptr: *const libc::sockaddr, len: libc::socklen_t) -> Option<SocketAddr> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: getaddrinfo gives a sockaddr of `len` bytes whose family field is valid; the
    // family decides which larger struct it is, and the length is checked first.
    unsafe {
        match c_int::from((*ptr).sa_family) {
            libc::AF_INET if len as usize >= size_of::<libc::sockaddr_in>() => {
                let sin = &*ptr.cast::<libc::sockaddr_in>();
                let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                Some(SocketAddrV4::new(ip, u16::from_be(sin.sin_port)).into())
            }
            libc::AF_INET6 if len as usize >= size_of::<libc::sockaddr_in6>() => {
                let sin6 = &*ptr.cast::<libc::sockaddr_in6>();
                let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                let port = u16::from_be(sin6.sin6_port);
                Some(SocketAddrV6::new(ip, port, sin6.sin6_flowinfo, sin6.sin6_scope_id).into())
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_lookups_need_no_resolver() {
        let hints = |family, flags| AddrInfoHints {
            family,
            socktype: SockType::Stream,
            flags,
            ..Default::default()
        };
        let numeric = libc::AI_NUMERICHOST;
        let cases: [(&str, AddrInfoHints, Option<&str>); 4] = [
            (
                "127.0.0.1",
                hints(Family::Unspec, numeric),
                Some("127.0.0.1:7"),
            ),
            ("::1", hints(Family::Inet6, numeric), Some("[::1]:7")),
            ("::1", hints(Family::Inet, numeric), None),
            ("not-an-ip", hints(Family::Unspec, numeric), None),
        ];
        for (host, hints, expected) in cases {
            let got = lookup_addrinfo(Some(host), Some(7), hints).ok();
            let first = got.as_ref().and_then(|infos| infos.first()).map(|i| i.addr);
            assert_eq!(first, expected.map(|e| e.parse().unwrap()), "{host}");
        }
    }

    #[test]
    fn numeric_nameinfo_renders_address_and_port() {
        let flags = libc::NI_NUMERICHOST | libc::NI_NUMERICSERV;
        let cases = [
            ("127.0.0.1:80", "127.0.0.1", "80"),
            ("[::1]:443", "::1", "443"),
        ];
        for (addr, host, service) in cases {
            let got = lookup_nameinfo(addr.parse().unwrap(), flags).unwrap();
            assert_eq!(got, (host.to_string(), service.to_string()), "{addr}");
        }
    }
}
