//! DaemonService: who the daemon is, its limits, and its loops' metrics.
//!
//! # Invariants
//! - Durations are `std::time::Duration`; a histogram's bounds stay in nanoseconds as
//!   on the wire, since they are bucket edges, not measurements.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use loopd_proto::pb;

use crate::client::Client;
use crate::convert::{duration, required, system_time};
use crate::error::Result;

/// The daemon's configured limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DaemonLimits {
    /// Largest payload, future result or ResolveFuture value, in bytes.
    pub max_payload_bytes: u64,
    /// Most entries in one batch.
    pub max_batch_entries: u32,
    /// Largest gRPC message the daemon accepts, in bytes.
    pub max_message_bytes: u64,
    /// Events each loop's ring holds.
    pub event_ring_capacity: u64,
}

/// Who the daemon is ([`Client::info`]).
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonInfo {
    /// Semver, e.g. `0.1.0`.
    pub version: String,
    /// The daemon's process id.
    pub pid: u32,
    /// How long it has been running.
    pub uptime: Duration,
    /// When it started, by the wall clock.
    pub started_at: Option<SystemTime>,
    /// Its Unix socket; None if it listens on TCP only.
    pub socket_path: Option<PathBuf>,
    /// Its state directory.
    pub state_dir: PathBuf,
    /// Its loops' names, sorted.
    pub loops: Vec<String>,
    /// Its limits.
    pub limits: DaemonLimits,
}

/// Durations counted in fixed buckets, with quantiles computed by the daemon.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// Bucket upper bounds in nanoseconds, ascending.
    pub upper_bounds_ns: Vec<u64>,
    /// Count per bucket; one more than the bounds (the last is the overflow).
    pub counts: Vec<u64>,
    /// Number of values recorded.
    pub count: u64,
    /// Sum of the values, in nanoseconds.
    pub sum_ns: u64,
    /// Median; zero when empty.
    pub p50: Duration,
    /// 99th percentile; zero when empty.
    pub p99: Duration,
    /// Largest value; zero when empty.
    pub max: Duration,
}

impl LatencyHistogram {
    fn from_wire(h: pb::LatencyHistogram) -> Result<Self> {
        Ok(LatencyHistogram {
            upper_bounds_ns: h.upper_bounds_ns,
            counts: h.counts,
            count: h.count,
            sum_ns: h.sum_ns,
            p50: duration(h.p50, "timer_lateness.p50")?,
            p99: duration(h.p99, "timer_lateness.p99")?,
            max: duration(h.max, "timer_lateness.max")?,
        })
    }
}

/// One loop's counters and gauges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoopMetrics {
    /// The loop's name.
    pub loop_name: String,
    /// Counter: iterations (`run_once` calls).
    pub iterations: u64,
    /// Counter: callbacks run.
    pub callbacks_run: u64,
    /// Gauge: callbacks in the ready queue.
    pub ready_queue_len: u64,
    /// Gauge: timers pending.
    pub timers_pending: u64,
    /// Gauge: cancelled timers still in the heap.
    pub timers_cancelled: u64,
    /// Counter: timers fired.
    pub timers_fired: u64,
    /// How late timers fired.
    pub timer_lateness: LatencyHistogram,
    /// Counter: time spent waiting in the poll.
    pub time_polling: Duration,
    /// Counter: time spent running callbacks.
    pub time_running_callbacks: Duration,
    /// Counter: callbacks slower than `slow_callback_duration`.
    pub slow_callbacks: u64,
    /// Gauge: futures not done.
    pub futures_pending: u64,
    /// Counter: events written to the ring.
    pub events_emitted: u64,
    /// Gauge: open event streams.
    pub subscribers: u64,
    /// Counter: Gap events sent.
    pub gaps: u64,
    /// Counter: events lost by subscribers.
    pub events_missed: u64,
    /// Gauge: servers not closed.
    pub open_servers: u64,
    /// Gauge: stream transports made and not yet lost.
    pub open_transports: u64,
    /// Gauge: datagram endpoints made and not yet lost.
    pub open_datagram_endpoints: u64,
    /// Counter: connections accepted by the loop's servers.
    pub connections_accepted: u64,
    /// Counter: bytes received by stream transports.
    pub bytes_received: u64,
    /// Counter: bytes sent by stream transports.
    pub bytes_sent: u64,
    /// Counter: datagrams received by datagram endpoints.
    pub datagrams_received: u64,
    /// Counter: datagrams sent by datagram endpoints.
    pub datagrams_sent: u64,
    /// Counter: child processes started.
    pub processes_spawned: u64,
    /// Gauge: child processes started and not reaped yet.
    pub processes_running: u64,
    /// Counter: child processes reaped.
    pub processes_exited: u64,
    /// Gauge: signals with a handler on the loop.
    pub signal_handlers: u64,
}

impl LoopMetrics {
    fn from_wire(m: pb::LoopMetrics) -> Result<Self> {
        Ok(LoopMetrics {
            loop_name: m.r#loop,
            iterations: m.iterations,
            callbacks_run: m.callbacks_run,
            ready_queue_len: m.ready_queue_len,
            timers_pending: m.timers_pending,
            timers_cancelled: m.timers_cancelled,
            timers_fired: m.timers_fired,
            timer_lateness: LatencyHistogram::from_wire(m.timer_lateness.unwrap_or_default())?,
            time_polling: duration(m.time_polling, "time_polling")?,
            time_running_callbacks: duration(m.time_running_callbacks, "time_running_callbacks")?,
            slow_callbacks: m.slow_callbacks,
            futures_pending: m.futures_pending,
            events_emitted: m.events_emitted,
            subscribers: m.subscribers,
            gaps: m.gaps,
            events_missed: m.events_missed,
            open_servers: m.open_servers,
            open_transports: m.open_transports,
            open_datagram_endpoints: m.open_datagram_endpoints,
            connections_accepted: m.connections_accepted,
            bytes_received: m.bytes_received,
            bytes_sent: m.bytes_sent,
            datagrams_received: m.datagrams_received,
            datagrams_sent: m.datagrams_sent,
            processes_spawned: m.processes_spawned,
            processes_running: m.processes_running,
            processes_exited: m.processes_exited,
            signal_handlers: m.signal_handlers,
        })
    }
}

/// Snapshots of loops' metrics ([`Client::metrics`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Metrics {
    /// When they were taken, by the wall clock.
    pub sampled_at: Option<SystemTime>,
    /// One per loop, sorted by name.
    pub loops: Vec<LoopMetrics>,
}

impl Client {
    /// Describes the daemon: version, process, paths, limits and loops.
    /// Fails with UNAVAILABLE while the daemon shuts down.
    pub async fn info(&self) -> Result<DaemonInfo> {
        let r = self
            .daemon
            .clone()
            .get_info(pb::GetInfoRequest {})
            .await?
            .into_inner();
        let limits = required(r.limits, "limits")?;
        Ok(DaemonInfo {
            version: r.version,
            pid: r.pid,
            uptime: duration(r.uptime, "uptime")?,
            started_at: system_time(r.started_at),
            socket_path: Some(r.socket_path)
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
            state_dir: PathBuf::from(r.state_dir),
            loops: r.loops,
            limits: DaemonLimits {
                max_payload_bytes: limits.max_payload_bytes,
                max_batch_entries: limits.max_batch_entries,
                max_message_bytes: limits.max_message_bytes,
                event_ring_capacity: limits.event_ring_capacity,
            },
        })
    }

    /// Reads the metrics of the named loops; an empty slice means every loop, and
    /// `""` means `default`. Fails with NOT_FOUND if a named loop does not exist.
    pub async fn metrics(&self, loop_names: &[&str]) -> Result<Metrics> {
        let request = pb::GetMetricsRequest {
            loops: loop_names.iter().map(|name| (*name).to_owned()).collect(),
        };
        let r = self.daemon.clone().get_metrics(request).await?.into_inner();
        let loops = r.loops.into_iter().map(LoopMetrics::from_wire);
        Ok(Metrics {
            sampled_at: system_time(r.sampled_at),
            loops: loops.collect::<Result<_>>()?,
        })
    }
}
