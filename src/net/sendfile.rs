//! `loop.sendfile` and `loop.sock_sendfile`: a file sent through a transport or a socket
//! by the kernel's `sendfile(2)`, or by reading and writing chunks when it cannot.
//!
//! # Invariants
//! - The kernel path runs only on a transport whose write buffer is empty: it waits for the
//!   buffer to drain first. From then until it ends, the transport's reading is paused (and
//!   resumed after, if it was reading) and its `write` fails with
//!   [`Error::SendfileInProgress`], as asyncio's.
//! - The socket's fd is looked up again before every `sendfile(2)` call: once the transport
//!   lost its socket, the number may belong to another file.
//! - On every path that sent something, the file's position ends at `offset + sent`
//!   (`sendfile(2)` with an offset pointer does not move it; asyncio seeks it there).
//! - The fallback reads the file on the executor (`pread`, never the loop thread; plain
//!   `read` for pipes and FIFOs, which have no offsets) and writes each chunk once the
//!   transport's buffer has drained.

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::fs::FileExt;

use mio::Interest;

use crate::error::{Error, Result};
use crate::event_loop::EventLoop;
use crate::future::Future;
use crate::net::sock::{checked, wait_ready};
use crate::net::{ExtraInfo, Transport};

/// The most one `sendfile(2)` call is asked to send (asyncio's cap too).
const MAX_KERNEL_CHUNK: u64 = 1 << 30;

/// The size of the fallback's reads (asyncio reads 16 KiB; larger reads mean fewer trips
/// to the executor).
const FALLBACK_CHUNK: u64 = 64 * 1024;

/// What a stream transport keeps for `loop.sendfile`: the in-progress flag and the waiters
/// its readiness and flushes wake.
#[derive(Default)]
pub(crate) struct SendfileHook {
    active: Cell<bool>,
    /// Set by transports the kernel cannot send through (TLS).
    pub(crate) kernel_unavailable: Cell<bool>,
    drained: RefCell<Option<Future<()>>>,
    writable: RefCell<Option<Future<()>>>,
}

impl SendfileHook {
    /// Whether a kernel sendfile is using the transport (its `write` must fail).
    pub(crate) fn is_active(&self) -> bool {
        self.active.get()
    }

    /// The socket became writable.
    pub(crate) fn on_writable(&self) {
        wake(&self.writable);
    }

    /// The write buffer was flushed.
    pub(crate) fn on_drained(&self) {
        wake(&self.drained);
    }

    /// The transport lost its socket: nothing will be written or flushed any more.
    pub(crate) fn on_lost(&self) {
        wake(&self.drained);
        wake(&self.writable);
    }
}

fn wake(slot: &RefCell<Option<Future<()>>>) {
    let waiter = slot.borrow_mut().take();
    if let Some(waiter) = waiter.filter(|w| !w.done()) {
        let _ = waiter.set_result(());
    }
}

/// A fresh waiter in `slot`.
fn waiter(lp: &EventLoop, slot: &RefCell<Option<Future<()>>>) -> Result<Future<()>> {
    let waiter = lp.create_future::<()>()?;
    *slot.borrow_mut() = Some(waiter.clone());
    Ok(waiter)
}

impl EventLoop {
    /// Sends `count` bytes of `file` from `offset` (to its end when `count` is `None`)
    /// through `transport` (asyncio's `loop.sendfile`); resolves to the bytes sent. The
    /// kernel's `sendfile(2)` is used when it can be; otherwise, with `fallback`, the file
    /// is read on the executor and written in chunks. The file's position ends at
    /// `offset + sent`.
    ///
    /// Fails with [`Error::InvalidArgument`] for a `count` of 0, [`Error::TransportClosing`]
    /// if the transport is closing or loses its connection, [`Error::SendfileNotAvailable`]
    /// when the kernel path is unavailable (not a regular file, a TLS transport, ...) and
    /// `fallback` is `false`, [`Error::Io`] for an OS error once bytes went out.
    pub fn sendfile(
        &self,
        transport: &Transport,
        file: &File,
        offset: u64,
        count: Option<u64>,
        fallback: bool,
    ) -> impl std::future::Future<Output = Result<u64>> + 'static {
        let lp = self.clone();
        let transport = transport.clone();
        let file = file.try_clone().map_err(Error::io("dup"));
        async move {
            check_count(count)?;
            if transport.is_closing() {
                return Err(Error::TransportClosing);
            }
            let file = file?;
            match transport_native(&lp, &transport, &file, offset, count).await {
                Err(Error::SendfileNotAvailable(_)) if fallback => {}
                other => return other,
            }
            let mut sink = TransportSink(&lp, &transport);
            copy_chunks(&lp, file, offset, count, &mut sink).await
        }
    }

    /// Sends a file through the non-blocking socket `sock` (asyncio's
    /// `loop.sock_sendfile`), as [`sendfile`](Self::sendfile) does through a transport: the
    /// kernel's `sendfile(2)`, else (with `fallback`) chunks read on the executor and sent
    /// with [`sock_sendall`](Self::sock_sendall).
    ///
    /// Fails with [`Error::InvalidArgument`] for a `count` of 0 or a blocking socket,
    /// [`Error::SendfileNotAvailable`] as `sendfile`, [`Error::Sock`] or [`Error::Io`] for
    /// OS errors.
    pub async fn sock_sendfile(
        &self,
        sock: &impl AsFd,
        file: &File,
        offset: u64,
        count: Option<u64>,
        fallback: bool,
    ) -> Result<u64> {
        check_count(count)?;
        let fd = checked(sock)?.as_raw_fd();
        let file = file.try_clone().map_err(Error::io("dup"))?;
        match sock_native(self, fd, &file, offset, count).await {
            Err(Error::SendfileNotAvailable(_)) if fallback => {}
            other => return other,
        }
        let mut sink = SockSink(self, sock);
        copy_chunks(self, file, offset, count, &mut sink).await
    }
}

fn check_count(count: Option<u64>) -> Result<()> {
    if count == Some(0) {
        return Err(Error::InvalidArgument {
            what: "count",
            value: "0: must be a positive integer".to_string(),
        });
    }
    Ok(())
}

/// How many bytes the kernel path should send: `count`, or the rest of the file. Fails
/// with [`Error::SendfileNotAvailable`] for anything but a regular file.
fn kernel_total(file: &File, offset: u64, count: Option<u64>) -> Result<u64> {
    let meta = file
        .metadata()
        .map_err(|_| Error::SendfileNotAvailable("not a regular file".to_string()))?;
    if !meta.is_file() {
        return Err(Error::SendfileNotAvailable(
            "not a regular file".to_string(),
        ));
    }
    Ok(count.unwrap_or_else(|| meta.len().saturating_sub(offset)))
}

/// Puts the file's position at `offset + sent`, as asyncio does after sending.
fn set_position(file: &File, offset: u64, sent: u64) {
    let mut file = file;
    if let Err(err) = file.seek(SeekFrom::Start(offset + sent)) {
        tracing::debug!(target: "loopd", "seeking the sent file: {err}");
    }
}

/// Restores a transport after a kernel sendfile, however it ended.
struct TransportGuard<'a> {
    transport: &'a Transport,
    resume_reading: bool,
}

impl Drop for TransportGuard<'_> {
    fn drop(&mut self) {
        self.transport.inner.sendfile.active.set(false);
        if self.resume_reading {
            self.transport.resume_reading();
        }
    }
}

/// asyncio's `_sendfile_native`: drain the transport, then `sendfile(2)` on its socket.
async fn transport_native(
    lp: &EventLoop,
    transport: &Transport,
    file: &File,
    offset: u64,
    count: Option<u64>,
) -> Result<u64> {
    let hook = &transport.inner.sendfile;
    if hook.kernel_unavailable.get() {
        return Err(Error::SendfileNotAvailable(
            "the transport is not a plain socket".to_string(),
        ));
    }
    let total = kernel_total(file, offset, count)?;
    let guard = TransportGuard {
        transport,
        resume_reading: transport.is_reading(),
    };
    transport.pause_reading();
    hook.active.set(true);
    while transport.get_write_buffer_size() > 0 {
        waiter(lp, &hook.drained)?.await?;
        socket_fd(transport)?;
    }
    let sent = kernel_loop(
        file,
        offset,
        total,
        || socket_fd(transport),
        || async { waiter(lp, &hook.writable)?.await },
    )
    .await;
    drop(guard);
    if let Ok(n) = sent {
        let counters = &lp.core.net.counters;
        counters.bytes_sent.set(counters.bytes_sent.get() + n);
    }
    sent
}

/// The transport's socket fd, or [`Error::TransportClosing`] once it lost it.
fn socket_fd(transport: &Transport) -> Result<RawFd> {
    match transport.get_extra_info("socket") {
        Some(ExtraInfo::Socket(fd)) => Ok(fd),
        _ => Err(Error::TransportClosing),
    }
}

/// asyncio's `_sock_sendfile_native` on a plain socket.
async fn sock_native(
    lp: &EventLoop,
    fd: RawFd,
    file: &File,
    offset: u64,
    count: Option<u64>,
) -> Result<u64> {
    let total = kernel_total(file, offset, count)?;
    kernel_loop(
        file,
        offset,
        total,
        || Ok(fd),
        || wait_ready(lp, fd, Interest::WRITABLE),
    )
    .await
}

/// Calls `sendfile(2)` until `total` bytes went or the file ended, awaiting `writable`
/// on `EAGAIN`. An error before any byte went is [`Error::SendfileNotAvailable`] (the
/// caller may fall back); after, it is the OS error.
async fn kernel_loop<W, F>(
    file: &File,
    offset: u64,
    total: u64,
    fd: impl Fn() -> Result<RawFd>,
    writable: W,
) -> Result<u64>
where
    W: Fn() -> F,
    F: std::future::Future<Output = Result<()>>,
{
    let mut sent = 0;
    let result = loop {
        if sent >= total {
            break Ok(sent);
        }
        let chunk = (total - sent).min(MAX_KERNEL_CHUNK);
        let socket = match fd() {
            Ok(socket) => socket,
            Err(err) => break Err(err),
        };
        match sendfile_once(socket, file.as_raw_fd(), offset + sent, chunk) {
            Ok(0) => break Ok(sent), // the file is shorter than asked
            Ok(n) => sent += n,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                if let Err(err) = writable().await {
                    break Err(err);
                }
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) if sent == 0 => {
                break Err(Error::SendfileNotAvailable(format!(
                    "os sendfile call failed: {err}"
                )));
            }
            Err(source) => {
                break Err(Error::Io {
                    op: "sendfile",
                    source,
                });
            }
        }
    };
    if sent > 0 {
        set_position(file, offset, sent);
    }
    result
}

/// One `sendfile(2)` call from `offset`; returns the bytes sent.
fn sendfile_once(socket: RawFd, file: RawFd, offset: u64, len: u64) -> io::Result<u64> {
    let mut off = libc::off_t::try_from(offset)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    // SAFETY: both descriptors are open for the call; `off` is a valid out-pointer.
    let rc = unsafe { libc::sendfile(socket, file, &mut off, len) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc as u64)
}

// ---- the read/write fallback ----------------------------------------------------------

/// Where the fallback writes its chunks.
trait Sink {
    async fn write_chunk(&mut self, data: &[u8]) -> Result<()>;
}

struct TransportSink<'a>(&'a EventLoop, &'a Transport);

impl Sink for TransportSink<'_> {
    /// Writes once the transport's buffer is flushed (asyncio's fallback drains too).
    async fn write_chunk(&mut self, data: &[u8]) -> Result<()> {
        let TransportSink(lp, transport) = *self;
        while transport.get_write_buffer_size() > 0 {
            waiter(lp, &transport.inner.sendfile.drained)?.await?;
        }
        transport.write(data)
    }
}

struct SockSink<'a, S>(&'a EventLoop, &'a S);

impl<S: AsFd> Sink for SockSink<'_, S> {
    async fn write_chunk(&mut self, data: &[u8]) -> Result<()> {
        self.0.sock_sendall(self.1, data).await
    }
}

/// asyncio's `_sendfile_fallback`: read a chunk on the executor, write it, until `count`
/// bytes or the end of the file.
async fn copy_chunks(
    lp: &EventLoop,
    file: File,
    offset: u64,
    count: Option<u64>,
    sink: &mut impl Sink,
) -> Result<u64> {
    // asyncio reads pipes and FIFOs too (from where they are): only files have offsets.
    let seekable = file.metadata().is_ok_and(|m| m.is_file());
    let mut file = Some(file);
    let mut sent = 0;
    let result = loop {
        let want = count.map_or(FALLBACK_CHUNK, |c| (c - sent).min(FALLBACK_CHUNK));
        let Some(reader) = file.take().filter(|_| want > 0) else {
            break Ok(sent);
        };
        let position = offset + sent;
        let read = lp.run_in_executor(move || {
            let mut chunk = vec![0; want as usize];
            let n = if seekable {
                reader.read_at(&mut chunk, position)
            } else {
                (&reader).read(&mut chunk)
            };
            (
                reader,
                n.map(|n| {
                    chunk.truncate(n);
                    chunk
                }),
            )
        })?;
        let (reader, chunk) = read.take().await?;
        file = Some(reader);
        let chunk = match chunk {
            Ok(chunk) if chunk.is_empty() => break Ok(sent),
            Ok(chunk) => chunk,
            Err(source) => break Err(Error::Io { op: "read", source }),
        };
        if let Err(err) = sink.write_chunk(&chunk).await {
            break Err(err);
        }
        sent += chunk.len() as u64;
    };
    if let (Some(file), true) = (&file, sent > 0) {
        set_position(file, offset, sent);
    }
    result
}
