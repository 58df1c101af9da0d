//! Conversions between the wire's well-known types and std's.
//!
//! # Invariants
//! - Received values the contract rules out (a negative duration) become
//!   [`Error::InvalidField`] naming the field, never a panic.

use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};

/// A wall clock time from the wire; None if unset or out of `SystemTime`'s range.
pub(crate) fn system_time(ts: Option<prost_types::Timestamp>) -> Option<SystemTime> {
    ts.and_then(|ts| SystemTime::try_from(ts).ok())
}

/// A required wall clock time from the wire.
pub(crate) fn required_time(
    ts: Option<prost_types::Timestamp>,
    field: &'static str,
) -> Result<SystemTime> {
    let ts = ts.ok_or(Error::MissingField { field })?;
    SystemTime::try_from(ts).map_err(|_| Error::InvalidField {
        field,
        value: format!("{ts:?}"),
    })
}

/// A duration from the wire: unset is zero, negative is an error naming `field`.
pub(crate) fn duration(d: Option<prost_types::Duration>, field: &'static str) -> Result<Duration> {
    match d {
        None => Ok(Duration::ZERO),
        Some(d) => Duration::try_from(d).map_err(|_| Error::InvalidField {
            field,
            value: format!("{}s {}ns", d.seconds, d.nanos),
        }),
    }
}

/// A duration for the wire; fails for durations beyond protobuf's range.
pub(crate) fn to_wire_duration(d: Duration) -> Result<prost_types::Duration> {
    prost_types::Duration::try_from(d).map_err(|_| Error::DurationTooLarge(d))
}

/// A wall clock time for the wire.
pub(crate) fn to_wire_time(t: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(t)
}

/// A message field the contract says is always set.
pub(crate) fn required<T>(value: Option<T>, field: &'static str) -> Result<T> {
    value.ok_or(Error::MissingField { field })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_from_the_wire() {
        let d = |seconds, nanos| Some(prost_types::Duration { seconds, nanos });
        assert_eq!(duration(None, "x").unwrap(), Duration::ZERO);
        assert_eq!(duration(d(1, 500), "x").unwrap(), Duration::new(1, 500));
        let err = duration(d(-1, 0), "uptime").unwrap_err();
        assert_eq!(
            err.to_string(),
            "malformed response from the daemon: `uptime` is -1s 0ns"
        );
    }

    #[test]
    fn huge_durations_are_refused() {
        assert!(to_wire_duration(Duration::from_secs(5)).is_ok());
        let err = to_wire_duration(Duration::MAX).unwrap_err();
        assert!(matches!(err, Error::DurationTooLarge(d) if d == Duration::MAX));
    }

    #[test]
    fn times_round_trip() {
        let t = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123_000_000);
        assert_eq!(system_time(Some(to_wire_time(t))), Some(t));
        assert_eq!(system_time(None), None);
        assert!(matches!(
            required_time(None, "wall_time"),
            Err(Error::MissingField { field: "wall_time" })
        ));
    }
}
