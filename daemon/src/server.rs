//! The gRPC front door: tonic on a Unix socket, every limit set on purpose, health and
//! reflection next to loopd's services, and a graceful shutdown that cannot hang.
//!
//! # Shutdown
//! SIGTERM or SIGINT flips the shutdown watch: new requests get UNAVAILABLE, open
//! Subscribe and WaitFuture calls end with UNAVAILABLE (tonic's graceful shutdown
//! would otherwise wait forever for server streams), health turns NOT_SERVING, the
//! server drains for at most `shutdown_grace_secs`, every child process group gets
//! SIGTERM (SIGKILL after `process.kill_grace_secs`), then every loop stops and closes.
//! A signal listed in `signals.handover` does not shut down: SignalService clients own it.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use loopd_proto::NetServiceServer;
use loopd_proto::{
    DaemonServiceServer, EventServiceServer, FutureServiceServer, LoopServiceServer,
    ProcessServiceServer, SchedulerServiceServer, SignalServiceServer,
};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::Server;
use tonic_health::ServingStatus;

use crate::config::{Config, ServerSettings};
use crate::loops::Registry;
use crate::service::{Api, Daemon};
use crate::socket::Bound;

/// Sets a service's decoding and encoding limits (each generated server has its own).
macro_rules! limit {
    ($server:expr, $max:expr) => {
        $server
            .max_decoding_message_size($max)
            .max_encoding_message_size($max)
    };
}

/// Serves until SIGTERM/SIGINT, then shuts down within the grace period.
pub async fn serve(
    config: Config,
    bound: Bound,
    state_dir: std::path::PathBuf,
) -> anyhow::Result<()> {
    crate::process::configure(config.process.clone(), config.signals.clone());
    crate::net::trust::configure(&config.tls)?;
    let registry = Registry::new(config.limits.clone())
        .await
        .context("starting the default loop")?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let daemon = Arc::new(Daemon {
        registry,
        shutdown: shutdown_rx.clone(),
        started: Instant::now(),
        started_at: SystemTime::now(),
        socket_path: bound.path.clone(),
        state_dir,
    });
    let api = Api::new(daemon.clone());
    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, ServingStatus::Serving).await;
    let reflection_v1 = reflection()?.build_v1()?;
    let reflection_v1alpha = reflection()?.build_v1alpha()?;

    let max = config.limits.max_message_bytes;
    let router = builder(&config.server)
        .layer(tower::util::MapResponseLayer::new(
            tonic_errors_in_loopd_codes,
        ))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(limit!(LoopServiceServer::new(api.clone()), max))
        .add_service(limit!(SchedulerServiceServer::new(api.clone()), max))
        .add_service(limit!(FutureServiceServer::new(api.clone()), max))
        .add_service(limit!(EventServiceServer::new(api.clone()), max))
        .add_service(limit!(NetServiceServer::new(api.clone()), max))
        .add_service(limit!(ProcessServiceServer::new(api.clone()), max))
        .add_service(limit!(SignalServiceServer::new(api.clone()), max))
        .add_service(limit!(DaemonServiceServer::new(api), max));

    let listener = tokio::net::UnixListener::from_std(bound.listener.try_clone()?)
        .context("registering the socket with tokio")?;
    let incoming = UnixListenerStream::new(listener);
    let mut server_shutdown = shutdown_rx.clone();
    let server = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async move {
        let _ = server_shutdown.wait_for(|down| *down).await;
    }));
    tracing::info!(socket = %bound.path.display(), pid = std::process::id(), "loopd serving");

    wait_for_signal(&config.signals.handover).await?;
    tracing::info!("shutting down");
    let grace = Duration::from_secs(config.server.shutdown_grace_secs);
    set_health(&health, ServingStatus::NotServing).await;
    let _ = shutdown_tx.send(true);
    daemon.registry.begin_shutdown();
    match tokio::time::timeout(grace, server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(err))) => tracing::warn!("server ended with an error: {err}"),
        Ok(Err(err)) => tracing::warn!("server task failed: {err}"),
        Err(_) => tracing::warn!("open calls did not end within {grace:?}; leaving anyway"),
    }
    let kill_grace = Duration::from_secs(config.process.kill_grace_secs);
    crate::process::shutdown(&daemon.registry, kill_grace).await;
    daemon.registry.shutdown(Duration::from_secs(1)).await;
    drop(bound);
    tracing::info!("stopped");
    Ok(())
}

/// The tonic server with every limit chosen, not defaulted.
fn builder(s: &ServerSettings) -> Server {
    let keepalive =
        (s.keepalive_interval_secs > 0).then(|| Duration::from_secs(s.keepalive_interval_secs));
    Server::builder()
        // HTTP/2 streams per connection: tonic's default is unlimited.
        .max_concurrent_streams(s.max_concurrent_streams)
        // Requests in flight per connection in the tower stack; with load shedding,
        // requests past it are refused at once (UNAVAILABLE) instead of queueing.
        .concurrency_limit_per_connection(s.concurrency_limit_per_connection)
        .load_shed(true)
        // Rapid-reset protection (CVE-2023-44487): client-reset streams not yet accepted.
        .http2_max_pending_accept_reset_streams(Some(s.max_pending_accept_reset_streams))
        // Streams the server resets because of client errors, before GOAWAY.
        .http2_max_local_error_reset_streams(Some(s.max_local_error_reset_streams))
        .http2_max_header_list_size(s.max_header_list_size)
        // Detects dead peers on idle connections (a local socket rarely needs it, but a
        // client that hangs holding streams should not hold them forever).
        .http2_keepalive_interval(keepalive)
        .http2_keepalive_timeout(Some(Duration::from_secs(s.keepalive_timeout_secs)))
        // Flow-control windows of 1 MiB (hyper's server defaults, spelled out): the
        // connection window caps what one client can make the daemon buffer inbound to
        // 1 MiB in total, whatever its number of streams. Outbound (events) is paced by
        // the client's windows.
        .initial_stream_window_size(Some(1024 * 1024))
        .initial_connection_window_size(Some(1024 * 1024))
        // Fixed windows: BDP probing adds PINGs and would grow them past this bound.
        .http2_adaptive_window(Some(false))
        // Frames stay at HTTP/2's minimum maximum (16 KiB); larger frames buy nothing
        // on a local socket.
        .max_frame_size(Some(16_384))
        // No server-wide request timeout: Subscribe and WaitFuture are long on purpose;
        // callers bound their own calls with deadlines (grpc-timeout). No maximum
        // connection age either: local clients keep one connection for their life.
        // gRPC only: no HTTP/1.1 on this socket.
        .accept_http1(false)
}

/// tonic refuses malformed requests itself (undecodable bytes, a missing unary message,
/// a message above the decoding limit) with codes loopd's protos do not promise; gives
/// those statuses loopd's codes (`crate::status::tonic_code`). tonic sends them in the
/// response headers (trailers-only); errors of request streams read later are mapped
/// where they are read (`crate::status::inbound`).
fn tonic_errors_in_loopd_codes(
    mut response: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    let headers = response.headers_mut();
    let Some(status) = tonic::Status::from_header_map(headers) else {
        return response;
    };
    if let Some(code) = crate::status::tonic_code(status.code(), status.message()) {
        headers.insert("grpc-status", http::HeaderValue::from(code as i32));
    }
    response
}

fn reflection() -> anyhow::Result<tonic_reflection::server::Builder<'static>> {
    Ok(tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(loopd_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET))
}

async fn set_health(health: &tonic_health::server::HealthReporter, status: ServingStatus) {
    use tonic::server::NamedService;
    let names = [
        "",
        <LoopServiceServer<Api> as NamedService>::NAME,
        <SchedulerServiceServer<Api> as NamedService>::NAME,
        <FutureServiceServer<Api> as NamedService>::NAME,
        <EventServiceServer<Api> as NamedService>::NAME,
        <ProcessServiceServer<Api> as NamedService>::NAME,
        <SignalServiceServer<Api> as NamedService>::NAME,
        <DaemonServiceServer<Api> as NamedService>::NAME,
        <NetServiceServer<Api> as NamedService>::NAME,
    ];
    for name in names {
        health.set_service_status(name, status).await;
    }
}

/// Receives from a signal stream; never, for a signal the daemon does not listen to.
async fn recv(stream: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match stream {
        Some(stream) => stream.recv().await,
        None => std::future::pending().await,
    }
}

/// Waits for SIGTERM or SIGINT, except those the config hands over to SignalService.
async fn wait_for_signal(handover: &[String]) -> anyhow::Result<()> {
    let listen = |name: &str, kind: SignalKind| -> anyhow::Result<_> {
        if handover.iter().any(|h| h == name) {
            return Ok(None);
        }
        let stream = signal(kind).with_context(|| format!("installing the {name} handler"))?;
        Ok(Some(stream))
    };
    let mut term = listen("SIGTERM", SignalKind::terminate())?;
    let mut int = listen("SIGINT", SignalKind::interrupt())?;
    tokio::select! {
        _ = recv(&mut term) => tracing::info!("SIGTERM received"),
        _ = recv(&mut int) => tracing::info!("SIGINT received"),
    }
    Ok(())
}
