//! The environment a child gets: cleared, then the config's allowlist taken from the
//! daemon's own environment, then the variables the request names.
//!
//! # Invariants
//! - Variables of the service manager (`NOTIFY_SOCKET`, `LISTEN_*`, `WATCHDOG_*`) never
//!   reach a child: a request naming one is refused (INVALID_ARGUMENT, naming it), and
//!   the config refuses them in the allowlist. Refusing beats stripping silently: a
//!   client that asked for one learns at once that it will not get it.
//! - A request's variable overrides the allowlist's of the same name; the last of two
//!   equal names in one request wins (as `env` does).

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use crate::status::{Error, Result};

/// Names that belong to the daemon's service manager (systemd's `sd_notify`, socket
/// activation and watchdog protocols): a child that saw them could speak for the daemon.
const RESERVED_EXACT: &[&[u8]] = &[b"NOTIFY_SOCKET"];
const RESERVED_PREFIXES: &[&[u8]] = &[b"LISTEN_", b"WATCHDOG_"];

/// Whether `name` is a variable no child may get.
pub fn is_reserved(name: &[u8]) -> bool {
    RESERVED_EXACT.contains(&name) || RESERVED_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Checks one requested variable: a name that is not empty and has no `=` or NUL, a
/// value without NUL, and not reserved.
pub fn check_var(index: usize, name: &[u8], value: &[u8]) -> Result<()> {
    let shown = || format!("env[{index}] {:?}", String::from_utf8_lossy(name));
    if name.is_empty() || name.contains(&b'=') {
        return Err(Error::invalid(
            "environment variable name",
            format!("{} (must be non-empty and without '=')", shown()),
        ));
    }
    if name.contains(&0) || value.contains(&0) {
        return Err(Error::invalid(
            "environment variable with a NUL byte",
            shown(),
        ));
    }
    if is_reserved(name) {
        return Err(Error::invalid(
            "environment variable",
            format!(
                "{} belongs to the daemon's service manager and is never passed to a child",
                shown()
            ),
        ));
    }
    Ok(())
}

/// The child's whole environment: the allowlisted variables present in `daemon_env`,
/// then `requested` (already checked), later entries overriding earlier ones.
pub fn build(
    allowlist: &[String],
    daemon_env: impl IntoIterator<Item = (OsString, OsString)>,
    requested: &[(Vec<u8>, Vec<u8>)],
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = daemon_env
        .into_iter()
        .filter(|(name, _)| {
            let bytes = name.as_bytes();
            !is_reserved(bytes) && allowlist.iter().any(|a| a.as_bytes() == bytes)
        })
        .collect();
    for (name, value) in requested {
        let name = OsString::from_vec(name.clone());
        env.retain(|(n, _)| *n != name);
        env.push((name, OsString::from_vec(value.clone())));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_names_are_the_service_managers() {
        let cases: &[(&[u8], bool)] = &[
            (b"NOTIFY_SOCKET", true),
            (b"LISTEN_FDS", true),
            (b"LISTEN_PID", true),
            (b"WATCHDOG_USEC", true),
            (b"PATH", false),
            (b"NOTIFY_SOCKETX", false),
            (b"MY_LISTEN_FDS", false),
        ];
        for (name, reserved) in cases {
            assert_eq!(is_reserved(name), *reserved, "{name:?}");
        }
    }

    #[test]
    fn bad_variables_are_refused_by_name() {
        let cases: &[(&[u8], &[u8], Option<&str>)] = &[
            (b"A", b"1", None),
            (b"A", b"", None),
            (b"", b"1", Some("non-empty")),
            (b"A=B", b"1", Some("\"A=B\"")),
            (b"A\0", b"1", Some("NUL")),
            (b"A", b"x\0y", Some("NUL")),
            (b"LISTEN_FDS", b"3", Some("LISTEN_FDS")),
        ];
        for (name, value, want) in cases {
            match (check_var(0, name, value), want) {
                (Ok(()), None) => {}
                (Err(err), Some(want)) => assert!(err.to_string().contains(want), "{err}"),
                (got, want) => panic!("{name:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn the_environment_is_the_allowlist_then_the_request() {
        let daemon = [("PATH", "/bin"), ("SECRET", "x"), ("HOME", "/root")]
            .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let allow = ["PATH".to_owned(), "HOME".to_owned()];
        let requested = [
            (b"HOME".to_vec(), b"/tmp".to_vec()),
            (b"A".to_vec(), b"1".to_vec()),
        ];
        let env = build(&allow, daemon, &requested);
        let pairs: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string_lossy().into(), v.to_string_lossy().into()))
            .collect();
        let want = [("PATH", "/bin"), ("HOME", "/tmp"), ("A", "1")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()));
        assert_eq!(pairs, want);
    }
}
