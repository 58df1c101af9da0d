//! The RPC load tool of `bench/rpc.sh`: drives a loopd daemon (or a stand-in server) over a
//! Unix socket and prints one JSON object per figure on stdout,
//! `{"server": "loopd", "name": "unary_rps", "value": 28000.0, "unit": "RPC/s"}`.
//!
//! ```text
//! cargo bench -p loopd-client --bench rpc -- bare-server /tmp/bare.sock
//! cargo bench -p loopd-client --bench rpc -- --target unix:/tmp/loopd.sock unary
//! ```
//!
//! Modes: `bare-server PATH` serves a no-op `SchedulerService` (the ceiling of the tonic
//! stack); `unary` (CallLater, N in flight), `batch` (ScheduleBatch), `events` (events/s
//! to K subscribers) and `fire-latency` (timer due time to the client's receipt) measure.
//! `transport-stream` measures a transport's lossless byte stream (NetService
//! ReadTransport) read by one gRPC client, against plain loopback TCP between two threads
//! of this process measured in the same run.
//!
//! # Invariants
//! - The client runs on a current_thread runtime, as the daemon's front door does by
//!   default: on a 2-vCPU machine, a second client thread would take the daemon's vCPU.
//! - A figure is only printed for a run that did what it claims: any RPC error, a Gap in
//!   an event stream or a missing event fails the run (exit 1) instead.
//! - The tool (so the bare server, and the client) uses mimalloc, as the daemon does: with
//!   glibc's malloc the bare server was not the ceiling, loopd outran it.
//! - Without `--bench` in argv (so under `cargo test --all-targets`) it does nothing and
//!   exits 0: measuring needs a server, which `bench/rpc.sh` starts.

use std::path::PathBuf;
use std::pin::Pin;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use clap::{Parser, Subcommand};
use loopd_proto::pb;
use loopd_proto::{
    EventServiceClient, LoopServiceClient, SchedulerService, SchedulerServiceClient,
    SchedulerServiceServer,
};
use tokio_stream::Stream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(about = "loopd RPC load tool (see bench/README.md)")]
struct Args {
    /// Passed by `cargo bench`; without it the tool does nothing.
    #[arg(long)]
    bench: bool,
    /// The server: `unix:PATH`.
    #[arg(long, global = true, default_value = "")]
    target: String,
    /// The `server` field of the printed figures.
    #[arg(long, global = true, default_value = "loopd")]
    label: String,
    /// Requests in flight (unary and batch).
    #[arg(long, global = true, default_value_t = 16)]
    concurrency: usize,
    /// How long to measure (unary and batch), after a 0.5 s warm-up.
    #[arg(long, global = true, default_value_t = 3.0)]
    seconds: f64,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Serves a no-op SchedulerService on PATH until killed.
    BareServer { path: PathBuf },
    /// CallLater(delay 3600 s), `--concurrency` in flight: RPC/s, p50/p99 latency.
    Unary,
    /// ScheduleBatch of `--entries` timers (delay 3600 s), `--concurrency` in flight.
    Batch {
        #[arg(long, default_value_t = 1000)]
        entries: usize,
    },
    /// A plain TCP peer floods an events-protocol server of the daemon with `--mib` MiB;
    /// one gRPC reader takes them through ReadTransport: MB/s, and the same bytes over
    /// plain loopback TCP thread to thread as the baseline.
    TransportStream {
        #[arg(long, default_value_t = 1024)]
        mib: u64,
        /// Credit the reader keeps granted, in MiB.
        #[arg(long, default_value_t = 16)]
        credit_mib: u64,
        /// The transport's stream window, in MiB.
        #[arg(long, default_value_t = 16)]
        window_mib: u64,
    },
    /// Runs `--events` call_soon callbacks (each emits CallbackRun), then K subscribers
    /// read them all from the ring at once: events/s delivered.
    Events {
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        #[arg(long, default_value_t = 1)]
        subscribers: usize,
        /// Subscribe's max_batch_events.
        #[arg(long, default_value_t = 4096)]
        max_batch: u32,
    },
    /// `--timers` wall-clock timers 1 ms apart; a subscriber measures receipt minus due time.
    FireLatency {
        #[arg(long, default_value_t = 2000)]
        timers: u32,
    },
}

fn main() -> anyhow::Result<()> {
    if !std::env::args().any(|arg| arg == "--bench") {
        return Ok(()); // `cargo test --all-targets`: no server to measure
    }
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    if let Mode::BareServer { path } = &args.mode {
        return bare_server(path).await;
    }
    let path = args
        .target
        .strip_prefix("unix:")
        .context("--target must be unix:PATH")?;
    let channel = connect(path).await?;
    let label = &args.label;
    match args.mode {
        Mode::BareServer { .. } => unreachable!("handled above"),
        Mode::Unary => unary(&channel, label, args.concurrency, args.seconds).await,
        Mode::Batch { entries } => {
            batch(&channel, label, args.concurrency, args.seconds, entries).await
        }
        Mode::Events {
            events: total,
            subscribers,
            max_batch,
        } => events(path, &channel, label, total, subscribers, max_batch).await,
        Mode::FireLatency { timers } => fire_latency(&channel, label, timers).await,
        Mode::TransportStream {
            mib,
            credit_mib,
            window_mib,
        } => {
            // Its own connection, with HTTP/2 receive windows as large as the credit, so
            // that HTTP/2 flow control does not throttle below the stream's own.
            let window = u32::try_from(credit_mib << 20).unwrap_or(u32::MAX);
            let endpoint = tonic::transport::Endpoint::from_static("http://localhost")
                .initial_stream_window_size(Some(window))
                .initial_connection_window_size(Some(window.saturating_mul(2)));
            let socket = path.to_owned();
            let channel = endpoint
                .connect_with_connector(tower::service_fn(move |_| {
                    let socket = socket.clone();
                    async move {
                        let stream = tokio::net::UnixStream::connect(socket).await?;
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                    }
                }))
                .await?;
            let (total, credit, window) = (mib << 20, credit_mib << 20, window_mib << 20);
            transport_stream(&channel, label, total, credit, window).await
        }
    }
}

/// Prints one figure as a JSON line.
fn figure(server: &str, name: &str, value: f64, unit: &str) {
    let line = serde_json::json!({"server": server, "name": name, "value": value, "unit": unit});
    println!("{line}");
}

/// The `q` quantile (0..=1) of sorted `values`.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// A channel over the Unix socket at `path` (one HTTP/2 connection).
async fn connect(path: &str) -> anyhow::Result<Channel> {
    loopd_client::unix_channel(path).await.context("connecting")
}

fn hour_later() -> pb::CallLaterRequest {
    pb::CallLaterRequest {
        after: Some(pb::call_later_request::After::Delay(
            prost_types::Duration {
                seconds: 3600,
                nanos: 0,
            },
        )),
        ..Default::default()
    }
}

/// What one load task saw inside the measured window.
#[derive(Default)]
struct Window {
    done: u64,
    latencies: Vec<Duration>,
}

/// Runs `concurrency` tasks calling `call` back to back for 0.5 s + `seconds`; only
/// calls that start and end inside the last `seconds` count.
async fn closed_loop<F, Fut>(concurrency: usize, seconds: f64, call: F) -> anyhow::Result<Window>
where
    F: Fn() -> Fut + Clone + 'static,
    Fut: std::future::Future<Output = Result<(), Status>> + 'static,
{
    let begin = Instant::now() + Duration::from_millis(500);
    let end = begin + Duration::from_secs_f64(seconds);
    let local = tokio::task::LocalSet::new();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let call = call.clone();
            local.spawn_local(async move {
                let mut window = Window::default();
                loop {
                    let sent = Instant::now();
                    if sent >= end {
                        return Ok::<_, Status>(window);
                    }
                    call().await?;
                    let took = sent.elapsed();
                    if sent >= begin && sent + took <= end {
                        window.done += 1;
                        window.latencies.push(took);
                    }
                }
            })
        })
        .collect();
    local
        .run_until(async move {
            let mut all = Window::default();
            for task in tasks {
                let window = task.await??;
                all.done += window.done;
                all.latencies.extend(window.latencies);
            }
            all.latencies.sort_unstable();
            Ok(all)
        })
        .await
}

async fn unary(
    channel: &Channel,
    label: &str,
    concurrency: usize,
    seconds: f64,
) -> anyhow::Result<()> {
    let client = SchedulerServiceClient::new(channel.clone());
    let window = closed_loop(concurrency, seconds, move || {
        let mut client = client.clone();
        async move { client.call_later(hour_later()).await.map(drop) }
    })
    .await
    .context("CallLater")?;
    figure(label, "unary_rps", window.done as f64 / seconds, "RPC/s");
    let p50 = quantile(&window.latencies, 0.5);
    let p99 = quantile(&window.latencies, 0.99);
    figure(label, "unary_p50", micros(p50), "us");
    figure(label, "unary_p99", micros(p99), "us");
    Ok(())
}

async fn batch(
    channel: &Channel,
    label: &str,
    concurrency: usize,
    seconds: f64,
    entries: usize,
) -> anyhow::Result<()> {
    let client = SchedulerServiceClient::new(channel.clone());
    let entry = pb::ScheduleEntry {
        when: Some(pb::schedule_entry::When::Delay(prost_types::Duration {
            seconds: 3600,
            nanos: 0,
        })),
        ..Default::default()
    };
    let request = pb::ScheduleBatchRequest {
        r#loop: String::new(),
        entries: vec![entry; entries],
    };
    let window = closed_loop(concurrency, seconds, move || {
        let (mut client, request) = (client.clone(), request.clone());
        async move {
            let results = client.schedule_batch(request).await?.into_inner().results;
            if results.len() != entries {
                return Err(Status::internal(format!("{} results", results.len())));
            }
            Ok(())
        }
    })
    .await
    .context("ScheduleBatch")?;
    let timers = (window.done * entries as u64) as f64;
    figure(label, "batch_timers_per_s", timers / seconds, "timers/s");
    let p50 = quantile(&window.latencies, 0.5);
    figure(label, "batch_p50", micros(p50), "us");
    Ok(())
}

/// The newest seq in the default loop's event ring.
async fn last_seq(channel: &Channel) -> anyhow::Result<u64> {
    let info = LoopServiceClient::new(channel.clone())
        .get_loop(pb::GetLoopRequest::default())
        .await?
        .into_inner();
    Ok(info.loop_info.context("no loop_info")?.last_event_seq)
}

/// Makes `total` CallbackRun events: call_soon entries in batches of 10,000.
async fn produce(channel: &Channel, total: u64) -> anyhow::Result<()> {
    let mut client = SchedulerServiceClient::new(channel.clone());
    let soon = pb::ScheduleEntry {
        when: Some(pb::schedule_entry::When::Soon(())),
        ..Default::default()
    };
    let mut left = total;
    while left > 0 {
        let n = left.min(10_000);
        let request = pb::ScheduleBatchRequest {
            r#loop: String::new(),
            entries: vec![soon.clone(); n as usize],
        };
        client.schedule_batch(request).await?;
        left -= n;
    }
    Ok(())
}

/// Reads events from `since` until seq `last`; each subscriber has its own connection.
async fn subscriber(path: String, since: u64, last: u64, max_batch: u32) -> anyhow::Result<u64> {
    let channel = connect(&path).await?;
    let request = pb::SubscribeRequest {
        since_seq: since,
        kinds: vec![pb::EventKind::CallbackRun as i32],
        max_batch_events: max_batch,
        ..Default::default()
    };
    let mut stream = EventServiceClient::new(channel)
        .subscribe(request)
        .await?
        .into_inner();
    let mut seen = 0;
    while let Some(batch) =
        tokio::time::timeout(Duration::from_secs(30), stream.message()).await??
    {
        for event in &batch.events {
            if let Some(pb::event::Kind::Gap(gap)) = &event.kind {
                bail!(
                    "gap {}..={}: raise event_ring_capacity",
                    gap.from_seq,
                    gap.to_seq
                );
            }
            seen += 1;
        }
        if batch.events.last().is_some_and(|e| e.seq >= last) {
            return Ok(seen);
        }
    }
    bail!("the stream ended after {seen} events")
}

async fn events(
    path: &str,
    channel: &Channel,
    label: &str,
    total: u64,
    subscribers: usize,
    max_batch: u32,
) -> anyhow::Result<()> {
    // 1. Produce: the ring fills with `total` CallbackRun events.
    let since = last_seq(channel).await? + 1;
    let started = Instant::now();
    produce(channel, total).await?;
    let last = since + total - 1;
    while last_seq(channel).await? < last {
        ensure!(
            started.elapsed() < Duration::from_secs(60),
            "callbacks stall"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let name = "events_callbacks_per_s";
    figure(
        label,
        name,
        total as f64 / started.elapsed().as_secs_f64(),
        "callbacks/s",
    );

    // 2. Deliver: every subscriber reads them all, at the same time.
    let local = tokio::task::LocalSet::new();
    let started = Instant::now();
    let readers: Vec<_> = (0..subscribers)
        .map(|_| local.spawn_local(subscriber(path.to_owned(), since, last, max_batch)))
        .collect();
    let delivered = local
        .run_until(async move {
            let mut delivered = 0;
            for reader in readers {
                let seen = reader.await??;
                ensure!(seen == total, "a subscriber saw {seen} of {total} events");
                delivered += seen;
            }
            Ok::<_, anyhow::Error>(delivered)
        })
        .await?;
    let rate = delivered as f64 / started.elapsed().as_secs_f64();
    let name = format!("events_to_{subscribers}_per_s");
    figure(label, &name, rate, "events/s");
    Ok(())
}

fn wall_nanos(t: SystemTime) -> i128 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as i128
}

/// Wall-clock timers 1 ms apart from 20 ms on; each tag is its due time in ns.
fn wall_timers(timers: u32) -> Vec<pb::ScheduleEntry> {
    let first = SystemTime::now() + Duration::from_millis(20);
    (0..timers)
        .map(|i| {
            let due = first + Duration::from_millis(u64::from(i));
            let since = due.duration_since(UNIX_EPOCH).unwrap_or_default();
            pb::ScheduleEntry {
                when: Some(pb::schedule_entry::When::AtWallTime(
                    prost_types::Timestamp {
                        seconds: since.as_secs() as i64,
                        nanos: since.subsec_nanos() as i32,
                    },
                )),
                action: Some(pb::Action {
                    kind: Some(pb::action::Kind::EmitEvent(pb::EmitEventAction {
                        tag: wall_nanos(due).to_string(),
                        payload: Vec::new(),
                    })),
                }),
                request_id: String::new(),
            }
        })
        .collect()
}

async fn fire_latency(channel: &Channel, label: &str, timers: u32) -> anyhow::Result<()> {
    let request = pb::SubscribeRequest {
        kinds: vec![pb::EventKind::TimerFired as i32],
        ..Default::default()
    };
    let mut stream = EventServiceClient::new(channel.clone())
        .subscribe(request)
        .await?
        .into_inner();
    SchedulerServiceClient::new(channel.clone())
        .schedule_batch(pb::ScheduleBatchRequest {
            r#loop: String::new(),
            entries: wall_timers(timers),
        })
        .await?;
    let (mut to_client, mut lateness) = (Vec::new(), Vec::new());
    while to_client.len() < timers as usize {
        let next = tokio::time::timeout(Duration::from_secs(10), stream.message()).await;
        let batch = next
            .context("timers stopped firing")??
            .context("stream ended")?;
        let received = wall_nanos(SystemTime::now());
        for event in batch.events {
            let Some(pb::event::Kind::TimerFired(fired)) = event.kind else {
                bail!("unexpected event {:?}", event.kind);
            };
            let due: i128 = fired.tag.parse().context("a timer from elsewhere")?;
            let late = fired.lateness.unwrap_or_default();
            to_client.push(Duration::from_nanos((received - due).max(0) as u64));
            lateness.push(Duration::new(late.seconds as u64, late.nanos as u32));
        }
    }
    for (name, mut values) in [("fire_to_client", to_client), ("fire_lateness", lateness)] {
        values.sort_unstable();
        figure(
            label,
            &format!("{name}_p50"),
            micros(quantile(&values, 0.5)),
            "us",
        );
        figure(
            label,
            &format!("{name}_p99"),
            micros(quantile(&values, 0.99)),
            "us",
        );
    }
    Ok(())
}

/// A SchedulerService that does nothing: CallLater and ScheduleBatch answer at once with
/// empty results, the rest is UNIMPLEMENTED.
struct Bare;

type Results = Pin<Box<dyn Stream<Item = Result<pb::ScheduleBatchResponse, Status>> + Send>>;

fn unimplemented<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented(
        "the bare server only answers CallLater",
    ))
}

#[tonic::async_trait]
impl SchedulerService for Bare {
    async fn call_later(
        &self,
        _: Request<pb::CallLaterRequest>,
    ) -> Result<Response<pb::CallLaterResponse>, Status> {
        Ok(Response::new(pb::CallLaterResponse::default()))
    }

    async fn schedule_batch(
        &self,
        request: Request<pb::ScheduleBatchRequest>,
    ) -> Result<Response<pb::ScheduleBatchResponse>, Status> {
        let n = request.into_inner().entries.len();
        let results = vec![pb::ScheduleResult::default(); n];
        Ok(Response::new(pb::ScheduleBatchResponse { results }))
    }

    async fn call_soon(
        &self,
        _: Request<pb::CallSoonRequest>,
    ) -> Result<Response<pb::CallSoonResponse>, Status> {
        unimplemented()
    }

    async fn call_at(
        &self,
        _: Request<pb::CallAtRequest>,
    ) -> Result<Response<pb::CallAtResponse>, Status> {
        unimplemented()
    }

    async fn call_at_wall_time(
        &self,
        _: Request<pb::CallAtWallTimeRequest>,
    ) -> Result<Response<pb::CallAtWallTimeResponse>, Status> {
        unimplemented()
    }

    type ScheduleStream = Results;

    async fn schedule(
        &self,
        _: Request<Streaming<pb::ScheduleBatchRequest>>,
    ) -> Result<Response<Results>, Status> {
        unimplemented()
    }

    async fn cancel_handle(
        &self,
        _: Request<pb::CancelHandleRequest>,
    ) -> Result<Response<pb::CancelHandleResponse>, Status> {
        unimplemented()
    }

    async fn get_handle(
        &self,
        _: Request<pb::GetHandleRequest>,
    ) -> Result<Response<pb::GetHandleResponse>, Status> {
        unimplemented()
    }

    async fn list_handles(
        &self,
        _: Request<pb::ListHandlesRequest>,
    ) -> Result<Response<pb::ListHandlesResponse>, Status> {
        unimplemented()
    }
}

/// Serves [`Bare`] on `path` (a stale socket file is replaced) until killed.
async fn bare_server(path: &std::path::Path) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("binding {}", path.display()))?;
    tonic::transport::Server::builder()
        .add_service(SchedulerServiceServer::new(Bare))
        .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
        .await?;
    Ok(())
}

/// Writes `total` bytes to `stream` in 256 KiB blocks, then half-closes it.
fn flood(mut stream: std::net::TcpStream, total: u64) -> std::io::Result<()> {
    use std::io::Write;
    let block = vec![0x5a_u8; 256 << 10];
    let mut left = total;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        stream.write_all(&block[..n])?;
        left -= n as u64;
    }
    stream.shutdown(std::net::Shutdown::Write)
}

/// Plain loopback TCP, one writer thread and one reader thread: the baseline, in MB/s.
fn tcp_baseline(total: u64) -> anyhow::Result<f64> {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let writer = std::thread::spawn(move || flood(std::net::TcpStream::connect(addr)?, total));
    let (mut conn, _) = listener.accept()?;
    let mut buf = vec![0u8; 256 << 10];
    let started = Instant::now();
    let mut got = 0u64;
    loop {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    let elapsed = started.elapsed();
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer panicked"))??;
    ensure!(got == total, "baseline got {got} of {total} bytes");
    Ok(total as f64 / elapsed.as_secs_f64() / 1e6)
}

async fn transport_stream(
    channel: &Channel,
    label: &str,
    total: u64,
    credit: u64,
    window: u64,
) -> anyhow::Result<()> {
    let client = loopd_client::Client::from_channel(channel.clone());
    let server = client
        .create_server(
            "",
            &loopd_client::ServerOptions {
                hosts: vec!["127.0.0.1".into()],
                stream_window: window,
                ..Default::default()
            },
        )
        .await?;
    let addr = match server.addresses.first() {
        Some(loopd_client::NetAddress::Inet(addr)) => *addr,
        other => bail!("unexpected server address {other:?}"),
    };
    let peer = std::net::TcpStream::connect(addr)?;
    let transport = loop {
        let open = client
            .list_transports("", Some(server.server_id), false)
            .await?;
        if let Some(t) = open.first() {
            break t.transport_id;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let mut reader = client
        .read_transport("", transport, Some(0), credit)
        .await?
        .with_auto_credit();
    let writer = std::thread::spawn(move || flood(peer, total));
    let started = Instant::now();
    let mut got = 0u64;
    while let Some(chunk) = reader.next().await? {
        ensure!(
            chunk.offset == got,
            "chunk at {} after {got} bytes",
            chunk.offset
        );
        got += chunk.data.len() as u64;
        if let Some(end) = chunk.end {
            end.map_err(|e| anyhow::anyhow!("transport lost: {e}"))?;
            break;
        }
    }
    let elapsed = started.elapsed();
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer panicked"))??;
    ensure!(got == total, "read {got} of {total} bytes");
    client.close_server("", server.server_id).await?;
    let stream = total as f64 / elapsed.as_secs_f64() / 1e6;
    figure(label, "transport_stream_mbps", stream, "MB/s");
    let baseline = tcp_baseline(total)?;
    figure("tcp", "loopback_tcp_mbps", baseline, "MB/s");
    figure(label, "transport_stream_vs_tcp", stream / baseline, "ratio");
    Ok(())
}
