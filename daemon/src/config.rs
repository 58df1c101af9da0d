//! The daemon's settings: a TOML file (`--config`), overridden by flags.
//!
//! # Invariants
//! - [`DEFAULT_CONFIG`] (deploy/loopd.toml) parses to exactly [`Config::default`]; a unit
//!   test checks it, so the documented defaults are the real ones.
//! - Unknown keys are errors: a typo never silently falls back to a default.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

/// The example configuration, with every key and its default, commented.
pub const DEFAULT_CONFIG: &str = include_str!("../../deploy/loopd.toml");

/// Everything the daemon can be told.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Socket path; `None`: see [`resolve_socket`].
    pub socket: Option<PathBuf>,
    /// State directory; `None`: see [`resolve_state_dir`].
    pub state_dir: Option<PathBuf>,
    /// tracing's filter.
    pub log_level: String,
    /// The tokio runtime.
    pub runtime: Runtime,
    /// Limits requests must respect.
    pub limits: Limits,
    /// HTTP/2 and tower settings.
    pub server: ServerSettings,
    /// Child processes (ProcessService).
    pub process: ProcessSettings,
    /// Signal handlers (SignalService).
    pub signals: SignalSettings,
    /// TLS connections' defaults (NetService).
    pub tls: TlsSettings,
}

/// What TLS connections trust when a request names no CA.
#[derive(Clone, Debug, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// A PEM file of CA certificates; empty: the system's trust store.
    pub ca_file: String,
}

/// How the daemon runs child processes.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ProcessSettings {
    /// Whether `ProcessSpec.shell` (`/bin/sh -c`) is allowed.
    pub allow_shell: bool,
    /// Variables of the daemon's environment a child gets (unless the request sets them).
    pub env_allowlist: Vec<String>,
    /// Output bytes kept per stream for late readers when the request says 0.
    pub default_retain_bytes: u64,
    /// Most output bytes kept per stream; larger requests are lowered to it.
    pub max_retain_bytes: u64,
    /// Most bytes of one read copied into a ProcessOutput event.
    pub event_output_bytes: usize,
    /// Seconds between SIGTERM and SIGKILL for children at daemon shutdown.
    pub kill_grace_secs: u64,
    /// Most running processes per loop.
    pub max_processes: usize,
    /// Most exited processes a loop remembers (the oldest are forgotten first).
    pub max_exited_kept: usize,
}

/// Which signals the daemon keeps for itself.
#[derive(Clone, Debug, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct SignalSettings {
    /// Shutdown signals (`SIGTERM`, `SIGINT`) handed over to SignalService clients:
    /// the daemon stops listening to them.
    pub handover: Vec<String>,
}

impl Default for ProcessSettings {
    fn default() -> Self {
        ProcessSettings {
            allow_shell: false,
            env_allowlist: ["PATH", "HOME", "LANG", "LC_ALL", "TZ"]
                .map(String::from)
                .to_vec(),
            default_retain_bytes: 1024 * 1024,
            max_retain_bytes: 64 * 1024 * 1024,
            event_output_bytes: 1024,
            kill_grace_secs: 5,
            max_processes: 4096,
            max_exited_kept: 256,
        }
    }
}

/// The tokio runtime of the front door.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Runtime {
    /// 1: current_thread; more: a multi-thread runtime.
    pub worker_threads: usize,
}

/// Limits on what requests may ask for.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest payload, result or value, in bytes.
    pub max_payload_bytes: usize,
    /// Most entries in one batch.
    pub max_batch_entries: usize,
    /// Largest gRPC message, in bytes.
    pub max_message_bytes: usize,
    /// Events per loop ring.
    pub event_ring_capacity: usize,
    /// Most loops not closed.
    pub max_loops: usize,
    /// Most Subscribe streams.
    pub max_subscribers: usize,
    /// How long done handles and futures stay visible, in seconds.
    pub retention_secs: u64,
    /// Most done handles (and futures) kept per loop.
    pub max_retained: usize,
    /// How long an idempotency key is remembered, in seconds.
    pub idempotency_ttl_secs: u64,
    /// Most idempotency keys per loop.
    pub max_idempotency_keys: usize,
    /// Most pending handles one caller (uid) may hold on one loop.
    pub max_pending_handles_per_caller: usize,
    /// Most pending futures one caller (uid) may hold on one loop.
    pub max_pending_futures_per_caller: usize,
    /// Most open servers one caller (uid) may hold on one loop.
    pub max_servers_per_caller: usize,
    /// Most open transports one caller (uid) may hold on one loop, accepted ones included.
    pub max_transports_per_caller: usize,
    /// A transport byte stream's default window, in bytes.
    pub stream_window_bytes: usize,
    /// The largest window a request may ask for, in bytes.
    pub max_stream_window_bytes: usize,
    /// Most bytes of received data one DataReceived event carries.
    pub max_event_data_bytes: usize,
}

/// HTTP/2 and tower limits of the gRPC server.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS.
    pub max_concurrent_streams: u32,
    /// tower concurrency limit per connection (with load shedding).
    pub concurrency_limit_per_connection: usize,
    /// hyper's max_pending_accept_reset_streams.
    pub max_pending_accept_reset_streams: usize,
    /// hyper's max_local_error_reset_streams.
    pub max_local_error_reset_streams: usize,
    /// HTTP/2 SETTINGS_MAX_HEADER_LIST_SIZE.
    pub max_header_list_size: u32,
    /// Seconds between keepalive PINGs; 0: off.
    pub keepalive_interval_secs: u64,
    /// Seconds to wait for a PING's ack.
    pub keepalive_timeout_secs: u64,
    /// Seconds to wait for RPCs after SIGTERM.
    pub shutdown_grace_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            socket: None,
            state_dir: None,
            log_level: "info".into(),
            runtime: Runtime::default(),
            limits: Limits::default(),
            server: ServerSettings::default(),
            process: ProcessSettings::default(),
            signals: SignalSettings::default(),
            tls: TlsSettings::default(),
        }
    }
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime { worker_threads: 1 }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload_bytes: 64 * 1024,
            max_batch_entries: 10_000,
            max_message_bytes: 4 * 1024 * 1024,
            event_ring_capacity: 65_536,
            max_loops: 64,
            max_subscribers: 1024,
            retention_secs: 600,
            max_retained: 100_000,
            idempotency_ttl_secs: 600,
            max_idempotency_keys: 100_000,
            max_pending_handles_per_caller: 1_000_000,
            max_pending_futures_per_caller: 100_000,
            max_servers_per_caller: 64,
            max_transports_per_caller: 1024,
            stream_window_bytes: 4 * 1024 * 1024,
            max_stream_window_bytes: 64 * 1024 * 1024,
            max_event_data_bytes: 1024,
        }
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            max_concurrent_streams: 256,
            concurrency_limit_per_connection: 256,
            max_pending_accept_reset_streams: 20,
            max_local_error_reset_streams: 256,
            max_header_list_size: 16 * 1024,
            keepalive_interval_secs: 30,
            keepalive_timeout_secs: 10,
            shutdown_grace_secs: 3,
        }
    }
}

impl Config {
    /// Parses a TOML document. Fails on syntax errors, unknown keys and bad values.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let config: Config = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses `path`.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("parsing config file {}", path.display()))
    }

    /// Rejects settings the daemon cannot run with.
    pub fn validate(&self) -> anyhow::Result<()> {
        let limits = &self.limits;
        if limits.event_ring_capacity == 0 {
            bail!("limits.event_ring_capacity must be at least 1");
        }
        if limits.max_loops == 0 {
            bail!("limits.max_loops must be at least 1 (the default loop)");
        }
        if limits.max_message_bytes < 1024 {
            bail!(
                "limits.max_message_bytes {} is below 1024",
                limits.max_message_bytes
            );
        }
        if self.runtime.worker_threads == 0 {
            bail!("runtime.worker_threads must be at least 1");
        }
        self.validate_process()
    }

    fn validate_process(&self) -> anyhow::Result<()> {
        let process = &self.process;
        for name in &process.env_allowlist {
            if crate::process::env::is_reserved(name.as_bytes()) {
                bail!("process.env_allowlist names {name:?}, which belongs to the service manager");
            }
        }
        if process.default_retain_bytes > process.max_retain_bytes {
            bail!(
                "process.default_retain_bytes {} is above process.max_retain_bytes {}",
                process.default_retain_bytes,
                process.max_retain_bytes
            );
        }
        for name in &self.signals.handover {
            if !matches!(name.as_str(), "SIGTERM" | "SIGINT") {
                bail!("signals.handover: {name:?} is not SIGTERM or SIGINT");
            }
        }
        Ok(())
    }
}

/// The socket path: the configured one, else `$XDG_RUNTIME_DIR/loopd/loopd.sock`, else
/// `/run/loopd/loopd.sock` for root. Fails when none applies.
pub fn resolve_socket(configured: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = configured {
        return Ok(path.to_owned());
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("loopd/loopd.sock"));
    }
    if is_root() {
        return Ok(PathBuf::from("/run/loopd/loopd.sock"));
    }
    bail!(
        "no socket path: pass --socket, set LOOPD_SOCKET or XDG_RUNTIME_DIR, or run as root \
         (for /run/loopd/loopd.sock)"
    )
}

/// The state directory: the configured one, else `$XDG_STATE_HOME/loopd`, else
/// `$HOME/.local/state/loopd`, else `/var/lib/loopd` for root.
pub fn resolve_state_dir(configured: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = configured {
        return Ok(path.to_owned());
    }
    let env = |name| std::env::var_os(name).filter(|d| !d.is_empty());
    if let Some(dir) = env("XDG_STATE_HOME") {
        return Ok(PathBuf::from(dir).join("loopd"));
    }
    if is_root() {
        return Ok(PathBuf::from("/var/lib/loopd"));
    }
    if let Some(home) = env("HOME") {
        return Ok(PathBuf::from(home).join(".local/state/loopd"));
    }
    bail!("no state directory: pass --state-dir, or set XDG_STATE_HOME or HOME")
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_default_config_is_the_default() {
        assert_eq!(Config::parse(DEFAULT_CONFIG).unwrap(), Config::default());
    }

    #[test]
    fn bad_configs_are_rejected_with_the_key() {
        for (text, needle) in [
            ("nope = 1", "nope"),
            ("[limits]\nevent_ring_capacity = 0", "event_ring_capacity"),
            ("[runtime]\nworker_threads = 0", "worker_threads"),
            ("[limits]\nmax_payload_bytes = -1", "max_payload_bytes"),
            (
                "[process]\nenv_allowlist = [\"NOTIFY_SOCKET\"]",
                "NOTIFY_SOCKET",
            ),
            (
                "[process]\ndefault_retain_bytes = 9999999999",
                "default_retain_bytes",
            ),
            ("[signals]\nhandover = [\"SIGUSR1\"]", "SIGUSR1"),
        ] {
            let err = format!("{:#}", Config::parse(text).unwrap_err());
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn a_partial_file_keeps_the_other_defaults() {
        let config = Config::parse("[limits]\nevent_ring_capacity = 8").unwrap();
        assert_eq!(config.limits.event_ring_capacity, 8);
        assert_eq!(config.limits.max_loops, Limits::default().max_loops);
    }
}
