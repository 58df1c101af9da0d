//! `loopd`: hosts named asyncio-style event loops and serves them over gRPC on a Unix
//! socket.
//!
//! # Anatomy
//! - `config`: the TOML settings and their defaults (deploy/loopd.toml, embedded).
//! - `socket`: the socket's directory, lock and stale-socket check.
//! - `server`: tonic with every limit set, health, reflection, graceful shutdown.
//! - `loops`: the loop policy: one thread per named loop, reached by jobs.
//! - `local`: what a loop thread keeps: handles, futures, idempotency keys.
//! - `events`: each loop's event ring and its subscribers.
//! - `process`: each loop's child processes and signal handlers, on its thread.
//! - `service`: the gRPC services, thin: validate, hand off, convert.
//! - `status`: the one error type and its gRPC codes.
//!
//! # Limitations
//! - Unix socket only (no TCP/TLS yet). The caller's uid (from the socket's peer
//!   credentials) is recorded on every loop, handle and future and drives the quotas;
//!   access control (roles) is not enforced yet.
//! - Durable timers and transports are not served yet; no admin HTTP
//!   port (Prometheus, dashboard) yet.

mod bytestream;
mod config;
mod events;
mod local;
mod loops;
mod net;
mod process;
mod server;
mod service;
mod socket;
mod status;

#[cfg(test)]
use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use config::Config;

/// mimalloc, not glibc's malloc: every scheduled callback is a small allocation freed on
/// another schedule, the pattern where glibc's consolidation costs most (see bench/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// loopd: asyncio event loops as a service.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// TOML configuration file (see `--print-default-config`).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Unix socket to listen on.
    #[arg(long, env = "LOOPD_SOCKET", value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Directory for durable state.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Log filter (RUST_LOG wins when set), e.g. `info` or `loopd=debug`.
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
    /// Events kept per loop ring.
    #[arg(long, value_name = "N")]
    event_ring_capacity: Option<usize>,
    /// Tokio worker threads of the front door (1: current_thread).
    #[arg(long, value_name = "N")]
    worker_threads: Option<usize>,
    /// Prints the default configuration, every key documented, and exits.
    #[arg(long)]
    print_default_config: bool,
}

impl Args {
    /// The configuration: the file's (or the defaults), then the flags on top.
    fn config(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        if let Some(socket) = &self.socket {
            config.socket = Some(socket.clone());
        }
        if let Some(dir) = &self.state_dir {
            config.state_dir = Some(dir.clone());
        }
        if let Some(level) = &self.log_level {
            config.log_level = level.clone();
        }
        if let Some(n) = self.event_ring_capacity {
            config.limits.event_ring_capacity = n;
        }
        if let Some(n) = self.worker_threads {
            config.runtime.worker_threads = n;
        }
        config.validate()?;
        Ok(config)
    }
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: under systemd or in a log file they are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}

fn runtime(workers: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = if workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    builder
        .enable_all()
        .build()
        .context("building the tokio runtime")
}

fn run(args: Args) -> anyhow::Result<()> {
    let config = args.config()?;
    init_logging(&config.log_level);
    let socket_path = config::resolve_socket(config.socket.as_deref())?;
    let state_dir = config::resolve_state_dir(config.state_dir.as_deref())?;
    socket::private_dir(&state_dir)?;
    let bound = socket::bind(&socket_path)?;
    runtime(config.runtime.worker_threads)?.block_on(server::serve(config, bound, state_dir))
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.print_default_config {
        print!("{}", config::DEFAULT_CONFIG);
        return ExitCode::SUCCESS;
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("loopd: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("loopd.toml");
        let text = "socket = \"/from/file.sock\"\nlog_level = \"debug\"\n[limits]\nevent_ring_capacity = 16\n";
        std::fs::write(&file, text).unwrap();
        let config_arg = file.to_str().unwrap();
        let args = Args::parse_from([
            "loopd",
            "--config",
            config_arg,
            "--event-ring-capacity",
            "32",
        ]);
        let config = args.config().unwrap();
        assert_eq!(config.socket.as_deref(), Some(Path::new("/from/file.sock")));
        assert_eq!(config.log_level, "debug");
        assert_eq!(config.limits.event_ring_capacity, 32, "the flag wins");
        let args = Args::parse_from(["loopd", "--config", config_arg, "--socket", "/flag.sock"]);
        assert_eq!(
            args.config().unwrap().socket.as_deref(),
            Some(Path::new("/flag.sock"))
        );
        let bad = Args::parse_from(["loopd", "--worker-threads", "0"]);
        assert!(bad.config().is_err());
    }
}
