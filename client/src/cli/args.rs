//! Value parsers for clap: durations, RFC 3339 times, on/off.
//!
//! # Invariants
//! - Every parser's error names the bad value, so clap's message (exit status 2) says
//!   exactly what was wrong: `invalid value '5x' for '--in <DURATION>': ...`.

use std::time::{Duration, SystemTime};

/// A duration like `1.5s`, `250ms`, `2m`, `1h 30m` (humantime's syntax).
pub fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("bad duration {s:?}: {e} (try 1.5s, 250ms, 2m)"))
}

/// An RFC 3339 time: `2026-11-22T22:10:00Z`, `...00.25Z` or with an offset
/// (`2026-11-22T23:10:00+01:00`).
pub fn rfc3339(s: &str) -> Result<SystemTime, String> {
    let bad = |why: &str| format!("bad RFC 3339 time {s:?}: {why} (try 2026-11-22T22:10:00Z)");
    let (utc, offset) = split_offset(s).ok_or_else(|| bad("missing Z or +HH:MM offset"))?;
    let local = humantime::parse_rfc3339(&format!("{utc}Z")).map_err(|e| bad(&e.to_string()))?;
    let shifted = if offset >= 0 {
        local.checked_sub(Duration::from_secs(offset.unsigned_abs()))
    } else {
        local.checked_add(Duration::from_secs(offset.unsigned_abs()))
    };
    shifted.ok_or_else(|| bad("out of range"))
}

/// Splits `...Z` or `...+HH:MM` into the local part and the offset in seconds east.
fn split_offset(s: &str) -> Option<(&str, i64)> {
    if let Some(utc) = s.strip_suffix(['Z', 'z']) {
        return Some((utc, 0));
    }
    let at = s.len().checked_sub(6)?;
    let (local, offset) = (s.get(..at)?, s.get(at..)?);
    let sign = match offset.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let (hours, minutes) = offset.get(1..)?.split_once(':')?;
    let (hours, minutes): (i64, i64) = (hours.parse().ok()?, minutes.parse().ok()?);
    (hours < 24 && minutes < 60).then_some((local, sign * (hours * 3600 + minutes * 60)))
}

/// A loop time in seconds (`call_at`): a finite number, or `inf`.
pub fn loop_time(s: &str) -> Result<f64, String> {
    let bad = || format!("bad loop time {s:?}: expected seconds, e.g. 12345.5");
    let value: f64 = s.trim().parse().map_err(|_| bad())?;
    if value.is_nan() || value == f64::NEG_INFINITY {
        return Err(bad());
    }
    Ok(value)
}

/// `on` or `off` (also true/false, yes/no, 1/0).
pub fn on_off(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        _ => Err(format!("expected on or off, not {s:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, nanos: u32) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::new(secs, nanos)
    }

    #[test]
    fn durations() {
        let cases = [
            ("1.5s", Ok(Duration::from_millis(1500))),
            ("250ms", Ok(Duration::from_millis(250))),
            ("2m", Ok(Duration::from_secs(120))),
            ("1h 30m", Ok(Duration::from_secs(5400))),
            ("0", Ok(Duration::ZERO)),
            (" 10us ", Ok(Duration::from_micros(10))),
        ];
        for (input, want) in cases {
            assert_eq!(duration(input), want, "{input:?}");
        }
        for bad in ["5x", "", "-1s", "s", "1.5"] {
            let err = duration(bad).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn rfc3339_times() {
        let cases = [
            ("2026-11-22T22:10:00Z", Ok(at(1_795_385_400, 0))),
            (
                "2026-11-22T22:10:00.25Z",
                Ok(at(1_795_385_400, 250_000_000)),
            ),
            ("2026-11-22T23:10:00+01:00", Ok(at(1_795_385_400, 0))),
            ("2026-11-22T20:40:00-01:30", Ok(at(1_795_385_400, 0))),
            ("2026-11-22T22:10:00+00:00", Ok(at(1_795_385_400, 0))),
        ];
        for (input, want) in cases {
            assert_eq!(rfc3339(input), want, "{input:?}");
        }
        for bad in [
            "2026-11-22T22:10:00",
            "tomorrow",
            "2026-13-01T00:00:00Z",
            "2026-11-22T22:10:00+25:00",
            "",
        ] {
            let err = rfc3339(bad).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn loop_times() {
        assert_eq!(loop_time("12.5"), Ok(12.5));
        assert_eq!(loop_time("inf"), Ok(f64::INFINITY));
        for bad in ["NaN", "-inf", "soon", ""] {
            assert!(loop_time(bad).unwrap_err().contains(&format!("{bad:?}")));
        }
    }

    #[test]
    fn on_off_values() {
        assert_eq!(on_off("on"), Ok(true));
        assert_eq!(on_off("OFF"), Ok(false));
        assert_eq!(
            on_off("maybe"),
            Err("expected on or off, not \"maybe\"".into())
        );
    }
}
