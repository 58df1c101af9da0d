//! Throughput measurements, ignored by default (they print numbers, they assert little):
//! `cargo test --release -p loopd-daemon --test bench -- --ignored --nocapture`.
//! `LOOPD_BENCH_WORKERS` picks the daemon's tokio worker threads (default 1).

mod support;

use std::time::{Duration, Instant};

use loopd_proto::SchedulerServiceClient;
use loopd_proto::pb;
use support::Daemon;

fn daemon() -> Daemon {
    let workers: usize = std::env::var("LOOPD_BENCH_WORKERS")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(1);
    Daemon::start_with(&format!("[runtime]\nworker_threads = {workers}\n"))
}

fn later() -> pb::CallLaterRequest {
    pb::CallLaterRequest {
        after: Some(pb::call_later_request::After::DelaySeconds(3600.0)),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn unary_call_later_rate() {
    let daemon = daemon();
    let channel = daemon.channel().await;
    for concurrency in [1usize, 16] {
        let per_task = 20_000 / concurrency;
        let started = Instant::now();
        let tasks: Vec<_> = (0..concurrency)
            .map(|_| {
                let mut client = SchedulerServiceClient::new(channel.clone());
                tokio::spawn(async move {
                    for _ in 0..per_task {
                        client.call_later(later()).await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let rate = (per_task * concurrency) as f64 / started.elapsed().as_secs_f64();
        println!("call_later, {concurrency} in flight: {rate:.0} RPC/s");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn events_to_one_subscriber_rate() {
    let daemon = Daemon::start_with("[limits]\nevent_ring_capacity = 1048576\n");
    let channel = daemon.channel().await;
    let mut client = SchedulerServiceClient::new(channel.clone());
    let total = 1_000_000u64;
    let batch: Vec<_> = (0..10_000)
        .map(|_| pb::ScheduleEntry {
            when: Some(pb::schedule_entry::When::Soon(())),
            action: None,
            request_id: String::new(),
        })
        .collect();
    // 1. Produce: fill the ring with a million CallbackRun events.
    let started = Instant::now();
    for _ in 0..total / batch.len() as u64 {
        client
            .schedule_batch(pb::ScheduleBatchRequest {
                r#loop: String::new(),
                entries: batch.clone(),
            })
            .await
            .unwrap();
    }
    let mut loops = loopd_proto::LoopServiceClient::new(channel.clone());
    let last = loop {
        let info = loops.get_loop(pb::GetLoopRequest::default()).await.unwrap();
        let last = info.into_inner().loop_info.unwrap().last_event_seq;
        if last >= total {
            break last;
        }
        assert!(started.elapsed() < Duration::from_secs(60));
    };
    let produce = started.elapsed();
    println!(
        "scheduled and ran {total} callbacks: {:.0} /s",
        total as f64 / produce.as_secs_f64()
    );

    // 2. Deliver: one subscriber reads them all from the ring.
    let started = Instant::now();
    let mut events = loopd_proto::EventServiceClient::new(channel.clone())
        .subscribe(pb::SubscribeRequest {
            since_seq: 1,
            max_batch_events: 4096,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = 0u64;
    while seen < last {
        let next = tokio::time::timeout(Duration::from_secs(30), events.message()).await;
        let batch = next.expect("events keep coming").unwrap().unwrap();
        assert!(
            batch
                .events
                .iter()
                .all(|e| !matches!(e.kind, Some(pb::event::Kind::Gap(_))))
        );
        seen += batch.events.len() as u64;
    }
    let rate = seen as f64 / started.elapsed().as_secs_f64();
    println!("events to one subscriber: {rate:.0} events/s");
}
