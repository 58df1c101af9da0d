//! The daemon's one error type and its mapping to gRPC status codes.
//!
//! # Invariants
//! - Every error a client can cause is a variant here; its message is lowercase and names
//!   the bad value (the loop, the id, the number).
//! - The error → code table lives in [`Error::code`] and nowhere else.

use tonic::{Code, Status};

/// Result alias for the daemon's services.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No loop has that name.
    #[error("loop {0:?} not found")]
    LoopNotFound(String),
    /// The handle is unknown on that loop (or was forgotten).
    #[error("handle {id} not found on loop {loop_name:?}")]
    HandleNotFound {
        /// The loop asked.
        loop_name: String,
        /// The handle asked for.
        id: u64,
    },
    /// The future is unknown on that loop (or was forgotten).
    #[error("future {id} not found on loop {loop_name:?}")]
    FutureNotFound {
        /// The loop asked.
        loop_name: String,
        /// The future asked for.
        id: u64,
    },
    /// The loop is closed.
    #[error("loop {0:?} is closed")]
    LoopClosed(String),
    /// CloseLoop on a running loop.
    #[error("loop {0:?} is running: stop it before closing it")]
    LoopRunning(String),
    /// CloseLoop on `default`.
    #[error("the default loop cannot be closed")]
    CloseDefault,
    /// CreateLoop with the name of a loop that is not closed.
    #[error("loop {0:?} already exists")]
    LoopExists(String),
    /// CreateLoop past `limits.max_loops`.
    #[error("too many loops: the daemon's limit is {0}")]
    TooManyLoops(usize),
    /// A value that makes no sense; `what` names the field.
    #[error("invalid {what}: {value}")]
    Invalid {
        /// The field, e.g. `delay_seconds`.
        what: &'static str,
        /// The value and why it is wrong.
        value: String,
    },
    /// A payload, result or value above `limits.max_payload_bytes`.
    #[error("{what} is {size} bytes, more than the limit of {limit} bytes")]
    TooLarge {
        /// The field.
        what: &'static str,
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A caller would hold more pending handles or futures than its quota.
    #[error("caller uid {uid} holds {holds} {what} on this loop; its quota is {limit}")]
    Quota {
        /// `pending handles` or `pending futures`.
        what: &'static str,
        /// The caller.
        uid: u32,
        /// What it holds now.
        holds: usize,
        /// The quota.
        limit: usize,
    },
    /// A future that is already done (asyncio's InvalidStateError).
    #[error("future {0} is already done")]
    FutureAlreadyDone(u64),
    /// The loop was closed while a WaitFuture waited for a pending future.
    #[error("loop {loop_name:?} was closed while future {id} was pending")]
    ClosedWhileWaiting {
        /// The loop.
        loop_name: String,
        /// The future waited for.
        id: u64,
    },
    /// Subscribe past `limits.max_subscribers`.
    #[error("too many subscribers: the daemon's limit is {0}")]
    TooManySubscribers(usize),
    /// Subscribe with a `since_seq` in the future.
    #[error("since_seq {since} is beyond the next event's seq {next}")]
    SinceOutOfRange {
        /// The requested seq.
        since: u64,
        /// The seq the next event will get.
        next: u64,
    },
    /// The call's deadline passed while waiting.
    #[error("deadline exceeded after {0:?} waiting for future {1}")]
    DeadlineExceeded(std::time::Duration, u64),
    /// The daemon is shutting down.
    #[error("the daemon is shutting down")]
    ShuttingDown,
    /// One entry of a batch failed; the code is the entry's.
    #[error("entry {index}: {source}")]
    Entry {
        /// Index of the entry in the request.
        index: usize,
        /// What was wrong with it.
        #[source]
        source: Box<Error>,
    },
    /// A byte stream (transport data, process output) cannot be read from that offset.
    #[error(transparent)]
    Stream(#[from] crate::bytestream::StreamError),
    /// The engine refused.
    #[error(transparent)]
    Engine(#[from] loopd::Error),
    /// The process is unknown on that loop (or was forgotten).
    #[error("process {id} not found on loop {loop_name:?}")]
    ProcessNotFound {
        /// The loop asked.
        loop_name: String,
        /// The process asked for.
        id: u64,
    },
    /// Spawn past `process.max_processes` running processes on one loop.
    #[error("too many processes on loop {loop_name:?}: the limit is {limit} running")]
    TooManyProcesses {
        /// The loop.
        loop_name: String,
        /// The limit.
        limit: usize,
    },
    /// The program could not be started; the code follows the OS error.
    #[error("cannot start program {program:?}: {source}")]
    SpawnFailed {
        /// argv[0].
        program: String,
        /// What execve (or the spawn) said.
        #[source]
        source: std::io::Error,
    },
    /// The process's stdin, stdout or stderr is not a pipe to the daemon.
    #[error("fd {fd} of process {id} is not a pipe")]
    NotAPipe {
        /// The process.
        id: u64,
        /// The fd asked for.
        fd: i32,
    },
    /// The process's stdin is closed.
    #[error("stdin of process {0} is closed")]
    StdinClosed(u64),
    /// A shell command while `[process] allow_shell` is off.
    #[error("shell commands are disabled: set [process] allow_shell = true, or pass argv")]
    ShellDisabled,
    /// The FIFO is unknown on that loop.
    #[error("fifo {id} not found on loop {loop_name:?}")]
    FifoNotFound {
        /// The loop asked.
        loop_name: String,
        /// The FIFO asked for.
        id: u64,
    },
    /// A FIFO could not be opened.
    #[error("cannot open fifo {path:?}: {source}")]
    FifoOpen {
        /// The path.
        path: String,
        /// What open(2) said.
        #[source]
        source: std::io::Error,
    },
    /// ReadFifo on a FIFO opened for writing, or WriteFifo on one opened for reading.
    #[error("fifo {id} was opened for {opened_for}")]
    FifoDirection {
        /// The FIFO.
        id: u64,
        /// `reading` or `writing`.
        opened_for: &'static str,
    },
    /// The FIFO was closed.
    #[error("fifo {0} is closed")]
    FifoClosed(u64),
    /// A signal the daemon keeps for itself.
    #[error("signal {signal} is reserved: {why}")]
    SignalReserved {
        /// The signal, named and numbered.
        signal: String,
        /// Why.
        why: &'static str,
    },
    /// Something that is the daemon's fault.
    #[error("internal error: {0}")]
    Internal(String),
    /// The server is unknown on that loop (or was forgotten).
    #[error("server {id} not found on loop {loop_name:?}")]
    ServerNotFound {
        /// The loop asked.
        loop_name: String,
        /// The server asked for.
        id: u64,
    },
    /// The transport is unknown on that loop (or was forgotten).
    #[error("transport {id} not found on loop {loop_name:?}")]
    TransportNotFound {
        /// The loop asked.
        loop_name: String,
        /// The transport asked for.
        id: u64,
    },
    /// The transport's connection is lost (or not made yet).
    #[error("transport {0} is closed")]
    TransportClosed(u64),
    /// The engine refused a write (closing transport, after write_eof).
    #[error("cannot write to transport {id}: {source}")]
    TransportWrite {
        /// The transport.
        id: u64,
        /// Why.
        #[source]
        source: loopd::Error,
    },
    /// ReadTransport on a transport whose bytes are not kept in a stream.
    #[error(
        "transport {0} has no byte stream (its delivery is EVENTS_ONLY, or its protocol is echo or discard)"
    )]
    NoByteStream(u64),
    /// The datagram endpoint is unknown on that loop (or was forgotten).
    #[error("datagram endpoint {id} not found on loop {loop_name:?}")]
    EndpointNotFound {
        /// The loop asked.
        loop_name: String,
        /// The endpoint asked for.
        id: u64,
    },
    /// The datagram endpoint is closed.
    #[error("datagram endpoint {0} is closed")]
    EndpointClosed(u64),
    /// A file the daemon was asked to read (Sendfile) cannot be opened.
    #[error("cannot open {path:?}")]
    File {
        /// The path as given.
        path: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// OpenConnection's `timeout` passed before the connection was made.
    #[error("connecting to {0} timed out after {1:?}")]
    ConnectTimeout(String, std::time::Duration),
    /// StartTls on a transport that already speaks TLS.
    #[error("transport {0} already speaks tls")]
    AlreadyTls(u64),
    /// StartTls failed: the transport was closing, or the handshake failed or timed out.
    #[error("start_tls on transport {id}{server_name}: {source}")]
    StartTls {
        /// The transport.
        id: u64,
        /// ` for server name "..."` on the client's side, else empty.
        server_name: String,
        /// The engine's error (its code is this error's).
        #[source]
        source: loopd::Error,
    },
    /// A TLS connection named no CA, and the daemon has no default trust (`[tls] ca_file`
    /// unset and the system's trust store empty or unreadable).
    #[error("no CA given (tls.ca_pem or tls.ca_path) and no default trust: {0}")]
    NoTrustRoots(String),
}

impl Error {
    /// Shorthand for [`Error::Invalid`].
    pub fn invalid(what: &'static str, value: impl std::fmt::Display) -> Self {
        Error::Invalid {
            what,
            value: value.to_string(),
        }
    }

    /// The gRPC code of this error: the one table of the daemon.
    pub fn code(&self) -> Code {
        match self {
            Error::LoopNotFound(_) | Error::HandleNotFound { .. } => Code::NotFound,
            Error::FutureNotFound { .. } => Code::NotFound,
            Error::LoopClosed(_) | Error::LoopRunning(_) | Error::CloseDefault => {
                Code::FailedPrecondition
            }
            Error::FutureAlreadyDone(_) | Error::ClosedWhileWaiting { .. } => {
                Code::FailedPrecondition
            }
            Error::LoopExists(_) => Code::AlreadyExists,
            Error::TooManyLoops(_) | Error::TooLarge { .. } | Error::TooManySubscribers(_) => {
                Code::ResourceExhausted
            }
            Error::Quota { .. } => Code::ResourceExhausted,
            Error::Invalid { .. } => Code::InvalidArgument,
            Error::SinceOutOfRange { .. } | Error::Stream(_) => Code::OutOfRange,
            Error::DeadlineExceeded(..) => Code::DeadlineExceeded,
            Error::ShuttingDown => Code::Unavailable,
            Error::Entry { source, .. } => source.code(),
            Error::Engine(err) => engine_code(err),
            Error::ProcessNotFound { .. } => Code::NotFound,
            Error::TooManyProcesses { .. } => Code::ResourceExhausted,
            Error::SpawnFailed { source, .. } => spawn_code(source),
            Error::NotAPipe { .. } | Error::StdinClosed(_) => Code::FailedPrecondition,
            Error::ShellDisabled | Error::SignalReserved { .. } => Code::FailedPrecondition,
            Error::FifoNotFound { .. } => Code::NotFound,
            Error::FifoOpen { source, .. } => match source.raw_os_error() {
                Some(libc::ENXIO) => Code::FailedPrecondition, // a writer with no reader
                _ => spawn_code(source),
            },
            Error::FifoDirection { .. } | Error::FifoClosed(_) => Code::FailedPrecondition,
            Error::Internal(_) => Code::Internal,
            Error::ServerNotFound { .. } | Error::TransportNotFound { .. } => Code::NotFound,
            Error::TransportClosed(_) | Error::TransportWrite { .. } | Error::NoByteStream(_) => {
                Code::FailedPrecondition
            }
            Error::ConnectTimeout(..) => Code::DeadlineExceeded,
            Error::EndpointNotFound { .. } => Code::NotFound,
            Error::EndpointClosed(_) => Code::FailedPrecondition,
            Error::File { source, .. } => os_code(source).unwrap_or(Code::FailedPrecondition),
            Error::AlreadyTls(_) | Error::NoTrustRoots(_) => Code::FailedPrecondition,
            Error::StartTls { source, .. } => engine_code(source),
        }
    }
}

fn engine_code(err: &loopd::Error) -> Code {
    match err {
        loopd::Error::Closed => Code::FailedPrecondition,
        loopd::Error::InvalidDelay(_)
        | loopd::Error::InvalidTime(_)
        | loopd::Error::InvalidArgument { .. } => Code::InvalidArgument,
        loopd::Error::InvalidState(_) => Code::FailedPrecondition,
        loopd::Error::AddressInUse { .. } => Code::AlreadyExists,
        loopd::Error::Bind { .. } => Code::FailedPrecondition,
        loopd::Error::ConnectionRefused { .. }
        | loopd::Error::Connect { .. }
        | loopd::Error::MultipleErrors(_) => Code::Unavailable,
        loopd::Error::Resolve { .. } | loopd::Error::NameInfo { .. } => Code::NotFound,
        loopd::Error::TransportClosing
        | loopd::Error::WriteAfterEof
        | loopd::Error::ServerClosed => Code::FailedPrecondition,
        loopd::Error::InvalidSignal(_) | loopd::Error::UncatchableSignal(_) => {
            Code::InvalidArgument
        }
        loopd::Error::PipeClosed { .. } | loopd::Error::ProcessLookup(_) => {
            Code::FailedPrecondition
        }
        loopd::Error::TlsConfig { .. } => Code::InvalidArgument,
        loopd::Error::TlsHandshake { .. } => Code::Unavailable,
        loopd::Error::HandshakeTimeout { .. } => Code::DeadlineExceeded,
        loopd::Error::ReuseAddressNotSupported | loopd::Error::InvalidSendtoAddress { .. } => {
            Code::InvalidArgument
        }
        loopd::Error::SendfileInProgress | loopd::Error::SendfileNotAvailable(_) => {
            Code::FailedPrecondition
        }
        // A system call the request's own values made fail says so; any other is ours.
        loopd::Error::Io { source, .. } | loopd::Error::Sock { source, .. } => {
            os_code(source).unwrap_or(Code::Internal)
        }
        _ => Code::Internal,
    }
}

/// The code of an OS error that names a fault of the request (a path that is not there or
/// may not be used, a NUL byte, a name too long); `None` for any other.
fn os_code(err: &std::io::Error) -> Option<Code> {
    match err.kind() {
        std::io::ErrorKind::NotFound => Some(Code::NotFound),
        std::io::ErrorKind::PermissionDenied => Some(Code::PermissionDenied),
        std::io::ErrorKind::InvalidInput => Some(Code::InvalidArgument), // e.g. a NUL byte
        _ if err.raw_os_error() == Some(libc::ENAMETOOLONG) => Some(Code::InvalidArgument),
        _ => None,
    }
}

/// A failed spawn or open: as [`os_code`], and a file that is no program, a path through
/// a non-directory or arguments too long are INVALID_ARGUMENT too.
fn spawn_code(err: &std::io::Error) -> Code {
    os_code(err).unwrap_or(match err.raw_os_error() {
        Some(libc::ENOEXEC | libc::ENOTDIR | libc::E2BIG) => Code::InvalidArgument,
        _ => Code::Internal,
    })
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        let code = err.code();
        if code == Code::Internal {
            tracing::error!("{err}");
        } else {
            tracing::debug!(?code, "{err}");
        }
        Status::new(code, bounded(err.to_string()))
    }
}

/// Longest status message sent, in bytes. The message travels in an HTTP/2 header
/// (`grpc-message`, percent-encoded: up to 3 bytes per byte), and clients refuse header
/// lists past 16 KiB with a protocol error, so a message echoing a huge value (a 10,000
/// character loop name) must be cut.
const MAX_STATUS_MESSAGE: usize = 1024;

/// `message` cut to [`MAX_STATUS_MESSAGE`] bytes (on a char boundary), saying so.
fn bounded(mut message: String) -> String {
    let total = message.len();
    if total <= MAX_STATUS_MESSAGE {
        return message;
    }
    let mut end = MAX_STATUS_MESSAGE;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message.truncate(end);
    message.push_str(&format!("... (cut: {total} bytes in all)"));
    message
}

/// tonic's own answers to a malformed request, as (its code, a piece of its message,
/// loopd's code): bytes that are no protobuf and a unary call without its message are the
/// client's fault (tonic says INTERNAL), a message over the size limit is
/// RESOURCE_EXHAUSTED (tonic says OUT_OF_RANGE) as loopd's protos promise.
const TONIC_CODES: [(Code, &str, Code); 3] = [
    (
        Code::Internal,
        "failed to decode Protobuf message",
        Code::InvalidArgument,
    ),
    (
        Code::Internal,
        "Missing request message",
        Code::InvalidArgument,
    ),
    (
        Code::OutOfRange,
        "message length too large",
        Code::ResourceExhausted,
    ),
];

/// loopd's code for a status tonic made from a malformed request; `None` for any other.
pub fn tonic_code(code: Code, message: &str) -> Option<Code> {
    TONIC_CODES
        .iter()
        .find(|(from, piece, _)| *from == code && message.contains(piece))
        .map(|(_, _, to)| *to)
}

/// `status` with loopd's code if tonic made it from a malformed request message (see
/// [`tonic_code`]); for errors read from a request stream after the response started.
pub fn inbound(status: Status) -> Status {
    match tonic_code(status.code(), status.message()) {
        Some(code) => Status::new(code, status.message().to_owned()),
        None => status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_maps_to_its_code_and_names_the_value() {
        let cases = [
            (Error::LoopNotFound("x1".into()), Code::NotFound, "x1"),
            (
                Error::HandleNotFound {
                    loop_name: "default".into(),
                    id: 77,
                },
                Code::NotFound,
                "77",
            ),
            (
                Error::LoopClosed("lp".into()),
                Code::FailedPrecondition,
                "lp",
            ),
            (
                Error::invalid("delay_seconds", "NaN"),
                Code::InvalidArgument,
                "NaN",
            ),
            (
                Error::TooLarge {
                    what: "payload",
                    size: 70000,
                    limit: 65536,
                },
                Code::ResourceExhausted,
                "70000",
            ),
            (
                Error::Entry {
                    index: 3,
                    source: Box::new(Error::invalid("at", "-inf")),
                },
                Code::InvalidArgument,
                "entry 3",
            ),
            (Error::ShuttingDown, Code::Unavailable, "shutting down"),
            (
                Error::SpawnFailed {
                    program: "nope-cmd".into(),
                    source: std::io::Error::from_raw_os_error(libc::ENOENT),
                },
                Code::NotFound,
                "nope-cmd",
            ),
            (
                Error::SpawnFailed {
                    program: "/etc/passwd".into(),
                    source: std::io::Error::from_raw_os_error(libc::EACCES),
                },
                Code::PermissionDenied,
                "/etc/passwd",
            ),
            (
                Error::ProcessNotFound {
                    loop_name: "default".into(),
                    id: 99,
                },
                Code::NotFound,
                "process 99",
            ),
            (
                Error::ShellDisabled,
                Code::FailedPrecondition,
                "allow_shell",
            ),
            (
                Error::Engine(loopd::Error::Closed),
                Code::FailedPrecondition,
                "closed",
            ),
            (
                Error::TransportNotFound {
                    loop_name: "default".into(),
                    id: 41,
                },
                Code::NotFound,
                "41",
            ),
            (
                Error::ServerNotFound {
                    loop_name: "default".into(),
                    id: 42,
                },
                Code::NotFound,
                "42",
            ),
            (Error::TransportClosed(43), Code::FailedPrecondition, "43"),
            (
                Error::FifoOpen {
                    path: "/long".into(),
                    source: std::io::Error::from_raw_os_error(libc::ENAMETOOLONG),
                },
                Code::InvalidArgument,
                "/long",
            ),
            (
                Error::File {
                    path: "/long".into(),
                    source: std::io::Error::from_raw_os_error(libc::ENAMETOOLONG),
                },
                Code::InvalidArgument,
                "/long",
            ),
            (
                Error::File {
                    path: "/etc/\0".into(),
                    source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
                },
                Code::InvalidArgument,
                "/etc/",
            ),
            (
                Error::TransportWrite {
                    id: 44,
                    source: loopd::Error::WriteAfterEof,
                },
                Code::FailedPrecondition,
                "44",
            ),
        ];
        for (err, code, needle) in cases {
            let status = Status::from(err);
            assert_eq!(status.code(), code, "{}", status.message());
            assert!(status.message().contains(needle), "{}", status.message());
        }
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let err = Error::LoopNotFound("é".repeat(5000));
        let total = err.to_string().len();
        let status = Status::from(err);
        let message = status.message();
        assert!(
            message.len() <= MAX_STATUS_MESSAGE + 40,
            "{}",
            message.len()
        );
        assert!(message.starts_with("loop \"éé"), "{message}");
        assert!(
            message.ends_with(&format!("(cut: {total} bytes in all)")),
            "{message}"
        );
        let short = Status::from(Error::LoopNotFound("x".into()));
        assert_eq!(short.message(), "loop \"x\" not found");
    }

    #[test]
    fn tonic_statuses_for_malformed_requests_get_loopd_codes() {
        let cases = [
            (
                Code::Internal,
                "failed to decode Protobuf message: invalid varint",
                Some(Code::InvalidArgument),
            ),
            (
                Code::Internal,
                "Missing request message.",
                Some(Code::InvalidArgument),
            ),
            (
                Code::OutOfRange,
                "Error, decoded message length too large: found 9 bytes, the limit is: 8 bytes",
                Some(Code::ResourceExhausted),
            ),
            (Code::Internal, "internal error: a bug", None),
            (Code::OutOfRange, "since_seq 9 is beyond", None),
        ];
        for (code, message, want) in cases {
            assert_eq!(tonic_code(code, message), want, "{message}");
            let status = inbound(Status::new(code, message));
            assert_eq!(status.code(), want.unwrap_or(code), "{message}");
            assert_eq!(status.message(), message);
        }
    }

    #[test]
    fn datagram_and_sendfile_errors_map_to_their_codes() {
        let cases = [
            (
                loopd::Error::ReuseAddressNotSupported,
                Code::InvalidArgument,
                "reuse_address",
            ),
            (
                loopd::Error::InvalidSendtoAddress {
                    addr: "127.0.0.1:9".into(),
                    expected: "none or 127.0.0.1:7".into(),
                },
                Code::InvalidArgument,
                "127.0.0.1:9",
            ),
            (
                loopd::Error::SendfileInProgress,
                Code::FailedPrecondition,
                "sendfile",
            ),
            (
                loopd::Error::SendfileNotAvailable("not a regular file".into()),
                Code::FailedPrecondition,
                "not a regular file",
            ),
            (
                loopd::Error::Io {
                    op: "open",
                    source: std::io::Error::from_raw_os_error(libc::ENOENT),
                },
                Code::NotFound,
                "open failed",
            ),
            (
                loopd::Error::Io {
                    op: "bind",
                    source: std::io::Error::from_raw_os_error(libc::EACCES),
                },
                Code::PermissionDenied,
                "bind failed",
            ),
            (
                loopd::Error::Io {
                    op: "bind",
                    source: std::io::Error::from_raw_os_error(libc::ENAMETOOLONG),
                },
                Code::InvalidArgument,
                "bind failed",
            ),
            (
                loopd::Error::Sock {
                    op: "recv",
                    fd: 7,
                    source: std::io::Error::from_raw_os_error(libc::EBADF),
                },
                Code::Internal,
                "fd 7",
            ),
        ];
        for (err, code, needle) in cases {
            let status = Status::from(Error::Engine(err));
            assert_eq!(status.code(), code, "{}", status.message());
            assert!(status.message().contains(needle), "{}", status.message());
        }
    }
}
