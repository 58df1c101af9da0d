//! `loopctl metrics`: per-loop counters and gauges (DaemonService.GetMetrics).

use anyhow::Result;
use clap::Args;
use loopd_client::LoopMetrics;
use serde_json::{Value, json};

use super::Ctx;
use super::output::{self, Table};

/// Show the loops' metrics: iterations, callbacks, timers, lateness, events.
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
}
