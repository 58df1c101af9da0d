//! The gRPC services: thin layers that validate a request, hand one job to the loop's
//! thread, and convert the answer.
//!
//! # Invariants
//! - Everything a client sends is validated here, before the hand-off; the loop thread
//!   only checks what depends on its state (ids, idempotency keys, closedness).
//! - One [`Api`] value implements every loopd service; clones share one [`Daemon`].

mod daemon;
mod events;
mod futures;
mod loops;
mod net;
pub mod paging;
mod process;
mod scheduler;
mod signals;

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use loopd_proto::pb;
use pb::action::Kind as ActionKind;
use prost::Message;
use tokio::sync::watch;
use tonic::Request;
use tonic::transport::server::UdsConnectInfo;

use crate::config::Limits;
use crate::local::{Entry, When};
use crate::loops::Registry;
use crate::status::{Error, Result};

/// Longest idempotency key, in bytes.
const MAX_REQUEST_ID: usize = 128;
/// Longest EmitEventAction tag, in bytes.
const MAX_TAG: usize = 256;
/// Longest exception or cancel message, in bytes.
const MAX_MESSAGE: usize = 4096;
/// Delays and times must stay below 2^63 ns, the engine's range.
const MAX_SECONDS: f64 = 9.2e9;

/// What every service shares.
pub struct Daemon {
    /// The loops.
    pub registry: Registry,
    /// Flips to `true` when the daemon starts shutting down.
    pub shutdown: watch::Receiver<bool>,
    /// When the daemon started (monotonic).
    pub started: Instant,
    /// When the daemon started (wall clock).
    pub started_at: SystemTime,
    /// The socket it listens on.
    pub socket_path: PathBuf,
    /// Its state directory.
    pub state_dir: PathBuf,
}

/// The implementation of every loopd service.
#[derive(Clone)]
pub struct Api {
    daemon: Arc<Daemon>,
}

impl Api {
    /// Services backed by `daemon`.
    pub fn new(daemon: Arc<Daemon>) -> Self {
        Api { daemon }
    }

    fn limits(&self) -> &Limits {
        self.daemon.registry.limits()
    }
}

/// The caller's uid from the Unix socket's peer credentials; `u32::MAX` if unknown.
fn caller_uid<T>(request: &Request<T>) -> u32 {
    request
        .extensions()
        .get::<UdsConnectInfo>()
        .and_then(|info| info.peer_cred)
        .map_or(u32::MAX, |cred| cred.uid())
}

fn check_request_id(request_id: &str) -> Result<()> {
    if request_id.len() > MAX_REQUEST_ID {
        return Err(Error::invalid(
            "request_id",
            format!("{} bytes, more than {MAX_REQUEST_ID}", request_id.len()),
        ));
    }
    Ok(())
}

fn check_payload(what: &'static str, bytes: &[u8], limits: &Limits) -> Result<()> {
    if bytes.len() > limits.max_payload_bytes {
        return Err(Error::TooLarge {
            what,
            size: bytes.len(),
            limit: limits.max_payload_bytes,
        });
    }
    Ok(())
}

fn check_message(what: &'static str, message: &str) -> Result<()> {
    if message.len() > MAX_MESSAGE {
        return Err(Error::invalid(
            what,
            format!("{} bytes, more than {MAX_MESSAGE}", message.len()),
        ));
    }
    Ok(())
}

fn check_action(action: Option<&pb::Action>, limits: &Limits) -> Result<()> {
    match action.and_then(|a| a.kind.as_ref()) {
        None | Some(ActionKind::StopLoop(_)) => Ok(()),
        Some(ActionKind::EmitEvent(emit)) => {
            if emit.tag.len() > MAX_TAG {
                return Err(Error::invalid(
                    "tag",
                    format!("{} bytes, more than {MAX_TAG}", emit.tag.len()),
                ));
            }
            check_payload("payload", &emit.payload, limits)
        }
        Some(ActionKind::ResolveFuture(resolve)) => {
            if resolve.future_id == 0 {
                return Err(Error::invalid("future_id", "0 (ids start at 1)"));
            }
            check_payload("value", &resolve.value, limits)
        }
        Some(ActionKind::WriteTransport(write)) => {
            if write.transport_id == 0 {
                return Err(Error::invalid("transport_id", "0 (ids start at 1)"));
            }
            check_payload("data", &write.data, limits)
        }
        Some(ActionKind::CloseTransport(close)) => {
            if close.transport_id == 0 {
                return Err(Error::invalid("transport_id", "0 (ids start at 1)"));
            }
            Ok(())
        }
        Some(kind @ (ActionKind::SignalProcess(_) | ActionKind::SpawnProcess(_))) => {
            crate::process::check_action(kind)
        }
    }
}

/// A protobuf Duration in seconds; INVALID_ARGUMENT if malformed or out of range.
fn duration_secs(what: &'static str, d: &prost_types::Duration) -> Result<f64> {
    let mixed = (d.seconds > 0 && d.nanos < 0) || (d.seconds < 0 && d.nanos > 0);
    if d.nanos.abs() >= 1_000_000_000 || mixed {
        return Err(Error::invalid(
            what,
            format!("{d:?} is not a valid Duration"),
        ));
    }
    let secs = d.seconds as f64 + f64::from(d.nanos) / 1e9;
    if secs.abs() >= MAX_SECONDS {
        return Err(Error::invalid(what, format!("{secs:?} s is out of range")));
    }
    Ok(secs)
}

/// A non-negative protobuf Duration.
fn non_negative(what: &'static str, d: &prost_types::Duration) -> Result<Duration> {
    let secs = duration_secs(what, d)?;
    if secs < 0.0 {
        return Err(Error::invalid(what, format!("{secs} s is negative")));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A delay or time in float seconds: NaN and -inf are invalid, +inf never fires.
fn float_secs(what: &'static str, secs: f64, make: fn(f64) -> When) -> Result<When> {
    if secs.is_nan() || secs == f64::NEG_INFINITY {
        return Err(Error::invalid(
            what,
            format!("{secs:?} (must be a number, not NaN or -inf)"),
        ));
    }
    if secs == f64::INFINITY {
        return Ok(When::Never);
    }
    if secs.abs() >= MAX_SECONDS {
        return Err(Error::invalid(what, format!("{secs:?} s is out of range")));
    }
    Ok(make(secs))
}

fn wall_time(what: &'static str, ts: Option<&prost_types::Timestamp>) -> Result<When> {
    let ts = ts.ok_or_else(|| Error::invalid(what, "unset"))?;
    if !(0..1_000_000_000).contains(&ts.nanos) {
        // SystemTime::try_from would normalize it; a Timestamp's nanos are 0 to 999999999.
        return Err(Error::invalid(
            what,
            format!("{ts:?} is not a valid Timestamp (nanos: 0 to 999999999)"),
        ));
    }
    let at = SystemTime::try_from(*ts)
        .map_err(|_| Error::invalid(what, format!("{ts:?} is not a valid Timestamp")))?;
    let delta = match at.duration_since(SystemTime::now()) {
        Ok(ahead) => ahead.as_secs_f64(),
        Err(_) => 0.0,
    };
    if delta >= MAX_SECONDS {
        return Err(Error::invalid(
            what,
            format!("{ts:?} is too far in the future"),
        ));
    }
    Ok(When::AtWall(at))
}

/// Validates one batch entry (the common form of every schedule request).
fn entry(mut raw: pb::ScheduleEntry, limits: &Limits) -> Result<Entry> {
    use pb::schedule_entry::When as W;
    let when = match &raw.when {
        None => {
            return Err(Error::invalid(
                "when",
                "unset (set soon, delay, delay_seconds, at or at_wall_time)",
            ));
        }
        Some(W::Soon(_)) => When::Soon,
        Some(W::Delay(d)) => When::Delay(duration_secs("delay", d)?),
        Some(W::DelaySeconds(s)) => float_secs("delay_seconds", *s, When::Delay)?,
        Some(W::At(at)) => float_secs("at", *at, When::At)?,
        Some(W::AtWallTime(ts)) => wall_time("at_wall_time", Some(ts))?,
    };
    check_action(raw.action.as_ref(), limits)?;
    check_request_id(&raw.request_id)?;
    let request_id = std::mem::take(&mut raw.request_id);
    let fingerprint = if request_id.is_empty() {
        0
    } else {
        let mut hasher = DefaultHasher::new();
        raw.encode_to_vec().hash(&mut hasher);
        hasher.finish()
    };
    Ok(Entry {
        when,
        action: raw.action,
        request_id,
        fingerprint,
    })
}

/// Validates a batch: its size, each entry, and distinct keys.
fn entries(raw: Vec<pb::ScheduleEntry>, limits: &Limits) -> Result<Vec<Entry>> {
    if raw.len() > limits.max_batch_entries {
        return Err(Error::invalid(
            "entries",
            format!(
                "{} entries, more than the limit of {}",
                raw.len(),
                limits.max_batch_entries
            ),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    raw.into_iter()
        .enumerate()
        .map(|(index, raw)| {
            let at = |source| Error::Entry {
                index,
                source: Box::new(source),
            };
            let entry = entry(raw, limits).map_err(at)?;
            if !entry.request_id.is_empty() && !seen.insert(entry.request_id.clone()) {
                return Err(at(Error::invalid(
                    "request_id",
                    format!("{:?} appears twice in the batch", entry.request_id),
                )));
            }
            Ok(entry)
        })
        .collect()
}

/// The call's deadline from its `grpc-timeout` header, if it has one.
fn grpc_timeout(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn soon_with(action: pb::Action) -> pb::ScheduleEntry {
        pb::ScheduleEntry {
            when: Some(pb::schedule_entry::When::Soon(())),
            action: Some(action),
            request_id: String::new(),
        }
    }

    #[test]
    fn float_times_are_validated_and_infinity_never_fires() {
        let delay = |s| float_secs("delay_seconds", s, When::Delay);
        assert_eq!(delay(1.5).unwrap(), When::Delay(1.5));
        assert_eq!(delay(-2.0).unwrap(), When::Delay(-2.0));
        assert_eq!(delay(f64::INFINITY).unwrap(), When::Never);
        for bad in [f64::NAN, f64::NEG_INFINITY, 1e300] {
            let err = delay(bad).unwrap_err();
            assert!(matches!(err, Error::Invalid { .. }), "{bad}");
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn wall_times_must_be_valid_timestamps() {
        let ts = |seconds, nanos| prost_types::Timestamp { seconds, nanos };
        assert!(wall_time("when", Some(&ts(0, 999_999_999))).is_ok());
        assert!(wall_time("when", None).is_err());
        for bad in [
            ts(0, -1),
            ts(0, 1_000_000_000),
            ts(i64::MIN, 0),
            ts(i64::MAX, 0),
        ] {
            let err = wall_time("when", Some(&bad)).unwrap_err();
            assert!(err.to_string().starts_with("invalid when: "), "{err}");
        }
    }

    #[test]
    fn durations_must_be_well_formed() {
        let d = |seconds, nanos| prost_types::Duration { seconds, nanos };
        assert_eq!(duration_secs("delay", &d(1, 500_000_000)).unwrap(), 1.5);
        assert_eq!(duration_secs("delay", &d(-1, -500_000_000)).unwrap(), -1.5);
        for bad in [d(1, -1), d(0, 1_000_000_000), d(i64::MAX, 0)] {
            assert!(duration_secs("delay", &bad).is_err(), "{bad:?}");
        }
        assert!(non_negative("timeout", &d(-1, 0)).is_err());
    }

    #[test]
    fn actions_are_checked_against_the_limits() {
        let limits = Limits {
            max_payload_bytes: 4,
            ..Limits::default()
        };
        let emit = |tag: &str, payload: &[u8]| pb::Action {
            kind: Some(ActionKind::EmitEvent(pb::EmitEventAction {
                tag: tag.into(),
                payload: payload.into(),
            })),
        };
        assert!(entry(soon_with(emit("t", b"1234")), &limits).is_ok());
        let too_big = entry(soon_with(emit("t", b"12345")), &limits).unwrap_err();
        assert!(matches!(too_big, Error::TooLarge { size: 5, .. }));
        let long_tag = entry(soon_with(emit(&"x".repeat(257), b"")), &limits).unwrap_err();
        assert!(matches!(long_tag, Error::Invalid { what: "tag", .. }));
        let zero = pb::Action {
            kind: Some(ActionKind::ResolveFuture(pb::ResolveFutureAction {
                future_id: 0,
                value: vec![],
            })),
        };
        assert!(matches!(
            entry(soon_with(zero), &limits),
            Err(Error::Invalid {
                what: "future_id",
                ..
            })
        ));
    }

    #[test]
    fn batches_reject_repeated_keys_and_name_the_entry() {
        let keyed = |key: &str| pb::ScheduleEntry {
            when: Some(pb::schedule_entry::When::DelaySeconds(1.0)),
            action: None,
            request_id: key.into(),
        };
        let err =
            entries(vec![keyed("a"), keyed("b"), keyed("a")], &Limits::default()).unwrap_err();
        assert!(err.to_string().starts_with("entry 2:"), "{err}");
    }

    #[test]
    fn grpc_timeout_headers_parse() {
        let mut md = tonic::metadata::MetadataMap::new();
        assert_eq!(grpc_timeout(&md), None);
        for (value, expected) in [
            ("100m", Duration::from_millis(100)),
            ("2S", Duration::from_secs(2)),
            ("5u", Duration::from_micros(5)),
        ] {
            md.insert("grpc-timeout", value.parse().unwrap());
            assert_eq!(grpc_timeout(&md), Some(expected), "{value}");
        }
        md.insert("grpc-timeout", "12x".parse().unwrap());
        assert_eq!(grpc_timeout(&md), None);
    }
}
