//! The client's one error type.
//!
//! # Invariants
//! - An answer from the daemon that is not OK becomes [`Error::Status`], keeping the gRPC
//!   code and the daemon's message untouched; its `Display` is `CODE_NAME: message`
//!   (e.g. `NOT_FOUND: unknown handle 42 on loop "default"`).
//! - Everything else (a bad target, a failed connection, a malformed response) has its own
//!   variant with a lowercase message naming the bad value.

use std::time::Duration;

pub use tonic::Code;

/// Result alias used throughout the client.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong when talking to loopd.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The daemon answered with a gRPC status other than OK.
    #[error("{}: {message}", code_name(*.code))]
    Status {
        /// The gRPC status code, e.g. [`Code::NotFound`].
        code: Code,
        /// The daemon's message, saying what was wrong and with which value.
        message: String,
    },
    /// A target string that is neither a socket path nor a `unix:` URI.
    #[error("invalid target {target:?}: {reason}")]
    InvalidTarget {
        /// The target as given.
        target: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A target this client cannot reach yet (e.g. `https://`, until TLS exists).
    #[error("unsupported target {target:?}: {reason}")]
    UnsupportedTarget {
        /// The target as given.
        target: String,
        /// What is missing.
        reason: &'static str,
    },
    /// The connection to the daemon could not be made.
    #[error("failed to connect to {target}")]
    Connect {
        /// The target, rendered.
        target: String,
        /// What the transport said.
        #[source]
        source: tonic::transport::Error,
    },
    /// A duration too large for the wire (protobuf's Duration holds up to 10,000 years).
    #[error("duration {0:?} is too large to send")]
    DurationTooLarge(Duration),
    /// The daemon's response lacks a field the contract says is always set.
    #[error("malformed response from the daemon: `{field}` is missing")]
    MissingField {
        /// The field's name in the proto.
        field: &'static str,
    },
    /// The daemon's response has a field with a value the contract rules out.
    #[error("malformed response from the daemon: `{field}` is {value}")]
    InvalidField {
        /// The field's name in the proto.
        field: &'static str,
        /// The offending value, rendered.
        value: String,
    },
}

impl Error {
    /// The gRPC status code, if the daemon answered with one.
    pub fn code(&self) -> Option<Code> {
        match self {
            Error::Status { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// True if the daemon answered NOT_FOUND (unknown loop, handle or future).
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(Code::NotFound)
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        Error::Status {
            code: status.code(),
            message: status.message().to_owned(),
        }
    }
}

/// The canonical name of a gRPC status code, as in `google/rpc/code.proto`
/// (`NOT_FOUND`, `INVALID_ARGUMENT`, ...).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_display_names_the_code_and_keeps_the_message() {
        let cases = [
            (
                Code::NotFound,
                "unknown handle 42",
                "NOT_FOUND: unknown handle 42",
            ),
            (
                Code::InvalidArgument,
                "bad delay NaN",
                "INVALID_ARGUMENT: bad delay NaN",
            ),
            (Code::FailedPrecondition, "", "FAILED_PRECONDITION: "),
            (Code::Unauthenticated, "x", "UNAUTHENTICATED: x"),
        ];
        for (code, message, want) in cases {
            let err = Error::from(tonic::Status::new(code, message));
            assert_eq!(err.to_string(), want);
            assert_eq!(err.code(), Some(code));
        }
    }

    #[test]
    fn only_status_errors_have_a_code() {
        let err = Error::MissingField { field: "loop_info" };
        assert_eq!(err.code(), None);
        assert!(!err.is_not_found());
        assert!(Error::from(tonic::Status::not_found("x")).is_not_found());
    }
}
