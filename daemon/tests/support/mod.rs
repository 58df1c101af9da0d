//! Shared test helpers: a real `loopd` on a temp dir, clients over its Unix socket.
//!
//! Every wait here is bounded; a daemon is killed by pid when its [`Daemon`] drops.
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use loopd_proto::pb;
use tonic::transport::Channel;

/// How long any single wait in the tests may take.
pub const WAIT: Duration = Duration::from_secs(5);

/// A daemon child on a temp dir.
pub struct Daemon {
    child: Child,
    /// Holds the socket, state and config.
    pub dir: tempfile::TempDir,
    /// The socket path.
    pub socket: PathBuf,
}

impl Daemon {
    /// Starts a daemon with the default config.
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// Starts a daemon with `config` (TOML) and waits until its socket accepts.
    pub fn start_with(config: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("run/loopd.sock");
        let child = spawn(dir.path(), &socket, config, Stdio::inherit());
        let daemon = Daemon { child, dir, socket };
        daemon.wait_for_socket();
        daemon
    }

    /// Kills the daemon with SIGKILL (leaving its socket file behind, as a crash would)
    /// and starts a new one on the same directory and socket.
    pub fn crash_and_restart(mut self) -> Self {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let config =
            std::fs::read_to_string(self.dir.path().join("loopd.toml")).unwrap_or_default();
        let child = spawn(self.dir.path(), &self.socket, &config, Stdio::inherit());
        let old = std::mem::replace(&mut self.child, child);
        drop(old);
        self.wait_for_socket();
        self
    }

    fn wait_for_socket(&self) {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "loopd did not listen on {} within {WAIT:?}",
            self.socket.display()
        );
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A channel to the daemon.
    pub async fn channel(&self) -> Channel {
        connect(&self.socket).await
    }

    /// Sends SIGTERM to the daemon (by pid).
    pub fn sigterm(&self) {
        let pid = libc::pid_t::try_from(self.pid()).expect("pid fits");
        // SAFETY: kill has no memory effects; the pid is our own child, not yet reaped.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    }

    /// Waits at most `timeout` for the daemon to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// Starts a second daemon on this daemon's socket and returns its exit status and
    /// stderr (it must exit by itself within [`WAIT`]).
    pub fn start_second(&self) -> (Option<ExitStatus>, String) {
        let other = tempfile::tempdir().expect("temp dir");
        let mut child = spawn(other.path(), &self.socket, "", Stdio::piped());
        let deadline = Instant::now() + WAIT;
        let mut status = None;
        while Instant::now() < deadline {
            if let Some(s) = child.try_wait().expect("try_wait") {
                status = Some(s);
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if status.is_none() {
            let _ = child.kill();
        }
        let _ = child.wait(); // reaps it (or returns the status already read)
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        (status, stderr)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn spawn(dir: &Path, socket: &Path, config: &str, stderr: Stdio) -> Child {
    let config_path = dir.join("loopd.toml");
    std::fs::write(&config_path, config).expect("write config");
    Command::new(env!("CARGO_BIN_EXE_loopd"))
        .arg("--config")
        .arg(&config_path)
        .arg("--socket")
        .arg(socket)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .env("XDG_RUNTIME_DIR", dir.join("xdg-run"))
        .env("XDG_STATE_HOME", dir.join("xdg-state"))
        .env("RUST_LOG", "warn")
        .env_remove("LOOPD_SOCKET")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn loopd")
}

/// Starts `loopd` with no flags and no config, only `env`; the caller waits and kills.
pub fn spawn_bare(env: &[(&str, &Path)]) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_loopd"));
    command
        .env_remove("LOOPD_SOCKET")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("XDG_STATE_HOME")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    command.spawn().expect("spawn loopd")
}

/// Waits until `path` accepts a connection, or panics after [`WAIT`].
pub fn wait_for_socket(path: &Path) {
    let deadline = Instant::now() + WAIT;
    while std::os::unix::net::UnixStream::connect(path).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listens on {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Connects to a daemon's Unix socket.
pub async fn connect(path: &Path) -> Channel {
    loopd_client::unix_channel(path)
        .await
        .expect("connect to loopd")
}

/// The port of an inet address; panics on any other.
pub fn port_of(address: Option<&pb::NetAddress>) -> u16 {
    match address.and_then(|a| a.kind.as_ref()) {
        Some(pb::net_address::Kind::Inet(inet)) => inet.port as u16,
        other => panic!("not an inet address: {other:?}"),
    }
}

/// A server on 127.0.0.1 with a free port running `protocol`, with a stream window of
/// `window` bytes (0: the daemon's default); returns its id and port.
pub async fn tcp_server(
    channel: &Channel,
    protocol: pb::ServerProtocol,
    window: u64,
) -> (u64, u16) {
    let server = loopd_proto::NetServiceClient::new(channel.clone())
        .create_server(pb::CreateServerRequest {
            hosts: vec!["127.0.0.1".into()],
            protocol: protocol as i32,
            stream_window_bytes: window,
            ..Default::default()
        })
        .await
        .expect("CreateServer")
        .into_inner()
        .server
        .expect("server");
    let port = port_of(server.addresses.first());
    assert_ne!(port, 0, "a free port was bound");
    (server.server_id, port)
}

/// An EmitEvent action with `tag`.
pub fn emit(tag: &str) -> Option<pb::Action> {
    Some(pb::Action {
        kind: Some(pb::action::Kind::EmitEvent(pb::EmitEventAction {
            tag: tag.into(),
            payload: Vec::new(),
        })),
    })
}

/// Reads events from `stream` until `n` pass `keep`, or panics after [`WAIT`].
pub async fn collect(
    stream: &mut tonic::Streaming<pb::EventBatch>,
    n: usize,
    keep: impl Fn(&pb::Event) -> bool,
) -> Vec<pb::Event> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while out.len() < n {
        let batch = tokio::time::timeout_at(deadline, stream.message())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} events within {WAIT:?}", out.len()))
            .expect("stream error")
            .expect("stream ended early");
        out.extend(batch.events.into_iter().filter(|e| keep(e)));
    }
    out
}

/// The TimerFired of an event, if it is one.
pub fn fired(event: &pb::Event) -> Option<&pb::TimerFired> {
    match &event.kind {
        Some(pb::event::Kind::TimerFired(f)) => Some(f),
        _ => None,
    }
}

/// Subscribes to every event of `loop_name` from the next one on.
pub async fn subscribe(channel: &Channel, loop_name: &str) -> tonic::Streaming<pb::EventBatch> {
    subscribe_since(channel, loop_name, 0).await
}

/// Subscribes to `loop_name` from `since_seq`.
pub async fn subscribe_since(
    channel: &Channel,
    loop_name: &str,
    since_seq: u64,
) -> tonic::Streaming<pb::EventBatch> {
    loopd_proto::EventServiceClient::new(channel.clone())
        .subscribe(pb::SubscribeRequest {
            r#loop: loop_name.into(),
            since_seq,
            ..Default::default()
        })
        .await
        .expect("subscribe")
        .into_inner()
}

/// Stops and then closes loop `name` (a closed loop for tests of what comes after).
pub async fn stop_and_close(loops: &mut loopd_proto::LoopServiceClient<Channel>, name: &str) {
    let stop = pb::StopLoopRequest {
        r#loop: name.into(),
    };
    loops.stop_loop(stop).await.expect("StopLoop");
    let close = pb::CloseLoopRequest {
        r#loop: name.into(),
    };
    loops.close_loop(close).await.expect("CloseLoop");
}
