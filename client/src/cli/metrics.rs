//! `loopctl metrics`: per-loop counters and gauges (DaemonService.GetMetrics).

use anyhow::Result;
use clap::Args;
use loopd_client::LoopMetrics;
use serde_json::{Value, json};

use super::Ctx;
use super::output::{self, Table};

/// Show the loops' metrics: iterations, callbacks, timers, lateness, events, servers,
/// transports, bytes and datagrams in/out, child processes and signal handlers.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  loopctl metrics
  loopctl metrics --loop worker --json | jq .timer_lateness.p99_seconds")]
pub struct MetricsArgs {
    /// Only this loop (repeatable). Default: every loop.
    #[arg(long = "loop", short = 'l', value_name = "NAME")]
    loops: Vec<String>,
}

impl MetricsArgs {
    pub async fn run(self, ctx: &mut Ctx<'_>) -> Result<()> {
        let names: Vec<&str> = self.loops.iter().map(String::as_str).collect();
        let metrics = ctx.connect().await?.metrics(&names).await?;
        Ok(ctx
            .out
            .rows(table(&metrics.loops), metrics.loops.iter().map(to_json))?)
    }
}

fn table(loops: &[LoopMetrics]) -> Table {
    let mut table = Table::new(&[
        "LOOP",
        "ITERATIONS",
        "CALLBACKS",
        "READY",
        "TIMERS",
        "FIRED",
        "LATE_P50",
        "LATE_P99",
        "LATE_MAX",
        "SLOW",
        "FUTURES",
        "EVENTS",
        "SUBSCRIBERS",
        "GAPS",
        "MISSED",
        "SERVERS",
        "TRANSPORTS",
        "ENDPOINTS",
        "ACCEPTED",
        "BYTES_IN",
        "BYTES_OUT",
        "DGRAMS_IN",
        "DGRAMS_OUT",
        "SPAWNED",
        "RUNNING",
        "EXITED",
        "SIGNALS",
    ]);
    for m in loops {
        let lateness = &m.timer_lateness;
        table.row(vec![
            m.loop_name.clone(),
            m.iterations.to_string(),
            m.callbacks_run.to_string(),
            m.ready_queue_len.to_string(),
            m.timers_pending.to_string(),
            m.timers_fired.to_string(),
            output::duration(lateness.p50),
            output::duration(lateness.p99),
            output::duration(lateness.max),
            m.slow_callbacks.to_string(),
            m.futures_pending.to_string(),
            m.events_emitted.to_string(),
            m.subscribers.to_string(),
            m.gaps.to_string(),
            m.events_missed.to_string(),
            m.open_servers.to_string(),
            m.open_transports.to_string(),
            m.open_datagram_endpoints.to_string(),
            m.connections_accepted.to_string(),
            m.bytes_received.to_string(),
            m.bytes_sent.to_string(),
            m.datagrams_received.to_string(),
            m.datagrams_sent.to_string(),
            m.processes_spawned.to_string(),
            m.processes_running.to_string(),
            m.processes_exited.to_string(),
            m.signal_handlers.to_string(),
        ]);
    }
    table
}

fn to_json(m: &LoopMetrics) -> Value {
    let h = &m.timer_lateness;
    json!({
        "loop": m.loop_name,
        "iterations": m.iterations,
        "callbacks_run": m.callbacks_run,
        "ready_queue_len": m.ready_queue_len,
        "timers_pending": m.timers_pending,
        "timers_cancelled": m.timers_cancelled,
        "timers_fired": m.timers_fired,
        "timer_lateness": {
            "count": h.count,
            "sum_ns": h.sum_ns,
            "p50_seconds": output::secs(h.p50),
            "p99_seconds": output::secs(h.p99),
            "max_seconds": output::secs(h.max),
            "upper_bounds_ns": h.upper_bounds_ns,
            "counts": h.counts,
        },
        "time_polling_seconds": output::secs(m.time_polling),
        "time_running_callbacks_seconds": output::secs(m.time_running_callbacks),
        "slow_callbacks": m.slow_callbacks,
        "futures_pending": m.futures_pending,
        "events_emitted": m.events_emitted,
        "subscribers": m.subscribers,
        "gaps": m.gaps,
        "events_missed": m.events_missed,
        "open_servers": m.open_servers,
        "open_transports": m.open_transports,
        "open_datagram_endpoints": m.open_datagram_endpoints,
        "connections_accepted": m.connections_accepted,
        "bytes_received": m.bytes_received,
        "bytes_sent": m.bytes_sent,
        "datagrams_received": m.datagrams_received,
        "datagrams_sent": m.datagrams_sent,
        "processes_spawned": m.processes_spawned,
        "processes_running": m.processes_running,
        "processes_exited": m.processes_exited,
        "signal_handlers": m.signal_handlers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_row_per_loop() {
        let loops = [
            LoopMetrics {
                loop_name: "default".into(),
                iterations: 10,
                ..LoopMetrics::default()
            },
            LoopMetrics {
                loop_name: "w".into(),
                ..LoopMetrics::default()
            },
        ];
        let mut buf = Vec::new();
        table(&loops).write(&mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[1].starts_with("default  10 "), "{}", lines[1]);
        assert_eq!(to_json(&loops[1])["loop"], "w");
    }

    #[test]
    fn networking_and_process_figures_are_shown() {
        let m = LoopMetrics {
            loop_name: "net".into(),
            open_servers: 1,
            open_transports: 2,
            open_datagram_endpoints: 3,
            connections_accepted: 4,
            bytes_received: 5,
            bytes_sent: 6,
            datagrams_received: 7,
            datagrams_sent: 8,
            processes_spawned: 9,
            processes_running: 10,
            processes_exited: 11,
            signal_handlers: 12,
            ..LoopMetrics::default()
        };
        let mut buf = Vec::new();
        table(std::slice::from_ref(&m)).write(&mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let header: Vec<&str> = lines[0].split_whitespace().collect();
        let row: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(header.len(), row.len(), "{text}");
        let tail: Vec<&str> = row[row.len() - 12..].to_vec();
        let want: Vec<String> = (1..=12).map(|n| n.to_string()).collect();
        assert_eq!(tail, want, "{text}");
        assert_eq!(header[header.len() - 12], "SERVERS");
        let json = to_json(&m);
        let cases = [
            ("open_servers", 1),
            ("open_transports", 2),
            ("open_datagram_endpoints", 3),
            ("connections_accepted", 4),
            ("bytes_received", 5),
            ("bytes_sent", 6),
            ("datagrams_received", 7),
            ("datagrams_sent", 8),
            ("processes_spawned", 9),
            ("processes_running", 10),
            ("processes_exited", 11),
            ("signal_handlers", 12),
        ];
        for (key, want) in cases {
            assert_eq!(json[key], want, "{key}");
        }
    }
}
