//! [`Protocol`]: the user's side of a connection, as asyncio's `asyncio.Protocol`.

use std::io;

use crate::net::Transport;

/// The callbacks of a stream connection (asyncio's `Protocol`); every method has a default
/// that does nothing. The loop calls them on its thread, from its ready queue, in this
/// order: `connection_made`, then any number of `data_received`, then at most one
/// `eof_received`, then `connection_lost` exactly once (unless the loop is closed first).
/// `pause_writing` and `resume_writing` alternate, starting with `pause_writing`.
///
/// # Examples
/// An echo server's protocol:
/// ```
/// use loopd::{Protocol, Transport};
///
/// #[derive(Default)]
/// struct Echo(Option<Transport>);
///
/// impl Protocol for Echo {
///     fn connection_made(&mut self, transport: Transport) {
///         self.0 = Some(transport);
///     }
///     fn data_received(&mut self, data: &[u8]) {
///         if let Some(transport) = &self.0 {
///             let _ = transport.write(data);
///         }
///     }
/// }
/// ```
pub trait Protocol {
    /// The connection is up; `transport` is the handle to write to and control it.
    fn connection_made(&mut self, transport: Transport) {
        let _ = transport;
    }

    /// Bytes arrived. `data` borrows the loop's read buffer: copy what you keep.
    fn data_received(&mut self, data: &[u8]) {
        let _ = data;
    }

    /// The peer shut down its writing side. Return `true` to keep the connection open for
    /// writing (half-close); `false` (the default) closes the transport, as asyncio does.
    fn eof_received(&mut self) -> bool {
        false
    }

    /// The connection is closed: `None` after `close()`, `abort()` or a clean end, the
    /// error otherwise (reset by peer, broken pipe, ...). Called exactly once.
    fn connection_lost(&mut self, error: Option<io::Error>) {
        let _ = error;
    }

    /// The transport's write buffer went over its high-water mark: stop writing.
    fn pause_writing(&mut self) {}

    /// The write buffer drained to its low-water mark: writing may go on.
    fn resume_writing(&mut self) {}
}
