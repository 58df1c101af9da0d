//! Named pipes (FIFOs) opened on a loop with the engine's pipe transports
//! (`connect_read_pipe`, `connect_write_pipe`): a read FIFO feeds a lossless
//! [`ByteStream`], read as process output is; a write FIFO takes WriteFifo's bytes.
//!
//! # Invariants
//! - The FIFO is opened `O_NONBLOCK | O_CLOEXEC`, so opening never blocks and no child
//!   inherits it; anything but a FIFO is refused (INVALID_ARGUMENT).
//! - OpenFifo answers once the transport's `connection_made` ran, so a WriteFifo that
//!   follows always finds the transport.
//! - A read FIFO pauses while a reader lags by more than the window, and, with no reader
//!   yet, once the window is full: nothing is dropped.
//! - A read FIFO with no writer yet would read end of file at once, so the daemon holds a
//!   write end of its own (the "keeper") until the first bytes arrive; from then on it
//!   ends when every writer has closed its end. (A writer that connects and closes
//!   without writing does not end it.)

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use loopd::{
    LoopHandle, ReadPipeProtocol, ReadPipeTransport, WritePipeProtocol, WritePipeTransport,
};
use tokio::sync::oneshot;

use crate::bytestream::{ByteStream, StreamConfig, StreamEnd};
use crate::loops::LoopCtx;
use crate::status::{Error, Result};

/// Bytes a reader may lag behind before the FIFO is paused.
const WINDOW: usize = 1024 * 1024;

static NEXT_FIFO_ID: AtomicU64 = AtomicU64::new(1);

enum Fifo {
    Read {
        transport: Option<ReadPipeTransport>,
        stream: ByteStream,
    },
    Write {
        transport: Option<WritePipeTransport>,
    },
}

thread_local! {
    static FIFOS: RefCell<HashMap<u64, Fifo>> = RefCell::default();
}

fn not_found(ctx: &LoopCtx, id: u64) -> Error {
    Error::FifoNotFound {
        loop_name: ctx.name.clone(),
        id,
    }
}

/// Checks a path at the front door: not empty, no NUL byte.
pub fn check_path(path: &[u8]) -> Result<CString> {
    if path.is_empty() {
        return Err(Error::invalid("path", "\"\" (empty)"));
    }
    CString::new(path.to_vec()).map_err(|_| {
        Error::invalid(
            "path with a NUL byte",
            format!("{:?}", String::from_utf8_lossy(path)),
        )
    })
}

/// Opens `path` without blocking and checks that it is a FIFO.
fn open(path: &CString, write: bool) -> Result<OwnedFd> {
    let mode = if write {
        libc::O_WRONLY
    } else {
        libc::O_RDONLY
    };
    let shown = || path.to_string_lossy().into_owned();
    // SAFETY: `path` is a valid C string; open returns a new descriptor or -1.
    let fd = unsafe { libc::open(path.as_ptr(), mode | libc::O_NONBLOCK | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(Error::FifoOpen {
            path: shown(),
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let meta = std::fs::File::from(fd.try_clone().map_err(|source| Error::FifoOpen {
        path: shown(),
        source,
    })?)
    .metadata();
    let is_fifo = meta.is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_fifo(&m.file_type()));
    if !is_fifo {
        return Err(Error::invalid(
            "path",
            format!("{:?} is not a FIFO", shown()),
        ));
    }
    Ok(fd)
}

/// Opens a FIFO on the loop; answers `answer` with its id once the transport is ready.
pub fn open_fifo(
    ctx: &Rc<LoopCtx>,
    path: &CString,
    write: bool,
    retain: usize,
    answer: oneshot::Sender<Result<u64>>,
) {
    let fd = match ctx.check_open().and_then(|()| open(path, write)) {
        Ok(fd) => fd,
        Err(err) => {
            let _ = answer.send(Err(err));
            return;
        }
    };
    let id = NEXT_FIFO_ID.fetch_add(1, Ordering::Relaxed);
    let lp = ctx.lp.clone();
    let task = if write {
        let connect = lp.connect_write_pipe(|| WriteSide, fd);
        lp.create_task(
            async move {
                let answer_with = match connect.await {
                    Ok((transport, _)) => {
                        let fifo = Fifo::Write {
                            transport: Some(transport),
                        };
                        FIFOS.with(|f| f.borrow_mut().insert(id, fifo));
                        Ok(id)
                    }
                    Err(err) => Err(Error::Engine(err)),
                };
                let _ = answer.send(answer_with);
            },
            None,
        )
    } else {
        let stream = ByteStream::new(StreamConfig {
            window: WINDOW,
            retain,
            pause_without_reader: true,
        });
        let handle = std::sync::Mutex::new(lp.handle());
        stream.set_resume(move || {
            let handle: LoopHandle = handle.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let _ = handle.call_soon_threadsafe(move || resume(id));
        });
        // Opened after the read end, so it cannot fail with ENXIO.
        let keeper = match open(path, true) {
            Ok(keeper) => keeper,
            Err(err) => {
                let _ = answer.send(Err(err));
                return;
            }
        };
        let side = ReadSide {
            keeper: Some(keeper),
            stream: stream.clone(),
            transport: None,
        };
        let connect = lp.connect_read_pipe(move || side, fd);
        lp.create_task(
            async move {
                let answer_with = match connect.await {
                    Ok((transport, _)) => {
                        let fifo = Fifo::Read {
                            transport: Some(transport),
                            stream,
                        };
                        FIFOS.with(|f| f.borrow_mut().insert(id, fifo));
                        Ok(id)
                    }
                    Err(err) => Err(Error::Engine(err)),
                };
                let _ = answer.send(answer_with);
            },
            None,
        )
    };
    if let Err(err) = task {
        tracing::warn!("opening a FIFO: {err}");
    }
}

fn resume(id: u64) {
    FIFOS.with(|f| {
        if let Some(Fifo::Read {
            transport: Some(t), ..
        }) = f.borrow().get(&id)
        {
            t.resume_reading();
        }
    });
}

/// The stream of a read FIFO.
pub fn stream(ctx: &LoopCtx, id: u64) -> Result<ByteStream> {
    FIFOS.with(|f| match f.borrow().get(&id) {
        Some(Fifo::Read { stream, .. }) => Ok(stream.clone()),
        Some(Fifo::Write { .. }) => Err(Error::FifoDirection {
            id,
            opened_for: "writing",
        }),
        None => Err(not_found(ctx, id)),
    })
}

/// Writes to a write FIFO (closing it once flushed if `eof`); the bytes still queued.
pub fn write(ctx: &LoopCtx, id: u64, data: &[u8], eof: bool) -> Result<u64> {
    FIFOS.with(|f| match f.borrow().get(&id) {
        Some(Fifo::Write { transport: Some(t) }) => {
            if t.is_closing() {
                return Err(Error::FifoClosed(id));
            }
            if !data.is_empty() {
                t.write(data)?;
            }
            let buffered = t.get_write_buffer_size() as u64;
            if eof {
                t.close(); // flushes first, as asyncio's close() on a write pipe
            }
            Ok(buffered)
        }
        Some(Fifo::Write { transport: None }) => Err(Error::FifoClosed(id)),
        Some(Fifo::Read { .. }) => Err(Error::FifoDirection {
            id,
            opened_for: "reading",
        }),
        None => Err(not_found(ctx, id)),
    })
}

/// Closes a FIFO and forgets it: a read FIFO's stream ends (with an error unless it
/// had reached end of file), a write FIFO flushes what is queued, then closes.
pub fn close(ctx: &LoopCtx, id: u64) -> Result<()> {
    let fifo = FIFOS.with(|f| f.borrow_mut().remove(&id));
    match fifo {
        Some(Fifo::Read { transport, stream }) => {
            stream.finish(StreamEnd::Error(
                "the FIFO was closed with CloseFifo".into(),
            ));
            if let Some(t) = transport {
                t.close();
            }
            Ok(())
        }
        Some(Fifo::Write { transport }) => {
            if let Some(t) = transport {
                t.close(); // flushes first, as WriteFifo's eof
            }
            Ok(())
        }
        None => Err(not_found(ctx, id)),
    }
}

/// Closes every FIFO of a loop that closes.
pub fn close_loop() {
    let fifos = FIFOS.with(|f| std::mem::take(&mut *f.borrow_mut()));
    for fifo in fifos.values() {
        match fifo {
            Fifo::Read { transport, stream } => {
                stream.finish(StreamEnd::Error("the loop was closed".into()));
                if let Some(t) = transport {
                    t.close();
                }
            }
            Fifo::Write { transport: Some(t) } => t.abort(),
            Fifo::Write { transport: None } => {}
        }
    }
}

/// A read FIFO's protocol: bytes into the stream, pausing when it is full.
struct ReadSide {
    /// The daemon's own write end, until the first bytes arrive.
    keeper: Option<OwnedFd>,
    stream: ByteStream,
    transport: Option<ReadPipeTransport>,
}

impl ReadPipeProtocol for ReadSide {
    fn connection_made(&mut self, transport: ReadPipeTransport) {
        self.transport = Some(transport);
    }

    fn data_received(&mut self, data: &[u8]) {
        self.keeper = None; // a writer is here: its close may now end the stream
        if !self.stream.push(data) {
            if let Some(t) = &self.transport {
                t.pause_reading();
            }
        }
    }

    fn connection_lost(&mut self, error: Option<std::io::Error>) {
        let end = match error {
            None => StreamEnd::Eof,
            Some(err) => StreamEnd::Error(err.to_string()),
        };
        self.stream.finish(end);
        self.transport = None;
        self.keeper = None;
    }
}

/// A write FIFO's protocol: nothing to report (errors surface on the next write).
struct WriteSide;

impl WritePipeProtocol for WriteSide {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_must_be_non_empty_without_nul() {
        assert!(check_path(b"/tmp/f").is_ok());
        assert!(check_path(b"").unwrap_err().to_string().contains("empty"));
        assert!(
            check_path(b"/tmp/a\0b")
                .unwrap_err()
                .to_string()
                .contains("NUL")
        );
    }
}
