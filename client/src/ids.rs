//! Typed ids: a [`HandleId`] is not a [`FutureId`].
//!
//! # Invariants
//! - Ids are unique within their loop and never reused while the daemon runs; `0` is
//!   never a valid id (the daemon answers INVALID_ARGUMENT or NOT_FOUND).

use std::fmt;
use std::str::FromStr;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = std::num::ParseIntError;

            /// Parses a decimal id, e.g. `42`.
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse().map($name)
            }
        }

        impl From<u64> for $name {
            fn from(id: u64) -> Self {
                $name(id)
            }
        }
    };
}

id_type!(
    /// A handle scheduled on a loop (by `call_soon`, `call_later`, `call_at`, ...),
    /// as asyncio's `Handle`/`TimerHandle`.
    HandleId
);

id_type!(
    /// A future created on a loop (asyncio's `loop.create_future()`), shared between
    /// clients.
    FutureId
);

id_type!(
    /// A child process started on a loop (ProcessService.Spawn), unique within the daemon.
    ProcessId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_and_display_as_decimal() {
        assert_eq!("42".parse::<HandleId>(), Ok(HandleId(42)));
        assert_eq!(FutureId(7).to_string(), "7");
        assert!("-1".parse::<FutureId>().is_err());
        assert!("x".parse::<HandleId>().is_err());
    }
}
