//! A typed async client for loopd, the daemon that hosts asyncio-style event loops.
//!
//! [`Client`] has one async method per RPC of every `loopd.v1` service, named after
//! asyncio (`call_later`, `call_at`, `create_future`, `set_result`, `stop_loop`, ...).
//! Ids are typed ([`HandleId`], [`FutureId`]); loops are named by `&str`, where the
//! empty string means the `default` loop. Results are plain Rust types, not the raw
//! protobuf responses; events come as a [`Stream`](tokio_stream::Stream) of [`Event`]s.
//!
//! ```no_run
//! # async fn demo() -> loopd_client::Result<()> {
//! use std::time::Duration;
//! use loopd_client::{Action, Client, EventBody, SubscribeOptions};
//! use tokio_stream::StreamExt;
//!
//! let client = Client::connect_default().await?;
//! let future = client.create_future("", None).await?.future_id;
//! // A timer that resolves the future in 100 ms; another client may wait for it.
//! client
//!     .call_later("", Duration::from_millis(100), Action::resolve_future(future, b"done"))
//!     .await?;
//! let info = client.wait_future("", future, Some(Duration::from_secs(1))).await?;
//! println!("future {} is {}", info.future_id, info.state);
//!
//! let mut events = client.subscribe("", &SubscribeOptions::default()).await?;
//! while let Some(event) = events.next().await {
//!     if let EventBody::Gap { from_seq, to_seq } = event?.body {
//!         eprintln!("missed events {from_seq}..={to_seq}");
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Anatomy of the crate
//! - [`client`]: [`Client`], and connecting to a [`Target`].
//! - [`byte_stream`]: [`ByteReader`], reading a lossless byte stream with credits.
//! - [`target`]: [`Target`] and [`default_socket_path`], shared with the daemon.
//! - `loops`, `scheduler`, `futures`, `events`, `daemon`, `net`, `process`, `signals`: one
//!   file per service, each with its types and its `impl Client` methods. `net` has
//!   servers, connections and their transports, read losslessly with a [`ByteReader`].
//! - [`error`]: the one [`Error`] enum; a daemon's answer keeps its gRPC code.
//! - [`paging`]: [`Page`], [`PageRequest`] and [`all_pages`], for the paginated lists.
//!
//! # Limitations
//! - Unix sockets only: `https://` targets are refused until the daemon speaks TLS.
//! - No automatic retries: schedule calls take an idempotency key
//!   ([`Callback::request_id`]) so that the caller can retry safely.

pub mod byte_stream;
pub mod client;
mod convert;
mod daemon;
pub mod error;
mod events;
mod futures;
mod ids;
mod loops;
mod net;
pub mod paging;
mod process;
mod scheduler;
mod signals;
pub mod target;

pub use byte_stream::{ByteChunk, ByteReader, StreamEnd};
pub use client::{Client, unix_channel};
pub use daemon::{DaemonInfo, DaemonLimits, LatencyHistogram, LoopMetrics, Metrics};
pub use error::{Code, Error, Result, code_name};
pub use events::{
    Event, EventBody, EventKind, EventStream, HandleRan, HandleRanAction, SubscribeOptions,
    TimerTiming, UnknownEventKind,
};
pub use futures::{CreatedFuture, FutureInfo, FutureState};
pub use ids::{FutureId, HandleId, ProcessId};
pub use loops::{LoopInfo, LoopOptions, LoopState, LoopTime};
pub use net::{
    ConnectOptions, Delivery, EndpointId, EndpointInfo, NetAddress, NetEvent, ServerId, ServerInfo,
    ServerOptions, ServerProtocol, StartTlsSide, TlsClient, TlsServer, TransportId, TransportInfo,
    TransportState,
};
pub use paging::{Page, PageRequest, all_pages};
pub use process::{Command, ExitStatus, OutputFd, ProcessInfo, ProcessState, Stdio};
pub use scheduler::{
    Action, ActionKind, Batch, Callback, Cancelled, Entry, HandleFilter, HandleInfo, HandleKind,
    HandlePage, HandleState, ScheduleResults, Scheduled, When,
};
pub use signals::SignalHandler;
pub use target::{Target, default_socket_path, socket_path_from};
