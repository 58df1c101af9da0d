//! [`Client`]: one connection to a daemon, and how it is made.
//!
//! # Invariants
//! - A `Client` is cheap to clone; clones share one HTTP/2 connection, and calls made
//!   through them run concurrently.
//! - `connect` connects eagerly: a daemon that is not there is reported by `connect`,
//!   not by the first call.
//! - The RPC methods live next to their types, one file per service (`loops.rs`,
//!   `scheduler.rs`, `futures.rs`, `events.rs`, `daemon.rs`), as `impl Client` blocks.

use std::path::PathBuf;

use hyper_util::rt::TokioIo;
use loopd_proto::pb;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::error::{Error, Result};
use crate::target::Target;

/// A connection to a loopd daemon, with one async method per RPC.
///
/// ```no_run
/// # async fn demo() -> loopd_client::Result<()> {
/// use std::time::Duration;
/// use loopd_client::{Action, Client};
///
/// let client = Client::connect("/run/loopd/loopd.sock").await?;
/// let timer = client
///     .call_later("", Duration::from_millis(250), Action::emit("hello", b"payload"))
///     .await?;
/// println!("timer {} is due at loop time {:?}", timer.handle_id, timer.when);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) loops: pb::loop_service_client::LoopServiceClient<Channel>,
    pub(crate) scheduler: pb::scheduler_service_client::SchedulerServiceClient<Channel>,
    pub(crate) futures: pb::future_service_client::FutureServiceClient<Channel>,
    pub(crate) events: pb::event_service_client::EventServiceClient<Channel>,
    pub(crate) daemon: pb::daemon_service_client::DaemonServiceClient<Channel>,
    pub(crate) net: pb::net_service_client::NetServiceClient<Channel>,
    pub(crate) process: pb::process_service_client::ProcessServiceClient<Channel>,
    pub(crate) signals: pb::signal_service_client::SignalServiceClient<Channel>,
}

impl Client {
    /// Connects to the daemon at `target`: a socket path or a `unix:` URI (see
    /// [`Target`]).
    ///
    /// Fails with [`Error::InvalidTarget`] or [`Error::UnsupportedTarget`] for a target
    /// that cannot be parsed or reached (e.g. `https://` until TLS exists), and with
    /// [`Error::Connect`] if nothing answers there.
    pub async fn connect(target: &str) -> Result<Client> {
        Client::connect_to(target.parse()?).await
    }

    /// Connects to the daemon at the default socket ([`crate::default_socket_path`]).
    ///
    /// Fails with [`Error::Connect`] if nothing answers there.
    pub async fn connect_default() -> Result<Client> {
        Client::connect_to(Target::from_env()).await
    }

    /// Connects to a parsed [`Target`].
    ///
    /// Fails with [`Error::Connect`] if nothing answers there.
    pub async fn connect_to(target: Target) -> Result<Client> {
        let channel = match &target {
            Target::Unix(path) => unix_channel(path.clone()).await,
        };
        let channel = channel.map_err(|source| Error::Connect {
            target: target.to_string(),
            source,
        })?;
        Ok(Client::from_channel(channel))
    }

    /// Wraps a channel made by the caller (e.g. with its own timeouts or TLS).
    ///
    /// Every service accepts responses of any size: the daemon bounds what it sends by
    /// its own `limits.max_message_bytes`, which an operator may raise above tonic's
    /// default 4 MiB, and a client that trusts its daemon takes what it is sent.
    pub fn from_channel(channel: Channel) -> Client {
        use pb::daemon_service_client::DaemonServiceClient;
        use pb::event_service_client::EventServiceClient;
        use pb::future_service_client::FutureServiceClient;
        use pb::loop_service_client::LoopServiceClient;
        use pb::net_service_client::NetServiceClient;
        use pb::process_service_client::ProcessServiceClient;
        use pb::scheduler_service_client::SchedulerServiceClient;
        use pb::signal_service_client::SignalServiceClient;
        const ANY: usize = usize::MAX;
        let c = || channel.clone();
        Client {
            loops: LoopServiceClient::new(c()).max_decoding_message_size(ANY),
            scheduler: SchedulerServiceClient::new(c()).max_decoding_message_size(ANY),
            futures: FutureServiceClient::new(c()).max_decoding_message_size(ANY),
            events: EventServiceClient::new(c()).max_decoding_message_size(ANY),
            daemon: DaemonServiceClient::new(c()).max_decoding_message_size(ANY),
            net: NetServiceClient::new(c()).max_decoding_message_size(ANY),
            process: ProcessServiceClient::new(c()).max_decoding_message_size(ANY),
            signals: SignalServiceClient::new(c()).max_decoding_message_size(ANY),
        }
    }
}

/// An HTTP/2 channel over the Unix socket at `path`, for callers that want the raw
/// generated clients (tests, load tools). The URI is a placeholder: the connector ignores
/// it, and `localhost` is what the daemon sees as `:authority`.
pub async fn unix_channel(path: impl Into<PathBuf>) -> Result<Channel, tonic::transport::Error> {
    let path = path.into();
    // HTTP/2 receive windows of 8 MiB per stream (16 MiB per connection): with hyper's
    // default a lossless byte stream (NetService.ReadTransport) crawled at ~50 MB/s,
    // throttled by WINDOW_UPDATE round trips; with these it ran at ~600 MB/s.
    let endpoint = Endpoint::from_static("http://localhost")
        .initial_stream_window_size(Some(8 << 20))
        .initial_connection_window_size(Some(16 << 20));
    endpoint
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
}
