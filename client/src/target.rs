//! Where the daemon listens: [`Target`], and the default socket path.
//!
//! # Invariants
//! - A target string is a socket path (`/run/loopd/loopd.sock`, `./loopd.sock`), or a
//!   `unix:` URI (`unix:PATH`, `unix:///ABSOLUTE/PATH`). Anything with another scheme is
//!   rejected with a message saying so; `https://` will be accepted once the daemon
//!   speaks TLS.
//! - [`default_socket_path`] resolves exactly as the daemon does: `LOOPD_SOCKET`, else
//!   `$XDG_RUNTIME_DIR/loopd/loopd.sock`, else `/run/loopd/loopd.sock`. Empty variables
//!   count as unset.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::Error;

/// The environment variable naming the daemon's socket.
pub const SOCKET_ENV: &str = "LOOPD_SOCKET";

/// The system-wide socket path, used when neither `LOOPD_SOCKET` nor
/// `XDG_RUNTIME_DIR` is set.
pub const SYSTEM_SOCKET_PATH: &str = "/run/loopd/loopd.sock";

/// Where to reach a daemon.
///
/// ```
/// use loopd_client::Target;
/// let target: Target = "unix:/tmp/loopd.sock".parse().unwrap();
/// assert_eq!(target, Target::Unix("/tmp/loopd.sock".into()));
/// assert!("https://loopd.example:7443".parse::<Target>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Target {
    /// A Unix domain socket at this path.
    Unix(PathBuf),
}

impl Target {
    /// The default target: the Unix socket of [`default_socket_path`].
    pub fn from_env() -> Target {
        Target::Unix(default_socket_path())
    }
}

impl FromStr for Target {
    type Err = Error;

    /// Parses a socket path or a `unix:` URI.
    ///
    /// Fails with [`Error::InvalidTarget`] for an empty string or an empty path, and
    /// with [`Error::UnsupportedTarget`] for `https://`, `http://` and other schemes.
    fn from_str(s: &str) -> Result<Target, Error> {
        let invalid = |reason| Error::InvalidTarget {
            target: s.to_owned(),
            reason,
        };
        let unsupported = |reason| Error::UnsupportedTarget {
            target: s.to_owned(),
            reason,
        };
        if let Some(rest) = s.strip_prefix("unix:") {
            let path = unix_uri_path(rest).ok_or_else(|| {
                invalid("a unix: URI with an authority must look like unix:///absolute/path")
            })?;
            return non_empty_path(path).ok_or_else(|| invalid("the socket path is empty"));
        }
        if s.starts_with("https://") {
            return Err(unsupported(
                "TLS is not supported yet; use a Unix socket path",
            ));
        }
        if s.starts_with("http://") {
            return Err(unsupported(
                "plain TCP is not supported; use a Unix socket path",
            ));
        }
        if s.contains("://") {
            return Err(unsupported(
                "unknown scheme; use a Unix socket path or unix:PATH",
            ));
        }
        non_empty_path(s).ok_or_else(|| invalid("the socket path is empty"))
    }
}

/// The path part of a `unix:` URI: `unix:PATH` or `unix://` + absolute path (an empty
/// authority). None if an authority other than the empty one is given.
fn unix_uri_path(rest: &str) -> Option<&str> {
    match rest.strip_prefix("//") {
        Some(path) if path.starts_with('/') => Some(path),
        Some(_) => None,
        None => Some(rest),
    }
}

fn non_empty_path(path: &str) -> Option<Target> {
    (!path.is_empty()).then(|| Target::Unix(PathBuf::from(path)))
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// The daemon's socket path when none is given on the command line: `LOOPD_SOCKET`,
/// else `$XDG_RUNTIME_DIR/loopd/loopd.sock`, else [`SYSTEM_SOCKET_PATH`].
///
/// The daemon and `loopctl` both resolve their default with this function.
pub fn default_socket_path() -> PathBuf {
    socket_path_from(None, |name| std::env::var_os(name))
}

/// Resolves the socket path: `explicit` (e.g. `--socket`) if given, else as
/// [`default_socket_path`], reading variables through `var` (for tests).
pub fn socket_path_from(
    explicit: Option<&Path>,
    var: impl Fn(&str) -> Option<OsString>,
) -> PathBuf {
    let var = |name| var(name).filter(|value| !value.is_empty());
    if let Some(path) = explicit {
        return path.to_owned();
    }
    if let Some(path) = var(SOCKET_ENV) {
        return PathBuf::from(path);
    }
    match var("XDG_RUNTIME_DIR") {
        Some(dir) => Path::new(&dir).join("loopd").join("loopd.sock"),
        None => PathBuf::from(SYSTEM_SOCKET_PATH),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix(path: &str) -> Result<Target, String> {
        Ok(Target::Unix(PathBuf::from(path)))
    }

    #[test]
    fn parse_targets() {
        let cases: &[(&str, Result<Target, String>)] = &[
            ("/run/loopd/loopd.sock", unix("/run/loopd/loopd.sock")),
            ("loopd.sock", unix("loopd.sock")),
            ("./a b/loopd.sock", unix("./a b/loopd.sock")),
            ("unix:/tmp/l.sock", unix("/tmp/l.sock")),
            ("unix:rel/l.sock", unix("rel/l.sock")),
            ("unix:///tmp/l.sock", unix("/tmp/l.sock")),
            ("", Err(r#"invalid target "": the socket path is empty"#.into())),
            ("unix:", Err(r#"invalid target "unix:": the socket path is empty"#.into())),
            (
                "unix://host/tmp/l.sock",
                Err(r#"invalid target "unix://host/tmp/l.sock": a unix: URI with an authority must look like unix:///absolute/path"#.into()),
            ),
            (
                "https://loopd.example:7443",
                Err(r#"unsupported target "https://loopd.example:7443": TLS is not supported yet; use a Unix socket path"#.into()),
            ),
            (
                "http://127.0.0.1:7443",
                Err(r#"unsupported target "http://127.0.0.1:7443": plain TCP is not supported; use a Unix socket path"#.into()),
            ),
            (
                "vsock://3:7443",
                Err(r#"unsupported target "vsock://3:7443": unknown scheme; use a Unix socket path or unix:PATH"#.into()),
            ),
        ];
        for (input, want) in cases {
            let got = input.parse::<Target>().map_err(|e| e.to_string());
            assert_eq!(&got, want, "parsing {input:?}");
        }
    }

    #[test]
    fn display_round_trips() {
        for input in ["/tmp/x.sock", "rel/x.sock"] {
            let target: Target = input.parse().unwrap();
            assert_eq!(target.to_string().parse::<Target>().unwrap(), target);
        }
    }

    #[test]
    fn socket_path_resolution_order() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| OsString::from(*v))
            }
        };
        const BOTH: &[(&str, &str)] = &[
            ("LOOPD_SOCKET", "/env.sock"),
            ("XDG_RUNTIME_DIR", "/run/user/7"),
        ];
        type Vars = &'static [(&'static str, &'static str)];
        let cases: [(Option<&Path>, Vars, &str); 6] = [
            (Some(Path::new("/flag.sock")), BOTH, "/flag.sock"),
            (None, BOTH, "/env.sock"),
            (
                None,
                &[("XDG_RUNTIME_DIR", "/run/user/7")],
                "/run/user/7/loopd/loopd.sock",
            ),
            (None, &[], "/run/loopd/loopd.sock"),
            (
                None,
                &[("LOOPD_SOCKET", ""), ("XDG_RUNTIME_DIR", "")],
                "/run/loopd/loopd.sock",
            ),
            (
                None,
                &[("LOOPD_SOCKET", ""), ("XDG_RUNTIME_DIR", "/x")],
                "/x/loopd/loopd.sock",
            ),
        ];
        for (explicit, pairs, want) in cases {
            assert_eq!(socket_path_from(explicit, env(pairs)), PathBuf::from(want));
        }
    }
}
