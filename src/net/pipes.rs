//! Pipe transports: asyncio's `loop.connect_read_pipe` and `loop.connect_write_pipe`
//! (`_UnixReadPipeTransport`, `_UnixWritePipeTransport`), for pipes, FIFOs, sockets and
//! character devices the caller hands over.
//!
//! # Invariants
//! - The transport owns the descriptor from the start (it was given as an `OwnedFd`), makes
//!   it non-blocking, and closes it right after `connection_lost`.
//! - Registered once, edge-triggered: the read end for reading, the write end for writing
//!   (the poll reports the reader going away as an error on the write end, which closes
//!   the transport: with `BrokenPipe` if data was still buffered, as asyncio).
//! - Reads go into the loop's one read buffer, at most [`READ_BUFFER_SIZE`] per callback;
//!   EOF means `eof_received`, then `connection_lost(None)`: a read pipe ends with its
//!   writers.
//! - Protocol methods run from the ready queue; a busy protocol gets its calls later, in
//!   order (see `net::calls`).

use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::{Rc, Weak};
use std::sync::Arc;

use mio::unix::SourceFd;
use mio::{Interest, Token};

use crate::error::{Error, Result};
use crate::event_loop::{EventLoop, IoDispatch, Readiness};
use crate::exception::{ExceptionContext, PanicError};
use crate::handle::{RepeatingCell, Runnable};
use crate::net::ExtraInfo;
use crate::net::read_pipe::{ReadPipeTransport, start_read};
use crate::net::write_pipe::{WritePipeTransport, start_write};

/// The callbacks of a read pipe (asyncio's `Protocol` as `connect_read_pipe` uses it).
pub trait ReadPipeProtocol {
    /// The transport is ready.
    fn connection_made(&mut self, transport: ReadPipeTransport) {
        let _ = transport;
    }

    /// Bytes arrived. `data` borrows the loop's read buffer: copy what you keep.
    fn data_received(&mut self, data: &[u8]) {
        let _ = data;
    }

    /// Every writer closed its end; `connection_lost(None)` follows.
    fn eof_received(&mut self) {}

    /// The pipe is closed: `None` after EOF or `close()`, the error otherwise. Once.
    fn connection_lost(&mut self, error: Option<io::Error>) {
        let _ = error;
    }
}

/// The callbacks of a write pipe (asyncio's `BaseProtocol` as `connect_write_pipe` uses
/// it).
pub trait WritePipeProtocol {
    /// The transport is ready.
    fn connection_made(&mut self, transport: WritePipeTransport) {
        let _ = transport;
    }

    /// The pipe is closed: `None` after `close()`/`abort()` or when the reader went away
    /// with nothing buffered; the error otherwise (`BrokenPipe`, ...). Once.
    fn connection_lost(&mut self, error: Option<io::Error>) {
        let _ = error;
    }

    /// The write buffer went over its high-water mark: stop writing.
    fn pause_writing(&mut self) {}

    /// The write buffer drained to its low-water mark: writing may go on.
    fn resume_writing(&mut self) {}
}

pub(crate) type SharedRead = Rc<RefCell<dyn ReadPipeProtocol>>;
pub(crate) type SharedWrite = Rc<RefCell<dyn WritePipeProtocol>>;

/// What the loop's registry needs of a pipe transport.
pub(crate) trait PipeEnd {
    /// Closes the descriptor and drops the protocol, leaving the registry.
    fn release(&self, lp: &EventLoop);
    /// The same without the loop (it is being dropped).
    fn forget(&self);
}

impl EventLoop {
    /// Wraps the read end of a pipe (or a FIFO, socket or character device) in a
    /// transport with a protocol from `factory` (asyncio's `loop.connect_read_pipe`). The
    /// descriptor is taken over, made non-blocking, and closed with the transport. Resolves
    /// once `connection_made` ran.
    ///
    /// Fails with [`Error::InvalidArgument`] for a regular file or directory (asyncio's
    /// "Pipe transport is for pipes/sockets only."), [`Error::Register`] if the poll
    /// refuses the fd, [`Error::Closed`] if the loop is closed.
    pub fn connect_read_pipe<P, F>(
        &self,
        factory: F,
        pipe: impl Into<OwnedFd>,
    ) -> impl std::future::Future<Output = Result<(ReadPipeTransport, Rc<RefCell<P>>)>> + 'static
    where
        P: ReadPipeProtocol + 'static,
        F: FnOnce() -> P + 'static,
    {
        let lp = self.clone();
        let pipe = pipe.into();
        async move {
            let file = adopt(pipe)?;
            let protocol = Rc::new(RefCell::new(factory()));
            let waiter = lp.create_future::<()>()?;
            let transport = start_read(&lp, file, protocol.clone(), waiter.clone())?;
            waiter.await?;
            Ok((transport, protocol))
        }
    }

    /// Wraps the write end of a pipe (or a FIFO, socket or character device) in a
    /// transport with a protocol from `factory` (asyncio's `loop.connect_write_pipe`), as
    /// [`connect_read_pipe`](Self::connect_read_pipe) does.
    ///
    /// Fails as `connect_read_pipe` does.
    pub fn connect_write_pipe<P, F>(
        &self,
        factory: F,
        pipe: impl Into<OwnedFd>,
    ) -> impl std::future::Future<Output = Result<(WritePipeTransport, Rc<RefCell<P>>)>> + 'static
    where
        P: WritePipeProtocol + 'static,
        F: FnOnce() -> P + 'static,
    {
        let lp = self.clone();
        let pipe = pipe.into();
        async move {
            let file = adopt(pipe)?;
            let protocol = Rc::new(RefCell::new(factory()));
            let waiter = lp.create_future::<()>()?;
            let transport = start_write(&lp, file, protocol.clone(), waiter.clone())?;
            waiter.await?;
            Ok((transport, protocol))
        }
    }
}

/// Checks the descriptor's kind and makes it non-blocking.
pub(crate) fn adopt(pipe: OwnedFd) -> Result<File> {
    use std::os::unix::fs::FileTypeExt;
    let file = File::from(pipe);
    let fd = file.as_raw_fd();
    let kind = file.metadata().map_err(Error::io("fstat"))?.file_type();
    if !(kind.is_fifo() || kind.is_socket() || kind.is_char_device()) {
        return Err(Error::InvalidArgument {
            what: "pipe",
            value: format!("fd {fd}: pipe transport is for pipes/sockets only"),
        });
    }
    set_nonblocking(fd)?;
    Ok(file)
}

pub(crate) fn set_nonblocking(fd: RawFd) -> Result<()> {
    // SAFETY: F_GETFL/F_SETFL on an open descriptor this module owns.
    let ok = unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        flags >= 0 && libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) >= 0
    };
    if !ok {
        return Err(Error::Io {
            op: "fcntl(O_NONBLOCK)",
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Registers `fd` for `interest`, with `on_ready` called on the inner if it still exists.
pub(crate) fn register<T: 'static>(
    lp: &EventLoop,
    fd: RawFd,
    interest: Interest,
    inner: &Rc<T>,
    on_ready: fn(&Rc<T>, &EventLoop, Readiness),
) -> Result<Token> {
    let weak = Rc::downgrade(inner);
    let dispatch: IoDispatch = Rc::new(move |lp: &EventLoop, readiness| {
        if let Some(inner) = weak.upgrade() {
            on_ready(&inner, lp, readiness);
        }
    });
    lp.register_source(&mut SourceFd(&fd), interest, dispatch)
        .map_err(|source| Error::Register { fd, source })
}

/// A callback cell running `method` on the inner, if it and its loop still exist.
pub(crate) fn cell<T: HasLoop + 'static>(
    weak: Weak<T>,
    method: fn(&Rc<T>, &EventLoop),
) -> Rc<dyn Runnable> {
    RepeatingCell::new_rc(move || {
        let Some(inner) = weak.upgrade() else { return };
        let Some(lp) = inner.event_loop() else { return };
        method(&inner, &lp);
    })
}

pub(crate) trait HasLoop {
    /// The transport's loop, if it still exists.
    fn event_loop(&self) -> Option<EventLoop>;
}

/// Closes the fd's registration and the fd.
pub(crate) fn close_fd(lp: Option<&EventLoop>, file: Option<File>, token: Option<Token>) {
    if let (Some(lp), Some(file), Some(token)) = (lp, &file, token) {
        if let Err(err) = lp.deregister_source(&mut SourceFd(&file.as_raw_fd()), token) {
            tracing::debug!(target: "loopd", "deregistering pipe fd: {err}");
        }
    }
    drop(file);
}

pub(crate) fn report_panic(lp: &EventLoop, method: &'static str, error: &PanicError) {
    lp.call_exception_handler(ExceptionContext {
        message: format!("fatal error: protocol.{method}() call failed"),
        error: Some(Arc::new(error.clone())),
        ..Default::default()
    });
}

/// `get_extra_info` of both pipe ends: `"pipe"` gives the fd while open.
pub(crate) fn pipe_info(name: &str, file: &RefCell<Option<File>>) -> Option<ExtraInfo> {
    match name {
        "pipe" => file
            .borrow()
            .as_ref()
            .map(|f| ExtraInfo::Pipe(f.as_raw_fd())),
        _ => None,
    }
}
