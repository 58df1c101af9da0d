//! The engine's one error type.
//!
//! Every fallible public method returns [`Result`]. Messages are lowercase, name the
//! value that was wrong, and keep an `io::Error` as the source when the OS said no.

use std::io;
use std::os::fd::RawFd;

use crate::exception::SharedError;

/// Result alias used throughout the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong when driving an [`EventLoop`](crate::EventLoop).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The loop was closed: nothing can be scheduled on it any more.
    #[error("event loop is closed")]
    Closed,
    /// `run_forever`/`run_until_complete` was called on a loop that is already running.
    #[error("this event loop is already running")]
    AlreadyRunning,
    /// Another loop is already running on this thread.
    #[error("cannot run the event loop while another loop is running")]
    AnotherLoopRunning,
    /// `close()` was called while the loop runs.
    #[error("cannot close a running event loop")]
    CloseWhileRunning,
    /// `get_running_loop()` was called outside a running loop.
    #[error("no running event loop")]
    NoRunningLoop,
    /// The policy has no loop for this thread and will not create one.
    #[error("there is no current event loop in thread {0:?}")]
    NoCurrentLoop(String),
    /// `run_until_complete` returned because `stop()` was called first.
    #[error("event loop stopped before future completed")]
    StoppedBeforeComplete,
    /// A delay that is NaN, infinite or too large to represent.
    #[error("invalid delay {0} s: must be a finite number of seconds below 2^63 ns")]
    InvalidDelay(f64),
    /// A loop time (`call_at_loop_time`) that is NaN, infinite or out of range.
    #[error("invalid loop time {0} s: must be finite and non-negative")]
    InvalidTime(f64),
    /// A duration setting that makes no sense (e.g. a slow-callback threshold).
    #[error("invalid {what}: {value}")]
    InvalidArgument {
        /// Which argument was wrong.
        what: &'static str,
        /// The offending value, rendered.
        value: String,
    },
    /// Not a signal number this system knows.
    #[error("invalid signal number {0}")]
    InvalidSignal(i32),
    /// A signal whose handler cannot be changed (SIGKILL, SIGSTOP).
    #[error("signal {0} cannot be caught")]
    UncatchableSignal(i32),
    /// The default executor was shut down; no more work is accepted.
    #[error("executor shutdown has been called")]
    ExecutorShutdown,
    /// The future or task was cancelled.
    #[error("future was cancelled")]
    Cancelled,
    /// A future operation that does not fit its state (e.g. a result set twice).
    #[error("invalid future state: {0}")]
    InvalidState(&'static str),
    /// Registering a file descriptor with the poller failed.
    #[error("failed to register fd {fd}")]
    Register {
        /// The descriptor.
        fd: RawFd,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// Any other failed system call, named by `op`.
    #[error("{op} failed")]
    Io {
        /// The operation that failed.
        op: &'static str,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The exception a future or task finished with (a panic in a task becomes a
    /// [`PanicError`](crate::PanicError)); displays as the exception itself.
    #[error(transparent)]
    Exception(SharedError),
    /// A pid that is not a child of this process (never started by it, or already reaped).
    #[error("no child process with pid {0}")]
    NoChildProcess(u32),
    /// The child watcher was closed: it accepts no new handlers.
    #[error("child watcher is closed")]
    ChildWatcherClosed,
    /// A subprocess could not be started (`ENOENT`: no such program, `EACCES`, ...).
    #[error("failed to start program {program:?}")]
    Spawn {
        /// The program (`argv[0]`).
        program: String,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// asyncio's `ProcessLookupError`: the subprocess transport is finished, its child
    /// long gone.
    #[error("process {0} is gone: its transport has finished")]
    ProcessLookup(u32),
    /// A write to a subprocess pipe that is closed or after `write_eof`.
    #[error("pipe {fd} of the subprocess is closed")]
    PipeClosed {
        /// The child's stream: 0 for stdin.
        fd: i32,
    },
    /// Binding a server (or a connection's `local_addr`) to an address that is taken.
    #[error("address {addr} is already in use")]
    AddressInUse {
        /// The address, rendered.
        addr: String,
        /// What the OS said (`EADDRINUSE`).
        #[source]
        source: io::Error,
    },
    /// Binding to an address failed for another reason (permission, not local, ...).
    #[error("error while attempting to bind on address {addr}")]
    Bind {
        /// The address, rendered.
        addr: String,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// Nothing listens at the address (`ECONNREFUSED`).
    #[error("connection to {addr} refused")]
    ConnectionRefused {
        /// The address, rendered.
        addr: String,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// Connecting failed for another reason (unreachable, timed out, no such path, ...).
    #[error("cannot connect to {addr}")]
    Connect {
        /// The address, rendered.
        addr: String,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// Every address of a host was tried and each failed differently (asyncio's
    /// "Multiple exceptions"); each error is listed with its cause.
    #[error("multiple exceptions: {}", join_errors(.0))]
    MultipleErrors(Vec<Error>),
    /// A host name that does not resolve (or resolves to nothing).
    #[error("cannot resolve host {host:?}")]
    Resolve {
        /// The host name as given.
        host: String,
        /// What getaddrinfo said.
        #[source]
        source: io::Error,
    },
    /// `write` on a transport that is closing or closed.
    #[error("transport is closing")]
    TransportClosing,
    /// `write` after `write_eof`.
    #[error("cannot call write() after write_eof()")]
    WriteAfterEof,
    /// The server was closed: it cannot start serving again.
    #[error("server is closed")]
    ServerClosed,
    /// `serve_forever` was called on a server whose `serve_forever` is already running.
    #[error("server is already being awaited on serve_forever()")]
    AlreadyServingForever,
    /// A TLS certificate, key or configuration that cannot be used (unreadable file, no
    /// PEM section, a key that does not fit the certificate, ...).
    #[error("cannot load tls {what} from {origin}: {reason}")]
    TlsConfig {
        /// What was being loaded (`certificate`, `private key`, ...).
        what: &'static str,
        /// Where from: a file path, or `<pem data>`.
        origin: String,
        /// Why it failed.
        reason: String,
    },
    /// The TLS handshake failed: a certificate the peer or we rejected (rustls' reason
    /// names it, e.g. the server name it is not valid for), a peer that does not speak
    /// TLS, or a connection lost during the handshake.
    #[error("tls handshake with {peer} failed: {reason}")]
    TlsHandshake {
        /// The peer: its address, and the server name on a client.
        peer: String,
        /// rustls' (or the socket's) reason.
        reason: String,
    },
    /// The TLS handshake did not finish within `ssl_handshake_timeout`.
    #[error("tls handshake with {peer} did not complete within {after:?}")]
    HandshakeTimeout {
        /// The peer: its address, and the server name on a client.
        peer: String,
        /// The timeout that ran out.
        after: std::time::Duration,
    },
    /// `getnameinfo` failed for an address (e.g. `NI_NAMEREQD` and no name).
    #[error("cannot get the name of address {addr}")]
    NameInfo {
        /// The address, rendered.
        addr: String,
        /// What getnameinfo said.
        #[source]
        source: io::Error,
    },
    /// `create_datagram_endpoint` with `reuse_address=true`, which asyncio refuses too.
    #[error(
        "passing `reuse_address=True` is no longer supported, as the usage of SO_REUSEPORT \
         in UDP poses a significant security concern"
    )]
    ReuseAddressNotSupported,
    /// `sendto` with an address other than the endpoint's peer, or without one on an
    /// endpoint that has no peer (asyncio's "Invalid address: must be None or ...").
    #[error("invalid address {addr}: must be {expected}")]
    InvalidSendtoAddress {
        /// The address given, rendered (`None` when missing).
        addr: String,
        /// What was expected instead.
        expected: String,
    },
    /// `write` on a transport while `loop.sendfile` sends a file through it.
    #[error("unable to write; sendfile is in progress")]
    SendfileInProgress,
    /// The kernel's `sendfile` cannot serve this transport or file, and the fallback was
    /// disabled (asyncio's `SendfileNotAvailableError`).
    #[error("sendfile is not available: {0}")]
    SendfileNotAvailable(String),
    /// A socket call (`sock_recv`, `sock_sendall`, ...) the OS refused, with the fd.
    #[error("{op} on fd {fd} failed")]
    Sock {
        /// The system call.
        op: &'static str,
        /// The socket's descriptor.
        fd: RawFd,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// Wraps an `io::Error` with the name of the operation that produced it.
    pub(crate) fn io(op: &'static str) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Io { op, source }
    }
}

/// Renders errors with their causes, `, `-separated, for [`Error::MultipleErrors`].
fn join_errors(errors: &[Error]) -> String {
    let mut out = String::new();
    for (i, error) in errors.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&error.to_string());
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            out.push_str(": ");
            out.push_str(&cause.to_string());
            source = cause.source();
        }
    }
    out
}
