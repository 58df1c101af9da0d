//! Low-level socket operations awaited on the loop: asyncio's `sock_recv`,
//! `sock_recv_into`, `sock_recvfrom`, `sock_sendall`, `sock_sendto`, `sock_connect` and
//! `sock_accept`, on any non-blocking socket the caller owns.
//!
//! # Invariants
//! - Each operation tries the system call first; only on `EAGAIN` does it register the fd
//!   with the loop's poll (for the one direction it waits for) and await readiness, then
//!   tries again. The registration is removed when the wait ends or the future is dropped,
//!   so the fd is free for the next operation (or for `add_reader`).
//! - The sockets are borrowed, never closed: the futures borrow them (await them inside a
//!   task that owns the socket). A blocking socket is refused, since a call on it would
//!   block the whole loop (asyncio checks this in debug mode only).

use std::io::{self, Read};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::rc::Rc;

use mio::Interest;
use mio::unix::SourceFd;
use socket2::{SockAddr, SockRef, Socket};

use crate::error::{Error, Result};
use crate::event_loop::{EventLoop, IoDispatch};
use crate::net::Address;
use crate::net::socket::connect_error;

impl EventLoop {
    /// Receives up to `nbytes` bytes from `sock` (asyncio's `loop.sock_recv`); an empty
    /// vector means the peer closed its side.
    ///
    /// Fails with [`Error::InvalidArgument`] for a blocking socket, [`Error::Sock`] naming
    /// the call and fd when the OS says no, [`Error::Register`] if the fd is already
    /// watched by the loop (a transport or `add_reader` has it), [`Error::Closed`].
    pub async fn sock_recv(&self, sock: &impl AsFd, nbytes: usize) -> Result<Vec<u8>> {
        let mut buffer = vec![0; nbytes];
        let n = self.sock_recv_into(sock, &mut buffer).await?;
        buffer.truncate(n);
        Ok(buffer)
    }

    /// Receives into `buf` (asyncio's `loop.sock_recv_into`); returns how many bytes, 0 at
    /// end of stream. Fails as [`sock_recv`](Self::sock_recv).
    pub async fn sock_recv_into(&self, sock: &impl AsFd, buf: &mut [u8]) -> Result<usize> {
        let sock = checked(sock)?;
        retry(self, &sock, Interest::READABLE, "recv", |s| {
            (&**s).read(buf)
        })
        .await
    }

    /// Receives one datagram into `buf` and its sender's address (asyncio's
    /// `loop.sock_recvfrom_into`). Fails as [`sock_recv`](Self::sock_recv).
    pub async fn sock_recvfrom_into(
        &self,
        sock: &impl AsFd,
        buf: &mut [u8],
    ) -> Result<(usize, Address)> {
        let sock = checked(sock)?;
        let recv = |s: &SockRef<'_>| {
            // SAFETY: `[u8]` and `[MaybeUninit<u8>]` have the same layout; recv_from only
            // writes initialised bytes into the (already initialised) buffer.
            let uninit = unsafe { &mut *(&mut *buf as *mut [u8] as *mut [MaybeUninit<u8>]) };
            s.recv_from(uninit).map(|(n, from)| (n, Address::of(&from)))
        };
        retry(self, &sock, Interest::READABLE, "recvfrom", recv).await
    }

    /// Sends all of `data` (asyncio's `loop.sock_sendall`), waiting for the socket to
    /// drain as often as needed. Fails as [`sock_recv`](Self::sock_recv) (`EPIPE` and
    /// `ECONNRESET` included; no `SIGPIPE` is raised).
    pub async fn sock_sendall(&self, sock: &impl AsFd, data: &[u8]) -> Result<()> {
        let sock = checked(sock)?;
        let mut sent = 0;
        while sent < data.len() {
            let rest = &data[sent..];
            let send = |s: &SockRef<'_>| s.send_with_flags(rest, libc::MSG_NOSIGNAL);
            sent += retry(self, &sock, Interest::WRITABLE, "send", send).await?;
        }
        Ok(())
    }

    /// Sends `data` as one datagram to `addr` (asyncio's `loop.sock_sendto`); returns the
    /// bytes sent. Fails as [`sock_recv`](Self::sock_recv).
    pub async fn sock_sendto(
        &self,
        sock: &impl AsFd,
        data: &[u8],
        addr: &SockAddr,
    ) -> Result<usize> {
        let sock = checked(sock)?;
        let send = |s: &SockRef<'_>| s.send_to_with_flags(data, addr, libc::MSG_NOSIGNAL);
        retry(self, &sock, Interest::WRITABLE, "sendto", send).await
    }

    /// Connects `sock` to `addr` (asyncio's `loop.sock_connect`): a non-blocking
    /// `connect`, then a wait for writability and a look at `SO_ERROR`.
    ///
    /// Fails with [`Error::ConnectionRefused`] or [`Error::Connect`] naming the address,
    /// else as [`sock_recv`](Self::sock_recv).
    pub async fn sock_connect(&self, sock: &impl AsFd, addr: &SockAddr) -> Result<()> {
        let sock = checked(sock)?;
        let shown = shown(addr);
        let fail = |source| connect_error(shown.clone(), source);
        match sock.connect(addr) {
            Ok(()) => return Ok(()),
            Err(err) if err.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(err) => return Err(fail(err)),
        }
        wait_ready(self, sock.as_raw_fd(), Interest::WRITABLE).await?;
        match sock.take_error() {
            Ok(None) => Ok(()),
            Ok(Some(err)) | Err(err) => Err(fail(err)),
        }
    }

    /// Accepts a connection on the listening `sock` (asyncio's `loop.sock_accept`): the
    /// new socket (non-blocking, close-on-exec) and the peer's address.
    ///
    /// Fails as [`sock_recv`](Self::sock_recv).
    pub async fn sock_accept(&self, sock: &impl AsFd) -> Result<(Socket, Address)> {
        let sock = checked(sock)?;
        let accept = |s: &SockRef<'_>| s.accept();
        let (conn, from) = retry(self, &sock, Interest::READABLE, "accept", accept).await?;
        conn.set_nonblocking(true)
            .map_err(Error::io("fcntl(O_NONBLOCK)"))?;
        Ok((conn, Address::of(&from)))
    }
}

/// The socket, if it is non-blocking.
pub(crate) fn checked(sock: &impl AsFd) -> Result<SockRef<'_>> {
    let fd = sock.as_fd().as_raw_fd();
    // SAFETY: F_GETFL on a borrowed, open descriptor.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(Error::Sock {
            op: "fcntl(F_GETFL)",
            fd,
            source: io::Error::last_os_error(),
        });
    }
    if flags & libc::O_NONBLOCK == 0 {
        return Err(Error::InvalidArgument {
            what: "sock",
            value: format!("fd {fd}: the socket must be non-blocking"),
        });
    }
    Ok(SockRef::from(sock))
}

fn shown(addr: &SockAddr) -> String {
    match Address::of(addr) {
        Address::Unix(None) => "<unnamed unix socket>".to_string(),
        other => other.to_string(),
    }
}

/// Runs `call` until it does not say `EAGAIN`, waiting for `interest` in between.
async fn retry<T>(
    lp: &EventLoop,
    sock: &SockRef<'_>,
    interest: Interest,
    op: &'static str,
    mut call: impl FnMut(&SockRef<'_>) -> io::Result<T>,
) -> Result<T> {
    lp.check_open()?;
    let fd = sock.as_raw_fd();
    loop {
        match call(sock) {
            Ok(value) => return Ok(value),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                wait_ready(lp, fd, interest).await?;
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => return Err(Error::Sock { op, fd, source }),
        }
    }
}

/// Waits until `fd` is ready for `interest` (or has an error), through a temporary
/// registration that is removed when the wait ends or is dropped.
pub(crate) async fn wait_ready(lp: &EventLoop, fd: RawFd, interest: Interest) -> Result<()> {
    let ready = lp.create_future::<()>()?;
    let done = ready.clone();
    let dispatch: IoDispatch = Rc::new(move |_: &EventLoop, _| {
        if !done.done() {
            let _ = done.set_result(());
        }
    });
    let token = lp
        .register_source(&mut SourceFd(&fd), interest, dispatch)
        .map_err(|source| Error::Register { fd, source })?;
    struct Registration<'a>(&'a EventLoop, RawFd, mio::Token);
    impl Drop for Registration<'_> {
        fn drop(&mut self) {
            let _ = self.0.deregister_source(&mut SourceFd(&self.1), self.2);
        }
    }
    let _registration = Registration(lp, fd, token);
    ready.await
}
