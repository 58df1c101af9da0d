//! The loop's clock: `CLOCK_MONOTONIC` in nanoseconds.
//!
//! # Invariants
//! - One clock for everything: deadlines, `time()`, and the timerfd all use
//!   `CLOCK_MONOTONIC`, so a deadline armed in the kernel means the same instant that
//!   `drain_due` compares against. Rust's `Instant` reads the same clock on Linux.
//! - Times are `u64` nanoseconds (584 years of range), converted to `f64` seconds only
//!   at the API edge, so ordering is never lost to float rounding inside the engine.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Nanoseconds since an unspecified point (boot), from `CLOCK_MONOTONIC`.
pub(crate) type Nanos = u64;

/// Reads `CLOCK_MONOTONIC` (a vDSO call, no syscall).
pub(crate) fn now() -> Nanos {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Loop time in seconds, as asyncio's `loop.time()` reports it.
pub(crate) fn to_secs(t: Nanos) -> f64 {
    t as f64 / 1e9
}

/// Turns a delay in seconds into nanoseconds. Negative delays mean "now" (as in asyncio);
/// NaN, infinities and values past 2^63 ns are errors.
pub(crate) fn delay_from_secs(secs: f64) -> Result<Nanos> {
    if !secs.is_finite() || secs * 1e9 >= i64::MAX as f64 {
        return Err(Error::InvalidDelay(secs));
    }
    Ok((secs.max(0.0) * 1e9).ceil() as Nanos)
}

/// Turns an absolute loop time in seconds into nanoseconds (rounded up: never early).
pub(crate) fn time_from_secs(secs: f64) -> Result<Nanos> {
    if !secs.is_finite() || secs < 0.0 || secs * 1e9 >= i64::MAX as f64 {
        return Err(Error::InvalidTime(secs));
    }
    Ok((secs * 1e9).ceil() as Nanos)
}

/// Saturating conversion of a `Duration` to nanoseconds.
pub(crate) fn duration_nanos(d: Duration) -> Nanos {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Maps an `Instant` onto the loop clock by pairing it with a fresh reading of both.
pub(crate) fn from_instant(at: Instant) -> Nanos {
    let (now_instant, now_nanos) = (Instant::now(), now());
    match at.checked_duration_since(now_instant) {
        Some(ahead) => now_nanos.saturating_add(duration_nanos(ahead)),
        None => now_nanos.saturating_sub(duration_nanos(now_instant - at)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_are_validated_like_asyncio() {
        assert_eq!(delay_from_secs(0.5).unwrap(), 500_000_000);
        assert_eq!(
            delay_from_secs(-3.0).unwrap(),
            0,
            "negative delay means now"
        );
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e300] {
            assert!(
                matches!(delay_from_secs(bad), Err(Error::InvalidDelay(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn loop_times_round_up_and_reject_nonsense() {
        assert_eq!(time_from_secs(1.5).unwrap(), 1_500_000_000);
        for bad in [f64::NAN, f64::INFINITY, -1.0] {
            assert!(
                matches!(time_from_secs(bad), Err(Error::InvalidTime(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn instants_map_onto_the_monotonic_clock() {
        let before = now();
        let mapped = from_instant(Instant::now() + Duration::from_millis(10));
        assert!(mapped >= before + 9_000_000 && mapped <= now() + 11_000_000);
    }
}
